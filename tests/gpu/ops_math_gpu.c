/* Math rows of the GPU op table (make test-gpu): exp, log, sqrt, square, abs, clamp,
 * division (same shape, and under broadcasting through each path of math.cu's gradient
 * reduction: one chunk, several chunks finished by a warp, a scalar divisor whose 4551
 * terms make 143 chunks, a broadcasting numerator, both sides broadcasting), and the
 * fused pseudo-Huber and hinge losses; plus a check that division's broadcast gradients
 * and the losses repeat bit for bit.
 *
 * Tolerances (gpu_check.h rows):
 *  - POINTWISE_TOL for the unary ops and same-shape division: the same formula on both
 *    sides; CUDA's expf/logf are within 2 ulp of glibc's, sqrtf and division are IEEE on
 *    both (nvcc without fast-math).
 *  - MATH_REDUCE_TOL = {F32_REDUCE, BF16_POINTWISE} (the rows ops_pointwise_gpu.c and
 *    test_ops_gpu.c give broadcasts and losses, defined here under its own name) for
 *    broadcast division and the losses: a broadcast operand's gradient sums up to 4551
 *    terms of O(1) (divisors in [0.75, 1.5) keep 1/b² ≤ 1.8), the losses up to 4096, in
 *    fp32 on the GPU and double on the CPU, the case F32_REDUCE is sized for; in bf16 the
 *    GPU rounds the fp32 result once (losses stay fp32), which BF16_POINTWISE covers.
 *    The loss rows return n·loss (see times_n) so that these tolerances bite on the
 *    gradients; the output n·loss ≈ 3e3..5e3 then meets rtol 1e-5 (its fp32 sum error is
 *    ~ε·√(n·log2 n)·|term| ≈ 2e-5). */

#include "gpu_check.h"
#include "kernels/math.h" /* until kernels/ops.h includes it */
#include "tests/test.h"

#define MATH_REDUCE_TOL {F32_REDUCE, BF16_POINTWISE}

/* ------------------------------------------------------------------ unary */

static Tensor *unary_case(OpCase *c, Unary u, float lo, float hi) {
  return op_unary(c->ctx, case_input(c, "x", lo, hi, SHAPE(3, 37, 41)), u);
}
static Tensor *fw_exp(OpCase *c) { return unary_case(c, UN_EXP, -3.0f, 3.0f); }
static Tensor *fw_log(OpCase *c) { return unary_case(c, UN_LOG, 0.1f, 4.0f); }
static Tensor *fw_sqrt(OpCase *c) { return unary_case(c, UN_SQRT, 0.1f, 4.0f); }
static Tensor *fw_square(OpCase *c) { return unary_case(c, UN_SQUARE, -2.0f, 2.0f); }
static Tensor *fw_abs(OpCase *c) { return unary_case(c, UN_ABS, -2.0f, 2.0f); }
static Tensor *fw_clamp(OpCase *c) {
  return op_clamp(c->ctx, case_input(c, "x", -2.0f, 2.0f, SHAPE(3, 37, 41)), -0.7f, 0.9f);
}
/* The VAE posterior's clamp of the log-variance. */
static Tensor *fw_clamp_logvar(OpCase *c) {
  return op_clamp(c->ctx, case_input(c, "x", -40.0f, 40.0f, SHAPE(2, 8, 16, 17)), -30.0f, 20.0f);
}

/* ------------------------------------------------------------------ division */

static Tensor *div_case(OpCase *c, int nda, const int64_t *sa, int ndb, const int64_t *sb, float blo, float bhi) {
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, nda, sa);
  Tensor *b = case_input(c, "b", blo, bhi, ndb, sb);
  return op_div(c->ctx, a, b);
}
static Tensor *fw_div_same(OpCase *c) { return div_case(c, SHAPE(3, 37, 41), SHAPE(3, 37, 41), 0.5f, 2.0f); }
/* (B, T, C) / (C): b's gradient n = 40, m = 308: 10 chunks and the warp finish; a's is
 * pointwise through b's strides. */
