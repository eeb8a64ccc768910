/* kernels/comm: rank layout from each launcher's variables, the backend plan and its error
 * paths, the NCCL id file, the single-process Comm, and — through tools/comm_check under
 * mpirun — the MPI collectives, kernels/grad_sync's buckets over MPI and the one-node
 * launcher's process handling.
 * The NCCL path (comm.cu) needs GPUs and is not run here. */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kernels/comm.h"
#include "test.h"

extern char **environ;

/* ------------------------------------------------------------------ layout */

static CommLayout parse_ok(char **envp) {
  CommLayout l;
  McmErr err = {{0}};
  int rc = comm_layout_parse(envp, &l, &err);
  EXPECT(rc == 0, "comm_layout_parse failed: %s", err.msg);
  return l;
}

static void expect_layout(CommLayout l, CommSource src, int rank, int world, int local, int local_world) {
  EXPECT(l.source == src && l.rank == rank && l.world == world && l.local_rank == local &&
             l.local_world == local_world,
         "got %s rank %d/%d local %d/%d, want %s rank %d/%d local %d/%d", comm_source_name(l.source), l.rank,
         l.world, l.local_rank, l.local_world, comm_source_name(src), rank, world, local, local_world);
}

TEST(comm_layout_from_each_launcher) {
  char *none[] = {"HOME=/root", "RANKING=3", NULL};
  expect_layout(parse_ok(none), COMM_SRC_SINGLE, 0, 1, 0, 1);
  char *ompi[] = {"OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_LOCAL_RANK=1",
                  "OMPI_COMM_WORLD_LOCAL_SIZE=4", NULL};
  expect_layout(parse_ok(ompi), COMM_SRC_OPENMPI, 5, 8, 1, 4);
  char *torch[] = {"RANK=3", "WORLD_SIZE=4", "LOCAL_RANK=3", "LOCAL_WORLD_SIZE=4", "MASTER_ADDR=n1", NULL};
  expect_layout(parse_ok(torch), COMM_SRC_TORCHRUN, 3, 4, 3, 4);
  char *slurm[] = {"SLURM_PROCID=6", "SLURM_NTASKS=16", "SLURM_STEP_NUM_TASKS=8", "SLURM_LOCALID=2",
                   "SLURM_NTASKS_PER_NODE=4", NULL};
  expect_layout(parse_ok(slurm), COMM_SRC_SLURM, 6, 8, 2, 4);  /* the step's count, not the job's */
  char *slurm_old[] = {"SLURM_PROCID=1", "SLURM_NPROCS=2", "SLURM_LOCALID=1", "SLURM_NTASKS_PER_NODE=1(x2)", NULL};
  expect_layout(parse_ok(slurm_old), COMM_SRC_SLURM, 1, 2, 1, 0);  /* "1(x2)": local size unknown */
}

TEST(comm_layout_launcher_beats_inherited_slurm) {
  /* mpirun or torchrun inside an sbatch script: SLURM_PROCID=0 leaks into every process. */
  char *mpi_in_slurm[] = {"SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_LOCALID=0", "OMPI_COMM_WORLD_RANK=1",
                          "OMPI_COMM_WORLD_SIZE=2", "OMPI_COMM_WORLD_LOCAL_RANK=1", NULL};
  expect_layout(parse_ok(mpi_in_slurm), COMM_SRC_OPENMPI, 1, 2, 1, 0);
  char *torch_in_slurm[] = {"SLURM_PROCID=0", "SLURM_NTASKS=1", "SLURM_LOCALID=0", "RANK=2",
                            "WORLD_SIZE=3", "LOCAL_RANK=2", NULL};
  expect_layout(parse_ok(torch_in_slurm), COMM_SRC_TORCHRUN, 2, 3, 2, 0);
}

