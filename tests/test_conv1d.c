/* conv1d and conv_transpose1d on the CPU: against their definitions (direct sums in double),
 * the adjoint relation between them, gradients against finite differences (odd sizes,
 * batch 2, zero and circular padding, groups, frozen weights), accumulation, HiFi-GAN's upsampling
 * lengths, and the fatal checks on bad arguments. */
#include "gradcheck.h"
#include "kernels/conv1d.h"
#include "test.h"

static Tensor *input(Ctx *ctx, uint64_t seed, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, t, seed, -1.0f, 1.0f);
  t->requires_grad = true;
  return t;
}

static int wrap(int i, int T) { return ((i % T) + T) % T; }

/* ------------------------------------------------------------------ definitions */

/* y[n,o,j] = b[o] + Σ_{c,k} w[o,c,k] · xpad[n, g·CG + c, j·s − pl + k·d], xpad zero or wrapped,
 * c < CG = CIN/G over the input channels of o's group g = ⌊o / (COUT/G)⌋. */
static void check_conv1d_direct(int B, int CIN, int T, int COUT, int K, Conv1dArgs a, bool bias) {
  Ctx *ctx = ctx_create_cpu(0);
  const int G = conv1d_groups(a), CG = CIN / G, OG = COUT / G;
  Tensor *x = input(ctx, 1, SHAPE(B, CIN, T));
  Tensor *w = input(ctx, 2, SHAPE(COUT, CG, K));
  Tensor *b = bias ? input(ctx, 3, SHAPE(COUT)) : NULL;
  Tensor *y = op_conv1d(ctx, x, w, b, a);
  int TO = (T + a.pad_left + a.pad_right - a.dilation * (K - 1) - 1) / a.stride + 1;
  CHECK_SHAPE("test", y, B, COUT, TO);
  const float *X = x->data, *W = w->data, *Y = y->data;
  for (int n = 0; n < B; n++)
    for (int o = 0; o < COUT; o++)
      for (int j = 0; j < TO; j++) {
        double s = b ? ((float *)b->data)[o] : 0.0;
        for (int c = 0; c < CG; c++)
          for (int k = 0; k < K; k++) {
            int t = j * a.stride - a.pad_left + k * a.dilation, ci = o / OG * CG + c;
            if (a.circular) t = wrap(t, T);
            if (t >= 0 && t < T) s += (double)W[(o * CG + c) * K + k] * X[(n * CIN + ci) * T + t];
          }
        EXPECT_NEAR(Y[(n * COUT + o) * TO + j], s, 1e-5);
      }
  ctx_destroy(ctx);
}

TEST(conv1d_matches_direct_sum) {
  check_conv1d_direct(2, 3, 13, 4, 3, (Conv1dArgs){2, 2, 1, 2, false, 1}, true); /* stride 2, dil 2, pads 2/1 */
  check_conv1d_direct(2, 3, 17, 2, 3, conv1d_args(1, 5, 5), false);           /* HiFi-GAN 'same', dil 5 */
  check_conv1d_direct(1, 2, 9, 3, 1, conv1d_args(1, 0, 1), true);             /* 1x1 */
}

/* Groups (HiFi-GAN's multi-scale discriminator: stride 2 or 4, kernel 41, groups 4 or 16). */
TEST(conv1d_grouped_matches_direct_sum) {
  check_conv1d_direct(2, 4, 23, 6, 5, (Conv1dArgs){2, 2, 2, 1, false, 2}, true);  /* 2 groups, stride 2 */
  check_conv1d_direct(2, 8, 37, 8, 9, (Conv1dArgs){4, 4, 4, 1, false, 8}, true);  /* depthwise, stride 4 */
  check_conv1d_direct(1, 6, 13, 9, 3, (Conv1dArgs){1, 2, 1, 2, false, 3}, false); /* dilation 2, pads 2/1 */
  check_conv1d_direct(2, 4, 11, 4, 3, (Conv1dArgs){1, 1, 1, 1, true, 2}, true);   /* circular */
}

