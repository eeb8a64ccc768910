/* The context: everything an op needs, passed explicitly. No global mutable state, so
 * several contexts (say a CPU one and a GPU one in a test) can live in one process.
 *
 * Memory:
 *  - arena: per-step activations on the context's device, plus host-side headers, tape
 *    nodes and saved state. ctx_step_reset() frees it all at once. It grows by chaining
 *    blocks and, at reset, folds into one block of the high-water size, so a steady-state
 *    step does no allocation at all.
 *  - persistent: parameters, their gradients and optimizer state; freed by ctx_destroy.
 *  - scopes: a no-grad forward (inference) would otherwise keep every intermediate until the
 *    step ends (the vocoder alone: 4.7 GB per 10 s of audio). ctx_mark() notes the top of
 *    both arenas; ctx_release() pops back to it, and ctx_release_keep() pops back while
 *    keeping one result, moved down to the mark, so a block of a model costs only its output.
 *    Why mark/release and not a second arena: the arena stays one stack, so a released
 *    region is reused by the very next allocation (no free lists, no fragmentation), and
 *    the high-water folding at reset sizes the one block for the scoped peak.
 */
#pragma once
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
  DevKind dev;
  ArenaBlock *blocks;  /* newest first */
  size_t used;         /* bytes handed out since the last reset, all blocks */
  size_t high_water;   /* largest `used` ever seen */
  size_t min_block;
  uint64_t resets;     /* ctx_step_reset count: a mark from before a reset is stale */
} Arena;

/* A position in an arena: the newest block then, its fill, and the arena's `used`. */
typedef struct ArenaPos {
  ArenaBlock *block;
  size_t offset, used;
} ArenaPos;

/* Both arenas' tops and the tape's length at ctx_mark(). */
typedef struct ArenaMark {
  ArenaPos act, host;
  int tape_n;
  uint64_t resets;
  bool skip; /* from ctx_scope_begin with ctx->scopes_off: the scope does nothing */
} ArenaMark;

typedef struct TapeNode TapeNode;
typedef struct Tape {
  TapeNode **nodes;   /* in execution order; nodes themselves live in the host arena */
  int n, cap;
} Tape;

typedef struct Ctx {
  DevKind dev;
  int device_index;        /* CUDA device ordinal; -1 on the CPU */
  char device_name[128];   /* "cpu" or the GPU's name */

  /* CUDA handles (opaque here so C files need no CUDA headers); NULL on the CPU. */
  void *stream;            /* cudaStream_t */
  void *cublas;            /* cublasHandle_t */
  void *cublaslt;          /* cublasLtHandle_t */
  void *cudnn;             /* cudnnHandle_t */
  void *workspace;         /* device scratch for cuBLASLt / cuDNN */
  size_t workspace_bytes;

  Arena act;               /* per-step device memory (host memory on the CPU) */
  Arena host;              /* per-step host memory: tensor headers, tape nodes, saved args */

  void **persistent;       /* persistent device allocations, freed at destroy */
  size_t *persistent_size; /* their sizes */
  int n_persistent, cap_persistent;
  size_t persistent_bytes; /* their sum: parameters, gradients, optimizer state, workspaces */
  void **persistent_host;  /* persistent host allocations (parameter headers, names) */
  int n_persistent_host, cap_persistent_host;

  bool grad_enabled;       /* ops record themselves on the tape when true */
  bool scopes_off;         /* ctx_scope_begin/_end do nothing (to compare memory and outputs) */
  Tape tape;
  /* Called by backward after each tape node (tape.h's tape_set_hook); NULL: nothing. */
  void (*tape_hook)(struct Ctx *ctx, int node, void *user);
  void *tape_hook_user;

  uint64_t seed;           /* counter-based RNG: key */
  uint64_t rng_offset;     /* next unused Philox counter; advanced by every draw */

  /* Model FLOPs of the matrix-product ops run so far (linear, matmul, convolutions, attention;
   * forward and each gradient computed in backward; 2 per multiply-add, recomputation not
   * counted), the numerator of throughput and MFU. Elementwise ops and norms are not counted:
   * they are bandwidth work. Callers read and reset it. */
  double flops;
  double flops_bf16;       /* the part of flops whose operands were bf16 (tensor-core peak) */
} Ctx;

/* Adds model FLOPs of a product over operands of dtype dt (the ops call it). */
static inline void ctx_count_flops(Ctx *ctx, DType dt, double flops) {
  ctx->flops += flops;
  if (dt == DT_BF16) ctx->flops_bf16 += flops;
}

/* Device spec parsing: "cpu", "cuda", "cuda:N", "auto". */
typedef struct DeviceSpec {
  DevKind kind;
  int index;      /* -1: first usable */
  bool is_auto;
} DeviceSpec;
int device_spec_parse(const char *s, DeviceSpec *out, McmErr *err);

/* Creates a context for the spec. If CUDA was asked for (or auto) and no usable GPU exists
 * (CPU-only build, no device, driver problem), prints one line saying so and falls back
 * to the CPU. Asking for cuda:N with N >= the number of GPUs is an error (returns NULL). */
