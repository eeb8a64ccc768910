/* Unary math, division and the fused losses on the GPU (see math.h): grid-stride kernels
 * templated on the storage type (fp32 or bf16; the math is always fp32). Backward kernels
 * accumulate. expf/logf (not the __expf intrinsics), IEEE sqrtf and division keep results
 * within a few ulp of the CPU reference.
 *
 * Division's broadcast gradients are reductions of dy without float atomics, so runs repeat
 * bit for bit: element i of the broadcast operand t sums its m terms (dy/b for a, dy·a for
 * b, which is then scaled by −1/b_i²) in S chunks, S depending only on the sizes (n·S ≈ 64 K
 * threads, at least 32 terms a chunk). One thread per (element, chunk), neighbouring
 * threads on neighbouring elements; with S > 1 the partial sums go to an fp32 scratch and
 * one warp per element adds them in a fixed tree. (mcm divides mostly by frozen buffers, so
 * this path is rare; it is general rather than tuned like elementwise.cu's.)
 *
 * The losses follow reduce.cu: pass 1 is a grid whose size depends only on n, each block
 * summing a fixed grid-stride slice in a fixed shuffle tree into one partial; pass 2 is one
 * block over the partials. Their backward kernels are pointwise. */
#include "cuda_common.h"
#include "math.h"

