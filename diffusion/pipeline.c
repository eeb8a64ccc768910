/* Text to music (see pipeline.h): bundle checks, model set-up, one generation, names. */
#include "diffusion/pipeline.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/io.h"
#include "data/audio.h"
#include "kernels/rng.h"
#include "kernels/tape.h"
#include "models/weights.h"

/* ================================================================ opening a bundle */

#define HOW_TO_GET_A_MODEL                                                                                     \
  "hint: convert MusicLDM with `python tools/convert_diffusers.py --pipeline DIR --out checkpoints/musicldm`, " \
  "or make a random-weight bundle for a smoke test with `build/cpu/tools/make_random_bundle --out "           \
  "checkpoints/demo`"

static void bundle_path(char *buf, size_t size, const char *dir, const char *file) {
  mcm_snprintf(buf, size, "%s/%s", dir, file);
}

static bool exists(const char *dir, const char *file) {
  char path[4200];
  bundle_path(path, sizeof path, dir, file);
  return access(path, F_OK) == 0;
}

/* The bundle directory, the UNet the sampler needs, then every other file. */
static int check_bundle(Pipeline *p, const PipelineOptions *o, McmErr *err) {
  struct stat st;
  if (stat(o->bundle, &st))
    return mcm_err(err, "%s: no model bundle there (%s; %s)", o->bundle, strerror(errno), HOW_TO_GET_A_MODEL);
  if (!S_ISDIR(st.st_mode))
    return mcm_err(err, "%s: a model bundle is a directory (unet.h5, student.h5, vae.h5, vocoder.h5, "
                   "text_encoder.h5, tokenizer/); %s", o->bundle, HOW_TO_GET_A_MODEL);
  const char *unet = NULL;
  if (o->sampler == PIPE_DDIM) {
    unet = BUNDLE_UNET;
    if (!exists(o->bundle, unet))
      return mcm_err(err, "%s/%s: missing; DDIM samples the teacher, which is unet.h5 (%s)", o->bundle, unet,
                     HOW_TO_GET_A_MODEL);
  } else if (exists(o->bundle, BUNDLE_STUDENT)) {
    unet = BUNDLE_STUDENT;
  } else if (o->allow_teacher_cm && exists(o->bundle, BUNDLE_UNET)) {
    unet = BUNDLE_UNET;
  } else {
    return mcm_err(err, "%s/%s: missing; the consistency sampler needs the distilled student (train one with "
                   "./train, or sample the teacher with --sampler ddim; --allow-teacher-cm runs the teacher's "
                   "unet.h5 with the consistency sampler, which gives poor results)", o->bundle, BUNDLE_STUDENT);
  }
  p->teacher = !strcmp(unet, BUNDLE_UNET);
  bundle_path(p->unet_path, sizeof p->unet_path, o->bundle, unet);
  const char *files[] = {BUNDLE_TEXT_ENCODER, BUNDLE_VOCAB, BUNDLE_MERGES, BUNDLE_VAE, BUNDLE_VOCODER};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++)
    if (!exists(o->bundle, files[i]))
      return mcm_err(err, "%s/%s: missing from the model bundle (a bundle holds %s or %s, %s, %s, %s, %s and %s)",
                     o->bundle, files[i], BUNDLE_STUDENT, BUNDLE_UNET, BUNDLE_VAE, BUNDLE_VOCODER,
                     BUNDLE_TEXT_ENCODER, BUNDLE_VOCAB, BUNDLE_MERGES);
  return 0;
}

