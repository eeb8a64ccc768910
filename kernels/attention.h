/* Multi-head scaled dot-product attention, as torch.nn.functional.scaled_dot_product_attention
 * on the (B, T, NH, D) view of the projections (head h reads channels h·D .. h·D + D − 1, so
 * the outputs of the q/k/v linears go in unpermuted):
 *   q (B, TQ, NH·D), k (B, TK, NH·D), v (B, TK, NH·D), key_mask (B, TK) fp32 or NULL
 *     -> out (B, TQ, NH·D),  out_h = softmax(q_h k_hᵀ / √D) v_h  over the keys.
 * key_mask: nonzero = attend to this key, 0 = ignore it (key padding). A query row whose keys
 * are all masked gives zeros (PyTorch gives NaN there), and its gradients are zero.
 * Backward accumulates dq, dk, dv (the mask gets no gradient). The forward saves the
 * per-row logsumexp lse (B, NH, TQ) fp32 of the scaled scores (+inf for a fully masked row),
 * and backward recomputes the probabilities from q, k and lse: memory is O(T), never O(TQ·TK).
 * CPU: blocks of at most 256 query rows through sgemm, O(rows·TK) memory (attention.c), any D. CUDA: fused flash-attention-style kernels
 * (attention.cu) for head dims 32 and 64; every other D (a multiple of 8, at most 1024: the
 * VAE's one head of 512) goes through cuBLAS over chunks of query rows (attention_large.cu),
 * whose memory is O(rows per chunk · TK), bounded by a 64 MiB workspace. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_attention(Ctx *ctx, Tensor *q, Tensor *k, Tensor *v, int NH, Tensor *key_mask);
/* op_attention through the GPU's chunked path with a smaller workspace, for tests and the
 * workbench: chunk_rows > 0 caps the rows of TK scores held at once, over all the heads and
 * batch elements one cuBLAS call covers (chunk_rows / (B or NH) query rows per chunk, or one
 * row and fewer slots per call), so even a short sequence spans several chunks. Any supported
 * D goes this way on the GPU, 32 and 64 included. chunk_rows = 0 is op_attention. The result
 * does not depend on it beyond rounding. On the CPU it is op_attention (no chunks there). */
Tensor *op_attention_chunked(Ctx *ctx, Tensor *q, Tensor *k, Tensor *v, int NH, Tensor *key_mask, int chunk_rows);

/* CPU reference. mask (B, TK) or NULL; lse (B, NH, TQ) may be NULL in the forward (not kept).
 * Backward gradients may be NULL when not wanted; they are accumulated into. */
void attention_forward_cpu(float *out, float *lse, const float *q, const float *k, const float *v, const float *mask,
                           int64_t B, int64_t TQ, int64_t TK, int NH, int D);
void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *lse, const float *mask, int64_t B, int64_t TQ, int64_t TK,
                            int NH, int D);
#if MCM_CUDA
/* Head dims the fused kernels are built for (the others take the chunked path below). */
bool attention_cuda_supports(int D);
/* lse may be NULL (inference: not kept). */
void attention_forward_cuda(Ctx *ctx, Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                            const Tensor *mask, int NH);
/* dq, dk, dv may be NULL; out is the forward's output (for D_i = Σ dout ⊙ out). */
void attention_backward_cuda(Ctx *ctx, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *q,
                             const Tensor *k, const Tensor *v, const Tensor *out, const Tensor *lse,
                             const Tensor *mask, int NH);
/* The chunked path (attention_large.cu), the same contract as the two above; chunk_rows as
 * in op_attention_chunked (0: from the 64 MiB workspace budget). attention_forward_cuda and
 * attention_backward_cuda call these for every D that attention_cuda_supports rejects. */
bool attention_chunked_cuda_supports(int D); /* D a multiple of 8, 8 ≤ D ≤ 1024 */
void attention_chunked_forward_cuda(Ctx *ctx, Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k,
                                    const Tensor *v, const Tensor *mask, int NH, int chunk_rows);
void attention_chunked_backward_cuda(Ctx *ctx, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout,
                                     const Tensor *q, const Tensor *k, const Tensor *v, const Tensor *out,
                                     const Tensor *lse, const Tensor *mask, int NH, int chunk_rows);
#endif

#ifdef __cplusplus
}
#endif
