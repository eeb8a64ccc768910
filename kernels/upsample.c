/* Nearest 2× upsampling: CPU reference, dispatch and tape (see upsample.h). */
#include "upsample.h"

#include "cpu_bf16.h"
#include "cuda_api.h"

void upsample_nearest2x_forward_cpu(float *y, const float *x, int64_t N, int64_t H, int64_t W) {
#pragma omp parallel for if (N * H * W > 16384)
  for (int64_t r = 0; r < N * H; r++) { /* input row r -> output rows 2r, 2r + 1 */
    const float *xr = x + r * W;
    float *y0 = y + 2 * r * 2 * W, *y1 = y0 + 2 * W;
    for (int64_t j = 0; j < W; j++) y0[2 * j] = y0[2 * j + 1] = y1[2 * j] = y1[2 * j + 1] = xr[j];
  }
}

void upsample_nearest2x_backward_cpu(float *dx, const float *dy, int64_t N, int64_t H, int64_t W) {
#pragma omp parallel for if (N * H * W > 16384)
  for (int64_t r = 0; r < N * H; r++) {
    float *dxr = dx + r * W;
    const float *d0 = dy + 2 * r * 2 * W, *d1 = d0 + 2 * W;
    for (int64_t j = 0; j < W; j++) dxr[j] += ((d0[2 * j] + d0[2 * j + 1]) + d1[2 * j]) + d1[2 * j + 1];
  }
}

static void upsample_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  ON_DEVICE(ctx,
            CPU_REF((dx, dy), upsample_nearest2x_backward_cpu(dx->data, dy->data, x->shape[0] * x->shape[1],
                                                              x->shape[2], x->shape[3])),
            upsample_nearest2x_backward_cuda(ctx, dx, dy));
}

Tensor *op_upsample_nearest2x(Ctx *ctx, Tensor *x) {
  CHECK_SHAPE("upsample_nearest2x", x, -1, -1, -1, -1);
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "upsample_nearest2x: x is %s, expected fp32 or bf16",
            dtype_name(x->dtype));
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  Tensor *y = tensor_new(ctx, x->dtype, SHAPE(B, C, 2 * H, 2 * W));
  ON_DEVICE(ctx, CPU_REF((y, x), upsample_nearest2x_forward_cpu(y->data, x->data, B * C, H, W)),
            upsample_nearest2x_forward_cuda(ctx, y, x));
  if (tape_wants(ctx, 1, &x)) tape_record(ctx, "upsample_nearest2x", upsample_backward, y, 1, &x, 0);
  return y;
}
