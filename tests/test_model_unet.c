/* The MusicLDM UNet (models/unet.c) against diffusers' UNet2DConditionModel with random
 * weights (tests/fixtures/model_unet.py): two small configurations, one per way of giving
 * the attention heads, loaded through unet_load from the converter's files.
 *   a  (4, 16), attention at level 1, 1 resnet per level, 8 heads (diffusers' form):
 *      output, and for sum(out ⊙ R) the gradients of x, the class embedding and EVERY
 *      parameter; then the same input gradients with the parameters frozen.
 *   b  (4, 8, 12), attention at levels 1 and 2, 2 resnets per level, 4-channel heads
 *      (the original's num_head_channels form): output, in no-grad mode.
 * Tolerance: relative L2 error 1e-4 (fp32 on both sides with identical weights; the
 * measured errors are printed and are about 1e-6).
 * Then the bad inputs unet_load must turn into one clear line. */
#include <string.h>

#include "fixture.h"
#include "models/unet.h"
#include "test.h"

#define UNET_FIXTURES "tests/fixtures/model_unet.h5"
#define UNET_WEIGHTS_A "tests/fixtures/model_unet_weights_a.h5"
#define UNET_WEIGHTS_B "tests/fixtures/model_unet_weights_b.h5"
#define UNET_REL_TOL 1e-4

static UNetConfig config_a(void) {
  UNetConfig c = unet_config_musicldm_diffusers();
  c.levels = 2;
  c.block_out_channels[0] = 4, c.block_out_channels[1] = 16;
  c.attention[0] = false, c.attention[1] = true;
  c.layers_per_block = 1;
  c.norm_groups = 2;
  c.num_heads[0] = c.num_heads[1] = 8;
  c.time_proj_dim = 4;
  c.time_embed_dim = 16;
  c.class_embed_in = 16;
  return c;
}

static UNetConfig config_b(void) {
  UNetConfig c = unet_config_musicldm();
  c.levels = 3;
  int ch[] = {4, 8, 12};
  for (int l = 0; l < 3; l++) c.block_out_channels[l] = ch[l], c.attention[l] = l > 0;
  c.layers_per_block = 2;
  c.norm_groups = 2;
  c.num_head_channels = 4;
  c.time_proj_dim = 4;
  c.time_embed_dim = 16;
  c.class_embed_in = 16;
  return c;
}

/* The UNet created into ps (root ""); frozen parameters get no gradient buffers. */
static Unet *make_unet(Ctx *ctx, ParamSet *ps, UNetConfig cfg, bool trainable) {
  params_init(ps, "");
  ps->trainable = trainable;
  McmErr err;
  ASSERT(unet_config_check(&cfg, &err) == 0, "%s", err.msg);
  return unet_create(ctx, &cfg, ps);
}

static Unet *load_unet(Ctx *ctx, ParamSet *ps, UNetConfig cfg, const char *path, bool trainable) {
  Unet *net = make_unet(ctx, ps, cfg, trainable);
  McmErr err;
  ASSERT(unet_load(ctx, net, path, &err) == 0, "%s", err.msg);
  return net;
}

/* A frozen parameter has no gradient buffer, or a zero one (frozen after training). */
static bool grad_is_zero(Ctx *ctx, const Tensor *p) {
  if (!p->grad) return true;
  float *g = MALLOC_CHECK((size_t)p->numel * sizeof(float));
  tensor_to_host_f32(ctx, p->grad, g);
  bool zero = true;
  for (int64_t i = 0; i < p->numel; i++) zero &= g[i] == 0.0f;
  free(g);
  return zero;
}

/* Runs case `name` of the fixture: forward, and backward from R when `grad`. With
 * `frozen`, parameters get no gradient and only the inputs' are compared. */
static void check_case(const char *name, UNetConfig cfg, const char *weights, bool grad, bool frozen) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Unet *net = load_unet(ctx, &ps, cfg, weights, !frozen);
  Fixture *fx = fixture_open(UNET_FIXTURES);
  char key[PARAMS_NAME_MAX + 32];
