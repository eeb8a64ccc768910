/* Tests of the strict INI configuration (core/config.h): defaults, files, --set, the shipped
 * configs, the string round trip, help, and one bad input of each kind, each checked for
 * the return value and for a message that says file:line and the key or value at fault. */
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "tests/test.h"

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ASSERT(f, "cannot write %s", path);
  fputs(text, f);
  fclose(f);
}

/* Bitwise equality of one schema field (strings up to their NUL). */
static bool field_equal(const CfgKey *k, const Config *a, const Config *b) {
  const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
  switch (k->type) {
    case CFG_STRING:
    case CFG_ENUM: return !strcmp(fa, fb);
    case CFG_INT_LIST: {
      const CfgIntList *x = (const void *)fa, *y = (const void *)fb;
      return x->n == y->n && !memcmp(x->v, y->v, (size_t)x->n * sizeof x->v[0]);
    }
    case CFG_FLOAT_LIST: {
      const CfgFloatList *x = (const void *)fa, *y = (const void *)fb;
      return x->n == y->n && !memcmp(x->v, y->v, (size_t)x->n * sizeof x->v[0]);
    }
    default: return !memcmp(fa, fb, k->size);
  }
}

/* Every field equal; reports the ones that differ. */
static int count_differences(const Config *a, const Config *b) {
  int n = 0;
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    if (!field_equal(&MCM_SCHEMA[i], a, b)) {
      test_fail(__FILE__, __LINE__, "%s.%s differs", MCM_SCHEMA[i].section, MCM_SCHEMA[i].key);
      n++;
    }
  }
  return n;
}

static const char *origin_of(const Config *cfg, const char *section, const char *key) {
  int i = config_key_index(section, key);
  return i >= 0 ? cfg->origin[i] : "(no such key)";
}

/* Text written by f (a memstream); caller frees. */
static char *capture_print(const Config *cfg, bool help) {
  char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);
  if (help)
    config_help(f);
  else
    config_print(cfg, f);
  fclose(f);
  return text;
}

/* ------------------------------------------------------------------ the schema and defaults */

TEST(config_schema_rows_are_consistent) {
  ASSERT(MCM_SCHEMA_N > 0 && MCM_SCHEMA_N <= CFG_MAX_KEYS, "MCM_SCHEMA_N = %d", MCM_SCHEMA_N);
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const CfgKey *k = &MCM_SCHEMA[i];
    EXPECT(k->help && strlen(k->help) > 10, "%s.%s has no help", k->section, k->key);
    EXPECT(config_key_index(k->section, k->key) == i, "%s.%s appears twice", k->section, k->key);
    /* Sections are contiguous (printing and help rely on it). */
    for (int j = i + 2; j < MCM_SCHEMA_N; j++)
      if (!strcmp(MCM_SCHEMA[j].section, k->section))
        EXPECT(!strcmp(MCM_SCHEMA[j - 1].section, k->section), "[%s] is split in the schema", k->section);
  }
}

TEST(config_defaults_follow_the_schema) {
  Config cfg;
  config_defaults(&cfg); /* aborts on a row whose type, size or default is wrong */
  EXPECT(!strcmp(cfg.run.device, "auto"), "run.device = %s", cfg.run.device);
  EXPECT(cfg.run.seed == 0 && cfg.run.log_every == 10, "run.seed/log_every");
  EXPECT(!strcmp(cfg.run.out_dir, "runs/mcm"), "run.out_dir = %s", cfg.run.out_dir);
  EXPECT(!strcmp(cfg.train.mode, "distill") && !strcmp(cfg.train.precision, "bf16") && !strcmp(cfg.train.loss, "huber"),
         "train enums");
  EXPECT(cfg.train.batch_size == 8, "batch_size %lld", (long long)cfg.train.batch_size);
  EXPECT(cfg.train.lr == 1e-5 && cfg.train.weight_decay == 0 && cfg.train.grad_clip == 1.0, "train floats");
  EXPECT(cfg.train.ema_decay == 0.95 && cfg.train.lambda_distill == 3.0 && cfg.train.guidance_w == 2.0 &&
             cfg.train.huber_c == 0.001,
         "train floats");
  EXPECT(cfg.train.adversarial, "adversarial defaults to true");
  EXPECT(cfg.train.num_ddim_steps == 50 && cfg.train.skip_k == 20, "ddim grid");
  EXPECT(cfg.data.num_workers == 1, "num_workers");
  EXPECT(!strcmp(cfg.checkpoint.dir, "checkpoints/run") && cfg.checkpoint.every == 1000 && cfg.checkpoint.keep == 3 &&
             !strcmp(cfg.checkpoint.init, ""),
         "checkpoint");
  EXPECT(cfg.unet.in_channels == 8 && cfg.unet.model_channels == 128 && cfg.unet.num_res_blocks == 2, "unet");
  EXPECT(cfg.unet.channel_mult.n == 4 && cfg.unet.channel_mult.v[0] == 1 && cfg.unet.channel_mult.v[3] == 5,
         "channel_mult");
  EXPECT(cfg.unet.attention_levels.n == 3 && cfg.unet.attention_levels.v[2] == 3, "attention_levels");
  EXPECT(cfg.unet.num_head_channels == 32 && cfg.unet.context_dim == 512 && cfg.unet.latent_frames == 256 &&
             cfg.unet.latent_bins == 16,
         "unet sizes");
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const char *want = MCM_SCHEMA[i].def ? "default" : "";
    EXPECT(!strcmp(cfg.origin[i], want), "%s.%s origin '%s'", MCM_SCHEMA[i].section, MCM_SCHEMA[i].key, cfg.origin[i]);
  }
  /* The two required keys are unset, so validation names the first. */
  McmErr err;
  EXPECT(config_validate(&cfg, &err) == -1, "validate without required keys");
  EXPECT_STR_CONTAINS(err.msg, "missing required key train.steps");
}

