/* Configuration and RNG state in checkpoints (see checkpoint.h). */
#include "checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>

int checkpoint_save_config(TensorFile *tf, const Config *cfg, McmErr *err) {
  char *text = config_to_string(cfg);
  int rc = tf_set_attr(tf, "config", text, err);
  free(text);
  return rc;
}

int checkpoint_load_config(TensorFile *tf, Config *cfg, McmErr *err) {
  char *text = NULL;
  if (tf_get_attr(tf, "config", &text, err)) return -1;
  char source[600];
  mcm_snprintf(source, sizeof source, "%s [config]", tf_path(tf));
  config_defaults(cfg);
  int rc = config_parse_string(cfg, text, source, err);
  if (rc == 0) rc = config_validate(cfg, err);
  free(text);
  return rc;
}

int checkpoint_save_rng(TensorFile *tf, const Ctx *ctx, McmErr *err) {
  char v[32];
  mcm_snprintf(v, sizeof v, "%" PRIu64, ctx->seed);
  if (tf_set_attr(tf, "rng_seed", v, err)) return -1;
  mcm_snprintf(v, sizeof v, "%" PRIu64, ctx->rng_offset);
  return tf_set_attr(tf, "rng_offset", v, err);
}

static int read_u64_attr(TensorFile *tf, const char *name, uint64_t *out, McmErr *err) {
  char *text = NULL, *end;
  if (tf_get_attr(tf, name, &text, err)) return -1;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  bool ok = text[0] >= '0' && text[0] <= '9' && !*end && !errno;
  free(text);
  if (!ok) return mcm_err(err, "%s: attribute '%s' is not an unsigned 64-bit integer", tf_path(tf), name);
  *out = v;
  return 0;
}

int checkpoint_load_rng(TensorFile *tf, Ctx *ctx, McmErr *err) {
  uint64_t seed, offset;
  if (read_u64_attr(tf, "rng_seed", &seed, err) || read_u64_attr(tf, "rng_offset", &offset, err)) return -1;
  ctx->seed = seed;
  ctx->rng_offset = offset;
  return 0;
}

/* ------------------------------------------------------------------ AdamW state */

static const char *const kStateKinds[] = {"m", "v", "master"};

static void state_name(char *buf, size_t size, const char *prefix, const char *kind, const char *param) {
  mcm_snprintf(buf, size, "%s/%s/%s", prefix, kind, param);
}

static void check_adamw_args(const char *fn, const char *prefix, const AdamW *opt) {
  MCM_CHECK(prefix && prefix[0], "%s: empty prefix", fn);
  for (int i = 0; i < opt->n; i++)
    MCM_CHECK(opt->params[i]->name, "%s: parameter %d %s has no name, so its state cannot be saved", fn, i,
              TENSOR_SHAPE_STR(opt->params[i]));
}

static int write_fp32(Ctx *ctx, TensorFile *tf, const char *name, const Tensor *t, McmErr *err) {
  float *host = MALLOC_CHECK((size_t)(t->numel ? t->numel : 1) * sizeof(float));
  tensor_to_host_f32(ctx, t, host);
  int rc = tf_write(tf, name, DT_F32, t->ndim, t->shape, host, err);
  free(host);
  return rc;
}

static int set_attr_fmt(TensorFile *tf, const char *prefix, const char *key, McmErr *err, const char *fmt, ...)
    MCM_PRINTF(5, 6);
static int set_attr_fmt(TensorFile *tf, const char *prefix, const char *key, McmErr *err, const char *fmt, ...) {
  char name[256], value[64];
  mcm_snprintf(name, sizeof name, "%s.%s", prefix, key);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(value, sizeof value, fmt, ap);
  va_end(ap);
  return tf_set_attr(tf, name, value, err);
}

int checkpoint_save_adamw(Ctx *ctx, TensorFile *tf, const char *prefix, const AdamW *opt, McmErr *err) {
  check_adamw_args("checkpoint_save_adamw", prefix, opt);
  char name[1024];
  for (int i = 0; i < opt->n; i++) {
    const Tensor *state[3] = {opt->m[i], opt->v[i], opt->master[i]};
    for (int k = 0; k < 3; k++) {
      if (!state[k]) continue;
      state_name(name, sizeof name, prefix, kStateKinds[k], opt->params[i]->name);
      if (write_fp32(ctx, tf, name, state[k], err)) return -1;
    }
  }
  /* %.9g: nine significant digits round-trip every fp32 value exactly. */
  if (set_attr_fmt(tf, prefix, "step", err, "%" PRId64, opt->step) ||
      set_attr_fmt(tf, prefix, "n_params", err, "%d", opt->n) ||
      set_attr_fmt(tf, prefix, "lr", err, "%.9g", opt->lr) ||
      set_attr_fmt(tf, prefix, "beta1", err, "%.9g", opt->beta1) ||
      set_attr_fmt(tf, prefix, "beta2", err, "%.9g", opt->beta2) ||
      set_attr_fmt(tf, prefix, "eps", err, "%.9g", opt->eps) ||
      set_attr_fmt(tf, prefix, "weight_decay", err, "%.9g", opt->weight_decay))
    return -1;
  return 0;
}

