/* Multi-head attention on the GPU (see attention.h): fused flash-attention-style kernels on
 * CUDA cores (fp32 math, fp32 or bf16 storage). Workbench variant v2
 * (tools/workbench/attention.cu) is this file.
 *
 * Size letters: B batch, TQ queries, TK keys, NH heads, D head dim (32 or 64; the kernels
 * are templates on D), C = NH·D. q/k/v/out are (B, T, C) with head h in channels h·D..h·D+D−1.
 *
 * Work split: a block of kWarps warps owns kTile = 32 rows (queries, or keys in the dK/dV
 * pass); each warp owns kRows = 4 of them. The other side streams through shared memory in
 * tiles of 32, one per lane: lane j computes the scores of key (or query) j against the
 * warp's 4 rows. The tile is stored transposed with a padded row (kTile + 1 floats), so the
 * column a lane reads for its dot products and the row all lanes read for the accumulation
 * both fall in 32 different banks.
 *
 * Forward (grid TQ/32 × NH × B): for each key tile, scores s = q·k/√D, an online softmax
 * (running max m and sum l per row, earlier partial outputs rescaled by exp(m_old − m_new)),
 * then acc += p v. Saves lse = m + log l per row (+inf for a row with every key masked,
 * whose output is 0), so backward gets P_ij = exp(s_ij − lse_i) without the TQ×TK matrix.
 *
 * Backward, three deterministic passes (no atomics; every element is summed by one thread
 * in a fixed order, so reruns are bit-identical):
 *   1. delta (B, NH, TQ) = Σ_d dout ⊙ out       (D_i of dS = P ⊙ (dP − D_i))
 *   2. dK/dV (grid TK/32 × NH × B): a block owns 32 keys and walks over every query tile:
 *      dv_j += Σ_i P_ij dout_i,  dk_j += Σ_i dS_ij q_i / √D
 *   3. dQ (grid TQ/32 × NH × B): a block owns 32 queries and walks over every key tile:
 *      dq_i += Σ_j dS_ij k_j / √D
 * Memory beyond the inputs and gradients: lse and delta, O(B·NH·TQ).
 *
 * Every other head dim goes to the chunked cuBLAS path of attention_large.cu (dispatched at
 * the bottom of this file). */
#include "attention.h"
#include "cuda_common.h"

