/* Norms, L2 and spectral normalisation, shape ops and op_cast in bf16 on the CPU
 * (kernels/cpu_bf16.h).
 *
 * Every op here has a backward that reads only its inputs (and, for the norms and spectral
 * norm, fp32 statistics computed from those same inputs), never its own rounded output, so
 * the bf16 output and gradients equal the fp32 reference rounded once, bit for bit (tol 0).
 * The shape ops move values without arithmetic: exact either way. op_cast is checked against
 * hand-rounded values, and in the fp32 -> bf16 -> fp32 chain a model runs (its own tolerance). */
#include "bf16_check.h"
#include "test.h"

static float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

/* ------------------------------------------------------------------ norms */

typedef struct {
  int kind; /* 0 layer norm, 1 group norm, 2 batch_norm_local */
  int groups; /* group norm's groups, batch_norm_local's virtual_bs */
  bool affine;
} NormArg;

static Tensor *norm_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const NormArg *a = arg;
  Tensor *w = a->affine ? in[1] : NULL, *b = a->affine ? in[2] : NULL;
  if (a->kind == 0) return op_layer_norm(ctx, in[0], 1e-5f, w, b);
  if (a->kind == 1) return op_group_norm(ctx, in[0], a->groups, 1e-5f, w, b);
  return op_batch_norm_local(ctx, in[0], a->groups, 1e-5f, w, b);
}

TEST(bf16_norms_are_the_fp32_reference_rounded_once) {
  /* LayerNorm over tokens (UNet transformer, AudioMAE, CLAP) */
  Bf16In ln[] = {{SHAPE(2, 5, 24), .grad = true}, {SHAPE(24), .grad = true}, {SHAPE(24), .grad = true}};
  EXPECT(bf16_check("layer_norm", norm_fn, &(NormArg){0, 0, true}, 3, ln, 0.0f), "layer_norm");
  EXPECT(bf16_check("layer_norm, no affine", norm_fn, &(NormArg){0, 0, false}, 1, ln, 0.0f), "layer_norm plain");
  /* GroupNorm on NCHW maps (UNet, VAE) and on (B, C, N) */
  Bf16In gn4[] = {{SHAPE(2, 8, 3, 5), .grad = true}, {SHAPE(8), .grad = true}, {SHAPE(8), .grad = true}};
  EXPECT(bf16_check("group_norm 4-D", norm_fn, &(NormArg){1, 4, true}, 3, gn4, 0.0f), "group_norm 4-D");
  Bf16In gn3[] = {{SHAPE(3, 6, 7), .grad = true}, {SHAPE(6), .grad = false}, {SHAPE(6), .grad = false}};
  EXPECT(bf16_check("group_norm 3-D, frozen affine", norm_fn, &(NormArg){1, 2, true}, 3, gn3, 0.0f), "group_norm 3-D");
  /* BatchNormLocal (discriminator heads): a batch of 4 in virtual batches of 2 */
  Bf16In bn[] = {{SHAPE(4, 5, 6), .grad = true}, {SHAPE(5), .grad = true}, {SHAPE(5), .grad = true}};
  EXPECT(bf16_check("batch_norm_local", norm_fn, &(NormArg){2, 2, true}, 3, bn, 0.0f), "batch_norm_local");
}

/* ------------------------------------------------------------------ L2 and spectral */

static Tensor *l2_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_l2_normalize(ctx, in[0], *(const float *)arg);
}

TEST(bf16_l2_normalize_is_the_fp32_reference_rounded_once) {
  Bf16In in[] = {{SHAPE(3, 4, 16), .grad = true}};
  EXPECT(bf16_check("l2_normalize", l2_fn, &(float){1e-12f}, 1, in, 0.0f), "l2_normalize");
  /* rows of norm ≤ 0.1·√8 < eps: the clamped branch */
  Bf16In small[] = {{SHAPE(5, 8), .grad = true, .lo = -0.1f, .hi = 0.1f}};
  EXPECT(bf16_check("l2_normalize, clamped", l2_fn, &(float){1.0f}, 1, small, 0.0f), "l2_normalize clamped");
}

/* u and v are fp32 (as models/disc_heads.c keeps them) with the same start in both runs;
 * training mode first runs the power iteration on the weight. */
static Tensor *spectral_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  Tensor *w = in[0];
  int64_t OUT = w->shape[0], IN = w->numel / OUT;
  SpectralNorm sn = {.u = tensor_new(ctx, DT_F32, SHAPE(OUT)), .v = tensor_new(ctx, DT_F32, SHAPE(IN)),
                     .n_power_iterations = 1, .eps = 1e-12f};
  float u[64], v[64];
  for (int64_t i = 0; i < OUT; i++) u[i] = 0.2f + 0.05f * (float)i;
  for (int64_t i = 0; i < IN; i++) v[i] = 0.1f - 0.01f * (float)i;
  tensor_from_host_f32(ctx, sn.u, u);
  tensor_from_host_f32(ctx, sn.v, v);
  return op_spectral_norm(ctx, &sn, w, *(const bool *)arg);
}

