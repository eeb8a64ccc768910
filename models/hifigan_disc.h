/* HiFi-GAN's discriminators (Kong et al. 2020, "HiFi-GAN", §2.2–2.3 and the V1 recipe; the
 * layer plan of the authors' implementation), which train.mode = vocoder with
 * train.adversarial = true trains against the generator (diffusion/train_vocoder.h).
 *
 * Multi-period discriminator (MPD): one sub-discriminator per period p (2, 3, 5, 7, 11):
 *   wav (B, S) ─ reflect-pad on the right to a multiple of p ─ view (B, 1, S'/p, p)
 *     ─ convs.j, j < L: Conv2d C_{j−1} → C_j (C_{−1} = 1), kernel (5, 1), padding (2, 0),
 *                       stride (3, 1) except the last (1, 1); leaky ReLU 0.1   → feature map
 *     ─ conv_post:      Conv2d C_{L−1} → 1, kernel (3, 1), padding (1, 0)     → feature map
 *     ─ logits: conv_post's output flattened, (B, H_out·p)
 *   HiFi-GAN V1: C = 32, 128, 512, 1024, 1024.
 * Multi-scale discriminator (MSD): sub-discriminator s (0, 1, 2) sees wav average-pooled s
 * times (AvgPool1d(4, stride 2, padding 2) with the zeros counted: a conv with a fixed kernel
 * of four 0.25s), as (B, 1, S_s):
 *     ─ convs.j, j < 7: Conv1d kernels 15, 41, 41, 41, 41, 41, 5; strides 1, 2, 2, 4, 4, 1, 1;
 *                       padding (k − 1)/2; groups G_j; leaky ReLU 0.1           → feature map
 *     ─ conv_post:      Conv1d C_6 → 1, kernel 3, padding 1                     → feature map
 *   HiFi-GAN V1: C = 128, 128, 256, 512, 1024, 1024, 1024; G = 1, 4, 16, 16, 16, 16, 1. The
 *   paper describes the MSD as MelGAN's (16 … 1024 channels); the released code's plan is the
 *   one above, and every width and group count is a configuration value here
 *   ([vocoder_train] disc_scale_channels, disc_scale_groups) so that small models train fast.
 *
 * Weight normalisation, as in training (not folded): every conv is weight-normalised,
 *   w = g · v / ‖v‖   per output channel (torch.nn.utils.weight_norm, dim 0)
 * with parameters weight_g (COUT, 1, 1[, 1]) and weight_v (the conv's shape), except scale
 * 0's convs when spectral_norm_first_scale (HiFi-GAN: yes), which are divided by their
 * largest singular value (torch.nn.utils.spectral_norm: weight_orig, and the buffers
 * weight_u (COUT) and weight_v (CIN/G·k), one power iteration per training-mode call;
 * op_spectral_norm). Optimising g and v instead of w changes the training dynamics, so it is
 * kept; the forward equals a plain conv with the folded w.
 *
 * Parameter names are the keys of the authors' discriminator checkpoints (the 'mpd' and
 * 'msd' state dicts of do_XXXXXXXX, prefixed):
 *   mpd.discriminators.i.convs.j.{weight_g, weight_v, bias}, mpd.discriminators.i.conv_post.…
 *   msd.discriminators.s.convs.j.{weight_orig, weight_u, weight_v, bias} (s = 0, spectral)
 *   msd.discriminators.s.convs.j.{weight_g, weight_v, bias}, msd.discriminators.s.conv_post.…
 * The spectral norm's weight_u / weight_v are buffers kept in the ParamSet as frozen entries
 * (saved and loaded with the weights, never trained; hifigan_disc_set_trainable leaves them
 * frozen).
 *
 * Shapes: B batch, S samples, L layers of a sub-discriminator, K sub-discriminators (periods
 * first, then scales). Initialisation is PyTorch's default for convs (U(±1/√fan_in) for v and
 * the bias, g = ‖v‖; unit-normal u, v for the spectral norm); the authors' code applies no
 * other init to the discriminators. */
#pragma once
#include <stdbool.h>

#include "kernels/ops.h"
#include "models/params.h"

