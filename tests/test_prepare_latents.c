/* Tests for ./prepare with weights (data/prepare.h, "Latents and text embeddings"), on the
 * tiny fixture VAE (model_vae_weights_tiny.h5: f = 2, L = 2) and CLAP text tower
 * (model_clap_text_weights_e.h5 with tests/fixtures/tokenizer: P = 8): stored latents equal
 * vae_encode of the stored mel, text embeddings equal clap_text_embed of the captions, the
 * unconditional embedding equals clap_text_embed(""), --add-latents on existing shards (and
 * carrying the other encoder's entries of encoders.h5 over), weights that do not fit
 * refused before anything is written, and a failure part-way leaving the shard as it was.
 * Segments are 64 frames (0.64 s) to keep the models' work small. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/tensorfile.h"
#include "data/audio.h"
#include "data/manifest.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "kernels/tape.h"
#include "models/clap_text.h"
#include "models/vae.h"
#include "tests/test.h"

#define RATE 16000
#define FRAMES 64 /* segment_frames: 0.64 s windows */
#define VAE_W "tests/fixtures/model_vae_weights_tiny.h5"
#define TEXT_W "tests/fixtures/model_clap_text_weights_e.h5"
#define TEXT_W_SMALL_VOCAB "tests/fixtures/model_clap_text_weights_a.h5" /* vocab 100 < the tokenizer's 1911 */
#define TOK "tests/fixtures/tokenizer"
#define TOL 1e-5 /* relative L2: the same ops on the same CPU, only the batch differs */

static const char *const CAPTIONS[3] = {
    "A calm piano melody in C major, slow tempo.",
    "Caf\xc3\xa9 jazz \xe2\x80\x93 saxophone, brushed drums \xf0\x9f\x8e\xb7",
    /* Longer than the 38 tokens the fixture tower's positions allow: truncated. */
    "An energetic rock song with distorted electric guitars, a driving bass line, loud drums, "
    "a fast tempo, a catchy chorus, a long solo in the middle and a big ending with cymbals.",
};

/* ---------------------------------------------------------------- helpers */

