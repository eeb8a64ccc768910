/* `make demo` at tiny scale: tools/demo.sh with DEMO_SCALE=tiny into a scratch directory
 * (3 clips of 1 s, 64-frame segments, 2-3 steps per training stage, about 10 s on 2 cores):
 * every stage's output exists, the distillation ran with the adversarial term, the bundle
 * makes a WAV of the right length with ./infer (student and teacher), the evaluation wrote
 * its report, and a second run skips every stage. */
#include <sndfile.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/common.h"
#include "test.h"

static char out[1 << 17];

/* Runs a shell command with stderr folded in; the tail of its output in out; exit status. */
static int run(const char *cmd) {
  char full[4096];
  snprintf(full, sizeof full, "%s 2>&1", cmd);
  FILE *p = popen(full, "r");
  ASSERT(p, "popen failed");
  size_t n = 0;
  for (size_t got; (got = fread(out + n, 1, sizeof out - 1 - n, p)) > 0;) {
    n += got;
    if (n > sizeof out / 2) { /* keep the second half: the end says what failed */
      memmove(out, out + n - sizeof out / 4, sizeof out / 4);
      n = sizeof out / 4;
    }
  }
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The environment for tools/demo.sh: this test binary's flavour of the tools and binaries. */
static const char *demo_env(char *buf, size_t size, const char *work) {
  char self[1024];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ASSERT(n > 0, "readlink /proc/self/exe");
  self[n] = 0;
  *strrchr(self, '/') = 0;
  const char *bd = getenv("MCM_BIN_DIR") ? getenv("MCM_BIN_DIR") : ".";
  mcm_snprintf(buf, size, "DEMO_SCALE=tiny DEMO_WORK='%s' DEMO_DEVICE=cpu MCM_BIN_DIR='%s' MCM_TOOLS_DIR='%s/tools'",
               work, bd, self);
  return buf;
}

static bool exists(const char *work, const char *rel) {
  char p[1024];
  mcm_snprintf(p, sizeof p, "%s/%s", work, rel);
  struct stat st;
  return stat(p, &st) == 0 && (S_ISDIR(st.st_mode) || st.st_size > 0);
}

static bool file_contains(const char *path, const char *needle) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  static char buf[1 << 22]; /* HDF5 files hold NULs: memmem over what was read */
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return memmem(buf, n, needle, strlen(needle)) != NULL;
}

