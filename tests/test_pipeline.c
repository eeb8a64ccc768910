/* The text-to-music pipeline on a tiny random-weight bundle (models/weights.h), and the
 * configurations read from converted weights:
 *  - configs round-trip through the files' config attribute; diffusers' head conventions
 *  - exact length and rate; the same seed gives the same bits, another seed other bits
 *  - long form: 3x the native length is exact; one window over everything equals no windows
 *  - teacher DDIM with guidance and a negative prompt; init audio with a strength
 *  - bad bundles and bad requests: one line naming the file or the value
 * The sampler arithmetic itself is tested in test_sampler.c. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "diffusion/pipeline.h"
#include "models/weights.h"
#include "test.h"

#define TOKENIZER "tests/fixtures/tokenizer"

static const char *make_bundle(const char *name) {
  static char dir[512];
  snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), name);
  RandomBundle b = random_bundle_tiny(TOKENIZER);
  McmErr err = {{0}};
  ASSERT(random_bundle_write(dir, &b, &err) == 0, "%s", err.msg);
  return dir;
}

static Pipeline *open_ok(Ctx *ctx, const char *bundle, PipeSampler s) {
  McmErr err = {{0}};
  PipelineOptions o = {.bundle = bundle, .sampler = s};
  Pipeline *p = pipeline_open(ctx, &o, &err);
  ASSERT(p, "pipeline_open: %s", err.msg);
  return p;
}

static PipelineOutput gen(Pipeline *p, const PipelineRequest *r) {
  PipelineOutput o;
  McmErr err = {{0}};
  ASSERT(pipeline_generate(p, r, &o, NULL, &err) == 0, "pipeline_generate: %s", err.msg);
  return o;
}

static bool same(const PipelineOutput *a, const PipelineOutput *b) {
  return a->n == b->n && !memcmp(a->audio, b->audio, (size_t)a->n * sizeof(float));
}

static double rms_diff(const PipelineOutput *a, const PipelineOutput *b) {
  double s = 0;
  for (int64_t i = 0; i < a->n && i < b->n; i++) s += (a->audio[i] - b->audio[i]) * (double)(a->audio[i] - b->audio[i]);
  return sqrt(s / (double)(a->n ? a->n : 1));
}

/* ---------------------------------------------------------------- configs from weights */

TEST(weights_configs_round_trip_through_the_bundle_files) {
  const char *dir = make_bundle("b");
  RandomBundle b = random_bundle_tiny(TOKENIZER);
  char path[600];
  McmErr err = {{0}};
  UNetConfig u;
  int ss;
  snprintf(path, sizeof path, "%s/" BUNDLE_STUDENT, dir);
  ASSERT(unet_config_from_weights(path, &u, &ss, &err) == 0, "%s", err.msg);
  EXPECT(ss == b.sample_size, "sample_size %d", ss);
  EXPECT(u.levels == 2 && u.block_out_channels[1] == 32 && !u.attention[0] && u.attention[1], "levels");
  EXPECT(u.in_channels == 4 && u.layers_per_block == 1 && u.norm_groups == 4 && u.class_embed_in == 8, "sizes");
  EXPECT(u.time_embed_dim == 32 && u.time_proj_dim == 16 && u.flip_sin_to_cos && u.freq_shift == 0, "time embedding");
  for (int l = 0; l < 2; l++) EXPECT(unet_heads(&u, l) == unet_heads(&b.unet, l), "heads at level %d", l);
  EXPECT(u.norm_eps == b.unet.norm_eps, "norm_eps");

  VaeConfig v;
  snprintf(path, sizeof path, "%s/" BUNDLE_VAE, dir);
  ASSERT(vae_config_from_weights(path, &v, &err) == 0, "%s", err.msg);
  EXPECT(!memcmp(&v, &b.vae, sizeof v), "VAE config round-trips");

  HifiganConfig h;
  snprintf(path, sizeof path, "%s/" BUNDLE_VOCODER, dir);
  ASSERT(hifigan_config_from_weights(path, &h, &err) == 0, "%s", err.msg);
  HifiganConfig want = b.vocoder;
  want.hop = 0;
  EXPECT(!memcmp(&h, &want, sizeof h), "vocoder config round-trips");

  ClapTextConfig t;
  snprintf(path, sizeof path, "%s/" BUNDLE_TEXT_ENCODER, dir);
  ASSERT(clap_text_config_from_weights(path, &t, &err) == 0, "%s", err.msg);
  EXPECT(t.vocab_size == 1911 && t.hidden_size == 16 && t.projection_dim == 8 && t.max_length == 64 &&
             t.max_position_embeddings == 66 && t.pad_token_id == 1,
         "text config (vocab %d, max_length %d)", t.vocab_size, t.max_length);
}

