/* train.mode = vae: the objective, the network set-up and its checks, the latent scale and
 * the exported weights (see train_vae.h). Shape letters: B batch, L latent channels, H × W =
 * frames × mel bins, f the VAE's downsampling factor. */
#include "diffusion/train_vae.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "kernels/math.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/weights.h"

struct VaeTrain {
  const Config *cfg; /* the trainer's */
  VaeConfig vc;
  ShardInfo si;
  Vae *vae, *ema;    /* trained (ps) and exported (ps_ema) */
  ParamSet *ps_ema;
  float scale;       /* of the last export */
};

/* ------------------------------------------------------------------ the objective */

VaeLoss vae_objective(Ctx *ctx, Vae *vae, Tensor *x, Tensor *eps, float kl_weight) {
  VaeMoments m = vae_encode(ctx, vae, x);                          /* (B, L, h, w) each */
  CHECK_SAME_SHAPE("vae_objective", m.mean, eps);
  Tensor *lv = op_clamp(ctx, m.logvar, -30.0f, 20.0f);             /* ln σ² */
  Tensor *var = op_exp(ctx, lv);                                   /* σ² */
  Tensor *z = op_add(ctx, m.mean, op_mul(ctx, op_exp(ctx, op_scale(ctx, lv, 0.5f)), eps));
  Tensor *xr = vae_decode(ctx, vae, z);                            /* (B, 1, H, W) */
  CHECK_SAME_SHAPE("vae_objective", xr, x);
  Tensor *recon = op_mean(ctx, op_abs(ctx, op_sub(ctx, xr, x)));   /* (1) */
  /* ½·mean(mean² + σ² − ln σ²) − ½: the constant through a (1) tensor of ones */
  Tensor *inner = op_sub(ctx, op_add(ctx, op_square(ctx, m.mean), var), lv);
  Tensor *one = tensor_new(ctx, DT_F32, SHAPE(1));
  const float one_h = 1.0f;
  tensor_from_host_f32(ctx, one, &one_h);
  Tensor *kl = op_add_scaled(ctx, op_mean(ctx, inner), one, 0.5f, -0.5f); /* (1) */
  VaeLoss out = {op_add_scaled(ctx, recon, kl, 1.0f, kl_weight), 0, 0};
  tensor_to_host_f32(ctx, recon, &out.recon);
  tensor_to_host_f32(ctx, kl, &out.kl);
  return out;
}

/* ------------------------------------------------------------------ the latent scale */

int vae_latent_scale(Ctx *ctx, Vae *vae, Loader *loader, int n_batches, uint64_t seed, float *scale, McmErr *err) {
  const uint64_t seed0 = ctx->seed, offset0 = ctx->rng_offset;
  bool was = ctx_set_grad(ctx, false);
  ctx->seed = seed, ctx->rng_offset = 0;
  /* Chan's merge of per-batch (count, mean, M2) in double: no cancellation over many values. */
  double n = 0, mu = 0, m2 = 0;
  int rc = 0;
  float *zh = NULL;
  for (int k = 0; k < n_batches && !rc; k++) {
    McmErr e = {{0}};
    const Batch *b = loader_next(loader, &e);
    if (!b) {
      rc = mcm_err(err, "latent scale: %s", e.msg);
      break;
    }
    Tensor *x = tensor_new(ctx, DT_F32, SHAPE(b->n, 1, b->frames, b->n_mels)); /* (B, 1, H, W) */
    loader_batch_to_tensor(ctx, b, x);
    VaeMoments m = vae_encode(ctx, vae, x);
    Tensor *z = vae_sample(ctx, m.mean, m.logvar); /* (B, L, h, w), ε from (seed, offset) */
    zh = realloc(zh, (size_t)z->numel * sizeof *zh);
    MCM_CHECK(zh, "vae_latent_scale: out of memory");
    tensor_to_host_f32(ctx, z, zh);
    double s = 0, q = 0;
    for (int64_t i = 0; i < z->numel; i++) s += zh[i];
    const double nb = (double)z->numel, mb = s / nb;
    for (int64_t i = 0; i < z->numel; i++) q += ((double)zh[i] - mb) * ((double)zh[i] - mb);
    const double d = mb - mu, nt = n + nb;
    mu += d * nb / nt;
    m2 += q + d * d * n * nb / nt;
    n = nt;
    ctx_step_reset(ctx);
  }
  free(zh);
  ctx_set_grad(ctx, was);
  ctx->seed = seed0, ctx->rng_offset = offset0;
  if (rc) return -1;
  const double sd = n > 1 ? sqrt(m2 / (n - 1)) : 0.0;
  if (!(sd > 0) || !isfinite(sd) || !isfinite(1.0 / sd))
    return mcm_err(err, "latent scale: the latents' std is %g over %.0f values (hint: the VAE diverged or the mels are constant)",
                   sd, n);
  *scale = (float)(1.0 / sd);
  return 0;
}

