/* comm_check: exercises kernels/comm on the CPU, for tests/test_comm.c.
 *
 *   mpirun -np 2 comm_check collectives   all-reduce (sizes across bucket edges, NULL entries),
 *                                         broadcast (fp32 and bf16), scalar sums, barrier
 *   comm_check collectives cuda           the same on every visible GPU (NCCL), launched the way
 *                                         ./train is: one process per GPU (or under mpirun/srun)
 *   comm_check nccl1                      comm.cu's functions on a one-rank communicator (1 GPU)
 *   mpirun -np 2 comm_check mismatch      ranks pass different lists: must fail, naming both
 *   mpirun -np 2 comm_check gradsync      kernels/grad_sync: buckets started during backward give
 *                                         the mean gradient (bit-exact for 1-2 ranks), an unused
 *                                         parameter's zeros included, on two steps
 *   comm_check gradsync cuda              the same on every visible GPU (NCCL, its own stream)
 *   mpirun -np 2 comm_check gradsync-mismatch   the ranks record different tapes: must fail
 *   comm_check launch N [FAIL_RANK CODE]  comm_launch_local with N "GPUs": each child prints its
 *                                         rank; FAIL_RANK exits with CODE and the others wait to
 *                                         be stopped (CODE > 128: it dies by signal CODE − 128);
 *                                         the launcher exits with the status it got
 * Prints "comm_check: ok" per rank on success; exit 1 with a line naming the first mismatch. */
#include <float.h>
#include <math.h>
#include <signal.h>
#include <unistd.h>

#include "kernels/comm.h"
#include "kernels/grad_sync.h"
#include "kernels/ops.h"

extern char **environ;

/* Rank r's input for tensor i, element j: exponents spread over 2^-8..2^8 so the mean rounds. */
static float input_value(int r, int i, int64_t j) {
  return sinf(0.37f * (float)(j % 9973) + 1.3f * (float)i + 2.1f * (float)r + 0.1f) * ldexpf(1.0f, (int)(j % 17) - 8);
}

static int fail_count;
#define CHECK_OK(cond, ...)                                     \
  do {                                                          \
    if (!(cond)) {                                              \
      fprintf(stderr, "comm_check: rank %d: ", rank);           \
      fprintf(stderr, __VA_ARGS__);                             \
      fputc('\n', stderr);                                      \
      fail_count++;                                             \
    }                                                           \
  } while (0)

/* All-reduce sizes: below, at and across the bucket edge; a NULL (0) in the middle. */
static const int64_t kSizes[] = {1, 7, 1000, COMM_BUCKET_ELEMS - 3, 5, 0, COMM_BUCKET_ELEMS + 11, 64};
enum { N = sizeof kSizes / sizeof kSizes[0] };

/* The collectives on ctx through comm c (or, with c NULL, straight through comm.cu's NCCL
 * functions on the one-rank communicator nc: the CUDA code path without a second GPU). */
