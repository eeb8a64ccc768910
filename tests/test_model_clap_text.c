/* CLAP text tower (models/clap_text.c) against transformers itself with random weights at
 * small configurations (tests/fixtures/model_clap_text.py):
 *   a: a whole ClapModel's weights (audio keys skipped), get_text_features on right-padded
 *      ids (3 rows, lengths 12, 7, 2): the output and the gradients of sum(out ⊙ R) with
 *      respect to every parameter;
 *   e: ClapTextModelWithProjection + normalize on prompts tokenized by transformers'
 *      RobertaTokenizer (padding="max_length"), against clap_text_embed on the same prompts
 *      with mcm's tokenizer (padding to the longest prompt);
 * plus no-grad and frozen modes, the released configuration's sizes, bad configurations,
 * bad weight files and bad prompts.
 *
 * Tolerance 1e-4 relative L2 (the project's bar for models in fp32): the two sides sum in
 * different orders through a few layers, ~1e-7 measured; a wrong position offset, mask,
 * pooled token or eps costs > 1e-2. */
#include <string.h>

#include "fixture.h"
#include "models/clap_text.h"
#include "test.h"

#define FIX "tests/fixtures/model_clap_text.h5"
#define WEIGHTS_A "tests/fixtures/model_clap_text_weights_a.h5"
#define WEIGHTS_E "tests/fixtures/model_clap_text_weights_e.h5"
#define TOK_DIR "tests/fixtures/tokenizer/"
static const double TOL = 1e-4;

/* The fixture's two configurations (see the script). */
static ClapTextConfig fixture_config(char c) {
  ClapTextConfig cfg = {
      .vocab_size = 100,
      .hidden_size = 32,
      .num_hidden_layers = 2,
      .num_attention_heads = 4,
      .intermediate_size = 64,
      .max_position_embeddings = 40,
      .type_vocab_size = 1,
      .pad_token_id = 1,
      .projection_dim = 16,
      .layer_norm_eps = 1e-12f,
      .max_length = 16,
  };
  if (c == 'e') {
    cfg.vocab_size = 1911;
    cfg.hidden_size = 16;
    cfg.num_hidden_layers = 1;
    cfg.num_attention_heads = 2;
    cfg.intermediate_size = 32;
    cfg.projection_dim = 8;
  }
  return cfg;
}

static ClapText *load_fixture_model(Ctx *ctx, ParamSet *ps, char c) {
  ClapTextConfig cfg = fixture_config(c);
  params_init(ps, "");
  ClapText *m = clap_text_create(ctx, &cfg, ps);
  McmErr err;
  ASSERT(clap_text_load(ctx, m, c == 'a' ? WEIGHTS_A : WEIGHTS_E, &err) == 0, "clap_text_load: %s", err.msg);
  return m;
}

/* The fixture's ids (stored as floats) as an int32 tensor. */
static Tensor *fixture_ids(Ctx *ctx, Fixture *fx, const char *name) {
  Tensor *f = fixture_tensor(ctx, fx, name, false);
  int64_t n;
  float *v = fixture_values(fx, name, &n);
  int32_t *ids = MALLOC_CHECK((size_t)n * sizeof(int32_t));
  for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)v[i];
  Tensor *t = tensor_new(ctx, DT_I32, f->ndim, f->shape);
  tensor_from_host_i32(ctx, t, ids);
  free(ids);
  free(v);
  return t;
}

/* True when t received no gradient: none allocated, or all zeros. */
static bool no_grad(Ctx *ctx, const Tensor *t) {
  if (!t->grad) return true;
  float *h = MALLOC_CHECK((size_t)t->grad->numel * sizeof(float));
  tensor_to_host_f32(ctx, t->grad, h);
  bool zero = true;
  for (int64_t i = 0; i < t->grad->numel; i++) zero &= h[i] == 0.0f;
  free(h);
  return zero;
}

/* ‖a‖₂ of n values. */
static double l2(const float *a, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)a[i] * a[i];
  return sqrt(s);
}

/* The key biases' exact gradient is zero (they shift every score of a query row by the same
 * q·b, which softmax ignores): both sides hold rounding noise (~1e-8), whose relative error
 * means nothing. Their difference is measured against the key weight's gradient instead. */
