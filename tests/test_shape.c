/* Shape ops, nearest 2× upsampling and reductions along a dim on the CPU: values against
 * direct index formulas, gradients against finite differences (odd sizes, batch > 1),
 * the permute dim-merging the GPU relies on, and the fatal paths.
 *
 * Every gradcheck loss runs its op twice on the same leaves and adds the results, so a
 * backward that overwrites dx instead of accumulating shows up as half the gradient. The
 * ops are linear, so the central difference is exact up to fp32 rounding of the loss:
 * the default gradcheck tolerance (2e-3 + 1e-2·|g|) is loose here but catches any wrong
 * window or index (errors of O(1)). */
#include "gradcheck.h"
#include "kernels/upsample.h"
#include "test.h"

/* Σ w ⊙ (y1 + y2), w fixed uniform in [-1, 1): weights every output element differently. */
static Tensor *weighted_twice(Ctx *ctx, Tensor *y1, Tensor *y2) {
  Tensor *w = tensor_new(ctx, DT_F32, y1->ndim, y1->shape);
  fill_uniform(ctx, w, 4242, -1.0f, 1.0f);
  return op_sum(ctx, op_mul(ctx, op_add(ctx, y1, y2), w));
}

static Tensor *leaf(Ctx *ctx, uint64_t seed, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  t->requires_grad = true;
  fill_uniform(ctx, t, seed, -1.0f, 1.0f);
  return t;
}

/* Independent permute reference: walks x in its own order (an odometer over x's index)
 * and scatters into y, where gather is what the library does. */
static void ref_permute(float *y, const float *x, int ndim, const int64_t *xs, const int *perm) {
  int64_t ys[MCM_MAX_DIMS], ystride[MCM_MAX_DIMS], idx[MCM_MAX_DIMS] = {0}, s = 1;
  for (int k = 0; k < ndim; k++) ys[k] = xs[perm[k]];
  for (int k = ndim - 1; k >= 0; k--) ystride[k] = s, s *= ys[k];
  int64_t n = shape_numel(ndim, xs);
  for (int64_t i = 0; i < n; i++) {
    int64_t off = 0;
    for (int k = 0; k < ndim; k++) off += idx[perm[k]] * ystride[k];
    y[off] = x[i];
    for (int d = ndim - 1; d >= 0 && ++idx[d] == xs[d]; d--) idx[d] = 0;
  }
}

/* ------------------------------------------------------------------ concat */

typedef struct {
  int n, dim;
} ConcatArgs;

static Tensor *concat_loss(Ctx *ctx, Tensor **p, void *user) {
  ConcatArgs *a = user;
  return weighted_twice(ctx, op_concat(ctx, p, a->n, a->dim), op_concat(ctx, p, a->n, a->dim));
}

TEST(concat_values_along_each_dim) {
  Ctx *ctx = ctx_create_cpu(0);
  /* (2,3,4) ‖ (2,3,4) along 0, 1, 2 and -1: compare with index formulas */
  Tensor *a = leaf(ctx, 1, SHAPE(2, 3, 4)), *b = leaf(ctx, 2, SHAPE(2, 3, 4));
  const float *A = a->data, *B = b->data;
  for (int dim = -1; dim < 3; dim++) {
    Tensor *y = op_concat(ctx, (Tensor *[]){a, b}, 2, dim);
    int d = dim < 0 ? 2 : dim;
    int64_t want[3] = {2, 3, 4};
    want[d] *= 2;
    ASSERT(y->ndim == 3 && y->shape[0] == want[0] && y->shape[1] == want[1] && y->shape[2] == want[2],
           "dim %d: shape %s", dim, TENSOR_SHAPE_STR(y));
    const float *Y = y->data;
    for (int i = 0; i < want[0]; i++)
      for (int j = 0; j < want[1]; j++)
        for (int k = 0; k < want[2]; k++) {
          int idx[3] = {i, j, k}, half = idx[d] >= (d == 0 ? 2 : d == 1 ? 3 : 4);
          if (half) idx[d] -= d == 0 ? 2 : d == 1 ? 3 : 4;
          float ref = (half ? B : A)[(idx[0] * 3 + idx[1]) * 4 + idx[2]];
          EXPECT(Y[(i * want[1] + j) * want[2] + k] == ref, "dim %d at (%d,%d,%d)", dim, i, j, k);
        }
  }
  ctx_destroy(ctx);
}

