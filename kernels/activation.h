/* Pointwise activations: y = f(x), same shape. Backward accumulates dx += f'(x) dy.
 *   SiLU  x·σ(x)          ReLU  max(x, 0)          tanh
 * (GELU, GEGLU and LeakyReLU join them in the op library issue.) */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum Act { ACT_SILU = 0, ACT_RELU = 1, ACT_TANH = 2 } Act;
const char *act_name(Act act);

Tensor *op_act(Ctx *ctx, Tensor *x, Act act);
static inline Tensor *op_silu(Ctx *ctx, Tensor *x) { return op_act(ctx, x, ACT_SILU); }
static inline Tensor *op_relu(Ctx *ctx, Tensor *x) { return op_act(ctx, x, ACT_RELU); }
static inline Tensor *op_tanh(Ctx *ctx, Tensor *x) { return op_act(ctx, x, ACT_TANH); }

void act_forward_cpu(float *y, const float *x, int64_t n, Act act);
void act_backward_cpu(float *dx, const float *dy, const float *x, int64_t n, Act act);
#if MCM_CUDA
void act_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, Act act);
void act_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, Act act);
#endif

#ifdef __cplusplus
}
#endif
