/* One whole MusicCM distillation step — student, EMA target, teacher, VAE decoder, bridge,
 * AudioMAE, heads, generator loss, hinge, R1, both AdamWs, the clip and the EMA update —
 * against an independent PyTorch implementation of the same step written from the reference
 * formulas (tests/fixtures/full_step.py).
 *
 * The step under test is the trainer's own: trainer_create on configs/tiny.ini with the
 * fixture's --set lines (its attribute mcm_config), then one trainer_step, whose batch and
 * random draws (latent ε, grid indices, noise) come from the fixture through the trainer's
 * test hook (trainer_set_draws) instead of the loader and the RNG. So the order of the real
 * step is what is checked: distillation loss, decode, generator loss, L = G + λ·L_distill,
 * backward, the heads' step on the detached fake, clip, AdamW, EMA. The teacher, the student's
 * initial weights and the shards are written to the test's directory from the fixture; the
 * heads' initial weights are loaded over the trainer's random ones.
 *
 * Compared (relative L2, fp32 on both sides; measured errors in brackets):
 *   losses: distill, G, total, D real, D fake, R1, the pre-clip gradient norm   2e-5  [1.4e-6]
 *     (two UNet passes, the guided combination that amplifies rounding by 2w + 1 = 5, the VAE
 *     decoder, AudioMAE and the heads, each a few fp32 ulps; the total G + λ·L_distill
 *     partly cancels: −1.12 + 3·0.074)
 *   D accuracy exactly (the smallest |logit| is 4e-3, far above the logits' errors)
 *   the student's gradients, before the clip                                  1e-4  [1.8e-5]
 *     (the project's bar for models in fp32: test_train_step.c's pseudo-Huber amplification
 *     of the prediction's error, 1.25e-5 there, plus the generator term's path back through
 *     the heads, AudioMAE, the bridge and the decoder)
 *   each head's gradient (hinge + R1; mcm's R1 exact, PyTorch's double backward) 1e-4 [5.5e-6]
 *     conv biases that feed BatchNormLocal have exactly-zero gradients: both sides ~1e-7 noise,
 *     checked absolutely
 *   the student's, the EMA's and each head's change in the step (after − before): 1e-4
 *     (student, EMA), 1e-5 (heads: their AdamW eps is 1e-8, so the first step is lr·sign(g)
 *     plus weight decay), each plus the fp32 rounding floor of a small change added to larger
 *     values (expect_change): student [2.7e-5, bound 1.6e-4], EMA [1.6e-4, bound 1.3e-3: its
 *     change is a twentieth of the student's], heads [9.5e-7]. The student's adam_eps (2e-3)
 *     is near the clipped gradients' scale, so its update follows the gradients' size and
 *     errors instead of lr·sign(g). Biases with zero gradient: moved by at most lr.
 *   the heads' spectral-norm vectors after the step's three power iterations 1e-5  [1.3e-7]
 * Each part leaves a trace far above these tolerances (checked by removing it from the code
 * once): without R1 the head gradients are off by rel L2 0.36–0.81, without the hinge by
 * 0.5–1, without the generator term the student's gradient by 0.083, without λ by 0.68,
 * without the clip the student's change by 0.36, without the EMA update or either AdamW the
 * change they make by 1. */
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/tensorfile.h"
#include "data/loader.h"
#include "data/shard.h"
#include "diffusion/adversarial.h"
#include "diffusion/trainer.h"
#include "models/unet.h"
#include "tests/fixture.h"
#include "tests/test.h"

#define FIX "tests/fixtures/full_step.h5"
#define TINY "configs/tiny.ini"
#define MAX_SETS 96

static int cmp_names(const void *a, const void *b) {
  return strcmp((*(Tensor *const *)a)->name, (*(Tensor *const *)b)->name);
}

/* ps's tensors sorted by name (the fixture's flat order); free the result. */
static Tensor **sorted_params(const ParamSet *ps, int64_t *total) {
  Tensor **p = MALLOC_CHECK((size_t)ps->n * sizeof *p);
  memcpy(p, ps->p, (size_t)ps->n * sizeof *p);
  qsort(p, (size_t)ps->n, sizeof *p, cmp_names);
  *total = 0;
  for (int i = 0; i < ps->n; i++) *total += p[i]->numel;
  return p;
}

