/* Tests for data/tokenizer: ids and masks identical to transformers' RobertaTokenizer on the
 * committed fixture (tests/fixtures/tokenizer.py: ~300 prompts with punctuation, digits,
 * contractions, accents, CJK, emoji, whitespace runs, special tokens, long text), the same from
 * several threads at once, truncation and max_len edges, invalid UTF-8, BPE semantics on a
 * hand-made vocabulary (checked against the slow tokenizer by hand), and bad files. */
#include <jansson.h>
#include <pthread.h>
#include <time.h>

#include "data/tokenizer.h"
#include "data/unicode_tables.h"
#include "tests/test.h"

#define FX_VOCAB "tests/fixtures/tokenizer/vocab.json"
#define FX_MERGES "tests/fixtures/tokenizer/merges.txt"
#define FX_EXPECTED "tests/fixtures/tokenizer/expected.json"

/* ---------------------------------------------------------------- helpers */

static Tokenizer *load_fixture_tokenizer(void) {
  McmErr err = {0};
  Tokenizer *t = tokenizer_load(FX_VOCAB, FX_MERGES, &err);
  ASSERT(t, "loading the fixture tokenizer: %s", err.msg);
  return t;
}

static void write_file(const char *path, const char *bytes) {
  FILE *f = FOPEN_CHECK(path, "wb");
  MCM_CHECK(fwrite(bytes, 1, strlen(bytes), f) == strlen(bytes), "write %s", path);
  fclose(f);
}

/* The text with non-printable bytes escaped, for failure messages. */
static const char *shown(const char *s, char *buf, size_t size) {
  size_t o = 0;
  for (; *s && o + 8 < size; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c < 0x7F) buf[o++] = (char)c;
    else o += (size_t)snprintf(buf + o, size - o, "\\x%02X", c);
  }
  buf[o] = '\0';
  return buf;
}

typedef struct {
  const char *text;
  int max_len;
  int32_t *ids, *mask; /* (max_len) */
} Case;

typedef struct {
  json_t *root;
  Case *cases;
  int n;
} Expected;

