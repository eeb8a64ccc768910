/* The MusicLDM UNet: diffusers' UNet2DConditionModel as configured for MusicLDM (the
 * original LDM openaimodel.UNetModel with FiLM conditioning), written once from ops.
 *
 *   x (B, C=8, H=latent time, W=latent mel bins), t (B) timesteps, c (B, 512) CLAP embedding
 *     time:  sinusoid(t) (B, 128) -> linear_1 -> SiLU -> linear_2 (B, 512)
 *     class: class_embedding = Linear(512 -> 512) applied to c   ("film_emb" in the original)
 *     emb = [time ‖ class] (B, 1024), fed through SiLU + time_emb_proj to every resnet
 *     conv_in -> down levels (resnets, + a spatial transformer after each resnet at the
 *     attention levels, stride-2 conv between levels) -> mid (resnet, transformer, resnet)
 *     -> up levels (skip concat, resnets, transformers, nearest 2× + conv) -> GroupNorm,
 *     SiLU, conv_out -> (B, C, H, W)
 *   Spatial transformer: GroupNorm (eps 1e-6), 1×1 proj_in, per block LayerNorm + self
 *   attention (attn1), LayerNorm + self attention again (attn2: MusicLDM has no text
 *   context, so diffusers' cross-attention sees encoder_hidden_states = None and attends
 *   to the block's own tokens), LayerNorm + GEGLU feed-forward, 1×1 proj_out, residual.
 *
 * Parameters are named exactly as the diffusers state dict ("down_blocks.1.attentions.0.
 * transformer_blocks.0.attn1.to_q.weight"), so tools/convert_diffusers.py's output loads
 * as is: create the UNet into a ParamSet whose root is "" (params_init(&ps, "")).
 *
 * Heads. The attention heads are not visible in the weights, so the configuration says
 * how many: either num_head_channels > 0 (the original MusicLDM: 32-channel heads, i.e.
 * 8/12/20 heads at 256/384/640 channels) or num_head_channels = 0 and num_heads[level]
 * (diffusers: its attention_head_dim, which for the released MusicLDM config means 8 heads
 * at every level). See shared/reference/musicldm.md §3, "Head-count discrepancy". The
 * weights were trained with the original; unet_config_musicldm() follows it. */
#pragma once
#include "kernels/ops.h"
#include "models/params.h"

