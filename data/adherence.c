/* Prompt adherence detectors: tempo, key, nearest class mean and the demo labels (adherence.h). */
#include "data/adherence.h"

#include <ctype.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/mel.h"

/* ------------------------------------------------------------------ tempo */

/* The power of two nearest to `seconds` of samples at `rate`, at least 4. */
static int fft_size(double seconds, int rate) {
  double want = seconds * rate;
  int n = 4;
  while (n < want && n < (1 << 22)) n *= 2;
  return n / 2 >= 4 && want - n / 2 < n - want ? n / 2 : n;
}

float *adh_onset_envelope(const float *x, int64_t n, int rate, int64_t *frames) {
  MCM_CHECK(rate >= 2 * ADH_FPS && n >= 0, "adh_onset_envelope: rate %d, %lld samples", rate, (long long)n);
  const int hop = rate / ADH_FPS, N = fft_size(ADH_ONSET_SECONDS, rate), K = N / 2 + 1;
  const int64_t T = n / hop + 1;
  McmErr err;
  /* The mel filterbank only (Slaney, 0 .. rate/2), applied to our own frames. */
  const MelConfig mc = {.rate = rate, .n_fft = N, .hop = hop, .win = N, .n_mels = ADH_ONSET_BANDS, .fmin = 0,
                        .fmax = rate / 2.0f, .log_floor = 1e-5f};
  Mel *mel = mel_create(&mc, &err);
  MCM_CHECK(mel, "onset mel bands: %s", err.msg);
  const float *fb = mel_filterbank(mel); /* (B, K) */
  const int B = ADH_ONSET_BANDS;
  MagStft *s = mag_stft_create(N, &err);
  MCM_CHECK(s, "%s", err.msg);
  float *mag = MALLOC_CHECK(sizeof(float) * (size_t)K);
  float *band = MALLOC_CHECK(sizeof(float) * (size_t)T * B); /* (T, B) band magnitudes, then their log */
  float top = 0;
  for (int64_t t = 0; t < T; t++) {
    mag_stft_frame(s, x, n, t * hop - N / 2, mag);
    for (int b = 0; b < B; b++) {
      double acc = 0;
      for (int k = 0; k < K; k++) acc += (double)fb[(size_t)b * K + k] * mag[k];
      band[(size_t)t * B + b] = (float)acc;
      top = fmaxf(top, (float)acc);
    }
  }
  mag_stft_destroy(s);
  mel_destroy(mel);
  free(mag);
  float *env = CALLOC_CHECK((size_t)T, sizeof(float));
  if (top > 0) {
    const float floor_ = top * 1e-4f; /* 80 dB below the loudest band */
    for (size_t i = 0; i < (size_t)T * B; i++) band[i] = logf(fmaxf(band[i], floor_));
    for (int64_t t = 1; t < T; t++) {
      const float *cur = band + (size_t)t * B, *prev = cur - B;
      double flux = 0;
      for (int b = 0; b < B; b++) flux += fmaxf(cur[b] - prev[b], 0.0f);
      env[t] = (float)(flux / B);
    }
  }
  free(band);
  *frames = T;
  return env;
}

/* r at a fractional lag, linear between the integer lags; lag <= max_lag - 1 ... max_lag. */
static double acf_at(const double *r, double lag) {
  int64_t i = (int64_t)lag;
  double f = lag - (double)i;
  return f > 0 ? (1 - f) * r[i] + f * r[i + 1] : r[i];
}

