/* run_component: one network's forward pass on inputs from an HDF5 file, outputs to an HDF5
 * file. For parity checks against PyTorch (tools/check_fidelity_full.py) and for researchers
 * who want one component without the sampler.
 *
 * The network's configuration comes from the weights file's `config` attribute (the
 * diffusers / transformers config.json the converters store) with --config-from-weights, or
 * is the released MusicLDM one (unet_config_musicldm() & co.) without it; either way the
 * model's *_load compares it with the file and checks every tensor's shape. The config.json
 * readers are models/weights.h's *_config_from_weights (and, for AudioMAE, the one below).
 *
 * Tensor names (inputs fp32, or any type HDF5 converts; outputs fp32):
 *   unet        x (B, C, H, W), t (B), class_emb (B, D)           -> out (B, C, H, W)
 *   vae-encode  mel (B, 1, H, W)                                  -> mean, logvar (B, L, H/f, W/f)
 *   vae-decode  z (B, L, h, w), unscaled (latents / scaling_factor) -> out (B, 1, f·h, f·w)
 *   vocoder     mel (B, T, M)                                     -> out (B, samples)
 *   clap-text   ids (B, T) token ids (int or float), mask (B, T) optional, right padding
 *                                                                 -> out (B, P), L2-normalised
 *   audiomae    fbank (B, 1, T, F); taps from --taps or the input's `taps` attribute
 *               ("-1,0,2" or "[-1, 0, 2]")                        -> tap_m1 / tap_<i> (B, C, N), cls (B, C)
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cli.h"
#include "core/tensorfile.h"
#include "kernels/tape.h"
#include "models/audiomae.h"
#include "models/clap_text.h"
#include "models/hifigan.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/weights.h"

typedef enum RcComponent { RC_UNET, RC_VAE_ENCODE, RC_VAE_DECODE, RC_VOCODER, RC_CLAP_TEXT, RC_AUDIOMAE } RcComponent;
#define RC_COMPONENTS "unet|vae-encode|vae-decode|vocoder|clap-text|audiomae"
static const char *const RC_NAMES[] = {"unet", "vae-encode", "vae-decode", "vocoder", "clap-text", "audiomae"};

#define RC_MAX_TAPS 64

typedef struct RcOptions {
  RcComponent component;
  const char *weights, *in, *out;
  const char *device;        /* cpu (default), cuda, cuda:N, auto */
  bool config_from_weights;  /* else the released MusicLDM / ViT-B configuration */
  int unet_head_channels;    /* > 0: heads = channels / this, whatever the config says */
  const char *taps;          /* audiomae: NULL = the input file's taps attribute */
} RcOptions;

static const char RC_USAGE[] =
    "usage: run_component --component " RC_COMPONENTS " --weights FILE --in INPUT.h5 --out OUTPUT.h5\n"
    "                     [--config-from-weights] [--device cpu|cuda|cuda:N|auto]\n"
    "                     [--unet-head-channels N] [--taps LIST]\n"
    "\n"
    "Runs one network's forward pass (fp32, no gradients) on named tensors from INPUT.h5 and\n"
    "writes its outputs to OUTPUT.h5 (atomically).\n"
    "\n"
    "  --component           unet: x (B,C,H,W), t (B), class_emb (B,D) -> out\n"
    "                        vae-encode: mel (B,1,H,W) -> mean, logvar\n"
    "                        vae-decode: z (B,L,h,w), unscaled -> out (B,1,H,W)\n"
    "                        vocoder: mel (B,T,M) -> out (B,samples)\n"
    "                        clap-text: ids (B,T), mask (B,T) optional -> out (B,P)\n"
    "                        audiomae: fbank (B,1,T,F) -> tap_m1 / tap_<i> (B,C,N), cls (B,C)\n"
    "  --weights FILE        converted weights (tools/convert_*.py)\n"
    "  --config-from-weights build the network from the file's config attribute (else the\n"
    "                        released MusicLDM configuration, the UNet with the original's\n"
    "                        32-channel heads, or AudioMAE ViT-B)\n"
    "  --device D            cpu (default), cuda, cuda:N or auto\n"
    "  --unet-head-channels N  heads = channels / N at every level (the original MusicLDM: 32),\n"
    "                        instead of the head counts the config states\n"
    "  --taps LIST           audiomae: blocks to read out, e.g. -1,0,5 (default: the input's\n"
    "                        taps attribute, else none: cls only)\n"
    "\n"
    "example:\n"
    "  build/cpu/tools/run_component --component unet --weights checkpoints/musicldm/unet.h5 \\\n"
    "      --config-from-weights --in unet_in.h5 --out unet_out.h5\n";