static void check_collectives(Ctx *ctx, Comm *c, void *nc, int rank, int world) {
#if MCM_CUDA
#define ALLREDUCE(t, n) (c ? comm_allreduce_mean(ctx, c, t, n) : comm_nccl_allreduce_mean(ctx, nc, t, n))
#define BROADCAST(t, n, root) (c ? comm_broadcast(ctx, c, t, n, root) : comm_nccl_broadcast(ctx, nc, t, n, root))
#define SUM_F64(v, n) (c ? comm_allreduce_sum_f64(c, v, n) : comm_nccl_allreduce_sum_f64(nc, v, n))
#define BARRIER() (c ? comm_barrier(c) : comm_nccl_barrier(nc))
#else
  (void)nc;
#define ALLREDUCE(t, n) comm_allreduce_mean(ctx, c, t, n)
#define BROADCAST(t, n, root) comm_broadcast(ctx, c, t, n, root)
#define SUM_F64(v, n) comm_allreduce_sum_f64(c, v, n)
#define BARRIER() comm_barrier(c)
#endif
  Tensor *t[N];
  float *want[N], *tol[N], *got[N]; /* (size) each: the mean in rank order, its tolerance, the result */
  for (int i = 0; i < N; i++) {
    t[i] = NULL, want[i] = tol[i] = got[i] = NULL;
    if (kSizes[i] == 0) continue;
    int64_t n = kSizes[i];
    t[i] = tensor_new(ctx, DT_F32, SHAPE(n));
    want[i] = MALLOC_CHECK((size_t)n * sizeof(float));
    tol[i] = MALLOC_CHECK((size_t)n * sizeof(float));
    got[i] = MALLOC_CHECK((size_t)n * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
      float s = 0, mag = 0;
      for (int r = 0; r < world; r++) {
        float x = input_value(r, i, j);
        if (r == rank) got[i][j] = x;
        s += x, mag += fabsf(x);
      }
      want[i][j] = s / (float)world;
      /* Bit-exact for 1 or 2 ranks; beyond, the library's order: a few ulps of sum |v| / W. */
      tol[i][j] = world <= 2 ? 0.0f : 4 * FLT_EPSILON * mag / (float)world;
    }
    tensor_from_host_f32(ctx, t[i], got[i]);
  }
  for (int round = 0; round < 2; round++) {  /* twice: the bucket is reused; the mean of equal values is itself */
    ALLREDUCE(t, N);
    for (int i = 0; i < N; i++) {
      if (!t[i]) continue;
      tensor_to_host_f32(ctx, t[i], got[i]);
      int64_t bad = -1;
      for (int64_t j = 0; j < kSizes[i] && bad < 0; j++) {
        bool ok = tol[i][j] == 0 ? memcmp(&got[i][j], &want[i][j], sizeof(float)) == 0
                                 : fabsf(got[i][j] - want[i][j]) <= tol[i][j];
        if (!ok) bad = j;
      }
      CHECK_OK(bad < 0, "round %d, tensor %d (%lld elements): element %lld is %.9g, want the mean %.9g", round, i,
               (long long)kSizes[i], (long long)bad, bad < 0 ? 0.0 : got[i][bad], bad < 0 ? 0.0 : want[i][bad]);
    }
  }
  /* Every rank holds the same bits: compare with rank 0's copy. */
  for (int i = 0; i < N; i++) {
    if (!t[i]) continue;
    Tensor *copy = tensor_new(ctx, DT_F32, SHAPE(kSizes[i]));
    tensor_copy(ctx, copy, t[i]);
    BROADCAST(&copy, 1, 0);
    tensor_to_host_f32(ctx, copy, want[i]);
    CHECK_OK(!memcmp(want[i], got[i], (size_t)kSizes[i] * sizeof(float)), "tensor %d differs from rank 0's", i);
  }
  for (int i = 0; i < N; i++) free(want[i]), free(tol[i]), free(got[i]);
  ALLREDUCE(t, 0);  /* an empty list is fine */

  /* Broadcast from the last rank: fp32 and bf16 (bytes), with a NULL entry. */
  int root = world - 1;
  Tensor *b[3] = {tensor_zeros(ctx, DT_F32, SHAPE(3, 5)), NULL, tensor_zeros(ctx, DT_BF16, SHAPE(1001))};
  float hb0[15], hb2[1001];
  for (int j = 0; j < 15; j++) hb0[j] = input_value(9, 0, j);
  for (int j = 0; j < 1001; j++) hb2[j] = input_value(9, 2, j);
  if (rank == root) tensor_from_host_f32(ctx, b[0], hb0), tensor_from_host_f32(ctx, b[2], hb2);
  BROADCAST(b, 3, root);
  float g0[15], g2[1001];
  tensor_to_host_f32(ctx, b[0], g0);
  tensor_to_host_f32(ctx, b[2], g2);
  for (int j = 0; j < 15; j++) CHECK_OK(g0[j] == hb0[j], "broadcast fp32 [%d]", j);
  for (int j = 0; j < 1001; j++) CHECK_OK(g2[j] == bf16_to_f32(f32_to_bf16(hb2[j])), "broadcast bf16 [%d]", j);

  /* Host scalars: exact integer sums, and a sum in double. */
  double v[3] = {rank + 1.0, 0.5 * rank, 0.1};
  SUM_F64(v, 3);
  CHECK_OK(v[0] == world * (world + 1) / 2.0, "sum of rank+1: %g", v[0]);
  CHECK_OK(v[1] == 0.25 * world * (world - 1), "sum of rank/2: %g", v[1]);
  CHECK_OK(fabs(v[2] - 0.1 * world) < 1e-15, "sum of 0.1: %.17g", v[2]);
  BARRIER();
  ctx_sync(ctx);
#undef ALLREDUCE
#undef BROADCAST
#undef SUM_F64
#undef BARRIER
}

