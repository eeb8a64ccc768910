/* HiFi-GAN's multi-period and multi-scale discriminators (see hifigan_disc.h): configuration,
 * parameters named like the authors' checkpoints, initialisation, and the forward pass written
 * from ops. */
#include "hifigan_disc.h"

#include <math.h>

#define WN_EPS 1e-12f  /* weight norm: v / max(‖v‖, eps); PyTorch divides by ‖v‖ (no v is 0) */
#define SN_EPS 1e-12f  /* torch.nn.utils.spectral_norm's default */
#define PERIOD_K 5     /* MPD convs: kernel (5, 1), padding (2, 0) */
#define PERIOD_STRIDE 3
#define POST_K 3       /* conv_post of both kinds: kernel 3, padding 1 */
#define POOL_K 4       /* AvgPool1d(4, 2, padding 2) */

/* The scale sub-discriminators' fixed plan: kernel and stride per conv. */
static const int SCALE_K[HGD_SCALE_LAYERS] = {15, 41, 41, 41, 41, 41, 5};
static const int SCALE_STRIDE[HGD_SCALE_LAYERS] = {1, 2, 2, 4, 4, 1, 1};

/* ---------------------------------------------------------------- configuration */

HifiganDiscConfig hifigan_disc_config_v1(void) {
  HifiganDiscConfig c = {
      .n_periods = 5,
      .periods = {2, 3, 5, 7, 11},
      .n_period_layers = 5,
      .period_channels = {32, 128, 512, 1024, 1024},
      .n_scales = 3,
      .scale_channels = {128, 128, 256, 512, 1024, 1024, 1024},
      .scale_groups = {1, 4, 16, 16, 16, 16, 1},
      .spectral_norm_first_scale = true,
  };
  return c;
}

int hifigan_disc_config_check(const HifiganDiscConfig *c, McmErr *err) {
  if (c->n_periods < 0 || c->n_periods > HGD_MAX_PERIODS)
    return mcm_err(err, "hifigan discriminators: %d periods, expected 0..%d", c->n_periods, HGD_MAX_PERIODS);
  if (c->n_scales < 0 || c->n_scales > HGD_MAX_SCALES)
    return mcm_err(err, "hifigan discriminators: %d scales, expected 0..%d", c->n_scales, HGD_MAX_SCALES);
  if (c->n_periods + c->n_scales < 1)
    return mcm_err(err, "hifigan discriminators: no period and no scale: nothing to discriminate with");
  for (int i = 0; i < c->n_periods; i++)
    if (c->periods[i] < 1) return mcm_err(err, "hifigan discriminators: period %d must be >= 1", c->periods[i]);
  if (c->n_periods > 0) {
    if (c->n_period_layers < 1 || c->n_period_layers > HGD_MAX_LAYERS)
      return mcm_err(err, "hifigan discriminators: %d period-discriminator convs, expected 1..%d", c->n_period_layers,
                     HGD_MAX_LAYERS);
    for (int j = 0; j < c->n_period_layers; j++)
      if (c->period_channels[j] < 1)
        return mcm_err(err, "hifigan discriminators: period-discriminator conv %d has %d channels (>= 1)", j,
                       c->period_channels[j]);
  }
  if (c->n_scales > 0)
    for (int j = 0; j < HGD_SCALE_LAYERS; j++) {
      int cin = j ? c->scale_channels[j - 1] : 1, cout = c->scale_channels[j], g = c->scale_groups[j];
      if (cout < 1) return mcm_err(err, "hifigan discriminators: scale conv %d has %d channels (>= 1)", j, cout);
      if (g < 1 || cin % g || cout % g)
        return mcm_err(err, "hifigan discriminators: scale conv %d has %d groups, which must divide its %d input and "
                       "%d output channels", j, g, cin, cout);
    }
  return 0;
}

int hifigan_disc_min_samples(const HifiganDiscConfig *c) {
  int n = 2; /* the reflect padding reads x[S − 2] */
  for (int i = 0; i < c->n_periods; i++)
    if (c->periods[i] > n) n = c->periods[i];
  return n;
}

/* ---------------------------------------------------------------- parameters */

