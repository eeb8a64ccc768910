/* Attention workbench: numbered versions of the attention forward, each checked against the
 * CPU reference (kernels/attention.c) and timed, without touching the library or a model.
 * Try a kernel here first; when one wins, promote it (tools/workbench/README.md).
 *
 *   make workbench                       builds build/cuda/workbench/attention
 *   build/cuda/workbench/attention [variant] [-B 4] [-T 1024] [-TK n] [-H 8] [-D 64]
 *                                  [--bf16] [--mask] [--backward] [-r 20] [--check-rows 64]
 *
 *   variant        0 (default) runs every version, N only version N
 *   -B -T -H -D    batch, tokens (queries; keys too unless -TK), heads, head dim; C = H·D
 *   --bf16         bf16 storage (inputs rounded to bf16 for the reference as well)
 *   --mask         key padding: the last quarter of the keys of every odd batch element masked
 *   --backward     also time forward + backward (versions that have one)
 *   -r             timed repeats (after 2 warm-up runs)
 *   --check-rows   query rows per batch element compared with the CPU reference (the
 *                  reference costs O(rows·TK·C) on the CPU, so large T stays quick)
 *
 * Versions:
 *   v1  naive: one warp per (b, h, query) row; the row's TK scores are written to a global
 *       scratch row, then max, exp/sum and P·V are separate passes over it. Forward only.
 *   v2  the library (kernels/attention.cu) through op_attention: fused flash-style forward
 *       with online softmax on CUDA cores, 32 queries per block, K/V tiles of 32 keys in
 *       shared memory; backward = delta pass, dK/dV pass over key tiles, dQ pass.
 *
 * Check: every compared element must satisfy |gpu − ref| ≤ atol + rtol·|ref| (fp32 1e-4 and
 * 1e-4, bf16 2e-2 and 2e-2, as F32_GEMM / BF16_GEMM in tests/gpu/gpu_check.h). Timing:
 * cudaEvents on the context's stream around the repeats, the arena reset between calls.
 * Forward FLOPs are counted as 4·B·H·TQ·TK·D (two matrix products), forward + backward as
 * 3.5× that (the backward's five products, recomputation not counted, as FlashAttention does). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/cuda_common.h"
#include "kernels/tape.h"

/* ------------------------------------------------------------------ the problem */

struct Problem {
  int B, TQ, TK, NH, D;
  DType dt;
  Tensor *q, *k, *v;  /* (B, TQ, C), (B, TK, C), (B, TK, C), persistent */
  Tensor *mask;       /* (B, TK) fp32 or NULL */
  Tensor *dout;       /* (B, TQ, C): the upstream gradient for --backward */
};

__device__ __forceinline__ float wb_warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float wb_warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/* ------------------------------------------------------------------ v1: naive */

/* out (B, TQ, C): warp w handles rows w, w + nwarps, ... of the B·NH·TQ (b, h, i) rows,
 * keeping the scores of its current row in scratch (nwarps, TK). */
template <typename T>
__global__ void attention_naive_kernel(T *out, const T *q, const T *k, const T *v, const float *mask, float *scratch,
                                       int B, int TQ, int TK, int NH, int D) {
  int lane = threadIdx.x % 32;
  int64_t warp = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  int64_t nwarps = (int64_t)gridDim.x * (blockDim.x / 32), rows = (int64_t)B * NH * TQ, C = (int64_t)NH * D;
  float *s = scratch + warp * TK; /* (TK) */
  float scale = 1.0f / sqrtf((float)D);
  for (int64_t row = warp; row < rows; row += nwarps) {
    int i = (int)(row % TQ), h = (int)(row / TQ % NH), b = (int)(row / ((int64_t)TQ * NH));
    const T *qi = q + ((int64_t)b * TQ + i) * C + (int64_t)h * D;
    float m = -INFINITY;
    for (int j = lane; j < TK; j += 32) {
      float sj = -INFINITY;
      if (!mask || mask[(int64_t)b * TK + j] != 0.0f) {
        const T *kj = k + ((int64_t)b * TK + j) * C + (int64_t)h * D;
        float acc = 0.0f;
        for (int d = 0; d < D; d++) acc += to_f(qi[d]) * to_f(kj[d]);
        sj = acc * scale;
      }
      s[j] = sj;
      m = fmaxf(m, sj);
    }
    m = wb_warp_max(m);
    float l = 0.0f;
    for (int j = lane; j < TK; j += 32) {
      float p = m == -INFINITY ? 0.0f : expf(s[j] - m);
      s[j] = p;
      l += p;
    }
    l = wb_warp_sum(l);
    __syncwarp(); /* every lane reads every s[j] below */
    T *o = out + ((int64_t)b * TQ + i) * C + (int64_t)h * D;
    for (int d = lane; d < D; d += 32) {
      float acc = 0.0f;
      for (int j = 0; j < TK; j++) acc += s[j] * to_f(v[((int64_t)b * TK + j) * C + (int64_t)h * D + d]);
      o[d] = from_f<T>(l > 0.0f ? acc / l : 0.0f);
    }
    __syncwarp(); /* the next row overwrites s */
  }
}

