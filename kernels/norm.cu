/* Normalisation ops on the GPU (see norm.h): group norm, layer norm and BatchNormLocal
 * through one set of kernels over the NormLayout view x (O, R, K, L), statistics per
 * group q = o·K + k over its n = R·L elements.
 *
 * Forward. One block per (group, split). A group of at most kSplitElems elements is one
 * block (split = 1) that does it all: Σx → μ, Σ(x − μ)² → rstd, then writes y; the group
 * is read three times, the last two from cache. A larger group (the VAE's GroupNorm at
 * 1024×64 mel: 4 channels × 65536) is cut into `splits` chunks of one block each, so the
 * GPU is full even at batch 1: each block writes its chunk's (mean, M2), a small kernel
 * merges them per group (Chan et al.'s pairwise update, in a fixed order), and a third
 * kernel writes y.
 * Backward. The same decomposition for Σ dŷ and Σ dŷ·x̂ (dŷ = dy·w), then dx; dw and db
 * are reduced per channel over (o, r) and the run of S elements that channel owns in each
 * group: per-(chunk, channel) partials, then one thread per channel sums its partials in
 * order. Nothing uses float atomics: every sum has a fixed order and repeated runs agree
 * bit for bit. Storage fp32 or bf16; statistics and arithmetic fp32. Backward accumulates.
 * Not yet measured or tuned: the split size and the per-element index divisions are
 * first guesses. */
#include "cuda_common.h"
#include "norm.h"

