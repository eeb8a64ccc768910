/* The demo composer: genre, instrument and mood tables, the part writers (melody, chords,
 * bass, drums) and the caption (see demo_dataset.h for the plan).
 *
 * Time is counted in sixteenth-note steps; a 4/4 bar has 16, a 3/4 bar 12. step_tick
 * turns a step into MIDI ticks, applying the genre's swing. Pitches are MIDI keys; chords
 * are sets of pitch classes built by stacking thirds on a scale degree of the key.
 * Rhythm patterns are strings with one character per step: '.' rest, 'g' ghost, 'o' soft,
 * 'x' normal, 'X' accent.
 */
#include <math.h>
#include <stdarg.h>

#include "demo_dataset.h"
#include "kernels/philox.h"

#define PPQ 480
#define STEP_TICKS (PPQ / 4)

/* ------------------------------------------------------------------ random numbers */

/* Philox4x32-10 keyed by the run seed; clip i reads blocks i·2^32, i·2^32+1, ... */
typedef struct Rng {
  uint64_t seed, block;
  uint32_t w[4];
  int left;
} Rng;

static uint32_t rng_u32(Rng *r) {
  if (!r->left) {
    philox_block(r->seed, r->block++, r->w);
    r->left = 4;
  }
  return r->w[4 - r->left--];
}
/* Uniform in 0..n-1. */
static int rng_int(Rng *r, int n) { return (int)(((uint64_t)rng_u32(r) * (uint64_t)n) >> 32); }
static int rng_range(Rng *r, int lo, int hi) { return lo + rng_int(r, hi - lo + 1); }
static double rng_unit(Rng *r) { return rng_u32(r) * 0x1p-32; }
static bool rng_chance(Rng *r, double p) { return rng_unit(r) < p; }

/* ------------------------------------------------------------------ tables */

enum { PAD, STRUM, BLOCK, ARPEGGIO, JAZZ_COMP, SKANK, STAB, POWER };                              /* chords */
enum { B_WHOLE, B_EIGHTHS, B_ROOT_FIFTH, B_WALK, B_OFFBEAT, B_HIPHOP, B_REGGAE, B_POP, B_BOOGIE }; /* bass */
enum { D_NONE, D_ROCK, D_POP, D_JAZZ, D_TECHNO, D_HIPHOP, D_REGGAE, D_BLUES, D_FOLK };             /* drums */
enum { S_DIATONIC, S_PENTATONIC, S_BLUES };                                                      /* melody */

/* A part choice: General MIDI program (or drum kit), how it plays, how the caption says it. */
typedef struct Choice {
  int program, style;
  const char *phrase;
} Choice;

/* Lead instruments: the caption names them with one of two adjectives; lo..hi is the
 * melody's range in MIDI keys. */
typedef struct Lead {
  int program;
  const char *name, *adj[2];
  int lo, hi;
} Lead;

static const Lead LEADS[] = {
    {0, "piano", {"soft", "bright"}, 60, 84},
    {4, "electric piano", {"mellow", "warm"}, 60, 84},
    {11, "vibraphone", {"shimmering", "gentle"}, 60, 84},
    {16, "organ", {"warm", "soulful"}, 55, 79},
    {21, "accordion", {"lively", "rustic"}, 60, 81},
    {22, "harmonica", {"bluesy", "wailing"}, 60, 84},
    {26, "jazz guitar", {"smooth", "mellow"}, 55, 79},
    {27, "electric guitar", {"chiming", "clean"}, 55, 79},
    {29, "overdriven guitar", {"gritty", "crunchy"}, 55, 81},
    {30, "distorted guitar", {"searing", "heavy"}, 55, 81},
    {40, "violin", {"expressive", "soaring"}, 62, 88},
    {42, "cello", {"deep", "rich"}, 43, 67},
    {46, "harp", {"delicate", "glittering"}, 55, 84},
    {56, "trumpet", {"bright", "bold"}, 58, 82},
    {61, "brass section", {"punchy", "bold"}, 55, 79},
    {65, "alto saxophone", {"smooth", "soulful"}, 56, 80},
    {66, "tenor saxophone", {"breathy", "smoky"}, 50, 75},
    {68, "oboe", {"plaintive", "lyrical"}, 60, 84},
    {71, "clarinet", {"woody", "lyrical"}, 55, 82},
    {73, "flute", {"airy", "light"}, 64, 91},
    {75, "pan flute", {"breathy", "airy"}, 60, 86},
    {80, "square-wave synth", {"buzzy", "retro"}, 60, 84},
    {81, "sawtooth synth", {"bright", "biting"}, 60, 84},
    {90, "polysynth", {"glassy", "bright"}, 60, 84},
    {105, "banjo", {"twangy", "bright"}, 55, 79},
    {110, "fiddle", {"lively", "sweet"}, 62, 88},
};
#define N_LEADS ((int)(sizeof LEADS / sizeof LEADS[0]))

typedef struct Genre {
  const char *name, *nouns[3];
  int bpm_lo, bpm_hi;
  double minor_p, waltz_p; /* chance of a minor key, of 3/4 time */
  int drums;
  Choice kits[3], chords[5], basses[3]; /* each list ends with a NULL phrase */
  int leads[8];                         /* programs from LEADS, ending with -1 */
  const char *major[5], *minor[5];      /* progressions: scale degrees, one per chord */
  int bars_per_chord;
  double swing;  /* where the off-beat falls within its pair (0.5 straight, 0.67 triplet) */
  bool swing16;  /* swing sixteenths rather than eighths */
  int density;   /* melody: 0 long notes, 1 eighths, 2 sixteenths */
  bool loop;     /* melody repeats one 2-bar motif */
  int scale;     /* melody scale */
  double gate;   /* melody articulation: sounding fraction of each note's span */
  bool sevenths, dominant; /* chords: add sevenths; blues dominant sevenths on I, IV, V */
  const char *moods[8];
  int reverb;    /* controller 91 for the melodic parts */
} Genre;

