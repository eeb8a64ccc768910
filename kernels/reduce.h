/* Reductions to a scalar, along one dimension, and the regression losses built on them.
 *   op_sum(x)                   Σ x                 -> (1), fp32
 *   op_mean(x)                  Σ x / n             -> (1), fp32
 *   op_mse(a, b)                Σ (a - b)² / n      -> (1), fp32  (gradient to both inputs)
 *   op_sum_dim(x, dim, keep)    Σ over dim of x (rank ≤ 5): the shape without dim, or with
 *                               size 1 there when keep (a rank-1 x gives (1)); x's dtype
 *   op_mean_dim(x, dim, keep)   the same divided by x.shape[dim] (mean over tokens, ...)
 * Backward accumulates; for the dim reductions it broadcasts dy back along dim.
 * The CPU reference sums in double so the result does not depend on the thread count; the
 * GPU sums in fp32 in a fixed order per output element (deterministic, no atomics).
 * A dim reduction views x as (outer, R, inner) with R = x.shape[dim]: y (outer, inner). */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_sum(Ctx *ctx, Tensor *x);
Tensor *op_mean(Ctx *ctx, Tensor *x);
Tensor *op_mse(Ctx *ctx, Tensor *a, Tensor *b);
Tensor *op_sum_dim(Ctx *ctx, Tensor *x, int dim, bool keepdim);
Tensor *op_mean_dim(Ctx *ctx, Tensor *x, int dim, bool keepdim);

double sum_cpu(const float *x, int64_t n);
double sq_diff_sum_cpu(const float *a, const float *b, int64_t n);
/* y (outer, inner) = scale · Σ_r x (outer, R, inner);  dx (outer, R, inner) += scale · dy (outer, inner) */
void sum_dim_forward_cpu(float *y, const float *x, int64_t outer, int64_t R, int64_t inner, float scale);
void sum_dim_backward_cpu(float *dx, const float *dy, int64_t outer, int64_t R, int64_t inner, float scale);
#if MCM_CUDA
/* y (1, fp32) = scale · Σ x  ;  y = scale · Σ (a - b)² */
void sum_cuda(Ctx *ctx, Tensor *y, const Tensor *x, float scale);
void sq_diff_sum_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, float scale);
/* dx += scale · dy[0] (broadcast), da += k (a - b) dy[0], db -= k (a - b) dy[0] */
void sum_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, float scale);
void sq_diff_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                           float k);
/* y = scale · Σ over dim of x (y holds x.numel / x.shape[dim] elements, x's dtype);
 * dx += scale · dy broadcast along dim. */
void sum_dim_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, int dim, float scale);
void sum_dim_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, int dim, float scale);
#endif

#ifdef __cplusplus
}
#endif