TEST(conv1d_circular_matches_direct_sum) {
  check_conv1d_direct(2, 3, 11, 4, 9, (Conv1dArgs){1, 4, 4, 1, true, 1}, true); /* StyleGAN-T head: k 9, pad 4 */
  check_conv1d_direct(2, 2, 10, 3, 3, (Conv1dArgs){2, 3, 1, 2, true, 1}, true); /* stride 2, dil 2, pads 3/1 */
  check_conv1d_direct(1, 2, 3, 2, 9, (Conv1dArgs){1, 4, 4, 1, true, 1}, false); /* pads longer than x: wraps twice */
}

/* y[n,o,j] = b[o] + Σ over (c, t, k) with t·s − p + k·d = j of x[n,c,t] · w[c,o,k]. */
static void check_transpose_direct(int B, int CIN, int T, int COUT, int K, ConvTranspose1dArgs a, bool bias) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = input(ctx, 4, SHAPE(B, CIN, T));
  Tensor *w = input(ctx, 5, SHAPE(CIN, COUT, K));
  Tensor *b = bias ? input(ctx, 6, SHAPE(COUT)) : NULL;
  Tensor *y = op_conv_transpose1d(ctx, x, w, b, a.stride, a.padding, a.output_padding, a.dilation);
  int TO = (T - 1) * a.stride - 2 * a.padding + a.dilation * (K - 1) + a.output_padding + 1;
  CHECK_SHAPE("test", y, B, COUT, TO);
  double *ref = calloc((size_t)B * COUT * TO, sizeof(double));
  const float *X = x->data, *W = w->data, *Y = y->data;
  for (int n = 0; n < B; n++)
    for (int o = 0; o < COUT; o++) {
      for (int j = 0; j < TO; j++) ref[(n * COUT + o) * TO + j] = b ? ((float *)b->data)[o] : 0.0;
      for (int c = 0; c < CIN; c++)
        for (int t = 0; t < T; t++)
          for (int k = 0; k < K; k++) {
            int j = t * a.stride - a.padding + k * a.dilation;
            if (j >= 0 && j < TO)
              ref[(n * COUT + o) * TO + j] += (double)X[(n * CIN + c) * T + t] * W[(c * COUT + o) * K + k];
          }
    }
  for (int i = 0; i < B * COUT * TO; i++) EXPECT_NEAR(Y[i], ref[i], 1e-5);
  free(ref);
  ctx_destroy(ctx);
}

TEST(conv_transpose1d_matches_direct_sum) {
  check_transpose_direct(2, 3, 7, 2, 4, (ConvTranspose1dArgs){3, 1, 1, 2}, true);  /* output_padding 1, dil 2 */
  check_transpose_direct(2, 3, 5, 2, 16, (ConvTranspose1dArgs){5, 5, 0, 1}, true); /* HiFi-GAN stage 1 */
  check_transpose_direct(1, 2, 6, 3, 3, (ConvTranspose1dArgs){1, 2, 0, 1}, false); /* padding > 0, stride 1 */
}

/* <conv_transpose1d(x, w), u> = <x, conv1d(u, w)> for the same w, stride, padding and dilation:
 * the transposed conv is the conv's adjoint. */
TEST(conv_transpose1d_is_the_adjoint_of_conv1d) {
  Ctx *ctx = ctx_create_cpu(0);
  int B = 2, CIN = 3, COUT = 4, T = 9, K = 5, s = 2, p = 3, d = 2, op = 1;
  Tensor *x = input(ctx, 7, SHAPE(B, CIN, T));
  Tensor *w = input(ctx, 8, SHAPE(CIN, COUT, K));
  Tensor *yt = op_conv_transpose1d(ctx, x, w, NULL, s, p, op, d); /* (B, COUT, TO) */
  Tensor *u = input(ctx, 9, SHAPE(B, COUT, yt->shape[2]));
  Tensor *cu = op_conv1d(ctx, u, w, NULL, conv1d_args(s, p, d)); /* (B, CIN, T) */
  ASSERT(tensor_same_shape(cu, x), "conv1d of the transposed output has shape %s, x %s", TENSOR_SHAPE_STR(cu),
         TENSOR_SHAPE_STR(x));
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < yt->numel; i++) lhs += (double)((float *)yt->data)[i] * ((float *)u->data)[i];
  for (int64_t i = 0; i < x->numel; i++) rhs += (double)((float *)x->data)[i] * ((float *)cu->data)[i];
  EXPECT_NEAR(lhs, rhs, 1e-4);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ finite differences */

