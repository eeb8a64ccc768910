/* evaluate: Fréchet distances between a folder of generated audio and a folder of reference
 * audio, on log-mel statistics and (optionally) AudioMAE features; a JSON report (data/evaluate.h).
 *
 *   build/cpu/tools/evaluate --generated out/samples --reference data/demo/audio --out report.json
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/evaluate.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: evaluate --generated DIR --reference DIR [options]\n\n"
          "Reads every audio file of both folders (16 kHz, mono) and reports the Frechet distance between\n"
          "the two sets' Gaussian fits of clip embeddings, with per-set summaries, as JSON.\n\n"
          "options:\n"
          "  --out PATH          write the report there (atomically) instead of stdout\n"
          "  --audiomae WEIGHTS  also the FD on AudioMAE features (tensor file of converted weights)\n"
          "  --bridge PATH       feed AudioMAE the MusicLDM mel through this bridge (default: exact fbank)\n"
          "  --device D          cpu, cuda, cuda:N or auto (default auto) for AudioMAE\n"
          "  --batch N           AudioMAE clips per forward (default 8)\n"
          "  --help              this text\n");
}

int main(int argc, char **argv) {
  EvalOptions o = {0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help")) return usage(stdout), 0;
    const char **dst = !strcmp(a, "--generated")  ? &o.generated
                       : !strcmp(a, "--reference") ? &o.reference
                       : !strcmp(a, "--audiomae")  ? &o.audiomae
                       : !strcmp(a, "--bridge")    ? &o.bridge
                       : !strcmp(a, "--device")    ? &o.device
                       : !strcmp(a, "--out")       ? &o.out
                                                   : NULL;
    if (!dst && strcmp(a, "--batch")) return fprintf(stderr, "evaluate: unknown argument %s\n", a), usage(stderr), 2;
    if (!v) return fprintf(stderr, "evaluate: %s needs a value\n", a), 2;
    if (dst) {
      *dst = v;
    } else {
      char *end;
      long b = strtol(v, &end, 10);
      if (*end || b < 1 || b > 4096) return fprintf(stderr, "evaluate: --batch %s: expected an integer 1..4096\n", v), 2;
      o.batch = (int)b;
    }
    i++;
  }
  if (!o.generated || !o.reference) return fprintf(stderr, "evaluate: --generated and --reference are required\n"), usage(stderr), 2;
  McmErr err;
  if (eval_run(&o, NULL, &err)) return fprintf(stderr, "evaluate: %s\n", err.msg), 2;
  return 0;
}
