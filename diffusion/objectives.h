/* Training objectives: one function per loss, on tensors, with every random draw (latents,
 * noise, timesteps, dropout) made by the caller and passed in. The trainer draws them from
 * the context's RNG; the fixture test (tests/test_train_step.c) passes the values exported
 * by an independent PyTorch implementation (tests/fixtures/train_step.py) instead.
 *
 * Sizes: B batch, C latent channels, H×W latent time × bins, D text-embedding size.
 *
 * Teacher (MusicLDM's own objective, ε-prediction):
 *   x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε,   L = mean (UNet(x_t, t, c) − ε)²
 *   (classifier-free-guidance dropout replaces rows of c by the unconditional embedding
 *   before the call: the caller builds c.)
 *
 * Consistency distillation (LCM's DDIMSolver recipe, shared/reference/distillation.md §1),
 * per row b with grid index n_b: s = start[n_b] = t_{n+k}, e = end[n_b] = t_n,
 *   x_s     = √ᾱ_s·x0 + √(1−ᾱ_s)·ε
 *   teacher  ε_c, ε_u = Teacher([x_s ‖ x_s], [s ‖ s], [c ‖ ∅])     one batch of 2B, no grad
 *            x̂0 = (1+w)·x0(ε_c) − w·x0(ε_u),  ε̂ = (1+w)·ε_c − w·ε_u  (x0(ε) at s)
 *            x_e = √ᾱ_e·x̂0 + √(1−ᾱ_e)·ε̂                               (one DDIM step, η = 0)
 *   target   f⁻ = c_skip(e)·x_e + c_out(e)·x0(EMA(x_e, e, c))          no grad
 *   student  f  = c_skip(s)·x_s + c_out(s)·x0(Student(x_s, s, c))     (model_pred)
 *   L = mean pseudo-Huber(f, f⁻; c) or mean (f − f⁻)²
 * Gradients reach the student's parameters only; the teacher and target run in no-grad
 * mode and keep no activations. */
#pragma once
#include "diffusion/sampler.h"
#include "diffusion/schedule.h"
#include "models/unet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum Distance { DISTANCE_L2 = 0, DISTANCE_HUBER = 1 } Distance;

/* Scalar (1) ε-prediction MSE. x0, noise (B, C, H, W); t (B) host timesteps in [0, T);
 * cond (B, D). Gradients flow to net's trainable parameters (and to x0/cond if they
 * require them). */
Tensor *teacher_objective(Ctx *ctx, Unet *net, const Schedule *s, Tensor *x0, Tensor *noise, const int *t,
                          Tensor *cond);

typedef struct DistillOpts {
  const DistillGrid *grid;
  float guidance_w;        /* w in (1+w)·cond − w·uncond */
  Distance distance;
  float huber_c;
  double sigma_data;       /* LCM boundary scalings: 0.5 */
  double timestep_scaling; /* 10 */
} DistillOpts;

typedef struct DistillOut {
  Tensor *loss;       /* (1) */
  Tensor *model_pred; /* (B, C, H, W) the student's boundary-scaled x0 prediction at s, on the tape */
  Tensor *target;     /* (B, C, H, W) f⁻, no grad */
} DistillOut;

/* x0, noise (B, C, H, W); index (B) grid indices in [0, grid->n); cond, uncond (B, D). */
DistillOut distill_objective(Ctx *ctx, Unet *student, Unet *target, Unet *teacher, const Schedule *s,
                             const DistillOpts *o, Tensor *x0, Tensor *noise, const int *index, Tensor *cond,
                             Tensor *uncond);

#ifdef __cplusplus
}
#endif
