/* The CPU side of mcm's RNG: the Philox block function, host fills, and the tensor entry
 * points that dispatch to the CPU fill or the CUDA launchers in rng.cu. The per-element
 * arithmetic is in philox.h, shared with the CUDA kernel so both give the same bits. */
#include "rng.h"

#include "philox.h"

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  philox4x32_10_hd(ctr, key, out);
}

uint64_t rng_blocks(int64_t n) { return n <= 0 ? 0 : ((uint64_t)n + 3) / 4; }

typedef enum RngDist { RNG_UNIFORM, RNG_NORMAL } RngDist;

/* out: (n,) of dtype dt (fp32 or bf16), on the host. Blocks are independent, so the loop
 * splits across threads without changing a bit. */
static void fill_host(RngDist dist, uint64_t seed, uint64_t offset, void *out, DType dt, int64_t n) {
  const int64_t nb = (int64_t)rng_blocks(n);
#pragma omp parallel for schedule(static) if (nb >= 16384)
  for (int64_t b = 0; b < nb; b++) {
    float v[4];
    if (dist == RNG_UNIFORM) {
      rng_uniform4(seed, offset + (uint64_t)b, v);
    } else {
      rng_normal4(seed, offset + (uint64_t)b, v);
    }
    const int64_t i0 = 4 * b;
    const int cnt = n - i0 < 4 ? (int)(n - i0) : 4; /* the last block may be partial */
    if (dt == DT_F32) {
      for (int j = 0; j < cnt; j++) ((float *)out)[i0 + j] = v[j];
    } else {
      for (int j = 0; j < cnt; j++) ((uint16_t *)out)[i0 + j] = f32_to_bf16(v[j]);
    }
  }
}

void rng_uniform_host(uint64_t seed, uint64_t offset, float *out, int64_t n) {
  fill_host(RNG_UNIFORM, seed, offset, out, DT_F32, n);
}

void rng_normal_host(uint64_t seed, uint64_t offset, float *out, int64_t n) {
  fill_host(RNG_NORMAL, seed, offset, out, DT_F32, n);
}

static void rng_fill(Ctx *ctx, Tensor *t, RngDist dist, const char *op) {
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: tensor is %s; random fills are fp32 or bf16", op,
            dtype_name(t->dtype));
  const uint64_t offset = ctx->rng_offset;
  if (t->numel > 0) {
    MCM_CHECK(t->data != NULL, "%s: tensor %s has no data", op, TENSOR_SHAPE_STR(t));
    if (t->dev == DEV_CPU) {
      fill_host(dist, ctx->seed, offset, t->data, t->dtype, t->numel);
    } else {
#if MCM_CUDA
      MCM_CHECK(ctx->dev == DEV_CUDA, "%s: a CUDA tensor needs a CUDA context", op);
      if (dist == RNG_UNIFORM) {
        rng_uniform_cuda(ctx, ctx->seed, offset, t);
      } else {
        rng_normal_cuda(ctx, ctx->seed, offset, t);
      }
#else
      MCM_FATAL("%s: internal error: a CUDA tensor in a CPU-only build", op);
#endif
    }
  }
  ctx->rng_offset = offset + rng_blocks(t->numel);
}

void rng_uniform(Ctx *ctx, Tensor *t) { rng_fill(ctx, t, RNG_UNIFORM, "rng_uniform"); }
void rng_normal(Ctx *ctx, Tensor *t) { rng_fill(ctx, t, RNG_NORMAL, "rng_normal"); }
