/* The evaluation tool (data/evaluate.h): Fréchet distance against its defining properties and
 * against SciPy, log-mel embeddings that separate tones from noise, and bad inputs. */
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/audio.h"
#include "data/evaluate.h"
#include "diffusion/bridge.h"
#include "tests/fixture.h"
#include "tests/test.h"

/* Deterministic standard normals (xorshift + Box-Muller): the test needs no library RNG. */
static double randn(uint64_t *s) {
  double u[2];
  for (int i = 0; i < 2; i++) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    u[i] = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
  }
  return sqrt(-2 * log(u[0])) * cos(2 * M_PI * u[1]);
}

/* x (n, d) = z · L + mu with z standard normal, L (d, d) random: a correlated Gaussian. */
static float *gaussian_set(int n, int d, uint64_t seed, double scale, double shift) {
  uint64_t s = seed * 2654435761u + 1;
  double *L = malloc(sizeof(double) * d * d);
  for (int i = 0; i < d * d; i++) L[i] = randn(&s) * scale;
  float *x = malloc(sizeof(float) * (size_t)n * d);
  double *z = malloc(sizeof(double) * d);
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < d; k++) z[k] = randn(&s);
    for (int j = 0; j < d; j++) {
      double v = shift;
      for (int k = 0; k < d; k++) v += z[k] * L[k * d + j];
      x[(size_t)i * d + j] = (float)v;
    }
  }
  free(L), free(z);
  return x;
}

static double trace_cov(const float *x, int n, int d) {
  double *mu = malloc(sizeof(double) * d), *s = malloc(sizeof(double) * d * d), t = 0;
  McmErr err;
  EXPECT(eval_gauss_fit(x, n, d, mu, s, &err) == 0, "%s", err.msg);
  for (int i = 0; i < d; i++) t += s[i * d + i];
  free(mu), free(s);
  return t;
}

TEST(evaluate_fd_of_a_set_with_itself_is_zero) {
  McmErr err;
  /* full rank (n > d) and rank-deficient (n < d: what small sets of 128-d clips give) */
  const int cases[][2] = {{60, 16}, {5, 128}};
  for (int c = 0; c < 2; c++) {
    int n = cases[c][0], d = cases[c][1];
    float *x = gaussian_set(n, d, 1 + c, 1.0, 0.5);
    double fd = -1;
    ASSERT(eval_frechet_sets(x, n, x, n, d, &fd, &err) == 0, "%s", err.msg);
    double scale = trace_cov(x, n, d);
    EXPECT(fd >= 0 && fd <= 1e-9 * scale, "n %d d %d: FD(x, x) = %.3g (trace %.3g)", n, d, fd, scale);
    free(x);
  }
}

TEST(evaluate_fd_is_symmetric) {
  McmErr err;
  float *a = gaussian_set(40, 20, 3, 1.0, 0.0), *b = gaussian_set(30, 20, 4, 0.5, 1.0);
  double ab, ba;
  ASSERT(eval_frechet_sets(a, 40, b, 30, 20, &ab, &err) == 0, "%s", err.msg);
  ASSERT(eval_frechet_sets(b, 30, a, 40, 20, &ba, &err) == 0, "%s", err.msg);
  EXPECT(ab > 1, "distinct sets: FD %.3g", ab);
  EXPECT_NEAR(ab, ba, 1e-10 * ab);
  free(a), free(b);
}

TEST(evaluate_fd_matches_scipy) {
  Fixture *fx = fixture_open("tests/fixtures/evaluate.h5");
  int64_t na, nb, n1;
  float *a = fixture_values(fx, "fd/a", &na), *b = fixture_values(fx, "fd/b", &nb);
  float *fd32 = fixture_values(fx, "fd/fd", &n1), *lo = fixture_values(fx, "fd/fd_lo", &n1);
  const int d = 24;
  ASSERT(na == 80 * d && nb == 100 * d, "fixture sizes %lld %lld", (long long)na, (long long)nb);
  double ref = (double)fd32[0] + (double)lo[0], fd;
  McmErr err;
  ASSERT(eval_frechet_sets(a, 80, b, 100, d, &fd, &err) == 0, "%s", err.msg);
  EXPECT(fabs(fd - ref) <= 1e-6 * ref, "FD %.12g vs scipy %.12g: rel %.3g", fd, ref, fabs(fd - ref) / ref);
  free(a), free(b), free(fd32), free(lo);
  fixture_close(fx);
}

