/* AudioMAE encoder: the frozen feature network of mcm's discriminator (facebookresearch/
 * AudioMAE, models_mae.py MaskedAutoencoderViT, ViT-B/16 on a 1024 × 128 Kaldi fbank).
 *
 *   fbank (B, 1, T, F) ─ patch_embed.proj (Conv2d k=p, s=p) ─ flatten, transpose
 *     ─ tokens (B, N, C), N = (T/p)·(F/p), token n = t·(F/p) + f
 *     ─ + pos_embed[:, 1:] ─ prepend cls_token + pos_embed[:, :1]          -> (B, 1+N, C)   tap −1
 *     ─ blocks.0 … blocks.(depth−1), each pre-norm (timm Block):           tap i after blocks.i
 *         x = x + attn.proj(MHSA(attn.qkv(norm1(x))))
 *         x = x + mlp.fc2(GELU(mlp.fc1(norm2(x))))
 *     ─ norm (LayerNorm) ─ token 0                                          -> cls (B, C)
 *
 * A tap is read out as StyleGAN-T's AddReadout does for its DINO hooks: the cls token added to
 * every patch token, the cls token dropped, transposed to (B, C, N) for the 1-D conv heads.
 * No masking: MAE's random masking is for pretraining only.
 *
 * Parameters carry the checkpoint's names under the ParamSet's current prefix (create the
 * model in a ParamSet of its own with an empty root to load a converted checkpoint):
 *   patch_embed.proj.{weight,bias}  cls_token (1,1,C)  pos_embed (1,1+N,C)
 *   blocks.i.{norm1,norm2}.{weight,bias}  blocks.i.attn.qkv.{weight,bias} (3C, C)
 *   blocks.i.attn.proj.{weight,bias}  blocks.i.mlp.fc1 (H, C)  blocks.i.mlp.fc2 (C, H)
 *   norm.{weight,bias}
 * attn.qkv's output is ordered (3, heads, head dim) as PyTorch's reshape(B, N, 3, NH, D) reads
 * it, so its thirds are q, k and v, each (B, N, NH·D) in op_attention's head layout.
 *
 * pos_embed is AudioMAE's fixed 2-D sin-cos table. It is a frozen parameter loaded from the
 * weights, never recomputed in the forward; audiomae_init_random fills it with the same table
 * as util/pos_embed.py get_2d_sincos_pos_embed_flexible(C, patch_hw, cls_token=True),
 * including the quirk that patch_hw = (F/p, T/p) is the transpose of the token grid: for
 * token n ≥ 1 the first C/2 channels encode (n−1) mod (T/p), the last C/2 (n−1) div (T/p).
 */
#pragma once
#include <stdbool.h>

#include "kernels/ops.h"
#include "models/params.h"

typedef struct AudioMAEConfig {
  int img_t, img_f;  /* T × F: fbank frames × mel bins of the input (1024 × 128) */
  int in_chans;      /* 1 */
  int patch;         /* p: square patches, stride p (16) */
  int embed_dim;     /* C (768) */
  int depth;         /* blocks (12) */
  int num_heads;     /* NH (12): head dim C / NH */
  float mlp_ratio;   /* hidden H = C · mlp_ratio (4) */
  float norm_eps;    /* every LayerNorm (1e-6) */
} AudioMAEConfig;

typedef struct AudioMAEBlock {
  Tensor *norm1_w, *norm1_b;  /* (C) */
  Tensor *qkv_w, *qkv_b;      /* (3C, C), (3C) */
  Tensor *proj_w, *proj_b;    /* (C, C), (C) */
  Tensor *norm2_w, *norm2_b;  /* (C) */
  Tensor *fc1_w, *fc1_b;      /* (H, C), (H) */
  Tensor *fc2_w, *fc2_b;      /* (C, H), (C) */
} AudioMAEBlock;

typedef struct AudioMAE {
  AudioMAEConfig cfg;
  ParamSet *ps;
  int first_param, n_params;     /* this model's range in ps */
  int grid_t, grid_f, n_tokens;  /* T/p, F/p, N = grid_t · grid_f patch tokens */
  int hidden;                    /* H */
  Tensor *patch_w, *patch_b;     /* (C, in_chans, p, p), (C) */
  Tensor *cls_token;             /* (1, 1, C) */
  Tensor *pos_embed;             /* (1, 1+N, C), frozen */
  AudioMAEBlock *blocks;         /* depth of them */
  Tensor *norm_w, *norm_b;       /* (C) */
} AudioMAE;

/* The released AudioMAE ViT-B (mae_vit_base_patch16, AS-2M pretrained, 1024 × 128 input). */
AudioMAEConfig audiomae_config_vit_b(void);
/* Checks every size and combination; a bad one gives one line in err and returns -1. */
int audiomae_config_check(const AudioMAEConfig *cfg, McmErr *err);
/* Checks a list of taps (−1 … depth−1) for audiomae_forward; one line in err, -1 if bad. */
int audiomae_check_taps(const AudioMAEConfig *cfg, const int *taps, int n_taps, McmErr *err);

/* Builds the parameters (zero-filled) in ps; pos_embed is created frozen. The model lives in
 * the context's persistent host memory. Fatal on a config that fails audiomae_config_check:
 * check user configs first. */
AudioMAE *audiomae_create(Ctx *ctx, const AudioMAEConfig *cfg, ParamSet *ps);
/* MAE's initialisation from the context's RNG (reproducible, same on CPU and GPU): Linear
 * weights and the patch projection (as a (C, in·p·p) matrix) xavier-uniform, Linear biases 0,
 * patch bias U(±1/√fan_in), LayerNorms 1 / 0, cls_token N(0, 0.02²), pos_embed the sin-cos
 * table above. */
void audiomae_init_random(Ctx *ctx, AudioMAE *m);
/* Loads a tensor file of AudioMAE weights (names as in the checkpoint's "model" state dict).
 * If the file has a `config` attribute (JSON with MaskedAutoencoderViT's constructor names:
 * img_size [T, F], patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, norm_eps;
 * any may be absent), the sizes it states are compared with m->cfg first and the first
 * disagreement is reported by name. Every parameter is then loaded with shape checks. The
 * pretraining checkpoint's decoder (decoder_*, mask_token) is ignored; any other tensor the
 * model does not have is an error (it means the config does not match, e.g. more blocks).
 * The fine-tuned checkpoints (models_vit, global pool) have no `norm` and are refused
 * (missing tensor): use the pretrained one. Returns -1 with err on any failure. */
int audiomae_load(Ctx *ctx, AudioMAE *m, const char *path, McmErr *err);

/* fbank (B, in_chans, T, F) -> for each j < n_taps, tap_out[j] = the readout of tap taps[j]
 * (−1: after patch embedding + positions, before blocks.0; i: after blocks.i), (B, C, N);
 * and, if cls_out is not NULL, *cls_out = the final-normed cls token (B, C). Blocks after the
 * last one needed are skipped. Taps must pass audiomae_check_taps (fatal otherwise). Works in
 * grad mode (gradients to fbank and to trainable parameters; the feature network is frozen
 * in training, so only the input gradient is computed) and in no-grad mode. */
void audiomae_forward(Ctx *ctx, AudioMAE *m, Tensor *fbank, const int *taps, int n_taps, Tensor **tap_out,
                      Tensor **cls_out);
/* The frozen feature network computes in bf16 from here on (weights in bf16, fp32
 * accumulation); fbank, readouts and cls stay fp32. Fatal on trainable parameters. */
void audiomae_cast(Ctx *ctx, AudioMAE *m, DType dtype);
