/* matmul, embedding, timestep embedding, l2_normalize and spectral_norm on the CPU:
 * gradients against central finite differences (odd sizes, batch > 1), the forward
 * against naive formulas, the fatal paths and their messages, and the state handling of
 * the spectral norm. PyTorch comparisons are in test_ops_misc_fixtures.c. */
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/normalize.h"
#include "test.h"

/* A persistent fp32 tensor with values from fill_uniform; requires_grad as asked. */
static Tensor *leaf(Ctx *ctx, uint64_t seed, bool grad, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, t, seed, -1.0f, 1.0f);
  t->requires_grad = grad;
  return t;
}

/* loss = Σ y ⊙ r with a fixed r of y's shape: weights every output differently. */
static Tensor *weighted_sum(Ctx *ctx, Tensor *y, Tensor **r) {
  if (!*r) *r = leaf(ctx, 999, false, y->ndim, y->shape);
  return op_sum(ctx, op_mul(ctx, y, *r));
}

/* ------------------------------------------------------------------ matmul */

typedef struct {
  bool ta, tb;
  Tensor *r;
} MatmulCase;

static Tensor *matmul_loss(Ctx *ctx, Tensor **p, void *user) {
  MatmulCase *c = user;
  return weighted_sum(ctx, op_matmul(ctx, p[0], p[1], c->ta, c->tb), &c->r);
}

/* a, b in storage layout for op(a) (.., M, K) · op(b) (.., K, N); nb = b's rank. */
static int check_matmul_grad(int na, const int64_t *batch, int nb, int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
  Ctx *ctx = ctx_create_cpu(0);
  int64_t sa[MCM_MAX_DIMS], sb[MCM_MAX_DIMS];
  for (int i = 0; i < na - 2; i++) sa[i] = sb[i] = batch[i];
  sa[na - 2] = ta ? K : M, sa[na - 1] = ta ? M : K;
  sb[nb - 2] = tb ? N : K, sb[nb - 1] = tb ? K : N;
  if (nb == 2) sb[0] = tb ? N : K, sb[1] = tb ? K : N;
  Tensor *p[2] = {leaf(ctx, 1, true, na, sa), leaf(ctx, 2, true, nb, sb)};
  MatmulCase c = {ta, tb, NULL};
  int bad = gradcheck(ctx, matmul_loss, p, 2, &c, (GradcheckOpts){0});
  ctx_destroy(ctx);
  return bad;
}

TEST(matmul_gradients_all_transposes) {
  for (int f = 0; f < 4; f++) {
    bool ta = f & 1, tb = f & 2;
    EXPECT(check_matmul_grad(3, (int64_t[]){2}, 3, 3, 5, 4, ta, tb) == 0, "matmul ta=%d tb=%d", ta, tb);
  }
}

TEST(matmul_gradients_shared_b) {
  /* a 2-D b shared by a (2, 3) batch: folded into one GEMM (no trans_a) or looped (trans_a) */
  for (int f = 0; f < 4; f++) {
    bool ta = f & 1, tb = f & 2;
    EXPECT(check_matmul_grad(4, (int64_t[]){2, 3}, 2, 3, 5, 4, ta, tb) == 0, "shared b, ta=%d tb=%d", ta, tb);
  }
}

TEST(matmul_gradients_rank2_and_rank5) {
  EXPECT(check_matmul_grad(2, NULL, 2, 5, 3, 7, false, true) == 0, "rank 2");
  EXPECT(check_matmul_grad(5, (int64_t[]){2, 1, 3}, 5, 3, 2, 5, true, false) == 0, "rank 5");
}

/* y against a naive triple loop in double, for many small matrices (the batch runs in
 * parallel threads) and for one batch of larger ones (OpenBLAS threads itself). */