Ctx *ctx_create(const DeviceSpec *spec, uint64_t seed, McmErr *err);
Ctx *ctx_create_cpu(uint64_t seed);

/* Dense peak TFLOP/s of a GPU from its device_name (reference/conventions.md §2a): bf16 tensor
 * cores, or fp32 without tensor cores (mcm's fp32 math: no TF32). 0 for the CPU and for a GPU
 * the table does not know (the log then says MFU is unknown rather than a wrong number). */
double device_peak_tflops(const char *device_name, bool bf16);
void ctx_destroy(Ctx *ctx);

/* Number of usable CUDA devices (0 in a CPU-only build or without a driver). */
int cuda_device_count(void);
bool mcm_built_with_cuda(void);

/* Per-step memory. */
void *ctx_alloc_act(Ctx *ctx, size_t bytes);   /* on the device, 256-byte aligned */
void *ctx_alloc_host(Ctx *ctx, size_t bytes);  /* host, zeroed, 16-byte aligned */
void ctx_step_reset(Ctx *ctx);                 /* frees the arena and clears the tape */

/* Scoped release inside a step (see the header comment).
 *
 *   ArenaMark m = ctx_mark(ctx);
 *   ...ops...
 *   y = ctx_release_keep(ctx, m, y);   // every activation and header since m is gone but y
 *
 * Valid only when nothing allocated after the mark is referenced afterwards (except `keep`,
 * through the header returned: the old one is freed). Fatal, naming the caller's mistake,
 * when the tape recorded (or backward consumed) nodes since the mark, since backward needs
 * those activations; when the arena was reset since the mark; or when an outer mark was
 * released first. keep may be NULL (same as ctx_release) and may live before the mark (then
 * only its header is copied). Its data moves to the mark (memmove on the CPU; on the GPU a
 * stream-ordered copy, staged through the free arena space above keep when the two regions
 * overlap), or, when the mark's block has no room for it, to the start of its own block. */
ArenaMark ctx_mark(Ctx *ctx);
void ctx_release(Ctx *ctx, ArenaMark m);
Tensor *ctx_release_keep(Ctx *ctx, ArenaMark m, Tensor *keep);

/* The forgiving pair for model code, safe in any mode: ctx_scope_end releases like
 * ctx_release_keep when the tape recorded nothing since ctx_scope_begin, and otherwise (grad
 * mode with a trainable input: the activations are needed for backward) or when the step
 * was reset in between (a sampler in state mode: nothing is left to free) does nothing and
 * returns keep. ctx->scopes_off turns both into no-ops. */
ArenaMark ctx_scope_begin(Ctx *ctx);
Tensor *ctx_scope_end(Ctx *ctx, ArenaMark m, Tensor *keep);

/* Persistent memory. */
void *ctx_alloc_persistent(Ctx *ctx, size_t bytes);      /* on the device */
void *ctx_alloc_persistent_host(Ctx *ctx, size_t bytes); /* host, zeroed */
/* Frees one ctx_alloc_persistent block before ctx_destroy (a parameter whose storage was
 * replaced, as params_cast does). Fatal on a pointer the context did not hand out. */
void ctx_free_persistent(Ctx *ctx, void *p);

/* Tensors in the per-step arena (uninitialised data) or zero-filled. */
Tensor *tensor_new(Ctx *ctx, DType dtype, int ndim, const int64_t *shape);
Tensor *tensor_zeros(Ctx *ctx, DType dtype, int ndim, const int64_t *shape);
Tensor *tensor_like(Ctx *ctx, const Tensor *t);
/* A tensor that outlives ctx_step_reset (inputs kept across steps, EMA copies, buffers). */
Tensor *tensor_new_persistent(Ctx *ctx, DType dtype, int ndim, const int64_t *shape);
#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}
/* e.g. tensor_new(ctx, DT_F32, SHAPE(B, C, H, W)) */

/* A parameter: persistent, named. trainable=false freezes it: no gradient is ever
 * computed for it, but gradients still flow through it to its inputs. */
Tensor *param_new(Ctx *ctx, const char *name, DType dtype, int ndim, const int64_t *shape, bool trainable);
void param_set_trainable(Ctx *ctx, Tensor *p, bool trainable);

/* Host <-> tensor copies (fp32 host buffers; converts for bf16 tensors). */
void tensor_from_host_f32(Ctx *ctx, Tensor *t, const float *src);
void tensor_to_host_f32(Ctx *ctx, const Tensor *t, float *dst);
void tensor_fill(Ctx *ctx, Tensor *t, float value);
/* int32 index tensors (token ids, labels). */
void tensor_from_host_i32(Ctx *ctx, Tensor *t, const int32_t *src);
void tensor_to_host_i32(Ctx *ctx, const Tensor *t, int32_t *dst);
/* Copies values (and converts dtype) between two tensors of the same shape. */
void tensor_copy(Ctx *ctx, Tensor *dst, const Tensor *src);
/* Waits for the device to finish (no-op on the CPU). */
void ctx_sync(Ctx *ctx);

#ifdef __cplusplus
}
#endif