/* The components must fit each other; sizes of the pipeline from them. */
static int check_fit(Pipeline *p, const PipelineOptions *o, const UNetConfig *uc, int sample_size,
                     const VaeConfig *vc, const HifiganConfig *hc, const ClapTextConfig *tc, McmErr *err) {
  const char *b = o->bundle;
  p->f = vae_downsample_factor(vc);
  p->unet_div = 1 << (uc->levels - 1);
  p->lat_c = vc->latent_channels;
  if (vc->in_channels != 1 || vc->out_channels != 1)
    return mcm_err(err, "%s/%s: the VAE maps %d to %d channels; a log-mel is one", b, BUNDLE_VAE, vc->in_channels,
                   vc->out_channels);
  if (uc->in_channels != p->lat_c || uc->out_channels != p->lat_c)
    return mcm_err(err, "%s: the UNet maps %d to %d latent channels, the VAE (%s/%s) has %d", p->unet_path,
                   uc->in_channels, uc->out_channels, b, BUNDLE_VAE, p->lat_c);
  if (uc->class_embed_in != tc->projection_dim)
    return mcm_err(err, "%s: the UNet takes %d-d text embeddings, the text encoder (%s/%s) gives %d", p->unet_path,
                   uc->class_embed_in, b, BUNDLE_TEXT_ENCODER, tc->projection_dim);
  if (hc->model_in_dim % p->f)
    return mcm_err(err, "%s/%s: the vocoder takes %d mel bins, not a multiple of the VAE's factor %d", b,
                   BUNDLE_VOCODER, hc->model_in_dim, p->f);
  p->lat_w = hc->model_in_dim / p->f;
  if (p->lat_w % p->unet_div)
    return mcm_err(err, "%s: %d latent mel bins (%d mels / %d) are not a multiple of %d, which the UNet's %d levels "
                   "need", p->unet_path, p->lat_w, hc->model_in_dim, p->f, p->unet_div, uc->levels);
  p->native_frames = sample_size > 0 ? sample_size : 256;
  if (p->native_frames % p->unet_div)
    return mcm_err(err, "%s: sample_size %d is not a multiple of %d, which the UNet's %d levels need", p->unet_path,
                   p->native_frames, p->unet_div, uc->levels);
  p->rate = hc->sampling_rate;
  p->hop = 1;
  for (int i = 0; i < hc->n_upsamples; i++) p->hop *= hc->upsample_rates[i];
  p->mel = mel_config_musicldm();
  p->mel.rate = p->rate;
  p->mel.hop = p->hop;
  p->mel.n_mels = hc->model_in_dim;
  p->mel.fmax = (float)p->rate / 2.0f;
  return 0;
}

/* Embeds prompts (n of them) into persistent (1, P) rows dst[i]; keeps the text as a key. */
static int embed(Pipeline *p, const char *const *prompts, Tensor **dst, char **key, int n, McmErr *err) {
  Ctx *ctx = p->ctx;
  Tensor *e = clap_text_embed(ctx, p->text, p->tok, prompts, n, err); /* (n, P) */
  if (!e) return -1;
  for (int i = 0; i < n; i++) {
    if (!dst[i]) dst[i] = tensor_new_persistent(ctx, DT_F32, SHAPE(1, e->shape[1]));
    tensor_copy(ctx, dst[i], op_slice(ctx, e, 0, i, 1));
    free(key[i]);
    key[i] = strdup(prompts[i]);
    MCM_CHECK(key[i], "out of memory");
  }
  ctx_step_reset(ctx);
  return 0;
}