static void check_matmul_forward(int64_t batch, int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool shared) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *a = leaf(ctx, 3, false, SHAPE(batch, ta ? K : M, ta ? M : K));
  Tensor *b = shared ? leaf(ctx, 4, false, SHAPE(tb ? N : K, tb ? K : N))
                     : leaf(ctx, 4, false, SHAPE(batch, tb ? N : K, tb ? K : N));
  Tensor *y = op_matmul(ctx, a, b, ta, tb);
  ASSERT(y->ndim == 3 && y->shape[0] == batch && y->shape[1] == M && y->shape[2] == N, "shape %s",
         TENSOR_SHAPE_STR(y));
  const float *pa = a->data, *pb = b->data, *py = y->data;
  double worst = 0;
  for (int64_t p = 0; p < batch; p++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        double s = 0;
        const float *ap = pa + p * M * K, *bp = pb + (shared ? 0 : p * K * N);
        for (int64_t k = 0; k < K; k++)
          s += (double)(ta ? ap[k * M + m] : ap[m * K + k]) * (tb ? bp[n * K + k] : bp[k * N + n]);
        worst = fmax(worst, fabs(s - py[(p * M + m) * N + n]));
      }
  /* K terms of size ≤ 1 in fp32: ≤ K·ε₃₂ ≈ 1e-5 for K = 150 */
  EXPECT(worst < 2e-5, "batch %lld (%lld x %lld x %lld) ta=%d tb=%d shared=%d: worst |diff| %.3g", (long long)batch,
         (long long)M, (long long)N, (long long)K, ta, tb, shared, worst);
  ctx_destroy(ctx);
}

TEST(matmul_forward_matches_naive_loops) {
  for (int f = 0; f < 8; f++) check_matmul_forward(37, 5, 7, 3, f & 1, f & 2, f & 4);
  check_matmul_forward(2, 70, 65, 150, false, true, false);
  check_matmul_forward(3, 70, 65, 150, true, false, true);
}

TEST_EXIT_MSG(matmul_inner_size_mismatch_is_fatal, 1, "matmul: inner sizes differ") {
  Ctx *ctx = ctx_create_cpu(0);
  op_matmul(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 3, 4)), tensor_new(ctx, DT_F32, SHAPE(2, 5, 6)), false, false);
}

TEST_EXIT_MSG(matmul_batch_mismatch_is_fatal, 1, "matmul: batch dimension 0 differs") {
  Ctx *ctx = ctx_create_cpu(0);
  op_matmul(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 3, 4)), tensor_new(ctx, DT_F32, SHAPE(3, 4, 6)), false, false);
}

TEST_EXIT_MSG(matmul_rank_mismatch_is_fatal, 1, "b must have as many, or 2") {
  Ctx *ctx = ctx_create_cpu(0);
  op_matmul(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 2, 3, 4)), tensor_new(ctx, DT_F32, SHAPE(2, 4, 6)), false, false);
}

/* ------------------------------------------------------------------ embedding */

typedef struct {
  Tensor *ids, *r;
} EmbCase;

static Tensor *embedding_loss(Ctx *ctx, Tensor **p, void *user) {
  EmbCase *c = user;
  return weighted_sum(ctx, op_embedding(ctx, p[0], c->ids), &c->r);
}

TEST(embedding_gradient_with_repeated_ids) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *table = leaf(ctx, 5, true, SHAPE(7, 5)); /* (V, D) */
  EmbCase c = {tensor_new_persistent(ctx, DT_I32, SHAPE(2, 3, 3)), NULL};
  const int32_t ids[18] = {0, 6, 2, 2, 2, 5, 6, 0, 1, 1, 4, 2, 0, 0, 6, 3, 2, 2}; /* every row, most repeated */
  tensor_from_host_i32(ctx, c.ids, ids);
  EXPECT(gradcheck(ctx, embedding_loss, &table, 1, &c, (GradcheckOpts){0}) == 0, "embedding gradient");
  /* forward: rows copied exactly */
  Tensor *y = op_embedding(ctx, table, c.ids);
  ASSERT(y->ndim == 4 && y->shape[3] == 5, "shape %s", TENSOR_SHAPE_STR(y));
  for (int n = 0; n < 18; n++)
    EXPECT(!memcmp((float *)y->data + n * 5, (float *)table->data + ids[n] * 5, 5 * sizeof(float)), "row %d", n);
  EXPECT(c.ids->grad == NULL, "ids must get no gradient");
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(embedding_id_out_of_range_is_fatal, 1, "embedding: id 7 at position 3 is outside the table's 7 rows") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *table = leaf(ctx, 5, false, SHAPE(7, 5));
  Tensor *ids = tensor_new(ctx, DT_I32, SHAPE(4));
  tensor_from_host_i32(ctx, ids, (const int32_t[]){0, 6, 1, 7});
  op_embedding(ctx, table, ids);
}