/* A tensor file holding only a config attribute (the *_from_weights functions read no tensor). */
static void config_file(const char *path, const char *component, const char *json) {
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  if (component) ASSERT(tf_set_attr(tf, "component", component, &err) == 0, "%s", err.msg);
  if (json) ASSERT(tf_set_attr(tf, "config", json, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
}

TEST(weights_unet_heads_follow_diffusers_reading_of_the_config) {
  const char *p = TEST_PATH("u.h5");
  UNetConfig u;
  McmErr err = {{0}};
  int ss = -1;
  /* The hub's MusicLDM config: attention_head_dim 8 = 8 heads at every level (diffusers). */
  config_file(p, "unet",
              "{\"block_out_channels\": [128, 256, 384, 640], \"attention_head_dim\": 8, \"sample_size\": 256,"
              " \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\","
              " \"CrossAttnDownBlock2D\"], \"cross_attention_dim\": [128, 256, 384, 640]}");
  ASSERT(unet_config_from_weights(p, &u, &ss, &err) == 0, "%s", err.msg);
  EXPECT(ss == 256, "sample_size");
  EXPECT(unet_heads(&u, 1) == 8 && unet_heads(&u, 2) == 8 && unet_heads(&u, 3) == 8, "8 heads everywhere");
  /* tools/convert_musicldm_original.py: the original's per-level counts */
  config_file(p, "unet", "{\"attention_head_dim\": [4, 8, 12, 20], \"num_attention_heads\": null}");
  ASSERT(unet_config_from_weights(p, &u, NULL, &err) == 0, "%s", err.msg);
  EXPECT(unet_heads(&u, 2) == 12 && unet_heads(&u, 3) == 20, "per-level heads");
  /* num_attention_heads wins */
  config_file(p, "unet", "{\"attention_head_dim\": 8, \"num_attention_heads\": [4, 8, 12, 20]}");
  ASSERT(unet_config_from_weights(p, &u, NULL, &err) == 0, "%s", err.msg);
  EXPECT(unet_heads(&u, 3) == 20, "num_attention_heads");
  /* nothing stated: MusicLDM's original 32-channel heads, sample_size unknown */
  config_file(p, "unet", NULL);
  ASSERT(unet_config_from_weights(p, &u, &ss, &err) == 0, "%s", err.msg);
  EXPECT(ss == 0 && unet_heads(&u, 3) == 20 && unet_heads(&u, 1) == 8, "defaults");
  /* sample_size as [frames, bins] */
  config_file(p, "unet", "{\"sample_size\": [128, 16]}");
  ASSERT(unet_config_from_weights(p, &u, &ss, &err) == 0, "%s", err.msg);
  EXPECT(ss == 128, "sample_size list");
}

static void expect_config_error(int rc, McmErr *err, const char *what) {
  EXPECT(rc == -1, "refused (%s)", what);
  EXPECT_STR_CONTAINS(err->msg, what);
  EXPECT(!strchr(err->msg, '\n'), "one line: %s", err->msg);
}

TEST(weights_configs_refuse_bad_files_in_one_line) {
  const char *p = TEST_PATH("c.h5");
  UNetConfig u;
  VaeConfig v;
  HifiganConfig h;
  ClapTextConfig t;
  McmErr err = {{0}};
  expect_config_error(unet_config_from_weights(TEST_PATH("none.h5"), &u, NULL, &err), &err, "UNet weights: ");
  expect_config_error(unet_config_from_weights(TEST_PATH("none.h5"), &u, NULL, &err), &err, "none.h5");
  FILE *f = fopen(TEST_PATH("text.h5"), "w");
  fputs("not HDF5\n", f);
  fclose(f);
  expect_config_error(vae_config_from_weights(TEST_PATH("text.h5"), &v, &err), &err, "text.h5");
  config_file(p, "vae", "{}");
  expect_config_error(unet_config_from_weights(p, &u, NULL, &err), &err, "holds 'vae' weights, not the UNet's");
  config_file(p, "unet", "[1, 2]");
  expect_config_error(unet_config_from_weights(p, &u, NULL, &err), &err, "config attribute is not a JSON object");
  config_file(p, "unet", "{\"layers_per_block\": \"two\"}");
  expect_config_error(unet_config_from_weights(p, &u, NULL, &err), &err, "layers_per_block that is not an integer");
  config_file(p, "unet", "{\"transformer_layers_per_block\": [1, 2, 1, 1]}");
  expect_config_error(unet_config_from_weights(p, &u, NULL, &err), &err, "differs between levels");
  config_file(p, "unet", "{\"block_out_channels\": [128, 250, 384, 640]}");
  expect_config_error(unet_config_from_weights(p, &u, NULL, &err), &err, "not divisible by norm_groups");
  config_file(p, "vocoder", "{\"upsample_rates\": [5, 4], \"upsample_kernel_sizes\": [16, 16, 8]}");
  expect_config_error(hifigan_config_from_weights(p, &h, &err), &err, "2 upsample_rates but 3 upsample_kernel_sizes");
  config_file(p, "vocoder", "{\"resblock_dilation_sizes\": [[1, 3, 5], [1, 3, 5]]}");
  expect_config_error(hifigan_config_from_weights(p, &h, &err), &err, "not a list of 3 lists");
  config_file(p, "text_encoder", "{\"text_config\": {\"hidden_size\": 100, \"num_attention_heads\": 12}}");
  expect_config_error(clap_text_config_from_weights(p, &t, &err), &err, "c.h5: ");
}

/* ---------------------------------------------------------------- generation */

TEST(pipeline_output_has_the_exact_length_and_rate_and_follows_the_seed) {
  const char *dir = make_bundle("b");
  Ctx *ctx = ctx_create_cpu(0);
  Pipeline *p = open_ok(ctx, dir, PIPE_CM);
  EXPECT(!p->teacher && p->native_frames == 16 && p->f == 2 && p->lat_c == 4 && p->lat_w == 8 && p->rate == 16000 &&
             p->hop == 160,
         "sizes from the bundle");
  PipelineRequest r = pipeline_request_default(PIPE_CM);
  r.prompt = "calm piano";
  r.seconds = 0.37; /* 5920 samples, 37 mel frames -> 19 latent frames -> 20 (the UNet's factor 2) */
  r.steps = 2;
  r.seed = 7;
  EXPECT(pipeline_latent_frames(p, r.seconds) == 20 && pipeline_samples(p, r.seconds) == 5920, "length rule");
  EXPECT(pipeline_latent_frames(p, 10.24) == 512, "10.24 s: 1024 mel frames, 512 latent frames");
  PipelineOutput a = gen(p, &r), b = gen(p, &r);
  EXPECT(a.n == 5920 && a.rate == 16000, "%lld samples at %d Hz", (long long)a.n, a.rate);
  EXPECT(a.frames == 37 && a.n_mels == 16, "mel %d x %d", a.frames, a.n_mels);
  EXPECT(same(&a, &b), "same seed, same bits (rms diff %.3g)", rms_diff(&a, &b));
  double peak = 0;
  for (int64_t i = 0; i < a.n; i++) peak = fmax(peak, fabs(a.audio[i]));
  EXPECT(peak > 0 && peak <= 1, "peak %g", peak);
  r.seed = 8;
  PipelineOutput c = gen(p, &r);
  EXPECT(!same(&a, &c) && rms_diff(&a, &c) > 1e-4, "another seed, other audio (rms diff %.3g)", rms_diff(&a, &c));
  /* A different prompt before does not change what a seed gives (the RNG restarts per output). */
  r.prompt = "loud drums";
  PipelineOutput d = gen(p, &r);
  r.prompt = "calm piano";
  r.seed = 7;
  PipelineOutput e = gen(p, &r);
  EXPECT(same(&a, &e), "seed 7 again after other outputs: the same bits");
  EXPECT(!same(&c, &d), "another prompt, other audio");
  pipeline_output_free(&a), pipeline_output_free(&b), pipeline_output_free(&c), pipeline_output_free(&d),
      pipeline_output_free(&e);
  pipeline_close(p);
  ctx_destroy(ctx);
}

TEST(pipeline_long_form_is_exact_and_one_window_equals_no_windows) {
  const char *dir = make_bundle("b");
  Ctx *ctx = ctx_create_cpu(0);
  Pipeline *p = open_ok(ctx, dir, PIPE_CM);
  PipelineRequest r = pipeline_request_default(PIPE_CM);
  r.prompt = "a long piece";
  r.steps = 2;
  r.seed = 3;
  r.seconds = 3.0 * p->native_frames * p->f * p->hop / p->rate; /* 0.96 s: 48 latent frames */
  ASSERT(pipeline_latent_frames(p, r.seconds) == 48, "3x native");
  PipelineOutput windows = gen(p, &r); /* 9 windows of 16 frames every 4 */
  EXPECT(windows.n == 15360, "exact length: %lld samples", (long long)windows.n);
  r.window_frames = 48; /* one window over everything: the windowed path */
  PipelineOutput one = gen(p, &r);
  r.window_frames = -1; /* no windows: the plain sampler on the whole latent */
  PipelineOutput none = gen(p, &r);
  EXPECT(same(&one, &none), "one window equals no windows (rms diff %.3g)", rms_diff(&one, &none));
  EXPECT(!same(&windows, &none), "fused windows differ from one pass (rms diff %.3g)", rms_diff(&windows, &none));
  r.window_frames = 32, r.stride_frames = 12; /* another layout (windows at 0 and 16): the same length */
  PipelineOutput other = gen(p, &r);
  EXPECT(other.n == 15360, "exact length");
  pipeline_output_free(&windows), pipeline_output_free(&one), pipeline_output_free(&none),
      pipeline_output_free(&other);
  pipeline_close(p);
  ctx_destroy(ctx);
}

TEST(pipeline_teacher_ddim_with_guidance_and_a_negative_prompt) {
  const char *dir = make_bundle("b");
  Ctx *ctx = ctx_create_cpu(0);
  Pipeline *p = open_ok(ctx, dir, PIPE_DDIM);
  EXPECT(p->teacher, "DDIM runs unet.h5");
  PipelineRequest r = pipeline_request_default(PIPE_DDIM);
  EXPECT(r.steps == 200 && r.guidance == 2.0, "defaults");
  r.prompt = "jazz";
  r.seconds = 0.3;
  r.steps = 3;
  r.seed = 1;
  PipelineOutput a = gen(p, &r), b = gen(p, &r);
  EXPECT(a.n == 4800 && same(&a, &b), "deterministic DDIM (eta 0) of the exact length");
  r.negative = "noise";
  PipelineOutput c = gen(p, &r);
  EXPECT(!same(&a, &c), "a negative prompt changes the result");
  r.negative = "";
  PipelineOutput d = gen(p, &r);
  EXPECT(same(&a, &d), "the empty negative prompt is the default unconditional");
  r.guidance = 1.0; /* off: no unconditional pass */
  PipelineOutput e = gen(p, &r);
  EXPECT(!same(&a, &e), "guidance 1 differs from 2");
  pipeline_output_free(&a), pipeline_output_free(&b), pipeline_output_free(&c), pipeline_output_free(&d),
      pipeline_output_free(&e);
  pipeline_close(p);
  ctx_destroy(ctx);
}

TEST(pipeline_init_audio_with_a_strength) {
  const char *dir = make_bundle("b");
  Ctx *ctx = ctx_create_cpu(0);
  Pipeline *p = open_ok(ctx, dir, PIPE_CM);
  PipelineRequest r = pipeline_request_default(PIPE_CM);
  r.prompt = "variation";
  r.seconds = 0.4;
  r.steps = 2;
  r.seed = 5;
  r.strength = 0.5;
  McmErr err = {{0}};
  PipelineOutput o;
  EXPECT(pipeline_generate(p, &r, &o, NULL, &err) == -1, "strength < 1 without init audio");
  EXPECT_STR_CONTAINS(err.msg, "none was given");
  float sine[8000];
  for (int i = 0; i < 8000; i++) sine[i] = 0.3f * sinf(2.0f * (float)M_PI * 440.0f * (float)i / 16000.0f);
  ASSERT(pipeline_set_init_audio(p, sine, 8000, r.seconds, &err) == 0, "%s", err.msg);
  PipelineOutput a = gen(p, &r), b = gen(p, &r);
  EXPECT(a.n == 6400 && same(&a, &b), "exact length, deterministic");
  r.strength = 0.9;
  PipelineOutput c = gen(p, &r);
  EXPECT(!same(&a, &c), "the strength matters");
  r.strength = 0.5;
  r.steps = 26; /* 50 · 0.5 = 25 origin steps */
  EXPECT(pipeline_check_request(p, &r, &err) == -1, "more steps than the shortened grid");
  EXPECT_STR_CONTAINS(err.msg, "26 consistency steps at this strength: expected 1..25");
  r.steps = 2;
  r.seconds = 1.0;
  EXPECT(pipeline_check_request(p, &r, &err) == -1, "another length than the init audio's");
  EXPECT_STR_CONTAINS(err.msg, "encoded for 20 latent frames, the request needs 50");
  EXPECT(pipeline_set_init_audio(p, sine, 0, 1.0, &err) == -1, "empty init audio");
  pipeline_output_free(&a), pipeline_output_free(&b), pipeline_output_free(&c);
  pipeline_close(p);
  ctx_destroy(ctx);
}

TEST(pipeline_check_request_refuses_bad_values) {
  const char *dir = make_bundle("b");
  Ctx *ctx = ctx_create_cpu(0);
  Pipeline *p = open_ok(ctx, dir, PIPE_CM);
  PipelineRequest r0 = pipeline_request_default(PIPE_CM), r;
  r0.prompt = "x";
  McmErr err = {{0}};
  ASSERT(pipeline_check_request(p, &r0, &err) == 0, "%s", err.msg);
  const char *what[] = {"0 seconds", "nan seconds", "51 consistency steps: expected 1..50", "0 consistency steps",
                        "strength 1.5", "window 33 latent frames is not a multiple of 2",
                        "stride 40 is larger than the window 16", "not valid UTF-8"};
  for (int i = 0; i < (int)(sizeof what / sizeof *what); i++) {
    r = r0;
    r.seconds = 2.0; /* long enough for windows */
    switch (i) {
      case 0: r.seconds = 0; break;
      case 1: r.seconds = NAN; break;
      case 2: r.steps = 51; break;
      case 3: r.steps = 0; break;
      case 4: r.strength = 1.5; break;
      case 5: r.window_frames = 33; break;
      case 6: r.stride_frames = 40; break;
      case 7: r.prompt = "\xff"; break;
    }
    EXPECT(pipeline_check_request(p, &r, &err) == -1, "refused: %s", what[i]);
    EXPECT_STR_CONTAINS(err.msg, what[i]);
  }
  pipeline_close(p);
  p = open_ok(ctx, dir, PIPE_DDIM);
  r = pipeline_request_default(PIPE_DDIM);
  r.prompt = "x";
  r.steps = 1000;
  EXPECT(pipeline_check_request(p, &r, &err) == -1, "1000 DDIM steps with offset 1");
  EXPECT_STR_CONTAINS(err.msg, "1000 DDIM steps: expected 1..999");
  r.steps = 999;
  EXPECT(pipeline_check_request(p, &r, &err) == 0, "999 DDIM steps: %s", err.msg);
  pipeline_close(p);
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- bad bundles */

static void expect_open_error(Ctx *ctx, const char *bundle, PipeSampler s, bool allow, const char *what) {
  McmErr err = {{0}};
  PipelineOptions o = {.bundle = bundle, .sampler = s, .allow_teacher_cm = allow};
  Pipeline *p = pipeline_open(ctx, &o, &err);
  EXPECT(!p, "refused (%s)", what);
  pipeline_close(p);
  EXPECT_STR_CONTAINS(err.msg, what);
  EXPECT(!strchr(err.msg, '\n'), "one line: %s", err.msg);
}

/* Copies a weights file with its config edited (from -> to). */
static void with_config(const char *src, const char *dst, const char *from, const char *to) {
  McmErr err = {{0}};
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
    float *x = malloc((size_t)(count + 1) * sizeof(float));
    ASSERT(tf_read(in, names[i], nd, shape, x, &err) == 0 && tf_write(out, names[i], DT_F32, nd, shape, x, &err) == 0,
           "%s", err.msg);
    free(x);
  }
  tf_free_names(names, n);
  char *config, *component;
  ASSERT(tf_get_attr(in, "config", &config, &err) == 0 && tf_get_attr(in, "component", &component, &err) == 0, "%s",
         err.msg);
  char *at = strstr(config, from);
  ASSERT(at, "'%s' is not in the config", from);
  char edited[16384];
  snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - config), config, to, at + strlen(from));
  ASSERT(tf_set_attr(out, "config", edited, &err) == 0 && tf_set_attr(out, "component", component, &err) == 0, "%s",
         err.msg);
  free(config);
  free(component);
  tf_close(in);
  ASSERT(tf_commit(out, &err) == 0, "%s", err.msg);
}

