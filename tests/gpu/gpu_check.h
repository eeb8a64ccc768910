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

#include "kernels/context.h"

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