#define HGD_MAX_PERIODS 8
#define HGD_MAX_LAYERS 8  /* convs of a period sub-discriminator, conv_post not counted */
#define HGD_MAX_SCALES 4
#define HGD_SCALE_LAYERS 7 /* convs of a scale sub-discriminator: the fixed kernel/stride plan */
#define HGD_MAX_SUBS (HGD_MAX_PERIODS + HGD_MAX_SCALES)
#define HGD_LRELU_SLOPE 0.1f

typedef struct HifiganDiscConfig {
  int n_periods, periods[HGD_MAX_PERIODS];
  int n_period_layers, period_channels[HGD_MAX_LAYERS];
  int n_scales; /* 0: no MSD */
  int scale_channels[HGD_SCALE_LAYERS], scale_groups[HGD_SCALE_LAYERS];
  bool spectral_norm_first_scale;
} HifiganDiscConfig;

/* One normalised conv. */
typedef struct DiscConv {
  bool spectral;
  Tensor *g, *v;      /* weight norm: (COUT, 1, 1[, 1]), the conv's shape */
  Tensor *w;          /* spectral norm: weight_orig */
  SpectralNorm sn;    /* its weight_u, weight_v */
  Tensor *b;          /* (COUT) */
  int stride, pad, groups;
} DiscConv;

typedef struct HifiganSubDisc {
  int period;         /* > 0: an MPD sub-discriminator; 0: a scale */
  int scale;          /* pooled this many times (scales) */
  int n_layers;
  DiscConv conv[HGD_MAX_LAYERS];
  DiscConv post;
} HifiganSubDisc;

typedef struct HifiganDisc {
  HifiganDiscConfig cfg;
  ParamSet *ps;
  int n;                          /* sub-discriminators: periods, then scales */
  HifiganSubDisc sub[HGD_MAX_SUBS];
  Tensor *pool;                   /* (1, 1, 4) of 0.25: the average pooling, persistent */
  Tensor **params;                /* the trainable tensors (not the spectral buffers), in creation order */
  int n_params;
} HifiganDisc;

/* One sub-discriminator's answer. */
typedef struct DiscOutput {
  Tensor *logits;                      /* (B, N) */
  Tensor *fmap[HGD_MAX_LAYERS + 1];    /* every conv's output after its activation, conv_post's last */
  int n_fmap;
} DiscOutput;

/* HiFi-GAN V1: periods 2, 3, 5, 7, 11 with 32 … 1024 channels, 3 scales of the released
 * widths and groups, spectral norm on scale 0. */
HifiganDiscConfig hifigan_disc_config_v1(void);
/* Every count, width and group against the rules above; one line in err, -1 if bad. */
int hifigan_disc_config_check(const HifiganDiscConfig *cfg, McmErr *err);
/* The shortest waveform every sub-discriminator accepts (the reflect padding needs S > p − S mod p). */
int hifigan_disc_min_samples(const HifiganDiscConfig *cfg);

/* Builds the parameters (zero-filled, trainable except the spectral buffers) in ps, which
 * should have an empty root for the checkpoint names above. Lives in ctx's persistent memory.
 * Fatal on a config that fails hifigan_disc_config_check. */
HifiganDisc *hifigan_disc_create(Ctx *ctx, const HifiganDiscConfig *cfg, ParamSet *ps);
/* PyTorch's default init from the context's RNG (see above). */
void hifigan_disc_init_random(Ctx *ctx, HifiganDisc *d);
/* Freezes (false) or unfreezes the trainable tensors; the spectral buffers stay frozen. */
void hifigan_disc_set_trainable(Ctx *ctx, HifiganDisc *d, bool trainable);

/* wav (B, S), S >= hifigan_disc_min_samples -> out[k] for every sub-discriminator k < d->n.
 * training: one spectral-norm power iteration (updating weight_u / weight_v in place) before
 * the normalised weight is used, as a PyTorch module in train mode; false: the stored
 * vectors. Gradients reach wav and the trainable tensors that require them. */
void hifigan_disc_forward(Ctx *ctx, HifiganDisc *d, Tensor *wav, bool training, DiscOutput *out);