/* ------------------------------------------------------------------ set-up */

/* The VAE's sizes: from the weights' config when fine-tuning, else from [vae_train]. */
static int vae_sizes(const Config *c, VaeConfig *vc, McmErr *err) {
  McmErr e = {{0}};
  if (c->vae.weights[0]) {
    if (access(c->vae.weights, R_OK)) return mcm_err(err, "vae.weights = %s: %s", c->vae.weights, strerror(errno));
    if (vae_config_from_weights(c->vae.weights, vc, &e)) return mcm_err(err, "vae.weights: %s", e.msg);
    if (vae_config_check(vc, &e)) return mcm_err(err, "vae.weights = %s: %s", c->vae.weights, e.msg);
    return 0;
  }
  *vc = vae_config_musicldm();
  const CfgIntList *bo = &c->vae_train.block_out_channels;
  if (bo->n > VAE_MAX_BLOCKS)
    return mcm_err(err, "vae_train.block_out_channels: %d levels, at most %d", bo->n, VAE_MAX_BLOCKS);
  vc->in_channels = vc->out_channels = (int)c->vae_train.in_channels;
  vc->latent_channels = (int)c->vae_train.latent_channels;
  vc->n_blocks = bo->n;
  for (int i = 0; i < VAE_MAX_BLOCKS; i++) vc->block_out_channels[i] = i < bo->n ? (int)bo->v[i] : 0;
  vc->layers_per_block = (int)c->vae_train.layers_per_block;
  vc->norm_num_groups = (int)c->vae_train.norm_groups;
  vc->scaling_factor = 1.0f; /* until the first export measures it */
  if (vae_config_check(vc, &e)) return mcm_err(err, "[vae_train]: %s", e.msg);
  return 0;
}

/* The shards against the VAE and the configuration. */
static int check_shards(const Config *c, const VaeConfig *vc, ShardInfo si, McmErr *err) {
  const char *sh = c->data.train_shards;
  if (si.n_mels != c->mel.n_mels || si.rate != c->mel.rate || si.hop != c->mel.hop ||
      si.frames != c->prepare.segment_frames)
    return mcm_err(err,
                   "%s: the shards were made with another mel configuration: %d frames x %d mels at %d Hz, hop %d; "
                   "the configuration says %lld x %lld at %lld Hz, hop %lld (hint: prepare the data with this "
                   "configuration's [mel] and [prepare] sections)",
                   sh, si.frames, si.n_mels, si.rate, si.hop, (long long)c->prepare.segment_frames,
                   (long long)c->mel.n_mels, (long long)c->mel.rate, (long long)c->mel.hop);
  const char *src = c->vae.weights[0] ? "vae.weights" : "vae_train.block_out_channels";
  if (vc->in_channels != 1 || vc->out_channels != 1)
    return mcm_err(err, "%s: a VAE of %d input / %d output channels; the log-mel has 1", src, vc->in_channels,
                   vc->out_channels);
  const int f = vae_downsample_factor(vc);
  if (si.frames % f || si.n_mels % f)
    return mcm_err(err, "%s: the shards' mel of %d frames x %d bins is not divisible by %d, the downsampling of a VAE "
                   "with %d levels (hint: a segment length and mel bins that are multiples of %d, or fewer levels)",
                   sh, si.frames, si.n_mels, f, vc->n_blocks, f);
  return 0;
}

