/* Diffusion schedules (see schedule.h): betas, ᾱ, timestep lists, step coefficients. */
#include "schedule.h"

#include <math.h>

ScheduleConfig schedule_config_musicldm(void) {
  return (ScheduleConfig){
      .kind = BETA_SCALED_LINEAR,
      .beta_start = 0.0015,
      .beta_end = 0.0195,
      .T = 1000,
      .spacing = SPACING_LEADING,
      .steps_offset = 1,
      .set_alpha_to_one = false,
  };
}

int schedule_init(Schedule *s, const ScheduleConfig *cfg, McmErr *err) {
  memset(s, 0, sizeof *s);
  if (cfg->T < 1 || cfg->T > 100000) return mcm_err(err, "schedule: T = %d timesteps (expected 1..100000)", cfg->T);
  if (!(cfg->beta_start > 0 && cfg->beta_start < 1 && cfg->beta_end > 0 && cfg->beta_end < 1))
    return mcm_err(err, "schedule: beta_start %g and beta_end %g must lie in (0, 1)", cfg->beta_start, cfg->beta_end);
  if (cfg->beta_end < cfg->beta_start)
    return mcm_err(err, "schedule: beta_end %g is below beta_start %g (expected an increasing schedule)",
                   cfg->beta_end, cfg->beta_start);
  if (cfg->kind != BETA_SCALED_LINEAR && cfg->kind != BETA_LINEAR)
    return mcm_err(err, "schedule: unknown beta schedule kind %d", (int)cfg->kind);
  if (cfg->spacing != SPACING_LEADING && cfg->spacing != SPACING_TRAILING && cfg->spacing != SPACING_LINSPACE)
    return mcm_err(err, "schedule: unknown timestep spacing %d", (int)cfg->spacing);
  if (cfg->steps_offset < 0 || cfg->steps_offset >= cfg->T)
    return mcm_err(err, "schedule: steps_offset %d (expected 0..%d)", cfg->steps_offset, cfg->T - 1);

  int T = cfg->T;
  s->cfg = *cfg;
  s->betas = MALLOC_CHECK((size_t)T * sizeof(double));
  s->alphas_cumprod = MALLOC_CHECK((size_t)T * sizeof(double));
  /* linspace(a, b, T) as numpy computes it: a + i·(b − a)/(T − 1), the last value exactly b. */
  double a = cfg->kind == BETA_SCALED_LINEAR ? sqrt(cfg->beta_start) : cfg->beta_start;
  double b = cfg->kind == BETA_SCALED_LINEAR ? sqrt(cfg->beta_end) : cfg->beta_end;
  double step = T > 1 ? (b - a) / (T - 1) : 0.0;
  double prod = 1.0;
  for (int t = 0; t < T; t++) {
    double v = (t == T - 1 && T > 1) ? b : a + t * step;
    s->betas[t] = cfg->kind == BETA_SCALED_LINEAR ? v * v : v;
    prod *= 1.0 - s->betas[t];
    s->alphas_cumprod[t] = prod;
  }
  s->final_alpha_cumprod = cfg->set_alpha_to_one ? 1.0 : s->alphas_cumprod[0];
  return 0;
}

void schedule_free(Schedule *s) {
  free(s->betas);
  free(s->alphas_cumprod);
  s->betas = s->alphas_cumprod = NULL;
}

double schedule_alpha_bar(const Schedule *s, int t) {
  MCM_CHECK(t < s->cfg.T, "schedule: timestep %d is outside [0, %d)", t, s->cfg.T);
  return t < 0 ? s->final_alpha_cumprod : s->alphas_cumprod[t];
}

/* ------------------------------------------------------------------ names */

static const char *BETA_NAMES[] = {"scaled_linear", "linear"};
static const char *SPACING_NAMES[] = {"leading", "trailing", "linspace"};

int beta_kind_parse(const char *name, BetaKind *out, McmErr *err) {
  for (int i = 0; i < 2; i++)
    if (!strcmp(name, BETA_NAMES[i])) return *out = (BetaKind)i, 0;
  return mcm_err(err, "unknown beta schedule \"%s\" (expected scaled_linear or linear)", name);
}

int spacing_parse(const char *name, Spacing *out, McmErr *err) {
  for (int i = 0; i < 3; i++)
    if (!strcmp(name, SPACING_NAMES[i])) return *out = (Spacing)i, 0;
  return mcm_err(err, "unknown timestep spacing \"%s\" (expected leading, trailing or linspace)", name);
}

const char *beta_kind_name(BetaKind k) { return (unsigned)k < 2 ? BETA_NAMES[k] : "?"; }
const char *spacing_name(Spacing sp) { return (unsigned)sp < 3 ? SPACING_NAMES[sp] : "?"; }

/* ------------------------------------------------------------------ timestep lists */

/* Python's round() and numpy's np.round: to nearest, ties to even (rint in the default mode). */
static int round_half_even(double v) { return (int)rint(v); }

