/* Data parallelism on the CPU: `mpirun -np 2 ./train` with batch 2 per rank against one
 * process with batch 4 (the same global batch). The trainer draws its noise for the global
 * batch and each rank keeps its rows, so the two runs see the same numbers and differ only
 * in the order of the gradient sum: losses and parameters agree within fp32 rounding.
 * Tolerances, at the recipe's lr 1e-5: relative 1e-5 for the per-step losses; over all
 * student parameters after 6 AdamW steps a relative L2 of 1e-6, and per element at most
 * lr·steps / 2. The fp32 rounding of a 4-row mean vs two 2-row means is ~1e-7 of a
 * gradient, but Adam divides by √v: where a gradient element is itself at rounding level
 * (a zero-initialised norm bias, say), its update is ±lr either way and its sign is noise,
 * so per-tensor relative errors of such tensors are not a meaningful bound. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "tests/test.h"

/* The tiny dataset of configs/tiny.ini (one shard of 12 rows) and a random teacher. */
#include "data/shard.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/unet.h"

static void make_data(const char *dir) {
  McmErr err;
  mkdir(dir, 0777);
  const int rows = 12, F = 16, M = 16, C2 = 4, H = 8, W = 8, D = 16;
  char path[2048];
  snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
  ShardInfo info = {F, M, 16000, 160};
  ShardWriter *w = shard_create(path, &info, &err);
  ASSERT(w, "%s", err.msg);
  float mel[F * M];
  for (int i = 0; i < rows; i++) {
    rng_normal_host(7, (uint64_t)i * 1000, mel, F * M);
    ASSERT(shard_append(w, mel, "x", "x.wav", 0, &err) == 0, "%s", err.msg);
  }
  ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
  static float lat[12 * 4 * 8 * 8], emb[12 * 16];
  rng_normal_host(8, 0, lat, rows * C2 * H * W);
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < 2 * H * W; j++) lat[i * C2 * H * W + 2 * H * W + j] = -4.0f + 0.1f * lat[i * C2 * H * W + 2 * H * W + j];
  rng_normal_host(9, 0, emb, rows * D);
  ASSERT(shard_add_latents(path, lat, C2, H, W, &err) == 0, "%s", err.msg);
  ASSERT(shard_add_text_emb(path, emb, D, &err) == 0, "%s", err.msg);
  snprintf(path, sizeof path, "%s/encoders.h5", dir);
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float un[16], scale = 0.25f;
  rng_normal_host(10, 0, un, D);
  ASSERT(tf_write(tf, "uncond_text_emb", DT_F32, 1, (int64_t[]){D}, un, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "vae_scaling_factor", DT_F32, 0, NULL, &scale, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
}

static void make_teacher(const char *path) {
  Ctx *ctx = ctx_create_cpu(3);
  UNetConfig u = unet_config_musicldm();
  u.in_channels = u.out_channels = 2;
  u.levels = 2;
  u.block_out_channels[0] = 16, u.block_out_channels[1] = 32;
  u.attention[0] = false, u.attention[1] = true;
  u.layers_per_block = 1;
  u.norm_groups = 8;
  u.num_head_channels = 16;
  u.time_proj_dim = 16, u.time_embed_dim = 64;
  u.class_embed_in = 16;
  ParamSet ps;
  params_init(&ps, "");
  unet_init_random(ctx, unet_create(ctx, &u, &ps));
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf && params_save(ctx, &ps, tf, "", DT_F32, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

static int read_log(const char *path, double *loss, int max_step) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[1024];
  int last = 0;
  while (fgets(line, sizeof line, f)) {
    long long step;
    double l;
    char *p = strstr(line, "\"loss\": ");
    if (sscanf(line, "{\"step\": %lld", &step) != 1 || !p || sscanf(p + 8, "%lf", &l) != 1) continue;
    if (step >= 1 && step <= max_step) loss[step - 1] = l, last = (int)step > last ? (int)step : last;
  }
  fclose(f);
  return last;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
  double d = 0, r = 0;
  for (int64_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
  return sqrt(d) / fmax(sqrt(r), 1e-30);
}

TEST(train_mpi_two_ranks_match_one_process) {
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
  const char *dir = test_tmpdir();
  char data[1024], teacher[1024], cmd[8192], bin[1024];
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(teacher, sizeof teacher, "%s/teacher.h5", dir);
  make_data(data);
  make_teacher(teacher);
  const char *bd = getenv("MCM_BIN_DIR");
  snprintf(bin, sizeof bin, "%s/train", bd ? bd : ".");
  enum { S = 6 };
  const char *common = "configs/tiny.ini --quiet --set mel.n_mels=16 --set prepare.segment_frames=16 --set train.steps=6 --set checkpoint.every=6 --set train.lr=1e-5";
  snprintf(cmd, sizeof cmd,
           "%s %s --set data.train_shards='%s/shard_*.h5' --set teacher.weights=%s --set checkpoint.dir=%s/one "
           "--set run.out_dir=%s/one --set train.batch_size=4 >%s/one.out 2>&1",
           bin, common, data, teacher, dir, dir, dir);
  ASSERT(system(cmd) == 0, "one process failed: %s", cmd);
  snprintf(cmd, sizeof cmd,
           "ASAN_OPTIONS=detect_leaks=0 mpirun --allow-run-as-root --oversubscribe -np 2 %s %s "
           "--set data.train_shards='%s/shard_*.h5' --set teacher.weights=%s --set checkpoint.dir=%s/two "
           "--set run.out_dir=%s/two --set train.batch_size=2 >%s/two.out 2>&1",
           bin, common, data, teacher, dir, dir, dir);
  int rc = system(cmd);
  if (rc != 0) {
    char p[1100];
    snprintf(p, sizeof p, "cat %s/two.out", dir);
    ASSERT(system(p) >= 0 && 0, "mpirun -np 2 failed (output above)");
  }
  double l1[S], l2[S];
  char p[1100];
  snprintf(p, sizeof p, "%s/one/log.jsonl", dir);
  ASSERT(read_log(p, l1, S) == S, "one-process log incomplete");
  snprintf(p, sizeof p, "%s/two/log.jsonl", dir);
  ASSERT(read_log(p, l2, S) == S, "two-rank log incomplete");
  for (int i = 0; i < S; i++)
    EXPECT(fabs(l1[i] - l2[i]) <= 1e-5 * fabs(l1[i]), "step %d: loss %.9g with 1 process, %.9g with 2 ranks", i + 1,
           l1[i], l2[i]);
  McmErr err;
  snprintf(p, sizeof p, "%s/one/ckpt_6.h5", dir);
  TensorFile *a = tf_open(p, &err);
  ASSERT(a, "%s", err.msg);
  snprintf(p, sizeof p, "%s/two/ckpt_6.h5", dir);
  TensorFile *b = tf_open(p, &err);
  ASSERT(b, "%s", err.msg);
  char **names;
  int n;
  ASSERT(tf_names(a, &names, &n, &err) == 0, "%s", err.msg);
  int compared = 0;
  double worst = 0, d2 = 0, r2 = 0, max_abs = 0;
  for (int i = 0; i < n; i++) {
    if (strncmp(names[i], "student/", 8)) continue;
    int nd;
    int64_t shape[MCM_MAX_DIMS];
    DType dt;
    ASSERT(tf_info(a, names[i], &nd, shape, &dt, &err) == 0, "%s", err.msg);
    int64_t numel = 1;
    for (int d = 0; d < nd; d++) numel *= shape[d];
    float *x = malloc((size_t)numel * sizeof *x + 4), *y = malloc((size_t)numel * sizeof *y + 4);
    ASSERT(tf_read(a, names[i], nd, shape, x, &err) == 0 && tf_read(b, names[i], nd, shape, y, &err) == 0, "%s", err.msg);
    worst = fmax(worst, rel_l2(y, x, numel));
    for (int64_t j = 0; j < numel; j++) {
      double d = (double)y[j] - x[j];
      d2 += d * d, r2 += (double)x[j] * x[j], max_abs = fmax(max_abs, fabs(d));
    }
    free(x), free(y);
    compared++;
  }
  double rel = sqrt(d2 / r2);
  printf("  %d student tensors: relative L2 %.3g overall, worst tensor %.3g, max |diff| %.3g lr\n", compared, rel,
         worst, max_abs / 1e-5);
  EXPECT(rel <= 1e-6, "student parameters: relative L2 %.3g between 2 ranks and 1 process", rel);
  EXPECT(max_abs <= 0.5 * S * 1e-5, "an element differs by %.3g = %.3g lr", max_abs, max_abs / 1e-5);
  EXPECT(compared > 10, "only %d student tensors in the checkpoint", compared);
  tf_free_names(names, n);
  tf_close(a), tf_close(b);
}
