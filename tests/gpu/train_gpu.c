/* The trainer on the GPU against the CPU: configs/tiny.ini's whole MusicCM step (teacher,
 * EMA target, VAE decoder, bridge, AudioMAE, heads, hinge, R1, both AdamW, EMA) on a dataset
 * and teacher written here, in fp32 and with train.precision = bf16. The same seed gives the
 * same batches and the same random draws on both devices (counter-based Philox), so the
 * first step's losses differ only by the arithmetic:
 *  - fp32: summation order through ~200 ops; 1e-3 relative (the nets alone agree to 1e-4,
 *    tests/gpu/models_gpu.c; the losses average squares and hinges of their outputs).
 *  - bf16: the GPU against the CPU's emulation of the same rounding points; neighbouring-
 *    bf16 flips compound like bf16 itself, which tests/test_train.c bounds by 5e-2 against
 *    fp32: the same bound (G relative to the heads' output size, as there).
 * Then three more GPU steps stay finite, and the step time is printed. Which of the trainer's
 * CUDA paths this covers: every op of the distillation step and of the heads' step on one GPU;
 * not NCCL (tests/test_comm.c's comm_check nccl1 is the multi-GPU check). */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "core/config.h"
#include "diffusion/trainer.h"
#include "tests/test.h"
#include "tests/train_util.h"

/* Steps 1..n of the adversarial tiny run on ctx; returns seconds per step after the first. */
static double run(Ctx *ctx, const char *dir, const char *tag, const char *precision, int n, StepStats *st) {
  char a[6][800];
  snprintf(a[0], sizeof a[0], "data.train_shards=%s/data/shard_*.h5", dir);
  snprintf(a[1], sizeof a[1], "teacher.weights=%s/teacher.h5", dir);
  snprintf(a[2], sizeof a[2], "adversarial.bridge=%s/bridge.h5", dir);
  snprintf(a[3], sizeof a[3], "checkpoint.dir=%s/%s/ckpt", dir, tag);
  snprintf(a[4], sizeof a[4], "run.out_dir=%s/%s", dir, tag);
  snprintf(a[5], sizeof a[5], "train.precision=%s", precision);
  char *sets[] = {a[0], a[1], a[2], a[3], a[4], a[5], "mel.n_mels=16", "prepare.segment_frames=16",
                  "train.adversarial=true"};
  Config cfg;
  McmErr err;
  ASSERT(config_resolve(&cfg, "configs/tiny.ini", 9, sets, &err) == 0, "%s", err.msg);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  ASSERT(t, "%s", err.msg);
  struct timespec t0, t1;
  for (int i = 0; i < n; i++) {
    if (i == 1) ctx_sync(ctx), clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT(trainer_step(t, &st[i], &err) == 0, "%s step %d: %s", tag, i + 1, err.msg);
    ASSERT(!st[i].skipped && isfinite(st[i].loss), "%s step %d not finite", tag, i + 1);
  }
  ctx_sync(ctx);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  trainer_destroy(t);
  return n > 1 ? ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) / (n - 1) : 0.0;
}

static void check(const char *precision, double tol) {
  const char *dir = test_tmpdir();
  test_make_train_dir(dir);
  McmErr err;
  Ctx *gpu = ctx_create(&(DeviceSpec){DEV_CUDA, 0, false}, 0, &err);
  ASSERT(gpu, "%s", err.msg);
  Ctx *cpu = ctx_create_cpu(0);
  StepStats c[1], g[4];
  run(cpu, dir, "cpu", precision, 1, c);
  double s = run(gpu, dir, "gpu", precision, 4, g);
  printf("  %s on %s: %.2f ms/step at batch 2; bf16 share of FLOPs %.0f%%\n", precision, gpu->device_name, 1e3 * s,
         g[0].flops > 0 ? 100 * g[0].flops_bf16 / g[0].flops : 0.0);
  const double pairs[][2] = {{c[0].distill, g[0].distill}, {c[0].g_loss, g[0].g_loss},
                             {c[0].d_real, g[0].d_real}, {c[0].grad_norm, g[0].grad_norm}};
  const char *names[] = {"distill", "G", "D real", "student gradient norm"};
  for (int k = 0; k < 4; k++) {
    double scale = k == 1 ? fmax(fabs(pairs[k][0]), c[0].d_real) : fabs(pairs[k][0]);
    double rel = fabs(pairs[k][1] - pairs[k][0]) / fmax(scale, 1e-12);
    printf("  step 1 %s: CPU %.6g, GPU %.6g (relative %.2g)\n", names[k], pairs[k][0], pairs[k][1], rel);
    EXPECT(rel < tol, "%s step 1 %s: CPU %.9g vs GPU %.9g", precision, names[k], pairs[k][0], pairs[k][1]);
  }
  EXPECT(g[0].flops == c[0].flops && g[0].flops_bf16 == c[0].flops_bf16, "FLOP counts differ between devices");
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}

TEST(gpu_train_step_matches_cpu_fp32) { check("fp32", 1e-3); }
TEST(gpu_train_step_matches_cpu_bf16) { check("bf16", 5e-2); }