TEST(pipeline_refuses_missing_and_partial_bundles) {
  Ctx *ctx = ctx_create_cpu(0);
  expect_open_error(ctx, TEST_PATH("nothing"), PIPE_CM, false, "nothing: no model bundle there");
  expect_open_error(ctx, TEST_PATH("nothing"), PIPE_CM, false, "make_random_bundle");
  expect_open_error(ctx, TEST_PATH("nothing"), PIPE_CM, false, "convert_diffusers.py");
  const char *dir = make_bundle("b");
  char path[600], other[700];
  snprintf(path, sizeof path, "%s/" BUNDLE_VAE, dir);
  expect_open_error(ctx, path, PIPE_CM, false, "a model bundle is a directory");
  const char *files[] = {BUNDLE_VAE, BUNDLE_VOCODER, BUNDLE_TEXT_ENCODER, BUNDLE_VOCAB, BUNDLE_MERGES};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    snprintf(other, sizeof other, "%s.away", path);
    ASSERT(rename(path, other) == 0, "rename");
    char what[700];
    snprintf(what, sizeof what, "%s: missing from the model bundle", path);
    expect_open_error(ctx, dir, PIPE_CM, false, what);
    ASSERT(rename(other, path) == 0, "rename back");
  }
  /* The student: required for cm unless the teacher is allowed. */
  snprintf(path, sizeof path, "%s/" BUNDLE_STUDENT, dir);
  snprintf(other, sizeof other, "%s.away", path);
  ASSERT(rename(path, other) == 0, "rename");
  expect_open_error(ctx, dir, PIPE_CM, false, "student.h5: missing; the consistency sampler needs the distilled student");
  expect_open_error(ctx, dir, PIPE_CM, false, "--allow-teacher-cm");
  McmErr err = {{0}};
  PipelineOptions o = {.bundle = dir, .sampler = PIPE_CM, .allow_teacher_cm = true};
  Pipeline *p = pipeline_open(ctx, &o, &err);
  EXPECT(p && p->teacher, "allowed: the teacher (%s)", err.msg);
  pipeline_close(p);
  ASSERT(rename(other, path) == 0, "rename back");
  snprintf(path, sizeof path, "%s/" BUNDLE_UNET, dir);
  ASSERT(unlink(path) == 0, "unlink");
  expect_open_error(ctx, dir, PIPE_DDIM, false, "unet.h5: missing; DDIM samples the teacher");
  ctx_destroy(ctx);
}