TEST(evaluate_fd_grows_by_the_squared_mean_shift) {
  const int d = 16, n = 50;
  McmErr err;
  float *x = gaussian_set(n, d, 5, 1.0, 0.0);
  double *mu = malloc(sizeof(double) * d), *mu2 = malloc(sizeof(double) * d), *s = malloc(sizeof(double) * d * d);
  ASSERT(eval_gauss_fit(x, n, d, mu, s, &err) == 0, "%s", err.msg);
  double prev = 0;
  for (int k = 1; k <= 3; k++) {
    double want = 0;
    for (int j = 0; j < d; j++) {
      double delta = 0.25 * k * (j % 3 - 1.0);
      mu2[j] = mu[j] + delta, want += delta * delta;
    }
    double fd;
    ASSERT(eval_frechet(mu, s, mu2, s, d, &fd, &err) == 0, "%s", err.msg);
    /* equal covariances: the trace term is tr Σ + tr Σ − 2 tr Σ = 0 up to round-off */
    EXPECT_NEAR(fd, want, 1e-9 * (want + trace_cov(x, n, d)));
    EXPECT(fd > prev, "FD must grow with the shift: %.6g after %.6g", fd, prev);
    prev = fd;
  }
  /* the same through the sets: shifting every embedding by δ shifts the mean by δ */
  float *y = malloc(sizeof(float) * n * d);
  double want = 0;
  for (int i = 0; i < n * d; i++) y[i] = x[i] + (i % d < 4 ? 0.5f : 0.0f);
  for (int j = 0; j < 4; j++) want += 0.25;
  double fd;
  ASSERT(eval_frechet_sets(x, n, y, n, d, &fd, &err) == 0, "%s", err.msg);
  EXPECT_NEAR(fd, want, 1e-4);
  free(x), free(y), free(mu), free(mu2), free(s);
}

TEST(evaluate_gauss_fit_needs_two) {
  McmErr err;
  float x[4] = {1, 2, 3, 4};
  double mu[4], s[16], fd;
  EXPECT(eval_gauss_fit(x, 1, 4, mu, s, &err) == -1, "one embedding must be refused");
  EXPECT_STR_CONTAINS(err.msg, "at least 2");
  EXPECT(eval_frechet_sets(x, 1, x, 1, 4, &fd, &err) == -1, "one embedding must be refused");
}

/* ------------------------------------------------------------------ folders of audio */

enum { TONE, NOISE };

/* n files of 1 s at 16 kHz: sine tones of varying pitch and level, or white noise. */
static void write_set(const char *dir, int kind, int n, uint64_t seed) {
  ASSERT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
  const int rate = 16000, len = rate;
  float *x = malloc(sizeof(float) * len);
  uint64_t s = seed;
  for (int f = 0; f < n; f++) {
    double hz = 220.0 * pow(2.0, (f * 5 + (int)seed) % 12 / 12.0), amp = 0.2 + 0.1 * (f % 3);
    for (int i = 0; i < len; i++)
      x[i] = kind == TONE ? (float)(amp * sin(2 * M_PI * hz * i / rate)) : (float)(0.1 * randn(&s));
    char path[600];
    snprintf(path, sizeof(path), "%s/clip_%02d.wav", dir, f);
    McmErr err;
    ASSERT(audio_write(path, x, len, rate, AUDIO_WAV16, NULL, &err) == 0, "%s", err.msg);
  }
  free(x);
}

TEST(evaluate_tones_vs_noise_far_apart) {
  char t1[512], t2[512], nz[512];
  snprintf(t1, sizeof(t1), "%s", TEST_PATH("tones_a"));
  snprintf(t2, sizeof(t2), "%s", TEST_PATH("tones_b"));
  snprintf(nz, sizeof(nz), "%s", TEST_PATH("noise"));
  write_set(t1, TONE, 4, 1), write_set(t2, TONE, 4, 7), write_set(nz, NOISE, 4, 99);
  McmErr err;
  EvalSet a, b, c;
  ASSERT(eval_set_load(t1, NULL, &a, &err) == 0, "%s", err.msg);
  ASSERT(eval_set_load(t2, NULL, &b, &err) == 0, "%s", err.msg);
  ASSERT(eval_set_load(nz, NULL, &c, &err) == 0, "%s", err.msg);
  EXPECT(a.n == 4 && a.n_skipped == 0, "%d files, %d skipped", a.n, a.n_skipped);
  EXPECT_NEAR(a.seconds, 4.0, 1e-9);
  EXPECT_NEAR(a.silence_fraction, 0.0, 0);
  EXPECT_NEAR(c.mean_rms, 0.1, 0.01); /* white noise of std 0.1 */
  double tt, tn;
  ASSERT(eval_frechet_sets(a.mel_emb, a.n, b.mel_emb, b.n, 128, &tt, &err) == 0, "%s", err.msg);
  ASSERT(eval_frechet_sets(a.mel_emb, a.n, c.mel_emb, c.n, 128, &tn, &err) == 0, "%s", err.msg);
  printf("  log-mel FD: tones vs tones %.4g, tones vs noise %.4g\n", tt, tn);
  EXPECT(tn > 10 * tt, "tones vs noise FD %.4g should dwarf tones vs tones %.4g", tn, tt);
  eval_set_free(&a), eval_set_free(&b), eval_set_free(&c);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ASSERT(f, "cannot write %s", path);
  fputs(text, f);
  fclose(f);
}

