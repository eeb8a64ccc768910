/* Byte-level BPE training (see bpe_train.h for what it computes).
 *
 * Words are kept once each with their count; a word is an array of symbol indices. Symbols
 * 0..255 are the byte-level characters of bytes 0..255; merges add more. Every round counts
 * all adjacent pairs over the distinct words in a hash table, takes the best, and rewrites
 * the words that hold it: O(merges x symbols in the distinct words), which for a few thousand
 * captions (a few thousand distinct words) and 2000 entries is well under a second.
 */
#include "data/bpe_train.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/io.h"
#include "data/tokenizer.h"

typedef struct {
  char *bytes; /* the piece as written (the hash key) */
  size_t n;
  int32_t *sym; /* current symbols (len of them) */
  int32_t len;
  int64_t count;
} Word;

typedef struct {
  Word *words;
  int32_t n_words, cap_words;
  int32_t *slots; /* hash slot -> word index, -1 when free */
  uint32_t mask;
} Words;

typedef struct {
  char **str; /* byte-level spelling, NUL-terminated */
  size_t *len;
  int32_t n, cap;
} Syms;

typedef struct {
  uint64_t key; /* left << 32 | right; EMPTY when free */
  int64_t count;
} PairSlot;

#define EMPTY UINT64_MAX

static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static uint64_t mix64(uint64_t x) { /* splitmix64 finaliser */
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* ---------------------------------------------------------------- counting words */

static void words_rehash(Words *w, uint32_t n_slots) {
  free(w->slots);
  w->slots = MALLOC_CHECK(sizeof(int32_t) * n_slots);
  memset(w->slots, 0xFF, sizeof(int32_t) * n_slots);
  w->mask = n_slots - 1;
  for (int32_t i = 0; i < w->n_words; i++) {
    uint32_t s = (uint32_t)fnv1a(w->words[i].bytes, w->words[i].n) & w->mask;
    while (w->slots[s] >= 0) s = (s + 1) & w->mask;
    w->slots[s] = i;
  }
}

static void count_piece(void *ctx, const char *s, size_t n) {
  Words *w = ctx;
  uint32_t slot = (uint32_t)fnv1a(s, n) & w->mask;
  for (; w->slots[slot] >= 0; slot = (slot + 1) & w->mask) {
    Word *x = &w->words[w->slots[slot]];
    if (x->n == n && memcmp(x->bytes, s, n) == 0) {
      x->count++;
      return;
    }
  }
  MCM_CHECK(n < INT32_MAX, "bpe_train: a single word of %zu bytes", n);
  if (w->n_words == w->cap_words) {
    w->cap_words = w->cap_words ? 2 * w->cap_words : 256;
    w->words = realloc(w->words, sizeof(Word) * (size_t)w->cap_words);
    MCM_CHECK(w->words, "bpe_train: out of memory for %d words", w->cap_words);
  }
  Word *x = &w->words[w->n_words];
  *x = (Word){.bytes = MALLOC_CHECK(n), .n = n, .sym = MALLOC_CHECK(sizeof(int32_t) * n), .len = (int32_t)n,
              .count = 1};
  memcpy(x->bytes, s, n);
  for (size_t i = 0; i < n; i++) x->sym[i] = (unsigned char)s[i];
  w->slots[slot] = w->n_words++;
  if ((uint32_t)w->n_words * 2 > w->mask) words_rehash(w, 2 * (w->mask + 1));
}

static void words_free(Words *w) {
  for (int32_t i = 0; i < w->n_words; i++) free(w->words[i].bytes), free(w->words[i].sym);
  free(w->words), free(w->slots);
}

/* ---------------------------------------------------------------- symbols */

static int32_t syms_add(Syms *s, char *str, size_t len) { /* takes str */
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 512;
    s->str = realloc(s->str, sizeof(char *) * (size_t)s->cap);
    s->len = realloc(s->len, sizeof(size_t) * (size_t)s->cap);
    MCM_CHECK(s->str && s->len, "bpe_train: out of memory for %d symbols", s->cap);
  }
  s->str[s->n] = str, s->len[s->n] = len;
  return s->n++;
}

