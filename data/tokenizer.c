/* RoBERTa byte-level BPE tokenizer (see tokenizer.h for the behaviour it reproduces).
 *
 * Load builds two read-only hash tables:
 *  - symbols: every string that can appear during BPE (the 256 byte-level characters, every
 *    vocab entry, both sides and the result of every merge), interned once; each knows its
 *    vocab id or -1;
 *  - merges: (left symbol, right symbol) -> (rank, merged symbol).
 * Encoding then works on symbol indices only: a piece's bytes become byte symbols and are
 * merged through a heap of adjacent pairs ordered by (rank, position), which takes
 * O(n log n) for a piece of n bytes (a caption without spaces cannot stall it). All the
 * occurrences of one rank are taken from the heap before any is merged, so the result is the
 * one of transformers' loop (lowest rank, every occurrence left to right), whatever the order
 * of the merges file.
 */
#include "data/tokenizer.h"

#include <jansson.h>
#include <limits.h>

#include "data/unicode_tables.h"

typedef struct {
  uint32_t off, len; /* into Tokenizer.strs */
  int32_t id;        /* vocab id, -1 when the vocabulary lacks the string */
} Sym;

typedef struct {
  uint64_t key; /* left << 32 | right; EMPTY_KEY when free */
  int32_t rank, result;
} MergeSlot;

#define EMPTY_KEY UINT64_MAX

struct Tokenizer {
  char *strs; /* symbol strings, back to back */
  size_t strs_len, strs_cap;
  Sym *syms;
  int32_t n_syms, cap_syms;
  int32_t *sym_slots; /* hash slots -> symbol index, -1 when free */
  uint32_t sym_mask;  /* slot count - 1 (a power of two) */
  MergeSlot *merge_slots;
  uint32_t merge_mask;
  int32_t n_merges;
  int32_t byte_sym[256]; /* byte -> symbol of its byte-level character */
  TokenizerSpecials sp;
  int32_t vocab_size;
};

/* ---------------------------------------------------------------- hashing */

static uint64_t hash_bytes(const char *s, size_t n) { /* FNV-1a */
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
  return h;
}

