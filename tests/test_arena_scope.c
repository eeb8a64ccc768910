/* Arena scopes (kernels/context.h: ctx_mark / ctx_release / ctx_release_keep and the
 * model-facing ctx_scope_begin / ctx_scope_end): memory comes back and is reused at the mark,
 * a kept tensor keeps its values (also across arena blocks and when it overlaps its new
 * place), grad mode is refused or skipped, and the models give bit-identical outputs with
 * scopes on and off while the vocoder's peak activation memory drops to a few stage outputs. */
#include <string.h>

#include "kernels/ops.h"
#include "kernels/rng.h"
#include "kernels/tape.h"
#include "models/hifigan.h"
#include "models/unet.h"
#include "models/vae.h"
#include "test.h"

#define R256(n) (((size_t)(n) + 255) & ~(size_t)255)

/* A context whose arena chains small blocks, so block boundaries are easy to cross. */
static Ctx *small_block_ctx(size_t min_block) {
  Ctx *ctx = ctx_create_cpu(7);
  ctx->act.min_block = min_block;
  return ctx;
}

static Tensor *filled(Ctx *ctx, int64_t n, float base) {
  Tensor *t = tensor_new(ctx, DT_F32, SHAPE(n));
  for (int64_t i = 0; i < n; i++) ((float *)t->data)[i] = base + (float)i;
  return t;
}

static bool holds(const Tensor *t, float base) {
  for (int64_t i = 0; i < t->numel; i++)
    if (((const float *)t->data)[i] != base + (float)i) return false;
  return true;
}

TEST(scope_release_reuses_memory_at_the_mark) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *a = filled(ctx, 100, 1.0f);
  size_t act = ctx->act.used, host = ctx->host.used;
  ArenaMark m = ctx_mark(ctx);
  Tensor *b = filled(ctx, 1000, 2.0f);
  (void)filled(ctx, 3000, 3.0f);
  ctx_release(ctx, m);
  EXPECT(ctx->act.used == act && ctx->host.used == host, "used %zu/%zu, expected %zu/%zu", ctx->act.used,
         ctx->host.used, act, host);
  Tensor *c = tensor_new(ctx, DT_F32, SHAPE(5));
  EXPECT(c->data == b->data, "the next allocation is not at the mark");
  EXPECT(holds(a, 1.0f), "a tensor from before the mark changed");
  ctx_destroy(ctx);
}

TEST(scope_keep_moves_result_down_with_its_values) {
  Ctx *ctx = ctx_create_cpu(1);
  (void)filled(ctx, 10, 0.0f);
  ArenaMark m = ctx_mark(ctx);
  Tensor *x = filled(ctx, 1000, 5.0f);
  Tensor *y = filled(ctx, 333, 9.0f); /* odd size: 1332 bytes, rounded to 1536 */
  void *at_mark = x->data;
  Tensor *k = ctx_release_keep(ctx, m, y);
  EXPECT(k->data == at_mark, "the kept tensor is not at the mark");
  EXPECT(k->numel == 333 && k->ndim == 1 && k->shape[0] == 333, "header changed");
  EXPECT(holds(k, 9.0f), "values lost in the move");
  EXPECT(ctx->act.used == m.act.used + R256(333 * 4), "used %zu", ctx->act.used);
  Tensor *next = tensor_new(ctx, DT_F32, SHAPE(1));
  EXPECT((char *)next->data == (char *)at_mark + R256(333 * 4), "the next allocation is not right after keep");
  ctx_destroy(ctx);
}

TEST(scope_keep_overlapping_move_in_one_block) {
  Ctx *ctx = ctx_create_cpu(1);
  ArenaMark m = ctx_mark(ctx);
  Tensor *x = filled(ctx, 64, 0.0f);   /* 256 bytes */
  Tensor *y = filled(ctx, 5000, 4.0f); /* 20000 bytes: its new place overlaps its old one */
  void *at_mark = x->data;
  Tensor *k = ctx_release_keep(ctx, m, y);
  EXPECT(k->data == at_mark && holds(k, 4.0f), "overlapping move lost values");
  ctx_destroy(ctx);
}

