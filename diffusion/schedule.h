/* Diffusion schedules: pure arithmetic on the host, in double precision.
 *
 * One discrete DDPM schedule (T = 1000 training timesteps) serves the teacher's DDIM
 * sampler, the LCM multistep sampler of the student and the distillation trainer:
 *
 *   betas        scaled_linear: linspace(√β_start, √β_end, T)²   (MusicLDM: 0.0015 → 0.0195;
 *                                 the original LDM's "linear" is this same formula)
 *                linear:        linspace(β_start, β_end, T)
 *   ᾱ_t          Π_{s ≤ t} (1 − β_s), t = 0 … T−1; ᾱ_{−1} = final_alpha_cumprod
 *                (1 with set_alpha_to_one, else ᾱ_0: MusicLDM's scheduler says false)
 *   add_noise    x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε
 *   x̂0 from ε    x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t                       (ε-prediction)
 *   DDIM step    x_prev = √ᾱ_prev·x̂0 + √(1−ᾱ_prev−σ²)·ε̂ + σ·z,
 *                σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev))          (η = 0: no z)
 *   LCM scalings s = timestep_scaling·t, c_skip = σ_d²/(s²+σ_d²), c_out = s/√(s²+σ_d²)
 *
 * The timestep lists reproduce diffusers 0.33.1 (DDIMScheduler.set_timesteps,
 * LCMScheduler.set_timesteps) and the trainer's grid reproduces the LCM distillation
 * script's DDIMSolver; tests/test_schedule.c checks all of them against fixtures made by
 * those classes (tests/fixtures/schedulers.py).
 *
 * Precision: diffusers builds betas and ᾱ in fp32 (a cumulative product of 1000 fp32
 * factors, ~1e-6 relative drift); the original LDM code builds them in float64 and rounds
 * to fp32 once. mcm follows the original: everything here is double, and the samplers
 * round each combined coefficient to fp32 once. */
#pragma once
#include <stdbool.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum BetaKind { BETA_SCALED_LINEAR = 0, BETA_LINEAR = 1 } BetaKind;
/* How DDIM picks n of the T timesteps (diffusers' timestep_spacing, Lin et al. 2023 Table 2). */
typedef enum Spacing { SPACING_LEADING = 0, SPACING_TRAILING = 1, SPACING_LINSPACE = 2 } Spacing;

/* The scheduler configuration (diffusers' scheduler_config.json fields). */
typedef struct ScheduleConfig {
  BetaKind kind;
  double beta_start, beta_end;
  int T;                 /* num_train_timesteps */
  Spacing spacing;       /* DDIM timestep_spacing */
  int steps_offset;      /* added to "leading" timesteps */
  bool set_alpha_to_one; /* ᾱ after the last step: 1, or ᾱ_0 when false */
} ScheduleConfig;

/* MusicLDM's released scheduler: scaled_linear 0.0015 → 0.0195, T 1000, leading spacing,
 * steps_offset 1, set_alpha_to_one false (ε-prediction, clip_sample false). */
ScheduleConfig schedule_config_musicldm(void);

typedef struct Schedule {
  ScheduleConfig cfg;
  double *betas;          /* (T) */
  double *alphas_cumprod; /* (T) ᾱ_t */
  double final_alpha_cumprod;
} Schedule;

/* Fills s from cfg (allocates; free with schedule_free). -1 with one line in err on a bad
 * config: T < 1 or > 100000, betas outside (0, 1), beta_end < beta_start. */
int schedule_init(Schedule *s, const ScheduleConfig *cfg, McmErr *err);
void schedule_free(Schedule *s);

/* ᾱ_t for t in [0, T); t < 0 gives final_alpha_cumprod (the step after the last). */
double schedule_alpha_bar(const Schedule *s, int t);

/* Names for configuration files: "scaled_linear" | "linear", "leading" | "trailing" |
 * "linspace". 0, or -1 with err naming the accepted values. */
int beta_kind_parse(const char *name, BetaKind *out, McmErr *err);
int spacing_parse(const char *name, Spacing *out, McmErr *err);
const char *beta_kind_name(BetaKind k);
const char *spacing_name(Spacing sp);

