/* HiFi-GAN generator (see hifigan.h): configuration, parameters named like the checkpoint,
 * loading with a config cross-check, and the forward pass written from ops. */
#include "hifigan.h"

#include <jansson.h>
#include <math.h>

#include "kernels/math.h" /* op_div (until kernels/ops.h includes it) */
#include "models/weights.h"

/* ---------------------------------------------------------------- configuration */

HifiganConfig hifigan_config_musicldm(void) {
  HifiganConfig c = {
      .model_in_dim = 64,
      .sampling_rate = 16000,
      .hop = 160,
      .upsample_initial_channel = 1024,
      .n_upsamples = 5,
      .upsample_rates = {5, 4, 2, 2, 2},
      .upsample_kernel_sizes = {16, 16, 8, 4, 4},
      .n_kernels = 3,
      .resblock_kernel_sizes = {3, 7, 11},
      .n_dilations = {3, 3, 3},
      .resblock_dilation_sizes = {{1, 3, 5}, {1, 3, 5}, {1, 3, 5}},
      .leaky_relu_slope = 0.1f,
      .normalize_before = false,
  };
  return c;
}

int hifigan_config_check(const HifiganConfig *c, McmErr *err) {
  if (c->model_in_dim < 1) return mcm_err(err, "hifigan: model_in_dim %d must be >= 1", c->model_in_dim);
  if (c->sampling_rate < 1) return mcm_err(err, "hifigan: sampling_rate %d must be >= 1", c->sampling_rate);
  if (c->n_upsamples < 1 || c->n_upsamples > HIFIGAN_MAX_UPSAMPLES)
    return mcm_err(err, "hifigan: %d upsampling stages, expected 1..%d", c->n_upsamples, HIFIGAN_MAX_UPSAMPLES);
  if (c->upsample_initial_channel < 1 || (c->upsample_initial_channel >> c->n_upsamples) < 1)
    return mcm_err(err, "hifigan: upsample_initial_channel %d halves %d times to nothing (needs >= %d)",
                   c->upsample_initial_channel, c->n_upsamples, 1 << c->n_upsamples);
  int64_t hop = 1;
  for (int i = 0; i < c->n_upsamples; i++) {
    int u = c->upsample_rates[i], k = c->upsample_kernel_sizes[i];
    if (u < 1) return mcm_err(err, "hifigan: upsample_rates[%d] = %d must be >= 1", i, u);
    if (k < u)
      return mcm_err(err, "hifigan: upsample_kernel_sizes[%d] = %d is smaller than its rate %d (padding (k - u)/2 < 0)",
                     i, k, u);
    hop *= u;
  }
  if (c->hop && hop != c->hop)
    return mcm_err(err, "hifigan: the upsample_rates multiply to %lld, but the hop is %d samples per frame",
                   (long long)hop, c->hop);
  if (c->n_kernels < 1 || c->n_kernels > HIFIGAN_MAX_KERNELS)
    return mcm_err(err, "hifigan: %d resblock kernel sizes, expected 1..%d", c->n_kernels, HIFIGAN_MAX_KERNELS);
  for (int j = 0; j < c->n_kernels; j++) {
    int k = c->resblock_kernel_sizes[j];
    if (k < 1 || k % 2 == 0)
      return mcm_err(err, "hifigan: resblock_kernel_sizes[%d] = %d must be odd (the residual add needs 'same' padding)",
                     j, k);
    if (c->n_dilations[j] < 1 || c->n_dilations[j] > HIFIGAN_MAX_DILATIONS)
      return mcm_err(err, "hifigan: resblock_dilation_sizes[%d] has %d dilations, expected 1..%d", j,
                     c->n_dilations[j], HIFIGAN_MAX_DILATIONS);
    for (int n = 0; n < c->n_dilations[j]; n++)
      if (c->resblock_dilation_sizes[j][n] < 1)
        return mcm_err(err, "hifigan: resblock_dilation_sizes[%d][%d] = %d must be >= 1", j, n,
                       c->resblock_dilation_sizes[j][n]);
  }
  if (!isfinite(c->leaky_relu_slope))
    return mcm_err(err, "hifigan: leaky_relu_slope %g must be finite", (double)c->leaky_relu_slope);
  return 0;
}

