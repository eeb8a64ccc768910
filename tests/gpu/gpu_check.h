/* Helpers for the GPU tests (tests/gpu): tolerances, host-side random inputs, comparison
 * against the CPU reference with a worst-element report, and arena poisoning.
 *
 * Comparison: an element passes when |got − ref| ≤ atol + rtol·|ref|. NaN or Inf in `got`
 * always fails. A failure names the tensor, how many elements failed, and the worst one
 * (index, both values, the difference and what was allowed).
 *
 * Poisoning (gpu_poison_arena): an op's outputs are fresh arena memory, and on the GPU that
 * memory still holds whatever the previous run left there, often the right answer from
 * the CPU-equal previous run of the same op, which hides a kernel that skips elements.
 * So before each run we
 *   1. ctx_step_reset: the arena keeps (at most) one block of at least act.min_block bytes;
 *   2. allocate one tensor of exactly act.min_block bytes, which therefore lands at the
 *      start of that block, and fill it with bf16 NaNs (which read as NaN in fp32 too);
 *   3. ctx_step_reset again: with a single block the arena keeps it, and hands the same
 *      memory out again from its start.
 * Every tensor the run allocates now starts as NaN until an op writes it, and an element
 * an op forgot to write shows up as NaN in the comparison. (Gradients are zero-filled by
 * grad_of on purpose, so they start at 0, not NaN.) The trick covers the run only while it
 * stays inside that first block: gpu_poison_covered() says whether it did.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "kernels/ops.h"

typedef struct Tol {
  float atol, rtol;
} Tol;

/* Steps 1–3 above. Works on CPU contexts too. */
void gpu_poison_arena(Ctx *ctx);
/* True when everything allocated since gpu_poison_arena lies in the poisoned block. */
bool gpu_poison_covered(const Ctx *ctx);

/* out (n) = uniform in [lo, hi) from Philox key `seed` (rng_uniform_host), so the same
 * seed gives the same inputs in every run; rounded to the nearest bf16 when round_bf16. */
void host_uniform(float *out, int64_t n, uint64_t seed, float lo, float hi, bool round_bf16);

/* Compares got (n) with ref (n). Returns the number of failing elements; on failure
 * reports through test_fail as "<what>: ...". *worst_ratio (if not NULL) receives the
 * largest |got − ref| / (atol + rtol·|ref|) (1 = at the tolerance; Inf for NaN). */
int64_t check_close(const char *what, const float *got, const float *ref, int64_t n, Tol tol, double *worst_ratio);

/* ------------------------------------------------------------------ the op table
 * make test-gpu checks one table of ops; each op family adds its rows from its own file:
 *
 *   static const OpEntry NORM_OPS[] = {{"group_norm", fw_group_norm, GEMM_TOL}, ...};
 *   GPU_OPS_REGISTER(NORM_OPS)
 *
 * and tests/gpu/test_ops_gpu.c runs every registered row in fp32 and bf16. */

#define MAX_IN 6

/* Tolerance rows, one per precision and kind of op; each entry names the rows it uses. */

/* fp32 pointwise (activations, add/sub/mul/scale): the same formula on both sides. CUDA's
 * expf/tanhf are within 2 ulp of glibc's and nvcc may fuse a multiply-add, so results
 * differ by a few ulp: rtol 1e-5 (~80 ulp) and atol 1e-6 for results near zero. */
static const Tol F32_POINTWISE = {1e-6f, 1e-5f};
/* fp32 GEMM and convolution: dot products of K ≤ 200 terms of size O(1), summed in another
 * order (OpenBLAS vs cuBLAS/cuDNN tiling, split-K, cuDNN's Winograd/FFT transforms):
 * error ~ ε·√K·Σ|terms| ≈ 1e-5 here; 1e-4 leaves a margin and still catches any wrong
 * index (errors of O(1)). */
static const Tol F32_GEMM = {1e-4f, 1e-4f};
/* fp32 reductions: the GPU sums in fp32 over a tree, the CPU in double. For n ≈ 4.5e3
 * values in [-1, 1] the rounding walk is ~ ε·√(n·log2 n)·0.6 ≈ 1e-5 absolute on a sum of
 * size ~40; atol 1e-4 (rtol 1e-5 for the gradients, which are exact broadcasts). */
static const Tol F32_REDUCE = {1e-4f, 1e-5f};
/* The same for n ≈ 5e5: the walk grows to ~1e-4 on a sum of size ~400. */
static const Tol F32_REDUCE_LARGE = {1e-3f, 1e-5f};
/* bf16 pointwise and reductions (8-bit mantissa): inputs are the same bf16 values on both
 * sides and the GPU computes in fp32, so the difference is the final rounding of each
 * result to bf16: half an ulp, 2^-9 ≈ 2e-3 relative (reduction outputs stay fp32, their
 * gradients are bf16). rtol 1e-2 is 5 half-ulps; atol 1e-3 for results near zero. */
static const Tol BF16_POINTWISE = {1e-3f, 1e-2f};
/* bf16 GEMM and convolution: as above, but results are rounded twice (product, then the
 * bias add) and cuDNN's bf16 algorithms may keep Winograd transforms or split-K partials
 * in bf16, which costs ~2^-8·Σ|terms| on outputs that partly cancel: 2e-2 both ways. */
static const Tol BF16_GEMM = {2e-2f, 2e-2f};

/* One run of one entry on one context. */
typedef struct OpCase {
  Ctx *ctx;
  DType dtype;       /* of the op's inputs on this context (always fp32 on the CPU) */
  bool bf16_values;  /* inputs rounded to bf16: a bf16 run, on both contexts */
  int n_in, n_const;
  Tensor *in[MAX_IN];
  const char *in_name[MAX_IN];
} OpCase;

/* An input that requires a gradient: uniform in [lo, hi), the same values on every
 * context (the seed is the input's position in the entry). */
Tensor *case_input(OpCase *c, const char *name, float lo, float hi, int ndim, const int64_t *shape);
/* An input that needs no gradient (indices, masks, targets), same values on every context. */
Tensor *case_const(OpCase *c, float lo, float hi, int ndim, const int64_t *shape);

typedef struct OpEntry {
  const char *name;
  Tensor *(*forward)(OpCase *c); /* makes its inputs with case_input, returns the op's output */
  Tol tol[2];                    /* [DT_F32], [DT_BF16] */
  bool deterministic;            /* two GPU runs must give identical bits (reductions without
                                    atomics); checked by gpu_ops_deterministic */
} OpEntry;


#define POINTWISE_TOL {F32_POINTWISE, BF16_POINTWISE}
#define GEMM_TOL {F32_GEMM, BF16_GEMM}

void gpu_ops_register(const OpEntry *rows, int n);
#define GPU_OPS_REGISTER(rows)                                               \
  __attribute__((constructor)) static void register_gpu_ops_##rows(void) {  \
    gpu_ops_register(rows, (int)(sizeof rows / sizeof rows[0]));             \
  }
/* All registered rows, in registration order. */
int gpu_ops_count(void);
const OpEntry *gpu_ops_get(int i);
