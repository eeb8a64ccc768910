/* The INI reader, --set, validation and printing behind core/config.h.
 *
 * inih splits lines into sections and key/value pairs; everything else is ours. inih (Debian's
 * build) does not pass line numbers to the handler, so we feed it through ini_parse_stream with
 * a reader that hands over one physical line per call and counts them. The reader also
 * rejects what inih would mangle silently (over-long lines are split by inih, indented lines
 * would become continuations of the previous value) and checks section headers, so that an
 * empty unknown section is still an error. The first error wins: once we have one, the reader
 * ends the stream; inih's own complaint (a malformed line) wins when it comes earlier.
 *
 * A value is parsed into a scratch copy, checked (type, range, choices, per-key check) and only
 * then stored, so a rejected value never lands in the Config.
 */
#include "core/config.h"

#include <ctype.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>

#include <ini.h>

#define WHY 640 /* reason buffers; messages are one line */

/* ------------------------------------------------------------------ small helpers */

static void *field_of(Config *cfg, const CfgKey *k) { return (char *)cfg + k->offset; }
static const void *cfield_of(const Config *cfg, const CfgKey *k) { return (const char *)cfg + k->offset; }

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* Copies s[0..n) without surrounding blanks into out (size cap); false if it does not fit. */
static bool copy_stripped(char *out, size_t cap, const char *s, size_t n) {
  while (n && is_blank(*s)) s++, n--;
  while (n && is_blank(s[n - 1])) n--;
  if (n >= cap) return false;
  memcpy(out, s, n);
  out[n] = 0;
  return true;
}

/* A value as shown in a message: quoted, cut at 80 characters. */
static const char *shown(const char *v, char *buf, size_t size) {
  if (strlen(v) > 80)
    mcm_snprintf(buf, size, "'%.77s...'", v);
  else
    mcm_snprintf(buf, size, "'%s'", v);
  return buf;
}

/* The shortest decimal that reads back as exactly v. */
static void fmt_double(double v, char *buf, size_t size) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, size, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

static void fmt_bound(const CfgKey *k, double v, char *buf, size_t size) {
  if (k->type == CFG_INT || k->type == CFG_INT_LIST)
    snprintf(buf, size, "%.0f", v);
  else
    fmt_double(v, buf, size);
}

static bool has_range(const CfgKey *k) { return k->min <= k->max; }

static bool in_range(const CfgKey *k, double v) {
  if (!has_range(k)) return true;
  return (k->min_open ? v > k->min : v >= k->min) && v <= k->max;
}

/* " in [1, 65536]", " >= 0", " in (0, 1]", or "". */
static void fmt_range(const CfgKey *k, char *buf, size_t size) {
  char lo[40], hi[40];
  buf[0] = 0;
  if (!has_range(k)) return;
  fmt_bound(k, k->min, lo, sizeof lo);
  if (isinf(k->max)) {
    snprintf(buf, size, " %s %s", k->min_open ? ">" : ">=", lo);
  } else {
    fmt_bound(k, k->max, hi, sizeof hi);
    snprintf(buf, size, " in %s%s, %s]", k->min_open ? "(" : "[", lo, hi);
  }
}

/* What a key accepts, for messages and help: "an integer in [1, 65536]". */
static void fmt_expected(const CfgKey *k, char *buf, size_t size) {
  char r[100];
  fmt_range(k, r, sizeof r);
  switch (k->type) {
    case CFG_INT: snprintf(buf, size, "an integer%s", r); break;
    case CFG_FLOAT: snprintf(buf, size, "a number%s", r); break;
    case CFG_BOOL: snprintf(buf, size, "a boolean: true/false, yes/no, on/off or 1/0"); break;
    case CFG_STRING: snprintf(buf, size, "a string"); break;
    case CFG_ENUM: snprintf(buf, size, "one of %s", k->choices); break;
    case CFG_INT_LIST:
      snprintf(buf, size, "a comma-separated list of 1 to %d integers%s%s", CFG_MAX_LIST, *r ? ", each" : "", r);
      break;
    case CFG_FLOAT_LIST:
      snprintf(buf, size, "a comma-separated list of 1 to %d numbers%s%s", CFG_MAX_LIST, *r ? ", each" : "", r);
      break;
  }
}

