/* The binaries end to end: usage text, bad arguments and bad configurations give one
 * clear line and exit status 2; nothing half-done is reported as success. */

#include "kernels/common.h"
#include "test.h"

/* "<bin dir>/<cmd>" with stderr folded into out; the exit status (tests/test.h). */
#define run(cmd, out, size) test_run_cmd((out), (size), "%s", (cmd))

static char out[1 << 16];

TEST(cli_train_usage) {
  EXPECT(run("./train --help", out, sizeof out) == 0, "--help exits 0");
  EXPECT_STR_CONTAINS(out, "usage: ./train CONFIG.ini");
  EXPECT_STR_CONTAINS(out, "--set SECTION.KEY=VALUE");
  EXPECT(run("./train", out, sizeof out) == 2, "no config → 2");
  EXPECT_STR_CONTAINS(out, "no configuration file given");
}

TEST(cli_train_help_config_lists_the_schema) {
  EXPECT(run("./train --help-config", out, sizeof out) == 0, "exit 0");
  EXPECT_STR_CONTAINS(out, "batch_size");
  EXPECT_STR_CONTAINS(out, "channel_mult");
}

TEST(cli_train_check_prints_resolved_config) {
  EXPECT(run("./train configs/tiny.ini --check --device cpu --set train.batch_size=3", out, sizeof out) == 0,
         "--check exits 0: %s", out);
  EXPECT_STR_CONTAINS(out, "batch_size = 3");
  EXPECT_STR_CONTAINS(out, "--set");
  EXPECT_STR_CONTAINS(out, "# device: cpu");
}

TEST(cli_train_vocoder_discriminator_config_fails_before_work) {
  EXPECT(run("./train configs/tiny.ini --device cpu --set train.mode=vocoder --set train.adversarial=true "
             "--set vocoder_train.disc_scale_groups=1,4,16,16,16,16,3", out, sizeof out) == 2, "exit 2: %s", out);
  EXPECT_STR_CONTAINS(out, "vocoder_train.disc_scale_groups = 1,4,16,16,16,16,3: conv 6's 3 groups do not divide");
}

TEST(cli_train_bad_inputs) {
  const char *cases[][2] = {
      {"./train configs/does_not_exist.ini", "does_not_exist.ini"},
      {"./train configs/tiny.ini --set train.batch_size=0", "batch_size"},
      {"./train configs/tiny.ini --set nosuch.key=1", "nosuch"},
      {"./train configs/tiny.ini --device gpu7", "gpu7"},
      {"./train configs/tiny.ini --bogus", "--bogus"},
      {"./train configs/tiny.ini configs/demo.ini", "one configuration file only"},
      {"./train configs/tiny.ini --set", "--set needs a value"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int code = run(cases[i][0], out, sizeof out);
    EXPECT(code == 2, "%s: exit %d, expected 2 (%s)", cases[i][0], code, out);
    EXPECT_STR_CONTAINS(out, cases[i][1]);
    EXPECT_STR_CONTAINS(out, "train: error: ");
  }
}

TEST(cli_infer_bad_inputs) {
  const char *cases[][2] = {
      {"./infer --out x.wav", "--prompt"},
      {"./infer --prompt hi", "--out"},
      {"./infer --prompt hi --out x.wav --steps 0", "--steps"},
      {"./infer --prompt hi --out x.wav --steps 51", "1..50"},
      {"./infer --prompt hi --out x.wav --seconds 0", "--seconds"},
      {"./infer --prompt hi --out x.wav --seconds 1e9", "--seconds"},
      {"./infer --prompt hi --out x.wav --seconds abc", "not a finite number"},
      {"./infer --prompt hi --out x.wav --init-audio configs/tiny.ini --strength 0", "--strength"},
      {"./infer --prompt hi --out x.wav --init-audio configs/tiny.ini --strength 1.5", "--strength"},
      {"./infer --prompt hi --out x.wav --init-audio /nonexistent.wav", "/nonexistent.wav"},
      {"./infer --prompt hi --out x.wav --checkpoint /nonexistent.h5", "/nonexistent.h5"},
      {"./infer --prompts-file /dev/null --out outdir", "no prompt"},
      {"./infer --prompt hi --out x.wav --format mp3", "wav|flac"},
      {"./infer --prompt hi --out x.wav --sampler euler", "cm|ddim"},
      {"./infer --prompt hi --out x.wav --device tpu", "tpu"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int code = run(cases[i][0], out, sizeof out);
    EXPECT(code == 2, "%s: exit %d, expected 2 (%s)", cases[i][0], code, out);
    EXPECT_STR_CONTAINS(out, cases[i][1]);
  }
  EXPECT(run("./infer --help", out, sizeof out) == 0, "--help exits 0");
  EXPECT_STR_CONTAINS(out, "usage: ./infer");
}