static float *music(int64_t n, uint32_t seed) {
  float *x = MALLOC_CHECK((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) {
    double t = (double)i / RATE;
    x[i] = (float)(0.3 * sin(2 * M_PI * (180 + 40 * seed) * t) + 0.2 * sin(2 * M_PI * (500 + 70 * seed) * t) +
                   0.05 * sin(2 * M_PI * 3100 * t * (1 + 0.1 * seed)));
  }
  return x;
}

/* Three 1.5 s WAVs (two full 0.64 s windows each; the 0.22 s tail is dropped) and a CSV. */
static const char *make_dataset(void) {
  char csv[4096] = "path,caption\n";
  for (int i = 0; i < 3; i++) {
    char name[32];
    snprintf(name, sizeof name, "clip%d.wav", i);
    float *x = music(3 * RATE / 2, (uint32_t)i);
    McmErr err = {{0}};
    ASSERT(audio_write(TEST_PATH(name), x, 3 * RATE / 2, RATE, AUDIO_WAV16, NULL, &err) == 0, "%s", err.msg);
    free(x);
    size_t n = strlen(csv);
    snprintf(csv + n, sizeof csv - n, "%s,\"%s\"\n", name, CAPTIONS[i]);
  }
  static char path[512];
  test_path(path, sizeof path, "m.csv");
  FILE *f = fopen(path, "w");
  ASSERT(f && fputs(csv, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
  return path;
}

static PrepareOptions options(const char *out_dir) {
  Config cfg;
  config_defaults(&cfg);
  PrepareOptions o;
  prepare_options_from_config(&cfg, &o);
  o.segment_frames = FRAMES;
  o.hop_frames = FRAMES;
  o.min_seconds = 0.1;
  o.shard_size = 4; /* six rows: shards of 4 and 2 */
  o.threads = 1;
  o.quiet = true;
  o.out_dir = out_dir;
  o.batch = 3; /* batches that straddle nothing and one that is short */
  return o;
}

static int run_prepare(const PrepareOptions *o, PrepareStats *st, McmErr *err) {
  Manifest m = {0};
  ASSERT(manifest_read(TEST_PATH("m.csv"), &m, err) == 0, "manifest: %s", err->msg);
  int rc = prepare_run(&m, o, st, err);
  manifest_free(&m);
  return rc;
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static unsigned char *file_bytes(const char *path, long *n) {
  FILE *f = fopen(path, "rb");
  ASSERT(f, "cannot read %s", path);
  fseek(f, 0, SEEK_END);
  *n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = MALLOC_CHECK((size_t)*n + 1);
  ASSERT(fread(b, 1, (size_t)*n, f) == (size_t)*n, "short read");
  fclose(f);
  return b;
}

static bool same_bytes(const unsigned char *a, long na, const char *path) {
  long nb;
  unsigned char *b = file_bytes(path, &nb);
  bool same = na == nb && !memcmp(a, b, (size_t)na);
  free(b);
  return same;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
  return sqrt(num / (den > 0 ? den : 1));
}

/* The reference models, built as the fixtures were (see test_model_vae.c / _clap_text.c). */
static Vae *tiny_vae(Ctx *ctx, ParamSet *ps) {
  VaeConfig c = vae_config_musicldm();
  c.n_blocks = 2, c.block_out_channels[0] = 4, c.block_out_channels[1] = 8;
  c.layers_per_block = 1, c.norm_num_groups = 2, c.latent_channels = 2;
  params_init(ps, "");
  Vae *v = vae_create(ctx, &c, ps);
  McmErr err;
  ASSERT(vae_load(ctx, v, VAE_W, &err) == 0, "%s", err.msg);
  return v;
}

static ClapText *tiny_clap(Ctx *ctx, ParamSet *ps) {
  ClapTextConfig c = {.vocab_size = 1911, .hidden_size = 16, .num_hidden_layers = 1, .num_attention_heads = 2,
                      .intermediate_size = 32, .max_position_embeddings = 40, .type_vocab_size = 1,
                      .pad_token_id = 1, .projection_dim = 8, .layer_norm_eps = 1e-12f,
                      .max_length = 38 /* 40 positions - pad 1 - 1, as ./prepare truncates */};
  params_init(ps, "");
  ClapText *m = clap_text_create(ctx, &c, ps);
  McmErr err;
  ASSERT(clap_text_load(ctx, m, TEXT_W, &err) == 0, "%s", err.msg);
  return m;
}

static Tokenizer *tokenizer(void) {
  McmErr err;
  Tokenizer *t = tokenizer_load(TOK "/vocab.json", TOK "/merges.txt", &err);
  ASSERT(t, "%s", err.msg);
  return t;
}

/* Every row of every shard in dir against the reference models run here, one row at a
 * time; returns the rows checked. want_lat / want_emb: whether the datasets must exist. */
static int64_t check_shards(const char *dir, int n_shards, bool want_lat, bool want_emb, double *worst) {
  Ctx *ctx = ctx_create_cpu(0);
  ctx_set_grad(ctx, false);
  ParamSet vps, tps;
  Vae *vae = tiny_vae(ctx, &vps);
  ClapText *clap = tiny_clap(ctx, &tps);
  Tokenizer *tok = tokenizer();
  int64_t rows = 0;
  for (int k = 0; k < n_shards; k++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, k);
    McmErr err;
    Shard *s = shard_open(path, &err);
    ASSERT(s, "%s", err.msg);
    int C = 0, T = 0, F = 0;
    EXPECT(shard_latent_dims(s, &C, &T, &F) == want_lat, "%s: latent present %d", path, !want_lat);
    if (want_lat) EXPECT(C == 4 && T == FRAMES / 2 && F == 32, "latent row (%d, %d, %d), want (4, 32, 32)", C, T, F);
    EXPECT(shard_text_emb_dim(s) == (want_emb ? 8 : 0), "text_emb dim %d", shard_text_emb_dim(s));
    for (int64_t i = 0; i < shard_count(s); i++, rows++) {
      float mel[FRAMES * 64], lat[4 * 32 * 32], emb[8], ref_lat[4 * 32 * 32], ref_emb[8];
      char *caption;
      ASSERT(shard_read(s, i, mel, &caption, &err) == 0, "%s", err.msg);
      if (want_lat) {
        ASSERT(shard_read_latent(s, i, lat, &err) == 0, "%s", err.msg);
        Tensor *x = tensor_new(ctx, DT_F32, SHAPE(1, 1, FRAMES, 64));
        tensor_from_host_f32(ctx, x, mel);
        VaeMoments m = vae_encode(ctx, vae, x);
        tensor_to_host_f32(ctx, m.mean, ref_lat);              /* channels 0..L-1 */
        tensor_to_host_f32(ctx, m.logvar, ref_lat + 2 * 32 * 32); /* channels L..2L-1 */
        double e = rel_l2(lat, ref_lat, 4 * 32 * 32);
        EXPECT(e <= TOL, "%s row %lld: latent rel L2 %.3g", path, (long long)i, e);
        if (e > *worst) *worst = e;
      }
      if (want_emb) {
        ASSERT(shard_read_text_emb(s, i, emb, &err) == 0, "%s", err.msg);
        const char *p[1] = {caption};
        Tensor *e_ref = clap_text_embed(ctx, clap, tok, p, 1, &err);
        ASSERT(e_ref, "%s", err.msg);
        tensor_to_host_f32(ctx, e_ref, ref_emb);
        double e = rel_l2(emb, ref_emb, 8);
        EXPECT(e <= TOL, "%s row %lld ('%s'): text_emb rel L2 %.3g", path, (long long)i, caption, e);
        if (e > *worst) *worst = e;
      }
      free(caption);
      ctx_step_reset(ctx);
    }
    shard_close(s);
  }
  tokenizer_free(tok);
  params_free(&vps);
  params_free(&tps);
  ctx_destroy(ctx);
  return rows;
}

/* encoders.h5: the scale and / or clap_text_embed(""), as asked. */
static void check_encoders_file(const char *dir, bool want_scale, bool want_uncond) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, PREPARE_ENCODERS_FILE);
  McmErr err;
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  char *format = NULL;
  ASSERT(tf_get_attr(tf, "format", &format, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(format, PREPARE_ENCODERS_FORMAT), "format '%s'", format);
  free(format);
  EXPECT(tf_has(tf, "vae_scaling_factor") == want_scale, "vae_scaling_factor present: %d", !want_scale);
  if (want_scale) {
    float s = 0;
    ASSERT(tf_read(tf, "vae_scaling_factor", 0, NULL, &s, &err) == 0, "%s", err.msg);
    EXPECT(s == 0.25f, "the tiny VAE's config says 0.25, got %g", s);
  }
  EXPECT(tf_has(tf, "uncond_text_emb") == want_uncond, "uncond_text_emb present: %d", !want_uncond);
  if (want_uncond) {
    float u[8], ref[8];
    ASSERT(tf_read(tf, "uncond_text_emb", 1, (int64_t[]){8}, u, &err) == 0, "%s", err.msg);
    Ctx *ctx = ctx_create_cpu(0);
    ParamSet ps;
    ClapText *clap = tiny_clap(ctx, &ps);
    Tokenizer *tok = tokenizer();
    Tensor *e = clap_text_embed(ctx, clap, tok, (const char *const[]){""}, 1, &err);
    ASSERT(e, "%s", err.msg);
    tensor_to_host_f32(ctx, e, ref);
    EXPECT(rel_l2(u, ref, 8) <= TOL, "uncond rel L2 %.3g", rel_l2(u, ref, 8));
    tokenizer_free(tok);
    params_free(&ps);
    ctx_destroy(ctx);
  }
  tf_close(tf);
}

/* A copy of the weights file src whose config attribute has `from` replaced by `to`. */
static void weights_with_config(const char *src, const char *dst, const char *from, const char *to) {
  McmErr err;
  TensorFile *in = tf_open(src, &err), *out = tf_create(dst, &err);
  ASSERT(in && out, "%s", err.msg);
  char **names;
  int n;
  ASSERT(tf_names(in, &names, &n, &err) == 0, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    int nd;
    int64_t shape[MCM_MAX_DIMS], count = 1;
    DType dt;
    ASSERT(tf_info(in, names[i], &nd, shape, &dt, &err) == 0, "%s", err.msg);
    for (int d = 0; d < nd; d++) count *= shape[d];
    float *x = MALLOC_CHECK((size_t)(count + 1) * sizeof(float));
    ASSERT(tf_read(in, names[i], nd, shape, x, &err) == 0, "%s", err.msg);
    ASSERT(tf_write(out, names[i], DT_F32, nd, shape, x, &err) == 0, "%s", err.msg);
    free(x);
  }
  tf_free_names(names, n);
  char *config, *component;
  ASSERT(tf_get_attr(in, "config", &config, &err) == 0 && tf_get_attr(in, "component", &component, &err) == 0, "%s",
         err.msg);
  char *at = strstr(config, from);
  ASSERT(at, "'%s' not in the config", from);
  char edited[8192];
  snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - config), config, to, at + strlen(from));
  ASSERT(tf_set_attr(out, "config", edited, &err) == 0 && tf_set_attr(out, "component", component, &err) == 0, "%s",
         err.msg);
  free(config);
  free(component);
  tf_close(in);
  ASSERT(tf_commit(out, &err) == 0, "%s", err.msg);
}

