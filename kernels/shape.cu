/* Shape ops on the GPU (see shape.h): row copies for concat and slice, permutes.
 *
 * Plain copies never look at the values, so they move raw units: the widest of 16, 8, 4 or
 * 2 bytes that divides every row width, stride and offset (in bytes) and the two base
 * addresses, so an fp32 or bf16 concat along channels of an NCHW map moves 16 bytes per
 * thread. Accumulating copies (the backward passes) add in fp32 and store in the tensor's
 * dtype, one element per thread.
 *
 * Permute: permute_collapse (shape.c) drops size-1 dims and merges input dims that stay
 * adjacent. A result of rank ≤ 1 is a plain copy; (1,0) or (0,2,1) is a batched 2-D
 * transpose (the NCHW <-> token-layout cases), done through a 32×33 shared-memory tile so
 * that both the reads and the writes are coalesced; any other permutation takes a gather
 * kernel whose index math uses the output shape and the source strides, passed by value.
 * Every element is written by exactly one thread: deterministic, no atomics. */
#include "cuda_common.h"
#include "shape.h"

namespace {

const int kThreads = 256;
const int kTile = 32;     /* transpose tile: kTile × kTile elements */
const int kTileRows = 8;  /* threads per tile column: each thread moves kTile / kTileRows elements */

/* dst[r·dst_stride + j] = src[r·src_stride + j] in units U (strides and width in units). */
template <typename U>
__global__ void copy_rows_kernel(U *dst, int64_t dst_stride, const U *src, int64_t src_stride, int64_t rows,
                                 int64_t width) {
  int64_t n = rows * width;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / width, j = i - r * width;
    dst[r * dst_stride + j] = src[r * src_stride + j];
  }
}

/* dst[r·dst_stride + j] += src[r·src_stride + j] (elements of T, fp32 math). */
template <typename T>
__global__ void add_rows_kernel(T *dst, int64_t dst_stride, const T *src, int64_t src_stride, int64_t rows,
                                int64_t width) {
  int64_t n = rows * width;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / width, j = i - r * width;
    T *d = dst + r * dst_stride + j;
    *d = from_f<T>(to_f(*d) + to_f(src[r * src_stride + j]));
  }
}

template <typename T, bool ACC>
__device__ __forceinline__ void put(T *d, T v) {
  if (ACC)
    *d = from_f<T>(to_f(*d) + to_f(v));
  else
    *d = v;
}

/* dst (batch, C, A) (+)= src (batch, A, C) transposed. Grid (⌈C/32⌉, ⌈A/32⌉, batch),
 * block (32, 8): a block reads a 32×32 tile of src along C and writes it along A. */
template <typename T, bool ACC>
__global__ void transpose_kernel(T *dst, const T *src, int64_t A, int64_t C) {
  __shared__ T tile[kTile][kTile + 1]; /* +1: column reads hit 32 different banks */
  int64_t base = (int64_t)blockIdx.z * A * C;
  int64_t a0 = (int64_t)blockIdx.y * kTile, c0 = (int64_t)blockIdx.x * kTile;
  int tx = threadIdx.x;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    int64_t a = a0 + k, c = c0 + tx;
    if (a < A && c < C) tile[k][tx] = src[base + a * C + c];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    int64_t c = c0 + k, a = a0 + tx;
    if (a < A && c < C) put<T, ACC>(dst + base + c * A + a, tile[tx][k]);
  }
}

/* The output shape and, per output dim, the stride of the source dim it reads. */
struct PermIndex {
  int ndim;
  int64_t shape[MCM_MAX_DIMS];
  int64_t stride[MCM_MAX_DIMS];
};

/* dst (n, in PermIndex.shape) (+)= src gathered through the strides. */
template <typename T, bool ACC>
__global__ void gather_kernel(T *dst, const T *src, PermIndex p, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rest = i, off = 0;
    for (int k = p.ndim - 1; k >= 0; k--) {
      off += (rest % p.shape[k]) * p.stride[k];
      rest /= p.shape[k];
    }
    put<T, ACC>(dst + i, src[off]);
  }
}

void check_float_tensor(const char *op, const char *arg, const Tensor *t) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, arg,
            dtype_name(t->dtype));
}

