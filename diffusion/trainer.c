/* The trainer (see trainer.h): set-up and its checks, the step of each mode, checkpoints,
 * resume, logs, signals. */
#include "diffusion/trainer.h"

#include "models/weights.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/checkpoint.h"
#include "data/loader.h"
#include "data/prompts.h"
#include "diffusion/adversarial.h"
#include "diffusion/objectives.h"
#include "diffusion/pipeline.h"
#include "diffusion/text_joint.h"
#include "diffusion/train_vae.h"
#include "diffusion/train_vocoder.h"
#include "data/audio.h"
#include "data/melpng.h"
#include "kernels/comm.h"
#include "kernels/grad_sync.h"
#include "kernels/rng.h"
#include "models/vae.h"

#define CKPT_FORMAT "mcm-train 1"

struct Trainer {
  Ctx *ctx;
  Config cfg;
  bool distill, quiet;
  Comm *comm;
  int rank, world;
  GradSync *gs_opt, *gs_heads;   /* world > 1: the gradient averaging of opt's and the discriminators' lists */
  Tensor **disc_params;          /* the discriminators' parameters (AudioMAE heads or the vocoder's), or NULL */
  int n_disc_params;
  Loader *loader;
  Schedule sched;
  DistillGrid grid;
  UNetConfig ucfg;
  ParamSet ps_student, ps_ema, ps_teacher;
  Unet *student, *ema, *teacher; /* teacher NULL in teacher mode */
  bool adversarial;               /* distill with the AudioMAE discriminator */
  ParamSet ps_vae;
  Vae *vae;                       /* frozen decoder for the fake mel (adversarial), else NULL */
  Adversarial *adv;
  VaeTrain *vt;                   /* train.mode = vae: the VAE in ps_student / ps_ema, else NULL */
  TextJoint *tj;                  /* [text] joint (teacher mode): the tower trained with the UNet, else NULL */
  VocoderTrain *vo;               /* train.mode = vocoder: HiFi-GAN in ps_student / ps_ema, else NULL */
  Pipeline *pipe;                 /* rank 0 with sample.every > 0: training samples */
  char **prompts;
  int n_prompts;
  AdamW *opt;
  Tensor **ema_p, **ema_w;       /* EMA parameters and the fp32 weights they average */
  float scale;                   /* vae_scaling_factor */
  float *uncond;                 /* (D) host */
  int B, C, H, W, D;             /* per-process batch, latent channels / frames / bins, embedding */
  int64_t step;                  /* completed steps */
  int64_t nan_streak, skipped;
  FILE *log;                     /* rank 0: run.out_dir/log.jsonl */
  const TrainerDraws *draws;      /* test hook (trainer_set_draws), else NULL */
  double t_last_log;
  int64_t step_last_log;
  double flops_since_log;        /* model FLOPs of this rank's steps since the last log line */
  double flops_bf16_since_log;   /* the part of them on bf16 operands */
  bool bf16;                      /* train.precision = bf16 took effect: the frozen networks are bf16 */
};

/* Set by SIGTERM / SIGINT; read between steps. A signal handler can only reach a global. */
static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ set-up helpers */

static int mkdir_p(const char *path, const char *key, McmErr *err) {
  char buf[CFG_MAX_STRING + 8];
  mcm_snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0777) && errno != EEXIST)
      return mcm_err(err, "%s = %s: cannot create %s: %s", key, path, buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0777) && errno != EEXIST) return mcm_err(err, "%s = %s: cannot create it: %s", key, path, strerror(errno));
  struct stat st;
  if (stat(buf, &st) || !S_ISDIR(st.st_mode)) return mcm_err(err, "%s = %s: not a directory", key, path);
  /* Probe: a directory we cannot write would only fail at the first checkpoint. */
  char probe[CFG_MAX_STRING + 64];
  mcm_snprintf(probe, sizeof probe, "%s/.mcm-write-probe-%d", path, (int)getpid());
  FILE *f = fopen(probe, "w");
  if (!f) return mcm_err(err, "%s = %s: not writable: %s (hint: choose a directory you can write)", key, path, strerror(errno));
  fclose(f);
  unlink(probe);
  return 0;
}

UNetConfig trainer_unet_config(const Config *cfg) {
  UNetConfig u = unet_config_musicldm();
  const int64_t mc = cfg->unet.model_channels;
  u.in_channels = u.out_channels = (int)cfg->unet.in_channels;
  u.levels = cfg->unet.channel_mult.n;
  for (int l = 0; l < UNET_MAX_LEVELS; l++) {
    u.block_out_channels[l] = l < u.levels ? (int)(mc * cfg->unet.channel_mult.v[l]) : 0;
    u.attention[l] = false;
    u.num_heads[l] = 0;
  }
  for (int i = 0; i < cfg->unet.attention_levels.n; i++) u.attention[cfg->unet.attention_levels.v[i]] = true;
  u.layers_per_block = (int)cfg->unet.num_res_blocks;
  u.norm_groups = (int)cfg->unet.norm_groups;
  u.num_head_channels = (int)cfg->unet.num_head_channels;
  u.time_proj_dim = (int)mc;
  u.time_embed_dim = (int)(4 * mc);
  u.class_embed_in = (int)cfg->unet.context_dim;
  return u;
}

static Unet *new_unet(Trainer *t, ParamSet *ps, bool trainable) {
  params_init(ps, "");
  ps->trainable = trainable;
  return unet_create(t->ctx, &t->ucfg, ps);
}

/* Weights into net from a converted UNet file, or from "student/" in a checkpoint. */
static int load_unet_weights(Trainer *t, Unet *net, ParamSet *ps, const char *path, const char *key, McmErr *err) {
  if (access(path, R_OK))
    return mcm_err(err, "%s = %s: %s (hint: convert the weights with tools/convert_diffusers.py)", key, path,
                   strerror(errno));
  McmErr e = {{0}};
  TensorFile *tf = tf_open(path, &e);
  if (!tf) return mcm_err(err, "%s: %s", key, e.msg);
  bool is_ckpt = tf_has_attr(tf, "format");
  int rc;
  if (is_ckpt) {
    rc = params_load(t->ctx, ps, tf, "student/", true, &e);
    tf_close(tf);
  } else {
    tf_close(tf);
    rc = unet_load(t->ctx, net, path, &e);
  }
  if (rc)
    return mcm_err(err, "%s: %s (hint: the [unet] section must describe the network the weights were made for)", key,
                   e.msg);
  return 0;
}

/* The VAE's sizes from its weights' diffusers config, then the weights themselves: a
 * mismatch with the UNet's latent channels or with the shards' mel/latent sizes is an error. */
static int open_vae(Trainer *t, const char *path, int frames, int n_mels, bool keep, McmErr *err) {
  if (access(path, R_OK)) return mcm_err(err, "vae.weights = %s: %s", path, strerror(errno));
  McmErr e = {{0}};
  VaeConfig vc;
  if (vae_config_from_weights(path, &vc, &e)) return mcm_err(err, "vae.weights: %s", e.msg);
  if (vae_config_check(&vc, &e)) return mcm_err(err, "vae.weights = %s: %s", path, e.msg);
  const int f = vae_downsample_factor(&vc);
  if (vc.latent_channels != t->C)
    return mcm_err(err, "vae.weights = %s has %d latent channels, unet.in_channels = %d", path, vc.latent_channels, t->C);
  if (frames != f * t->H || n_mels != f * t->W)
    return mcm_err(err, "vae.weights = %s downsamples by %d: mel %d x %d gives latents %d x %d, the shards' latents are %d x %d",
                   path, f, frames, n_mels, frames / f, n_mels / f, t->H, t->W);
  params_init(&t->ps_vae, "");
  t->ps_vae.trainable = false;
  Vae *vae = vae_create(t->ctx, &vc, &t->ps_vae);
  if (vae_load(t->ctx, vae, path, &e)) return mcm_err(err, "vae.weights: %s", e.msg);
  if (keep) t->vae = vae;
  return 0;
}

