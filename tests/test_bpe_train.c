/* Tests for data/bpe_train: merges worked out by hand on a tiny corpus (counts, the
 * lexicographic tie-break, min_frequency, vocab_size), the vocab.json layout the tokenizer
 * fixture has, a caption corpus whose vocabulary loads with tokenizer_load and encodes every
 * caption without <unk> in fewer tokens than bytes, byte-identical output for the same texts in
 * any order, the shared pre-tokeniser, and bad inputs (one error line, old files untouched). */
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

#include "data/bpe_train.h"
#include "data/tokenizer.h"
#include "tests/test.h"

static char *out_file(const char *dir, const char *name) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return test_read_file(path, NULL);
}

static Tokenizer *load_dir(const char *dir) {
  char v[600], m[600];
  snprintf(v, sizeof v, "%s/vocab.json", dir);
  snprintf(m, sizeof m, "%s/merges.txt", dir);
  McmErr err = {0};
  Tokenizer *t = tokenizer_load(v, m, &err);
  ASSERT(t, "tokenizer_load of %s: %s", dir, err.msg);
  return t;
}

static const char *const TINY[] = {"aaab aab ab"};

/* "aaab aab ab" pre-tokenises to aaab, Ġaab, Ġab. Round 1: (a,a) and (a,b) both occur 3 times;
 * "a a" < "a b" wins. Round 2: (a,b) occurs twice (in a·a·a·b -> aa·a·b it is the last pair,
 * and in Ġ·a·b). Then every pair occurs once: min_frequency 2 stops here. */
TEST(bpe_train_first_merges_are_the_most_frequent_pairs) {
  const char *dir = TEST_PATH("tiny");
  McmErr err = {0};
  int n = bpe_train(TINY, 1, 1000, 2, dir, &err);
  ASSERT(n == 2, "merges %d (%s)", n, err.msg);
  char *merges = out_file(dir, "merges.txt");
  ASSERT(merges, "no merges.txt");
  EXPECT(!strcmp(merges, "#version: 0.2\na a\na b\n"), "merges.txt:\n%s", merges);
  free(merges);
}

/* With min_frequency 1 every remaining pair (count 1) is merged, ties by byte order of
 * (left, right): "aa ab" < "aa b" < "Ġ ..." ("Ġ" is C4 A0 in UTF-8). */
TEST(bpe_train_ties_break_lexicographically) {
  const char *dir = TEST_PATH("tiny1");
  McmErr err = {0};
  int n = bpe_train(TINY, 1, 1000, 1, dir, &err);
  ASSERT(n == 6, "merges %d (%s)", n, err.msg);
  char *merges = out_file(dir, "merges.txt");
  ASSERT(merges, "no merges.txt");
  EXPECT(!strcmp(merges, "#version: 0.2\na a\na b\naa ab\naa b\n\xC4\xA0 aab\n\xC4\xA0 ab\n"), "merges.txt:\n%s",
         merges);
  free(merges);
  Tokenizer *t = load_dir(dir);
  EXPECT(tokenizer_vocab_size(t) == 4 + 256 + 6 + 1, "vocab size %d", tokenizer_vocab_size(t));
  EXPECT(tokenizer_token_to_id(t, "aa") == 260 && tokenizer_token_to_id(t, "ab") == 261 &&
             tokenizer_token_to_id(t, "\xC4\xA0" "ab") == 265,
         "merged tokens in merge order");
  int32_t ids[8];
  EXPECT(tokenizer_encode(t, "aaab aab ab", 8, ids, NULL, &err) == 5, "three words, one token each");
  EXPECT(ids[1] == tokenizer_token_to_id(t, "aaab") && ids[3] == 265, "ids %d %d", ids[1], ids[3]);
  tokenizer_free(t);
}