/* ================================================================ AudioMAE's config.json reader
 * (the MusicLDM components' readers are models/weights.h's *_config_from_weights) */

/* A config.json being read: the first problem stops it. */
typedef struct Json {
  const char *path;
  McmErr *err;
  int rc;
} Json;

/* The value of key in obj, or NULL when absent or null. */
static json_t *jget(json_t *obj, const char *key) {
  json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
  return json_is_null(v) ? NULL : v;
}

static void jint(Json *j, json_t *obj, const char *key, int *out) {
  json_t *v = jget(obj, key);
  if (j->rc || !v) return;
  if (!json_is_integer(v) && !(json_is_real(v) && json_real_value(v) == (double)(int)json_real_value(v)))
    j->rc = mcm_err(j->err, "%s: config: %s is not an integer", j->path, key);
  else
    *out = (int)json_number_value(v);
}

static void jfloat(Json *j, json_t *obj, const char *key, float *out) {
  json_t *v = jget(obj, key);
  if (j->rc || !v) return;
  if (!json_is_number(v)) j->rc = mcm_err(j->err, "%s: config: %s is not a number", j->path, key);
  else *out = (float)json_number_value(v);
}

/* An integer list (or, with scalar_ok, one integer for every entry of an *n-long list). */
static void jints(Json *j, json_t *obj, const char *key, int *out, int max, int *n, bool scalar_ok) {
  json_t *v = jget(obj, key);
  if (j->rc || !v) return;
  if (scalar_ok && json_is_integer(v)) {
    for (int i = 0; i < *n; i++) out[i] = (int)json_integer_value(v);
    return;
  }
  if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > (size_t)max) {
    j->rc = mcm_err(j->err, "%s: config: %s is not a list of 1..%d integers", j->path, key, max);
    return;
  }
  for (size_t i = 0; i < json_array_size(v); i++) {
    json_t *e = json_array_get(v, i);
    if (!json_is_integer(e)) {
      j->rc = mcm_err(j->err, "%s: config: %s[%zu] is not an integer", j->path, key, i);
      return;
    }
    out[i] = (int)json_integer_value(e);
  }
  *n = (int)json_array_size(v);
}

/* AudioMAE's MaskedAutoencoderViT sizes as tools/convert_audiomae.py writes them (defaults: ViT-B). */
static void audiomae_from_json(Json *j, json_t *root, AudioMAEConfig *c) {
  *c = audiomae_config_vit_b();
  json_t *img = jget(root, "img_size");
  if (img) {
    int tf[2] = {0, 0}, n = 2;
    jints(j, root, "img_size", tf, 2, &n, true);
    if (!j->rc && n != 2) j->rc = mcm_err(j->err, "%s: config: img_size is not [T, F]", j->path);
    c->img_t = tf[0], c->img_f = tf[1];
  }
  jint(j, root, "patch_size", &c->patch);
  jint(j, root, "in_chans", &c->in_chans);
  jint(j, root, "embed_dim", &c->embed_dim);
  jint(j, root, "depth", &c->depth);
  jint(j, root, "num_heads", &c->num_heads);
  jfloat(j, root, "mlp_ratio", &c->mlp_ratio);
  jfloat(j, root, "norm_eps", &c->norm_eps);
}

