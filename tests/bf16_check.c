/* bf16 checks on the CPU (see bf16_check.h). */
#include "bf16_check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/rng.h"
#include "test.h"

static float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

typedef struct Run {
  float *y;         /* output values */
  DType y_dtype;
  int64_t y_n;
  float *g[BF16_MAX_IN];
  DType g_dtype[BF16_MAX_IN];
} Run;

static float *host_copy(Ctx *ctx, const Tensor *t) {
  float *h = MALLOC_CHECK((size_t)(t->numel ? t->numel : 1) * sizeof(float));
  tensor_to_host_f32(ctx, t, h);
  return h;
}

/* One run: inputs from vals (fp32 host), bf16 where bf16 && !keep_f32. */
static Run run_once(Ctx *ctx, Bf16Fn fn, const void *arg, int n_in, const Bf16In *in, float *const *vals, bool bf16,
                    uint64_t seed) {
  Run r = {0};
  ctx_step_reset(ctx);
  bool was = ctx_set_grad(ctx, true);
  Tensor *t[BF16_MAX_IN];
  for (int i = 0; i < n_in; i++) {
    if (in[i].is_i32) {
      t[i] = tensor_new(ctx, DT_I32, in[i].ndim, in[i].shape);
      int32_t *ids = MALLOC_CHECK((size_t)(t[i]->numel ? t[i]->numel : 1) * sizeof(int32_t));
      for (int64_t k = 0; k < t[i]->numel; k++) ids[k] = (int32_t)vals[i][k];
      tensor_from_host_i32(ctx, t[i], ids);
      free(ids);
      continue;
    }
    DType dt = bf16 && !in[i].keep_f32 ? DT_BF16 : DT_F32;
    t[i] = tensor_new(ctx, dt, in[i].ndim, in[i].shape);
    tensor_from_host_f32(ctx, t[i], vals[i]);
    t[i]->requires_grad = in[i].grad;
  }
  Tensor *y = fn(ctx, t, arg);
  r.y = host_copy(ctx, y);
  r.y_dtype = y->dtype;
  r.y_n = y->numel;
  bool any_grad = false;
  for (int i = 0; i < n_in; i++) any_grad |= in[i].grad;
  if (any_grad) {
    MCM_CHECK(y->requires_grad, "bf16_check: the output does not require a gradient");
    float *dy = MALLOC_CHECK((size_t)(y->numel ? y->numel : 1) * sizeof(float));
    rng_uniform_host(seed, 0, dy, y->numel);
    for (int64_t k = 0; k < y->numel; k++) dy[k] = round_bf16(2.0f * dy[k] - 1.0f);
    Tensor *g = tensor_new(ctx, y->dtype, y->ndim, y->shape);
    tensor_from_host_f32(ctx, g, dy);
    free(dy);
    backward_from(ctx, y, g);
    for (int i = 0; i < n_in; i++) {
      if (!in[i].grad) continue;
      MCM_CHECK(t[i]->grad, "bf16_check: input %d received no gradient", i);
      r.g[i] = host_copy(ctx, t[i]->grad);
      r.g_dtype[i] = t[i]->grad->dtype;
    }
  }
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);
  return r;
}

static bool compare(const char *name, const char *what, const float *got, DType got_dtype, const float *ref, int64_t n,
                    float tol) {
  float scale = 0.0f;
  for (int64_t k = 0; k < n; k++) scale = fmaxf(scale, fabsf(ref[k]));
  int64_t bad = 0, worst = -1;
  float worst_err = 0.0f;
  for (int64_t k = 0; k < n; k++) {
    float e = got_dtype == DT_BF16 ? round_bf16(ref[k]) : ref[k];
    float err = fabsf(got[k] - e);
    if (!(err <= tol * scale) || !isfinite(got[k])) {
      bad++;
      if (worst < 0 || !(err <= worst_err)) worst = k, worst_err = err;
    }
  }
  if (bad)
    test_fail(__FILE__, __LINE__,
              "%s %s: %lld of %lld elements differ (bf16 run %s); worst [%lld] %.9g vs expected %.9g (fp32 %.9g), "
              "allowed %.3g",
              name, what, (long long)bad, (long long)n, dtype_name(got_dtype), (long long)worst, got[worst],
              got_dtype == DT_BF16 ? round_bf16(ref[worst]) : ref[worst], ref[worst], tol * scale);
  return bad == 0;
}

bool bf16_check(const char *name, Bf16Fn fn, const void *arg, int n_in, const Bf16In *in, float tol) {
  MCM_CHECK(n_in <= BF16_MAX_IN, "bf16_check: at most %d inputs", BF16_MAX_IN);
  Ctx *ctx = ctx_create_cpu(7);
  float *vals[BF16_MAX_IN] = {0};
  for (int i = 0; i < n_in; i++) {
    int64_t n = shape_numel(in[i].ndim, in[i].shape);
    vals[i] = MALLOC_CHECK((size_t)(n ? n : 1) * sizeof(float));
    if (in[i].values) {
      memcpy(vals[i], in[i].values, (size_t)n * sizeof(float));
    } else {
      float lo = in[i].lo, hi = in[i].hi;
      if (lo == 0.0f && hi == 0.0f) lo = -1.0f, hi = 1.0f;
      rng_uniform_host(100 + (uint64_t)i, 0, vals[i], n);
      for (int64_t k = 0; k < n; k++) vals[i][k] = lo + (hi - lo) * vals[i][k];
    }
    if (!in[i].keep_f32 && !in[i].is_i32)
      for (int64_t k = 0; k < n; k++) vals[i][k] = round_bf16(vals[i][k]);
  }
  Run a = run_once(ctx, fn, arg, n_in, in, vals, false, 999);
  Run b = run_once(ctx, fn, arg, n_in, in, vals, true, 999);
  bool ok = true;
  if (b.y_n != a.y_n) {
    test_fail(__FILE__, __LINE__, "%s: output sizes differ (%lld vs %lld)", name, (long long)b.y_n, (long long)a.y_n);
    ok = false;
  } else {
    ok &= compare(name, "output", b.y, b.y_dtype, a.y, a.y_n, tol);
    for (int i = 0; i < n_in; i++) {
      if (!in[i].grad) continue;
      char what[32];
      snprintf(what, sizeof what, "gradient of input %d", i);
      ok &= compare(name, what, b.g[i], b.g_dtype[i], a.g[i], shape_numel(in[i].ndim, in[i].shape), tol);
    }
  }
  for (int i = 0; i < n_in; i++) free(vals[i]), free(a.g[i]), free(b.g[i]);
  free(a.y);
  free(b.y);
  ctx_destroy(ctx);
  return ok;
}
