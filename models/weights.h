/* Converted weight files and the model configurations they carry.
 *
 * tools/convert_diffusers.py (and tools/convert_musicldm_original.py) write each component
 * with root attributes component ("unet", "vae", "vocoder", "text_encoder") and config (the
 * diffusers / transformers config.json text). The *_config_from_weights functions build a
 * component's mcm configuration from that text, so a caller can create the model before
 * loading it: keys the config does not state keep MusicLDM's values, and the result passes
 * the model's *_config_check. The *_load functions then compare every size again and check
 * every tensor's shape, so a config that lies about its tensors is still caught (by tensor
 * name).
 *
 *   unet          in_channels, out_channels, block_out_channels (the levels), down_block_types
 *                 (CrossAttnDownBlock2D = attention at that level), layers_per_block,
 *                 transformer_layers_per_block (one value for every level), norm_num_groups,
 *                 norm_eps, attention_head_dim / num_attention_heads (diffusers' meaning:
 *                 heads per level, a number or a list; num_attention_heads wins when both
 *                 are set), flip_sin_to_cos, freq_shift, time_embedding_dim,
 *                 projection_class_embeddings_input_dim, sample_size (the native latent
 *                 frames: a number, or [frames, bins]).
 *                 Heads. A stated head count is taken as diffusers computes with it. The hub's
 *                 ucsd-reach/musicldm config says attention_head_dim 8, i.e. 8 heads at every
 *                 level (diffusers' reading; the original trained with 32-channel heads, see
 *                 reference/musicldm.md §3); tools/convert_musicldm_original.py writes the
 *                 original's per-level counts (8, 12, 20). A config without heads keeps the
 *                 original's 32-channel heads.
 *   vae           in_channels, out_channels, latent_channels, block_out_channels,
 *                 layers_per_block, norm_num_groups, mid_block_add_attention, use_quant_conv,
 *                 use_post_quant_conv, scaling_factor
 *   vocoder       model_in_dim, sampling_rate, upsample_initial_channel, upsample_rates,
 *                 upsample_kernel_sizes, resblock_kernel_sizes, resblock_dilation_sizes,
 *                 leaky_relu_slope, normalize_before
 *   text_encoder  a ClapConfig (sizes in text_config, projection_dim possibly only at the
 *                 root) or a flat ClapTextConfig: vocab_size, hidden_size, num_hidden_layers,
 *                 num_attention_heads, intermediate_size, max_position_embeddings,
 *                 type_vocab_size, pad_token_id, layer_norm_eps, projection_dim. max_length
 *                 is MusicLDM's 512, or what the position table leaves (max_position_embeddings
 *                 − pad_token_id − 1) when that is less.
 *
 * Errors (-1, one line in err naming the file): missing or not HDF5, another component's
 * weights, a config that is not a JSON object, a key of the wrong type, sizes that fail the
 * model's check.
 *
 * The *_config_json functions write the inverse (malloc'd text), which is what
 * random_bundle_write stores; *_config_from_weights of that text gives back a configuration
 * that computes the same function (for the UNet, heads come back as per-level counts).
 *
 * Random bundles. A bundle is a directory with unet.h5 (the teacher), student.h5 (the
 * distilled student: the same UNet architecture), vae.h5, vocoder.h5, text_encoder.h5 and
 * tokenizer/{vocab.json,merges.txt}: what tools/convert_diffusers.py --pipeline writes plus
 * the student. random_bundle_write makes one with random weights (the models' own
 * reproducible initialisation) for smoke tests, CLI tests and timing; the vocoder's biases
 * are zeroed and its weights scaled to He's initialisation, so that its (noise-like) audio
 * follows the mel instead of its biases. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/tensorfile.h"

#include "models/clap_text.h"
#include "models/hifigan.h"
#include "models/unet.h"
#include "models/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The files of a bundle, relative to its directory. */
#define BUNDLE_UNET "unet.h5"
#define BUNDLE_STUDENT "student.h5"
#define BUNDLE_VAE "vae.h5"
#define BUNDLE_VOCODER "vocoder.h5"
#define BUNDLE_TEXT_ENCODER "text_encoder.h5"
#define BUNDLE_VOCAB "tokenizer/vocab.json"
#define BUNDLE_MERGES "tokenizer/merges.txt"

/* *sample_size (may be NULL): the config's sample_size (latent frames the UNet was trained
 * on; 256 for MusicLDM), or 0 when the config does not state it. */
