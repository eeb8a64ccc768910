/* The MusicLDM UNet (see unet.h): configuration, parameters named as the diffusers state
 * dict, loading with a check of the file's config.json, and the forward pass from ops.
 *
 * Size letters: B batch, C channels, H × W latent time × mel bins, T = H·W tokens,
 * E the embedding fed to the resnets (2 · time_embed_dim). */
#include "unet.h"

#include <jansson.h>

#include "models/weights.h"

/* ================================================================ configuration */

UNetConfig unet_config_musicldm(void) {
  UNetConfig c = {
      .in_channels = 8,
      .out_channels = 8,
      .levels = 4,
      .block_out_channels = {128, 256, 384, 640},
      .attention = {false, true, true, true},
      .layers_per_block = 2,
      .transformer_layers = 1,
      .norm_groups = 32,
      .norm_eps = 1e-5f,
      .transformer_norm_eps = 1e-6f,
      .layer_norm_eps = 1e-5f,
      .num_head_channels = 32,
      .ff_mult = 4,
      .time_proj_dim = 128,
      .time_max_period = 10000.0f,
      .flip_sin_to_cos = true,
      .freq_shift = 0.0f,
      .time_embed_dim = 512,
      .class_embed_in = 512,
  };
  return c;
}

UNetConfig unet_config_musicldm_diffusers(void) {
  UNetConfig c = unet_config_musicldm();
  c.num_head_channels = 0;
  for (int l = 0; l < c.levels; l++) c.num_heads[l] = 8;
  return c;
}

int unet_heads(const UNetConfig *cfg, int level) {
  return cfg->num_head_channels > 0 ? cfg->block_out_channels[level] / cfg->num_head_channels
                                    : cfg->num_heads[level];
}

int unet_config_check(const UNetConfig *c, McmErr *err) {
  if (c->levels < 1 || c->levels > UNET_MAX_LEVELS)
    return mcm_err(err, "unet: levels = %d, expected 1..%d", c->levels, UNET_MAX_LEVELS);
  if (c->in_channels < 1 || c->out_channels < 1)
    return mcm_err(err, "unet: in_channels = %d, out_channels = %d, both must be >= 1", c->in_channels,
                   c->out_channels);
  if (c->layers_per_block < 1 || c->layers_per_block > UNET_MAX_LAYERS)
    return mcm_err(err, "unet: layers_per_block = %d, expected 1..%d", c->layers_per_block, UNET_MAX_LAYERS);
  if (c->transformer_layers < 1)
    return mcm_err(err, "unet: transformer_layers = %d, expected >= 1", c->transformer_layers);
  if (c->norm_groups < 1) return mcm_err(err, "unet: norm_groups = %d, expected >= 1", c->norm_groups);
  if (!(c->norm_eps > 0) || !(c->transformer_norm_eps > 0) || !(c->layer_norm_eps > 0))
    return mcm_err(err, "unet: norm_eps, transformer_norm_eps and layer_norm_eps must be > 0");
  if (c->ff_mult < 1) return mcm_err(err, "unet: ff_mult = %d, expected >= 1", c->ff_mult);
  if (c->num_head_channels < 0) return mcm_err(err, "unet: num_head_channels = %d, expected >= 0", c->num_head_channels);
  for (int l = 0; l < c->levels; l++) {
    int C = c->block_out_channels[l];
    if (C < 1) return mcm_err(err, "unet: block_out_channels[%d] = %d, expected >= 1", l, C);
    if (C % c->norm_groups)
      return mcm_err(err, "unet: block_out_channels[%d] = %d is not divisible by norm_groups = %d", l, C,
                     c->norm_groups);
    bool has_attn = c->attention[l] || l == c->levels - 1; /* the mid block always has one */
    if (!has_attn) continue;
    if (c->num_head_channels > 0 && C % c->num_head_channels)
      return mcm_err(err, "unet: block_out_channels[%d] = %d is not divisible by num_head_channels = %d", l, C,
                     c->num_head_channels);
    int h = unet_heads(c, l);
    if (h < 1 || C % h)
      return mcm_err(err, "unet: num_heads[%d] = %d does not divide block_out_channels[%d] = %d", l, h, l, C);
  }
  if (c->time_proj_dim != c->block_out_channels[0])
    return mcm_err(err, "unet: time_proj_dim = %d, expected block_out_channels[0] = %d (diffusers' Timesteps)",
                   c->time_proj_dim, c->block_out_channels[0]);
  if (c->time_embed_dim < 1) return mcm_err(err, "unet: time_embed_dim = %d, expected >= 1", c->time_embed_dim);
  if (c->class_embed_in < 1) return mcm_err(err, "unet: class_embed_in = %d, expected >= 1", c->class_embed_in);
  if (!(c->time_max_period > 1)) return mcm_err(err, "unet: time_max_period = %g, expected > 1", c->time_max_period);
  return 0;
}

