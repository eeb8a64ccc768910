/* One training step of each mode against an independent PyTorch implementation of the same
 * step (tests/fixtures/train_step.py, written from the reference formulas): the loss and the
 * gradient of every student parameter, given the same latents, noise, timesteps / grid
 * indices and embeddings. The inputs are injected into diffusion/objectives.c, the layer the
 * trainer calls after drawing them from its RNG.
 *
 * Tolerances (relative L2, fp32 on both sides; measured errors in brackets): losses, the
 * student's prediction and the target 2e-6 [≤ 5.3e-7: a few fp32 ulps through three UNet
 * passes, the guided combination (1+w)·x0_c − w·x0_u that amplifies rounding by 2w+1 = 5,
 * and x0 from ε at t = 759 that divides by √ᾱ ≈ 0.27]; the teacher-mode gradient 1e-5
 * [1.2e-6: one UNet backward]; the distillation gradient 5e-5 [1.25e-5: the pseudo-Huber
 * gradient d/√(d² + c²) with c = 0.001 turns the prediction's 2e-7 relative error into
 * up to 1e-3 on the few elements where |d| ≈ c]. */
#include <math.h>
#include <string.h>

#include "diffusion/objectives.h"
#include "tests/fixture.h"
#include "tests/test.h"

#define FIXTURE "tests/fixtures/train_step.h5"
#define WEIGHTS "tests/fixtures/model_unet_weights_a.h5"

static UNetConfig config_a(void) {
  UNetConfig c = unet_config_musicldm_diffusers();
  c.levels = 2;
  c.block_out_channels[0] = 4, c.block_out_channels[1] = 16;
  c.attention[0] = false, c.attention[1] = true;
  c.layers_per_block = 1;
  c.norm_groups = 2;
  c.num_heads[0] = c.num_heads[1] = 8;
  c.time_proj_dim = 4;
  c.time_embed_dim = 16;
  c.class_embed_in = 16;
  return c;
}

static Unet *load_a(Ctx *ctx, ParamSet *ps, bool trainable) {
  UNetConfig cfg = config_a();
  params_init(ps, "");
  ps->trainable = trainable;
  Unet *net = unet_create(ctx, &cfg, ps);
  McmErr err;
  ASSERT(unet_load(ctx, net, WEIGHTS, &err) == 0, "%s", err.msg);
  return net;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp((*(Tensor *const *)a)->name, (*(Tensor *const *)b)->name);
}

/* Every gradient of ps, in the order of the sorted names, flattened (as the fixture). */
static Tensor *flat_grads(Ctx *ctx, const ParamSet *ps) {
  Tensor **p = malloc((size_t)ps->n * sizeof *p);
  memcpy(p, ps->p, (size_t)ps->n * sizeof *p);
  qsort(p, (size_t)ps->n, sizeof *p, cmp_names);
  int64_t total = 0;
  for (int i = 0; i < ps->n; i++) total += p[i]->numel;
  Tensor *out = tensor_new_persistent(ctx, DT_F32, SHAPE(total));
  float *h = malloc((size_t)total * sizeof *h), *at = h;
  for (int i = 0; i < ps->n; i++) {
    ASSERT(p[i]->grad, "%s has no gradient", p[i]->name);
    tensor_to_host_f32(ctx, p[i]->grad, at);
    at += p[i]->numel;
  }
  tensor_from_host_f32(ctx, out, h);
  free(h);
  free(p);
  return out;
}

static void ints(Fixture *fx, const char *name, int *out, int n) {
  int64_t k;
  float *v = fixture_values(fx, name, &k);
  ASSERT(k == n, "%s has %lld values", name, (long long)k);
  for (int i = 0; i < n; i++) out[i] = (int)v[i];
  free(v);
}