Pipeline *pipeline_open(Ctx *ctx, const PipelineOptions *o, McmErr *err) {
  Pipeline *p = CALLOC_CHECK(1, sizeof *p);
  p->ctx = ctx;
  p->sampler = o->sampler;
  UNetConfig uc;
  VaeConfig vc;
  HifiganConfig hc;
  ClapTextConfig tc;
  int sample_size = 0;
  char path[4200], merges[4200];
  if (check_bundle(p, o, err)) goto fail;
  if (unet_config_from_weights(p->unet_path, &uc, &sample_size, err)) goto fail;
  bundle_path(path, sizeof path, o->bundle, BUNDLE_VAE);
  if (vae_config_from_weights(path, &vc, err)) goto fail;
  bundle_path(path, sizeof path, o->bundle, BUNDLE_VOCODER);
  if (hifigan_config_from_weights(path, &hc, err)) goto fail;
  bundle_path(path, sizeof path, o->bundle, BUNDLE_TEXT_ENCODER);
  if (clap_text_config_from_weights(path, &tc, err)) goto fail;
  if (check_fit(p, o, &uc, sample_size, &vc, &hc, &tc, err)) goto fail;

  bundle_path(path, sizeof path, o->bundle, BUNDLE_VOCAB);
  bundle_path(merges, sizeof merges, o->bundle, BUNDLE_MERGES);
  p->tok = tokenizer_load(path, merges, err);
  if (!p->tok) goto fail;

  bool was = ctx_set_grad(ctx, false);
  params_init(&p->ps_text, "");
  params_init(&p->ps_unet, "");
  params_init(&p->ps_vae, "");
  params_init(&p->ps_voc, "");
  p->text = clap_text_create(ctx, &tc, &p->ps_text);
  p->unet = unet_create(ctx, &uc, &p->ps_unet);
  p->vae = vae_create(ctx, &vc, &p->ps_vae);
  p->voc = hifigan_create(ctx, &hc, &p->ps_voc);
  params_set_trainable(ctx, &p->ps_text, false);
  params_set_trainable(ctx, &p->ps_unet, false);
  params_set_trainable(ctx, &p->ps_vae, false);
  params_set_trainable(ctx, &p->ps_voc, false);
  int rc = unet_load(ctx, p->unet, p->unet_path, err);
  bundle_path(path, sizeof path, o->bundle, BUNDLE_VAE);
  if (!rc) rc = vae_load(ctx, p->vae, path, err);
  bundle_path(path, sizeof path, o->bundle, BUNDLE_VOCODER);
  if (!rc) rc = hifigan_load(ctx, p->voc, path, err);
  bundle_path(path, sizeof path, o->bundle, BUNDLE_TEXT_ENCODER);
  if (!rc) rc = clap_text_load(ctx, p->text, path, err);
  if (!rc && o->precision == DT_BF16) { /* the text tower is a few ms of a sample: it stays fp32 */
    unet_cast(ctx, p->unet, DT_BF16);
    vae_cast(ctx, p->vae, DT_BF16);
    hifigan_cast(ctx, p->voc, DT_BF16);
  }
  ctx_step_reset(ctx);
  /* The unconditional embedding first: it also proves that tokenizer and tower fit. */
  McmErr why = {{0}};
  if (!rc && embed(p, (const char *const[]){""}, &p->uncond, &p->uncond_text, 1, &why))
    rc = mcm_err(err, "%s/%s with %s/tokenizer: %s", o->bundle, BUNDLE_TEXT_ENCODER, o->bundle, why.msg);
  ctx_set_grad(ctx, was);
  if (rc) goto fail;
  ScheduleConfig sc = schedule_config_musicldm();
  if (schedule_init(&p->sched, &sc, err)) goto fail;
  return p;
fail:
  pipeline_close(p);
  return NULL;
}

void pipeline_close(Pipeline *p) {
  if (!p) return;
  tokenizer_free(p->tok);
  if (p->text) params_free(&p->ps_text);
  if (p->unet) params_free(&p->ps_unet);
  if (p->vae) params_free(&p->ps_vae);
  if (p->voc) params_free(&p->ps_voc);
  if (p->sched.betas) schedule_free(&p->sched);
  free(p->cond_text);
  free(p->uncond_text);
  free(p);
}

/* ================================================================ requests */

PipelineRequest pipeline_request_default(PipeSampler sampler) {
  return (PipelineRequest){
      .steps = sampler == PIPE_CM ? 4 : 200,
      .guidance = 2.0,
      .seconds = 10.24,
      .strength = 1.0,
      .fuse = FUSE_AVERAGE,
  };
}

void pipeline_request_long_form(PipelineRequest *r, const Config *cfg) {
  r->window_frames = (int)cfg->infer.window_frames;
  r->stride_frames = (int)cfg->infer.stride_frames;
  r->fuse = !strcmp(cfg->infer.fuse, "triangular") ? FUSE_TRIANGULAR : FUSE_AVERAGE;
}