/* ================================================================ parameters */

static UnetWB wb_linear(Ctx *ctx, ParamSet *ps, const char *name, int64_t out, int64_t in, bool bias) {
  params_push(ps, "%s", name);
  UnetWB m = {params_new(ctx, ps, "weight", SHAPE(out, in)), bias ? params_new(ctx, ps, "bias", SHAPE(out)) : NULL};
  params_pop(ps);
  return m;
}

static UnetWB wb_conv(Ctx *ctx, ParamSet *ps, const char *name, int64_t out, int64_t in, int64_t k) {
  params_push(ps, "%s", name);
  UnetWB m = {params_new(ctx, ps, "weight", SHAPE(out, in, k, k)), params_new(ctx, ps, "bias", SHAPE(out))};
  params_pop(ps);
  return m;
}

static UnetWB wb_norm(Ctx *ctx, ParamSet *ps, const char *name, int64_t C) {
  params_push(ps, "%s", name);
  UnetWB m = {params_new(ctx, ps, "weight", SHAPE(C)), params_new(ctx, ps, "bias", SHAPE(C))};
  params_pop(ps);
  return m;
}

static UnetResnet resnet_create(Ctx *ctx, ParamSet *ps, int cin, int cout, int E) {
  UnetResnet r = {0};
  r.norm1 = wb_norm(ctx, ps, "norm1", cin);
  r.conv1 = wb_conv(ctx, ps, "conv1", cout, cin, 3);
  r.time_emb_proj = wb_linear(ctx, ps, "time_emb_proj", cout, E, true);
  r.norm2 = wb_norm(ctx, ps, "norm2", cout);
  r.conv2 = wb_conv(ctx, ps, "conv2", cout, cout, 3);
  if (cin != cout) r.conv_shortcut = wb_conv(ctx, ps, "conv_shortcut", cout, cin, 1);
  return r;
}

static UnetAttention attention_create(Ctx *ctx, ParamSet *ps, const char *name, int C) {
  params_push(ps, "%s", name);
  UnetAttention a = {0};
  a.to_q = wb_linear(ctx, ps, "to_q", C, C, false).w;
  a.to_k = wb_linear(ctx, ps, "to_k", C, C, false).w; /* cross_attention_dim = C: no text context */
  a.to_v = wb_linear(ctx, ps, "to_v", C, C, false).w;
  a.to_out = wb_linear(ctx, ps, "to_out.0", C, C, true);
  params_pop(ps);
  return a;
}

static UnetTransformer transformer_create(Ctx *ctx, ParamSet *ps, const UNetConfig *cfg, int C, int heads) {
  UnetTransformer t = {0};
  t.heads = heads;
  t.norm = wb_norm(ctx, ps, "norm", C);
  t.proj_in = wb_conv(ctx, ps, "proj_in", C, C, 1);
  t.blocks = ctx_alloc_persistent_host(ctx, (size_t)cfg->transformer_layers * sizeof *t.blocks);
  int inner = cfg->ff_mult * C;
  for (int k = 0; k < cfg->transformer_layers; k++) {
    UnetTransformerBlock *b = &t.blocks[k];
    params_push(ps, "transformer_blocks.%d", k);
    b->norm1 = wb_norm(ctx, ps, "norm1", C);
    b->attn1 = attention_create(ctx, ps, "attn1", C);
    b->norm2 = wb_norm(ctx, ps, "norm2", C);
    b->attn2 = attention_create(ctx, ps, "attn2", C);
    b->norm3 = wb_norm(ctx, ps, "norm3", C);
    b->ff_proj = wb_linear(ctx, ps, "ff.net.0.proj", 2 * inner, C, true);
    b->ff_out = wb_linear(ctx, ps, "ff.net.2", C, inner, true);
    params_pop(ps);
  }
  t.proj_out = wb_conv(ctx, ps, "proj_out", C, C, 1);
  return t;
}