int64_t hifigan_out_len(const HifiganConfig *c, int64_t T) {
  int64_t L = T;
  for (int i = 0; i < c->n_upsamples; i++) {
    int u = c->upsample_rates[i], k = c->upsample_kernel_sizes[i];
    L = (L - 1) * u - 2 * ((k - u) / 2) + k;
  }
  return L;
}

/* Channels after upsampling stage i (C_{-1} = upsample_initial_channel). */
static int stage_channels(const HifiganConfig *c, int i) { return c->upsample_initial_channel >> (i + 1); }

/* ---------------------------------------------------------------- parameters */

static void conv_params(Ctx *ctx, ParamSet *ps, const char *name, int64_t d0, int64_t d1, int64_t k, int64_t nb,
                        Tensor **w, Tensor **b) {
  params_push(ps, "%s", name);
  *w = params_new(ctx, ps, "weight", SHAPE(d0, d1, k));
  *b = params_new(ctx, ps, "bias", SHAPE(nb));
  params_pop(ps);
}

Hifigan *hifigan_create(Ctx *ctx, const HifiganConfig *cfg, ParamSet *ps) {
  McmErr err;
  MCM_CHECK(hifigan_config_check(cfg, &err) == 0, "%s (check the configuration before hifigan_create)", err.msg);
  Hifigan *m = ctx_alloc_persistent_host(ctx, sizeof *m);
  m->cfg = *cfg;
  m->ps = ps;
  m->first_param = ps->n;
  const int M = cfg->model_in_dim, C0 = cfg->upsample_initial_channel, NK = cfg->n_kernels;
  conv_params(ctx, ps, "conv_pre", C0, M, HIFIGAN_CONV_K, C0, &m->conv_pre_w, &m->conv_pre_b);
  for (int i = 0; i < cfg->n_upsamples; i++) {
    char name[32];
    snprintf(name, sizeof name, "upsampler.%d", i);
    int cin = i ? stage_channels(cfg, i - 1) : C0, cout = stage_channels(cfg, i);
    conv_params(ctx, ps, name, cin, cout, cfg->upsample_kernel_sizes[i], cout, &m->up_w[i], &m->up_b[i]);
  }
  for (int i = 0; i < cfg->n_upsamples; i++)
    for (int j = 0; j < NK; j++) {
      HifiganResblock *r = &m->res[i * NK + j];
      int C = stage_channels(cfg, i);
      r->k = cfg->resblock_kernel_sizes[j];
      r->nd = cfg->n_dilations[j];
      params_push(ps, "resblocks.%d", i * NK + j);
      for (int n = 0; n < r->nd; n++) {
        char name[32];
        r->dilation[n] = cfg->resblock_dilation_sizes[j][n];
        snprintf(name, sizeof name, "convs1.%d", n);
        conv_params(ctx, ps, name, C, C, r->k, C, &r->convs1_w[n], &r->convs1_b[n]);
        snprintf(name, sizeof name, "convs2.%d", n);
        conv_params(ctx, ps, name, C, C, r->k, C, &r->convs2_w[n], &r->convs2_b[n]);
      }
      params_pop(ps);
    }
  conv_params(ctx, ps, "conv_post", 1, stage_channels(cfg, cfg->n_upsamples - 1), HIFIGAN_CONV_K, 1,
              &m->conv_post_w, &m->conv_post_b);
  bool trainable = ps->trainable;
  ps->trainable = false; /* buffers in the checkpoint, never trained */
  m->mean = params_new(ctx, ps, "mean", SHAPE(M));
  m->scale = params_new(ctx, ps, "scale", SHAPE(M));
  ps->trainable = trainable;
  tensor_fill(ctx, m->scale, 1.0f);
  m->n_params = ps->n - m->first_param;
  return m;
}

