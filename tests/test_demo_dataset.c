/* The demo dataset: the MIDI writer's bytes, the composer's choices and captions, and the
 * build end to end (files, lengths, loudness, manifest, determinism, bad arguments). */
#include <glob.h>
#include <jansson.h>
#include <sndfile.h>
#include <sys/stat.h>

#include "data/demo_dataset.h"
#include "test.h"

/* ------------------------------------------------------------------ MIDI writer */

static const uint8_t *find(const uint8_t *hay, size_t n, const void *needle, size_t k) {
  for (size_t i = 0; i + k <= n; i++)
    if (!memcmp(hay + i, needle, k)) return hay + i;
  return NULL;
}

/* Two quarter notes (C4 then E4) at 120 BPM, 96 ticks per quarter, in a half-note piece. */
TEST(midi_smf_bytes_match_hand_checked_layout) {
  MidiScore s;
  midi_score_init(&s, 96, 120);
  strcpy(s.title, "t");
  s.end_tick = 192;
  MidiPart *p = midi_score_add_part(&s, "lead", 0, 0);
  midi_part_add_note(&s, p, 96, 96, 64, 80); /* added out of order on purpose */
  midi_part_add_note(&s, p, 0, 96, 60, 100);
  uint8_t *b;
  size_t n = midi_smf_bytes(&s, &b);
  static const uint8_t want[] = {
      'M', 'T', 'h', 'd', 0, 0, 0, 6, 0, 1, /* format 1 */ 0, 2, /* tracks */ 0, 96, /* ppq */
      'M', 'T', 'r', 'k', 0, 0, 0, 31,
      0x00, 0xff, 0x03, 1, 't',                        /* title */
      0x00, 0xff, 0x58, 4, 4, 2, 24, 8,                /* 4/4 (2 = log2 of 4), 24 clocks, 8 32nds */
      0x00, 0xff, 0x59, 2, 0, 0,                       /* C major */
      0x00, 0xff, 0x51, 3, 0x07, 0xa1, 0x20,           /* 500000 us per quarter */
      0x81, 0x40, 0xff, 0x2f, 0x00,                    /* end of track after 192 ticks (VLQ 81 40) */
      'M', 'T', 'r', 'k', 0, 0, 0, 47,
      0x00, 0xff, 0x03, 4, 'l', 'e', 'a', 'd',         /* track name */
      0x00, 0xc0, 0,                                   /* program 0 */
      0x00, 0xb0, 7, 100, 0x00, 0xb0, 10, 64,          /* volume, pan */
      0x00, 0xb0, 91, 40, 0x00, 0xb0, 93, 0,           /* reverb, chorus */
      0x00, 0x90, 60, 100,                             /* C4 on */
      0x60, 0x80, 60, 64,                              /* 96 ticks later: C4 off before ... */
      0x00, 0x90, 64, 80,                              /* ... E4 on */
      0x60, 0x80, 64, 64,                              /* E4 off */
      0x00, 0xff, 0x2f, 0x00,
  };
  EXPECT(n == sizeof want, "length %zu, want %zu", n, sizeof want);
  for (size_t i = 0; i < n && i < sizeof want; i++)
    if (b[i] != want[i]) {
      test_fail(__FILE__, __LINE__, "byte %zu is 0x%02x, want 0x%02x", i, b[i], want[i]);
      break;
    }

  /* midi_save writes exactly these bytes, atomically. */
  const char *path = TEST_PATH("t.mid");
  McmErr err = {{0}};
  ASSERT(midi_save(&s, path, &err) == 0, "%s", err.msg);
  FILE *f = fopen(path, "rb");
  ASSERT(f, "no %s", path);
  uint8_t got[256];
  size_t k = fread(got, 1, sizeof got, f);
  fclose(f);
  EXPECT(k == n && !memcmp(got, b, n), "saved file differs from midi_smf_bytes");
  glob_t g; /* core/io names temporaries t.mid.tmp.<pid>.<tid>: none may remain */
  EXPECT(glob(TEST_PATH("t.mid.tmp*"), 0, NULL, &g) == GLOB_NOMATCH, "temporary file left behind");
  globfree(&g);
  EXPECT(midi_save(&s, TEST_PATH("no/such/dir/t.mid"), &err) == -1, "unwritable path accepted");
  EXPECT_STR_CONTAINS(err.msg, "cannot write '");
  EXPECT_STR_CONTAINS(err.msg, "t.mid': No such file or directory");
  free(b);
  midi_score_free(&s);
}

/* A note still sounding when its key starts again is cut there; notes past the end are
 * dropped or shortened. */
