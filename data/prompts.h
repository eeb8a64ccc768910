/* Lists of text prompts: ./infer's --prompt / --prompts-file, tools/eval_report's --prompts
 * (which must read the file exactly as ./infer did, to map output k to its prompt) and the
 * trainer's [sample] prompts. One reader, so the three agree on what a prompt file means:
 * every line that is not blank, trimmed of white space at both ends, any length, valid UTF-8. */
#pragma once
#include <stddef.h>

#include "kernels/common.h"

typedef struct Prompts {
  char **text; /* (n) malloc'd, NUL-terminated */
  int n;
} Prompts;

/* Appends a copy of s[0..len). */
void prompts_add(Prompts *p, const char *s, size_t len);

/* The prompts of the file at path, appended to p. `what` names the file's option or key in
 * messages ("--prompts-file", "sample.prompts ="). -1 with err naming path (and path:line for a
 * line that is not UTF-8) when it cannot be read or holds no prompt; p is then emptied. */
int prompts_read_file(const char *path, const char *what, Prompts *p, McmErr *err);

void prompts_free(Prompts *p); /* empties p; {0} is a valid empty list */