void hifigan_init_random(Ctx *ctx, Hifigan *m) {
  const HifiganConfig *c = &m->cfg;
  params_init_default(ctx, m->conv_pre_w, m->conv_pre_b);
  for (int i = 0; i < c->n_upsamples; i++) params_init_default(ctx, m->up_w[i], m->up_b[i]);
  for (int r = 0; r < c->n_upsamples * c->n_kernels; r++)
    for (int n = 0; n < m->res[r].nd; n++) {
      params_init_default(ctx, m->res[r].convs1_w[n], m->res[r].convs1_b[n]);
      params_init_default(ctx, m->res[r].convs2_w[n], m->res[r].convs2_b[n]);
    }
  params_init_default(ctx, m->conv_post_w, m->conv_post_b);
  tensor_fill(ctx, m->mean, 0.0f);
  tensor_fill(ctx, m->scale, 1.0f);
}

/* ---------------------------------------------------------------- loading */

/* The sizes a diffusers/transformers config.json states, against the model's, in this order
 * (the first disagreement is the one reported). */
static void check_config(ConfigCheck *cc, const HifiganConfig *c) {
  check_int(cc, "model_in_dim", c->model_in_dim);
  check_int(cc, "upsample_initial_channel", c->upsample_initial_channel);
  check_int_list(cc, "upsample_rates", c->upsample_rates, c->n_upsamples);
  check_int_list(cc, "upsample_kernel_sizes", c->upsample_kernel_sizes, c->n_upsamples);
  check_int_list(cc, "resblock_kernel_sizes", c->resblock_kernel_sizes, c->n_kernels);
  json_t *dil = json_array(); /* one list per resblock kernel */
  for (int j = 0; j < c->n_kernels; j++) {
    json_t *d = json_array();
    for (int n = 0; n < c->n_dilations[j]; n++) json_array_append_new(d, json_integer(c->resblock_dilation_sizes[j][n]));
    json_array_append_new(dil, d);
  }
  check_value(cc, "resblock_dilation_sizes", check_get(cc, "resblock_dilation_sizes"), dil);
  check_real(cc, "leaky_relu_slope", c->leaky_relu_slope);
  check_bool(cc, "normalize_before", c->normalize_before);
  check_int(cc, "sampling_rate", c->sampling_rate);
}

int hifigan_load(Ctx *ctx, Hifigan *m, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  json_t *config; /* none stated: the shapes are checked on load */
  int rc = weights_meta(tf, "vocoder", &config, err);
  if (rc == 0 && config) {
    ConfigCheck cc = config_check_begin(path, config, err);
    check_config(&cc, &m->cfg);
    rc = cc.rc;
  }
  json_decref(config);
  if (rc == 0) rc = params_load(ctx, m->ps, tf, "", false, err);
  tf_close(tf);
  return rc;
}

/* ---------------------------------------------------------------- forward */

/* HifiGanResidualBlock: x (B, C, L) -> (B, C, L); 'same' padding d·(k − 1)/2 per conv. */
/* In no-grad mode each step's result replaces the previous one at the scope's mark (the old
 * x is dead once the add has read it), so the block holds one x and one step's h's. */
static Tensor *resblock(Ctx *ctx, const HifiganResblock *r, Tensor *x, float slope) {
  ArenaMark scope = ctx_scope_begin(ctx);
  for (int n = 0; n < r->nd; n++) {
    int d = r->dilation[n];
    Tensor *h = op_leaky_relu(ctx, x, slope);                                   /* (B, C, L) */
    h = op_conv1d(ctx, h, r->convs1_w[n], r->convs1_b[n],                       /* (B, C, L) */
                  conv1d_args(1, d * (r->k - 1) / 2, d));
    h = op_leaky_relu(ctx, h, slope);                                           /* (B, C, L) */
    h = op_conv1d(ctx, h, r->convs2_w[n], r->convs2_b[n],                       /* (B, C, L) */
                  conv1d_args(1, (r->k - 1) / 2, 1));
    x = ctx_scope_end(ctx, scope, op_add(ctx, h, x));                           /* (B, C, L) */
  }
  return x;
}

