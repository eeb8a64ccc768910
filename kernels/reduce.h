/* Reductions to a scalar and the regression losses built on them.
 *   op_sum(x)        Σ x                 -> (1)
 *   op_mean(x)       Σ x / n             -> (1)
 *   op_mse(a, b)     Σ (a - b)² / n      -> (1)   (gradient to both inputs)
 * The CPU reference sums in double so the result does not depend on the thread count. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_sum(Ctx *ctx, Tensor *x);
Tensor *op_mean(Ctx *ctx, Tensor *x);
Tensor *op_mse(Ctx *ctx, Tensor *a, Tensor *b);

double sum_cpu(const float *x, int64_t n);
double sq_diff_sum_cpu(const float *a, const float *b, int64_t n);
#if MCM_CUDA
/* y (1, fp32) = scale · Σ x  ;  y = scale · Σ (a - b)² */
void sum_cuda(Ctx *ctx, Tensor *y, const Tensor *x, float scale);
void sq_diff_sum_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, float scale);
/* dx += scale · dy[0] (broadcast), da += k (a - b) dy[0], db -= k (a - b) dy[0] */
void sum_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, float scale);
void sq_diff_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                           float k);
#endif

#ifdef __cplusplus
}
#endif