static int32_t syms_find(const Syms *s, const char *str, size_t len) {
  for (int32_t i = 0; i < s->n; i++)
    if (s->len[i] == len && memcmp(s->str[i], str, len) == 0) return i;
  return -1;
}

static void syms_init_bytes(Syms *s) {
  for (int b = 0; b < 256; b++) {
    uint32_t cp = tokenizer_byte_char(b); /* < U+0800: one or two UTF-8 bytes */
    char *str = MALLOC_CHECK(3);
    size_t len = cp < 0x80 ? 1 : 2;
    if (cp < 0x80) str[0] = (char)cp;
    else str[0] = (char)(0xC0 | cp >> 6), str[1] = (char)(0x80 | (cp & 0x3F));
    str[len] = 0;
    syms_add(s, str, len);
  }
}

static int bytes_cmp(const char *a, size_t na, const char *b, size_t nb) {
  int c = memcmp(a, b, na < nb ? na : nb);
  return c ? c : (na > nb) - (na < nb);
}

/* Does pair (a, b) come before pair (c, d) among pairs of equal count? */
static bool pair_first(const Syms *s, int32_t a, int32_t b, int32_t c, int32_t d) {
  int k = bytes_cmp(s->str[a], s->len[a], s->str[c], s->len[c]);
  if (k) return k < 0;
  return bytes_cmp(s->str[b], s->len[b], s->str[d], s->len[d]) < 0;
}

/* ---------------------------------------------------------------- merging */

static void pairs_count(const Words *w, PairSlot *t, uint32_t mask) {
  for (uint32_t i = 0; i <= mask; i++) t[i].key = EMPTY;
  for (int32_t k = 0; k < w->n_words; k++) {
    const Word *x = &w->words[k];
    for (int32_t i = 0; i + 1 < x->len; i++) {
      uint64_t key = (uint64_t)x->sym[i] << 32 | (uint32_t)x->sym[i + 1];
      uint32_t s = (uint32_t)mix64(key) & mask;
      while (t[s].key != EMPTY && t[s].key != key) s = (s + 1) & mask;
      if (t[s].key == EMPTY) t[s].key = key, t[s].count = 0;
      t[s].count += x->count;
    }
  }
}

/* The best pair (highest count, then pair_first), or false when none reaches min_count. */
static bool pairs_best(const PairSlot *t, uint32_t mask, const Syms *s, int64_t min_count, int32_t *a, int32_t *b) {
  int64_t best = 0;
  for (uint32_t i = 0; i <= mask; i++) {
    if (t[i].key == EMPTY || t[i].count < min_count || t[i].count < best) continue;
    int32_t l = (int32_t)(t[i].key >> 32), r = (int32_t)(uint32_t)t[i].key;
    if (t[i].count == best && !pair_first(s, l, r, *a, *b)) continue;
    best = t[i].count, *a = l, *b = r;
  }
  return best > 0;
}

static void merge_words(Words *w, int32_t a, int32_t b, int32_t merged) {
  for (int32_t k = 0; k < w->n_words; k++) {
    Word *x = &w->words[k];
    int32_t o = 0;
    for (int32_t i = 0; i < x->len; i++) {
      if (i + 1 < x->len && x->sym[i] == a && x->sym[i + 1] == b) x->sym[o++] = merged, i++;
      else x->sym[o++] = x->sym[i];
    }
    x->len = o;
  }
}

/* ---------------------------------------------------------------- output */