namespace {

const int kTile = 32;                 /* rows per block = columns per streamed tile = warp size */
const int kWarps = 8;
const int kRows = kTile / kWarps;     /* rows per warp */
const int kThreads = kWarps * 32;

struct AttnDims {
  int B, TQ, TK, NH;
  int64_t C;    /* NH·D: the row stride of q, k, v, out */
  float scale;  /* 1/√D */
};

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ bool key_kept(const float *mask, const AttnDims &g, int b, int key) {
  return key < g.TK && (!mask || mask[(int64_t)b * g.TK + key] != 0.0f);
}

/* dst[r][d] = src row t0 + r of head h in batch b (r < kTile, d < D), zero past T. */
template <typename T, int D>
__device__ void load_rows(float (*dst)[D], const T *src, int b, int h, int t0, int T_, const AttnDims &g) {
  for (int idx = threadIdx.x; idx < kTile * D; idx += kThreads) {
    int r = idx / D, d = idx % D, t = t0 + r;
    dst[r][d] = t < T_ ? to_f(src[((int64_t)b * T_ + t) * g.C + (int64_t)h * D + d]) : 0.0f;
  }
}

/* The same rows transposed: dst[d][r] (padded rows of kTile + 1). */
template <typename T, int D>
__device__ void load_rows_t(float (*dst)[kTile + 1], const T *src, int b, int h, int t0, int T_, const AttnDims &g) {
  for (int idx = threadIdx.x; idx < kTile * D; idx += kThreads) {
    int r = idx / D, d = idx % D, t = t0 + r;
    dst[d][r] = t < T_ ? to_f(src[((int64_t)b * T_ + t) * g.C + (int64_t)h * D + d]) : 0.0f;
  }
}

/* ------------------------------------------------------------------ forward */

/* out (B, TQ, C) = softmax(q kᵀ/√D) v per head; lse (B, NH, TQ) or NULL. */
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(T *out, float *lse, const T *q, const T *k, const T *v, const float *mask, AttnDims g) {
  constexpr int DL = D / 32;                    /* output channels per lane: lane + 32c */
  __shared__ float q_s[kTile][D];               /* this block's queries: rows read as broadcasts */
  __shared__ float kt_s[D][kTile + 1];          /* key tile, transposed */
  __shared__ float v_s[kTile][D];               /* value tile */
  __shared__ float p_s[kWarps][kRows][kTile];   /* each warp's probabilities for the tile */
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row0 = warp * kRows;

  load_rows<T, D>(q_s, q, b, h, i0, g.TQ, g);
  float m[kRows], l[kRows], acc[kRows][DL];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < DL; c++) acc[r][c] = 0.0f;
  }

  for (int j0 = 0; j0 < g.TK; j0 += kTile) {
    __syncthreads(); /* the previous tile is no longer read (and q_s is loaded) */
    load_rows_t<T, D>(kt_s, k, b, h, j0, g.TK, g);
    load_rows<T, D>(v_s, v, b, h, j0, g.TK, g);
    __syncthreads();

    const bool kept = key_kept(mask, g, b, j0 + lane);
    float s[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) s[r] = 0.0f;
#pragma unroll 16
    for (int d = 0; d < D; d++) {
      float kd = kt_s[d][lane];
#pragma unroll
      for (int r = 0; r < kRows; r++) s[r] += q_s[row0 + r][d] * kd;
    }
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      float sr = kept ? s[r] * g.scale : -INFINITY;
      float m_new = fmaxf(m[r], warp_max(sr));
      float m_ref = m_new == -INFINITY ? 0.0f : m_new; /* nothing kept yet: avoid (−inf) − (−inf) */
      float p = expf(sr - m_ref);                      /* 0 for a masked key */
      float corr = expf(m[r] - m_ref);                 /* rescales the earlier tiles; 0 when there were none */
      l[r] = l[r] * corr + warp_sum(p);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < DL; c++) acc[r][c] *= corr;
      p_s[warp][r][lane] = p;
    }
    __syncwarp();
    for (int j = 0; j < kTile; j++) {
      float vj[DL];
#pragma unroll
      for (int c = 0; c < DL; c++) vj[c] = v_s[j][lane + 32 * c];
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        float p = p_s[warp][r][j];
#pragma unroll
        for (int c = 0; c < DL; c++) acc[r][c] += p * vj[c];
      }
    }
    __syncwarp(); /* p_s is rewritten by the next tile */
  }

#pragma unroll
  for (int r = 0; r < kRows; r++) {
    int i = i0 + row0 + r;
    if (i >= g.TQ) continue;
    float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f; /* every key masked: zeros */
    T *o = out + ((int64_t)b * g.TQ + i) * g.C + (int64_t)h * D;
#pragma unroll
    for (int c = 0; c < DL; c++) o[lane + 32 * c] = from_f<T>(acc[r][c] * inv);
    if (lse && lane == 0) lse[((int64_t)b * g.NH + h) * g.TQ + i] = l[r] > 0.0f ? m[r] + logf(l[r]) : INFINITY;
  }
}

/* ------------------------------------------------------------------ backward */

/* delta (B, NH, TQ) = Σ_d dout ⊙ out per row and head: one warp per (b, i, h). */
template <typename T, int D>
__global__ void attention_delta_kernel(float *delta, const T *dout, const T *out, AttnDims g) {
  int64_t rows = (int64_t)g.B * g.TQ * g.NH, warps = (int64_t)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    int h = (int)(r % g.NH);
    int64_t bi = r / g.NH; /* b·TQ + i */
    int b = (int)(bi / g.TQ), i = (int)(bi % g.TQ);
    const T *o = out + bi * g.C + (int64_t)h * D, *dO = dout + bi * g.C + (int64_t)h * D;
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < D / 32; c++) s += to_f(dO[lane + 32 * c]) * to_f(o[lane + 32 * c]);
    s = warp_sum(s);
    if (lane == 0) delta[((int64_t)b * g.NH + h) * g.TQ + i] = s;
  }
}

