/* Data parallelism (see comm.h): rank layout, backend choice, MPI collectives for CPU
 * contexts, the NCCL id exchange, and the one-node launcher. The NCCL calls live in comm.cu.
 *
 * Collectives take fp32 tensors in list order; t (any shape) is (numel) to them. */
#include "comm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if MCM_MPI
#include <mpi.h>
#endif

extern char **environ;

#define COMM_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES; comm.cu asserts the two agree */

struct Comm {
  CommLayout layout;
  CommPlan plan;
  bool mpi_initialised_here;
#if MCM_MPI
  MPI_Comm mpi; /* a duplicate of MPI_COMM_WORLD; MPI_COMM_NULL when unused */
#endif
  void *nccl;   /* comm.cu's communicator; NULL unless the backend is NCCL */
  float *bucket;  /* (COMM_BUCKET_ELEMS) host staging for the MPI path */
};

/* ------------------------------------------------------------------ layout */

static const char *env_get(char *const *envp, const char *name) {
  size_t n = strlen(name);
  for (char *const *e = envp; e && *e; e++)
    if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
  return NULL;
}

/* A whole decimal int in [lo, 2^31); -1 naming the variable otherwise. */
static int env_int(char *const *envp, const char *name, int lo, int *out, McmErr *err) {
  const char *v = env_get(envp, name);
  if (!v) return mcm_err(err, "%s is not set", name);
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (end == v || *end || errno || x < lo || x > 0x7fffffff)
    return mcm_err(err, "%s=\"%s\" is not an integer >= %d", name, v, lo);
  *out = (int)x;
  return 0;
}

const char *comm_source_name(CommSource s) {
  switch (s) {
    case COMM_SRC_OPENMPI: return "Open MPI (OMPI_COMM_WORLD_*)";
    case COMM_SRC_TORCHRUN: return "torchrun-style (RANK/WORLD_SIZE/LOCAL_RANK)";
    case COMM_SRC_SLURM: return "Slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID)";
    default: return "single process";
  }
}