TEST(concat_channels_matches_finite_differences) {
  /* The UNet skip: (B, C_i, H, W) along channels, three inputs of different widths. */
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[3] = {leaf(ctx, 1, SHAPE(2, 3, 3, 5)), leaf(ctx, 2, SHAPE(2, 1, 3, 5)), leaf(ctx, 3, SHAPE(2, 2, 3, 5))};
  EXPECT(gradcheck(ctx, concat_loss, p, 3, &(ConcatArgs){3, 1}, (GradcheckOpts){0}) == 0, "concat dim 1");
  ctx_destroy(ctx);
}

TEST(concat_batch_and_last_dim_gradients) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[2] = {leaf(ctx, 4, SHAPE(1, 3, 5)), leaf(ctx, 5, SHAPE(2, 3, 5))};
  EXPECT(gradcheck(ctx, concat_loss, p, 2, &(ConcatArgs){2, 0}, (GradcheckOpts){0}) == 0, "concat dim 0");
  Tensor *q[2] = {leaf(ctx, 6, SHAPE(2, 3, 1, 2, 3)), leaf(ctx, 7, SHAPE(2, 3, 1, 2, 2))};
  EXPECT(gradcheck(ctx, concat_loss, q, 2, &(ConcatArgs){2, -1}, (GradcheckOpts){0}) == 0, "concat dim -1");
  ctx_destroy(ctx);
}

TEST(concat_same_tensor_twice_and_frozen_input) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 8, SHAPE(3, 2)), *c = leaf(ctx, 9, SHAPE(3, 3));
  c->requires_grad = false; /* a frozen input gets no gradient, the others still do */
  Tensor *p[3] = {x, c, x};
  EXPECT(gradcheck(ctx, concat_loss, p, 3, &(ConcatArgs){3, 1}, (GradcheckOpts){0}) == 0, "concat (x, c, x)");
  EXPECT(c->grad == NULL, "the frozen input received a gradient");
  ctx_destroy(ctx);
}

TEST(concat_more_inputs_than_the_tape_holds) {
  /* 9 inputs > TAPE_MAX_IN: concatenated in groups, same values and gradients. */
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *p[9];
  for (int i = 0; i < 9; i++) p[i] = leaf(ctx, 20 + i, SHAPE(2, 1 + i % 3, 3));
  EXPECT(gradcheck(ctx, concat_loss, p, 9, &(ConcatArgs){9, 1}, (GradcheckOpts){0}) == 0, "concat of 9");
  Tensor *y = op_concat(ctx, p, 9, 1);
  CHECK_SHAPE("test", y, 2, 18, 3);
  const float *Y = y->data;
  int64_t off = 0;
  for (int i = 0; i < 9; i++) {
    const float *X = p[i]->data;
    int64_t ci = p[i]->shape[1];
    for (int b = 0; b < 2; b++)
      for (int64_t j = 0; j < ci * 3; j++) EXPECT(Y[b * 54 + off + j] == X[b * ci * 3 + j], "input %d", i);
    off += ci * 3;
  }
  bool was = ctx_set_grad(ctx, false);
  y = op_concat(ctx, p, 9, 1); /* no tape: one copy per input, same result */
  ctx_set_grad(ctx, was);
  EXPECT(!memcmp(y->data, Y, 36 * 3 * sizeof(float)), "no-grad concat differs");
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ slice */

typedef struct {
  int dim;
  int64_t start, len;
} SliceArgs;

static Tensor *slice_loss(Ctx *ctx, Tensor **p, void *user) {
  SliceArgs *a = user;
  return weighted_twice(ctx, op_slice(ctx, p[0], a->dim, a->start, a->len),
                        op_slice(ctx, p[0], a->dim, a->start, a->len));
}

TEST(slice_values_and_views) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 1, SHAPE(3, 4, 5));
  const float *X = x->data;
  Tensor *y = op_slice(ctx, x, 1, 1, 2); /* a copy: rows of 2·5 from rows of 4·5 */
  CHECK_SHAPE("test", y, 3, 2, 5);
  EXPECT(y->data != x->data, "a strided slice must be a copy");
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 2; j++)
      for (int k = 0; k < 5; k++)
        EXPECT(((float *)y->data)[(i * 2 + j) * 5 + k] == X[(i * 4 + j + 1) * 5 + k], "(%d,%d,%d)", i, j, k);
  y = op_slice(ctx, x, 0, 1, 2); /* one contiguous block: a view */
  EXPECT(y->data == (void *)(X + 20), "a batch slice must share x's data at row 1");
  CHECK_SHAPE("test", y, 2, 4, 5);
  y = op_slice(ctx, x, -1, 4, 1);
  CHECK_SHAPE("test", y, 3, 4, 1);
  for (int i = 0; i < 12; i++) EXPECT(((float *)y->data)[i] == X[i * 5 + 4], "last column %d", i);
  ctx_destroy(ctx);
}

