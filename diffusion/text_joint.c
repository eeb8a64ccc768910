/* The jointly trained text tower (see text_joint.h): configuration checks, the per-step
 * embedding, checkpoint groups and the export ./prepare and ./infer read. */
#include "diffusion/text_joint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/io.h"
#include "kernels/optim.h"
#include "models/weights.h"

int text_joint_config(const Config *cfg, const Tokenizer *tok, ClapTextConfig *out, McmErr *err) {
  const int V_tok = tokenizer_vocab_size(tok);
  ClapTextConfig c = clap_text_config_musicldm();
  c.vocab_size = cfg->text.vocab_size ? (int)cfg->text.vocab_size : V_tok;
  if (V_tok > c.vocab_size)
    return mcm_err(err, "text.tokenizer = %s has %d ids, more than text.vocab_size = %d (hint: set text.vocab_size = 0 "
                        "to take the tokenizer's size, or at least %d)",
                   cfg->text.tokenizer, V_tok, c.vocab_size, V_tok);
  c.hidden_size = (int)cfg->text.hidden;
  c.num_hidden_layers = (int)cfg->text.layers;
  c.num_attention_heads = (int)cfg->text.heads;
  c.intermediate_size = (int)cfg->text.intermediate;
  c.projection_dim = cfg->text.projection_dim ? (int)cfg->text.projection_dim : (int)cfg->unet.context_dim;
  if (c.projection_dim != cfg->unet.context_dim)
    return mcm_err(err, "text.projection_dim = %d but unet.context_dim = %lld: the tower's embedding is the UNet's class "
                        "embedding (hint: text.projection_dim = 0 takes unet.context_dim)",
                   c.projection_dim, (long long)cfg->unet.context_dim);
  c.pad_token_id = tokenizer_specials(tok).pad;
  c.max_length = (int)cfg->text.max_length;
  c.max_position_embeddings = c.pad_token_id + 1 + c.max_length;
  c.type_vocab_size = 1;
  McmErr e = {{0}};
  if (clap_text_config_check(&c, &e)) return mcm_err(err, "[text]: %s", e.msg);
  *out = c;
  return 0;
}

TextJoint *text_joint_create(Ctx *ctx, const Config *cfg, McmErr *err) {
  if (strcmp(cfg->train.mode, "teacher")) {
    mcm_err(err, "text.joint = true needs train.mode = teacher (the tower is trained with the teacher, then frozen; "
                 "train.mode = %s reads the shards' text_emb)", cfg->train.mode);
    return NULL;
  }
  if (!cfg->text.tokenizer[0]) {
    mcm_err(err, "text.joint = true needs text.tokenizer (a directory with vocab.json and merges.txt, e.g. "
                 "tests/fixtures/tokenizer)");
    return NULL;
  }
  TextJoint *tj = calloc(1, sizeof *tj);
  mcm_snprintf(tj->tok_dir, sizeof tj->tok_dir, "%s", cfg->text.tokenizer);
  char vocab[CFG_MAX_STRING + 32], merges[CFG_MAX_STRING + 32];
  mcm_snprintf(vocab, sizeof vocab, "%s/vocab.json", tj->tok_dir);
  mcm_snprintf(merges, sizeof merges, "%s/merges.txt", tj->tok_dir);
  McmErr e = {{0}};
  tj->tok = tokenizer_load(vocab, merges, &e);
  if (!tj->tok) {
    mcm_err(err, "text.tokenizer: %s", e.msg);
    free(tj);
    return NULL;
  }
  if (text_joint_config(cfg, tj->tok, &tj->cfg, err)) {
    text_joint_destroy(tj);
    return NULL;
  }
  params_init(&tj->ps, "");
  tj->tower = clap_text_create(ctx, &tj->cfg, &tj->ps);
  clap_text_init_random(ctx, tj->tower);
  params_init(&tj->ps_ema, "");
  tj->ps_ema.trainable = false;
  tj->ema = clap_text_create(ctx, &tj->cfg, &tj->ps_ema);
  ema_copy(ctx, tj->ps_ema.p, tj->ps.p, tj->ps.n);
  return tj;
}

