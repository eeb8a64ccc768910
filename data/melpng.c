/* Spectrogram PNGs (see melpng.h). */
#include "data/melpng.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/io.h"

void melpng_colormap(float x, uint8_t rgb[3]) {
  const double start = 0.5, rotations = -1.5, hue = 1.0, gamma = 1.0;
  double l = x < 0 ? 0 : x > 1 ? 1 : x;
  double lg = pow(l, gamma);
  double phi = 2.0 * M_PI * (start / 3.0 + rotations * l);
  double amp = hue * lg * (1.0 - lg) / 2.0;
  /* Green's unit vectors in RGB for the two directions perpendicular to the grey diagonal,
   * chosen so that the perturbation keeps the luminance of the grey level. */
  double c = cos(phi), s = sin(phi);
  double v[3] = {lg + amp * (-0.14861 * c + 1.78277 * s), lg + amp * (-0.29227 * c - 0.90649 * s),
                 lg + amp * (1.97294 * c)};
  for (int k = 0; k < 3; k++) {
    double t = v[k] < 0 ? 0 : v[k] > 1 ? 1 : v[k];
    rgb[k] = (uint8_t)lround(t * 255.0);
  }
}

/* The loudest value of mel (frames, n_mels); -1 with err at the first non-finite one. */
static int mel_top(const float *mel, int frames, int n_mels, const char *what, float *top, McmErr *err) {
  int64_t n = (int64_t)frames * n_mels;
  *top = -INFINITY;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(mel[i]))
      return mcm_err(err, "%s: the spectrogram has a non-finite value at frame %lld, bin %lld", what,
                     (long long)(i / n_mels), (long long)(i % n_mels));
    if (mel[i] > *top) *top = mel[i];
  }
  return 0;
}

/* Paints mel (frames, n_mels) into dst (an RGB picture with `stride` bytes per row, top left at
 * dst): bin 0 at the bottom, `rows` pixel rows per bin, one column per `step` frames (their
 * mean), the top 80 dB below `top` through the colour table. */
static void paint(const float *mel, int frames, int n_mels, int step, int rows, float top, const uint8_t lut[256][3],
                  uint8_t *dst, int64_t stride) {
  const float lo = top - MELPNG_RANGE_NATS;
  const int W = (frames + step - 1) / step;
  for (int m = 0; m < n_mels; m++) {
    uint8_t *row = dst + (int64_t)(n_mels - 1 - m) * rows * stride; /* bin 0 at the bottom */
    for (int x = 0; x < W; x++) {
      int t0 = x * step, t1 = t0 + step < frames ? t0 + step : frames;
      double s = 0;
      for (int t = t0; t < t1; t++) s += mel[(int64_t)t * n_mels + m];
      float v = ((float)(s / (t1 - t0)) - lo) / MELPNG_RANGE_NATS;
      int k = (int)lroundf((v < 0 ? 0 : v > 1 ? 1 : v) * 255.0f);
      memcpy(row + 3 * x, lut[k], 3);
    }
    for (int r = 1; r < rows; r++) memcpy(row + r * stride, row, (size_t)(3 * W));
  }
}

/* libpng's simplified-API description of a W x H 8-bit RGB image. */
static png_image rgb_image(int W, int H) {
  png_image pi;
  memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  pi.width = (png_uint_32)W;
  pi.height = (png_uint_32)H;
  pi.format = PNG_FORMAT_RGB;
  return pi;
}

static void colour_table(uint8_t lut[256][3]) {
  for (int k = 0; k < 256; k++) melpng_colormap((float)k / 255.0f, lut[k]);
}

int melpng_write(const char *path, const float *mel, int frames, int n_mels, McmErr *err) {
  if (frames < 1 || n_mels < 1) return mcm_err(err, "%s: a spectrogram of %d frames x %d mels", path, frames, n_mels);
  float top;
  if (mel_top(mel, frames, n_mels, path, &top, err)) return -1;
  uint8_t lut[256][3];
  colour_table(lut);
  const int rows = MELPNG_ROWS(n_mels);
  const int64_t W = frames, H = (int64_t)n_mels * rows, stride = 3 * W;
  if (W > 0x7fffffff || H > 0x7fffffff)
    return mcm_err(err, "%s: a %lld x %lld picture is too large for PNG", path, (long long)W, (long long)H);
  uint8_t *img = MALLOC_CHECK((size_t)(stride * H));
  paint(mel, frames, n_mels, 1, rows, top, lut, img, stride);

  char tmp[4200];
  if (file_tmp_name(tmp, sizeof tmp, path, err)) return free(img), -1;
  png_image pi = rgb_image(W, H);
  int ok = png_image_write_to_file(&pi, tmp, 0, img, (png_int_32)stride, NULL);
  free(img);
  if (!ok) {
    unlink(tmp);
    return mcm_err(err, "%s: cannot write the PNG: %s", path, pi.message);
  }
  png_image_free(&pi);
  return file_publish(tmp, path, err);
}

