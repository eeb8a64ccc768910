/* Check macros for libsndfile calls, carrying file:line and the path involved.
 *
 *   SNDFILE *sf = SF_OPEN_CHECK(path, SFM_READ, &info);   exits naming path and reason
 *   SF_CHECK(sf, path, sf_write_float(sf, buf, n) == n);   exits with sf_strerror(sf)
 *
 * For the program's own files. Audio the user hands in (datasets, --init-audio) must not
 * end the program: read it with sf_open and report through McmErr instead. */
#pragma once
#include <sndfile.h>

#include "kernels/common.h"

MCM_NORETURN void mcm_sndfile_fail(const char *file, int line, const char *expr, SNDFILE *sf, const char *path);

#define SF_OPEN_CHECK(path, mode, info) mcm_sf_open_check((path), (mode), (info), __FILE__, __LINE__)
SNDFILE *mcm_sf_open_check(const char *path, int mode, SF_INFO *info, const char *file, int line);

#define SF_CHECK(sf, path, ok)                                        \
  do {                                                                \
    if (!(ok)) mcm_sndfile_fail(__FILE__, __LINE__, #ok, (sf), (path)); \
  } while (0)
