/* Elementwise arithmetic on the GPU (see elementwise.h): grid-stride kernels templated on
 * the storage type (fp32 or bf16; the math is always fp32). Backward kernels accumulate.
 *
 * Broadcast gradients are reductions of dy, computed without float atomics so that runs
 * repeat bit for bit. Each element of the broadcast operand t sums its m terms in an
 * order fixed by the shapes alone:
 *  - when dy's innermost dimension is one t broadcasts in (x (B, C, H, W) + emb
 *    (B, C, 1, 1)) and m ≥ one block: one block per element of t, threads striding over
 *    the terms (contiguous reads), then block_sum;
 *  - otherwise ((B, T, C) ⊙ (C)): one thread per (element, chunk of terms), neighbouring
 *    threads reading neighbouring elements; with more than one chunk, the chunks' partial
 *    sums go to a scratch buffer and a second kernel adds them in chunk order. The chunk
 *    count depends only on n and m. */
#include "cuda_common.h"
#include "elementwise.h"

namespace {

const int kThreads = 256;
const int64_t kTargetItems = 1 << 16; /* threads wanted for the chunked reduction */
const int64_t kMinChunk = 32;         /* fewest terms a chunk sums */
const int64_t kMaxBlocks = 4096;      /* block-per-element grid cap (4096·256 threads fill any GPU) */

__device__ __forceinline__ float binary_apply(const BinaryOp &op, float a, float b) {
  return op.mul ? a * b : op.alpha * a + op.beta * b;
}

/* y (n) = a (n) ∘ b (n) */
template <typename T>
__global__ void binary_flat_kernel(T *y, const T *a, const T *b, int64_t n, BinaryOp op) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>(binary_apply(op, to_f(a[i]), to_f(b[i])));
}

/* y (bc.n) = a ∘ b with a and b indexed through the plan's strides. */
template <typename T>
__global__ void binary_bcast_kernel(T *y, const T *a, const T *b, Bcast bc, BinaryOp op) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < bc.n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i, ia = 0, ib = 0;
    for (int d = bc.ndim - 1; d >= 0; d--) {
      int64_t c = r % bc.shape[d];
      r /= bc.shape[d];
      ia += c * bc.sa[d], ib += c * bc.sb[d];
    }
    y[i] = from_f<T>(binary_apply(op, to_f(a[ia]), to_f(b[ib])));
  }
}

/* da (n) += ∂y/∂a · dy, db (n) += ∂y/∂b · dy; da or db may be NULL. a and b are read only
 * for a product. */
template <typename T>
__global__ void binary_flat_backward_kernel(T *da, T *db, const T *dy, const T *a, const T *b, int64_t n,
                                            BinaryOp op) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float g = to_f(dy[i]);
    if (da) da[i] = from_f<T>(to_f(da[i]) + (op.mul ? to_f(b[i]) * g : op.alpha * g));
    if (db) db[i] = from_f<T>(to_f(db[i]) + (op.mul ? to_f(a[i]) * g : op.beta * g));
  }
}

/* Offsets of element i of a row-major grid in two strided tensors. */
__device__ __forceinline__ void unravel2(int64_t i, int nd, const int64_t *size, const int64_t *s0,
                                         const int64_t *s1, int64_t &o0, int64_t &o1) {
  o0 = o1 = 0;
  for (int d = nd - 1; d > 0; d--) {
    int64_t c = i % size[d];
    i /= size[d];
    o0 += c * s0[d], o1 += c * s1[d];
  }
  if (nd > 0) o0 += i * s0[0], o1 += i * s1[0];
}

/* One term of t's gradient: dy, times the other operand for a product. */
template <typename T>
__device__ __forceinline__ float grad_term(const T *dy, const T *other, int64_t oy, int64_t oo) {
  return other ? to_f(dy[oy]) * to_f(other[oo]) : to_f(dy[oy]);
}

/* Work item w = s·n + i sums terms [s·chunk, (s+1)·chunk) of element i of t; with one chunk
 * (S == 1) it adds coef times the sum to dt[i], otherwise it stores the sum in partial[w]. */
template <typename T>
__global__ void grad_chunks_kernel(T *dt, float *partial, const T *dy, const T *other, BcastGrad g, float coef,
                                   int64_t chunk, int64_t S) {
  for (int64_t w = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; w < g.n * S; w += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = w % g.n, s = w / g.n;
    int64_t j0 = s * chunk, j1 = min(g.m, j0 + chunk);
    int64_t ky, ko;
    unravel2(i, g.nk, g.k_size, g.k_sy, g.k_so, ky, ko);
    /* An odometer over the reduced dimensions, started at term j0. */
    int64_t coord[MCM_MAX_DIMS], ry = 0, ro = 0, r = j0;
    for (int d = g.nr - 1; d >= 0; d--) {
      coord[d] = r % g.r_size[d];
      r /= g.r_size[d];
      ry += coord[d] * g.r_sy[d], ro += coord[d] * g.r_so[d];
    }
    float acc = 0.0f;
    for (int64_t j = j0; j < j1; j++) {
      acc += grad_term(dy, other, ky + ry, ko + ro);
      for (int d = g.nr - 1; d >= 0; d--) {
        ry += g.r_sy[d], ro += g.r_so[d];
        if (++coord[d] < g.r_size[d]) break;
        ry -= g.r_size[d] * g.r_sy[d], ro -= g.r_size[d] * g.r_so[d];
        coord[d] = 0;
      }
    }
    if (S == 1)
      dt[i] = from_f<T>(to_f(dt[i]) + coef * acc);
    else
      partial[w] = acc;
  }
}

