/* The optimizer kernels on the CPU (kernels/optim.h) and their checkpoint state
 * (core/checkpoint.h): which parameters AdamW keeps, the bf16 master-weight path, a long
 * tensor against a double-precision reference, the deterministic gradient norm, clipping
 * (including non-finite norms), the EMA formula, bit-exact resume through a checkpoint,
 * and the errors a mismatched checkpoint gives. PyTorch comparisons are in
 * test_ops_optim_fixtures.c. (No finite-difference test: nothing here is differentiated.) */
#include <omp.h>

#include "core/checkpoint.h"
#include "gradcheck.h"
#include "kernels/optim.h"
#include "test.h"

static Tensor *param(Ctx *ctx, const char *name, DType dt, int ndim, const int64_t *shape, uint64_t seed) {
  Tensor *p = param_new(ctx, name, dt, ndim, shape, true);
  fill_uniform(ctx, p, seed, -1.0f, 1.0f);
  return p;
}

static float *host_copy(Ctx *ctx, const Tensor *t) {
  float *h = MALLOC_CHECK((size_t)(t->numel ? t->numel : 1) * sizeof(float));
  tensor_to_host_f32(ctx, t, h);
  return h;
}

static bool same_bits(Ctx *ctx, const Tensor *a, const Tensor *b) {
  if (a->numel != b->numel || a->dtype != b->dtype) return false;
  float *x = host_copy(ctx, a), *y = host_copy(ctx, b);
  bool same = !memcmp(x, y, (size_t)a->numel * sizeof(float));
  free(x), free(y);
  return same;
}

static const AdamWHyper kHyper = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f};

TEST(optim_adamw_keeps_trainable_params_and_masters_bf16) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p[3] = {param(ctx, "w", DT_F32, SHAPE(3, 4), 1), param(ctx, "frozen", DT_F32, SHAPE(5), 2),
                  param(ctx, "h", DT_BF16, SHAPE(7), 3)};
  param_set_trainable(ctx, p[1], false);
  AdamW *opt = adamw_create(ctx, p, 3, kHyper);
  ASSERT(opt->n == 2 && opt->params[0] == p[0] && opt->params[1] == p[2], "kept %d params", opt->n);
  EXPECT(opt->step == 0 && opt->lr == kHyper.lr && opt->weight_decay == kHyper.weight_decay, "bad initial state");
  EXPECT(!opt->master[0] && opt->master[1] && opt->master[1]->dtype == DT_F32, "master copies: fp32 params none");
  float *mh = host_copy(ctx, opt->master[1]), *ph = host_copy(ctx, p[2]);
  EXPECT(!memcmp(mh, ph, 7 * sizeof(float)), "the master copy does not start at the bf16 values");
  free(mh), free(ph);
  for (int i = 0; i < 2; i++) {
    float *m = host_copy(ctx, opt->m[i]), *v = host_copy(ctx, opt->v[i]);
    for (int64_t j = 0; j < opt->m[i]->numel; j++) EXPECT(m[j] == 0.0f && v[j] == 0.0f, "state not zero");
    EXPECT(opt->m[i]->dtype == DT_F32 && opt->m[i]->persistent && tensor_same_shape(opt->m[i], opt->params[i]),
           "m %d is not fp32 persistent with the param's shape", i);
    free(m), free(v);
  }
  EXPECT(adamw_weights(opt, 0) == p[0] && adamw_weights(opt, 1) == opt->master[1], "adamw_weights");
  ctx_destroy(ctx);
}

