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

int melpng_write(const char *path, const float *mel, int frames, int n_mels, McmErr *err) {
  if (frames < 1 || n_mels < 1) return mcm_err(err, "%s: a spectrogram of %d frames x %d mels", path, frames, n_mels);
  int64_t n = (int64_t)frames * n_mels;
  float top = -INFINITY;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(mel[i]))
      return mcm_err(err, "%s: the spectrogram has a non-finite value at frame %lld, bin %lld", path,
                     (long long)(i / n_mels), (long long)(i % n_mels));
    if (mel[i] > top) top = mel[i];
  }
  const float lo = top - MELPNG_RANGE_NATS;
  uint8_t lut[256][3];
  for (int k = 0; k < 256; k++) melpng_colormap((float)k / 255.0f, lut[k]);

  const int rows = MELPNG_ROWS(n_mels);
  const int64_t W = frames, H = (int64_t)n_mels * rows, stride = 3 * W;
  if (W > 0x7fffffff || H > 0x7fffffff)
    return mcm_err(err, "%s: a %lld x %lld picture is too large for PNG", path, (long long)W, (long long)H);
  uint8_t *img = MALLOC_CHECK((size_t)(stride * H));
  for (int m = 0; m < n_mels; m++) {
    uint8_t *row = img + (int64_t)(n_mels - 1 - m) * rows * stride; /* bin 0 at the bottom */
    for (int t = 0; t < frames; t++) {
      float v = (mel[(int64_t)t * n_mels + m] - lo) / MELPNG_RANGE_NATS;
      int k = (int)lroundf((v < 0 ? 0 : v > 1 ? 1 : v) * 255.0f);
      memcpy(row + 3 * t, lut[k], 3);
    }
    for (int r = 1; r < rows; r++) memcpy(row + r * stride, row, (size_t)stride);
  }

  char tmp[4200];
  if (file_tmp_name(tmp, sizeof tmp, path, err)) return free(img), -1;
  png_image pi;
  memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  pi.width = (png_uint_32)W;
  pi.height = (png_uint_32)H;
  pi.format = PNG_FORMAT_RGB;
  int ok = png_image_write_to_file(&pi, tmp, 0, img, (png_int_32)stride, NULL);
  free(img);
  if (!ok) {
    unlink(tmp);
    return mcm_err(err, "%s: cannot write the PNG: %s", path, pi.message);
  }
  png_image_free(&pi);
  return file_publish(tmp, path, err);
}