/* ================================================================ inputs and outputs */

/* A tensor of the input file as a persistent fp32 tensor on ctx's device; its rank must be
 * ndim. `need` names every input of the component for the error line. */
static Tensor *read_input(Ctx *ctx, TensorFile *tf, const char *name, int ndim, const char *need, McmErr *err) {
  if (!tf_has(tf, name)) {
    mcm_err(err, "%s: no tensor '%s' (this component reads %s)", tf_path(tf), name, need);
    return NULL;
  }
  int nd;
  int64_t shape[MCM_MAX_DIMS];
  DType stored;
  if (tf_info(tf, name, &nd, shape, &stored, err)) return NULL;
  if (nd != ndim) {
    mcm_err(err, "%s: '%s' has %d dimensions, expected %d (this component reads %s)", tf_path(tf), name, nd, ndim,
            need);
    return NULL;
  }
  int64_t n = 1;
  for (int i = 0; i < nd; i++) n *= shape[i];
  if (n == 0) {
    mcm_err(err, "%s: '%s' is empty", tf_path(tf), name);
    return NULL;
  }
  float *host = MALLOC_CHECK((size_t)n * sizeof(float));
  Tensor *t = NULL;
  if (tf_read(tf, name, nd, shape, host, err) == 0) {
    t = tensor_new_persistent(ctx, DT_F32, nd, shape);
    tensor_from_host_f32(ctx, t, host);
  }
  free(host);
  return t;
}

static int check_dim(const char *path, const char *name, const Tensor *t, int dim, int64_t want, const char *what,
                     McmErr *err) {
  if (t->shape[dim] == want) return 0;
  return mcm_err(err, "%s: '%s' is %s, dimension %d must be %lld (%s)", path, name, TENSOR_SHAPE_STR(t), dim,
                 (long long)want, what);
}

/* "-1,0,2", "[-1, 0, 2]" or "" -> taps. */
static int parse_taps(const char *s, int *taps, int *n, McmErr *err) {
  *n = 0;
  const char *p = s;
  while (*p) {
    while (*p == ' ' || *p == ',' || *p == '[' || *p == ']') p++;
    if (!*p) break;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < -1 || v > 100000) return mcm_err(err, "taps '%s': expected integers >= -1, e.g. -1,0,5", s);
    if (*n == RC_MAX_TAPS) return mcm_err(err, "taps '%s': more than %d taps", s, RC_MAX_TAPS);
    taps[(*n)++] = (int)v;
    p = end;
  }
  return 0;
}

/* One run: the network's parameter list and the outputs, written at the end. */
typedef struct RcOutputs {
  ParamSet ps;                           /* the network's parameters (root "", frozen) */
  char names[RC_MAX_TAPS + 2][16];
  Tensor *tensors[RC_MAX_TAPS + 2];
  int n;
} RcOutputs;

static void add_output(RcOutputs *o, const char *name, Tensor *t) {
  mcm_snprintf(o->names[o->n], sizeof o->names[o->n], "%s", name);
  o->tensors[o->n++] = t;
}

/* The ParamSet a component creates its network in. */
static ParamSet *frozen_params(RcOutputs *o) {
  params_init(&o->ps, "");
  o->ps.trainable = false;
  return &o->ps;
}

static int write_outputs(Ctx *ctx, const RcOptions *opt, const RcOutputs *o, McmErr *err) {
  TensorFile *tf = tf_create(opt->out, err);
  if (!tf) return -1;
  int rc = tf_set_attr(tf, "component", RC_NAMES[opt->component], err);
  if (!rc) rc = tf_set_attr(tf, "weights", opt->weights, err);
  if (!rc) rc = tf_set_attr(tf, "device", ctx->device_name, err);
  for (int i = 0; i < o->n && !rc; i++) {
    const Tensor *t = o->tensors[i];
    float *host = MALLOC_CHECK((size_t)t->numel * sizeof(float));
    tensor_to_host_f32(ctx, t, host);
    rc = tf_write(tf, o->names[i], DT_F32, t->ndim, t->shape, host, err);
    free(host);
  }
  if (rc) {
    tf_abort(tf);
    return -1;
  }
  return tf_commit(tf, err);
}

