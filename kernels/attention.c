/* Multi-head attention: CPU reference, dispatch and tape (see attention.h).
 *
 * The reference works on one query row at a time: the row's TK scores live in a scratch
 * buffer of TK floats per thread, so the VAE's 4,096- or 24,576-token attention needs
 * O(TK) memory, not O(TQ·TK). Size letters: B batch, TQ queries, TK keys, NH heads, D head
 * dim, C = NH·D channels; element (b, t, h, d) of q/k/v/out sits at (b·T + t)·C + h·D + d. */
#include "attention.h"

#include <math.h>

#include "cuda_api.h"

static inline float dot(const float *a, const float *b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

static inline bool key_kept(const float *mask_b, int64_t j) { return !mask_b || mask_b[j] != 0.0f; }

/* One query row of one head: o (D) = Σ_j softmax_j(s) v_j with s_j = q·k_j / √D over the kept
 * keys; returns the logsumexp of s (+inf when every key is masked, and then o = 0). */
static float attention_row(float *o, float *s, const float *qi, const float *k, const float *v, const float *mask_b,
                           int64_t TK, int64_t C, int D, float scale) {
  float m = -INFINITY;
  for (int64_t j = 0; j < TK; j++) {
    s[j] = key_kept(mask_b, j) ? scale * dot(qi, k + j * C, D) : -INFINITY;
    m = fmaxf(m, s[j]);
  }
  for (int d = 0; d < D; d++) o[d] = 0.0f;
  if (m == -INFINITY) return INFINITY; /* every key masked: zeros, by definition */
  double l = 0.0;
  for (int64_t j = 0; j < TK; j++) {
    if (!key_kept(mask_b, j)) continue;
    float p = expf(s[j] - m);
    l += p;
    const float *vj = v + j * C;
    for (int d = 0; d < D; d++) o[d] += p * vj[d];
  }
  float inv = (float)(1.0 / l);
  for (int d = 0; d < D; d++) o[d] *= inv;
  return m + (float)log(l);
}

void attention_forward_cpu(float *out, float *lse, const float *q, const float *k, const float *v, const float *mask,
                           int64_t B, int64_t TQ, int64_t TK, int NH, int D) {
  int64_t C = (int64_t)NH * D;
  float scale = 1.0f / sqrtf((float)D);
  /* Query rows are independent in the forward: parallel over (b, h, i). */
#pragma omp parallel if (B * NH * TQ * TK * D > 65536)
  {
    float *s = MALLOC_CHECK((size_t)TK * sizeof(float)); /* (TK) one row's scores */
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < NH; h++)
        for (int64_t i = 0; i < TQ; i++) {
          int64_t row = (b * TQ + i) * C + h * D;
          float l = attention_row(out + row, s, q + row, k + b * TK * C + h * D, v + b * TK * C + h * D,
                                  mask ? mask + b * TK : NULL, TK, C, D, scale);
          if (lse) lse[(b * NH + h) * TQ + i] = l;
        }
    free(s);
  }
}

/* With P = softmax(S), S = q kᵀ / √D, out = P v and dP = dout vᵀ, the gradients are
 *   dv = Pᵀ dout,  dS = P ⊙ (dP − D_i) with D_i = Σ_j P_ij dP_ij per row,
 *   dq = dS k / √D,  dk = dSᵀ q / √D.
 * One query row at a time, P recomputed from the saved logsumexp. dk and dv collect every
 * row's contribution, so threads split the work by (b, h) only: each owns its slice. */
void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *lse, const float *mask, int64_t B, int64_t TQ, int64_t TK,
                            int NH, int D) {
  int64_t C = (int64_t)NH * D;
  float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel if (B * NH * TQ * TK * D > 65536)
  {
    float *p = MALLOC_CHECK((size_t)TK * sizeof(float));  /* (TK) P_ij for one row */
    float *dp = MALLOC_CHECK((size_t)TK * sizeof(float)); /* (TK) dP_ij for one row */
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < NH; h++) {
        const float *mask_b = mask ? mask + b * TK : NULL;
        int64_t kv0 = b * TK * C + h * D; /* k, v, dk, dv of key 0 in this (b, h) */
        for (int64_t i = 0; i < TQ; i++) {
          int64_t row = (b * TQ + i) * C + h * D;
          float lse_i = lse[(b * NH + h) * TQ + i];
          if (lse_i == INFINITY) continue; /* every key masked: the output is 0, so are its gradients */
          const float *qi = q + row, *doi = dout + row;
          float Di = 0.0f;
          for (int64_t j = 0; j < TK; j++) {
            bool kept = key_kept(mask_b, j);
            p[j] = kept ? expf(scale * dot(qi, k + kv0 + j * C, D) - lse_i) : 0.0f;
            dp[j] = kept ? dot(doi, v + kv0 + j * C, D) : 0.0f;
            Di += p[j] * dp[j];
          }
          for (int64_t j = 0; j < TK; j++) {
            if (!key_kept(mask_b, j)) continue;
            float ds = p[j] * (dp[j] - Di) * scale; /* dS_ij / √D */
            const float *kj = k + kv0 + j * C;
            if (dq)
              for (int d = 0; d < D; d++) dq[row + d] += ds * kj[d];
            if (dk)
              for (int d = 0; d < D; d++) dk[kv0 + j * C + d] += ds * qi[d];
            if (dv)
              for (int d = 0; d < D; d++) dv[kv0 + j * C + d] += p[j] * doi[d];
          }
        }
      }
    free(p);
    free(dp);
  }
}

