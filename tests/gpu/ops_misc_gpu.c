/* matmul, embedding, timestep_embedding, l2_normalize and spectral_norm rows of the GPU op
 * table (make test-gpu), plus what the table cannot see: the spectral norm's u and v after
 * power iterations, the embedding backward's determinism on many repeated ids, and the
 * GPU's out-of-range id error.
 *
 * The rows reach every path: matmul in all four transpose combinations, a shared 2-D b
 * folded into one GEMM (no trans_a) and looped (trans_a), ranks 2 and 5; embedding rows
 * wider than a backward block (D > 128) and ids repeated up to ~12 times; timestep
 * embeddings with both orders, a frequency shift and an odd dim; l2 rows wider than a
 * block (D > 256) and rows clamped at eps; spectral norm rows wider than a block.
 *
 * Tolerances (gpu_check.h rows):
 *  - matmul: GEMM_TOL, as linear (cuBLAS vs OpenBLAS summation order, K ≤ 33).
 *  - embedding: the forward copies; the table gradient adds each row's contributions in
 *    the same order as the CPU: POINTWISE_TOL (bf16: one final rounding).
 *  - timestep embedding: the table needs an input with a gradient, so the row returns
 *    emb ⊙ x (x a case input): dx = emb ⊙ dy then shows the embedding itself. Frequencies
 *    and arguments are bit-identical on both sides (embedding.h), sinf/cosf differ by a
 *    few ulp: POINTWISE_TOL; bf16 rounds emb, then the product: two relative roundings,
 *    inside BF16_POINTWISE's 1e-2.
 *  - l2_normalize and spectral_norm: sums over a row of D (or IN) terms in fp32 on the GPU,
 *    double on the CPU; results that cancel (dx = dy/n − x (x·dy)/n³) carry ~ε·D·|terms|
 *    absolute error, ≈ 3e-6 for D = 600, so F32_GEMM's 1e-4 rather than the pointwise
 *    1e-6. bf16: each result is computed in fp32 from the same bf16 values and rounded
 *    once: BF16_POINTWISE. */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpu_check.h"
#include "kernels/embedding.h" /* until kernels/ops.h includes them */
#include "kernels/matmul.h"
#include "kernels/normalize.h"
#include "tests/test.h"

/* ------------------------------------------------------------------ matmul */

/* op(a) (batch.., M, K) · op(b) (batch.., K, N); nb = 2 shares b over the batch. */
static Tensor *mm_case(OpCase *c, int nbatch, const int64_t *batch, bool shared, int64_t M, int64_t N, int64_t K,
                       bool ta, bool tb) {
  int64_t sa[MCM_MAX_DIMS], sb[MCM_MAX_DIMS];
  int na = nbatch + 2, nb = shared ? 2 : na;
  for (int i = 0; i < nbatch; i++) sa[i] = sb[i] = batch[i];
  sa[na - 2] = ta ? K : M, sa[na - 1] = ta ? M : K;
  sb[nb - 2] = tb ? N : K, sb[nb - 1] = tb ? K : N;
  Tensor *a = case_input(c, "a", -1.0f, 1.0f, na, sa);
  Tensor *b = case_input(c, "b", -1.0f, 1.0f, nb, sb);
  return op_matmul(c->ctx, a, b, ta, tb);
}

