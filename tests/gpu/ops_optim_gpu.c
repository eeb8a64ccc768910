/* The optimizer kernels on the GPU against the CPU reference (kernels/optim.h). These are
 * not tape ops, so they are TESTs of their own rather than rows of the op table: several
 * AdamW steps (fp32 parameters; bf16 parameters through fp32 master copies), the global
 * gradient norm and clipping (fp32 and bf16 gradients, determinism, non-finite norms),
 * EMA, and a resume through a checkpoint on the GPU and from the GPU onto the CPU.
 * Tensors of 70001 elements span two chunks of the multi-tensor launch plus a tail.
 *
 * Tolerances (local rows; none of gpu_check.h's fits an exact-by-construction kernel):
 *  - OPTIM_EXACT for AdamW (fp32 parameters, m, v, master copies) and EMA: the kernels
 *    spell out every rounding (__fmaf_rn where the CPU calls fmaf, __fmul_rn, __fadd_rn,
 *    __fdiv_rn, __fsqrt_rn elsewhere; the CPU is built with -ffp-contract=off) and take the
 *    same fp32 scalars from the host, so results should be bit-identical. atol 1e-7 /
 *    rtol 1e-6 (a few ulps) keeps a margin for that claim, which has never been checked on
 *    a GPU, while a wrong term moves a parameter by ~lr = 1e-2 and fails by 10⁴×.
 *  - OPTIM_BF16_PARAM for bf16 parameters: round(master) on both sides; if the masters
 *    ever differed by an ulp, the rounding could flip by one bf16 ulp (2⁻⁸ relative).
 *  - OPTIM_NORM for the gradient norm: fp32 sums of 256 terms per thread, a block tree per
 *    chunk, then double on the host, against double everywhere on the CPU: relative error
 *    ~ε₃₂·√256 ≈ 1e-6; 1e-5. Clipped fp32 gradients carry that error through the
 *    coefficient (OPTIM_NORM too), bf16 ones may round one ulp apart (OPTIM_BF16_PARAM). */
#include <math.h>
#include <string.h>

#include "core/checkpoint.h"
#include "gpu_check.h"
#include "kernels/optim.h" /* until kernels/ops.h includes it */
#include "tests/test.h"

static const Tol OPTIM_EXACT = {1e-7f, 1e-6f};
static const Tol OPTIM_BF16_PARAM = {1e-7f, 8e-3f};
static const Tol OPTIM_NORM = {1e-7f, 1e-5f};

static Ctx *optim_gpu_ctx(void) {
  if (cuda_device_count() == 0) {
    printf("skipped: no GPU present\n");
    return NULL;
  }
  McmErr err = {{0}};
  Ctx *ctx = ctx_create(&(DeviceSpec){DEV_CUDA, 0, false}, 1, &err);
  ASSERT(ctx && ctx->dev == DEV_CUDA, "cannot create a CUDA context: %s", err.msg);
  return ctx;
}

static float *to_host(Ctx *ctx, const Tensor *t) {
  float *h = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, h);
  return h;
}

/* got (on gpu) against ref (on cpu), elementwise. */
static void compare(const char *what, Ctx *gpu, const Tensor *got, Ctx *cpu, const Tensor *ref, Tol tol) {
  ASSERT(got->numel == ref->numel, "%s: %lld vs %lld elements", what, (long long)got->numel, (long long)ref->numel);
  float *g = to_host(gpu, got), *r = to_host(cpu, ref);
  int64_t differ = 0;
  for (int64_t i = 0; i < got->numel; i++) differ += memcmp(&g[i], &r[i], sizeof(float)) != 0;
  check_close(what, g, r, got->numel, tol, NULL);
  printf("  %-40s %lld of %lld elements not bit-identical\n", what, (long long)differ, (long long)got->numel);
  free(g), free(r);
}

/* ------------------------------------------------------------------ AdamW */

#define NP 3
static const int64_t kSizes[NP][2] = {{70001, 1}, {37, 1}, {5, 13}};

typedef struct OptRun {
  Ctx *ctx;
  Tensor *p[NP];
  AdamW *opt;
  bool bf16_grads; /* gradients rounded to bf16 values (whatever their storage) */
} OptRun;

