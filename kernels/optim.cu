/* AdamW, gradient norm and scaling, and EMA on the GPU (see optim.h).
 *
 * Multi-tensor launches: the host writes one slot per tensor (pointers, dtypes, length)
 * and cuts every tensor into chunks of OPTIM_CHUNK elements; the slots and the chunk list
 * (slot, chunk index) go to the device in one copy, and one launch runs one block per
 * chunk. A model with hundreds of parameter tensors costs one launch per call instead of
 * hundreds. Each block strides over its chunk, so loads are coalesced; dtype branches are
 * uniform per block.
 *
 * Arithmetic is the CPU reference's, operation for operation, with the rounding spelled
 * out (__fmaf_rn where the CPU uses fmaf, __fmul_rn / __fadd_rn / __fdiv_rn / __fsqrt_rn
 * elsewhere, so nvcc contracts nothing), so AdamW and EMA give the CPU's bits.
 *
 * The gradient norm is deterministic: each chunk's Σ g² is an fp32 block reduction in a
 * fixed order (block_sum), one partial per chunk, no atomics; the host adds the partials
 * in double in chunk order. Kernel version 1 (no vector loads); the optimizer is a few
 * percent of a training step, so simplicity wins until a profile says otherwise. */
#include <vector>

#include "cuda_common.h"
#include "optim.h"

namespace {

const int kThreads = 256; /* per block; OPTIM_CHUNK / kThreads = 256 elements per thread */

struct AdamSlot {
  void *p;         /* the parameter (fp32, or bf16 when master is set) */
  float *master;   /* fp32 master weights or NULL */
  const void *g;   /* gradient */
  float *m, *v;
  int64_t n;
  int p_bf16, g_bf16;
};

struct GradSlot {
  void *g;
  int64_t n;
  int bf16;
};

struct EmaSlot {
  void *ema;
  const void *w;
  int64_t n;
  int ema_bf16, w_bf16;
};

/* One block's work: chunk `index` of slot `slot`. */
struct Chunk {
  int slot, index;
};

template <typename Slot>
struct MultiTensor {
  const Slot *slots; /* (n_slots) on the device */
  const Chunk *chunks; /* (n_chunks) on the device */
  int n_chunks;
};

/* Uploads the slots and their chunk list (one host→device copy into the arena). */
template <typename Slot>
MultiTensor<Slot> upload(Ctx *ctx, const std::vector<Slot> &slots) {
  std::vector<Chunk> chunks;
  for (size_t s = 0; s < slots.size(); s++) {
    int64_t nc = (slots[s].n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    MCM_CHECK(nc < INT32_MAX, "optimizer: tensor %zu has %lld elements, too many chunks", s, (long long)slots[s].n);
    for (int64_t c = 0; c < nc; c++) chunks.push_back(Chunk{(int)s, (int)c});
  }
  MCM_CHECK(chunks.size() < (size_t)INT32_MAX, "optimizer: %zu chunks do not fit one launch", chunks.size());
  MultiTensor<Slot> mt = {NULL, NULL, (int)chunks.size()};
  if (chunks.empty()) return mt;
  size_t slot_bytes = (slots.size() * sizeof(Slot) + 255) / 256 * 256;
  size_t bytes = slot_bytes + chunks.size() * sizeof(Chunk);
  std::vector<unsigned char> host(bytes);
  memcpy(host.data(), slots.data(), slots.size() * sizeof(Slot));
  memcpy(host.data() + slot_bytes, chunks.data(), chunks.size() * sizeof(Chunk));
  unsigned char *dev = (unsigned char *)ctx_alloc_act(ctx, bytes);
  /* From pageable memory: returns once the data is staged, so `host` may go. */
  CUDA_CHECK(cudaMemcpyAsync(dev, host.data(), bytes, cudaMemcpyHostToDevice, CTX_STREAM(ctx)));
  mt.slots = (const Slot *)dev;
  mt.chunks = (const Chunk *)(dev + slot_bytes);
  return mt;
}

__device__ __forceinline__ float load_f(const void *p, int bf16, int64_t i) {
  return bf16 ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}

__device__ __forceinline__ void store_f(void *p, int bf16, int64_t i, float x) {
  if (bf16)
    ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(x);
  else
    ((float *)p)[i] = x;
}

/* The element range [begin, end) of this block's chunk. */
template <typename Slot>
__device__ __forceinline__ Slot chunk_range(const MultiTensor<Slot> &mt, int64_t *begin, int64_t *end) {
  Chunk c = mt.chunks[blockIdx.x];
  const Slot &s = mt.slots[c.slot];
  *begin = (int64_t)c.index * OPTIM_CHUNK;
  *end = *begin + OPTIM_CHUNK < s.n ? *begin + OPTIM_CHUNK : s.n;
  return s;
}

/* Per element, as adamw_update_cpu: decay, lerp m, v, then the step on the decayed weight. */
__global__ void adamw_kernel(MultiTensor<AdamSlot> mt, AdamWScalars s) {
  int64_t begin, end;
  const AdamSlot t = chunk_range(mt, &begin, &end);
  float one_minus_w1 = __fsub_rn(1.0f, s.w1);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float g = load_f(t.g, t.g_bf16, i);
    float p = t.master ? t.master[i] : ((const float *)t.p)[i];
    if (s.decay_on) p = __fmul_rn(p, s.decay);
    float m = t.m[i], d = __fsub_rn(g, m);
    m = s.w1 < 0.5f ? __fmaf_rn(s.w1, d, m) : __fmaf_rn(-d, one_minus_w1, g);
    float v = __fmaf_rn(__fmul_rn(s.c2, g), g, __fmul_rn(t.v[i], s.beta2));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bc2_sqrt), s.eps);
    p = __fadd_rn(p, __fdiv_rn(__fmul_rn(s.neg_step, m), denom));
    t.m[i] = m;
    t.v[i] = v;
    if (t.master) {
      t.master[i] = p;
      ((__nv_bfloat16 *)t.p)[i] = __float2bfloat16_rn(p);
    } else {
      ((float *)t.p)[i] = p;
    }
  }
}