VaeTrain *vae_train_create(Ctx *ctx, const Config *c, ShardInfo si, ParamSet *ps, ParamSet *ps_ema, McmErr *err) {
  if (c->sample.every > 0) {
    mcm_err(err, "sample.every = %lld: training samples need a UNet; set it to 0 for train.mode = vae",
            (long long)c->sample.every);
    return NULL;
  }
  VaeConfig vc;
  if (vae_sizes(c, &vc, err) || check_shards(c, &vc, si, err)) return NULL;
  VaeTrain *v = calloc(1, sizeof *v);
  MCM_CHECK(v, "vae_train_create: out of memory");
  v->cfg = c, v->vc = vc, v->si = si, v->ps_ema = ps_ema;
  params_init(ps, "");
  ps->trainable = true;
  v->vae = vae_create(ctx, &vc, ps);
  params_init(ps_ema, "");
  ps_ema->trainable = false;
  v->ema = vae_create(ctx, &vc, ps_ema);
  McmErr e = {{0}};
  if (c->vae.weights[0]) {
    if (vae_load(ctx, v->vae, c->vae.weights, &e)) {
      mcm_err(err, "vae.weights: %s", e.msg);
      free(v);
      return NULL;
    }
    v->vc.scaling_factor = v->vae->cfg.scaling_factor;
  } else {
    vae_init_random(ctx, v->vae);
  }
  ema_copy(ctx, ps_ema->p, ps->p, ps_ema->n);
  return v;
}

void vae_train_destroy(VaeTrain *v) { free(v); }

void vae_train_latent_shape(const VaeTrain *v, int *L, int *h, int *w) {
  const int f = vae_downsample_factor(&v->vc);
  *L = v->vc.latent_channels, *h = v->si.frames / f, *w = v->si.n_mels / f;
}

VaeLoss vae_train_loss(Ctx *ctx, VaeTrain *v, const Batch *b, Tensor *eps) {
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(b->n, 1, b->frames, b->n_mels)); /* (B, 1, H, W) */
  loader_batch_to_tensor(ctx, b, x);
  return vae_objective(ctx, v->vae, x, eps, (float)v->cfg->vae_train.kl_weight);
}

float vae_train_scale(const VaeTrain *v) { return v->scale; }

/* ------------------------------------------------------------------ export */

int vae_train_export(Ctx *ctx, VaeTrain *v, McmErr *err) {
  const Config *c = v->cfg;
  McmErr e = {{0}};
  /* The first batches of epoch 0 of the training loader's order (one process). */
  LoaderOptions lo = {.shard_glob_or_dir = c->data.train_shards,
                      .batch_size = (int)c->train.batch_size,
                      .seed = (uint64_t)c->run.seed,
                      .rank = 0,
                      .world = 1,
                      .drop_last = true,
                      .prefetch = 0,
                      .fields = LOAD_MEL,
                      .skip_checksum = true};
  Loader *l = loader_create(&lo, &e);
  if (!l) return mcm_err(err, "latent scale: data.train_shards: %s", e.msg);
  int64_t n = c->vae_train.scale_batches, per_epoch = loader_steps_per_epoch(l);
  if (n > per_epoch) n = per_epoch; /* never a sample twice */
  float s;
  int rc = vae_latent_scale(ctx, v->ema, l, (int)n, (uint64_t)c->run.seed ^ VAE_SCALE_KEY, &s, err);
  loader_destroy(l);
  if (rc) return -1;
  v->scale = s;
  v->ema->cfg.scaling_factor = s;
  VaeConfig vc = v->vc;
  vc.scaling_factor = s;
  char path[CFG_MAX_STRING + 32];
  mcm_snprintf(path, sizeof path, "%s/%s", c->run.out_dir, VAE_EXPORT_NAME);
  TensorFile *tf = tf_create(path, err);
  if (!tf) return -1;
  char *config = vae_config_json(&vc, v->si.frames);
  rc = tf_set_attr(tf, "mcm_format", "mcm-weights 1", err);
  if (!rc) rc = tf_set_attr(tf, "component", "vae", err);
  if (!rc) rc = tf_set_attr(tf, "source", "./train with train.mode = vae", err);
  if (!rc) rc = tf_set_attr(tf, "config", config, err);
  if (!rc) rc = params_save(ctx, v->ps_ema, tf, "", DT_F32, err);
  free(config);
  if (rc) {
    tf_abort(tf);
    return -1;
  }
  return tf_commit(tf, err);
}
