/* Finite-difference gradient checking (see gradcheck.h). */
#include "gradcheck.h"

#include <math.h>

#include "test.h"

void fill_uniform(Ctx *ctx, Tensor *t, uint64_t seed, float lo, float hi) {
  float *v = malloc((size_t)t->numel * sizeof(float));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < t->numel; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */
    v[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
  }
  tensor_from_host_f32(ctx, t, v);
  free(v);
}

static double loss_value(Ctx *ctx, LossFn fn, Tensor **leaves, void *user) {
  bool was = ctx_set_grad(ctx, false);
  Tensor *loss = fn(ctx, leaves, user);
  float v;
  tensor_to_host_f32(ctx, loss, &v);
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);
  return v;
}

int gradcheck(Ctx *ctx, LossFn fn, Tensor **leaves, int n_leaves, void *user, GradcheckOpts o) {
  float h = o.h > 0 ? o.h : 1e-2f, atol = o.atol > 0 ? o.atol : 2e-3f, rtol = o.rtol > 0 ? o.rtol : 1e-2f;
  MCM_CHECK(ctx->dev == DEV_CPU, "gradcheck runs on a CPU context");
  for (int i = 0; i < n_leaves; i++) {
    MCM_CHECK(leaves[i]->persistent, "gradcheck: leaf %d must be persistent", i);
    if (leaves[i]->grad) tensor_fill(ctx, leaves[i]->grad, 0.0f);
  }
  ctx_step_reset(ctx);
  Tensor *loss = fn(ctx, leaves, user);
  backward(ctx, loss);
  ctx_step_reset(ctx);

  int bad = 0;
  for (int i = 0; i < n_leaves; i++) {
    Tensor *t = leaves[i];
    const char *name = t->name ? t->name : "input";
    if (!t->requires_grad) {
      if (t->grad && !t->is_param) {
        test_fail(__FILE__, __LINE__, "leaf %d (%s) is frozen but received a gradient", i, name);
        bad++;
      }
      continue;
    }
    if (!t->grad) {
      test_fail(__FILE__, __LINE__, "leaf %d (%s) received no gradient", i, name);
      bad++;
      continue;
    }
    float *x = t->data, *g = t->grad->data;
    int64_t stride = o.max_per_tensor > 0 && t->numel > o.max_per_tensor ? t->numel / o.max_per_tensor : 1;
    double worst = 0;
    int64_t worst_i = -1;
    double worst_fd = 0;
    for (int64_t j = 0; j < t->numel; j += stride) {
      float keep = x[j];
      x[j] = keep + h;
      double lp = loss_value(ctx, fn, leaves, user);
      x[j] = keep - h;
      double lm = loss_value(ctx, fn, leaves, user);
      x[j] = keep;
      double fd = (lp - lm) / (2.0 * h);
      double err = fabs(fd - g[j]), allowed = atol + rtol * fabs(g[j]);
      if (err > allowed) bad++;
      if (err / allowed > worst) worst = err / allowed, worst_i = j, worst_fd = fd;
    }
    if (worst > 1.0)
      test_fail(__FILE__, __LINE__, "leaf %d (%s): element %lld: tape %.6g vs finite difference %.6g", i, name,
                (long long)worst_i, g[worst_i], worst_fd);
  }
  return bad;
}