TEST(slice_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 2, SHAPE(2, 6, 3, 5)); /* VAE moments: mean = channels [0, 3) */
  SliceArgs cases[] = {{1, 0, 3}, {1, 3, 3}, {0, 1, 1}, {3, 1, 3}, {2, 2, 1}, {-2, 0, 2}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    EXPECT(gradcheck(ctx, slice_loss, &x, 1, &cases[i], (GradcheckOpts){0}) == 0, "slice case %zu", i);
  ctx_destroy(ctx);
}

static Tensor *halves_loss(Ctx *ctx, Tensor **p, void *user) {
  /* mean and log-variance halves of the moments, used differently: both windows of dx */
  Tensor *m = op_slice(ctx, p[0], 1, 0, 2), *lv = op_slice(ctx, p[0], 1, 2, 2);
  return weighted_twice(ctx, op_mul(ctx, m, m), lv);
}

TEST(slice_halves_fill_both_windows) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 3, SHAPE(3, 4, 3, 3));
  EXPECT(gradcheck(ctx, halves_loss, &x, 1, NULL, (GradcheckOpts){0}) == 0, "slice halves");
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ permute */

typedef struct {
  int perm[MCM_MAX_DIMS];
} PermArgs;

static Tensor *permute_loss(Ctx *ctx, Tensor **p, void *user) {
  PermArgs *a = user;
  return weighted_twice(ctx, op_permute(ctx, p[0], a->perm), op_permute(ctx, p[0], a->perm));
}

/* Calls fn on every permutation of n elements (Heap's algorithm). */
static void each_perm(int n, void (*fn)(const int *perm, void *user), void *user) {
  int a[MCM_MAX_DIMS], c[MCM_MAX_DIMS] = {0};
  for (int i = 0; i < n; i++) a[i] = i;
  fn(a, user);
  for (int i = 1; i < n;) {
    if (c[i] < i) {
      int j = i % 2 ? c[i] : 0, t = a[j];
      a[j] = a[i], a[i] = t;
      fn(a, user);
      c[i]++, i = 1;
    } else {
      c[i++] = 0;
    }
  }
}

typedef struct {
  Ctx *ctx;
  Tensor *x;
  int count;
} PermTest;

static void check_one_perm(const int *perm, void *user) {
  PermTest *t = user;
  Tensor *x = t->x;
  Tensor *y = op_permute(t->ctx, x, perm);
  for (int k = 0; k < x->ndim; k++) EXPECT(y->shape[k] == x->shape[perm[k]], "shape dim %d", k);
  float *ref = MALLOC_CHECK((size_t)x->numel * sizeof(float));
  ref_permute(ref, x->data, x->ndim, x->shape, perm);
  EXPECT(!memcmp(ref, y->data, (size_t)x->numel * sizeof(float)), "perm %d%d%d%d%d differs from the reference",
         perm[0], x->ndim > 1 ? perm[1] : 0, x->ndim > 2 ? perm[2] : 0, x->ndim > 3 ? perm[3] : 0,
         x->ndim > 4 ? perm[4] : 0);
  free(ref);
  t->count++;
}

TEST(permute_every_perm_of_rank_2_to_5) {
  Ctx *ctx = ctx_create_cpu(0);
  bool was = ctx_set_grad(ctx, false);
  int64_t shape[MCM_MAX_DIMS] = {2, 3, 5, 1, 4};
  int total = 0;
  for (int r = 2; r <= 5; r++) {
    PermTest t = {ctx, leaf(ctx, 10 + r, r, shape), 0};
    each_perm(r, check_one_perm, &t);
    total += t.count;
    ctx_step_reset(ctx);
  }
  EXPECT(total == 2 + 6 + 24 + 120, "visited %d permutations", total);
  ctx_set_grad(ctx, was);
  ctx_destroy(ctx);
}