TEST(evaluate_report_lists_skipped_files) {
  char g[512], r[512], out[512], bad[600];
  snprintf(g, sizeof(g), "%s", TEST_PATH("gen"));
  snprintf(r, sizeof(r), "%s", TEST_PATH("ref"));
  snprintf(out, sizeof(out), "%s", TEST_PATH("report.json"));
  write_set(g, TONE, 3, 2), write_set(r, NOISE, 3, 5);
  snprintf(bad, sizeof(bad), "%s/notes.wav", g);
  write_text(bad, "this is not audio\n");
  EvalOptions o = {.generated = g, .reference = r, .out = out};
  McmErr err;
  char *text = NULL;
  ASSERT(eval_run(&o, &text, &err) == 0, "%s", err.msg);
  json_error_t je;
  json_t *root = json_load_file(out, 0, &je);
  ASSERT(root, "report is not JSON: %s", je.text);
  json_t *gen = json_object_get(root, "generated");
  EXPECT(json_integer_value(json_object_get(gen, "files")) == 3, "3 usable generated files");
  json_t *sk = json_object_get(gen, "skipped");
  ASSERT(json_array_size(sk) == 1, "one skipped file, got %zu", json_array_size(sk));
  EXPECT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(sk, 0), "file")), "notes.wav");
  EXPECT_STR_CONTAINS(json_string_value(json_object_get(json_array_get(sk, 0), "reason")), "notes.wav");
  double fd = json_number_value(json_object_get(json_object_get(root, "logmel"), "fd"));
  EXPECT(fd > 0, "tones vs noise FD %.4g", fd);
  EXPECT(json_object_get(root, "audiomae") == NULL, "no AudioMAE section without --audiomae");
  EXPECT(text && strstr(text, "\"fd\""), "report text returned");
  json_decref(root);
  free(text);
}

TEST(evaluate_bad_folders) {
  char empty[512], one[512], missing[512], out[512], path[600];
  snprintf(empty, sizeof(empty), "%s", TEST_PATH("empty"));
  snprintf(one, sizeof(one), "%s", TEST_PATH("one"));
  snprintf(missing, sizeof(missing), "%s", TEST_PATH("missing"));
  snprintf(out, sizeof(out), "%s", TEST_PATH("report.json"));
  ASSERT(mkdir(empty, 0755) == 0, "mkdir");
  write_set(one, TONE, 1, 3);
  snprintf(path, sizeof(path), "%s/broken.flac", one);
  write_text(path, "fLaC but not really");
  McmErr err;
  EvalSet s;
  EXPECT(eval_set_load(empty, NULL, &s, &err) == -1, "empty folder must be refused");
  EXPECT_STR_CONTAINS(err.msg, empty);
  EXPECT_STR_CONTAINS(err.msg, "0 usable audio files");
  EXPECT(eval_set_load(missing, NULL, &s, &err) == -1, "missing folder must be refused");
  EXPECT_STR_CONTAINS(err.msg, "cannot open folder");
  EXPECT(eval_set_load(one, NULL, &s, &err) == -1, "one usable file must be refused");
  EXPECT_STR_CONTAINS(err.msg, "1 usable audio file of 2 (1 skipped)");
  EXPECT_STR_CONTAINS(err.msg, "broken.flac");
  /* through the whole tool: an error and no report */
  EvalOptions o = {.generated = one, .reference = empty, .out = out};
  EXPECT(eval_run(&o, NULL, &err) == -1, "must fail");
  EXPECT_STR_CONTAINS(err.msg, "at least 2");
  EXPECT(access(out, F_OK) != 0, "no report may be written on failure");
  o = (EvalOptions){.generated = one, .reference = one, .bridge = "b.h5", .out = out};
  EXPECT(eval_run(&o, NULL, &err) == -1, "--bridge without --audiomae must fail");
  EXPECT_STR_CONTAINS(err.msg, "--audiomae");
  o = (EvalOptions){.generated = one, .reference = one, .audiomae = missing, .out = out};
  EXPECT(eval_run(&o, NULL, &err) == -1, "missing weights must fail");
  EXPECT_STR_CONTAINS(err.msg, "missing");
}

/* ------------------------------------------------------------------ AudioMAE features */

#define MAE_WEIGHTS "tests/fixtures/model_audiomae_weights.h5" /* random init: 32 x 16 input, C = 64 */