namespace {

const int kThreads = 256;
const int kMaxBlocks = 1024;          /* loss pass-1 grid cap: the partials stay one block's work */
const int64_t kTargetItems = 1 << 16; /* threads wanted for a broadcast gradient */
const int64_t kMinChunk = 32;         /* fewest terms a chunk sums */

#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---------------------------------------------------------------- unary */

__device__ __forceinline__ float unary_value(float v, Unary u, float lo, float hi) {
  switch (u) {
    case UN_EXP: return expf(v);
    case UN_LOG: return logf(v);
    case UN_SQRT: return sqrtf(v);
    case UN_SQUARE: return v * v;
    case UN_ABS: return fabsf(v);
    default: return v < lo ? lo : v > hi ? hi : v; /* UN_CLAMP; NaN falls through */
  }
}

/* f'(x)·dy, as the CPU reference (and PyTorch) evaluates it. */
__device__ __forceinline__ float unary_grad(float v, float g, Unary u, float lo, float hi) {
  switch (u) {
    case UN_EXP: return g * expf(v);
    case UN_LOG: return g / v;
    case UN_SQRT: return g / (2.0f * sqrtf(v));
    case UN_SQUARE: return g * (2.0f * v);
    case UN_ABS: return v > 0.0f ? g : v < 0.0f ? -g : 0.0f;
    default: return v > lo && v < hi ? g : 0.0f; /* UN_CLAMP */
  }
}

/* y (n) = f(x (n)) */
template <typename T>
__global__ void unary_forward_kernel(T *y, const T *x, int64_t n, Unary u, float lo, float hi) {
  GRID_STRIDE(i, n) y[i] = from_f<T>(unary_value(to_f(x[i]), u, lo, hi));
}

/* dx (n) += f'(x (n)) · dy (n) */
template <typename T>
__global__ void unary_backward_kernel(T *dx, const T *dy, const T *x, int64_t n, Unary u, float lo, float hi) {
  GRID_STRIDE(i, n) dx[i] = from_f<T>(to_f(dx[i]) + unary_grad(to_f(x[i]), to_f(dy[i]), u, lo, hi));
}

/* ---------------------------------------------------------------- division */

/* y (n) = a (n) / b (n) */
template <typename T>
__global__ void div_flat_kernel(T *y, const T *a, const T *b, int64_t n) {
  GRID_STRIDE(i, n) y[i] = from_f<T>(to_f(a[i]) / to_f(b[i]));
}

/* y (bc.n) = a / b, a and b indexed through the plan's strides. */
template <typename T>
__global__ void div_bcast_kernel(T *y, const T *a, const T *b, Bcast bc) {
  GRID_STRIDE(i, bc.n) {
    int64_t r = i, ia = 0, ib = 0;
    for (int d = bc.ndim - 1; d >= 0; d--) {
      int64_t c = r % bc.shape[d];
      r /= bc.shape[d];
      ia += c * bc.sa[d], ib += c * bc.sb[d];
    }
    y[i] = from_f<T>(to_f(a[ia]) / to_f(b[ib]));
  }
}

/* da (n) += dy / b, db (n) += −dy·a / b² (torch's formulas); either may be NULL. */
template <typename T>
__global__ void div_flat_backward_kernel(T *da, T *db, const T *dy, const T *a, const T *b, int64_t n) {
  GRID_STRIDE(i, n) {
    float g = to_f(dy[i]), vb = to_f(b[i]);
    if (da) da[i] = from_f<T>(to_f(da[i]) + g / vb);
    if (db) db[i] = from_f<T>(to_f(db[i]) + -g * to_f(a[i]) / (vb * vb));
  }
}

/* Element i of t's gradient from its summed terms: acc for a, −acc / b_i² for b (tb = b). */
template <typename T>
__device__ __forceinline__ void div_grad_finish(T *dt, const T *tb, int64_t i, float acc) {
  float v = tb ? -acc / (to_f(tb[i]) * to_f(tb[i])) : acc;
  dt[i] = from_f<T>(to_f(dt[i]) + v);
}

/* Work item w = s·n + i sums terms [s·chunk, (s+1)·chunk) of element i of t: dy/other for
 * a (tb NULL), dy·other for b (tb = b). With one chunk (S == 1) it finishes dt[i],
 * otherwise it stores the sum in partial[w]. */
template <typename T>
__global__ void div_grad_chunks_kernel(T *dt, float *partial, const T *dy, const T *other, const T *tb, BcastGrad g,
                                       int64_t chunk, int64_t S) {
  GRID_STRIDE(w, g.n * S) {
    int64_t i = w % g.n, s = w / g.n;
    int64_t j0 = s * chunk, j1 = min(g.m, j0 + chunk);
    int64_t ky = 0, ko = 0, r = i;
    for (int d = g.nk - 1; d >= 0; d--) {
      int64_t c = r % g.k_size[d];
      r /= g.k_size[d];
      ky += c * g.k_sy[d], ko += c * g.k_so[d];
    }
    /* An odometer over the reduced dimensions, started at term j0. */
    int64_t coord[MCM_MAX_DIMS], ry = 0, ro = 0;
    r = j0;
    for (int d = g.nr - 1; d >= 0; d--) {
      coord[d] = r % g.r_size[d];
      r /= g.r_size[d];
      ry += coord[d] * g.r_sy[d], ro += coord[d] * g.r_so[d];
    }
    float acc = 0.0f;
    for (int64_t j = j0; j < j1; j++) {
      float vy = to_f(dy[ky + ry]), vo = to_f(other[ko + ro]);
      acc += tb ? vy * vo : vy / vo;
      for (int d = g.nr - 1; d >= 0; d--) {
        ry += g.r_sy[d], ro += g.r_so[d];
        if (++coord[d] < g.r_size[d]) break;
        ry -= g.r_size[d] * g.r_sy[d], ro -= g.r_size[d] * g.r_so[d];
        coord[d] = 0;
      }
    }
    if (S == 1)
      div_grad_finish(dt, tb, i, acc);
    else
      partial[w] = acc;
  }
}

/* dt (n) finished from Σ_s partial (S, n)[s, i]: one warp per element, lanes striding over
 * s, then a shuffle tree (fixed order). */
template <typename T>
__global__ void div_grad_partials_kernel(T *dt, const float *partial, const T *tb, int64_t n, int64_t S) {
  int lane = threadIdx.x % 32;
  int64_t first = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32, step = (int64_t)gridDim.x * blockDim.x / 32;
  for (int64_t i = first; i < n; i += step) { /* uniform across the warp */
    float acc = 0.0f;
    for (int64_t s = lane; s < S; s += 32) acc += partial[s * n + i];
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) div_grad_finish(dt, tb, i, acc);
  }
}