/* A parameter without a gradient is left alone (no decay, no state change). */
TEST(optim_adamw_skips_params_without_grad) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *a = param(ctx, "a", DT_F32, SHAPE(6), 1);
  Tensor *b = tensor_new_persistent(ctx, DT_F32, SHAPE(5)); /* trainable, grad not yet created */
  fill_uniform(ctx, b, 2, -1.0f, 1.0f);
  b->requires_grad = true;
  b->name = "b";
  Tensor *p[2] = {a, b};
  AdamW *opt = adamw_create(ctx, p, 2, kHyper);
  ASSERT(opt->n == 2, "kept %d", opt->n);
  float *b0 = host_copy(ctx, b), *a0 = host_copy(ctx, a);
  fill_uniform(ctx, a->grad, 3, -1.0f, 1.0f);
  adamw_step(ctx, opt, kHyper.lr);
  float *b1 = host_copy(ctx, b), *a1 = host_copy(ctx, a), *vb = host_copy(ctx, opt->v[1]);
  EXPECT(!memcmp(b0, b1, 5 * sizeof(float)), "a parameter without a gradient changed");
  for (int i = 0; i < 5; i++) EXPECT(vb[i] == 0.0f, "its state changed");
  EXPECT(memcmp(a0, a1, 6 * sizeof(float)), "the parameter with a gradient did not change");
  EXPECT(opt->step == 1, "step %lld", (long long)opt->step);
  free(a0), free(a1), free(b0), free(b1), free(vb);
  ctx_destroy(ctx);
}

/* 100003 elements (two chunks and a tail, parallel loop) over 4 steps against Adam written
 * out in double. The fp32 path rounds ~10 operations per element and step, so it stays
 * within a few ulps of the double result [worst: 0.24 of the tolerance below]; a wrong term
 * (bias correction, decay, eps) moves p by ~lr = 1e-2. */
TEST(optim_adamw_long_tensor_matches_double_reference) {
  Ctx *ctx = ctx_create_cpu(1);
  const int64_t N = 100003;
  Tensor *p = param(ctx, "p", DT_F32, SHAPE(N), 7);
  double *rp = MALLOC_CHECK(N * sizeof(double)), *rm = CALLOC_CHECK(N, sizeof(double)),
         *rv = CALLOC_CHECK(N, sizeof(double));
  float *h = host_copy(ctx, p);
  for (int64_t i = 0; i < N; i++) rp[i] = h[i];
  free(h);
  AdamW *opt = adamw_create(ctx, &p, 1, kHyper);
  const float lrs[4] = {1e-2f, 5e-3f, 2e-3f, 1e-3f};
  for (int k = 0; k < 4; k++) {
    fill_uniform(ctx, p->grad, 100 + k, -2.0f, 2.0f);
    float *g = host_copy(ctx, p->grad);
    adamw_step(ctx, opt, lrs[k]);
    double b1 = kHyper.beta1, b2 = kHyper.beta2, lr = lrs[k], t = k + 1;
    for (int64_t i = 0; i < N; i++) {
      rp[i] *= 1.0 - lr * kHyper.weight_decay;
      rm[i] = b1 * rm[i] + (1 - b1) * g[i];
      rv[i] = b2 * rv[i] + (1 - b2) * (double)g[i] * g[i];
      rp[i] -= lr / (1 - pow(b1, t)) * rm[i] / (sqrt(rv[i]) / sqrt(1 - pow(b2, t)) + kHyper.eps);
    }
    free(g);
  }
  float *gp = host_copy(ctx, p), *gm = host_copy(ctx, opt->m[0]), *gv = host_copy(ctx, opt->v[0]);
  /* |got − ref| ≤ rtol·|ref| + atol, atol a few ulps of each array's scale (p ~1, m ~2,
   * v ~4e-3), where cancellation leaves a small result with its operands' rounding. */
  const double rtol = 1e-6, atol[3] = {3e-7, 6e-7, 2e-9};
  const float *got[3] = {gp, gm, gv};
  const double *ref[3] = {rp, rm, rv};
  int64_t bad = 0;
  double worst[3] = {0};
  for (int a = 0; a < 3; a++)
    for (int64_t i = 0; i < N; i++) {
      double r = fabs(got[a][i] - ref[a][i]) / (rtol * fabs(ref[a][i]) + atol[a]);
      worst[a] = fmax(worst[a], r);
      bad += r > 1.0;
    }
  printf("worst error / tolerance: p %.3f, m %.3f, v %.3f\n", worst[0], worst[1], worst[2]);
  EXPECT(bad == 0, "%lld elements differ from the double reference", (long long)bad);
  free(gp), free(gm), free(gv), free(rp), free(rm), free(rv);
  ctx_destroy(ctx);
}

