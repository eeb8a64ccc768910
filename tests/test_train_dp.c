/* Data parallelism on the CPU: `mpirun -np 2 ./train` with batch 2 per rank against one
 * process with batch 4 (the same global batch). The trainer draws its noise for the global
 * batch and each rank keeps its rows, so the two runs see the same numbers and differ only
 * in the order of the gradient sum: losses and parameters agree within fp32 rounding.
 * Tolerances, at the recipe's lr 1e-5: relative 1e-5 for the per-step losses; over all
 * student parameters after 6 AdamW steps a relative L2 of 1e-6, and per element at most
 * lr·steps / 2. The fp32 rounding of a 4-row mean vs two 2-row means is ~1e-7 of a
 * gradient, but Adam divides by √v: where a gradient element is itself at rounding level
 * (a zero-initialised norm bias, say), its update is ±lr either way and its sign is noise,
 * so per-tensor relative errors of such tensors are not a meaningful bound.
 * The gradient averaging (kernels/grad_sync.h) runs in small buckets started during backward
 * and, for comparison, as one all-reduce after backward: with 2 ranks both compute (a + b) / 2
 * per element, so those runs must agree bit for bit. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "tests/test.h"
#include "tests/train_util.h"

/* The tiny dataset of configs/tiny.ini (one shard of 12 rows) and a random teacher. */
#include "data/shard.h"
#include "diffusion/bridge.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/unet.h"