/* One operand's gradient through the plan g (see the file comment). */
template <typename T>
void div_grad(Ctx *ctx, T *dt, const T *dy, const T *other, const T *tb, const BcastGrad &g) {
  if (g.n == 0) return;
  cudaStream_t stream = CTX_STREAM(ctx);
  int64_t S = (kTargetItems + g.n - 1) / g.n, most = (g.m + kMinChunk - 1) / kMinChunk;
  if (S > most) S = most;
  if (S < 1) S = 1;
  int64_t chunk = (g.m + S - 1) / S;
  S = (g.m + chunk - 1) / chunk;
  float *partial = S > 1 ? (float *)ctx_alloc_act(ctx, (size_t)(g.n * S) * sizeof(float)) : NULL; /* (S, n) */
  div_grad_chunks_kernel<<<cuda_blocks(g.n * S, kThreads), kThreads, 0, stream>>>(dt, partial, dy, other, tb, g,
                                                                                  chunk, S);
  CUDA_LAUNCH_CHECK();
  if (S > 1) {
    div_grad_partials_kernel<<<cuda_blocks(g.n * 32, kThreads), kThreads, 0, stream>>>(dt, partial, tb, g.n, S);
    CUDA_LAUNCH_CHECK();
  }
}

template <typename T>
void div_forward_impl(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, const Bcast &bc) {
  T *py = (T *)y->data;
  const T *pa = (const T *)a->data, *pb = (const T *)b->data;
  if (bcast_is_flat(&bc))
    div_flat_kernel<<<cuda_blocks(bc.n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(py, pa, pb, bc.n);
  else
    div_bcast_kernel<<<cuda_blocks(bc.n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(py, pa, pb, bc);
  CUDA_LAUNCH_CHECK();
}

template <typename T>
void div_backward_impl(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                       const Bcast &bc) {
  T *pda = da ? (T *)da->data : NULL, *pdb = db ? (T *)db->data : NULL;
  const T *pdy = (const T *)dy->data, *pa = (const T *)a->data, *pb = (const T *)b->data;
  if (bcast_is_flat(&bc)) {
    div_flat_backward_kernel<<<cuda_blocks(bc.n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(pda, pdb, pdy, pa, pb,
                                                                                           bc.n);
    CUDA_LAUNCH_CHECK();
    return;
  }
  BcastGrad g;
  if (pda) {
    bcast_grad_init(&g, &bc, 0);
    div_grad<T>(ctx, pda, pdy, pb, NULL, g);
  }
  if (pdb) {
    bcast_grad_init(&g, &bc, 1);
    div_grad<T>(ctx, pdb, pdy, pa, pb, g);
  }
}

/* ---------------------------------------------------------------- losses */

enum Loss { LOSS_PSEUDO_HUBER, LOSS_HINGE };

/* One element's loss: pseudo-Huber d²/(√(d² + c²) + c) with d = a − b (= √(d² + c²) − c
 * without cancellation), or the hinge relu(1 + sign·a). */
template <Loss L>
__device__ __forceinline__ float loss_term(float a, float b, float param) {
  if (L == LOSS_PSEUDO_HUBER) {
    float d = a - b, d2 = d * d;
    return d2 / (sqrtf(d2 + param * param) + param);
  }
  float h = 1.0f + param * a;
  return h > 0.0f ? h : 0.0f;
}

/* partial (gridDim.x) = per-block Σ loss_term (b unused by the hinge). */
template <typename T, Loss L>
__global__ void loss_partial_kernel(float *partial, const T *a, const T *b, int64_t n, float param) {
  float s = 0.0f;
  GRID_STRIDE(i, n) s += loss_term<L>(to_f(a[i]), L == LOSS_PSEUDO_HUBER ? to_f(b[i]) : 0.0f, param);
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* y (1) = scale · Σ partial (n_partial); one block. */
__global__ void loss_final_kernel(float *y, const float *partial, int n_partial, float scale) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) s += partial[i];
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) y[0] = scale * s;
}

/* da (n) += scale·dy[0]·d/√(d² + c²), db (n) −= the same; either may be NULL. */
template <typename T>
__global__ void pseudo_huber_backward_kernel(T *da, T *db, const float *dy, const T *a, const T *b, float c,
                                             float scale, int64_t n) {
  float g = scale * dy[0];
  GRID_STRIDE(i, n) {
    float d = to_f(a[i]) - to_f(b[i]);
    float v = g * d / sqrtf(d * d + c * c);
    if (da) da[i] = from_f<T>(to_f(da[i]) + v);
    if (db) db[i] = from_f<T>(to_f(db[i]) - v);
  }
}

/* dx (n) += scale·dy[0]·sign where 1 + sign·x > 0. */
template <typename T>
__global__ void hinge_backward_kernel(T *dx, const float *dy, const T *x, float sign, float scale, int64_t n) {
  float v = scale * dy[0] * sign;
  GRID_STRIDE(i, n) if (1.0f + sign * to_f(x[i]) > 0.0f) dx[i] = from_f<T>(to_f(dx[i]) + v);
}

template <typename T, Loss L>
void loss_sum(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, float param, float scale) {
  int64_t n = a->numel, want = (n + kThreads - 1) / kThreads;
  int blocks = (int)(want < 1 ? 1 : want > kMaxBlocks ? kMaxBlocks : want);
  float *partial = (float *)ctx_alloc_act(ctx, (size_t)blocks * sizeof(float)); /* (blocks) */
  loss_partial_kernel<T, L><<<blocks, kThreads, 0, CTX_STREAM(ctx)>>>(partial, (const T *)a->data,
                                                                      b ? (const T *)b->data : NULL, n, param);
  CUDA_LAUNCH_CHECK();
  loss_final_kernel<<<1, kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data, partial, blocks, scale);
  CUDA_LAUNCH_CHECK();
}