int unet_config_from_weights(const char *path, UNetConfig *c, int *sample_size, McmErr *err);
int vae_config_from_weights(const char *path, VaeConfig *c, McmErr *err);
int hifigan_config_from_weights(const char *path, HifiganConfig *c, McmErr *err);
int clap_text_config_from_weights(const char *path, ClapTextConfig *c, McmErr *err);

/* config.json text for a configuration (malloc'd; free() it). sample_size: the UNet's
 * native latent frames / the VAE's native mel frames (0: left out). */
char *unet_config_json(const UNetConfig *c, int sample_size);
char *vae_config_json(const VaeConfig *c, int sample_size);
char *hifigan_config_json(const HifiganConfig *c);
char *clap_text_config_json(const ClapTextConfig *c);

typedef struct RandomBundle {
  UNetConfig unet;          /* teacher and student */
  int sample_size;          /* the UNet's native latent frames */
  VaeConfig vae;
  HifiganConfig vocoder;
  ClapTextConfig text;      /* vocab_size 0: the tokenizer's vocabulary size */
  const char *tokenizer;    /* a directory holding vocab.json and merges.txt, copied */
  uint64_t seed;            /* of the random weights (the student uses seed + 1) */
} RandomBundle;

/* A bundle small enough for CPU tests (about 4 MB; 16 mel bins, VAE factor 2, hop 160 at
 * 16 kHz, native 16 latent frames = 0.32 s), with the given tokenizer directory. */
RandomBundle random_bundle_tiny(const char *tokenizer);
/* The released MusicLDM sizes (2.5 GB of fp32 on disk with teacher and student), for timing. */
RandomBundle random_bundle_full(const char *tokenizer);

/* Writes the bundle into dir (created if missing; existing bundle files are replaced, each
 * atomically). -1 with err on a bad configuration, an unreadable tokenizer or a failed write. */
int random_bundle_write(const char *dir, const RandomBundle *b, McmErr *err);

/* ---------------------------------------------------------------- checking a file against a model
 *
 * Each *_load reads the file's attributes with weights_meta, then compares what the config
 * states with the model it loads into, key by key, with the check_* functions below. A key
 * that is absent or null is not stated and passes. Numbers agree when an integer equals the
 * model's exactly, a real to 1e-6 relative; lists element by element (a length that differs
 * names the whole list). The first disagreement is reported, in one form for every model:
 *   <path>: the weights' config has <key> = <file value>, the model is configured with
 *   <model value> (hint: build the model with the weights' configuration)
 * with values written as JSON (reals to 7 significant digits). Later checks then do nothing,
 * so a loader runs its checks in a row and reads rc at the end. */

/* The file's component attribute must be `component` where it states one (NULL: not
 * checked). *config (may be NULL: not read): the config attribute as a JSON object (free
 * with json_decref), NULL when the file has none. -1 with err when the component differs or
 * an attribute is present but unreadable or not a JSON object. */
int weights_meta(TensorFile *tf, const char *component, json_t **config, McmErr *err);

typedef struct ConfigCheck {
  const char *path;   /* the weights file, for messages */
  json_t *root;       /* the whole config */
  json_t *section;    /* where keys are looked up: root, or a part of it (CLAP's text_config) */
  const char *prefix; /* the section's name in messages: "" or e.g. "text_config." */
  McmErr *err;
  int rc;             /* -1 from the first failed check on */
} ConfigCheck;

/* Checks in root. */
ConfigCheck config_check_begin(const char *path, json_t *root, McmErr *err);
/* The key's value in the section; NULL when absent, null, or a check already failed. */
json_t *check_get(ConfigCheck *cc, const char *key);
void check_int(ConfigCheck *cc, const char *key, int64_t model);
void check_real(ConfigCheck *cc, const char *key, double model);
void check_bool(ConfigCheck *cc, const char *key, bool model);
void check_str(ConfigCheck *cc, const char *key, const char *model);
void check_int_list(ConfigCheck *cc, const char *key, const int *model, int n);
void check_str_list(ConfigCheck *cc, const char *key, const char *const *model, int n);
/* The general form: a value found by the caller (file; NULL or null passes) against the
 * model's as JSON (a new reference, which this takes), named `name` in the message. */
void check_value(ConfigCheck *cc, const char *name, json_t *file, json_t *model);
/* A model-specific failure (a feature the model lacks): records the message if it is the
 * first; returns cc->rc. */
int check_fail(ConfigCheck *cc, const char *fmt, ...) MCM_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif
