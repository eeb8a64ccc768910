/* Nearest 2× upsampling on the GPU (see upsample.h). One thread per input element: the
 * forward writes its value to the 2×2 output block as two pairs (float2 / bf16x2, one per
 * output row), the backward reads the same two pairs and adds the four values in the order
 * of the CPU reference, so fp32 results match it bit for bit. Backward accumulates. */
#include "cuda_common.h"
#include "upsample.h"

namespace {

const int kThreads = 256;

/* Two adjacent elements, moved as one 8-byte (fp32) or 4-byte (bf16) word. */
template <typename T>
struct Pair;
template <>
struct Pair<float> {
  typedef float2 V;
  static __device__ __forceinline__ V make(float a, float b) { return make_float2(a, b); }
  static __device__ __forceinline__ float lo(V v) { return v.x; }
  static __device__ __forceinline__ float hi(V v) { return v.y; }
};
template <>
struct Pair<__nv_bfloat16> {
  typedef __nv_bfloat162 V;
  static __device__ __forceinline__ V make(__nv_bfloat16 a, __nv_bfloat16 b) { return __halves2bfloat162(a, b); }
  static __device__ __forceinline__ float lo(V v) { return __low2float(v); }
  static __device__ __forceinline__ float hi(V v) { return __high2float(v); }
};

/* y (N, 2H, 2W) from x (N, H, W); n = N·H·W. */
template <typename T>
__global__ void upsample_forward_kernel(T *y, const T *x, int64_t W, int64_t n) {
  typedef typename Pair<T>::V V;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = e / W, j = e - r * W; /* input row r (over all maps), column j */
    T v = x[e];
    V p = Pair<T>::make(v, v);
    V *y0 = (V *)(y + 2 * r * 2 * W) + j; /* output row 2r, columns 2j and 2j + 1 */
    y0[0] = p;
    y0[W] = p; /* output row 2r + 1: 2W elements = W pairs further */
  }
}

/* dx (N, H, W) += 2×2 block sums of dy (N, 2H, 2W). */
template <typename T>
__global__ void upsample_backward_kernel(T *dx, const T *dy, int64_t W, int64_t n) {
  typedef typename Pair<T>::V V;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = e / W, j = e - r * W;
    const V *d0 = (const V *)(dy + 2 * r * 2 * W) + j;
    V a = d0[0], b = d0[W];
    float s = ((Pair<T>::lo(a) + Pair<T>::hi(a)) + Pair<T>::lo(b)) + Pair<T>::hi(b);
    dx[e] = from_f<T>(to_f(dx[e]) + s);
  }
}

/* x (B, C, H, W) and y (B, C, 2H, 2W) on the GPU, same dtype; y aligned for pair access. */
void check_pair(const char *op, const Tensor *y, const Tensor *x) {
  MCM_CHECK(x->dev == DEV_CUDA && y->dev == DEV_CUDA, "%s: tensors are not on the GPU", op);
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "%s: x is %s, expected fp32 or bf16", op, dtype_name(x->dtype));
  MCM_CHECK(y->dtype == x->dtype, "%s: dtypes %s and %s differ", op, dtype_name(y->dtype), dtype_name(x->dtype));
  MCM_CHECK(x->ndim == 4 && y->ndim == 4 && y->shape[0] == x->shape[0] && y->shape[1] == x->shape[1] &&
                y->shape[2] == 2 * x->shape[2] && y->shape[3] == 2 * x->shape[3],
            "%s: the large tensor %s must be the small one %s with H and W doubled", op, ShapeStr(y).c_str(),
            ShapeStr(x).c_str());
  MCM_CHECK((uintptr_t)y->data % (2 * dtype_size(y->dtype)) == 0,
            "%s: the upsampled tensor's data must be aligned to two elements for pair access", op);
}

}  // namespace

void upsample_nearest2x_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x) {
  check_pair("upsample_nearest2x_forward_cuda", y, x);
  int64_t n = x->numel, W = x->shape[3];
  if (n == 0) return;
  if (x->dtype == DT_F32)
    upsample_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)y->data, (const float *)x->data, W, n);
  else
    upsample_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, W, n);
  CUDA_LAUNCH_CHECK();
}

void upsample_nearest2x_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy) {
  check_pair("upsample_nearest2x_backward_cuda", dy, dx);
  int64_t n = dx->numel, W = dx->shape[3];
  if (n == 0) return;
  if (dx->dtype == DT_F32)
    upsample_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, W, n);
  else
    upsample_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, W, n);
  CUDA_LAUNCH_CHECK();
}
