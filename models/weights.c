/* Model configurations from converted weight files, their inverse (config.json text), and
 * random-weight bundles (see weights.h). */
#include "models/weights.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "core/io.h"
#include "core/tensorfile.h"
#include "data/tokenizer.h"
#include "kernels/tape.h"

/* ================================================================ reading config.json */

/* An integer key of a config.json object: 0 when absent (out untouched) or read, -1 when
 * present but not an int. where: "" or "text_config." for messages. */
static int json_int(json_t *obj, const char *key, int *out, const char *path, const char *where, McmErr *err) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
    return mcm_err(err, "%s: its config has %s%s that is not an integer", path, where, key);
  *out = (int)json_integer_value(v);
  return 0;
}

static int json_bool(json_t *obj, const char *key, bool *out, const char *path, McmErr *err) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_boolean(v)) return mcm_err(err, "%s: its config has %s that is not true or false", path, key);
  *out = json_is_true(v);
  return 0;
}

static int json_float(json_t *obj, const char *key, float *out, const char *path, const char *where, McmErr *err) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_number(v)) return mcm_err(err, "%s: its config has %s%s that is not a number", path, where, key);
  *out = (float)json_number_value(v);
  return 0;
}

/* A list of 1..max positive integers: *n (and out[0..n)) untouched when the key is absent.
 * A bare number is taken as that value at every one of `fill` positions (fill > 0), as
 * diffusers reads its per-level keys. */
static int json_int_list(json_t *obj, const char *key, int *out, int *n, int max, int fill, const char *path,
                         McmErr *err) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  if (fill > 0 && json_is_integer(v)) {
    if (json_integer_value(v) < 1 || json_integer_value(v) > INT32_MAX)
      return mcm_err(err, "%s: its config's %s is not a positive integer", path, key);
    for (int i = 0; i < fill; i++) out[i] = (int)json_integer_value(v);
    if (n) *n = fill;
    return 0;
  }
  size_t len = json_array_size(v);
  if (!json_is_array(v) || len < 1 || len > (size_t)max)
    return mcm_err(err, "%s: its config's %s is not a list of 1..%d sizes", path, key, max);
  for (size_t i = 0; i < len; i++) {
    json_t *e = json_array_get(v, i);
    if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > INT32_MAX)
      return mcm_err(err, "%s: its config's %s[%zu] is not a positive integer", path, key, i);
    out[i] = (int)json_integer_value(e);
  }
  if (n) *n = (int)len;
  return 0;
}

/* The weights file's `config` attribute as a JSON object: *root NULL when the file has none.
 * Says early (before a model is built) that the file is missing, not a tensor file, or
 * another component's (tools/convert_diffusers.py writes `component`). */
static int weights_config(const char *path, const char *what, const char *component, json_t **root, McmErr *err) {
  *root = NULL;
  McmErr why = {{0}};
  TensorFile *tf = tf_open(path, &why);
  if (!tf) return mcm_err(err, "%s weights: %s", what, why.msg);
  int rc = weights_meta(tf, component, root, err);
  tf_close(tf);
  return rc;
}

/* ---------------------------------------------------------------- UNet */

