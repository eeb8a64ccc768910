/* Tests for data/audio: 16-bit WAV/FLAC round trips, channel mixing, never-clip scaling,
 * atomic writes (failed writes leave the destination as it was, a killed writer leaves no
 * partial file), every kind of bad input file with its reason, silence, MusicLDM's
 * normalisation, and the small helpers. The resampler is tested in test_mel.c. */
#include <dirent.h>
#include <signal.h>
#include <sndfile.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/audio.h"
#include "data/sndfile_check.h"
#include "tests/test.h"

#define Q16 (1.0 / 32768.0) /* one 16-bit step */

/* ---------------------------------------------------------------- helpers */

static uint32_t next_u32(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Uniform in [-amp, amp], with the extremes and a few exact values planted (n >= 4). */
static float *random_signal(int64_t n, float amp, uint32_t seed) {
  ASSERT(n >= 4, "random_signal needs 4 samples");
  float *x = MALLOC_CHECK((size_t)n * sizeof(float));
  uint32_t s = seed | 1;
  for (int64_t i = 0; i < n; i++) x[i] = amp * ((float)(next_u32(&s) >> 8) * 0x1p-23f - 1.0f);
  x[0] = amp, x[1] = -amp, x[2] = 0.0f, x[3] = amp * 0.5f;
  return x;
}

/* Writes a float WAV with `channels` interleaved channels (the test's own file). */
static void write_float_wav(const char *path, const float *x, int64_t frames, int channels, int rate) {
  SF_INFO info = {.samplerate = rate, .channels = channels, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
  SNDFILE *sf = SF_OPEN_CHECK(path, SFM_WRITE, &info);
  SF_CHECK(sf, path, sf_writef_float(sf, x, frames) == frames);
  sf_close(sf);
}

static void write_pcm16_wav(const char *path, int64_t frames, int rate) {
  float *x = random_signal(frames > 4 ? frames : 4, 0.5f, 3);
  SF_INFO info = {.samplerate = rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
  SNDFILE *sf = SF_OPEN_CHECK(path, SFM_WRITE, &info);
  SF_CHECK(sf, path, sf_writef_float(sf, x, frames) == frames);
  sf_close(sf);
  free(x);
}

static long long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void truncate_to(const char *path, long long size) { ASSERT(truncate(path, size) == 0, "truncate %s", path); }

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* Number of entries in the test directory whose name contains `needle`. */
static int count_entries(const char *needle) {
  DIR *d = opendir(test_tmpdir());
  ASSERT(d, "opendir");
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (strstr(e->d_name, needle)) n++;
  closedir(d);
  return n;
}

/* audio_read must fail with a message containing both needles, leaving *out empty. */
static void expect_read_error(const char *path, const char *needle1, const char *needle2) {
  Audio a = {(float *)1, 7, 7};
  McmErr err = {{0}};
  EXPECT(audio_read(path, 16000, &a, &err) == -1, "%s was read without error", path);
  EXPECT(a.samples == NULL && a.n == 0, "%s: output not left empty", path);
  EXPECT_STR_CONTAINS(err.msg, path);
  EXPECT_STR_CONTAINS(err.msg, needle1);
  if (needle2) EXPECT_STR_CONTAINS(err.msg, needle2);
  printf("    %s\n", err.msg);
}

/* ---------------------------------------------------------------- round trips */

static void round_trip(AudioFormat fmt, const char *name, int rate) {
  const int64_t n = 20000;
  float *x = random_signal(n, 1.0f, 11);
  McmErr err = {{0}};
  bool scaled = true;
  ASSERT(audio_write(TEST_PATH(name), x, n, rate, fmt, &scaled, &err) == 0, "audio_write: %s", err.msg);
  EXPECT(!scaled, "%s: a signal with peak 1 was scaled", name);

  SF_INFO info = {0};
  SNDFILE *sf = SF_OPEN_CHECK(TEST_PATH(name), SFM_READ, &info);
  int major = fmt == AUDIO_FLAC16 ? SF_FORMAT_FLAC : SF_FORMAT_WAV;
  EXPECT((info.format & SF_FORMAT_TYPEMASK) == major && (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16,
         "%s: format 0x%x", name, info.format);
  EXPECT(info.channels == 1 && info.samplerate == rate && info.frames == n, "%s: %d ch, %d Hz, %lld frames", name,
         info.channels, info.samplerate, (long long)info.frames);
  sf_close(sf);

  Audio a;
  ASSERT(audio_read(TEST_PATH(name), rate, &a, &err) == 0, "audio_read: %s", err.msg);
  ASSERT(a.n == n && a.rate == rate, "%s: read %lld samples at %d Hz", name, (long long)a.n, a.rate);
  double worst = 0;
  for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a.samples[i] - x[i]));
  EXPECT(worst <= Q16, "%s: round trip error %.3g > 1/32768", name, worst);
  printf("    %s: max round-trip error %.3g (1/32768 = %.3g)\n", name, worst, Q16);
  audio_free(&a);
  EXPECT(count_entries(".tmp") == 0, "%s: a temporary file was left behind", name);
  free(x);
}

TEST(audio_round_trip_wav16) { round_trip(AUDIO_WAV16, "x.wav", 16000); }
TEST(audio_round_trip_flac16) { round_trip(AUDIO_FLAC16, "x.flac", 44100); }

TEST(audio_stereo_and_more_channels_mix_to_the_mean) {
  const int64_t n = 5000;
  for (int C = 2; C <= 3; C++) {
    float *x = random_signal(n * C, 0.9f, (uint32_t)C); /* (n, C) interleaved */
    write_float_wav(TEST_PATH("multi.wav"), x, n, C, 16000);
    Audio a;
    McmErr err = {{0}};
    ASSERT(audio_read(TEST_PATH("multi.wav"), 16000, &a, &err) == 0, "audio_read: %s", err.msg);
    ASSERT(a.n == n, "%d channels: %lld samples", C, (long long)a.n);
    double worst = 0;
    for (int64_t t = 0; t < n; t++) {
      double mean = 0;
      for (int c = 0; c < C; c++) mean += x[t * C + c];
      worst = fmax(worst, fabs(a.samples[t] - mean / C));
    }
    EXPECT(worst <= 1e-7, "%d channels: mono differs from the channel mean by %.3g", C, worst);
    audio_free(&a);
    free(x);
  }
}

TEST(audio_reads_other_formats_and_resamples) {
  /* 24-bit AIFF at 44.1 kHz -> 16 kHz: the length follows the rate ratio. */
  const int64_t n = 44100;
  float *x = random_signal(n, 0.5f, 5);
  SF_INFO info = {.samplerate = 44100, .channels = 1, .format = SF_FORMAT_AIFF | SF_FORMAT_PCM_24};
  SNDFILE *sf = SF_OPEN_CHECK(TEST_PATH("x.aiff"), SFM_WRITE, &info);
  SF_CHECK(sf, "x.aiff", sf_writef_float(sf, x, n) == n);
  sf_close(sf);
  Audio a;
  McmErr err = {{0}};
  ASSERT(audio_read(TEST_PATH("x.aiff"), 16000, &a, &err) == 0, "audio_read: %s", err.msg);
  EXPECT(a.n == 16000 && a.rate == 16000, "%lld samples at %d Hz", (long long)a.n, a.rate);
  audio_free(&a);
  free(x);
}

/* ---------------------------------------------------------------- writing */

TEST(audio_write_never_clips) {
  const int64_t n = 8000;
  float *x = random_signal(n, 2.0f, 9); /* peak 2 */
  bool scaled = false;
  McmErr err = {{0}};
  ASSERT(audio_write(TEST_PATH("loud.wav"), x, n, 16000, AUDIO_WAV16, &scaled, &err) == 0, "%s", err.msg);
  EXPECT(scaled, "a signal with peak 2 was not reported as scaled");
  Audio a;
  ASSERT(audio_read(TEST_PATH("loud.wav"), 16000, &a, &err) == 0, "%s", err.msg);
  double worst = 0, peak = 0;
  for (int64_t i = 0; i < n; i++) {
    worst = fmax(worst, fabs(a.samples[i] - x[i] / 2.0));
    peak = fmax(peak, fabs(a.samples[i]));
  }
  EXPECT(worst <= Q16, "scaled signal is not x / peak: error %.3g", worst);
  EXPECT(peak >= 1.0 - Q16 && peak <= 1.0, "peak after scaling %.6f", peak);
  audio_free(&a);
  free(x);

  /* Peak exactly 1 is left alone; scaled may be NULL. */
  float y[4] = {1.0f, -1.0f, 0.25f, 0.0f};
  ASSERT(audio_write(TEST_PATH("one.flac"), y, 4, 16000, AUDIO_FLAC16, NULL, &err) == 0, "%s", err.msg);
}

TEST(audio_write_refuses_bad_arguments_without_a_file) {
  float x[4] = {0.1f, NAN, 0.2f, 0.3f};
  McmErr err = {{0}};
  EXPECT(audio_write(TEST_PATH("nan.wav"), x, 4, 16000, AUDIO_WAV16, NULL, &err) == -1, "NaN accepted");
  EXPECT_STR_CONTAINS(err.msg, "sample 1 is NaN");
  x[1] = INFINITY;
  EXPECT(audio_write(TEST_PATH("nan.wav"), x, 4, 16000, AUDIO_WAV16, NULL, &err) == -1, "Inf accepted");
  EXPECT_STR_CONTAINS(err.msg, "Inf");
  x[1] = 0;
  EXPECT(audio_write(TEST_PATH("nan.wav"), x, 0, 16000, AUDIO_WAV16, NULL, &err) == -1, "0 samples accepted");
  EXPECT_STR_CONTAINS(err.msg, "no samples");
  EXPECT(audio_write(TEST_PATH("nan.wav"), x, 4, 0, AUDIO_WAV16, NULL, &err) == -1, "rate 0 accepted");
  EXPECT_STR_CONTAINS(err.msg, "sample rate 0");
  EXPECT(audio_write(TEST_PATH("nan.flac"), x, 4, 1000000, AUDIO_FLAC16, NULL, &err) == -1, "FLAC at 1 MHz accepted");
  EXPECT_STR_CONTAINS(err.msg, "nan.flac");
  EXPECT(!exists(TEST_PATH("nan.wav")) && !exists(TEST_PATH("nan.flac")), "a refused write left a file");
  EXPECT(count_entries(".tmp") == 0, "a temporary file was left behind");
}

TEST(audio_write_failures_leave_the_destination_untouched) {
  float x[1000];
  for (int i = 0; i < 1000; i++) x[i] = 0.5f * sinf(i * 0.1f);
  McmErr err = {{0}};

  /* Missing directory, and a "directory" that is a file. */
  EXPECT(audio_write(TEST_PATH("no/such/dir/out.wav"), x, 1000, 16000, AUDIO_WAV16, NULL, &err) == -1, "accepted");
  EXPECT_STR_CONTAINS(err.msg, "no/such/dir/out.wav");
  EXPECT_STR_CONTAINS(err.msg, "No such file or directory");
  FILE *f = fopen(TEST_PATH("plain"), "w");
  ASSERT(f, "fopen");
  fclose(f);
  EXPECT(audio_write(TEST_PATH("plain/out.wav"), x, 1000, 16000, AUDIO_WAV16, NULL, &err) == -1, "accepted");
  EXPECT_STR_CONTAINS(err.msg, "Not a directory");

  /* An unwritable directory (root ignores permissions, so only as another user). */
  ASSERT(mkdir(TEST_PATH("ro"), 0555) == 0, "mkdir");
  if (geteuid() != 0) {
    EXPECT(audio_write(TEST_PATH("ro/out.wav"), x, 1000, 16000, AUDIO_WAV16, NULL, &err) == -1, "accepted");
    EXPECT_STR_CONTAINS(err.msg, "Permission denied");
    EXPECT(!exists(TEST_PATH("ro/out.wav")), "a file appeared in a read-only directory");
  } else {
    printf("    (running as root: the read-only directory case is not testable)\n");
  }

  /* A destination that is a directory: the temporary file is written, the rename fails and
   * the temporary file is removed. */
  ASSERT(mkdir(TEST_PATH("adir.wav"), 0755) == 0, "mkdir");
  EXPECT(audio_write(TEST_PATH("adir.wav"), x, 1000, 16000, AUDIO_WAV16, NULL, &err) == -1, "accepted");
  EXPECT_STR_CONTAINS(err.msg, "renaming");

  /* A failed overwrite keeps the old file byte for byte. */
  ASSERT(audio_write(TEST_PATH("keep.wav"), x, 1000, 16000, AUDIO_WAV16, NULL, &err) == 0, "%s", err.msg);
  long long before = file_size(TEST_PATH("keep.wav"));
  x[500] = NAN;
  EXPECT(audio_write(TEST_PATH("keep.wav"), x, 600, 16000, AUDIO_WAV16, NULL, &err) == -1, "NaN accepted");
  EXPECT(file_size(TEST_PATH("keep.wav")) == before, "keep.wav changed size after a failed write");
  Audio a;
  ASSERT(audio_read(TEST_PATH("keep.wav"), 16000, &a, &err) == 0, "%s", err.msg);
  EXPECT(a.n == 1000, "keep.wav now has %lld samples", (long long)a.n);
  audio_free(&a);
  /* A successful overwrite replaces it. */
  ASSERT(audio_write(TEST_PATH("keep.wav"), x, 400, 16000, AUDIO_WAV16, NULL, &err) == 0, "%s", err.msg);
  ASSERT(audio_read(TEST_PATH("keep.wav"), 16000, &a, &err) == 0, "%s", err.msg);
  EXPECT(a.n == 400, "keep.wav has %lld samples after overwrite", (long long)a.n);
  audio_free(&a);
  EXPECT(count_entries(".tmp") == 0, "a temporary file was left behind");
}

TEST(audio_write_killed_midway_leaves_no_partial_file) {
  /* A writer killed at some point during a 40 MB write: the destination is either absent
   * or the complete file, never a prefix. The last attempt is not killed. */
  const int64_t n = 20 * 1000 * 1000;
  float *x = random_signal(n, 0.5f, 21);
  for (int attempt = 0; attempt < 4; attempt++) {
    unlink(TEST_PATH("big.wav"));
    pid_t pid = fork();
    ASSERT(pid >= 0, "fork");
    if (pid == 0) {
      McmErr err;
      _exit(audio_write(TEST_PATH("big.wav"), x, n, 16000, AUDIO_WAV16, NULL, &err) == 0 ? 0 : 3);
    }
    bool kill_it = attempt < 3;
    if (kill_it) {
      struct timespec d = {0, (attempt + 1) * 30 * 1000 * 1000};
      nanosleep(&d, NULL);
      kill(pid, SIGKILL);
    }
    int status;
    waitpid(pid, &status, 0);
    long long size = file_size(TEST_PATH("big.wav"));
    EXPECT(size == -1 || size == 44 + 2 * n, "attempt %d: big.wav has %lld bytes, neither absent nor complete", attempt,
           size);
    if (!kill_it) EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0 && size == 44 + 2 * n, "unkilled write failed");
    printf("    %s: destination %s\n", kill_it ? "killed" : "not killed", size == -1 ? "absent" : "complete");
  }
  free(x);
}

TEST(audio_format_names) {
  AudioFormat f;
  McmErr err = {{0}};
  EXPECT(audio_format_from_name("wav", &f, &err) == 0 && f == AUDIO_WAV16, "wav");
  EXPECT(audio_format_from_name("FLAC", &f, &err) == 0 && f == AUDIO_FLAC16, "FLAC");
  EXPECT(audio_format_from_name("mp3", &f, &err) == -1, "mp3 accepted");
  EXPECT_STR_CONTAINS(err.msg, "'mp3'");
  EXPECT_STR_CONTAINS(err.msg, "expected wav or flac");
}

/* ---------------------------------------------------------------- bad input files */

TEST(audio_read_missing_file) { expect_read_error(TEST_PATH("missing.wav"), "cannot open", "No such file"); }

TEST(audio_read_directory) {
  ASSERT(mkdir(TEST_PATH("d.wav"), 0755) == 0, "mkdir");
  expect_read_error(TEST_PATH("d.wav"), "is a directory", NULL);
}

TEST(audio_read_text_file_named_wav) {
  FILE *f = fopen(TEST_PATH("text.wav"), "w");
  ASSERT(f, "fopen");
  for (int i = 0; i < 20; i++) fputs("this is a caption, not audio\n", f);
  fclose(f);
  expect_read_error(TEST_PATH("text.wav"), "not an audio file", NULL);
}

TEST(audio_read_empty_and_zero_length_files) {
  FILE *f = fopen(TEST_PATH("empty.wav"), "w");
  ASSERT(f, "fopen");
  fclose(f);
  expect_read_error(TEST_PATH("empty.wav"), "zero-length", NULL);
  write_pcm16_wav(TEST_PATH("zero.wav"), 0, 16000); /* a valid header and no samples */
  expect_read_error(TEST_PATH("zero.wav"), "zero-length", "no audio samples");
}

/* libsndfile silently shortens a WAV whose data chunk claims more than the file holds; we
 * report it instead (a half-downloaded file should not become a half-length clip). */
TEST(audio_read_truncated_wav) {
  write_pcm16_wav(TEST_PATH("cut.wav"), 16000, 16000);
  truncate_to(TEST_PATH("cut.wav"), 44 + 16000);
  expect_read_error(TEST_PATH("cut.wav"), "truncated", "declares 32000 bytes of audio data, the file holds 16000");
  write_pcm16_wav(TEST_PATH("hdr.wav"), 16000, 16000);
  truncate_to(TEST_PATH("hdr.wav"), 44); /* the header alone */
  expect_read_error(TEST_PATH("hdr.wav"), "truncated", NULL);
  write_pcm16_wav(TEST_PATH("odd.wav"), 16000, 16000);
  truncate_to(TEST_PATH("odd.wav"), 44 + 1001); /* mid-sample */
  expect_read_error(TEST_PATH("odd.wav"), "truncated", NULL);
}

TEST(audio_read_truncated_aiff_and_flac) {
  float *x = random_signal(16000, 0.5f, 4);
  McmErr err = {{0}};
  ASSERT(audio_write(TEST_PATH("cut.flac"), x, 16000, 16000, AUDIO_FLAC16, NULL, &err) == 0, "%s", err.msg);
  truncate_to(TEST_PATH("cut.flac"), file_size(TEST_PATH("cut.flac")) / 2);
  expect_read_error(TEST_PATH("cut.flac"), "truncated", NULL);
  SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_AIFF | SF_FORMAT_PCM_16};
  SNDFILE *sf = SF_OPEN_CHECK(TEST_PATH("cut.aiff"), SFM_WRITE, &info);
  SF_CHECK(sf, "cut.aiff", sf_writef_float(sf, x, 16000) == 16000);
  sf_close(sf);
  truncate_to(TEST_PATH("cut.aiff"), file_size(TEST_PATH("cut.aiff")) / 2);
  expect_read_error(TEST_PATH("cut.aiff"), "truncated", NULL);
  free(x);
}

