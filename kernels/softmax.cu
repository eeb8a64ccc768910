/* softmax on the GPU (see softmax.h): one warp per row, lanes striding over its N values,
 * three passes (max, sum, write) with butterfly shuffles, so every lane holds the row's max
 * and sum and the result does not depend on timing (bit-identical reruns). Storage fp32 or
 * bf16, math fp32; expf (not __expf) keeps fp32 within a few ulp of the CPU reference.
 * Backward accumulates: dx += y ⊙ (dy − Σ dy ⊙ y). */
#include "cuda_common.h"
#include "softmax.h"

namespace {

const int kThreads = 256; /* 8 warps, one row each */

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/* y (rows, N) = softmax(x (rows, N)) over N */
template <typename T>
__global__ void softmax_forward_kernel(T *y, const T *x, int64_t rows, int64_t N) {
  int lane = threadIdx.x % 32;
  int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const T *xr = x + r * N;
    T *yr = y + r * N;
    float m = -INFINITY;
    for (int64_t j = lane; j < N; j += 32) m = fmaxf(m, to_f(xr[j]));
    m = warp_max(m);
    float s = 0.0f;
    for (int64_t j = lane; j < N; j += 32) s += expf(to_f(xr[j]) - m);
    float inv = 1.0f / warp_sum(s);
    for (int64_t j = lane; j < N; j += 32) yr[j] = from_f<T>(expf(to_f(xr[j]) - m) * inv);
  }
}

/* dx (rows, N) += y ⊙ (dy − Σ_N dy ⊙ y) */
template <typename T>
__global__ void softmax_backward_kernel(T *dx, const T *dy, const T *y, int64_t rows, int64_t N) {
  int lane = threadIdx.x % 32;
  int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const T *dyr = dy + r * N, *yr = y + r * N;
    T *dxr = dx + r * N;
    float dot = 0.0f;
    for (int64_t j = lane; j < N; j += 32) dot += to_f(dyr[j]) * to_f(yr[j]);
    dot = warp_sum(dot);
    for (int64_t j = lane; j < N; j += 32) dxr[j] = from_f<T>(to_f(dxr[j]) + to_f(yr[j]) * (to_f(dyr[j]) - dot));
  }
}

void check_softmax_tensor(const char *what, const Tensor *t, const Tensor *ref) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: tensor is not on the GPU", what);
  MCM_CHECK(t->dtype == ref->dtype, "%s: dtype %s differs from %s", what, dtype_name(t->dtype),
            dtype_name(ref->dtype));
  MCM_CHECK(tensor_same_shape(t, ref), "%s: shape %s, expected %s", what, ShapeStr(t).c_str(), ShapeStr(ref).c_str());
}

unsigned int row_blocks(int64_t rows) { return cuda_blocks(rows, kThreads / 32); }

}  // namespace

void softmax_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x) {
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "softmax: x is %s, expected fp32 or bf16",
            dtype_name(x->dtype));
  check_softmax_tensor("softmax_forward_cuda: x", x, x);
  check_softmax_tensor("softmax_forward_cuda: y", y, x);
  int64_t N = x->shape[x->ndim - 1], rows = N ? x->numel / N : 0;
  if (rows == 0) return;
  if (x->dtype == DT_F32)
    softmax_forward_kernel<<<row_blocks(rows), kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data,
                                                                              (const float *)x->data, rows, N);
  else
    softmax_forward_kernel<<<row_blocks(rows), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, rows, N);
  CUDA_LAUNCH_CHECK();
}

void softmax_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *y) {
  MCM_CHECK(y->dtype == DT_F32 || y->dtype == DT_BF16, "softmax backward: y is %s, expected fp32 or bf16",
            dtype_name(y->dtype));
  check_softmax_tensor("softmax_backward_cuda: y", y, y);
  check_softmax_tensor("softmax_backward_cuda: dx", dx, y);
  check_softmax_tensor("softmax_backward_cuda: dy", dy, y);
  int64_t N = y->shape[y->ndim - 1], rows = N ? y->numel / N : 0;
  if (rows == 0) return;
  if (y->dtype == DT_F32)
    softmax_backward_kernel<<<row_blocks(rows), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, (const float *)y->data, rows, N);
  else
    softmax_backward_kernel<<<row_blocks(rows), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, (const __nv_bfloat16 *)y->data, rows, N);
  CUDA_LAUNCH_CHECK();
}