static int unet_from_json(json_t *root, const char *path, UNetConfig *c, int *sample_size, McmErr *err) {
  int rc = json_int(root, "in_channels", &c->in_channels, path, "", err);
  if (!rc) rc = json_int(root, "out_channels", &c->out_channels, path, "", err);
  if (!rc) rc = json_int_list(root, "block_out_channels", c->block_out_channels, &c->levels, UNET_MAX_LEVELS, 0, path, err);
  const int L = c->levels;
  json_t *down = json_object_get(root, "down_block_types");
  if (!rc && down && !json_is_null(down)) {
    if (!json_is_array(down) || json_array_size(down) != (size_t)L)
      rc = mcm_err(err, "%s: its config's down_block_types is not a list of %d block types", path, L);
    for (int l = 0; !rc && l < L; l++) {
      const char *s = json_string_value(json_array_get(down, (size_t)l));
      if (!s) rc = mcm_err(err, "%s: its config's down_block_types[%d] is not a string", path, l);
      else c->attention[l] = strstr(s, "CrossAttn") != NULL;
    }
  }
  if (!rc) rc = json_int(root, "layers_per_block", &c->layers_per_block, path, "", err);
  int tl[UNET_MAX_LEVELS], ntl = 0;
  if (!rc) rc = json_int_list(root, "transformer_layers_per_block", tl, &ntl, UNET_MAX_LEVELS, L, path, err);
  for (int l = 1; !rc && l < ntl; l++)
    if (tl[l] != tl[0])
      rc = mcm_err(err, "%s: its config's transformer_layers_per_block differs between levels; mcm's UNet has one "
                   "value for all", path);
  if (!rc && ntl) c->transformer_layers = tl[0];
  if (!rc) rc = json_int(root, "norm_num_groups", &c->norm_groups, path, "", err);
  if (!rc) rc = json_float(root, "norm_eps", &c->norm_eps, path, "", err);
  /* Heads as diffusers counts them: num_attention_heads, else its legacy attention_head_dim. */
  json_t *nh = json_object_get(root, "num_attention_heads");
  const char *hkey = nh && !json_is_null(nh) ? "num_attention_heads" : "attention_head_dim";
  int heads[UNET_MAX_LEVELS], nheads = 0;
  if (!rc) rc = json_int_list(root, hkey, heads, &nheads, UNET_MAX_LEVELS, L, path, err);
  if (!rc && nheads) {
    if (nheads != L)
      rc = mcm_err(err, "%s: its config's %s has %d entries for %d levels", path, hkey, nheads, L);
    c->num_head_channels = 0;
    for (int l = 0; l < L; l++) c->num_heads[l] = heads[l];
  }
  if (!rc) rc = json_bool(root, "flip_sin_to_cos", &c->flip_sin_to_cos, path, err);
  if (!rc) rc = json_float(root, "freq_shift", &c->freq_shift, path, "", err);
  c->time_proj_dim = c->block_out_channels[0];
  c->time_embed_dim = 4 * c->block_out_channels[0]; /* diffusers' default when time_embedding_dim is null */
  if (!rc) rc = json_int(root, "time_embedding_dim", &c->time_embed_dim, path, "", err);
  if (!rc) rc = json_int(root, "projection_class_embeddings_input_dim", &c->class_embed_in, path, "", err);
  json_t *ss = json_object_get(root, "sample_size");
  if (!rc && ss && !json_is_null(ss)) {
    json_t *first = json_is_array(ss) ? json_array_get(ss, 0) : ss;
    if (!json_is_integer(first) || json_integer_value(first) < 1 || json_integer_value(first) > INT32_MAX)
      rc = mcm_err(err, "%s: its config's sample_size is not a positive integer (or [frames, bins])", path);
    else if (sample_size)
      *sample_size = (int)json_integer_value(first);
  }
  return rc;
}

int unet_config_from_weights(const char *path, UNetConfig *c, int *sample_size, McmErr *err) {
  *c = unet_config_musicldm();
  if (sample_size) *sample_size = 0;
  json_t *root;
  if (weights_config(path, "UNet", "unet", &root, err)) return -1;
  int rc = root ? unet_from_json(root, path, c, sample_size, err) : 0;
  json_decref(root);
  McmErr why = {{0}};
  if (!rc && unet_config_check(c, &why)) rc = mcm_err(err, "%s: %s", path, why.msg);
  return rc;
}

/* ---------------------------------------------------------------- VAE */

int vae_config_from_weights(const char *path, VaeConfig *c, McmErr *err) {
  *c = vae_config_musicldm();
  json_t *root;
  if (weights_config(path, "VAE", "vae", &root, err)) return -1;
  int rc = 0;
  if (root) {
    rc = json_int(root, "in_channels", &c->in_channels, path, "", err);
    if (!rc) rc = json_int(root, "out_channels", &c->out_channels, path, "", err);
    if (!rc) rc = json_int(root, "latent_channels", &c->latent_channels, path, "", err);
    if (!rc) rc = json_int(root, "layers_per_block", &c->layers_per_block, path, "", err);
    if (!rc) rc = json_int(root, "norm_num_groups", &c->norm_num_groups, path, "", err);
    if (!rc) rc = json_bool(root, "mid_block_add_attention", &c->mid_block_add_attention, path, err);
    if (!rc) rc = json_bool(root, "use_quant_conv", &c->use_quant_conv, path, err);
    if (!rc) rc = json_bool(root, "use_post_quant_conv", &c->use_post_quant_conv, path, err);
    if (!rc) rc = json_float(root, "scaling_factor", &c->scaling_factor, path, "", err);
    if (!rc)
      rc = json_int_list(root, "block_out_channels", c->block_out_channels, &c->n_blocks, VAE_MAX_BLOCKS, 0, path,
                         err);
    json_decref(root);
  }
  McmErr why = {{0}};
  if (!rc && vae_config_check(c, &why)) rc = mcm_err(err, "%s: %s", path, why.msg);
  return rc;
}

/* ---------------------------------------------------------------- vocoder */

