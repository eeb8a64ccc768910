/* AudioMAE encoder (see audiomae.h): configuration, parameters, loading, and the forward pass
 * as tap readouts for the discriminator heads.
 * Sizes: B batch, C embed_dim, N patch tokens, T = 1 + N tokens with cls, H mlp hidden,
 * NH heads, D = C / NH head dim. */
#include "audiomae.h"

#include <jansson.h>
#include <math.h>

#include "models/weights.h"

AudioMAEConfig audiomae_config_vit_b(void) {
  return (AudioMAEConfig){.img_t = 1024, .img_f = 128, .in_chans = 1, .patch = 16, .embed_dim = 768, .depth = 12,
                          .num_heads = 12, .mlp_ratio = 4.0f, .norm_eps = 1e-6f};
}

/* H = int(C · mlp_ratio), as timm's Block computes it. */
static int mlp_hidden(const AudioMAEConfig *c) { return (int)((double)c->embed_dim * c->mlp_ratio); }

int audiomae_config_check(const AudioMAEConfig *c, McmErr *err) {
  if (c->img_t < 1 || c->img_f < 1 || c->in_chans < 1 || c->patch < 1)
    return mcm_err(err, "audiomae config: img %d x %d, in_chans %d, patch %d: each must be >= 1", c->img_t, c->img_f,
                   c->in_chans, c->patch);
  if (c->img_t % c->patch || c->img_f % c->patch)
    return mcm_err(err, "audiomae config: img %d x %d is not a whole number of %d x %d patches", c->img_t, c->img_f,
                   c->patch, c->patch);
  if (c->depth < 1 || c->num_heads < 1 || c->embed_dim < 1)
    return mcm_err(err, "audiomae config: embed_dim %d, depth %d, num_heads %d: each must be >= 1", c->embed_dim,
                   c->depth, c->num_heads);
  if (c->embed_dim % c->num_heads)
    return mcm_err(err, "audiomae config: embed_dim %d is not divisible by num_heads %d", c->embed_dim, c->num_heads);
  if (c->embed_dim % 4)
    return mcm_err(err, "audiomae config: embed_dim %d must be a multiple of 4 (2-D sin-cos positions)", c->embed_dim);
  if (!(c->mlp_ratio > 0.0f) || mlp_hidden(c) < 1)
    return mcm_err(err, "audiomae config: mlp_ratio %g gives no hidden units", (double)c->mlp_ratio);
  if (!(c->norm_eps > 0.0f)) return mcm_err(err, "audiomae config: norm_eps %g must be > 0", (double)c->norm_eps);
  return 0;
}

int audiomae_check_taps(const AudioMAEConfig *cfg, const int *taps, int n_taps, McmErr *err) {
  if (n_taps < 0 || (n_taps > 0 && !taps)) return mcm_err(err, "audiomae: %d taps given without a list", n_taps);
  for (int j = 0; j < n_taps; j++)
    if (taps[j] < -1 || taps[j] >= cfg->depth)
      return mcm_err(err, "audiomae: tap %d is out of range (-1 = after the patch embedding, 0..%d = after that block)",
                     taps[j], cfg->depth - 1);
  return 0;
}

/* ------------------------------------------------------------------ parameters */