TEST_EXIT_MSG(embedding_negative_id_is_fatal, 1, "embedding: id -1 at position 0") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *ids = tensor_new(ctx, DT_I32, SHAPE(1, 2));
  tensor_from_host_i32(ctx, ids, (const int32_t[]){-1, 2});
  op_embedding(ctx, leaf(ctx, 5, false, SHAPE(7, 5)), ids);
}

TEST_EXIT_MSG(embedding_float_ids_are_fatal, 1, "int32") {
  Ctx *ctx = ctx_create_cpu(0);
  op_embedding(ctx, leaf(ctx, 5, false, SHAPE(7, 5)), tensor_zeros(ctx, DT_F32, SHAPE(3)));
}

/* ------------------------------------------------------------------ timestep embedding */

/* The formula in double: half = dim/2, freq_i = P^(−i/(half − shift)). */
static void check_timestep(int dim, bool flip, float shift) {
  Ctx *ctx = ctx_create_cpu(0);
  const float tv[5] = {0.0f, 1.0f, 20.0f, 499.5f, 999.0f};
  Tensor *t = tensor_new(ctx, DT_F32, SHAPE(5));
  tensor_from_host_f32(ctx, t, tv);
  Tensor *y = op_timestep_embedding(ctx, t, dim, 10000.0f, flip, shift);
  ASSERT(y->ndim == 2 && y->shape[0] == 5 && y->shape[1] == dim, "shape %s", TENSOR_SHAPE_STR(y));
  EXPECT(!y->requires_grad && ctx->tape.n == 0, "the timestep embedding records nothing");
  int half = dim / 2;
  const float *py = y->data;
  double worst = 0;
  for (int b = 0; b < 5; b++) {
    for (int i = 0; i < half; i++) {
      double arg = tv[b] * exp(-log(10000.0) * i / (half - shift));
      double s = sin(arg), c = cos(arg);
      worst = fmax(worst, fabs(py[b * dim + (flip ? half : 0) + i] - s));
      worst = fmax(worst, fabs(py[b * dim + (flip ? 0 : half) + i] - c));
    }
    if (dim % 2) EXPECT(py[b * dim + dim - 1] == 0.0f, "odd dim: the last column must be 0");
  }
  /* fp32 arguments up to 999: |arg| · 2 ulp ≈ 1.2e-4 */
  EXPECT(worst < 2e-4, "dim %d flip %d shift %g: worst |diff| %.3g", dim, flip, (double)shift, worst);
  ctx_destroy(ctx);
}

TEST(timestep_embedding_matches_the_formula) {
  check_timestep(128, true, 0.0f); /* MusicLDM: [cos, sin] */
  check_timestep(32, false, 1.0f); /* diffusers defaults: [sin, cos] */
  check_timestep(15, true, 1.0f);  /* odd: zero column */
  check_timestep(3, false, 0.0f);
}

TEST(timestep_embedding_t0_is_cos1_sin0) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *t = tensor_zeros(ctx, DT_F32, SHAPE(2));
  Tensor *y = op_timestep_embedding(ctx, t, 8, 10000.0f, true, 0.0f);
  const float want[8] = {1, 1, 1, 1, 0, 0, 0, 0};
  for (int i = 0; i < 16; i++) EXPECT(((float *)y->data)[i] == want[i % 8], "element %d", i);
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(timestep_embedding_t_with_gradient_is_fatal, 1, "t requires a gradient") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *t = leaf(ctx, 1, true, SHAPE(3));
  op_timestep_embedding(ctx, t, 16, 10000.0f, true, 0.0f);
}

