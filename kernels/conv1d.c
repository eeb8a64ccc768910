/* conv1d and conv_transpose1d: CPU reference (conv2d's im2col + sgemm at H = 1), dispatch
 * and tape (see conv1d.h). */
#include "conv1d.h"

#include "cpu_bf16.h"
#include "cuda_api.h"

Conv1dArgs conv1d_args(int stride, int pad, int dilation) { return (Conv1dArgs){stride, pad, pad, dilation, false, 1}; }

int conv1d_out_len(int T, int K, Conv1dArgs a) {
  int64_t span = (int64_t)T + a.pad_left + a.pad_right - (int64_t)a.dilation * (K - 1) - 1;
  return span < 0 ? 0 : (int)(span / a.stride + 1);
}

int conv_transpose1d_out_len(int T, int K, ConvTranspose1dArgs a) {
  int64_t n =
      (int64_t)(T - 1) * a.stride - 2 * (int64_t)a.padding + (int64_t)a.dilation * (K - 1) + a.output_padding + 1;
  return n < 0 ? 0 : n > INT32_MAX ? INT32_MAX : (int)n;
}

/* ------------------------------------------------------------------ circular padding */

static int wrap(int i, int T) {
  int m = i % T;
  return m < 0 ? m + T : m;
}

/* xp (R, TP) = x (R, T) wrapped: xp[r, i] = x[r, (i - left) mod T]. */
static void wrap_pad(float *xp, const float *x, int64_t R, int T, int TP, int left) {
#pragma omp parallel for if (R * TP > 65536)
  for (int64_t r = 0; r < R; r++)
    for (int i = 0; i < TP; i++) xp[r * TP + i] = x[r * T + wrap(i - left, T)];
}

/* The adjoint of wrap_pad: dx (R, T) += Σ of dxp (R, TP) over every i with (i - left) mod T = t. */
static void wrap_add(float *dx, const float *dxp, int64_t R, int T, int TP, int left) {
#pragma omp parallel for if (R * TP > 65536)
  for (int64_t r = 0; r < R; r++)
    for (int t = 0; t < T; t++) {
      float s = 0.0f;
      for (int i = (t + left) % T; i < TP; i += T) s += dxp[r * TP + i];
      dx[r * T + t] += s;
    }
}

/* ------------------------------------------------------------------ conv1d */

void conv1d_forward_cpu(float *y, const float *x, const float *w, const float *b, int B, int CIN, int T, int COUT,
                        int K, Conv1dArgs a) {
  if (!a.circular) {
    conv2d_forward_cpu(y, x, w, b, B, CIN, 1, T, COUT, 1, K,
                       conv1d_as_2d(a.stride, a.pad_left, a.pad_right, a.dilation, a.groups));
    return;
  }
  int TP = T + a.pad_left + a.pad_right;
  float *xp = MALLOC_CHECK((size_t)B * CIN * TP * sizeof(float)); /* (B, CIN, TP) */
  wrap_pad(xp, x, (int64_t)B * CIN, T, TP, a.pad_left);
  conv2d_forward_cpu(y, xp, w, b, B, CIN, 1, TP, COUT, 1, K, conv1d_as_2d(a.stride, 0, 0, a.dilation, a.groups));
  free(xp);
}

void conv1d_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int B,
                         int CIN, int T, int COUT, int K, Conv1dArgs a) {
  if (!a.circular) {
    conv2d_backward_cpu(dx, dw, db, dy, x, w, B, CIN, 1, T, COUT, 1, K,
                        conv1d_as_2d(a.stride, a.pad_left, a.pad_right, a.dilation, a.groups));
    return;
  }
  /* The conv runs on the wrap-padded copy; its input gradient folds back onto x. */
  int TP = T + a.pad_left + a.pad_right;
  int64_t R = (int64_t)B * CIN;
  float *xp = MALLOC_CHECK((size_t)R * TP * sizeof(float));             /* (B, CIN, TP) */
  float *dxp = dx ? CALLOC_CHECK((size_t)R * TP, sizeof(float)) : NULL; /* (B, CIN, TP) */
  wrap_pad(xp, x, R, T, TP, a.pad_left);
  conv2d_backward_cpu(dxp, dw, db, dy, xp, w, B, CIN, 1, TP, COUT, 1, K,
                      conv1d_as_2d(a.stride, 0, 0, a.dilation, a.groups));
  if (dx) wrap_add(dx, dxp, R, T, TP, a.pad_left);
  free(dxp);
  free(xp);
}