int comm_layout_parse(char *const *envp, CommLayout *out, McmErr *err) {
  CommLayout l = {0, 1, 0, 1, COMM_SRC_SINGLE};
  const char *rank_v, *world_v, *local_v, *lworld_v;
  if (env_get(envp, "OMPI_COMM_WORLD_RANK") || env_get(envp, "OMPI_COMM_WORLD_SIZE")) {
    l.source = COMM_SRC_OPENMPI;
    rank_v = "OMPI_COMM_WORLD_RANK", world_v = "OMPI_COMM_WORLD_SIZE";
    local_v = "OMPI_COMM_WORLD_LOCAL_RANK", lworld_v = "OMPI_COMM_WORLD_LOCAL_SIZE";
  } else if (env_get(envp, "RANK") && env_get(envp, "WORLD_SIZE")) {
    l.source = COMM_SRC_TORCHRUN;
    rank_v = "RANK", world_v = "WORLD_SIZE", local_v = "LOCAL_RANK", lworld_v = "LOCAL_WORLD_SIZE";
  } else if (env_get(envp, "SLURM_PROCID") &&
             (env_get(envp, "SLURM_STEP_NUM_TASKS") || env_get(envp, "SLURM_NTASKS") ||
              env_get(envp, "SLURM_NPROCS"))) {
    /* srun's per-step count first: SLURM_NTASKS is the job's, which a step may not use. */
    l.source = COMM_SRC_SLURM;
    rank_v = "SLURM_PROCID", local_v = "SLURM_LOCALID", lworld_v = "SLURM_NTASKS_PER_NODE";
    world_v = env_get(envp, "SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS"
              : env_get(envp, "SLURM_NTASKS")       ? "SLURM_NTASKS"
                                                    : "SLURM_NPROCS";
  } else {
    *out = l;
    return 0;
  }
  McmErr e;
  if (env_int(envp, rank_v, 0, &l.rank, &e) || env_int(envp, world_v, 1, &l.world, &e) ||
      env_int(envp, local_v, 0, &l.local_rank, &e))
    return mcm_err(err, "rank layout from %s: %s", comm_source_name(l.source), e.msg);
  /* The local size is informational; Slurm writes it as "4(x2)" on uneven layouts. */
  if (env_int(envp, lworld_v, 1, &l.local_world, &e)) l.local_world = 0;
  if (l.rank >= l.world)
    return mcm_err(err, "rank layout from %s: %s=%d is not below %s=%d", comm_source_name(l.source), rank_v,
                   l.rank, world_v, l.world);
  if (l.local_world && (l.local_rank >= l.local_world || l.local_world > l.world))
    return mcm_err(err, "rank layout from %s: %s=%d, %s=%d and %s=%d do not fit together",
                   comm_source_name(l.source), local_v, l.local_rank, lworld_v, l.local_world, world_v,
                   l.world);
  *out = l;
  return 0;
}

int comm_plan(const CommLayout *l, DevKind dev, bool have_mpi, bool have_nccl, CommPlan *out, McmErr *err) {
  CommPlan p = {COMM_BACKEND_NONE, COMM_ID_NONE, false};
  /* Under mpirun MPI is initialised even for one process, so the launcher sees a clean exit. */
  p.init_mpi = have_mpi && l->source == COMM_SRC_OPENMPI;
  if (l->world > 1 && dev == DEV_CPU) {
    if (!have_mpi)
      return mcm_err(err,
                     "%d ranks (%s) on the CPU need MPI, and this build has none (hint: install "
                     "libopenmpi-dev, rebuild with make, and launch with mpirun -np %d; or run one process)",
                     l->world, comm_source_name(l->source), l->world);
    if (l->source == COMM_SRC_TORCHRUN)
      return mcm_err(err,
                     "%d ranks from RANK/WORLD_SIZE on the CPU: CPU data parallelism runs over MPI "
                     "(hint: launch with mpirun -np %d or srun --mpi=pmix; the one-node launcher is for GPUs)",
                     l->world, l->world);
    p.backend = COMM_BACKEND_MPI;
    p.init_mpi = true;
  } else if (l->world > 1) {
    if (!have_nccl) return mcm_err(err, "%d ranks on a GPU need NCCL, and this build has none", l->world);
    p.backend = COMM_BACKEND_NCCL;
    p.id_exchange = p.init_mpi ? COMM_ID_MPI : COMM_ID_FILE;
  }
  *out = p;
  return 0;
}

/* ------------------------------------------------------------------ the NCCL id file */

int comm_rendezvous_path(char *const *envp, const char *dir, const CommLayout *l, char *out, size_t size,
                         McmErr *err) {
  char id[256];
  const char *v;
  if ((v = env_get(envp, "MCM_RUN_ID")) && *v) {
    mcm_snprintf(id, sizeof id, "%s", v);
  } else if ((v = env_get(envp, "SLURM_JOB_ID"))) {
    const char *step = env_get(envp, "SLURM_STEP_ID") ? env_get(envp, "SLURM_STEP_ID") : "x";
    mcm_snprintf(id, sizeof id, "slurm-%s.%s", v, step);
  } else if (env_get(envp, "MASTER_ADDR") && env_get(envp, "MASTER_PORT")) {
    const char *run = env_get(envp, "TORCHELASTIC_RUN_ID"), *restart = env_get(envp, "TORCHELASTIC_RESTART_COUNT");
    mcm_snprintf(id, sizeof id, "tr-%s-%s-%s-%s", env_get(envp, "MASTER_ADDR"), env_get(envp, "MASTER_PORT"),
                 run ? run : "0", restart ? restart : "0");
  } else {
    return mcm_err(err,
                   "no run id for the NCCL id file (hint: set MCM_RUN_ID to one value, unique to this run, "
                   "on every rank)");
  }
  for (char *s = id; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
          *s == '-'))
      *s = '_';
  if (!dir || !*dir) dir = env_get(envp, "MCM_COMM_DIR");
  if (!dir || !*dir) {
    if (l->local_world != l->world)
      return mcm_err(err,
                     "%d ranks over several nodes exchange the NCCL id through a file (hint: set MCM_COMM_DIR "
                     "to a directory every node shares, or launch with mpirun)",
                     l->world);
    dir = "/tmp";
  }
  mcm_snprintf(out, size, "%s/mcm-nccl-id-%s", dir, id);
  return 0;
}

