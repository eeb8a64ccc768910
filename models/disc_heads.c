/* StyleGAN-T discriminator heads (see disc_heads.h): configuration, parameters, loading and
 * the forward pass. Sizes: B batch, C channels, N tokens, M cmap_dim, K kernel. */
#include "disc_heads.h"

#include <jansson.h>
#include <math.h>

#include "models/weights.h"

DiscHeadsConfig disc_heads_config_default(void) {
  return (DiscHeadsConfig){.channels = 768, .c_dim = 1280, .cmap_dim = 64, .kernel = 9, .virtual_bs = 8,
                           .slope = 0.2f, .bn_eps = 1e-5f};
}

int disc_heads_config_check(const DiscHeadsConfig *c, McmErr *err) {
  if (c->channels < 1 || c->c_dim < 1 || c->cmap_dim < 1)
    return mcm_err(err, "disc heads config: channels %d, c_dim %d, cmap_dim %d: each must be >= 1", c->channels,
                   c->c_dim, c->cmap_dim);
  if (c->kernel < 1 || c->kernel % 2 == 0)
    return mcm_err(err, "disc heads config: kernel %d must be odd and >= 1 (padding kernel/2 keeps the length)",
                   c->kernel);
  if (c->virtual_bs < 1) return mcm_err(err, "disc heads config: virtual_bs %d must be >= 1", c->virtual_bs);
  if (!(c->slope >= 0.0f) || !(c->bn_eps > 0.0f))
    return mcm_err(err, "disc heads config: slope %g must be >= 0 and bn_eps %g > 0", (double)c->slope,
                   (double)c->bn_eps);
  return 0;
}

int disc_heads_check_batch(const DiscHeadsConfig *c, int64_t B, McmErr *err) {
  int64_t G = (B + c->virtual_bs - 1) / c->virtual_bs;
  if (B < 1 || B % G)
    return mcm_err(err, "disc heads: a batch of %lld does not split into ceil(%lld / %d) = %lld equal BatchNormLocal "
                   "groups (hint: use a batch of at most %d or a multiple of it)",
                   (long long)B, (long long)B, c->virtual_bs, (long long)G, c->virtual_bs);
  return 0;
}

/* ------------------------------------------------------------------ parameters */

static SNConv1d sn_conv_new(Ctx *ctx, ParamSet *ps, const char *name, int64_t out, int64_t in, int k) {
  SNConv1d cv = {.pad = k / 2};
  params_push(ps, "%s", name);
  cv.w = params_new(ctx, ps, "weight_orig", SHAPE(out, in, k));
  cv.b = params_new(ctx, ps, "bias", SHAPE(out));
  bool trainable = ps->trainable;
  DType dtype = ps->dtype;
  ps->trainable = false; /* buffers: updated by the power iteration, never by a gradient */
  ps->dtype = DT_F32;    /* op_spectral_norm keeps them in fp32 whatever the weight's dtype */
  cv.sn.u = params_new(ctx, ps, "weight_u", SHAPE(out));
  cv.sn.v = params_new(ctx, ps, "weight_v", SHAPE(in * k));
  ps->trainable = trainable;
  ps->dtype = dtype;
  cv.sn.n_power_iterations = 1;
  cv.sn.eps = 1e-12f;
  params_pop(ps);
  return cv;
}

