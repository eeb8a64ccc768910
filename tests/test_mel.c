/* Tests for data/mel (MusicLDM's log-mel front end) and for resampling into it.
 *
 * Against librosa (tests/fixtures/mel.h5, made by mel.py beside it): the filterbank
 * elementwise, the log-mel for a short clip, a length that is not a multiple of the hop, and
 * 10.24 s, within 1e-4 in the log domain; clips at 22050, 44100 and 48000 Hz read through
 * audio_read (resampled to 16 kHz), against python-soxr + librosa. python-soxr wraps the same
 * libsoxr, so that checks the wiring (rate, VHQ, fp32 I/O, length), not the resampler; the
 * tone tests check the resampler independently: a tone keeps its frequency, level and phase,
 * and tones above the new Nyquist frequency are rejected by at least 60 dB.
 * Also: bad configurations, lengths, determinism across threads, and speed. */
#include <fftw3.h>
#include <pthread.h>
#include <sndfile.h>
#include <string.h>
#include <time.h>

#include "data/audio.h"
#include "data/mel.h"
#include "data/sndfile_check.h"
#include "tests/fixture.h"
#include "tests/test.h"

#define FIXTURE "tests/fixtures/mel.h5"
#define LOG_TOL 1e-4 /* absolute, in the log domain (the bar) */

/* ---------------------------------------------------------------- helpers */

/* Must match hash_u32 / test_signal in tests/fixtures/mel.py. */
static uint32_t hash_u32(uint32_t i, uint32_t seed) {
  uint32_t x = i + seed * 0x9E3779B9u;
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

/* 0.25 · noise in [-0.5, 0.5) + tones at 440 and 3000.5 Hz, zero over [4n/10, 5n/10). */
static float *test_signal(int64_t n, int rate, uint32_t seed) {
  float *x = MALLOC_CHECK((size_t)n * sizeof(float));
  double w1 = 2.0 * M_PI * 440.0 / rate, w2 = 2.0 * M_PI * 3000.5 / rate;
  for (int64_t i = 0; i < n; i++) {
    float noise = (float)(hash_u32((uint32_t)i, seed) >> 8) * 0x1p-24f - 0.5f;
    double v = 0.25 * (double)noise + 0.3 * sin(w1 * (double)i) + 0.2 * sin(w2 * (double)i);
    x[i] = (float)v;
  }
  for (int64_t i = 4 * n / 10; i < 5 * n / 10; i++) x[i] = 0.0f;
  return x;
}

static float *tone(int64_t n, int rate, double hz, double amp) {
  float *x = MALLOC_CHECK((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) x[i] = (float)(amp * sin(2.0 * M_PI * hz * (double)i / rate));
  return x;
}

static Mel *musicldm_mel(void) {
  MelConfig cfg = mel_config_musicldm();
  McmErr err = {{0}};
  Mel *m = mel_create(&cfg, &err);
  ASSERT(m, "mel_create: %s", err.msg);
  return m;
}

static float *log_mel(Mel *m, const float *wav, int64_t n, int64_t *frames) {
  *frames = mel_frames(m, n);
  float *out = MALLOC_CHECK((size_t)*frames * 64 * sizeof(float));
  mel_compute(m, wav, n, out);
  return out;
}

/* Compares rows `rows` (NULL: 0..n_rows-1) of got (T, 64) with ref (n_rows, 64). */
static void expect_log_mel(const char *what, const float *got, int64_t T, const float *ref, int64_t n_rows,
                           const float *rows) {
  double worst = 0;
  int64_t worst_t = 0, worst_m = 0;
  for (int64_t r = 0; r < n_rows; r++) {
    int64_t t = rows ? (int64_t)rows[r] : r;
    ASSERT(t >= 0 && t < T, "%s: fixture frame %lld outside mcm's %lld frames", what, (long long)t, (long long)T);
    for (int m = 0; m < 64; m++) {
      double d = fabs((double)got[t * 64 + m] - ref[r * 64 + m]);
      if (!(d <= worst)) worst = d, worst_t = t, worst_m = m;
    }
  }
  EXPECT(worst <= LOG_TOL, "%s: max |log-mel diff| %.3g > %.0e at frame %lld mel %lld", what, worst, LOG_TOL,
         (long long)worst_t, (long long)worst_m);
  printf("    %s: max |diff| vs librosa %.2e over %lld frames\n", what, worst, (long long)n_rows);
}

static void write_float_wav(const char *path, const float *x, int64_t n, int rate) {
  SF_INFO info = {.samplerate = rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
  SNDFILE *sf = SF_OPEN_CHECK(path, SFM_WRITE, &info);
  SF_CHECK(sf, path, sf_writef_float(sf, x, n) == n);
  sf_close(sf);
}

/* ---------------------------------------------------------------- against librosa */

TEST(mel_filterbank_matches_librosa) {
  Mel *m = musicldm_mel();
  Fixture *fx = fixture_open(FIXTURE);
  int64_t n;
  float *ref = fixture_values(fx, "fb", &n);
  ASSERT(n == 64 * 513, "fixture fb has %lld values, expected 64 x 513", (long long)n);
  const float *fb = mel_filterbank(m);
  double worst = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)fb[i] - ref[i]);
    EXPECT(d <= 1e-6 * fabs(ref[i]) + 1e-12, "fb[%lld][%lld] = %.9g, librosa %.9g", (long long)(i / 513),
           (long long)(i % 513), fb[i], ref[i]);
    if (d > worst) worst = d, at = i;
  }
  printf("    filterbank: max |diff| vs librosa %.2e (at %lld)\n", worst, (long long)at);
  free(ref);
  fixture_close(fx);
  mel_destroy(m);
}

