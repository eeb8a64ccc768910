/* Audio reading (libsndfile), resampling (libsoxr), normalisation and atomic writes.
 * See audio.h for the contract. */
#include "audio.h"

#include "core/io.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Frames read per sf_readf_float call. */
enum { READ_BLOCK = 65536 };
/* The most frames allocated up front from a header's claim; more grows as data arrives, so
 * a tiny file whose header claims hours of audio cannot make us allocate gigabytes. */
enum { MAX_PREALLOC = 1 << 22 };
/* The data size streaming writers (ffmpeg to a pipe, ...) leave in a WAV header. */
#define WAV_SIZE_UNKNOWN 0xFFFFFFFFull

/* ---------------------------------------------------------------- reading */

/* libsndfile quietly shortens a WAV or AIFF whose data chunk claims more bytes than the file
 * holds, leaving "data : 32000 (should be 15978)" in its log. We treat that as a truncated
 * file (a partial download or copy), except for the streaming placeholder. Returns the
 * declared and actual sizes in *claimed / *held, or false when the header is consistent. */
static bool header_claims_more(SNDFILE *sf, unsigned long long *claimed, unsigned long long *held) {
  char log[4096] = {0};
  sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log - 1);
  for (char *line = log; *line;) {
    char *next = strchr(line, '\n');
    next = next ? next + 1 : line + strlen(line);
    char key[8];
    unsigned long long a, b;
    bool parsed = sscanf(line, " %4s : %llu (should be %llu)", key, &a, &b) == 3;
    if (parsed && (strcmp(key, "data") == 0 || strcmp(key, "SSND") == 0) && a > b && a != WAV_SIZE_UNKNOWN) {
      *claimed = a;
      *held = b;
      return true;
    }
    line = next;
  }
  return false;
}

