/* conv1d (zero and circular padding) and conv_transpose1d (HiFi-GAN's five upsampling
 * stages, output_padding, dilation 3 and 5) against PyTorch (tests/fixtures/ops_conv1d.py).
 * Each case's arguments are read from the fixture (<case>/args), so the script is the one
 * place that defines them.
 *
 * Tolerance: both sides compute in fp32 with different summation orders (OpenBLAS im2col
 * vs PyTorch's own kernels). Every output and gradient element is a sum of fewer than 100
 * terms (outputs and dx ≤ CIN·K = 64, dw and db ≤ B·TO = 72), so the relative error per
 * element is ~ε₃₂·√n ≈ 1e-6 (measured: at most 1e-7 over all cases); a relative L2 error
 * of 1e-5 leaves a margin and still catches any wrong index or tap. */
#include "fixture.h"
#include "kernels/conv1d.h"
#include "test.h"

#define FIX "tests/fixtures/ops_conv1d.h5"
static const double TOL = 1e-5;

static Tensor *leaf(Ctx *ctx, Fixture *fx, const char *cas, const char *name) {
  char key[96];
  snprintf(key, sizeof key, "%s/%s", cas, name);
  return fixture_tensor(ctx, fx, key, true);
}

/* The case's integer arguments (want of them). */
static void case_args(Fixture *fx, const char *cas, int *args, int want) {
  char key[96];
  snprintf(key, sizeof key, "%s/args", cas);
  int64_t n;
  float *v = fixture_values(fx, key, &n);
  ASSERT(n == want, "%s: %lld arguments, expected %d", key, (long long)n, want);
  for (int i = 0; i < want; i++) args[i] = (int)v[i];
  free(v);
}

/* Runs the op forward, then backward from the stored grad_out; checks out and every
 * gradient. The bias is used when the fixture has one. */
static void check_case(Ctx *ctx, Fixture *fx, const char *cas, bool transpose, bool bias) {
  Tensor *x = leaf(ctx, fx, cas, "x"), *w = leaf(ctx, fx, cas, "w"), *b = bias ? leaf(ctx, fx, cas, "b") : NULL;
  int a[5];
  Tensor *y;
  if (transpose) {
    case_args(fx, cas, a, 4);
    y = op_conv_transpose1d(ctx, x, w, b, a[0], a[1], a[2], a[3]);
  } else {
    case_args(fx, cas, a, 5);
    y = op_conv1d(ctx, x, w, b, (Conv1dArgs){a[0], a[1], a[2], a[3], a[4] != 0, 1});
  }
  char key[96];
  snprintf(key, sizeof key, "%s/out", cas);
  fixture_expect(ctx, fx, key, y, TOL);
  snprintf(key, sizeof key, "%s/grad_out", cas);
  backward_from(ctx, y, fixture_tensor(ctx, fx, key, false));
  Tensor *leaves[3] = {x, w, b};
  const char *names[3] = {"x", "w", "b"};
  for (int i = 0; i < (bias ? 3 : 2); i++) {
    snprintf(key, sizeof key, "%s/grad_%s", cas, names[i]);
    fixture_expect(ctx, fx, key, leaves[i]->grad, TOL);
  }
  ctx_step_reset(ctx);
}

typedef struct {
  const char *name;
  bool bias;
} FixCase;

TEST(fixture_conv1d) {
  const FixCase cases[] = {{"c1_same_k3", true}, {"c1_dil3", true},    {"c1_dil5_k7", true},   {"c1_stride_asym", true},
                           {"c1_1x1", false},    {"c1_circ_k9", true}, {"c1_circ_asym", false}};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(ctx, fx, cases[i].name, false, cases[i].bias);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_conv_transpose1d) {
  const FixCase cases[] = {{"ct_hifi0", true},  {"ct_hifi1", true},     {"ct_hifi2", true}, {"ct_hifi3", true},
                           {"ct_hifi4", false}, {"ct_opad_dil3", true}, {"ct_dil5", false}};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(ctx, fx, cases[i].name, true, cases[i].bias);
  fixture_close(fx);
  ctx_destroy(ctx);
}
