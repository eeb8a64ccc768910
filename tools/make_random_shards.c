/* make_random_shards: training data for ./train's distill mode without audio, a VAE or a
 * text tower: shards of random but plausibly scaled rows at exactly the sizes a configuration
 * asks for, encoders.h5, a mel -> fbank bridge and (optionally) a random teacher. For timing
 * and memory measurements of the full-size step (tools/gpu_session.sh, configs/bench_step.ini)
 * and for tests; nothing here is meant to be learnt from.
 *
 * Sizes, all from the resolved configuration: mel (prepare.segment_frames, mel.n_mels) at
 * mel.rate / mel.hop; latents (2·unet.in_channels, unet.latent_frames, unet.latent_bins), the
 * VAE's mean and logvar as ./prepare --add-latents stores them; text embeddings
 * (unet.context_dim); the bridge mel.n_mels -> adversarial.mae_bins. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/cli.h"
#include "core/config.h"
#include "core/tensorfile.h"
#include "data/shard.h"
#include "diffusion/bridge.h"
#include "diffusion/trainer.h"
#include "kernels/rng.h"
#include "models/params.h"
#include "models/unet.h"
#include "models/weights.h"

static const char USAGE[] =
    "usage: make_random_shards --config FILE --out DIR [options]\n"
    "\n"
    "Writes random training data at the sizes of a ./train configuration:\n"
    "  DIR/shard_NNNNN.h5  mel (segment_frames x n_mels), VAE moments (mean ~ N(0,1), logvar ~ -4)\n"
    "                      and L2-normalised text embeddings (unet.context_dim)\n"
    "  DIR/encoders.h5     uncond_text_emb and vae_scaling_factor (1.0753, MusicLDM's)\n"
    "  DIR/bridge.h5       a mel -> fbank bridge mel.n_mels -> adversarial.mae_bins (an\n"
    "                      interpolation matrix x 2 plus noise, as a fitted one looks)\n"
    "The same seed gives the same files.\n"
    "\n"
    "options:\n"
    "  --config FILE     the ./train configuration whose sizes to use (required)\n"
    "  --set S.K=V       override one configuration key, as ./train's --set (repeatable)\n"
    "  --out DIR         output directory (created if missing; files there are replaced)\n"
    "  --rows N          rows in all (default 32; ./train needs at least train.batch_size)\n"
    "  --per-shard N     rows per shard (default 8)\n"
    "  --seed N          random seed (default 0)\n"
    "  --teacher FILE    also write a random UNet of the configuration's [unet] to FILE (for\n"
    "                    teacher.weights when no converted or bundle UNet fits the sizes)\n"
    "  --help            this text\n"
    "\n"
    "example (from the repository root):\n"
    "  build/cpu/tools/make_random_shards --config configs/bench_step.ini --out work/data --rows 32\n";

/* Rows of one shard: a log-magnitude mel in MusicLDM's range (log of a clamped magnitude,
 * about −11.5 .. 2; louder low bins, a moving ripple, noise), latent moments and embeddings. */
static int write_shard(const char *path, const Config *c, int64_t first, int n, uint64_t seed, McmErr *err) {
  const int F = (int)c->prepare.segment_frames, M = (int)c->mel.n_mels;
  const int C2 = 2 * (int)c->unet.in_channels, H = (int)c->unet.latent_frames, W = (int)c->unet.latent_bins;
  const int D = (int)c->unet.context_dim;
  ShardInfo info = {F, M, (int)c->mel.rate, (int)c->mel.hop};
  ShardWriter *w = shard_create(path, &info, err);
  if (!w) return -1;
  float *mel = MALLOC_CHECK((size_t)F * M * sizeof *mel);
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) {
    const int64_t row = first + i;
    rng_normal_host(seed, (uint64_t)row * 3 * (uint64_t)F * (uint64_t)M, mel, (int64_t)F * M);
    for (int f = 0; f < F; f++)
      for (int m = 0; m < M; m++) {
        float v = -3.0f - 4.0f * (float)m / (float)M + 2.0f * sinf(0.21f * (float)f + 0.37f * (float)m + (float)row) +
                  0.5f * mel[f * M + m];
        mel[f * M + m] = fminf(fmaxf(v, -11.5f), 2.0f);
      }
    rc = shard_append(w, mel, "random caption", "make_random_shards", 0, err);
  }
  free(mel);
  if (rc) {
    shard_abort(w);
    return -1;
  }
  if (shard_commit(w, err)) return -1;

  /* mean ~ N(0, 1), logvar ~ −4 + 0.1·N(0, 1): a trained VAE's posterior std ≈ 0.14 */
  const int64_t per = (int64_t)C2 * H * W, half = per / 2;
  float *lat = MALLOC_CHECK((size_t)(n * per + 1) * sizeof *lat);
  float *emb = MALLOC_CHECK((size_t)(n * D + 1) * sizeof *emb);
  rng_normal_host(seed + 1, (uint64_t)first * (uint64_t)per, lat, n * per);
  for (int i = 0; i < n; i++)
    for (int64_t j = half; j < per; j++) lat[i * per + j] = -4.0f + 0.1f * lat[i * per + j];
  /* CLAP text embeddings are L2-normalised */
  rng_normal_host(seed + 2, (uint64_t)first * (uint64_t)D, emb, (int64_t)n * D);
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (int d = 0; d < D; d++) s += (double)emb[i * D + d] * emb[i * D + d];
    for (int d = 0; d < D; d++) emb[i * D + d] /= (float)sqrt(s > 0 ? s : 1.0);
  }
  rc = shard_add_latents(path, lat, C2, H, W, err);
  if (!rc) rc = shard_add_text_emb(path, emb, D, err);
  free(lat), free(emb);
  return rc;
}

