/* Configuration and RNG state in checkpoints (see checkpoint.h). */
#include "checkpoint.h"

#include <inttypes.h>

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
