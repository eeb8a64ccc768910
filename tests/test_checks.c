/* The check macros end the program with status 1 (their messages name file:line, the call,
 * the path and a hint; the runner shows them on stderr). */
#include "data/sndfile_check.h"
#include <unistd.h>

#include "test.h"

TEST_EXIT_MSG(sndfile_open_check_on_non_audio_exits, 1, "not_audio.wav': Format not recognised. (hint: not an audio format") {
  const char *path = TEST_PATH("not_audio.wav");
  FILE *f = fopen(path, "w");
  ASSERT(f, "cannot write %s", path);
  fputs("this is text, not RIFF", f);
  fclose(f);
  SF_INFO info = {0};
  SF_OPEN_CHECK(path, SFM_READ, &info);
}

TEST(sndfile_open_check_reads_real_audio) {
  const char *path = TEST_PATH("tone.wav");
  SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
  SNDFILE *sf = SF_OPEN_CHECK(path, SFM_WRITE, &info);
  float buf[160];
  for (int i = 0; i < 160; i++) buf[i] = 0.5f * sinf(2 * 3.14159265f * 440 * (float)i / 16000);
  SF_CHECK(sf, path, sf_write_float(sf, buf, 160) == 160);
  SF_CHECK(sf, path, sf_close(sf) == 0);
  SF_INFO in = {0};
  sf = SF_OPEN_CHECK(path, SFM_READ, &in);
  EXPECT(in.samplerate == 16000 && in.frames == 160, "read back %d Hz, %lld frames", in.samplerate,
         (long long)in.frames);
  sf_close(sf);
}

TEST_EXIT_MSG(fopen_check_names_the_path, 1, "cannot open '/nonexistent/dir/file' (mode r): No such file") { FOPEN_CHECK("/nonexistent/dir/file", "r"); }

TEST_EXIT_MSG(libc_check_exits, 1, "test_checks.c:35: close(-1) failed: Bad file descriptor") { LIBC_CHECK(close(-1)); }
