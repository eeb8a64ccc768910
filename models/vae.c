/* The MusicLDM VAE (diffusers AutoencoderKL), written from ops; see vae.h for the figure.
 * Shape letters: B batch, C channels, H × W = time × mel, T = H·W positions, L latent
 * channels, f = 2^(n_blocks − 1) the downsampling factor. */
#include "vae.h"

#include <jansson.h>
#include <math.h>

#include "kernels/math.h" /* op_exp, op_clamp (until kernels/ops.h includes it) */
#include "kernels/rng.h"
#include "models/weights.h"

VaeConfig vae_config_musicldm(void) {
  return (VaeConfig){
      .in_channels = 1,
      .out_channels = 1,
      .latent_channels = 8,
      .n_blocks = 3,
      .block_out_channels = {128, 256, 512},
      .layers_per_block = 2,
      .norm_num_groups = 32,
      .norm_eps = 1e-6f,
      .mid_block_add_attention = true,
      .use_quant_conv = true,
      .use_post_quant_conv = true,
      .scaling_factor = 1.0753243f, /* 1.075324296951294, the checkpoint's scale_factor */
  };
}

int vae_config_check(const VaeConfig *c, McmErr *err) {
  if (c->in_channels < 1 || c->out_channels < 1 || c->latent_channels < 1)
    return mcm_err(err, "vae config: in_channels %d, out_channels %d, latent_channels %d must be at least 1",
                   c->in_channels, c->out_channels, c->latent_channels);
  if (c->n_blocks < 1 || c->n_blocks > VAE_MAX_BLOCKS)
    return mcm_err(err, "vae config: %d blocks (block_out_channels entries), expected 1..%d", c->n_blocks,
                   VAE_MAX_BLOCKS);
  if (c->layers_per_block < 1 || c->layers_per_block > VAE_MAX_LAYERS)
    return mcm_err(err, "vae config: layers_per_block %d, expected 1..%d", c->layers_per_block, VAE_MAX_LAYERS);
  if (c->norm_num_groups < 1)
    return mcm_err(err, "vae config: norm_num_groups %d must be at least 1", c->norm_num_groups);
  for (int i = 0; i < c->n_blocks; i++)
    if (c->block_out_channels[i] < 1 || c->block_out_channels[i] % c->norm_num_groups)
      return mcm_err(err, "vae config: block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", i,
                     c->block_out_channels[i], c->norm_num_groups);
  if (!(c->norm_eps > 0.0f)) return mcm_err(err, "vae config: norm_eps %g must be positive", c->norm_eps);
  if (!(c->scaling_factor > 0.0f) || !isfinite(c->scaling_factor))
    return mcm_err(err, "vae config: scaling_factor %g must be positive and finite", c->scaling_factor);
  return 0;
}

int vae_downsample_factor(const VaeConfig *cfg) { return 1 << (cfg->n_blocks - 1); }

/* ---------------------------------------------------------------- parameters */

static VaeLayer conv_new(Ctx *ctx, ParamSet *ps, const char *name, int cout, int cin, int k) {
  params_push(ps, "%s", name);
  VaeLayer l = {params_new(ctx, ps, "weight", SHAPE(cout, cin, k, k)), params_new(ctx, ps, "bias", SHAPE(cout))};
  params_pop(ps);
  return l;
}

static VaeLayer linear_new(Ctx *ctx, ParamSet *ps, const char *name, int cout, int cin) {
  params_push(ps, "%s", name);
  VaeLayer l = {params_new(ctx, ps, "weight", SHAPE(cout, cin)), params_new(ctx, ps, "bias", SHAPE(cout))};
  params_pop(ps);
  return l;
}

static VaeLayer norm_new(Ctx *ctx, ParamSet *ps, const char *name, int c) {
  params_push(ps, "%s", name);
  VaeLayer l = {params_new(ctx, ps, "weight", SHAPE(c)), params_new(ctx, ps, "bias", SHAPE(c))};
  params_pop(ps);
  return l;
}

static VaeResnet resnet_new(Ctx *ctx, ParamSet *ps, int cin, int cout) {
  VaeResnet r = {
      .norm1 = norm_new(ctx, ps, "norm1", cin),
      .conv1 = conv_new(ctx, ps, "conv1", cout, cin, 3),
      .norm2 = norm_new(ctx, ps, "norm2", cout),
      .conv2 = conv_new(ctx, ps, "conv2", cout, cout, 3),
  };
  if (cin != cout) r.conv_shortcut = conv_new(ctx, ps, "conv_shortcut", cout, cin, 1);
  return r;
}