int64_t pipeline_samples(const Pipeline *p, double seconds) { return llround(seconds * p->rate); }

int pipeline_latent_frames(const Pipeline *p, double seconds) {
  int64_t n = pipeline_samples(p, seconds);
  int64_t frames = (n + p->hop - 1) / p->hop;                   /* mel frames */
  int64_t h = (frames + p->f - 1) / p->f;                       /* latent frames */
  h = (h + p->unet_div - 1) / p->unet_div * p->unet_div;
  return h < p->unet_div ? p->unet_div : (int)h;
}

/* The long-form layout of a request: 0 with *windowed false when one pass covers it. */
static int layout(const Pipeline *p, const PipelineRequest *r, int H, bool *windowed, LongForm *lf, McmErr *err) {
  *windowed = r->window_frames >= 0 && H > p->native_frames;
  if (!*windowed) return 0;
  int window = r->window_frames ? r->window_frames : p->native_frames;
  int stride = r->stride_frames ? r->stride_frames : (window / 4 > 0 ? window / 4 : 1);
  if (window % p->unet_div)
    return mcm_err(err, "long form: window %d latent frames is not a multiple of %d (the UNet's downsampling)", window,
                   p->unet_div);
  if (stride < 1) return mcm_err(err, "long form: stride %d latent frames (expected >= 1)", stride);
  *lf = (LongForm){.window = window, .stride = stride, .fuse = r->fuse};
  Windows *w = MALLOC_CHECK(sizeof *w);
  int rc = window_layout(H, window, stride, w, err);
  free(w);
  return rc;
}

int pipeline_check_request(const Pipeline *p, const PipelineRequest *r, McmErr *err) {
  if (!r->prompt) return mcm_err(err, "no prompt");
  if (!utf8_valid(r->prompt, strlen(r->prompt))) return mcm_err(err, "the prompt is not valid UTF-8");
  if (r->negative && !utf8_valid(r->negative, strlen(r->negative)))
    return mcm_err(err, "the negative prompt is not valid UTF-8");
  if (!(r->seconds > 0) || !(r->seconds <= PIPELINE_MAX_SECONDS))
    return mcm_err(err, "%g seconds: expected a length in (0, %d]", r->seconds, PIPELINE_MAX_SECONDS);
  if (!(r->strength > 0 && r->strength <= 1))
    return mcm_err(err, "strength %g: expected a value in (0, 1]", r->strength);
  const int H = pipeline_latent_frames(p, r->seconds);
  if (r->strength < 1 && !p->init_frames)
    return mcm_err(err, "strength %g starts from init audio, but none was given", r->strength);
  if (r->strength < 1 && p->init_frames != H)
    return mcm_err(err, "the init audio was encoded for %d latent frames, the request needs %d", p->init_frames, H);
  if (!isfinite(r->guidance)) return mcm_err(err, "guidance %g: expected a finite number", r->guidance);
  const int T = p->sched.cfg.T;
  if (p->sampler == PIPE_CM) {
    int *ts = MALLOC_CHECK((size_t)(r->steps > 0 && r->steps <= T ? r->steps : 1) * sizeof(int));
    McmErr why = {{0}};
    int rc = r->steps < 1 || r->steps > T ? -1 : lcm_timesteps(r->steps, 50, T, r->strength, ts, &why);
    free(ts);
    if (rc)
      return mcm_err(err, "%d consistency steps%s: expected 1..%d (the 50-step origin grid%s)", r->steps,
                     r->strength < 1 ? " at this strength" : "", (int)(50 * r->strength),
                     r->strength < 1 ? " shortened by the strength" : "");
  } else {
    int *ts = MALLOC_CHECK((size_t)(r->steps > 0 && r->steps <= T ? r->steps : 1) * sizeof(int));
    McmErr why = {{0}};
    int rc = r->steps < 1 || r->steps > T ? -1 : ddim_timesteps(&p->sched, r->steps, p->sched.cfg.steps_offset,
                                                                 p->sched.cfg.spacing, ts, &why);
    free(ts);
    if (rc)
      return mcm_err(err, "%d DDIM steps: expected 1..%d (%s spacing, offset %d)", r->steps, T - p->sched.cfg.steps_offset,
                     spacing_name(p->sched.cfg.spacing), p->sched.cfg.steps_offset);
    if ((int)(r->steps * r->strength) < 1)
      return mcm_err(err, "strength %g keeps no step of %d (expected strength >= %g)", r->strength, r->steps,
                     1.0 / r->steps);
  }
  bool windowed;
  LongForm lf;
  return layout(p, r, H, &windowed, &lf, err);
}

