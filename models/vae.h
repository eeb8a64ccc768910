/* The MusicLDM VAE: diffusers' AutoencoderKL over log-mel spectrograms seen as one-channel
 * images, x (B, 1, H, W) with H = time frames and W = mel bins (1024 × 64 for 10.24 s).
 *
 *   encoder  conv_in → down_blocks[i] (layers_per_block resnets, then a stride-2 3×3 conv
 *            after zero-padding right and bottom by 1, except after the last block) →
 *            mid_block (resnet, self-attention, resnet) → conv_norm_out → SiLU → conv_out
 *            (2L channels) → quant_conv 1×1: moments = [mean ‖ logvar]
 *   decoder  post_quant_conv 1×1 → conv_in → mid_block → up_blocks[i] (layers_per_block + 1
 *            resnets, then nearest ×2 and a 3×3 conv, except after the last block) →
 *            conv_norm_out → SiLU → conv_out
 *
 * The latent is f = 2^(n_blocks − 1) times smaller on both axes (f = 4: z (B, 8, 256, 16)).
 * Resnets: GroupNorm → SiLU → 3×3 conv, twice, plus the input (through a 1×1
 * conv_shortcut where the channels change). Mid attention: GroupNorm, then one head with
 * D = C over the H·W positions (to_q, to_k, to_v, to_out.0 linears), plus the input.
 * Every GroupNorm has eps 1e-6 and norm_num_groups groups.
 *
 * Parameter names are the diffusers state-dict keys ("encoder.down_blocks.0.resnets.1.
 * conv2.weight", "decoder.mid_block.attentions.0.to_q.weight", "quant_conv.bias"), so a
 * converted diffusers file (tools/convert_diffusers.py) loads as is.
 *
 * Latent scale: the UNet works on z·scaling_factor (1.0753 for MusicLDM, read from the
 * weights' config on load). The CALLER applies it: latents = vae_sample(...)·s before the
 * UNet, and vae_decode(ctx, vae, latents / s) after it. These functions never scale.
 *
 * Forward functions are built from ops only (no device branches): they run on the CPU and
 * on a GPU, in grad mode (the trainer backpropagates through a frozen decoder; frozen
 * parameters get no gradient but pass it on to z) and in no-grad mode. The mid attention
 * runs through op_attention, O(T) memory, so long inputs (24,576 tokens for a minute of
 * audio at the released size) fit. */
#pragma once
#include "kernels/ops.h"
#include "models/params.h"

#define VAE_MAX_BLOCKS 6
#define VAE_MAX_LAYERS 4 /* layers_per_block; the decoder has one more per block */

typedef struct VaeConfig {
  int in_channels;                         /* 1: the log-mel */
  int out_channels;                        /* 1 */
  int latent_channels;                     /* L: 8 */
  int n_blocks;                            /* levels: 3 */
  int block_out_channels[VAE_MAX_BLOCKS];  /* 128, 256, 512 */
  int layers_per_block;                    /* 2 */
  int norm_num_groups;                     /* 32 */
  float norm_eps;                          /* 1e-6 (fixed in diffusers' VAE) */
  bool mid_block_add_attention;            /* true */
  bool use_quant_conv, use_post_quant_conv;/* true, true */
  float scaling_factor;                    /* 1.0753; the weights' config value wins on load */
} VaeConfig;

/* The released MusicLDM VAE (ucsd-reach/musicldm vae/config.json). */
VaeConfig vae_config_musicldm(void);
/* 0, or -1 with one line naming the bad value or combination. */
int vae_config_check(const VaeConfig *cfg, McmErr *err);
/* f = 2^(n_blocks − 1): x (B, C, H, W) ↔ z (B, L, H/f, W/f). */
int vae_downsample_factor(const VaeConfig *cfg);

typedef struct VaeLayer {  /* a conv, linear or norm: weight and bias (NULL when absent) */
  Tensor *weight, *bias;
} VaeLayer;

typedef struct VaeResnet {
  VaeLayer norm1, conv1, norm2, conv2;
  VaeLayer conv_shortcut;  /* 1×1; weight NULL when in and out channels agree */
} VaeResnet;

