/* Unary math (exp, log, sqrt, square, abs, clamp), broadcasting division, and the fused
 * pseudo-Huber and hinge losses: values against libm and closed forms, gradients against
 * central finite differences (odd sizes, batch > 1, inputs kept away from kinks by more
 * than the step h = 1e-2), PyTorch's choices at the kinks, accumulation, frozen inputs,
 * the differentiable VAE posterior sample, and the fatal paths.
 *
 * The finite-difference loss for shaped outputs is Σ y ⊙ w with fixed random w in [-1, 1],
 * so every output weighs differently and gradients are O(1), well above gradcheck's
 * absolute tolerance; the mean losses are multiplied by n for the same reason. */
#include <string.h>

#include "gradcheck.h"
#include "kernels/math.h" /* until kernels/ops.h includes it */
#include "models/vae.h"
#include "test.h"

/* ------------------------------------------------------------------ helpers */

static Tensor *leaf(Ctx *ctx, int ndim, const int64_t *shape, uint64_t seed, float lo, float hi, bool grad) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, t, seed, lo, hi);
  t->requires_grad = grad;
  return t;
}

static Tensor *from_values(Ctx *ctx, int n, const float *v, bool grad) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, SHAPE(n));
  tensor_from_host_f32(ctx, t, v);
  t->requires_grad = grad;
  return t;
}

static Tensor *weighted_sum(Ctx *ctx, Tensor *y, Tensor *w) { return op_sum(ctx, op_mul(ctx, y, w)); }

/* Moves values within `gap` of `at` away from it, so that x ± h stays on one side. */
static void avoid(Tensor *t, float at, float gap) {
  float *v = t->data;
  for (int64_t i = 0; i < t->numel; i++)
    if (fabsf(v[i] - at) < gap) v[i] = v[i] < at ? at - gap - (at - v[i]) : at + gap + (v[i] - at);
}

/* ------------------------------------------------------------------ unary */

TEST(unary_values_match_libm) {
  Ctx *ctx = ctx_create_cpu(0);
  const float xv[7] = {-2.5f, -1.0f, -0.0f, 0.0f, 0.3f, 1.0f, 7.25f};
  float y[7];
  Tensor *x = from_values(ctx, 7, xv, false);
  tensor_to_host_f32(ctx, op_exp(ctx, x), y);
  for (int i = 0; i < 7; i++) EXPECT(y[i] == expf(xv[i]), "exp(%g) = %.9g", xv[i], y[i]);
  tensor_to_host_f32(ctx, op_square(ctx, x), y);
  for (int i = 0; i < 7; i++) EXPECT(y[i] == xv[i] * xv[i], "square(%g) = %.9g", xv[i], y[i]);
  tensor_to_host_f32(ctx, op_abs(ctx, x), y);
  for (int i = 0; i < 7; i++) EXPECT(y[i] == fabsf(xv[i]) && !signbit(y[i]), "abs(%g) = %.9g", xv[i], y[i]);
  tensor_to_host_f32(ctx, op_clamp(ctx, x, -1.0f, 0.3f), y);
  const float cl[7] = {-1.0f, -1.0f, -0.0f, 0.0f, 0.3f, 0.3f, 0.3f};
  for (int i = 0; i < 7; i++) EXPECT(y[i] == cl[i], "clamp(%g, -1, 0.3) = %.9g", xv[i], y[i]);
  /* log and sqrt on positive values, and at 0 as torch: log 0 = −inf, √0 = 0. */
  const float pv[4] = {0.0f, 0.25f, 1.0f, 1e30f};
  Tensor *p = from_values(ctx, 4, pv, false);
  tensor_to_host_f32(ctx, op_log(ctx, p), y);
  EXPECT(isinf(y[0]) && y[0] < 0, "log(0) = %g, expected -inf", y[0]);
  for (int i = 1; i < 4; i++) EXPECT(y[i] == logf(pv[i]), "log(%g) = %.9g", pv[i], y[i]);
  tensor_to_host_f32(ctx, op_sqrt(ctx, p), y);
  for (int i = 0; i < 4; i++) EXPECT(y[i] == sqrtf(pv[i]), "sqrt(%g) = %.9g", pv[i], y[i]);
  /* Negative input: NaN, as torch. */
  float neg = -1.0f;
  tensor_to_host_f32(ctx, op_log(ctx, from_values(ctx, 1, &neg, false)), y);
  EXPECT(isnan(y[0]), "log(-1) = %g, expected NaN", y[0]);
  ctx_destroy(ctx);
}

