/* The committed demo model (checkpoints/demo, made by `make demo`): a newcomer's first
 * `./infer` after `make`. It must load and make music with no options beyond a prompt, and its
 * output must stay what it was when the model was committed: the log-mel embedding of every
 * clip (per-bin mean and std over frames, data/evaluate.h), its RMS and its length, for the
 * student (consistency sampling, the default) and the teacher (DDIM), fixed prompts and seeds.
 *
 * The recorded band is tests/fixtures/demo_model_band.h5. Regenerate it only when the demo
 * model itself is retrained and committed:
 *   MCM_RECORD_DEMO_BAND=1 build/cpu/mcm_tests demo_model
 * Tolerance: relative L2 1e-3 on the embeddings (log domain) and 1e-3 on the RMS. The CPU
 * build is deterministic for a given thread count; another count or BLAS build may change
 * summation order, whose fp32 rounding (~1e-6 relative per op) grows by orders of magnitude at
 * most through four sampling steps, a decoder and a vocoder. A retrained, broken or
 * differently loaded model moves the embeddings by far more (a different seed: ~1e-1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "data/evaluate.h"
#include "test.h"

#define BAND "tests/fixtures/demo_model_band.h5"
#define BUNDLE "checkpoints/demo"

static char out[1 << 16];

#define run(...) test_run_cmd(out, sizeof out, __VA_ARGS__)

static const char *const PROMPTS =
    "A slow, peaceful and gentle classical piece featuring a rich cello, backed by a warm string section and a "
    "double bass. Key of Bb major, 61 BPM.\n"
    "Pulsing techno cut, 131 BPM, C minor, glassy polysynth lead over brassy synth stabs, a throbbing offbeat synth "
    "bass and a pounding drum machine.\n";
enum { N_CLIPS = 2 };

TEST(demo_model_is_committed_complete) {
  const char *files[] = {"unet.h5", "student.h5", "vae.h5", "vocoder.h5", "text_encoder.h5", "bridge.h5",
                         "tokenizer/vocab.json", "tokenizer/merges.txt"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", BUNDLE, files[i]);
    EXPECT(access(p, R_OK) == 0, "%s is missing: the demo model must ship with the repository", p);
  }
}

/* Samples the prompts with one sampler setting into a fresh folder; embeddings of the clips. */
static void sample_set(const char *name, const char *opts, EvalSet *set) {
  char prompts[600], dir[600];
  snprintf(prompts, sizeof prompts, "%s", TEST_PATH("prompts.txt"));
  FILE *f = fopen(prompts, "w");
  ASSERT(f && fputs(PROMPTS, f) >= 0 && fclose(f) == 0, "writing %s", prompts);
  snprintf(dir, sizeof dir, "%s", TEST_PATH(name));
  /* the default bundle: exactly what a newcomer's ./infer reads */
  ASSERT(run("./infer --device cpu --prompts-file %s --out %s --seed 5 %s", prompts, dir, opts) == 0, "%s", out);
  McmErr err = {{0}};
  ASSERT(eval_set_load(dir, NULL, set, &err) == 0, "%s", err.msg);
  ASSERT(set->n == N_CLIPS && set->n_skipped == 0, "%s: %d clips, %d skipped", name, set->n, set->n_skipped);
  EXPECT(fabs(set->seconds - N_CLIPS * 10.24) < 1e-6, "%s: %.6f s of audio, expected 2 x 10.24", name, set->seconds);
  EXPECT(set->mean_rms > 1e-3 && set->silence_fraction < 0.5, "%s: RMS %.3g, %.0f %% silent: not music", name,
         set->mean_rms, 100 * set->silence_fraction);
}

static double rel_l2(const float *a, const float *b, int n) {
  double d = 0, s = 0;
  for (int i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), s += (double)b[i] * b[i];
  return sqrt(d / (s > 0 ? s : 1));
}