typedef struct IdFileHeader {
  char magic[8]; /* "MCMNCCL1" */
  int32_t world;
  uint32_t n;
} IdFileHeader;

int comm_file_publish(const char *path, const void *id, size_t n, int world, McmErr *err) {
  char tmp[1100];
  mcm_snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return mcm_err(err, "cannot create %s: %s (hint: MCM_COMM_DIR must be writable)", tmp, strerror(errno));
  IdFileHeader h = {{'M', 'C', 'M', 'N', 'C', 'C', 'L', '1'}, world, (uint32_t)n};
  bool ok = write(fd, &h, sizeof h) == (ssize_t)sizeof h && write(fd, id, n) == (ssize_t)n && fsync(fd) == 0;
  int saved = errno;
  close(fd);
  if (!ok || rename(tmp, path) != 0) {
    if (ok) saved = errno;
    unlink(tmp);
    return mcm_err(err, "cannot write %s: %s", path, strerror(saved));
  }
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

int comm_file_wait(const char *path, void *id, size_t n, int world, double timeout_s, McmErr *err) {
  double t0 = now_s();
  for (;;) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
      IdFileHeader h;
      bool ok = read(fd, &h, sizeof h) == (ssize_t)sizeof h && read(fd, id, n) == (ssize_t)n;
      close(fd);
      /* The file appears whole (rename), so a short or foreign one is not ours to wait for. */
      if (!ok || memcmp(h.magic, "MCMNCCL1", 8) || h.n != n)
        return mcm_err(err, "%s is not an mcm NCCL id file", path);
      if (h.world != world)
        return mcm_err(err,
                       "%s was written for %d ranks, this run has %d (hint: a file from another run; "
                       "set MCM_RUN_ID to a value unique to this run)",
                       path, h.world, world);
      return 0;
    }
    if (errno != ENOENT) return mcm_err(err, "cannot read %s: %s", path, strerror(errno));
    if (now_s() - t0 > timeout_s)
      return mcm_err(err,
                     "rank 0 did not publish the NCCL id in %s within %.0f s (hint: does rank 0 run, and do all "
                     "ranks see the same MCM_COMM_DIR? MCM_COMM_TIMEOUT sets the wait)",
                     path, timeout_s);
    sleep_s(0.05);
  }
}

/* ------------------------------------------------------------------ init */

#if MCM_MPI
#define MPI_CHECK(expr)                                                               \
  do {                                                                                \
    int rc_ = (expr);                                                                 \
    if (rc_ != MPI_SUCCESS) {                                                         \
      char s_[MPI_MAX_ERROR_STRING];                                                  \
      int len_ = 0;                                                                   \
      MPI_Error_string(rc_, s_, &len_);                                               \
      MCM_FATAL("%s failed: %s (hint: another rank probably failed first)", #expr, s_); \
    }                                                                                 \
  } while (0)

static int mpi_start(Comm *c, McmErr *err) {
  int inited = 0, provided = 0;
  MPI_CHECK(MPI_Initialized(&inited));
  if (!inited) {
    MPI_CHECK(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided));
    c->mpi_initialised_here = true;
    if (provided < MPI_THREAD_FUNNELED) return mcm_err(err, "MPI gives no MPI_THREAD_FUNNELED support");
  }
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  int size = 0, rank = 0;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  if (size != c->layout.world || rank != c->layout.rank)
    return mcm_err(err,
                   "%s says rank %d of %d, MPI says rank %d of %d (hint: launch CPU ranks with mpirun -np N or "
                   "srun --mpi=pmix)",
                   comm_source_name(c->layout.source), c->layout.rank, c->layout.world, rank, size);
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi));
  return 0;
}
#endif

static void comm_free(Comm *c) {
#if MCM_CUDA
  if (c->nccl) comm_nccl_destroy(c->nccl);
#endif
#if MCM_MPI
  if (c->mpi != MPI_COMM_NULL) MPI_Comm_free(&c->mpi);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (c->mpi_initialised_here && !finalized) MPI_Finalize();
#endif
  free(c->bucket);
  free(c);
}