/* One level's resnets (and transformers), whose input channels are cin[j]. */
static UnetBlock block_create(Ctx *ctx, ParamSet *ps, const UNetConfig *cfg, int level, int n, const int *cin,
                              int E) {
  UnetBlock b = {0};
  int C = cfg->block_out_channels[level];
  b.n = n;
  b.resnets = ctx_alloc_persistent_host(ctx, (size_t)n * sizeof *b.resnets);
  if (cfg->attention[level]) b.attentions = ctx_alloc_persistent_host(ctx, (size_t)n * sizeof *b.attentions);
  for (int j = 0; j < n; j++) {
    params_push(ps, "resnets.%d", j);
    b.resnets[j] = resnet_create(ctx, ps, cin[j], C, E);
    params_pop(ps);
    if (!b.attentions) continue;
    params_push(ps, "attentions.%d", j);
    b.attentions[j] = transformer_create(ctx, ps, cfg, C, unet_heads(cfg, level));
    params_pop(ps);
  }
  return b;
}

Unet *unet_create(Ctx *ctx, const UNetConfig *cfg, ParamSet *ps) {
  McmErr err;
  if (unet_config_check(cfg, &err)) MCM_FATAL("%s", err.msg);
  Unet *net = ctx_alloc_persistent_host(ctx, sizeof *net);
  net->cfg = *cfg;
  net->ps = ps;
  net->first_param = ps->n;
  const int L = cfg->levels, *ch = cfg->block_out_channels, N = cfg->layers_per_block;
  const int E = 2 * cfg->time_embed_dim; /* [time ‖ class] */

  net->time_linear_1 = wb_linear(ctx, ps, "time_embedding.linear_1", cfg->time_embed_dim, cfg->time_proj_dim, true);
  net->time_linear_2 = wb_linear(ctx, ps, "time_embedding.linear_2", cfg->time_embed_dim, cfg->time_embed_dim, true);
  net->class_embedding = wb_linear(ctx, ps, "class_embedding", cfg->time_embed_dim, cfg->class_embed_in, true);
  net->conv_in = wb_conv(ctx, ps, "conv_in", ch[0], cfg->in_channels, 3);

  /* Down: level l's first resnet reads the previous level's channels. */
  for (int l = 0; l < L; l++) {
    int cin[UNET_MAX_LAYERS + 1];
    for (int j = 0; j < N; j++) cin[j] = j == 0 ? ch[l > 0 ? l - 1 : 0] : ch[l];
    params_push(ps, "down_blocks.%d", l);
    net->down[l] = block_create(ctx, ps, cfg, l, N, cin, E);
    if (l < L - 1) net->down[l].sampler = wb_conv(ctx, ps, "downsamplers.0.conv", ch[l], ch[l], 3);
    params_pop(ps);
  }

  params_push(ps, "mid_block");
  for (int j = 0; j < 2; j++) {
    params_push(ps, "resnets.%d", j);
    net->mid_resnets[j] = resnet_create(ctx, ps, ch[L - 1], ch[L - 1], E);
    params_pop(ps);
  }
  params_push(ps, "attentions.0");
  net->mid_attention = transformer_create(ctx, ps, cfg, ch[L - 1], unet_heads(cfg, L - 1));
  params_pop(ps);
  params_pop(ps);

  /* Up: up_blocks.i works at level l = L-1-i on [h ‖ skip]. The skips it takes, last
   * pushed first, are the N resnet outputs of down level l (ch[l]) and then the output of
   * the down sampler below it (ch[l-1]), or conv_in's (ch[0]) at level 0. */
  for (int i = 0; i < L; i++) {
    int l = L - 1 - i;
    int prev = i == 0 ? ch[L - 1] : ch[l + 1]; /* h arriving from below */
    int cin[UNET_MAX_LAYERS + 1];
    for (int j = 0; j <= N; j++) {
      int skip = j == N ? ch[l > 0 ? l - 1 : 0] : ch[l];
      cin[j] = (j == 0 ? prev : ch[l]) + skip;
    }
    params_push(ps, "up_blocks.%d", i);
    net->up[i] = block_create(ctx, ps, cfg, l, N + 1, cin, E);
    if (l > 0) net->up[i].sampler = wb_conv(ctx, ps, "upsamplers.0.conv", ch[l], ch[l], 3);
    params_pop(ps);
  }

  net->conv_norm_out = wb_norm(ctx, ps, "conv_norm_out", ch[0]);
  net->conv_out = wb_conv(ctx, ps, "conv_out", cfg->out_channels, ch[0], 3);
  net->n_params = ps->n - net->first_param;
  return net;
}