int hifigan_config_from_weights(const char *path, HifiganConfig *c, McmErr *err) {
  *c = hifigan_config_musicldm();
  json_t *root;
  if (weights_config(path, "vocoder", "vocoder", &root, err)) return -1;
  int rc = 0;
  if (root) {
    int nr = c->n_upsamples, nk = c->n_upsamples;
    rc = json_int(root, "model_in_dim", &c->model_in_dim, path, "", err);
    if (!rc) rc = json_int(root, "sampling_rate", &c->sampling_rate, path, "", err);
    if (!rc) rc = json_int(root, "upsample_initial_channel", &c->upsample_initial_channel, path, "", err);
    if (!rc) rc = json_int_list(root, "upsample_rates", c->upsample_rates, &nr, HIFIGAN_MAX_UPSAMPLES, 0, path, err);
    if (!rc)
      rc = json_int_list(root, "upsample_kernel_sizes", c->upsample_kernel_sizes, &nk, HIFIGAN_MAX_UPSAMPLES, 0, path,
                         err);
    if (!rc && nr != nk)
      rc = mcm_err(err, "%s: its config has %d upsample_rates but %d upsample_kernel_sizes", path, nr, nk);
    c->n_upsamples = nr;
    if (!rc)
      rc = json_int_list(root, "resblock_kernel_sizes", c->resblock_kernel_sizes, &c->n_kernels, HIFIGAN_MAX_KERNELS,
                         0, path, err);
    json_t *dil = json_object_get(root, "resblock_dilation_sizes");
    if (!rc && dil && !json_is_null(dil)) {
      if (!json_is_array(dil) || json_array_size(dil) != (size_t)c->n_kernels)
        rc = mcm_err(err, "%s: its config's resblock_dilation_sizes is not a list of %d lists (one per kernel size)",
                     path, c->n_kernels);
      for (int j = 0; !rc && j < c->n_kernels; j++) {
        json_t *row = json_array_get(dil, (size_t)j);
        size_t n = json_array_size(row);
        if (!json_is_array(row) || n < 1 || n > HIFIGAN_MAX_DILATIONS) {
          rc = mcm_err(err, "%s: its config's resblock_dilation_sizes[%d] is not a list of 1..%d dilations", path, j,
                       HIFIGAN_MAX_DILATIONS);
          break;
        }
        c->n_dilations[j] = (int)n;
        for (size_t i = 0; !rc && i < n; i++) {
          json_t *e = json_array_get(row, i);
          if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > INT32_MAX)
            rc = mcm_err(err, "%s: its config's resblock_dilation_sizes[%d][%zu] is not a positive integer", path, j, i);
          else c->resblock_dilation_sizes[j][i] = (int)json_integer_value(e);
        }
      }
    }
    if (!rc) rc = json_float(root, "leaky_relu_slope", &c->leaky_relu_slope, path, "", err);
    if (!rc) rc = json_bool(root, "normalize_before", &c->normalize_before, path, err);
    json_decref(root);
  }
  c->hop = 0; /* the product of the rates, whatever it is */
  McmErr why = {{0}};
  if (!rc && hifigan_config_check(c, &why)) rc = mcm_err(err, "%s: %s", path, why.msg);
  return rc;
}

/* ---------------------------------------------------------------- CLAP text tower */

/* Sizes in text_config for a ClapConfig (projection_dim possibly only at the root), or at
 * the root for a flat ClapTextConfig. Keys it does not state keep transformers' defaults,
 * which are MusicLDM's values. */
int clap_text_config_from_weights(const char *path, ClapTextConfig *c, McmErr *err) {
  *c = clap_text_config_musicldm();
  json_t *root;
  if (weights_config(path, "text encoder", "text_encoder", &root, err)) return -1;
  int rc = 0;
  if (root) {
    json_t *text = json_object_get(root, "text_config");
    json_t *sec = json_is_object(text) ? text : root;
    const char *where = sec == root ? "" : "text_config.";
    struct {
      const char *key;
      int *field;
    } ints[] = {{"vocab_size", &c->vocab_size},
                {"hidden_size", &c->hidden_size},
                {"num_hidden_layers", &c->num_hidden_layers},
                {"num_attention_heads", &c->num_attention_heads},
                {"intermediate_size", &c->intermediate_size},
                {"max_position_embeddings", &c->max_position_embeddings},
                {"type_vocab_size", &c->type_vocab_size},
                {"pad_token_id", &c->pad_token_id}};
    for (size_t i = 0; !rc && i < sizeof ints / sizeof ints[0]; i++)
      rc = json_int(sec, ints[i].key, ints[i].field, path, where, err);
    if (!rc) rc = json_float(sec, "layer_norm_eps", &c->layer_norm_eps, path, where, err);
    if (!rc && sec != root) rc = json_int(root, "projection_dim", &c->projection_dim, path, "", err);
    if (!rc) rc = json_int(sec, "projection_dim", &c->projection_dim, path, where, err);
    json_decref(root);
  }
  /* MusicLDM's tokenizer length, or what RoBERTa's positions (from pad + 1) leave. */
  int room = c->max_position_embeddings - c->pad_token_id - 1;
  c->max_length = room < 512 ? room : 512;
  McmErr why = {{0}};
  if (!rc && clap_text_config_check(c, &why)) rc = mcm_err(err, "%s: %s", path, why.msg);
  return rc;
}

