/* linear in bf16 on the CPU (kernels/cpu_bf16.h): the output and every gradient equal the
 * fp32 reference on the same bf16 values, rounded once to bf16, bit for bit. The backward
 * reads only the inputs, so nothing is rounded in between (tol 0). */
#include "bf16_check.h"
#include "test.h"

static Tensor *linear_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_linear(ctx, in[0], in[1], in[2]);
}

static Tensor *linear_nobias_fn(Ctx *ctx, Tensor *const *in, const void *arg) {
  (void)arg;
  return op_linear(ctx, in[0], in[1], NULL);
}

TEST(bf16_linear_is_the_fp32_reference_rounded_once) {
  Bf16In in[] = {{SHAPE(2, 5, 24), .grad = true}, {SHAPE(12, 24), .grad = true}, {SHAPE(12), .grad = true}};
  EXPECT(bf16_check("linear", linear_fn, NULL, 3, in, 0.0f), "linear");
  /* frozen weight: only the input gradient, as through the frozen networks */
  Bf16In frozen[] = {{SHAPE(7, 24), .grad = true}, {SHAPE(12, 24), .grad = false}};
  EXPECT(bf16_check("linear, frozen weight", linear_nobias_fn, NULL, 2, frozen, 0.0f), "frozen");
}

TEST_EXIT_MSG(bf16_linear_rejects_mixed_dtypes, 1, "one dtype, fp32 or bf16") {
  Ctx *ctx = ctx_create_cpu(1);
  Tensor *x = tensor_zeros(ctx, DT_F32, SHAPE(2, 4));
  Tensor *w = tensor_zeros(ctx, DT_BF16, SHAPE(3, 4));
  op_linear(ctx, x, w, NULL);
}
