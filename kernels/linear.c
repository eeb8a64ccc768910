/* linear: CPU reference, dispatch and tape (see linear.h). */
#include "linear.h"

#include <cblas.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

void linear_forward_cpu(float *y, const float *x, const float *w, const float *b, int64_t N, int64_t IN, int64_t OUT) {
  /* y (N,OUT) = x (N,IN) · Wᵀ (IN,OUT) */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OUT, (int)IN, 1.0f, x, (int)IN, w, (int)IN, 0.0f,
              y, (int)OUT);
  if (b) {
#pragma omp parallel for if (N * OUT > 65536)
    for (int64_t n = 0; n < N; n++)
      for (int64_t o = 0; o < OUT; o++) y[n * OUT + o] += b[o];
  }
}

void linear_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int64_t N,
                         int64_t IN, int64_t OUT) {
  if (dx) /* dx (N,IN) += dy (N,OUT) · W (OUT,IN) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)IN, (int)OUT, 1.0f, dy, (int)OUT, w, (int)IN,
                1.0f, dx, (int)IN);
  if (dw) /* dW (OUT,IN) += dyᵀ (OUT,N) · x (N,IN) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OUT, (int)IN, (int)N, 1.0f, dy, (int)OUT, x, (int)IN,
                1.0f, dw, (int)IN);
  if (db) /* db (OUT) += Σ_n dy[n, :], in column blocks so threads share no output */
#pragma omp parallel for if (N * OUT > 65536)
    for (int64_t o0 = 0; o0 < OUT; o0 += 64) {
      const int64_t o1 = o0 + 64 < OUT ? o0 + 64 : OUT;
      for (int64_t n = 0; n < N; n++)
        for (int64_t o = o0; o < o1; o++) db[o] += dy[n * OUT + o];
    }
}

static void linear_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *dy = node->out->grad;
  Tensor *dx = x->requires_grad ? grad_of(ctx, x) : NULL;
  Tensor *dw = w->requires_grad ? grad_of(ctx, w) : NULL;
  Tensor *db = b && b->requires_grad ? grad_of(ctx, b) : NULL;
  int64_t IN = w->shape[1], OUT = w->shape[0], N = x->numel / IN;
  ctx_count_flops(ctx, w->dtype, 2.0 * (double)N * (double)IN * (double)OUT * ((dx != NULL) + (dw != NULL)));
  ON_DEVICE(ctx,
            CPU_REF((dx, dw, db, dy, x, w),
                    linear_backward_cpu(dx ? dx->data : NULL, dw ? dw->data : NULL, db ? db->data : NULL, dy->data,
                                        x->data, w->data, N, IN, OUT)),
            linear_backward_cuda(ctx, dx, dw, db, dy, x, w));
}

Tensor *op_linear(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b) {
  CHECK_SHAPE("linear", w, -1, -1);
  int64_t OUT = w->shape[0], IN = w->shape[1];
  MCM_CHECK(x->shape[x->ndim - 1] == IN, "linear '%s': x has shape %s, its last dimension must be %lld (weight %s)",
            w->name ? w->name : "?", TENSOR_SHAPE_STR(x), (long long)IN, TENSOR_SHAPE_STR(w));
  if (b) CHECK_SHAPE("linear", b, OUT);
  MCM_CHECK((x->dtype == DT_F32 || x->dtype == DT_BF16) && w->dtype == x->dtype && (!b || b->dtype == x->dtype),
            "linear '%s': x %s, weight %s, bias %s: one dtype, fp32 or bf16", w->name ? w->name : "?",
            dtype_name(x->dtype), dtype_name(w->dtype), b ? dtype_name(b->dtype) : "none");
  int64_t shape[MCM_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = OUT;
  Tensor *y = tensor_new(ctx, x->dtype, x->ndim, shape);
  ctx_count_flops(ctx, w->dtype, 2.0 * (double)(x->numel / IN) * (double)IN * (double)OUT);
  ON_DEVICE(ctx,
            CPU_REF((y, x, w, b), linear_forward_cpu(y->data, x->data, w->data, b ? b->data : NULL, x->numel / IN, IN,
                                                     OUT)),
            linear_forward_cuda(ctx, y, x, w, b));
  Tensor *in[3] = {x, w, b};
  if (tape_wants(ctx, 3, in)) tape_record(ctx, "linear", linear_backward, y, 3, in, 0);
  return y;
}
