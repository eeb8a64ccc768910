/* build_vocab: trains the demo text tower's byte-level BPE vocabulary on the captions of one or
 * more manifests (the work is in data/bpe_train.c; manifests are read by data/manifest.c). */
#include <stdio.h>
#include <string.h>

#include "core/cli.h"
#include "data/bpe_train.h"
#include "data/manifest.h"

static const char USAGE[] =
    "usage: build_vocab --manifest PATH [--manifest PATH ...] --out DIR [options]\n"
    "\n"
    "Builds a RoBERTa-style byte-level BPE vocabulary from the captions of the manifests\n"
    "(AudioLDM JSON, JSON lines or CSV) and writes DIR/vocab.json and DIR/merges.txt, which\n"
    "data/tokenizer loads. Entries the manifest reader skips are listed on stderr. The same\n"
    "captions give the same bytes.\n"
    "\n"
    "options:\n"
    "  --manifest PATH    a manifest to read captions from (repeatable; at least one)\n"
    "  --out DIR          output directory, created when missing (required)\n"
    "  --vocab-size N     entries in the vocabulary, specials and 256 bytes included,\n"
    "                     261..16777216 (default 2000)\n"
    "  --min-frequency N  a pair must occur at least N times to be merged (default 2)\n"
    "  --help             this text\n"
    "\n"
    "example:\n"
    "  build/cpu/tools/build_vocab --manifest data/demo/manifest.json --vocab-size 2000 \\\n"
    "      --out checkpoints/demo/tokenizer\n";

int main(int argc, char **argv) {
  McmErr err = {{0}};
  Manifest m = {0};
  const char *out = NULL;
  long long vocab_size = 2000, min_frequency = 2;
  int n_manifests = 0;
  const char **texts = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      manifest_free(&m);
      return 0;
    } else if (!strcmp(a, "--manifest")) {
      if (cli_value(argc, argv, &i, &v, &err) || manifest_read(v, &m, &err)) goto bad;
      n_manifests++;
    } else if (!strcmp(a, "--out")) {
      if (cli_value(argc, argv, &i, &out, &err)) goto bad;
    } else if (!strcmp(a, "--vocab-size")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, BPE_MIN_VOCAB, 1 << 24, &vocab_size, &err)) goto bad;
    } else if (!strcmp(a, "--min-frequency")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 1, 1 << 30, &min_frequency, &err)) goto bad;
    } else {
      mcm_err(&err, "unknown argument '%s' (see build_vocab --help)", a);
      goto bad;
    }
  }
  if (!n_manifests || !out) {
    mcm_err(&err, "%s is required (see build_vocab --help)", !n_manifests ? "--manifest" : "--out");
    goto bad;
  }
  for (int i = 0; i < m.n_skips; i++)
    fprintf(stderr, "build_vocab: skipped %s: %s\n", m.skips[i].where, m.skips[i].detail);
  if (m.n == 0) {
    mcm_err(&err, "the manifests hold no usable caption");
    goto bad;
  }
  texts = malloc(sizeof(char *) * (size_t)m.n);
  for (int i = 0; i < m.n; i++) texts[i] = m.entries[i].caption;
  int merges = bpe_train(texts, m.n, (int)vocab_size, (int)min_frequency, out, &err);
  if (merges < 0) goto bad;
  printf("build_vocab: %d captions, %d merges -> %s/vocab.json, %s/merges.txt\n", m.n, merges, out, out);
  free(texts);
  manifest_free(&m);
  return 0;
bad:
  fprintf(stderr, "build_vocab: error: %s\n", err.msg);
  free(texts);
  manifest_free(&m);
  return 2;
}
