/* linear on the GPU: the products through cuBLAS (fp32 or bf16 storage, fp32 accumulation),
 * bias add and bias gradient as small kernels. Row-major tensors are read as their
 * column-major transposes, so y = x Wᵀ becomes yᵀ = W xᵀ with W transposed. */
#include "cuda_common.h"
#include "linear.h"

static cudaDataType_t cuda_dtype(DType dt) { return dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

template <typename T>
__global__ void add_bias_kernel(T *y, const T *b, int64_t N, int64_t OUT) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * OUT; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>(to_f(y[i]) + to_f(b[i % OUT]));
}

/* db[o] += Σ_n dy[n, o]: one thread per output column, coalesced across o. */
template <typename T>
__global__ void bias_grad_kernel(T *db, const T *dy, int64_t N, int64_t OUT) {
  int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (o >= OUT) return;
  float s = 0.0f;
  for (int64_t n = 0; n < N; n++) s += to_f(dy[n * OUT + o]);
  db[o] = from_f<T>(to_f(db[o]) + s);
}

static void gemm(Ctx *ctx, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void *A,
                 int64_t lda, const void *B, int64_t ldb, float beta, void *C, int64_t ldc, DType dt) {
  const float alpha = 1.0f;
  MCM_CHECK(m < INT32_MAX && n < INT32_MAX && k < INT32_MAX, "linear: GEMM size %lld x %lld x %lld too large",
            (long long)m, (long long)n, (long long)k);
  CUBLAS_CHECK(cublasGemmEx((cublasHandle_t)ctx->cublas, ta, tb, (int)m, (int)n, (int)k, &alpha, A, cuda_dtype(dt),
                            (int)lda, B, cuda_dtype(dt), (int)ldb, &beta, C, cuda_dtype(dt), (int)ldc,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void linear_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b) {
  int64_t OUT = w->shape[0], IN = w->shape[1], N = x->numel / IN;
  MCM_CHECK(x->dtype == w->dtype && y->dtype == x->dtype, "linear: x %s, weight %s: dtypes must match",
            dtype_name(x->dtype), dtype_name(w->dtype));
  gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, IN, w->data, IN, x->data, IN, 0.0f, y->data, OUT, x->dtype);
  if (b) {
    MCM_CHECK(b->dtype == x->dtype, "linear: bias dtype %s differs from x %s", dtype_name(b->dtype), dtype_name(x->dtype));
    if (x->dtype == DT_F32)
      add_bias_kernel<<<cuda_blocks(N * OUT, 256), 256, 0, CTX_STREAM(ctx)>>>((float *)y->data, (const float *)b->data,
                                                                            N, OUT);
    else
      add_bias_kernel<<<cuda_blocks(N * OUT, 256), 256, 0, CTX_STREAM(ctx)>>>(
          (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)b->data, N, OUT);
    CUDA_LAUNCH_CHECK();
  }
}

void linear_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                          const Tensor *w) {
  int64_t OUT = w->shape[0], IN = w->shape[1], N = x->numel / IN;
  if (dx) gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, IN, N, OUT, w->data, IN, dy->data, OUT, 1.0f, dx->data, IN, x->dtype);
  if (dw) gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, N, x->data, IN, dy->data, OUT, 1.0f, dw->data, IN, x->dtype);
  if (db) {
    if (dy->dtype == DT_F32)
      bias_grad_kernel<<<cuda_blocks(OUT, 128), 128, 0, CTX_STREAM(ctx)>>>((float *)db->data, (const float *)dy->data,
                                                                          N, OUT);
    else
      bias_grad_kernel<<<cuda_blocks(OUT, 128), 128, 0, CTX_STREAM(ctx)>>>((__nv_bfloat16 *)db->data,
                                                                          (const __nv_bfloat16 *)dy->data, N, OUT);
    CUDA_LAUNCH_CHECK();
  }
}
