/* Attention on the GPU for head dims the fused kernels of attention.cu do not cover (the
 * VAE's mid-block attention: one head of D = 512 over 4,096 to 24,576 tokens). See
 * attention.h for the op; attention.cu sends every D other than 32 and 64 here.
 *
 * Size letters: B batch, TQ queries, TK keys, NH heads, D head dim (a multiple of 8, at most
 * 1024), C = NH·D; q/k/v/out are (B, T, C) with head h in channels h·D .. h·D + D − 1.
 *
 * Query rows are processed in chunks of R rows, so only an (R, TK) block of scores exists at
 * a time: memory O(R·TK) from the arena, independent of TQ. The products go through cuBLAS
 * (cublasGemmStridedBatchedEx, fp32 compute, fp32 or bf16 storage), batched over the larger
 * of B and NH: with the (B, T, NH·D) layout a head is a matrix with leading dimension C, and
 * consecutive heads of one batch element sit D apart, consecutive batch elements of one head
 * T·C apart; the smaller of the two is an outer loop. With scale = 1/√D, per chunk Q_c:
 *
 *   forward    S = scale·Q_c Kᵀ (fp32) → row softmax over the kept keys, which also writes
 *              lse (B, NH, TQ) exactly as the fused kernels do (+inf for a row whose keys are
 *              all masked) and P = exp(S − lse) → O_c = P V.
 *   backward   delta_i = Σ_d dO ⊙ O once for all rows; then per chunk S and dP = dO_c Vᵀ,
 *              P = exp(S − lse), dS = P ⊙ (dP − delta_i), and
 *              dV += Pᵀ dO_c,  dQ_c += scale·dS K,  dK += scale·dSᵀ Q_c.
 *   Each GEMM accumulates (beta = 1) and the chunks run in order on one stream, so reruns are
 *   bit-identical. fp32 accumulates into dk and dv directly; bf16 accumulates dK and dV in
 *   fp32 buffers (B, TK, C) and adds them to dk, dv once at the end (one bf16 rounding, not
 *   one per chunk). Each row of dq gets exactly one GEMM, so it is written to directly.
 *   When q, k and v are one tensor their gradients are one buffer: every GEMM reads only
 *   inputs and chunk scratch, never a gradient, so the accumulations simply add up.
 *
 * Workspace: R rows of TK scores per batch slot, at 4 bytes (fp32 forward: P overwrites S),
 * 6 (bf16 forward: S fp32, P bf16), 8 (fp32 backward: S→P and dP→dS in place) or 12 (bf16
 * backward) per score. The score rows that fit, from kChunkBudget = 64 MiB or from the
 * chunk_rows knob (op_attention_chunked, attention.h) when that is smaller, are shared out
 * over the batch slots: R = fit / slots rows each, all slots in one call; when fewer rows fit
 * than there are slots, R = 1 and the slots split over several calls. So a small knob splits
 * even a short sequence into several chunks, and a smaller one the batch too. One row always
 * goes (the budget is exceeded only when one row of TK scores outgrows it: TK > 5.6 million).
 * The arena frees nothing before ctx_step_reset, so each call's workspace (at most the
 * budget, less when the whole problem is smaller) stays taken until the step ends.
 *
 * Status: written and compiled on a machine without a GPU; make test-gpu (rows in
 * tests/gpu/ops_attention_large_gpu.c) has not run it yet. */
#include "attention.h"
#include "cuda_common.h"

