/* The autograd tape on small networks: gradients of parameters and inputs against central
 * finite differences, frozen parameters, no-grad mode, accumulation, detach. */
#include "gradcheck.h"
#include "test.h"

/* ---- a small MLP: loss = mse(W2 tanh(W1 x + b1) + b2 ... ) */
enum { MLP_X, MLP_W1, MLP_B1, MLP_W2, MLP_B2, MLP_W3, MLP_T, MLP_N };

static Tensor *mlp_loss(Ctx *ctx, Tensor **p, void *user) {
  Tensor *h = op_silu(ctx, op_linear(ctx, p[MLP_X], p[MLP_W1], p[MLP_B1])); /* (3, 7) */
  h = op_tanh(ctx, op_linear(ctx, h, p[MLP_W2], p[MLP_B2]));               /* (3, 5) */
  h = op_linear(ctx, h, p[MLP_W3], NULL);                                  /* (3, 2) */
  return op_mse(ctx, h, p[MLP_T]);
}

static void make_mlp(Ctx *ctx, Tensor **p, bool freeze_w2) {
  p[MLP_X] = tensor_new_persistent(ctx, DT_F32, SHAPE(3, 4));
  p[MLP_X]->requires_grad = true;
  p[MLP_W1] = param_new(ctx, "fc1.weight", DT_F32, SHAPE(7, 4), true);
  p[MLP_B1] = param_new(ctx, "fc1.bias", DT_F32, SHAPE(7), true);
  p[MLP_W2] = param_new(ctx, "fc2.weight", DT_F32, SHAPE(5, 7), !freeze_w2);
  p[MLP_B2] = param_new(ctx, "fc2.bias", DT_F32, SHAPE(5), true);
  p[MLP_W3] = param_new(ctx, "fc3.weight", DT_F32, SHAPE(2, 5), true);
  p[MLP_T] = tensor_new_persistent(ctx, DT_F32, SHAPE(3, 2)); /* target: no gradient wanted */
  for (int i = 0; i < MLP_N; i++) fill_uniform(ctx, p[i], 100 + i, -1.0f, 1.0f);
}

TEST(tape_mlp_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[MLP_N];
  make_mlp(ctx, p, false);
  EXPECT(gradcheck(ctx, mlp_loss, p, MLP_N, NULL, (GradcheckOpts){0}) == 0, "MLP gradients disagree");
  EXPECT(p[MLP_T]->grad == NULL, "the target needs no gradient but got one");
  ctx_destroy(ctx);
}

TEST(tape_frozen_param_gets_no_gradient_but_passes_one) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[MLP_N];
  make_mlp(ctx, p, true);
  EXPECT(p[MLP_W2]->grad == NULL, "a frozen parameter must have no gradient buffer");
  /* fc1 sits below the frozen fc2: its gradient must still be right. */
  EXPECT(gradcheck(ctx, mlp_loss, p, MLP_N, NULL, (GradcheckOpts){0}) == 0, "gradients through a frozen layer");
  EXPECT(p[MLP_W2]->grad == NULL, "the frozen parameter received a gradient");
  float g[28];
  tensor_to_host_f32(ctx, p[MLP_W1]->grad, g);
  double norm = 0;
  for (int i = 0; i < 28; i++) norm += g[i] * g[i];
  EXPECT(norm > 1e-8, "no gradient reached fc1 through the frozen fc2 (norm %g)", norm);
  ctx_destroy(ctx);
}

TEST(tape_no_grad_mode_records_nothing) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[MLP_N];
  make_mlp(ctx, p, false);
  bool was = ctx_set_grad(ctx, false);
  Tensor *loss = mlp_loss(ctx, p, NULL);
  EXPECT(ctx->tape.n == 0, "no-grad forward recorded %d nodes", ctx->tape.n);
  EXPECT(!loss->requires_grad, "a no-grad result must not require a gradient");
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);
  loss = mlp_loss(ctx, p, NULL);
  EXPECT(ctx->tape.n == 6, "grad-mode forward should record 6 nodes (3 linear, silu, tanh, mse), recorded %d", ctx->tape.n);
  ctx_destroy(ctx);
}

