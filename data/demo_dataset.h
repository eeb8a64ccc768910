/* The demo dataset: music clips composed from random choices, rendered with fluidsynth and
 * a General MIDI SoundFont, each with a caption that says what was chosen. It lets anyone
 * run the whole pipeline without the Audiostock data:
 *
 *   build/cpu/tools/make_demo_dataset --out data/demo --clips 200 --seconds 10.24 --seed 0
 *
 * Output, under out_dir:
 *   audio/clip_00000.wav ...   16 kHz mono 16-bit PCM, peak normalised to 0.9
 *   midi/clip_00000.mid ...    the score as a Standard MIDI File (with write_midi)
 *   manifest.json              AudioLDM form {"data": [{"wav": "audio/clip_00000.wav",
 *                              "caption": "...", "genre", "key", "bpm", "moods", "lead"}]}
 *                              (paths relative to the manifest; the extra keys are metadata)
 *   captions.lst               "audio/clip_00000.wav|caption" per line (AudioLDM .lst form)
 * Every file is written to "<name>.tmp" and renamed, so a killed run leaves no half file
 * under a final name; the manifest is written last, only when every clip succeeded.
 *
 * Composition (demo_music.c): per clip a genre (ambient, rock, jazz, techno, classical,
 * folk, hip hop, reggae, pop, blues), each with its tempo range, progressions, drum style
 * and instrument palette; a key and mode; a tempo; mood words that fit the mode and tempo;
 * then a melody (a scale-constrained random walk on rhythm cells, leaning to chord tones on
 * strong beats, in 2-bar motifs), chords, a bass line on the chord roots and drums on MIDI
 * channel 10 (unless the genre has none).
 *
 * Determinism: clip i draws from Philox4x32-10 keyed by the seed at blocks i·2^32 ... and
 * is rendered by a fresh synth, so its bytes depend only on (seed, i, seconds, SoundFont),
 * not on the number of threads or the order they run in.
 *
 * Rendering: fluidsynth at 44.1 kHz stereo, mixed to mono and resampled to 16 kHz with
 * libsoxr (high quality). The SoundFont's samples are recorded at 44.1 kHz or more and
 * fluidsynth's interpolation has no anti-aliasing filter, so synthesising at 16 kHz
 * directly would fold the partials above 8 kHz back into the band the mel front end sees;
 * the extra synthesis cost (about 2.5x) still leaves the render well above 20x real time.
 */
#pragma once
#include "data/midi.h"
#include "kernels/common.h"

#define DEMO_SAMPLE_RATE 16000
#define DEMO_RENDER_RATE 44100
#define DEMO_MAX_CLIPS 99999 /* file names have five digits */
#define DEMO_MAX_SECONDS 600.0

typedef struct DemoOptions {
  const char *out_dir;   /* created (with parents) if missing */
  int clips;             /* 1..DEMO_MAX_CLIPS */
  double seconds;        /* per clip, (0, DEMO_MAX_SECONDS] */
  uint64_t seed;
  const char *soundfont; /* NULL: MIDI_DEFAULT_SOUNDFONT */
  bool write_midi;       /* also write midi/clip_NNNNN.mid */
  int threads;           /* 0: OpenMP's default */
  bool progress;         /* a progress line on stderr */
} DemoOptions;

typedef struct DemoStats {
  int clips, threads;
  double audio_seconds;  /* total length of the clips written */
  double wall_seconds;   /* the whole build */
  double synth_seconds;  /* time spent composing, synthesising and resampling, summed over threads */
} DemoStats;

/* What was chosen for one clip; the caption says it in words. */
typedef struct DemoClip {
  char caption[512];
  const char *genre; /* "ambient", "hip hop", ... */
  char key[16];      /* "D minor" */
  int bpm, beats_per_bar;
  char moods[64];    /* "calm, dreamy" */
  const char *lead;  /* lead instrument, "flute" */
} DemoClip;

/* Defaults: out "data/demo", 200 clips of 10.24 s, seed 0, the Debian SoundFont. */
void demo_options_default(DemoOptions *o);

/* Builds the dataset. Bad options, a missing or unusable SoundFont and an output directory
 * that cannot be created or written return -1 with one line in err. */
int demo_dataset_build(const DemoOptions *o, DemoStats *stats, McmErr *err);

/* Composes clip `index` of a run with this seed: fills the score (ppq 480; end_tick covers
 * `seconds`) and the description. The caller frees the score with midi_score_free. */
void demo_compose(uint64_t seed, int index, double seconds, MidiScore *score, DemoClip *clip);

/* Marks the General MIDI programs (bank 0) and drum kits (bank 128) the composer may use. */
void demo_programs_used(bool melodic[128], bool kits[128]);
