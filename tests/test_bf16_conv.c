/* matmul, conv2d, conv1d, conv_transpose1d, upsample, embedding and the timestep embedding in
 * bf16 on the CPU (kernels/cpu_bf16.h): the output and every gradient equal the fp32
 * reference on the same bf16 values, rounded once to bf16, bit for bit. Every backward here
 * reads only the op's inputs and the output gradient, never its rounded output, so nothing is
 * rounded in between (tol 0). Variants as the models use them: batched, transposed and shared
 * matmuls; padded, strided, asymmetric, grouped, dilated and bias-free convolutions; circular
 * conv1d; HiFi-GAN's conv_transpose1d with output padding; repeated embedding ids. */
#include "bf16_check.h"
#include "test.h"

/* ------------------------------------------------------------------ matmul */

typedef struct {
  bool ta, tb;
} MatmulFlags;

static Tensor *matmul_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const MatmulFlags *f = arg;
  return op_matmul(ctx, in[0], in[1], f->ta, f->tb);
}

TEST(bf16_matmul_is_the_fp32_reference_rounded_once) {
  Bf16In batched[] = {{SHAPE(2, 3, 5, 4), .grad = true}, {SHAPE(2, 3, 4, 6), .grad = true}};
  EXPECT(bf16_check("matmul", matmul_fn, &(MatmulFlags){false, false}, 2, batched, 0.0f), "batched");
  Bf16In trans[] = {{SHAPE(3, 4, 5), .grad = true}, {SHAPE(3, 6, 4), .grad = true}};
  EXPECT(bf16_check("matmul aᵀ bᵀ", matmul_fn, &(MatmulFlags){true, true}, 2, trans, 0.0f), "transposed");
  /* a 2-D b shared by the batch: folded into one GEMM, and (with aᵀ) accumulated per matrix */
  Bf16In shared[] = {{SHAPE(2, 7, 8), .grad = true}, {SHAPE(5, 8), .grad = true}};
  EXPECT(bf16_check("matmul shared bᵀ", matmul_fn, &(MatmulFlags){false, true}, 2, shared, 0.0f), "shared");
  Bf16In shared_ta[] = {{SHAPE(3, 8, 7), .grad = true}, {SHAPE(8, 5), .grad = true}};
  EXPECT(bf16_check("matmul aᵀ shared b", matmul_fn, &(MatmulFlags){true, false}, 2, shared_ta, 0.0f), "shared aᵀ");
}

/* ------------------------------------------------------------------ conv2d */

static Tensor *conv2d_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_conv2d(ctx, in[0], in[1], in[2], *(const Conv2dArgs *)arg);
}

static Tensor *conv2d_nobias_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_conv2d(ctx, in[0], in[1], NULL, *(const Conv2dArgs *)arg);
}

TEST(bf16_conv2d_is_the_fp32_reference_rounded_once) {
  /* the UNet's and VAE's 3×3, padding 1 */
  Bf16In same[] = {{SHAPE(2, 3, 6, 5), .grad = true}, {SHAPE(4, 3, 3, 3), .grad = true}, {SHAPE(4), .grad = true}};
  EXPECT(bf16_check("conv2d 3x3", conv2d_fn, &(Conv2dArgs){1, 1, 1, 1, 1, 1, 1, 1, 1}, 3, same, 0.0f), "3x3");
  /* the VAE's downsampling: stride 2, padding only right and bottom */
  Bf16In down[] = {{SHAPE(1, 3, 7, 6), .grad = true}, {SHAPE(3, 3, 3, 3), .grad = true}, {SHAPE(3), .grad = true}};
  EXPECT(bf16_check("conv2d down", conv2d_fn, &(Conv2dArgs){2, 2, 0, 1, 0, 1, 1, 1, 1}, 3, down, 0.0f), "down");
  /* AudioMAE's patch embedding: kernel = stride, frozen weight */
  Bf16In patch[] = {{SHAPE(1, 1, 8, 12), .grad = true}, {SHAPE(5, 1, 4, 4), .grad = false}, {SHAPE(5), .grad = false}};
  EXPECT(bf16_check("conv2d patch", conv2d_fn, &(Conv2dArgs){4, 4, 0, 0, 0, 0, 1, 1, 1}, 3, patch, 0.0f), "patch");
  /* grouped and dilated, no bias (the discriminators) */
  Bf16In grouped[] = {{SHAPE(2, 4, 9, 3), .grad = true}, {SHAPE(6, 2, 3, 1), .grad = true}};
  EXPECT(bf16_check("conv2d grouped", conv2d_nobias_fn, &(Conv2dArgs){3, 1, 2, 2, 0, 0, 2, 1, 2}, 2, grouped, 0.0f),
         "grouped");
}

/* ------------------------------------------------------------------ conv1d and conv_transpose1d */