static uint64_t hash_u64(uint64_t x) { /* splitmix64 finaliser */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* ---------------------------------------------------------------- symbols */

static int32_t sym_find(const Tokenizer *t, const char *s, size_t n) {
  for (uint32_t i = (uint32_t)hash_bytes(s, n) & t->sym_mask;; i = (i + 1) & t->sym_mask) {
    int32_t k = t->sym_slots[i];
    if (k < 0) return -1;
    const Sym *y = &t->syms[k];
    if (y->len == n && memcmp(t->strs + y->off, s, n) == 0) return k;
  }
}

static void sym_rehash(Tokenizer *t, uint32_t slots) {
  free(t->sym_slots);
  t->sym_slots = MALLOC_CHECK(slots * sizeof(int32_t));
  memset(t->sym_slots, 0xff, slots * sizeof(int32_t));
  t->sym_mask = slots - 1;
  for (int32_t k = 0; k < t->n_syms; k++) {
    const Sym *y = &t->syms[k];
    uint32_t i = (uint32_t)hash_bytes(t->strs + y->off, y->len) & t->sym_mask;
    while (t->sym_slots[i] >= 0) i = (i + 1) & t->sym_mask;
    t->sym_slots[i] = k;
  }
}

/* The symbol for a string, added (with no vocab id) when new. */
static int32_t sym_intern(Tokenizer *t, const char *s, size_t n) {
  int32_t k = sym_find(t, s, n);
  if (k >= 0) return k;
  MCM_CHECK(n < UINT32_MAX && t->strs_len + n < UINT32_MAX && t->n_syms < INT32_MAX / 2,
            "tokenizer: vocabulary larger than 4 GiB");
  if (t->strs_len + n > t->strs_cap) {
    t->strs_cap = (t->strs_len + n) * 2;
    t->strs = REALLOC_CHECK(t->strs, t->strs_cap);
  }
  memcpy(t->strs + t->strs_len, s, n);
  if (t->n_syms == t->cap_syms) {
    t->cap_syms = t->cap_syms ? 2 * t->cap_syms : 1024;
    t->syms = REALLOC_CHECK(t->syms, (size_t)t->cap_syms * sizeof(Sym));
  }
  k = t->n_syms++;
  t->syms[k] = (Sym){.off = (uint32_t)t->strs_len, .len = (uint32_t)n, .id = -1};
  t->strs_len += n;
  if ((uint32_t)t->n_syms * 2 > t->sym_mask + 1) {
    sym_rehash(t, (t->sym_mask + 1) * 2);
  } else {
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->sym_mask;
    while (t->sym_slots[i] >= 0) i = (i + 1) & t->sym_mask;
    t->sym_slots[i] = k;
  }
  return k;
}

/* ---------------------------------------------------------------- merges */

static MergeSlot *merge_slot(const Tokenizer *t, int32_t left, int32_t right) {
  uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
  for (uint32_t i = (uint32_t)hash_u64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
    MergeSlot *m = &t->merge_slots[i];
    if (m->key == key || m->key == EMPTY_KEY) return m;
  }
}

static const MergeSlot *merge_find(const Tokenizer *t, int32_t left, int32_t right) {
  const MergeSlot *m = merge_slot(t, left, right);
  return m->key == EMPTY_KEY ? NULL : m;
}

static void merges_alloc(Tokenizer *t, size_t expected) {
  uint32_t slots = 1024;
  while (slots < 2 * expected) {
    MCM_CHECK(slots < (1u << 30), "tokenizer: too many merges (%zu)", expected);
    slots *= 2;
  }
  t->merge_slots = MALLOC_CHECK(slots * sizeof(MergeSlot));
  for (uint32_t i = 0; i < slots; i++) t->merge_slots[i].key = EMPTY_KEY;
  t->merge_mask = slots - 1;
}

/* ---------------------------------------------------------------- UTF-8 */

/* Decodes the code point at s[*i] (strict: no overlong forms, surrogates or values above
 * U+10FFFF) and advances *i. Returns -1 on an invalid sequence, leaving *i at its start. */
static int utf8_next(const unsigned char *s, size_t n, size_t *i, uint32_t *cp) {
  size_t p = *i;
  unsigned c = s[p];
  if (c < 0x80) {
    *cp = c, *i = p + 1;
    return 0;
  }
  int len;
  unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return -1;
  if (n - p < (size_t)len || s[p + 1] < lo || s[p + 1] > hi) return -1;
  uint32_t v = c & (0x7Fu >> len);
  for (int k = 1; k < len; k++) {
    if ((s[p + k] & 0xC0) != 0x80) return -1;
    v = v << 6 | (s[p + k] & 0x3F);
  }
  *cp = v, *i = p + (size_t)len;
  return 0;
}

static size_t utf8_put(uint32_t cp, char *out) { /* cp < 0x800 is all the byte map needs */
  if (cp < 0x80) return out[0] = (char)cp, 1;
  out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

/* GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68
 * bytes (controls, space, DEL, NBSP, soft hyphen, ...) for U+0100, U+0101, ... in byte order. */
static uint32_t byte_char(int b) {
  if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
  uint32_t k = 0;
  for (int c = 0; c < b; c++) k += !((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF));
  return 0x100 + k;
}

/* ---------------------------------------------------------------- loading */

static int load_vocab(Tokenizer *t, const char *path, McmErr *err) {
  json_error_t je;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    if (je.line < 1) return mcm_err(err, "tokenizer vocabulary %s: %s", path, je.text);
    return mcm_err(err, "tokenizer vocabulary %s:%d:%d: %s", path, je.line, je.column, je.text);
  }
  int rc = 0;
  if (!json_is_object(root)) {
    rc = mcm_err(err, "tokenizer vocabulary %s: expected a JSON object of token -> id, found %s", path,
                 json_is_array(root) ? "an array" : "another kind of value");
    goto done;
  }
  const char *key;
  size_t key_len;
  json_t *v;
  json_object_keylen_foreach(root, key, key_len, v) {
    json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
    if (id < 0 || id >= INT32_MAX) {
      rc = mcm_err(err, "tokenizer vocabulary %s: token \"%s\" has %s; expected an integer id in 0..%d", path,
                   key, json_is_integer(v) ? "an id out of range" : "a value that is not an integer",
                   INT32_MAX - 1);
      goto done;
    }
    int32_t k = sym_intern(t, key, key_len); /* may move t->syms */
    t->syms[k].id = (int32_t)id;
    if ((int32_t)id >= t->vocab_size) t->vocab_size = (int32_t)id + 1;
  }
  static const char *const names[5] = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"};
  int32_t *ids[5] = {&t->sp.bos, &t->sp.pad, &t->sp.eos, &t->sp.unk, &t->sp.mask};
  for (int i = 0; i < 5; i++) {
    int32_t k = sym_find(t, names[i], strlen(names[i]));
    if (k < 0 || t->syms[k].id < 0) {
      rc = mcm_err(err, "tokenizer vocabulary %s: no \"%s\" token (a RoBERTa vocabulary has <s>, <pad>, </s>, "
                        "<unk> and <mask>)", path, names[i]);
      goto done;
    }
    *ids[i] = t->syms[k].id;
  }
done:
  json_decref(root);
  return rc;
}

/* Reads a whole file into a NUL-terminated buffer (*n bytes before the NUL). */
static char *read_file(const char *path, size_t *n, McmErr *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    mcm_err(err, "tokenizer merges %s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  size_t len = 0, cap = 1 << 16;
  char *buf = MALLOC_CHECK(cap);
  for (;;) {
    if (cap - len < 2) buf = REALLOC_CHECK(buf, cap *= 2);
    size_t got = fread(buf + len, 1, cap - len - 1, f);
    len += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  int saved = errno;
  fclose(f);
  if (bad) {
    mcm_err(err, "tokenizer merges %s: read failed: %s", path, strerror(saved));
    free(buf);
    return NULL;
  }
  buf[len] = '\0';
  *n = len;
  return buf;
}

/* One line (without its '\n' and any '\r') of merges.txt. Returns 1 when it holds a merge
 * (left/right set), 0 for a line to skip, -1 on error. */
static int parse_merge_line(const char *path, int line_no, char *s, size_t n, char **left, size_t *left_n,
                            char **right, size_t *right_n, McmErr *err) {
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    if (s[i] == '\0') return mcm_err(err, "tokenizer merges %s:%d: NUL byte in the line", path, line_no);
    if (utf8_next((const unsigned char *)s, n, &i, &cp) < 0)
      return mcm_err(err, "tokenizer merges %s:%d: not valid UTF-8 (byte 0x%02X)", path, line_no,
                     (unsigned char)s[i]);
  }
  if (line_no == 1 && n >= 8 && memcmp(s, "#version", 8) == 0) return 0; /* the header */
  char *field[3];
  size_t len[3];
  int nf = 0;
  for (size_t i = 0; i < n;) {
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    if (i == n) break;
    size_t start = i;
    while (i < n && s[i] != ' ' && s[i] != '\t') i++;
    if (nf == 3) break;
    field[nf] = s + start, len[nf] = i - start, nf++;
  }
  if (nf == 0) return 0;
  if (nf != 2)
    return mcm_err(err, "tokenizer merges %s:%d: expected two tokens separated by a space, found %s", path,
                   line_no, nf == 1 ? "one" : "more than two");
  *left = field[0], *left_n = len[0], *right = field[1], *right_n = len[1];
  return 1;
}

static int load_merges(Tokenizer *t, const char *path, McmErr *err) {
  size_t n;
  char *text = read_file(path, &n, err);
  if (!text) return -1;
  size_t lines = 1;
  for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
  merges_alloc(t, lines);
  int rc = 0, line_no = 0;
  char *joined = NULL;
  size_t joined_cap = 0;
  for (size_t pos = 0; pos < n;) {
    line_no++;
    char *line = text + pos;
    char *nl = memchr(line, '\n', n - pos);
    size_t len = nl ? (size_t)(nl - line) : n - pos;
    pos += len + (nl != NULL);
    if (len > 0 && line[len - 1] == '\r') len--;
    char *a = NULL, *b = NULL;
    size_t an = 0, bn = 0;
    int got = parse_merge_line(path, line_no, line, len, &a, &an, &b, &bn, err);
    if (got < 0) {
      rc = -1;
      break;
    }
    if (got == 0) continue;
    if (an + bn > joined_cap) joined = REALLOC_CHECK(joined, joined_cap = 2 * (an + bn));
    memcpy(joined, a, an);
    memcpy(joined + an, b, bn);
    int32_t left = sym_intern(t, a, an), right = sym_intern(t, b, bn);
    int32_t result = sym_intern(t, joined, an + bn);
    MergeSlot *m = merge_slot(t, left, right);
    if (m->key != EMPTY_KEY) {
      rc = mcm_err(err, "tokenizer merges %s:%d: the merge \"%.*s %.*s\" appears a second time", path, line_no,
                   (int)an, a, (int)bn, b);
      break;
    }
    *m = (MergeSlot){.key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right, .rank = t->n_merges++,
                     .result = result};
  }
  free(joined);
  free(text);
  return rc;
}

Tokenizer *tokenizer_load(const char *vocab_json, const char *merges_txt, McmErr *err) {
  Tokenizer *t = CALLOC_CHECK(1, sizeof(Tokenizer));
  sym_rehash(t, 1024);
  for (int b = 0; b < 256; b++) {
    char s[2];
    t->byte_sym[b] = sym_intern(t, s, utf8_put(byte_char(b), s));
  }
  if (load_vocab(t, vocab_json, err) < 0 || load_merges(t, merges_txt, err) < 0) {
    tokenizer_free(t);
    return NULL;
  }
  return t;
}

void tokenizer_free(Tokenizer *t) {
  if (!t) return;
  free(t->strs);
  free(t->syms);
  free(t->sym_slots);
  free(t->merge_slots);
  free(t);
}

int tokenizer_token_to_id(const Tokenizer *t, const char *token) {
  int32_t k = sym_find(t, token, strlen(token));
  return k < 0 ? -1 : t->syms[k].id;
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->vocab_size; }

TokenizerSpecials tokenizer_specials(const Tokenizer *t) { return t->sp; }

/* ---------------------------------------------------------------- BPE of one piece */

typedef struct {
  int32_t rank, left; /* the pair (node left, its next node) */
} Pair;

/* Per-call scratch, grown to the longest piece seen. */
typedef struct {
  int32_t *sym, *next, *prev; /* (n) linked list of nodes; next = -2 marks a merged-away node */
  Pair *heap, *batch;         /* (3n) pending pairs, (3n) those of one rank (n - 1 pairs at
                                 first, at most 2 more per merge, stale ones included) */
  int32_t cap;
  int32_t *out; /* ids of the text tokens so far, at most out_cap */
  int32_t n_out, out_cap;
} Work;

static bool pair_less(Pair a, Pair b) { return a.rank < b.rank || (a.rank == b.rank && a.left < b.left); }

static void heap_push(Pair *h, int32_t *n, Pair p) {
  int32_t i = (*n)++;
  while (i > 0 && pair_less(p, h[(i - 1) / 2])) h[i] = h[(i - 1) / 2], i = (i - 1) / 2;
  h[i] = p;
}

static Pair heap_pop(Pair *h, int32_t *n) {
  Pair top = h[0], last = h[--*n];
  int32_t i = 0;
  for (;;) {
    int32_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && pair_less(h[c + 1], h[c])) c++;
    if (!pair_less(h[c], last)) break;
    h[i] = h[c], i = c;
  }
  if (*n > 0) h[i] = last;
  return top;
}

/* The merge for the pair starting at node i, or NULL. */
static const MergeSlot *pair_merge(const Tokenizer *t, const Work *w, int32_t i) {
  if (i < 0 || w->next[i] < 0) return NULL;
  return merge_find(t, w->sym[i], w->sym[w->next[i]]);
}

static void push_pair(const Tokenizer *t, Work *w, int32_t *n_heap, int32_t i) {
  const MergeSlot *m = pair_merge(t, w, i);
  if (m) heap_push(w->heap, n_heap, (Pair){m->rank, i});
}

static void work_grow(Work *w, int32_t n) {
  if (n <= w->cap) return;
  w->cap = n > 2 * w->cap ? n : 2 * w->cap;
  size_t c = (size_t)w->cap;
  w->sym = REALLOC_CHECK(w->sym, c * sizeof(int32_t));
  w->next = REALLOC_CHECK(w->next, c * sizeof(int32_t));
  w->prev = REALLOC_CHECK(w->prev, c * sizeof(int32_t));
  w->heap = REALLOC_CHECK(w->heap, 3 * c * sizeof(Pair));
  w->batch = REALLOC_CHECK(w->batch, 3 * c * sizeof(Pair));
}

static void emit(Work *w, int32_t id) {
  if (w->n_out < w->out_cap) w->out[w->n_out++] = id;
}

/* Byte-level BPE of the bytes s[0..n), appending the ids to w->out. */
static void bpe_piece(const Tokenizer *t, Work *w, const unsigned char *s, int32_t n) {
  work_grow(w, n);
  for (int32_t i = 0; i < n; i++) w->sym[i] = t->byte_sym[s[i]], w->next[i] = i + 1, w->prev[i] = i - 1;
  w->next[n - 1] = -1;
  int32_t n_heap = 0;
  for (int32_t i = 0; i + 1 < n; i++) push_pair(t, w, &n_heap, i);
  while (n_heap > 0) {
    /* Every pending pair of the lowest rank, in position order: merging one can create only
     * pairs that contain the merged symbol, never another pair of this rank. */
    int32_t rank = w->heap[0].rank, n_batch = 0;
    while (n_heap > 0 && w->heap[0].rank == rank) w->batch[n_batch++] = heap_pop(w->heap, &n_heap);
    for (int32_t b = 0; b < n_batch; b++) {
      int32_t i = w->batch[b].left;
      const MergeSlot *m = pair_merge(t, w, i);
      if (!m || m->rank != rank) continue; /* stale: a merge in this batch changed it */
      int32_t j = w->next[i];
      w->sym[i] = m->result;
      w->next[i] = w->next[j];
      if (w->next[j] >= 0) w->prev[w->next[j]] = i;
      w->next[j] = -2;
      push_pair(t, w, &n_heap, w->prev[i]);
      push_pair(t, w, &n_heap, i);
    }
  }
  for (int32_t i = 0; i >= 0; i = w->next[i]) {
    int32_t id = t->syms[w->sym[i]].id;
    emit(w, id >= 0 ? id : t->sp.unk);
  }
}

/* ---------------------------------------------------------------- pre-tokenisation */

static bool is_letter(uint32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  return ucd_is_letter(c);
}
static bool is_number(uint32_t c) { return c < 0x80 ? c >= '0' && c <= '9' : ucd_is_number(c); }
static bool is_space(uint32_t c) { return c < 0x80 ? c == ' ' || (c >= 0x09 && c <= 0x0D) : ucd_is_regex_space(c); }
static bool is_other(uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }

/* The end of the pattern's match at cp[i] (i < n): the first alternative that matches, as
 * Python's `regex` chooses it. The pattern cannot fail on a non-empty rest. */
static int64_t match_piece(const uint32_t *cp, int64_t n, int64_t i) {
  if (cp[i] == '\'' && i + 1 < n) { /* 's 't 're 've 'm 'll 'd */
    uint32_t a = cp[i + 1], b = i + 2 < n ? cp[i + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  /* " ?X+" for X = letters, numbers, neither-nor-space: the optional space is a plain U+0020 */
  int64_t s = cp[i] == ' ' && i + 1 < n ? i + 1 : i;
  bool (*classes[3])(uint32_t) = {is_letter, is_number, is_other};
  for (int k = 0; k < 3; k++) {
    if (!classes[k](cp[s])) continue;
    int64_t e = s + 1;
    while (e < n && classes[k](cp[e])) e++;
    return e;
  }
  /* cp[i] is whitespace: \s+(?!\S) takes the run but leaves its last character when a
   * non-space follows (unless the run is that one character: then \s+ takes it). */
  int64_t e = i + 1;
  while (e < n && is_space(cp[e])) e++;
  return e < n && e - 1 > i ? e - 1 : e;
}

enum { SP_BOS, SP_EOS, SP_UNK, SP_PAD, SP_MASK, N_SPECIAL };

/* Which special token is spelled at cp[i] (SP_*), or -1; *len receives its length. None is a
 * prefix of another, so the first match is transformers' (leftmost-longest) match. */
static int special_at(const uint32_t *cp, int64_t n, int64_t i, int64_t *len) {
  if (cp[i] != '<') return -1;
  static const char *const names[N_SPECIAL] = {"<s>", "</s>", "<unk>", "<pad>", "<mask>"};
  for (int k = 0; k < N_SPECIAL; k++) {
    int64_t m = (int64_t)strlen(names[k]), j = 0;
    while (j < m && i + j < n && cp[i + j] == (unsigned char)names[k][j]) j++;
    if (j == m) return *len = m, k;
  }
  return -1;
}

/* Walks text as tokenizer_encode reads it (steps 1-2 in tokenizer.h): fn gets each piece of
 * plain text (special = -1) and each special token written in the text (special = SP_*,
 * s = NULL), in order, and returns true to stop the walk. -1 with err for invalid UTF-8. */
typedef bool (*WalkFn)(void *ctx, const unsigned char *s, size_t n, int special);

static int walk_text(const char *text, WalkFn fn, void *ctx, McmErr *err) {
  const unsigned char *s = (const unsigned char *)text;
  size_t nb = strlen(text);
  uint32_t *cp = MALLOC_CHECK((nb + 1) * sizeof(uint32_t));
  size_t *off = MALLOC_CHECK((nb + 1) * sizeof(size_t));
  int64_t n = 0;
  for (size_t i = 0; i < nb; n++) {
    off[n] = i;
    if (utf8_next(s, nb, &i, &cp[n]) < 0) {
      free(cp), free(off);
      return mcm_err(err, "tokenizer: the text is not valid UTF-8 (byte 0x%02X at offset %zu)", s[i], i);
    }
  }
  off[n] = nb;

  bool stop = false;
  int64_t start = 0; /* of the current stretch of plain text */
  for (int64_t i = 0; !stop; i++) {
    int64_t len = 0;
    int sp = -1;
    if (i < n && (sp = special_at(cp, n, i, &len)) < 0) continue;
    int64_t end = i;
    if (sp == SP_MASK) /* <mask> is lstrip: it eats the whitespace before it */
      while (end > start && ucd_is_py_space(cp[end - 1])) end--;
    for (int64_t j = start; j < end && !stop;) {
      int64_t e = match_piece(cp + start, end - start, j - start) + start;
      stop = fn(ctx, s + off[j], off[e] - off[j], -1);
      j = e;
    }
    if (sp < 0 || stop) break; /* i == n: the text is done */
    stop = fn(ctx, NULL, 0, sp);
    start = i + len;
    i = start - 1;
  }
  free(cp), free(off);
  return 0;
}

typedef struct {
  const Tokenizer *t;
  Work *w;
} EncodeCtx;

static bool encode_piece(void *ctx, const unsigned char *s, size_t n, int special) {
  EncodeCtx *c = ctx;
  Work *w = c->w;
  if (w->n_out >= w->out_cap) return true;
  if (special >= 0) {
    const TokenizerSpecials *sp = &c->t->sp;
    const int32_t special_id[N_SPECIAL] = {sp->bos, sp->eos, sp->unk, sp->pad, sp->mask};
    emit(w, special_id[special]);
  } else {
    MCM_CHECK(n < INT32_MAX, "tokenizer: a single word of %zu bytes", n);
    bpe_piece(c->t, w, s, (int32_t)n);
  }
  return w->n_out >= w->out_cap;
}

int tokenizer_encode(const Tokenizer *t, const char *text, int max_len, int32_t *ids, int32_t *mask,
                     McmErr *err) {
  if (!text) return mcm_err(err, "tokenizer: no text (NULL)");
  if (max_len < 2)
    return mcm_err(err, "tokenizer: max_len %d cannot hold <s> and </s>; it must be at least 2", max_len);
  Work w = {.out = ids + 1, .out_cap = max_len - 2};
  int rc = walk_text(text, encode_piece, &(EncodeCtx){t, &w}, err);
  free(w.sym), free(w.next), free(w.prev), free(w.heap), free(w.batch);
  if (rc) return -1;

  int k = w.n_out;
  ids[0] = t->sp.bos;
  ids[k + 1] = t->sp.eos;
  for (int i = k + 2; i < max_len; i++) ids[i] = t->sp.pad;
  if (mask)
    for (int i = 0; i < max_len; i++) mask[i] = i < k + 2;
  return k + 2;
}

typedef struct {
  void (*piece)(void *ctx, const char *s, size_t n);
  void *ctx;
} PretokCtx;

static bool pretok_piece(void *ctx, const unsigned char *s, size_t n, int special) {
  PretokCtx *c = ctx;
  if (special < 0) c->piece(c->ctx, (const char *)s, n);
  return false;
}

int tokenizer_pretokenize(const char *text, void (*piece)(void *ctx, const char *s, size_t n), void *ctx,
                          McmErr *err) {
  if (!text) return mcm_err(err, "tokenizer: no text (NULL)");
  return walk_text(text, pretok_piece, &(PretokCtx){piece, ctx}, err);
}

uint32_t tokenizer_byte_char(int b) { return byte_char(b & 0xFF); }
