/* bench: mcm's networks, the 4-step sampler and the student's training step, timed on one
 * device: the mcm half of `make bench` (DESIGN §4). tools/bench_torch.py times the same
 * computations in PyTorch and tools/bench_report.py joins the two JSON files into a table.
 *
 *   bench --device cpu|cuda --size full|small [--iters N] [--warmup N] [--only CASE[,CASE]]
 *         [--out FILE.json] [--mcm-version STR] [--batch N]
 *
 * Cases (fp32, and bf16 where the network is frozen: unet_cast & co.; inputs and outputs stay
 * fp32 either way). Full size is the released MusicLDM / AudioMAE ViT-B (models/weights.h's
 * random_bundle_full):
 *   unet_fwd    UNet forward, B = 2 (the two guidance halves), latent 8×256×16, CLAP 512
 *   unet_train  UNet forward + MSE + backward, trainable, B = 8, fp32 only: the student's
 *               share of a distillation step
 *   vae_decode  VAE decoder, B = 1, latent 8×256×16 → mel 1024×64 (10.24 s)
 *   vocoder     HiFi-GAN, B = 1, mel 1024×64 → 163872 samples
 *   audiomae    AudioMAE ViT-B forward to the adversarial taps (adv_config_default) and the
 *               gradient of Σ taps with respect to the fbank (frozen weights), B = 8, 1024×128
 *   sample_cm4  one 10.24 s clip without text encoding: 4 consistency steps (4 UNet calls,
 *               B = 1, no guidance), VAE decode, vocoder (as pipeline_generate runs them)
 * --size small runs tiny configurations (SIZES in tools/bench_torch.py is the same table) so
 * the CPU checks the harness in seconds.
 *
 * Each (case, dtype) row builds its models in a fresh context, random weights from the
 * context's RNG, runs `warmup` untimed iterations (cuDNN's algorithm choice, arena growth),
 * then `iters` timed ones, each between two ctx_sync calls with the arena reset after it, and
 * reports the median. FLOPs are the ctx->flops delta of one iteration (matrix products only:
 * the trainer's MFU numerator), so TFLOP/s is comparable across rows and with PyTorch's time.
 * Bad options: one line, exit 2. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cli.h"
#include "core/io.h"
#include "diffusion/adversarial.h"
#include "diffusion/sampler.h"
#include "diffusion/schedule.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/audiomae.h"
#include "models/hifigan.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/weights.h"

/* ================================================================ sizes */

typedef struct Sizes {
  UNetConfig unet;
  VaeConfig vae;
  HifiganConfig voc;
  AudioMAEConfig mae;
  int taps[ADV_MAX_TAPS], n_taps;
  int lat_h, lat_w;               /* latent frames × bins (the VAE's input, the UNet's x) */
  int b_fwd, b_train, b_mae;      /* batches of unet_fwd, unet_train, audiomae */
} Sizes;

static Sizes sizes_full(void) {
  Sizes s = {.unet = unet_config_musicldm(), .vae = vae_config_musicldm(), .voc = hifigan_config_musicldm(),
             .mae = audiomae_config_vit_b(), .lat_h = 256, .lat_w = 16, .b_fwd = 2, .b_train = 8, .b_mae = 8};
  AdvConfig adv = adv_config_default();
  memcpy(s.taps, adv.taps, sizeof s.taps);
  s.n_taps = adv.n_taps;
  return s;
}

/* Tiny but every block kind present; bench_torch.py's SIZES["small"] must say the same. */
static Sizes sizes_small(void) {
  Sizes s = sizes_full();
  UNetConfig *u = &s.unet;
  u->levels = 2;
  u->block_out_channels[0] = 32, u->block_out_channels[1] = 64;
  u->attention[0] = false, u->attention[1] = true;
  u->layers_per_block = 1;
  u->norm_groups = 8;
  u->num_head_channels = 16;
  u->time_proj_dim = 32;  /* diffusers: block_out_channels[0] */
  u->time_embed_dim = 128; /* diffusers: 4 · block_out_channels[0] */
  u->class_embed_in = 32;

  VaeConfig *v = &s.vae;
  v->n_blocks = 2;
  v->block_out_channels[0] = 32, v->block_out_channels[1] = 64;
  v->layers_per_block = 1;
  v->norm_num_groups = 8;

  s.voc = random_bundle_tiny(NULL).vocoder; /* 16 mels, 32 channels, rates 5, 4, 2, 2, 2 */

  AudioMAEConfig *m = &s.mae;
  m->img_t = 64, m->img_f = 32, m->patch = 8, m->embed_dim = 64, m->depth = 4, m->num_heads = 4;
  const int taps[] = {-1, 1, 3};
  memcpy(s.taps, taps, sizeof taps);
  s.n_taps = 3;

  s.lat_h = 32, s.lat_w = 8;
  return s;
}