/* dk, dv (B, TK, C) += the gradients of this block's 32 keys (either may be NULL). */
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(T *dk, T *dv, const T *q, const T *k, const T *v, const T *dout, const float *lse,
                                   const float *delta, const float *mask, AttnDims g) {
  constexpr int DL = D / 32;
  __shared__ float k_s[kTile][D];              /* this block's keys: rows read as broadcasts */
  __shared__ float v_s[kTile][D];
  __shared__ float qt_s[D][kTile + 1];         /* query tile, transposed */
  __shared__ float dot_s[D][kTile + 1];        /* dout tile, transposed */
  __shared__ float p_s[kWarps][kRows][kTile];  /* P_ij, this warp's keys × the tile's queries */
  __shared__ float ds_s[kWarps][kRows][kTile]; /* dS_ij */
  const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row0 = warp * kRows;
  const float *lse_bh = lse + ((int64_t)b * g.NH + h) * g.TQ, *delta_bh = delta + ((int64_t)b * g.NH + h) * g.TQ;

  load_rows<T, D>(k_s, k, b, h, j0, g.TK, g);
  load_rows<T, D>(v_s, v, b, h, j0, g.TK, g);
  bool kept[kRows]; /* the same for the whole warp */
  float dk_acc[kRows][DL], dv_acc[kRows][DL];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    kept[r] = key_kept(mask, g, b, j0 + row0 + r);
#pragma unroll
    for (int c = 0; c < DL; c++) dk_acc[r][c] = dv_acc[r][c] = 0.0f;
  }

  for (int i0 = 0; i0 < g.TQ; i0 += kTile) {
    __syncthreads();
    load_rows_t<T, D>(qt_s, q, b, h, i0, g.TQ, g);
    load_rows_t<T, D>(dot_s, dout, b, h, i0, g.TQ, g);
    __syncthreads();

    const int i = i0 + lane;
    const float lse_i = i < g.TQ ? lse_bh[i] : INFINITY; /* +inf: P = 0 (past TQ, or fully masked) */
    const float delta_i = i < g.TQ ? delta_bh[i] : 0.0f;
    float s[kRows], dp[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) s[r] = dp[r] = 0.0f;
#pragma unroll 16
    for (int d = 0; d < D; d++) {
      float qd = qt_s[d][lane], dod = dot_s[d][lane];
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        s[r] += k_s[row0 + r][d] * qd;
        dp[r] += v_s[row0 + r][d] * dod;
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      float p = kept[r] ? expf(s[r] * g.scale - lse_i) : 0.0f;
      p_s[warp][r][lane] = p;
      ds_s[warp][r][lane] = p * (dp[r] - delta_i);
    }
    __syncwarp();
    for (int ii = 0; ii < kTile; ii++) {
      float qv[DL], dov[DL];
#pragma unroll
      for (int c = 0; c < DL; c++) qv[c] = qt_s[lane + 32 * c][ii], dov[c] = dot_s[lane + 32 * c][ii];
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        float p = p_s[warp][r][ii], ds = ds_s[warp][r][ii];
#pragma unroll
        for (int c = 0; c < DL; c++) {
          dv_acc[r][c] += p * dov[c];
          dk_acc[r][c] += ds * qv[c];
        }
      }
    }
    __syncwarp();
  }

  /* When k and v are one tensor, dk and dv are one buffer: this thread adds both terms of
   * its elements in turn, so nothing is lost. */
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    int j = j0 + row0 + r;
    if (j >= g.TK) continue;
    int64_t base = ((int64_t)b * g.TK + j) * g.C + (int64_t)h * D;
#pragma unroll
    for (int c = 0; c < DL; c++) {
      int64_t e = base + lane + 32 * c;
      if (dk) dk[e] = from_f<T>(to_f(dk[e]) + dk_acc[r][c] * g.scale);
      if (dv) dv[e] = from_f<T>(to_f(dv[e]) + dv_acc[r][c]);
    }
  }
}