/* Memory: in no-grad mode (inference) every dilation step, resblock and stage is an arena
 * scope that keeps only its output, so the peak is about ten stage-sized tensors (stage
 * input, its leaky_relu, the upsampled x, the running sum, a resblock's x, one dilation
 * step's five, the sum's update) instead of every intermediate of every stage; in grad
 * mode the scopes do nothing (see ctx_scope_end). */
Tensor *hifigan_forward(Ctx *ctx, Hifigan *m, Tensor *mel) {
  const HifiganConfig *c = &m->cfg;
  const int NK = c->n_kernels;
  const float slope = c->leaky_relu_slope;
  const Conv1dArgs k7 = conv1d_args(1, HIFIGAN_CONV_K / 2, 1);
  CHECK_SHAPE("hifigan_forward", mel, -1, -1, c->model_in_dim);
  const int64_t B = mel->shape[0];

  ArenaMark whole = ctx_scope_begin(ctx); /* each stage's output replaces its input here */
  Tensor *x = op_cast(ctx, mel, m->conv_pre_w->dtype); /* (B, T, M) in the weights' dtype (hifigan_cast) */
  if (c->normalize_before) x = op_div(ctx, op_sub(ctx, x, m->mean), m->scale);    /* (B, T, M) */
  x = op_transpose_last2(ctx, x);                                               /* (B, M, T) */
  x = op_conv1d(ctx, x, m->conv_pre_w, m->conv_pre_b, k7);                      /* (B, C0, T) */

  for (int i = 0; i < c->n_upsamples; i++) {
    int u = c->upsample_rates[i], k = c->upsample_kernel_sizes[i];
    x = op_leaky_relu(ctx, x, slope);                                           /* (B, C_{i-1}, L) */
    x = op_conv_transpose1d(ctx, x, m->up_w[i], m->up_b[i], u, (k - u) / 2, 0, 1); /* (B, C_i, L') */
    Tensor *sum = NULL;                                                         /* (B, C_i, L') */
    ArenaMark block = ctx_scope_begin(ctx); /* each new sum replaces the last one there */
    for (int j = 0; j < NK; j++) {
      Tensor *r = resblock(ctx, &m->res[i * NK + j], x, slope);                /* (B, C_i, L') */
      sum = ctx_scope_end(ctx, block, sum ? op_add(ctx, sum, r) : r);
    }
    x = NK > 1 ? op_scale(ctx, sum, 1.0f / (float)NK) : sum;                   /* (B, C_i, L') */
    x = ctx_scope_end(ctx, whole, x);
  }

  /* transformers calls leaky_relu without a slope here: torch's default 0.01 (as did the
   * original HiFi-GAN), not the config's. */
  x = op_leaky_relu(ctx, x, LEAKY_RELU_DEFAULT_SLOPE);                          /* (B, C_last, L) */
  x = op_conv1d(ctx, x, m->conv_post_w, m->conv_post_b, k7);                    /* (B, 1, L) */
  x = op_tanh(ctx, x);                                                          /* (B, 1, L) */
  x = op_cast(ctx, op_reshape(ctx, x, SHAPE(B, x->shape[2])), DT_F32);        /* (B, L) */
  return ctx_scope_end(ctx, whole, x);
}

void hifigan_cast(Ctx *ctx, Hifigan *m, DType dtype) { params_cast(ctx, m->ps, m->first_param, m->n_params, dtype); }