/* The discriminator from [adversarial]: AudioMAE weights, the bridge, heads on the taps. */
static int open_adversarial(Trainer *t, McmErr *err) {
  const Config *c = &t->cfg;
  if (!c->adversarial.audiomae[0])
    return mcm_err(err, "adversarial.audiomae is required with train.adversarial = true (the converted AudioMAE "
                        "ViT-B: tools/convert_audiomae.py, or random)");
  /* adversarial.audiomae = random: a frozen feature network of the [adversarial] mae_* sizes
   * with random weights (projected-GAN discriminators work on random features), drawn from a
   * fixed stream of run.seed so that every rank and every resume has the same one. */
  const bool random_mae = !strcmp(c->adversarial.audiomae, "random");
  if (!random_mae && access(c->adversarial.audiomae, R_OK))
    return mcm_err(err, "adversarial.audiomae = %s: %s", c->adversarial.audiomae, strerror(errno));
  if (!c->adversarial.bridge[0])
    return mcm_err(err, "adversarial.bridge is required with train.adversarial = true (fit it once with tools/fit_bridge)");
  if (access(c->adversarial.bridge, R_OK))
    return mcm_err(err, "adversarial.bridge = %s: %s", c->adversarial.bridge, strerror(errno));
  AdvConfig ac = adv_config_default();
  ac.audiomae_path = random_mae ? NULL : c->adversarial.audiomae;
  ac.bridge_path = c->adversarial.bridge;
  ac.mae.img_t = (int)c->adversarial.mae_frames, ac.mae.img_f = (int)c->adversarial.mae_bins;
  ac.mae.in_chans = 1, ac.mae.patch = (int)c->adversarial.mae_patch;
  ac.mae.embed_dim = (int)c->adversarial.mae_dim, ac.mae.depth = (int)c->adversarial.mae_depth;
  ac.mae.num_heads = (int)c->adversarial.mae_heads;
  ac.heads.channels = (int)c->adversarial.mae_dim;
  ac.heads.c_dim = t->D + (int)c->adversarial.mae_dim;
  ac.heads.cmap_dim = (int)c->adversarial.cmap_dim, ac.heads.kernel = (int)c->adversarial.head_kernel;
  ac.heads.virtual_bs = (int)c->adversarial.virtual_bs;
  if (c->adversarial.taps.n > ADV_MAX_TAPS) return mcm_err(err, "adversarial.taps: at most %d", ADV_MAX_TAPS);
  ac.n_taps = c->adversarial.taps.n;
  for (int i = 0; i < ac.n_taps; i++) ac.taps[i] = (int)c->adversarial.taps.v[i];
  ac.text_dim = t->D;
  ac.mel_bins = (int)c->mel.n_mels;
  ac.opt = (AdamWHyper){(float)c->adversarial.lr, (float)c->adversarial.beta1, (float)c->adversarial.beta2, 1e-8f,
                        (float)c->adversarial.weight_decay};
  ac.r1_gamma = (float)c->adversarial.r1_gamma;
  ac.r1_interval = (int)c->adversarial.r1_interval;
  McmErr e = {{0}};
  if (adv_config_check(&ac, &e)) return mcm_err(err, "[adversarial]: %s", e.msg);
  const uint64_t seed = t->ctx->seed, offset = t->ctx->rng_offset;
  t->ctx->seed = (uint64_t)c->run.seed ^ 0x4155444d4145ull, t->ctx->rng_offset = 0; /* "AUDMAE" */
  t->adv = adv_create(t->ctx, &ac, &e);
  t->ctx->seed = seed, t->ctx->rng_offset = offset;
  if (!t->adv) return mcm_err(err, "[adversarial]: %s", e.msg);
  return 0;
}

/* Data parallel: the discriminators' gradients (the AudioMAE heads', or the vocoder's MPD and
 * MSD) are averaged like the student's, in buckets after their last backward (hinge and R1
 * accumulate into the heads in separate passes, so none of them alone makes a gradient
 * final: no overlap). */
static void heads_grad_hook(Ctx *ctx, Tensor *const *params, int n, void *user) {
  Trainer *t = user;
  if (!t->gs_heads) return;
  MCM_CHECK(params == t->disc_params && n == t->n_disc_params,
            "trainer: the discriminators' grad hook got another parameter list");
  grad_sync_finish(t->gs_heads, ctx);
}

/* The shards' glob or directory -> its encoders.h5. */
static void default_encoders_path(const char *shards, char *out, size_t size) {
  struct stat st;
  if (!stat(shards, &st) && S_ISDIR(st.st_mode)) {
    mcm_snprintf(out, size, "%s/encoders.h5", shards);
    return;
  }
  const char *slash = strrchr(shards, '/');
  if (!slash) mcm_snprintf(out, size, "encoders.h5");
  else mcm_snprintf(out, size, "%.*s/encoders.h5", (int)(slash - shards), shards);
}

static int read_encoders(Trainer *t, McmErr *err) {
  char path[2 * CFG_MAX_STRING];
  if (t->cfg.data.encoders[0]) mcm_snprintf(path, sizeof path, "%s", t->cfg.data.encoders);
  else default_encoders_path(t->cfg.data.train_shards, path, sizeof path);
  McmErr e = {{0}};
  TensorFile *tf = tf_open(path, &e);
  if (!tf)
    return mcm_err(err, "encoders file: %s (hint: ./prepare --vae --text-encoder writes it beside the shards; or set data.encoders)",
                   e.msg);
  int rc = 0;
  t->uncond = MALLOC_CHECK((size_t)t->D * sizeof(float));
  /* text.joint: the unconditional embedding is the tower's embedding of "" */
  const bool need_uncond = !t->tj;
  if (!tf_has(tf, "vae_scaling_factor") || (need_uncond && !tf_has(tf, "uncond_text_emb")))
    rc = mcm_err(err, "%s lacks %s (hint: run ./prepare --add-latents again: it did not finish)", path,
                 tf_has(tf, "vae_scaling_factor") ? "uncond_text_emb" : "vae_scaling_factor");
  else if (tf_read(tf, "vae_scaling_factor", 0, NULL, &t->scale, &e) ||
           (need_uncond && tf_read(tf, "uncond_text_emb", 1, (int64_t[]){t->D}, t->uncond, &e)))
    rc = mcm_err(err, "%s (the shards' text embeddings have %d values)", e.msg, t->D);
  else if (!(t->scale > 0) || !isfinite(t->scale))
    rc = mcm_err(err, "%s: vae_scaling_factor = %g is not a positive number", path, t->scale);
  tf_close(tf);
  return rc;
}

/* The shards against the model: latents and embeddings present with the configured sizes,
 * mel made as the configuration says. */
static int check_data(Trainer *t, McmErr *err) {
  const Config *c = &t->cfg;
  ShardInfo si = loader_info(t->loader);
  const char *sh = c->data.train_shards;
  if (si.n_mels != c->mel.n_mels || si.rate != c->mel.rate || si.hop != c->mel.hop ||
      si.frames != c->prepare.segment_frames)
    return mcm_err(err,
                   "%s: the shards were made with another mel configuration: %d frames x %d mels at %d Hz, hop %d; "
                   "the configuration says %lld x %lld at %lld Hz, hop %lld (hint: prepare the data with this "
                   "configuration's [mel] and [prepare] sections, or use the one it was made with)",
                   sh, si.frames, si.n_mels, si.rate, si.hop, (long long)c->prepare.segment_frames,
                   (long long)c->mel.n_mels, (long long)c->mel.rate, (long long)c->mel.hop);
  int C2, H, W;
  if (!loader_latent_dims(t->loader, &C2, &H, &W))
    return mcm_err(err, "%s: the shards have no latents (hint: ./prepare --add-latents --vae ...)", sh);
  if (C2 != 2 * t->C || H != t->H || W != t->W)
    return mcm_err(err,
                   "%s: the shards' latents are %d x %d x %d (mean and logvar), the UNet expects %d x %d x %d "
                   "(2 x unet.in_channels, unet.latent_frames, unet.latent_bins)",
                   sh, C2, H, W, 2 * t->C, t->H, t->W);
  int D = loader_text_emb_dim(t->loader);
  if (!t->tj && D != t->D)
    return mcm_err(err, "%s: the shards' text embeddings have %d values, unet.context_dim = %d", sh, D, t->D);
  return 0;
}

/* ------------------------------------------------------------------ checkpoints */

static int ckpt_step_of(const char *name, int64_t *step) {
  long long s;
  int n = 0;
  if (sscanf(name, "ckpt_%lld.h5%n", &s, &n) != 1 || name[n] != 0 || s < 0) return 0;
  *step = s;
  return 1;
}

