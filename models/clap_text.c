/* CLAP text tower (see clap_text.h): configuration, parameters named like the checkpoint,
 * loading with a config cross-check, the forward pass written from ops, and prompt
 * embedding through the tokenizer. */
#include "clap_text.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#include "models/weights.h"

/* F.normalize's default eps (get_text_features calls it without one). */
#define CLAP_NORMALIZE_EPS 1e-12f

/* ---------------------------------------------------------------- configuration */

ClapTextConfig clap_text_config_musicldm(void) {
  ClapTextConfig c = {
      .vocab_size = 50265,
      .hidden_size = 768,
      .num_hidden_layers = 12,
      .num_attention_heads = 12,
      .intermediate_size = 3072,
      .max_position_embeddings = 514,
      .type_vocab_size = 1,
      .pad_token_id = 1,
      .projection_dim = 512,
      .layer_norm_eps = 1e-12f,
      .max_length = 512,
  };
  return c;
}

/* The longest token sequence the position table allows. */
static int max_tokens(const ClapTextConfig *c) { return c->max_position_embeddings - c->pad_token_id - 1; }

int clap_text_config_check(const ClapTextConfig *c, McmErr *err) {
  if (c->vocab_size < 1) return mcm_err(err, "clap_text: vocab_size %d must be >= 1", c->vocab_size);
  if (c->hidden_size < 1) return mcm_err(err, "clap_text: hidden_size %d must be >= 1", c->hidden_size);
  if (c->num_hidden_layers < 1)
    return mcm_err(err, "clap_text: num_hidden_layers %d must be >= 1", c->num_hidden_layers);
  if (c->num_attention_heads < 1 || c->hidden_size % c->num_attention_heads)
    return mcm_err(err, "clap_text: hidden_size %d is not a multiple of num_attention_heads %d", c->hidden_size,
                   c->num_attention_heads);
  if (c->intermediate_size < 1)
    return mcm_err(err, "clap_text: intermediate_size %d must be >= 1", c->intermediate_size);
  if (c->type_vocab_size < 1) return mcm_err(err, "clap_text: type_vocab_size %d must be >= 1", c->type_vocab_size);
  if (c->pad_token_id < 0 || c->pad_token_id >= c->vocab_size)
    return mcm_err(err, "clap_text: pad_token_id %d is not a token id (vocab_size %d)", c->pad_token_id,
                   c->vocab_size);
  if (max_tokens(c) < 2)
    return mcm_err(err,
                   "clap_text: max_position_embeddings %d leaves no room for <s> </s> (positions start at "
                   "pad_token_id + 1 = %d)",
                   c->max_position_embeddings, c->pad_token_id + 1);
  if (c->max_length < 2 || c->max_length > max_tokens(c))
    return mcm_err(err,
                   "clap_text: max_length %d must be 2..%d (max_position_embeddings %d - pad_token_id %d - 1: "
                   "RoBERTa's positions start at pad_token_id + 1)",
                   c->max_length, max_tokens(c), c->max_position_embeddings, c->pad_token_id);
  if (c->projection_dim < 1) return mcm_err(err, "clap_text: projection_dim %d must be >= 1", c->projection_dim);
  if (!(c->layer_norm_eps > 0) || !isfinite(c->layer_norm_eps))
    return mcm_err(err, "clap_text: layer_norm_eps %g must be positive and finite", (double)c->layer_norm_eps);
  return 0;
}

/* ---------------------------------------------------------------- parameters */

static void linear_params(Ctx *ctx, ParamSet *ps, const char *name, int64_t out, int64_t in, Tensor **w, Tensor **b) {
  params_push(ps, "%s", name);
  *w = params_new(ctx, ps, "weight", SHAPE(out, in));
  *b = params_new(ctx, ps, "bias", SHAPE(out));
  params_pop(ps);
}

