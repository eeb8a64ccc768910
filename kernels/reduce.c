/* Reductions and losses: CPU reference, dispatch and tape (see reduce.h). */
#include "reduce.h"

#include "cpu_bf16.h"
#include "cuda_api.h"
#include "shape.h"

double sum_cpu(const float *x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  return s;
}

double sq_diff_sum_cpu(const float *a, const float *b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    s += d * d;
  }
  return s;
}

/* dx (n) += g, the scaled fp32 scalar gradient. */
static void sum_backward_cpu(float *dx, int64_t n, float g) {
  for (int64_t i = 0; i < n; i++) dx[i] += g;
}

/* da (n) += g·(a − b), db (n) −= the same; either may be NULL. */
static void mse_backward_cpu(float *da, float *db, const float *a, const float *b, int64_t n, float g) {
  for (int64_t i = 0; i < n; i++) {
    float d = g * (a[i] - b[i]);
    if (da) da[i] += d;
    if (db) db[i] -= d;
  }
}

/* The GPU kernels take fp32 or bf16 (reduce.cu); the CPU widens bf16 (cpu_bf16.h). */
static void check_float_dtype(const char *op, const char *arg, const Tensor *t) {
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, arg,
            dtype_name(t->dtype));
}

typedef struct {
  float scale;
} ReduceSaved;

/* dy is the fp32 scalar of the forward. */
static void sum_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  float scale = ((ReduceSaved *)node->saved)->scale;
  ON_DEVICE(ctx, CPU_REF((dx), sum_backward_cpu(dx->data, x->numel, scale * ((float *)dy->data)[0])),
            sum_backward_cuda(ctx, dx, dy, scale));
}

/* The scalar is fp32 whatever x's dtype (reduce.cu). */
static Tensor *scaled_sum(Ctx *ctx, Tensor *x, float scale, const char *name) {
  check_float_dtype(name, "x", x);
  Tensor *y = tensor_new(ctx, DT_F32, SHAPE(1));
  ON_DEVICE(ctx, CPU_REF((x), ((float *)y->data)[0] = (float)(scale * sum_cpu(x->data, x->numel))),
            sum_cuda(ctx, y, x, scale));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, name, sum_backward, y, 1, &x, sizeof(ReduceSaved));
    ((ReduceSaved *)node->saved)->scale = scale;
  }
  return y;
}

Tensor *op_sum(Ctx *ctx, Tensor *x) { return scaled_sum(ctx, x, 1.0f, "sum"); }
Tensor *op_mean(Ctx *ctx, Tensor *x) { return scaled_sum(ctx, x, 1.0f / (float)x->numel, "mean"); }

static void mse_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *b = node->in[1], *dy = node->out->grad;
  Tensor *da = a->requires_grad ? grad_of(ctx, a) : NULL;
  Tensor *db = b->requires_grad ? grad_of(ctx, b) : NULL;
  float k = 2.0f / (float)a->numel;
  ON_DEVICE(ctx,
            CPU_REF((da, db, a, b), mse_backward_cpu(da ? da->data : NULL, db ? db->data : NULL, a->data, b->data,
                                                     a->numel, k * ((float *)dy->data)[0])),
            sq_diff_backward_cuda(ctx, da, db, dy, a, b, k));
}

Tensor *op_mse(Ctx *ctx, Tensor *a, Tensor *b) {
  CHECK_SAME_SHAPE("mse", a, b);
  MCM_CHECK(a->dtype == b->dtype, "mse: dtypes %s and %s differ", dtype_name(a->dtype), dtype_name(b->dtype));
  check_float_dtype("mse", "a", a);
  Tensor *y = tensor_new(ctx, DT_F32, SHAPE(1));
  float scale = 1.0f / (float)a->numel;
  ON_DEVICE(ctx, CPU_REF((a, b), ((float *)y->data)[0] = (float)(scale * sq_diff_sum_cpu(a->data, b->data, a->numel))),
            sq_diff_sum_cuda(ctx, y, a, b, scale));
  Tensor *in[2] = {a, b};
  if (tape_wants(ctx, 2, in)) tape_record(ctx, "mse", mse_backward, y, 2, in, 0);
  return y;
}

/* ------------------------------------------------------------------ along one dim */

void sum_dim_forward_cpu(float *y, const float *x, int64_t outer, int64_t R, int64_t inner, float scale) {
#pragma omp parallel for collapse(2) if (outer * R * inner > 65536)
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *xo = x + o * R * inner + i;
      double s = 0.0;
      for (int64_t r = 0; r < R; r++) s += xo[r * inner];
      y[o * inner + i] = (float)(scale * s);
    }
}

void sum_dim_backward_cpu(float *dx, const float *dy, int64_t outer, int64_t R, int64_t inner, float scale) {
#pragma omp parallel for collapse(2) if (outer * R * inner > 65536)
  for (int64_t o = 0; o < outer; o++)
    for (int64_t r = 0; r < R; r++) {
      float *d = dx + (o * R + r) * inner;
      const float *g = dy + o * inner;
      for (int64_t i = 0; i < inner; i++) d[i] += scale * g[i];
    }
}

typedef struct {
  int dim;
  float scale;
} DimSaved;

static void sum_dim_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  DimSaved *s = node->saved;
  int64_t outer, R, inner;
  shape_split(x, s->dim, &outer, &R, &inner);
  ON_DEVICE(ctx, CPU_REF((dx, dy), sum_dim_backward_cpu(dx->data, dy->data, outer, R, inner, s->scale)),
            sum_dim_backward_cuda(ctx, dx, dy, s->dim, s->scale));
}

static Tensor *scaled_sum_dim(Ctx *ctx, Tensor *x, int dim, bool keepdim, bool mean, const char *name) {
  dim = shape_norm_dim(name, dim, x->ndim);
  check_float_dtype(name, "x", x);
  int64_t outer, R, inner, shape[MCM_MAX_DIMS];
  shape_split(x, dim, &outer, &R, &inner);
  MCM_CHECK(!mean || R > 0, "%s: dim %d of x %s is empty; its mean is undefined", name, dim, TENSOR_SHAPE_STR(x));
  float scale = mean ? 1.0f / (float)R : 1.0f;
  int ndim = 0;
  for (int d = 0; d < x->ndim; d++)
    if (d != dim) shape[ndim++] = x->shape[d];
    else if (keepdim) shape[ndim++] = 1;
  if (ndim == 0) shape[ndim++] = 1; /* a rank-1 x reduces to (1), not to a rank-0 tensor */
  Tensor *y = tensor_new(ctx, x->dtype, ndim, shape);
  ON_DEVICE(ctx, CPU_REF((y, x), sum_dim_forward_cpu(y->data, x->data, outer, R, inner, scale)),
            sum_dim_forward_cuda(ctx, y, x, dim, scale));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, name, sum_dim_backward, y, 1, &x, sizeof(DimSaved));
    ((DimSaved *)node->saved)->dim = dim;
    ((DimSaved *)node->saved)->scale = scale;
  }
  return y;
}

Tensor *op_sum_dim(Ctx *ctx, Tensor *x, int dim, bool keepdim) {
  return scaled_sum_dim(ctx, x, dim, keepdim, false, "sum_dim");
}
Tensor *op_mean_dim(Ctx *ctx, Tensor *x, int dim, bool keepdim) {
  return scaled_sum_dim(ctx, x, dim, keepdim, true, "mean_dim");
}
