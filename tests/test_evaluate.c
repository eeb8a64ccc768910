/* The evaluation tool (data/evaluate.h): Fréchet distance against its defining properties and
 * against SciPy, log-mel embeddings that separate tones from noise, and bad inputs; the report
 * command (data/eval_report.h) end to end on synthesized folders (every number against the
 * library calls that make it), on real ./infer outputs and their --timings line, and its bad
 * inputs. */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/adherence.h"
#include "data/audio.h"
#include "data/eval_report.h"
#include "data/evaluate.h"
#include "data/melpng.h"
#include "diffusion/bridge.h"
#include "diffusion/pipeline.h"
#include "models/weights.h"
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

/* ------------------------------------------------------------------ the report command */

/* Width and height from a PNG's signature and IHDR chunk. */
static void png_size(const char *path, uint32_t *w, uint32_t *h) {
  size_t n;
  uint8_t *b = (uint8_t *)test_read_file(path, &n);
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  ASSERT(b && n > 33 && !memcmp(b, sig, 8) && !memcmp(b + 12, "IHDR", 4), "%s is not a PNG", path);
  *w = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
  *h = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
  free(b);
}

/* 4 s at 16 kHz: a click on every beat (a 1.5 kHz ping) over held triads I, IV, V, I of the
 * key (six harmonics each, 1 s per chord, faded in and out over 0.25 s so that the chord
 * changes are no beat of their own) and the root in the bass; `bright` adds hiss, so
 * the two genres of the tests differ in their log-mel statistics. */
static void synth_clip(const char *path, double bpm, int tonic, bool minor, bool bright, uint64_t seed) {
  const int rate = 16000, n = 4 * rate;
  float *x = calloc(n, sizeof(float));
  uint64_t s = seed * 7919 + 1;
  for (int b = 0; 0.05 + b * 60 / bpm < 4; b++) {
    int s0 = (int)lround((0.05 + b * 60 / bpm) * rate);
    for (int i = 0; i < 0.06 * rate && s0 + i < n; i++)
      x[s0 + i] += (float)(0.4 * exp(-i / (0.01 * rate)) * sin(2 * M_PI * 1500 * i / rate));
  }
  const int degree[4] = {0, 5, 7, 0};
  for (int c = 0; c < 4; c++) {
    int root = tonic + degree[c], third = minor && c != 2 ? 3 : 4;
    int notes[4] = {48 + root, 60 + root, 60 + root + third, 60 + root + 7};
    for (int k = 0; k < 4; k++) {
      double f = 440 * pow(2, (notes[k] - 69) / 12.0);
      for (int i = 0; i < rate; i++) {
        double v = 0;
        for (int h = 1; h <= 6; h++) v += sin(2 * M_PI * h * f * i / rate) / h;
        x[c * rate + i] += (float)(0.06 * v * fmin(1.0, i / (0.25 * rate)) * fmin(1.0, (rate - i) / (0.25 * rate)));
      }
    }
  }
  if (bright)
    for (int i = 0; i < n; i++) x[i] += (float)(0.05 * randn(&s));
  McmErr err;
  ASSERT(audio_write(path, x, n, rate, AUDIO_WAV16, NULL, &err) == 0, "%s", err.msg);
  free(x);
}

typedef struct ReportFixture {
  char dir[512], ref[600], manifest[600], prompts[600], gen[600], log[600], out[600];
} ReportFixture;

static const char *CAPTIONS[4] = {"A rock track at 120 BPM in C major.", "A rock track at 132 BPM in G major.",
                                  "A slow ambient piece at 70 BPM in A minor.", "An ambient piece at 80 BPM in E minor."};

/* Reference: 4 labelled clips (2 rock, 2 ambient). Prompts: clip 2's caption, clip 0's, and
 * one no manifest has. Generated: ./infer-named clips 000..002 for those prompts and a file
 * whose name is not an ./infer output's; a timings log. */