static const Genre GENRES[] = {
    {"ambient", {"piece", "soundscape", "track"}, 60, 84, 0.5, 0, D_NONE, {{0}},
     {{89, PAD, "warm pads"}, {88, PAD, "glowing synth pads"}, {94, PAD, "a shimmering halo pad"},
      {48, PAD, "sustained strings"}, {0}},
     {{35, B_WHOLE, "a deep fretless bass"}, {39, B_WHOLE, "a low synth drone"}, {0}},
     {0, 11, 73, 46, 4, 75, -1},
     {"1 4", "1 5 6 4", "4 1 5 1", "1 6 4 5"}, {"1 6", "1 6 3 7", "1 4 6 5"},
     2, 0.5, false, 0, false, S_DIATONIC, 1.0, true, false,
     {"calm", "dreamy", "peaceful", "ethereal", "mysterious", "melancholic", "meditative"}, 110},
    {"rock", {"track", "song", "anthem"}, 110, 150, 0.35, 0, D_ROCK,
     {{0, 0, "a steady rock beat"}, {16, 0, "hard-hitting drums"}, {0}},
     {{30, POWER, "distorted power chords"}, {29, POWER, "crunchy rhythm guitar"},
      {25, STRUM, "strummed acoustic guitar"}, {0}},
     {{34, B_EIGHTHS, "a driving picked bass"}, {33, B_EIGHTHS, "a pumping electric bass"}, {0}},
     {29, 30, 27, -1},
     {"1 5 6 4", "1 4 5 4", "6 4 1 5", "1 4 1 5"}, {"1 6 3 7", "1 7 6 7", "1 4 7 3"},
     1, 0.5, false, 1, false, S_PENTATONIC, 0.9, false, false,
     {"energetic", "driving", "rebellious", "uplifting", "aggressive", "dark", "confident"}, 40},
    {"jazz", {"tune", "number", "piece"}, 90, 180, 0.35, 0.15, D_JAZZ,
     {{40, 0, "brushed drums"}, {32, 0, "a swinging ride cymbal"}, {0}},
     {{0, JAZZ_COMP, "comping piano"}, {26, JAZZ_COMP, "jazz guitar chords"}, {4, JAZZ_COMP, "electric piano comping"}, {0}},
     {{32, B_WALK, "a walking upright bass"}, {0}},
     {65, 66, 56, 11, 26, 0, -1},
     {"2 5 1 1", "1 6 2 5", "3 6 2 5", "1 4 3 6"}, {"2 5 1 1", "1 4 2 5", "1 6 2 5"},
     1, 0.64, false, 1, false, S_DIATONIC, 0.85, true, false,
     {"smooth", "relaxed", "sophisticated", "playful", "melancholic", "late-night", "swinging"}, 50},
    {"techno", {"track", "cut", "groove"}, 120, 135, 0.8, 0, D_TECHNO,
     {{24, 0, "a pounding drum machine"}, {25, 0, "an 808 four-on-the-floor kick"}, {0}},
     {{90, STAB, "polysynth stabs"}, {95, PAD, "a sweeping synth pad"}, {62, STAB, "brassy synth stabs"}, {0}},
     {{38, B_OFFBEAT, "a throbbing offbeat synth bass"}, {39, B_OFFBEAT, "a rubbery synth bass"}, {0}},
     {81, 80, 90, -1},
     {"1 1 4 4", "1 5 6 4", "1 1 1 1"}, {"1 1 6 7", "1 6", "1 1 1 1", "1 7 6 7"},
     1, 0.5, false, 2, true, S_PENTATONIC, 0.5, false, false,
     {"energetic", "hypnotic", "driving", "dark", "pulsing", "relentless", "euphoric"}, 60},
    {"classical", {"piece", "miniature", "prelude"}, 60, 120, 0.45, 0.3, D_NONE, {{0}},
     {{0, ARPEGGIO, "flowing piano arpeggios"}, {48, PAD, "a warm string section"},
      {46, ARPEGGIO, "rippling harp arpeggios"}, {0, BLOCK, "gentle piano chords"}, {0}},
     {{42, B_WHOLE, "a cello line"}, {43, B_ROOT_FIFTH, "a double bass"}, {0}},
     {40, 73, 68, 71, 0, 42, -1},
     {"1 4 5 1", "1 6 4 5", "1 4 1 5", "1 2 5 1"}, {"1 4 5 1", "1 6 4 5", "1 4 7 3"},
     1, 0.5, false, 1, false, S_DIATONIC, 0.95, false, false,
     {"elegant", "melancholic", "romantic", "peaceful", "dramatic", "gentle", "wistful", "graceful"}, 80},
    {"folk", {"song", "tune", "ballad"}, 80, 130, 0.3, 0.3, D_FOLK, {{0, 0, "light tambourine and shaker"}, {0}},
     {{25, STRUM, "strummed acoustic guitar"}, {24, ARPEGGIO, "fingerpicked nylon guitar"},
      {105, STRUM, "a bright strummed banjo"}, {21, BLOCK, "accordion chords"}, {0}},
     {{32, B_ROOT_FIFTH, "an upright bass"}, {33, B_ROOT_FIFTH, "a simple electric bass"}, {0}},
     {110, 73, 22, 21, 105, 71, -1},
     {"1 4 1 5", "1 5 6 4", "1 4 5 1", "1 6 4 5"}, {"1 7 6 7", "1 4 1 5", "1 6 7 1"},
     1, 0.5, false, 1, false, S_PENTATONIC, 0.9, false, false,
     {"warm", "nostalgic", "cheerful", "wistful", "rustic", "heartfelt", "carefree"}, 50},
    {"hip hop", {"beat", "instrumental", "track"}, 80, 98, 0.6, 0, D_HIPHOP,
     {{25, 0, "an 808 drum loop"}, {0, 0, "a boom-bap drum loop"}, {0}},
     {{4, BLOCK, "mellow electric piano chords"}, {0, BLOCK, "a dusty piano loop"}, {48, PAD, "moody strings"}, {0}},
     {{38, B_HIPHOP, "a deep synth bass"}, {33, B_HIPHOP, "a round electric bass"}, {0}},
     {73, 11, 4, 61, 0, -1},
     {"1 6 4 5", "4 5 3 6", "1 4"}, {"1 6", "1 4", "1 6 4 5", "1 7 6 5"},
     1, 0.58, true, 1, true, S_PENTATONIC, 0.85, true, false,
     {"laid-back", "moody", "chill", "gritty", "confident", "nostalgic", "mellow"}, 40},
    {"reggae", {"groove", "tune", "track"}, 68, 92, 0.35, 0, D_REGGAE, {{0, 0, "a one-drop drum groove"}, {0}},
     {{16, SKANK, "offbeat organ skanks"}, {27, SKANK, "choppy offbeat guitar"}, {0, SKANK, "offbeat piano chords"}, {0}},
     {{33, B_REGGAE, "a heavy, round bass line"}, {35, B_REGGAE, "a warm fretless bass"}, {0}},
     {56, 66, 73, 22, 4, -1},
     {"1 4", "1 4 5 4", "1 6 4 5"}, {"1 4", "1 7", "1 6 7 1"},
     1, 0.55, false, 1, false, S_PENTATONIC, 0.85, false, false,
     {"laid-back", "sunny", "relaxed", "uplifting", "easygoing", "hopeful", "moody"}, 50},
    {"pop", {"song", "track", "tune"}, 95, 128, 0.3, 0, D_POP, {{0, 0, "a tight pop beat"}, {0}},
     {{0, BLOCK, "piano chords"}, {25, STRUM, "strummed acoustic guitar"}, {89, PAD, "a warm synth pad"},
      {4, BLOCK, "electric piano chords"}, {0}},
     {{33, B_POP, "a punchy electric bass"}, {38, B_POP, "a bouncy synth bass"}, {0}},
     {81, 27, 0, 11, 80, 56, -1},
     {"1 5 6 4", "6 4 1 5", "1 6 4 5", "4 1 5 6"}, {"1 6 3 7", "1 4 6 5"},
     1, 0.5, false, 1, false, S_PENTATONIC, 0.9, false, false,
     {"happy", "upbeat", "bright", "cheerful", "hopeful", "bittersweet", "catchy"}, 50},
    {"blues", {"number", "tune", "jam"}, 70, 120, 0.25, 0, D_BLUES,
     {{0, 0, "a shuffle beat"}, {32, 0, "a swinging shuffle on the ride"}, {0}},
     {{0, BLOCK, "rolling piano chords"}, {16, BLOCK, "a soulful organ"}, {26, JAZZ_COMP, "jazzy guitar chords"}, {0}},
     {{32, B_WALK, "a walking upright bass"}, {33, B_BOOGIE, "a boogie bass line"}, {0}},
     {22, 29, 27, 65, 66, -1},
     {"1 1 1 1 4 4 1 1 5 4 1 5", "1 4 1 1 4 4 1 1 5 4 1 5"}, {"1 1 1 1 4 4 1 1 6 5 1 5"},
     1, 0.66, false, 1, false, S_BLUES, 0.85, true, true,
     {"soulful", "gritty", "melancholic", "laid-back", "smoky", "raw"}, 50},
};
#define N_GENRES ((int)(sizeof GENRES / sizeof GENRES[0]))

