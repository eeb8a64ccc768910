/* Data parallelism: one process per GPU (or per CPU rank), gradients averaged across ranks.
 *
 * Rank layout comes from the launcher's environment (comm_layout_parse, a pure function):
 *   Open MPI  (mpirun)   OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE
 *   torchrun / comm_launch_local   RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE
 *   Slurm     (srun)     SLURM_PROCID / SLURM_STEP_NUM_TASKS (or SLURM_NTASKS) / SLURM_LOCALID
 *   none of them         a single process.
 * The first family present wins, in that order: a launcher sets its variables per process,
 * while Slurm's leak from the batch step into anything started inside it (an mpirun or a
 * torchrun inside sbatch sees SLURM_PROCID=0 in every process).
 *
 * Backends (comm_plan, also pure, decides):
 *   world 1              no communication; every collective is a no-op.
 *   CPU context          MPI (MPI_Allreduce / MPI_Bcast on a duplicate of MPI_COMM_WORLD).
 *                        Needs an MCM_MPI build and an MPI launcher (mpirun, srun --mpi=pmix).
 *   CUDA context         NCCL, one communicator per Comm, on the context's stream. The NCCL id
 *                        travels over MPI when mpirun launched us, otherwise through a file in
 *                        a directory every rank sees (comm_init_in's dir, else $MCM_COMM_DIR,
 *                        else /tmp when every rank is on this node), named with a run id
 *                        ($MCM_RUN_ID, else Slurm job.step, else torchrun's run id, master
 *                        address, port and restart count) so a stale file is never read.
 * Picking the GPU is the caller's job: on a CUDA context the trainer creates it on
 * cuda:<comm_local_rank> (the device spec) before comm_init; comm_init only checks it.
 *
 * Collectives take the tensors in a fixed order and must be called with the same list
 * (same sizes, NULL at the same places) on every rank; a mismatch is detected and is fatal
 * with both sides' counts, never a hang or silent garbage. Small tensors are packed into a
 * flat fp32 bucket (COMM_BUCKET_ELEMS) in list order, so each bucket is one collective.
 *
 * Determinism: with 2 ranks the mean (a + b) / 2 is bit-identical on both ranks and to the
 * same sum done locally (fp32 addition is commutative). With more ranks the summation order
 * is the MPI library's (Open MPI's tuned allreduce picks an algorithm from the world size and
 * message size: fixed for a given run, so results repeat run to run, but it is not rank
 * order) or NCCL's (ring/tree: identical on all ranks, repeatable for a fixed topology).
 */
#pragma once
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Comm Comm;

typedef enum CommSource {
  COMM_SRC_SINGLE = 0,  /* no launcher variables */
  COMM_SRC_OPENMPI,
  COMM_SRC_TORCHRUN,    /* also comm_launch_local's children */
  COMM_SRC_SLURM,
} CommSource;

typedef struct CommLayout {
  int rank, world;
  int local_rank, local_world;  /* local_world 0 when the launcher does not say */
  CommSource source;
} CommLayout;

/* envp: a NULL-terminated "NAME=value" array (environ, or a test's own). Returns -1 with a
 * message naming the variables on a malformed or inconsistent layout. */
int comm_layout_parse(char *const *envp, CommLayout *out, McmErr *err);
const char *comm_source_name(CommSource s);

typedef enum CommBackend { COMM_BACKEND_NONE = 0, COMM_BACKEND_MPI, COMM_BACKEND_NCCL } CommBackend;
typedef enum CommIdExchange { COMM_ID_NONE = 0, COMM_ID_MPI, COMM_ID_FILE } CommIdExchange;
typedef struct CommPlan {
  CommBackend backend;
  CommIdExchange id_exchange;  /* NCCL only */
  bool init_mpi;               /* MPI_Init_thread is called (and MPI_Finalize at the end) */
} CommPlan;
/* Decides the backend for a layout on a device with what this build has. -1 with a clear
 * message when the layout cannot run (world > 1 on the CPU without MPI, ...). */
int comm_plan(const CommLayout *l, DevKind dev, bool have_mpi, bool have_nccl, CommPlan *out, McmErr *err);

/* Reads the layout from the environment and connects the ranks. */
Comm *comm_init(const Ctx *ctx, McmErr *err);
/* The same with the directory for the NCCL id file (the run directory, shared by all nodes);
 * NULL: $MCM_COMM_DIR, else /tmp when all ranks are on this node. */
Comm *comm_init_in(const Ctx *ctx, const char *rendezvous_dir, McmErr *err);
int comm_rank(const Comm *c);
int comm_world(const Comm *c);
int comm_local_rank(const Comm *c);
const CommLayout *comm_layout(const Comm *c);
CommBackend comm_backend(const Comm *c);

/* In place: every non-NULL t[i] (fp32, any shape) becomes the mean over ranks. */
void comm_allreduce_mean(Ctx *ctx, Comm *c, Tensor *const *t, int n);
/* Host scalars (losses, counts): v[i] becomes the sum over ranks. */
void comm_allreduce_sum_f64(Comm *c, double *v, int n);
/* In place: every non-NULL t[i] (any dtype) takes root's values. */
void comm_broadcast(Ctx *ctx, Comm *c, Tensor *const *t, int n, int root);
void comm_barrier(Comm *c);
/* Frees the communicator (and finalizes MPI if comm_init initialised it). NULL is fine. */
void comm_finalize(Comm *c);

