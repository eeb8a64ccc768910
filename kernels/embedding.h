/* Embeddings: table lookups (token and position ids) and the sinusoidal timestep features.
 *
 *   op_embedding(table (V, D), ids (...) int32)  ->  y (..., D)     y[n] = table[ids[n]]
 *     ids: any shape of 1..4 dims; every id must lie in [0, V), else a fatal error that
 *     names the id, its position and V. Backward ACCUMULATES dtable[v] += Σ_{n: ids[n]=v} dy[n]
 *     (the ids get no gradient). Both devices add each row's contributions in increasing n
 *     (the GPU into a register, then onto the row), so the result is deterministic.
 *     GPU id check: ids usually live on the device already, so the forward kernel records
 *     the first bad position in an 8-byte flag (and writes NaN rows for bad ids); the
 *     launcher reads the flag back, which waits for the stream: one small sync per call.
 *     GPU backward: one block per position n; the block returns unless n is the first
 *     occurrence of its id, else sums dy over every later m with the same id and adds the
 *     sum to that table row. No atomics, no sort; O(N²) id comparisons, which suits token
 *     and position ids (N = batch × tokens, a few thousand); a much larger N would want a
 *     sort-based segmented sum.
 *
 *   op_timestep_embedding(t (B) fp32, dim, max_period, flip_sin_to_cos, shift) -> (B, dim)
 *     the diffusers / LDM sinusoidal embedding (diffusers get_timestep_embedding):
 *       half = dim / 2,  freq_i = exp(−ln(max_period) · i / (half − shift)),  i < half
 *       args = t · freq,  y = [sin(args), cos(args)], or [cos, sin] when flip_sin_to_cos,
 *       plus a zero column when dim is odd.
 *     MusicLDM's UNet (LDM timestep_embedding): dim 128, max_period 10000, flip true, shift 0.
 *     diffusers' TimestepEmbedding default: flip true, shift 0. The LCM guidance embedding
 *     (w' = 1000·w): flip false, shift 1.
 *     t is fp32 so integer timesteps stay exact (bf16 cannot hold 999). Nothing is
 *     differentiated here: the timesteps are data, so a t that requires a gradient is a
 *     fatal error, and the output never requires one (the layers after it do).
 *     Precision: freq_i is computed as in PyTorch (fp32 ln·i, fp32 divide) and then
 *     exp in double rounded to fp32, so CPU and GPU hold bit-identical frequencies and
 *     arguments; only sinf/cosf differ (a few ulp).
 */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_embedding(Ctx *ctx, Tensor *table, Tensor *ids);
/* fp32 output. */
Tensor *op_timestep_embedding(Ctx *ctx, Tensor *t, int dim, float max_period, bool flip_sin_to_cos,
                              float downscale_freq_shift);
/* The same with the output in `dtype` (fp32 or bf16) for a bf16 model. */
Tensor *op_timestep_embedding_as(Ctx *ctx, Tensor *t, int dim, float max_period, bool flip_sin_to_cos,
                                 float downscale_freq_shift, DType dtype);

/* CPU reference. N = number of ids. The forward is fatal on an id outside [0, V). */
void embedding_forward_cpu(float *y, const float *table, const int32_t *ids, int64_t N, int64_t V, int64_t D);
void embedding_backward_cpu(float *dtable, const float *dy, const int32_t *ids, int64_t N, int64_t D);
/* y (B, dim) */
void timestep_embedding_cpu(float *y, const float *t, int64_t B, int dim, float max_period, bool flip_sin_to_cos,
                            float downscale_freq_shift);

/* The two fp32 constants of freq_i = exp(neg_log_p · i / denom), computed once on the host
 * for both devices: neg_log_p = fp32(−ln max_period), denom = fp32(half − shift). */
void timestep_freq_consts(int dim, float max_period, float downscale_freq_shift, float *neg_log_p, float *denom);

#if MCM_CUDA
void embedding_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *table, const Tensor *ids);
void embedding_backward_cuda(Ctx *ctx, Tensor *dtable, const Tensor *dy, const Tensor *ids);
void timestep_embedding_cuda(Ctx *ctx, Tensor *y, const Tensor *t, int dim, float max_period, bool flip_sin_to_cos,
                             float downscale_freq_shift);
#endif

#ifdef __cplusplus
}
#endif
