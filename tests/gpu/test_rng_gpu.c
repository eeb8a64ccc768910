/* The CUDA RNG fill (kernels/rng.cu) against the CPU fill (kernels/rng.c), bit for bit:
 * uniform and normal, fp32 and bf16, several seeds and offsets (including a counter that
 * crosses into its high word and one that wraps), sizes with ragged tails, unaligned
 * buffers (the kernel's scalar-store path) and 1e7 elements. The device buffer is poisoned
 * with 0xFF before each fill and has guard elements on both sides, so an element the kernel
 * skips or a write past the end fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/context.h"
#include "kernels/cuda_api.h"
#include "kernels/rng.h"
#include "tests/test.h"

/* A CUDA context on device 0, or NULL (after saying so) when no GPU is present. */
static Ctx *gpu_ctx_or_skip(void) {
  if (cuda_device_count() == 0) {
    printf("    skipped: no GPU\n");
    return NULL;
  }
  McmErr err = {{0}};
  DeviceSpec spec = {.kind = DEV_CUDA, .index = 0, .is_auto = false};
  Ctx *ctx = ctx_create(&spec, 0, &err);
  ASSERT(ctx != NULL, "ctx_create(cuda:0): %s", err.msg);
  ASSERT(ctx->dev == DEV_CUDA, "ctx_create(cuda:0) fell back to the CPU");
  return ctx;
}

enum { GUARD = 8 }; /* poisoned elements on each side of the filled range */

/* Fills n elements of dtype dt, starting `shift` elements into a poisoned device buffer,
 * from (seed, offset); compares with the CPU fill. Returns the number of failures. */
static int check_fill(Ctx *ctx, bool normal, DType dt, uint64_t seed, uint64_t offset, int64_t n, int shift) {
  const size_t es = dtype_size(dt);
  const int64_t lead = GUARD + shift, total = lead + n + GUARD;
  const size_t bytes = (size_t)total * es;
  uint8_t *dev = cuda_alloc(bytes);
  cuda_memset(ctx, dev, 0xFF, bytes);

  Tensor t;
  memset(&t, 0, sizeof t);
  tensor_init_header(&t, dt, DEV_CUDA, 1, &n);
  t.data = dev + (size_t)lead * es;
  ctx->seed = seed;
  ctx->rng_offset = offset;
  if (normal) {
    rng_normal(ctx, &t);
  } else {
    rng_uniform(ctx, &t);
  }
  uint8_t *got = malloc(bytes);
  cuda_d2h(ctx, got, dev, bytes);
  ctx_sync(ctx);
  cuda_free(dev);

  /* expected bytes: poison, the CPU fill (converted for bf16), poison */
  uint8_t *want = malloc(bytes);
  memset(want, 0xFF, bytes);
  float *ref = malloc((size_t)(n > 0 ? n : 1) * sizeof *ref);
  if (normal) {
    rng_normal_host(seed, offset, ref, n);
  } else {
    rng_uniform_host(seed, offset, ref, n);
  }
  if (dt == DT_F32) {
    memcpy(want + (size_t)lead * es, ref, (size_t)n * es);
  } else {
    uint16_t *w = (uint16_t *)(want + (size_t)lead * es);
    for (int64_t i = 0; i < n; i++) w[i] = f32_to_bf16(ref[i]);
  }

  int fails = 0;
  const char *what = normal ? "normal" : "uniform";
  if (ctx->rng_offset != offset + rng_blocks(n)) {
    test_fail(__FILE__, __LINE__, "%s %s n=%lld: rng_offset advanced to %llu, expected %llu", what, dtype_name(dt),
              (long long)n, (unsigned long long)ctx->rng_offset, (unsigned long long)(offset + rng_blocks(n)));
    fails++;
  }
  if (memcmp(got, want, bytes) != 0) {
    int64_t i = 0;
    while (memcmp(got + i * es, want + i * es, es) == 0) i++;
    uint32_t g = 0, w = 0;
    memcpy(&g, got + i * es, es);
    memcpy(&w, want + i * es, es);
    const char *where = i < lead ? "before the tensor (written out of bounds)"
                        : i >= lead + n ? "after the tensor (written out of bounds)"
                                        : "inside the tensor";
    test_fail(__FILE__, __LINE__,
              "%s %s seed=%llx offset=%llx n=%lld shift=%d: first difference at element %lld, %s: GPU %0*x, CPU %0*x",
              what, dtype_name(dt), (unsigned long long)seed, (unsigned long long)offset, (long long)n, shift,
              (long long)(i - lead), where, (int)es * 2, g, (int)es * 2, w);
    fails++;
  }
  free(got);
  free(want);
  free(ref);
  return fails;
}