TEST(tape_gradients_accumulate_until_zeroed) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[MLP_N];
  make_mlp(ctx, p, false);
  float once[28], twice[28];
  backward(ctx, mlp_loss(ctx, p, NULL));
  tensor_to_host_f32(ctx, p[MLP_W1]->grad, once);
  ctx_step_reset(ctx);
  backward(ctx, mlp_loss(ctx, p, NULL));
  tensor_to_host_f32(ctx, p[MLP_W1]->grad, twice);
  for (int i = 0; i < 28; i++) EXPECT_NEAR(twice[i], 2.0f * once[i], 1e-6f * (1 + fabsf(once[i])));
  params_zero_grad(ctx, &p[MLP_W1], 1);
  tensor_to_host_f32(ctx, p[MLP_W1]->grad, twice);
  for (int i = 0; i < 28; i++) EXPECT(twice[i] == 0.0f, "not zeroed at %d", i);
  ctx_destroy(ctx);
}

TEST(tape_shared_input_sums_both_paths) {
  /* y = x ⊙ x + 3x  →  dy/dx = 2x + 3 (a tensor used twice gets both contributions). */
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new_persistent(ctx, DT_F32, SHAPE(6));
  x->requires_grad = true;
  float xv[6] = {-2, -0.5f, 0, 0.25f, 1, 3}, g[6];
  tensor_from_host_f32(ctx, x, xv);
  backward(ctx, op_sum(ctx, op_add(ctx, op_mul(ctx, x, x), op_scale(ctx, x, 3.0f))));
  tensor_to_host_f32(ctx, x->grad, g);
  for (int i = 0; i < 6; i++) EXPECT_NEAR(g[i], 2 * xv[i] + 3, 1e-6);
  ctx_destroy(ctx);
}

TEST(tape_detach_stops_gradient) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new_persistent(ctx, DT_F32, SHAPE(4));
  x->requires_grad = true;
  fill_uniform(ctx, x, 7, -1, 1);
  /* loss = Σ x ⊙ detach(x): the gradient is detach(x) = x, not 2x. */
  backward(ctx, op_sum(ctx, op_mul(ctx, x, tensor_detach(ctx, x))));
  float xv[4], g[4];
  tensor_to_host_f32(ctx, x, xv);
  tensor_to_host_f32(ctx, x->grad, g);
  for (int i = 0; i < 4; i++) EXPECT_NEAR(g[i], xv[i], 1e-7);
  ctx_destroy(ctx);
}

/* ---- a small conv net: conv 3x3 → SiLU → conv 3x3 stride 2 with right/bottom padding
 * (as the VAE downsamples) → tanh → flatten → linear → mse. Batch 2, odd sizes. */
enum { CN_X, CN_W1, CN_B1, CN_W2, CN_B2, CN_W3, CN_B3, CN_T, CN_N };

static Tensor *convnet_loss(Ctx *ctx, Tensor **p, void *user) {
  Tensor *h = op_silu(ctx, op_conv2d(ctx, p[CN_X], p[CN_W1], p[CN_B1], conv2d_args(1, 1))); /* (2,4,7,5) */
  Conv2dArgs down = {2, 2, 0, 1, 0, 1, 1, 1, 1};
  h = op_tanh(ctx, op_conv2d(ctx, h, p[CN_W2], p[CN_B2], down));                           /* (2,3,3,2) */
  h = op_reshape(ctx, h, SHAPE(2, 18));
  return op_mse(ctx, op_linear(ctx, h, p[CN_W3], p[CN_B3]), p[CN_T]);                      /* (2,3) */
}

static void make_convnet(Ctx *ctx, Tensor **p) {
  p[CN_X] = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 3, 7, 5));
  p[CN_X]->requires_grad = true;
  p[CN_W1] = param_new(ctx, "conv1.weight", DT_F32, SHAPE(4, 3, 3, 3), true);
  p[CN_B1] = param_new(ctx, "conv1.bias", DT_F32, SHAPE(4), true);
  p[CN_W2] = param_new(ctx, "conv2.weight", DT_F32, SHAPE(3, 4, 3, 3), true);
  p[CN_B2] = param_new(ctx, "conv2.bias", DT_F32, SHAPE(3), true);
  p[CN_W3] = param_new(ctx, "fc.weight", DT_F32, SHAPE(3, 18), true);
  p[CN_B3] = param_new(ctx, "fc.bias", DT_F32, SHAPE(3), true);
  p[CN_T] = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 3));
  for (int i = 0; i < CN_N; i++) fill_uniform(ctx, p[i], 200 + i, -1.0f, 1.0f);
}

TEST(tape_convnet_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[CN_N];
  make_convnet(ctx, p);
  EXPECT(gradcheck(ctx, convnet_loss, p, CN_N, NULL, (GradcheckOpts){0}) == 0, "conv net gradients disagree");
  ctx_destroy(ctx);
}