/* ------------------------------------------------------------------ good files */

TEST(config_full_file_sets_every_key) {
  const char *path = TEST_PATH("full.ini");
  write_file(path,
             "; every key, in another order, with the syntax variants inih accepts\n" /* 1 */
             "[unet]\n"
             "  in_channels = 4\n"
             "model_channels=64\n"
             "channel_mult = 1, 2 ,4\n" /* 5 */
             "num_res_blocks: 1\n"
             "attention_levels = 2\n"
             "num_head_channels = 16 ; heads of 16\n"
             "context_dim = 256\n"
             "latent_frames = 64\n" /* 10 */
             "latent_bins = 8\n"
             "\n"
             "[run]\r\n"
             "device = cuda:1\n"
             "seed = 42\n" /* 15 */
             "out_dir = runs/my run #1\n"
             "log_every = 5\n"
             "# a hash comment\n"
             "[train]\n"
             "mode = teacher\n" /* 20 */
             "steps = 123\n"
             "batch_size = 65536\n"
             "lr = 1\n"
             "weight_decay = 0.01\n"
             "grad_clip = 0\n" /* 25 */
             "ema_decay = 0.999\n"
             "precision = fp32\n"
             "adversarial = Off\n"
             "lambda_distill = 2.5\n"
             "num_ddim_steps = 100\n" /* 30 */
             "skip_k = 10\n"
             "guidance_w = 0\n"
             "loss = l2\n"
             "huber_c = 0.5\n"
             "[data]\n" /* 35 */
             "train_shards = /data/a-*.h5\n"
             "num_workers = 0\n"
             "[checkpoint]\n"
             "dir = ck\n"
             "every = 7\n" /* 40 */
             "keep = 1\n"
             "init = weights/teacher.h5\n"
             "[mel]\n"
             "rate = 22050\n"
             "n_fft = 2048\n"
             "hop = 256\n"
             "win = 2048\n"
             "n_mels = 80\n"
             "fmin = 20\n"
             "fmax = 11025\n"
             "log_floor = 1e-6\n"
             "[prepare]\n"
             "segment_frames = 512\n"
             "crop = first\n"
             "hop_frames = 256\n"
             "min_fraction = 0.25\n"
             "min_seconds = 2\n"
             "silence_threshold = 0.001\n"
             "shard_size = 64\n"
             "threads = 2\n"
             "[train]\n" /* a section may appear twice; keys must not */
             "beta1 = 0.8\n"
             "beta2 = 0.99\n"
             "adam_eps = 1e-6\n"
             "lr_schedule = cosine\n"
             "warmup_steps = 5\n"
             "cond_dropout = 0.2\n"
             "teacher_ema_decay = 0.999\n"
             "nan_tolerance = 3\n"
             "allreduce_bucket_mb = 12.5\n"
             "[teacher]\n"
             "weights = t.h5\n"
             "[student]\n"
             "init = s.h5\n"
             "[vae]\n"
             "weights = v.h5\n"
             "[adversarial]\n"
             "audiomae = m.h5\n"
             "bridge = b.h5\n"
             "taps = -1,1\n"
             "lr = 2e-4\n"
             "beta1 = 0.5\n"
             "beta2 = 0.9\n"
             "weight_decay = 0.01\n"
             "r1_gamma = 0.1\n"
             "r1_interval = 4\n"
             "mae_frames = 64\n"
             "mae_bins = 32\n"
             "mae_patch = 8\n"
             "mae_dim = 64\n"
             "mae_depth = 2\n"
             "mae_heads = 4\n"
             "cmap_dim = 16\n"
             "head_kernel = 3\n"
             "virtual_bs = 4\n"
             "[sample]\n"
             "every = 100\n"
             "steps = 2\n"
             "prompts = p.txt\n"
             "bundle = demo\n"
             "seconds = 5\n"
             "seed = 7\n"
             "[data]\n"
             "encoders = enc.h5\n"
             "[unet]\n"
             "norm_groups = 8\n"
             "[vae_train]\n"
             "kl_weight = 1e-5\n"
             "recon = l1\n"
             "ema_decay = 0.99\n"
             "scale_batches = 4\n"
             "in_channels = 1\n"
             "latent_channels = 4\n"
             "block_out_channels = 32,64\n"
             "layers_per_block = 1\n"
             "norm_groups = 16\n"
             "[prepare]\n"
             "keep_audio = yes\n"
             "[vocoder_train]\n"
             "weights = voc.h5\n"
             "upsample_initial_channel = 64\n"
             "upsample_rates = 4,4\n"
             "upsample_kernel_sizes = 8,8\n"
             "resblock_kernel_sizes = 3,5\n"
             "resblock_dilations = 1,2\n"
             "mel_weight = 30\n"
             "fm_weight = 1.5\n"
             "disc_periods = 2,3\n"
             "disc_period_channels = 8,16\n"
             "disc_scales = 2\n"
             "disc_scale_channels = 8,8,16,16,32,32,32\n"
             "disc_scale_groups = 1,2,4,4,8,8,1\n"
             "disc_spectral_norm = false\n"
             "[infer]\n"
             "window_frames = 32\n"
             "stride_frames = 8\n"
             "fuse = triangular\n"
             "precision = bf16\n"
             "[text]\n"
             "joint = true\n"
             "tokenizer = tok\n"
             "max_length = 32\n"
             "vocab_size = 100\n"
             "hidden = 32\n"
             "layers = 1\n"
             "heads = 2\n"
             "intermediate = 64\n"
             "projection_dim = 16\n");
  Config cfg;
  McmErr err = {{0}};
  config_defaults(&cfg);
  ASSERT(config_parse_file(&cfg, path, &err) == 0, "parse: %s", err.msg);
  EXPECT(config_validate(&cfg, &err) == 0, "validate: %s", err.msg);
  for (int i = 0; i < MCM_SCHEMA_N; i++)
    EXPECT(strstr(cfg.origin[i], "full.ini:"), "%s.%s not from the file (%s)", MCM_SCHEMA[i].section,
           MCM_SCHEMA[i].key, cfg.origin[i]);
  EXPECT_STR_CONTAINS(origin_of(&cfg, "unet", "in_channels"), "full.ini:3");
  EXPECT_STR_CONTAINS(origin_of(&cfg, "checkpoint", "init"), "full.ini:42");
  EXPECT(cfg.unet.in_channels == 4 && cfg.unet.model_channels == 64 && cfg.unet.num_res_blocks == 1, "unet ints");
  EXPECT(cfg.unet.channel_mult.n == 3 && cfg.unet.channel_mult.v[2] == 4, "channel_mult");
  EXPECT(cfg.unet.attention_levels.n == 1 && cfg.unet.attention_levels.v[0] == 2, "attention_levels");
  EXPECT(cfg.unet.num_head_channels == 16 && cfg.unet.context_dim == 256, "inline ' ;' comment stripped");
  EXPECT(cfg.unet.latent_frames == 64 && cfg.unet.latent_bins == 8, "latent");
  EXPECT(!strcmp(cfg.run.device, "cuda:1") && cfg.run.seed == 42 && cfg.run.log_every == 5, "run");
  EXPECT(!strcmp(cfg.run.out_dir, "runs/my run #1"), "out_dir '%s'", cfg.run.out_dir);
  EXPECT(!strcmp(cfg.train.mode, "teacher") && cfg.train.steps == 123 && cfg.train.batch_size == 65536, "train");
  EXPECT(cfg.train.lr == 1 && cfg.train.weight_decay == 0.01 && cfg.train.grad_clip == 0 &&
             cfg.train.ema_decay == 0.999,
         "train floats");
  EXPECT(!strcmp(cfg.train.precision, "fp32") && !cfg.train.adversarial && cfg.train.lambda_distill == 2.5, "train");
  EXPECT(cfg.train.num_ddim_steps == 100 && cfg.train.skip_k == 10 && cfg.train.guidance_w == 0, "train grid");
  EXPECT(!strcmp(cfg.train.loss, "l2") && cfg.train.huber_c == 0.5, "loss");
  EXPECT(cfg.train.allreduce_bucket_mb == 12.5, "allreduce_bucket_mb %g", cfg.train.allreduce_bucket_mb);
  EXPECT(!strcmp(cfg.data.train_shards, "/data/a-*.h5") && cfg.data.num_workers == 0, "data");
  EXPECT(cfg.infer.window_frames == 32 && cfg.infer.stride_frames == 8 && !strcmp(cfg.infer.fuse, "triangular") &&
             !strcmp(cfg.infer.precision, "bf16"),
         "infer");
  EXPECT(!strcmp(cfg.checkpoint.dir, "ck") && cfg.checkpoint.every == 7 && cfg.checkpoint.keep == 1 &&
             !strcmp(cfg.checkpoint.init, "weights/teacher.h5"),
         "checkpoint");
  EXPECT(cfg.vocoder_train.fm_weight == 1.5 && cfg.vocoder_train.disc_periods.n == 2 &&
             cfg.vocoder_train.disc_period_channels.v[1] == 16 && cfg.vocoder_train.disc_scales == 2 &&
             cfg.vocoder_train.disc_scale_channels.n == 7 && cfg.vocoder_train.disc_scale_groups.v[4] == 8 &&
             !cfg.vocoder_train.disc_spectral_norm,
         "vocoder discriminators");
}

