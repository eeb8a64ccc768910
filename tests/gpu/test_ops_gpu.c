/* Every CUDA op against its CPU reference, from one table (make test-gpu).
 *
 * For each entry and each precision, the same host-generated inputs go to a CPU context
 * and a CUDA context; each side runs the op forward, then backward from the same random
 * upstream gradient (backward_from). The output and the gradient of every input are
 * compared elementwise: |gpu − ref| ≤ atol + rtol·|ref|, with the entry's tolerance for
 * that precision. Each GPU run starts on a NaN-poisoned arena (gpu_check.h), so an
 * element a kernel never writes fails.
 *
 * bf16: inputs and the upstream gradient are rounded to bf16 on the host and given to
 * both sides; the GPU stores them as bf16, the CPU reference (fp32 only) computes in fp32
 * from the same rounded values. The difference is then the GPU's bf16 storage of its
 * results, not the inputs.
 *
 *   MCM_GPU_OPS=conv make test-gpu T=gpu_ops     runs only the entries whose name contains "conv"
 */
#include <string.h>

#include "gpu_check.h"
#include "kernels/ops.h"
#include "tests/test.h"

/* ------------------------------------------------------------------ the harness */

/* What one run produced, on the host: the output, then each input's gradient. */
typedef struct RunResult {
  int n;
  char name[MAX_IN + 1][16];
  float *data[MAX_IN + 1];
  int64_t numel[MAX_IN + 1];
} RunResult;

static void keep(Ctx *ctx, RunResult *r, const char *name, const Tensor *t) {
  snprintf(r->name[r->n], sizeof r->name[r->n], "%s", name);
  r->numel[r->n] = t->numel;
  r->data[r->n] = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, r->data[r->n]);
  r->n++;
}

static void result_free(RunResult *r) {
  for (int i = 0; i < r->n; i++) free(r->data[i]);
  r->n = 0;
}

static void run_entry(Ctx *ctx, const OpEntry *e, DType dtype, bool bf16_values, RunResult *r) {
  gpu_poison_arena(ctx);
  OpCase c = {.ctx = ctx, .dtype = dtype, .bf16_values = bf16_values};
  Tensor *y = e->forward(&c);
  Tensor *dy = tensor_new(ctx, y->dtype, y->ndim, y->shape);
  float *h = MALLOC_CHECK((size_t)y->numel * sizeof(float));
  host_uniform(h, y->numel, 999, -1.0f, 1.0f, bf16_values);
  tensor_from_host_f32(ctx, dy, h);
  free(h);
  backward_from(ctx, y, dy);
  *r = (RunResult){0};
  keep(ctx, r, "y", y);
  for (int i = 0; i < c.n_in; i++) {
    char name[16];
    snprintf(name, sizeof name, "d%s", c.in_name[i]);
    ASSERT(c.in[i]->grad, "%s: input %s received no gradient on %s", e->name, c.in_name[i], ctx->device_name);
    keep(ctx, r, name, c.in[i]->grad);
  }
  EXPECT(gpu_poison_covered(ctx), "%s on %s: the run outgrew the poisoned arena block (%zu > %zu bytes)", e->name,
         ctx->device_name, ctx->act.used, ctx->act.min_block);
  ctx_step_reset(ctx);
}

/* ------------------------------------------------------------------ the ops */

static Tensor *fw_linear(OpCase *c) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, SHAPE(2, 7, 13));  /* (B, T, IN) */
  Tensor *w = case_input(c, "w", -0.5f, 0.5f, SHAPE(11, 13));    /* (OUT, IN) */
  Tensor *b = case_input(c, "b", -0.5f, 0.5f, SHAPE(11));        /* (OUT) */
  return op_linear(c->ctx, x, w, b);
}

static Tensor *fw_linear_nobias(OpCase *c) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, SHAPE(5, 17));  /* (T, IN) */
  Tensor *w = case_input(c, "w", -0.5f, 0.5f, SHAPE(3, 17));  /* (OUT, IN) */
  return op_linear(c->ctx, x, w, NULL);
}

static Tensor *conv_case(OpCase *c, int B, int CIN, int H, int W, int COUT, int KH, int KW, bool bias, Conv2dArgs a) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, SHAPE(B, CIN, H, W));
  Tensor *w = case_input(c, "w", -0.5f, 0.5f, SHAPE(COUT, CIN / conv2d_groups(a), KH, KW));
  Tensor *b = bias ? case_input(c, "b", -0.5f, 0.5f, SHAPE(COUT)) : NULL;
  return op_conv2d(c->ctx, x, w, b, a);
}

