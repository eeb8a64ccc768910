/* Command-line value parsing (see cli.h). */
#include "cli.h"

#include <math.h>

int cli_int(const char *opt, const char *s, long long lo, long long hi, long long *out, McmErr *err) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || errno) return mcm_err(err, "%s: '%s' is not an integer", opt, s);
  if (v < lo || v > hi) return mcm_err(err, "%s: %lld is outside %lld..%lld", opt, v, lo, hi);
  *out = v;
  return 0;
}

int cli_float(const char *opt, const char *s, double lo, double hi, bool lo_open, double *out, McmErr *err) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (!*s || *end || errno || !isfinite(v)) return mcm_err(err, "%s: '%s' is not a finite number", opt, s);
  if (v < lo || v > hi || (lo_open && v == lo))
    return mcm_err(err, "%s: %g is outside %s%g, %g]", opt, v, lo_open ? "(" : "[", lo, hi);
  *out = v;
  return 0;
}

int cli_choice(const char *opt, const char *s, const char *choices, McmErr *err) {
  size_t n = strlen(s);
  for (const char *c = choices; *c;) {
    const char *bar = strchr(c, '|');
    size_t len = bar ? (size_t)(bar - c) : strlen(c);
    if (len == n && !strncmp(c, s, n)) return 0;
    c += len + (bar ? 1 : 0);
  }
  return mcm_err(err, "%s: '%s' is not one of %s", opt, s, choices);
}

int cli_value(int argc, char **argv, int *i, const char **out, McmErr *err) {
  if (*i + 1 >= argc) return mcm_err(err, "%s needs a value", argv[*i]);
  *out = argv[++*i];
  return 0;
}