static int mkdir_p(const char *path, McmErr *err) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
    return mcm_err(err, "bpe_train: output directory name too long: %.80s...", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0777) && errno != EEXIST) return mcm_err(err, "bpe_train: cannot create %s: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0777) && errno != EEXIST) return mcm_err(err, "bpe_train: cannot create %s: %s", buf, strerror(errno));
  struct stat st;
  if (stat(buf, &st) || !S_ISDIR(st.st_mode)) return mcm_err(err, "bpe_train: %s is not a directory", buf);
  return 0;
}

/* vocab.json text (see bpe_train.h for the layout), malloc'd. */
static char *vocab_json(const Syms *s, const int32_t *merge_sym, int32_t n_merges) {
  static const char *const specials[4] = {"<s>", "<pad>", "</s>", "<unk>"};
  json_t *v = json_object();
  for (int i = 0; i < 4; i++) json_object_set_new(v, specials[i], json_integer(i));
  int32_t order[256]; /* bytes by the code point of their character */
  for (int b = 0; b < 256; b++) order[b] = b;
  for (int i = 1; i < 256; i++) /* insertion sort: 256 entries, once */
    for (int j = i; j > 0 && tokenizer_byte_char(order[j - 1]) > tokenizer_byte_char(order[j]); j--) {
      int32_t t = order[j];
      order[j] = order[j - 1], order[j - 1] = t;
    }
  json_int_t id = 4;
  for (int i = 0; i < 256; i++) json_object_set_new(v, s->str[order[i]], json_integer(id++));
  for (int32_t m = 0; m < n_merges; m++)
    if (!json_object_get(v, s->str[merge_sym[m]])) json_object_set_new(v, s->str[merge_sym[m]], json_integer(id++));
  json_object_set_new(v, "<mask>", json_integer(id));
  /* insertion order is id order; ASCII escapes like the hub's roberta-base file */
  char *text = json_dumps(v, JSON_ENSURE_ASCII);
  MCM_CHECK(text, "bpe_train: json_dumps failed");
  json_decref(v);
  return text;
}

static char *merges_txt(const Syms *s, const int32_t *left, const int32_t *right, int32_t n_merges, size_t *n) {
  size_t size = 32;
  for (int32_t m = 0; m < n_merges; m++) size += s->len[left[m]] + s->len[right[m]] + 2;
  char *text = MALLOC_CHECK(size);
  size_t o = (size_t)sprintf(text, "#version: 0.2\n");
  for (int32_t m = 0; m < n_merges; m++)
    o += (size_t)sprintf(text + o, "%s %s\n", s->str[left[m]], s->str[right[m]]);
  *n = o;
  return text;
}

/* Writes both files under temporary names first, so a failure while writing leaves the old pair
 * intact; only a failed rename between the two publishes could mix an old and a new file. */
static int write_outputs(const char *out_dir, const char *vocab, size_t vocab_n, const char *merges,
                         size_t merges_n, McmErr *err) {
  if (mkdir_p(out_dir, err)) return -1;
  char path[2][4352], tmp[2][4608];
  const char *name[2] = {"merges.txt", "vocab.json"}, *data[2] = {merges, vocab};
  size_t size[2] = {merges_n, vocab_n};
  int written = 0;
  for (; written < 2; written++) {
    int i = written;
    snprintf(path[i], sizeof path[i], "%s/%s", out_dir, name[i]);
    if (file_tmp_name(tmp[i], sizeof tmp[i], path[i], err)) break;
    FILE *f = fopen(tmp[i], "wb");
    if (!f) {
      mcm_err(err, "bpe_train: cannot write %s: %s", tmp[i], strerror(errno));
      break;
    }
    bool ok = fwrite(data[i], 1, size[i], f) == size[i];
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
      remove(tmp[i]);
      mcm_err(err, "bpe_train: writing %s failed: %s", tmp[i], strerror(errno));
      break;
    }
  }
  if (written < 2) {
    for (int i = 0; i < written; i++) remove(tmp[i]);
    return -1;
  }
  if (file_publish(tmp[0], path[0], err)) return remove(tmp[1]), -1;
  return file_publish(tmp[1], path[1], err);
}

