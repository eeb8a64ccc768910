/* Tests for ./prepare (data/prepare + prepare.c): the crop policy's window counts, a 25 s
 * file end to end (offsets, padding, captions and sources in the shard), every kind of bad
 * input skipped with its reason in report.tsv, silent windows dropped, shards split by
 * shard_size, identical shard bytes for 1, 2 and 3 threads, and the command line: usage,
 * exit statuses 0 / 1 / 2, refusing to mix runs in one directory, --overwrite, MagnaTagATune
 * and CSV end to end. */
#include <sndfile.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "data/audio.h"
#include "data/manifest.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "tests/test.h"

#define RATE 16000
#define W 163840 /* 1024 frames x hop 160 */

/* ---------------------------------------------------------------- helpers */

static uint32_t next_u32(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* A chord of three sines plus a little noise (so no mel bin sits at the floor). */
static float *music(int64_t n, uint32_t seed) {
  float *x = MALLOC_CHECK((size_t)n * sizeof(float));
  uint32_t s = seed | 1;
  for (int64_t i = 0; i < n; i++) {
    double t = (double)i / RATE;
    double noise = (double)(next_u32(&s) >> 8) * 0x1p-24 - 0.5;
    x[i] = (float)(0.3 * sin(2 * M_PI * 220 * t) + 0.2 * sin(2 * M_PI * (330 + seed % 50) * t) +
                   0.1 * sin(2 * M_PI * 1250 * t) + 0.02 * noise);
  }
  return x;
}

static void write_wav(const char *path, const float *x, int64_t n, int rate) {
  McmErr err = {{0}};
  ASSERT(audio_write(path, x, n, rate, AUDIO_WAV16, NULL, &err) == 0, "write %s: %s", path, err.msg);
}

static void write_music(const char *path, double seconds, uint32_t seed) {
  int64_t n = (int64_t)(seconds * RATE);
  float *x = music(n, seed);
  write_wav(path, x, n, RATE);
  free(x);
}

/* A float WAV written with libsndfile itself (audio_write refuses NaN). */
static void write_float_wav(const char *path, const float *x, int64_t n) {
  SF_INFO info = {.samplerate = RATE, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
  SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
  ASSERT(sf, "sf_open %s: %s", path, sf_strerror(NULL));
  if (n) ASSERT(sf_write_float(sf, x, n) == n, "sf_write_float");
  sf_close(sf);
}

static void write_text(const char *path, const char *text, size_t n) {
  FILE *f = fopen(path, "wb");
  ASSERT(f, "cannot write %s", path);
  if (n) ASSERT(fwrite(text, 1, n, f) == n, "short write");
  fclose(f);
}
#define WRITE(path, literal) write_text((path), (literal), sizeof(literal) - 1)

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Defaults of [mel] and [prepare], one thread, no output on stdout. */
static PrepareOptions options(const char *out_dir) {
  Config cfg;
  config_defaults(&cfg);
  PrepareOptions o;
  prepare_options_from_config(&cfg, &o);
  o.threads = 1;
  o.quiet = true;
  o.out_dir = out_dir;
  return o;
}

static PrepareStats run_manifest(const char *manifest, const PrepareOptions *o) {
  Manifest m = {0};
  McmErr err = {{0}};
  ASSERT(manifest_read(manifest, &m, &err) == 0, "manifest: %s", err.msg);
  PrepareStats st;
  ASSERT(prepare_run(&m, o, &st, &err) == 0, "prepare_run: %s", err.msg);
  manifest_free(&m);
  return st;
}

static int reason_count(const PrepareStats *st, const char *kind) {
  for (int i = 0; i < st->n_reasons; i++)
    if (!strcmp(st->reason[i], kind)) return st->reason_count[i];
  return 0;
}

/* "<bin dir>/<cmd>" with stderr folded into out; the exit status (tests/test.h). */
#define run(cmd, out, size) test_run_cmd((out), (size), "%s", (cmd))
static char out[1 << 16];

/* ---------------------------------------------------------------- the crop policy */

TEST(prepare_windows_follow_the_crop_policy) {
  PrepareOptions o = options("unused");
  int64_t s[8], l[8];
  const int64_t n25 = 25 * RATE; /* two full windows and a 4.52 s (0.44) tail */
  o.min_fraction = 0.5;
  EXPECT(prepare_windows(&o, n25, s, l, 8) == 2, "0.5: the tail is dropped");
  EXPECT(s[0] == 0 && s[1] == W && l[0] == W && l[1] == W, "full windows back to back");
  o.min_fraction = 0.4;
  ASSERT(prepare_windows(&o, n25, s, l, 8) == 3, "0.4: the tail is kept");
  EXPECT(s[2] == 2 * W && l[2] == n25 - 2 * W, "partial window [%lld, +%lld)", (long long)s[2], (long long)l[2]);
  EXPECT(prepare_windows(&o, W, s, l, 8) == 1 && l[0] == W, "exactly one window");
  EXPECT(prepare_windows(&o, W + 1, s, l, 8) == 1, "one sample of tail is dropped");
  EXPECT(prepare_windows(&o, 3 * RATE, s, l, 8) == 0, "3 s is 0.29 of a window");
  EXPECT(prepare_windows(&o, 8 * RATE, s, l, 8) == 1 && l[0] == 8 * RATE, "8 s: one partial window");
  EXPECT(prepare_windows(&o, 0, s, l, 8) == 0, "nothing from nothing");
  o.min_fraction = 1.0;
  EXPECT(prepare_windows(&o, 2 * W - 1, s, l, 8) == 1, "min_fraction 1 keeps full windows only");

  /* Overlapping windows, half a window apart: 0, W/2, W full; the tail from 3W/2 holds 0.94. */
  o.min_fraction = 0.5;
  o.hop_frames = 512;
  ASSERT(prepare_windows(&o, n25, s, l, 8) == 4, "hop W/2");
  EXPECT(s[1] == W / 2 && s[2] == W && s[3] == 3 * W / 2 && l[3] == n25 - 3 * W / 2, "starts %lld %lld %lld",
         (long long)s[1], (long long)s[2], (long long)s[3]);
  EXPECT(prepare_windows(&o, n25, NULL, NULL, 0) == 4, "counting only");

  o.crop = PREPARE_CROP_FIRST;
  EXPECT(prepare_windows(&o, n25, s, l, 8) == 1 && s[0] == 0 && l[0] == W, "first: one full window");
  EXPECT(prepare_windows(&o, 3 * RATE, s, l, 8) == 1 && l[0] == 3 * RATE, "first: a short file is padded");
}

/* ---------------------------------------------------------------- end to end, in process */

TEST(prepare_25s_file_end_to_end) {
  const char *wav = TEST_PATH("long.wav"), *man = TEST_PATH("m.json");
  write_music(wav, 25.0, 7);
  WRITE(man, "{\"data\": [{\"wav\": \"long.wav\", \"caption\": \"a chord, held\"}]}");

  PrepareOptions o = options(TEST_PATH("out04"));
  o.min_fraction = 0.4;
  PrepareStats st = run_manifest(man, &o);
  EXPECT(st.files == 1 && st.files_ok == 1 && st.files_skipped == 0, "files %d ok %d", st.files, st.files_ok);
  EXPECT(st.segments == 3 && st.shards == 1, "segments %lld shards %d", (long long)st.segments, st.shards);
  EXPECT_NEAR(st.audio_seconds, 25.0, 1e-9);
  EXPECT_NEAR(st.segment_seconds, 25.0, 1e-9);

  McmErr err = {{0}};
  Shard *sh = shard_open(TEST_PATH("out04/shard_00000.h5"), &err);
  ASSERT(sh, "open: %s", err.msg);
  ASSERT(shard_count(sh) == 3, "3 rows");
  ShardInfo info = shard_info(sh);
  EXPECT(info.frames == 1024 && info.n_mels == 64 && info.rate == RATE && info.hop == 160, "info");
  float *mel = MALLOC_CHECK(1024 * 64 * sizeof(float));
  for (int64_t i = 0; i < 3; i++) {
    char *caption, *source;
    int64_t offset;
    ASSERT(shard_read(sh, i, mel, &caption, &err) == 0 && shard_read_meta(sh, i, &source, &offset, &err) == 0, "%s",
           err.msg);
    EXPECT(!strcmp(caption, "a chord, held"), "caption '%s'", caption);
    EXPECT(!strcmp(source, wav), "source '%s'", source);
    EXPECT(offset == i * W, "row %lld offset %lld", (long long)i, (long long)offset);
    free(caption);
    free(source);
    /* Content everywhere in a full window: no frame sits at the floor. */
    EXPECT(mel[100 * 64 + 10] > logf(1e-5f) + 1, "row %lld has signal", (long long)i);
  }
  /* The last row holds 4.52 s (72320 samples) and zeros after: a frame whose 1024-sample
   * window lies wholly in the padding (centre >= 72320 + 512) is exactly the log floor. */
  for (int t = 456; t < 1024; t += 50)
    for (int k = 0; k < 64; k += 9) EXPECT(mel[t * 64 + k] == logf(1e-5f), "frame %d bin %d = %g", t, k, mel[t * 64 + k]);
  free(mel);
  shard_close(sh);
  char *summary = test_read_file(TEST_PATH("out04/prepare_summary.txt"), NULL);
  EXPECT_STR_CONTAINS(summary, "segments = 3");
  EXPECT_STR_CONTAINS(summary, "prepare.min_fraction = 0.4\n");
  free(summary);

  o = options(TEST_PATH("out05"));
  o.min_fraction = 0.5;
  st = run_manifest(man, &o);
  EXPECT(st.segments == 2, "min_fraction 0.5: 2 segments, got %lld", (long long)st.segments);
  EXPECT_NEAR(st.segment_seconds, 2 * 10.24, 1e-9);

  o = options(TEST_PATH("outfirst"));
  o.crop = PREPARE_CROP_FIRST;
  st = run_manifest(man, &o);
  EXPECT(st.segments == 1, "crop first: 1 segment, got %lld", (long long)st.segments);
}

TEST(prepare_bad_inputs_are_skipped_with_reasons) {
  write_music(TEST_PATH("good.wav"), 11.0, 1);
  WRITE(TEST_PATH("text.wav"), "this is not audio, only text named .wav\n");
  write_text(TEST_PATH("empty.wav"), "", 0);
  write_float_wav(TEST_PATH("header_only.wav"), NULL, 0);
  /* Truncated: a 2 s 16-bit WAV cut to half its bytes. */
  write_music(TEST_PATH("trunc.wav"), 2.0, 2);
  ASSERT(truncate(TEST_PATH("trunc.wav"), 44 + 2 * RATE) == 0, "truncate");
  float *x = music(2 * RATE, 3);
  x[1000] = NAN;
  write_float_wav(TEST_PATH("nan.wav"), x, 2 * RATE);
  memset(x, 0, 2 * RATE * sizeof(float));
  free(x);
  x = CALLOC_CHECK(12 * RATE, sizeof(float));
  write_wav(TEST_PATH("silent.wav"), x, 12 * RATE, RATE);
  for (int i = 0; i < 12 * RATE; i++) x[i] = (i % 2 ? 1 : -1) * 5e-5f; /* below the 1e-4 threshold */
  write_float_wav(TEST_PATH("hiss.wav"), x, 12 * RATE);
  free(x);
  write_music(TEST_PATH("tiny.wav"), 0.5, 4);
  write_music(TEST_PATH("short.wav"), 3.0, 5);

  const char *man = TEST_PATH("m.jsonl");
  WRITE(man, "{\"path\": \"good.wav\", \"caption\": \"the only good one\"}\n"
             "{\"path\": \"missing.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"text.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"empty.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"header_only.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"trunc.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"nan.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"silent.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"hiss.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"tiny.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"short.wav\", \"caption\": \"x\"}\n"
             "{\"path\": \"good.wav\", \"caption\": \"bad \xfe\xff caption\"}\n"
             "{\"path\": \"good.wav\", \"caption\": \"\"}\n"
             "{\"path\": \"good.wav\"}\n"
             "{\"caption\": \"no path\"}\n");
  PrepareOptions o = options(TEST_PATH("out"));
  o.threads = 2;
  PrepareStats st = run_manifest(man, &o);
  EXPECT(st.files == 15 && st.files_ok == 1 && st.files_skipped == 14, "files %d ok %d skipped %d", st.files,
         st.files_ok, st.files_skipped);
  EXPECT(st.segments == 1, "one segment from good.wav, got %lld", (long long)st.segments);
  struct {
    const char *file, *kind;
    int count;
  } want[] = {
      {"missing.wav", "unreadable", 1},   {"text.wav", "not audio", 1},    {"empty.wav", "zero-length", 2},
      {"header_only.wav", "zero-length", 2}, {"trunc.wav", "truncated", 1}, {"nan.wav", "NaN or Inf", 1},
      {"silent.wav", "silent", 2},        {"hiss.wav", "silent", 2},       {"tiny.wav", "too short", 2},
      {"short.wav", "too short", 2},      {"good.wav", "caption not UTF-8", 1}, {"good.wav", "empty caption", 1},
      {"good.wav", "missing caption", 1}, {"m.jsonl:15", "missing path", 1},
  };
  char *report = test_read_file(TEST_PATH("out/report.tsv"), NULL);
  ASSERT(report, "no report.tsv");
  EXPECT(!strncmp(report, "path\treason\tdetail\n", 19), "header");
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char line[700];
    snprintf(line, sizeof line, "%s\t%s\t", want[i].file, want[i].kind);
    EXPECT_STR_CONTAINS(report, line);
    EXPECT(reason_count(&st, want[i].kind) == want[i].count, "%s: %d, expected %d", want[i].kind,
           reason_count(&st, want[i].kind), want[i].count);
  }
  int lines = 0;
  for (char *c = report; *c; c++) lines += *c == '\n';
  EXPECT(lines == 1 + 14, "one report line per skipped entry, got %d", lines - 1);
  free(report);
  EXPECT(exists(TEST_PATH("out/shard_00000.h5")) && !exists(TEST_PATH("out/shard_00001.h5")), "one shard");
  EXPECT(!exists(TEST_PATH("out/report.tsv.tmp")) && !exists(TEST_PATH("out/shard_00000.h5.tmp")), "no temporaries");
}

TEST(prepare_drops_silent_windows_and_splits_shards) {
  /* 25 s of music with 10.24 .. 20.48 s silent: window 1 is dropped, 0 and the tail stay. */
  int64_t n = 25 * RATE;
  float *x = music(n, 9);
  for (int64_t i = W; i < 2 * W; i++) x[i] = 0;
  write_wav(TEST_PATH("gap.wav"), x, n, RATE);
  free(x);
  write_music(TEST_PATH("b.wav"), 21.0, 10); /* 2 windows */
  const char *man = TEST_PATH("m.csv");
  WRITE(man, "path,caption\ngap.wav,with a gap\nb.wav,two windows\n");
  PrepareOptions o = options(TEST_PATH("out"));
  o.min_fraction = 0.4;
  o.shard_size = 3;
  PrepareStats st = run_manifest(man, &o);
  EXPECT(st.segments == 4 && st.silent_windows == 1, "segments %lld silent %lld", (long long)st.segments,
         (long long)st.silent_windows);
  EXPECT(st.shards == 2, "3 + 1 rows: 2 shards, got %d", st.shards);
  McmErr err = {{0}};
  Shard *a = shard_open(TEST_PATH("out/shard_00000.h5"), &err), *b = shard_open(TEST_PATH("out/shard_00001.h5"), &err);
  ASSERT(a && b, "%s", err.msg);
  EXPECT(shard_count(a) == 3 && shard_count(b) == 1, "rows %lld + %lld", (long long)shard_count(a),
         (long long)shard_count(b));
  int64_t off[3];
  for (int i = 0; i < 3; i++) ASSERT(shard_read_meta(a, i, NULL, &off[i], &err) == 0, "%s", err.msg);
  EXPECT(off[0] == 0 && off[1] == 2 * W && off[2] == 0, "offsets %lld %lld %lld", (long long)off[0],
         (long long)off[1], (long long)off[2]);
  shard_close(a);
  shard_close(b);
}

static unsigned char *file_bytes(const char *path, long *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = MALLOC_CHECK((size_t)*n + 1);
  size_t got = fread(b, 1, (size_t)*n, f);
  fclose(f);
  if ((long)got != *n) {
    free(b);
    return NULL;
  }
  return b;
}

TEST(prepare_output_is_identical_for_any_thread_count) {
  /* Files of different lengths (so workers finish out of order), one bad one in between. */
  const double secs[] = {12.0, 3.0, 25.0, 7.5, 11.0, 15.0};
  char line[256], text[2048] = "path,caption\n";
  for (int i = 0; i < 6; i++) {
    char name[64];
    snprintf(name, sizeof name, "f%d.wav", i);
    write_music(TEST_PATH(name), secs[i], 100 + (uint32_t)i);
    snprintf(line, sizeof line, "%s,clip %d\n", name, i);
    strcat(text, line);
    if (i == 2) strcat(text, "missing.wav,gone\n");
  }
  const char *man = TEST_PATH("m.csv");
  write_text(man, text, strlen(text));
  PrepareStats st[3];
  const char *dirs[3] = {"t1", "t2", "t3"};
  for (int t = 0; t < 3; t++) {
    PrepareOptions o = options(TEST_PATH(dirs[t]));
    o.threads = t + 1;
    o.shard_size = 2;
    o.hop_frames = 700; /* overlapping windows: more segments */
    st[t] = run_manifest(man, &o);
  }
  EXPECT(st[0].segments == st[1].segments && st[0].segments == st[2].segments, "segments %lld %lld %lld",
         (long long)st[0].segments, (long long)st[1].segments, (long long)st[2].segments);
  EXPECT(st[0].segments >= 8 && st[0].shards == (int)((st[0].segments + 1) / 2), "segments %lld shards %d",
         (long long)st[0].segments, st[0].shards);
  for (int s = 0; s < st[0].shards; s++) {
    char name[64];
    snprintf(name, sizeof name, "t1/shard_%05d.h5", s);
    long n1 = 0, nt = 0;
    unsigned char *a = file_bytes(TEST_PATH(name), &n1);
    ASSERT(a, "read %s", name);
    for (int t = 1; t < 3; t++) {
      snprintf(name, sizeof name, "%s/shard_%05d.h5", dirs[t], s);
      unsigned char *b = file_bytes(TEST_PATH(name), &nt);
      ASSERT(b, "read %s", name);
      EXPECT(n1 == nt && !memcmp(a, b, (size_t)n1), "%s differs from the 1-thread shard", name);
      free(b);
    }
    free(a);
  }
  char *r1 = test_read_file(TEST_PATH("t1/report.tsv"), NULL), *r3 = test_read_file(TEST_PATH("t3/report.tsv"), NULL);
  EXPECT(r1 && r3 && !strcmp(r1, r3), "same report");
  free(r1);
  free(r3);
}

TEST(prepare_refuses_bad_options_before_writing) {
  PrepareOptions o = options(TEST_PATH("out"));
  Manifest m = {0};
  PrepareStats st;
  McmErr err = {{0}};
  o.mel.fmax = 9000; /* above Nyquist */
  EXPECT(prepare_run(&m, &o, &st, &err) == -1 && !st.started, "bad mel config refused");
  EXPECT_STR_CONTAINS(err.msg, "fmax");
  o = options(TEST_PATH("out"));
  o.segment_frames = 2; /* 320 samples: less than n_fft / 2 */
  EXPECT(prepare_run(&m, &o, &st, &err) == -1 && !st.started, "tiny segments refused");
  EXPECT_STR_CONTAINS(err.msg, "segment_frames");
  EXPECT(!exists(TEST_PATH("out")), "nothing created");
  WRITE(TEST_PATH("file"), "x");
  o = options(TEST_PATH("file"));
  EXPECT(prepare_run(&m, &o, &st, &err) == -1 && !st.started, "out_dir is a file");
  EXPECT_STR_CONTAINS(err.msg, "not a directory");
}

/* ---------------------------------------------------------------- the command line */

TEST(prepare_cli_usage_and_bad_arguments) {
  EXPECT(run("./prepare --help", out, sizeof out) == 0, "--help exits 0");
  EXPECT_STR_CONTAINS(out, "usage: ./prepare --manifest FILE --out DIR");
  EXPECT_STR_CONTAINS(out, "--mtt-annotations FILE");
  EXPECT(run("./prepare --help-config", out, sizeof out) == 0, "--help-config exits 0");
  EXPECT_STR_CONTAINS(out, "segment_frames");
  EXPECT_STR_CONTAINS(out, "silence_threshold");
  EXPECT(run("./prepare", out, sizeof out) == 2, "no manifest -> 2");
  EXPECT_STR_CONTAINS(out, "no manifest given");

  const char *man = TEST_PATH("m.json");
  WRITE(man, "{\"data\": [{\"wav\": \"a.wav\", \"caption\": \"x\"}]}");
  WRITE(TEST_PATH("broken.json"), "{\"data\": [\n  {\"wav\": \"a.wav\",, }\n]}");
  char cmd[2048];
  struct {
    const char *args, *needle;
  } cases[] = {
      {"--manifest %s", "no output directory given"},
      {"--manifest %s --out", "--out needs a value"},
      {"--manifest %s --out o --bogus", "unknown option '--bogus'"},
      {"--manifest %s --out o stray", "unknown argument 'stray'"},
      {"--manifest %s --out o --threads two", "--threads: 'two' is not an integer"},
      {"--manifest %s --out o --threads 9999", "--threads"},
      {"--manifest %s --out o --set prepare.crop=middle", "crop"},
      {"--manifest %s --out o --set prepare.shard_size=0", "shard_size"},
      {"--manifest %s --out o --set mel.fmax=9000", "Nyquist"},
      {"--manifest %s --out o --set prepare.segment_frames=3", "too short for mel.n_fft"},
      {"--manifest %s --out o --set nosuch.key=1", "nosuch"},
      {"--manifest %s --out o --config configs/does_not_exist.ini", "does_not_exist.ini"},
      {"--manifest %s --manifest x --out o", "--manifest given twice"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char args[1024];
    snprintf(args, sizeof args, cases[i].args, man);
    snprintf(cmd, sizeof cmd, "./prepare %s", args);
    EXPECT(run(cmd, out, sizeof out) == 2, "%s: exit 2 expected: %s", args, out);
    EXPECT_STR_CONTAINS(out, cases[i].needle);
    EXPECT_STR_CONTAINS(out, "prepare: error: ");
  }
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s", TEST_PATH("nope.json"), TEST_PATH("o"));
  EXPECT(run(cmd, out, sizeof out) == 2, "missing manifest -> 2");
  EXPECT_STR_CONTAINS(out, "nope.json");
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s", TEST_PATH("broken.json"), TEST_PATH("o"));
  EXPECT(run(cmd, out, sizeof out) == 2, "unparseable manifest -> 2");
  EXPECT_STR_CONTAINS(out, "line 2");
  EXPECT(!exists(TEST_PATH("o")), "no output directory after a refused run");
}

TEST(prepare_cli_exit_statuses_and_overwrite) {
  write_music(TEST_PATH("a.wav"), 21.0, 1); /* 2 segments */
  const char *good = TEST_PATH("good.csv"), *bad = TEST_PATH("bad.csv");
  WRITE(good, "path,caption\na.wav,two segments\n");
  WRITE(bad, "path,caption\nmissing.wav,nothing here\n");
  char cmd[2048];
  const char *o = TEST_PATH("o");
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s --set prepare.shard_size=1 --config configs/tiny.ini",
           good, o);
  EXPECT(run(cmd, out, sizeof out) == 0, "exit 0: %s", out);
  EXPECT_STR_CONTAINS(out, "segments = 2");
  EXPECT_STR_CONTAINS(out, "audio_hours_per_minute = ");
  EXPECT(exists(TEST_PATH("o/shard_00000.h5")) && exists(TEST_PATH("o/shard_00001.h5")), "two shards");

  /* The same directory again: refused, nothing touched. */
  EXPECT(run(cmd, out, sizeof out) == 2, "existing shards -> 2: %s", out);
  EXPECT_STR_CONTAINS(out, "already holds shard_00000.h5");
  /* --overwrite with bigger shards: one shard, the stale second one removed. */
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s --overwrite --threads 2", good, o);
  EXPECT(run(cmd, out, sizeof out) == 0, "--overwrite exit 0: %s", out);
  EXPECT(exists(TEST_PATH("o/shard_00000.h5")) && !exists(TEST_PATH("o/shard_00001.h5")), "stale shard removed");

  /* Nothing written: exit 1 with a line that says why. */
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s --quiet", bad, TEST_PATH("o2"));
  EXPECT(run(cmd, out, sizeof out) == 1, "no segment -> 1: %s", out);
  EXPECT_STR_CONTAINS(out, "no segment was written: every entry was skipped");
  char *report = test_read_file(TEST_PATH("o2/report.tsv"), NULL);
  EXPECT(report && strstr(report, "missing.wav\tunreadable\t"), "report names the file");
  free(report);
  EXPECT(!exists(TEST_PATH("o2/shard_00000.h5")), "no empty shard");

  WRITE(TEST_PATH("empty.csv"), "path,caption\n");
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s --quiet", TEST_PATH("empty.csv"), TEST_PATH("o3"));
  EXPECT(run(cmd, out, sizeof out) == 1, "no entries -> 1: %s", out);
  EXPECT_STR_CONTAINS(out, "the manifest has no entries");
}

TEST(prepare_cli_magnatagatune) {
  mkdir(TEST_PATH("mtt"), 0777);
  mkdir(TEST_PATH("mtt/f"), 0777);
  write_music(TEST_PATH("mtt/f/clip.wav"), 29.1, 3); /* MTT clips are 29.1 s */
  const char *ann = TEST_PATH("mtt/annotations_final.csv");
  WRITE(ann, "\"clip_id\"\t\"guitar\"\t\"classical\"\t\"slow\"\t\"mp3_path\"\n"
             "\"2\"\t\"1\"\t\"1\"\t\"1\"\t\"f/clip.wav\"\n"
             "\"3\"\t\"0\"\t\"0\"\t\"0\"\t\"f/none.mp3\"\n");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "./prepare --mtt-annotations %s --out %s", ann, TEST_PATH("o"));
  EXPECT(run(cmd, out, sizeof out) == 0, "exit 0: %s", out);
  McmErr err = {{0}};
  Shard *sh = shard_open(TEST_PATH("o/shard_00000.h5"), &err);
  ASSERT(sh, "%s", err.msg);
  EXPECT(shard_count(sh) == 3, "29.1 s: 2 full windows and a 0.84 tail, got %lld", (long long)shard_count(sh));
  char *caption;
  ASSERT(shard_read(sh, 0, NULL, &caption, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(caption, "A classical piece with guitar, slow."), "'%s'", caption);
  free(caption);
  shard_close(sh);
  char *report = test_read_file(TEST_PATH("o/report.tsv"), NULL);
  EXPECT(report && strstr(report, "\tno tags\t"), "untagged clip reported");
  free(report);
}