/* The widest unit (bytes) that divides every value and both addresses. */
int copy_unit(int64_t es, uintptr_t dst, uintptr_t src, int64_t dst_stride, int64_t src_stride, int64_t width) {
  for (int u = 16; u > (int)es; u /= 2)
    if ((dst | src) % u == 0 && (dst_stride * es) % u == 0 && (src_stride * es) % u == 0 && (width * es) % u == 0)
      return u;
  return (int)es;
}

template <typename U>
void launch_copy(Ctx *ctx, void *dst, int64_t dst_stride, const void *src, int64_t src_stride, int64_t rows,
                 int64_t width) {
  copy_rows_kernel<<<cuda_blocks(rows * width, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
      (U *)dst, dst_stride, (const U *)src, src_stride, rows, width);
}

/* Byte-exact copy of rows, strides and width in elements of size es. */
void copy_raw(Ctx *ctx, void *dst, int64_t dst_stride, const void *src, int64_t src_stride, int64_t rows,
              int64_t width, int64_t es) {
  int u = copy_unit(es, (uintptr_t)dst, (uintptr_t)src, dst_stride, src_stride, width);
  int64_t k = u / es; /* elements per unit */
  dst_stride /= k, src_stride /= k, width /= k;
  switch (u) {
    case 16: launch_copy<uint4>(ctx, dst, dst_stride, src, src_stride, rows, width); break;
    case 8: launch_copy<uint2>(ctx, dst, dst_stride, src, src_stride, rows, width); break;
    case 4: launch_copy<uint32_t>(ctx, dst, dst_stride, src, src_stride, rows, width); break;
    default: launch_copy<uint16_t>(ctx, dst, dst_stride, src, src_stride, rows, width); break;
  }
  CUDA_LAUNCH_CHECK();
}

template <typename T>
void add_rows(Ctx *ctx, void *dst, int64_t dst_stride, const void *src, int64_t src_stride, int64_t rows,
              int64_t width) {
  add_rows_kernel<<<cuda_blocks(rows * width, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
      (T *)dst, dst_stride, (const T *)src, src_stride, rows, width);
  CUDA_LAUNCH_CHECK();
}

/* dst (+)= src.permute(perm), src of shape (ndim dims); dst has the permuted shape. */
template <typename T, bool ACC>
void permute_typed(Ctx *ctx, T *dst, const T *src, int ndim, const int64_t *src_shape, const int *perm) {
  int64_t n = shape_numel(ndim, src_shape);
  int64_t shape[MCM_MAX_DIMS];
  int cperm[MCM_MAX_DIMS];
  int m = permute_collapse(ndim, src_shape, perm, shape, cperm);
  cudaStream_t stream = CTX_STREAM(ctx);
  if (m <= 1) { /* the identity on the data */
    if (ACC)
      add_rows<T>(ctx, dst, n, src, n, 1, n);
    else
      copy_raw(ctx, dst, n, src, n, 1, n, sizeof(T));
    return;
  }
  /* A batched transpose: (batch, A, C) -> (batch, C, A). */
  bool t2 = m == 2 && cperm[0] == 1, t3 = m == 3 && cperm[0] == 0 && cperm[1] == 2;
  if (t2 || t3) {
    int64_t batch = t3 ? shape[0] : 1, A = shape[m - 2], C = shape[m - 1];
    int64_t gy = (A + kTile - 1) / kTile, gx = (C + kTile - 1) / kTile;
    if (batch <= 65535 && gy <= 65535 && gx <= INT32_MAX) {
      dim3 grid((unsigned)gx, (unsigned)gy, (unsigned)batch), block(kTile, kTileRows);
      transpose_kernel<T, ACC><<<grid, block, 0, stream>>>(dst, src, A, C);
      CUDA_LAUNCH_CHECK();
      return;
    }
  }
  PermIndex p = {};
  p.ndim = m;
  int64_t stride[MCM_MAX_DIMS], s = 1;
  for (int d = m - 1; d >= 0; d--) stride[d] = s, s *= shape[d];
  for (int k = 0; k < m; k++) p.shape[k] = shape[cperm[k]], p.stride[k] = stride[cperm[k]];
  gather_kernel<T, ACC><<<cuda_blocks(n, kThreads), kThreads, 0, stream>>>(dst, src, p, n);
  CUDA_LAUNCH_CHECK();
}

