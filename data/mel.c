/* MusicLDM's log-mel front end on FFTW (see mel.h for the definition). The filterbank is
 * built in double precision the way librosa.filters.mel builds it and stored as fp32; each
 * mel row touches only the FFT bins inside its triangle, so the product is sparse. */
#include "mel.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>

struct Mel {
  MelConfig cfg;
  int K;           /* FFT bins: n_fft/2 + 1 */
  float *window;   /* (n_fft) periodic Hann of length win, centred */
  float *fb;       /* (M, K) filterbank */
  int *lo, *hi;    /* (M) each row's nonzero bins are [lo, hi) */
  float *frame;    /* (n_fft) windowed frame, FFTW input */
  fftwf_complex *spec; /* (K) FFTW output */
  float *mag;      /* (K) |spec| */
  fftwf_plan plan;
};

/* FFTW's planner (plan creation and destruction) is not thread-safe; executing distinct
 * plans is. This lock is the one piece of process state mel.c keeps. */
static pthread_mutex_t fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

/* An N-point real-to-complex FFT: its input (N) and output (N/2 + 1) buffers and plan. */
static fftwf_plan r2c_create(int N, float **frame, fftwf_complex **spec) {
  *frame = fftwf_malloc((size_t)N * sizeof(float));
  *spec = fftwf_malloc((size_t)(N / 2 + 1) * sizeof(fftwf_complex));
  MCM_CHECK(*frame && *spec, "fftwf_malloc of %d floats failed", N);
  pthread_mutex_lock(&fftw_planner_lock);
  fftwf_plan plan = fftwf_plan_dft_r2c_1d(N, *frame, *spec, FFTW_ESTIMATE);
  pthread_mutex_unlock(&fftw_planner_lock);
  MCM_CHECK(plan, "fftwf_plan_dft_r2c_1d(%d) failed", N);
  return plan;
}

static void r2c_destroy(fftwf_plan plan, float *frame, fftwf_complex *spec) {
  if (plan) {
    pthread_mutex_lock(&fftw_planner_lock);
    fftwf_destroy_plan(plan);
    pthread_mutex_unlock(&fftw_planner_lock);
  }
  fftwf_free(frame);
  fftwf_free(spec);
}

MelConfig mel_config_musicldm(void) {
  return (MelConfig){.rate = 16000, .n_fft = 1024, .hop = 160, .win = 1024, .n_mels = 64,
                     .fmin = 0.0f, .fmax = 8000.0f, .log_floor = 1e-5f};
}

/* ---------------------------------------------------------------- Slaney mel scale */

/* Linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4). */
static const double F_SP = 200.0 / 3.0, MIN_LOG_HZ = 1000.0, MIN_LOG_MEL = 15.0;

static double log_step(void) { return log(6.4) / 27.0; }

static double hz_to_mel(double f) {
  return f >= MIN_LOG_HZ ? MIN_LOG_MEL + log(f / MIN_LOG_HZ) / log_step() : f / F_SP;
}

static double mel_to_hz(double m) {
  return m >= MIN_LOG_MEL ? MIN_LOG_HZ * exp(log_step() * (m - MIN_LOG_MEL)) : F_SP * m;
}

/* Triangles between n_mels + 2 points spaced evenly in mel, each scaled by 2 / (its width
 * in Hz) (Slaney area normalisation). The arithmetic follows librosa's order (linspace,
 * rfftfreq, ramps / fdiff) so the fp32 result matches it to the last bit or nearly.
 * Returns the index of an empty filter, or -1 when all are non-empty. */
