/* conv2d: 2-D cross-correlation as torch.nn.functional.conv2d (groups = 1), with any
 * kernel size, stride, dilation and asymmetric zero padding (the VAE's downsampling pads
 * only right and bottom).
 *   x (B, CIN, H, W), w (COUT, CIN, KH, KW), b (COUT) or NULL  ->  y (B, COUT, HO, WO)
 *   HO = (H + pad_top + pad_bottom - dil_h (KH - 1) - 1) / stride_h + 1, WO likewise.
 * Backward accumulates dx, dw, db. CPU: im2col + OpenBLAS sgemm. CUDA: cuDNN (not yet). */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Conv2dArgs {
  int stride_h, stride_w;
  int pad_top, pad_bottom, pad_left, pad_right;
  int dil_h, dil_w;
} Conv2dArgs;

/* Symmetric padding p, stride s, dilation 1. */
Conv2dArgs conv2d_args(int stride, int pad);

Tensor *op_conv2d(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b, Conv2dArgs a);

void conv2d_forward_cpu(float *y, const float *x, const float *w, const float *b, int B, int CIN, int H, int W,
                        int COUT, int KH, int KW, Conv2dArgs a);
void conv2d_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int B,
                         int CIN, int H, int W, int COUT, int KH, int KW, Conv2dArgs a);
#if MCM_CUDA
void conv2d_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b, Conv2dArgs a);
void conv2d_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                          const Tensor *w, Conv2dArgs a);
/* Per-channel bias for any (B, C, ...) output, shared by the convolutions:
 * y += b broadcast over batch and positions; db += Σ over batch and positions of dy
 * (one block per channel, fixed order: deterministic). */
void channel_bias_add_cuda(Ctx *ctx, Tensor *y, const Tensor *b);
void channel_bias_grad_cuda(Ctx *ctx, Tensor *db, const Tensor *dy);
#endif

#ifdef __cplusplus
}
#endif