/* Steps of every complete checkpoint in dir, ascending (malloc'd). */
static int64_t *list_checkpoints(const char *dir, int *n) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return NULL;
  int64_t *steps = NULL;
  int cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    int64_t s;
    if (!ckpt_step_of(e->d_name, &s)) continue;
    if (*n == cap) steps = realloc(steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *steps);
    steps[(*n)++] = s;
  }
  closedir(d);
  for (int i = 1; i < *n; i++)
    for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
      int64_t x = steps[j];
      steps[j] = steps[j - 1], steps[j - 1] = x;
    }
  return steps;
}

int trainer_latest_checkpoint(const char *dir, char *path, size_t size, int64_t *step) {
  int n;
  int64_t *steps = list_checkpoints(dir, &n);
  int found = n > 0;
  if (found) {
    *step = steps[n - 1];
    mcm_snprintf(path, size, "%s/ckpt_%" PRId64 ".h5", dir, *step);
  }
  free(steps);
  return found;
}

static int set_i64(TensorFile *tf, const char *name, int64_t v, McmErr *err) {
  char s[32];
  mcm_snprintf(s, sizeof s, "%" PRId64, v);
  return tf_set_attr(tf, name, s, err);
}

static int get_i64(TensorFile *tf, const char *name, int64_t *v, McmErr *err) {
  char *s = NULL;
  if (tf_get_attr(tf, name, &s, err)) return -1;
  char *end;
  errno = 0;
  long long x = strtoll(s, &end, 10);
  int bad = errno || end == s || *end;
  free(s);
  if (bad) return mcm_err(err, "%s: attribute '%s' is not an integer", tf_path(tf), name);
  *v = x;
  return 0;
}

/* The UNet modes also write a converted-format file that ./infer's bundles and teacher.weights
 * load: run.out_dir/unet.h5 (teacher mode) or student.h5 (distill mode), both the EMA weights
 * (in distill mode the EMA target, the network consistency-model samplers use), atomically. */
static int export_unet(Trainer *t, McmErr *err) {
  const bool teacher = !strcmp(t->cfg.train.mode, "teacher");
  if (!teacher && !t->distill) return 0;
  char path[CFG_MAX_STRING + 64];
  mcm_snprintf(path, sizeof path, "%s/%s", t->cfg.run.out_dir, teacher ? BUNDLE_UNET : BUNDLE_STUDENT);
  TensorFile *tf = tf_create(path, err);
  if (!tf) return -1;
  char *config = unet_config_json(&t->ucfg, (int)t->H);
  int rc = tf_set_attr(tf, "mcm_format", "mcm-weights 1", err);
  if (!rc) rc = tf_set_attr(tf, "component", "unet", err);
  if (!rc) rc = tf_set_attr(tf, "source", teacher ? "./train with train.mode = teacher (the EMA UNet)"
                                                  : "./train with train.mode = distill (the EMA target)", err);
  if (!rc) rc = tf_set_attr(tf, "config", config, err);
  if (!rc) rc = params_save(t->ctx, &t->ps_ema, tf, "", DT_F32, err);
  free(config);
  if (rc) {
    tf_abort(tf);
    return -1;
  }
  return tf_commit(tf, err);
}

int trainer_save(Trainer *t, McmErr *err) {
  if (t->rank != 0) return 0;
  char path[CFG_MAX_STRING + 64];
  mcm_snprintf(path, sizeof path, "%s/ckpt_%" PRId64 ".h5", t->cfg.checkpoint.dir, t->step);
  TensorFile *tf = tf_create(path, err);
  if (!tf) return -1;
  LoaderPosition pos;
  loader_position(t->loader, &pos);
  int rc = tf_set_attr(tf, "format", CKPT_FORMAT, err);
  if (!rc) rc = tf_set_attr(tf, "mode", t->cfg.train.mode, err);
  if (!rc) rc = set_i64(tf, "step", t->step, err);
  if (!rc) rc = set_i64(tf, "nan_streak", t->nan_streak, err);
  if (!rc) rc = set_i64(tf, "skipped", t->skipped, err);
  if (!rc) rc = set_i64(tf, "loader_epoch", pos.epoch, err);
  if (!rc) rc = set_i64(tf, "loader_step", pos.step, err);
  if (!rc) rc = set_i64(tf, "loader_n_samples", pos.n_samples, err);
  if (!rc) rc = set_i64(tf, "loader_world", pos.world, err);
  if (!rc) rc = set_i64(tf, "loader_batch_size", pos.batch_size, err);
  if (!rc) rc = set_i64(tf, "loader_seed", (int64_t)pos.seed, err);
  if (!rc) rc = checkpoint_save_config(tf, &t->cfg, err);
  if (!rc) rc = checkpoint_save_rng(tf, t->ctx, err);
  if (!rc) rc = params_save(t->ctx, &t->ps_student, tf, "student/", DT_F32, err);
  if (!rc) rc = params_save(t->ctx, &t->ps_ema, tf, "ema/", DT_F32, err);
  if (!rc) rc = checkpoint_save_adamw(t->ctx, tf, "opt_student", t->opt, err);
  if (!rc && t->adv) rc = adv_save(t->ctx, t->adv, tf, err);
  if (!rc && t->tj) rc = text_joint_save(t->ctx, t->tj, tf, err);
  if (!rc && t->vo) rc = vocoder_train_save(t->ctx, t->vo, tf, err);
  if (rc) {
    tf_abort(tf);
    return -1;
  }
  if (tf_commit(tf, err)) return -1;
  /* Keep the newest checkpoint.keep (before the exports: a kill while they are written leaves
   * the checkpoints pruned; the exported files are each replaced atomically). */
  int n;
  int64_t *steps = list_checkpoints(t->cfg.checkpoint.dir, &n);
  for (int i = 0; i < n - (int)t->cfg.checkpoint.keep; i++) {
    mcm_snprintf(path, sizeof path, "%s/ckpt_%" PRId64 ".h5", t->cfg.checkpoint.dir, steps[i]);
    unlink(path);
  }
  free(steps);
  if (t->vt && vae_train_export(t->ctx, t->vt, err)) return -1;
  if (t->vo && vocoder_train_export(t->ctx, t->vo, err)) return -1;
  if (t->tj && text_joint_export(t->ctx, t->tj, t->cfg.run.out_dir, err)) return -1;
  if (export_unet(t, err)) return -1;
  return 0;
}

static int trainer_load(Trainer *t, const char *path, McmErr *err) {
  McmErr e = {{0}};
  TensorFile *tf = tf_open(path, &e);
  if (!tf) return mcm_err(err, "resume: %s (hint: delete the damaged checkpoint to resume from an older one)", e.msg);
  char *fmt = NULL, *mode = NULL;
  int rc = 0;
  if (tf_get_attr(tf, "format", &fmt, &e) || strcmp(fmt, CKPT_FORMAT))
    rc = mcm_err(err, "resume: %s is not an mcm training checkpoint (format %s)", path, fmt ? fmt : "missing");
  else if (tf_get_attr(tf, "mode", &mode, &e) || strcmp(mode, t->cfg.train.mode))
    rc = mcm_err(err, "resume: %s was written by a train.mode = %s run, this one is %s (hint: another checkpoint.dir, or --fresh in an empty one)",
                 path, mode ? mode : "?", t->cfg.train.mode);
  free(fmt);
  free(mode);
  if (rc) {
    tf_close(tf);
    return -1;
  }
  LoaderPosition pos;
  int64_t seed = 0;
  if (get_i64(tf, "step", &t->step, &e) || get_i64(tf, "nan_streak", &t->nan_streak, &e) ||
      get_i64(tf, "skipped", &t->skipped, &e) || get_i64(tf, "loader_epoch", &pos.epoch, &e) ||
      get_i64(tf, "loader_step", &pos.step, &e) || get_i64(tf, "loader_n_samples", &pos.n_samples, &e) ||
      get_i64(tf, "loader_world", &pos.world, &e) || get_i64(tf, "loader_batch_size", &pos.batch_size, &e) ||
      get_i64(tf, "loader_seed", &seed, &e) || params_load(t->ctx, &t->ps_student, tf, "student/", true, &e) ||
      params_load(t->ctx, &t->ps_ema, tf, "ema/", true, &e) ||
      checkpoint_load_adamw(t->ctx, tf, "opt_student", t->opt, &e) || checkpoint_load_rng(tf, t->ctx, &e) ||
      (t->adv && adv_load(t->ctx, t->adv, tf, &e)) || (t->tj && text_joint_load(t->ctx, t->tj, tf, &e)) ||
      (t->vo && vocoder_train_load(t->ctx, t->vo, tf, &e)))
    rc = mcm_err(err, "resume from %s: %s", path, e.msg);
  tf_close(tf);
  if (rc) return -1;
  /* The saved hyperparameters win in checkpoint_load_adamw; the configuration's base rate
   * is what the schedule scales. */
  t->opt->lr = (float)t->cfg.train.lr;
  pos.seed = (uint64_t)seed;
  if (loader_seek(t->loader, &pos, &e)) return mcm_err(err, "resume from %s: %s", path, e.msg);
  return 0;
}