static VaeMidBlock mid_block_new(Ctx *ctx, ParamSet *ps, const VaeConfig *cfg, int c) {
  VaeMidBlock m = {0};
  params_push(ps, "mid_block");
  params_push(ps, "resnets.0");
  m.resnets[0] = resnet_new(ctx, ps, c, c);
  params_pop(ps);
  if (cfg->mid_block_add_attention) {
    params_push(ps, "attentions.0");
    m.attention = (VaeAttention){
        .group_norm = norm_new(ctx, ps, "group_norm", c),
        .to_q = linear_new(ctx, ps, "to_q", c, c),
        .to_k = linear_new(ctx, ps, "to_k", c, c),
        .to_v = linear_new(ctx, ps, "to_v", c, c),
        .to_out = linear_new(ctx, ps, "to_out.0", c, c),
    };
    params_pop(ps);
  }
  params_push(ps, "resnets.1");
  m.resnets[1] = resnet_new(ctx, ps, c, c);
  params_pop(ps);
  params_pop(ps);
  return m;
}

static void encoder_new(Ctx *ctx, ParamSet *ps, const VaeConfig *cfg, VaeEncoder *e) {
  const int *ch = cfg->block_out_channels, n = cfg->n_blocks;
  params_push(ps, "encoder");
  e->conv_in = conv_new(ctx, ps, "conv_in", ch[0], cfg->in_channels, 3);
  for (int i = 0; i < n; i++) {
    int cin = i ? ch[i - 1] : ch[0];
    for (int j = 0; j < cfg->layers_per_block; j++) {
      params_push(ps, "down_blocks.%d.resnets.%d", i, j);
      e->resnets[i][j] = resnet_new(ctx, ps, j ? ch[i] : cin, ch[i]);
      params_pop(ps);
    }
    if (i < n - 1) {
      params_push(ps, "down_blocks.%d.downsamplers.0", i);
      e->downsample[i] = conv_new(ctx, ps, "conv", ch[i], ch[i], 3);
      params_pop(ps);
    }
  }
  e->mid_block = mid_block_new(ctx, ps, cfg, ch[n - 1]);
  e->conv_norm_out = norm_new(ctx, ps, "conv_norm_out", ch[n - 1]);
  e->conv_out = conv_new(ctx, ps, "conv_out", 2 * cfg->latent_channels, ch[n - 1], 3);
  params_pop(ps);
}

static void decoder_new(Ctx *ctx, ParamSet *ps, const VaeConfig *cfg, VaeDecoder *d) {
  const int *ch = cfg->block_out_channels, n = cfg->n_blocks;
  params_push(ps, "decoder");
  d->conv_in = conv_new(ctx, ps, "conv_in", ch[n - 1], cfg->latent_channels, 3);
  d->mid_block = mid_block_new(ctx, ps, cfg, ch[n - 1]);
  for (int i = 0; i < n; i++) { /* up_blocks.i works at block_out_channels[n − 1 − i] */
    int cin = i ? ch[n - i] : ch[n - 1], cout = ch[n - 1 - i];
    for (int j = 0; j <= cfg->layers_per_block; j++) {
      params_push(ps, "up_blocks.%d.resnets.%d", i, j);
      d->resnets[i][j] = resnet_new(ctx, ps, j ? cout : cin, cout);
      params_pop(ps);
    }
    if (i < n - 1) {
      params_push(ps, "up_blocks.%d.upsamplers.0", i);
      d->upsample[i] = conv_new(ctx, ps, "conv", cout, cout, 3);
      params_pop(ps);
    }
  }
  d->conv_norm_out = norm_new(ctx, ps, "conv_norm_out", ch[0]);
  d->conv_out = conv_new(ctx, ps, "conv_out", cfg->out_channels, ch[0], 3);
  params_pop(ps);
}

Vae *vae_create(Ctx *ctx, const VaeConfig *cfg, ParamSet *ps) {
  McmErr err;
  if (vae_config_check(cfg, &err)) MCM_FATAL("vae_create: %s", err.msg);
  Vae *vae = ctx_alloc_persistent_host(ctx, sizeof *vae);
  vae->cfg = *cfg;
  vae->ps = ps;
  vae->first_param = ps->n;
  int L = cfg->latent_channels;
  encoder_new(ctx, ps, cfg, &vae->encoder);
  decoder_new(ctx, ps, cfg, &vae->decoder);
  if (cfg->use_quant_conv) vae->quant_conv = conv_new(ctx, ps, "quant_conv", 2 * L, 2 * L, 1);
  if (cfg->use_post_quant_conv) vae->post_quant_conv = conv_new(ctx, ps, "post_quant_conv", L, L, 1);
  vae->n_params = ps->n - vae->first_param;
  return vae;
}