/* ---------------------------------------------------------------- checks */

void check_dtype(const char *op, const char *arg, const Tensor *t) {
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, arg,
            dtype_name(t->dtype));
}

/* On the GPU with ref's dtype and `numel` elements; NULL passes. */
void check_like(const char *op, const char *arg, const Tensor *t, const Tensor *ref, int64_t numel) {
  if (!t) return;
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == ref->dtype, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype),
            dtype_name(ref->dtype));
  MCM_CHECK(t->numel == numel, "%s: %s %s has %lld elements, expected %lld", op, arg, ShapeStr(t).c_str(),
            (long long)t->numel, (long long)numel);
}

/* On the GPU with exactly `shape` and ref's dtype; NULL passes. */
void check_shape(const char *op, const char *arg, const Tensor *t, const Tensor *ref, int ndim, const int64_t *shape) {
  if (!t) return;
  check_like(op, arg, t, ref, t->numel);
  bool same = t->ndim == ndim;
  for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
  char want[96];
  MCM_CHECK(same, "%s: %s has shape %s, expected %s", op, arg, ShapeStr(t).c_str(),
            shape_str(want, sizeof want, ndim, shape));
}

void check_scalar(const char *op, const char *arg, const Tensor *t) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == DT_F32 && t->numel == 1, "%s: %s must be one fp32 element, it is %s %s", op, arg,
            dtype_name(t->dtype), ShapeStr(t).c_str());
}

void check_unary(const char *op, Unary u, const Tensor *x) {
  MCM_CHECK((unsigned)u < UNARY_COUNT, "%s: unknown unary kind %d", op, (int)u);
  check_dtype(op, "x", x);
  check_like(op, "x", x, x, x->numel);
}

/* The plan for a / b, checking a, b and y (the broadcast shape). */
Bcast div_plan(const char *op, const Tensor *y, const Tensor *a, const Tensor *b) {
  check_dtype(op, "a", a);
  check_like(op, "a", a, a, a->numel);
  check_like(op, "b", b, a, b->numel);
  Bcast bc;
  char why[160];
  MCM_CHECK(bcast_init(&bc, a->ndim, a->shape, b->ndim, b->shape, why, sizeof why),
            "%s: a %s and b %s do not broadcast: %s", op, ShapeStr(a).c_str(), ShapeStr(b).c_str(), why);
  check_shape(op, "y", y, a, bc.y_ndim, bc.y_shape);
  return bc;
}

}  // namespace

/* Tensors are always contiguous (tensor.h), so a flat index covers them. */
void unary_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, Unary u, float lo, float hi) {
  check_unary("unary_forward_cuda", u, x);
  check_like("unary_forward_cuda", "y", y, x, x->numel);
  int64_t n = x->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    unary_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)y->data, (const float *)x->data, n, u, lo, hi);
  else
    unary_forward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)x->data, n, u, lo, hi);
  CUDA_LAUNCH_CHECK();
}

