/* Normalisation ops: layouts, CPU reference, dispatch and tape (see norm.h). */
#include "norm.h"

#include <math.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

/* Offset of element (o, r, k, i) of x viewed as (O, R, K, L). */
static inline int64_t at(NormLayout l, int64_t o, int64_t r, int64_t k, int64_t i) {
  return ((o * l.R + r) * l.K + k) * l.L + i;
}

/* ------------------------------------------------------------------ layouts */

NormLayout group_norm_layout(const Tensor *x, int groups) {
  MCM_CHECK(x->ndim >= 2 && x->ndim <= 5, "group_norm: x has shape %s; expected (B, C, ...spatial) of rank 2 to 5",
            TENSOR_SHAPE_STR(x));
  int64_t B = x->shape[0], C = x->shape[1];
  MCM_CHECK(groups >= 1 && C % groups == 0, "group_norm: %lld channels (x %s) do not split into %d equal groups",
            (long long)C, TENSOR_SHAPE_STR(x), groups);
  int64_t S = B * C > 0 ? x->numel / (B * C) : 0, CPG = C / groups;
  return (NormLayout){.O = B, .R = 1, .K = groups, .L = CPG * S, .CPG = CPG, .S = S};
}

NormLayout layer_norm_layout(const Tensor *x) {
  int64_t C = x->shape[x->ndim - 1];
  return (NormLayout){.O = C > 0 ? x->numel / C : 0, .R = 1, .K = 1, .L = C, .CPG = C, .S = 1};
}

NormLayout batch_norm_local_layout(const Tensor *x, int virtual_bs) {
  CHECK_SHAPE("batch_norm_local", x, -1, -1, -1); /* (B, C, N) */
  MCM_CHECK(virtual_bs >= 1, "batch_norm_local: virtual_bs is %d, it must be >= 1", virtual_bs);
  int64_t B = x->shape[0], C = x->shape[1], N = x->shape[2];
  int64_t G = (B + virtual_bs - 1) / virtual_bs;
  MCM_CHECK(G >= 1 && B % G == 0,
            "batch_norm_local: a batch of %lld (x %s) does not split into ceil(%lld / %d) = %lld equal groups; "
            "hint: use a batch of at most %d or a multiple of it",
            (long long)B, TENSOR_SHAPE_STR(x), (long long)B, virtual_bs, (long long)G, virtual_bs);
  return (NormLayout){.O = G, .R = B / G, .K = C, .L = N, .CPG = 1, .S = N};
}

/* ------------------------------------------------------------------ CPU reference */

void norm_forward_cpu(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                      NormLayout l, float eps) {
  int64_t groups = l.O * l.K, n = l.R * l.L;
#pragma omp parallel for if (groups * n > 65536)
  for (int64_t q = 0; q < groups; q++) {
    int64_t o = q / l.K, k = q % l.K;
    double s = 0.0, v = 0.0;
    for (int64_t r = 0; r < l.R; r++)
      for (int64_t i = 0; i < l.L; i++) s += x[at(l, o, r, k, i)];
    double mu = s / (double)n;
    for (int64_t r = 0; r < l.R; r++)
      for (int64_t i = 0; i < l.L; i++) {
        double d = x[at(l, o, r, k, i)] - mu;
        v += d * d;
      }
    float m = (float)mu, rs = (float)(1.0 / sqrt(v / (double)n + (double)eps));
    mean[q] = m;
    rstd[q] = rs;
    for (int64_t r = 0; r < l.R; r++)
      for (int64_t i = 0; i < l.L; i++) {
        int64_t j = at(l, o, r, k, i), c = k * l.CPG + i / l.S;
        float xh = (x[j] - m) * rs;
        y[j] = (w ? xh * w[c] : xh) + (b ? b[c] : 0.0f);
      }
  }
}

/* dx for each statistics group (parallel over groups), then dw and db for each channel
 * (parallel over channels): no two threads ever write the same element, and every sum
 * runs in a fixed order, so the result does not depend on the thread count. */
