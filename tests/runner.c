/* The test runner behind tests/test.h.
 *
 *   mcm_tests              run every test, each in its own forked process
 *   mcm_tests NAME...      run the tests whose name contains one of the NAMEs
 *   mcm_tests --no-fork    run in this process (for gdb); the first crash ends the run
 *   mcm_tests --list       list the tests
 *
 * Prints one line per test and finally "N passed, N failed"; exits 1 if any failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 2048
#define TEST_TIMEOUT_S 600

typedef struct {
  const char *name, *file;
  TestFn fn;
  int expect_exit;
  const char *expect_msg;
} TestCase;

/* Registration happens in constructors before main; this table is written only then. */
static TestCase g_tests[MAX_TESTS];
static int g_n_tests;
static int g_failures;      /* failures recorded in the current test */
static char g_tmpdir[512];

void test_register(const char *name, const char *file, TestFn fn, int expect_exit, const char *expect_msg) {
  if (g_n_tests == MAX_TESTS) {
    fprintf(stderr, "test runner: more than %d tests\n", MAX_TESTS);
    exit(2);
  }
  g_tests[g_n_tests++] = (TestCase){name, file, fn, expect_exit, expect_msg};
}

void test_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "    FAIL %s:%d: ", file, line);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  g_failures++;
}

void test_abort(void) {
  fflush(stdout);
  fflush(stderr);
  _exit(1);
}

const char *test_tmpdir(void) {
  if (!g_tmpdir[0]) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/mcm_test_XXXXXX", base);
    if (!mkdtemp(g_tmpdir)) {
      fprintf(stderr, "test runner: mkdtemp(%s): %s\n", g_tmpdir, strerror(errno));
      _exit(2);
    }
  }
  return g_tmpdir;
}

char *test_path(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", test_tmpdir(), name);
  return buf;
}

int test_run_cmd(char *out, size_t size, const char *fmt, ...) {
  char cmd[8192], full[8192 + 1024];
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  if (len < 0 || (size_t)len >= sizeof cmd) test_fail(__FILE__, __LINE__, "command longer than %zu bytes", sizeof cmd), test_abort();
  const char *dir = getenv("MCM_BIN_DIR") ? getenv("MCM_BIN_DIR") : ".";
  snprintf(full, sizeof full, "cd %s && %s 2>&1", dir, cmd);
  FILE *p = popen(full, "r");
  if (!p) test_fail(__FILE__, __LINE__, "popen failed: %s", cmd), test_abort();
  size_t n = fread(out, 1, size - 1, p);
  out[n] = 0;
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static double monotonic_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool test_wait_signal_handler(int pid, int sig, double seconds) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  for (double t0 = monotonic_s(); monotonic_s() - t0 < seconds; usleep(10 * 1000)) {
    FILE *f = fopen(path, "r");
    if (!f) return false; /* gone */
    unsigned long long caught = 0;
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "SigCgt: %llx", &caught) == 1) break;
    fclose(f);
    if (caught >> (sig - 1) & 1) return true;
  }
  return false;
}

char *test_read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + len, 1, cap - 1 - len, f)) > 0;)
    if ((len += got) == cap - 1) buf = realloc(buf, cap *= 2);
  fclose(f);
  if (!buf) test_fail(__FILE__, __LINE__, "out of memory reading %s", path), test_abort();
  buf[len] = 0;
  if (n) *n = len;
  return buf;
}

bool test_same_file(const char *a, const char *b) {
  size_t na, nb;
  char *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
  bool same = x && y && na == nb && !memcmp(x, y, na);
  free(x), free(y);
  return same;
}