/* ================================================================ components */

/* The configuration: the file's config.json (config_from_weights) or the released one. */
static int weights_config(const RcOptions *o, json_t **root, McmErr *err) {
  *root = NULL;
  if (!o->config_from_weights) return 0;
  TensorFile *tf = tf_open(o->weights, err);
  if (!tf) return -1;
  char *text = NULL;
  int rc = 0;
  if (!tf_has_attr(tf, "config"))
    rc = mcm_err(err, "%s: has no config attribute to build the network from (hint: drop --config-from-weights to use "
                      "the released configuration)", o->weights);
  else if (tf_get_attr(tf, "config", &text, err))
    rc = -1;
  tf_close(tf);
  if (rc) return rc;
  json_error_t je;
  *root = json_loads(text, 0, &je);
  free(text);
  if (!*root || !json_is_object(*root)) {
    json_decref(*root);
    *root = NULL;
    return mcm_err(err, "%s: the config attribute is not a JSON object (line %d: %s)", o->weights, je.line, je.text);
  }
  return 0;
}

static int run_unet(Ctx *ctx, const RcOptions *o, json_t *root, TensorFile *in, RcOutputs *out, McmErr *err) {
  UNetConfig c = unet_config_musicldm();
  if (root && unet_config_from_weights(o->weights, &c, NULL, err)) return -1;
  if (o->unet_head_channels > 0) c.num_head_channels = o->unet_head_channels;
  if (unet_config_check(&c, err)) return -1;
  ParamSet *ps = frozen_params(out);
  Unet *net = unet_create(ctx, &c, ps);
  int rc = unet_load(ctx, net, o->weights, err);
  const char *need = "x (B, C, H, W), t (B), class_emb (B, D)";
  Tensor *x = rc ? NULL : read_input(ctx, in, "x", 4, need, err);                /* (B, C, H, W) */
  Tensor *t = x ? read_input(ctx, in, "t", 1, need, err) : NULL;                 /* (B) */
  Tensor *cls = t ? read_input(ctx, in, "class_emb", 2, need, err) : NULL;       /* (B, D) */
  if (!cls) return -1;
  const char *p = tf_path(in);
  int f = 1 << (c.levels - 1);
  if (check_dim(p, "x", x, 1, c.in_channels, "the UNet's in_channels", err) ||
      check_dim(p, "t", t, 0, x->shape[0], "the batch of x", err) ||
      check_dim(p, "class_emb", cls, 0, x->shape[0], "the batch of x", err) ||
      check_dim(p, "class_emb", cls, 1, c.class_embed_in, "the class embedding width", err))
    return -1;
  if (x->shape[2] % f || x->shape[3] % f)
    return mcm_err(err, "%s: x is %lld x %lld; both must be multiples of %d for a %d-level UNet", p,
                   (long long)x->shape[2], (long long)x->shape[3], f, c.levels);
  add_output(out, "out", unet_forward(ctx, net, x, t, cls));  /* (B, C, H, W) */
  return 0;
}