/* Moods, and the keys (mode) and energies (0 slow .. 2 fast within the genre's tempo range)
 * they suit; mode 0 any, 1 major, 2 minor. */
typedef struct Mood {
  const char *word;
  int mode, energy_lo, energy_hi;
} Mood;

static const Mood MOODS[] = {
    {"calm", 0, 0, 0},        {"dreamy", 0, 0, 1},         {"peaceful", 1, 0, 1},    {"ethereal", 0, 0, 1},
    {"mysterious", 2, 0, 1},  {"melancholic", 2, 0, 1},    {"meditative", 0, 0, 0},  {"energetic", 0, 1, 2},
    {"driving", 0, 1, 2},     {"rebellious", 0, 1, 2},     {"uplifting", 1, 1, 2},   {"aggressive", 2, 2, 2},
    {"dark", 2, 0, 2},        {"confident", 1, 1, 2},      {"smooth", 0, 0, 1},      {"relaxed", 0, 0, 1},
    {"sophisticated", 0, 0, 2}, {"playful", 1, 1, 2},      {"late-night", 0, 0, 1},  {"swinging", 0, 1, 2},
    {"hypnotic", 0, 0, 2},    {"pulsing", 0, 1, 2},        {"relentless", 0, 2, 2},  {"euphoric", 1, 1, 2},
    {"elegant", 0, 0, 2},     {"romantic", 1, 0, 1},       {"dramatic", 2, 1, 2},    {"gentle", 0, 0, 0},
    {"wistful", 2, 0, 1},     {"graceful", 1, 0, 1},       {"warm", 1, 0, 1},        {"nostalgic", 0, 0, 1},
    {"cheerful", 1, 1, 2},    {"rustic", 0, 0, 2},         {"heartfelt", 0, 0, 1},   {"carefree", 1, 1, 2},
    {"laid-back", 0, 0, 1},   {"moody", 2, 0, 2},          {"chill", 0, 0, 1},       {"gritty", 0, 1, 2},
    {"mellow", 0, 0, 1},      {"sunny", 1, 0, 2},          {"easygoing", 1, 0, 1},   {"hopeful", 1, 0, 2},
    {"happy", 1, 1, 2},       {"upbeat", 1, 1, 2},         {"bright", 1, 0, 2},      {"bittersweet", 2, 0, 1},
    {"catchy", 0, 1, 2},      {"soulful", 0, 0, 1},        {"smoky", 2, 0, 1},       {"raw", 0, 1, 2},
};
#define N_MOODS ((int)(sizeof MOODS / sizeof MOODS[0]))

static const Mood *mood_find(const char *word) {
  for (int i = 0; i < N_MOODS; i++)
    if (!strcmp(MOODS[i].word, word)) return &MOODS[i];
  MCM_FATAL("demo composer: mood '%s' is used by a genre but missing from MOODS", word);
}

static const Lead *lead_find(int program) {
  for (int i = 0; i < N_LEADS; i++)
    if (LEADS[i].program == program) return &LEADS[i];
  MCM_FATAL("demo composer: lead program %d is used by a genre but missing from LEADS", program);
}

static const int MAJOR[7] = {0, 2, 4, 5, 7, 9, 11}, MINOR[7] = {0, 2, 3, 5, 7, 8, 10};
static const int MAJOR_PENTA[5] = {0, 2, 4, 7, 9}, MINOR_PENTA[5] = {0, 3, 5, 7, 10};
static const int BLUES_SCALE[6] = {0, 3, 5, 6, 7, 10};
static const char *const MAJOR_NAMES[12] = {"C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"};
static const char *const MINOR_NAMES[12] = {"C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"};
static const int MAJOR_SHARPS[12] = {0, -5, 2, -3, 4, -1, 6, 1, -4, 3, -2, 5};
static const int MINOR_SHARPS[12] = {-3, 4, -1, -6, 1, -4, 3, -2, 5, 0, -5, 2};

/* ------------------------------------------------------------------ the song */