/* ffmpeg writing to a pipe leaves 0xFFFFFFFF as the data size: read to the end of file. */
TEST(audio_read_streaming_wav_placeholder) {
  write_pcm16_wav(TEST_PATH("stream.wav"), 16000, 16000);
  FILE *f = fopen(TEST_PATH("stream.wav"), "r+b");
  ASSERT(f, "fopen");
  const unsigned char ff[4] = {0xFF, 0xFF, 0xFF, 0xFF};
  fseek(f, 4, SEEK_SET); /* RIFF size */
  fwrite(ff, 1, 4, f);
  fseek(f, 40, SEEK_SET); /* data size */
  fwrite(ff, 1, 4, f);
  fclose(f);
  Audio a;
  McmErr err = {{0}};
  ASSERT(audio_read(TEST_PATH("stream.wav"), 16000, &a, &err) == 0, "%s", err.msg);
  EXPECT(a.n == 16000, "%lld samples", (long long)a.n);
  audio_free(&a);
}

TEST(audio_read_nan_and_inf_samples) {
  float *x = random_signal(3000, 0.5f, 6);
  x[1234] = NAN;
  write_float_wav(TEST_PATH("nan.wav"), x, 3000, 1, 16000);
  expect_read_error(TEST_PATH("nan.wav"), "sample 1234", "is NaN");
  x[1234] = 0.0f;
  x[2000] = -INFINITY;
  write_float_wav(TEST_PATH("inf.wav"), x, 1500, 2, 16000); /* stereo: frame 1000, channel 0 */
  expect_read_error(TEST_PATH("inf.wav"), "sample 1000 (channel 0", "is Inf");
  free(x);
}

