/* Reductions to a scalar on the GPU (see reduce.h).
 *
 * Deterministic by construction: no float atomics. Pass 1 runs a grid whose size depends
 * only on n (never on the device or timing); each block sums a fixed grid-stride slice of
 * the input and a fixed shuffle tree, writing one partial. Pass 2 is one block that sums
 * the partials the same way. Repeated runs give identical bits. Sums are fp32 (the CPU
 * reference sums in double; the test tolerances say how far apart they may be).
 * The backward kernels are pointwise and accumulate.
 *
 * Along one dim, x viewed as (outer, R, inner), each output element is summed by a fixed
 * set of threads in a fixed order (again deterministic, no atomics):
 *   inner == 1, R ≤ 1024   one warp per row: lanes stride over R, then a shuffle tree;
 *   inner == 1, R > 1024   one block per row, block_sum;
 *   inner > 1              a 32 × 8 block per (o, 32 consecutive i): the 32 columns make
 *                          the loads coalesced, the 8 rows split R; the 8 partials are
 *                          added in order through shared memory. */
#include "cuda_common.h"
#include "reduce.h"
#include "shape.h"

namespace {

const int kThreads = 256;    /* per block, both passes; a multiple of 32 */
const int kMaxBlocks = 1024; /* pass-1 grid cap: partials stay one block's work */

/* partial (gridDim.x) = per-block Σ x, or Σ (a − b)² when b is not NULL. */
template <typename T>
__global__ void partial_sum_kernel(float *partial, const T *a, const T *b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    if (b) {
      float d = to_f(a[i]) - to_f(b[i]);
      s += d * d;
    } else {
      s += to_f(a[i]);
    }
  }
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* y (1) = scale · Σ partial (n_partial); one block. */
__global__ void final_sum_kernel(float *y, const float *partial, int n_partial, float scale) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) s += partial[i];
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) y[0] = scale * s;
}

/* dx (n) += scale · dy[0] */
template <typename T>
__global__ void sum_backward_kernel(T *dx, const float *dy, float scale, int64_t n) {
  float g = scale * dy[0];
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dx[i] = from_f<T>(to_f(dx[i]) + g);
}

/* da (n) += k (a − b) dy[0], db (n) −= the same; either may be NULL. */
template <typename T>
__global__ void sq_diff_backward_kernel(T *da, T *db, const float *dy, const T *a, const T *b, float k, int64_t n) {
  float g = k * dy[0];
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float d = g * (to_f(a[i]) - to_f(b[i]));
    if (da) da[i] = from_f<T>(to_f(da[i]) + d);
    if (db) db[i] = from_f<T>(to_f(db[i]) - d);
  }
}

void check_scalar(const char *op, const Tensor *y) {
  MCM_CHECK(y->dev == DEV_CUDA, "%s: the scalar is not on the GPU", op);
  MCM_CHECK(y->dtype == DT_F32 && y->numel == 1, "%s: the scalar must be one fp32 element, it is %s %s", op,
            dtype_name(y->dtype), ShapeStr(y).c_str());
}

/* Same device, dtype and element count as the reference tensor; NULL passes. */
void check_like(const char *op, const char *arg, const Tensor *t, const Tensor *ref) {
  if (!t) return;
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, arg,
            dtype_name(t->dtype));
  MCM_CHECK(t->dtype == ref->dtype, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype), dtype_name(ref->dtype));
  MCM_CHECK(t->numel == ref->numel, "%s: %s has %lld elements, expected %lld", op, arg, (long long)t->numel,
            (long long)ref->numel);
}

/* Both passes; b NULL sums a, otherwise sums (a − b)². */
void two_pass_sum(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, float scale) {
  int64_t n = a->numel;
  int64_t want = (n + kThreads - 1) / kThreads;
  int blocks = (int)(want < 1 ? 1 : want > kMaxBlocks ? kMaxBlocks : want);
  float *partial = (float *)ctx_alloc_act(ctx, (size_t)blocks * sizeof(float)); /* (blocks) */
  if (a->dtype == DT_F32)
    partial_sum_kernel<<<blocks, kThreads, 0, CTX_STREAM(ctx)>>>(partial, (const float *)a->data,
                                                                 b ? (const float *)b->data : NULL, n);
  else
    partial_sum_kernel<<<blocks, kThreads, 0, CTX_STREAM(ctx)>>>(partial, (const __nv_bfloat16 *)a->data,
                                                                 b ? (const __nv_bfloat16 *)b->data : NULL, n);
  CUDA_LAUNCH_CHECK();
  final_sum_kernel<<<1, kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data, partial, blocks, scale);
  CUDA_LAUNCH_CHECK();
}