TEST(config_shipped_configs_validate) {
  const char *files[] = {"configs/audiostock.ini", "configs/demo.ini", "configs/tiny.ini", "configs/demo_teacher.ini",
                         "configs/demo_vae.ini", "configs/demo_vocoder.ini"};
  Config cfg[6];
  for (int i = 0; i < 6; i++) {
    McmErr err = {{0}};
    EXPECT(config_resolve(&cfg[i], files[i], 0, NULL, &err) == 0, "%s: %s", files[i], err.msg);
  }
  EXPECT(cfg[0].unet.model_channels == 128 && cfg[0].unet.channel_mult.n == 4 && !strcmp(cfg[0].train.mode, "distill"),
         "audiostock is MusicLDM-scale distillation");
  EXPECT(cfg[1].unet.model_channels == 32 && cfg[1].unet.channel_mult.n == 2 && cfg[1].unet.channel_mult.v[1] == 2,
         "demo UNet");
  EXPECT(cfg[1].train.steps == 500 && cfg[1].train.batch_size == 4 && !strcmp(cfg[1].run.device, "auto"), "demo train");
  EXPECT(cfg[2].train.steps >= 1 && !strcmp(cfg[2].run.device, "cpu"), "tiny");
  EXPECT_STR_CONTAINS(origin_of(&cfg[1], "train", "steps"), "configs/demo.ini:");
  /* The demo chain trains every stage on the same 2.56 s segments. */
  for (int i = 1; i < 6; i++)
    if (i != 2)
      EXPECT(cfg[i].prepare.segment_frames == 256 && cfg[i].prepare.hop_frames == 128, "%s: segments", files[i]);
  EXPECT(cfg[1].unet.latent_frames == 64 && cfg[3].unet.latent_frames == 64 && cfg[1].adversarial.mae_frames == 256,
         "demo latents are the segments' frames / 4");
  EXPECT(!strcmp(cfg[3].train.mode, "teacher") && !strcmp(cfg[4].train.mode, "vae") &&
             !strcmp(cfg[5].train.mode, "vocoder"),
         "demo stage modes");
}