typedef struct {
  int NH;
  int chunk_rows; /* > 0: the GPU's chunked path with this chunk size (op_attention_chunked) */
  Tensor *lse;  /* (B, NH, TQ) fp32, arena */
  Tensor *mask; /* (B, TK) or NULL */
} AttentionSaved;

static void attention_backward(Ctx *ctx, TapeNode *node) {
  Tensor *q = node->in[0], *k = node->in[1], *v = node->in[2], *out = node->out, *dout = out->grad;
  AttentionSaved *sv = node->saved;
  Tensor *dq = q->requires_grad ? grad_of(ctx, q) : NULL;
  Tensor *dk = k->requires_grad ? grad_of(ctx, k) : NULL;
  Tensor *dv = v->requires_grad ? grad_of(ctx, v) : NULL;
  int64_t B = q->shape[0], TQ = q->shape[1], TK = k->shape[1], C = q->shape[2];
  ON_DEVICE(ctx,
            attention_backward_cpu(dq ? dq->data : NULL, dk ? dk->data : NULL, dv ? dv->data : NULL, dout->data,
                                   q->data, k->data, v->data, sv->lse->data, sv->mask ? sv->mask->data : NULL, B, TQ,
                                   TK, sv->NH, (int)(C / sv->NH)),
            sv->chunk_rows > 0
                ? attention_chunked_backward_cuda(ctx, dq, dk, dv, dout, q, k, v, out, sv->lse, sv->mask, sv->NH,
                                                  sv->chunk_rows)
                : attention_backward_cuda(ctx, dq, dk, dv, dout, q, k, v, out, sv->lse, sv->mask, sv->NH));
}

Tensor *op_attention(Ctx *ctx, Tensor *q, Tensor *k, Tensor *v, int NH, Tensor *key_mask) {
  return op_attention_chunked(ctx, q, k, v, NH, key_mask, 0);
}

Tensor *op_attention_chunked(Ctx *ctx, Tensor *q, Tensor *k, Tensor *v, int NH, Tensor *key_mask, int chunk_rows) {
  CHECK_SHAPE("attention", q, -1, -1, -1);
  int64_t B = q->shape[0], TQ = q->shape[1], C = q->shape[2];
  CHECK_SHAPE("attention", k, B, -1, C);
  int64_t TK = k->shape[1];
  CHECK_SHAPE("attention", v, B, TK, C);
  MCM_CHECK(NH >= 1 && C % NH == 0, "attention: %lld channels do not split into NH = %d heads (q %s)", (long long)C,
            NH, TENSOR_SHAPE_STR(q));
  MCM_CHECK(B >= 1 && TQ >= 1 && TK >= 1 && C >= 1, "attention: empty input (q %s, k %s)", TENSOR_SHAPE_STR(q),
            TENSOR_SHAPE_STR(k));
  MCM_CHECK(C / NH <= INT32_MAX, "attention: head dim %lld too large", (long long)(C / NH));
  MCM_CHECK(k->dtype == q->dtype && v->dtype == q->dtype, "attention: q %s, k %s, v %s: dtypes must match",
            dtype_name(q->dtype), dtype_name(k->dtype), dtype_name(v->dtype));
  MCM_CHECK(chunk_rows >= 0, "attention: chunk_rows = %d must be >= 0 (0: from the workspace budget)", chunk_rows);
  if (ctx->dev == DEV_CPU) CHECK_DTYPE("attention (CPU reference computes in fp32)", q, DT_F32);
  if (key_mask) {
    CHECK_SHAPE("attention", key_mask, B, TK);
    CHECK_DTYPE("attention (the key mask is fp32: 1 keep, 0 masked)", key_mask, DT_F32);
  }
  Tensor *out = tensor_new(ctx, q->dtype, SHAPE(B, TQ, C));
  Tensor *in[3] = {q, k, v};
  bool record = tape_wants(ctx, 3, in);
  Tensor *lse = record ? tensor_new(ctx, DT_F32, SHAPE(B, NH, TQ)) : NULL; /* only backward needs it */
  ON_DEVICE(ctx,
            attention_forward_cpu(out->data, lse ? lse->data : NULL, q->data, k->data, v->data,
                                  key_mask ? key_mask->data : NULL, B, TQ, TK, NH, (int)(C / NH)),
            chunk_rows > 0 ? attention_chunked_forward_cuda(ctx, out, lse, q, k, v, key_mask, NH, chunk_rows)
                           : attention_forward_cuda(ctx, out, lse, q, k, v, key_mask, NH));
  if (record) {
    TapeNode *node = tape_record(ctx, "attention", attention_backward, out, 3, in, sizeof(AttentionSaved));
    AttentionSaved *sv = node->saved;
    sv->NH = NH;
    sv->chunk_rows = chunk_rows;
    sv->lse = lse;
    sv->mask = key_mask;
  }
  return out;
}