TEST(permute_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x3 = leaf(ctx, 1, SHAPE(2, 5, 3)), *x4 = leaf(ctx, 2, SHAPE(2, 3, 4, 5));
  Tensor *x5 = leaf(ctx, 3, SHAPE(2, 3, 1, 2, 3));
  EXPECT(gradcheck(ctx, permute_loss, &x3, 1, &(PermArgs){{0, 2, 1}}, (GradcheckOpts){0}) == 0, "(0,2,1)");
  EXPECT(gradcheck(ctx, permute_loss, &x4, 1, &(PermArgs){{0, 2, 3, 1}}, (GradcheckOpts){0}) == 0, "(0,2,3,1)");
  EXPECT(gradcheck(ctx, permute_loss, &x4, 1, &(PermArgs){{0, 3, 1, 2}}, (GradcheckOpts){0}) == 0, "(0,3,1,2)");
  EXPECT(gradcheck(ctx, permute_loss, &x5, 1, &(PermArgs){{4, 2, 0, 3, 1}}, (GradcheckOpts){0}) == 0, "(4,2,0,3,1)");
  ctx_destroy(ctx);
}

static Tensor *transpose_loss(Ctx *ctx, Tensor **p, void *user) {
  return weighted_twice(ctx, op_transpose_last2(ctx, p[0]), op_transpose_last2(ctx, p[0]));
}

TEST(transpose_last2) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 4, SHAPE(2, 3, 4));
  Tensor *y = op_transpose_last2(ctx, x);
  CHECK_SHAPE("test", y, 2, 4, 3);
  for (int b = 0; b < 2; b++)
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 4; j++)
        EXPECT(((float *)y->data)[(b * 4 + j) * 3 + i] == ((float *)x->data)[(b * 3 + i) * 4 + j], "(%d,%d,%d)", b, i,
               j);
  EXPECT(gradcheck(ctx, transpose_loss, &x, 1, NULL, (GradcheckOpts){0}) == 0, "transpose_last2");
  ctx_destroy(ctx);
}

/* The GPU's permute dispatch rests on permute_collapse: check the merged form describes the
 * same permutation, is minimal, and maps the transformer layouts to one batched transpose. */
static void check_collapse(const int64_t *shape, const int *perm, int ndim, int want_m, const int64_t *want_shape,
                           const int *want_perm) {
  int64_t cs[MCM_MAX_DIMS];
  int cp[MCM_MAX_DIMS];
  int m = permute_collapse(ndim, shape, perm, cs, cp);
  ASSERT(m == want_m, "collapsed rank %d, expected %d", m, want_m);
  for (int k = 0; k < m; k++) {
    EXPECT(cs[k] == want_shape[k], "collapsed shape[%d] = %lld, expected %lld", k, (long long)cs[k],
           (long long)want_shape[k]);
    EXPECT(cp[k] == want_perm[k], "collapsed perm[%d] = %d, expected %d", k, cp[k], want_perm[k]);
  }
}

TEST(permute_collapse_transformer_layouts) {
  /* NCHW -> (B, HW, C) and back are one batched transpose; with B = 1 a plain one. */
  check_collapse((int64_t[]){2, 8, 5, 3}, (int[]){0, 2, 3, 1}, 4, 3, (int64_t[]){2, 8, 15}, (int[]){0, 2, 1});
  check_collapse((int64_t[]){2, 5, 3, 8}, (int[]){0, 3, 1, 2}, 4, 3, (int64_t[]){2, 15, 8}, (int[]){0, 2, 1});
  check_collapse((int64_t[]){1, 8, 5, 3}, (int[]){0, 2, 3, 1}, 4, 2, (int64_t[]){8, 15}, (int[]){1, 0});
  check_collapse((int64_t[]){4, 7, 6}, (int[]){0, 2, 1}, 3, 3, (int64_t[]){4, 7, 6}, (int[]){0, 2, 1});
  /* Attention heads: (B, T, NH, D) -> (B, NH, T, D) keeps D innermost. */
  check_collapse((int64_t[]){2, 9, 4, 8}, (int[]){0, 2, 1, 3}, 4, 4, (int64_t[]){2, 9, 4, 8}, (int[]){0, 2, 1, 3});
  /* Identity and moves of size-1 dims are copies (rank ≤ 1). */
  check_collapse((int64_t[]){2, 3, 4}, (int[]){0, 1, 2}, 3, 1, (int64_t[]){24}, (int[]){0});
  check_collapse((int64_t[]){2, 1, 4}, (int[]){1, 0, 2}, 3, 1, (int64_t[]){8}, (int[]){0});
  check_collapse((int64_t[]){1, 1}, (int[]){1, 0}, 2, 0, NULL, NULL);
}