TEST(audio_read_bad_target_rate) {
  write_pcm16_wav(TEST_PATH("ok.wav"), 100, 16000);
  Audio a;
  McmErr err = {{0}};
  EXPECT(audio_read(TEST_PATH("ok.wav"), 0, &a, &err) == -1 && a.samples == NULL, "rate 0 accepted");
  EXPECT_STR_CONTAINS(err.msg, "target sample rate 0");
}

/* ---------------------------------------------------------------- silence, normalisation, resampling */

TEST(audio_silent_file_reads_and_is_silent) {
  float z[2000] = {0};
  McmErr err = {{0}};
  ASSERT(audio_write(TEST_PATH("silent.wav"), z, 2000, 16000, AUDIO_WAV16, NULL, &err) == 0, "%s", err.msg);
  Audio a;
  ASSERT(audio_read(TEST_PATH("silent.wav"), 16000, &a, &err) == 0, "a silent file is not an error: %s", err.msg);
  EXPECT(audio_is_silent(a.samples, a.n, 1e-4f), "all-zero file is not silent");
  audio_free(&a);

  float x[5] = {0, 5e-5f, -1e-4f, 0, 0};
  EXPECT(audio_is_silent(x, 5, 1e-4f), "peak 1e-4 at threshold 1e-4 is silent");
  x[3] = 2e-4f;
  EXPECT(!audio_is_silent(x, 5, 1e-4f), "peak 2e-4 at threshold 1e-4 is not silent");
  x[3] = NAN;
  EXPECT(!audio_is_silent(x, 5, 1e-4f), "NaN is not silence");
  EXPECT(audio_is_silent(x, 0, 1e-4f), "no samples count as silent");
}

