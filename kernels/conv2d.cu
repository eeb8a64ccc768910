/* conv2d on the GPU (see conv2d.h): cuDNN's legacy convolution API for the products,
 * small kernels for padding, bias and bias gradient. Groups go to cuDNN as the
 * convolution's group count (filter descriptor (COUT, CIN/G, KH, KW)).
 *
 * - Storage fp32 or bf16, NCHW; compute fp32 (bf16 tensors with a CUDNN_DATA_FLOAT
 *   convolution). fp32 runs force CUDNN_FMA_MATH: cuDNN's default math would use TF32 on
 *   Ampere and later (10-bit mantissa), far from the CPU reference. TF32 can become an
 *   opt-in later.
 * - Asymmetric padding: cuDNN's descriptors pad both sides alike. We pad both sides by
 *   min(top, bottom) / min(left, right) inside cuDNN and write the remaining rows and
 *   columns as explicit zeros into a padded copy of x in the arena. Backward runs the data
 *   gradient into a padded buffer and adds its interior into dx.
 * - Algorithms come from cudnnGet*_v7: the first one cuDNN ranks that is deterministic
 *   and whose workspace fits ctx->workspace; if none is deterministic, the first that
 *   fits. Descriptors are created per call and destroyed after (caching comes later).
 * - Backward accumulates dx, dw, db (cuDNN beta = 1). */
#include "conv2d.h"
#include "cuda_common.h"

namespace {

const int kThreads = 256; /* a multiple of 32 */

/* ------------------------------------------------------------------ geometry */

/* The convolution as cuDNN runs it: symmetric padding (pad_h, pad_w) over an input of
 * HP x WP that already holds the extra zero rows/columns when `padded`. */
struct ConvGeom {
  int B, CIN, H, W;           /* x */
  int COUT, KH, KW;           /* w: (COUT, CIN/G, KH, KW) */
  int G;                      /* groups */
  int HO, WO;                 /* y */
  int pad_h, pad_w;           /* symmetric part, given to cuDNN */
  int ext_top, ext_left;      /* explicit zero rows above / columns left of x in the copy */
  int HP, WP;                 /* the input cuDNN sees */
  bool padded;                /* HP x WP differs from H x W: an explicit copy is needed */
};

void check_int_size(const char *op, const char *what, int64_t v) {
  MCM_CHECK(v >= 0 && v <= INT32_MAX, "%s: %s = %lld does not fit cuDNN's int sizes", op, what, (long long)v);
}

ConvGeom conv_geom(const char *op, const Tensor *x, const Tensor *w, Conv2dArgs a) {
  const int G = conv2d_groups(a);
  MCM_CHECK(a.groups >= 0 && x->ndim == 4 && w->ndim == 4 && x->shape[1] % G == 0 && w->shape[0] % G == 0 &&
                w->shape[1] * G == x->shape[1],
            "%s: x %s and w %s are not (B,CIN,H,W), (COUT,CIN/G,KH,KW) with G = %d dividing CIN and COUT", op,
            ShapeStr(x).c_str(), ShapeStr(w).c_str(), a.groups);
  MCM_CHECK(a.stride_h >= 1 && a.stride_w >= 1 && a.dil_h >= 1 && a.dil_w >= 1 && a.pad_top >= 0 &&
                a.pad_bottom >= 0 && a.pad_left >= 0 && a.pad_right >= 0,
            "%s: stride and dilation must be >= 1 and padding >= 0", op);
  for (int i = 0; i < 4; i++) check_int_size(op, "a dimension of x", x->shape[i]);
  for (int i = 0; i < 4; i++) check_int_size(op, "a dimension of w", w->shape[i]);
  ConvGeom g;
  g.B = (int)x->shape[0], g.CIN = (int)x->shape[1], g.H = (int)x->shape[2], g.W = (int)x->shape[3];
  g.COUT = (int)w->shape[0], g.KH = (int)w->shape[2], g.KW = (int)w->shape[3];
  g.G = G;
  g.pad_h = a.pad_top < a.pad_bottom ? a.pad_top : a.pad_bottom;
  g.pad_w = a.pad_left < a.pad_right ? a.pad_left : a.pad_right;
  g.ext_top = a.pad_top - g.pad_h;
  g.ext_left = a.pad_left - g.pad_w;
  int64_t HP = (int64_t)g.H + g.ext_top + (a.pad_bottom - g.pad_h);
  int64_t WP = (int64_t)g.W + g.ext_left + (a.pad_right - g.pad_w);
  check_int_size(op, "padded H", HP);
  check_int_size(op, "padded W", WP);
  g.HP = (int)HP, g.WP = (int)WP;
  g.padded = g.HP != g.H || g.WP != g.W;
  int64_t HO = (HP + 2 * (int64_t)g.pad_h - (int64_t)a.dil_h * (g.KH - 1) - 1) / a.stride_h + 1;
  int64_t WO = (WP + 2 * (int64_t)g.pad_w - (int64_t)a.dil_w * (g.KW - 1) - 1) / a.stride_w + 1;
  MCM_CHECK(HO >= 1 && WO >= 1, "%s: input %s is smaller than the kernel %s after padding", op, ShapeStr(x).c_str(),
            ShapeStr(w).c_str());
  g.HO = (int)HO, g.WO = (int)WO;
  check_int_size(op, "numel of the padded x", (int64_t)g.B * g.CIN * g.HP * g.WP);
  check_int_size(op, "numel of y", (int64_t)g.B * g.COUT * g.HO * g.WO);
  return g;
}

/* t is on the GPU, has dtype dt and (when shape is given) exactly that 4-D shape. */
void check_tensor(const char *op, const char *arg, const Tensor *t, DType dt, int64_t d0, int64_t d1, int64_t d2,
                  int64_t d3) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s (all conv2d tensors share one dtype)", op, arg,
            dtype_name(t->dtype), dtype_name(dt));
  MCM_CHECK(t->ndim == 4 && t->shape[0] == d0 && t->shape[1] == d1 && t->shape[2] == d2 && t->shape[3] == d3,
            "%s: %s has shape %s, expected [%lld, %lld, %lld, %lld]", op, arg, ShapeStr(t).c_str(), (long long)d0,
            (long long)d1, (long long)d2, (long long)d3);
}