TEST(bpe_train_vocab_size_is_a_hard_limit) {
  McmErr err = {0};
  const char *dir = TEST_PATH("one");
  ASSERT(bpe_train(TINY, 1, BPE_MIN_VOCAB + 1, 1, dir, &err) == 1, "one merge fits (%s)", err.msg);
  char *merges = out_file(dir, "merges.txt");
  EXPECT(merges && !strcmp(merges, "#version: 0.2\na a\n"), "merges.txt:\n%s", merges);
  free(merges);
  Tokenizer *t = load_dir(dir);
  EXPECT(tokenizer_vocab_size(t) == BPE_MIN_VOCAB + 1, "vocab size %d", tokenizer_vocab_size(t));
  EXPECT(tokenizer_specials(t).mask == BPE_MIN_VOCAB, "<mask> last");
  tokenizer_free(t);

  dir = TEST_PATH("none");
  ASSERT(bpe_train(TINY, 1, BPE_MIN_VOCAB, 1, dir, &err) == 0, "no merge fits (%s)", err.msg);
  t = load_dir(dir);
  EXPECT(tokenizer_vocab_size(t) == BPE_MIN_VOCAB, "vocab size %d", tokenizer_vocab_size(t));
  tokenizer_free(t);
}

/* The layout of tests/fixtures/tokenizer/vocab.json: specials 0..3, the 256 byte-level
 * characters by code point, merges, <mask> last; ASCII escapes. */
TEST(bpe_train_vocab_layout_matches_the_fixture) {
  const char *dir = TEST_PATH("layout");
  McmErr err = {0};
  ASSERT(bpe_train(TINY, 1, 1000, 2, dir, &err) == 2, "%s", err.msg);
  json_error_t je;
  char path[600];
  snprintf(path, sizeof path, "%s/vocab.json", dir);
  json_t *mine = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  json_t *fx = json_load_file("tests/fixtures/tokenizer/vocab.json", 0, &je);
  ASSERT(mine && fx, "loading vocab files");
  EXPECT(json_object_size(mine) == 263, "entries %zu", json_object_size(mine));
  const char *key;
  json_t *val;
  int bad = 0;
  json_object_foreach(fx, key, val) {
    json_int_t id = json_integer_value(val);
    if (id >= 260) continue; /* the fixture's merges differ */
    json_t *m = json_object_get(mine, key);
    bad += !m || json_integer_value(m) != id;
  }
  EXPECT(bad == 0, "%d of the fixture's first 260 ids differ", bad);
  EXPECT(json_integer_value(json_object_get(mine, "aa")) == 260, "first merge id");
  EXPECT(json_integer_value(json_object_get(mine, "<mask>")) == 262, "<mask> last");
  json_decref(mine), json_decref(fx);
  char *text = out_file(dir, "vocab.json");
  EXPECT(text && !strncmp(text, "{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"!\": 4,", 50), "%.60s", text ? text : "");
  EXPECT(text && strstr(text, "\"\\u0120\": "), "Ġ escaped as \\u0120");
  free(text);
}

static const char *const CAPTIONS[] = {
    "An upbeat, energetic and pulsing techno track featuring a bright polysynth. Key of Bb minor, 129 BPM.",
    "A slow, peaceful and gentle classical piece featuring a rich cello. Key of Bb major, 61 BPM.",
    "Pulsing techno cut, 131 BPM, C minor, glassy polysynth lead over brassy synth stabs.",
    "A mellow jazz trio with a walking double bass, brushed drums and a warm piano. Key of F major, 96 BPM.",
    "Dreamy ambient pad with a soft bell melody, slow and peaceful, 70 BPM, D minor.",
    "Energetic rock song with distorted electric guitar, a punchy drum kit and bass guitar, 140 BPM.",
    "A gentle folk tune on an acoustic guitar with a flute melody. Key of G major, 88 BPM.",
    "Dark cinematic strings and timpani, a slow build in C minor, 64 BPM.",
    "Funky groove with slap bass, a clavinet riff and tight drums, 108 BPM, E minor.",
    "Café music: accordéon and guitar, très doux — 90 BPM, A minor. Piano solo, don't stop!",
    "Lo-fi hip hop beat with a dusty piano loop and vinyl crackle, 84 BPM.",
    "An upbeat pop song with a bright synth lead, claps and a four-on-the-floor kick, 120 BPM.",
};
#define N_CAPTIONS ((int)(sizeof CAPTIONS / sizeof CAPTIONS[0]))