TEST(comm_layout_bad_values_name_the_variable) {
  struct {
    char *env[5];
    const char *msg;
  } cases[] = {
      {{"RANK=2", "WORLD_SIZE=2", "LOCAL_RANK=0", NULL}, "RANK=2 is not below WORLD_SIZE=2"},
      {{"RANK=x", "WORLD_SIZE=2", "LOCAL_RANK=0", NULL}, "RANK=\"x\" is not an integer"},
      {{"RANK=0", "WORLD_SIZE=0", "LOCAL_RANK=0", NULL}, "WORLD_SIZE=\"0\" is not an integer >= 1"},
      {{"RANK=1", "WORLD_SIZE=2", NULL}, "LOCAL_RANK is not set"},
      {{"OMPI_COMM_WORLD_RANK=0", NULL}, "OMPI_COMM_WORLD_SIZE is not set"},
      {{"SLURM_PROCID=1", "SLURM_NTASKS=2", "SLURM_LOCALID=-1", NULL}, "SLURM_LOCALID=\"-1\""},
      {{"RANK=1", "WORLD_SIZE=4", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2", NULL}, "do not fit together"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    CommLayout l;
    McmErr err = {{0}};
    EXPECT(comm_layout_parse(cases[i].env, &l, &err) == -1, "case %zu accepted", i);
    EXPECT_STR_CONTAINS(err.msg, cases[i].msg);
  }
}

/* ------------------------------------------------------------------ plan */

TEST(comm_plan_backends) {
  CommLayout one = {0, 1, 0, 1, COMM_SRC_SINGLE}, mpi1 = {0, 1, 0, 1, COMM_SRC_OPENMPI};
  CommLayout mpi2 = {1, 2, 1, 2, COMM_SRC_OPENMPI}, tr2 = {1, 2, 1, 2, COMM_SRC_TORCHRUN};
  CommLayout sl2 = {1, 2, 0, 1, COMM_SRC_SLURM};
  CommPlan p;
  McmErr err;
  ASSERT(!comm_plan(&one, DEV_CPU, true, false, &p, &err), "%s", err.msg);
  EXPECT(p.backend == COMM_BACKEND_NONE && !p.init_mpi, "single: no backend, no MPI");
  ASSERT(!comm_plan(&mpi1, DEV_CPU, true, false, &p, &err), "%s", err.msg);
  EXPECT(p.backend == COMM_BACKEND_NONE && p.init_mpi, "mpirun -np 1: MPI initialised, nothing to reduce");
  ASSERT(!comm_plan(&mpi2, DEV_CPU, true, false, &p, &err), "%s", err.msg);
  EXPECT(p.backend == COMM_BACKEND_MPI && p.init_mpi, "CPU under mpirun: MPI");
  ASSERT(!comm_plan(&sl2, DEV_CPU, true, false, &p, &err), "%s", err.msg);
  EXPECT(p.backend == COMM_BACKEND_MPI && p.init_mpi, "CPU under srun: MPI (PMIx)");
  ASSERT(!comm_plan(&mpi2, DEV_CUDA, true, true, &p, &err), "%s", err.msg);
  EXPECT(p.backend == COMM_BACKEND_NCCL && p.id_exchange == COMM_ID_MPI, "GPU under mpirun: NCCL, id over MPI");
  ASSERT(!comm_plan(&tr2, DEV_CUDA, true, true, &p, &err), "%s", err.msg);
  EXPECT(p.backend == COMM_BACKEND_NCCL && p.id_exchange == COMM_ID_FILE && !p.init_mpi,
         "GPU under torchrun / the local launcher: NCCL, id through a file, no MPI");
  ASSERT(!comm_plan(&mpi2, DEV_CUDA, false, true, &p, &err), "%s", err.msg);
  EXPECT(p.id_exchange == COMM_ID_FILE, "GPU under mpirun without MPI in the build: id file");
}

TEST(comm_plan_cpu_without_mpi_is_a_clear_error) {
  CommLayout mpi2 = {0, 2, 0, 2, COMM_SRC_OPENMPI}, tr2 = {0, 2, 0, 2, COMM_SRC_TORCHRUN};
  CommPlan p;
  McmErr err = {{0}};
  EXPECT(comm_plan(&mpi2, DEV_CPU, false, false, &p, &err) == -1, "CPU, 2 ranks, no MPI accepted");
  EXPECT_STR_CONTAINS(err.msg, "2 ranks");
  EXPECT_STR_CONTAINS(err.msg, "need MPI, and this build has none");
  EXPECT(comm_plan(&tr2, DEV_CPU, true, false, &p, &err) == -1, "CPU ranks from RANK/WORLD_SIZE accepted");
  EXPECT_STR_CONTAINS(err.msg, "runs over MPI");
  EXPECT(comm_plan(&tr2, DEV_CUDA, true, false, &p, &err) == -1, "GPU without NCCL accepted");
}

/* ------------------------------------------------------------------ the NCCL id file */

TEST(comm_rendezvous_path_run_ids) {
  CommLayout node = {0, 2, 0, 2, COMM_SRC_TORCHRUN}, multi = {0, 4, 0, 2, COMM_SRC_SLURM};
  char path[512];
  McmErr err = {{0}};
  char *own[] = {"MCM_RUN_ID=exp 1/a", "SLURM_JOB_ID=9", NULL};
  ASSERT(!comm_rendezvous_path(own, "/runs/x", &node, path, sizeof path, &err), "%s", err.msg);
  EXPECT(!strcmp(path, "/runs/x/mcm-nccl-id-exp_1_a"), "MCM_RUN_ID first, sanitised: %s", path);
  char *slurm[] = {"SLURM_JOB_ID=1234", "SLURM_STEP_ID=2", "MCM_COMM_DIR=/shared", NULL};
  ASSERT(!comm_rendezvous_path(slurm, NULL, &multi, path, sizeof path, &err), "%s", err.msg);
  EXPECT(!strcmp(path, "/shared/mcm-nccl-id-slurm-1234.2"), "Slurm job.step, MCM_COMM_DIR: %s", path);
  char *torch[] = {"MASTER_ADDR=10.0.0.1", "MASTER_PORT=29500", "TORCHELASTIC_RESTART_COUNT=3", NULL};
  ASSERT(!comm_rendezvous_path(torch, NULL, &node, path, sizeof path, &err), "%s", err.msg);
  EXPECT(!strcmp(path, "/tmp/mcm-nccl-id-tr-10.0.0.1-29500-0-3"), "torchrun, one node → /tmp: %s", path);
  EXPECT(comm_rendezvous_path(torch, NULL, &multi, path, sizeof path, &err) == -1, "several nodes, no dir");
  EXPECT_STR_CONTAINS(err.msg, "MCM_COMM_DIR");
  char *nothing[] = {NULL};
  EXPECT(comm_rendezvous_path(nothing, "/x", &node, path, sizeof path, &err) == -1, "no run id accepted");
  EXPECT_STR_CONTAINS(err.msg, "MCM_RUN_ID");
}

TEST(comm_id_file_publish_and_wait) {
  char path[512];
  mcm_snprintf(path, sizeof path, "%s", TEST_PATH("mcm-nccl-id-test"));
  unsigned char id[128], got[128];
  for (int i = 0; i < 128; i++) id[i] = (unsigned char)(i * 7 + 3);
  pid_t child = fork();
  ASSERT(child >= 0, "fork");
  if (child == 0) {  /* a rank that starts first and waits */
    McmErr err;
    int rc = comm_file_wait(path, got, sizeof got, 3, 10.0, &err);
    _exit(rc == 0 && !memcmp(got, id, sizeof id) ? 0 : 1);
  }
  usleep(150 * 1000);
  McmErr err = {{0}};
  ASSERT(!comm_file_publish(path, id, sizeof id, 3, &err), "%s", err.msg);
  int st;
  waitpid(child, &st, 0);
  EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the waiting rank did not read the id");
  /* A file from a run with another world size is refused, not used. */
  EXPECT(comm_file_wait(path, got, sizeof got, 2, 1.0, &err) == -1, "world mismatch accepted");
  EXPECT_STR_CONTAINS(err.msg, "written for 3 ranks, this run has 2");
  /* Nobody publishes: a timeout that says what to check. */
  EXPECT(comm_file_wait(TEST_PATH("never"), got, sizeof got, 2, 0.2, &err) == -1, "no timeout");
  EXPECT_STR_CONTAINS(err.msg, "did not publish the NCCL id");
}

/* ------------------------------------------------------------------ single process */

static void clear_launcher_env(void) {
  const char *vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "RANK", "WORLD_SIZE", "SLURM_PROCID"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
}

TEST(comm_single_process_collectives_are_identity) {
  clear_launcher_env();
  Ctx *ctx = ctx_create_cpu(1);
  McmErr err;
  Comm *c = comm_init(ctx, &err);
  ASSERT(c, "comm_init: %s", err.msg);
  EXPECT(comm_rank(c) == 0 && comm_world(c) == 1 && comm_local_rank(c) == 0, "layout");
  EXPECT(comm_backend(c) == COMM_BACKEND_NONE, "no backend");
  Tensor *t[2] = {tensor_new(ctx, DT_F32, SHAPE(3)), NULL};
  float v[3] = {1.5f, -2.0f, 1e-30f}, out[3];
  tensor_from_host_f32(ctx, t[0], v);
  comm_allreduce_mean(ctx, c, t, 2);
  comm_broadcast(ctx, c, t, 2, 0);
  tensor_to_host_f32(ctx, t[0], out);
  EXPECT(!memcmp(v, out, sizeof v), "values changed");
  double s[2] = {3.25, -1};
  comm_allreduce_sum_f64(c, s, 2);
  EXPECT(s[0] == 3.25 && s[1] == -1, "scalars changed");
  comm_barrier(c);
  comm_finalize(c);
  ctx_destroy(ctx);
}

TEST(comm_init_cpu_ranks_without_mpi_launcher_fail_clearly) {
  clear_launcher_env();
  setenv("RANK", "0", 1), setenv("WORLD_SIZE", "2", 1), setenv("LOCAL_RANK", "0", 1);
  Ctx *ctx = ctx_create_cpu(1);
  McmErr err = {{0}};
  EXPECT(comm_init(ctx, &err) == NULL, "accepted");
  EXPECT_STR_CONTAINS(err.msg, "mpirun -np 2");
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ mpirun and the launcher */

/* tools/comm_check from this test binary's build (build/<flavour>/tools). */
static const char *comm_check_bin(char *buf, size_t size) {
  char self[1024];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ASSERT(n > 0, "readlink /proc/self/exe");
  self[n] = 0;
  *strrchr(self, '/') = 0;
  mcm_snprintf(buf, size, "%s/tools/comm_check", self);
  ASSERT(access(buf, X_OK) == 0, "%s is missing (hint: make %s; `make test` should depend on the tools)", buf,
         buf);
  return buf;
}

static char out[1 << 16];

/* Runs a shell command with stderr folded in; returns its exit status (-1: killed). */
static int run(const char *cmd) {
  char full[2048];
  snprintf(full, sizeof full, "%s 2>&1", cmd);
  FILE *p = popen(full, "r");
  ASSERT(p, "popen failed");
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool have_mpirun(void) {
#if MCM_MPI
  if (system("command -v mpirun >/dev/null 2>&1") == 0) return true;
#endif
  printf("  (no MPI in this build or no mpirun: the MPI part is not run)\n");
  return false;
}

/* Open MPI's plugins leak at MPI_Finalize from already unloaded modules, which no LSan
 * suppression can name: leak checking is off for the MPI children (ASan's other checks stay);
 * comm.c's own allocations are leak-checked by the single-process tests above. */
#define MPIRUN "ASAN_OPTIONS=detect_leaks=0 mpirun --allow-run-as-root --oversubscribe -np "

TEST(comm_mpi_two_ranks_collectives_bit_exact) {
  if (!have_mpirun()) return;
  clear_launcher_env();
  char bin[1200], cmd[1400];
  snprintf(cmd, sizeof cmd, MPIRUN "2 %s collectives", comm_check_bin(bin, sizeof bin));
  EXPECT(run(cmd) == 0, "mpirun -np 2 failed:\n%s", out);
  EXPECT_STR_CONTAINS(out, "comm_check: rank 0 of 2 ok");
  EXPECT_STR_CONTAINS(out, "comm_check: rank 1 of 2 ok");
}

TEST(comm_mpi_three_ranks_collectives) {
  if (!have_mpirun()) return;
  clear_launcher_env();
  char bin[1200], cmd[1400];
  snprintf(cmd, sizeof cmd, MPIRUN "3 %s collectives", comm_check_bin(bin, sizeof bin));
  EXPECT(run(cmd) == 0, "mpirun -np 3 failed:\n%s", out);
  EXPECT_STR_CONTAINS(out, "comm_check: rank 2 of 3 ok");
}

TEST(comm_mpi_mismatched_lists_fail_naming_both) {
  if (!have_mpirun()) return;
  clear_launcher_env();
  char bin[1200], cmd[1400];
  snprintf(cmd, sizeof cmd, MPIRUN "2 %s mismatch", comm_check_bin(bin, sizeof bin));
  EXPECT(run(cmd) != 0, "a mismatch passed:\n%s", out);
  EXPECT_STR_CONTAINS(out, "every rank must pass the same list");
  EXPECT_STR_CONTAINS(out, "7..8 elements");
}

TEST(comm_mpi_grad_sync_buckets_give_the_mean_gradient) {
  if (!have_mpirun()) return;
  clear_launcher_env();
  char bin[1200], cmd[1400];
  for (int np = 2; np <= 3; np++) {  /* 2: bit-exact; 3: the library's order, a few ulps */
    snprintf(cmd, sizeof cmd, MPIRUN "%d %s gradsync", np, comm_check_bin(bin, sizeof bin));
    EXPECT(run(cmd) == 0, "mpirun -np %d gradsync failed:\n%s", np, out);
    EXPECT_STR_CONTAINS(out, np == 2 ? "rank 1 of 2 gradsync ok (cpu, 6 buckets, 5 overlapped)"
                                     : "rank 2 of 3 gradsync ok (cpu, 6 buckets, 5 overlapped)");
  }
}

TEST(comm_mpi_grad_sync_different_tapes_fail_instead_of_hanging) {
  if (!have_mpirun()) return;
  clear_launcher_env();
  char bin[1200], cmd[1400];
  snprintf(cmd, sizeof cmd,
           "ASAN_OPTIONS=detect_leaks=0 timeout 60 mpirun --allow-run-as-root --oversubscribe -np 2 %s "
           "gradsync-mismatch",
           comm_check_bin(bin, sizeof bin));
  int rc = run(cmd);
  EXPECT(rc != 0 && rc != 124, "different tapes: exit status %d (124: it hung):\n%s", rc, out);
  EXPECT_STR_CONTAINS(out, "bucket plan (6 buckets from a tape of 17 nodes) differs from another rank's");
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

TEST(comm_launch_local_runs_one_child_per_gpu) {
  clear_launcher_env();
  char bin[1200], cmd[1400];
  snprintf(cmd, sizeof cmd, "%s launch 3", comm_check_bin(bin, sizeof bin));
  EXPECT(run(cmd) == 0, "launcher failed:\n%s", out);
  EXPECT_STR_CONTAINS(out, "child: rank 0 of 3, local rank 0, run id local-");
  EXPECT_STR_CONTAINS(out, "child: rank 1 of 3, local rank 1");
  EXPECT_STR_CONTAINS(out, "child: rank 2 of 3, local rank 2");
  EXPECT_STR_CONTAINS(out, "launcher: children done, exit status 0");
  /* One GPU, or a launcher already present: no re-execution. */
  snprintf(cmd, sizeof cmd, "%s launch 1", bin);
  EXPECT(run(cmd) == 0, "launch 1:\n%s", out);
  EXPECT_STR_CONTAINS(out, "child: rank 0 of 1, local rank 0, run id (none)");  /* runs in place */
  EXPECT(!strstr(out, "launcher:"), "launch 1 re-executed:\n%s", out);
  snprintf(cmd, sizeof cmd, "RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 %s launch 4", bin);
  EXPECT(run(cmd) == 0, "under a launcher:\n%s", out);
  EXPECT_STR_CONTAINS(out, "child: rank 1 of 2");
  EXPECT(!strstr(out, "launcher:"), "re-executed under a launcher:\n%s", out);
}

TEST(comm_launch_local_failing_child_stops_the_rest) {
  clear_launcher_env();
  char bin[1200], cmd[1400];
  snprintf(cmd, sizeof cmd, "%s launch 3 1 7", comm_check_bin(bin, sizeof bin));
  double t0 = now_s();
  EXPECT(run(cmd) == 7, "want the failing child's status 7:\n%s", out);
  EXPECT(now_s() - t0 < 8.0, "the others (sleeping 60 s) were not stopped: %.1f s", now_s() - t0);
  EXPECT_STR_CONTAINS(out, "rank 1 of 3 failed (exit status 7); stopping the others");
  EXPECT_STR_CONTAINS(out, "launcher: children done, exit status 7");
  /* A child killed by a signal reports 128 + the signal, like a shell. */
  snprintf(cmd, sizeof cmd, "%s launch 2 0 %d", bin, 128 + SIGKILL);
  EXPECT(run(cmd) == 128 + SIGKILL, "want %d:\n%s", 128 + SIGKILL, out);
  EXPECT_STR_CONTAINS(out, "rank 0 of 2 failed (exit status 137)");
}

TEST(comm_launch_local_forwards_sigterm) {
  clear_launcher_env();
  char bin[1200];
  comm_check_bin(bin, sizeof bin);
  pid_t pid = fork();
  ASSERT(pid >= 0, "fork");
  if (pid == 0) {
    int null = open("/dev/null", 1);
    dup2(null, 1), dup2(null, 2);
    execl(bin, bin, "launch", "2", "9", "0", (char *)NULL);  /* rank 9 does not exist: both sleep */
    _exit(127);
  }
  /* Not before the launcher's handler is in place: a loaded machine may take long to start it. */
  ASSERT(test_wait_signal_handler(pid, SIGTERM, 60.0), "the launcher never installed its SIGTERM handler");
  usleep(300 * 1000); /* and its children have started */
  double t0 = now_s();
  kill(pid, SIGTERM);
  int st;
  waitpid(pid, &st, 0);
  EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGTERM, "launcher status %d, want %d", WEXITSTATUS(st),
         128 + SIGTERM);
  EXPECT(now_s() - t0 < 5.0, "children outlived SIGTERM: %.1f s", now_s() - t0);
}
