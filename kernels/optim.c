/* AdamW, gradient clipping and EMA: the CPU reference and the dispatch (see optim.h). */
#include "optim.h"

#include <math.h>

#include "cuda_api.h"

/* ------------------------------------------------------------------ host element access */

static inline float load_f(const void *p, DType dt, int64_t i) {
  return dt == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void store_f(void *p, DType dt, int64_t i, float x) {
  if (dt == DT_BF16)
    ((uint16_t *)p)[i] = f32_to_bf16(x);
  else
    ((float *)p)[i] = x;
}

static void check_float(const char *op, const char *what, const Tensor *t) {
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s '%s' %s is %s, expected fp32 or bf16", op, what,
            t->name ? t->name : "(unnamed)", TENSOR_SHAPE_STR(t), dtype_name(t->dtype));
}

static void check_device(const Ctx *ctx, const char *op, const char *what, const Tensor *t) {
  MCM_CHECK(t->dev == ctx->dev, "%s: %s '%s' %s is on the %s, the context on the %s", op, what,
            t->name ? t->name : "(unnamed)", TENSOR_SHAPE_STR(t), t->dev == DEV_CPU ? "CPU" : "GPU",
            ctx->dev == DEV_CPU ? "CPU" : "GPU");
}

/* ------------------------------------------------------------------ AdamW */

AdamW *adamw_create(Ctx *ctx, Tensor *const *params, int n, AdamWHyper h) {
  MCM_CHECK(n >= 0 && (n == 0 || params), "adamw_create: %d parameters and a %s list", n, params ? "valid" : "NULL");
  MCM_CHECK(h.lr >= 0.0f && h.beta1 >= 0.0f && h.beta1 < 1.0f && h.beta2 >= 0.0f && h.beta2 < 1.0f && h.eps >= 0.0f &&
                h.weight_decay >= 0.0f,
            "adamw_create: bad hyperparameters lr %g, betas (%g, %g), eps %g, weight decay %g (hint: lr, eps and "
            "weight decay must be >= 0, betas in [0, 1))",
            h.lr, h.beta1, h.beta2, h.eps, h.weight_decay);
  AdamW *opt = ctx_alloc_persistent_host(ctx, sizeof *opt);
  *opt = (AdamW){.lr = h.lr, .beta1 = h.beta1, .beta2 = h.beta2, .eps = h.eps, .weight_decay = h.weight_decay};
  int kept = 0;
  for (int i = 0; i < n; i++) kept += params[i]->requires_grad;
  size_t bytes = (size_t)(kept ? kept : 1) * sizeof(Tensor *);
  opt->params = ctx_alloc_persistent_host(ctx, bytes);
  opt->m = ctx_alloc_persistent_host(ctx, bytes);
  opt->v = ctx_alloc_persistent_host(ctx, bytes);
  opt->master = ctx_alloc_persistent_host(ctx, bytes);
  for (int i = 0; i < n; i++) {
    Tensor *p = params[i];
    if (!p->requires_grad) continue;
    check_float("adamw_create", "parameter", p);
    check_device(ctx, "adamw_create", "parameter", p);
    MCM_CHECK(p->persistent, "adamw_create: '%s' %s is not persistent (hint: parameters come from param_new)",
              p->name ? p->name : "(unnamed)", TENSOR_SHAPE_STR(p));
    int k = opt->n++;
    opt->params[k] = p;
    opt->m[k] = tensor_new_persistent(ctx, DT_F32, p->ndim, p->shape);
    opt->v[k] = tensor_new_persistent(ctx, DT_F32, p->ndim, p->shape);
    tensor_fill(ctx, opt->m[k], 0.0f);
    tensor_fill(ctx, opt->v[k], 0.0f);
    if (p->dtype == DT_BF16) {
      opt->master[k] = tensor_new_persistent(ctx, DT_F32, p->ndim, p->shape);
      tensor_copy(ctx, opt->master[k], p);
    }
  }
  return opt;
}

Tensor *adamw_weights(const AdamW *opt, int i) {
  MCM_CHECK(i >= 0 && i < opt->n, "adamw_weights: index %d out of range [0, %d)", i, opt->n);
  return opt->master[i] ? opt->master[i] : opt->params[i];
}