TEST(demo_model_samples_stay_in_their_recorded_band) {
  const char *names[2] = {"student_cm4", "teacher_ddim4"};
  const char *opts[2] = {"", "--sampler ddim --steps 4"};
  EvalSet sets[2];
  for (int i = 0; i < 2; i++) sample_set(names[i], opts[i], &sets[i]);
  McmErr err = {{0}};
  const int64_t D = 128;
  if (getenv("MCM_RECORD_DEMO_BAND")) {
    char path[600];
    const char *bd = getenv("MCM_BIN_DIR") ? getenv("MCM_BIN_DIR") : ".";
    snprintf(path, sizeof path, "%s/%s", bd, BAND);
    TensorFile *tf = tf_create(path, &err);
    ASSERT(tf, "%s", err.msg);
    for (int i = 0; i < 2; i++) {
      char k[64];
      float rms = (float)sets[i].mean_rms;
      snprintf(k, sizeof k, "%s/mel_emb", names[i]);
      ASSERT(tf_write(tf, k, DT_F32, 2, (int64_t[]){N_CLIPS, D}, sets[i].mel_emb, &err) == 0, "%s", err.msg);
      snprintf(k, sizeof k, "%s/mean_rms", names[i]);
      ASSERT(tf_write(tf, k, DT_F32, 1, (int64_t[]){1}, &rms, &err) == 0, "%s", err.msg);
    }
    ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
    printf("  recorded %s\n", path);
  }
  TensorFile *tf = tf_open(BAND, &err);
  ASSERT(tf, "%s (record it with MCM_RECORD_DEMO_BAND=1 when the demo model is committed)", err.msg);
  for (int i = 0; i < 2; i++) {
    char k[64];
    float want[N_CLIPS * 128], rms;
    snprintf(k, sizeof k, "%s/mel_emb", names[i]);
    ASSERT(tf_read(tf, k, 2, (int64_t[]){N_CLIPS, D}, want, &err) == 0, "%s", err.msg);
    snprintf(k, sizeof k, "%s/mean_rms", names[i]);
    ASSERT(tf_read(tf, k, 1, (int64_t[]){1}, &rms, &err) == 0, "%s", err.msg);
    for (int c = 0; c < N_CLIPS; c++) {
      double e = rel_l2(sets[i].mel_emb + c * D, want + c * D, (int)D);
      printf("  %s clip %d: log-mel embedding off the band by %.2e (relative L2)\n", names[i], c, e);
      EXPECT(e < 1e-3, "%s clip %d: log-mel embedding moved by %.3g (relative L2) from the recorded one", names[i], c, e);
    }
    EXPECT(fabs(sets[i].mean_rms - rms) < 1e-3 * rms, "%s: RMS %.6g, recorded %.6g", names[i], sets[i].mean_rms, rms);
  }
  /* the two samplers make different music from the same prompts and seeds */
  EXPECT(rel_l2(sets[0].mel_emb, sets[1].mel_emb, (int)(N_CLIPS * D)) > 1e-2, "student and teacher coincide");
  tf_close(tf);
  for (int i = 0; i < 2; i++) eval_set_free(&sets[i]);
}

/* `make demo-shards` then `./train configs/demo.ini`: distillation from the committed model
 * works with nothing else (here on 4 generated clips and 2 steps instead of 200 and 500). */
TEST(demo_model_distills_with_configs_demo_ini) {
  char tools[1024]; /* this test binary's flavour of the tools: <build>/tools */
  ssize_t len = readlink("/proc/self/exe", tools, sizeof tools - 16);
  ASSERT(len > 0, "readlink /proc/self/exe");
  tools[len] = 0;
  strcpy(strrchr(tools, '/'), "/tools");
  char data[600], shards[600], runs[600];
  snprintf(data, sizeof data, "%s", TEST_PATH("data"));
  snprintf(shards, sizeof shards, "%s", TEST_PATH("shards"));
  snprintf(runs, sizeof runs, "%s", TEST_PATH("runs"));
  ASSERT(run("%s/make_demo_dataset --out %s --clips 4 --seconds 3 --seed 1 >/dev/null", tools, data) == 0,
         "%s", out);
  ASSERT(run("./prepare --manifest %s/manifest.json --out %s --config configs/demo.ini --quiet --vae %s/vae.h5 "
             "--text-encoder %s/text_encoder.h5 --tokenizer %s/tokenizer",
             data, shards, BUNDLE, BUNDLE, BUNDLE) == 0,
         "%s", out);
  ASSERT(run("./train configs/demo.ini --quiet --set data.train_shards=%s --set run.out_dir=%s --set checkpoint.dir=%s/ck "
             "--set train.steps=2 --set checkpoint.every=2 --set run.device=cpu",
             shards, runs, runs) == 0,
         "%s", out);
  char student[700];
  snprintf(student, sizeof student, "%s/student.h5", runs);
  EXPECT(access(student, R_OK) == 0, "no %s after ./train configs/demo.ini", student);
  /* the student it wrote is a drop-in for the bundle's */
  ASSERT(run("mkdir -p %s/b && cp -r %s/. %s/b/ && cp %s %s/b/student.h5 && ./infer --device cpu --checkpoint %s/b "
             "--prompt 'calm piano' --seconds 2.56 --seed 1 --out %s/x.wav",
             runs, BUNDLE, runs, student, runs, runs, runs) == 0,
         "%s", out);
}