typedef struct Song {
  const Genre *g;
  Rng rng;
  MidiScore *sc;
  int tonic, bpm, beats, spb, n_bars, energy; /* spb: steps per bar */
  bool minor;
  int prog[16], prog_len;
  const int *scale7;   /* the key's diatonic scale */
  const int *mel;      /* the melody's scale */
  int mel_len;
  const Choice *chords, *bass, *kit;
  const Lead *lead;
} Song;

static int mod12(int x) { return ((x % 12) + 12) % 12; }

/* Ticks of step s (sixteenths from the start), with swing on the off-beats. */
static uint32_t step_tick(const Song *s, int step) {
  int beat = step / 4, pos = step % 4;
  double r = s->g->swing, off;
  if (s->g->swing16) { /* the second sixteenth of each eighth moves later */
    const double at[4] = {0, r * 0.5, 0.5, 0.5 + r * 0.5};
    off = at[pos];
  } else { /* the second eighth of each beat moves later, its sixteenths in proportion */
    const double at[4] = {0, r * 0.5, r, r + (1 - r) * 0.5};
    off = at[pos];
  }
  return (uint32_t)beat * PPQ + (uint32_t)lrint(off * PPQ);
}

/* Adds a note from step s0 to s1 (gate: the sounding fraction), slightly humanised. */
static void note(Song *s, MidiPart *p, int s0, int s1, double gate, int key, int vel, int delay) {
  uint32_t t0 = step_tick(s, s0), t1 = step_tick(s, s1);
  uint32_t dur = (uint32_t)lrint((t1 - t0) * gate);
  int jitter = rng_range(&s->rng, -6, 6);
  int64_t start = (int64_t)t0 + delay + (t0 > 0 ? jitter : 0);
  vel += rng_range(&s->rng, -6, 6);
  vel = vel < 1 ? 1 : vel > 127 ? 127 : vel;
  while (key < 0) key += 12;
  while (key > 127) key -= 12;
  midi_part_add_note(s->sc, p, (uint32_t)(start < 0 ? 0 : start), dur ? dur : 1, key, vel);
}

static int char_vel(char c) { return c == 'X' ? 118 : c == 'x' ? 100 : c == 'o' ? 80 : 48; }

/* The chord under bar b: pitch classes, root first; returns how many (3 or 4). */
static int chord_at(const Song *s, int bar, int pcs[4]) {
  int d = s->prog[(bar / s->g->bars_per_chord) % s->prog_len];
  int n = s->g->sevenths ? 4 : 3;
  for (int k = 0; k < n; k++) pcs[k] = mod12(s->tonic + s->scale7[(d + 2 * k) % 7]);
  /* Blues: dominant sevenths on I, IV and V in major, on V in minor. */
  bool dom = s->g->dominant && (s->minor ? d == 4 : (d == 0 || d == 3 || d == 4));
  if (dom) {
    pcs[1] = mod12(pcs[0] + 4), pcs[2] = mod12(pcs[0] + 7);
    if (n == 4) pcs[3] = mod12(pcs[0] + 10);
  }
  return n;
}

/* Places pitch class pc in the octave [lo, lo+12). */
static int place(int pc, int lo) { return lo + mod12(pc - lo); }

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* A close voicing of the chord in [lo, lo+12), sorted, optionally with the root an octave below. */
static int voice(const int *pcs, int n, int lo, bool root_below, int keys[5]) {
  int k = 0;
  if (root_below) keys[k++] = place(pcs[0], lo - 12);
  for (int i = 0; i < n; i++) keys[k++] = place(pcs[i], lo);
  qsort(keys + (root_below ? 1 : 0), (size_t)n, sizeof(int), cmp_int);
  return k;
}

static const char *pick(Rng *r, const char *const *list, int n) { return list[rng_int(r, n)]; }

/* ------------------------------------------------------------------ drums */

typedef struct DrumLine {
  int key;
  const char *bar4, *bar3; /* 16- and 12-step patterns (NULL: silent in that metre) */
} DrumLine;

typedef struct DrumStyle {
  DrumLine lines[5];
  bool fills, crash;
} DrumStyle;

/* GM drum keys: 36 kick, 37 rim, 38 snare, 39 clap, 42 closed hat, 44 pedal hat, 46 open
 * hat, 49 crash, 51 ride, 54 tambourine, 70 maracas; toms 50 48 47 45 43. */
static const DrumStyle DRUM_STYLES[] = {
    [D_ROCK] = {{{36, "x.....x.x.....x.", NULL}, {38, "....X.......X...", NULL}, {42, "o.o.o.o.o.o.o.o.", NULL}}, true, true},
    [D_POP] = {{{36, "x.......x.x.....", NULL}, {38, "....x.......x...", NULL}, {39, "....o.......o...", NULL},
                {42, "o.g.o.g.o.g.o.g.", NULL}},
               true, true},
    [D_JAZZ] = {{{51, "x...x.o.x...x.o.", "x...x.o.x.o."}, {44, "....o.......o...", "....o...o..."},
                 {36, "g.......g.......", "g..........."}},
                false, false},
    [D_TECHNO] = {{{36, "X...X...X...X...", NULL}, {39, "....x.......x...", NULL}, {42, "g.g.g.g.g.g.g.g.", NULL},
                   {46, "..o...o...o...o.", NULL}},
                  false, true},
    [D_HIPHOP] = {{{36, "X......x..x.....", NULL}, {38, "....X.......X...", NULL}, {42, "o.o.o.o.o.oo.o.o", NULL}},
                  false, false},
    [D_REGGAE] = {{{36, "........X.......", NULL}, {37, "........x.......", NULL}, {42, "o.o.o.o.o.o.o.o.", NULL}},
                  false, false},
    [D_BLUES] = {{{36, "x.......x.......", NULL}, {38, "....x.......x...", NULL}, {42, "o.o.o.o.o.o.o.o.", NULL}},
                 true, false},
    [D_FOLK] = {{{36, "x.......x.......", "x..........."}, {54, "....o.......o...", "....o...o..."},
                 {70, "g.g.g.g.g.g.g.g.", "g.g.g.g.g.g."}},
                false, false},
};