TEST(evaluate_audiomae_features_batched) {
  char t[512], nz[512];
  snprintf(t, sizeof(t), "%s", TEST_PATH("tones"));
  snprintf(nz, sizeof(nz), "%s", TEST_PATH("noise"));
  write_set(t, TONE, 5, 1), write_set(nz, NOISE, 3, 4);
  McmErr err;
  EvalMae *m1 = eval_mae_create(MAE_WEIGHTS, NULL, "cpu", 1, &err);
  ASSERT(m1, "%s", err.msg);
  EvalMae *m3 = eval_mae_create(MAE_WEIGHTS, NULL, "cpu", 3, &err);
  ASSERT(m3, "%s", err.msg);
  ASSERT(eval_mae_dim(m1) == 64, "embed_dim from the config attribute: %d", eval_mae_dim(m1));
  EvalSet a, b, c;
  ASSERT(eval_set_load(t, m1, &a, &err) == 0, "%s", err.msg);
  ASSERT(eval_set_load(t, m3, &b, &err) == 0, "%s", err.msg); /* 5 clips: a full batch and a partial one */
  ASSERT(eval_set_load(nz, m3, &c, &err) == 0, "%s", err.msg);
  double maxd = 0, maxv = 0;
  for (int i = 0; i < a.n * 64; i++) maxd = fmax(maxd, fabs(a.mae_emb[i] - b.mae_emb[i])), maxv = fmax(maxv, fabs(a.mae_emb[i]));
  EXPECT(maxv > 0 && maxd <= 1e-5 * maxv, "batch 1 vs 3: max diff %.3g of %.3g", maxd, maxv);
  double self, tn;
  ASSERT(eval_frechet_sets(a.mae_emb, a.n, b.mae_emb, b.n, 64, &self, &err) == 0, "%s", err.msg);
  ASSERT(eval_frechet_sets(a.mae_emb, a.n, c.mae_emb, c.n, 64, &tn, &err) == 0, "%s", err.msg);
  printf("  AudioMAE FD (random weights): tones vs themselves %.3g, tones vs noise %.4g\n", self, tn);
  EXPECT(self <= 1e-6 * tn && tn > 0, "self %.3g vs noise %.3g", self, tn);
  eval_set_free(&a), eval_set_free(&b), eval_set_free(&c);
  eval_mae_destroy(m1), eval_mae_destroy(m3);
}

TEST(evaluate_audiomae_through_the_bridge) {
  char g[512], r[512], br[512], out[512];
  snprintf(g, sizeof(g), "%s", TEST_PATH("gen"));
  snprintf(r, sizeof(r), "%s", TEST_PATH("ref"));
  snprintf(br, sizeof(br), "%s", TEST_PATH("bridge.h5"));
  snprintf(out, sizeof(out), "%s", TEST_PATH("report.json"));
  write_set(g, TONE, 3, 2), write_set(r, NOISE, 3, 5);
  /* a bridge for 16 output bins: each output bin averages 4 mel bins, level offset −2 */
  Ctx *ctx = ctx_create_cpu(0);
  Bridge *bridge = bridge_create(ctx, 64, 16);
  float w[16 * 64] = {0}, bias[16];
  for (int o = 0; o < 16; o++) {
    bias[o] = -2;
    for (int k = 0; k < 4; k++) w[o * 64 + 4 * o + k] = 0.5f;
  }
  bridge_set(ctx, bridge, w, bias);
  McmErr err;
  TensorFile *tf = tf_create(br, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(bridge_save(ctx, bridge, tf, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  ctx_destroy(ctx);
  EvalOptions o = {.generated = g, .reference = r, .audiomae = MAE_WEIGHTS, .bridge = br, .device = "cpu", .out = out};
  ASSERT(eval_run(&o, NULL, &err) == 0, "%s", err.msg);
  json_error_t je;
  json_t *root = json_load_file(out, 0, &je);
  ASSERT(root, "%s", je.text);
  json_t *mae = json_object_get(root, "audiomae");
  ASSERT(mae, "AudioMAE section expected");
  EXPECT(json_integer_value(json_object_get(mae, "dim")) == 64, "dim 64");
  EXPECT(json_number_value(json_object_get(mae, "fd")) > 0, "tones vs noise: FD > 0");
  EXPECT_STR_CONTAINS(json_string_value(json_object_get(mae, "input")), "bridge.h5");
  json_decref(root);
  /* a bridge fitted for other sizes is refused by name */
  o.audiomae = "tests/fixtures/model_audiomae_tiny_weights.h5"; /* 8 bins */
  EXPECT(eval_run(&o, NULL, &err) == -1, "bridge of 16 bins for an 8-bin AudioMAE must fail");
  EXPECT_STR_CONTAINS(err.msg, "bridge.h5");
}
