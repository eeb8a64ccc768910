/* HiFi-GAN vocoder (models/hifigan.c) against transformers' SpeechT5HifiGan with random
 * weights at two small configurations (tests/fixtures/model_hifigan.py): output, and the
 * gradients of sum(out ⊙ R) with respect to the mel input and to every parameter; the
 * released configuration's sizes; bad configurations and bad weight files.
 *
 * Tolerance 1e-4 relative L2 (the project's bar for models in fp32): the two sides sum in
 * different orders through 17–24 convolutions, which costs ~1e-6 (measured below 1e-6 on
 * every tensor); a wrong tap, padding or slope costs > 1e-2. */
#include <string.h>

#include "fixture.h"
#include "models/hifigan.h"
#include "test.h"

#define FIX "tests/fixtures/model_hifigan.h5"
static const double TOL = 1e-4;

/* The fixture's two configurations (see the script). */
static HifiganConfig fixture_config(char c) {
  HifiganConfig cfg = {
      .model_in_dim = 8,
      .sampling_rate = 16000,
      .upsample_initial_channel = 32,
      .n_kernels = 2,
      .resblock_kernel_sizes = {3, 7},
      .n_dilations = {2, 2},
      .resblock_dilation_sizes = {{1, 3}, {1, 3}},
      .leaky_relu_slope = 0.1f,
  };
  if (c == 'a') {
    cfg.n_upsamples = 2;
    memcpy(cfg.upsample_rates, (int[]){5, 4}, 2 * sizeof(int));
    memcpy(cfg.upsample_kernel_sizes, (int[]){10, 8}, 2 * sizeof(int));
    cfg.hop = 20;
  } else {
    cfg.n_upsamples = 3;
    memcpy(cfg.upsample_rates, (int[]){2, 2, 2}, 3 * sizeof(int));
    memcpy(cfg.upsample_kernel_sizes, (int[]){4, 4, 4}, 3 * sizeof(int));
    cfg.normalize_before = true;
  }
  return cfg;
}

static const char *weights_path(char c) {
  return c == 'a' ? "tests/fixtures/model_hifigan_weights_a.h5" : "tests/fixtures/model_hifigan_weights_b.h5";
}

static Hifigan *load_fixture_model(Ctx *ctx, ParamSet *ps, char c) {
  HifiganConfig cfg = fixture_config(c);
  params_init(ps, "");
  Hifigan *m = hifigan_create(ctx, &cfg, ps);
  McmErr err;
  ASSERT(hifigan_load(ctx, m, weights_path(c), &err) == 0, "hifigan_load: %s", err.msg);
  return m;
}

/* True when t received no gradient: none allocated, or (parameters keep a persistent,
 * zeroed one once they have been trainable) all zeros. */
static bool no_grad(Ctx *ctx, const Tensor *t) {
  if (!t->grad) return true;
  float *h = MALLOC_CHECK((size_t)t->grad->numel * sizeof(float));
  tensor_to_host_f32(ctx, t->grad, h);
  bool zero = true;
  for (int64_t i = 0; i < t->grad->numel; i++) zero &= h[i] == 0.0f;
  free(h);
  return zero;
}

