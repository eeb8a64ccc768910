/* [train] mode = vocoder: the HiFi-GAN generator (models/hifigan.h) trained on prepared
 * audio, with either objective of issue 9: the quick start (train.adversarial = false: no
 * discriminators) or HiFi-GAN's full recipe (train.adversarial = true: the multi-period and
 * multi-scale discriminators of models/hifigan_disc.h, least-squares GAN, feature matching,
 * mel L1). The trainer (trainer.c) owns the loop, the generator's optimizer (AdamW; HiFi-GAN
 * trains with β = 0.8, 0.99: configs/demo_vocoder.ini sets them), the gradient clipping,
 * checkpoints, resume, logs and data parallelism; this file owns the networks, the
 * differentiable front ends, the objectives, the discriminators' optimizer and the exported
 * weights.
 *
 * Data: shards made with [prepare] keep_audio = true hold, per row, the log-mel (T, M) and
 * the normalised waveform segment (S = T·hop samples) it was computed from.
 *
 * Quick-start objective (train.adversarial = false), per process batch of B rows, mel
 * (B, T, M), wav (B, S):
 *   ŵ    = hifigan_forward(mel)[:, :S]                               (B, S)
 *   mel  = mel_weight · mean |logmel(ŵ)[:, :T] − mel|                 (the stored mel is the
 *          target: it is logmel(wav)[:, :T], ./prepare's crop)
 *   stft = (1/R) Σ_r  ‖|X_r(wav)| − |X_r(ŵ)|‖_F / ‖|X_r(wav)|‖_F      spectral convergence
 *                   + mean |ln|X_r(wav)| − ln|X_r(ŵ)||                 log-magnitude L1
 *          over R = 3 resolutions (n_fft, hop, win) = (512, 50, 240), (1024, 120, 600),
 *          (2048, 240, 1200) (Parallel WaveGAN's MultiResolutionSTFTLoss), |X| =
 *          √max(re² + im², 1e-7) as there; norms and means over the whole batch
 *   L    = mel + stft
 *
 * Objective with train.adversarial = true (HiFi-GAN V1, in the order of its train.py), per
 * process batch, with K sub-discriminators D_k (models/hifigan_disc.h; periods, then scales),
 * each giving logits D_k(·) and feature maps f_kl(·), l < L_k (every conv's output after its
 * activation, conv_post's included):
 *   ŵ    = hifigan_forward(mel)[:, :S];  mel as above (mel_weight · mean |logmel(ŵ) − mel|)
 *   1. the discriminators' step, on ŵ detached:
 *        L_D = Σ_k [ mean (D_k(wav) − 1)² + mean D_k(ŵ)² ]
 *        their gradients (all-reduced over ranks by the grad hook), then their own AdamW at
 *        the generator's scheduled lr with the generator's β, eps and weight decay, no
 *        clipping (HiFi-GAN clips neither); a non-finite gradient norm skips it
 *   2. the generator's loss, through the discriminators as they are after that step (frozen:
 *      no gradient to their weights):
 *        adv  = Σ_k mean (D_k(ŵ) − 1)²
 *        fm   = fm_weight · Σ_k Σ_l mean |f_kl(wav) − f_kl(ŵ)|
 *        L    = mel + adv + fm            (no STFT term: HiFi-GAN has none)
 *   Each discriminator pass runs in training mode: scale 0's spectral norm does one power
 *   iteration per call, four per step (real, fake; real, fake), as the PyTorch modules do.
 *   What differs from the authors' training: the generator keeps plain weights (no weight
 *   norm; the weights it exports are the same function), the mel term is mcm's (the stored
 *   mel, fmax of [mel], as in the quick start; HiFi-GAN's loss mel extends to Nyquist), and
 *   the learning rate follows [train] lr_schedule instead of a per-epoch decay of 0.999.
 *   The discriminators (weights, spectral vectors) and their AdamW state are saved in every
 *   checkpoint under "disc/" and "opt_disc" and restored on resume (bit-identical losses).
 *   Data parallel: every rank holds the same discriminators (broadcast at the start, the
 *   same mean gradient after the hook), so W ranks of batch B step like one of batch W·B.
 *   The segments must be at least as long as the longest period (the reflect padding); the
 *   2048-point STFT's minimum applies only to the quick start.
 *
 * Differentiable front ends, built from ops so that gradients reach ŵ:
 *   framing   reflect padding by n_fft/2 at both ends (torch.stft(center=True) and mel.h: the
 *             edge sample is not repeated), as slices of the signal flipped by a product with
 *             the (P, P) exchange matrix, concatenated around it
 *   STFT      op_conv1d of the padded (B, 1, S + n_fft) signal with a fixed (2K, 1, n_fft)
 *             Fourier basis, stride hop (MusicLDM's STFT module): rows k < K are
 *             w[n]·cos(2πkn/n_fft), rows K + k are −w[n]·sin(2πkn/n_fft), w the periodic
 *             Hann of length win centred in n_fft; K = n_fft/2 + 1; frames S/hop + 1
 *   log-mel   ln(max(fb · √max(re² + im², ε), log_floor)) with data/mel.h's Slaney
 *             filterbank fb (M, K); ε = 1e-14 keeps the square root's gradient finite at a
 *             zero bin and moves the magnitude by at most 1e-7, far below log_floor, so the
 *             result is mel_compute's up to fp32 rounding (tests/test_train_vocoder.c).
 *
 * Export: <run.out_dir>/vocoder.h5 at every checkpoint and at the end, atomically: component
 * "vocoder", the transformers-style config (hifigan_config_json), the weights (mean 0 and
 * scale 1, normalize_before false; or the fine-tuned file's buffers) — what hifigan_load and
 * ./infer's bundles read. The exported weights are the trainer's EMA copy, which in this
 * mode is a plain copy of the trained weights after every step (HiFi-GAN keeps no EMA). */
