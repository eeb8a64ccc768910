/* linear: y = x Wᵀ + b over the last dimension, as torch.nn.Linear.
 *   x (..., IN), W (OUT, IN), b (OUT) or NULL  ->  y (..., OUT)
 * Backward accumulates dx += dy W, dW += dyᵀ x, db += Σ dy.
 * CPU: OpenBLAS sgemm. CUDA: cuBLAS (linear.cu). */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_linear(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b);

/* CPU reference; N = rows of x. Backward arguments may be NULL when not needed. */
void linear_forward_cpu(float *y, const float *x, const float *w, const float *b, int64_t N, int64_t IN, int64_t OUT);
void linear_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int64_t N,
                         int64_t IN, int64_t OUT);
#if MCM_CUDA
void linear_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b);
void linear_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                          const Tensor *w);
#endif

#ifdef __cplusplus
}
#endif
