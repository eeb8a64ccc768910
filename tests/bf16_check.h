/* bf16 checks on the CPU: an op (or a small chain of ops) run on bf16 tensors against the same
 * op run on fp32 tensors that hold the same, bf16-representable, values.
 *
 * kernels/cpu_bf16.h makes a bf16 op on the CPU its fp32 reference with every stored result
 * rounded once. So for an op whose backward reads only its inputs, the bf16 output and
 * gradients equal round_bf16(fp32 result) bit for bit (tol 0). An op whose backward reads its
 * own (now rounded) output, or a chain of ops, rounds in between: give it the tolerance its
 * roundings explain (bf16's relative step is 2^-8; see the call site's comment).
 *
 *   Tensor *fn(Ctx *ctx, Tensor *const *in, const void *arg) { return op_linear(ctx, in[0], in[1], in[2]); }
 *   Bf16In in[] = {{SHAPE(4, 8), .grad = true}, {SHAPE(6, 8), .grad = true}, {SHAPE(6), .grad = true}};
 *   bf16_check("linear", fn, NULL, 3, in, 0.0f);
 *
 * Inputs are uniform in [lo, hi) (default [-1, 1)) from a fixed seed, rounded to bf16. An
 * input with keep_f32 stays fp32 in the bf16 run (masks, timesteps); one with values given
 * uses them (rounded too unless keep_f32). Every input with grad gets its gradient compared,
 * and the output's gradient seed is random and bf16-representable.
 * Comparison: |bf16 − expected| ≤ tol · max|expected| elementwise, where expected is the
 * fp32 result rounded to bf16 when the bf16 run stores it in bf16, else the fp32 result. */
#pragma once
#include <stdbool.h>

#include "kernels/ops.h"

#define BF16_MAX_IN 8

typedef struct Bf16In {
  int ndim;
  const int64_t *shape;
  bool grad;            /* requires a gradient; the gradient is compared */
  bool keep_f32;        /* stays fp32 in the bf16 run */
  bool is_i32;          /* int32 indices (values from `values`, cast); never bf16 */
  float lo, hi;         /* value range; both 0: [-1, 1) */
  const float *values;  /* explicit values instead of random ones (NULL: random) */
} Bf16In;

typedef Tensor *(*Bf16Fn)(Ctx *ctx, Tensor *const *in, const void *arg);

/* Runs the check and records test failures (EXPECT); returns true when everything matched. */
bool bf16_check(const char *name, Bf16Fn fn, const void *arg, int n_in, const Bf16In *in, float tol);