static OptRun opt_run(Ctx *ctx, DType dt, AdamWHyper h) {
  OptRun r = {.ctx = ctx, .bf16_grads = dt == DT_BF16};
  for (int i = 0; i < NP; i++) {
    char name[16];
    snprintf(name, sizeof name, "p%d", i);
    r.p[i] = param_new(ctx, name, dt, SHAPE(kSizes[i][0], kSizes[i][1]), true);
    float *v = MALLOC_CHECK((size_t)r.p[i]->numel * sizeof(float));
    host_uniform(v, r.p[i]->numel, 10 + i, -1.0f, 1.0f, dt == DT_BF16);
    tensor_from_host_f32(ctx, r.p[i], v);
    free(v);
  }
  r.opt = adamw_create(ctx, r.p, NP, h);
  return r;
}

/* Step k: the same gradients on every context (bf16-representable for bf16 params),
 * optionally a clip at 50 (the norm is ~150: it clips), a decaying learning rate. */
static void opt_step(OptRun *r, int k, bool clip) {
  for (int i = 0; i < NP; i++) {
    Tensor *g = r->p[i]->grad;
    float *v = MALLOC_CHECK((size_t)g->numel * sizeof(float));
    host_uniform(v, g->numel, 1000 + 10 * k + i, -1.0f, 1.0f, r->bf16_grads);
    tensor_from_host_f32(r->ctx, g, v);
    free(v);
  }
  if (clip) grad_clip(r->ctx, r->p, NP, 50.0f);
  adamw_step(r->ctx, r->opt, 1e-2f / (1.0f + 0.2f * k));
}

static const AdamWHyper kHyper = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f};

static void check_adamw(DType dt, AdamWHyper h, const char *label) {
  Ctx *gpu = optim_gpu_ctx();
  if (!gpu) return;
  Ctx *cpu = ctx_create_cpu(1);
  OptRun a = opt_run(cpu, dt, h), b = opt_run(gpu, dt, h);
  for (int k = 0; k < 5; k++) opt_step(&a, k, false), opt_step(&b, k, false);
  for (int i = 0; i < NP; i++) {
    char what[96];
    snprintf(what, sizeof what, "%s p%d (%s)", label, i, dtype_name(dt));
    compare(what, gpu, b.p[i], cpu, a.p[i], dt == DT_BF16 ? OPTIM_BF16_PARAM : OPTIM_EXACT);
    snprintf(what, sizeof what, "%s m%d", label, i);
    compare(what, gpu, b.opt->m[i], cpu, a.opt->m[i], OPTIM_EXACT);
    snprintf(what, sizeof what, "%s v%d", label, i);
    compare(what, gpu, b.opt->v[i], cpu, a.opt->v[i], OPTIM_EXACT);
    if (dt == DT_BF16) {
      snprintf(what, sizeof what, "%s master%d", label, i);
      compare(what, gpu, b.opt->master[i], cpu, a.opt->master[i], OPTIM_EXACT);
    }
  }
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}

TEST(gpu_optim_adamw_fp32_matches_cpu) { check_adamw(DT_F32, kHyper, "adamw"); }
/* the heads' setting: β1 = 0 takes the other branch of lerp */
TEST(gpu_optim_adamw_heads_matches_cpu) { check_adamw(DT_F32, (AdamWHyper){1e-4f, 0.0f, 0.99f, 1e-8f, 0.0f}, "heads"); }
TEST(gpu_optim_adamw_bf16_master_matches_cpu) { check_adamw(DT_BF16, kHyper, "adamw"); }

/* ------------------------------------------------------------------ norm and clip */