/* A weight-normalised conv named <name>: weight_g (COUT, 1, ...), weight_v `shape`, bias. */
static DiscConv wn_conv(Ctx *ctx, ParamSet *ps, const char *name, int ndim, const int64_t *shape, int stride, int pad,
                        int groups) {
  DiscConv c = {.stride = stride, .pad = pad, .groups = groups};
  int64_t gshape[4] = {shape[0], 1, 1, 1};
  params_push(ps, "%s", name);
  c.g = params_new(ctx, ps, "weight_g", ndim, gshape);
  c.v = params_new(ctx, ps, "weight_v", ndim, shape);
  c.b = params_new(ctx, ps, "bias", SHAPE(shape[0]));
  params_pop(ps);
  return c;
}

/* A spectrally normalised conv: weight_orig, bias, and the frozen fp32 buffers weight_u, weight_v. */
static DiscConv sn_conv(Ctx *ctx, ParamSet *ps, const char *name, int ndim, const int64_t *shape, int stride, int pad,
                        int groups) {
  DiscConv c = {.spectral = true, .stride = stride, .pad = pad, .groups = groups};
  int64_t in = 1;
  for (int i = 1; i < ndim; i++) in *= shape[i];
  params_push(ps, "%s", name);
  c.w = params_new(ctx, ps, "weight_orig", ndim, shape);
  c.b = params_new(ctx, ps, "bias", SHAPE(shape[0]));
  bool trainable = ps->trainable;
  DType dtype = ps->dtype;
  ps->trainable = false; /* buffers: moved by the power iteration, never by a gradient */
  ps->dtype = DT_F32;
  c.sn.u = params_new(ctx, ps, "weight_u", SHAPE(shape[0]));
  c.sn.v = params_new(ctx, ps, "weight_v", SHAPE(in));
  ps->trainable = trainable;
  ps->dtype = dtype;
  c.sn.n_power_iterations = 1;
  c.sn.eps = SN_EPS;
  params_pop(ps);
  return c;
}

static void build_period(Ctx *ctx, const HifiganDiscConfig *cfg, ParamSet *ps, HifiganSubDisc *s, int p) {
  s->period = p;
  s->n_layers = cfg->n_period_layers;
  for (int j = 0; j < s->n_layers; j++) {
    char name[32];
    snprintf(name, sizeof name, "convs.%d", j);
    int cin = j ? cfg->period_channels[j - 1] : 1, cout = cfg->period_channels[j];
    int stride = j < s->n_layers - 1 ? PERIOD_STRIDE : 1;
    s->conv[j] = wn_conv(ctx, ps, name, SHAPE(cout, cin, PERIOD_K, 1), stride, PERIOD_K / 2, 1);
  }
  s->post = wn_conv(ctx, ps, "conv_post", SHAPE(1, cfg->period_channels[s->n_layers - 1], POST_K, 1), 1, POST_K / 2, 1);
}

static void build_scale(Ctx *ctx, const HifiganDiscConfig *cfg, ParamSet *ps, HifiganSubDisc *s, int scale) {
  bool spectral = scale == 0 && cfg->spectral_norm_first_scale;
  DiscConv (*make)(Ctx *, ParamSet *, const char *, int, const int64_t *, int, int, int) = spectral ? sn_conv : wn_conv;
  s->scale = scale;
  s->n_layers = HGD_SCALE_LAYERS;
  for (int j = 0; j < HGD_SCALE_LAYERS; j++) {
    char name[32];
    snprintf(name, sizeof name, "convs.%d", j);
    int cin = j ? cfg->scale_channels[j - 1] : 1, cout = cfg->scale_channels[j], g = cfg->scale_groups[j];
    s->conv[j] = make(ctx, ps, name, SHAPE(cout, cin / g, SCALE_K[j]), SCALE_STRIDE[j], (SCALE_K[j] - 1) / 2, g);
  }
  s->post = make(ctx, ps, "conv_post", SHAPE(1, cfg->scale_channels[HGD_SCALE_LAYERS - 1], POST_K), 1, POST_K / 2, 1);
}

/* The trainable tensors of one conv, in creation order. */
static int conv_params(DiscConv *c, Tensor **out) {
  int n = 0;
  if (c->spectral) out[n++] = c->w;
  else out[n++] = c->g, out[n++] = c->v;
  out[n++] = c->b;
  return n;
}

