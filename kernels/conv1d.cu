/* conv1d and conv_transpose1d on the GPU (see conv1d.h).
 *
 * Both run through conv2d's cuDNN launchers on (B, C, 1, T) views of the same memory, so
 * they inherit its choices: fp32 storage with FMA math (no TF32), bf16 storage with fp32
 * compute, deterministic algorithms preferred, asymmetric zero padding by an explicit copy.
 *  - conv1d, zero padding: conv2d_forward_cuda / conv2d_backward_cuda directly (groups too:
 *    cuDNN's group count).
 *  - conv1d, circular: a wrap-padded copy of x in the arena (wrap_pad_kernel), an unpadded
 *    conv over it; backward runs the data gradient into a zeroed padded buffer and folds it
 *    back onto dx (wrap_add_kernel, a gather: no atomics, a fixed order).
 *  - conv_transpose1d is the adjoint of the conv c = conv1d(·, w, stride, padding, dilation)
 *    from (B, COUT, TO) to (B, CIN, T): its forward is c's data gradient
 *    (cudnnConvolutionBackwardData inside conv2d_backward_cuda, with dy = x), its input
 *    gradient is c's forward of dy, and its weight gradient is c's filter gradient with the
 *    roles of x and dy swapped (cudnnConvolutionBackwardFilter, input dy, output gradient x).
 *    The bias lives on the (B, COUT, TO) side, outside c: channel_bias_add_cuda / _grad_cuda (conv2d.cu).
 * Backward accumulates dx, dw, db. */
#include "conv1d.h"
#include "cuda_api.h"
#include "cuda_common.h"
#include "elementwise.h"

namespace {

const int kThreads = 256; /* a multiple of 32, as block_sum needs */

/* ------------------------------------------------------------------ views and checks */

/* A (d0, d1, 1, d2) header over data: how conv2d sees a (d0, d1, d2) tensor. */
Tensor view4(DType dt, void *data, int64_t d0, int64_t d1, int64_t d2) {
  Tensor v = {};
  int64_t shape[4] = {d0, d1, 1, d2};
  tensor_init_header(&v, dt, DEV_CUDA, 4, shape);
  v.data = data;
  return v;
}
Tensor view4(const Tensor *t) { return view4(t->dtype, t->data, t->shape[0], t->shape[1], t->shape[2]); }

/* t is on the GPU, has dtype dt and exactly the 3-D shape (d0, d1, d2). */
void check3(const char *op, const char *arg, const Tensor *t, DType dt, int64_t d0, int64_t d1, int64_t d2) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s (all conv1d tensors share one dtype)", op, arg,
            dtype_name(t->dtype), dtype_name(dt));
  MCM_CHECK(t->ndim == 3 && t->shape[0] == d0 && t->shape[1] == d1 && t->shape[2] == d2,
            "%s: %s has shape %s, expected [%lld, %lld, %lld]", op, arg, ShapeStr(t).c_str(), (long long)d0,
            (long long)d1, (long long)d2);
}

void check_bias(const char *op, const char *arg, const Tensor *t, DType dt, int64_t C) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype), dtype_name(dt));
  MCM_CHECK(t->ndim == 1 && t->shape[0] == C, "%s: %s has shape %s, expected [%lld]", op, arg, ShapeStr(t).c_str(),
            (long long)C);
}

/* x is (B, CIN, T) in fp32 or bf16 with every size in int range; returns its dtype. */
DType check_x(const char *op, const Tensor *x) {
  DType dt = x->dtype;
  MCM_CHECK(dt == DT_F32 || dt == DT_BF16, "%s: x is %s, expected fp32 or bf16", op, dtype_name(dt));
  MCM_CHECK(x->ndim == 3 && x->shape[2] >= 1, "%s: x has shape %s, expected (B, CIN, T) with T >= 1", op,
            ShapeStr(x).c_str());
  for (int i = 0; i < 3; i++)
    MCM_CHECK(x->shape[i] <= INT32_MAX, "%s: x %s has a size beyond int range", op, ShapeStr(x).c_str());
  return dt;
}

