/* The adversarial part: frozen AudioMAE through the bridge, StyleGAN-T heads, hinge + R1 by a
 * finite-difference Hessian-vector product, heads AdamW. See adversarial.h for the losses
 * and for the choice of the R1 step. Shapes: B batch, T mel frames, F mel bins, C AudioMAE
 * width, N its patch tokens. */
#include "diffusion/adversarial.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/checkpoint.h"

struct Adversarial {
  AdvConfig cfg;
  ParamSet mae_ps, heads_ps, voc_ps;
  AudioMAE *mae;
  Bridge *bridge;
  Hifigan *voc;       /* exact path only */
  DiscHeads *heads;
  Tensor **params;    /* trainable head weights */
  int n_params;
  AdamW *opt;
  AdvGradHook hook;
  void *hook_user;
};

AdvConfig adv_config_default(void) {
  AdvConfig c = {0};
  c.mae = audiomae_config_vit_b();
  c.heads = disc_heads_config_default();
  const int taps[] = {-1, 2, 5, 8, 11};
  c.n_taps = 5;
  memcpy(c.taps, taps, sizeof taps);
  c.text_dim = 512;
  c.mel_bins = 64;
  c.opt = (AdamWHyper){.lr = 1e-4f, .beta1 = 0.0f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.0f};
  c.r1_gamma = 1e-5f;
  c.r1_eps = 1e-3f;
  c.r1_interval = 1;
  c.vocoder = hifigan_config_musicldm();
  return c;
}

int adv_config_check(const AdvConfig *c, McmErr *err) {
  if (audiomae_config_check(&c->mae, err) || disc_heads_config_check(&c->heads, err)) return -1;
  if (c->mae.in_chans != 1) return mcm_err(err, "adversarial: AudioMAE in_chans %d, the bridge gives 1", c->mae.in_chans);
  if (c->n_taps < 1 || c->n_taps > ADV_MAX_TAPS)
    return mcm_err(err, "adversarial: %d taps, want 1 .. %d (one head each)", c->n_taps, ADV_MAX_TAPS);
  if (audiomae_check_taps(&c->mae, c->taps, c->n_taps, err)) return -1;
  if (c->text_dim <= 0 || c->mel_bins <= 0)
    return mcm_err(err, "adversarial: text_dim %d and mel_bins %d must be positive", c->text_dim, c->mel_bins);
  if (c->heads.channels != c->mae.embed_dim)
    return mcm_err(err, "adversarial: heads channels %d != AudioMAE embed_dim %d (the heads read its tokens)",
                   c->heads.channels, c->mae.embed_dim);
  if (c->heads.c_dim != c->text_dim + c->mae.embed_dim)
    return mcm_err(err, "adversarial: heads c_dim %d != text_dim %d + AudioMAE embed_dim %d ([text ‖ cls])",
                   c->heads.c_dim, c->text_dim, c->mae.embed_dim);
  if (!(c->r1_gamma >= 0) || !(c->r1_eps > 0 && c->r1_eps < 1) || c->r1_interval < 1)
    return mcm_err(err, "adversarial: r1_gamma %g must be >= 0, r1_eps %g in (0, 1), r1_interval %d >= 1",
                   c->r1_gamma, c->r1_eps, c->r1_interval);
  if (!(c->opt.lr >= 0) || !(c->opt.beta1 >= 0 && c->opt.beta1 < 1) || !(c->opt.beta2 >= 0 && c->opt.beta2 < 1) ||
      !(c->opt.eps >= 0) || !(c->opt.weight_decay >= 0))
    return mcm_err(err, "adversarial: heads AdamW lr %g, betas (%g, %g), eps %g, weight decay %g out of range",
                   c->opt.lr, c->opt.beta1, c->opt.beta2, c->opt.eps, c->opt.weight_decay);
  if (!c->exact_path && !c->bridge_path)
    return mcm_err(err, "adversarial: no bridge file (fit one with tools/fit_bridge) and the exact path is off");
  if (c->exact_path) {
    if (!c->vocoder_path) return mcm_err(err, "adversarial: the exact path needs vocoder weights");
    if (hifigan_config_check(&c->vocoder, err)) return -1;
    if (c->vocoder.model_in_dim != c->mel_bins)
      return mcm_err(err, "adversarial: the vocoder takes %d mel bins, the mels have %d", c->vocoder.model_in_dim,
                     c->mel_bins);
  }
  return 0;
}