/* The value of a field as INI text. */
static void fmt_value(const CfgKey *k, const void *f, char *buf, size_t size) {
  size_t n = 0;
  buf[0] = 0;
  switch (k->type) {
    case CFG_INT: snprintf(buf, size, "%" PRId64, *(const int64_t *)f); break;
    case CFG_FLOAT: fmt_double(*(const double *)f, buf, size); break;
    case CFG_BOOL: snprintf(buf, size, "%s", *(const bool *)f ? "true" : "false"); break;
    case CFG_STRING:
    case CFG_ENUM: snprintf(buf, size, "%s", (const char *)f); break;
    case CFG_INT_LIST: {
      const CfgIntList *l = f;
      for (int i = 0; i < l->n && i < CFG_MAX_LIST && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64, i ? "," : "", l->v[i]);
      break;
    }
    case CFG_FLOAT_LIST: {
      const CfgFloatList *l = f;
      for (int i = 0; i < l->n && i < CFG_MAX_LIST && n + 1 < size; i++) {
        if (i) buf[n++] = ',';
        fmt_double(l->v[i], buf + n, size - n);
        n += strlen(buf + n);
      }
      break;
    }
  }
}

/* Damerau-Levenshtein (optimal string alignment) distance, ignoring case. */
static int edit_distance(const char *a, const char *b) {
  enum { M = 48 };
  int la = (int)strlen(a), lb = (int)strlen(b);
  if (la >= M || lb >= M) return 99;
  int d[M][M];
  for (int i = 0; i <= la; i++) d[i][0] = i;
  for (int j = 0; j <= lb; j++) d[0][j] = j;
  for (int i = 1; i <= la; i++) {
    for (int j = 1; j <= lb; j++) {
      int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
      int v = d[i - 1][j - 1] + cost;
      if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 2]) &&
          tolower((unsigned char)a[i - 2]) == tolower((unsigned char)b[j - 1]) && d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  }
  return d[la][lb];
}

/* Close enough to suggest: one edit for short names, two for longer ones. */
static bool similar(const char *typed, const char *known) {
  int limit = strlen(known) <= 4 ? 1 : 2;
  return edit_distance(typed, known) <= limit;
}

static bool section_exists(const char *section) {
  for (int i = 0; i < MCM_SCHEMA_N; i++)
    if (!strcmp(MCM_SCHEMA[i].section, section)) return true;
  return false;
}

/* Is row i the first row of its section? (Sections are contiguous in the schema.) */
static bool starts_section(int i) { return i == 0 || strcmp(MCM_SCHEMA[i - 1].section, MCM_SCHEMA[i].section); }

static void list_sections(char *buf, size_t size) {
  size_t n = 0;
  buf[0] = 0;
  for (int i = 0; i < MCM_SCHEMA_N && n < size; i++)
    if (starts_section(i)) n += (size_t)snprintf(buf + n, size - n, "%s[%s]", n ? ", " : "", MCM_SCHEMA[i].section);
}

int config_key_index(const char *section, const char *key) {
  for (int i = 0; i < MCM_SCHEMA_N; i++)
    if (!strcmp(MCM_SCHEMA[i].section, section) && !strcmp(MCM_SCHEMA[i].key, key)) return i;
  return -1;
}

