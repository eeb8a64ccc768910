/* The adversarial part of MusicCM (distillation.md §2, §7): a frozen AudioMAE feature network
 * fed through the mel → fbank bridge, trainable StyleGAN-T heads on several of its layers,
 * their hinge losses, R1 on each head's input, and the heads' AdamW.
 *
 * Shapes: B batch, T mel frames, F mel bins (64), C AudioMAE width (768), N its patch tokens
 * (512), K heads (one per tap), c_dim = text (512) + C.
 *
 *   c        = [text_emb ‖ AudioMAE cls of bridge(real mel)]                       (B, c_dim)
 *   G loss   = −Σ_k mean_{b,n} D_k(h_k(fake), c)                                   (1)
 *   D loss   = Σ_k [mean relu(1 − D_k(h_k(real))) + mean relu(1 + D_k(h_k(fake)))]
 *              + (γ/2)·Σ_k mean_b ‖∂(Σ_{b,n} D_k(h))/∂h at h_k(real)‖²
 *
 * Heads run in training mode (one spectral-norm power iteration per call, as the PyTorch
 * modules do in train mode) in the generator pass and in each D pass on fake and real; the
 * extra R1 passes below reuse the vectors (eval mode), so they see the same D as the real pass.
 *
 * R1 without double backward (the tape is first-order). With S(h) = Σ D_k(h) and g = ∂S/∂h at
 * the real features (one first-order backward, heads frozen, so only the input gradient),
 *   ∇_φ ½‖g‖² = ∇_φ ⟨v, ∂S/∂h⟩|_{v = g fixed}.
 * ⟨v, ∂S/∂h⟩ is a directional derivative (a JVP). mcm computes it exactly, by running the
 * head's forward on (h, v) with the tangent carried alongside (Pearlmutter's R-op written
 * from ops: SN-conv → conv of the tangent, BatchNormLocal → its linearisation, LeakyReLU → its
 * derivative mask), then one ordinary backward of that scalar to the head weights. This is
 * what autograd's double backward gives (measured against it in tests/test_adversarial.c to
 * fp32 precision), at the cost of about two head forwards and one backward per head.
 *
 * The finite-difference HVP ∇_φ [S(h + εv) − S(h − εv)]/(2ε), ε = r1_eps·‖h‖/‖v‖, is kept
 * selectable (r1_fd) for comparison, but it is NOT a good approximation here: the heads are
 * piecewise linear in h (LeakyReLU), and every unit the ±ε step carries across its kink adds
 * a term of size O(1/ε) to ∇_φ S(h ± εv); the expected number of such units is O(ε), so the
 * difference converges to the distributional mixed derivative, which differs from the a.e.
 * one (autograd's, and the gradient of the penalty actually evaluated) by an O(1) bias that no
 * choice of ε removes (at full size, 8·768·512 units per layer, some always cross). Measured
 * on the fixture at r1_eps 1e-3: relative errors 0.2–9 on the conv and BatchNorm weights.
 *
 * The lazy form (r1_interval > 1) applies R1 every interval-th D step, scaled by the interval.
 *
 * Memory and sharing: the AudioMAE and heads live in ctx's persistent memory; the heads'
 * weights are frozen except inside adv_discriminator_step, so the generator loss's backward
 * (run by the trainer) gives head weights no gradient.
 */
#pragma once
#include <stdbool.h>

#include "diffusion/bridge.h"
#include "models/audiomae.h"
#include "models/disc_heads.h"
#include "models/hifigan.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ADV_MAX_TAPS 16

typedef struct AdvConfig {
  const char *audiomae_path; /* AudioMAE weights (tensor file); NULL: random init (tests) */
  const char *bridge_path;   /* fitted bridge (tools/fit_bridge); required unless exact_path */
  AudioMAEConfig mae;        /* in_chans 1; img_f = bridge output bins; img_t = AudioMAE frames */
  DiscHeadsConfig heads;     /* channels = mae.embed_dim, c_dim = text_dim + mae.embed_dim */
  int taps[ADV_MAX_TAPS];    /* AudioMAE layers, −1 … depth−1: one head each */
  int n_taps;
  int text_dim;              /* 512 (CLAP) */
  int mel_bins;              /* F: 64 (MusicLDM) */
  AdamWHyper opt;            /* heads: lr 1e-4, β (0, 0.99), eps 1e-8, weight decay 0 */
  float r1_gamma;            /* γ: 1e-5 */
  bool r1_fd;                /* R1 weight gradient by the finite-difference HVP (biased, see
                                above; for comparison only); false: exact JVP */
  float r1_eps;              /* its relative step: 1e-3 */
  int r1_interval;           /* lazy R1: every n-th D step, scaled by n (1 = every step) */
  /* Exact path for checks: mel → HiFi-GAN → waveform → AudioMAE's Kaldi fbank with img_f bins
   * (128 at full size), padded or cut to img_t frames (forward only, on the host;
   * adv_condition, adv_fbank and the D step accept it, adv_generator_loss refuses it). */
  bool exact_path;
  const char *vocoder_path;  /* HiFi-GAN weights when exact_path */
  HifiganConfig vocoder;
} AdvConfig;

