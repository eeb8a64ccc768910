/* AdamW, gradient clipping and EMA against PyTorch (tests/fixtures/ops_optim.py):
 * torch.optim.AdamW over 3–5 steps (weight decay with a decaying learning rate and a
 * tensor whose gradients are 1e-7 so eps matters; the heads' β1 = 0; the student's lr
 * 1e-5), torch.nn.utils.clip_grad_norm_ above and below the threshold, and an EMA.
 *
 * Tolerances (relative L2 error; both sides fp32; measured errors in brackets):
 *  - AdamW parameters, m and v: mcm repeats PyTorch's operations in its order with the
 *    same fp32 rounding of the scalars and the same fused multiply-adds, so the results
 *    are bit-identical except where PyTorch's vectorised sqrt is 1 ulp off the correctly
 *    rounded one (~0.6 % of elements on 1e5 random values; none in these small tensors),
 *    which moves an update by ~1 ulp of its size. 1e-6 [0: bit-identical in all 12 steps].
 *  - The parameter change p_t − p_0, which is what a wrong term would damage (with lr 1e-5
 *    the parameters barely move, so their own error says little): 1e-4 relative to the
 *    change's norm [0]. A sqrt 1 ulp off moves an update of ~1e-5 by ~1e-12, which flips
 *    the rounding of p (ulp ~1e-7) in about one element in 10⁵; a wrong bias correction,
 *    eps placement or decay moves the change by ≥ 1e-2.
 *  - clip: the norm is summed in double by mcm and in fp32 by PyTorch (≤ 29 terms), a few
 *    ulp apart; the clipped gradients carry that through the coefficient: 1e-6 [0].
 *  - EMA: mcm rounds μ·e and (1−μ)·w, PyTorch may fuse the second into the add: ≤ 1 ulp
 *    per update; 1e-6 [≤ 2.3e-8]. */
#include "fixture.h"
#include "kernels/optim.h"
#include "test.h"

#define FIX "tests/fixtures/ops_optim.h5"

static const char *const kNames[3] = {"a", "b", "c"};

static char *key(char *buf, const char *cas, const char *name) {
  snprintf(buf, 128, "%s/%s", cas, name);
  return buf;
}
#define KEY(cas, name) key((char[128]){0}, (cas), (name))

/* A fixture's values loaded into an existing tensor (shapes must match). */
static void load_into(Ctx *ctx, Fixture *fx, const char *name, Tensor *t) {
  int64_t n;
  float *v = fixture_values(fx, name, &n);
  ASSERT(n == t->numel, "%s: %lld values for a tensor of %lld", name, (long long)n, (long long)t->numel);
  tensor_from_host_f32(ctx, t, v);
  free(v);
}

/* ‖(got − p0) − (ref − p0)‖ / ‖ref − p0‖ */
static double delta_error(Ctx *ctx, Fixture *fx, const char *ref_name, const float *p0, const Tensor *got) {
  int64_t n;
  float *ref = fixture_values(fx, ref_name, &n);
  float *g = MALLOC_CHECK((size_t)n * sizeof(float));
  tensor_to_host_f32(ctx, got, g);
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double dr = (double)ref[i] - p0[i], dg = (double)g[i] - p0[i];
    num += (dg - dr) * (dg - dr);
    den += dr * dr;
  }
  free(ref), free(g);
  return sqrt(num) / (sqrt(den) > 1e-30 ? sqrt(den) : 1e-30);
}

