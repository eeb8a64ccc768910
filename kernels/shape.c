/* Shape ops (see shape.h). */
#include "shape.h"

#include "cuda_api.h"
#include "elementwise.h"

static void reshape_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  ON_DEVICE(ctx, scale_cpu(dx->data, dy->data, 1.0f, x->numel, true), scale_cuda(ctx, dx, dy, 1.0f, true));
}

Tensor *op_reshape(Ctx *ctx, Tensor *x, int ndim, const int64_t *shape) {
  int64_t n = shape_numel(ndim, shape);
  MCM_CHECK(n == x->numel, "reshape: %s has %lld elements, the new shape %s has %lld", TENSOR_SHAPE_STR(x),
            (long long)x->numel, shape_str((char[96]){0}, 96, ndim, shape), (long long)n);
  Tensor *y = ctx_alloc_host(ctx, sizeof *y);
  tensor_init_header(y, x->dtype, x->dev, ndim, shape);
  y->data = x->data;
  if (tape_wants(ctx, 1, &x)) tape_record(ctx, "reshape", reshape_backward, y, 1, &x, 0);
  return y;
}