/* ---------------------------------------------------------------- tests */

TEST(prepare_latents_and_text_embeddings_match_the_models) {
  make_dataset();
  PrepareOptions o = options(TEST_PATH("out"));
  o.vae = VAE_W, o.text_encoder = TEXT_W, o.tokenizer = TOK;
  PrepareStats st;
  McmErr err = {{0}};
  ASSERT(run_prepare(&o, &st, &err) == 0, "prepare_run: %s", err.msg);
  EXPECT(st.segments == 6 && st.shards == 2, "%lld segments in %d shards", (long long)st.segments, st.shards);
  EXPECT(st.encoded_rows == 6 && st.encoded_shards == 2, "encoded %lld rows, %d shards", (long long)st.encoded_rows,
         st.encoded_shards);
  double worst = 0;
  EXPECT(check_shards(TEST_PATH("out"), 2, true, true, &worst) == 6, "rows");
  printf("  latents and text embeddings vs the models: max rel L2 %.2g\n", worst);
  check_encoders_file(TEST_PATH("out"), true, true);
  EXPECT(!exists(TEST_PATH("out/shard_00000.h5.enc.tmp")) && !exists(TEST_PATH("out/shard_00001.h5.enc.tmp")),
         "no temporaries left");
  long n;
  char *summary = (char *)file_bytes(TEST_PATH("out/prepare_summary.txt"), &n);
  summary[n] = 0;
  EXPECT_STR_CONTAINS(summary, "encoded_rows = 6\n");
  EXPECT_STR_CONTAINS(summary, "encode_rows_per_second = ");
  EXPECT_STR_CONTAINS(summary, "encode_device = cpu");
  free(summary);
}

