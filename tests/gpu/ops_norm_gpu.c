/* group_norm, layer_norm and batch_norm_local rows of the GPU op table (make test-gpu),
 * all marked deterministic: gpu_ops_deterministic reruns them for identical bits (fixed-order sums).
 *
 * The rows reach every kernel path in norm.cu: groups of one block and groups split over
 * several blocks (more than 32768 elements, with a ragged last chunk); dw/db by runs
 * (S ≥ 32, split over rows) and by columns (S < 32, layer norm's S = 1, several row
 * chunks and a ragged channel tile); with and without affine.
 *
 * Tolerances (gpu_check.h rows): statistics and dw/db are sums, fp32 in a tree on the GPU,
 * double on the CPU, so fp32 uses F32_REDUCE for sums of up to ~5e3 elements and
 * F32_REDUCE_LARGE for the rows whose sums reach ~4e5; every output and gradient is O(1)
 * times rstd ≈ 1.7 except dw/db, sums of O(√n) size, which rtol covers. bf16: inputs and
 * upstream gradient are the same bf16 values on both sides and the GPU computes in fp32,
 * so each result differs by its final rounding to bf16: BF16_POINTWISE. */

#include "gpu_check.h"
#include "kernels/norm.h" /* until kernels/ops.h includes it */
#include "tests/test.h"

/* x (B, C, ...) uniform in [-1, 1), w in [0.5, 1.5), b in [-0.5, 0.5). */
static Tensor *gn_case(OpCase *c, int groups, float eps, bool affine, int ndim, const int64_t *shape) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, ndim, shape);
  Tensor *w = affine ? case_input(c, "w", 0.5f, 1.5f, SHAPE(shape[1])) : NULL; /* (C) */
  Tensor *b = affine ? case_input(c, "b", -0.5f, 0.5f, SHAPE(shape[1])) : NULL; /* (C) */
  return op_group_norm(c->ctx, x, groups, eps, w, b);
}

static Tensor *ln_case(OpCase *c, bool affine, int ndim, const int64_t *shape) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, ndim, shape);
  Tensor *w = affine ? case_input(c, "w", 0.5f, 1.5f, SHAPE(shape[ndim - 1])) : NULL; /* (C) */
  Tensor *b = affine ? case_input(c, "b", -0.5f, 0.5f, SHAPE(shape[ndim - 1])) : NULL;
  return op_layer_norm(c->ctx, x, 1e-5f, w, b);
}

static Tensor *bnl_case(OpCase *c, int virtual_bs, int B, int C, int N) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, SHAPE(B, C, N)); /* (B, C, N) */
  Tensor *w = case_input(c, "w", 0.5f, 1.5f, SHAPE(C));
  Tensor *b = case_input(c, "b", -0.5f, 0.5f, SHAPE(C));
  return op_batch_norm_local(c->ctx, x, virtual_bs, 1e-5f, w, b);
}

/* One block a group; dw/db by runs (S = 99). */
static Tensor *fw_gn_4d(OpCase *c) { return gn_case(c, 4, 1e-5f, true, SHAPE(2, 12, 9, 11)); }
/* dw/db by columns (S = 15). */
static Tensor *fw_gn_small_s(OpCase *c) { return gn_case(c, 2, 1e-6f, true, SHAPE(3, 8, 5, 3)); }
static Tensor *fw_gn_rank2(OpCase *c) { return gn_case(c, 3, 1e-5f, true, SHAPE(4, 6)); }
static Tensor *fw_gn_rank5_noaff(OpCase *c) { return gn_case(c, 5, 1e-5f, false, SHAPE(2, 5, 3, 4, 3)); }
/* Groups of 3·12707 = 38121 elements: 2 blocks a group (the last chunk one short); dw/db
 * by runs split over rows (2 rows, then 1). */
static Tensor *fw_gn_split(OpCase *c) { return gn_case(c, 2, 1e-5f, true, SHAPE(3, 6, 97, 131)); }
/* One group of 396000 elements at batch 1 (the VAE's shape of problem): 13 blocks. */
static Tensor *fw_gn_split13(OpCase *c) { return gn_case(c, 1, 1e-6f, true, SHAPE(1, 4, 300, 330)); }

static Tensor *fw_ln_3d(OpCase *c) { return ln_case(c, true, SHAPE(3, 37, 41)); }
static Tensor *fw_ln_noaff(OpCase *c) { return ln_case(c, false, SHAPE(5, 19)); }
/* 600 rows: 3 row chunks of the column kernel; 200 channels: a ragged last tile of 8. */
static Tensor *fw_ln_rows(OpCase *c) { return ln_case(c, true, SHAPE(2, 300, 200)); }

static Tensor *fw_bnl_g2(OpCase *c) { return bnl_case(c, 2, 4, 5, 37); } /* S = 37: runs */
static Tensor *fw_bnl_g1(OpCase *c) { return bnl_case(c, 8, 6, 7, 9); }  /* S = 9: columns */
static Tensor *fw_bnl_g3(OpCase *c) { return bnl_case(c, 3, 9, 4, 64); }

#define NORM_TOL {F32_REDUCE, BF16_POINTWISE}
#define NORM_TOL_LARGE {F32_REDUCE_LARGE, BF16_POINTWISE}
static const OpEntry NORM_OPS[] = {
    {"group_norm_4d", fw_gn_4d, NORM_TOL, true},
    {"group_norm_small_s", fw_gn_small_s, NORM_TOL, true},
    {"group_norm_rank2", fw_gn_rank2, NORM_TOL, true},
    {"group_norm_rank5_noaff", fw_gn_rank5_noaff, NORM_TOL, true},
    {"group_norm_split2", fw_gn_split, NORM_TOL_LARGE, true},
    {"group_norm_split13", fw_gn_split13, NORM_TOL_LARGE, true},
    {"layer_norm_3d", fw_ln_3d, NORM_TOL, true},
    {"layer_norm_noaffine", fw_ln_noaff, NORM_TOL, true},
    {"layer_norm_600_rows", fw_ln_rows, NORM_TOL, true},
    {"batch_norm_local_g2", fw_bnl_g2, NORM_TOL, true},
    {"batch_norm_local_g1", fw_bnl_g1, NORM_TOL, true},
    {"batch_norm_local_g3", fw_bnl_g3, NORM_TOL, true},
};
GPU_OPS_REGISTER(NORM_OPS)
