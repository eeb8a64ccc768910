/* Elementwise arithmetic: broadcast plans, CPU reference, dispatch and tape (see
 * elementwise.h). */
#include "elementwise.h"

#include "cpu_bf16.h"
#include "cuda_api.h"

BinaryOp binary_op(Binary kind) {
  switch (kind) {
    case BIN_ADD: return (BinaryOp){false, 1.0f, 1.0f};
    case BIN_SUB: return (BinaryOp){false, 1.0f, -1.0f};
    case BIN_MUL: return (BinaryOp){true, 1.0f, 1.0f};
  }
  MCM_FATAL("binary: unknown kind %d", (int)kind);
}

static const char *binary_name(Binary kind) { return kind == BIN_ADD ? "add" : kind == BIN_SUB ? "sub" : "mul"; }

/* ---------------------------------------------------------------- broadcast plans */

bool bcast_init(Bcast *bc, int nda, const int64_t *sha, int ndb, const int64_t *shb, char *why, size_t why_size) {
  memset(bc, 0, sizeof *bc);
  int nd = nda > ndb ? nda : ndb;
  MCM_CHECK(nda >= 1 && ndb >= 1 && nd <= MCM_MAX_DIMS, "bcast_init: ranks %d and %d outside 1..%d", nda, ndb,
            MCM_MAX_DIMS);
  int64_t A[MCM_MAX_DIMS], B[MCM_MAX_DIMS], Y[MCM_MAX_DIMS];
  bc->y_ndim = nd;
  bc->n = 1;
  for (int d = 0; d < nd; d++) {
    int da = d - (nd - nda), db = d - (nd - ndb); /* aligned on the right */
    A[d] = da >= 0 ? sha[da] : 1;
    B[d] = db >= 0 ? shb[db] : 1;
    if (A[d] != B[d] && A[d] != 1 && B[d] != 1) {
      if (why)
        mcm_snprintf(why, why_size, "sizes %lld and %lld at dimension %d (from the right) neither match nor are 1",
                     (long long)A[d], (long long)B[d], d - nd);
      return false;
    }
    Y[d] = A[d] == 1 ? B[d] : A[d];
    bc->y_shape[d] = Y[d];
    bc->n *= Y[d];
  }
  if (bc->n == 0) { /* nothing to compute: one empty flat dimension */
    bc->ndim = 1;
    bc->sa[0] = bc->sb[0] = bc->sy[0] = 1;
    return true;
  }
  /* Drop y's unit dimensions; merge neighbours in which a and b broadcast alike. */
  bool full_a[MCM_MAX_DIMS], full_b[MCM_MAX_DIMS];
  int k = 0;
  for (int d = 0; d < nd; d++) {
    if (Y[d] == 1) continue;
    bool fa = A[d] == Y[d], fb = B[d] == Y[d];
    if (k > 0 && full_a[k - 1] == fa && full_b[k - 1] == fb) {
      bc->shape[k - 1] *= Y[d];
    } else {
      bc->shape[k] = Y[d];
      full_a[k] = fa, full_b[k] = fb;
      k++;
    }
  }
  if (k == 0) { /* every size is 1 */
    bc->shape[0] = 1;
    full_a[0] = full_b[0] = true;
    k = 1;
  }
  bc->ndim = k;
  int64_t ra = 1, rb = 1, ry = 1;
  for (int d = k - 1; d >= 0; d--) {
    bc->sa[d] = full_a[d] ? ra : 0;
    bc->sb[d] = full_b[d] ? rb : 0;
    bc->sy[d] = ry;
    if (full_a[d]) ra *= bc->shape[d];
    if (full_b[d]) rb *= bc->shape[d];
    ry *= bc->shape[d];
  }
  return true;
}