TEST(train_step_teacher_matches_pytorch) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIXTURE);
  ParamSet ps;
  Unet *net = load_a(ctx, &ps, true);
  Schedule s;
  McmErr err;
  ScheduleConfig sc = schedule_config_musicldm();
  ASSERT(schedule_init(&s, &sc, &err) == 0, "%s", err.msg);
  int t[2];
  ints(fx, "teacher/t", t, 2);
  Tensor *loss = teacher_objective(ctx, net, &s, fixture_tensor(ctx, fx, "teacher/x0", false),
                                   fixture_tensor(ctx, fx, "teacher/noise", false), t,
                                   fixture_tensor(ctx, fx, "teacher/cond", false));
  fixture_expect(ctx, fx, "teacher/loss", loss, 2e-6);
  backward(ctx, loss);
  fixture_expect(ctx, fx, "teacher/grad", flat_grads(ctx, &ps), 1e-5);
  schedule_free(&s);
  params_free(&ps);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(train_step_distill_matches_pytorch) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIXTURE);
  ParamSet ps_s, ps_e, ps_t;
  Unet *student = load_a(ctx, &ps_s, true), *target = load_a(ctx, &ps_e, false), *teacher = load_a(ctx, &ps_t, false);
  Schedule s;
  McmErr err;
  ScheduleConfig sc = schedule_config_musicldm();
  ASSERT(schedule_init(&s, &sc, &err) == 0, "%s", err.msg);
  DistillGrid grid;
  ASSERT(distill_grid(50, 20, 1000, &grid, &err) == 0, "%s", err.msg);
  int index[2];
  ints(fx, "distill/index", index, 2);
  DistillOpts o = {&grid, 2.0f, DISTANCE_HUBER, 0.001f, 0.5, 10.0};
  Tensor *x0 = fixture_tensor(ctx, fx, "distill/x0", false), *noise = fixture_tensor(ctx, fx, "distill/noise", false);
  Tensor *cond = fixture_tensor(ctx, fx, "distill/cond", false), *uncond = fixture_tensor(ctx, fx, "distill/uncond", false);

  /* L2 first (no backward), then pseudo-Huber with its gradient. */
  o.distance = DISTANCE_L2;
  bool was = ctx_set_grad(ctx, false);
  DistillOut l2 = distill_objective(ctx, student, target, teacher, &s, &o, x0, noise, index, cond, uncond);
  /* The L2 loss squares pred − target, which cancels: its relative error is the inputs'
   * (2e-6 each) amplified by (‖pred‖ + ‖target‖)/‖pred − target‖, twice for the square. */
  int64_t np, nt;
  float *p = fixture_values(fx, "distill/pred", &np), *q = fixture_values(fx, "distill/target", &nt);
  ASSERT(np == nt, "pred and target sizes differ in the fixture");
  double sp = 0, sq = 0, sd = 0;
  for (int64_t i = 0; i < np; i++) sp += (double)p[i] * p[i], sq += (double)q[i] * q[i], sd += (double)(p[i] - q[i]) * (p[i] - q[i]);
  free(p), free(q);
  double amplify = (sqrt(sp) + sqrt(sq)) / sqrt(sd);
  fixture_expect(ctx, fx, "distill/loss_l2", l2.loss, 2 * 2e-6 * amplify);
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);

  o.distance = DISTANCE_HUBER;
  DistillOut d = distill_objective(ctx, student, target, teacher, &s, &o, x0, noise, index, cond, uncond);
  fixture_expect(ctx, fx, "distill/target", d.target, 2e-6);
  fixture_expect(ctx, fx, "distill/pred", d.model_pred, 2e-6);
  fixture_expect(ctx, fx, "distill/loss", d.loss, 2e-6);
  backward(ctx, d.loss);
  fixture_expect(ctx, fx, "distill/grad", flat_grads(ctx, &ps_s), 5e-5);
  /* frozen networks get no weight gradients */
  for (int i = 0; i < ps_t.n; i++) EXPECT(!ps_t.p[i]->grad, "teacher %s got a gradient", ps_t.p[i]->name);
  for (int i = 0; i < ps_e.n; i++) EXPECT(!ps_e.p[i]->grad, "target %s got a gradient", ps_e.p[i]->name);
  schedule_free(&s);
  params_free(&ps_s), params_free(&ps_e), params_free(&ps_t);
  fixture_close(fx);
  ctx_destroy(ctx);
}
