/* Tensor headers, shape checks and scalar dtype conversions (see tensor.h). */
#include "tensor.h"

#include <math.h>

size_t dtype_size(DType dt) {
  switch (dt) {
    case DT_F32: return 4;
    case DT_BF16: return 2;
    case DT_F16: return 2;
    case DT_I32: return 4;
  }
  MCM_FATAL("unknown dtype %d", (int)dt);
}

const char *dtype_name(DType dt) {
  switch (dt) {
    case DT_F32: return "fp32";
    case DT_BF16: return "bf16";
    case DT_F16: return "fp16";
    case DT_I32: return "int32";
  }
  return "unknown-dtype";
}

char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
  size_t n = 0;
  n += (size_t)snprintf(buf + n, size - n, "[");
  for (int i = 0; i < ndim && n < size; i++)
    n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (n < size) snprintf(buf + n, size - n, "]");
  return buf;
}

int64_t shape_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

bool tensor_same_shape(const Tensor *a, const Tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

size_t tensor_bytes(const Tensor *t) { return (size_t)t->numel * dtype_size(t->dtype); }

void tensor_init_header(Tensor *t, DType dtype, DevKind dev, int ndim, const int64_t *shape) {
  MCM_CHECK(ndim >= 1 && ndim <= MCM_MAX_DIMS, "tensor rank %d is outside 1..%d", ndim, MCM_MAX_DIMS);
  for (int i = 0; i < ndim; i++)
    MCM_CHECK(shape[i] >= 0, "tensor %s has a negative size", shape_str((char[96]){0}, 96, ndim, shape));
  t->dtype = dtype;
  t->dev = dev;
  t->ndim = ndim;
  for (int i = 0; i < MCM_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
  t->numel = shape_numel(ndim, shape);
}

void tensor_check_shape(const char *file, int line, const char *op, const char *arg, const Tensor *t, int ndim,
                        const int64_t *expect) {
  bool ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = expect[i] < 0 || expect[i] == t->shape[i];
  if (!ok) {
    char want[128], got[128];
    size_t n = (size_t)snprintf(want, sizeof want, "[");
    for (int i = 0; i < ndim; i++)
      n += expect[i] < 0 ? (size_t)snprintf(want + n, sizeof want - n, i ? ", *" : "*")
                         : (size_t)snprintf(want + n, sizeof want - n, i ? ", %lld" : "%lld", (long long)expect[i]);
    snprintf(want + n, sizeof want - n, "]");
    mcm_fatal(file, line, "%s: %s has shape %s, expected %s", op, arg, shape_str(got, sizeof got, t->ndim, t->shape),
              want);
  }
}

void tensor_check_dtype(const char *file, int line, const char *op, const char *arg, const Tensor *t, DType dt) {
  if (t->dtype != dt) mcm_fatal(file, line, "%s: %s is %s, expected %s", op, arg, dtype_name(t->dtype), dtype_name(dt));
}

void tensor_check_same_shape(const char *file, int line, const char *op, const char *an, const Tensor *a,
                             const char *bn, const Tensor *b) {
  if (!tensor_same_shape(a, b))
    mcm_fatal(file, line, "%s: %s has shape %s but %s has shape %s", op, an, TENSOR_SHAPE_STR(a), bn,
              TENSOR_SHAPE_STR(b));
}

/* ---- scalar conversions ---- */

uint16_t f32_to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);                                          /* nearest, ties to even */
  return (uint16_t)(u >> 16);
}

float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

uint16_t f32_to_f16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
  if (a < 0x38800000u) {
    /* fp16 subnormal or zero: value = m * 2^-24; round a * 2^24 to nearest even. */
    float f;
    memcpy(&f, &a, 4);
    float m = nearbyintf(f * 16777216.0f); /* exact: scaling by a power of two; default mode is ties-to-even */
    return (uint16_t)(sign | (uint32_t)m);
  }
  uint32_t exp16 = ((a >> 23) - 127 + 15) << 10;
  uint32_t mant = a & 0x7fffffu;
  uint32_t h = exp16 | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* carries into the exponent correctly */
  return (uint16_t)(sign | h);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  float x;
  if (e == 0) {
    x = ldexpf((float)m, -24);
    uint32_t u;
    memcpy(&u, &x, 4);
    u |= sign;
    memcpy(&x, &u, 4);
    return x;
  }
  uint32_t u = e == 31 ? (sign | 0x7f800000u | (m << 13)) : (sign | ((e - 15 + 127) << 23) | (m << 13));
  memcpy(&x, &u, 4);
  return x;
}