/* DDIMScheduler.set_timesteps: out[0 … n_steps) descending (the order of sampling).
 *   leading:  (i·⌊T/n⌋ for i < n) reversed, + steps_offset  (MusicLDM 50 steps: 981 … 1)
 *   trailing: round(T − i·T/n) − 1 for i < n               (999, …)
 *   linspace: round(linspace(0, T−1, n)) reversed
 * -1 with err when n_steps is outside [1, T] or a timestep would leave [0, T). */
int ddim_timesteps(const Schedule *s, int n_steps, int steps_offset, Spacing spacing, int *out, McmErr *err);

/* The timestep DDIMScheduler.step steps to from t: t − ⌊T/n_steps⌋ (whatever the spacing,
 * as diffusers does); negative means "after the last step" (ᾱ_prev = final_alpha_cumprod). */
int ddim_prev_timestep(const Schedule *s, int t, int n_steps);

/* x_prev = cx·x_t + ceps·ε̂ + cnoise·z for one DDIM step from t to t_prev with ε-prediction
 * (cnoise = 0 when eta = 0). Equivalent to √ᾱ_prev·x̂0 + √(1−ᾱ_prev−σ²)·ε̂ + σ·z with the x̂0
 * above, but folded in double so that no fp32 intermediate (x̂0 at t = 999 is x·84) rounds. */
typedef struct DdimCoeffs {
  double cx, ceps, cnoise;
  double alpha_bar, alpha_bar_prev; /* ᾱ_t, ᾱ_prev (for callers that want the pieces) */
} DdimCoeffs;
DdimCoeffs ddim_step_coeffs(const Schedule *s, int t, int t_prev, double eta);

/* x̂0 = cx·x_t + ceps·ε̂: cx = 1/√ᾱ_t, ceps = −√(1−ᾱ_t)/√ᾱ_t. */
void x0_from_eps_coeffs(const Schedule *s, int t, double *cx, double *ceps);
/* add_noise: x_t = c0·x0 + ceps·ε with c0 = √ᾱ_t, ceps = √(1−ᾱ_t). */
void add_noise_coeffs(const Schedule *s, int t, double *c0, double *ceps);

/* LCMScheduler.set_timesteps(n_steps, original_inference_steps, strength): the origin grid
 * (1 … ⌊original_steps·strength⌋)·⌊T/original_steps⌋ − 1, reversed, sampled at indices
 * ⌊linspace(0, len, n_steps, endpoint=False)⌋. With 50 original steps and strength 1:
 *   1 → 999;  2 → 999, 499;  4 → 999, 759, 499, 259;  8 → 999, 879, … 139.
 * -1 with err when n_steps < 1, original_steps outside [1, T], strength outside (0, 1], or
 * n_steps is larger than the origin grid. */
int lcm_timesteps(int n_steps, int original_steps, int T, double strength, int *out, McmErr *err);

/* LCM boundary-condition scalings at discrete timestep t (get_scalings_for_boundary_
 * condition_discrete): s = timestep_scaling·t, c_skip = σ_d²/(s²+σ_d²), c_out = s/√(s²+σ_d²).
 * mcm's defaults: sigma_data 0.5, timestep_scaling 10. t = 0 gives c_skip 1, c_out 0. */
void lcm_boundary_scalings(double t, double sigma_data, double timestep_scaling, double *c_skip, double *c_out);

/* The consistency-distillation grid (LCM's DDIMSolver): index n ∈ [0, num_ddim) picks
 *   start[n] = t_{n+k} = (n+1)·k − 1          (k = 20, N = 50: 19, 39, …, 999)
 *   end[n]   = t_n     = max(start[n] − k, 0) (0, 19, …, 979)
 * The trainer draws n uniformly per sample, noises x0 to start[n], takes one guided teacher
 * DDIM step to end[n] (ᾱ_prev = ᾱ[end[n]]: index 0 steps to ᾱ_0, as DDIMSolver does) and
 * evaluates the boundary scalings at both ends. */
#define DISTILL_MAX_GRID 1000
typedef struct DistillGrid {
  int n; /* num_ddim */
  int k; /* skip */
  int start[DISTILL_MAX_GRID];
  int end[DISTILL_MAX_GRID];
} DistillGrid;
/* -1 with err when num_ddim is outside [1, DISTILL_MAX_GRID], k < 1, or num_ddim·k > T. */
int distill_grid(int num_ddim, int k, int T, DistillGrid *g, McmErr *err);

#ifdef __cplusplus
}
#endif