/* dt (n) += coef · Σ_s partial[s·n + i], s in order. */
template <typename T>
__global__ void grad_finish_kernel(T *dt, const float *partial, int64_t n, int64_t S, float coef) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < S; s++) acc += partial[s * n + i];
    dt[i] = from_f<T>(to_f(dt[i]) + coef * acc);
  }
}

/* One block per element of t (grid-stride over elements): threads stride over its m terms,
 * block_sum adds them in a fixed tree. */
template <typename T>
__global__ void grad_block_kernel(T *dt, const T *dy, const T *other, BcastGrad g, float coef) {
  for (int64_t i = blockIdx.x; i < g.n; i += gridDim.x) {
    int64_t ky, ko;
    unravel2(i, g.nk, g.k_size, g.k_sy, g.k_so, ky, ko);
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j < g.m; j += blockDim.x) {
      int64_t ry, ro;
      unravel2(j, g.nr, g.r_size, g.r_sy, g.r_so, ry, ro);
      acc += grad_term(dy, other, ky + ry, ko + ro);
    }
    acc = block_sum<kThreads>(acc);
    if (threadIdx.x == 0) dt[i] = from_f<T>(to_f(dt[i]) + coef * acc);
    __syncthreads(); /* block_sum's shared scratch is reused by the next element */
  }
}

/* y (n) = [y +] s · a (n) */
template <typename T>
__global__ void scale_kernel(T *y, const T *a, float s, int64_t n, bool accumulate) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = from_f<T>((accumulate ? to_f(y[i]) : 0.0f) + s * to_f(a[i]));
}

/* dt (g.n) += coef · Σ over t's broadcast dimensions of dy (⊙ other). */
template <typename T>
void grad_reduce(Ctx *ctx, T *dt, const T *dy, const T *other, const BcastGrad &g, float coef) {
  if (g.n == 0) return;
  cudaStream_t stream = CTX_STREAM(ctx);
  if (g.nr == 0 && !other) { /* t has y's shape: a plain scaled accumulate */
    scale_kernel<<<cuda_blocks(g.n, kThreads), kThreads, 0, stream>>>(dt, dy, coef, g.n, true);
    CUDA_LAUNCH_CHECK();
    return;
  }
  bool inner_reduced = g.nr > 0 && g.r_sy[g.nr - 1] == 1;
  if (inner_reduced && g.m >= kThreads) {
    int blocks = (int)(g.n < kMaxBlocks ? g.n : kMaxBlocks);
    grad_block_kernel<<<blocks, kThreads, 0, stream>>>(dt, dy, other, g, coef);
    CUDA_LAUNCH_CHECK();
    return;
  }
  int64_t S = (kTargetItems + g.n - 1) / g.n, most = (g.m + kMinChunk - 1) / kMinChunk;
  if (S > most) S = most;
  if (S < 1) S = 1;
  int64_t chunk = (g.m + S - 1) / S;
  S = (g.m + chunk - 1) / chunk;
  float *partial = S > 1 ? (float *)ctx_alloc_act(ctx, (size_t)(g.n * S) * sizeof(float)) : NULL; /* (S, n) */
  grad_chunks_kernel<<<cuda_blocks(g.n * S, kThreads), kThreads, 0, stream>>>(dt, partial, dy, other, g, coef, chunk,
                                                                              S);
  CUDA_LAUNCH_CHECK();
  if (S > 1) {
    grad_finish_kernel<<<cuda_blocks(g.n, kThreads), kThreads, 0, stream>>>(dt, partial, g.n, S, coef);
    CUDA_LAUNCH_CHECK();
  }
}