/* The schema row of section/key, or -1 with the reason (and a suggestion) in why. */
static int lookup(const char *section, const char *key, char *why, size_t size) {
  char secs[200];
  list_sections(secs, sizeof secs);
  if (!*section) {
    for (int i = 0; i < MCM_SCHEMA_N; i++) {
      if (!strcmp(MCM_SCHEMA[i].key, key)) {
        mcm_snprintf(why, size, "key '%s' is outside any section; put it under [%s]", key, MCM_SCHEMA[i].section);
        return -1;
      }
    }
    mcm_snprintf(why, size, "key '%s' is outside any section (sections: %s)", key, secs);
    return -1;
  }
  if (!section_exists(section)) {
    for (int i = 0; i < MCM_SCHEMA_N; i++) {
      if (starts_section(i) && similar(section, MCM_SCHEMA[i].section)) {
        mcm_snprintf(why, size, "unknown section [%s] (did you mean [%s]?); valid sections: %s", section,
                     MCM_SCHEMA[i].section, secs);
        return -1;
      }
    }
    mcm_snprintf(why, size, "unknown section [%s]; valid sections: %s", section, secs);
    return -1;
  }
  if (!*key) {
    mcm_snprintf(why, size, "a line in [%s] has no key name before '='", section);
    return -1;
  }
  int i = config_key_index(section, key);
  if (i >= 0) return i;

  int best = -1, best_d = 99;
  for (int j = 0; j < MCM_SCHEMA_N; j++) {
    if (strcmp(MCM_SCHEMA[j].section, section) || !similar(key, MCM_SCHEMA[j].key)) continue;
    int d = edit_distance(key, MCM_SCHEMA[j].key);
    if (d < best_d) best = j, best_d = d;
  }
  if (best >= 0) {
    mcm_snprintf(why, size, "unknown key '%s' in [%s] (did you mean '%s'?)", key, section, MCM_SCHEMA[best].key);
    return -1;
  }
  for (int j = 0; j < MCM_SCHEMA_N; j++) {
    if (!strcmp(MCM_SCHEMA[j].key, key)) {
      mcm_snprintf(why, size, "unknown key '%s' in [%s]; '%s' is a key of [%s]", key, section, key,
                   MCM_SCHEMA[j].section);
      return -1;
    }
  }
  char keys[400];
  size_t n = 0;
  keys[0] = 0;
  for (int j = 0; j < MCM_SCHEMA_N && n < sizeof keys; j++)
    if (!strcmp(MCM_SCHEMA[j].section, section))
      n += (size_t)snprintf(keys + n, sizeof keys - n, "%s%s", n ? ", " : "", MCM_SCHEMA[j].key);
  mcm_snprintf(why, size, "unknown key '%s' in [%s]; valid keys: %s", key, section, keys);
  return -1;
}

/* ------------------------------------------------------------------ values */

/* 0, -1 when s is not a decimal integer, -2 when it is beyond 64 bits. */
static int parse_int(const char *s, int64_t *out) {
  const char *p = s + (*s == '+' || *s == '-');
  if (!isdigit((unsigned char)*p)) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (*end) return -1;
  if (errno == ERANGE) return -2;
  *out = v;
  return 0;
}

/* 0, -1 when s is not a number, -2 when it is nan, inf or beyond a double's range. */
static int parse_float(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end) return -1;
  if (!isfinite(v) || (errno == ERANGE && v == 0)) return -2; /* subnormals are fine */
  *out = v;
  return 0;
}

static int parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
  for (int i = 0; i < 4; i++) {
    if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
      *out = !strcasecmp(s, yes[i]);
      return 0;
    }
  }
  return -1;
}

static bool is_choice(const char *choices, const char *s) {
  size_t n = strlen(s);
  for (const char *c = choices; c; c = strchr(c, '|') ? strchr(c, '|') + 1 : NULL) {
    size_t len = strcspn(c, "|");
    if (len == n && !strncmp(c, s, n)) return true;
  }
  return false;
}

/* A choice close to s, copied into out ("" when none). */
static void near_choice(const char *choices, const char *s, char *out, size_t size) {
  out[0] = 0;
  for (const char *c = choices; c; c = strchr(c, '|') ? strchr(c, '|') + 1 : NULL) {
    char one[64];
    size_t len = strcspn(c, "|");
    if (len >= sizeof one) continue;
    memcpy(one, c, len);
    one[len] = 0;
    if (similar(s, one)) {
      snprintf(out, size, "%s", one);
      return;
    }
  }
}

/* Why a string cannot be stored so that it reads back the same from an INI line; 0 if fine. */
static int check_string(const char *s, char *why, size_t size) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
      mcm_snprintf(why, size, "contains a control character (code %d)", s[i]);
      return -1;
    }
    if (s[i] == ';' && (i == 0 || is_blank(s[i - 1]))) {
      mcm_snprintf(why, size, "contains a ';' %s, which starts a comment in an INI file",
                   i ? "after a space" : "at the start");
      return -1;
    }
  }
  if (n && (is_blank(s[0]) || is_blank(s[n - 1]))) {
    mcm_snprintf(why, size, "has leading or trailing spaces, which an INI file cannot hold");
    return -1;
  }
  if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) {
    mcm_snprintf(why, size, "is quoted; INI values are written without quotes (these would be part of the value)");
    return -1;
  }
  return 0;
}

/* Checks a typed field against its row: range, choices, string rules, per-key check, and that
 * `key = value` fits on one INI line. Returns 0, or -1 with the reason in why. */
