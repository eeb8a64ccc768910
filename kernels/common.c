/* Error reporting and checked allocation (see common.h). */
#include "common.h"

#include <stdarg.h>

void mcm_fatal(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fflush(stdout);
  fprintf(stderr, "mcm: error: %s:%d: ", file, line);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

void *mcm_malloc_check(size_t bytes, const char *file, int line) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) mcm_fatal(file, line, "out of host memory allocating %zu bytes", bytes);
  return p;
}

void *mcm_calloc_check(size_t n, size_t size, const char *file, int line) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) mcm_fatal(file, line, "out of host memory allocating %zu x %zu bytes", n, size);
  return p;
}

void *mcm_realloc_check(void *p, size_t bytes, const char *file, int line) {
  void *q = realloc(p, bytes ? bytes : 1);
  if (!q) mcm_fatal(file, line, "out of host memory reallocating to %zu bytes", bytes);
  return q;
}

FILE *mcm_fopen_check(const char *path, const char *mode, const char *file, int line) {
  FILE *f = fopen(path, mode);
  if (!f) {
    mcm_fatal(file, line, "cannot open '%s' (mode %s): %s (hint: check the path and its permissions)",
              path, mode, strerror(errno));
  }
  return f;
}

int mcm_err(McmErr *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

void mcm_snprintf(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, size, fmt, ap);
  va_end(ap);
}