/* A bf16 parameter follows exactly the fp32 trajectory in its master copy, and the
 * parameter is always the master rounded to the nearest bf16; updates far below a bf16
 * ulp (lr 1e-5 on values near 1, ulp 2⁻⁸) accumulate in the master. bf16 gradients
 * (bf16-representable values) give the same result as fp32 ones. */
TEST(optim_adamw_bf16_master_weights) {
  Ctx *ctx = ctx_create_cpu(1);
  const int64_t N = 301;
  Tensor *h16 = param(ctx, "h16", DT_BF16, SHAPE(N), 5), *h32 = param_new(ctx, "h32", DT_F32, SHAPE(N), true);
  tensor_copy(ctx, h32, h16); /* same (bf16-representable) start */
  Tensor *p[2] = {h16, h32};
  AdamW *opt = adamw_create(ctx, p, 2, (AdamWHyper){1e-5f, 0.9f, 0.999f, 1e-8f, 0.0f});
  float *start = host_copy(ctx, h16);
  for (int k = 0; k < 6; k++) {
    fill_uniform(ctx, h16->grad, 50 + k, -1.0f, 1.0f); /* bf16 gradient */
    tensor_copy(ctx, h32->grad, h16->grad);            /* the same values in fp32 */
    adamw_step(ctx, opt, 1e-5f);
  }
  ASSERT(opt->master[0] && !opt->master[1], "master copies");
  EXPECT(same_bits(ctx, opt->master[0], h32), "the master copy left the fp32 trajectory");
  float *master = host_copy(ctx, opt->master[0]), *val = host_copy(ctx, h16);
  const uint16_t *bits = h16->data;
  int moved = 0, param_moved = 0;
  for (int64_t i = 0; i < N; i++) {
    EXPECT(bits[i] == f32_to_bf16(master[i]), "element %lld: bf16 %04x is not the master %.9g rounded", (long long)i,
           bits[i], master[i]);
    moved += master[i] != start[i];
    param_moved += val[i] != start[i];
  }
  EXPECT(moved == N, "only %d of %lld master weights moved", moved, (long long)N);
  EXPECT(param_moved < N / 10, "%d bf16 values moved by 6e-5 steps (expected few)", param_moved);
  free(master), free(val), free(start);
  ctx_destroy(ctx);
}

static Tensor **grad_set(Ctx *ctx, Tensor **p, uint64_t seed, float scale) {
  const int64_t sizes[3] = {150001, 37, 1000}; /* three chunks, ragged */
  for (int i = 0; i < 3; i++) {
    char name[8];
    snprintf(name, sizeof name, "g%d", i);
    p[i] = param_new(ctx, name, DT_F32, SHAPE(sizes[i]), true);
    fill_uniform(ctx, p[i]->grad, seed + i, -scale, scale);
  }
  return p;
}

/* The same bits for any thread count, and the double-precision norm rounded once. */
TEST(optim_grad_norm_is_deterministic) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p[4];
  grad_set(ctx, p, 11, 1.0f);
  p[3] = param_new(ctx, "frozen", DT_F32, SHAPE(4), false); /* no grad: skipped */
  int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  float n1 = grad_global_norm(ctx, p, 4);
  omp_set_num_threads(threads > 1 ? threads : 4);
  float n2 = grad_global_norm(ctx, p, 4), n3 = grad_global_norm(ctx, p, 4);
  EXPECT(!memcmp(&n1, &n2, 4) && !memcmp(&n2, &n3, 4), "norms differ: %.9g %.9g %.9g", n1, n2, n3);
  long double s = 0;
  for (int i = 0; i < 3; i++) {
    float *g = host_copy(ctx, p[i]->grad);
    for (int64_t j = 0; j < p[i]->numel; j++) s += (long double)g[j] * g[j];
    free(g);
  }
  EXPECT_NEAR(n1, (double)sqrtl(s), 1e-7 * (double)sqrtl(s));
  ctx_destroy(ctx);
}