const AdvConfig *adv_config(const Adversarial *a) { return &a->cfg; }
DiscHeads *adv_heads(Adversarial *a) { return a->heads; }
AudioMAE *adv_audiomae(Adversarial *a) { return a->mae; }
Bridge *adv_bridge(Adversarial *a) { return a->bridge; }
void adv_set_grad_hook(Adversarial *a, AdvGradHook fn, void *user) { a->hook = fn, a->hook_user = user; }

Tensor **adv_head_params(Adversarial *a, int *n) {
  *n = a->n_params;
  return a->params;
}

static void heads_trainable(Ctx *ctx, Adversarial *a, bool on) { disc_heads_set_trainable(ctx, a->heads, on); }

Adversarial *adv_create(Ctx *ctx, const AdvConfig *cfg, McmErr *err) {
  if (adv_config_check(cfg, err)) return NULL;
  Adversarial *a = ctx_alloc_persistent_host(ctx, sizeof *a);
  a->cfg = *cfg;
  params_init(&a->mae_ps, "");
  params_init(&a->heads_ps, "");
  params_init(&a->voc_ps, "");
  a->mae = audiomae_create(ctx, &cfg->mae, &a->mae_ps);
  if (cfg->audiomae_path) {
    if (audiomae_load(ctx, a->mae, cfg->audiomae_path, err)) goto fail;
  } else {
    audiomae_init_random(ctx, a->mae);
  }
  params_set_trainable(ctx, &a->mae_ps, false);
  a->bridge = bridge_create(ctx, cfg->mel_bins, cfg->mae.img_f);
  if (cfg->bridge_path && bridge_load(ctx, a->bridge, cfg->bridge_path, err)) goto fail;
  if (cfg->exact_path) {
    a->voc = hifigan_create(ctx, &cfg->vocoder, &a->voc_ps);
    if (hifigan_load(ctx, a->voc, cfg->vocoder_path, err)) goto fail;
    params_set_trainable(ctx, &a->voc_ps, false);
  }
  a->heads = disc_heads_create(ctx, &cfg->heads, cfg->n_taps, &a->heads_ps);
  disc_heads_init_random(ctx, a->heads);
  heads_trainable(ctx, a, true);
  a->params = ctx_alloc_persistent_host(ctx, sizeof(Tensor *) * (size_t)a->heads_ps.n);
  for (int i = 0; i < a->heads_ps.n; i++)
    if (a->heads_ps.p[i]->requires_grad) a->params[a->n_params++] = a->heads_ps.p[i];
  a->opt = adamw_create(ctx, a->params, a->n_params, cfg->opt);
  heads_trainable(ctx, a, false);
  return a;
fail:
  adv_destroy(a);
  return NULL;
}

void adv_destroy(Adversarial *a) {
  if (!a) return;
  params_free(&a->mae_ps);
  params_free(&a->heads_ps);
  params_free(&a->voc_ps);
}

/* ---------------------------------------------------------------- features */

static Tensor *exact_fbank(Ctx *ctx, Adversarial *a, Tensor *mel) {
  const int64_t B = mel->shape[0], T = mel->shape[2], F = mel->shape[3];
  const int OT = a->cfg.mae.img_t, OF = a->cfg.mae.img_f;
  bool was = ctx_set_grad(ctx, false);
  Tensor *wav = hifigan_forward(ctx, a->voc, op_reshape(ctx, mel, SHAPE(B, T, F))); /* (B, L) */
  ctx_set_grad(ctx, was);
  const int64_t L = wav->shape[1];
  float *w = MALLOC_CHECK(sizeof(float) * (size_t)(B * L)), *fb = MALLOC_CHECK(sizeof(float) * (size_t)(B * OT * OF));
  tensor_to_host_f32(ctx, wav, w);
  KaldiFbankConfig kc = kaldi_fbank_config_audiomae();
  kc.n_mels = OF;
  for (int64_t b = 0; b < B; b++) audiomae_fbank_from_wav(&kc, w + b * L, L, OT, fb + b * OT * OF);
  Tensor *out = tensor_new(ctx, DT_F32, SHAPE(B, 1, OT, OF));
  tensor_from_host_f32(ctx, out, fb);
  free(w);
  free(fb);
  return out;
}