static double expect_key_bias_grad(Ctx *ctx, Fixture *fx, const Tensor *bias, const char *key) {
  char wkey[PARAMS_NAME_MAX + 16];
  snprintf(wkey, sizeof wkey, "%.*sweight", (int)(strlen(key) - strlen("bias")), key);
  int64_t n, nw;
  float *ref = fixture_values(fx, key, &n), *ref_w = fixture_values(fx, wkey, &nw);
  ASSERT(n == bias->numel, "%s: %lld values in the fixture", key, (long long)n);
  float *got = MALLOC_CHECK((size_t)n * sizeof(float));
  tensor_to_host_f32(ctx, bias->grad, got);
  for (int64_t i = 0; i < n; i++) got[i] -= ref[i];
  double err = l2(got, n) / l2(ref_w, nw);
  EXPECT(err <= TOL, "%s: difference %.3g of the key weight gradient's norm > %g", key, err, TOL);
  free(ref);
  free(ref_w);
  free(got);
  return err;
}

/* Case a: output, then every parameter's gradient. */
TEST(model_clap_text_fixture) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  ClapText *m = load_fixture_model(ctx, &ps, 'a');
  Fixture *fx = fixture_open(FIX);
  Tensor *ids = fixture_ids(ctx, fx, "a/ids");                   /* (3, 12) */
  Tensor *mask = fixture_tensor(ctx, fx, "a/mask", false);       /* (3, 12) */
  Tensor *out = clap_text_forward(ctx, m, ids, mask);            /* (3, 16) */
  EXPECT(out->ndim == 2 && out->shape[0] == 3 && out->shape[1] == 16, "out %s", TENSOR_SHAPE_STR(out));
  double worst_out = fixture_expect(ctx, fx, "a/out", out, TOL), worst_grad = 0, worst_key_bias = 0;
  backward_from(ctx, out, fixture_tensor(ctx, fx, "a/R", false));
  char key[PARAMS_NAME_MAX + 16];
  for (int i = 0; i < ps.n; i++) {
    snprintf(key, sizeof key, "a/grad/%s", ps.p[i]->name);
    ASSERT(ps.p[i]->grad, "%s received no gradient", ps.p[i]->name);
    if (strstr(key, "attention.self.key.bias"))
      worst_key_bias = fmax(worst_key_bias, expect_key_bias_grad(ctx, fx, ps.p[i], key));
    else
      worst_grad = fmax(worst_grad, fixture_expect(ctx, fx, key, ps.p[i]->grad, TOL));
  }
  /* ... and the fixture holds no parameter gradient the model lacks. */
  char **names;
  int n, in_file = 0;
  McmErr err;
  ASSERT(tf_names(fx, &names, &n, &err) == 0, "%s", err.msg);
  for (int i = 0; i < n; i++) in_file += !strncmp(names[i], "a/grad/", 7);
  tf_free_names(names, n);
  EXPECT(in_file == ps.n && ps.n == 43, "%d parameter gradients in the fixture, %d parameters", in_file, ps.n);
  printf("    %d parameters; worst relative L2 error: output %.3g, gradients %.3g (key biases %.3g)\n", ps.n,
         worst_out, worst_grad, worst_key_bias);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* No-grad mode (the frozen conditioner): same output, nothing on the tape. */
TEST(model_clap_text_nograd) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  ClapText *m = load_fixture_model(ctx, &ps, 'a');
  Fixture *fx = fixture_open(FIX);
  bool was = ctx_set_grad(ctx, false);
  Tensor *out = clap_text_forward(ctx, m, fixture_ids(ctx, fx, "a/ids"), fixture_tensor(ctx, fx, "a/mask", false));
  EXPECT(ctx->tape.n == 0, "%d tape nodes in no-grad mode", ctx->tape.n);
  EXPECT(!out->requires_grad, "the output requires a gradient in no-grad mode");
  fixture_expect(ctx, fx, "a/out", out, TOL);
  ctx_set_grad(ctx, was);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Frozen copy in grad mode: the forward runs, no parameter gets a gradient. */