void check_bias(const char *op, const char *arg, const Tensor *t, DType dt, int COUT) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype), dtype_name(dt));
  MCM_CHECK(t->ndim == 1 && t->shape[0] == COUT, "%s: %s has shape %s, expected [%d]", op, arg, ShapeStr(t).c_str(),
            COUT);
}

/* ------------------------------------------------------------------ kernels */

/* xp (B·CIN, HP, WP) = x (B·CIN, H, W) placed at (top, left), zeros elsewhere. */
template <typename T>
__global__ void pad_kernel(T *xp, const T *x, int64_t BC, int H, int W, int HP, int WP, int top, int left) {
  int64_t n = BC * HP * WP;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / WP, bc = r / HP;
    int ih = (int)(r % HP) - top, iw = (int)(i % WP) - left;
    xp[i] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[(bc * H + ih) * W + iw] : from_f<T>(0.0f);
  }
}

/* dx (B·CIN, H, W) += the (top, left)-offset interior of dxp (B·CIN, HP, WP). */
template <typename T>
__global__ void crop_add_kernel(T *dx, const T *dxp, int64_t BC, int H, int W, int HP, int WP, int top, int left) {
  int64_t n = BC * H * W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / W, bc = r / H;
    int ih = (int)(r % H), iw = (int)(i % W);
    dx[i] = from_f<T>(to_f(dx[i]) + to_f(dxp[(bc * HP + ih + top) * WP + iw + left]));
  }
}

/* y (B, COUT, P) += b (COUT) */
template <typename T>
__global__ void bias_add_kernel(T *y, const T *b, int64_t n, int COUT, int64_t P) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>(to_f(y[i]) + to_f(b[(i / P) % COUT]));
}

