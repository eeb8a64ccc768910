/* matmul on the GPU (see matmul.h): cublasGemmStridedBatchedEx, fp32 or bf16 storage, fp32
 * accumulation (CUBLAS_COMPUTE_32F: no TF32). The calls mirror the CPU reference in
 * matmul.c one for one, through the same row-major primitive; its comment there gives
 * the gradient formulas and the folding of a shared b. */
#include "cuda_common.h"
#include "matmul.h"

namespace {

cudaDataType_t cuda_dtype(DType dt) { return dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* C_p (M, N) = op(A_p) op(B_p) + β C_p for p < batch, all row-major; sA, sB, sC are element
 * strides between matrices (0: one matrix for every p).
 * cuBLAS is column-major, and a row-major (R, C) matrix is its column-major transpose, so
 * row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the call swaps the operands
 * and keeps each one's flag. sC = 0 (every product accumulates into one C) would race inside
 * a batched call, so it runs as `batch` calls in order on the stream. */
void gemm_rm(Ctx *ctx, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda, int64_t sA,
             const void *B, int64_t ldb, int64_t sB, float beta, void *C, int64_t ldc, int64_t sC, int64_t batch,
             DType dt) {
  const float alpha = 1.0f;
  cudaDataType_t t = cuda_dtype(dt);
  size_t es = dtype_size(dt);
  bool serial = sC == 0 && batch > 1;
  int64_t calls = serial ? batch : 1, per_call = serial ? 1 : batch;
  MCM_CHECK(!serial || beta == 1.0f, "matmul_cuda: accumulating %lld products into one matrix needs beta = 1",
            (long long)batch);
  MCM_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && per_call <= INT32_MAX,
            "matmul_cuda: GEMM %lld x %lld x %lld (batch %lld) exceeds cuBLAS's int sizes", (long long)M,
            (long long)N, (long long)K, (long long)batch);
  for (int64_t p = 0; p < calls; p++) {
    const char *Ap = (const char *)A + (size_t)(p * sA) * es, *Bp = (const char *)B + (size_t)(p * sB) * es;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx((cublasHandle_t)ctx->cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, Bp, t,
                                            (int)ldb, sB, Ap, t, (int)lda, sA, &beta, C, t, (int)ldc, sC,
                                            (int)per_call, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

void check_operand(const char *what, const Tensor *t, DType dt, int64_t numel) {
  MCM_CHECK(t->dev == DEV_CUDA, "matmul_cuda: %s is not on the GPU", what);
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "matmul_cuda: %s is %s, expected fp32 or bf16", what,
            dtype_name(t->dtype));
  MCM_CHECK(t->dtype == dt, "matmul_cuda: %s is %s, a is %s: dtypes must match", what, dtype_name(t->dtype),
            dtype_name(dt));
  MCM_CHECK(t->numel == numel, "matmul_cuda: %s %s has %lld elements, expected %lld", what, ShapeStr(t).c_str(),
            (long long)t->numel, (long long)numel);
}

}  // namespace

void matmul_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, MatmulDims d) {
  int64_t M = d.M, N = d.N, K = d.K, lda = d.trans_a ? M : K, ldb = d.trans_b ? K : N;
  DType dt = a->dtype;
  check_operand("a", a, dt, d.batch * M * K);
  check_operand("b", b, dt, (d.shared_b ? 1 : d.batch) * K * N);
  check_operand("y", y, dt, d.batch * M * N);
  if (d.shared_b && !d.trans_a)
    gemm_rm(ctx, false, d.trans_b, d.batch * M, N, K, a->data, lda, 0, b->data, ldb, 0, 0.0f, y->data, N, 0, 1, dt);
  else
    gemm_rm(ctx, d.trans_a, d.trans_b, M, N, K, a->data, lda, M * K, b->data, ldb, d.shared_b ? 0 : K * N, 0.0f,
            y->data, N, M * N, d.batch, dt);
}

void matmul_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                          MatmulDims d) {
  int64_t M = d.M, N = d.N, K = d.K, lda = d.trans_a ? M : K, ldb = d.trans_b ? K : N;
  DType dt = a->dtype;
  check_operand("a", a, dt, d.batch * M * K);
  check_operand("b", b, dt, (d.shared_b ? 1 : d.batch) * K * N);
  check_operand("dy", dy, dt, d.batch * M * N);
  int64_t sB = d.shared_b ? 0 : K * N;
  bool fold = d.shared_b && !d.trans_a;
  int64_t bM = fold ? d.batch * M : M, nb = fold ? 1 : d.batch;
  if (da) {
    check_operand("da", da, dt, a->numel);
    if (!d.trans_a) /* da (M, K) += dy (M, N) · op(b)ᵀ */
      gemm_rm(ctx, false, !d.trans_b, bM, K, N, dy->data, N, M * N, b->data, ldb, sB, 1.0f, da->data, K, M * K, nb,
              dt);
    else /* da (K, M) += op(b) (K, N) · dyᵀ (N, M) */
      gemm_rm(ctx, d.trans_b, true, K, M, N, b->data, ldb, sB, dy->data, N, M * N, 1.0f, da->data, M, M * K,
              d.batch, dt);
  }
  if (db) {
    check_operand("db", db, dt, b->numel);
    int64_t sDB = d.shared_b ? 0 : K * N;
    if (!d.trans_b) /* db (K, N) += op(a)ᵀ (K, M) · dy (M, N) */
      gemm_rm(ctx, !d.trans_a, false, K, N, bM, a->data, lda, M * K, dy->data, N, M * N, 1.0f, db->data, N, sDB, nb,
              dt);
    else /* db (N, K) += dyᵀ (N, M) · op(a) (M, K) */
      gemm_rm(ctx, true, d.trans_a, N, K, bM, dy->data, N, M * N, a->data, lda, M * K, 1.0f, db->data, K, sDB, nb,
              dt);
  }
}