/* ---------------------------------------------------------------- training */

int bpe_train(const char *const *texts, int n, int vocab_size, int min_frequency, const char *out_dir, McmErr *err) {
  if (n < 0 || (n > 0 && !texts)) return mcm_err(err, "bpe_train: no texts (n = %d)", n);
  if (vocab_size < BPE_MIN_VOCAB || vocab_size > (1 << 24))
    return mcm_err(err, "bpe_train: vocab size %d out of range: it must be in [%d, %d] (4 specials, 256 bytes, <mask>)",
                   vocab_size, BPE_MIN_VOCAB, 1 << 24);
  if (min_frequency < 1) return mcm_err(err, "bpe_train: min frequency %d must be at least 1", min_frequency);
  if (!out_dir || !*out_dir) return mcm_err(err, "bpe_train: no output directory");

  Words w = {0};
  words_rehash(&w, 1024);
  for (int i = 0; i < n; i++) {
    McmErr e = {0};
    if (!texts[i]) {
      words_free(&w);
      return mcm_err(err, "bpe_train: text %d is NULL", i);
    }
    if (tokenizer_pretokenize(texts[i], count_piece, &w, &e)) {
      words_free(&w);
      return mcm_err(err, "bpe_train: text %d: %s", i, e.msg);
    }
  }

  Syms s = {0};
  syms_init_bytes(&s);
  int64_t total = 0; /* symbols over the distinct words: bounds the distinct pairs */
  for (int32_t k = 0; k < w.n_words; k++) total += w.words[k].len;
  MCM_CHECK(total < (1 << 29), "bpe_train: %lld symbols in the distinct words: too many", (long long)total);
  uint32_t n_slots = 1024;
  while (n_slots < 2 * total) n_slots *= 2;
  PairSlot *pairs = MALLOC_CHECK(sizeof(PairSlot) * n_slots);

  int32_t max_new = vocab_size - BPE_MIN_VOCAB, n_new = 0, n_merges = 0, cap = 0;
  int32_t *left = NULL, *right = NULL, *merged = NULL;
  while (n_new < max_new) {
    int32_t a = -1, b = -1;
    pairs_count(&w, pairs, n_slots - 1);
    if (!pairs_best(pairs, n_slots - 1, &s, min_frequency, &a, &b)) break;
    size_t len = s.len[a] + s.len[b];
    char *str = MALLOC_CHECK(len + 1);
    memcpy(str, s.str[a], s.len[a]);
    memcpy(str + s.len[a], s.str[b], s.len[b] + 1);
    int32_t m = syms_find(&s, str, len);
    if (m >= 0) free(str); /* another merge already spells this token */
    else m = syms_add(&s, str, len), n_new++;
    if (n_merges == cap) {
      cap = cap ? 2 * cap : 256;
      left = realloc(left, sizeof(int32_t) * (size_t)cap);
      right = realloc(right, sizeof(int32_t) * (size_t)cap);
      merged = realloc(merged, sizeof(int32_t) * (size_t)cap);
      MCM_CHECK(left && right && merged, "bpe_train: out of memory for %d merges", cap);
    }
    left[n_merges] = a, right[n_merges] = b, merged[n_merges++] = m;
    merge_words(&w, a, b, m);
  }
  free(pairs);
  words_free(&w);

  char *vocab = vocab_json(&s, merged, n_merges);
  size_t merges_n = 0;
  char *merges = merges_txt(&s, left, right, n_merges, &merges_n);
  int rc = write_outputs(out_dir, vocab, strlen(vocab), merges, merges_n, err);
  free(vocab), free(merges), free(left), free(right), free(merged);
  for (int32_t i = 0; i < s.n; i++) free(s.str[i]);
  free(s.str), free(s.len);
  return rc ? -1 : n_merges;
}