/* ================================================================ checking a file against a model */

/* How a message names whose weights a component's are ("holds the vae weights, not the UNet's"). */
static const char *whose(const char *component) {
  static const char *const names[][2] = {
      {"unet", "the UNet's"},           {"vae", "the VAE's"},           {"vocoder", "the vocoder's"},
      {"text_encoder", "the text encoder's"}, {"audiomae", "AudioMAE's"}, {"disc_heads", "the discriminator heads'"},
  };
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (!strcmp(names[i][0], component)) return names[i][1];
  return component;
}

int weights_meta(TensorFile *tf, const char *component, json_t **config, McmErr *err) {
  if (config) *config = NULL;
  const char *path = tf_path(tf);
  char *text = NULL;
  if (component && tf_has_attr(tf, "component")) {
    if (tf_get_attr(tf, "component", &text, err)) return -1;
    int rc = strcmp(text, component) ? mcm_err(err, "%s: holds '%s' weights, not %s (hint: pass the file whose "
                                                    "component attribute is '%s')", path, text, whose(component),
                                               component)
                                     : 0;
    free(text);
    if (rc) return rc;
  }
  if (!config || !tf_has_attr(tf, "config")) return 0;
  if (tf_get_attr(tf, "config", &text, err)) return -1;
  json_error_t jerr;
  json_t *root = json_loads(text, 0, &jerr);
  free(text);
  if (!root) return mcm_err(err, "%s: its config attribute is not a JSON object (line %d: %s)", path, jerr.line, jerr.text);
  if (!json_is_object(root)) {
    json_decref(root);
    return mcm_err(err, "%s: its config attribute is not a JSON object", path);
  }
  *config = root;
  return 0;
}

ConfigCheck config_check_begin(const char *path, json_t *root, McmErr *err) {
  return (ConfigCheck){.path = path, .root = root, .section = root, .prefix = "", .err = err};
}

json_t *check_get(ConfigCheck *cc, const char *key) {
  json_t *v = cc->rc ? NULL : json_object_get(cc->section, key);
  return json_is_null(v) ? NULL : v;
}

static void append(char *buf, size_t size, const char *fmt, ...) MCM_PRINTF(3, 4);
static void append(char *buf, size_t size, const char *fmt, ...) {
  size_t len = strlen(buf);
  if (len + 1 >= size) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + len, size - len, fmt, ap);
  va_end(ap);
}

/* A value as compact JSON text, reals to 7 significant digits (what a float holds). */
static void json_text(const json_t *v, char *buf, size_t size) {
  switch (json_typeof(v)) {
  case JSON_INTEGER: append(buf, size, "%lld", (long long)json_integer_value(v)); break;
  case JSON_REAL: append(buf, size, "%.7g", json_real_value(v)); break;
  case JSON_TRUE: append(buf, size, "true"); break;
  case JSON_FALSE: append(buf, size, "false"); break;
  case JSON_NULL: append(buf, size, "null"); break;
  case JSON_STRING: append(buf, size, "\"%s\"", json_string_value(v)); break;
  case JSON_ARRAY:
    append(buf, size, "[");
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (i) append(buf, size, ",");
      json_text(json_array_get(v, i), buf, size);
    }
    append(buf, size, "]");
    break;
  case JSON_OBJECT: {
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    append(buf, size, "%s", s ? s : "{...}");
    free(s);
    break;
  }
  }
}

/* Scalars: integers exactly (a file's 4.0 is 4), reals to 1e-6 relative (the file is fp64
 * text, the model holds floats), anything else equal as JSON. */
static bool scalar_agrees(const json_t *file, const json_t *model) {
  if (json_is_integer(model) && json_is_integer(file)) return json_integer_value(file) == json_integer_value(model);
  if (json_is_integer(model)) return json_is_real(file) && json_real_value(file) == (double)json_integer_value(model);
  if (json_is_real(model))
    return json_is_number(file) && fabs(json_number_value(file) - json_real_value(model)) <= 1e-6 * fabs(json_real_value(model));
  return !json_is_array(file) && !json_is_array(model) && json_equal((json_t *)file, (json_t *)model);
}

