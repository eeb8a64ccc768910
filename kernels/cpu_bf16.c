/* bf16 on the CPU: widening around the fp32 references (see cpu_bf16.h). */
#include "cpu_bf16.h"

void cpu_widen(CpuWidenSet *s, int n, const Tensor *const *ts) {
  s->n = 0;
  for (int i = 0; i < n; i++) {
    Tensor *t = (Tensor *)ts[i]; /* the header changes for the call and is restored by cpu_narrow */
    if (!t || t->dtype != DT_BF16) continue;
    MCM_CHECK(t->dev == DEV_CPU, "cpu_widen: tensor %s is not on the CPU", TENSOR_SHAPE_STR(t));
    bool seen = false; /* the same header listed twice (x as input and as output) widens once */
    for (int j = 0; j < s->n; j++) seen |= s->w[j].t == t;
    if (seen) continue;
    MCM_CHECK(s->n < CPU_WIDEN_MAX, "cpu_widen: more than %d bf16 tensors in one op", CPU_WIDEN_MAX);
    float *f = MALLOC_CHECK((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    const uint16_t *h = t->data;
    const int64_t numel = t->numel;
#pragma omp parallel for if (numel > 65536)
    for (int64_t k = 0; k < numel; k++) f[k] = bf16_to_f32(h[k]);
    s->w[s->n++] = (CpuWidened){.t = t, .bf16 = t->data, .f32 = f};
    t->data = f;
    t->dtype = DT_F32;
  }
}

void cpu_narrow(CpuWidenSet *s) {
  for (int i = 0; i < s->n; i++) {
    CpuWidened *w = &s->w[i];
    uint16_t *h = w->bf16;
    const float *f = w->f32;
    const int64_t numel = w->t->numel;
#pragma omp parallel for if (numel > 65536)
    for (int64_t k = 0; k < numel; k++) h[k] = f32_to_bf16(f[k]);
    w->t->data = w->bf16;
    w->t->dtype = DT_BF16;
    free(w->f32);
  }
  s->n = 0;
}