Tensor *adv_fbank(Ctx *ctx, Adversarial *a, Tensor *mel) {
  CHECK_SHAPE("adv_fbank", mel, -1, 1, -1, a->cfg.mel_bins);
  if (a->cfg.exact_path) return exact_fbank(ctx, a, mel);
  return bridge_apply(ctx, a->bridge, mel, a->cfg.mae.img_t);
}

/* Tap readouts (B, C, N) of a mel, no grad, as plain tensors. */
static void features_nograd(Ctx *ctx, Adversarial *a, Tensor *mel, Tensor **taps, Tensor **cls) {
  bool was = ctx_set_grad(ctx, false);
  audiomae_forward(ctx, a->mae, adv_fbank(ctx, a, mel), a->cfg.taps, taps ? a->cfg.n_taps : 0, taps, cls);
  ctx_set_grad(ctx, was);
}

Tensor *adv_condition(Ctx *ctx, Adversarial *a, Tensor *real_mel, Tensor *text_emb) {
  CHECK_SHAPE("adv_condition", text_emb, real_mel->shape[0], a->cfg.text_dim);
  Tensor *cls;
  features_nograd(ctx, a, real_mel, NULL, &cls);
  bool was = ctx_set_grad(ctx, false);
  Tensor *c = op_concat(ctx, (Tensor *[]){tensor_detach(ctx, text_emb), cls}, 2, 1); /* (B, c_dim) */
  ctx_set_grad(ctx, was);
  return c;
}

static int check_batch(Adversarial *a, const Tensor *mel, const Tensor *c, const char *what, McmErr *err) {
  if (mel->ndim != 4 || mel->shape[1] != 1 || mel->shape[3] != a->cfg.mel_bins)
    return mcm_err(err, "adversarial: %s mel is %s, want (B, 1, T, %d)", what, TENSOR_SHAPE_STR(mel), a->cfg.mel_bins);
  if (c->ndim != 2 || c->shape[0] != mel->shape[0] || c->shape[1] != a->cfg.heads.c_dim)
    return mcm_err(err, "adversarial: condition is %s, want (%lld, %d)", TENSOR_SHAPE_STR(c), (long long)mel->shape[0],
                   a->cfg.heads.c_dim);
  return disc_heads_check_batch(&a->cfg.heads, mel->shape[0], err);
}

Tensor *adv_generator_loss(Ctx *ctx, Adversarial *a, Tensor *fake_mel, Tensor *c) {
  McmErr err;
  MCM_CHECK(!a->cfg.exact_path, "adv_generator_loss: the exact path (vocoder → Kaldi fbank) has no gradient; "
                                "use the bridge for training");
  MCM_CHECK(check_batch(a, fake_mel, c, "fake", &err) == 0, "adv_generator_loss: %s", err.msg);
  Tensor *taps[ADV_MAX_TAPS];
  audiomae_forward(ctx, a->mae, adv_fbank(ctx, a, fake_mel), a->cfg.taps, a->cfg.n_taps, taps, NULL);
  Tensor *sum = NULL;
  for (int k = 0; k < a->cfg.n_taps; k++) { /* heads frozen: gradients reach the features only */
    Tensor *m = op_mean(ctx, disc_head_forward(ctx, a->heads, k, taps[k], c, true));
    sum = sum ? op_add(ctx, sum, m) : m;
  }
  return op_scale(ctx, sum, -1.0f);
}

/* ---------------------------------------------------------------- discriminator */

/* SpectralConv1d in eval mode (stored u, v), as models/disc_heads.c runs it. */
static Tensor *sn_conv(Ctx *ctx, SNConv1d *cv, Tensor *x) {
  Tensor *w = op_spectral_norm(ctx, &cv->sn, cv->w, false);
  Conv1dArgs a = {.stride = 1, .pad_left = cv->pad, .pad_right = cv->pad, .dilation = 1, .circular = true};
  return op_conv1d(ctx, x, w, cv->b, a);
}

static float host_scalar(Ctx *ctx, Tensor *t) {
  float v;
  tensor_to_host_f32(ctx, t, &v);
  return v;
}

static int64_t count_sign(Ctx *ctx, Tensor *t, float sign) {
  float *v = MALLOC_CHECK(sizeof(float) * (size_t)t->numel);
  tensor_to_host_f32(ctx, t, v);
  int64_t n = 0;
  for (int64_t i = 0; i < t->numel; i++) n += sign * v[i] > 0;
  free(v);
  return n;
}

