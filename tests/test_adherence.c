/* Prompt adherence detectors (data/adherence.h) on signals whose answer is known by
 * construction: click and drum tracks of a set tempo, I–IV–V–I progressions in set keys,
 * pure tones for the chroma, hand-worked cases for the match rules, the MIREX score and the
 * nearest-class-mean classifier, and the demo manifest's labels (good and malformed). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "data/adherence.h"
#include "test.h"

#define RATE 16000
#define CLIP_SECONDS 10.24 /* the demo's clip length */

/* Deterministic uniform noise in [-1, 1) (xorshift): the tests need no library RNG. */
static double noise(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return (double)(*s >> 11) / 4503599627370496.0 - 1.0;
}

static float *clip_alloc(int64_t *n) {
  *n = (int64_t)(CLIP_SECONDS * RATE);
  return calloc((size_t)*n, sizeof(float));
}

/* Adds a sound to x starting at `at` seconds: kind 0 click (1.5 kHz ping, 10 ms decay),
 * 1 kick (a sine sweeping 120 -> 50 Hz, 150 ms decay), 2 snare (noise and 190 Hz, 80 ms),
 * 3 closed hat (differenced noise, 20 ms). */
static void add_hit(float *x, int64_t n, double at, int kind, double amp, uint64_t *rng) {
  const double decay[4] = {0.010, 0.150, 0.080, 0.020};
  int64_t s0 = (int64_t)llround(at * RATE), len = (int64_t)(decay[kind] * 6 * RATE);
  double phase = 0, prev = 0;
  for (int64_t i = 0; i < len && s0 + i < n; i++) {
    double t = (double)i / RATE, env = amp * exp(-t / decay[kind]), v;
    switch (kind) {
      case 0: v = sin(2 * M_PI * 1500 * t); break;
      case 1:
        phase += 2 * M_PI * (50 + 70 * exp(-t / 0.03)) / RATE;
        v = sin(phase);
        break;
      case 2: v = 0.7 * noise(rng) + 0.5 * sin(2 * M_PI * 190 * t); break;
      default: {
        double w = noise(rng);
        v = w - prev, prev = w;
      }
    }
    x[s0 + i] += (float)(env * v);
  }
}

/* One click per beat, the first of each bar of 4 louder. */
static float *click_track(double bpm, int64_t *n) {
  float *x = clip_alloc(n);
  uint64_t rng = 7;
  for (int b = 0; 0.1 + b * 60 / bpm < CLIP_SECONDS; b++) add_hit(x, *n, 0.1 + b * 60 / bpm, 0, b % 4 ? 0.5 : 0.9, &rng);
  return x;
}

/* A rock beat: kick on beats 1 and 3, snare on 2 and 4, closed hat on every eighth note.
 * four_on_the_floor: kick on every beat and the hat on the off-beats only (techno, house). */
static float *drum_track(double bpm, bool four_on_the_floor, int64_t *n) {
  float *x = clip_alloc(n);
  uint64_t rng = 11;
  const double beat = 60 / bpm;
  for (int e = 0; 0.05 + e * beat / 2 < CLIP_SECONDS; e++) {
    double at = 0.05 + e * beat / 2;
    if (four_on_the_floor) add_hit(x, *n, at, e % 2 ? 3 : 1, e % 2 ? 0.25 : 0.8, &rng);
    else {
      add_hit(x, *n, at, 3, 0.25, &rng);
      if (e % 2 == 0) add_hit(x, *n, at, (e / 2) % 2 ? 2 : 1, 0.8, &rng);
    }
  }
  return x;
}