enum { L_X, L_W, L_B, L_R, L_N };

typedef struct {
  bool transpose, bias;
  Conv1dArgs a;
  ConvTranspose1dArgs t;
} GcCase;

/* loss = Σ y ⊙ r, r a fixed random weighting. */
static Tensor *conv_loss(Ctx *ctx, Tensor **p, void *user) {
  GcCase *g = user; /* leaves: x, w, [b,] r */
  Tensor *b = g->bias ? p[L_B] : NULL, *r = p[g->bias ? L_R : L_B];
  Tensor *y = g->transpose ? op_conv_transpose1d(ctx, p[L_X], p[L_W], b, g->t.stride, g->t.padding, g->t.output_padding,
                                                 g->t.dilation)
                           : op_conv1d(ctx, p[L_X], p[L_W], b, g->a);
  return op_sum(ctx, op_mul(ctx, y, r));
}

static void gradcheck_case(GcCase g, int B, int CIN, int T, int COUT, int K, bool bias, bool freeze_w) {
  Ctx *ctx = ctx_create_cpu(0);
  g.bias = bias;
  Tensor *p[L_N];
  p[L_X] = input(ctx, 10, SHAPE(B, CIN, T));
  const int CG = g.transpose ? CIN : CIN / conv1d_groups(g.a); /* w's input channels */
  p[L_W] =
      param_new(ctx, "conv.weight", DT_F32, SHAPE(g.transpose ? CIN : COUT, g.transpose ? COUT : CG, K), !freeze_w);
  fill_uniform(ctx, p[L_W], 11, -1.0f, 1.0f);
  p[L_B] = bias ? param_new(ctx, "conv.bias", DT_F32, SHAPE(COUT), true) : NULL;
  if (bias) fill_uniform(ctx, p[L_B], 12, -1.0f, 1.0f);
  int TO = g.transpose ? conv_transpose1d_out_len(T, K, g.t) : conv1d_out_len(T, K, g.a);
  p[L_R] = tensor_new_persistent(ctx, DT_F32, SHAPE(B, COUT, TO));
  fill_uniform(ctx, p[L_R], 13, -1.0f, 1.0f);
  Tensor *leaves[L_N];
  int n = 0;
  for (int i = 0; i < L_N; i++)
    if (p[i]) leaves[n++] = p[i];
  EXPECT(gradcheck(ctx, conv_loss, leaves, n, &g, (GradcheckOpts){0}) == 0, "%s gradients disagree",
         g.transpose ? "conv_transpose1d" : "conv1d");
  if (freeze_w) EXPECT(p[L_W]->grad == NULL, "a frozen weight received a gradient");
  ctx_destroy(ctx);
}

TEST(conv1d_gradients_match_finite_differences) {
  gradcheck_case((GcCase){.a = {2, 2, 1, 2, false}}, 2, 3, 13, 4, 3, true, false);
  gradcheck_case((GcCase){.a = conv1d_args(1, 3, 3)}, 2, 3, 11, 2, 3, false, false); /* dil 3 'same' */
}