static int get_attr_num(TensorFile *tf, const char *prefix, const char *key, bool integer, double *out, McmErr *err) {
  char name[256], *text = NULL, *end;
  mcm_snprintf(name, sizeof name, "%s.%s", prefix, key);
  if (tf_get_attr(tf, name, &text, err)) return -1;
  errno = 0;
  bool ok;
  if (integer) {
    long long v = strtoll(text, &end, 10);
    ok = text[0] >= '0' && text[0] <= '9' && !*end && !errno;
    *out = (double)v;
  } else {
    float v = strtof(text, &end);
    ok = text[0] && !*end && !errno && isfinite(v);
    *out = v;
  }
  int rc = ok ? 0
              : mcm_err(err, "%s: attribute '%s' is '%s', not a %s", tf_path(tf), name, text,
                        integer ? "non-negative integer" : "finite number");
  free(text);
  return rc;
}

/* The file's state for exactly opt's parameters, with their shapes. */
static int check_adamw_tensors(TensorFile *tf, const char *prefix, const AdamW *opt, McmErr *err) {
  char name[1024];
  for (int i = 0; i < opt->n; i++) {
    const Tensor *p = opt->params[i];
    for (int k = 0; k < 3; k++) {
      state_name(name, sizeof name, prefix, kStateKinds[k], p->name);
      if (k == 2 && !tf_has(tf, name)) continue; /* master copies are optional */
      if (!tf_has(tf, name))
        return mcm_err(err, "%s: optimizer state '%s' for parameter '%s' is missing (hint: the checkpoint was "
                            "written for another model or with other parameters frozen)",
                       tf_path(tf), name, p->name);
      int ndim;
      int64_t shape[MCM_MAX_DIMS];
      if (tf_info(tf, name, &ndim, shape, NULL, err)) return -1;
      if (ndim != p->ndim || memcmp(shape, p->shape, (size_t)ndim * sizeof *shape))
        return mcm_err(err, "%s: optimizer state '%s' has shape %s, parameter '%s' is %s (hint: the checkpoint "
                            "was written for another model configuration)",
                       tf_path(tf), name, shape_str((char[96]){0}, 96, ndim, shape), p->name, TENSOR_SHAPE_STR(p));
    }
  }
  char **names;
  int n_names;
  if (tf_names(tf, &names, &n_names, err)) return -1;
  char head[300];
  int rc = 0;
  for (int j = 0; j < n_names && rc == 0; j++) {
    for (int k = 0; k < 3 && rc == 0; k++) {
      mcm_snprintf(head, sizeof head, "%s/%s/", prefix, kStateKinds[k]);
      if (strncmp(names[j], head, strlen(head))) continue;
      const char *pname = names[j] + strlen(head);
      bool known = false;
      for (int i = 0; i < opt->n && !known; i++) known = !strcmp(opt->params[i]->name, pname);
      if (!known)
        rc = mcm_err(err, "%s: the checkpoint has optimizer state '%s' for '%s', which this optimizer does not train "
                          "(hint: the checkpoint was written for another model or with other parameters frozen)",
                     tf_path(tf), names[j], pname);
    }
  }
  tf_free_names(names, n_names);
  return rc;
}

static int read_into(Ctx *ctx, TensorFile *tf, const char *name, Tensor *t, McmErr *err) {
  float *host = MALLOC_CHECK((size_t)(t->numel ? t->numel : 1) * sizeof(float));
  int rc = tf_read(tf, name, t->ndim, t->shape, host, err);
  if (rc == 0) tensor_from_host_f32(ctx, t, host);
  free(host);
  return rc;
}

int checkpoint_load_adamw(Ctx *ctx, TensorFile *tf, const char *prefix, AdamW *opt, McmErr *err) {
  check_adamw_args("checkpoint_load_adamw", prefix, opt);
  double step, n_params, hyper[5];
  const char *keys[5] = {"lr", "beta1", "beta2", "eps", "weight_decay"};
  if (get_attr_num(tf, prefix, "step", true, &step, err) || get_attr_num(tf, prefix, "n_params", true, &n_params, err))
    return -1;
  for (int k = 0; k < 5; k++)
    if (get_attr_num(tf, prefix, keys[k], false, &hyper[k], err)) return -1;
  if (n_params != opt->n)
    return mcm_err(err, "%s: the checkpoint's optimizer '%s' has state for %.0f parameters, this one trains %d (hint: "
                        "the checkpoint was written for another model or with other parameters frozen)",
                   tf_path(tf), prefix, n_params, opt->n);
  if (check_adamw_tensors(tf, prefix, opt, err)) return -1;

  char name[1024];
  for (int i = 0; i < opt->n; i++) {
    Tensor *p = opt->params[i];
    state_name(name, sizeof name, prefix, "m", p->name);
    if (read_into(ctx, tf, name, opt->m[i], err)) return -1;
    state_name(name, sizeof name, prefix, "v", p->name);
    if (read_into(ctx, tf, name, opt->v[i], err)) return -1;
    state_name(name, sizeof name, prefix, "master", p->name);
    bool saved_master = tf_has(tf, name);
    if (opt->master[i] && saved_master) {
      if (read_into(ctx, tf, name, opt->master[i], err)) return -1;
    } else if (opt->master[i]) {
      tensor_copy(ctx, opt->master[i], p); /* saved from an fp32 run: the parameter is the weight */
    } else if (saved_master && p->dtype == DT_F32) {
      if (read_into(ctx, tf, name, p, err)) return -1; /* the master is more precise than a bf16 save */
    }
  }
  opt->step = (int64_t)step;
  opt->lr = (float)hyper[0];
  opt->beta1 = (float)hyper[1];
  opt->beta2 = (float)hyper[2];
  opt->eps = (float)hyper[3];
  opt->weight_decay = (float)hyper[4];
  return 0;
}