static void compare(ConfigCheck *cc, const char *name, const json_t *file, const json_t *model) {
  size_t n = json_array_size(model);
  if (json_is_array(file) && json_is_array(model) && json_array_size(file) == n) {
    for (size_t i = 0; i < n && !cc->rc; i++) {
      char elem[192];
      mcm_snprintf(elem, sizeof elem, "%s[%zu]", name, i);
      compare(cc, elem, json_array_get(file, i), json_array_get(model, i));
    }
    return;
  }
  if (scalar_agrees(file, model)) return;
  char got[256] = "", want[256] = "";
  json_text(file, got, sizeof got);
  json_text(model, want, sizeof want);
  cc->rc = mcm_err(cc->err, "%s: the weights' config has %s = %s, the model is configured with %s (hint: build the "
                   "model with the weights' configuration)", cc->path, name, got, want);
}

void check_value(ConfigCheck *cc, const char *name, json_t *file, json_t *model) {
  MCM_CHECK(model, "check_value: no model value for %s", name);
  if (!cc->rc && file && !json_is_null(file)) compare(cc, name, file, model);
  json_decref(model);
}

static void check_key(ConfigCheck *cc, const char *key, json_t *model) {
  char name[192];
  mcm_snprintf(name, sizeof name, "%s%s", cc->prefix, key);
  check_value(cc, name, check_get(cc, key), model);
}

void check_int(ConfigCheck *cc, const char *key, int64_t model) { check_key(cc, key, json_integer(model)); }
void check_real(ConfigCheck *cc, const char *key, double model) { check_key(cc, key, json_real(model)); }
void check_bool(ConfigCheck *cc, const char *key, bool model) { check_key(cc, key, json_boolean(model)); }
void check_str(ConfigCheck *cc, const char *key, const char *model) { check_key(cc, key, json_string(model)); }

void check_int_list(ConfigCheck *cc, const char *key, const int *model, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(model[i]));
  check_key(cc, key, a);
}

void check_str_list(ConfigCheck *cc, const char *key, const char *const *model, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(a, json_string(model[i]));
  check_key(cc, key, a);
}

int check_fail(ConfigCheck *cc, const char *fmt, ...) {
  if (cc->rc) return cc->rc;
  if (cc->err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cc->err->msg, sizeof cc->err->msg, fmt, ap);
    va_end(ap);
  }
  return cc->rc = -1;
}

/* ================================================================ writing config.json */

static json_t *ints_json(const int *v, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
  return a;
}

static json_t *strs_json(const char *a, const char *b, const bool *pick_a, int n, bool reverse) {
  json_t *arr = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(arr, json_string(pick_a[reverse ? n - 1 - i : i] ? a : b));
  return arr;
}

/* Compact text with floats to 9 significant digits (fp32 round-trips). */
static char *dump(json_t *o) {
  char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
  json_decref(o);
  MCM_CHECK(s, "json_dumps failed");
  return s;
}

char *unet_config_json(const UNetConfig *c, int sample_size) {
  const int L = c->levels;
  int heads[UNET_MAX_LEVELS];
  for (int l = 0; l < L; l++) {
    int h = unet_heads(c, l);
    heads[l] = h > 0 ? h : 1;
  }
  json_t *o = json_object();
  json_object_set_new(o, "_class_name", json_string("UNet2DConditionModel"));
  if (sample_size > 0) json_object_set_new(o, "sample_size", json_integer(sample_size));
  json_object_set_new(o, "in_channels", json_integer(c->in_channels));
  json_object_set_new(o, "out_channels", json_integer(c->out_channels));
  json_object_set_new(o, "down_block_types", strs_json("CrossAttnDownBlock2D", "DownBlock2D", c->attention, L, false));
  json_object_set_new(o, "mid_block_type", json_string("UNetMidBlock2DCrossAttn"));
  json_object_set_new(o, "up_block_types", strs_json("CrossAttnUpBlock2D", "UpBlock2D", c->attention, L, true));
  json_object_set_new(o, "block_out_channels", ints_json(c->block_out_channels, L));
  json_object_set_new(o, "layers_per_block", json_integer(c->layers_per_block));
  json_object_set_new(o, "transformer_layers_per_block", json_integer(c->transformer_layers));
  json_object_set_new(o, "norm_num_groups", json_integer(c->norm_groups));
  json_object_set_new(o, "norm_eps", json_real(c->norm_eps));
  json_object_set_new(o, "cross_attention_dim", ints_json(c->block_out_channels, L));
  json_object_set_new(o, "attention_head_dim", ints_json(heads, L));
  json_object_set_new(o, "flip_sin_to_cos", json_boolean(c->flip_sin_to_cos));
  json_object_set_new(o, "freq_shift", json_real(c->freq_shift));
  json_object_set_new(o, "time_embedding_type", json_string("positional"));
  json_object_set_new(o, "time_embedding_dim", json_integer(c->time_embed_dim));
  json_object_set_new(o, "class_embed_type", json_string("simple_projection"));
  json_object_set_new(o, "projection_class_embeddings_input_dim", json_integer(c->class_embed_in));
  json_object_set_new(o, "class_embeddings_concat", json_true());
  json_object_set_new(o, "act_fn", json_string("silu"));
  return dump(o);
}

