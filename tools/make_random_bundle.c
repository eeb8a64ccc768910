/* make_random_bundle: a model bundle with random weights (every component with its config
 * attribute, the student, a tokenizer), for smoke tests of ./infer and for timing. The work
 * is random_bundle_write in models/weights.c. */
#include "core/cli.h"
#include "models/weights.h"

static const char USAGE[] =
    "usage: make_random_bundle --out DIR [options]\n"
    "\n"
    "Writes a model bundle with random weights: unet.h5 (teacher), student.h5, vae.h5,\n"
    "vocoder.h5, text_encoder.h5 (each with its diffusers/transformers config) and\n"
    "tokenizer/{vocab.json,merges.txt}. ./infer runs it end to end; the music is noise-like.\n"
    "The same seed gives the same weights.\n"
    "\n"
    "options:\n"
    "  --out DIR          output directory (created if missing; bundle files are replaced)\n"
    "  --full-size        the released MusicLDM sizes (2.5 GB; for timing), else a tiny bundle\n"
    "                     (16 mel bins, native length 0.32 s, about 4 MB)\n"
    "  --tokenizer DIR    vocab.json and merges.txt to copy (default tests/fixtures/tokenizer,\n"
    "                     a small RoBERTa-style vocabulary; a real bundle has roberta-base's)\n"
    "  --seed N           random seed of the weights (default 1234)\n"
    "  --help             this text\n"
    "\n"
    "example (from the repository root):\n"
    "  build/cpu/tools/make_random_bundle --out checkpoints/demo\n"
    "  ./infer --checkpoint checkpoints/demo --prompt \"calm piano\" --seconds 2 --out demo.wav\n";

int main(int argc, char **argv) {
  const char *out = NULL, *tokenizer = "tests/fixtures/tokenizer";
  bool full = false;
  long long seed = 1234;
  McmErr err = {{0}};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      return 0;
    } else if (!strcmp(a, "--full-size")) {
      full = true;
    } else if (!strcmp(a, "--out") || !strcmp(a, "--tokenizer")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      *(a[2] == 'o' ? &out : &tokenizer) = v;
    } else if (!strcmp(a, "--seed")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 0, INT64_MAX, &seed, &err)) goto bad;
    } else {
      mcm_err(&err, "unknown argument '%s' (see make_random_bundle --help)", a);
      goto bad;
    }
  }
  if (!out) {
    mcm_err(&err, "give --out DIR");
    goto bad;
  }
  RandomBundle b = full ? random_bundle_full(tokenizer) : random_bundle_tiny(tokenizer);
  b.seed = (uint64_t)seed;
  if (random_bundle_write(out, &b, &err)) goto bad;
  printf("make_random_bundle: wrote a %s random-weight bundle to %s\n", full ? "full-size" : "tiny", out);
  return 0;
bad:
  fprintf(stderr, "make_random_bundle: error: %s\n", err.msg);
  return 2;
}
