/* Activations, GEGLU and broadcasting add/sub/mul/add_scaled against PyTorch
 * (tests/fixtures/ops_pointwise.py).
 *
 * Tolerances (relative L2 error, fp32 on both sides):
 *  - pointwise outputs and gradients: the same formulas, evaluated with libm's expf/erff/
 *    tanhf here and PyTorch's vectorised versions there, which differ by a few ulp
 *    (~1e-7 relative per element; measured ≤ 1.3e-7): 1e-6.
 *  - gradients of a broadcast operand: sums of up to 40 terms; mcm sums in double,
 *    PyTorch in fp32 in its own order, ~ε₃₂·√40 ≈ 4e-7 relative (measured ≤ 1.6e-7):
 *    2e-6. Any wrong or missing term moves the error to ~1e-2 or more. */
#include "fixture.h"
#include "test.h"

#define FIX "tests/fixtures/ops_pointwise.h5"
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

/* Checks y against <cas>/out, then backward from <cas>/grad_out and each leaf's gradient
 * against <cas>/grad_<name>, with tolerance tol[i] for leaf i. */
static void check(Ctx *ctx, Fixture *fx, const char *cas, Tensor *y, Tensor **leaves, const char **names,
                  const double *tol, int n) {
  char key[96];
  snprintf(key, sizeof key, "%s/out", cas);
  fixture_expect(ctx, fx, key, y, TOL_POINTWISE);
  snprintf(key, sizeof key, "%s/grad_out", cas);
  backward_from(ctx, y, fixture_tensor(ctx, fx, key, false));
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "%s/grad_%s", cas, names[i]);
    fixture_expect(ctx, fx, key, leaves[i]->grad, tol[i]);
  }
  ctx_step_reset(ctx);
}

TEST(fixture_activations) {
  static const struct {
    const char *cas;
    Act act;
    bool slope_in_fixture;
  } cases[] = {
      {"silu", ACT_SILU, false},
      {"relu", ACT_RELU, false},
      {"tanh", ACT_TANH, false},
      {"gelu", ACT_GELU, false},
      {"leaky_relu_0.2", ACT_LEAKY_RELU, true},
      {"leaky_relu_0.1", ACT_LEAKY_RELU, true},
      {"leaky_relu_default", ACT_LEAKY_RELU, false}, /* op_act: torch's default slope 0.01 */
  };
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *c = cases[i].cas;
    Tensor *x = leaf(ctx, fx, c, "x");
    Tensor *y = cases[i].slope_in_fixture ? op_leaky_relu(ctx, x, scalar(fx, c, "slope"))
                                          : op_act(ctx, x, cases[i].act);
    check(ctx, fx, c, y, &x, (const char *[]){"x"}, (double[]){TOL_POINTWISE}, 1);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_geglu) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  Tensor *x = leaf(ctx, fx, "geglu", "x");
  check(ctx, fx, "geglu", op_geglu(ctx, x), &x, (const char *[]){"x"}, (double[]){TOL_POINTWISE}, 1);
  fixture_close(fx);
  ctx_destroy(ctx);
}

/* The tolerance for an operand's gradient: TOL_REDUCED when it was broadcast. */
static double grad_tol(const Tensor *t, const Tensor *y) { return t->numel < y->numel ? TOL_REDUCED : TOL_POINTWISE; }

TEST(fixture_broadcast_binary) {
  static const struct {
    const char *cas;
    Binary kind;
  } cases[] = {
      {"add_time_emb", BIN_ADD},     {"mul_channels", BIN_MUL}, {"add_both", BIN_ADD},
      {"mul_both", BIN_MUL},         {"sub_both", BIN_SUB},     {"sub_a_broadcasts", BIN_SUB},
      {"mul_a_broadcasts", BIN_MUL}, {"add_5d", BIN_ADD},       {"mul_scalar", BIN_MUL},
      {"add_same", BIN_ADD},         {"sub_same", BIN_SUB},     {"mul_same", BIN_MUL},
  };
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *c = cases[i].cas;
    Tensor *a = leaf(ctx, fx, c, "a"), *b = leaf(ctx, fx, c, "b");
    Tensor *y = op_binary(ctx, a, b, cases[i].kind);
    check(ctx, fx, c, y, (Tensor *[]){a, b}, (const char *[]){"a", "b"},
          (double[]){grad_tol(a, y), grad_tol(b, y)}, 2);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_add_scaled) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  const char *cases[] = {"add_scaled_residual", "add_scaled_bcast"};
  for (int i = 0; i < 2; i++) {
    const char *c = cases[i];
    Tensor *a = leaf(ctx, fx, c, "a"), *b = leaf(ctx, fx, c, "b");
    Tensor *y = op_add_scaled(ctx, a, b, scalar(fx, c, "alpha"), scalar(fx, c, "beta"));
    check(ctx, fx, c, y, (Tensor *[]){a, b}, (const char *[]){"a", "b"},
          (double[]){grad_tol(a, y), grad_tol(b, y)}, 2);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}