TEST(tape_convnet_frozen_convs) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[CN_N];
  make_convnet(ctx, p);
  param_set_trainable(ctx, p[CN_W1], false); /* already has a buffer: it must stay untouched */
  param_set_trainable(ctx, p[CN_W2], false);
  EXPECT(gradcheck(ctx, convnet_loss, p, CN_N, NULL, (GradcheckOpts){0}) == 0, "gradients with frozen convs");
  float g[108];
  tensor_to_host_f32(ctx, p[CN_W1]->grad, g);
  for (int i = 0; i < 108; i++) EXPECT(g[i] == 0.0f, "frozen conv1.weight gradient changed at %d: %g", i, g[i]);
  ctx_destroy(ctx);
}

TEST(conv2d_matches_direct_sum) {
  /* The im2col path against the definition, with dilation and asymmetric padding. */
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 3, 9, 8));
  Tensor *w = param_new(ctx, "w", DT_F32, SHAPE(5, 3, 3, 2), false);
  Tensor *b = param_new(ctx, "b", DT_F32, SHAPE(5), false);
  fill_uniform(ctx, x, 1, -1, 1), fill_uniform(ctx, w, 2, -1, 1), fill_uniform(ctx, b, 3, -1, 1);
  Conv2dArgs a = {2, 1, 1, 0, 2, 1, 2, 3, 1};
  Tensor *y = op_conv2d(ctx, x, w, b, a);
  int HO = (9 + 1 + 0 - 2 * 2 - 1) / 2 + 1, WO = (8 + 2 + 1 - 3 * 1 - 1) / 1 + 1;
  CHECK_SHAPE("test", y, 2, 5, HO, WO);
  const float *X = x->data, *Wt = w->data, *B = b->data, *Y = y->data;
  for (int n = 0; n < 2; n++)
    for (int o = 0; o < 5; o++)
      for (int i = 0; i < HO; i++)
        for (int j = 0; j < WO; j++) {
          double s = B[o];
          for (int c = 0; c < 3; c++)
            for (int kh = 0; kh < 3; kh++)
              for (int kw = 0; kw < 2; kw++) {
                int ih = i * 2 - 1 + kh * 2, iw = j - 2 + kw * 3;
                if (ih >= 0 && ih < 9 && iw >= 0 && iw < 8)
                  s += (double)Wt[((o * 3 + c) * 3 + kh) * 2 + kw] * X[((n * 3 + c) * 9 + ih) * 8 + iw];
              }
          EXPECT_NEAR(Y[((n * 5 + o) * HO + i) * WO + j], s, 1e-5);
        }
  ctx_destroy(ctx);
}

/* Groups: output channel o sees the CIN/G input channels of its group o / (COUT/G). 2-D
 * kernel, stride, dilation and asymmetric padding as above, 6 -> 4 channels in 2 groups. */
TEST(conv2d_grouped_matches_direct_sum) {
  Ctx *ctx = ctx_create_cpu(0);
  enum { N = 2, CI = 6, CO = 4, G = 2, CG = CI / G, OG = CO / G, H = 7, W = 6 };
  Tensor *x = tensor_new_persistent(ctx, DT_F32, SHAPE(N, CI, H, W));
  Tensor *w = param_new(ctx, "w", DT_F32, SHAPE(CO, CG, 3, 2), false);
  Tensor *b = param_new(ctx, "b", DT_F32, SHAPE(CO), false);
  fill_uniform(ctx, x, 4, -1, 1), fill_uniform(ctx, w, 5, -1, 1), fill_uniform(ctx, b, 6, -1, 1);
  Conv2dArgs a = {2, 1, 1, 0, 2, 1, 2, 3, G};
  Tensor *y = op_conv2d(ctx, x, w, b, a);
  int HO = (H + 1 + 0 - 2 * 2 - 1) / 2 + 1, WO = (W + 2 + 1 - 3 * 1 - 1) / 1 + 1;
  CHECK_SHAPE("test", y, N, CO, HO, WO);
  const float *X = x->data, *Wt = w->data, *B = b->data, *Y = y->data;
  for (int n = 0; n < N; n++)
    for (int o = 0; o < CO; o++)
      for (int i = 0; i < HO; i++)
        for (int j = 0; j < WO; j++) {
          double s = B[o];
          for (int c = 0; c < CG; c++)
            for (int kh = 0; kh < 3; kh++)
              for (int kw = 0; kw < 2; kw++) {
                int ih = i * 2 - 1 + kh * 2, iw = j - 2 + kw * 3, ci = o / OG * CG + c;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                  s += (double)Wt[((o * CG + c) * 3 + kh) * 2 + kw] * X[((n * CI + ci) * H + ih) * W + iw];
              }
          EXPECT_NEAR(Y[((n * CO + o) * HO + i) * WO + j], s, 1e-5);
        }
  ctx_destroy(ctx);
}