static int run_vae(Ctx *ctx, const RcOptions *o, json_t *root, TensorFile *in, RcOutputs *out, McmErr *err) {
  VaeConfig c = vae_config_musicldm();
  if (root && vae_config_from_weights(o->weights, &c, err)) return -1;
  ParamSet *ps = frozen_params(out);
  Vae *vae = vae_create(ctx, &c, ps);
  int rc = vae_load(ctx, vae, o->weights, err);
  if (rc) return -1;
  const int f = vae_downsample_factor(&c);
  const char *p = tf_path(in);
  if (o->component == RC_VAE_ENCODE) {
    Tensor *mel = read_input(ctx, in, "mel", 4, "mel (B, 1, H, W)", err);  /* (B, 1, H, W) */
    if (!mel || check_dim(p, "mel", mel, 1, c.in_channels, "the VAE's in_channels", err)) return -1;
    if (mel->shape[2] % f || mel->shape[3] % f)
      return mcm_err(err, "%s: mel is %lld x %lld; both must be multiples of %d", p, (long long)mel->shape[2],
                     (long long)mel->shape[3], f);
    VaeMoments m = vae_encode(ctx, vae, mel);  /* (B, L, H/f, W/f) each */
    add_output(out, "mean", m.mean);
    add_output(out, "logvar", m.logvar);
  } else {
    Tensor *z = read_input(ctx, in, "z", 4, "z (B, L, h, w), unscaled", err);  /* (B, L, h, w) */
    if (!z || check_dim(p, "z", z, 1, c.latent_channels, "the VAE's latent_channels", err)) return -1;
    add_output(out, "out", vae_decode(ctx, vae, z));  /* (B, 1, f·h, f·w) */
  }
  return 0;
}

static int run_vocoder(Ctx *ctx, const RcOptions *o, json_t *root, TensorFile *in, RcOutputs *out, McmErr *err) {
  HifiganConfig c = hifigan_config_musicldm();
  if (root && hifigan_config_from_weights(o->weights, &c, err)) return -1;
  ParamSet *ps = frozen_params(out);
  Hifigan *m = hifigan_create(ctx, &c, ps);
  int rc = hifigan_load(ctx, m, o->weights, err);
  if (rc) return -1;
  Tensor *mel = read_input(ctx, in, "mel", 3, "mel (B, T, M)", err);  /* (B, T, M) */
  if (!mel || check_dim(tf_path(in), "mel", mel, 2, c.model_in_dim, "the vocoder's mel bins", err)) return -1;
  add_output(out, "out", hifigan_forward(ctx, m, mel));  /* (B, samples) */
  return 0;
}

/* The integer dataset `name` of the HDF5 file at path, read as int32 (TensorFile reads
 * floating-point tensors only). -1 with err when it is not an integer dataset of that shape. */
static int read_int_dataset(const char *path, const char *name, int64_t n, int32_t *out, McmErr *err) {
  h5_quiet();
  hid_t fapl = h5_file_access();
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  if (f < 0) return mcm_err(err, "%s: cannot open it again to read '%s'", path, name);
  int rc = 0;
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) {
    rc = mcm_err(err, "%s: cannot open dataset '%s'", path, name);
  } else {
    hid_t sp = H5Dget_space(d);
    hssize_t count = H5Sget_simple_extent_npoints(sp);
    if (count != n)
      rc = mcm_err(err, "%s: '%s' has %lld values, expected %lld", path, name, (long long)count, (long long)n);
    else if (H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
      rc = mcm_err(err, "%s: reading '%s' as int32 failed", path, name);
    H5Sclose(sp);
    H5Dclose(d);
  }
  H5Fclose(f);
  return rc;
}

/* ids (B, T): an integer dataset, or floats holding integers -> an int32 tensor on ctx's
 * device, after checking each is a token id of the model. */
