/* Optimizer kernels: AdamW, global gradient-norm clipping and EMA. These are not tape ops:
 * they update parameters, gradients and optimizer state in place between steps.
 *
 *   AdamW *opt = adamw_create(ctx, ps.p, ps.n, (AdamWHyper){1e-5f, 0.9f, 0.999f, 1e-8f, 0.0f});
 *   ... backward ...
 *   float norm = grad_clip(ctx, opt->params, opt->n, 1.0f);     pre-clip norm
 *   if (isfinite(norm)) adamw_step(ctx, opt, lr);               else skip the step
 *   params_zero_grad(ctx, opt->params, opt->n);
 *   ema_update(ctx, ema, weights, n, 0.95f);                    weights: adamw_weights(opt, i)
 *
 * AdamW is torch.optim.AdamW (amsgrad off), with PyTorch's operation order and its fp32
 * rounding of the host scalars, per element of a parameter p with gradient g, at step t
 * counted from 1:
 *   p ← p·(1 − lr·wd)                          decoupled weight decay (skipped when wd = 0)
 *   m ← lerp(m, g, 1 − β1)                      fused multiply-add, as PyTorch's CPU lerp
 *   v ← β2·v + (1 − β2)·g·g                     fused multiply-add, as PyTorch's addcmul
 *   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
 * fmaf and correctly rounded sqrtf / division on both CPU and GPU, so the two give the
 * same bits for the same inputs. (PyTorch's vectorised sqrt is not always correctly
 * rounded, so against PyTorch results agree to an ulp or so, not bit for bit.)
 * One step counter serves every tensor (PyTorch keeps one per tensor; they differ only if
 * some tensor's gradient was missing on some step).
 *
 * Shapes: every parameter is any shape (n elements, contiguous); m, v and master have the
 * parameter's shape. Parameters and gradients are fp32 or bf16 (a bf16 parameter's
 * gradient may be bf16 or fp32); m, v and master are always fp32. A bf16 parameter is
 * updated through its fp32 master copy and then written back rounded to the nearest bf16
 * (ties to even), so updates smaller than a bf16 ulp accumulate instead of vanishing.
 * The CPU path handles bf16 parameters too (the CPU ops do not, but the optimizer's
 * rounding can be tested on the CPU).
 *
 * grad_global_norm: ‖(g_1, …, g_n)‖₂ over every gradient, deterministic: each tensor is
 * cut into fixed chunks of OPTIM_CHUNK elements, each chunk summed in a fixed order (CPU:
 * in double; GPU: fp32 block reduction), the chunk sums added on the host in double in
 * tensor-then-chunk order, sqrt in double. The same bits every run, for any thread count.
 * grad_clip is torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6) in fp32,
 * gradients scaled by coef when coef < 1. A non-finite norm leaves the gradients alone
 * (PyTorch would scale them by 0 or NaN) and is returned so the caller skips the step.
 *
 * EMA: ema ← μ·ema + (1 − μ)·w, per element in fp32 (two products, one sum, no fused
 * multiply-add). ema is fp32 (recommended: with μ = 0.9999 a bf16 EMA would round most
 * updates away) or bf16; w is fp32 or bf16.
 *
 * CUDA: one multi-tensor launch per call. The host lists every tensor and cuts each into
 * chunks of OPTIM_CHUNK elements; one block per chunk (see optim.cu).
 */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Elements per chunk of the deterministic reductions and of the multi-tensor launches. */
#define OPTIM_CHUNK 65536

typedef struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
} AdamWHyper;

typedef struct AdamW {
  float lr, beta1, beta2, eps, weight_decay; /* lr: the base rate; each step is given its own */
  int64_t step;                              /* steps taken; the next is step + 1 */
  int n;
  Tensor **params; /* the trainable parameters, in the order given */
  Tensor **m, **v; /* fp32, persistent, the parameters' shapes */
  Tensor **master; /* fp32 master copies when a param is bf16, else NULL */
} AdamW;

/* Keeps the params that require a gradient (frozen ones are skipped), in order; each must
 * be persistent and on ctx's device. m and v start at zero, master copies at the bf16
 * values. Hyperparameters: lr ≥ 0, 0 ≤ β < 1, eps ≥ 0, wd ≥ 0 (fatal otherwise). The
 * optimizer lives in ctx's persistent memory (freed by ctx_destroy). */
AdamW *adamw_create(Ctx *ctx, Tensor *const *params, int n, AdamWHyper hyper);
/* One step at learning rate lr (a schedule's value; opt->lr for a constant rate). Params
 * whose grad is NULL are skipped. Gradients are read, not zeroed. */
void adamw_step(Ctx *ctx, AdamW *opt, float lr);
/* The fp32 weights of opt->params[i]: its master copy if it has one, else the parameter
 * (what an EMA should average). */
Tensor *adamw_weights(const AdamW *opt, int i);

/* ‖all grads‖₂ (params with a NULL grad are skipped). */
float grad_global_norm(Ctx *ctx, Tensor *const *params, int n);
/* Scales the grads so their global norm is at most max_norm; returns the pre-clip norm. */
float grad_clip(Ctx *ctx, Tensor *const *params, int n, float max_norm);

/* ema[i] ← mu·ema[i] + (1 − mu)·w[i]; shapes must match. */
void ema_update(Ctx *ctx, Tensor *const *ema, Tensor *const *w, int n, float mu);
/* ema[i] ← w[i] (with dtype conversion). */
void ema_copy(Ctx *ctx, Tensor *const *ema, Tensor *const *w, int n);

/* The per-step scalars, computed once on the host in double and rounded to fp32 where
 * PyTorch rounds them; the CPU and GPU paths share them. */
typedef struct AdamWScalars {
  bool decay_on;   /* weight_decay != 0 */
  float decay;     /* 1 − lr·wd */
  float w1;        /* lerp weight 1 − β1 */
  float beta2, c2; /* β2 and 1 − β2 */
  float bc2_sqrt;  /* √(1 − β2^t) */
  float eps;
  float neg_step;  /* −lr / (1 − β1^t) */
} AdamWScalars;
AdamWScalars adamw_scalars(const AdamW *opt, float lr, int64_t step);

/* CPU reference, per tensor of n elements. w: the fp32 weights (a bf16 parameter's master
 * copy); w_bf16: that bf16 parameter, rewritten as round(w), or NULL. g is g_dtype (fp32
 * or bf16). */
void adamw_update_cpu(float *w, uint16_t *w_bf16, const void *g, DType g_dtype, float *m, float *v, int64_t n,
                      const AdamWScalars *s);
/* Σ g² in double, chunk by chunk (OPTIM_CHUNK), the chunks added in order. */
double grad_sumsq_cpu(const void *g, DType dtype, int64_t n);
void grad_scale_cpu(void *g, DType dtype, int64_t n, float scale);
void ema_update_cpu(void *ema, DType ema_dtype, const void *w, DType w_dtype, int64_t n, float mu);

#if MCM_CUDA
/* Every parameter of opt with a gradient, one launch. */
void adamw_step_cuda(Ctx *ctx, AdamW *opt, const AdamWScalars *s);
/* Σ g² over every non-NULL grad: fp32 per chunk on the GPU, the chunks summed in double
 * on the host in order (waits for the stream). */
double grad_sumsq_cuda(Ctx *ctx, Tensor *const *params, int n);
void grad_scale_cuda(Ctx *ctx, Tensor *const *params, int n, float scale);
void ema_update_cuda(Ctx *ctx, Tensor *const *ema, Tensor *const *w, int n, float mu);
#endif

#ifdef __cplusplus
}
#endif
