/* linear, conv2d, sum, mean and mse against PyTorch (tests/fixtures/ops_base.py).
 *
 * Tolerance: both sides compute in fp32 with different summation orders (OpenBLAS vs
 * PyTorch's own kernels); for dot products of K ≤ 100 terms the relative error per
 * element is ~ε₃₂·√K ≈ 1e-6, so a relative L2 error of 1e-5 catches any real mistake. */
#include "fixture.h"
#include "test.h"

#define FIX "tests/fixtures/ops_base.h5"
static const double TOL = 1e-5;

static void check_grads(Ctx *ctx, Fixture *fx, const char *cas, Tensor *y, Tensor **leaves, const char **names, int n) {
  char key[96];
  snprintf(key, sizeof key, "%s/out", cas);
  fixture_expect(ctx, fx, key, y, TOL);
  snprintf(key, sizeof key, "%s/grad_out", cas);
  backward_from(ctx, y, fixture_tensor(ctx, fx, key, false));
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "%s/grad_%s", cas, names[i]);
    fixture_expect(ctx, fx, key, leaves[i]->grad, TOL);
  }
}

static Tensor *leaf(Ctx *ctx, Fixture *fx, const char *cas, const char *name) {
  char key[96];
  snprintf(key, sizeof key, "%s/%s", cas, name);
  return fixture_tensor(ctx, fx, key, true);
}

TEST(fixture_linear) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  Tensor *x = leaf(ctx, fx, "lin1", "x"), *w = leaf(ctx, fx, "lin1", "w"), *b = leaf(ctx, fx, "lin1", "b");
  check_grads(ctx, fx, "lin1", op_linear(ctx, x, w, b), (Tensor *[]){x, w, b}, (const char *[]){"x", "w", "b"}, 3);
  x = leaf(ctx, fx, "lin2", "x"), w = leaf(ctx, fx, "lin2", "w");
  check_grads(ctx, fx, "lin2", op_linear(ctx, x, w, NULL), (Tensor *[]){x, w}, (const char *[]){"x", "w"}, 2);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_conv2d) {
  struct {
    const char *name;
    Conv2dArgs a;
    bool bias;
  } cases[] = {
      {"conv_3x3", {1, 1, 1, 1, 1, 1, 1, 1, 1}, true},
      {"conv_down", {2, 2, 0, 1, 0, 1, 1, 1, 1}, true},
      {"conv_dil", {1, 1, 2, 2, 2, 2, 2, 2, 1}, true},
      {"conv_1x1", {1, 1, 0, 0, 0, 0, 1, 1, 1}, false},
      {"conv_odd", {1, 2, 2, 1, 0, 2, 1, 3, 1}, true},
  };
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *c = cases[i].name;
    Tensor *x = leaf(ctx, fx, c, "x"), *w = leaf(ctx, fx, c, "w"), *b = cases[i].bias ? leaf(ctx, fx, c, "b") : NULL;
    Tensor *y = op_conv2d(ctx, x, w, b, cases[i].a);
    check_grads(ctx, fx, c, y, (Tensor *[]){x, w, b}, (const char *[]){"x", "w", "b"}, b ? 3 : 2);
    ctx_step_reset(ctx);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_reductions) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  Tensor *x = leaf(ctx, fx, "sum", "x");
  check_grads(ctx, fx, "sum", op_sum(ctx, x), &x, (const char *[]){"x"}, 1);
  x = leaf(ctx, fx, "mean", "x");
  check_grads(ctx, fx, "mean", op_mean(ctx, x), &x, (const char *[]){"x"}, 1);
  Tensor *a = leaf(ctx, fx, "mse", "a"), *b = leaf(ctx, fx, "mse", "b");
  check_grads(ctx, fx, "mse", op_mse(ctx, a, b), (Tensor *[]){a, b}, (const char *[]){"a", "b"}, 2);
  fixture_close(fx);
  ctx_destroy(ctx);
}