static Tensor *read_ids(Ctx *ctx, TensorFile *tf, const char *need, int vocab, int max_tokens, McmErr *err) {
  const char *path = tf_path(tf);
  if (!tf_has(tf, "ids")) {
    mcm_err(err, "%s: no tensor 'ids' (this component reads %s)", path, need);
    return NULL;
  }
  hid_t fapl = h5_file_access();
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  hid_t d = f < 0 ? -1 : H5Dopen2(f, "ids", H5P_DEFAULT);
  hid_t type = d < 0 ? -1 : H5Dget_type(d);
  hid_t space = d < 0 ? -1 : H5Dget_space(d);
  bool is_int = type >= 0 && H5Tget_class(type) == H5T_INTEGER;
  int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
  hsize_t dims[MCM_MAX_DIMS] = {0};
  if (nd == 2) H5Sget_simple_extent_dims(space, dims, NULL);
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  if (d >= 0) H5Dclose(d);
  if (f >= 0) H5Fclose(f);
  if (nd != 2 || dims[0] == 0 || dims[1] == 0) {
    mcm_err(err, "%s: 'ids' must be a non-empty (B, T) array of token ids", path);
    return NULL;
  }
  const int64_t shape[2] = {(int64_t)dims[0], (int64_t)dims[1]}, n = shape[0] * shape[1];
  if (shape[1] > max_tokens) {
    mcm_err(err, "%s: ids has %lld tokens, the model's positions allow %d", path, (long long)shape[1], max_tokens);
    return NULL;
  }
  int32_t *ids = MALLOC_CHECK((size_t)n * sizeof(int32_t));
  float *v = MALLOC_CHECK((size_t)n * sizeof(float));
  int rc = 0;
  if (is_int) {
    rc = read_int_dataset(path, "ids", n, ids, err);
    for (int64_t i = 0; i < n; i++) v[i] = (float)ids[i];
  } else {
    rc = tf_read(tf, "ids", 2, shape, v, err);
  }
  for (int64_t i = 0; i < n && !rc; i++) {
    if (!(v[i] >= 0 && v[i] < (float)vocab && v[i] == (float)(int32_t)v[i]))
      rc = mcm_err(err, "%s: ids[%lld] = %g is not a token id of this model (0..%d)", path, (long long)i, v[i],
                   vocab - 1);
    else
      ids[i] = (int32_t)v[i];
  }
  Tensor *t = NULL;
  if (!rc) {
    t = tensor_new_persistent(ctx, DT_I32, 2, shape);
    tensor_from_host_i32(ctx, t, ids);
  }
  free(v);
  free(ids);
  return t;
}

/* Each mask row must be 1 on a non-empty prefix and 0 after it (right padding). */
static int check_mask(Ctx *ctx, const Tensor *mask, const char *path, McmErr *err) {
  int64_t B = mask->shape[0], T = mask->shape[1];
  float *m = MALLOC_CHECK((size_t)mask->numel * sizeof(float));
  tensor_to_host_f32(ctx, mask, m);
  int rc = 0;
  for (int64_t b = 0; b < B && !rc; b++) {
    bool ended = false;
    for (int64_t i = 0; i < T && !rc; i++) {
      float x = m[b * T + i];
      if ((x != 0.0f && x != 1.0f) || (x == 1.0f && ended) || (i == 0 && x == 0.0f))
        rc = mcm_err(err, "%s: mask row %lld is not 1 on a non-empty prefix and 0 after it (right padding only)", path,
                     (long long)b);
      ended |= x == 0.0f;
    }
  }
  free(m);
  return rc;
}

static int run_clap(Ctx *ctx, const RcOptions *o, json_t *root, TensorFile *in, RcOutputs *out, McmErr *err) {
  ClapTextConfig c = clap_text_config_musicldm();
  if (root && clap_text_config_from_weights(o->weights, &c, err)) return -1;
  ParamSet *ps = frozen_params(out);
  ClapText *m = clap_text_create(ctx, &c, ps);
  int rc = clap_text_load(ctx, m, o->weights, err);
  if (rc) return -1;
  const char *p = tf_path(in), *need = "ids (B, T), mask (B, T) optional";
  int most = c.max_position_embeddings - c.pad_token_id - 1;
  Tensor *ids = read_ids(ctx, in, need, c.vocab_size, most, err);  /* (B, T) int32 */
  if (!ids) return -1;
  Tensor *mask;                                                   /* (B, T) */
  if (tf_has(in, "mask")) {
    mask = read_input(ctx, in, "mask", 2, need, err);
    if (!mask || check_dim(p, "mask", mask, 0, ids->shape[0], "the batch of ids", err) ||
        check_dim(p, "mask", mask, 1, ids->shape[1], "the length of ids", err) || check_mask(ctx, mask, p, err))
      return -1;
  } else {
    mask = tensor_new_persistent(ctx, DT_F32, 2, ids->shape);
    tensor_fill(ctx, mask, 1.0f);
  }
  add_output(out, "out", clap_text_forward(ctx, m, ids, mask));  /* (B, P) */
  return 0;
}

