/* A small RoBERTa-shaped text tower trained jointly with the teacher ([text] joint = true,
 * train.mode = teacher): demo-scale text conditioning when the released CLAP tower is not at
 * hand. The full-scale path keeps the frozen CLAP tower and the shards' text_emb.
 *
 * Per step the batch's captions are tokenised (cfg text.max_length, padded to the longest
 * row of the batch, which changes nothing: see models/clap_text.h), a row dropped by the
 * condition dropout reads "" (the unconditional embedding is the tower's embedding of "", as
 * for CLAP), and clap_text_forward runs in grad mode: (B, P) unit rows, the UNet's class
 * embedding. The tower's parameters join the trainer's one AdamW (same hyperparameters, the
 * same global-norm clip) after the UNet's; their EMA (train.teacher_ema_decay, like the UNet's
 * sampling EMA) is the exported tower, so the exported text encoder and the exported UNet are
 * the same moment's pair.
 *
 * Checkpoints hold "text/<param>" (trained) and "text_ema/<param>" (the EMA); the optimizer's
 * state for them is in the trainer's opt_student group. text_joint_export writes
 * <dir>/text_encoder.h5 (the EMA tower, a transformers-style ClapTextConfig `config` attribute,
 * component text_encoder: clap_text_load and ./prepare --text-encoder read it) and copies the
 * tokenizer's vocab.json and merges.txt to <dir>/tokenizer/.
 *
 * Tower sizes: text.hidden, layers, heads, intermediate; projection_dim (0 = unet.context_dim,
 * which it must equal); vocab_size (0 = the tokenizer's); pad_token_id from the tokenizer;
 * max_position_embeddings = pad + 1 + max_length; the rest as clap_text_config_musicldm. */
#pragma once
#include "core/config.h"
#include "core/tensorfile.h"
#include "models/clap_text.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct TextJoint {
  ClapTextConfig cfg;
  Tokenizer *tok;
  char tok_dir[CFG_MAX_STRING];
  ParamSet ps, ps_ema;   /* the trained tower (trainable) and its EMA (frozen), root "" */
  ClapText *tower, *ema;
} TextJoint;

/* The tower's configuration from cfg's [text] and the loaded tokenizer; -1 with one line in
 * err on a bad combination (a tokenizer vocabulary larger than text.vocab_size, a projection
 * that is not unet.context_dim, sizes clap_text_config_check rejects). */
int text_joint_config(const Config *cfg, const Tokenizer *tok, ClapTextConfig *out, McmErr *err);

/* Loads the tokenizer, checks the sizes, builds the tower with clap_text_init_random (the
 * context's RNG) and copies it into the EMA. NULL with err (text.tokenizer missing or
 * unreadable, bad sizes, [text] joint outside train.mode = teacher). */
TextJoint *text_joint_create(Ctx *ctx, const Config *cfg, McmErr *err);
void text_joint_destroy(TextJoint *tj); /* NULL is a no-op */

/* captions (n) UTF-8; drop (n) or NULL: a dropped row reads "" -> (n, P), recorded on the
 * tape in grad mode. NULL with err on a caption that is not UTF-8. */
Tensor *text_joint_embed(Ctx *ctx, TextJoint *tj, char *const *captions, const bool *drop, int n, McmErr *err);

/* "text/" and "text_ema/" in a checkpoint; load requires every parameter with its shape. */
int text_joint_save(Ctx *ctx, const TextJoint *tj, TensorFile *tf, McmErr *err);
int text_joint_load(Ctx *ctx, TextJoint *tj, TensorFile *tf, McmErr *err);

/* <dir>/text_encoder.h5 (the EMA tower) and <dir>/tokenizer/{vocab.json,merges.txt}, each
 * written atomically. */
int text_joint_export(Ctx *ctx, const TextJoint *tj, const char *dir, McmErr *err);

#ifdef __cplusplus
}
#endif
