/* Nearest-neighbour 2× upsampling of 2-D maps (the UNet's and the VAE decoder's Upsample,
 * before their 3×3 conv; F.interpolate(scale_factor=2, mode="nearest")):
 *
 *   op_upsample_nearest2x(x (B, C, H, W)) -> y (B, C, 2H, 2W),  y[b,c,i,j] = x[b,c,⌊i/2⌋,⌊j/2⌋]
 *
 * Backward ACCUMULATES: dx[b,c,i,j] += the sum of dy's 2×2 block at (2i, 2j), added in the
 * fixed order (2i,2j) + (2i,2j+1) + (2i+1,2j) + (2i+1,2j+1) on both the CPU and the GPU. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_upsample_nearest2x(Ctx *ctx, Tensor *x);

/* N = B·C maps of H × W (the input's size). */
void upsample_nearest2x_forward_cpu(float *y, const float *x, int64_t N, int64_t H, int64_t W);
void upsample_nearest2x_backward_cpu(float *dx, const float *dy, int64_t N, int64_t H, int64_t W);
#if MCM_CUDA
void upsample_nearest2x_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x);
void upsample_nearest2x_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy);
#endif

#ifdef __cplusplus
}
#endif