/* Opens a user's file for reading, with a reason for every way it can fail. */
static SNDFILE *open_user_file(const char *path, SF_INFO *info, McmErr *err) {
  struct stat st;
  if (stat(path, &st) != 0) {
    mcm_err(err, "audio '%s': cannot open: %s", path, strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    mcm_err(err, "audio '%s': is a directory, not an audio file", path);
    return NULL;
  }
  if (st.st_size == 0) {
    mcm_err(err, "audio '%s': zero-length: the file is empty", path);
    return NULL;
  }
  memset(info, 0, sizeof *info);
  SNDFILE *sf = sf_open(path, SFM_READ, info);
  if (!sf) {
    int code = sf_error(NULL);
    if (code == SF_ERR_UNRECOGNISED_FORMAT)
      mcm_err(err, "audio '%s': not an audio file libsndfile can read (%s) (hint: WAV, FLAC, OGG, AIFF, MP3 ...)",
              path, sf_error_number(code));
    else
      mcm_err(err, "audio '%s': cannot read: %s", path, sf_error_number(code));
    return NULL;
  }
  if (info->channels < 1 || info->samplerate <= 0) {
    mcm_err(err, "audio '%s': invalid header (%d channels, %d Hz)", path, info->channels, info->samplerate);
    sf_close(sf);
    return NULL;
  }
  return sf;
}

/* Reads every frame, mixing to mono and checking each sample is finite. */
static int read_mono(SNDFILE *sf, const SF_INFO *info, const char *path, float **out, int64_t *n_out, McmErr *err) {
  const int C = info->channels;
  bool known = info->frames > 0 && info->frames < SF_COUNT_MAX;
  int64_t cap = known ? (info->frames < MAX_PREALLOC ? info->frames : MAX_PREALLOC) : READ_BLOCK;
  float *mono = malloc((size_t)cap * sizeof(float));
  float *block = malloc((size_t)READ_BLOCK * (size_t)C * sizeof(float)); /* (READ_BLOCK, C) interleaved */
  int64_t n = 0;
  int rc = 0;
  if (!mono || !block) {
    rc = mcm_err(err, "audio '%s': out of memory reading %d channels", path, C);
    goto done;
  }
  for (;;) {
    sf_count_t got = sf_readf_float(sf, block, READ_BLOCK);
    if (got <= 0) break;
    if (n + got > cap) {
      int64_t want = cap * 2 > n + got ? cap * 2 : n + got;
      float *grown = realloc(mono, (size_t)want * sizeof(float));
      if (!grown) {
        rc = mcm_err(err, "audio '%s': out of memory after %lld frames", path, (long long)n);
        goto done;
      }
      mono = grown, cap = want;
    }
    for (sf_count_t t = 0; t < got; t++) {
      double sum = 0;
      for (int c = 0; c < C; c++) {
        float v = block[t * C + c];
        if (!isfinite(v)) {
          rc = mcm_err(err, "audio '%s': sample %lld (channel %d, %.3f s) is %s", path, (long long)(n + t), c,
                       (double)(n + t) / info->samplerate, isnan(v) ? "NaN" : "Inf");
          goto done;
        }
        sum += v;
      }
      mono[n + t] = (float)(sum / C);
    }
    n += got;
  }
  if (sf_error(sf) != SF_ERR_NO_ERROR) {
    rc = mcm_err(err, "audio '%s': truncated or corrupt: decoding stopped after %lld of %lld frames: %s", path,
                 (long long)n, (long long)info->frames, sf_strerror(sf));
  } else if (known && n < info->frames) {
    rc = mcm_err(err, "audio '%s': truncated: the header declares %lld frames, the file holds %lld", path,
                 (long long)info->frames, (long long)n);
  } else if (n == 0) {
    rc = mcm_err(err, "audio '%s': zero-length: no audio samples", path);
  }
done:
  free(block);
  if (rc != 0) {
    free(mono);
    return rc;
  }
  *out = mono;
  *n_out = n;
  return 0;
}

int audio_read(const char *path, int rate, Audio *out, McmErr *err) {
  memset(out, 0, sizeof *out);
  if (rate <= 0) return mcm_err(err, "audio '%s': target sample rate %d Hz must be positive", path, rate);
  SF_INFO info;
  SNDFILE *sf = open_user_file(path, &info, err);
  if (!sf) return -1;
  unsigned long long claimed, held;
  if (header_claims_more(sf, &claimed, &held)) {
    sf_close(sf);
    return mcm_err(err, "audio '%s': truncated: the header declares %llu bytes of audio data, the file holds %llu "
                   "(hint: an interrupted download or copy?)", path, claimed, held);
  }
  float *mono;
  int64_t n;
  int rc = read_mono(sf, &info, path, &mono, &n, err);
  sf_close(sf);
  if (rc != 0) return rc;
  if (info.samplerate != rate) {
    float *res;
    int64_t n_res;
    McmErr why = {{0}};
    rc = audio_resample(mono, n, info.samplerate, rate, &res, &n_res, &why);
    free(mono);
    if (rc != 0) return mcm_err(err, "audio '%s': %s", path, why.msg);
    if (n_res == 0) {
      free(res);
      return mcm_err(err, "audio '%s': zero-length: %lld samples at %d Hz leave none at %d Hz", path, (long long)n,
                     info.samplerate, rate);
    }
    mono = res, n = n_res;
  }
  out->samples = mono;
  out->n = n;
  out->rate = rate;
  return 0;
}

void audio_free(Audio *a) {
  if (!a) return;
  free(a->samples);
  memset(a, 0, sizeof *a);
}

/* ---------------------------------------------------------------- resampling */

int audio_resample(const float *in, int64_t n, int rate_in, int rate_out, float **out, int64_t *n_out, McmErr *err) {
  *out = NULL;
  *n_out = 0;
  if (rate_in <= 0 || rate_out <= 0)
    return mcm_err(err, "cannot resample from %d Hz to %d Hz: rates must be positive", rate_in, rate_out);
  if (n < 0) return mcm_err(err, "cannot resample %lld samples", (long long)n);
  /* libsoxr, when flushed, produces round(n · ratio) samples; a little slack is harmless. */
  int64_t expect = rate_in == rate_out ? n : (int64_t)llround((double)n * rate_out / rate_in);
  float *y = malloc((size_t)(expect + 2) * sizeof(float));
  if (!y) return mcm_err(err, "out of memory resampling %lld samples", (long long)n);
  if (rate_in == rate_out || n == 0) {
    if (n) memcpy(y, in, (size_t)n * sizeof(float));
    *out = y;
    *n_out = n;
    return 0;
  }
  soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  soxr_quality_spec_t q = soxr_quality_spec(SOXR_VHQ, 0);
  soxr_runtime_spec_t rt = soxr_runtime_spec(1); /* callers parallelise across files */
  size_t idone = 0, odone = 0;
  soxr_error_t e = soxr_oneshot(rate_in, rate_out, 1, in, (size_t)n, &idone, y, (size_t)expect + 2, &odone, &io, &q, &rt);
  if (e) {
    free(y);
    return mcm_err(err, "libsoxr failed resampling %d Hz to %d Hz: %s", rate_in, rate_out, e);
  }
  *out = y;
  *n_out = (int64_t)odone;
  return 0;
}

/* ---------------------------------------------------------------- checks and normalisation */

void audio_normalize(float *x, int64_t n) {
  if (n <= 0) return;
  double mean = 0;
  for (int64_t i = 0; i < n; i++) mean += x[i];
  mean /= (double)n;
  double peak = 0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = (float)(x[i] - mean);
    peak = fmax(peak, fabs(x[i]));
  }
  double g = 0.5 / (peak + 1e-8);
  for (int64_t i = 0; i < n; i++) x[i] = (float)(x[i] * g);
}

