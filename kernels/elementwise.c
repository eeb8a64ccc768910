/* Elementwise arithmetic: CPU reference, dispatch and tape (see elementwise.h). */
#include "elementwise.h"

#include "cuda_api.h"

static const char *binary_name(Binary kind) { return kind == BIN_ADD ? "add" : kind == BIN_SUB ? "sub" : "mul"; }

void binary_forward_cpu(float *y, const float *a, const float *b, int64_t n, Binary kind) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) y[i] = kind == BIN_ADD ? a[i] + b[i] : kind == BIN_SUB ? a[i] - b[i] : a[i] * b[i];
}

void binary_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, int64_t n,
                         Binary kind) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    if (da) da[i] += kind == BIN_MUL ? b[i] * dy[i] : dy[i];
    if (db) db[i] += kind == BIN_MUL ? a[i] * dy[i] : kind == BIN_SUB ? -dy[i] : dy[i];
  }
}

void scale_cpu(float *y, const float *a, float s, int64_t n, bool accumulate) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) y[i] = (accumulate ? y[i] : 0.0f) + s * a[i];
}

typedef struct {
  Binary kind;
  float s;
} ElemSaved;

static void binary_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *b = node->in[1], *dy = node->out->grad;
  Binary kind = ((ElemSaved *)node->saved)->kind;
  Tensor *da = a->requires_grad ? grad_of(ctx, a) : NULL;
  Tensor *db = b->requires_grad ? grad_of(ctx, b) : NULL;
  ON_DEVICE(ctx,
            binary_backward_cpu(da ? da->data : NULL, db ? db->data : NULL, dy->data, a->data, b->data, a->numel, kind),
            binary_backward_cuda(ctx, da, db, dy, a, b, kind));
}

Tensor *op_binary(Ctx *ctx, Tensor *a, Tensor *b, Binary kind) {
  CHECK_SAME_SHAPE(binary_name(kind), a, b);
  MCM_CHECK(a->dtype == b->dtype, "%s: dtypes %s and %s differ", binary_name(kind), dtype_name(a->dtype),
            dtype_name(b->dtype));
  if (ctx->dev == DEV_CPU) CHECK_DTYPE(binary_name(kind), a, DT_F32);
  Tensor *y = tensor_like(ctx, a);
  ON_DEVICE(ctx, binary_forward_cpu(y->data, a->data, b->data, a->numel, kind),
            binary_forward_cuda(ctx, y, a, b, kind));
  Tensor *in[2] = {a, b};
  if (tape_wants(ctx, 2, in)) {
    TapeNode *node = tape_record(ctx, binary_name(kind), binary_backward, y, 2, in, sizeof(ElemSaved));
    ((ElemSaved *)node->saved)->kind = kind;
  }
  return y;
}

static void scale_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *da = grad_of(ctx, a);
  float s = ((ElemSaved *)node->saved)->s;
  ON_DEVICE(ctx, scale_cpu(da->data, node->out->grad->data, s, a->numel, true),
            scale_cuda(ctx, da, node->out->grad, s, true));
}

Tensor *op_scale(Ctx *ctx, Tensor *a, float s) {
  if (ctx->dev == DEV_CPU) CHECK_DTYPE("scale", a, DT_F32);
  Tensor *y = tensor_like(ctx, a);
  ON_DEVICE(ctx, scale_cpu(y->data, a->data, s, a->numel, false), scale_cuda(ctx, y, a, s, false));
  if (tape_wants(ctx, 1, &a)) {
    TapeNode *node = tape_record(ctx, "scale", scale_backward, y, 1, &a, sizeof(ElemSaved));
    ((ElemSaved *)node->saved)->s = s;
  }
  return y;
}
