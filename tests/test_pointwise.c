/* Activations (SiLU, ReLU, tanh, GELU, LeakyReLU, GEGLU) and broadcasting elementwise ops
 * (add, sub, mul, add_scaled): values against closed forms and direct loops, gradients
 * against central finite differences (odd sizes, batch > 1), broadcast plans, accumulation,
 * and the fatal paths. The finite-difference loss is Σ y ⊙ w with fixed random weights w in
 * [-1, 1]: every output weighs differently and the gradients are O(1), well above
 * gradcheck's absolute tolerance (a mean-type loss would shrink them by 1/n below it). */
#include "gradcheck.h"
#include "test.h"

/* ------------------------------------------------------------------ helpers */

static Tensor *leaf(Ctx *ctx, int ndim, const int64_t *shape, uint64_t seed, float lo, float hi, bool grad) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, t, seed, lo, hi);
  t->requires_grad = grad;
  return t;
}

/* Σ y ⊙ w (same shapes: the flat path, checked exactly in same_shape_ops_are_exact). */
static Tensor *weighted_sum(Ctx *ctx, Tensor *y, Tensor *w) { return op_sum(ctx, op_mul(ctx, y, w)); }

/* Moves values within `gap` of a kink at 0 away from it, so that x ± h stays on one side. */
static void avoid_zero(Tensor *t, float gap) {
  float *v = t->data;
  for (int64_t i = 0; i < t->numel; i++)
    if (fabsf(v[i]) < gap) v[i] = v[i] < 0 ? v[i] - gap : v[i] + gap;
}

/* ------------------------------------------------------------------ activations */

TEST(gelu_and_leaky_relu_values) {
  Ctx *ctx = ctx_create_cpu(0);
  float xv[5] = {-3.0f, -1.0f, 0.0f, 0.5f, 2.0f}, y[5];
  /* x·Φ(x) from the normal CDF: Φ(-3) = 0.0013498980, Φ(-1) = 0.1586552539, Φ(0.5) =
   * 0.6914624613, Φ(2) = 0.9772498681. */
  const double gelu[5] = {-3 * 0.0013498980316301, -0.1586552539314571, 0.0, 0.5 * 0.6914624612740131,
                          2 * 0.9772498680518208};
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(5));
  tensor_from_host_f32(ctx, x, xv);
  tensor_to_host_f32(ctx, op_gelu(ctx, x), y);
  for (int i = 0; i < 5; i++) EXPECT_NEAR(y[i], gelu[i], 2e-7 * (1 + fabs(gelu[i])));
  tensor_to_host_f32(ctx, op_leaky_relu(ctx, x, 0.2f), y);
  for (int i = 0; i < 5; i++) EXPECT(y[i] == (xv[i] > 0 ? xv[i] : 0.2f * xv[i]), "leaky_relu(%g) = %g", xv[i], y[i]);
  tensor_to_host_f32(ctx, op_act(ctx, x, ACT_LEAKY_RELU), y); /* torch's default slope */
  EXPECT(y[0] == 0.01f * -3.0f, "op_act's leaky_relu slope should be 0.01, got %g", y[0] / -3.0);
  ctx_destroy(ctx);
}

typedef struct {
  Act act;
  float slope;
} ActCase;

static Tensor *act_loss(Ctx *ctx, Tensor **p, void *user) {
  ActCase *c = user;
  Tensor *y = c->act == ACT_LEAKY_RELU ? op_leaky_relu(ctx, p[0], c->slope) : op_act(ctx, p[0], c->act);
  return weighted_sum(ctx, y, p[1]);
}

TEST(activations_match_finite_differences) {
  ActCase cases[] = {{ACT_SILU, 0}, {ACT_RELU, 0}, {ACT_TANH, 0}, {ACT_GELU, 0}, {ACT_LEAKY_RELU, 0.2f},
                     {ACT_LEAKY_RELU, -0.3f}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    Ctx *ctx = ctx_create_cpu(0);
    Tensor *p[2] = {leaf(ctx, SHAPE(3, 5, 7), 11 + k, -3, 3, true), leaf(ctx, SHAPE(3, 5, 7), 50 + k, -1, 1, false)};
    avoid_zero(p[0], 0.05f); /* ReLU and LeakyReLU have a kink at 0 */
    EXPECT(gradcheck(ctx, act_loss, p, 2, &cases[k], (GradcheckOpts){0}) == 0, "%s (slope %g) gradients disagree",
           act_name(cases[k].act), cases[k].slope);
    ctx_destroy(ctx);
  }
}

