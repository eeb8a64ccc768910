/* Elementwise arithmetic with NumPy broadcasting:
 *   op_add  a + b      op_sub  a − b      op_mul  a ⊙ b
 *   op_add_scaled  α·a + β·b      op_scale  s·a
 * a and b broadcast to y by NumPy's rules over up to 5 dimensions: shapes align on the
 * right, missing leading dimensions count as 1, and each pair of sizes is equal or one of
 * them is 1. E.g. x (B, C, H, W) + emb (B, C, 1, 1), (B, T, C) ⊙ (C), (B, 1, W) + (1, C, 1).
 * Backward accumulates into both inputs; an input that was broadcast receives the sum of
 * the gradient over its broadcast dimensions (in a fixed order: deterministic on the GPU,
 * summed in double on the CPU).
 *
 * Index plan (Bcast): y's dimensions of size 1 are dropped and neighbouring dimensions in
 * which a and b broadcast alike are merged, so x (B, C, H, W) + emb (B, C, 1, 1) runs as
 * (B·C, H·W) with emb strides (1, 0), and same-shape operands become one flat dimension
 * (the fast path). The plan is computed once on the host and passed to kernels by value. */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum Binary { BIN_ADD = 0, BIN_SUB = 1, BIN_MUL = 2 } Binary;

Tensor *op_binary(Ctx *ctx, Tensor *a, Tensor *b, Binary kind);
static inline Tensor *op_add(Ctx *ctx, Tensor *a, Tensor *b) { return op_binary(ctx, a, b, BIN_ADD); }
static inline Tensor *op_sub(Ctx *ctx, Tensor *a, Tensor *b) { return op_binary(ctx, a, b, BIN_SUB); }
static inline Tensor *op_mul(Ctx *ctx, Tensor *a, Tensor *b) { return op_binary(ctx, a, b, BIN_MUL); }
/* alpha·a + beta·b: residual forms such as (f(x) + x)/√2 = op_add_scaled(f, x, r, r). */
Tensor *op_add_scaled(Ctx *ctx, Tensor *a, Tensor *b, float alpha, float beta);
Tensor *op_scale(Ctx *ctx, Tensor *a, float s);

/* What the kernels compute: y = alpha·a + beta·b, or y = a ⊙ b when mul (alpha and beta
 * unused). op_sub is the sum with beta = −1, which gives a − b exactly. */
typedef struct BinaryOp {
  bool mul;
  float alpha, beta;
} BinaryOp;
BinaryOp binary_op(Binary kind);

/* y = a ∘ b after merging (see the header comment). y's element i sits at coordinates
 * (i0 … i_{ndim-1}) over shape; a's element is Σ i_d·sa[d], b's Σ i_d·sb[d] (stride 0
 * where that operand broadcasts), y's Σ i_d·sy[d] = i. */
typedef struct Bcast {
  int ndim;
  int64_t shape[MCM_MAX_DIMS];
  int64_t sa[MCM_MAX_DIMS], sb[MCM_MAX_DIMS], sy[MCM_MAX_DIMS];
  int64_t n;                       /* y's element count */
  int y_ndim;                      /* y's own shape, before merging */
  int64_t y_shape[MCM_MAX_DIMS];
} Bcast;
/* Fills bc for shapes a and b. Returns false when they do not broadcast; then `why`
 * (if not NULL) says which dimension disagrees. */
bool bcast_init(Bcast *bc, int nda, const int64_t *sha, int ndb, const int64_t *shb, char *why, size_t why_size);
/* True when a and b have y's shape: one flat dimension, no broadcast. */
static inline bool bcast_is_flat(const Bcast *bc) { return bc->ndim == 1 && bc->sa[0] == 1 && bc->sb[0] == 1; }

/* The gradient of one operand t (a: which = 0, b: which = 1) as a reduction of dy:
 * element i of t (over its kept dimensions, row-major = its own layout) gathers the m
 * elements of dy over the reduced dimensions (those t broadcasts in), and of the other
 * operand at the same places (for a product). */
typedef struct BcastGrad {
  int nk, nr;
  int64_t k_size[MCM_MAX_DIMS], k_sy[MCM_MAX_DIMS], k_so[MCM_MAX_DIMS]; /* kept: size, dy stride, other stride */
  int64_t r_size[MCM_MAX_DIMS], r_sy[MCM_MAX_DIMS], r_so[MCM_MAX_DIMS]; /* reduced */
  int64_t n, m;                                                          /* t's elements, terms each */
} BcastGrad;
void bcast_grad_init(BcastGrad *g, const Bcast *bc, int which);

/* y (bc->n) = a ∘ b */
void binary_forward_cpu(float *y, const float *a, const float *b, const Bcast *bc, BinaryOp op);
/* da += ∂y/∂a · dy, db += ∂y/∂b · dy, each summed over its broadcast dimensions (either
 * may be NULL); a and b are read only for a product. */
void binary_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, const Bcast *bc,
                         BinaryOp op);
void scale_cpu(float *y, const float *a, float s, int64_t n, bool accumulate);
#if MCM_CUDA
/* The same on tensors; y, dy have the broadcast shape of a and b. */
void binary_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, BinaryOp op);
void binary_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                          BinaryOp op);
void scale_cuda(Ctx *ctx, Tensor *y, const Tensor *a, float s, bool accumulate);
#endif

#ifdef __cplusplus
}
#endif