/* partial (n_chunks) = Σ g² over each chunk, fp32, fixed order. */
__global__ void sumsq_kernel(MultiTensor<GradSlot> mt, float *partial) {
  int64_t begin, end;
  const GradSlot t = chunk_range(mt, &begin, &end);
  float s = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float g = load_f(t.g, t.bf16, i);
    s = __fmaf_rn(g, g, s);
  }
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void scale_kernel(MultiTensor<GradSlot> mt, float scale) {
  int64_t begin, end;
  const GradSlot t = chunk_range(mt, &begin, &end);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    store_f(t.g, t.bf16, i, __fmul_rn(load_f(t.g, t.bf16, i), scale));
}

/* ema ← mu·ema + c·w, two rounded products and a rounded sum, as ema_update_cpu. */
__global__ void ema_kernel(MultiTensor<EmaSlot> mt, float mu, float c) {
  int64_t begin, end;
  const EmaSlot t = chunk_range(mt, &begin, &end);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float a = __fmul_rn(mu, load_f(t.ema, t.ema_bf16, i)), b = __fmul_rn(c, load_f(t.w, t.w_bf16, i));
    store_f(t.ema, t.ema_bf16, i, __fadd_rn(a, b));
  }
}

void check_gpu(const char *op, const char *what, const Tensor *t) {
  MCM_CHECK(t->dev == DEV_CUDA, "%s: %s '%s' is not on the GPU", op, what, t->name ? t->name : "(unnamed)");
  MCM_CHECK(t->dtype == DT_F32 || t->dtype == DT_BF16, "%s: %s '%s' is %s, expected fp32 or bf16", op, what,
            t->name ? t->name : "(unnamed)", dtype_name(t->dtype));
}

std::vector<GradSlot> grad_slots(const char *op, Tensor *const *params, int n) {
  std::vector<GradSlot> slots;
  for (int i = 0; i < n; i++) {
    Tensor *g = params[i]->grad;
    if (!g || g->numel == 0) continue;
    check_gpu(op, "gradient of", g);
    slots.push_back(GradSlot{g->data, g->numel, g->dtype == DT_BF16});
  }
  return slots;
}

}  // namespace

