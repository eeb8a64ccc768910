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

/* ---------------------------------------------------------------- grids */

/* Decodes an in-memory PNG to RGB. */
static uint8_t *png_rgb_mem(const void *png, size_t n, uint32_t *w, uint32_t *h) {
  png_image im;
  memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  ASSERT(png_image_begin_read_from_memory(&im, png, n), "read: %s", im.message);
  im.format = PNG_FORMAT_RGB;
  uint8_t *buf = malloc(PNG_IMAGE_SIZE(im));
  ASSERT(png_image_finish_read(&im, NULL, buf, 0, NULL), "decode: %s", im.message);
  *w = im.width, *h = im.height;
  return buf;
}

TEST(melpng_grid_places_cells_averages_long_ones_and_leaves_gaps) {
  /* 2 x 2 cells of 8 bins: (0,0) 600 frames, loud only in bin 0 and in frames 598-599 (the
   * last column averages frames 597..599: 3 per column, 200 columns); (0,1) 100 frames loud
   * in bin 7; (1,0) empty; (1,1) 50 frames, all equal. */
  const int M = 8, rows = MELPNG_GRID_ROWS(M), G = MELPNG_GRID_GAP;
  float *a = malloc(sizeof(float) * 600 * M), *b = malloc(sizeof(float) * 100 * M), *d = malloc(sizeof(float) * 50 * M);
  for (int t = 0; t < 600; t++)
    for (int m = 0; m < M; m++) a[t * M + m] = (m == 0 || t >= 598) ? 0.0f : -20.0f;
  for (int t = 0; t < 100; t++)
    for (int m = 0; m < M; m++) b[t * M + m] = m == 7 ? 1.0f : -20.0f;
  for (int i = 0; i < 50 * M; i++) d[i] = 3.0f;
  const float *cells[4] = {a, b, NULL, d};
  const int frames[4] = {600, 100, 0, 50};
  int W, H;
  melpng_grid_size(frames, 2, 2, M, &W, &H);
  EXPECT(rows == 16, "8 bins: 16 rows each (128 px)");
  EXPECT(W == G + 2 * (200 + G) && H == G + 2 * (M * rows + G), "%dx%d", W, H);
  void *png;
  size_t n;
  McmErr err = {{0}};
  ASSERT(melpng_grid_encode(cells, frames, 2, 2, M, &png, &n, &err) == 0, "%s", err.msg);
  uint32_t w, h;
  uint8_t *img = png_rgb_mem(png, n, &w, &h);
  ASSERT(w == (uint32_t)W && h == (uint32_t)H, "%ux%u vs %dx%d", w, h, W, H);
#define PX(x, y) (img + 3 * ((size_t)(y) * w + (x)))
  const int cw = 200, ch = M * rows, x1 = G + cw + G, y1 = G + ch + G;
  EXPECT(PX(0, 0)[0] == 40 && PX(G + cw + 1, 10)[1] == 40, "gaps are dark grey");
  EXPECT(PX(G + 5, G + ch - 1)[0] == 255 && luma(PX(G + 5, G)) < 5, "cell (0,0): bin 0 loud at the bottom, the top dark");
  /* the last column averages frames 597 (quiet, -20) and 598, 599 (0): (-20/3) nats below the
   * top, 0.276 of the 9.21-nat range below white; the column before it is all quiet */
  uint8_t want[3];
  melpng_colormap(lroundf((1.0f - (20.0f / 3.0f) / MELPNG_RANGE_NATS) * 255.0f) / 255.0f, want); /* 256 levels */
  EXPECT(!memcmp(PX(G + 199, G), want, 3), "averaged last column: %d,%d,%d vs %d,%d,%d", PX(G + 199, G)[0],
         PX(G + 199, G)[1], PX(G + 199, G)[2], want[0], want[1], want[2]);
  EXPECT(luma(PX(G + 198, G)) < 5, "the column before is quiet");
  EXPECT(luma(PX(x1 + 3, G)) > 250 && luma(PX(x1 + 3, G + ch - 1)) < 5, "cell (0,1): bin 7 at the top");
  EXPECT(PX(x1 + 100, G + 5)[0] == 40, "cell (0,1) is 100 px wide, then background");
  EXPECT(PX(G + 10, y1 + 10)[0] == 40 && PX(G + 10, y1 + 10)[2] == 40, "the empty cell is background");
  EXPECT(luma(PX(x1 + 10, y1 + 10)) > 250 && PX(x1 + 50, y1 + 10)[0] == 40, "cell (1,1): 50 px, all at the top");
#undef PX
  free(img), free(png);
  /* refusals */
  float bad[8] = {0, 0, 0, NAN, 0, 0, 0, 0};
  const float *bc[1] = {bad};
  const int bf[1] = {1};
  EXPECT(melpng_grid_encode(bc, bf, 1, 1, M, &png, &n, &err) == -1 && png == NULL, "NaN refused");
  EXPECT_STR_CONTAINS(err.msg, "grid cell (0, 0)");
  EXPECT(melpng_grid_encode(bc, bf, 0, 1, M, &png, &n, &err) == -1, "no rows refused");
  free(a), free(b), free(d);
}
