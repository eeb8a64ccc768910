/* matmul, embedding, timestep embedding, l2_normalize and spectral_norm against PyTorch
 * (tests/fixtures/ops_misc.py).
 *
 * Tolerances (relative L2 error; both sides fp32; measured errors in brackets):
 *  - matmul: dot products of K ≤ 7 terms summed in another order (OpenBLAS vs PyTorch):
 *    ~ε₃₂·√K ≈ 2e-7 per element [≤ 7e-8]; 1e-6 still catches any wrong index or
 *    transpose, whose errors are O(1).
 *  - embedding: the forward is a copy; the table gradient sums ≤ 3 rows [exact]: 1e-6.
 *  - l2_normalize: the CPU sums the norm in double, PyTorch in fp32 over ≤ 10 terms, a few
 *    ulp apart [≤ 6e-8]: 1e-6.
 *  - spectral_norm: one or two power iterations and σ over OUT·IN = 105 weights, summed in
 *    double by mcm and in fp32 (sgemv) by PyTorch: ~ε₃₂·√105 ≈ 6e-7 relative on u, v and σ
 *    [≤ 1.4e-7]: 1e-6 for the normalised weight, u, v and the weight gradient.
 *  - timestep embedding: mcm computes freq_i with PyTorch's fp32 steps but exp in double
 *    rounded once; PyTorch's vectorised exp may land 1 ulp away, which moves t·freq by up
 *    to t·2⁻²⁴ ≈ 6e-5 at t = 999 and sin/cos by as much. Such isolated elements among
 *    6·dim of size ~0.7 keep the relative L2 error ≲ 1e-5 [2.2e-7]; 1e-5 still catches a
 *    wrong frequency, order or phase (errors of O(1)). */
#include "fixture.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/normalize.h"
#include "test.h"

#define FIX "tests/fixtures/ops_misc.h5"

static char *key(char *buf, const char *cas, const char *name) {
  snprintf(buf, 96, "%s/%s", cas, name);
  return buf;
}
#define KEY(cas, name) key((char[96]){0}, (cas), (name))

/* Checks out, then runs backward from the fixture's grad_out and checks each leaf's gradient. */
static void check_grads(Ctx *ctx, Fixture *fx, const char *cas, Tensor *y, Tensor **leaves, const char **names, int n,
                        double tol) {
  fixture_expect(ctx, fx, KEY(cas, "out"), y, tol);
  backward_from(ctx, y, fixture_tensor(ctx, fx, KEY(cas, "grad_out"), false));
  for (int i = 0; i < n; i++) {
    char g[32];
    snprintf(g, sizeof g, "grad_%s", names[i]);
    fixture_expect(ctx, fx, KEY(cas, g), leaves[i]->grad, tol);
  }
}

/* A fixture's ids (stored as float) as an int32 tensor with the same shape. */
static Tensor *fixture_ids(Ctx *ctx, Fixture *fx, const char *name) {
  Tensor *f = fixture_tensor(ctx, fx, name, false);
  int32_t *ids = MALLOC_CHECK((size_t)f->numel * sizeof(int32_t));
  for (int64_t i = 0; i < f->numel; i++) ids[i] = (int32_t)((float *)f->data)[i];
  Tensor *t = tensor_new_persistent(ctx, DT_I32, f->ndim, f->shape);
  tensor_from_host_i32(ctx, t, ids);
  free(ids);
  return t;
}