TEST(bpe_train_captions_encode_without_unk_and_shorter) {
  const char *dir = TEST_PATH("captions");
  McmErr err = {0};
  int n = bpe_train(CAPTIONS, N_CAPTIONS, 420, 2, dir, &err);
  ASSERT(n > 20, "merges %d (%s)", n, err.msg);
  Tokenizer *t = load_dir(dir);
  EXPECT(tokenizer_vocab_size(t) <= 420, "vocab size %d > 420", tokenizer_vocab_size(t));
  TokenizerSpecials sp = tokenizer_specials(t);
  EXPECT(sp.bos == 0 && sp.pad == 1 && sp.eos == 2 && sp.unk == 3 && sp.mask == tokenizer_vocab_size(t) - 1,
         "specials %d %d %d %d %d", sp.bos, sp.pad, sp.eos, sp.unk, sp.mask);
  int32_t ids[256];
  long tokens = 0, bytes = 0;
  for (int i = 0; i < N_CAPTIONS; i++) {
    int k = tokenizer_encode(t, CAPTIONS[i], 256, ids, NULL, &err);
    ASSERT(k > 2, "caption %d: %s", i, err.msg);
    int unk = 0;
    for (int j = 1; j < k - 1; j++) unk += ids[j] == sp.unk;
    EXPECT(unk == 0, "caption %d: %d <unk>", i, unk);
    EXPECT(k - 2 < (int)strlen(CAPTIONS[i]), "caption %d: %d tokens for %zu bytes", i, k - 2, strlen(CAPTIONS[i]));
    tokens += k - 2, bytes += (long)strlen(CAPTIONS[i]);
  }
  EXPECT(2 * tokens < bytes, "%ld tokens for %ld bytes: less than 2 bytes a token", tokens, bytes);
  /* unseen text: still no <unk>, every byte has its character */
  int k = tokenizer_encode(t, "Zürich \xF0\x9F\x8E\xB5 \x01", 256, ids, NULL, &err);
  for (int j = 1; j < k - 1; j++) EXPECT(ids[j] != sp.unk, "unseen text: <unk> at %d", j);
  tokenizer_free(t);

  /* with min_frequency 1 the corpus has enough pairs to fill the vocabulary exactly */
  dir = TEST_PATH("full");
  ASSERT(bpe_train(CAPTIONS, N_CAPTIONS, 400, 1, dir, &err) >= 400 - BPE_MIN_VOCAB, "%s", err.msg);
  t = load_dir(dir);
  EXPECT(tokenizer_vocab_size(t) == 400, "vocab size %d", tokenizer_vocab_size(t));
  tokenizer_free(t);
}

TEST(bpe_train_is_deterministic_and_order_free) {
  McmErr err = {0};
  const char *a = TEST_PATH("a"), *b = TEST_PATH("b"), *c = TEST_PATH("c");
  const char *reversed[N_CAPTIONS];
  for (int i = 0; i < N_CAPTIONS; i++) reversed[i] = CAPTIONS[N_CAPTIONS - 1 - i];
  ASSERT(bpe_train(CAPTIONS, N_CAPTIONS, 500, 2, a, &err) > 0, "%s", err.msg);
  ASSERT(bpe_train(CAPTIONS, N_CAPTIONS, 500, 2, b, &err) > 0, "%s", err.msg);
  ASSERT(bpe_train(reversed, N_CAPTIONS, 500, 2, c, &err) > 0, "%s", err.msg);
  const char *names[2] = {"vocab.json", "merges.txt"};
  for (int f = 0; f < 2; f++) {
    char *x = out_file(a, names[f]), *y = out_file(b, names[f]), *z = out_file(c, names[f]);
    ASSERT(x && y && z, "reading %s", names[f]);
    EXPECT(!strcmp(x, y), "%s differs between two runs", names[f]);
    EXPECT(!strcmp(x, z), "%s depends on the order of the texts", names[f]);
    free(x), free(y), free(z);
  }
}

