/* CUDA side of the context: device discovery, handles, memory, copies, dtype conversion,
 * and the failure reporters behind CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK / NCCL_CHECK. */
#include "cuda_api.h"
#include "cuda_common.h"

/* ------------------------------------------------------------------ failure reporters */

static const char *cuda_hint(cudaError_t e) {
  switch (e) {
    case cudaErrorMemoryAllocation: return "the GPU is out of memory: lower [train] batch_size or the clip length";
    case cudaErrorNoDevice: return "no GPU is visible: check CUDA_VISIBLE_DEVICES or run with --device cpu";
    case cudaErrorInsufficientDriver: return "the NVIDIA driver is older than this CUDA runtime: update the driver";
    case cudaErrorInvalidDevice: return "that device ordinal does not exist: see nvidia-smi";
    case cudaErrorNoKernelImageForDevice:
      return "this GPU's architecture was not compiled in: rebuild with make CUDA_ARCHS=\"<its sm number>\"";
    case cudaErrorIllegalAddress: return "a kernel read or wrote out of bounds: rerun under compute-sanitizer";
    default: return NULL;
  }
}

extern "C" void mcm_cuda_fail(const char *file, int line, const char *expr, cudaError_t e) {
  const char *hint = cuda_hint(e);
  mcm_fatal(file, line, "%s failed: %s (%s)%s%s%s", expr, cudaGetErrorString(e), cudaGetErrorName(e),
            hint ? " (hint: " : "", hint ? hint : "", hint ? ")" : "");
}

extern "C" void mcm_cublas_fail(const char *file, int line, const char *expr, cublasStatus_t s) {
  const char *hint = s == CUBLAS_STATUS_ALLOC_FAILED      ? "the GPU is out of memory"
                     : s == CUBLAS_STATUS_NOT_SUPPORTED   ? "this dtype/layout combination is not supported on this GPU"
                     : s == CUBLAS_STATUS_INVALID_VALUE   ? "a size, stride or leading dimension is wrong"
                     : s == CUBLAS_STATUS_ARCH_MISMATCH   ? "the GPU lacks a feature this call needs"
                                                          : NULL;
  mcm_fatal(file, line, "%s failed: %s%s%s%s", expr, cublasGetStatusString(s), hint ? " (hint: " : "",
            hint ? hint : "", hint ? ")" : "");
}

extern "C" void mcm_cudnn_fail(const char *file, int line, const char *expr, cudnnStatus_t s) {
  const char *hint = s == CUDNN_STATUS_NOT_SUPPORTED ? "no cuDNN engine for this shape/dtype; try fp32 or other sizes"
                     : s == CUDNN_STATUS_ALLOC_FAILED ? "the GPU is out of memory"
                                                      : NULL;
  mcm_fatal(file, line, "%s failed: %s%s%s%s", expr, cudnnGetErrorString(s), hint ? " (hint: " : "", hint ? hint : "",
            hint ? ")" : "");
}

extern "C" void mcm_nccl_fail(const char *file, int line, const char *expr, ncclResult_t r) {
  const char *hint = r == ncclSystemError || r == ncclRemoteError
                         ? "a peer or the network failed: rerun with NCCL_DEBUG=INFO to see which"
                         : r == ncclInvalidUsage ? "ranks disagree on a call, size or dtype" : NULL;
  mcm_fatal(file, line, "%s failed: %s%s%s%s", expr, ncclGetErrorString(r), hint ? " (hint: " : "", hint ? hint : "",
            hint ? ")" : "");
}

/* ------------------------------------------------------------------ devices and handles */

extern "C" int cuda_count_devices(char *why, size_t why_size) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    mcm_snprintf(why, why_size, "%s", cudaGetErrorString(e));
    cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
    return 0;
  }
  if (n == 0) mcm_snprintf(why, why_size, "no CUDA device found");
  return n;
}