AudioMAE *audiomae_create(Ctx *ctx, const AudioMAEConfig *cfg, ParamSet *ps) {
  McmErr err;
  MCM_CHECK(audiomae_config_check(cfg, &err) == 0, "%s", err.msg);
  AudioMAE *m = ctx_alloc_persistent_host(ctx, sizeof *m);
  m->cfg = *cfg;
  m->ps = ps;
  m->first_param = ps->n;
  m->grid_t = cfg->img_t / cfg->patch;
  m->grid_f = cfg->img_f / cfg->patch;
  m->n_tokens = m->grid_t * m->grid_f;
  m->hidden = mlp_hidden(cfg);
  const int64_t C = cfg->embed_dim, H = m->hidden, p = cfg->patch, N = m->n_tokens;

  m->patch_w = params_new(ctx, ps, "patch_embed.proj.weight", SHAPE(C, cfg->in_chans, p, p));
  m->patch_b = params_new(ctx, ps, "patch_embed.proj.bias", SHAPE(C));
  m->cls_token = params_new(ctx, ps, "cls_token", SHAPE(1, 1, C));
  bool trainable = ps->trainable;
  ps->trainable = false; /* AudioMAE: pos_trainable=False, a fixed table */
  m->pos_embed = params_new(ctx, ps, "pos_embed", SHAPE(1, 1 + N, C));
  ps->trainable = trainable;

  m->blocks = ctx_alloc_persistent_host(ctx, (size_t)cfg->depth * sizeof *m->blocks);
  for (int i = 0; i < cfg->depth; i++) {
    AudioMAEBlock *b = &m->blocks[i];
    params_push(ps, "blocks.%d", i);
    b->norm1_w = params_new(ctx, ps, "norm1.weight", SHAPE(C));
    b->norm1_b = params_new(ctx, ps, "norm1.bias", SHAPE(C));
    b->qkv_w = params_new(ctx, ps, "attn.qkv.weight", SHAPE(3 * C, C));
    b->qkv_b = params_new(ctx, ps, "attn.qkv.bias", SHAPE(3 * C));
    b->proj_w = params_new(ctx, ps, "attn.proj.weight", SHAPE(C, C));
    b->proj_b = params_new(ctx, ps, "attn.proj.bias", SHAPE(C));
    b->norm2_w = params_new(ctx, ps, "norm2.weight", SHAPE(C));
    b->norm2_b = params_new(ctx, ps, "norm2.bias", SHAPE(C));
    b->fc1_w = params_new(ctx, ps, "mlp.fc1.weight", SHAPE(H, C));
    b->fc1_b = params_new(ctx, ps, "mlp.fc1.bias", SHAPE(H));
    b->fc2_w = params_new(ctx, ps, "mlp.fc2.weight", SHAPE(C, H));
    b->fc2_b = params_new(ctx, ps, "mlp.fc2.bias", SHAPE(C));
    params_pop(ps);
  }
  m->norm_w = params_new(ctx, ps, "norm.weight", SHAPE(C));
  m->norm_b = params_new(ctx, ps, "norm.bias", SHAPE(C));
  m->n_params = ps->n - m->first_param;
  return m;
}

/* AudioMAE's pos_embed (1, 1+N, C): row 0 (cls) zeros; row 1+n holds, for a = n mod grid_t and
 * b = n div grid_t (the (F/p, T/p) grid's column and row: the patch_hw quirk),
 *   [sin(a ω_k), cos(a ω_k), sin(b ω_k), cos(b ω_k)],  ω_k = 10000^(−k / (C/4)), k < C/4,
 * each group C/4 channels; computed in double as numpy does, then rounded to fp32. */
static void sincos_pos_embed(float *pe, int C, int grid_t, int N) {
  int q = C / 4;
  memset(pe, 0, (size_t)C * sizeof *pe);
  for (int n = 0; n < N; n++) {
    double pos[2] = {n % grid_t, n / grid_t};
    float *row = pe + (size_t)(1 + n) * C;
    for (int h = 0; h < 2; h++)
      for (int k = 0; k < q; k++) {
        double a = pos[h] / pow(10000.0, (double)k / q);
        row[h * 2 * q + k] = (float)sin(a);
        row[h * 2 * q + q + k] = (float)cos(a);
      }
  }
}

static void xavier_uniform(Ctx *ctx, Tensor *w) { /* w (fan_out, fan_in, ...) as a (fan_out, rest) matrix */
  double fan_out = (double)w->shape[0], fan_in = (double)(w->numel / w->shape[0]);
  params_init_uniform(ctx, w, (float)sqrt(6.0 / (fan_in + fan_out)));
}

static void linear_init(Ctx *ctx, Tensor *w, Tensor *b) {
  xavier_uniform(ctx, w);
  tensor_fill(ctx, b, 0.0f);
}

static void layer_norm_init(Ctx *ctx, Tensor *w, Tensor *b) {
  tensor_fill(ctx, w, 1.0f);
  tensor_fill(ctx, b, 0.0f);
}

