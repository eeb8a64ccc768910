/* The trainer: [train] mode = distill (MusicCM's latent consistency distillation), teacher
 * (MusicLDM's ε-prediction objective; with [text] joint a small text tower trains with it:
 * diffusion/text_joint.h, checkpoint groups text/ and text_ema/), vae (diffusion/train_vae.h)
 * or vocoder (diffusion/train_vocoder.h), from a resolved Config, on one process or one rank
 * of a data-parallel run (kernels/comm.h). The sections below describe distill and teacher;
 * the other modes swap the network and objective and reuse the rest.
 *
 * Set-up (trainer_create) checks everything a user can get wrong before any long work: the
 * mode and its options, the run and checkpoint directories (created, must be writable),
 * the shards (not empty, latents and text embeddings present, made with the configured mel
 * front end and latent size), encoders.h5 (the unconditional embedding and the latent
 * scale), the teacher / student / VAE weights (present, the configured shapes). Then it
 * resumes from the newest checkpoint of checkpoint.dir, if any (TRAIN_RESUME_AUTO).
 *
 * A step (trainer_step), per process batch B:
 *   x0     = (mean + exp(½·clamp(logvar))·ε)·scale from the shard's VAE moments (vae_sample)
 *   distill: index n ~ U{0..N−1}, noise ε ~ N(0, I), distill_objective (objectives.h)
 *   teacher: t ~ U{0..999}, each row's text embedding replaced by the unconditional one with
 *            probability train.cond_dropout, teacher_objective
 *   with train.adversarial (distill): the student's boundary-scaled x̂0 ÷ scale, decoded by
 *            the frozen VAE (gradients flow through it to the student), is the fake mel; the
 *            clip's prepared mel is the real one; L = L_G + λ·L_distill (adversarial.h's
 *            generator loss with c = [text ‖ AudioMAE cls of the real mel]); after the
 *            backward, the heads' step on the same fake, detached (hinge + R1, their AdamW,
 *            their gradients averaged over ranks through the grad hook)
 *   backward, with the gradients' mean over ranks in buckets started during it as they
 *   become final (train.allreduce_bucket_mb, kernels/grad_sync.h); clip to train.grad_clip
 *   (global norm); a non-finite loss or norm skips the update (counted; train.nan_tolerance
 *   in a row stop the run); AdamW at the scheduled lr; EMA update (distill: the target, μ = train.ema_decay;
 *   teacher: the sampling EMA, μ = train.teacher_ema_decay).
 * Random draws, in this order per step: the latent sample, then the index / timesteps (and
 * the dropout draws), then the noise, all from the context's counter-based RNG with seed
 * run.seed. Each is drawn for the whole global batch (world·B rows) on every rank, and a
 * rank keeps the rows of its samples (k·world + rank, the loader's split), so W ranks of
 * batch B see exactly the numbers of one process of batch W·B: data parallelism changes
 * only the order of the gradient sum. The data order comes from the loader (its own
 * stream, the same on every rank).
 *
 * Checkpoints: checkpoint.dir/ckpt_<step>.h5, written atomically (a temporary name, fsync,
 * rename: a file cut off mid-write keeps its .tmp name and is never read), every
 * checkpoint.every steps, at the last step and on SIGTERM/SIGINT; the newest checkpoint.keep
 * are kept. Each holds the student ("student/<param>"), its EMA ("ema/<param>"), the AdamW
 * state ("opt_student/..."), the heads and their optimizer ("adv/", with the
 * discriminator), the vocoder's discriminators and their optimizer ("disc/", "opt_disc", with
 * train.mode = vocoder and train.adversarial), the step, the RNG position, the loader position, the NaN
 * counters and the resolved configuration. Resuming restores all of it, so a resumed CPU run
 * gives bit-identical losses to an uninterrupted one.
 *
 * Logs (rank 0): a line every run.log_every steps on stdout, and the same values as JSON
 * lines in run.out_dir/log.jsonl: step, loss, grad_norm, lr, samples_per_s, skipped, world,
 * flops_per_step, flops_bf16_per_step (the frozen networks under train.precision = bf16),
 * tflops_per_device, mem_persistent_bytes and mem_activation_peak_bytes (this rank's
 * parameters, gradients, optimizer state and workspaces; the activation arena's high water),
 * and mfu, peak_tflops, peak_tflops_bf16 on a GPU of known peak (MFU weighs each FLOP by the
 * peak of its precision); distill,
 * g_loss, d_real, d_fake, r1, d_acc with the discriminator; mel, g_loss, fm, d_real, d_fake
 * with the vocoder's; allreduce_buckets and allreduce_overlapped, the buckets of the step's
 * gradient averaging and how many of them started before backward ended, with several ranks
 * and buckets).
 *
 * Samples (rank 0, sample.every > 0): every sample.every steps the EMA weights are copied
 * into the UNet of an ./infer bundle (sample.bundle; its UNet must have the same parameters)
 * and each prompt of sample.prompts is sampled (distill: sample.steps consistency steps;
 * teacher: DDIM) with seed sample.seed + i, written as WAV and mel PNG under
 * run.out_dir/samples/step_<step>/. The training RNG position is restored afterwards, so a
 * run with samples gives the same losses as one without. */
