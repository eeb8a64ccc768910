/* group_norm, layer_norm and batch_norm_local: gradients of x, w and b against central
 * finite differences (odd sizes, batch > 1, with and without affine, frozen w), the
 * standardised output, and the fatal argument checks. PyTorch agreement is in
 * test_ops_norm_fixtures.c.
 *
 * Each loss is Σ y ⊙ r with a fixed random r, so every output element is weighted
 * differently (a plain Σ y has a zero gradient through a normalisation). The default
 * gradcheck tolerance (2e-3 + 1e-2·|g|, see gradcheck.h) holds: losses are O(10), the
 * normalisation is smooth, and with h = 1e-2 and rstd ≈ 2 the truncation error
 * h²·|L'''| stays ≲ 1e-4. */
#include <math.h>

#include "gradcheck.h"
#include "kernels/norm.h" /* until kernels/ops.h includes it */
#include "test.h"

typedef enum { GN, LN, BNL } NormKind;

typedef struct {
  NormKind kind;
  int arg; /* groups (GN) or virtual_bs (BNL) */
  float eps;
  Tensor *w, *b; /* NULL: none */
  Tensor *r;     /* loss weights, the shape of y */
} NormCase;

static Tensor *norm_apply(Ctx *ctx, NormCase *c, Tensor *x) {
  switch (c->kind) {
    case GN: return op_group_norm(ctx, x, c->arg, c->eps, c->w, c->b);
    case LN: return op_layer_norm(ctx, x, c->eps, c->w, c->b);
    default: return op_batch_norm_local(ctx, x, c->arg, c->eps, c->w, c->b);
  }
}

/* leaves[0] is x; w and b, where present, follow it (they are c->w, c->b). */
static Tensor *norm_loss(Ctx *ctx, Tensor **leaves, void *user) {
  NormCase *c = user;
  return op_sum(ctx, op_mul(ctx, norm_apply(ctx, c, leaves[0]), c->r));
}

/* Builds the case on a fresh context and returns the number of mismatching elements. */
static int check_grads(NormKind kind, int arg, float eps, bool affine, bool train_w, int ndim, const int64_t *shape) {
  Ctx *ctx = ctx_create_cpu(0);
  int64_t C = kind == LN ? shape[ndim - 1] : shape[1];
  NormCase c = {.kind = kind, .arg = arg, .eps = eps};
  Tensor *leaves[3];
  int n = 0;
  leaves[n] = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  leaves[n]->requires_grad = true;
  fill_uniform(ctx, leaves[n++], 11, -2.0f, 2.0f);
  if (affine) {
    c.w = leaves[n] = param_new(ctx, "norm.weight", DT_F32, SHAPE(C), train_w);
    fill_uniform(ctx, leaves[n++], 12, 0.5f, 1.5f);
    c.b = leaves[n] = param_new(ctx, "norm.bias", DT_F32, SHAPE(C), true);
    fill_uniform(ctx, leaves[n++], 13, -0.5f, 0.5f);
  }
  c.r = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, c.r, 14, -1.0f, 1.0f);
  int bad = gradcheck(ctx, norm_loss, leaves, n, &c, (GradcheckOpts){0});
  if (affine && !train_w) EXPECT(c.w->grad == NULL, "the frozen weight received a gradient");
  ctx_destroy(ctx);
  return bad;
}

#define GRADS_OK(kind, arg, eps, affine, ...) \
  EXPECT(check_grads(kind, arg, eps, affine, true, SHAPE(__VA_ARGS__)) == 0, "gradients disagree")

TEST(norm_group_norm_grads) {
  GRADS_OK(GN, 3, 1e-5f, true, 2, 6, 5, 3);     /* (B, C, H, W), 2 channels a group */
  GRADS_OK(GN, 1, 1e-6f, true, 3, 5, 7);        /* one group, odd C */
  GRADS_OK(GN, 5, 1e-5f, true, 2, 5, 3, 2, 3);  /* groups = C, rank 5 */
  GRADS_OK(GN, 2, 1e-5f, false, 3, 10);         /* rank 2, no affine */
  GRADS_OK(GN, 2, 0.3f, true, 3, 4, 3, 1);      /* eps large enough to matter */
}

TEST(norm_layer_norm_grads) {
  GRADS_OK(LN, 0, 1e-5f, true, 3, 4, 7);
  GRADS_OK(LN, 0, 1e-6f, false, 5, 9);
  GRADS_OK(LN, 0, 1e-5f, true, 11); /* one row */
}

TEST(norm_batch_norm_local_grads) {
  GRADS_OK(BNL, 2, 1e-5f, true, 4, 5, 7);   /* G = 2 groups of 2 samples */
  GRADS_OK(BNL, 8, 1e-5f, true, 6, 3, 11);  /* G = 1: the whole batch */
  GRADS_OK(BNL, 3, 1e-5f, true, 9, 4, 5);   /* G = 3 */
  GRADS_OK(BNL, 1, 1e-5f, false, 3, 2, 9);  /* one sample a group */
}

TEST(norm_frozen_weight_passes_gradient) {
  EXPECT(check_grads(GN, 2, 1e-5f, true, false, SHAPE(2, 4, 3, 5)) == 0, "group_norm with a frozen weight");
  EXPECT(check_grads(BNL, 2, 1e-5f, true, false, SHAPE(4, 3, 6)) == 0, "batch_norm_local with a frozen weight");
  EXPECT(check_grads(LN, 0, 1e-5f, true, false, SHAPE(3, 6)) == 0, "layer_norm with a frozen weight");
}

