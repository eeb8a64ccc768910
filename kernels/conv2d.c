/* conv2d: CPU reference (im2col + sgemm), dispatch and tape (see conv2d.h). */
#include "conv2d.h"

#include <cblas.h>
#include <omp.h>

#include "cpu_bf16.h"
#include "cuda_api.h"

Conv2dArgs conv2d_args(int stride, int pad) { return (Conv2dArgs){stride, stride, pad, pad, pad, pad, 1, 1, 1}; }

static int out_size(int in, int pad0, int pad1, int dil, int k, int stride) {
  return (in + pad0 + pad1 - dil * (k - 1) - 1) / stride + 1;
}

/* col (CIN·KH·KW, np) for output positions p0 … p0+np−1 (row-major over HO × WO) of one image
 * x (CIN, H, W); zero where the window leaves it; ld is col's row stride. Runs of one output row
 * are copied without per-element bounds tests. */
static void im2col_range(float *col, int64_t ld, const float *x, int CIN, int H, int W, int KH, int KW, int WO,
                         Conv2dArgs a, int64_t p0, int64_t np) {
  for (int r = 0; r < CIN * KH * KW; r++) {
    const int c = r / (KH * KW), kh = r / KW % KH, kw = r % KW;
    float *dst = col + (int64_t)r * ld;
    for (int64_t q = 0; q < np;) {
      const int oh = (int)((p0 + q) / WO), ow0 = (int)((p0 + q) % WO);
      const int n = (int)(np - q < WO - ow0 ? np - q : WO - ow0); /* this output row's part */
      const int ih = oh * a.stride_h - a.pad_top + kh * a.dil_h;
      float *d = dst + q;
      if (ih < 0 || ih >= H) {
        memset(d, 0, (size_t)n * sizeof(float));
      } else {
        const float *xr = x + ((int64_t)c * H + ih) * W;
        const int off = kw * a.dil_w - a.pad_left;
        for (int j = 0; j < n; j++) {
          const int iw = (ow0 + j) * a.stride_w + off;
          d[j] = iw >= 0 && iw < W ? xr[iw] : 0.0f;
        }
      }
      q += n;
    }
  }
}

/* col (CIN·KH·KW, HO·WO) from one image x (CIN, H, W). */
static void im2col(float *col, const float *x, int CIN, int H, int W, int KH, int KW, int HO, int WO, Conv2dArgs a) {
  const int64_t P = (int64_t)HO * WO;
#pragma omp parallel for if ((int64_t)CIN * KH * KW * P > 65536)
  for (int c = 0; c < CIN; c++)
    im2col_range(col + (int64_t)c * KH * KW * P, P, x + (int64_t)c * H * W, 1, H, W, KH, KW, WO, a, 0, P);
}

/* The adjoint of im2col: dx (CIN, H, W) += scatter of col. Parallel over channels, so no
 * two threads touch the same element. */
static void col2im_add(float *dx, const float *col, int CIN, int H, int W, int KH, int KW, int HO, int WO,
                       Conv2dArgs a) {
#pragma omp parallel for if (CIN * KH * KW * HO * WO > 65536)
  for (int c = 0; c < CIN; c++)
    for (int kh = 0; kh < KH; kh++)
      for (int kw = 0; kw < KW; kw++) {
        const float *src = col + ((int64_t)(c * KH + kh) * KW + kw) * HO * WO;
        for (int oh = 0; oh < HO; oh++) {
          int ih = oh * a.stride_h - a.pad_top + kh * a.dil_h;
          if (ih < 0 || ih >= H) continue;
          for (int ow = 0; ow < WO; ow++) {
            int iw = ow * a.stride_w - a.pad_left + kw * a.dil_w;
            if (iw >= 0 && iw < W) dx[((int64_t)c * H + ih) * W + iw] += src[oh * WO + ow];
          }
        }
      }
}

/* Output positions per tile of the forward: the tile's columns (K × CONV_TILE floats; 1.2 MB for
 * the VAE's 128-channel 3×3) stay in cache between im2col and the product, where a whole
 * image's (75 MB at 512 × 32) made the copy a trip to memory and back. */
#define CONV_TILE 256