namespace {

const int kThreads = 256;            /* per block, every kernel; a multiple of 32 */
const int64_t kSplitElems = 32768;   /* a group larger than this is split over blocks */
const int kMaxSplits = 1024;         /* so the per-group merge loops stay short */
const int kColRows = 256;            /* rows (o, r) per block in the small-S dw/db kernel */

/* Sum over the block, returned to every thread. Safe to call several times in a row. */
__device__ __forceinline__ float block_sum_all(float v) {
  __shared__ float total;
  v = block_sum<kThreads>(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  v = total;
  __syncthreads();
  return v;
}

/* One statistics group q = o·K + k: where its e-th element (0 ≤ e < n, e = r·L + i) lives
 * and which affine channel it belongs to. In-group indices are 32-bit (the launchers check
 * n < 2^31); offsets are 64-bit. */
struct Group {
  int64_t base;    /* offset of (o, 0, k, 0) */
  int64_t rstep;   /* K·L: from row r to row r + 1 */
  uint32_t L, S, n;
  int64_t c0;      /* k·CPG, the group's first channel */
  __device__ Group(const NormLayout &l, int64_t q) {
    int64_t o = q / l.K, k = q % l.K;
    base = (o * l.R * l.K + k) * l.L;
    rstep = l.K * l.L;
    L = (uint32_t)l.L, S = (uint32_t)l.S, n = (uint32_t)(l.R * l.L);
    c0 = k * l.CPG;
  }
  __device__ __forceinline__ int64_t offset(uint32_t e) const {
    uint32_t r = e / L;
    return base + r * rstep + (e - r * L);
  }
  __device__ __forceinline__ int64_t channel(uint32_t e) const { return c0 + (e % L) / S; }
};

/* The chunk [e0, e1) of its group that block (q, split) covers. */
__device__ __forceinline__ void chunk_of(uint32_t n, uint32_t chunk, uint32_t *e0, uint32_t *e1) {
  *e0 = blockIdx.y * chunk;
  *e1 = min(n, *e0 + chunk);
}

/* y = x̂·w + b for the block's chunk of group q. */
template <typename T>
__device__ __forceinline__ void write_y(T *y, const T *x, const T *w, const T *b, const Group &g, uint32_t e0,
                                        uint32_t e1, float mu, float rs) {
  for (uint32_t e = e0 + threadIdx.x; e < e1; e += kThreads) {
    int64_t j = g.offset(e);
    float v = (to_f(x[j]) - mu) * rs;
    if (w || b) {
      int64_t c = g.channel(e);
      if (w) v *= to_f(w[c]);
      if (b) v += to_f(b[c]);
    }
    y[j] = from_f<T>(v);
  }
}

/* grid (groups, splits). Each block: its chunk's mean and M2 = Σ(x − mean)², two passes.
 * One split: that is the group's; write mean, rstd and y. Otherwise: partial (groups,
 * splits) = (mean, M2) for norm_merge_kernel. */
template <typename T>
__global__ void norm_stats_kernel(T *y, float *mean, float *rstd, float2 *partial, const T *x, const T *w, const T *b,
                                  NormLayout l, uint32_t chunk, float eps) {
  int64_t q = blockIdx.x;
  Group g(l, q);
  uint32_t e0, e1;
  chunk_of(g.n, chunk, &e0, &e1);
  float cnt = (float)(e1 - e0);
  float s = 0.0f;
  for (uint32_t e = e0 + threadIdx.x; e < e1; e += kThreads) s += to_f(x[g.offset(e)]);
  float mu = block_sum_all(s) / cnt;
  float v = 0.0f;
  for (uint32_t e = e0 + threadIdx.x; e < e1; e += kThreads) {
    float d = to_f(x[g.offset(e)]) - mu;
    v += d * d;
  }
  float m2 = block_sum_all(v);
  if (gridDim.y > 1) {
    if (threadIdx.x == 0) partial[q * gridDim.y + blockIdx.y] = make_float2(mu, m2);
    return;
  }
  float rs = 1.0f / sqrtf(m2 / cnt + eps);
  if (threadIdx.x == 0) mean[q] = mu, rstd[q] = rs;
  write_y(y, x, w, b, g, e0, e1, mu, rs);
}

/* A thread per group: merges the splits' (mean, M2) in order. Merging (n_a, μ_a, M2_a)
 * with (n_b, μ_b, M2_b): n = n_a + n_b, δ = μ_b − μ_a, μ = μ_a + δ·n_b/n,
 * M2 = M2_a + M2_b + δ²·n_a·n_b/n. */
__global__ void norm_merge_kernel(float *mean, float *rstd, const float2 *partial, int64_t groups, int splits,
                                  uint32_t n, uint32_t chunk, float eps) {
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < groups; q += (int64_t)gridDim.x * blockDim.x) {
    float na = 0.0f, mu = 0.0f, m2 = 0.0f;
    for (int s = 0; s < splits; s++) {
      float2 p = partial[q * splits + s];
      float nb = (float)(min(n, (s + 1) * chunk) - s * chunk), nt = na + nb, d = p.x - mu;
      mu += d * (nb / nt);
      m2 += p.y + d * d * (na * nb / nt);
      na = nt;
    }
    mean[q] = mu;
    rstd[q] = 1.0f / sqrtf(m2 / na + eps);
  }
}

/* grid (groups, splits): y for each chunk once mean and rstd are known. */
template <typename T>
__global__ void norm_apply_kernel(T *y, const T *x, const T *w, const T *b, const float *mean, const float *rstd,
                                  NormLayout l, uint32_t chunk) {
  int64_t q = blockIdx.x;
  Group g(l, q);
  uint32_t e0, e1;
  chunk_of(g.n, chunk, &e0, &e1);
  write_y(y, x, w, b, g, e0, e1, mean[q], rstd[q]);
}

/* dŷ = dy·w (dy where there is no w) of element e. */
template <typename T>
__device__ __forceinline__ float dyhat(const T *dy, const T *w, const Group &g, uint32_t e, int64_t j) {
  float v = to_f(dy[j]);
  return w ? v * to_f(w[g.channel(e)]) : v;
}

/* dx += rstd·(dŷ − mean(dŷ) − x̂·mean(dŷ·x̂)) over the block's chunk. */
template <typename T>
__device__ __forceinline__ void write_dx(T *dx, const T *dy, const T *x, const T *w, const Group &g, uint32_t e0,
                                         uint32_t e1, float mu, float rs, float m1, float m2) {
  for (uint32_t e = e0 + threadIdx.x; e < e1; e += kThreads) {
    int64_t j = g.offset(e);
    float xh = (to_f(x[j]) - mu) * rs;
    dx[j] = from_f<T>(to_f(dx[j]) + rs * (dyhat(dy, w, g, e, j) - m1 - xh * m2));
  }
}

/* grid (groups, splits): Σ dŷ and Σ dŷ·x̂ over each chunk. One split: dx directly.
 * Otherwise: partial (groups, splits) for norm_dsum_merge_kernel. */
template <typename T>
__global__ void norm_dsums_kernel(T *dx, float2 *partial, const T *dy, const T *x, const T *w, const float *mean,
                                  const float *rstd, NormLayout l, uint32_t chunk) {
  int64_t q = blockIdx.x;
  Group g(l, q);
  uint32_t e0, e1;
  chunk_of(g.n, chunk, &e0, &e1);
  float mu = mean[q], rs = rstd[q], s1 = 0.0f, s2 = 0.0f;
  for (uint32_t e = e0 + threadIdx.x; e < e1; e += kThreads) {
    int64_t j = g.offset(e);
    float d = dyhat(dy, w, g, e, j);
    s1 += d;
    s2 += d * ((to_f(x[j]) - mu) * rs);
  }
  s1 = block_sum_all(s1);
  s2 = block_sum_all(s2);
  if (gridDim.y > 1) {
    if (threadIdx.x == 0) partial[q * gridDim.y + blockIdx.y] = make_float2(s1, s2);
    return;
  }
  write_dx(dx, dy, x, w, g, e0, e1, mu, rs, s1 / (float)g.n, s2 / (float)g.n);
}

/* A thread per group: dmean (groups) = (mean(dŷ), mean(dŷ·x̂)) from the splits, in order. */
__global__ void norm_dsum_merge_kernel(float2 *dmean, const float2 *partial, int64_t groups, int splits, uint32_t n) {
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < groups; q += (int64_t)gridDim.x * blockDim.x) {
    float s1 = 0.0f, s2 = 0.0f;
    for (int s = 0; s < splits; s++) {
      float2 p = partial[q * splits + s];
      s1 += p.x, s2 += p.y;
    }
    dmean[q] = make_float2(s1 / (float)n, s2 / (float)n);
  }
}

