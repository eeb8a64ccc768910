/* L2 and spectral normalisation on the GPU (see normalize.h). fp32 or bf16 storage of x
 * and w, fp32 math; u, v, σ and all scratch are fp32.
 *
 * Every reduction is a fixed block tree (block_sum), never a float atomic, so repeated
 * runs agree bit for bit:
 *   l2_normalize   one block per row of D.
 *   spectral norm  Wᵀu: one thread per column, summing down the OUT rows in order;
 *                  Wv and the backward's row sums Σ_j dy⊙W: one block per row; the vector
 *                  norms, σ = uᵀ(Wv) and the total Σ dy⊙W: one block. OUT and IN are
 *                  discriminator-head sizes (a few hundred, a few thousand), so a single
 *                  block over a vector is cheap. σ stays on the device: no host sync. */
#include "cuda_common.h"
#include "normalize.h"

namespace {

const int kThreads = 256;

/* s, computed by thread 0 (block_sum), handed to every thread of the block. */
__device__ __forceinline__ float broadcast0(float s) {
  __shared__ float shared;
  if (threadIdx.x == 0) shared = s;
  __syncthreads();
  float r = shared;
  __syncthreads(); /* the next broadcast0 or block_sum may overwrite shared memory */
  return r;
}

/* y (N, D) = x / max(‖x‖, eps) per row; one block per row. */
template <typename T>
__global__ void l2_forward_kernel(T *y, const T *x, int64_t D, float eps) {
  const T *xr = x + blockIdx.x * D;
  T *yr = y + blockIdx.x * D;
  float ss = 0.0f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float v = to_f(xr[d]);
    ss += v * v;
  }
  float den = broadcast0(fmaxf(sqrtf(block_sum<kThreads>(ss)), eps));
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yr[d] = from_f<T>(to_f(xr[d]) / den);
}

/* dx (N, D) += dy/n − x (x·dy)/n³ where n = ‖x‖ ≥ eps, else dy/eps; one block per row. */
template <typename T>
__global__ void l2_backward_kernel(T *dx, const T *dy, const T *x, int64_t D, float eps) {
  int64_t off = blockIdx.x * D;
  float ss = 0.0f, xg = 0.0f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float v = to_f(x[off + d]);
    ss += v * v;
    xg += v * to_f(dy[off + d]);
  }
  float nrm = broadcast0(sqrtf(block_sum<kThreads>(ss)));
  float dot = broadcast0(block_sum<kThreads>(xg));
  bool clamped = !(nrm >= eps);
  float inv = clamped ? 1.0f / eps : 1.0f / nrm, c = clamped ? 0.0f : dot / (nrm * nrm * nrm);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
    dx[off + d] = from_f<T>(to_f(dx[off + d]) + to_f(dy[off + d]) * inv - to_f(x[off + d]) * c);
}

/* out (IN) = Wᵀ u: one thread per column j, rows summed in order (coalesced across j). */
template <typename T>
__global__ void mv_t_kernel(float *out, const T *w, const float *u, int64_t OUT, int64_t IN) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < IN; j += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int64_t o = 0; o < OUT; o++) s += to_f(w[o * IN + j]) * u[o];
    out[j] = s;
  }
}

/* out (OUT) = Σ_j a[o, j] · b[o, j] when b2 is a matrix (the backward's dy⊙W), or
 * Σ_j a[o, j] · vec[j] (W v); one block per row o. */
template <typename T>
__global__ void row_dot_kernel(float *out, const T *a, const T *b2, const float *vec, int64_t IN) {
  int64_t o = blockIdx.x;
  const T *ar = a + o * IN;
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < IN; j += blockDim.x)
    s += to_f(ar[j]) * (b2 ? to_f(b2[o * IN + j]) : vec[j]);
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) out[o] = s;
}

/* out[0] = Σ a · b (b NULL: Σ a) over n; one block. */
__global__ void dot_kernel(float *out, const float *a, const float *b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += a[i] * (b ? b[i] : 1.0f);
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) out[0] = s;
}

/* out (n) = acc / max(‖acc‖, eps); one block. */
__global__ void normalize_vec_kernel(float *out, const float *acc, int64_t n, float eps) {
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += acc[i] * acc[i];
  float den = broadcast0(fmaxf(sqrtf(block_sum<kThreads>(ss)), eps));
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = acc[i] / den;
}

/* y (n) = w / σ */
template <typename T>
__global__ void divide_kernel(T *y, const T *w, const float *sigma, int64_t n) {
  float sg = sigma[0];
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>(to_f(w[i]) / sg);
}