static Tensor *run_v1(Ctx *ctx, Problem *p) {
  int64_t C = (int64_t)p->NH * p->D, rows = (int64_t)p->B * p->NH * p->TQ;
  const int64_t shape[3] = {p->B, p->TQ, C}; /* (SHAPE() is C-only: compound literals) */
  Tensor *out = tensor_new(ctx, p->dt, 3, shape);
  int sms = 0, dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int threads = 256;
  int64_t blocks = (rows + threads / 32 - 1) / (threads / 32);
  if (blocks > 2 * sms) blocks = 2 * sms; /* bounds the scratch: 16·SMs rows of TK floats */
  float *scratch = (float *)ctx_alloc_act(ctx, (size_t)blocks * (threads / 32) * p->TK * sizeof(float));
  const float *mask = p->mask ? (const float *)p->mask->data : nullptr;
  if (p->dt == DT_F32)
    attention_naive_kernel<<<(unsigned)blocks, threads, 0, CTX_STREAM(ctx)>>>(
        (float *)out->data, (const float *)p->q->data, (const float *)p->k->data, (const float *)p->v->data, mask,
        scratch, p->B, p->TQ, p->TK, p->NH, p->D);
  else
    attention_naive_kernel<<<(unsigned)blocks, threads, 0, CTX_STREAM(ctx)>>>(
        (__nv_bfloat16 *)out->data, (const __nv_bfloat16 *)p->q->data, (const __nv_bfloat16 *)p->k->data,
        (const __nv_bfloat16 *)p->v->data, mask, scratch, p->B, p->TQ, p->TK, p->NH, p->D);
  CUDA_LAUNCH_CHECK();
  return out;
}

/* ------------------------------------------------------------------ v2: the library */

static Tensor *run_v2(Ctx *ctx, Problem *p) {
  bool was = ctx_set_grad(ctx, false);
  Tensor *out = op_attention(ctx, p->q, p->k, p->v, p->NH, p->mask);
  ctx_set_grad(ctx, was);
  return out;
}

static Tensor *run_v2_backward(Ctx *ctx, Problem *p) {
  bool was = ctx_set_grad(ctx, true);
  Tensor *out = op_attention(ctx, p->q, p->k, p->v, p->NH, p->mask);
  backward_from(ctx, out, p->dout);
  ctx_set_grad(ctx, was);
  return out;
}

/* ------------------------------------------------------------------ the harness */

struct Variant {
  const char *name;
  Tensor *(*forward)(Ctx *, Problem *);
  Tensor *(*forward_backward)(Ctx *, Problem *); /* NULL: no backward */
  bool (*supports)(const Problem *);             /* NULL: any shape */
};

/* op_attention runs the fused kernels for the head dims they are built for and the chunked
 * cuBLAS path (attention_large.cu) for the others. */
static bool v2_supports(const Problem *p) {
  return attention_cuda_supports(p->D) || attention_chunked_cuda_supports(p->D);
}