TEST(clamp_passes_nan_and_takes_infinite_bounds) {
  Ctx *ctx = ctx_create_cpu(0);
  const float xv[4] = {NAN, -1e30f, 25.0f, -40.0f};
  float y[4];
  Tensor *x = from_values(ctx, 4, xv, false);
  tensor_to_host_f32(ctx, op_clamp(ctx, x, -30.0f, 20.0f), y);
  EXPECT(isnan(y[0]) && y[1] == -30.0f && y[2] == 20.0f && y[3] == -30.0f, "clamp: %g %g %g %g", y[0], y[1], y[2],
         y[3]);
  tensor_to_host_f32(ctx, op_clamp(ctx, x, -INFINITY, 20.0f), y); /* one-sided */
  EXPECT(isnan(y[0]) && y[1] == -1e30f && y[2] == 20.0f && y[3] == -40.0f, "one-sided clamp: %g %g %g %g", y[0], y[1],
         y[2], y[3]);
  ctx_destroy(ctx);
}

typedef struct {
  Unary u;
  float lo, hi; /* the input range (and the clamp's bounds: ±0.7, 0.9) */
} UnaryCase;

static Tensor *unary_apply(Ctx *ctx, Tensor *x, Unary u) {
  return u == UN_CLAMP ? op_clamp(ctx, x, -0.7f, 0.9f) : op_unary(ctx, x, u);
}

static Tensor *unary_loss(Ctx *ctx, Tensor **p, void *user) {
  return weighted_sum(ctx, unary_apply(ctx, p[0], ((UnaryCase *)user)->u), p[1]);
}

TEST(unary_matches_finite_differences) {
  UnaryCase cases[] = {{UN_EXP, -2, 2},   {UN_LOG, 0.2f, 3},  {UN_SQRT, 0.2f, 3},
                       {UN_SQUARE, -2, 2}, {UN_ABS, -2, 2},   {UN_CLAMP, -2, 2}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    Ctx *ctx = ctx_create_cpu(0);
    Tensor *p[2] = {leaf(ctx, SHAPE(3, 5, 7), 11 + k, cases[k].lo, cases[k].hi, true),
                    leaf(ctx, SHAPE(3, 5, 7), 50 + k, -1, 1, false)};
    avoid(p[0], 0.0f, 0.05f); /* abs's kink */
    avoid(p[0], -0.7f, 0.05f); /* the clamp's bounds */
    avoid(p[0], 0.9f, 0.05f);
    EXPECT(gradcheck(ctx, unary_loss, p, 2, &cases[k], (GradcheckOpts){0}) == 0, "%s gradients disagree",
           unary_name(cases[k].u));
    ctx_destroy(ctx);
  }
}