static int write_encoders(const char *path, int D, uint64_t seed, McmErr *err) {
  float *un = MALLOC_CHECK((size_t)D * sizeof *un), scale = 1.0753243f; /* MusicLDM's scale_factor */
  rng_normal_host(seed + 3, 0, un, D);
  double s = 0;
  for (int d = 0; d < D; d++) s += (double)un[d] * un[d];
  for (int d = 0; d < D; d++) un[d] /= (float)sqrt(s);
  TensorFile *tf = tf_create(path, err);
  int rc = tf ? 0 : -1;
  if (!rc) rc = tf_write(tf, "uncond_text_emb", DT_F32, 1, (int64_t[]){D}, un, err);
  if (!rc) rc = tf_write(tf, "vae_scaling_factor", DT_F32, 0, NULL, &scale, err);
  if (!rc) rc = tf_set_attr(tf, "format", "mcm-encoders 1", err);
  if (!rc) rc = tf_commit(tf, err);
  else if (tf) tf_abort(tf);
  free(un);
  return rc;
}

/* A fitted bridge is close to an interpolation from f_in to f_out bins times 2 (magnitude ->
 * power) plus a level offset; this one is that plus a little noise. */
static int write_bridge(const char *path, int f_in, int f_out, uint64_t seed, McmErr *err) {
  float *w = MALLOC_CHECK((size_t)f_in * f_out * sizeof *w), *b = MALLOC_CHECK((size_t)f_out * sizeof *b);
  rng_normal_host(seed + 4, 0, w, (int64_t)f_in * f_out);
  for (int o = 0; o < f_out; o++) {
    for (int i = 0; i < f_in; i++) w[o * f_in + i] *= 0.02f;
    double p = ((double)o + 0.5) * f_in / f_out - 0.5;
    p = p < 0 ? 0 : p > f_in - 1 ? f_in - 1 : p;
    int i0 = (int)p, i1 = i0 + 1 < f_in ? i0 + 1 : i0;
    float frac = (float)(p - i0);
    w[o * f_in + i0] += 2.0f * (1.0f - frac);
    w[o * f_in + i1] += 2.0f * frac;
    b[o] = 4.0f;
  }
  Ctx *ctx = ctx_create_cpu(seed);
  Bridge *br = bridge_create(ctx, f_in, f_out);
  bridge_set(ctx, br, w, b);
  TensorFile *tf = tf_create(path, err);
  int rc = tf ? 0 : -1;
  if (!rc) rc = bridge_save(ctx, br, tf, err);
  if (!rc) rc = tf_commit(tf, err);
  else if (tf) tf_abort(tf);
  ctx_destroy(ctx);
  free(w), free(b);
  return rc;
}

static int write_teacher(const char *path, const Config *c, uint64_t seed, McmErr *err) {
  UNetConfig u = trainer_unet_config(c); /* the UNet ./train builds */
  McmErr why = {{0}};
  if (unet_config_check(&u, &why)) return mcm_err(err, "[unet]: %s", why.msg);
  Ctx *ctx = ctx_create_cpu(seed + 5);
  ctx_set_grad(ctx, false);
  ParamSet ps;
  params_init(&ps, "");
  unet_init_random(ctx, unet_create(ctx, &u, &ps));
  char *config = unet_config_json(&u, (int)c->unet.latent_frames);
  TensorFile *tf = tf_create(path, err);
  int rc = tf ? 0 : -1;
  if (!rc) rc = tf_set_attr(tf, "mcm_format", "mcm-weights 1", err);
  if (!rc) rc = tf_set_attr(tf, "component", "unet", err);
  if (!rc) rc = tf_set_attr(tf, "source", "random weights (make_random_shards --teacher)", err);
  if (!rc) rc = tf_set_attr(tf, "config", config, err);
  if (!rc) rc = params_save(ctx, &ps, tf, "", DT_F32, err);
  if (!rc) rc = tf_commit(tf, err);
  else if (tf) tf_abort(tf);
  free(config);
  params_free(&ps);
  ctx_destroy(ctx);
  return rc;
}