void conv2d_forward_cpu(float *y, const float *x, const float *w, const float *b, int B, int CIN, int H, int W,
                        int COUT, int KH, int KW, Conv2dArgs a) {
  int HO = out_size(H, a.pad_top, a.pad_bottom, a.dil_h, KH, a.stride_h);
  int WO = out_size(W, a.pad_left, a.pad_right, a.dil_w, KW, a.stride_w);
  const int G = conv2d_groups(a), CG = CIN / G, OG = COUT / G; /* channels per group */
  const int K = CG * KH * KW;
  const int64_t P = (int64_t)HO * WO, tiles = (P + CONV_TILE - 1) / CONV_TILE;
  /* One tile of one group of one image per task; inside the parallel loop OpenBLAS runs each
   * product on the calling thread. With too few tasks to share, the tiles run one after another
   * and OpenBLAS threads each product instead. Every output element is one dot product over K
   * either way. */
  const bool tasks_in_parallel = (int64_t)B * G * tiles >= 2 * omp_get_max_threads();
#pragma omp parallel if (tasks_in_parallel)
  {
    float *col = MALLOC_CHECK((size_t)K * CONV_TILE * sizeof(float));
#pragma omp for collapse(3) schedule(static)
    for (int n = 0; n < B; n++)
      for (int g = 0; g < G; g++)
        for (int64_t t = 0; t < tiles; t++) {
          const int64_t p0 = t * CONV_TILE, np = P - p0 < CONV_TILE ? P - p0 : CONV_TILE;
          im2col_range(col, np, x + ((int64_t)n * CIN + (int64_t)g * CG) * H * W, CG, H, W, KH, KW, WO, a, p0, np);
          float *yt = y + ((int64_t)n * COUT + (int64_t)g * OG) * P + p0;
          /* y[group g][:, tile] (OG, np) = w[group g] (OG, K) · col (K, np) */
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OG, (int)np, K, 1.0f, w + (int64_t)g * OG * K, K, col,
                      (int)np, 0.0f, yt, (int)P);
          if (b)
            for (int o = 0; o < OG; o++)
              for (int64_t p = 0; p < np; p++) yt[(int64_t)o * P + p] += b[g * OG + o];
        }
    free(col);
  }
}

void conv2d_backward_cpu(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int B,
                         int CIN, int H, int W, int COUT, int KH, int KW, Conv2dArgs a) {
  int HO = out_size(H, a.pad_top, a.pad_bottom, a.dil_h, KH, a.stride_h);
  int WO = out_size(W, a.pad_left, a.pad_right, a.dil_w, KW, a.stride_w);
  const int G = conv2d_groups(a), CG = CIN / G, OG = COUT / G;
  int K = CG * KH * KW, P = HO * WO;
  float *col = MALLOC_CHECK((size_t)K * P * sizeof(float));
  for (int n = 0; n < B; n++)
    for (int g = 0; g < G; g++) {
      const float *dyg = dy + ((int64_t)n * COUT + (int64_t)g * OG) * P; /* (OG, P) */
      const int64_t xoff = ((int64_t)n * CIN + (int64_t)g * CG) * H * W;
      const float *wg = w + (int64_t)g * OG * K;                        /* (OG, K) */
      if (dw) { /* dw[group g] (OG, K) += dyg (OG, P) · colᵀ (P, K) */
        im2col(col, x + xoff, CG, H, W, KH, KW, HO, WO, a);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OG, K, P, 1.0f, dyg, P, col, P, 1.0f,
                    dw + (int64_t)g * OG * K, K);
      }
      if (dx) { /* dcol (K, P) = wgᵀ (K, OG) · dyg (OG, P), then scatter */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, OG, 1.0f, wg, K, dyg, P, 0.0f, col, P);
        col2im_add(dx + xoff, col, CG, H, W, KH, KW, HO, WO, a);
      }
    }
  if (db)
    for (int n = 0; n < B; n++) {
      const float *dyn = dy + (int64_t)n * COUT * P;
      for (int o = 0; o < COUT; o++)
        for (int p = 0; p < P; p++) db[o] += dyn[(int64_t)o * P + p];
    }
  free(col);
}

typedef struct {
  Conv2dArgs a;
} Conv2dSaved;

/* 2 · outputs · CIN · KH · KW: the forward, and each of the two gradients. */
static double conv2d_flops(const Tensor *y, const Tensor *w) {
  return 2.0 * (double)y->numel * (double)w->shape[1] * (double)w->shape[2] * (double)w->shape[3];
}

