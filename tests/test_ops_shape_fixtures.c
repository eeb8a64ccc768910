/* concat, slice, permute, nearest 2× upsampling, sum_dim and mean_dim against PyTorch
 * (tests/fixtures/ops_shape.py): outputs, their shapes, and every input gradient.
 *
 * Tolerances (relative L2):
 *  - copies (cat, narrow, permute, the upsample forward) and their backward passes, which
 *    add each dy element into a zeroed dx once: the values move unchanged, so the result
 *    must match exactly (tolerance 0);
 *  - the upsample backward adds 4 values and the reductions R ≤ 5, in fp32 on PyTorch's
 *    side (double here), in an order that may differ: a few ε₃₂ = 6e-8 per element, so 1e-6;
 *    the mean gradients are dy / R in PyTorch and dy·(1/R) here: one rounding apart, ≤ 1e-7. */
#include "fixture.h"
#include "kernels/upsample.h"
#include "test.h"

#define FIX "tests/fixtures/ops_shape.h5"
static const double EXACT = 0.0;
static const double SUMS = 1e-6;

/* The case's stored arguments as ints (n of them). */
static void args_of(Fixture *fx, const char *cas, int *out, int n) {
  char key[96];
  snprintf(key, sizeof key, "%s/args", cas);
  int64_t got;
  float *v = fixture_values(fx, key, &got);
  ASSERT(got == n, "%s: %lld arguments, expected %d", key, (long long)got, n);
  for (int i = 0; i < n; i++) out[i] = (int)v[i];
  free(v);
}

static Tensor *leaf(Ctx *ctx, Fixture *fx, const char *cas, const char *name) {
  char key[96];
  snprintf(key, sizeof key, "%s/%s", cas, name);
  return fixture_tensor(ctx, fx, key, true);
}

/* y against <cas>/out (values and shape), then backward from <cas>/grad_out and every
 * leaf's gradient against <cas>/grad_<name>. */
static void check_case(Ctx *ctx, Fixture *fx, const char *cas, Tensor *y, Tensor **leaves, const char **names, int n,
                       double tol_out, double tol_grad) {
  char key[96];
  snprintf(key, sizeof key, "%s/out", cas);
  Tensor *ref = fixture_tensor(ctx, fx, key, false);
  EXPECT(tensor_same_shape(y, ref), "%s: mcm's shape %s, PyTorch's %s", cas, TENSOR_SHAPE_STR(y),
         TENSOR_SHAPE_STR(ref));
  fixture_expect(ctx, fx, key, y, tol_out);
  snprintf(key, sizeof key, "%s/grad_out", cas);
  backward_from(ctx, y, fixture_tensor(ctx, fx, key, false));
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "%s/grad_%s", cas, names[i]);
    fixture_expect(ctx, fx, key, leaves[i]->grad, tol_grad);
  }
  ctx_step_reset(ctx);
}

TEST(fixture_concat) {
  struct {
    const char *name;
    int n;
  } cases[] = {{"cat_ch", 2}, {"cat_batch", 3}, {"cat_last", 2}, {"cat_r2", 2}};
  const char *names[] = {"x0", "x1", "x2"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int dim;
    args_of(fx, cases[c].name, &dim, 1);
    Tensor *xs[3];
    for (int i = 0; i < cases[c].n; i++) xs[i] = leaf(ctx, fx, cases[c].name, names[i]);
    Tensor *y = op_concat(ctx, xs, cases[c].n, dim);
    check_case(ctx, fx, cases[c].name, y, xs, names, cases[c].n, EXACT, EXACT);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_slice) {
  const char *cases[] = {"nar_moments", "nar_batch", "nar_r5", "nar_r3"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int a[3]; /* dim, start, len */
    args_of(fx, cases[c], a, 3);
    Tensor *x = leaf(ctx, fx, cases[c], "x");
    check_case(ctx, fx, cases[c], op_slice(ctx, x, a[0], a[1], a[2]), &x, (const char *[]){"x"}, 1, EXACT, EXACT);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_permute) {
  const char *cases[] = {"perm_r2", "perm_021", "perm_0231", "perm_0312", "perm_0213", "perm_r5"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    Tensor *x = leaf(ctx, fx, cases[c], "x");
    int perm[MCM_MAX_DIMS];
    args_of(fx, cases[c], perm, x->ndim);
    check_case(ctx, fx, cases[c], op_permute(ctx, x, perm), &x, (const char *[]){"x"}, 1, EXACT, EXACT);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_upsample_nearest2x) {
  const char *cases[] = {"up_a", "up_b"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    Tensor *x = leaf(ctx, fx, cases[c], "x");
    check_case(ctx, fx, cases[c], op_upsample_nearest2x(ctx, x), &x, (const char *[]){"x"}, 1, EXACT, SUMS);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

/* Each case holds one keepdim form (PyTorch's shape is checked for it); the other form has
 * the same values, so it runs against the same case with its shape checked by rule. */
TEST(fixture_sum_dim_and_mean_dim) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  int checked = 0;
  for (int mean = 0; mean < 2; mean++)
    for (int rank = 2; rank <= 5; rank++)
      for (int dim = 0; dim < rank; dim++) {
        char cas[32];
        snprintf(cas, sizeof cas, "%s_r%d_d%d", mean ? "mean" : "sum", rank, dim);
        int a[2]; /* dim, keepdim */
        args_of(fx, cas, a, 2);
        ASSERT(a[0] == dim, "%s: stored dim %d", cas, a[0]);
        for (int other = 0; other < 2; other++) {
          bool keep = other ? !a[1] : a[1];
          Tensor *x = leaf(ctx, fx, cas, "x");
          /* a negative dim for the second form: the same reduction */
          int d = other ? dim - rank : dim;
          Tensor *y = mean ? op_mean_dim(ctx, x, d, keep) : op_sum_dim(ctx, x, d, keep);
          if (other) { /* the shape PyTorch would give, then the values */
            int64_t want[MCM_MAX_DIMS];
            int n = 0;
            for (int k = 0; k < rank; k++)
              if (k != dim || keep) want[n++] = k == dim ? 1 : x->shape[k];
            EXPECT(y->ndim == n && !memcmp(y->shape, want, (size_t)n * sizeof(int64_t)), "%s keepdim %d: shape %s",
                   cas, keep, TENSOR_SHAPE_STR(y));
            char key[64];
            snprintf(key, sizeof key, "%s/out", cas);
            fixture_expect(ctx, fx, key, y, SUMS);
            snprintf(key, sizeof key, "%s/grad_out", cas);
            Tensor *g = fixture_tensor(ctx, fx, key, false);
            backward_from(ctx, y, op_reshape(ctx, g, y->ndim, y->shape));
            snprintf(key, sizeof key, "%s/grad_x", cas);
            fixture_expect(ctx, fx, key, x->grad, SUMS);
            ctx_step_reset(ctx);
          } else {
            check_case(ctx, fx, cas, y, &x, (const char *[]){"x"}, 1, SUMS, SUMS);
          }
          checked++;
        }
      }
  EXPECT(checked == 56, "checked %d reductions", checked);
  fixture_close(fx);
  ctx_destroy(ctx);
}