static Tensor *fw_conv_3x3(OpCase *c) { return conv_case(c, 2, 3, 9, 11, 5, 3, 3, true, conv2d_args(1, 1)); }
static Tensor *fw_conv_stride2(OpCase *c) { return conv_case(c, 2, 4, 9, 10, 6, 3, 3, true, conv2d_args(2, 1)); }
/* The VAE's downsampling: pad right and bottom only, stride 2. */
static Tensor *fw_conv_asym(OpCase *c) {
  Conv2dArgs a = {.stride_h = 2, .stride_w = 2, .pad_bottom = 1, .pad_right = 1, .dil_h = 1, .dil_w = 1};
  return conv_case(c, 2, 3, 9, 8, 4, 3, 3, true, a);
}
static Tensor *fw_conv_dil2(OpCase *c) {
  Conv2dArgs a = conv2d_args(1, 2);
  a.dil_h = a.dil_w = 2;
  return conv_case(c, 2, 3, 11, 9, 4, 3, 3, true, a);
}
/* HiFi-GAN's period discriminator: kernel (5, 1), stride (3, 1), padding (2, 0); and groups. */
static Tensor *fw_conv_period(OpCase *c) {
  Conv2dArgs a = {.stride_h = 3, .stride_w = 1, .pad_top = 2, .pad_bottom = 2, .dil_h = 1, .dil_w = 1, .groups = 1};
  return conv_case(c, 2, 4, 13, 5, 6, 5, 1, true, a);
}
static Tensor *fw_conv_grouped(OpCase *c) {
  Conv2dArgs a = conv2d_args(2, 1);
  a.groups = 3;
  return conv_case(c, 2, 6, 9, 7, 9, 3, 3, true, a);
}
static Tensor *fw_conv_1x1(OpCase *c) { return conv_case(c, 2, 7, 5, 6, 3, 1, 1, false, conv2d_args(1, 0)); }
/* Odd everything: a 5x3 kernel, strides (1, 2), padding 2/1 rows and 0/2 columns (extra
 * explicit padding on the top and on the right). */
static Tensor *fw_conv_odd(OpCase *c) {
  Conv2dArgs a = {.stride_h = 1, .stride_w = 2, .pad_top = 2, .pad_bottom = 1, .pad_right = 2, .dil_h = 1, .dil_w = 1};
  return conv_case(c, 1, 2, 7, 5, 3, 5, 3, true, a);
}

static Tensor *fw_silu(OpCase *c) { return op_silu(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(3, 37, 41))); }
static Tensor *fw_relu(OpCase *c) { return op_relu(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(3, 37, 41))); }
static Tensor *fw_tanh(OpCase *c) { return op_tanh(c->ctx, case_input(c, "x", -4.0f, 4.0f, SHAPE(3, 37, 41))); }

static Tensor *fw_binary(OpCase *c, Binary kind) {
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, SHAPE(3, 37, 41));
  Tensor *b = case_input(c, "b", -1.0f, 1.0f, SHAPE(3, 37, 41));
  return op_binary(c->ctx, a, b, kind);
}
static Tensor *fw_add(OpCase *c) { return fw_binary(c, BIN_ADD); }
static Tensor *fw_sub(OpCase *c) { return fw_binary(c, BIN_SUB); }
static Tensor *fw_mul(OpCase *c) { return fw_binary(c, BIN_MUL); }
static Tensor *fw_scale(OpCase *c) {
  return op_scale(c->ctx, case_input(c, "a", -1.0f, 1.0f, SHAPE(3, 37, 41)), -0.37f);
}

static Tensor *fw_sum(OpCase *c) { return op_sum(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 37, 41))); }
/* More elements than the 1024 x 256 threads of the first reduction pass. */
static Tensor *fw_sum_large(OpCase *c) { return op_sum(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(524295))); }
static Tensor *fw_mean(OpCase *c) { return op_mean(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 37, 41))); }
static Tensor *fw_mse(OpCase *c) {
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, SHAPE(3, 37, 41));
  Tensor *b = case_input(c, "b", -1.0f, 1.0f, SHAPE(3, 37, 41));
  return op_mse(c->ctx, a, b);
}

#define POINTWISE POINTWISE_TOL
#define GEMM GEMM_TOL
static const OpEntry BASE_OPS[] = {
    {"linear", fw_linear, GEMM, false},
    {"linear_nobias", fw_linear_nobias, GEMM, false},
    {"conv2d_3x3_pad1", fw_conv_3x3, GEMM, true},
    {"conv2d_3x3_stride2", fw_conv_stride2, GEMM, false},
    {"conv2d_asym_pad_0101", fw_conv_asym, GEMM, true},
    {"conv2d_dilation2", fw_conv_dil2, GEMM, false},
    {"conv2d_1x1_nobias", fw_conv_1x1, GEMM, false},
    {"conv2d_period_k5x1_s3", fw_conv_period, GEMM, false},
    {"conv2d_groups3_stride2", fw_conv_grouped, GEMM, true},
    {"conv2d_5x3_odd", fw_conv_odd, GEMM, false},
    {"silu", fw_silu, POINTWISE, false},
    {"relu", fw_relu, POINTWISE, false},
    {"tanh", fw_tanh, POINTWISE, false},
    {"add", fw_add, POINTWISE, false},
    {"sub", fw_sub, POINTWISE, false},
    {"mul", fw_mul, POINTWISE, false},
    {"scale", fw_scale, POINTWISE, false},
    {"sum", fw_sum, {F32_REDUCE, BF16_POINTWISE}, true},
    {"sum_large", fw_sum_large, {F32_REDUCE_LARGE, BF16_POINTWISE}, true},
    {"mean", fw_mean, {F32_REDUCE, BF16_POINTWISE}, true},
    {"mse", fw_mse, {F32_REDUCE, BF16_POINTWISE}, true},
};
GPU_OPS_REGISTER(BASE_OPS)