/* PyTorch's choices where the derivative is not defined or not finite. */
TEST(unary_gradients_at_kinks_follow_torch) {
  Ctx *ctx = ctx_create_cpu(0);
  const float xv[5] = {-0.7f, -0.7000001f, 0.0f, 0.9f, 0.90000004f}, ones[5] = {1, 1, 1, 1, 1};
  float g[5];
  Tensor *x = from_values(ctx, 5, xv, true), *dy = from_values(ctx, 5, ones, false);
  backward_from(ctx, op_clamp(ctx, x, -0.7f, 0.9f), dy); /* only lo < x < hi passes: 0 on a bound */
  tensor_to_host_f32(ctx, x->grad, g);
  EXPECT(g[0] == 0 && g[1] == 0 && g[2] == 1 && g[3] == 0 && g[4] == 0, "clamp grads %g %g %g %g %g", g[0], g[1], g[2],
         g[3], g[4]);
  tensor_fill(ctx, x->grad, 0.0f);
  backward_from(ctx, op_abs(ctx, x), dy); /* sign(x), 0 at 0 */
  tensor_to_host_f32(ctx, x->grad, g);
  EXPECT(g[0] == -1 && g[2] == 0 && g[3] == 1, "abs grads %g %g %g", g[0], g[2], g[3]);
  /* log and sqrt at 0: infinite gradients, as torch (1/0 and 1/(2·0)). */
  float zero = 0.0f, one = 1.0f;
  Tensor *z = from_values(ctx, 1, &zero, true), *d1 = from_values(ctx, 1, &one, false);
  backward_from(ctx, op_log(ctx, z), d1);
  tensor_to_host_f32(ctx, z->grad, g);
  EXPECT(isinf(g[0]) && g[0] > 0, "d log / dx at 0 = %g, expected +inf", g[0]);
  tensor_fill(ctx, z->grad, 0.0f);
  backward_from(ctx, op_sqrt(ctx, z), d1);
  tensor_to_host_f32(ctx, z->grad, g);
  EXPECT(isinf(g[0]) && g[0] > 0, "d sqrt / dx at 0 = %g, expected +inf", g[0]);
  ctx_destroy(ctx);
}

TEST(unary_gradients_accumulate) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, SHAPE(2, 3), 5, 0.5f, 2.0f, true);
  float once[6], twice[6], xv[6];
  tensor_to_host_f32(ctx, x, xv);
  backward(ctx, op_sum(ctx, op_log(ctx, x)));
  tensor_to_host_f32(ctx, x->grad, once);
  for (int i = 0; i < 6; i++) EXPECT(once[i] == 1.0f / xv[i], "d log = %g, expected 1/x = %g", once[i], 1 / xv[i]);
  ctx_step_reset(ctx);
  backward(ctx, op_sum(ctx, op_log(ctx, x)));
  tensor_to_host_f32(ctx, x->grad, twice);
  for (int i = 0; i < 6; i++) EXPECT(twice[i] == 2 * once[i], "second backward %g, first %g", twice[i], once[i]);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ division */

typedef struct {
  const char *name;
  int nda, ndb;
  int64_t sa[MCM_MAX_DIMS], sb[MCM_MAX_DIMS];
} DivCase;

/* The models' patterns ((x − mean)/scale over channels, per-map normalisers), both sides
 * broadcasting, a scalar, a broadcasting numerator, 5-D, same shape. */
static const DivCase DIV_CASES[] = {
    {"channels (B,T,C)/(C)", 3, 1, {2, 5, 3}, {3}},
    {"maps (B,C,H,W)/(B,C,1,1)", 4, 4, {2, 3, 5, 4}, {2, 3, 1, 1}},
    {"both (B,1,W)/(1,C,1)", 3, 3, {3, 1, 5}, {1, 3, 1}},
    {"scalar (3,7)/(1)", 2, 1, {3, 7}, {1}},
    {"a broadcasts (C)/(B,T,C)", 1, 3, {3}, {2, 5, 3}},
    {"5-D", 5, 5, {2, 1, 3, 1, 2}, {1, 3, 1, 5, 1}},
    {"same shape", 3, 3, {3, 5, 7}, {3, 5, 7}},
};
#define N_DIV_CASES ((int)(sizeof DIV_CASES / sizeof DIV_CASES[0]))

/* A divisor in ±[0.5, 2): away from 0, both signs. */
static Tensor *divisor(Ctx *ctx, int ndim, const int64_t *shape, uint64_t seed) {
  Tensor *b = leaf(ctx, ndim, shape, seed, -2.0f, 2.0f, true);
  avoid(b, 0.0f, 0.5f);
  return b;
}

static Tensor *div_loss(Ctx *ctx, Tensor **p, void *user) { return weighted_sum(ctx, op_div(ctx, p[0], p[1]), p[2]); }