TEST(midi_overlapping_notes_are_cut) {
  MidiScore s;
  midi_score_init(&s, 96, 120);
  s.end_tick = 192;
  MidiPart *p = midi_score_add_part(&s, "x", 1, 5);
  midi_part_add_note(&s, p, 0, 200, 60, 100); /* runs past the end and into the next C4 */
  midi_part_add_note(&s, p, 96, 50, 60, 90);
  midi_part_add_note(&s, p, 192, 10, 62, 90); /* starts at the end: dropped */
  EXPECT(p->n_notes == 2, "%d notes kept", p->n_notes);
  EXPECT(p->notes[0].dur == 192, "first note cut to the end: %u", p->notes[0].dur);
  uint8_t *b;
  size_t n = midi_smf_bytes(&s, &b);
  static const uint8_t events[] = {0x00, 0x91, 60, 100, 0x60, 0x81, 60, 64, 0x00, 0x91, 60, 90, 0x32, 0x81, 60, 64,
                                   0x2e, 0xff, 0x2f, 0x00}; /* off at 96, on at 96, off at 146, end at 192 */
  EXPECT(find(b, n, events, sizeof events) != NULL, "event bytes not found");
  free(b);
  midi_score_free(&s);
}

/* ------------------------------------------------------------------ composer */

TEST(demo_compose_choices_and_captions) {
  const char *genres[] = {"ambient", "rock", "jazz", "techno", "classical", "folk", "hip hop", "reggae", "pop", "blues"};
  int seen[10] = {0}, n = 300, drums = 0;
  static char caps[300][512];
  for (int i = 0; i < n; i++) {
    MidiScore sc;
    DemoClip c;
    demo_compose(7, i, 4.0, &sc, &c);
    for (int g = 0; g < 10; g++) seen[g] += !strcmp(c.genre, genres[g]);
    /* The caption names the genre, the key and the tempo. */
    char bpm[16];
    snprintf(bpm, sizeof bpm, "%d", c.bpm);
    EXPECT(strcasestr(c.caption, c.genre), "caption does not name the genre %s: %s", c.genre, c.caption);
    EXPECT_STR_CONTAINS(c.caption, c.key);
    EXPECT_STR_CONTAINS(c.caption, bpm);
    EXPECT_STR_CONTAINS(c.caption, c.lead);
    EXPECT((c.caption[0] >= 'A' && c.caption[0] <= 'Z') || (c.caption[0] >= '0' && c.caption[0] <= '9'), "%s", c.caption);
    strcpy(caps[i], c.caption);
    for (int j = 0; j < i; j++) EXPECT(strcmp(caps[i], caps[j]), "clips %d and %d share a caption: %s", i, j, caps[i]);

    /* Lead, chords and bass always; drums on channel 10 when the genre has them. */
    ASSERT(sc.n_parts >= 3, "%d parts", sc.n_parts);
    drums += sc.n_parts == 4 && sc.parts[3].channel == MIDI_DRUM_CHANNEL && sc.parts[3].n_notes > 0;
    uint32_t end = (uint32_t)(4.0 * 1e6 * sc.ppq / sc.us_per_quarter + 1);
    for (int p = 0; p < sc.n_parts; p++) {
      EXPECT(sc.parts[p].n_notes > 0, "clip %d (%s) part %s is empty", i, c.genre, sc.parts[p].name);
      for (int k = 0; k < sc.parts[p].n_notes; k++) {
        const MidiNote *m = &sc.parts[p].notes[k];
        EXPECT(m->start + m->dur <= sc.end_tick && sc.end_tick <= end, "note past the end");
      }
    }
    /* The melody stays in the key's scale (blues adds its flat fifth). */
    int tonic = -1;
    const char *names[] = {"C ", "C# ", "Db ", "D ", "Eb ", "E ", "F ", "F# ", "G ", "G# ", "Ab ", "A ", "Bb ", "B "};
    const int pcs[] = {0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11};
    for (int k = 0; k < 14; k++)
      if (!strncmp(c.key, names[k], strlen(names[k]))) tonic = pcs[k];
    ASSERT(tonic >= 0, "key '%s'", c.key);
    bool minor = strstr(c.key, "minor") != NULL;
    static const int MAJ[12] = {1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1}, MIN[12] = {1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0};
    for (int k = 0; k < sc.parts[0].n_notes; k++) {
      int d = (sc.parts[0].notes[k].key - tonic + 120) % 12;
      bool ok = minor ? MIN[d] : MAJ[d];
      if (!strcmp(c.genre, "blues")) ok = ok || d == 3 || d == 6 || d == 10;
      EXPECT(ok, "clip %d (%s, %s): melody note %d is outside the scale", i, c.genre, c.key, sc.parts[0].notes[k].key);
    }
    midi_score_free(&sc);
  }
  for (int g = 0; g < 10; g++) EXPECT(seen[g] > 0, "genre %s never chosen in %d clips", genres[g], n);
  EXPECT(drums > n / 2, "only %d of %d clips have drums", drums, n);
}