/* ---- along one dim */

const int kWarpRowsMaxR = 1024; /* longer rows get a whole block */
const int kColRows = 8;         /* threadIdx.y extent of the strided kernel */

/* y (rows) = scale · Σ_r x (rows, R): one warp per row. */
template <typename T>
__global__ void sum_rows_warp_kernel(T *y, const T *x, int64_t rows, int64_t R, float scale) {
  int lane = threadIdx.x % 32;
  int64_t first = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32, step = (int64_t)gridDim.x * blockDim.x / 32;
  for (int64_t row = first; row < rows; row += step) { /* uniform across the warp */
    const T *xr = x + row * R;
    float s = 0.0f;
    for (int64_t r = lane; r < R; r += 32) s += to_f(xr[r]);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) y[row] = from_f<T>(scale * s);
  }
}

/* y (rows) = scale · Σ_r x (rows, R): one block of kThreads per row. */
template <typename T>
__global__ void sum_rows_block_kernel(T *y, const T *x, int64_t rows, int64_t R, float scale) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T *xr = x + row * R;
    float s = 0.0f;
    for (int64_t r = threadIdx.x; r < R; r += kThreads) s += to_f(xr[r]);
    s = block_sum<kThreads>(s);
    if (threadIdx.x == 0) y[row] = from_f<T>(scale * s);
    __syncthreads(); /* block_sum's shared partials are reused by the next row */
  }
}

/* y (outer, inner) = scale · Σ_r x (outer, R, inner); block (32, kColRows), one block per
 * (o, tile of 32 columns), tiles = ⌈inner / 32⌉. */
template <typename T>
__global__ void sum_cols_kernel(T *y, const T *x, int64_t outer, int64_t R, int64_t inner, int64_t tiles,
                                float scale) {
  __shared__ float part[kColRows][33];
  int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t b = blockIdx.x; b < outer * tiles; b += gridDim.x) {
    int64_t o = b / tiles, i = (b - o * tiles) * 32 + tx;
    float s = 0.0f;
    if (i < inner)
      for (int64_t r = ty; r < R; r += kColRows) s += to_f(x[(o * R + r) * inner + i]);
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && i < inner) {
      float t = part[0][tx];
      for (int k = 1; k < kColRows; k++) t += part[k][tx];
      y[o * inner + i] = from_f<T>(scale * t);
    }
    __syncthreads();
  }
}

/* dx (outer, R, inner) += scale · dy (outer, inner); the product is rounded before the add
 * (no fused multiply-add), as on the CPU. */
template <typename T>
__global__ void sum_dim_backward_kernel(T *dx, const T *dy, int64_t R, int64_t inner, float scale, int64_t n) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = e / (R * inner), i = e % inner;
    dx[e] = from_f<T>(to_f(dx[e]) + __fmul_rn(scale, to_f(dy[o * inner + i])));
  }
}

template <typename T>
void sum_dim_typed(Ctx *ctx, T *y, const T *x, int64_t outer, int64_t R, int64_t inner, float scale) {
  cudaStream_t stream = CTX_STREAM(ctx);
  if (inner == 1 && R <= kWarpRowsMaxR) {
    sum_rows_warp_kernel<<<cuda_blocks(outer * 32, kThreads), kThreads, 0, stream>>>(y, x, outer, R, scale);
  } else if (inner == 1) {
    sum_rows_block_kernel<<<cuda_blocks(outer * kThreads, kThreads), kThreads, 0, stream>>>(y, x, outer, R, scale);
  } else {
    int64_t tiles = (inner + 31) / 32;
    sum_cols_kernel<<<cuda_blocks(outer * tiles * 32, 32), dim3(32, kColRows), 0, stream>>>(y, x, outer, R, inner,
                                                                                          tiles, scale);
  }
  CUDA_LAUNCH_CHECK();
}

