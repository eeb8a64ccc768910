/* HiFi-GAN generator (see hifigan.h): configuration, parameters named like the checkpoint,
 * loading with a config cross-check, and the forward pass written from ops. */
#include "hifigan.h"

#include <jansson.h>
#include <math.h>

#include "kernels/math.h" /* op_div (until kernels/ops.h includes it) */

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

/* Numbers equal up to float rounding (the config is fp64 text, the struct holds floats). */
static bool json_same(const json_t *a, const json_t *b) {
  if (json_is_number(a) && json_is_number(b)) {
    double x = json_number_value(a), y = json_number_value(b);
    return fabs(x - y) <= 1e-6 * fmax(1.0, fabs(y));
  }
  if (json_is_array(a) && json_is_array(b)) {
    if (json_array_size(a) != json_array_size(b)) return false;
    for (size_t i = 0; i < json_array_size(a); i++)
      if (!json_same(json_array_get(a, i), json_array_get(b, i))) return false;
    return true;
  }
  return json_equal(a, b);
}

static json_t *json_ints(const int *v, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
  return a;
}

/* The sizes a diffusers/transformers config.json states, as the model has them. */
static json_t *config_as_json(const HifiganConfig *c) {
  json_t *o = json_object();
  json_object_set_new(o, "model_in_dim", json_integer(c->model_in_dim));
  json_object_set_new(o, "upsample_initial_channel", json_integer(c->upsample_initial_channel));
  json_object_set_new(o, "upsample_rates", json_ints(c->upsample_rates, c->n_upsamples));
  json_object_set_new(o, "upsample_kernel_sizes", json_ints(c->upsample_kernel_sizes, c->n_upsamples));
  json_object_set_new(o, "resblock_kernel_sizes", json_ints(c->resblock_kernel_sizes, c->n_kernels));
  json_t *dil = json_array();
  for (int j = 0; j < c->n_kernels; j++)
    json_array_append_new(dil, json_ints(c->resblock_dilation_sizes[j], c->n_dilations[j]));
  json_object_set_new(o, "resblock_dilation_sizes", dil);
  json_object_set_new(o, "leaky_relu_slope", json_real(c->leaky_relu_slope));
  json_object_set_new(o, "normalize_before", json_boolean(c->normalize_before));
  json_object_set_new(o, "sampling_rate", json_integer(c->sampling_rate));
  return o;
}

/* Compares the file's `config` attribute (if any) with the model's configuration. */
static int check_file_config(TensorFile *tf, const HifiganConfig *c, McmErr *err) {
  char *text = NULL;
  McmErr ignored;
  if (tf_get_attr(tf, "config", &text, &ignored)) return 0; /* no config stated: shapes are checked on load */
  json_error_t jerr;
  json_t *file = json_loads(text, 0, &jerr);
  free(text);
  if (!file)
    return mcm_err(err, "%s: its config attribute is not JSON (line %d: %s)", tf_path(tf), jerr.line, jerr.text);
  if (!json_is_object(file)) {
    json_decref(file);
    return mcm_err(err, "%s: its config attribute is not a JSON object", tf_path(tf));
  }
  /* Checked in this order, so the first disagreement is the one reported. */
  static const char *const keys[] = {"model_in_dim",          "upsample_initial_channel", "upsample_rates",
                                     "upsample_kernel_sizes", "resblock_kernel_sizes",    "resblock_dilation_sizes",
                                     "leaky_relu_slope",      "normalize_before",         "sampling_rate"};
  json_t *model = config_as_json(c);
  int rc = 0;
  for (size_t i = 0; i < sizeof keys / sizeof keys[0] && rc == 0; i++) {
    json_t *got = json_object_get(file, keys[i]), *want = json_object_get(model, keys[i]);
    if (!got || json_same(got, want)) continue;
    char *gs = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(7));
    char *ws = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(7));
    rc = mcm_err(err,
                 "%s: the weights' config has %s = %s but the model is configured with %s (hint: use the "
                 "configuration these weights were made for)",
                 tf_path(tf), keys[i], gs ? gs : "?", ws ? ws : "?");
    free(gs);
    free(ws);
  }
  json_decref(model);
  json_decref(file);
  return rc;
}

int hifigan_load(Ctx *ctx, Hifigan *m, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  int rc = check_file_config(tf, &m->cfg, err);
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
  Tensor *x = mel;                                                              /* (B, T, M) */
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
  return ctx_scope_end(ctx, whole, op_reshape(ctx, x, SHAPE(B, x->shape[2]))); /* (B, L) */
}