TEST(scope_keep_across_blocks) {
  Ctx *ctx = small_block_ctx(4096);
  /* Case 1: the mark's block has room; keep lives two blocks later. */
  Tensor *a = filled(ctx, 256, 1.0f); /* 1024 of 4096 bytes in block 1 */
  ArenaMark m = ctx_mark(ctx);
  (void)filled(ctx, 2048, 2.0f);      /* 8192 bytes: block 2, full */
  Tensor *c = filled(ctx, 100, 3.0f); /* block 3 */
  Tensor *k = ctx_release_keep(ctx, m, c);
  EXPECT((char *)k->data == (char *)a->data + 1024, "keep not moved to the mark in the first block");
  EXPECT(holds(k, 3.0f) && holds(a, 1.0f), "values lost");
  EXPECT(ctx->act.used == 1024 + 512, "used %zu", ctx->act.used);
  ctx_step_reset(ctx);

  /* Case 2: the mark's block is full; keep stays in (the start of) its own block. */
  Tensor *full = filled(ctx, 1024, 1.0f); /* 4096 bytes */
  m = ctx_mark(ctx);
  (void)filled(ctx, 300, 6.0f);
  (void)filled(ctx, 4000, 7.0f);        /* a block of its own, full */
  Tensor *f = filled(ctx, 100, 5.0f);   /* a new 4096-byte block: 512 bytes, then d */
  Tensor *d = filled(ctx, 500, 8.0f);
  k = ctx_release_keep(ctx, m, d);
  EXPECT(k->data == f->data, "keep not moved to the start of its block");
  EXPECT(holds(k, 8.0f) && holds(full, 1.0f), "values lost");
  EXPECT(ctx->act.used == m.act.used + R256(500 * 4), "used %zu", ctx->act.used);
  Tensor *e = filled(ctx, 10, 9.0f);
  EXPECT((char *)e->data == (char *)k->data + R256(500 * 4), "next allocation not after keep");
  ctx_release(ctx, m);
  EXPECT(ctx->act.used == m.act.used, "released all but %zu", ctx->act.used);
  ctx_destroy(ctx);
}

TEST(scope_high_water_folds_to_one_block) {
  Ctx *ctx = small_block_ctx(4096);
  for (int step = 0; step < 3; step++) {
    Tensor *a = filled(ctx, 1024, 1.0f);
    ArenaMark m = ctx_mark(ctx);
    for (int i = 0; i < 4; i++) {
      ArenaMark inner = ctx_mark(ctx);
      (void)filled(ctx, 3000, 2.0f);
      ctx_release(ctx, inner);
    }
    Tensor *b = filled(ctx, 2000, 3.0f);
    b = ctx_release_keep(ctx, m, b);
    EXPECT(holds(b, 3.0f), "step %d: values lost", step);
    /* One live tensor of 4096 and one of 12032 bytes at the peak. */
    EXPECT(ctx->act.high_water == 4096 + R256(3000 * 4), "step %d: high water %zu", step, ctx->act.high_water);
    if (step > 0) /* after folding: one block, so the kept tensor sits right above a */
      EXPECT((char *)b->data == (char *)a->data + 4096, "step %d: the arena still chains blocks", step);
    ctx_step_reset(ctx);
  }
  ctx_destroy(ctx);
}

TEST(scope_keep_of_tensor_from_before_the_mark) {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *a = filled(ctx, 50, 1.0f);
  ArenaMark m = ctx_mark(ctx);
  Tensor *v = op_reshape(ctx, a, SHAPE(5, 10)); /* header after the mark, data before */
  (void)filled(ctx, 100, 2.0f);
  Tensor *k = ctx_release_keep(ctx, m, v);
  EXPECT(k->data == a->data && k->ndim == 2 && k->shape[1] == 10, "view not kept");
  EXPECT(ctx->act.used == m.act.used, "used %zu", ctx->act.used);
  ctx_destroy(ctx);
}

/* A recording op after the mark: z = p ⊙ x with a trainable p. */
static void record_one(Ctx *ctx) {
  Tensor *p = param_new(ctx, "p", DT_F32, SHAPE(4), true);
  Tensor *x = tensor_zeros(ctx, DT_F32, SHAPE(4));
  (void)op_mul(ctx, p, x);
}

TEST_EXIT_MSG(scope_release_refused_after_tape_records, 1, "the tape recorded 1 node(s) since the mark") {
  Ctx *ctx = ctx_create_cpu(1);
  ArenaMark m = ctx_mark(ctx);
  record_one(ctx);
  ctx_release(ctx, m);
}

TEST_EXIT_MSG(scope_release_refused_after_reset, 1, "the mark is from before ctx_step_reset") {
  Ctx *ctx = ctx_create_cpu(1);
  ArenaMark m = ctx_mark(ctx);
  ctx_step_reset(ctx);
  ctx_release(ctx, m);
}

TEST_EXIT_MSG(scope_release_refused_out_of_order, 1, "release marks innermost first") {
  Ctx *ctx = ctx_create_cpu(1);
  (void)filled(ctx, 10, 0.0f);
  ArenaMark outer = ctx_mark(ctx);
  (void)filled(ctx, 10, 0.0f);
  ArenaMark inner = ctx_mark(ctx);
  (void)filled(ctx, 10, 0.0f);
  ctx_release(ctx, outer);
  ctx_release(ctx, inner);
}

