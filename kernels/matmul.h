/* matmul: batched matrix products over equal leading dimensions (attention's Q·Kᵀ and A·V).
 *   a (..., M, K), or (..., K, M) when trans_a
 *   b (..., K, N), or (..., N, K) when trans_b
 *     or b 2-D: one matrix shared by every batch (torch.matmul's broadcast of a 2-D b)
 *   -> y (..., M, N)          "..." = 0 to 3 batch dims, equal in a and b (rank 2..5)
 * y = op(a) · op(b) with op(x) = xᵀ when its flag is set (the last two dims).
 * Backward ACCUMULATES: d op(a) += dy · op(b)ᵀ and d op(b) += op(a)ᵀ · dy, written back
 * through the transposes; a shared b sums its gradient over the batch.
 * CPU: OpenBLAS sgemm per batch matrix (threads over batches only for small matrices).
 * CUDA: cublasGemmStridedBatchedEx, fp32 or bf16 storage, fp32 accumulation (matmul.cu). */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_matmul(Ctx *ctx, Tensor *a, Tensor *b, bool trans_a, bool trans_b);

/* The product's sizes: `batch` matrices, each op(a) (M, K) · op(b) (K, N). shared_b: b is
 * one (K, N) (or (N, K)) matrix used by every batch. */
typedef struct MatmulDims {
  int64_t batch, M, N, K;
  bool trans_a, trans_b, shared_b;
} MatmulDims;

/* CPU reference. y (batch, M, N) = op(a) op(b). Backward: da, db may be NULL. */
void matmul_forward_cpu(float *y, const float *a, const float *b, MatmulDims d);
void matmul_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, MatmulDims d);
#if MCM_CUDA
void matmul_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, MatmulDims d);
void matmul_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                          MatmulDims d);
#endif

#ifdef __cplusplus
}
#endif
