/* The trainer end to end at tiny size (configs/tiny.ini): a generated dataset (shards with
 * VAE moments and text embeddings, encoders.h5) and a random teacher written here; the loss
 * falls; a fixed seed reproduces every loss bit for bit; a run killed with SIGKILL at random
 * moments resumes to the same losses as an uninterrupted one; every bad input is one clear
 * error before any step. */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/tensorfile.h"
#include "data/shard.h"
#include "diffusion/bridge.h"
#include "diffusion/trainer.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/unet.h"
#include "models/weights.h"
#include "tests/test.h"
#include "tests/train_util.h"

#define TINY "configs/tiny.ini"

/* The test's tmp dir with data/ (the tiny dataset), teacher.h5 and bridge.h5. */
static const char *setup(void) {
  test_make_train_dir(test_tmpdir());
  return test_tmpdir();
}

/* tiny.ini with the paths of setup()'s dir, run name `run` (checkpoints and log under it),
 * and extra --set assignments. */
static int resolve(Config *cfg, const char *dir, const char *run, const char *const *extra, int n_extra, McmErr *err) {
  char a[8][700];
  char *sets[32];
  int n = 0;
  snprintf(a[4], sizeof a[4], "adversarial.bridge=%s/bridge.h5", dir);
  sets[n++] = a[4];
  sets[n++] = "mel.n_mels=16";
  sets[n++] = "prepare.segment_frames=16";
  snprintf(a[0], sizeof a[0], "data.train_shards=%s/data/shard_*.h5", dir);
  snprintf(a[1], sizeof a[1], "teacher.weights=%s/teacher.h5", dir);
  snprintf(a[2], sizeof a[2], "checkpoint.dir=%s/%s/ckpt", dir, run);
  snprintf(a[3], sizeof a[3], "run.out_dir=%s/%s", dir, run);
  for (int i = 0; i < 4; i++) sets[n++] = a[i];
  for (int i = 0; i < n_extra; i++) sets[n++] = (char *)extra[i];
  return config_resolve(cfg, TINY, n, sets, err);
}

