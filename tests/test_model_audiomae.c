/* models/audiomae.c against the reference AudioMAE encoder (tests/fixtures/model_audiomae.py:
 * MaskedAutoencoderViT with timm's Block, random weights, small configs, fp32), loaded through
 * audiomae_load from the converted weights:
 *   - config A (32×16 input, patch 4, C 64, depth 3, 4 heads): tap readouts -1, 0, 2 and cls;
 *   - config B (16×8, patch 4, C 16, depth 2, 2 heads): outputs and the gradients of
 *     Σ sum(tap ⊙ R) + sum(cls ⊙ R) for the fbank and every parameter, and the input gradient
 *     alone with the network frozen, as the trainer uses it;
 *   - the sin-cos position table of audiomae_init_random against the stored one;
 *   - bad weights files and configs: one clear line each.
 *
 * Tolerance: relative L2 error 1e-4 (the project's bar for models in fp32). Both sides run in
 * fp32 with different summation orders (OpenBLAS against PyTorch's GEMMs, an online softmax
 * against a materialised one); the errors measured are printed and are ~1e-7. */
#include <string.h>

#include "fixture.h"
#include "models/audiomae.h"
#include "test.h"

#define FIX "tests/fixtures/model_audiomae.h5"
#define WEIGHTS_A "tests/fixtures/model_audiomae_weights.h5"
#define WEIGHTS_B "tests/fixtures/model_audiomae_tiny_weights.h5"
#define REL_TOL 1e-4

static AudioMAEConfig config_a(void) {
  return (AudioMAEConfig){.img_t = 32, .img_f = 16, .in_chans = 1, .patch = 4, .embed_dim = 64, .depth = 3,
                          .num_heads = 4, .mlp_ratio = 4.0f, .norm_eps = 1e-6f};
}

static AudioMAEConfig config_b(void) {
  return (AudioMAEConfig){.img_t = 16, .img_f = 8, .in_chans = 1, .patch = 4, .embed_dim = 16, .depth = 2,
                          .num_heads = 2, .mlp_ratio = 4.0f, .norm_eps = 1e-6f};
}

/* No gradient arrived (a trainable parameter keeps a zeroed buffer from its creation). */
static bool no_grad(Ctx *ctx, const Tensor *p) {
  if (!p->grad) return true;
  float *g = MALLOC_CHECK((size_t)p->numel * sizeof(float));
  tensor_to_host_f32(ctx, p->grad, g);
  bool zero = true;
  for (int64_t i = 0; i < p->numel; i++) zero = zero && g[i] == 0.0f;
  free(g);
  return zero;
}

static AudioMAE *load(Ctx *ctx, ParamSet *ps, AudioMAEConfig cfg, const char *path) {
  params_init(ps, "");
  AudioMAE *m = audiomae_create(ctx, &cfg, ps);
  McmErr err;
  ASSERT(audiomae_load(ctx, m, path, &err) == 0, "audiomae_load: %s", err.msg);
  return m;
}

TEST(audiomae_fixture_forward_taps_and_cls) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  AudioMAE *m = load(ctx, &ps, config_a(), WEIGHTS_A);
  Fixture *fx = fixture_open(FIX);
  bool was = ctx_set_grad(ctx, false);
  Tensor *fbank = fixture_tensor(ctx, fx, "fwd/fbank", false);
  const int taps[3] = {-1, 0, 2};
  Tensor *out[3] = {0}, *cls = NULL;
  audiomae_forward(ctx, m, fbank, taps, 3, out, &cls);
  ctx_set_grad(ctx, was);
  double e[4];
  e[0] = fixture_expect(ctx, fx, "fwd/tap_m1", out[0], REL_TOL);
  e[1] = fixture_expect(ctx, fx, "fwd/tap_0", out[1], REL_TOL);
  e[2] = fixture_expect(ctx, fx, "fwd/tap_2", out[2], REL_TOL);
  e[3] = fixture_expect(ctx, fx, "fwd/cls", cls, REL_TOL);
  EXPECT(out[1]->ndim == 3 && out[1]->shape[0] == 2 && out[1]->shape[1] == 64 && out[1]->shape[2] == 32,
         "tap shape %s, want [2, 64, 32]", TENSOR_SHAPE_STR(out[1]));
  printf("  config A rel L2: tap-1 %.2g  tap0 %.2g  tap2 %.2g  cls %.2g\n", e[0], e[1], e[2], e[3]);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Σ_j sum(tap_j ⊙ R_j) + sum(cls ⊙ R_cls) on config B; returns the forward's outputs too. */