TEST(geglu_forward_is_value_times_gelu_of_gate) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, SHAPE(2, 3, 10), 3, -3, 3, false); /* (B, T, 2C), C = 5 */
  Tensor *y = op_geglu(ctx, x);
  CHECK_SHAPE("test", y, 2, 3, 5);
  Tensor *g = op_gelu(ctx, x);
  const float *X = x->data, *G = g->data, *Y = y->data;
  for (int r = 0; r < 6; r++)
    for (int c = 0; c < 5; c++) EXPECT(Y[r * 5 + c] == X[r * 10 + c] * G[r * 10 + 5 + c], "geglu row %d col %d", r, c);
  ctx_destroy(ctx);
}

static Tensor *geglu_loss(Ctx *ctx, Tensor **p, void *user) { return weighted_sum(ctx, op_geglu(ctx, p[0]), p[1]); }

TEST(geglu_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[2] = {leaf(ctx, SHAPE(3, 5, 14), 21, -3, 3, true), leaf(ctx, SHAPE(3, 5, 7), 22, -1, 1, false)};
  EXPECT(gradcheck(ctx, geglu_loss, p, 2, NULL, (GradcheckOpts){0}) == 0, "geglu gradients disagree");
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(geglu_needs_an_even_last_dimension, 1, "geglu: x has shape [2, 7], its last dimension must be even") {
  Ctx *ctx = ctx_create_cpu(0);
  op_geglu(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 7)));
}

TEST_EXIT_MSG(leaky_relu_on_int32_is_a_clear_error, 1, "leaky_relu: x is int32, expected fp32 or bf16") {
  Ctx *ctx = ctx_create_cpu(0);
  op_leaky_relu(ctx, tensor_new(ctx, DT_I32, SHAPE(4)), 0.2f);
}

/* ------------------------------------------------------------------ broadcast plans */

TEST(bcast_plan_merges_dimensions) {
  Bcast bc;
  /* x (2, 3, 5, 4) + emb (2, 3, 1, 1): (6, 20), emb strides (1, 0). */
  ASSERT(bcast_init(&bc, SHAPE(2, 3, 5, 4), SHAPE(2, 3, 1, 1), NULL, 0), "should broadcast");
  EXPECT(bc.ndim == 2 && bc.shape[0] == 6 && bc.shape[1] == 20, "merged to %d dims [%lld, %lld]", bc.ndim,
         (long long)bc.shape[0], (long long)bc.shape[1]);
  EXPECT(bc.sa[0] == 20 && bc.sa[1] == 1 && bc.sb[0] == 1 && bc.sb[1] == 0, "strides a (%lld, %lld) b (%lld, %lld)",
         (long long)bc.sa[0], (long long)bc.sa[1], (long long)bc.sb[0], (long long)bc.sb[1]);
  EXPECT(bc.y_ndim == 4 && bc.n == 120, "y rank %d, %lld elements", bc.y_ndim, (long long)bc.n);
  /* Same shapes: one flat dimension. */
  ASSERT(bcast_init(&bc, SHAPE(2, 3, 5), SHAPE(2, 3, 5), NULL, 0), "same shapes broadcast");
  EXPECT(bcast_is_flat(&bc) && bc.shape[0] == 30, "same shapes should be flat");
  /* (2, 1, 4) + (1, 3, 1) -> (2, 3, 4): nothing merges. */
  ASSERT(bcast_init(&bc, SHAPE(2, 1, 4), SHAPE(1, 3, 1), NULL, 0), "both sides broadcast");
  EXPECT(bc.ndim == 3 && bc.y_shape[1] == 3 && bc.sa[1] == 0 && bc.sb[0] == 0 && bc.sb[2] == 0 && bc.sa[2] == 1,
         "plan for (2,1,4)+(1,3,1)");
  /* A gradient plan: emb's gradient sums 20 terms for each of its 6 elements. */
  BcastGrad g;
  ASSERT(bcast_init(&bc, SHAPE(2, 3, 5, 4), SHAPE(2, 3, 1, 1), NULL, 0), "bcast_init rejected (2,3,5,4) + (2,3,1,1)");
  bcast_grad_init(&g, &bc, 1);
  EXPECT(g.n == 6 && g.m == 20 && g.nk == 1 && g.nr == 1, "emb gradient plan n %lld m %lld", (long long)g.n,
         (long long)g.m);
  char why[160];
  EXPECT(!bcast_init(&bc, SHAPE(2, 3), SHAPE(4, 1, 2), why, sizeof why), "[2,3] and [4,1,2] must not broadcast");
  EXPECT_STR_CONTAINS(why, "sizes 3 and 2 at dimension -1");
}

/* ------------------------------------------------------------------ broadcasting ops */

typedef struct {
  const char *name;
  int nda, ndb;
  int64_t sa[MCM_MAX_DIMS], sb[MCM_MAX_DIMS];
} BcastCase;

/* Patterns from the models: time embedding, per-channel scale over tokens, both sides
 * broadcasting, different ranks, a scalar, a broadcasting first operand, 5-D, same shape. */