/* Runs `steps` steps in process; losses[i] of step i+1. */
static void run_steps(const char *dir, const char *run, const char *const *extra, int n_extra, int steps,
                      double *losses) {
  Config cfg;
  McmErr err;
  ASSERT(resolve(&cfg, dir, run, extra, n_extra, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu((uint64_t)cfg.run.seed);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  ASSERT(t, "%s", err.msg);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < steps; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ASSERT(!st.skipped, "step %d skipped", i + 1);
    losses[i] = st.loss;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  printf("  %s (%s, batch %lld): %.1f ms/step, %.1f samples/s\n", run, cfg.train.mode, (long long)cfg.train.batch_size,
         1e3 * dt / steps, (double)steps * (double)cfg.train.batch_size / dt);
  trainer_destroy(t);
  ctx_destroy(ctx);
}

static double mean(const double *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i];
  return s / n;
}

TEST(train_distill_loss_falls_and_is_reproducible) {
  const char *dir = setup();
  enum { S = 40 };
  double a[S], b[S];
  const char *extra[] = {"train.lr=3e-3", "train.loss=l2"};
  run_steps(dir, "a", extra, 2, S, a);
  run_steps(dir, "b", extra, 2, S, b);
  for (int i = 0; i < S; i++) EXPECT(a[i] == b[i], "step %d: %.9g vs %.9g (not bit-identical)", i + 1, a[i], b[i]);
  double first = mean(a, 8), last = mean(a + S - 8, 8);
  EXPECT(last < 0.7 * first, "distill loss did not fall: first 8 steps %.4g, last 8 %.4g", first, last);
}

TEST(train_teacher_loss_falls) {
  const char *dir = setup();
  enum { S = 40 };
  double a[S];
  const char *extra[] = {"train.mode=teacher", "train.lr=3e-3"};
  run_steps(dir, "t", extra, 2, S, a);
  double first = mean(a, 8), last = mean(a + S - 8, 8);
  EXPECT(last < 0.8 * first, "teacher loss did not fall: first 8 steps %.4g, last 8 %.4g", first, last);
}

/* Model FLOPs of one step (the TFLOP/s and MFU of the log), the same every step. With F the
 * UNet forward at the batch: a teacher step is F + the weight gradient (F) + the input
 * gradients (F less the first convolution's, whose input needs none): just under 3F. A
 * distillation step adds the frozen teacher on cond + uncond (2F) and the EMA target (F),
 * forward only: exactly 3F more. So F = (distill − teacher) / 3 from the two counts, and the
 * teacher step must lie in (2.8F, 3F). A frozen network that counted a backward would break
 * the first relation; a missing weight gradient the second. Under train.precision = bf16 the
 * teacher's 2F, and nothing else, are bf16 FLOPs (the EMA target is fp32). */
static double step_flops(const char *dir, const char *run, const char *const *extra, int n_extra, double *bf16) {
  Config cfg;
  McmErr err;
  ASSERT(resolve(&cfg, dir, run, extra, n_extra, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu((uint64_t)cfg.run.seed);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  ASSERT(t, "%s", err.msg);
  double f[3];
  for (int i = 0; i < 3; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    f[i] = st.flops;
    if (bf16) *bf16 = st.flops_bf16;
  }
  EXPECT(f[0] > 0 && f[0] == f[1] && f[1] == f[2], "%s: %g %g %g FLOPs per step", run, f[0], f[1], f[2]);
  trainer_destroy(t);
  ctx_destroy(ctx);
  return f[0];
}

TEST(train_counts_the_model_flops_of_a_step) {
  const char *dir = setup();
  const char *teacher[] = {"train.mode=teacher", "train.cond_dropout=0"};
  const char *distill[] = {"train.adversarial=false", "train.precision=fp32"};
  const char *distill_bf16[] = {"train.adversarial=false", "train.precision=bf16"};
  double T = step_flops(dir, "ft", teacher, 2, NULL), D = step_flops(dir, "fd", distill, 2, NULL), D16;
  double F = (D - T) / 3;
  printf("  teacher step %.4g FLOPs, distill step %.4g: UNet forward %.4g\n", T, D, F);
  EXPECT(T < 3 * F && T > 2.8 * F, "teacher step %.6g FLOPs vs 3F = %.6g", T, 3 * F);
  EXPECT(step_flops(dir, "fd16", distill_bf16, 2, &D16) == D, "bf16 changed the step's FLOPs");
  EXPECT(fabs(D16 - 2 * F) <= 1e-9 * D, "bf16 FLOPs %.9g, the teacher's 2F = %.9g", D16, 2 * F);
}

/* ------------------------------------------------------------------ resume after SIGKILL */

/* ./train tiny.ini with the paths of dir, run `run`; returns the pid (not waited). */
static pid_t spawn_train(const char *dir, const char *run, const char *steps_set, const char *extra) {
  pid_t pid = fork();
  ASSERT(pid >= 0, "fork");
  if (pid == 0) {
    char bin[600], a[6][700];
    const char *bd = getenv("MCM_BIN_DIR");
    snprintf(bin, sizeof bin, "%s/train", bd ? bd : ".");
    snprintf(a[0], sizeof a[0], "data.train_shards=%s/data/shard_*.h5", dir);
    snprintf(a[1], sizeof a[1], "teacher.weights=%s/teacher.h5", dir);
    snprintf(a[2], sizeof a[2], "checkpoint.dir=%s/%s/ckpt", dir, run);
    snprintf(a[3], sizeof a[3], "run.out_dir=%s/%s", dir, run);
    int fd = open("/dev/null", O_WRONLY);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(bin, bin, TINY, "--quiet", "--set", "mel.n_mels=16", "--set", "prepare.segment_frames=16", "--set", a[0], "--set", a[1], "--set", a[2], "--set", a[3], "--set", steps_set,
          "--set", "checkpoint.every=1", "--set", "checkpoint.keep=2", "--set", extra, (char *)NULL);
    _exit(127);
  }
  return pid;
}

static int wait_status(pid_t pid) {
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST(train_resume_after_sigkill_is_bit_identical) {
  const char *dir = setup();
  enum { S = 14 };
  const char *steps = "train.steps=14", *extra = "data.num_workers=1"; /* the prefetching loader */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ASSERT(wait_status(spawn_train(dir, "ref", steps, extra)) == 0, "uninterrupted run failed");
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double t_ref = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  double ref[S], got[S];
  char p[1024];
  snprintf(p, sizeof p, "%s/ref/log.jsonl", dir);
  ASSERT(test_read_log_losses(p, ref, S) == S, "reference log incomplete");

  /* A leftover of a writer killed mid-write must never be read: a garbage .tmp that would
   * be the newest checkpoint. */
  snprintf(p, sizeof p, "%s/kill/ckpt", dir);
  mkdir(dir, 0777);
  char q[2048];
  snprintf(q, sizeof q, "%s/kill", dir);
  mkdir(q, 0777);
  mkdir(p, 0777);
  snprintf(q, sizeof q, "%s/ckpt_999.h5.tmp", p);
  FILE *f = fopen(q, "w");
  fputs("half a checkpoint", f);
  fclose(f);

  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  /* Each run resumes where the last one's newest checkpoint left it; kill it after a random
   * 25-60 % of an uninterrupted run's time (start-up included), so kills land before the first
   * checkpoint, between steps, and inside checkpoint writes. */
  int kills = 0, mid_run = 0;
  char delays[256] = "";
  for (int k = 0; k < 4; k++) {
    pid_t pid = spawn_train(dir, "kill", steps, extra);
    int ms = (int)(1000.0 * t_ref * (0.25 + 0.35 * (double)rand() / RAND_MAX));
    snprintf(delays + strlen(delays), sizeof delays - strlen(delays), "%d ", ms);
    usleep((useconds_t)ms * 1000);
    kill(pid, SIGKILL);
    int st = wait_status(pid);
    kills += st == 128 + SIGKILL;
    char newest[2048];
    int64_t at = 0;
    snprintf(p, sizeof p, "%s/kill/ckpt", dir);
    if (st == 128 + SIGKILL && trainer_latest_checkpoint(p, newest, sizeof newest, &at) && at > 0 && at < S) mid_run++;
  }
  ASSERT(wait_status(spawn_train(dir, "kill", steps, extra)) == 0, "resumed run failed (kill delays ms: %s)", delays);
  snprintf(p, sizeof p, "%s/kill/log.jsonl", dir);
  ASSERT(test_read_log_losses(p, got, S) == S, "resumed log incomplete");
  for (int i = 0; i < S; i++)
    EXPECT(got[i] == ref[i], "step %d: %.9g after resume, %.9g uninterrupted (kill delays ms: %s)", i + 1, got[i],
           ref[i], delays);
  EXPECT(kills >= 1 && mid_run >= 1, "no run was killed mid-way (%d killed, %d with a partial run; delays ms: %s)", kills,
         mid_run, delays);
  /* keep = 2 */
  char path[2048];
  int64_t step;
  snprintf(p, sizeof p, "%s/kill/ckpt", dir);
  ASSERT(trainer_latest_checkpoint(p, path, sizeof path, &step) == 1 && step == S, "newest checkpoint %lld", (long long)step);
  snprintf(q, sizeof q, "%s/ckpt_%d.h5", p, S - 2);
  EXPECT(access(q, F_OK) != 0, "ckpt_%d.h5 should have been pruned (keep = 2)", S - 2);
}

TEST(train_sigterm_writes_checkpoint) {
  const char *dir = setup();
  pid_t pid = spawn_train(dir, "term", "train.steps=100000", "train.loss=huber");
  /* After its first step (a loaded machine may take seconds to start it): log_every is 1. */
  char log[700];
  snprintf(log, sizeof log, "%s/term/log.jsonl", dir);
  EXPECT(test_wait_file_contains(log, "\"step\": 1,", 60.0), "no step logged within 60 s");
  kill(pid, SIGTERM);
  int st = wait_status(pid);
  EXPECT(st == 143, "exit status %d after SIGTERM", st);
  char p[700], path[700];
  int64_t step;
  snprintf(p, sizeof p, "%s/term/ckpt", dir);
  EXPECT(trainer_latest_checkpoint(p, path, sizeof path, &step) == 1 && step >= 1, "no checkpoint after SIGTERM");
}

/* What ./train prints and logs under train.precision = bf16: the start line naming the frozen
 * networks that compute in bf16, and per step the throughput, the bf16 share of the FLOPs and
 * this rank's memory (persistent + activation peak), on screen and in log.jsonl. */
TEST(train_log_reports_precision_speed_and_memory) {
  const char *dir = setup();
  char out[1 << 14];
  int rc = test_run_cmd(out, sizeof out,
                        "./train " TINY " --set mel.n_mels=16 --set prepare.segment_frames=16 "
                        "--set data.train_shards=%s/data/shard_*.h5 --set teacher.weights=%s/teacher.h5 "
                        "--set adversarial.bridge=%s/bridge.h5 --set train.adversarial=true "
                        "--set train.precision=bf16 --set train.steps=2 --set checkpoint.dir=%s/log/ckpt "
                        "--set run.out_dir=%s/log",
                        dir, dir, dir, dir, dir);
  ASSERT(rc == 0, "./train exited %d: %s", rc, out);
  EXPECT_STR_CONTAINS(out, "train.precision = bf16: the frozen teacher, VAE and AudioMAE compute in bf16");
  EXPECT_STR_CONTAINS(out, "on the CPU bf16 is emulated");
  EXPECT_STR_CONTAINS(out, "GFLOP/s");
  EXPECT_STR_CONTAINS(out, "MiB (persistent ");
  char p[700];
  snprintf(p, sizeof p, "%s/log/log.jsonl", dir);
  FILE *f = fopen(p, "r");
  ASSERT(f, "no %s", p);
  char line[4096] = "", next[4096];
  while (fgets(next, sizeof next, f)) memcpy(line, next, sizeof line); /* the last line: step 2 */
  fclose(f);
  double act = -1, bf16 = -1;
  const char *a = strstr(line, "\"mem_activation_peak_bytes\": "), *b = strstr(line, "\"flops_bf16_per_step\": ");
  ASSERT(a && b, "last log line lacks memory or bf16 FLOPs: %s", line);
  sscanf(a + strlen("\"mem_activation_peak_bytes\": "), "%lf", &act);
  sscanf(b + strlen("\"flops_bf16_per_step\": "), "%lf", &bf16);
  EXPECT(act > 0 && bf16 > 0, "activation peak %g bytes, bf16 FLOPs %g", act, bf16);
}

/* ------------------------------------------------------------------ bad inputs */

/* trainer_create must fail with a message containing `want`. */
static void expect_create_error(const char *dir, const char *run, const char *const *extra, int n, const char *want) {
  Config cfg;
  McmErr err = {{0}};
  int rc = resolve(&cfg, dir, run, extra, n, &err);
  if (rc == 0) {
    Ctx *ctx = ctx_create_cpu(0);
    Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_AUTO, true}, &err);
    EXPECT(!t, "expected an error containing \"%s\"", want);
    if (t) trainer_destroy(t);
    ctx_destroy(ctx);
  }
  EXPECT(strstr(err.msg, want), "error \"%s\" does not contain \"%s\"", err.msg, want);
}

TEST(train_bad_inputs_fail_before_work) {
  const char *dir = setup();
  char p[2048], q[1024];
  /* config keys */
  expect_create_error(dir, "x", (const char *[]){"train.nosuch=1"}, 1, "nosuch");
  expect_create_error(dir, "x", (const char *[]){"train.lr=fast"}, 1, "train.lr");
  expect_create_error(dir, "x", (const char *[]){"train.adversarial=true", "train.batch_size=9",
                                                 "adversarial.virtual_bs=8"}, 3, "local batch norm");
  expect_create_error(dir, "x", (const char *[]){"train.adversarial=true", "vae.weights="}, 2, "vae.weights is required");
  expect_create_error(dir, "x", (const char *[]){"train.adversarial=true", "adversarial.audiomae=nope.h5"}, 2,
                      "adversarial.audiomae = nope.h5");
  expect_create_error(dir, "x", (const char *[]){"train.adversarial=true", "adversarial.mae_dim=32"}, 2, "[adversarial]");
  /* weights */
  snprintf(p, sizeof p, "teacher.weights=%s/none.h5", dir);
  expect_create_error(dir, "x", (const char *[]){p}, 1, "teacher.weights");
  snprintf(q, sizeof q, "%s/teacher32.h5", dir);
  test_make_teacher(q, 32, 6);
  snprintf(p, sizeof p, "teacher.weights=%s", q);
  expect_create_error(dir, "x", (const char *[]){p}, 1, "shape");
  expect_create_error(dir, "x", (const char *[]){"vae.weights=tests/fixtures/model_vae_weights_a.h5"}, 1,
                      "latent channels");
  /* the tiny VAE fits these shards: no error from it (and a loss-free create) */
  {
    Config cfg;
    McmErr err;
    ASSERT(resolve(&cfg, dir, "vae_ok", (const char *[]){"vae.weights=tests/fixtures/model_vae_weights_tiny.h5"}, 1,
                   &err) == 0, "%s", err.msg);
    Ctx *ctx = ctx_create_cpu(0);
    Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){0}, &err);
    EXPECT(t, "the tiny VAE should be accepted: %s", err.msg);
    if (t) trainer_destroy(t);
    ctx_destroy(ctx);
  }
  /* data */
  expect_create_error(dir, "x", (const char *[]){"mel.n_mels=64"}, 1, "another mel configuration");
  expect_create_error(dir, "x", (const char *[]){"unet.latent_frames=16"}, 1, "latents are");
  snprintf(q, sizeof q, "%s/empty", dir);
  DataSpec e = test_tiny_data_spec();
  e.rows = 0;
  test_make_train_data(q, e);
  snprintf(p, sizeof p, "data.train_shards=%s/shard_*.h5", q);
  expect_create_error(dir, "x", (const char *[]){p}, 1, "no samples");
  snprintf(p, sizeof p, "data.train_shards=%s/nothing_here_*.h5", dir);
  expect_create_error(dir, "x", (const char *[]){p}, 1, "data.train_shards");
  snprintf(p, sizeof p, "data.encoders=%s/none.h5", dir);
  expect_create_error(dir, "x", (const char *[]){p}, 1, "encoders");
  /* directories */
  snprintf(q, sizeof q, "%s/ro", dir);
  mkdir(q, 0555);
  snprintf(p, sizeof p, "checkpoint.dir=%s/ro/ckpt", dir);
  if (geteuid() != 0) expect_create_error(dir, "x", (const char *[]){p}, 1, "checkpoint.dir");
  snprintf(q, sizeof q, "%s/afile", dir);
  fclose(fopen(q, "w"));
  snprintf(p, sizeof p, "checkpoint.dir=%s/afile", dir);
  expect_create_error(dir, "x", (const char *[]){p}, 1, "checkpoint.dir");
  /* modes */
  /* the vocoder's discriminators are accepted: what stops these mel-only shards is the audio */
  expect_create_error(dir, "x", (const char *[]){"train.mode=vocoder", "train.adversarial=true"}, 2, "keep_audio = true");
  expect_create_error(dir, "x", (const char *[]){"sample.every=10"}, 1, "sample.bundle");
  expect_create_error(dir, "x", (const char *[]){"teacher.weights="}, 1, "teacher.weights is required");
}