void adamw_step_cuda(Ctx *ctx, AdamW *opt, const AdamWScalars *s) {
  std::vector<AdamSlot> slots;
  for (int i = 0; i < opt->n; i++) {
    Tensor *p = opt->params[i], *g = p->grad;
    if (!g || p->numel == 0) continue;
    check_gpu("adamw_step", "parameter", p);
    check_gpu("adamw_step", "gradient of", g);
    MCM_CHECK(g->numel == p->numel, "adamw_step: the gradient of '%s' is %s, the parameter %s", p->name,
              ShapeStr(g).c_str(), ShapeStr(p).c_str());
    MCM_CHECK((p->dtype == DT_BF16) == (opt->master[i] != NULL),
              "adamw_step: '%s' is %s %s a master copy (hint: create the optimizer after setting parameter dtypes)",
              p->name, dtype_name(p->dtype), opt->master[i] ? "with" : "without");
    slots.push_back(AdamSlot{p->data, opt->master[i] ? (float *)opt->master[i]->data : NULL, g->data,
                             (float *)opt->m[i]->data, (float *)opt->v[i]->data, p->numel, p->dtype == DT_BF16,
                             g->dtype == DT_BF16});
  }
  MultiTensor<AdamSlot> mt = upload(ctx, slots);
  if (mt.n_chunks == 0) return;
  adamw_kernel<<<mt.n_chunks, kThreads, 0, CTX_STREAM(ctx)>>>(mt, *s);
  CUDA_LAUNCH_CHECK();
}

double grad_sumsq_cuda(Ctx *ctx, Tensor *const *params, int n) {
  MultiTensor<GradSlot> mt = upload(ctx, grad_slots("grad_global_norm", params, n));
  if (mt.n_chunks == 0) return 0.0;
  float *partial = (float *)ctx_alloc_act(ctx, (size_t)mt.n_chunks * sizeof(float)); /* (n_chunks) */
  sumsq_kernel<<<mt.n_chunks, kThreads, 0, CTX_STREAM(ctx)>>>(mt, partial);
  CUDA_LAUNCH_CHECK();
  std::vector<float> host(mt.n_chunks);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), partial, host.size() * sizeof(float), cudaMemcpyDeviceToHost,
                             CTX_STREAM(ctx)));
  CUDA_CHECK(cudaStreamSynchronize(CTX_STREAM(ctx)));
  double total = 0.0;
  for (float x : host) total += x;
  return total;
}

void grad_scale_cuda(Ctx *ctx, Tensor *const *params, int n, float scale) {
  MultiTensor<GradSlot> mt = upload(ctx, grad_slots("grad_clip", params, n));
  if (mt.n_chunks == 0) return;
  scale_kernel<<<mt.n_chunks, kThreads, 0, CTX_STREAM(ctx)>>>(mt, scale);
  CUDA_LAUNCH_CHECK();
}

void ema_update_cuda(Ctx *ctx, Tensor *const *ema, Tensor *const *w, int n, float mu) {
  std::vector<EmaSlot> slots;
  for (int i = 0; i < n; i++) {
    check_gpu("ema_update", "ema", ema[i]);
    check_gpu("ema_update", "weight", w[i]);
    MCM_CHECK(ema[i]->numel == w[i]->numel, "ema_update: ema %s and weight %s differ in size",
              ShapeStr(ema[i]).c_str(), ShapeStr(w[i]).c_str());
    if (w[i]->numel == 0) continue;
    slots.push_back(EmaSlot{ema[i]->data, w[i]->data, w[i]->numel, ema[i]->dtype == DT_BF16, w[i]->dtype == DT_BF16});
  }
  MultiTensor<EmaSlot> mt = upload(ctx, slots);
  if (mt.n_chunks == 0) return;
  ema_kernel<<<mt.n_chunks, kThreads, 0, CTX_STREAM(ctx)>>>(mt, mu, (float)(1.0 - (double)mu));
  CUDA_LAUNCH_CHECK();
}
