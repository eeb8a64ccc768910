/* Normalisation ops: mean and biased variance over some axes, x̂ = (x − μ)·rstd with
 * rstd = 1/√(var + eps), then an optional per-channel affine y = x̂·w + b.
 *   op_group_norm(x (B, C, ...spatial), groups)    torch.nn.functional.group_norm: statistics
 *       per (sample, group) over (C/groups × spatial); rank 2..5. GroupNorm32 of the UNet.
 *   op_layer_norm(x (..., C))                       torch.nn.functional.layer_norm over the
 *       last dimension.
 *   op_batch_norm_local(x (B, C, N), virtual_bs)    StyleGAN-T's BatchNormLocal: the batch is
 *       split into G = ceil(B / virtual_bs) groups as x.view(G, B/G, C, N); statistics per
 *       (group, channel) over (B/G × N); no running statistics (training mode always).
 * w (C) and b (C) may be NULL (no scale, no shift). Statistics are always fp32, also for
 * bf16 storage. Backward ACCUMULATES dx, dw, db (each only where it is wanted), from the
 * saved per-group mean and rstd:
 *   dŷ = dy·w,  dx = rstd·(dŷ − mean(dŷ) − x̂·mean(dŷ·x̂)),  dw = Σ dy·x̂,  db = Σ dy.
 *
 * All three are one computation over a 4-D view of x (NormLayout): x as (O, R, K, L),
 * statistics per (o, k) over (r, l), affine channel of element (o, r, k, l) = k·CPG + l / S.
 *   group norm  (B, 1, groups, C/groups·S)   CPG = C/groups, S = spatial size
 *   layer norm  (rows, 1, 1, C)              CPG = C,        S = 1
 *   BN local    (G, B/G, C, N)               CPG = 1,        S = N
 * CPU: plain C, sums in double, OpenMP over groups and channels. CUDA: norm.cu. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct NormLayout {
  int64_t O, R, K, L; /* x viewed as (O, R, K, L); statistics per (o, k) over (r, l) */
  int64_t CPG, S;     /* affine channel of (o, r, k, l) = k·CPG + l / S; K·CPG channels */
} NormLayout;

Tensor *op_group_norm(Ctx *ctx, Tensor *x, int groups, float eps, Tensor *w, Tensor *b);
Tensor *op_layer_norm(Ctx *ctx, Tensor *x, float eps, Tensor *w, Tensor *b);
Tensor *op_batch_norm_local(Ctx *ctx, Tensor *x, int virtual_bs, float eps, Tensor *w, Tensor *b);

/* The layouts the three ops use (fatal on a bad argument, naming the op). */
NormLayout group_norm_layout(const Tensor *x, int groups);
NormLayout layer_norm_layout(const Tensor *x);
NormLayout batch_norm_local_layout(const Tensor *x, int virtual_bs);

/* CPU reference. y (numel) and x (numel) in the layout's order; mean, rstd (O·K) are
 * written by the forward and read by the backward; w, b (K·CPG) may be NULL; backward
 * outputs may be NULL when not wanted and are accumulated into. */
void norm_forward_cpu(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                      NormLayout l, float eps);
void norm_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                       const float *mean, const float *rstd, NormLayout l);
#if MCM_CUDA
/* The same on the GPU: x, y, dy, dx fp32 or bf16; w, b, dw, db the dtype of x; mean and
 * rstd fp32 tensors of O·K elements. */
void norm_forward_cuda(Ctx *ctx, Tensor *y, Tensor *mean, Tensor *rstd, const Tensor *x, const Tensor *w,
                       const Tensor *b, NormLayout l, float eps);
void norm_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                        const Tensor *w, const Tensor *mean, const Tensor *rstd, NormLayout l);
#endif

#ifdef __cplusplus
}
#endif
