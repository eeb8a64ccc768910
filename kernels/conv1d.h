/* conv1d and conv_transpose1d: 1-D cross-correlation and its adjoint, as
 * torch.nn.functional.conv1d (with groups) and conv_transpose1d (groups = 1).
 *
 * conv1d: x (B, CIN, T), w (COUT, CIN/G, K), b (COUT) or NULL  ->  y (B, COUT, TO)
 *   TO = (T + pad_left + pad_right - dilation (K - 1) - 1) / stride + 1
 *   G = groups (0 or 1: dense) divides CIN and COUT; output channel o sees only the CIN/G
 *   input channels of its group ⌊o / (COUT/G)⌋ (conv2d.h; HiFi-GAN's multi-scale
 *   discriminator uses groups 4 and 16).
 *   Padding is zeros, or with `circular` a wrap-around of x (torch's padding_mode='circular',
 *   as StyleGAN-T's discriminator heads use with K = 9, padding 4). HiFi-GAN's residual
 *   blocks use dilations 1, 3, 5 with 'same' padding d (K - 1) / 2 on each side.
 *
 * conv_transpose1d: x (B, CIN, T), w (CIN, COUT, K) (PyTorch's ConvTranspose1d layout),
 *   b (COUT) or NULL  ->  y (B, COUT, TO)
 *   TO = (T - 1) stride - 2 padding + dilation (K - 1) + output_padding + 1
 *   It is the adjoint of conv1d(·, w, stride, padding, dilation) taken from (B, COUT, TO) to
 *   (B, CIN, T): its forward is that conv's input gradient, its input gradient is that conv's
 *   forward, and the code says so. HiFi-GAN's upsampling (MusicLDM vocoder): strides
 *   5, 4, 2, 2, 2 with kernels 16, 16, 8, 4, 4 and padding (K - stride) / 2.
 *   0 <= output_padding < stride (torch also allows output_padding < dilation when stride is
 *   smaller; nothing in mcm needs that, and it would break the exact adjoint shape).
 *
 * A 1-D conv is a 2-D conv with H = 1: the CPU reference calls conv2d's im2col + sgemm
 * routines and the CUDA path conv2d's cuDNN launchers on (B, C, 1, T) views. Circular padding
 * builds a wrap-padded copy of x; its backward folds the padded gradient back (wrap-add).
 * Backward ACCUMULATES dx, dw, db. */
#pragma once
#include "conv2d.h"
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Conv1dArgs {
  int stride;
  int pad_left, pad_right;
  int dilation;
  bool circular; /* wrap-around padding instead of zeros */
  int groups;    /* 0 or 1: dense */
} Conv1dArgs;

/* Zero padding p on both sides, stride s, dilation d, dense. */
Conv1dArgs conv1d_args(int stride, int pad, int dilation);
/* The number of groups a's field stands for (0 -> 1). */
static inline int conv1d_groups(Conv1dArgs a) { return a.groups > 1 ? a.groups : 1; }

/* The conv2d arguments of a 1-D conv run on (B, C, 1, T) views: nothing happens along H. */
static inline Conv2dArgs conv1d_as_2d(int stride, int pad_left, int pad_right, int dilation, int groups) {
  Conv2dArgs a = {1, stride, 0, 0, pad_left, pad_right, 1, dilation, groups};
  return a;
}

typedef struct ConvTranspose1dArgs {
  int stride, padding, output_padding, dilation;
} ConvTranspose1dArgs;

Tensor *op_conv1d(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b, Conv1dArgs a);
Tensor *op_conv_transpose1d(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b, int stride, int padding, int output_padding,
                            int dilation);

/* Output lengths (may be < 1 for inputs that are too short; the ops reject those). */
int conv1d_out_len(int T, int K, Conv1dArgs a);
int conv_transpose1d_out_len(int T, int K, ConvTranspose1dArgs a);

/* CPU reference, fp32. y (B, COUT, TO) is overwritten; dx, dw, db (any may be NULL) accumulate.
 * CIN is x's channel count; w is (COUT, CIN/groups, K). */
void conv1d_forward_cpu(float *y, const float *x, const float *w, const float *b, int B, int CIN, int T, int COUT,
                        int K, Conv1dArgs a);
void conv1d_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int B,
                         int CIN, int T, int COUT, int K, Conv1dArgs a);
/* x (B, CIN, T), w (CIN, COUT, K), y (B, COUT, TO). */
void conv_transpose1d_forward_cpu(float *y, const float *x, const float *w, const float *b, int B, int CIN, int T,
                                  int COUT, int K, ConvTranspose1dArgs a);
void conv_transpose1d_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                                   int B, int CIN, int T, int COUT, int K, ConvTranspose1dArgs a);
#if MCM_CUDA
void conv1d_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b, Conv1dArgs a);
void conv1d_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                          const Tensor *w, Conv1dArgs a);
void conv_transpose1d_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b,
                                   ConvTranspose1dArgs a);
void conv_transpose1d_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                                    const Tensor *w, ConvTranspose1dArgs a);
#endif

#ifdef __cplusplus
}
#endif