TEST(optim_grad_clip_scales_down_only_above_max) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p[3];
  grad_set(ctx, p, 21, 1.0f); /* norm ≈ √(151038/3) ≈ 224 */
  float *before = host_copy(ctx, p[0]->grad);
  float norm = grad_clip(ctx, p, 3, 1.0f);
  EXPECT(norm > 200.0f && norm < 250.0f, "pre-clip norm %g", norm);
  EXPECT_NEAR(grad_global_norm(ctx, p, 3), 1.0, 2e-6);
  float coef = 1.0f / (norm + 1e-6f), *after = host_copy(ctx, p[0]->grad);
  int bad = 0;
  for (int64_t j = 0; j < p[0]->numel; j++) bad += after[j] != before[j] * coef;
  EXPECT(bad == 0, "%d elements are not g · max_norm / (norm + 1e-6)", bad);
  /* below the threshold nothing changes, bit for bit */
  float *now = host_copy(ctx, p[1]->grad);
  float n2 = grad_clip(ctx, p, 3, 10.0f);
  float *again = host_copy(ctx, p[1]->grad);
  EXPECT_NEAR(n2, 1.0, 2e-6);
  EXPECT(!memcmp(now, again, 37 * sizeof(float)), "a norm below max_norm changed the gradients");
  free(before), free(after), free(now), free(again);
  ctx_destroy(ctx);
}

TEST(optim_grad_clip_bf16_grads) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p = param_new(ctx, "b", DT_BF16, SHAPE(999), true);
  fill_uniform(ctx, p->grad, 3, -1.0f, 1.0f);
  float *g = host_copy(ctx, p->grad);
  double s = 0;
  for (int i = 0; i < 999; i++) s += (double)g[i] * g[i];
  float norm = grad_clip(ctx, &p, 1, 0.5f);
  EXPECT(norm == (float)sqrt(s), "bf16 norm %.9g, expected %.9g", norm, (float)sqrt(s));
  float coef = 0.5f / (norm + 1e-6f);
  const uint16_t *bits = p->grad->data;
  int bad = 0;
  for (int i = 0; i < 999; i++) bad += bits[i] != f32_to_bf16(g[i] * coef);
  EXPECT(bad == 0, "%d bf16 gradients are not round(g · coef)", bad);
  free(g);
  ctx_destroy(ctx);
}

/* Inf or NaN anywhere: the norm says so and the gradients are untouched, so the trainer can
 * skip the step and count it. */
TEST(optim_grad_clip_nonfinite_norm_leaves_grads) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p[3];
  grad_set(ctx, p, 31, 1.0f);
  const float bad_values[2] = {INFINITY, NAN};
  for (int k = 0; k < 2; k++) {
    float *g = host_copy(ctx, p[2]->grad);
    g[17] = bad_values[k];
    tensor_from_host_f32(ctx, p[2]->grad, g);
    float *b0 = host_copy(ctx, p[0]->grad);
    float norm = grad_clip(ctx, p, 3, 1.0f);
    EXPECT(k == 0 ? isinf(norm) : isnan(norm), "norm %g for a gradient holding %g", norm, bad_values[k]);
    float *b1 = host_copy(ctx, p[0]->grad);
    EXPECT(!memcmp(b0, b1, (size_t)p[0]->numel * sizeof(float)), "gradients changed with a non-finite norm");
    free(g), free(b0), free(b1);
  }
  ctx_destroy(ctx);
}

