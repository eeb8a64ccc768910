/* Pointwise activations on the GPU (see activation.h): one grid-stride kernel per
 * direction, templated on the storage type (fp32 or bf16; the math is always fp32).
 * Backward accumulates: dx += f'(x) · dy.
 * expf/tanhf (not the __expf intrinsics) keep the result within a few ulp of the CPU
 * reference, so fp32 runs compare at fp32 tolerances. */
#include "activation.h"
#include "cuda_common.h"

namespace {

__device__ __forceinline__ float act_value(float v, Act act) {
  switch (act) {
    case ACT_SILU: return v / (1.0f + expf(-v));
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    default: return tanhf(v); /* ACT_TANH; the launcher rejects anything else */
  }
}

/* f'(x): SiLU σ(x)(1 + x(1 − σ(x))), ReLU [x > 0], tanh 1 − tanh²(x). */
__device__ __forceinline__ float act_grad(float v, Act act) {
  switch (act) {
    case ACT_SILU: {
      float s = 1.0f / (1.0f + expf(-v));
      return s * (1.0f + v * (1.0f - s));
    }
    case ACT_RELU: return v > 0.0f ? 1.0f : 0.0f;
    default: {
      float t = tanhf(v);
      return 1.0f - t * t;
    }
  }
}

/* y (n) = f(x (n)) */
template <typename T>
__global__ void act_forward_kernel(T *y, const T *x, int64_t n, Act act) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>(act_value(to_f(x[i]), act));
}

/* dx (n) += f'(x (n)) · dy (n) */
template <typename T>
__global__ void act_backward_kernel(T *dx, const T *dy, const T *x, int64_t n, Act act) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dx[i] = from_f<T>(to_f(dx[i]) + act_grad(to_f(x[i]), act) * to_f(dy[i]));
}

const int kThreads = 256;

void check_act_tensor(const char *what, const Tensor *t, const Tensor *x, Act act) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s (%s): tensor is not on the GPU", what, act_name(act));
  MCM_CHECK(t->dtype == x->dtype, "%s (%s): dtype %s differs from x's %s", what, act_name(act), dtype_name(t->dtype),
            dtype_name(x->dtype));
  MCM_CHECK(t->numel == x->numel, "%s (%s): %lld elements, x has %lld", what, act_name(act), (long long)t->numel,
            (long long)x->numel);
}

}  // namespace

/* Tensors are always contiguous (tensor.h), so a flat index covers them. */
void act_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, Act act) {
  MCM_CHECK((unsigned)act <= ACT_TANH, "act_forward_cuda: unknown activation %d", (int)act);
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "%s: x is %s, expected fp32 or bf16", act_name(act),
            dtype_name(x->dtype));
  check_act_tensor("act_forward_cuda: x", x, x, act);
  check_act_tensor("act_forward_cuda: y", y, x, act);
  int64_t n = x->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    act_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data,
                                                                                  (const float *)x->data, n, act);
  else
    act_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, n, act);
  CUDA_LAUNCH_CHECK();
}

void act_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, Act act) {
  MCM_CHECK((unsigned)act <= ACT_TANH, "act_backward_cuda: unknown activation %d", (int)act);
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "%s: x is %s, expected fp32 or bf16", act_name(act),
            dtype_name(x->dtype));
  check_act_tensor("act_backward_cuda: x", x, x, act);
  check_act_tensor("act_backward_cuda: dx", dx, x, act);
  check_act_tensor("act_backward_cuda: dy", dy, x, act);
  int64_t n = x->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    act_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, (const float *)x->data, n, act);
  else
    act_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, (const __nv_bfloat16 *)x->data, n, act);
  CUDA_LAUNCH_CHECK();
}