namespace {

const size_t kChunkBudget = (size_t)64 << 20;
const int kRowThreads = 256; /* one block per score row */

cudaDataType_t cuda_dtype(DType dt) { return dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* Where a problem's matrices are and how a chunk is batched. */
struct ChunkPlan {
  int64_t B, TQ, TK, C, D;
  int NH;
  float scale;
  bool over_heads;       /* batched over heads (stride D), outer loop over b; else the reverse */
  int64_t n_outer, n_inner;
  int64_t sQ, sK;        /* element strides between batch slots in q/out (TQ rows) and k/v (TK rows) */
  int64_t rows;          /* R: query rows per chunk */
  int64_t slots;         /* batch slots per call (≤ n_inner) */
};

/* The batch slot `p` of outer index `o` is (b, h). */
__host__ __device__ inline void slot_bh(bool over_heads, int64_t o, int64_t p, int64_t *b, int64_t *h) {
  *b = over_heads ? o : p;
  *h = over_heads ? p : o;
}

/* ------------------------------------------------------------------ kernels */

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/* Max or sum over the block, in a fixed order, returned to every thread. red has 33 floats. */
template <bool MAX>
__device__ float block_allreduce(float v, float *red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  __syncthreads(); /* red may still be read from the previous call */
  v = MAX ? warp_max(v) : warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? red[lane] : (MAX ? -INFINITY : 0.0f);
    v = MAX ? warp_max(v) : warp_sum(v);
    if (lane == 0) red[32] = v;
  }
  __syncthreads();
  return red[32];
}

__device__ __forceinline__ bool kept(const float *mask_b, int64_t j) { return !mask_b || mask_b[j] != 0.0f; }

/* Row softmax of one chunk. S (slots, rows, TK) fp32 scaled scores → P (slots, rows, TK)
 * = exp(S − lse) over the kept keys, 0 elsewhere; lse (B, NH, TQ) of the chunk's rows (or
 * NULL). P may be S itself (fp32): every element is read and written by one thread. Grid
 * (rows, slots). */
template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    chunk_softmax_kernel(T *P, float *lse, const float *S, const float *mask, ChunkPlan pl, int64_t outer,
                         int64_t slot0, int64_t i0, int64_t rows) {
  __shared__ float red[33];
  const int64_t r = blockIdx.x, p = blockIdx.y;
  int64_t b, h;
  slot_bh(pl.over_heads, outer, slot0 + p, &b, &h);
  const float *s = S + (p * rows + r) * pl.TK;
  T *prow = P + (p * rows + r) * pl.TK;
  const float *mask_b = mask ? mask + b * pl.TK : nullptr;

  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < pl.TK; j += blockDim.x)
    if (kept(mask_b, j)) m = fmaxf(m, s[j]);
  m = block_allreduce<true>(m, red);
  float l = INFINITY; /* every key masked: lse = +inf and P = 0 */
  if (m != -INFINITY) {
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < pl.TK; j += blockDim.x)
      if (kept(mask_b, j)) sum += expf(s[j] - m);
    l = m + logf(block_allreduce<false>(sum, red));
  }
  for (int64_t j = threadIdx.x; j < pl.TK; j += blockDim.x) prow[j] = from_f<T>(kept(mask_b, j) ? expf(s[j] - l) : 0.0f);
  if (lse && threadIdx.x == 0) lse[(b * pl.NH + h) * pl.TQ + i0 + r] = l;
}

/* P = exp(S − lse) and dS = P ⊙ (dP − delta) of one chunk, both (slots, rows, TK); P may
 * overwrite S and dS overwrite dP (fp32). A row with lse = +inf gets P = dS = 0. Grid
 * (rows, slots). */
template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    chunk_dscores_kernel(T *P, T *dS, const float *S, const float *dP, const float *lse, const float *delta,
                         const float *mask, ChunkPlan pl, int64_t outer, int64_t slot0, int64_t i0, int64_t rows) {
  const int64_t r = blockIdx.x, p = blockIdx.y;
  int64_t b, h;
  slot_bh(pl.over_heads, outer, slot0 + p, &b, &h);
  const int64_t row = (b * pl.NH + h) * pl.TQ + i0 + r, off = (p * rows + r) * pl.TK;
  const float lse_i = lse[row], delta_i = delta[row];
  const float *mask_b = mask ? mask + b * pl.TK : nullptr;
  for (int64_t j = threadIdx.x; j < pl.TK; j += blockDim.x) {
    float pj = kept(mask_b, j) ? expf(S[off + j] - lse_i) : 0.0f; /* exp(−inf) = 0 for lse = +inf */
    float dsj = pj * (dP[off + j] - delta_i);
    P[off + j] = from_f<T>(pj);
    dS[off + j] = from_f<T>(dsj);
  }
}