/* x on the GPU in fp32 or bf16, small (the reduced tensor) the same dtype with numel / R
 * elements; dim valid. Returns the (outer, R, inner) view through the pointers. */
void check_dim_pair(const char *op, const Tensor *x, const Tensor *small, int dim, int64_t *outer, int64_t *R,
                    int64_t *inner) {
  check_like(op, "x", x, x);
  MCM_CHECK(dim >= 0 && dim < x->ndim, "%s: dim %d out of range for x %s", op, dim, ShapeStr(x).c_str());
  shape_split(x, dim, outer, R, inner);
  MCM_CHECK(small->dev == DEV_CUDA, "%s: the reduced tensor is not on the GPU", op);
  MCM_CHECK(small->dtype == x->dtype, "%s: the reduced tensor is %s, x is %s", op, dtype_name(small->dtype),
            dtype_name(x->dtype));
  MCM_CHECK(small->numel == *outer * *inner, "%s: the reduced tensor %s must have %lld elements (x %s, dim %d)", op,
            ShapeStr(small).c_str(), (long long)(*outer * *inner), ShapeStr(x).c_str(), dim);
}

}  // namespace

void sum_dim_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, int dim, float scale) {
  int64_t outer, R, inner;
  check_dim_pair("sum_dim_forward_cuda", x, y, dim, &outer, &R, &inner);
  if (y->numel == 0) return;
  if (x->dtype == DT_F32)
    sum_dim_typed(ctx, (float *)y->data, (const float *)x->data, outer, R, inner, scale);
  else
    sum_dim_typed(ctx, (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, outer, R, inner, scale);
}

void sum_dim_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, int dim, float scale) {
  int64_t outer, R, inner;
  check_dim_pair("sum_dim_backward_cuda", dx, dy, dim, &outer, &R, &inner);
  int64_t n = dx->numel;
  if (n == 0) return;
  if (dx->dtype == DT_F32)
    sum_dim_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, R, inner, scale, n);
  else
    sum_dim_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, R, inner, scale, n);
  CUDA_LAUNCH_CHECK();
}

/* Tensors are always contiguous (tensor.h), so a flat index covers them. */
void sum_cuda(Ctx *ctx, Tensor *y, const Tensor *x, float scale) {
  check_scalar("sum_cuda: y", y);
  check_like("sum_cuda", "x", x, x);
  two_pass_sum(ctx, y, x, NULL, scale);
}

void sq_diff_sum_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, float scale) {
  check_scalar("sq_diff_sum_cuda: y", y);
  check_like("sq_diff_sum_cuda", "a", a, a);
  check_like("sq_diff_sum_cuda", "b", b, a);
  two_pass_sum(ctx, y, a, b, scale);
}

void sum_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, float scale) {
  check_scalar("sum_backward_cuda: dy", dy);
  check_like("sum_backward_cuda", "dx", dx, dx);
  int64_t n = dx->numel;
  if (n == 0) return;
  if (dx->dtype == DT_F32)
    sum_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, scale, n);
  else
    sum_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const float *)dy->data, scale, n);
  CUDA_LAUNCH_CHECK();
}

void sq_diff_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                           float k) {
  check_scalar("sq_diff_backward_cuda: dy", dy);
  check_like("sq_diff_backward_cuda", "a", a, a);
  check_like("sq_diff_backward_cuda", "b", b, a);
  check_like("sq_diff_backward_cuda", "da", da, a);
  check_like("sq_diff_backward_cuda", "db", db, a);
  int64_t n = a->numel;
  if (n == 0 || (!da && !db)) return;
  if (a->dtype == DT_F32)
    sq_diff_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        da ? (float *)da->data : NULL, db ? (float *)db->data : NULL, (const float *)dy->data,
        (const float *)a->data, (const float *)b->data, k, n);
  else
    sq_diff_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        da ? (__nv_bfloat16 *)da->data : NULL, db ? (__nv_bfloat16 *)db->data : NULL, (const float *)dy->data,
        (const __nv_bfloat16 *)a->data, (const __nv_bfloat16 *)b->data, k, n);
  CUDA_LAUNCH_CHECK();
}