/* Every combination of these seeds, offsets, sizes and alignments; stops at the first few
 * failures so a broken kernel does not print thousands of lines. */
static void check_many(bool normal, DType dt) {
  Ctx *ctx = gpu_ctx_or_skip();
  if (!ctx) return;
  const uint64_t seeds[] = {0, 1, 0x0123456789abcdefull, UINT64_MAX};
  const uint64_t offsets[] = {0, 7, 0xfffffffeull /* counter crosses into word 1 */,
                              UINT64_MAX - 1 /* counter wraps to block 0 */};
  const int64_t sizes[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255, 256, 1023, 1025, 65537, 1000003};
  int fails = 0;
  for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++)
    for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++)
      for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
        for (int shift = 0; shift < 2; shift++) /* shift 1: misaligned for vector stores */
          if (fails < 5) fails += check_fill(ctx, normal, dt, seeds[s], offsets[o], sizes[z], shift);
  /* large: the grid-stride loop runs more than one lap when the grid is capped */
  if (fails < 5) fails += check_fill(ctx, normal, dt, 2024, 12345, 10000000, 0);
  if (fails < 5) fails += check_fill(ctx, normal, dt, 99, 0, 10000001, 1);
  ctx_destroy(ctx);
}

TEST(rng_gpu_uniform_f32_matches_cpu) { check_many(false, DT_F32); }
TEST(rng_gpu_normal_f32_matches_cpu) { check_many(true, DT_F32); }
TEST(rng_gpu_uniform_bf16_matches_cpu) { check_many(false, DT_BF16); }
TEST(rng_gpu_normal_bf16_matches_cpu) { check_many(true, DT_BF16); }

/* Through the ordinary entry points: tensors from the GPU context's arena, consecutive draws
 * advancing rng_offset, and a CPU context with the same seed giving the same numbers. */
TEST(rng_gpu_context_stream_matches_cpu_context) {
  Ctx *gpu = gpu_ctx_or_skip();
  if (!gpu) return;
  gpu->seed = 31337;
  gpu->rng_offset = 0;
  Ctx *cpu = ctx_create_cpu(31337);
  const int64_t shapes[3][3] = {{3, 5, 7}, {2, 2, 2}, {1, 1, 4097}};
  for (int k = 0; k < 3; k++) {
    bool normal = k != 1;
    Tensor *tg = tensor_new(gpu, DT_F32, 3, shapes[k]), *tc = tensor_new(cpu, DT_F32, 3, shapes[k]);
    if (normal) {
      rng_normal(gpu, tg), rng_normal(cpu, tc);
    } else {
      rng_uniform(gpu, tg), rng_uniform(cpu, tc);
    }
    float *h = malloc((size_t)tg->numel * sizeof *h);
    tensor_to_host_f32(gpu, tg, h);
    EXPECT(memcmp(h, tc->data, (size_t)tg->numel * sizeof *h) == 0, "draw %d differs between GPU and CPU contexts", k);
    EXPECT(gpu->rng_offset == cpu->rng_offset, "draw %d: GPU offset %llu, CPU offset %llu", k,
           (unsigned long long)gpu->rng_offset, (unsigned long long)cpu->rng_offset);
    free(h);
  }
  EXPECT(gpu->rng_offset == 27 + 2 + 1025, "offset after three draws: %llu", (unsigned long long)gpu->rng_offset);
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}