static bool ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), m = strlen(tail);
  return n >= m && !strcmp(s + n - m, tail);
}

void unet_init_random(Ctx *ctx, Unet *net) {
  ParamSet *ps = net->ps;
  for (int i = net->first_param; i < net->first_param + net->n_params; i++) {
    Tensor *p = ps->p[i];
    if (p->ndim >= 2) { /* a linear or conv weight, with its bias if it has one */
      char bias[PARAMS_NAME_MAX];
      mcm_snprintf(bias, sizeof bias, "%.*sbias", (int)(strlen(p->name) - strlen("weight")), p->name);
      params_init_default(ctx, p, params_find(ps, bias));
    } else if (strstr(p->name, "norm")) { /* GroupNorm / LayerNorm affine */
      tensor_fill(ctx, p, ends_with(p->name, ".weight") ? 1.0f : 0.0f);
    }
  }
}

/* ================================================================ loading */

/* A feature mcm's UNet does not have must be absent, null or off in the file's config. */
static void check_absent(ConfigCheck *cc, const char *key) {
  json_t *v = check_get(cc, key);
  if (!v || json_is_false(v)) return;
  char *dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  check_fail(cc, "%s: the weights' config sets %s = %.80s, which mcm's UNet does not implement", cc->path, key,
             dump ? dump : "?");
  free(dump);
}

/* A value that is either one number for every level or a list with one per level; levels
 * outside `which` (NULL: all) are not compared. */
static void check_per_level(ConfigCheck *cc, const char *key, const int *want, const bool *which, int L) {
  json_t *v = check_get(cc, key);
  if (!v) return;
  if (json_is_array(v) && json_array_size(v) != (size_t)L) {
    check_int_list(cc, key, want, L);
    return;
  }
  for (int l = 0; l < L && !cc->rc; l++) {
    if (which && !which[l]) continue;
    char name[96];
    mcm_snprintf(name, sizeof name, json_is_array(v) ? "%s[%d]" : "%s (level %d)", key, l);
    check_value(cc, name, json_is_array(v) ? json_array_get(v, (size_t)l) : v, json_integer(want[l]));
  }
}