/* This model's parameters as a ParamSet of their own (for params_load). */
static ParamSet own_params(const Vae *vae) {
  ParamSet view = *vae->ps;
  view.p = vae->ps->p + vae->first_param;
  view.n = view.cap = vae->n_params;
  return view;
}

void vae_init_random(Ctx *ctx, Vae *vae) {
  /* Every layer created its weight then its bias; the only 1-D weights are the norms'. */
  Tensor **p = vae->ps->p + vae->first_param;
  for (int i = 0; i + 1 < vae->n_params; i += 2) {
    Tensor *w = p[i], *b = p[i + 1];
    if (w->ndim == 1) {
      tensor_fill(ctx, w, 1.0f);
      tensor_fill(ctx, b, 0.0f);
    } else {
      params_init_default(ctx, w, b);
    }
  }
}

/* ---------------------------------------------------------------- loading */

/* The file's config.json (diffusers) against the model's; its scaling_factor is the model's. */
static void check_config(ConfigCheck *cc, VaeConfig *c) {
  check_str(cc, "_class_name", "AutoencoderKL");
  check_int(cc, "in_channels", c->in_channels);
  check_int(cc, "out_channels", c->out_channels);
  check_int(cc, "latent_channels", c->latent_channels);
  check_int_list(cc, "block_out_channels", c->block_out_channels, c->n_blocks);
  check_int(cc, "layers_per_block", c->layers_per_block);
  check_int(cc, "norm_num_groups", c->norm_num_groups);
  check_bool(cc, "mid_block_add_attention", c->mid_block_add_attention);
  check_bool(cc, "use_quant_conv", c->use_quant_conv);
  check_bool(cc, "use_post_quant_conv", c->use_post_quant_conv);
  check_str(cc, "act_fn", "silu");
  const char *down[VAE_MAX_BLOCKS], *up[VAE_MAX_BLOCKS];
  for (int i = 0; i < c->n_blocks; i++) down[i] = "DownEncoderBlock2D", up[i] = "UpDecoderBlock2D";
  check_str_list(cc, "down_block_types", down, c->n_blocks);
  check_str_list(cc, "up_block_types", up, c->n_blocks);
  json_t *shift = check_get(cc, "shift_factor");
  if (json_is_number(shift) && json_number_value(shift) != 0.0)
    check_fail(cc, "%s: the weights' config has shift_factor = %g; mcm's VAE does not support a latent shift",
               cc->path, json_number_value(shift));
  json_t *scale = check_get(cc, "scaling_factor");
  if (json_is_number(scale) && !(json_number_value(scale) > 0.0))
    check_fail(cc, "%s: the weights' config has scaling_factor = %g, expected a positive number", cc->path,
               json_number_value(scale));
  else if (json_is_number(scale) && !cc->rc)
    c->scaling_factor = (float)json_number_value(scale);
}

int vae_load(Ctx *ctx, Vae *vae, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  /* Missing attributes are not an error (files from other tools have none). */
  json_t *config;
  int rc = weights_meta(tf, "vae", &config, err);
  if (!rc && config) {
    ConfigCheck cc = config_check_begin(path, config, err);
    check_config(&cc, &vae->cfg);
    rc = cc.rc;
  }
  json_decref(config);
  if (!rc) {
    ParamSet own = own_params(vae);
    rc = params_load(ctx, &own, tf, "", false, err);
  }
  tf_close(tf);
  return rc;
}

/* ---------------------------------------------------------------- forward */

static Tensor *group_norm(Ctx *ctx, const VaeConfig *cfg, Tensor *x, VaeLayer n) {
  return op_group_norm(ctx, x, cfg->norm_num_groups, cfg->norm_eps, n.weight, n.bias);
}

/* A stride-1 conv with symmetric zero padding (3×3 with pad 1, 1×1 with pad 0). */
static Tensor *conv(Ctx *ctx, Tensor *x, VaeLayer c, int pad) {
  return op_conv2d(ctx, x, c.weight, c.bias, conv2d_args(1, pad));
}