static double rel_l2(const float *a, const float *b, int64_t n) {
  double d = 0, r = 0;
  for (int64_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
  return sqrt(d) / fmax(sqrt(r), 1e-30);
}

static bool have_mpirun(void) {
#if !MCM_MPI
  printf("  (no MPI in this build: not run)\n");
  return false;
#endif
  if (system("command -v mpirun >/dev/null 2>&1") != 0) {
    printf("  (no mpirun: not run)\n");
    return false;
  }
  const char *vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "RANK",
                        "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
  return true;
}

/* ./train with `np` ranks (0: no mpirun) into dir/run; `args` are --set options. */
static void run_train(const char *dir, const char *run, int np, const char *args) {
  const char *bd = getenv("MCM_BIN_DIR");
  char cmd[8192], launcher[128] = "";
  if (np > 0)
    snprintf(launcher, sizeof launcher, "ASAN_OPTIONS=detect_leaks=0 mpirun --allow-run-as-root --oversubscribe -np %d ",
             np);
  snprintf(cmd, sizeof cmd, "%s%s/train %s --set checkpoint.dir=%s/%s --set run.out_dir=%s/%s >%s/%s.out 2>&1",
           launcher, bd ? bd : ".", args, dir, run, dir, run, dir, run);
  if (system(cmd) != 0) {
    char p[1100];
    snprintf(p, sizeof p, "cat %s/%s.out", dir, run);
    ASSERT(system(p) >= 0 && 0, "%s failed (output above): %s", run, cmd);
  }
}

/* Over the tensors whose names start with one of the prefixes: how many, how many elements
 * differ in their bits, the relative L2 of b - a overall, the worst tensor's and max |b - a|. */
typedef struct CkptDiff {
  int tensors;
  int64_t elems, bits_differ;
  double rel, worst, max_abs;
} CkptDiff;

static CkptDiff ckpt_diff(const char *pa, const char *pb, const char *const *prefixes, int n_prefixes) {
  McmErr err;
  TensorFile *a = tf_open(pa, &err);
  ASSERT(a, "%s", err.msg);
  TensorFile *b = tf_open(pb, &err);
  ASSERT(b, "%s", err.msg);
  char **names;
  int n;
  ASSERT(tf_names(a, &names, &n, &err) == 0, "%s", err.msg);
  CkptDiff d = {0};
  double d2 = 0, r2 = 0;
  for (int i = 0; i < n; i++) {
    bool wanted = false;
    for (int k = 0; k < n_prefixes; k++) wanted |= !strncmp(names[i], prefixes[k], strlen(prefixes[k]));
    int nd;
    int64_t shape[MCM_MAX_DIMS];
    DType dt;
    ASSERT(tf_info(a, names[i], &nd, shape, &dt, &err) == 0, "%s", err.msg);
    if (!wanted || dt != DT_F32) continue;
    int64_t numel = 1;
    for (int k = 0; k < nd; k++) numel *= shape[k];
    float *x = malloc((size_t)numel * sizeof *x + 4), *y = malloc((size_t)numel * sizeof *y + 4);
    ASSERT(tf_read(a, names[i], nd, shape, x, &err) == 0, "%s", err.msg);
    ASSERT(tf_read(b, names[i], nd, shape, y, &err) == 0, "%s: %s", pb, err.msg);
    d.worst = fmax(d.worst, rel_l2(y, x, numel));
    for (int64_t j = 0; j < numel; j++) {
      double e = (double)y[j] - x[j];
      d2 += e * e, r2 += (double)x[j] * x[j], d.max_abs = fmax(d.max_abs, fabs(e));
      d.bits_differ += memcmp(&x[j], &y[j], sizeof *x) != 0;
    }
    d.elems += numel;
    free(x), free(y);
    d.tensors++;
  }
  d.rel = sqrt(d2 / fmax(r2, 1e-300));
  tf_free_names(names, n);
  tf_close(a), tf_close(b);
  return d;
}

/* The last log line's "key": value (-1 when absent). */
static double log_last(const char *path, const char *key) {
  FILE *f = fopen(path, "r");
  ASSERT(f, "cannot open %s", path);
  char line[2048], pat[128];
  double v = -1;
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  while (fgets(line, sizeof line, f)) {
    char *p = strstr(line, pat);
    v = p ? atof(p + strlen(pat)) : -1;
  }
  fclose(f);
  return v;
}

/* One process with batch 4 against 2 ranks of batch 2, the ranks averaging their gradients
 * in buckets of 4 KiB started during backward (dozens per step at this size) and, again,
 * in one all-reduce after backward (train.allreduce_bucket_mb = 0, the way before buckets).
 * With 2 ranks each element's mean is (a + b) / 2 either way, so the two 2-rank runs must
 * agree bit for bit; each agrees with the one process within fp32 rounding (header). */
TEST(train_mpi_two_ranks_match_one_process) {
  if (!have_mpirun()) return;
  const char *dir = test_tmpdir();
  char data[1024], teacher[1024], args[4096];
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(teacher, sizeof teacher, "%s/teacher.h5", dir);
  test_make_train_data(data, test_tiny_data_spec());
  test_make_teacher(teacher, 16, 3);
  enum { S = 6 };
  const char *common = "configs/tiny.ini --quiet --set mel.n_mels=16 --set prepare.segment_frames=16 --set train.steps=6 --set checkpoint.every=6 --set train.lr=1e-5";
  snprintf(args, sizeof args, "%s --set data.train_shards='%s/shard_*.h5' --set teacher.weights=%s --set train.batch_size=4",
           common, data, teacher);
  run_train(dir, "one", 0, args);
  snprintf(args, sizeof args,
           "%s --set data.train_shards='%s/shard_*.h5' --set teacher.weights=%s --set train.batch_size=2 "
           "--set train.allreduce_bucket_mb=0.00390625",
           common, data, teacher);
  run_train(dir, "two", 2, args);
  snprintf(args, sizeof args,
           "%s --set data.train_shards='%s/shard_*.h5' --set teacher.weights=%s --set train.batch_size=2 "
           "--set train.allreduce_bucket_mb=0",
           common, data, teacher);
  run_train(dir, "two_after", 2, args);

  double l1[S], l2[S], l0[S];
  char p[1100], q[1100];
  snprintf(p, sizeof p, "%s/one/log.jsonl", dir);
  ASSERT(test_read_log_losses(p, l1, S) == S, "one-process log incomplete");
  snprintf(p, sizeof p, "%s/two/log.jsonl", dir);
  ASSERT(test_read_log_losses(p, l2, S) == S, "two-rank log incomplete");
  double buckets = log_last(p, "allreduce_buckets"), overlapped = log_last(p, "allreduce_overlapped");
  snprintf(p, sizeof p, "%s/two_after/log.jsonl", dir);
  ASSERT(test_read_log_losses(p, l0, S) == S, "two-rank (buckets off) log incomplete");
  for (int i = 0; i < S; i++) {
    EXPECT(fabs(l1[i] - l2[i]) <= 1e-5 * fabs(l1[i]), "step %d: loss %.9g with 1 process, %.9g with 2 ranks", i + 1,
           l1[i], l2[i]);
    EXPECT(l0[i] == l2[i], "step %d: loss %.9g with buckets, %.9g with one all-reduce after backward", i + 1, l2[i],
           l0[i]);
  }
  printf("  2 ranks: %.0f buckets per step, %.0f of them started while backward ran\n", buckets, overlapped);
  EXPECT(buckets >= 20 && overlapped >= buckets / 2, "%.0f buckets, %.0f overlapped (4 KiB of a 1 MB UNet)",
         buckets, overlapped);

  const char *student[] = {"student/"}, *everything[] = {"student/", "ema/", "opt_student/"};
  snprintf(p, sizeof p, "%s/one/ckpt_6.h5", dir);
  snprintf(q, sizeof q, "%s/two/ckpt_6.h5", dir);
  CkptDiff d = ckpt_diff(p, q, student, 1);
  printf("  %d student tensors: relative L2 %.3g overall, worst tensor %.3g, max |diff| %.3g lr\n", d.tensors, d.rel,
         d.worst, d.max_abs / 1e-5);
  EXPECT(d.rel <= 1e-6, "student parameters: relative L2 %.3g between 2 ranks and 1 process", d.rel);
  EXPECT(d.max_abs <= 0.5 * S * 1e-5, "an element differs by %.3g = %.3g lr", d.max_abs, d.max_abs / 1e-5);
  EXPECT(d.tensors > 10, "only %d student tensors in the checkpoint", d.tensors);

  snprintf(p, sizeof p, "%s/two_after/ckpt_6.h5", dir);
  d = ckpt_diff(p, q, everything, 3);
  printf("  buckets during backward vs one all-reduce after: %lld of %lld elements (student, EMA, AdamW) differ\n",
         (long long)d.bits_differ, (long long)d.elems);
  EXPECT(d.tensors > 30 && d.bits_differ == 0, "%lld of %lld elements in %d tensors differ", (long long)d.bits_differ,
         (long long)d.elems, d.tensors);
}

/* The whole MusicCM step on 2 ranks (student through the VAE decoder and AudioMAE, the heads'
 * hinge + lazy R1 step): the student's buckets overlap its backward, the heads' are cut
 * after their last backward; both must equal one all-reduce after backward, bit for bit.
 * (Against one process the heads' local batch norm sees other rows, so only 2 vs 2 holds.) */
TEST(train_mpi_two_ranks_adversarial_buckets_match_one_allreduce) {
  if (!have_mpirun()) return;
  const char *dir = test_tmpdir();
  char data[1024], teacher[1024], bridge[1024], args[4096];
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(teacher, sizeof teacher, "%s/teacher.h5", dir);
  snprintf(bridge, sizeof bridge, "%s/bridge.h5", dir);
  test_make_train_data(data, test_tiny_data_spec());
  test_make_teacher(teacher, 16, 3);
  test_write_random_bridge(bridge);
  const char *common = "configs/tiny.ini --quiet --set mel.n_mels=16 --set prepare.segment_frames=16 --set train.steps=4 "
                       "--set checkpoint.every=4 --set train.batch_size=2 --set train.adversarial=true "
                       "--set adversarial.r1_interval=2 --set adversarial.lr=1e-2";
  const char *sizes[2] = {"0.001", "0"}, *runs[2] = {"buckets", "after"};
  for (int r = 0; r < 2; r++) {
    snprintf(args, sizeof args,
             "%s --set data.train_shards='%s/shard_*.h5' --set teacher.weights=%s --set adversarial.bridge=%s "
             "--set train.allreduce_bucket_mb=%s",
             common, data, teacher, bridge, sizes[r]);
    run_train(dir, runs[r], 2, args);
  }
  char p[1100], q[1100];
  snprintf(p, sizeof p, "%s/buckets/log.jsonl", dir);
  EXPECT(log_last(p, "allreduce_overlapped") >= 10, "%.0f of %.0f buckets overlapped", log_last(p, "allreduce_overlapped"),
         log_last(p, "allreduce_buckets"));
  const char *all[] = {"student/", "ema/", "opt_student/", "adv/"};
  snprintf(p, sizeof p, "%s/after/ckpt_4.h5", dir);
  snprintf(q, sizeof q, "%s/buckets/ckpt_4.h5", dir);
  CkptDiff d = ckpt_diff(p, q, all, 4);
  const char *heads[] = {"adv/"};
  CkptDiff h = ckpt_diff(p, q, heads, 1);
  printf("  %d tensors (%d of the heads and their AdamW), %lld elements: %lld differ in their bits\n", d.tensors,
         h.tensors, (long long)d.elems, (long long)d.bits_differ);
  EXPECT(h.tensors > 10 && d.tensors > h.tensors + 30, "%d tensors, %d of the heads", d.tensors, h.tensors);
  EXPECT(d.bits_differ == 0, "%lld of %lld elements differ (relative L2 %.3g)", (long long)d.bits_differ,
         (long long)d.elems, d.rel);
}