TEST(model_clap_text_frozen) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  ClapText *m = load_fixture_model(ctx, &ps, 'a');
  params_set_trainable(ctx, &ps, false);
  Fixture *fx = fixture_open(FIX);
  Tensor *out = clap_text_forward(ctx, m, fixture_ids(ctx, fx, "a/ids"), fixture_tensor(ctx, fx, "a/mask", false));
  fixture_expect(ctx, fx, "a/out", out, TOL);
  EXPECT(!out->requires_grad && ctx->tape.n == 0, "a frozen tower recorded %d tape nodes", ctx->tape.n);
  for (int i = 0; i < ps.n; i++) EXPECT(no_grad(ctx, ps.p[i]), "frozen %s received a gradient", ps.p[i]->name);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Padding length and padded ids change nothing: the fixture rows padded further (with
 * arbitrary ids under mask 0) give the same embeddings. */
TEST(model_clap_text_padding_invariance) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  ClapText *m = load_fixture_model(ctx, &ps, 'a');
  Fixture *fx = fixture_open(FIX);
  int64_t n;
  float *idv = fixture_values(fx, "a/ids", &n), *mv = fixture_values(fx, "a/mask", &n);
  enum { B = 3, T = 12, T2 = 20 };
  int32_t ids[B * T2];
  float mask[B * T2];
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T2; t++) {
      bool in = t < T && mv[b * T + t] != 0;
      ids[b * T2 + t] = in ? (int32_t)idv[b * T + t] : 5 + (b * 7 + t) % 90;
      mask[b * T2 + t] = in ? 1.0f : 0.0f;
    }
  free(idv);
  free(mv);
  Tensor *id = tensor_new(ctx, DT_I32, SHAPE(B, T2)), *mk = tensor_new(ctx, DT_F32, SHAPE(B, T2));
  tensor_from_host_i32(ctx, id, ids);
  tensor_from_host_f32(ctx, mk, mask);
  fixture_expect(ctx, fx, "a/out", clap_text_forward(ctx, m, id, mk), TOL);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* The fixture's prompts (tests/fixtures/model_clap_text.py PROMPTS). */
static const char *const PROMPTS[] = {
    "",
    "a calm piano melody",
    "Upbeat techno with heavy bass, 128 BPM!",
    "a very long description of a slow jazz ballad with brushed drums, upright bass and a muted "
    "trumpet that goes on well past the sixteen tokens this tokenizer keeps",
};
#define N_PROMPTS (int)(sizeof PROMPTS / sizeof PROMPTS[0])

static Tokenizer *test_tokenizer(void) {
  McmErr err;
  Tokenizer *tok = tokenizer_load(TOK_DIR "vocab.json", TOK_DIR "merges.txt", &err);
  ASSERT(tok, "%s", err.msg);
  return tok;
}

/* Case e: prompts -> embeddings end to end, against RobertaTokenizer + transformers; and the
 * same through clap_text_forward on the fixture's max_length-padded ids. */
TEST(model_clap_text_embed) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  ClapText *m = load_fixture_model(ctx, &ps, 'e');
  Tokenizer *tok = test_tokenizer();
  Fixture *fx = fixture_open(FIX);
  McmErr err;
  Tensor *out = clap_text_embed(ctx, m, tok, PROMPTS, N_PROMPTS, &err); /* (4, 8) */
  ASSERT(out, "clap_text_embed: %s", err.msg);
  double e1 = fixture_expect(ctx, fx, "e/out", out, TOL);
  double e2 = fixture_expect(ctx, fx, "e/out",
                             clap_text_forward(ctx, m, fixture_ids(ctx, fx, "e/ids"),
                                               fixture_tensor(ctx, fx, "e/mask", false)),
                             TOL);
  /* One prompt alone (the unconditional "") gives its row of the batch. */
  Tensor *uncond = clap_text_embed(ctx, m, tok, PROMPTS, 1, &err);
  ASSERT(uncond, "%s", err.msg);
  float all[N_PROMPTS * 8], one[8];
  tensor_to_host_f32(ctx, out, all);
  tensor_to_host_f32(ctx, uncond, one);
  for (int i = 0; i < 8; i++) EXPECT_NEAR(one[i], all[i], 1e-6);
  printf("    worst relative L2 error: embed %.3g, forward on padded ids %.3g\n", e1, e2);
  tokenizer_free(tok);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

