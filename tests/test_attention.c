/* softmax and multi-head attention on the CPU: gradients against central finite
 * differences (odd sizes, batch 2, with and without a key mask), the documented edge cases
 * (fully masked rows, huge logits), equivalences that pin the semantics (a masked key is
 * the same as an absent key; heads are independent channel slices) and the fatal checks. */
#include "gradcheck.h"
#include "kernels/attention.h"
#include "kernels/softmax.h"
#include "test.h"

static Tensor *input(Ctx *ctx, int ndim, const int64_t *shape, uint64_t seed, float lo, float hi, bool grad) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, t, seed, lo, hi);
  t->requires_grad = grad;
  return t;
}

/* ------------------------------------------------------------------ softmax */

enum { SM_X, SM_W, SM_N };

/* Σ w ⊙ softmax(x): a non-uniform weighting, since Σ softmax(x) alone is constant. */
static Tensor *softmax_loss(Ctx *ctx, Tensor **p, void *user) {
  return op_sum(ctx, op_mul(ctx, op_softmax(ctx, p[SM_X]), p[SM_W]));
}

TEST(softmax_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[SM_N] = {input(ctx, SHAPE(2, 3, 7), 1, -3, 3, true), input(ctx, SHAPE(2, 3, 7), 2, -1, 1, false)};
  EXPECT(gradcheck(ctx, softmax_loss, p, SM_N, NULL, (GradcheckOpts){0}) == 0, "softmax gradients disagree");
  ctx_destroy(ctx);
}

TEST(softmax_rows_sum_to_one_and_survive_huge_logits) {
  Ctx *ctx = ctx_create_cpu(0);
  float xv[2 * 5] = {1000, 999, 998, -1000, 1000, -3, -1, 0, 2, 1e-3f}, y[10];
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(2, 5));
  tensor_from_host_f32(ctx, x, xv);
  tensor_to_host_f32(ctx, op_softmax(ctx, x), y);
  for (int r = 0; r < 2; r++) {
    double s = 0;
    for (int j = 0; j < 5; j++) {
      EXPECT(isfinite(y[r * 5 + j]) && y[r * 5 + j] >= 0, "row %d element %d: %g", r, j, y[r * 5 + j]);
      s += y[r * 5 + j];
    }
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  /* Row 0: two equal maxima at 1000, then e^-1, e^-2 relative to them. */
  double z = 2 + exp(-1.0) + exp(-2.0);
  EXPECT_NEAR(y[0], 1 / z, 1e-6);
  EXPECT_NEAR(y[1], exp(-1.0) / z, 1e-6);
  EXPECT_NEAR(y[3], 0.0, 1e-30);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ attention */

typedef struct {
  int NH;
  bool masked;
} AttnCase;

enum { AT_Q, AT_K, AT_V, AT_MASK, AT_W, AT_N };

static Tensor *attention_loss(Ctx *ctx, Tensor **p, void *user) {
  const AttnCase *c = user;
  Tensor *y = op_attention(ctx, p[AT_Q], p[AT_K], p[AT_V], c->NH, c->masked ? p[AT_MASK] : NULL);
  return op_sum(ctx, op_mul(ctx, y, p[AT_W]));
}

/* B 2, TQ 5, TK 7, NH·D = 2·3 (or 1·4): odd everywhere. Batch 1 masks keys 0, 3 and 6. */
static void make_attention(Ctx *ctx, Tensor **p, int NH, int D) {
  int64_t C = (int64_t)NH * D;
  p[AT_Q] = input(ctx, SHAPE(2, 5, C), 11, -1.5f, 1.5f, true);
  p[AT_K] = input(ctx, SHAPE(2, 7, C), 12, -1.5f, 1.5f, true);
  p[AT_V] = input(ctx, SHAPE(2, 7, C), 13, -1, 1, true);
  p[AT_MASK] = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 7));
  float m[14] = {1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0};
  tensor_from_host_f32(ctx, p[AT_MASK], m);
  p[AT_W] = input(ctx, SHAPE(2, 5, C), 14, -1, 1, false);
}

TEST(attention_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[AT_N];
  make_attention(ctx, p, 2, 3);
  AttnCase c = {2, false};
  EXPECT(gradcheck(ctx, attention_loss, p, AT_N, &c, (GradcheckOpts){0}) == 0, "attention gradients disagree");
  ctx_destroy(ctx);
}

TEST(attention_masked_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[AT_N];
  make_attention(ctx, p, 2, 3);
  AttnCase c = {2, true};
  EXPECT(gradcheck(ctx, attention_loss, p, AT_N, &c, (GradcheckOpts){0}) == 0, "masked attention gradients disagree");
  EXPECT(p[AT_MASK]->grad == NULL, "the key mask must get no gradient");
  ctx_destroy(ctx);
}