TEST(div_matches_finite_differences) {
  for (int k = 0; k < N_DIV_CASES; k++) {
    const DivCase *c = &DIV_CASES[k];
    Ctx *ctx = ctx_create_cpu(0);
    Bcast plan;
    ASSERT(bcast_init(&plan, c->nda, c->sa, c->ndb, c->sb, NULL, 0), "%s", c->name);
    Tensor *p[3] = {leaf(ctx, c->nda, c->sa, 31 + k, -1, 1, true), divisor(ctx, c->ndb, c->sb, 41 + k),
                    leaf(ctx, plan.y_ndim, plan.y_shape, 51 + k, -1, 1, false)};
    EXPECT(gradcheck(ctx, div_loss, p, 3, NULL, (GradcheckOpts){0}) == 0, "%s", c->name);
    ctx_destroy(ctx);
  }
}

/* y exactly, and both gradients (in double) against direct loops over y's coordinates. */
TEST(div_matches_direct_loops) {
  for (int k = 0; k < N_DIV_CASES; k++) {
    const DivCase *c = &DIV_CASES[k];
    Ctx *ctx = ctx_create_cpu(0);
    Tensor *a = leaf(ctx, c->nda, c->sa, 61 + k, -1, 1, true), *b = divisor(ctx, c->ndb, c->sb, 71 + k);
    Tensor *y = op_div(ctx, a, b);
    Tensor *dy = leaf(ctx, y->ndim, y->shape, 81 + k, -1, 1, false);
    backward_from(ctx, y, dy);
    int nd = y->ndim;
    int64_t A[MCM_MAX_DIMS], B[MCM_MAX_DIMS]; /* a's and b's sizes aligned to y */
    for (int d = 0; d < nd; d++) {
      A[d] = d - (nd - a->ndim) >= 0 ? a->shape[d - (nd - a->ndim)] : 1;
      B[d] = d - (nd - b->ndim) >= 0 ? b->shape[d - (nd - b->ndim)] : 1;
    }
    double *da = calloc((size_t)a->numel, sizeof(double)), *db = calloc((size_t)b->numel, sizeof(double));
    const float *pa = a->data, *pb = b->data, *py = y->data, *pdy = dy->data;
    int bad = 0;
    for (int64_t i = 0; i < y->numel; i++) {
      int64_t r = i, ia = 0, ib = 0, ma = 1, mb = 1;
      for (int d = nd - 1; d >= 0; d--) {
        int64_t coord = r % y->shape[d];
        r /= y->shape[d];
        if (A[d] > 1) ia += coord * ma;
        if (B[d] > 1) ib += coord * mb;
        ma *= A[d], mb *= B[d];
      }
      if (py[i] != pa[ia] / pb[ib]) bad++;
      da[ia] += (double)pdy[i] / pb[ib];
      db[ib] -= (double)pdy[i] * pa[ia] / ((double)pb[ib] * pb[ib]);
    }
    EXPECT(bad == 0, "%s: %d outputs differ from a / b", c->name, bad);
    const float *ga = a->grad->data, *gb = b->grad->data;
    for (int64_t i = 0; i < a->numel; i++) EXPECT_NEAR(ga[i], da[i], 1e-6 * (1 + fabs(da[i])));
    for (int64_t i = 0; i < b->numel; i++) EXPECT_NEAR(gb[i], db[i], 1e-6 * (1 + fabs(db[i])));
    free(da);
    free(db);
    ctx_destroy(ctx);
  }
}

TEST(div_gradients_accumulate_and_skip_frozen_inputs) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, SHAPE(2, 5, 3), 1, -1, 1, false); /* needs no gradient */
  Tensor *s = divisor(ctx, SHAPE(3), 2);                  /* (C) */
  float once[3], twice[3];
  backward(ctx, op_sum(ctx, op_div(ctx, x, s)));
  tensor_to_host_f32(ctx, s->grad, once);
  const float *px = x->data, *ps = s->data; /* d/ds_c Σ x/s = −Σ_{b,t} x_{btc} / s_c² */
  for (int c = 0; c < 3; c++) {
    double sum = 0;
    for (int j = 0; j < 10; j++) sum += px[j * 3 + c];
    EXPECT_NEAR(once[c], -sum / ((double)ps[c] * ps[c]), 1e-6 * (1 + fabs(sum)) / (ps[c] * ps[c]));
  }
  ctx_step_reset(ctx);
  backward(ctx, op_sum(ctx, op_div(ctx, x, s)));
  tensor_to_host_f32(ctx, s->grad, twice);
  for (int c = 0; c < 3; c++) EXPECT_NEAR(twice[c], 2 * once[c], 1e-6 * (1 + fabsf(once[c])));
  EXPECT(x->grad == NULL, "x needs no gradient but got one");
  ctx_destroy(ctx);
}

