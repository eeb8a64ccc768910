/* ./prepare: a manifest of audio files and captions -> HDF5 training shards of log-mel
 * segments, optionally with VAE latents and CLAP text embeddings; or (--add-latents) those
 * added to shards made before. Parses the command line and the [mel] / [prepare]
 * configuration, reads the manifest(s) and hands over to prepare_run / prepare_add_latents
 * (data/prepare.h). */
#include <string.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/config.h"
#include "data/manifest.h"
#include "data/prepare.h"

static const char USAGE[] =
    "usage: ./prepare --manifest FILE --out DIR [options]\n"
    "       ./prepare --add-latents --out DIR --vae FILE [--text-encoder FILE --tokenizer DIR] [options]\n"
    "\n"
    "Turns audio files and their captions into HDF5 training shards of log-mel segments\n"
    "(DIR/shard_00000.h5 ...), with DIR/report.tsv listing every skipped file and why, and\n"
    "DIR/prepare_summary.txt. Bad files and captions are skipped, never fatal.\n"
    "\n"
    "manifest forms (detected by content): AudioLDM JSON {\"data\": [{\"wav\": ..., \"caption\": ...}]},\n"
    "JSON lines ({\"wav\"|\"path\"|\"location\": ..., \"caption\"|\"captions\"|\"text\": ...} per line), or\n"
    "CSV with a header line (path,caption). Relative paths are relative to the manifest.\n"
    "\n"
    "options:\n"
    "  --manifest FILE          the manifest\n"
    "  --mtt-annotations FILE   MagnaTagATune's annotations_final.csv: captions from its tags\n"
    "                           (with or instead of --manifest; mp3 paths relative to FILE)\n"
    "  --out DIR                output directory (created if missing)\n"
    "  --config FILE            an mcm .ini; only [mel], [prepare] and [run] device matter\n"
    "  --set SECTION.KEY=VALUE  override one configuration key (repeatable, applied in order)\n"
    "  --threads N              worker threads (same as --set prepare.threads=N; 0 = all cores)\n"
    "  --overwrite              replace the shards an earlier run left in DIR\n"
    "\n"
    "latents and text embeddings (converted weights from tools/convert_diffusers.py):\n"
    "  --vae FILE               adds to every row the VAE posterior's moments, mean and logvar\n"
    "                           along channels (2L, frames/f, n_mels/f); the trainer samples and\n"
    "                           scales them (the scaling factor is in DIR/encoders.h5)\n"
    "  --text-encoder FILE      adds the CLAP embedding of every caption, and puts the embedding\n"
    "                           of \"\" (unconditional) into DIR/encoders.h5\n"
    "  --tokenizer DIR          the text encoder's vocab.json and merges.txt\n"
    "  --device D               cpu, cuda, cuda:N or auto (default: [run] device)\n"
    "  --batch N                rows per forward pass (default 4; 1.3 GB each for the full VAE)\n"
    "  --add-latents            encode the shards already in --out DIR instead of reading a\n"
    "                           manifest; each shard is rewritten atomically\n"
    "  --quiet                  no progress bar and no summary on stdout\n"
    "  --help                   this text\n"
    "  --help-config            every configuration key: type, default, range, meaning\n"
    "\n"
    "exit status: 0 when at least one segment was written, 1 when none was (or writing or\n"
    "encoding failed part-way), 2 for bad usage, configuration, an unusable manifest or weights\n"
    "that do not fit.\n"
    "\n"
    "examples:\n"
    "  ./prepare --manifest data/demo/manifest.json --out data/demo/shards\n"
    "  ./prepare --manifest train.csv --out shards --set prepare.crop=first --threads 2\n"
    "  ./prepare --add-latents --out data/demo/shards --vae checkpoints/musicldm/vae.h5 \\\n"
    "      --text-encoder checkpoints/musicldm/text_encoder.h5 --tokenizer checkpoints/musicldm/tokenizer\n";

/* The configuration for ./prepare: like config_resolve, except that the keys ./train
 * requires ([train] steps, [data] train_shards) are not required here. */
