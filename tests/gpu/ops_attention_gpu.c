/* softmax and attention rows of the GPU op table (make test-gpu), plus a check that the
 * fused attention kernels give the same bits on every run (no atomics anywhere).
 *
 * Attention rows: TQ and TK not multiples of the 32-row tiles, TQ < TK and TQ > TK, head dims
 * 32 and 64, one to three heads, a key mask with a fully masked batch element (every query
 * row of it gives zeros and zero gradients on both sides), and a T = 1000 case.
 *
 * Tolerances:
 * - attention GEMM_TOL: outputs are softmax-weighted sums of TK values with scores that are
 *   D ≤ 64-term dot products; gradients sum ≤ 1000 such terms (dk, dv over the queries).
 *   Both are in the range F32_GEMM / BF16_GEMM are sized for. In bf16 the GPU also stores
 *   out in bf16 and takes D_i = Σ dout ⊙ out from it, where the CPU uses Σ_j P_ij dP_ij in
 *   fp32: a relative error of 2^-9 in D_i, which the 2e-2 of BF16_GEMM covers.
 * - softmax {F32_POINTWISE, BF16_GEMM}: fp32 is the same formula with the row sum in fp32
 *   (GPU) or double (CPU): a few ulp. In bf16 the backward reads the bf16-rounded y (the
 *   CPU its fp32 y), so dx = y (dy − Σ dy⊙y) carries 2^-9 of y·|dy| (≤ 2e-3) on values
 *   that cancel: BF16_POINTWISE's atol 1e-3 is too tight, BF16_GEMM's 2e-2 fits. */

#include "gpu_check.h"
#include "kernels/attention.h"
#include "kernels/softmax.h"
#include "tests/test.h"

static Tensor *fw_softmax(OpCase *c) { return op_softmax(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(3, 37, 41))); }
/* More values per row than a warp has lanes, logits far from 0. */
static Tensor *fw_softmax_wide(OpCase *c) { return op_softmax(c->ctx, case_input(c, "x", 90.0f, 110.0f, SHAPE(5, 1000))); }

/* masked = 0: no mask; 1: keys j ≡ 0 mod 3 and the last key masked in every batch element;
 * 2: as 1, and every key of the last batch element masked. */
static Tensor *attention_case(OpCase *c, int B, int TQ, int TK, int NH, int D, int masked, float qk) {
  int64_t C = (int64_t)NH * D;
  Tensor *q = case_input(c, "q", -qk, qk, SHAPE(B, TQ, C));
  Tensor *k = case_input(c, "k", -qk, qk, SHAPE(B, TK, C));
  Tensor *v = case_input(c, "v", -1.0f, 1.0f, SHAPE(B, TK, C));
  Tensor *mask = NULL;
  if (masked) {
    mask = tensor_new(c->ctx, DT_F32, SHAPE(B, TK)); /* always fp32, also in bf16 runs */
    float *m = MALLOC_CHECK((size_t)B * TK * sizeof(float));
    for (int b = 0; b < B; b++)
      for (int j = 0; j < TK; j++) m[b * TK + j] = (j % 3 == 0 || j == TK - 1 || (masked == 2 && b == B - 1)) ? 0 : 1;
    tensor_from_host_f32(c->ctx, mask, m);
    free(m);
  }
  return op_attention(c->ctx, q, k, v, NH, mask);
}

static Tensor *fw_attn_d32(OpCase *c) { return attention_case(c, 2, 37, 45, 3, 32, 0, 1.0f); }
static Tensor *fw_attn_d64_masked(OpCase *c) { return attention_case(c, 2, 33, 50, 2, 64, 2, 1.5f); }
static Tensor *fw_attn_d32_masked_tq_gt_tk(OpCase *c) { return attention_case(c, 2, 70, 9, 1, 32, 1, 1.5f); }
static Tensor *fw_attn_d64_one_query(OpCase *c) { return attention_case(c, 3, 1, 31, 2, 64, 1, 1.0f); }
/* T ≈ 1000 (31.25 tiles); q, k in [-2, 2] make the scores' spread ~1.3, so the softmax is
 * far from uniform and the gradients are not all tiny. */
static Tensor *fw_attn_d64_t1000(OpCase *c) { return attention_case(c, 1, 1000, 1000, 2, 64, 0, 2.0f); }

static const OpEntry ATTENTION_OPS[] = {
    {"softmax", fw_softmax, {F32_POINTWISE, BF16_GEMM}, false},
    {"softmax_wide", fw_softmax_wide, {F32_POINTWISE, BF16_GEMM}, true},
    {"attention_d32", fw_attn_d32, GEMM_TOL, false},
    {"attention_d64_masked", fw_attn_d64_masked, GEMM_TOL, true},
    {"attention_d32_tq_gt_tk", fw_attn_d32_masked_tq_gt_tk, GEMM_TOL, false},
    {"attention_d64_one_query", fw_attn_d64_one_query, GEMM_TOL, false},
    {"attention_d64_t1000", fw_attn_d64_t1000, GEMM_TOL, true},
};
GPU_OPS_REGISTER(ATTENTION_OPS)
