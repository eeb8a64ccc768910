/* softmax and multi-head attention against PyTorch (tests/fixtures/ops_attention.py:
 * torch.softmax and F.scaled_dot_product_attention with a boolean key-padding mask): the
 * forward output and every input's gradient after backward from a random upstream gradient.
 *
 * Tolerance: relative L2 error 2e-6 (softmax 3e-6). Both sides compute in fp32 from the same
 * inputs. Attention's outputs are dot products of D ≤ 64 terms, an exp and a normalised sum
 * over TK ≤ 13 keys; the two sides order these sums differently (PyTorch's math kernel uses
 * BLAS on the (TQ, TK) score matrix, mcm one row at a time), so they differ by ~√D·ε₃₂
 * relative (ε₃₂ = 6e-8): ≈ 5e-7. 2e-6 leaves a margin of 4 and still catches any wrong term
 * (a missing 1/√D or mask gives errors of 1e-1); measured ≤ 3.5e-7. softmax's dx = y ⊙ (dy − Σ dy⊙y)
 * cancels: PyTorch's fp32 dx for sm_3d is 6.8e-7 from a float64 run of the same fixture, mcm
 * (row sums in double) 7.2e-7 from PyTorch, so the error is PyTorch's; 3e-6 still catches
 * any wrong term. */
#include "fixture.h"
#include "kernels/attention.h" /* until kernels/ops.h includes them */
#include "kernels/softmax.h"
#include "test.h"

#define ATTN_FIXTURES "tests/fixtures/ops_attention.h5"
#define SOFTMAX_REL_TOL 3e-6
#define ATTN_REL_TOL 2e-6

#define KEY(leaf) (snprintf(key, sizeof key, "%s/%s", name, (leaf)), key)

static void check_softmax(const char *name) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(ATTN_FIXTURES);
  char key[64];
  Tensor *x = fixture_tensor(ctx, fx, KEY("x"), true);
  Tensor *y = op_softmax(ctx, x);
  backward_from(ctx, y, fixture_tensor(ctx, fx, KEY("grad_out"), false));
  double e0 = fixture_expect(ctx, fx, KEY("out"), y, SOFTMAX_REL_TOL);
  double e1 = fixture_expect(ctx, fx, KEY("grad_x"), x->grad, SOFTMAX_REL_TOL);
  printf("  %-16s rel L2: out %.2g  dx %.2g\n", name, e0, e1);
  fixture_close(fx);
  ctx_destroy(ctx);
}

static void check_attention(const char *name, bool masked) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(ATTN_FIXTURES);
  char key[64];
  int64_t n;
  float *args = fixture_values(fx, KEY("args"), &n); /* [NH] */
  ASSERT(n == 1, "%s: args has %lld values", name, (long long)n);
  Tensor *q = fixture_tensor(ctx, fx, KEY("q"), true);
  Tensor *k = fixture_tensor(ctx, fx, KEY("k"), true);
  Tensor *v = fixture_tensor(ctx, fx, KEY("v"), true);
  Tensor *mask = masked ? fixture_tensor(ctx, fx, KEY("mask"), false) : NULL;
  Tensor *y = op_attention(ctx, q, k, v, (int)args[0], mask);
  backward_from(ctx, y, fixture_tensor(ctx, fx, KEY("grad_out"), false));
  double e0 = fixture_expect(ctx, fx, KEY("out"), y, ATTN_REL_TOL);
  double e1 = fixture_expect(ctx, fx, KEY("grad_q"), q->grad, ATTN_REL_TOL);
  double e2 = fixture_expect(ctx, fx, KEY("grad_k"), k->grad, ATTN_REL_TOL);
  double e3 = fixture_expect(ctx, fx, KEY("grad_v"), v->grad, ATTN_REL_TOL);
  printf("  %-16s rel L2: out %.2g  dq %.2g  dk %.2g  dv %.2g\n", name, e0, e1, e2, e3);
  free(args);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(attention_fixture_softmax_3d) { check_softmax("sm_3d"); }
TEST(attention_fixture_softmax_large_logits) { check_softmax("sm_wide"); }
TEST(attention_fixture_d32_three_heads) { check_attention("at_d32", false); }
TEST(attention_fixture_d64_two_heads_masked) { check_attention("at_d64_mask", true); }
TEST(attention_fixture_d32_one_head_masked) { check_attention("at_d32_nh1_mask", true); }
TEST(attention_fixture_d64_one_query) { check_attention("at_d64_tq1", false); }