/* ------------------------------------------------------------------ build */

static DemoOptions small(const char *dir, uint64_t seed) {
  DemoOptions o;
  demo_options_default(&o);
  o.out_dir = dir, o.clips = 3, o.seconds = 2.0, o.seed = seed, o.write_midi = true;
  return o;
}

TEST(demo_build_three_clips) {
  char dir[600];
  snprintf(dir, sizeof dir, "%s", TEST_PATH("demo/nested"));
  DemoOptions o = small(dir, 0);
  DemoStats st;
  McmErr err = {{0}};
  ASSERT(demo_dataset_build(&o, &st, &err) == 0, "%s", err.msg);
  EXPECT(st.clips == 3 && fabs(st.audio_seconds - 6.0) < 1e-9, "stats: %d clips, %g s", st.clips, st.audio_seconds);

  char path[800];
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/audio/clip_%05d.wav", dir, i);
    SF_INFO info = {0};
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    ASSERT(sf, "cannot open %s: %s", path, sf_strerror(NULL));
    EXPECT(info.samplerate == 16000 && info.channels == 1 && info.frames == 32000, "%s: %d Hz, %d ch, %lld frames", path,
           info.samplerate, info.channels, (long long)info.frames);
    EXPECT(info.format == (SF_FORMAT_WAV | SF_FORMAT_PCM_16), "%s: format 0x%x", path, info.format);
    float *x = malloc(32000 * sizeof *x);
    EXPECT(sf_readf_float(sf, x, 32000) == 32000, "short read");
    sf_close(sf);
    double ss = 0, peak = 0;
    for (int k = 0; k < 32000; k++) ss += (double)x[k] * x[k], peak = fmax(peak, fabs(x[k]));
    EXPECT(sqrt(ss / 32000) > 0.03, "%s is nearly silent: RMS %g", path, sqrt(ss / 32000));
    EXPECT_NEAR(peak, 0.9, 0.01);
    free(x);
    snprintf(path, sizeof path, "%s/midi/clip_%05d.mid", dir, i);
    size_t n;
    char *mid = test_read_file(path, &n);
    EXPECT(mid && n > 14 && !memcmp(mid, "MThd", 4), "%s is not a MIDI file", path);
    free(mid);
    snprintf(path, sizeof path, "%s/audio/clip_%05d.wav.tmp", dir, i);
    struct stat s;
    EXPECT(stat(path, &s) != 0, "%s left behind", path);
  }

  snprintf(path, sizeof path, "%s/manifest.json", dir);
  json_error_t je;
  json_t *root = json_load_file(path, 0, &je);
  ASSERT(root, "manifest does not parse: %s (line %d)", je.text, je.line);
  json_t *data = json_object_get(root, "data");
  ASSERT(json_is_array(data) && json_array_size(data) == 3, "manifest 'data' is not an array of 3");
  const char *caps[3];
  for (size_t i = 0; i < 3; i++) {
    json_t *e = json_array_get(data, i);
    char want[32];
    snprintf(want, sizeof want, "audio/clip_%05zu.wav", i);
    const char *wav = json_string_value(json_object_get(e, "wav"));
    caps[i] = json_string_value(json_object_get(e, "caption"));
    EXPECT(wav && !strcmp(wav, want), "entry %zu names '%s', want '%s'", i, wav ? wav : "(none)", want);
    EXPECT(caps[i] && strlen(caps[i]) > 20, "entry %zu has no caption", i);
    EXPECT(json_is_integer(json_object_get(e, "bpm")), "entry %zu has no bpm", i);
  }
  EXPECT(caps[0] && caps[1] && caps[2] && strcmp(caps[0], caps[1]) && strcmp(caps[0], caps[2]) && strcmp(caps[1], caps[2]),
         "captions are not distinct");

  snprintf(path, sizeof path, "%s/captions.lst", dir);
  size_t n;
  char *lst = test_read_file(path, &n);
  ASSERT(lst, "no captions.lst");
  char line[600];
  snprintf(line, sizeof line, "audio/clip_00001.wav|%s\n", caps[1] ? caps[1] : "");
  EXPECT_STR_CONTAINS(lst, line);
  int lines = 0;
  for (size_t i = 0; i < n; i++) lines += lst[i] == '\n';
  EXPECT(lines == 3, "captions.lst has %d lines", lines);
  free(lst);
  json_decref(root);
}