/* delta (B, NH, TQ) = Σ_d dout ⊙ out per row and head: one warp per (b, i, h), any D. */
template <typename T>
__global__ void chunk_delta_kernel(float *delta, const T *dout, const T *out, ChunkPlan pl) {
  const int64_t rows = pl.B * pl.TQ * pl.NH, warps = (int64_t)gridDim.x * (blockDim.x / 32);
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const int64_t h = r % pl.NH, bi = r / pl.NH; /* bi = b·TQ + i */
    const T *o = out + bi * pl.C + h * pl.D, *dO = dout + bi * pl.C + h * pl.D;
    float s = 0.0f;
    for (int64_t d = lane; d < pl.D; d += 32) s += to_f(dO[d]) * to_f(o[d]);
    s = warp_sum(s);
    if (lane == 0) delta[((bi / pl.TQ) * pl.NH + h) * pl.TQ + bi % pl.TQ] = s;
  }
}

/* dst (n) += acc (n), fp32 accumulators into the bf16 gradients. */
template <typename T>
__global__ void add_f32_kernel(T *dst, const float *acc, int64_t n) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
    dst[e] = from_f<T>(to_f(dst[e]) + acc[e]);
}

/* ------------------------------------------------------------------ GEMM */

/* One operand: base pointer, its dtype, leading dimension and element stride between the
 * batch slots, all in row-major terms; t = use its transpose. */
struct Operand {
  const void *p;
  DType dt;
  int64_t ld, stride;
  bool t;
};

/* C_p (M, N) = alpha·op(A_p) op(B_p) + beta·C_p for p < batch, row-major. cuBLAS is
 * column-major and reads a row-major matrix as its transpose, so the call computes
 * Cᵀ = op(B)ᵀ op(A)ᵀ with the operands swapped. A and B share a dtype; C is that dtype
 * or fp32 (cuBLAS supports bf16·bf16 → fp32 with fp32 compute). */
void gemm(Ctx *ctx, int64_t M, int64_t N, int64_t K, float alpha, Operand A, Operand B, float beta, void *C,
          DType c_dt, int64_t ldc, int64_t sC, int64_t batch) {
  MCM_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && A.ld <= INT32_MAX && B.ld <= INT32_MAX &&
                ldc <= INT32_MAX && batch <= INT32_MAX,
            "attention (chunked): GEMM %lld x %lld x %lld (batch %lld) exceeds cuBLAS's int sizes", (long long)M,
            (long long)N, (long long)K, (long long)batch);
  CUBLAS_CHECK(cublasGemmStridedBatchedEx((cublasHandle_t)ctx->cublas, B.t ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          A.t ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, B.p,
                                          cuda_dtype(B.dt), (int)B.ld, B.stride, A.p, cuda_dtype(A.dt), (int)A.ld,
                                          A.stride, &beta, C, cuda_dtype(c_dt), (int)ldc, sC, (int)batch,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* ------------------------------------------------------------------ planning */

void check_tensor(const char *op, const char *arg, const Tensor *t, DType dt, int64_t d0, int64_t d1, int64_t d2) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype), dtype_name(dt));
  bool ok = d2 < 0 ? t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1
                   : t->ndim == 3 && t->shape[0] == d0 && t->shape[1] == d1 && t->shape[2] == d2;
  MCM_CHECK(ok, "%s: %s has shape %s, expected [%lld, %lld%s%lld]", op, arg, ShapeStr(t).c_str(), (long long)d0,
            (long long)d1, d2 < 0 ? "" : ", ", d2 < 0 ? 0LL : (long long)d2);
}