void permute_run(Ctx *ctx, Tensor *dst, const Tensor *src, const int *perm, bool acc, const char *op) {
  check_float_tensor(op, "source", src);
  check_float_tensor(op, "destination", dst);
  MCM_CHECK(dst->dtype == src->dtype, "%s: destination is %s, source %s", op, dtype_name(dst->dtype),
            dtype_name(src->dtype));
  MCM_CHECK(src->ndim >= 1 && src->ndim <= MCM_MAX_DIMS && dst->ndim == src->ndim, "%s: ranks %d and %d", op,
            src->ndim, dst->ndim);
  bool seen[MCM_MAX_DIMS] = {false};
  for (int k = 0; k < src->ndim; k++) {
    MCM_CHECK(perm[k] >= 0 && perm[k] < src->ndim && !seen[perm[k]],
              "%s: perm[%d] = %d is not a permutation of %d dims", op, k, perm[k], src->ndim);
    seen[perm[k]] = true;
    MCM_CHECK(dst->shape[k] == src->shape[perm[k]], "%s: destination %s is not source %s permuted", op,
              ShapeStr(dst).c_str(), ShapeStr(src).c_str());
  }
  if (src->numel == 0) return;
  if (src->dtype == DT_F32) {
    if (acc)
      permute_typed<float, true>(ctx, (float *)dst->data, (const float *)src->data, src->ndim, src->shape, perm);
    else
      permute_typed<float, false>(ctx, (float *)dst->data, (const float *)src->data, src->ndim, src->shape, perm);
  } else {
    typedef __nv_bfloat16 B;
    if (acc)
      permute_typed<B, true>(ctx, (B *)dst->data, (const B *)src->data, src->ndim, src->shape, perm);
    else
      permute_typed<B, false>(ctx, (B *)dst->data, (const B *)src->data, src->ndim, src->shape, perm);
  }
}

/* The last element row r of a window touches, plus one: must fit in the tensor. */
void check_window(const char *what, const Tensor *t, int64_t offset, int64_t stride, int64_t rows, int64_t width) {
  MCM_CHECK(offset >= 0 && stride >= 0 && width >= 0 && offset + (rows - 1) * stride + width <= t->numel,
            "copy_rows_cuda: the %s window (offset %lld, stride %lld, %lld rows of %lld) overruns its %s tensor", what,
            (long long)offset, (long long)stride, (long long)rows, (long long)width, ShapeStr(t).c_str());
}

}  // namespace

void copy_rows_cuda(Ctx *ctx, Tensor *dst, int64_t dst_offset, int64_t dst_stride, const Tensor *src,
                    int64_t src_offset, int64_t src_stride, int64_t rows, int64_t width, bool accumulate) {
  check_float_tensor("copy_rows_cuda", "dst", dst);
  check_float_tensor("copy_rows_cuda", "src", src);
  MCM_CHECK(dst->dtype == src->dtype, "copy_rows_cuda: dst is %s, src %s", dtype_name(dst->dtype),
            dtype_name(src->dtype));
  if (rows <= 0 || width <= 0) return;
  check_window("destination", dst, dst_offset, dst_stride, rows, width);
  check_window("source", src, src_offset, src_stride, rows, width);
  int64_t es = (int64_t)dtype_size(dst->dtype);
  char *d = (char *)dst->data + dst_offset * es;
  const char *s = (const char *)src->data + src_offset * es;
  if (!accumulate)
    copy_raw(ctx, d, dst_stride, s, src_stride, rows, width, es);
  else if (dst->dtype == DT_F32)
    add_rows<float>(ctx, d, dst_stride, s, src_stride, rows, width);
  else
    add_rows<__nv_bfloat16>(ctx, d, dst_stride, s, src_stride, rows, width);
}

void permute_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const int *perm) {
  permute_run(ctx, y, x, perm, false, "permute_forward_cuda");
}

/* dx += dy.permute(perm⁻¹) */
void permute_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const int *perm) {
  MCM_CHECK(dy->ndim == dx->ndim, "permute_backward_cuda: dy %s and dx %s differ in rank", ShapeStr(dy).c_str(),
            ShapeStr(dx).c_str());
  int inv[MCM_MAX_DIMS] = {-1, -1, -1, -1, -1};
  for (int k = 0; k < dx->ndim; k++) {
    MCM_CHECK(perm[k] >= 0 && perm[k] < dx->ndim, "permute_backward_cuda: perm[%d] = %d out of range", k, perm[k]);
    inv[perm[k]] = k;
  }
  permute_run(ctx, dx, dy, inv, true, "permute_backward_cuda");
}
