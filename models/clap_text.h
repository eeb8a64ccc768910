/* CLAP text tower: a prompt's token ids -> the 512-d L2-normalised embedding that conditions
 * MusicLDM's UNet (transformers' ClapModel.get_text_features, which diffusers'
 * MusicLDMPipeline calls; ClapTextModel is RoBERTa-base).
 *
 *   ids (B, T) ─ word_embeddings + position_embeddings + token_type_embeddings[0]
 *     ─ LayerNorm                                                    (B, T, D)
 *     ─ encoder.layer.i, i < L (post-norm BERT layer):
 *         a = attention.output.LayerNorm(h + attention.output.dense(
 *                 MHA(attention.self.query(h), .key(h), .value(h), padding mask)))
 *         h = output.LayerNorm(a + output.dense(gelu(intermediate.dense(a))))
 *     ─ pooler: tanh(pooler.dense(h[:, 0]))                          (B, D)   pooler_output
 *     ─ text_projection: linear2(relu(linear1(·)))                   (B, P)
 *     ─ x / max(‖x‖, 1e-12)                                          (B, P)
 *
 * The projection reads pooler_output (the first token, <s>, through dense + tanh), not
 * last_hidden_state[:, 0]: so do ClapModel.get_text_features (transformers 4.57.6),
 * ClapTextModelWithProjection and the original CLAP (RoBERTa's pooler_output). Only
 * get_text_features normalises; mcm always does, as MusicLDM uses the normalised vector.
 *
 * Positions (RoBERTa's quirk): position ids start at pad_token_id + 1, so token t of an
 * unpadded row reads position_embeddings[pad_token_id + 1 + t], and T ≤ max_position_embeddings
 * − pad_token_id − 1 (512 for RoBERTa's 514 rows). transformers derives them from the ids,
 * cumsum(ids ≠ pad)·(ids ≠ pad) + pad. mcm uses pad + 1 + t for every t: the same ids on every
 * real token when rows are right-padded (the tokenizer's layout, mask = 1 on a prefix), and
 * padded positions never reach the output (their keys are masked and only token 0 is
 * pooled), so outputs and gradients are identical. Left padding, or a mask that does not
 * mark exactly the non-pad ids, is not supported.
 *
 * Padding length does not change the result: padded keys are skipped, so a batch padded to
 * the longest prompt gives the embeddings MusicLDM gets with padding="max_length" (512).
 * clap_text_embed pads to the longest prompt. The unconditional embedding is the embedding
 * of "" (<s></s>), not zeros.
 *
 * Parameters carry the checkpoint's names (text_model.embeddings.word_embeddings.weight,
 * text_model.encoder.layer.3.attention.self.query.bias, text_model.pooler.dense.weight,
 * text_projection.linear1.weight, ...) under the ParamSet's current prefix: create the model
 * in a ParamSet of its own with an empty root to load tools/convert_diffusers.py's
 * text_encoder.h5. That file is a whole ClapModel: its audio tower (audio_model.*,
 * audio_projection.*) and logit_scale_a / logit_scale_t are skipped on load; any other tensor
 * the model lacks is an error. Dropout (hidden 0.1 in the config) is not applied: mcm runs
 * the tower in eval mode, as MusicLDM does.
 */
#pragma once
#include <stdbool.h>

#include "data/tokenizer.h"
#include "kernels/ops.h"
#include "models/params.h"

typedef struct ClapTextConfig {
  int vocab_size;              /* V: word embedding rows (50265 for RoBERTa) */
  int hidden_size;             /* D */
  int num_hidden_layers;       /* L */
  int num_attention_heads;     /* NH; D % NH == 0 */
  int intermediate_size;       /* feed-forward width */
  int max_position_embeddings; /* position rows, pad_token_id + 1 + the longest T */
  int type_vocab_size;         /* token type rows; only row 0 is used */
  int pad_token_id;            /* <pad>: also RoBERTa's position offset */
  int projection_dim;          /* P: the embedding size (512) */
  float layer_norm_eps;
  int max_length;              /* tokenizer padding / truncation length (MusicLDM: 512) */
} ClapTextConfig;