TEST(config_resolve_optional_leaves_training_keys_unset_but_checks_the_rest) {
  /* ./infer: no train.steps, no data.train_shards, yet every key given is still checked. */
  Config cfg;
  McmErr err = {{0}};
  char *ok[] = {"infer.window_frames=32", "run.seed=3"};
  ASSERT(config_resolve_optional(&cfg, NULL, 2, ok, &err) == 0, "%s", err.msg);
  EXPECT(cfg.infer.window_frames == 32 && cfg.run.seed == 3 && !strcmp(cfg.infer.fuse, "average"), "values");
  EXPECT(config_resolve(&cfg, NULL, 2, ok, &err) != 0 && strstr(err.msg, "train.steps"), "strict: %s", err.msg);
  char *bad[] = {"infer.window_frames=-2"};
  EXPECT(config_resolve_optional(&cfg, NULL, 1, bad, &err) != 0 && strstr(err.msg, "infer.window_frames"), "%s",
         err.msg);
  char *gap[] = {"infer.window_frames=16", "infer.stride_frames=20"};
  EXPECT(config_resolve_optional(&cfg, NULL, 2, gap, &err) != 0 && strstr(err.msg, "infer.stride_frames = 20"), "%s",
         err.msg);
}

TEST(config_set_overrides_file_and_default) {
  char *sets[] = {"train.batch_size=2", "run.seed = 7", "train.lr=3e-4", "train.lr=5e-4", "train.adversarial=no"};
  Config cfg;
  McmErr err = {{0}};
  ASSERT(config_resolve(&cfg, "configs/demo.ini", 5, sets, &err) == 0, "%s", err.msg);
  EXPECT(cfg.train.batch_size == 2, "file value 4 overridden: %lld", (long long)cfg.train.batch_size);
  EXPECT(cfg.run.seed == 7, "seed = %lld", (long long)cfg.run.seed);
  EXPECT(cfg.train.lr == 5e-4, "the last --set wins: %g", cfg.train.lr);
  EXPECT(!cfg.train.adversarial, "default true overridden");
  EXPECT(!strcmp(origin_of(&cfg, "train", "batch_size"), "--set"), "origin %s", origin_of(&cfg, "train", "batch_size"));
  EXPECT(!strcmp(origin_of(&cfg, "run", "seed"), "--set"), "origin");
  EXPECT(!strcmp(origin_of(&cfg, "train", "ema_decay"), "default"), "untouched key keeps 'default'");
}