static Tensor *grad_loss(Ctx *ctx, AudioMAE *m, Fixture *fx, Tensor *fbank, Tensor **out, Tensor **cls) {
  const int taps[3] = {-1, 0, 1};
  const char *keys[3] = {"grad/R_tap_m1", "grad/R_tap_0", "grad/R_tap_1"};
  audiomae_forward(ctx, m, fbank, taps, 3, out, cls);
  Tensor *loss = op_sum(ctx, op_mul(ctx, *cls, fixture_tensor(ctx, fx, "grad/R_cls", false)));
  for (int j = 0; j < 3; j++)
    loss = op_add(ctx, loss, op_sum(ctx, op_mul(ctx, out[j], fixture_tensor(ctx, fx, keys[j], false))));
  return loss;
}

TEST(audiomae_fixture_gradients_input_and_every_parameter) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  AudioMAE *m = load(ctx, &ps, config_b(), WEIGHTS_B);
  params_set_trainable(ctx, &ps, true); /* pos_embed too: the fixture made it trainable */
  Fixture *fx = fixture_open(FIX);
  Tensor *fbank = fixture_tensor(ctx, fx, "grad/in_fbank", true);
  Tensor *out[3], *cls;
  backward(ctx, grad_loss(ctx, m, fx, fbank, out, &cls));
  double worst_out = 0, worst_param = 0;
  const char *outs[3] = {"grad/out_tap_m1", "grad/out_tap_0", "grad/out_tap_1"};
  for (int j = 0; j < 3; j++) worst_out = fmax(worst_out, fixture_expect(ctx, fx, outs[j], out[j], REL_TOL));
  worst_out = fmax(worst_out, fixture_expect(ctx, fx, "grad/out_cls", cls, REL_TOL));
  double e_in = fixture_expect(ctx, fx, "grad/fbank", fbank->grad, REL_TOL);
  const char *worst_name = "";
  for (int i = 0; i < ps.n; i++) {
    char key[PARAMS_NAME_MAX + 8];
    snprintf(key, sizeof key, "grad/%s", ps.p[i]->name);
    ASSERT(tf_has(fx, key), "fixture has no %s", key);
    double e = fixture_expect(ctx, fx, key, ps.p[i]->grad, REL_TOL);
    if (e > worst_param) worst_param = e, worst_name = ps.p[i]->name;
  }
  printf("  config B rel L2: outputs %.2g  d fbank %.2g  d params (%d) max %.2g (%s)\n", worst_out, e_in, ps.n,
         worst_param, worst_name);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(audiomae_frozen_gives_only_the_input_gradient) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  AudioMAE *m = load(ctx, &ps, config_b(), WEIGHTS_B);
  params_set_trainable(ctx, &ps, false);
  Fixture *fx = fixture_open(FIX);
  Tensor *fbank = fixture_tensor(ctx, fx, "grad/in_fbank", true);
  Tensor *out[3], *cls;
  backward(ctx, grad_loss(ctx, m, fx, fbank, out, &cls));
  double e = fixture_expect(ctx, fx, "grad/fbank", fbank->grad, REL_TOL);
  for (int i = 0; i < ps.n; i++) EXPECT(no_grad(ctx, ps.p[i]), "frozen %s received a gradient", ps.p[i]->name);
  printf("  frozen: d fbank rel L2 %.2g\n", e);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(audiomae_pos_embed_is_frozen_by_default_and_only_needed_blocks_run) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  AudioMAE *m = load(ctx, &ps, config_b(), WEIGHTS_B);
  EXPECT(!m->pos_embed->requires_grad, "pos_embed is trainable");
  EXPECT(m->cls_token->requires_grad, "cls_token is frozen");
  Fixture *fx = fixture_open(FIX);
  Tensor *fbank = fixture_tensor(ctx, fx, "grad/in_fbank", false);
  /* Tap 0 alone, no cls: blocks.1 never runs, so its weights get no gradient. */
  Tensor *t0 = NULL;
  audiomae_forward(ctx, m, fbank, (const int[]){0}, 1, &t0, NULL);
  fixture_expect(ctx, fx, "grad/out_tap_0", t0, REL_TOL);
  backward(ctx, op_sum(ctx, t0));
  EXPECT(!no_grad(ctx, m->blocks[0].fc2_w) && no_grad(ctx, m->blocks[1].fc2_w) && no_grad(ctx, m->norm_w),
         "gradients reached blocks after the last tap");
  EXPECT(no_grad(ctx, m->pos_embed), "the frozen pos_embed received a gradient");
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(audiomae_init_random_sincos_table_and_reproducible) {
  Ctx *ctx = ctx_create_cpu(7);
  ParamSet ps;
  params_init(&ps, "");
  AudioMAEConfig cfg = config_a(); /* an 8 × 4 token grid: the axis quirk shows */
  AudioMAE *m = audiomae_create(ctx, &cfg, &ps);
  audiomae_init_random(ctx, m);
  Fixture *w = fixture_open(WEIGHTS_A);
  double e = fixture_expect(ctx, w, "pos_embed", m->pos_embed, 1e-6);
  printf("  sin-cos pos_embed against AudioMAE's table: rel L2 %.2g\n", e);
  fixture_close(w);
  /* Same seed, same weights. */
  Ctx *ctx2 = ctx_create_cpu(7);
  ParamSet ps2;
  params_init(&ps2, "");
  AudioMAE *m2 = audiomae_create(ctx2, &cfg, &ps2);
  audiomae_init_random(ctx2, m2);
  ASSERT(ps.n == ps2.n, "parameter counts differ");
  for (int i = 0; i < ps.n; i++) {
    int64_t n = ps.p[i]->numel;
    EXPECT(!memcmp(ps.p[i]->data, ps2.p[i]->data, (size_t)n * sizeof(float)), "%s differs between two inits",
           ps.p[i]->name);
  }
  float ln[64];
  tensor_to_host_f32(ctx, m->blocks[1].norm2_w, ln);
  EXPECT(ln[0] == 1.0f && ln[63] == 1.0f, "LayerNorm weight not 1");
  params_free(&ps);
  params_free(&ps2);
  ctx_destroy(ctx);
  ctx_destroy(ctx2);
}

