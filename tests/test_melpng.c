/* Spectrogram PNGs: a valid PNG (signature, IHDR size and type), the orientation (low mel
 * bins at the bottom, time to the right), a colour map whose brightness rises
 * monotonically, atomic writes, and refusals. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>

#include "data/melpng.h"
#include "test.h"

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Reads the signature and the IHDR chunk: width, height, bit depth, colour type. */
static void png_header(const char *path, uint32_t *w, uint32_t *h, int *depth, int *type) {
  uint8_t b[33];
  FILE *f = fopen(path, "rb");
  ASSERT(f, "open %s", path);
  ASSERT(fread(b, 1, sizeof b, f) == sizeof b, "short file %s", path);
  fclose(f);
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  EXPECT(!memcmp(b, sig, 8), "PNG signature");
  EXPECT(be32(b + 8) == 13 && !memcmp(b + 12, "IHDR", 4), "IHDR chunk first");
  *w = be32(b + 16), *h = be32(b + 20), *depth = b[24], *type = b[25];
}

/* Decodes to RGB with libpng's simplified API. */
static uint8_t *png_rgb(const char *path, uint32_t *w, uint32_t *h) {
  png_image im;
  memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  ASSERT(png_image_begin_read_from_file(&im, path), "read %s: %s", path, im.message);
  im.format = PNG_FORMAT_RGB;
  uint8_t *buf = malloc(PNG_IMAGE_SIZE(im));
  ASSERT(png_image_finish_read(&im, NULL, buf, 0, NULL), "decode %s: %s", path, im.message);
  *w = im.width, *h = im.height;
  return buf;
}

static double luma(const uint8_t *c) { return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]; }

TEST(melpng_writes_a_png_with_the_documented_size_and_orientation) {
  const int T = 50, M = 16;
  float mel[50 * 16];
  /* loud in bin 0 of every frame and in the last frame; everything else at the log floor */
  for (int t = 0; t < T; t++)
    for (int m = 0; m < M; m++) mel[t * M + m] = (m == 0 || t == T - 1) ? 1.0f : -11.5f;
  const char *path = TEST_PATH("a.png");
  McmErr err = {{0}};
  ASSERT(melpng_write(path, mel, T, M, &err) == 0, "%s", err.msg);
  uint32_t w, h;
  int depth, type;
  png_header(path, &w, &h, &depth, &type);
  const int rows = MELPNG_ROWS(M);
  EXPECT(rows == 16, "16 bins are 16 rows each (256 px)");
  EXPECT(w == (uint32_t)T && h == (uint32_t)(M * rows), "%ux%u, expected %dx%d", w, h, T, M * rows);
  EXPECT(depth == 8 && type == 2, "8-bit RGB (depth %d, colour type %d)", depth, type);

  uint8_t *img = png_rgb(path, &w, &h);
  const uint8_t *bottom_left = img + 3 * ((h - 1) * w + 0), *top_left = img + 3 * (0 * w + 0);
  const uint8_t *top_right = img + 3 * (0 * w + (w - 1));
  EXPECT(luma(bottom_left) > 250, "bin 0 (loud) at the bottom: luma %.1f", luma(bottom_left));
  EXPECT(luma(top_left) < 5, "the top bin of frame 0 (quiet) is dark: luma %.1f", luma(top_left));
  EXPECT(luma(top_right) > 250, "the last frame (loud) at the right: luma %.1f", luma(top_right));
  free(img);
  /* 256 bins or more: one row each */
  EXPECT(MELPNG_ROWS(64) == 4 && MELPNG_ROWS(256) == 1 && MELPNG_ROWS(300) == 1, "rows per bin");
}

TEST(melpng_colormap_brightness_rises_monotonically) {
  uint8_t c[3], lo[3], hi[3];
  melpng_colormap(0.0f, lo);
  melpng_colormap(1.0f, hi);
  EXPECT(lo[0] == 0 && lo[1] == 0 && lo[2] == 0, "black at 0");
  EXPECT(hi[0] == 255 && hi[1] == 255 && hi[2] == 255, "white at 1");
  double prev = -1;
  bool coloured = false;
  for (int k = 0; k <= 255; k++) {
    melpng_colormap(k / 255.0f, c);
    double l = luma(c);
    EXPECT(l >= prev - 1.0, "luma falls at %d: %.2f after %.2f", k, l, prev); /* 8-bit rounding allowance */
    prev = l > prev ? l : prev;
    coloured = coloured || abs(c[0] - c[2]) > 30;
  }
  EXPECT(coloured, "not a grey ramp");
}

TEST(melpng_refuses_bad_input_and_leaves_nothing) {
  float mel[4] = {0, 1, NAN, 2};
  McmErr err = {{0}};
  EXPECT(melpng_write(TEST_PATH("nan.png"), mel, 2, 2, &err) == -1, "NaN refused");
  EXPECT_STR_CONTAINS(err.msg, "non-finite value at frame 1, bin 0");
  EXPECT(access(TEST_PATH("nan.png"), F_OK) != 0, "no file");
  EXPECT(melpng_write(TEST_PATH("e.png"), mel, 0, 2, &err) == -1, "no frames refused");
  EXPECT_STR_CONTAINS(err.msg, "0 frames x 2 mels");
  float ok[4] = {0, 1, 2, 3};
  EXPECT(melpng_write(TEST_PATH("no_dir/x.png"), ok, 2, 2, &err) == -1, "missing directory refused");
  EXPECT_STR_CONTAINS(err.msg, "no_dir/x.png");
  EXPECT(!strchr(err.msg, '\n'), "one line: %s", err.msg);
}

TEST(melpng_replaces_a_file_atomically) {
  const char *path = TEST_PATH("b.png");
  FILE *f = fopen(path, "w");
  fputs("old", f);
  fclose(f);
  float mel[6] = {0, 1, 2, 3, 4, 5};
  McmErr err = {{0}};
  ASSERT(melpng_write(path, mel, 3, 2, &err) == 0, "%s", err.msg);
  uint32_t w, h;
  int depth, type;
  png_header(path, &w, &h, &depth, &type);
  EXPECT(w == 3 && h == 2 * MELPNG_ROWS(2), "%ux%u", w, h);
}
