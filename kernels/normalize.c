/* L2 and spectral normalisation: CPU reference, dispatch and tape (see normalize.h). */
#include "normalize.h"

#include <math.h>

#include "cpu_bf16.h"
#include "cuda_api.h"
#include "rng.h"

/* ------------------------------------------------------------------ L2 normalisation */

void l2_normalize_forward_cpu(float *y, const float *x, int64_t N, int64_t D, float eps) {
#pragma omp parallel for if (N * D > 65536)
  for (int64_t n = 0; n < N; n++) {
    const float *xr = x + n * D;
    double ss = 0.0;
    for (int64_t d = 0; d < D; d++) ss += (double)xr[d] * xr[d];
    float den = fmaxf((float)sqrt(ss), eps);
    for (int64_t d = 0; d < D; d++) y[n * D + d] = xr[d] / den;
  }
}

void l2_normalize_backward_cpu(float *dx, const float *dy, const float *x, int64_t N, int64_t D, float eps) {
#pragma omp parallel for if (N * D > 65536)
  for (int64_t n = 0; n < N; n++) {
    const float *xr = x + n * D, *g = dy + n * D;
    double ss = 0.0, xg = 0.0;
    for (int64_t d = 0; d < D; d++) {
      ss += (double)xr[d] * xr[d];
      xg += (double)xr[d] * g[d];
    }
    double nrm = (float)sqrt(ss);
    if (nrm >= eps) { /* y = x/n: dx = dy/n − x (x·dy)/n³ */
      double c = xg / (nrm * nrm * nrm);
      for (int64_t d = 0; d < D; d++) dx[n * D + d] += (float)(g[d] / nrm - xr[d] * c);
    } else { /* y = x/eps */
      for (int64_t d = 0; d < D; d++) dx[n * D + d] += g[d] / eps;
    }
  }
}

typedef struct {
  float eps;
} L2Saved;

static void l2_normalize_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *dx = grad_of(ctx, x), *dy = node->out->grad;
  float eps = ((L2Saved *)node->saved)->eps;
  int64_t D = x->shape[x->ndim - 1];
  ON_DEVICE(ctx, CPU_REF((dx, dy, x), l2_normalize_backward_cpu(dx->data, dy->data, x->data, x->numel / D, D, eps)),
            l2_normalize_backward_cuda(ctx, dx, dy, x, eps));
}

Tensor *op_l2_normalize(Ctx *ctx, Tensor *x, float eps) {
  MCM_CHECK(eps > 0.0f, "l2_normalize: eps %g must be positive", (double)eps);
  MCM_CHECK(x->numel > 0, "l2_normalize: x %s is empty", TENSOR_SHAPE_STR(x));
  MCM_CHECK(x->dtype == DT_F32 || x->dtype == DT_BF16, "l2_normalize: x is %s, expected fp32 or bf16",
            dtype_name(x->dtype));
  int64_t D = x->shape[x->ndim - 1];
  Tensor *y = tensor_like(ctx, x);
  ON_DEVICE(ctx, CPU_REF((y, x), l2_normalize_forward_cpu(y->data, x->data, x->numel / D, D, eps)),
            l2_normalize_forward_cuda(ctx, y, x, eps));
  if (tape_wants(ctx, 1, &x)) {
    TapeNode *node = tape_record(ctx, "l2_normalize", l2_normalize_backward, y, 1, &x, sizeof(L2Saved));
    ((L2Saved *)node->saved)->eps = eps;
  }
  return y;
}

/* ------------------------------------------------------------------ spectral normalisation */

/* out (n) = acc / max(‖acc‖, eps), as F.normalize. */
static void normalize_into(float *out, const double *acc, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; i++) ss += acc[i] * acc[i];
  float den = fmaxf((float)sqrt(ss), eps);
  for (int64_t i = 0; i < n; i++) out[i] = (float)acc[i] / den;
}

void spectral_power_iteration_cpu(float *u, float *v, const float *w, int64_t OUT, int64_t IN, int n, float eps) {
  double *acc = MALLOC_CHECK((size_t)(OUT > IN ? OUT : IN) * sizeof(double));
  for (int it = 0; it < n; it++) {
    for (int64_t j = 0; j < IN; j++) acc[j] = 0.0; /* v = normalize(Wᵀ u) */
    for (int64_t o = 0; o < OUT; o++)
      for (int64_t j = 0; j < IN; j++) acc[j] += (double)w[o * IN + j] * u[o];
    normalize_into(v, acc, IN, eps);
    for (int64_t o = 0; o < OUT; o++) { /* u = normalize(W v) */
      double s = 0.0;
      for (int64_t j = 0; j < IN; j++) s += (double)w[o * IN + j] * v[j];
      acc[o] = s;
    }
    normalize_into(u, acc, OUT, eps);
  }
  free(acc);
}

float spectral_norm_forward_cpu(float *y, const float *w, const float *u, const float *v, int64_t OUT, int64_t IN) {
  double sigma = 0.0;
  for (int64_t o = 0; o < OUT; o++) {
    double s = 0.0;
    for (int64_t j = 0; j < IN; j++) s += (double)w[o * IN + j] * v[j];
    sigma += u[o] * s;
  }
  float sg = (float)sigma;
  for (int64_t i = 0; i < OUT * IN; i++) y[i] = w[i] / sg;
  return sg;
}