char *vae_config_json(const VaeConfig *c, int sample_size) {
  bool all[VAE_MAX_BLOCKS] = {true, true, true, true, true, true};
  json_t *o = json_object();
  json_object_set_new(o, "_class_name", json_string("AutoencoderKL"));
  json_object_set_new(o, "in_channels", json_integer(c->in_channels));
  json_object_set_new(o, "out_channels", json_integer(c->out_channels));
  json_object_set_new(o, "down_block_types", strs_json("DownEncoderBlock2D", "", all, c->n_blocks, false));
  json_object_set_new(o, "up_block_types", strs_json("UpDecoderBlock2D", "", all, c->n_blocks, false));
  json_object_set_new(o, "block_out_channels", ints_json(c->block_out_channels, c->n_blocks));
  json_object_set_new(o, "layers_per_block", json_integer(c->layers_per_block));
  json_object_set_new(o, "act_fn", json_string("silu"));
  json_object_set_new(o, "latent_channels", json_integer(c->latent_channels));
  json_object_set_new(o, "norm_num_groups", json_integer(c->norm_num_groups));
  if (sample_size > 0) json_object_set_new(o, "sample_size", json_integer(sample_size));
  json_object_set_new(o, "scaling_factor", json_real(c->scaling_factor));
  json_object_set_new(o, "mid_block_add_attention", json_boolean(c->mid_block_add_attention));
  json_object_set_new(o, "use_quant_conv", json_boolean(c->use_quant_conv));
  json_object_set_new(o, "use_post_quant_conv", json_boolean(c->use_post_quant_conv));
  return dump(o);
}

char *hifigan_config_json(const HifiganConfig *c) {
  json_t *o = json_object();
  json_object_set_new(o, "architectures", json_pack("[s]", "SpeechT5HifiGan"));
  json_object_set_new(o, "model_type", json_string("hifigan"));
  json_object_set_new(o, "model_in_dim", json_integer(c->model_in_dim));
  json_object_set_new(o, "sampling_rate", json_integer(c->sampling_rate));
  json_object_set_new(o, "upsample_initial_channel", json_integer(c->upsample_initial_channel));
  json_object_set_new(o, "upsample_rates", ints_json(c->upsample_rates, c->n_upsamples));
  json_object_set_new(o, "upsample_kernel_sizes", ints_json(c->upsample_kernel_sizes, c->n_upsamples));
  json_object_set_new(o, "resblock_kernel_sizes", ints_json(c->resblock_kernel_sizes, c->n_kernels));
  json_t *dil = json_array();
  for (int j = 0; j < c->n_kernels; j++)
    json_array_append_new(dil, ints_json(c->resblock_dilation_sizes[j], c->n_dilations[j]));
  json_object_set_new(o, "resblock_dilation_sizes", dil);
  json_object_set_new(o, "leaky_relu_slope", json_real(c->leaky_relu_slope));
  json_object_set_new(o, "normalize_before", json_boolean(c->normalize_before));
  return dump(o);
}