TEST(pipeline_refuses_weights_that_do_not_fit) {
  Ctx *ctx = ctx_create_cpu(0);
  const char *dir = make_bundle("b");
  char path[600], saved[600];
  /* not HDF5 */
  snprintf(path, sizeof path, "%s/" BUNDLE_VAE, dir);
  snprintf(saved, sizeof saved, "%s/vae.saved", dir);
  ASSERT(rename(path, saved) == 0, "rename");
  FILE *f = fopen(path, "w");
  fputs("not HDF5 at all\n", f);
  fclose(f);
  expect_open_error(ctx, dir, PIPE_CM, false, "vae.h5");
  /* a config that disagrees with the tensors: the loader names the tensor */
  with_config(saved, path, "\"latent_channels\": 4", "\"latent_channels\": 2");
  expect_open_error(ctx, dir, PIPE_CM, false, "the UNet maps 4 to 4 latent channels, the VAE");
  with_config(saved, path, "\"layers_per_block\": 1", "\"layers_per_block\": 2");
  expect_open_error(ctx, dir, PIPE_CM, false, "vae.h5: no tensor 'encoder.down_blocks.0.resnets.1.norm1.weight'");
  ASSERT(rename(saved, path) == 0, "restore");
  snprintf(path, sizeof path, "%s/" BUNDLE_VOCODER, dir);
  snprintf(saved, sizeof saved, "%s/voc.saved", dir);
  ASSERT(rename(path, saved) == 0, "rename");
  with_config(saved, path, "\"upsample_initial_channel\": 32", "\"upsample_initial_channel\": 64");
  expect_open_error(ctx, dir, PIPE_CM, false, "tensor 'conv_pre.weight': expected shape [64, 16, 7]");
  with_config(saved, path, "\"model_in_dim\": 16", "\"model_in_dim\": 15");
  expect_open_error(ctx, dir, PIPE_CM, false, "the vocoder takes 15 mel bins, not a multiple of the VAE's factor 2");
  /* another component's file in a component's place */
  snprintf(path, sizeof path, "%s/" BUNDLE_VAE, dir);
  with_config(saved, path, "\"model_in_dim\": 16", "\"model_in_dim\": 16"); /* the vocoder's file as vae.h5 */
  expect_open_error(ctx, dir, PIPE_CM, false, "holds 'vocoder' weights, not the VAE's");
  ctx_destroy(ctx);
}

