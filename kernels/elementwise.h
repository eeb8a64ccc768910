/* Elementwise arithmetic on tensors of the same shape:
 *   op_add  a + b      op_sub  a - b      op_mul  a ⊙ b      op_scale  s·a
 * Backward accumulates into both inputs. (Broadcasting forms join in the op library issue.) */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum Binary { BIN_ADD = 0, BIN_SUB = 1, BIN_MUL = 2 } Binary;

Tensor *op_binary(Ctx *ctx, Tensor *a, Tensor *b, Binary kind);
static inline Tensor *op_add(Ctx *ctx, Tensor *a, Tensor *b) { return op_binary(ctx, a, b, BIN_ADD); }
static inline Tensor *op_sub(Ctx *ctx, Tensor *a, Tensor *b) { return op_binary(ctx, a, b, BIN_SUB); }
static inline Tensor *op_mul(Ctx *ctx, Tensor *a, Tensor *b) { return op_binary(ctx, a, b, BIN_MUL); }
Tensor *op_scale(Ctx *ctx, Tensor *a, float s);

void binary_forward_cpu(float *y, const float *a, const float *b, int64_t n, Binary kind);
/* da += ∂y/∂a · dy, db += ∂y/∂b · dy (either may be NULL). */
void binary_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, int64_t n, Binary kind);
void scale_cpu(float *y, const float *a, float s, int64_t n, bool accumulate);
#if MCM_CUDA
void binary_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, Binary kind);
void binary_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                          Binary kind);
void scale_cuda(Ctx *ctx, Tensor *y, const Tensor *a, float s, bool accumulate);
#endif

#ifdef __cplusplus
}
#endif