static void layer_norm_params(Ctx *ctx, ParamSet *ps, const char *name, int64_t D, Tensor **w, Tensor **b) {
  params_push(ps, "%s", name);
  *w = params_new(ctx, ps, "weight", SHAPE(D));
  *b = params_new(ctx, ps, "bias", SHAPE(D));
  params_pop(ps);
  tensor_fill(ctx, *w, 1.0f);
}

ClapText *clap_text_create(Ctx *ctx, const ClapTextConfig *cfg, ParamSet *ps) {
  McmErr err;
  MCM_CHECK(clap_text_config_check(cfg, &err) == 0, "%s (check the configuration before clap_text_create)", err.msg);
  ClapText *m = ctx_alloc_persistent_host(ctx, sizeof *m);
  m->cfg = *cfg;
  m->ps = ps;
  const int D = cfg->hidden_size, I = cfg->intermediate_size, P = cfg->projection_dim;

  params_push(ps, "text_model");
  params_push(ps, "embeddings");
  m->word_emb = params_new(ctx, ps, "word_embeddings.weight", SHAPE(cfg->vocab_size, D));
  m->pos_emb = params_new(ctx, ps, "position_embeddings.weight", SHAPE(cfg->max_position_embeddings, D));
  m->type_emb = params_new(ctx, ps, "token_type_embeddings.weight", SHAPE(cfg->type_vocab_size, D));
  layer_norm_params(ctx, ps, "LayerNorm", D, &m->emb_ln_w, &m->emb_ln_b);
  params_pop(ps);

  m->layers = ctx_alloc_persistent_host(ctx, (size_t)cfg->num_hidden_layers * sizeof *m->layers);
  for (int i = 0; i < cfg->num_hidden_layers; i++) {
    ClapTextLayer *l = &m->layers[i];
    params_push(ps, "encoder.layer.%d", i);
    linear_params(ctx, ps, "attention.self.query", D, D, &l->query_w, &l->query_b);
    linear_params(ctx, ps, "attention.self.key", D, D, &l->key_w, &l->key_b);
    linear_params(ctx, ps, "attention.self.value", D, D, &l->value_w, &l->value_b);
    linear_params(ctx, ps, "attention.output.dense", D, D, &l->attn_out_w, &l->attn_out_b);
    layer_norm_params(ctx, ps, "attention.output.LayerNorm", D, &l->attn_ln_w, &l->attn_ln_b);
    linear_params(ctx, ps, "intermediate.dense", I, D, &l->inter_w, &l->inter_b);
    linear_params(ctx, ps, "output.dense", D, I, &l->out_w, &l->out_b);
    layer_norm_params(ctx, ps, "output.LayerNorm", D, &l->out_ln_w, &l->out_ln_b);
    params_pop(ps);
  }
  linear_params(ctx, ps, "pooler.dense", D, D, &m->pooler_w, &m->pooler_b);
  params_pop(ps);

  params_push(ps, "text_projection");
  linear_params(ctx, ps, "linear1", P, D, &m->proj1_w, &m->proj1_b);
  linear_params(ctx, ps, "linear2", P, P, &m->proj2_w, &m->proj2_b);
  params_pop(ps);
  return m;
}

static void init_linear(Ctx *ctx, Tensor *w, Tensor *b, float std) {
  params_init_normal(ctx, w, std);
  tensor_fill(ctx, b, 0.0f);
}

static void init_layer_norm(Ctx *ctx, Tensor *w, Tensor *b) {
  tensor_fill(ctx, w, 1.0f);
  tensor_fill(ctx, b, 0.0f);
}

