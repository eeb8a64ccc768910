/* Evaluation: Fréchet distances between a generated and a reference set of audio files, on
 * embeddings mcm computes itself (issue 9), plus per-set summaries, written as a JSON report.
 *
 * Embeddings per clip:
 *   log-mel   MusicLDM's 64-bin log-mel (data/mel.h) of the whole file after MusicLDM's
 *             waveform normalisation; per bin the mean and the (population) std over frames:
 *             a 128-d vector [mean_0..63, std_0..63].
 *   AudioMAE  (optional) AudioMAE's input (exact Kaldi fbank, or MusicLDM mel through the
 *             fitted bridge) → encoder, no grad, batched, any device → the readout of the last
 *             block (patch tokens + cls, before the final norm) mean-pooled over tokens: C-d.
 *
 * Fréchet distance between the Gaussian fits N(μ1, Σ1), N(μ2, Σ2) (sample mean, unbiased
 * covariance with n − 1, as FID/FAD compute it):
 *   FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^{1/2}
 * Σ1Σ2 is not symmetric, but it is similar to M = Σ1^{1/2} Σ2 Σ1^{1/2}, which is symmetric
 * positive semi-definite, so tr (Σ1Σ2)^{1/2} = Σ_i sqrt(λ_i(M)). Both square roots come from
 * LAPACK's symmetric eigen-solver (dsyev, exported by OpenBLAS) in double precision, negative
 * round-off eigenvalues clamped to 0. Unlike a general sqrtm (Schur form), this never produces
 * complex parts on the rank-deficient covariances that small sets (n ≤ d) give. A result below
 * 0 by round-off is reported as 0.
 *
 * On request (EvalLoadOptions) the loader also runs the prompt-adherence detectors on every
 * clip (tempo and key, data/adherence.h) and keeps the first clips' log-mels for pictures; the
 * evaluation report (data/eval_report.h) uses both.
 *
 * Bad input never ends the program: an unreadable / non-audio / too-short file is skipped and
 * listed with its reason; a missing folder or fewer than 2 usable files (a covariance needs 2)
 * is an error (-1 with one line in err naming the folder). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ statistics (double) */

/* x (n, d) row-major -> mu (d), sigma (d, d) with divisor n − 1. -1 with err when n < 2. */
int eval_gauss_fit(const float *x, int n, int d, double *mu, double *sigma, McmErr *err);

/* Fréchet distance between N(mu1, s1) and N(mu2, s2), all (d) / (d, d), symmetric PSD.
 * -1 with err if LAPACK fails to converge or a value is not finite. */
int eval_frechet(const double *mu1, const double *s1, const double *mu2, const double *s2, int d, double *fd,
                 McmErr *err);

/* Both fits and the distance: a (na, d), b (nb, d). */
int eval_frechet_sets(const float *a, int na, const float *b, int nb, int d, double *fd, McmErr *err);

/* mel (T, M) -> emb (2M): per-bin mean over frames, then per-bin population std. T >= 1. */
void eval_mel_embedding(const float *mel, int64_t T, int M, float *emb);

/* ------------------------------------------------------------------ sets of files */

typedef struct EvalMae EvalMae; /* AudioMAE feature extractor: context, weights, optional bridge */

/* Loads AudioMAE weights (sizes from the file's `config` attribute, ViT-B for absent keys) on
 * `device` ("cpu", "cuda", "cuda:N", "auto"); bridge_path NULL = exact Kaldi fbank, else the
 * mel → fbank bridge file. batch >= 1 clips per forward. NULL with err on failure. */
EvalMae *eval_mae_create(const char *weights, const char *bridge_path, const char *device, int batch, McmErr *err);
void eval_mae_destroy(EvalMae *m);
int eval_mae_dim(const EvalMae *m);

typedef struct EvalSkip {
  char *file;    /* path */
  char *reason;  /* one line */
} EvalSkip;

typedef struct EvalSet {
  char *dir;
  int n;                    /* usable files */
  char **files;             /* (n) their paths, in name order */
  double seconds;           /* total duration */
  double mean_rms;          /* mean over files of each file's RMS (before normalisation) */
  double silence_fraction;  /* fraction of 100 ms windows with RMS below -60 dBFS (1e-3) */
  float *mel_emb;           /* (n, 128) */
  float *mae_emb;           /* (n, mae dim), NULL without AudioMAE */
  int mae_dim;
  double *tempo;            /* (n) adh_tempo of each clip (data/adherence.h), or NULL */
  int *key;                 /* (n) adh_key of each clip, or NULL */
  float **mels;             /* (n_mels_kept) log-mel (frames, 64) of the first clips, or NULL */
  int *mel_frames;          /* (n_mels_kept) */
  int n_mels_kept;
  EvalSkip *skipped;
  int n_skipped;
} EvalSet;

typedef struct EvalLoadOptions {
  EvalMae *mae;   /* AudioMAE features too, or NULL */
  bool adherence; /* tempo and key of every clip (set->tempo, set->key) */
  int keep_mels;  /* keep the log-mels of the first this many clips (set->mels) */
} EvalLoadOptions;

/* Reads every regular file of dir (sorted by name, dot-files ignored) at 16 kHz; unusable ones
 * go to set->skipped. Features as opt asks (NULL: log-mel embeddings only). -1 with err if dir
 * cannot be listed or fewer than 2 files are usable (set is then freed). */
int eval_set_load_with(const char *dir, const EvalLoadOptions *opt, EvalSet *set, McmErr *err);
/* eval_set_load_with and only an AudioMAE (mae may be NULL). */
int eval_set_load(const char *dir, EvalMae *mae, EvalSet *set, McmErr *err);
void eval_set_free(EvalSet *set);

/* The set's summary as a JSON object {dir, files, seconds, mean_rms, silence_fraction,
 * skipped: [{file, reason}]} (a jansson json_t *, new reference). */
struct json_t *eval_set_json(const EvalSet *s);

/* JSON text of root with a final newline, malloc'd; root is released. */
char *eval_json_text(struct json_t *root);

/* ------------------------------------------------------------------ the whole tool */

typedef struct EvalOptions {
  const char *generated, *reference;  /* folders (required) */
  const char *audiomae;               /* weights, or NULL */
  const char *bridge;                 /* bridge file, or NULL = exact fbank */
  const char *device;                 /* for AudioMAE; NULL = "auto" */
  int batch;                          /* AudioMAE clips per forward; <= 0 = 8 */
  const char *out;                    /* report path; NULL = stdout */
} EvalOptions;

/* Loads both sets, computes the distances and writes the JSON report (atomically when out is
 * a path). *report (if not NULL) receives the JSON text (free() it). -1 with err on failure. */
int eval_run(const EvalOptions *opt, char **report, McmErr *err);

#ifdef __cplusplus
}
#endif
