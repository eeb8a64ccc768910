/* train.mode = vocoder at tiny size: the differentiable log-mel equals data/mel.c's
 * mel_compute on the same waveform, and its gradient equals finite differences; the loss
 * falls on a few generated tones; the exported vocoder.h5 loads with hifigan_load; resume
 * after a checkpoint is bit-identical; shards without audio and bad sizes fail before work.
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
#include "data/loader.h"
#include "data/mel.h"
#include "data/shard.h"
#include "diffusion/train_vocoder.h"
#include "diffusion/trainer.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/weights.h"
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

TEST(train_vocoder_resume_is_bit_identical) {
  const char *dir = setup();
  enum { N = 4, HALF = 2 };
  double ref[N];
  McmErr err;
  StepStats st;
  Config cfg;
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = open_trainer(ctx, &cfg, dir, "ref", NULL, 0, TRAIN_RESUME_FRESH);
  for (int i = 0; i < N; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ref[i] = st.loss;
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
  ctx = ctx_create_cpu(0);
  t = open_trainer(ctx, &cfg, dir, "res", NULL, 0, TRAIN_RESUME_FRESH);
  for (int i = 0; i < HALF; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    EXPECT(st.loss == ref[i], "step %d: %.9g vs %.9g", i + 1, st.loss, ref[i]);
  }
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  ctx_destroy(ctx);
  ctx = ctx_create_cpu(0);
  t = open_trainer(ctx, &cfg, dir, "res", NULL, 0, TRAIN_RESUME_REQUIRE);
  ASSERT(trainer_step_count(t) == HALF, "resumed at %lld", (long long)trainer_step_count(t));
  for (int i = HALF; i < N; i++) {
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    EXPECT(st.loss == ref[i], "step %d after resume: %.9g vs %.9g (not bit-identical)", i + 1, st.loss, ref[i]);
  }
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
  const char *adv[] = {"train.adversarial=true"};
  expect_create_error(dir, adv, 1, "not implemented for train.mode = vocoder");
  const char *shape[] = {"mel.n_mels=32"};
  expect_create_error(dir, shape, 1, "another mel configuration");
}