void clap_text_init_random(Ctx *ctx, ClapText *m) {
  const ClapTextConfig *c = &m->cfg;
  /* ClapPreTrainedModel._init_weights: linear std = D^-1/2 · (2L)^-1/2 (initializer_factor 1). */
  const float std = 1.0f / sqrtf((float)c->hidden_size * 2.0f * (float)c->num_hidden_layers);
  params_init_normal(ctx, m->word_emb, 0.02f);
  params_init_normal(ctx, m->pos_emb, 0.02f);
  params_init_normal(ctx, m->type_emb, 0.02f);
  init_layer_norm(ctx, m->emb_ln_w, m->emb_ln_b);
  for (int i = 0; i < c->num_hidden_layers; i++) {
    ClapTextLayer *l = &m->layers[i];
    init_linear(ctx, l->query_w, l->query_b, std);
    init_linear(ctx, l->key_w, l->key_b, std);
    init_linear(ctx, l->value_w, l->value_b, std);
    init_linear(ctx, l->attn_out_w, l->attn_out_b, std);
    init_layer_norm(ctx, l->attn_ln_w, l->attn_ln_b);
    init_linear(ctx, l->inter_w, l->inter_b, std);
    init_linear(ctx, l->out_w, l->out_b, std);
    init_layer_norm(ctx, l->out_ln_w, l->out_ln_b);
  }
  init_linear(ctx, m->pooler_w, m->pooler_b, std);
  init_linear(ctx, m->proj1_w, m->proj1_b, std);
  init_linear(ctx, m->proj2_w, m->proj2_b, std);
}

/* ---------------------------------------------------------------- loading */

/* What the file's config must say where it says anything. Sizes are looked up in
 * text_config when the config is a ClapConfig (whose root hidden_size / num_hidden_layers
 * describe both towers), else in the root (a ClapTextConfig); projection_dim and
 * projection_hidden_act fall back to the root, where ClapConfig keeps them. */
static ConfigCheck *at(ConfigCheck *cc, json_t *text, const char *key) {
  bool root = !text || (!json_object_get(text, key) && !strncmp(key, "projection_", 11));
  cc->section = root ? cc->root : text;
  cc->prefix = root ? "" : "text_config.";
  return cc;
}

static void check_config(ConfigCheck *cc, const ClapTextConfig *c) {
  json_t *text = json_object_get(cc->root, "text_config");
  if (!json_is_object(text)) text = NULL;
  check_int(at(cc, text, "vocab_size"), "vocab_size", c->vocab_size);
  check_int(at(cc, text, "hidden_size"), "hidden_size", c->hidden_size);
  check_int(at(cc, text, "num_hidden_layers"), "num_hidden_layers", c->num_hidden_layers);
  check_int(at(cc, text, "num_attention_heads"), "num_attention_heads", c->num_attention_heads);
  check_int(at(cc, text, "intermediate_size"), "intermediate_size", c->intermediate_size);
  check_int(at(cc, text, "max_position_embeddings"), "max_position_embeddings", c->max_position_embeddings);
  check_int(at(cc, text, "type_vocab_size"), "type_vocab_size", c->type_vocab_size);
  check_int(at(cc, text, "pad_token_id"), "pad_token_id", c->pad_token_id);
  check_int(at(cc, text, "projection_dim"), "projection_dim", c->projection_dim);
  check_real(at(cc, text, "layer_norm_eps"), "layer_norm_eps", c->layer_norm_eps);
  check_str(at(cc, text, "hidden_act"), "hidden_act", "gelu"); /* exact erf GELU */
  check_str(at(cc, text, "projection_hidden_act"), "projection_hidden_act", "relu");
  check_str(at(cc, text, "position_embedding_type"), "position_embedding_type", "absolute");
}

/* The rest of a ClapModel, which the text tower does not use. */
static bool unused_clap_tensor(const char *name) {
  return !strncmp(name, "audio_model.", 12) || !strncmp(name, "audio_projection.", 17) ||
         !strcmp(name, "logit_scale_a") || !strcmp(name, "logit_scale_t");
}

/* Every tensor in the file must be a parameter or one of the unused ClapModel tensors. */
static int check_extra_tensors(TensorFile *tf, const ParamSet *ps, McmErr *err) {
  char **names = NULL;
  int n = 0;
  if (tf_names(tf, &names, &n, err)) return -1;
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++)
    if (!unused_clap_tensor(names[i]) && !params_find(ps, names[i]))
      rc = mcm_err(err, "%s: tensor '%s' is not a parameter of this model (does the configuration match the weights?)",
                   tf_path(tf), names[i]);
  tf_free_names(names, n);
  return rc;
}