/* ema = μ·ema + (1 − μ)·w per element in fp32 (two rounded products, one rounded sum), over
 * fp32 and bf16 weights; μ = 1 keeps the EMA and μ = 0 copies; ema_copy converts. */
TEST(optim_ema_formula) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *e[2] = {tensor_new_persistent(ctx, DT_F32, SHAPE(3, 33)), tensor_new_persistent(ctx, DT_F32, SHAPE(70001))};
  Tensor *w[2] = {param(ctx, "w32", DT_F32, SHAPE(3, 33), 1), param(ctx, "w16", DT_BF16, SHAPE(70001), 2)};
  const float mus[3] = {0.95f, 0.9999f, 0.5f};
  for (int i = 0; i < 2; i++) fill_uniform(ctx, e[i], 10 + i, -1.0f, 1.0f);
  for (int k = 0; k < 3; k++) {
    float *e0[2], *wh[2];
    for (int i = 0; i < 2; i++) e0[i] = host_copy(ctx, e[i]), wh[i] = host_copy(ctx, w[i]);
    ema_update(ctx, e, w, 2, mus[k]);
    float c = (float)(1.0 - (double)mus[k]);
    for (int i = 0; i < 2; i++) {
      float *got = host_copy(ctx, e[i]);
      int bad = 0;
      for (int64_t j = 0; j < e[i]->numel; j++) {
        float a = mus[k] * e0[i][j], b = c * wh[i][j];
        bad += got[j] != a + b;
      }
      EXPECT(bad == 0, "mu %g, tensor %d: %d elements differ from mu·e + (1 − mu)·w", mus[k], i, bad);
      free(got), free(e0[i]), free(wh[i]);
    }
  }
  float *keep = host_copy(ctx, e[0]);
  ema_update(ctx, e, w, 1, 1.0f);
  float *kept = host_copy(ctx, e[0]);
  EXPECT(!memcmp(keep, kept, 99 * sizeof(float)), "mu = 1 changed the EMA");
  ema_update(ctx, e, w, 2, 0.0f);
  EXPECT(same_bits(ctx, e[0], w[0]), "mu = 0 is not a copy");
  fill_uniform(ctx, e[1], 99, -1.0f, 1.0f);
  ema_copy(ctx, e, w, 2);
  float *c1 = host_copy(ctx, e[1]), *w1 = host_copy(ctx, w[1]);
  EXPECT(!memcmp(c1, w1, 70001 * sizeof(float)), "ema_copy from bf16");
  free(keep), free(kept), free(c1), free(w1);
  ctx_destroy(ctx);
}

TEST(optim_ema_bf16_ema) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *e = param(ctx, "e", DT_BF16, SHAPE(40), 1), *w = param(ctx, "w", DT_F32, SHAPE(40), 2);
  float *e0 = host_copy(ctx, e), *wh = host_copy(ctx, w);
  ema_update(ctx, &e, &w, 1, 0.9f);
  const uint16_t *bits = e->data;
  float c = (float)(1.0 - 0.9f);
  for (int j = 0; j < 40; j++) EXPECT(bits[j] == f32_to_bf16(0.9f * e0[j] + c * wh[j]), "element %d", j);
  free(e0), free(wh);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ checkpoints */

/* A small "model": two fp32 tensors and a bf16 one (the CPU optimizer handles bf16). */
typedef struct Run {
  Ctx *ctx;
  Tensor *p[3];
  AdamW *opt;
} Run;

static Run run_new(uint64_t init_seed) {
  Run r = {.ctx = ctx_create_cpu(1)};
  r.p[0] = param(r.ctx, "net.w", DT_F32, SHAPE(4, 9), init_seed);
  r.p[1] = param(r.ctx, "net.b", DT_F32, SHAPE(9), init_seed + 1);
  r.p[2] = param(r.ctx, "net.h", DT_BF16, SHAPE(2, 3, 5), init_seed + 2);
  r.opt = adamw_create(r.ctx, r.p, 3, (AdamWHyper){3e-2f, 0.9f, 0.99f, 1e-8f, 0.05f});
  return r;
}