/* ------------------------------------------------------------------ kernels */

/* xp (R, LP) = x (R, L) wrapped around: xp[r, i] = x[r, (i - left) mod L]. */
template <typename T>
__global__ void wrap_pad_kernel(T *xp, const T *x, int64_t R, int L, int LP, int left) {
  int64_t n = R * LP;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / LP;
    int t = ((int)(i % LP) - left) % L;
    xp[i] = x[r * L + (t < 0 ? t + L : t)];
  }
}

/* The adjoint: dx (R, L) += Σ dxp (R, LP)[r, i] over every i ≡ t + left (mod L). */
template <typename T>
__global__ void wrap_add_kernel(T *dx, const T *dxp, int64_t R, int L, int LP, int left) {
  int64_t n = R * L;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / L;
    int t = (int)(i % L);
    float s = 0.0f;
    for (int j = (t + left) % L; j < LP; j += L) s += to_f(dxp[r * LP + j]);
    dx[i] = from_f<T>(to_f(dx[i]) + s);
  }
}

/* ------------------------------------------------------------------ typed launchers */

/* Returns the wrap-padded copy (B, CIN, LP) of x (B, CIN, L), in the arena. */
void *wrap_padded(Ctx *ctx, const Tensor *x, int LP, int left) {
  int64_t R = x->shape[0] * x->shape[1], n = R * LP;
  int L = (int)x->shape[2];
  MCM_CHECK(L >= 1 && left >= 0 && LP >= L, "wrap_padded: length %d, padded %d, left %d", L, LP, left);
  void *xp = ctx_alloc_act(ctx, (size_t)n * dtype_size(x->dtype));
  if (n == 0) return xp;
  if (x->dtype == DT_F32)
    wrap_pad_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>((float *)xp, (const float *)x->data, R,
                                                                                L, LP, left);
  else
    wrap_pad_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)xp, (const __nv_bfloat16 *)x->data, R, L, LP, left);
  CUDA_LAUNCH_CHECK();
  return xp;
}

/* dx (B, CIN, L) += the fold of dxp (B, CIN, LP). */
void wrap_add(Ctx *ctx, Tensor *dx, const void *dxp, int LP, int left) {
  int64_t R = dx->shape[0] * dx->shape[1];
  int L = (int)dx->shape[2];
  int64_t n = R * L;
  if (n == 0) return;
  if (dx->dtype == DT_F32)
    wrap_add_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>((float *)dx->data, (const float *)dxp,
                                                                                R, L, LP, left);
  else
    wrap_add_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dxp, R, L, LP, left);
  CUDA_LAUNCH_CHECK();
}

/* The conv2d arguments of the conv that conv_transpose1d is the adjoint of. */
Conv2dArgs adjoint_conv(ConvTranspose1dArgs a) { return conv1d_as_2d(a.stride, a.padding, a.padding, a.dilation, 1); }

}  // namespace

/* ------------------------------------------------------------------ conv1d */