/* PyTorch computes these in Python doubles and hands them to fp32 kernels as scalars. */
AdamWScalars adamw_scalars(const AdamW *opt, float lr, int64_t step) {
  double b1 = opt->beta1, b2 = opt->beta2, t = (double)step;
  return (AdamWScalars){
      .decay_on = opt->weight_decay != 0.0f,
      .decay = (float)(1.0 - (double)lr * opt->weight_decay),
      .w1 = (float)(1.0 - b1),
      .beta2 = opt->beta2,
      .c2 = (float)(1.0 - b2),
      .bc2_sqrt = (float)sqrt(1.0 - pow(b2, t)),
      .eps = opt->eps,
      .neg_step = (float)(-(double)lr / (1.0 - pow(b1, t))),
  };
}

void adamw_update_cpu(float *w, uint16_t *w_bf16, const void *g, DType g_dtype, float *m, float *v, int64_t n,
                      const AdamWScalars *s) {
  float one_minus_w1 = 1.0f - s->w1;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    float gi = load_f(g, g_dtype, i), p = w[i];
    if (s->decay_on) p = p * s->decay;
    /* lerp(m, g, w1), PyTorch's form: from m for small weights, from g for large ones */
    float d = gi - m[i];
    float mi = s->w1 < 0.5f ? fmaf(s->w1, d, m[i]) : fmaf(-d, one_minus_w1, gi);
    float vi = fmaf(s->c2 * gi, gi, v[i] * s->beta2);
    float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
    p = p + (s->neg_step * mi) / denom;
    m[i] = mi;
    v[i] = vi;
    w[i] = p;
    if (w_bf16) w_bf16[i] = f32_to_bf16(p);
  }
}

void adamw_step(Ctx *ctx, AdamW *opt, float lr) {
  MCM_CHECK(lr >= 0.0f && isfinite(lr), "adamw_step: learning rate %g (hint: it must be finite and >= 0)", lr);
  opt->step++;
  AdamWScalars s = adamw_scalars(opt, lr, opt->step);
  for (int i = 0; i < opt->n; i++) {
    Tensor *p = opt->params[i], *g = p->grad;
    if (!g) continue;
    check_float("adamw_step", "gradient of", g);
    MCM_CHECK(g->numel == p->numel && g->dev == p->dev, "adamw_step: the gradient of '%s' is %s, the parameter %s",
              p->name ? p->name : "(unnamed)", TENSOR_SHAPE_STR(g), TENSOR_SHAPE_STR(p));
  }
  if (ctx->dev == DEV_CPU) {
    for (int i = 0; i < opt->n; i++) {
      Tensor *p = opt->params[i];
      if (!p->grad) continue;
      float *w = opt->master[i] ? opt->master[i]->data : p->data;
      uint16_t *w_bf16 = opt->master[i] ? p->data : NULL;
      adamw_update_cpu(w, w_bf16, p->grad->data, p->grad->dtype, opt->m[i]->data, opt->v[i]->data, p->numel, &s);
    }
    return;
  }
#if MCM_CUDA
  adamw_step_cuda(ctx, opt, &s);
#endif
}

/* ------------------------------------------------------------------ gradient norm and clipping */

double grad_sumsq_cpu(const void *g, DType dtype, int64_t n) {
  int64_t chunks = (n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
  if (chunks == 0) return 0.0;
  double *part = MALLOC_CHECK((size_t)chunks * sizeof(double)); /* (chunks) */
#pragma omp parallel for if (chunks > 1)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t end = (c + 1) * OPTIM_CHUNK < n ? (c + 1) * OPTIM_CHUNK : n;
    double s = 0.0;
    for (int64_t i = c * OPTIM_CHUNK; i < end; i++) {
      double x = load_f(g, dtype, i);
      s += x * x;
    }
    part[c] = s;
  }
  double total = 0.0;
  for (int64_t c = 0; c < chunks; c++) total += part[c];
  free(part);
  return total;
}

void grad_scale_cpu(void *g, DType dtype, int64_t n, float scale) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) store_f(g, dtype, i, load_f(g, dtype, i) * scale);
}