static const BcastCase BCAST_CASES[] = {
    {"time_emb (B,C,H,W)+(B,C,1,1)", 4, 4, {2, 3, 5, 4}, {2, 3, 1, 1}},
    {"tokens (B,T,C)*(C)", 3, 1, {2, 5, 3}, {3}},
    {"both (B,1,W)+(1,C,1)", 3, 3, {2, 1, 4}, {1, 3, 1}},
    {"ranks (3,1,5)+(4,1)", 3, 2, {3, 1, 5}, {4, 1}},
    {"scalar (2,3)+(1)", 2, 1, {2, 3}, {1}},
    {"a broadcasts (C)+(B,T,C)", 1, 3, {3}, {2, 5, 3}},
    {"5-D", 5, 5, {2, 1, 3, 1, 2}, {1, 4, 1, 5, 1}},
    {"middle (B,1,W)+(B,H,W)", 3, 3, {3, 1, 5}, {3, 4, 5}},
    {"same shape", 3, 3, {3, 4, 5}, {3, 4, 5}},
};
#define N_BCAST_CASES ((int)(sizeof BCAST_CASES / sizeof BCAST_CASES[0]))

typedef struct {
  int kind; /* a Binary, or 3 for add_scaled */
  float alpha, beta;
} BinCase;

static Tensor *run_bin(Ctx *ctx, Tensor *a, Tensor *b, const BinCase *c) {
  return c->kind == 3 ? op_add_scaled(ctx, a, b, c->alpha, c->beta) : op_binary(ctx, a, b, (Binary)c->kind);
}

static Tensor *bin_loss(Ctx *ctx, Tensor **p, void *user) {
  return weighted_sum(ctx, run_bin(ctx, p[0], p[1], user), p[2]);
}

static const BinCase BIN_CASES[] = {{BIN_ADD, 1, 1}, {BIN_SUB, 1, -1}, {BIN_MUL, 1, 1}, {3, 0.7071f, -1.3f}};

TEST(broadcast_binary_matches_finite_differences) {
  for (int k = 0; k < N_BCAST_CASES; k++)
    for (int o = 0; o < 4; o++) {
      const BcastCase *bc = &BCAST_CASES[k];
      Ctx *ctx = ctx_create_cpu(0);
      Bcast plan;
      ASSERT(bcast_init(&plan, bc->nda, bc->sa, bc->ndb, bc->sb, NULL, 0), "%s", bc->name);
      Tensor *p[3] = {leaf(ctx, bc->nda, bc->sa, 31 + k, -1, 1, true), leaf(ctx, bc->ndb, bc->sb, 41 + k, -1, 1, true),
                      leaf(ctx, plan.y_ndim, plan.y_shape, 51 + k, -1, 1, false)};
      EXPECT(gradcheck(ctx, bin_loss, p, 3, (void *)&BIN_CASES[o], (GradcheckOpts){0}) == 0, "%s, op %d",
             bc->name, o);
      ctx_destroy(ctx);
    }
}

/* y and both gradients against direct index loops over y's coordinates. */
TEST(broadcast_binary_matches_direct_loops) {
  for (int k = 0; k < N_BCAST_CASES; k++)
    for (int o = 0; o < 4; o++) {
      const BcastCase *bc = &BCAST_CASES[k];
      const BinCase *c = &BIN_CASES[o];
      Ctx *ctx = ctx_create_cpu(0);
      Tensor *a = leaf(ctx, bc->nda, bc->sa, 61 + k, -1, 1, true), *b = leaf(ctx, bc->ndb, bc->sb, 71 + k, -1, 1, true);
      Tensor *y = run_bin(ctx, a, b, c);
      Tensor *dy = leaf(ctx, y->ndim, y->shape, 81 + k, -1, 1, false);
      backward_from(ctx, y, dy);
      int nd = y->ndim;
      int64_t A[MCM_MAX_DIMS], B[MCM_MAX_DIMS]; /* a's and b's sizes aligned to y */
      for (int d = 0; d < nd; d++) {
        A[d] = d - (nd - a->ndim) >= 0 ? a->shape[d - (nd - a->ndim)] : 1;
        B[d] = d - (nd - b->ndim) >= 0 ? b->shape[d - (nd - b->ndim)] : 1;
      }
      double *ga = calloc(a->numel, sizeof(double)), *gb = calloc(b->numel, sizeof(double));
      const float *pa = a->data, *pb = b->data, *py = y->data, *pdy = dy->data;
      for (int64_t i = 0; i < y->numel; i++) {
        int64_t r = i, ia = 0, ib = 0, ma = 1, mb = 1;
        for (int d = nd - 1; d >= 0; d--) {
          int64_t cd = r % y->shape[d];
          r /= y->shape[d];
          ia += (A[d] == 1 ? 0 : cd) * ma, ma *= A[d];
          ib += (B[d] == 1 ? 0 : cd) * mb, mb *= B[d];
        }
        float want = c->kind == BIN_MUL ? pa[ia] * pb[ib] : c->alpha * pa[ia] + c->beta * pb[ib];
        EXPECT(py[i] == want, "%s op %d: y[%lld] = %.9g, expected %.9g", bc->name, o, (long long)i, py[i], want);
        ga[ia] += c->kind == BIN_MUL ? (double)pdy[i] * pb[ib] : c->alpha * (double)pdy[i];
        gb[ib] += c->kind == BIN_MUL ? (double)pdy[i] * pa[ia] : c->beta * (double)pdy[i];
      }
      const float *gda = a->grad->data, *gdb = b->grad->data;
      for (int64_t i = 0; i < a->numel; i++) EXPECT_NEAR(gda[i], ga[i], 1e-6 * (1 + fabs(ga[i])));
      for (int64_t i = 0; i < b->numel; i++) EXPECT_NEAR(gdb[i], gb[i], 1e-6 * (1 + fabs(gb[i])));
      free(ga), free(gb);
      ctx_destroy(ctx);
    }
}