void spectral_norm_backward_cpu(float *dw, const float *dy, const float *w, const float *u, const float *v,
                                float sigma, int64_t OUT, int64_t IN) {
  double s = 0.0;
  for (int64_t i = 0; i < OUT * IN; i++) s += (double)dy[i] * w[i];
  double c = s / ((double)sigma * sigma);
  for (int64_t o = 0; o < OUT; o++)
    for (int64_t j = 0; j < IN; j++) {
      int64_t i = o * IN + j;
      dw[i] += (float)(dy[i] / (double)sigma - c * u[o] * v[j]);
    }
}

typedef struct {
  Tensor *u, *v, *sigma; /* copies taken at forward time: (OUT), (IN), (1), all fp32 */
} SpectralSaved;

static void spectral_norm_backward(Ctx *ctx, TapeNode *node) {
  Tensor *w = node->in[0], *dw = grad_of(ctx, w), *dy = node->out->grad;
  SpectralSaved *s = node->saved;
  int64_t OUT = w->shape[0], IN = w->numel / OUT;
  ON_DEVICE(ctx,
            CPU_REF((dw, dy, w, s->u, s->v, s->sigma),
                    spectral_norm_backward_cpu(dw->data, dy->data, w->data, s->u->data, s->v->data,
                                               ((float *)s->sigma->data)[0], OUT, IN)),
            spectral_norm_backward_cuda(ctx, dw, dy, w, s->u, s->v, s->sigma));
}

static void normalize_host(float *x, int64_t n, float eps) {
  double *acc = MALLOC_CHECK((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++) acc[i] = x[i];
  normalize_into(x, acc, n, eps);
  free(acc);
}

void spectral_norm_init(Ctx *ctx, SpectralNorm *sn, const Tensor *w, int n_power_iterations, float eps) {
  MCM_CHECK(w->ndim >= 2 && w->numel > 0, "spectral_norm_init: weight %s must have at least 2 dims",
            TENSOR_SHAPE_STR(w));
  MCM_CHECK(n_power_iterations >= 0 && eps > 0.0f, "spectral_norm_init: n_power_iterations %d, eps %g",
            n_power_iterations, (double)eps);
  int64_t OUT = w->shape[0], IN = w->numel / OUT;
  sn->u = tensor_new_persistent(ctx, DT_F32, SHAPE(OUT));
  sn->v = tensor_new_persistent(ctx, DT_F32, SHAPE(IN));
  sn->n_power_iterations = n_power_iterations;
  sn->eps = eps;
  Tensor *uv[2] = {sn->u, sn->v};
  for (int k = 0; k < 2; k++) {
    rng_normal(ctx, uv[k]);
    float *h = MALLOC_CHECK((size_t)uv[k]->numel * sizeof(float));
    tensor_to_host_f32(ctx, uv[k], h);
    normalize_host(h, uv[k]->numel, eps);
    tensor_from_host_f32(ctx, uv[k], h);
    free(h);
  }
}

Tensor *op_spectral_norm(Ctx *ctx, SpectralNorm *sn, Tensor *w, bool training) {
  MCM_CHECK(w->ndim >= 2 && w->numel > 0, "spectral_norm: weight %s must have at least 2 dims (OUT, IN, ...)",
            TENSOR_SHAPE_STR(w));
  MCM_CHECK(sn->u && sn->v, "spectral_norm '%s': u and v are not set (call spectral_norm_init)",
            w->name ? w->name : "?");
  int64_t OUT = w->shape[0], IN = w->numel / OUT;
  CHECK_SHAPE("spectral_norm", sn->u, OUT);
  CHECK_SHAPE("spectral_norm", sn->v, IN);
  CHECK_DTYPE("spectral_norm", sn->u, DT_F32);
  CHECK_DTYPE("spectral_norm", sn->v, DT_F32);
  MCM_CHECK(sn->u->dev == ctx->dev && sn->v->dev == ctx->dev && w->dev == ctx->dev,
            "spectral_norm: weight, u and v must be on the context's device");
  MCM_CHECK(sn->n_power_iterations >= 0 && sn->eps > 0.0f, "spectral_norm: n_power_iterations %d, eps %g",
            sn->n_power_iterations, (double)sn->eps);
  MCM_CHECK(w->dtype == DT_F32 || w->dtype == DT_BF16, "spectral_norm '%s': weight is %s, expected fp32 or bf16",
            w->name ? w->name : "?", dtype_name(w->dtype));
  if (training && sn->n_power_iterations > 0)
    ON_DEVICE(ctx,
              CPU_REF((sn->u, sn->v, w), spectral_power_iteration_cpu(sn->u->data, sn->v->data, w->data, OUT, IN,
                                                                      sn->n_power_iterations, sn->eps)),
              spectral_power_iteration_cuda(ctx, sn->u, sn->v, w, sn->n_power_iterations, sn->eps));
  Tensor *y = tensor_like(ctx, w);
  Tensor *sigma = tensor_new(ctx, DT_F32, SHAPE(1));
  ON_DEVICE(ctx,
            CPU_REF((y, sigma, w, sn->u, sn->v),
                    ((float *)sigma->data)[0] =
                        spectral_norm_forward_cpu(y->data, w->data, sn->u->data, sn->v->data, OUT, IN)),
            spectral_norm_forward_cuda(ctx, y, sigma, w, sn->u, sn->v));
  if (tape_wants(ctx, 1, &w)) {
    TapeNode *node = tape_record(ctx, "spectral_norm", spectral_norm_backward, y, 1, &w, sizeof(SpectralSaved));
    SpectralSaved *s = node->saved;
    s->u = tensor_like(ctx, sn->u);
    s->v = tensor_like(ctx, sn->v);
    tensor_copy(ctx, s->u, sn->u);
    tensor_copy(ctx, s->v, sn->v);
    s->sigma = sigma;
  }
  return y;
}