TEST(attention_single_head_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[AT_N];
  make_attention(ctx, p, 1, 4);
  AttnCase c = {1, true};
  EXPECT(gradcheck(ctx, attention_loss, p, AT_N, &c, (GradcheckOpts){0}) == 0, "single-head gradients disagree");
  ctx_destroy(ctx);
}

/* Only k needs a gradient (q and v frozen): backward must skip the others. */
TEST(attention_gradient_to_k_only) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[AT_N];
  make_attention(ctx, p, 2, 3);
  p[AT_Q]->requires_grad = p[AT_V]->requires_grad = false;
  AttnCase c = {2, true};
  EXPECT(gradcheck(ctx, attention_loss, p, AT_N, &c, (GradcheckOpts){0}) == 0, "dk alone disagrees");
  EXPECT(!p[AT_Q]->grad && !p[AT_V]->grad, "frozen q or v received a gradient");
  ctx_destroy(ctx);
}

/* Only v needs a gradient: the CPU backward then skips dP = dout vᵀ and dS altogether. */
TEST(attention_gradient_to_v_only) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[AT_N];
  make_attention(ctx, p, 2, 3);
  p[AT_Q]->requires_grad = p[AT_K]->requires_grad = false;
  AttnCase c = {2, true};
  EXPECT(gradcheck(ctx, attention_loss, p, AT_N, &c, (GradcheckOpts){0}) == 0, "dv alone disagrees");
  EXPECT(!p[AT_Q]->grad && !p[AT_K]->grad, "frozen q or k received a gradient");
  ctx_destroy(ctx);
}

/* Self-attention on one tensor (q = k = v = x): each use adds its gradient to x. */
static Tensor *self_attention_loss(Ctx *ctx, Tensor **p, void *user) {
  return op_sum(ctx, op_mul(ctx, op_attention(ctx, p[0], p[0], p[0], 2, NULL), p[1]));
}

TEST(attention_shared_input_gets_all_three_gradients) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[2] = {input(ctx, SHAPE(2, 5, 6), 21, -1, 1, true), input(ctx, SHAPE(2, 5, 6), 22, -1, 1, false)};
  EXPECT(gradcheck(ctx, self_attention_loss, p, 2, NULL, (GradcheckOpts){0}) == 0, "self-attention gradients");
  ctx_destroy(ctx);
}

/* A fully masked batch element gives zero output and zero gradients (documented; PyTorch
 * gives NaN), and must not disturb the other batch element. */
TEST(attention_fully_masked_row_gives_zeros) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = input(ctx, SHAPE(2, 3, 4), 31, -1, 1, true), *k = input(ctx, SHAPE(2, 6, 4), 32, -1, 1, true);
  Tensor *v = input(ctx, SHAPE(2, 6, 4), 33, -1, 1, true);
  Tensor *mask = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 6));
  float m[12] = {1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  tensor_from_host_f32(ctx, mask, m);
  Tensor *y = op_attention(ctx, q, k, v, 2, mask);
  Tensor *dy = tensor_new(ctx, DT_F32, SHAPE(2, 3, 4));
  fill_uniform(ctx, dy, 34, -1, 1);
  float yv[24], dq[24], dk[48], dv[48];
  tensor_to_host_f32(ctx, y, yv);
  backward_from(ctx, y, dy);
  tensor_to_host_f32(ctx, q->grad, dq);
  tensor_to_host_f32(ctx, k->grad, dk);
  tensor_to_host_f32(ctx, v->grad, dv);
  double n0 = 0;
  for (int i = 0; i < 12; i++) n0 += fabsf(yv[i]) + fabsf(dq[i]);
  EXPECT(n0 > 1e-3, "batch 0 (unmasked) should have a nonzero output and gradient");
  for (int i = 12; i < 24; i++) EXPECT(yv[i] == 0.0f && dq[i] == 0.0f, "batch 1 element %d: y %g dq %g", i, yv[i], dq[i]);
  for (int i = 24; i < 48; i++) EXPECT(dk[i] == 0.0f && dv[i] == 0.0f, "batch 1 key element %d: dk %g dv %g", i, dk[i], dv[i]);
  ctx_destroy(ctx);
}

/* Masking key j gives exactly what attention over the keys without j gives; a mask of
 * all ones is the same as no mask. */
