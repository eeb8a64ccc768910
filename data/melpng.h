/* Spectrogram pictures: a log-mel (T, M) as a PNG beside the audio (./infer --mel-png).
 *
 *   x axis  time, frame 0 at the left, one pixel column per frame (width T)
 *   y axis  mel bins, the lowest at the bottom; each bin is MELPNG_ROWS(M) pixel rows tall
 *           (height M · MELPNG_ROWS(M), at least 256 px for few bins)
 *   colour  the top 80 dB below the loudest value (log-mel values are natural-log
 *           magnitudes: 80 dB = 80 / (20·log10 e) = 9.21 nats) mapped through cubehelix
 *           (D. A. Green 2011, start 0.5, rotations -1.5, hue 1, gamma 1), computed here: a
 *           colour scheme whose perceived brightness rises monotonically from black (quiet)
 *           to white (loud), readable in greyscale and by colour-blind viewers
 *
 * 8-bit RGB through libpng, written atomically (a temporary beside the path, then renamed),
 * so the path is either untouched or a complete picture. */
#pragma once
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MELPNG_MIN_HEIGHT 256
#define MELPNG_ROWS(n_mels) ((n_mels) >= MELPNG_MIN_HEIGHT ? 1 : (MELPNG_MIN_HEIGHT + (n_mels) - 1) / (n_mels))
#define MELPNG_RANGE_NATS 9.2103404f /* 80 dB of magnitude in natural-log units */

/* Cubehelix at x in [0, 1] -> rgb (0..255 each). */
void melpng_colormap(float x, uint8_t rgb[3]);

/* mel (frames, n_mels) time-major (data/mel.h's layout) -> a PNG at path. -1 with err on
 * sizes < 1, a non-finite value, or a failed write. */
int melpng_write(const char *path, const float *mel, int frames, int n_mels, McmErr *err);

#ifdef __cplusplus
}
#endif