typedef struct {
  const int64_t *shape;
  int ndim, checked;
  const float *x;
  float *ref, *got;
} CollapseTest;

static void check_collapse_same(const int *perm, void *user) {
  CollapseTest *t = user;
  int64_t cs[MCM_MAX_DIMS];
  int cp[MCM_MAX_DIMS];
  int m = permute_collapse(t->ndim, t->shape, perm, cs, cp);
  int64_t n = shape_numel(t->ndim, t->shape);
  ref_permute(t->ref, t->x, t->ndim, t->shape, perm);
  if (m == 0) cs[0] = 1, cp[0] = 0, m = 1;
  ref_permute(t->got, t->x, m, cs, cp);
  EXPECT(!memcmp(t->ref, t->got, (size_t)n * sizeof(float)), "collapsed permutation differs (rank %d -> %d)", t->ndim,
         m);
  for (int k = 0; k < m; k++) EXPECT(cs[k] != 1 || m == 1, "a size-1 dim survived");
  for (int k = 1; k < m; k++) EXPECT(cp[k] != cp[k - 1] + 1, "two mergeable dims survived");
  t->checked++;
}

TEST(permute_collapse_keeps_every_permutation) {
  const int64_t shapes[][MCM_MAX_DIMS] = {{2, 3, 5, 1, 4}, {1, 3, 1, 2, 5}, {3, 1, 1, 1, 2}, {2, 2, 3, 3, 2}};
  float x[240], ref[240], got[240];
  for (int i = 0; i < 240; i++) x[i] = (float)i;
  int checked = 0;
  for (int s = 0; s < 4; s++)
    for (int r = 2; r <= 5; r++) {
      CollapseTest t = {shapes[s], r, 0, x, ref, got};
      each_perm(r, check_collapse_same, &t);
      checked += t.checked;
    }
  EXPECT(checked == 4 * 152, "checked %d permutations", checked);
}

/* ------------------------------------------------------------------ upsample */

static Tensor *upsample_loss(Ctx *ctx, Tensor **p, void *user) {
  return weighted_twice(ctx, op_upsample_nearest2x(ctx, p[0]), op_upsample_nearest2x(ctx, p[0]));
}

TEST(upsample_nearest2x_values_and_gradients) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 1, SHAPE(2, 3, 3, 5));
  Tensor *y = op_upsample_nearest2x(ctx, x);
  CHECK_SHAPE("test", y, 2, 3, 6, 10);
  const float *X = x->data, *Y = y->data;
  for (int m = 0; m < 6; m++)
    for (int i = 0; i < 6; i++)
      for (int j = 0; j < 10; j++)
        EXPECT(Y[(m * 6 + i) * 10 + j] == X[(m * 3 + i / 2) * 5 + j / 2], "map %d (%d,%d)", m, i, j);
  EXPECT(gradcheck(ctx, upsample_loss, &x, 1, NULL, (GradcheckOpts){0}) == 0, "upsample");
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ sum_dim / mean_dim */

typedef struct {
  int dim;
  bool keepdim, mean;
} DimArgs;

static Tensor *dim_op(Ctx *ctx, Tensor *x, const DimArgs *a) {
  return a->mean ? op_mean_dim(ctx, x, a->dim, a->keepdim) : op_sum_dim(ctx, x, a->dim, a->keepdim);
}

static Tensor *dim_loss(Ctx *ctx, Tensor **p, void *user) {
  return weighted_twice(ctx, dim_op(ctx, p[0], user), dim_op(ctx, p[0], user));
}