static int build_filterbank(Mel *m) {
  const MelConfig *c = &m->cfg;
  const int M = c->n_mels, K = m->K;
  double *edge = MALLOC_CHECK((size_t)(M + 2) * sizeof(double)); /* (M+2) Hz */
  double *freq = MALLOC_CHECK((size_t)K * sizeof(double));       /* (K) Hz */
  double lo_mel = hz_to_mel(c->fmin), hi_mel = hz_to_mel(c->fmax), step = (hi_mel - lo_mel) / (M + 1);
  for (int i = 0; i < M + 2; i++) edge[i] = mel_to_hz(i == M + 1 ? hi_mel : i * step + lo_mel);
  double bin_hz = 1.0 / (c->n_fft * (1.0 / c->rate));
  for (int k = 0; k < K; k++) freq[k] = k * bin_hz;
  int empty = -1;
  for (int i = 0; i < M; i++) {
    double enorm = 2.0 / (edge[i + 2] - edge[i]);
    float *row = m->fb + (size_t)i * K;
    m->lo[i] = K, m->hi[i] = 0;
    for (int k = 0; k < K; k++) {
      double lower = -(edge[i] - freq[k]) / (edge[i + 1] - edge[i]);
      double upper = (edge[i + 2] - freq[k]) / (edge[i + 2] - edge[i + 1]);
      double w = fmax(0.0, fmin(lower, upper));
      row[k] = (float)(w * enorm);
      if (row[k] != 0.0f) {
        if (k < m->lo[i]) m->lo[i] = k;
        m->hi[i] = k + 1;
      }
    }
    if (m->hi[i] == 0) {
      m->lo[i] = 0;
      if (empty < 0) empty = i;
    }
  }
  free(edge);
  free(freq);
  return empty;
}

/* ---------------------------------------------------------------- plan */

static int check_config(const MelConfig *c, McmErr *err) {
  if (c->rate <= 0) return mcm_err(err, "mel: rate %d Hz must be positive", c->rate);
  if (c->n_fft < 4 || c->n_fft > (1 << 20) || c->n_fft % 2)
    return mcm_err(err, "mel: n_fft %d must be even and in [4, 1048576]", c->n_fft);
  if (c->hop <= 0) return mcm_err(err, "mel: hop %d must be positive", c->hop);
  if (c->win <= 0 || c->win > c->n_fft) return mcm_err(err, "mel: win %d must be in [1, n_fft = %d]", c->win, c->n_fft);
  if (c->n_mels <= 0 || c->n_mels > c->n_fft / 2 + 1)
    return mcm_err(err, "mel: n_mels %d must be in [1, n_fft/2 + 1 = %d]", c->n_mels, c->n_fft / 2 + 1);
  if (!(c->fmin >= 0) || !(c->fmax > c->fmin) || !(c->fmax <= c->rate / 2.0))
    return mcm_err(err, "mel: need 0 <= fmin < fmax <= rate/2, got fmin %g, fmax %g, rate %d", c->fmin, c->fmax,
                   c->rate);
  if (!(c->log_floor > 0) || !isfinite(c->log_floor))
    return mcm_err(err, "mel: log_floor %g must be a positive number", c->log_floor);
  return 0;
}

Mel *mel_create(const MelConfig *cfg, McmErr *err) {
  if (check_config(cfg, err) != 0) return NULL;
  Mel *m = CALLOC_CHECK(1, sizeof *m);
  m->cfg = *cfg;
  const int N = cfg->n_fft, K = N / 2 + 1, M = cfg->n_mels, W = cfg->win;
  m->K = K;
  m->fb = MALLOC_CHECK((size_t)M * K * sizeof(float));
  m->lo = MALLOC_CHECK((size_t)M * sizeof(int));
  m->hi = MALLOC_CHECK((size_t)M * sizeof(int));
  int empty = build_filterbank(m);
  if (empty >= 0) {
    mcm_err(err, "mel: filter %d of %d is empty (n_mels %d is too many for n_fft %d at %d Hz between %g and %g Hz)",
            empty, M, M, N, cfg->rate, cfg->fmin, cfg->fmax);
    mel_destroy(m);
    return NULL;
  }
  /* Periodic Hann: w[i] = 0.5 − 0.5·cos(2πi/W), zero-padded equally on both sides to N. */
  m->window = CALLOC_CHECK((size_t)N, sizeof(float));
  for (int i = 0; i < W; i++) m->window[(N - W) / 2 + i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / W));
  m->mag = MALLOC_CHECK((size_t)K * sizeof(float));
  m->plan = r2c_create(N, &m->frame, &m->spec);
  return m;
}