TEST(div_by_zero_is_ieee) {
  Ctx *ctx = ctx_create_cpu(0);
  const float av[3] = {1.0f, -1.0f, 0.0f}, bv[3] = {0.0f, 0.0f, 0.0f};
  float y[3];
  tensor_to_host_f32(ctx, op_div(ctx, from_values(ctx, 3, av, false), from_values(ctx, 3, bv, false)), y);
  EXPECT(isinf(y[0]) && y[0] > 0 && isinf(y[1]) && y[1] < 0 && isnan(y[2]), "1/0 %g, -1/0 %g, 0/0 %g", y[0], y[1],
         y[2]);
  ctx_destroy(ctx);
}

TEST(empty_div_is_harmless) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *a = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 0, 3)), *b = divisor(ctx, SHAPE(3), 1);
  a->requires_grad = true;
  Tensor *y = op_div(ctx, a, b);
  CHECK_SHAPE("test", y, 2, 0, 3);
  backward_from(ctx, y, tensor_new(ctx, DT_F32, SHAPE(2, 0, 3)));
  const float *g = b->grad->data;
  EXPECT(g[0] == 0 && g[1] == 0 && g[2] == 0, "an empty numerator gives the divisor no gradient");
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ losses */

TEST(pseudo_huber_value_is_accurate_for_tiny_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  /* d from 1e-7 to 3, c = 0.001 (LCM's): √(d² + c²) − c computed directly in fp32 would lose
   * every digit for d ≲ 1e-5. */
  const float av[6] = {1e-7f, -2e-5f, 1e-3f, 0.25f, -3.0f, 0.5f}, bv[6] = {0, 0, 0, 0, 0, 0.5f};
  const float c = 1e-3f;
  Tensor *a = from_values(ctx, 6, av, true), *b = from_values(ctx, 6, bv, true);
  Tensor *y = op_pseudo_huber(ctx, a, b, c);
  double want = 0;
  for (int i = 0; i < 6; i++) {
    double d = (double)av[i] - bv[i];
    want += sqrt(d * d + (double)c * c) - c;
  }
  want /= 6;
  EXPECT_NEAR(((float *)y->data)[0], want, 2e-7 * want);
  /* Each term alone, where the cancellation would be worst. */
  for (int i = 0; i < 2; i++) {
    double d = av[i], t = d * d / (sqrt(d * d + (double)c * c) + c);
    Tensor *yi = op_pseudo_huber(ctx, from_values(ctx, 1, &av[i], false), from_values(ctx, 1, &bv[i], false), c);
    EXPECT_NEAR(((float *)yi->data)[0], t, 1e-6 * t);
  }
  backward(ctx, y);
  const float *ga = a->grad->data, *gb = b->grad->data;
  for (int i = 0; i < 6; i++) {
    double d = (double)av[i] - bv[i], g = d / sqrt(d * d + (double)c * c) / 6;
    EXPECT_NEAR(ga[i], g, 1e-6 * fabs(g) + 1e-12);
    EXPECT(gb[i] == -ga[i], "db = %g, -da = %g", gb[i], -ga[i]);
  }
  ctx_destroy(ctx);
}

typedef struct {
  float c;
  float n;
} HuberCase;

static Tensor *huber_loss(Ctx *ctx, Tensor **p, void *user) {
  HuberCase *h = user;
  return op_scale(ctx, op_pseudo_huber(ctx, p[0], p[1], h->c), h->n);
}

/* c = 0.5 and 2: the third derivative grows like 1/c², so the c = 0.001 regime is checked
 * against the closed form above, not by finite differences with h = 1e-2. */
