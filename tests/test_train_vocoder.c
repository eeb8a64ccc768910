/* train.mode = vocoder at tiny size: the differentiable log-mel equals data/mel.c's
 * mel_compute on the same waveform, and its gradient equals finite differences; the loss
 * falls on a few generated tones; the exported vocoder.h5 loads with hifigan_load; resume
 * after a checkpoint is bit-identical; shards without audio and bad sizes fail before work.
 * With train.adversarial (HiFi-GAN's discriminators): one step against PyTorch (losses,
 * gradients of both networks, the discriminators' AdamW step), training through the trainer
 * (the discriminators learn, checkpoints hold them), bit-identical resume, bad configurations.
 *
 * Tiny front end: 16 kHz, n_fft 64, hop 16, win 64, 16 mels; segments of 128 frames =
 * 2048 samples (the 2048-point STFT loss needs more than 1024). Generator: 16 channels,
 * rates 2,2,2,2 (hop 16) with kernels 4 (L = 16·T exactly), one residual kernel 3 with
 * dilations 1, 3. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/tensorfile.h"
#include "data/loader.h"
#include "data/mel.h"
#include "data/shard.h"
#include "diffusion/train_vocoder.h"
#include "diffusion/trainer.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/weights.h"
#include "tests/fixture.h"
#include "tests/gradcheck.h"
#include "tests/test.h"

#define DEMO "configs/demo_vocoder.ini"
enum { ROWS = 6, FRAMES = 128, MELS = 16, HOP = 16, NFFT = 64, S = FRAMES * HOP };

static MelConfig tiny_mel(void) {
  return (MelConfig){.rate = 16000, .n_fft = NFFT, .hop = HOP, .win = NFFT, .n_mels = MELS, .fmin = 0, .fmax = 8000,
                     .log_floor = 1e-5f};
}

/* Row i: two tones with a decaying envelope, peak 0.5 (./prepare's normalisation). */
static void tone(int i, float *wav) {
  const double f1 = 220.0 * (1 + i % 4), f2 = 1375.0 + 310.0 * i;
  float peak = 0;
  for (int n = 0; n < S; n++) {
    double t = n / 16000.0;
    wav[n] = (float)(exp(-6.0 * t) * (sin(2 * M_PI * f1 * t) + 0.4 * sin(2 * M_PI * f2 * t + i)));
    peak = fmaxf(peak, fabsf(wav[n]));
  }
  for (int n = 0; n < S; n++) wav[n] *= 0.5f / peak;
}

/* Shards of tones with their mels and audio, as ./prepare keep_audio = true writes: 4 rows,
 * then 2 (audio false: mel-only shards, for the error test). */
static void make_shards(const char *dir, bool audio) {
  McmErr err;
  mkdir(dir, 0777);
  MelConfig mc = tiny_mel();
  Mel *mel = mel_create(&mc, &err);
  ASSERT(mel, "%s", err.msg);
  float *wav = malloc(S * sizeof *wav), *m = malloc((FRAMES + 1) * MELS * sizeof *m);
  for (int first = 0, k = 0; first < ROWS; first += 4, k++) {
    char path[600];
    snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, k);
    ShardWriter *w = shard_create(path, &(ShardInfo){FRAMES, MELS, 16000, HOP}, &err);
    ASSERT(w, "%s", err.msg);
    if (audio) ASSERT(shard_writer_keep_audio(w, S, &err) == 0, "%s", err.msg);
    for (int i = first; i < first + 4 && i < ROWS; i++) {
      tone(i, wav);
      mel_compute(mel, wav, S, m); /* the first FRAMES of S/HOP + 1 frames */
      ASSERT(shard_append_audio(w, m, audio ? wav : NULL, "tones", "gen.wav", 0, &err) == 0, "%s", err.msg);
    }
    ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
  }
  free(wav), free(m);
  mel_destroy(mel);
}

static const char *setup(void) {
  static char dir[512];
  snprintf(dir, sizeof dir, "%s", test_tmpdir());
  char p[600];
  snprintf(p, sizeof p, "%s/tones", dir);
  make_shards(p, true);
  snprintf(p, sizeof p, "%s/mels", dir);
  make_shards(p, false);
  return dir;
}

