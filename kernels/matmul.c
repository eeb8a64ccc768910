/* matmul: CPU reference, dispatch and tape (see matmul.h).
 *
 * Everything is one row-major primitive, C_p = op(A_p) op(B_p) + β C_p over p < batch with
 * element strides between the matrices (stride 0: one matrix shared by every p). With
 * y = op(a) op(b), the gradients in storage layout are
 *   da += dy · op(b)ᵀ        (a stored (M, K))      da += op(b) · dyᵀ   (a stored (K, M))
 *   db += op(a)ᵀ · dy        (b stored (K, N))      db += dyᵀ · op(a)   (b stored (N, K))
 * where op(b)ᵀ is b's storage itself when trans_b, and so on. A shared b with an
 * untransposed a folds the batch into M: a (batch, M, K) is one (batch·M, K) matrix, so the
 * forward, da and the batch-summed db are each a single GEMM. */
#include "matmul.h"

#include <cblas.h>
#include <limits.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

/* OpenBLAS runs an sgemm below about 64³ multiply-adds on one thread; for such small
 * matrices the threads come from running the batch in parallel instead. */
#define MATMUL_SMALL (64 * 64 * 64)

static void sgemm_rm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                     int64_t ldb, float beta, float *C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
              1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* C_p (M, N) = op(A_p) op(B_p) + β C_p for p < batch; sA, sB, sC are element strides
 * between matrices. sC = 0 (one C for every p) accumulates in order p = 0, 1, ... and
 * needs β = 1; distinct Cs may run in parallel. */
static void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, int64_t sA,
                         const float *B, int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc, int64_t sC,
                         int64_t batch) {
  if (sC == 0) {
    for (int64_t p = 0; p < batch; p++) sgemm_rm(ta, tb, M, N, K, A + p * sA, lda, B + p * sB, ldb, beta, C, ldc);
    return;
  }
#pragma omp parallel for if (batch > 1 && M * N * K < MATMUL_SMALL)
  for (int64_t p = 0; p < batch; p++)
    sgemm_rm(ta, tb, M, N, K, A + p * sA, lda, B + p * sB, ldb, beta, C + p * sC, ldc);
}

void matmul_forward_cpu(float *y, const float *a, const float *b, MatmulDims d) {
  int64_t M = d.M, N = d.N, K = d.K, lda = d.trans_a ? M : K, ldb = d.trans_b ? K : N;
  if (d.shared_b && !d.trans_a) { /* y (batch·M, N) = a (batch·M, K) · op(b) */
    sgemm_rm(false, d.trans_b, d.batch * M, N, K, a, lda, b, ldb, 0.0f, y, N);
    return;
  }
  gemm_batched(d.trans_a, d.trans_b, M, N, K, a, lda, M * K, b, ldb, d.shared_b ? 0 : K * N, 0.0f, y, N, M * N,
               d.batch);
}

void matmul_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, MatmulDims d) {
  int64_t M = d.M, N = d.N, K = d.K, lda = d.trans_a ? M : K, ldb = d.trans_b ? K : N;
  int64_t sB = d.shared_b ? 0 : K * N;
  bool fold = d.shared_b && !d.trans_a; /* the batch folds into M */
  int64_t bM = fold ? d.batch * M : M, nb = fold ? 1 : d.batch;
  if (da) {
    if (!d.trans_a) /* da (M, K) += dy (M, N) · op(b)ᵀ */
      gemm_batched(false, !d.trans_b, bM, K, N, dy, N, M * N, b, ldb, sB, 1.0f, da, K, M * K, nb);
    else /* da (K, M) += op(b) (K, N) · dyᵀ (N, M) */
      gemm_batched(d.trans_b, true, K, M, N, b, ldb, sB, dy, N, M * N, 1.0f, da, M, M * K, d.batch);
  }
  if (db) {
    int64_t sDB = d.shared_b ? 0 : K * N;
    if (!d.trans_b) /* db (K, N) += op(a)ᵀ (K, M) · dy (M, N) */
      gemm_batched(!d.trans_a, false, K, N, bM, a, lda, M * K, dy, N, M * N, 1.0f, db, N, sDB, nb);
    else /* db (N, K) += dyᵀ (N, M) · op(a) (M, K) */
      gemm_batched(true, d.trans_a, N, K, bM, dy, N, M * N, a, lda, M * K, 1.0f, db, K, sDB, nb);
  }
}

typedef struct {
  MatmulDims d;
} MatmulSaved;