TEST(audio_normalize_matches_musicldm) {
  const int64_t n = 4000;
  float *x = random_signal(n, 0.3f, 8);
  double *ref = MALLOC_CHECK((size_t)n * sizeof(double));
  double mean = 0, peak = 0;
  for (int64_t i = 0; i < n; i++) x[i] += 0.2f; /* a DC offset to remove */
  for (int64_t i = 0; i < n; i++) mean += x[i];
  mean /= n;
  for (int64_t i = 0; i < n; i++) peak = fmax(peak, fabs(x[i] - mean));
  for (int64_t i = 0; i < n; i++) ref[i] = (x[i] - mean) / (peak + 1e-8) * 0.5;
  audio_normalize(x, n);
  double worst = 0, got_peak = 0, got_mean = 0;
  for (int64_t i = 0; i < n; i++) {
    worst = fmax(worst, fabs(x[i] - ref[i]));
    got_peak = fmax(got_peak, fabs(x[i]));
    got_mean += x[i];
  }
  EXPECT(worst <= 1e-7, "differs from (x - mean) / (peak + 1e-8) * 0.5 by %.3g", worst);
  EXPECT_NEAR(got_peak, 0.5, 1e-6);
  EXPECT_NEAR(got_mean / n, 0.0, 1e-7);
  float z[3] = {0, 0, 0};
  audio_normalize(z, 3);
  EXPECT(z[0] == 0 && z[1] == 0 && z[2] == 0, "silence must stay silence");
  free(x);
  free(ref);
}

TEST(audio_resample_arguments) {
  float x[100], *y = (float *)1;
  int64_t m = 7;
  for (int i = 0; i < 100; i++) x[i] = 0.01f * i;
  McmErr err = {{0}};
  EXPECT(audio_resample(x, 100, 0, 16000, &y, &m, &err) == -1 && y == NULL && m == 0, "rate 0 accepted");
  EXPECT_STR_CONTAINS(err.msg, "from 0 Hz to 16000 Hz");
  ASSERT(audio_resample(x, 100, 16000, 16000, &y, &m, &err) == 0, "%s", err.msg);
  EXPECT(m == 100 && memcmp(x, y, sizeof x) == 0, "same rate must copy");
  free(y);
  ASSERT(audio_resample(x, 0, 44100, 16000, &y, &m, &err) == 0, "%s", err.msg);
  EXPECT(m == 0, "0 samples give %lld", (long long)m);
  free(y);
  ASSERT(audio_resample(x, 100, 8000, 16000, &y, &m, &err) == 0, "%s", err.msg);
  EXPECT(m == 200, "100 samples 8 -> 16 kHz give %lld", (long long)m);
  free(y);
}