static int resolve(Config *cfg, const char *path, int n_sets, char **sets, McmErr *err) {
  config_defaults(cfg);
  if (path && config_parse_file(cfg, path, err)) return -1;
  for (int i = 0; i < n_sets; i++)
    if (config_set(cfg, sets[i], err)) return -1;
  char why[640];
  int bad = mcm_schema_cross_check(cfg, why, sizeof why);
  if (bad >= 0) {
    const char *o = cfg->origin[bad];
    if (!strcmp(o, "default") || !strcmp(o, "--set") || !o[0])
      return mcm_err(err, "%s %s.%s: %s", o[0] ? o : "unset", MCM_SCHEMA[bad].section, MCM_SCHEMA[bad].key, why);
    return mcm_err(err, "%s: %s", o, why);
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *manifest = NULL, *mtt = NULL, *out = NULL, *config_path = NULL;
  const char *vae = NULL, *text_encoder = NULL, *tokenizer = NULL, *device = NULL;
  char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0, status = 2, batch = 0;
  bool overwrite = false, quiet = false, add_latents = false;
  McmErr err = {{0}};
  char threads_set[64];
  Manifest m = {0};
  char *config_text = NULL;

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
    } else if (!strcmp(a, "--manifest") || !strcmp(a, "--mtt-annotations") || !strcmp(a, "--out") ||
               !strcmp(a, "--config") || !strcmp(a, "--vae") || !strcmp(a, "--text-encoder") ||
               !strcmp(a, "--tokenizer") || !strcmp(a, "--device")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      const char **slot = !strcmp(a, "--manifest")       ? &manifest
                          : !strcmp(a, "--out")          ? &out
                          : !strcmp(a, "--config")       ? &config_path
                          : !strcmp(a, "--vae")          ? &vae
                          : !strcmp(a, "--text-encoder") ? &text_encoder
                          : !strcmp(a, "--tokenizer")    ? &tokenizer
                          : !strcmp(a, "--device")       ? &device
                                                         : &mtt;
      if (*slot) {
        mcm_err(&err, "%s given twice ('%s' and '%s')", a, *slot, v);
        goto bad;
      }
      if (!v[0]) {
        mcm_err(&err, "%s: empty value", a);
        goto bad;
      }
      *slot = v;
    } else if (!strcmp(a, "--set")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      sets[n_sets++] = (char *)v;
    } else if (!strncmp(a, "--set=", 6)) {
      sets[n_sets++] = (char *)a + 6;
    } else if (!strcmp(a, "--threads")) {
      long long t;
      if (cli_value(argc, argv, &i, &v, &err) || cli_int("--threads", v, 0, 256, &t, &err)) goto bad;
      snprintf(threads_set, sizeof threads_set, "prepare.threads=%lld", t);
      sets[n_sets++] = threads_set;
    } else if (!strcmp(a, "--batch")) {
      long long b;
      if (cli_value(argc, argv, &i, &v, &err) || cli_int("--batch", v, 1, 4096, &b, &err)) goto bad;
      batch = (int)b;
    } else if (!strcmp(a, "--add-latents")) {
      add_latents = true;
    } else if (!strcmp(a, "--overwrite")) {
      overwrite = true;
    } else if (!strcmp(a, "--quiet")) {
      quiet = true;
    } else {
      mcm_err(&err, "unknown %s '%s' (see ./prepare --help)", a[0] == '-' ? "option" : "argument", a);
      goto bad;
    }
  }
  if (add_latents) {
    if (manifest || mtt) {
      mcm_err(&err, "--add-latents encodes the shards already in --out DIR; it reads no manifest (drop %s)",
              manifest ? "--manifest" : "--mtt-annotations");
      goto bad;
    }
    if (overwrite) {
      mcm_err(&err, "--add-latents rewrites the shards in place; --overwrite does not apply");
      goto bad;
    }
  } else if (!manifest && !mtt) {
    fputs(USAGE, stderr);
    fprintf(stderr, "\nprepare: error: no manifest given (--manifest FILE or --mtt-annotations FILE)\n");
    free(sets);
    return 2;
  }
  if (!out) {
    mcm_err(&err, "no output directory given (--out DIR)");
    goto bad;
  }

  Config cfg;
  if (resolve(&cfg, config_path, n_sets, sets, &err)) goto bad;
  if (add_latents) {
    PrepareOptions o;
    prepare_options_from_config(&cfg, &o);
    o.out_dir = out;
    o.quiet = quiet;
    o.progress = !quiet && isatty(STDERR_FILENO);
    o.vae = vae, o.text_encoder = text_encoder, o.tokenizer = tokenizer;
    o.device = device ? device : cfg.run.device;
    o.batch = batch;
    PrepareStats st;
    if (prepare_add_latents(&o, &st, &err)) {
      status = st.started ? 1 : 2;
      goto bad;
    }
    free(sets);
    return 0;
  }
  if (manifest && manifest_read(manifest, &m, &err)) goto bad;
  if (mtt && manifest_read_mtt(mtt, &m, &err)) goto bad;

  PrepareOptions o;
  prepare_options_from_config(&cfg, &o);
  config_text = config_to_string(&cfg);
  char sources[2200];
  mcm_snprintf(sources, sizeof sources, "%s%s%s", manifest ? manifest : "", manifest && mtt ? " " : "", mtt ? mtt : "");
  o.out_dir = out;
  o.overwrite = overwrite;
  o.quiet = quiet;
  o.progress = !quiet && isatty(STDERR_FILENO);
  o.config_text = config_text;
  o.sources = sources;
  o.vae = vae, o.text_encoder = text_encoder, o.tokenizer = tokenizer;
  o.device = device ? device : cfg.run.device;
  o.batch = batch;
  if (!quiet) {
    printf("# mcm prepare: %d entries from %s (%d skipped while reading), %d threads\n", m.n + m.n_skips, sources,
           m.n_skips, o.threads);
    fflush(stdout);
  }

  PrepareStats st;
  if (prepare_run(&m, &o, &st, &err)) {
    /* Nothing started (bad options, unusable output directory) is a usage error; a write
     * that failed part-way is a failed run. */
    status = st.started ? 1 : 2;
    goto bad;
  }
  if (st.segments == 0) {
    fprintf(stderr,
            "prepare: error: no segment was written: %s (see %s/report.tsv)\n",
            st.files == 0 ? "the manifest has no entries" : "every entry was skipped", out);
    status = 1;
  } else {
    status = 0;
  }
  manifest_free(&m);
  free(config_text);
  free(sets);
  return status;

bad:
  fprintf(stderr, "prepare: error: %s\n", err.msg);
  manifest_free(&m);
  free(config_text);
  free(sets);
  return status;
}