static int check_field(const CfgKey *k, const void *f, char *why, size_t size) {
  char exp[200], text[CFG_MAX_STRING + 200];
  fmt_expected(k, exp, sizeof exp);
  switch (k->type) {
    case CFG_INT:
      if (!in_range(k, (double)*(const int64_t *)f)) goto out_of_range;
      break;
    case CFG_FLOAT: {
      double v = *(const double *)f;
      if (!isfinite(v)) return mcm_snprintf(why, size, "expected a finite number"), -1;
      if (!in_range(k, v)) goto out_of_range;
      break;
    }
    case CFG_BOOL: break;
    case CFG_STRING:
      if (!memchr(f, 0, k->size)) return mcm_snprintf(why, size, "is not terminated"), -1;
      if (check_string(f, why, size)) return -1;
      break;
    case CFG_ENUM:
      if (!memchr(f, 0, k->size)) return mcm_snprintf(why, size, "is not terminated"), -1;
      if (!is_choice(k->choices, f)) {
        char near[64];
        near_choice(k->choices, f, near, sizeof near);
        if (*near)
          mcm_snprintf(why, size, "expected %s (did you mean '%s'?)", exp, near);
        else
          mcm_snprintf(why, size, "expected %s", exp);
        return -1;
      }
      break;
    case CFG_INT_LIST:
    case CFG_FLOAT_LIST: {
      int n = k->type == CFG_INT_LIST ? ((const CfgIntList *)f)->n : ((const CfgFloatList *)f)->n;
      if (n < 1 || n > CFG_MAX_LIST)
        return mcm_snprintf(why, size, "has %d elements; expected %s", n, exp), -1;
      for (int i = 0; i < n; i++) {
        double v = k->type == CFG_INT_LIST ? (double)((const CfgIntList *)f)->v[i] : ((const CfgFloatList *)f)->v[i];
        if (!isfinite(v) || !in_range(k, v)) {
          char e[40];
          fmt_bound(k, v, e, sizeof e);
          mcm_snprintf(why, size, "element %d (%s) is out of range; expected %s", i + 1, e, exp);
          return -1;
        }
      }
      break;
    }
  }
  if (k->check && k->check(f, why, size)) return -1;
  fmt_value(k, f, text, sizeof text);
  size_t room = CFG_MAX_LINE - strlen(k->key) - 3; /* "key = value" */
  if (strlen(text) > room) {
    mcm_snprintf(why, size, "is %zu characters long; at most %zu fit on one INI line with the key", strlen(text), room);
    return -1;
  }
  return 0;
out_of_range:
  mcm_snprintf(why, size, "out of range; expected %s", exp);
  return -1;
}

/* Parses a comma-separated list into a CfgIntList or CfgFloatList. */
static int parse_list(const CfgKey *k, const char *s, void *out, char *why, size_t size) {
  char exp[200], elem[64];
  fmt_expected(k, exp, sizeof exp);
  int n = 0;
  for (const char *p = s;; n++) {
    size_t len = strcspn(p, ",");
    if (n == CFG_MAX_LIST) {
      int total = n;
      for (; *p; p++) total += *p == ',';
      return mcm_snprintf(why, size, "has %d elements; expected %s", total + 1, exp), -1;
    }
    if (!copy_stripped(elem, sizeof elem, p, len))
      return mcm_snprintf(why, size, "element %d is too long; expected %s", n + 1, exp), -1;
    if (!*elem) return mcm_snprintf(why, size, "element %d is empty; expected %s", n + 1, exp), -1;
    int bad = k->type == CFG_INT_LIST ? parse_int(elem, &((CfgIntList *)out)->v[n])
                                      : parse_float(elem, &((CfgFloatList *)out)->v[n]);
    if (bad)
      return mcm_snprintf(why, size, "element %d '%s' is not %s; expected %s", n + 1, elem,
                          bad == -2 ? "in range" : "valid", exp), -1;
    if (!p[len]) break;
    p += len + 1;
  }
  if (k->type == CFG_INT_LIST)
    ((CfgIntList *)out)->n = n + 1;
  else
    ((CfgFloatList *)out)->n = n + 1;
  return 0;
}

/* Parses value (already stripped) for row idx and stores it, or returns -1 with a message
 * "section.key = 'value': reason" in why and leaves the field as it was. */
