/* ./infer: text to music. Parses and checks every option, opens the model bundle, generates
 * every output in memory (diffusion/pipeline.h does the work), and only then writes them,
 * each atomically: a run that fails writes nothing, a bad input is one line and exit 2. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/config.h"
#include "data/prompts.h"
#include "core/io.h"
#include "data/audio.h"
#include "data/melpng.h"
#include "diffusion/pipeline.h"
#include "kernels/context.h"

static const char USAGE[] =
    "usage: ./infer --prompt TEXT --out FILE [options]\n"
    "       ./infer --prompts-file FILE --out DIR [options]\n"
    "\n"
    "Writes music for a text prompt with a distilled student (1-6 steps) or the teacher.\n"
    "\n"
    "options:\n"
    "  --prompt TEXT           what to generate\n"
    "  --prompts-file FILE     one prompt per line (empty lines are skipped); outputs are numbered\n"
    "  --negative-prompt TEXT  steer away from this (--sampler ddim: the unconditional prompt, default \"\")\n"
    "  --out PATH              output file; a directory when there are several outputs (see below)\n"
    "  --checkpoint DIR        model bundle (default checkpoints/demo): unet.h5 (teacher), student.h5,\n"
    "                          vae.h5, vocoder.h5, text_encoder.h5, tokenizer/{vocab.json,merges.txt}\n"
    "  --config FILE           configuration file (a training config will do: ./infer reads [infer]);\n"
    "                          --set SECTION.KEY=VALUE overrides a key, e.g. --set infer.fuse=triangular\n"
    "  --sampler cm|ddim       consistency sampling of student.h5 (default) or DDIM of the teacher unet.h5\n"
    "  --allow-teacher-cm      let --sampler cm run unet.h5 when the bundle has no student (poor results)\n"
    "  --steps N               sampling steps (cm: 1..50, default 4; ddim: 1..999, default 200)\n"
    "  --guidance S            classifier-free guidance scale g of the teacher, diffusers' form (default 2.0;\n"
    "                          1 turns it off; --sampler ddim only: the student has guidance distilled in)\n"
    "  --seconds X             length in seconds, 0 < X <= 3600 (default 10.24, or the init audio's length)\n"
    "  --seed N                random seed (default: drawn and printed)\n"
    "  --num-per-prompt N      outputs per prompt, 1..64 (default 1)\n"
    "  --format wav|flac       16-bit PCM at the vocoder's rate, 16 kHz (default: from --out's extension, else wav)\n"
    "  --mel-png               also write the spectrogram as <name>.png beside each output\n"
    "  --init-audio FILE       start from this audio (variation / style transfer): it is cut or padded\n"
    "                          to the length, encoded by the VAE (a posterior sample), noised to --strength\n"
    "  --strength S            how far from the init audio, 0 < S <= 1 (default 0.6; 1 ignores it)\n"
    "  --device DEV            auto | cpu | cuda | cuda:N (default auto)\n"
    "  --timings               print the time of each stage (text encoding, sampling, decoding, vocoding)\n"
    "  --help                  this text\n"
    "\n"
    "Several outputs (--num-per-prompt > 1 or --prompts-file): --out is a directory (created if\n"
    "missing) and output k (from 000, prompt by prompt, --num-per-prompt each) is\n"
    "  <k>_<slug>_seed<seed>.wav\n"
    "where slug is the prompt's letters and digits, lower-cased, '-' between words, at most 40, and\n"
    "seed = --seed + k: every output depends on its own seed only, so --seed <its seed> with the\n"
    "same prompt and options remakes it alone.\n"
    "\n"
    "Long pieces: beyond the model's native length (10.24 s for MusicLDM) the latent is sampled\n"
    "as overlapping windows of the native length fused every step; decoder and vocoder run on the\n"
    "whole piece. [infer] window_frames (-1: no windows), stride_frames and fuse\n"
    "(average|triangular) change that (./infer --config FILE or --set infer.KEY=VALUE).\n"
    "\n"
    "Precision: --set infer.precision=bf16 runs the UNet, VAE decoder and vocoder in bf16 with fp32\n"
    "accumulation (for the GPU's tensor cores; on the CPU it is emulated and slower). Default fp32.\n"
    "\n"
    "Exit status: 0 done; 2 a bad input or model bundle (nothing was written); 1 a failure while\n"
    "generating or writing (files already complete stay; none is ever partial).\n"
    "\n"
    "No model yet? Convert MusicLDM: python tools/convert_diffusers.py --pipeline DIR --out\n"
    "checkpoints/musicldm, or make a random-weight bundle for a smoke test:\n"
    "  build/cpu/tools/make_random_bundle --out checkpoints/demo\n";

#define DEFAULT_CHECKPOINT "checkpoints/demo"
#define MAX_SECONDS 3600.0

typedef struct InferArgs {
  const char *prompt, *prompts_file, *negative, *out, *checkpoint, *config, *sampler, *format, *init_audio, *device;
  long long steps, num_per_prompt, seed;
  double guidance, seconds, strength;
  bool seed_given, steps_given, seconds_given, guidance_given, format_given, mel_png, timings, allow_teacher_cm;
} InferArgs;

static int parse_args(int argc, char **argv, InferArgs *a, char **sets, int *n_sets, McmErr *err) {
  *a = (InferArgs){.sampler = "cm", .format = "wav", .device = "auto", .checkpoint = DEFAULT_CHECKPOINT,
                   .num_per_prompt = 1, .guidance = 2.0, .seconds = 10.24, .strength = 0.6};
  bool strength_given = false;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = NULL;
    bool flag = !strcmp(o, "--mel-png") || !strcmp(o, "--timings") || !strcmp(o, "--help") || !strcmp(o, "-h") ||
                !strcmp(o, "--allow-teacher-cm");
    if (!flag && o[0] == '-' && cli_value(argc, argv, &i, &v, err)) return -1;
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
      fputs(USAGE, stdout);
      free(sets);
      exit(0);
    } else if (!strcmp(o, "--mel-png")) {
      a->mel_png = true;
    } else if (!strcmp(o, "--timings")) {
      a->timings = true;
    } else if (!strcmp(o, "--allow-teacher-cm")) {
      a->allow_teacher_cm = true;
    } else if (!strcmp(o, "--prompt")) {
      a->prompt = v;
    } else if (!strcmp(o, "--prompts-file")) {
      a->prompts_file = v;
    } else if (!strcmp(o, "--negative-prompt")) {
      a->negative = v;
    } else if (!strcmp(o, "--out")) {
      a->out = v;
    } else if (!strcmp(o, "--checkpoint")) {
      a->checkpoint = v;
    } else if (!strcmp(o, "--config")) {
      a->config = v;
    } else if (!strcmp(o, "--set")) {
      sets[(*n_sets)++] = (char *)v;
    } else if (!strcmp(o, "--sampler")) {
      if (cli_choice(o, v, "cm|ddim", err)) return -1;
      a->sampler = v;
    } else if (!strcmp(o, "--steps")) {
      if (cli_int(o, v, 1, 999, &a->steps, err)) return -1;
      a->steps_given = true;
    } else if (!strcmp(o, "--guidance")) {
      if (cli_float(o, v, 0.0, 100.0, false, &a->guidance, err)) return -1;
      a->guidance_given = true;
    } else if (!strcmp(o, "--seconds")) {
      if (cli_float(o, v, 0.0, MAX_SECONDS, true, &a->seconds, err)) return -1;
      a->seconds_given = true;
    } else if (!strcmp(o, "--seed")) {
      if (cli_int(o, v, 0, INT64_MAX, &a->seed, err)) return -1;
      a->seed_given = true;
    } else if (!strcmp(o, "--num-per-prompt")) {
      if (cli_int(o, v, 1, 64, &a->num_per_prompt, err)) return -1;
    } else if (!strcmp(o, "--format")) {
      if (cli_choice(o, v, "wav|flac", err)) return -1;
      a->format = v;
      a->format_given = true;
    } else if (!strcmp(o, "--init-audio")) {
      a->init_audio = v;
    } else if (!strcmp(o, "--strength")) {
      if (cli_float(o, v, 0.0, 1.0, true, &a->strength, err)) return -1;
      strength_given = true;
    } else if (!strcmp(o, "--device")) {
      a->device = v;
    } else {
      return mcm_err(err, "unknown %s '%s' (see ./infer --help)", o[0] == '-' ? "option" : "argument", o);
    }
  }
  bool cm = !strcmp(a->sampler, "cm");
  if (!a->steps_given) a->steps = cm ? 4 : 200;
  if (cm && a->steps > 50) return mcm_err(err, "--steps: %lld is outside 1..50 for the cm sampler", a->steps);
  if (cm && a->guidance_given)
    return mcm_err(err, "--guidance works with --sampler ddim (the student's guidance is distilled in)");
  if (cm && a->negative)
    return mcm_err(err, "--negative-prompt works with --sampler ddim (the student's guidance is distilled in)");
  if (!a->prompt && !a->prompts_file) return mcm_err(err, "give --prompt TEXT or --prompts-file FILE");
  if (a->prompt && a->prompts_file) return mcm_err(err, "--prompt and --prompts-file exclude each other");
  if (a->prompt && !a->prompt[0]) return mcm_err(err, "--prompt is empty");
  if (!a->out || !a->out[0]) return mcm_err(err, "give --out PATH");
  if (strength_given && !a->init_audio) return mcm_err(err, "--strength needs --init-audio");
  if (a->init_audio && access(a->init_audio, R_OK) != 0)
    return mcm_err(err, "--init-audio %s: %s", a->init_audio, strerror(errno));
  return 0;
}

/* ---------------------------------------------------------------- prompts and outputs */