static void check_config(ConfigCheck *cc, const UNetConfig *c) {
  const int L = c->levels;
  check_int(cc, "in_channels", c->in_channels);
  check_int(cc, "out_channels", c->out_channels);
  check_int_list(cc, "block_out_channels", c->block_out_channels, L);
  /* The block types at each level: down_block_types[l] and up_block_types[L-1-l]. */
  const char *down[UNET_MAX_LEVELS], *up[UNET_MAX_LEVELS];
  for (int l = 0; l < L; l++) {
    down[l] = c->attention[l] ? "CrossAttnDownBlock2D" : "DownBlock2D";
    up[L - 1 - l] = c->attention[l] ? "CrossAttnUpBlock2D" : "UpBlock2D";
  }
  check_str_list(cc, "down_block_types", down, L);
  check_str_list(cc, "up_block_types", up, L);
  check_str(cc, "mid_block_type", "UNetMidBlock2DCrossAttn");
  check_int(cc, "layers_per_block", c->layers_per_block);
  int tl[UNET_MAX_LEVELS] = {0};
  for (int l = 0; l < L; l++) tl[l] = c->transformer_layers;
  check_per_level(cc, "transformer_layers_per_block", tl, NULL, L);
  check_int(cc, "norm_num_groups", c->norm_groups);
  check_real(cc, "norm_eps", c->norm_eps);
  /* attn2 sees no text: its key/value width, cross_attention_dim, is the block's width. */
  check_per_level(cc, "cross_attention_dim", c->block_out_channels, c->attention, L);
  /* diffusers' attention_head_dim is the number of heads (its legacy naming). A
   * configuration with num_head_channels > 0 departs from it on purpose (the original
   * MusicLDM heads, see unet.h), so the file's value is compared only when the
   * configuration uses diffusers' per-level head counts. */
  if (c->num_head_channels == 0) {
    int heads[UNET_MAX_LEVELS] = {0};
    bool used[UNET_MAX_LEVELS] = {0};
    for (int l = 0; l < L; l++) heads[l] = unet_heads(c, l), used[l] = c->attention[l] || l == L - 1;
    check_per_level(cc, check_get(cc, "num_attention_heads") ? "num_attention_heads" : "attention_head_dim", heads,
                    used, L);
  }
  check_bool(cc, "use_linear_projection", false);
  check_bool(cc, "only_cross_attention", false);
  check_bool(cc, "flip_sin_to_cos", c->flip_sin_to_cos);
  check_real(cc, "freq_shift", c->freq_shift);
  check_str(cc, "time_embedding_type", "positional");
  check_int(cc, "time_embedding_dim", c->time_embed_dim);
  check_str(cc, "class_embed_type", "simple_projection");
  check_int(cc, "projection_class_embeddings_input_dim", c->class_embed_in);
  check_bool(cc, "class_embeddings_concat", true);
  check_str(cc, "resnet_time_scale_shift", "default");
  check_str(cc, "act_fn", "silu");
  /* Fixed parts of the architecture that diffusers makes configurable. */
  check_int(cc, "conv_in_kernel", 3);
  check_int(cc, "conv_out_kernel", 3);
  check_int(cc, "downsample_padding", 1);
  check_real(cc, "mid_block_scale_factor", 1.0);
  check_real(cc, "resnet_out_scale_factor", 1.0);
  check_real(cc, "dropout", 0.0);
  static const char *const absent[] = {"center_input_sample", "resnet_skip_time_act", "dual_cross_attention",
                                       "time_embedding_act_fn", "timestep_post_act", "time_cond_proj_dim",
                                       "addition_embed_type", "encoder_hid_dim_type", "num_class_embeds",
                                       "cross_attention_norm", "mid_block_only_cross_attention"};
  for (size_t i = 0; i < sizeof absent / sizeof *absent; i++) check_absent(cc, absent[i]);
}

int unet_load(Ctx *ctx, Unet *net, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  json_t *config;
  int rc = weights_meta(tf, "unet", &config, err);
  if (rc == 0 && config) {
    ConfigCheck cc = config_check_begin(path, config, err);
    check_config(&cc, &net->cfg);
    rc = cc.rc;
  }
  json_decref(config);
  if (rc == 0) {
    /* This UNet's own parameters (ps may hold other models' too). */
    ParamSet view = *net->ps;
    view.p = net->ps->p + net->first_param;
    view.n = view.cap = net->n_params;
    rc = params_load(ctx, &view, tf, "", false, err);
  }
  tf_close(tf);
  return rc;
}

/* ================================================================ forward */

/* (B, C, H, W) -> (B, C, H, W): a 3×3 conv with padding 1 (1×1 with none). */
static Tensor *conv(Ctx *ctx, Tensor *x, UnetWB m) {
  int k = (int)m.w->shape[2];
  return op_conv2d(ctx, x, m.w, m.b, conv2d_args(1, k / 2));
}

/* ResnetBlock2D: x (B, Cin, H, W), temb = SiLU(emb) (B, E) -> (B, Cout, H, W). */
static Tensor *resnet(Ctx *ctx, const UNetConfig *cfg, const UnetResnet *r, Tensor *x, Tensor *temb) {
  const int G = cfg->norm_groups;
  ArenaMark scope = ctx_scope_begin(ctx); /* no-grad: keeps only the output (see unet_forward) */
  Tensor *h = op_group_norm(ctx, x, G, cfg->norm_eps, r->norm1.w, r->norm1.b); /* (B, Cin, H, W) */
  h = conv(ctx, op_silu(ctx, h), r->conv1);                                    /* (B, Cout, H, W) */
  int64_t B = h->shape[0], Cout = h->shape[1];
  Tensor *t = op_linear(ctx, temb, r->time_emb_proj.w, r->time_emb_proj.b);    /* (B, Cout) */
  h = op_add(ctx, h, op_reshape(ctx, t, SHAPE(B, Cout, 1, 1)));                /* FiLM: + per channel */
  h = op_group_norm(ctx, h, G, cfg->norm_eps, r->norm2.w, r->norm2.b);
  h = conv(ctx, op_silu(ctx, h), r->conv2);                                    /* (B, Cout, H, W) */
  Tensor *skip = r->conv_shortcut.w ? conv(ctx, x, r->conv_shortcut) : x;      /* (B, Cout, H, W) */
  return ctx_scope_end(ctx, scope, op_add(ctx, skip, h));
}

