/* Unary math, division and the fused losses: CPU reference, dispatch and tape (see
 * math.h). */
#include "math.h"

#include <math.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

const char *unary_name(Unary u) {
  static const char *names[UNARY_COUNT] = {"exp", "log", "sqrt", "square", "abs", "clamp"};
  return (unsigned)u < UNARY_COUNT ? names[u] : "unknown-unary";
}

/* ---------------------------------------------------------------- CPU reference */

/* The comparisons are written so that NaN falls through to x in the clamp. */
static float unary_value(float v, Unary u, float lo, float hi) {
  switch (u) {
    case UN_EXP: return expf(v);
    case UN_LOG: return logf(v);
    case UN_SQRT: return sqrtf(v);
    case UN_SQUARE: return v * v;
    case UN_ABS: return fabsf(v);
    case UN_CLAMP: return v < lo ? lo : v > hi ? hi : v;
  }
  return 0.0f;
}

/* f'(x)·dy, in the order PyTorch's autograd formulas evaluate it. */
static float unary_grad(float v, float g, Unary u, float lo, float hi) {
  switch (u) {
    case UN_EXP: return g * expf(v);
    case UN_LOG: return g / v;
    case UN_SQRT: return g / (2.0f * sqrtf(v));
    case UN_SQUARE: return g * (2.0f * v);
    case UN_ABS: return v > 0.0f ? g : v < 0.0f ? -g : 0.0f;
    case UN_CLAMP: return v > lo && v < hi ? g : 0.0f;
  }
  return 0.0f;
}

void unary_forward_cpu(float *y, const float *x, int64_t n, Unary u, float lo, float hi) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) y[i] = unary_value(x[i], u, lo, hi);
}

void unary_backward_cpu(float *dx, const float *dy, const float *x, int64_t n, Unary u, float lo, float hi) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) dx[i] += unary_grad(x[i], dy[i], u, lo, hi);
}

/* Offsets of element i of a row-major grid of nd dimensions in two strided tensors. */
static inline void unravel2(int64_t i, int nd, const int64_t *size, const int64_t *s0, const int64_t *s1,
                            int64_t *o0, int64_t *o1) {
  *o0 = *o1 = 0;
  for (int d = nd - 1; d >= 0; d--) {
    int64_t c = i % size[d];
    i /= size[d];
    *o0 += c * s0[d], *o1 += c * s1[d];
  }
}

void div_forward_cpu(float *y, const float *a, const float *b, const Bcast *bc) {
  int64_t n = bc->n;
  if (bcast_is_flat(bc)) {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] / b[i];
    return;
  }
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    int64_t ia, ib;
    unravel2(i, bc->ndim, bc->shape, bc->sa, bc->sb, &ia, &ib);
    y[i] = a[ia] / b[ib];
  }
}

/* da (g->n) += Σ_j dy / b, the sum in double over a's broadcast dimensions (b is the
 * "other" operand of g). */
static void div_grad_a_cpu(float *da, const float *dy, const float *b, const BcastGrad *g) {
#pragma omp parallel for if (g->n * g->m > 65536)
  for (int64_t i = 0; i < g->n; i++) {
    int64_t ky, ko;
    unravel2(i, g->nk, g->k_size, g->k_sy, g->k_so, &ky, &ko);
    double s = 0.0;
    for (int64_t j = 0; j < g->m; j++) {
      int64_t ry, ro;
      unravel2(j, g->nr, g->r_size, g->r_sy, g->r_so, &ry, &ro);
      s += (double)dy[ky + ry] / b[ko + ro];
    }
    da[i] += (float)s;
  }
}

/* db (g->n) += −(Σ_j dy·a) / b², b constant over its broadcast dimensions (a is "other"). */
static void div_grad_b_cpu(float *db, const float *dy, const float *a, const float *b, const BcastGrad *g) {
#pragma omp parallel for if (g->n * g->m > 65536)
  for (int64_t i = 0; i < g->n; i++) {
    int64_t ky, ko;
    unravel2(i, g->nk, g->k_size, g->k_sy, g->k_so, &ky, &ko);
    double s = 0.0;
    for (int64_t j = 0; j < g->m; j++) {
      int64_t ry, ro;
      unravel2(j, g->nr, g->r_size, g->r_sy, g->r_so, &ry, &ro);
      s += (double)dy[ky + ry] * a[ko + ro];
    }
    db[i] += (float)(-s / ((double)b[i] * b[i]));
  }
}