static void report_fixture(ReportFixture *f) {
  snprintf(f->dir, sizeof f->dir, "%s", TEST_PATH("report"));
  snprintf(f->ref, sizeof f->ref, "%s/data/audio", f->dir);
  snprintf(f->manifest, sizeof f->manifest, "%s/data/manifest.json", f->dir);
  snprintf(f->prompts, sizeof f->prompts, "%s/prompts.txt", f->dir);
  snprintf(f->gen, sizeof f->gen, "%s/gen", f->dir);
  snprintf(f->log, sizeof f->log, "%s/gen.log", f->dir);
  snprintf(f->out, sizeof f->out, "%s/eval", f->dir);
  char p[800];
  ASSERT(mkdir(f->dir, 0755) == 0, "mkdir %s", f->dir);
  snprintf(p, sizeof p, "%s/data", f->dir);
  ASSERT(mkdir(p, 0755) == 0 && mkdir(f->ref, 0755) == 0 && mkdir(f->gen, 0755) == 0, "mkdir");
  const double bpm[4] = {120, 132, 70, 80};
  const int tonic[4] = {0, 7, 9, 4}, minor[4] = {0, 0, 1, 1};
  const char *keys[4] = {"C major", "G major", "A minor", "E minor"}, *genre[4] = {"rock", "rock", "ambient", "ambient"};
  char manifest[4096] = "{\"data\": [";
  for (int i = 0; i < 4; i++) {
    snprintf(p, sizeof p, "%s/clip_%05d.wav", f->ref, i);
    synth_clip(p, bpm[i], tonic[i], minor[i], i < 2, (uint64_t)i);
    size_t len = strlen(manifest);
    snprintf(manifest + len, sizeof manifest - len,
             "%s{\"wav\": \"audio/clip_%05d.wav\", \"caption\": \"%s\", \"genre\": \"%s\", \"key\": \"%s\", \"bpm\": %g}",
             i ? ",\n " : "", i, CAPTIONS[i], genre[i], keys[i], bpm[i]);
  }
  strcat(manifest, "]}\n");
  write_text(f->manifest, manifest);
  const char *prompts[3] = {CAPTIONS[2], CAPTIONS[0], "A caption nobody wrote."};
  char text[1024];
  snprintf(text, sizeof text, "  %s\n\n%s  \n%s\n", prompts[0], prompts[1], prompts[2]); /* trimmed, blank skipped */
  write_text(f->prompts, text);
  /* generated: 000 close to what prompt 0 asked (caption 2's clip, 2 % faster), 001 not what
   * prompt 1 asked (rock at 120 in C major) but caption 1's rock at 132 in G major (10 % off,
   * a fifth above: acc1 no, key no, MIREX 0.5, genre yes); 002 for the unknown caption; and
   * a stranger */
  const int like[3] = {2, 1, 1};
  McmErr err;
  for (int k = 0; k < 3; k++) {
    ASSERT(pipeline_output_name(p, sizeof p, f->gen, k, 1, prompts[k], 40 + (uint64_t)k, "wav", &err) == 0, "%s", err.msg);
    synth_clip(p, bpm[like[k]] * 1.02, tonic[like[k]], minor[like[k]], like[k] < 2, 10 + (uint64_t)k);
  }
  snprintf(p, sizeof p, "%s/extra.wav", f->gen);
  synth_clip(p, 100, 2, false, true, 99);
  write_text(f->log, "infer: seed 40\ninfer: timings on cpu (2 threads) for 3 outputs (12.00 s of audio): loading 0.500 s | "
                     "text encoding 0.300 s, sampling 1.200 s, decoding 2.400 s, vocoding 4.800 s, total 8.700 s (1.38x "
                     "real time); peak activations 0.10 GB\n");
}