/* ------------------------------------------------------------------ conv_transpose1d
 * The transposed conv of x (B, CIN, T) with w (CIN, COUT, K) is the input gradient of the
 * conv  c: (B, COUT, TO) -> (B, CIN, T),  c(u) = conv1d(u, w, stride, padding, dilation),
 * evaluated at "dy" = x. So, with that conv's roles:
 *   forward  y  = c's data gradient  (conv2d_backward_cpu, dx path, dy = x)
 *   dx          = c's forward of dy  (conv2d_forward_cpu)
 *   dw         += c's filter gradient with input dy and output gradient x
 * and the bias is added (and its gradient summed) outside, on the (B, COUT, TO) side. */

static Conv2dArgs adjoint_conv(ConvTranspose1dArgs a) {
  return conv1d_as_2d(a.stride, a.padding, a.padding, a.dilation, 1);
}

void conv_transpose1d_forward_cpu(float *y, const float *x, const float *w, const float *b, int B, int CIN, int T,
                                  int COUT, int K, ConvTranspose1dArgs a) {
  int TO = conv_transpose1d_out_len(T, K, a);
  memset(y, 0, (size_t)B * COUT * TO * sizeof(float));
  /* c has input channels COUT (length TO) and output channels CIN (length T); it never reads
   * its own input on the data-gradient path. */
  conv2d_backward_cpu(y, NULL, NULL, x, NULL, w, B, COUT, 1, TO, CIN, 1, K, adjoint_conv(a));
  if (b)
    for (int n = 0; n < B; n++)
      for (int o = 0; o < COUT; o++) {
        float *yo = y + ((int64_t)n * COUT + o) * TO;
        for (int t = 0; t < TO; t++) yo[t] += b[o];
      }
}

void conv_transpose1d_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                                   int B, int CIN, int T, int COUT, int K, ConvTranspose1dArgs a) {
  int TO = conv_transpose1d_out_len(T, K, a);
  if (dx) { /* dx += c(dy) */
    int64_t n = (int64_t)B * CIN * T;
    float *cx = MALLOC_CHECK((size_t)n * sizeof(float)); /* (B, CIN, T) */
    conv2d_forward_cpu(cx, dy, w, NULL, B, COUT, 1, TO, CIN, 1, K, adjoint_conv(a));
    for (int64_t i = 0; i < n; i++) dx[i] += cx[i];
    free(cx);
  }
  if (dw) /* dw (CIN, COUT, K) += c's filter gradient: input dy, output gradient x */
    conv2d_backward_cpu(NULL, dw, NULL, x, dy, w, B, COUT, 1, TO, CIN, 1, K, adjoint_conv(a));
  if (db)
    for (int n = 0; n < B; n++)
      for (int o = 0; o < COUT; o++) {
        const float *dyo = dy + ((int64_t)n * COUT + o) * TO;
        float s = 0.0f;
        for (int t = 0; t < TO; t++) s += dyo[t];
        db[o] += s;
      }
}

/* ------------------------------------------------------------------ ops and tape */

/* "conv1d 'hifigan.conv_pre.weight'" for messages; the weight's name when it has one. */
static const char *op_label(char *buf, size_t size, const char *op, const Tensor *w) {
  mcm_snprintf(buf, size, "%s '%s'", op, w->name ? w->name : "?");
  return buf;
}

/* Shapes and dtypes common to both ops: x (B, CIN, T), w 3-D with CIN/groups at dimension
 * cin_dim, b (w's size at cout_dim). */
