/* The C-callable face of the CUDA runtime pieces in context_cuda.cu. No CUDA types here,
 * so plain C files can call them inside #if MCM_CUDA. */
#pragma once
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

int cuda_count_devices(char *why, size_t why_size);    /* 0 and a reason when none usable */
int cuda_ctx_init(Ctx *ctx, int index, McmErr *err);  /* device, stream, handles, workspace */
void cuda_ctx_free(Ctx *ctx);
void *cuda_alloc(size_t bytes);
void cuda_free(void *p);
void cuda_h2d(Ctx *ctx, void *dst, const void *src, size_t bytes);
void cuda_d2h(Ctx *ctx, void *dst, const void *src, size_t bytes);
void cuda_d2d(Ctx *ctx, void *dst, const void *src, size_t bytes);
void cuda_memset(Ctx *ctx, void *dst, int byte, size_t bytes);
void cuda_sync(Ctx *ctx);
/* dst[i] = src[i] with dtype conversion (fp32 <-> bf16); n elements. */
void cuda_convert(Ctx *ctx, void *dst, DType dst_dt, const void *src, DType src_dt, int64_t n);
void cuda_fill(Ctx *ctx, void *dst, DType dt, int64_t n, float value);

#ifdef __cplusplus
}
#endif

/* Runs cpu_call on a CPU context and cuda_call on a CUDA one. In a CPU-only build the CUDA
 * branch is not even compiled, so model and op code can name CUDA launchers freely. */
#if MCM_CUDA
#define ON_DEVICE(ctx, cpu_call, cuda_call) \
  do {                                      \
    if ((ctx)->dev == DEV_CPU) {            \
      cpu_call;                             \
    } else {                                \
      cuda_call;                            \
    }                                       \
  } while (0)
#else
#define ON_DEVICE(ctx, cpu_call, cuda_call) \
  do {                                      \
    (void)(ctx);                            \
    cpu_call;                               \
  } while (0)
#endif