TEST(pipeline_refuses_a_tokenizer_that_does_not_fit_the_text_tower) {
  Ctx *ctx = ctx_create_cpu(0);
  char dir[600];
  snprintf(dir, sizeof dir, "%s/small_vocab", test_tmpdir());
  RandomBundle b = random_bundle_tiny(TOKENIZER);
  b.text.vocab_size = 1000; /* the tokenizer has 1911 ids */
  McmErr err = {{0}};
  ASSERT(random_bundle_write(dir, &b, &err) == 0, "%s", err.msg);
  expect_open_error(ctx, dir, PIPE_CM, false, "do not belong together");
  expect_open_error(ctx, dir, PIPE_CM, false, "text_encoder.h5 with");
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- names */

TEST(pipeline_output_names_say_index_prompt_and_seed) {
  char buf[256];
  McmErr err = {{0}};
  ASSERT(pipeline_output_name(buf, sizeof buf, "out", 0, 1, "Calm Piano, 90 BPM!", 7, "wav", &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(buf, "out/000_calm-piano-90-bpm_seed7.wav"), "%s", buf);
  ASSERT(pipeline_output_name(buf, sizeof buf, "d", 1234, 4, "  ☃ über-ambient  ", 42, "flac", &err) == 0, "%s",
         err.msg);
  EXPECT(!strcmp(buf, "d/1234_ber-ambient_seed42.flac"), "%s", buf);
  ASSERT(pipeline_output_name(buf, sizeof buf, "d", 5, 3, "☃☃", 1, "wav", &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(buf, "d/005_prompt_seed1.wav"), "%s", buf);
  ASSERT(pipeline_output_name(buf, sizeof buf, "d", 2, 3,
                              "a very long prompt about music that goes on and on and on and on", 9, "wav", &err) == 0,
         "%s", err.msg);
  EXPECT(!strcmp(buf, "d/002_a-very-long-prompt-about-music-that-goes_seed9.wav"), "%s", buf);
  EXPECT(pipeline_output_name(buf, 10, "d", 2, 3, "x", 9, "wav", &err) == -1, "too long");
}