TEST(config_set_supplies_a_missing_required_key) {
  const char *path = TEST_PATH("nosteps.ini");
  write_file(path, "[data]\ntrain_shards = x.h5\n");
  Config cfg;
  McmErr err = {{0}};
  char *sets[] = {"train.steps=5"};
  EXPECT(config_resolve(&cfg, path, 0, NULL, &err) == -1, "steps is required");
  EXPECT_STR_CONTAINS(err.msg, "nosteps.ini");
  EXPECT_STR_CONTAINS(err.msg, "missing required key train.steps");
  ASSERT(config_resolve(&cfg, path, 1, sets, &err) == 0, "%s", err.msg);
  EXPECT(cfg.train.steps == 5, "steps %lld", (long long)cfg.train.steps);
  /* No file at all: everything required comes from --set. */
  char *all[] = {"train.steps=1", "data.train_shards=y.h5"};
  EXPECT(config_resolve(&cfg, NULL, 2, all, &err) == 0, "%s", err.msg);
  EXPECT(config_resolve(&cfg, NULL, 1, all, &err) == -1, "train_shards missing");
  EXPECT_STR_CONTAINS(err.msg, "missing required key data.train_shards");
  EXPECT_STR_CONTAINS(err.msg, "--set data.train_shards=");
}

/* ------------------------------------------------------------------ round trip, print, help */

TEST(config_string_round_trip_is_identical) {
  char *sets[] = {"train.steps=1000",        "data.train_shards=/d/shard #1 = a:b.h5", "train.lr=0.1",
                  "train.huber_c=1e-300",    "train.guidance_w=123456.789",            "train.ema_decay=0.3333333333333333",
                  "unet.channel_mult=1,2,4,8", "run.device=cuda:3",                      "run.seed=9007199254740993",
                  "checkpoint.init=",        "train.weight_decay=5e-324"};
  Config a, b;
  McmErr err = {{0}};
  ASSERT(config_resolve(&a, NULL, 11, sets, &err) == 0, "%s", err.msg);
  char *text = config_to_string(&a);
  ASSERT(text, "config_to_string");
  EXPECT_STR_CONTAINS(text, "\nlr = 0.1\n");
  EXPECT_STR_CONTAINS(text, "\nchannel_mult = 1,2,4,8\n");
  memset(&b, 0, sizeof b); /* nothing from defaults: every key must come from the text */
  ASSERT(config_parse_string(&b, text, "checkpoint step_1000", &err) == 0, "%s\n%s", err.msg, text);
  EXPECT(count_differences(&a, &b) == 0, "round trip differs:\n%s", text);
  EXPECT(config_validate(&b, &err) == 0, "%s", err.msg);
  for (int i = 0; i < MCM_SCHEMA_N; i++)
    EXPECT(strstr(b.origin[i], "checkpoint step_1000:"), "origin %s", b.origin[i]);
  char *again = config_to_string(&b);
  EXPECT(!strcmp(text, again), "second round differs");
  free(again);
  free(text);
}

TEST(config_round_trip_keeps_unset_required_keys_unset) {
  Config a, b;
  McmErr err = {{0}};
  config_defaults(&a);
  char *text = config_to_string(&a);
  EXPECT_STR_CONTAINS(text, "; steps = (required, not set)");
  config_defaults(&b);
  ASSERT(config_parse_string(&b, text, "saved", &err) == 0, "%s", err.msg);
  EXPECT(count_differences(&a, &b) == 0, "differs");
  EXPECT(!strcmp(origin_of(&b, "train", "steps"), ""), "steps stays unset");
  free(text);
}

TEST(config_print_gives_origins_and_parses_back) {
  const char *path = TEST_PATH("p.ini");
  write_file(path, "[train]\nsteps = 3\n[data]\ntrain_shards = s.h5\n");
  char *sets[] = {"train.lr=2e-5"};
  Config a, b;
  McmErr err = {{0}};
  ASSERT(config_resolve(&a, path, 1, sets, &err) == 0, "%s", err.msg);
  char *text = capture_print(&a, false);
  EXPECT_STR_CONTAINS(text, "p.ini:2\n");
  EXPECT_STR_CONTAINS(text, "p.ini:4\n");
  EXPECT_STR_CONTAINS(text, "; --set\n");
  EXPECT_STR_CONTAINS(text, "; default\n");
  EXPECT_STR_CONTAINS(text, "[checkpoint]\n");
  config_defaults(&b);
  ASSERT(config_parse_string(&b, text, "printed", &err) == 0, "%s", err.msg);
  EXPECT(count_differences(&a, &b) == 0, "printed config differs");
  free(text);
}