/* ResnetBlock2D without a time embedding: x (B, CIN, H, W) -> (B, COUT, H, W). */
static Tensor *resnet_forward(Ctx *ctx, const VaeConfig *cfg, const VaeResnet *r, Tensor *x) {
  ArenaMark scope = ctx_scope_begin(ctx); /* no-grad: keeps only the output (see vae_decode) */
  Tensor *h = op_silu(ctx, group_norm(ctx, cfg, x, r->norm1)); /* (B, CIN, H, W) */
  h = conv(ctx, h, r->conv1, 1);                                /* (B, COUT, H, W) */
  h = op_silu(ctx, group_norm(ctx, cfg, h, r->norm2));
  h = conv(ctx, h, r->conv2, 1);                                /* (B, COUT, H, W) */
  Tensor *skip = r->conv_shortcut.weight ? conv(ctx, x, r->conv_shortcut, 0) : x;
  return ctx_scope_end(ctx, scope, op_add(ctx, skip, h));
}

/* Single-head self-attention over the T = H·W positions, D = C: x (B, C, H, W) -> same. */
static Tensor *attention_forward(Ctx *ctx, const VaeConfig *cfg, const VaeAttention *a, Tensor *x) {
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], T = H * W;
  Tensor *h = group_norm(ctx, cfg, x, a->group_norm);                             /* (B, C, H, W) */
  h = op_permute(ctx, op_reshape(ctx, h, SHAPE(B, C, T)), (const int[]){0, 2, 1}); /* (B, T, C) */
  Tensor *q = op_linear(ctx, h, a->to_q.weight, a->to_q.bias);                     /* (B, T, C) */
  Tensor *k = op_linear(ctx, h, a->to_k.weight, a->to_k.bias);                     /* (B, T, C) */
  Tensor *v = op_linear(ctx, h, a->to_v.weight, a->to_v.bias);                     /* (B, T, C) */
  Tensor *o = op_attention(ctx, q, k, v, 1, NULL);                                 /* (B, T, C) */
  o = op_linear(ctx, o, a->to_out.weight, a->to_out.bias);                         /* (B, T, C) */
  o = op_reshape(ctx, op_permute(ctx, o, (const int[]){0, 2, 1}), SHAPE(B, C, H, W));
  return op_add(ctx, o, x);
}

/* UNetMidBlock2D: resnet, attention, resnet at C channels. x (B, C, h, w) -> same. */
static Tensor *mid_block_forward(Ctx *ctx, const VaeConfig *cfg, const VaeMidBlock *m, Tensor *x) {
  ArenaMark scope = ctx_scope_begin(ctx);
  Tensor *h = resnet_forward(ctx, cfg, &m->resnets[0], x);
  if (m->attention.to_q.weight) h = attention_forward(ctx, cfg, &m->attention, h);
  return ctx_scope_end(ctx, scope, resnet_forward(ctx, cfg, &m->resnets[1], h));
}

static void check_input(const char *fn, const Tensor *x, int channels, int multiple) {
  MCM_CHECK(x->ndim == 4 && x->shape[1] == channels && x->shape[2] % multiple == 0 && x->shape[3] % multiple == 0,
            "%s: input is %s, expected (B, %d, H, W) with H and W multiples of %d", fn, TENSOR_SHAPE_STR(x), channels,
            multiple);
}

VaeMoments vae_encode(Ctx *ctx, Vae *vae, Tensor *x) {
  const VaeConfig *cfg = &vae->cfg;
  const VaeEncoder *e = &vae->encoder;
  int n = cfg->n_blocks, L = cfg->latent_channels;
  check_input("vae_encode", x, cfg->in_channels, vae_downsample_factor(cfg));
  /* Downsample2D with padding 0: pad right and bottom by one, then a 3×3 stride-2 conv. */
  Conv2dArgs down = {.stride_h = 2, .stride_w = 2, .pad_bottom = 1, .pad_right = 1, .dil_h = 1, .dil_w = 1};

  x = op_cast(ctx, x, e->conv_in.weight->dtype);           /* the weights' dtype (vae_cast) */
  Tensor *h = conv(ctx, x, e->conv_in, 1);                 /* (B, C0, H, W) */
  for (int i = 0; i < n; i++) {                            /* down_blocks.i, Ci = block_out_channels[i] */
    for (int j = 0; j < cfg->layers_per_block; j++)
      h = resnet_forward(ctx, cfg, &e->resnets[i][j], h);  /* (B, Ci, H/2^i, W/2^i) */
    if (i < n - 1)                                         /* (B, Ci, H/2^(i+1), W/2^(i+1)) */
      h = op_conv2d(ctx, h, e->downsample[i].weight, e->downsample[i].bias, down);
  }
  h = mid_block_forward(ctx, cfg, &e->mid_block, h);       /* (B, C, H/f, W/f), C = Ci of the last block */
  h = op_silu(ctx, group_norm(ctx, cfg, h, e->conv_norm_out));
  h = conv(ctx, h, e->conv_out, 1);                        /* (B, 2L, H/f, W/f) */
  if (vae->quant_conv.weight) h = conv(ctx, h, vae->quant_conv, 0);
  h = op_cast(ctx, h, DT_F32);
  return (VaeMoments){.mean = op_slice(ctx, h, 1, 0, L), .logvar = op_slice(ctx, h, 1, L, L)};
}