void audiomae_init_random(Ctx *ctx, AudioMAE *m) {
  const AudioMAEConfig *c = &m->cfg;
  xavier_uniform(ctx, m->patch_w);
  params_init_uniform(ctx, m->patch_b, 1.0f / sqrtf((float)(c->in_chans * c->patch * c->patch)));
  params_init_normal(ctx, m->cls_token, 0.02f);
  float *pe = MALLOC_CHECK((size_t)m->pos_embed->numel * sizeof(float));
  sincos_pos_embed(pe, c->embed_dim, m->grid_t, m->n_tokens);
  tensor_from_host_f32(ctx, m->pos_embed, pe);
  free(pe);
  for (int i = 0; i < c->depth; i++) {
    AudioMAEBlock *b = &m->blocks[i];
    layer_norm_init(ctx, b->norm1_w, b->norm1_b);
    linear_init(ctx, b->qkv_w, b->qkv_b);
    linear_init(ctx, b->proj_w, b->proj_b);
    layer_norm_init(ctx, b->norm2_w, b->norm2_b);
    linear_init(ctx, b->fc1_w, b->fc1_b);
    linear_init(ctx, b->fc2_w, b->fc2_b);
  }
  layer_norm_init(ctx, m->norm_w, m->norm_b);
}

/* ------------------------------------------------------------------ loading */

static void check_config(ConfigCheck *cc, const AudioMAEConfig *c) {
  /* img_size: [T, F], or one number for a square input */
  json_t *img = check_get(cc, "img_size");
  if (json_is_array(img) || c->img_t != c->img_f)
    check_value(cc, "img_size", img, json_pack("[ii]", c->img_t, c->img_f));
  else
    check_int(cc, "img_size", c->img_t);
  check_int(cc, "patch_size", c->patch);
  check_int(cc, "in_chans", c->in_chans);
  check_int(cc, "embed_dim", c->embed_dim);
  check_int(cc, "depth", c->depth);
  check_int(cc, "num_heads", c->num_heads);
  check_real(cc, "mlp_ratio", c->mlp_ratio);
  check_real(cc, "norm_eps", c->norm_eps);
}

/* The pretraining checkpoint's decoder, which the encoder does not use. */
static bool is_decoder_key(const char *name) {
  return !strncmp(name, "decoder_", strlen("decoder_")) || !strcmp(name, "mask_token");
}

static int check_extra(TensorFile *tf, const AudioMAE *m, McmErr *err) {
  char **names = NULL;
  int n = 0, rc = 0;
  if (tf_names(tf, &names, &n, err)) return -1;
  for (int i = 0; i < n && !rc; i++)
    if (!is_decoder_key(names[i]) && !params_find(m->ps, names[i]))
      rc = mcm_err(err, "%s: tensor '%s' is not a parameter of this AudioMAE encoder (configured with depth %d; "
                   "does the configuration match the weights?)", tf_path(tf), names[i], m->cfg.depth);
  tf_free_names(names, n);
  return rc;
}

int audiomae_load(Ctx *ctx, AudioMAE *m, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  json_t *config; /* none stated: the shapes decide */
  int rc = weights_meta(tf, "audiomae", &config, err);
  if (!rc && config) {
    ConfigCheck cc = config_check_begin(path, config, err);
    check_config(&cc, &m->cfg);
    rc = cc.rc;
  }
  json_decref(config);
  if (!rc) rc = params_load(ctx, m->ps, tf, "", true, err);
  if (!rc) rc = check_extra(tf, m, err);
  tf_close(tf);
  return rc;
}

/* ------------------------------------------------------------------ forward */

/* x (B, 1+N, C) -> (B, C, N): the cls token added to every patch token, cls dropped. */
static Tensor *readout(Ctx *ctx, Tensor *x) {
  int64_t N = x->shape[1] - 1;
  Tensor *cls = op_slice(ctx, x, 1, 0, 1);      /* (B, 1, C) */
  Tensor *patches = op_slice(ctx, x, 1, 1, N);  /* (B, N, C) */
  return op_transpose_last2(ctx, op_add(ctx, patches, cls)); /* (B, C, N) */
}

/* Multi-head self-attention on x (B, T, C). */
static Tensor *attention(Ctx *ctx, const AudioMAEBlock *b, Tensor *x, int NH) {
  int64_t C = x->shape[2];
  Tensor *qkv = op_linear(ctx, x, b->qkv_w, b->qkv_b); /* (B, T, 3C) = (B, T, 3, NH, D) */
  Tensor *q = op_slice(ctx, qkv, -1, 0, C);            /* (B, T, NH·D) */
  Tensor *k = op_slice(ctx, qkv, -1, C, C);            /* (B, T, NH·D) */
  Tensor *v = op_slice(ctx, qkv, -1, 2 * C, C);        /* (B, T, NH·D) */
  Tensor *a = op_attention(ctx, q, k, v, NH, NULL);    /* (B, T, NH·D), softmax(q kᵀ/√D) v per head */
  return op_linear(ctx, a, b->proj_w, b->proj_b);      /* (B, T, C) */
}