static Tensor *conv1d_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_conv1d(ctx, in[0], in[1], in[2], *(const Conv1dArgs *)arg);
}

static Tensor *conv1d_nobias_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  return op_conv1d(ctx, in[0], in[1], NULL, *(const Conv1dArgs *)arg);
}

TEST(bf16_conv1d_is_the_fp32_reference_rounded_once) {
  Bf16In dense[] = {{SHAPE(2, 3, 11), .grad = true}, {SHAPE(4, 3, 3), .grad = true}, {SHAPE(4), .grad = true}};
  EXPECT(bf16_check("conv1d dilated", conv1d_fn, &(Conv1dArgs){1, 3, 3, 3, false, 1}, 3, dense, 0.0f), "dilated");
  EXPECT(bf16_check("conv1d circular", conv1d_fn, &(Conv1dArgs){1, 2, 1, 1, true, 1}, 3, dense, 0.0f), "circular");
  Bf16In grouped[] = {{SHAPE(2, 4, 13), .grad = true}, {SHAPE(6, 2, 5), .grad = true}};
  EXPECT(bf16_check("conv1d grouped", conv1d_nobias_fn, &(Conv1dArgs){2, 2, 2, 1, false, 2}, 2, grouped, 0.0f),
         "grouped");
}

typedef struct {
  int stride, padding, output_padding, dilation;
  bool bias;
} TransposeArgs;

static Tensor *conv_transpose1d_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const TransposeArgs *a = arg;
  return op_conv_transpose1d(ctx, in[0], in[1], a->bias ? in[2] : NULL, a->stride, a->padding, a->output_padding,
                             a->dilation);
}

TEST(bf16_conv_transpose1d_is_the_fp32_reference_rounded_once) {
  /* HiFi-GAN's upsampling: kernel 2·stride, padding stride/2, plus an output padding */
  Bf16In up[] = {{SHAPE(2, 4, 7), .grad = true}, {SHAPE(4, 3, 8), .grad = true}, {SHAPE(3), .grad = true}};
  EXPECT(bf16_check("conv_transpose1d", conv_transpose1d_fn, &(TransposeArgs){4, 2, 1, 1, true}, 3, up, 0.0f), "up");
  EXPECT(bf16_check("conv_transpose1d no bias", conv_transpose1d_fn, &(TransposeArgs){3, 1, 0, 2, false}, 2, up,
                    0.0f),
         "no bias");
}

/* ------------------------------------------------------------------ upsample, embeddings */

static Tensor *upsample_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_upsample_nearest2x(ctx, in[0]);
}

static Tensor *embedding_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_embedding(ctx, in[0], in[1]);
}

TEST(bf16_upsample_and_embedding_are_the_fp32_reference_rounded_once) {
  Bf16In x[] = {{SHAPE(2, 3, 4, 5), .grad = true}};
  EXPECT(bf16_check("upsample_nearest2x", upsample_fn, NULL, 1, x, 0.0f), "upsample");
  /* repeated ids: a table row's gradient sums several rows of dy in fp32, rounded once */
  static const float ids[] = {3, 0, 3, 5, 1, 3, 0, 2};
  Bf16In emb[] = {{SHAPE(6, 7), .grad = true}, {SHAPE(2, 4), .is_i32 = true, .values = ids}};
  EXPECT(bf16_check("embedding", embedding_fn, NULL, 2, emb, 0.0f), "embedding");
}

typedef struct {
  int dim;
  bool flip;
  float shift;
} TimestepArgs;

/* in[1] is only a marker: its dtype (fp32 in the reference run, bf16 in the bf16 run) is the
 * output's, while the timesteps stay fp32 in both. */
static Tensor *timestep_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  const TimestepArgs *a = arg;
  return op_timestep_embedding_as(ctx, in[0], a->dim, 10000.0f, a->flip, a->shift, in[1]->dtype);
}

TEST(bf16_timestep_embedding_is_the_fp32_features_rounded_once) {
  static const float t[] = {0, 1, 17, 250, 999};
  Bf16In in[] = {{SHAPE(5), .keep_f32 = true, .values = t}, {SHAPE(1), .grad = false}};
  EXPECT(bf16_check("timestep_embedding", timestep_fn, &(TimestepArgs){32, true, 0.0f}, 2, in, 0.0f), "flip");
  EXPECT(bf16_check("timestep_embedding odd", timestep_fn, &(TimestepArgs){13, false, 1.0f}, 2, in, 0.0f), "odd");
}

TEST_EXIT_MSG(bf16_conv2d_rejects_mixed_dtypes, 1, "one dtype, fp32 or bf16") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *x = tensor_zeros(ctx, DT_BF16, SHAPE(1, 2, 4, 4));
  Tensor *w = tensor_zeros(ctx, DT_F32, SHAPE(3, 2, 3, 3));
  op_conv2d(ctx, x, w, NULL, conv2d_args(1, 1));
}
