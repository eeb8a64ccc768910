/* Manifest readers (see manifest.h): AudioLDM JSON, JSON lines and CSV detected by content,
 * and MagnaTagATune's tag annotations turned into captions.
 *
 * Non-UTF-8 text in a JSON manifest: jansson refuses the whole document on the first bad
 * byte, but a bad caption is a problem of one entry, not of the manifest. So before parsing,
 * every byte that is not part of well-formed UTF-8 is replaced by U+FDD0, a noncharacter
 * (never part of real text); after parsing, a path or caption holding it was not UTF-8 and
 * its entry is skipped. Line numbers do not move (no newline is added or removed), so a bad
 * byte outside any string still gives a parse error at the right line.
 */
#include "data/manifest.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <sys/stat.h>

#include <jansson.h>

#define BAD_UTF8_MARK "\xEF\xB7\x90" /* U+FDD0 */

/* ---------------------------------------------------------------- small helpers */

static char *dup_n(const char *s, size_t n) {
  char *d = MALLOC_CHECK(n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}
static char *dup_s(const char *s) { return dup_n(s, strlen(s)); }

static char *dup_printf(const char *fmt, ...) MCM_PRINTF(1, 2);
static char *dup_printf(const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = MALLOC_CHECK((size_t)n + 1);
  vsnprintf(s, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_seq(const char *s, size_t n) {
  size_t len = (unsigned char)s[0] < 0x80 ? 1 : (unsigned char)s[0] < 0xE0 ? 2 : (unsigned char)s[0] < 0xF0 ? 3 : 4;
  if (len > n) len = n;
  return utf8_valid(s, len) ? len : 0;
}

static void push_entry(Manifest *m, char *path, char *caption, char *where) {
  m->entries = REALLOC_CHECK(m->entries, (size_t)(m->n + 1) * sizeof *m->entries);
  m->entries[m->n++] = (ManifestEntry){path, caption, where};
}

/* Takes ownership of where; kind is a constant. */
static void push_skip(Manifest *m, char *where, const char *kind, char *detail) {
  m->skips = REALLOC_CHECK(m->skips, (size_t)(m->n_skips + 1) * sizeof *m->skips);
  m->skips[m->n_skips++] = (ManifestSkip){where, dup_s(kind), detail};
}

void manifest_free(Manifest *m) {
  for (int i = 0; i < m->n; i++) free(m->entries[i].path), free(m->entries[i].caption), free(m->entries[i].where);
  for (int i = 0; i < m->n_skips; i++) free(m->skips[i].where), free(m->skips[i].kind), free(m->skips[i].detail);
  free(m->entries);
  free(m->skips);
  memset(m, 0, sizeof *m);
}

/* The whole file, NUL-terminated (the NUL is not counted in *len). */
static int slurp(const char *path, char **buf, size_t *len, McmErr *err) {
  struct stat st;
  if (stat(path, &st) != 0) return mcm_err(err, "manifest '%s': cannot open: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) return mcm_err(err, "manifest '%s': is a directory, not a manifest file", path);
  FILE *f = fopen(path, "rb");
  if (!f) return mcm_err(err, "manifest '%s': cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *b = MALLOC_CHECK(cap);
  for (;;) {
    if (n + 1 >= cap) b = REALLOC_CHECK(b, cap *= 2);
    size_t got = fread(b + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(b);
    return mcm_err(err, "manifest '%s': read error", path);
  }
  b[n] = 0;
  *buf = b;
  *len = n;
  return 0;
}

/* The directory part of path ("" when there is none). */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return dup_s("");
  return dup_n(path, (size_t)(slash - path) + 1); /* keeps the '/' */
}

static char *resolve(const char *dir, const char *p) {
  if (p[0] == '/' || !dir[0]) return dup_s(p);
  return dup_printf("%s%s", dir, p);
}

/* Copies s[0..n) without surrounding ASCII whitespace. */
static char *dup_trimmed(const char *s, size_t n) {
  while (n && isspace((unsigned char)*s)) s++, n--;
  while (n && isspace((unsigned char)s[n - 1])) n--;
  return dup_n(s, n);
}

/* Checks one (path, caption) pair of text and adds it as an entry or a skip. Takes nothing
 * over: copies what it keeps. has_mark says whether the text may hold BAD_UTF8_MARK. */
static void add_pair(Manifest *m, const char *dir, const char *where, const char *path, size_t path_n,
                     const char *caption, size_t caption_n, bool has_mark) {
  if (!path || path_n == 0) {
    push_skip(m, dup_s(where), "missing path", dup_printf("%s: the entry names no audio file", where));
    return;
  }
  if (memchr(path, 0, path_n) || (has_mark && strstr(path, BAD_UTF8_MARK)) || !utf8_valid(path, path_n)) {
    push_skip(m, dup_s(where), "bad path", dup_printf("%s: the audio path is not valid UTF-8 text", where));
    return;
  }
  char *p = dup_n(path, path_n);
  char *full = resolve(dir, p);
  free(p);
  if (!caption) {
    push_skip(m, full, "missing caption", dup_printf("%s: the entry has no caption", where));
    return;
  }
  if (memchr(caption, 0, caption_n)) {
    push_skip(m, full, "caption has NUL", dup_printf("%s: the caption contains a NUL character", where));
    return;
  }
  if ((has_mark && strstr(caption, BAD_UTF8_MARK)) || !utf8_valid(caption, caption_n)) {
    push_skip(m, full, "caption not UTF-8", dup_printf("%s: the caption is not valid UTF-8", where));
    return;
  }
  char *c = dup_trimmed(caption, caption_n);
  if (!c[0]) {
    free(c);
    push_skip(m, full, "empty caption", dup_printf("%s: the caption is empty", where));
    return;
  }
  push_entry(m, full, c, dup_s(where));
}

/* ---------------------------------------------------------------- JSON */

/* A copy of text with every byte outside well-formed UTF-8 replaced by BAD_UTF8_MARK;
 * NULL when the text is already well-formed. */
static char *mark_bad_utf8(const char *text, size_t n, size_t *out_n) {
  if (utf8_valid(text, n)) return NULL;
  char *o = MALLOC_CHECK(3 * n + 1);
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    size_t len = utf8_seq(text + i, n - i);
    if (len) {
      memcpy(o + k, text + i, len);
      k += len, i += len;
    } else {
      memcpy(o + k, BAD_UTF8_MARK, 3);
      k += 3, i++;
    }
  }
  o[k] = 0;
  *out_n = k;
  return o;
}

/* A JSON value as text for add_pair: a string, or the first element of an array of strings.
 * Sets *why for other types. */
static const char *json_text(json_t *v, size_t *n, const char **why) {
  *why = NULL;
  if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0);
  if (!v || json_is_null(v)) return NULL;
  if (!json_is_string(v)) {
    *why = "is not a string";
    return NULL;
  }
  *n = json_string_length(v);
  return json_string_value(v);
}

static json_t *first_key(json_t *obj, const char *const *keys) {
  for (int i = 0; keys[i]; i++) {
    json_t *v = json_object_get(obj, keys[i]);
    if (v) return v;
  }
  return NULL;
}

/* The caption of an AudioLDM entry: "caption", else the first key (in file order; jansson
 * keeps insertion order) whose name contains "caption". */
static json_t *audioldm_caption(json_t *obj) {
  json_t *v = json_object_get(obj, "caption");
  if (v) return v;
  const char *key;
  json_t *val;
  json_object_foreach(obj, key, val) if (strstr(key, "caption")) return val;
  return NULL;
}

static void add_json_object(Manifest *m, const char *dir, const char *where, json_t *obj, bool audioldm,
                            bool has_mark) {
  static const char *const path_keys[] = {"wav", "path", "location", NULL};
  static const char *const caption_keys[] = {"caption", "captions", "text", NULL};
  if (!json_is_object(obj)) {
    push_skip(m, dup_s(where), "bad entry", dup_printf("%s: the entry is not a JSON object", where));
    return;
  }
  const char *why;
  size_t pn = 0, cn = 0;
  const char *p = json_text(first_key(obj, path_keys), &pn, &why);
  if (why) {
    push_skip(m, dup_s(where), "missing path", dup_printf("%s: the audio path %s", where, why));
    return;
  }
  json_t *cv = audioldm ? audioldm_caption(obj) : first_key(obj, caption_keys);
  const char *c = json_text(cv, &cn, &why);
  if (why) {
    push_skip(m, dup_s(where), "missing caption", dup_printf("%s: the caption %s", where, why));
    return;
  }
  add_pair(m, dir, where, p, pn, c, cn, has_mark);
}

static int read_json_lines(Manifest *m, const char *path, const char *dir, const char *text, size_t n,
                           bool has_mark, McmErr *err) {
  int line = 0;
  for (size_t i = 0; i < n;) {
    line++;
    const char *eol = memchr(text + i, '\n', n - i);
    size_t len = eol ? (size_t)(eol - (text + i)) : n - i;
    const char *s = text + i;
    i += len + (eol != NULL);
    size_t k = 0;
    while (k < len && isspace((unsigned char)s[k])) k++;
    if (k == len) continue; /* blank line */
    json_error_t je;
    json_t *obj = json_loadb(s, len, JSON_ALLOW_NUL, &je);
    if (!obj) return mcm_err(err, "manifest '%s': line %d: not valid JSON: %s (JSON lines: one object per line)", path, line, je.text);
    char where[64 + 1024];
    mcm_snprintf(where, sizeof where, "%s:%d", path, line);
    add_json_object(m, dir, where, obj, false, has_mark);
    json_decref(obj);
  }
  return 0;
}

static int read_json(Manifest *m, const char *path, const char *dir, const char *raw, size_t raw_n, McmErr *err) {
  size_t n = raw_n;
  char *marked = mark_bad_utf8(raw, raw_n, &n);
  const char *text = marked ? marked : raw;
  bool has_mark = marked != NULL;
  int rc = 0;
  json_error_t je;
  json_t *root = json_loadb(text, n, JSON_ALLOW_NUL, &je);
  if (!root && json_error_code(&je) == json_error_end_of_input_expected) {
    /* One value, then more: JSON lines. */
    snprintf(m->format, sizeof m->format, "jsonl");
    rc = read_json_lines(m, path, dir, text, n, has_mark, err);
  } else if (!root) {
    rc = mcm_err(err, "manifest '%s': line %d, column %d: not valid JSON: %s", path, je.line, je.column, je.text);
  } else {
    json_t *list = json_is_array(root) ? root : json_object_get(root, "data");
    if (json_is_object(root) && !list && first_key(root, (const char *const[]){"wav", "path", "location", NULL})) {
      /* A single JSON line. */
      snprintf(m->format, sizeof m->format, "jsonl");
      char where[64 + 1024];
      mcm_snprintf(where, sizeof where, "%s:1", path);
      add_json_object(m, dir, where, root, false, has_mark);
    } else if (!json_is_array(list)) {
      rc = mcm_err(err,
                   "manifest '%s': a JSON object without a \"data\" list (expected AudioLDM's "
                   "{\"data\": [{\"wav\": ..., \"caption\": ...}]} or JSON lines)",
                   path);
    } else {
      snprintf(m->format, sizeof m->format, "json");
      size_t i;
      json_t *obj;
      json_array_foreach(list, i, obj) {
        char where[64 + 1024];
        mcm_snprintf(where, sizeof where, "%s:data[%zu]", path, i);
        add_json_object(m, dir, where, obj, true, has_mark);
      }
    }
    json_decref(root);
  }
  free(marked);
  return rc;
}

/* ---------------------------------------------------------------- CSV (RFC 4180) */

typedef struct CsvField {
  char *s;
  size_t n;
} CsvField;

/* One record starting at text[*pos]; fields are malloc'd. Returns the number of fields,
 * 0 at the end of the text, -1 on a quoting error (with err). *line counts newlines. */
static int csv_record(const char *path, const char *text, size_t n, size_t *pos, int *line, CsvField **fields,
                      int *cap, McmErr *err) {
  size_t i = *pos;
  if (i >= n) return 0;
  int nf = 0, start_line = *line;
  for (;;) {
    if (nf == *cap) *fields = REALLOC_CHECK(*fields, (size_t)(*cap = *cap ? 2 * *cap : 8) * sizeof **fields);
    size_t fcap = 64, fn = 0;
    char *f = MALLOC_CHECK(fcap);
    if (i < n && text[i] == '"') {
      int qline = *line;
      i++;
      for (;;) {
        if (i >= n) {
          free(f);
          for (int k = 0; k < nf; k++) free((*fields)[k].s);
          return mcm_err(err, "manifest '%s': line %d: a quoted field is never closed (CSV)", path, qline);
        }
        char c = text[i++];
        if (c == '"') {
          if (i < n && text[i] == '"') i++;
          else break;
        }
        if (c == '\n') (*line)++;
        if (fn + 2 > fcap) f = REALLOC_CHECK(f, fcap *= 2);
        f[fn++] = c;
      }
      bool crlf = i + 1 < n && text[i] == '\r' && text[i + 1] == '\n';
      if (i < n && text[i] != ',' && text[i] != '\n' && !crlf) {
        free(f);
        for (int k = 0; k < nf; k++) free((*fields)[k].s);
        return mcm_err(err, "manifest '%s': line %d: text after the closing quote of a field (CSV: write \"\" for a quote)",
                       path, *line);
      }
    } else {
      while (i < n && text[i] != ',' && text[i] != '\n') {
        if (text[i] == '"') {
          free(f);
          for (int k = 0; k < nf; k++) free((*fields)[k].s);
          return mcm_err(err, "manifest '%s': line %d: a quote inside an unquoted field (CSV: quote the whole field and write \"\")",
                         path, *line);
        }
        if (fn + 2 > fcap) f = REALLOC_CHECK(f, fcap *= 2);
        f[fn++] = text[i++];
      }
      if (fn && f[fn - 1] == '\r' && (i >= n || text[i] == '\n')) fn--; /* CRLF */
    }
    if (i < n && text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') i++;
    f[fn] = 0;
    (*fields)[nf++] = (CsvField){f, fn};
    if (i >= n) break;
    if (text[i++] == '\n') {
      (*line)++;
      break;
    }
  }
  (void)start_line;
  *pos = i;
  return nf;
}

static int column_of(CsvField *h, int nh, const char *const *names) {
  for (int k = 0; names[k]; k++)
    for (int j = 0; j < nh; j++) {
      char *t = dup_trimmed(h[j].s, h[j].n);
      for (char *c = t; *c; c++) *c = (char)tolower((unsigned char)*c);
      bool eq = !strcmp(t, names[k]);
      free(t);
      if (eq) return j;
    }
  return -1;
}

static void free_fields(CsvField *f, int n) {
  for (int k = 0; k < n; k++) free(f[k].s);
}

static int read_csv(Manifest *m, const char *path, const char *dir, const char *text, size_t n, McmErr *err) {
  static const char *const path_names[] = {"path", "wav", "file", "filename", "location", "audio", NULL};
  static const char *const caption_names[] = {"caption", "captions", "text", "description", NULL};
  snprintf(m->format, sizeof m->format, "csv");
  size_t pos = 0;
  int line = 1, cap = 0, rc = 0;
  CsvField *fields = NULL;
  if (n >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) pos = 3; /* byte-order mark */
  int nh = csv_record(path, text, n, &pos, &line, &fields, &cap, err);
  if (nh < 0) {
    free(fields);
    return -1;
  }
  int pc = column_of(fields, nh, path_names), cc = column_of(fields, nh, caption_names);
  bool header_text = true;
  for (int j = 0; j < nh; j++) header_text &= utf8_valid(fields[j].s, fields[j].n) && !memchr(fields[j].s, 0, fields[j].n);
  free_fields(fields, nh);
  if (!header_text || pc < 0 || cc < 0) {
    free(fields);
    return mcm_err(err,
                   "manifest '%s': not AudioLDM JSON, JSON lines or CSV: a CSV manifest needs a header line "
                   "naming a path column (path, wav, file, filename, location, audio) and a caption column "
                   "(caption, captions, text, description), e.g. \"path,caption\"",
                   path);
  }
  for (;;) {
    int rec_line = line;
    int nf = csv_record(path, text, n, &pos, &line, &fields, &cap, err);
    if (nf < 0) {
      rc = -1;
      break;
    }
    if (nf == 0) break;
    char where[64 + 1024];
    mcm_snprintf(where, sizeof where, "%s:%d", path, rec_line);
    if (nf == 1 && fields[0].n == 0) {
      /* blank line */
    } else if (nf > nh) {
      push_skip(m, dup_s(where), "bad row",
                dup_printf("%s: %d fields, the header has %d (quote captions that contain commas)", where, nf, nh));
    } else {
      add_pair(m, dir, where, pc < nf ? fields[pc].s : NULL, pc < nf ? fields[pc].n : 0, cc < nf ? fields[cc].s : NULL,
               cc < nf ? fields[cc].n : 0, false);
    }
    free_fields(fields, nf);
  }
  free(fields);
  return rc;
}

/* ---------------------------------------------------------------- manifest_read */

int manifest_read(const char *path, Manifest *m, McmErr *err) {
  char *text;
  size_t n;
  if (slurp(path, &text, &n, err)) return -1;
  size_t k = 0;
  if (n >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) k = 3;
  while (k < n && isspace((unsigned char)text[k])) k++;
  char *dir = dir_of(path);
  int rc;
  if (k == n) rc = mcm_err(err, "manifest '%s': is empty", path);
  else if (text[k] == '{' || text[k] == '[') rc = read_json(m, path, dir, text + k, n - k, err);
  else rc = read_csv(m, path, dir, text, n, err);
  free(dir);
  free(text);
  return rc;
}

/* ---------------------------------------------------------------- MagnaTagATune */

typedef enum { T_GENRE, T_INSTRUMENT, T_MOOD, T_FEMALE, T_MALE, T_VOCAL, T_CHOIR, T_DUET, T_NO_VOCALS, T_WITHOUT } TagKind;

typedef struct {
  const char *tag, *word; /* word: the text in the caption (NULL: the tag itself) */
  TagKind kind;
} TagRule;

/* The vocabulary of annotations_final.csv, by what the tag says. Synonyms share a word so
 * that a caption names each thing once. */
static const TagRule TAG_RULES[] = {
    /* genres and styles */
    {"classical", NULL, T_GENRE}, {"classic", "classical", T_GENRE}, {"techno", NULL, T_GENRE},
    {"rock", NULL, T_GENRE}, {"hard rock", NULL, T_GENRE}, {"soft rock", NULL, T_GENRE},
    {"metal", NULL, T_GENRE}, {"heavy metal", NULL, T_GENRE}, {"electronic", NULL, T_GENRE},
    {"electronica", "electronic", T_GENRE}, {"electro", NULL, T_GENRE}, {"ambient", NULL, T_GENRE},
    {"pop", NULL, T_GENRE}, {"new age", NULL, T_GENRE}, {"dance", NULL, T_GENRE}, {"country", NULL, T_GENRE},
    {"jazz", NULL, T_GENRE}, {"jazzy", "jazz", T_GENRE}, {"opera", NULL, T_GENRE}, {"indian", NULL, T_GENRE},
    {"india", "indian", T_GENRE}, {"folk", NULL, T_GENRE}, {"blues", NULL, T_GENRE}, {"reggae", NULL, T_GENRE},
    {"industrial", NULL, T_GENRE}, {"punk", NULL, T_GENRE}, {"house", NULL, T_GENRE}, {"trance", NULL, T_GENRE},
    {"disco", NULL, T_GENRE}, {"funk", NULL, T_GENRE}, {"baroque", NULL, T_GENRE}, {"medieval", NULL, T_GENRE},
    {"renaissance", NULL, T_GENRE}, {"celtic", NULL, T_GENRE}, {"irish", NULL, T_GENRE}, {"world", NULL, T_GENRE},
    {"oriental", NULL, T_GENRE}, {"eastern", NULL, T_GENRE}, {"middle eastern", NULL, T_GENRE},
    {"arabic", NULL, T_GENRE}, {"latin", NULL, T_GENRE}, {"spanish", NULL, T_GENRE}, {"soul", NULL, T_GENRE},
    {"rap", NULL, T_GENRE}, {"hip hop", NULL, T_GENRE}, {"jungle", NULL, T_GENRE}, {"new wave", NULL, T_GENRE},
    {"modern", NULL, T_GENRE}, {"orchestral", NULL, T_GENRE}, {"foreign", NULL, T_GENRE},
    {"japanese", NULL, T_GENRE}, {"chinese", NULL, T_GENRE}, {"asian", NULL, T_GENRE}, {"tribal", NULL, T_GENRE},
    /* instruments and texture */
    {"guitar", NULL, T_INSTRUMENT}, {"guitars", "guitar", T_INSTRUMENT}, {"acoustic guitar", NULL, T_INSTRUMENT},
    {"electric guitar", NULL, T_INSTRUMENT}, {"classical guitar", NULL, T_INSTRUMENT},
    {"strings", NULL, T_INSTRUMENT}, {"string", "strings", T_INSTRUMENT}, {"drums", NULL, T_INSTRUMENT},
    {"drum", "drums", T_INSTRUMENT}, {"piano", NULL, T_INSTRUMENT}, {"violin", NULL, T_INSTRUMENT},
    {"violins", "violin", T_INSTRUMENT}, {"synth", NULL, T_INSTRUMENT}, {"synthesizer", "synth", T_INSTRUMENT},
    {"harpsichord", NULL, T_INSTRUMENT}, {"flute", NULL, T_INSTRUMENT}, {"flutes", "flute", T_INSTRUMENT},
    {"sitar", NULL, T_INSTRUMENT}, {"harp", NULL, T_INSTRUMENT}, {"cello", NULL, T_INSTRUMENT},
    {"bass", NULL, T_INSTRUMENT}, {"organ", NULL, T_INSTRUMENT}, {"sax", NULL, T_INSTRUMENT},
    {"saxophone", "sax", T_INSTRUMENT}, {"trumpet", NULL, T_INSTRUMENT}, {"banjo", NULL, T_INSTRUMENT},
    {"viola", NULL, T_INSTRUMENT}, {"oboe", NULL, T_INSTRUMENT}, {"clarinet", NULL, T_INSTRUMENT},
    {"horns", NULL, T_INSTRUMENT}, {"horn", "horns", T_INSTRUMENT}, {"percussion", NULL, T_INSTRUMENT},
    {"lute", NULL, T_INSTRUMENT}, {"bells", NULL, T_INSTRUMENT}, {"fiddle", NULL, T_INSTRUMENT},
    {"keyboard", NULL, T_INSTRUMENT}, {"bongos", NULL, T_INSTRUMENT}, {"woodwind", NULL, T_INSTRUMENT},
    {"chimes", NULL, T_INSTRUMENT}, {"orchestra", NULL, T_INSTRUMENT}, {"electric", NULL, T_INSTRUMENT},
    {"acoustic", NULL, T_INSTRUMENT}, {"beat", "beats", T_INSTRUMENT}, {"beats", NULL, T_INSTRUMENT},
    {"tabla", NULL, T_INSTRUMENT}, {"didgeridoo", NULL, T_INSTRUMENT}, {"accordion", NULL, T_INSTRUMENT},
    {"trombone", NULL, T_INSTRUMENT}, {"xylophone", NULL, T_INSTRUMENT}, {"mandolin", NULL, T_INSTRUMENT},
    {"plucking", "plucked strings", T_INSTRUMENT}, {"drone", NULL, T_INSTRUMENT},
    /* tempo, loudness and mood */
    {"slow", NULL, T_MOOD}, {"fast", NULL, T_MOOD}, {"loud", NULL, T_MOOD}, {"quiet", NULL, T_MOOD},
    {"soft", NULL, T_MOOD}, {"weird", NULL, T_MOOD}, {"strange", "weird", T_MOOD}, {"calm", NULL, T_MOOD},
    {"happy", NULL, T_MOOD}, {"sad", NULL, T_MOOD}, {"dark", NULL, T_MOOD}, {"upbeat", NULL, T_MOOD},
    {"heavy", NULL, T_MOOD}, {"light", NULL, T_MOOD}, {"mellow", NULL, T_MOOD}, {"dramatic", NULL, T_MOOD},
    {"airy", NULL, T_MOOD}, {"repetitive", NULL, T_MOOD}, {"spacey", NULL, T_MOOD}, {"sparse", NULL, T_MOOD},
    {"noise", "noisy", T_MOOD}, {"noisy", NULL, T_MOOD}, {"low", NULL, T_MOOD}, {"high", NULL, T_MOOD},
    {"deep", NULL, T_MOOD}, {"eerie", NULL, T_MOOD}, {"scary", NULL, T_MOOD}, {"solo", NULL, T_MOOD},
    {"funky", NULL, T_MOOD}, {"silence", "with silence", T_MOOD}, {"hard", NULL, T_MOOD},
    {"old", NULL, T_MOOD},
    /* voices */
    {"female", NULL, T_FEMALE}, {"woman", NULL, T_FEMALE}, {"women", NULL, T_FEMALE},
    {"female vocal", NULL, T_FEMALE}, {"female vocals", NULL, T_FEMALE}, {"female voice", NULL, T_FEMALE},
    {"female singer", NULL, T_FEMALE}, {"female singing", NULL, T_FEMALE}, {"female opera", NULL, T_FEMALE},
    {"male", NULL, T_MALE}, {"man", NULL, T_MALE}, {"men", NULL, T_MALE}, {"male vocal", NULL, T_MALE},
    {"male vocals", NULL, T_MALE}, {"male voice", NULL, T_MALE}, {"male singer", NULL, T_MALE},
    {"male opera", NULL, T_MALE}, {"vocal", NULL, T_VOCAL}, {"vocals", NULL, T_VOCAL}, {"voice", NULL, T_VOCAL},
    {"voices", NULL, T_VOCAL}, {"singing", NULL, T_VOCAL}, {"singer", NULL, T_VOCAL}, {"talking", NULL, T_VOCAL},
    {"chanting", NULL, T_VOCAL}, {"chant", NULL, T_VOCAL}, {"choir", NULL, T_CHOIR}, {"choral", NULL, T_CHOIR},
    {"chorus", NULL, T_CHOIR}, {"duet", NULL, T_DUET}, {"no vocal", NULL, T_NO_VOCALS},
    {"no vocals", NULL, T_NO_VOCALS}, {"no voice", NULL, T_NO_VOCALS}, {"no voices", NULL, T_NO_VOCALS},
    {"no singing", NULL, T_NO_VOCALS}, {"no singer", NULL, T_NO_VOCALS}, {"instrumental", NULL, T_NO_VOCALS},
};

/* A growing list of distinct words. */
typedef struct {
  const char *w[64];
  int n;
} Words;

static void words_add(Words *ws, const char *w) {
  for (int i = 0; i < ws->n; i++)
    if (!strcmp(ws->w[i], w)) return;
  if (ws->n < 64) ws->w[ws->n++] = w;
}

/* Appends "a", "a and b", "a, b and c" to buf. */
static void append_list(char *buf, size_t size, const Words *ws) {
  size_t len = strlen(buf);
  for (int i = 0; i < ws->n && len < size; i++) {
    const char *sep = i == 0 ? "" : i == ws->n - 1 ? " and " : ", ";
    len += (size_t)snprintf(buf + len, size - len, "%s%s", sep, ws->w[i]);
  }
}

static void append(char *buf, size_t size, const char *s) {
  size_t len = strlen(buf);
  if (len < size) snprintf(buf + len, size - len, "%s", s);
}

char *mtt_caption(const char *const *tags, int n) {
  if (n <= 0) return NULL;
  Words genre = {0}, inst = {0}, mood = {0}, without = {0}, other = {0};
  bool female = false, male = false, vocal = false, choir = false, duet = false, no_vocals = false;
  const size_t n_rules = sizeof TAG_RULES / sizeof TAG_RULES[0];
  for (int i = 0; i < n; i++) {
    const TagRule *r = NULL;
    for (size_t k = 0; k < n_rules && !r; k++)
      if (!strcmp(TAG_RULES[k].tag, tags[i])) r = &TAG_RULES[k];
    if (!r) {
      if (!strncmp(tags[i], "no ", 3) && tags[i][3]) words_add(&without, tags[i] + 3);
      else words_add(&other, tags[i]);
      continue;
    }
    const char *w = r->word ? r->word : r->tag;
    switch (r->kind) {
      case T_GENRE: words_add(&genre, w); break;
      case T_INSTRUMENT: words_add(&inst, w); break;
      case T_MOOD: words_add(&mood, w); break;
      case T_FEMALE: female = true; break;
      case T_MALE: male = true; break;
      case T_VOCAL: vocal = true; break;
      case T_CHOIR: choir = true; break;
      case T_DUET: duet = true; break;
      case T_NO_VOCALS: no_vocals = true; break;
      case T_WITHOUT: words_add(&without, w); break;
    }
  }
  Words voice = {0};
  if (female && male) words_add(&voice, "male and female vocals");
  else if (female) words_add(&voice, "female vocals");
  else if (male) words_add(&voice, "male vocals");
  else if (vocal) words_add(&voice, "vocals");
  if (choir) words_add(&voice, "a choir");
  if (duet) words_add(&voice, "a duet");
  if (!voice.n && no_vocals) words_add(&voice, "no vocals");

  char buf[4096] = "";
  char head[2048] = "";
  append_list(head, sizeof head, &genre);
  bool vowel = head[0] ? strchr("aeiouAEIOU", head[0]) != NULL : false;
  append(buf, sizeof buf, vowel ? "An " : "A ");
  if (head[0]) append(buf, sizeof buf, head), append(buf, sizeof buf, " ");
  append(buf, sizeof buf, "piece");
  if (inst.n) append(buf, sizeof buf, " with "), append_list(buf, sizeof buf, &inst);
  for (int i = 0; i < mood.n; i++) append(buf, sizeof buf, ", "), append(buf, sizeof buf, mood.w[i]);
  if (voice.n) append(buf, sizeof buf, ", "), append_list(buf, sizeof buf, &voice);
  if (without.n) append(buf, sizeof buf, ", without "), append_list(buf, sizeof buf, &without);
  if (other.n) append(buf, sizeof buf, ", tagged "), append_list(buf, sizeof buf, &other);
  append(buf, sizeof buf, ".");
  return dup_s(buf);
}

/* Splits one line on tabs into fields, removing one pair of surrounding quotes. */
static int split_tabs(char *line, char ***fields, int *cap) {
  int n = 0;
  for (char *s = line;;) {
    if (n == *cap) *fields = REALLOC_CHECK(*fields, (size_t)(*cap = *cap ? 2 * *cap : 256) * sizeof **fields);
    char *tab = strchr(s, '\t');
    if (tab) *tab = 0;
    size_t len = strlen(s);
    if (len && s[len - 1] == '\r') s[--len] = 0;
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') s[len - 1] = 0, s++;
    (*fields)[n++] = s;
    if (!tab) break;
    s = tab + 1;
  }
  return n;
}

int manifest_read_mtt(const char *path, Manifest *m, McmErr *err) {
  char *text;
  size_t n;
  if (slurp(path, &text, &n, err)) return -1;
  char *dir = dir_of(path);
  char **h = NULL, **f = NULL;
  int hcap = 0, fcap = 0, rc = 0;
  bool has_nul = memchr(text, 0, n) != NULL;
  char *line = text;
  char *nl = strchr(line, '\n');
  if (nl) *nl = 0;
  int nh = n ? split_tabs(line, &h, &hcap) : 0;
  if (nh < 3 || strcmp(h[0], "clip_id") || strcmp(h[nh - 1], "mp3_path") || has_nul) {
    rc = mcm_err(err,
                 "MagnaTagATune annotations '%s': line 1 must be the tab-separated header clip_id, <tags>..., "
                 "mp3_path (the annotations_final.csv of the dataset)",
                 path);
    goto done;
  }
  snprintf(m->format, sizeof m->format, "mtt");
  const char **pos = MALLOC_CHECK((size_t)nh * sizeof *pos);
  int line_no = 1;
  while (nl) {
    line = nl + 1;
    line_no++;
    nl = strchr(line, '\n');
    if (nl) *nl = 0;
    if (!line[0] || (line[0] == '\r' && !line[1])) continue;
    int nf = split_tabs(line, &f, &fcap);
    char where[64 + 1024];
    mcm_snprintf(where, sizeof where, "%s:%d", path, line_no);
    if (nf != nh) {
      push_skip(m, dup_s(where), "bad row", dup_printf("%s: %d fields, the header has %d", where, nf, nh));
      continue;
    }
    int np = 0;
    const char *bad = NULL;
    for (int j = 1; j < nh - 1; j++) {
      if (!strcmp(f[j], "1")) pos[np++] = h[j];
      else if (strcmp(f[j], "0")) bad = h[j];
    }
    if (bad) {
      push_skip(m, dup_s(where), "bad row", dup_printf("%s: tag '%s' is neither 0 nor 1", where, bad));
      continue;
    }
    if (np == 0) {
      push_skip(m, dup_s(where), "no tags", dup_printf("%s: clip %s has no positive tag to caption", where, f[0]));
      continue;
    }
    char *caption = mtt_caption(pos, np);
    add_pair(m, dir, where, f[nh - 1], strlen(f[nh - 1]), caption, strlen(caption), false);
    free(caption);
  }
  free(pos);
done:
  free(h);
  free(f);
  free(dir);
  free(text);
  return rc;
}
