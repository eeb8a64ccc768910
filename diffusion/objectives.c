/* Training objectives (see objectives.h for the formulas). */
#include "diffusion/objectives.h"

#include <stdlib.h>

/* UNet on x at host timesteps t (one per row). */
static Tensor *unet_at(Ctx *ctx, Unet *net, Tensor *x, const int *t, Tensor *cond) {
  const int64_t B = x->shape[0];
  float *tf = ctx_alloc_host(ctx, (size_t)B * sizeof *tf);
  for (int64_t b = 0; b < B; b++) tf[b] = (float)t[b];
  Tensor *tt = tensor_new(ctx, DT_F32, SHAPE(B));
  tensor_from_host_f32(ctx, tt, tf);
  return unet_forward(ctx, net, x, tt, cond);
}

Tensor *teacher_objective(Ctx *ctx, Unet *net, const Schedule *s, Tensor *x0, Tensor *noise, const int *t,
                          Tensor *cond) {
  CHECK_SAME_SHAPE("teacher_objective", x0, noise);
  MCM_CHECK(cond->ndim == 2 && cond->shape[0] == x0->shape[0], "teacher_objective: cond %s for x0 %s",
            TENSOR_SHAPE_STR(cond), TENSOR_SHAPE_STR(x0));
  for (int64_t b = 0; b < x0->shape[0]; b++)
    MCM_CHECK(t[b] >= 0 && t[b] < s->cfg.T, "teacher_objective: t[%lld] = %d outside [0, %d)", (long long)b, t[b],
              s->cfg.T);
  Tensor *xt = diffusion_add_noise(ctx, s, x0, noise, t);
  Tensor *eps = unet_at(ctx, net, xt, t, cond);
  return op_mse(ctx, eps, noise);
}

DistillOut distill_objective(Ctx *ctx, Unet *student, Unet *target, Unet *teacher, const Schedule *s,
                             const DistillOpts *o, Tensor *x0, Tensor *noise, const int *index, Tensor *cond,
                             Tensor *uncond) {
  const char *op = "distill_objective";
  CHECK_SAME_SHAPE(op, x0, noise);
  CHECK_SAME_SHAPE(op, cond, uncond);
  const int64_t B = x0->shape[0];
  MCM_CHECK(cond->ndim == 2 && cond->shape[0] == B, "%s: cond %s for x0 %s", op, TENSOR_SHAPE_STR(cond), TENSOR_SHAPE_STR(x0));
  int *start = ctx_alloc_host(ctx, (size_t)B * sizeof *start), *end = ctx_alloc_host(ctx, (size_t)B * sizeof *end);
  int *start2 = ctx_alloc_host(ctx, (size_t)(2 * B) * sizeof *start2);
  for (int64_t b = 0; b < B; b++) {
    MCM_CHECK(index[b] >= 0 && index[b] < o->grid->n, "%s: index[%lld] = %d outside [0, %d)", op, (long long)b,
              index[b], o->grid->n);
    start[b] = start2[b] = start2[B + b] = o->grid->start[index[b]];
    end[b] = o->grid->end[index[b]];
  }
  const float w = o->guidance_w;

  bool was = ctx_set_grad(ctx, false);
  Tensor *xs = diffusion_add_noise(ctx, s, x0, noise, start); /* (B, C, H, W) */

  /* Teacher: conditional and unconditional rows in one batch, then the guided DDIM step. */
  Tensor *xx = op_concat(ctx, (Tensor *[]){xs, xs}, 2, 0);
  Tensor *cc = op_concat(ctx, (Tensor *[]){cond, uncond}, 2, 0);
  Tensor *eps2 = unet_at(ctx, teacher, xx, start2, cc);
  Tensor *eps_c = op_slice(ctx, eps2, 0, 0, B), *eps_u = op_slice(ctx, eps2, 0, B, B);
  Tensor *x0_c = diffusion_x0_from_eps(ctx, s, xs, eps_c, start);
  Tensor *x0_u = diffusion_x0_from_eps(ctx, s, xs, eps_u, start);
  Tensor *x0_hat = op_add_scaled(ctx, x0_c, x0_u, 1.0f + w, -w);
  Tensor *eps_hat = op_add_scaled(ctx, eps_c, eps_u, 1.0f + w, -w);
  Tensor *x_prev = diffusion_ddim_to(ctx, s, x0_hat, eps_hat, end);

  /* Target: the EMA student at the teacher's x_{t_n}. */
  Tensor *eps_e = unet_at(ctx, target, x_prev, end, cond);
  Tensor *x0_e = diffusion_x0_from_eps(ctx, s, x_prev, eps_e, end);
  Tensor *tgt = diffusion_cm_boundary(ctx, x_prev, x0_e, end, o->sigma_data, o->timestep_scaling);
  ctx_set_grad(ctx, was);

  /* Student at x_{t_{n+k}}. */
  Tensor *eps_s = unet_at(ctx, student, xs, start, cond);
  Tensor *x0_s = diffusion_x0_from_eps(ctx, s, xs, eps_s, start);
  Tensor *pred = diffusion_cm_boundary(ctx, xs, x0_s, start, o->sigma_data, o->timestep_scaling);
  Tensor *loss = o->distance == DISTANCE_HUBER ? op_pseudo_huber(ctx, pred, tgt, o->huber_c) : op_mse(ctx, pred, tgt);
  return (DistillOut){loss, pred, tgt};
}