static void write_drums(Song *s, MidiPart *p) {
  const DrumStyle *st = &DRUM_STYLES[s->g->drums];
  int boost = (s->energy - 1) * 8;
  for (int bar = 0; bar < s->n_bars; bar++) {
    int b0 = bar * s->spb;
    bool fill = st->fills && bar % 4 == 3;
    int fill_from = fill ? s->spb - 4 : s->spb; /* the fill takes the last beat */
    if (st->crash && (bar == 0 || (st->fills && bar % 4 == 0))) note(s, p, b0, b0 + 8, 1.0, 49, 105 + boost, 0);
    for (int l = 0; l < 5 && st->lines[l].key; l++) {
      const DrumLine *dl = &st->lines[l];
      const char *pat = s->beats == 3 ? dl->bar3 : dl->bar4;
      if (!pat) continue;
      bool hat = dl->key == 42 || dl->key == 44 || dl->key == 70;
      for (int i = 0; i < fill_from; i++) {
        if (pat[i] == '.' || (hat && rng_chance(&s->rng, 0.05))) continue;
        note(s, p, b0 + i, b0 + i + 1, 0.9, dl->key, char_vel(pat[i]) + boost, 0);
      }
    }
    if (s->g->drums == D_JAZZ) /* snare comping on the off-beats */
      for (int i = 2; i < s->spb; i += 4)
        if (rng_chance(&s->rng, 0.12)) note(s, p, b0 + i, b0 + i + 1, 0.9, 38, 45, 0);
    if (fill) {
      static const int TOMS[6] = {38, 50, 48, 47, 45, 43};
      int t = rng_int(&s->rng, 3);
      for (int i = 0; i < 4; i++) note(s, p, b0 + fill_from + i, b0 + fill_from + i + 1, 0.9, TOMS[t + i / 2 + i % 2], 92 + 6 * i, 0);
    }
  }
}

/* ------------------------------------------------------------------ chords */

static void write_chords(Song *s, MidiPart *p) {
  int style = s->chords->style, spb = s->spb, base = 58 + 8 * s->energy;
  static const char *const STRUM4[] = {"x.....x...x.x...", "x...x...x...x...", "x..x..x...x.x.x."};
  static const char *const STRUM3[] = {"x...x...x...", "x.....x.x.x."};
  static const char *const BLOCK4[] = {"x.......x.......", "x.....x.....x...", "x...x...x...x..."};
  static const char *const JAZZ4[] = {"x.....x.........", "......x.....x...", "x.........x.....", "...x......x.....", "x.....x...x....."};
  static const char *const JAZZ3[] = {"x.....x.....", "..x...x.....", "x.....x...x."};
  static const char *const STAB4[] = {"..x...x...x...x.", "x..x..x...x..x..", "...x..x....x..x."};
  static const char *const POWER4[] = {"x.x.x.x.x.x.x.x.", "x..x..x.x..x..x.", "x.......x.x.x.x."};
  /* One pattern for the song (the groove), jazz comping varies per bar. */
  const char *strum = s->beats == 3 ? pick(&s->rng, STRUM3, 2) : pick(&s->rng, STRUM4, 3);
  const char *block = s->beats == 3 ? "x...x...x..." : s->g->density == 0 || s->g->loop ? "x..............." : pick(&s->rng, BLOCK4, 3);
  const char *stab = pick(&s->rng, STAB4, 3), *power = pick(&s->rng, POWER4, 3);
  static const int ARP[3][6] = {{0, 1, 2, 3, 0, 0}, {0, 2, 1, 2, 0, 0}, {0, 1, 2, 3, 2, 1}};
  static const int ARP_LEN[3] = {4, 4, 6};
  int arp = rng_int(&s->rng, 3), arp_step = s->g->density >= 2 ? 1 : 2;

  for (int bar = 0; bar < s->n_bars; bar++) {
    int pcs[4], keys[5], b0 = bar * spb;
    int n = chord_at(s, bar, pcs);
    const char *pat = NULL;
    double gate = 0.95;
    int lo = 55, nk;
    bool below = true;
    switch (style) {
      case PAD:
        if (bar % s->g->bars_per_chord) continue;
        nk = voice(pcs, n, lo, true, keys);
        for (int i = 0; i < nk; i++) note(s, p, b0, b0 + spb * s->g->bars_per_chord, 1.0, keys[i], base - 8, 0);
        continue;
      case ARPEGGIO: {
        int k[5];
        voice(pcs, 3, 48, false, k);
        k[3] = k[0] + 12;
        for (int i = 0, j = 0; i < spb; i += arp_step, j++)
          note(s, p, b0 + i, b0 + i + arp_step, 2.0, k[ARP[arp][j % ARP_LEN[arp]]], base - 6 + (i == 0 ? 10 : 0), 0);
        continue;
      }
      case STRUM: pat = strum, lo = 52; break;
      case BLOCK: pat = block; break;
      case JAZZ_COMP:
        pat = s->beats == 3 ? pick(&s->rng, JAZZ3, 3) : pick(&s->rng, JAZZ4, 5);
        gate = 0.5, below = false;
        break;
      case SKANK: pat = rng_chance(&s->rng, 0.3) ? "....x.x.....x.x." : "....x.......x...", gate = 0.3, lo = 60, below = false; break;
      case STAB: pat = stab, gate = 0.3, lo = 60, below = false; break;
      case POWER: pat = power, gate = 0.85; break;
    }
    if (style == JAZZ_COMP) { /* shell voicing: third and seventh (or fifth), no root */
      keys[0] = place(pcs[1], 52), keys[1] = place(pcs[n == 4 ? 3 : 2], 52), keys[2] = place(pcs[2], 60);
      nk = 3;
    } else if (style == POWER) { /* root, fifth, octave */
      keys[0] = place(pcs[0], 40), keys[1] = keys[0] + 7, keys[2] = keys[0] + 12;
      nk = 3;
    } else {
      nk = voice(pcs, n, lo, below, keys);
    }
    for (int i = 0; i < spb; i++) {
      if (pat[i] == '.') continue;
      int next = i + 1;
      while (next < spb && pat[next] == '.') next++;
      bool up = style == STRUM && i % 4 != 0; /* upstrokes between the beats: high strings first */
      for (int k = 0; k < nk; k++) {
        int delay = style == STRUM ? 12 * (up ? nk - 1 - k : k) : 0;
        note(s, p, b0 + i, b0 + next, gate, keys[k], base + (up ? -12 : 0) + (style == POWER ? 20 : 0), delay);
      }
    }
  }
}

/* ------------------------------------------------------------------ bass */