/* db[o] += Σ_{b,p} dy (B, COUT, P)[b, o, p]: one block per channel, a fixed summation
 * order (no atomics), so repeated runs agree bit for bit. */
template <typename T>
__global__ void bias_grad_kernel(T *db, const T *dy, int B, int COUT, int64_t P) {
  int o = blockIdx.x;
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < (int64_t)B * P; j += blockDim.x) {
    int64_t b = j / P, p = j % P;
    s += to_f(dy[(b * COUT + o) * P + p]);
  }
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) db[o] = from_f<T>(to_f(db[o]) + s);
}

/* Typed launchers: one body for fp32 and bf16. */
template <typename T>
void launch_pad(Ctx *ctx, void *xp, const void *x, const ConvGeom &g) {
  int64_t n = (int64_t)g.B * g.CIN * g.HP * g.WP;
  pad_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
      (T *)xp, (const T *)x, (int64_t)g.B * g.CIN, g.H, g.W, g.HP, g.WP, g.ext_top, g.ext_left);
  CUDA_LAUNCH_CHECK();
}

template <typename T>
void launch_crop_add(Ctx *ctx, void *dx, const void *dxp, const ConvGeom &g) {
  int64_t n = (int64_t)g.B * g.CIN * g.H * g.W;
  crop_add_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
      (T *)dx, (const T *)dxp, (int64_t)g.B * g.CIN, g.H, g.W, g.HP, g.WP, g.ext_top, g.ext_left);
  CUDA_LAUNCH_CHECK();
}


/* x's data as cuDNN must see it: x itself, or a zero-padded copy in the arena. */
const void *padded_input(Ctx *ctx, const Tensor *x, const ConvGeom &g) {
  if (!g.padded) return x->data;
  void *xp = ctx_alloc_act(ctx, (size_t)g.B * g.CIN * g.HP * g.WP * dtype_size(x->dtype)); /* (B,CIN,HP,WP) */
  if (x->dtype == DT_F32)
    launch_pad<float>(ctx, xp, x->data, g);
  else
    launch_pad<__nv_bfloat16>(ctx, xp, x->data, g);
  return xp;
}

/* ------------------------------------------------------------------ cuDNN descriptors */

struct ConvDescs {
  cudnnTensorDescriptor_t x, y;       /* (B,CIN,HP,WP), (B,COUT,HO,WO) */
  cudnnFilterDescriptor_t w;          /* (COUT,CIN/G,KH,KW) */
  cudnnConvolutionDescriptor_t conv;
  bool fp32;
};

ConvDescs descs_create(const char *op, const ConvGeom &g, Conv2dArgs a, DType dt) {
  ConvDescs d;
  d.fp32 = dt == DT_F32;
  cudnnDataType_t cdt = d.fp32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.y));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&d.w));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d.conv));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NCHW, cdt, g.B, g.CIN, g.HP, g.WP));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.y, CUDNN_TENSOR_NCHW, cdt, g.B, g.COUT, g.HO, g.WO));
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(d.w, cdt, CUDNN_TENSOR_NCHW, g.COUT, g.CIN / g.G, g.KH, g.KW));
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d.conv, g.pad_h, g.pad_w, a.stride_h, a.stride_w, a.dil_h, a.dil_w,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_CHECK(cudnnSetConvolutionGroupCount(d.conv, g.G));
  CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, d.fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  int n, c, h, w;
  CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(d.conv, d.x, d.w, &n, &c, &h, &w));
  MCM_CHECK(n == g.B && c == g.COUT && h == g.HO && w == g.WO,
            "%s: cuDNN computes output [%d, %d, %d, %d], mcm expects [%d, %d, %d, %d]", op, n, c, h, w, g.B, g.COUT,
            g.HO, g.WO);
  return d;
}

void descs_destroy(ConvDescs &d) {
  CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(d.conv));
  CUDNN_CHECK(cudnnDestroyFilterDescriptor(d.w));
  CUDNN_CHECK(cudnnDestroyTensorDescriptor(d.y));
  CUDNN_CHECK(cudnnDestroyTensorDescriptor(d.x));
}