/* eval_report_parse + eval_report_run on a NULL-terminated argument list. */
static int report_cmd(McmErr *err, ...) {
  char *argv[40] = {"eval_report"};
  int argc = 1;
  va_list ap;
  va_start(ap, err);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 39;) argv[argc++] = a;
  va_end(ap);
  EvalReportOptions o;
  int rc = eval_report_parse(argc, argv, &o, err);
  if (rc == 0) rc = eval_report_run(&o, err);
  eval_report_options_free(&o);
  return rc;
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static double jnum(json_t *o, const char *a, const char *b) {
  json_t *v = json_object_get(o, a);
  if (b) v = json_object_get(v, b);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

#define EXPECT_REL(a, b, rel)                                                                               \
  EXPECT(fabs((a) - (b)) <= (rel) * fmax(fabs(a), fabs(b)) + 1e-12, "%s = %.12g vs %s = %.12g", #a, (double)(a), #b, \
         (double)(b))

TEST(evaluate_report_end_to_end_matches_the_library) {
  ReportFixture f;
  report_fixture(&f);
  char set[1400];
  snprintf(set, sizeof set, "gen=%s,timings=%s", f.gen, f.log);
  McmErr err;
  ASSERT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set, "--out",
                    f.out, "--png-clips", "3", NULL) == 0,
         "%s", err.msg);
  EXPECT(count_entries(f.out) == 3, "report.json, report.md and mels.png, no temporaries: %d entries", count_entries(f.out));
  char p[800];
  snprintf(p, sizeof p, "%s/report.json", f.out);
  json_error_t je;
  json_t *root = json_load_file(p, 0, &je);
  ASSERT(root, "report.json: %s", je.text);
  const char *keys[] = {"reference", "sets", "detectors", "manifest", "prompts"};
  for (int i = 0; i < 5; i++) EXPECT(json_object_get(root, keys[i]), "key %s", keys[i]);
  json_t *s = json_array_get(json_object_get(root, "sets"), 0), *ref = json_object_get(root, "reference");
  ASSERT(s && json_array_size(json_object_get(root, "sets")) == 1, "one set");
  const char *skeys[] = {"name", "files", "fd_logmel", "fd_audiomae", "adherence", "latency", "clips", "skipped"};
  for (int i = 0; i < 8; i++) EXPECT(json_object_get(s, skeys[i]), "set key %s", skeys[i]);
  EXPECT(json_is_null(json_object_get(s, "fd_audiomae")), "no AudioMAE without --audiomae");

  /* FD: the library's sets and distance */
  EvalSet g, r;
  EvalLoadOptions lo = {.adherence = true};
  ASSERT(eval_set_load_with(f.gen, &lo, &g, &err) == 0 && eval_set_load_with(f.ref, &lo, &r, &err) == 0, "%s", err.msg);
  ASSERT(g.n == 4 && r.n == 4, "%d generated, %d reference", g.n, r.n);
  double fd;
  ASSERT(eval_frechet_sets(g.mel_emb, g.n, r.mel_emb, r.n, 128, &fd, &err) == 0, "%s", err.msg);
  EXPECT(fd > 0, "FD %.4g", fd);
  EXPECT_REL(jnum(s, "fd_logmel", NULL), fd, 1e-9);

  /* per clip: the detectors on the files themselves (read, normalised as the set loader does) */
  json_t *clips = json_object_get(s, "clips");
  ASSERT(json_array_size(clips) == 4, "4 clips");
  for (int i = 0; i < 4; i++) {
    Audio a;
    ASSERT(audio_read(g.files[i], 16000, &a, &err) == 0, "%s", err.msg);
    audio_normalize(a.samples, a.n);
    double t = adh_tempo(a.samples, a.n, 16000);
    char kn[16];
    adh_key_name(adh_key(a.samples, a.n, 16000), kn, sizeof kn);
    json_t *c = json_array_get(clips, i);
    EXPECT_REL(jnum(c, "tempo", NULL), t, 1e-9);
    EXPECT(!strcmp(json_string_value(json_object_get(c, "key")), kn), "clip %d key %s vs %s", i,
           json_string_value(json_object_get(c, "key")), kn);
    EXPECT(g.tempo[i] == t, "the set loader's tempo is adh_tempo's");
    audio_free(&a);
  }
  /* the mapping: 000 <- prompt 0 (caption 2), 001 <- prompt 1 (caption 0), 002 <- prompt 2
   * (no manifest entry), extra.wav not an ./infer name */
  EXPECT(jnum(json_array_get(clips, 0), "prompt", NULL) == 0 && jnum(json_array_get(clips, 1), "prompt", NULL) == 1 &&
             jnum(json_array_get(clips, 2), "prompt", NULL) == 2 &&
             json_is_null(json_object_get(json_array_get(clips, 3), "prompt")),
         "prompt indices");
  EXPECT(jnum(json_object_get(json_array_get(clips, 0), "label"), "bpm", NULL) == 70, "clip 000 has caption 2's bpm");
  EXPECT(json_is_null(json_object_get(json_array_get(clips, 2), "label")), "prompt 2 is unlabelled");
  json_t *adh = json_object_get(s, "adherence");
  EXPECT(jnum(adh, "labelled", NULL) == 2, "2 labelled");
  EXPECT(jnum(adh, "unlabelled", "count") == 2 && jnum(adh, "unlabelled", "not_infer_name") == 1 &&
             jnum(adh, "unlabelled", "caption_not_in_manifest") == 1,
         "unlabelled counts");

  /* the fractions, from the library's detectors, match rules and class means */
  AdhLabels labels;
  ASSERT(adh_labels_read(f.manifest, &labels, &err) == 0, "%s", err.msg);
  int genre[4];
  for (int i = 0; i < 4; i++) genre[i] = adh_labels_by_path(&labels, r.files[i])->genre;
  AdhNcm ncm;
  ASSERT(adh_ncm_fit(&ncm, r.mel_emb, genre, 4, 128, labels.n_genres, &err) == 0, "%s", err.msg);
  const AdhLabel *lab[2] = {adh_labels_by_caption(&labels, CAPTIONS[2]), adh_labels_by_caption(&labels, CAPTIONS[0])};
  double acc1 = 0, acc2 = 0, kacc = 0, mirex = 0, gacc = 0;
  for (int i = 0; i < 2; i++) {
    acc1 += adh_tempo_match(g.tempo[i], lab[i]->bpm, false) / 2.0;
    acc2 += adh_tempo_match(g.tempo[i], lab[i]->bpm, true) / 2.0;
    kacc += (g.key[i] == lab[i]->key) / 2.0;
    mirex += adh_key_mirex(g.key[i], lab[i]->key) / 2.0;
    gacc += (adh_ncm_predict(&ncm, g.mel_emb + i * 128, -1) == lab[i]->genre) / 2.0;
  }
  printf("  generated: tempo acc1 %.2f acc2 %.2f, key %.2f (MIREX %.2f), genre %.2f\n", acc1, acc2, kacc, mirex, gacc);
  EXPECT(acc1 == 0.5 && acc2 == 0.5 && kacc == 0.5 && mirex == 0.75 && gacc == 1,
         "the detectors read the synthetic clips as built (acc1 0.5, acc2 0.5, key 0.5, MIREX 0.75, genre 1)");
  EXPECT_REL(jnum(json_object_get(adh, "tempo"), "acc1", NULL), acc1, 1e-12);
  EXPECT_REL(jnum(json_object_get(adh, "tempo"), "acc2", NULL), acc2, 1e-12);
  EXPECT_REL(jnum(json_object_get(adh, "key"), "acc", NULL), kacc, 1e-12);
  EXPECT_REL(jnum(json_object_get(adh, "key"), "mirex", NULL), mirex, 1e-12);
  EXPECT_REL(jnum(json_object_get(adh, "genre"), "acc", NULL), gacc, 1e-12);
  /* the reference row: its own labels, genre leave-one-out */
  double racc1 = 0, rkey = 0, rgenre = 0;
  for (int i = 0; i < 4; i++) {
    const AdhLabel *l = &labels.e[i];
    racc1 += adh_tempo_match(r.tempo[i], l->bpm, false) / 4.0;
    rkey += (r.key[i] == l->key) / 4.0;
    rgenre += (adh_ncm_predict(&ncm, r.mel_emb + i * 128, l->genre) == l->genre) / 4.0;
  }
  json_t *radh = json_object_get(ref, "adherence");
  printf("  reference: tempo acc1 %.2f, key %.2f, genre (leave-one-out) %.2f\n", racc1, rkey, rgenre);
  EXPECT(racc1 == 1 && rkey == 1, "the synthetic reference clips are read right: tempo %.2f, key %.2f", racc1, rkey);
  EXPECT_REL(jnum(json_object_get(radh, "tempo"), "acc1", NULL), racc1, 1e-12);
  EXPECT_REL(jnum(json_object_get(radh, "key"), "acc", NULL), rkey, 1e-12);
  EXPECT_REL(jnum(json_object_get(radh, "genre"), "acc", NULL), rgenre, 1e-12);
  EXPECT(jnum(radh, "labelled", NULL) == 4, "every reference clip is in the manifest");

  /* latency: the log's numbers per clip */
  json_t *lat = json_object_get(s, "latency");
  EXPECT_REL(jnum(lat, "text_s_per_clip", NULL), 0.1, 1e-12);
  EXPECT_REL(jnum(lat, "sampling_s_per_clip", NULL), 0.4, 1e-12);
  EXPECT_REL(jnum(lat, "decoding_s_per_clip", NULL), 0.8, 1e-12);
  EXPECT_REL(jnum(lat, "vocoding_s_per_clip", NULL), 1.6, 1e-12);
  EXPECT_REL(jnum(lat, "rtf", NULL), 8.7 / 12.0, 1e-12);
  EXPECT(!strcmp(json_string_value(json_object_get(lat, "device")), "cpu (2 threads)"), "device");

  /* Markdown */
  snprintf(p, sizeof p, "%s/report.md", f.out);
  char *md = test_read_file(p, NULL);
  ASSERT(md, "no %s", p);
  EXPECT_STR_CONTAINS(md, "| set | n | FD log-mel | tempo acc1 | tempo acc2 | key acc | key MIREX | genre acc |");
  EXPECT_STR_CONTAINS(md, "| reference (ceiling) | 4 | – |");
  char row[200];
  snprintf(row, sizeof row, "| gen | 4 | %.4g |", fd);
  EXPECT_STR_CONTAINS(md, row);
  EXPECT_STR_CONTAINS(md, "| 0.100 | 0.400 | 0.800 | 1.600 | 0.725 |");
  EXPECT_STR_CONTAINS(md, "gen: 2 of 4 clips unlabelled");
  EXPECT_STR_CONTAINS(md, "not a learned network");
  free(md);

  /* PNG: 2 rows (reference, gen) x 3 clips of 401 frames (averaged 2 per column: 201 px) */
  snprintf(p, sizeof p, "%s/mels.png", f.out);
  uint32_t w, h;
  png_size(p, &w, &h);
  int frames[6] = {401, 401, 401, 401, 401, 401}, W, H;
  melpng_grid_size(frames, 2, 3, 64, &W, &H);
  EXPECT(W == 4 + 3 * (201 + 4) && H == 4 + 2 * (128 + 4), "documented grid size %dx%d", W, H);
  EXPECT(w == (uint32_t)W && h == (uint32_t)H, "mels.png is %ux%u, expected %dx%d", w, h, W, H);
  json_decref(root);
  eval_set_free(&g), eval_set_free(&r);
  adh_ncm_free(&ncm);
  adh_labels_free(&labels);
}

