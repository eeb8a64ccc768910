/* Samplers: the teacher's DDIM with classifier-free guidance, the student's LCM multistep
 * consistency sampling, and long pieces by fused overlapping windows (MultiDiffusion's
 * "shared restricted process" along the latent time axis). Plus the per-sample tensor
 * helpers the distillation trainer needs (noising, x̂0, the DDIM solver step, boundary
 * scalings).
 *
 * Everything here is written with ops (op_add_scaled, op_slice, op_concat, …), never with
 * loops over tensor data, so the same code runs on the CPU and the GPU; noise comes from
 * rng_normal on the context (the same numbers on both). Sizes: B batch, C latent channels
 * (8), H latent time frames (256 native), W latent mel bins (16), D conditioning dim (512).
 *
 * The denoiser. An EpsFn returns ε̂ (B, C, H, W) for x (B, C, H, W) at timesteps t (B host
 * values, one per row; the samplers pass the same value for every row) with conditioning
 * cond (B, D). ./infer wraps the UNet in one. Samplers call it with grad mode off.
 *
 * Guidance. sample_ddim takes w in the LCM form ε̂ = (1+w)·ε(c) − w·ε(∅), the form of the
 * distillation recipe (MusicCM trains with w = 2). The usual Imagen/diffusers form
 * ε(∅) + g·(ε(c) − ε(∅)) is the same with w = g − 1. MusicLDM's own default, scale 2.0,
 * is Imagen form, i.e. w = 1. ./infer's --guidance therefore takes g (Imagen form, what
 * MusicLDM and diffusers users know, default 2.0) and passes w = g − 1; the trainer's
 * guidance key takes w. cond and uncond run as one batch of 2B. w = 0 skips the
 * unconditional half (uncond may then be NULL).
 *
 * Long form. The time axis of x (total frames H) is covered by overlapping windows of
 * `window` frames, starting every `stride` frames, the last one aligned to the end
 * (window_layout). Every step all windows of all rows run as one batch through fn (or in
 * chunks of max_batch rows), and their ε̂ are fused into one global ε̂ by the weighted
 * per-frame average Σ_i w_i·ε̂_i / Σ_i w_i, which is the least-squares solution
 * argmin_J Σ_i ‖W_i ⊗ (crop_i(J) − ε̂_i)‖² (MultiDiffusion eq. 5, W_i = 1 for FUSE_AVERAGE).
 * The step then runs once on the global latent, and noise (x_T, the CM's fresh noise
 * between steps, DDIM's η noise) is drawn once for the global latent.
 *   Why ε̂: MultiDiffusion fuses the step's output and StreamMultiDiffusion the denoised
 * estimate; each of those (x̂0, the LCM denoised c_skip·x + c_out·x̂0, the DDIM output) is
 * an affine function of ε̂ with coefficients shared by every window at a given step, and
 * the fusion weights sum to 1 at every frame, so fusing ε̂ gives exactly the same
 * result in exact arithmetic, with one fusion per step. It also keeps the noise global,
 * which fusing whole stochastic steps would not (averaging m independent noises shrinks
 * their std to 1/√m). With one window covering everything, the result is bit-identical
 * to the single-window sampler (tested).
 *
 * Memory. Each step allocates in the context's per-step arena. For many steps at full size,
 * give opts.state, a persistent tensor of x's shape: x is kept there and ctx_step_reset()
 * runs after every step, so memory stays at one step's worth. Then x_T, cond and uncond
 * (and anything fn's user data points to) must be persistent too; this is checked. */
#pragma once
#include "diffusion/schedule.h"
#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ε̂ (B, C, H, W) for x (B, C, H, W), t (B) host timesteps, cond (B, D). */
typedef Tensor *(*EpsFn)(Ctx *ctx, void *user, Tensor *x, const float *t, Tensor *cond);

/* Called after step i (1-based) of n; for progress bars. */
typedef void (*SampleProgressFn)(void *user, int step, int n_steps);

typedef struct SamplerOpts {
  double eta;              /* DDIM noise (0: deterministic, mcm's teacher default; the original used 1) */
  int original_steps;      /* LCM origin grid: 50 */
  double sigma_data;       /* LCM boundary scalings: 0.5 */
  double timestep_scaling; /* LCM boundary scalings: 10 */
  /* 1: x_in is the initial noise x_T. In (0, 1): x_in is a clean latent (variation / style
   * transfer), noised with fresh ctx noise to the first timestep of the shortened schedule
   * (diffusers' img2img: DDIM keeps the last ⌊n·strength⌋ of its n timesteps; LCM passes
   * strength to lcm_timesteps). */
  double strength;
  SampleProgressFn progress;
  void *progress_user;
  Tensor *state; /* optional: persistent (B, C, H, W) buffer, see "Memory" above */
} SamplerOpts;

/* eta 0, original_steps 50, sigma_data 0.5, timestep_scaling 10, strength 1, no progress,
 * no state. */
SamplerOpts sampler_opts_default(void);

/* Teacher DDIM (ε-prediction) with guidance w (LCM form, see above) over `steps` steps of
 * the schedule's spacing and steps_offset (MusicLDM: leading, 1). x_in (B, C, H, W),
 * cond and uncond (B, D). Returns x_0 (B, C, H, W) (opts->state when given); NULL with err
 * on a bad steps/strength. */
Tensor *sample_ddim(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond, Tensor *uncond,
                    float guidance_w, int steps, const SamplerOpts *opts, McmErr *err);