TEST(prepare_add_latents_on_existing_shards) {
  make_dataset();
  PrepareOptions o = options(TEST_PATH("out"));
  PrepareStats st;
  McmErr err = {{0}};
  ASSERT(run_prepare(&o, &st, &err) == 0, "prepare_run: %s", err.msg);
  EXPECT(!exists(TEST_PATH("out/" PREPARE_ENCODERS_FILE)), "no encoders.h5 without encoders");
  char mel0[1024];
  snprintf(mel0, sizeof mel0, "%s", TEST_PATH("out/shard_00000.h5"));
  Shard *s = shard_open(mel0, &err);
  ASSERT(s, "%s", err.msg);
  float before[FRAMES * 64], after[FRAMES * 64];
  ASSERT(shard_read(s, 3, before, NULL, &err) == 0, "%s", err.msg);
  shard_close(s);

  /* The VAE alone, then the text encoder alone: the second keeps the first's entries. */
  o.vae = VAE_W;
  ASSERT(prepare_add_latents(&o, &st, &err) == 0, "--add-latents --vae: %s", err.msg);
  EXPECT(st.encoded_rows == 6 && st.encoded_shards == 2, "encoded %lld rows", (long long)st.encoded_rows);
  double worst = 0;
  EXPECT(check_shards(TEST_PATH("out"), 2, true, false, &worst) == 6, "rows");
  check_encoders_file(TEST_PATH("out"), true, false);

  o.vae = NULL, o.text_encoder = TEXT_W, o.tokenizer = TOK;
  o.batch = 0; /* the default */
  ASSERT(prepare_add_latents(&o, &st, &err) == 0, "--add-latents --text-encoder: %s", err.msg);
  EXPECT(check_shards(TEST_PATH("out"), 2, true, true, &worst) == 6, "rows");
  check_encoders_file(TEST_PATH("out"), true, true);
  printf("  --add-latents vs the models: max rel L2 %.2g\n", worst);

  s = shard_open(mel0, &err);
  ASSERT(s, "%s", err.msg);
  ASSERT(shard_read(s, 3, after, NULL, &err) == 0, "%s", err.msg);
  shard_close(s);
  EXPECT(!memcmp(before, after, sizeof before), "the mel is untouched");

  /* Both again (replacing what is there) on the same shards: the same values. */
  o.vae = VAE_W;
  ASSERT(prepare_add_latents(&o, &st, &err) == 0, "again: %s", err.msg);
  EXPECT(check_shards(TEST_PATH("out"), 2, true, true, &worst) == 6, "rows");
}