void bcast_grad_init(BcastGrad *g, const Bcast *bc, int which) {
  memset(g, 0, sizeof *g);
  const int64_t *st = which ? bc->sb : bc->sa, *so = which ? bc->sa : bc->sb;
  g->n = g->m = 1;
  for (int d = 0; d < bc->ndim; d++) {
    if (st[d] != 0) {
      g->k_size[g->nk] = bc->shape[d], g->k_sy[g->nk] = bc->sy[d], g->k_so[g->nk] = so[d];
      g->n *= bc->shape[d];
      g->nk++;
    } else {
      g->r_size[g->nr] = bc->shape[d], g->r_sy[g->nr] = bc->sy[d], g->r_so[g->nr] = so[d];
      g->m *= bc->shape[d];
      g->nr++;
    }
  }
}

/* ---------------------------------------------------------------- CPU reference */

static inline float binary_apply(BinaryOp op, float a, float b) { return op.mul ? a * b : op.alpha * a + op.beta * b; }

void binary_forward_cpu(float *y, const float *a, const float *b, const Bcast *bc, BinaryOp op) {
  int64_t n = bc->n;
  if (bcast_is_flat(bc)) {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) y[i] = binary_apply(op, a[i], b[i]);
    return;
  }
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    int64_t r = i, ia = 0, ib = 0;
    for (int d = bc->ndim - 1; d >= 0; d--) {
      int64_t c = r % bc->shape[d];
      r /= bc->shape[d];
      ia += c * bc->sa[d], ib += c * bc->sb[d];
    }
    y[i] = binary_apply(op, a[ia], b[ib]);
  }
}

/* Offsets of element i of a row-major grid of `nd` dimensions in two strided tensors. */
static inline void unravel2(int64_t i, int nd, const int64_t *size, const int64_t *s0, const int64_t *s1,
                            int64_t *o0, int64_t *o1) {
  *o0 = *o1 = 0;
  for (int d = nd - 1; d >= 0; d--) {
    int64_t c = i % size[d];
    i /= size[d];
    *o0 += c * s0[d], *o1 += c * s1[d];
  }
}

/* dt (g->n) += coef · Σ_j dy[·] (· other[·] when other is not NULL), the sum in double
 * over the reduced dimensions in row-major order. */
static void grad_reduce_cpu(float *dt, const float *dy, const float *other, const BcastGrad *g, float coef) {
#pragma omp parallel for if (g->n * g->m > 65536)
  for (int64_t i = 0; i < g->n; i++) {
    int64_t ky, ko;
    unravel2(i, g->nk, g->k_size, g->k_sy, g->k_so, &ky, &ko);
    double s = 0.0;
    for (int64_t j = 0; j < g->m; j++) {
      int64_t ry, ro;
      unravel2(j, g->nr, g->r_size, g->r_sy, g->r_so, &ry, &ro);
      s += other ? (double)dy[ky + ry] * other[ko + ro] : dy[ky + ry];
    }
    dt[i] += (float)(coef * s);
  }
}

void binary_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, const Bcast *bc,
                         BinaryOp op) {
  if (bcast_is_flat(bc)) {
    int64_t n = bc->n;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
      if (da) da[i] += op.mul ? b[i] * dy[i] : op.alpha * dy[i];
      if (db) db[i] += op.mul ? a[i] * dy[i] : op.beta * dy[i];
    }
    return;
  }
  BcastGrad g;
  if (da) {
    bcast_grad_init(&g, bc, 0);
    grad_reduce_cpu(da, dy, op.mul ? b : NULL, &g, op.mul ? 1.0f : op.alpha);
  }
  if (db) {
    bcast_grad_init(&g, bc, 1);
    grad_reduce_cpu(db, dy, op.mul ? a : NULL, &g, op.mul ? 1.0f : op.beta);
  }
}

void scale_cpu(float *y, const float *a, float s, int64_t n, bool accumulate) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) y[i] = (accumulate ? y[i] : 0.0f) + s * a[i];
}

/* ---------------------------------------------------------------- ops and tape */

