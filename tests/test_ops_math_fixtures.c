/* exp, log, sqrt, square, abs, clamp, broadcasting division, pseudo-Huber and hinge against
 * PyTorch (tests/fixtures/ops_math.py), outputs and every input's gradient, including
 * values exactly at abs's kink, on the clamp's bounds and on the hinge's kinks.
 *
 * Tolerances (relative L2 error, fp32 on both sides):
 *  - pointwise outputs and gradients: the same formulas; libm's expf/logf here and
 *    PyTorch's vectorised versions there differ by a few ulp (~1e-7 relative per element),
 *    sqrt and division are correctly rounded on both sides: 1e-6.
 *  - gradients of a broadcast divisor or numerator: sums of up to 40 terms; mcm sums in
 *    double, PyTorch in fp32 in its own order, ~ε₃₂·√40 ≈ 4e-7: 2e-6.
 *  - the losses: a mean over ≤ 240 terms, in double here, fp32 in PyTorch (~ε₃₂·√240 ≈
 *    1e-6 relative on a sum of positive terms): 2e-6; their gradients are pointwise: 1e-6.
 *    mcm evaluates √(d² + c²) − c as d²/(√(d² + c²) + c); for |d| ≫ c = 0.001 PyTorch's
 *    direct form loses ~ε₃₂·c/d relative, well inside 2e-6. pseudo_huber_tiny (|d| ~ 1e-5,
 *    where the direct form would cancel in fp32) has a float64 reference.
 * Measured: ≤ 1.9e-7 everywhere (div_both/grad_b). Any wrong or missing term, or a wrong
 * choice at a kink, moves the error to ~1e-2 or more. */
#include "fixture.h"
#include "kernels/math.h" /* until kernels/ops.h includes it */
#include "test.h"

#define FIX "tests/fixtures/ops_math.h5"
static const double TOL_POINTWISE = 1e-6;
static const double TOL_REDUCED = 2e-6;

static Tensor *leaf(Ctx *ctx, Fixture *fx, const char *cas, const char *name) {
  char key[96];
  snprintf(key, sizeof key, "%s/%s", cas, name);
  return fixture_tensor(ctx, fx, key, true);
}

static float scalar(Fixture *fx, const char *cas, const char *name) {
  char key[96];
  snprintf(key, sizeof key, "%s/%s", cas, name);
  int64_t n;
  float *v = fixture_values(fx, key, &n), s = v[0];
  free(v);
  return s;
}

/* Checks y against <cas>/out (tol_out), then backward from <cas>/grad_out and each leaf's
 * gradient against <cas>/grad_<name> with tol[i]. */
static void check(Ctx *ctx, Fixture *fx, const char *cas, Tensor *y, double tol_out, Tensor **leaves,
                  const char **names, const double *tol, int n) {
  char key[96];
  snprintf(key, sizeof key, "%s/out", cas);
  fixture_expect(ctx, fx, key, y, tol_out);
  snprintf(key, sizeof key, "%s/grad_out", cas);
  backward_from(ctx, y, fixture_tensor(ctx, fx, key, false));
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "%s/grad_%s", cas, names[i]);
    ASSERT(leaves[i]->grad, "%s: %s received no gradient", cas, names[i]);
    fixture_expect(ctx, fx, key, leaves[i]->grad, tol[i]);
  }
  ctx_step_reset(ctx);
}

TEST(fixture_unary) {
  static const struct {
    const char *cas;
    Unary u;
  } cases[] = {
      {"exp", UN_EXP},       {"log", UN_LOG},     {"sqrt", UN_SQRT},
      {"square", UN_SQUARE}, {"abs", UN_ABS},     {"clamp", UN_CLAMP},
      {"clamp_logvar", UN_CLAMP},
  };
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *c = cases[i].cas;
    Tensor *x = leaf(ctx, fx, c, "x");
    Tensor *y = cases[i].u == UN_CLAMP ? op_clamp(ctx, x, scalar(fx, c, "lo"), scalar(fx, c, "hi"))
                                       : op_unary(ctx, x, cases[i].u);
    check(ctx, fx, c, y, TOL_POINTWISE, &x, (const char *[]){"x"}, (double[]){TOL_POINTWISE}, 1);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

/* The tolerance for an operand's gradient: TOL_REDUCED when it was broadcast. */
static double grad_tol(const Tensor *t, const Tensor *y) { return t->numel < y->numel ? TOL_REDUCED : TOL_POINTWISE; }

TEST(fixture_div) {
  const char *cases[] = {"div_same", "div_channels",     "div_maps", "div_both",
                         "div_scalar", "div_a_broadcasts", "div_5d"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *c = cases[i];
    Tensor *a = leaf(ctx, fx, c, "a"), *b = leaf(ctx, fx, c, "b");
    Tensor *y = op_div(ctx, a, b);
    check(ctx, fx, c, y, TOL_POINTWISE, (Tensor *[]){a, b}, (const char *[]){"a", "b"},
          (double[]){grad_tol(a, y), grad_tol(b, y)}, 2);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_pseudo_huber) {
  const char *cases[] = {"pseudo_huber", "pseudo_huber_c05", "pseudo_huber_tiny"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *c = cases[i];
    Tensor *a = leaf(ctx, fx, c, "a"), *b = leaf(ctx, fx, c, "b");
    Tensor *y = op_pseudo_huber(ctx, a, b, scalar(fx, c, "c"));
    check(ctx, fx, c, y, TOL_REDUCED, (Tensor *[]){a, b}, (const char *[]){"a", "b"},
          (double[]){TOL_POINTWISE, TOL_POINTWISE}, 2);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_hinge) {
  const char *cases[] = {"hinge_fake", "hinge_real"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < 2; i++) {
    const char *c = cases[i];
    Tensor *x = leaf(ctx, fx, c, "x");
    Tensor *y = op_hinge(ctx, x, scalar(fx, c, "sign"));
    check(ctx, fx, c, y, TOL_REDUCED, &x, (const char *[]){"x"}, (double[]){TOL_POINTWISE}, 1);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}