/* diffusers Attention over tokens x (B, T, C); with no context, keys and values come from
 * x too (attn1 and attn2 alike). */
static Tensor *attention(Ctx *ctx, const UnetAttention *a, Tensor *x, int heads) {
  Tensor *q = op_linear(ctx, x, a->to_q, NULL);       /* (B, T, C) = (B, T, NH·D) */
  Tensor *k = op_linear(ctx, x, a->to_k, NULL);       /* (B, T, C) */
  Tensor *v = op_linear(ctx, x, a->to_v, NULL);       /* (B, T, C) */
  Tensor *o = op_attention(ctx, q, k, v, heads, NULL); /* (B, T, C), softmax(q kᵀ/√D) v per head */
  return op_linear(ctx, o, a->to_out.w, a->to_out.b); /* (B, T, C) */
}

/* BasicTransformerBlock on tokens x (B, T, C): three pre-norm residual branches. */
static Tensor *transformer_block(Ctx *ctx, const UNetConfig *cfg, const UnetTransformerBlock *b, Tensor *x,
                                 int heads) {
  const float eps = cfg->layer_norm_eps;
  ArenaMark scope = ctx_scope_begin(ctx);
  Tensor *n = op_layer_norm(ctx, x, eps, b->norm1.w, b->norm1.b);
  x = op_add(ctx, x, attention(ctx, &b->attn1, n, heads));
  n = op_layer_norm(ctx, x, eps, b->norm2.w, b->norm2.b);
  x = op_add(ctx, x, attention(ctx, &b->attn2, n, heads));
  n = op_layer_norm(ctx, x, eps, b->norm3.w, b->norm3.b);
  Tensor *f = op_linear(ctx, n, b->ff_proj.w, b->ff_proj.b); /* (B, T, 2·inner) */
  f = op_geglu(ctx, f);                                      /* (B, T, inner) */
  f = op_linear(ctx, f, b->ff_out.w, b->ff_out.b);           /* (B, T, C) */
  return ctx_scope_end(ctx, scope, op_add(ctx, x, f));
}

/* Transformer2DModel: x (B, C, H, W) -> (B, C, H, W). */
static Tensor *transformer(Ctx *ctx, const UNetConfig *cfg, const UnetTransformer *t, Tensor *x) {
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  ArenaMark scope = ctx_scope_begin(ctx);
  Tensor *h = op_group_norm(ctx, x, cfg->norm_groups, cfg->transformer_norm_eps, t->norm.w, t->norm.b);
  h = conv(ctx, h, t->proj_in);                              /* (B, C, H, W) */
  h = op_permute(ctx, h, (const int[]){0, 2, 3, 1});         /* (B, H, W, C) */
  h = op_reshape(ctx, h, SHAPE(B, H * W, C));                /* (B, T, C) */
  for (int k = 0; k < cfg->transformer_layers; k++) h = transformer_block(ctx, cfg, &t->blocks[k], h, t->heads);
  h = op_reshape(ctx, h, SHAPE(B, H, W, C));                 /* (B, H, W, C) */
  h = op_permute(ctx, h, (const int[]){0, 3, 1, 2});         /* (B, C, H, W) */
  h = conv(ctx, h, t->proj_out);
  return ctx_scope_end(ctx, scope, op_add(ctx, h, x));
}

/* Memory: in no-grad mode (sampling) every resnet, transformer block and transformer is an
 * arena scope keeping only its output, and so is the whole forward, so a call costs the
 * arena only its output (windowed sampling calls it per window); in grad mode the scopes do
 * nothing (ctx_scope_end). */