#if MCM_CUDA
/* Rank 0 makes the NCCL id; the others get it over MPI or from the id file. */
static int nccl_start(Comm *c, const Ctx *ctx, const char *dir, McmErr *err) {
  const CommLayout *l = &c->layout;
  int visible = cuda_device_count();
  if (l->local_rank < visible && ctx->device_index != l->local_rank)
    return mcm_err(err,
                   "rank %d (local rank %d) runs on cuda:%d; each local rank needs its own GPU (hint: create "
                   "the context on cuda:%d, i.e. cuda:LOCAL_RANK)",
                   l->rank, l->local_rank, ctx->device_index, l->local_rank);
  unsigned char id[COMM_ID_BYTES] = {0};
  char path[1024] = "";
  if (l->rank == 0 && comm_nccl_get_id(id, sizeof id, err)) return -1;
  if (c->plan.id_exchange == COMM_ID_MPI) {
#if MCM_MPI
    MPI_CHECK(MPI_Bcast(id, COMM_ID_BYTES, MPI_BYTE, 0, c->mpi));
#endif
  } else {
    if (comm_rendezvous_path(environ, dir, l, path, sizeof path, err)) return -1;
    const char *tv = getenv("MCM_COMM_TIMEOUT");
    double timeout = tv && atof(tv) > 0 ? atof(tv) : 300.0;
    if (l->rank == 0 ? comm_file_publish(path, id, sizeof id, l->world, err)
                     : comm_file_wait(path, id, sizeof id, l->world, timeout, err))
      return -1;
  }
  c->nccl = comm_nccl_create(ctx, id, l->world, l->rank, err);
  if (!c->nccl) return -1;
  if (path[0]) {
    comm_nccl_barrier(c->nccl); /* every rank has read the file: it can go */
    if (l->rank == 0) unlink(path);
  }
  return 0;
}
#endif

Comm *comm_init_in(const Ctx *ctx, const char *rendezvous_dir, McmErr *err) {
  Comm *c = CALLOC_CHECK(1, sizeof *c);
#if MCM_MPI
  c->mpi = MPI_COMM_NULL;
#endif
  if (comm_layout_parse(environ, &c->layout, err) ||
      comm_plan(&c->layout, ctx->dev, MCM_MPI, MCM_CUDA, &c->plan, err))
    goto fail;
#if MCM_MPI
  if (c->plan.init_mpi && mpi_start(c, err)) goto fail;
#endif
  if (c->plan.backend == COMM_BACKEND_MPI) c->bucket = MALLOC_CHECK((size_t)COMM_BUCKET_ELEMS * sizeof(float));
#if MCM_CUDA
  if (c->plan.backend == COMM_BACKEND_NCCL && nccl_start(c, ctx, rendezvous_dir, err)) goto fail;
#else
  (void)rendezvous_dir;
#endif
  return c;
fail:
  comm_free(c);
  return NULL;
}

Comm *comm_init(const Ctx *ctx, McmErr *err) { return comm_init_in(ctx, NULL, err); }

int comm_rank(const Comm *c) { return c->layout.rank; }
int comm_world(const Comm *c) { return c->layout.world; }
int comm_local_rank(const Comm *c) { return c->layout.local_rank; }
const CommLayout *comm_layout(const Comm *c) { return &c->layout; }
CommBackend comm_backend(const Comm *c) { return c->plan.backend; }

void comm_finalize(Comm *c) {
  if (c) comm_free(c);
}

/* ------------------------------------------------------------------ MPI collectives */

#if MCM_MPI
/* All ranks must pass lists of the same shape: compare (non-NULL count, total size). */
static void mpi_check_signature(Comm *c, const int64_t sig[2], const char *what) {
  int64_t v[4] = {sig[0], sig[1], -sig[0], -sig[1]};
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT64_T, MPI_MAX, c->mpi));
  MCM_CHECK(v[0] == sig[0] && v[1] == sig[1] && -v[2] == sig[0] && -v[3] == sig[1],
            "%s: rank %d passes %lld tensors of %lld elements in all, all ranks pass %lld..%lld tensors "
            "and %lld..%lld elements (every rank must pass the same list, NULL at the same places)",
            what, c->layout.rank, (long long)sig[0], (long long)sig[1], (long long)-v[2], (long long)v[0],
            (long long)-v[3], (long long)v[1]);
}