/* ================================================================ one row's state */

typedef struct Bench {
  Ctx *ctx;
  const Sizes *sz;
  DType dt;
  ParamSet ps[3];
  int n_ps;
  Unet *unet;
  Vae *vae;
  Hifigan *voc;
  AudioMAE *mae;
  Schedule sched;
  bool has_sched;
  Tensor *x, *t, *cond, *target, *mel_buf; /* persistent inputs and buffers */
  char shape[192];                         /* what the row computes, as bench_torch.py writes it */
} Bench;

static ParamSet *new_ps(Bench *b, bool trainable) {
  ParamSet *ps = &b->ps[b->n_ps++];
  params_init(ps, "");
  ps->trainable = trainable;
  return ps;
}

static Tensor *randn_persistent(Ctx *ctx, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  rng_normal(ctx, t);
  return t;
}

/* (B) timesteps, all `value`. */
static Tensor *timesteps(Ctx *ctx, int B, float value) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, SHAPE(B));
  tensor_fill(ctx, t, value);
  return t;
}

static Unet *make_unet(Bench *b, bool trainable) {
  Unet *u = unet_create(b->ctx, &b->sz->unet, new_ps(b, trainable));
  unet_init_random(b->ctx, u);
  if (b->dt == DT_BF16) unet_cast(b->ctx, u, DT_BF16);
  return u;
}

static Vae *make_vae(Bench *b) {
  Vae *v = vae_create(b->ctx, &b->sz->vae, new_ps(b, false));
  vae_init_random(b->ctx, v);
  if (b->dt == DT_BF16) vae_cast(b->ctx, v, DT_BF16);
  return v;
}

static Hifigan *make_vocoder(Bench *b) {
  Hifigan *h = hifigan_create(b->ctx, &b->sz->voc, new_ps(b, false));
  hifigan_init_random(b->ctx, h);
  if (b->dt == DT_BF16) hifigan_cast(b->ctx, h, DT_BF16);
  return h;
}

/* Mel frames and bins the VAE decodes the latent to. */
static int mel_frames(const Sizes *sz) { return sz->lat_h * vae_downsample_factor(&sz->vae); }
static int mel_bins(const Sizes *sz) { return sz->lat_w * vae_downsample_factor(&sz->vae); }

/* ================================================================ the cases */

static void setup_unet(Bench *b, int B, bool train) {
  const Sizes *sz = b->sz;
  b->unet = make_unet(b, train);
  b->x = randn_persistent(b->ctx, SHAPE(B, sz->unet.in_channels, sz->lat_h, sz->lat_w));
  b->t = timesteps(b->ctx, B, 500.0f);
  b->cond = randn_persistent(b->ctx, SHAPE(B, sz->unet.class_embed_in));
  if (train) b->target = randn_persistent(b->ctx, SHAPE(B, sz->unet.out_channels, sz->lat_h, sz->lat_w));
  snprintf(b->shape, sizeof b->shape, "B=%d x %dx%dx%d emb %d", B, sz->unet.in_channels, sz->lat_h, sz->lat_w,
           sz->unet.class_embed_in);
}

static void setup_unet_fwd(Bench *b) { setup_unet(b, b->sz->b_fwd, false); }
static void setup_unet_train(Bench *b) { setup_unet(b, b->sz->b_train, true); }

static void run_unet_fwd(Bench *b) { unet_forward(b->ctx, b->unet, b->x, b->t, b->cond); }

/* Gradients accumulate: zero them outside the timed region, as PyTorch's zero_grad is. */
static void prep_unet_train(Bench *b) { params_zero_grad(b->ctx, b->ps[0].p, b->ps[0].n); }

static void run_unet_train(Bench *b) {
  Tensor *y = unet_forward(b->ctx, b->unet, b->x, b->t, b->cond); /* (B, C, H, W) */
  backward(b->ctx, op_mse(b->ctx, y, b->target));
}