/* LCM multistep consistency sampling (distillation.md §1.8): timesteps lcm_timesteps(steps)
 * (4 steps: 999, 759, 499, 259); at each t: x̂0 from ε̂, denoised = c_skip·x + c_out·x̂0,
 * then, unless it was the last step, x = √ᾱ_next·denoised + √(1−ᾱ_next)·z with fresh z
 * from the ctx RNG. Returns the last denoised (B, C, H, W); NULL with err on bad steps. */
Tensor *sample_cm(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond, int steps,
                  const SamplerOpts *opts, McmErr *err);

/* ------------------------------------------------------------------ long form */

#define WINDOWS_MAX 4096
typedef struct Windows {
  int total, window, n;
  int start[WINDOWS_MAX]; /* ascending; start[n−1] = total − window */
} Windows;

/* Windows of `window` frames every `stride` frames over `total` frames, the last one moved
 * to end at `total` (dropped if it would repeat the one before). window ≥ total gives one
 * window of `total` frames. -1 with err when a size is < 1, stride > window (frames would be
 * left uncovered) or more than WINDOWS_MAX windows are needed. */
int window_layout(int total, int window, int stride, Windows *w, McmErr *err);

typedef enum FuseMode {
  FUSE_AVERAGE = 0,    /* W_i = 1: the plain overlap average (MultiDiffusion) */
  FUSE_TRIANGULAR = 1, /* W_i(p) = min(p − s_i + 1, s_i + window − p): ramps toward window edges */
} FuseMode;
int fuse_mode_parse(const char *name, FuseMode *out, McmErr *err); /* "average" | "triangular" */

typedef struct LongForm {
  int window;    /* frames per window: 256 (10.24 s) for MusicLDM */
  int stride;    /* frames between window starts: 64 by default */
  FuseMode fuse; /* FUSE_AVERAGE by default */
  int max_batch; /* rows per fn call (windows × B [× 2 with guidance]); 0: all in one call */
} LongForm;

/* An EpsFn over the whole time axis built from one over windows: pass windowed_eps as fn
 * and a WindowedEps as user. x (B, C, H_total, W) is cut into layout's windows (H_total
 * must equal layout.total), run as a batch of n·B rows (window-major: rows i·B … i·B+B−1
 * are window i), and the outputs fused as described above. */
typedef struct WindowedEps {
  EpsFn fn;
  void *user;
  Windows layout;
  FuseMode fuse;
  int max_batch;
} WindowedEps;
Tensor *windowed_eps(Ctx *ctx, void *user, Tensor *x, const float *t, Tensor *cond);

/* The fusion alone: preds[i] (B, C, window, W) for window i -> (B, C, total, W). */
Tensor *fuse_windows(Ctx *ctx, const Windows *w, FuseMode fuse, Tensor *const *preds);

/* sample_ddim / sample_cm over x_in (B, C, H_total, W) with the time axis cut into
 * windows (H_total is read from x_in). NULL with err on a bad layout, steps or strength. */
Tensor *sample_ddim_long(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond,
                         Tensor *uncond, float guidance_w, int steps, const LongForm *lf, const SamplerOpts *opts,
                         McmErr *err);
Tensor *sample_cm_long(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond, int steps,
                       const LongForm *lf, const SamplerOpts *opts, McmErr *err);

/* ------------------------------------------------------------------ single steps
 * One step of each sampler on tensors, as diffusers' schedulers compute them (the samplers
 * and the fixture tests use these). x, eps, z (B, C, H, W). */

/* DDIM from t to t_prev (t_prev < 0: final ᾱ): cx·x + ceps·ε̂ (+ cnoise·z when eta > 0;
 * z may be NULL when eta = 0). */
Tensor *ddim_step(Ctx *ctx, const Schedule *s, Tensor *x, Tensor *eps, int t, int t_prev, double eta, Tensor *z);

/* LCM step at t: returns prev_sample, the next x (√ᾱ_next·denoised + √(1−ᾱ_next)·z), or
 * denoised itself when t_next < 0 (the last step; z unused). *denoised (if not NULL)
 * receives c_skip·x + c_out·x̂0. */
Tensor *cm_step(Ctx *ctx, const Schedule *s, Tensor *x, Tensor *eps, int t, int t_next, Tensor *z,
                double sigma_data, double timestep_scaling, Tensor **denoised);

/* ------------------------------------------------------------------ per-sample helpers
 * For the trainer: t holds one timestep per row of the batch (x->shape[0] values), which
 * may differ. Recorded on the tape (gradients flow to every tensor argument); coefficients
 * are computed in double and rounded once to x's dtype. */

/* x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε */
Tensor *diffusion_add_noise(Ctx *ctx, const Schedule *s, Tensor *x0, Tensor *eps, const int *t);
/* x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t */
Tensor *diffusion_x0_from_eps(Ctx *ctx, const Schedule *s, Tensor *x, Tensor *eps, const int *t);
/* LCM's DDIMSolver.ddim_step (η = 0): x_prev = √ᾱ_prev·x̂0 + √(1−ᾱ_prev)·ε̂ at t_prev
 * (t_prev < 0: final ᾱ). */
Tensor *diffusion_ddim_to(Ctx *ctx, const Schedule *s, Tensor *x0, Tensor *eps, const int *t_prev);
/* f = c_skip(t)·x + c_out(t)·x̂0 (lcm_boundary_scalings). */
Tensor *diffusion_cm_boundary(Ctx *ctx, Tensor *x, Tensor *x0, const int *t, double sigma_data,
                              double timestep_scaling);

#ifdef __cplusplus
}
#endif
