/* Prompt adherence without a learned model (issue 9). The demo captions are written from
 * known attributes (data/demo_dataset.h: genre, key, tempo, lead instrument), so plain signal
 * processing can check whether a generated clip matches its caption. Three detectors:
 *
 * Tempo (adh_tempo), in BPM.
 *   onsets   STFT over ADH_ONSET_SECONDS (windows are the power of two of samples nearest
 *            the time: 1024 at 16 kHz; periodic Hann, frames centred on t·hop, zeros beyond
 *            the ends), hop = rate / 100: ADH_FPS = 100 frames/s. Magnitudes summed into
 *            ADH_ONSET_BANDS mel bands (data/mel.h's Slaney filterbank, 0 .. rate/2), log,
 *            floored 80 dB below the clip's loudest band (so the result does not depend on
 *            the level and silence adds nothing). Spectral flux: per band the increase from
 *            the previous frame, half-wave rectified, mean over bands. Mel bands rather than
 *            the 513 linear bins: over linear bins the hi-hats' broadband top octave is half
 *            of every frame, so eighth-note hats outweigh kick and snare and the estimate
 *            doubles (a synthetic rock beat at 72 BPM read as 144; on the 200 demo clips acc1
 *            0.86 / acc2 0.95 over bins, 0.88 / 0.98 over mel bands).
 *   pulse    the envelope minus its 1 s centred moving average, rectified again, minus its
 *            mean; its autocorrelation r(τ), unbiased (each lag divided by its overlap),
 *            normalised by r(0), for lags up to min(4·τ(50 BPM), frames / 2).
 *   tempo    every candidate b on a 0.05 BPM grid over [ADH_TEMPO_MIN, ADH_TEMPO_MAX] scores
 *            the mean of r at the first four multiples of its beat period τ_b = 60·fps / b
 *            that fit (linear interpolation between lags): a comb that sees the beat, the bar
 *            and the half bar agree, and a subdivision (eighth notes) only half of them. The
 *            score is multiplied by the prior
 *                p(b) = exp(−½ (log2(b / ADH_TEMPO_PRIOR_BPM) / ADH_TEMPO_PRIOR_OCTAVES)²),
 *            a log-normal over tempo that breaks the ties between a tempo and its half or
 *            double (which a comb cannot tell apart) towards the middle of the demo's genres
 *            (60–180 BPM; measured flat between centres 110 and 120). The estimate is the best
 *            candidate; 0 ("no tempo") when none scores above 0 (silence, no periodicity, or
 *            a clip too short to hold one 200 BPM beat period twice). On the 200 demo
 *            clips (seed 0): acc1 0.88, acc2 0.98. A limit it shares with every comb: a
 *            rock beat (kick on 1 and 3, snare on 2 and 4) repeats every two beats more
 *            exactly than every beat, so near the prior's edges it may read at half the
 *            tempo (150 BPM as 75) — acc2's tolerance exists for this.
 *   match    acc1: |est − ref| <= 8 % of ref. acc2: also ref × 2, × 1/2, × 3 or × 1/3 within
 *            8 % of that value (the usual octave-error tolerant score, MIREX tempo style).
 *
 * Key (adh_key), one of 24: numbered tonic + 12·minor, tonic 0 = C ... 11 = B, so enharmonic
 * spellings (Bb = A#) are the same key.
 *   chroma   STFT of ADH_CHROMA_SECONDS (16384 samples at 16 kHz, periodic Hann: 0.98 Hz
 *            bins, fine enough to separate semitones at 55 Hz), hop a quarter of that. Every bin between 55 and
 *            2000 Hz belongs to the MIDI note nearest its frequency (equal temperament,
 *            A4 = 440 Hz); per frame each note takes the peak magnitude of its bins (a tone
 *            is one peak however many bins its semitone spans, so the dense bins of the upper
 *            octaves do not outweigh the bass), and the notes add into their pitch classes.
 *   key      the largest Pearson correlation between the chroma and the Krumhansl–Kessler
 *            probe-tone profiles (major and minor, Krumhansl 1990), rotated to each tonic.
 *            The profiles are first spread over each degree's harmonics (h = 1..4, weight
 *            0.6^(h−1), the harmonic template of Gómez 2006): the chroma of real instruments
 *            holds the 3rd harmonic of every note a fifth above it, which otherwise pulls the
 *            estimate to the dominant key. On the 200 demo clips (seed 0) this moved the exact
 *            accuracy from 0.56 (magnitude per bin, plain profiles) to 0.70; the rest are
 *            mostly relative and neighbouring keys that the short clips' progressions favour
 *            (a natural-minor i–VII–VI reads as the relative major).
 *   match    exact key; and the MIREX weighted score (adh_key_mirex): 1 the same key, 0.5 the
 *            estimate a perfect fifth above in the same mode, 0.3 the relative key (major ↔
 *            minor three semitones below), 0.2 the parallel key (same tonic, other mode), else 0.
 *
 * Genre (AdhNcm): a nearest-class-mean classifier on the 128-d log-mel embedding of
 * data/evaluate.h. The demo renders each genre with its own General MIDI programs, drums and
 * register, which the per-bin mean and spread of the log-mel see. The class means come from
 * the *reference* clips and their manifest labels — statistics of the real data, not a learned
 * network. Distances are Euclidean after dividing each dimension by its standard deviation
 * over the reference clips (so that no bin dominates by its scale). A reference clip is
 * classified leave-one-out (its own class mean without it), which makes the reference row an
 * honest ceiling rather than a memorised one. On the 200 demo clips: 0.70 leave-one-out
 * (0.65 with plain Euclidean distances), against 0.1 for a guess among the 10 genres.
 *
 * Labels (AdhLabels): the demo manifest (data/demo_dataset.h: {"data": [{"wav", "caption",
 * "genre", "key", "bpm", ...}]}); a missing attribute is unknown, a malformed one an error
 * naming the file and the entry. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ADH_FPS 100                /* onset frames per second */