void div_backward_cpu(float *da, float *db, const float *dy, const float *a, const float *b, const Bcast *bc) {
  if (bcast_is_flat(bc)) { /* torch's formulas, element by element */
    int64_t n = bc->n;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
      if (da) da[i] += dy[i] / b[i];
      if (db) db[i] += -dy[i] * a[i] / (b[i] * b[i]);
    }
    return;
  }
  BcastGrad g;
  if (da) {
    bcast_grad_init(&g, bc, 0);
    div_grad_a_cpu(da, dy, b, &g);
  }
  if (db) {
    bcast_grad_init(&g, bc, 1);
    div_grad_b_cpu(db, dy, a, b, &g);
  }
}

/* √(d² + c²) − c written as d²/(√(d² + c²) + c): equal, and free of cancellation for |d| ≪ c. */
double pseudo_huber_sum_cpu(const float *a, const float *b, int64_t n, float c) {
  double s = 0.0, c2 = (double)c * c;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - b[i], d2 = d * d;
    s += d2 / (sqrt(d2 + c2) + c);
  }
  return s;
}

void pseudo_huber_backward_cpu(float *da, float *db, const float *a, const float *b, int64_t n, float c, float g) {
  double c2 = (double)c * c;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - b[i];
    float v = (float)(g * d / sqrt(d * d + c2));
    if (da) da[i] += v;
    if (db) db[i] -= v;
  }
}

double hinge_sum_cpu(const float *x, int64_t n, float sign) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) {
    float h = 1.0f + sign * x[i];
    if (h > 0.0f) s += h;
  }
  return s;
}

void hinge_backward_cpu(float *dx, const float *x, int64_t n, float sign, float g) {
  float v = g * sign;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++)
    if (1.0f + sign * x[i] > 0.0f) dx[i] += v;
}

/* ---------------------------------------------------------------- unary ops */

/* The GPU kernels take fp32 or bf16 (math.cu); the CPU widens bf16 (cpu_bf16.h). */
static void check_float_dtype(const char *op, const char *arg, const Tensor *t) {
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, arg,
            dtype_name(t->dtype));
}

typedef struct {
  Unary u;
  float lo, hi;
} UnarySaved;

static void unary_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dy = node->out->grad, *dx = grad_of(ctx, x);
  UnarySaved s = *(UnarySaved *)node->saved;
  ON_DEVICE(ctx, CPU_REF((dx, dy, x), unary_backward_cpu(dx->data, dy->data, x->data, x->numel, s.u, s.lo, s.hi)),
            unary_backward_cuda(ctx, dx, dy, x, s.u, s.lo, s.hi));
}

static Tensor *unary_run(Ctx *ctx, Tensor *x, Unary u, float lo, float hi) {
  check_float_dtype(unary_name(u), "x", x);
  Tensor *y = tensor_like(ctx, x);
  ON_DEVICE(ctx, CPU_REF((y, x), unary_forward_cpu(y->data, x->data, x->numel, u, lo, hi)),
            unary_forward_cuda(ctx, y, x, u, lo, hi));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, unary_name(u), unary_backward, y, 1, &x, sizeof(UnarySaved));
    *(UnarySaved *)node->saved = (UnarySaved){u, lo, hi};
  }
  return y;
}

Tensor *op_unary(Ctx *ctx, Tensor *x, Unary u) {
  MCM_CHECK((unsigned)u < UNARY_COUNT, "op_unary: unknown kind %d", (int)u);
  MCM_CHECK(u != UN_CLAMP, "op_unary: clamp needs its bounds (hint: call op_clamp)");
  return unary_run(ctx, x, u, 0.0f, 0.0f);
}

Tensor *op_clamp(Ctx *ctx, Tensor *x, float lo, float hi) {
  MCM_CHECK(!isnan(lo) && !isnan(hi) && lo <= hi, "clamp: bounds [%g, %g]; expected lo <= hi, neither NaN",
            (double)lo, (double)hi);
  return unary_run(ctx, x, UN_CLAMP, lo, hi);
}

/* ---------------------------------------------------------------- division */

static Bcast div_plan(const Tensor *a, const Tensor *b) {
  Bcast bc;
  char why[160];
  if (!bcast_init(&bc, a->ndim, a->shape, b->ndim, b->shape, why, sizeof why))
    MCM_FATAL("div: a has shape %s and b has shape %s, which do not broadcast: %s", TENSOR_SHAPE_STR(a),
              TENSOR_SHAPE_STR(b), why);
  return bc;
}

static void div_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *b = node->in[1], *dy = node->out->grad;
  Tensor *da = a->requires_grad ? grad_of(ctx, a) : NULL;
  Tensor *db = b->requires_grad ? grad_of(ctx, b) : NULL;
  Bcast bc = div_plan(a, b);
  ON_DEVICE(ctx,
            CPU_REF((da, db, dy, a, b),
                    div_backward_cpu(da ? da->data : NULL, db ? db->data : NULL, dy->data, a->data, b->data, &bc)),
            div_backward_cuda(ctx, da, db, dy, a, b));
}