typedef struct VaeAttention {
  VaeLayer group_norm, to_q, to_k, to_v, to_out;  /* to_out = "to_out.0" */
} VaeAttention;

typedef struct VaeMidBlock {
  VaeResnet resnets[2];
  VaeAttention attention;  /* absent (weights NULL) without mid_block_add_attention */
} VaeMidBlock;

typedef struct VaeEncoder {
  VaeLayer conv_in;
  VaeResnet resnets[VAE_MAX_BLOCKS][VAE_MAX_LAYERS];  /* down_blocks.i.resnets.j */
  VaeLayer downsample[VAE_MAX_BLOCKS];                /* down_blocks.i.downsamplers.0.conv */
  VaeMidBlock mid_block;
  VaeLayer conv_norm_out, conv_out;
} VaeEncoder;

typedef struct VaeDecoder {
  VaeLayer conv_in;
  VaeMidBlock mid_block;
  VaeResnet resnets[VAE_MAX_BLOCKS][VAE_MAX_LAYERS + 1]; /* up_blocks.i.resnets.j (i = 0: lowest resolution) */
  VaeLayer upsample[VAE_MAX_BLOCKS];                     /* up_blocks.i.upsamplers.0.conv */
  VaeLayer conv_norm_out, conv_out;
} VaeDecoder;

typedef struct Vae {
  VaeConfig cfg;
  VaeEncoder encoder;
  VaeDecoder decoder;
  VaeLayer quant_conv, post_quant_conv;  /* weight NULL when not used */
  ParamSet *ps;                          /* where the parameters were created */
  int first_param, n_params;             /* this model's range in ps */
} Vae;

/* Creates every parameter in ps under its current prefix (leave it empty to load diffusers
 * files: vae_load looks the names up as they are). The Vae lives in ctx's persistent host
 * memory (freed by ctx_destroy). Fatal on a config that fails vae_config_check. */
Vae *vae_create(Ctx *ctx, const VaeConfig *cfg, ParamSet *ps);
/* diffusers' default initialisation, reproducible from ctx's RNG: conv and linear weights
 * and biases U(±1/√fan_in), norms weight 1 and bias 0. */
void vae_init_random(Ctx *ctx, Vae *vae);
/* Loads a converted weights file (tools/convert_diffusers.py). If the file has a `config`
 * attribute (diffusers config.json text), the sizes it states must agree with vae->cfg (the
 * first disagreement is reported by name), and its scaling_factor replaces
 * vae->cfg.scaling_factor. Then every parameter must be in the file with its shape, and
 * the file must hold nothing else. Returns 0, or -1 with one line in err. */
int vae_load(Ctx *ctx, Vae *vae, const char *path, McmErr *err);

typedef struct VaeMoments {
  Tensor *mean;    /* (B, L, H/f, W/f) */
  Tensor *logvar;  /* (B, L, H/f, W/f), as the network gives it (vae_sample clamps it) */
} VaeMoments;

/* x (B, in_channels, H, W), H and W multiples of f → the posterior's mean and logvar. */
VaeMoments vae_encode(Ctx *ctx, Vae *vae, Tensor *x);
/* z = mean + exp(½·clamp(logvar, −30, 20)) ⊙ ε, ε ~ N(0, 1) from ctx's RNG stream.
 * mean, logvar (B, L, h, w) → z (B, L, h, w); gradients flow to mean and logvar. */
Tensor *vae_sample(Ctx *ctx, Tensor *mean, Tensor *logvar);
/* z (B, L, h, w) (unscaled: divide the UNet's latents by scaling_factor first)
 * → (B, out_channels, f·h, f·w). */
Tensor *vae_decode(Ctx *ctx, Vae *vae, Tensor *z);
/* A frozen VAE computes in bf16 from here on (weights in bf16, fp32 accumulation); encode and
 * decode still take and return fp32. Fatal on trainable parameters (params_cast). */
void vae_cast(Ctx *ctx, Vae *vae, DType dtype);
/* AutoencoderKL.forward: decode(sample_posterior ? vae_sample(mean, logvar) : mean).
 * x (B, in_channels, H, W) → (B, out_channels, H, W). */
Tensor *vae_forward(Ctx *ctx, Vae *vae, Tensor *x, bool sample_posterior);