#ifdef __cplusplus
extern "C" {
#endif

#define UNET_MAX_LEVELS 6
#define UNET_MAX_LAYERS 8 /* resnets per down level */

typedef struct UNetConfig {
  int in_channels, out_channels;           /* latent channels: 8, 8 */
  int levels;                              /* resolution levels: 4 */
  int block_out_channels[UNET_MAX_LEVELS]; /* channels per level: 128, 256, 384, 640 */
  bool attention[UNET_MAX_LEVELS];         /* CrossAttn{Down,Up}Block2D at this level: 0, 1, 1, 1 */
  int layers_per_block;                    /* resnets per down level (the up path has one more): 2 */
  int transformer_layers;                  /* BasicTransformerBlocks per spatial transformer: 1 */
  int norm_groups;                         /* GroupNorm groups everywhere: 32 */
  float norm_eps;                          /* resnets and conv_norm_out: 1e-5 */
  float transformer_norm_eps;              /* the spatial transformer's GroupNorm: 1e-6 */
  float layer_norm_eps;                    /* LayerNorms inside the transformer blocks: 1e-5 */
  int num_head_channels;                   /* > 0: heads = channels / num_head_channels (original: 32) */
  int num_heads[UNET_MAX_LEVELS];          /* num_head_channels == 0: heads per level (diffusers) */
  int ff_mult;                             /* GEGLU inner width = ff_mult · channels: 4 */
  int time_proj_dim;                       /* sinusoidal features: block_out_channels[0] = 128 */
  float time_max_period;                   /* 10000 */
  bool flip_sin_to_cos;                    /* [cos, sin]: true */
  float freq_shift;                        /* 0 */
  int time_embed_dim;                      /* linear_1/linear_2 width: 4 · block_out_channels[0] = 512 */
  int class_embed_in;                      /* projection_class_embeddings_input_dim: 512 (CLAP) */
} UNetConfig;

/* The released MusicLDM UNet with the original's 32-channel heads (8/12/20 heads). */
UNetConfig unet_config_musicldm(void);
/* The same as diffusers builds it from the hub config: 8 heads at every level. */
UNetConfig unet_config_musicldm_diffusers(void);
/* Heads of the spatial transformers at a level (the mid block uses the last level's). */
int unet_heads(const UNetConfig *cfg, int level);
/* 0, or -1 with one line naming the first bad value. */
int unet_config_check(const UNetConfig *cfg, McmErr *err);

/* A weight and an optional bias: one Linear, Conv2d, GroupNorm or LayerNorm. */
typedef struct UnetWB {
  Tensor *w, *b;
} UnetWB;

typedef struct UnetResnet {   /* ResnetBlock2D */
  UnetWB norm1, conv1, time_emb_proj, norm2, conv2;
  UnetWB conv_shortcut;       /* 1×1, only when the channels change (w NULL otherwise) */
} UnetResnet;

typedef struct UnetAttention { /* diffusers Attention: q/k/v without bias, to_out.0 with */
  Tensor *to_q, *to_k, *to_v;
  UnetWB to_out;
} UnetAttention;

typedef struct UnetTransformerBlock { /* BasicTransformerBlock */
  UnetWB norm1, norm2, norm3;
  UnetAttention attn1, attn2;
  UnetWB ff_proj, ff_out;             /* ff.net.0.proj (C -> 2·inner), ff.net.2 (inner -> C) */
} UnetTransformerBlock;

typedef struct UnetTransformer {      /* Transformer2DModel */
  UnetWB norm, proj_in, proj_out;     /* GroupNorm, 1×1 convs */
  UnetTransformerBlock *blocks;       /* transformer_layers of them */
  int heads;
} UnetTransformer;

typedef struct UnetBlock {            /* one down or up level */
  UnetResnet *resnets;                /* layers_per_block (down) or layers_per_block + 1 (up) */
  UnetTransformer *attentions;        /* as many, or NULL at a level without attention */
  int n;
  UnetWB sampler;                     /* downsamplers.0.conv / upsamplers.0.conv (w NULL if none) */
} UnetBlock;

typedef struct Unet {
  UNetConfig cfg;
  ParamSet *ps;
  int first_param, n_params;          /* this UNet's parameters in ps */
  UnetWB time_linear_1, time_linear_2, class_embedding, conv_in;
  UnetBlock down[UNET_MAX_LEVELS];    /* down_blocks.i: level i */
  UnetResnet mid_resnets[2];
  UnetTransformer mid_attention;
  UnetBlock up[UNET_MAX_LEVELS];      /* up_blocks.i: level levels-1-i */
  UnetWB conv_norm_out, conv_out;
} Unet;

/* Creates the parameters (zero-filled) in ps, under its current prefix; ps must outlive the
 * Unet, which keeps a pointer to it and remembers its own range there. The Unet lives in
 * the context's persistent host memory (freed by ctx_destroy). Fatal on a bad config
 * (check it with unet_config_check first when it comes from a user). */
Unet *unet_create(Ctx *ctx, const UNetConfig *cfg, ParamSet *ps);
/* Reproducible random weights from the context's RNG: convs and linears as PyTorch's
 * default (U(±1/√fan_in) for weight and bias), norms weight 1, bias 0. */
void unet_init_random(Ctx *ctx, Unet *net);
/* Loads a converted diffusers UNet (tools/convert_diffusers.py). If the file carries the
 * diffusers config.json as its `config` attribute, every size it states is compared with
 * net->cfg first and the first disagreement is reported by name. Then every parameter must
 * be in the file with its shape, and the file must hold nothing else. -1 with one line in
 * err on any problem. */
int unet_load(Ctx *ctx, Unet *net, const char *path, McmErr *err);

/* x (B, in_channels, H, W) with H and W divisible by 2^(levels-1); t (B) fp32 timesteps;
 * class_emb (B, class_embed_in)  ->  (B, out_channels, H, W). Works with and without grad
 * mode. Inputs and output are fp32 whatever the network computes in (unet_cast). */
Tensor *unet_forward(Ctx *ctx, Unet *net, Tensor *x, Tensor *t, Tensor *class_emb);

/* A frozen UNet computes in bf16 from here on (its weights stored in bf16, half the memory;
 * every op accumulates in fp32): the teacher in distillation. fp32 casts back (rounded
 * weights stay rounded). Fatal on trainable parameters (params_cast). */
void unet_cast(Ctx *ctx, Unet *net, DType dtype);

#ifdef __cplusplus
}
#endif