/* --prompt, or the prompts of --prompts-file (data/prompts.h). */
static int read_prompts(const InferArgs *a, Prompts *p, McmErr *err) {
  if (!a->prompt) return prompts_read_file(a->prompts_file, "--prompts-file", p, err);
  if (!utf8_valid(a->prompt, strlen(a->prompt))) return mcm_err(err, "--prompt is not valid UTF-8");
  prompts_add(p, a->prompt, strlen(a->prompt));
  return 0;
}

static const char *extension(const char *path) {
  const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
  return dot && (!slash || dot > slash) ? dot + 1 : NULL;
}

/* The format: --format, else --out's extension (single output), else wav. */
static int pick_format(InferArgs *a, bool several, McmErr *err) {
  const char *ext = several ? NULL : extension(a->out);
  bool known = ext && (!strcasecmp(ext, "wav") || !strcasecmp(ext, "flac"));
  if (a->format_given && known && strcasecmp(ext, a->format))
    return mcm_err(err, "--out %s with --format %s: the name says %s", a->out, a->format, ext);
  if (!a->format_given && known) a->format = !strcasecmp(ext, "flac") ? "flac" : "wav";
  return 0;
}

static int writable_dir(const char *dir, const char *what, McmErr *err) {
  struct stat st;
  if (stat(dir, &st)) return mcm_err(err, "--out %s: %s: %s", what, dir, strerror(errno));
  if (!S_ISDIR(st.st_mode)) return mcm_err(err, "--out %s: %s is not a directory", what, dir);
  if (access(dir, W_OK | X_OK)) return mcm_err(err, "--out %s: cannot write in %s: %s", what, dir, strerror(errno));
  return 0;
}