/* Step k: gradients from a fixed seed, clip, a decaying learning rate. */
static void run_step(Run *r, int k) {
  for (int i = 0; i < 3; i++) fill_uniform(r->ctx, r->p[i]->grad, 1000 + 10 * k + i, -2.0f, 2.0f);
  grad_clip(r->ctx, r->p, 3, 1.5f);
  adamw_step(r->ctx, r->opt, 3e-2f / (1.0f + 0.1f * k));
}

static void save_run(Run *r, const char *path) {
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < 3; i++) ASSERT(tf_write_tensor(r->ctx, tf, r->p[i], r->p[i]->dtype, &err) == 0, "%s", err.msg);
  ASSERT(checkpoint_save_adamw(r->ctx, tf, "opt", r->opt, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
}

static void load_run(Run *r, const char *path) {
  McmErr err;
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < 3; i++) ASSERT(tf_read_tensor(r->ctx, tf, r->p[i]->name, r->p[i], &err) == 0, "%s", err.msg);
  ASSERT(checkpoint_load_adamw(r->ctx, tf, "opt", r->opt, &err) == 0, "%s", err.msg);
  tf_close(tf);
}

/* 5 steps, save, load into a fresh optimizer (different initial weights, different
 * hyperparameters), 5 more == 10 uninterrupted steps, bit for bit. */
TEST(optim_checkpoint_resume_is_bit_exact) {
  Run a = run_new(1);
  for (int k = 0; k < 10; k++) run_step(&a, k);

  Run b = run_new(1);
  for (int k = 0; k < 5; k++) run_step(&b, k);
  const char *path = TEST_PATH("opt.h5");
  save_run(&b, path);

  Run c = run_new(77);
  c.opt->lr = 0.5f, c.opt->beta2 = 0.5f, c.opt->weight_decay = 0.0f;
  load_run(&c, path);
  EXPECT(c.opt->step == 5 && c.opt->lr == 3e-2f && c.opt->beta2 == 0.99f && c.opt->weight_decay == 0.05f,
         "restored step %lld lr %g beta2 %g wd %g", (long long)c.opt->step, c.opt->lr, c.opt->beta2,
         c.opt->weight_decay);
  for (int k = 5; k < 10; k++) run_step(&c, k);
  for (int i = 0; i < 3; i++) {
    float *x = host_copy(a.ctx, a.p[i]), *y = host_copy(c.ctx, c.p[i]);
    float *ma = host_copy(a.ctx, a.opt->m[i]), *mc = host_copy(c.ctx, c.opt->m[i]);
    float *va = host_copy(a.ctx, a.opt->v[i]), *vc = host_copy(c.ctx, c.opt->v[i]);
    size_t bytes = (size_t)a.p[i]->numel * sizeof(float);
    EXPECT(!memcmp(x, y, bytes) && !memcmp(ma, mc, bytes) && !memcmp(va, vc, bytes),
           "%s: the resumed run differs from the uninterrupted one", a.p[i]->name);
    free(x), free(y), free(ma), free(mc), free(va), free(vc);
  }
  float *ma = host_copy(a.ctx, a.opt->master[2]), *mc = host_copy(c.ctx, c.opt->master[2]);
  EXPECT(!memcmp(ma, mc, 30 * sizeof(float)), "the bf16 parameter's master copy differs after resume");
  free(ma), free(mc);
  ctx_destroy(a.ctx), ctx_destroy(b.ctx), ctx_destroy(c.ctx);
}

/* A bf16 run resumed in fp32 takes the master values; an fp32 run resumed in bf16 starts
 * its master copies from the loaded parameters. */
