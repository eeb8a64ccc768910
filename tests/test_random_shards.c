/* tools/make_random_shards.c: its shards load in the batch loader at the configuration's sizes
 * with plausibly scaled values, its encoders.h5 and bridge.h5 are what ./train reads, and
 * ./train runs the adversarial MusicCM step on them at configs/tiny.ini sizes (the flow
 * tools/gpu_session.sh runs at full size). Bad arguments: one line, exit 2. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "data/loader.h"
#include "data/shard.h"
#include "diffusion/bridge.h"
#include "kernels/context.h"
#include "tests/test.h"
#include "tests/train_util.h"

#define TINY_SIZES "--config configs/tiny.ini --set mel.n_mels=16 --set prepare.segment_frames=16"

/* This test binary's flavour of the tool: build/<flavour>/tools/make_random_shards. */
static const char *tool(void) {
  static char path[1100];
  char self[1024];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ASSERT(n > 0, "readlink /proc/self/exe");
  self[n] = 0;
  *strrchr(self, '/') = 0;
  snprintf(path, sizeof path, "%s/tools/make_random_shards", self);
  ASSERT(access(path, X_OK) == 0, "%s is missing (make builds every tools/*.c)", path);
  return path;
}

/* make_random_shards at tiny.ini sizes into dir (12 rows, 8 per shard) with a teacher. */
static void make_tiny(const char *dir, int seed) {
  char out[8192];
  int rc = test_run_cmd(out, sizeof out, "%s " TINY_SIZES " --out %s --rows 12 --seed %d --teacher %s/teacher.h5",
                        tool(), dir, seed, dir);
  ASSERT(rc == 0, "make_random_shards exit %d:\n%s", rc, out);
  EXPECT_STR_CONTAINS(out, "12 rows in 2 shards (mel 16 x 16, latents 4 x 8 x 8, text 16)");
}

TEST(random_shards_load_at_the_config_sizes) {
  const char *dir = TEST_PATH("data");
  make_tiny(dir, 3);
  char glob[600];
  snprintf(glob, sizeof glob, "%s/shard_*.h5", dir);
  McmErr err;
  LoaderOptions lo = {.shard_glob_or_dir = glob, .batch_size = 12, .seed = 1, .world = 1, .drop_last = true,
                      .fields = LOAD_MEL | LOAD_LATENT | LOAD_TEXT_EMB};
  Loader *l = loader_create(&lo, &err); /* validates every shard with its checksums */
  ASSERT(l, "%s", err.msg);
  EXPECT(loader_sample_count(l) == 12 && loader_shard_count(l) == 2, "%lld rows in %d shards",
         (long long)loader_sample_count(l), loader_shard_count(l));
  ShardInfo si = loader_info(l);
  DataSpec s = test_tiny_data_spec(); /* what configs/tiny.ini expects */
  EXPECT(si.frames == s.frames && si.n_mels == s.n_mels && si.rate == s.rate && si.hop == s.hop,
         "mel %d x %d at %d Hz hop %d", si.frames, si.n_mels, si.rate, si.hop);
  int C2, H, W;
  ASSERT(loader_latent_dims(l, &C2, &H, &W), "no latents");
  EXPECT(C2 == s.C2 && H == s.H && W == s.W, "latents %d x %d x %d", C2, H, W);
  EXPECT(loader_text_emb_dim(l) == s.D, "text_emb %d", loader_text_emb_dim(l));
  const Batch *b = loader_next(l, &err);
  ASSERT(b && b->n == 12, "%s", b ? "short batch" : err.msg);

  /* Scales: log-magnitude mel in MusicLDM's range, VAE mean ~ N(0, 1) and logvar ~ −4, unit
   * text embeddings. */
  double lo_mel = 1e9, hi_mel = -1e9, sm = 0, smm = 0, slv = 0;
  for (int64_t i = 0; i < 12LL * si.frames * si.n_mels; i++)
    lo_mel = fmin(lo_mel, b->mel[i]), hi_mel = fmax(hi_mel, b->mel[i]);
  const int64_t per = (int64_t)C2 * H * W, half = per / 2;
  for (int i = 0; i < 12; i++)
    for (int64_t j = 0; j < half; j++) {
      double m = b->latent[i * per + j];
      sm += m, smm += m * m, slv += b->latent[i * per + half + j];
    }
  const double n = 12.0 * (double)half;
  EXPECT(lo_mel >= -11.5 && hi_mel <= 2.0 && hi_mel - lo_mel > 4, "mel in [%g, %g]", lo_mel, hi_mel);
  EXPECT(fabs(sm / n) < 0.1 && fabs(sqrt(smm / n) - 1) < 0.1, "latent mean: mean %g rms %g", sm / n, sqrt(smm / n));
  EXPECT_NEAR(slv / n, -4.0, 0.02);
  for (int i = 0; i < 12; i++) {
    double ss = 0;
    for (int d = 0; d < s.D; d++) ss += (double)b->text_emb[i * s.D + d] * b->text_emb[i * s.D + d];
    EXPECT_NEAR(ss, 1.0, 1e-5);
  }
  loader_destroy(l);

  /* encoders.h5 as ./train reads it; the bridge at mel.n_mels -> adversarial.mae_bins */
  char p[600];
  snprintf(p, sizeof p, "%s/encoders.h5", dir);
  TensorFile *tf = tf_open(p, &err);
  ASSERT(tf, "%s", err.msg);
  float un[16], scale = 0;
  EXPECT(tf_read(tf, "uncond_text_emb", 1, (int64_t[]){16}, un, &err) == 0, "%s", err.msg);
  EXPECT(tf_read(tf, "vae_scaling_factor", 0, NULL, &scale, &err) == 0 && scale > 1.07f && scale < 1.08f,
         "vae_scaling_factor %g", scale);
  tf_close(tf);
  Ctx *ctx = ctx_create_cpu(0);
  Bridge *br = bridge_create(ctx, 16, 8);
  snprintf(p, sizeof p, "%s/bridge.h5", dir);
  EXPECT(bridge_load(ctx, br, p, &err) == 0, "%s", err.msg);
  Bridge *wrong = bridge_create(ctx, 64, 128);
  EXPECT(bridge_load(ctx, wrong, p, &err) != 0, "a 16 -> 8 bridge loaded as 64 -> 128");
  ctx_destroy(ctx);
}