TEST(fixture_matmul) {
  struct {
    const char *name;
    bool ta, tb;
  } cases[] = {{"mm_nn", false, false},    {"mm_nt", false, true}, {"mm_tn", true, false},
               {"mm_tt", true, true},      {"mm_shared", false, false}, {"mm_shared_t", true, true},
               {"mm_2d", false, false},    {"mm_5d", false, false}};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *c = cases[i].name;
    Tensor *a = fixture_tensor(ctx, fx, KEY(c, "a"), true), *b = fixture_tensor(ctx, fx, KEY(c, "b"), true);
    Tensor *y = op_matmul(ctx, a, b, cases[i].ta, cases[i].tb);
    check_grads(ctx, fx, c, y, (Tensor *[]){a, b}, (const char *[]){"a", "b"}, 2, 1e-6);
    ctx_step_reset(ctx);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_embedding) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  const char *cases[] = {"emb", "emb1"};
  for (int i = 0; i < 2; i++) {
    Tensor *table = fixture_tensor(ctx, fx, KEY(cases[i], "table"), true);
    Tensor *ids = fixture_ids(ctx, fx, KEY(cases[i], "ids"));
    Tensor *y = op_embedding(ctx, table, ids);
    EXPECT(y->ndim == ids->ndim + 1 && y->shape[y->ndim - 1] == table->shape[1], "embedding shape %s",
           TENSOR_SHAPE_STR(y));
    check_grads(ctx, fx, cases[i], y, &table, (const char *[]){"table"}, 1, 1e-6);
    ctx_step_reset(ctx);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_timestep_embedding) {
  struct {
    const char *name;
    int dim;
    bool flip;
    float shift;
  } cases[] = {{"temb_ldm", 128, true, 0.0f}, {"temb_sin", 32, false, 1.0f}, {"temb_odd", 15, true, 1.0f}};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (int i = 0; i < 3; i++) {
    Tensor *t = fixture_tensor(ctx, fx, KEY(cases[i].name, "t"), false);
    Tensor *y = op_timestep_embedding(ctx, t, cases[i].dim, 10000.0f, cases[i].flip, cases[i].shift);
    double err = fixture_expect(ctx, fx, KEY(cases[i].name, "out"), y, 1e-5);
    printf("  %s: relative L2 error %.2g\n", cases[i].name, err);
    EXPECT(!y->requires_grad, "the timestep embedding must not require a gradient");
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_l2_normalize) {
  const float eps[] = {1e-12f, 0.5f};
  const char *cases[] = {"l2a", "l2b"};
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  for (int i = 0; i < 2; i++) {
    Tensor *x = fixture_tensor(ctx, fx, KEY(cases[i], "x"), true);
    check_grads(ctx, fx, cases[i], op_l2_normalize(ctx, x, eps[i]), &x, (const char *[]){"x"}, 1, 1e-6);
    ctx_step_reset(ctx);
  }
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(fixture_spectral_norm) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  Tensor *w = fixture_tensor(ctx, fx, "sn/w", true); /* (7, 5, 3): a Conv1d weight */
  SpectralNorm sn;
  spectral_norm_init(ctx, &sn, w, 1, 1e-12f);
  int64_t n;
  float *u0 = fixture_values(fx, "sn/u0", &n);
  ASSERT(n == 7, "sn/u0 has %lld elements", (long long)n);
  tensor_from_host_f32(ctx, sn.u, u0); /* v needs no setting: training mode overwrites it first */
  free(u0);
  const double tol = 1e-6;
  Tensor *y = op_spectral_norm(ctx, &sn, w, true);
  fixture_expect(ctx, fx, "sn/u1", sn.u, tol);
  fixture_expect(ctx, fx, "sn/v1", sn.v, tol);
  check_grads(ctx, fx, "sn", y, &w, (const char *[]){"w"}, 1, tol);
  ctx_step_reset(ctx);
  /* A second training-mode call continues the iteration; eval mode then keeps u and v. */
  fixture_expect(ctx, fx, "sn/out2", op_spectral_norm(ctx, &sn, w, true), tol);
  fixture_expect(ctx, fx, "sn/u2", sn.u, tol);
  fixture_expect(ctx, fx, "sn/out_eval", op_spectral_norm(ctx, &sn, w, false), tol);
  fixture_expect(ctx, fx, "sn/u2", sn.u, tol);
  fixture_close(fx);
  ctx_destroy(ctx);
}