/* Before any work: the place the outputs go must be writable. */
static int check_out(const char *out, bool several, McmErr *err) {
  struct stat st;
  bool there = stat(out, &st) == 0;
  if (several && there)
    return S_ISDIR(st.st_mode) ? writable_dir(out, out, err)
                               : mcm_err(err, "--out %s: several outputs go into a directory, and this is a file", out);
  if (!several && there && S_ISDIR(st.st_mode))
    return mcm_err(err, "--out %s is a directory; give a file name (a directory is for several outputs)", out);
  char *copy = strdup(out);
  MCM_CHECK(copy, "out of memory");
  int rc = writable_dir(dirname(copy), out, err);
  free(copy);
  return rc;
}

/* The PNG beside an output: its name with the audio extension replaced by .png. */
static void png_name(char *buf, size_t size, const char *audio) {
  const char *ext = extension(audio);
  int stem = ext ? (int)(ext - 1 - audio) : (int)strlen(audio);
  mcm_snprintf(buf, size, "%.*s.png", stem, audio);
}

static uint64_t random_seed(void) {
  uint64_t s = 0;
  int fd = open("/dev/urandom", O_RDONLY);
  if (fd < 0 || read(fd, &s, sizeof s) != (ssize_t)sizeof s) s = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  if (fd >= 0) close(fd);
  return s & 0x7fffffff;
}

/* ---------------------------------------------------------------- progress and timings */

typedef struct Progress {
  int k, n; /* output k of n */
} Progress;

static void progress(void *user, int step, int steps) {
  const Progress *p = user;
  char bar[31];
  int fill = steps ? 30 * step / steps : 30;
  for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
  bar[30] = 0;
  fprintf(stderr, "\rinfer: output %d/%d [%s] step %d/%d", p->k + 1, p->n, bar, step, steps);
  if (step == steps && p->k + 1 == p->n) fputc('\n', stderr);
  fflush(stderr);
}

