/* HiFi-GAN generator: log-mel spectrogram -> waveform (MusicLDM's vocoder, built like
 * transformers' SpeechT5HifiGan, which diffusers' MusicLDMPipeline uses).
 *
 *   mel (B, T, M) ─ [(x − mean)/scale if normalize_before] ─ transpose ─ conv_pre (k7)
 *     ─ per upsampling stage i:  leaky_relu ─ upsampler.i (ConvTranspose1d, stride u_i)
 *                                ─ mean over resblocks.(i·NK + j), j < NK
 *     ─ leaky_relu (torch's default slope 0.01, not the config's) ─ conv_post (k7) ─ tanh
 *     ─ waveform (B, L)
 *
 * A residual block (HifiGanResidualBlock) with kernel k and dilations d_1..d_n runs, for
 * each d: x = x + convs2.n(lrelu(convs1.n(lrelu(x)))), convs1 dilated by d, convs2 not,
 * both 'same' padded. Channels halve at every stage: C_i = upsample_initial_channel / 2^(i+1).
 *
 * Length: each stage maps L -> (L − 1)·u − 2·⌊(k − u)/2⌋ + k, which is L·u when k − u is
 * even and L·u + 1 when it is odd. For MusicLDM (rates 5,4,2,2,2, kernels 16,16,8,4,4)
 * L = 160·T + 32: 1024 frames give 163872 samples; diffusers crops to T·160 afterwards.
 * hifigan_out_len() computes it.
 *
 * Parameters carry the checkpoint's names (conv_pre.weight, upsampler.0.weight,
 * resblocks.3.convs1.2.bias, conv_post.weight, mean, scale), under the ParamSet's current
 * prefix: create the model in a ParamSet of its own with an empty root to load the files
 * tools/convert_diffusers.py writes (weight norm is folded there). `mean` and `scale` are
 * buffers in the checkpoint: here frozen parameters, used only when normalize_before.
 */
#pragma once
#include <stdbool.h>

#include "kernels/ops.h"
#include "models/params.h"

#define HIFIGAN_MAX_UPSAMPLES 8
#define HIFIGAN_MAX_KERNELS 8
#define HIFIGAN_MAX_DILATIONS 8
#define HIFIGAN_CONV_K 7 /* conv_pre and conv_post: kernel 7, padding 3 (fixed in the architecture) */

typedef struct HifiganConfig {
  int model_in_dim;             /* M: mel bins of the input */
  int sampling_rate;            /* Hz of the output; not used by the computation */
  int hop;                      /* samples per mel frame if stated (0: not stated); must be Π upsample_rates */
  int upsample_initial_channel; /* channels after conv_pre */
  int n_upsamples;
  int upsample_rates[HIFIGAN_MAX_UPSAMPLES];
  int upsample_kernel_sizes[HIFIGAN_MAX_UPSAMPLES];
  int n_kernels; /* NK: residual blocks per stage */
  int resblock_kernel_sizes[HIFIGAN_MAX_KERNELS];
  int n_dilations[HIFIGAN_MAX_KERNELS];
  int resblock_dilation_sizes[HIFIGAN_MAX_KERNELS][HIFIGAN_MAX_DILATIONS];
  float leaky_relu_slope; /* inside the stages and blocks */
  bool normalize_before;  /* apply (mel − mean) / scale first */
} HifiganConfig;

/* One HifiGanResidualBlock: convs1.n / convs2.n, n < nd. */
typedef struct HifiganResblock {
  int k, nd;
  int dilation[HIFIGAN_MAX_DILATIONS];
  Tensor *convs1_w[HIFIGAN_MAX_DILATIONS], *convs1_b[HIFIGAN_MAX_DILATIONS]; /* (C, C, k), (C) */
  Tensor *convs2_w[HIFIGAN_MAX_DILATIONS], *convs2_b[HIFIGAN_MAX_DILATIONS]; /* (C, C, k), (C) */
} HifiganResblock;

typedef struct Hifigan {
  HifiganConfig cfg;
  ParamSet *ps;
  int first_param, n_params;                                                /* this model's range in ps */
  Tensor *conv_pre_w, *conv_pre_b;                                          /* (C0, M, 7), (C0) */
  Tensor *up_w[HIFIGAN_MAX_UPSAMPLES], *up_b[HIFIGAN_MAX_UPSAMPLES];        /* (C_{i-1}, C_i, k_i), (C_i) */
  HifiganResblock res[HIFIGAN_MAX_UPSAMPLES * HIFIGAN_MAX_KERNELS];         /* resblocks.(i·NK + j) */
  Tensor *conv_post_w, *conv_post_b;                                        /* (1, C_last, 7), (1) */
  Tensor *mean, *scale;                                                     /* (M), frozen buffers */
} Hifigan;

/* The released MusicLDM vocoder (config_16k_64 / diffusers vocoder/config.json). */
HifiganConfig hifigan_config_musicldm(void);
/* Checks every size and combination; a bad one gives one line in err and returns -1. */
int hifigan_config_check(const HifiganConfig *cfg, McmErr *err);
/* Waveform samples for T mel frames. */
int64_t hifigan_out_len(const HifiganConfig *cfg, int64_t T);

/* Builds the parameters (zero-filled; mean 0, scale 1) in ps. The model lives in the
 * context's persistent host memory (freed by ctx_destroy). Fatal on a config that fails
 * hifigan_config_check: check user configs first. */
Hifigan *hifigan_create(Ctx *ctx, const HifiganConfig *cfg, ParamSet *ps);
/* PyTorch's default conv init U(±1/√fan_in) for weights and biases from the context's RNG
 * (reproducible, same on CPU and GPU); mean 0, scale 1. */
void hifigan_init_random(Ctx *ctx, Hifigan *m);
/* Loads a tensor file written by tools/convert_diffusers.py. If it has a `config`
 * attribute (diffusers config.json text), the sizes it states are compared with m->cfg
 * first and the first disagreement is reported by name; then every parameter is loaded
 * with shape checks (extra tensors are an error). Returns -1 with err on any failure. */
int hifigan_load(Ctx *ctx, Hifigan *m, const char *path, McmErr *err);

/* mel (B, T, M) -> waveform (B, hifigan_out_len(T)), values in (−1, 1). Works in grad mode
 * (gradients to mel and to trainable parameters) and in no-grad mode. */
Tensor *hifigan_forward(Ctx *ctx, Hifigan *m, Tensor *mel);
/* A frozen vocoder computes in bf16 from here on (weights in bf16, fp32 accumulation); mel in
 * and waveform out stay fp32. Fatal on trainable parameters (params_cast). */
void hifigan_cast(Ctx *ctx, Hifigan *m, DType dtype);