static void check_inputs(const char *op, const Tensor *x, const Tensor *w, const Tensor *b, int cin_dim, int cout_dim,
                         int groups) {
  CHECK_SHAPE(op, x, -1, -1, -1);
  MCM_CHECK(groups >= 1 && x->shape[1] % groups == 0 && w->ndim == 3 && w->shape[cout_dim] % groups == 0,
            "%s: groups %d must divide the %lld input channels and w %s's %lld output channels", op, groups,
            (long long)x->shape[1], TENSOR_SHAPE_STR(w), (long long)(w->ndim == 3 ? w->shape[cout_dim] : -1));
  int64_t want_w[3] = {-1, -1, -1};
  want_w[cin_dim] = x->shape[1] / groups;
  tensor_check_shape(__FILE__, __LINE__, op, "w", w, 3, want_w);
  if (b) CHECK_SHAPE(op, b, w->shape[cout_dim]);
  MCM_CHECK((x->dtype == DT_F32 || x->dtype == DT_BF16) && w->dtype == x->dtype && (!b || b->dtype == x->dtype),
            "%s: x %s, w %s, b %s: one dtype, fp32 or bf16", op, dtype_name(x->dtype), dtype_name(w->dtype),
            b ? dtype_name(b->dtype) : "none");
  for (int i = 0; i < 3; i++)
    MCM_CHECK(x->shape[i] <= INT32_MAX && w->shape[i] <= INT32_MAX, "%s: x %s or w %s has a size beyond int range", op,
              TENSOR_SHAPE_STR(x), TENSOR_SHAPE_STR(w));
  MCM_CHECK(x->shape[2] >= 1 && w->shape[2] >= 1, "%s: x %s and w %s need a length and a kernel size >= 1", op,
            TENSOR_SHAPE_STR(x), TENSOR_SHAPE_STR(w));
}

typedef struct {
  Conv1dArgs a;
} Conv1dSaved;

/* Model FLOPs, the forward and each gradient: conv1d 2 · outputs · CIN · K (w is (COUT, CIN, K));
 * the transpose 2 · inputs · COUT · K (w is (CIN, COUT, K): each input feeds COUT · K outputs). */
static double conv1d_flops(const Tensor *y, const Tensor *w) {
  return 2.0 * (double)y->numel * (double)w->shape[1] * (double)w->shape[2];
}
static double conv_transpose1d_flops(const Tensor *x, const Tensor *w) {
  return 2.0 * (double)x->numel * (double)w->shape[1] * (double)w->shape[2];
}

static void conv1d_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *dy = node->out->grad;
  Conv1dArgs a = ((Conv1dSaved *)node->saved)->a;
  Tensor *dx = x->requires_grad ? grad_of(ctx, x) : NULL;
  Tensor *dw = w->requires_grad ? grad_of(ctx, w) : NULL;
  Tensor *db = b && b->requires_grad ? grad_of(ctx, b) : NULL;
  ctx_count_flops(ctx, w->dtype, conv1d_flops(dy, w) * ((dx != NULL) + (dw != NULL)));
  ON_DEVICE(
      ctx,
      CPU_REF((dx, dw, db, dy, x, w),
              conv1d_backward_cpu(dx ? dx->data : NULL, dw ? dw->data : NULL, db ? db->data : NULL, dy->data, x->data,
                                  w->data, (int)x->shape[0], (int)x->shape[1], (int)x->shape[2], (int)w->shape[0],
                                  (int)w->shape[2], a)),
      conv1d_backward_cuda(ctx, dx, dw, db, dy, x, w, a));
}

Tensor *op_conv1d(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b, Conv1dArgs a) {
  char op[192];
  op_label(op, sizeof op, "conv1d", w);
  MCM_CHECK(a.groups >= 0, "%s: groups %d must be >= 0 (0 and 1: dense)", op, a.groups);
  check_inputs(op, x, w, b, 1, 0, conv1d_groups(a));
  MCM_CHECK(a.stride >= 1 && a.dilation >= 1 && a.pad_left >= 0 && a.pad_right >= 0,
            "%s: stride %d and dilation %d must be >= 1, padding %d/%d >= 0", op, a.stride, a.dilation, a.pad_left,
            a.pad_right);
  int T = (int)x->shape[2], K = (int)w->shape[2];
  int TO = conv1d_out_len(T, K, a);
  MCM_CHECK(TO >= 1, "%s: input %s is shorter than the kernel %s (dilation %d) after padding %d/%d", op,
            TENSOR_SHAPE_STR(x), TENSOR_SHAPE_STR(w), a.dilation, a.pad_left, a.pad_right);
  Tensor *y = tensor_new(ctx, x->dtype, SHAPE(x->shape[0], w->shape[0], TO)); /* (B, COUT, TO) */
  ctx_count_flops(ctx, w->dtype, conv1d_flops(y, w));
  ON_DEVICE(ctx,
            CPU_REF((y, x, w, b), conv1d_forward_cpu(y->data, x->data, w->data, b ? b->data : NULL, (int)x->shape[0],
                                                     (int)x->shape[1], T, (int)w->shape[0], K, a)),
            conv1d_forward_cuda(ctx, y, x, w, b, a));
  Tensor *in[3] = {x, w, b};
  if (tape_wants(ctx, 3, in)) {
    TapeNode *node = tape_record(ctx, "conv1d", conv1d_backward, y, 3, in, sizeof(Conv1dSaved));
    ((Conv1dSaved *)node->saved)->a = a;
  }
  return y;
}