void conv1d_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b, Conv1dArgs a) {
  const char *op = "conv1d_forward_cuda";
  DType dt = check_x(op, x);
  MCM_CHECK(w->ndim == 3, "%s: w has shape %s, expected (COUT, CIN/G, K)", op, ShapeStr(w).c_str());
  int64_t B = x->shape[0], CIN = x->shape[1], COUT = w->shape[0], K = w->shape[2], G = conv1d_groups(a);
  MCM_CHECK(a.groups >= 0 && CIN % G == 0 && COUT % G == 0, "%s: groups %d must divide CIN %lld and COUT %lld", op,
            a.groups, (long long)CIN, (long long)COUT);
  MCM_CHECK(a.stride >= 1 && a.dilation >= 1 && a.pad_left >= 0 && a.pad_right >= 0,
            "%s: stride and dilation must be >= 1 and padding >= 0", op);
  int TO = conv1d_out_len((int)x->shape[2], (int)K, a);
  MCM_CHECK(TO >= 1, "%s: x %s is shorter than the kernel %s after padding", op, ShapeStr(x).c_str(),
            ShapeStr(w).c_str());
  check3(op, "w", w, dt, COUT, CIN / G, K);
  check3(op, "y", y, dt, B, COUT, TO);
  if (b) check_bias(op, "b", b, dt, COUT);

  Tensor y4 = view4(y), w4 = view4(w);
  if (!a.circular) {
    Tensor x4 = view4(x);
    conv2d_forward_cuda(ctx, &y4, &x4, &w4, b,
                        conv1d_as_2d(a.stride, a.pad_left, a.pad_right, a.dilation, a.groups));
    return;
  }
  int LP = (int)x->shape[2] + a.pad_left + a.pad_right;
  Tensor xp4 = view4(dt, wrap_padded(ctx, x, LP, a.pad_left), B, CIN, LP); /* (B, CIN, 1, LP) */
  conv2d_forward_cuda(ctx, &y4, &xp4, &w4, b, conv1d_as_2d(a.stride, 0, 0, a.dilation, a.groups));
}

void conv1d_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                          const Tensor *w, Conv1dArgs a) {
  const char *op = "conv1d_backward_cuda";
  DType dt = check_x(op, x);
  MCM_CHECK(w->ndim == 3, "%s: w has shape %s, expected (COUT, CIN/G, K)", op, ShapeStr(w).c_str());
  int64_t B = x->shape[0], CIN = x->shape[1], L = x->shape[2], COUT = w->shape[0], K = w->shape[2];
  int64_t G = conv1d_groups(a);
  MCM_CHECK(a.groups >= 0 && CIN % G == 0 && COUT % G == 0, "%s: groups %d must divide CIN %lld and COUT %lld", op,
            a.groups, (long long)CIN, (long long)COUT);
  int TO = conv1d_out_len((int)L, (int)K, a);
  check3(op, "w", w, dt, COUT, CIN / G, K);
  check3(op, "dy", dy, dt, B, COUT, TO);
  if (dx) check3(op, "dx", dx, dt, B, CIN, L);
  if (dw) check3(op, "dw", dw, dt, COUT, CIN / G, K);
  if (db) check_bias(op, "db", db, dt, COUT);
  if (!dx && !dw && !db) return;

  Tensor dy4 = view4(dy), w4 = view4(w), dw4 = dw ? view4(dw) : Tensor{};
  if (!a.circular) {
    Tensor x4 = view4(x), dx4 = dx ? view4(dx) : Tensor{};
    conv2d_backward_cuda(ctx, dx ? &dx4 : NULL, dw ? &dw4 : NULL, db, &dy4, &x4, &w4,
                         conv1d_as_2d(a.stride, a.pad_left, a.pad_right, a.dilation, a.groups));
    return;
  }
  /* The conv ran on the wrap-padded copy: its filter gradient needs that copy again (conv2d
   * reads its x only for dw), its data gradient lands in a padded buffer that folds onto dx. */
  int LP = (int)L + a.pad_left + a.pad_right;
  size_t padded_bytes = (size_t)(B * CIN * LP) * dtype_size(dt);
  Tensor xp4 = view4(dt, dw ? wrap_padded(ctx, x, LP, a.pad_left) : NULL, B, CIN, LP); /* (B, CIN, 1, LP) */
  Tensor dxp4 = view4(dt, NULL, B, CIN, LP);                                           /* (B, CIN, 1, LP) */
  if (dx) {
    dxp4.data = ctx_alloc_act(ctx, padded_bytes);
    cuda_memset(ctx, dxp4.data, 0, padded_bytes); /* conv2d accumulates into it */
  }
  conv2d_backward_cuda(ctx, dx ? &dxp4 : NULL, dw ? &dw4 : NULL, db, &dy4, &xp4, &w4,
                       conv1d_as_2d(a.stride, 0, 0, a.dilation, a.groups));
  if (dx) wrap_add(ctx, dx, dxp4.data, LP, a.pad_left);
}