DiscHeads *disc_heads_create(Ctx *ctx, const DiscHeadsConfig *cfg, int n_heads, ParamSet *ps) {
  McmErr err;
  MCM_CHECK(disc_heads_config_check(cfg, &err) == 0, "%s", err.msg);
  MCM_CHECK(n_heads >= 1, "disc_heads_create: %d heads", n_heads);
  DiscHeads *h = ctx_alloc_persistent_host(ctx, sizeof *h);
  h->cfg = *cfg;
  h->ps = ps;
  h->n = n_heads;
  h->head = ctx_alloc_persistent_host(ctx, (size_t)n_heads * sizeof *h->head);
  const int64_t C = cfg->channels, M = cfg->cmap_dim;
  for (int k = 0; k < n_heads; k++) {
    DiscHead *d = &h->head[k];
    params_push(ps, "heads.%d", k);
    d->conv0 = sn_conv_new(ctx, ps, "main.0.0", C, C, 1);
    d->bn0_w = params_new(ctx, ps, "main.0.1.weight", SHAPE(C));
    d->bn0_b = params_new(ctx, ps, "main.0.1.bias", SHAPE(C));
    d->conv1 = sn_conv_new(ctx, ps, "main.1.fn.0", C, C, cfg->kernel);
    d->bn1_w = params_new(ctx, ps, "main.1.fn.1.weight", SHAPE(C));
    d->bn1_b = params_new(ctx, ps, "main.1.fn.1.bias", SHAPE(C));
    d->cls = sn_conv_new(ctx, ps, "cls", M, C, 1);
    d->cmap_w = params_new(ctx, ps, "cmapper.weight", SHAPE(M, cfg->c_dim));
    d->cmap_b = params_new(ctx, ps, "cmapper.bias", SHAPE(M));
    params_pop(ps);
  }
  return h;
}

/* A unit vector from a normal draw, as torch's spectral_norm starts u and v. */
static void unit_normal(Ctx *ctx, Tensor *t) {
  params_init_normal(ctx, t, 1.0f);
  float *v = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, v);
  double s = 0.0;
  for (int64_t i = 0; i < t->numel; i++) s += (double)v[i] * v[i];
  double scale = 1.0 / fmax(sqrt(s), 1e-12);
  for (int64_t i = 0; i < t->numel; i++) v[i] = (float)(v[i] * scale);
  tensor_from_host_f32(ctx, t, v);
  free(v);
}

static void sn_conv_init(Ctx *ctx, SNConv1d *cv) {
  params_init_default(ctx, cv->w, cv->b);
  unit_normal(ctx, cv->sn.u);
  unit_normal(ctx, cv->sn.v);
}

void disc_heads_init_random(Ctx *ctx, DiscHeads *h) {
  for (int k = 0; k < h->n; k++) {
    DiscHead *d = &h->head[k];
    sn_conv_init(ctx, &d->conv0);
    tensor_fill(ctx, d->bn0_w, 1.0f);
    tensor_fill(ctx, d->bn0_b, 0.0f);
    sn_conv_init(ctx, &d->conv1);
    tensor_fill(ctx, d->bn1_w, 1.0f);
    tensor_fill(ctx, d->bn1_b, 0.0f);
    sn_conv_init(ctx, &d->cls);
    params_init_normal(ctx, d->cmap_w, 1.0f);
    tensor_fill(ctx, d->cmap_b, 0.0f);
  }
}

void disc_heads_set_trainable(Ctx *ctx, DiscHeads *h, bool trainable) {
  for (int k = 0; k < h->n; k++) {
    DiscHead *d = &h->head[k];
    Tensor *w[] = {d->conv0.w, d->conv0.b, d->bn0_w, d->bn0_b, d->conv1.w, d->conv1.b,
                   d->bn1_w,   d->bn1_b,   d->cls.w, d->cls.b, d->cmap_w,  d->cmap_b};
    for (size_t i = 0; i < sizeof w / sizeof *w; i++) param_set_trainable(ctx, w[i], trainable);
  }
}

/* ------------------------------------------------------------------ loading */

static void check_config(ConfigCheck *cc, const DiscHeads *h) {
  const DiscHeadsConfig *c = &h->cfg;
  check_int(cc, "n_heads", h->n);
  check_int(cc, "channels", c->channels);
  check_int(cc, "c_dim", c->c_dim);
  check_int(cc, "cmap_dim", c->cmap_dim);
  check_int(cc, "kernel_size", c->kernel);
  check_int(cc, "virtual_bs", c->virtual_bs);
  check_real(cc, "leaky_relu_slope", c->slope);
  check_real(cc, "bn_eps", c->bn_eps);
}