static Tensor *grouped_conv2d_loss(Ctx *ctx, Tensor **p, void *user) {
  Conv2dArgs a = {2, 1, 1, 0, 2, 1, 2, 1, 3};
  return op_sum(ctx, op_mul(ctx, op_conv2d(ctx, p[0], p[1], p[2], a), p[3]));
}

TEST(conv2d_grouped_gradients_match_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[4];
  p[0] = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 6, 7, 5));
  p[0]->requires_grad = true;
  p[1] = param_new(ctx, "w", DT_F32, SHAPE(9, 2, 3, 2), true);
  p[2] = param_new(ctx, "b", DT_F32, SHAPE(9), true);
  p[3] = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 9, 2, 7)); /* fixed weighting of y */
  for (int i = 0; i < 4; i++) fill_uniform(ctx, p[i], 300 + i, -1.0f, 1.0f);
  EXPECT(gradcheck(ctx, grouped_conv2d_loss, p, 4, NULL, (GradcheckOpts){0}) == 0, "grouped conv2d gradients");
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(conv2d_groups_must_divide_channels, 1, "conv2d 'w': groups 4 must be >= 0 and divide the 6 input channels") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(1, 6, 5, 5));
  Tensor *w = param_new(ctx, "w", DT_F32, SHAPE(4, 2, 3, 3), true);
  Conv2dArgs a = conv2d_args(1, 1);
  a.groups = 4;
  op_conv2d(ctx, x, w, NULL, a);
}

/* ---- nested backward (tape_mark / backward_since): a second loss on a detached copy of an
 * intermediate is differentiated first, and the first graph's backward afterwards still
 * gives exactly the gradients it gives alone. */
static void nested_case(Ctx *ctx, Tensor *x, Tensor *w, Tensor *v, bool nested) {
  Tensor *h = op_tanh(ctx, op_mul(ctx, x, w)); /* the "generator" (4) */
  if (nested) {
    int mark = tape_mark(ctx);
    Tensor *d = op_sum(ctx, op_square(ctx, op_mul(ctx, tensor_detach(ctx, h), v))); /* a "discriminator" loss */
    backward_since(ctx, d, mark);
    EXPECT(tape_mark(ctx) == mark, "backward_since left %d nodes, expected the %d before the mark", tape_mark(ctx),
           mark);
  }
  backward(ctx, op_sum(ctx, op_mul(ctx, h, v)));
}

TEST(tape_backward_since_keeps_the_older_graph) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new_persistent(ctx, DT_F32, SHAPE(4));
  Tensor *w = param_new(ctx, "w", DT_F32, SHAPE(4), true);
  Tensor *v = param_new(ctx, "v", DT_F32, SHAPE(4), true);
  fill_uniform(ctx, x, 11, -1, 1), fill_uniform(ctx, w, 12, -1, 1), fill_uniform(ctx, v, 13, -1, 1);
  float gw_alone[4], gw[4], gv[4], xv[4], wv[4], vv[4];
  nested_case(ctx, x, w, v, false);
  tensor_to_host_f32(ctx, w->grad, gw_alone);
  params_zero_grad(ctx, (Tensor *[]){w, v}, 2);
  nested_case(ctx, x, w, v, true);
  tensor_to_host_f32(ctx, w->grad, gw);
  tensor_to_host_f32(ctx, v->grad, gv);
  tensor_to_host_f32(ctx, x, xv), tensor_to_host_f32(ctx, w, wv), tensor_to_host_f32(ctx, v, vv);
  for (int i = 0; i < 4; i++) {
    double h = tanh((double)xv[i] * wv[i]);
    EXPECT(gw[i] == gw_alone[i], "w gradient %d: %g nested, %g alone", i, gw[i], gw_alone[i]);
    EXPECT_NEAR(gw[i], vv[i] * (1 - h * h) * xv[i], 1e-6);           /* d/dw Σ tanh(xw)·v */
    EXPECT_NEAR(gv[i], 2 * h * h * vv[i] + h, 1e-6);                 /* both losses reach v */
  }
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(op_shape_mismatch_is_fatal, 1, "linear 'fc.weight': x has shape [2, 5], its last dimension must be 4 (weight [3, 4])") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(2, 5));
  Tensor *w = param_new(ctx, "fc.weight", DT_F32, SHAPE(3, 4), true);
  op_linear(ctx, x, w, NULL); /* exits 1 naming fc.weight and both shapes */
}
