/* The mel → fbank bridge: MusicLDM's 64-bin log-magnitude mel to the 128-bin Kaldi-style log
 * fbank AudioMAE was pretrained on (distillation.md §3.2, §3.3, §7), and that Kaldi fbank
 * itself (the exact path, and the target the bridge is fitted to).
 *
 * Kaldi fbank (kaldi_fbank_compute), AudioMAE's settings of torchaudio.compliance.kaldi.fbank:
 *   frames   snip_edges: frame t is samples [t·shift, t·shift + len), len 400 (25 ms), shift 160
 *            (10 ms); T = 1 + (n − len) / shift frames (0 when n < len)
 *   per frame  remove the DC offset (subtract the frame mean); pre-emphasis 0.97
 *            (y[i] = x[i] − 0.97·x[i−1], y[0] = x[0] − 0.97·x[0]); symmetric Hann window
 *            0.5 − 0.5·cos(2πi/(len−1)); zero-pad to the next power of two (512)
 *   power    |FFT|², bins 0 .. 255 (Kaldi's filters give the Nyquist bin weight 0)
 *   mel      F = 128 HTK-mel triangles (mel(f) = 1127·ln(1 + f/700)) equally spaced in mel
 *            between 20 Hz and rate/2, weights max(0, min(up, down)) evaluated in mel
 *   log      ln(max(energy, FLT_EPSILON))
 * Output (T, F), time-major. AudioMAE then pads or cuts to its frame count with zeros and
 * normalises (x − mean)/(2·std) with AudioSet's mean −4.2677393, std 4.5689974.
 *
 * The bridge (design). The two front ends differ in window (1024-sample periodic Hann vs
 * 400-sample symmetric Hann after pre-emphasis), magnitude vs power, Slaney vs HTK mel, and
 * frame centre (MusicLDM frame t is centred on sample 160·t, Kaldi frame t on 160·t + 200).
 * No map from one to the other is exact: the long window has finer frequency and coarser time
 * detail. mcm uses a per-frame affine map in the log domain,
 *
 *   fbank[b, t, :] = W · mel[b, min(t + 1, T − 1), :] + bias        W (F_out, F_in), bias (F_out)
 *
 * (the one-frame shift puts the mel frame within 40 samples of the Kaldi frame centre), then
 * AudioMAE's pad/cut and normalisation. Why the log domain: AudioMAE sees log energies, so
 * the fit minimises exactly the error AudioMAE's input has; the map is linear (one matmul,
 * exactly differentiable, negligible cost); it is fitted in closed form (ridge least squares
 * over frames of real audio, bridge_fit_*). A power-domain map log(A·exp(2·mel)) was the
 * alternative; it fits loud frames and leaves quiet ones (most of the log error) to chance.
 * The fitted W is close to a 128×64 interpolation matrix plus a level offset (2× for power).
 *
 * Fitted once with  build/cpu/tools/fit_bridge --out checkpoints/bridge.h5 data/demo/audio/clip_0*.wav
 * (any 16 kHz music; it prints the held-out error). On 40 demo clips (32 for the fit, 8 held
 * out): RMS error 0.96 in natural-log energy (0.105 in AudioMAE's normalised units) against a
 * target spread of 2.95, i.e. R² ≈ 0.89, roughly uniform over the 128 bins; a 3-frame context
 * gave only 0.93. The rest is what a per-frame map cannot know: the 400-sample window's time
 * detail and its smeared harmonics.
 * Stored as an HDF5 tensor file: "bridge.weight" (F_out, F_in), "bridge.bias" (F_out), and
 * attributes "bridge" = "log-affine-v1" and, from tools/fit_bridge, "fit_frames", "fit_rms",
 * "heldout_rms", "heldout_spread" (log-fbank units).
 */
#pragma once
#include <stdint.h>

#include "core/tensorfile.h"
#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AUDIOMAE_FBANK_MEAN (-4.2677393f)
#define AUDIOMAE_FBANK_STD 4.5689974f

/* ---------------------------------------------------------------- Kaldi fbank (CPU) */

typedef struct KaldiFbankConfig {
  int rate;         /* 16000 */
  int frame_len;    /* samples per frame: 400 (25 ms) */
  int frame_shift;  /* 160 (10 ms) */
  int n_mels;       /* F: 128 */
  float low_freq;   /* 20 Hz */
  float high_freq;  /* ≤ 0: rate/2 + high_freq (Kaldi); 0 = Nyquist */
  float preemph;    /* 0.97 */
} KaldiFbankConfig;