static void write_bass(Song *s, MidiPart *p) {
  int style = s->bass->style, spb = s->spb, vel = 84 + 8 * s->energy;
  static const char *const HIPHOP[] = {"x......x..x.....", "x.........x..x..", "x..x......x....."};
  static const char *const REGGAE[] = {"x..x..x...x.x...", "..x.x...x..x.x.."};
  const char *hip = pick(&s->rng, HIPHOP, 3), *reg = pick(&s->rng, REGGAE, 2);
  bool sixteenths = rng_chance(&s->rng, 0.3);
  int prev = -1;
  for (int bar = 0; bar < s->n_bars; bar++) {
    int pcs[4], b0 = bar * spb;
    chord_at(s, bar, pcs);
    int root = place(pcs[0], 33), fifth = root + 7 > 45 ? root - 5 : root + 7;
    const char *pat = NULL;
    switch (style) {
      case B_WHOLE:
        if (bar % s->g->bars_per_chord == 0) note(s, p, b0, b0 + spb * s->g->bars_per_chord, 1.0, root, vel - 14, 0);
        break;
      case B_EIGHTHS:
        for (int i = 0; i < spb; i += 2) note(s, p, b0 + i, b0 + i + 2, 0.8, root, vel + (i % 4 == 0 ? 6 : -4), 0);
        break;
      case B_ROOT_FIFTH:
        note(s, p, b0, b0 + 8, 0.9, root, vel, 0);
        if (s->beats == 3) {
          note(s, p, b0 + 4, b0 + 8, 0.8, fifth, vel - 10, 0);
          note(s, p, b0 + 8, b0 + 12, 0.8, fifth, vel - 10, 0);
        } else {
          note(s, p, b0 + 8, b0 + 16, 0.9, fifth, vel - 6, 0);
        }
        break;
      case B_WALK: { /* root, chord tones near the last note, then a half-step into the next root */
        int next_pcs[4];
        chord_at(s, bar + 1, next_pcs);
        int target = place(next_pcs[0], 33), cur = root;
        note(s, p, b0, b0 + 4, 0.9, root, vel, 0);
        for (int bt = 1; bt < s->beats - 1; bt++) {
          int t = pcs[1 + rng_int(&s->rng, 2)], k = place(t, cur - 6);
          note(s, p, b0 + 4 * bt, b0 + 4 * bt + 4, 0.9, k, vel - 8, 0);
          cur = k;
        }
        note(s, p, b0 + 4 * (s->beats - 1), b0 + spb, 0.9, target + (rng_chance(&s->rng, 0.5) ? 1 : -1), vel - 8, 0);
        break;
      }
      case B_OFFBEAT:
        for (int i = 2; i < spb; i += 4) {
          note(s, p, b0 + i, b0 + i + 1, 0.9, root, vel, 0);
          if (sixteenths) note(s, p, b0 + i + 1, b0 + i + 2, 0.9, rng_chance(&s->rng, 0.2) ? root + 12 : root, vel - 10, 0);
        }
        break;
      case B_HIPHOP: pat = hip; break;
      case B_REGGAE: pat = reg; break;
      case B_POP: pat = "x.....x.x...x..."; break;
      case B_BOOGIE: { /* root, third, fifth, sixth, seventh and back, in eighths */
        int third = mod12(pcs[1] - pcs[0]);
        const int up[8] = {0, third, 7, 9, 10, 9, 7, third};
        for (int i = 0, j = 0; i < spb; i += 2, j++) note(s, p, b0 + i, b0 + i + 2, 0.8, root + up[j % 8], vel - (i % 4 ? 8 : 0), 0);
        break;
      }
    }
    if (!pat) continue;
    for (int i = 0; i < spb; i++) {
      if (pat[i] == '.') continue;
      int next = i + 1;
      while (next < spb && pat[next] == '.') next++;
      int k = root;
      if (i > 0 && style != B_POP) { /* later hits: root, fifth or octave */
        int c = rng_int(&s->rng, 4);
        k = c == 1 ? fifth : c == 2 ? root + 12 : root;
      } else if (style == B_POP && i == 12) {
        k = fifth;
      }
      if (k == prev && style == B_REGGAE && i > 0) k = root;
      note(s, p, b0 + i, b0 + next, style == B_REGGAE ? 0.7 : 0.9, k, vel - (i ? 6 : 0), 0);
      prev = k;
    }
  }
}

/* ------------------------------------------------------------------ melody */

/* MIDI key of melody scale index i (index 0 is the tonic at or above middle C). */
static int mel_key(const Song *s, int i) {
  int L = s->mel_len, oct = i >= 0 ? i / L : -((-i + L - 1) / L);
  return 60 + s->tonic + 12 * oct + s->mel[i - oct * L];
}

static bool in_chord(int key, const int *pcs, int n) {
  for (int k = 0; k < n; k++)
    if (mod12(key) == pcs[k]) return true;
  return false;
}

/* Onsets for a 2-bar motif from rhythm cells of the genre's density. */
static void motif_rhythm(Song *s, bool *on, int len) {
  static const char *const CELLS0[] = {"x.......", "x...x...", "x.....x.", "........", "x......."};
  static const char *const CELLS1[] = {"x...", "x.x.", "x...", "..x.", "x..x", "x.x.", "...."};
  static const char *const CELLS2[] = {"x.x.", "xxxx", "x.xx", "xx.x", "x.x.", "x..."};
  int d = s->g->density, cell = d == 0 ? 8 : 4;
  for (int i = 0; i < len; i += cell) {
    const char *c = d == 0 ? pick(&s->rng, CELLS0, 5) : d == 1 ? pick(&s->rng, CELLS1, 7) : pick(&s->rng, CELLS2, 6);
    for (int j = 0; j < cell; j++) on[i + j] = c[j] == 'x';
  }
  on[0] = true;
}