static void int_array(json_t *a, int32_t *out, int n, int c) {
  ASSERT(json_is_array(a) && (int)json_array_size(a) == n, "case %d: array of %d expected", c, n);
  for (int i = 0; i < n; i++) out[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
}

static Expected load_expected(void) {
  json_error_t je;
  Expected e = {.root = json_load_file(FX_EXPECTED, 0, &je)};
  ASSERT(e.root, "%s:%d: %s (regenerate with tests/fixtures/tokenizer.py)", FX_EXPECTED, je.line, je.text);
  json_t *cases = json_object_get(e.root, "cases");
  ASSERT(json_is_array(cases), "%s: no \"cases\" array", FX_EXPECTED);
  e.n = (int)json_array_size(cases);
  e.cases = CALLOC_CHECK((size_t)e.n, sizeof(Case));
  for (int c = 0; c < e.n; c++) {
    json_t *o = json_array_get(cases, (size_t)c);
    Case *k = &e.cases[c];
    k->text = json_string_value(json_object_get(o, "text"));
    k->max_len = (int)json_integer_value(json_object_get(o, "max_len"));
    ASSERT(k->text && k->max_len >= 2, "%s: case %d malformed", FX_EXPECTED, c);
    k->ids = MALLOC_CHECK((size_t)k->max_len * sizeof(int32_t));
    k->mask = MALLOC_CHECK((size_t)k->max_len * sizeof(int32_t));
    int_array(json_object_get(o, "ids"), k->ids, k->max_len, c);
    int_array(json_object_get(o, "mask"), k->mask, k->max_len, c);
  }
  return e;
}

static void free_expected(Expected *e) {
  for (int c = 0; c < e->n; c++) free(e->cases[c].ids), free(e->cases[c].mask);
  free(e->cases);
  json_decref(e->root);
}

/* Encodes every case; returns how many differ (reporting the first few when report). */
static int check_cases(const Tokenizer *t, const Expected *e, bool report) {
  int bad = 0;
  int32_t ids[512], mask[512];
  for (int c = 0; c < e->n; c++) {
    const Case *k = &e->cases[c];
    if (k->max_len > 512) return -1;
    McmErr err = {0};
    int got = tokenizer_encode(t, k->text, k->max_len, ids, mask, &err);
    int real = 0, first = -1;
    for (int i = 0; i < k->max_len; i++) {
      real += k->mask[i];
      if (first < 0 && got >= 0 && (ids[i] != k->ids[i] || mask[i] != k->mask[i])) first = i;
    }
    if (got == real && first < 0) continue;
    if (report && bad < 8) {
      char buf[300];
      if (got < 0) test_fail(__FILE__, __LINE__, "case %d \"%s\": %s", c, shown(k->text, buf, sizeof buf), err.msg);
      else
        test_fail(__FILE__, __LINE__, "case %d \"%s\" (max_len %d): returned %d (want %d); first difference at %d: "
                  "id %d mask %d, want id %d mask %d", c, shown(k->text, buf, sizeof buf), k->max_len, got, real,
                  first, first >= 0 ? ids[first] : -1, first >= 0 ? mask[first] : -1,
                  first >= 0 ? k->ids[first] : -1, first >= 0 ? k->mask[first] : -1);
    }
    bad++;
  }
  return bad;
}

/* ---------------------------------------------------------------- against transformers */

TEST(tokenizer_matches_transformers_on_fixture_prompts) {
  Tokenizer *t = load_fixture_tokenizer();
  Expected e = load_expected();
  EXPECT(e.n >= 300, "only %d fixture cases", e.n);
  int bad = check_cases(t, &e, true);
  EXPECT(bad == 0, "%d of %d cases differ from transformers' RobertaTokenizer", bad, e.n);
  free_expected(&e);
  tokenizer_free(t);
}

typedef struct {
  const Tokenizer *t;
  const Expected *e;
  int bad;
} ThreadJob;

static void *encode_all(void *arg) {
  ThreadJob *j = arg;
  for (int rep = 0; rep < 3; rep++) j->bad += check_cases(j->t, j->e, false);
  return NULL;
}

TEST(tokenizer_concurrent_encodes_agree) {
  Tokenizer *t = load_fixture_tokenizer();
  Expected e = load_expected();
  enum { THREADS = 4 };
  pthread_t th[THREADS];
  ThreadJob jobs[THREADS];
  for (int i = 0; i < THREADS; i++) {
    jobs[i] = (ThreadJob){t, &e, 0};
    MCM_CHECK(pthread_create(&th[i], NULL, encode_all, &jobs[i]) == 0, "pthread_create");
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    EXPECT(jobs[i].bad == 0, "thread %d: %d cases differ", i, jobs[i].bad);
  }
  free_expected(&e);
  tokenizer_free(t);
}

TEST(tokenizer_vocabulary_and_special_ids) {
  Tokenizer *t = load_fixture_tokenizer();
  TokenizerSpecials sp = tokenizer_specials(t);
  EXPECT(sp.bos == 0 && sp.pad == 1 && sp.eos == 2 && sp.unk == 3, "specials %d %d %d %d", sp.bos, sp.pad,
         sp.eos, sp.unk);
  EXPECT(sp.mask == tokenizer_vocab_size(t) - 1, "<mask> %d is not last (vocab %d)", sp.mask,
         tokenizer_vocab_size(t));
  EXPECT(tokenizer_vocab_size(t) == 1911, "vocab size %d", tokenizer_vocab_size(t));
  EXPECT(tokenizer_token_to_id(t, "<pad>") == 1, "<pad>");
  EXPECT(tokenizer_token_to_id(t, "\xc4\xa0" "and") > 3, "\"\\u0120and\" (\" and\") should be in the vocabulary");
  EXPECT(tokenizer_token_to_id(t, "no such token") == -1, "unknown token");
  EXPECT(tokenizer_token_to_id(t, "") == -1, "empty token");
  EXPECT(strcmp(ucd_unicode_version, "17.0") == 0, "tables from Unicode %s", ucd_unicode_version);
  tokenizer_free(t);
}

/* ---------------------------------------------------------------- truncation and max_len */

TEST(tokenizer_truncation_keeps_eos_and_a_prefix) {
  Tokenizer *t = load_fixture_tokenizer();
  const char *text = "A calm piano melody with soft strings, 140bpm; it's late-night jazz \xf0\x9f\x8e\xb5 caf\xc3\xa9";
  int32_t full[128], ids[128], mask[128];
  McmErr err = {0};
  int n = tokenizer_encode(t, text, 128, full, NULL, &err);
  ASSERT(n > 10 && n < 128, "%d tokens: %s", n, err.msg);
  for (int max_len = 2; max_len <= n + 3; max_len++) {
    int got = tokenizer_encode(t, text, max_len, ids, mask, &err);
    int want = max_len < n ? max_len : n;
    ASSERT(got == want, "max_len %d: returned %d, want %d", max_len, got, want);
    for (int i = 0; i < max_len; i++) {
      int32_t id = i < want - 1 ? full[i] : i == want - 1 ? 2 : 1;
      EXPECT(ids[i] == id && mask[i] == (i < want), "max_len %d, position %d: id %d mask %d, want %d %d", max_len,
             i, ids[i], mask[i], id, i < want);
    }
  }
  /* exact fit: no padding, nothing dropped */
  EXPECT(tokenizer_encode(t, text, n, ids, mask, &err) == n && ids[n - 1] == 2 && mask[n - 1] == 1 &&
             memcmp(ids, full, (size_t)n * sizeof(int32_t)) == 0,
         "exact fit");
  /* max_len 2: only <s></s>, whatever the text */
  EXPECT(tokenizer_encode(t, text, 2, ids, mask, &err) == 2 && ids[0] == 0 && ids[1] == 2 && mask[0] == 1 &&
             mask[1] == 1,
         "max_len 2");
  tokenizer_free(t);
}

TEST(tokenizer_rejects_max_len_below_two) {
  Tokenizer *t = load_fixture_tokenizer();
  int32_t ids[4];
  for (int max_len = -3; max_len < 2; max_len++) {
    McmErr err = {0};
    EXPECT(tokenizer_encode(t, "hello", max_len, ids, NULL, &err) == -1, "max_len %d accepted", max_len);
    EXPECT_STR_CONTAINS(err.msg, "max_len");
  }
  McmErr err = {0};
  EXPECT(tokenizer_encode(t, NULL, 4, ids, NULL, &err) == -1, "NULL text accepted");
  tokenizer_free(t);
}

/* A long caption without spaces goes through the heap merge in well under a second, and a
 * long text stops pre-tokenising once max_len is full. */
TEST(tokenizer_long_inputs_are_fast) {
  Tokenizer *t = load_fixture_tokenizer();
  size_t n = 1 << 20;
  char *text = MALLOC_CHECK(n + 1);
  uint32_t s = 7;
  for (size_t i = 0; i < n; i++) s = s * 1103515245u + 12345u, text[i] = "abcdefghijklmnopqrstuvwxyz"[(s >> 16) % 26];
  text[n] = '\0';
  int32_t ids[512];
  McmErr err = {0};
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  EXPECT(tokenizer_encode(t, text, 512, ids, NULL, &err) == 512, "one 1 MiB word: %s", err.msg);
  for (size_t i = 0; i < n; i++) text[i] = i % 6 == 5 ? ' ' : 'a' + (char)(i % 7);
  EXPECT(tokenizer_encode(t, text, 77, ids, NULL, &err) == 77, "1 MiB of words: %s", err.msg);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double sec = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
  EXPECT(sec < 5.0, "took %.2f s", sec);
  free(text);
  tokenizer_free(t);
}

/* ---------------------------------------------------------------- UTF-8 */

TEST(tokenizer_rejects_invalid_utf8) {
  Tokenizer *t = load_fixture_tokenizer();
  static const char *const bad[] = {
      "\xff",                 /* never a UTF-8 byte */
      "abc\x80",              /* stray continuation byte */
      "\xc0\xaf",             /* overlong '/' */
      "\xc1\xbf",             /* overlong */
      "\xe0\x80\xaf",         /* overlong, 3 bytes */
      "\xf0\x80\x80\xaf",     /* overlong, 4 bytes */
      "\xed\xa0\x80",         /* surrogate U+D800 */
      "\xed\xbf\xbf",         /* surrogate U+DFFF */
      "\xf4\x90\x80\x80",     /* U+110000 */
      "\xf5\x80\x80\x80",     /* beyond Unicode */
      "caf\xc3",              /* truncated at the end */
      "\xe2\x82 euro",        /* truncated in the middle */
      "\xf0\x9f\x8e music",   /* truncated emoji */
      "\xc3\x28",             /* bad continuation */
  };
  int32_t ids[16];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    McmErr err = {0};
    char buf[64];
    EXPECT(tokenizer_encode(t, bad[i], 16, ids, NULL, &err) == -1, "\"%s\" accepted", shown(bad[i], buf, sizeof buf));
    EXPECT_STR_CONTAINS(err.msg, "not valid UTF-8");
  }
  static const char *const good[] = {"\xf4\x8f\xbf\xbf", "\xed\x9f\xbf", "\xee\x80\x80", "\xc2\x80", "\xf0\x90\x80\x80"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    McmErr err = {0};
    EXPECT(tokenizer_encode(t, good[i], 16, ids, NULL, &err) > 2, "valid text %zu refused: %s", i, err.msg);
  }
  tokenizer_free(t);
}

