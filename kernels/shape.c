/* Shape ops: CPU reference, dispatch and tape (see shape.h). */
#include "shape.h"

#include "cpu_bf16.h"
#include "cuda_api.h"
#include "elementwise.h"

/* ------------------------------------------------------------------ helpers */

int shape_norm_dim(const char *op, int dim, int ndim) {
  MCM_CHECK(dim >= -ndim && dim < ndim, "%s: dim %d is out of range for a tensor of rank %d (expected %d..%d)", op, dim,
            ndim, -ndim, ndim - 1);
  return dim < 0 ? dim + ndim : dim;
}

void shape_split(const Tensor *x, int dim, int64_t *outer, int64_t *size, int64_t *inner) {
  *outer = shape_numel(dim, x->shape);
  *size = x->shape[dim];
  *inner = shape_numel(x->ndim - dim - 1, x->shape + dim + 1);
}

/* Row-major strides of a shape, in elements. */
static void strides_of(int ndim, const int64_t *shape, int64_t *stride) {
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; d--) stride[d] = s, s *= shape[d];
}

/* The copy kernels move fp32 or bf16 elements (shape.cu). */
static void check_float(const char *op, const char *arg, const Tensor *t) {
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s %s is %s, expected fp32 or bf16", op, arg,
            TENSOR_SHAPE_STR(t), dtype_name(t->dtype));
}

static void *elem_ptr(const Tensor *t, int64_t offset) {
  return (char *)t->data + (size_t)offset * dtype_size(t->dtype);
}

/* ------------------------------------------------------------------ CPU reference */

void copy_rows_cpu(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t rows, int64_t width,
                   bool accumulate) {
#pragma omp parallel for if (rows * width > 65536)
  for (int64_t r = 0; r < rows; r++) {
    float *d = dst + r * dst_stride;
    const float *s = src + r * src_stride;
    if (accumulate)
      for (int64_t j = 0; j < width; j++) d[j] += s[j];
    else
      memcpy(d, s, (size_t)width * sizeof(float));
  }
}

/* The offset in x of output element i of x.permute(perm). */
static int64_t permuted_offset(int64_t i, int ndim, const int64_t *y_shape, const int64_t *x_stride, const int *perm) {
  int64_t off = 0;
  for (int k = ndim - 1; k >= 0; k--) {
    off += (i % y_shape[k]) * x_stride[perm[k]];
    i /= y_shape[k];
  }
  return off;
}

void permute_forward_cpu(float *y, const float *x, int ndim, const int64_t *x_shape, const int *perm) {
  int64_t x_stride[MCM_MAX_DIMS], y_shape[MCM_MAX_DIMS];
  strides_of(ndim, x_shape, x_stride);
  for (int k = 0; k < ndim; k++) y_shape[k] = x_shape[perm[k]];
  int64_t n = shape_numel(ndim, x_shape);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) y[i] = x[permuted_offset(i, ndim, y_shape, x_stride, perm)];
}

void permute_backward_cpu(float *dx, const float *dy, int ndim, const int64_t *x_shape, const int *perm) {
  int64_t x_stride[MCM_MAX_DIMS], y_shape[MCM_MAX_DIMS];
  strides_of(ndim, x_shape, x_stride);
  for (int k = 0; k < ndim; k++) y_shape[k] = x_shape[perm[k]];
  int64_t n = shape_numel(ndim, x_shape);
  /* A bijection: every dx element is written by exactly one i, so the loop has no races. */
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) dx[permuted_offset(i, ndim, y_shape, x_stride, perm)] += dy[i];
}

int permute_collapse(int ndim, const int64_t *x_shape, const int *perm, int64_t *shape_out, int *perm_out) {
  /* Number the input dims of size ≠ 1 in input order; list them in output order (q). */
  int id[MCM_MAX_DIMS], q[MCM_MAX_DIMS], m = 0, nq = 0;
  int64_t size[MCM_MAX_DIMS];
  for (int d = 0; d < ndim; d++) {
    id[d] = x_shape[d] == 1 ? -1 : m;
    if (x_shape[d] != 1) size[m++] = x_shape[d];
  }
  for (int k = 0; k < ndim; k++)
    if (id[perm[k]] >= 0) q[nq++] = id[perm[k]];
  /* Groups: maximal runs of q that are consecutive input dims, in output order. */
  int first[MCM_MAX_DIMS], ng = 0;
  int64_t gsize[MCM_MAX_DIMS];
  for (int k = 0; k < nq; k++) {
    if (k > 0 && q[k] == q[k - 1] + 1) {
      gsize[ng - 1] *= size[q[k]];
    } else {
      first[ng] = q[k];
      gsize[ng++] = size[q[k]];
    }
  }
  /* A group's place among the merged input dims is its rank by first input dim. */
  for (int g = 0; g < ng; g++) {
    int rank = 0;
    for (int h = 0; h < ng; h++) rank += first[h] < first[g];
    shape_out[rank] = gsize[g];
    perm_out[g] = rank;
  }
  return ng;
}

/* ------------------------------------------------------------------ reshape */