TEST(demo_chain_tiny_end_to_end) {
  const char *work = TEST_PATH("demo");
  char env[3072], cmd[4096];
  demo_env(env, sizeof env, work);
  mcm_snprintf(cmd, sizeof cmd, "%s tools/demo.sh", env);
  int rc = run(cmd);
  ASSERT(rc == 0, "tools/demo.sh (tiny) exit %d:\n%s", rc, out);
  EXPECT_STR_CONTAINS(out, "done: bundle");

  /* Every stage's output. */
  const char *outputs[] = {
      "data/demo/manifest.json", "data/demo/captions.lst", "runs/demo_vocab/vocab.json",
      "runs/demo_vocab/merges.txt", "data/demo/shards/shard_00000.h5", "data/demo/shards/encoders.h5",
      "runs/demo_vae/vae.h5", "runs/demo_vocoder/vocoder.h5", "runs/demo_teacher/unet.h5",
      "runs/demo_teacher/text_encoder.h5", "runs/demo_teacher/tokenizer/vocab.json", "runs/demo/bridge.h5",
      "runs/demo/student.h5", "bundle/unet.h5", "bundle/student.h5", "bundle/vae.h5", "bundle/vocoder.h5",
      "bundle/text_encoder.h5", "bundle/tokenizer/vocab.json", "bundle/tokenizer/merges.txt",
      "samples/teacher_ddim4/000_an-energetic-and-pulsing-techno-cut-in-b_seed0.wav",
      "samples/student_cm4/000_an-energetic-and-pulsing-techno-cut-in-b_seed0.wav",
      "samples/student_cm1/001_a-peaceful-and-gentle-classical-miniatur_seed1.wav", "bundle/bridge.h5",
      "runs/demo_noadv/student.h5", "samples/noadv_cm4/000_an-energetic-and-pulsing-techno-cut-in-b_seed0.wav",
      "eval/report.json", "eval/report.md", "eval/mels.png",
  };
  for (size_t i = 0; i < sizeof outputs / sizeof *outputs; i++)
    EXPECT(exists(work, outputs[i]), "%s/%s is missing or empty", work, outputs[i]);
  const char *stages[] = {"dataset", "vocab", "shards", "vae", "vocoder", "latents", "teacher", "text_emb",
                          "bridge", "distill", "distill_noadv", "bundle", "bundle_noadv", "report"};
  for (size_t i = 0; i < sizeof stages / sizeof *stages; i++) {
    char rel[128];
    mcm_snprintf(rel, sizeof rel, "stages/%s.done", stages[i]);
    struct stat st;
    char p[1024];
    mcm_snprintf(p, sizeof p, "%s/%s", work, rel);
    EXPECT(stat(p, &st) == 0, "stage %s has no done-marker", stages[i]);
  }

  /* The student was distilled with the adversarial term (generator and discriminator losses
   * in its log), the teacher trained its text tower. */
  char p[1024];
  mcm_snprintf(p, sizeof p, "%s/logs/distill.log", work);
  EXPECT(file_contains(p, "| G ") && file_contains(p, "D real"), "%s: no adversarial losses", p);
  mcm_snprintf(p, sizeof p, "%s/runs/demo/student.h5", work);
  EXPECT(file_contains(p, "mcm-weights 1"), "%s is not a converted-format weights file", p);

  /* The ablation was distilled without the adversarial term. */
  mcm_snprintf(p, sizeof p, "%s/logs/distill_noadv.log", work);
  EXPECT(exists(work, "logs/distill_noadv.log") && !file_contains(p, "D real"), "%s: adversarial losses in the ablation", p);

  /* The evaluation report: every set with its Frechet distance, adherence and latency. */
  mcm_snprintf(p, sizeof p, "%s/eval/report.json", work);
  EXPECT(file_contains(p, "\"student_cm4\"") && file_contains(p, "\"teacher_ddim4\"") &&
             file_contains(p, "\"noadv_cm4\"") && file_contains(p, "\"fd_logmel\""),
         "%s lacks the sets or their FD", p);
  mcm_snprintf(p, sizeof p, "%s/eval/report.md", work);
  EXPECT(file_contains(p, "student_cm4") && file_contains(p, "noadv_cm4"), "%s lacks the student rows", p);

  /* The bundle makes a WAV of the asked length with ./infer: 0.64 s at 16 kHz = 10240 samples
   * (the UNet's native 16 latent frames x VAE factor 4 x hop 160). */
  const char *bd = getenv("MCM_BIN_DIR") ? getenv("MCM_BIN_DIR") : ".";
  const char *samplers[] = {"--sampler cm --steps 2", "--sampler ddim --steps 3"};
  for (int s = 0; s < 2; s++) {
    char wav[1024];
    mcm_snprintf(wav, sizeof wav, "%s/infer_%d.wav", work, s);
    mcm_snprintf(cmd, sizeof cmd,
                 "%s/infer --checkpoint '%s/bundle' --prompt 'a calm piano piece' --seconds 0.64 --seed 3 "
                 "--device cpu %s --out '%s'",
                 bd, work, samplers[s], wav);
    rc = run(cmd);
    EXPECT(rc == 0, "%s: exit %d:\n%s", cmd, rc, out);
    if (rc) continue;
    SF_INFO info = {0};
    SNDFILE *sf = sf_open(wav, SFM_READ, &info);
    EXPECT(sf != NULL, "%s: %s", wav, sf_strerror(NULL));
    if (!sf) continue;
    sf_close(sf);
    EXPECT(info.samplerate == 16000 && info.channels == 1, "%s: %d Hz, %d channels", wav, info.samplerate,
           info.channels);
    EXPECT(info.frames == 10240, "%s: %lld samples, expected 10240 (0.64 s)", wav, (long long)info.frames);
  }

  /* Resumable: a second run skips every stage. */
  mcm_snprintf(cmd, sizeof cmd, "%s tools/demo.sh", env);
  rc = run(cmd);
  EXPECT(rc == 0, "second run: exit %d:\n%s", rc, out);
  EXPECT(strstr(out, "distill: done already") && strstr(out, "vae: done already") &&
             strstr(out, "report: done already") && !strstr(out, ": ok in"),
         "the second run redid a stage:\n%s", out);
}

TEST(demo_chain_bad_scale_is_refused) {
  char env[3072], cmd[4096];
  demo_env(env, sizeof env, TEST_PATH("demo"));
  mcm_snprintf(cmd, sizeof cmd, "%s DEMO_SCALE=huge tools/demo.sh", env);
  int rc = run(cmd);
  EXPECT(rc == 2, "exit %d:\n%s", rc, out);
  EXPECT_STR_CONTAINS(out, "DEMO_SCALE=huge");
  mcm_snprintf(cmd, sizeof cmd, "DEMO_SCALE=tiny DEMO_WORK= tools/demo.sh");
  rc = run(cmd);
  EXPECT(rc == 2, "exit %d:\n%s", rc, out);
  EXPECT_STR_CONTAINS(out, "needs DEMO_WORK");
}