/* mcm's defaults at full size (distillation.md §7): AudioMAE ViT-B on 1024 × 128, taps
 * −1, 2, 5, 8, 11, heads default, text 512, 64 mel bins, γ 1e-5, exact R1 (r1_eps 1e-3 for the FD
 * variant). Paths NULL. */
AdvConfig adv_config_default(void);
/* Every size and combination (the heads' channels and c_dim against AudioMAE and text, the
 * taps, the bridge path when needed); one line in err, -1 if bad. */
int adv_config_check(const AdvConfig *cfg, McmErr *err);

typedef struct Adversarial Adversarial; /* frozen AudioMAE + bridge + trainable heads + their AdamW */
typedef struct AdvLosses {
  double g_loss; /* the last adv_generator_loss value */
  double d_real, d_fake; /* Σ_k mean relu(1 ∓ D_k) */
  double r1;     /* Σ_k mean_b ‖∂ΣD_k/∂h_k‖² (unscaled; the loss adds γ/2 of it); 0 when skipped */
  double d_acc;  /* fraction of logits on the right side of 0 (real > 0, fake < 0) */
} AdvLosses;

/* Loads AudioMAE and the bridge, creates the heads (random init from ctx's RNG) and their
 * AdamW. NULL with err on a bad config or unreadable weights. */
Adversarial *adv_create(Ctx *ctx, const AdvConfig *cfg, McmErr *err);
/* Frees the host lists (the tensors belong to ctx). NULL is a no-op. */
void adv_destroy(Adversarial *a);
const AdvConfig *adv_config(const Adversarial *a);
DiscHeads *adv_heads(Adversarial *a);
AudioMAE *adv_audiomae(Adversarial *a);
Bridge *adv_bridge(Adversarial *a);

/* real_mel (B, 1, T, F), text_emb (B, text_dim) -> c (B, c_dim) = [text ‖ AudioMAE cls], no grad. */
Tensor *adv_condition(Ctx *ctx, Adversarial *a, Tensor *real_mel, Tensor *text_emb);
/* AudioMAE's input for a mel (B, 1, T, F) -> (B, 1, img_t, img_f): the bridge (differentiable)
 * or, with exact_path, the vocoder and Kaldi fbank (no gradient). */
Tensor *adv_fbank(Ctx *ctx, Adversarial *a, Tensor *mel);
/* fake_mel (B, 1, T, F) requiring grad, c (B, c_dim) -> scalar −Σ_k mean D_k(fake). Backward
 * (the caller's) reaches fake_mel only. Fatal with exact_path (no gradient there). */
Tensor *adv_generator_loss(Ctx *ctx, Adversarial *a, Tensor *fake_mel, Tensor *c);

/* Called between the gradients and the AdamW step of every D step (data parallel: all-reduce
 * the head gradients, e.g. comm_allreduce_mean). */
typedef void (*AdvGradHook)(Ctx *ctx, Tensor *const *params, int n, void *user);
void adv_set_grad_hook(Adversarial *a, AdvGradHook fn, void *user);

/* Parts of the D loss for adv_discriminator_grads. */
enum { ADV_HINGE = 1, ADV_R1 = 2 };
/* Zeroes the heads' gradients, then accumulates those of the selected parts of the D loss at
 * real_mel / fake_mel (detached: no gradient reaches either) without stepping; losses into
 * *out. Heads are left frozen. For tests and for callers that step themselves. */
int adv_discriminator_grads(Ctx *ctx, Adversarial *a, Tensor *real_mel, Tensor *fake_mel, Tensor *c, int parts,
                            AdvLosses *out, McmErr *err);
/* One heads step (call it after the generator loss's backward: it runs backward passes of
 * its own, which consume the tape): adv_discriminator_grads (hinge, plus R1 when due), the grad hook, AdamW at
 * lr. -1 with err when the batch cannot be split for BatchNormLocal or shapes disagree. */
int adv_discriminator_step(Ctx *ctx, Adversarial *a, Tensor *real_mel, Tensor *fake_mel, Tensor *c, float lr,
                           AdvLosses *out, McmErr *err);

/* Heads (weights, u and v), their AdamW state and the D step count under "adv/". */
int adv_save(Ctx *ctx, Adversarial *a, TensorFile *tf, McmErr *err);
int adv_load(Ctx *ctx, Adversarial *a, TensorFile *tf, McmErr *err);
/* Only the heads' weights and vectors, under file_prefix + their names (initial weights). */
int adv_load_heads(Ctx *ctx, Adversarial *a, TensorFile *tf, const char *file_prefix, McmErr *err);
/* The trainable head weights (not u, v), in a fixed order; *n receives the count. */
Tensor **adv_head_params(Adversarial *a, int *n);

#ifdef __cplusplus
}
#endif