#define KEY(leaf) (snprintf(key, sizeof key, "%s/%s", name, (leaf)), key)
  Tensor *x = fixture_tensor(ctx, fx, KEY("x"), grad);         /* (B, 8, 16, 8) */
  Tensor *t = fixture_tensor(ctx, fx, KEY("t"), false);        /* (B) */
  Tensor *cls = fixture_tensor(ctx, fx, KEY("class"), grad);   /* (B, 16) */
  bool was = ctx_set_grad(ctx, grad);
  Tensor *out = unet_forward(ctx, net, x, t, cls);             /* (B, 8, 16, 8) */
  double e_out = fixture_expect(ctx, fx, KEY("out"), out, UNET_REL_TOL);
  EXPECT(grad || !out->requires_grad, "%s: no-grad forward recorded a graph", name);
  if (!grad) {
    printf("  unet %s: out rel L2 %.2g\n", name, e_out);
  } else {
    backward_from(ctx, out, fixture_tensor(ctx, fx, KEY("R"), false));
    double e_x = fixture_expect(ctx, fx, KEY("grad_x"), x->grad, UNET_REL_TOL);
    double e_c = fixture_expect(ctx, fx, KEY("grad_class"), cls->grad, UNET_REL_TOL);
    double e_p = 0;
    const char *worst = "";
    for (int i = 0; i < ps.n; i++) {
      Tensor *p = ps.p[i];
      if (frozen) {
        EXPECT(grad_is_zero(ctx, p), "%s: frozen parameter %s received a gradient", name, p->name);
        continue;
      }
      snprintf(key, sizeof key, "%s/grad/%s", name, p->name);
      double e = fixture_expect(ctx, fx, key, p->grad, UNET_REL_TOL);
      if (e > e_p) e_p = e, worst = p->name;
    }
    /* Every parameter of the reference has a gradient entry, and we compared them all. */
    char **names;
    int n, n_grad = 0;
    McmErr err;
    ASSERT(tf_names(fx, &names, &n, &err) == 0, "%s", err.msg);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s/grad/", name);
    for (int i = 0; i < n; i++) n_grad += !strncmp(names[i], prefix, strlen(prefix));
    tf_free_names(names, n);
    EXPECT(n_grad == ps.n, "%s: the fixture has %d parameter gradients, the UNet %d parameters", name, n_grad, ps.n);
    if (frozen)
      printf("  unet %s (frozen): out %.2g  dx %.2g  dclass %.2g\n", name, e_out, e_x, e_c);
    else
      printf("  unet %s: out %.2g  dx %.2g  dclass %.2g  max over %d parameter grads %.2g (%s)\n", name, e_out, e_x,
             e_c, ps.n, e_p, worst);
  }
#undef KEY
  ctx_set_grad(ctx, was);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(unet_fixture_a_forward_and_every_gradient) { check_case("a", config_a(), UNET_WEIGHTS_A, true, false); }
TEST(unet_fixture_a_frozen_input_gradients) { check_case("a", config_a(), UNET_WEIGHTS_A, true, true); }
TEST(unet_fixture_a_forward_no_grad) { check_case("a", config_a(), UNET_WEIGHTS_A, false, false); }
TEST(unet_fixture_b_head_channels_forward) { check_case("b", config_b(), UNET_WEIGHTS_B, false, false); }

/* ---------------------------------------------------------------- configurations */

