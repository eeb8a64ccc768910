/* make_demo_dataset: a small music dataset anyone can build, rendered from generated MIDI
 * with fluidsynth (the work is in data/demo_dataset.c, data/demo_music.c and data/midi.c). */
#include <unistd.h>

#include "core/cli.h"
#include "data/demo_dataset.h"

static const char USAGE[] =
    "usage: make_demo_dataset [options]\n"
    "\n"
    "Composes music clips (genre, key, tempo, mood, instruments chosen at random), renders them\n"
    "with fluidsynth and a General MIDI SoundFont, and writes 16 kHz mono WAV files with a\n"
    "caption each, plus an AudioLDM-style manifest.json and captions.lst. The same seed and\n"
    "options give the same bytes.\n"
    "\n"
    "options:\n"
    "  --out DIR          output directory (default data/demo)\n"
    "  --clips N          number of clips, 1..99999 (default 200)\n"
    "  --seconds S        length of each clip in seconds, up to 600 (default 10.24)\n"
    "  --seed N           random seed (default 0)\n"
    "  --soundfont PATH   General MIDI SoundFont (default " MIDI_DEFAULT_SOUNDFONT ")\n"
    "  --midi             also write each clip's score as midi/clip_NNNNN.mid\n"
    "  --threads N        worker threads (default: all cores)\n"
    "  --help             this text\n"
    "\n"
    "example:\n"
    "  build/cpu/tools/make_demo_dataset --out data/demo --clips 200 --seconds 10.24 --seed 0\n";

int main(int argc, char **argv) {
  DemoOptions o;
  demo_options_default(&o);
  McmErr err = {{0}};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    long long n;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      return 0;
    } else if (!strcmp(a, "--midi")) {
      o.write_midi = true;
    } else if (!strcmp(a, "--out") || !strcmp(a, "--soundfont")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      *(a[2] == 'o' ? &o.out_dir : &o.soundfont) = v;
    } else if (!strcmp(a, "--clips")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 1, DEMO_MAX_CLIPS, &n, &err)) goto bad;
      o.clips = (int)n;
    } else if (!strcmp(a, "--threads")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 1, 1024, &n, &err)) goto bad;
      o.threads = (int)n;
    } else if (!strcmp(a, "--seed")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 0, INT64_MAX, &n, &err)) goto bad;
      o.seed = (uint64_t)n;
    } else if (!strcmp(a, "--seconds")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_float(a, v, 0, DEMO_MAX_SECONDS, true, &o.seconds, &err)) goto bad;
    } else {
      mcm_err(&err, "unknown argument '%s' (see make_demo_dataset --help)", a);
      goto bad;
    }
  }
  o.progress = isatty(2);

  DemoStats st;
  if (demo_dataset_build(&o, &st, &err)) goto bad;
  double per_thread = st.synth_seconds / st.clips;
  printf("make_demo_dataset: %d clips, %.1f min of audio in %s/ (manifest.json, captions.lst) in %.1f s\n", st.clips,
         st.audio_seconds / 60, o.out_dir, st.wall_seconds);
  printf("make_demo_dataset: %.1fx real time on %d thread%s (%.1fx per thread: compose, synthesise at %d Hz, "
         "resample to %d Hz, write)\n",
         st.audio_seconds / st.wall_seconds, st.threads, st.threads == 1 ? "" : "s", (st.audio_seconds / st.clips) / per_thread,
         DEMO_RENDER_RATE, DEMO_SAMPLE_RATE);
  return 0;
bad:
  fprintf(stderr, "make_demo_dataset: error: %s\n", err.msg);
  return 2;
}