Tensor *op_div(Ctx *ctx, Tensor *a, Tensor *b) {
  MCM_CHECK(a->dtype == b->dtype, "div: dtypes %s and %s differ", dtype_name(a->dtype), dtype_name(b->dtype));
  check_float_dtype("div", "a", a);
  Bcast bc = div_plan(a, b);
  Tensor *y = tensor_new(ctx, a->dtype, bc.y_ndim, bc.y_shape);
  ON_DEVICE(ctx, CPU_REF((y, a, b), div_forward_cpu(y->data, a->data, b->data, &bc)),
            div_forward_cuda(ctx, y, a, b));
  Tensor *in[2] = {a, b};
  if (tape_wants(ctx, 2, in)) tape_record(ctx, "div", div_backward, y, 2, in, 0);
  return y;
}

/* ---------------------------------------------------------------- losses */

typedef struct {
  float param; /* pseudo-Huber's c, the hinge's sign */
} LossSaved;

static void pseudo_huber_backward(Ctx *ctx, TapeNode *node) {
  Tensor *a = node->in[0], *b = node->in[1], *dy = node->out->grad;
  Tensor *da = a->requires_grad ? grad_of(ctx, a) : NULL;
  Tensor *db = b->requires_grad ? grad_of(ctx, b) : NULL;
  float c = ((LossSaved *)node->saved)->param, scale = 1.0f / (float)a->numel;
  ON_DEVICE(ctx,
            CPU_REF((da, db, a, b), pseudo_huber_backward_cpu(da ? da->data : NULL, db ? db->data : NULL, a->data,
                                                              b->data, a->numel, c, scale * ((float *)dy->data)[0])),
            pseudo_huber_backward_cuda(ctx, da, db, dy, a, b, c, scale));
}

Tensor *op_pseudo_huber(Ctx *ctx, Tensor *a, Tensor *b, float c) {
  CHECK_SAME_SHAPE("pseudo_huber", a, b);
  MCM_CHECK(a->dtype == b->dtype, "pseudo_huber: dtypes %s and %s differ", dtype_name(a->dtype),
            dtype_name(b->dtype));
  MCM_CHECK(isfinite(c) && c > 0.0f, "pseudo_huber: c = %g, expected a positive number (hint: c = 0 is the mean "
            "absolute error, op_mean(op_abs(a − b)))", (double)c);
  MCM_CHECK(a->numel > 0, "pseudo_huber: a and b are empty (%s); their mean is undefined", TENSOR_SHAPE_STR(a));
  check_float_dtype("pseudo_huber", "a", a);
  Tensor *y = tensor_new(ctx, DT_F32, SHAPE(1)); /* the loss is fp32 in either dtype (math.cu) */
  float scale = 1.0f / (float)a->numel;
  ON_DEVICE(ctx,
            CPU_REF((a, b),
                    ((float *)y->data)[0] = (float)(scale * pseudo_huber_sum_cpu(a->data, b->data, a->numel, c))),
            pseudo_huber_cuda(ctx, y, a, b, c, scale));
  Tensor *in[2] = {a, b};
  if (tape_wants(ctx, 2, in)) {
    TapeNode *node = tape_record(ctx, "pseudo_huber", pseudo_huber_backward, y, 2, in, sizeof(LossSaved));
    ((LossSaved *)node->saved)->param = c;
  }
  return y;
}

static void hinge_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  float sign = ((LossSaved *)node->saved)->param, scale = 1.0f / (float)x->numel;
  ON_DEVICE(ctx,
            CPU_REF((dx, x), hinge_backward_cpu(dx->data, x->data, x->numel, sign, scale * ((float *)dy->data)[0])),
            hinge_backward_cuda(ctx, dx, dy, x, sign, scale));
}

Tensor *op_hinge(Ctx *ctx, Tensor *x, float sign) {
  MCM_CHECK(sign == 1.0f || sign == -1.0f, "hinge: sign = %g, expected +1 (fake logits) or -1 (real logits)",
            (double)sign);
  MCM_CHECK(x->numel > 0, "hinge: x is empty (%s); its mean is undefined", TENSOR_SHAPE_STR(x));
  check_float_dtype("hinge", "x", x);
  Tensor *y = tensor_new(ctx, DT_F32, SHAPE(1)); /* the loss is fp32 in either dtype (math.cu) */
  float scale = 1.0f / (float)x->numel;
  ON_DEVICE(ctx, CPU_REF((x), ((float *)y->data)[0] = (float)(scale * hinge_sum_cpu(x->data, x->numel, sign))),
            hinge_cuda(ctx, y, x, sign, scale));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, "hinge", hinge_backward, y, 1, &x, sizeof(LossSaved));
    ((LossSaved *)node->saved)->param = sign;
  }
  return y;
}
