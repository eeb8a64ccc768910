/* train.mode = vocoder: the differentiable STFT and log-mel, the multi-resolution STFT loss,
 * the objective, the network set-up and its checks, the exported weights (see
 * train_vocoder.h). Shape letters: B batch, S samples, T mel frames, M mel bins, K FFT bins,
 * F STFT frames, P = n_fft/2 the reflect padding. */
#include "diffusion/train_vocoder.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/checkpoint.h"
#include "core/tensorfile.h"
#include "kernels/math.h"
#include "kernels/ops.h"
#include "models/weights.h"

/* Parallel WaveGAN's resolutions: (n_fft, hop, win). */
static const int MR_RES[VOCODER_STFT_RES][3] = {{512, 50, 240}, {1024, 120, 600}, {2048, 240, 1200}};

struct VocoderTrain {
  const Config *cfg; /* the trainer's */
  HifiganConfig hc;
  ShardInfo si;
  int S;                   /* audio samples per row */
  ParamSet ps_g, ps_e;     /* the models' full sets (buffers included) */
  Hifigan *g, *ema;        /* trained and exported */
  DiffMel *dm;
  MrStft mr;
  VocoderDisc *disc;       /* train.adversarial, else NULL */
};

/* ------------------------------------------------------------------ STFT */

static Tensor *constant(Ctx *ctx, const float *host, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  tensor_from_host_f32(ctx, t, host);
  return t;
}

Stft stft_create(Ctx *ctx, int n_fft, int hop, int win) {
  MCM_CHECK(n_fft >= 4 && n_fft % 2 == 0 && hop >= 1 && win >= 1 && win <= n_fft,
            "stft_create: n_fft %d (even, >= 4), hop %d, win %d (1..n_fft)", n_fft, hop, win);
  Stft s = {n_fft, hop, win, n_fft / 2 + 1, NULL, NULL};
  const int N = n_fft, K = s.K, P = N / 2;
  double *w = calloc((size_t)N, sizeof *w); /* periodic Hann of length win, centred */
  float *basis = malloc((size_t)2 * K * N * sizeof *basis);
  float *flip = calloc((size_t)P * P, sizeof *flip);
  MCM_CHECK(w && basis && flip, "stft_create: out of memory");
  for (int i = 0; i < win; i++) w[(N - win) / 2 + i] = 0.5 - 0.5 * cos(2.0 * M_PI * i / win);
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++) {
      /* the phase reduced mod N first: exact angles for large k·n */
      double ph = 2.0 * M_PI * (double)(((int64_t)k * n) % N) / N;
      basis[(size_t)k * N + n] = (float)(w[n] * cos(ph));
      basis[(size_t)(K + k) * N + n] = (float)(-w[n] * sin(ph));
    }
  for (int i = 0; i < P; i++) flip[(size_t)i * P + (P - 1 - i)] = 1.0f;
  s.basis = constant(ctx, basis, SHAPE(2 * K, 1, N));
  s.flip = constant(ctx, flip, SHAPE(P, P));
  free(w), free(basis), free(flip);
  return s;
}

/* wav (B, S) -> (B, S + 2P): left x[P], ..., x[1]; x; right x[S−2], ..., x[S−1−P]. */
static Tensor *reflect_pad(Ctx *ctx, const Stft *s, Tensor *wav) {
  const int64_t S = wav->shape[1], P = s->n_fft / 2;
  MCM_CHECK(S > P, "stft: %lld samples, reflect padding by n_fft/2 = %lld needs more", (long long)S, (long long)P);
  Tensor *left = op_matmul(ctx, op_slice(ctx, wav, 1, 1, P), s->flip, false, false);          /* (B, P) */
  Tensor *right = op_matmul(ctx, op_slice(ctx, wav, 1, S - 1 - P, P), s->flip, false, false); /* (B, P) */
  Tensor *parts[3] = {left, wav, right};
  return op_concat(ctx, parts, 3, 1);
}