typedef struct {
  ConvTranspose1dArgs a;
} ConvTranspose1dSaved;

static void conv_transpose1d_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *dy = node->out->grad;
  ConvTranspose1dArgs a = ((ConvTranspose1dSaved *)node->saved)->a;
  Tensor *dx = x->requires_grad ? grad_of(ctx, x) : NULL;
  Tensor *dw = w->requires_grad ? grad_of(ctx, w) : NULL;
  Tensor *db = b && b->requires_grad ? grad_of(ctx, b) : NULL;
  ctx_count_flops(ctx, w->dtype, conv_transpose1d_flops(x, w) * ((dx != NULL) + (dw != NULL)));
  ON_DEVICE(ctx,
            CPU_REF((dx, dw, db, dy, x, w),
                    conv_transpose1d_backward_cpu(dx ? dx->data : NULL, dw ? dw->data : NULL, db ? db->data : NULL,
                                                  dy->data, x->data, w->data, (int)x->shape[0], (int)x->shape[1],
                                                  (int)x->shape[2], (int)w->shape[1], (int)w->shape[2], a)),
            conv_transpose1d_backward_cuda(ctx, dx, dw, db, dy, x, w, a));
}

Tensor *op_conv_transpose1d(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b, int stride, int padding, int output_padding,
                            int dilation) {
  char op[192];
  op_label(op, sizeof op, "conv_transpose1d", w);
  check_inputs(op, x, w, b, 0, 1, 1);
  ConvTranspose1dArgs a = {stride, padding, output_padding, dilation};
  MCM_CHECK(stride >= 1 && dilation >= 1 && padding >= 0, "%s: stride %d and dilation %d must be >= 1, padding %d >= 0",
            op, stride, dilation, padding);
  MCM_CHECK(output_padding >= 0 && output_padding < stride, "%s: output_padding %d must be in [0, stride %d)", op,
            output_padding, stride);
  int T = (int)x->shape[2], K = (int)w->shape[2];
  int64_t TO = conv_transpose1d_out_len(T, K, a);
  MCM_CHECK(TO >= 1 && TO < INT32_MAX, "%s: input %s with w %s, stride %d, padding %d gives output length %lld", op,
            TENSOR_SHAPE_STR(x), TENSOR_SHAPE_STR(w), stride, padding, (long long)TO);
  Tensor *y = tensor_new(ctx, x->dtype, SHAPE(x->shape[0], w->shape[1], TO)); /* (B, COUT, TO) */
  ctx_count_flops(ctx, w->dtype, conv_transpose1d_flops(x, w));
  ON_DEVICE(ctx,
            CPU_REF((y, x, w, b), conv_transpose1d_forward_cpu(y->data, x->data, w->data, b ? b->data : NULL,
                                                               (int)x->shape[0], (int)x->shape[1], T,
                                                               (int)w->shape[1], K, a)),
            conv_transpose1d_forward_cuda(ctx, y, x, w, b, a));
  Tensor *in[3] = {x, w, b};
  if (tape_wants(ctx, 3, in)) {
    TapeNode *node =
        tape_record(ctx, "conv_transpose1d", conv_transpose1d_backward, y, 3, in, sizeof(ConvTranspose1dSaved));
    ((ConvTranspose1dSaved *)node->saved)->a = a;
  }
  return y;
}
