/* The four frozen networks at test size, run once on a context (CPU or GPU) in a given
 * dtype: random weights and inputs from the context's counter-based RNG (the same numbers on
 * either device), a forward and the input gradient for a fixed upstream gradient. The bf16
 * tests (tests/test_bf16_models.c) compare dtypes on the CPU; the GPU tests
 * (tests/gpu/models_gpu.c) compare devices. */
#pragma once
#include "kernels/ops.h"

typedef enum { NET_UNET, NET_VAE_DECODER, NET_AUDIOMAE, NET_VOCODER, NET_KINDS } NetKind;

typedef struct NetRun {
  float *y, *gx;   /* output and input gradient, host fp32 (free with net_run_free) */
  int64_t ny, nx;
} NetRun;

const char *net_name(NetKind kind);
/* Builds the network in a fresh ParamSet of ctx (frozen, cast to dt), runs it, and records
 * test failures if the output is not fp32, a parameter is not dt, or a frozen parameter got a
 * gradient. ctx is reset before and after (ctx_step_reset); its parameters stay until
 * ctx_destroy. */
NetRun net_run(Ctx *ctx, NetKind kind, DType dt);
void net_run_free(NetRun *r);
/* ‖a − ref‖ / ‖ref‖ over n values (double sums); +inf when ref is all zero. */
double net_rel_l2(const float *a, const float *ref, int64_t n);