static void reshape_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  ON_DEVICE(ctx, CPU_REF((dx, dy), scale_cpu(dx->data, dy->data, 1.0f, x->numel, true)),
            scale_cuda(ctx, dx, dy, 1.0f, true));
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

/* ------------------------------------------------------------------ concat */

typedef struct {
  int dim;
  int64_t start;
  int perm[MCM_MAX_DIMS];
} ShapeSaved;

/* Splits dy (outer, Σ size_i · inner) back into the inputs' row windows. */
static void concat_backward(Ctx *ctx, TapeNode *node) {
  Tensor *y = node->out, *dy = y->grad;
  int dim = ((ShapeSaved *)node->saved)->dim;
  int64_t outer, size, inner, off = 0;
  shape_split(y, dim, &outer, &size, &inner);
  int64_t W = size * inner; /* a row of y */
  for (int i = 0; i < node->n_in; i++) {
    Tensor *x = node->in[i];
    int64_t w = x->shape[dim] * inner; /* a row of x */
    if (x->requires_grad) {
      Tensor *dx = grad_of(ctx, x);
      ON_DEVICE(ctx, CPU_REF((dx, dy), copy_rows_cpu(dx->data, w, (const float *)dy->data + off, W, outer, w, true)),
                copy_rows_cuda(ctx, dx, 0, w, dy, off, W, outer, w, true));
    }
    off += w;
  }
}

Tensor *op_concat(Ctx *ctx, Tensor *const *xs, int n, int dim) {
  MCM_CHECK(n >= 1, "concat: needs at least one tensor, got %d", n);
  const Tensor *x0 = xs[0];
  dim = shape_norm_dim("concat", dim, x0->ndim);
  check_float("concat", "xs[0]", x0);
  int64_t shape[MCM_MAX_DIMS];
  memcpy(shape, x0->shape, sizeof shape);
  shape[dim] = 0;
  for (int i = 0; i < n; i++) {
    const Tensor *x = xs[i];
    bool same = x->ndim == x0->ndim;
    for (int d = 0; same && d < x0->ndim; d++) same = d == dim || x->shape[d] == x0->shape[d];
    MCM_CHECK(same, "concat: xs[%d] has shape %s and xs[0] %s; they must agree except along dim %d", i,
              TENSOR_SHAPE_STR(x), TENSOR_SHAPE_STR(x0), dim);
    MCM_CHECK(x->dtype == x0->dtype, "concat: xs[%d] is %s, xs[0] is %s; one dtype, fp32 or bf16", i,
              dtype_name(x->dtype), dtype_name(x0->dtype));
    shape[dim] += x->shape[dim];
  }
  /* The tape holds at most TAPE_MAX_IN inputs per node: concatenate groups first. */
  if (n > TAPE_MAX_IN && tape_wants(ctx, n, xs)) {
    Tensor *parts[TAPE_MAX_IN];
    int per = (n + TAPE_MAX_IN - 1) / TAPE_MAX_IN, np = 0;
    for (int i = 0; i < n; i += per) {
      int m = n - i < per ? n - i : per;
      parts[np++] = m == 1 ? xs[i] : op_concat(ctx, xs + i, m, dim);
    }
    return op_concat(ctx, parts, np, dim);
  }
  Tensor *y = tensor_new(ctx, x0->dtype, x0->ndim, shape);
  int64_t outer, size, inner, off = 0;
  shape_split(y, dim, &outer, &size, &inner);
  int64_t W = size * inner;
  for (int i = 0; i < n; i++) {
    int64_t w = xs[i]->shape[dim] * inner;
    ON_DEVICE(ctx, CPU_REF((y, xs[i]), copy_rows_cpu((float *)y->data + off, W, xs[i]->data, w, outer, w, false)),
              copy_rows_cuda(ctx, y, off, W, xs[i], 0, w, outer, w, false));
    off += w;
  }
  if (tape_wants(ctx, n, xs)) {
    TapeNode *node = tape_record(ctx, "concat", concat_backward, y, n, xs, sizeof(ShapeSaved));
    ((ShapeSaved *)node->saved)->dim = dim;
  }
  return y;
}

/* ------------------------------------------------------------------ slice */

/* dx[..., start:start+len, ...] += dy */
static void slice_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  ShapeSaved *s = node->saved;
  int64_t outer, size, inner, len = node->out->shape[s->dim];
  shape_split(x, s->dim, &outer, &size, &inner);
  ON_DEVICE(ctx,
            CPU_REF((dx, dy), copy_rows_cpu((float *)dx->data + s->start * inner, size * inner, dy->data, len * inner,
                                            outer, len * inner, true)),
            copy_rows_cuda(ctx, dx, s->start * inner, size * inner, dy, 0, len * inner, outer, len * inner, true));
}

