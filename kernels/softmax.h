/* softmax over the last dimension, numerically stable (each row's maximum is subtracted
 * before exponentiating, so large logits never overflow).
 *   x (..., N)  ->  y (..., N),   y = exp(x − max x) / Σ exp(x − max x)   per row of N
 * Backward accumulates dx += y ⊙ (dy − Σ_N dy ⊙ y) per row; it reads the saved output y,
 * not x. A row that is all −inf gives NaN, as in PyTorch (mask keys with op_attention's
 * key_mask instead).
 * CPU: a loop per row (OpenMP over rows). CUDA: one warp per row (softmax.cu). */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_softmax(Ctx *ctx, Tensor *x);

/* CPU reference over `rows` contiguous rows of N values. */
void softmax_forward_cpu(float *y, const float *x, int64_t rows, int64_t N);
void softmax_backward_cpu(float *dx, const float *dy, const float *y, int64_t rows, int64_t N);
#if MCM_CUDA
void softmax_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x);
void softmax_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *y);
#endif

#ifdef __cplusplus
}
#endif