TEST(pseudo_huber_matches_finite_differences) {
  HuberCase cases[] = {{0.5f, 105}, {2.0f, 105}};
  for (int k = 0; k < 2; k++) {
    Ctx *ctx = ctx_create_cpu(0);
    Tensor *p[2] = {leaf(ctx, SHAPE(3, 5, 7), 3 + k, -2, 2, true), leaf(ctx, SHAPE(3, 5, 7), 9 + k, -2, 2, true)};
    EXPECT(gradcheck(ctx, huber_loss, p, 2, &cases[k], (GradcheckOpts){0}) == 0, "c = %g", cases[k].c);
    /* A frozen target gets nothing, the prediction still does. */
    p[1] = leaf(ctx, SHAPE(3, 5, 7), 9 + k, -2, 2, false);
    EXPECT(gradcheck(ctx, huber_loss, p, 2, &cases[k], (GradcheckOpts){0}) == 0, "c = %g, frozen b", cases[k].c);
    ctx_destroy(ctx);
  }
}

static Tensor *hinge_loss(Ctx *ctx, Tensor **p, void *user) {
  float sign = *(float *)user;
  return op_scale(ctx, op_hinge(ctx, p[0], sign), (float)p[0]->numel);
}

TEST(hinge_matches_finite_differences) {
  float signs[2] = {1.0f, -1.0f};
  for (int k = 0; k < 2; k++) {
    Ctx *ctx = ctx_create_cpu(0);
    Tensor *x = leaf(ctx, SHAPE(3, 5, 7), 21 + k, -3, 3, true);
    avoid(x, -signs[k], 0.05f); /* the kink where 1 + sign·x = 0 */
    EXPECT(gradcheck(ctx, hinge_loss, &x, 1, &signs[k], (GradcheckOpts){0}) == 0, "sign %g", signs[k]);
    ctx_destroy(ctx);
  }
}