/* dw (OUT, IN) += dy/σ − (S/σ²) u vᵀ, S = Σ dy⊙W. */
template <typename T>
__global__ void spectral_backward_kernel(T *dw, const T *dy, const float *u, const float *v, const float *sigma,
                                         const float *S, int64_t OUT, int64_t IN) {
  float sg = sigma[0], c = S[0] / (sg * sg);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < OUT * IN;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = i / IN, j = i % IN;
    dw[i] = from_f<T>(to_f(dw[i]) + to_f(dy[i]) / sg - c * u[o] * v[j]);
  }
}

void check_float(const char *op, const char *what, const Tensor *t, DType dt, int64_t numel) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, what);
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s is %s, expected fp32 or bf16", op, what,
            dtype_name(t->dtype));
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, what, dtype_name(t->dtype), dtype_name(dt));
  MCM_CHECK(t->numel == numel, "%s: %s %s has %lld elements, expected %lld", op, what, ShapeStr(t).c_str(),
            (long long)t->numel, (long long)numel);
}

/* The spectral launchers' common checks; returns IN. */
int64_t check_spectral(const char *op, const Tensor *w, const Tensor *u, const Tensor *v) {
  int64_t OUT = w->shape[0], IN = w->numel / OUT;
  check_float(op, "w", w, w->dtype, OUT * IN);
  check_float(op, "u", u, DT_F32, OUT);
  check_float(op, "v", v, DT_F32, IN);
  MCM_CHECK(OUT <= INT32_MAX, "%s: %lld rows exceed one block per row", op, (long long)OUT);
  return IN;
}

}  // namespace

void l2_normalize_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *x, float eps) {
  int64_t D = x->shape[x->ndim - 1], N = x->numel / D;
  check_float("l2_normalize_forward_cuda", "x", x, x->dtype, x->numel);
  check_float("l2_normalize_forward_cuda", "y", y, x->dtype, x->numel);
  MCM_CHECK(N <= INT32_MAX, "l2_normalize_forward_cuda: %lld rows exceed one block per row", (long long)N);
  if (N == 0) return;
  if (x->dtype == DT_F32)
    l2_forward_kernel<<<(unsigned)N, kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data, (const float *)x->data, D,
                                                                      eps);
  else
    l2_forward_kernel<<<(unsigned)N, kThreads, 0, CTX_STREAM(ctx)>>>((__nv_bfloat16 *)y->data,
                                                                      (const __nv_bfloat16 *)x->data, D, eps);
  CUDA_LAUNCH_CHECK();
}

void l2_normalize_backward_cuda(Ctx *ctx, Tensor *dx, const Tensor *dy, const Tensor *x, float eps) {
  int64_t D = x->shape[x->ndim - 1], N = x->numel / D;
  check_float("l2_normalize_backward_cuda", "x", x, x->dtype, x->numel);
  check_float("l2_normalize_backward_cuda", "dx", dx, x->dtype, x->numel);
  check_float("l2_normalize_backward_cuda", "dy", dy, x->dtype, x->numel);
  MCM_CHECK(N <= INT32_MAX, "l2_normalize_backward_cuda: %lld rows exceed one block per row", (long long)N);
  if (N == 0) return;
  if (x->dtype == DT_F32)
    l2_backward_kernel<<<(unsigned)N, kThreads, 0, CTX_STREAM(ctx)>>>(
        (float *)dx->data, (const float *)dy->data, (const float *)x->data, D, eps);
  else
    l2_backward_kernel<<<(unsigned)N, kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)dx->data, (const __nv_bfloat16 *)dy->data, (const __nv_bfloat16 *)x->data, D, eps);
  CUDA_LAUNCH_CHECK();
}

void spectral_power_iteration_cuda(Ctx *ctx, Tensor *u, Tensor *v, const Tensor *w, int n, float eps) {
  int64_t OUT = w->shape[0], IN = check_spectral("spectral_power_iteration_cuda", w, u, v);
  float *acc = (float *)ctx_alloc_act(ctx, (size_t)(OUT > IN ? OUT : IN) * sizeof(float));
  cudaStream_t st = CTX_STREAM(ctx);
  float *pu = (float *)u->data, *pv = (float *)v->data;
  for (int it = 0; it < n; it++) {
    if (w->dtype == DT_F32)
      mv_t_kernel<<<cuda_blocks(IN, kThreads), kThreads, 0, st>>>(acc, (const float *)w->data, pu, OUT, IN);
    else
      mv_t_kernel<<<cuda_blocks(IN, kThreads), kThreads, 0, st>>>(acc, (const __nv_bfloat16 *)w->data, pu, OUT, IN);
    CUDA_LAUNCH_CHECK();
    normalize_vec_kernel<<<1, kThreads, 0, st>>>(pv, acc, IN, eps);
    CUDA_LAUNCH_CHECK();
    if (w->dtype == DT_F32)
      row_dot_kernel<<<(unsigned)OUT, kThreads, 0, st>>>(acc, (const float *)w->data, (const float *)NULL, pv, IN);
    else
      row_dot_kernel<<<(unsigned)OUT, kThreads, 0, st>>>(acc, (const __nv_bfloat16 *)w->data,
                                                         (const __nv_bfloat16 *)NULL, pv, IN);
    CUDA_LAUNCH_CHECK();
    normalize_vec_kernel<<<1, kThreads, 0, st>>>(pu, acc, OUT, eps);
    CUDA_LAUNCH_CHECK();
  }
}