TEST(mel_log_mel_matches_librosa) {
  Mel *m = musicldm_mel();
  Fixture *fx = fixture_open(FIXTURE);
  const int64_t lengths[] = {600, 20017, 163840}; /* just over n_fft/2; not a multiple of hop; 10.24 s */
  for (int c = 0; c < 3; c++) {
    int64_t n = lengths[c], T, n_ref, n_rows;
    char name[64], what[64];
    float *wav = test_signal(n, 16000, (uint32_t)n);
    float *got = log_mel(m, wav, n, &T);
    snprintf(name, sizeof name, "logmel/n%lld", (long long)n);
    snprintf(what, sizeof what, "%lld samples", (long long)n);
    float *ref = fixture_values(fx, name, &n_ref);
    float *rows = NULL;
    if (n == 163840) {
      EXPECT(T == 1025, "10.24 s gives %lld frames, expected 1025", (long long)T);
      snprintf(name, sizeof name, "logmel/n%lld_frames", (long long)n);
      rows = fixture_values(fx, name, &n_rows);
    } else {
      n_rows = T;
      ASSERT(n_ref == T * 64, "%s: fixture has %lld values, mcm %lld frames", what, (long long)n_ref, (long long)T);
    }
    ASSERT(n_ref == n_rows * 64, "%s: fixture has %lld values for %lld frames", what, (long long)n_ref,
           (long long)n_rows);
    expect_log_mel(what, got, T, ref, n_rows, rows);
    free(rows);
    free(ref);
    free(got);
    free(wav);
  }
  fixture_close(fx);
  mel_destroy(m);
}

/* Reads a float WAV at each rate through audio_read (resampled to 16 kHz) and compares the
 * waveform with python-soxr (same libsoxr: the wiring) and its log-mel with librosa. */
