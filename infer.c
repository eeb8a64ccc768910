/* ./infer: text to music. Parses and checks every option, sets up the device and (once the
 * sampler lands) writes the audio. Nothing is written unless everything checks out. */
#include <string.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/config.h"
#include "kernels/context.h"

static const char USAGE[] =
    "usage: ./infer --prompt TEXT --out FILE [options]\n"
    "       ./infer --prompts-file FILE --out DIR [options]\n"
    "\n"
    "Writes music for a text prompt with a distilled student (1-6 steps) or the teacher.\n"
    "\n"
    "options:\n"
    "  --prompt TEXT           what to generate\n"
    "  --prompts-file FILE     one prompt per line; outputs are numbered\n"
    "  --negative-prompt TEXT  steer away from this (teacher guidance)\n"
    "  --out PATH              output file (or directory with --prompts-file / --num-per-prompt > 1)\n"
    "  --checkpoint PATH       model bundle (default: checkpoints/demo/)\n"
    "  --config FILE           configuration for per-component paths and sizes; --set SECTION.KEY=VALUE overrides\n"
    "  --sampler cm|ddim       consistency sampling (student, default) or DDIM (teacher)\n"
    "  --steps N               sampling steps (cm: 1..50, default 4; ddim: 1..1000, default 200)\n"
    "  --guidance S            classifier-free guidance for the teacher (default 2.0)\n"
    "  --seconds X             length in seconds, 0 < X <= 3600 (default 10.24)\n"
    "  --seed N                random seed (default: drawn and printed)\n"
    "  --num-per-prompt N      outputs per prompt, 1..64 (default 1)\n"
    "  --format wav|flac       16 kHz 16-bit PCM (default wav)\n"
    "  --mel-png               also write a spectrogram picture beside each output\n"
    "  --init-audio FILE       start from this audio (variation / style transfer)\n"
    "  --strength S            how far from the init audio, 0 < S <= 1 (default 0.6)\n"
    "  --device DEV            auto | cpu | cuda | cuda:N (default auto)\n"
    "  --timings               print the time of each stage\n"
    "  --help                  this text\n";

typedef struct InferArgs {
  const char *prompt, *prompts_file, *negative, *out, *checkpoint, *config, *sampler, *format, *init_audio, *device;
  long long steps, num_per_prompt, seed;
  double guidance, seconds, strength;
  bool seed_given, steps_given, mel_png, timings;
} InferArgs;

static int readable_nonempty_prompts(const char *path, McmErr *err) {
  FILE *f = fopen(path, "r");
  if (!f) return mcm_err(err, "--prompts-file %s: %s", path, strerror(errno));
  char line[4096];
  int prompts = 0;
  while (fgets(line, sizeof line, f))
    for (char *c = line; *c; c++)
      if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
        prompts++;
        break;
      }
  fclose(f);
  return prompts ? 0 : mcm_err(err, "--prompts-file %s: no prompt in it (every line is empty)", path);
}

static int parse_args(int argc, char **argv, InferArgs *a, char **sets, int *n_sets, McmErr *err) {
  *a = (InferArgs){.sampler = "cm", .format = "wav", .device = "auto", .num_per_prompt = 1, .guidance = 2.0,
                   .seconds = 10.24, .strength = 0.6};
  bool strength_given = false;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = NULL;
    bool flag = !strcmp(o, "--mel-png") || !strcmp(o, "--timings") || !strcmp(o, "--help") || !strcmp(o, "-h");
    if (!flag && o[0] == '-' && cli_value(argc, argv, &i, &v, err)) return -1;
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
      fputs(USAGE, stdout);
      free(sets);
      exit(0);
    } else if (!strcmp(o, "--mel-png")) {
      a->mel_png = true;
    } else if (!strcmp(o, "--timings")) {
      a->timings = true;
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
      if (cli_int(o, v, 1, 1000, &a->steps, err)) return -1;
      a->steps_given = true;
    } else if (!strcmp(o, "--guidance")) {
      if (cli_float(o, v, 0.0, 100.0, false, &a->guidance, err)) return -1;
    } else if (!strcmp(o, "--seconds")) {
      if (cli_float(o, v, 0.0, 3600.0, true, &a->seconds, err)) return -1;
    } else if (!strcmp(o, "--seed")) {
      if (cli_int(o, v, 0, INT64_MAX, &a->seed, err)) return -1;
      a->seed_given = true;
    } else if (!strcmp(o, "--num-per-prompt")) {
      if (cli_int(o, v, 1, 64, &a->num_per_prompt, err)) return -1;
    } else if (!strcmp(o, "--format")) {
      if (cli_choice(o, v, "wav|flac", err)) return -1;
      a->format = v;
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
  if (!a->prompt && !a->prompts_file) return mcm_err(err, "give --prompt TEXT or --prompts-file FILE");
  if (a->prompt && a->prompts_file) return mcm_err(err, "--prompt and --prompts-file exclude each other");
  if (a->prompt && !a->prompt[0]) return mcm_err(err, "--prompt is empty");
  if (!a->out) return mcm_err(err, "give --out PATH");
  if (strength_given && !a->init_audio) return mcm_err(err, "--strength needs --init-audio");
  if (a->prompts_file && readable_nonempty_prompts(a->prompts_file, err)) return -1;
  if (a->init_audio && access(a->init_audio, R_OK) != 0)
    return mcm_err(err, "--init-audio %s: %s", a->init_audio, strerror(errno));
  if (a->checkpoint && access(a->checkpoint, R_OK) != 0)
    return mcm_err(err, "--checkpoint %s: %s", a->checkpoint, strerror(errno));
  return 0;
}

int main(int argc, char **argv) {
  McmErr err = {{0}};
  char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0;
  InferArgs a;
  if (parse_args(argc, argv, &a, sets, &n_sets, &err)) goto bad;
  if (a.config || n_sets) {
    Config cfg;
    if (config_resolve(&cfg, a.config, n_sets, sets, &err)) goto bad;
  }
  DeviceSpec spec;
  if (device_spec_parse(a.device, &spec, &err)) goto bad;
  Ctx *ctx = ctx_create(&spec, (uint64_t)a.seed, &err);
  if (!ctx) goto bad;
  fprintf(stderr, "infer: device %s\n", ctx->device_name);
  fprintf(stderr, "infer: error: sampling is not implemented yet (./infer is issue 6); nothing was written\n");
  ctx_destroy(ctx);
  free(sets);
  return 3;

bad:
  fprintf(stderr, "infer: error: %s\n", err.msg);
  free(sets);
  return 2;
}