TEST(evaluate_report_bad_inputs_write_nothing) {
  ReportFixture f;
  report_fixture(&f);
  char set[1400], missing[800], bad_json[800], no_line[800], other_prompts[800], one[800], p[900];
  snprintf(set, sizeof set, "gen=%s", f.gen);
  snprintf(missing, sizeof missing, "%s/missing", f.dir);
  snprintf(bad_json, sizeof bad_json, "%s/bad.json", f.dir);
  write_text(bad_json, "{\"data\": [\n");
  snprintf(no_line, sizeof no_line, "%s/empty.log", f.dir);
  write_text(no_line, "infer: seed 3\n");
  snprintf(other_prompts, sizeof other_prompts, "%s/other.txt", f.dir);
  write_text(other_prompts, "calm piano\nloud drums\nsoft strings\n");
  snprintf(one, sizeof one, "%s/one", f.dir);
  ASSERT(mkdir(one, 0755) == 0, "mkdir");
  snprintf(p, sizeof p, "%s/000_x_seed1.wav", one);
  synth_clip(p, 100, 0, false, false, 1);
  char set_missing[1500], set_one[1500], set_nolog[1500], set_noline[1500];
  snprintf(set_missing, sizeof set_missing, "gen=%s", missing);
  snprintf(set_one, sizeof set_one, "gen=%s", one);
  snprintf(set_nolog, sizeof set_nolog, "gen=%s,timings=%s/nope.log", f.gen, f.dir);
  snprintf(set_noline, sizeof set_noline, "gen=%s,timings=%s", f.gen, no_line);
  struct {
    const char *what, *ref, *manifest, *prompts, *set, *expect;
  } cases[] = {
      {"missing reference folder", missing, f.manifest, f.prompts, set, "cannot open folder"},
      {"missing set folder", f.ref, f.manifest, f.prompts, set_missing, "--set gen"},
      {"bad --set: no =", f.ref, f.manifest, f.prompts, "just-a-folder", "expected NAME=DIR"},
      {"bad --set: no name", f.ref, f.manifest, f.prompts, "=dir", "expected NAME=DIR"},
      {"bad --set: no folder", f.ref, f.manifest, f.prompts, "gen=", "expected NAME=DIR"},
      {"bad --set: name", f.ref, f.manifest, f.prompts, "my set=dir", "expected NAME=DIR"},
      {"bad --set: empty timings", f.ref, f.manifest, f.prompts, "gen=dir,timings=", "timings= needs"},
      {"bad --set: reference", f.ref, f.manifest, f.prompts, "reference=dir", "reference row"},
      {"missing manifest", f.ref, missing, f.prompts, set, "--manifest"},
      {"unreadable manifest", f.ref, bad_json, f.prompts, set, "bad.json"},
      {"missing prompts", f.ref, f.manifest, missing, set, "--prompts"},
      {"missing timings log", f.ref, f.manifest, f.prompts, set_nolog, "nope.log"},
      {"timings log without timings", f.ref, f.manifest, f.prompts, set_noline, "--timings"},
      {"names that do not fit the prompts", f.ref, f.manifest, other_prompts, set, "does not fit prompt 0"},
      {"a set of one clip", f.ref, f.manifest, f.prompts, set_one, "at least 2"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    McmErr err = {{0}};
    int rc = report_cmd(&err, "--reference", cases[i].ref, "--manifest", cases[i].manifest, "--prompts", cases[i].prompts,
                        "--set", cases[i].set, "--out", f.out, NULL);
    EXPECT(rc == -1, "%s: must fail", cases[i].what);
    EXPECT_STR_CONTAINS(err.msg, cases[i].expect);
    EXPECT(!strchr(err.msg, '\n'), "%s: one line: %s", cases[i].what, err.msg);
    EXPECT(access(f.out, F_OK) != 0, "%s: nothing may be written", cases[i].what);
  }
  /* the command line itself */
  McmErr err;
  EXPECT(report_cmd(&err, "--reference", f.ref, "--set", set, "--out", f.out, NULL) == -1, "missing --manifest");
  EXPECT_STR_CONTAINS(err.msg, "--manifest FILE is required");
  EXPECT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set, "--set", set,
                    "--out", f.out, NULL) == -1,
         "a name twice");
  EXPECT_STR_CONTAINS(err.msg, "used twice");
  EXPECT(report_cmd(&err, "--frobnicate", NULL) == -1, "unknown option");
  EXPECT_STR_CONTAINS(err.msg, "--frobnicate");
  EXPECT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set, "--out",
                    f.out, "--png-clips", "0", NULL) == -1,
         "--png-clips 0");
  EXPECT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set, "--out",
                    f.out, "--bridge", "b.h5", NULL) == -1,
         "--bridge without --audiomae");
  EXPECT(access(f.out, F_OK) != 0, "nothing written");
  /* --out: a file is refused; an existing report is left as it was when a later input fails */
  write_text(f.out, "not a folder");
  EXPECT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set, "--out",
                    f.out, NULL) == -1,
         "--out is a file");
  EXPECT_STR_CONTAINS(err.msg, "not a folder");
  unlink(f.out);
  ASSERT(mkdir(f.out, 0755) == 0, "mkdir");
  snprintf(p, sizeof p, "%s/report.json", f.out);
  write_text(p, "old\n");
  EXPECT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set_one,
                    "--out", f.out, NULL) == -1,
         "must fail");
  char *old = test_read_file(p, NULL);
  ASSERT(old, "no %s", p);
  EXPECT(!strcmp(old, "old\n") && count_entries(f.out) == 1, "the old report is untouched and alone");
  free(old);
}