extern "C" int cuda_ctx_init(Ctx *ctx, int index, McmErr *err) {
  cudaError_t e = cudaSetDevice(index);
  if (e != cudaSuccess) return mcm_err(err, "cannot use cuda:%d: %s", index, cudaGetErrorString(e));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  ctx->device_index = index;
  mcm_snprintf(ctx->device_name, sizeof ctx->device_name, "cuda:%d (%s, sm_%d%d, %.0f GiB)", index, prop.name,
               prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ctx->stream = stream;
  cublasHandle_t blas;
  CUBLAS_CHECK(cublasCreate(&blas));
  CUBLAS_CHECK(cublasSetStream(blas, stream));
  ctx->cublas = blas;
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  ctx->cublaslt = lt;
  cudnnHandle_t dnn;
  CUDNN_CHECK(cudnnCreate(&dnn));
  CUDNN_CHECK(cudnnSetStream(dnn, stream));
  ctx->cudnn = dnn;
  ctx->workspace_bytes = (size_t)64 << 20;
  CUDA_CHECK(cudaMalloc(&ctx->workspace, ctx->workspace_bytes));
  CUBLAS_CHECK(cublasSetWorkspace(blas, ctx->workspace, ctx->workspace_bytes));
  return 0;
}

extern "C" void cuda_ctx_free(Ctx *ctx) {
  CUDA_CHECK(cudaSetDevice(ctx->device_index));
  CUDA_CHECK(cudaStreamSynchronize(CTX_STREAM(ctx)));
  if (ctx->cudnn) CUDNN_CHECK(cudnnDestroy((cudnnHandle_t)ctx->cudnn));
  if (ctx->cublaslt) CUBLAS_CHECK(cublasLtDestroy((cublasLtHandle_t)ctx->cublaslt));
  if (ctx->cublas) CUBLAS_CHECK(cublasDestroy((cublasHandle_t)ctx->cublas));
  if (ctx->workspace) CUDA_CHECK(cudaFree(ctx->workspace));
  if (ctx->stream) CUDA_CHECK(cudaStreamDestroy(CTX_STREAM(ctx)));
}

/* ------------------------------------------------------------------ memory */

extern "C" void *cuda_alloc(size_t bytes) {
  void *p = NULL;
  CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
  return p;
}

extern "C" void cuda_free(void *p) {
  if (p) CUDA_CHECK(cudaFree(p));
}

extern "C" void cuda_h2d(Ctx *ctx, void *dst, const void *src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, CTX_STREAM(ctx)));
}

extern "C" void cuda_d2h(Ctx *ctx, void *dst, const void *src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, CTX_STREAM(ctx)));
}

extern "C" void cuda_d2d(Ctx *ctx, void *dst, const void *src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, CTX_STREAM(ctx)));
}

extern "C" void cuda_memset(Ctx *ctx, void *dst, int byte, size_t bytes) {
  CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, CTX_STREAM(ctx)));
}

extern "C" void cuda_sync(Ctx *ctx) { CUDA_CHECK(cudaStreamSynchronize(CTX_STREAM(ctx))); }

/* ------------------------------------------------------------------ conversion and fill */

__global__ void convert_f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void convert_bf16_to_f32_kernel(float *dst, const __nv_bfloat16 *src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

__global__ void fill_f32_kernel(float *dst, int64_t n, float v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = v;
}

__global__ void fill_bf16_kernel(__nv_bfloat16 *dst, int64_t n, __nv_bfloat16 v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = v;
}

extern "C" void cuda_convert(Ctx *ctx, void *dst, DType dst_dt, const void *src, DType src_dt, int64_t n) {
  if (n == 0) return;
  const int threads = 256;
  if (dst_dt == DT_BF16 && src_dt == DT_F32) {
    convert_f32_to_bf16_kernel<<<cuda_blocks(n, threads), threads, 0, CTX_STREAM(ctx)>>>((__nv_bfloat16 *)dst,
                                                                                         (const float *)src, n);
  } else if (dst_dt == DT_F32 && src_dt == DT_BF16) {
    convert_bf16_to_f32_kernel<<<cuda_blocks(n, threads), threads, 0, CTX_STREAM(ctx)>>>(
        (float *)dst, (const __nv_bfloat16 *)src, n);
  } else {
    MCM_FATAL("cuda_convert: no conversion from %s to %s", dtype_name(src_dt), dtype_name(dst_dt));
  }
  CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_fill(Ctx *ctx, void *dst, DType dt, int64_t n, float value) {
  if (n == 0) return;
  const int threads = 256;
  if (dt == DT_F32) {
    fill_f32_kernel<<<cuda_blocks(n, threads), threads, 0, CTX_STREAM(ctx)>>>((float *)dst, n, value);
  } else {
    MCM_CHECK(dt == DT_BF16, "cuda_fill: dtype %s", dtype_name(dt));
    fill_bf16_kernel<<<cuda_blocks(n, threads), threads, 0, CTX_STREAM(ctx)>>>((__nv_bfloat16 *)dst, n,
                                                                              __float2bfloat16_rn(value));
  }
  CUDA_LAUNCH_CHECK();
}
