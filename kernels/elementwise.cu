/* Elementwise arithmetic on the GPU (see elementwise.h): grid-stride kernels templated on
 * the storage type (fp32 or bf16; the math is always fp32). Backward kernels accumulate. */
#include "cuda_common.h"
#include "elementwise.h"

namespace {

__device__ __forceinline__ float binary_value(float a, float b, Binary kind) {
  return kind == BIN_ADD ? a + b : kind == BIN_SUB ? a - b : a * b;
}

/* y (n) = a (n) ∘ b (n) */
template <typename T>
__global__ void binary_forward_kernel(T *y, const T *a, const T *b, int64_t n, Binary kind) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>(binary_value(to_f(a[i]), to_f(b[i]), kind));
}

/* da (n) += ∂y/∂a · dy, db (n) += ∂y/∂b · dy; da or db may be NULL. a and b are read only
 * for a product. */
template <typename T>
__global__ void binary_backward_kernel(T *da, T *db, const T *dy, const T *a, const T *b, int64_t n, Binary kind) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float g = to_f(dy[i]);
    if (da) da[i] = from_f<T>(to_f(da[i]) + (kind == BIN_MUL ? to_f(b[i]) * g : g));
    if (db) db[i] = from_f<T>(to_f(db[i]) + (kind == BIN_MUL ? to_f(a[i]) * g : kind == BIN_SUB ? -g : g));
  }
}

/* y (n) = [y +] s · a (n) */
template <typename T>
__global__ void scale_kernel(T *y, const T *a, float s, int64_t n, bool accumulate) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>((accumulate ? to_f(y[i]) : 0.0f) + s * to_f(a[i]));
}

const int kThreads = 256;

const char *binary_name(Binary kind) { return kind == BIN_ADD ? "add" : kind == BIN_SUB ? "sub" : "mul"; }

/* Same device, dtype and element count as the reference tensor; NULL passes. */
void check_like(const char *op, const char *arg, const Tensor *t, const Tensor *ref) {
  if (!t) return;
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == ref->dtype, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype),
            dtype_name(ref->dtype));
  MCM_CHECK(t->numel == ref->numel, "%s: %s has %lld elements, expected %lld", op, arg, (long long)t->numel,
            (long long)ref->numel);
}

void check_kind(const char *op, Binary kind, DType dt) {
  MCM_CHECK((unsigned)kind <= BIN_MUL, "%s: unknown binary op %d", op, (int)kind);
  MCM_CHECK(dt == DT_F32 || dt == DT_BF16, "%s (%s): dtype %s, expected fp32 or bf16", op, binary_name(kind),
            dtype_name(dt));
}

}  // namespace

/* Tensors are always contiguous (tensor.h), so a flat index covers them. */
void binary_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, Binary kind) {
  check_kind("binary_forward_cuda", kind, a->dtype);
  check_like("binary_forward_cuda", "a", a, a);
  check_like("binary_forward_cuda", "b", b, a);
  check_like("binary_forward_cuda", "y", y, a);
  int64_t n = a->numel;
  if (n == 0) return;
  if (a->dtype == DT_F32)
    binary_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)y->data, (const float *)a->data, (const float *)b->data, n, kind);
  else
    binary_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)a->data, (const __nv_bfloat16 *)b->data, n, kind);
  CUDA_LAUNCH_CHECK();
}

void binary_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                          Binary kind) {
  check_kind("binary_backward_cuda", kind, a->dtype);
  check_like("binary_backward_cuda", "a", a, a);
  check_like("binary_backward_cuda", "b", b, a);
  check_like("binary_backward_cuda", "dy", dy, a);
  check_like("binary_backward_cuda", "da", da, a);
  check_like("binary_backward_cuda", "db", db, a);
  int64_t n = a->numel;
  if (n == 0 || (!da && !db)) return;
  if (a->dtype == DT_F32)
    binary_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        da ? (float *)da->data : NULL, db ? (float *)db->data : NULL, (const float *)dy->data,
        (const float *)a->data, (const float *)b->data, n, kind);
  else
    binary_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        da ? (__nv_bfloat16 *)da->data : NULL, db ? (__nv_bfloat16 *)db->data : NULL,
        (const __nv_bfloat16 *)dy->data, (const __nv_bfloat16 *)a->data, (const __nv_bfloat16 *)b->data, n, kind);
  CUDA_LAUNCH_CHECK();
}

void scale_cuda(Ctx *ctx, Tensor *y, const Tensor *a, float s, bool accumulate) {
  MCM_CHECK(a->dtype == DT_F32 || a->dtype == DT_BF16, "scale_cuda: dtype %s, expected fp32 or bf16",
            dtype_name(a->dtype));
  check_like("scale_cuda", "a", a, a);
  check_like("scale_cuda", "y", y, a);
  int64_t n = a->numel;
  if (n == 0) return;
  if (a->dtype == DT_F32)
    scale_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data, (const float *)a->data,
                                                                            s, n, accumulate);
  else
    scale_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)a->data, s, n, accumulate);
  CUDA_LAUNCH_CHECK();
}
