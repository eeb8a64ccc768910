/* [train] mode = vae: the AutoencoderKL (models/vae.h) trained on prepared log-mels, the
 * first stage of the demo model. The trainer (trainer.c) owns the loop, the optimizer, the
 * gradient clipping, the EMA, checkpoints, resume, logs and data parallelism; this file owns
 * the network, the objective and the exported weights.
 *
 * Objective, per process batch of mels x (B, 1, H, W) (H × W = frames × mel bins):
 *   mean, logvar = vae_encode(x)                        (B, L, H/f, W/f)
 *   z  = mean + exp(½·clamp(logvar, −30, 20)) ⊙ ε       ε ~ N(0, 1) (the reparameterisation:
 *                                                        gradients flow to mean and logvar)
 *   x̂  = vae_decode(z)                                  (B, 1, H, W)
 *   recon = mean over the B·H·W mel values of |x̂ − x|
 *   kl    = mean over the B·L·(H/f)·(W/f) latent values of ½(mean² + σ² − 1 − ln σ²),
 *           σ² = exp(clamp(logvar, −30, 20))           (KL(N(mean, σ²) ‖ N(0, 1)) per element)
 *   L  = recon + vae_train.kl_weight · kl
 * Both terms are per-element means, so kl_weight is not the weight of LDM's summed form
 * (which divides the per-image sums by the batch only); 1e-6 keeps the latent close to a
 * plain autoencoder's, as MusicLDM's small KL weight does.
 *
 * Scale factor. The UNet works on z·s with s = 1/std(z) (MusicLDM's scale_by_std): the
 * exported weights' scaling_factor is 1/std of the sampled latents of the first
 * vae_train.scale_batches batches of the training loader's epoch 0 (its seed run.seed,
 * batch train.batch_size, one process), encoded by the exported weights, ε drawn from key
 * run.seed ^ VAE_SCALE_KEY from counter block 0 on, one draw per batch in order; std is the
 * unbiased (n − 1) standard deviation of all their values pooled, as torch.std. It neither
 * reads nor moves the training RNG or loader, so a run that exports gives the same losses as
 * one that does not.
 *
 * Export: <run.out_dir>/vae.h5, written atomically at every checkpoint and at the end, a
 * converted-style weights file (component "vae", a diffusers `config` with the sizes, the
 * native mel frames as sample_size and scaling_factor) that vae_load, ./prepare --vae and
 * ./infer read as they read tools/convert_diffusers.py's. The weights are the EMA's with
 * vae_train.ema_decay > 0, else the trained ones. */
#pragma once
#include "core/config.h"
#include "data/loader.h"
#include "models/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VAE_SCALE_KEY 0x5343414c45ull /* "SCALE": the scale's noise never meets the training's */
#define VAE_EXPORT_NAME "vae.h5"

typedef struct VaeLoss {
  Tensor *loss;   /* (1) recon + kl_weight · kl, on the tape */
  float recon, kl; /* host copies of the two terms */
} VaeLoss;

/* The objective above for x (B, in_channels, H, W) and ε (B, L, H/f, W/f). */
VaeLoss vae_objective(Ctx *ctx, Vae *vae, Tensor *x, Tensor *eps, float kl_weight);

/* 1/std of the sampled latents over the first n_batches batches of loader (read from its
 * current position; the caller seeks or makes a fresh one), ε from key `seed` at block 0 on.
 * Runs without the tape; restores ctx's RNG position. -1 with err on a read error or a
 * zero / non-finite std. */
int vae_latent_scale(Ctx *ctx, Vae *vae, Loader *loader, int n_batches, uint64_t seed, float *scale, McmErr *err);

typedef struct VaeTrain VaeTrain;

/* The trained VAE in ps (trainable) and the exported copy in ps_ema (not trainable), both
 * under prefix "": from vae.weights when set (its sizes, its weights: fine-tuning), else
 * from [vae_train]'s sizes with diffusers' initialisation from ctx's RNG. Checks the
 * shards (si) against the VAE and the configuration: one clear line in err, NULL. */
VaeTrain *vae_train_create(Ctx *ctx, const Config *cfg, ShardInfo si, ParamSet *ps, ParamSet *ps_ema, McmErr *err);
void vae_train_destroy(VaeTrain *v);
/* (L, H/f, W/f) of one latent row. */
void vae_train_latent_shape(const VaeTrain *v, int *L, int *h, int *w);
/* The loss of one batch (its mels) with noise eps (B, L, h, w). */
VaeLoss vae_train_loss(Ctx *ctx, VaeTrain *v, const Batch *b, Tensor *eps);
/* Computes the scale with the exported weights and writes <run.out_dir>/vae.h5 (rank 0). */
int vae_train_export(Ctx *ctx, VaeTrain *v, McmErr *err);
/* The scaling_factor of the last export (0 before one). */
float vae_train_scale(const VaeTrain *v);

#ifdef __cplusplus
}
#endif
