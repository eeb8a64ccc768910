/* The text tower trained jointly with the teacher ([text] joint = true) at tiny size: shards
 * with latents and captions but no text_emb, an encoders.h5 with only the latent scale. The
 * loss falls; every tower parameter gets a gradient and moves; the exported text_encoder.h5
 * and tokenizer/ reproduce the in-training (EMA) tower's embeddings bit for bit; a resumed run
 * repeats the uninterrupted one's losses bit for bit; bad [text] settings fail in
 * trainer_create with one clear line. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/tensorfile.h"
#include "data/shard.h"
#include "diffusion/text_joint.h"
#include "diffusion/trainer.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/weights.h"
#include "tests/test.h"

#define TOK "tests/fixtures/tokenizer"
static const char *const CAPTIONS[4] = {"a calm piano piece", "fast drums and bass", "a sad violin melody",
                                        "happy guitar music"};

/* 12 rows in two shards: mel 16 x 16, latents 4 x 8 x 8 (mean, logvar), captions cycling
 * through CAPTIONS; the latent mean of row i carries its caption's index, so that the text
 * is worth reading. encoders.h5 holds only vae_scaling_factor. */
static void make_data(const char *dir) {
  McmErr err;
  mkdir(dir, 0777);
  const int rows = 12, per = 8, F = 16, M = 16, C2 = 4, H = 8, W = 8;
  for (int first = 0, k = 0; first < rows; first += per, k++) {
    int n = rows - first < per ? rows - first : per;
    char path[600];
    snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, k);
    ShardInfo info = {F, M, 16000, 160};
    ShardWriter *w = shard_create(path, &info, &err);
    ASSERT(w, "%s", err.msg);
    float mel[16 * 16];
    for (int i = 0; i < n; i++) {
      rng_normal_host(77, (uint64_t)(first + i) * 1000, mel, F * M);
      ASSERT(shard_append(w, mel, CAPTIONS[(first + i) % 4], "gen.wav", 0, &err) == 0, "%s", err.msg);
    }
    ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
    const int64_t half = (int64_t)C2 / 2 * H * W;
    float *lat = malloc((size_t)n * 2 * half * sizeof *lat);
    rng_normal_host(78, (uint64_t)first * 100000, lat, (int64_t)n * 2 * half);
    for (int i = 0; i < n; i++)
      for (int64_t j = 0; j < half; j++) {
        float *m = lat + (int64_t)i * 2 * half;
        m[j] = 0.3f * m[j] + (float)((first + i) % 4) - 1.5f; /* mean: the caption's level */
        m[half + j] = -4.0f + 0.1f * m[half + j];              /* logvar */
      }
    ASSERT(shard_add_latents(path, lat, C2, H, W, &err) == 0, "%s", err.msg);
    free(lat);
  }
  char path[600];
  snprintf(path, sizeof path, "%s/encoders.h5", dir);
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float scale = 0.5f;
  ASSERT(tf_write(tf, "vae_scaling_factor", DT_F32, 0, NULL, &scale, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "format", "mcm-encoders 1", &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
}

static const char *setup(void) {
  static char dir[512];
  snprintf(dir, sizeof dir, "%s", test_tmpdir());
  char p[600];
  snprintf(p, sizeof p, "%s/data", dir);
  make_data(p);
  return dir;
}

/* configs/tiny.ini in teacher mode with a joint tower (hidden 16, 2 layers, 2 heads), the
 * paths of dir, run `run`, and extra --set assignments (later ones win). */
static int resolve(Config *cfg, const char *dir, const char *run, const char *const *extra, int n_extra, McmErr *err) {
  char a[3][700];
  const char *sets[40];
  int n = 0;
  const char *fixed[] = {"mel.n_mels=16", "prepare.segment_frames=16", "train.mode=teacher", "teacher.weights=",
                         "vae.weights=", "train.lr=3e-3", "train.cond_dropout=0.25", "train.weight_decay=0",
                         "train.teacher_ema_decay=0.5", "text.joint=true", "text.tokenizer=" TOK, "text.hidden=16",
                         "text.layers=2", "text.heads=2", "text.intermediate=32", "text.max_length=16"};
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) sets[n++] = fixed[i];
  snprintf(a[0], sizeof a[0], "data.train_shards=%s/data/shard_*.h5", dir);
  snprintf(a[1], sizeof a[1], "checkpoint.dir=%s/%s/ckpt", dir, run);
  snprintf(a[2], sizeof a[2], "run.out_dir=%s/%s", dir, run);
  for (int i = 0; i < 3; i++) sets[n++] = a[i];
  for (int i = 0; i < n_extra; i++) sets[n++] = extra[i];
  return config_resolve(cfg, "configs/tiny.ini", n, (char **)sets, err);
}