TEST(sum_dim_shapes_and_values) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x = leaf(ctx, 1, SHAPE(2, 3, 5));
  const float *X = x->data;
  Tensor *y = op_sum_dim(ctx, x, 1, false);
  CHECK_SHAPE("test", y, 2, 5);
  for (int b = 0; b < 2; b++)
    for (int k = 0; k < 5; k++) {
      double s = 0;
      for (int c = 0; c < 3; c++) s += X[(b * 3 + c) * 5 + k];
      EXPECT(((float *)y->data)[b * 5 + k] == (float)s, "sum (%d,%d)", b, k);
    }
  y = op_mean_dim(ctx, x, -1, true);
  CHECK_SHAPE("test", y, 2, 3, 1);
  for (int r = 0; r < 6; r++) {
    double s = 0;
    for (int k = 0; k < 5; k++) s += X[r * 5 + k];
    EXPECT_NEAR(((float *)y->data)[r], s / 5, 1e-7);
  }
  y = op_sum_dim(ctx, x, 0, true);
  CHECK_SHAPE("test", y, 1, 3, 5);
  Tensor *v = leaf(ctx, 2, SHAPE(7));
  CHECK_SHAPE("test", op_sum_dim(ctx, v, 0, false), 1); /* rank 1 reduces to (1) */
  CHECK_SHAPE("test", op_mean_dim(ctx, v, 0, true), 1);
  EXPECT_NEAR(((float *)op_sum_dim(ctx, v, 0, false)->data)[0], sum_cpu(v->data, 7), 1e-6);
  ctx_destroy(ctx);
}

TEST(sum_dim_and_mean_dim_match_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *x4 = leaf(ctx, 3, SHAPE(2, 3, 4, 5)), *x5 = leaf(ctx, 4, SHAPE(3, 1, 2, 3, 2));
  int checked = 0;
  for (int mean = 0; mean < 2; mean++)
    for (int keep = 0; keep < 2; keep++) {
      for (int d = 0; d < 4; d++) {
        DimArgs a = {d, keep, mean};
        EXPECT(gradcheck(ctx, dim_loss, &x4, 1, &a, (GradcheckOpts){0}) == 0, "%s dim %d keep %d",
               mean ? "mean" : "sum", d, keep);
        checked++;
      }
      for (int d = -5; d < 0; d++) {
        DimArgs a = {d, keep, mean};
        EXPECT(gradcheck(ctx, dim_loss, &x5, 1, &a, (GradcheckOpts){0}) == 0, "rank 5 %s dim %d keep %d",
               mean ? "mean" : "sum", d, keep);
        checked++;
      }
    }
  EXPECT(checked == 36, "checked %d cases", checked);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ fatal paths */

TEST_EXIT_MSG(concat_shape_mismatch_is_fatal, 1,
              "concat: xs[1] has shape [2, 3, 5] and xs[0] [2, 4, 4]; they must agree except along dim 1") {
  Ctx *ctx = ctx_create_cpu(0);
  op_concat(ctx, (Tensor *[]){tensor_new(ctx, DT_F32, SHAPE(2, 4, 4)), tensor_new(ctx, DT_F32, SHAPE(2, 3, 5))}, 2, 1);
}

TEST_EXIT_MSG(slice_outside_is_fatal, 1, "slice: the window [3, 6) along dim 1 lies outside x [2, 5, 3]") {
  Ctx *ctx = ctx_create_cpu(0);
  op_slice(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 5, 3)), 1, 3, 3);
}

TEST_EXIT_MSG(permute_bad_perm_is_fatal, 1, "permute: (0, 2, 2) is not a permutation of the 3 dims of x [2, 3, 4]") {
  Ctx *ctx = ctx_create_cpu(0);
  op_permute(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 3, 4)), (int[]){0, 2, 2});
}

TEST_EXIT_MSG(sum_dim_out_of_range_is_fatal, 1,
              "sum_dim: dim 3 is out of range for a tensor of rank 3 (expected -3..2)") {
  Ctx *ctx = ctx_create_cpu(0);
  op_sum_dim(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 3, 4)), 3, false);
}

TEST_EXIT_MSG(upsample_needs_rank_4, 1, "upsample_nearest2x") {
  Ctx *ctx = ctx_create_cpu(0);
  op_upsample_nearest2x(ctx, tensor_new(ctx, DT_F32, SHAPE(2, 3, 4)));
}
