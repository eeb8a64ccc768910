/* L2 normalisation of vectors and spectral normalisation of weights.
 *
 *   op_l2_normalize(x (..., D), eps)  ->  y = x / max(‖x‖₂, eps) over the last dim
 *     (torch F.normalize(x, dim=-1, eps); CLAP's embeddings, the discriminator's condition).
 *     With n = ‖x‖: dx += (dy − y·(y·dy)) / n where n ≥ eps, and dx += dy / eps where the
 *     norm is clamped (the clamp has zero slope there, as in PyTorch).
 *
 *   op_spectral_norm(sn, w (OUT, ...), training)  ->  w / σ      (torch.nn.utils.spectral_norm,
 *     dim 0: StyleGAN-T's SpectralConv1d). W is w viewed as (OUT, IN) with IN = the product
 *     of the other dims. In training mode, first n power iterations update the persistent
 *     u (OUT) and v (IN) in place:
 *         v = normalize(Wᵀu),  u = normalize(Wv),  normalize(x) = x / max(‖x‖, eps);
 *     then σ = uᵀ W v, with u and v taken as constants for the gradient, exactly as PyTorch
 *     (which clones them): dW += dy/σ − (Σ dy⊙W)/σ² · u vᵀ. Eval mode uses the stored u
 *     and v unchanged (PyTorch keeps v as the buffer weight_v for this). The forward keeps
 *     copies of u and v for its backward, so a second training-mode call before backward
 *     (D on real, then on fake samples) changes neither gradient.
 *     u and v are fp32 whatever w's dtype; the math is fp32 (the CPU sums in double).
 */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_l2_normalize(Ctx *ctx, Tensor *x, float eps);

typedef struct SpectralNorm {
  Tensor *u;              /* (OUT) fp32, persistent: left singular vector estimate (weight_u) */
  Tensor *v;              /* (IN) fp32, persistent: right singular vector estimate (weight_v) */
  int n_power_iterations; /* per training-mode call; 1 in StyleGAN-T */
  float eps;              /* 1e-12 as in PyTorch */
} SpectralNorm;

/* Creates u and v for a weight w on ctx's device, each a normal draw from ctx's RNG
 * (u first, then v, as PyTorch draws them) normalised to unit length. */
void spectral_norm_init(Ctx *ctx, SpectralNorm *sn, const Tensor *w, int n_power_iterations, float eps);
Tensor *op_spectral_norm(Ctx *ctx, SpectralNorm *sn, Tensor *w, bool training);

/* CPU reference. x, y, dx, dy: (N, D). */
void l2_normalize_forward_cpu(float *y, const float *x, int64_t N, int64_t D, float eps);
void l2_normalize_backward_cpu(float *dx, const float *dy, const float *x, int64_t N, int64_t D, float eps);
/* w (OUT, IN), u (OUT), v (IN); u and v updated in place. */
void spectral_power_iteration_cpu(float *u, float *v, const float *w, int64_t OUT, int64_t IN, int n, float eps);
/* σ = uᵀ W v and y (OUT, IN) = W / σ; returns σ. */
float spectral_norm_forward_cpu(float *y, const float *w, const float *u, const float *v, int64_t OUT, int64_t IN);
/* dw (OUT, IN) += dy/σ − (Σ dy⊙W)/σ² · u vᵀ */
void spectral_norm_backward_cpu(float *dw, const float *dy, const float *w, const float *u, const float *v,
                                float sigma, int64_t OUT, int64_t IN);

#if MCM_CUDA
void l2_normalize_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, float eps);
void l2_normalize_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, float eps);
void spectral_power_iteration_cuda(Ctx *ctx, Tensor *u, Tensor *v, const Tensor *w, int n, float eps);
/* sigma: (1) fp32 on the GPU, written here and read by the backward. */
void spectral_norm_forward_cuda(Ctx *ctx, Tensor *y, Tensor *sigma, const Tensor *w, const Tensor *u,
                                const Tensor *v);
void spectral_norm_backward_cuda(Ctx *ctx, Tensor *dw, const Tensor *dy, const Tensor *w, const Tensor *u,
                                 const Tensor *v, const Tensor *sigma);
#endif

#ifdef __cplusplus
}
#endif
