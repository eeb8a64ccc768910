/* Audio files in and out: reading any format libsndfile reads (mixed to mono, resampled with
 * libsoxr), MusicLDM's waveform normalisation, a silence check, and atomic 16-bit writes.
 *
 * Audio the user hands in never ends the program: every problem with a file returns -1 with
 * one line in the McmErr that names the file and the reason ("truncated", "NaN", ...).
 *
 * Samples are fp32 in [-1, 1) for integer formats (libsndfile's normalisation: int16 / 32768);
 * float formats are returned as stored (they may exceed 1).
 *
 * Thread safety: every function may run in several threads at once on different buffers.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Audio {
  float *samples; /* (n) mono */
  int64_t n;
  int rate;
} Audio;

/* Reads a file, mixes to mono (mean of the channels) and resamples to `rate` with libsoxr
 * (very-high quality) when the file's rate differs. Errors (-1, *out left empty):
 * missing / unreadable file, not audio, truncated (a WAV/AIFF header that declares more data
 * than the file holds, or a stream that ends early or fails to decode), zero-length, NaN or
 * Inf samples. A WAV whose data size is the streaming placeholder 0xFFFFFFFF is read to the
 * end of the file. A silent file is not an error here: see audio_is_silent. */
int audio_read(const char *path, int rate, Audio *out, McmErr *err);
void audio_free(Audio *a);

/* Resamples a buffer with libsoxr (SOXR_VHQ, one thread). *out is malloc'd (free() it);
 * *n_out = round(n · rate_out / rate_in). rate_in == rate_out copies. */
int audio_resample(const float *in, int64_t n, int rate_in, int rate_out, float **out, int64_t *n_out, McmErr *err);

/* MusicLDM/AudioLDM waveform normalisation (AudioLDM audio/tools.py normalize_wav), in place:
 * subtract the mean, divide by (peak |x| + 1e-8), times 0.5. All-zero input stays zero. */
void audio_normalize(float *x, int64_t n);

/* True when every |x[i]| <= threshold (peak test; n == 0 counts as silent). ./prepare uses it
 * to skip silent files and crops (AudioLDM's loader uses 1e-4). */
bool audio_is_silent(const float *x, int64_t n, float threshold);

typedef enum { AUDIO_WAV16, AUDIO_FLAC16 } AudioFormat;

/* Writes 16-bit PCM, mono, at `rate`, atomically: a temporary file beside `path` is written,
 * fsynced and renamed over it, so `path` is either untouched or complete. Never clips: if
 * the peak exceeds 1 the whole signal is scaled to peak 1 and *scaled (if not NULL) is set.
 * Samples map to round(x · 32768) clamped to [-32768, 32767] (so x = 1.0 becomes 32767),
 * which reads back through audio_read within 1/32768. Errors (-1): n <= 0, rate <= 0, NaN or
 * Inf samples, a path that cannot be written (missing or unwritable directory, disk full).
 * The temporary name is "<path>.tmp.<pid>.<tid>"; only a writer killed mid-write leaves one. */
int audio_write(const char *path, const float *x, int64_t n, int rate, AudioFormat fmt, bool *scaled, McmErr *err);

/* "wav" -> AUDIO_WAV16, "flac" -> AUDIO_FLAC16 (case-insensitive); anything else is an error. */
int audio_format_from_name(const char *name, AudioFormat *fmt, McmErr *err);

#ifdef __cplusplus
}
#endif