static void conv2d_backward(Ctx *ctx, TapeNode *node) {
  Tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *dy = node->out->grad;
  Conv2dArgs a = ((Conv2dSaved *)node->saved)->a;
  Tensor *dx = x->requires_grad ? grad_of(ctx, x) : NULL;
  Tensor *dw = w->requires_grad ? grad_of(ctx, w) : NULL;
  Tensor *db = b && b->requires_grad ? grad_of(ctx, b) : NULL;
  ctx_count_flops(ctx, w->dtype, conv2d_flops(dy, w) * ((dx != NULL) + (dw != NULL)));
  ON_DEVICE(ctx,
            CPU_REF((dx, dw, db, dy, x, w),
                    conv2d_backward_cpu(dx ? dx->data : NULL, dw ? dw->data : NULL, db ? db->data : NULL, dy->data,
                                        x->data, w->data, (int)x->shape[0], (int)x->shape[1], (int)x->shape[2],
                                        (int)x->shape[3], (int)w->shape[0], (int)w->shape[2], (int)w->shape[3], a)),
            conv2d_backward_cuda(ctx, dx, dw, db, dy, x, w, a));
}

Tensor *op_conv2d(Ctx *ctx, Tensor *x, Tensor *w, Tensor *b, Conv2dArgs a) {
  CHECK_SHAPE("conv2d", x, -1, -1, -1, -1);
  const int G = conv2d_groups(a);
  MCM_CHECK(a.groups >= 0 && x->shape[1] % G == 0,
            "conv2d '%s': groups %d must be >= 0 and divide the %lld input channels", w->name ? w->name : "?",
            a.groups, (long long)x->shape[1]);
  CHECK_SHAPE("conv2d", w, -1, x->shape[1] / G, -1, -1);
  MCM_CHECK(w->shape[0] % G == 0, "conv2d '%s': groups %d must divide the %lld output channels",
            w->name ? w->name : "?", G, (long long)w->shape[0]);
  if (b) CHECK_SHAPE("conv2d", b, w->shape[0]);
  MCM_CHECK((x->dtype == DT_F32 || x->dtype == DT_BF16) && w->dtype == x->dtype && (!b || b->dtype == x->dtype),
            "conv2d '%s': x %s, w %s, b %s: one dtype, fp32 or bf16", w->name ? w->name : "?", dtype_name(x->dtype),
            dtype_name(w->dtype), b ? dtype_name(b->dtype) : "none");
  MCM_CHECK(a.stride_h >= 1 && a.stride_w >= 1 && a.dil_h >= 1 && a.dil_w >= 1 && a.pad_top >= 0 &&
                a.pad_bottom >= 0 && a.pad_left >= 0 && a.pad_right >= 0,
            "conv2d '%s': stride and dilation must be >= 1 and padding >= 0", w->name ? w->name : "?");
  int H = (int)x->shape[2], W = (int)x->shape[3], KH = (int)w->shape[2], KW = (int)w->shape[3];
  int HO = out_size(H, a.pad_top, a.pad_bottom, a.dil_h, KH, a.stride_h);
  int WO = out_size(W, a.pad_left, a.pad_right, a.dil_w, KW, a.stride_w);
  MCM_CHECK(HO >= 1 && WO >= 1, "conv2d '%s': input %s is smaller than the kernel %s after padding",
            w->name ? w->name : "?", TENSOR_SHAPE_STR(x), TENSOR_SHAPE_STR(w));
  Tensor *y = tensor_new(ctx, x->dtype, SHAPE(x->shape[0], w->shape[0], HO, WO));
  ctx_count_flops(ctx, w->dtype, conv2d_flops(y, w));
  ON_DEVICE(ctx,
            CPU_REF((y, x, w, b), conv2d_forward_cpu(y->data, x->data, w->data, b ? b->data : NULL, (int)x->shape[0],
                                                     (int)x->shape[1], H, W, (int)w->shape[0], KH, KW, a)),
            conv2d_forward_cuda(ctx, y, x, w, b, a));
  Tensor *in[3] = {x, w, b};
  if (tape_wants(ctx, 3, in)) {
    TapeNode *node = tape_record(ctx, "conv2d", conv2d_backward, y, 3, in, sizeof(Conv2dSaved));
    ((Conv2dSaved *)node->saved)->a = a;
  }
  return y;
}