TEST(scope_end_skips_in_grad_mode_and_when_off) {
  Ctx *ctx = ctx_create_cpu(1);
  ArenaMark m = ctx_scope_begin(ctx);
  record_one(ctx);
  Tensor *y = filled(ctx, 10, 1.0f);
  size_t used = ctx->act.used;
  EXPECT(ctx_scope_end(ctx, m, y) == y && ctx->act.used == used, "a scope released recorded activations");
  ctx_step_reset(ctx);
  ctx->scopes_off = true;
  m = ctx_scope_begin(ctx);
  y = filled(ctx, 10, 1.0f);
  used = ctx->act.used;
  EXPECT(ctx_scope_end(ctx, m, y) == y && ctx->act.used == used, "scopes_off did not turn the scope off");
  ctx->scopes_off = false;
  m = ctx_scope_begin(ctx);
  y = filled(ctx, 10, 1.0f);
  y = ctx_scope_end(ctx, m, y);
  EXPECT(ctx->act.used == m.act.used + 256 && holds(y, 1.0f), "scope did not release");
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- models, scopes on vs off */

typedef Tensor *(*RunFn)(Ctx *ctx, void *model, Tensor *in);
typedef struct Run {
  float *out;
  int64_t n;
  size_t peak; /* activation bytes at the peak, above what was live before the call */
} Run;

/* The model on `in` (persistent) in no-grad mode, with scopes off or on. */
static Run run_model(Ctx *ctx, RunFn fn, void *model, Tensor *in, bool scopes) {
  ctx_step_reset(ctx);
  ctx->act.high_water = ctx->act.used; /* measure this call only */
  bool was = ctx_set_grad(ctx, false);
  ctx->scopes_off = !scopes;
  Tensor *y = fn(ctx, model, in);
  Run r = {MALLOC_CHECK((size_t)y->numel * sizeof(float)), y->numel, ctx->act.high_water};
  tensor_to_host_f32(ctx, y, r.out);
  ctx->scopes_off = false;
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);
  return r;
}

static void expect_identical(Run off, Run on, const char *what) {
  EXPECT(off.n == on.n && !memcmp(off.out, on.out, (size_t)on.n * sizeof(float)),
         "%s: outputs differ with scopes on", what);
  EXPECT(on.peak <= off.peak, "%s: the peak grew with scopes (%zu > %zu)", what, on.peak, off.peak);
  free(off.out);
  free(on.out);
}

static Tensor *run_hifigan(Ctx *ctx, void *m, Tensor *in) { return hifigan_forward(ctx, m, in); }
static Tensor *run_vae(Ctx *ctx, void *m, Tensor *in) { return vae_decode(ctx, m, in); }
typedef struct UnetArgs {
  Unet *net;
  Tensor *t, *cond;
} UnetArgs;
static Tensor *run_unet(Ctx *ctx, void *u, Tensor *in) {
  UnetArgs *a = u;
  return unet_forward(ctx, a->net, in, a->t, a->cond);
}

static Tensor *random_persistent(Ctx *ctx, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  rng_normal(ctx, t);
  return t;
}