/* Picks from cuDNN's ranked answer (any of the three *AlgoPerf_t types): deterministic
 * algorithms first, then the rest; skips those that failed, those whose workspace
 * (asked with ws_of, under the math type they will run with) exceeds the context's, and
 * for fp32 those that need tensor-op math. Leaves the chosen math type set on d.conv. */
struct AlgoChoice {
  int algo;
  size_t ws;
};

template <typename Perf, typename WsFn>
AlgoChoice pick_algo(const char *op, const char *pass, const Perf *perf, int n, const ConvDescs &d, size_t ws_cap,
                     WsFn ws_of) {
  for (int want_det = 1; want_det >= 0; want_det--)
    for (int i = 0; i < n; i++) {
      const Perf &p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      if ((p.determinism == CUDNN_DETERMINISTIC) != (want_det == 1)) continue;
      if (d.fp32 && (p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
        continue;
      CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, d.fp32 ? CUDNN_FMA_MATH : p.mathType));
      size_t ws = 0;
      if (ws_of((int)p.algo, &ws) != CUDNN_STATUS_SUCCESS || ws > ws_cap) continue;
      return AlgoChoice{(int)p.algo, ws};
    }
  MCM_FATAL("%s: cuDNN offers no %s algorithm for this shape and dtype within the %zu-byte workspace "
            "(hint: a larger ctx workspace, or fp32)",
            op, pass, ws_cap);
}

}  // namespace

/* ------------------------------------------------------------------ launchers */

void conv2d_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b, Conv2dArgs a) {
  const char *op = "conv2d_forward_cuda";
  ConvGeom g = conv_geom(op, x, w, a);
  DType dt = x->dtype;
  MCM_CHECK(dt == DT_F32 || dt == DT_BF16, "%s: x is %s, expected fp32 or bf16", op, dtype_name(dt));
  check_tensor(op, "x", x, dt, g.B, g.CIN, g.H, g.W);
  check_tensor(op, "w", w, dt, g.COUT, g.CIN / g.G, g.KH, g.KW);
  check_tensor(op, "y", y, dt, g.B, g.COUT, g.HO, g.WO);
  if (b) check_bias(op, "b", b, dt, g.COUT);

  const void *xin = padded_input(ctx, x, g);
  cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
  ConvDescs d = descs_create(op, g, a, dt);
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int got = 0;
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got,
                                                     perf));
  AlgoChoice c = pick_algo(op, "forward", perf, got, d, ctx->workspace_bytes, [&](int algo, size_t *ws) {
    return cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, (cudnnConvolutionFwdAlgo_t)algo, ws);
  });
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnConvolutionForward(h, &one, d.x, xin, d.w, w->data, d.conv, (cudnnConvolutionFwdAlgo_t)c.algo,
                                      ctx->workspace, c.ws, &zero, d.y, y->data));
  descs_destroy(d);
  if (b) channel_bias_add_cuda(ctx, y, b);
}