static void write_melody(Song *s, MidiPart *p) {
  int spb = s->spb, len = 2 * spb, lo = 0, hi = 0;
  /* The scale indices inside the instrument's range. */
  while (mel_key(s, lo - 1) >= s->lead->lo) lo--;
  while (mel_key(s, lo) < s->lead->lo) lo++;
  while (mel_key(s, hi + 1) <= s->lead->hi) hi++;
  while (mel_key(s, hi) > s->lead->hi) hi--;
  int idx = (lo + hi) / 2, base = 64 + 14 * s->energy;
  int max_len = s->g->density == 0 ? 16 : 8; /* longest note, in steps */
  bool *on = MALLOC_CHECK((size_t)len * sizeof *on);
  int *loop_keys = MALLOC_CHECK((size_t)len * sizeof *loop_keys);
  motif_rhythm(s, on, len);

  for (int m = 0; m * len < s->n_bars * spb; m++) {
    int m0 = m * len;
    bool phrase_end = m % 2 == 1 && !s->g->loop;
    if (m > 0 && !s->g->loop && rng_chance(&s->rng, 0.5)) motif_rhythm(s, on, len);
    int last = len - 1;
    while (!on[last]) last--;
    for (int i = 0; i < len; i++) {
      if (!on[i]) continue;
      int next = i + 1;
      while (next < len && !on[next]) next++;
      if (next - i > max_len) next = i + max_len;
      int key;
      if (s->g->loop && m > 0) {
        key = loop_keys[i];
      } else {
        double r = rng_unit(&s->rng);
        int step = r < 0.12 ? 0 : r < 0.42 ? -1 : r < 0.72 ? 1 : r < 0.82 ? -2 : r < 0.92 ? 2 : (rng_chance(&s->rng, 0.5) ? 3 : -4);
        idx += step;
        if (idx < lo) idx = lo + (lo - idx);
        if (idx > hi) idx = hi - (idx - hi);
        if (idx < lo) idx = lo;
        if (idx > hi) idx = hi;
        /* Strong beats (and a phrase's last note) lean to a chord tone. */
        int pcs[4], n = chord_at(s, (m0 + i) / spb, pcs);
        bool strong = i % 8 == 0 || (phrase_end && i == last);
        if (strong && (rng_chance(&s->rng, 0.7) || i == last))
          for (int d = 0; d <= 3; d++) {
            if (idx - d >= lo && in_chord(mel_key(s, idx - d), pcs, n)) { idx -= d; break; }
            if (idx + d <= hi && in_chord(mel_key(s, idx + d), pcs, n)) { idx += d; break; }
          }
        key = mel_key(s, idx);
        loop_keys[i] = key;
      }
      if (phrase_end && i == last) next = len; /* hold the phrase's last note */
      note(s, p, m0 + i, m0 + next, s->g->gate, key, base + (i % spb == 0 ? 8 : 0), 0);
    }
  }
  free(on);
  free(loop_keys);
}

/* ------------------------------------------------------------------ choices and caption */

/* A choice from a NULL-phrase-terminated list, avoiding `avoid` (a program) when possible. */
static const Choice *choose(Rng *r, const Choice *list, int avoid) {
  int n = 0, ok = 0;
  while (list[n].phrase) ok += list[n].program != avoid, n++;
  MCM_CHECK(n > 0, "demo composer: empty choice list");
  if (ok == 0) return &list[rng_int(r, n)];
  int k = rng_int(r, ok);
  for (int i = 0; i < n; i++)
    if (list[i].program != avoid && k-- == 0) return &list[i];
  return &list[0];
}

static int parse_progression(const char *text, int *out, int cap) {
  int n = 0;
  for (const char *c = text; *c; c++)
    if (*c >= '1' && *c <= '7') {
      MCM_CHECK(n < cap, "demo composer: progression '%s' longer than %d", text, cap);
      out[n++] = *c - '1';
    }
  return n;
}

static void choose_moods(Song *s, const char **words, int *n_words) {
  const Genre *g = s->g;
  const char *cand[8];
  int n = 0;
  /* Moods that fit the mode and the energy; failing that, the mode only; then any. */
  for (int pass = 0; pass < 3 && n == 0; pass++)
    for (int i = 0; i < 8 && g->moods[i]; i++) {
      const Mood *m = mood_find(g->moods[i]);
      bool mode_ok = m->mode == 0 || (m->mode == 2) == s->minor;
      bool energy_ok = s->energy >= m->energy_lo && s->energy <= m->energy_hi;
      if ((pass == 0 && mode_ok && energy_ok) || (pass == 1 && mode_ok) || pass == 2) cand[n++] = m->word;
    }
  words[0] = cand[rng_int(&s->rng, n)];
  *n_words = 1;
  if (n > 1 && rng_chance(&s->rng, 0.5)) {
    int j = rng_int(&s->rng, n - 1);
    for (int i = 0; i < n; i++)
      if (cand[i] != words[0] && j-- == 0) words[(*n_words)++] = cand[i];
  }
}

/* "an" before a vowel sound: "an airy", "an 808", but "a euphoric". */
static const char *article(const char *w) { return strchr("aeiou8", w[0]) && strncmp(w, "eu", 2) ? "an" : "a"; }

typedef struct Str {
  char *p;
  size_t cap, n;
} Str;

static void add(Str *s, const char *fmt, ...) MCM_PRINTF(2, 3);
static void add(Str *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(s->p + s->n, s->cap - s->n, fmt, ap);
  va_end(ap);
  if (k > 0) s->n = s->n + (size_t)k < s->cap ? s->n + (size_t)k : s->cap - 1;
}

static void write_caption(Song *s, const char **moods, int n_moods, DemoClip *c) {
  Rng *r = &s->rng;
  const Genre *g = s->g;
  char mood[64], acc[256], key[40];
  mcm_snprintf(mood, sizeof mood, "%s%s%s", moods[0], n_moods > 1 ? " and " : "", n_moods > 1 ? moods[1] : "");
  if (s->kit)
    mcm_snprintf(acc, sizeof acc, "%s, %s and %s", s->chords->phrase, s->bass->phrase, s->kit->phrase);
  else
    mcm_snprintf(acc, sizeof acc, "%s and %s", s->chords->phrase, s->bass->phrase);
  mcm_snprintf(key, sizeof key, "%s%s", c->key, s->beats == 3 ? " (3/4 time)" : "");
  const char *noun = g->nouns[rng_int(r, 3)], *lead = s->lead->name, *adj = s->lead->adj[rng_int(r, 2)];
  const char *tempo = s->bpm < 80 ? "slow" : s->bpm < 105 ? "mid-tempo" : s->bpm < 130 ? "upbeat" : "fast";
  Str o = {c->caption, sizeof c->caption, 0};
  switch (rng_int(r, 7)) {
    case 0:
      add(&o, "%s %s %s %s in %s at %d BPM: %s %s %s melody over %s.", article(mood), mood, g->name, noun, key, s->bpm,
          article(adj), adj, lead, acc);
      break;
    case 1: add(&o, "%s %s %s, %d BPM, %s, %s %s lead over %s.", mood, g->name, noun, s->bpm, key, adj, lead, acc); break;
    case 2:
      add(&o, "%s %s %s carries %s %s melody in %s over %s; %s, %d BPM.", article(adj), adj, lead, article(mood), mood, key, acc,
          g->name, s->bpm);
      break;
    case 3:
      add(&o, "%s %s in %s with %s %s feel: %s %s %s melody, %s, around %d BPM.", g->name, noun, key, article(mood), mood,
          article(adj), adj, lead, acc, s->bpm);
      break;
    case 4:
      add(&o, "%s %s, %s %s %s featuring %s %s %s, backed by %s. Key of %s, %d BPM.", article(tempo), tempo, mood, g->name,
          noun, article(adj), adj, lead, acc, key, s->bpm);
      break;
    case 5:
      add(&o, "Instrumental %s in %s at %d beats per minute: %s and %s, led by %s %s %s with %s.", g->name, key, s->bpm, mood,
          tempo, article(adj), adj, lead, acc);
      break;
    default: add(&o, "%d BPM %s %s in %s. %s %s melody with %s.", s->bpm, g->name, noun, key, mood, lead, acc); break;
  }
  if (c->caption[0] >= 'a' && c->caption[0] <= 'z') c->caption[0] = (char)(c->caption[0] - 'a' + 'A');
  for (char *d = strstr(c->caption, ". "); d; d = strstr(d + 1, ". ")) /* capitalise each sentence */
    if (d[2] >= 'a' && d[2] <= 'z') d[2] = (char)(d[2] - 'a' + 'A');
}