static Trainer *open_trainer(Ctx **ctx, const char *dir, const char *run, TrainResume r) {
  Config cfg;
  McmErr err;
  ASSERT(resolve(&cfg, dir, run, NULL, 0, &err) == 0, "%s", err.msg);
  *ctx = ctx_create_cpu((uint64_t)cfg.run.seed);
  Trainer *t = trainer_create(*ctx, &cfg, &(TrainerOptions){r, true}, &err);
  ASSERT(t, "%s", err.msg);
  return t;
}

static void steps(Trainer *t, int n, double *losses) {
  McmErr err;
  for (int i = 0; i < n; i++) {
    StepStats st;
    ASSERT(trainer_step(t, &st, &err) == 0, "%s", err.msg);
    ASSERT(!st.skipped, "step skipped");
    losses[i] = st.loss;
  }
}

static double mean(const double *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i];
  return s / n;
}

static float *read_all(TensorFile *tf, const char *name, int64_t *numel) {
  int ndim;
  int64_t shape[MCM_MAX_DIMS];
  DType stored;
  McmErr err;
  ASSERT(tf_info(tf, name, &ndim, shape, &stored, &err) == 0, "%s", err.msg);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  float *v = malloc((size_t)n * sizeof *v);
  ASSERT(tf_read(tf, name, ndim, shape, v, &err) == 0, "%s", err.msg);
  *numel = n;
  return v;
}

TEST(text_joint_loss_falls_and_the_tower_moves) {
  const char *dir = setup();
  Ctx *ctx;
  Trainer *t = open_trainer(&ctx, dir, "fall", TRAIN_RESUME_FRESH);
  McmErr err;
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg); /* step 0: the initial tower */
  enum { S = 40 };
  double l[S];
  steps(t, S, l);
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  double first = mean(l, 8), last = mean(l + S - 8, 8);
  EXPECT(last < 0.8 * first, "teacher loss with a joint text tower did not fall: first 8 %.4g, last 8 %.4g", first, last);
  trainer_destroy(t);
  ctx_destroy(ctx);

  /* Every tower tensor moved (weight decay is 0, so only gradients move it). */
  char p0[700], p1[700];
  snprintf(p0, sizeof p0, "%s/fall/ckpt/ckpt_0.h5", dir);
  snprintf(p1, sizeof p1, "%s/fall/ckpt/ckpt_%d.h5", dir, S);
  TensorFile *a = tf_open(p0, &err), *b = tf_open(p1, &err);
  ASSERT(a && b, "%s", err.msg);
  ctx = ctx_create_cpu(0);
  TextJoint *tj;
  Config cfg;
  ASSERT(resolve(&cfg, dir, "fall", NULL, 0, &err) == 0, "%s", err.msg);
  ASSERT((tj = text_joint_create(ctx, &cfg, &err)), "%s", err.msg);
  int moved = 0;
  for (int i = 0; i < tj->ps.n; i++) {
    char name[400];
    snprintf(name, sizeof name, "text/%s", tj->ps.p[i]->name);
    int64_t n0, n1;
    float *v0 = read_all(a, name, &n0), *v1 = read_all(b, name, &n1);
    ASSERT(n0 == n1, "%s", name);
    bool diff = false;
    for (int64_t j = 0; j < n0 && !diff; j++) diff = v0[j] != v1[j];
    EXPECT(diff, "%s did not change in %d steps", name, S);
    moved += diff;
    free(v0), free(v1);
  }
  printf("  %d of %d tower tensors moved\n", moved, tj->ps.n);
  text_joint_destroy(tj);
  tf_close(a), tf_close(b);
  ctx_destroy(ctx);
}

