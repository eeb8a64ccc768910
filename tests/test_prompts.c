/* data/prompts.h: the one reader of prompt files (./infer, tools/eval_report, [sample]). */
#include <stdio.h>
#include <string.h>

#include "data/prompts.h"
#include "test.h"

static const char *write_file(const char *name, const char *text, size_t n) {
  static char bufs[4][512];
  static int next;
  char *path = test_path(bufs[next++ % 4], sizeof bufs[0], name);
  FILE *f = fopen(path, "wb");
  ASSERT(f && fwrite(text, 1, n, f) == n && fclose(f) == 0, "writing %s", path);
  return path;
}

TEST(prompts_file_lines_trimmed_blank_skipped_any_length) {
  static char text[20000];
  char longp[9000];
  memset(longp, 'a', sizeof longp - 1);
  longp[sizeof longp - 1] = 0;
  int n = snprintf(text, sizeof text, "  calm piano \r\n\n\t \nfast drums\n%s\nlast without newline", longp);
  const char *path = write_file("p.txt", text, (size_t)n);
  Prompts p = {0};
  McmErr err = {{0}};
  ASSERT(prompts_read_file(path, "--prompts-file", &p, &err) == 0, "%s", err.msg);
  ASSERT(p.n == 4, "%d prompts", p.n);
  EXPECT(!strcmp(p.text[0], "calm piano") && !strcmp(p.text[1], "fast drums"), "'%s' '%s'", p.text[0], p.text[1]);
  EXPECT(strlen(p.text[2]) == sizeof longp - 1, "a long line is kept whole (%zu)", strlen(p.text[2]));
  EXPECT(!strcmp(p.text[3], "last without newline"), "'%s'", p.text[3]);
  prompts_free(&p);
  EXPECT(p.n == 0 && !p.text, "freed");
}

TEST(prompts_file_bad_inputs_name_the_file_and_line) {
  Prompts p = {0};
  McmErr err = {{0}};
  const char *bad = write_file("bad.txt", "fine\n\xff\xfe broken\n", 15);
  EXPECT(prompts_read_file(bad, "--prompts", &p, &err) == -1 && strstr(err.msg, "bad.txt:2: the line is not valid UTF-8"),
         "%s", err.msg);
  EXPECT(p.n == 0, "emptied on error");
  const char *empty = write_file("empty.txt", "\n  \n\t\n", 6);
  EXPECT(prompts_read_file(empty, "sample.prompts =", &p, &err) == -1 && strstr(err.msg, "sample.prompts =") &&
             strstr(err.msg, "no prompt in it"),
         "%s", err.msg);
  EXPECT(prompts_read_file(TEST_PATH("none.txt"), "--prompts-file", &p, &err) == -1 &&
             strstr(err.msg, "none.txt: No such file"),
         "%s", err.msg);
}