/* z = mean + std ⊙ ε, std = exp(½·clamp(logvar, −30, 20)), ε ~ N(0, 1), as diffusers'
 * DiagonalGaussianDistribution.sample; differentiable in mean and logvar (the
 * reparameterisation), with no gradient to logvar where the clamp is active. */
Tensor *vae_sample(Ctx *ctx, Tensor *mean, Tensor *logvar) {
  CHECK_SAME_SHAPE("vae_sample", mean, logvar);
  Tensor *eps = tensor_like(ctx, mean); /* (B, L, h, w) ~ N(0, 1) */
  rng_normal(ctx, eps);
  Tensor *std = op_exp(ctx, op_scale(ctx, op_clamp(ctx, logvar, -30.0f, 20.0f), 0.5f)); /* (B, L, h, w) */
  return op_add(ctx, mean, op_mul(ctx, std, eps));
}

/* Memory: in no-grad mode every resnet, the mid block, every up block and the whole decoder
 * are arena scopes keeping only their outputs, so the peak is about one resnet's
 * intermediates at the finest resolution, not all of them (ctx_scope_end: nothing is freed
 * while the tape records, as when training backpropagates through the frozen decoder). */
Tensor *vae_decode(Ctx *ctx, Vae *vae, Tensor *z) {
  const VaeConfig *cfg = &vae->cfg;
  const VaeDecoder *d = &vae->decoder;
  int n = cfg->n_blocks;
  check_input("vae_decode", z, cfg->latent_channels, 1);

  ArenaMark whole = ctx_scope_begin(ctx);
  z = op_cast(ctx, z, d->conv_in.weight->dtype);             /* z (B, L, H/f, W/f) in the weights' dtype */
  Tensor *h = vae->post_quant_conv.weight ? conv(ctx, z, vae->post_quant_conv, 0) : z;
  h = conv(ctx, h, d->conv_in, 1);                           /* (B, C, H/f, W/f), C = block_out_channels[n-1] */
  h = mid_block_forward(ctx, cfg, &d->mid_block, h);         /* (B, C, H/f, W/f) */
  for (int i = 0; i < n; i++) {                              /* up_blocks.i, Ci = block_out_channels[n-1-i] */
    ArenaMark block = ctx_scope_begin(ctx);                  /* each resnet's output replaces the last */
    for (int j = 0; j <= cfg->layers_per_block; j++)
      h = ctx_scope_end(ctx, block, resnet_forward(ctx, cfg, &d->resnets[i][j], h)); /* (B, Ci, 2^i H/f, .) */
    if (i < n - 1) {
      h = op_upsample_nearest2x(ctx, h);                     /* (B, Ci, 2^(i+1) H/f, 2^(i+1) W/f) */
      h = conv(ctx, h, d->upsample[i], 1);
    }
    h = ctx_scope_end(ctx, block, h);
  }
  h = op_silu(ctx, group_norm(ctx, cfg, h, d->conv_norm_out));            /* (B, C0, H, W) */
  h = conv(ctx, h, d->conv_out, 1);                                        /* (B, out_channels, H, W) */
  return ctx_scope_end(ctx, whole, op_cast(ctx, h, DT_F32));
}

void vae_cast(Ctx *ctx, Vae *vae, DType dtype) { params_cast(ctx, vae->ps, vae->first_param, vae->n_params, dtype); }

Tensor *vae_forward(Ctx *ctx, Vae *vae, Tensor *x, bool sample_posterior) {
  VaeMoments m = vae_encode(ctx, vae, x);
  return vae_decode(ctx, vae, sample_posterior ? vae_sample(ctx, m.mean, m.logvar) : m.mean);
}