/* Every tower parameter gets a non-zero gradient from one embedding of a batch that has a
 * dropped row (""), through a non-uniform weighting of the outputs. */
TEST(text_joint_every_parameter_gets_a_gradient) {
  const char *dir = setup();
  Config cfg;
  McmErr err;
  ASSERT(resolve(&cfg, dir, "grad", NULL, 0, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(3);
  TextJoint *tj = text_joint_create(ctx, &cfg, &err);
  ASSERT(tj, "%s", err.msg);
  EXPECT(tj->cfg.vocab_size == 1911 && tj->cfg.projection_dim == 16 && tj->cfg.pad_token_id == 1,
         "config: V %d P %d pad %d", tj->cfg.vocab_size, tj->cfg.projection_dim, tj->cfg.pad_token_id);
  char *caps[3] = {(char *)CAPTIONS[0], (char *)CAPTIONS[1], (char *)CAPTIONS[2]};
  bool drop[3] = {false, true, false};
  Tensor *e = text_joint_embed(ctx, tj, caps, drop, 3, &err);
  ASSERT(e, "%s", err.msg);
  Tensor *w = tensor_new(ctx, DT_F32, SHAPE(3, 16));
  rng_normal(ctx, w);
  backward(ctx, op_sum(ctx, op_mul(ctx, e, w)));
  for (int i = 0; i < tj->ps.n; i++) {
    Tensor *g = grad_of(ctx, tj->ps.p[i]);
    EXPECT(g, "%s: no gradient", tj->ps.p[i]->name);
    if (!g) continue;
    int64_t n = g->numel;
    float *h = malloc((size_t)n * sizeof *h);
    tensor_to_host_f32(ctx, g, h);
    double s = 0;
    for (int64_t j = 0; j < n; j++) s += fabs(h[j]);
    EXPECT(s > 0 && isfinite(s), "%s: gradient sum |g| = %g", tj->ps.p[i]->name, s);
    free(h);
  }
  /* the dropped row is the embedding of "" */
  ctx_set_grad(ctx, false);
  const char *empty[1] = {""};
  Tensor *u = clap_text_embed(ctx, tj->tower, tj->tok, empty, 1, &err);
  ASSERT(u, "%s", err.msg);
  float eh[3 * 16], uh[16];
  tensor_to_host_f32(ctx, e, eh);
  tensor_to_host_f32(ctx, u, uh);
  for (int j = 0; j < 16; j++) EXPECT(eh[16 + j] == uh[j], "dropped row [%d]: %g vs %g", j, eh[16 + j], uh[j]);
  text_joint_destroy(tj);
  ctx_destroy(ctx);
}

/* The export loads with clap_text_load (its config attribute gives the sizes) and, with the
 * copied tokenizer, gives the in-training EMA tower's embeddings bit for bit. */
TEST(text_joint_export_loads_and_matches) {
  const char *dir = setup();
  Ctx *ctx;
  Trainer *t = open_trainer(&ctx, dir, "exp", TRAIN_RESUME_FRESH);
  double l[6];
  steps(t, 6, l);
  McmErr err;
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  ctx_destroy(ctx);
  char path[700], vocab[700], merges[700], ck[700];
  snprintf(path, sizeof path, "%s/exp/text_encoder.h5", dir);
  snprintf(vocab, sizeof vocab, "%s/exp/tokenizer/vocab.json", dir);
  snprintf(merges, sizeof merges, "%s/exp/tokenizer/merges.txt", dir);
  snprintf(ck, sizeof ck, "%s/exp/ckpt/ckpt_6.h5", dir);
  ctx = ctx_create_cpu(0);
  ctx_set_grad(ctx, false);
  ClapTextConfig tc;
  ASSERT(clap_text_config_from_weights(path, &tc, &err) == 0, "%s", err.msg);
  EXPECT(tc.hidden_size == 16 && tc.num_hidden_layers == 2 && tc.projection_dim == 16 && tc.vocab_size == 1911,
         "exported config: D %d L %d P %d V %d", tc.hidden_size, tc.num_hidden_layers, tc.projection_dim, tc.vocab_size);
  ParamSet ps;
  params_init(&ps, "");
  ClapText *m = clap_text_create(ctx, &tc, &ps);
  ASSERT(clap_text_load(ctx, m, path, &err) == 0, "%s", err.msg);
  Tokenizer *tok = tokenizer_load(vocab, merges, &err);
  ASSERT(tok, "%s", err.msg);
  /* the in-training EMA tower, from the checkpoint of the same step */
  Config cfg;
  ASSERT(resolve(&cfg, dir, "exp", NULL, 0, &err) == 0, "%s", err.msg);
  TextJoint *tj = text_joint_create(ctx, &cfg, &err);
  ASSERT(tj, "%s", err.msg);
  TensorFile *tf = tf_open(ck, &err);
  ASSERT(tf && text_joint_load(ctx, tj, tf, &err) == 0, "%s", err.msg);
  tf_close(tf);
  const char *prompts[3] = {CAPTIONS[0], "", CAPTIONS[3]};
  Tensor *a = clap_text_embed(ctx, m, tok, prompts, 3, &err), *b = clap_text_embed(ctx, tj->ema, tj->tok, prompts, 3, &err);
  ASSERT(a && b, "%s", err.msg);
  float ah[48], bh[48];
  tensor_to_host_f32(ctx, a, ah);
  tensor_to_host_f32(ctx, b, bh);
  for (int j = 0; j < 48; j++) EXPECT(ah[j] == bh[j], "embedding [%d]: exported %.9g, in training %.9g", j, ah[j], bh[j]);
  tokenizer_free(tok);
  text_joint_destroy(tj);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST(text_joint_resume_is_bit_identical) {
  const char *dir = setup();
  enum { S = 6, K = 3 };
  double a[S], b[S];
  Ctx *ctx;
  Trainer *t = open_trainer(&ctx, dir, "whole", TRAIN_RESUME_FRESH);
  steps(t, S, a);
  trainer_destroy(t);
  ctx_destroy(ctx);
  McmErr err;
  t = open_trainer(&ctx, dir, "split", TRAIN_RESUME_FRESH);
  steps(t, K, b);
  ASSERT(trainer_save(t, &err) == 0, "%s", err.msg);
  trainer_destroy(t);
  ctx_destroy(ctx);
  t = open_trainer(&ctx, dir, "split", TRAIN_RESUME_REQUIRE);
  EXPECT(trainer_step_count(t) == K, "resumed at step %lld", (long long)trainer_step_count(t));
  steps(t, S - K, b + K);
  trainer_destroy(t);
  ctx_destroy(ctx);
  for (int i = 0; i < S; i++) EXPECT(a[i] == b[i], "step %d: %.9g vs %.9g (not bit-identical)", i + 1, a[i], b[i]);
}

static void expect_create_error(const char *dir, const char *run, const char *const *extra, int n, const char *want) {
  Config cfg;
  McmErr err = {{0}};
  ASSERT(resolve(&cfg, dir, run, extra, n, &err) == 0, "%s", err.msg);
  Ctx *ctx = ctx_create_cpu(0);
  Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
  EXPECT(!t, "%s: trainer_create should fail", want);
  EXPECT(strstr(err.msg, want), "expected '%s' in: %s", want, err.msg);
  trainer_destroy(t);
  ctx_destroy(ctx);
}

TEST(text_joint_bad_configs_fail_before_training) {
  const char *dir = setup();
  expect_create_error(dir, "b1", (const char *[]){"text.tokenizer="}, 1, "text.joint = true needs text.tokenizer");
  expect_create_error(dir, "b2", (const char *[]){"text.vocab_size=1000"}, 1,
                      "has 1911 ids, more than text.vocab_size = 1000");
  expect_create_error(dir, "b3", (const char *[]){"text.projection_dim=8"}, 1,
                      "text.projection_dim = 8 but unet.context_dim = 16");
  expect_create_error(dir, "b4", (const char *[]){"text.tokenizer=/nonexistent"}, 1, "text.tokenizer:");
  expect_create_error(dir, "b5", (const char *[]){"train.mode=distill", "teacher.weights=x.h5"}, 2,
                      "text.joint = true needs train.mode = teacher");
  expect_create_error(dir, "b6", (const char *[]){"text.heads=3"}, 1, "[text]");
}

/* Training samples read the tower's EMA through the bundle's text encoder: a bundle whose
 * text encoder has the tower's shapes samples (and leaves the losses alone); another one is
 * refused at set-up. */
TEST(text_joint_samples_use_the_tower) {
  const char *dir = setup();
  Config cfg;
  McmErr err = {{0}};
  ASSERT(resolve(&cfg, dir, "cfg", NULL, 0, &err) == 0, "%s", err.msg);
  Tokenizer *tok = tokenizer_load(TOK "/vocab.json", TOK "/merges.txt", &err);
  ASSERT(tok, "%s", err.msg);
  RandomBundle rb = random_bundle_tiny(TOK);
  ASSERT(text_joint_config(&cfg, tok, &rb.text, &err) == 0, "%s", err.msg);
  tokenizer_free(tok);
  UNetConfig *u = &rb.unet; /* configs/tiny.ini's UNet */
  u->in_channels = u->out_channels = 2;
  u->block_out_channels[0] = 16, u->block_out_channels[1] = 32;
  u->norm_groups = 8, u->num_head_channels = 16;
  u->time_proj_dim = 16, u->time_embed_dim = 64, u->class_embed_in = 16;
  rb.sample_size = 8;
  rb.vae.latent_channels = 2;
  char good[700], bad[700], prompts[700], s1[800], s2[800];
  snprintf(good, sizeof good, "%s/bundle_good", dir);
  snprintf(bad, sizeof bad, "%s/bundle_bad", dir);
  ASSERT(random_bundle_write(good, &rb, &err) == 0, "%s", err.msg);
  rb.text.hidden_size = 32;
  ASSERT(random_bundle_write(bad, &rb, &err) == 0, "%s", err.msg);
  snprintf(prompts, sizeof prompts, "%s/prompts.txt", dir);
  FILE *f = fopen(prompts, "w");
  fputs("calm piano\n", f);
  fclose(f);
  snprintf(s2, sizeof s2, "sample.prompts=%s", prompts);
  for (int pass = 0; pass < 2; pass++) {
    snprintf(s1, sizeof s1, "sample.bundle=%s", pass ? bad : good);
    const char *extra[] = {s1, s2, "sample.every=2", "train.steps=2"};
    ASSERT(resolve(&cfg, dir, pass ? "s_bad" : "s_good", extra, 4, &err) == 0, "%s", err.msg);
    Ctx *ctx = ctx_create_cpu(0);
    Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){TRAIN_RESUME_FRESH, true}, &err);
    if (pass == 0) {
      ASSERT(t, "%s", err.msg);
      ASSERT(trainer_run(t, &err) == 0, "%s", err.msg);
      char p[900];
      snprintf(p, sizeof p, "%s/s_good/samples/step_2/000_calm-piano_seed0.wav", dir);
      struct stat st;
      EXPECT(stat(p, &st) == 0 && st.st_size > 44, "no sample at %s", p);
    } else {
      EXPECT(!t && strstr(err.msg, "its text encoder is not the tower of [text]"), "expected a refusal: %s",
             t ? "(created)" : err.msg);
    }
    trainer_destroy(t);
    ctx_destroy(ctx);
  }
}