/* A refused run: -1, not started, the message names what, nothing created in dir. */
static void expect_refused(PrepareOptions o, const char *what) {
  PrepareStats st;
  McmErr err = {{0}};
  EXPECT(run_prepare(&o, &st, &err) == -1, "refused (%s)", what);
  EXPECT(!st.started, "not started (%s)", what);
  EXPECT_STR_CONTAINS(err.msg, what);
  EXPECT(!strchr(err.msg, '\n'), "one line: %s", err.msg);
  EXPECT(!exists(o.out_dir), "nothing written for '%s'", what);
}

TEST(prepare_refuses_weights_that_do_not_fit_before_writing) {
  make_dataset();
  PrepareOptions o = options(TEST_PATH("out"));
  o.vae = VAE_W;
  o.segment_frames = o.hop_frames = 63;
  expect_refused(o, "the VAE downsamples by 2, but the mel rows are 63 frames x 64 mels");
  o = options(TEST_PATH("out"));
  o.vae = VAE_W, o.mel.n_mels = 63;
  expect_refused(o, "multiples of 2");

  weights_with_config(VAE_W, TEST_PATH("vae2.h5"), "\"in_channels\": 1", "\"in_channels\": 2");
  o = options(TEST_PATH("out"));
  o.vae = TEST_PATH("vae2.h5");
  expect_refused(o, "the VAE takes 2 input channels; a log-mel is one");
  weights_with_config(VAE_W, TEST_PATH("vae3.h5"), "\"latent_channels\": 2", "\"latent_channels\": 3");
  o.vae = TEST_PATH("vae3.h5");
  /* A config that disagrees with the tensors: vae_load names the first tensor. */
  expect_refused(o, "tensor 'encoder.conv_out.weight': expected shape [6, 8, 3, 3], file has [4, 8, 3, 3]");
  weights_with_config(VAE_W, TEST_PATH("vae4.h5"), "\"block_out_channels\": [\n    4,", "\"block_out_channels\": [\n    4, 4,");
  o.vae = TEST_PATH("vae4.h5");
  expect_refused(o, "vae4.h5");

  o.vae = TEST_PATH("missing.h5");
  expect_refused(o, "VAE weights: ");
  FILE *f = fopen(TEST_PATH("text.h5"), "w");
  fputs("not HDF5 at all\n", f);
  fclose(f);
  o.vae = TEST_PATH("text.h5");
  expect_refused(o, "text.h5");

  o = options(TEST_PATH("out"));
  o.text_encoder = TEXT_W;
  expect_refused(o, "needs its tokenizer");
  o.text_encoder = TEXT_W_SMALL_VOCAB, o.tokenizer = TOK;
  expect_refused(o, "do not belong together");
  o.text_encoder = TEXT_W, o.tokenizer = TEST_PATH("no_such_dir");
  expect_refused(o, "vocab.json");
  o.text_encoder = VAE_W;
  o.tokenizer = TOK;
  expect_refused(o, "holds 'vae' weights, not the text encoder's");
  o = options(TEST_PATH("out"));
  o.vae = VAE_W, o.device = "gpu";
  expect_refused(o, "gpu");
}