/* mkdir -p: the work directory of a benchmark is often new. */
static int make_dir(const char *path, McmErr *err) {
  char buf[4096];
  mcm_snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0777) && errno != EEXIST) return mcm_err(err, "--out %s: cannot create %s: %s", path, buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0777) && errno != EEXIST) return mcm_err(err, "--out %s: cannot create it: %s", path, strerror(errno));
  struct stat st;
  if (stat(path, &st) || !S_ISDIR(st.st_mode)) return mcm_err(err, "--out %s: exists and is not a directory", path);
  return 0;
}

int main(int argc, char **argv) {
  const char *config = NULL, *out = NULL, *teacher = NULL;
  long long rows = 32, per = 8, seed = 0;
  char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0;
  McmErr err = {{0}};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      free(sets);
      return 0;
    } else if (!strcmp(a, "--config") || !strcmp(a, "--out") || !strcmp(a, "--teacher")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      *(a[2] == 'c' ? &config : a[2] == 'o' ? &out : &teacher) = v;
    } else if (!strcmp(a, "--set")) {
      if (cli_value(argc, argv, &i, &v, &err)) goto bad;
      sets[n_sets++] = (char *)v;
    } else if (!strcmp(a, "--rows")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 1, 1 << 24, &rows, &err)) goto bad;
    } else if (!strcmp(a, "--per-shard")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 1, 1 << 24, &per, &err)) goto bad;
    } else if (!strcmp(a, "--seed")) {
      if (cli_value(argc, argv, &i, &v, &err) || cli_int(a, v, 0, INT64_MAX / 2, &seed, &err)) goto bad;
    } else {
      mcm_err(&err, "unknown argument '%s' (see make_random_shards --help)", a);
      goto bad;
    }
  }
  if (!config || !out) {
    mcm_err(&err, "give --config FILE and --out DIR (see make_random_shards --help)");
    goto bad;
  }
  Config cfg;
  /* Only sizes are read: keys without a default (train.steps, data.train_shards) may be unset. */
  if (config_resolve_optional(&cfg, config, n_sets, sets, &err)) goto bad;
  if (make_dir(out, &err)) goto bad;
  char path[4200];
  int shards = 0;
  for (long long first = 0; first < rows; first += per, shards++) {
    int n = (int)(rows - first < per ? rows - first : per);
    mcm_snprintf(path, sizeof path, "%s/shard_%05d.h5", out, shards);
    if (write_shard(path, &cfg, first, n, (uint64_t)seed, &err)) goto bad;
  }
  mcm_snprintf(path, sizeof path, "%s/encoders.h5", out);
  if (write_encoders(path, (int)cfg.unet.context_dim, (uint64_t)seed, &err)) goto bad;
  mcm_snprintf(path, sizeof path, "%s/bridge.h5", out);
  if (write_bridge(path, (int)cfg.mel.n_mels, (int)cfg.adversarial.mae_bins, (uint64_t)seed, &err)) goto bad;
  if (teacher && write_teacher(teacher, &cfg, (uint64_t)seed, &err)) goto bad;
  printf("make_random_shards: %lld rows in %d shards (mel %lld x %lld, latents %lld x %lld x %lld, text %lld), "
         "encoders.h5 and bridge.h5 (%lld -> %lld bins) in %s%s%s\n",
         rows, shards, (long long)cfg.prepare.segment_frames, (long long)cfg.mel.n_mels,
         (long long)(2 * cfg.unet.in_channels), (long long)cfg.unet.latent_frames, (long long)cfg.unet.latent_bins,
         (long long)cfg.unet.context_dim, (long long)cfg.mel.n_mels, (long long)cfg.adversarial.mae_bins, out,
         teacher ? "; teacher " : "", teacher ? teacher : "");
  free(sets);
  return 0;
bad:
  fprintf(stderr, "make_random_shards: error: %s\n", err.msg);
  free(sets);
  return 2;
}
