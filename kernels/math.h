/* Unary math, division, and the two losses the training step evaluates every iteration.
 * Backward accumulates: dx += ∂y/∂x · dy.
 *
 * Pointwise, y = f(x) of any shape (derivative as in PyTorch's autograd):
 *   exp     eˣ                     eˣ
 *   log     ln x                   1/x        x = 0 gives −inf (and an infinite gradient),
 *                                             x < 0 NaN, as torch.log
 *   sqrt    √x                     1/(2√x)    x = 0 gives an infinite gradient, as torch
 *   square  x²                     2x
 *   abs     |x|                    sign(x)    0 at x = 0 (torch's subgradient)
 *   clamp   min(max(x, lo), hi)    1 where lo < x < hi, else 0: 0 on a bound, as
 *                                  torch.clamp with number bounds (torch 2.15, checked by
 *                                  the fixtures); NaN stays NaN in the forward
 *
 * Division with NumPy broadcasting, the rules and index plans of elementwise.h:
 *   op_div(a, b) = a / b;  da += dy / b,  db += −dy·a / b²; an input that was broadcast
 *   receives the sum over its broadcast dimensions (in double on the CPU, in a fixed
 *   order in fp32 on the GPU: deterministic).
 *
 * Losses, x/a/b of any shape (a and b the same), n elements, result (1) fp32:
 *   op_pseudo_huber(a, b, c)  mean(√((a − b)² + c²) − c)  (LCM's distillation distance;
 *                             c > 0; gradient to both inputs: ±(a − b)/√((a − b)² + c²)/n)
 *   op_hinge(x, sign)         mean(relu(1 + sign·x)), sign = +1 for the discriminator's
 *                             fake logits, −1 for its real ones; dx = sign/n where
 *                             1 + sign·x > 0, else 0 (torch's relu has gradient 0 at 0)
 * They are fused (one reduction, one pointwise backward) rather than composed from
 * sub/square/sqrt/mean: the distillation loss runs on every step, and the fused form is
 * also the accurate one, evaluated as d²/(√(d² + c²) + c), which does not cancel when
 * |d| ≪ c (c = 0.001 in the LCM recipe). The sums are in double on the CPU, in a fixed
 * two-pass fp32 order on the GPU (deterministic, no atomics). */
#pragma once
#include "elementwise.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum Unary { UN_EXP = 0, UN_LOG = 1, UN_SQRT = 2, UN_SQUARE = 3, UN_ABS = 4, UN_CLAMP = 5 } Unary;
#define UNARY_COUNT 6
const char *unary_name(Unary u);

Tensor *op_unary(Ctx *ctx, Tensor *x, Unary u); /* any but UN_CLAMP */
static inline Tensor *op_exp(Ctx *ctx, Tensor *x) { return op_unary(ctx, x, UN_EXP); }
static inline Tensor *op_log(Ctx *ctx, Tensor *x) { return op_unary(ctx, x, UN_LOG); }
static inline Tensor *op_sqrt(Ctx *ctx, Tensor *x) { return op_unary(ctx, x, UN_SQRT); }
static inline Tensor *op_square(Ctx *ctx, Tensor *x) { return op_unary(ctx, x, UN_SQUARE); }
static inline Tensor *op_abs(Ctx *ctx, Tensor *x) { return op_unary(ctx, x, UN_ABS); }
/* lo ≤ hi, neither NaN; either may be infinite (a one-sided clamp). */
Tensor *op_clamp(Ctx *ctx, Tensor *x, float lo, float hi);
/* a, b broadcast -> y */
Tensor *op_div(Ctx *ctx, Tensor *a, Tensor *b);
/* a, b the same shape -> (1) fp32 */
Tensor *op_pseudo_huber(Ctx *ctx, Tensor *a, Tensor *b, float c);
/* x -> (1) fp32; sign ±1 */
Tensor *op_hinge(Ctx *ctx, Tensor *x, float sign);

/* y (n) = f(x (n));  dx (n) += f'(x) · dy (n).  lo, hi: the clamp's bounds, ignored by the
 * others. */
void unary_forward_cpu(float *y, const float *x, int64_t n, Unary u, float lo, float hi);
void unary_backward_cpu(float *dx, const float *dy, const float *x, int64_t n, Unary u, float lo, float hi);
/* y (bc->n) = a / b;  da += dy / b, db += −dy·a / b², each summed over its broadcast
 * dimensions (either may be NULL). */
void div_forward_cpu(float *y, const float *a, const float *b, const Bcast *bc);
void div_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, const Bcast *bc);
/* Σ √((a − b)² + c²) − c over n;  da += g·(a − b)/√((a − b)² + c²), db −= the same. */
double pseudo_huber_sum_cpu(const float *a, const float *b, int64_t n, float c);
void pseudo_huber_backward_cpu(float *da, float *db, const float *a, const float *b, int64_t n, float c, float g);
/* Σ relu(1 + sign·x) over n;  dx += g·sign where 1 + sign·x > 0. */
double hinge_sum_cpu(const float *x, int64_t n, float sign);
void hinge_backward_cpu(float *dx, const float *x, int64_t n, float sign, float g);
#if MCM_CUDA
void unary_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, Unary u, float lo, float hi);
void unary_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, Unary u, float lo, float hi);
/* y, dy have the broadcast shape of a and b; da or db may be NULL. */
void div_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b);
void div_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b);
/* y (1, fp32) = scale · Σ √((a − b)² + c²) − c;  da += scale·dy[0]·(a − b)/√(…), db −= it. */
void pseudo_huber_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, float c, float scale);
void pseudo_huber_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a,
                                const Tensor *b, float c, float scale);
/* y (1, fp32) = scale · Σ relu(1 + sign·x);  dx += scale·dy[0]·sign where 1 + sign·x > 0. */
void hinge_cuda(Ctx *ctx, Tensor *y, const Tensor *x, float sign, float scale);
void hinge_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, float sign, float scale);
#endif

#ifdef __cplusplus
}
#endif