/* ------------------------------------------------------------------ conv_transpose1d */

/* Checks x (B, CIN, T), w (CIN, COUT, K) and the arguments; returns TO. */
static int check_transpose(const char *op, const Tensor *x, const Tensor *w, ConvTranspose1dArgs a, DType dt) {
  MCM_CHECK(w->ndim == 3, "%s: w has shape %s, expected (CIN, COUT, K)", op, ShapeStr(w).c_str());
  check3(op, "w", w, dt, x->shape[1], w->shape[1], w->shape[2]);
  MCM_CHECK(a.stride >= 1 && a.dilation >= 1 && a.padding >= 0 && a.output_padding >= 0 && a.output_padding < a.stride,
            "%s: stride and dilation must be >= 1, padding >= 0 and 0 <= output_padding < stride", op);
  int TO = conv_transpose1d_out_len((int)x->shape[2], (int)w->shape[2], a);
  MCM_CHECK(TO >= 1 && TO < INT32_MAX, "%s: x %s and w %s give output length %d", op, ShapeStr(x).c_str(),
            ShapeStr(w).c_str(), TO);
  return TO;
}

void conv_transpose1d_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, const Tensor *w, const Tensor *b,
                                   ConvTranspose1dArgs a) {
  const char *op = "conv_transpose1d_forward_cuda";
  DType dt = check_x(op, x);
  int TO = check_transpose(op, x, w, a, dt);
  int64_t B = x->shape[0], COUT = w->shape[1];
  check3(op, "y", y, dt, B, COUT, TO);
  if (b) check_bias(op, "b", b, dt, COUT);

  /* y = c's data gradient at dy = x. conv2d_backward_cuda adds into its dx (this conv has
   * symmetric padding, so no padded buffer in between) and reads its x, here y, only for
   * the filter gradient, which is not asked for: zero y, and let y stand for c's input. */
  cuda_memset(ctx, y->data, 0, tensor_bytes(y));
  Tensor y4 = view4(y), x4 = view4(x), w4 = view4(w);
  conv2d_backward_cuda(ctx, &y4, NULL, NULL, &x4, &y4, &w4, adjoint_conv(a));
  if (b) channel_bias_add_cuda(ctx, y, b);
}

void conv_transpose1d_backward_cuda(Ctx *ctx, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                                    const Tensor *w, ConvTranspose1dArgs a) {
  const char *op = "conv_transpose1d_backward_cuda";
  DType dt = check_x(op, x);
  int TO = check_transpose(op, x, w, a, dt);
  int64_t B = x->shape[0], CIN = x->shape[1], L = x->shape[2], COUT = w->shape[1], K = w->shape[2];
  check3(op, "dy", dy, dt, B, COUT, TO);
  if (dx) check3(op, "dx", dx, dt, B, CIN, L);
  if (dw) check3(op, "dw", dw, dt, CIN, COUT, K);
  if (db) check_bias(op, "db", db, dt, COUT);

  if (db) channel_bias_grad_cuda(ctx, db, dy);
  Tensor dy4 = view4(dy), x4 = view4(x), w4 = view4(w);
  if (dx) { /* dx += c(dy): cuDNN's forward overwrites, so through a scratch buffer */
    Tensor cx = {};
    int64_t shape[3] = {B, CIN, L};
    tensor_init_header(&cx, dt, DEV_CUDA, 3, shape);
    cx.data = ctx_alloc_act(ctx, tensor_bytes(&cx)); /* (B, CIN, T) */
    Tensor cx4 = view4(&cx);
    conv2d_forward_cuda(ctx, &cx4, &dy4, &w4, NULL, adjoint_conv(a));
    scale_cuda(ctx, dx, &cx, 1.0f, true);
  }
  if (dw) { /* dw += c's filter gradient: c's input is dy, its output gradient is x */
    Tensor dw4 = view4(dw);
    conv2d_backward_cuda(ctx, NULL, &dw4, NULL, &x4, &dy4, &w4, adjoint_conv(a));
  }
}