/* Moves up to cap elements between the non-NULL tensors (from *ti, *off on) and buf. */
static int64_t stream_copy(Tensor *const *t, int n, int *ti, int64_t *off, float *buf, int64_t cap, bool pack) {
  int64_t done = 0;
  while (done < cap && *ti < n) {
    if (!t[*ti] || *off == t[*ti]->numel) {
      (*ti)++, *off = 0;
      continue;
    }
    int64_t k = t[*ti]->numel - *off < cap - done ? t[*ti]->numel - *off : cap - done;
    float *d = (float *)t[*ti]->data + *off;
    if (pack)
      memcpy(buf + done, d, (size_t)k * sizeof(float));
    else
      memcpy(d, buf + done, (size_t)k * sizeof(float));
    done += k, *off += k;
  }
  return done;
}

static void mpi_allreduce_mean(Comm *c, Tensor *const *t, int n) {
  int64_t sig[2] = {0, 0};
  for (int i = 0; i < n; i++)
    if (t[i]) {
      CHECK_DTYPE("comm_allreduce_mean", t[i], DT_F32);
      MCM_CHECK(t[i]->dev == DEV_CPU, "comm_allreduce_mean: tensor %d is not on the CPU", i);
      sig[0]++, sig[1] += t[i]->numel;
    }
  mpi_check_signature(c, sig, "comm_allreduce_mean");
  int pi = 0, ui = 0;
  int64_t po = 0, uo = 0;
  const float w = (float)c->layout.world;
  for (;;) {
    int64_t k = stream_copy(t, n, &pi, &po, c->bucket, COMM_BUCKET_ELEMS, true);
    if (k == 0) break;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, c->bucket, (int)k, MPI_FLOAT, MPI_SUM, c->mpi));
    for (int64_t i = 0; i < k; i++) c->bucket[i] /= w;
    stream_copy(t, n, &ui, &uo, c->bucket, k, false);
  }
}

static void mpi_broadcast(Comm *c, Tensor *const *t, int n, int root) {
  int64_t sig[2] = {0, 0};
  for (int i = 0; i < n; i++)
    if (t[i]) {
      MCM_CHECK(t[i]->dev == DEV_CPU, "comm_broadcast: tensor %d is not on the CPU", i);
      sig[0]++, sig[1] += (int64_t)tensor_bytes(t[i]);
    }
  mpi_check_signature(c, sig, "comm_broadcast");
  for (int i = 0; i < n; i++) {
    if (!t[i]) continue;
    char *p = t[i]->data;
    for (size_t left = tensor_bytes(t[i]); left > 0;) {
      int k = left > (1u << 30) ? (1 << 30) : (int)left;
      MPI_CHECK(MPI_Bcast(p, k, MPI_BYTE, root, c->mpi));
      p += k, left -= (size_t)k;
    }
  }
}
#endif

void comm_allreduce_mean(Ctx *ctx, Comm *c, Tensor *const *t, int n) {
  switch (c->plan.backend) {
    case COMM_BACKEND_NONE: return;
#if MCM_MPI
    case COMM_BACKEND_MPI: mpi_allreduce_mean(c, t, n); return;
#endif
#if MCM_CUDA
    case COMM_BACKEND_NCCL: comm_nccl_allreduce_mean(ctx, c->nccl, t, n); return;
#endif
    default: MCM_FATAL("comm_allreduce_mean: backend %d is not in this build", (int)c->plan.backend);
  }
}

void comm_allreduce_sum_f64(Comm *c, double *v, int n) {
  switch (c->plan.backend) {
    case COMM_BACKEND_NONE: return;
#if MCM_MPI
    case COMM_BACKEND_MPI: MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, c->mpi)); return;
#endif
#if MCM_CUDA
    case COMM_BACKEND_NCCL: comm_nccl_allreduce_sum_f64(c->nccl, v, n); return;
