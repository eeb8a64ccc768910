/* GPU table rows for the shape family: concat, slice, permute, nearest 2× upsampling,
 * sum_dim / mean_dim (see tests/gpu/test_ops_gpu.c for how each row is run and compared).
 *
 * The sizes reach every kernel path: row copies in 4-byte units (odd widths) and 16-byte
 * units (widths and offsets multiples of 4 fp32 / 8 bf16 elements); slices that are views
 * (a batch window) and copies; permutes that collapse to a copy, to one batched transpose
 * (several tiles and ragged edges) or to the strided gather; reductions by a warp per row
 * (inner == 1, R ≤ 1024), a block per row (R > 1024) and the 32×8 column kernel.
 *
 * Tolerances: copies, permutes and the upsample forward move values unchanged and their
 * backward passes add each dy element (or, for the upsample, four in the CPU's order) into
 * a zeroed dx, so fp32 results are exact and bf16 ones differ only by the final bf16
 * rounding: POINTWISE_TOL has room to spare. The dim reductions sum in fp32 on the GPU and
 * in double on the CPU (F32_REDUCE, sized for sums of ~4.5e3 terms, covers R ≤ 2000); in
 * bf16 their outputs and gradients are bf16, rounded once (BF16_POINTWISE). */
#include "gpu_check.h"
#include "kernels/upsample.h"

/* ------------------------------------------------------------------ concat / slice */

static Tensor *fw_concat_ch(OpCase *c) { /* the UNet skip, odd widths: 4-byte units */
  Tensor *a = case_input(c, "x0", -1.0f, 1.0f, SHAPE(2, 5, 9, 7));
  Tensor *b = case_input(c, "x1", -1.0f, 1.0f, SHAPE(2, 3, 9, 7));
  Tensor *d = case_input(c, "x2", -1.0f, 1.0f, SHAPE(2, 4, 9, 7));
  return op_concat(c->ctx, (Tensor *[]){a, b, d}, 3, 1);
}
static Tensor *fw_concat_ch_vec(OpCase *c) { /* every width a multiple of 16 bytes */
  Tensor *a = case_input(c, "x0", -1.0f, 1.0f, SHAPE(2, 8, 16, 16));
  Tensor *b = case_input(c, "x1", -1.0f, 1.0f, SHAPE(2, 4, 16, 16));
  return op_concat(c->ctx, (Tensor *[]){a, b}, 2, 1);
}
static Tensor *fw_concat_batch(OpCase *c) { /* cond / uncond: one row each */
  Tensor *a = case_input(c, "x0", -1.0f, 1.0f, SHAPE(1, 3, 5, 7));
  Tensor *b = case_input(c, "x1", -1.0f, 1.0f, SHAPE(2, 3, 5, 7));
  return op_concat(c->ctx, (Tensor *[]){a, b}, 2, 0);
}
static Tensor *fw_concat_last(OpCase *c) {
  Tensor *a = case_input(c, "x0", -1.0f, 1.0f, SHAPE(3, 7, 5));
  Tensor *b = case_input(c, "x1", -1.0f, 1.0f, SHAPE(3, 7, 3));
  return op_concat(c->ctx, (Tensor *[]){a, b}, 2, -1);
}
static Tensor *fw_slice_ch(OpCase *c) { /* VAE moments -> log-variance: a strided copy */
  return op_slice(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(2, 6, 9, 7)), 1, 3, 3);
}
static Tensor *fw_slice_batch(OpCase *c) { /* a view of rows 1..2 */
  return op_slice(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(4, 3, 5, 7)), 0, 1, 2);
}
static Tensor *fw_slice_last(OpCase *c) {
  return op_slice(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 5, 2, 11)), -1, 2, 7);
}

/* ------------------------------------------------------------------ permute */

