/* models/disc_heads.c against StyleGAN-T's DiscHead (tests/fixtures/model_disc_heads.py: the
 * PyTorch modules with torch.nn.utils.spectral_norm, random weights, C 16, c_dim 12, M 64,
 * kernel 9, virtual_bs 2, two heads, B 4, N 10), loaded through disc_heads_load:
 *   - logits in training mode, the spectral norms' u and v after that call, and the gradients
 *     of Σ_K sum(logits_K ⊙ R_K) for x_K (R1 needs them), c and every weight;
 *   - logits in eval mode afterwards (stored u, v; no iteration);
 *   - save → load keeps u and v (a resumed run continues the same power iteration);
 *   - init, trainability, batch splitting, bad weights files and configs.
 *
 * Tolerance: relative L2 error 1e-4 (the project's bar for models in fp32); measured errors
 * are printed (~1e-7: fp32 on both sides, different summation orders). */
#include <string.h>

#include "fixture.h"
#include "models/disc_heads.h"
#include "test.h"

#define FIX "tests/fixtures/model_disc_heads.h5"
#define WEIGHTS "tests/fixtures/model_disc_heads_weights.h5"
#define REL_TOL 1e-4

static DiscHeadsConfig config_small(void) {
  return (DiscHeadsConfig){.channels = 16, .c_dim = 12, .cmap_dim = 64, .kernel = 9, .virtual_bs = 2, .slope = 0.2f,
                           .bn_eps = 1e-5f};
}

static DiscHeads *load(Ctx *ctx, ParamSet *ps, const char *path) {
  params_init(ps, "");
  DiscHeadsConfig cfg = config_small();
  DiscHeads *h = disc_heads_create(ctx, &cfg, 2, ps);
  McmErr err;
  ASSERT(disc_heads_load(ctx, h, path, &err) == 0, "disc_heads_load: %s", err.msg);
  return h;
}

/* The bias of a conv that feeds a BatchNormLocal has a gradient of exactly zero (the norm
 * removes any per-channel constant); both sides produce rounding noise there (~1e-7), which a
 * relative error cannot compare. Those are checked to be tiny against their conv's weight
 * gradient instead. */
static bool feeds_batch_norm(const char *name) {
  size_t n = strlen(name);
  return (n > 13 && !strcmp(name + n - 13, "main.0.0.bias")) || (n > 16 && !strcmp(name + n - 16, "main.1.fn.0.bias"));
}

static double norm2(Ctx *ctx, const Tensor *t) {
  float *v = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, v);
  double s = 0;
  for (int64_t i = 0; i < t->numel; i++) s += (double)v[i] * v[i];
  free(v);
  return sqrt(s);
}

static bool is_buffer(const Tensor *p) {
  size_t n = strlen(p->name);
  return n > 9 && (!strcmp(p->name + n - 9, ".weight_u") || !strcmp(p->name + n - 9, ".weight_v"));
}