int pipeline_set_init_audio(Pipeline *p, const float *x, int64_t n, double seconds, McmErr *err) {
  if (n < 1) return mcm_err(err, "the init audio is empty");
  if (!(seconds > 0) || !(seconds <= PIPELINE_MAX_SECONDS))
    return mcm_err(err, "%g seconds: expected a length in (0, %d]", seconds, PIPELINE_MAX_SECONDS);
  Ctx *ctx = p->ctx;
  const int H = pipeline_latent_frames(p, seconds), Hm = H * p->f, M = p->mel.n_mels;
  const int64_t len = pipeline_samples(p, seconds), total = (int64_t)Hm * p->hop;
  const int64_t keep = n < len ? n : len;
  float *wav = CALLOC_CHECK((size_t)total, sizeof(float)); /* cut or zero-padded to the request */
  memcpy(wav, x, (size_t)keep * sizeof(float));
  audio_normalize(wav, keep);
  Mel *mel = mel_create(&p->mel, err);
  if (!mel) return free(wav), -1;
  if (mel_check_length(mel, total, err)) return mel_destroy(mel), free(wav), -1;
  float *spec = MALLOC_CHECK((size_t)mel_frames(mel, total) * (size_t)M * sizeof(float));
  mel_compute(mel, wav, total, spec); /* (total / hop + 1, M): the first Hm frames are used */
  mel_destroy(mel);
  free(wav);

  bool was = ctx_set_grad(ctx, false);
  Tensor *xm = tensor_new(ctx, DT_F32, SHAPE(1, 1, Hm, M)); /* (1, 1, f·H, M) */
  tensor_from_host_f32(ctx, xm, spec);
  free(spec);
  VaeMoments m = vae_encode(ctx, p->vae, xm); /* (1, C, H, W) each */
  if (!p->init_mean || !tensor_same_shape(p->init_mean, m.mean)) {
    p->init_mean = tensor_new_persistent(ctx, DT_F32, m.mean->ndim, m.mean->shape);
    p->init_logvar = tensor_new_persistent(ctx, DT_F32, m.logvar->ndim, m.logvar->shape);
  }
  tensor_copy(ctx, p->init_mean, m.mean);
  tensor_copy(ctx, p->init_logvar, m.logvar);
  ctx_step_reset(ctx);
  ctx_set_grad(ctx, was);
  p->init_frames = H;
  return 0;
}

/* ================================================================ generation */

/* The UNet as the samplers' denoiser: x (B, C, H, W), t (B) host timesteps, cond (B, P). */
static Tensor *unet_eps(Ctx *ctx, void *user, Tensor *x, const float *t, Tensor *cond) {
  Tensor *tt = tensor_new(ctx, DT_F32, SHAPE(x->shape[0])); /* (B) */
  tensor_from_host_f32(ctx, tt, t);
  return unet_forward(ctx, user, x, tt, cond); /* (B, C, H, W) */
}

/* A persistent buffer of this shape in *slot (a new one when the shape changes). */
static Tensor *persistent(Ctx *ctx, Tensor **slot, int ndim, const int64_t *shape) {
  bool same = *slot && (*slot)->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = (*slot)->shape[i] == shape[i];
  if (!same) *slot = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  return *slot;
}