double adh_tempo(const float *x, int64_t n, int rate) {
  int64_t T;
  float *env = adh_onset_envelope(x, n, rate, &T);
  const double fps = (double)rate / (rate / ADH_FPS);
  const int64_t max_lag = (int64_t)fmin(ceil(4 * 60 * fps / ADH_TEMPO_MIN) + 1, (double)(T / 2));
  if (max_lag < (int64_t)ceil(60 * fps / ADH_TEMPO_MAX) + 1) return free(env), 0.0;

  /* The pulse: envelope minus its 1 s moving average, rectified, zero mean. */
  const int64_t half = (int64_t)(fps / 2);
  double *e = MALLOC_CHECK(sizeof(double) * (size_t)T), *cum = MALLOC_CHECK(sizeof(double) * (size_t)(T + 1));
  cum[0] = 0;
  for (int64_t t = 0; t < T; t++) cum[t + 1] = cum[t] + env[t];
  double mean = 0;
  for (int64_t t = 0; t < T; t++) {
    int64_t a = t - half < 0 ? 0 : t - half, b = t + half + 1 > T ? T : t + half + 1;
    e[t] = fmax(env[t] - (cum[b] - cum[a]) / (double)(b - a), 0.0);
    mean += e[t];
  }
  mean /= (double)T;
  for (int64_t t = 0; t < T; t++) e[t] -= mean;
  free(env), free(cum);

  /* Unbiased autocorrelation, normalised by r(0). */
  double *r = MALLOC_CHECK(sizeof(double) * (size_t)(max_lag + 1));
  for (int64_t lag = 0; lag <= max_lag; lag++) {
    double s = 0;
    for (int64_t t = 0; t + lag < T; t++) s += e[t] * e[t + lag];
    r[lag] = s / (double)(T - lag);
  }
  free(e);
  if (!(r[0] > 0)) return free(r), 0.0;
  for (int64_t lag = max_lag; lag >= 0; lag--) r[lag] /= r[0];

  /* The comb over multiples of each candidate's beat period, times the prior. */
  double best = 0, best_bpm = 0;
  const int steps = (int)lround((ADH_TEMPO_MAX - ADH_TEMPO_MIN) / 0.05);
  for (int i = 0; i <= steps; i++) {
    double bpm = ADH_TEMPO_MIN + 0.05 * i, period = 60 * fps / bpm, s = 0;
    int used = 0;
    for (int m = 1; m <= 4 && m * period <= (double)max_lag; m++, used++) s += acf_at(r, m * period);
    if (!used) continue;
    double z = log2(bpm / ADH_TEMPO_PRIOR_BPM) / ADH_TEMPO_PRIOR_OCTAVES;
    double score = s / used * exp(-0.5 * z * z);
    if (score > best) best = score, best_bpm = bpm;
  }
  free(r);
  return best_bpm;
}

bool adh_tempo_match(double est, double ref, bool octaves) {
  if (!(est > 0) || !(ref > 0)) return false;
  static const double factors[] = {1.0, 2.0, 0.5, 3.0, 1.0 / 3.0};
  for (int i = 0; i < (octaves ? 5 : 1); i++)
    if (fabs(est - factors[i] * ref) <= ADH_TEMPO_TOLERANCE * factors[i] * ref) return true;
  return false;
}

/* ------------------------------------------------------------------ key */

/* Krumhansl & Kessler (1982) probe-tone ratings, tonic first (Krumhansl 1990, table 2.1). */
static const double KK_MAJOR[12] = {6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88};
static const double KK_MINOR[12] = {6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17};

void adh_chroma(const float *x, int64_t n, int rate, double chroma[12]) {
  const int N = fft_size(ADH_CHROMA_SECONDS, rate), K = N / 2 + 1, hop = N / 4;
  McmErr err;
  MagStft *s = mag_stft_create(N, &err);
  MCM_CHECK(s, "%s", err.msg);
  /* The MIDI note nearest to every bin in range, -1 outside. */
  int *note = MALLOC_CHECK(sizeof(int) * (size_t)K);
  for (int k = 0; k < K; k++) {
    double f = (double)k * rate / N;
    note[k] = f >= ADH_CHROMA_FMIN && f <= ADH_CHROMA_FMAX ? (int)lround(69 + 12 * log2(f / 440.0)) : -1;
  }
  float *mag = MALLOC_CHECK(sizeof(float) * (size_t)K);
  double peak[128];
  for (int i = 0; i < 12; i++) chroma[i] = 0;
  /* Frames from sample 0 while they start inside the clip (one zero-padded frame for a clip
   * shorter than the window). */
  for (int64_t start = 0; start == 0 || start + N <= n; start += hop) {
    mag_stft_frame(s, x, n, start, mag);
    for (int m = 0; m < 128; m++) peak[m] = 0;
    for (int k = 0; k < K; k++)
      if (note[k] >= 0) peak[note[k]] = fmax(peak[note[k]], mag[k]);
    for (int m = 0; m < 128; m++) chroma[m % 12] += peak[m];
  }
  free(note), free(mag);
  mag_stft_destroy(s);
}

