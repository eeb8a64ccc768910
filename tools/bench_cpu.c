/* CPU speed of the GEMM-heavy ops at UNet-like shapes, against the BLAS they sit on.
 *
 *   make bench-cpu            (build/cpu/bench_cpu [reps])
 *
 * For each shape: op_linear / op_conv2d forward and backward through the library, and a
 * bare cblas_sgemm of the same size, reported in GFLOP/s (2·M·N·K per product; backward
 * counts its two products). The ratio op / sgemm says what the op adds on top of BLAS
 * (bias, im2col, col2im, allocation). Median of `reps` runs after one warm-up. */
#include <cblas.h>
#include <omp.h>
#include <time.h>

#include "kernels/ops.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef void (*RunFn)(Ctx *ctx, void *arg);

static double median_seconds(Ctx *ctx, RunFn fn, void *arg, int reps) {
  double *t = MALLOC_CHECK((size_t)reps * sizeof(double));
  fn(ctx, arg); /* warm-up: arena growth, BLAS thread start */
  ctx_step_reset(ctx);
  for (int i = 0; i < reps; i++) {
    double t0 = now();
    fn(ctx, arg);
    t[i] = now() - t0;
    ctx_step_reset(ctx);
  }
  qsort(t, (size_t)reps, sizeof(double), cmp_double);
  double m = t[reps / 2];
  free(t);
  return m;
}

static void fill(Ctx *ctx, Tensor *t) {
  float *v = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  for (int64_t i = 0; i < t->numel; i++) v[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  tensor_from_host_f32(ctx, t, v);
  free(v);
}

/* ---- bare sgemm */
typedef struct {
  int M, N, K;
  float *a, *b, *c;
} Gemm;
static void run_gemm(Ctx *ctx, void *arg) {
  Gemm *g = arg;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->M, g->N, g->K, 1.0f, g->a, g->K, g->b, g->K, 0.0f, g->c,
              g->N);
}

static double gemm_gflops(Ctx *ctx, int M, int N, int K, int reps) {
  Gemm g = {M, N, K, MALLOC_CHECK((size_t)M * K * 4), MALLOC_CHECK((size_t)N * K * 4), MALLOC_CHECK((size_t)M * N * 4)};
  for (int64_t i = 0; i < (int64_t)M * K; i++) g.a[i] = 0.001f * (float)(i % 997);
  for (int64_t i = 0; i < (int64_t)N * K; i++) g.b[i] = 0.001f * (float)(i % 991);
  double s = median_seconds(ctx, run_gemm, &g, reps);
  free(g.a), free(g.b), free(g.c);
  return 2.0 * M * N * K / s * 1e-9;
}

/* ---- op_linear */
typedef struct {
  Tensor *x, *w, *b;
  bool backward;
} Lin;
static void run_linear(Ctx *ctx, void *arg) {
  Lin *l = arg;
  Tensor *y = op_linear(ctx, l->x, l->w, l->b);
  if (l->backward) backward(ctx, op_sum(ctx, y));
}

/* ---- op_conv2d */
typedef struct {
  Tensor *x, *w, *b;
  Conv2dArgs a;
  bool backward;
} Conv;
static void run_conv(Ctx *ctx, void *arg) {
  Conv *c = arg;
  Tensor *y = op_conv2d(ctx, c->x, c->w, c->b, c->a);
  if (c->backward) backward(ctx, op_sum(ctx, y));
}

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  if (reps < 1) reps = 1;
  Ctx *ctx = ctx_create_cpu(0);
  printf("mcm CPU bench: %d OpenMP threads, OpenBLAS, median of %d runs\n\n", omp_get_max_threads(), reps);
  printf("%-44s %12s %12s %8s\n", "op (shape)", "op GFLOP/s", "sgemm GF/s", "ratio");

  /* (tokens, in, out): the UNet's transformer linears at levels 1 and 2 (1024 and 256
   * tokens for a 256x16 latent), the GEGLU expansion, and the FiLM projection. */
  const int lin[][3] = {{1024, 256, 256}, {1024, 256, 2048}, {256, 384, 384}, {4096, 128, 128}};
  for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
    int T = lin[i][0], IN = lin[i][1], OUT = lin[i][2];
    for (int bw = 0; bw < 2; bw++) {
      Lin l = {tensor_new_persistent(ctx, DT_F32, SHAPE(T, IN)), param_new(ctx, "w", DT_F32, SHAPE(OUT, IN), bw),
               param_new(ctx, "b", DT_F32, SHAPE(OUT), bw), bw};
      fill(ctx, l.x), fill(ctx, l.w), fill(ctx, l.b);
      l.x->requires_grad = bw;
      double s = median_seconds(ctx, run_linear, &l, reps);
      double flops = 2.0 * T * IN * OUT * (bw ? 3 : 1);
      double ref = gemm_gflops(ctx, T, OUT, IN, reps);
      char name[64];
      snprintf(name, sizeof name, "linear %s (%d x %d -> %d)", bw ? "fwd+bwd" : "fwd", T, IN, OUT);
      printf("%-44s %12.1f %12.1f %8.2f\n", name, flops / s * 1e-9, ref, flops / s * 1e-9 / ref);
    }
  }
  /* (B, C, H, W, COUT): the UNet's 3x3 res-block convs at levels 0 and 1, and the VAE
   * decoder's first-level conv on a 10 s mel (1024 x 64). */
  const int conv[][5] = {{1, 128, 256, 16, 128}, {1, 256, 128, 8, 256}, {1, 128, 512, 32, 128}};
  for (size_t i = 0; i < sizeof conv / sizeof conv[0]; i++) {
    int B = conv[i][0], C = conv[i][1], H = conv[i][2], W = conv[i][3], CO = conv[i][4];
    for (int bw = 0; bw < 2; bw++) {
      Conv c = {tensor_new_persistent(ctx, DT_F32, SHAPE(B, C, H, W)),
                param_new(ctx, "w", DT_F32, SHAPE(CO, C, 3, 3), bw), param_new(ctx, "b", DT_F32, SHAPE(CO), bw),
                conv2d_args(1, 1), bw};
      fill(ctx, c.x), fill(ctx, c.w), fill(ctx, c.b);
      c.x->requires_grad = bw;
      double s = median_seconds(ctx, run_conv, &c, reps);
      double flops = 2.0 * B * H * W * CO * C * 9 * (bw ? 3 : 1);
      double ref = gemm_gflops(ctx, CO, H * W, C * 9, reps);
      char name[64];
      snprintf(name, sizeof name, "conv2d 3x3 %s (%d,%d,%d,%d -> %d)", bw ? "fwd+bwd" : "fwd", B, C, H, W, CO);
      printf("%-44s %12.1f %12.1f %8.2f\n", name, flops / s * 1e-9, ref, flops / s * 1e-9 / ref);
    }
  }
  ctx_destroy(ctx);
  return 0;
}
