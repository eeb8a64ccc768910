/* MusicLDM's mel front end (reference/musicldm.md §1): log-mel spectrogram of a 16 kHz
 * waveform, as MusicLDM's TacotronSTFT computes it and librosa reproduces it:
 *
 *   frames  centre padding: n_fft/2 samples reflected at each end ("reflect": the edge
 *           sample is not repeated), frame t starts at padded sample t·hop;
 *           mel_frames(n) = n/hop + 1
 *   window  periodic Hann of length win (scipy get_window('hann', win, fftbins=True)),
 *           centred in n_fft
 *   STFT    magnitude |X[k]| = sqrt(re² + im²), k = 0 .. n_fft/2 (not the power)
 *   mel     Slaney mel scale, Slaney area normalisation (librosa.filters.mel defaults),
 *           n_mels triangles between fmin and fmax
 *   log     ln(max(mel, log_floor)), natural log, no further normalisation
 *
 * Output layout (T, M): T frames (time) × M = n_mels, time-major, as the VAE takes it.
 *
 * The FFT is FFTW (single precision) with a plan made once per Mel with FFTW_ESTIMATE:
 * ESTIMATE picks the algorithm from the size alone, so the same input gives the same bits
 * on every run (FFTW_MEASURE times candidates and may pick differently run to run, which
 * would make prepared shards irreproducible); for n_fft = 1024 it costs nothing measurable.
 *
 * Threads: a Mel holds scratch buffers, so each thread needs its own; mel_create and
 * mel_destroy may be called from any thread (FFTW's planner is serialised inside).
 */
#pragma once
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct MelConfig {
  int rate, n_fft, hop, win, n_mels;
  float fmin, fmax, log_floor;
} MelConfig;

/* MusicLDM: 16000 Hz, n_fft 1024, hop 160, win 1024, 64 mels, 0–8000 Hz, floor 1e-5. */
MelConfig mel_config_musicldm(void);

typedef struct Mel Mel; /* window, filterbank, FFTW plan, scratch */

/* Checks the configuration (positive sizes, even n_fft, win <= n_fft, 0 <= fmin < fmax <=
 * rate/2, log_floor > 0, no empty mel filter) and builds the plan. NULL + err on bad values. */
Mel *mel_create(const MelConfig *cfg, McmErr *err);
void mel_destroy(Mel *m);
const MelConfig *mel_get_config(const Mel *m);

/* Frames for n samples with centre padding: n/hop + 1. */
int64_t mel_frames(const Mel *m, int64_t n_samples);

/* Reflect padding needs n_samples > n_fft/2; returns -1 with a message naming the length
 * (in samples and seconds) otherwise. Call it on user audio before mel_compute. */
int mel_check_length(const Mel *m, int64_t n_samples, McmErr *err);

/* wav (n) -> out (mel_frames(n), n_mels) = ln(max(filterbank · |STFT(wav)|, log_floor)).
 * A too-short wav (see mel_check_length) is a caller bug and exits naming the lengths. */
void mel_compute(Mel *m, const float *wav, int64_t n, float *out);

/* The filterbank (n_mels, n_fft/2 + 1), row-major. */
const float *mel_filterbank(const Mel *m);

/* ---------------------------------------------------------------- a plain magnitude STFT
 * For analyses other than the mel front end (data/adherence.h: onsets, chroma), on the same
 * FFTW plumbing so that the planner is serialised in one place. Periodic Hann window of
 * length n_fft; frame `start` covers wav[start .. start + n_fft), samples outside [0, n)
 * are zeros (so frames may hang over either end). */
typedef struct MagStft MagStft;

/* n_fft even, 4 .. 2^22. NULL with err otherwise. */
MagStft *mag_stft_create(int n_fft, McmErr *err);
void mag_stft_destroy(MagStft *s);

/* mag (n_fft/2 + 1) = |FFT(window · wav[start .. start + n_fft))|. */
void mag_stft_frame(MagStft *s, const float *wav, int64_t n, int64_t start, float *mag);

#ifdef __cplusplus
}
#endif