#define ADH_ONSET_SECONDS 0.064    /* onset STFT window: 1024 samples at 16 kHz */
#define ADH_ONSET_BANDS 64         /* mel bands of the onset envelope */
#define ADH_TEMPO_MIN 50.0
#define ADH_TEMPO_MAX 200.0
#define ADH_TEMPO_PRIOR_BPM 110.0  /* the prior's centre ... */
#define ADH_TEMPO_PRIOR_OCTAVES 1.0 /* ... and its std in octaves */
#define ADH_TEMPO_TOLERANCE 0.08   /* acc1 / acc2 relative tolerance */
#define ADH_CHROMA_SECONDS 1.024   /* chroma STFT window: 16384 samples at 16 kHz */
#define ADH_CHROMA_FMIN 55.0
#define ADH_CHROMA_FMAX 2000.0
#define ADH_KEY_HARMONICS 4
#define ADH_KEY_HARMONIC_DECAY 0.6

/* ------------------------------------------------------------------ tempo */

/* The onset strength envelope of x (n) at `rate` Hz: *frames = n / hop + 1 values at ADH_FPS
 * frames per second (malloc'd, free() it). hop = rate / ADH_FPS. */
float *adh_onset_envelope(const float *x, int64_t n, int rate, int64_t *frames);

/* The tempo estimate in BPM, or 0 when there is none (see the top of this file). */
double adh_tempo(const float *x, int64_t n, int rate);

/* acc1 (octaves false) or acc2 (octaves true) match of an estimate against the reference. */
bool adh_tempo_match(double est, double ref, bool octaves);

/* ------------------------------------------------------------------ key */

/* chroma (12): magnitude per pitch class (0 = C), summed over frames. */
void adh_chroma(const float *x, int64_t n, int rate, double chroma[12]);

/* The best of the 24 keys for a chroma vector; *corr (may be NULL) its correlation.
 * -1 for a flat chroma (all equal: silence). */
int adh_key_from_chroma(const double chroma[12], double *corr);

/* adh_key_from_chroma(adh_chroma(x)). */
int adh_key(const float *x, int64_t n, int rate);

/* "Bb minor", "A# minor", "c major" ... -> 0..23; -1 when it is not a key name (a letter A-G,
 * an optional '#' or 'b', then "major" or "minor", case-insensitive, spaces around). */
int adh_key_parse(const char *name);

/* key -> "Bb minor" (the demo composer's spelling). buf >= 16 bytes. */
const char *adh_key_name(int key, char *buf, size_t size);

/* The MIREX weighted score of an estimate against the reference (both 0..23). */
double adh_key_mirex(int est, int ref);

/* ------------------------------------------------------------------ genre */

typedef struct AdhNcm {
  int k, d;          /* classes, dimensions */
  int *count;        /* (k) fitting samples per class */
  double *sum;       /* (k, d) per class sum of standardised samples */
  double *scale;     /* (d) 1 / std of each dimension over the fitting samples (1 when constant) */
} AdhNcm;

/* Fits on x (n, d) with label[i] in [0, k), or -1 (not used). -1 with err when no sample has
 * a label. */
int adh_ncm_fit(AdhNcm *m, const float *x, const int *label, int n, int d, int k, McmErr *err);
void adh_ncm_free(AdhNcm *m);

/* The class whose mean is nearest to x (d). own >= 0 says x was a fitting sample of class
 * own: that class's mean is taken without it (leave-one-out; a class it alone made is then
 * left out). -1 when no class is left. */
int adh_ncm_predict(const AdhNcm *m, const float *x, int own);

/* ------------------------------------------------------------------ labels */

typedef struct AdhLabel {
  char *path;    /* the "wav" entry resolved against the manifest's folder */
  char *real;    /* realpath of path, or NULL when it does not exist */
  char *caption; /* NULL when absent */
  int genre;     /* index into AdhLabels.genres, -1 when absent */
  int key;       /* 0..23, -1 when absent */
  double bpm;    /* > 0, or 0 when absent */
} AdhLabel;

typedef struct AdhLabels {
  AdhLabel *e;
  int n;
  char **genres; /* distinct genre names, in order of first appearance */
  int n_genres;
} AdhLabels;

/* Reads a manifest; -1 with one line in err when it is unreadable, not JSON, has no "data"
 * array, or an entry has a malformed attribute ("key": "H minor", "bpm": -3, ...). */
int adh_labels_read(const char *manifest, AdhLabels *l, McmErr *err);
void adh_labels_free(AdhLabels *l);

/* The first entry with exactly this caption, or NULL. */
const AdhLabel *adh_labels_by_caption(const AdhLabels *l, const char *caption);

/* The entry whose audio is this file (the same file by realpath, else the same path), or NULL. */
const AdhLabel *adh_labels_by_path(const AdhLabels *l, const char *path);

/* Index of a genre name, or -1. */
int adh_genre_index(const AdhLabels *l, const char *name);

#ifdef __cplusplus
}
#endif