Tensor *stft_magnitude(Ctx *ctx, const Stft *s, Tensor *wav, float eps) {
  MCM_CHECK(wav->ndim == 2, "stft_magnitude: wav must be (B, S), got %s", TENSOR_SHAPE_STR(wav));
  const int64_t B = wav->shape[0];
  Tensor *x = reflect_pad(ctx, s, wav);
  x = op_reshape(ctx, x, SHAPE(B, 1, x->shape[1]));                             /* (B, 1, S + 2P) */
  Tensor *y = op_conv1d(ctx, x, s->basis, NULL, conv1d_args(s->hop, 0, 1));     /* (B, 2K, F) */
  Tensor *re = op_slice(ctx, y, 1, 0, s->K), *im = op_slice(ctx, y, 1, s->K, s->K);
  Tensor *pw = op_add(ctx, op_square(ctx, re), op_square(ctx, im));             /* (B, K, F) */
  return op_sqrt(ctx, op_clamp(ctx, pw, eps, INFINITY));
}

/* ------------------------------------------------------------------ log-mel */

DiffMel *diff_mel_create(Ctx *ctx, const MelConfig *cfg, McmErr *err) {
  Mel *mel = mel_create(cfg, err); /* checks the configuration, builds the filterbank */
  if (!mel) return NULL;
  DiffMel *m = calloc(1, sizeof *m);
  MCM_CHECK(m, "diff_mel_create: out of memory");
  m->cfg = *cfg;
  m->stft = stft_create(ctx, cfg->n_fft, cfg->hop, cfg->win);
  m->fb = constant(ctx, mel_filterbank(mel), SHAPE(cfg->n_mels, m->stft.K));
  mel_destroy(mel);
  return m;
}

void diff_mel_destroy(DiffMel *m) { free(m); }

Tensor *diff_mel(Ctx *ctx, const DiffMel *m, Tensor *wav) {
  Tensor *mag = stft_magnitude(ctx, &m->stft, wav, VOCODER_MEL_EPS);            /* (B, K, F) */
  Tensor *mel = op_matmul(ctx, mag, m->fb, true, true);                         /* (B, F, M) */
  return op_log(ctx, op_clamp(ctx, mel, m->cfg.log_floor, INFINITY));
}

/* ------------------------------------------------------------------ multi-resolution STFT */

MrStft mr_stft_create(Ctx *ctx) {
  MrStft m;
  for (int r = 0; r < VOCODER_STFT_RES; r++) m.res[r] = stft_create(ctx, MR_RES[r][0], MR_RES[r][1], MR_RES[r][2]);
  return m;
}

int mr_stft_min_samples(void) {
  int n = 0;
  for (int r = 0; r < VOCODER_STFT_RES; r++)
    if (MR_RES[r][0] / 2 + 1 > n) n = MR_RES[r][0] / 2 + 1;
  return n;
}

Tensor *mr_stft_loss(Ctx *ctx, const MrStft *m, Tensor *pred, Tensor *target, float *sc, float *mag) {
  CHECK_SAME_SHAPE("mr_stft_loss", pred, target);
  Tensor *sc_sum = NULL, *mag_sum = NULL;
  for (int r = 0; r < VOCODER_STFT_RES; r++) {
    Tensor *xp = stft_magnitude(ctx, &m->res[r], pred, VOCODER_MAG_EPS);   /* (B, K, F) */
    Tensor *xt = stft_magnitude(ctx, &m->res[r], target, VOCODER_MAG_EPS); /* (B, K, F), no gradient */
    Tensor *num = op_sqrt(ctx, op_sum(ctx, op_square(ctx, op_sub(ctx, xt, xp))));
    Tensor *den = op_sqrt(ctx, op_sum(ctx, op_square(ctx, xt)));
    Tensor *c = op_div(ctx, num, den);                                       /* (1) */
    Tensor *l = op_mean(ctx, op_abs(ctx, op_sub(ctx, op_log(ctx, xt), op_log(ctx, xp)))); /* (1) */
    sc_sum = sc_sum ? op_add(ctx, sc_sum, c) : c;
    mag_sum = mag_sum ? op_add(ctx, mag_sum, l) : l;
  }
  const float inv = 1.0f / VOCODER_STFT_RES;
  if (sc) {
    tensor_to_host_f32(ctx, sc_sum, sc);
    *sc *= inv;
  }
  if (mag) {
    tensor_to_host_f32(ctx, mag_sum, mag);
    *mag *= inv;
  }
  return op_add_scaled(ctx, sc_sum, mag_sum, inv, inv);
}

/* ------------------------------------------------------------------ the objective */