static int resolve(Config *cfg, const char *dir, const char *run, const char *const *extra, int n_extra, McmErr *err) {
  char a[3][700];
  char *sets[40];
  int n = 0;
  const char *fixed[] = {"run.device=cpu", "run.log_every=1", "mel.n_fft=64", "mel.hop=16", "mel.win=64",
                         "mel.n_mels=16", "prepare.segment_frames=128", "vocoder_train.upsample_initial_channel=16",
                         "vocoder_train.upsample_rates=2,2,2,2", "vocoder_train.upsample_kernel_sizes=4,4,4,4",
                         "vocoder_train.resblock_kernel_sizes=3", "vocoder_train.resblock_dilations=1,3",
                         "train.lr=5e-3", "train.grad_clip=0", "train.warmup_steps=0", "train.steps=100",
                         "data.num_workers=0", "checkpoint.every=1000"};
  for (int i = 0; i < (int)(sizeof fixed / sizeof *fixed); i++) sets[n++] = (char *)fixed[i];
  snprintf(a[0], sizeof a[0], "data.train_shards=%s/tones/shard_*.h5", dir);
  snprintf(a[1], sizeof a[1], "checkpoint.dir=%s/%s/ckpt", dir, run);
  snprintf(a[2], sizeof a[2], "run.out_dir=%s/%s", dir, run);
  for (int i = 0; i < 3; i++) sets[n++] = a[i];
  for (int i = 0; i < n_extra; i++) sets[n++] = (char *)extra[i];
  return config_resolve(cfg, DEMO, n, sets, err);
}

static Trainer *open_trainer(Ctx *ctx, Config *cfg, const char *dir, const char *run, const char *const *extra, int n,
                             TrainResume resume) {
  McmErr err;
  ASSERT(resolve(cfg, dir, run, extra, n, &err) == 0, "%s", err.msg);
  Trainer *t = trainer_create(ctx, cfg, &(TrainerOptions){resume, true}, &err);
  ASSERT(t, "%s", err.msg);
  return t;
}

/* ------------------------------------------------------------------ the front end */

TEST(vocoder_diff_mel_matches_mel_compute) {
  McmErr err;
  MelConfig mc = tiny_mel();
  Mel *ref = mel_create(&mc, &err);
  ASSERT(ref, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(0);
  DiffMel *dm = diff_mel_create(ctx, &mc, &err);
  ASSERT(dm, "%s", err.msg);
  /* two rows of odd length (tones, and noise with a silent stretch that hits the log floor) */
  enum { B = 2, N = 1001 };
  const int T = N / HOP + 1;
  float *wav = malloc(B * N * sizeof *wav), *want = malloc((size_t)B * T * MELS * sizeof *want);
  float *got = malloc((size_t)B * T * MELS * sizeof *got);
  float tmp[S];
  tone(3, tmp);
  memcpy(wav, tmp, N * sizeof *wav);
  rng_normal_host(5, 0, wav + N, N);
  for (int n = 300; n < 700; n++) wav[N + n] = 0;
  for (int b = 0; b < B; b++) mel_compute(ref, wav + (size_t)b * N, N, want + (size_t)b * T * MELS);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(B, N));
  tensor_from_host_f32(ctx, x, wav);
  Tensor *y = diff_mel(ctx, dm, x);
  ASSERT(y->ndim == 3 && y->shape[0] == B && y->shape[1] == T && y->shape[2] == MELS, "diff_mel gives %s",
         TENSOR_SHAPE_STR(y));
  tensor_to_host_f32(ctx, y, got);
  double err2 = 0, ref2 = 0, worst = 0;
  for (int i = 0; i < B * T * MELS; i++) {
    double d = (double)got[i] - want[i];
    err2 += d * d, ref2 += (double)want[i] * want[i];
    worst = fmax(worst, fabs(d));
  }
  double rel = sqrt(err2 / ref2);
  printf("  diff_mel vs mel_compute: relative L2 %.3g, max |d| %.3g (log units)\n", rel, worst);
  /* The same sums in another order (a 64-point direct DFT in fp32 against FFTW's FFT): the
   * magnitudes agree to ~1e-6 relative, which the log keeps as ~1e-6 absolute; the silent
   * stretch sits on the floor in both (the 1e-14 power epsilon moves it by 1e-7 ≪ 1e-5). */
  EXPECT(rel < 1e-5, "relative L2 %.3g", rel);
  EXPECT(worst < 1e-4, "max |d| %.3g", worst);
  free(wav), free(want), free(got);
  diff_mel_destroy(dm);
  mel_destroy(ref);
  ctx_destroy(ctx);
}

typedef struct {
  DiffMel *dm;
  MrStft *mr;
  Tensor *wav, *target, *weights;
} GcUser;

static Tensor *mel_loss_fn(Ctx *ctx, Tensor **leaves, void *user) {
  GcUser *u = user;
  return op_sum(ctx, op_mul(ctx, diff_mel(ctx, u->dm, u->wav), u->weights));
}