/* ------------------------------------------------------------------ the tests */

static bool gpu_present(void) {
  if (cuda_device_count() > 0) return true;
  printf("skipped: no GPU present\n");
  return false;
}

static Ctx *gpu_ctx(void) {
  McmErr err = {{0}};
  Ctx *ctx = ctx_create(&(DeviceSpec){DEV_CUDA, 0, false}, 1, &err);
  ASSERT(ctx, "cannot create a CUDA context: %s", err.msg);
  ASSERT(ctx->dev == DEV_CUDA, "ctx_create fell back to %s", ctx->device_name);
  return ctx;
}

static bool selected(const OpEntry *e) {
  const char *only = getenv("MCM_GPU_OPS");
  return !only || !*only || strstr(e->name, only);
}

static void check_table(DType prec) {
  if (!gpu_present()) return;
  Ctx *cpu = ctx_create_cpu(1), *gpu = gpu_ctx();
  const char *pname = dtype_name(prec);
  printf("  %s: worst |gpu - ref| per tensor (in units of the tolerance)\n", gpu->device_name);
  for (int k = 0; k < gpu_ops_count(); k++) {
    const OpEntry *e = gpu_ops_get(k);
    if (!selected(e)) continue;
    Tol tol = e->tol[prec];
    RunResult ref, got;
    run_entry(cpu, e, DT_F32, prec == DT_BF16, &ref);
    run_entry(gpu, e, prec, prec == DT_BF16, &got);
    ASSERT(ref.n == got.n, "%s: %d tensors on the CPU, %d on the GPU", e->name, ref.n, got.n);
    char line[512];
    int len = snprintf(line, sizeof line, "  %-22s %-5s", e->name, pname);
    int64_t bad = 0;
    for (int i = 0; i < ref.n; i++) {
      ASSERT(ref.numel[i] == got.numel[i], "%s %s: %lld elements on the CPU, %lld on the GPU", e->name, ref.name[i],
             (long long)ref.numel[i], (long long)got.numel[i]);
      char what[96];
      snprintf(what, sizeof what, "%s (%s) %s", e->name, pname, ref.name[i]);
      double ratio = 0;
      bad += check_close(what, got.data[i], ref.data[i], ref.numel[i], tol, &ratio);
      if (len < (int)sizeof line)
        len += snprintf(line + len, sizeof line - (size_t)len, "  %s %.2f", ref.name[i], ratio);
    }
    printf("%s  %s\n", line, bad ? "FAIL" : "ok");
    fflush(stdout);
    result_free(&ref);
    result_free(&got);
  }
  ctx_destroy(gpu);
  ctx_destroy(cpu);
}

TEST(gpu_ops_fp32) { check_table(DT_F32); }
TEST(gpu_ops_bf16) { check_table(DT_BF16); }

/* Every row marked deterministic (reductions without atomics: sums, norms, broadcast
 * gradients, bias gradients, attention backward, losses; conv with deterministic cuDNN
 * algorithms preferred) must give identical bits, output and gradients, when run twice. */
TEST(gpu_ops_deterministic) {
  if (!gpu_present()) return;
  Ctx *gpu = gpu_ctx();
  for (int p = 0; p < 2; p++) {
    DType prec = p ? DT_BF16 : DT_F32;
    for (int k = 0; k < gpu_ops_count(); k++) {
      const OpEntry *e = gpu_ops_get(k);
      if (!e->deterministic) continue;
      RunResult r1, r2;
      run_entry(gpu, e, prec, prec == DT_BF16, &r1);
      run_entry(gpu, e, prec, prec == DT_BF16, &r2);
      for (int i = 0; i < r1.n; i++)
        EXPECT(!memcmp(r1.data[i], r2.data[i], (size_t)r1.numel[i] * sizeof(float)),
               "%s (%s) %s: two runs on the GPU gave different bits", e->name, dtype_name(prec), r1.name[i]);
      result_free(&r1);
      result_free(&r2);
    }
  }
  ctx_destroy(gpu);
}