int clap_text_load(Ctx *ctx, ClapText *m, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  json_t *config; /* none stated: the shapes are checked on load */
  int rc = weights_meta(tf, "text_encoder", &config, err);
  if (rc == 0 && config) {
    ConfigCheck cc = config_check_begin(path, config, err);
    check_config(&cc, &m->cfg);
    rc = cc.rc;
  }
  json_decref(config);
  if (rc == 0) rc = params_load(ctx, m->ps, tf, "", true, err);
  if (rc == 0) rc = check_extra_tensors(tf, m->ps, err);
  tf_close(tf);
  return rc;
}

/* ---------------------------------------------------------------- forward */

/* RoBERTa's position ids for right-padded rows: pad + 1 + t, t < T (see clap_text.h). */
static Tensor *position_ids(Ctx *ctx, const ClapTextConfig *c, int64_t T) {
  int32_t *host = ctx_alloc_host(ctx, (size_t)T * sizeof(int32_t));
  for (int64_t t = 0; t < T; t++) host[t] = (int32_t)(c->pad_token_id + 1 + t);
  Tensor *pos = tensor_new(ctx, DT_I32, SHAPE(T));
  tensor_from_host_i32(ctx, pos, host);
  return pos;
}

/* encoder.layer.i (post-norm): h (B, T, D), mask (B, T) -> (B, T, D). */
static Tensor *encoder_layer(Ctx *ctx, const ClapTextLayer *l, Tensor *h, Tensor *mask, int NH, float eps) {
  Tensor *q = op_linear(ctx, h, l->query_w, l->query_b);                      /* (B, T, D) */
  Tensor *k = op_linear(ctx, h, l->key_w, l->key_b);                          /* (B, T, D) */
  Tensor *v = op_linear(ctx, h, l->value_w, l->value_b);                      /* (B, T, D) */
  Tensor *a = op_attention(ctx, q, k, v, NH, mask);                           /* (B, T, D) */
  a = op_linear(ctx, a, l->attn_out_w, l->attn_out_b);                        /* (B, T, D) */
  a = op_layer_norm(ctx, op_add(ctx, a, h), eps, l->attn_ln_w, l->attn_ln_b); /* (B, T, D) */
  Tensor *f = op_gelu(ctx, op_linear(ctx, a, l->inter_w, l->inter_b));        /* (B, T, I) */
  f = op_linear(ctx, f, l->out_w, l->out_b);                                  /* (B, T, D) */
  return op_layer_norm(ctx, op_add(ctx, f, a), eps, l->out_ln_w, l->out_ln_b); /* (B, T, D) */
}

