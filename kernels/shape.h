/* Shape ops on contiguous tensors (rank 1..5). Every backward ACCUMULATES into dx.
 *
 *   op_reshape(x, shape)            same data, new shape (a view; backward dx += dy)
 *   op_concat(xs[n], dim)           xs[i] equal except along dim -> sizes along dim summed
 *                                   (UNet skip: (B,C1,H,W) ‖ (B,C2,H,W) -> (B,C1+C2,H,W));
 *                                   backward splits dy into the inputs' windows
 *   op_slice(x, dim, start, len)    x[..., start:start+len, ...] along dim (VAE moments
 *                                   (B,2C,H,W) -> mean (B,C,H,W)); backward adds dy into
 *                                   that window of dx. A view when the window is one
 *                                   contiguous block (every dim before `dim` has size 1,
 *                                   e.g. slicing a batch along dim 0)
 *   op_permute(x, perm)             y.shape[k] = x.shape[perm[k]]  ((B,C,H,W) -> (B,H,W,C)
 *                                   is perm {0,2,3,1}); backward permutes back
 *   op_transpose_last2(x)           (..., M, N) -> (..., N, M)
 *   op_cast(x, dt)                  x's values in dtype dt, fp32 <-> bf16 (to nearest, ties to
 *                                   even); x itself when it already is dt. Backward: dx += dy
 *                                   converted to x's dtype. The network-boundary op: a model
 *                                   with bf16 weights casts its input to its weights' dtype
 *                                   and its output back to fp32, so callers see fp32 either way
 *
 * Shape ops keep x's dtype; all but reshape (a view, any dtype) take fp32 or bf16, concat
 * one dtype for all its inputs. dim may be negative (counted from the end, as in PyTorch).
 *
 * The copy ops view a tensor as (outer, size along dim, inner) with the element order
 * unchanged, so concat and slice are copies of `outer` rows between row windows:
 * copy_rows. On the GPU, permute first merges input dims that stay adjacent and drops
 * size-1 dims (permute_collapse), so the layouts the transformer blocks need, (0,2,1),
 * (0,2,3,1) and (0,3,1,2), all become one batched 2-D transpose and take a tiled
 * shared-memory kernel; anything else takes a strided gather. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_reshape(Ctx *ctx, Tensor *x, int ndim, const int64_t *shape);
Tensor *op_concat(Ctx *ctx, Tensor *const *xs, int n, int dim);
Tensor *op_slice(Ctx *ctx, Tensor *x, int dim, int64_t start, int64_t len);
Tensor *op_permute(Ctx *ctx, Tensor *x, const int *perm);
Tensor *op_transpose_last2(Ctx *ctx, Tensor *x);
Tensor *op_cast(Ctx *ctx, Tensor *x, DType dt);

/* dim in [-ndim, ndim) -> [0, ndim); fatal (naming op) otherwise. */
int shape_norm_dim(const char *op, int dim, int ndim);
/* Sizes around dim: outer = Π shape[<dim], inner = Π shape[>dim]. */
void shape_split(const Tensor *x, int dim, int64_t *outer, int64_t *size, int64_t *inner);

/* Row copies: for r < rows, j < width:  dst[r·dst_stride + j] (+)= src[r·src_stride + j].
 * (concat: width = the input's size·inner, dst_stride = the output's; slice the reverse.) */
void copy_rows_cpu(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows, int64_t width,
                   bool accumulate);
/* y = x.permute(perm) on x's shape (ndim dims); backward: dx += dy.permute(perm⁻¹). */
void permute_forward_cpu(float *y, const float *x, int ndim, const int64_t *x_shape, const int *perm);
void permute_backward_cpu(float *dx, const float *dy, int ndim, const int64_t *x_shape, const int *perm);

/* The permutation with size-1 dims dropped and runs of input dims that stay adjacent in the
 * output merged: y = x.permute(perm) equals y' = x'.permute(perm') on the returned shape.
 * Writes the merged input shape to shape_out and perm to perm_out, returns their rank
 * (0 when every dim has size 1). Host code shared by the CUDA launchers (tested on CPU). */
int permute_collapse(int ndim, const int64_t *x_shape, const int *perm, int64_t *shape_out, int *perm_out);

#if MCM_CUDA
/* dst (rows·dst_stride from dst_offset) (+)= src rows; offsets and strides in elements. */
void copy_rows_cuda(Ctx *ctx, Tensor *dst, int64_t dst_offset, int64_t dst_stride, const Tensor *src,
                    int64_t src_offset, int64_t src_stride, int64_t rows, int64_t width, bool accumulate);
void permute_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const int *perm);
void permute_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const int *perm);
#endif

#ifdef __cplusplus
}
#endif