static int run_audiomae(Ctx *ctx, const RcOptions *o, json_t *root, TensorFile *in, RcOutputs *out, McmErr *err) {
  AudioMAEConfig c = audiomae_config_vit_b();
  Json j = {o->weights, err, 0};
  if (root) audiomae_from_json(&j, root, &c);
  if (j.rc || audiomae_config_check(&c, err)) return -1;
  int taps[RC_MAX_TAPS], n_taps = 0;
  char *attr = NULL;
  if (o->taps) {
    if (parse_taps(o->taps, taps, &n_taps, err)) return -1;
  } else if (tf_has_attr(in, "taps")) {
    if (tf_get_attr(in, "taps", &attr, err)) return -1;
    int rc = parse_taps(attr, taps, &n_taps, err);
    free(attr);
    if (rc) return -1;
  }
  if (audiomae_check_taps(&c, taps, n_taps, err)) return -1;
  ParamSet *ps = frozen_params(out);
  AudioMAE *m = audiomae_create(ctx, &c, ps);
  int rc = audiomae_load(ctx, m, o->weights, err);
  if (rc) return -1;
  const char *p = tf_path(in);
  Tensor *fbank = read_input(ctx, in, "fbank", 4, "fbank (B, 1, T, F)", err);  /* (B, 1, T, F) */
  if (!fbank || check_dim(p, "fbank", fbank, 1, c.in_chans, "in_chans", err) ||
      check_dim(p, "fbank", fbank, 2, c.img_t, "the frames AudioMAE was built for", err) ||
      check_dim(p, "fbank", fbank, 3, c.img_f, "the mel bins AudioMAE was built for", err))
    return -1;
  Tensor *tap_out[RC_MAX_TAPS], *cls = NULL;
  audiomae_forward(ctx, m, fbank, taps, n_taps, tap_out, &cls);  /* (B, C, N) each, (B, C) */
  for (int i = 0; i < n_taps; i++) {
    bool dup = false;
    for (int k = 0; k < i; k++) dup |= taps[k] == taps[i];
    char name[16];
    mcm_snprintf(name, sizeof name, taps[i] < 0 ? "tap_m1" : "tap_%d", taps[i]);
    if (!dup) add_output(out, name, tap_out[i]);
  }
  add_output(out, "cls", cls);
  return 0;
}

/* ================================================================ driver */

/* 0: options ready; 1: --help printed; -1: a bad argument (err). */
static int rc_parse(int argc, char **argv, RcOptions *o, McmErr *err) {
  *o = (RcOptions){.component = (RcComponent)-1, .device = "cpu"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    long long n;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(RC_USAGE, stdout);
      return 1;
    } else if (!strcmp(a, "--config-from-weights")) {
      o->config_from_weights = true;
    } else if (!strcmp(a, "--component")) {
      if (cli_value(argc, argv, &i, &v, err) || cli_choice(a, v, RC_COMPONENTS, err)) return -1;
      for (int k = 0; k < (int)(sizeof RC_NAMES / sizeof *RC_NAMES); k++)
        if (!strcmp(v, RC_NAMES[k])) o->component = (RcComponent)k;
    } else if (!strcmp(a, "--weights") || !strcmp(a, "--in") || !strcmp(a, "--out") || !strcmp(a, "--device") ||
               !strcmp(a, "--taps")) {
      if (cli_value(argc, argv, &i, &v, err)) return -1;
      const char **dst = a[2] == 'w' ? &o->weights : a[2] == 'i' ? &o->in : a[2] == 'o' ? &o->out
                         : a[2] == 'd' ? &o->device : &o->taps;
      *dst = v;
    } else if (!strcmp(a, "--unet-head-channels")) {
      if (cli_value(argc, argv, &i, &v, err) || cli_int(a, v, 1, 1 << 16, &n, err)) return -1;
      o->unet_head_channels = (int)n;
    } else {
      return mcm_err(err, "unknown argument '%s' (see run_component --help)", a);
    }
  }
  if ((int)o->component < 0) return mcm_err(err, "--component is required (" RC_COMPONENTS ")");
  if (!o->weights || !o->in || !o->out) return mcm_err(err, "--weights, --in and --out are required (see --help)");
  if (o->taps && o->component != RC_AUDIOMAE) return mcm_err(err, "--taps is for --component audiomae");
  if (o->unet_head_channels && o->component != RC_UNET)
    return mcm_err(err, "--unet-head-channels is for --component unet");
  if (!strcmp(o->in, o->out)) return mcm_err(err, "--out must not be the input file (%s)", o->in);
  return 0;
}