TEST(train_fresh_and_resume_flags) {
  const char *dir = setup();
  Config cfg;
  McmErr err = {{0}};
  ASSERT(resolve(&cfg, dir, "f", NULL, 0, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_REQUIRE, true}, &err);
  EXPECT(!t && strstr(err.msg, "--resume"), "--resume without a checkpoint: %s", err.msg);
  t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  ASSERT(t, "%s", err.msg);
  StepStats st;
  ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  EXPECT(!t && strstr(err.msg, "--fresh"), "--fresh with a checkpoint: %s", err.msg);
  t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_REQUIRE, true}, &err);
  ASSERT(t, "%s", err.msg);
  EXPECT(trainer_step_count(t) == 1, "resumed at step %lld", (long long)trainer_step_count(t));
  trainer_destroy(t);
  /* a teacher-mode run refuses a distill checkpoint */
  Config c2;
  ASSERT(resolve(&c2, dir, "f", (const char *[]){"train.mode=teacher"}, 1, &err) == 0, "%s", err.msg);
  t = trainer_create(ctx, &c2, &(TrainerOptions){0}, &err);
  EXPECT(!t && strstr(err.msg, "train.mode = distill"), "mode mismatch: %s", err.msg);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ with the discriminator */

TEST(train_adversarial_runs_heads_learn_and_resume_is_exact) {
  const char *dir = setup();
  enum { S = 60, HALF = 3 };
  const char *extra[] = {"train.adversarial=true", "train.lr=1e-6", "adversarial.lr=1e-2"};
  Config cfg;
  McmErr err;
  ASSERT(resolve(&cfg, dir, "adv", extra, 3, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  ASSERT(t, "%s", err.msg);
  double acc[S], loss[S];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < S; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "step %d: %s", i + 1, err.msg);
    ASSERT(!st.skipped && isfinite(st.loss) && isfinite(st.g_loss) && isfinite(st.distill), "step %d not finite", i + 1);
    EXPECT(fabs(st.loss - (st.g_loss + 3.0 * st.distill)) <= 1e-5 * (1 + fabs(st.loss)), "L = G + 3 distill at step %d",
           i + 1);
    acc[i] = st.d_acc, loss[i] = st.loss;
    if (i + 1 == HALF) ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  printf("  adversarial distill (batch 2): %.1f ms/step, %.1f samples/s (one checkpoint included)\n", 1e3 * dt / S,
         2.0 * S / dt);
  trainer_destroy(t);
  double late = mean(acc + S - 10, 10);
  printf("  heads accuracy: first 5 steps %.3f, last 10 %.3f\n", mean(acc, 5), late);
  EXPECT(late > 0.6, "the heads did not move off chance: accuracy %.3f over the last 10 steps", late);
  /* resume from step HALF: the same losses, bit for bit (heads, their optimizer and the
   * spectral-norm vectors are in the checkpoint) */
  char p[1024];
  snprintf(p, sizeof p, "%s/adv/ckpt/ckpt_%d.h5", dir, S);
  (void)p;
  t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_REQUIRE, true}, &err);
  ASSERT(t, "%s", err.msg);
  ASSERT(trainer_step_count(t) == HALF, "resumed at %lld", (long long)trainer_step_count(t));
  for (int i = HALF; i < HALF + 4; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    EXPECT(st.loss == loss[i] && st.d_acc == acc[i], "step %d after resume: loss %.9g vs %.9g", i + 1, st.loss, loss[i]);
  }
  trainer_destroy(t);
  ctx_destroy(ctx);
}