Tensor *op_slice(Ctx *ctx, Tensor *x, int dim, int64_t start, int64_t len) {
  dim = shape_norm_dim("slice", dim, x->ndim);
  MCM_CHECK(start >= 0 && len >= 0 && start + len <= x->shape[dim],
            "slice: the window [%lld, %lld) along dim %d lies outside x %s", (long long)start,
            (long long)(start + len), dim, TENSOR_SHAPE_STR(x));
  check_float("slice", "x", x);
  int64_t shape[MCM_MAX_DIMS], outer, size, inner;
  memcpy(shape, x->shape, sizeof shape);
  shape[dim] = len;
  shape_split(x, dim, &outer, &size, &inner);
  Tensor *y;
  if (outer == 1) { /* one contiguous block: share x's data */
    y = ctx_alloc_host(ctx, sizeof *y);
    tensor_init_header(y, x->dtype, x->dev, x->ndim, shape);
    y->data = elem_ptr(x, start * inner);
  } else {
    y = tensor_new(ctx, x->dtype, x->ndim, shape);
    ON_DEVICE(ctx,
              CPU_REF((y, x), copy_rows_cpu(y->data, len * inner, (const float *)x->data + start * inner, size * inner,
                                            outer, len * inner, false)),
              copy_rows_cuda(ctx, y, 0, len * inner, x, start * inner, size * inner, outer, len * inner, false));
  }
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, "slice", slice_backward, y, 1, &x, sizeof(ShapeSaved));
    ((ShapeSaved *)node->saved)->dim = dim;
    ((ShapeSaved *)node->saved)->start = start;
  }
  return y;
}

/* ------------------------------------------------------------------ permute */

static void permute_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  const int *perm = ((ShapeSaved *)node->saved)->perm;
  ON_DEVICE(ctx, CPU_REF((dx, dy), permute_backward_cpu(dx->data, dy->data, x->ndim, x->shape, perm)),
            permute_backward_cuda(ctx, dx, dy, perm));
}

Tensor *op_permute(Ctx *ctx, Tensor *x, const int *perm) {
  bool seen[MCM_MAX_DIMS] = {false}, ok = true;
  for (int k = 0; k < x->ndim; k++) {
    ok = ok && perm[k] >= 0 && perm[k] < x->ndim && !seen[perm[k]];
    if (ok) seen[perm[k]] = true;
  }
  if (!ok) {
    char buf[128];
    int len = 0;
    for (int k = 0; k < x->ndim; k++) len += snprintf(buf + len, sizeof buf - (size_t)len, k ? ", %d" : "%d", perm[k]);
    MCM_FATAL("permute: (%s) is not a permutation of the %d dims of x %s", buf, x->ndim, TENSOR_SHAPE_STR(x));
  }
  check_float("permute", "x", x);
  int64_t shape[MCM_MAX_DIMS];
  for (int k = 0; k < x->ndim; k++) shape[k] = x->shape[perm[k]];
  Tensor *y = tensor_new(ctx, x->dtype, x->ndim, shape);
  ON_DEVICE(ctx, CPU_REF((y, x), permute_forward_cpu(y->data, x->data, x->ndim, x->shape, perm)),
            permute_forward_cuda(ctx, y, x, perm));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, "permute", permute_backward, y, 1, &x, sizeof(ShapeSaved));
    memcpy(((ShapeSaved *)node->saved)->perm, perm, (size_t)x->ndim * sizeof(int));
  }
  return y;
}

Tensor *op_transpose_last2(Ctx *ctx, Tensor *x) {
  MCM_CHECK(x->ndim >= 2, "transpose_last2: x %s needs at least 2 dims", TENSOR_SHAPE_STR(x));
  int perm[MCM_MAX_DIMS];
  for (int k = 0; k < x->ndim; k++) perm[k] = k;
  perm[x->ndim - 2] = x->ndim - 1;
  perm[x->ndim - 1] = x->ndim - 2;
  return op_permute(ctx, x, perm);
}

/* ------------------------------------------------------------------ cast */

/* dx += dy in x's dtype. dy is converted first, then added by the accumulating row copy, on
 * both devices: two roundings when x is bf16 (dy to bf16, then the sum), the same on the GPU. */
static void cast_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  Tensor *g = tensor_like(ctx, dx);
  tensor_copy(ctx, g, dy);
  int64_t n = x->numel;
  ON_DEVICE(ctx, CPU_REF((dx, g), copy_rows_cpu(dx->data, n, g->data, n, 1, n, true)),
            copy_rows_cuda(ctx, dx, 0, n, g, 0, n, 1, n, true));
}

Tensor *op_cast(Ctx *ctx, Tensor *x, DType dt) {
  if (x->dtype == dt) return x;
  MCM_CHECK((x->dtype == DT_F32 || x->dtype == DT_BF16) && (dt == DT_F32 || dt == DT_BF16),
            "cast: x %s is %s, the target %s; only fp32 <-> bf16", TENSOR_SHAPE_STR(x), dtype_name(x->dtype),
            dtype_name(dt));
  Tensor *y = tensor_new(ctx, dt, x->ndim, x->shape);
  tensor_copy(ctx, y, x); /* to nearest, ties to even */
  if (tape_wants(ctx, 1, &x)) tape_record(ctx, "cast", cast_backward, y, 1, &x, 0);
  return y;
}