static Tensor *fw_mm_nn(OpCase *c) { return mm_case(c, 2, (int64_t[]){2, 3}, false, 5, 6, 4, false, false); }
/* attention scores: Q (B·H, T, D) · Kᵀ */
static Tensor *fw_mm_nt(OpCase *c) { return mm_case(c, 1, (int64_t[]){6}, false, 7, 9, 16, false, true); }
static Tensor *fw_mm_tn(OpCase *c) { return mm_case(c, 1, (int64_t[]){3}, false, 5, 6, 4, true, false); }
static Tensor *fw_mm_tt(OpCase *c) { return mm_case(c, 1, (int64_t[]){2}, false, 5, 6, 4, true, true); }
static Tensor *fw_mm_shared(OpCase *c) { return mm_case(c, 2, (int64_t[]){2, 3}, true, 5, 6, 4, false, false); }
static Tensor *fw_mm_shared_t(OpCase *c) { return mm_case(c, 1, (int64_t[]){3}, true, 5, 6, 4, true, true); }
static Tensor *fw_mm_2d(OpCase *c) { return mm_case(c, 0, NULL, false, 33, 9, 17, false, false); }
static Tensor *fw_mm_5d(OpCase *c) { return mm_case(c, 3, (int64_t[]){2, 1, 2}, false, 3, 5, 4, false, false); }

/* ------------------------------------------------------------------ embeddings */

/* ids (n) with many repeats: (i·i + 7i) mod V. */
static Tensor *ids_tensor(Ctx *ctx, int ndim, const int64_t *shape, int32_t V) {
  Tensor *ids = tensor_new(ctx, DT_I32, ndim, shape);
  int32_t *h = MALLOC_CHECK((size_t)ids->numel * sizeof(int32_t));
  for (int64_t i = 0; i < ids->numel; i++) h[i] = (int32_t)((i * i + 7 * i) % V);
  tensor_from_host_i32(ctx, ids, h);
  free(h);
  return ids;
}

static Tensor *fw_embedding(OpCase *c) {
  Tensor *table = case_input(c, "table", -1.0f, 1.0f, SHAPE(13, 24)); /* (V, D) */
  return op_embedding(c->ctx, table, ids_tensor(c->ctx, SHAPE(3, 7), 13));
}
/* 600 ids over 50 rows (each row ~12 times), D = 200 > the backward's 128 threads. */
static Tensor *fw_embedding_wide(OpCase *c) {
  Tensor *table = case_input(c, "table", -1.0f, 1.0f, SHAPE(50, 200));
  return op_embedding(c->ctx, table, ids_tensor(c->ctx, SHAPE(2, 3, 100), 50));
}

static Tensor *temb_case(OpCase *c, int dim, bool flip, float shift) {
  const float tv[8] = {0.0f, 1.0f, 19.0f, 259.0f, 500.5f, 999.0f, 3.0f, 777.0f};
  Tensor *t = tensor_new(c->ctx, DT_F32, SHAPE(8)); /* timesteps stay fp32 in bf16 runs too */
  tensor_from_host_f32(c->ctx, t, tv);
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, SHAPE(8, dim));
  return op_mul(c->ctx, op_timestep_embedding_as(c->ctx, t, dim, 10000.0f, flip, shift, c->dtype), x);
}
static Tensor *fw_temb_ldm(OpCase *c) { return temb_case(c, 128, true, 0.0f); }
static Tensor *fw_temb_sin(OpCase *c) { return temb_case(c, 32, false, 1.0f); }
static Tensor *fw_temb_odd(OpCase *c) { return temb_case(c, 15, true, 1.0f); }

/* ------------------------------------------------------------------ normalisation */

static Tensor *fw_l2(OpCase *c) {
  return op_l2_normalize(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 5, 37)), 1e-12f);
}
static Tensor *fw_l2_wide(OpCase *c) {
  return op_l2_normalize(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 2, 600)), 1e-12f);
}
/* D = 9 values in [-1, 1): norms ~1.7, so eps = 1.7 clamps about half the rows. */
static Tensor *fw_l2_clamped(OpCase *c) {
  return op_l2_normalize(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(12, 9)), 1.7f);
}