/* The trainer's start: (on GPUs) the one-node launcher, the context on cuda:LOCAL_RANK,
 * comm_init. 0 with *ctx and *c to go on; otherwise *exit_code is what the caller returns (the
 * launcher's children's status, or 1 after one line on stderr). */
static int start_rank(int argc, char **argv, bool cuda, CommLayout *l, Ctx **ctx, Comm **c, int *exit_code) {
  McmErr err;
  *exit_code = 1;
  if (cuda) {
    int status = 0, r = comm_launch_local(argc, argv, cuda_device_count(), &status, &err);
    if (r < 0) return fprintf(stderr, "comm_check: %s\n", err.msg), -1;
    if (r == 1) return *exit_code = status, -1;
  }
  if (comm_layout_parse(environ, l, &err)) return fprintf(stderr, "comm_check: %s\n", err.msg), -1;
  DeviceSpec spec = {cuda ? DEV_CUDA : DEV_CPU, cuda ? l->local_rank : -1, false};
  *ctx = ctx_create(&spec, 1, &err);
  if (!*ctx) return fprintf(stderr, "comm_check: %s\n", err.msg), -1;
  *c = comm_init(*ctx, &err);
  if (!*c) return fprintf(stderr, "comm_check: comm_init: %s\n", err.msg), -1;
  return 0;
}

/* The trainer's path through every collective. */
static int collectives(int argc, char **argv, bool cuda) {
  CommLayout l;
  Ctx *ctx;
  Comm *c;
  int code;
  if (start_rank(argc, argv, cuda, &l, &ctx, &c, &code)) return code;
  int rank = comm_rank(c), world = comm_world(c);
  CHECK_OK(rank == l.rank && world == l.world, "comm_rank %d of %d, the environment says %d of %d", rank, world,
           l.rank, l.world);
  CommBackend want = world == 1 ? COMM_BACKEND_NONE : ctx->dev == DEV_CPU ? COMM_BACKEND_MPI : COMM_BACKEND_NCCL;
  CHECK_OK(comm_backend(c) == want, "backend %d, want %d", comm_backend(c), want);
  check_collectives(ctx, c, NULL, rank, world);
  comm_finalize(c);
  ctx_destroy(ctx);
  if (fail_count) return 1;
  printf("comm_check: rank %d of %d ok (%s)\n", rank, world, cuda ? "cuda" : "cpu");
  return 0;
}

/* comm.cu on one GPU: a one-rank NCCL communicator runs every code path of the GPU side
 * (bucket packing, in-place large tensors, broadcast, scalars, barrier, signature check). */