TEST(optim_checkpoint_crosses_precisions) {
  McmErr err;
  Run b = run_new(1);
  for (int k = 0; k < 3; k++) run_step(&b, k);
  const char *path = TEST_PATH("opt.h5");
  save_run(&b, path);

  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p[3] = {param(ctx, "net.w", DT_F32, SHAPE(4, 9), 5), param(ctx, "net.b", DT_BF16, SHAPE(9), 6),
                  param(ctx, "net.h", DT_F32, SHAPE(2, 3, 5), 7)};
  AdamW *opt = adamw_create(ctx, p, 3, (AdamWHyper){1, 0, 0, 0, 0});
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < 3; i++) ASSERT(tf_read_tensor(ctx, tf, p[i]->name, p[i], &err) == 0, "%s", err.msg);
  ASSERT(checkpoint_load_adamw(ctx, tf, "opt", opt, &err) == 0, "%s", err.msg);
  tf_close(tf);
  EXPECT(same_bits(ctx, p[2], b.opt->master[2]), "the fp32 parameter did not take the saved master values");
  float *m = host_copy(ctx, opt->master[1]), *v = host_copy(ctx, p[1]);
  EXPECT(!memcmp(m, v, 9 * sizeof(float)), "the new master copy does not start at the loaded bf16 values");
  free(m), free(v);
  ctx_destroy(ctx), ctx_destroy(b.ctx);
}

/* Writes a checkpoint of a 2-tensor optimizer; returns its path. */
static const char *small_checkpoint(void) {
  McmErr err;
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p[2] = {param(ctx, "x.w", DT_F32, SHAPE(3, 4), 1), param(ctx, "x.b", DT_F32, SHAPE(4), 2)};
  AdamW *opt = adamw_create(ctx, p, 2, kHyper);
  static char path[512];
  snprintf(path, sizeof path, "%s", TEST_PATH("small.h5"));
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf && checkpoint_save_adamw(ctx, tf, "opt", opt, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  ctx_destroy(ctx);
  return path;
}

static int try_load(const char *path, const char *prefix, Tensor **p, int n, McmErr *err) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *q[4];
  for (int i = 0; i < n; i++) q[i] = param_new(ctx, p[i]->name, DT_F32, p[i]->ndim, p[i]->shape, true);
  AdamW *opt = adamw_create(ctx, q, n, kHyper);
  TensorFile *tf = tf_open(path, err);
  ASSERT(tf, "%s", err->msg);
  int rc = checkpoint_load_adamw(ctx, tf, prefix, opt, err);
  tf_close(tf);
  ctx_destroy(ctx);
  return rc;
}

TEST(optim_checkpoint_mismatches_are_named) {
  const char *path = small_checkpoint();
  McmErr err;
  Tensor w = {.name = "x.w", .ndim = 2, .shape = {3, 4}}, b = {.name = "x.b", .ndim = 1, .shape = {4}};
  Tensor w_bad = {.name = "x.w", .ndim = 2, .shape = {4, 3}}, other = {.name = "y.k", .ndim = 1, .shape = {4}};

  EXPECT(try_load(path, "opt", (Tensor *[]){&w, &b}, 2, &err) == 0, "the matching optimizer failed: %s", err.msg);

  EXPECT(try_load(path, "opt", (Tensor *[]){&w_bad, &b}, 2, &err) == -1, "a wrong shape was accepted");
  EXPECT_STR_CONTAINS(err.msg, "opt/m/x.w");
  EXPECT_STR_CONTAINS(err.msg, "[3, 4]");
  EXPECT_STR_CONTAINS(err.msg, "[4, 3]");

  EXPECT(try_load(path, "opt", (Tensor *[]){&w, &other}, 2, &err) == -1, "a missing tensor was accepted");
  EXPECT_STR_CONTAINS(err.msg, "opt/m/y.k");
  EXPECT_STR_CONTAINS(err.msg, "missing");

  EXPECT(try_load(path, "opt", (Tensor *[]){&w}, 1, &err) == -1, "a checkpoint with more parameters was accepted");
  EXPECT_STR_CONTAINS(err.msg, "2 parameters, this one trains 1");

  EXPECT(try_load(path, "heads", (Tensor *[]){&w, &b}, 2, &err) == -1, "a missing optimizer was accepted");
  EXPECT_STR_CONTAINS(err.msg, "heads.step");
}