void text_joint_destroy(TextJoint *tj) {
  if (!tj) return;
  tokenizer_free(tj->tok);
  params_free(&tj->ps);
  params_free(&tj->ps_ema);
  free(tj);
}

Tensor *text_joint_embed(Ctx *ctx, TextJoint *tj, char *const *captions, const bool *drop, int n, McmErr *err) {
  const char **p = ctx_alloc_host(ctx, (size_t)n * sizeof *p);
  for (int i = 0; i < n; i++) p[i] = drop && drop[i] ? "" : captions[i];
  return clap_text_embed(ctx, tj->tower, tj->tok, p, n, err);
}

int text_joint_save(Ctx *ctx, const TextJoint *tj, TensorFile *tf, McmErr *err) {
  if (params_save(ctx, &tj->ps, tf, "text/", DT_F32, err)) return -1;
  return params_save(ctx, &tj->ps_ema, tf, "text_ema/", DT_F32, err);
}

int text_joint_load(Ctx *ctx, TextJoint *tj, TensorFile *tf, McmErr *err) {
  McmErr e = {{0}};
  if (params_load(ctx, &tj->ps, tf, "text/", true, &e) || params_load(ctx, &tj->ps_ema, tf, "text_ema/", true, &e))
    return mcm_err(err, "the jointly trained text tower: %s (hint: resume with the [text] section the run was started "
                        "with)", e.msg);
  return 0;
}

static int copy_into(const char *from, const char *to, McmErr *err) {
  FILE *f = fopen(from, "rb");
  if (!f) return mcm_err(err, "%s: %s", from, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = MALLOC_CHECK(cap);
  for (size_t got; (got = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap) {
      buf = realloc(buf, cap *= 2);
      MCM_CHECK(buf, "text_joint: out of memory (%zu bytes)", cap);
    }
  }
  int bad = ferror(f);
  fclose(f);
  int rc = bad ? mcm_err(err, "%s: read error", from) : file_write_atomic(to, buf, n, err);
  free(buf);
  return rc;
}

int text_joint_export(Ctx *ctx, const TextJoint *tj, const char *dir, McmErr *err) {
  char path[CFG_MAX_STRING + 64], from[CFG_MAX_STRING + 32];
  mcm_snprintf(path, sizeof path, "%s/%s", dir, BUNDLE_TEXT_ENCODER);
  TensorFile *tf = tf_create(path, err);
  if (!tf) return -1;
  char *config = clap_text_config_json(&tj->cfg);
  int rc = tf_set_attr(tf, "mcm_format", "mcm-weights 1", err);
  if (!rc) rc = tf_set_attr(tf, "component", "text_encoder", err);
  if (!rc) rc = tf_set_attr(tf, "source", "./train with train.mode = teacher, text.joint = true (the EMA tower)", err);
  if (!rc) rc = tf_set_attr(tf, "config", config, err);
  if (!rc) rc = params_save(ctx, &tj->ps_ema, tf, "", DT_F32, err);
  free(config);
  if (rc) {
    tf_abort(tf);
    return -1;
  }
  if (tf_commit(tf, err)) return -1;
  mcm_snprintf(path, sizeof path, "%s/tokenizer", dir);
  if (mkdir(path, 0777) && errno != EEXIST) return mcm_err(err, "%s: cannot create it: %s", path, strerror(errno));
  const char *files[2] = {"vocab.json", "merges.txt"};
  for (int i = 0; i < 2; i++) {
    mcm_snprintf(from, sizeof from, "%s/%s", tj->tok_dir, files[i]);
    mcm_snprintf(path, sizeof path, "%s/tokenizer/%s", dir, files[i]);
    if (copy_into(from, path, err)) return -1;
  }
  return 0;
}