void conv2d_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                          const Tensor *w, Conv2dArgs a) {
  const char *op = "conv2d_backward_cuda";
  ConvGeom g = conv_geom(op, x, w, a);
  DType dt = x->dtype;
  MCM_CHECK(dt == DT_F32 || dt == DT_BF16, "%s: x is %s, expected fp32 or bf16", op, dtype_name(dt));
  check_tensor(op, "x", x, dt, g.B, g.CIN, g.H, g.W);
  check_tensor(op, "w", w, dt, g.COUT, g.CIN / g.G, g.KH, g.KW);
  check_tensor(op, "dy", dy, dt, g.B, g.COUT, g.HO, g.WO);
  if (dx) check_tensor(op, "dx", dx, dt, g.B, g.CIN, g.H, g.W);
  if (dw) check_tensor(op, "dw", dw, dt, g.COUT, g.CIN / g.G, g.KH, g.KW);
  if (db) check_bias(op, "db", db, dt, g.COUT);

  if (db) channel_bias_grad_cuda(ctx, db, dy);
  if (!dx && !dw) return;

  cudnnHandle_t h = (cudnnHandle_t)ctx->cudnn;
  ConvDescs d = descs_create(op, g, a, dt);
  const float one = 1.0f, zero = 0.0f;
  if (dw) { /* dw += x ⋆ dy */
    const void *xin = padded_input(ctx, x, g);
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int got = 0;
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf));
    AlgoChoice c = pick_algo(op, "filter-gradient", perf, got, d, ctx->workspace_bytes, [&](int algo, size_t *ws) {
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w,
                                                            (cudnnConvolutionBwdFilterAlgo_t)algo, ws);
    });
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, d.x, xin, d.y, dy->data, d.conv,
                                               (cudnnConvolutionBwdFilterAlgo_t)c.algo, ctx->workspace, c.ws, &one,
                                               d.w, dw->data));
  }
  if (dx) { /* dx += wᵀ ⋆ dy, through a padded buffer when the padding is explicit */
    void *dxin = dx->data;
    const float *beta = &one;
    if (g.padded) {
      dxin = ctx_alloc_act(ctx, (size_t)g.B * g.CIN * g.HP * g.WP * dtype_size(dt)); /* (B,CIN,HP,WP) */
      beta = &zero; /* cuDNN does not read the output when beta is 0 */
    }
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int got = 0;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x,
                                                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
    AlgoChoice c = pick_algo(op, "data-gradient", perf, got, d, ctx->workspace_bytes, [&](int algo, size_t *ws) {
      return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, (cudnnConvolutionBwdDataAlgo_t)algo,
                                                          ws);
    });
    CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, d.w, w->data, d.y, dy->data, d.conv,
                                             (cudnnConvolutionBwdDataAlgo_t)c.algo, ctx->workspace, c.ws, beta, d.x,
                                             dxin));
    if (g.padded) {
      if (dt == DT_F32)
        launch_crop_add<float>(ctx, dx->data, dxin, g);
      else
        launch_crop_add<__nv_bfloat16>(ctx, dx->data, dxin, g);
    }
  }
  descs_destroy(d);
}

/* ------------------------------------------------------------------ per-channel bias (shared with conv1d) */

void channel_bias_add_cuda(Ctx *ctx, Tensor *y, const Tensor *b) {
  int64_t n = y->numel, C = y->shape[1], P = C ? n / (y->shape[0] * C) : 0;
  MCM_CHECK(b->numel == C && b->dtype == y->dtype, "channel_bias_add_cuda: bias %s for output %s", ShapeStr(b).c_str(),
            ShapeStr(y).c_str());
  if (n == 0) return;
  if (y->dtype == DT_F32)
    bias_add_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data, (const float *)b->data,
                                                                                n, (int)C, P);
  else
    bias_add_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)b->data, n, (int)C, P);
  CUDA_LAUNCH_CHECK();
}

void channel_bias_grad_cuda(Ctx *ctx, Tensor *db, const Tensor *dy) {
  int64_t C = dy->shape[1], B = dy->shape[0], P = C && B ? dy->numel / (B * C) : 0;
  MCM_CHECK(db->numel == C && db->dtype == dy->dtype, "channel_bias_grad_cuda: bias grad %s for %s", ShapeStr(db).c_str(),
            ShapeStr(dy).c_str());
  if (C == 0) return;
  if (dy->dtype == DT_F32)
    bias_grad_kernel<<<(unsigned)C, kThreads, 0, CTX_STREAM(ctx)>>>((float *)db->data, (const float *)dy->data, (int)B,
                                                                   (int)C, P);
  else
    bias_grad_kernel<<<(unsigned)C, kThreads, 0, CTX_STREAM(ctx)>>>((__nv_bfloat16 *)db->data,
                                                                   (const __nv_bfloat16 *)dy->data, (int)B, (int)C, P);
  CUDA_LAUNCH_CHECK();
}
