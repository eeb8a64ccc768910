/* models/vae.c against diffusers' AutoencoderKL itself (tests/fixtures/model_vae.py): random
 * weights at small configurations, converted by tools/convert_diffusers.py and loaded through
 * vae_load; encode (mean, logvar), decode, forward, and on the tiny configuration the input
 * gradients (x, z) and every parameter's gradient of Σ mean⊙r + Σ logvar⊙r + Σ dec⊙r.
 * Plus the bad inputs vae_load must turn into one clear line, the config checks, the
 * posterior sample and the released configuration's parameter count.
 *
 * Tolerance: relative L2 error 1e-4 (the networks table of the issue). Both sides compute in
 * fp32 from identical weights (stored fp16, exactly the values the reference used); the
 * differences are summation order in convolutions, norms and attention: measured ≤ 3.2e-6
 * for outputs and ≤ 4.9e-6 for gradients (printed per case), so 1e-4 leaves a margin of 20
 * while a wrong term or a swapped block gives errors of order 1. */
#include <string.h>

#include "fixture.h"
#include "kernels/rng.h"
#include "models/vae.h"
#include "test.h"

#define VAE_FIXTURE "tests/fixtures/model_vae.h5"
#define VAE_REL_TOL 1e-4

static VaeConfig small_config(const char *name) {
  VaeConfig c = vae_config_musicldm();
  c.scaling_factor = 1.0f; /* the file's value must replace it */
  if (!strcmp(name, "a")) {
    c.n_blocks = 2, c.block_out_channels[0] = 16, c.block_out_channels[1] = 32;
    c.layers_per_block = 1, c.norm_num_groups = 8, c.latent_channels = 4;
  } else if (!strcmp(name, "b")) {
    c.n_blocks = 3, c.block_out_channels[0] = 8, c.block_out_channels[1] = 16, c.block_out_channels[2] = 16;
    c.layers_per_block = 2, c.norm_num_groups = 4, c.latent_channels = 4;
  } else { /* tiny */
    c.n_blocks = 2, c.block_out_channels[0] = 4, c.block_out_channels[1] = 8;
    c.layers_per_block = 1, c.norm_num_groups = 2, c.latent_channels = 2;
  }
  return c;
}

static const char *weights_path(const char *name) {
  static char buf[128];
  snprintf(buf, sizeof buf, "tests/fixtures/model_vae_weights_%s.h5", name);
  return buf;
}

static Vae *load_small(Ctx *ctx, ParamSet *ps, const char *name) {
  params_init(ps, "");
  VaeConfig c = small_config(name);
  Vae *vae = vae_create(ctx, &c, ps);
  McmErr err;
  if (vae_load(ctx, vae, weights_path(name), &err)) {
    test_fail(__FILE__, __LINE__, "vae_load: %s", err.msg);
    test_abort();
  }
  return vae;
}

#define KEY(name, leaf) (snprintf(key, sizeof key, "%s/%s", (name), (leaf)), key)

/* Forward only, in no-grad mode: encode, decode and forward of config `name`. */
static void check_forward(const char *name, float scaling_factor) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Vae *vae = load_small(ctx, &ps, name);
  EXPECT_NEAR(vae->cfg.scaling_factor, scaling_factor, 1e-6);
  Fixture *fx = fixture_open(VAE_FIXTURE);
  char key[128];
  ctx_set_grad(ctx, false);
  Tensor *x = fixture_tensor(ctx, fx, KEY(name, "x"), false);
  Tensor *z = fixture_tensor(ctx, fx, KEY(name, "z"), false);
  VaeMoments m = vae_encode(ctx, vae, x);
  double e[4];
  e[0] = fixture_expect(ctx, fx, KEY(name, "mean"), m.mean, VAE_REL_TOL);
  e[1] = fixture_expect(ctx, fx, KEY(name, "logvar"), m.logvar, VAE_REL_TOL);
  e[2] = fixture_expect(ctx, fx, KEY(name, "dec"), vae_decode(ctx, vae, z), VAE_REL_TOL);
  e[3] = fixture_expect(ctx, fx, KEY(name, "recon"), vae_forward(ctx, vae, x, false), VAE_REL_TOL);
  printf("  vae %-4s rel L2: mean %.2g  logvar %.2g  decode %.2g  forward %.2g  (%lld parameters)\n", name, e[0], e[1],
         e[2], e[3], (long long)params_count(&ps));
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(vae_fixture_two_levels_eight_groups) { check_forward("a", 1.0753f); }
TEST(vae_fixture_three_levels_two_layers) { check_forward("b", 0.5f); }