TEST(attention_masked_key_equals_absent_key) {
  Ctx *ctx = ctx_create_cpu(0);
  enum { TQ = 4, TK = 5, C = 6 };
  Tensor *q = input(ctx, SHAPE(1, TQ, C), 41, -2, 2, false), *k = input(ctx, SHAPE(1, TK, C), 42, -2, 2, false);
  Tensor *v = input(ctx, SHAPE(1, TK, C), 43, -1, 1, false);
  float kv[TK * C], vv[TK * C];
  tensor_to_host_f32(ctx, k, kv);
  tensor_to_host_f32(ctx, v, vv);
  /* keys 1 and 4 removed */
  Tensor *k3 = tensor_new(ctx, DT_F32, SHAPE(1, 3, C)), *v3 = tensor_new(ctx, DT_F32, SHAPE(1, 3, C));
  float k3v[3 * C], v3v[3 * C];
  int keep[3] = {0, 2, 3};
  for (int j = 0; j < 3; j++)
    for (int c = 0; c < C; c++) k3v[j * C + c] = kv[keep[j] * C + c], v3v[j * C + c] = vv[keep[j] * C + c];
  tensor_from_host_f32(ctx, k3, k3v);
  tensor_from_host_f32(ctx, v3, v3v);
  Tensor *mask = tensor_new(ctx, DT_F32, SHAPE(1, TK)), *ones = tensor_new(ctx, DT_F32, SHAPE(1, TK));
  tensor_from_host_f32(ctx, mask, (float[TK]){1, 0, 1, 1, 0});
  tensor_fill(ctx, ones, 1.0f);
  float a[TQ * C], b[TQ * C], c1[TQ * C], c2[TQ * C];
  tensor_to_host_f32(ctx, op_attention(ctx, q, k, v, 3, mask), a);
  tensor_to_host_f32(ctx, op_attention(ctx, q, k3, v3, 3, NULL), b);
  tensor_to_host_f32(ctx, op_attention(ctx, q, k, v, 3, ones), c1);
  tensor_to_host_f32(ctx, op_attention(ctx, q, k, v, 3, NULL), c2);
  for (int i = 0; i < TQ * C; i++) {
    EXPECT_NEAR(a[i], b[i], 1e-6);
    EXPECT(c1[i] == c2[i], "all-ones mask differs from no mask at %d", i);
  }
  ctx_destroy(ctx);
}

/* Heads are channel slices: head h of a 3-head attention over C = 3·D equals a one-head
 * attention over channels h·D .. h·D + D − 1, with the same 1/√D scale. */
TEST(attention_heads_are_channel_slices) {
  Ctx *ctx = ctx_create_cpu(0);
  enum { B = 2, TQ = 3, TK = 4, NH = 3, D = 5, C = NH * D };
  Tensor *t[3] = {input(ctx, SHAPE(B, TQ, C), 51, -2, 2, false), input(ctx, SHAPE(B, TK, C), 52, -2, 2, false),
                  input(ctx, SHAPE(B, TK, C), 53, -1, 1, false)};
  float full[B * TQ * C];
  tensor_to_host_f32(ctx, op_attention(ctx, t[0], t[1], t[2], NH, NULL), full);
  for (int h = 0; h < NH; h++) {
    Tensor *s[3];
    for (int a = 0; a < 3; a++) {
      int64_t T = t[a]->shape[1];
      float src[B * TK * C], dst[B * TK * D];
      tensor_to_host_f32(ctx, t[a], src);
      for (int64_t r = 0; r < B * T; r++)
        for (int d = 0; d < D; d++) dst[r * D + d] = src[r * C + h * D + d];
      s[a] = tensor_new(ctx, DT_F32, SHAPE(B, T, D));
      tensor_from_host_f32(ctx, s[a], dst);
    }
    float one[B * TQ * D];
    tensor_to_host_f32(ctx, op_attention(ctx, s[0], s[1], s[2], 1, NULL), one);
    for (int r = 0; r < B * TQ; r++)
      for (int d = 0; d < D; d++) EXPECT_NEAR(full[r * C + h * D + d], one[r * D + d], 1e-6);
  }
  ctx_destroy(ctx);
}

/* No-grad mode keeps no logsumexp and records nothing. */
TEST(attention_no_grad_records_nothing) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = input(ctx, SHAPE(1, 2, 4), 61, -1, 1, true);
  bool was = ctx_set_grad(ctx, false);
  Tensor *y = op_attention(ctx, q, q, q, 1, NULL);
  EXPECT(ctx->tape.n == 0 && !y->requires_grad, "no-grad attention recorded a node");
  ctx_set_grad(ctx, was);
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(attention_rejects_bad_head_split, 1, "do not split into NH = 4 heads") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = tensor_zeros(ctx, DT_F32, SHAPE(1, 2, 6));
  op_attention(ctx, q, q, q, 4, NULL);
}

TEST_EXIT_MSG(attention_rejects_mismatched_k, 1, "attention") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = tensor_zeros(ctx, DT_F32, SHAPE(2, 3, 8)), *k = tensor_zeros(ctx, DT_F32, SHAPE(2, 5, 6));
  op_attention(ctx, q, k, k, 2, NULL);
}

TEST_EXIT_MSG(attention_rejects_bad_mask_shape, 1, "key_mask") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = tensor_zeros(ctx, DT_F32, SHAPE(2, 3, 8)), *k = tensor_zeros(ctx, DT_F32, SHAPE(2, 5, 8));
  Tensor *mask = tensor_zeros(ctx, DT_F32, SHAPE(2, 3));
  op_attention(ctx, q, k, k, 2, mask);
}