static void setup_vae_decode(Bench *b) {
  const Sizes *sz = b->sz;
  b->vae = make_vae(b);
  b->x = randn_persistent(b->ctx, SHAPE(1, sz->vae.latent_channels, sz->lat_h, sz->lat_w));
  snprintf(b->shape, sizeof b->shape, "B=1 z %dx%dx%d -> mel %dx%d", sz->vae.latent_channels, sz->lat_h, sz->lat_w,
           mel_frames(sz), mel_bins(sz));
}

static void run_vae_decode(Bench *b) { vae_decode(b->ctx, b->vae, b->x); }

static void setup_vocoder(Bench *b) {
  const Sizes *sz = b->sz;
  b->voc = make_vocoder(b);
  b->x = randn_persistent(b->ctx, SHAPE(1, mel_frames(sz), sz->voc.model_in_dim)); /* (B, T, M) */
  snprintf(b->shape, sizeof b->shape, "B=1 mel %dx%d -> %lld samples", mel_frames(sz), sz->voc.model_in_dim,
           (long long)hifigan_out_len(&sz->voc, mel_frames(sz)));
}

static void run_vocoder(Bench *b) { hifigan_forward(b->ctx, b->voc, b->x); }

static void setup_audiomae(Bench *b) {
  const Sizes *sz = b->sz;
  b->mae = audiomae_create(b->ctx, &sz->mae, new_ps(b, false));
  audiomae_init_random(b->ctx, b->mae);
  if (b->dt == DT_BF16) audiomae_cast(b->ctx, b->mae, DT_BF16);
  b->x = randn_persistent(b->ctx, SHAPE(sz->b_mae, sz->mae.in_chans, sz->mae.img_t, sz->mae.img_f));
  b->x->requires_grad = true; /* the generated mel's gradient is all the trainer needs */
  int n = snprintf(b->shape, sizeof b->shape, "B=%d fbank %dx%d taps ", sz->b_mae, sz->mae.img_t, sz->mae.img_f);
  for (int i = 0; i < sz->n_taps && n < (int)sizeof b->shape; i++)
    n += snprintf(b->shape + n, sizeof b->shape - (size_t)n, i ? ",%d" : "%d", sz->taps[i]);
}

static void run_audiomae(Bench *b) {
  Tensor *taps[ADV_MAX_TAPS]; /* (B, C, N) each */
  audiomae_forward(b->ctx, b->mae, b->x, b->sz->taps, b->sz->n_taps, taps, NULL);
  Tensor *loss = op_sum(b->ctx, taps[0]);
  for (int i = 1; i < b->sz->n_taps; i++) loss = op_add(b->ctx, loss, op_sum(b->ctx, taps[i]));
  backward(b->ctx, loss);
}

/* The UNet as the sampler's denoiser (diffusion/pipeline.c's unet_eps). */
static Tensor *unet_eps(Ctx *ctx, void *user, Tensor *x, const float *t, Tensor *cond) {
  Tensor *tt = tensor_new(ctx, DT_F32, SHAPE(x->shape[0])); /* (B) */
  tensor_from_host_f32(ctx, tt, t);
  return unet_forward(ctx, user, x, tt, cond);
}

#define SAMPLE_STEPS 4

static void setup_sample(Bench *b) {
  const Sizes *sz = b->sz;
  McmErr err;
  ScheduleConfig sc = schedule_config_musicldm();
  MCM_CHECK(!schedule_init(&b->sched, &sc, &err), "bench: %s", err.msg);
  b->has_sched = true;
  b->unet = make_unet(b, false);
  b->vae = make_vae(b);
  b->voc = make_vocoder(b);
  b->x = randn_persistent(b->ctx, SHAPE(1, sz->unet.in_channels, sz->lat_h, sz->lat_w)); /* x_T */
  b->cond = randn_persistent(b->ctx, SHAPE(1, sz->unet.class_embed_in));
  b->mel_buf = tensor_new_persistent(b->ctx, DT_F32, SHAPE(1, mel_frames(sz), mel_bins(sz)));
  snprintf(b->shape, sizeof b->shape, "B=1 %d steps z %dx%dx%d -> %lld samples", SAMPLE_STEPS,
           sz->unet.in_channels, sz->lat_h, sz->lat_w, (long long)hifigan_out_len(&sz->voc, mel_frames(sz)));
}

/* As pipeline_generate: sample, decode the unscaled latent, keep the mel and free the arena
 * before the vocoder (so the peak is the larger stage, not the sum). */