/* ------------------------------------------------------------------ samples */

#define SAMPLE_MAX_PROMPTS 16

/* [sample]'s request: its steps and length (0: the training length), [infer]'s long form. */
static PipelineRequest sample_request(const Trainer *t) {
  const Config *c = &t->cfg;
  PipelineRequest r = pipeline_request_default(t->pipe->sampler);
  r.steps = (int)c->sample.steps;
  r.seconds = c->sample.seconds > 0 ? c->sample.seconds : (double)t->H * t->pipe->f * t->pipe->hop / t->pipe->rate;
  pipeline_request_long_form(&r, c);
  return r;
}

static int read_prompts(Trainer *t, McmErr *err) {
  const char *path = t->cfg.sample.prompts;
  if (!path[0]) return mcm_err(err, "sample.every > 0 needs sample.prompts (a file, one prompt a line)");
  Prompts p = {0};
  if (prompts_read_file(path, "sample.prompts =", &p, err)) return -1;
  if (p.n > SAMPLE_MAX_PROMPTS) {
    int n = p.n;
    prompts_free(&p);
    return mcm_err(err, "sample.prompts = %s: %d prompts, at most %d (each is sampled at every sample.every steps)",
                   path, n, SAMPLE_MAX_PROMPTS);
  }
  t->prompts = p.text, t->n_prompts = p.n;
  return 0;
}

/* The bundle's UNet must have the trained network's parameters, name for name and shape for
 * shape, so that the EMA weights can be copied into it. */
static int open_pipeline(Trainer *t, McmErr *err) {
  const Config *c = &t->cfg;
  if (!c->sample.bundle[0]) return mcm_err(err, "sample.every > 0 needs sample.bundle (./infer's model bundle directory)");
  if (read_prompts(t, err)) return -1;
  McmErr e = {{0}};
  PipelineOptions po = {c->sample.bundle, t->distill ? PIPE_CM : PIPE_DDIM, true, DT_F32}; /* samples are fp32 */
  t->pipe = pipeline_open(t->ctx, &po, &e);
  if (!t->pipe) return mcm_err(err, "sample.bundle: %s", e.msg);
  const ParamSet *a = &t->pipe->ps_unet, *b = &t->ps_ema;
  bool same = a->n == b->n;
  for (int i = 0; same && i < a->n; i++)
    same = !strcmp(a->p[i]->name, b->p[i]->name) && tensor_same_shape(a->p[i], b->p[i]);
  if (!same)
    return mcm_err(err, "sample.bundle = %s: its UNet is not the network of [unet] (hint: a bundle made for this model)",
                   c->sample.bundle);
  if (t->tj) { /* the samples read the jointly trained tower's EMA through the bundle's text encoder */
    const ParamSet *x = &t->pipe->ps_text, *y = &t->tj->ps_ema;
    same = x->n == y->n;
    for (int i = 0; same && i < x->n; i++)
      same = !strcmp(x->p[i]->name, y->p[i]->name) && tensor_same_shape(x->p[i], y->p[i]);
    if (!same)
      return mcm_err(err, "sample.bundle = %s: its text encoder is not the tower of [text] (hint: a bundle made with "
                          "this run's text_encoder.h5 and tokenizer/)", c->sample.bundle);
  }
  PipelineRequest r = sample_request(t);
  for (int i = 0; i < t->n_prompts; i++) {
    r.prompt = t->prompts[i];
    if (pipeline_check_request(t->pipe, &r, &e)) return mcm_err(err, "[sample]: %s", e.msg);
  }
  return 0;
}

/* Samples of the EMA weights into run.out_dir/samples/step_<step>/. The training RNG
 * position is saved and restored around it (the pipeline reseeds the context per output), so
 * sampling never changes the training run. */
static int write_samples(Trainer *t, McmErr *err) {
  Ctx *ctx = t->ctx;
  const Config *c = &t->cfg;
  char dir[CFG_MAX_STRING + 64];
  mcm_snprintf(dir, sizeof dir, "%s/samples/step_%" PRId64, c->run.out_dir, t->step);
  if (mkdir_p(dir, "run.out_dir", err)) return -1;
  const uint64_t seed = ctx->seed, offset = ctx->rng_offset;
  bool was = ctx_set_grad(ctx, false);
  ema_copy(ctx, t->pipe->ps_unet.p, t->ps_ema.p, t->ps_ema.n);
  if (t->tj) ema_copy(ctx, t->pipe->ps_text.p, t->tj->ps_ema.p, t->tj->ps_ema.n);
  PipelineRequest r = sample_request(t);
  int rc = 0;
  for (int i = 0; i < t->n_prompts && !rc; i++) {
    r.prompt = t->prompts[i];
    r.seed = (uint64_t)c->sample.seed + (uint64_t)i;
    PipelineOutput out = {0};
    char path[CFG_MAX_STRING + 256];
    bool scaled;
    rc = pipeline_generate(t->pipe, &r, &out, NULL, err);
    if (!rc) rc = pipeline_output_name(path, sizeof path, dir, i, 3, r.prompt, r.seed, "wav", err);
    if (!rc) rc = audio_write(path, out.audio, out.n, out.rate, AUDIO_WAV16, &scaled, err);
    if (!rc) rc = pipeline_output_name(path, sizeof path, dir, i, 3, r.prompt, r.seed, "png", err);
    if (!rc) rc = melpng_write(path, out.mel, out.frames, out.n_mels, err);
    pipeline_output_free(&out);
  }
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);
  ctx->seed = seed, ctx->rng_offset = offset;
  return rc;
}

/* ------------------------------------------------------------------ create */

static void trainer_free(Trainer *t) {
  if (!t) return;
  loader_destroy(t->loader);
  schedule_free(&t->sched);
  params_free(&t->ps_student), params_free(&t->ps_ema), params_free(&t->ps_teacher), params_free(&t->ps_vae);
  adv_destroy(t->adv);
  vae_train_destroy(t->vt);
  vocoder_train_destroy(t->vo);
  text_joint_destroy(t->tj);
  pipeline_close(t->pipe);
  grad_sync_destroy(t->gs_opt), grad_sync_destroy(t->gs_heads);
  for (int i = 0; i < t->n_prompts; i++) free(t->prompts[i]);
  free(t->prompts);
  free(t->ema_p), free(t->ema_w), free(t->uncond);
  if (t->log) fclose(t->log);
  comm_finalize(t->comm);
  free(t);
}