/* tools/eval_report reads this line from the log (data/eval_report.c, eval_timings_parse; a
 * real run of it is in tests/test_evaluate.c): change the two together. */
static void print_timings(const PipelineTimings *t, const char *device, double audio_seconds, double load) {
  double total = t->text + t->sampling + t->decoding + t->vocoding;
  fprintf(stderr,
          "infer: timings on %s for %d output%s (%.2f s of audio): loading %.3f s | text encoding %.3f s, sampling "
          "%.3f s, decoding %.3f s, vocoding %.3f s, total %.3f s (%.2fx real time); peak activations %.2f GB\n",
          device, t->outputs, t->outputs == 1 ? "" : "s", audio_seconds, load, t->text, t->sampling, t->decoding,
          t->vocoding, total, total > 0 ? audio_seconds / total : 0.0, (double)t->peak_act_bytes / 1e9);
}

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- the run */

typedef struct Run {
  InferArgs a;
  Prompts prompts;
  int n;                /* outputs: prompts × num_per_prompt */
  bool several;         /* --out is a directory of numbered files */
  AudioFormat fmt;
  uint64_t seed;        /* of output 0; output k uses seed + k */
  char (*names)[4400];  /* (n) output paths */
  Ctx *ctx;
  Pipeline *pipe;
  Config cfg;           /* --config and --set: [infer]'s long form (no training keys needed) */
  PipelineRequest req;
  PipelineOutput *outs; /* (n) */
  PipelineTimings tm;
  double load_seconds;
  int written;
} Run;

/* Prompts, format, output place, seeds and names: everything decided before a model loads. */
static int plan(Run *r, McmErr *err) {
  InferArgs *a = &r->a;
  if (read_prompts(a, &r->prompts, err)) return -1;
  r->n = r->prompts.n * (int)a->num_per_prompt;
  r->several = r->n > 1 || a->prompts_file;
  if (pick_format(a, r->several, err) || check_out(a->out, r->several, err)) return -1;
  if (audio_format_from_name(a->format, &r->fmt, err)) return -1;
  r->seed = a->seed_given ? (uint64_t)a->seed : random_seed();
  if (r->seed > (uint64_t)INT64_MAX - (uint64_t)(r->n - 1))
    return mcm_err(err, "--seed %llu: the %d outputs use seeds up to seed + %d, past %lld",
                   (unsigned long long)r->seed, r->n, r->n - 1, (long long)INT64_MAX);
  if (!a->seed_given)
    fprintf(stderr, "infer: seed %llu (drawn; --seed %llu repeats this run)\n", (unsigned long long)r->seed,
            (unsigned long long)r->seed);
  r->names = calloc((size_t)r->n, sizeof *r->names);
  MCM_CHECK(r->names, "out of memory");
  const int width = snprintf(NULL, 0, "%d", r->n - 1);
  for (int k = 0; k < r->n; k++) {
    const char *prompt = r->prompts.text[k / a->num_per_prompt];
    if (!r->several) mcm_snprintf(r->names[k], sizeof r->names[k], "%s", a->out);
    else if (pipeline_output_name(r->names[k], sizeof r->names[k], a->out, k, width, prompt, r->seed + (uint64_t)k,
                                  a->format, err))
      return -1;
  }
  return 0;
}