/* grid (groups, splits): dx once the group means are known. */
template <typename T>
__global__ void norm_dx_kernel(T *dx, const T *dy, const T *x, const T *w, const float *mean, const float *rstd,
                               const float2 *dmean, NormLayout l, uint32_t chunk) {
  int64_t q = blockIdx.x;
  Group g(l, q);
  uint32_t e0, e1;
  chunk_of(g.n, chunk, &e0, &e1);
  float2 dm = dmean[q];
  write_dx(dx, dy, x, w, g, e0, e1, mean[q], rstd[q], dm.x, dm.y);
}

/* dw and db, channel by channel. Channel c = k·CPG + jc owns, in every row m = o·R + r,
 * the run of S elements at (m·K + k)·L + jc·S, in statistics group (m / R)·K + k. */

/* S ≥ 32: grid (C, splits), block (kThreads); block (c, split) covers rows [m0, m0 + rows)
 * of channel c, the threads striding through each run (coalesced). Writes pw, pb
 * (splits, C). */
template <typename T>
__global__ void affine_grad_runs_kernel(float *pw, float *pb, const T *dy, const T *x, const float *mean,
                                        const float *rstd, NormLayout l, uint32_t rows) {
  int64_t c = blockIdx.x, C = l.K * l.CPG, M = l.O * l.R;
  int64_t k = c / l.CPG, i0 = (c % l.CPG) * l.S;
  int64_t m0 = blockIdx.y * (int64_t)rows, m1 = min(M, m0 + (int64_t)rows);
  uint32_t S = (uint32_t)l.S, count = (uint32_t)((m1 - m0) * l.S);
  float sw = 0.0f, sb = 0.0f;
  for (uint32_t f = threadIdx.x; f < count; f += kThreads) {
    int64_t m = m0 + f / S, q = (m / l.R) * l.K + k;
    int64_t j = (m * l.K + k) * l.L + i0 + f % S;
    float d = to_f(dy[j]);
    sw += d * ((to_f(x[j]) - mean[q]) * rstd[q]);
    sb += d;
  }
  sw = block_sum_all(sw);
  sb = block_sum_all(sb);
  if (threadIdx.x == 0) pw[blockIdx.y * C + c] = sw, pb[blockIdx.y * C + c] = sb;
}