TEST(conv1d_grouped_gradients_match_finite_differences) {
  gradcheck_case((GcCase){.a = {2, 2, 2, 1, false, 2}}, 2, 4, 13, 6, 5, true, false);
  gradcheck_case((GcCase){.a = {4, 4, 4, 1, false, 4}}, 2, 4, 17, 8, 9, true, false); /* depthwise-like, stride 4 */
  gradcheck_case((GcCase){.a = {1, 1, 1, 2, true, 3}}, 2, 6, 7, 3, 3, false, false);  /* circular, dilation 2 */
  gradcheck_case((GcCase){.a = {2, 2, 2, 1, false, 2}}, 2, 4, 13, 6, 5, true, true);  /* frozen weight */
}

TEST(conv1d_circular_gradients_match_finite_differences) {
  gradcheck_case((GcCase){.a = {1, 4, 4, 1, true}}, 2, 3, 11, 2, 9, true, false);
  gradcheck_case((GcCase){.a = {2, 3, 1, 2, true}}, 2, 2, 7, 3, 3, true, false);
  gradcheck_case((GcCase){.a = {1, 4, 4, 1, true}}, 2, 2, 3, 2, 9, false, false); /* wraps twice */
}

TEST(conv_transpose1d_gradients_match_finite_differences) {
  gradcheck_case((GcCase){.transpose = true, .t = {3, 1, 1, 2}}, 2, 3, 7, 2, 4, true, false);
  gradcheck_case((GcCase){.transpose = true, .t = {4, 6, 0, 1}}, 2, 3, 5, 2, 16, true, false); /* HiFi-GAN 2 */
  gradcheck_case((GcCase){.transpose = true, .t = {2, 1, 0, 1}}, 2, 2, 9, 3, 4, false, false);
}

TEST(conv1d_frozen_weight_passes_gradient_to_x) {
  gradcheck_case((GcCase){.a = {1, 4, 4, 1, true}}, 2, 3, 11, 2, 9, true, true);
  gradcheck_case((GcCase){.transpose = true, .t = {3, 1, 1, 2}}, 2, 3, 7, 2, 4, true, true);
}

/* ------------------------------------------------------------------ accumulation */

/* Backward adds to what the gradient buffers hold: (pre + grads) − pre = grads. */
static void check_accumulates(bool transpose, Conv1dArgs a, ConvTranspose1dArgs t) {
  int B = 2, CIN = 3, T = 9, COUT = 2, K = 3;
  int TO = transpose ? conv_transpose1d_out_len(T, K, t) : conv1d_out_len(T, K, a);
  int nx = B * CIN * T, nw = CIN * COUT * K, ny = B * COUT * TO;
  float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float)), *dy = malloc(ny * sizeof(float));
  float *g0 = calloc(nx + nw + COUT, sizeof(float)), *g1 = malloc((nx + nw + COUT) * sizeof(float));
  for (int i = 0; i < nx; i++) x[i] = sinf(0.7f * i);
  for (int i = 0; i < nw; i++) w[i] = cosf(1.3f * i);
  for (int i = 0; i < ny; i++) dy[i] = sinf(0.3f * i + 1);
  for (int i = 0; i < nx + nw + COUT; i++) g1[i] = 0.25f * (float)(i % 7) - 0.5f;
  float *pre = malloc((nx + nw + COUT) * sizeof(float));
  memcpy(pre, g1, (nx + nw + COUT) * sizeof(float));
  for (int pass = 0; pass < 2; pass++) {
    float *g = pass ? g1 : g0;
    if (transpose)
      conv_transpose1d_backward_cpu(g, g + nx, g + nx + nw, dy, x, w, B, CIN, T, COUT, K, t);
    else
      conv1d_backward_cpu(g, g + nx, g + nx + nw, dy, x, w, B, CIN, T, COUT, K, a);
  }
  for (int i = 0; i < nx + nw + COUT; i++) EXPECT_NEAR(g1[i] - pre[i], g0[i], 1e-5);
  free(x), free(w), free(dy), free(g0), free(g1), free(pre);
}