TEST(unet_released_configs) {
  UNetConfig o = unet_config_musicldm(), d = unet_config_musicldm_diffusers();
  McmErr err;
  EXPECT(unet_config_check(&o, &err) == 0, "%s", err.msg);
  EXPECT(unet_config_check(&d, &err) == 0, "%s", err.msg);
  int want_o[] = {4, 8, 12, 20}; /* 32-channel heads; level 0 has no attention */
  for (int l = 1; l < 4; l++) {
    EXPECT(unet_heads(&o, l) == want_o[l], "original heads at level %d: %d", l, unet_heads(&o, l));
    EXPECT(unet_heads(&d, l) == 8, "diffusers heads at level %d: %d", l, unet_heads(&d, l));
  }
  EXPECT(o.time_embed_dim == 4 * o.block_out_channels[0] && o.time_proj_dim == o.block_out_channels[0],
         "time embedding sizes");
}

static void expect_config_error(UNetConfig c, const char *needle) {
  McmErr err = {{0}};
  EXPECT(unet_config_check(&c, &err) == -1, "config accepted, expected an error containing \"%s\"", needle);
  EXPECT_STR_CONTAINS(err.msg, needle);
  EXPECT(!strchr(err.msg, '\n'), "not one line: %s", err.msg);
}

TEST(unet_config_check_rejects_bad_combinations) {
  UNetConfig c = unet_config_musicldm();
  c.block_out_channels[2] = 390; /* not a multiple of 32 groups */
  expect_config_error(c, "block_out_channels[2] = 390 is not divisible by norm_groups = 32");
  c = unet_config_musicldm();
  c.num_head_channels = 48; /* 256 / 48 */
  expect_config_error(c, "block_out_channels[1] = 256 is not divisible by num_head_channels = 48");
  c = unet_config_musicldm_diffusers();
  c.num_heads[3] = 7;
  expect_config_error(c, "num_heads[3] = 7 does not divide block_out_channels[3] = 640");
  c = unet_config_musicldm();
  c.levels = 9;
  expect_config_error(c, "levels = 9");
  c = unet_config_musicldm();
  c.time_proj_dim = 256;
  expect_config_error(c, "time_proj_dim = 256, expected block_out_channels[0] = 128");
  c = unet_config_musicldm();
  c.layers_per_block = 0;
  expect_config_error(c, "layers_per_block = 0");
}

/* ---------------------------------------------------------------- bad weight files */