template <typename T>
void forward_impl(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, const Bcast &bc, BinaryOp op) {
  T *py = (T *)y->data;
  const T *pa = (const T *)a->data, *pb = (const T *)b->data;
  if (bcast_is_flat(&bc))
    binary_flat_kernel<<<cuda_blocks(bc.n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(py, pa, pb, bc.n, op);
  else
    binary_bcast_kernel<<<cuda_blocks(bc.n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(py, pa, pb, bc, op);
  CUDA_LAUNCH_CHECK();
}

template <typename T>
void backward_impl(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                   const Bcast &bc, BinaryOp op) {
  T *pda = da ? (T *)da->data : NULL, *pdb = db ? (T *)db->data : NULL;
  const T *pdy = (const T *)dy->data, *pa = (const T *)a->data, *pb = (const T *)b->data;
  if (bcast_is_flat(&bc)) {
    binary_flat_backward_kernel<<<cuda_blocks(bc.n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(pda, pdb, pdy, pa, pb,
                                                                                              bc.n, op);
    CUDA_LAUNCH_CHECK();
    return;
  }
  BcastGrad g;
  if (pda) {
    bcast_grad_init(&g, &bc, 0);
    grad_reduce<T>(ctx, pda, pdy, op.mul ? pb : NULL, g, op.mul ? 1.0f : op.alpha);
  }
  if (pdb) {
    bcast_grad_init(&g, &bc, 1);
    grad_reduce<T>(ctx, pdb, pdy, op.mul ? pa : NULL, g, op.mul ? 1.0f : op.beta);
  }
}

void check_dtype(const char *op, DType dt) {
  MCM_CHECK(dt == DT_F32 || dt == DT_BF16, "%s: dtype %s, expected fp32 or bf16", op, dtype_name(dt));
}

/* On the GPU with the reference's dtype and exactly `shape`; NULL passes. */
void check_tensor(const char *op, const char *arg, const Tensor *t, DType dt, int ndim, const int64_t *shape) {
  if (!t) return;
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s is not on the GPU", op, arg);
  MCM_CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype), dtype_name(dt));
  bool same = t->ndim == ndim;
  for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
  char want[96];
  MCM_CHECK(same, "%s: %s has shape %s, expected %s", op, arg, ShapeStr(t).c_str(),
            shape_str(want, sizeof want, ndim, shape));
}

/* The plan for a ∘ b, checking a, b and y (the broadcast shape). */
Bcast plan(const char *op, const Tensor *y, const Tensor *a, const Tensor *b) {
  check_dtype(op, a->dtype);
  check_tensor(op, "a", a, a->dtype, a->ndim, a->shape);
  check_tensor(op, "b", b, a->dtype, b->ndim, b->shape);
  Bcast bc;
  char why[160];
  MCM_CHECK(bcast_init(&bc, a->ndim, a->shape, b->ndim, b->shape, why, sizeof why),
            "%s: a %s and b %s do not broadcast: %s", op, ShapeStr(a).c_str(), ShapeStr(b).c_str(), why);
  check_tensor(op, "y", y, a->dtype, bc.y_ndim, bc.y_shape);
  return bc;
}

}  // namespace

void binary_forward_cuda(Ctx *ctx, Tensor *y, const Tensor *a, const Tensor *b, BinaryOp op) {
  Bcast bc = plan("binary_forward_cuda", y, a, b);
  if (bc.n == 0) return;
  if (a->dtype == DT_F32)
    forward_impl<float>(ctx, y, a, b, bc, op);
  else
    forward_impl<__nv_bfloat16>(ctx, y, a, b, bc, op);
}

void binary_backward_cuda(Ctx *ctx, Tensor *da, Tensor *db, const Tensor *dy, const Tensor *a, const Tensor *b,
                          BinaryOp op) {
  Bcast bc = plan("binary_backward_cuda", dy, a, b);
  check_tensor("binary_backward_cuda", "da", da, a->dtype, a->ndim, a->shape);
  check_tensor("binary_backward_cuda", "db", db, a->dtype, b->ndim, b->shape);
  if (bc.n == 0 || (!da && !db)) return;
  if (a->dtype == DT_F32)
    backward_impl<float>(ctx, da, db, dy, a, b, bc, op);
  else
    backward_impl<__nv_bfloat16>(ctx, da, db, dy, a, b, bc, op);
}

void scale_cuda(Ctx *ctx, Tensor *y, const Tensor *a, float s, bool accumulate) {
  check_dtype("scale_cuda", a->dtype);
  MCM_CHECK(a->dev == DEV_CUDA && y->dev == DEV_CUDA, "scale_cuda: a or y is not on the GPU");
  MCM_CHECK(y->dtype == a->dtype, "scale_cuda: y is %s, a is %s", dtype_name(y->dtype), dtype_name(a->dtype));
  MCM_CHECK(y->numel == a->numel, "scale_cuda: y has %lld elements, a has %lld", (long long)y->numel,
            (long long)a->numel);
  int64_t n = a->numel;
  if (n == 0) return;
  if (a->dtype == DT_F32)
    scale_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>((float *)y->data, (const float *)a->data,
                                                                            s, n, accumulate);
  else
    scale_kernel<<<cuda_blocks(n, kThreads), kThreads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)y->data, (const __nv_bfloat16 *)a->data, s, n, accumulate);
  CUDA_LAUNCH_CHECK();
}