Tensor *clap_text_forward(Ctx *ctx, ClapText *m, Tensor *ids, Tensor *mask) {
  const ClapTextConfig *c = &m->cfg;
  const float eps = c->layer_norm_eps;
  CHECK_DTYPE("clap_text_forward", ids, DT_I32);
  CHECK_SHAPE("clap_text_forward", ids, -1, -1);
  const int64_t B = ids->shape[0], T = ids->shape[1], D = c->hidden_size;
  CHECK_DTYPE("clap_text_forward", mask, DT_F32);
  CHECK_SHAPE("clap_text_forward", mask, B, T);
  MCM_CHECK(T >= 1 && T <= max_tokens(c),
            "clap_text_forward: %lld tokens, but the position table holds %d (max_position_embeddings %d - "
            "pad_token_id %d - 1)",
            (long long)T, max_tokens(c), c->max_position_embeddings, c->pad_token_id);

  /* text_model.embeddings */
  Tensor *h = op_embedding(ctx, m->word_emb, ids);                          /* (B, T, D) */
  h = op_add(ctx, h, op_slice(ctx, m->type_emb, 0, 0, 1));                  /* + (1, D): token type 0 */
  h = op_add(ctx, h, op_embedding(ctx, m->pos_emb, position_ids(ctx, c, T))); /* + (T, D) */
  h = op_layer_norm(ctx, h, eps, m->emb_ln_w, m->emb_ln_b);                 /* (B, T, D) */

  /* text_model.encoder */
  for (int i = 0; i < c->num_hidden_layers; i++)
    h = encoder_layer(ctx, &m->layers[i], h, mask, c->num_attention_heads, eps); /* (B, T, D) */

  /* text_model.pooler: the first token (<s>) */
  Tensor *x = op_reshape(ctx, op_slice(ctx, h, 1, 0, 1), SHAPE(B, D));      /* (B, D) */
  x = op_tanh(ctx, op_linear(ctx, x, m->pooler_w, m->pooler_b));            /* (B, D) pooler_output */

  /* text_projection, then normalise */
  x = op_relu(ctx, op_linear(ctx, x, m->proj1_w, m->proj1_b));              /* (B, P) */
  x = op_linear(ctx, x, m->proj2_w, m->proj2_b);                            /* (B, P) */
  return op_l2_normalize(ctx, x, CLAP_NORMALIZE_EPS);                       /* (B, P) */
}

/* ---------------------------------------------------------------- prompts */

Tensor *clap_text_embed(Ctx *ctx, ClapText *m, const Tokenizer *tok, const char *const *prompts, int n, McmErr *err) {
  const ClapTextConfig *c = &m->cfg;
  if (n < 1) {
    mcm_err(err, "clap_text_embed: no prompts");
    return NULL;
  }
  if (tokenizer_vocab_size(tok) > c->vocab_size) {
    mcm_err(err, "clap_text_embed: the tokenizer has %d ids but the text tower only %d (vocab_size): they do not belong "
                 "together",
            tokenizer_vocab_size(tok), c->vocab_size);
    return NULL;
  }
  if (tokenizer_specials(tok).pad != c->pad_token_id) {
    mcm_err(err, "clap_text_embed: the tokenizer's <pad> is id %d but the text tower's pad_token_id is %d",
            tokenizer_specials(tok).pad, c->pad_token_id);
    return NULL;
  }
  const int L = c->max_length;
  int32_t *ids = MALLOC_CHECK((size_t)n * L * sizeof(int32_t));
  int32_t *mask = MALLOC_CHECK((size_t)n * L * sizeof(int32_t));
  int T = 2;
  for (int i = 0; i < n; i++) {
    McmErr why;
    int k = tokenizer_encode(tok, prompts[i], L, ids + (size_t)i * L, mask + (size_t)i * L, &why);
    if (k < 0) {
      mcm_err(err, "prompt %d: %s", i + 1, why.msg);
      free(ids);
      free(mask);
      return NULL;
    }
    if (k > T) T = k;
  }
  /* Keep the first T columns: padding beyond the longest prompt changes nothing. */
  int32_t *ids_t = ctx_alloc_host(ctx, (size_t)n * T * sizeof(int32_t));
  float *mask_t = ctx_alloc_host(ctx, (size_t)n * T * sizeof(float));
  for (int i = 0; i < n; i++)
    for (int t = 0; t < T; t++) {
      ids_t[(size_t)i * T + t] = ids[(size_t)i * L + t];
      mask_t[(size_t)i * T + t] = (float)mask[(size_t)i * L + t];
    }
  free(ids);
  free(mask);
  Tensor *ids_dev = tensor_new(ctx, DT_I32, SHAPE(n, T));  /* (n, T) */
  Tensor *mask_dev = tensor_new(ctx, DT_F32, SHAPE(n, T)); /* (n, T) */
  tensor_from_host_i32(ctx, ids_dev, ids_t);
  tensor_from_host_f32(ctx, mask_dev, mask_t);
  return clap_text_forward(ctx, m, ids_dev, mask_dev); /* (n, P) */
}