HifiganDisc *hifigan_disc_create(Ctx *ctx, const HifiganDiscConfig *cfg, ParamSet *ps) {
  McmErr err;
  MCM_CHECK(hifigan_disc_config_check(cfg, &err) == 0, "%s (check the configuration before hifigan_disc_create)",
            err.msg);
  HifiganDisc *d = ctx_alloc_persistent_host(ctx, sizeof *d);
  d->cfg = *cfg;
  d->ps = ps;
  for (int i = 0; i < cfg->n_periods; i++) {
    params_push(ps, "mpd.discriminators.%d", i);
    build_period(ctx, cfg, ps, &d->sub[d->n++], cfg->periods[i]);
    params_pop(ps);
  }
  for (int s = 0; s < cfg->n_scales; s++) {
    params_push(ps, "msd.discriminators.%d", s);
    build_scale(ctx, cfg, ps, &d->sub[d->n++], s);
    params_pop(ps);
  }
  d->pool = tensor_new_persistent(ctx, DT_F32, SHAPE(1, 1, POOL_K));
  tensor_fill(ctx, d->pool, 1.0f / POOL_K);
  d->params = ctx_alloc_persistent_host(ctx, (size_t)ps->n * sizeof *d->params);
  for (int k = 0; k < d->n; k++) {
    HifiganSubDisc *s = &d->sub[k];
    for (int j = 0; j < s->n_layers; j++) d->n_params += conv_params(&s->conv[j], d->params + d->n_params);
    d->n_params += conv_params(&s->post, d->params + d->n_params);
  }
  return d;
}

/* ---------------------------------------------------------------- initialisation */

static void unit_normal(Ctx *ctx, Tensor *t) {
  params_init_normal(ctx, t, 1.0f);
  float *h = MALLOC_CHECK((size_t)t->numel * sizeof *h);
  tensor_to_host_f32(ctx, t, h);
  double s = 0;
  for (int64_t i = 0; i < t->numel; i++) s += (double)h[i] * h[i];
  double scale = 1.0 / fmax(sqrt(s), SN_EPS);
  for (int64_t i = 0; i < t->numel; i++) h[i] = (float)(h[i] * scale);
  tensor_from_host_f32(ctx, t, h);
  free(h);
}

/* g = ‖v‖ per output channel: the normalised conv starts as the plain one. */
static void wn_set_g(Ctx *ctx, DiscConv *c) {
  const int64_t OUT = c->v->shape[0], IN = c->v->numel / OUT;
  float *v = MALLOC_CHECK((size_t)c->v->numel * sizeof *v), *g = MALLOC_CHECK((size_t)OUT * sizeof *g);
  tensor_to_host_f32(ctx, c->v, v);
  for (int64_t o = 0; o < OUT; o++) {
    double s = 0;
    for (int64_t i = 0; i < IN; i++) s += (double)v[o * IN + i] * v[o * IN + i];
    g[o] = (float)sqrt(s);
  }
  tensor_from_host_f32(ctx, c->g, g);
  free(v), free(g);
}

static void conv_init(Ctx *ctx, DiscConv *c) {
  if (c->spectral) {
    params_init_default(ctx, c->w, c->b);
    unit_normal(ctx, c->sn.u);
    unit_normal(ctx, c->sn.v);
  } else {
    params_init_default(ctx, c->v, c->b);
    wn_set_g(ctx, c);
  }
}

void hifigan_disc_init_random(Ctx *ctx, HifiganDisc *d) {
  for (int k = 0; k < d->n; k++) {
    HifiganSubDisc *s = &d->sub[k];
    for (int j = 0; j < s->n_layers; j++) conv_init(ctx, &s->conv[j]);
    conv_init(ctx, &s->post);
  }
}

void hifigan_disc_set_trainable(Ctx *ctx, HifiganDisc *d, bool trainable) {
  for (int i = 0; i < d->n_params; i++) param_set_trainable(ctx, d->params[i], trainable);
}

/* ---------------------------------------------------------------- forward */

/* The conv's weight: g · v/‖v‖ (rows = output channels) or w/σ. */
static Tensor *conv_weight(Ctx *ctx, DiscConv *c, bool training) {
  if (c->spectral) return op_spectral_norm(ctx, &c->sn, c->w, training);
  const int64_t OUT = c->v->shape[0];
  Tensor *rows = op_l2_normalize(ctx, op_reshape(ctx, c->v, SHAPE(OUT, c->v->numel / OUT)), WN_EPS);
  Tensor *w = op_mul(ctx, rows, op_reshape(ctx, c->g, SHAPE(OUT, 1)));
  return op_reshape(ctx, w, c->v->ndim, c->v->shape);
}