TEST(disc_heads_fixture_training_mode_and_gradients) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  DiscHeads *h = load(ctx, &ps, WEIGHTS);
  Fixture *fx = fixture_open(FIX);
  Tensor *c = fixture_tensor(ctx, fx, "in/c", true);
  Tensor *x[2], *out[2], *loss = NULL;
  double e_out = 0, e_buf = 0, e_x = 0, e_p = 0, e_zero = 0;
  char key[PARAMS_NAME_MAX + 16];
  for (int k = 0; k < 2; k++) {
    snprintf(key, sizeof key, "in/x%d", k);
    x[k] = fixture_tensor(ctx, fx, key, true);
    out[k] = disc_head_forward(ctx, h, k, x[k], c, true);
    snprintf(key, sizeof key, "R/%d", k);
    Tensor *l = op_sum(ctx, op_mul(ctx, out[k], fixture_tensor(ctx, fx, key, false)));
    loss = loss ? op_add(ctx, loss, l) : l;
  }
  for (int k = 0; k < 2; k++) {
    snprintf(key, sizeof key, "train/%d", k);
    e_out = fmax(e_out, fixture_expect(ctx, fx, key, out[k], REL_TOL));
  }
  for (int i = 0; i < ps.n; i++) /* u and v after one power iteration */
    if (is_buffer(ps.p[i])) {
      snprintf(key, sizeof key, "after/%s", ps.p[i]->name);
      e_buf = fmax(e_buf, fixture_expect(ctx, fx, key, ps.p[i], REL_TOL));
    }
  backward(ctx, loss);
  for (int k = 0; k < 2; k++) {
    snprintf(key, sizeof key, "grad/x%d", k);
    e_x = fmax(e_x, fixture_expect(ctx, fx, key, x[k]->grad, REL_TOL));
  }
  double e_c = fixture_expect(ctx, fx, "grad/c", c->grad, REL_TOL);
  int n_checked = 0;
  const char *worst = "";
  for (int i = 0; i < ps.n; i++) {
    if (is_buffer(ps.p[i])) {
      EXPECT(!ps.p[i]->requires_grad && !ps.p[i]->grad, "buffer %s is trainable", ps.p[i]->name);
      continue;
    }
    snprintf(key, sizeof key, "grad/%s", ps.p[i]->name);
    ASSERT(tf_has(fx, key), "fixture has no %s", key);
    if (feeds_batch_norm(ps.p[i]->name)) {
      char wname[PARAMS_NAME_MAX];
      snprintf(wname, sizeof wname, "%.*s.weight_orig", (int)(strlen(ps.p[i]->name) - 5), ps.p[i]->name);
      Tensor *w = params_find(&ps, wname);
      ASSERT(w, "no %s", wname);
      double ratio = norm2(ctx, ps.p[i]->grad) / norm2(ctx, w->grad);
      EXPECT(ratio < 1e-5, "%s: gradient %.3g of its weight's, want ~0", ps.p[i]->name, ratio);
      e_zero = fmax(e_zero, ratio);
      n_checked++;
      continue;
    }
    double e = fixture_expect(ctx, fx, key, ps.p[i]->grad, REL_TOL);
    if (e > e_p) e_p = e, worst = ps.p[i]->name;
    n_checked++;
  }
  EXPECT(n_checked == 24, "%d weights checked, want 24", n_checked);
  printf("  rel L2: logits %.2g  u,v after %.2g  dx %.2g  dc %.2g  d weights (%d) max %.2g (%s); "
         "zero bias gradients %.2g of their weight's\n", e_out, e_buf, e_x, e_c, n_checked, e_p, worst, e_zero);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Runs both heads once in training mode (no grad) so u and v are the fixture's "after". */
static void train_once(Ctx *ctx, DiscHeads *h, Fixture *fx, Tensor **x, Tensor *c) {
  bool was = ctx_set_grad(ctx, false);
  for (int k = 0; k < 2; k++) disc_head_forward(ctx, h, k, x[k], c, true);
  ctx_set_grad(ctx, was);
}