/* A key's profile as a chroma would see it: every degree's rating spread over its first
 * ADH_KEY_HARMONICS harmonics (harmonic h lands round(12·log2 h) semitones above, weight
 * ADH_KEY_HARMONIC_DECAY^(h−1)). profile (12) tonic first. */
static void harmonic_profile(const double profile[12], double out[12]) {
  for (int i = 0; i < 12; i++) out[i] = 0;
  for (int i = 0; i < 12; i++)
    for (int h = 1; h <= ADH_KEY_HARMONICS; h++)
      out[(i + (int)lround(12 * log2(h))) % 12] += profile[i] * pow(ADH_KEY_HARMONIC_DECAY, h - 1);
}

static double pearson(const double *a, const double *b, int n) {
  double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
  for (int i = 0; i < n; i++) ma += a[i], mb += b[i];
  ma /= n, mb /= n;
  for (int i = 0; i < n; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
}

int adh_key_from_chroma(const double chroma[12], double *corr) {
  double major[12], minor[12];
  harmonic_profile(KK_MAJOR, major);
  harmonic_profile(KK_MINOR, minor);
  bool flat = true;
  for (int i = 1; i < 12; i++) flat = flat && chroma[i] == chroma[0];
  int best = -1;
  double best_r = -2;
  for (int key = 0; key < 24 && !flat; key++) {
    double rotated[12]; /* rotated[i] = the energy of the key's degree i */
    for (int i = 0; i < 12; i++) rotated[i] = chroma[(key % 12 + i) % 12];
    double r = pearson(rotated, key < 12 ? major : minor, 12);
    if (r > best_r) best_r = r, best = key;
  }
  if (corr) *corr = best >= 0 ? best_r : 0;
  return best;
}

int adh_key(const float *x, int64_t n, int rate) {
  double c[12];
  adh_chroma(x, n, rate, c);
  return adh_key_from_chroma(c, NULL);
}

int adh_key_parse(const char *name) {
  static const int LETTER[7] = {9, 11, 0, 2, 4, 5, 7}; /* A B C D E F G */
  const char *p = name;
  while (*p == ' ') p++;
  char c = (char)toupper((unsigned char)*p);
  if (c < 'A' || c > 'G') return -1;
  int tonic = LETTER[c - 'A'];
  p++;
  if (*p == '#') tonic += 1, p++;
  else if (*p == 'b') tonic += 11, p++;
  while (*p == ' ') p++;
  int minor;
  if (!strncasecmp(p, "major", 5)) minor = 0;
  else if (!strncasecmp(p, "minor", 5)) minor = 1;
  else return -1;
  p += 5;
  while (*p == ' ') p++;
  if (*p) return -1;
  return tonic % 12 + 12 * minor;
}

const char *adh_key_name(int key, char *buf, size_t size) {
  static const char *const MAJOR[12] = {"C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"};
  static const char *const MINOR[12] = {"C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"};
  if (key < 0 || key > 23) mcm_snprintf(buf, size, "none");
  else mcm_snprintf(buf, size, "%s %s", (key < 12 ? MAJOR : MINOR)[key % 12], key < 12 ? "major" : "minor");
  return buf;
}

double adh_key_mirex(int est, int ref) {
  if (est < 0 || ref < 0) return 0;
  int et = est % 12, rt = ref % 12;
  bool em = est >= 12, rm = ref >= 12;
  if (est == ref) return 1.0;
  if (em == rm && (et - rt + 12) % 12 == 7) return 0.5;   /* a fifth above, same mode */
  if (!rm && em && (rt - et + 12) % 12 == 3) return 0.3;  /* relative minor of a major key */
  if (rm && !em && (et - rt + 12) % 12 == 3) return 0.3;  /* relative major of a minor key */
  if (et == rt) return 0.2;                               /* parallel */
  return 0;
}

/* ------------------------------------------------------------------ nearest class mean */

int adh_ncm_fit(AdhNcm *m, const float *x, const int *label, int n, int d, int k, McmErr *err) {
  memset(m, 0, sizeof *m);
  int used = 0;
  for (int i = 0; i < n; i++) used += label[i] >= 0 && label[i] < k;
  if (used == 0) return mcm_err(err, "no labelled sample to fit the class means on (%d samples)", n);
  m->k = k, m->d = d;
  m->count = CALLOC_CHECK((size_t)k, sizeof(int));
  m->sum = CALLOC_CHECK((size_t)k * d, sizeof(double));
  m->scale = MALLOC_CHECK(sizeof(double) * (size_t)d);
  for (int j = 0; j < d; j++) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++)
      if (label[i] >= 0 && label[i] < k) s += x[(size_t)i * d + j];
    double mu = s / used;
    for (int i = 0; i < n; i++)
      if (label[i] >= 0 && label[i] < k) ss += (x[(size_t)i * d + j] - mu) * (x[(size_t)i * d + j] - mu);
    double sd = sqrt(ss / used);
    m->scale[j] = sd > 0 ? 1.0 / sd : 1.0;
  }
  for (int i = 0; i < n; i++) {
    if (label[i] < 0 || label[i] >= k) continue;
    m->count[label[i]]++;
    for (int j = 0; j < d; j++) m->sum[(size_t)label[i] * d + j] += x[(size_t)i * d + j] * m->scale[j];
  }
  return 0;
}

