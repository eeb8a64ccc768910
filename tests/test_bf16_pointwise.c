/* Pointwise ops, reductions, softmax and attention in bf16 on the CPU (kernels/cpu_bf16.h):
 * each output and gradient equals the fp32 reference on the same bf16 values, rounded once
 * to bf16 (fp32 outputs, the scalar losses, not rounded at all). Every backward here reads only
 * the op's inputs (attention's saved logsumexp is fp32), so nothing is rounded in between and
 * the checks are bit-exact (tol 0), except softmax's, whose backward reads its own rounded
 * output (see there). */
#include "bf16_check.h"
#include "test.h"

/* ---------------------------------------------------------------- activations */

static Tensor *act_fn(Ctx *ctx, Tensor *const *in, const void *arg) { return op_act(ctx, in[0], *(const Act *)arg); }

static Tensor *leaky_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_leaky_relu(ctx, in[0], *(const float *)arg);
}

static Tensor *geglu_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_geglu(ctx, in[0]);
}

TEST(bf16_activations_are_the_fp32_reference_rounded_once) {
  /* [-4, 4): the saturating and the linear parts of silu, tanh and gelu */
  Bf16In x[] = {{SHAPE(2, 3, 37), .grad = true, .lo = -4.0f, .hi = 4.0f}};
  for (Act a = 0; a < ACT_COUNT; a++) EXPECT(bf16_check(act_name(a), act_fn, &a, 1, x, 0.0f), "%s", act_name(a));
  const float slope = 0.2f; /* the discriminators' slope, not op_act's default */
  EXPECT(bf16_check("leaky_relu 0.2", leaky_fn, &slope, 1, x, 0.0f), "leaky_relu");
  Bf16In g[] = {{SHAPE(2, 5, 2 * 24), .grad = true, .lo = -3.0f, .hi = 3.0f}};
  EXPECT(bf16_check("geglu", geglu_fn, NULL, 1, g, 0.0f), "geglu");
}

/* ---------------------------------------------------------------- elementwise */

typedef struct {
  Binary kind;
  bool scaled; /* op_add_scaled(a, b, alpha, beta) instead of kind */
  float alpha, beta;
} BinArg;

static Tensor *binary_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const BinArg *b = arg;
  return b->scaled ? op_add_scaled(ctx, in[0], in[1], b->alpha, b->beta) : op_binary(ctx, in[0], in[1], b->kind);
}

static Tensor *scale_fn(Ctx *ctx, Tensor *const *in, const void *arg) { return op_scale(ctx, in[0], *(const float *)arg); }

TEST(bf16_binary_ops_are_the_fp32_reference_rounded_once) {
  /* The shapes the models broadcast: same shape (the flat path), a feature map plus a
   * per-channel embedding, tokens times a channel vector, b broadcast on the left of a, and
   * both operands broadcast (the first ndims sizes of each row). */
  const int64_t shapes[][2][4] = {
      {{3, 4, 5, 1}, {3, 4, 5, 1}},
      {{2, 3, 4, 5}, {2, 3, 1, 1}},
      {{2, 6, 7, 1}, {7, 0, 0, 0}},
      {{1, 6, 7, 1}, {3, 6, 7, 1}},
      {{2, 1, 5, 1}, {1, 4, 1, 1}},
  };
  const int ndims[][2] = {{3, 3}, {4, 4}, {3, 1}, {3, 3}, {3, 3}};
  const BinArg args[] = {{.kind = BIN_ADD}, {.kind = BIN_SUB}, {.kind = BIN_MUL}, {.scaled = true, .alpha = 0.70710678f, .beta = 0.70710678f},
                         {.scaled = true, .alpha = 1.5f, .beta = -0.25f}};
  const char *names[] = {"add", "sub", "mul", "add_scaled (f + x)/sqrt2", "add_scaled 1.5, -0.25"};
  for (int s = 0; s < 5; s++)
    for (int k = 0; k < 5; k++) {
      Bf16In in[] = {{ndims[s][0], shapes[s][0], .grad = true}, {ndims[s][1], shapes[s][1], .grad = true}};
      char name[96];
      snprintf(name, sizeof name, "%s, shapes #%d", names[k], s);
      EXPECT(bf16_check(name, binary_fn, &args[k], 2, in, 0.0f), "%s", name);
    }
  Bf16In frozen[] = {{SHAPE(2, 3, 4, 5), .grad = true}, {SHAPE(2, 3, 1, 1), .grad = false}}; /* a frozen buffer as b */
  EXPECT(bf16_check("mul, frozen b", binary_fn, &args[2], 2, frozen, 0.0f), "mul frozen b");
  const float s = -0.375f;
  Bf16In x[] = {{SHAPE(4, 33), .grad = true}};
  EXPECT(bf16_check("scale", scale_fn, &s, 1, x, 0.0f), "scale");
}

