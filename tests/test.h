/* mcm's test runner: one binary, tests register themselves, each runs in a forked child
 * (a crash or exit() fails that test only), and the run ends with "N passed, N failed".
 *
 *   TEST(name) { EXPECT(cond, "fmt", ...); EXPECT_NEAR(a, b, tol); ASSERT(cond, ...); }
 *
 * EXPECT records a failure and goes on; ASSERT records it and ends the test.
 * TEST_EXIT(name, code) declares a test that must end by calling exit(code) (for code paths
 * that exit on purpose, like a fatal check); TEST_EXIT_MSG(name, code, "text") also requires
 * its stderr to contain "text".
 */
#pragma once
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*TestFn)(void);
void test_register(const char *name, const char *file, TestFn fn, int expect_exit, const char *expect_msg);
void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
_Noreturn void test_abort(void);
/* A scratch directory for this test (created fresh, removed after a pass). */
const char *test_tmpdir(void);
/* Builds "<tmpdir>/<name>" into a static-free buffer supplied by the macro. */
#define TEST_PATH(name) test_path((char[512]){0}, 512, (name))
char *test_path(char *buf, size_t size, const char *name);
/* Runs the printf-formatted shell command in $MCM_BIN_DIR (default ".") with stderr folded
 * into stdout, which lands in out (NUL-terminated, cut at size). Returns the exit status, or
 * -1 if the command did not exit normally. */
int test_run_cmd(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The whole file, NUL-terminated (malloc; free it), its size in *n if n is not NULL; NULL when
 * it cannot be opened. */
char *test_read_file(const char *path, size_t *n);
/* Both files exist and hold the same bytes. */
bool test_same_file(const char *a, const char *b);
/* Waits up to `seconds` until process pid catches signal sig (Linux: SigCgt in /proc/pid/status), so
 * that a test signals it after its handler is in place, not during start-up on a loaded machine.
 * True when it does. */
bool test_wait_signal_handler(int pid, int sig, double seconds);
/* Waits up to `seconds` until the file at path exists and contains needle. True when it does. */
bool test_wait_file_contains(const char *path, const char *needle, double seconds);

#define TEST_REGISTER_(name, code, msg)                                              \
  static void name(void);                                                            \
  __attribute__((constructor)) static void register_##name(void) {                   \
    test_register(#name, __FILE__, name, (code), (msg));                             \
  }                                                                                  \
  static void name(void)

#define TEST(name) TEST_REGISTER_(name, -1, NULL)
#define TEST_EXIT(name, code) TEST_REGISTER_(name, (code), NULL)
#define TEST_EXIT_MSG(name, code, msg) TEST_REGISTER_(name, (code), (msg))

#define EXPECT(cond, ...)                                    \
  do {                                                       \
    if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define ASSERT(cond, ...)                                    \
  do {                                                       \
    if (!(cond)) {                                           \
      test_fail(__FILE__, __LINE__, __VA_ARGS__);            \
      test_abort();                                          \
    }                                                        \
  } while (0)

#define EXPECT_NEAR(a, b, tol)                                                                     \
  do {                                                                                             \
    double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                                 \
    if (!(fabs(a_ - b_) <= t_))                                                                    \
      test_fail(__FILE__, __LINE__, "%s = %.9g, %s = %.9g, |diff| %.3g > tol %.3g", #a, a_, #b, b_, \
                fabs(a_ - b_), t_);                                                                \
  } while (0)

#define EXPECT_STR_CONTAINS(hay, needle)                                                    \
  do {                                                                                      \
    const char *h_ = (hay), *n_ = (needle);                                                 \
    if (!h_ || !strstr(h_, n_))                                                             \
      test_fail(__FILE__, __LINE__, "expected \"%s\" to contain \"%s\"", h_ ? h_ : "(null)", n_); \
  } while (0)