void adh_ncm_free(AdhNcm *m) {
  free(m->count), free(m->sum), free(m->scale);
  memset(m, 0, sizeof *m);
}

int adh_ncm_predict(const AdhNcm *m, const float *x, int own) {
  int best = -1;
  double best_d = INFINITY;
  for (int c = 0; c < m->k; c++) {
    int cnt = m->count[c] - (c == own);
    if (cnt <= 0) continue;
    double dist = 0;
    for (int j = 0; j < m->d; j++) {
      double v = x[j] * m->scale[j], sum = m->sum[(size_t)c * m->d + j] - (c == own ? v : 0.0);
      double diff = v - sum / cnt;
      dist += diff * diff;
    }
    if (dist < best_d) best_d = dist, best = c;
  }
  return best;
}

/* ------------------------------------------------------------------ labels */

static char *dup_str(const char *s) {
  char *d = strdup(s);
  MCM_CHECK(d, "out of memory");
  return d;
}

int adh_genre_index(const AdhLabels *l, const char *name) {
  for (int i = 0; i < l->n_genres; i++)
    if (!strcmp(l->genres[i], name)) return i;
  return -1;
}

/* One entry's attributes; -1 with err (naming the entry) on a malformed one. */
static int read_entry(AdhLabels *l, json_t *e, const char *manifest, const char *dir, size_t i, AdhLabel *out,
                      McmErr *err) {
  memset(out, 0, sizeof *out);
  out->genre = out->key = -1;
  if (!json_is_object(e)) return mcm_err(err, "%s: data[%zu] is not an object", manifest, i);
  json_t *wav = json_object_get(e, "wav"), *cap = json_object_get(e, "caption"), *g = json_object_get(e, "genre");
  json_t *key = json_object_get(e, "key"), *bpm = json_object_get(e, "bpm");
  if (wav && !json_is_string(wav)) return mcm_err(err, "%s: data[%zu].wav is not a string", manifest, i);
  if (cap && !json_is_string(cap)) return mcm_err(err, "%s: data[%zu].caption is not a string", manifest, i);
  if (g && !(json_is_string(g) && json_string_length(g) > 0))
    return mcm_err(err, "%s: data[%zu].genre is not a non-empty string", manifest, i);
  if (key && !(json_is_string(key) && adh_key_parse(json_string_value(key)) >= 0))
    return mcm_err(err, "%s: data[%zu].key is not a key name like \"Bb minor\"", manifest, i);
  if (bpm && !(json_is_number(bpm) && json_number_value(bpm) > 0 && json_number_value(bpm) < 1000))
    return mcm_err(err, "%s: data[%zu].bpm is not a tempo in BPM (a number in (0, 1000))", manifest, i);
  if (wav) {
    const char *w = json_string_value(wav);
    size_t len = strlen(dir) + strlen(w) + 2;
    out->path = MALLOC_CHECK(len);
    if (w[0] == '/') mcm_snprintf(out->path, len, "%s", w);
    else mcm_snprintf(out->path, len, "%s/%s", dir, w);
    out->real = realpath(out->path, NULL);
  }
  if (cap) out->caption = dup_str(json_string_value(cap));
  if (key) out->key = adh_key_parse(json_string_value(key));
  if (bpm) out->bpm = json_number_value(bpm);
  if (g) {
    const char *name = json_string_value(g);
    out->genre = adh_genre_index(l, name);
    if (out->genre < 0) {
      l->genres = REALLOC_CHECK(l->genres, sizeof(char *) * (size_t)(l->n_genres + 1));
      l->genres[l->n_genres] = dup_str(name);
      out->genre = l->n_genres++;
    }
  }
  return 0;
}

