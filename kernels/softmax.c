/* softmax: CPU reference, dispatch and tape (see softmax.h). Row sums are taken in double
 * so the reference is accurate well below fp32 tolerances for any N. */
#include "softmax.h"

#include <math.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

void softmax_forward_cpu(float *y, const float *x, int64_t rows, int64_t N) {
#pragma omp parallel for if (rows * N > 65536)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * N;
    float *yr = y + r * N;
    float m = -INFINITY;
    for (int64_t j = 0; j < N; j++) m = fmaxf(m, xr[j]);
    double s = 0.0;
    for (int64_t j = 0; j < N; j++) {
      yr[j] = expf(xr[j] - m);
      s += yr[j];
    }
    float inv = (float)(1.0 / s);
    for (int64_t j = 0; j < N; j++) yr[j] *= inv;
  }
}

void softmax_backward_cpu(float *dx, const float *dy, const float *y, int64_t rows, int64_t N) {
#pragma omp parallel for if (rows * N > 65536)
  for (int64_t r = 0; r < rows; r++) {
    const float *dyr = dy + r * N, *yr = y + r * N;
    double dot = 0.0; /* Σ dy ⊙ y */
    for (int64_t j = 0; j < N; j++) dot += (double)dyr[j] * yr[j];
    for (int64_t j = 0; j < N; j++) dx[r * N + j] += yr[j] * (dyr[j] - (float)dot);
  }
}

static void softmax_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *y = node->out, *dy = y->grad;
  Tensor *dx = grad_of(ctx, x);
  int64_t N = x->shape[x->ndim - 1];
  ON_DEVICE(ctx, CPU_REF((dx, dy, y), softmax_backward_cpu(dx->data, dy->data, y->data, N ? x->numel / N : 0, N)),
            softmax_backward_cuda(ctx, dx, dy, y));
}

Tensor *op_softmax(Ctx *ctx, Tensor *x) {
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "softmax: x is %s, expected fp32 or bf16",
            dtype_name(x->dtype));
  Tensor *y = tensor_like(ctx, x);
  int64_t N = x->shape[x->ndim - 1];
  ON_DEVICE(ctx, CPU_REF((y, x), softmax_forward_cpu(y->data, x->data, N ? x->numel / N : 0, N)),
            softmax_forward_cuda(ctx, y, x));
  if (tape_wants(ctx, 1, &x)) tape_record(ctx, "softmax", softmax_backward, y, 1, &x, 0);
  return y;
}
