/* ./train: parse the command line and the configuration, set up the device, run the
 * training mode named in [train] mode. The recipes themselves live in the library. */
#include <string.h>

#include "core/cli.h"
#include "core/config.h"
#include "kernels/context.h"

static const char USAGE[] =
    "usage: ./train CONFIG.ini [options]\n"
    "\n"
    "Trains an mcm model as the configuration says ([train] mode: distill, teacher, vae, vocoder).\n"
    "\n"
    "options:\n"
    "  --set SECTION.KEY=VALUE  override one configuration key (repeatable, applied in order)\n"
    "  --device DEV             auto | cpu | cuda | cuda:N (same as --set run.device=DEV)\n"
    "  --check                  resolve and print the configuration, set up the device, then stop\n"
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
  bool check_only = false;
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
  printf("# mcm train: resolved configuration\n");
  config_print(&cfg, stdout);

  DeviceSpec spec;
  if (device_spec_parse(cfg.run.device, &spec, &err)) goto bad;
  Ctx *ctx = ctx_create(&spec, (uint64_t)cfg.run.seed, &err);
  if (!ctx) goto bad;
  printf("# device: %s\n", ctx->device_name);
  fflush(stdout);
  int status = 0;
  if (!check_only) {
    fprintf(stderr,
            "train: error: [train] mode = %s is not implemented yet (the trainer is issue 8); nothing was written\n",
            cfg.train.mode);
    status = 3;
  }
  ctx_destroy(ctx);
  free(sets);
  return status;

bad:
  fprintf(stderr, "train: error: %s\n", err.msg);
  free(sets);
  return 2;
}