/* Forward and backward from R; checks the output, the mel gradient and every parameter's. */
static void check_fixture(char c) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Hifigan *m = load_fixture_model(ctx, &ps, c);
  Fixture *fx = fixture_open(FIX);
  char key[PARAMS_NAME_MAX + 16];
  snprintf(key, sizeof key, "%c/mel", c);
  Tensor *mel = fixture_tensor(ctx, fx, key, true); /* (B, T, M) */
  Tensor *out = hifigan_forward(ctx, m, mel);       /* (B, L) */
  EXPECT(out->ndim == 2 && out->shape[1] == hifigan_out_len(&m->cfg, mel->shape[1]), "out %s",
         TENSOR_SHAPE_STR(out));
  double worst = 0;
  snprintf(key, sizeof key, "%c/out", c);
  worst = fmax(worst, fixture_expect(ctx, fx, key, out, TOL));
  snprintf(key, sizeof key, "%c/R", c);
  backward_from(ctx, out, fixture_tensor(ctx, fx, key, false));
  snprintf(key, sizeof key, "%c/grad/mel", c);
  worst = fmax(worst, fixture_expect(ctx, fx, key, mel->grad, TOL));
  int trainable = 0;
  for (int i = 0; i < ps.n; i++) {
    Tensor *p = ps.p[i];
    if (!p->requires_grad) { /* the mean / scale buffers */
      EXPECT(no_grad(ctx, p), "frozen %s received a gradient", p->name);
      continue;
    }
    trainable++;
    snprintf(key, sizeof key, "%c/grad/%s", c, p->name);
    worst = fmax(worst, fixture_expect(ctx, fx, key, p->grad, TOL));
  }
  /* ... and the fixture holds no parameter gradient the model lacks. */
  char **names;
  int n, in_file = 0;
  McmErr err;
  ASSERT(tf_names(fx, &names, &n, &err) == 0, "%s", err.msg);
  snprintf(key, sizeof key, "%c/grad/", c);
  for (int i = 0; i < n; i++) in_file += !strncmp(names[i], key, strlen(key)) && strcmp(names[i] + strlen(key), "mel");
  tf_free_names(names, n);
  EXPECT(in_file == trainable && trainable == ps.n - 2, "%d parameter gradients in the fixture, %d trainable", in_file,
         trainable);
  printf("    case %c: %d parameters, worst relative L2 error %.3g\n", c, ps.n, worst);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(model_hifigan_fixture_a) { check_fixture('a'); }
TEST(model_hifigan_fixture_b_normalize_before) { check_fixture('b'); }