int disc_heads_load(Ctx *ctx, DiscHeads *h, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  json_t *config; /* none stated: the shapes decide */
  int rc = weights_meta(tf, "disc_heads", &config, err);
  if (!rc && config) {
    ConfigCheck cc = config_check_begin(path, config, err);
    check_config(&cc, h);
    rc = cc.rc;
  }
  json_decref(config);
  if (!rc) rc = params_load(ctx, h->ps, tf, "", false, err);
  tf_close(tf);
  return rc;
}

/* ------------------------------------------------------------------ forward */

/* SpectralConv1d: x (B, IN, N) -> (B, OUT, N), weight / σ, circular padding K/2. */
static Tensor *sn_conv(Ctx *ctx, SNConv1d *cv, Tensor *x, bool training) {
  Tensor *w = op_spectral_norm(ctx, &cv->sn, cv->w, training); /* (OUT, IN, K) */
  Conv1dArgs a = {.stride = 1, .pad_left = cv->pad, .pad_right = cv->pad, .dilation = 1, .circular = true};
  return op_conv1d(ctx, x, w, cv->b, a);
}

/* make_block: SpectralConv1d → BatchNormLocal → LeakyReLU, x (B, C, N) -> (B, C, N). */
static Tensor *block(Ctx *ctx, const DiscHeadsConfig *c, SNConv1d *cv, Tensor *bn_w, Tensor *bn_b, Tensor *x,
                     bool training) {
  Tensor *h = sn_conv(ctx, cv, x, training);                          /* (B, C, N) */
  h = op_batch_norm_local(ctx, h, c->virtual_bs, c->bn_eps, bn_w, bn_b); /* (B, C, N) */
  return op_leaky_relu(ctx, h, c->slope);
}

Tensor *disc_head_forward(Ctx *ctx, DiscHeads *h, int k, Tensor *x, Tensor *c, bool training) {
  const DiscHeadsConfig *cfg = &h->cfg;
  MCM_CHECK(k >= 0 && k < h->n, "disc_head_forward: head %d of %d", k, h->n);
  CHECK_SHAPE("disc_head_forward", x, -1, cfg->channels, -1);
  const int64_t B = x->shape[0], N = x->shape[2], M = cfg->cmap_dim;
  CHECK_SHAPE("disc_head_forward", c, B, cfg->c_dim);
  McmErr err;
  MCM_CHECK(disc_heads_check_batch(cfg, B, &err) == 0, "%s", err.msg);
  DiscHead *d = &h->head[k];
  const float r = 1.0f / sqrtf(2.0f);

  Tensor *t = block(ctx, cfg, &d->conv0, d->bn0_w, d->bn0_b, x, training);    /* main.0: (B, C, N) */
  Tensor *f = block(ctx, cfg, &d->conv1, d->bn1_w, d->bn1_b, t, training);    /* main.1.fn: (B, C, N) */
  t = op_add_scaled(ctx, f, t, r, r);                                         /* ResidualBlock: (B, C, N) */
  Tensor *out = sn_conv(ctx, &d->cls, t, training);                           /* cls: (B, M, N) */

  Tensor *w = op_scale(ctx, d->cmap_w, 1.0f / sqrtf((float)cfg->c_dim));      /* equalised lr: (M, c_dim) */
  Tensor *cmap = op_linear(ctx, c, w, d->cmap_b);                             /* cmapper: (B, M) */
  cmap = op_reshape(ctx, cmap, SHAPE(B, M, 1));                               /* (B, M, 1) */
  Tensor *logits = op_sum_dim(ctx, op_mul(ctx, out, cmap), 1, false);         /* Σ over M: (B, N) */
  logits = op_scale(ctx, logits, 1.0f / sqrtf((float)M));                     /* (B, N) */
  CHECK_SHAPE("disc_head_forward", logits, B, N);
  return logits;
}
