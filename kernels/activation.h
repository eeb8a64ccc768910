/* Activations. Backward accumulates: dx += ∂y/∂x · dy.
 *
 * Pointwise, y = f(x) of any shape:
 *   SiLU   x·σ(x)                 ReLU   max(x, 0)                 tanh
 *   GELU   0.5·x·(1 + erf(x/√2))  (the exact form, torch's approximate='none')
 *   LeakyReLU  x for x > 0, slope·x otherwise
 * The slope is the only parameter an activation takes; the others ignore it.
 *
 * GEGLU (diffusers' feed-forward gate, after its projection):
 *   x (..., 2C) -> y (..., C),  y = a ⊙ gelu(g),  a = x[..., :C], g = x[..., C:]
 * Backward: da += gelu(g)·dy, dg += a·gelu'(g)·dy. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum Act { ACT_SILU = 0, ACT_RELU = 1, ACT_TANH = 2, ACT_GELU = 3, ACT_LEAKY_RELU = 4 } Act;
#define ACT_COUNT 5
const char *act_name(Act act);

/* torch.nn.LeakyReLU's default slope, used when op_act is asked for ACT_LEAKY_RELU. */
#define LEAKY_RELU_DEFAULT_SLOPE 0.01f

Tensor *op_act(Ctx *ctx, Tensor *x, Act act);
Tensor *op_leaky_relu(Ctx *ctx, Tensor *x, float slope);
static inline Tensor *op_silu(Ctx *ctx, Tensor *x) { return op_act(ctx, x, ACT_SILU); }
static inline Tensor *op_relu(Ctx *ctx, Tensor *x) { return op_act(ctx, x, ACT_RELU); }
static inline Tensor *op_tanh(Ctx *ctx, Tensor *x) { return op_act(ctx, x, ACT_TANH); }
static inline Tensor *op_gelu(Ctx *ctx, Tensor *x) { return op_act(ctx, x, ACT_GELU); }
/* x (..., 2C) -> (..., C) */
Tensor *op_geglu(Ctx *ctx, Tensor *x);

/* y (n) = f(x (n));  dx (n) += f'(x) · dy (n).  slope: LeakyReLU's, ignored by the others. */
void act_forward_cpu(float *y, const float *x, int64_t n, Act act, float slope);
void act_backward_cpu(float *dx, const float *dy, const float *x, int64_t n, Act act, float slope);
/* y (rows, C) = x[:, :C] ⊙ gelu(x[:, C:]) for x (rows, 2C);  dx (rows, 2C) += the gradient. */
void geglu_forward_cpu(float *y, const float *x, int64_t rows, int64_t C);
void geglu_backward_cpu(float *dx, const float *dy, const float *x, int64_t rows, int64_t C);
#if MCM_CUDA
void act_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, Act act, float slope);
void act_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, Act act, float slope);
void geglu_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x);
void geglu_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x);
#endif

#ifdef __cplusplus
}
#endif