TEST(adherence_tempo_of_click_and_drum_tracks) {
  const double tempi[] = {72, 100, 128, 150};
  for (int kind = 0; kind < 3; kind++)
    for (int i = 0; i < 4; i++) {
      const char *name = kind == 0 ? "clicks" : kind == 1 ? "rock beat" : "four on the floor";
      int64_t n;
      float *x = kind ? drum_track(tempi[i], kind == 2, &n) : click_track(tempi[i], &n);
      double est = adh_tempo(x, n, RATE);
      printf("  %s at %.0f BPM: estimate %.2f\n", name, tempi[i], est);
      /* Two readings at the octave (adherence.h): the rock beat repeats every two beats more
       * exactly than every beat, and at 150 the prior does not outweigh that (75); four on
       * the floor at 72 has its off-beat hats as strong onsets as the kicks, an even
       * eighth-note pulse (144). Both exact at the octave, so acc2 and not acc1. */
      double octave = kind == 1 && tempi[i] == 150 ? 0.5 : kind == 2 && tempi[i] == 72 ? 2.0 : 1.0;
      double want = tempi[i] * octave;
      EXPECT(fabs(est - want) <= 0.02 * want, "%s at %.0f BPM: estimate %.2f is not within 2 %% of %.1f", name,
             tempi[i], est, want);
      EXPECT(adh_tempo_match(est, tempi[i], false) == (octave == 1) && adh_tempo_match(est, tempi[i], true),
             "%s at %.0f BPM: acc1 %s, acc2", name, tempi[i], octave == 1 ? "and" : "not");
      free(x);
    }
}

TEST(adherence_tempo_does_not_depend_on_the_level) {
  int64_t n;
  float *x = drum_track(128, false, &n);
  double a = adh_tempo(x, n, RATE);
  for (int64_t i = 0; i < n; i++) x[i] *= 0.01f;
  EXPECT_NEAR(adh_tempo(x, n, RATE), a, 0);
  free(x);
}

TEST(adherence_tempo_of_silence_and_a_too_short_clip_is_zero) {
  int64_t n;
  float *x = clip_alloc(&n);
  EXPECT(adh_tempo(x, n, RATE) == 0, "silence has no tempo");
  free(x);
  /* 0.5 s: 51 frames, fewer than two periods of 200 BPM (2 x 30 frames) */
  float *c = click_track(150, &n);
  EXPECT(adh_tempo(c, RATE / 2, RATE) == 0, "0.5 s is too short for a tempo");
  free(c);
}

TEST(adherence_onset_envelope_peaks_at_the_hits) {
  int64_t n, T;
  float *x = click_track(120, &n); /* clicks at 0.1 + 0.5 k s: frames 10 + 50 k */
  float *env = adh_onset_envelope(x, n, RATE, &T);
  EXPECT(T == n / (RATE / ADH_FPS) + 1, "frames %lld", (long long)T);
  for (int k = 0; k < 5; k++) {
    int64_t at = 10 + 50 * k, best = at - 10;
    for (int64_t t = at - 10; t <= at + 10; t++)
      if (env[t] > env[best]) best = t;
    /* frame t is centred on sample 160 t; a 1024-sample window sees the click from 3 frames early */
    EXPECT(best >= at - 3 && best <= at + 1, "click %d at frame %lld: envelope peak at %lld", k, (long long)at,
           (long long)best);
  }
  free(x), free(env);
}

TEST(adherence_tempo_match_rules) {
  /* acc1: within 8 % of the reference */
  EXPECT(adh_tempo_match(108, 100, false), "108 vs 100 is within 8 %%");
  EXPECT(adh_tempo_match(92.5, 100, false), "92.5 vs 100 is within 8 %%");
  EXPECT(!adh_tempo_match(108.5, 100, false), "108.5 vs 100 is not");
  EXPECT(!adh_tempo_match(200, 100, false), "double is not acc1");
  /* acc2: also x2, x1/2, x3, x1/3, each within 8 % of that value */
  EXPECT(adh_tempo_match(200, 100, true) && adh_tempo_match(50, 100, true), "double and half");
  EXPECT(adh_tempo_match(300, 100, true) && adh_tempo_match(35.5, 100, true), "triple and a third (33.3 +- 2.67)");
  EXPECT(!adh_tempo_match(36.2, 100, true), "36.2 is beyond a third's 8 %%");
  EXPECT(!adh_tempo_match(150, 100, true), "3/2 is not an allowed factor");
  EXPECT(!adh_tempo_match(0, 100, true) && !adh_tempo_match(100, 0, true), "no estimate or no reference never matches");
}

