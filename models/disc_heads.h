/* The discriminator heads: StyleGAN-T's DiscHead (autonomousvision/stylegan-t, networks/
 * discriminator.py), one per tapped AudioMAE layer, each a small 1-D conv net over the tokens
 * conditioned by projection (mcm: on [CLAP text embedding ‖ AudioMAE cls of the real mel]).
 *
 *   x (B, C, N) ─ main.0:  SN-conv1d k1 → BatchNormLocal → LeakyReLU(0.2)
 *               ─ main.1:  h = (fn(h) + h)/√2,  fn = SN-conv1d k9 (circular pad 4) → BNL → LReLU
 *               ─ cls:     SN-conv1d k1 (C → cmap_dim)                                 (B, M, N)
 *   c (B, c_dim) ─ cmapper: FullyConnectedLayer c_dim → cmap_dim                        (B, M)
 *   logits = Σ_M cls(h) ⊙ cmap / √cmap_dim                                              (B, N)
 *
 * SN-conv1d (SpectralConv1d) is a Conv1d whose weight is divided by its largest singular value
 * (torch.nn.utils.spectral_norm, dim 0, 1 power iteration per training-mode call, eps 1e-12;
 * op_spectral_norm). BatchNormLocal splits the batch into ceil(B / virtual_bs) groups with
 * statistics per group and channel, never running statistics (op_batch_norm_local): a batch
 * must split evenly (disc_heads_check_batch). FullyConnectedLayer is StyleGAN's equalised-lr
 * linear layer: weight N(0, 1) stored, used as weight / √c_dim; bias used as is
 * (lr_multiplier 1).
 *
 * Parameter names are the state-dict keys of StyleGAN-T's ProjectedDiscriminator heads, under
 * the ParamSet's current prefix (K = head index):
 *   heads.K.main.0.0.{weight_orig,bias}      (C, C, 1), (C)
 *   heads.K.main.0.1.{weight,bias}           (C)
 *   heads.K.main.1.fn.0.{weight_orig,bias}   (C, C, kernel), (C)
 *   heads.K.main.1.fn.1.{weight,bias}        (C)
 *   heads.K.cls.{weight_orig,bias}           (M, C, 1), (M)
 *   heads.K.cmapper.{weight,bias}            (M, c_dim), (M)
 * and the spectral norm's vectors heads.K.<conv>.weight_u (OUT) and weight_v (IN·kernel).
 * These two are buffers, not weights: they live in the ParamSet as frozen entries so that they
 * are saved and loaded with the heads (a resumed run continues the same power iteration), but
 * they never get a gradient and are updated in place by training-mode forwards. An optimizer
 * must skip them (they have requires_grad false); do not make the whole set trainable with
 * params_set_trainable (disc_heads_set_trainable keeps them frozen).
 */
#pragma once
#include <stdbool.h>

#include "kernels/ops.h"
#include "models/params.h"

typedef struct DiscHeadsConfig {
  int channels;     /* C: feature channels of the tapped layer (768 for AudioMAE ViT-B) */
  int c_dim;        /* conditioning size (512 CLAP text + 768 AudioMAE cls = 1280) */
  int cmap_dim;     /* M: projection size (64) */
  int kernel;       /* the residual block's conv kernel, odd (9) */
  int virtual_bs;   /* BatchNormLocal group size (8) */
  float slope;      /* LeakyReLU slope (0.2) */
  float bn_eps;     /* BatchNormLocal eps (1e-5) */
} DiscHeadsConfig;

/* A spectrally normalised Conv1d: weight_orig (OUT, IN, K), bias (OUT), u = weight_u (OUT),
 * v = weight_v (IN·K) in sn. */
typedef struct SNConv1d {
  Tensor *w, *b;
  SpectralNorm sn;
  int pad; /* K / 2 on each side, circular */
} SNConv1d;

typedef struct DiscHead {
  SNConv1d conv0;             /* main.0.0, k1 */
  Tensor *bn0_w, *bn0_b;      /* main.0.1 */
  SNConv1d conv1;             /* main.1.fn.0, k = kernel */
  Tensor *bn1_w, *bn1_b;      /* main.1.fn.1 */
  SNConv1d cls;               /* cls, C -> M */
  Tensor *cmap_w, *cmap_b;    /* cmapper (M, c_dim), (M) */
} DiscHead;

typedef struct DiscHeads {
  DiscHeadsConfig cfg;
  ParamSet *ps;
  int n;
  DiscHead *head; /* n of them */
} DiscHeads;

/* mcm's default heads on AudioMAE ViT-B (distillation.md §7): C 768, c_dim 1280, M 64,
 * kernel 9, virtual_bs 8, slope 0.2, eps 1e-5. */
DiscHeadsConfig disc_heads_config_default(void);
/* Checks every size and combination; a bad one gives one line in err and returns -1. */
int disc_heads_config_check(const DiscHeadsConfig *cfg, McmErr *err);
/* Whether a batch of B splits into BatchNormLocal's equal groups (StyleGAN-T's view(G, -1, ...)
 * needs B divisible by ceil(B / virtual_bs): 9 with virtual_bs 8 does not). One line, -1 if not. */
int disc_heads_check_batch(const DiscHeadsConfig *cfg, int64_t B, McmErr *err);

/* Builds n_heads heads (zero-filled; weight_u / weight_v frozen) in ps under "heads.K".
 * Lives in the context's persistent host memory. Fatal on a config that fails
 * disc_heads_config_check. */
DiscHeads *disc_heads_create(Ctx *ctx, const DiscHeadsConfig *cfg, int n_heads, ParamSet *ps);
/* StyleGAN-T's initialisation from the context's RNG (reproducible, same on CPU and GPU):
 * convs PyTorch's default U(±1/√fan_in) for weight and bias, u and v unit-length normal draws,
 * BatchNorm weight 1 and bias 0, cmapper weight N(0, 1) and bias 0. */
void disc_heads_init_random(Ctx *ctx, DiscHeads *h);
/* Makes every weight trainable or frozen; weight_u / weight_v always stay frozen. */
void disc_heads_set_trainable(Ctx *ctx, DiscHeads *h, bool trainable);
/* Loads heads written by mcm (or converted from a StyleGAN-T-style state dict). If the file
 * has a `config` attribute (JSON: channels, c_dim, cmap_dim, kernel_size, virtual_bs,
 * leaky_relu_slope, bn_eps, n_heads; any may be absent), the values it states are compared
 * with the model first and the first disagreement is reported by name; then every parameter
 * and buffer is loaded with shape checks. Extra tensors are an error. -1 with err on failure. */
int disc_heads_load(Ctx *ctx, DiscHeads *h, const char *path, McmErr *err);

/* Head k on features x (B, C, N) with condition c (B, c_dim) -> logits (B, N), one per token.
 * training: one power iteration per spectral norm first (updating weight_u / weight_v in
 * place), as a PyTorch module in train mode; false uses the stored vectors (eval). B must pass
 * disc_heads_check_batch (fatal otherwise). Gradients flow to x (R1 is taken on the heads'
 * inputs), to c and to the trainable weights. */
Tensor *disc_head_forward(Ctx *ctx, DiscHeads *h, int k, Tensor *x, Tensor *c, bool training);