#endif
    default: MCM_FATAL("comm_allreduce_sum_f64: backend %d is not in this build", (int)c->plan.backend);
  }
}

void comm_broadcast(Ctx *ctx, Comm *c, Tensor *const *t, int n, int root) {
  MCM_CHECK(root >= 0 && root < c->layout.world, "comm_broadcast: root %d is not a rank of %d", root,
            c->layout.world);
  switch (c->plan.backend) {
    case COMM_BACKEND_NONE: return;
#if MCM_MPI
    case COMM_BACKEND_MPI: mpi_broadcast(c, t, n, root); return;
#endif
#if MCM_CUDA
    case COMM_BACKEND_NCCL: comm_nccl_broadcast(ctx, c->nccl, t, n, root); return;
#endif
    default: MCM_FATAL("comm_broadcast: backend %d is not in this build", (int)c->plan.backend);
  }
}

void comm_barrier(Comm *c) {
  switch (c->plan.backend) {
    case COMM_BACKEND_NONE: return;
#if MCM_MPI
    case COMM_BACKEND_MPI: MPI_CHECK(MPI_Barrier(c->mpi)); return;
#endif
#if MCM_CUDA
    case COMM_BACKEND_NCCL: comm_nccl_barrier(c->nccl); return;
#endif
    default: MCM_FATAL("comm_barrier: backend %d is not in this build", (int)c->plan.backend);
  }
}

bool comm_same_on_all(Comm *c, const int64_t v[2]) {
  int64_t m[4] = {v[0], v[1], -v[0], -v[1]};
  switch (c->plan.backend) {
    case COMM_BACKEND_NONE: return true;
#if MCM_MPI
    case COMM_BACKEND_MPI: MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, m, 4, MPI_INT64_T, MPI_MAX, c->mpi)); break;
#endif
#if MCM_CUDA
    case COMM_BACKEND_NCCL: comm_nccl_max_i64(c->nccl, m, 4); break;
#endif
    default: MCM_FATAL("comm_same_on_all: backend %d is not in this build", (int)c->plan.backend);
  }
  return m[0] == v[0] && m[1] == v[1] && -m[2] == v[0] && -m[3] == v[1];
}

/* ------------------------------------------------------------------ non-blocking buckets */

typedef struct AsyncMember {
  Tensor *t;
  int64_t off; /* in the staging buffer */
} AsyncMember;

struct CommAsync {
  Comm *comm;
  int64_t elems;
  float *staging; /* (elems) on the context's device; none and MPI backends */
  AsyncMember *members; /* started and not yet written back */
  int n_members, cap_members;
#if MCM_MPI
  MPI_Request *req;
  int n_req, cap_req;
#endif
  void *nccl; /* comm.cu's state on the NCCL backend */
};

CommAsync *comm_async_create(Ctx *ctx, Comm *c, int64_t elems) {
  MCM_CHECK(elems >= 0, "comm_async_create: %lld elements", (long long)elems);
  CommAsync *a = CALLOC_CHECK(1, sizeof *a);
  a->comm = c, a->elems = elems;
  switch (c->plan.backend) {
    case COMM_BACKEND_NONE:
    case COMM_BACKEND_MPI:
      MCM_CHECK(c->plan.backend == COMM_BACKEND_NONE || ctx->dev == DEV_CPU,
                "comm_async_create: MPI reduces host memory, the context is on %s", ctx->device_name);
      a->staging = ctx_alloc_persistent(ctx, (size_t)(elems > 0 ? elems : 1) * sizeof(float));
      break;
#if MCM_CUDA
    case COMM_BACKEND_NCCL: a->nccl = comm_nccl_async_create(ctx, c->nccl, elems); break;
#endif
    default: MCM_FATAL("comm_async_create: backend %d is not in this build", (int)c->plan.backend);
  }
  return a;
}

/* t's window of the staging buffer as a tensor of t's shape. */
static Tensor staging_view(const CommAsync *a, const Ctx *ctx, const Tensor *t, int64_t off) {
  Tensor v = {0};
  tensor_init_header(&v, DT_F32, ctx->dev, t->ndim, t->shape);
  v.data = a->staging + off;
  return v;
}