TEST(bf16_spectral_norm_is_the_fp32_reference_rounded_once) {
  Bf16In in[] = {{SHAPE(6, 4, 3), .grad = true}}; /* SpectralConv1d weight (OUT, IN, K) */
  EXPECT(bf16_check("spectral_norm, training", spectral_fn, &(bool){true}, 1, in, 0.0f), "training");
  EXPECT(bf16_check("spectral_norm, eval", spectral_fn, &(bool){false}, 1, in, 0.0f), "eval");
}

/* ------------------------------------------------------------------ shape ops */

static Tensor *reshape_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_reshape(ctx, in[0], SHAPE(4, 15));
}

static Tensor *concat_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const int *a = arg; /* {n, dim} */
  return op_concat(ctx, in, a[0], a[1]);
}

/* The VAE's moments split: mean and logvar, two slices (copies) of one x, joined swapped. */
static Tensor *slices_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  Tensor *parts[2] = {op_slice(ctx, in[0], 1, 3, 3), op_slice(ctx, in[0], -3, 0, 3)};
  return op_concat(ctx, parts, 2, 1);
}

/* A batch slice along dim 0: a view of x. */
static Tensor *slice_view_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_slice(ctx, in[0], 0, 1, 1);
}

static Tensor *permute_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_permute(ctx, in[0], arg);
}

static Tensor *transpose_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_transpose_last2(ctx, in[0]);
}

TEST(bf16_shape_ops_move_values_exactly) {
  Bf16In x[] = {{SHAPE(3, 4, 5), .grad = true}};
  EXPECT(bf16_check("reshape", reshape_fn, NULL, 1, x, 0.0f), "reshape");
  EXPECT(bf16_check("transpose_last2", transpose_fn, NULL, 1, x, 0.0f), "transpose_last2");
  /* UNet skip: channels of NCHW maps */
  Bf16In skip[] = {{SHAPE(2, 3, 2, 5), .grad = true}, {SHAPE(2, 1, 2, 5), .grad = true},
                   {SHAPE(2, 4, 2, 5), .grad = false}};
  EXPECT(bf16_check("concat dim 1", concat_fn, (int[]){3, 1}, 3, skip, 0.0f), "concat dim 1");
  /* more inputs than a tape node holds: concatenated in groups first */
  const int64_t rows[2][2] = {{1, 6}, {2, 6}};
  Bf16In many[7];
  for (int i = 0; i < 7; i++) many[i] = (Bf16In){2, rows[i % 2], .grad = true};
  EXPECT(bf16_check("concat 7 inputs", concat_fn, (int[]){7, -2}, 7, many, 0.0f), "concat 7");
  Bf16In moments[] = {{SHAPE(2, 6, 4, 3), .grad = true}};
  EXPECT(bf16_check("slices", slices_fn, NULL, 1, moments, 0.0f), "slices");
  EXPECT(bf16_check("slice view", slice_view_fn, NULL, 1, moments, 0.0f), "slice view");
  /* NCHW <-> tokens, and a permute that takes the gather kernel on the GPU */
  EXPECT(bf16_check("permute to tokens", permute_fn, (int[]){0, 2, 3, 1}, 1, moments, 0.0f), "permute 0231");
  Bf16In tokens[] = {{SHAPE(2, 4, 3, 6), .grad = true}};
  EXPECT(bf16_check("permute from tokens", permute_fn, (int[]){0, 3, 1, 2}, 1, tokens, 0.0f), "permute 0312");
  EXPECT(bf16_check("permute gather", permute_fn, (int[]){2, 0, 3, 1}, 1, tokens, 0.0f), "permute 2031");
}

/* ------------------------------------------------------------------ op_cast */

/* Ties between two bf16 values (1 + 2^-8 lies halfway between 1 and 1 + 2^-7) and values
 * next to them, with the value round to nearest, ties to even gives. */
static const float kCastIn[6] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -(1.0f + 0x1p-8f),
                                 3.0f, 0.1f};
static const float kCastOut[6] = {1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, -1.0f, 3.0f, 0.10009765625f};