TEST_EXIT_MSG(timestep_embedding_zero_denominator_is_fatal, 1, "must be positive") {
  Ctx *ctx = ctx_create_cpu(0);
  op_timestep_embedding(ctx, tensor_zeros(ctx, DT_F32, SHAPE(3)), 2, 10000.0f, false, 1.0f);
}

/* ------------------------------------------------------------------ l2_normalize */

typedef struct {
  float eps;
  Tensor *r;
} L2Case;

static Tensor *l2_loss(Ctx *ctx, Tensor **p, void *user) {
  L2Case *c = user;
  return weighted_sum(ctx, op_l2_normalize(ctx, p[0], c->eps), &c->r);
}

TEST(l2_normalize_gradient) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 7, true, SHAPE(3, 5, 7));
  L2Case c = {1e-12f, NULL};
  EXPECT(gradcheck(ctx, l2_loss, &x, 1, &c, (GradcheckOpts){0}) == 0, "l2_normalize gradient");
  Tensor *y = op_l2_normalize(ctx, x, 1e-12f);
  for (int n = 0; n < 15; n++) {
    double s = 0;
    for (int d = 0; d < 7; d++) s += (double)((float *)y->data)[n * 7 + d] * ((float *)y->data)[n * 7 + d];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  ctx_destroy(ctx);
}

TEST(l2_normalize_gradient_clamped_rows) {
  /* rows 1 and 3 have norms ≈ 0.1, below eps = 0.5: y = x / eps there */
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 8, true, SHAPE(5, 7));
  float *px = x->data;
  for (int d = 0; d < 7; d++) px[1 * 7 + d] *= 0.05f, px[3 * 7 + d] *= 0.08f;
  L2Case c = {0.5f, NULL};
  EXPECT(gradcheck(ctx, l2_loss, &x, 1, &c, (GradcheckOpts){0}) == 0, "clamped l2_normalize gradient");
  Tensor *y = op_l2_normalize(ctx, x, 0.5f);
  for (int d = 0; d < 7; d++) EXPECT(((float *)y->data)[7 + d] == px[7 + d] / 0.5f, "clamped row, element %d", d);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ spectral_norm */

typedef struct {
  SpectralNorm *sn;
  Tensor *r;
} SnCase;

static Tensor *sn_loss(Ctx *ctx, Tensor **p, void *user) {
  SnCase *c = user;
  return weighted_sum(ctx, op_spectral_norm(ctx, c->sn, p[0], false), &c->r);
}

TEST(spectral_norm_gradient_eval_mode) {
  /* Eval mode keeps u and v fixed, so finite differences see exactly the function whose
   * gradient PyTorch defines (u, v constant). One training call first sets them. */
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *w = param_new(ctx, "head.conv.weight_orig", DT_F32, SHAPE(5, 3, 3), true); /* (OUT, IN, K) */
  fill_uniform(ctx, w, 11, -1.0f, 1.0f);
  SpectralNorm sn;
  spectral_norm_init(ctx, &sn, w, 1, 1e-12f);
  bool was = ctx_set_grad(ctx, false);
  op_spectral_norm(ctx, &sn, w, true);
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);
  SnCase c = {&sn, NULL};
  EXPECT(gradcheck(ctx, sn_loss, &w, 1, &c, (GradcheckOpts){0}) == 0, "spectral_norm gradient");
  ctx_destroy(ctx);
}

