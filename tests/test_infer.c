/* ./infer end to end on a tiny random-weight bundle (made here by random_bundle_write):
 * exact length and rate, seeds, naming of several outputs, long form, FLAC, spectrogram
 * PNGs, init audio, and every bad input from issue 6: exit 2, one clear line, nothing
 * written. */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <sndfile.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/audio.h"
#include "models/weights.h"
#include "test.h"

static char out[1 << 16];

#define run(...) test_run_cmd(out, sizeof out, __VA_ARGS__)

static const char *bundle(void) {
  static char dir[600];
  if (!dir[0]) {
    snprintf(dir, sizeof dir, "%s/bundle", test_tmpdir());
    RandomBundle b = random_bundle_tiny("tests/fixtures/tokenizer");
    McmErr err = {{0}};
    ASSERT(random_bundle_write(dir, &b, &err) == 0, "%s", err.msg);
  }
  return dir;
}

/* Frames, rate and format of an audio file, through libsndfile. */
static SF_INFO info_of(const char *path) {
  SF_INFO info = {0};
  SNDFILE *f = sf_open(path, SFM_READ, &info);
  ASSERT(f, "%s: %s", path, sf_strerror(NULL));
  sf_close(f);
  return info;
}

static int entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  closedir(d);
  return n;
}

#define INFER "./infer --device cpu --checkpoint %s --steps 2 "

