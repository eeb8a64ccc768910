/* Activations on the GPU (see activation.h): grid-stride kernels templated on the storage
 * type (fp32 or bf16; the math is always fp32). Backward accumulates: dx += f'(x) · dy.
 * expf/tanhf/erff (not the __expf intrinsics) keep the result within a few ulp of the CPU
 * reference, so fp32 runs compare at fp32 tolerances. */
#include "activation.h"
#include "cuda_common.h"

namespace {

const float kInvSqrt2 = 0.70710678118654752f;
const float kInvSqrt2Pi = 0.39894228040143268f;

__device__ __forceinline__ float gelu_value(float v) { return 0.5f * v * (1.0f + erff(v * kInvSqrt2)); }

/* d/dx [x·Φ(x)] = Φ(x) + x·φ(x) */
__device__ __forceinline__ float gelu_grad(float v) {
  float cdf = 0.5f * (1.0f + erff(v * kInvSqrt2));
  return cdf + v * kInvSqrt2Pi * expf(-0.5f * v * v);
}

__device__ __forceinline__ float act_value(float v, Act act, float slope) {
  switch (act) {
    case ACT_SILU: return v / (1.0f + expf(-v));
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    case ACT_TANH: return tanhf(v);
    case ACT_GELU: return gelu_value(v);
    default: return v > 0.0f ? v : slope * v; /* ACT_LEAKY_RELU; the launcher rejects anything else */
  }
}

/* f'(x): SiLU σ(x)(1 + x(1 − σ(x))), ReLU [x > 0], tanh 1 − tanh²(x), GELU Φ + xφ,
 * LeakyReLU 1 or slope. */
__device__ __forceinline__ float act_grad(float v, Act act, float slope) {
  switch (act) {
    case ACT_SILU: {
      float s = 1.0f / (1.0f + expf(-v));
      return s * (1.0f + v * (1.0f - s));
    }
    case ACT_RELU: return v > 0.0f ? 1.0f : 0.0f;
    case ACT_TANH: {
      float t = tanhf(v);
      return 1.0f - t * t;
    }
    case ACT_GELU: return gelu_grad(v);
    default: return v > 0.0f ? 1.0f : slope;
  }
}

/* y (n) = f(x (n)) */
template <typename T>
__global__ void act_forward_kernel(T *y, const T *x, int64_t n, Act act, float slope) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>(act_value(to_f(x[i]), act, slope));
}

/* dx (n) += f'(x (n)) · dy (n) */
template <typename T>
__global__ void act_backward_kernel(T *dx, const T *dy, const T *x, int64_t n, Act act, float slope) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dx[i] = from_f<T>(to_f(dx[i]) + act_grad(to_f(x[i]), act, slope) * to_f(dy[i]));
}

/* y (rows, C) = x[:, :C] ⊙ gelu(x[:, C:]), x (rows, 2C); one thread per output element. */
template <typename T>
__global__ void geglu_forward_kernel(T *y, const T *x, int64_t n, int64_t C) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / C, c = i - r * C;
    const T *row = x + r * 2 * C;
    y[i] = from_f<T>(to_f(row[c]) * gelu_value(to_f(row[C + c])));
  }
}

/* dx[:, :C] += gelu(g)·dy, dx[:, C:] += a·gelu'(g)·dy; each thread owns one (a, g) pair. */
template <typename T>
__global__ void geglu_backward_kernel(T *dx, const T *dy, const T *x, int64_t n, int64_t C) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / C, c = i - r * C;
    int64_t ia = r * 2 * C + c, ig = ia + C;
    float a = to_f(x[ia]), g = to_f(x[ig]), d = to_f(dy[i]);
    dx[ia] = from_f<T>(to_f(dx[ia]) + gelu_value(g) * d);
    dx[ig] = from_f<T>(to_f(dx[ig]) + a * gelu_grad(g) * d);
  }
}

const int kThreads = 256;

void check_float_dtype(const char *op, const Tensor *x) {
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "%s: x is %s, expected fp32 or bf16", op,
            dtype_name(x->dtype));
}

/* On the GPU, x's dtype, `numel` elements. */
void check_tensor(const char *op, const char *arg, const Tensor *t, const Tensor *x, int64_t numel) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == x->dtype, "%s: %s is %s, x is %s", op, arg, dtype_name(t->dtype), dtype_name(x->dtype));
  MCM_CHECK(t->numel == numel, "%s: %s has %lld elements, expected %lld", op, arg, (long long)t->numel,
            (long long)numel);
}

void check_act(const char *op, Act act, const Tensor *x) {
  MCM_CHECK((unsigned)act < ACT_COUNT, "%s: unknown activation %d", op, (int)act);
  check_float_dtype(op, x);
  check_tensor(op, "x", x, x, x->numel);
}

/* GEGLU's C from y (..., C) and x (..., 2C). */
int64_t geglu_check(const char *op, const Tensor *y, const Tensor *x) {
  check_float_dtype(op, x);
  check_tensor(op, "x", x, x, x->numel);
  int64_t C = y->shape[y->ndim - 1];
  MCM_CHECK(y->ndim == x->ndim && x->shape[x->ndim - 1] == 2 * C, "%s: x %s is not (..., 2C) for y %s", op,
            ShapeStr(x).c_str(), ShapeStr(y).c_str());
  check_tensor(op, "y", y, x, C ? x->numel / 2 : 0);
  return C;
}

}  // namespace

/* Tensors are always contiguous (tensor.h), so a flat index covers them. */
void act_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, Act act, float slope) {
  check_act("act_forward_cuda", act, x);
  check_tensor("act_forward_cuda", "y", y, x, x->numel);
  int64_t n = x->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    act_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)y->data, (const float *)x->data, n, act, slope);
  else
    act_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, n, act, slope);
  CUDA_LAUNCH_CHECK();
}

void act_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, Act act, float slope) {
  check_act("act_backward_cuda", act, x);
  check_tensor("act_backward_cuda", "dx", dx, x, x->numel);
  check_tensor("act_backward_cuda", "dy", dy, x, x->numel);
  int64_t n = x->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    act_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, (const float *)x->data, n, act, slope);
  else
    act_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, (const __nv_bfloat16 *)x->data, n, act, slope);
  CUDA_LAUNCH_CHECK();
}

void geglu_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x) {
  int64_t C = geglu_check("geglu_forward_cuda", y, x), n = y->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    geglu_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)y->data, (const float *)x->data, n, C);
  else
    geglu_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, n, C);
  CUDA_LAUNCH_CHECK();
}

void geglu_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x) {
  int64_t C = geglu_check("geglu_backward_cuda", dy, x), n = dy->numel;
  check_tensor("geglu_backward_cuda", "dx", dx, x, x->numel);
  if (n == 0) return;
  if (x->dtype == DT_F32)
    geglu_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, (const float *)x->data, n, C);
  else
    geglu_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, (const __nv_bfloat16 *)x->data, n, C);
  CUDA_LAUNCH_CHECK();
}