TEST(random_shards_same_seed_same_files) {
  const char *a = TEST_PATH("a"), *b = TEST_PATH("b"), *c = TEST_PATH("c");
  make_tiny(a, 7), make_tiny(b, 7), make_tiny(c, 8);
  float la[4 * 8 * 8], lb[4 * 8 * 8], lc[4 * 8 * 8];
  const char *dirs[3] = {a, b, c};
  float *dst[3] = {la, lb, lc};
  for (int k = 0; k < 3; k++) {
    char p[600];
    snprintf(p, sizeof p, "%s/shard_00001.h5", dirs[k]);
    McmErr err;
    Shard *s = shard_open(p, &err);
    ASSERT(s, "%s", err.msg);
    ASSERT(shard_read_latent(s, 3, dst[k], &err) == 0, "%s", err.msg);
    shard_close(s);
  }
  EXPECT(!memcmp(la, lb, sizeof la), "seed 7 twice gave different latents");
  EXPECT(memcmp(la, lc, sizeof la), "seeds 7 and 8 gave the same latents");
}

/* ./train on them: configs/tiny.ini with the adversarial step on (random AudioMAE of tiny.ini's
 * sizes, the generated bridge) and the generated teacher, 2 steps, bf16 frozen networks. */
TEST(random_shards_train_two_steps) {
  const char *dir = TEST_PATH("data");
  make_tiny(dir, 0);
  char out[1 << 16];
  int rc = test_run_cmd(out, sizeof out,
                        "./train configs/tiny.ini --fresh --set mel.n_mels=16 --set prepare.segment_frames=16 "
                        "--set data.train_shards='%s/shard_*.h5' --set teacher.weights=%s/teacher.h5 "
                        "--set train.adversarial=true --set adversarial.audiomae=random "
                        "--set adversarial.bridge=%s/bridge.h5 --set train.precision=bf16 --set train.steps=2 "
                        "--set run.out_dir=%s/run --set checkpoint.dir=%s/ckpt",
                        dir, dir, dir, dir, dir);
  ASSERT(rc == 0, "./train exit %d:\n%s", rc, out);
  EXPECT_STR_CONTAINS(out, "step 2/2 | loss ");
  EXPECT_STR_CONTAINS(out, "# done: 2 steps");
  double loss[2] = {NAN, NAN};
  char p[600];
  snprintf(p, sizeof p, "%s/run/log.jsonl", dir);
  EXPECT(test_read_log_losses(p, loss, 2) == 2, "log.jsonl lacks step 2");
  EXPECT(isfinite(loss[0]) && isfinite(loss[1]), "losses %g %g", loss[0], loss[1]);
}

TEST(random_shards_bad_arguments) {
  struct {
    const char *args, *says;
  } cases[] = {
      {"--out /tmp/x", "give --config FILE and --out DIR"},
      {"--config configs/tiny.ini", "give --config FILE and --out DIR"},
      {"--config configs/no_such.ini --out /tmp/x", "no_such.ini: cannot open"},
      {"--config configs/tiny.ini --out /tmp/x --rows 0", "--rows: 0 is outside"},
      {"--config configs/tiny.ini --out /tmp/x --seed -1", "--seed"},
      {"--config configs/tiny.ini --out /tmp/x --set unet.nope=1", "unknown key 'nope'"},
      {"--config configs/tiny.ini --out /tmp/x --bogus", "unknown argument '--bogus'"},
      {"--config configs/tiny.ini --out /proc/no/such/dir", "cannot create"},
      {"--config configs/tiny.ini --out", "--out"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char out[4096];
    int rc = test_run_cmd(out, sizeof out, "%s %s", tool(), cases[i].args);
    EXPECT(rc == 2, "%s: exit %d", cases[i].args, rc);
    EXPECT_STR_CONTAINS(out, "make_random_shards: error: ");
    EXPECT_STR_CONTAINS(out, cases[i].says);
    int lines = 0;
    for (const char *c = out; *c; c++) lines += *c == '\n';
    EXPECT(lines == 1, "%s: %d lines:\n%s", cases[i].args, lines, out);
  }
}
