/* Helpers for the GPU tests (see gpu_check.h). */
#include "gpu_check.h"

#include <math.h>

#include "kernels/rng.h"
#include "tests/test.h"

void gpu_poison_arena(Ctx *ctx) {
  ctx_step_reset(ctx);
  size_t bytes = ctx->act.min_block;
  /* bf16 NaN halves: read as bf16 each is NaN, read as fp32 each pair is (0x7fc0 7fc0 on
   * the CPU, 0x7fff 7fff on the GPU). An fp32 NaN fill would leave every other bf16 at 0. */
  Tensor *poison = tensor_new(ctx, DT_BF16, SHAPE((int64_t)(bytes / 2)));
  tensor_fill(ctx, poison, NAN);
  ctx_step_reset(ctx);
}

/* Activation allocations are 256-byte multiples at 256-byte offsets, so while the total
 * handed out fits the first block, no second block was started. */
bool gpu_poison_covered(const Ctx *ctx) { return ctx->act.used <= ctx->act.min_block; }

void host_uniform(float *out, int64_t n, uint64_t seed, float lo, float hi, bool round_bf16) {
  rng_uniform_host(seed, 0, out, n);
  for (int64_t i = 0; i < n; i++) {
    out[i] = lo + (hi - lo) * out[i];
    if (round_bf16) out[i] = bf16_to_f32(f32_to_bf16(out[i]));
  }
}

int64_t check_close(const char *what, const float *got, const float *ref, int64_t n, Tol tol, double *worst_ratio) {
  int64_t n_bad = 0, worst = -1;
  double worst_r = 0.0;
  for (int64_t i = 0; i < n; i++) {
    double diff = fabs((double)got[i] - (double)ref[i]);
    double allowed = tol.atol + tol.rtol * fabs((double)ref[i]);
    double r = isfinite(got[i]) && isfinite(ref[i]) ? diff / allowed : INFINITY;
    if (r > 1.0) n_bad++;
    if (worst < 0 || r > worst_r) {
      worst_r = r;
      worst = i;
    }
  }
  if (worst_ratio) *worst_ratio = worst_r;
  if (n_bad > 0)
    test_fail(__FILE__, __LINE__,
              "%s: %lld of %lld elements outside |gpu - ref| <= %g + %g*|ref|; worst [%lld]: gpu %.9g, ref %.9g, "
              "|diff| %.3g, allowed %.3g",
              what, (long long)n_bad, (long long)n, (double)tol.atol, (double)tol.rtol, (long long)worst,
              (double)got[worst], (double)ref[worst], fabs((double)got[worst] - (double)ref[worst]),
              tol.atol + tol.rtol * fabs((double)ref[worst]));
  return n_bad;
}

Tensor *case_input(OpCase *c, const char *name, float lo, float hi, int ndim, const int64_t *shape) {
  ASSERT(c->n_in < MAX_IN, "too many inputs");
  Tensor *t = tensor_new(c->ctx, c->dtype, ndim, shape);
  float *h = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  host_uniform(h, t->numel, 1000 + (uint64_t)c->n_in, lo, hi, c->bf16_values);
  tensor_from_host_f32(c->ctx, t, h);
  free(h);
  t->requires_grad = true;
  c->in[c->n_in] = t;
  c->in_name[c->n_in++] = name;
  return t;
}


Tensor *case_const(OpCase *c, float lo, float hi, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new(c->ctx, c->dtype, ndim, shape);
  float *h = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  host_uniform(h, t->numel, 2000 + (uint64_t)c->n_const++, lo, hi, c->bf16_values);
  tensor_from_host_f32(c->ctx, t, h);
  free(h);
  return t;
}

/* Registration happens in constructors, before main: the table is written only then. */
#define MAX_GPU_OPS 512
static const OpEntry *g_rows[MAX_GPU_OPS];
static int g_n_rows;

void gpu_ops_register(const OpEntry *rows, int n) {
  for (int i = 0; i < n; i++) {
    if (g_n_rows == MAX_GPU_OPS) {
      fprintf(stderr, "gpu_ops_register: more than %d rows\n", MAX_GPU_OPS);
      exit(2);
    }
    g_rows[g_n_rows++] = &rows[i];
  }
}

int gpu_ops_count(void) { return g_n_rows; }
const OpEntry *gpu_ops_get(int i) { return g_rows[i]; }