/* ŵ = G(mel)[:, :S] and the weighted mel term, both on the tape. */
static Tensor *generate(Ctx *ctx, Hifigan *g, const DiffMel *dm, Tensor *mel, Tensor *wav, float mel_weight,
                        Tensor **l_mel) {
  MCM_CHECK(mel->ndim == 3 && wav->ndim == 2 && mel->shape[0] == wav->shape[0] &&
                wav->shape[1] == mel->shape[1] * dm->cfg.hop && mel->shape[2] == dm->cfg.n_mels,
            "vocoder_objective: mel %s and wav %s: need (B, T, %d) and (B, T x %d)", TENSOR_SHAPE_STR(mel),
            TENSOR_SHAPE_STR(wav), dm->cfg.n_mels, dm->cfg.hop);
  const int64_t T = mel->shape[1], S = wav->shape[1];
  Tensor *out = hifigan_forward(ctx, g, mel);                                   /* (B, L), L >= S */
  MCM_CHECK(out->shape[1] >= S, "vocoder_objective: the generator gives %lld samples for %lld frames, fewer than %lld",
            (long long)out->shape[1], (long long)T, (long long)S);
  Tensor *wh = op_slice(ctx, out, 1, 0, S);                                      /* (B, S) */
  Tensor *mh = op_slice(ctx, diff_mel(ctx, dm, wh), 1, 0, T);                   /* (B, T, M) */
  *l_mel = op_scale(ctx, op_mean(ctx, op_abs(ctx, op_sub(ctx, mh, mel))), mel_weight);
  return wh;
}

VocoderLoss vocoder_objective(Ctx *ctx, Hifigan *g, const DiffMel *dm, const MrStft *mr, Tensor *mel, Tensor *wav,
                              float mel_weight) {
  Tensor *l_mel;
  Tensor *wh = generate(ctx, g, dm, mel, wav, mel_weight, &l_mel);
  Tensor *l_stft = mr_stft_loss(ctx, mr, wh, wav, NULL, NULL);
  VocoderLoss o = {.loss = op_add(ctx, l_mel, l_stft)};
  tensor_to_host_f32(ctx, l_mel, &o.mel);
  tensor_to_host_f32(ctx, l_stft, &o.stft);
  return o;
}

/* ------------------------------------------------------------------ the discriminators */

VocoderDisc *vocoder_disc_create(Ctx *ctx, const HifiganDiscConfig *cfg, AdamWHyper opt, float fm_weight) {
  VocoderDisc *v = calloc(1, sizeof *v);
  MCM_CHECK(v, "vocoder_disc_create: out of memory");
  params_init(&v->ps, "");
  v->ps.trainable = true;
  v->d = hifigan_disc_create(ctx, cfg, &v->ps);
  hifigan_disc_init_random(ctx, v->d);
  v->opt = adamw_create(ctx, v->d->params, v->d->n_params, opt); /* while they require gradients */
  hifigan_disc_set_trainable(ctx, v->d, false);
  v->fm_weight = fm_weight;
  return v;
}

void vocoder_disc_destroy(VocoderDisc *v) {
  if (!v) return;
  params_free(&v->ps);
  free(v);
}

/* mean (x − c)² of every element: c = 1 for "real", 0 for "fake". */
static Tensor *mean_sq_from(Ctx *ctx, Tensor *x, float c) {
  if (c == 0.0f) return op_mean(ctx, op_square(ctx, x));
  Tensor *one = tensor_new(ctx, DT_F32, SHAPE(1));
  tensor_fill(ctx, one, c);
  return op_mean(ctx, op_square(ctx, op_sub(ctx, x, one)));
}

static Tensor *add_or(Ctx *ctx, Tensor *sum, Tensor *t) { return sum ? op_add(ctx, sum, t) : t; }

Tensor *lsgan_disc_loss(Ctx *ctx, const DiscOutput *real, const DiscOutput *fake, int K, float *d_real, float *d_fake) {
  Tensor *lr = NULL, *lf = NULL;
  for (int k = 0; k < K; k++) {
    lr = add_or(ctx, lr, mean_sq_from(ctx, real[k].logits, 1.0f));
    lf = add_or(ctx, lf, mean_sq_from(ctx, fake[k].logits, 0.0f));
  }
  if (d_real) tensor_to_host_f32(ctx, lr, d_real);
  if (d_fake) tensor_to_host_f32(ctx, lf, d_fake);
  return op_add(ctx, lr, lf);
}