TEST(spectral_norm_init_gives_unit_vectors) {
  Ctx *ctx = ctx_create_cpu(42);
  Tensor *w = leaf(ctx, 1, false, SHAPE(6, 4, 3));
  SpectralNorm sn;
  uint64_t before = ctx->rng_offset;
  spectral_norm_init(ctx, &sn, w, 1, 1e-12f);
  EXPECT(sn.u->numel == 6 && sn.v->numel == 12, "u %s, v %s", TENSOR_SHAPE_STR(sn.u), TENSOR_SHAPE_STR(sn.v));
  EXPECT(ctx->rng_offset > before, "the draws must advance the context's RNG");
  Tensor *vecs[2] = {sn.u, sn.v};
  for (int k = 0; k < 2; k++) {
    double s = 0;
    for (int64_t i = 0; i < vecs[k]->numel; i++) s += (double)((float *)vecs[k]->data)[i] * ((float *)vecs[k]->data)[i];
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  ctx_destroy(ctx);
}

TEST(spectral_norm_power_iteration_finds_the_top_singular_value) {
  /* W (3, 2, 2) as (3, 4): entries 3, −2, 1 in distinct rows and columns, so the singular
   * values are 3, 2, 1. The error shrinks by (2/3)² per iteration. */
  Ctx *ctx = ctx_create_cpu(3);
  Tensor *w = tensor_zeros(ctx, DT_F32, SHAPE(3, 2, 2));
  float *pw = w->data;
  pw[0 * 4 + 1] = 3.0f, pw[1 * 4 + 3] = -2.0f, pw[2 * 4 + 0] = 1.0f;
  SpectralNorm sn;
  spectral_norm_init(ctx, &sn, w, 1, 1e-12f);
  Tensor *y = NULL;
  for (int i = 0; i < 40; i++) y = op_spectral_norm(ctx, &sn, w, true);
  EXPECT_NEAR(((float *)y->data)[1], 1.0, 1e-5);
  EXPECT_NEAR(((float *)y->data)[7], -2.0 / 3.0, 1e-5);
  EXPECT_NEAR(fabs(((float *)sn.u->data)[0]), 1.0, 1e-5);
  EXPECT_NEAR(fabs(((float *)sn.v->data)[1]), 1.0, 1e-5);
  /* eval mode: no iteration, the same σ */
  float u_before[3];
  memcpy(u_before, sn.u->data, sizeof u_before);
  y = op_spectral_norm(ctx, &sn, w, false);
  EXPECT_NEAR(((float *)y->data)[1], 1.0, 1e-5);
  EXPECT(!memcmp(u_before, sn.u->data, sizeof u_before), "eval mode must not update u");
  ctx_destroy(ctx);
}

TEST(spectral_norm_backward_uses_the_forward_u_v) {
  /* D runs on real then fake samples before one backward: the second training call moves
   * u and v, but the first call's gradient must use the values it saw. */
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *w = param_new(ctx, "w", DT_F32, SHAPE(4, 3, 3), true);
  fill_uniform(ctx, w, 12, -1.0f, 1.0f);
  SpectralNorm sn;
  spectral_norm_init(ctx, &sn, w, 1, 1e-12f);
  float u0[4], v0[9], g1[36], g2[36];
  memcpy(u0, sn.u->data, sizeof u0);
  memcpy(v0, sn.v->data, sizeof v0);
  Tensor *r = leaf(ctx, 13, false, SHAPE(4, 3, 3));
  backward(ctx, op_sum(ctx, op_mul(ctx, op_spectral_norm(ctx, &sn, w, true), r)));
  memcpy(g1, w->grad->data, sizeof g1);
  ctx_step_reset(ctx);
  params_zero_grad(ctx, &w, 1);
  memcpy(sn.u->data, u0, sizeof u0);
  memcpy(sn.v->data, v0, sizeof v0);
  Tensor *loss = op_sum(ctx, op_mul(ctx, op_spectral_norm(ctx, &sn, w, true), r));
  op_spectral_norm(ctx, &sn, w, true); /* moves u and v on */
  EXPECT(memcmp(u0, sn.u->data, sizeof u0), "u should have changed");
  backward(ctx, loss);
  memcpy(g2, w->grad->data, sizeof g2);
  EXPECT(!memcmp(g1, g2, sizeof g1), "the gradient changed with a later training-mode call");
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(spectral_norm_wrong_u_is_fatal, 1, "spectral_norm") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *w = leaf(ctx, 1, false, SHAPE(5, 3, 3));
  SpectralNorm sn;
  spectral_norm_init(ctx, &sn, w, 1, 1e-12f);
  op_spectral_norm(ctx, &sn, leaf(ctx, 1, false, SHAPE(6, 3, 3)), true);
}
