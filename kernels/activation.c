/* Activations: CPU reference, dispatch and tape (see activation.h). */
#include "activation.h"

#include <math.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

const char *act_name(Act act) {
  static const char *names[ACT_COUNT] = {"silu", "relu", "tanh", "gelu", "leaky_relu"};
  return (unsigned)act < ACT_COUNT ? names[act] : "unknown-activation";
}

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

static float gelu_value(float v) { return 0.5f * v * (1.0f + erff(v * INV_SQRT2)); }

/* d/dx [x·Φ(x)] = Φ(x) + x·φ(x), Φ the normal CDF, φ its density. */
static float gelu_grad(float v) {
  float cdf = 0.5f * (1.0f + erff(v * INV_SQRT2));
  return cdf + v * INV_SQRT_2PI * expf(-0.5f * v * v);
}

static float act_value(float v, Act act, float slope) {
  switch (act) {
    case ACT_SILU: return v / (1.0f + expf(-v));
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    case ACT_TANH: return tanhf(v);
    case ACT_GELU: return gelu_value(v);
    case ACT_LEAKY_RELU: return v > 0.0f ? v : slope * v;
  }
  return 0.0f;
}

static float act_grad(float v, Act act, float slope) {
  switch (act) {
    case ACT_SILU: {
      float s = 1.0f / (1.0f + expf(-v));
      return s * (1.0f + v * (1.0f - s));
    }
    case ACT_RELU: return v > 0.0f ? 1.0f : 0.0f;
    case ACT_TANH: {
      float t = tanhf(v);
      return 1.0f - t * t;
    }
    case ACT_GELU: return gelu_grad(v);
    case ACT_LEAKY_RELU: return v > 0.0f ? 1.0f : slope;
  }
  return 0.0f;
}

void act_forward_cpu(float *y, const float *x, int64_t n, Act act, float slope) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) y[i] = act_value(x[i], act, slope);
}

void act_backward_cpu(float *dx, const float *dy, const float *x, int64_t n, Act act, float slope) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) dx[i] += act_grad(x[i], act, slope) * dy[i];
}

void geglu_forward_cpu(float *y, const float *x, int64_t rows, int64_t C) {
#pragma omp parallel for if (rows * C > 65536)
  for (int64_t r = 0; r < rows; r++) {
    const float *a = x + r * 2 * C, *g = a + C;
    for (int64_t c = 0; c < C; c++) y[r * C + c] = a[c] * gelu_value(g[c]);
  }
}

void geglu_backward_cpu(float *dx, const float *dy, const float *x, int64_t rows, int64_t C) {
#pragma omp parallel for if (rows * C > 65536)
  for (int64_t r = 0; r < rows; r++) {
    const float *a = x + r * 2 * C, *g = a + C, *d = dy + r * C;
    float *da = dx + r * 2 * C, *dg = da + C;
    for (int64_t c = 0; c < C; c++) {
      da[c] += gelu_value(g[c]) * d[c];
      dg[c] += a[c] * gelu_grad(g[c]) * d[c];
    }
  }
}

/* ---------------------------------------------------------------- pointwise ops */

/* The GPU kernels take fp32 or bf16 (activation.cu); the CPU widens bf16 (cpu_bf16.h). */
static void check_float_dtype(const char *op, const Tensor *x) {
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "%s: x is %s, expected fp32 or bf16", op,
            dtype_name(x->dtype));
}

typedef struct {
  Act act;
  float slope;
} ActSaved;

static void act_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dy = node->out->grad;
  ActSaved s = *(ActSaved *)node->saved;
  Tensor *dx = grad_of(ctx, x);
  ON_DEVICE(ctx, CPU_REF((dx, dy, x), act_backward_cpu(dx->data, dy->data, x->data, x->numel, s.act, s.slope)),
            act_backward_cuda(ctx, dx, dy, x, s.act, s.slope));
}

static Tensor *act_op(Ctx *ctx, Tensor *x, Act act, float slope) {
  MCM_CHECK((unsigned)act < ACT_COUNT, "op_act: unknown activation %d", (int)act);
  check_float_dtype(act_name(act), x);
  Tensor *y = tensor_like(ctx, x);
  ON_DEVICE(ctx, CPU_REF((y, x), act_forward_cpu(y->data, x->data, x->numel, act, slope)),
            act_forward_cuda(ctx, y, x, act, slope));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, act_name(act), act_backward, y, 1, &x, sizeof(ActSaved));
    *(ActSaved *)node->saved = (ActSaved){act, slope};
  }
  return y;
}

Tensor *op_act(Ctx *ctx, Tensor *x, Act act) { return act_op(ctx, x, act, LEAKY_RELU_DEFAULT_SLOPE); }

Tensor *op_leaky_relu(Ctx *ctx, Tensor *x, float slope) {
  MCM_CHECK(isfinite(slope), "leaky_relu: the slope must be finite, got %g", (double)slope);
  return act_op(ctx, x, ACT_LEAKY_RELU, slope);
}

/* ---------------------------------------------------------------- GEGLU */

static void geglu_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dy = node->out->grad, *dx = grad_of(ctx, x);
  int64_t C = node->out->shape[node->out->ndim - 1];
  ON_DEVICE(ctx,
            CPU_REF((dx, dy, x), geglu_backward_cpu(dx->data, dy->data, x->data, C ? x->numel / (2 * C) : 0, C)),
            geglu_backward_cuda(ctx, dx, dy, x));
}

Tensor *op_geglu(Ctx *ctx, Tensor *x) {
  int64_t last = x->shape[x->ndim - 1];
  MCM_CHECK(last % 2 == 0, "geglu: x has shape %s, its last dimension must be even (value ‖ gate)",
            TENSOR_SHAPE_STR(x));
  check_float_dtype("geglu", x);
  int64_t shape[MCM_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  int64_t C = last / 2;
  shape[x->ndim - 1] = C;
  Tensor *y = tensor_new(ctx, x->dtype, x->ndim, shape);
  ON_DEVICE(ctx, CPU_REF((y, x), geglu_forward_cpu(y->data, x->data, C ? x->numel / last : 0, C)),
            geglu_forward_cuda(ctx, y, x));
  if (tape_wants(ctx, 1, &x)) tape_record(ctx, "geglu", geglu_backward, y, 1, &x, 0);
  return y;
}