/* S < 32 (layer norm: S = 1): grid (chunks, ceil(C / 32)), block (32, 8); thread (tx, ty)
 * takes channel 32·blockIdx.y + tx (neighbouring channels are neighbours in memory) and
 * every 8th row of the block's kColRows, then the 8 row-lanes are summed in order. */
template <typename T>
__global__ void affine_grad_cols_kernel(float *pw, float *pb, const T *dy, const T *x, const float *mean,
                                        const float *rstd, NormLayout l) {
  __shared__ float sh_w[8][33], sh_b[8][33];
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t C = l.K * l.CPG, M = l.O * l.R, c = blockIdx.y * 32 + tx;
  float sw = 0.0f, sb = 0.0f;
  if (c < C) {
    int64_t k = c / l.CPG, i0 = (c % l.CPG) * l.S;
    int64_t m1 = min(M, (int64_t)(blockIdx.x + 1) * kColRows);
    for (int64_t m = (int64_t)blockIdx.x * kColRows + ty; m < m1; m += 8) {
      int64_t q = (m / l.R) * l.K + k;
      float mu = mean[q], rs = rstd[q];
      for (int64_t j = (m * l.K + k) * l.L + i0, end = j + l.S; j < end; j++) {
        float d = to_f(dy[j]);
        sw += d * ((to_f(x[j]) - mu) * rs);
        sb += d;
      }
    }
  }
  sh_w[ty][tx] = sw, sh_b[ty][tx] = sb;
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int t = 1; t < 8; t++) sw += sh_w[t][tx], sb += sh_b[t][tx];
    pw[blockIdx.x * C + c] = sw, pb[blockIdx.x * C + c] = sb;
  }
}

/* A thread per channel: dw[c] += Σ_s pw[s, c], db[c] += Σ_s pb[s, c], in order. */
template <typename T>
__global__ void affine_grad_finish_kernel(T *dw, T *db, const float *pw, const float *pb, int64_t C, int splits) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x) {
    float sw = 0.0f, sb = 0.0f;
    for (int s = 0; s < splits; s++) sw += pw[s * C + c], sb += pb[s * C + c];
    if (dw) dw[c] = from_f<T>(to_f(dw[c]) + sw);
    if (db) db[c] = from_f<T>(to_f(db[c]) + sb);
  }
}

/* ------------------------------------------------------------------ launchers */

struct Split {
  int splits;      /* blocks per group */
  uint32_t chunk;  /* elements per block (the last one may have fewer) */
};

/* A function of the group size only, so results never depend on the device. The count
 * is recomputed from the chunk so that no block gets an empty chunk. */
Split split_of(int64_t n) {
  int64_t s = (n + kSplitElems - 1) / kSplitElems;
  if (s > kMaxSplits) s = kMaxSplits;
  if (s < 1) s = 1;
  int64_t chunk = (n + s - 1) / s;
  return Split{(int)((n + chunk - 1) / chunk), (uint32_t)chunk};
}

const char *dt_name(const Tensor *t) { return dtype_name(t->dtype); }

/* On the GPU, the dtype of x (fp32 or bf16) and numel elements; NULL passes. */
void check_arg(const char *fn, const char *arg, const Tensor *t, const Tensor *x, int64_t numel) {
  if (!t) return;
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", fn, arg);
  MCM_CHECK(t->dtype == x->dtype, "%s: %s is %s, x is %s; they must match", fn, arg, dt_name(t), dt_name(x));
  MCM_CHECK(t->numel == numel, "%s: %s has shape %s, expected %lld elements", fn, arg, ShapeStr(t).c_str(),
            (long long)numel);
}

void check_stats(const char *fn, const char *arg, const Tensor *t, int64_t groups) {
  MCM_CHECK(t->dev == DEV_CUDA && t->dtype == DT_F32 && t->numel == groups,
            "%s: %s must be %lld fp32 elements on the GPU, it is %s %s", fn, arg, (long long)groups, dt_name(t),
            ShapeStr(t).c_str());
}