Tensor *lsgan_gen_loss(Ctx *ctx, const DiscOutput *fake, int K) {
  Tensor *l = NULL;
  for (int k = 0; k < K; k++) l = add_or(ctx, l, mean_sq_from(ctx, fake[k].logits, 1.0f));
  return l;
}

Tensor *feature_matching_loss(Ctx *ctx, const DiscOutput *real, const DiscOutput *fake, int K) {
  Tensor *l = NULL;
  for (int k = 0; k < K; k++) {
    MCM_CHECK(real[k].n_fmap == fake[k].n_fmap, "feature_matching_loss: %d and %d feature maps", real[k].n_fmap,
              fake[k].n_fmap);
    for (int j = 0; j < real[k].n_fmap; j++)
      l = add_or(ctx, l, op_mean(ctx, op_abs(ctx, op_sub(ctx, real[k].fmap[j], fake[k].fmap[j]))));
  }
  return l;
}

void vocoder_disc_step(Ctx *ctx, VocoderDisc *v, Tensor *wav, Tensor *fake, float lr, VocoderLoss *out) {
  HifiganDisc *d = v->d;
  DiscOutput real_o[HGD_MAX_SUBS], fake_o[HGD_MAX_SUBS];
  bool was = ctx_set_grad(ctx, true);
  hifigan_disc_set_trainable(ctx, d, true);
  params_zero_grad(ctx, d->params, d->n_params);
  const int mark = tape_mark(ctx);
  hifigan_disc_forward(ctx, d, tensor_detach(ctx, wav), true, real_o);
  hifigan_disc_forward(ctx, d, tensor_detach(ctx, fake), true, fake_o);
  Tensor *loss = lsgan_disc_loss(ctx, real_o, fake_o, d->n, &out->d_real, &out->d_fake);
  backward_since(ctx, loss, mark);
  if (v->hook) v->hook(ctx, d->params, d->n_params, v->hook_user);
  /* after the hook every rank holds the same gradients, so all agree on skipping */
  out->d_grad_norm = grad_global_norm(ctx, d->params, d->n_params);
  out->d_skipped = !isfinite(out->d_grad_norm);
  if (!out->d_skipped) adamw_step(ctx, v->opt, lr);
  hifigan_disc_set_trainable(ctx, d, false);
  ctx_set_grad(ctx, was);
}

VocoderLoss vocoder_gan_objective(Ctx *ctx, Hifigan *g, VocoderDisc *v, const DiffMel *dm, Tensor *mel, Tensor *wav,
                                  float mel_weight, float lr) {
  VocoderLoss o = {0};
  Tensor *l_mel;
  Tensor *wh = generate(ctx, g, dm, mel, wav, mel_weight, &l_mel); /* (B, S) */
  vocoder_disc_step(ctx, v, wav, wh, lr, &o);
  /* The generator's side, through the updated and frozen discriminators; the real
   * waveform's features are constants. */
  const int K = v->d->n;
  DiscOutput real_o[HGD_MAX_SUBS], fake_o[HGD_MAX_SUBS];
  hifigan_disc_forward(ctx, v->d, tensor_detach(ctx, wav), true, real_o);
  hifigan_disc_forward(ctx, v->d, wh, true, fake_o);
  Tensor *adv = lsgan_gen_loss(ctx, fake_o, K);
  Tensor *fm = op_scale(ctx, feature_matching_loss(ctx, real_o, fake_o, K), v->fm_weight);
  o.loss = op_add(ctx, op_add(ctx, l_mel, adv), fm);
  tensor_to_host_f32(ctx, l_mel, &o.mel);
  tensor_to_host_f32(ctx, adv, &o.adv);
  tensor_to_host_f32(ctx, fm, &o.fm);
  return o;
}

/* ------------------------------------------------------------------ set-up */