static void run_sample(Bench *b) {
  Ctx *ctx = b->ctx;
  McmErr err;
  SamplerOpts so = sampler_opts_default();
  Tensor *lat = sample_cm(ctx, unet_eps, b->unet, &b->sched, b->x, b->cond, SAMPLE_STEPS, &so, &err);
  MCM_CHECK(lat, "bench: sample_cm: %s", err.msg);
  Tensor *mel = vae_decode(ctx, b->vae, op_scale(ctx, lat, 1.0f / b->vae->cfg.scaling_factor)); /* (1, 1, T, M) */
  tensor_copy(ctx, b->mel_buf, op_reshape(ctx, mel, b->mel_buf->ndim, b->mel_buf->shape));
  ctx_step_reset(ctx);
  hifigan_forward(ctx, b->voc, b->mel_buf); /* (1, L) */
}

typedef struct Case {
  const char *name;
  bool bf16;  /* a bf16 row too (frozen networks only) */
  bool grad;  /* grad mode */
  void (*setup)(Bench *b);
  void (*prep)(Bench *b); /* before each iteration, untimed; NULL: nothing */
  void (*run)(Bench *b);
} Case;

static const Case CASES[] = {
    {"unet_fwd", true, false, setup_unet_fwd, NULL, run_unet_fwd},
    {"unet_train", false, true, setup_unet_train, prep_unet_train, run_unet_train},
    {"vae_decode", true, false, setup_vae_decode, NULL, run_vae_decode},
    {"vocoder", true, false, setup_vocoder, NULL, run_vocoder},
    {"audiomae", true, true, setup_audiomae, NULL, run_audiomae},
    {"sample_cm4", true, false, setup_sample, NULL, run_sample},
};
#define N_CASES ((int)(sizeof CASES / sizeof *CASES))

/* ================================================================ timing */

typedef struct Options {
  DeviceSpec dev;
  const char *device, *size, *out, *version;
  int iters, warmup, batch;
  bool only[N_CASES];
  bool any_only;
} Options;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static Ctx *make_ctx(const Options *o) {
  McmErr err;
  Ctx *ctx = ctx_create(&o->dev, 0, &err);
  MCM_CHECK(ctx, "bench: %s", err.msg);
  MCM_CHECK(ctx->dev == o->dev.kind, "bench: asked for %s, got %s", o->device, ctx->device_name);
  return ctx;
}

/* One (case, dtype) row: builds, warms up, times; appends its JSON object to rows. */
static void run_row(const Options *o, const Sizes *sz, const Case *c, DType dt, json_t *rows, json_t *meta) {
  Bench b = {.ctx = make_ctx(o), .sz = sz, .dt = dt};
  Ctx *ctx = b.ctx;
  ctx_set_grad(ctx, c->grad);
  c->setup(&b);
  ctx_sync(ctx);
  ctx_step_reset(ctx);
  if (!json_object_get(meta, "device")) json_object_set_new(meta, "device", json_string(ctx->device_name));
  for (int i = 0; i < o->warmup; i++) {
    if (c->prep) c->prep(&b);
    c->run(&b);
    ctx_sync(ctx);
    ctx_step_reset(ctx);
  }
  double *ms = MALLOC_CHECK((size_t)o->iters * sizeof(double));
  double flops = 0, flops_bf16 = 0;
  for (int i = 0; i < o->iters; i++) {
    if (c->prep) c->prep(&b);
    double f0 = ctx->flops, g0 = ctx->flops_bf16;
    ctx_sync(ctx);
    double t0 = now();
    c->run(&b);
    ctx_sync(ctx);
    ms[i] = 1e3 * (now() - t0);
    if (i == 0) flops = ctx->flops - f0, flops_bf16 = ctx->flops_bf16 - g0;
    ctx_step_reset(ctx);
  }
  json_t *times = json_array();
  for (int i = 0; i < o->iters; i++) json_array_append_new(times, json_real(ms[i]));
  qsort(ms, (size_t)o->iters, sizeof *ms, cmp_double);
  double med = ms[o->iters / 2], tflops = flops / (med * 1e-3) * 1e-12;
  double peak = device_peak_tflops(ctx->device_name, dt == DT_BF16);
  size_t act = ctx->act.high_water > ctx->act.used ? ctx->act.high_water : ctx->act.used;

  json_t *r = json_object();
  json_object_set_new(r, "case", json_string(c->name));
  json_object_set_new(r, "dtype", json_string(dt == DT_BF16 ? "bf16" : "fp32"));
  json_object_set_new(r, "shape", json_string(b.shape));
  json_object_set_new(r, "ms", json_real(med));
  json_object_set_new(r, "ms_min", json_real(ms[0]));
  json_object_set_new(r, "ms_max", json_real(ms[o->iters - 1]));
  json_object_set_new(r, "times_ms", times);
  json_object_set_new(r, "flops", json_real(flops));
  json_object_set_new(r, "flops_bf16", json_real(flops_bf16));
  json_object_set_new(r, "tflops", json_real(tflops));
  json_object_set_new(r, "mfu", peak > 0 ? json_real(tflops / peak) : json_null());
  json_object_set_new(r, "act_peak_bytes", json_integer((json_int_t)act));
  json_array_append_new(rows, r);
  printf("%-11s %-4s %10.3f ms  (min %.3f, max %.3f)  %8.2f GFLOP  %7.2f TFLOP/s  act %.2f GiB  [%s]\n", c->name,
         dt == DT_BF16 ? "bf16" : "fp32", med, ms[0], ms[o->iters - 1], flops * 1e-9, tflops,
         (double)act / (double)(1u << 30), b.shape);
  fflush(stdout);

  free(ms);
  if (b.has_sched) schedule_free(&b.sched);
  for (int i = 0; i < b.n_ps; i++) params_free(&b.ps[i]);
  ctx_destroy(ctx);
}