/* ---- exact R1: ⟨v, ∂S/∂h⟩ as a forward-mode tangent built from ops (adversarial.h) */

/* Tangent of SpectralConv1d (eval mode: the stored u, v): conv(t, W/σ), no bias. */
static Tensor *sn_conv_tangent(Ctx *ctx, SNConv1d *cv, Tensor *t) {
  Tensor *w = op_spectral_norm(ctx, &cv->sn, cv->w, false);
  Conv1dArgs a = {.stride = 1, .pad_left = cv->pad, .pad_right = cv->pad, .dilation = 1, .circular = true};
  return op_conv1d(ctx, t, w, NULL, a);
}

static Tensor *scalar(Ctx *ctx, float v) {
  Tensor *t = tensor_new(ctx, DT_F32, SHAPE(1));
  tensor_fill(ctx, t, v);
  return t;
}

/* Mean over dims 1 and 3 of (G, b, C, N), kept: (G, 1, C, 1). */
static Tensor *group_mean(Ctx *ctx, Tensor *x) {
  return op_mean_dim(ctx, op_mean_dim(ctx, x, 3, true), 1, true);
}

/* One make_block (SN-conv → BatchNormLocal → LeakyReLU) on the primal x and its tangent t
 * (both (B, C, N)); returns the primal output, *t_out its tangent. BatchNormLocal's tangent,
 * per group and channel with x̂ = (z − μ)/s, s = √(var + eps):
 *   dx̂ = (dz − mean dz)/s − x̂·mean(x̂·dz)/s,  dy = w·dx̂;
 * LeakyReLU's is its derivative at the primal (1 above 0, slope otherwise, as torch), a
 * constant mask: autograd's double backward treats the kink the same way (second derivative 0). */
static Tensor *block_jvp(Ctx *ctx, const DiscHeadsConfig *c, SNConv1d *cv, Tensor *bn_w, Tensor *bn_b, Tensor *x,
                         Tensor *t, Tensor **t_out) {
  const int64_t B = x->shape[0], C = x->shape[1], N = x->shape[2];
  const int64_t G = (B + c->virtual_bs - 1) / c->virtual_bs;
  Tensor *z = sn_conv(ctx, cv, x);                                            /* (B, C, N) */
  Tensor *tz = sn_conv_tangent(ctx, cv, t);                                   /* (B, C, N) */
  Tensor *y = op_batch_norm_local(ctx, z, c->virtual_bs, c->bn_eps, bn_w, bn_b);
  Tensor *zg = op_reshape(ctx, z, SHAPE(G, B / G, C, N)), *tg = op_reshape(ctx, tz, SHAPE(G, B / G, C, N));
  Tensor *zc = op_sub(ctx, zg, group_mean(ctx, zg));                          /* (G, b, C, N) */
  Tensor *s = op_sqrt(ctx, op_add(ctx, group_mean(ctx, op_square(ctx, zc)), scalar(ctx, c->bn_eps)));
  Tensor *xh = op_div(ctx, zc, s);                                            /* x̂ */
  Tensor *tc = op_sub(ctx, tg, group_mean(ctx, tg));
  Tensor *dxh = op_div(ctx, op_sub(ctx, tc, op_mul(ctx, xh, group_mean(ctx, op_mul(ctx, xh, tg)))), s);
  Tensor *ty = op_mul(ctx, dxh, op_reshape(ctx, bn_w, SHAPE(1, 1, C, 1)));
  ty = op_reshape(ctx, ty, SHAPE(B, C, N));
  bool was = ctx_set_grad(ctx, false); /* mask = slope + (1 − slope)·[y > 0] */
  Tensor *step = op_clamp(ctx, op_scale(ctx, tensor_detach(ctx, y), 1e30f), 0.0f, 1.0f);
  Tensor *mask = op_add_scaled(ctx, step, scalar(ctx, 1.0f), 1.0f - c->slope, c->slope);
  ctx_set_grad(ctx, was);
  *t_out = op_mul(ctx, ty, mask);
  return op_leaky_relu(ctx, y, c->slope);
}

/* ⟨v, ∂S_k/∂h⟩ at h for head k (S_k = Σ_{b,n} D_k), a scalar differentiable w.r.t. the head
 * weights: the head's forward (eval mode) carrying the tangent v. */
