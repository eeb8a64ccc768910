/* GPU op-table rows for attention's chunked cuBLAS path (kernels/attention_large.cu: head dims
 * other than 32 and 64, as the VAE's one head of 512), plus a check that it gives the same
 * bits on every run.
 *
 * Rows (each in fp32 and bf16 against the CPU reference):
 *   d512_t300          B 2, one head of 512, T = 300 (a multiple of nothing), op_attention's
 *                      own budget: one chunk, batched over B (stride T·C).
 *   d512_t300_chunk64  the same through op_attention_chunked(…, 64): 64 score rows at once,
 *                      32 per batch element, so 10 chunks (the last of 12 rows).
 *   d128_2heads        B 2, NH 2, D 128, TQ 77 ≠ TK 93, chunk 32: batched over the heads
 *                      (stride D), 16 rows per head, 5 chunks (the last of 13).
 *   d136_masked        B 3, NH 2, D 136 (a multiple of 8, not of 32), key mask with the last
 *                      batch element fully masked (zeros and zero gradients on both sides),
 *                      chunk 2: one row per chunk and the 3 batch elements split over two
 *                      calls (2 + 1), an outer loop over the heads.
 *   d64_chunked        D 64 forced through the chunked path (chunk 24: 8 rows × 3 heads), the
 *                      fused kernels' head dim: the same answer by another route.
 *   d512_t4096         B 1, T = 4096, op_attention's own 64 MiB budget: 4096 keys at 4 or 6
 *                      bytes per score (forward, fp32 or bf16) and 8 or 12 (backward) give one
 *                      forward chunk in fp32 and two in bf16, two backward chunks in fp32 and
 *                      four in bf16 (1365 rows each, the last of 1).
 * The chunk_rows knob (op_attention_chunked, attention.h) caps the score rows held at once;
 * it is what lets T = 300 span several chunks.
 *
 * Tolerances: GEMM_TOL. Scores are D ≤ 512-term dot products summed by cuBLAS in another order
 * than the CPU: fp32 error ~ε₃₂·√D·|terms| ≈ 1e-6 relative, inside F32_GEMM's 1e-4; outputs
 * and gradients sum ≤ 4096 softmax-weighted terms, which averages rather than grows the error.
 * In bf16 the GPU also rounds P and dS to bf16 before the P·V, dS·K and dSᵀ·Q products
 * (relative 2^-9 per term, independent between terms) and takes delta_i = Σ dout ⊙ out from
 * the bf16 out, as the fused kernels do: BF16_GEMM's 2e-2 covers both. q and k in [-2, 2]
 * (σ of the scaled scores ≈ 1.3) or [-3, 3] at T = 4096 (σ ≈ 3, a few keys dominate each row),
 * so outputs and gradients are not averaged down to values the absolute tolerance would hide.
 *
 * None of this has run on a GPU yet: it was written on a machine without one. */

#include "gpu_check.h"
#include "kernels/attention.h"
#include "tests/test.h"

/* masked = 0: no mask; 2: keys j ≡ 0 mod 3 and the last key masked everywhere, and every
 * key of the last batch element. chunk_rows 0 is op_attention. */
static Tensor *large_case(OpCase *c, int B, int TQ, int TK, int NH, int D, int masked, float qk, int chunk_rows) {
  int64_t C = (int64_t)NH * D;
  Tensor *q = case_input(c, "q", -qk, qk, SHAPE(B, TQ, C));
  Tensor *k = case_input(c, "k", -qk, qk, SHAPE(B, TK, C));
  Tensor *v = case_input(c, "v", -1.0f, 1.0f, SHAPE(B, TK, C));
  Tensor *mask = NULL;
  if (masked) {
    mask = tensor_new(c->ctx, DT_F32, SHAPE(B, TK)); /* always fp32, also in bf16 runs */
    float *m = MALLOC_CHECK((size_t)B * TK * sizeof(float));
    for (int b = 0; b < B; b++)
      for (int j = 0; j < TK; j++) m[b * TK + j] = (j % 3 == 0 || j == TK - 1 || b == B - 1) ? 0.0f : 1.0f;
    tensor_from_host_f32(c->ctx, mask, m);
    free(m);
  }
  return chunk_rows ? op_attention_chunked(c->ctx, q, k, v, NH, mask, chunk_rows)
                    : op_attention(c->ctx, q, k, v, NH, mask);
}

static Tensor *fw_d512_t300(OpCase *c) { return large_case(c, 2, 300, 300, 1, 512, 0, 2.0f, 0); }
static Tensor *fw_d512_t300_chunk64(OpCase *c) { return large_case(c, 2, 300, 300, 1, 512, 0, 2.0f, 64); }
static Tensor *fw_d128_2heads(OpCase *c) { return large_case(c, 2, 77, 93, 2, 128, 0, 2.0f, 32); }
static Tensor *fw_d136_masked(OpCase *c) { return large_case(c, 3, 41, 57, 2, 136, 2, 2.0f, 2); }
static Tensor *fw_d64_chunked(OpCase *c) { return large_case(c, 2, 45, 38, 3, 64, 0, 2.0f, 24); }
static Tensor *fw_d512_t4096(OpCase *c) { return large_case(c, 1, 4096, 4096, 1, 512, 0, 3.0f, 0); }

static const OpEntry ATTENTION_LARGE_OPS[] = {
    {"attention_d512_t300", fw_d512_t300, GEMM_TOL, false},
    {"attention_d512_t300_chunk64", fw_d512_t300_chunk64, GEMM_TOL, true},
    {"attention_d128_2heads_chunk32", fw_d128_2heads, GEMM_TOL, false},
    {"attention_d136_masked_chunk2", fw_d136_masked, GEMM_TOL, true},
    {"attention_d64_chunked", fw_d64_chunked, GEMM_TOL, false},
    {"attention_d512_t4096", fw_d512_t4096, GEMM_TOL, false},
};
GPU_OPS_REGISTER(ATTENTION_LARGE_OPS)

/* The head dims the GPU takes: the fused kernels' 32 and 64, and for the chunked path any
 * multiple of 8 up to 1024 (op_attention fails with that rule in its message otherwise). */
TEST(gpu_attention_supported_head_dims) {
  EXPECT(attention_cuda_supports(32) && attention_cuda_supports(64) && !attention_cuda_supports(512),
         "fused kernels: 32 and 64 only");
  int ok[] = {8, 64, 136, 512, 1024}, bad[] = {0, 4, 20, 516, 1032};
  for (int i = 0; i < 5; i++) {
    EXPECT(attention_chunked_cuda_supports(ok[i]), "D = %d should be supported", ok[i]);
    EXPECT(!attention_chunked_cuda_supports(bad[i]), "D = %d should be rejected", bad[i]);
  }
}