/* dq (B, TQ, C) += the gradients of this block's 32 queries. */
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(T *dq, const T *q, const T *k, const T *v, const T *dout, const float *lse,
                                 const float *delta, const float *mask, AttnDims g) {
  constexpr int DL = D / 32;
  __shared__ float q_s[kTile][D];               /* this block's queries */
  __shared__ float do_s[kTile][D];              /* and their output gradients */
  __shared__ float kt_s[D][kTile + 1];          /* key tile, transposed */
  __shared__ float vt_s[D][kTile + 1];          /* value tile, transposed */
  __shared__ float ds_s[kWarps][kRows][kTile];  /* dS_ij, this warp's queries × the tile's keys */
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row0 = warp * kRows;
  const float *lse_bh = lse + ((int64_t)b * g.NH + h) * g.TQ, *delta_bh = delta + ((int64_t)b * g.NH + h) * g.TQ;

  load_rows<T, D>(q_s, q, b, h, i0, g.TQ, g);
  load_rows<T, D>(do_s, dout, b, h, i0, g.TQ, g);
  float lse_r[kRows], delta_r[kRows], acc[kRows][DL];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    int i = i0 + row0 + r;
    lse_r[r] = i < g.TQ ? lse_bh[i] : INFINITY;
    delta_r[r] = i < g.TQ ? delta_bh[i] : 0.0f;
#pragma unroll
    for (int c = 0; c < DL; c++) acc[r][c] = 0.0f;
  }

  for (int j0 = 0; j0 < g.TK; j0 += kTile) {
    __syncthreads();
    load_rows_t<T, D>(kt_s, k, b, h, j0, g.TK, g);
    load_rows_t<T, D>(vt_s, v, b, h, j0, g.TK, g);
    __syncthreads();

    const bool kept = key_kept(mask, g, b, j0 + lane);
    float s[kRows], dp[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) s[r] = dp[r] = 0.0f;
#pragma unroll 16
    for (int d = 0; d < D; d++) {
      float kd = kt_s[d][lane], vd = vt_s[d][lane];
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        s[r] += q_s[row0 + r][d] * kd;
        dp[r] += do_s[row0 + r][d] * vd;
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      float p = kept ? expf(s[r] * g.scale - lse_r[r]) : 0.0f;
      ds_s[warp][r][lane] = p * (dp[r] - delta_r[r]);
    }
    __syncwarp();
    for (int j = 0; j < kTile; j++) {
      float kv[DL];
#pragma unroll
      for (int c = 0; c < DL; c++) kv[c] = kt_s[lane + 32 * c][j];
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        float ds = ds_s[warp][r][j];
#pragma unroll
        for (int c = 0; c < DL; c++) acc[r][c] += ds * kv[c];
      }
    }
    __syncwarp();
  }

#pragma unroll
  for (int r = 0; r < kRows; r++) {
    int i = i0 + row0 + r;
    if (i >= g.TQ) continue;
    T *o = dq + ((int64_t)b * g.TQ + i) * g.C + (int64_t)h * D;
#pragma unroll
    for (int c = 0; c < DL; c++) o[lane + 32 * c] = from_f<T>(to_f(o[lane + 32 * c]) + acc[r][c] * g.scale);
  }
}

/* ------------------------------------------------------------------ launchers */

void check_attn_tensor(const char *op, const char *arg, const Tensor *t, DType dt, int64_t d0, int64_t d1,
                       int64_t d2) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype), dtype_name(dt));
  bool ok = d2 < 0 ? t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1
                   : t->ndim == 3 && t->shape[0] == d0 && t->shape[1] == d1 && t->shape[2] == d2;
  MCM_CHECK(ok, "%s: %s has shape %s, expected [%lld, %lld%s%lld]", op, arg, ShapeStr(t).c_str(), (long long)d0,
            (long long)d1, d2 < 0 ? "" : ", ", d2 < 0 ? 0LL : (long long)d2);
}