/* The device, the models, the init audio; then every request is checked. */
static int set_up(Run *r, McmErr *err) {
  const InferArgs *a = &r->a;
  DeviceSpec spec;
  if (device_spec_parse(a->device, &spec, err)) return -1;
  if (!(r->ctx = ctx_create(&spec, r->seed, err))) return -1;
  double t0 = seconds_now();
  PipeSampler sampler = !strcmp(a->sampler, "cm") ? PIPE_CM : PIPE_DDIM;
  PipelineOptions po = {.bundle = a->checkpoint, .sampler = sampler, .allow_teacher_cm = a->allow_teacher_cm,
                        .precision = !strcmp(r->cfg.infer.precision, "bf16") ? DT_BF16 : DT_F32};
  if (!(r->pipe = pipeline_open(r->ctx, &po, err))) return -1;
  r->load_seconds = seconds_now() - t0;
  fprintf(stderr, "infer: %s on %s, %s sampler, %lld step%s%s\n", r->pipe->unet_path, r->ctx->device_name, a->sampler,
          a->steps, a->steps == 1 ? "" : "s", po.precision == DT_BF16 ? ", bf16" : "");
  if (sampler == PIPE_CM && r->pipe->teacher)
    fprintf(stderr, "infer: note: the bundle has no student.h5; the teacher with the consistency sampler gives poor "
                    "results (--allow-teacher-cm)\n");

  PipelineRequest *q = &r->req;
  *q = pipeline_request_default(sampler);
  q->steps = (int)a->steps;
  q->guidance = a->guidance;
  q->negative = a->negative;
  q->seconds = a->seconds;
  pipeline_request_long_form(q, &r->cfg);
  if (a->init_audio) {
    Audio init;
    McmErr why = {{0}};
    if (audio_read(a->init_audio, r->pipe->rate, &init, &why)) return mcm_err(err, "--init-audio: %s", why.msg);
    if (!a->seconds_given) q->seconds = fmin((double)init.n / r->pipe->rate, MAX_SECONDS);
    q->strength = a->strength;
    int rc = pipeline_set_init_audio(r->pipe, init.samples, init.n, q->seconds, &why);
    audio_free(&init);
    if (rc) return mcm_err(err, "--init-audio %s: %s", a->init_audio, why.msg);
  }
  for (int i = 0; i < r->prompts.n; i++) {
    q->prompt = r->prompts.text[i];
    if (pipeline_check_request(r->pipe, q, err)) return -1;
  }
  return 0;
}

/* Every output in memory first; nothing is written if one fails. */
static int generate_all(Run *r, McmErr *err) {
  r->outs = calloc((size_t)r->n, sizeof *r->outs);
  MCM_CHECK(r->outs, "out of memory");
  Progress pr = {0, r->n};
  if (isatty(2)) r->req.progress = progress, r->req.progress_user = &pr;
  int rc = 0;
  for (int k = 0; k < r->n && !rc; k++) {
    pr.k = k;
    r->req.prompt = r->prompts.text[k / r->a.num_per_prompt];
    r->req.seed = r->seed + (uint64_t)k;
    rc = pipeline_generate(r->pipe, &r->req, &r->outs[k], &r->tm, err);
  }
  r->req.progress = NULL, r->req.progress_user = NULL; /* pr ends here */
  return rc;
}

/* Then the files, each atomically (and its PNG); the paths on stdout. */
static int write_all(Run *r, McmErr *err) {
  if (r->several && mkdir(r->a.out, 0777) && errno != EEXIST)
    return mcm_err(err, "--out %s: cannot create the directory: %s", r->a.out, strerror(errno));
  for (int k = 0; k < r->n; k++) {
    const PipelineOutput *o = &r->outs[k];
    if (audio_write(r->names[k], o->audio, o->n, o->rate, r->fmt, NULL, err)) return -1;
    if (r->a.mel_png) {
      char png[4500];
      png_name(png, sizeof png, r->names[k]);
      if (melpng_write(png, o->mel, o->frames, o->n_mels, err)) return -1;
    }
    printf("%s\n", r->names[k]);
    r->written++;
  }
  return 0;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
  McmErr err = {{0}};
  char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0, status = 2;
  Run r = {0};
  if (parse_args(argc, argv, &r.a, sets, &n_sets, &err)) goto bad;
  if (config_resolve_optional(&r.cfg, r.a.config, n_sets, sets, &err)) goto bad;
  if (plan(&r, &err) || set_up(&r, &err)) goto bad; /* exit 2: nothing was started */
  status = 1;
  if (generate_all(&r, &err) || write_all(&r, &err)) goto bad;
  if (r.a.timings) print_timings(&r.tm, r.ctx->device_name, r.req.seconds * r.n, r.load_seconds);
  status = 0;
  goto done;
bad:
  if (r.written == 0) fprintf(stderr, "infer: error: %s; nothing was written\n", err.msg);
  else fprintf(stderr, "infer: error: %s; the %d output%s written before it are complete\n", err.msg, r.written,
               r.written == 1 ? "" : "s");
done:
  for (int k = 0; r.outs && k < r.n; k++) pipeline_output_free(&r.outs[k]);
  free(r.outs);
  free(r.names);
  pipeline_close(r.pipe);
  if (r.ctx) ctx_destroy(r.ctx);
  prompts_free(&r.prompts);
  free(sets);
  return status;
}