static int set_value(Config *cfg, int idx, const char *value, char *why, size_t size) {
  const CfgKey *k = &MCM_SCHEMA[idx];
  union {
    int64_t i;
    double d;
    bool b;
    char s[CFG_MAX_STRING];
    CfgIntList il;
    CfgFloatList fl;
  } tmp;
  char exp[200], reason[WHY], v[100];
  memset(&tmp, 0, sizeof tmp);
  fmt_expected(k, exp, sizeof exp);
  reason[0] = 0;

  int bad = 0;
  if (!*value && k->type != CFG_STRING) {
    mcm_snprintf(why, size, "%s.%s is empty; expected %s", k->section, k->key, exp);
    return -1;
  }
  switch (k->type) {
    case CFG_INT: bad = parse_int(value, &tmp.i); break;
    case CFG_FLOAT: bad = parse_float(value, &tmp.d); break;
    case CFG_BOOL: bad = parse_bool(value, &tmp.b); break;
    case CFG_STRING:
    case CFG_ENUM:
      if (strlen(value) >= sizeof tmp.s) {
        mcm_snprintf(reason, sizeof reason, "is %zu characters long; at most %d fit", strlen(value), CFG_MAX_STRING - 1);
        bad = 1;
      } else {
        strcpy(tmp.s, value);
      }
      break;
    case CFG_INT_LIST:
    case CFG_FLOAT_LIST: bad = parse_list(k, value, &tmp, reason, sizeof reason); break;
  }
  if (bad && !*reason) {
    const char *why_not = bad != -2                ? ""
                          : k->type == CFG_INT     ? " (this one is beyond 64 bits)"
                                                   : " (nan, inf and values beyond a double are rejected)";
    mcm_snprintf(reason, sizeof reason, "expected %s%s", exp, why_not);
  }
  if (!bad) bad = check_field(k, &tmp, reason, sizeof reason);
  if (bad) {
    /* A common slip: a '#' comment after a value (only ' ;' starts an inline comment). */
    const char *hint = strstr(value, " #") || strstr(value, "\t#") ? " (inline comments start with ' ;', not '#')" : "";
    mcm_snprintf(why, size, "%s.%s = %s: %s%s", k->section, k->key, shown(value, v, sizeof v), reason, hint);
    return -1;
  }
  memcpy(field_of(cfg, k), &tmp, k->size);
  return 0;
}

/* origin = "source:line", keeping the end of a long path. */
static void set_origin(Config *cfg, int idx, const char *source, int line) {
  char full[1024];
  char *o = cfg->origin[idx];
  if (line > 0)
    snprintf(full, sizeof full, "%s:%d", source, line);
  else
    snprintf(full, sizeof full, "%s", source);
  size_t n = strlen(full);
  if (n < CFG_MAX_ORIGIN)
    memcpy(o, full, n + 1);
  else
    snprintf(o, CFG_MAX_ORIGIN, "...%s", full + n - (CFG_MAX_ORIGIN - 4));
}

/* ------------------------------------------------------------------ defaults */

static size_t type_size(CfgType t) {
  switch (t) {
    case CFG_INT: return sizeof(int64_t);
    case CFG_FLOAT: return sizeof(double);
    case CFG_BOOL: return sizeof(bool);
    case CFG_STRING:
    case CFG_ENUM: return CFG_MAX_STRING;
    case CFG_INT_LIST: return sizeof(CfgIntList);
    case CFG_FLOAT_LIST: return sizeof(CfgFloatList);
  }
  return 0;
}

void config_defaults(Config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  MCM_CHECK(MCM_SCHEMA_N <= CFG_MAX_KEYS, "schema has %d keys; raise CFG_MAX_KEYS", MCM_SCHEMA_N);
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const CfgKey *k = &MCM_SCHEMA[i];
    MCM_CHECK(k->size == type_size(k->type), "schema row %s.%s: the field's size %zu does not match its type",
              k->section, k->key, k->size);
    MCM_CHECK(k->type != CFG_ENUM || k->choices, "schema row %s.%s: an enum without choices", k->section, k->key);
    MCM_CHECK(k->help && *k->help, "schema row %s.%s has no help text", k->section, k->key);
    if (!k->def) continue;
    char why[WHY];
    MCM_CHECK(set_value(cfg, i, k->def, why, sizeof why) == 0, "schema default is invalid: %s", why);
    set_origin(cfg, i, "default", 0);
  }
}

/* ------------------------------------------------------------------ the INI reader */