TEST(prepare_add_latents_refusals_leave_the_shards_as_they_were) {
  make_dataset();
  PrepareOptions o = options(TEST_PATH("out"));
  o.mel.n_mels = 63; /* not a multiple of the VAE's 2 */
  PrepareStats st;
  McmErr err = {{0}};
  ASSERT(run_prepare(&o, &st, &err) == 0, "prepare_run: %s", err.msg);
  long n0;
  unsigned char *b0 = file_bytes(TEST_PATH("out/shard_00000.h5"), &n0);
  o.vae = VAE_W;
  EXPECT(prepare_add_latents(&o, &st, &err) == -1 && !st.started, "refused");
  EXPECT_STR_CONTAINS(err.msg, "the VAE downsamples by 2, but the mel rows are 64 frames x 63 mels");
  EXPECT(same_bytes(b0, n0, TEST_PATH("out/shard_00000.h5")), "shard unchanged");
  free(b0);

  o.vae = NULL;
  EXPECT(prepare_add_latents(&o, &st, &err) == -1 && !st.started, "nothing to add");
  EXPECT_STR_CONTAINS(err.msg, "nothing to add");
  o = options(TEST_PATH("empty"));
  o.vae = VAE_W;
  mkdir(TEST_PATH("empty"), 0777);
  EXPECT(prepare_add_latents(&o, &st, &err) == -1 && !st.started, "no shards");
  EXPECT_STR_CONTAINS(err.msg, "holds no shard_NNNNN.h5");
}

TEST(prepare_add_latents_failure_part_way_is_atomic_per_shard) {
  make_dataset();
  PrepareOptions o = options(TEST_PATH("out"));
  PrepareStats st;
  McmErr err = {{0}};
  ASSERT(run_prepare(&o, &st, &err) == 0, "prepare_run: %s", err.msg);
  /* Text embeddings first, so that encoders.h5 has something to lose. */
  o.text_encoder = TEXT_W, o.tokenizer = TOK;
  ASSERT(prepare_add_latents(&o, &st, &err) == 0, "%s", err.msg);
  long n0, n1;
  unsigned char *b0 = file_bytes(TEST_PATH("out/shard_00000.h5"), &n0);
  unsigned char *b1 = file_bytes(TEST_PATH("out/shard_00001.h5"), &n1);

  /* The second shard's private copy cannot be made: the first shard is done, the second
   * untouched, encoders.h5 keeps only what this run did not recompute. */
  ASSERT(mkdir(TEST_PATH("out/shard_00001.h5.enc.tmp"), 0777) == 0, "mkdir");
  o.text_encoder = o.tokenizer = NULL, o.vae = VAE_W;
  EXPECT(prepare_add_latents(&o, &st, &err) == -1 && st.started, "fails part-way");
  EXPECT_STR_CONTAINS(err.msg, "shard_00001.h5");
  EXPECT_STR_CONTAINS(err.msg, "(the shard is unchanged)");
  EXPECT(st.encoded_shards == 1, "one shard done, got %d", st.encoded_shards);
  EXPECT(same_bytes(b1, n1, TEST_PATH("out/shard_00001.h5")), "the failing shard is unchanged");
  EXPECT(!same_bytes(b0, n0, TEST_PATH("out/shard_00000.h5")), "the first shard was rewritten");
  Shard *s = shard_open(TEST_PATH("out/shard_00000.h5"), &err);
  ASSERT(s, "%s", err.msg);
  int C, T, F;
  EXPECT(shard_latent_dims(s, &C, &T, &F) && shard_text_emb_dim(s) == 8, "the first shard is complete");
  shard_close(s);
  check_encoders_file(TEST_PATH("out"), false, true);
  rmdir(TEST_PATH("out/shard_00001.h5.enc.tmp"));

  /* A failure after the copy was made (shard_add_latents cannot write its temporary): the
   * shard is untouched and the copy removed. */
  free(b0);
  b0 = file_bytes(TEST_PATH("out/shard_00000.h5"), &n0);
  ASSERT(mkdir(TEST_PATH("out/shard_00000.h5.enc.tmp.tmp"), 0777) == 0, "mkdir");
  EXPECT(prepare_add_latents(&o, &st, &err) == -1 && st.started && st.encoded_shards == 0, "fails at once");
  EXPECT_STR_CONTAINS(err.msg, "(the shard is unchanged)");
  EXPECT(same_bytes(b0, n0, TEST_PATH("out/shard_00000.h5")), "shard 0 unchanged");
  EXPECT(same_bytes(b1, n1, TEST_PATH("out/shard_00001.h5")), "shard 1 unchanged");
  EXPECT(!exists(TEST_PATH("out/shard_00000.h5.enc.tmp")), "the copy is removed");
  check_encoders_file(TEST_PATH("out"), false, true);
  rmdir(TEST_PATH("out/shard_00000.h5.enc.tmp.tmp"));

  /* Unobstructed, the same command completes every shard. */
  ASSERT(prepare_add_latents(&o, &st, &err) == 0, "%s", err.msg);
  double worst = 0;
  EXPECT(check_shards(TEST_PATH("out"), 2, true, true, &worst) == 6, "rows");
  check_encoders_file(TEST_PATH("out"), true, true);
  free(b0);
  free(b1);
}