int vocoder_config_from(const Config *c, HifiganConfig *hc, McmErr *err) {
  McmErr e = {{0}};
  const char *src = "[vocoder_train]";
  if (c->vocoder_train.weights[0]) {
    src = "vocoder_train.weights";
    if (access(c->vocoder_train.weights, R_OK))
      return mcm_err(err, "vocoder_train.weights = %s: %s", c->vocoder_train.weights, strerror(errno));
    if (hifigan_config_from_weights(c->vocoder_train.weights, hc, &e))
      return mcm_err(err, "vocoder_train.weights: %s", e.msg);
  } else {
    const CfgIntList *ur = &c->vocoder_train.upsample_rates, *uk = &c->vocoder_train.upsample_kernel_sizes;
    const CfgIntList *rk = &c->vocoder_train.resblock_kernel_sizes, *rd = &c->vocoder_train.resblock_dilations;
    if (ur->n != uk->n)
      return mcm_err(err, "vocoder_train.upsample_rates has %d values, upsample_kernel_sizes %d: one kernel per rate",
                     ur->n, uk->n);
    if (ur->n > HIFIGAN_MAX_UPSAMPLES || rk->n > HIFIGAN_MAX_KERNELS || rd->n > HIFIGAN_MAX_DILATIONS)
      return mcm_err(err, "[vocoder_train]: at most %d upsampling stages, %d residual kernels and %d dilations",
                     HIFIGAN_MAX_UPSAMPLES, HIFIGAN_MAX_KERNELS, HIFIGAN_MAX_DILATIONS);
    *hc = hifigan_config_musicldm();
    hc->upsample_initial_channel = (int)c->vocoder_train.upsample_initial_channel;
    hc->n_upsamples = ur->n;
    for (int i = 0; i < ur->n; i++)
      hc->upsample_rates[i] = (int)ur->v[i], hc->upsample_kernel_sizes[i] = (int)uk->v[i];
    hc->n_kernels = rk->n;
    for (int j = 0; j < rk->n; j++) {
      hc->resblock_kernel_sizes[j] = (int)rk->v[j];
      hc->n_dilations[j] = rd->n;
      for (int d = 0; d < rd->n; d++) hc->resblock_dilation_sizes[j][d] = (int)rd->v[d];
    }
    hc->normalize_before = false;
    hc->model_in_dim = (int)c->mel.n_mels;
  }
  hc->sampling_rate = (int)c->mel.rate;
  hc->hop = 0;
  if (hifigan_config_check(hc, &e)) return mcm_err(err, "%s: %s", src, e.msg);
  int prod = 1;
  for (int i = 0; i < hc->n_upsamples; i++) prod *= hc->upsample_rates[i];
  if (prod != c->mel.hop)
    return mcm_err(err, "%s: the upsampling rates multiply to %d samples per frame, mel.hop = %lld (hint: rates whose "
                   "product is the hop)", src, prod, (long long)c->mel.hop);
  if (hc->model_in_dim != c->mel.n_mels)
    return mcm_err(err, "%s: a vocoder of %d mel bins, mel.n_mels = %lld", src, hc->model_in_dim, (long long)c->mel.n_mels);
  hc->hop = prod;
  return 0;
}

int vocoder_disc_config_from(const Config *c, HifiganDiscConfig *dc, McmErr *err) {
  const CfgIntList *pe = &c->vocoder_train.disc_periods, *pc = &c->vocoder_train.disc_period_channels;
  const CfgIntList *sc = &c->vocoder_train.disc_scale_channels, *sg = &c->vocoder_train.disc_scale_groups;
  memset(dc, 0, sizeof *dc);
  if (pe->n > HGD_MAX_PERIODS || pc->n > HGD_MAX_LAYERS)
    return mcm_err(err, "[vocoder_train]: at most %d disc_periods and %d disc_period_channels", HGD_MAX_PERIODS,
                   HGD_MAX_LAYERS);
  dc->n_periods = pe->n;
  for (int i = 0; i < pe->n; i++) dc->periods[i] = (int)pe->v[i];
  dc->n_period_layers = pc->n;
  for (int j = 0; j < pc->n; j++) dc->period_channels[j] = (int)pc->v[j];
  dc->n_scales = (int)c->vocoder_train.disc_scales;
  if (dc->n_scales > 0 && (sc->n != HGD_SCALE_LAYERS || sg->n != HGD_SCALE_LAYERS))
    return mcm_err(err, "vocoder_train.disc_scale_channels and disc_scale_groups need %d values each (one per conv), "
                   "they have %d and %d", HGD_SCALE_LAYERS, sc->n, sg->n);
  for (int j = 0; j < HGD_SCALE_LAYERS && dc->n_scales > 0; j++)
    dc->scale_channels[j] = (int)sc->v[j], dc->scale_groups[j] = (int)sg->v[j];
  dc->spectral_norm_first_scale = c->vocoder_train.disc_spectral_norm;
  McmErr e = {{0}};
  if (hifigan_disc_config_check(dc, &e)) return mcm_err(err, "[vocoder_train]: %s", e.msg);
  return 0;
}