static Tensor *dot(Ctx *ctx, Tensor *a, Tensor *r) { return op_sum(ctx, op_mul(ctx, a, r)); }

static double l2(const float *a, const float *b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += ((double)a[i] - (b ? b[i] : 0)) * ((double)a[i] - (b ? b[i] : 0));
  return sqrt(s);
}

/* The key bias adds q·b_k to every score of a query's row, which the softmax ignores: its
 * gradient is exactly zero, and both sides hold rounding noise (~1e-8) where a relative
 * error means nothing. Measured instead against the scale of the key weight's gradient. */
static double expect_zero_gradient(Ctx *ctx, Fixture *fx, const char *name, Tensor *p) {
  char key[PARAMS_NAME_MAX * 2], wname[PARAMS_NAME_MAX * 2];
  snprintf(wname, sizeof wname, "tiny/%.*s.weight", (int)(strlen(name) - strlen(".bias")), name);
  int64_t n, nw;
  float *ref = fixture_values(fx, KEY("tiny", name), &n), *refw = fixture_values(fx, wname, &nw);
  ASSERT(n == p->numel, "%s: %lld values in the fixture", name, (long long)n);
  float *got = MALLOC_CHECK((size_t)n * sizeof(float));
  tensor_to_host_f32(ctx, p->grad, got);
  double e = l2(got, ref, n) / l2(refw, NULL, nw);
  EXPECT(e <= VAE_REL_TOL, "%s: |got - ref| / |d to_k.weight| = %.3g", name, e);
  free(got);
  free(ref);
  free(refw);
  return e;
}

TEST(vae_fixture_gradients_every_parameter) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Vae *vae = load_small(ctx, &ps, "tiny");
  Fixture *fx = fixture_open(VAE_FIXTURE);
  char key[PARAMS_NAME_MAX * 2];
  Tensor *x = fixture_tensor(ctx, fx, KEY("tiny", "x"), true);
  Tensor *z = fixture_tensor(ctx, fx, KEY("tiny", "z"), true);
  VaeMoments m = vae_encode(ctx, vae, x);
  Tensor *dec = vae_decode(ctx, vae, z);
  Tensor *loss = op_add(ctx, op_add(ctx, dot(ctx, m.mean, fixture_tensor(ctx, fx, KEY("tiny", "r_mean"), false)),
                                    dot(ctx, m.logvar, fixture_tensor(ctx, fx, KEY("tiny", "r_logvar"), false))),
                        dot(ctx, dec, fixture_tensor(ctx, fx, KEY("tiny", "r_dec"), false)));
  double e_out = fixture_expect(ctx, fx, KEY("tiny", "mean"), m.mean, VAE_REL_TOL);
  e_out = fmax(e_out, fixture_expect(ctx, fx, KEY("tiny", "logvar"), m.logvar, VAE_REL_TOL));
  e_out = fmax(e_out, fixture_expect(ctx, fx, KEY("tiny", "dec"), dec, VAE_REL_TOL));
  backward(ctx, loss);
  double e_x = fixture_expect(ctx, fx, KEY("tiny", "grad_x"), x->grad, VAE_REL_TOL);
  double e_z = fixture_expect(ctx, fx, KEY("tiny", "grad_z"), z->grad, VAE_REL_TOL);
  double e_p = 0, e_kb = 0;
  const char *worst = "";
  for (int i = 0; i < ps.n; i++) {
    Tensor *p = ps.p[i];
    char name[PARAMS_NAME_MAX + 16];
    snprintf(name, sizeof name, "grad/%s", p->name);
    ASSERT(p->grad, "%s received no gradient", p->name);
    if (strstr(p->name, "to_k.bias")) {
      e_kb = fmax(e_kb, expect_zero_gradient(ctx, fx, name, p));
      continue;
    }
    double e = fixture_expect(ctx, fx, KEY("tiny", name), p->grad, VAE_REL_TOL);
    if (e > e_p) e_p = e, worst = p->name;
  }
  printf("  vae tiny rel L2: outputs %.2g  dx %.2g  dz %.2g  worst of %d parameter grads %.2g (%s), to_k.bias %.2g\n",
         e_out, e_x, e_z, ps.n, e_p, worst, e_kb);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* The trainer's case: a frozen decoder passes the gradient on to z and keeps none itself. */
