/* train.mode = vae end to end at tiny size (configs/tiny.ini, a VAE of 8 / 16 channels on
 * 16 × 16 mels): the loss falls; the exported vae.h5 loads with vae_load and states the
 * trained sizes; its scaling_factor is 1/std of the sampled latents recomputed here from
 * the encoder's moments and host noise; resume after a checkpoint is bit-identical; bad
 * configurations fail before any step. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "data/loader.h"
#include "data/shard.h"
#include "diffusion/train_vae.h"
#include "diffusion/trainer.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/weights.h"
#include "tests/test.h"

#define TINY "configs/tiny.ini"
enum { ROWS = 12, FRAMES = 16, MELS = 16 };

/* Mel-only shards (as ./prepare writes before --add-latents) in dir: 8 rows, then 4. */
static void make_mels(const char *dir) {
  McmErr err;
  mkdir(dir, 0777);
  float mel[FRAMES * MELS];
  for (int first = 0, k = 0; first < ROWS; first += 8, k++) {
    char path[600];
    snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, k);
    ShardInfo info = {FRAMES, MELS, 16000, 160};
    ShardWriter *w = shard_create(path, &info, &err);
    ASSERT(w, "%s", err.msg);
    for (int i = first; i < first + 8 && i < ROWS; i++) {
      /* a log-mel-like ripple with a slope and a little noise */
      rng_normal_host(91, (uint64_t)i * 1000, mel, FRAMES * MELS);
      for (int f = 0; f < FRAMES; f++)
        for (int m = 0; m < MELS; m++)
          mel[f * MELS + m] = 2.0f * sinf(0.7f * (float)f + 0.5f * (float)m + (float)i) - 0.2f * (float)m - 4.0f +
                              0.1f * mel[f * MELS + m];
      ASSERT(shard_append(w, mel, "a caption", "gen.wav", 0, &err) == 0, "%s", err.msg);
    }
    ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
  }
}

static const char *setup(void) {
  static char dir[512];
  snprintf(dir, sizeof dir, "%s", test_tmpdir());
  char p[600];
  snprintf(p, sizeof p, "%s/mels", dir);
  make_mels(p);
  return dir;
}

/* tiny.ini as a from-scratch VAE run on setup()'s shards, run name `run`, extra --sets. */
static int resolve(Config *cfg, const char *dir, const char *run, const char *const *extra, int n_extra, McmErr *err) {
  char a[3][700];
  char *sets[32];
  int n = 0;
  const char *fixed[] = {"train.mode=vae", "mel.n_mels=16", "prepare.segment_frames=16", "vae.weights=",
                         "vae_train.latent_channels=2", "vae_train.block_out_channels=8,16",
                         "vae_train.layers_per_block=1", "vae_train.norm_groups=4", "vae_train.scale_batches=3",
                         "train.lr=3e-3", "train.grad_clip=1.0"};
  for (int i = 0; i < (int)(sizeof fixed / sizeof *fixed); i++) sets[n++] = (char *)fixed[i];
  snprintf(a[0], sizeof a[0], "data.train_shards=%s/mels/shard_*.h5", dir);
  snprintf(a[1], sizeof a[1], "checkpoint.dir=%s/%s/ckpt", dir, run);
  snprintf(a[2], sizeof a[2], "run.out_dir=%s/%s", dir, run);
  for (int i = 0; i < 3; i++) sets[n++] = a[i];
  for (int i = 0; i < n_extra; i++) sets[n++] = (char *)extra[i];
  return config_resolve(cfg, TINY, n, sets, err);
}

static Trainer *open_trainer(Ctx *ctx, Config *cfg, const char *dir, const char *run, const char *const *extra, int n,
                             TrainResume resume) {
  McmErr err;
  ASSERT(resolve(cfg, dir, run, extra, n, &err) == 0, "%s", err.msg);
  Trainer *t = trainer_create(ctx, cfg, &(TrainerOptions){resume, true}, &err);
  ASSERT(t, "%s", err.msg);
  return t;
}

static double mean(const double *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i];
  return s / n;
}