Trainer *trainer_create(Ctx *ctx, const Config *cfg, const TrainerOptions *o, McmErr *err) {
  Trainer *t = calloc(1, sizeof *t);
  t->ctx = ctx;
  t->cfg = *cfg;
  t->quiet = o && o->quiet;
  const Config *c = &t->cfg;
  McmErr e = {{0}};
  TrainResume resume = o ? o->resume : TRAIN_RESUME_AUTO;

  /* Mode and options that are not available. */
  if (strcmp(c->train.mode, "distill") && strcmp(c->train.mode, "teacher") && strcmp(c->train.mode, "vae") &&
      strcmp(c->train.mode, "vocoder")) {
    mcm_err(err, "train.mode = %s is not implemented: ./train trains the UNet (distill or teacher) or the VAE (vae) or the vocoder (vocoder)",
            c->train.mode);
    goto fail;
  }
  const bool vae_mode = !strcmp(c->train.mode, "vae");
  const bool vocoder_mode = !strcmp(c->train.mode, "vocoder");
  t->distill = !strcmp(c->train.mode, "distill");
  t->adversarial = t->distill && c->train.adversarial;
  if (t->adversarial && !c->vae.weights[0]) {
    mcm_err(err, "vae.weights is required with train.adversarial = true (the frozen decoder turns the student's "
                 "latents into the mel the discriminator sees)");
    goto fail;
  }
  if (t->distill && !c->teacher.weights[0]) {
    mcm_err(err, "teacher.weights is required for train.mode = distill (the converted MusicLDM UNet: "
                 "tools/convert_diffusers.py)");
    goto fail;
  }

  /* Ranks. */
  t->comm = comm_init(ctx, &e);
  if (!t->comm) {
    mcm_err(err, "data parallel set-up: %s", e.msg);
    goto fail;
  }
  t->rank = comm_rank(t->comm), t->world = comm_world(t->comm);

  /* Directories (rank 0 writes; every rank checks so that none starts work in vain). */
  if (mkdir_p(c->checkpoint.dir, "checkpoint.dir", err) || mkdir_p(c->run.out_dir, "run.out_dir", err)) goto fail;
  char ckpt[CFG_MAX_STRING + 64];
  int64_t ckpt_step = 0;
  int have_ckpt = trainer_latest_checkpoint(c->checkpoint.dir, ckpt, sizeof ckpt, &ckpt_step);
  if (have_ckpt && resume == TRAIN_RESUME_FRESH) {
    mcm_err(err, "--fresh: %s already holds checkpoints (newest: step %" PRId64 "); use another checkpoint.dir or "
                 "remove them", c->checkpoint.dir, ckpt_step);
    goto fail;
  }
  if (!have_ckpt && resume == TRAIN_RESUME_REQUIRE) {
    mcm_err(err, "--resume: no checkpoint ckpt_<step>.h5 in %s", c->checkpoint.dir);
    goto fail;
  }

  /* Sizes and schedule. */
  t->ucfg = trainer_unet_config(c);
  if (unet_config_check(&t->ucfg, &e)) {
    mcm_err(err, "[unet]: %s", e.msg);
    goto fail;
  }
  t->B = (int)c->train.batch_size;
  t->C = (int)c->unet.in_channels, t->H = (int)c->unet.latent_frames, t->W = (int)c->unet.latent_bins;
  t->D = (int)c->unet.context_dim;
  ScheduleConfig sc = schedule_config_musicldm();
  if (schedule_init(&t->sched, &sc, &e) ||
      distill_grid((int)c->train.num_ddim_steps, (int)c->train.skip_k, sc.T, &t->grid, &e)) {
    mcm_err(err, "%s", e.msg);
    goto fail;
  }

  if (c->text.joint && !(t->tj = text_joint_create(ctx, c, err))) goto fail;

  /* Data. */
  LoaderOptions lo = {.shard_glob_or_dir = c->data.train_shards,
                      .batch_size = t->B,
                      .seed = (uint64_t)c->run.seed,
                      .rank = t->rank,
                      .world = t->world,
                      .drop_last = true,
                      .prefetch = c->data.num_workers > 0 ? 2 : 0,
                      .fields = vocoder_mode ? LOAD_MEL | LOAD_AUDIO : vae_mode ? LOAD_MEL : LOAD_LATENT | (t->tj ? LOAD_CAPTION : LOAD_TEXT_EMB) | (t->adversarial ? LOAD_MEL : 0u),
                      .skip_checksum = false};
  t->loader = loader_create(&lo, &e);
  if (!t->loader) {
    mcm_err(err, "data.train_shards: %s", e.msg);
    goto fail;
  }
  if (vae_mode) {
    /* The VAE in place of the UNet: the optimizer, EMA, checkpoints and resume below see
     * only ps_student / ps_ema. */
    t->vt = vae_train_create(ctx, c, loader_info(t->loader), &t->ps_student, &t->ps_ema, err);
    if (!t->vt) goto fail;
    goto optimizer;
  }
  if (vocoder_mode) {
    t->vo = vocoder_train_create(ctx, c, loader_info(t->loader), loader_audio_samples(t->loader), &t->ps_student,
                                 &t->ps_ema, err);
    if (!t->vo) goto fail;
    VocoderDisc *vd = vocoder_train_disc(t->vo);
    if (vd) vd->hook = heads_grad_hook, vd->hook_user = t; /* the mean gradient over ranks */
    goto optimizer;
  }
  if (check_data(t, err) || read_encoders(t, err)) goto fail;

  /* Networks. */
  t->student = new_unet(t, &t->ps_student, true);
  t->ema = new_unet(t, &t->ps_ema, false);
  if (t->distill) {
    t->teacher = new_unet(t, &t->ps_teacher, false);
    if (load_unet_weights(t, t->teacher, &t->ps_teacher, c->teacher.weights, "teacher.weights", err)) goto fail;
    if (c->checkpoint.init[0]) {
      if (load_unet_weights(t, t->student, &t->ps_student, c->checkpoint.init, "checkpoint.init", err)) goto fail;
    } else if (c->student.init[0]) {
      if (load_unet_weights(t, t->student, &t->ps_student, c->student.init, "student.init", err)) goto fail;
    } else {
      ema_copy(ctx, t->ps_student.p, t->ps_teacher.p, t->ps_student.n);
    }
  } else {
    const char *init = c->checkpoint.init[0] ? c->checkpoint.init : c->teacher.weights;
    const char *key = c->checkpoint.init[0] ? "checkpoint.init" : "teacher.weights";
    if (init[0]) {
      if (load_unet_weights(t, t->student, &t->ps_student, init, key, err)) goto fail;
    } else {
      unet_init_random(ctx, t->student);
    }
  }
  ema_copy(ctx, t->ps_ema.p, t->ps_student.p, t->ps_ema.n);
  if (c->vae.weights[0]) {
    ShardInfo si = loader_info(t->loader);
    if (open_vae(t, c->vae.weights, si.frames, si.n_mels, t->adversarial, err)) goto fail;
  }
  if (t->adversarial) {
    if (open_adversarial(t, err)) goto fail;
    adv_set_grad_hook(t->adv, heads_grad_hook, t);
  }
  if (t->distill && !strcmp(c->train.precision, "bf16")) {
    /* After the student took its copy of the teacher's fp32 weights. */
    unet_cast(ctx, t->teacher, DT_BF16);
    if (t->vae) vae_cast(ctx, t->vae, DT_BF16);
    if (t->adv) audiomae_cast(ctx, adv_audiomae(t->adv), DT_BF16);
    t->bf16 = true;
  }

optimizer:;
  /* One AdamW: the UNet's parameters, then the jointly trained text tower's (if any). */
  const int n_text = t->tj ? t->tj->ps.n : 0, n_opt = t->ps_student.n + n_text;
  Tensor **opt_p = ctx_alloc_host(ctx, (size_t)n_opt * sizeof *opt_p);
  memcpy(opt_p, t->ps_student.p, (size_t)t->ps_student.n * sizeof *opt_p);
  if (n_text) memcpy(opt_p + t->ps_student.n, t->tj->ps.p, (size_t)n_text * sizeof *opt_p);
  t->opt = adamw_create(ctx, opt_p, n_opt,
                        (AdamWHyper){(float)c->train.lr, (float)c->train.beta1, (float)c->train.beta2,
                                     (float)c->train.adam_eps, (float)c->train.weight_decay});
  t->ema_p = MALLOC_CHECK((size_t)t->opt->n * sizeof(Tensor *));
  t->ema_w = MALLOC_CHECK((size_t)t->opt->n * sizeof(Tensor *));
  MCM_CHECK(t->opt->n == t->ps_ema.n + n_text, "trainer: %d optimised parameters, %d EMA", t->opt->n, t->ps_ema.n + n_text);
  for (int i = 0; i < t->opt->n; i++) {
    /* same creation order, every parameter trainable */
    t->ema_p[i] = i < t->ps_ema.n ? t->ps_ema.p[i] : t->tj->ps_ema.p[i - t->ps_ema.n];
    t->ema_w[i] = adamw_weights(t->opt, i);
  }

  if (have_ckpt) {
    if (trainer_load(t, ckpt, err)) goto fail;
    if (!t->quiet && t->rank == 0) printf("# resumed from %s (step %" PRId64 ")\n", ckpt, t->step);
  } else {
    /* Every rank starts from rank 0's weights (they agree already unless init was random
     * on a GPU with another seed; cheap insurance). */
    comm_broadcast(ctx, t->comm, t->ps_student.p, t->ps_student.n, 0);
    comm_broadcast(ctx, t->comm, t->ps_ema.p, t->ps_ema.n, 0);
    if (t->tj) comm_broadcast(ctx, t->comm, t->tj->ps.p, t->tj->ps.n, 0);
    if (t->tj) comm_broadcast(ctx, t->comm, t->tj->ps_ema.p, t->tj->ps_ema.n, 0);
    VocoderDisc *vd = t->vo ? vocoder_train_disc(t->vo) : NULL;
    if (vd) comm_broadcast(ctx, t->comm, vd->ps.p, vd->ps.n, 0);
  }
  if (t->world > 1) {
    const int64_t bucket = (int64_t)(c->train.allreduce_bucket_mb * 1048576.0);
    t->gs_opt = grad_sync_create(ctx, t->comm, t->opt->params, t->opt->n, bucket);
    VocoderDisc *vd = t->vo ? vocoder_train_disc(t->vo) : NULL;
    if (t->adv) t->disc_params = adv_head_params(t->adv, &t->n_disc_params);
    else if (vd) t->disc_params = vd->d->params, t->n_disc_params = vd->d->n_params;
    if (t->disc_params) t->gs_heads = grad_sync_create(ctx, t->comm, t->disc_params, t->n_disc_params, bucket);
    if (!t->quiet && t->rank == 0) {
      if (bucket > 0)
        printf("# data parallel: %d ranks; gradients averaged in buckets of %g MiB started during backward\n",
               t->world, c->train.allreduce_bucket_mb);
      else
        printf("# data parallel: %d ranks; gradients averaged in one all-reduce after backward\n", t->world);
    }
  }
  if (c->sample.every > 0 && t->rank == 0 && open_pipeline(t, err)) goto fail;
  if (t->rank == 0) {
    char lp[CFG_MAX_STRING + 32];
    mcm_snprintf(lp, sizeof lp, "%s/log.jsonl", c->run.out_dir);
    t->log = fopen(lp, "a");
    if (!t->log) {
      mcm_err(err, "run.out_dir: cannot open %s: %s", lp, strerror(errno));
      goto fail;
    }
  }
  if (!t->quiet && t->rank == 0 && !strcmp(c->train.precision, "bf16")) {
    if (t->bf16)
      printf("# train.precision = bf16: the frozen teacher%s%s compute in bf16 (fp32 accumulation); the student, "
             "its EMA%s stay fp32%s\n", t->vae ? ", VAE" : "", t->adv ? " and AudioMAE" : "",
             t->adv ? " and the heads" : "",
             ctx->dev == DEV_CPU ? " (on the CPU bf16 is emulated: rounded as on the GPU, slower than fp32)" : "");
    else
      printf("# train.precision = bf16: train.mode = %s has no frozen network, so everything runs in fp32\n",
             c->train.mode);
  }
  return t;

fail:
  trainer_free(t);
  return NULL;
}