static void expect_embed_error(ClapTextConfig cfg, const char *const *prompts, int n, const char *what) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  ClapText *m = clap_text_create(ctx, &cfg, &ps);
  Tokenizer *tok = test_tokenizer();
  McmErr err = {{0}};
  EXPECT(!clap_text_embed(ctx, m, tok, prompts, n, &err), "embedded, expected an error about '%s'", what);
  EXPECT_STR_CONTAINS(err.msg, what);
  EXPECT(!strchr(err.msg, '\n'), "not one line: %s", err.msg);
  tokenizer_free(tok);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(model_clap_text_embed_bad_input) {
  ClapTextConfig e = fixture_config('e');
  const char *bad[] = {"fine", "caf\xc3"}; /* truncated UTF-8 */
  expect_embed_error(e, bad, 2, "prompt 2: ");
  expect_embed_error(e, PROMPTS, 0, "no prompts");
  expect_embed_error(fixture_config('a'), PROMPTS, 1, "the tokenizer has 1911 ids but the text tower only 100");
  ClapTextConfig c = e;
  c.pad_token_id = 0;
  expect_embed_error(c, PROMPTS, 1, "the tokenizer's <pad> is id 1 but the text tower's pad_token_id is 0");
}

/* The released tower: RoBERTa-base sizes and parameter count; random init is reproducible
 * and gives unit vectors. */
