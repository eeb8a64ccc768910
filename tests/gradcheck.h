/* Gradient checking against central finite differences, on a CPU context.
 *
 * The caller gives a function that builds a scalar loss from a set of persistent leaf
 * tensors (parameters or inputs). gradcheck() runs forward + backward once, then for each
 * checked element perturbs it by ±h, recomputes the loss in no-grad mode, and compares
 * (L(x+h) − L(x−h)) / 2h with the tape's gradient.
 *
 * Tolerance (fp32 forward): the central difference has truncation error O(h²·|L'''|) and
 * rounding error ≈ ε₃₂·|L|·√n / h (ε₃₂ = 6e-8, n terms summed). With h = 1e-2 and losses of
 * order 1, both are ≲ 1e-4; the default tolerance |fd − g| ≤ 2e-3 + 1e-2·|g| leaves a margin
 * of an order of magnitude while still catching a wrong factor or a missing term. */
#pragma once
#include "kernels/ops.h"

typedef Tensor *(*LossFn)(Ctx *ctx, Tensor **leaves, void *user);

typedef struct GradcheckOpts {
  float h;               /* step; 0 → 1e-2 */
  float atol, rtol;      /* 0 → 2e-3, 1e-2 */
  int max_per_tensor;    /* elements checked per leaf (spread evenly); 0 → all */
} GradcheckOpts;

/* Returns the number of mismatching elements (0 = pass); prints the worst per leaf. Leaves
 * with requires_grad false are checked to have received NO gradient. */
int gradcheck(Ctx *ctx, LossFn fn, Tensor **leaves, int n_leaves, void *user, GradcheckOpts opts);

/* Fills t with uniform values in [lo, hi) from a simple deterministic generator. */
void fill_uniform(Ctx *ctx, Tensor *t, uint64_t seed, float lo, float hi);