/* ------------------------------------------------------------------ key */

static double midi_hz(int m) { return 440.0 * pow(2.0, (m - 69) / 12.0); }

/* A tone with six harmonics of amplitude 1/h, like a bright organ. */
static void add_tone(float *x, int64_t s0, int64_t len, int midi, double amp) {
  double f = midi_hz(midi);
  for (int64_t i = 0; i < len; i++) {
    double t = (double)i / RATE, v = 0, env = amp * fmin(1.0, t / 0.01) * exp(-t / 1.5);
    for (int h = 1; h <= 6 && h * f < RATE / 2; h++) v += sin(2 * M_PI * h * f * t) / h;
    x[s0 + i] += (float)(env * v);
  }
}

/* I–IV–V–I (minor: i–iv–V–i, the dominant major as in harmonic minor), 2 s per chord: root
 * position triads from the octave of middle C and the root in the bass. */
static float *progression(int tonic, bool minor, int64_t *n) {
  *n = 8 * RATE;
  float *x = calloc((size_t)*n, sizeof(float));
  const int degree[4] = {0, 5, 7, 0};
  for (int c = 0; c < 4; c++) {
    int root = tonic + degree[c];
    bool minor_chord = minor && c != 2; /* V stays major */
    int notes[3] = {60 + root, 60 + root + (minor_chord ? 3 : 4), 60 + root + 7};
    for (int k = 0; k < 3; k++) add_tone(x, (int64_t)c * 2 * RATE, 2 * RATE, notes[k], 0.15);
    add_tone(x, (int64_t)c * 2 * RATE, 2 * RATE, 36 + root, 0.25);
  }
  return x;
}

TEST(adherence_key_of_chord_progressions) {
  /* tonic (0 = C), minor */
  const int keys[][2] = {{0, 0}, {7, 0}, {10, 0}, {6, 0}, {4, 0}, {9, 1}, {4, 1}, {0, 1}, {6, 1}, {10, 1}, {1, 1}};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    int64_t n;
    float *x = progression(keys[i][0], keys[i][1], &n);
    int want = keys[i][0] + 12 * keys[i][1], got = adh_key(x, n, RATE);
    char a[16], b[16];
    EXPECT(got == want, "I-IV-V-I in %s: detected %s", adh_key_name(want, a, sizeof a), adh_key_name(got, b, sizeof b));
    free(x);
  }
}

TEST(adherence_chroma_of_pure_tones) {
  /* 1 s sines: A4, A1 (55 Hz, the lowest note counted), B6 (1975.5 Hz, the highest) */
  const int notes[] = {69, 33, 95};
  /* how much may show in other classes: at 55 Hz semitones are 3.3 Hz apart and the nearest
   * bins of the neighbours lie inside the Hann window's main lobe (+-2 bins = +-1.95 Hz),
   * measured 0.12; higher up they are many bins away (measured < 1e-3) */
  const double leak[] = {0.01, 0.15, 0.01};
  for (int k = 0; k < 3; k++) {
    int64_t n = RATE;
    float *x = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(0.5 * sin(2 * M_PI * midi_hz(notes[k]) * i / RATE));
    double c[12];
    adh_chroma(x, n, RATE, c);
    int best = 0;
    double rest = 0;
    for (int p = 1; p < 12; p++)
      if (c[p] > c[best]) best = p;
    for (int p = 0; p < 12; p++)
      if (p != best) rest = fmax(rest, c[p]);
    EXPECT(best == notes[k] % 12, "MIDI %d: chroma peak at pitch class %d", notes[k], best);
    printf("  MIDI %d: the largest other class is %.4f of the peak\n", notes[k], rest / c[best]);
    EXPECT(rest < leak[k] * c[best], "MIDI %d: other classes up to %.3g of %.3g", notes[k], rest, c[best]);
    free(x);
  }
  /* silence: a flat chroma, no key */
  double zero[12] = {0};
  EXPECT(adh_key_from_chroma(zero, NULL) == -1, "a flat chroma has no key");
}

