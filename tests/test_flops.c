/* Model-FLOP counting (ctx->flops, the numerator of the trainer's TFLOP/s and MFU): every
 * counted op is checked against an independent route to the same product — the same math
 * written with other ops (attention as matmuls and softmax, a 1 x K conv2d as a conv1d, a
 * K = 1 conv1d as a linear, the transposed convolution as the input gradient of the plain
 * one) — forward and backward, with frozen inputs removing their gradient's share; plus the
 * closed forms on a few shapes and the GPU peak table. */
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "kernels/ops.h"
#include "test.h"

static Tensor *leaf(Ctx *ctx, uint64_t seed, bool grad, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, t, seed, -1.0f, 1.0f);
  t->requires_grad = grad;
  return t;
}

/* FLOPs counted by the forward (*fwd) and by backward of sum(y) (*bwd). */
typedef Tensor *(*Build)(Ctx *ctx, Tensor **in);
static void count(Ctx *ctx, Build f, Tensor **in, double *fwd, double *bwd) {
  ctx->flops = 0;
  Tensor *y = f(ctx, in);
  *fwd = ctx->flops;
  ctx->flops = 0;
  backward(ctx, op_sum(ctx, y));
  *bwd = ctx->flops;
  ctx_step_reset(ctx);
}

/* ------------------------------------------------------------------ attention vs matmuls */

enum { AB = 2, AT = 5, AS = 7, AH = 3, AD = 4 }; /* batch, query/key lengths, heads, head dim */

static Tensor *attention_fused(Ctx *ctx, Tensor **in) { return op_attention(ctx, in[0], in[1], in[2], AH, NULL); }

/* The same attention from matmuls: heads split to (B, NH, T, D), S = Q Kᵀ, P = softmax(S/√D), P V. */
static Tensor *heads(Ctx *ctx, Tensor *x, int64_t T) {
  return op_permute(ctx, op_reshape(ctx, x, SHAPE(AB, T, AH, AD)), (int[]){0, 2, 1, 3});
}
static Tensor *attention_matmuls(Ctx *ctx, Tensor **in) {
  Tensor *q = heads(ctx, in[0], AT), *k = heads(ctx, in[1], AS), *v = heads(ctx, in[2], AS);
  Tensor *p = op_softmax(ctx, op_scale(ctx, op_matmul(ctx, q, k, false, true), 1.0f / sqrtf((float)AD)));
  return op_matmul(ctx, p, v, false, false);
}

TEST(flops_attention_counts_what_its_matmuls_count) {
  Ctx *ctx = ctx_create_cpu(1);
  for (int frozen = 0; frozen < 4; frozen++) { /* 0: all need grads; 1..3: q, k or v frozen */
    Tensor *in[3];
    in[0] = leaf(ctx, 1, frozen != 1, SHAPE(AB, AT, AH * AD));
    in[1] = leaf(ctx, 2, frozen != 2, SHAPE(AB, AS, AH * AD));
    in[2] = leaf(ctx, 3, frozen != 3, SHAPE(AB, AS, AH * AD));
    double f1, b1, f2, b2;
    count(ctx, attention_fused, in, &f1, &b1);
    count(ctx, attention_matmuls, in, &f2, &b2);
    EXPECT(f1 == f2 && f1 == 4.0 * AB * AT * AS * AH * AD, "forward %g vs matmuls %g", f1, f2);
    EXPECT(b1 == b2, "frozen %d: backward %g vs matmuls %g", frozen, b1, b2);
  }
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ convolutions */

static Tensor *conv2d_1xk(Ctx *ctx, Tensor **in) {
  Conv2dArgs a = {.stride_h = 1, .stride_w = 2, .pad_left = 1, .pad_right = 1, .dil_h = 1, .dil_w = 1};
  return op_conv2d(ctx, in[0], in[1], NULL, a);
}
static Tensor *conv1d_k(Ctx *ctx, Tensor **in) {
  Tensor *x = op_reshape(ctx, in[0], SHAPE(in[0]->shape[0], in[0]->shape[1], in[0]->shape[3]));
  Tensor *w = op_reshape(ctx, in[1], SHAPE(in[1]->shape[0], in[1]->shape[1], in[1]->shape[3]));
  return op_conv1d(ctx, x, w, NULL, (Conv1dArgs){.stride = 2, .pad_left = 1, .pad_right = 1, .dilation = 1});
}

TEST(flops_conv2d_with_a_1xK_kernel_counts_as_conv1d) {
  Ctx *ctx = ctx_create_cpu(1);
  for (int frozen = 0; frozen < 3; frozen++) { /* 1: x frozen, 2: w frozen */
    Tensor *in[2] = {leaf(ctx, 1, frozen != 1, SHAPE(2, 3, 1, 11)), leaf(ctx, 2, frozen != 2, SHAPE(5, 3, 1, 3))};
    double f1, b1, f2, b2;
    count(ctx, conv2d_1xk, in, &f1, &b1);
    count(ctx, conv1d_k, in, &f2, &b2);
    /* output length (11 + 2 - 3) / 2 + 1 = 6: 2 · (2·5·6 outputs) · 3 · 3 */
    EXPECT(f1 == f2 && f1 == 2.0 * (2 * 5 * 6) * 3 * 3, "forward %g vs %g", f1, f2);
    EXPECT(b1 == b2 && b1 == f1 * (frozen ? 1 : 2), "frozen %d: backward %g vs %g", frozen, b1, b2);
  }
  ctx_destroy(ctx);
}

static Tensor *conv1d_k1(Ctx *ctx, Tensor **in) {
  return op_conv1d(ctx, op_permute(ctx, in[0], (int[]){0, 2, 1}), op_reshape(ctx, in[1], SHAPE(4, 6, 1)), NULL,
                   (Conv1dArgs){.stride = 1, .dilation = 1});
}
static Tensor *linear_of(Ctx *ctx, Tensor **in) { return op_linear(ctx, in[0], in[1], NULL); }

TEST(flops_pointwise_conv1d_counts_as_linear) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *in[2] = {leaf(ctx, 1, true, SHAPE(3, 9, 6)), leaf(ctx, 2, true, SHAPE(4, 6))};
  double f1, b1, f2, b2;
  count(ctx, conv1d_k1, in, &f1, &b1);
  count(ctx, linear_of, in, &f2, &b2);
  EXPECT(f1 == f2 && f1 == 2.0 * 27 * 6 * 4, "forward %g vs linear %g", f1, f2);
  EXPECT(b1 == b2 && b1 == 2 * f1, "backward %g vs linear %g", b1, b2);
  ctx_destroy(ctx);
}

