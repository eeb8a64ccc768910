/* Named parameter sets (see params.h). */
#include "params.h"

#include <math.h>
#include <stdarg.h>

#include "kernels/rng.h"

void params_init(ParamSet *ps, const char *root) {
  memset(ps, 0, sizeof *ps);
  ps->dtype = DT_F32;
  ps->trainable = true;
  mcm_snprintf(ps->prefix, sizeof ps->prefix, "%s", root);
}

void params_free(ParamSet *ps) {
  free(ps->p);
  ps->p = NULL;
  ps->n = ps->cap = 0;
}

void params_push(ParamSet *ps, const char *fmt, ...) {
  MCM_CHECK(ps->depth < PARAMS_MAX_DEPTH, "params_push: nesting deeper than %d under '%s'", PARAMS_MAX_DEPTH,
            ps->prefix);
  size_t len = strlen(ps->prefix);
  ps->stack[ps->depth++] = len;
  char part[PARAMS_NAME_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(part, sizeof part, fmt, ap);
  va_end(ap);
  int n = snprintf(ps->prefix + len, sizeof ps->prefix - len, "%s%s", len ? "." : "", part);
  MCM_CHECK(n >= 0 && (size_t)n < sizeof ps->prefix - len, "params_push: name too long: '%s.%s'", ps->prefix, part);
}

void params_pop(ParamSet *ps) {
  MCM_CHECK(ps->depth > 0, "params_pop without a matching push");
  ps->prefix[ps->stack[--ps->depth]] = 0;
}

Tensor *params_find(const ParamSet *ps, const char *full_name) {
  for (int i = 0; i < ps->n; i++)
    if (!strcmp(ps->p[i]->name, full_name)) return ps->p[i];
  return NULL;
}

Tensor *params_new(Ctx *ctx, ParamSet *ps, const char *name, int ndim, const int64_t *shape) {
  char full[PARAMS_NAME_MAX];
  int n = snprintf(full, sizeof full, "%s%s%s", ps->prefix, ps->prefix[0] ? "." : "", name);
  MCM_CHECK(n >= 0 && (size_t)n < sizeof full, "parameter name too long: '%s.%s'", ps->prefix, name);
  MCM_CHECK(!params_find(ps, full), "parameter '%s' defined twice", full);
  Tensor *t = param_new(ctx, full, ps->dtype, ndim, shape, ps->trainable);
  if (ps->n == ps->cap) {
    ps->cap = ps->cap ? 2 * ps->cap : 64;
    ps->p = REALLOC_CHECK(ps->p, (size_t)ps->cap * sizeof *ps->p);
  }
  ps->p[ps->n++] = t;
  return t;
}

int64_t params_count(const ParamSet *ps) {
  int64_t n = 0;
  for (int i = 0; i < ps->n; i++) n += ps->p[i]->numel;
  return n;
}

void params_set_trainable(Ctx *ctx, ParamSet *ps, bool trainable) {
  for (int i = 0; i < ps->n; i++) param_set_trainable(ctx, ps->p[i], trainable);
  ps->trainable = trainable;
}

static void file_name(char *buf, size_t size, const char *file_prefix, const char *name) {
  snprintf(buf, size, "%s%s", file_prefix ? file_prefix : "", name);
}

int params_load(Ctx *ctx, ParamSet *ps, TensorFile *tf, const char *file_prefix, bool allow_extra, McmErr *err) {
  char key[PARAMS_NAME_MAX * 2];
  for (int i = 0; i < ps->n; i++) {
    file_name(key, sizeof key, file_prefix, ps->p[i]->name);
    if (tf_read_tensor(ctx, tf, key, ps->p[i], err)) return -1;
  }
  if (allow_extra) return 0;
  char **names = NULL;
  int n = 0;
  if (tf_names(tf, &names, &n, err)) return -1;
  size_t plen = file_prefix ? strlen(file_prefix) : 0;
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    if (plen && strncmp(names[i], file_prefix, plen)) continue; /* another component's tensor */
    if (!params_find(ps, names[i] + plen))
      rc = mcm_err(err, "%s: tensor '%s' is not a parameter of this model (does the configuration match the weights?)",
                   tf_path(tf), names[i]);
  }
  tf_free_names(names, n);
  return rc;
}

void params_cast(Ctx *ctx, ParamSet *ps, int first, int n, DType dtype) {
  MCM_CHECK(dtype == DT_F32 || dtype == DT_BF16, "params_cast: dtype %s is not fp32 or bf16", dtype_name(dtype));
  MCM_CHECK(first >= 0 && n >= 0 && first + n <= ps->n, "params_cast: range %d+%d of %d parameters", first, n, ps->n);
  for (int i = first; i < first + n; i++) {
    Tensor *p = ps->p[i];
    if (p->dtype == dtype) continue;
    MCM_CHECK(!p->requires_grad, "params_cast: '%s' is trainable; only frozen parameters change dtype", p->name);
    Tensor *q = tensor_new_persistent(ctx, dtype, p->ndim, p->shape); /* converts on either device */
    tensor_copy(ctx, q, p);
    ctx_sync(ctx);
    ctx_free_persistent(ctx, p->data);
    p->data = q->data;
    p->dtype = dtype;
  }
}

int params_save(Ctx *ctx, const ParamSet *ps, TensorFile *tf, const char *file_prefix, DType stored, McmErr *err) {
  char key[PARAMS_NAME_MAX * 2];
  for (int i = 0; i < ps->n; i++) {
    Tensor view = *ps->p[i];
    file_name(key, sizeof key, file_prefix, ps->p[i]->name);
    view.name = key;
    if (tf_write_tensor(ctx, tf, &view, stored, err)) return -1;
  }
  return 0;
}

/* Draws into an fp32 host buffer through a temporary tensor on the context's device, so the
 * numbers are the RNG's on either device; then scales. */
static void init_scaled(Ctx *ctx, Tensor *w, float scale, float shift, bool normal) {
  Tensor *tmp = tensor_new(ctx, DT_F32, w->ndim, w->shape);
  normal ? rng_normal(ctx, tmp) : rng_uniform(ctx, tmp);
  float *h = MALLOC_CHECK((size_t)(w->numel ? w->numel : 1) * sizeof(float));
  tensor_to_host_f32(ctx, tmp, h);
  for (int64_t i = 0; i < w->numel; i++) h[i] = scale * (h[i] + shift);
  tensor_from_host_f32(ctx, w, h);
  free(h);
}

void params_init_normal(Ctx *ctx, Tensor *w, float std) { init_scaled(ctx, w, std, 0.0f, true); }

void params_init_uniform(Ctx *ctx, Tensor *w, float bound) {
  init_scaled(ctx, w, 2.0f * bound, -0.5f, false); /* U[0,1) → U[-bound, bound) */
}

void params_init_default(Ctx *ctx, Tensor *w, Tensor *b) {
  int64_t fan_in = w->ndim > 1 ? w->numel / w->shape[0] : w->numel;
  float bound = fan_in > 0 ? 1.0f / sqrtf((float)fan_in) : 0.0f;
  params_init_uniform(ctx, w, bound);
  if (b) params_init_uniform(ctx, b, bound);
}
