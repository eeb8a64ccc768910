/* mcm's random numbers: one counter-based stream (Philox4x32-10, see philox.h) that gives
 * bit-identical uniforms and normals on the CPU and on a GPU for the same seed and offset.
 *
 * Stream layout: a draw of n elements that starts at block `offset` gives element i the
 * word i%4 of counter block offset + i/4; it consumes rng_blocks(n) = ceil(n/4) blocks.
 * A context holds the key (ctx->seed) and the next unused block (ctx->rng_offset); every
 * rng_uniform/rng_normal on it advances rng_offset, so a checkpoint that saves the pair
 * resumes the same stream.
 *
 *   uniform: [0, 1), multiples of 2^-24 (the top 24 bits of a word).
 *   normal:  Box-Muller on word pairs, |z| <= 5.77; within 0.62 ulp of the same formula
 *            in double precision (tests/test_rng.c measures it).
 *   bf16:    the fp32 value rounded to nearest even.
 */
#pragma once
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One Philox4x32-10 block: ctr[0] is the least significant counter word. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Number of counter blocks a draw of n elements consumes: ceil(n/4), 0 for n <= 0. */
uint64_t rng_blocks(int64_t n);

/* Host buffers: out[0..n) from key `seed`, starting at block `offset`. */
void rng_uniform_host(uint64_t seed, uint64_t offset, float *out, int64_t n);  /* out: (n,) */
void rng_normal_host(uint64_t seed, uint64_t offset, float *out, int64_t n);   /* out: (n,) */

/* Fill a tensor (fp32 or bf16, any shape, on the CPU or the ctx's GPU) from ctx->seed at
 * ctx->rng_offset and advance ctx->rng_offset by rng_blocks(numel). */
void rng_uniform(Ctx *ctx, Tensor *t);
void rng_normal(Ctx *ctx, Tensor *t);

/* CUDA launchers (rng.cu, MCM_CUDA builds only; rng_uniform/rng_normal call them). They
 * neither read nor advance ctx->rng_offset; they run on the ctx's stream. */
void rng_uniform_cuda(Ctx *ctx, uint64_t seed, uint64_t offset, Tensor *t);
void rng_normal_cuda(Ctx *ctx, uint64_t seed, uint64_t offset, Tensor *t);

#ifdef __cplusplus
}
#endif