TEST(model_clap_text_musicldm_config) {
  ClapTextConfig cfg = clap_text_config_musicldm();
  McmErr err;
  ASSERT(clap_text_config_check(&cfg, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  clap_text_create(ctx, &cfg, &ps);
  /* RoBERTa-base with pooler 124,645,632 + text_projection 656,384 (musicldm.md). */
  EXPECT(ps.n == 5 + 16 * 12 + 2 + 4 && params_count(&ps) == 124645632 + 656384, "%d tensors, %lld parameters",
         ps.n, (long long)params_count(&ps));
  EXPECT(params_find(&ps, "text_model.encoder.layer.11.attention.self.query.bias") &&
             params_find(&ps, "text_model.embeddings.position_embeddings.weight") &&
             params_find(&ps, "text_projection.linear2.weight"),
         "checkpoint names missing");
  params_free(&ps);
  ctx_destroy(ctx);

  ClapTextConfig small = fixture_config('a');
  float first[2];
  for (int run = 0; run < 2; run++) {
    ctx = ctx_create_cpu(7);
    params_init(&ps, "");
    ClapText *m = clap_text_create(ctx, &small, &ps);
    clap_text_init_random(ctx, m);
    Tensor *ids = tensor_new(ctx, DT_I32, SHAPE(2, 4)), *mask = tensor_new(ctx, DT_F32, SHAPE(2, 4));
    tensor_from_host_i32(ctx, ids, (int32_t[]){0, 17, 42, 2, 0, 2, 1, 1});
    tensor_from_host_f32(ctx, mask, (float[]){1, 1, 1, 1, 1, 1, 0, 0});
    Tensor *out = clap_text_forward(ctx, m, ids, mask);
    float h[2 * 16];
    tensor_to_host_f32(ctx, out, h);
    double s = 0;
    for (int b = 0; b < 2; b++) {
      double norm = 0;
      for (int i = 0; i < 16; i++) norm += (double)h[b * 16 + i] * h[b * 16 + i];
      EXPECT_NEAR(norm, 1.0, 1e-5);
    }
    for (int i = 0; i < 32; i++) s += h[i] * (i + 1);
    first[run] = (float)s;
    params_free(&ps);
    ctx_destroy(ctx);
  }
  EXPECT(first[0] == first[1], "random init differs between runs: %g vs %g", first[0], first[1]);
}

static void expect_config_error(ClapTextConfig cfg, const char *what) {
  McmErr err = {{0}};
  EXPECT(clap_text_config_check(&cfg, &err) == -1, "config accepted, expected an error about '%s'", what);
  EXPECT_STR_CONTAINS(err.msg, what);
  EXPECT(!strchr(err.msg, '\n'), "not one line: %s", err.msg);
}

TEST(model_clap_text_bad_config) {
  ClapTextConfig c = clap_text_config_musicldm();
  c.num_attention_heads = 7;
  expect_config_error(c, "hidden_size 768 is not a multiple of num_attention_heads 7");
  c = clap_text_config_musicldm();
  c.max_length = 513;
  expect_config_error(c, "max_length 513 must be 2..512");
  c = clap_text_config_musicldm();
  c.max_position_embeddings = 3;
  expect_config_error(c, "max_position_embeddings 3 leaves no room");
  c = clap_text_config_musicldm();
  c.pad_token_id = 50265;
  expect_config_error(c, "pad_token_id 50265 is not a token id");
  c = clap_text_config_musicldm();
  c.layer_norm_eps = 0;
  expect_config_error(c, "layer_norm_eps 0 must be positive");
  c = clap_text_config_musicldm();
  c.num_hidden_layers = 0;
  expect_config_error(c, "num_hidden_layers 0");
  c = clap_text_config_musicldm();
  c.projection_dim = 0;
  expect_config_error(c, "projection_dim 0");
}

/* Too many tokens for the position table: a fatal error naming the limit. */
TEST_EXIT_MSG(model_clap_text_too_long, 1, "39 tokens, but the position table holds 38") {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  ClapTextConfig cfg = fixture_config('a');
  ClapText *m = clap_text_create(ctx, &cfg, &ps);
  int32_t zeros[39] = {0};
  Tensor *ids = tensor_new(ctx, DT_I32, SHAPE(1, 39)), *mask = tensor_zeros(ctx, DT_F32, SHAPE(1, 39));
  tensor_from_host_i32(ctx, ids, zeros);
  clap_text_forward(ctx, m, ids, mask);
}

/* clap_text_load of `path` into a model configured as cfg must fail with `what`. */
static void expect_load_error(const ClapTextConfig *cfg, const char *path, const char *what) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  ClapText *m = clap_text_create(ctx, cfg, &ps);
  McmErr err = {{0}};
  EXPECT(clap_text_load(ctx, m, path, &err) == -1, "%s loaded, expected an error about '%s'", path, what);
  EXPECT_STR_CONTAINS(err.msg, what);
  EXPECT(!strchr(err.msg, '\n'), "not one line: %s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Writes model a's parameters to path, leaving out `skip`, giving `reshape` another shape,
 * adding tensors named `extra` (NULL-terminated) and a config attribute (each unless NULL). */
static void write_weights(const char *path, const char *skip, const char *reshape, const char *const *extra,
                          const char *config) {
  Ctx *ctx = ctx_create_cpu(0);
  ClapTextConfig cfg = fixture_config('a');
  ParamSet ps;
  params_init(&ps, "");
  clap_text_init_random(ctx, clap_text_create(ctx, &cfg, &ps));
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < ps.n; i++) {
    Tensor *p = ps.p[i];
    if (skip && !strcmp(p->name, skip)) continue;
    if (reshape && !strcmp(p->name, reshape)) {
      float z[4] = {0};
      ASSERT(tf_write(tf, p->name, DT_F32, 2, (int64_t[]){2, 2}, z, &err) == 0, "%s", err.msg);
      continue;
    }
    ASSERT(tf_write_tensor(ctx, tf, p, DT_F32, &err) == 0, "%s", err.msg);
  }
  if (config) ASSERT(tf_set_attr(tf, "config", config, &err) == 0, "%s", err.msg);
  for (int i = 0; extra && extra[i]; i++)
    ASSERT(tf_write(tf, extra[i], DT_F32, 1, (int64_t[]){1}, (float[]){0}, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

static void expect_loads(const ClapTextConfig *cfg, const char *path) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  McmErr err;
  EXPECT(clap_text_load(ctx, clap_text_create(ctx, cfg, &ps), path, &err) == 0, "%s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(model_clap_text_bad_weights) {
  ClapTextConfig a = fixture_config('a');
  expect_load_error(&a, TEST_PATH("absent.h5"), "absent.h5: cannot open: No such file or directory");

  const char *text = TEST_PATH("text_encoder.json");
  FILE *f = FOPEN_CHECK(text, "w");
  fputs("{\"hidden_size\": 32}\n", f);
  fclose(f);
  expect_load_error(&a, text, "not an HDF5 file");

  const char *missing = TEST_PATH("missing.h5");
  write_weights(missing, "text_model.encoder.layer.1.output.LayerNorm.bias", NULL, NULL, NULL);
  expect_load_error(&a, missing, "no tensor 'text_model.encoder.layer.1.output.LayerNorm.bias'");

  const char *shape = TEST_PATH("shape.h5");
  write_weights(shape, NULL, "text_projection.linear1.weight", NULL, NULL);
  expect_load_error(&a, shape, "tensor 'text_projection.linear1.weight': expected shape [16, 32], file has [2, 2]");

  /* The rest of a ClapModel loads; anything else the model lacks does not. */
  const char *audio = TEST_PATH("audio.h5");
  write_weights(audio, NULL, NULL,
                (const char *[]){"audio_model.audio_encoder.norm.weight", "audio_projection.linear1.bias",
                                 "logit_scale_a", "logit_scale_t", NULL},
                NULL);
  expect_loads(&a, audio);
  const char *extra = TEST_PATH("extra.h5");
  write_weights(extra, NULL, NULL, (const char *[]){"text_model.encoder.layer.2.output.dense.bias", NULL}, NULL);
  expect_load_error(&a, extra, "tensor 'text_model.encoder.layer.2.output.dense.bias' is not a parameter");
  write_weights(extra, NULL, NULL, (const char *[]){"audio_scale", NULL}, NULL);
  expect_load_error(&a, extra, "tensor 'audio_scale' is not a parameter");

  const char *json = TEST_PATH("json.h5");
  write_weights(json, NULL, NULL, NULL, "{\"hidden_size\": 32,");
  expect_load_error(&a, json, "json.h5: its config attribute is not a JSON object (line 1:");
  write_weights(json, NULL, NULL, NULL, "[32]");
  expect_load_error(&a, json, "json.h5: its config attribute is not a JSON object");
  write_weights(json, NULL, NULL, NULL, "{\"hidden_size\": 32, \"hidden_act\": \"gelu_new\"}");
  expect_load_error(&a, json, "config has hidden_act = \"gelu_new\", the model is configured with \"gelu\"");
  write_weights(json, NULL, NULL, NULL, "{\"text_config\": {\"layer_norm_eps\": 1e-5}, \"hidden_size\": 99}");
  expect_load_error(&a, json, "config has text_config.layer_norm_eps = 1e-05, the model is configured with 1e-12");
  /* A ClapConfig's root sizes describe both towers and are not compared; its root
   * projection_dim is. Configs that state only some sizes, all agreeing, load. */
  write_weights(json, NULL, NULL, NULL, "{\"num_hidden_layers\": 4, \"text_config\": {\"hidden_size\": 32}}");
  expect_loads(&a, json);
  write_weights(json, NULL, NULL, NULL, "{\"projection_dim\": 512, \"text_config\": {\"hidden_size\": 32}}");
  expect_load_error(&a, json, "config has projection_dim = 512, the model is configured with 16");

  /* Config attribute disagreements with the real fixture files, including ones the shapes
   * cannot reveal. */
  ClapTextConfig c = a;
  c.num_attention_heads = 8;
  expect_load_error(&c, WEIGHTS_A, "config has text_config.num_attention_heads = 4, the model is configured with 8");
  c = a;
  c.layer_norm_eps = 1e-5f;
  expect_load_error(&c, WEIGHTS_A, "text_config.layer_norm_eps = 1e-12, the model is configured with 1e-05");
  c = a;
  c.num_hidden_layers = 3;
  expect_load_error(&c, WEIGHTS_A, "text_config.num_hidden_layers = 2, the model is configured with 3");
  c = fixture_config('e');
  c.max_position_embeddings = 41;
  expect_load_error(&c, WEIGHTS_E, "config has max_position_embeddings = 40, the model is configured with 41");
  expect_load_error(&a, WEIGHTS_E, "config has vocab_size = 1911, the model is configured with 100");
}