void comm_async_start(CommAsync *a, Ctx *ctx, Tensor *const *t, int n, int64_t off) {
  int64_t k = 0;
  for (int i = 0; i < n; i++) {
    CHECK_DTYPE("comm_async_start", t[i], DT_F32);
    MCM_CHECK(t[i]->dev == ctx->dev, "comm_async_start: tensor %d is not on the context's device", i);
    k += t[i]->numel;
  }
  MCM_CHECK(off >= 0 && off + k <= a->elems, "comm_async_start: window [%lld, %lld) outside the %lld-element staging",
            (long long)off, (long long)(off + k), (long long)a->elems);
#if MCM_CUDA
  if (a->nccl) {
    comm_nccl_async_start(a->nccl, ctx, t, n, off);
    return;
  }
#endif
  int64_t o = off;
  for (int i = 0; i < n; i++) {
    Tensor v = staging_view(a, ctx, t[i], o);
    tensor_copy(ctx, &v, t[i]);
    if (a->n_members == a->cap_members) {
      a->cap_members = a->cap_members ? 2 * a->cap_members : 64;
      a->members = REALLOC_CHECK(a->members, (size_t)a->cap_members * sizeof *a->members);
    }
    a->members[a->n_members++] = (AsyncMember){t[i], o};
    o += t[i]->numel;
  }
#if MCM_MPI
  if (a->comm->plan.backend == COMM_BACKEND_MPI) {
    for (int64_t done = 0; done < k;) { /* MPI counts are int */
      int part = k - done > (1 << 30) ? (1 << 30) : (int)(k - done);
      if (a->n_req == a->cap_req) {
        a->cap_req = a->cap_req ? 2 * a->cap_req : 16;
        a->req = REALLOC_CHECK(a->req, (size_t)a->cap_req * sizeof *a->req);
      }
      MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, a->staging + off + done, part, MPI_FLOAT, MPI_SUM, a->comm->mpi,
                               &a->req[a->n_req++]));
      done += part;
    }
  }
#endif
}

void comm_async_poll(CommAsync *a) {
#if MCM_MPI
  if (a->n_req > 0) {
    int flag = 0;
    MPI_CHECK(MPI_Testall(a->n_req, a->req, &flag, MPI_STATUSES_IGNORE));
  }
#else
  (void)a;
#endif
}

void comm_async_finish(CommAsync *a, Ctx *ctx) {
#if MCM_CUDA
  if (a->nccl) {
    comm_nccl_async_finish(a->nccl, ctx);
    return;
  }
#endif
  const bool mpi = a->comm->plan.backend == COMM_BACKEND_MPI;
#if MCM_MPI
  if (a->n_req > 0) MPI_CHECK(MPI_Waitall(a->n_req, a->req, MPI_STATUSES_IGNORE));
  a->n_req = 0;
#endif
  const float w = (float)a->comm->layout.world;
  for (int m = 0; m < a->n_members; m++) {
    Tensor *t = a->members[m].t;
    if (mpi) { /* the host: comm_allreduce_mean's division, element by element */
      const float *src = a->staging + a->members[m].off;
      float *d = t->data;
      for (int64_t i = 0; i < t->numel; i++) d[i] = src[i] / w;
    } else { /* one rank: the value packed at start */
      Tensor v = staging_view(a, ctx, t, a->members[m].off);
      tensor_copy(ctx, t, &v);
    }
  }
  a->n_members = 0;
}

void comm_async_destroy(CommAsync *a) {
  if (!a) return;
#if MCM_CUDA
  if (a->nccl) comm_nccl_async_destroy(a->nccl);
#endif
#if MCM_MPI
  if (a->n_req > 0) MPI_Waitall(a->n_req, a->req, MPI_STATUSES_IGNORE);
  free(a->req);
#endif
  free(a->members);
  free(a);
}

/* ------------------------------------------------------------------ one-node launcher */

/* The one piece of process-wide state: a signal handler can only leave a note. */
static volatile sig_atomic_t launch_signal;
static void launch_on_signal(int sig) { launch_signal = sig; }