TEST(config_help_lists_every_key) {
  char *text = capture_print(NULL, true);
  char want[128];
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const CfgKey *k = &MCM_SCHEMA[i];
    snprintf(want, sizeof want, "[%s]\n", k->section);
    EXPECT_STR_CONTAINS(text, want);
    snprintf(want, sizeof want, "\n  %s ", k->key);
    EXPECT_STR_CONTAINS(text, want);
    EXPECT_STR_CONTAINS(text, k->help);
  }
  EXPECT_STR_CONTAINS(text, "an integer >= 1; required");
  EXPECT_STR_CONTAINS(text, "one of distill|teacher|vae|vocoder; default distill");
  EXPECT_STR_CONTAINS(text, "a number in (0, 1]; default 1e-5");
  EXPECT_STR_CONTAINS(text, "--set section.key=value");
  free(text);
}

/* ------------------------------------------------------------------ bad files */

typedef struct {
  const char *file, *text;
  int line;
  const char *needle[2];
} BadCase;

static const BadCase BAD[] = {
    {"unknown_section.ini", "[run]\nseed = 1\n[trian]\nsteps = 3\n", 3, {"unknown section [trian] (did you mean [train]?)", "[checkpoint], [unet]"}},
    {"empty_section.ini", "[train]\nsteps = 1\n[optim]\n", 3, {"unknown section [optim]", "valid sections: [run], [train]"}},
    {"key_suggest.ini", "[train]\nsteps = 3\nbatchsize = 4\n", 3, {"unknown key 'batchsize' in [train]", "did you mean 'batch_size'?"}},
    {"key_elsewhere.ini", "[run]\nlr = 1e-4\n", 2, {"unknown key 'lr' in [run]", "'lr' is a key of [train]"}},
    {"key_list.ini", "[data]\nshards = x\n", 2, {"unknown key 'shards' in [data]", "valid keys: train_shards, num_workers"}},
    {"int_suffix.ini", "[train]\nsteps = 12x\n", 2, {"train.steps = '12x'", "expected an integer >= 1"}},
    {"int_float.ini", "[train]\nsteps = 1e3\n", 2, {"train.steps = '1e3'", "expected an integer"}},
    {"int_overflow.ini", "[run]\nseed = 99999999999999999999\n", 2, {"run.seed = '99999999999999999999'", "expected an integer >= 0 (this one is beyond 64 bits)"}},
    {"float_nan.ini", "[train]\n\nlr = nan\n", 3, {"train.lr = 'nan'", "nan, inf and values beyond a double are rejected"}},
    {"float_inf.ini", "[train]\nguidance_w = inf\n", 2, {"train.guidance_w = 'inf'", "expected a number >= 0"}},
    {"float_junk.ini", "[train]\nweight_decay = 0.1.2\n", 2, {"train.weight_decay = '0.1.2'", "expected a number in [0, 1]"}},
    {"bool_bad.ini", "[train]\nadversarial = maybe\n", 2, {"train.adversarial = 'maybe'", "true/false, yes/no, on/off or 1/0"}},
    {"int_range.ini", "[train]\nbatch_size = 0\n", 2, {"train.batch_size = '0': out of range", "in [1, 65536]"}},
    {"float_range_open.ini", "[train]\nlr = 0\n", 2, {"train.lr = '0': out of range", "a number in (0, 1]"}},
    {"float_range.ini", "[train]\nema_decay = 1.5\n", 2, {"train.ema_decay = '1.5': out of range", "in [0, 1]"}},
    {"enum_bad.ini", "[train]\nmode = distil\n", 2, {"train.mode = 'distil': expected one of distill|teacher|vae|vocoder", "did you mean 'distill'?"}},
    {"list_empty_elem.ini", "[unet]\nchannel_mult = 1,,2\n", 2, {"unet.channel_mult = '1,,2'", "element 2 is empty"}},
    {"list_bad_elem.ini", "[unet]\nchannel_mult = 1,two\n", 2, {"unet.channel_mult = '1,two'", "element 2 'two' is not valid"}},
    {"list_too_long.ini", "[unet]\nchannel_mult = 1,1,1,1,1,1,1,1,1\n", 2, {"unet.channel_mult", "has 9 elements; expected a comma-separated list of 1 to 8 integers"}},
    {"list_range.ini", "[unet]\nattention_levels = 1,9\n", 2, {"unet.attention_levels = '1,9'", "element 2 (9) is out of range; expected a comma-separated list of 1 to 8 integers, each in [0, 7]"}},
    {"duplicate.ini", "[train]\nsteps = 1\nlr = 1e-4\nsteps = 2\n", 4, {"duplicate key train.steps", "first set at line 2"}},
    {"outside.ini", "steps = 3\n[train]\n", 1, {"key 'steps' is outside any section", "put it under [train]"}},
    {"malformed.ini", "[train]\nsteps = 3\nlr 1e-4\n", 3, {"malformed line 'lr 1e-4'", "expected 'key = value'"}},
    {"malformed_header.ini", "[train\nsteps = 3\n", 1, {"malformed line '[train'", "'[section]'"}},
    {"continuation.ini", "[train]\nsteps = 3\n    4\n", 3, {"malformed line '4'", "key = value"}},
    {"malformed_first.ini", "[train]\nfoo\nlr = abc\n", 2, {"malformed line 'foo'", "key = value"}},
    {"empty_value.ini", "[train]\nlr =\n", 2, {"train.lr is empty", "expected a number in (0, 1]"}},
    {"no_name.ini", "[train]\n= 3\n", 2, {"no key name", "[train]"}},
    {"quoted.ini", "[run]\nout_dir = \"runs/x\"\n", 2, {"run.out_dir = '\"runs/x\"'", "is quoted"}},
    {"hash_comment.ini", "; c\n\n# c\n[train]\nsteps = 3 # three\n", 5, {"train.steps = '3 # three'", "inline comments start with ' ;'"}},
    {"device.ini", "[run]\ndevice = gpu\n", 2, {"run.device = 'gpu'", "expected auto, cpu, cuda or cuda:N"}},
    {"device_index.ini", "[run]\ndevice = cuda:x\n", 2, {"run.device = 'cuda:x'", "cuda:N"}},
    {"crlf.ini", "[train]\r\nsteps = 3\r\nlr = x\r\n", 3, {"train.lr = 'x'", "expected a number"}},
};