/* Same seed: the same bytes, whatever the number of threads. Another seed: other music. */
TEST(demo_build_is_deterministic) {
  char a[600], b[600], c[600];
  snprintf(a, sizeof a, "%s", TEST_PATH("a"));
  snprintf(b, sizeof b, "%s", TEST_PATH("b"));
  snprintf(c, sizeof c, "%s", TEST_PATH("c"));
  DemoOptions oa = small(a, 42), ob = small(b, 42), oc = small(c, 43);
  oa.threads = 1, ob.threads = 2;
  McmErr err = {{0}};
  ASSERT(demo_dataset_build(&oa, NULL, &err) == 0, "%s", err.msg);
  ASSERT(demo_dataset_build(&ob, NULL, &err) == 0, "%s", err.msg);
  ASSERT(demo_dataset_build(&oc, NULL, &err) == 0, "%s", err.msg);
  const char *files[] = {"audio/clip_00000.wav", "audio/clip_00001.wav", "audio/clip_00002.wav", "midi/clip_00000.mid",
                         "midi/clip_00002.mid", "manifest.json", "captions.lst"};
  char pa[800], pb[800], pc[800];
  int differ = 0;
  for (int i = 0; i < 7; i++) {
    snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
    snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
    snprintf(pc, sizeof pc, "%s/%s", c, files[i]);
    EXPECT(test_same_file(pa, pb), "%s differs between two runs with seed 42", files[i]);
    differ += !test_same_file(pa, pc);
  }
  EXPECT(differ == 7, "only %d of 7 files differ between seeds 42 and 43", differ);
}

TEST(demo_build_bad_arguments) {
  McmErr err = {{0}};
  char dir[600];
  snprintf(dir, sizeof dir, "%s", TEST_PATH("out"));
  struct {
    DemoOptions o;
    const char *msg;
  } cases[8];
  int n = 0;
  cases[n].o = small(dir, 0), cases[n].o.clips = 0, cases[n++].msg = "number of clips must be 1..99999, got 0";
  cases[n].o = small(dir, 0), cases[n].o.clips = 100000, cases[n++].msg = "got 100000";
  cases[n].o = small(dir, 0), cases[n].o.seconds = 0, cases[n++].msg = "clip length must be more than 0";
  cases[n].o = small(dir, 0), cases[n].o.seconds = -1, cases[n++].msg = "got -1";
  cases[n].o = small(dir, 0), cases[n].o.seconds = NAN, cases[n++].msg = "clip length";
  cases[n].o = small(dir, 0), cases[n].o.out_dir = NULL, cases[n++].msg = "no output directory";
  cases[n].o = small(dir, 0), cases[n].o.soundfont = "/no/such/font.sf2", cases[n++].msg = "cannot read SoundFont '/no/such/font.sf2'";
  for (int i = 0; i < n; i++) {
    err.msg[0] = 0;
    EXPECT(demo_dataset_build(&cases[i].o, NULL, &err) == -1, "case %d accepted", i);
    EXPECT_STR_CONTAINS(err.msg, cases[i].msg);
  }
  struct stat st;
  EXPECT(stat(dir, &st) != 0, "a refused build created its output directory");

  /* A file that is not a SoundFont. */
  const char *fake = TEST_PATH("fake.sf2");
  FILE *f = fopen(fake, "w");
  fputs("RIFF not really", f);
  fclose(f);
  DemoOptions o = small(dir, 0);
  o.soundfont = fake;
  EXPECT(demo_dataset_build(&o, NULL, &err) == -1, "a text file accepted as SoundFont");
  EXPECT_STR_CONTAINS(err.msg, "is not a SoundFont 2 file");

  /* A SoundFont header with nothing behind it. */
  const char *cut = TEST_PATH("cut.sf2");
  f = fopen(cut, "wb");
  fwrite("RIFF\x10\0\0\0sfbkLIST\x04\0\0\0", 1, 20, f); /* the header promises 24 bytes */
  fclose(f);
  o.soundfont = cut;
  EXPECT(demo_dataset_build(&o, NULL, &err) == -1, "a truncated SoundFont accepted");
  EXPECT_STR_CONTAINS(err.msg, "cut.sf2' is truncated");

  /* An output directory below a regular file cannot be created. */
  char below[700];
  snprintf(below, sizeof below, "%s/sub", fake);
  o = small(below, 0);
  EXPECT(demo_dataset_build(&o, NULL, &err) == -1, "output below a file accepted");
  EXPECT_STR_CONTAINS(err.msg, "cannot create output directory");
  EXPECT_STR_CONTAINS(err.msg, "fake.sf2");
  o = small(fake, 0);
  EXPECT(demo_dataset_build(&o, NULL, &err) == -1, "a file as output directory accepted");
  EXPECT_STR_CONTAINS(err.msg, "exists and is not a directory");
}