static double now(Ctx *ctx) {
  ctx_sync(ctx);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The largest per-step arena use so far (the arena's high-water mark). */
static void note_peak(Ctx *ctx, PipelineTimings *tm) {
  size_t used = ctx->act.used > ctx->act.high_water ? ctx->act.used : ctx->act.high_water;
  if (used > tm->peak_act_bytes) tm->peak_act_bytes = used;
}

static bool all_finite(const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return false;
  return true;
}

/* cond (and uncond when guidance needs it) for the request, re-encoded only when the text
 * changed since the last request. */
static int text_embeddings(Pipeline *p, const PipelineRequest *r, bool need_uncond, McmErr *err) {
  const char *neg = r->negative ? r->negative : "";
  if (!p->cond_text || strcmp(p->cond_text, r->prompt))
    if (embed(p, (const char *const[]){r->prompt}, &p->cond, &p->cond_text, 1, err)) return -1;
  if (need_uncond && (!p->uncond_text || strcmp(p->uncond_text, neg)))
    if (embed(p, (const char *const[]){neg}, &p->uncond, &p->uncond_text, 1, err)) return -1;
  return 0;
}

static Tensor *sample(Pipeline *p, const PipelineRequest *r, float w, McmErr *err) {
  const int H = (int)p->x_in->shape[2];
  bool windowed;
  LongForm lf;
  if (layout(p, r, H, &windowed, &lf, err)) return NULL;
  SamplerOpts so = sampler_opts_default();
  so.strength = r->strength;
  so.progress = r->progress;
  so.progress_user = r->progress_user;
  so.state = p->state;
  const Schedule *s = &p->sched;
  Ctx *ctx = p->ctx;
  Tensor *uncond = w != 0.0f ? p->uncond : NULL;
  if (p->sampler == PIPE_CM)
    return windowed ? sample_cm_long(ctx, unet_eps, p->unet, s, p->x_in, p->cond, r->steps, &lf, &so, err)
                    : sample_cm(ctx, unet_eps, p->unet, s, p->x_in, p->cond, r->steps, &so, err);
  return windowed ? sample_ddim_long(ctx, unet_eps, p->unet, s, p->x_in, p->cond, uncond, w, r->steps, &lf, &so, err)
                  : sample_ddim(ctx, unet_eps, p->unet, s, p->x_in, p->cond, uncond, w, r->steps, &so, err);
}

int pipeline_generate(Pipeline *p, const PipelineRequest *r, PipelineOutput *out, PipelineTimings *tm, McmErr *err) {
  memset(out, 0, sizeof *out);
  if (pipeline_check_request(p, r, err)) return -1;
  Ctx *ctx = p->ctx;
  PipelineTimings local = {0};
  if (!tm) tm = &local;
  const int H = pipeline_latent_frames(p, r->seconds), Hm = H * p->f, M = p->mel.n_mels;
  const int64_t n = pipeline_samples(p, r->seconds);
  const float w = p->sampler == PIPE_DDIM ? (float)(r->guidance - 1.0) : 0.0f; /* Imagen g -> LCM-form w */
  bool was = ctx_set_grad(ctx, false);
  ctx->seed = r->seed;
  ctx->rng_offset = 0;
  int rc = -1;

  /* Text. */
  double t0 = now(ctx);
  if (text_embeddings(p, r, w != 0.0f, err)) goto done;
  double t1 = now(ctx);
  tm->text += t1 - t0;

  /* Sampling: x_T, or the init audio's posterior sample (the sampler noises it). */
  Tensor *x_in = persistent(ctx, &p->x_in, SHAPE(1, p->lat_c, H, p->lat_w)); /* (1, C, H, W) */
  persistent(ctx, &p->state, SHAPE(1, p->lat_c, H, p->lat_w));
  if (r->strength < 1) {
    ArenaMark noise = ctx_scope_begin(ctx);
    Tensor *z = vae_sample(ctx, p->init_mean, p->init_logvar);                 /* (1, C, H, W) */
    tensor_copy(ctx, x_in, op_scale(ctx, z, p->vae->cfg.scaling_factor));
    ctx_scope_end(ctx, noise, NULL);
  } else {
    rng_normal(ctx, x_in);
  }
  /* Only the latents leave the sampler's scope (in state mode it resets every step itself;
   * the UNet keeps only its output per call, so windows cost one prediction each). */
  ArenaMark sampling = ctx_scope_begin(ctx);
  Tensor *lat = sample(p, r, w, err); /* (1, C, H, W), scaled latents */
  if (!lat) goto done;
  lat = ctx_scope_end(ctx, sampling, lat);
  note_peak(ctx, tm);
  double t2 = now(ctx);
  tm->sampling += t2 - t1;

  /* Decoding: the VAE on the whole latent. The mel is kept in a persistent buffer and the
   * arena freed, so the peak is the larger of decoder and vocoder, not their sum. */
  Tensor *mel = vae_decode(ctx, p->vae, op_scale(ctx, lat, 1.0f / p->vae->cfg.scaling_factor)); /* (1, 1, f·H, M) */
  Tensor *mel_keep = persistent(ctx, &p->mel_buf, SHAPE(1, Hm, M));                                 /* (1, f·H, M) */
  tensor_copy(ctx, mel_keep, op_reshape(ctx, mel, SHAPE(1, Hm, M)));
  out->n_mels = M;
  out->frames = (int)((n + p->hop - 1) / p->hop);
  out->mel = MALLOC_CHECK((size_t)Hm * (size_t)M * sizeof(float));
  tensor_to_host_f32(ctx, mel_keep, out->mel); /* the first `frames` rows are kept */
  note_peak(ctx, tm);
  ctx_step_reset(ctx);
  double t3 = now(ctx);
  tm->decoding += t3 - t2;

  /* Vocoding. */
  Tensor *wave = hifigan_forward(ctx, p->voc, mel_keep); /* (1, L) */
  MCM_CHECK(wave->shape[1] >= n, "pipeline: the vocoder gave %lld samples for %lld", (long long)wave->shape[1],
            (long long)n);
  float *audio = MALLOC_CHECK((size_t)wave->shape[1] * sizeof(float));
  tensor_to_host_f32(ctx, wave, audio);
  out->audio = audio;
  out->n = n;
  out->rate = p->rate;
  note_peak(ctx, tm);
  double t4 = now(ctx);
  tm->vocoding += t4 - t3;
  tm->outputs++;
  if (!all_finite(out->mel, (int64_t)out->frames * M) || !all_finite(out->audio, n)) {
    mcm_err(err, "%s: the models produced non-finite values for \"%.60s\" (hint: the weights may be damaged)",
            p->unet_path, r->prompt);
    goto done;
  }
  rc = 0;
done:
  ctx_step_reset(ctx);
  ctx_set_grad(ctx, was);
  if (rc) pipeline_output_free(out);
  return rc;
}

void pipeline_output_free(PipelineOutput *o) {
  if (!o) return;
  free(o->audio);
  free(o->mel);
  memset(o, 0, sizeof *o);
}

/* ================================================================ names */

int pipeline_output_name(char *buf, size_t size, const char *dir, int index, int width, const char *prompt,
                         uint64_t seed, const char *ext, McmErr *err) {
  char slug[41];
  int k = 0;
  bool dash = false;
  for (const unsigned char *c = (const unsigned char *)prompt; *c && k < 40; c++) {
    bool alnum = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9');
    if (alnum) {
      if (dash && k > 0 && k < 39) slug[k++] = '-';
      dash = false;
      slug[k++] = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    } else {
      dash = true;
    }
  }
  slug[k] = 0;
  if (!k) strcpy(slug, "prompt");
  int n = snprintf(buf, size, "%s/%0*d_%s_seed%llu.%s", dir, width < 3 ? 3 : width, index, slug,
                   (unsigned long long)seed, ext);
  if (n < 0 || (size_t)n >= size) return mcm_err(err, "%s: the output path is too long", dir);
  return 0;
}