/* Every trainable tensor of `full` (creation order), as a list the trainer owns. */
static void trainable_list(const ParamSet *full, ParamSet *out) {
  params_init(out, "");
  out->p = malloc((size_t)full->n * sizeof *out->p);
  MCM_CHECK(out->p, "vocoder_train: out of memory");
  out->cap = full->n;
  for (int i = 0; i < full->n; i++)
    if (full->p[i]->requires_grad) out->p[out->n++] = full->p[i];
}

VocoderTrain *vocoder_train_create(Ctx *ctx, const Config *c, ShardInfo si, int audio_samples, ParamSet *ps,
                                   ParamSet *ps_ema, McmErr *err) {
  if (c->sample.every > 0) {
    mcm_err(err, "sample.every = %lld: training samples need a UNet; set it to 0 for train.mode = vocoder",
            (long long)c->sample.every);
    return NULL;
  }
  const char *sh = c->data.train_shards;
  if (si.n_mels != c->mel.n_mels || si.rate != c->mel.rate || si.hop != c->mel.hop ||
      si.frames != c->prepare.segment_frames) {
    mcm_err(err,
            "%s: the shards were made with another mel configuration: %d frames x %d mels at %d Hz, hop %d; the "
            "configuration says %lld x %lld at %lld Hz, hop %lld (hint: prepare the data with this configuration's "
            "[mel] and [prepare] sections)",
            sh, si.frames, si.n_mels, si.rate, si.hop, (long long)c->prepare.segment_frames, (long long)c->mel.n_mels,
            (long long)c->mel.rate, (long long)c->mel.hop);
    return NULL;
  }
  if (audio_samples != si.frames * si.hop) {
    mcm_err(err, "%s: audio rows of %d samples, the mel segment covers %d x %d = %d", sh, audio_samples, si.frames,
            si.hop, si.frames * si.hop);
    return NULL;
  }
  HifiganDiscConfig dc = {0};
  if (c->train.adversarial) {
    if (vocoder_disc_config_from(c, &dc, err)) return NULL;
    if (audio_samples < hifigan_disc_min_samples(&dc)) {
      mcm_err(err, "%s: segments of %d samples are shorter than the longest discriminator period (%d; hint: a longer "
                   "prepare.segment_frames)", sh, audio_samples, hifigan_disc_min_samples(&dc));
      return NULL;
    }
  } else if (audio_samples < mr_stft_min_samples()) {
    mcm_err(err, "%s: segments of %d samples are too short for the 2048-point STFT loss (more than %d needed; hint: a "
                 "longer prepare.segment_frames)", sh, audio_samples, mr_stft_min_samples() - 1);
    return NULL;
  }
  HifiganConfig hc;
  if (vocoder_config_from(c, &hc, err)) return NULL;
  MelConfig mc = {(int)c->mel.rate, (int)c->mel.n_fft, (int)c->mel.hop, (int)c->mel.win, (int)c->mel.n_mels,
                  (float)c->mel.fmin, (float)c->mel.fmax, (float)c->mel.log_floor};
  McmErr e = {{0}};
  DiffMel *dm = diff_mel_create(ctx, &mc, &e);
  if (!dm) {
    mcm_err(err, "[mel]: %s", e.msg);
    return NULL;
  }
  VocoderTrain *v = calloc(1, sizeof *v);
  MCM_CHECK(v, "vocoder_train_create: out of memory");
  v->cfg = c, v->hc = hc, v->si = si, v->S = audio_samples, v->dm = dm;
  params_init(&v->ps_g, "");
  v->ps_g.trainable = true;
  v->g = hifigan_create(ctx, &hc, &v->ps_g);
  params_init(&v->ps_e, "");
  v->ps_e.trainable = false;
  v->ema = hifigan_create(ctx, &hc, &v->ps_e);
  if (c->vocoder_train.weights[0]) {
    if (hifigan_load(ctx, v->g, c->vocoder_train.weights, &e)) {
      mcm_err(err, "vocoder_train.weights: %s", e.msg);
      vocoder_train_destroy(v);
      return NULL;
    }
  } else {
    hifigan_init_random(ctx, v->g);
  }
  ema_copy(ctx, v->ps_e.p, v->ps_g.p, v->ps_e.n); /* buffers included */
  if (!c->train.adversarial) v->mr = mr_stft_create(ctx); /* the quick start's STFT loss */
  if (c->train.adversarial) /* after the generator's init: the quick start draws nothing more */
    v->disc = vocoder_disc_create(ctx, &dc,
                                  (AdamWHyper){(float)c->train.lr, (float)c->train.beta1, (float)c->train.beta2,
                                               (float)c->train.adam_eps, (float)c->train.weight_decay},
                                  (float)c->vocoder_train.fm_weight);
  /* The trainer's lists: the trainable tensors only, in the same order in both. */
  trainable_list(&v->ps_g, ps);
  params_init(ps_ema, "");
  ps_ema->p = malloc((size_t)v->ps_e.n * sizeof *ps_ema->p);
  MCM_CHECK(ps_ema->p, "vocoder_train: out of memory");
  ps_ema->cap = v->ps_e.n;
  for (int i = 0; i < v->ps_g.n; i++)
    if (v->ps_g.p[i]->requires_grad) ps_ema->p[ps_ema->n++] = v->ps_e.p[i];
  return v;
}

