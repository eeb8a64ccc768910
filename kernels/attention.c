/* Multi-head attention: CPU reference, dispatch and tape (see attention.h).
 *
 * The reference works on blocks of R query rows of one (batch, head) at a time: the block's
 * scores S = Q_blk Kᵀ / √D (R, TK) come from one sgemm, are turned into probabilities in
 * place, and O_blk = P V is a second sgemm, so the VAE's 4,096- or 24,576-token attention
 * runs at BLAS speed in O(R·TK) memory, never O(TQ·TK). The backward recomputes P per block
 * from the saved logsumexp, flash-attention style. Blocks run one after another (a fixed
 * order, so results do not depend on the thread count); OpenBLAS threads each product and
 * OpenMP the row-wise softmax between them, never one inside the other (a pthreads OpenBLAS
 * called from inside an OpenMP region oversubscribes the cores).
 * Size letters: B batch, TQ queries, TK keys, NH heads, D head dim, C = NH·D channels, R rows
 * per block; element (b, t, h, d) of q/k/v/out sits at (b·T + t)·C + h·D + d, so one head's
 * (T, D) matrix is a strided view with leading dimension C. */
#include "attention.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

/* Scores held per block buffer: 2^20 floats (4 MiB) gives R = 256 rows at TK = 4096, where
 * the products are large enough for OpenBLAS to run near its peak, and R = 42 at the
 * 24,576-token long piece. R never exceeds 256 (nor TQ). */
#define ATTN_BLOCK_SCORES (1 << 20)
#define ATTN_MAX_ROWS 256
/* Below this many score elements per block the row loops stay on one thread: starting the
 * OpenMP team costs more than it saves. */
#define ATTN_PARALLEL_SCORES 32768

/* Rows per block, after checking that the sizes fit the BLAS's int arguments. */
static int64_t block_rows(int64_t TQ, int64_t TK, int64_t C) {
  MCM_CHECK(TK <= INT32_MAX && C <= INT32_MAX, "attention (CPU): TK = %lld keys or C = %lld channels exceed int",
            (long long)TK, (long long)C);
  int64_t R = ATTN_BLOCK_SCORES / TK;
  if (R > ATTN_MAX_ROWS) R = ATTN_MAX_ROWS;
  if (R > TQ) R = TQ;
  return R < 1 ? 1 : R;
}

static inline bool key_kept(const float *mask_b, int64_t j) { return !mask_b || mask_b[j] != 0.0f; }

/* S (R, TK) = scale · Q_blk Kᵀ for one head: qb (R, D) and kb (TK, D), both with leading
 * dimension C. */
static void block_scores(float *S, const float *qb, const float *kb, int64_t R, int64_t TK, int D, int64_t C,
                         float scale) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)TK, D, scale, qb, (int)C, kb, (int)C, 0.0f, S,
              (int)TK);
}

/* One row of scores s (TK) -> unnormalised probabilities p̃_j = exp(s_j − max) in place over
 * the kept keys (0 at a masked key). Returns the logsumexp, +inf when every key is masked
 * (and then p̃ = 0), and sets *inv to 1 / Σ p̃ (0 for a fully masked row). */
static float softmax_row(float *s, float *inv, const float *mask_b, int64_t TK) {
  float m = -INFINITY;
  for (int64_t j = 0; j < TK; j++) {
    if (!key_kept(mask_b, j)) s[j] = -INFINITY;
    m = fmaxf(m, s[j]);
  }
  if (m == -INFINITY) { /* every key masked: zeros, by definition */
    for (int64_t j = 0; j < TK; j++) s[j] = 0.0f;
    *inv = 0.0f;
    return INFINITY;
  }
  double l = 0.0;
  for (int64_t j = 0; j < TK; j++) {
    s[j] = expf(s[j] - m); /* exp(−inf) = 0 at a masked key */
    l += s[j];
  }
  *inv = (float)(1.0 / l);
  return m + (float)log(l);
}