/* unet_load on config `cfg` and `path` must fail with one line containing each needle. */
static void expect_load_error(UNetConfig cfg, const char *path, const char *needle1, const char *needle2) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Unet *net = make_unet(ctx, &ps, cfg, false);
  McmErr err = {{0}};
  EXPECT(unet_load(ctx, net, path, &err) == -1, "loading %s succeeded", path);
  EXPECT_STR_CONTAINS(err.msg, needle1);
  if (needle2) EXPECT_STR_CONTAINS(err.msg, needle2);
  EXPECT(!strchr(err.msg, '\n'), "not one line: %s", err.msg);
  printf("  %s\n", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Writes config a's parameters to path, leaving out `skip` and writing `reshape` with a
 * wrong shape (either may be NULL), plus an extra tensor if asked. */
static void write_weights(const char *path, const char *skip, const char *reshape, bool extra,
                          const char *component) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  Unet *net = make_unet(ctx, &ps, config_a(), false);
  unet_init_random(ctx, net);
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < ps.n; i++) {
    Tensor *p = ps.p[i];
    if (skip && !strcmp(p->name, skip)) continue;
    if (reshape && !strcmp(p->name, reshape)) {
      float v[5] = {0};
      ASSERT(tf_write(tf, p->name, DT_F32, SHAPE(5), v, &err) == 0, "%s", err.msg);
      continue;
    }
    ASSERT(tf_write_tensor(ctx, tf, p, DT_F32, &err) == 0, "%s", err.msg);
  }
  if (extra) {
    float v[3] = {0};
    ASSERT(tf_write(tf, "add_embedding.linear_1.weight", DT_F32, SHAPE(3), v, &err) == 0, "%s", err.msg);
  }
  if (component) ASSERT(tf_set_attr(tf, "component", component, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(unet_load_missing_file) {
  expect_load_error(config_a(), TEST_PATH("nope.h5"), "nope.h5: cannot open", NULL);
}

TEST(unet_load_not_hdf5) {
  const char *path = TEST_PATH("weights.h5");
  FILE *f = fopen(path, "w");
  ASSERT(f, "cannot write %s", path);
  fputs("{\"this\": \"is JSON, not HDF5\"}\n", f);
  fclose(f);
  expect_load_error(config_a(), path, "not an HDF5 file", NULL);
}

TEST(unet_load_missing_tensor) {
  const char *path = TEST_PATH("missing.h5");
  write_weights(path, "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight", NULL, false, NULL);
  expect_load_error(config_a(), path, "no tensor 'up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight'",
                    NULL);
}

TEST(unet_load_wrong_shape) {
  const char *path = TEST_PATH("shape.h5");
  write_weights(path, NULL, "mid_block.resnets.1.conv2.bias", false, NULL);
  expect_load_error(config_a(), path, "mid_block.resnets.1.conv2.bias", "[5]");
}

TEST(unet_load_extra_tensor) {
  const char *path = TEST_PATH("extra.h5");
  write_weights(path, NULL, NULL, true, NULL);
  expect_load_error(config_a(), path, "'add_embedding.linear_1.weight' is not a parameter of this model", NULL);
}

TEST(unet_load_other_component) {
  const char *path = TEST_PATH("vae.h5");
  write_weights(path, NULL, NULL, false, "vae");
  expect_load_error(config_a(), path, "holds 'vae' weights, not the UNet's", NULL);
}

/* The converted file's config.json disagrees with the configuration: named, before any
 * tensor shape is looked at. */
TEST(unet_load_config_disagrees) {
  UNetConfig c = config_a();
  c.layers_per_block = 2;
  expect_load_error(c, UNET_WEIGHTS_A, "the weights' config has layers_per_block = 1, the model is configured with 2", NULL);
  c = config_a();
  c.num_heads[1] = 4; /* the file was made with 8 heads */
  expect_load_error(c, UNET_WEIGHTS_A, "attention_head_dim (level 1) = 8, the model is configured with 4", NULL);
  c = config_b();
  c.block_out_channels[2] = 16;
  expect_load_error(c, UNET_WEIGHTS_B, "block_out_channels[2] = 12, the model is configured with 16", NULL);
  c = config_b();
  c.attention[1] = false;
  expect_load_error(c, UNET_WEIGHTS_B, "down_block_types[1] = \"CrossAttnDownBlock2D\", the model is configured with \"DownBlock2D\"",
                    NULL);
  c = config_b();
  c.class_embed_in = 32;
  expect_load_error(c, UNET_WEIGHTS_B, "projection_class_embeddings_input_dim = 16, the model is configured with 32",
                    NULL);
}

/* The released model's config.json (diffusers 0.33.1, the converter's arguments): both
 * released configurations agree with every size it states, so loading gets as far as the
 * first tensor (the file holds none). A head count it contradicts is named. */
#define UNET_RELEASED_CONFIG "tests/fixtures/model_unet_released_config.h5"
TEST(unet_released_config_json_agrees) {
  expect_load_error(unet_config_musicldm(), UNET_RELEASED_CONFIG, "no tensor 'time_embedding.linear_1.weight'", NULL);
  expect_load_error(unet_config_musicldm_diffusers(), UNET_RELEASED_CONFIG,
                    "no tensor 'time_embedding.linear_1.weight'", NULL);
  UNetConfig c = unet_config_musicldm_diffusers();
  c.num_heads[2] = 12;
  expect_load_error(c, UNET_RELEASED_CONFIG, "attention_head_dim (level 2) = 8, the model is configured with 12", NULL);
  c = unet_config_musicldm();
  c.transformer_norm_eps = 1e-5f; /* not in diffusers' config: nothing to disagree with */
  c.norm_eps = 1e-6f;
  expect_load_error(c, UNET_RELEASED_CONFIG, "norm_eps = 1e-05, the model is configured with 1e-06", NULL);
}