TEST(vocoder_diff_mel_gradcheck) {
  McmErr err;
  MelConfig mc = tiny_mel();
  mc.n_fft = 16, mc.win = 12, mc.hop = 5, mc.n_mels = 3; /* odd sizes, small enough for differences */
  Ctx *ctx = ctx_create_cpu(0);
  DiffMel *dm = diff_mel_create(ctx, &mc, &err);
  ASSERT(dm, "%s", err.msg);
  enum { B = 2, N = 23 };
  GcUser u = {dm, NULL, NULL, NULL, NULL};
  u.wav = tensor_new_persistent(ctx, DT_F32, SHAPE(B, N));
  float h[B * N];
  rng_normal_host(11, 0, h, B * N);
  /* amplitude 100: every mel value well above log_floor (no kink inside the differences)
   * and the step h = 1e-2 small against the signal, so the log stays near linear */
  for (int i = 0; i < B * N; i++) h[i] *= 100.0f;
  tensor_from_host_f32(ctx, u.wav, h);
  u.wav->requires_grad = true;
  const int T = N / mc.hop + 1;
  u.weights = tensor_new_persistent(ctx, DT_F32, SHAPE(B, T, 3));
  float w[B * T * 3];
  rng_normal_host(12, 0, w, B * T * 3);
  tensor_from_host_f32(ctx, u.weights, w);
  Tensor *leaves[1] = {u.wav};
  EXPECT(gradcheck(ctx, mel_loss_fn, leaves, 1, &u, (GradcheckOpts){0}) == 0, "diff_mel gradient");
  diff_mel_destroy(dm);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ one adversarial step */

#define GAN_FIXTURE "tests/fixtures/train_vocoder_gan.h5"

/* The fixture's networks (tests/fixtures/train_vocoder_gan.py). */
static HifiganConfig gan_generator(void) {
  HifiganConfig c = hifigan_config_musicldm();
  c.model_in_dim = MELS, c.hop = HOP, c.upsample_initial_channel = 16, c.n_upsamples = 4;
  for (int i = 0; i < 4; i++) c.upsample_rates[i] = 2, c.upsample_kernel_sizes[i] = 4;
  c.n_kernels = 1, c.resblock_kernel_sizes[0] = 3, c.n_dilations[0] = 2;
  c.resblock_dilation_sizes[0][0] = 1, c.resblock_dilation_sizes[0][1] = 3;
  return c;
}

static HifiganDiscConfig gan_discriminators(void) {
  HifiganDiscConfig c = {.n_periods = 5, .periods = {2, 3, 5, 7, 11}, .n_period_layers = 5,
                         .period_channels = {4, 4, 8, 8, 8}, .n_scales = 3,
                         .scale_channels = {4, 8, 8, 8, 16, 16, 16}, .scale_groups = {1, 2, 2, 4, 4, 4, 1},
                         .spectral_norm_first_scale = true};
  return c;
}

static int by_name(const void *a, const void *b) {
  return strcmp((*(Tensor *const *)a)->name, (*(Tensor *const *)b)->name);
}

/* The values (or the gradients) of p[0..n), flattened in the order of their sorted names, as
 * the fixture stores them. */
static Tensor *flat_by_name(Ctx *ctx, Tensor *const *p, int n, bool grads) {
  Tensor **q = malloc((size_t)n * sizeof *q);
  memcpy(q, p, (size_t)n * sizeof *q);
  qsort(q, (size_t)n, sizeof *q, by_name);
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += q[i]->numel;
  float *h = malloc((size_t)total * sizeof *h), *at = h;
  for (int i = 0; i < n; i++) {
    Tensor *t = grads ? q[i]->grad : q[i];
    ASSERT(t, "%s has no gradient", q[i]->name);
    tensor_to_host_f32(ctx, t, at);
    at += q[i]->numel;
  }
  Tensor *out = tensor_new(ctx, DT_F32, SHAPE(total));
  tensor_from_host_f32(ctx, out, h);
  free(h), free(q);
  return out;
}

static void expect_scalar(Fixture *fx, const char *name, double got, double rel_tol) {
  int64_t n;
  float *ref = fixture_values(fx, name, &n);
  ASSERT(n == 1, "%s has %lld values", name, (long long)n);
  double rel = fabs(got - ref[0]) / fmax(fabs(ref[0]), 1e-30);
  printf("  %-10s mcm %.8g  PyTorch %.8g  (relative %.2g)\n", name, got, (double)ref[0], rel);
  EXPECT(rel <= rel_tol, "%s: mcm %.9g, PyTorch %.9g (relative %.3g > %.3g)", name, got, (double)ref[0], rel, rel_tol);
  free(ref);
}

/* HiFi-GAN's step (tests/fixtures/train_vocoder_gan.py, PyTorch and transformers written from
 * the recipe): the discriminators' step on the detached fake, then the generator's loss
 * through the updated discriminators. Compared: the loss terms, the discriminators'
 * gradients at the step's start, their weights after their AdamW step (lr 1e-3, β 0.8 /
 * 0.99, weight decay 0.01) and their spectral vectors after four power iterations, and the
 * generator's gradients (which see the updated discriminators, so a wrong order or a missing
 * D step shows there too).
 * Tolerances (relative, fp32 on both sides; measured in brackets): the loss terms 1e-5
 * [≤ 8e-8], the gradients (relative L2) 1e-4 [G 1.0e-5: the mel term's 1/x at quiet bins
 * dominates it; D 8e-8], the discriminator weights after their step 2e-6 [2.6e-7: AdamW's
 * first step moves each weight by about ±lr, so gradient errors barely reach them], the
 * spectral vectors 1e-5 [9.8e-7]. Without the D step (lr 0) the G gradient is off by 1.7e-3,
 * the weights after it by 1e-2: the order of the two halves is seen. */
TEST(train_vocoder_gan_step_matches_pytorch) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(GAN_FIXTURE);
  McmErr err;
  HifiganConfig hc = gan_generator();
  ParamSet ps_g;
  params_init(&ps_g, "");
  ps_g.trainable = true;
  Hifigan *g = hifigan_create(ctx, &hc, &ps_g);
  ASSERT(params_load(ctx, &ps_g, fx, "g/", true, &err) == 0, "%s", err.msg);
  HifiganDiscConfig dc = gan_discriminators();
  ASSERT(hifigan_disc_config_check(&dc, &err) == 0, "%s", err.msg);
  VocoderDisc *vd = vocoder_disc_create(ctx, &dc, (AdamWHyper){1e-3f, 0.8f, 0.99f, 1e-8f, 0.01f}, 2.0f);
  ASSERT(params_load(ctx, &vd->ps, fx, "d/", true, &err) == 0, "%s", err.msg);
  MelConfig mc = tiny_mel();
  DiffMel *dm = diff_mel_create(ctx, &mc, &err);
  ASSERT(dm, "%s", err.msg);
  Tensor *mel = fixture_tensor(ctx, fx, "in/mel", false), *wav = fixture_tensor(ctx, fx, "in/wav", false);

  VocoderLoss o = vocoder_gan_objective(ctx, g, vd, dm, mel, wav, 45.0f, 1e-3f);
  float loss;
  tensor_to_host_f32(ctx, o.loss, &loss);
  EXPECT(!o.d_skipped && isfinite(o.d_grad_norm) && o.d_grad_norm > 0, "D step skipped (norm %g)", o.d_grad_norm);
  expect_scalar(fx, "out/mel", o.mel, 1e-5);
  expect_scalar(fx, "out/adv", o.adv, 1e-5);
  expect_scalar(fx, "out/fm", o.fm, 1e-5);
  expect_scalar(fx, "out/d_real", o.d_real, 1e-5);
  expect_scalar(fx, "out/d_fake", o.d_fake, 1e-5);
  expect_scalar(fx, "out/loss", loss, 1e-5);
  backward(ctx, o.loss);

  Tensor **gp = malloc((size_t)ps_g.n * sizeof *gp);
  int n_gp = 0;
  for (int i = 0; i < ps_g.n; i++)
    if (ps_g.p[i]->requires_grad) gp[n_gp++] = ps_g.p[i];
  HifiganDisc *d = vd->d;
  Tensor **sn = malloc((size_t)vd->ps.n * sizeof *sn); /* the spectral buffers: not in d->params */
  int n_sn = 0;
  for (int i = 0; i < vd->ps.n; i++) {
    bool trained = false;
    for (int j = 0; j < d->n_params; j++) trained |= vd->ps.p[i] == d->params[j];
    if (!trained) sn[n_sn++] = vd->ps.p[i];
  }
  EXPECT(n_sn == 2 * 8, "%d spectral buffers, expected u and v of scale 0's 8 convs", n_sn);
  double e[4];
  e[0] = fixture_expect(ctx, fx, "grad/g", flat_by_name(ctx, gp, n_gp, true), 1e-4);
  e[1] = fixture_expect(ctx, fx, "grad/d", flat_by_name(ctx, d->params, d->n_params, true), 1e-4);
  e[2] = fixture_expect(ctx, fx, "after/d", flat_by_name(ctx, d->params, d->n_params, false), 2e-6);
  e[3] = fixture_expect(ctx, fx, "after/sn", flat_by_name(ctx, sn, n_sn, false), 1e-5);
  printf("  relative L2: G gradient %.2g, D gradient %.2g, D after its step %.2g, spectral vectors %.2g\n", e[0],
         e[1], e[2], e[3]);
  free(gp), free(sn);
  vocoder_disc_destroy(vd);
  diff_mel_destroy(dm);
  params_free(&ps_g);
  fixture_close(fx);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ training */

static double mean(const double *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i];
  return s / n;
}