/* Without affine, every statistics group of y has mean 0 and variance var / (var + eps).
 * Large enough (>65536 elements) that the CPU reference runs its OpenMP loops. */
TEST(norm_group_norm_output_is_standardised) {
  Ctx *ctx = ctx_create_cpu(0);
  enum { B = 2, C = 8, HW = 64 * 70, G = 4, N = C / G * HW };
  const float eps = 1e-2f;
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(B, C, 64, 70));
  fill_uniform(ctx, x, 5, -3.0f, 5.0f);
  Tensor *y = op_group_norm(ctx, x, G, eps, NULL, NULL);
  const float *xv = x->data, *yv = y->data;
  for (int q = 0; q < B * G; q++) {
    double sx = 0, sxx = 0, sy = 0, syy = 0;
    for (int i = 0; i < N; i++) sx += xv[q * N + i], sy += yv[q * N + i];
    for (int i = 0; i < N; i++) {
      double dx = xv[q * N + i] - sx / N, dy = yv[q * N + i] - sy / N;
      sxx += dx * dx, syy += dy * dy;
    }
    double var = sxx / N;
    EXPECT_NEAR(sy / N, 0.0, 1e-6);
    EXPECT_NEAR(syy / N, var / (var + eps), 1e-5);
  }
  ctx_destroy(ctx);
}

/* layer_norm over (N, C) is group_norm with one group over (N, C, 1). */
TEST(norm_layer_norm_is_one_group_norm) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(7, 13)), *x3 = tensor_new(ctx, DT_F32, SHAPE(7, 13, 1));
  Tensor *w = tensor_new(ctx, DT_F32, SHAPE(13)), *b = tensor_new(ctx, DT_F32, SHAPE(13));
  fill_uniform(ctx, x, 1, -1, 1), fill_uniform(ctx, x3, 1, -1, 1);
  fill_uniform(ctx, w, 2, -1, 1), fill_uniform(ctx, b, 3, -1, 1);
  /* group_norm's affine is per channel (dim 1), layer_norm's per element of the row: the
   * same here because each row of (7, 13, 1) holds 13 channels of one element each. */
  const float *y1 = op_layer_norm(ctx, x, 1e-5f, w, b)->data, *y2 = op_group_norm(ctx, x3, 1, 1e-5f, w, b)->data;
  for (int i = 0; i < 7 * 13; i++) EXPECT(y1[i] == y2[i], "element %d: %g vs %g", i, y1[i], y2[i]);
  ctx_destroy(ctx);
}

/* ---- bad arguments: one clear line and exit code 1 */

static Ctx *bad_ctx(void) { return ctx_create_cpu(0); }

TEST_EXIT_MSG(norm_batch_norm_local_batch_not_divisible, 1, "does not split into ceil(9 / 8) = 2 equal groups") {
  Ctx *ctx = bad_ctx();
  op_batch_norm_local(ctx, tensor_zeros(ctx, DT_F32, SHAPE(9, 4, 5)), 8, 1e-5f, NULL, NULL);
}

TEST_EXIT_MSG(norm_group_norm_groups_must_divide_channels, 1, "6 channels (x [2, 6, 3]) do not split into 4") {
  Ctx *ctx = bad_ctx();
  op_group_norm(ctx, tensor_zeros(ctx, DT_F32, SHAPE(2, 6, 3)), 4, 1e-5f, NULL, NULL);
}

TEST_EXIT_MSG(norm_group_norm_rank1, 1, "group_norm: x has shape [6]; expected (B, C, ...spatial)") {
  Ctx *ctx = bad_ctx();
  op_group_norm(ctx, tensor_zeros(ctx, DT_F32, SHAPE(6)), 1, 1e-5f, NULL, NULL);
}

TEST_EXIT_MSG(norm_layer_norm_weight_shape, 1, "layer_norm") {
  Ctx *ctx = bad_ctx();
  op_layer_norm(ctx, tensor_zeros(ctx, DT_F32, SHAPE(3, 5)), 1e-5f, tensor_zeros(ctx, DT_F32, SHAPE(4)), NULL);
}

TEST_EXIT_MSG(norm_batch_norm_local_rank, 1, "batch_norm_local") {
  Ctx *ctx = bad_ctx();
  op_batch_norm_local(ctx, tensor_zeros(ctx, DT_F32, SHAPE(4, 5)), 2, 1e-5f, NULL, NULL);
}

TEST_EXIT_MSG(norm_negative_eps, 1, "group_norm: eps is -1, it must be finite and >= 0") {
  Ctx *ctx = bad_ctx();
  op_group_norm(ctx, tensor_zeros(ctx, DT_F32, SHAPE(2, 4)), 2, -1.0f, NULL, NULL);
}

TEST_EXIT_MSG(norm_rejects_mixed_dtypes, 1, "layer_norm: x bf16, weight fp32, bias none: one dtype, fp32 or bf16") {
  Ctx *ctx = bad_ctx();
  op_layer_norm(ctx, tensor_zeros(ctx, DT_BF16, SHAPE(3, 5)), 1e-5f, tensor_zeros(ctx, DT_F32, SHAPE(5)), NULL);
}