/* ================================================================ options */

static const char USAGE[] =
    "usage: bench --device cpu|cuda --size full|small [--iters N] [--warmup N] [--only CASE[,CASE...]]\n"
    "             [--out FILE.json] [--mcm-version STR] [--batch N]\n"
    "\n"
    "Times mcm's networks on one device (median of N iterations after the warm-up), in fp32\n"
    "and bf16, with random weights. make bench runs it beside tools/bench_torch.py.\n"
    "\n"
    "  --device        cpu or cuda (required; cuda needs a CUDA build and a visible GPU)\n"
    "  --size          full: the released MusicLDM / AudioMAE ViT-B sizes; small: tiny\n"
    "                  configurations for checking the harness (required)\n"
    "  --iters N       timed iterations per row (default 10)\n"
    "  --warmup N      untimed iterations before them (default 2)\n"
    "  --only LIST     cases to run, comma-separated or repeated (default: all):\n"
    "                  unet_fwd unet_train vae_decode vocoder audiomae sample_cm4\n"
    "  --out FILE      write the rows as JSON (atomically)\n"
    "  --mcm-version S recorded in the JSON (make bench passes git describe)\n"
    "  --batch N       every case at batch N instead of its own (memory probes; the rows then\n"
    "                  no longer match bench_torch.py's unless it gets the same --batch)\n";

static int parse_only(const char *v, Options *o, McmErr *err) {
  char buf[512];
  mcm_snprintf(buf, sizeof buf, "%s", v);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int k = 0;
    while (k < N_CASES && strcmp(tok, CASES[k].name)) k++;
    if (k == N_CASES)
      return mcm_err(err, "--only: unknown case '%s' (cases: unet_fwd, unet_train, vae_decode, vocoder, audiomae, "
                          "sample_cm4)", tok);
    o->only[k] = o->any_only = true;
  }
  if (!o->any_only) return mcm_err(err, "--only: no case named in '%s'", v);
  return 0;
}

