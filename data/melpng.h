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
 * so the path is either untouched or a complete picture.
 *
 * A grid (melpng_grid_encode, the evaluation report's mels.png): rows × cols cells, one
 * spectrogram each, coloured as above against its own loudest value. A cell is at most
 * MELPNG_CELL_MAX_W pixels wide: a longer spectrogram is averaged (in the log domain) over
 * the smallest whole number of frames per pixel column that fits; every cell is as wide as
 * the widest, shorter ones start at the left. MELPNG_GRID_ROWS(M) pixel rows per mel bin
 * (128 px for 64 bins). MELPNG_GRID_GAP pixels of dark grey between cells and around the
 * grid, and in empty cells. */
#pragma once
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MELPNG_MIN_HEIGHT 256
#define MELPNG_ROWS(n_mels) ((n_mels) >= MELPNG_MIN_HEIGHT ? 1 : (MELPNG_MIN_HEIGHT + (n_mels) - 1) / (n_mels))
#define MELPNG_RANGE_NATS 9.2103404f /* 80 dB of magnitude in natural-log units */

#define MELPNG_CELL_MAX_W 256
#define MELPNG_GRID_ROWS(n_mels) ((n_mels) >= 128 ? 1 : 128 / (n_mels))
#define MELPNG_GRID_GAP 4

/* Cubehelix at x in [0, 1] -> rgb (0..255 each). */
void melpng_colormap(float x, uint8_t rgb[3]);

/* mel (frames, n_mels) time-major (data/mel.h's layout) -> a PNG at path. -1 with err on
 * sizes < 1, a non-finite value, or a failed write. */
int melpng_write(const char *path, const float *mel, int frames, int n_mels, McmErr *err);

/* The grid's size in pixels for cells of frames[rows·cols] (0 = an empty cell). */
void melpng_grid_size(const int *frames, int rows, int cols, int n_mels, int *width, int *height);

/* Cell (r, c) shows mels[r·cols + c] (frames[r·cols + c], n_mels), NULL / 0 frames for an
 * empty cell. *png (malloc'd, free() it) receives the encoded file of *size bytes. -1 with
 * err on sizes < 1 or a non-finite value (naming the cell). */
int melpng_grid_encode(const float *const *mels, const int *frames, int rows, int cols, int n_mels, void **png,
                       size_t *size, McmErr *err);

#ifdef __cplusplus
}
#endif
