/* Embeddings on the GPU (see embedding.h for the id check and the deterministic backward). */
#include <limits.h>

#include "cuda_api.h"
#include "cuda_common.h"
#include "embedding.h"

namespace {

const int kThreads = 256;
const int kBackwardThreads = 128;
const unsigned long long kNoBadId = ULLONG_MAX;

/* y (N, D) = table[ids] (V, D). A bad id records its position in *bad (the smallest one
 * wins) and gives a NaN row, so the output never holds another row's values. */
template <typename T>
__global__ void embedding_forward_kernel(T *y, const T *table, const int32_t *ids, int64_t N, int64_t V, int64_t D,
                                         unsigned long long *bad) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * D; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t n = i / D, d = i % D;
    int32_t id = ids[n];
    if (id < 0 || id >= V) {
      if (d == 0) atomicMin(bad, (unsigned long long)n);
      y[i] = from_f<T>(__int_as_float(0x7fc00000));
    } else {
      y[i] = table[(int64_t)id * D + d];
    }
  }
}

/* One block per position n (gridDim.x = N). Only the first occurrence of ids[n] works: it
 * sums dy (N, D) over every m ≥ n with the same id, in increasing m, and adds the sum to
 * dtable (V, D) row ids[n]. Each row is written by exactly one block: no atomics. */
template <typename T>
__global__ void embedding_backward_kernel(T *dtable, const T *dy, const int32_t *ids, int64_t N, int64_t D) {
  int64_t n = blockIdx.x;
  int32_t id = ids[n];
  int seen = 0;
  for (int64_t m = threadIdx.x; m < n && !seen; m += blockDim.x) seen = ids[m] == id;
  if (__syncthreads_or(seen)) return;
  T *row = dtable + (int64_t)id * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float s = 0.0f;
    for (int64_t m = n; m < N; m++)
      if (ids[m] == id) s += to_f(dy[m * D + d]);
    row[d] = from_f<T>(to_f(row[d]) + s);
  }
}

/* y (B, dim): freq_i = exp(neg_log_p · i / denom) in the CPU reference's exact fp32 steps
 * (explicit _rn intrinsics: no contraction), exp in double, then fp32 args. */
template <typename T>
__global__ void timestep_embedding_kernel(T *y, const float *t, int64_t B, int dim, float neg_log_p, float denom,
                                          bool flip) {
  int half = dim / 2;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < B * half;
       k += (int64_t)gridDim.x * blockDim.x) {
    int64_t b = k / half;
    int i = (int)(k % half);
    float e = __fdiv_rn(__fmul_rn(neg_log_p, (float)i), denom);
    float arg = __fmul_rn(t[b], (float)exp((double)e));
    float s, c;
    sincosf(arg, &s, &c);
    T *row = y + b * dim;
    row[(flip ? half : 0) + i] = from_f<T>(s);
    row[(flip ? 0 : half) + i] = from_f<T>(c);
    if (i == 0 && dim % 2) row[dim - 1] = from_f<T>(0.0f);
  }
}

void check_float(const char *op, const char *what, const Tensor *t, DType dt, int64_t numel) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, what);
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, what,
            dtype_name(t->dtype));
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, what, dtype_name(t->dtype), dtype_name(dt));
  MCM_CHECK(t->numel == numel, "%s: %s %s has %lld elements, expected %lld", op, what, ShapeStr(t).c_str(),
            (long long)t->numel, (long long)numel);
}

void check_ids(const char *op, const Tensor *ids) {
  MCM_CHECK(ids->dev == DEV_CUDA && ids->dtype == DT_I32, "%s: ids must be int32 on the GPU (%s)", op,
            dtype_name(ids->dtype));
}

}  // namespace

void embedding_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *table, const Tensor *ids) {
  int64_t V = table->shape[0], D = table->shape[1], N = ids->numel;
  check_ids("embedding_forward_cuda", ids);
  check_float("embedding_forward_cuda", "table", table, table->dtype, V * D);
  check_float("embedding_forward_cuda", "y", y, table->dtype, N * D);
  if (N * D == 0) return;
  unsigned long long *bad = (unsigned long long *)ctx_alloc_act(ctx, sizeof *bad), bad_host = kNoBadId;
  cuda_memset(ctx, bad, 0xff, sizeof *bad); /* kNoBadId */
  if (table->dtype == DT_F32)
    embedding_forward_kernel<<<cuda_blocks(N * D, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)y->data, (const float *)table->data, (const int32_t *)ids->data, N, V, D, bad);
  else
    embedding_forward_kernel<<<cuda_blocks(N * D, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)table->data, (const int32_t *)ids->data, N, V, D, bad);
  CUDA_LAUNCH_CHECK();
  cuda_d2h(ctx, &bad_host, bad, sizeof bad_host);
  cuda_sync(ctx);
  if (bad_host != kNoBadId) {
    int32_t id = 0;
    cuda_d2h(ctx, &id, (const int32_t *)ids->data + bad_host, sizeof id);
    cuda_sync(ctx);
    MCM_FATAL("embedding: id %d at position %llu is outside the table's %lld rows [0, %lld)", id, bad_host,
              (long long)V, (long long)V);
  }
}

void embedding_backward_cuda(Ctx *ctx, Tensor *dtable, const Tensor *dy, const Tensor *ids) {
  int64_t V = dtable->shape[0], D = dtable->shape[1], N = ids->numel;
  check_ids("embedding_backward_cuda", ids);
  check_float("embedding_backward_cuda", "dy", dy, dtable->dtype, N * D);
  check_float("embedding_backward_cuda", "dtable", dtable, dtable->dtype, V * D);
  MCM_CHECK(N <= INT32_MAX, "embedding_backward_cuda: %lld ids exceed one block per id", (long long)N);
  if (N * D == 0) return;
  if (dtable->dtype == DT_F32)
    embedding_backward_kernel<<<(unsigned)N, kBackwardThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dtable->data, (const float *)dy->data, (const int32_t *)ids->data, N, D);
  else
    embedding_backward_kernel<<<(unsigned)N, kBackwardThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dtable->data, (const __nv_bfloat16 *)dy->data, (const int32_t *)ids->data, N, D);
  CUDA_LAUNCH_CHECK();
}

void timestep_embedding_cuda(Ctx *ctx, Tensor *y, const Tensor *t, int dim, float max_period, bool flip_sin_to_cos,
                             float downscale_freq_shift) {
  int64_t B = t->numel;
  MCM_CHECK(t->dev == DEV_CUDA && t->dtype == DT_F32, "timestep_embedding_cuda: t must be fp32 on the GPU (%s)",
            dtype_name(t->dtype));
  check_float("timestep_embedding_cuda", "y", y, y->dtype, B * dim);
  MCM_CHECK(dim >= 2, "timestep_embedding_cuda: dim %d < 2", dim);
  float neg_log_p, denom;
  timestep_freq_consts(dim, max_period, downscale_freq_shift, &neg_log_p, &denom);
  int64_t n = B * (dim / 2);
  if (n == 0) return;
  if (y->dtype == DT_F32)
    timestep_embedding_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)y->data, (const float *)t->data, B, dim, neg_log_p, denom, flip_sin_to_cos);
  else
    timestep_embedding_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const float *)t->data, B, dim, neg_log_p, denom, flip_sin_to_cos);
  CUDA_LAUNCH_CHECK();
}