/* Checks q, k, v and the mask and plans the chunks for `bytes_per_score` of workspace per
 * score; chunk_rows > 0 caps the score rows held at once. */
ChunkPlan plan_chunks(const char *op, const Tensor *q, const Tensor *k, const Tensor *v, const Tensor *mask, int NH,
                      int chunk_rows, size_t bytes_per_score) {
  MCM_CHECK(q->ndim == 3 && k->ndim == 3, "%s: q %s and k %s must be (B, T, NH·D)", op, ShapeStr(q).c_str(),
            ShapeStr(k).c_str());
  MCM_CHECK(q->dtype == DT_F32 || q->dtype == DT_BF16, "%s: q is %s, expected fp32 or bf16", op,
            dtype_name(q->dtype));
  MCM_CHECK(chunk_rows >= 0, "%s: chunk_rows = %d must be >= 0 (0: from the workspace budget)", op, chunk_rows);
  ChunkPlan pl = {};
  pl.B = q->shape[0], pl.TQ = q->shape[1], pl.C = q->shape[2], pl.TK = k->shape[1], pl.NH = NH;
  MCM_CHECK(NH >= 1 && pl.C % NH == 0, "%s: %lld channels do not split into NH = %d heads", op, (long long)pl.C, NH);
  pl.D = pl.C / NH;
  MCM_CHECK(attention_chunked_cuda_supports((int)(pl.D > INT32_MAX ? 0 : pl.D)),
            "%s: head dim D = %lld (%lld channels / %d heads) is not supported on the GPU: it must be a multiple of 8 "
            "and at most 1024 (hint: pad the heads to a multiple of 8 channels)",
            op, (long long)pl.D, (long long)pl.C, NH);
  check_tensor(op, "q", q, q->dtype, pl.B, pl.TQ, pl.C);
  check_tensor(op, "k", k, q->dtype, pl.B, pl.TK, pl.C);
  check_tensor(op, "v", v, q->dtype, pl.B, pl.TK, pl.C);
  if (mask) check_tensor(op, "key_mask", mask, DT_F32, pl.B, pl.TK, -1);
  MCM_CHECK(pl.B >= 1 && pl.TQ >= 1 && pl.TK >= 1 && pl.TQ <= INT32_MAX && pl.TK <= INT32_MAX,
            "%s: B = %lld, TQ = %lld, TK = %lld out of range", op, (long long)pl.B, (long long)pl.TQ,
            (long long)pl.TK);
  pl.scale = 1.0f / sqrtf((float)pl.D);
  pl.over_heads = NH >= pl.B;
  pl.n_outer = pl.over_heads ? pl.B : NH;
  pl.n_inner = pl.over_heads ? NH : pl.B;
  pl.sQ = pl.over_heads ? pl.D : pl.TQ * pl.C;
  pl.sK = pl.over_heads ? pl.D : pl.TK * pl.C;
  /* Score rows that fit at once, shared out over all batch slots so that one call covers
   * them all where it can: R = fit / slots rows each (at least 1, at most TQ); when fewer rows
   * fit than there are slots, R = 1 and the slots are split over several calls. */
  int64_t fit = (int64_t)(kChunkBudget / (bytes_per_score * (size_t)pl.TK));
  if (chunk_rows > 0 && chunk_rows < fit) fit = chunk_rows;
  if (fit < 1) fit = 1;
  pl.rows = fit / pl.n_inner;
  if (pl.rows < 1) pl.rows = 1;
  if (pl.rows > pl.TQ) pl.rows = pl.TQ;
  pl.slots = fit / pl.rows;
  if (pl.slots < 1) pl.slots = 1;
  if (pl.slots > pl.n_inner) pl.slots = pl.n_inner;
  if (pl.slots > 65535) pl.slots = 65535; /* grid y of the row kernels */
  return pl;
}

