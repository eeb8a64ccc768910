/* Pointwise activations: CPU reference, dispatch and tape (see activation.h). */
#include "activation.h"

#include <math.h>

#include "cuda_api.h"

const char *act_name(Act act) {
  static const char *names[] = {"silu", "relu", "tanh"};
  return (unsigned)act < 3 ? names[act] : "unknown-activation";
}

void act_forward_cpu(float *y, const float *x, int64_t n, Act act) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    switch (act) {
      case ACT_SILU: y[i] = v / (1.0f + expf(-v)); break;
      case ACT_RELU: y[i] = v > 0.0f ? v : 0.0f; break;
      case ACT_TANH: y[i] = tanhf(v); break;
    }
  }
}

void act_backward_cpu(float *dx, const float *dy, const float *x, int64_t n, Act act) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    float v = x[i], d = 0.0f;
    switch (act) {
      case ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-v));
        d = s * (1.0f + v * (1.0f - s));
        break;
      }
      case ACT_RELU: d = v > 0.0f ? 1.0f : 0.0f; break;
      case ACT_TANH: {
        float t = tanhf(v);
        d = 1.0f - t * t;
        break;
      }
    }
    dx[i] += d * dy[i];
  }
}

typedef struct {
  Act act;
} ActSaved;

static void act_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0];
  Act act = ((ActSaved *)node->saved)->act;
  Tensor *dx = grad_of(ctx, x);
  ON_DEVICE(ctx, act_backward_cpu(dx->data, node->out->grad->data, x->data, x->numel, act),
            act_backward_cuda(ctx, dx, node->out->grad, x, act));
}

Tensor *op_act(Ctx *ctx, Tensor *x, Act act) {
  MCM_CHECK((unsigned)act < 3, "op_act: unknown activation %d", (int)act);
  if (ctx->dev == DEV_CPU) CHECK_DTYPE(act_name(act), x, DT_F32);
  Tensor *y = tensor_like(ctx, x);
  ON_DEVICE(ctx, act_forward_cpu(y->data, x->data, x->numel, act), act_forward_cuda(ctx, y, x, act));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, act_name(act), act_backward, y, 1, &x, sizeof(ActSaved));
    ((ActSaved *)node->saved)->act = act;
  }
  return y;
}