/* The values (grads = false) or gradients of ps, flattened in sorted-name order, as a tensor. */
static Tensor *flat(Ctx *ctx, const ParamSet *ps, bool grads) {
  int64_t total;
  Tensor **p = sorted_params(ps, &total);
  float *h = MALLOC_CHECK((size_t)total * sizeof *h), *at = h;
  for (int i = 0; i < ps->n; i++) {
    const Tensor *src = grads ? p[i]->grad : p[i];
    ASSERT(src, "%s has no gradient", p[i]->name);
    tensor_to_host_f32(ctx, src, at);
    at += p[i]->numel;
  }
  Tensor *out = tensor_new_persistent(ctx, DT_F32, SHAPE(total));
  tensor_from_host_f32(ctx, out, h);
  free(h);
  free(p);
  return out;
}

/* The UNet of the fixture's [unet] lines (16 channels, 8-channel heads), as the trainer builds
 * it; only its parameter names and shapes are used here, to write weight files. */
static UNetConfig fixture_unet(void) {
  UNetConfig u = unet_config_musicldm();
  u.in_channels = u.out_channels = 2;
  u.levels = 2;
  u.block_out_channels[0] = 8, u.block_out_channels[1] = 16;
  u.attention[0] = false, u.attention[1] = true;
  u.layers_per_block = 1;
  u.norm_groups = 4;
  u.num_head_channels = 8;
  u.time_proj_dim = 8, u.time_embed_dim = 32;
  u.class_embed_in = 16;
  return u;
}