TEST(infer_writes_the_exact_length_at_16k_and_follows_the_seed) {
  const char *b = bundle();
  ASSERT(run(INFER "--prompt 'calm piano' --seconds 0.37 --seed 3 --out %s --timings", b, TEST_PATH("a.wav")) == 0,
         "%s", out);
  EXPECT_STR_CONTAINS(out, "text encoding");
  EXPECT_STR_CONTAINS(out, "sampling");
  EXPECT_STR_CONTAINS(out, "decoding");
  EXPECT_STR_CONTAINS(out, "vocoding");
  SF_INFO i = info_of(TEST_PATH("a.wav"));
  EXPECT(i.frames == 5920 && i.samplerate == 16000 && i.channels == 1, "%lld frames at %d Hz, %d channels",
         (long long)i.frames, i.samplerate, i.channels);
  EXPECT(i.format == (SF_FORMAT_WAV | SF_FORMAT_PCM_16), "16-bit PCM WAV (format 0x%x)", i.format);
  ASSERT(run(INFER "--prompt 'calm piano' --seconds 0.37 --seed 3 --out %s", b, TEST_PATH("b.wav")) == 0, "%s", out);
  EXPECT(test_same_file(TEST_PATH("a.wav"), TEST_PATH("b.wav")), "the same seed gives the same file");
  ASSERT(run(INFER "--prompt 'calm piano' --seconds 0.37 --seed 4 --out %s", b, TEST_PATH("c.wav")) == 0, "%s", out);
  EXPECT(!test_same_file(TEST_PATH("a.wav"), TEST_PATH("c.wav")), "another seed, another file");
  /* no seed: drawn and printed */
  ASSERT(run(INFER "--prompt 'calm piano' --seconds 0.2 --out %s", b, TEST_PATH("d.flac")) == 0, "%s", out);
  EXPECT_STR_CONTAINS(out, "infer: seed ");
  EXPECT_STR_CONTAINS(out, "repeats this run");
  i = info_of(TEST_PATH("d.flac"));
  EXPECT(i.frames == 3200 && (i.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_FLAC, "FLAC from the extension");
  /* the teacher with DDIM through the same code */
  ASSERT(run(INFER "--sampler ddim --guidance 3 --negative-prompt noise --prompt x --seconds 0.25 --seed 1 --out %s",
             b, TEST_PATH("e.wav")) == 0,
         "%s", out);
  EXPECT(info_of(TEST_PATH("e.wav")).frames == 4000, "DDIM length");
}

TEST(infer_names_several_outputs_by_index_prompt_and_seed) {
  const char *b = bundle();
  const char *dir = TEST_PATH("many");
  ASSERT(run(INFER "--prompt 'Calm Piano!' --num-per-prompt 2 --seconds 0.2 --seed 10 --out %s", b, dir) == 0, "%s",
         out);
  char p0[700], p1[700];
  snprintf(p0, sizeof p0, "%s/000_calm-piano_seed10.wav", dir);
  snprintf(p1, sizeof p1, "%s/001_calm-piano_seed11.wav", dir);
  EXPECT(entries(dir) == 2 && access(p0, F_OK) == 0 && access(p1, F_OK) == 0, "two named files: %s", out);
  EXPECT_STR_CONTAINS(out, p1);
  /* output 1 alone, from its seed */
  ASSERT(run(INFER "--prompt 'Calm Piano!' --seconds 0.2 --seed 11 --out %s", b, TEST_PATH("one.wav")) == 0, "%s",
         out);
  EXPECT(test_same_file(p1, TEST_PATH("one.wav")), "--seed 11 remakes output 1 alone");

  FILE *f = fopen(TEST_PATH("prompts.txt"), "w");
  fputs("lo-fi beat\n\n   \n  ambient pad  \r\n", f);
  fclose(f);
  const char *dir2 = TEST_PATH("list");
  ASSERT(run(INFER "--prompts-file %s --seconds 0.2 --seed 5 --out %s --mel-png", b, TEST_PATH("prompts.txt"), dir2) ==
             0,
         "%s", out);
  snprintf(p0, sizeof p0, "%s/000_lo-fi-beat_seed5.wav", dir2);
  snprintf(p1, sizeof p1, "%s/001_ambient-pad_seed6.wav", dir2);
  EXPECT(access(p0, F_OK) == 0 && access(p1, F_OK) == 0, "numbered outputs per prompt: %s", out);
  snprintf(p1, sizeof p1, "%s/001_ambient-pad_seed6.png", dir2);
  EXPECT(access(p1, F_OK) == 0 && entries(dir2) == 4, "a PNG beside each");
  /* one prompt from a file is still "several" (numbered, in a directory) */
  f = fopen(TEST_PATH("one.txt"), "w");
  fputs("solo\n", f);
  fclose(f);
  ASSERT(run(INFER "--prompts-file %s --seconds 0.2 --seed 0 --out %s", b, TEST_PATH("one.txt"), TEST_PATH("solo")) ==
             0,
         "%s", out);
  snprintf(p0, sizeof p0, "%s/000_solo_seed0.wav", TEST_PATH("solo"));
  EXPECT(access(p0, F_OK) == 0, "%s", out);
}

TEST(infer_long_form_gives_the_exact_length) {
  /* native: 16 latent frames = 0.32 s; 3x that = 0.96 s, sampled in fused windows */
  ASSERT(run(INFER "--prompt 'a long one' --seconds 0.96 --seed 2 --out %s", bundle(), TEST_PATH("long.wav")) == 0,
         "%s", out);
  EXPECT(info_of(TEST_PATH("long.wav")).frames == 15360, "15360 samples");
  ASSERT(run(INFER "--prompt 'a long one' --seconds 1.01 --seed 2 --out %s", bundle(), TEST_PATH("long2.wav")) == 0,
         "%s", out);
  EXPECT(info_of(TEST_PATH("long2.wav")).frames == 16160, "16160 samples");
}

TEST(infer_long_form_follows_the_infer_section) {
  /* 0.96 s = 48 latent frames, the native window 16. One window of all 48 frames is the same
   * computation as no windows at all: identical bits. The default windows, and triangular
   * fusing, are different computations: different bits. */
  const char *b = bundle();
  const char *base = INFER "--prompt 'a long one' --seconds 0.96 --seed 2 --out %s %s";
  ASSERT(run(base, b, TEST_PATH("none.wav"), "--set infer.window_frames=-1") == 0, "%s", out);
  ASSERT(run(base, b, TEST_PATH("whole.wav"), "--set infer.window_frames=48") == 0, "%s", out);
  ASSERT(run(base, b, TEST_PATH("avg.wav"), "") == 0, "%s", out);
  ASSERT(run(base, b, TEST_PATH("tri.wav"), "--set infer.fuse=triangular --set infer.stride_frames=8") == 0, "%s", out);
  ASSERT(run(base, b, TEST_PATH("cfg.wav"), "--config configs/tiny.ini") == 0, "a training config: %s", out);
  EXPECT(test_same_file(TEST_PATH("none.wav"), TEST_PATH("whole.wav")), "one whole window = no windows");
  EXPECT(!test_same_file(TEST_PATH("none.wav"), TEST_PATH("avg.wav")), "the default windows differ from none");
  EXPECT(!test_same_file(TEST_PATH("avg.wav"), TEST_PATH("tri.wav")), "triangular fusing differs from the average");
  EXPECT(test_same_file(TEST_PATH("avg.wav"), TEST_PATH("cfg.wav")), "configs/tiny.ini keeps the default long form");
  EXPECT(info_of(TEST_PATH("tri.wav")).frames == 15360, "15360 samples");

  ASSERT(run(base, b, TEST_PATH("bad.wav"), "--set infer.window_frames=16 --set infer.stride_frames=17") == 2, "%s", out);
  EXPECT(strstr(out, "infer.stride_frames = 17") && access(TEST_PATH("bad.wav"), F_OK) != 0, "%s", out);
  ASSERT(run(base, b, TEST_PATH("bad.wav"), "--set infer.fuse=median") == 2, "%s", out);
  EXPECT(strstr(out, "infer.fuse") && strstr(out, "average|triangular"), "%s", out);
  ASSERT(run(base, b, TEST_PATH("bad.wav"), "--set infer.window_frames=13") == 2, "%s", out);
  EXPECT(strstr(out, "window 13") && access(TEST_PATH("bad.wav"), F_OK) != 0, "%s", out);
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

TEST(infer_mel_png_is_a_valid_png_of_the_spectrogram) {
  ASSERT(run(INFER "--prompt x --seconds 0.37 --seed 1 --mel-png --out %s", bundle(), TEST_PATH("s.wav")) == 0, "%s",
         out);
  size_t n;
  unsigned char *b = (unsigned char *)test_read_file(TEST_PATH("s.png"), &n);
  ASSERT(b && n > 33, "PNG size %zu", b ? n : 0);
  EXPECT(!memcmp(b, "\x89PNG\r\n\x1a\n", 8), "signature");
  EXPECT(!memcmp(b + 12, "IHDR", 4), "IHDR");
  EXPECT(be32(b + 16) == 37 && be32(b + 20) == 256, "37 frames x 16 bins of 16 rows: %ux%u", be32(b + 16),
         be32(b + 20));
  free(b);
}

TEST(infer_init_audio_makes_a_variation_of_its_length) {
  float x[6400];
  for (int i = 0; i < 6400; i++) x[i] = 0.5f * sinf(2.0f * (float)M_PI * 220.0f * (float)i / 16000.0f);
  McmErr err = {{0}};
  ASSERT(audio_write(TEST_PATH("init.wav"), x, 6400, 16000, AUDIO_WAV16, NULL, &err) == 0, "%s", err.msg);
  ASSERT(run(INFER "--prompt x --init-audio %s --strength 0.5 --seed 1 --out %s", bundle(), TEST_PATH("init.wav"),
             TEST_PATH("v.wav")) == 0,
         "%s", out);
  EXPECT(info_of(TEST_PATH("v.wav")).frames == 6400, "the init audio's length");
  ASSERT(run(INFER "--prompt x --init-audio %s --strength 0.5 --seconds 0.2 --seed 1 --out %s", bundle(),
             TEST_PATH("init.wav"), TEST_PATH("w.wav")) == 0,
         "%s", out);
  EXPECT(info_of(TEST_PATH("w.wav")).frames == 3200, "--seconds wins");
}

/* One bad command: exit 2, "infer: error: " and the text, one line, the directory empty. */
static void expect_bad(const char *what, const char *cmd) {
  const char *dir = TEST_PATH("out");
  int code = run("%s", cmd);
  EXPECT(code == 2, "%s: exit %d, expected 2 (%s)", cmd, code, out);
  EXPECT_STR_CONTAINS(out, "infer: error: ");
  EXPECT_STR_CONTAINS(out, what);
  const char *e = strstr(out, "infer: error: "), *nl = e ? strchr(e, '\n') : NULL;
  EXPECT(nl && !nl[1], "the error is one last line: %s", out);
  EXPECT(entries(dir) == 0, "%s: nothing written", cmd);
}

/* Replaces each {K} in fmt by the value of key K. */
static void subst(char *buf, size_t size, const char *fmt, const char *const keys[][2], int n) {
  size_t k = 0;
  for (const char *c = fmt; *c && k + 1 < size;) {
    int hit = -1;
    for (int i = 0; i < n && hit < 0; i++)
      if (!strncmp(c, keys[i][0], strlen(keys[i][0]))) hit = i;
    if (hit >= 0) {
      k += (size_t)snprintf(buf + k, size - k, "%s", keys[hit][1]);
      c += strlen(keys[hit][0]);
    } else {
      buf[k++] = *c++;
    }
  }
  buf[k < size ? k : size - 1] = 0;
}

TEST(infer_refuses_every_bad_input_and_writes_nothing) {
  const char *b = bundle(), *dir = TEST_PATH("out");
  ASSERT(mkdir(dir, 0777) == 0, "mkdir");
  char cmd[4096], partial[700], o[700];
  snprintf(o, sizeof o, "%s/x.wav", dir);
  FILE *f = fopen(TEST_PATH("blank.txt"), "w");
  fputs("\n  \n\t\n", f);
  fclose(f);
  f = fopen(TEST_PATH("notaudio.wav"), "w");
  fputs("RIFF but not really\n", f);
  fclose(f);
  f = fopen(TEST_PATH("afile"), "w");
  fclose(f);
  /* a partial bundle: everything but the VAE and the student */
  snprintf(partial, sizeof partial, "%s/partial", test_tmpdir());
  snprintf(cmd, sizeof cmd, "cp -r %s %s && rm %s/vae.h5 %s/student.h5", b, partial, partial, partial);
  ASSERT(system(cmd) == 0, "%s", cmd);
  const char *const keys[][2] = {{"{B}", b},
                                 {"{O}", o},
                                 {"{P}", partial},
                                 {"{N}", TEST_PATH("notaudio.wav")},
                                 {"{BL}", TEST_PATH("blank.txt")},
                                 {"{F}", TEST_PATH("afile")},
                                 {"{D}", dir},
                                 {"{I}", "./infer --device cpu --checkpoint {B} --steps 2 "}};
  const char *cases[][2] = {
      {"/nonexistent: no model bundle there", "./infer --checkpoint /nonexistent --prompt x --out {O}"},
      {"make_random_bundle", "./infer --checkpoint /nonexistent --prompt x --out {O}"},
      {"partial/student.h5: missing", "./infer --checkpoint {P} --prompt x --out {O}"},
      {"partial/vae.h5: missing from the model bundle", "./infer --checkpoint {P} --sampler ddim --prompt x --out {O}"},
      {"--seconds: 0 is outside (0, 3600]", "{I}--prompt x --seconds 0 --out {O}"},
      {"--seconds: -1 is outside", "{I}--prompt x --seconds -1 --out {O}"},
      {"--seconds: 4000 is outside", "{I}--prompt x --seconds 4000 --out {O}"},
      {"--steps: 0 is outside", "{I}--prompt x --steps 0 --out {O}"},
      {"--steps: 51 is outside 1..50 for the cm sampler", "{I}--prompt x --steps 51 --out {O}"},
      {"--steps: 1000 is outside 1..999", "{I}--sampler ddim --prompt x --steps 1000 --out {O}"},
      {"--strength: 0 is outside (0, 1]", "{I}--prompt x --init-audio {N} --strength 0 --out {O}"},
      {"--strength: 1.5 is outside (0, 1]", "{I}--prompt x --init-audio {N} --strength 1.5 --out {O}"},
      {"--init-audio: ", "{I}--prompt x --init-audio {N} --strength 0.5 --out {O}"},
      {"notaudio.wav", "{I}--prompt x --init-audio {N} --strength 0.5 --out {O}"},
      {"--init-audio /nonexistent.wav", "{I}--prompt x --init-audio /nonexistent.wav --out {O}"},
      {"--out /nonexistent_dir/x.wav: /nonexistent_dir: No such file", "{I}--prompt x --out /nonexistent_dir/x.wav"},
      {"afile is not a directory", "{I}--prompt x --out {F}/x.wav"},
      {"is a directory; give a file name", "{I}--prompt x --out {D}"},
      {"several outputs go into a directory, and this is a file", "{I}--prompt x --num-per-prompt 2 --out {F}"},
      {"no prompt in it (every line is empty)", "{I}--prompts-file {BL} --out {D}"},
      {"--negative-prompt works with --sampler ddim", "{I}--prompt x --negative-prompt y --out {O}"},
      {"--guidance works with --sampler ddim", "{I}--prompt x --guidance 3 --out {O}"},
      {"--out {O} with --format flac: the name says wav", "{I}--prompt x --format flac --out {O}"},
      {"--prompt is empty", "{I}--prompt '' --out {O}"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char what[1024], c1[4096];
    subst(c1, sizeof c1, cases[i][1], keys, 8);
    subst(cmd, sizeof cmd, c1, keys, 8); /* {I} holds {B} */
    subst(what, sizeof what, cases[i][0], keys, 8);
    expect_bad(what, cmd);
  }
  /* The default bundle, as long as the repository has none. */
  if (access("checkpoints/demo", F_OK) != 0) {
    snprintf(cmd, sizeof cmd, "./infer --prompt x --out %s", o);
    expect_bad("checkpoints/demo: no model bundle there", cmd);
    expect_bad("build/cpu/tools/make_random_bundle --out checkpoints/demo", cmd);
  }
}

/* infer.precision = bf16 on the committed demo model: UNet, VAE decoder and vocoder in bf16
 * (emulated on the CPU with the GPU's rounding points). The waveform tracks the fp32 one
 * from the same seed: each network alone is within ~2e-2 relative (tests/test_bf16_models.c),
 * and four student steps, the decoder and the vocoder chain six of them, √6 · 2e-2 ≈ 5e-2;
 * we allow 6e-2 in relative L2 of the samples (16-bit quantisation adds ~1e-4). More than
 * 1e-3, or bf16 was not used. The log line says bf16. */
static float *read_wav(const char *path, sf_count_t *n) {
  SF_INFO info = {0};
  SNDFILE *f = sf_open(path, SFM_READ, &info);
  ASSERT(f, "%s: %s", path, sf_strerror(NULL));
  float *x = malloc((size_t)info.frames * sizeof(float));
  *n = sf_readf_float(f, x, info.frames);
  sf_close(f);
  return x;
}

TEST(infer_bf16_tracks_fp32_on_the_demo_model) {
  const char *cmd = "./infer --device cpu --prompt 'calm piano' --seconds 2.56 --seed 5 --out %s %s";
  ASSERT(run(cmd, TEST_PATH("f32.wav"), "") == 0, "%s", out);
  ASSERT(run(cmd, TEST_PATH("b16.wav"), "--set infer.precision=bf16") == 0, "%s", out);
  EXPECT_STR_CONTAINS(out, "steps, bf16");
  sf_count_t na, nb;
  float *a = read_wav(TEST_PATH("f32.wav"), &na), *b = read_wav(TEST_PATH("b16.wav"), &nb);
  ASSERT(na == nb && na == 40960, "%lld and %lld samples", (long long)na, (long long)nb);
  double num = 0, den = 0;
  for (sf_count_t i = 0; i < na; i++) num += (double)(b[i] - a[i]) * (b[i] - a[i]), den += (double)a[i] * a[i];
  double rel = sqrt(num / den);
  printf("  bf16 vs fp32 waveform: relative L2 %.3g\n", rel);
  EXPECT(rel < 6e-2 && rel > 1e-3, "relative L2 %.3g", rel);
  free(a), free(b);
}