static Tensor *head_jvp(Ctx *ctx, DiscHeads *hs, int k, Tensor *h, Tensor *v, Tensor *c) {
  const DiscHeadsConfig *cfg = &hs->cfg;
  DiscHead *d = &hs->head[k];
  const int64_t B = h->shape[0], M = cfg->cmap_dim;
  const float r = 1.0f / sqrtf(2.0f);
  Tensor *t0, *t1;
  Tensor *x0 = block_jvp(ctx, cfg, &d->conv0, d->bn0_w, d->bn0_b, h, v, &t0);
  block_jvp(ctx, cfg, &d->conv1, d->bn1_w, d->bn1_b, x0, t0, &t1);
  Tensor *tt = op_add_scaled(ctx, t1, t0, r, r);                               /* residual: (B, C, N) */
  Tensor *tout = sn_conv_tangent(ctx, &d->cls, tt);                            /* (B, M, N) */
  Tensor *w = op_scale(ctx, d->cmap_w, 1.0f / sqrtf((float)cfg->c_dim));
  Tensor *cmap = op_reshape(ctx, op_linear(ctx, c, w, d->cmap_b), SHAPE(B, M, 1));
  return op_scale(ctx, op_sum(ctx, op_mul(ctx, tout, cmap)), 1.0f / sqrtf((float)M));
}

/* The R1 weight gradient, accumulated with weight `gain` (the lazy-R1 interval); returns
 * Σ_k mean_b ‖g_k‖². Heads must be trainable on entry. */
static double r1_grads(Ctx *ctx, Adversarial *a, Tensor **hr, Tensor *c, float gain) {
  const int K = a->cfg.n_taps;
  const int64_t B = hr[0]->shape[0];
  Tensor *g[ADV_MAX_TAPS];
  double r1 = 0, eps[ADV_MAX_TAPS];
  /* g_k = ∂(Σ D_k)/∂h at the real features: heads frozen, so only the input gradient. */
  heads_trainable(ctx, a, false);
  for (int k = 0; k < K; k++) {
    Tensor *h = tensor_detach(ctx, hr[k]);
    h->requires_grad = true;
    backward(ctx, op_sum(ctx, disc_head_forward(ctx, a->heads, k, h, c, false)));
    g[k] = grad_of(ctx, h);
    bool was = ctx_set_grad(ctx, false);
    double gg = host_scalar(ctx, op_sum(ctx, op_square(ctx, g[k])));
    double hh = host_scalar(ctx, op_sum(ctx, op_square(ctx, hr[k])));
    ctx_set_grad(ctx, was);
    r1 += gg / (double)B;
    eps[k] = gg > 0 ? a->cfg.r1_eps * sqrt(hh / gg) : 0;
  }
  heads_trainable(ctx, a, true);
  /* ∇_φ (γ/2)(1/B)‖g‖² = (γ/B)·∇_φ ⟨v, ∂S/∂h⟩ at v = g (held fixed) */
  Tensor *loss = NULL;
  for (int k = 0; k < K; k++) {
    if (eps[k] == 0) continue;
    Tensor *t;
    if (a->cfg.r1_fd) { /* [S(h + εv) − S(h − εv)] / 2ε */
      bool was = ctx_set_grad(ctx, false);
      Tensor *hp = op_add_scaled(ctx, hr[k], g[k], 1.0f, (float)eps[k]);
      Tensor *hm = op_add_scaled(ctx, hr[k], g[k], 1.0f, (float)-eps[k]);
      ctx_set_grad(ctx, was);
      Tensor *sp = op_sum(ctx, disc_head_forward(ctx, a->heads, k, hp, c, false));
      Tensor *sm = op_sum(ctx, disc_head_forward(ctx, a->heads, k, hm, c, false));
      t = op_scale(ctx, op_sub(ctx, sp, sm), (float)(gain * a->cfg.r1_gamma / ((double)B * 2.0 * eps[k])));
    } else {
      t = op_scale(ctx, head_jvp(ctx, a->heads, k, hr[k], g[k], c), (float)(gain * a->cfg.r1_gamma / (double)B));
    }
    loss = loss ? op_add(ctx, loss, t) : t;
  }
  if (loss) backward(ctx, loss);
  return r1;
}