TEST(config_bad_files_say_file_line_and_what) {
  for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
    const BadCase *c = &BAD[i];
    const char *path = TEST_PATH(c->file);
    write_file(path, c->text);
    Config cfg;
    McmErr err = {{0}};
    config_defaults(&cfg);
    EXPECT(config_parse_file(&cfg, path, &err) == -1, "%s: parsed without error", c->file);
    char where[128];
    snprintf(where, sizeof where, "%s:%d: ", c->file, c->line);
    EXPECT_STR_CONTAINS(err.msg, where);
    for (int j = 0; j < 2; j++) EXPECT_STR_CONTAINS(err.msg, c->needle[j]);
    EXPECT(!strchr(err.msg, '\n'), "%s: message is not one line", c->file);
  }
}

TEST(config_rejected_value_leaves_the_field) {
  const char *path = TEST_PATH("partial.ini");
  write_file(path, "[train]\nbatch_size = 0\n");
  Config cfg;
  McmErr err;
  config_defaults(&cfg);
  EXPECT(config_parse_file(&cfg, path, &err) == -1, "rejected");
  EXPECT(cfg.train.batch_size == 8 && !strcmp(origin_of(&cfg, "train", "batch_size"), "default"), "field kept");
}

TEST(config_long_line_and_nul_byte) {
  char text[400];
  snprintf(text, sizeof text, "[run]\nout_dir = %0300d\n", 0);
  const char *path = TEST_PATH("long.ini");
  write_file(path, text);
  Config cfg;
  McmErr err;
  config_defaults(&cfg);
  EXPECT(config_parse_file(&cfg, path, &err) == -1, "long line accepted");
  EXPECT_STR_CONTAINS(err.msg, "long.ini:2: line is 310 characters long; at most 198 fit");

  path = TEST_PATH("nul.ini");
  FILE *f = fopen(path, "wb");
  ASSERT(f, "open");
  fwrite("[train]\nsteps = 1\0 2\n", 1, 21, f);
  fclose(f);
  EXPECT(config_parse_file(&cfg, path, &err) == -1, "NUL accepted");
  EXPECT_STR_CONTAINS(err.msg, "nul.ini:2: line contains a NUL byte");
}

TEST(config_missing_or_unreadable_file) {
  Config cfg;
  McmErr err;
  config_defaults(&cfg);
  const char *missing = TEST_PATH("no/such.ini");
  EXPECT(config_parse_file(&cfg, missing, &err) == -1, "missing file");
  EXPECT_STR_CONTAINS(err.msg, "such.ini: cannot open the config file: No such file or directory");
  const char *dir = TEST_PATH("adir.ini");
  ASSERT(mkdir(dir, 0700) == 0, "mkdir");
  EXPECT(config_parse_file(&cfg, dir, &err) == -1, "directory");
  EXPECT_STR_CONTAINS(err.msg, "adir.ini: cannot read the config file: Is a directory");
}