static Tensor *fw_perm(OpCase *c, int ndim, const int64_t *shape, const int *perm) {
  return op_permute(c->ctx, case_input(c, "x", -1.0f, 1.0f, ndim, shape), perm);
}
static Tensor *fw_permute_0231(OpCase *c) { return fw_perm(c, SHAPE(2, 5, 9, 7), (int[]){0, 2, 3, 1}); }
static Tensor *fw_permute_0312(OpCase *c) { return fw_perm(c, SHAPE(2, 9, 7, 5), (int[]){0, 3, 1, 2}); }
/* Many tiles, ragged on both edges: A = 40, C = 33·35 = 1155. */
static Tensor *fw_permute_0231_big(OpCase *c) { return fw_perm(c, SHAPE(2, 40, 33, 35), (int[]){0, 2, 3, 1}); }
static Tensor *fw_permute_10(OpCase *c) { return fw_perm(c, SHAPE(37, 45), (int[]){1, 0}); }
static Tensor *fw_permute_0213(OpCase *c) { return fw_perm(c, SHAPE(2, 9, 4, 8), (int[]){0, 2, 1, 3}); }
static Tensor *fw_permute_r5(OpCase *c) { return fw_perm(c, SHAPE(3, 4, 2, 5, 3), (int[]){4, 2, 0, 3, 1}); }
static Tensor *fw_permute_copy(OpCase *c) { return fw_perm(c, SHAPE(3, 1, 5, 7), (int[]){1, 0, 2, 3}); }
static Tensor *fw_transpose_last2(OpCase *c) {
  return op_transpose_last2(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 37, 41)));
}

/* ------------------------------------------------------------------ upsample */

static Tensor *fw_upsample(OpCase *c) {
  return op_upsample_nearest2x(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(2, 3, 9, 7)));
}

/* ------------------------------------------------------------------ reductions along a dim */

static Tensor *fw_sum_last(OpCase *c) { /* warp per row */
  return op_sum_dim(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 37, 41)), 2, false);
}
static Tensor *fw_sum_long_rows(OpCase *c) { /* block per row */
  return op_sum_dim(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 2001)), -1, true);
}
static Tensor *fw_sum_mid(OpCase *c) { /* column kernel, ragged tile */
  return op_sum_dim(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(3, 37, 41)), 1, false);
}
static Tensor *fw_sum_first(OpCase *c) {
  return op_sum_dim(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(37, 3, 41)), 0, true);
}
static Tensor *fw_sum_r5(OpCase *c) {
  return op_sum_dim(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(2, 3, 5, 4, 3)), 2, true);
}
static Tensor *fw_mean_tokens(OpCase *c) { /* (B, T, C): mean over tokens */
  return op_mean_dim(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(2, 77, 40)), 1, false);
}
static Tensor *fw_mean_last(OpCase *c) {
  return op_mean_dim(c->ctx, case_input(c, "x", -1.0f, 1.0f, SHAPE(5, 3, 129)), -1, true);
}

#define COPY POINTWISE_TOL
#define DIM_REDUCE {F32_REDUCE, BF16_POINTWISE}
static const OpEntry SHAPE_OPS[] = {
    {"concat_ch", fw_concat_ch, COPY, false},
    {"concat_ch_vec", fw_concat_ch_vec, COPY, false},
    {"concat_batch", fw_concat_batch, COPY, false},
    {"concat_last", fw_concat_last, COPY, false},
    {"slice_ch", fw_slice_ch, COPY, false},
    {"slice_batch_view", fw_slice_batch, COPY, false},
    {"slice_last", fw_slice_last, COPY, false},
    {"permute_0231", fw_permute_0231, COPY, false},
    {"permute_0312", fw_permute_0312, COPY, false},
    {"permute_0231_big", fw_permute_0231_big, COPY, false},
    {"permute_10", fw_permute_10, COPY, false},
    {"permute_0213_gather", fw_permute_0213, COPY, false},
    {"permute_r5_gather", fw_permute_r5, COPY, false},
    {"permute_size1_copy", fw_permute_copy, COPY, false},
    {"transpose_last2", fw_transpose_last2, COPY, false},
    {"upsample_nearest2x", fw_upsample, COPY, false},
    {"sum_dim_last", fw_sum_last, DIM_REDUCE, true},
    {"sum_dim_long_rows", fw_sum_long_rows, DIM_REDUCE, true},
    {"sum_dim_mid", fw_sum_mid, DIM_REDUCE, true},
    {"sum_dim_first", fw_sum_first, DIM_REDUCE, false},
    {"sum_dim_r5", fw_sum_r5, DIM_REDUCE, false},
    {"mean_dim_tokens", fw_mean_tokens, DIM_REDUCE, true},
    {"mean_dim_last", fw_mean_last, DIM_REDUCE, false},
};
GPU_OPS_REGISTER(SHAPE_OPS)