static int disc_grads(Ctx *ctx, Adversarial *a, Tensor *real_mel, Tensor *fake_mel, Tensor *c, int parts,
                      float r1_gain, AdvLosses *out, McmErr *err) {
  if (check_batch(a, real_mel, c, "real", err) || check_batch(a, fake_mel, c, "fake", err)) return -1;
  const int K = a->cfg.n_taps;
  Tensor *hr[ADV_MAX_TAPS], *hf[ADV_MAX_TAPS];
  c = tensor_detach(ctx, c);
  features_nograd(ctx, a, real_mel, hr, NULL);
  features_nograd(ctx, a, tensor_detach(ctx, fake_mel), hf, NULL);
  bool grad_was = ctx_set_grad(ctx, true);
  heads_trainable(ctx, a, true);
  params_zero_grad(ctx, a->params, a->n_params);

  /* Hinge: per head one training-mode pass on fake, then one on real (a power iteration each,
   * as two calls of the PyTorch module), also when only R1 is wanted (same state after). */
  bool was = ctx_set_grad(ctx, (parts & ADV_HINGE) != 0);
  Tensor *loss = NULL;
  double d_real = 0, d_fake = 0;
  int64_t right = 0, total = 0;
  for (int k = 0; k < K; k++) {
    Tensor *lf = disc_head_forward(ctx, a->heads, k, hf[k], c, true); /* (B, N) */
    Tensor *lr = disc_head_forward(ctx, a->heads, k, hr[k], c, true);
    Tensor *tr = op_hinge(ctx, lr, -1.0f), *tf = op_hinge(ctx, lf, 1.0f);
    d_real += host_scalar(ctx, tr), d_fake += host_scalar(ctx, tf);
    right += count_sign(ctx, lr, 1.0f) + count_sign(ctx, lf, -1.0f), total += lr->numel + lf->numel;
    Tensor *t = op_add(ctx, tr, tf);
    loss = loss ? op_add(ctx, loss, t) : t;
  }
  ctx_set_grad(ctx, was);
  if (parts & ADV_HINGE) backward(ctx, loss);

  double r1 = 0;
  if ((parts & ADV_R1) && a->cfg.r1_gamma > 0 && r1_gain > 0) r1 = r1_grads(ctx, a, hr, c, r1_gain);
  heads_trainable(ctx, a, false);
  ctx_set_grad(ctx, grad_was);
  if (out) {
    out->d_real = d_real, out->d_fake = d_fake, out->r1 = r1;
    out->d_acc = total ? (double)right / (double)total : 0;
  }
  return 0;
}

int adv_discriminator_grads(Ctx *ctx, Adversarial *a, Tensor *real_mel, Tensor *fake_mel, Tensor *c, int parts,
                            AdvLosses *out, McmErr *err) {
  return disc_grads(ctx, a, real_mel, fake_mel, c, parts, 1.0f, out, err);
}

int adv_discriminator_step(Ctx *ctx, Adversarial *a, Tensor *real_mel, Tensor *fake_mel, Tensor *c, float lr,
                           AdvLosses *out, McmErr *err) {
  /* Lazy R1: due on every r1_interval-th step (counted by the optimizer), scaled by it. */
  int n = a->cfg.r1_interval;
  float gain = a->opt->step % n == 0 ? (float)n : 0.0f;
  if (disc_grads(ctx, a, real_mel, fake_mel, c, ADV_HINGE | ADV_R1, gain, out, err)) return -1;
  heads_trainable(ctx, a, true);
  if (a->hook) a->hook(ctx, a->params, a->n_params, a->hook_user);
  adamw_step(ctx, a->opt, lr);
  heads_trainable(ctx, a, false);
  return 0;
}

/* ---------------------------------------------------------------- save / load */

int adv_save(Ctx *ctx, Adversarial *a, TensorFile *tf, McmErr *err) {
  if (params_save(ctx, &a->heads_ps, tf, "adv/", DT_F32, err)) return -1;
  return checkpoint_save_adamw(ctx, tf, "adv/opt", a->opt, err);
}

int adv_load_heads(Ctx *ctx, Adversarial *a, TensorFile *tf, const char *file_prefix, McmErr *err) {
  return params_load(ctx, &a->heads_ps, tf, file_prefix, true, err);
}

int adv_load(Ctx *ctx, Adversarial *a, TensorFile *tf, McmErr *err) {
  if (adv_load_heads(ctx, a, tf, "adv/", err)) return -1;
  return checkpoint_load_adamw(ctx, tf, "adv/opt", a->opt, err);
}