/* ---------------------------------------------------------------- unary math, div, losses */

static Tensor *unary_fn(Ctx *ctx, Tensor *const *in, const void *arg) { return op_unary(ctx, in[0], *(const Unary *)arg); }

static Tensor *clamp_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_clamp(ctx, in[0], -0.5f, 0.75f);
}

static Tensor *div_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_div(ctx, in[0], in[1]);
}

static Tensor *pseudo_huber_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_pseudo_huber(ctx, in[0], in[1], 0.03f);
}

static Tensor *hinge_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_hinge(ctx, in[0], *(const float *)arg);
}

TEST(bf16_math_is_the_fp32_reference_rounded_once) {
  const Unary us[] = {UN_EXP, UN_LOG, UN_SQRT, UN_SQUARE, UN_ABS};
  for (int i = 0; i < 5; i++) {
    bool positive = us[i] == UN_LOG || us[i] == UN_SQRT; /* their domain */
    Bf16In x[] = {{SHAPE(3, 41), .grad = true, .lo = positive ? 0.05f : -2.0f, .hi = 2.0f}};
    EXPECT(bf16_check(unary_name(us[i]), unary_fn, &us[i], 1, x, 0.0f), "%s", unary_name(us[i]));
  }
  Bf16In x[] = {{SHAPE(3, 41), .grad = true}};
  EXPECT(bf16_check("clamp", clamp_fn, NULL, 1, x, 0.0f), "clamp");
  /* b away from 0; flat, b per channel, and a broadcast against b */
  Bf16In flat[] = {{SHAPE(4, 9), .grad = true}, {SHAPE(4, 9), .grad = true, .lo = 0.5f, .hi = 2.0f}};
  EXPECT(bf16_check("div", div_fn, NULL, 2, flat, 0.0f), "div");
  Bf16In chan[] = {{SHAPE(2, 5, 9), .grad = true}, {SHAPE(9), .grad = true, .lo = 0.5f, .hi = 2.0f}};
  EXPECT(bf16_check("div by a channel vector", div_fn, NULL, 2, chan, 0.0f), "div chan");
  Bf16In both[] = {{SHAPE(2, 1, 9), .grad = true}, {SHAPE(1, 5, 9), .grad = true, .lo = 0.5f, .hi = 2.0f}};
  EXPECT(bf16_check("div, both broadcast", div_fn, NULL, 2, both, 0.0f), "div both");
  /* the losses: an fp32 scalar from bf16 operands, bf16 gradients */
  Bf16In ab[] = {{SHAPE(2, 4, 17), .grad = true}, {SHAPE(2, 4, 17), .grad = true}};
  EXPECT(bf16_check("pseudo_huber", pseudo_huber_fn, NULL, 2, ab, 0.0f), "pseudo_huber");
  Bf16In logits[] = {{SHAPE(3, 29), .grad = true, .lo = -2.5f, .hi = 2.5f}};
  for (float sign = -1.0f; sign <= 1.0f; sign += 2.0f)
    EXPECT(bf16_check("hinge", hinge_fn, &sign, 1, logits, 0.0f), "hinge %g", (double)sign);
}

/* ---------------------------------------------------------------- reductions */

typedef enum { R_SUM, R_MEAN, R_MSE } Scalar;

static Tensor *scalar_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  Scalar r = *(const Scalar *)arg;
  return r == R_SUM ? op_sum(ctx, in[0]) : r == R_MEAN ? op_mean(ctx, in[0]) : op_mse(ctx, in[0], in[1]);
}

typedef struct {
  int dim;
  bool keepdim, mean;
} DimArg;

static Tensor *dim_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const DimArg *d = arg;
  return d->mean ? op_mean_dim(ctx, in[0], d->dim, d->keepdim) : op_sum_dim(ctx, in[0], d->dim, d->keepdim);
}

TEST(bf16_reductions_are_the_fp32_reference_rounded_once) {
  Bf16In ab[] = {{SHAPE(3, 5, 7), .grad = true}, {SHAPE(3, 5, 7), .grad = true}};
  const Scalar rs[] = {R_SUM, R_MEAN, R_MSE};
  const char *names[] = {"sum", "mean", "mse"};
  for (int i = 0; i < 3; i++) /* fp32 scalars (reduce.cu), bf16 gradients */
    EXPECT(bf16_check(names[i], scalar_fn, &rs[i], i == R_MSE ? 2 : 1, ab, 0.0f), "%s", names[i]);
  const DimArg dims[] = {{0, false, false}, {-1, true, false}, {1, false, true}, {-1, false, true}, {2, true, true}};
  Bf16In x[] = {{SHAPE(3, 6, 5), .grad = true}};
  for (int i = 0; i < 5; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s dim %d keepdim %d", dims[i].mean ? "mean_dim" : "sum_dim", dims[i].dim,
             dims[i].keepdim);
    EXPECT(bf16_check(name, dim_fn, &dims[i], 1, x, 0.0f), "%s", name);
  }
}

