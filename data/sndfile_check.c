/* libsndfile failure reporting (see sndfile_check.h). */
#include "sndfile_check.h"

void mcm_sndfile_fail(const char *file, int line, const char *expr, SNDFILE *sf, const char *path) {
  int code = sf_error(sf);
  const char *hint = code == SF_ERR_UNRECOGNISED_FORMAT ? " (hint: not an audio format libsndfile reads: WAV, FLAC, OGG, AIFF, ...)"
                     : code == SF_ERR_SYSTEM            ? " (hint: check the path, its permissions and free disk space)"
                                                        : "";
  mcm_fatal(file, line, "%s failed for '%s': %s%s", expr, path, sf_strerror(sf), hint);
}

SNDFILE *mcm_sf_open_check(const char *path, int mode, SF_INFO *info, const char *file, int line) {
  SNDFILE *sf = sf_open(path, mode, info);
  if (!sf) mcm_sndfile_fail(file, line, "sf_open", NULL, path);
  return sf;
}