int ddim_timesteps(const Schedule *s, int n_steps, int steps_offset, Spacing spacing, int *out, McmErr *err) {
  int T = s->cfg.T;
  if (n_steps < 1 || n_steps > T) return mcm_err(err, "ddim: %d steps (expected 1..%d)", n_steps, T);
  switch (spacing) {
  case SPACING_LEADING: {
    int ratio = T / n_steps;
    for (int i = 0; i < n_steps; i++) out[i] = (n_steps - 1 - i) * ratio + steps_offset;
    break;
  }
  case SPACING_TRAILING: {
    /* numpy's arange(T, 0, −T/n) fills start + i·delta with delta = (start + step) − start;
     * reproducing that keeps the ties of the rounding where diffusers has them (n = 48:
     * 979.5 vs 979.4999…). diffusers' arange also yields n + 1 values (the last −1) for 62
     * step counts such as 61 and 103; mcm takes the first n. */
    double step = -(double)T / n_steps;
    double delta = ((double)T + step) - (double)T;
    for (int i = 0; i < n_steps; i++) out[i] = round_half_even((double)T + i * delta) - 1;
    break;
  }
  case SPACING_LINSPACE: {
    /* np.linspace(0, T−1, n): i·(T−1)/(n−1), the last value exactly T−1; then reversed. */
    double step = n_steps > 1 ? (double)(T - 1) / (n_steps - 1) : 0.0;
    for (int i = 0; i < n_steps; i++) {
      double v = (i == n_steps - 1 && n_steps > 1) ? (double)(T - 1) : i * step;
      out[n_steps - 1 - i] = round_half_even(v);
    }
    break;
  }
  default:
    return mcm_err(err, "ddim: unknown timestep spacing %d", (int)spacing);
  }
  for (int i = 0; i < n_steps; i++)
    if (out[i] < 0 || out[i] >= T)
      return mcm_err(err, "ddim: %d steps with %s spacing and steps_offset %d give timestep %d, outside [0, %d)",
                     n_steps, spacing_name(spacing), steps_offset, out[i], T);
  return 0;
}

int ddim_prev_timestep(const Schedule *s, int t, int n_steps) {
  MCM_CHECK(n_steps >= 1, "ddim_prev_timestep: n_steps %d", n_steps);
  return t - s->cfg.T / n_steps;
}

DdimCoeffs ddim_step_coeffs(const Schedule *s, int t, int t_prev, double eta) {
  MCM_CHECK(t >= 0 && t < s->cfg.T, "ddim_step_coeffs: timestep %d is outside [0, %d)", t, s->cfg.T);
  DdimCoeffs c;
  double ab = schedule_alpha_bar(s, t), abp = schedule_alpha_bar(s, t_prev);
  c.alpha_bar = ab;
  c.alpha_bar_prev = abp;
  /* σ² = η²·(1−ᾱ_prev)/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_prev) (DDIM eq. 16; diffusers _get_variance). */
  double var = (1.0 - abp) / (1.0 - ab) * (1.0 - ab / abp);
  double sigma = eta * sqrt(fmax(var, 0.0));
  double dir = sqrt(fmax(1.0 - abp - sigma * sigma, 0.0));
  /* x_prev = √ᾱp·(x − √(1−ᾱ)ε)/√ᾱ + dir·ε */
  c.cx = sqrt(abp / ab);
  c.ceps = dir - sqrt(abp) * sqrt(1.0 - ab) / sqrt(ab);
  c.cnoise = sigma;
  return c;
}

void x0_from_eps_coeffs(const Schedule *s, int t, double *cx, double *ceps) {
  double ab = schedule_alpha_bar(s, t);
  *cx = 1.0 / sqrt(ab);
  *ceps = -sqrt(1.0 - ab) / sqrt(ab);
}

void add_noise_coeffs(const Schedule *s, int t, double *c0, double *ceps) {
  double ab = schedule_alpha_bar(s, t);
  *c0 = sqrt(ab);
  *ceps = sqrt(1.0 - ab);
}

int lcm_timesteps(int n_steps, int original_steps, int T, double strength, int *out, McmErr *err) {
  if (original_steps < 1 || original_steps > T)
    return mcm_err(err, "lcm: original_steps %d (expected 1..%d)", original_steps, T);
  if (!(strength > 0 && strength <= 1)) return mcm_err(err, "lcm: strength %g (expected a value in (0, 1])", strength);
  int k = T / original_steps;
  int len = (int)(original_steps * strength); /* Python's int(): truncation */
  if (n_steps < 1 || n_steps > original_steps || len / n_steps < 1)
    return mcm_err(err, "lcm: %d steps (expected 1..%d with %d original steps at strength %g)", n_steps,
                   len < original_steps ? len : original_steps, original_steps, strength);
  /* origin grid (1 … len)·k − 1, descending: element j is (len − j)·k − 1. Indices are
   * ⌊i·len/n⌋ as numpy's linspace(0, len, n, endpoint=False) computes them. */
  double step = (double)len / n_steps;
  for (int i = 0; i < n_steps; i++) {
    int j = (int)floor(i * step);
    out[i] = (len - j) * k - 1;
  }
  return 0;
}

void lcm_boundary_scalings(double t, double sigma_data, double timestep_scaling, double *c_skip, double *c_out) {
  double st = t * timestep_scaling, sd2 = sigma_data * sigma_data;
  *c_skip = sd2 / (st * st + sd2);
  *c_out = st / sqrt(st * st + sd2);
}

int distill_grid(int num_ddim, int k, int T, DistillGrid *g, McmErr *err) {
  if (num_ddim < 1 || num_ddim > DISTILL_MAX_GRID)
    return mcm_err(err, "distill grid: %d DDIM steps (expected 1..%d)", num_ddim, DISTILL_MAX_GRID);
  if (k < 1 || (long)num_ddim * k > T)
    return mcm_err(err, "distill grid: skip k = %d with %d DDIM steps does not fit in T = %d (expected k·N <= T)", k,
                   num_ddim, T);
  g->n = num_ddim;
  g->k = k;
  for (int i = 0; i < num_ddim; i++) {
    g->start[i] = (i + 1) * k - 1;
    g->end[i] = g->start[i] - k < 0 ? 0 : g->start[i] - k;
  }
  return 0;
}