static void matmul_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *b = node->in[1], *dy = node->out->grad;
  MatmulDims d = ((MatmulSaved *)node->saved)->d;
  Tensor *da = a->requires_grad ? grad_of(ctx, a) : NULL;
  Tensor *db = b->requires_grad ? grad_of(ctx, b) : NULL;
  if (!da && !db) return;
  ctx_count_flops(ctx, a->dtype, 2.0 * (double)d.batch * (double)d.M * (double)d.N * (double)d.K * ((da != NULL) + (db != NULL)));
  ON_DEVICE(ctx,
            CPU_REF((da, db, dy, a, b),
                    matmul_backward_cpu(da ? da->data : NULL, db ? db->data : NULL, dy->data, a->data, b->data, d)),
            matmul_backward_cuda(ctx, da, db, dy, a, b, d));
}

/* Sizes from the shapes and flags; fatal with both shapes on any mismatch. */
static MatmulDims matmul_dims(const Tensor *a, const Tensor *b, bool trans_a, bool trans_b) {
  const char *ta = trans_a ? "ᵀ" : "", *tb = trans_b ? "ᵀ" : "";
  MCM_CHECK(a->ndim >= 2 && b->ndim >= 2, "matmul: a %s and b %s must both have at least 2 dimensions",
            TENSOR_SHAPE_STR(a), TENSOR_SHAPE_STR(b));
  MCM_CHECK(b->ndim == a->ndim || b->ndim == 2,
            "matmul: a %s has %d dimensions and b %s has %d; b must have as many, or 2 (shared by the batch)",
            TENSOR_SHAPE_STR(a), a->ndim, TENSOR_SHAPE_STR(b), b->ndim);
  MatmulDims d = {.batch = 1, .trans_a = trans_a, .trans_b = trans_b, .shared_b = b->ndim == 2 && a->ndim > 2};
  for (int i = 0; i < a->ndim - 2; i++) {
    if (!d.shared_b)
      MCM_CHECK(a->shape[i] == b->shape[i],
                "matmul: batch dimension %d differs: a %s, b %s (no broadcasting except a 2-D b)", i,
                TENSOR_SHAPE_STR(a), TENSOR_SHAPE_STR(b));
    d.batch *= a->shape[i];
  }
  int64_t a0 = a->shape[a->ndim - 2], a1 = a->shape[a->ndim - 1];
  int64_t b0 = b->shape[b->ndim - 2], b1 = b->shape[b->ndim - 1];
  d.M = trans_a ? a1 : a0;
  d.K = trans_a ? a0 : a1;
  d.N = trans_b ? b0 : b1;
  int64_t kb = trans_b ? b1 : b0;
  MCM_CHECK(d.K == kb, "matmul: inner sizes differ: a%s %s gives K = %lld, b%s %s gives K = %lld", ta,
            TENSOR_SHAPE_STR(a), (long long)d.K, tb, TENSOR_SHAPE_STR(b), (long long)kb);
  MCM_CHECK(a->numel > 0 && b->numel > 0, "matmul: a %s or b %s is empty", TENSOR_SHAPE_STR(a), TENSOR_SHAPE_STR(b));
  MCM_CHECK(d.batch * d.M <= INT_MAX && d.N <= INT_MAX && d.K <= INT_MAX,
            "matmul: a %s, b %s: a matrix dimension exceeds the BLAS int range", TENSOR_SHAPE_STR(a),
            TENSOR_SHAPE_STR(b));
  return d;
}

Tensor *op_matmul(Ctx *ctx, Tensor *a, Tensor *b, bool trans_a, bool trans_b) {
  MatmulDims d = matmul_dims(a, b, trans_a, trans_b);
  MCM_CHECK((a->dtype == DT_F32 || a->dtype == DT_BF16) && b->dtype == a->dtype,
            "matmul: a is %s, b is %s: one dtype, fp32 or bf16", dtype_name(a->dtype), dtype_name(b->dtype));
  int64_t shape[MCM_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  shape[a->ndim - 2] = d.M;
  shape[a->ndim - 1] = d.N;
  Tensor *y = tensor_new(ctx, a->dtype, a->ndim, shape);
  ctx_count_flops(ctx, a->dtype, 2.0 * (double)d.batch * (double)d.M * (double)d.N * (double)d.K);
  ON_DEVICE(ctx, CPU_REF((y, a, b), matmul_forward_cpu(y->data, a->data, b->data, d)),
            matmul_forward_cuda(ctx, y, a, b, d));
  Tensor *in[2] = {a, b};
  if (tape_wants(ctx, 2, in)) {
    TapeNode *node = tape_record(ctx, "matmul", matmul_backward, y, 2, in, sizeof(MatmulSaved));
    ((MatmulSaved *)node->saved)->d = d;
  }
  return y;
}