/* One encoder layer, encoder.layer.i. Linear weights are (OUT, IN) like torch. */
typedef struct ClapTextLayer {
  Tensor *query_w, *query_b, *key_w, *key_b, *value_w, *value_b; /* (D, D), (D) */
  Tensor *attn_out_w, *attn_out_b;                               /* attention.output.dense (D, D), (D) */
  Tensor *attn_ln_w, *attn_ln_b;                                 /* attention.output.LayerNorm (D) */
  Tensor *inter_w, *inter_b;                                     /* intermediate.dense (I, D), (I) */
  Tensor *out_w, *out_b;                                         /* output.dense (D, I), (D) */
  Tensor *out_ln_w, *out_ln_b;                                   /* output.LayerNorm (D) */
} ClapTextLayer;

typedef struct ClapText {
  ClapTextConfig cfg;
  ParamSet *ps;
  Tensor *word_emb;              /* (V, D) */
  Tensor *pos_emb;               /* (max_position_embeddings, D) */
  Tensor *type_emb;              /* (type_vocab_size, D) */
  Tensor *emb_ln_w, *emb_ln_b;   /* embeddings.LayerNorm (D) */
  ClapTextLayer *layers;         /* L of them */
  Tensor *pooler_w, *pooler_b;   /* (D, D), (D) */
  Tensor *proj1_w, *proj1_b;     /* text_projection.linear1 (P, D), (P) */
  Tensor *proj2_w, *proj2_b;     /* text_projection.linear2 (P, P), (P) */
} ClapText;

/* The released MusicLDM text tower: RoBERTa-base (ucsd-reach/musicldm text_encoder
 * text_config, transformers' ClapTextConfig defaults) with a 512-d projection. */
ClapTextConfig clap_text_config_musicldm(void);
/* Checks every size and combination; a bad one gives one line in err and returns -1. */
int clap_text_config_check(const ClapTextConfig *cfg, McmErr *err);

/* Builds the parameters (zero-filled) in ps; the model lives in the context's persistent
 * host memory. Fatal on a config that fails clap_text_config_check: check user configs first. */
ClapText *clap_text_create(Ctx *ctx, const ClapTextConfig *cfg, ParamSet *ps);
/* transformers' own initialisation (ClapPreTrainedModel._init_weights), drawn from the
 * context's RNG (reproducible, same on CPU and GPU): embeddings N(0, 0.02²), linear weights
 * N(0, 1/(2·L·D)), biases 0, LayerNorm scale 1 and shift 0. */
void clap_text_init_random(Ctx *ctx, ClapText *m);
/* Loads a tensor file written by tools/convert_diffusers.py (a ClapModel's or a
 * ClapTextModelWithProjection's weights). If it has a `config` attribute (config.json text:
 * a ClapConfig with text_config, or a flat ClapTextConfig), the sizes it states are compared
 * with m->cfg first and the first disagreement is reported by name; then every parameter is
 * loaded with shape checks. Returns -1 with err on any failure. */
int clap_text_load(Ctx *ctx, ClapText *m, const char *path, McmErr *err);

/* ids (B, T) int32 token ids in [0, V), mask (B, T) fp32 (1 = token, 0 = padding, right
 * padding only; see the top of this file), T ≤ max_position_embeddings − pad_token_id − 1
 *   -> (B, P) fp32, unit L2 norm per row.
 * Works in grad mode (gradients to trainable parameters) and in no-grad mode. */
Tensor *clap_text_forward(Ctx *ctx, ClapText *m, Tensor *ids, Tensor *mask);

/* Tokenizes n prompts (cfg.max_length, truncation as MusicLDM's CLAP call), pads them to the
 * longest and runs the tower: -> (n, P). Returns NULL with err for a prompt that is not UTF-8
 * or a tokenizer that does not fit the model (its ids reach past vocab_size, or its <pad> is
 * not pad_token_id). */
Tensor *clap_text_embed(Ctx *ctx, ClapText *m, const Tokenizer *tok, const char *const *prompts, int n, McmErr *err);