/* Builds the component, runs it on the input file and writes the outputs. */
static int rc_run(const RcOptions *o, McmErr *err) {
  DeviceSpec spec;
  if (device_spec_parse(o->device, &spec, err)) return -1;
  TensorFile *in = tf_open(o->in, err);
  if (!in) return -1;
  json_t *root = NULL;
  if (weights_config(o, &root, err)) {
    tf_close(in);
    return -1;
  }
  Ctx *ctx = ctx_create(&spec, 0, err);
  int rc = ctx ? 0 : -1;
  if (!rc && spec.kind == DEV_CUDA && !spec.is_auto && ctx->dev != DEV_CUDA)
    rc = mcm_err(err, "--device %s: no usable GPU in this build or machine (use --device cpu)", o->device);
  RcOutputs *outs = MALLOC_CHECK(sizeof *outs);
  memset(outs, 0, sizeof *outs);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (!rc) {
    ctx_set_grad(ctx, false);
    switch (o->component) {
      case RC_UNET: rc = run_unet(ctx, o, root, in, outs, err); break;
      case RC_VAE_ENCODE:
      case RC_VAE_DECODE: rc = run_vae(ctx, o, root, in, outs, err); break;
      case RC_VOCODER: rc = run_vocoder(ctx, o, root, in, outs, err); break;
      case RC_CLAP_TEXT: rc = run_clap(ctx, o, root, in, outs, err); break;
      case RC_AUDIOMAE: rc = run_audiomae(ctx, o, root, in, outs, err); break;
    }
  }
  if (rc && !o->config_from_weights && strstr(err->msg, "config") && !strstr(err->msg, "hint")) {
    size_t len = strlen(err->msg);
    snprintf(err->msg + len, sizeof err->msg - len, " (hint: --config-from-weights builds the network from the file's "
                                                    "config)");
  }
  if (!rc) {
    ctx_sync(ctx);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    rc = write_outputs(ctx, o, outs, err);
  }
  if (!rc) {
    printf("run_component: %s on %s (%s config) in %.3f s:", RC_NAMES[o->component], ctx->device_name,
           o->config_from_weights ? "the weights'" : "the released", (double)(t1.tv_sec - t0.tv_sec) +
           1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    for (int i = 0; i < outs->n; i++) printf(" %s %s", outs->names[i], TENSOR_SHAPE_STR(outs->tensors[i]));
    printf(" -> %s\n", o->out);
  }
  params_free(&outs->ps);
  free(outs);
  json_decref(root);
  tf_close(in);
  if (ctx) ctx_destroy(ctx);
  return rc;
}

#ifndef RUN_COMPONENT_NO_MAIN
int main(int argc, char **argv) {
  RcOptions o;
  McmErr err = {{0}};
  int rc = rc_parse(argc, argv, &o, &err);
  if (rc == 1) return 0;
  if (rc == 0) rc = rc_run(&o, &err);
  if (rc) {
    fprintf(stderr, "run_component: %s\n", err.msg);
    return 1;
  }
  return 0;
}
#endif