TEST(mel_resampled_input_matches_soxr_and_librosa) {
  Mel *m = musicldm_mel();
  Fixture *fx = fixture_open(FIXTURE);
  const int rates[] = {22050, 44100, 48000};
  for (int c = 0; c < 3; c++) {
    int rate = rates[c];
    int64_t n = rate + 123, k, T;
    float *x = test_signal(n, rate, (uint32_t)rate);
    char path[64], name[64], what[64];
    snprintf(path, sizeof path, "in_%d.wav", rate);
    write_float_wav(TEST_PATH(path), x, n, rate);
    Audio a;
    McmErr err = {{0}};
    ASSERT(audio_read(TEST_PATH(path), 16000, &a, &err) == 0, "audio_read: %s", err.msg);
    EXPECT(a.rate == 16000, "rate %d", a.rate);

    snprintf(name, sizeof name, "resample/r%d/n_out", rate);
    float *n_out = fixture_values(fx, name, &k);
    ASSERT(a.n == (int64_t)n_out[0], "%d Hz: %lld samples after resampling, python-soxr %lld", rate, (long long)a.n,
           (long long)n_out[0]);
    const char *parts[] = {"head", "mid", "tail"};
    const int64_t at[] = {0, a.n / 2, a.n - 64};
    double worst = 0;
    for (int p = 0; p < 3; p++) {
      snprintf(name, sizeof name, "resample/r%d/%s", rate, parts[p]);
      float *ref = fixture_values(fx, name, &k);
      for (int64_t i = 0; i < k; i++) worst = fmax(worst, fabs((double)a.samples[at[p] + i] - ref[i]));
      free(ref);
    }
    EXPECT(worst <= 1e-6, "%d Hz: resampled samples differ from python-soxr by %.3g", rate, worst);

    /* audio_resample on the buffer gives what audio_read gave. */
    float *y;
    int64_t n_y;
    ASSERT(audio_resample(x, n, rate, 16000, &y, &n_y, &err) == 0, "audio_resample: %s", err.msg);
    EXPECT(n_y == a.n && memcmp(y, a.samples, (size_t)n_y * sizeof(float)) == 0,
           "%d Hz: audio_resample and audio_read disagree", rate);
    free(y);

    float *got = log_mel(m, a.samples, a.n, &T);
    snprintf(name, sizeof name, "resample/r%d/logmel", rate);
    float *ref = fixture_values(fx, name, &k);
    ASSERT(k == T * 64, "%d Hz: fixture has %lld values, mcm %lld frames", rate, (long long)k, (long long)T);
    snprintf(what, sizeof what, "%d Hz -> 16 kHz (soxr max |diff| %.1e)", rate, worst);
    expect_log_mel(what, got, T, ref, T, NULL);
    free(ref);
    free(got);
    free(n_out);
    audio_free(&a);
    free(x);
  }
  fixture_close(fx);
  mel_destroy(m);
}

/* ---------------------------------------------------------------- the resampler on its own */

/* Least-squares amplitude and phase of a tone at `hz` over y[0..n) (n whole periods). */
static void fit_tone(const float *y, int64_t n, int rate, double hz, double *amp, double *phase) {
  double a = 0, b = 0;
  for (int64_t i = 0; i < n; i++) {
    double w = 2.0 * M_PI * hz * (double)i / rate;
    a += y[i] * cos(w);
    b += y[i] * sin(w);
  }
  a *= 2.0 / n, b *= 2.0 / n;
  *amp = sqrt(a * a + b * b);
  *phase = atan2(a, b); /* 0 for a pure sine */
}

TEST(mel_resampler_keeps_tone_frequency_level_and_phase) {
  /* 1 kHz at 0.5 for 2 s at 44.1 kHz -> 16 kHz; look at 1 s in the middle (1000 periods). */
  const int64_t n = 2 * 44100;
  float *x = tone(n, 44100, 1000.0, 0.5), *y;
  int64_t m;
  McmErr err = {{0}};
  ASSERT(audio_resample(x, n, 44100, 16000, &y, &m, &err) == 0, "%s", err.msg);
  EXPECT(m == 32000, "2 s at 16 kHz is %lld samples, expected 32000", (long long)m);
  const int64_t off = 8000, len = 16000;
  double amp, phase;
  /* The window starts at sample 8000 = 500 whole periods, so the phase is still 0. */
  fit_tone(y + off, len, 16000, 1000.0, &amp, &phase);
  double db = 20.0 * log10(amp / 0.5);
  EXPECT(fabs(db) <= 0.1, "tone level changed by %.4f dB", db);
  EXPECT(fabs(phase) <= 1e-3, "tone phase moved by %.3g rad (a time shift of %.3g samples)", phase,
         phase / (2 * M_PI) * 16);

  /* The spectrum peaks at 1000 Hz: 1 Hz bins over 16000 samples. */
  float *buf = fftwf_malloc(len * sizeof(float));
  fftwf_complex *spec = fftwf_malloc((len / 2 + 1) * sizeof(fftwf_complex));
  fftwf_plan plan = fftwf_plan_dft_r2c_1d((int)len, buf, spec, FFTW_ESTIMATE);
  memcpy(buf, y + off, len * sizeof(float));
  fftwf_execute(plan);
  int64_t peak = 0;
  double best = -1;
  for (int64_t k = 0; k <= len / 2; k++) {
    double p = (double)spec[k][0] * spec[k][0] + (double)spec[k][1] * spec[k][1];
    if (p > best) best = p, peak = k;
  }
  EXPECT(peak == 1000, "spectral peak at %lld Hz, expected 1000 Hz", (long long)peak);
  printf("    1 kHz tone 44.1 -> 16 kHz: level %+.5f dB, phase %.2e rad, peak %lld Hz\n", db, phase, (long long)peak);
  fftwf_destroy_plan(plan);
  fftwf_free(buf);
  fftwf_free(spec);
  free(x);
  free(y);
}