template <typename T>
const T *cdata(const Tensor *t) { return t ? (const T *)t->data : nullptr; }

/* The first element of batch slot `slot` of outer index `o`, row i, in a (B, T, C) tensor. */
int64_t head_offset(const ChunkPlan &pl, int64_t o, int64_t slot, int64_t T, int64_t i) {
  int64_t b, h;
  slot_bh(pl.over_heads, o, slot, &b, &h);
  return (b * T + i) * pl.C + h * pl.D;
}

/* ------------------------------------------------------------------ forward */

template <typename T>
void chunked_forward(Ctx *ctx, Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                     const Tensor *mask, const ChunkPlan &pl) {
  const DType dt = q->dtype;
  const bool f32 = dt == DT_F32;
  const int64_t scores = pl.slots * pl.rows * pl.TK;
  float *S = (float *)ctx_alloc_act(ctx, (size_t)scores * sizeof(float)); /* (slots, R, TK) */
  T *P = f32 ? (T *)S : (T *)ctx_alloc_act(ctx, (size_t)scores * sizeof(T)); /* (slots, R, TK) */
  const T *qd = cdata<T>(q), *kd = cdata<T>(k), *vd = cdata<T>(v);
  T *od = (T *)out->data;
  const float *md = mask ? (const float *)mask->data : nullptr;
  float *ld = lse ? (float *)lse->data : nullptr;
  const size_t es = sizeof(T);

  for (int64_t o = 0; o < pl.n_outer; o++)
    for (int64_t s0 = 0; s0 < pl.n_inner; s0 += pl.slots) {
      const int64_t ns = pl.n_inner - s0 < pl.slots ? pl.n_inner - s0 : pl.slots;
      const T *kb = kd + head_offset(pl, o, s0, pl.TK, 0), *vb = vd + head_offset(pl, o, s0, pl.TK, 0);
      for (int64_t i0 = 0; i0 < pl.TQ; i0 += pl.rows) {
        const int64_t R = pl.TQ - i0 < pl.rows ? pl.TQ - i0 : pl.rows, sS = R * pl.TK;
        const int64_t qo = head_offset(pl, o, s0, pl.TQ, i0);
        /* S (R, TK) = scale · Q_c (R, D) · Kᵀ */
        gemm(ctx, R, pl.TK, pl.D, pl.scale, Operand{qd + qo, dt, pl.C, pl.sQ, false},
             Operand{kb, dt, pl.C, pl.sK, true}, 0.0f, S, DT_F32, pl.TK, sS, ns);
        chunk_softmax_kernel<T><<<dim3((unsigned)R, (unsigned)ns), kRowThreads, 0, CTX_STREAM(ctx)>>>(
            P, ld, S, md, pl, o, s0, i0, R);
        CUDA_LAUNCH_CHECK();
        /* O_c (R, D) = P (R, TK) · V (TK, D) */
        gemm(ctx, R, pl.D, pl.TK, 1.0f, Operand{P, dt, pl.TK, sS, false}, Operand{vb, dt, pl.C, pl.sK, false}, 0.0f,
             (char *)od + (size_t)qo * es, dt, pl.C, pl.sQ, ns);
      }
    }
}

/* ------------------------------------------------------------------ backward */