static Tensor *fw_div_channels(OpCase *c) { return div_case(c, SHAPE(4, 77, 40), SHAPE(40), 0.75f, 1.5f); }
/* (B, C, H, W) / (B, C, 1, 1): n = 128, m = 297. */
static Tensor *fw_div_maps(OpCase *c) { return div_case(c, SHAPE(2, 64, 9, 33), SHAPE(2, 64, 1, 1), 0.75f, 1.5f); }
/* A scalar divisor: one element, 4551 terms, 143 chunks. */
static Tensor *fw_div_scalar(OpCase *c) { return div_case(c, SHAPE(3, 37, 41), SHAPE(1), 0.75f, 1.5f); }
/* The numerator broadcasts: a's gradient n = 41, m = 111 (4 chunks). */
static Tensor *fw_div_a_bcast(OpCase *c) { return div_case(c, SHAPE(41), SHAPE(3, 37, 41), 0.75f, 1.5f); }
/* (B, 1, W) / (1, C, 1): both broadcast; b's gradient reduces over two separated dims. */
static Tensor *fw_div_both(OpCase *c) { return div_case(c, SHAPE(3, 1, 45), SHAPE(1, 37, 1), 0.75f, 1.5f); }
/* 5-D, few terms: one chunk each. */
static Tensor *fw_div_5d(OpCase *c) {
  return div_case(c, SHAPE(2, 1, 3, 1, 6), SHAPE(1, 4, 1, 5, 1), 0.75f, 1.5f);
}

/* ------------------------------------------------------------------ losses */

/* The loss rows return n·loss: a mean's gradients are O(1/n) ≈ 2e-4 here, below the
 * tolerances' atol (1e-4 fp32, 1e-3 bf16), which would let any gradient pass; scaled by n
 * (op_scale) they are O(1). */
static Tensor *times_n(OpCase *c, Tensor *loss, const Tensor *x) { return op_scale(c->ctx, loss, (float)x->numel); }

static Tensor *huber_case(OpCase *c, float hc) {
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, SHAPE(2, 8, 16, 16)); /* a latent batch (B, C, H, W) */
  Tensor *b = case_input(c, "b", -1.0f, 1.0f, SHAPE(2, 8, 16, 16));
  return times_n(c, op_pseudo_huber(c->ctx, a, b, hc), a);
}
static Tensor *fw_huber_lcm(OpCase *c) { return huber_case(c, 0.001f); }
static Tensor *fw_huber_c05(OpCase *c) { return huber_case(c, 0.5f); }
/* Discriminator logits (B, 1, T), 3·1365 = 4095 elements. */
static Tensor *hinge_case(OpCase *c, float sign) {
  Tensor *x = case_input(c, "x", -3.0f, 3.0f, SHAPE(3, 1, 1365));
  return times_n(c, op_hinge(c->ctx, x, sign), x);
}
static Tensor *fw_hinge_fake(OpCase *c) { return hinge_case(c, 1.0f); }
static Tensor *fw_hinge_real(OpCase *c) { return hinge_case(c, -1.0f); }

static const OpEntry MATH_OPS[] = {
    {"exp", fw_exp, POINTWISE_TOL, false},
    {"log", fw_log, POINTWISE_TOL, false},
    {"sqrt", fw_sqrt, POINTWISE_TOL, false},
    {"square", fw_square, POINTWISE_TOL, false},
    {"abs", fw_abs, POINTWISE_TOL, false},
    {"clamp", fw_clamp, POINTWISE_TOL, false},
    {"clamp_logvar", fw_clamp_logvar, POINTWISE_TOL, false},
    {"div_same", fw_div_same, POINTWISE_TOL, false},
    {"div_bcast_channels", fw_div_channels, MATH_REDUCE_TOL, true},
    {"div_bcast_maps", fw_div_maps, MATH_REDUCE_TOL, true},
    {"div_bcast_scalar", fw_div_scalar, MATH_REDUCE_TOL, true},
    {"div_bcast_a", fw_div_a_bcast, MATH_REDUCE_TOL, true},
    {"div_bcast_both", fw_div_both, MATH_REDUCE_TOL, true},
    {"div_bcast_5d", fw_div_5d, MATH_REDUCE_TOL, true},
    {"pseudo_huber_c0.001", fw_huber_lcm, MATH_REDUCE_TOL, true},
    {"pseudo_huber_c0.5", fw_huber_c05, MATH_REDUCE_TOL, true},
    {"hinge_fake", fw_hinge_fake, MATH_REDUCE_TOL, true},
    {"hinge_real", fw_hinge_real, MATH_REDUCE_TOL, true},
};
GPU_OPS_REGISTER(MATH_OPS)