static Tensor *sn_case(OpCase *c, int ndim, const int64_t *shape) {
  Tensor *w = case_input(c, "w", -0.5f, 0.5f, ndim, shape);
  int64_t OUT = shape[0], IN = w->numel / OUT;
  SpectralNorm sn = {tensor_new(c->ctx, DT_F32, SHAPE(OUT)), tensor_new(c->ctx, DT_F32, SHAPE(IN)), 2, 1e-12f};
  float *h = MALLOC_CHECK((size_t)(OUT + IN) * sizeof(float));
  host_uniform(h, OUT + IN, 4242, -1.0f, 1.0f, false);
  tensor_from_host_f32(c->ctx, sn.u, h);
  tensor_from_host_f32(c->ctx, sn.v, h + OUT);
  free(h);
  return op_spectral_norm(c->ctx, &sn, w, true);
}
static Tensor *fw_sn_conv1d(OpCase *c) { return sn_case(c, SHAPE(7, 5, 3)); }
static Tensor *fw_sn_wide(OpCase *c) { return sn_case(c, SHAPE(24, 100, 3)); } /* IN = 300 > 256 */

#define ROW_SUM_TOL {F32_GEMM, BF16_POINTWISE}
static const OpEntry MISC_OPS[] = {
    {"matmul_nn", fw_mm_nn, GEMM_TOL, false},
    {"matmul_nt", fw_mm_nt, GEMM_TOL, false},
    {"matmul_tn", fw_mm_tn, GEMM_TOL, false},
    {"matmul_tt", fw_mm_tt, GEMM_TOL, false},
    {"matmul_shared_b", fw_mm_shared, GEMM_TOL, false},
    {"matmul_shared_b_tt", fw_mm_shared_t, GEMM_TOL, false},
    {"matmul_2d", fw_mm_2d, GEMM_TOL, false},
    {"matmul_5d", fw_mm_5d, GEMM_TOL, false},
    {"embedding", fw_embedding, POINTWISE_TOL, false},
    {"embedding_wide", fw_embedding_wide, POINTWISE_TOL, true},
    {"timestep_emb_ldm", fw_temb_ldm, POINTWISE_TOL, false},
    {"timestep_emb_sin", fw_temb_sin, POINTWISE_TOL, false},
    {"timestep_emb_odd", fw_temb_odd, POINTWISE_TOL, false},
    {"l2_normalize", fw_l2, ROW_SUM_TOL, false},
    {"l2_normalize_wide", fw_l2_wide, ROW_SUM_TOL, false},
    {"l2_normalize_clamped", fw_l2_clamped, ROW_SUM_TOL, false},
    {"spectral_norm_conv1d", fw_sn_conv1d, ROW_SUM_TOL, false},
    {"spectral_norm_wide", fw_sn_wide, ROW_SUM_TOL, true},
};
GPU_OPS_REGISTER(MISC_OPS)

/* ------------------------------------------------------------------ beyond the table */

static Ctx *misc_gpu_ctx(void) {
  if (cuda_device_count() == 0) {
    printf("skipped: no GPU present\n");
    return NULL;
  }
  McmErr err = {{0}};
  Ctx *ctx = ctx_create(&(DeviceSpec){DEV_CUDA, 0, false}, 1, &err);
  ASSERT(ctx && ctx->dev == DEV_CUDA, "cannot create a CUDA context: %s", err.msg);
  return ctx;
}

/* u and v after three training-mode calls (6 power iterations), GPU against CPU. They are
 * unit vectors computed from sums of IN = 300 terms, fp32 against double: 1e-5. */