/* 0, 1 for --help, -1 with err. */
static int parse(int argc, char **argv, Options *o, McmErr *err) {
  *o = (Options){.iters = 10, .warmup = 2, .version = "unknown"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    long long n;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      return 1;
    } else if (!strcmp(a, "--device")) {
      if (cli_value(argc, argv, &i, &v, err) || cli_choice(a, v, "cpu|cuda", err)) return -1;
      o->device = v;
    } else if (!strcmp(a, "--size")) {
      if (cli_value(argc, argv, &i, &v, err) || cli_choice(a, v, "full|small", err)) return -1;
      o->size = v;
    } else if (!strcmp(a, "--iters")) {
      if (cli_value(argc, argv, &i, &v, err) || cli_int(a, v, 1, 100000, &n, err)) return -1;
      o->iters = (int)n;
    } else if (!strcmp(a, "--warmup")) {
      if (cli_value(argc, argv, &i, &v, err) || cli_int(a, v, 0, 1000, &n, err)) return -1;
      o->warmup = (int)n;
    } else if (!strcmp(a, "--batch")) {
      if (cli_value(argc, argv, &i, &v, err) || cli_int(a, v, 1, 4096, &n, err)) return -1;
      o->batch = (int)n;
    } else if (!strcmp(a, "--only")) {
      if (cli_value(argc, argv, &i, &v, err) || parse_only(v, o, err)) return -1;
    } else if (!strcmp(a, "--out") || !strcmp(a, "--mcm-version")) {
      if (cli_value(argc, argv, &i, &v, err)) return -1;
      if (!*v) return mcm_err(err, "%s: empty value", a);
      *(a[2] == 'o' ? &o->out : &o->version) = v;
    } else {
      return mcm_err(err, "unknown argument '%s' (see bench --help)", a);
    }
  }
  if (!o->device) return mcm_err(err, "--device is required (cpu or cuda; see bench --help)");
  if (!o->size) return mcm_err(err, "--size is required (full or small; see bench --help)");
  if (device_spec_parse(o->device, &o->dev, err)) return -1;
  /* ctx_create falls back to the CPU without a GPU; a benchmark must not. */
  if (o->dev.kind == DEV_CUDA && !mcm_built_with_cuda())
    return mcm_err(err, "--device cuda: this build has no CUDA (built with CUDA=0 or without nvcc); build with "
                        "CUDA on the GPU machine, or use --device cpu");
  if (o->dev.kind == DEV_CUDA && cuda_device_count() < 1)
    return mcm_err(err, "--device cuda: no usable CUDA device is visible (hint: nvidia-smi; CUDA_VISIBLE_DEVICES)");
  return 0;
}

static int write_json(const char *path, json_t *root, McmErr *err) {
  char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
  MCM_CHECK(text, "bench: json_dumps failed");
  size_t n = strlen(text);
  text[n] = '\n'; /* json_dumps leaves room for its NUL: a trailing newline replaces it */
  int rc = file_write_atomic(path, text, n + 1, err);
  free(text);
  return rc;
}

/* The whole program (tests/test_bench.c calls it in-process): 0, 1 on a failed write, 2 on a
 * bad option. */
static int bench_main(int argc, char **argv) {
  Options o;
  McmErr err = {{0}};
  int rc = parse(argc, argv, &o, &err);
  if (rc == 1) return 0;
  if (rc) {
    fprintf(stderr, "bench: %s\n", err.msg);
    return 2;
  }
  Sizes sz = !strcmp(o.size, "full") ? sizes_full() : sizes_small();
  if (o.batch) sz.b_fwd = sz.b_train = sz.b_mae = o.batch;

  char date[32];
  time_t t = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
  json_t *root = json_object(), *rows = json_array();
  json_object_set_new(root, "impl", json_string("mcm"));
  json_object_set_new(root, "version", json_string(o.version));
  json_object_set_new(root, "device_kind", json_string(o.device));
  json_object_set_new(root, "size", json_string(o.size));
  json_object_set_new(root, "iters", json_integer(o.iters));
  json_object_set_new(root, "warmup", json_integer(o.warmup));
  json_object_set_new(root, "date", json_string(date));
  json_object_set_new(root, "complete", json_false());
  json_object_set(root, "cases", rows);
  printf("mcm bench (%s size, %s, median of %d after %d warm-up)\n", o.size, o.device, o.iters, o.warmup);
  /* The file is rewritten after every row, "complete" false until the end: a run stopped by
   * a timeout or a crash still leaves the rows it finished for the report. */
  for (int k = 0; k < N_CASES && !rc; k++) {
    if (o.any_only && !o.only[k]) continue;
    for (int d = 0; d < (CASES[k].bf16 ? 2 : 1) && !rc; d++) {
      run_row(&o, &sz, &CASES[k], d ? DT_BF16 : DT_F32, rows, root);
      if (o.out) rc = write_json(o.out, root, &err);
    }
  }
  json_object_set_new(root, "complete", json_true());
  if (!rc && o.out) rc = write_json(o.out, root, &err);
  if (rc) fprintf(stderr, "bench: %s\n", err.msg);
  json_decref(rows);
  json_decref(root);
  return rc ? 1 : 0;
}

#ifndef BENCH_NO_MAIN
int main(int argc, char **argv) { return bench_main(argc, argv); }
#endif
