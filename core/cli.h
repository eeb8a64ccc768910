/* Strict command-line value parsing for the mains: a bad value is one line naming the
 * option, the value and what was expected. */
#pragma once
#include "kernels/common.h"

int cli_int(const char *opt, const char *s, long long lo, long long hi, long long *out, McmErr *err);
int cli_float(const char *opt, const char *s, double lo, double hi, bool lo_open, double *out, McmErr *err);
/* s must be one of the '|'-separated choices. */
int cli_choice(const char *opt, const char *s, const char *choices, McmErr *err);
/* The value after argv[*i] (advancing *i), or an error when it is missing. */
int cli_value(int argc, char **argv, int *i, const char **out, McmErr *err);
