/* group_norm, layer_norm and batch_norm_local against PyTorch (tests/fixtures/ops_norm.py):
 * forward output and the gradients of x, w and b after backward from a random upstream
 * gradient.
 *
 * Tolerance: relative L2 error 1e-6. Both sides compute in fp32 from the same fp32 inputs;
 * mcm sums the statistics in double, PyTorch in fp32, over at most a few hundred elements,
 * so outputs and gradients differ by a few ε₃₂ (6e-8): measured ≤ 2.4e-7, a margin of 4,
 * while a wrong term gives errors of 1e-2 and more.
 * gn_off (x in [2.5, 3.5), μ/σ ≈ 10) gets 3e-6: PyTorch's fp32 dw cancels there (7.2e-7
 * against a float64 PyTorch run of the same fixture; mcm is 1e-7 from it), so the error
 * measured, 7.8e-7, is PyTorch's; 3e-6 still catches any wrong term. */
#include <string.h>

#include "fixture.h"
#include "kernels/norm.h" /* until kernels/ops.h includes it */
#include "test.h"

#define NORM_FIXTURES "tests/fixtures/ops_norm.h5"
#define NORM_REL_TOL 1e-6
#define NORM_FAR_TOL 3e-6 /* gn_off only, see above */

typedef enum { GN, LN, BNL } NormKind;

static void check_case(const char *name, NormKind kind, bool affine, double tol) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(NORM_FIXTURES);
  char key[64];
#define KEY(leaf) (snprintf(key, sizeof key, "%s/%s", name, (leaf)), key)
  int64_t n;
  float *args = fixture_values(fx, KEY("args"), &n); /* [groups or virtual_bs, eps] */
  ASSERT(n == 2, "%s: args has %lld values", name, (long long)n);
  Tensor *x = fixture_tensor(ctx, fx, KEY("x"), true);
  Tensor *w = affine ? fixture_tensor(ctx, fx, KEY("w"), true) : NULL;
  Tensor *b = affine ? fixture_tensor(ctx, fx, KEY("b"), true) : NULL;
  int arg = (int)args[0];
  float eps = args[1];
  Tensor *y = kind == GN   ? op_group_norm(ctx, x, arg, eps, w, b)
              : kind == LN ? op_layer_norm(ctx, x, eps, w, b)
                           : op_batch_norm_local(ctx, x, arg, eps, w, b);
  backward_from(ctx, y, fixture_tensor(ctx, fx, KEY("grad_out"), false));
  double e[4] = {0};
  e[0] = fixture_expect(ctx, fx, KEY("out"), y, tol);
  e[1] = fixture_expect(ctx, fx, KEY("grad_x"), x->grad, tol);
  if (affine) {
    e[2] = fixture_expect(ctx, fx, KEY("grad_w"), w->grad, tol);
    e[3] = fixture_expect(ctx, fx, KEY("grad_b"), b->grad, tol);
  }
#undef KEY
  printf("  %-7s rel L2: out %.2g  dx %.2g  dw %.2g  db %.2g\n", name, e[0], e[1], e[2], e[3]);
  free(args);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(norm_fixture_group_norm_4d) { check_case("gn_4d", GN, true, NORM_REL_TOL); }
TEST(norm_fixture_group_norm_one_group) { check_case("gn_g1", GN, true, NORM_REL_TOL); }
TEST(norm_fixture_group_norm_groups_eq_channels_rank5) { check_case("gn_gc", GN, true, NORM_REL_TOL); }
TEST(norm_fixture_group_norm_rank2_no_affine) { check_case("gn_r2", GN, false, NORM_REL_TOL); }
TEST(norm_fixture_group_norm_mean_far_from_zero) { check_case("gn_off", GN, true, NORM_FAR_TOL); }
TEST(norm_fixture_group_norm_large_eps) { check_case("gn_eps", GN, true, NORM_REL_TOL); }
TEST(norm_fixture_layer_norm_3d) { check_case("ln_3d", LN, true, NORM_REL_TOL); }
TEST(norm_fixture_layer_norm_2d_no_affine) { check_case("ln_2d", LN, false, NORM_REL_TOL); }
TEST(norm_fixture_batch_norm_local_2_groups) { check_case("bnl_g2", BNL, true, NORM_REL_TOL); }
TEST(norm_fixture_batch_norm_local_1_group) { check_case("bnl_g1", BNL, true, NORM_REL_TOL); }
TEST(norm_fixture_batch_norm_local_3_groups) { check_case("bnl_g3", BNL, true, NORM_REL_TOL); }
