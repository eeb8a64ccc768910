#include "data/prompts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/io.h"

void prompts_add(Prompts *p, const char *s, size_t len) {
  p->text = realloc(p->text, (size_t)(p->n + 1) * sizeof *p->text);
  MCM_CHECK(p->text, "out of memory");
  p->text[p->n] = strndup(s, len);
  MCM_CHECK(p->text[p->n], "out of memory");
  p->n++;
}

void prompts_free(Prompts *p) {
  for (int i = 0; i < p->n; i++) free(p->text[i]);
  free(p->text);
  p->text = NULL, p->n = 0;
}

int prompts_read_file(const char *path, const char *what, Prompts *p, McmErr *err) {
  FILE *f = fopen(path, "r");
  if (!f) return mcm_err(err, "%s %s: %s", what, path, strerror(errno));
  char *line = NULL;
  size_t cap = 0;
  int rc = 0;
  for (long no = 1; getline(&line, &cap, f) >= 0; no++) {
    char *s = line, *e = line + strlen(line);
    while (s < e && strchr(" \t\r\n\f\v", *s)) s++;
    while (e > s && strchr(" \t\r\n\f\v", e[-1])) e--;
    if (s == e) continue;
    if (!utf8_valid(s, (size_t)(e - s))) {
      rc = mcm_err(err, "%s %s:%ld: the line is not valid UTF-8", what, path, no);
      break;
    }
    prompts_add(p, s, (size_t)(e - s));
  }
  if (!rc && ferror(f)) rc = mcm_err(err, "%s %s: read error", what, path);
  free(line);
  fclose(f);
  if (!rc && p->n == 0) rc = mcm_err(err, "%s %s: no prompt in it (every line is empty)", what, path);
  if (rc) prompts_free(p);
  return rc;
}