void check_layout(const char *fn, const Tensor *x, NormLayout l) {
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "%s: x is %s, expected fp32 or bf16", fn, dt_name(x));
  MCM_CHECK(l.O >= 1 && l.R >= 1 && l.K >= 1 && l.L >= 1 && l.CPG >= 1 && l.S >= 1 && l.CPG * l.S == l.L &&
                l.O * l.R * l.K * l.L == x->numel,
            "%s: layout (%lld, %lld, %lld, %lld) CPG %lld S %lld does not describe x %s", fn, (long long)l.O,
            (long long)l.R, (long long)l.K, (long long)l.L, (long long)l.CPG, (long long)l.S, ShapeStr(x).c_str());
  MCM_CHECK(l.R * l.L < INT32_MAX && l.O * l.R * l.S < INT32_MAX,
            "%s: x %s: a statistics group or a channel holds 2^31 elements or more (32-bit in-group indices)", fn,
            ShapeStr(x).c_str());
  MCM_CHECK(l.O * l.K < INT32_MAX, "%s: x %s has 2^31 or more statistics groups (one block each)", fn,
            ShapeStr(x).c_str());
}

template <typename T>
void forward(Ctx *ctx, Tensor *y, Tensor *mean, Tensor *rstd, const Tensor *x, const Tensor *w, const Tensor *b,
             NormLayout l, float eps) {
  cudaStream_t st = CTX_STREAM(ctx);
  int64_t groups = l.O * l.K, n = l.R * l.L;
  Split sp = split_of(n);
  T *py = (T *)y->data;
  const T *px = (const T *)x->data, *pw = w ? (const T *)w->data : NULL, *pb = b ? (const T *)b->data : NULL;
  float2 *partial = NULL; /* (groups, splits) */
  if (sp.splits > 1) partial = (float2 *)ctx_alloc_act(ctx, (size_t)groups * sp.splits * sizeof(float2));
  dim3 grid((unsigned)groups, (unsigned)sp.splits);
  norm_stats_kernel<T><<<grid, kThreads, 0, st>>>(py, (float *)mean->data, (float *)rstd->data, partial, px, pw, pb,
                                                  l, sp.chunk, eps);
  CUDA_LAUNCH_CHECK();
  if (sp.splits == 1) return;
  norm_merge_kernel<<<cuda_blocks(groups, kThreads), kThreads, 0, st>>>(
      (float *)mean->data, (float *)rstd->data, partial, groups, sp.splits, (uint32_t)n, sp.chunk, eps);
  CUDA_LAUNCH_CHECK();
  norm_apply_kernel<T><<<grid, kThreads, 0, st>>>(py, px, pw, pb, (const float *)mean->data,
                                                  (const float *)rstd->data, l, sp.chunk);
  CUDA_LAUNCH_CHECK();
}

template <typename T>
void backward_dx(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, const Tensor *w, const float *mean,
                 const float *rstd, NormLayout l) {
  cudaStream_t st = CTX_STREAM(ctx);
  int64_t groups = l.O * l.K, n = l.R * l.L;
  Split sp = split_of(n);
  T *pdx = (T *)dx->data;
  const T *pdy = (const T *)dy->data, *px = (const T *)x->data, *pw = w ? (const T *)w->data : NULL;
  float2 *partial = NULL, *dmean = NULL; /* (groups, splits), (groups) */
  if (sp.splits > 1) {
    partial = (float2 *)ctx_alloc_act(ctx, (size_t)groups * sp.splits * sizeof(float2));
    dmean = (float2 *)ctx_alloc_act(ctx, (size_t)groups * sizeof(float2));
  }
  dim3 grid((unsigned)groups, (unsigned)sp.splits);
  norm_dsums_kernel<T><<<grid, kThreads, 0, st>>>(pdx, partial, pdy, px, pw, mean, rstd, l, sp.chunk);
  CUDA_LAUNCH_CHECK();
  if (sp.splits == 1) return;
  norm_dsum_merge_kernel<<<cuda_blocks(groups, kThreads), kThreads, 0, st>>>(dmean, partial, groups, sp.splits,
                                                                              (uint32_t)n);
  CUDA_LAUNCH_CHECK();
  norm_dx_kernel<T><<<grid, kThreads, 0, st>>>(pdx, pdy, px, pw, mean, rstd, dmean, l, sp.chunk);
  CUDA_LAUNCH_CHECK();
}