TEST(same_shape_ops_are_exact) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *a = leaf(ctx, SHAPE(4, 9), 1, -2, 2, true), *b = leaf(ctx, SHAPE(4, 9), 2, -2, 2, true);
  const float *pa = a->data, *pb = b->data;
  const float *add = op_add(ctx, a, b)->data, *sub = op_sub(ctx, a, b)->data, *mul = op_mul(ctx, a, b)->data;
  for (int i = 0; i < 36; i++) {
    EXPECT(add[i] == pa[i] + pb[i], "add[%d]", i);
    EXPECT(sub[i] == pa[i] - pb[i], "sub[%d]", i);
    EXPECT(mul[i] == pa[i] * pb[i], "mul[%d]", i);
  }
  ctx_destroy(ctx);
}

TEST(broadcast_gradients_accumulate_and_skip_frozen_inputs) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, SHAPE(2, 3, 5, 4), 1, -1, 1, false);  /* needs no gradient */
  Tensor *emb = leaf(ctx, SHAPE(2, 3, 1, 1), 2, -1, 1, true); /* (B, C, 1, 1) */
  float once[6], twice[6];
  backward(ctx, op_sum(ctx, op_mul(ctx, op_add(ctx, x, emb), x)));
  tensor_to_host_f32(ctx, emb->grad, once);
  /* d/d emb Σ (x + emb)·x = Σ_{h,w} x */
  const float *px = x->data;
  for (int i = 0; i < 6; i++) {
    double s = 0;
    for (int j = 0; j < 20; j++) s += px[i * 20 + j];
    EXPECT_NEAR(once[i], s, 1e-6);
  }
  ctx_step_reset(ctx);
  backward(ctx, op_sum(ctx, op_mul(ctx, op_add(ctx, x, emb), x)));
  tensor_to_host_f32(ctx, emb->grad, twice);
  for (int i = 0; i < 6; i++) EXPECT_NEAR(twice[i], 2 * once[i], 1e-6 * (1 + fabsf(once[i])));
  EXPECT(x->grad == NULL, "x needs no gradient but got one");
  ctx_destroy(ctx);
}

TEST(empty_broadcast_is_harmless) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *a = leaf(ctx, SHAPE(3, 1), 1, -1, 1, true), *b = tensor_new_persistent(ctx, DT_F32, SHAPE(0));
  b->requires_grad = true;
  Tensor *y = op_add(ctx, a, b);
  CHECK_SHAPE("test", y, 3, 0);
  backward_from(ctx, y, tensor_new(ctx, DT_F32, SHAPE(3, 0)));
  float g[3];
  tensor_to_host_f32(ctx, a->grad, g);
  for (int i = 0; i < 3; i++) EXPECT(g[i] == 0.0f, "a's gradient should stay 0, got %g", g[i]);
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(binary_shapes_that_do_not_broadcast_are_fatal, 1,
              "add: a has shape [2, 3] and b has shape [4], which do not broadcast: sizes 3 and 4 at dimension -1") {
  Ctx *ctx = ctx_create_cpu(0);
  op_add(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 3)), tensor_new(ctx, DT_F32, SHAPE(4)));
}

TEST_EXIT_MSG(binary_dtypes_must_match, 1, "mul: dtypes fp32 and bf16 differ") {
  Ctx *ctx = ctx_create_cpu(0);
  op_mul(ctx, tensor_new(ctx, DT_F32, SHAPE(2)), tensor_new(ctx, DT_BF16, SHAPE(2)));
}