TEST(train_vae_loss_falls) {
  const char *dir = setup();
  enum { S = 60 };
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = open_trainer(ctx, &cfg, dir, "fall", NULL, 0, TRAIN_RESUME_FRESH);
  double loss[S];
  McmErr err;
  for (int i = 0; i < S; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ASSERT(!st.skipped && isfinite(st.loss), "step %d not finite", i + 1);
    /* L = recon + kl_weight · kl, the two terms reported as distill and g_loss */
    EXPECT(fabs(st.loss - (st.distill + 1e-6 * st.g_loss)) <= 1e-6 * (1 + fabs(st.loss)), "L = recon + w kl at step %d",
           i + 1);
    EXPECT(st.g_loss >= -1e-6, "KL %g < 0 at step %d", st.g_loss, i + 1);
    loss[i] = st.loss;
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
  double first = mean(loss, 8), last = mean(loss + S - 8, 8);
  printf("  vae L1 loss: first 8 steps %.4g, last 8 %.4g\n", first, last);
  EXPECT(last < 0.5 * first, "vae loss did not fall: first 8 steps %.4g, last 8 %.4g", first, last);
}

/* 1/std (unbiased, over all values) of z = mean + exp(½ clamp(logvar)) ε for the first n
 * batches of the training order, with ε drawn on the host. */
static double independent_scale(Ctx *ctx, Vae *vae, const Config *cfg, int n_batches) {
  McmErr err;
  LoaderOptions lo = {.shard_glob_or_dir = cfg->data.train_shards, .batch_size = (int)cfg->train.batch_size,
                      .seed = (uint64_t)cfg->run.seed, .world = 1, .drop_last = true, .fields = LOAD_MEL};
  Loader *l = loader_create(&lo, &err);
  ASSERT(l, "%s", err.msg);
  ctx_set_grad(ctx, false);
  double *all = NULL;
  int64_t total = 0;
  uint64_t off = 0;
  for (int k = 0; k < n_batches; k++) {
    const Batch *b = loader_next(l, &err);
    ASSERT(b, "%s", err.msg);
    Tensor *x = tensor_new(ctx, DT_F32, SHAPE(b->n, 1, b->frames, b->n_mels));
    loader_batch_to_tensor(ctx, b, x);
    VaeMoments m = vae_encode(ctx, vae, x);
    int64_t n = m.mean->numel;
    float *mu = malloc((size_t)n * sizeof *mu), *lv = malloc((size_t)n * sizeof *lv), *eps = malloc((size_t)n * sizeof *eps);
    tensor_to_host_f32(ctx, m.mean, mu);
    tensor_to_host_f32(ctx, m.logvar, lv);
    rng_normal_host((uint64_t)cfg->run.seed ^ VAE_SCALE_KEY, off, eps, n);
    off += rng_blocks(n);
    all = realloc(all, (size_t)(total + n) * sizeof *all);
    for (int64_t i = 0; i < n; i++) {
      double v = fmin(fmax((double)lv[i], -30.0), 20.0);
      all[total + i] = (double)mu[i] + exp(0.5 * v) * (double)eps[i];
    }
    total += n;
    free(mu), free(lv), free(eps);
    ctx_step_reset(ctx);
  }
  loader_destroy(l);
  double s = 0, q = 0;
  for (int64_t i = 0; i < total; i++) s += all[i];
  s /= (double)total;
  for (int64_t i = 0; i < total; i++) q += (all[i] - s) * (all[i] - s);
  free(all);
  return 1.0 / sqrt(q / (double)(total - 1));
}

TEST(train_vae_exports_loadable_weights_with_the_data_scale) {
  const char *dir = setup();
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  const char *extra[] = {"train.steps=4", "checkpoint.every=2"};
  Trainer *t = open_trainer(ctx, &cfg, dir, "exp", extra, 2, TRAIN_RESUME_FRESH);
  McmErr err;
  ASSERT(trainer_run(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  char path[1024];
  snprintf(path, sizeof path, "%s/exp/%s", dir, VAE_EXPORT_NAME);
  ASSERT(access(path, R_OK) == 0, "no %s", path);
  /* the config round-trips: the sizes trained are the sizes stated */
  VaeConfig vc;
  ASSERT(vae_config_from_weights(path, &vc, &err) == 0, "%s", err.msg);
  EXPECT(vc.in_channels == 1 && vc.out_channels == 1 && vc.latent_channels == 2 && vc.n_blocks == 2 &&
             vc.block_out_channels[0] == 8 && vc.block_out_channels[1] == 16 && vc.layers_per_block == 1 &&
             vc.norm_num_groups == 4,
         "exported config: in %d out %d L %d blocks %d (%d, %d) layers %d groups %d", vc.in_channels, vc.out_channels,
         vc.latent_channels, vc.n_blocks, vc.block_out_channels[0], vc.block_out_channels[1], vc.layers_per_block,
         vc.norm_num_groups);
  ParamSet ps;
  params_init(&ps, "");
  Vae *vae = vae_create(ctx, &vc, &ps);
  ASSERT(vae_load(ctx, vae, path, &err) == 0, "%s", err.msg);
  /* 3 batches (vae_train.scale_batches) fit in the 6 of an epoch of 12 rows at batch 2 */
  double want = independent_scale(ctx, vae, &cfg, 3);
  printf("  exported scaling_factor %.6g, recomputed %.6g\n", vae->cfg.scaling_factor, want);
  /* fp32 encoder outputs and one fp32 exp per value on the two sides; the sums are in double
   * on both: agreement to a few fp32 ulps of the std */
  EXPECT(fabs(vae->cfg.scaling_factor - want) <= 1e-5 * want, "scaling_factor %.8g, 1/std of the latents %.8g",
         vae->cfg.scaling_factor, want);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(train_vae_resume_is_bit_identical) {
  const char *dir = setup();
  enum { S = 6, HALF = 3 };
  double ref[S];
  McmErr err;
  StepStats st;
  Config cfg;
  /* with an EMA, so that its state is part of what must come back; a fresh context per
   * process, as ./train has */
  const char *extra[] = {"vae_train.ema_decay=0.9"};
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = open_trainer(ctx, &cfg, dir, "ref", extra, 1, TRAIN_RESUME_FRESH);
  for (int i = 0; i < S; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ref[i] = st.loss;
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
  ctx = ctx_create_cpu(0);
  t = open_trainer(ctx, &cfg, dir, "res", extra, 1, TRAIN_RESUME_FRESH);
  for (int i = 0; i < HALF; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    EXPECT(st.loss == ref[i], "step %d: %.9g vs %.9g", i + 1, st.loss, ref[i]);
  }
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg); /* also exports vae.h5 (the scale's encoding) */
  trainer_destroy(t);
  ctx_destroy(ctx);
  ctx = ctx_create_cpu(0);
  t = open_trainer(ctx, &cfg, dir, "res", extra, 1, TRAIN_RESUME_REQUIRE);
  ASSERT(trainer_step_count(t) == HALF, "resumed at %lld", (long long)trainer_step_count(t));
  for (int i = HALF; i < S; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    EXPECT(st.loss == ref[i], "step %d after resume: %.9g vs %.9g (not bit-identical)", i + 1, st.loss, ref[i]);
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
}

TEST(train_vae_fine_tunes_converted_weights) {
  const char *dir = setup();
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  const char *extra[] = {"vae.weights=tests/fixtures/model_vae_weights_tiny.h5"};
  Trainer *t = open_trainer(ctx, &cfg, dir, "ft", extra, 1, TRAIN_RESUME_FRESH);
  McmErr err;
  StepStats st;
  ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
  EXPECT(isfinite(st.loss) && !st.skipped, "loss %g", st.loss);
  trainer_destroy(t);
  ctx_destroy(ctx);
}

static void expect_create_error(const char *dir, const char *const *extra, int n, const char *want) {
  Config cfg;
  McmErr err = {{0}};
  if (resolve(&cfg, dir, "bad", extra, n, &err) == 0) {
    Ctx *ctx = ctx_create_cpu(0);
    Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_AUTO, true}, &err);
    EXPECT(!t, "expected an error containing \"%s\"", want);
    if (t) trainer_destroy(t);
    ctx_destroy(ctx);
  }
  EXPECT(strstr(err.msg, want), "error \"%s\" does not contain \"%s\"", err.msg, want);
}

TEST(train_vae_bad_configs_fail_before_work) {
  const char *dir = setup();
  /* 6 levels downsample by 32: the 16 x 16 mel does not divide (the schema's check) */
  expect_create_error(dir, (const char *[]){"vae_train.block_out_channels=8,8,8,8,8,8"}, 1,
                      "prepare.segment_frames = 16 is not divisible by 32");
  expect_create_error(dir, (const char *[]){"vae_train.norm_groups=3"}, 1, "vae_train.norm_groups = 3 does not divide");
  /* shards made with another mel configuration */
  expect_create_error(dir, (const char *[]){"mel.n_mels=32"}, 1, "another mel configuration");
  /* a converted VAE that downsamples 16 x 16 by more than it divides, or has no such file */
  expect_create_error(dir, (const char *[]){"vae.weights=nope.h5"}, 1, "vae.weights = nope.h5");
  expect_create_error(dir, (const char *[]){"sample.every=5"}, 1, "sample.every");
  expect_create_error(dir, (const char *[]){"vae_train.recon=l2"}, 1, "vae_train.recon");
}