/* The right count and every expected tensor, plus state for a parameter we do not train. */
TEST(optim_checkpoint_unknown_state_is_named) {
  McmErr err;
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p[2] = {param(ctx, "x.w", DT_F32, SHAPE(3, 4), 1), param(ctx, "x.extra", DT_F32, SHAPE(4), 2)};
  AdamW *opt = adamw_create(ctx, p, 2, kHyper);
  const char *p2 = TEST_PATH("extra.h5");
  TensorFile *tf = tf_create(p2, &err);
  ASSERT(tf && checkpoint_save_adamw(ctx, tf, "opt", opt, &err) == 0, "%s", err.msg);
  float z[4] = {0};
  ASSERT(tf_write(tf, "opt/v/x.b", DT_F32, SHAPE(4), z, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(p2, &err);
  EXPECT(checkpoint_load_adamw(ctx, tf, "opt", opt, &err) == -1, "unknown optimizer state was accepted");
  EXPECT_STR_CONTAINS(err.msg, "'opt/v/x.b'");
  EXPECT_STR_CONTAINS(err.msg, "does not train");
  tf_close(tf);
  ctx_destroy(ctx);
}

TEST(optim_checkpoint_bad_attribute) {
  McmErr err;
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p = param(ctx, "x.w", DT_F32, SHAPE(3), 1);
  AdamW *opt = adamw_create(ctx, &p, 1, kHyper);
  const char *path = TEST_PATH("attr.h5");
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf && checkpoint_save_adamw(ctx, tf, "opt", opt, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "opt.beta2", "0.99x", &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(path, &err);
  EXPECT(checkpoint_load_adamw(ctx, tf, "opt", opt, &err) == -1, "a bad beta2 was accepted");
  EXPECT_STR_CONTAINS(err.msg, "opt.beta2");
  EXPECT_STR_CONTAINS(err.msg, "0.99x");
  tf_close(tf);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ fatal misuse */

TEST_EXIT_MSG(optim_adamw_refuses_non_persistent, 1, "is not persistent") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *t = tensor_new(ctx, DT_F32, SHAPE(3));
  t->requires_grad = true;
  adamw_create(ctx, &t, 1, kHyper);
}

TEST_EXIT_MSG(optim_adamw_refuses_bad_beta, 1, "betas (0.9, 1)") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p = param(ctx, "w", DT_F32, SHAPE(3), 1);
  adamw_create(ctx, &p, 1, (AdamWHyper){1e-3f, 0.9f, 1.0f, 1e-8f, 0.0f});
}

TEST_EXIT_MSG(optim_ema_shape_mismatch_is_named, 1, "ema_update: tensor 1: ema '(unnamed)' is [4] but the weight 'w1' is [5]") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *e[2] = {tensor_new_persistent(ctx, DT_F32, SHAPE(3)), tensor_new_persistent(ctx, DT_F32, SHAPE(4))};
  Tensor *w[2] = {param(ctx, "w0", DT_F32, SHAPE(3), 1), param(ctx, "w1", DT_F32, SHAPE(5), 2)};
  ema_update(ctx, e, w, 2, 0.95f);
}

TEST_EXIT_MSG(optim_clip_refuses_zero_max_norm, 1, "max_norm 0 must be > 0") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *p = param(ctx, "w", DT_F32, SHAPE(3), 1);
  grad_clip(ctx, &p, 1, 0.0f);
}
