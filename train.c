/* ./train: parse the command line and the configuration, set up the device, run the
 * training mode named in [train] mode. The recipes themselves live in the library. */
#include <string.h>

#include "core/cli.h"
#include "core/config.h"
#include "diffusion/trainer.h"
#include "kernels/comm.h"
#include "kernels/context.h"

extern char **environ;

static const char USAGE[] =
    "usage: ./train CONFIG.ini [options]\n"
    "\n"
    "Trains an mcm model as the configuration says ([train] mode: distill, teacher, vae or vocoder).\n"
    "A checkpoint directory that holds checkpoints is resumed from the newest one; SIGTERM or\n"
    "SIGINT writes a checkpoint and stops. On one node every visible GPU is used (one process\n"
    "each, started here); under mpirun or srun each process takes its rank from the launcher.\n"
    "\n"
    "options:\n"
    "  --set SECTION.KEY=VALUE  override one configuration key (repeatable, applied in order)\n"
    "  --device DEV             auto | cpu | cuda | cuda:N (same as --set run.device=DEV)\n"
    "  --check                  resolve and print the configuration, set up the device, then stop\n"
    "  --resume                 require a checkpoint in checkpoint.dir to resume from\n"
    "  --fresh                  refuse to start if checkpoint.dir already holds checkpoints\n"
    "  --quiet                  no per-step log lines (run.out_dir/log.jsonl is still written)\n"
    "  --help                   this text\n"
    "  --help-config            every configuration key: type, default, range, meaning\n"
    "\n"
    "examples:\n"
    "  ./train configs/audiostock.ini\n"
    "  ./train configs/demo.ini --set train.batch_size=2 --device cpu\n";

int main(int argc, char **argv) {
  const char *config_path = NULL;
  char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0;
  bool check_only = false, quiet = false;
  TrainResume resume = TRAIN_RESUME_AUTO;
  McmErr err = {{0}};
  char device_set[600];

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      free(sets);
      return 0;
    } else if (!strcmp(a, "--help-config")) {
      config_help(stdout);
      free(sets);
      return 0;
    } else if (!strcmp(a, "--check")) {
      check_only = true;
    } else if (!strcmp(a, "--quiet")) {
      quiet = true;
    } else if (!strcmp(a, "--resume") || !strcmp(a, "--fresh")) {
      TrainResume r = a[2] == 'r' ? TRAIN_RESUME_REQUIRE : TRAIN_RESUME_FRESH;
      if (resume != TRAIN_RESUME_AUTO && resume != r) {
        mcm_err(&err, "--resume and --fresh contradict each other");
        goto bad;
      }
      resume = r;
    } else if (!strcmp(a, "--set")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      sets[n_sets++] = (char *)v;
    } else if (!strncmp(a, "--set=", 6)) {
      sets[n_sets++] = (char *)a + 6;
    } else if (!strcmp(a, "--device")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      mcm_snprintf(device_set, sizeof device_set, "run.device=%s", v);
      sets[n_sets++] = device_set;
    } else if (a[0] == '-') {
      mcm_err(&err, "unknown option '%s' (see ./train --help)", a);
      goto bad;
    } else if (config_path) {
      mcm_err(&err, "one configuration file only: got '%s' and '%s'", config_path, a);
      goto bad;
    } else {
      config_path = a;
    }
  }
  if (!config_path) {
    fputs(USAGE, stderr);
    fprintf(stderr, "\ntrain: error: no configuration file given\n");
    free(sets);
    return 2;
  }

  Config cfg;
  if (config_resolve(&cfg, config_path, n_sets, sets, &err)) goto bad;

  DeviceSpec spec;
  if (device_spec_parse(cfg.run.device, &spec, &err)) goto bad;
  /* One node, several GPUs, no launcher: one child process per GPU, each a rank. */
  CommLayout layout;
  if (comm_layout_parse(environ, &layout, &err)) goto bad;
  if (!check_only && layout.world == 1 && spec.kind != DEV_CPU && spec.index < 0 && cuda_device_count() > 1) {
    int status = 0;
    int launched = comm_launch_local(argc, argv, cuda_device_count(), &status, &err);
    if (launched < 0) goto bad;
    if (launched == 1) {
      free(sets);
      return status;
    }
    if (comm_layout_parse(environ, &layout, &err)) goto bad;
  }
  if (layout.world > 1 && spec.kind != DEV_CPU && spec.index < 0) spec.index = layout.local_rank;
  if (layout.rank != 0) quiet = true;
  if (!quiet) {
    printf("# mcm train: resolved configuration\n");
    config_print(&cfg, stdout);
  }
  Ctx *ctx = ctx_create(&spec, (uint64_t)cfg.run.seed, &err);
  if (!ctx) goto bad;
  if (!quiet) printf("# device: %s\n", ctx->device_name);
  fflush(stdout);
  int status = 0;
  if (!check_only) {
    Trainer *t = trainer_create(ctx, &cfg, &(TrainerOptions){resume, quiet}, &err);
    if (!t) {
      fprintf(stderr, "train: error: %s\n", err.msg);
      status = 2;
    } else {
      int rc = trainer_run(t, &err);
      if (rc < 0) fprintf(stderr, "train: error: %s\n", err.msg);
      else if (rc == 0 && !quiet) printf("# done: %lld steps\n", (long long)trainer_step_count(t));
      status = rc < 0 ? 1 : rc == 1 ? 143 : 0;
      trainer_destroy(t);
    }
  }
  ctx_destroy(ctx);
  free(sets);
  return status;

bad:
  fprintf(stderr, "train: error: %s\n", err.msg);
  free(sets);
  return 2;
}