TEST(gpu_misc_spectral_norm_u_v_match_cpu) {
  Ctx *gpu = misc_gpu_ctx();
  if (!gpu) return;
  Ctx *cpu = ctx_create_cpu(1);
  for (int p = 0; p < 2; p++) {
    DType dt = p ? DT_BF16 : DT_F32;
    float got[2][324], ref[2][324];
    for (int side = 0; side < 2; side++) {
      Ctx *ctx = side ? gpu : cpu;
      OpCase c = {.ctx = ctx, .dtype = side ? dt : DT_F32, .bf16_values = p == 1};
      Tensor *w = case_input(&c, "w", -0.5f, 0.5f, SHAPE(24, 100, 3));
      SpectralNorm sn = {tensor_new(ctx, DT_F32, SHAPE(24)), tensor_new(ctx, DT_F32, SHAPE(300)), 2, 1e-12f};
      float h[324];
      host_uniform(h, 324, 4242, -1.0f, 1.0f, false);
      tensor_from_host_f32(ctx, sn.u, h);
      tensor_from_host_f32(ctx, sn.v, h + 24);
      bool was = ctx_set_grad(ctx, false);
      for (int i = 0; i < 3; i++) op_spectral_norm(ctx, &sn, w, true);
      ctx_set_grad(ctx, was);
      float *dst = side ? got[p] : ref[p];
      tensor_to_host_f32(ctx, sn.u, dst);
      tensor_to_host_f32(ctx, sn.v, dst + 24);
      ctx_step_reset(ctx);
    }
    char what[64];
    snprintf(what, sizeof what, "spectral_norm u, v (%s weight)", dtype_name(dt));
    check_close(what, got[p], ref[p], 324, (Tol){1e-5f, 1e-5f}, NULL);
  }
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}

/* 3000 ids over 7 rows (~430 repeats each): two GPU runs give identical bits, and they
 * match the CPU's in-order sums to fp32 rounding (sums of ~430 terms in [-1, 1)). */
TEST(gpu_misc_embedding_backward_deterministic) {
  Ctx *gpu = misc_gpu_ctx();
  if (!gpu) return;
  Ctx *cpu = ctx_create_cpu(1);
  float g[3][7 * 33];
  for (int run = 0; run < 3; run++) {
    Ctx *ctx = run < 2 ? gpu : cpu;
    OpCase c = {.ctx = ctx, .dtype = DT_F32};
    Tensor *table = case_input(&c, "table", -1.0f, 1.0f, SHAPE(7, 33));
    Tensor *y = op_embedding(ctx, table, ids_tensor(ctx, SHAPE(3000), 7));
    Tensor *dy = case_const(&c, -1.0f, 1.0f, y->ndim, y->shape);
    backward_from(ctx, y, dy);
    tensor_to_host_f32(ctx, table->grad, g[run]);
    ctx_step_reset(ctx);
  }
  EXPECT(!memcmp(g[0], g[1], sizeof g[0]), "two GPU runs of the embedding backward differ");
  check_close("embedding dtable, GPU vs CPU", g[0], g[2], 7 * 33, (Tol){1e-5f, 1e-6f}, NULL);
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}

/* A bad id on the GPU must stop the program naming it (exit 1). CUDA may not be used in a
 * forked child once the parent has initialised it, so the child does all the CUDA work. */
TEST(gpu_misc_embedding_bad_id_is_fatal) {
  int fds[2];
  ASSERT(pipe(fds) == 0, "pipe failed");
  pid_t pid = fork();
  ASSERT(pid >= 0, "fork failed");
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    if (cuda_device_count() == 0) _exit(77);
    McmErr err = {{0}};
    Ctx *ctx = ctx_create(&(DeviceSpec){DEV_CUDA, 0, false}, 1, &err);
    if (!ctx || ctx->dev != DEV_CUDA) _exit(78);
    Tensor *table = tensor_zeros(ctx, DT_F32, SHAPE(5, 8));
    Tensor *ids = tensor_new(ctx, DT_I32, SHAPE(2, 3));
    tensor_from_host_i32(ctx, ids, (const int32_t[]){0, 4, 1, 2, 9, 5});
    op_embedding(ctx, table, ids);
    _exit(0);
  }
  close(fds[1]);
  char buf[4096] = {0};
  size_t len = 0;
  ssize_t r;
  while (len < sizeof buf - 1 && (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
    printf("skipped: no GPU present\n");
    return;
  }
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 1, "expected exit 1, got status %d", status);
  EXPECT_STR_CONTAINS(buf, "embedding: id 9 at position 4 is outside the table's 5 rows");
}