void norm_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                       const float *mean, const float *rstd, NormLayout l) {
  int64_t groups = l.O * l.K, n = l.R * l.L, C = l.K * l.CPG;
  if (dx) {
#pragma omp parallel for if (groups * n > 65536)
    for (int64_t q = 0; q < groups; q++) {
      int64_t o = q / l.K, k = q % l.K;
      float m = mean[q], rs = rstd[q];
      double s1 = 0.0, s2 = 0.0; /* Σ dŷ, Σ dŷ·x̂ */
      for (int64_t r = 0; r < l.R; r++)
        for (int64_t i = 0; i < l.L; i++) {
          int64_t j = at(l, o, r, k, i);
          float g = w ? dy[j] * w[k * l.CPG + i / l.S] : dy[j];
          s1 += g;
          s2 += (double)g * ((x[j] - m) * rs);
        }
      float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
      for (int64_t r = 0; r < l.R; r++)
        for (int64_t i = 0; i < l.L; i++) {
          int64_t j = at(l, o, r, k, i);
          float g = w ? dy[j] * w[k * l.CPG + i / l.S] : dy[j];
          dx[j] += rs * (g - m1 - (x[j] - m) * rs * m2);
        }
    }
  }
  if (!dw && !db) return;
  /* Channel c = k·CPG + jc holds, for every (o, r), the run i ∈ [jc·S, (jc + 1)·S). */
#pragma omp parallel for if (groups * n > 65536)
  for (int64_t c = 0; c < C; c++) {
    int64_t k = c / l.CPG, i0 = (c % l.CPG) * l.S;
    double sw = 0.0, sb = 0.0;
    for (int64_t o = 0; o < l.O; o++) {
      float m = mean[o * l.K + k], rs = rstd[o * l.K + k];
      for (int64_t r = 0; r < l.R; r++)
        for (int64_t i = i0; i < i0 + l.S; i++) {
          int64_t j = at(l, o, r, k, i);
          sw += (double)dy[j] * ((x[j] - m) * rs);
          sb += dy[j];
        }
    }
    if (dw) dw[c] += (float)sw;
    if (db) db[c] += (float)sb;
  }
}

/* ------------------------------------------------------------------ dispatch and tape */

typedef struct {
  NormLayout l;
  Tensor *mean, *rstd; /* (O·K) fp32, from the forward */
} NormSaved;

static void norm_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *dy = node->out->grad;
  NormSaved *s = node->saved;
  Tensor *dx = x->requires_grad ? grad_of(ctx, x) : NULL;
  Tensor *dw = w && w->requires_grad ? grad_of(ctx, w) : NULL;
  Tensor *db = b && b->requires_grad ? grad_of(ctx, b) : NULL;
  ON_DEVICE(ctx,
            CPU_REF((dx, dw, db, dy, x, w, s->mean, s->rstd),
                    norm_backward_cpu(dx ? dx->data : NULL, dw ? dw->data : NULL, db ? db->data : NULL, dy->data,
                                      x->data, w ? w->data : NULL, s->mean->data, s->rstd->data, s->l)),
            norm_backward_cuda(ctx, dx, dw, db, dy, x, w, s->mean, s->rstd, s->l));
}

static Tensor *norm_op(Ctx *ctx, const char *op, Tensor *x, Tensor *w, Tensor *b, NormLayout l, float eps) {
  MCM_CHECK(x->numel > 0, "%s: x %s is empty", op, TENSOR_SHAPE_STR(x));
  MCM_CHECK(eps >= 0.0f && isfinite(eps), "%s: eps is %g, it must be finite and >= 0", op, (double)eps);
  int64_t C = l.K * l.CPG;
  if (w) CHECK_SHAPE(op, w, C);
  if (b) CHECK_SHAPE(op, b, C);
  MCM_CHECK((x->dtype == DT_F32 || x->dtype == DT_BF16) && (!w || w->dtype == x->dtype) && (!b || b->dtype == x->dtype),
            "%s: x %s, weight %s, bias %s: one dtype, fp32 or bf16", op, dtype_name(x->dtype),
            w ? dtype_name(w->dtype) : "none", b ? dtype_name(b->dtype) : "none");
  Tensor *y = tensor_new(ctx, x->dtype, x->ndim, x->shape);
  Tensor *mean = tensor_new(ctx, DT_F32, SHAPE(l.O * l.K)), *rstd = tensor_new(ctx, DT_F32, SHAPE(l.O * l.K));
  ON_DEVICE(ctx,
            CPU_REF((y, mean, rstd, x, w, b), norm_forward_cpu(y->data, mean->data, rstd->data, x->data,
                                                               w ? w->data : NULL, b ? b->data : NULL, l, eps)),
            norm_forward_cuda(ctx, y, mean, rstd, x, w, b, l, eps));
  Tensor *in[3] = {x, w, b};
  if (tape_wants(ctx, 3, in)) {
    TapeNode *node = tape_record(ctx, op, norm_backward, y, 3, in, sizeof(NormSaved));
    *(NormSaved *)node->saved = (NormSaved){l, mean, rstd};
  }
  return y;
}

Tensor *op_group_norm(Ctx *ctx, Tensor *x, int groups, float eps, Tensor *w, Tensor *b) {
  return norm_op(ctx, "group_norm", x, w, b, group_norm_layout(x, groups), eps);
}

Tensor *op_layer_norm(Ctx *ctx, Tensor *x, float eps, Tensor *w, Tensor *b) {
  return norm_op(ctx, "layer_norm", x, w, b, layer_norm_layout(x), eps);
}

Tensor *op_batch_norm_local(Ctx *ctx, Tensor *x, int virtual_bs, float eps, Tensor *w, Tensor *b) {
  return norm_op(ctx, "batch_norm_local", x, w, b, batch_norm_local_layout(x, virtual_bs), eps);
}