typedef struct {
  Config *cfg;
  const char *source;     /* the file path or source name, for messages and origins */
  FILE *file;             /* a file source, or NULL */
  const char *text, *pos; /* a string source */
  char *buf;              /* getline's buffer */
  size_t cap;
  int lineno;   /* physical lines handed to inih so far */
  int err_line; /* line of the first error we found; 0 = none */
  int read_errno; /* errno of a failed read (a directory, an I/O error) */
  char msg[sizeof(((McmErr *)0)->msg)];
  int seen[CFG_MAX_KEYS]; /* line where each key was set in this source; 0 = not yet */
} Parser;

static void parser_fail(Parser *p, const char *fmt, ...) MCM_PRINTF(2, 3);
static void parser_fail(Parser *p, const char *fmt, ...) {
  char why[WHY + 200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  p->err_line = p->lineno;
  mcm_snprintf(p->msg, sizeof p->msg, "%s:%d: %s", p->source, p->lineno, why);
}

/* The next physical line without its line ending (*len characters, may hold NULs). */
static const char *next_line(Parser *p, size_t *len) {
  const char *line;
  size_t n;
  if (p->file) {
    errno = 0;
    ssize_t r = getline(&p->buf, &p->cap, p->file);
    if (r < 0) {
      if (ferror(p->file)) p->read_errno = errno ? errno : EIO;
      return NULL;
    }
    line = p->buf, n = (size_t)r;
  } else {
    if (!*p->pos) return NULL;
    line = p->pos;
    n = strcspn(line, "\n");
    p->pos = line + n + (line[n] == '\n');
  }
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
  *len = n;
  return line;
}

/* Leading blanks (and a UTF-8 byte order mark on line 1) removed. */
static const char *trim_start(const char *line, size_t *len, int lineno) {
  if (lineno == 1 && *len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) line += 3, *len -= 3;
  while (*len && is_blank(*line)) line++, (*len)--;
  return line;
}

/* inih's reader: one physical line per call, checked, without leading blanks. */
static char *reader(char *str, int num, void *stream) {
  Parser *p = stream;
  size_t len;
  if (p->err_line) return NULL; /* the first error ends the parse */
  const char *line = next_line(p, &len);
  if (!line) return NULL;
  p->lineno++;
  line = trim_start(line, &len, p->lineno);
  if (memchr(line, 0, len)) {
    parser_fail(p, "line contains a NUL byte (is this a text file?)");
    return NULL;
  }
  if (len > CFG_MAX_LINE || len + 2 > (size_t)num) {
    parser_fail(p, "line is %zu characters long; at most %d fit (shorten the value)", len, CFG_MAX_LINE);
    return NULL;
  }
  if (len && line[0] == '[') { /* a header: check it even if no key follows */
    const char *end = memchr(line, ']', len);
    if (end) {
      char section[CFG_MAX_LINE + 1], why[WHY];
      memcpy(section, line + 1, (size_t)(end - line - 1));
      section[end - line - 1] = 0;
      if (!section_exists(section)) {
        lookup(section, "?", why, sizeof why); /* says which sections exist */
        parser_fail(p, "%s", why);
        return NULL;
      }
    }
  }
  memcpy(str, line, len);
  str[len] = '\n';
  str[len + 1] = 0;
  return str;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
  Parser *p = user;
  char why[WHY];
  int idx = lookup(section, name, why, sizeof why);
  if (idx < 0) return parser_fail(p, "%s", why), 0;
  if (p->seen[idx]) {
    parser_fail(p, "duplicate key %s.%s (first set at line %d)", section, name, p->seen[idx]);
    return 0;
  }
  if (set_value(p->cfg, idx, value, why, sizeof why)) return parser_fail(p, "%s", why), 0;
  p->seen[idx] = p->lineno;
  set_origin(p->cfg, idx, p->source, p->lineno);
  return 1;
}

/* Text of line `want` (for the malformed-line message), or "" if the source cannot rewind. */
static void line_text(Parser *p, int want, char *out, size_t size) {
  out[0] = 0;
  if (p->file ? fseek(p->file, 0, SEEK_SET) != 0 : false) return;
  p->pos = p->text;
  size_t len;
  const char *line;
  for (int i = 1; (line = next_line(p, &len)); i++) {
    if (i < want) continue;
    line = trim_start(line, &len, i);
    char v[100];
    char copy[CFG_MAX_LINE + 1];
    snprintf(copy, sizeof copy, "%.*s", (int)len, line);
    snprintf(out, size, " %s", shown(copy, v, sizeof v));
    return;
  }
}

static int run_parser(Parser *p, McmErr *err) {
  int rc = ini_parse_stream(reader, p, handler, p);
  if (p->read_errno) {
    free(p->buf);
    return mcm_err(err, "%s: cannot read the config file: %s", p->source, strerror(p->read_errno));
  }
  if (rc == -2) {
    free(p->buf);
    return mcm_err(err, "%s: out of memory while parsing", p->source);
  }
  if (rc > 0 && (!p->err_line || rc < p->err_line)) {
    /* inih rejected a line that is neither a header nor key = value. */
    char text[120];
    line_text(p, rc, text, sizeof text);
    free(p->buf);
    return mcm_err(err, "%s:%d: malformed line%s: expected 'key = value', '[section]' or a comment starting with ';' or '#'",
                   p->source, rc, text);
  }
  free(p->buf);
  if (p->err_line) return mcm_err(err, "%s", p->msg);
  return 0;
}

int config_parse_file(Config *cfg, const char *path, McmErr *err) {
  FILE *f = fopen(path, "r");
  if (!f) return mcm_err(err, "%s: cannot open the config file: %s", path, strerror(errno));
  Parser p = {.cfg = cfg, .source = path, .file = f};
  int rc = run_parser(&p, err);
  fclose(f);
  return rc;
}

int config_parse_string(Config *cfg, const char *text, const char *source_name, McmErr *err) {
  Parser p = {.cfg = cfg, .source = source_name ? source_name : "(string)", .text = text, .pos = text};
  return run_parser(&p, err);
}

/* ------------------------------------------------------------------ --set */

int config_set(Config *cfg, const char *assignment, McmErr *err) {
  char shown_a[160], name[128], why[WHY];
  mcm_snprintf(shown_a, sizeof shown_a, strlen(assignment) > 120 ? "%.117s..." : "%s", assignment);
  const char *eq = strchr(assignment, '=');
  const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
  if (!eq || !dot)
    return mcm_err(err, "--set %s: expected section.key=value (for example --set train.lr=1e-4)", shown_a);

  char section[64], key[64];
  if (!copy_stripped(name, sizeof name, assignment, (size_t)(eq - assignment)) ||
      !copy_stripped(section, sizeof section, assignment, (size_t)(dot - assignment)) ||
      !copy_stripped(key, sizeof key, dot + 1, (size_t)(eq - dot - 1)))
    return mcm_err(err, "--set %s: the name is too long; expected section.key=value", shown_a);
  int idx = lookup(section, key, why, sizeof why);
  if (idx < 0) return mcm_err(err, "--set %s: %s", shown_a, why);

  size_t vlen = strlen(eq + 1);
  char *value = MALLOC_CHECK(vlen + 1);
  copy_stripped(value, vlen + 1, eq + 1, vlen);
  int rc = set_value(cfg, idx, value, why, sizeof why);
  free(value);
  if (rc) return mcm_err(err, "--set %s: %s", shown_a, why);
  set_origin(cfg, idx, "--set", 0);
  return 0;
}

/* ------------------------------------------------------------------ validation */

/* "file.ini:12: ", "--set train.lr: " or "default train.lr: ": where a value came from. */
static void where(const Config *cfg, int idx, char *buf, size_t size) {
  const char *o = cfg->origin[idx];
  const CfgKey *k = &MCM_SCHEMA[idx];
  if (!strcmp(o, "--set") || !strcmp(o, "default"))
    snprintf(buf, size, "%s %s.%s", o, k->section, k->key);
  else
    snprintf(buf, size, "%s", o);
}

/* config_validate; `file` (may be NULL) names the config file in a missing-key message.
 * need_required false: keys without a default may stay unset (./infer needs no training keys). */
static int validate(const Config *cfg, const char *file, bool need_required, McmErr *err) {
  char why[WHY], at[CFG_MAX_ORIGIN + 64], exp[200], v[CFG_MAX_STRING + 200], vs[100];
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const CfgKey *k = &MCM_SCHEMA[i];
    if (cfg->origin[i][0] || (!need_required && !k->def)) continue;
    fmt_expected(k, exp, sizeof exp);
    if (k->def)
      return mcm_err(err, "%s.%s was never set (the Config was not initialised with config_defaults)", k->section,
                     k->key);
    if (file)
      return mcm_err(err, "%s: missing required key %s.%s (%s: %s); add it under [%s] or pass --set %s.%s=...", file,
                     k->section, k->key, exp, k->help, k->section, k->section, k->key);
    return mcm_err(err, "missing required key %s.%s (%s: %s); set it in the config file or with --set %s.%s=...",
                   k->section, k->key, exp, k->help, k->section, k->key);
  }
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const CfgKey *k = &MCM_SCHEMA[i];
    if (!cfg->origin[i][0]) continue; /* an unset required key (need_required false) */
    const void *f = cfield_of(cfg, k);
    where(cfg, i, at, sizeof at);
    if (check_field(k, f, why, sizeof why)) {
      fmt_value(k, f, v, sizeof v);
      return mcm_err(err, "%s: %s.%s = %s: %s", at, k->section, k->key, shown(v, vs, sizeof vs), why);
    }
    if (k->type == CFG_STRING && !k->def && !*(const char *)f)
      return mcm_err(err, "%s: %s.%s is empty; it is required (%s)", at, k->section, k->key, k->help);
  }
  int bad = mcm_schema_cross_check(cfg, why, sizeof why);
  if (bad >= 0) {
    where(cfg, bad, at, sizeof at);
    return mcm_err(err, "%s: %s", at, why);
  }
  return 0;
}