/* timm's pre-norm Block on x (B, T, C). */
static Tensor *block_forward(Ctx *ctx, const AudioMAEBlock *b, Tensor *x, const AudioMAEConfig *c) {
  Tensor *h = op_layer_norm(ctx, x, c->norm_eps, b->norm1_w, b->norm1_b); /* (B, T, C) */
  x = op_add(ctx, x, attention(ctx, b, h, c->num_heads));                 /* (B, T, C) */
  h = op_layer_norm(ctx, x, c->norm_eps, b->norm2_w, b->norm2_b);         /* (B, T, C) */
  h = op_gelu(ctx, op_linear(ctx, h, b->fc1_w, b->fc1_b));                /* (B, T, H) */
  return op_add(ctx, x, op_linear(ctx, h, b->fc2_w, b->fc2_b));           /* (B, T, C) */
}

/* Readouts leave the network in fp32, whatever it computes in. */
static void record_taps(Ctx *ctx, Tensor *x, int at, const int *taps, int n_taps, Tensor **tap_out) {
  Tensor *r = NULL;
  for (int j = 0; j < n_taps; j++)
    if (taps[j] == at) tap_out[j] = r ? r : (r = op_cast(ctx, readout(ctx, x), DT_F32));
}

void audiomae_forward(Ctx *ctx, AudioMAE *m, Tensor *fbank, const int *taps, int n_taps, Tensor **tap_out,
                      Tensor **cls_out) {
  const AudioMAEConfig *c = &m->cfg;
  McmErr err;
  MCM_CHECK(audiomae_check_taps(c, taps, n_taps, &err) == 0, "%s", err.msg);
  CHECK_SHAPE("audiomae_forward", fbank, -1, c->in_chans, c->img_t, c->img_f);
  const int64_t B = fbank->shape[0], C = c->embed_dim, N = m->n_tokens;
  int last = cls_out ? c->depth - 1 : -1; /* the last block anything needs */
  for (int j = 0; j < n_taps; j++) last = taps[j] > last ? taps[j] : last;

  /* patch_embed: (B, 1, T, F) -> (B, C, T/p, F/p) -> (B, N, C), token n = t·(F/p) + f */
  fbank = op_cast(ctx, fbank, m->patch_w->dtype); /* the weights' dtype (audiomae_cast) */
  Tensor *x = op_conv2d(ctx, fbank, m->patch_w, m->patch_b, conv2d_args(c->patch, 0)); /* (B, C, T/p, F/p) */
  x = op_transpose_last2(ctx, op_reshape(ctx, x, SHAPE(B, C, N)));                       /* (B, N, C) */
  x = op_add(ctx, x, op_slice(ctx, m->pos_embed, 1, 1, N));                              /* + (1, N, C) */
  Tensor *cls = op_add(ctx, m->cls_token, op_slice(ctx, m->pos_embed, 1, 0, 1));         /* (1, 1, C) */
  cls = op_add(ctx, tensor_zeros(ctx, x->dtype, SHAPE(B, 1, C)), cls);                   /* expanded: (B, 1, C) */
  x = op_concat(ctx, (Tensor *[]){cls, x}, 2, 1);                                        /* (B, 1+N, C) */
  record_taps(ctx, x, -1, taps, n_taps, tap_out);

  for (int i = 0; i <= last; i++) {
    x = block_forward(ctx, &m->blocks[i], x, c); /* (B, 1+N, C) */
    record_taps(ctx, x, i, taps, n_taps, tap_out);
  }

  if (cls_out) { /* norm is per token: normalise only the cls token */
    Tensor *t0 = op_slice(ctx, x, 1, 0, 1);                                 /* (B, 1, C) */
    t0 = op_layer_norm(ctx, t0, c->norm_eps, m->norm_w, m->norm_b);         /* (B, 1, C) */
    *cls_out = op_cast(ctx, op_reshape(ctx, t0, SHAPE(B, C)), DT_F32);      /* (B, C) */
  }
}

void audiomae_cast(Ctx *ctx, AudioMAE *m, DType dtype) { params_cast(ctx, m->ps, m->first_param, m->n_params, dtype); }