TEST(hinge_values_and_kink_follow_torch) {
  Ctx *ctx = ctx_create_cpu(0);
  const float xv[5] = {-3.0f, -1.0f, -0.25f, 1.0f, 2.0f};
  Tensor *x = from_values(ctx, 5, xv, true);
  /* fake (sign +1): relu(1 + x) = 0, 0, 0.75, 2, 3; real (sign −1): relu(1 − x) = 4, 2, 1.25, 0, 0 */
  Tensor *fake = op_hinge(ctx, x, 1.0f), *real = op_hinge(ctx, x, -1.0f);
  EXPECT_NEAR(((float *)fake->data)[0], 5.75 / 5, 1e-7);
  EXPECT_NEAR(((float *)real->data)[0], 7.25 / 5, 1e-7);
  backward(ctx, op_add(ctx, fake, real));
  float g[5];
  tensor_to_host_f32(ctx, x->grad, g);
  /* relu's gradient is 0 at 0: x = −1 (fake) and x = 1 (real) get nothing from that term. */
  const float want[5] = {-0.2f, -0.2f, 0.0f, 0.2f, 0.2f};
  for (int i = 0; i < 5; i++) EXPECT_NEAR(g[i], want[i], 1e-7);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ the VAE posterior sample */

typedef struct {
  uint64_t offset;
} SampleCase;

/* Σ z ⊙ w with the same ε on every evaluation (the RNG offset is rewound). */
static Tensor *sample_loss(Ctx *ctx, Tensor **p, void *user) {
  ctx->rng_offset = ((SampleCase *)user)->offset;
  return weighted_sum(ctx, vae_sample(ctx, p[0], p[1]), p[2]);
}

TEST(vae_sample_has_a_reparameterisation_gradient) {
  Ctx *ctx = ctx_create_cpu(7);
  SampleCase sc = {ctx->rng_offset};
  Tensor *p[3] = {leaf(ctx, SHAPE(2, 3, 4, 5), 1, -1, 1, true), leaf(ctx, SHAPE(2, 3, 4, 5), 2, -3, 3, true),
                  leaf(ctx, SHAPE(2, 3, 4, 5), 3, -1, 1, false)};
  EXPECT(gradcheck(ctx, sample_loss, p, 3, &sc, (GradcheckOpts){0}) == 0, "vae_sample gradients disagree");
  /* Where the clamp is active the log-variance gets no gradient; the mean still does. */
  float lv[2] = {25.0f, -35.0f}, m[2] = {0, 0};
  Tensor *mean = from_values(ctx, 2, m, true), *logvar = from_values(ctx, 2, lv, true);
  backward(ctx, op_sum(ctx, vae_sample(ctx, mean, logvar)));
  const float *gl = logvar->grad->data, *gm = mean->grad->data;
  EXPECT(gl[0] == 0 && gl[1] == 0, "clamped logvar got gradients %g %g", gl[0], gl[1]);
  EXPECT(gm[0] == 1 && gm[1] == 1, "dz/dmean = %g %g, expected 1", gm[0], gm[1]);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ fatal paths */

TEST_EXIT_MSG(clamp_bounds_must_be_ordered, 1, "clamp: bounds [2, 1]; expected lo <= hi, neither NaN") {
  Ctx *ctx = ctx_create_cpu(0);
  op_clamp(ctx, tensor_zeros(ctx, DT_F32, SHAPE(3)), 2.0f, 1.0f);
}

TEST_EXIT_MSG(op_unary_refuses_clamp_without_bounds, 1, "op_unary: clamp needs its bounds (hint: call op_clamp)") {
  Ctx *ctx = ctx_create_cpu(0);
  op_unary(ctx, tensor_zeros(ctx, DT_F32, SHAPE(3)), UN_CLAMP);
}

TEST_EXIT_MSG(unary_on_int32_is_a_clear_error, 1, "exp: x is int32, expected fp32 or bf16") {
  Ctx *ctx = ctx_create_cpu(0);
  op_exp(ctx, tensor_new(ctx, DT_I32, SHAPE(4)));
}

TEST_EXIT_MSG(div_shapes_that_do_not_broadcast_are_fatal, 1,
              "div: a has shape [2, 3] and b has shape [4, 1, 2], which do not broadcast") {
  Ctx *ctx = ctx_create_cpu(0);
  op_div(ctx, tensor_zeros(ctx, DT_F32, SHAPE(2, 3)), tensor_zeros(ctx, DT_F32, SHAPE(4, 1, 2)));
}

TEST_EXIT_MSG(div_dtypes_must_match, 1, "div: dtypes fp32 and bf16 differ") {
  Ctx *ctx = ctx_create_cpu(0);
  op_div(ctx, tensor_zeros(ctx, DT_F32, SHAPE(2)), tensor_new(ctx, DT_BF16, SHAPE(2)));
}

TEST_EXIT_MSG(pseudo_huber_needs_same_shapes, 1, "pseudo_huber") {
  Ctx *ctx = ctx_create_cpu(0);
  op_pseudo_huber(ctx, tensor_zeros(ctx, DT_F32, SHAPE(2, 3)), tensor_zeros(ctx, DT_F32, SHAPE(3, 2)), 0.001f);
}

TEST_EXIT_MSG(pseudo_huber_needs_a_positive_c, 1, "pseudo_huber: c = 0, expected a positive number") {
  Ctx *ctx = ctx_create_cpu(0);
  op_pseudo_huber(ctx, tensor_zeros(ctx, DT_F32, SHAPE(2)), tensor_zeros(ctx, DT_F32, SHAPE(2)), 0.0f);
}

TEST_EXIT_MSG(hinge_sign_is_plus_or_minus_one, 1, "hinge: sign = 0.5, expected +1 (fake logits) or -1") {
  Ctx *ctx = ctx_create_cpu(0);
  op_hinge(ctx, tensor_zeros(ctx, DT_F32, SHAPE(2)), 0.5f);
}

TEST_EXIT_MSG(hinge_of_nothing_is_fatal, 1, "hinge: x is empty ([0]); its mean is undefined") {
  Ctx *ctx = ctx_create_cpu(0);
  op_hinge(ctx, tensor_zeros(ctx, DT_F32, SHAPE(0)), 1.0f);
}