static void label_free(AdhLabel *e) { free(e->path), free(e->real), free(e->caption); }

int adh_labels_read(const char *manifest, AdhLabels *l, McmErr *err) {
  memset(l, 0, sizeof *l);
  json_error_t je;
  json_t *root = json_load_file(manifest, 0, &je);
  if (!root) return mcm_err(err, "%s: cannot read the manifest: %s (line %d)", manifest, je.text, je.line);
  json_t *data = json_is_object(root) ? json_object_get(root, "data") : NULL;
  if (!json_is_array(data)) {
    json_decref(root);
    return mcm_err(err, "%s: not a demo manifest: no \"data\" array", manifest);
  }
  char *copy = dup_str(manifest);
  const char *dir = dirname(copy);
  size_t n = json_array_size(data);
  l->e = CALLOC_CHECK(n ? n : 1, sizeof(AdhLabel));
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    rc = read_entry(l, json_array_get(data, i), manifest, dir, i, &l->e[i], err);
    l->n++; /* the entry's strings are freed below on failure too */
  }
  free(copy);
  json_decref(root);
  if (rc) adh_labels_free(l);
  return rc;
}

void adh_labels_free(AdhLabels *l) {
  for (int i = 0; i < l->n; i++) label_free(&l->e[i]);
  for (int i = 0; i < l->n_genres; i++) free(l->genres[i]);
  free(l->e), free(l->genres);
  memset(l, 0, sizeof *l);
}

const AdhLabel *adh_labels_by_caption(const AdhLabels *l, const char *caption) {
  for (int i = 0; i < l->n; i++)
    if (l->e[i].caption && !strcmp(l->e[i].caption, caption)) return &l->e[i];
  return NULL;
}

const AdhLabel *adh_labels_by_path(const AdhLabels *l, const char *path) {
  char *real = realpath(path, NULL);
  const AdhLabel *hit = NULL;
  for (int i = 0; i < l->n && !hit; i++) {
    const AdhLabel *e = &l->e[i];
    if ((real && e->real && !strcmp(real, e->real)) || (e->path && !strcmp(e->path, path))) hit = e;
  }
  free(real);
  return hit;
}