TEST(mel_resampler_rejects_tones_above_nyquist) {
  /* Tones at 9 kHz and 12 kHz cannot exist at 16 kHz; what comes out is aliasing. */
  const double freqs[] = {9000.0, 12000.0};
  for (int c = 0; c < 2; c++) {
    const int64_t n = 44100;
    float *x = tone(n, 44100, freqs[c], 0.5), *y;
    int64_t m;
    McmErr err = {{0}};
    ASSERT(audio_resample(x, n, 44100, 16000, &y, &m, &err) == 0, "%s", err.msg);
    double e = 0;
    const int64_t lo = 2000, hi = m - 2000; /* skip the onset and the end of the tone */
    for (int64_t i = lo; i < hi; i++) e += (double)y[i] * y[i];
    double rms = sqrt(e / (double)(hi - lo)), ref = 0.5 / sqrt(2.0);
    double rejection = 20.0 * log10(ref / fmax(rms, 1e-30));
    EXPECT(rejection >= 60.0, "%.0f Hz tone rejected by only %.1f dB", freqs[c], rejection);
    printf("    %.0f Hz tone 44.1 -> 16 kHz: rejected by %.1f dB\n", freqs[c], rejection);
    free(x);
    free(y);
  }
}

/* ---------------------------------------------------------------- configuration and lengths */

TEST(mel_config_musicldm_values) {
  MelConfig c = mel_config_musicldm();
  EXPECT(c.rate == 16000 && c.n_fft == 1024 && c.hop == 160 && c.win == 1024 && c.n_mels == 64, "sizes");
  EXPECT(c.fmin == 0.0f && c.fmax == 8000.0f && c.log_floor == 1e-5f, "fmin %g fmax %g floor %g", c.fmin, c.fmax,
         c.log_floor);
}

TEST(mel_bad_configs_are_refused) {
  struct {
    const char *field, *needle;
    MelConfig cfg;
  } cases[8];
  int n = 0;
  MelConfig base = mel_config_musicldm();
#define CASE(F, V, NEEDLE)                                            \
  do {                                                                \
    cases[n].cfg = base;                                              \
    cases[n].cfg.F = V;                                               \
    cases[n].field = #F " = " #V, cases[n].needle = NEEDLE, n++;      \
  } while (0)
  CASE(rate, 0, "rate 0");
  CASE(n_fft, 1023, "n_fft 1023 must be even");
  CASE(hop, 0, "hop 0");
  CASE(win, 2048, "win 2048");
  CASE(n_mels, 0, "n_mels 0");
  CASE(fmax, 9000.0f, "fmax 9000");
  CASE(log_floor, 0.0f, "log_floor 0");
  CASE(n_mels, 400, "is empty"); /* more triangles than the low FFT bins can fill */
#undef CASE
  for (int i = 0; i < n; i++) {
    McmErr err = {{0}};
    Mel *m = mel_create(&cases[i].cfg, &err);
    EXPECT(m == NULL, "%s was accepted", cases[i].field);
    EXPECT_STR_CONTAINS(err.msg, cases[i].needle);
    mel_destroy(m);
  }
}