void trainer_destroy(Trainer *t) { trainer_free(t); }
int64_t trainer_step_count(const Trainer *t) { return t->step; }

int trainer_set_draws(Trainer *t, const TrainerDraws *d, McmErr *err) {
  if (d && !t->distill)
    return mcm_err(err, "trainer_set_draws: train.mode = %s; injected draws are for distill", t->cfg.train.mode);
  t->draws = d;
  return 0;
}

TrainerParts trainer_parts(Trainer *t) { return (TrainerParts){&t->ps_student, &t->ps_ema, t->adv}; }

/* ------------------------------------------------------------------ the step */

static double scheduled_lr(const Trainer *t) {
  const Config *c = &t->cfg;
  double lr = c->train.lr, s = (double)t->step; /* the step being taken, 0-based */
  if (c->train.warmup_steps > 0 && s < (double)c->train.warmup_steps) return lr * (s + 1) / (double)c->train.warmup_steps;
  if (!strcmp(c->train.lr_schedule, "cosine")) {
    double span = (double)(c->train.steps - c->train.warmup_steps);
    double p = span > 0 ? (s - (double)c->train.warmup_steps) / span : 1.0;
    lr *= 0.5 * (1.0 + cos(M_PI * fmin(fmax(p, 0.0), 1.0)));
  }
  return lr;
}

/* Random draws for this rank's B rows as rows of one draw for the whole global batch of
 * world·B rows, of which this rank holds rows k·world + rank (the loader's split). Every
 * rank uses the same seed, so a run on W ranks sees exactly the numbers a one-process run
 * with batch W·B sees, and the two agree up to the order of the gradient sum. The extra
 * draws cost a latent-sized tensor per rank. */
static float *uniform_rows(Trainer *t, int per_row) {
  const int B = t->B, G = B * t->world;
  Tensor *u = tensor_new(t->ctx, DT_F32, SHAPE((int64_t)G * per_row));
  rng_uniform(t->ctx, u);
  float *all = ctx_alloc_host(t->ctx, (size_t)G * per_row * sizeof *all);
  float *mine = ctx_alloc_host(t->ctx, (size_t)B * per_row * sizeof *mine);
  tensor_to_host_f32(t->ctx, u, all);
  /* draw j of global row g is all[j·G + g] */
  for (int j = 0; j < per_row; j++)
    for (int k = 0; k < B; k++) mine[j * B + k] = all[(size_t)j * G + (size_t)k * t->world + t->rank];
  return mine;
}

static Tensor *normal_rows(Trainer *t, int C, int H, int W) {
  const int B = t->B, world = t->world;
  Tensor *g = tensor_new(t->ctx, DT_F32, SHAPE((int64_t)B * world, C, H, W));
  rng_normal(t->ctx, g);
  if (world == 1) return g;
  Tensor *r = op_reshape(t->ctx, g, SHAPE(B, world, (int64_t)C * H * W));
  return op_reshape(t->ctx, op_slice(t->ctx, r, 1, t->rank, 1), SHAPE(B, C, H, W));
}

/* A normal draw of this rank's rows, or the injected one (trainer_set_draws). */
static Tensor *normal_draw(Trainer *t, const float *given, int C, int H, int W) {
  if (!given) return normal_rows(t, C, H, W);
  Tensor *g = tensor_new(t->ctx, DT_F32, SHAPE(t->B, C, H, W));
  tensor_from_host_f32(t->ctx, g, given);
  return g;
}