/* ---------------------------------------------------------------- grids */

/* Frames per pixel column for a spectrogram of `frames` frames in a grid cell. */
static int grid_step(int frames) { return (frames + MELPNG_CELL_MAX_W - 1) / MELPNG_CELL_MAX_W; }

void melpng_grid_size(const int *frames, int rows, int cols, int n_mels, int *width, int *height) {
  int cell_w = 1;
  for (int i = 0; i < rows * cols; i++)
    if (frames[i] > 0) {
      int step = grid_step(frames[i]), w = (frames[i] + step - 1) / step;
      if (w > cell_w) cell_w = w;
    }
  *width = MELPNG_GRID_GAP + cols * (cell_w + MELPNG_GRID_GAP);
  *height = MELPNG_GRID_GAP + rows * (n_mels * MELPNG_GRID_ROWS(n_mels) + MELPNG_GRID_GAP);
}

int melpng_grid_encode(const float *const *mels, const int *frames, int rows, int cols, int n_mels, void **png,
                       size_t *size, McmErr *err) {
  *png = NULL, *size = 0;
  if (rows < 1 || cols < 1 || n_mels < 1 || rows > 1024 || cols > 1024)
    return mcm_err(err, "a spectrogram grid of %d x %d cells of %d mels", rows, cols, n_mels);
  float *tops = MALLOC_CHECK(sizeof(float) * (size_t)rows * cols);
  for (int i = 0; i < rows * cols; i++) {
    if (!mels[i] || frames[i] < 1) continue;
    char what[64];
    mcm_snprintf(what, sizeof what, "grid cell (%d, %d)", i / cols, i % cols);
    if (mel_top(mels[i], frames[i], n_mels, what, &tops[i], err)) return free(tops), -1;
  }
  int W, H;
  melpng_grid_size(frames, rows, cols, n_mels, &W, &H);
  const int brows = MELPNG_GRID_ROWS(n_mels), cell_h = n_mels * brows;
  const int cell_w = (W - MELPNG_GRID_GAP) / cols - MELPNG_GRID_GAP;
  const int64_t stride = 3 * (int64_t)W;
  uint8_t *img = MALLOC_CHECK((size_t)(stride * H));
  memset(img, 40, (size_t)(stride * H)); /* dark grey background */
  uint8_t lut[256][3];
  colour_table(lut);
  for (int i = 0; i < rows * cols; i++) {
    if (!mels[i] || frames[i] < 1) continue;
    int x0 = MELPNG_GRID_GAP + (i % cols) * (cell_w + MELPNG_GRID_GAP);
    int y0 = MELPNG_GRID_GAP + (i / cols) * (cell_h + MELPNG_GRID_GAP);
    paint(mels[i], frames[i], n_mels, grid_step(frames[i]), brows, tops[i], lut, img + y0 * stride + 3 * x0, stride);
  }
  free(tops);
  png_image pi = rgb_image(W, H);
  png_alloc_size_t n = 0;
  int ok = png_image_write_to_memory(&pi, NULL, &n, 0, img, (png_int_32)stride, NULL);
  void *buf = ok ? malloc(n) : NULL;
  if (ok) MCM_CHECK(buf, "out of memory for a %zu-byte PNG", (size_t)n);
  if (ok) ok = png_image_write_to_memory(&pi, buf, &n, 0, img, (png_int_32)stride, NULL);
  free(img);
  if (!ok) {
    free(buf);
    return mcm_err(err, "cannot encode the spectrogram grid as PNG: %s", pi.message);
  }
  png_image_free(&pi);
  *png = buf, *size = n;
  return 0;
}