void spectral_norm_forward_cuda(Ctx *ctx, Tensor *y, Tensor *sigma, const Tensor *w, const Tensor *u,
                                const Tensor *v) {
  int64_t OUT = w->shape[0], IN = check_spectral("spectral_norm_forward_cuda", w, u, v);
  check_float("spectral_norm_forward_cuda", "y", y, w->dtype, w->numel);
  check_float("spectral_norm_forward_cuda", "sigma", sigma, DT_F32, 1);
  float *wv = (float *)ctx_alloc_act(ctx, (size_t)OUT * sizeof(float)); /* (OUT) */
  cudaStream_t st = CTX_STREAM(ctx);
  if (w->dtype == DT_F32)
    row_dot_kernel<<<(unsigned)OUT, kThreads, 0, st>>>(wv, (const float *)w->data, (const float *)NULL,
                                                       (const float *)v->data, IN);
  else
    row_dot_kernel<<<(unsigned)OUT, kThreads, 0, st>>>(wv, (const __nv_bfloat16 *)w->data,
                                                       (const __nv_bfloat16 *)NULL, (const float *)v->data, IN);
  CUDA_LAUNCH_CHECK();
  dot_kernel<<<1, kThreads, 0, st>>>((float *)sigma->data, (const float *)u->data, wv, OUT);
  CUDA_LAUNCH_CHECK();
  int64_t n = w->numel;
  if (w->dtype == DT_F32)
    divide_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, st>>>((float *)y->data, (const float *)w->data,
                                                                 (const float *)sigma->data, n);
  else
    divide_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, st>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)w->data, (const float *)sigma->data, n);
  CUDA_LAUNCH_CHECK();
}

void spectral_norm_backward_cuda(Ctx *ctx, Tensor *dw, const Tensor *dy, const Tensor *w, const Tensor *u,
                                 const Tensor *v, const Tensor *sigma) {
  int64_t OUT = w->shape[0], IN = check_spectral("spectral_norm_backward_cuda", w, u, v);
  check_float("spectral_norm_backward_cuda", "dw", dw, w->dtype, w->numel);
  check_float("spectral_norm_backward_cuda", "dy", dy, w->dtype, w->numel);
  check_float("spectral_norm_backward_cuda", "sigma", sigma, DT_F32, 1);
  float *part = (float *)ctx_alloc_act(ctx, (size_t)(OUT + 1) * sizeof(float)); /* (OUT) row sums, then S */
  float *S = part + OUT;
  cudaStream_t st = CTX_STREAM(ctx);
  if (w->dtype == DT_F32)
    row_dot_kernel<<<(unsigned)OUT, kThreads, 0, st>>>(part, (const float *)dy->data, (const float *)w->data,
                                                       (const float *)NULL, IN);
  else
    row_dot_kernel<<<(unsigned)OUT, kThreads, 0, st>>>(part, (const __nv_bfloat16 *)dy->data,
                                                       (const __nv_bfloat16 *)w->data, (const float *)NULL, IN);
  CUDA_LAUNCH_CHECK();
  dot_kernel<<<1, kThreads, 0, st>>>(S, part, NULL, OUT);
  CUDA_LAUNCH_CHECK();
  int64_t n = w->numel;
  if (w->dtype == DT_F32)
    spectral_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, st>>>(
        (float *)dw->data, (const float *)dy->data, (const float *)u->data, (const float *)v->data,
        (const float *)sigma->data, S, OUT, IN);
  else
    spectral_backward_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, st>>>(
        (__nv_bfloat16 *)dw->data, (const __nv_bfloat16 *)dy->data, (const float *)u->data, (const float *)v->data,
        (const float *)sigma->data, S, OUT, IN);
  CUDA_LAUNCH_CHECK();
}