/* No-grad mode (the frozen vocoder at inference): same output, nothing on the tape. */
TEST(model_hifigan_nograd) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Hifigan *m = load_fixture_model(ctx, &ps, 'a');
  Fixture *fx = fixture_open(FIX);
  bool was = ctx_set_grad(ctx, false);
  Tensor *out = hifigan_forward(ctx, m, fixture_tensor(ctx, fx, "a/mel", true));
  EXPECT(ctx->tape.n == 0, "%d tape nodes in no-grad mode", ctx->tape.n);
  EXPECT(!out->requires_grad, "the output requires a gradient in no-grad mode");
  fixture_expect(ctx, fx, "a/out", out, TOL);
  ctx_set_grad(ctx, was);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Frozen copy (the trainer's case): gradients reach the input, no parameter gets one. */
TEST(model_hifigan_frozen) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Hifigan *m = load_fixture_model(ctx, &ps, 'b');
  params_set_trainable(ctx, &ps, false);
  Fixture *fx = fixture_open(FIX);
  Tensor *mel = fixture_tensor(ctx, fx, "b/mel", true);
  Tensor *out = hifigan_forward(ctx, m, mel);
  backward_from(ctx, out, fixture_tensor(ctx, fx, "b/R", false));
  fixture_expect(ctx, fx, "b/grad/mel", mel->grad, TOL);
  for (int i = 0; i < ps.n; i++) EXPECT(no_grad(ctx, ps.p[i]), "frozen %s received a gradient", ps.p[i]->name);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* The released vocoder: sizes, length and parameter count (55.27M, as computed from
 * transformers and matching the 221 MB file); random init is reproducible. */
TEST(model_hifigan_musicldm_config) {
  HifiganConfig cfg = hifigan_config_musicldm();
  McmErr err;
  ASSERT(hifigan_config_check(&cfg, &err) == 0, "%s", err.msg);
  EXPECT(hifigan_out_len(&cfg, 1024) == 163872, "1024 frames give %lld samples",
         (long long)hifigan_out_len(&cfg, 1024));
  EXPECT(hifigan_out_len(&cfg, 512) == 81952, "512 frames give %lld samples", (long long)hifigan_out_len(&cfg, 512));
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  hifigan_create(ctx, &cfg, &ps);
  EXPECT(ps.n == 196 && params_count(&ps) == 55265025, "%d tensors, %lld parameters", ps.n,
         (long long)params_count(&ps));
  EXPECT(params_find(&ps, "resblocks.14.convs2.2.weight") && params_find(&ps, "upsampler.4.bias"),
         "checkpoint names missing");
  params_free(&ps);
  ctx_destroy(ctx);

  /* Same seed, same weights; the small model gives a finite waveform in (-1, 1). */
  HifiganConfig small = fixture_config('b');
  float first[2];
  for (int run = 0; run < 2; run++) {
    ctx = ctx_create_cpu(7);
    params_init(&ps, "");
    Hifigan *m = hifigan_create(ctx, &small, &ps);
    hifigan_init_random(ctx, m);
    Tensor *mel = tensor_new(ctx, DT_F32, SHAPE(1, 5, 8));
    tensor_fill(ctx, mel, 0.5f);
    Tensor *out = hifigan_forward(ctx, m, mel);
    float *h = MALLOC_CHECK((size_t)out->numel * sizeof(float));
    tensor_to_host_f32(ctx, out, h);
    double s = 0;
    for (int64_t i = 0; i < out->numel; i++) {
      EXPECT(fabsf(h[i]) < 1.0f, "sample %lld = %g", (long long)i, h[i]);
      s += h[i];
    }
    first[run] = (float)s;
    free(h);
    params_free(&ps);
    ctx_destroy(ctx);
  }
  EXPECT(first[0] == first[1], "random init differs between runs: %g vs %g", first[0], first[1]);
}

static void expect_config_error(HifiganConfig cfg, const char *what) {
  McmErr err = {{0}};
  EXPECT(hifigan_config_check(&cfg, &err) == -1, "config accepted, expected an error about '%s'", what);
  EXPECT_STR_CONTAINS(err.msg, what);
  EXPECT(!strchr(err.msg, '\n'), "not one line: %s", err.msg);
}

TEST(model_hifigan_bad_config) {
  HifiganConfig c = hifigan_config_musicldm();
  c.hop = 256; /* the 44.1 kHz / 22.05 kHz hop with MusicLDM's rates */
  expect_config_error(c, "multiply to 160, but the hop is 256");
  c = hifigan_config_musicldm();
  c.resblock_kernel_sizes[1] = 6;
  expect_config_error(c, "resblock_kernel_sizes[1] = 6 must be odd");
  c = hifigan_config_musicldm();
  c.upsample_kernel_sizes[0] = 4;
  expect_config_error(c, "upsample_kernel_sizes[0] = 4 is smaller than its rate 5");
  c = hifigan_config_musicldm();
  c.upsample_initial_channel = 16;
  expect_config_error(c, "upsample_initial_channel 16 halves 5 times");
  c = hifigan_config_musicldm();
  c.n_upsamples = 0;
  expect_config_error(c, "0 upsampling stages");
  c = hifigan_config_musicldm();
  c.resblock_dilation_sizes[2][1] = 0;
  expect_config_error(c, "resblock_dilation_sizes[2][1] = 0");
  c = hifigan_config_musicldm();
  c.model_in_dim = 0;
  expect_config_error(c, "model_in_dim 0");
}

/* hifigan_load of `path` into the fixture model c (with cfg changes) must fail with `what`. */
static void expect_load_error(const HifiganConfig *cfg, const char *path, const char *what) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  Hifigan *m = hifigan_create(ctx, cfg, &ps);
  McmErr err = {{0}};
  EXPECT(hifigan_load(ctx, m, path, &err) == -1, "%s loaded, expected an error about '%s'", path, what);
  EXPECT_STR_CONTAINS(err.msg, what);
  EXPECT(!strchr(err.msg, '\n'), "not one line: %s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Writes model b's parameters to path, leaving out `skip`, giving `reshape` another shape,
 * adding a tensor named `extra` and a config attribute `config` (each unless NULL). */
static void write_weights(const char *path, const char *skip, const char *reshape, const char *extra,
                          const char *config) {
  Ctx *ctx = ctx_create_cpu(0);
  HifiganConfig cfg = fixture_config('b');
  ParamSet ps;
  params_init(&ps, "");
  hifigan_init_random(ctx, hifigan_create(ctx, &cfg, &ps));
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < ps.n; i++) {
    Tensor *p = ps.p[i];
    if (skip && !strcmp(p->name, skip)) continue;
    if (reshape && !strcmp(p->name, reshape)) {
      float z[4] = {0};
      ASSERT(tf_write(tf, p->name, DT_F32, 2, (int64_t[]){2, 2}, z, &err) == 0, "%s", err.msg);
      continue;
    }
    ASSERT(tf_write_tensor(ctx, tf, p, DT_F32, &err) == 0, "%s", err.msg);
  }
  if (config) ASSERT(tf_set_attr(tf, "config", config, &err) == 0, "%s", err.msg);
  if (extra) ASSERT(tf_write(tf, extra, DT_F32, 1, (int64_t[]){1}, (float[]){0}, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(model_hifigan_bad_weights) {
  HifiganConfig b = fixture_config('b');
  expect_load_error(&b, TEST_PATH("absent.h5"), "absent.h5: cannot open: No such file or directory");

  const char *text = TEST_PATH("vocoder.json");
  FILE *f = FOPEN_CHECK(text, "w");
  fputs("{\"model_in_dim\": 8}\n", f);
  fclose(f);
  expect_load_error(&b, text, "not an HDF5 file");

  const char *missing = TEST_PATH("missing.h5");
  write_weights(missing, "resblocks.4.convs2.1.bias", NULL, NULL, NULL);
  expect_load_error(&b, missing, "no tensor 'resblocks.4.convs2.1.bias'");

  const char *shape = TEST_PATH("shape.h5");
  write_weights(shape, NULL, "upsampler.1.weight", NULL, NULL);
  expect_load_error(&b, shape, "tensor 'upsampler.1.weight': expected shape [16, 8, 4], file has [2, 2]");

  const char *extra = TEST_PATH("extra.h5");
  write_weights(extra, NULL, NULL, "upsampler.3.weight", NULL); /* a fourth stage the model lacks */
  expect_load_error(&b, extra, "tensor 'upsampler.3.weight' is not a parameter of this model");

  const char *json = TEST_PATH("json.h5");
  write_weights(json, NULL, NULL, NULL, "{\"model_in_dim\": 8,");
  expect_load_error(&b, json, "json.h5: its config attribute is not a JSON object (line 1:");
  write_weights(json, NULL, NULL, NULL, "{\"model_in_dim\": 8, \"upsample_rates\": [2, 2, 2]}");
  Ctx *ctx = ctx_create_cpu(0); /* a config stating only some sizes, all agreeing, loads */
  ParamSet ps;
  params_init(&ps, "");
  McmErr err;
  EXPECT(hifigan_load(ctx, hifigan_create(ctx, &b, &ps), json, &err) == 0, "%s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);

  /* Config attribute disagreements, including ones the shapes cannot reveal. */
  HifiganConfig a = fixture_config('a');
  HifiganConfig c = a;
  c.resblock_dilation_sizes[1][1] = 5;
  expect_load_error(&c, weights_path('a'),
                    "config has resblock_dilation_sizes[1][1] = 3, the model is configured with 5");
  c = a;
  c.leaky_relu_slope = 0.2f;
  expect_load_error(&c, weights_path('a'), "config has leaky_relu_slope = 0.1, the model is configured with 0.2");
  expect_load_error(&b, weights_path('a'),
                    "config has upsample_rates = [5,4], the model is configured with [2,2,2]");
  c = a;
  c.sampling_rate = 44100;
  expect_load_error(&c, weights_path('a'), "sampling_rate = 16000");
  c = a;
  c.normalize_before = true;
  expect_load_error(&c, weights_path('a'), "normalize_before = false");
}