static const Variant VARIANTS[] = {
    {"v1 naive (scores row in global memory)", run_v1, NULL, NULL},
    {"v2 library (attention.cu, _large.cu)", run_v2, run_v2_backward, v2_supports},
};
static const int N_VARIANTS = (int)(sizeof VARIANTS / sizeof VARIANTS[0]);

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float uniform(float lo, float hi) { /* xorshift64: inputs only need to be varied */
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return lo + (hi - lo) * (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

static float *random_host(int64_t n, float lo, float hi, bool bf16) {
  float *h = (float *)MALLOC_CHECK((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) {
    h[i] = uniform(lo, hi);
    if (bf16) h[i] = bf16_to_f32(f32_to_bf16(h[i])); /* the reference sees what the GPU stores */
  }
  return h;
}

static Tensor *device_tensor(Ctx *ctx, DType dt, int64_t d0, int64_t d1, int64_t d2, const float *h) {
  const int64_t shape[3] = {d0, d1, d2};
  Tensor *t = tensor_new_persistent(ctx, dt, 3, shape);
  tensor_from_host_f32(ctx, t, h);
  return t;
}

/* Milliseconds per call of fn, averaged over `repeats` calls after 2 warm-up calls. */
static double time_ms(Ctx *ctx, Problem *p, Tensor *(*fn)(Ctx *, Problem *), int repeats) {
  for (int w = 0; w < 2; w++) {
    ctx_step_reset(ctx);
    fn(ctx, p);
  }
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  CUDA_CHECK(cudaEventRecord(start, CTX_STREAM(ctx)));
  for (int r = 0; r < repeats; r++) {
    ctx_step_reset(ctx);
    fn(ctx, p);
  }
  CUDA_CHECK(cudaEventRecord(stop, CTX_STREAM(ctx)));
  CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return ms / repeats;
}

/* Compares rows i < rows_checked of every batch element; returns the number failing. */
static int64_t validate(const float *got, const float *ref, const Problem *p, int rows_checked, float atol, float rtol,
                        double *max_err) {
  int64_t C = (int64_t)p->NH * p->D, bad = 0;
  *max_err = 0;
  for (int b = 0; b < p->B; b++)
    for (int i = 0; i < rows_checked; i++)
      for (int64_t c = 0; c < C; c++) {
        float g = got[((int64_t)b * p->TQ + i) * C + c], r = ref[((int64_t)b * rows_checked + i) * C + c];
        double e = fabs((double)g - r);
        if (!(e <= *max_err)) *max_err = e; /* NaN sticks */
        if (!(e <= atol + rtol * fabs(r))) {
          if (bad < 5)
            printf("    mismatch b %d row %d channel %lld: gpu %.7g ref %.7g\n", b, i, (long long)c, g, r);
          bad++;
        }
      }
  return bad;
}

static void usage(void) {
  fprintf(stderr,
          "usage: attention [variant] [-B 4] [-T 1024] [-TK n] [-H 8] [-D 64] [--bf16] [--mask] [--backward]\n"
          "                 [-r 20] [--check-rows 64]      (variant 0 = all; see the top of attention.cu)\n");
  exit(2);
}

int main(int argc, char **argv) {
  int variant = 0, B = 4, T = 1024, TK = -1, NH = 8, D = 64, repeats = 20, check_rows = 64;
  bool bf16 = false, masked = false, bwd = false;
  for (int a = 1; a < argc; a++) {
    const char *s = argv[a];
    bool has_val = a + 1 < argc;
    if (!strcmp(s, "-B") && has_val) B = atoi(argv[++a]);
    else if (!strcmp(s, "-T") && has_val) T = atoi(argv[++a]);
    else if (!strcmp(s, "-TK") && has_val) TK = atoi(argv[++a]);
    else if (!strcmp(s, "-H") && has_val) NH = atoi(argv[++a]);
    else if (!strcmp(s, "-D") && has_val) D = atoi(argv[++a]);
    else if (!strcmp(s, "-r") && has_val) repeats = atoi(argv[++a]);
    else if (!strcmp(s, "--check-rows") && has_val) check_rows = atoi(argv[++a]);
    else if (!strcmp(s, "--bf16")) bf16 = true;
    else if (!strcmp(s, "--mask")) masked = true;
    else if (!strcmp(s, "--backward")) bwd = true;
    else if (s[0] >= '0' && s[0] <= '9') variant = atoi(s);
    else usage();
  }
  if (TK < 0) TK = T;
  if (B < 1 || T < 1 || TK < 1 || NH < 1 || D < 1 || repeats < 1 || check_rows < 0 || variant < 0 ||
      variant > N_VARIANTS) {
    fprintf(stderr, "attention: sizes and repeats must be >= 1 and the variant 0..%d\n", N_VARIANTS);
    usage();
  }
  if (check_rows > T) check_rows = T;

  McmErr err = {{0}};
  DeviceSpec spec = {DEV_CUDA, 0, false};
  Ctx *ctx = ctx_create(&spec, 1, &err);
  if (!ctx || ctx->dev != DEV_CUDA) {
    fprintf(stderr, "attention: no usable GPU%s%s\n", ctx ? "" : ": ", ctx ? "" : err.msg);
    return 1;
  }
  int64_t C = (int64_t)NH * D;
  DType dt = bf16 ? DT_BF16 : DT_F32;
  printf("attention workbench on %s: B %d, TQ %d, TK %d, H %d, D %d, %s%s\n", ctx->device_name, B, T, TK, NH, D,
         dtype_name(dt), masked ? ", key mask" : "");

  /* Inputs: q, k in [-2, 2] (score spread ~1.3 at D = 64: a softmax far from uniform). */
  float *hq = random_host((int64_t)B * T * C, -2.0f, 2.0f, bf16);
  float *hk = random_host((int64_t)B * TK * C, -2.0f, 2.0f, bf16);
  float *hv = random_host((int64_t)B * TK * C, -1.0f, 1.0f, bf16);
  float *hdo = random_host((int64_t)B * T * C, -1.0f, 1.0f, bf16);
  float *hmask = NULL;
  Problem p = {B, T, TK, NH, D, dt, NULL, NULL, NULL, NULL, NULL};
  p.q = device_tensor(ctx, dt, B, T, C, hq);
  p.k = device_tensor(ctx, dt, B, TK, C, hk);
  p.v = device_tensor(ctx, dt, B, TK, C, hv);
  p.dout = device_tensor(ctx, dt, B, T, C, hdo);
  if (masked) {
    hmask = (float *)MALLOC_CHECK((size_t)B * TK * sizeof(float));
    for (int b = 0; b < B; b++)
      for (int j = 0; j < TK; j++) hmask[(int64_t)b * TK + j] = (b % 2 == 1 && j >= TK - TK / 4) ? 0.0f : 1.0f;
    const int64_t mshape[2] = {B, TK};
    p.mask = tensor_new_persistent(ctx, DT_F32, 2, mshape);
    tensor_from_host_f32(ctx, p.mask, hmask);
  }
  p.q->requires_grad = p.k->requires_grad = p.v->requires_grad = true; /* for --backward */

  /* The CPU reference on the first check_rows queries of every batch element. */
  float *hq_sub = (float *)MALLOC_CHECK((size_t)B * (check_rows ? check_rows : 1) * C * sizeof(float));
  float *ref = (float *)MALLOC_CHECK((size_t)B * (check_rows ? check_rows : 1) * C * sizeof(float));
  for (int b = 0; b < B; b++)
    memcpy(hq_sub + (int64_t)b * check_rows * C, hq + (int64_t)b * T * C, (size_t)check_rows * C * sizeof(float));
  if (check_rows) attention_forward_cpu(ref, NULL, hq_sub, hk, hv, hmask, B, check_rows, TK, NH, D);
  float *got = (float *)MALLOC_CHECK((size_t)B * T * C * sizeof(float));
  float atol = bf16 ? 2e-2f : 1e-4f, rtol = bf16 ? 2e-2f : 1e-4f;
  double flops = 4.0 * B * NH * (double)T * TK * D;

  int failures = 0;
  for (int vi = 0; vi < N_VARIANTS; vi++) {
    if (variant && variant != vi + 1) continue;
    const Variant *v = &VARIANTS[vi];
    if (v->supports && !v->supports(&p)) {
      printf("%-42s  skipped: does not support D = %d\n", v->name, D);
      continue;
    }
    ctx_step_reset(ctx);
    Tensor *out = v->forward(ctx, &p);
    tensor_to_host_f32(ctx, out, got);
    double max_err;
    int64_t bad = validate(got, ref, &p, check_rows, atol, rtol, &max_err);
    failures += bad > 0;
    double ms = time_ms(ctx, &p, v->forward, repeats);
    printf("%-42s  fwd %9.3f ms  %7.2f TFLOP/s   check %s (%d rows/batch, max |err| %.2e)\n", v->name, ms,
           flops / ms * 1e-9, bad ? "FAIL" : "ok", check_rows, max_err);
    if (bwd && v->forward_backward) {
      double msb = time_ms(ctx, &p, v->forward_backward, repeats);
      printf("%-42s  f+b %9.3f ms  %7.2f TFLOP/s\n", "", msb, 3.5 * flops / msb * 1e-9);
    }
  }
  free(hq), free(hk), free(hv), free(hdo), free(hmask), free(hq_sub), free(ref), free(got);
  ctx_destroy(ctx);
  return failures ? 1 : 0;
}