#pragma once
#include "core/config.h"
#include "data/loader.h"
#include "data/mel.h"
#include "models/hifigan.h"
#include "models/hifigan_disc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VOCODER_EXPORT_NAME "vocoder.h5"
#define VOCODER_STFT_RES 3
#define VOCODER_MAG_EPS 1e-7f  /* Parallel WaveGAN's clamp of the power before the root */
#define VOCODER_MEL_EPS 1e-14f /* the differentiable mel's (see above) */

/* A fixed STFT front end: the Fourier basis and the exchange matrix of the reflect padding. */
typedef struct Stft {
  int n_fft, hop, win, K; /* K = n_fft/2 + 1 */
  Tensor *basis;          /* (2K, 1, n_fft) persistent, no gradient */
  Tensor *flip;           /* (P, P) exchange matrix, P = n_fft/2 */
} Stft;

/* Builds the basis in ctx's persistent memory (1 ≤ win ≤ n_fft, n_fft even ≥ 4, hop ≥ 1). */
Stft stft_create(Ctx *ctx, int n_fft, int hop, int win);
/* wav (B, S), S > n_fft/2 -> the magnitudes √max(re² + im², eps), (B, K, S/hop + 1). */
Tensor *stft_magnitude(Ctx *ctx, const Stft *s, Tensor *wav, float eps);

/* The log-mel of data/mel.h as ops. */
typedef struct DiffMel {
  MelConfig cfg;
  Stft stft;
  Tensor *fb; /* (M, K) persistent */
} DiffMel;

/* NULL + err on a configuration mel_create refuses. */
DiffMel *diff_mel_create(Ctx *ctx, const MelConfig *cfg, McmErr *err);
void diff_mel_destroy(DiffMel *m);
/* wav (B, S) -> (B, S/hop + 1, M), the layout of mel_compute's output per row. */
Tensor *diff_mel(Ctx *ctx, const DiffMel *m, Tensor *wav);

/* The three resolutions above. */
typedef struct MrStft {
  Stft res[VOCODER_STFT_RES];
} MrStft;
MrStft mr_stft_create(Ctx *ctx);
/* Shortest signal the resolutions accept: more than the largest n_fft/2. */
int mr_stft_min_samples(void);
/* pred, target (B, S) -> (1) the stft term above; *sc and *mag (may be NULL) get the host
 * values of the two averaged parts. */
Tensor *mr_stft_loss(Ctx *ctx, const MrStft *m, Tensor *pred, Tensor *target, float *sc, float *mag);

typedef struct VocoderLoss {
  Tensor *loss;     /* (1) on the tape */
  float mel, stft;  /* host copies of the terms (mel already weighted; stft 0 with the discriminators) */
  float adv, fm;    /* the generator's GAN and feature-matching terms (fm weighted); 0 without */
  float d_real, d_fake; /* the discriminators' loss before their step: Σ_k mean (D_k(wav) − 1)²,
                           Σ_k mean D_k(ŵ)² */
  double d_grad_norm;   /* their gradient's global norm (after the hook) */
  bool d_skipped;       /* that norm was not finite: no discriminator step */
} VocoderLoss;

/* The quick-start objective above: mel (B, T, M), wav (B, S) with S = T·hop. */
VocoderLoss vocoder_objective(Ctx *ctx, Hifigan *g, const DiffMel *dm, const MrStft *mr, Tensor *mel, Tensor *wav,
                              float mel_weight);

