/* CUDA fill for mcm's RNG: one thread per Philox counter block, writing its four outputs
 * (fewer in the ragged last block). The per-element arithmetic is philox.h's, the same
 * code the CPU fill runs, so both give identical bits; tests/gpu/test_rng_gpu.c checks it.
 *
 * Version 1 (the only one): grid-stride loop, vector stores (16 B fp32, 8 B bf16) for
 * full blocks when the buffer is aligned for them, scalar stores otherwise. */
#include <stdint.h>

#include "cuda_common.h"
#include "philox.h"
#include "rng.h"

static __device__ __forceinline__ void store4(float *out, const float v[4], int cnt, bool vec) {
  if (vec && cnt == 4) {
    *reinterpret_cast<float4 *>(out) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int j = 0; j < 4; j++) /* constant indices keep v in registers */
      if (j < cnt) out[j] = v[j];
  }
}

static __device__ __forceinline__ void store4(__nv_bfloat16 *out, const float v[4], int cnt, bool vec) {
  __nv_bfloat16 h[4];
#pragma unroll
  for (int j = 0; j < 4; j++) h[j] = __float2bfloat16_rn(v[j]); /* nearest even, as f32_to_bf16 */
  if (vec && cnt == 4) {
    uint2 packed;
    packed.x = (uint32_t)__bfloat16_as_ushort(h[0]) | ((uint32_t)__bfloat16_as_ushort(h[1]) << 16);
    packed.y = (uint32_t)__bfloat16_as_ushort(h[2]) | ((uint32_t)__bfloat16_as_ushort(h[3]) << 16);
    *reinterpret_cast<uint2 *>(out) = packed;
  } else {
#pragma unroll
    for (int j = 0; j < 4; j++)
      if (j < cnt) out[j] = h[j];
  }
}

/* out: (n,). Thread b writes elements 4b .. 4b+3 from counter block offset + b. */
template <bool kNormal, typename T>
__global__ void rng_fill_kernel(T *__restrict__ out, int64_t n, uint64_t seed, uint64_t offset, bool vec) {
  const int64_t nb = (n + 3) / 4;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nb; b += stride) {
    float v[4];
    if (kNormal) {
      rng_normal4(seed, offset + (uint64_t)b, v);
    } else {
      rng_uniform4(seed, offset + (uint64_t)b, v);
    }
    const int64_t i0 = 4 * b;
    const int cnt = n - i0 < 4 ? (int)(n - i0) : 4;
    store4(out + i0, v, cnt, vec);
  }
}

template <bool kNormal>
static void rng_fill_cuda(Ctx *ctx, uint64_t seed, uint64_t offset, Tensor *t, const char *op) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: tensor is not on the GPU", op);
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: tensor is %s; random fills are fp32 or bf16", op,
            dtype_name(t->dtype));
  /* Tensors are contiguous by construction; numel must agree with the shape. */
  char shape[96];
  shape_str(shape, sizeof shape, t->ndim, t->shape);
  MCM_CHECK(t->numel == shape_numel(t->ndim, t->shape), "%s: tensor %s has numel %lld", op, shape,
            (long long)t->numel);
  if (t->numel == 0) return;
  MCM_CHECK(t->data != NULL, "%s: tensor %s has no data", op, shape);
  const int threads = 256;
  const int64_t nb = (int64_t)rng_blocks(t->numel);
  const unsigned int grid = cuda_blocks(nb, threads);
  const uintptr_t addr = (uintptr_t)t->data;
  if (t->dtype == DT_F32) {
    rng_fill_kernel<kNormal, float><<<grid, threads, 0, CTX_STREAM(ctx)>>>((float *)t->data, t->numel, seed, offset,
                                                                           addr % 16 == 0);
  } else {
    rng_fill_kernel<kNormal, __nv_bfloat16><<<grid, threads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)t->data, t->numel, seed, offset, addr % 8 == 0);
  }
  CUDA_LAUNCH_CHECK();
}

void rng_uniform_cuda(Ctx *ctx, uint64_t seed, uint64_t offset, Tensor *t) {
  rng_fill_cuda<false>(ctx, seed, offset, t, "rng_uniform_cuda");
}

void rng_normal_cuda(Ctx *ctx, uint64_t seed, uint64_t offset, Tensor *t) {
  rng_fill_cuda<true>(ctx, seed, offset, t, "rng_normal_cuda");
}
