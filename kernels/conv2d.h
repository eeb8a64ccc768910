/* conv2d: 2-D cross-correlation as torch.nn.functional.conv2d, with any kernel size,
 * stride, dilation, asymmetric zero padding (the VAE's downsampling pads only right and
 * bottom) and groups.
 *   x (B, CIN, H, W), w (COUT, CIN/G, KH, KW), b (COUT) or NULL  ->  y (B, COUT, HO, WO)
 *   HO = (H + pad_top + pad_bottom - dil_h (KH - 1) - 1) / stride_h + 1, WO likewise.
 * Groups (torch's `groups`, HiFi-GAN's multi-scale discriminator): G = groups (0 or 1 both
 * mean a dense conv, so an initializer that leaves the field out stays dense); G divides CIN
 * and COUT, and output channels g·COUT/G ... (g+1)·COUT/G − 1 see only input channels
 * g·CIN/G ... (g+1)·CIN/G − 1, through w[that output channel] of CIN/G input channels.
 * Backward accumulates dx, dw, db. CPU: im2col + OpenBLAS sgemm, one product per image and
 * group. CUDA: cuDNN (grouped through cudnnSetConvolutionGroupCount). */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Conv2dArgs {
  int stride_h, stride_w;
  int pad_top, pad_bottom, pad_left, pad_right;
  int dil_h, dil_w;
  int groups; /* 0 or 1: dense */
} Conv2dArgs;

/* The number of groups a's field stands for (0 -> 1). */
static inline int conv2d_groups(Conv2dArgs a) { return a.groups > 1 ? a.groups : 1; }

/* Symmetric padding p, stride s, dilation 1. */
Conv2dArgs conv2d_args(int stride, int pad);

Tensor *op_conv2d(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b, Conv2dArgs a);

/* CIN, COUT: x's and y's channels (w holds CIN/G per output channel). */
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