/* "<bin dir>/<cmd>" with stderr folded into out; the exit status (tests/test.h). */
#define run(cmd, out, size) test_run_cmd((out), (size), "%s", (cmd))

TEST(prepare_cli_with_weights) {
  static char out[1 << 16];
  char cwd[512], cmd[8192];
  ASSERT(getcwd(cwd, sizeof cwd), "getcwd");
  const char *man = make_dataset(), *dir = TEST_PATH("o");
  char common[512];
  snprintf(common, sizeof common,
           "--set prepare.segment_frames=64 --set prepare.hop_frames=64 --set prepare.min_seconds=0.1 "
           "--set prepare.shard_size=4 --threads 1 --device cpu");
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s %s --vae %s/%s --text-encoder %s/%s --tokenizer %s/%s",
           man, dir, common, cwd, VAE_W, cwd, TEXT_W, cwd, TOK);
  EXPECT(run(cmd, out, sizeof out) == 0, "exit 0: %s", out);
  EXPECT_STR_CONTAINS(out, "encoded_rows = 6");
  EXPECT_STR_CONTAINS(out, "encode_audio_hours_per_minute = ");
  double worst = 0;
  EXPECT(check_shards(dir, 2, true, true, &worst) == 6, "rows");

  /* --add-latents: only the VAE this time; the text embeddings stay. */
  snprintf(cmd, sizeof cmd, "./prepare --add-latents --out %s --vae %s/%s --batch 5 --device cpu", dir, cwd, VAE_W);
  EXPECT(run(cmd, out, sizeof out) == 0, "exit 0: %s", out);
  EXPECT_STR_CONTAINS(out, "# mcm prepare --add-latents: 2 shards, 6 rows");
  EXPECT_STR_CONTAINS(out, "encoded_rows = 6");
  check_encoders_file(dir, true, true);

  /* Usage errors: 2, one line. */
  snprintf(cmd, sizeof cmd, "./prepare --add-latents --out %s --manifest %s --vae %s", dir, man, VAE_W);
  EXPECT(run(cmd, out, sizeof out) == 2, "--add-latents with --manifest -> 2: %s", out);
  EXPECT_STR_CONTAINS(out, "it reads no manifest");
  snprintf(cmd, sizeof cmd, "./prepare --add-latents --out %s", dir);
  EXPECT(run(cmd, out, sizeof out) == 2, "nothing to add -> 2: %s", out);
  EXPECT_STR_CONTAINS(out, "nothing to add");
  snprintf(cmd, sizeof cmd, "./prepare --add-latents --out %s --vae %s/%s", TEST_PATH("nowhere"), cwd, VAE_W);
  EXPECT(run(cmd, out, sizeof out) == 2, "no directory -> 2: %s", out);
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s %s --batch 0 --vae %s", man, TEST_PATH("o2"), common,
           VAE_W);
  EXPECT(run(cmd, out, sizeof out) == 2, "--batch 0 -> 2: %s", out);
  snprintf(cmd, sizeof cmd, "./prepare --manifest %s --out %s %s --set prepare.segment_frames=63 --vae %s/%s", man,
           TEST_PATH("o2"), common, cwd, VAE_W);
  EXPECT(run(cmd, out, sizeof out) == 2, "mismatch -> 2: %s", out);
  EXPECT_STR_CONTAINS(out, "prepare: error: ");
  EXPECT_STR_CONTAINS(out, "downsamples by 2");
  EXPECT(!exists(TEST_PATH("o2")), "nothing written");
}