TEST(gpu_optim_grad_norm_and_clip_match_cpu) {
  Ctx *gpu = optim_gpu_ctx();
  if (!gpu) return;
  Ctx *cpu = ctx_create_cpu(1);
  for (int prec = 0; prec < 2; prec++) {
    DType dt = prec ? DT_BF16 : DT_F32;
    OptRun a = opt_run(cpu, dt, kHyper), b = opt_run(gpu, dt, kHyper);
    for (int i = 0; i < NP; i++) {
      float *v = MALLOC_CHECK((size_t)a.p[i]->numel * sizeof(float));
      host_uniform(v, a.p[i]->numel, 500 + i, -1.0f, 1.0f, dt == DT_BF16);
      tensor_from_host_f32(cpu, a.p[i]->grad, v);
      tensor_from_host_f32(gpu, b.p[i]->grad, v);
      free(v);
    }
    float ref = grad_global_norm(cpu, a.p, NP);
    float n1 = grad_global_norm(gpu, b.p, NP), n2 = grad_global_norm(gpu, b.p, NP);
    EXPECT(!memcmp(&n1, &n2, sizeof n1), "%s: two GPU norms differ: %.9g %.9g", dtype_name(dt), n1, n2);
    check_close("grad norm", &n1, &ref, 1, OPTIM_NORM, NULL);
    float ca = grad_clip(cpu, a.p, NP, 2.0f), cb = grad_clip(gpu, b.p, NP, 2.0f);
    EXPECT(ca == ref && cb == n1, "grad_clip does not return the pre-clip norm");
    for (int i = 0; i < NP; i++) {
      char what[64];
      snprintf(what, sizeof what, "clipped grad %d (%s)", i, dtype_name(dt));
      compare(what, gpu, b.p[i]->grad, cpu, a.p[i]->grad, dt == DT_BF16 ? OPTIM_BF16_PARAM : OPTIM_NORM);
    }
    float after = grad_global_norm(gpu, b.p, NP);
    EXPECT(fabsf(after - 2.0f) < (dt == DT_BF16 ? 2e-2f : 1e-5f), "%s: norm after clipping %.9g, expected 2",
           dtype_name(dt), after);
    ctx_step_reset(gpu);
  }
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}

TEST(gpu_optim_nonfinite_norm_leaves_grads) {
  Ctx *gpu = optim_gpu_ctx();
  if (!gpu) return;
  OptRun b = opt_run(gpu, DT_F32, kHyper);
  for (int i = 0; i < NP; i++) tensor_fill(gpu, b.p[i]->grad, 0.5f);
  float *g = to_host(gpu, b.p[0]->grad);
  g[65537] = NAN; /* in the second chunk */
  tensor_from_host_f32(gpu, b.p[0]->grad, g);
  float norm = grad_clip(gpu, b.p, NP, 1.0f);
  EXPECT(isnan(norm), "norm %g with a NaN gradient", norm);
  float *h = to_host(gpu, b.p[1]->grad);
  for (int j = 0; j < 37; j++) EXPECT(h[j] == 0.5f, "a gradient changed with a non-finite norm");
  free(g), free(h);
  ctx_destroy(gpu);
}

/* ------------------------------------------------------------------ EMA */

TEST(gpu_optim_ema_matches_cpu) {
  Ctx *gpu = optim_gpu_ctx();
  if (!gpu) return;
  Ctx *cpu = ctx_create_cpu(1);
  /* (ema dtype, weight dtype): fp32 over fp32, fp32 over bf16, bf16 over fp32 */
  const DType kinds[3][2] = {{DT_F32, DT_F32}, {DT_F32, DT_BF16}, {DT_BF16, DT_F32}};
  Tensor *e[2][3], *w[2][3];
  for (int side = 0; side < 2; side++) {
    Ctx *ctx = side ? gpu : cpu;
    for (int j = 0; j < 3; j++) {
      e[side][j] = tensor_new_persistent(ctx, kinds[j][0], SHAPE(70001));
      w[side][j] = tensor_new_persistent(ctx, kinds[j][1], SHAPE(70001));
      float *v = MALLOC_CHECK(70001 * sizeof(float));
      host_uniform(v, 70001, 40 + j, -1.0f, 1.0f, kinds[j][0] == DT_BF16);
      tensor_from_host_f32(ctx, e[side][j], v);
      host_uniform(v, 70001, 60 + j, -1.0f, 1.0f, kinds[j][1] == DT_BF16);
      tensor_from_host_f32(ctx, w[side][j], v);
      free(v);
    }
    ema_update(ctx, e[side], w[side], 3, 0.95f);
    ema_update(ctx, e[side], w[side], 3, 0.9999f);
  }
  for (int j = 0; j < 3; j++) {
    char what[64];
    snprintf(what, sizeof what, "ema %s over %s", dtype_name(kinds[j][0]), dtype_name(kinds[j][1]));
    compare(what, gpu, e[1][j], cpu, e[0][j], kinds[j][0] == DT_BF16 ? OPTIM_BF16_PARAM : OPTIM_EXACT);
  }
  ema_copy(gpu, e[1], w[1], 3);
  for (int j = 0; j < 3; j++) compare("ema_copy", gpu, e[1][j], cpu, w[0][j], (Tol){0, 0});
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}

