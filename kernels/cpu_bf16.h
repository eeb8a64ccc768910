/* bf16 on the CPU.
 *
 * The CPU references compute in fp32 (DESIGN §2). A bf16 tensor reaching one of them is
 * widened first: CPU_REF lists the tensors an op's reference reads or writes, points each bf16
 * one at an fp32 copy of its values for the duration of the call, and afterwards rounds the
 * copies back into the bf16 storage (to nearest, ties to even). So a bf16 op on the CPU is
 * its fp32 reference on the bf16 values with every stored result rounded once, and a
 * gradient accumulated into a bf16 buffer (dx += ...) is read, summed in fp32 and rounded once
 * per op. That is the contract the CUDA kernels keep (fp32 math on bf16 loads, one rounding
 * per store), so a bf16 network runs on the CPU, slowly, with the GPU's rounding points: the
 * tests check mcm's bf16 paths, and the GPU's bf16 results, against it.
 *
 *   ON_DEVICE(ctx, CPU_REF((y, x, w, b), linear_forward_cpu(y->data, x->data, ...)),
 *                  linear_forward_cuda(ctx, y, x, w, b));
 *
 * NULL entries are allowed (an optional bias, an unwanted gradient); fp32 and int32 tensors
 * pass through untouched. Inside `call` the listed bf16 headers say fp32 and point at the
 * copies; they are restored before CPU_REF ends. Read-only inputs are rounded back too, which
 * leaves them bit-identical (a bf16 value widens and rounds to itself). */
#pragma once
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CPU_WIDEN_MAX 16

typedef struct CpuWidened {
  Tensor *t;     /* the header, repointed while the reference runs */
  void *bf16;    /* its own bf16 storage */
  float *f32;    /* the widened copy */
} CpuWidened;

typedef struct CpuWidenSet {
  CpuWidened w[CPU_WIDEN_MAX];
  int n;
} CpuWidenSet;

void cpu_widen(CpuWidenSet *s, int n, const Tensor *const *ts);
void cpu_narrow(CpuWidenSet *s);

#define CPU_REF_UNPACK_(...) __VA_ARGS__
#define CPU_REF(tensors, call)                                                         \
  do {                                                                                 \
    const Tensor *cpu_ref_ts_[] = {CPU_REF_UNPACK_ tensors};                           \
    CpuWidenSet cpu_ref_set_;                                                          \
    cpu_widen(&cpu_ref_set_, (int)(sizeof cpu_ref_ts_ / sizeof *cpu_ref_ts_), cpu_ref_ts_); \
    call;                                                                              \
    cpu_narrow(&cpu_ref_set_);                                                         \
  } while (0)

#ifdef __cplusplus
}
#endif