/* Checks q, k, v (and mask) and returns the dimensions the kernels use. */
AttnDims attn_dims(const char *op, const Tensor *q, const Tensor *k, const Tensor *v, const Tensor *mask, int NH) {
  MCM_CHECK(q->ndim == 3 && k->ndim == 3, "%s: q %s and k %s must be (B, T, NH·D)", op, ShapeStr(q).c_str(),
            ShapeStr(k).c_str());
  MCM_CHECK(q->dtype == DT_F32 || q->dtype == DT_BF16, "%s: q is %s, expected fp32 or bf16", op,
            dtype_name(q->dtype));
  int64_t B = q->shape[0], TQ = q->shape[1], C = q->shape[2], TK = k->shape[1];
  MCM_CHECK(NH >= 1 && C % NH == 0, "%s: %lld channels do not split into NH = %d heads", op, (long long)C, NH);
  int64_t D = C / NH;
  MCM_CHECK(attention_cuda_supports((int)D),
            "%s: head dim D = %lld (%lld channels / %d heads) has no CUDA kernel; supported: 32, 64 "
            "(hint: add an instantiation in kernels/attention.cu and try it in tools/workbench/attention.cu)",
            op, (long long)D, (long long)C, NH);
  check_attn_tensor(op, "q", q, q->dtype, B, TQ, C);
  check_attn_tensor(op, "k", k, q->dtype, B, TK, C);
  check_attn_tensor(op, "v", v, q->dtype, B, TK, C);
  if (mask) check_attn_tensor(op, "key_mask", mask, DT_F32, B, TK, -1);
  MCM_CHECK(B >= 1 && B <= 65535 && NH <= 65535, "%s: B = %lld and NH = %d must be in 1..65535 (grid y/z)", op,
            (long long)B, NH);
  MCM_CHECK(TQ >= 1 && TK >= 1 && TQ <= INT32_MAX - kTile && TK <= INT32_MAX - kTile,
            "%s: TQ = %lld, TK = %lld out of range", op, (long long)TQ, (long long)TK);
  return AttnDims{(int)B, (int)TQ, (int)TK, NH, C, 1.0f / sqrtf((float)D)};
}

template <typename T>
const T *cdata(const Tensor *t) { return t ? (const T *)t->data : nullptr; }
template <typename T>
T *mdata(Tensor *t) { return t ? (T *)t->data : nullptr; }

template <typename T, int D>
void forward_launch(Ctx *ctx, Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                    const Tensor *mask, AttnDims g) {
  dim3 grid((unsigned)((g.TQ + kTile - 1) / kTile), (unsigned)g.NH, (unsigned)g.B);
  attention_forward_kernel<T, D><<<grid, kThreads, 0, CTX_STREAM(ctx)>>>(
      mdata<T>(out), lse ? (float *)lse->data : nullptr, cdata<T>(q), cdata<T>(k), cdata<T>(v),
      mask ? (const float *)mask->data : nullptr, g);
  CUDA_LAUNCH_CHECK();
}

template <typename T, int D>
void backward_launch(Ctx *ctx, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *q,
                     const Tensor *k, const Tensor *v, const Tensor *out, const Tensor *lse, const Tensor *mask,
                     AttnDims g) {
  cudaStream_t st = CTX_STREAM(ctx);
  const float *m = mask ? (const float *)mask->data : nullptr, *l = (const float *)lse->data;
  float *delta = (float *)ctx_alloc_act(ctx, (size_t)g.B * g.NH * g.TQ * sizeof(float)); /* (B, NH, TQ) */
  attention_delta_kernel<T, D><<<cuda_blocks((int64_t)g.B * g.TQ * g.NH, kThreads / 32), kThreads, 0, st>>>(
      delta, cdata<T>(dout), cdata<T>(out), g);
  CUDA_LAUNCH_CHECK();
  if (dk || dv) {
    dim3 grid((unsigned)((g.TK + kTile - 1) / kTile), (unsigned)g.NH, (unsigned)g.B);
    attention_backward_dkdv_kernel<T, D><<<grid, kThreads, 0, st>>>(mdata<T>(dk), mdata<T>(dv), cdata<T>(q),
                                                                    cdata<T>(k), cdata<T>(v), cdata<T>(dout), l,
                                                                    delta, m, g);
    CUDA_LAUNCH_CHECK();
  }
  if (dq) {
    dim3 grid((unsigned)((g.TQ + kTile - 1) / kTile), (unsigned)g.NH, (unsigned)g.B);
    attention_backward_dq_kernel<T, D><<<grid, kThreads, 0, st>>>(mdata<T>(dq), cdata<T>(q), cdata<T>(k),
                                                                  cdata<T>(v), cdata<T>(dout), l, delta, m, g);
    CUDA_LAUNCH_CHECK();
  }
}