bool audio_is_silent(const float *x, int64_t n, float threshold) {
  for (int64_t i = 0; i < n; i++)
    if (!(fabsf(x[i]) <= threshold)) return false; /* NaN counts as not silent */
  return true;
}

/* ---------------------------------------------------------------- writing */

int audio_format_from_name(const char *name, AudioFormat *fmt, McmErr *err) {
  if (name && strcasecmp(name, "wav") == 0) *fmt = AUDIO_WAV16;
  else if (name && strcasecmp(name, "flac") == 0) *fmt = AUDIO_FLAC16;
  else return mcm_err(err, "unknown audio format '%s' (expected wav or flac)", name ? name : "(null)");
  return 0;
}

/* Writes the int16 samples through an open descriptor; returns -1 with err set on failure. */
static int write_pcm16(int fd, const char *path, const float *x, int64_t n, int rate, AudioFormat fmt, float gain,
                       McmErr *err) {
  SF_INFO info = {.samplerate = rate, .channels = 1};
  info.format = (fmt == AUDIO_FLAC16 ? SF_FORMAT_FLAC : SF_FORMAT_WAV) | SF_FORMAT_PCM_16;
  if (!sf_format_check(&info))
    return mcm_err(err, "cannot write '%s': libsndfile refuses %s at %d Hz", path, fmt == AUDIO_FLAC16 ? "FLAC" : "WAV",
                   rate);
  SNDFILE *sf = sf_open_fd(fd, SFM_WRITE, &info, SF_FALSE);
  if (!sf) return mcm_err(err, "cannot write '%s': %s", path, sf_strerror(NULL));
  short block[4096];
  int rc = 0;
  for (int64_t i = 0; i < n && rc == 0; i += 4096) {
    int64_t m = n - i < 4096 ? n - i : 4096;
    for (int64_t j = 0; j < m; j++) {
      double v = nearbyint((double)x[i + j] * gain * 32768.0);
      block[j] = (short)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }
    if (sf_write_short(sf, block, m) != m) rc = mcm_err(err, "cannot write '%s': %s", path, sf_strerror(sf));
  }
  if (sf_close(sf) != 0 && rc == 0) rc = mcm_err(err, "cannot write '%s': finishing the file failed", path);
  return rc;
}

int audio_write(const char *path, const float *x, int64_t n, int rate, AudioFormat fmt, bool *scaled, McmErr *err) {
  if (scaled) *scaled = false;
  if (n <= 0) return mcm_err(err, "cannot write '%s': no samples (%lld)", path, (long long)n);
  if (rate <= 0) return mcm_err(err, "cannot write '%s': sample rate %d Hz must be positive", path, rate);
  if (fmt != AUDIO_WAV16 && fmt != AUDIO_FLAC16) return mcm_err(err, "cannot write '%s': unknown format %d", path, fmt);
  float peak = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(x[i]))
      return mcm_err(err, "cannot write '%s': sample %lld is %s (hint: the model produced non-finite audio)", path,
                     (long long)i, isnan(x[i]) ? "NaN" : "Inf");
    peak = fmaxf(peak, fabsf(x[i]));
  }
  float gain = 1.0f;
  if (peak > 1.0f) {
    gain = 1.0f / peak;
    if (scaled) *scaled = true;
  }

  /* The temporary name is unique per process and thread, so concurrent writers of
   * different outputs never share one; a stale one from a killed writer is replaced. */
  char tmp[PATH_MAX];
  if (file_tmp_name(tmp, sizeof tmp, path, err)) return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0 && errno == EEXIST) {
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  }
  if (fd < 0) return mcm_err(err, "cannot write '%s': %s", path, strerror(errno));

  int rc = write_pcm16(fd, path, x, n, rate, fmt, gain, err);
  if (close(fd) != 0 && rc == 0) rc = mcm_err(err, "cannot write '%s': close: %s", path, strerror(errno));
  if (rc != 0) {
    unlink(tmp);
    return rc;
  }
  return file_publish(tmp, path, err);
}