TEST(train_vocoder_loss_falls) {
  const char *dir = setup();
  enum { STEPS = 40 };
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = open_trainer(ctx, &cfg, dir, "fall", NULL, 0, TRAIN_RESUME_FRESH);
  double loss[STEPS];
  McmErr err;
  for (int i = 0; i < STEPS; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ASSERT(!st.skipped && isfinite(st.loss), "step %d not finite", i + 1);
    /* L = 45·mel + stft, the two terms reported as distill and g_loss */
    EXPECT(fabs(st.loss - (st.distill + st.g_loss)) <= 1e-5 * (1 + fabs(st.loss)), "L = mel + stft at step %d",
           i + 1);
    loss[i] = st.loss;
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
  double first = mean(loss, 5), last = mean(loss + STEPS - 5, 5);
  printf("  vocoder loss: first 5 steps %.4g, last 5 %.4g\n", first, last);
  EXPECT(last < 0.7 * first, "vocoder loss did not fall: first 5 steps %.4g, last 5 %.4g", first, last);
}

TEST(train_vocoder_exports_loadable_weights) {
  const char *dir = setup();
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  const char *extra[] = {"train.steps=2", "checkpoint.every=1"};
  Trainer *t = open_trainer(ctx, &cfg, dir, "exp", extra, 2, TRAIN_RESUME_FRESH);
  McmErr err;
  ASSERT(trainer_run(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  char path[1024];
  snprintf(path, sizeof path, "%s/exp/%s", dir, VOCODER_EXPORT_NAME);
  ASSERT(access(path, R_OK) == 0, "no %s", path);
  HifiganConfig hc;
  ASSERT(hifigan_config_from_weights(path, &hc, &err) == 0, "%s", err.msg);
  EXPECT(hc.model_in_dim == MELS && hc.upsample_initial_channel == 16 && hc.n_upsamples == 4 &&
             hc.upsample_rates[0] == 2 && hc.upsample_kernel_sizes[3] == 4 && hc.n_kernels == 1 &&
             hc.resblock_kernel_sizes[0] == 3 && hc.n_dilations[0] == 2 && hc.resblock_dilation_sizes[0][1] == 3,
         "exported config: in %d, C0 %d, %d stages, %d kernels", hc.model_in_dim, hc.upsample_initial_channel,
         hc.n_upsamples, hc.n_kernels);
  ParamSet ps;
  params_init(&ps, "");
  Hifigan *g = hifigan_create(ctx, &hc, &ps);
  ASSERT(hifigan_load(ctx, g, path, &err) == 0, "%s", err.msg);
  /* it vocodes: 4 frames give 64 finite samples */
  ctx_set_grad(ctx, false);
  Tensor *mel = tensor_new(ctx, DT_F32, SHAPE(1, 4, MELS));
  tensor_fill(ctx, mel, -3.0f);
  Tensor *w = hifigan_forward(ctx, g, mel);
  float out[64];
  ASSERT(w->numel == 64, "%lld samples", (long long)w->numel);
  tensor_to_host_f32(ctx, w, out);
  for (int i = 0; i < 64; i++) ASSERT(isfinite(out[i]), "sample %d", i);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Runs `ref_run` for 4 steps; then `res_run` for 2, a checkpoint, a fresh trainer resuming
 * it for 2 more: every step's loss and discriminator loss (0 without discriminators) must be
 * the reference's, bit for bit. */
static void expect_bit_identical_resume(const char *dir, const char *ref_run, const char *res_run,
                                        const char *const *extra, int n_extra) {
  enum { N = 4, HALF = 2 };
  double ref[N], ref_d[N];
  McmErr err;
  StepStats st;
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = open_trainer(ctx, &cfg, dir, ref_run, extra, n_extra, TRAIN_RESUME_FRESH);
  for (int i = 0; i < N; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ref[i] = st.loss, ref_d[i] = st.d_real + st.d_fake;
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
  ctx = ctx_create_cpu(0);
  t = open_trainer(ctx, &cfg, dir, res_run, extra, n_extra, TRAIN_RESUME_FRESH);
  for (int i = 0; i < HALF; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    EXPECT(st.loss == ref[i], "step %d: %.9g vs %.9g", i + 1, st.loss, ref[i]);
  }
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  ctx_destroy(ctx);
  ctx = ctx_create_cpu(0);
  t = open_trainer(ctx, &cfg, dir, res_run, extra, n_extra, TRAIN_RESUME_REQUIRE);
  ASSERT(trainer_step_count(t) == HALF, "resumed at %lld", (long long)trainer_step_count(t));
  for (int i = HALF; i < N; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    /* with discriminators the generator's loss goes through them after their step: it and
     * their own loss are equal only if their weights, spectral vectors and AdamW state all are */
    EXPECT(st.loss == ref[i], "step %d after resume: %.9g vs %.9g (not bit-identical)", i + 1, st.loss, ref[i]);
    EXPECT(st.d_real + st.d_fake == ref_d[i], "step %d after resume: D loss %.9g vs %.9g", i + 1,
           st.d_real + st.d_fake, ref_d[i]);
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
}

TEST(train_vocoder_resume_is_bit_identical) { expect_bit_identical_resume(setup(), "ref", "res", NULL, 0); }

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

TEST(train_vocoder_bad_inputs_fail_before_work) {
  const char *dir = setup();
  char mels[700];
  snprintf(mels, sizeof mels, "data.train_shards=%s/mels/shard_*.h5", dir);
  const char *no_audio[] = {mels};
  expect_create_error(dir, no_audio, 1, "keep_audio = true");
  const char *rates[] = {"vocoder_train.upsample_rates=2,2,2,4"};
  expect_create_error(dir, rates, 1, "multiply to 32 samples per frame, mel.hop = 16");
  const char *kernels[] = {"vocoder_train.upsample_kernel_sizes=4,4,4"};
  expect_create_error(dir, kernels, 1, "one kernel per rate");
  const char *shape[] = {"mel.n_mels=32"};
  expect_create_error(dir, shape, 1, "another mel configuration");
}

/* ------------------------------------------------------------------ train.adversarial = true */

#define GAN_SETS "train.adversarial=true", "vocoder_train.disc_period_channels=4,4,8,8,8", \
                 "vocoder_train.disc_scale_channels=4,8,8,8,16,16,16", "vocoder_train.disc_scale_groups=1,2,2,4,4,4,1"

TEST(train_vocoder_gan_trains_through_the_trainer) {
  const char *dir = setup();
  enum { STEPS = 12 };
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  const char *extra[] = {GAN_SETS, "train.lr=5e-3", "train.steps=12", "checkpoint.every=12"};
  Trainer *t = open_trainer(ctx, &cfg, dir, "gan", extra, 7, TRAIN_RESUME_FRESH);
  McmErr err;
  double d[STEPS];
  for (int i = 0; i < STEPS; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ASSERT(!st.skipped && isfinite(st.loss), "step %d not finite", i + 1);
    /* L = 45·mel + adv + 2·fm, reported as distill, g_loss and fm */
    EXPECT(fabs(st.loss - (st.distill + st.g_loss + st.fm)) <= 1e-5 * (1 + fabs(st.loss)),
           "L = mel + adv + fm at step %d: %.9g vs %.9g + %.9g + %.9g", i + 1, st.loss, st.distill, st.g_loss, st.fm);
    EXPECT(st.g_loss > 0 && st.fm > 0 && st.d_real > 0 && st.d_fake > 0, "step %d: a GAN term is not positive",
           i + 1);
    d[i] = st.d_real + st.d_fake;
  }
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  ctx_destroy(ctx);
  /* Their own step lowers the discriminators' loss (a wrong sign or a missing step would not:
   * measured 7.8 -> 4.2 over these steps, mostly the real term as the logits leave 0). */
  double first = mean(d, 3), last = mean(d + STEPS - 3, 3);
  printf("  discriminator loss: first 3 steps %.4g, last 3 %.4g\n", first, last);
  EXPECT(last < 0.75 * first, "the discriminators' loss did not fall: %.4g -> %.4g", first, last);
  /* the checkpoint holds them and their optimizer; the export only the generator */
  char path[1024];
  snprintf(path, sizeof path, "%s/gan/ckpt/ckpt_%d.h5", dir, STEPS);
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  EXPECT(tf_has(tf, "disc/msd.discriminators.0.convs.1.weight_orig") &&
             tf_has(tf, "disc/msd.discriminators.0.convs.1.weight_u") &&
             tf_has(tf, "disc/mpd.discriminators.4.conv_post.weight_g") &&
             tf_has(tf, "opt_disc/m/mpd.discriminators.4.conv_post.weight_v"),
         "%s lacks the discriminators or their AdamW state", path);
  tf_close(tf);
  snprintf(path, sizeof path, "%s/gan/%s", dir, VOCODER_EXPORT_NAME);
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  EXPECT(tf_has(tf, "conv_pre.weight") && !tf_has(tf, "mpd.discriminators.0.convs.0.weight_v"),
         "vocoder.h5 must hold the generator only");
  tf_close(tf);
}

TEST(train_vocoder_gan_resume_is_bit_identical) {
  const char *dir = setup();
  const char *extra[] = {GAN_SETS};
  expect_bit_identical_resume(dir, "gref", "gres", extra, 4);
  /* A quick-start checkpoint has no discriminators to resume. */
  McmErr err;
  StepStats st;
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = open_trainer(ctx, &cfg, dir, "qs", NULL, 0, TRAIN_RESUME_FRESH);
  ASSERT(trainer_step(t, &st, &err) == 0 && trainer_save(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  ASSERT(resolve(&cfg, dir, "qs", extra, 4, &err) == 0, "%s", err.msg);
  t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_REQUIRE, true}, &err);
  EXPECT(!t && strstr(err.msg, "has no discriminators"), "resuming a quick-start run with discriminators: \"%s\"",
         err.msg);
  if (t) trainer_destroy(t);
  ctx_destroy(ctx);
}

/* Relative L2 distance between the tensors under `prefix` of two checkpoints; *count gets
 * how many were compared. */
static double ckpt_distance(const char *pa, const char *pb, const char *prefix, int *count) {
  McmErr err;
  TensorFile *a = tf_open(pa, &err), *b = a ? tf_open(pb, &err) : NULL;
  ASSERT(a && b, "%s", err.msg);
  char **names;
  int n;
  ASSERT(tf_names(a, &names, &n, &err) == 0, "%s", err.msg);
  double d2 = 0, r2 = 0;
  *count = 0;
  for (int i = 0; i < n; i++) {
    if (strncmp(names[i], prefix, strlen(prefix))) continue;
    int nd;
    int64_t shape[MCM_MAX_DIMS], numel = 1;
    DType dt;
    ASSERT(tf_info(a, names[i], &nd, shape, &dt, &err) == 0, "%s", err.msg);
    for (int k = 0; k < nd; k++) numel *= shape[k];
    float *x = malloc((size_t)numel * sizeof *x + 4), *y = malloc((size_t)numel * sizeof *y + 4);
    ASSERT(tf_read(a, names[i], nd, shape, x, &err) == 0 && tf_read(b, names[i], nd, shape, y, &err) == 0, "%s",
           err.msg);
    for (int64_t j = 0; j < numel; j++) d2 += ((double)x[j] - y[j]) * ((double)x[j] - y[j]), r2 += (double)x[j] * x[j];
    free(x), free(y);
    (*count)++;
  }
  tf_free_names(names, n);
  tf_close(a), tf_close(b);
  return sqrt(d2) / fmax(sqrt(r2), 1e-30);
}

/* `mpirun -np 2 ./train` with batch 2 per rank against one process with batch 4: the same
 * global batch, so the same losses and weights up to the order of the gradient sums (the
 * discriminators too: broadcast at the start, their gradients averaged by the hook).
 * Tolerances as tests/test_train_dp.c's at lr 1e-5: relative 1e-5 for the losses, 1e-6 for
 * the weights after 3 steps. */
TEST(train_vocoder_gan_two_ranks_match_one_process) {
#if !MCM_MPI
  printf("  (no MPI in this build: not run)\n");
  return;
#endif
  if (system("command -v mpirun >/dev/null 2>&1") != 0) {
    printf("  (no mpirun: not run)\n");
    return;
  }
  const char *vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "RANK",
                        "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
  const char *dir = setup();
  const char *bd = getenv("MCM_BIN_DIR");
  char common[2048], cmd[4096], p1[1024], p2[1024];
  snprintf(common, sizeof common,
           "%s/train " DEMO " --quiet --set run.device=cpu --set run.log_every=1 --set mel.n_fft=64 --set mel.hop=16 --set mel.win=64 "
           "--set mel.n_mels=16 --set prepare.segment_frames=128 --set vocoder_train.upsample_initial_channel=16 "
           "--set vocoder_train.upsample_rates=2,2,2,2 --set vocoder_train.upsample_kernel_sizes=4,4,4,4 "
           "--set vocoder_train.resblock_kernel_sizes=3 --set vocoder_train.resblock_dilations=1,3 "
           "--set train.adversarial=true --set vocoder_train.disc_period_channels=4,4,8,8,8 "
           "--set vocoder_train.disc_scale_channels=4,8,8,8,16,16,16 "
           "--set vocoder_train.disc_scale_groups=1,2,2,4,4,4,1 --set train.lr=1e-5 --set train.steps=3 "
           "--set checkpoint.every=3 --set data.num_workers=0 --set data.train_shards='%s/tones/shard_*.h5'",
           bd ? bd : ".", dir);
  snprintf(cmd, sizeof cmd, "%s --set checkpoint.dir=%s/dp1 --set run.out_dir=%s/dp1 --set train.batch_size=4 "
           ">%s/dp1.out 2>&1", common, dir, dir, dir);
  ASSERT(system(cmd) == 0, "one process failed: %s", cmd);
  snprintf(cmd, sizeof cmd, "ASAN_OPTIONS=detect_leaks=0 mpirun --allow-run-as-root --oversubscribe -np 2 %s "
           "--set checkpoint.dir=%s/dp2 --set run.out_dir=%s/dp2 --set train.batch_size=2 >%s/dp2.out 2>&1",
           common, dir, dir, dir);
  if (system(cmd) != 0) {
    snprintf(cmd, sizeof cmd, "cat %s/dp2.out", dir);
    ASSERT(system(cmd) >= 0 && 0, "mpirun -np 2 failed (output above)");
  }
  /* the losses of every step, from the JSON logs */
  snprintf(p1, sizeof p1, "%s/dp1/log.jsonl", dir);
  snprintf(p2, sizeof p2, "%s/dp2/log.jsonl", dir);
  double l[2][3] = {{0}}, dl[2][3] = {{0}};
  for (int k = 0; k < 2; k++) {
    FILE *f = fopen(k ? p2 : p1, "r");
    ASSERT(f, "no %s", k ? p2 : p1);
    char line[2048];
    int got = 0;
    while (fgets(line, sizeof line, f)) {
      long long step;
      char *a = strstr(line, "\"loss\": "), *b = strstr(line, "\"d_real\": ");
      if (sscanf(line, "{\"step\": %lld", &step) != 1 || !a || !b || step < 1 || step > 3) continue;
      sscanf(a + 8, "%lf", &l[k][step - 1]);
      sscanf(b + 10, "%lf", &dl[k][step - 1]);
      got++;
    }
    fclose(f);
    ASSERT(got == 3, "%s: %d steps logged with the discriminators' terms", k ? p2 : p1, got);
  }
  for (int i = 0; i < 3; i++) {
    EXPECT(fabs(l[0][i] - l[1][i]) <= 1e-5 * fabs(l[0][i]), "step %d: loss %.9g with 1 process, %.9g with 2 ranks",
           i + 1, l[0][i], l[1][i]);
    EXPECT(fabs(dl[0][i] - dl[1][i]) <= 1e-5 * fabs(dl[0][i]), "step %d: D real term %.9g vs %.9g", i + 1, dl[0][i],
           dl[1][i]);
  }
  snprintf(p1, sizeof p1, "%s/dp1/ckpt_3.h5", dir);
  snprintf(p2, sizeof p2, "%s/dp2/ckpt_3.h5", dir);
  int ng, nd;
  double eg = ckpt_distance(p1, p2, "student/", &ng), ed = ckpt_distance(p1, p2, "disc/", &nd);
  printf("  2 ranks vs 1 process after 3 steps: generator relative L2 %.3g (%d tensors), discriminators %.3g (%d)\n",
         eg, ng, ed, nd);
  EXPECT(ng > 10 && nd > 100, "compared %d generator and %d discriminator tensors", ng, nd);
  EXPECT(eg <= 1e-6 && ed <= 1e-6, "weights differ: generator %.3g, discriminators %.3g", eg, ed);
}

TEST(train_vocoder_gan_bad_configs_fail_before_work) {
  const char *dir = setup();
  const char *groups[] = {GAN_SETS, "vocoder_train.disc_scale_groups=1,3,2,4,4,4,1"};
  expect_create_error(dir, groups, 5, "vocoder_train.disc_scale_groups = 1,3,2,4,4,4,1: conv 1's 3 groups do not "
                                      "divide its 4 input and 8 output channels");
  const char *count[] = {GAN_SETS, "vocoder_train.disc_scale_channels=4,8,8,8,16,16"};
  expect_create_error(dir, count, 5, "vocoder_train.disc_scale_channels = 4,8,8,8,16,16 has 6 values");
  const char *period[] = {GAN_SETS, "vocoder_train.disc_periods=2,3,4096"};
  expect_create_error(dir, period, 5, "segments of 2048 samples are shorter than the longest discriminator period "
                                      "(4096");
  const char *zero[] = {GAN_SETS, "vocoder_train.disc_period_channels=4,0,8"};
  expect_create_error(dir, zero, 5, "vocoder_train.disc_period_channels");
  const char *fm[] = {GAN_SETS, "vocoder_train.fm_weight=-1"};
  expect_create_error(dir, fm, 5, "vocoder_train.fm_weight");
  const char *scales[] = {GAN_SETS, "vocoder_train.disc_scales=5"};
  expect_create_error(dir, scales, 5, "vocoder_train.disc_scales");
}