TEST(cast_round_trip_rounds_to_nearest_even_forward_and_back) {
  Ctx *ctx = ctx_create_cpu(1);
  ctx_set_grad(ctx, true);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(2, 3));
  tensor_from_host_f32(ctx, x, kCastIn);
  x->requires_grad = true;
  EXPECT(op_cast(ctx, x, DT_F32) == x, "a cast to x's own dtype is x itself");
  Tensor *h = op_cast(ctx, x, DT_BF16), *y = op_cast(ctx, h, DT_F32);
  ASSERT(h->dtype == DT_BF16 && y->dtype == DT_F32 && y->ndim == 2 && y->shape[1] == 3, "dtypes and shape");
  float hv[6], yv[6], g[6];
  tensor_to_host_f32(ctx, h, hv);
  tensor_to_host_f32(ctx, y, yv);
  for (int i = 0; i < 6; i++) {
    EXPECT(hv[i] == kCastOut[i], "bf16 [%d]: %.9g, expected %.9g", i, hv[i], kCastOut[i]);
    EXPECT(yv[i] == kCastOut[i], "back to fp32 [%d]: %.9g, expected %.9g", i, yv[i], kCastOut[i]);
  }
  /* The same values as the gradient: through the bf16 tensor they are rounded once. */
  Tensor *dy = tensor_new(ctx, DT_F32, SHAPE(2, 3));
  tensor_from_host_f32(ctx, dy, kCastIn);
  backward_from(ctx, y, dy);
  ASSERT(x->grad && x->grad->dtype == DT_F32 && h->grad && h->grad->dtype == DT_BF16, "gradient dtypes");
  tensor_to_host_f32(ctx, x->grad, g);
  for (int i = 0; i < 6; i++) EXPECT(g[i] == kCastOut[i], "dx [%d]: %.9g, expected %.9g", i, g[i], kCastOut[i]);
  ctx_destroy(ctx);
}

/* A bf16 x cast to fp32 twice: each backward adds dy rounded to bf16 into x's bf16
 * gradient and rounds the sum, as the GPU does (convert, then the accumulating copy). */
TEST(cast_backward_accumulates_into_a_bf16_gradient) {
  Ctx *ctx = ctx_create_cpu(1);
  ctx_set_grad(ctx, true);
  Tensor *x = tensor_zeros(ctx, DT_BF16, SHAPE(1, 6));
  x->requires_grad = true;
  Tensor *parts[2] = {op_cast(ctx, x, DT_F32), op_cast(ctx, x, DT_F32)};
  Tensor *y = op_concat(ctx, parts, 2, 0); /* (2, 6) fp32 */
  const float g1[6] = {1.0f, 1.0f + 0x1p-7f, 1.0f + 0x1p-8f, 0.1f, -2.0f, 1e-3f};
  const float g2[6] = {0x1p-8f, 0x1p-8f, 0x1p-8f, 0.2f, 0.5f, 3.0f};
  float gv[12], dx[6];
  for (int i = 0; i < 6; i++) gv[i] = g1[i], gv[6 + i] = g2[i];
  Tensor *dy = tensor_new(ctx, DT_F32, SHAPE(2, 6));
  tensor_from_host_f32(ctx, dy, gv);
  backward_from(ctx, y, dy);
  ASSERT(x->grad && x->grad->dtype == DT_BF16, "x's gradient is bf16");
  tensor_to_host_f32(ctx, x->grad, dx);
  for (int i = 0; i < 6; i++) {
    float e = round_bf16(round_bf16(g1[i]) + round_bf16(g2[i])); /* in either order */
    EXPECT(dx[i] == e, "dx [%d]: %.9g, expected %.9g", i, dx[i], e);
  }
  ctx_destroy(ctx);
}

/* A model with bf16 weights as the frozen networks run: fp32 in, cast to the weights'
 * dtype, the op, cast back to fp32 out. The input holds bf16 values, so only the bf16 op's
 * own rounding is left in the fp32 output and in x's fp32 gradient (the harness compares
 * fp32 results unrounded): at most half a bf16 step, 2^-8 of the element (≤ the largest). */
static Tensor *boundary_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  Tensor *h = op_cast(ctx, in[0], in[1]->dtype);
  return op_cast(ctx, op_layer_norm(ctx, h, 1e-5f, in[1], in[2]), DT_F32);
}

TEST(bf16_cast_at_the_network_boundary) {
  float x[3 * 16];
  for (int i = 0; i < 3 * 16; i++) x[i] = round_bf16(0.37f * (float)((i * 7) % 23) - 4.0f);
  Bf16In in[] = {{SHAPE(3, 16), .grad = true, .keep_f32 = true, .values = x},
                 {SHAPE(16), .grad = true},
                 {SHAPE(16), .grad = true}};
  EXPECT(bf16_check("cast, layer_norm, cast", boundary_fn, NULL, 3, in, 0x1p-8f), "boundary");
}

TEST_EXIT_MSG(bf16_concat_rejects_mixed_dtypes, 1, "concat: xs[1] is bf16, xs[0] is fp32; one dtype, fp32 or bf16") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *xs[2] = {tensor_zeros(ctx, DT_F32, SHAPE(2, 3)), tensor_zeros(ctx, DT_BF16, SHAPE(2, 3))};
  op_concat(ctx, xs, 2, 0);
}

TEST_EXIT_MSG(cast_rejects_int32, 1, "only fp32 <-> bf16") {
  Ctx *ctx = ctx_create_cpu(1);
  op_cast(ctx, tensor_new(ctx, DT_I32, SHAPE(4)), DT_F32);
}