void mel_destroy(Mel *m) {
  if (!m) return;
  r2c_destroy(m->plan, m->frame, m->spec);
  free(m->window);
  free(m->fb);
  free(m->lo);
  free(m->hi);
  free(m->mag);
  free(m);
}

const MelConfig *mel_get_config(const Mel *m) { return &m->cfg; }
const float *mel_filterbank(const Mel *m) { return m->fb; }

int64_t mel_frames(const Mel *m, int64_t n_samples) { return n_samples / m->cfg.hop + 1; }

int mel_check_length(const Mel *m, int64_t n_samples, McmErr *err) {
  if (n_samples > m->cfg.n_fft / 2) return 0;
  return mcm_err(err, "audio too short for the mel front end: %lld samples (%.3f s); reflect padding needs more than "
                 "%d (n_fft/2)", (long long)n_samples, (double)n_samples / m->cfg.rate, m->cfg.n_fft / 2);
}

/* ---------------------------------------------------------------- compute */

void mel_compute(Mel *m, const float *wav, int64_t n, float *out) {
  const int N = m->cfg.n_fft, K = m->K, M = m->cfg.n_mels, P = N / 2;
  MCM_CHECK(n > P, "mel_compute: %lld samples, reflect padding needs more than %d (call mel_check_length first)",
            (long long)n, P);
  const int64_t T = mel_frames(m, n);
  const double floor_ = m->cfg.log_floor;
  for (int64_t t = 0; t < T; t++) {
    /* Padded sample p = t·hop + i is wav[p − P], reflected at both ends. */
    int64_t start = t * m->cfg.hop - P;
    for (int i = 0; i < N; i++) {
      int64_t s = start + i;
      if (s < 0) s = -s;
      else if (s >= n) s = 2 * (n - 1) - s;
      m->frame[i] = wav[s] * m->window[i];
    }
    fftwf_execute(m->plan);
    for (int k = 0; k < K; k++) {
      float re = m->spec[k][0], im = m->spec[k][1];
      m->mag[k] = sqrtf(re * re + im * im);
    }
    float *o = out + t * M; /* (M) */
    for (int j = 0; j < M; j++) {
      const float *row = m->fb + (size_t)j * K;
      double acc = 0;
      for (int k = m->lo[j]; k < m->hi[j]; k++) acc += (double)row[k] * m->mag[k];
      o[j] = (float)log(fmax(acc, floor_));
    }
  }
}

/* ---------------------------------------------------------------- plain STFT */

struct MagStft {
  int n_fft;
  float *window;       /* (n_fft) periodic Hann */
  float *frame;        /* (n_fft) FFTW input */
  fftwf_complex *spec; /* (n_fft/2 + 1) FFTW output */
  fftwf_plan plan;
};

MagStft *mag_stft_create(int n_fft, McmErr *err) {
  if (n_fft < 4 || n_fft > (1 << 22) || n_fft % 2) {
    mcm_err(err, "mag_stft: n_fft %d must be even and in [4, 4194304]", n_fft);
    return NULL;
  }
  MagStft *s = CALLOC_CHECK(1, sizeof *s);
  s->n_fft = n_fft;
  s->window = MALLOC_CHECK((size_t)n_fft * sizeof(float));
  for (int i = 0; i < n_fft; i++) s->window[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / n_fft));
  s->plan = r2c_create(n_fft, &s->frame, &s->spec);
  return s;
}

void mag_stft_destroy(MagStft *s) {
  if (!s) return;
  r2c_destroy(s->plan, s->frame, s->spec);
  free(s->window);
  free(s);
}

void mag_stft_frame(MagStft *s, const float *wav, int64_t n, int64_t start, float *mag) {
  const int N = s->n_fft;
  for (int i = 0; i < N; i++) {
    int64_t p = start + i;
    s->frame[i] = p >= 0 && p < n ? wav[p] * s->window[i] : 0.0f;
  }
  fftwf_execute(s->plan);
  for (int k = 0; k <= N / 2; k++) {
    float re = s->spec[k][0], im = s->spec[k][1];
    mag[k] = sqrtf(re * re + im * im);
  }
}