/* conv_transpose1d(x, w) is the input gradient of conv1d with the same weight: one forward of
 * the transpose costs what the dx half of the plain convolution's backward costs. */
static Tensor *convt(Ctx *ctx, Tensor **in) { return op_conv_transpose1d(ctx, in[0], in[1], NULL, 4, 2, 0, 1); }
static Tensor *conv_plain(Ctx *ctx, Tensor **in) {
  return op_conv1d(ctx, in[0], in[1], NULL, (Conv1dArgs){.stride = 4, .pad_left = 2, .pad_right = 2, .dilation = 1});
}

TEST(flops_transposed_conv1d_counts_as_the_plain_convolutions_input_gradient) {
  Ctx *ctx = ctx_create_cpu(1);
  /* plain: x (2, 5, 36) -> y (2, 6, 9) with w (6, 5, 8); the transpose maps (2, 6, 9) -> (2, 5, 36)
   * with w read as (CIN 6, COUT 5, 8). */
  Tensor *w = leaf(ctx, 3, false, SHAPE(6, 5, 8));
  Tensor *plain[2] = {leaf(ctx, 1, true, SHAPE(2, 5, 36)), w};
  Tensor *trans[2] = {leaf(ctx, 2, true, SHAPE(2, 6, 9)), w};
  double f1, b1, f2, b2;
  count(ctx, conv_plain, plain, &f1, &b1); /* w frozen: b1 is dx only */
  count(ctx, convt, trans, &f2, &b2);      /* w frozen: b2 is dx only, and that is the plain forward */
  EXPECT(b1 == f2 && f2 == 2.0 * (2 * 6 * 9) * 5 * 8, "transpose forward %g vs plain dx %g", f2, b1);
  EXPECT(b2 == f1, "transpose dx %g vs plain forward %g", b2, f1);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ the peak table */

TEST(flops_gpu_peaks_by_device_name_and_unknown_gpus_have_none) {
  EXPECT(device_peak_tflops("cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 80 GiB)", true) == 989.4, "H100 SXM bf16");
  EXPECT(device_peak_tflops("cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 80 GiB)", false) == 66.9, "H100 SXM fp32");
  EXPECT(device_peak_tflops("cuda:1 (NVIDIA H100 PCIe, sm_90, 80 GiB)", true) == 756.0, "H100 PCIe");
  EXPECT(device_peak_tflops("cuda:0 (NVIDIA H200, sm_90, 141 GiB)", true) == 989.4, "H200");
  EXPECT(device_peak_tflops("cuda:0 (NVIDIA A100-SXM4-80GB, sm_80, 80 GiB)", true) == 312.0, "A100");
  EXPECT(device_peak_tflops("cuda:0 (NVIDIA H100 NVL, sm_90, 94 GiB)", true) == 0, "NVL: unknown, not SXM");
  EXPECT(device_peak_tflops("cuda:0 (NVIDIA B200, sm_100, 180 GiB)", true) == 0, "unknown GPU");
  EXPECT(device_peak_tflops("cpu (2 threads)", true) == 0, "the CPU has no MFU");
}
