/* CUDA-side helpers: check macros for the CUDA runtime, cuBLAS, cuDNN and NCCL, each
 * carrying file:line and ending in a hint where one exists; launch checks; bf16 helpers.
 * Included only by .cu files (and C files inside #if MCM_CUDA). */
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <cudnn.h>
#include <nccl.h>

#include "common.h"
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif
MCM_NORETURN void mcm_cuda_fail(const char *file, int line, const char *expr, cudaError_t e);
MCM_NORETURN void mcm_cublas_fail(const char *file, int line, const char *expr, cublasStatus_t s);
MCM_NORETURN void mcm_cudnn_fail(const char *file, int line, const char *expr, cudnnStatus_t s);
MCM_NORETURN void mcm_nccl_fail(const char *file, int line, const char *expr, ncclResult_t r);
#ifdef __cplusplus
}
#endif

#define CUDA_CHECK(expr)                                                   \
  do {                                                                     \
    cudaError_t e_ = (expr);                                               \
    if (e_ != cudaSuccess) mcm_cuda_fail(__FILE__, __LINE__, #expr, e_);   \
  } while (0)
#define CUBLAS_CHECK(expr)                                                         \
  do {                                                                             \
    cublasStatus_t s_ = (expr);                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS) mcm_cublas_fail(__FILE__, __LINE__, #expr, s_); \
  } while (0)
#define CUDNN_CHECK(expr)                                                         \
  do {                                                                            \
    cudnnStatus_t s_ = (expr);                                                    \
    if (s_ != CUDNN_STATUS_SUCCESS) mcm_cudnn_fail(__FILE__, __LINE__, #expr, s_); \
  } while (0)
#define NCCL_CHECK(expr)                                                  \
  do {                                                                    \
    ncclResult_t r_ = (expr);                                             \
    if (r_ != ncclSuccess) mcm_nccl_fail(__FILE__, __LINE__, #expr, r_);  \
  } while (0)
/* After every kernel launch: catches bad launch configurations at the launch site. */
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

#define CTX_STREAM(ctx) ((cudaStream_t)(ctx)->stream)

static inline unsigned int cuda_blocks(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned int)(b > 65535 * 32 ? 65535 * 32 : b);
}

/* Loads and stores that let one kernel template serve fp32 and bf16 tensors; arithmetic
 * is always fp32. */
#ifdef __CUDACC__
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/* Sum over a block of BLOCK threads (a multiple of 32, at most 1024) in a fixed order, so
 * repeated runs agree bit for bit; the total is valid in thread 0. */
template <int BLOCK>
__device__ __forceinline__ float block_sum(float v) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "block_sum: BLOCK must be a multiple of 32, <= 1024");
  __shared__ float warp_sums[BLOCK / 32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < BLOCK / 32 ? warp_sums[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

/* TENSOR_SHAPE_STR for C++ (which has no compound literals): ShapeStr(t).c_str(). */
struct ShapeStr {
  char s[96];
  explicit ShapeStr(const Tensor *t) { shape_str(s, sizeof s, t->ndim, t->shape); }
  const char *c_str() const { return s; }
};
#endif