static int nccl_one_rank(void) {
#if MCM_CUDA
  McmErr err;
  DeviceSpec spec = {DEV_CUDA, 0, false};
  Ctx *ctx = ctx_create(&spec, 1, &err);
  if (!ctx || ctx->dev != DEV_CUDA) return fprintf(stderr, "comm_check: no GPU\n"), 1;
  unsigned char id[128];
  if (comm_nccl_get_id(id, sizeof id, &err)) return fprintf(stderr, "comm_check: %s\n", err.msg), 1;
  void *nc = comm_nccl_create(ctx, id, 1, 0, &err);
  if (!nc) return fprintf(stderr, "comm_check: %s\n", err.msg), 1;
  check_collectives(ctx, NULL, nc, 0, 1);
  /* comm_async's GPU side: two windows on its own stream; the mean of one rank is the input */
  int rank = 0;
  void *na = comm_nccl_async_create(ctx, nc, 3000);
  Tensor *t[3] = {tensor_new(ctx, DT_F32, SHAPE(1000)), tensor_new(ctx, DT_F32, SHAPE(3, 7)), tensor_new(ctx, DT_F32, SHAPE(999))};
  float *h = MALLOC_CHECK(1000 * sizeof *h), *g = MALLOC_CHECK(1000 * sizeof *g);
  for (int i = 0; i < 3; i++) {
    for (int64_t j = 0; j < t[i]->numel; j++) h[j] = input_value(0, i, j);
    tensor_from_host_f32(ctx, t[i], h);
  }
  comm_nccl_async_start(na, ctx, t, 2, 0);
  comm_nccl_async_start(na, ctx, t + 2, 1, 1088);
  comm_nccl_async_finish(na, ctx);
  for (int i = 0; i < 3; i++) {
    tensor_to_host_f32(ctx, t[i], g);
    for (int64_t j = 0; j < t[i]->numel; j++) h[j] = input_value(0, i, j);
    CHECK_OK(!memcmp(g, h, (size_t)t[i]->numel * sizeof *g), "async window: tensor %d changed", i);
  }
  free(h), free(g);
  comm_nccl_async_destroy(na);
  comm_nccl_destroy(nc);
  ctx_destroy(ctx);
  if (fail_count) return 1;
  printf("comm_check: nccl one rank ok\n");
  return 0;
#else
  fprintf(stderr, "comm_check: this build has no CUDA\n");
  return 2;
#endif
}

static int mismatch(void) {
  Ctx *ctx = ctx_create_cpu(1);
  McmErr err;
  Comm *c = comm_init(ctx, &err);
  if (!c) {
    fprintf(stderr, "comm_check: comm_init: %s\n", err.msg);
    return 1;
  }
  Tensor *t = tensor_zeros(ctx, DT_F32, SHAPE(7 + comm_rank(c)));
  comm_allreduce_mean(ctx, c, &t, 1);  /* fatal on every rank */
  comm_finalize(c);
  ctx_destroy(ctx);
  return 0;
}

/* ------------------------------------------------------------------ grad_sync */

/* Parameter sizes; the one of size 3 is never used (its gradient stays zero). */
static const int64_t kParams[] = {5, 300, 7, 1000, 3, 64, 301};
enum { NP = sizeof kParams / sizeof kParams[0], UNUSED = 4 };

/* loss = Σ_i sum(p_i · x_i) with x_i rank r's input: ∂loss/∂p_i = x_i, so the averaged
 * gradient is the mean of the inputs. Parameters are used in list order, or (swap) the
 * first two the other way round, which changes the readiness order and so the plan. */
static Tensor *gs_loss(Ctx *ctx, Tensor **p, int rank, bool swap) {
  Tensor *loss = NULL;
  for (int k = 0; k < NP; k++) {
    int i = swap && k < 2 ? 1 - k : k;
    if (i == UNUSED) continue;
    Tensor *x = tensor_new(ctx, DT_F32, SHAPE(kParams[i]));
    float *h = MALLOC_CHECK((size_t)kParams[i] * sizeof *h);
    for (int64_t j = 0; j < kParams[i]; j++) h[j] = input_value(rank, i, j);
    tensor_from_host_f32(ctx, x, h);
    free(h);
    Tensor *s = op_sum(ctx, op_mul(ctx, p[i], x));
    loss = loss ? op_add(ctx, loss, s) : s;
  }
  return loss;
}