template <typename T>
void backward_affine(Ctx *ctx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x, const float *mean,
                     const float *rstd, NormLayout l) {
  cudaStream_t st = CTX_STREAM(ctx);
  int64_t C = l.K * l.CPG, M = l.O * l.R;
  const T *pdy = (const T *)dy->data, *px = (const T *)x->data;
  int splits;
  float *pw, *pb; /* (splits, C) each */
  if (l.S >= 32) {
    int64_t rows = kSplitElems / l.S < 1 ? 1 : kSplitElems / l.S; /* about kSplitElems elements a block */
    if ((M + rows - 1) / rows > kMaxSplits) rows = (M + kMaxSplits - 1) / kMaxSplits;
    splits = (int)((M + rows - 1) / rows); /* every block gets at least one row */
    pw = (float *)ctx_alloc_act(ctx, 2 * (size_t)splits * C * sizeof(float));
    pb = pw + (size_t)splits * C;
    MCM_CHECK(C <= INT32_MAX, "norm backward: %lld channels", (long long)C);
    affine_grad_runs_kernel<T><<<dim3((unsigned)C, (unsigned)splits), kThreads, 0, st>>>(pw, pb, pdy, px, mean, rstd,
                                                                                        l, (uint32_t)rows);
  } else {
    splits = (int)((M + kColRows - 1) / kColRows);
    MCM_CHECK((C + 31) / 32 <= 65535, "norm backward: %lld channels exceed the grid limit", (long long)C);
    pw = (float *)ctx_alloc_act(ctx, 2 * (size_t)splits * C * sizeof(float));
    pb = pw + (size_t)splits * C;
    affine_grad_cols_kernel<T><<<dim3((unsigned)splits, (unsigned)((C + 31) / 32)), dim3(32, 8), 0, st>>>(
        pw, pb, pdy, px, mean, rstd, l);
  }
  CUDA_LAUNCH_CHECK();
  affine_grad_finish_kernel<T><<<cuda_blocks(C, kThreads), kThreads, 0, st>>>(
      dw ? (T *)dw->data : NULL, db ? (T *)db->data : NULL, pw, pb, C, splits);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void norm_forward_cuda(Ctx *ctx, Tensor *y, Tensor *mean, Tensor *rstd, const Tensor *x, const Tensor *w,
                       const Tensor *b, NormLayout l, float eps) {
  const char *fn = "norm_forward_cuda";
  MCM_CHECK(x->dev == DEV_CUDA, "%s: x is not on the GPU", fn);
  check_layout(fn, x, l);
  check_arg(fn, "y", y, x, x->numel);
  check_arg(fn, "w", w, x, l.K * l.CPG);
  check_arg(fn, "b", b, x, l.K * l.CPG);
  check_stats(fn, "mean", mean, l.O * l.K);
  check_stats(fn, "rstd", rstd, l.O * l.K);
  if (x->dtype == DT_F32)
    forward<float>(ctx, y, mean, rstd, x, w, b, l, eps);
  else
    forward<__nv_bfloat16>(ctx, y, mean, rstd, x, w, b, l, eps);
}

void norm_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                        const Tensor *w, const Tensor *mean, const Tensor *rstd, NormLayout l) {
  const char *fn = "norm_backward_cuda";
  MCM_CHECK(x->dev == DEV_CUDA, "%s: x is not on the GPU", fn);
  check_layout(fn, x, l);
  check_arg(fn, "dy", dy, x, x->numel);
  check_arg(fn, "dx", dx, x, x->numel);
  check_arg(fn, "w", w, x, l.K * l.CPG);
  check_arg(fn, "dw", dw, x, l.K * l.CPG);
  check_arg(fn, "db", db, x, l.K * l.CPG);
  check_stats(fn, "mean", mean, l.O * l.K);
  check_stats(fn, "rstd", rstd, l.O * l.K);
  const float *pm = (const float *)mean->data, *pr = (const float *)rstd->data;
  if (x->dtype == DT_F32) {
    if (dx) backward_dx<float>(ctx, dx, dy, x, w, pm, pr, l);
    if (dw || db) backward_affine<float>(ctx, dw, db, dy, x, pm, pr, l);
  } else {
    if (dx) backward_dx<__nv_bfloat16>(ctx, dx, dy, x, w, pm, pr, l);
    if (dw || db) backward_affine<__nv_bfloat16>(ctx, dw, db, dy, x, pm, pr, l);
  }
}