/* True when every rank passes the same v (one small all-reduce; true at world 1). All ranks
 * must call it at the same point. */
bool comm_same_on_all(Comm *c, const int64_t v[2]);

/* Non-blocking means over ranks of flat fp32 buckets: the engine under kernels/grad_sync.h.
 * A CommAsync owns a staging buffer of `elems` fp32 on the context's device; each bucket
 * is a disjoint window [off, off + Σ numel) of it, so several can be in flight at once.
 *   comm_async_start    packs the tensors (fp32, on ctx's device) into the window, in list
 *                       order, and starts the all-reduce of the window;
 *   comm_async_poll     lets pending MPI requests progress (Open MPI moves a non-blocking
 *                       collective only inside MPI calls); a no-op on the other backends;
 *   comm_async_finish   waits for every started bucket and writes the means back into the
 *                       tensors it was given.
 * Backends, as comm_allreduce_mean's, and each element's mean by the same operation (with 2
 * ranks the same bits; with more, the library's summation order may follow the sizes):
 *   none (world 1)  packs at start and unpacks at finish: the mean of one rank is the value
 *                   the tensor had at start, so a bucket started too early shows in tests;
 *   MPI             MPI_Iallreduce(SUM) on the host window, then ÷ world at finish;
 *   NCCL            a stream of its own, made to wait (an event) for the context's stream
 *                   at each start: pack copies, ncclAllReduce(ncclAvg), unpack copies, all
 *                   on that stream; finish makes the context's stream wait for it (the host
 *                   does not block).
 * The tensors must not change between start and finish (their gradients are final) and every
 * rank must start the same windows in the same order. Finish before any other collective on
 * the same Comm: ranks match collectives by the order they are issued in, and on the GPU the
 * events keep all of the communicator's work in that one order. */
typedef struct CommAsync CommAsync;
CommAsync *comm_async_create(Ctx *ctx, Comm *c, int64_t elems);
void comm_async_start(CommAsync *a, Ctx *ctx, Tensor *const *t, int n, int64_t off);
void comm_async_poll(CommAsync *a);
void comm_async_finish(CommAsync *a, Ctx *ctx);
/* NULL is fine. Buckets still in flight are waited for (not written back). The staging
 * buffer is the context's persistent memory: it goes with the context. */
void comm_async_destroy(CommAsync *a);

/* One node, several GPUs, no launcher. When no launcher variables are set and n_gpus > 1,
 * re-executes this program (/proc/self/exe with argv) once per GPU with RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MCM_RUN_ID and MCM_COMM_DIR set, forwards
 * SIGINT/SIGTERM to them, and waits. When one child fails, the others get SIGTERM (SIGKILL
 * after COMM_LAUNCH_GRACE_S). *exit_status: 0 when all succeeded, else the first failing
 * child's exit code (128 + signal when it was killed). Returns 1 in the parent after the
 * children finish, 0 in a child or when not launching, -1 (err) when it could not start. */
int comm_launch_local(int argc, char **argv, int n_gpus, int *exit_status, McmErr *err);
#define COMM_LAUNCH_GRACE_S 10

/* The NCCL id file, exposed for tests: rank 0 publishes bytes atomically (temporary name,
 * fsync, rename), the others wait for the file (timeout_s) and check the world size in it. */
int comm_file_publish(const char *path, const void *id, size_t n, int world, McmErr *err);
int comm_file_wait(const char *path, void *id, size_t n, int world, double timeout_s, McmErr *err);
/* "<dir>/mcm-nccl-id-<run id>" with the run id from envp; -1 when none can be found. */
int comm_rendezvous_path(char *const *envp, const char *dir, const CommLayout *l, char *out, size_t size,
                         McmErr *err);

#define COMM_BUCKET_ELEMS ((int64_t)1 << 22) /* 16 MiB of fp32 per collective */

#if MCM_CUDA
/* NCCL side (comm.cu). id: 128 bytes (NCCL_UNIQUE_ID_BYTES). */
int comm_nccl_get_id(void *id, size_t n, McmErr *err);
void *comm_nccl_create(const Ctx *ctx, const void *id, int world, int rank, McmErr *err);
void comm_nccl_destroy(void *nc);
void comm_nccl_allreduce_mean(Ctx *ctx, void *nc, Tensor *const *t, int n);
void comm_nccl_allreduce_sum_f64(void *nc, double *v, int n);
void comm_nccl_broadcast(Ctx *ctx, void *nc, Tensor *const *t, int n, int root);
void comm_nccl_barrier(void *nc);
/* Element-count signature check across ranks (fatal on mismatch). */
void comm_nccl_check_signature(void *nc, const int64_t sig[2], const char *what);
/* In place: v[i] becomes the maximum over ranks (blocks the host). */
void comm_nccl_max_i64(void *nc, int64_t *v, int n);
/* comm_async's NCCL side: the staging buffer, a stream of its own and two events. */
void *comm_nccl_async_create(Ctx *ctx, void *nc, int64_t elems);
void comm_nccl_async_start(void *na, Ctx *ctx, Tensor *const *t, int n, int64_t off);
void comm_nccl_async_finish(void *na, Ctx *ctx);
void comm_nccl_async_destroy(void *na);
#endif

#ifdef __cplusplus
}
#endif