TEST(adherence_key_names_and_mirex_score) {
  char buf[16];
  EXPECT(adh_key_parse("C major") == 0 && adh_key_parse("  c MAJOR ") == 0, "C major is 0");
  EXPECT(adh_key_parse("Bb minor") == 22 && adh_key_parse("A# minor") == 22, "Bb minor = A# minor = 22");
  EXPECT(adh_key_parse("Db major") == 1 && adh_key_parse("C# major") == 1, "Db = C#");
  EXPECT(adh_key_parse("Cb major") == 11 && adh_key_parse("B# minor") == 12, "Cb = B, B# = C");
  EXPECT(adh_key_parse("H minor") == -1 && adh_key_parse("C dorian") == -1 && adh_key_parse("") == -1 &&
             adh_key_parse("C majorx") == -1,
         "not keys");
  EXPECT(!strcmp(adh_key_name(22, buf, sizeof buf), "Bb minor"), "%s", buf);
  EXPECT(!strcmp(adh_key_name(8, buf, sizeof buf), "Ab major") && !strcmp(adh_key_name(20, buf, sizeof buf), "G# minor"),
         "the demo composer's spelling");
  for (int k = 0; k < 24; k++) EXPECT(adh_key_parse(adh_key_name(k, buf, sizeof buf)) == k, "round trip %d", k);
  const int C = 0, G = 7, F = 5, Am = 21, Cm = 12, Gm = 19, Dm = 14, Eb = 3, D = 2;
  EXPECT_NEAR(adh_key_mirex(C, C), 1.0, 0);
  EXPECT_NEAR(adh_key_mirex(G, C), 0.5, 0);   /* a fifth above */
  EXPECT_NEAR(adh_key_mirex(F, C), 0.0, 0);   /* a fifth below is not the MIREX fifth */
  EXPECT_NEAR(adh_key_mirex(Dm, Gm), 0.5, 0); /* minor: D minor is a fifth above G minor */
  EXPECT_NEAR(adh_key_mirex(Am, C), 0.3, 0);  /* relative minor */
  EXPECT_NEAR(adh_key_mirex(Eb, Cm), 0.3, 0); /* relative major */
  EXPECT_NEAR(adh_key_mirex(Cm, C), 0.2, 0);  /* parallel */
  EXPECT_NEAR(adh_key_mirex(C, Cm), 0.2, 0);
  EXPECT_NEAR(adh_key_mirex(D, C), 0.0, 0);
  EXPECT_NEAR(adh_key_mirex(-1, C), 0.0, 0);
}

/* ------------------------------------------------------------------ nearest class mean */