#pragma once
#include "core/config.h"
#include "kernels/context.h"
#include "models/unet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum TrainResume {
  TRAIN_RESUME_AUTO = 0, /* resume from the newest checkpoint if there is one */
  TRAIN_RESUME_REQUIRE,  /* --resume: there must be one */
  TRAIN_RESUME_FRESH,    /* --fresh: there must be none */
} TrainResume;

typedef struct TrainerOptions {
  TrainResume resume;
  bool quiet; /* no log lines on stdout (the JSON log is still written) */
} TrainerOptions;

/* train.mode = vocoder reports its terms in the same fields: distill = the weighted mel L1,
 * g_loss = the multi-resolution STFT term (quick start) or the least-squares GAN term, and
 * with the discriminators fm, d_real and d_fake (train_vocoder.h). */
typedef struct StepStats {
  double loss;      /* mean over ranks: L = L_adv + λ·L_distill with the discriminator, else L_distill */
  double distill, g_loss;               /* the two terms (g_loss NaN without the discriminator) */
  double d_real, d_fake, r1, d_acc;     /* the heads' step (0 without it) */
  double fm;                            /* vocoder with discriminators: feature matching (weighted), else 0 */
  double grad_norm; /* before clipping */
  double lr;
  bool skipped;     /* non-finite loss or gradient: no update */
  double flops;     /* model FLOPs of the step on this rank (ctx->flops: matrix products, fwd + bwd) */
  double flops_bf16; /* the part of them on bf16 operands (the frozen networks under train.precision = bf16) */
} StepStats;

typedef struct Trainer Trainer;

/* NULL with one line in err on any bad input. ctx must outlive the trainer. */
Trainer *trainer_create(Ctx *ctx, const Config *cfg, const TrainerOptions *o, McmErr *err);
/* Steps until train.steps. 0: done (final checkpoint written); 1: stopped by SIGTERM/SIGINT
 * after writing a checkpoint; -1: error (err), e.g. too many non-finite steps in a row. */
int trainer_run(Trainer *t, McmErr *err);
/* One optimizer step (no checkpoint, no log). -1 with err on a read error or when the NaN
 * tolerance is exhausted. */
int trainer_step(Trainer *t, StepStats *st, McmErr *err);
/* Writes ckpt_<step>.h5 now (rank 0; other ranks return 0) and prunes old ones. */
int trainer_save(Trainer *t, McmErr *err);
int64_t trainer_step_count(const Trainer *t); /* completed steps */
void trainer_destroy(Trainer *t);

/* The UNet ./train builds from [unet]: those sizes, everything else MusicLDM's (time
 * embedding 4 x model_channels). Not checked: unet_config_check. */
UNetConfig trainer_unet_config(const Config *cfg);

/* "<dir>/ckpt_<step>.h5" of the newest complete checkpoint in dir (.tmp files are never
 * considered): 1 and the path, 0 when there is none. */
int trainer_latest_checkpoint(const char *dir, char *path, size_t size, int64_t *step);

/* ------------------------------------------------------------------ test hooks
 * For checking the real step against an independent implementation given the same numbers
 * (tests/test_full_step.c against tests/fixtures/full_step.py): with draws set, each
 * trainer_step of train.mode = distill takes its batch and its three random draws from *d
 * instead of the loader and the RNG (neither is advanced), and calls d->on_grads once the
 * step's gradients are complete: the student's summed over ranks but not yet clipped, the
 * heads' after their own step (hinge + R1, their AdamW done). Everything else is the normal
 * step. Not for training runs: the data position and the RNG stay where they were. */
struct Batch;
struct ParamSet;
struct Adversarial;
typedef struct TrainerDraws {
  const struct Batch *batch; /* n = train.batch_size rows: latent moments (2C, H, W), text_emb (D),
                                with the discriminator mel (frames, n_mels) */
  const float *latent_eps;   /* (B, C, H, W) ε of the latent sample x0 = (mean + std·ε)·scale */
  const int *index;          /* (B) DDIM grid indices in [0, train.num_ddim_steps) */
  const float *noise;        /* (B, C, H, W) the noise to t_{n+k} */
  void (*on_grads)(Ctx *ctx, void *user); /* may be NULL */
  void *user;
} TrainerDraws;
/* d NULL: back to the loader and the RNG. -1 with err outside train.mode = distill. d must
 * stay valid while it is set. */
int trainer_set_draws(Trainer *t, const TrainerDraws *d, McmErr *err);

/* The trained networks: the student's and its EMA's parameters (same order), and the
 * adversarial part (NULL without train.adversarial). Owned by the trainer. */
typedef struct TrainerParts {
  const struct ParamSet *student, *ema;
  struct Adversarial *adv;
} TrainerParts;
TrainerParts trainer_parts(Trainer *t);

#ifdef __cplusplus
}
#endif
