/* [train] mode = vocoder: the HiFi-GAN generator (models/hifigan.h) trained on prepared
 * audio, the quick-start objective of issue 9 (train.adversarial = false: no
 * discriminators). The trainer (trainer.c) owns the loop, the optimizer (AdamW; HiFi-GAN
 * trains with β = 0.8, 0.99: configs/demo_vocoder.ini sets them), the gradient clipping,
 * checkpoints, resume, logs and data parallelism; this file owns the network, the
 * differentiable front ends, the objective and the exported weights.
 *
 * Data: shards made with [prepare] keep_audio = true hold, per row, the log-mel (T, M) and
 * the normalised waveform segment (S = T·hop samples) it was computed from.
 *
 * Objective, per process batch of B rows, mel (B, T, M), wav (B, S):
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
  float mel, stft;  /* host copies of the two terms (mel already weighted) */
} VocoderLoss;

/* The objective above: mel (B, T, M), wav (B, S) with S = T·hop. */
VocoderLoss vocoder_objective(Ctx *ctx, Hifigan *g, const DiffMel *dm, const MrStft *mr, Tensor *mel, Tensor *wav,
                              float mel_weight);

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
/* The loss of one batch (its mels and audio). */
VocoderLoss vocoder_train_loss(Ctx *ctx, VocoderTrain *v, const Batch *b);
/* Writes <run.out_dir>/vocoder.h5 from the exported copy (rank 0's caller). */
int vocoder_train_export(Ctx *ctx, VocoderTrain *v, McmErr *err);

#ifdef __cplusplus
}
#endif