bool test_wait_file_contains(const char *path, const char *needle, double seconds) {
  for (double t0 = monotonic_s(); monotonic_s() - t0 < seconds; usleep(20 * 1000)) {
    char *text = test_read_file(path, NULL);
    bool found = text && strstr(text, needle);
    free(text);
    if (found) return true;
  }
  return false;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static void remove_tmpdir(void) {
  if (g_tmpdir[0]) nftw(g_tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  g_tmpdir[0] = 0;
}

/* Runs one test in this process; returns its failure count. */
static int run_inline(const TestCase *t) {
  g_failures = 0;
  t->fn();
  int f = g_failures;
  if (f == 0) remove_tmpdir();
  return f;
}

static bool run_forked(const TestCase *t, double *seconds) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  fflush(stdout);
  fflush(stderr);
  /* A test that checks its exit message writes stderr to a file the parent reads. */
  FILE *errf = t->expect_msg ? tmpfile() : NULL;
  if (t->expect_msg && !errf) {
    fprintf(stderr, "test runner: tmpfile: %s\n", strerror(errno));
    exit(2);
  }
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "test runner: fork: %s\n", strerror(errno));
    exit(2);
  }
  if (pid == 0) {
    if (errf) dup2(fileno(errf), STDERR_FILENO);
    alarm(TEST_TIMEOUT_S);
    int f = run_inline(t);
    fflush(stdout);
    fflush(stderr);
    if (t->expect_exit >= 0) {
      fprintf(stderr, "    FAIL %s: returned instead of exiting with status %d\n", t->name, t->expect_exit);
      exit(1);
    }
    exit(f ? 1 : 0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  if (WIFSIGNALED(status)) {
    if (errf) fclose(errf);
    int sig = WTERMSIG(status);
    fprintf(stderr, "    FAIL %s: killed by signal %d (%s)%s\n", t->name, sig, strsignal(sig),
            sig == SIGALRM ? " -- timed out" : "");
    return false;
  }
  int code = WEXITSTATUS(status);
  bool msg_ok = true;
  if (errf) {
    char text[8192];
    rewind(errf);
    size_t n = fread(text, 1, sizeof text - 1, errf);
    text[n] = 0;
    fclose(errf);
    fputs(text, stderr);
    msg_ok = strstr(text, t->expect_msg) != NULL;
    if (!msg_ok) fprintf(stderr, "    FAIL %s: stderr does not contain \"%s\"\n", t->name, t->expect_msg);
  }
  if (t->expect_exit >= 0) {
    if (code != t->expect_exit) fprintf(stderr, "    FAIL %s: exit status %d, expected %d\n", t->name, code, t->expect_exit);
    return code == t->expect_exit && msg_ok;
  }
  return code == 0;
}

static bool selected(const TestCase *t, int argc, char **argv, int first) {
  if (first >= argc) return true;
  for (int i = first; i < argc; i++)
    if (strstr(t->name, argv[i]) || strstr(t->file, argv[i])) return true;
  return false;
}

/* A suite may define this (the GPU suite does): when it returns false, no test runs and the
 * runner says why, counting every test as skipped. */
__attribute__((weak)) bool test_suite_precondition(char *why, size_t size);

int main(int argc, char **argv) {
  bool fork_each = true;
  int first = 1;
  for (; first < argc && argv[first][0] == '-'; first++) {
    if (!strcmp(argv[first], "--no-fork")) {
      fork_each = false;
    } else if (!strcmp(argv[first], "--list")) {
      for (int i = 0; i < g_n_tests; i++) printf("%s  (%s)\n", g_tests[i].name, g_tests[i].file);
      return 0;
    } else {
      fprintf(stderr, "usage: %s [--no-fork] [--list] [NAME...]\n", argv[0]);
      return 2;
    }
  }
  char why[256] = "";
  if (test_suite_precondition && !test_suite_precondition(why, sizeof why)) {
    printf("SKIPPED: %s; %d tests not run\n", why, g_n_tests);
    printf("0 passed, 0 failed, %d skipped\n", g_n_tests);
    return 0;
  }
  int passed = 0, failed = 0;
  for (int i = 0; i < g_n_tests; i++) {
    const TestCase *t = &g_tests[i];
    if (!selected(t, argc, argv, first)) continue;
    double sec = 0;
    bool ok;
    if (fork_each) {
      ok = run_forked(t, &sec);
    } else {
      if (t->expect_exit >= 0) continue; /* needs a child process */
      ok = run_inline(t) == 0;
    }
    printf("%s %-48s %7.2fs  %s\n", ok ? "ok  " : "FAIL", t->name, sec, t->file);
    fflush(stdout);
    ok ? passed++ : failed++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