static void check_adamw_case(const char *cas) {
  Ctx *ctx = ctx_create_cpu(1);
  Fixture *fx = fixture_open(FIX);
  int64_t n_lr, n_h;
  float *lrs = fixture_values(fx, KEY(cas, "lr"), &n_lr);
  float *h = fixture_values(fx, KEY(cas, "hyper"), &n_h);
  ASSERT(n_h == 4, "hyper has %lld values", (long long)n_h);
  Tensor *p[3];
  float *p0[3];
  char name[128];
  for (int i = 0; i < 3; i++) {
    snprintf(name, sizeof name, "%s/init/%s", cas, kNames[i]);
    Tensor *init = fixture_tensor(ctx, fx, name, false);
    p[i] = param_new(ctx, kNames[i], DT_F32, init->ndim, init->shape, true);
    tensor_copy(ctx, p[i], init);
    int64_t n;
    p0[i] = fixture_values(fx, name, &n);
  }
  AdamW *opt = adamw_create(ctx, p, 3, (AdamWHyper){lrs[0], h[0], h[1], h[2], h[3]});
  for (int k = 0; k < n_lr; k++) {
    for (int i = 0; i < 3; i++) {
      snprintf(name, sizeof name, "%s/step%d/grad_%s", cas, k, kNames[i]);
      load_into(ctx, fx, name, p[i]->grad);
    }
    adamw_step(ctx, opt, lrs[k]);
    for (int i = 0; i < 3; i++) {
      snprintf(name, sizeof name, "%s/step%d/param_%s", cas, k, kNames[i]);
      fixture_expect(ctx, fx, name, p[i], 1e-6);
      double e = delta_error(ctx, fx, name, p0[i], p[i]);
      EXPECT(e <= 1e-4, "%s: the change p - p0 differs from PyTorch's by %.3g relative (tol 1e-4)", name, e);
    }
  }
  for (int i = 0; i < 3; i++) {
    snprintf(name, sizeof name, "%s/m_%s", cas, kNames[i]);
    fixture_expect(ctx, fx, name, opt->m[i], 1e-6);
    snprintf(name, sizeof name, "%s/v_%s", cas, kNames[i]);
    fixture_expect(ctx, fx, name, opt->v[i], 1e-6);
    free(p0[i]);
  }
  EXPECT(opt->step == n_lr, "step %lld after %lld steps", (long long)opt->step, (long long)n_lr);
  free(lrs), free(h);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_adamw_weight_decay) { check_adamw_case("adamw_wd"); }
TEST(fixture_adamw_heads_beta1_zero) { check_adamw_case("adamw_heads"); }
TEST(fixture_adamw_student) { check_adamw_case("adamw_student"); }

static void check_clip_case(const char *cas, bool clipped) {
  Ctx *ctx = ctx_create_cpu(1);
  Fixture *fx = fixture_open(FIX);
  Tensor *p[3];
  char name[128];
  for (int i = 0; i < 3; i++) {
    snprintf(name, sizeof name, "%s/grad_%s", cas, kNames[i]);
    Tensor *g = fixture_tensor(ctx, fx, name, false);
    p[i] = param_new(ctx, kNames[i], DT_F32, g->ndim, g->shape, true);
    tensor_copy(ctx, p[i]->grad, g);
  }
  int64_t n;
  float *max_norm = fixture_values(fx, KEY(cas, "max_norm"), &n);
  float *ref_norm = fixture_values(fx, KEY(cas, "norm"), &n);
  float norm = grad_clip(ctx, p, 3, max_norm[0]);
  EXPECT_NEAR(norm, ref_norm[0], 1e-6 * ref_norm[0]);
  EXPECT(clipped == (ref_norm[0] > max_norm[0]), "%s: the case does not test what it says", cas);
  for (int i = 0; i < 3; i++) {
    snprintf(name, sizeof name, "%s/clipped_%s", cas, kNames[i]);
    fixture_expect(ctx, fx, name, p[i]->grad, 1e-6);
  }
  if (clipped) EXPECT_NEAR(grad_global_norm(ctx, p, 3), max_norm[0], 2e-6 * max_norm[0]);
  free(max_norm), free(ref_norm);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_clip_grad_norm_clips) { check_clip_case("clip_big", true); }
TEST(fixture_clip_grad_norm_below_threshold) { check_clip_case("clip_small", false); }

static void check_ema_case(const char *cas, int updates) {
  Ctx *ctx = ctx_create_cpu(1);
  Fixture *fx = fixture_open(FIX);
  Tensor *ema = fixture_tensor(ctx, fx, KEY(cas, "init"), false);
  int64_t n;
  float *mu = fixture_values(fx, KEY(cas, "mu"), &n);
  char name[128];
  for (int k = 0; k < updates; k++) {
    snprintf(name, sizeof name, "%s/w%d", cas, k);
    Tensor *w = fixture_tensor(ctx, fx, name, false);
    ema_update(ctx, &ema, &w, 1, mu[0]);
  }
  fixture_expect(ctx, fx, KEY(cas, "out"), ema, 1e-6);
  free(mu);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_ema_095) { check_ema_case("ema_095", 4); }
TEST(fixture_ema_09999) { check_ema_case("ema_09999", 3); }