TEST(evaluate_report_audiomae_column) {
  ReportFixture f;
  report_fixture(&f);
  char set[1400];
  snprintf(set, sizeof set, "gen=%s", f.gen);
  McmErr err;
  ASSERT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set, "--out",
                    f.out, "--audiomae", MAE_WEIGHTS, "--device", "cpu", "--batch", "3", NULL) == 0,
         "%s", err.msg);
  EvalMae *mae = eval_mae_create(MAE_WEIGHTS, NULL, "cpu", 2, &err);
  ASSERT(mae, "%s", err.msg);
  EvalSet g, r;
  ASSERT(eval_set_load(f.gen, mae, &g, &err) == 0 && eval_set_load(f.ref, mae, &r, &err) == 0, "%s", err.msg);
  double fd;
  ASSERT(eval_frechet_sets(g.mae_emb, g.n, r.mae_emb, r.n, 64, &fd, &err) == 0, "%s", err.msg);
  char p[800];
  snprintf(p, sizeof p, "%s/report.json", f.out);
  json_error_t je;
  json_t *root = json_load_file(p, 0, &je);
  ASSERT(root, "%s", je.text);
  json_t *s = json_array_get(json_object_get(root, "sets"), 0);
  EXPECT(fd > 0, "AudioMAE FD %.4g", fd);
  EXPECT_REL(jnum(s, "fd_audiomae", NULL), fd, 1e-5); /* batches of 3 vs 2: the same features to fp32 round-off */
  EXPECT(json_object_get(root, "audiomae") != NULL, "the AudioMAE section");
  snprintf(p, sizeof p, "%s/report.md", f.out);
  char *md = test_read_file(p, NULL);
  ASSERT(md, "no %s", p);
  EXPECT_STR_CONTAINS(md, "| FD log-mel | FD AudioMAE |");
  free(md);
  json_decref(root);
  eval_set_free(&g), eval_set_free(&r);
  eval_mae_destroy(mae);
}