/* Calls f<T, D>() for the tensor dtype and head dim (attn_dims has checked both). */
#define ATTN_DISPATCH(dtype, D, f, ...)                                               \
  do {                                                                                \
    bool bf16_ = (dtype) == DT_BF16;                                                  \
    if ((D) == 32) {                                                                  \
      if (bf16_) f<__nv_bfloat16, 32>(__VA_ARGS__); else f<float, 32>(__VA_ARGS__);   \
    } else {                                                                          \
      if (bf16_) f<__nv_bfloat16, 64>(__VA_ARGS__); else f<float, 64>(__VA_ARGS__);   \
    }                                                                                 \
  } while (0)

}  // namespace

bool attention_cuda_supports(int D) { return D == 32 || D == 64; }

/* The head dim if q splits into NH heads, else 0 (attn_dims then reports the split). */
static int64_t head_dim(const Tensor *q, int NH) {
  return q->ndim == 3 && NH >= 1 && q->shape[2] % NH == 0 ? q->shape[2] / NH : 0;
}

void attention_forward_cuda(Ctx *ctx, Tensor *out, Tensor *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                            const Tensor *mask, int NH) {
  const char *op = "attention_forward_cuda";
  int64_t D = head_dim(q, NH);
  if (D > 0 && (D > INT32_MAX || !attention_cuda_supports((int)D))) {
    attention_chunked_forward_cuda(ctx, out, lse, q, k, v, mask, NH, 0);
    return;
  }
  AttnDims g = attn_dims(op, q, k, v, mask, NH);
  check_attn_tensor(op, "out", out, q->dtype, g.B, g.TQ, g.C);
  if (lse) check_attn_tensor(op, "lse", lse, DT_F32, g.B, g.NH, g.TQ);
  ATTN_DISPATCH(q->dtype, (int)(g.C / NH), forward_launch, ctx, out, lse, q, k, v, mask, g);
}

void attention_backward_cuda(Ctx *ctx, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *q,
                             const Tensor *k, const Tensor *v, const Tensor *out, const Tensor *lse,
                             const Tensor *mask, int NH) {
  const char *op = "attention_backward_cuda";
  int64_t D = head_dim(q, NH);
  if (D > 0 && (D > INT32_MAX || !attention_cuda_supports((int)D))) {
    attention_chunked_backward_cuda(ctx, dq, dk, dv, dout, q, k, v, out, lse, mask, NH, 0);
    return;
  }
  AttnDims g = attn_dims(op, q, k, v, mask, NH);
  check_attn_tensor(op, "out", out, q->dtype, g.B, g.TQ, g.C);
  check_attn_tensor(op, "dout", dout, q->dtype, g.B, g.TQ, g.C);
  MCM_CHECK(lse, "%s: the forward's logsumexp is missing", op);
  check_attn_tensor(op, "lse", lse, DT_F32, g.B, g.NH, g.TQ);
  if (dq) check_attn_tensor(op, "dq", dq, q->dtype, g.B, g.TQ, g.C);
  if (dk) check_attn_tensor(op, "dk", dk, q->dtype, g.B, g.TK, g.C);
  if (dv) check_attn_tensor(op, "dv", dv, q->dtype, g.B, g.TK, g.C);
  if (!dq && !dk && !dv) return;
  ATTN_DISPATCH(q->dtype, (int)(g.C / NH), backward_launch, ctx, dq, dk, dv, dout, q, k, v, out, lse, mask, g);
}