static void collect(void *ctx, const char *s, size_t n) {
  char *out = ctx;
  strncat(out, s, n);
  strcat(out, "|");
}

TEST(bpe_train_pretokenize_matches_the_tokenizer_pattern) {
  char out[256] = {0};
  McmErr err = {0};
  ASSERT(tokenizer_pretokenize("Don't  stop<s>, 129 BPM!!  <mask>x", collect, out, &err) == 0, "%s", err.msg);
  /* specials left out; "  " before <mask> eaten by it; \s+(?!\S) leaves one space for " stop" */
  EXPECT(!strcmp(out, "Don|'t| | stop|,| 129| BPM|!!|x|"), "pieces %s", out);
  EXPECT(tokenizer_byte_char(' ') == 0x120 && tokenizer_byte_char('a') == 'a' && tokenizer_byte_char(0) == 0x100,
         "byte map");
  EXPECT(tokenizer_pretokenize("bad \xC0\xAF", collect, out, &err) < 0, "overlong UTF-8 accepted");
}

TEST(bpe_train_rejects_bad_input_and_keeps_old_files) {
  const char *dir = TEST_PATH("keep");
  McmErr err = {0};
  ASSERT(bpe_train(TINY, 1, 1000, 2, dir, &err) == 2, "%s", err.msg);
  char *before = out_file(dir, "merges.txt");

  const char *bad_utf8[] = {"fine", "caf\xE9 au lait"};
  EXPECT(bpe_train(bad_utf8, 2, 1000, 1, dir, &err) < 0, "invalid UTF-8 accepted");
  EXPECT_STR_CONTAINS(err.msg, "text 1");
  EXPECT_STR_CONTAINS(err.msg, "UTF-8");
  const char *with_null[] = {"fine", NULL};
  EXPECT(bpe_train(with_null, 2, 1000, 1, dir, &err) < 0, "NULL text accepted");
  EXPECT_STR_CONTAINS(err.msg, "text 1 is NULL");
  EXPECT(bpe_train(TINY, 1, BPE_MIN_VOCAB - 1, 1, dir, &err) < 0, "vocab size 260 accepted");
  EXPECT_STR_CONTAINS(err.msg, "vocab size 260");
  EXPECT(bpe_train(TINY, 1, 1000, 0, dir, &err) < 0, "min frequency 0 accepted");
  EXPECT_STR_CONTAINS(err.msg, "min frequency 0");
  EXPECT(bpe_train(TINY, -1, 1000, 1, dir, &err) < 0, "n = -1 accepted");

  char *after = out_file(dir, "merges.txt");
  EXPECT(before && after && !strcmp(before, after), "a failed run changed merges.txt");
  free(before), free(after);

  /* an output "directory" that is a file */
  const char *file = TEST_PATH("plain_file");
  FILE *f = fopen(file, "w");
  ASSERT(f, "creating %s", file);
  fclose(f);
  EXPECT(bpe_train(TINY, 1, 1000, 1, file, &err) < 0, "a file as out_dir accepted");
  EXPECT_STR_CONTAINS(err.msg, "plain_file");

  /* no texts at all is fine: bytes and specials only */
  const char *nested = TEST_PATH("x/y/z");
  EXPECT(bpe_train(NULL, 0, 1000, 1, nested, &err) == 0, "empty corpus: %s", err.msg);
  Tokenizer *t = load_dir(nested);
  EXPECT(tokenizer_vocab_size(t) == BPE_MIN_VOCAB, "vocab size %d", tokenizer_vocab_size(t));
  tokenizer_free(t);
}
