/* Tensors and the context: dtype conversions against hand-worked bit patterns, shape
 * bookkeeping, arena reuse, device specs. */
#include "kernels/context.h"
#include "kernels/ops.h"
#include "test.h"

static float bits_f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

TEST(bf16_rounds_to_nearest_even) {
  EXPECT(f32_to_bf16(1.0f) == 0x3f80, "1.0");
  EXPECT(f32_to_bf16(-2.0f) == 0xc000, "-2.0");
  /* 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to the even mantissa (1.0). */
  EXPECT(f32_to_bf16(bits_f(0x3f808000)) == 0x3f80, "tie down to even");
  /* 1.0078125 + 2^-8 is halfway with an odd lower neighbour: rounds up. */
  EXPECT(f32_to_bf16(bits_f(0x3f818000)) == 0x3f82, "tie up to even");
  EXPECT(f32_to_bf16(bits_f(0x3f808001)) == 0x3f81, "just above the tie rounds up");
  EXPECT(f32_to_bf16(bits_f(0x7f7fffff)) == 0x7f80, "FLT_MAX rounds to inf");
  EXPECT((f32_to_bf16(NAN) & 0x7fff) > 0x7f80, "NaN stays NaN");
  for (uint32_t h = 0; h < 0x10000; h += 7) {
    if ((h & 0x7f80) == 0x7f80) continue; /* inf/NaN */
    EXPECT(f32_to_bf16(bf16_to_f32((uint16_t)h)) == h, "bf16 0x%04x does not round-trip", h);
  }
}

TEST(f16_conversion_matches_ieee_half) {
  EXPECT(f32_to_f16(1.0f) == 0x3c00, "1.0");
  EXPECT(f32_to_f16(65504.0f) == 0x7bff, "max half");
  EXPECT(f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to inf");
  EXPECT(f32_to_f16(ldexpf(1.0f, -24)) == 0x0001, "smallest subnormal");
  EXPECT(f32_to_f16(ldexpf(1.0f, -25)) == 0x0000, "half the smallest subnormal ties to zero");
  EXPECT(f32_to_f16(ldexpf(3.0f, -26)) == 0x0001, "0.75 of the smallest subnormal rounds up");
  EXPECT(f32_to_f16(-0.0f) == 0x8000, "-0");
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
    EXPECT(f32_to_f16(f16_to_f32((uint16_t)h)) == h, "half 0x%04x does not round-trip", h);
  }
}

TEST(tensor_shapes_and_copies) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *t = tensor_new(ctx, DT_F32, SHAPE(2, 3, 4));
  EXPECT(t->numel == 24 && t->ndim == 3, "numel %lld ndim %d", (long long)t->numel, t->ndim);
  EXPECT(!strcmp(TENSOR_SHAPE_STR(t), "[2, 3, 4]"), "shape string %s", TENSOR_SHAPE_STR(t));
  float v[24], back[24];
  for (int i = 0; i < 24; i++) v[i] = 0.1f * (float)i - 1.0f;
  tensor_from_host_f32(ctx, t, v);
  Tensor *b = tensor_new(ctx, DT_BF16, SHAPE(2, 3, 4));
  tensor_copy(ctx, b, t);
  tensor_to_host_f32(ctx, b, back);
  for (int i = 0; i < 24; i++) EXPECT(back[i] == bf16_to_f32(f32_to_bf16(v[i])), "bf16 copy at %d", i);
  ctx_destroy(ctx);
}

TEST(arena_folds_to_one_block_and_reuses_it) {
  Ctx *ctx = ctx_create_cpu(0);
  /* Step 1 overflows the first block several times. */
  void *first = NULL;
  for (int i = 0; i < 5; i++) {
    void *p = ctx_alloc_act(ctx, (size_t)40 << 20);
    if (!first) first = p;
  }
  size_t hw = ctx->act.high_water;
  EXPECT(hw >= (size_t)200 << 20, "high water %zu", hw);
  ctx_step_reset(ctx);
  /* Step 2 of the same shape fits in one block: no new block appears. */
  void *again = ctx_alloc_act(ctx, (size_t)40 << 20);
  for (int i = 1; i < 5; i++) ctx_alloc_act(ctx, (size_t)40 << 20);
  EXPECT(ctx->act.high_water == hw, "high water grew to %zu", ctx->act.high_water);
  ctx_step_reset(ctx);
  EXPECT(ctx_alloc_act(ctx, 16) == again, "after reset the arena restarts at its base");
  EXPECT(((uintptr_t)again & 255) == 0, "activations are 256-byte aligned");
  ctx_destroy(ctx);
}

TEST(device_spec_parsing) {
  DeviceSpec s;
  McmErr err;
  EXPECT(device_spec_parse("cpu", &s, &err) == 0 && s.kind == DEV_CPU, "cpu");
  EXPECT(device_spec_parse("cuda", &s, &err) == 0 && s.kind == DEV_CUDA && s.index == -1, "cuda");
  EXPECT(device_spec_parse("cuda:3", &s, &err) == 0 && s.kind == DEV_CUDA && s.index == 3, "cuda:3");
  EXPECT(device_spec_parse("auto", &s, &err) == 0 && s.is_auto, "auto");
  const char *bad[] = {"gpu", "cuda:", "cuda:-1", "cuda:1x", "CPU", ""};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    EXPECT(device_spec_parse(bad[i], &s, &err) == -1, "'%s' accepted", bad[i]);
    EXPECT_STR_CONTAINS(err.msg, "auto, cpu, cuda, cuda:N");
  }
}

TEST(cuda_request_without_gpu_falls_back_to_cpu) {
  if (cuda_device_count() > 0) return; /* the GPU suite covers this machine */
  DeviceSpec s = {DEV_CUDA, -1, false};
  McmErr err;
  Ctx *ctx = ctx_create(&s, 1, &err);
  ASSERT(ctx, "no context: %s", err.msg);
  EXPECT(ctx->dev == DEV_CPU, "fell back to %d", ctx->dev);
  ctx_destroy(ctx);
}

/* bf16 runs on the CPU (kernels/cpu_bf16.h), but an op's operands share one dtype, as on the GPU. */
TEST_EXIT_MSG(cpu_op_on_mixed_dtypes_is_a_clear_error, 1, "add: dtypes bf16 and fp32 differ") {
  Ctx *ctx = ctx_create_cpu(0);
  op_add(ctx, tensor_zeros(ctx, DT_BF16, SHAPE(4)), tensor_zeros(ctx, DT_F32, SHAPE(4)));
}

TEST_EXIT_MSG(backward_needs_a_scalar_loss, 1, "the loss must have one element, it has shape [4]") {
  Ctx *ctx = ctx_create_cpu(0);
  backward(ctx, tensor_new(ctx, DT_F32, SHAPE(4)));
}