char *clap_text_config_json(const ClapTextConfig *c) {
  json_t *t = json_object();
  json_object_set_new(t, "model_type", json_string("clap_text_model"));
  json_object_set_new(t, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(t, "hidden_size", json_integer(c->hidden_size));
  json_object_set_new(t, "num_hidden_layers", json_integer(c->num_hidden_layers));
  json_object_set_new(t, "num_attention_heads", json_integer(c->num_attention_heads));
  json_object_set_new(t, "intermediate_size", json_integer(c->intermediate_size));
  json_object_set_new(t, "max_position_embeddings", json_integer(c->max_position_embeddings));
  json_object_set_new(t, "type_vocab_size", json_integer(c->type_vocab_size));
  json_object_set_new(t, "pad_token_id", json_integer(c->pad_token_id));
  json_object_set_new(t, "layer_norm_eps", json_real(c->layer_norm_eps));
  json_object_set_new(t, "hidden_act", json_string("gelu"));
  json_object_set_new(t, "projection_hidden_act", json_string("relu"));
  json_object_set_new(t, "position_embedding_type", json_string("absolute"));
  json_object_set_new(t, "projection_dim", json_integer(c->projection_dim));
  json_t *o = json_object();
  json_object_set_new(o, "architectures", json_pack("[s]", "ClapModel"));
  json_object_set_new(o, "model_type", json_string("clap"));
  json_object_set_new(o, "projection_dim", json_integer(c->projection_dim));
  json_object_set_new(o, "text_config", t);
  return dump(o);
}

/* ================================================================ random bundles */

RandomBundle random_bundle_tiny(const char *tokenizer) {
  RandomBundle b = {.sample_size = 16, .tokenizer = tokenizer, .seed = 1234};
  UNetConfig *u = &b.unet;
  *u = unet_config_musicldm();
  u->in_channels = u->out_channels = 4;
  u->levels = 2;
  u->block_out_channels[0] = 16, u->block_out_channels[1] = 32;
  u->attention[0] = false, u->attention[1] = true;
  u->layers_per_block = 1;
  u->norm_groups = 4;
  u->num_head_channels = 8;
  u->time_proj_dim = 16;
  u->time_embed_dim = 32;
  u->class_embed_in = 8;

  VaeConfig *v = &b.vae;
  *v = vae_config_musicldm();
  v->latent_channels = 4;
  v->n_blocks = 2;
  v->block_out_channels[0] = 8, v->block_out_channels[1] = 16;
  v->layers_per_block = 1;
  v->norm_num_groups = 4;
  v->scaling_factor = 0.8f;

  HifiganConfig *h = &b.vocoder;
  *h = hifigan_config_musicldm(); /* rates 5, 4, 2, 2, 2: hop 160 at 16 kHz */
  h->model_in_dim = 16;
  h->upsample_initial_channel = 32;
  const int kernels[] = {10, 8, 4, 4, 4};
  memcpy(h->upsample_kernel_sizes, kernels, sizeof kernels);
  h->n_kernels = 1;
  h->resblock_kernel_sizes[0] = 3;
  h->n_dilations[0] = 2;
  h->resblock_dilation_sizes[0][0] = 1, h->resblock_dilation_sizes[0][1] = 3;

  ClapTextConfig *t = &b.text;
  *t = clap_text_config_musicldm();
  t->vocab_size = 0; /* the tokenizer's */
  t->hidden_size = 16;
  t->num_hidden_layers = 1;
  t->num_attention_heads = 2;
  t->intermediate_size = 32;
  t->max_position_embeddings = 66;
  t->type_vocab_size = 1;
  t->projection_dim = 8;
  t->max_length = 64;
  return b;
}

RandomBundle random_bundle_full(const char *tokenizer) {
  RandomBundle b = {.sample_size = 256, .tokenizer = tokenizer, .seed = 1234};
  b.unet = unet_config_musicldm();
  b.vae = vae_config_musicldm();
  b.vocoder = hifigan_config_musicldm();
  b.text = clap_text_config_musicldm();
  return b;
}

/* The default initialisation leaves a deep stack of convolutions without norms, like the
 * vocoder, dominated by its biases (the output barely depends on the input). For a random
 * bundle whose audio follows its mel: biases 0 and weights ×√6 (He's U(±√6/√fan_in)). */
static void follow_the_input(Ctx *ctx, ParamSet *ps) {
  for (int i = 0; i < ps->n; i++) {
    Tensor *t = ps->p[i];
    size_t len = strlen(t->name);
    if (len >= 4 && !strcmp(t->name + len - 4, "bias")) {
      tensor_fill(ctx, t, 0.0f);
    } else if (t->ndim >= 2) {
      float *h = MALLOC_CHECK((size_t)t->numel * sizeof(float));
      tensor_to_host_f32(ctx, t, h);
      for (int64_t k = 0; k < t->numel; k++) h[k] *= 2.4494897f;
      tensor_from_host_f32(ctx, t, h);
      free(h);
    }
  }
}

/* Writes one component: its ParamSet (random already), component and config attributes. */
static int write_component(Ctx *ctx, const ParamSet *ps, const char *dir, const char *file, const char *component,
                           char *config, McmErr *err) {
  char path[4200];
  mcm_snprintf(path, sizeof path, "%s/%s", dir, file);
  TensorFile *tf = tf_create(path, err);
  int rc = tf ? 0 : -1;
  if (!rc) rc = tf_set_attr(tf, "mcm_format", "mcm-weights 1", err);
  if (!rc) rc = tf_set_attr(tf, "component", component, err);
  if (!rc) rc = tf_set_attr(tf, "source", "random weights (make_random_bundle)", err);
  if (!rc) rc = tf_set_attr(tf, "config", config, err);
  if (!rc) rc = params_save(ctx, ps, tf, "", DT_F32, err);
  if (!rc) rc = tf_commit(tf, err);
  else tf_abort(tf);
  free(config);
  ctx_step_reset(ctx);
  return rc;
}

static int copy_file(const char *from, const char *to, McmErr *err) {
  FILE *f = fopen(from, "rb");
  if (!f) return mcm_err(err, "%s: %s (hint: give the tokenizer directory that holds it)", from, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = MALLOC_CHECK(cap);
  for (size_t got; (got = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap) {
      buf = realloc(buf, cap *= 2);
      MCM_CHECK(buf, "copy_file: out of memory (%zu bytes)", cap);
    }
  }
  int bad = ferror(f);
  fclose(f);
  int rc = bad ? mcm_err(err, "%s: read error", from) : file_write_atomic(to, buf, n, err);
  free(buf);
  return rc;
}

static int make_dir(const char *path, McmErr *err) {
  if (mkdir(path, 0777) && errno != EEXIST) return mcm_err(err, "%s: cannot create the directory: %s", path, strerror(errno));
  struct stat st;
  if (stat(path, &st) || !S_ISDIR(st.st_mode)) return mcm_err(err, "%s: exists and is not a directory", path);
  return 0;
}

int random_bundle_write(const char *dir, const RandomBundle *b, McmErr *err) {
  char vocab[4200], merges[4200], path[4200];
  mcm_snprintf(vocab, sizeof vocab, "%s/vocab.json", b->tokenizer);
  mcm_snprintf(merges, sizeof merges, "%s/merges.txt", b->tokenizer);
  Tokenizer *tok = tokenizer_load(vocab, merges, err);
  if (!tok) return -1;
  ClapTextConfig tc = b->text;
  if (tc.vocab_size == 0) tc.vocab_size = tokenizer_vocab_size(tok);
  tokenizer_free(tok);
  McmErr why = {{0}};
  if (unet_config_check(&b->unet, &why) || vae_config_check(&b->vae, &why) ||
      hifigan_config_check(&b->vocoder, &why) || clap_text_config_check(&tc, &why))
    return mcm_err(err, "random bundle: %s", why.msg);
  if (b->unet.class_embed_in != tc.projection_dim || b->unet.in_channels != b->vae.latent_channels)
    return mcm_err(err, "random bundle: the UNet takes %d-d text embeddings and %d latent channels, the text encoder "
                   "gives %d and the VAE has %d", b->unet.class_embed_in, b->unet.in_channels, tc.projection_dim,
                   b->vae.latent_channels);
  if (make_dir(dir, err)) return -1;
  mcm_snprintf(path, sizeof path, "%s/tokenizer", dir);
  if (make_dir(path, err)) return -1;

  Ctx *ctx = ctx_create_cpu(b->seed);
  ctx_set_grad(ctx, false);
  int rc = 0;
  const int f = vae_downsample_factor(&b->vae);
  for (int k = 0; k < 2 && !rc; k++) { /* the teacher, then the student (seed + 1) */
    ParamSet ps;
    params_init(&ps, "");
    ctx->seed = b->seed + (uint64_t)k, ctx->rng_offset = 0;
    unet_init_random(ctx, unet_create(ctx, &b->unet, &ps));
    rc = write_component(ctx, &ps, dir, k ? BUNDLE_STUDENT : BUNDLE_UNET, "unet",
                         unet_config_json(&b->unet, b->sample_size), err);
    params_free(&ps);
  }
  if (!rc) {
    ParamSet ps;
    params_init(&ps, "");
    vae_init_random(ctx, vae_create(ctx, &b->vae, &ps));
    rc = write_component(ctx, &ps, dir, BUNDLE_VAE, "vae", vae_config_json(&b->vae, b->sample_size * f), err);
    params_free(&ps);
  }
  if (!rc) {
    ParamSet ps;
    params_init(&ps, "");
    hifigan_init_random(ctx, hifigan_create(ctx, &b->vocoder, &ps));
    follow_the_input(ctx, &ps);
    rc = write_component(ctx, &ps, dir, BUNDLE_VOCODER, "vocoder", hifigan_config_json(&b->vocoder), err);
    params_free(&ps);
  }
  if (!rc) {
    ParamSet ps;
    params_init(&ps, "");
    clap_text_init_random(ctx, clap_text_create(ctx, &tc, &ps));
    rc = write_component(ctx, &ps, dir, BUNDLE_TEXT_ENCODER, "text_encoder", clap_text_config_json(&tc), err);
    params_free(&ps);
  }
  ctx_destroy(ctx);
  if (!rc) {
    mcm_snprintf(path, sizeof path, "%s/%s", dir, BUNDLE_VOCAB);
    rc = copy_file(vocab, path, err);
  }
  if (!rc) {
    mcm_snprintf(path, sizeof path, "%s/%s", dir, BUNDLE_MERGES);
    rc = copy_file(merges, path, err);
  }
  return rc;
}