void vocoder_train_destroy(VocoderTrain *v) {
  if (!v) return;
  params_free(&v->ps_g), params_free(&v->ps_e);
  diff_mel_destroy(v->dm);
  vocoder_disc_destroy(v->disc);
  free(v);
}

VocoderDisc *vocoder_train_disc(VocoderTrain *v) { return v->disc; }

int vocoder_train_save(Ctx *ctx, VocoderTrain *v, TensorFile *tf, McmErr *err) {
  if (!v->disc) return 0;
  if (params_save(ctx, &v->disc->ps, tf, "disc/", DT_F32, err)) return -1;
  return checkpoint_save_adamw(ctx, tf, "opt_disc", v->disc->opt, err);
}

int vocoder_train_load(Ctx *ctx, VocoderTrain *v, TensorFile *tf, McmErr *err) {
  if (!v->disc) return 0;
  McmErr e = {{0}};
  if (params_load(ctx, &v->disc->ps, tf, "disc/", true, &e) ||
      checkpoint_load_adamw(ctx, tf, "opt_disc", v->disc->opt, &e))
    return mcm_err(err, "%s (hint: a checkpoint of a train.adversarial = false run has no discriminators; resume it "
                   "with the same setting)", e.msg);
  return 0;
}

VocoderLoss vocoder_train_loss(Ctx *ctx, VocoderTrain *v, const Batch *b, float lr) {
  Tensor *mel = tensor_new(ctx, DT_F32, SHAPE(b->n, 1, b->frames, b->n_mels)); /* (B, 1, T, M) */
  loader_batch_to_tensor(ctx, b, mel);
  Tensor *wav = tensor_new(ctx, DT_F32, SHAPE(b->n, b->audio_samples));       /* (B, S) */
  loader_audio_to_tensor(ctx, b, wav);
  mel = op_reshape(ctx, mel, SHAPE(b->n, b->frames, b->n_mels));
  const float mw = (float)v->cfg->vocoder_train.mel_weight;
  if (v->disc) return vocoder_gan_objective(ctx, v->g, v->disc, v->dm, mel, wav, mw, lr);
  return vocoder_objective(ctx, v->g, v->dm, &v->mr, mel, wav, mw);
}

/* ------------------------------------------------------------------ export */

int vocoder_train_export(Ctx *ctx, VocoderTrain *v, McmErr *err) {
  char path[CFG_MAX_STRING + 32];
  mcm_snprintf(path, sizeof path, "%s/%s", v->cfg->run.out_dir, VOCODER_EXPORT_NAME);
  TensorFile *tf = tf_create(path, err);
  if (!tf) return -1;
  char *config = hifigan_config_json(&v->hc);
  int rc = tf_set_attr(tf, "mcm_format", "mcm-weights 1", err);
  if (!rc) rc = tf_set_attr(tf, "component", "vocoder", err);
  if (!rc) rc = tf_set_attr(tf, "source", "./train with train.mode = vocoder", err);
  if (!rc) rc = tf_set_attr(tf, "config", config, err);
  if (!rc) rc = params_save(ctx, &v->ps_e, tf, "", DT_F32, err);
  free(config);
  if (rc) {
    tf_abort(tf);
    return -1;
  }
  return tf_commit(tf, err);
}