/* AudioMAE's front end: 16 kHz, 25 ms / 10 ms, 128 bins, 20 Hz – Nyquist, pre-emphasis 0.97. */
KaldiFbankConfig kaldi_fbank_config_audiomae(void);
int kaldi_fbank_check(const KaldiFbankConfig *cfg, McmErr *err);
/* Frames for n samples (snip_edges): 1 + (n − len)/shift, 0 when n < len. */
int64_t kaldi_fbank_frames(const KaldiFbankConfig *cfg, int64_t n);
/* wav (n) -> out (kaldi_fbank_frames(n), n_mels). Fatal on a config that fails the check.
 * OpenMP over frames. */
void kaldi_fbank_compute(const KaldiFbankConfig *cfg, const float *wav, int64_t n, float *out);
/* The filterbank (n_mels, fft/2 + 1), row-major, malloc'd; *n_fft receives the FFT size. */
float *kaldi_fbank_filters(const KaldiFbankConfig *cfg, int *n_fft);

/* AudioMAE's whole exact front end for one clip (dataset.py _wav2fbank): subtract the clip
 * mean, Kaldi fbank, pad with zeros / cut to out_frames, normalise. out (out_frames, n_mels). */
void audiomae_fbank_from_wav(const KaldiFbankConfig *cfg, const float *wav, int64_t n, int out_frames, float *out);

/* ---------------------------------------------------------------- the bridge */

typedef struct Bridge {
  int f_in, f_out;   /* 64 MusicLDM mel bins, 128 fbank bins */
  Tensor *w, *b;     /* (F_out, F_in), (F_out): raw fbank = w · mel + b (frozen, persistent) */
  Tensor *wn, *bn;   /* the same with AudioMAE's normalisation folded in */
} Bridge;

/* Zero map of the given sizes (persistent memory of ctx). */
Bridge *bridge_create(Ctx *ctx, int f_in, int f_out);
/* Sets w, b from host values (F_out·F_in, F_out) and refolds the normalisation. */
void bridge_set(Ctx *ctx, Bridge *br, const float *w, const float *b);
/* Reads "bridge.weight", "bridge.bias" from a tensor file with shape checks (a file fitted for
 * other sizes is an error naming both). -1 with err on failure. */
int bridge_load(Ctx *ctx, Bridge *br, const char *path, McmErr *err);
int bridge_save(Ctx *ctx, const Bridge *br, TensorFile *tf, McmErr *err);

/* mel (B, 1, T, F_in) log-magnitude -> AudioMAE input (B, 1, out_t, F_out), normalised:
 * the per-frame map above on the shifted frames, then zero padding (of the raw fbank, as
 * AudioMAE's loader pads) or cutting to out_t frames. Differentiable w.r.t. mel (w, b frozen). */
Tensor *bridge_apply(Ctx *ctx, const Bridge *br, Tensor *mel, int out_t);

/* Fitting, in closed form: accumulate the normal equations of pairs (mel frames, fbank frames)
 * then solve (XᵀX + λ·I)·[W | b]ᵀ = XᵀY in double precision (Cholesky). */
typedef struct BridgeFit {
  int f_in, f_out;
  double *xtx;  /* (F_in+1)² */
  double *xty;  /* (F_in+1) × F_out */
  double yy;    /* Σ y² for the relative residual */
  int64_t frames;
} BridgeFit;
void bridge_fit_init(BridgeFit *f, int f_in, int f_out);
void bridge_fit_free(BridgeFit *f);
/* mel (T_mel, F_in) and fbank (T_fb, F_out) of one clip; pairs fbank frame t with mel frame
 * min(t + 1, T_mel − 1) for t < T_fb. */
void bridge_fit_add(BridgeFit *f, const float *mel, int64_t t_mel, const float *fbank, int64_t t_fb);
/* Solves with ridge λ·(frames) on the weights (not the bias); w (F_out·F_in), b (F_out).
 * -1 with err when there are no frames or the system is singular. */
int bridge_fit_solve(const BridgeFit *f, double ridge, float *w, float *b, McmErr *err);
/* The per-frame map on the host: one clip mel (T_mel, F_in) -> raw fbank (t_fb, F_out). */
void bridge_apply_host(const float *w, const float *b, int f_in, int f_out, const float *mel, int64_t t_mel,
                       int64_t t_fb, float *out);

#ifdef __cplusplus
}
#endif
