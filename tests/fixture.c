/* Fixture reading and comparison (see fixture.h). */
#include "fixture.h"

#include <math.h>

#include "test.h"

Fixture *fixture_open(const char *path) {
  McmErr err;
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "fixture: %s (regenerate with the script beside it)", err.msg);
  return tf;
}

void fixture_close(Fixture *fx) { tf_close(fx); }

static void fixture_shape(Fixture *fx, const char *name, int *ndim, int64_t *shape) {
  McmErr err;
  DType dt;
  ASSERT(tf_info(fx, name, ndim, shape, &dt, &err) == 0, "fixture: %s", err.msg);
}

float *fixture_values(Fixture *fx, const char *name, int64_t *n) {
  int ndim;
  int64_t shape[MCM_MAX_DIMS];
  fixture_shape(fx, name, &ndim, shape);
  *n = shape_numel(ndim, shape);
  float *v = MALLOC_CHECK((size_t)(*n ? *n : 1) * sizeof(float));
  McmErr err;
  ASSERT(tf_read(fx, name, ndim, shape, v, &err) == 0, "fixture: %s", err.msg);
  return v;
}

Tensor *fixture_tensor(Ctx *ctx, Fixture *fx, const char *name, bool requires_grad) {
  int ndim;
  int64_t shape[MCM_MAX_DIMS], n;
  fixture_shape(fx, name, &ndim, shape);
  if (ndim == 0) { /* a scalar: store as shape (1) */
    ndim = 1;
    shape[0] = 1;
  }
  float *v = fixture_values(fx, name, &n);
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  tensor_from_host_f32(ctx, t, v);
  free(v);
  t->requires_grad = requires_grad;
  return t;
}

double fixture_expect(Ctx *ctx, Fixture *fx, const char *name, const Tensor *got, double rel_tol) {
  if (!got) {
    test_fail(__FILE__, __LINE__, "%s: no tensor to compare (a gradient that never arrived?)", name);
    return INFINITY;
  }
  int64_t n;
  float *ref = fixture_values(fx, name, &n);
  if (n != got->numel) {
    test_fail(__FILE__, __LINE__, "%s: fixture has %lld elements, mcm produced %lld (shape %s)", name, (long long)n,
              (long long)got->numel, TENSOR_SHAPE_STR(got));
    free(ref);
    return INFINITY;
  }
  float *g = MALLOC_CHECK((size_t)(n ? n : 1) * sizeof(float));
  tensor_to_host_f32(ctx, got, g);
  double num = 0, den = 0;
  int64_t worst = 0;
  double worst_d = -1;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)g[i] - ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
    if (!(fabs(d) <= worst_d)) worst_d = fabs(d), worst = i;
  }
  double rel = sqrt(num) / fmax(sqrt(den), 1e-30);
  if (!(rel <= rel_tol))
    test_fail(__FILE__, __LINE__, "%s: relative L2 error %.3g > %.3g (worst element %lld: mcm %.7g, reference %.7g)",
              name, rel, rel_tol, (long long)worst, n ? g[worst] : 0.0, n ? ref[worst] : 0.0);
  free(ref);
  free(g);
  return rel;
}