TEST(evaluate_timings_log_parsing) {
  char log[600];
  snprintf(log, sizeof log, "%s", TEST_PATH("t.log"));
  /* two runs appended: the last counts; one output, a device name with spaces */
  write_text(log, "infer: timings on cpu (2 threads) for 2 outputs (2.00 s of audio): loading 1.000 s | text encoding "
                  "9.000 s, sampling 9.000 s, decoding 9.000 s, vocoding 9.000 s, total 36.000 s (0.06x real time); "
                  "peak activations 0.10 GB\nnoise\ninfer: timings on cuda:0 (NVIDIA H100 80GB HBM3) for 1 output "
                  "(10.24 s of audio): loading 0.250 s | text encoding 0.010 s, sampling 0.120 s, decoding 0.200 s, "
                  "vocoding 0.300 s, total 0.630 s (16.25x real time); peak activations 4.70 GB\n");
  EvalTimings t;
  McmErr err;
  ASSERT(eval_timings_parse(log, &t, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(t.device, "cuda:0 (NVIDIA H100 80GB HBM3)"), "device '%s'", t.device);
  EXPECT(t.outputs == 1, "outputs %d", t.outputs);
  EXPECT_NEAR(t.audio_seconds, 10.24, 0);
  EXPECT_NEAR(t.load, 0.25, 0);
  EXPECT_NEAR(t.text, 0.01, 0);
  EXPECT_NEAR(t.sampling, 0.12, 0);
  EXPECT_NEAR(t.decoding, 0.2, 0);
  EXPECT_NEAR(t.vocoding, 0.3, 0);
  EXPECT_NEAR(t.total, 0.63, 0);
  write_text(log, "infer: timings on cpu for 2 outputs (2.00 s of audio): loading 1.000 s | text encoding soon\n");
  EXPECT(eval_timings_parse(log, &t, &err) == -1, "a cut line is refused");
  EXPECT_STR_CONTAINS(err.msg, "not in ./infer's form");
  write_text(log, "infer: error: no bundle\n");
  EXPECT(eval_timings_parse(log, &t, &err) == -1, "no timings line");
  EXPECT_STR_CONTAINS(err.msg, "hint: run ./infer with --timings");
  EXPECT(eval_timings_parse(TEST_PATH("none.log"), &t, &err) == -1, "missing log");
  EXPECT_STR_CONTAINS(err.msg, "none.log");
}

/* ./infer's real --timings line and output names, through the report: a tiny random bundle
 * samples three prompts (two in the manifest), its stderr is the set's log. */
TEST(evaluate_report_reads_real_infer_outputs) {
  ReportFixture f;
  report_fixture(&f);
  char bundle[700], samples[700], cmd[4096];
  snprintf(bundle, sizeof bundle, "%s/bundle", f.dir);
  snprintf(samples, sizeof samples, "%s/samples", f.dir);
  RandomBundle b = random_bundle_tiny("tests/fixtures/tokenizer");
  McmErr err;
  ASSERT(random_bundle_write(bundle, &b, &err) == 0, "%s", err.msg);
  const char *bin = getenv("MCM_BIN_DIR") ? getenv("MCM_BIN_DIR") : ".";
  snprintf(cmd, sizeof cmd, "cd %s && ./infer --device cpu --checkpoint %s --steps 2 --prompts-file %s --out %s "
           "--seconds 0.5 --seed 7 --timings > /dev/null 2> %s", bin, bundle, f.prompts, samples, f.log);
  int st = system(cmd);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", cmd);
  EvalTimings t;
  ASSERT(eval_timings_parse(f.log, &t, &err) == 0, "%s", err.msg);
  EXPECT(t.outputs == 3, "3 outputs, parsed %d", t.outputs);
  EXPECT_NEAR(t.audio_seconds, 1.5, 0.005);
  EXPECT(t.sampling > 0 && t.decoding > 0 && t.vocoding > 0 && t.text >= 0, "the stages took time");
  EXPECT_NEAR(t.total, t.text + t.sampling + t.decoding + t.vocoding, 0.003); /* printed to the millisecond */
  EXPECT_STR_CONTAINS(t.device, "cpu");
  char set[1400];
  snprintf(set, sizeof set, "student=%s,timings=%s", samples, f.log);
  ASSERT(report_cmd(&err, "--reference", f.ref, "--manifest", f.manifest, "--prompts", f.prompts, "--set", set, "--out",
                    f.out, NULL) == 0,
         "%s", err.msg);
  char p[800];
  snprintf(p, sizeof p, "%s/report.json", f.out);
  json_error_t je;
  json_t *root = json_load_file(p, 0, &je);
  ASSERT(root, "%s", je.text);
  json_t *s = json_array_get(json_object_get(root, "sets"), 0), *adh = json_object_get(s, "adherence");
  EXPECT(jnum(s, "files", NULL) == 3, "3 clips");
  EXPECT(jnum(adh, "labelled", NULL) == 2 && jnum(adh, "unlabelled", "caption_not_in_manifest") == 1 &&
             jnum(adh, "unlabelled", "not_infer_name") == 0,
         "./infer's names map to the prompts: 2 labelled, 1 caption not in the manifest");
  EXPECT_REL(jnum(json_object_get(s, "latency"), "sampling_s_per_clip", NULL), t.sampling / 3, 1e-9);
  json_decref(root);
}
