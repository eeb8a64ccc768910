/* Errors and check macros shared by every part of mcm.
 *
 * Two kinds of failure:
 *  - a broken invariant or a failed library call (CUDA, cuBLAS, cuDNN, NCCL, HDF5,
 *    libsndfile, libc): the CHECK macros print "mcm: error: file:line: what failed
 *    (hint: ...)" and exit(1). These are never the user's input.
 *  - a bad input from the user (config, tensor file, audio, command line): the function
 *    returns -1 and fills an McmErr; the caller decides (the mains print it and exit 2).
 */
#pragma once
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MCM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MCM_PRINTF(a, b)
#endif
#ifdef __cplusplus
#define MCM_NORETURN [[noreturn]]
#else
#define MCM_NORETURN _Noreturn
#endif

/* Prints "mcm: error: file:line: message" and exits with status 1. */
MCM_NORETURN void mcm_fatal(const char *file, int line, const char *fmt, ...) MCM_PRINTF(3, 4);

#define MCM_FATAL(...) mcm_fatal(__FILE__, __LINE__, __VA_ARGS__)
#define MCM_CHECK(cond, ...)                              \
  do {                                                    \
    if (!(cond)) mcm_fatal(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

/* libc calls that return -1 (or a negative value) and set errno. */
#define LIBC_CHECK(expr)                                                               \
  do {                                                                                 \
    if ((expr) < 0) mcm_fatal(__FILE__, __LINE__, "%s failed: %s", #expr, strerror(errno)); \
  } while (0)

/* Allocation that never returns NULL. */
void *mcm_malloc_check(size_t bytes, const char *file, int line);
void *mcm_calloc_check(size_t n, size_t size, const char *file, int line);
void *mcm_realloc_check(void *p, size_t bytes, const char *file, int line);
#define MALLOC_CHECK(bytes) mcm_malloc_check((bytes), __FILE__, __LINE__)
#define CALLOC_CHECK(n, size) mcm_calloc_check((n), (size), __FILE__, __LINE__)
#define REALLOC_CHECK(p, bytes) mcm_realloc_check((p), (bytes), __FILE__, __LINE__)

/* fopen for files the program itself needs (not user input): exits naming the path. */
FILE *mcm_fopen_check(const char *path, const char *mode, const char *file, int line);
#define FOPEN_CHECK(path, mode) mcm_fopen_check((path), (mode), __FILE__, __LINE__)

/* A user-facing error message. Functions that can fail on user input take one. */
typedef struct McmErr {
  char msg[1024];
} McmErr;

/* Formats the message into err (if not NULL) and returns -1, so callers can
 * `return mcm_err(err, "...")`. */
int mcm_err(McmErr *err, const char *fmt, ...) MCM_PRINTF(2, 3);

/* Formats into a caller buffer, always NUL-terminated, truncating safely. */
void mcm_snprintf(char *buf, size_t size, const char *fmt, ...) MCM_PRINTF(3, 4);

#ifdef __cplusplus
}
#endif