/* train.precision = bf16: the frozen teacher, VAE decoder and AudioMAE compute in bf16 (on the
 * CPU emulated with the GPU's rounding points), the student, EMA and heads in fp32. From the same
 * start, the first steps' losses track the fp32 run's: the frozen networks' outputs differ by
 * ~1e-2 relative (tests/test_bf16_models.c), and a loss is a smooth function of them, so 5e-2
 * relative; more than 1e-5, or the cast did nothing. Some, not all, of the FLOPs are bf16
 * (train_counts_the_model_flops_of_a_step pins the teacher's share exactly). And a bf16 run
 * is as reproducible as an fp32 one, bit for bit. */
TEST(train_bf16_frozen_networks_track_fp32) {
  const char *dir = setup();
  enum { S = 2 };
  const char *f32[] = {"train.adversarial=true", "train.precision=fp32"};
  const char *b16[] = {"train.adversarial=true", "train.precision=bf16"};
  StepStats a[S], b[S], c[S];
  for (int run = 0; run < 3; run++) {
    Config cfg;
    McmErr err;
    ASSERT(resolve(&cfg, dir, run == 0 ? "f32" : run == 1 ? "b16" : "b16again", run ? b16 : f32, 2, &err) == 0, "%s",
           err.msg);
    Ctx *ctx = ctx_create_cpu((uint64_t)cfg.run.seed);
    Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
    ASSERT(t, "%s", err.msg);
    TrainerParts parts = trainer_parts(t);
    for (int i = 0; i < parts.student->n; i++)
      EXPECT(parts.student->p[i]->dtype == DT_F32, "student parameter %s is %s", parts.student->p[i]->name,
             dtype_name(parts.student->p[i]->dtype));
    for (int i = 0; i < S; i++) {
      StepStats *st = run == 0 ? &a[i] : run == 1 ? &b[i] : &c[i];
      ASSERT(trainer_step(t, st, &err) == 0, "%s", err.msg);
      ASSERT(!st->skipped, "run %d step %d skipped", run, i + 1);
    }
    trainer_destroy(t);
    ctx_destroy(ctx);
  }
  for (int i = 0; i < S; i++) {
    const double pairs[][2] = {{a[i].distill, b[i].distill}, {a[i].g_loss, b[i].g_loss}, {a[i].d_real, b[i].d_real}};
    const char *names[] = {"distill", "G", "D real"};
    for (int k = 0; k < 3; k++) {
      /* G = −mean D(fake) is a mean of head outputs of both signs, small by cancellation:
       * its error is relative to the outputs' size, which D real (hinge, ≈ 1 + |D|) shows. */
      double scale = k == 1 ? fmax(fabs(pairs[k][0]), a[i].d_real) : fabs(pairs[k][0]);
      double rel = fabs(pairs[k][1] - pairs[k][0]) / fmax(scale, 1e-12);
      printf("  step %d %s: fp32 %.6g, bf16 %.6g (relative %.2g)\n", i + 1, names[k], pairs[k][0], pairs[k][1], rel);
      EXPECT(rel < 5e-2 && rel > 1e-5, "step %d %s: fp32 %.9g vs bf16 %.9g", i + 1, names[k], pairs[k][0], pairs[k][1]);
    }
    EXPECT(b[i].loss == c[i].loss && b[i].g_loss == c[i].g_loss, "bf16 step %d not reproducible: %.9g vs %.9g", i + 1,
           b[i].loss, c[i].loss);
    EXPECT(a[i].flops == b[i].flops, "step %d: %g FLOPs in fp32, %g in bf16", i + 1, a[i].flops, b[i].flops);
    EXPECT(a[i].flops_bf16 == 0, "fp32 run counted %g bf16 FLOPs", a[i].flops_bf16);
    EXPECT(b[i].flops_bf16 > 0 && b[i].flops_bf16 < b[i].flops, "bf16 FLOPs %g of %g", b[i].flops_bf16, b[i].flops);
  }
  printf("  bf16 share of the step's FLOPs: %.1f%%\n", 100 * b[0].flops_bf16 / b[0].flops);
}