TEST(vae_frozen_decoder_gradient_reaches_z_only) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Vae *vae = load_small(ctx, &ps, "tiny");
  params_set_trainable(ctx, &ps, false);
  Fixture *fx = fixture_open(VAE_FIXTURE);
  char key[128];
  Tensor *z = fixture_tensor(ctx, fx, KEY("tiny", "z"), true);
  Tensor *dec = vae_decode(ctx, vae, z);
  backward_from(ctx, dec, fixture_tensor(ctx, fx, KEY("tiny", "r_dec"), false));
  fixture_expect(ctx, fx, KEY("tiny", "grad_z"), z->grad, VAE_REL_TOL);
  for (int i = 0; i < ps.n; i++) {
    Tensor *g = ps.p[i]->grad; /* a trainable parameter's buffer stays, zero */
    EXPECT(!g || l2(g->data, NULL, g->numel) == 0.0, "frozen %s got a gradient", ps.p[i]->name);
  }
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- bad inputs */

/* Copies the tiny weights to tmp/<name> with one tensor dropped, one tensor flattened to
 * 1-D, and/or another config text (NULL: keep; "": none). */
#define WEIGHTS_VARIANT(name, drop, flatten, config) weights_variant((char[512]){0}, 512, name, drop, flatten, config)
static const char *weights_variant(char *path, size_t size, const char *name, const char *drop, const char *flatten,
                                   const char *config) {
  McmErr err;
  TensorFile *src = tf_open(weights_path("tiny"), &err);
  ASSERT(src, "%s", err.msg);
  test_path(path, size, name);
  TensorFile *dst = tf_create(path, &err);
  ASSERT(dst, "%s", err.msg);
  char **names, *attr;
  int n;
  ASSERT(tf_names(src, &names, &n, &err) == 0, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    if (drop && !strcmp(names[i], drop)) continue;
    int ndim;
    int64_t shape[MCM_MAX_DIMS];
    DType dt;
    ASSERT(tf_info(src, names[i], &ndim, shape, &dt, &err) == 0, "%s", err.msg);
    int64_t numel = shape_numel(ndim, shape);
    float *v = MALLOC_CHECK((size_t)numel * sizeof(float));
    ASSERT(tf_read(src, names[i], ndim, shape, v, &err) == 0, "%s", err.msg);
    bool flat = flatten && !strcmp(names[i], flatten);
    ASSERT(tf_write(dst, names[i], DT_F32, flat ? 1 : ndim, flat ? &numel : shape, v, &err) == 0, "%s", err.msg);
    free(v);
  }
  tf_free_names(names, n);
  ASSERT(tf_get_attr(src, "component", &attr, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(dst, "component", attr, &err) == 0, "%s", err.msg);
  free(attr);
  if (!config) {
    ASSERT(tf_get_attr(src, "config", &attr, &err) == 0, "%s", err.msg);
    ASSERT(tf_set_attr(dst, "config", attr, &err) == 0, "%s", err.msg);
    free(attr);
  } else if (config[0]) {
    ASSERT(tf_set_attr(dst, "config", config, &err) == 0, "%s", err.msg);
  }
  tf_close(src);
  ASSERT(tf_commit(dst, &err) == 0, "%s", err.msg);
  return path;
}

/* vae_load of `path` into the tiny model (or `cfg`) must fail with a message containing
 * each of the given texts, on one line. */
static void expect_load_error(const char *path, const VaeConfig *cfg, const char *want1, const char *want2) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  VaeConfig tiny = small_config("tiny");
  Vae *vae = vae_create(ctx, cfg ? cfg : &tiny, &ps);
  McmErr err;
  EXPECT(vae_load(ctx, vae, path, &err) == -1, "loading %s succeeded", path);
  EXPECT_STR_CONTAINS(err.msg, want1);
  if (want2) EXPECT_STR_CONTAINS(err.msg, want2);
  EXPECT(!strchr(err.msg, '\n'), "message spans lines: %s", err.msg);
  printf("  %s\n", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(vae_load_missing_file) {
  expect_load_error(TEST_PATH("nowhere/vae.h5"), NULL, "nowhere/vae.h5", "cannot open");
}

TEST(vae_load_not_hdf5) {
  const char *path = TEST_PATH("vae.h5");
  FILE *f = fopen(path, "w");
  ASSERT(f, "cannot write %s", path);
  fputs("{\"not\": \"weights\"}\n", f);
  fclose(f);
  expect_load_error(path, NULL, "not an HDF5 file", NULL);
}

TEST(vae_load_missing_tensor) {
  const char *path = WEIGHTS_VARIANT("missing.h5", "decoder.mid_block.attentions.0.to_k.bias", NULL, NULL);
  expect_load_error(path, NULL, "no tensor 'decoder.mid_block.attentions.0.to_k.bias'", NULL);
}

TEST(vae_load_wrong_shape) {
  const char *path = WEIGHTS_VARIANT("shape.h5", NULL, "encoder.conv_in.weight", NULL);
  expect_load_error(path, NULL, "encoder.conv_in.weight", "expected shape [4, 1, 3, 3], file has [36]");
}

TEST(vae_load_config_disagrees_with_model) {
  VaeConfig c = small_config("tiny");
  c.layers_per_block = 2;
  expect_load_error(weights_path("tiny"), &c, "layers_per_block = 1, the model is configured with 2", NULL);
  c = small_config("tiny");
  c.block_out_channels[1] = 16;
  expect_load_error(weights_path("tiny"), &c, "block_out_channels[1] = 8, the model is configured with 16", NULL);
  c = small_config("tiny");
  c.mid_block_add_attention = false;
  expect_load_error(weights_path("tiny"), &c, "mid_block_add_attention = true, the model is configured with false", NULL);
}

TEST(vae_load_config_without_attribute_still_checked_by_tensors) {
  /* No config attribute: a model with one layer more finds the tensors missing. */
  const char *path = WEIGHTS_VARIANT("noconfig.h5", NULL, NULL, "");
  VaeConfig c = small_config("tiny");
  c.layers_per_block = 2;
  expect_load_error(path, &c, "no tensor 'encoder.down_blocks.0.resnets.1.", NULL);
  /* ... and one layer fewer finds tensors it does not have. */
  c = small_config("tiny");
  c.mid_block_add_attention = false;
  expect_load_error(path, &c, "is not a parameter of this model", NULL);
}

TEST(vae_load_bad_config_attribute) {
  expect_load_error(WEIGHTS_VARIANT("badjson.h5", NULL, NULL, "{\"latent_channels\": 2,"), NULL, "not a JSON object",
                    NULL);
  expect_load_error(WEIGHTS_VARIANT("gelu.h5", NULL, NULL, "{\"act_fn\": \"gelu\"}"), NULL, "act_fn = \"gelu\", the model is configured with \"silu\"", NULL);
  expect_load_error(WEIGHTS_VARIANT("unet.h5", NULL, NULL, "{\"_class_name\": \"UNet2DConditionModel\"}"), NULL,
                    "_class_name = \"UNet2DConditionModel\", the model is configured with \"AutoencoderKL\"", NULL);
}

TEST(vae_load_reads_scaling_factor_and_fp16_weights) {
  /* The committed weights are fp16 on disk; this copy is fp32 with another scaling_factor:
   * the same parameters, and each model takes its own file's scale. */
  const char *path = WEIGHTS_VARIANT("fp32.h5", NULL, NULL, "{\"scaling_factor\": 0.125}");
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet a, b;
  Vae *va = load_small(ctx, &a, "tiny");
  params_init(&b, "");
  VaeConfig c = small_config("tiny");
  Vae *vb = vae_create(ctx, &c, &b);
  McmErr err;
  ASSERT(vae_load(ctx, vb, path, &err) == 0, "%s", err.msg);
  EXPECT_NEAR(va->cfg.scaling_factor, 0.25, 0);
  EXPECT_NEAR(vb->cfg.scaling_factor, 0.125, 0);
  ASSERT(a.n == b.n, "%d and %d parameters", a.n, b.n);
  for (int i = 0; i < a.n; i++)
    EXPECT(!memcmp(a.p[i]->data, b.p[i]->data, tensor_bytes(a.p[i])), "%s differs", a.p[i]->name);
  params_free(&a);
  params_free(&b);
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- config, init, sample */

TEST(vae_config_check_bad_combinations) {
  McmErr err;
  VaeConfig c = vae_config_musicldm();
  EXPECT(vae_config_check(&c, &err) == 0, "released config: %s", err.msg);
  c.norm_num_groups = 24;
  EXPECT(vae_config_check(&c, &err) == -1, "groups 24 accepted");
  EXPECT_STR_CONTAINS(err.msg, "block_out_channels[0] = 128 is not a positive multiple of norm_num_groups 24");
  c = vae_config_musicldm();
  c.n_blocks = 0;
  EXPECT(vae_config_check(&c, &err) == -1, "0 blocks accepted");
  EXPECT_STR_CONTAINS(err.msg, "0 blocks");
  c = vae_config_musicldm();
  c.layers_per_block = VAE_MAX_LAYERS + 1;
  EXPECT(vae_config_check(&c, &err) == -1, "too many layers accepted");
  EXPECT_STR_CONTAINS(err.msg, "layers_per_block");
  c = vae_config_musicldm();
  c.latent_channels = 0;
  EXPECT(vae_config_check(&c, &err) == -1, "latent 0 accepted");
  EXPECT_STR_CONTAINS(err.msg, "latent_channels 0");
}

TEST(vae_released_config_parameter_count) {
  /* diffusers 0.33.1 AutoencoderKL with the hub's vae/config.json: 55,376,873 parameters
   * (encoder 22,395,024, decoder 32,981,505, quant convs 344) in 204 tensors. */
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  VaeConfig c = vae_config_musicldm();
  Vae *vae = vae_create(ctx, &c, &ps);
  EXPECT(params_count(&ps) == 55376873LL, "%lld parameters", (long long)params_count(&ps));
  EXPECT(vae->n_params == 204 && ps.n == 204, "%d tensors", ps.n);
  EXPECT(vae_downsample_factor(&c) == 4, "factor %d", vae_downsample_factor(&c));
  EXPECT_NEAR(vae->cfg.scaling_factor, 1.0753243, 1e-6);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(vae_init_random_is_reproducible) {
  float *first[2] = {0};
  for (int run = 0; run < 2; run++) {
    Ctx *ctx = ctx_create_cpu(7);
    ParamSet ps;
    params_init(&ps, "");
    VaeConfig c = small_config("tiny");
    Vae *vae = vae_create(ctx, &c, &ps);
    vae_init_random(ctx, vae);
    Tensor *w = params_find(&ps, "decoder.up_blocks.1.resnets.0.conv_shortcut.weight");
    Tensor *g = params_find(&ps, "encoder.mid_block.attentions.0.group_norm.weight");
    ASSERT(w && g, "parameters missing");
    first[run] = MALLOC_CHECK((size_t)w->numel * sizeof(float));
    memcpy(first[run], w->data, (size_t)w->numel * sizeof(float));
    float bound = 1.0f / sqrtf((float)(w->numel / w->shape[0])), mx = 0;
    for (int64_t i = 0; i < w->numel; i++) mx = fmaxf(mx, fabsf(first[run][i]));
    EXPECT(mx > 0.5f * bound && mx <= bound, "max |w| %g, bound %g", mx, bound);
    EXPECT(((float *)g->data)[0] == 1.0f, "norm weight %g", ((float *)g->data)[0]);
    params_free(&ps);
    ctx_destroy(ctx);
  }
  EXPECT(!memcmp(first[0], first[1], 4 * 8 * sizeof(float)), "two runs differ");
  free(first[0]);
  free(first[1]);
}

TEST(vae_sample_uses_the_context_stream_and_clamps) {
  Ctx *ctx = ctx_create_cpu(11);
  ctx_set_grad(ctx, false);
  float mean[6] = {0, 1, -2, 0.5f, 3, 0}, logvar[6] = {0, -2, 1, 100, -100, 2};
  Tensor *m = tensor_new(ctx, DT_F32, SHAPE(1, 1, 2, 3)), *lv = tensor_new(ctx, DT_F32, SHAPE(1, 1, 2, 3));
  tensor_from_host_f32(ctx, m, mean);
  tensor_from_host_f32(ctx, lv, logvar);
  uint64_t offset = ctx->rng_offset;
  Tensor *z = vae_sample(ctx, m, lv);
  float got[6], eps[6];
  tensor_to_host_f32(ctx, z, got);
  rng_normal_host(11, offset, eps, 6);
  for (int i = 0; i < 6; i++) {
    float lvc = fminf(fmaxf(logvar[i], -30.0f), 20.0f);
    float want = mean[i] + expf(0.5f * lvc) * eps[i];
    EXPECT_NEAR(got[i], want, 1e-6 * fabs(want) + 1e-7);
  }
  EXPECT(ctx->rng_offset == offset + rng_blocks(6), "rng offset not advanced");
  ctx_destroy(ctx);
}

/* A map whose sides are not multiples of f would not decode back to its own shape. */
TEST_EXIT_MSG(vae_encode_rejects_a_shape_it_cannot_invert, 1,
              "vae_encode: input is [1, 1, 15, 16], expected (B, 1, H, W) with H and W multiples of 2") {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  VaeConfig c = small_config("tiny");
  Vae *vae = vae_create(ctx, &c, &ps);
  vae_encode(ctx, vae, tensor_zeros(ctx, DT_F32, SHAPE(1, 1, 15, 16)));
}