TEST(audiomae_vit_b_config_and_param_count) {
  AudioMAEConfig cfg = audiomae_config_vit_b();
  McmErr err;
  ASSERT(audiomae_config_check(&cfg, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false; /* frozen, as in training: no gradient buffers (341 MB of weights only) */
  AudioMAE *m = audiomae_create(ctx, &cfg, &ps);
  /* distillation.md §3.1: 85.65 M with the fixed pos_embed (393,984 of them). */
  EXPECT(params_count(&ps) == 85254144 + 393984, "ViT-B has %lld parameters", (long long)params_count(&ps));
  EXPECT(m->n_tokens == 512 && m->grid_t == 64 && m->grid_f == 8, "tokens %d (%d x %d)", m->n_tokens, m->grid_t,
         m->grid_f);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ bad inputs */

static void expect_one_line(const McmErr *err, const char *needle) {
  printf("    %s\n", err->msg);
  EXPECT_STR_CONTAINS(err->msg, needle);
  EXPECT(!strchr(err->msg, '\n'), "error spans lines: %s", err->msg);
}

TEST(audiomae_config_check_rejects_bad_sizes) {
  McmErr err;
  AudioMAEConfig c = config_a();
  c.num_heads = 3;
  EXPECT(audiomae_config_check(&c, &err) == -1, "heads 3 accepted");
  expect_one_line(&err, "not divisible by num_heads 3");
  c = config_a();
  c.img_t = 30;
  EXPECT(audiomae_config_check(&c, &err) == -1, "img 30 accepted");
  expect_one_line(&err, "not a whole number of 4 x 4 patches");
  c = config_a();
  c.embed_dim = 66, c.num_heads = 1;
  EXPECT(audiomae_config_check(&c, &err) == -1, "embed 66 accepted");
  expect_one_line(&err, "multiple of 4");
  c = config_a();
  c.norm_eps = 0.0f;
  EXPECT(audiomae_config_check(&c, &err) == -1, "eps 0 accepted");
  expect_one_line(&err, "norm_eps");
  c = config_a();
  c.depth = 0;
  EXPECT(audiomae_config_check(&c, &err) == -1, "depth 0 accepted");
  c = config_a();
  EXPECT(audiomae_check_taps(&c, (const int[]){-1, 2}, 2, &err) == 0, "%s", err.msg);
  EXPECT(audiomae_check_taps(&c, (const int[]){-1, 3}, 2, &err) == -1, "tap 3 of depth 3 accepted");
  expect_one_line(&err, "tap 3 is out of range");
}

/* A copy of WEIGHTS_B into the test's directory with one change. */
typedef struct Edit {
  const char *drop;     /* leave this tensor out */
  const char *grow;     /* write this one with its first dimension + 1 */
  const char *add;      /* add a (4) tensor of this name */
  const char *config;   /* replace the config attribute (NULL: keep) */
  const char *component; /* replace the component attribute (NULL: keep) */
} Edit;

static const char *edited(const char *name, Edit e) {
  static char path[512];
  McmErr err;
  mcm_snprintf(path, sizeof path, "%s", TEST_PATH(name));
  TensorFile *src = tf_open(WEIGHTS_B, &err);
  ASSERT(src, "%s", err.msg);
  TensorFile *dst = tf_create(path, &err);
  ASSERT(dst, "%s", err.msg);
  char **names;
  int n;
  ASSERT(tf_names(src, &names, &n, &err) == 0, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    if (e.drop && !strcmp(names[i], e.drop)) continue;
    int nd;
    int64_t shape[MCM_MAX_DIMS];
    DType dt;
    ASSERT(tf_info(src, names[i], &nd, shape, &dt, &err) == 0, "%s", err.msg);
    float *v = MALLOC_CHECK((size_t)(shape_numel(nd, shape) + 1) * sizeof(float));
    ASSERT(tf_read(src, names[i], nd, shape, v, &err) == 0, "%s", err.msg);
    if (e.grow && !strcmp(names[i], e.grow)) {
      shape[0] += 1;
      v = REALLOC_CHECK(v, (size_t)shape_numel(nd, shape) * sizeof(float));
      memset(v, 0, (size_t)shape_numel(nd, shape) * sizeof(float));
    }
    ASSERT(tf_write(dst, names[i], DT_F32, nd, shape, v, &err) == 0, "%s", err.msg);
    free(v);
  }
  tf_free_names(names, n);
  if (e.add) ASSERT(tf_write(dst, e.add, DT_F32, SHAPE(4), (float[4]){0}, &err) == 0, "%s", err.msg);
  char *cfg = NULL;
  if (e.config) cfg = strdup(e.config);
  else ASSERT(tf_get_attr(src, "config", &cfg, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(dst, "config", cfg, &err) == 0, "%s", err.msg);
  free(cfg);
  char *comp = NULL;
  if (e.component) comp = strdup(e.component);
  else ASSERT(tf_get_attr(src, "component", &comp, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(dst, "component", comp, &err) == 0, "%s", err.msg);
  free(comp);
  tf_close(src);
  ASSERT(tf_commit(dst, &err) == 0, "%s", err.msg);
  return path;
}

/* Loads path into a config-B model and returns the error (the load must fail). */
static McmErr load_fails(const char *path, AudioMAEConfig cfg) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  AudioMAE *m = audiomae_create(ctx, &cfg, &ps);
  McmErr err = {{0}};
  EXPECT(audiomae_load(ctx, m, path, &err) == -1, "loading %s succeeded", path);
  params_free(&ps);
  ctx_destroy(ctx);
  return err;
}

TEST(audiomae_load_bad_inputs_one_line_each) {
  McmErr err = load_fails("tests/fixtures/no_such_audiomae.h5", config_b());
  expect_one_line(&err, "no_such_audiomae.h5");

  FILE *f = fopen(TEST_PATH("text.h5"), "w");
  ASSERT(f, "cannot write");
  fputs("this is not an HDF5 file\n", f);
  fclose(f);
  err = load_fails(TEST_PATH("text.h5"), config_b());
  expect_one_line(&err, "text.h5");

  err = load_fails(edited("missing.h5", (Edit){.drop = "blocks.1.mlp.fc1.weight"}), config_b());
  expect_one_line(&err, "blocks.1.mlp.fc1.weight");

  err = load_fails(edited("shape.h5", (Edit){.grow = "blocks.0.attn.qkv.weight"}), config_b());
  expect_one_line(&err, "blocks.0.attn.qkv.weight");
  EXPECT_STR_CONTAINS(err.msg, "[49, 16]");

  /* num_heads is invisible in the shapes: only the config attribute can tell. */
  AudioMAEConfig four = config_b();
  four.num_heads = 4;
  err = load_fails(WEIGHTS_B, four);
  expect_one_line(&err, "num_heads = 2, the model is configured with 4");

  err = load_fails(edited("cfg.h5", (Edit){.config = "{\"img_size\": [16, 12], \"depth\": 2}"}), config_b());
  expect_one_line(&err, "img_size[1] = 12, the model is configured with 8");

  err = load_fails(edited("json.h5", (Edit){.config = "{not json"}), config_b());
  expect_one_line(&err, "not a JSON object");

  /* A deeper checkpoint than the config: its extra block is an error, the decoder is not. */
  err = load_fails(edited("extra.h5", (Edit){.add = "blocks.2.norm1.weight"}), config_b());
  expect_one_line(&err, "'blocks.2.norm1.weight' is not a parameter of this AudioMAE encoder");

  /* Without a config attribute, a shallower config is caught by the shapes (extra blocks). */
  AudioMAEConfig shallow = config_b();
  shallow.depth = 1;
  err = load_fails(edited("nocfg.h5", (Edit){.config = "{}"}), shallow);
  expect_one_line(&err, "'blocks.1.");

  err = load_fails(edited("vae.h5", (Edit){.component = "vae"}), config_b());
  expect_one_line(&err, "holds 'vae' weights, not AudioMAE's");
}