TEST(disc_heads_fixture_eval_mode_uses_stored_vectors) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  DiscHeads *h = load(ctx, &ps, WEIGHTS);
  Fixture *fx = fixture_open(FIX);
  Tensor *c = fixture_tensor(ctx, fx, "in/c", false);
  Tensor *x[2] = {fixture_tensor(ctx, fx, "in/x0", false), fixture_tensor(ctx, fx, "in/x1", false)};
  train_once(ctx, h, fx, x, c);
  float u0[16], u1[16];
  tensor_to_host_f32(ctx, h->head[1].conv1.sn.u, u0);
  double e = 0;
  for (int k = 0; k < 2; k++) {
    Tensor *y = disc_head_forward(ctx, h, k, x[k], c, false); /* grad mode on, nothing trainable upstream of x */
    char key[16];
    snprintf(key, sizeof key, "eval/%d", k);
    e = fmax(e, fixture_expect(ctx, fx, key, y, REL_TOL));
  }
  tensor_to_host_f32(ctx, h->head[1].conv1.sn.u, u1);
  EXPECT(!memcmp(u0, u1, sizeof u0), "eval mode changed u");
  printf("  eval logits rel L2 %.2g\n", e);

  /* Save (u and v included) and load into fresh heads: the same eval logits. */
  McmErr err;
  TensorFile *tf = tf_create(TEST_PATH("heads.h5"), &err);
  ASSERT(tf && params_save(ctx, &ps, tf, "", DT_F32, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  ParamSet ps2;
  DiscHeads *h2 = load(ctx, &ps2, TEST_PATH("heads.h5"));
  Tensor *y = disc_head_forward(ctx, h2, 1, x[1], c, false);
  EXPECT(fixture_expect(ctx, fx, "eval/1", y, REL_TOL) < REL_TOL, "reloaded heads differ");
  fixture_close(fx);
  params_free(&ps);
  params_free(&ps2);
  ctx_destroy(ctx);
}

TEST(disc_heads_init_trainability_and_batch_split) {
  Ctx *ctx = ctx_create_cpu(3);
  ParamSet ps;
  params_init(&ps, "");
  DiscHeadsConfig cfg = config_small();
  DiscHeads *h = disc_heads_create(ctx, &cfg, 3, &ps);
  disc_heads_init_random(ctx, h);
  EXPECT(ps.n == 3 * 18, "%d tensors for 3 heads, want 54", ps.n);
  float v[144];
  tensor_to_host_f32(ctx, h->head[2].conv1.sn.v, v);
  double s = 0;
  for (int i = 0; i < 144; i++) s += (double)v[i] * v[i];
  EXPECT_NEAR(s, 1.0, 1e-5);
  float bn[16];
  tensor_to_host_f32(ctx, h->head[0].bn1_w, bn);
  EXPECT(bn[0] == 1.0f && bn[15] == 1.0f, "BatchNorm weight not 1");
  /* Reproducible. */
  Ctx *ctx2 = ctx_create_cpu(3);
  ParamSet ps2;
  params_init(&ps2, "");
  DiscHeads *h2 = disc_heads_create(ctx2, &cfg, 3, &ps2);
  disc_heads_init_random(ctx2, h2);
  for (int i = 0; i < ps.n; i++)
    EXPECT(!memcmp(ps.p[i]->data, ps2.p[i]->data, (size_t)ps.p[i]->numel * sizeof(float)), "%s differs",
           ps.p[i]->name);
  /* Buffers stay frozen whatever the weights do. */
  disc_heads_set_trainable(ctx, h, false);
  for (int i = 0; i < ps.n; i++) EXPECT(!ps.p[i]->requires_grad, "%s trainable after freezing", ps.p[i]->name);
  disc_heads_set_trainable(ctx, h, true);
  for (int i = 0; i < ps.n; i++)
    EXPECT(ps.p[i]->requires_grad == !is_buffer(ps.p[i]), "%s: requires_grad %d", ps.p[i]->name,
           ps.p[i]->requires_grad);
  McmErr err;
  EXPECT(disc_heads_check_batch(&cfg, 4, &err) == 0, "B 4: %s", err.msg);
  DiscHeadsConfig d = disc_heads_config_default();
  EXPECT(disc_heads_check_batch(&d, 8, &err) == 0 && disc_heads_check_batch(&d, 16, &err) == 0, "%s", err.msg);
  EXPECT(disc_heads_check_batch(&d, 9, &err) == -1, "B 9 with virtual_bs 8 accepted");
  EXPECT_STR_CONTAINS(err.msg, "a batch of 9 does not split");
  params_free(&ps);
  params_free(&ps2);
  ctx_destroy(ctx);
  ctx_destroy(ctx2);
}

/* ------------------------------------------------------------------ bad inputs */

static void expect_one_line(const McmErr *err, const char *needle) {
  printf("    %s\n", err->msg);
  EXPECT_STR_CONTAINS(err->msg, needle);
  EXPECT(!strchr(err->msg, '\n'), "error spans lines: %s", err->msg);
}

TEST(disc_heads_config_check_rejects_bad_values) {
  McmErr err;
  DiscHeadsConfig c = config_small();
  EXPECT(disc_heads_config_check(&c, &err) == 0, "%s", err.msg);
  c.kernel = 8;
  EXPECT(disc_heads_config_check(&c, &err) == -1, "even kernel accepted");
  expect_one_line(&err, "kernel 8 must be odd");
  c = config_small();
  c.c_dim = 0;
  EXPECT(disc_heads_config_check(&c, &err) == -1, "c_dim 0 accepted");
  expect_one_line(&err, "c_dim 0");
  c = config_small();
  c.virtual_bs = 0;
  EXPECT(disc_heads_config_check(&c, &err) == -1, "virtual_bs 0 accepted");
  c = config_small();
  c.bn_eps = 0;
  EXPECT(disc_heads_config_check(&c, &err) == -1, "eps 0 accepted");
}

typedef struct Edit {
  const char *drop, *grow, *add, *config, *component;
} Edit;

/* A copy of WEIGHTS with one change, in the test's directory. */
static const char *edited(const char *name, Edit e) {
  static char path[512];
  McmErr err;
  mcm_snprintf(path, sizeof path, "%s", TEST_PATH(name));
  TensorFile *src = tf_open(WEIGHTS, &err);
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
      shape[nd - 1] += 2;
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

static McmErr load_fails(const char *path, DiscHeadsConfig cfg, int n_heads) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  DiscHeads *h = disc_heads_create(ctx, &cfg, n_heads, &ps);
  McmErr err = {{0}};
  EXPECT(disc_heads_load(ctx, h, path, &err) == -1, "loading %s succeeded", path);
  params_free(&ps);
  ctx_destroy(ctx);
  return err;
}

TEST(disc_heads_load_bad_inputs_one_line_each) {
  McmErr err = load_fails("tests/fixtures/no_such_heads.h5", config_small(), 2);
  expect_one_line(&err, "no_such_heads.h5");

  FILE *f = fopen(TEST_PATH("text.h5"), "w");
  ASSERT(f, "cannot write");
  fputs("not HDF5\n", f);
  fclose(f);
  err = load_fails(TEST_PATH("text.h5"), config_small(), 2);
  expect_one_line(&err, "text.h5");

  err = load_fails(edited("missing.h5", (Edit){.drop = "heads.1.main.1.fn.0.weight_u"}), config_small(), 2);
  expect_one_line(&err, "heads.1.main.1.fn.0.weight_u");

  err = load_fails(edited("shape.h5", (Edit){.grow = "heads.0.main.1.fn.0.weight_orig"}), config_small(), 2);
  expect_one_line(&err, "heads.0.main.1.fn.0.weight_orig");
  EXPECT_STR_CONTAINS(err.msg, "[16, 16, 11]");

  DiscHeadsConfig vbs = config_small(); /* invisible in the shapes */
  vbs.virtual_bs = 8;
  err = load_fails(WEIGHTS, vbs, 2);
  expect_one_line(&err, "virtual_bs = 2, the model is configured with 8");

  err = load_fails(WEIGHTS, config_small(), 1);
  expect_one_line(&err, "n_heads = 2, the model is configured with 1");

  err = load_fails(edited("slope.h5", (Edit){.config = "{\"leaky_relu_slope\": 0.1}"}), config_small(), 2);
  expect_one_line(&err, "leaky_relu_slope = 0.1, the model is configured with 0.2");

  err = load_fails(edited("extra.h5", (Edit){.add = "heads.2.cls.bias", .config = "{}"}), config_small(), 2);
  expect_one_line(&err, "'heads.2.cls.bias' is not a parameter");

  err = load_fails(edited("vae.h5", (Edit){.component = "vae"}), config_small(), 2);
  expect_one_line(&err, "holds 'vae' weights, not the discriminator heads'");
}