/* ------------------------------------------------------------------ resume */

static void save_opt(OptRun *r, const char *path) {
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < NP; i++) ASSERT(tf_write_tensor(r->ctx, tf, r->p[i], r->p[i]->dtype, &err) == 0, "%s", err.msg);
  ASSERT(checkpoint_save_adamw(r->ctx, tf, "opt", r->opt, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
}

static void load_opt(OptRun *r, const char *path) {
  McmErr err;
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < NP; i++) ASSERT(tf_read_tensor(r->ctx, tf, r->p[i]->name, r->p[i], &err) == 0, "%s", err.msg);
  ASSERT(checkpoint_load_adamw(r->ctx, tf, "opt", r->opt, &err) == 0, "%s", err.msg);
  tf_close(tf);
}

/* GPU resume is bit-exact: bf16 parameters with master copies and clipping, 3 steps, save,
 * load into a fresh GPU optimizer, 3 more == 6 uninterrupted, bit for bit. */
TEST(gpu_optim_checkpoint_resume) {
  Ctx *gpu = optim_gpu_ctx();
  if (!gpu) return;
  OptRun full = opt_run(gpu, DT_BF16, kHyper), part = opt_run(gpu, DT_BF16, kHyper);
  for (int k = 0; k < 6; k++) opt_step(&full, k, true);
  for (int k = 0; k < 3; k++) opt_step(&part, k, true);
  const char *path = TEST_PATH("gpu_opt.h5");
  save_opt(&part, path);
  Ctx *gpu2 = optim_gpu_ctx();
  OptRun resumed = opt_run(gpu2, DT_BF16, (AdamWHyper){1, 0, 0, 0, 0});
  load_opt(&resumed, path);
  for (int k = 3; k < 6; k++) opt_step(&resumed, k, true);
  for (int i = 0; i < NP; i++) {
    float *x = to_host(gpu, full.opt->master[i]), *y = to_host(gpu2, resumed.opt->master[i]);
    float *px = to_host(gpu, full.p[i]), *py = to_host(gpu2, resumed.p[i]);
    size_t bytes = (size_t)full.p[i]->numel * sizeof(float);
    EXPECT(!memcmp(x, y, bytes) && !memcmp(px, py, bytes), "p%d: the resumed GPU run differs", i);
    free(x), free(y), free(px), free(py);
  }
  ctx_destroy(gpu2);
  ctx_destroy(gpu);
}

/* A bf16 GPU run resumed on the CPU in fp32 (the parameters take the master values) follows
 * the GPU run: same bf16-valued gradients (no clipping, which would round differently in
 * bf16 and fp32 storage), so within OPTIM_EXACT. */
TEST(gpu_optim_checkpoint_resume_on_cpu) {
  Ctx *gpu = optim_gpu_ctx();
  if (!gpu) return;
  OptRun full = opt_run(gpu, DT_BF16, kHyper), part = opt_run(gpu, DT_BF16, kHyper);
  for (int k = 0; k < 6; k++) opt_step(&full, k, false);
  for (int k = 0; k < 3; k++) opt_step(&part, k, false);
  const char *path = TEST_PATH("gpu_opt.h5");
  save_opt(&part, path);
  Ctx *cpu = ctx_create_cpu(1);
  OptRun on_cpu = opt_run(cpu, DT_F32, kHyper);
  on_cpu.bf16_grads = true;
  load_opt(&on_cpu, path);
  for (int k = 3; k < 6; k++) opt_step(&on_cpu, k, false);
  for (int i = 0; i < NP; i++) {
    char what[64];
    snprintf(what, sizeof what, "GPU run resumed on the CPU, p%d", i);
    compare(what, gpu, full.opt->master[i], cpu, on_cpu.p[i], OPTIM_EXACT);
  }
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}