/* The flat fixture entry `name` as a converted UNet weight file at path. */
static void write_unet(Fixture *fx, const char *name, const char *path) {
  Ctx *ctx = ctx_create_cpu(0);
  UNetConfig cfg = fixture_unet();
  ParamSet ps;
  params_init(&ps, "");
  unet_create(ctx, &cfg, &ps);
  int64_t total, n;
  Tensor **p = sorted_params(&ps, &total);
  float *v = fixture_values(fx, name, &n), *at = v;
  ASSERT(n == total, "%s has %lld values, the UNet %lld", name, (long long)n, (long long)total);
  for (int i = 0; i < ps.n; i++) {
    tensor_from_host_f32(ctx, p[i], at);
    at += p[i]->numel;
  }
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf && params_save(ctx, &ps, tf, "", DT_F32, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  free(v), free(p);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* One shard holding the fixture's batch, and encoders.h5 (∅ and the latent scale), in dir:
 * what trainer_create checks. The step itself reads the batch through the hook. */
static void write_data(Fixture *fx, const char *dir, const Config *cfg, const Batch *b) {
  McmErr err;
  char path[700];
  snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
  ShardInfo info = {b->frames, b->n_mels, (int)cfg->mel.rate, (int)cfg->mel.hop};
  ShardWriter *w = shard_create(path, &info, &err);
  ASSERT(w, "%s", err.msg);
  for (int i = 0; i < b->n; i++)
    ASSERT(shard_append(w, b->mel + (size_t)i * b->frames * b->n_mels, "a caption", "full_step.py", 0, &err) == 0,
           "%s", err.msg);
  ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
  ASSERT(shard_add_latents(path, b->latent, b->latent_dims[0], b->latent_dims[1], b->latent_dims[2], &err) == 0, "%s",
         err.msg);
  ASSERT(shard_add_text_emb(path, b->text_emb, b->emb_dim, &err) == 0, "%s", err.msg);
  snprintf(path, sizeof path, "%s/encoders.h5", dir);
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  int64_t n;
  float *un = fixture_values(fx, "in/uncond", &n), *scale = fixture_values(fx, "in/scale", &n);
  ASSERT(tf_write(tf, "uncond_text_emb", DT_F32, 1, (int64_t[]){b->emb_dim}, un, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "vae_scaling_factor", DT_F32, 0, NULL, scale, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "format", "mcm-encoders 1", &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  free(un), free(scale);
}

/* configs/tiny.ini with the fixture's --set lines, the paths under dir, then `more`. */
static void resolve_more(Fixture *fx, const char *dir, Config *cfg, const char *const *more, int n_more) {
  McmErr err;
  char *text = NULL;
  ASSERT(tf_get_attr(fx, "mcm_config", &text, &err) == 0, "%s", err.msg);
  char *sets[MAX_SETS], paths[5][700];
  int n = 0;
  for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    ASSERT(n < MAX_SETS - 5 - n_more, "too many configuration lines in %s", FIX);
    sets[n++] = line;
  }
  snprintf(paths[0], sizeof paths[0], "data.train_shards=%s/data/shard_*.h5", dir);
  snprintf(paths[1], sizeof paths[1], "teacher.weights=%s/teacher.h5", dir);
  snprintf(paths[2], sizeof paths[2], "student.init=%s/student.h5", dir);
  snprintf(paths[3], sizeof paths[3], "checkpoint.dir=%s/run/ckpt", dir);
  snprintf(paths[4], sizeof paths[4], "run.out_dir=%s/run", dir);
  for (int i = 0; i < 5; i++) sets[n++] = paths[i];
  for (int i = 0; i < n_more; i++) sets[n++] = (char *)more[i];
  ASSERT(config_resolve(cfg, TINY, n, sets, &err) == 0, "%s", err.msg);
  free(text);
}

static void resolve(Fixture *fx, const char *dir, Config *cfg) { resolve_more(fx, dir, cfg, NULL, 0); }

/* What the step's gradients were when complete (the hook's callback): the student's flat,
 * before the clip, and a copy of each head weight's. */
typedef struct Captured {
  Trainer *t;
  Tensor *student;
  Tensor **heads;
  int n_heads;
} Captured;

static void capture(Ctx *ctx, void *user) {
  Captured *c = user;
  TrainerParts parts = trainer_parts(c->t);
  c->student = flat(ctx, parts.student, true);
  Tensor **p = adv_head_params(parts.adv, &c->n_heads);
  c->heads = MALLOC_CHECK((size_t)c->n_heads * sizeof *c->heads);
  for (int i = 0; i < c->n_heads; i++) {
    ASSERT(p[i]->grad, "head %s has no gradient", p[i]->name);
    float *h = MALLOC_CHECK((size_t)p[i]->numel * sizeof *h);
    tensor_to_host_f32(ctx, p[i]->grad, h);
    c->heads[i] = tensor_new_persistent(ctx, DT_F32, p[i]->ndim, p[i]->shape);
    tensor_from_host_f32(ctx, c->heads[i], h);
    free(h);
  }
}

static double norm2_host(const float *v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)v[i] * v[i];
  return sqrt(s);
}

static double tensor_norm2(Ctx *ctx, const Tensor *t) {
  float *v = MALLOC_CHECK((size_t)t->numel * sizeof *v);
  tensor_to_host_f32(ctx, t, v);
  double n = norm2_host(v, t->numel);
  free(v);
  return n;
}

/* ‖(got − before) − (ref − before)‖ / ‖ref − before‖: the change in the step, both sides
 * starting from the fixture's `before`. A change much smaller than the values it is added to
 * carries their fp32 rounding: each side rounds the new value a few times, about 2^-24·|value|
 * each, so ‖rounding‖/‖change‖ ≈ 2^-24·‖after‖/‖change‖ (the EMA's: 7e-4, a twentieth of the
 * student's change added to O(0.3) weights). The tolerance is tol for the arithmetic plus four
 * such roundings. */
static double expect_change(Ctx *ctx, Fixture *fx, const char *after, const char *before, const Tensor *got,
                            double tol) {
  int64_t na, nb;
  float *ref = fixture_values(fx, after, &na), *ref0 = fixture_values(fx, before, &nb);
  ASSERT(na == got->numel && nb == na, "%s: %lld values, mcm %lld", after, (long long)na, (long long)got->numel);
  float *g = MALLOC_CHECK((size_t)na * sizeof *g);
  tensor_to_host_f32(ctx, got, g);
  double num = 0, den = 0;
  for (int64_t i = 0; i < na; i++) {
    double dr = (double)ref[i] - ref0[i], dg = (double)g[i] - ref0[i];
    num += (dg - dr) * (dg - dr), den += dr * dr;
  }
  double e = sqrt(num) / fmax(sqrt(den), 1e-30);
  double bound = tol + 4 * ldexp(norm2_host(ref, na), -24) / fmax(sqrt(den), 1e-30);
  EXPECT(e <= bound, "%s: the step's change is off by rel L2 %.3g > %.3g (|change| %.3g)", after, e, bound, sqrt(den));
  free(ref), free(ref0), free(g);
  return e;
}

static double scalar_of(Fixture *fx, const char *name) {
  int64_t n;
  float *v = fixture_values(fx, name, &n);
  double x = v[0];
  free(v);
  return x;
}

static double expect_scalar(Fixture *fx, const char *name, double got, double tol) {
  double ref = scalar_of(fx, name), e = fabs(got - ref) / fmax(fabs(ref), 1e-30);
  EXPECT(e <= tol, "%s: mcm %.9g, PyTorch %.9g, rel %.3g > %.3g", name, got, ref, e, tol);
  return e;
}

/* The fixture's batch and draws, in the trainer hook's form. */
typedef struct Inputs {
  float *mel, *moments, *text, *latent_eps, *noise;
  int index[16];
  Batch batch;
} Inputs;

static void read_inputs(Fixture *fx, Inputs *in) {
  const int C = 2, H = 8, W = 8, T = 16, F = 16; /* latent and mel sizes of the fixture's [unet] */
  int64_t n_mel, n_mom, n_text, n_eps, n_noise, n_index;
  in->mel = fixture_values(fx, "in/mel", &n_mel), in->moments = fixture_values(fx, "in/moments", &n_mom);
  in->text = fixture_values(fx, "in/text", &n_text), in->latent_eps = fixture_values(fx, "in/latent_eps", &n_eps);
  in->noise = fixture_values(fx, "in/noise", &n_noise);
  float *index = fixture_values(fx, "in/index", &n_index);
  const int B = (int)n_index;
  ASSERT(B <= 16 && n_eps == (int64_t)B * C * H * W && n_mom == 2 * n_eps && n_noise == n_eps &&
             n_mel == (int64_t)B * T * F && n_text % B == 0,
         "%s: unexpected input sizes", FIX);
  for (int i = 0; i < B; i++) in->index[i] = (int)index[i];
  free(index);
  in->batch = (Batch){.n = B, .mel = in->mel, .latent = in->moments, .text_emb = in->text, .frames = T, .n_mels = F,
                      .latent_dims = {2 * C, H, W}, .emb_dim = (int)(n_text / B)};
}

static void free_inputs(Inputs *in) { free(in->mel), free(in->moments), free(in->text), free(in->latent_eps), free(in->noise); }

/* Everything trainer_create reads, written under dir from the fixture; cfg resolved. */
static void write_run_files(Fixture *fx, const char *dir, const Inputs *in, Config *cfg) {
  char path[600];
  snprintf(path, sizeof path, "%s/teacher.h5", dir);
  write_unet(fx, "teacher/flat", path);
  snprintf(path, sizeof path, "%s/student.h5", dir);
  write_unet(fx, "student_init/flat", path);
  resolve(fx, dir, cfg);
  ASSERT(cfg->train.batch_size == in->batch.n, "train.batch_size %lld, the fixture's batch %d",
         (long long)cfg->train.batch_size, in->batch.n);
  snprintf(path, sizeof path, "%s/data", dir);
  mkdir(path, 0777);
  write_data(fx, path, cfg, &in->batch);
}

static double check_losses(Fixture *fx, const StepStats *st) {
  const double tol = 2e-5;
  const struct { const char *name; double got; } v[] = {
      {"loss/distill", st->distill}, {"loss/g", st->g_loss}, {"loss/total", st->loss},
      {"loss/d_real", st->d_real},   {"loss/d_fake", st->d_fake}, {"loss/r1", st->r1},
      {"loss/grad_norm", st->grad_norm}};
  double worst = 0;
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) worst = fmax(worst, expect_scalar(fx, v[i].name, v[i].got, tol));
  EXPECT_NEAR(st->d_acc, scalar_of(fx, "loss/d_acc"), 1e-9);
  return worst;
}

static bool reference_grad_is_zero(Fixture *fx, const char *param) {
  char key[PARAMS_NAME_MAX + 32];
  snprintf(key, sizeof key, "grad/%s", param);
  int64_t n;
  float *g = fixture_values(fx, key, &n);
  bool zero = norm2_host(g, n) < 1e-5; /* a conv bias before BatchNormLocal: 0 up to rounding */
  free(g);
  return zero;
}

/* Each head weight's gradient as captured (hinge + R1); the worst relative error. */
static double check_head_grads(Ctx *ctx, Fixture *fx, Adversarial *adv, const Captured *cap) {
  int n_heads;
  Tensor **p = adv_head_params(adv, &n_heads);
  ASSERT(n_heads == cap->n_heads, "%d head weights, %d captured", n_heads, cap->n_heads);
  double worst = 0;
  char key[PARAMS_NAME_MAX + 32];
  for (int i = 0; i < n_heads; i++) {
    snprintf(key, sizeof key, "grad/%s", p[i]->name);
    if (reference_grad_is_zero(fx, p[i]->name)) {
      double g = tensor_norm2(ctx, cap->heads[i]);
      EXPECT(g < 1e-5, "%s: gradient %.3g where the reference is ~0", key, g);
      continue;
    }
    worst = fmax(worst, fixture_expect(ctx, fx, key, cap->heads[i], 1e-4));
  }
  return worst;
}

/* The heads after their step: each weight's change, and the spectral-norm vectors. */
static void check_head_updates(Ctx *ctx, Fixture *fx, Adversarial *adv, const Config *cfg, double *e_w, double *e_uv) {
  const float lr = (float)cfg->adversarial.lr, wd = (float)cfg->adversarial.weight_decay;
  const ParamSet *hs = adv_heads(adv)->ps;
  *e_w = *e_uv = 0;
  for (int i = 0; i < hs->n; i++) {
    Tensor *p = hs->p[i];
    char after[PARAMS_NAME_MAX + 32], before[PARAMS_NAME_MAX + 32];
    snprintf(after, sizeof after, "after/%s", p->name);
    snprintf(before, sizeof before, "heads_init/%s", p->name);
    if (strstr(p->name, ".weight_u") || strstr(p->name, ".weight_v")) {
      *e_uv = fmax(*e_uv, fixture_expect(ctx, fx, after, p, 1e-5));
    } else if (reference_grad_is_zero(fx, p->name)) { /* Adam's first step on rounding noise: ±lr, plus decay */
      int64_t n;
      float *p0 = fixture_values(fx, before, &n), *p1 = MALLOC_CHECK((size_t)n * sizeof *p1);
      tensor_to_host_f32(ctx, p, p1);
      for (int64_t j = 0; j < n; j++)
        EXPECT(fabsf(p1[j] - p0[j]) <= lr * (1.0f + wd * fabsf(p0[j])) * 1.001f, "%s[%lld] moved by %.3g, more than lr",
               p->name, (long long)j, fabsf(p1[j] - p0[j]));
      free(p0), free(p1);
    } else {
      *e_w = fmax(*e_w, expect_change(ctx, fx, after, before, p, 1e-5));
    }
  }
}

TEST(full_step_matches_pytorch) {
  const char *dir = test_tmpdir();
  Fixture *fx = fixture_open(FIX);
  Inputs in;
  read_inputs(fx, &in);
  Config cfg;
  write_run_files(fx, dir, &in, &cfg);

  McmErr err;
  Ctx *ctx = ctx_create_cpu((uint64_t)cfg.run.seed);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  ASSERT(t, "%s", err.msg);
  TrainerParts parts = trainer_parts(t);
  ASSERT(parts.adv, "the fixture's configuration has no discriminator");
  ASSERT(adv_load_heads(ctx, parts.adv, fx, "heads_init/", &err) == 0, "heads: %s", err.msg);
  Captured cap = {.t = t};
  TrainerDraws draws = {&in.batch, in.latent_eps, in.index, in.noise, capture, &cap};
  ASSERT(trainer_set_draws(t, &draws, &err) == 0, "%s", err.msg);

  StepStats st;
  ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
  ASSERT(!st.skipped, "the step was skipped (non-finite loss or gradient)");
  ASSERT(cap.student, "the gradient callback never ran");

  double e_loss = check_losses(fx, &st);
  double e_gs = fixture_expect(ctx, fx, "grad/student", cap.student, 1e-4);
  double e_gh = check_head_grads(ctx, fx, parts.adv, &cap);
  double e_s = expect_change(ctx, fx, "after/student", "student_init/flat", flat(ctx, parts.student, false), 1e-4);
  double e_e = expect_change(ctx, fx, "after/ema", "student_init/flat", flat(ctx, parts.ema, false), 1e-4);
  for (int i = 0; i < parts.ema->n; i++) EXPECT(!parts.ema->p[i]->grad, "EMA %s got a gradient", parts.ema->p[i]->name);
  double e_h, e_uv;
  check_head_updates(ctx, fx, parts.adv, &cfg, &e_h, &e_uv);
  printf("  rel L2: losses %.2g, student grad %.2g, head grads %.2g, student step %.2g, EMA step %.2g, "
         "head steps %.2g, SN vectors %.2g\n",
         e_loss, e_gs, e_gh, e_s, e_e, e_h, e_uv);
  free(cap.heads);
  trainer_destroy(t);
  ctx_destroy(ctx);

  /* The hook is for distillation only. */
  const char *teacher_mode[] = {"train.mode=teacher", "train.adversarial=false"};
  resolve_more(fx, dir, &cfg, teacher_mode, 2);
  ctx = ctx_create_cpu(0);
  t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_AUTO, true}, &err);
  ASSERT(t, "%s", err.msg);
  EXPECT(trainer_set_draws(t, &draws, &err) == -1, "injected draws accepted in teacher mode");
  EXPECT_STR_CONTAINS(err.msg, "distill");
  trainer_destroy(t);
  ctx_destroy(ctx);
  free_inputs(&in);
  fixture_close(fx);
}