static int step_once(Trainer *t, StepStats *st, McmErr *err) {
  Ctx *ctx = t->ctx;
  const Config *c = &t->cfg;
  const int B = t->B, C = t->C, H = t->H, W = t->W, D = t->D;
  McmErr e = {{0}};
  const TrainerDraws *dr = t->draws; /* NULL unless a test injects the inputs */
  const Batch *b = dr ? dr->batch : loader_next(t->loader, &e);
  if (!b) return mcm_err(err, "reading the training data: %s", e.msg);
  MCM_CHECK(b->n == B, "trainer: a batch of %d rows, expected %d (drop_last)", b->n, B);

  Tensor *loss, *real_mel = NULL, *fake_mel = NULL, *adv_c = NULL;
  float distill_h = NAN, g_h = NAN;
  float voc_fm = 0, voc_d_real = 0, voc_d_fake = 0; /* the vocoder's discriminators (0 without) */
  if (t->vt) {
    int L, h, w;
    vae_train_latent_shape(t->vt, &L, &h, &w);
    VaeLoss vl = vae_train_loss(ctx, t->vt, b, normal_rows(t, L, h, w));
    loss = vl.loss;
    distill_h = vl.recon, g_h = vl.kl;
    goto update;
  }
  if (t->vo) {
    VocoderLoss vl = vocoder_train_loss(ctx, t->vo, b, (float)scheduled_lr(t));
    loss = vl.loss;
    distill_h = vl.mel, g_h = vocoder_train_disc(t->vo) ? vl.adv : vl.stft;
    voc_fm = vl.fm, voc_d_real = vl.d_real, voc_d_fake = vl.d_fake;
    goto update;
  }
  /* x0 = sampled latent · scale. */
  Tensor *mom = tensor_new(ctx, DT_F32, SHAPE(B, 2 * C, H, W));
  loader_latent_to_tensor(ctx, b, mom);
  /* vae_sample's formula, with this rank's rows of the global draw */
  Tensor *mean = op_slice(ctx, mom, 1, 0, C), *logvar = op_slice(ctx, mom, 1, C, C);
  Tensor *std = op_exp(ctx, op_scale(ctx, op_clamp(ctx, logvar, -30.0f, 20.0f), 0.5f));
  Tensor *z = op_add(ctx, mean, op_mul(ctx, std, normal_draw(t, dr ? dr->latent_eps : NULL, C, H, W)));
  Tensor *x0 = op_scale(ctx, z, t->scale);
  Tensor *cond = tensor_new(ctx, DT_F32, SHAPE(B, D));
  if (t->distill) {
    int *index = ctx_alloc_host(ctx, (size_t)B * sizeof *index);
    if (dr) {
      memcpy(index, dr->index, (size_t)B * sizeof *index);
    } else {
      float *u = uniform_rows(t, 1);
      for (int i = 0; i < B; i++) index[i] = (int)fminf(u[i] * (float)t->grid.n, (float)(t->grid.n - 1));
    }
    Tensor *noise = normal_draw(t, dr ? dr->noise : NULL, C, H, W);
    loader_text_emb_to_tensor(ctx, b, cond);
    float *un = ctx_alloc_host(ctx, (size_t)B * D * sizeof *un);
    for (int i = 0; i < B; i++) memcpy(un + (size_t)i * D, t->uncond, (size_t)D * sizeof *un);
    Tensor *uncond = tensor_new(ctx, DT_F32, SHAPE(B, D));
    tensor_from_host_f32(ctx, uncond, un);
    DistillOpts o = {&t->grid, (float)c->train.guidance_w, strcmp(c->train.loss, "huber") ? DISTANCE_L2 : DISTANCE_HUBER,
                     (float)c->train.huber_c, 0.5, 10.0};
    DistillOut d = distill_objective(ctx, t->student, t->ema, t->teacher, &t->sched, &o, x0, noise, index, cond, uncond);
    loss = d.loss;
    if (t->adversarial) {
      /* The student's x̂0, unscaled and decoded by the frozen VAE, against the clip's mel. */
      real_mel = tensor_new(ctx, DT_F32, SHAPE(B, 1, b->frames, b->n_mels));
      loader_batch_to_tensor(ctx, b, real_mel);
      adv_c = adv_condition(ctx, t->adv, real_mel, cond);
      fake_mel = vae_decode(ctx, t->vae, op_scale(ctx, d.model_pred, 1.0f / t->scale));
      Tensor *g = adv_generator_loss(ctx, t->adv, fake_mel, adv_c);
      tensor_to_host_f32(ctx, d.loss, &distill_h);
      tensor_to_host_f32(ctx, g, &g_h);
      loss = op_add_scaled(ctx, g, d.loss, 1.0f, (float)c->train.lambda_distill);
    }
  } else {
    float *u = uniform_rows(t, 2); /* u[i]: timestep, u[B + i]: dropout */
    int *tt = ctx_alloc_host(ctx, (size_t)B * sizeof *tt);
    const int T = t->sched.cfg.T;
    for (int i = 0; i < B; i++) tt[i] = (int)fminf(u[i] * (float)T, (float)(T - 1));
    Tensor *noise = normal_rows(t, C, H, W);
    if (t->tj) {
      /* text.joint: the tower embeds the captions in grad mode; a dropped row reads "" */
      bool *drop = ctx_alloc_host(ctx, (size_t)B * sizeof *drop);
      for (int i = 0; i < B; i++) drop[i] = u[B + i] < (float)c->train.cond_dropout;
      if (!(cond = text_joint_embed(ctx, t->tj, b->captions, drop, B, &e)))
        return mcm_err(err, "the batch's captions: %s", e.msg);
    } else {
      float *emb = ctx_alloc_host(ctx, (size_t)B * D * sizeof *emb);
      memcpy(emb, b->text_emb, (size_t)B * D * sizeof *emb);
      for (int i = 0; i < B; i++)
        if (u[B + i] < (float)c->train.cond_dropout) memcpy(emb + (size_t)i * D, t->uncond, (size_t)D * sizeof *emb);
      tensor_from_host_f32(ctx, cond, emb);
    }
    loss = teacher_objective(ctx, t->student, &t->sched, x0, noise, tt, cond);
  }
update:;
  float loss_h;
  tensor_to_host_f32(ctx, loss, &loss_h);
  if (!t->adversarial && !t->vt && !t->vo) distill_h = loss_h;
  /* Data parallel: buckets of the mean gradient start during backward (every rank lists
   * every parameter, so a parameter without a gradient this step is averaged as zeros), and
   * are all in before anything else talks to the other ranks. */
  if (t->gs_opt) grad_sync_begin(t->gs_opt, ctx);
  backward(ctx, loss);
  if (t->gs_opt) grad_sync_finish(t->gs_opt, ctx);
  /* The heads' step on the same fake, detached (skipped with the student's when the
   * generator side is not finite: a NaN fake would poison the heads too). */
  AdvLosses al = {0};
  bool finite = isfinite(loss_h);
  if (t->adversarial) {
    double f = finite ? 0.0 : 1.0;
    comm_allreduce_sum_f64(t->comm, &f, 1);
    if (f == 0 && adv_discriminator_step(ctx, t->adv, real_mel, tensor_detach(ctx, fake_mel), adv_c,
                                         (float)c->adversarial.lr, &al, &e))
      return mcm_err(err, "discriminator step: %s", e.msg);
  }
  if (dr && dr->on_grads) dr->on_grads(ctx, dr->user);
  double norm = c->train.grad_clip > 0 ? grad_clip(ctx, t->opt->params, t->opt->n, (float)c->train.grad_clip)
                                       : grad_global_norm(ctx, t->opt->params, t->opt->n);
  double sums[9] = {loss_h, finite ? 0.0 : 1.0, distill_h, g_h, al.d_real + voc_d_real, al.d_fake + voc_d_fake, al.r1,
                    al.d_acc, voc_fm};
  comm_allreduce_sum_f64(t->comm, sums, 9);
  st->loss = sums[0] / t->world;
  st->distill = sums[2] / t->world, st->g_loss = sums[3] / t->world;
  st->d_real = sums[4] / t->world, st->d_fake = sums[5] / t->world, st->r1 = sums[6] / t->world;
  st->d_acc = sums[7] / t->world, st->fm = sums[8] / t->world;
  st->grad_norm = norm;
  st->lr = scheduled_lr(t);
  st->skipped = sums[1] > 0 || !isfinite(norm);
  if (st->skipped) {
    t->skipped++;
    t->nan_streak++;
  } else {
    t->nan_streak = 0;
    adamw_step(ctx, t->opt, (float)st->lr);
    if ((t->vt && c->vae_train.ema_decay == 0) || t->vo) ema_copy(ctx, t->ema_p, t->ema_w, t->opt->n); /* no EMA: export the weights */
    else ema_update(ctx, t->ema_p, t->ema_w, t->opt->n,
                    (float)(t->vt ? c->vae_train.ema_decay : t->distill ? c->train.ema_decay : c->train.teacher_ema_decay));
  }
  params_zero_grad(ctx, t->opt->params, t->opt->n);
  ctx_step_reset(ctx);
  t->step++;
  if (t->nan_streak >= c->train.nan_tolerance)
    return mcm_err(err,
                   "step %" PRId64 ": %" PRId64 " steps in a row had a NaN or infinite loss or gradient (train.nan_tolerance = %lld); "
                   "stopping (hint: lower train.lr, or check the data with ./prepare)",
                   t->step, t->nan_streak, (long long)c->train.nan_tolerance);
  return 0;
}

int trainer_step(Trainer *t, StepStats *st, McmErr *err) {
  const double f0 = t->ctx->flops, f0_bf16 = t->ctx->flops_bf16;
  int rc = step_once(t, st, err);
  st->flops = t->ctx->flops - f0;
  st->flops_bf16 = t->ctx->flops_bf16 - f0_bf16;
  t->flops_since_log += st->flops;
  t->flops_bf16_since_log += st->flops_bf16;
  return rc;
}