void attention_forward_cpu(float *out, float *lse, const float *q, const float *k, const float *v, const float *mask,
                           int64_t B, int64_t TQ, int64_t TK, int NH, int D) {
  int64_t C = (int64_t)NH * D, R = block_rows(TQ, TK, C);
  float scale = 1.0f / sqrtf((float)D);
  float *S = MALLOC_CHECK((size_t)(R * TK) * sizeof(float)); /* (R, TK) scores, then p̃ */
  float *inv = MALLOC_CHECK((size_t)R * sizeof(float));      /* (R) 1 / Σ_j p̃_ij */
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < NH; h++) {
      const float *kb = k + b * TK * C + h * D, *vb = v + b * TK * C + h * D; /* (TK, D), ld C */
      const float *mask_b = mask ? mask + b * TK : NULL;
      for (int64_t i0 = 0; i0 < TQ; i0 += R) {
        int64_t r = TQ - i0 < R ? TQ - i0 : R, row0 = (b * TQ + i0) * C + h * D;
        block_scores(S, q + row0, kb, r, TK, D, C, scale);
#pragma omp parallel for schedule(static) if (r * TK >= ATTN_PARALLEL_SCORES)
        for (int64_t i = 0; i < r; i++) {
          float l = softmax_row(S + i * TK, inv + i, mask_b, TK);
          if (lse) lse[(b * NH + h) * TQ + i0 + i] = l;
        }
        /* O_blk (r, D) = P̃ V, then each row times its 1 / Σ p̃: normalising the r·D outputs
         * costs less than normalising the r·TK probabilities. A fully masked row gives 0. */
        float *ob = out + row0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, D, (int)TK, 1.0f, S, (int)TK, vb, (int)C, 0.0f,
                    ob, (int)C);
        for (int64_t i = 0; i < r; i++)
          for (int d = 0; d < D; d++) ob[i * C + d] *= inv[i];
      }
    }
  free(S);
  free(inv);
}

/* With P = softmax(S), S = q kᵀ / √D, out = P v and dP = dout vᵀ, the gradients are
 *   dv = Pᵀ dout,  dS = P ⊙ (dP − D_i) with D_i = Σ_j P_ij dP_ij per row,
 *   dq = dS k / √D,  dk = dSᵀ q / √D.
 * Per block of query rows: P from the scores and the saved logsumexp, dP by one sgemm, then
 * dS in place of dP and three accumulating products. dk and dv sum over every block of the
 * (b, h); the blocks run in order, so the sums are the same on any number of threads. */
void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *lse, const float *mask, int64_t B, int64_t TQ, int64_t TK,
                            int NH, int D) {
  if (!dq && !dk && !dv) return;
  int64_t C = (int64_t)NH * D, R = block_rows(TQ, TK, C);
  float scale = 1.0f / sqrtf((float)D);
  bool need_ds = dq || dk;
  float *P = MALLOC_CHECK((size_t)(R * TK) * sizeof(float));                        /* (R, TK) */
  float *dS = need_ds ? MALLOC_CHECK((size_t)(R * TK) * sizeof(float)) : NULL; /* (R, TK) dP, then dS·scale */
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < NH; h++) {
      int64_t kv0 = b * TK * C + h * D; /* k, v, dk, dv of key 0 in this (b, h): (TK, D), ld C */
      const float *mask_b = mask ? mask + b * TK : NULL, *lse_bh = lse + (b * NH + h) * TQ;
      for (int64_t i0 = 0; i0 < TQ; i0 += R) {
        int64_t r = TQ - i0 < R ? TQ - i0 : R, row0 = (b * TQ + i0) * C + h * D;
        block_scores(P, q + row0, k + kv0, r, TK, D, C, scale);
        if (need_ds) /* dP (r, TK) = dout_blk vᵀ */
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)TK, D, 1.0f, dout + row0, (int)C, v + kv0,
                      (int)C, 0.0f, dS, (int)TK);
