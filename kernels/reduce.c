/* Reductions and losses: CPU reference, dispatch and tape (see reduce.h). */
#include "reduce.h"

#include "cuda_api.h"

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

typedef struct {
  float scale;
} ReduceSaved;

static void sum_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  float scale = ((ReduceSaved *)node->saved)->scale;
  if (ctx->dev == DEV_CPU) {
    float g = scale * ((float *)dy->data)[0], *d = dx->data;
    for (int64_t i = 0; i < x->numel; i++) d[i] += g;
    return;
  }
#if MCM_CUDA
  sum_backward_cuda(ctx, dx, dy, scale);
#endif
}

static Tensor *scaled_sum(Ctx *ctx, Tensor *x, float scale, const char *name) {
  if (ctx->dev == DEV_CPU) CHECK_DTYPE(name, x, DT_F32);
  Tensor *y = tensor_new(ctx, DT_F32, SHAPE(1));
  ON_DEVICE(ctx, ((float *)y->data)[0] = (float)(scale * sum_cpu(x->data, x->numel)), sum_cuda(ctx, y, x, scale));
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
  if (ctx->dev == DEV_CPU) {
    float g = k * ((float *)dy->data)[0];
    const float *pa = a->data, *pb = b->data;
    for (int64_t i = 0; i < a->numel; i++) {
      float d = g * (pa[i] - pb[i]);
      if (da) ((float *)da->data)[i] += d;
      if (db) ((float *)db->data)[i] -= d;
    }
    return;
  }
#if MCM_CUDA
  sq_diff_backward_cuda(ctx, da, db, dy, a, b, k);
#endif
}

Tensor *op_mse(Ctx *ctx, Tensor *a, Tensor *b) {
  CHECK_SAME_SHAPE("mse", a, b);
  MCM_CHECK(a->dtype == b->dtype, "mse: dtypes %s and %s differ", dtype_name(a->dtype), dtype_name(b->dtype));
  if (ctx->dev == DEV_CPU) {
    CHECK_DTYPE("mse", a, DT_F32);
    CHECK_DTYPE("mse", b, DT_F32);
  }
  Tensor *y = tensor_new(ctx, DT_F32, SHAPE(1));
  float scale = 1.0f / (float)a->numel;
  ON_DEVICE(ctx, ((float *)y->data)[0] = (float)(scale * sq_diff_sum_cpu(a->data, b->data, a->numel)),
            sq_diff_sum_cuda(ctx, y, a, b, scale));
  Tensor *in[2] = {a, b};
  if (tape_wants(ctx, 2, in)) tape_record(ctx, "mse", mse_backward, y, 2, in, 0);
  return y;
}