/* The GPU kernels take fp32 or bf16 (elementwise.cu); the CPU widens bf16 (cpu_bf16.h). */
static void check_float_dtype(const char *op, const char *arg, const Tensor *t) {
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, arg,
            dtype_name(t->dtype));
}

typedef struct {
  BinaryOp op;
  float s;
} ElemSaved;

static Bcast binary_plan(const char *name, const Tensor *a, const Tensor *b) {
  Bcast bc;
  char why[160];
  if (!bcast_init(&bc, a->ndim, a->shape, b->ndim, b->shape, why, sizeof why))
    MCM_FATAL("%s: a has shape %s and b has shape %s, which do not broadcast: %s", name, TENSOR_SHAPE_STR(a),
              TENSOR_SHAPE_STR(b), why);
  return bc;
}

static void binary_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *b = node->in[1], *dy = node->out->grad;
  BinaryOp op = ((ElemSaved *)node->saved)->op;
  Tensor *da = a->requires_grad ? grad_of(ctx, a) : NULL;
  Tensor *db = b->requires_grad ? grad_of(ctx, b) : NULL;
  Bcast bc = binary_plan(node->op, a, b);
  ON_DEVICE(ctx,
            CPU_REF((da, db, dy, a, b), binary_backward_cpu(da ? da->data : NULL, db ? db->data : NULL, dy->data,
                                                            a->data, b->data, &bc, op)),
            binary_backward_cuda(ctx, da, db, dy, a, b, op));
}

static Tensor *binary_run(Ctx *ctx, Tensor *a, Tensor *b, const char *name, BinaryOp op) {
  MCM_CHECK(a->dtype == b->dtype, "%s: dtypes %s and %s differ", name, dtype_name(a->dtype), dtype_name(b->dtype));
  check_float_dtype(name, "a", a);
  Bcast bc = binary_plan(name, a, b);
  Tensor *y = tensor_new(ctx, a->dtype, bc.y_ndim, bc.y_shape);
  ON_DEVICE(ctx, CPU_REF((y, a, b), binary_forward_cpu(y->data, a->data, b->data, &bc, op)),
            binary_forward_cuda(ctx, y, a, b, op));
  Tensor *in[2] = {a, b};
  if (tape_wants(ctx, 2, in)) {
    TapeNode *node = tape_record(ctx, name, binary_backward, y, 2, in, sizeof(ElemSaved));
    ((ElemSaved *)node->saved)->op = op;
  }
  return y;
}

Tensor *op_binary(Ctx *ctx, Tensor *a, Tensor *b, Binary kind) {
  MCM_CHECK((unsigned)kind <= BIN_MUL, "op_binary: unknown kind %d", (int)kind);
  return binary_run(ctx, a, b, binary_name(kind), binary_op(kind));
}

Tensor *op_add_scaled(Ctx *ctx, Tensor *a, Tensor *b, float alpha, float beta) {
  return binary_run(ctx, a, b, "add_scaled", (BinaryOp){false, alpha, beta});
}

static void scale_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *da = grad_of(ctx, a);
  float s = ((ElemSaved *)node->saved)->s;
  ON_DEVICE(ctx, CPU_REF((da, node->out->grad), scale_cpu(da->data, node->out->grad->data, s, a->numel, true)),
            scale_cuda(ctx, da, node->out->grad, s, true));
}

Tensor *op_scale(Ctx *ctx, Tensor *a, float s) {
  check_float_dtype("scale", "a", a);
  Tensor *y = tensor_like(ctx, a);
  ON_DEVICE(ctx, CPU_REF((y, a), scale_cpu(y->data, a->data, s, a->numel, false)), scale_cuda(ctx, y, a, s, false));
  if (tape_wants(ctx, 1, &a)) {
    TapeNode *node = tape_record(ctx, "scale", scale_backward, y, 1, &a, sizeof(ElemSaved));
    ((ElemSaved *)node->saved)->s = s;
  }
  return y;
}