TEST(conv1d_backward_accumulates) {
  check_accumulates(false, (Conv1dArgs){2, 2, 1, 2, false, 1}, (ConvTranspose1dArgs){0});
  check_accumulates(false, (Conv1dArgs){1, 2, 3, 1, true, 1}, (ConvTranspose1dArgs){0});
  check_accumulates(true, (Conv1dArgs){0}, (ConvTranspose1dArgs){3, 1, 1, 2});
}

/* ------------------------------------------------------------------ HiFi-GAN lengths */

/* MusicLDM's vocoder upsamples 1024 mel frames by 5·4·2·2·2 = 160. A stage of stride u,
 * kernel K, padding ⌊(K − u)/2⌋ maps T to u·T + (K − u) − 2⌊(K − u)/2⌋: only the first
 * (K − u = 11, odd) adds a sample, which the later stages multiply by 32, so 163840 + 32
 * (reference/musicldm.md: "the transposed-conv padding adds 32"). */
TEST(conv_transpose1d_hifigan_lengths) {
  Ctx *ctx = ctx_create_cpu(0);
  bool was = ctx_set_grad(ctx, false);
  const int rates[5] = {5, 4, 2, 2, 2}, kernels[5] = {16, 16, 8, 4, 4};
  Tensor *h = tensor_zeros(ctx, DT_F32, SHAPE(1, 1, 1024));
  for (int i = 0; i < 5; i++) {
    Tensor *w = tensor_zeros(ctx, DT_F32, SHAPE(1, 1, kernels[i]));
    h = op_conv_transpose1d(ctx, h, w, NULL, rates[i], (kernels[i] - rates[i]) / 2, 0, 1);
  }
  EXPECT(h->shape[2] == 163872, "1024 frames upsample to %lld samples, expected 163872", (long long)h->shape[2]);
  ctx_set_grad(ctx, was);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ bad arguments */

TEST_EXIT_MSG(conv1d_channel_mismatch_is_fatal, 1,
              "conv1d 'disc.conv.weight': w has shape [4, 2, 9], expected [*, 3, *]") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(2, 3, 11));
  Tensor *w = param_new(ctx, "disc.conv.weight", DT_F32, SHAPE(4, 2, 9), true);
  op_conv1d(ctx, x, w, NULL, conv1d_args(1, 4, 1));
}

TEST_EXIT_MSG(conv1d_groups_must_divide_channels, 1, "conv1d 'msd.convs.1.weight': groups 3 must divide the 4 input") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(1, 4, 11));
  Tensor *w = param_new(ctx, "msd.convs.1.weight", DT_F32, SHAPE(6, 1, 3), true);
  op_conv1d(ctx, x, w, NULL, (Conv1dArgs){1, 1, 1, 1, false, 3});
}

TEST_EXIT_MSG(conv1d_input_shorter_than_kernel_is_fatal, 1, "is shorter than the kernel") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(1, 2, 5));
  Tensor *w = param_new(ctx, "w", DT_F32, SHAPE(3, 2, 3), true);
  op_conv1d(ctx, x, w, NULL, conv1d_args(1, 0, 3)); /* span 7 > 5 */
}

TEST_EXIT_MSG(conv_transpose1d_bias_mismatch_is_fatal, 1,
              "conv_transpose1d 'ups.0.weight': b has shape [4], expected [2]") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(2, 4, 7));
  Tensor *w = param_new(ctx, "ups.0.weight", DT_F32, SHAPE(4, 2, 16), true);
  Tensor *b = param_new(ctx, "ups.0.bias", DT_F32, SHAPE(4), true);
  op_conv_transpose1d(ctx, x, w, b, 5, 5, 0, 1);
}

TEST_EXIT_MSG(conv_transpose1d_output_padding_is_checked, 1, "output_padding 2 must be in [0, stride 2)") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(1, 2, 7));
  Tensor *w = param_new(ctx, "w", DT_F32, SHAPE(2, 3, 4), true);
  op_conv_transpose1d(ctx, x, w, NULL, 2, 1, 2, 1);
}