static void check_grads(Ctx *ctx, const char *op, Tensor *const *params, int n) {
  MCM_CHECK(n >= 0 && (n == 0 || params), "%s: %d parameters and a NULL list", op, n);
  for (int i = 0; i < n; i++) {
    Tensor *g = params[i]->grad;
    if (!g) continue;
    check_float(op, "gradient of", g);
    check_device(ctx, op, "gradient of", g);
  }
}

float grad_global_norm(Ctx *ctx, Tensor *const *params, int n) {
  check_grads(ctx, "grad_global_norm", params, n);
  double sumsq = 0.0;
  if (ctx->dev == DEV_CPU) {
    for (int i = 0; i < n; i++)
      if (params[i]->grad) sumsq += grad_sumsq_cpu(params[i]->grad->data, params[i]->grad->dtype, params[i]->numel);
  } else {
#if MCM_CUDA
    sumsq = grad_sumsq_cuda(ctx, params, n);
#endif
  }
  return (float)sqrt(sumsq);
}

float grad_clip(Ctx *ctx, Tensor *const *params, int n, float max_norm) {
  MCM_CHECK(max_norm > 0.0f, "grad_clip: max_norm %g must be > 0", max_norm);
  float norm = grad_global_norm(ctx, params, n);
  if (!isfinite(norm)) return norm; /* the caller skips the step; scaling would spread NaN */
  float coef = max_norm / (norm + 1e-6f);
  if (coef >= 1.0f) return norm;
  if (ctx->dev == DEV_CPU) {
    for (int i = 0; i < n; i++)
      if (params[i]->grad) grad_scale_cpu(params[i]->grad->data, params[i]->grad->dtype, params[i]->grad->numel, coef);
    return norm;
  }
#if MCM_CUDA
  grad_scale_cuda(ctx, params, n, coef);
#endif
  return norm;
}

/* ------------------------------------------------------------------ EMA */

void ema_update_cpu(void *ema, DType ema_dtype, const void *w, DType w_dtype, int64_t n, float mu) {
  float c = (float)(1.0 - (double)mu);
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    float a = mu * load_f(ema, ema_dtype, i), b = c * load_f(w, w_dtype, i);
    store_f(ema, ema_dtype, i, a + b);
  }
}

static void check_pairs(Ctx *ctx, const char *op, Tensor *const *ema, Tensor *const *w, int n) {
  MCM_CHECK(n >= 0 && (n == 0 || (ema && w)), "%s: %d tensors and a NULL list", op, n);
  for (int i = 0; i < n; i++) {
    check_float(op, "ema", ema[i]);
    check_float(op, "weight", w[i]);
    check_device(ctx, op, "ema", ema[i]);
    check_device(ctx, op, "weight", w[i]);
    MCM_CHECK(tensor_same_shape(ema[i], w[i]), "%s: tensor %d: ema '%s' is %s but the weight '%s' is %s", op, i,
              ema[i]->name ? ema[i]->name : "(unnamed)", TENSOR_SHAPE_STR(ema[i]),
              w[i]->name ? w[i]->name : "(unnamed)", TENSOR_SHAPE_STR(w[i]));
  }
}

void ema_update(Ctx *ctx, Tensor *const *ema, Tensor *const *w, int n, float mu) {
  MCM_CHECK(mu >= 0.0f && mu <= 1.0f, "ema_update: rate %g outside [0, 1]", mu);
  check_pairs(ctx, "ema_update", ema, w, n);
  if (ctx->dev == DEV_CPU) {
    for (int i = 0; i < n; i++) ema_update_cpu(ema[i]->data, ema[i]->dtype, w[i]->data, w[i]->dtype, w[i]->numel, mu);
    return;
  }
#if MCM_CUDA
  ema_update_cuda(ctx, ema, w, n, mu);
#endif
}

void ema_copy(Ctx *ctx, Tensor *const *ema, Tensor *const *w, int n) {
  check_pairs(ctx, "ema_copy", ema, w, n);
  for (int i = 0; i < n; i++) tensor_copy(ctx, ema[i], w[i]);
}