TEST(config_required_string_must_not_be_empty) {
  const char *path = TEST_PATH("empty_shards.ini");
  write_file(path, "[train]\nsteps = 1\n[data]\ntrain_shards =\n");
  Config cfg;
  McmErr err;
  EXPECT(config_resolve(&cfg, path, 0, NULL, &err) == -1, "empty train_shards");
  EXPECT_STR_CONTAINS(err.msg, "empty_shards.ini:4: data.train_shards is empty");
}

/* ------------------------------------------------------------------ bad --set */

TEST(config_bad_set_says_which_set) {
  static const struct {
    const char *set, *needle;
  } cases[] = {
      {"train.lr=abc", "--set train.lr=abc: train.lr = 'abc': expected a number in (0, 1]"},
      {"train.lr", "--set train.lr: expected section.key=value"},
      {"lr=1e-4", "--set lr=1e-4: expected section.key=value"},
      {"trian.lr=1", "--set trian.lr=1: unknown section [trian] (did you mean [train]?)"},
      {"train.lrr=1", "--set train.lrr=1: unknown key 'lrr' in [train] (did you mean 'lr'?)"},
      {"train.steps=", "--set train.steps=: train.steps is empty; expected an integer >= 1"},
      {"run.device=cuda:", "expected auto, cpu, cuda or cuda:N"},
      {"run.out_dir=a ;b", "contains a ';' after a space"},
      {"unet.channel_mult=1, 2, 0", "element 3 (0) is out of range"},
  };
  Config cfg;
  McmErr err;
  config_defaults(&cfg);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    EXPECT(config_set(&cfg, cases[i].set, &err) == -1, "--set %s accepted", cases[i].set);
    EXPECT_STR_CONTAINS(err.msg, cases[i].needle);
  }
  char long_set[700];
  snprintf(long_set, sizeof long_set, "run.out_dir=%0600d", 0);
  EXPECT(config_set(&cfg, long_set, &err) == -1, "600-character string accepted");
  EXPECT_STR_CONTAINS(err.msg, "is 600 characters long; at most 511 fit");
  snprintf(long_set, sizeof long_set, "run.out_dir=%0300d", 0);
  EXPECT(config_set(&cfg, long_set, &err) == -1, "300-character string accepted");
  EXPECT_STR_CONTAINS(err.msg, "is 300 characters long; at most 188 fit on one INI line");
  EXPECT(!strcmp(cfg.run.out_dir, "runs/mcm"), "rejected --set changed the field");
}

/* ------------------------------------------------------------------ cross-key checks */

TEST(config_cross_key_checks_blame_the_right_line) {
  const char *path = TEST_PATH("cross.ini");
  write_file(path,
             "[train]\nsteps = 1\n[data]\ntrain_shards = s.h5\n"
             "[unet]\nchannel_mult = 1,2\nattention_levels = 1,2\n");
  Config cfg;
  McmErr err;
  EXPECT(config_resolve(&cfg, path, 0, NULL, &err) == -1, "attention on a missing level");
  EXPECT_STR_CONTAINS(err.msg, "cross.ini:7: unet.attention_levels = 1,2: level 2 does not exist");
  EXPECT_STR_CONTAINS(err.msg, "levels 0..1");

  char *fix[] = {"unet.attention_levels=1"};
  EXPECT(config_resolve(&cfg, path, 1, fix, &err) == 0, "%s", err.msg);

  /* The default attention_levels no longer fit a 2-level UNet set from the command line. */
  char *sets[] = {"train.steps=1", "data.train_shards=s", "unet.channel_mult=1,2"};
  EXPECT(config_resolve(&cfg, NULL, 3, sets, &err) == -1, "default attention_levels vs 2 levels");
  EXPECT_STR_CONTAINS(err.msg, "default unet.attention_levels: unet.attention_levels = 1,2,3");

  char *heads[] = {"train.steps=1", "data.train_shards=s", "unet.num_head_channels=48"};
  EXPECT(config_resolve(&cfg, NULL, 3, heads, &err) == -1, "heads do not divide");
  EXPECT_STR_CONTAINS(err.msg, "--set unet.num_head_channels: unet.num_head_channels = 48 does not divide the 256");

  char *lat[] = {"train.steps=1", "data.train_shards=s", "unet.latent_bins=12"};
  EXPECT(config_resolve(&cfg, NULL, 3, lat, &err) == -1, "latent_bins not divisible");
  EXPECT_STR_CONTAINS(err.msg, "unet.latent_bins = 12 is not divisible by 8");

  char *grid[] = {"train.steps=1", "data.train_shards=s", "train.skip_k=21"};
  EXPECT(config_resolve(&cfg, NULL, 3, grid, &err) == -1, "grid beyond 1000 timesteps");
  EXPECT_STR_CONTAINS(err.msg, "train.skip_k = 21 with train.num_ddim_steps = 50 spans 1050 timesteps");
}