Tensor *unet_forward(Ctx *ctx, Unet *net, Tensor *x, Tensor *t, Tensor *class_emb) {
  const UNetConfig *cfg = &net->cfg;
  const int L = cfg->levels, N = cfg->layers_per_block;
  const int64_t B = x->shape[0], H = x->ndim == 4 ? x->shape[2] : 0, W = x->ndim == 4 ? x->shape[3] : 0;
  const int64_t f = (int64_t)1 << (L - 1);
  CHECK_SHAPE("unet", x, -1, cfg->in_channels, -1, -1);
  CHECK_SHAPE("unet", t, B);
  CHECK_SHAPE("unet", class_emb, B, cfg->class_embed_in);
  MCM_CHECK(H % f == 0 && W % f == 0 && H > 0 && W > 0,
            "unet: latent %lld × %lld is not divisible by %lld (the %d levels halve it %d times)", (long long)H,
            (long long)W, (long long)f, L, L - 1);

  ArenaMark whole = ctx_scope_begin(ctx);
  /* The network computes in its weights' dtype (unet_cast); inputs and output are fp32. */
  const DType dt = net->conv_in.w->dtype;
  x = op_cast(ctx, x, dt);
  class_emb = op_cast(ctx, class_emb, dt);
  /* Conditioning: emb = [time ‖ class] (B, E); every resnet projects SiLU(emb). */
  Tensor *tp = op_timestep_embedding_as(ctx, t, cfg->time_proj_dim, cfg->time_max_period, cfg->flip_sin_to_cos,
                                        cfg->freq_shift, dt);                           /* (B, 128) */
  Tensor *te = op_linear(ctx, tp, net->time_linear_1.w, net->time_linear_1.b);         /* (B, 512) */
  te = op_linear(ctx, op_silu(ctx, te), net->time_linear_2.w, net->time_linear_2.b);   /* (B, 512) */
  Tensor *ce = op_linear(ctx, class_emb, net->class_embedding.w, net->class_embedding.b); /* (B, 512) */
  Tensor *emb = op_concat(ctx, (Tensor *[]){te, ce}, 2, 1);                            /* (B, E = 1024) */
  Tensor *temb = op_silu(ctx, emb);                                                    /* (B, E) */

  /* Down path; every resnet/transformer output and every downsample is a skip. */
  Tensor *skips[UNET_MAX_LEVELS * (UNET_MAX_LAYERS + 1)];
  int ns = 0;
  Tensor *h = conv(ctx, x, net->conv_in); /* (B, C0, H, W) */
  skips[ns++] = h;
  for (int l = 0; l < L; l++) {
    const UnetBlock *b = &net->down[l];
    for (int j = 0; j < N; j++) {
      h = resnet(ctx, cfg, &b->resnets[j], h, temb);                    /* (B, Cl, H/2^l, W/2^l) */
      if (b->attentions) h = transformer(ctx, cfg, &b->attentions[j], h);
      skips[ns++] = h;
    }
    if (b->sampler.w) {
      h = op_conv2d(ctx, h, b->sampler.w, b->sampler.b, conv2d_args(2, 1)); /* (B, Cl, H/2^(l+1), W/2^(l+1)) */
      skips[ns++] = h;
    }
  }

  /* Mid block at the lowest resolution. */
  h = resnet(ctx, cfg, &net->mid_resnets[0], h, temb); /* (B, C_{L-1}, H/f, W/f) */
  h = transformer(ctx, cfg, &net->mid_attention, h);
  h = resnet(ctx, cfg, &net->mid_resnets[1], h, temb);

  /* Up path: each resnet reads [h ‖ the latest skip] along channels. */
  for (int i = 0; i < L; i++) {
    const UnetBlock *b = &net->up[i];
    for (int j = 0; j < b->n; j++) {
      Tensor *s = skips[--ns];
      h = op_concat(ctx, (Tensor *[]){h, s}, 2, 1);                     /* (B, C + Cskip, ., .) */
      h = resnet(ctx, cfg, &b->resnets[j], h, temb);                    /* (B, Cl, ., .) */
      if (b->attentions) h = transformer(ctx, cfg, &b->attentions[j], h);
    }
    if (b->sampler.w) h = conv(ctx, op_upsample_nearest2x(ctx, h), b->sampler); /* (B, Cl, 2·., 2·.) */
  }
  MCM_CHECK(ns == 0, "unet: %d skip connections left over", ns);

  h = op_group_norm(ctx, h, cfg->norm_groups, cfg->norm_eps, net->conv_norm_out.w, net->conv_norm_out.b);
  h = conv(ctx, op_silu(ctx, h), net->conv_out);                /* (B, out_channels, H, W) */
  return ctx_scope_end(ctx, whole, op_cast(ctx, h, DT_F32));
}

void unet_cast(Ctx *ctx, Unet *net, DType dtype) { params_cast(ctx, net->ps, net->first_param, net->n_params, dtype); }