/* ------------------------------------------------------------------ the loop */

static void fmt_duration(double s, char *buf, size_t size) {
  long long x = (long long)(s + 0.5);
  if (x >= 3600) mcm_snprintf(buf, size, "%lldh%02lldm", x / 3600, x / 60 % 60);
  else if (x >= 60) mcm_snprintf(buf, size, "%lldm%02llds", x / 60, x % 60);
  else mcm_snprintf(buf, size, "%llds", x);
}

static void log_step(Trainer *t, const StepStats *st) {
  if (t->rank != 0) return;
  double now = now_s(), dt = now - t->t_last_log;
  int64_t steps = t->step - t->step_last_log;
  double sps = dt > 0 ? (double)steps * t->B * t->world / dt : 0.0;
  double eta = steps > 0 ? dt / (double)steps * (double)(t->cfg.train.steps - t->step) : 0.0;
  /* Per device: this rank's model FLOPs over the wall time (every rank does the same work). */
  double tflops = dt > 0 ? t->flops_since_log / dt / 1e12 : 0.0;
  /* MFU: the time these FLOPs need at the device's peak over the wall time, each product at
   * the peak of the precision it ran in (the frozen networks' bf16 at the tensor-core peak,
   * the student's fp32 at the fp32 one), so a mixed step is never flattered. */
  const double peak = device_peak_tflops(t->ctx->device_name, false);
  const double peak_bf16 = device_peak_tflops(t->ctx->device_name, true);
  const double f_bf16 = t->flops_bf16_since_log, f_f32 = t->flops_since_log - f_bf16;
  double mfu = peak > 0 && peak_bf16 > 0 && dt > 0 ? (f_f32 / (peak * 1e12) + f_bf16 / (peak_bf16 * 1e12)) / dt : NAN;
  const double bf16_share = t->flops_since_log > 0 ? f_bf16 / t->flops_since_log : 0.0;
  t->t_last_log = now, t->step_last_log = t->step, t->flops_since_log = 0, t->flops_bf16_since_log = 0;
  /* This rank's memory: parameters, gradients, optimizer state and library workspaces, plus
   * the activation arena's peak over the run (its high water: one step's forward and
   * backward, the frozen networks' included). The GPU's own overheads (CUDA context, cuDNN
   * plans) come on top. */
  const double GIB = 1073741824.0;
  const double mem_persistent = (double)t->ctx->persistent_bytes + (double)t->ctx->workspace_bytes;
  const double mem_act = (double)t->ctx->act.high_water;
  if (!t->quiet) {
    char eta_s[32];
    fmt_duration(eta, eta_s, sizeof eta_s);
    char adv[160] = "";
    if (t->adversarial)
      mcm_snprintf(adv, sizeof adv, " | distill %.5g | G %.4g | D real %.4g fake %.4g | R1 %.3g | D acc %.2f",
                   st->distill, st->g_loss, st->d_real, st->d_fake, st->r1, st->d_acc);
    else if (t->vo && vocoder_train_disc(t->vo))
      mcm_snprintf(adv, sizeof adv, " | mel %.5g | G %.4g | fm %.4g | D real %.4g fake %.4g", st->distill,
                   st->g_loss, st->fm, st->d_real, st->d_fake);
    char speed[160];
    if (t->ctx->dev == DEV_CPU)
      mcm_snprintf(speed, sizeof speed, "%.1f GFLOP/s", tflops * 1e3);
    else if (peak > 0 && bf16_share > 0)
      mcm_snprintf(speed, sizeof speed, "%.1f TFLOP/s | MFU %.1f%% (%.0f%% of FLOPs bf16, peak %.0f; fp32 peak %.0f)",
                   tflops, 100 * mfu, 100 * bf16_share, peak_bf16, peak);
    else if (peak > 0)
      mcm_snprintf(speed, sizeof speed, "%.1f TFLOP/s | MFU %.1f%% of %.0f (fp32)", tflops, 100 * mfu, peak);
    else
      mcm_snprintf(speed, sizeof speed, "%.1f TFLOP/s | MFU ? (no peak known for this GPU)", tflops);
    /* GiB at training sizes, MiB below one GiB (the tiny configs) */
    const bool gib = mem_persistent + mem_act >= GIB;
    const double u = gib ? GIB : GIB / 1024;
    printf("step %" PRId64 "/%lld | loss %.6g%s | grad %.4g | lr %.3g | %.2f samples/s | %s | mem %.2f %s "
           "(persistent %.2f + activations %.2f) | ETA %s%s\n",
           t->step, (long long)t->cfg.train.steps, st->loss, adv, st->grad_norm, st->lr, sps, speed,
           (mem_persistent + mem_act) / u, gib ? "GiB" : "MiB", mem_persistent / u, mem_act / u, eta_s,
           st->skipped ? " | SKIPPED (non-finite)" : "");
    fflush(stdout);
  }
  fprintf(t->log,
          "{\"step\": %" PRId64 ", \"mode\": \"%s\", \"loss\": %.9g, \"grad_norm\": %.9g, \"lr\": %.9g, "
          "\"samples_per_s\": %.4f, \"skipped\": %" PRId64 ", \"world\": %d, \"flops_per_step\": %.6g, "
          "\"tflops_per_device\": %.6g",
          t->step, t->cfg.train.mode, st->loss, st->grad_norm, st->lr, sps, t->skipped, t->world, st->flops, tflops);
  fprintf(t->log, ", \"flops_bf16_per_step\": %.6g, \"mem_persistent_bytes\": %.0f, \"mem_activation_peak_bytes\": %.0f",
          st->flops_bf16, mem_persistent, mem_act);
  if (peak > 0)
    fprintf(t->log, ", \"mfu\": %.6g, \"peak_tflops\": %.6g, \"peak_tflops_bf16\": %.6g", mfu, peak, peak_bf16);
  if (t->gs_opt) {
    int nb;
    grad_sync_buckets(t->gs_opt, &nb);
    fprintf(t->log, ", \"allreduce_buckets\": %d, \"allreduce_overlapped\": %d", nb, grad_sync_overlapped(t->gs_opt));
  }
  if (t->adversarial)
    fprintf(t->log, ", \"distill\": %.9g, \"g_loss\": %.9g, \"d_real\": %.9g, \"d_fake\": %.9g, \"r1\": %.9g, \"d_acc\": %.6g",
            st->distill, st->g_loss, st->d_real, st->d_fake, st->r1, st->d_acc);
  else if (t->vo && vocoder_train_disc(t->vo))
    fprintf(t->log, ", \"mel\": %.9g, \"g_loss\": %.9g, \"fm\": %.9g, \"d_real\": %.9g, \"d_fake\": %.9g",
            st->distill, st->g_loss, st->fm, st->d_real, st->d_fake);
  fprintf(t->log, "}\n");
  fflush(t->log);
}

int trainer_run(Trainer *t, McmErr *err) {
  struct sigaction sa = {0}, old_term, old_int;
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  g_stop_signal = 0;
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGINT, &sa, &old_int);
  int rc = 0;
  t->t_last_log = now_s(), t->step_last_log = t->step;
  const Config *c = &t->cfg;
  while (t->step < c->train.steps) {
    StepStats st;
    if (trainer_step(t, &st, err)) {
      rc = -1;
      break;
    }
    if (t->step % c->run.log_every == 0 || t->step == c->train.steps) log_step(t, &st);
    /* A signal on any rank stops every rank at the same step. */
    double stop = g_stop_signal ? 1.0 : 0.0;
    comm_allreduce_sum_f64(t->comm, &stop, 1);
    if (t->pipe && t->step % c->sample.every == 0 && write_samples(t, err)) {
      rc = -1;
      break;
    }
    if (t->step % c->checkpoint.every == 0 || t->step == c->train.steps || stop > 0) {
      if (trainer_save(t, err)) {
        rc = -1;
        break;
      }
    }
    if (stop > 0) {
      if (t->rank == 0)
        fprintf(stderr, "train: stopped by a signal after step %" PRId64 "; checkpoint written to %s\n", t->step,
                c->checkpoint.dir);
      rc = 1;
      break;
    }
  }
  sigaction(SIGTERM, &old_term, NULL);
  sigaction(SIGINT, &old_int, NULL);
  return rc;
}
