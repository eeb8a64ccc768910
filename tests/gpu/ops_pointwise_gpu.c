/* Pointwise rows of the GPU op table (make test-gpu): GELU, LeakyReLU, GEGLU, and
 * add/sub/mul/add_scaled under broadcasting, one row per path of elementwise.cu's gradient
 * reduction (block per element, one chunk, several chunks, odometer over two reduced
 * dimensions, grid-stride past the block cap). SiLU/ReLU/tanh and same-shape add/sub/mul
 * are rows of test_ops_gpu.c.
 *
 * Tolerances:
 *  - POINTWISE_TOL for activations and GEGLU: the same formula on both sides (see
 *    gpu_check.h).
 *  - BCAST_TOL = {F32_REDUCE, BF16_POINTWISE} for broadcasting rows: a broadcast operand's
 *    gradient sums up to m = 4551 terms of O(1) in fp32 on the GPU (in double on the CPU),
 *    the case F32_REDUCE is sized for; in bf16 the GPU rounds the fp32 sum once, which
 *    BF16_POINTWISE covers, as for the reduction rows. */

#include "gpu_check.h"
#include "tests/test.h"

#define BCAST_TOL {F32_REDUCE, BF16_POINTWISE}

static Tensor *fw_gelu(OpCase *c) { return op_gelu(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(3, 37, 41))); }
static Tensor *fw_leaky(OpCase *c) {
  return op_leaky_relu(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(3, 37, 41)), 0.2f);
}
static Tensor *fw_leaky_default(OpCase *c) {
  return op_act(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(2, 53)), ACT_LEAKY_RELU);
}
/* (B, T, 2C) -> (B, T, C), C = 41 */
static Tensor *fw_geglu(OpCase *c) { return op_geglu(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(3, 37, 82))); }

static Tensor *bin_case(OpCase *c, int nda, const int64_t *sa, int ndb, const int64_t *sb, Binary kind) {
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, nda, sa);
  Tensor *b = case_input(c, "b", -1.0f, 1.0f, ndb, sb);
  return op_binary(c->ctx, a, b, kind);
}

/* x (B, C, H, W) + emb (B, C, 1, 1): emb's gradient sums m = 297 ≥ 256 contiguous terms, a
 * block per element. */
static Tensor *fw_add_time_emb(OpCase *c) { return bin_case(c, SHAPE(2, 64, 9, 33), SHAPE(2, 64, 1, 1), BIN_ADD); }
static Tensor *fw_mul_time_emb(OpCase *c) { return bin_case(c, SHAPE(2, 8, 33, 17), SHAPE(2, 8, 1, 1), BIN_MUL); }
/* 5200 elements of emb: more than the 4096-block cap, so blocks loop over elements. */
static Tensor *fw_add_emb_many(OpCase *c) { return bin_case(c, SHAPE(2, 2600, 16, 16), SHAPE(2, 2600, 1, 1), BIN_ADD); }
/* (B, T, C) ⊙ (C): the weight's gradient reduces over the outer dimensions, 10 chunks. */
static Tensor *fw_mul_channels(OpCase *c) { return bin_case(c, SHAPE(4, 77, 40), SHAPE(40), BIN_MUL); }
/* (B, 1, W) ∘ (1, C, 1): both broadcast; b's gradient reduces over two separated dimensions. */
static Tensor *fw_add_both(OpCase *c) { return bin_case(c, SHAPE(3, 1, 45), SHAPE(1, 37, 1), BIN_ADD); }
static Tensor *fw_mul_both(OpCase *c) { return bin_case(c, SHAPE(3, 1, 45), SHAPE(1, 37, 1), BIN_MUL); }
/* 5-D, every other dimension broadcast on each side; few terms: one or two chunks. */
static Tensor *fw_sub_5d(OpCase *c) { return bin_case(c, SHAPE(2, 1, 3, 1, 6), SHAPE(1, 4, 1, 5, 1), BIN_SUB); }
/* A scalar: one block sums all 4551 terms. */
static Tensor *fw_mul_scalar(OpCase *c) { return bin_case(c, SHAPE(3, 37, 41), SHAPE(1), BIN_MUL); }
/* The first operand broadcasts. */
static Tensor *fw_sub_a_bcast(OpCase *c) { return bin_case(c, SHAPE(41), SHAPE(3, 37, 41), BIN_SUB); }

static Tensor *fw_add_scaled_residual(OpCase *c) {
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, SHAPE(3, 37, 41));
  Tensor *b = case_input(c, "b", -1.0f, 1.0f, SHAPE(3, 37, 41));
  return op_add_scaled(c->ctx, a, b, 0.70710678f, 0.70710678f);
}
static Tensor *fw_add_scaled_bcast(OpCase *c) {
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, SHAPE(2, 5, 19, 23));
  Tensor *b = case_input(c, "b", -1.0f, 1.0f, SHAPE(5, 1, 23));
  return op_add_scaled(c->ctx, a, b, 0.5f, -1.5f);
}

static const OpEntry POINTWISE_OPS[] = {
    {"gelu", fw_gelu, POINTWISE_TOL, false},
    {"leaky_relu_0.2", fw_leaky, POINTWISE_TOL, false},
    {"leaky_relu_default", fw_leaky_default, POINTWISE_TOL, false},
    {"geglu", fw_geglu, POINTWISE_TOL, false},
    {"bcast_add_time_emb", fw_add_time_emb, BCAST_TOL, true},
    {"bcast_mul_time_emb", fw_mul_time_emb, BCAST_TOL, true},
    {"bcast_add_emb_5200", fw_add_emb_many, BCAST_TOL, true},
    {"bcast_mul_channels", fw_mul_channels, BCAST_TOL, true},
    {"bcast_add_both", fw_add_both, BCAST_TOL, true},
    {"bcast_mul_both", fw_mul_both, BCAST_TOL, true},
    {"bcast_sub_5d", fw_sub_5d, BCAST_TOL, true},
    {"bcast_mul_scalar", fw_mul_scalar, BCAST_TOL, true},
    {"bcast_sub_a_broadcasts", fw_sub_a_bcast, BCAST_TOL, true},
    {"add_scaled_residual", fw_add_scaled_residual, POINTWISE_TOL, false},
    {"add_scaled_bcast", fw_add_scaled_bcast, BCAST_TOL, false},
};
GPU_OPS_REGISTER(POINTWISE_OPS)