TEST(adherence_nearest_class_mean_constructed) {
  /* 2-d, three classes; dimension 0 spans hundreds, dimension 1 units, so standardising
   * matters. Class means: A (0, 0), B (100, 3), C (300, 0) (two samples each), one unlabelled
   * sample far away that must not count. */
  const float x[] = {-10, -1, 10, 1, 90, 3, 110, 3, 290, -1, 310, 1, 5000, 50};
  const int label[] = {0, 0, 1, 1, 2, 2, -1};
  AdhNcm m;
  McmErr err;
  ASSERT(adh_ncm_fit(&m, x, label, 7, 2, 3, &err) == 0, "%s", err.msg);
  /* standard deviations over the six labelled samples (population): by hand */
  double mu0 = (-10 + 10 + 90 + 110 + 290 + 310) / 6.0, mu1 = (-1 + 1 + 3 + 3 - 1 + 1) / 6.0, v0 = 0, v1 = 0;
  for (int i = 0; i < 6; i++) v0 += (x[2 * i] - mu0) * (x[2 * i] - mu0), v1 += (x[2 * i + 1] - mu1) * (x[2 * i + 1] - mu1);
  EXPECT_NEAR(m.scale[0], 1 / sqrt(v0 / 6), 1e-12);
  EXPECT_NEAR(m.scale[1], 1 / sqrt(v1 / 6), 1e-12);
  EXPECT(m.count[0] == 2 && m.count[1] == 2 && m.count[2] == 2, "counts");
  /* (45, 2.5): raw Euclidean is nearer A (45.1) than B (55.0); standardised (sd 125.1, 1.633)
   * it is nearer B: A (0.360, 1.531) -> 2.47 squared, B (0.440, 0.306) -> 0.29 squared */
  EXPECT(adh_ncm_predict(&m, (const float[]){45, 2.5f}, -1) == 1, "standardised distance picks B");
  EXPECT(adh_ncm_predict(&m, (const float[]){250, 0}, -1) == 2, "C");
  EXPECT(adh_ncm_predict(&m, (const float[]){20, 0}, -1) == 0, "A");
  /* leave-one-out: sample (110, 3) of B; B's mean without it is (90, 3), still nearest */
  EXPECT(adh_ncm_predict(&m, x + 6, 1) == 1, "LOO keeps B");
  /* a class of one: without its only sample it cannot be predicted */
  const int one[] = {0, 0, 1, -1, -1, -1, -1};
  AdhNcm m1;
  ASSERT(adh_ncm_fit(&m1, x, one, 7, 2, 2, &err) == 0, "%s", err.msg);
  EXPECT(adh_ncm_predict(&m1, x + 4, -1) == 1, "with its own sample: class 1");
  EXPECT(adh_ncm_predict(&m1, x + 4, 1) == 0, "leave-one-out: class 1 is empty, class 0 is left");
  /* leave-one-out moves a mean: class 0 of {0, 2, 5}, class 1 of {8} (1-d, a zero second
   * dimension). The sample 5 is nearer class 0's mean with it (2.33: 2.67 away, class 1 3)
   * and nearer class 1 without it (class 0's mean 1: 4 away, class 1 3). */
  const float y[] = {0, 0, 2, 0, 5, 0, 8, 0};
  const int ly[] = {0, 0, 0, 1};
  AdhNcm m2;
  ASSERT(adh_ncm_fit(&m2, y, ly, 4, 2, 2, &err) == 0, "%s", err.msg);
  EXPECT(m2.scale[1] == 1, "a constant dimension keeps scale 1");
  EXPECT(adh_ncm_predict(&m2, y + 4, -1) == 0, "with itself: class 0");
  EXPECT(adh_ncm_predict(&m2, y + 4, 0) == 1, "leave-one-out: class 1");
  const int none[] = {-1, -1, -1, -1};
  AdhNcm m3;
  EXPECT(adh_ncm_fit(&m3, y, none, 4, 2, 2, &err) == -1, "no labels must be refused");
  EXPECT_STR_CONTAINS(err.msg, "no labelled sample");
  adh_ncm_free(&m), adh_ncm_free(&m1), adh_ncm_free(&m2);
}

/* ------------------------------------------------------------------ labels */

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ASSERT(f, "cannot write %s", path);
  fputs(text, f);
  fclose(f);
}