/* ---------------------------------------------------------------- softmax */

static Tensor *softmax_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_softmax(ctx, in[0]);
}

TEST(bf16_softmax_is_the_fp32_reference_rounded_once) {
  Bf16In fwd[] = {{SHAPE(4, 3, 19), .lo = -4.0f, .hi = 4.0f}};
  EXPECT(bf16_check("softmax forward", softmax_fn, NULL, 1, fwd, 0.0f), "softmax forward");
  /* The backward reads y, which the bf16 run stores rounded: y_j is off by at most half a
   * step (2^-9·y_j), which moves dx_j = y_j·(dy_j − Σ_k dy_k·y_k), through the factor y_j and
   * through the sum, by at most 2^-9·y_j·(|dy_j − Σ| + max|dy|): a couple of 2^-9 of max|dx|
   * for these rows. That shift can carry dx_j across a rounding boundary of its own, so the
   * stored result may differ by one whole bf16 step (up to 2^-7 of |dx_j|). Step plus shift:
   * 2^-7 + 2·2^-9 < 2^-6. */
  Bf16In x[] = {{SHAPE(4, 3, 19), .grad = true, .lo = -4.0f, .hi = 4.0f}};
  EXPECT(bf16_check("softmax", softmax_fn, NULL, 1, x, 0x1p-6f), "softmax");
}

/* ---------------------------------------------------------------- attention */

typedef struct {
  int NH;
  bool mask;      /* in[3] is the key mask */
  int chunk_rows; /* op_attention_chunked (on the CPU the same reference) */
} AttnArg;

static Tensor *attention_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const AttnArg *a = arg;
  return op_attention_chunked(ctx, in[0], in[1], in[2], a->NH, a->mask ? in[3] : NULL, a->chunk_rows);
}

TEST(bf16_attention_is_the_fp32_reference_rounded_once) {
  /* self-attention with heads (the UNet), D = 8 */
  const AttnArg self = {.NH = 2};
  Bf16In s[] = {{SHAPE(2, 11, 16), .grad = true}, {SHAPE(2, 11, 16), .grad = true}, {SHAPE(2, 11, 16), .grad = true}};
  EXPECT(bf16_check("attention, 2 heads", attention_fn, &self, 3, s, 0.0f), "self");
  /* cross-attention to padded text: TK ≠ TQ, an fp32 key mask (1 keep, 0 pad) that masks
   * every key of batch element 1 but none of element 0's first five */
  const float mask[2 * 7] = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const AttnArg cross = {.NH = 4, .mask = true};
  Bf16In c[] = {{SHAPE(2, 9, 32), .grad = true},
                {SHAPE(2, 7, 32), .grad = true},
                {SHAPE(2, 7, 32), .grad = true},
                {SHAPE(2, 7), .keep_f32 = true, .values = mask}};
  EXPECT(bf16_check("cross-attention, key mask", attention_fn, &cross, 4, c, 0.0f), "cross");
  /* one head over more than the 256 query rows of one CPU block (the VAE's mid-block form),
   * through the chunked entry; k without a gradient */
  const AttnArg vae = {.NH = 1, .chunk_rows = 64};
  Bf16In v[] = {{SHAPE(1, 300, 24), .grad = true}, {SHAPE(1, 300, 24), .grad = false},
                 {SHAPE(1, 300, 24), .grad = true}};
  EXPECT(bf16_check("attention, one head, 300 rows", attention_fn, &vae, 3, v, 0.0f), "vae");
}

/* ---------------------------------------------------------------- dtype mixes the GPU rejects */

TEST_EXIT_MSG(bf16_attention_rejects_mixed_dtypes, 1, "attention: q bf16, k fp32, v bf16: one dtype, fp32 or bf16") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *q = tensor_zeros(ctx, DT_BF16, SHAPE(1, 4, 8)), *k = tensor_zeros(ctx, DT_F32, SHAPE(1, 4, 8));
  op_attention(ctx, q, k, q, 1, NULL);
}

TEST_EXIT_MSG(bf16_attention_key_mask_stays_fp32, 1, "key_mask is bf16, expected fp32") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *q = tensor_zeros(ctx, DT_BF16, SHAPE(1, 4, 8));
  op_attention(ctx, q, q, q, 1, tensor_zeros(ctx, DT_BF16, SHAPE(1, 4)));
}

TEST_EXIT_MSG(bf16_mse_rejects_mixed_dtypes, 1, "mse: dtypes bf16 and fp32 differ") {
  Ctx *ctx = ctx_create_cpu(1);
  op_mse(ctx, tensor_zeros(ctx, DT_BF16, SHAPE(3)), tensor_zeros(ctx, DT_F32, SHAPE(3)));
}