template <typename T>
void chunked_backward(Ctx *ctx, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *q,
                      const Tensor *k, const Tensor *v, const Tensor *out, const Tensor *lse, const Tensor *mask,
                      const ChunkPlan &pl) {
  const DType dt = q->dtype;
  const bool f32 = dt == DT_F32;
  cudaStream_t st = CTX_STREAM(ctx);
  const int64_t scores = pl.slots * pl.rows * pl.TK;
  float *S = (float *)ctx_alloc_act(ctx, (size_t)scores * sizeof(float));  /* (slots, R, TK) */
  float *dP = (float *)ctx_alloc_act(ctx, (size_t)scores * sizeof(float)); /* (slots, R, TK) */
  T *P = f32 ? (T *)S : (T *)ctx_alloc_act(ctx, (size_t)scores * sizeof(T));
  T *dS = f32 ? (T *)dP : (T *)ctx_alloc_act(ctx, (size_t)scores * sizeof(T));
  float *delta = (float *)ctx_alloc_act(ctx, (size_t)(pl.B * pl.NH * pl.TQ) * sizeof(float)); /* (B, NH, TQ) */

  /* dK, dV accumulators (B, TK, C): the gradients themselves in fp32, fp32 buffers in bf16. */
  const int64_t kv_numel = pl.B * pl.TK * pl.C;
  float *dK = nullptr, *dV = nullptr;
  if (dk) dK = f32 ? (float *)dk->data : (float *)ctx_alloc_act(ctx, (size_t)kv_numel * sizeof(float));
  if (dv) dV = f32 ? (float *)dv->data : (float *)ctx_alloc_act(ctx, (size_t)kv_numel * sizeof(float));
  if (!f32) {
    if (dK) CUDA_CHECK(cudaMemsetAsync(dK, 0, (size_t)kv_numel * sizeof(float), st));
    if (dV) CUDA_CHECK(cudaMemsetAsync(dV, 0, (size_t)kv_numel * sizeof(float), st));
  }

  chunk_delta_kernel<T><<<cuda_blocks(pl.B * pl.TQ * pl.NH, kRowThreads / 32), kRowThreads, 0, st>>>(
      delta, cdata<T>(dout), cdata<T>(out), pl);
  CUDA_LAUNCH_CHECK();

  const T *qd = cdata<T>(q), *kd = cdata<T>(k), *vd = cdata<T>(v), *dod = cdata<T>(dout);
  const float *md = mask ? (const float *)mask->data : nullptr, *ld = (const float *)lse->data;
  for (int64_t o = 0; o < pl.n_outer; o++)
    for (int64_t s0 = 0; s0 < pl.n_inner; s0 += pl.slots) {
      const int64_t ns = pl.n_inner - s0 < pl.slots ? pl.n_inner - s0 : pl.slots;
      const int64_t ko = head_offset(pl, o, s0, pl.TK, 0);
      for (int64_t i0 = 0; i0 < pl.TQ; i0 += pl.rows) {
        const int64_t R = pl.TQ - i0 < pl.rows ? pl.TQ - i0 : pl.rows, sS = R * pl.TK;
        const int64_t qo = head_offset(pl, o, s0, pl.TQ, i0);
        const Operand Qc{qd + qo, dt, pl.C, pl.sQ, false}, dOc{dod + qo, dt, pl.C, pl.sQ, false};
        /* S (R, TK) = scale · Q_c Kᵀ,  dP (R, TK) = dO_c Vᵀ */
        gemm(ctx, R, pl.TK, pl.D, pl.scale, Qc, Operand{kd + ko, dt, pl.C, pl.sK, true}, 0.0f, S, DT_F32, pl.TK, sS,
             ns);
        gemm(ctx, R, pl.TK, pl.D, 1.0f, dOc, Operand{vd + ko, dt, pl.C, pl.sK, true}, 0.0f, dP, DT_F32, pl.TK, sS,
             ns);
        chunk_dscores_kernel<T><<<dim3((unsigned)R, (unsigned)ns), kRowThreads, 0, st>>>(P, dS, S, dP, ld, delta,
                                                                                           md, pl, o, s0, i0, R);
        CUDA_LAUNCH_CHECK();
        const Operand dSm{dS, dt, pl.TK, sS, false};
        /* dV (TK, D) += Pᵀ dO_c */
        if (dV)
          gemm(ctx, pl.TK, pl.D, R, 1.0f, Operand{P, dt, pl.TK, sS, true}, dOc, 1.0f, dV + ko, DT_F32, pl.C, pl.sK,
               ns);
        /* dQ_c (R, D) += scale · dS K */
        if (dq)
          gemm(ctx, R, pl.D, pl.TK, pl.scale, dSm, Operand{kd + ko, dt, pl.C, pl.sK, false}, 1.0f,
               (char *)dq->data + (size_t)qo * sizeof(T), dt, pl.C, pl.sQ, ns);
        /* dK (TK, D) += scale · dSᵀ Q_c */
        if (dK)
          gemm(ctx, pl.TK, pl.D, R, pl.scale, Operand{dS, dt, pl.TK, sS, true}, Qc, 1.0f, dK + ko, DT_F32, pl.C,
               pl.sK, ns);
      }
    }

  if (!f32) {
    /* k and v may be one tensor (dk == dv): the two adds run in order on the stream. */
    if (dK) {
      add_f32_kernel<T><<<cuda_blocks(kv_numel, 256), 256, 0, st>>>((T *)dk->data, dK, kv_numel);
      CUDA_LAUNCH_CHECK();
    }
    if (dV) {
      add_f32_kernel<T><<<cuda_blocks(kv_numel, 256), 256, 0, st>>>((T *)dv->data, dV, kv_numel);
      CUDA_LAUNCH_CHECK();
    }
  }
}

}  // namespace