TEST(scope_hifigan_identical_and_peak_is_a_few_stage_outputs) {
  Ctx *ctx = ctx_create_cpu(3);
  HifiganConfig c = {
      .model_in_dim = 8,
      .sampling_rate = 16000,
      .upsample_initial_channel = 32,
      .n_upsamples = 3,
      .upsample_rates = {3, 2, 2},
      .upsample_kernel_sizes = {6, 4, 4},
      .n_kernels = 3,
      .resblock_kernel_sizes = {3, 5, 7},
      .n_dilations = {3, 3, 3},
      .resblock_dilation_sizes = {{1, 3, 5}, {1, 3, 5}, {1, 3, 5}},
      .leaky_relu_slope = 0.1f,
  };
  ParamSet ps;
  params_init(&ps, "");
  Hifigan *m = hifigan_create(ctx, &c, &ps);
  hifigan_init_random(ctx, m);
  const int64_t B = 2, T = 37;
  Tensor *mel = random_persistent(ctx, SHAPE(B, T, 8));
  Run off = run_model(ctx, run_hifigan, m, mel, false), on = run_model(ctx, run_hifigan, m, mel, true);
  /* The largest stage tensor S = (B, C_i, L_i) (all three are equal here) and the bound: at
   * the peak a stage holds its input and its leaky_relu (at most S each), the upsampled x,
   * the running sum, a resblock's x and one dilation step's five tensors: 10 S (in stage 0
   * the input is conv_pre's output, smaller, with the transposed mel below it). */
  size_t stage = 0;
  int64_t L = T;
  for (int i = 0; i < c.n_upsamples; i++) {
    int u = c.upsample_rates[i], k = c.upsample_kernel_sizes[i];
    L = (L - 1) * u - 2 * ((k - u) / 2) + k;
    size_t s = R256((size_t)B * (size_t)(c.upsample_initial_channel >> (i + 1)) * (size_t)L * 4);
    if (s > stage) stage = s;
  }
  size_t pre = R256((size_t)B * 8 * T * 4);
  EXPECT(on.peak <= 10 * stage + pre, "peak %zu > 10 stage outputs of %zu + %zu", on.peak, stage, pre);
  EXPECT(off.peak >= 4 * on.peak, "peak only fell from %zu to %zu", off.peak, on.peak);
  printf("hifigan peak: %zu bytes without scopes, %zu with (stage output %zu)\n", off.peak, on.peak, stage);
  expect_identical(off, on, "hifigan");
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(scope_vae_decoder_identical_and_smaller) {
  Ctx *ctx = ctx_create_cpu(4);
  VaeConfig c = vae_config_musicldm();
  c.n_blocks = 3, c.block_out_channels[0] = 8, c.block_out_channels[1] = 16, c.block_out_channels[2] = 16;
  c.layers_per_block = 2, c.norm_num_groups = 4, c.latent_channels = 4;
  ParamSet ps;
  params_init(&ps, "");
  Vae *v = vae_create(ctx, &c, &ps);
  vae_init_random(ctx, v);
  Tensor *z = random_persistent(ctx, SHAPE(2, 4, 12, 5));
  Run off = run_model(ctx, run_vae, v, z, false), on = run_model(ctx, run_vae, v, z, true);
  EXPECT(off.peak >= 3 * on.peak, "peak only fell from %zu to %zu", off.peak, on.peak);
  printf("vae decoder peak: %zu bytes without scopes, %zu with\n", off.peak, on.peak);
  expect_identical(off, on, "vae decoder");
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(scope_unet_identical_and_smaller) {
  Ctx *ctx = ctx_create_cpu(5);
  UNetConfig c = unet_config_musicldm();
  c.levels = 3;
  int ch[] = {4, 8, 12};
  for (int l = 0; l < 3; l++) c.block_out_channels[l] = ch[l], c.attention[l] = l > 0;
  c.layers_per_block = 2, c.norm_groups = 2, c.num_head_channels = 4;
  c.time_proj_dim = 4, c.time_embed_dim = 16, c.class_embed_in = 16;
  ParamSet ps;
  params_init(&ps, "");
  UnetArgs a = {unet_create(ctx, &c, &ps), NULL, NULL};
  unet_init_random(ctx, a.net);
  a.t = tensor_new_persistent(ctx, DT_F32, SHAPE(2));
  tensor_from_host_f32(ctx, a.t, (const float[]){17.0f, 801.0f});
  a.cond = random_persistent(ctx, SHAPE(2, 16));
  Tensor *x = random_persistent(ctx, SHAPE(2, c.in_channels, 12, 8));
  Run off = run_model(ctx, run_unet, &a, x, false), on = run_model(ctx, run_unet, &a, x, true);
  EXPECT(off.peak >= 2 * on.peak, "peak only fell from %zu to %zu", off.peak, on.peak);
  printf("unet peak: %zu bytes without scopes, %zu with\n", off.peak, on.peak);
  expect_identical(off, on, "unet");
  params_free(&ps);
  ctx_destroy(ctx);
}

/* In grad mode with a trainable input, the scopes must not free what backward needs: the
 * input gradient is the same with scopes allowed and off. */
TEST(scope_vae_decoder_backward_unaffected) {
  float *g[2];
  for (int pass = 0; pass < 2; pass++) {
    Ctx *ctx = ctx_create_cpu(4);
    VaeConfig c = vae_config_musicldm();
    c.n_blocks = 2, c.block_out_channels[0] = 4, c.block_out_channels[1] = 8;
    c.layers_per_block = 1, c.norm_num_groups = 2, c.latent_channels = 2;
    ParamSet ps;
    params_init(&ps, "");
    Vae *v = vae_create(ctx, &c, &ps);
    vae_init_random(ctx, v);
    params_set_trainable(ctx, &ps, false);
    Tensor *z = random_persistent(ctx, SHAPE(2, 2, 6, 4));
    z->requires_grad = true;
    ctx->scopes_off = pass == 1;
    Tensor *y = vae_decode(ctx, v, z);
    backward(ctx, op_sum(ctx, op_mul(ctx, y, y)));
    g[pass] = MALLOC_CHECK((size_t)z->numel * sizeof(float));
    tensor_to_host_f32(ctx, z->grad, g[pass]);
    EXPECT(pass == 0 || !memcmp(g[0], g[1], (size_t)z->numel * sizeof(float)), "gradients differ");
    params_free(&ps);
    ctx_destroy(ctx);
  }
  free(g[0]);
  free(g[1]);
}