/* ------------------------------------------------------------------ compose */

void demo_compose(uint64_t seed, int index, double seconds, MidiScore *score, DemoClip *clip) {
  MCM_CHECK(index >= 0 && seconds > 0 && seconds <= DEMO_MAX_SECONDS, "demo_compose: index %d, seconds %g", index, seconds);
  Song s = {.rng = {.seed = seed, .block = (uint64_t)index << 32}, .sc = score};
  Rng *r = &s.rng;
  const Genre *g = s.g = &GENRES[rng_int(r, N_GENRES)];
  s.tonic = rng_int(r, 12);
  s.minor = rng_chance(r, g->minor_p);
  s.bpm = rng_range(r, g->bpm_lo, g->bpm_hi);
  s.beats = rng_chance(r, g->waltz_p) ? 3 : 4;
  s.spb = 4 * s.beats;
  double pos = (double)(s.bpm - g->bpm_lo) / (g->bpm_hi - g->bpm_lo + 1);
  s.energy = pos < 1.0 / 3 ? 0 : pos < 2.0 / 3 ? 1 : 2;
  s.scale7 = s.minor ? MINOR : MAJOR;
  s.mel = g->scale == S_BLUES ? BLUES_SCALE : g->scale == S_PENTATONIC ? (s.minor ? MINOR_PENTA : MAJOR_PENTA) : s.scale7;
  s.mel_len = g->scale == S_BLUES ? 6 : g->scale == S_PENTATONIC ? 5 : 7;
  const char *const *progs = s.minor ? g->minor : g->major;
  int n_progs = 0;
  while (n_progs < 5 && progs[n_progs]) n_progs++;
  s.prog_len = parse_progression(progs[rng_int(r, n_progs)], s.prog, 16);

  int n_leads = 0;
  while (g->leads[n_leads] >= 0) n_leads++;
  s.lead = lead_find(g->leads[rng_int(r, n_leads)]);
  s.chords = choose(r, g->chords, s.lead->program);
  s.bass = choose(r, g->basses, s.lead->program);
  s.kit = g->drums != D_NONE ? choose(r, g->kits, -1) : NULL;
  const char *moods[2];
  int n_moods;
  choose_moods(&s, moods, &n_moods);

  memset(clip, 0, sizeof *clip);
  clip->genre = g->name;
  clip->lead = s.lead->name;
  clip->bpm = s.bpm;
  clip->beats_per_bar = s.beats;
  mcm_snprintf(clip->key, sizeof clip->key, "%s %s", (s.minor ? MINOR_NAMES : MAJOR_NAMES)[s.tonic], s.minor ? "minor" : "major");
  mcm_snprintf(clip->moods, sizeof clip->moods, "%s%s%s", moods[0], n_moods > 1 ? ", " : "", n_moods > 1 ? moods[1] : "");

  midi_score_init(score, PPQ, s.bpm);
  mcm_snprintf(score->title, sizeof score->title, "mcm demo clip %05d: %s in %s", index, g->name, clip->key);
  score->ts_num = s.beats;
  score->key_sharps = (s.minor ? MINOR_SHARPS : MAJOR_SHARPS)[s.tonic];
  score->key_minor = s.minor;
  score->end_tick = (uint32_t)ceil(seconds * 1e6 * PPQ / score->us_per_quarter);
  s.n_bars = (int)((score->end_tick + (uint32_t)(PPQ * s.beats) - 1) / (uint32_t)(PPQ * s.beats));

  MidiPart *lead = midi_score_add_part(score, "lead", 0, s.lead->program);
  lead->volume = 110, lead->reverb = g->reverb;
  MidiPart *chords = midi_score_add_part(score, "chords", 1, s.chords->program);
  chords->volume = s.chords->style == PAD ? 88 : 78, chords->pan = 48, chords->reverb = g->reverb;
  chords->chorus = s.chords->style == PAD ? 50 : 0;
  MidiPart *bass = midi_score_add_part(score, "bass", 2, s.bass->program);
  bass->volume = 100, bass->reverb = 20;
  write_melody(&s, lead);
  write_chords(&s, chords);
  write_bass(&s, bass);
  if (s.kit) {
    MidiPart *drums = midi_score_add_part(score, "drums", MIDI_DRUM_CHANNEL, s.kit->program);
    drums->volume = 100, drums->reverb = g->reverb / 2;
    write_drums(&s, drums);
  }
  write_caption(&s, moods, n_moods, clip);
}

void demo_programs_used(bool melodic[128], bool kits[128]) {
  memset(melodic, 0, 128 * sizeof *melodic);
  memset(kits, 0, 128 * sizeof *kits);
  for (int i = 0; i < N_GENRES; i++) {
    const Genre *g = &GENRES[i];
    for (int k = 0; g->leads[k] >= 0; k++) melodic[g->leads[k]] = true;
    for (int k = 0; g->chords[k].phrase; k++) melodic[g->chords[k].program] = true;
    for (int k = 0; g->basses[k].phrase; k++) melodic[g->basses[k].program] = true;
    for (int k = 0; g->kits[k].phrase; k++) kits[g->kits[k].program] = true;
  }
}