static int gradsync(int argc, char **argv, bool cuda, bool mismatched) {
  CommLayout l;
  Ctx *ctx;
  Comm *c;
  int code;
  if (start_rank(argc, argv, cuda, &l, &ctx, &c, &code)) return code;
  int rank = comm_rank(c), world = comm_world(c);
  Tensor *p[NP];
  for (int i = 0; i < NP; i++) {
    p[i] = param_new(ctx, "p", DT_F32, SHAPE(kParams[i]), true);
    tensor_fill(ctx, p[i], 0.5f);
  }
  GradSync *gs = grad_sync_create(ctx, c, p, NP, 1200); /* 300 floats: several buckets */
  float *got = MALLOC_CHECK(1000 * sizeof *got), *want = MALLOC_CHECK(1000 * sizeof *want);
  int overlapped = 0, buckets = 0;
  for (int step = 0; step < 2; step++) {
    params_zero_grad(ctx, p, NP);
    Tensor *loss = gs_loss(ctx, p, rank, mismatched && rank == 1);
    grad_sync_begin(gs, ctx); /* mismatched: fatal here, on every rank */
    backward(ctx, loss);
    grad_sync_finish(gs, ctx);
    grad_sync_buckets(gs, &buckets);
    overlapped = grad_sync_overlapped(gs);
    for (int i = 0; i < NP; i++) {
      tensor_to_host_f32(ctx, p[i]->grad, got);
      int64_t bad = -1;
      for (int64_t j = 0; j < kParams[i] && bad < 0; j++) {
        float s = 0, mag = 0;
        for (int r = 0; r < world; r++) {
          float x = i == UNUSED ? 0.0f : input_value(r, i, j);
          s += x, mag += fabsf(x);
        }
        want[j] = s / (float)world;
        bool ok = world <= 2 ? !memcmp(&got[j], &want[j], sizeof *got)
                             : fabsf(got[j] - want[j]) <= 4 * FLT_EPSILON * mag / (float)world;
        if (!ok) bad = j;
      }
      CHECK_OK(bad < 0, "step %d, parameter %d (%lld elements): element %lld is %.9g, want the mean %.9g", step, i,
               (long long)kParams[i], (long long)bad, bad < 0 ? 0.0 : got[bad], bad < 0 ? 0.0 : want[bad]);
    }
    ctx_step_reset(ctx);
  }
  CHECK_OK(buckets >= 4 && overlapped >= 2, "%d buckets, %d started while backward ran", buckets, overlapped);
  free(got), free(want);
  grad_sync_destroy(gs);
  comm_finalize(c);
  ctx_destroy(ctx);
  if (fail_count) return 1;
  printf("comm_check: rank %d of %d gradsync ok (%s, %d buckets, %d overlapped)\n", rank, world,
         cuda ? "cuda" : "cpu", buckets, overlapped);
  return 0;
}

static int launch(int argc, char **argv) {
  int n = atoi(argv[2]);
  int fail_rank = argc > 4 ? atoi(argv[3]) : -1, code = argc > 4 ? atoi(argv[4]) : 0;
  int status = 0;
  McmErr err;
  int r = comm_launch_local(argc, argv, n, &status, &err);
  if (r < 0) {
    fprintf(stderr, "comm_check: comm_launch_local: %s\n", err.msg);
    return 2;
  }
  if (r == 1) {
    printf("launcher: children done, exit status %d\n", status);
    return status;
  }
  CommLayout l;
  if (comm_layout_parse(environ, &l, &err)) {
    fprintf(stderr, "comm_check: %s\n", err.msg);
    return 2;
  }
  printf("child: rank %d of %d, local rank %d, run id %s\n", l.rank, l.world, l.local_rank,
         getenv("MCM_RUN_ID") ? getenv("MCM_RUN_ID") : "(none)");
  fflush(stdout);
  if (l.rank == fail_rank) {
    usleep(200 * 1000);
    if (code > 128) raise(code - 128);  /* die by that signal */
    return code;
  }
  if (fail_rank >= 0) sleep(60);  /* the launcher must stop us long before this */
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "collectives"))
    return collectives(argc, argv, argc >= 3 && !strcmp(argv[2], "cuda"));
  if (argc >= 2 && !strcmp(argv[1], "nccl1")) return nccl_one_rank();
  if (argc >= 2 && !strcmp(argv[1], "mismatch")) return mismatch();
  if (argc >= 2 && !strcmp(argv[1], "gradsync"))
    return gradsync(argc, argv, argc >= 3 && !strcmp(argv[2], "cuda"), false);
  if (argc >= 2 && !strcmp(argv[1], "gradsync-mismatch")) return gradsync(argc, argv, false, true);
  if (argc >= 3 && !strcmp(argv[1], "launch")) return launch(argc, argv);
  fprintf(stderr,
          "usage: comm_check collectives [cpu|cuda] | nccl1 | mismatch | gradsync [cpu|cuda] | gradsync-mismatch | "
          "launch N [FAIL_RANK CODE]\n");
  return 2;
}
