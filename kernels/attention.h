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
 * CPU: one query row at a time (attention.c). CUDA: fused flash-attention-style kernels
 * (attention.cu), head dims 32 and 64. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_attention(Ctx *ctx, Tensor *q, Tensor *k, Tensor *v, int NH, Tensor *key_mask);

/* CPU reference. mask (B, TK) or NULL; lse (B, NH, TQ) may be NULL in the forward (not kept).
 * Backward gradients may be NULL when not wanted; they are accumulated into. */
void attention_forward_cpu(float *out, float *lse, const float *q, const float *k, const float *v, const float *mask,
                           int64_t B, int64_t TQ, int64_t TK, int NH, int D);
void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *lse, const float *mask, int64_t B, int64_t TQ, int64_t TK,
                            int NH, int D);
#if MCM_CUDA
/* Head dims the fused kernels are built for. */
bool attention_cuda_supports(int D);
/* lse may be NULL (inference: not kept). */
void attention_forward_cuda(Ctx *ctx, Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                            const Tensor *mask, int NH);
/* dq, dk, dv may be NULL; out is the forward's output (for D_i = Σ dout ⊙ out). */
void attention_backward_cuda(Ctx *ctx, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *q,
                             const Tensor *k, const Tensor *v, const Tensor *out, const Tensor *lse,
                             const Tensor *mask, int NH);
#endif

#ifdef __cplusplus
}
#endif