bool attention_chunked_cuda_supports(int D) { return D >= 8 && D <= 1024 && D % 8 == 0; }

void attention_chunked_forward_cuda(Ctx *ctx, Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k,
                                    const Tensor *v, const Tensor *mask, int NH, int chunk_rows) {
  const char *op = "attention_chunked_forward_cuda";
  ChunkPlan pl = plan_chunks(op, q, k, v, mask, NH, chunk_rows, q->dtype == DT_F32 ? 4 : 6);
  check_tensor(op, "out", out, q->dtype, pl.B, pl.TQ, pl.C);
  if (lse) check_tensor(op, "lse", lse, DT_F32, pl.B, pl.NH, pl.TQ);
  if (q->dtype == DT_BF16)
    chunked_forward<__nv_bfloat16>(ctx, out, lse, q, k, v, mask, pl);
  else
    chunked_forward<float>(ctx, out, lse, q, k, v, mask, pl);
}

void attention_chunked_backward_cuda(Ctx *ctx, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout,
                                     const Tensor *q, const Tensor *k, const Tensor *v, const Tensor *out,
                                     const Tensor *lse, const Tensor *mask, int NH, int chunk_rows) {
  const char *op = "attention_chunked_backward_cuda";
  ChunkPlan pl = plan_chunks(op, q, k, v, mask, NH, chunk_rows, q->dtype == DT_F32 ? 8 : 12);
  check_tensor(op, "out", out, q->dtype, pl.B, pl.TQ, pl.C);
  check_tensor(op, "dout", dout, q->dtype, pl.B, pl.TQ, pl.C);
  MCM_CHECK(lse, "%s: the forward's logsumexp is missing", op);
  check_tensor(op, "lse", lse, DT_F32, pl.B, pl.NH, pl.TQ);
  if (dq) check_tensor(op, "dq", dq, q->dtype, pl.B, pl.TQ, pl.C);
  if (dk) check_tensor(op, "dk", dk, q->dtype, pl.B, pl.TK, pl.C);
  if (dv) check_tensor(op, "dv", dv, q->dtype, pl.B, pl.TK, pl.C);
  if (!dq && !dk && !dv) return;
  if (q->dtype == DT_BF16)
    chunked_backward<__nv_bfloat16>(ctx, dq, dk, dv, dout, q, k, v, out, lse, mask, pl);
  else
    chunked_backward<float>(ctx, dq, dk, dv, dout, q, k, v, out, lse, mask, pl);
}
