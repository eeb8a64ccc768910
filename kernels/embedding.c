/* Embeddings: CPU reference, dispatch and tape (see embedding.h). */
#include "embedding.h"

#include <math.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

void embedding_forward_cpu(float *y, const float *table, const int32_t *ids, int64_t N, int64_t V, int64_t D) {
  for (int64_t n = 0; n < N; n++)
    MCM_CHECK(ids[n] >= 0 && ids[n] < V, "embedding: id %d at position %lld is outside the table's %lld rows [0, %lld)",
              ids[n], (long long)n, (long long)V, (long long)V);
#pragma omp parallel for if (N * D > 65536)
  for (int64_t n = 0; n < N; n++) memcpy(y + n * D, table + (int64_t)ids[n] * D, (size_t)D * sizeof(float));
}

/* In increasing n, so a row's contributions always add in the same order (as on the GPU). */
void embedding_backward_cpu(float *dtable, const float *dy, const int32_t *ids, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; n++) {
    float *row = dtable + (int64_t)ids[n] * D;
    const float *g = dy + n * D;
    for (int64_t d = 0; d < D; d++) row[d] += g[d];
  }
}

static void embedding_backward(Ctx *ctx, TapeNode *node) {
  Tensor *table = node->in[0], *ids = node->in[1], *dy = node->out->grad;
  if (!table->requires_grad) return;
  Tensor *dt = grad_of(ctx, table);
  ON_DEVICE(ctx,
            CPU_REF((dt, dy, ids), embedding_backward_cpu(dt->data, dy->data, ids->data, ids->numel, table->shape[1])),
            embedding_backward_cuda(ctx, dt, dy, ids));
}

Tensor *op_embedding(Ctx *ctx, Tensor *table, Tensor *ids) {
  CHECK_SHAPE("embedding", table, -1, -1);
  CHECK_DTYPE("embedding", ids, DT_I32);
  MCM_CHECK(ids->ndim <= 4, "embedding: ids %s have %d dimensions, at most 4 (the output adds one)",
            TENSOR_SHAPE_STR(ids), ids->ndim);
  MCM_CHECK(ids->dev == ctx->dev && table->dev == ctx->dev, "embedding: table and ids must be on the context's device");
  MCM_CHECK(table->dtype == DT_F32 || table->dtype == DT_BF16, "embedding: table is %s, expected fp32 or bf16",
            dtype_name(table->dtype));
  int64_t V = table->shape[0], D = table->shape[1], shape[MCM_MAX_DIMS];
  memcpy(shape, ids->shape, sizeof shape);
  shape[ids->ndim] = D;
  Tensor *y = tensor_new(ctx, table->dtype, ids->ndim + 1, shape);
  ON_DEVICE(ctx, CPU_REF((y, table, ids), embedding_forward_cpu(y->data, table->data, ids->data, ids->numel, V, D)),
            embedding_forward_cuda(ctx, y, table, ids));
  Tensor *in[2] = {table, ids};
  if (tape_wants(ctx, 2, in)) tape_record(ctx, "embedding", embedding_backward, y, 2, in, 0);
  return y;
}

/* ------------------------------------------------------------------ timestep embedding */

void timestep_freq_consts(int dim, float max_period, float downscale_freq_shift, float *neg_log_p, float *denom) {
  *neg_log_p = (float)(-log((double)max_period));
  *denom = (float)((double)(dim / 2) - (double)downscale_freq_shift);
}

void timestep_embedding_cpu(float *y, const float *t, int64_t B, int dim, float max_period, bool flip_sin_to_cos,
                            float downscale_freq_shift) {
  int half = dim / 2;
  float neg_log_p, denom;
  timestep_freq_consts(dim, max_period, downscale_freq_shift, &neg_log_p, &denom);
  int sin_at = flip_sin_to_cos ? half : 0, cos_at = flip_sin_to_cos ? 0 : half;
  for (int64_t b = 0; b < B; b++) {
    float *row = y + b * dim;
    for (int i = 0; i < half; i++) {
      float e = neg_log_p * (float)i / denom; /* fp32, in PyTorch's order */
      float arg = t[b] * (float)exp((double)e);
      row[sin_at + i] = sinf(arg);
      row[cos_at + i] = cosf(arg);
    }
    if (dim % 2) row[dim - 1] = 0.0f;
  }
}

Tensor *op_timestep_embedding_as(Ctx *ctx, Tensor *t, int dim, float max_period, bool flip_sin_to_cos,
                                 float downscale_freq_shift, DType dtype) {
  CHECK_SHAPE("timestep_embedding", t, -1);
  CHECK_DTYPE("timestep_embedding (timesteps stay fp32 so that integers up to 2^24 are exact)", t, DT_F32);
  MCM_CHECK(!t->requires_grad, "timestep_embedding: t requires a gradient, but the timestep features are not "
            "differentiated (pass the timesteps as data, e.g. tensor_detach)");
  MCM_CHECK(dim >= 2, "timestep_embedding: dim %d, need at least 2", dim);
  MCM_CHECK(max_period > 0.0f, "timestep_embedding: max_period %g must be positive", (double)max_period);
  MCM_CHECK((double)(dim / 2) - downscale_freq_shift > 0.0,
            "timestep_embedding: dim/2 − downscale_freq_shift = %d − %g must be positive", dim / 2,
            (double)downscale_freq_shift);
  MCM_CHECK(dtype == DT_F32 || dtype == DT_BF16, "timestep_embedding: output dtype %s, expected fp32 or bf16",
            dtype_name(dtype));
  Tensor *y = tensor_new(ctx, dtype, SHAPE(t->shape[0], dim));
  ON_DEVICE(ctx,
            CPU_REF((y, t), timestep_embedding_cpu(y->data, t->data, t->shape[0], dim, max_period, flip_sin_to_cos,
                                                   downscale_freq_shift)),
            timestep_embedding_cuda(ctx, y, t, dim, max_period, flip_sin_to_cos, downscale_freq_shift));
  return y;
}

Tensor *op_timestep_embedding(Ctx *ctx, Tensor *t, int dim, float max_period, bool flip_sin_to_cos,
                              float downscale_freq_shift) {
  return op_timestep_embedding_as(ctx, t, dim, max_period, flip_sin_to_cos, downscale_freq_shift, DT_F32);
}