int config_validate(const Config *cfg, McmErr *err) { return validate(cfg, NULL, true, err); }

static int resolve(Config *cfg, const char *path, int n_sets, char **sets, bool need_required, McmErr *err) {
  config_defaults(cfg);
  if (path && config_parse_file(cfg, path, err)) return -1;
  for (int i = 0; i < n_sets; i++)
    if (config_set(cfg, sets[i], err)) return -1;
  return validate(cfg, path, need_required, err);
}

int config_resolve(Config *cfg, const char *path, int n_sets, char **sets, McmErr *err) {
  return resolve(cfg, path, n_sets, sets, true, err);
}

int config_resolve_optional(Config *cfg, const char *path, int n_sets, char **sets, McmErr *err) {
  return resolve(cfg, path, n_sets, sets, false, err);
}

/* ------------------------------------------------------------------ printing */

/* Every key in INI form; with origins, each line says where its value came from. */
static void write_ini(const Config *cfg, FILE *f, bool origins) {
  char v[CFG_MAX_STRING + 200], line[CFG_MAX_STRING + 300];
  fprintf(f, "; mcm configuration%s\n", origins ? " (resolved; ';' comments give each value's origin)" : "");
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const CfgKey *k = &MCM_SCHEMA[i];
    if (starts_section(i)) fprintf(f, "\n[%s]\n", k->section);
    if (!cfg->origin[i][0]) {
      fprintf(f, "; %s = (required, not set)\n", k->key);
      continue;
    }
    fmt_value(k, cfield_of(cfg, k), v, sizeof v);
    int n = snprintf(line, sizeof line, "%s = %s", k->key, v);
    if (!origins) {
      fprintf(f, "%s\n", line);
    } else if (n + 4 + (int)strlen(cfg->origin[i]) + (n < 32 ? 32 - n : 0) <= CFG_MAX_LINE) {
      fprintf(f, "%-32s ; %s\n", line, cfg->origin[i]);
    } else { /* keep every line readable by the parser */
      fprintf(f, "; %s\n%s\n", cfg->origin[i], line);
    }
  }
}

char *config_to_string(const Config *cfg) {
  char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);
  MCM_CHECK(f, "open_memstream failed: %s", strerror(errno));
  write_ini(cfg, f, false);
  MCM_CHECK(fclose(f) == 0, "writing the config to memory failed");
  return text;
}

void config_print(const Config *cfg, FILE *f) { write_ini(cfg, f, true); }

void config_help(FILE *f) {
  char exp[200], def[CFG_MAX_STRING + 20];
  fprintf(f, "Configuration keys (INI: [section] then key = value; override any key with --set section.key=value)\n");
  for (int i = 0; i < MCM_SCHEMA_N; i++) {
    const CfgKey *k = &MCM_SCHEMA[i];
    if (starts_section(i)) fprintf(f, "\n[%s]\n", k->section);
    fmt_expected(k, exp, sizeof exp);
    if (!k->def)
      snprintf(def, sizeof def, "required");
    else if (k->type == CFG_STRING)
      snprintf(def, sizeof def, "default \"%s\"", k->def);
    else
      snprintf(def, sizeof def, "default %s", k->def);
    fprintf(f, "  %-18s %s; %s\n  %-18s %s\n", k->key, exp, def, "", k->help);
  }
}