/* ---------------------------------------------------------------- BPE on a hand-made vocabulary */

/* Expected ids from transformers 4.57.6 RobertaTokenizer on the same two files. The merge
 * "ab a" ranks before "a b": "abab" must merge both "a b" pairs first (-> ab ab), not let the
 * lower-ranked "ab a" take the middle a. */
TEST(tokenizer_bpe_merge_order_and_unknown_tokens) {
  const char *vocab = TEST_PATH("vocab.json"), *merges = TEST_PATH("merges.txt");
  write_file(vocab, "{\"<s>\":0,\"<pad>\":1,\"</s>\":2,\"<unk>\":3,\"a\":4,\"b\":5,\"ab\":6,\"aba\":7,\"<mask>\":8}");
  write_file(merges, "#version: 0.2\nab a\na b\n");
  McmErr err = {0};
  Tokenizer *t = tokenizer_load(vocab, merges, &err);
  ASSERT(t, "%s", err.msg);
  struct {
    const char *text;
    int32_t ids[6];
  } cases[] = {
      {"abab", {0, 6, 6, 2, 1, 1}},    {"ababa", {0, 6, 7, 2, 1, 1}},  {"aab", {0, 4, 6, 2, 1, 1}},
      {"c", {0, 3, 2, 1, 1, 1}},       {"abc", {0, 6, 3, 2, 1, 1}},    {"ab<mask>a", {0, 6, 8, 4, 2, 1}},
      {"x  <mask>", {0, 3, 8, 2, 1, 1}}, {"<s>a</s>", {0, 0, 4, 2, 2, 1}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int32_t ids[6];
    ASSERT(tokenizer_encode(t, cases[c].text, 6, ids, NULL, &err) >= 2, "%s", err.msg);
    EXPECT(memcmp(ids, cases[c].ids, sizeof ids) == 0, "\"%s\": got %d %d %d %d %d %d", cases[c].text, ids[0],
           ids[1], ids[2], ids[3], ids[4], ids[5]);
  }
  tokenizer_free(t);

  /* CRLF line ends and no header: the same merges */
  write_file(merges, "ab a\r\na b\r\n\r\n");
  t = tokenizer_load(vocab, merges, &err);
  ASSERT(t, "%s", err.msg);
  int32_t ids[6];
  EXPECT(tokenizer_encode(t, "ababa", 6, ids, NULL, &err) == 4 && ids[1] == 6 && ids[2] == 7, "CRLF merges");
  tokenizer_free(t);

  /* no merges at all: every byte is its own token */
  write_file(merges, "");
  t = tokenizer_load(vocab, merges, &err);
  ASSERT(t, "%s", err.msg);
  EXPECT(tokenizer_encode(t, "ab", 6, ids, NULL, &err) == 4 && ids[1] == 4 && ids[2] == 5, "empty merges");
  tokenizer_free(t);
}

/* ---------------------------------------------------------------- bad files */

static void expect_load_error(const char *vocab_text, const char *merges_text, const char *want1,
                              const char *want2) {
  const char *vocab = TEST_PATH("v.json"), *merges = TEST_PATH("m.txt");
  write_file(vocab, vocab_text ? vocab_text : "{\"<s>\":0,\"<pad>\":1,\"</s>\":2,\"<unk>\":3,\"<mask>\":4}");
  write_file(merges, merges_text ? merges_text : "#version: 0.2\n");
  McmErr err = {0};
  Tokenizer *t = tokenizer_load(vocab, merges, &err);
  EXPECT(!t, "loaded despite: %s", want2);
  tokenizer_free(t);
  EXPECT_STR_CONTAINS(err.msg, want1);
  EXPECT_STR_CONTAINS(err.msg, want2);
  EXPECT(!strchr(err.msg, '\n'), "one line: %s", err.msg);
}

TEST(tokenizer_bad_vocab_files) {
  McmErr err = {0};
  EXPECT(!tokenizer_load(TEST_PATH("missing.json"), FX_MERGES, &err), "missing vocab");
  EXPECT_STR_CONTAINS(err.msg, "missing.json");
  expect_load_error("{\"<s>\":0,\n\"<pad>\":1,\n\"</s>\" 2}", NULL, "v.json:3:", "':' expected");
  expect_load_error("", NULL, "v.json", "tokenizer vocabulary");
  expect_load_error("[1, 2]", NULL, "v.json", "expected a JSON object");
  expect_load_error("{\"<s>\":0,\"<pad>\":1,\"</s>\":2,\"<unk>\":3,\"<mask>\":4.5}", NULL, "v.json",
                    "\"<mask>\" has a value that is not an integer");
  expect_load_error("{\"<s>\":0,\"<pad>\":-1,\"</s>\":2,\"<unk>\":3,\"<mask>\":4}", NULL, "v.json",
                    "\"<pad>\" has an id out of range");
  expect_load_error("{\"<s>\":0,\"<pad>\":1,\"</s>\":2,\"<unk>\":3,\"<mask>\":\"4\"}", NULL, "v.json",
                    "not an integer");
  expect_load_error("{\"<s>\":0,\"<pad>\":1,\"</s>\":2,\"<mask>\":4}", NULL, "v.json", "no \"<unk>\" token");
  expect_load_error("{\"<s>\":0,\"<s>\":1,\"</s>\":2,\"<unk>\":3,\"<mask>\":4}", NULL, "v.json", "duplicate");
  expect_load_error("{\"<s>\":0,\"<pad>\":1,\"</s>\":2,\"<unk>\":3,\"<mask>\":4,\"\xff\":5}", NULL, "v.json:1:",
                    "unable to decode byte 0xff");
  expect_load_error("{\"<s>\":0,\"<pad>\":1,\"</s>\":2,\"<unk>\":3,\"<mask>\":4,\"x\":99999999999}", NULL,
                    "v.json", "out of range");
}

TEST(tokenizer_bad_merges_files) {
  McmErr err = {0};
  EXPECT(!tokenizer_load(FX_VOCAB, TEST_PATH("missing.txt"), &err), "missing merges");
  EXPECT_STR_CONTAINS(err.msg, "missing.txt");
  EXPECT_STR_CONTAINS(err.msg, "cannot open");
  expect_load_error(NULL, "#version: 0.2\na b\nabc\n", "m.txt:3:", "found one");
  expect_load_error(NULL, "#version: 0.2\na b\nb c\na b c\n", "m.txt:4:", "more than two");
  expect_load_error(NULL, "#version: 0.2\na b\nb \xc3\n", "m.txt:3:", "not valid UTF-8");
  expect_load_error(NULL, "#version: 0.2\na b\nc d\na b\n", "m.txt:4:", "\"a b\" appears a second time");
  /* a directory is not a merges file */
  EXPECT(!tokenizer_load(FX_VOCAB, test_tmpdir(), &err), "directory accepted as merges");
  EXPECT(!tokenizer_load(test_tmpdir(), FX_MERGES, &err), "directory accepted as vocab");
}