#pragma omp parallel for schedule(static) if (r * TK >= ATTN_PARALLEL_SCORES)
        for (int64_t i = 0; i < r; i++) {
          float *p = P + i * TK, *ds = need_ds ? dS + i * TK : NULL, lse_i = lse_bh[i0 + i];
          if (lse_i == INFINITY) { /* every key masked: P = dS = 0, so no gradient from this row */
            memset(p, 0, (size_t)TK * sizeof(float));
            if (ds) memset(ds, 0, (size_t)TK * sizeof(float));
            continue;
          }
          for (int64_t j = 0; j < TK; j++) p[j] = key_kept(mask_b, j) ? expf(p[j] - lse_i) : 0.0f;
          if (!ds) continue;
          float Di = 0.0f;
          for (int64_t j = 0; j < TK; j++) Di += p[j] * ds[j];
          for (int64_t j = 0; j < TK; j++) ds[j] = p[j] * (ds[j] - Di) * scale; /* dS_ij / √D */
        }
        if (dv) /* dv (TK, D) += Pᵀ dout_blk */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)TK, D, (int)r, 1.0f, P, (int)TK, dout + row0,
                      (int)C, 1.0f, dv + kv0, (int)C);
        if (dq) /* dq_blk (r, D) += dS k / √D */
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, D, (int)TK, 1.0f, dS, (int)TK, k + kv0,
                      (int)C, 1.0f, dq + row0, (int)C);
        if (dk) /* dk (TK, D) += dSᵀ q_blk / √D */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)TK, D, (int)r, 1.0f, dS, (int)TK, q + row0,
                      (int)C, 1.0f, dk + kv0, (int)C);
      }
    }
  free(P);
  free(dS);
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
  /* dV = Pᵀ dO and dP = dO Vᵀ, then dQ = dS K and dK = dSᵀ Q: 2 · B·TQ·TK·C each (C = NH · D) */
  double unit = 2.0 * (double)B * (double)TQ * (double)TK * (double)C;
  ctx_count_flops(ctx, q->dtype, unit * ((dv != NULL) + (dq || dk) + (dq != NULL) + (dk != NULL)));
  ON_DEVICE(ctx,
            CPU_REF((dq, dk, dv, dout, q, k, v, sv->lse, sv->mask),
                    attention_backward_cpu(dq ? dq->data : NULL, dk ? dk->data : NULL, dv ? dv->data : NULL,
                                           dout->data, q->data, k->data, v->data, sv->lse->data,
                                           sv->mask ? sv->mask->data : NULL, B, TQ, TK, sv->NH, (int)(C / sv->NH))),
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
  MCM_CHECK((q->dtype == DT_F32 || q->dtype == DT_BF16) && k->dtype == q->dtype && v->dtype == q->dtype,
            "attention: q %s, k %s, v %s: one dtype, fp32 or bf16", dtype_name(q->dtype), dtype_name(k->dtype),
            dtype_name(v->dtype));
  MCM_CHECK(chunk_rows >= 0, "attention: chunk_rows = %d must be >= 0 (0: from the workspace budget)", chunk_rows);
  if (key_mask) {
    CHECK_SHAPE("attention", key_mask, B, TK);
    CHECK_DTYPE("attention (the key mask is fp32: 1 keep, 0 masked)", key_mask, DT_F32);
  }
  Tensor *out = tensor_new(ctx, q->dtype, SHAPE(B, TQ, C));
  Tensor *in[3] = {q, k, v};
  bool record = tape_wants(ctx, 3, in);
  Tensor *lse = record ? tensor_new(ctx, DT_F32, SHAPE(B, NH, TQ)) : NULL; /* only backward needs it */
  ctx_count_flops(ctx, q->dtype, 4.0 * (double)B * (double)TQ * (double)TK * (double)C); /* Q Kᵀ and P V */
  ON_DEVICE(ctx,
            CPU_REF((out, lse, q, k, v, key_mask),
                    attention_forward_cpu(out->data, lse ? lse->data : NULL, q->data, k->data, v->data,
                                          key_mask ? key_mask->data : NULL, B, TQ, TK, NH, (int)(C / NH))),
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