void unary_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, Unary u, float lo, float hi) {
  check_unary("unary_backward_cuda", u, x);
  check_like("unary_backward_cuda", "dx", dx, x, x->numel);
  check_like("unary_backward_cuda", "dy", dy, x, x->numel);
  int64_t n = x->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    unary_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, (const float *)x->data, n, u, lo, hi);
  else
    unary_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, (const __nv_bfloat16 *)x->data, n, u, lo, hi);
  CUDA_LAUNCH_CHECK();
}

void div_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b) {
  Bcast bc = div_plan("div_forward_cuda", y, a, b);
  if (bc.n == 0) return;
  if (a->dtype == DT_F32)
    div_forward_impl<float>(ctx, y, a, b, bc);
  else
    div_forward_impl<__nv_bfloat16>(ctx, y, a, b, bc);
}

void div_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b) {
  Bcast bc = div_plan("div_backward_cuda", dy, a, b);
  check_shape("div_backward_cuda", "da", da, a, a->ndim, a->shape);
  check_shape("div_backward_cuda", "db", db, a, b->ndim, b->shape);
  if (bc.n == 0 || (!da && !db)) return;
  if (a->dtype == DT_F32)
    div_backward_impl<float>(ctx, da, db, dy, a, b, bc);
  else
    div_backward_impl<__nv_bfloat16>(ctx, da, db, dy, a, b, bc);
}

void pseudo_huber_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, float c, float scale) {
  check_scalar("pseudo_huber_cuda", "y", y);
  check_dtype("pseudo_huber_cuda", "a", a);
  check_like("pseudo_huber_cuda", "a", a, a, a->numel);
  check_like("pseudo_huber_cuda", "b", b, a, a->numel);
  MCM_CHECK(c > 0.0f, "pseudo_huber_cuda: c = %g, expected > 0", (double)c);
  if (a->dtype == DT_F32)
    loss_sum<float, LOSS_PSEUDO_HUBER>(ctx, y, a, b, c, scale);
  else
    loss_sum<__nv_bfloat16, LOSS_PSEUDO_HUBER>(ctx, y, a, b, c, scale);
}

void pseudo_huber_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a,
                                const Tensor *b, float c, float scale) {
  const char *op = "pseudo_huber_backward_cuda";
  check_scalar(op, "dy", dy);
  check_dtype(op, "a", a);
  check_like(op, "a", a, a, a->numel);
  check_like(op, "b", b, a, a->numel);
  check_like(op, "da", da, a, a->numel);
  check_like(op, "db", db, a, a->numel);
  int64_t n = a->numel;
  if (n == 0 || (!da && !db)) return;
  if (a->dtype == DT_F32)
    pseudo_huber_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        da ? (float *)da->data : NULL, db ? (float *)db->data : NULL, (const float *)dy->data,
        (const float *)a->data, (const float *)b->data, c, scale, n);
  else
    pseudo_huber_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        da ? (__nv_bfloat16 *)da->data : NULL, db ? (__nv_bfloat16 *)db->data : NULL, (const float *)dy->data,
        (const __nv_bfloat16 *)a->data, (const __nv_bfloat16 *)b->data, c, scale, n);
  CUDA_LAUNCH_CHECK();
}

void hinge_cuda(Ctx *ctx, Tensor *y, const Tensor *x, float sign, float scale) {
  check_scalar("hinge_cuda", "y", y);
  check_dtype("hinge_cuda", "x", x);
  check_like("hinge_cuda", "x", x, x, x->numel);
  if (x->dtype == DT_F32)
    loss_sum<float, LOSS_HINGE>(ctx, y, x, NULL, sign, scale);
  else
    loss_sum<__nv_bfloat16, LOSS_HINGE>(ctx, y, x, NULL, sign, scale);
}

void hinge_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, float sign, float scale) {
  check_scalar("hinge_backward_cuda", "dy", dy);
  check_dtype("hinge_backward_cuda", "x", x);
  check_like("hinge_backward_cuda", "x", x, x, x->numel);
  check_like("hinge_backward_cuda", "dx", dx, x, x->numel);
  int64_t n = x->numel;
  if (n == 0) return;
  if (x->dtype == DT_F32)
    hinge_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, (const float *)x->data, sign, scale, n);
  else
    hinge_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const float *)dy->data, (const __nv_bfloat16 *)x->data, sign, scale, n);
  CUDA_LAUNCH_CHECK();
}