static int status_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1; }

static void child_exec(char **argv, int rank, int world, const char *run_id, const char *dir, pid_t parent) {
  char v[32];
  snprintf(v, sizeof v, "%d", rank);
  setenv("RANK", v, 1);
  setenv("LOCAL_RANK", v, 1);
  snprintf(v, sizeof v, "%d", world);
  setenv("WORLD_SIZE", v, 1);
  setenv("LOCAL_WORLD_SIZE", v, 1);
  setenv("MASTER_ADDR", "127.0.0.1", 0);
  setenv("MCM_RUN_ID", run_id, 1);
  setenv("MCM_COMM_DIR", dir, 0);
  /* Die with the launcher, even when it is SIGKILLed. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);
  execv("/proc/self/exe", argv);
  fprintf(stderr, "mcm: error: rank %d: cannot re-execute %s: %s\n", rank, argv[0], strerror(errno));
  _exit(127);
}

int comm_launch_local(int argc, char **argv, int n_gpus, int *exit_status, McmErr *err) {
  *exit_status = 0;
  CommLayout l;
  if (comm_layout_parse(environ, &l, err)) return -1;
  if (l.source != COMM_SRC_SINGLE || n_gpus <= 1) return 0;
  MCM_CHECK(argc >= 1 && argv[argc] == NULL, "comm_launch_local: argv must be main's (NULL-terminated)");

  char run_id[64];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(run_id, sizeof run_id, "local-%d-%lld%09ld", (int)getpid(), (long long)ts.tv_sec, ts.tv_nsec);
  const char *dir = getenv("MCM_COMM_DIR") && *getenv("MCM_COMM_DIR") ? getenv("MCM_COMM_DIR") : "/tmp";

  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = launch_on_signal;
  sigemptyset(&sa.sa_mask);
  launch_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  fflush(stdout), fflush(stderr);

  pid_t *pid = CALLOC_CHECK((size_t)n_gpus, sizeof *pid);
  pid_t self = getpid();
  int started = 0, rc = 1;
  for (; started < n_gpus; started++) {
    pid[started] = fork();
    if (pid[started] == 0) child_exec(argv, started, n_gpus, run_id, dir, self);
    if (pid[started] < 0) {
      mcm_err(err, "cannot start rank %d of %d: fork: %s", started, n_gpus, strerror(errno));
      rc = -1;
      break;
    }
  }

  /* Poll: a child's failure, a forwarded signal and the kill deadline all need the loop awake. */
  int alive = started, first_fail = 0;
  double kill_at = rc < 0 ? now_s() + COMM_LAUNCH_GRACE_S : 0;
  if (rc < 0)
    for (int i = 0; i < started; i++) kill(pid[i], SIGTERM);
  while (alive > 0) {
    if (launch_signal) {
      int sig = launch_signal;
      launch_signal = 0;
      for (int i = 0; i < started; i++)
        if (pid[i] > 0) kill(pid[i], sig);
      if (!kill_at) kill_at = now_s() + COMM_LAUNCH_GRACE_S;
    }
    for (int i = 0; i < started; i++) {
      int st;
      if (pid[i] <= 0 || waitpid(pid[i], &st, WNOHANG) != pid[i]) continue;
      pid[i] = 0, alive--;
      int code = status_code(st);
      if (code != 0 && !first_fail) {
        first_fail = code;
        fprintf(stderr, "mcm: rank %d of %d failed (exit status %d); stopping the others\n", i, n_gpus, code);
        for (int j = 0; j < started; j++)
          if (pid[j] > 0) kill(pid[j], SIGTERM);
        if (!kill_at) kill_at = now_s() + COMM_LAUNCH_GRACE_S;
      }
    }
    if (kill_at && now_s() > kill_at) {
      for (int i = 0; i < started; i++)
        if (pid[i] > 0) kill(pid[i], SIGKILL);
      kill_at = now_s() + 3600; /* SIGKILL once */
    }
    if (alive > 0) sleep_s(0.02);
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  free(pid);
  *exit_status = rc < 0 ? 1 : first_fail;
  return rc;
}