TEST(adherence_labels_from_a_demo_manifest) {
  char path[600], wav[600];
  snprintf(path, sizeof path, "%s", TEST_PATH("manifest.json"));
  snprintf(wav, sizeof wav, "%s", TEST_PATH("a.wav"));
  write_text(wav, "x");
  write_text(path, "{\"data\": [{\"wav\": \"a.wav\", \"caption\": \"A techno track.\", \"genre\": \"techno\", \"key\": "
                   "\"Bb minor\", \"bpm\": 129},\n {\"wav\": \"b.wav\", \"caption\": \"A folk song.\", \"genre\": "
                   "\"folk\", \"key\": \"A# minor\"},\n {\"wav\": \"/abs/c.wav\", \"genre\": \"techno\", "
                   "\"bpm\": 120.5}]}");
  AdhLabels l;
  McmErr err;
  ASSERT(adh_labels_read(path, &l, &err) == 0, "%s", err.msg);
  ASSERT(l.n == 3 && l.n_genres == 2, "%d entries, %d genres", l.n, l.n_genres);
  EXPECT(!strcmp(l.genres[0], "techno") && !strcmp(l.genres[1], "folk"), "genres in order of appearance");
  EXPECT(l.e[0].key == 22 && l.e[1].key == 22 && l.e[2].key == -1, "keys, enharmonics equal, absent -1");
  EXPECT(l.e[0].bpm == 129 && l.e[1].bpm == 0 && l.e[2].bpm == 120.5, "bpm, absent 0");
  EXPECT(l.e[0].genre == 0 && l.e[1].genre == 1 && l.e[2].genre == 0, "genre indices");
  EXPECT(!strcmp(l.e[2].path, "/abs/c.wav") && l.e[2].caption == NULL, "absolute path kept, no caption");
  EXPECT(adh_labels_by_caption(&l, "A folk song.") == &l.e[1], "by caption");
  EXPECT(adh_labels_by_caption(&l, "A folk song") == NULL, "exact captions only");
  EXPECT(adh_labels_by_path(&l, wav) == &l.e[0], "by path (realpath)");
  char other[700];
  snprintf(other, sizeof other, "%s/../%s/a.wav", test_tmpdir(), strrchr(test_tmpdir(), '/') + 1);
  EXPECT(adh_labels_by_path(&l, other) == &l.e[0], "the same file by another path: %s", other);
  EXPECT(adh_genre_index(&l, "folk") == 1 && adh_genre_index(&l, "jazz") == -1, "genre index");
  adh_labels_free(&l);
}

TEST(adherence_bad_manifests) {
  const char *cases[][2] = {
      {"{\"data\": [{\"wav\": \"a.wav\", \"key\": \"H minor\"}]}", "data[0].key"},
      {"{\"data\": [{\"wav\": \"a.wav\"}, {\"wav\": \"b.wav\", \"bpm\": -3}]}", "data[1].bpm"},
      {"{\"data\": [{\"wav\": \"a.wav\", \"bpm\": \"fast\"}]}", "data[0].bpm"},
      {"{\"data\": [{\"wav\": \"a.wav\", \"genre\": 3}]}", "data[0].genre"},
      {"{\"data\": [{\"wav\": 5}]}", "data[0].wav"},
      {"{\"data\": [3]}", "data[0] is not an object"},
      {"{\"clips\": []}", "no \"data\" array"},
      {"{\"data\": [", "cannot read the manifest"},
  };
  char path[600];
  snprintf(path, sizeof path, "%s", TEST_PATH("m.json"));
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_text(path, cases[i][0]);
    AdhLabels l;
    McmErr err = {{0}};
    EXPECT(adh_labels_read(path, &l, &err) == -1, "case %zu must be refused", i);
    EXPECT_STR_CONTAINS(err.msg, cases[i][1]);
    EXPECT_STR_CONTAINS(err.msg, path);
    EXPECT(!strchr(err.msg, '\n'), "one line: %s", err.msg);
  }
  AdhLabels l;
  McmErr err;
  EXPECT(adh_labels_read(TEST_PATH("missing.json"), &l, &err) == -1, "a missing manifest");
  EXPECT_STR_CONTAINS(err.msg, "missing.json");
}