/* Latents scaled to ~1e38 (a broken encoders.h5) overflow in the UNet: every step's loss is
 * non-finite, is skipped (no update, counted), and nan_tolerance of them in a row stop the run. */
TEST(train_non_finite_steps_are_skipped_then_stop) {
  const char *dir = setup();
  char enc[1024], set[1100];
  snprintf(enc, sizeof enc, "%s/huge_encoders.h5", dir);
  McmErr err;
  TensorFile *tf = tf_create(enc, &err);
  float un[16] = {0}, scale = 1e38f;
  ASSERT(tf && tf_write(tf, "uncond_text_emb", DT_F32, 1, (int64_t[]){16}, un, &err) == 0 &&
             tf_write(tf, "vae_scaling_factor", DT_F32, 0, NULL, &scale, &err) == 0 && tf_commit(tf, &err) == 0,
         "%s", err.msg);
  snprintf(set, sizeof set, "data.encoders=%s", enc);
  Config cfg;
  const char *extra[] = {set, "train.nan_tolerance=3"};
  ASSERT(resolve(&cfg, dir, "nan", extra, 2, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  ASSERT(t, "%s", err.msg);
  int rc = 0, steps = 0, skipped = 0;
  StepStats st;
  while (steps < 20 && (rc = trainer_step(t, &st, &err)) == 0) steps++, skipped += st.skipped;
  EXPECT(rc == -1 && steps == 2 && skipped == 2, "rc %d after %d steps (%d skipped)", rc, steps, skipped);
  EXPECT_STR_CONTAINS(err.msg, "3 steps in a row had a NaN or infinite loss");
  trainer_destroy(t);
  ctx_destroy(ctx);
}

/* Training samples: a random ./infer bundle with the tiny UNet (its student weights are
 * replaced by the trainer's EMA before sampling), 2 prompts every 2 steps; sampling does not
 * change the training (the losses equal a run without samples). */
TEST(train_writes_samples_without_changing_the_run) {
  const char *dir = setup();
  char bundle[1024], prompts[1024], s1[1100], s2[1100];
  snprintf(bundle, sizeof bundle, "%s/bundle", dir);
  RandomBundle rb = random_bundle_tiny("tests/fixtures/tokenizer");
  UNetConfig *u = &rb.unet;
  u->in_channels = u->out_channels = 2;
  u->block_out_channels[0] = 16, u->block_out_channels[1] = 32;
  u->norm_groups = 8, u->num_head_channels = 16;
  u->time_proj_dim = 16, u->time_embed_dim = 64, u->class_embed_in = 16;
  rb.sample_size = 8;
  rb.vae.latent_channels = 2;
  rb.text.projection_dim = 16;
  McmErr err = {{0}};
  ASSERT(random_bundle_write(bundle, &rb, &err) == 0, "%s", err.msg);
  snprintf(prompts, sizeof prompts, "%s/prompts.txt", dir);
  FILE *f = fopen(prompts, "w");
  fputs("calm piano\n\nfast drums and bass\n", f);
  fclose(f);
  snprintf(s1, sizeof s1, "sample.bundle=%s", bundle);
  snprintf(s2, sizeof s2, "sample.prompts=%s", prompts);
  const char *extra[] = {s1, s2, "sample.every=2", "train.steps=4"};
  double with[4], without[4];
  for (int pass = 0; pass < 2; pass++) {
    Config cfg;
    ASSERT(resolve(&cfg, dir, pass ? "plain" : "samples", extra, pass ? 0 : 4, &err) == 0, "%s", err.msg);
    cfg.train.steps = 4;
    Ctx *ctx = ctx_create_cpu(0);
    Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
    ASSERT(t, "%s", err.msg);
    ASSERT(trainer_run(t, &err) == 0, "%s", err.msg);
    trainer_destroy(t);
    ctx_destroy(ctx);
    char p[1100];
    snprintf(p, sizeof p, "%s/%s/log.jsonl", dir, pass ? "plain" : "samples");
    ASSERT(test_read_log_losses(p, pass ? without : with, 4) == 4, "log incomplete");
  }
  for (int i = 0; i < 4; i++) EXPECT(with[i] == without[i], "step %d: %.9g with samples, %.9g without", i + 1, with[i], without[i]);
  const char *want[] = {"step_2/000_calm-piano_seed0.wav", "step_2/001_fast-drums-and-bass_seed1.png",
                        "step_4/000_calm-piano_seed0.png", "step_4/001_fast-drums-and-bass_seed1.wav"};
  for (int i = 0; i < 4; i++) {
    char p[1200];
    snprintf(p, sizeof p, "%s/samples/samples/%s", dir, want[i]);
    EXPECT(access(p, F_OK) == 0, "missing %s", p);
  }
}