/* ------------------------------------------------------------------ train.adversarial = true */

/* Called between the discriminators' gradients and their AdamW step (data parallel: the
 * mean over ranks, e.g. comm_allreduce_mean). */
typedef void (*VocoderGradHook)(Ctx *ctx, Tensor *const *params, int n, void *user);

/* The discriminators and their optimizer. */
typedef struct VocoderDisc {
  HifiganDisc *d;
  ParamSet ps;         /* every tensor, spectral buffers included, prefix "" (the checkpoint's names) */
  AdamW *opt;          /* over d->params */
  float fm_weight;
  VocoderGradHook hook;
  void *hook_user;
} VocoderDisc;

/* Builds the discriminators (random init from ctx's RNG; load weights over them with
 * params_load on ->ps) and their AdamW; they are left frozen. Fatal on a config that fails
 * hifigan_disc_config_check (check user input first). */
VocoderDisc *vocoder_disc_create(Ctx *ctx, const HifiganDiscConfig *cfg, AdamWHyper opt, float fm_weight);
void vocoder_disc_destroy(VocoderDisc *v);

/* The least-squares GAN and feature-matching sums over K sub-discriminators' outputs. */
Tensor *lsgan_disc_loss(Ctx *ctx, const DiscOutput *real, const DiscOutput *fake, int K, float *d_real, float *d_fake);
Tensor *lsgan_gen_loss(Ctx *ctx, const DiscOutput *fake, int K);
Tensor *feature_matching_loss(Ctx *ctx, const DiscOutput *real, const DiscOutput *fake, int K);

/* Step 1 above: the discriminators' gradients at wav (B, S) and fake (B, S) (used detached),
 * computed on their own part of the tape (tape_mark / backward_since: what was recorded
 * before, the generator's forward, stays for the caller's backward), the hook, the norm and
 * AdamW at lr. Fills d_real, d_fake, d_grad_norm and d_skipped of *out. The gradients stay in
 * the discriminators' .grad (zeroed at the start of the next call). */
void vocoder_disc_step(Ctx *ctx, VocoderDisc *v, Tensor *wav, Tensor *fake, float lr, VocoderLoss *out);

/* The whole adversarial objective above (both steps): mel (B, T, M), wav (B, S), lr the
 * discriminators' rate for this step. The returned loss is on the tape (the generator's
 * backward is the caller's). */
VocoderLoss vocoder_gan_objective(Ctx *ctx, Hifigan *g, VocoderDisc *v, const DiffMel *dm, Tensor *mel, Tensor *wav,
                                  float mel_weight, float lr);

/* The discriminators' sizes from [vocoder_train]; one clear line in err on a bad value. */
int vocoder_disc_config_from(const Config *c, HifiganDiscConfig *dc, McmErr *err);

/* The generator's sizes from [vocoder_train] (or vocoder_train.weights' config) and [mel];
 * one clear line in err on a bad combination. */
int vocoder_config_from(const Config *c, HifiganConfig *hc, McmErr *err);

typedef struct VocoderTrain VocoderTrain;

/* The generator's trainable weights in ps (every one trainable: the optimizer's list) and
 * the exported copy's in ps_ema, both under prefix ""; the buffers mean / scale live only in
 * the models' own ParamSets. Checks the shards (si: the mel front end; audio_samples: the
 * loader's, must be frames·hop) and the configuration: one clear line in err, NULL. */
VocoderTrain *vocoder_train_create(Ctx *ctx, const Config *cfg, ShardInfo si, int audio_samples, ParamSet *ps,
                                   ParamSet *ps_ema, McmErr *err);
void vocoder_train_destroy(VocoderTrain *v);
/* The loss of one batch (its mels and audio); with the discriminators, their step at lr first. */
VocoderLoss vocoder_train_loss(Ctx *ctx, VocoderTrain *v, const Batch *b, float lr);
/* Writes <run.out_dir>/vocoder.h5 from the exported copy (rank 0's caller). */
int vocoder_train_export(Ctx *ctx, VocoderTrain *v, McmErr *err);
/* The discriminators (NULL with train.adversarial = false). */
VocoderDisc *vocoder_train_disc(VocoderTrain *v);
/* Their weights and AdamW state into / from a checkpoint ("disc/<name>", "opt_disc");
 * no-ops without discriminators. */
int vocoder_train_save(Ctx *ctx, VocoderTrain *v, TensorFile *tf, McmErr *err);
int vocoder_train_load(Ctx *ctx, VocoderTrain *v, TensorFile *tf, McmErr *err);

#ifdef __cplusplus
}
#endif