TEST(mel_frames_and_length_check) {
  Mel *m = musicldm_mel();
  EXPECT(mel_frames(m, 163840) == 1025, "10.24 s: %lld frames", (long long)mel_frames(m, 163840));
  EXPECT(mel_frames(m, 600) == 4, "600 samples: %lld frames", (long long)mel_frames(m, 600));
  EXPECT(mel_frames(m, 159) == 1, "159 samples: %lld frames", (long long)mel_frames(m, 159));
  McmErr err = {{0}};
  EXPECT(mel_check_length(m, 513, &err) == 0, "513 samples refused: %s", err.msg);
  EXPECT(mel_check_length(m, 512, &err) == -1, "512 samples accepted");
  EXPECT_STR_CONTAINS(err.msg, "512 samples");
  EXPECT_STR_CONTAINS(err.msg, "too short");
  mel_destroy(m);
}

TEST_EXIT_MSG(mel_compute_on_too_short_input_exits, 1, "reflect padding needs more than 512") {
  Mel *m = musicldm_mel();
  float wav[512] = {0}, out[4 * 64];
  mel_compute(m, wav, 512, out);
}

TEST(mel_silence_gives_the_floor) {
  Mel *m = musicldm_mel();
  float *wav = calloc(16000, sizeof(float));
  int64_t T;
  float *out = log_mel(m, wav, 16000, &T);
  for (int64_t i = 0; i < T * 64; i++) EXPECT_NEAR(out[i], log(1e-5), 1e-6);
  free(out);
  free(wav);
  mel_destroy(m);
}

/* ---------------------------------------------------------------- threads and speed */

typedef struct {
  const float *wav;
  int64_t n;
  float *out;
} Job;

static void *mel_job(void *arg) {
  Job *j = arg;
  MelConfig cfg = mel_config_musicldm();
  Mel *m = mel_create(&cfg, NULL);
  MCM_CHECK(m, "mel_create");
  mel_compute(m, j->wav, j->n, j->out);
  mel_compute(m, j->wav, j->n, j->out); /* a reused Mel keeps no state between calls */
  mel_destroy(m);
  return NULL;
}

TEST(mel_threads_with_their_own_mel_agree_with_serial) {
  const int64_t n = 48000;
  float *wav[2] = {test_signal(n, 16000, 1), test_signal(n, 16000, 2)};
  Mel *m = musicldm_mel();
  int64_t T;
  float *serial[2] = {log_mel(m, wav[0], n, &T), log_mel(m, wav[1], n, &T)};
  Job jobs[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    jobs[i] = (Job){wav[i], n, MALLOC_CHECK((size_t)T * 64 * sizeof(float))};
    ASSERT(pthread_create(&th[i], NULL, mel_job, &jobs[i]) == 0, "pthread_create");
  }
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    EXPECT(memcmp(jobs[i].out, serial[i], (size_t)T * 64 * sizeof(float)) == 0, "thread %d differs from serial", i);
    free(jobs[i].out);
    free(serial[i]);
    free(wav[i]);
  }
  mel_destroy(m);
}

TEST(mel_speed_10s) {
  Mel *m = musicldm_mel();
  const int64_t n = 163840;
  float *wav = test_signal(n, 16000, 7);
  int64_t T;
  float *out = log_mel(m, wav, n, &T); /* warm up */
  double best = 1e9;
  for (int r = 0; r < 5; r++) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    mel_compute(m, wav, n, out);
    clock_gettime(CLOCK_MONOTONIC, &b);
    best = fmin(best, (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) * 1e-6);
  }
  printf("    log-mel of 10.24 s (1025 frames): %.2f ms (best of 5)\n", best);
  /* A loose bound that only catches gross regressions (a plan per frame, a dense product);
   * the machine is shared and sanitizer builds are slower. */
  EXPECT(best < 250.0, "log-mel of 10.24 s took %.1f ms", best);
  free(out);
  free(wav);
  mel_destroy(m);
}