/* x (B, C, H, p) -> (B, COUT, H', p): kernel (k, 1) along H only. */
static Tensor *period_conv(Ctx *ctx, DiscConv *c, Tensor *x, bool training) {
  Conv2dArgs a = {.stride_h = c->stride, .stride_w = 1, .pad_top = c->pad, .pad_bottom = c->pad, .dil_h = 1,
                  .dil_w = 1, .groups = 1};
  return op_conv2d(ctx, x, conv_weight(ctx, c, training), c->b, a);
}

/* x (B, C, T) -> (B, COUT, T'). */
static Tensor *scale_conv(Ctx *ctx, DiscConv *c, Tensor *x, bool training) {
  Conv1dArgs a = {.stride = c->stride, .pad_left = c->pad, .pad_right = c->pad, .dilation = 1, .groups = c->groups};
  return op_conv1d(ctx, x, conv_weight(ctx, c, training), c->b, a);
}

/* wav (B, S) -> (B, S + n): the right end reflected, x[S−2], x[S−3], …, x[S−1−n] (torch's
 * 'reflect': the edge sample is not repeated), n = p − S mod p when p does not divide S. */
static Tensor *reflect_pad_right(Ctx *ctx, Tensor *wav, int p) {
  const int64_t S = wav->shape[1];
  const int n = S % p ? p - (int)(S % p) : 0;
  if (!n) return wav;
  Tensor **parts = ctx_alloc_host(ctx, (size_t)(n + 1) * sizeof *parts);
  parts[0] = wav;
  for (int i = 0; i < n; i++) parts[i + 1] = op_slice(ctx, wav, 1, S - 2 - i, 1); /* (B, 1) */
  return op_concat(ctx, parts, n + 1, 1);
}

static void period_forward(Ctx *ctx, HifiganSubDisc *s, Tensor *wav, bool training, DiscOutput *out) {
  const int64_t B = wav->shape[0], p = s->period;
  Tensor *x = reflect_pad_right(ctx, wav, (int)p);
  x = op_reshape(ctx, x, SHAPE(B, 1, x->shape[1] / p, p)); /* (B, 1, S'/p, p) */
  out->n_fmap = 0;
  for (int j = 0; j < s->n_layers; j++) {
    x = op_leaky_relu(ctx, period_conv(ctx, &s->conv[j], x, training), HGD_LRELU_SLOPE);
    out->fmap[out->n_fmap++] = x;
  }
  x = period_conv(ctx, &s->post, x, training); /* (B, 1, H', p) */
  out->fmap[out->n_fmap++] = x;
  out->logits = op_reshape(ctx, x, SHAPE(B, x->numel / B));
}

static void scale_forward(Ctx *ctx, HifiganSubDisc *s, Tensor *x, bool training, DiscOutput *out) {
  const int64_t B = x->shape[0];
  out->n_fmap = 0;
  for (int j = 0; j < s->n_layers; j++) {
    x = op_leaky_relu(ctx, scale_conv(ctx, &s->conv[j], x, training), HGD_LRELU_SLOPE);
    out->fmap[out->n_fmap++] = x;
  }
  x = scale_conv(ctx, &s->post, x, training); /* (B, 1, T') */
  out->fmap[out->n_fmap++] = x;
  out->logits = op_reshape(ctx, x, SHAPE(B, x->numel / B));
}

void hifigan_disc_forward(Ctx *ctx, HifiganDisc *d, Tensor *wav, bool training, DiscOutput *out) {
  MCM_CHECK(wav->ndim == 2 && wav->shape[1] >= hifigan_disc_min_samples(&d->cfg),
            "hifigan_disc_forward: wav %s, expected (B, S) with S >= %d", TENSOR_SHAPE_STR(wav),
            hifigan_disc_min_samples(&d->cfg));
  const int64_t B = wav->shape[0];
  Tensor *x = op_reshape(ctx, wav, SHAPE(B, 1, wav->shape[1])); /* (B, 1, S): scale 0's input */
  int scale = 0;
  for (int k = 0; k < d->n; k++) {
    HifiganSubDisc *s = &d->sub[k];
    if (s->period) {
      period_forward(ctx, s, wav, training, &out[k]);
      continue;
    }
    for (; scale < s->scale; scale++) /* AvgPool1d(4, 2, padding 2), the zeros counted */
      x = op_conv1d(ctx, x, d->pool, NULL, conv1d_args(2, POOL_K / 2, 1));
    scale_forward(ctx, s, x, training, &out[k]);
  }
}
