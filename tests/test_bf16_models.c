/* The frozen networks in bf16 (unet_cast, vae_cast, audiomae_cast) against the same networks
 * in fp32, on the CPU, where bf16 is emulated with the GPU's rounding points
 * (kernels/cpu_bf16.h): forward output and the input gradient that training backpropagates
 * through them.
 *
 * Tolerance. bf16 keeps 8 significant bits: each rounding is a relative error of at most
 * 2^-9 ≈ 2e-3. A network rounds its weights once and every stored activation and gradient
 * once per op; independent roundings add in quadrature, so k of them on a path give about
 * √k · 2^-9 relative to the signal, amplified by whatever the network amplifies. These tiny
 * networks have 20–60 ops on their deepest path: √60 · 2^-9 ≈ 1.5e-2. We allow 4e-2 in
 * relative L2 over the whole tensor (normalisation layers divide by small variances at these
 * widths and amplify a little). And we require more than 2^-14 ≈ 6e-5: fp32 on the same
 * weights agrees to ~1e-6, so a cast that silently did nothing fails. */
#include <math.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/audiomae.h"
#include "models/hifigan.h"
#include "models/params.h"
#include "models/unet.h"
#include "models/vae.h"
#include "test.h"

#define NET_TOL 4e-2
#define NET_MIN_DIFF 6e-5

typedef struct NetRun {
  float *y, *gx;
  int64_t ny, nx;
} NetRun;

typedef enum { NET_UNET, NET_VAE_DECODER, NET_AUDIOMAE, NET_VOCODER } NetKind;

static float *to_host(Ctx *ctx, const Tensor *t) {
  float *h = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, h);
  return h;
}

static void fill_uniform(Ctx *ctx, Tensor *t, float lo, float hi) {
  rng_uniform(ctx, t);
  float *h = to_host(ctx, t);
  for (int64_t i = 0; i < t->numel; i++) h[i] = lo + (hi - lo) * h[i];
  tensor_from_host_f32(ctx, t, h);
  free(h);
}

static UNetConfig unet_cfg(void) {
  UNetConfig c = unet_config_musicldm();
  c.in_channels = c.out_channels = 2;
  c.levels = 2;
  c.block_out_channels[0] = 16, c.block_out_channels[1] = 32;
  c.attention[0] = false, c.attention[1] = true;
  c.layers_per_block = 1;
  c.norm_groups = 8;
  c.num_head_channels = 16;
  c.time_proj_dim = 16, c.time_embed_dim = 64;
  c.class_embed_in = 16;
  return c;
}

static VaeConfig vae_cfg(void) {
  VaeConfig c = vae_config_musicldm();
  c.n_blocks = 2, c.block_out_channels[0] = 16, c.block_out_channels[1] = 32;
  c.layers_per_block = 1, c.norm_num_groups = 8, c.latent_channels = 4;
  return c;
}

static AudioMAEConfig mae_cfg(void) {
  return (AudioMAEConfig){.img_t = 32, .img_f = 16, .in_chans = 1, .patch = 4, .embed_dim = 64, .depth = 3,
                          .num_heads = 4, .mlp_ratio = 4.0f, .norm_eps = 1e-6f};
}

static HifiganConfig vocoder_cfg(void) {
  HifiganConfig c = {.model_in_dim = 8, .sampling_rate = 16000, .upsample_initial_channel = 32, .n_kernels = 2,
                     .resblock_kernel_sizes = {3, 7}, .n_dilations = {2, 2}, .resblock_dilation_sizes = {{1, 3}, {1, 3}},
                     .leaky_relu_slope = 0.1f, .n_upsamples = 2, .upsample_rates = {5, 4},
                     .upsample_kernel_sizes = {10, 8}, .hop = 20};
  return c;
}

/* The network with random weights (the same for both precisions: same seed), frozen, cast to
 * dt; forward on a fixed input; the input gradient for a fixed upstream gradient. */
static NetRun run_net(NetKind kind, DType dt) {
  Ctx *ctx = ctx_create_cpu(11);
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  Tensor *x = NULL, *y = NULL;
  if (kind == NET_UNET) {
    UNetConfig c = unet_cfg();
    Unet *net = unet_create(ctx, &c, &ps);
    unet_init_random(ctx, net);
    unet_cast(ctx, net, dt);
    x = tensor_new(ctx, DT_F32, SHAPE(2, 2, 8, 8));
    Tensor *t = tensor_new(ctx, DT_F32, SHAPE(2)), *emb = tensor_new(ctx, DT_F32, SHAPE(2, 16));
    fill_uniform(ctx, x, -1.5f, 1.5f);
    tensor_from_host_f32(ctx, t, (float[]){37.0f, 811.0f});
    fill_uniform(ctx, emb, -1.0f, 1.0f);
    x->requires_grad = true;
    ctx_set_grad(ctx, true);
    y = unet_forward(ctx, net, x, t, emb);
  } else if (kind == NET_VAE_DECODER) {
    VaeConfig c = vae_cfg();
    Vae *vae = vae_create(ctx, &c, &ps);
    vae_init_random(ctx, vae);
    vae_cast(ctx, vae, dt);
    x = tensor_new(ctx, DT_F32, SHAPE(2, 4, 4, 4));
    fill_uniform(ctx, x, -2.0f, 2.0f);
    x->requires_grad = true;
    ctx_set_grad(ctx, true);
    y = vae_decode(ctx, vae, x);
  } else if (kind == NET_VOCODER) {
    HifiganConfig c = vocoder_cfg();
    Hifigan *m = hifigan_create(ctx, &c, &ps);
    hifigan_init_random(ctx, m);
    hifigan_cast(ctx, m, dt);
    x = tensor_new(ctx, DT_F32, SHAPE(2, 12, 8)); /* (B, T, M): a log-mel */
    fill_uniform(ctx, x, -6.0f, 1.0f);
    x->requires_grad = true;
    ctx_set_grad(ctx, true);
    y = hifigan_forward(ctx, m, x);
  } else {
    AudioMAEConfig c = mae_cfg();
    AudioMAE *m = audiomae_create(ctx, &c, &ps);
    audiomae_init_random(ctx, m);
    audiomae_cast(ctx, m, dt);
    x = tensor_new(ctx, DT_F32, SHAPE(2, 1, 32, 16));
    fill_uniform(ctx, x, -4.0f, 4.0f);
    x->requires_grad = true;
    ctx_set_grad(ctx, true);
    Tensor *taps[2];
    audiomae_forward(ctx, m, x, (int[]){0, 2}, 2, taps, NULL);
    y = op_concat(ctx, taps, 2, 2);
  }
  EXPECT(y->dtype == DT_F32, "the network's output is %s, not fp32", dtype_name(y->dtype));
  Tensor *dy = tensor_new(ctx, DT_F32, y->ndim, y->shape);
  fill_uniform(ctx, dy, -1.0f, 1.0f);
  backward_from(ctx, y, dy);
  for (int i = 0; i < ps.n; i++) {
    EXPECT(ps.p[i]->dtype == dt, "parameter %s is %s", ps.p[i]->name, dtype_name(ps.p[i]->dtype));
    EXPECT(!ps.p[i]->grad, "frozen parameter %s got a gradient", ps.p[i]->name);
  }
  NetRun r = {.y = to_host(ctx, y), .gx = to_host(ctx, x->grad), .ny = y->numel, .nx = x->numel};
  params_free(&ps);
  ctx_destroy(ctx);
  return r;
}

static double rel_l2(const float *a, const float *ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), den += (double)ref[i] * ref[i];
  return den > 0 ? sqrt(num / den) : INFINITY;
}

static void check_net(const char *name, NetKind kind) {
  NetRun a = run_net(kind, DT_F32), b = run_net(kind, DT_BF16);
  double ey = rel_l2(b.y, a.y, a.ny), eg = rel_l2(b.gx, a.gx, a.nx);
  printf("  %s bf16 vs fp32: output %.3g, input gradient %.3g (relative L2)\n", name, ey, eg);
  EXPECT(ey < NET_TOL && ey > NET_MIN_DIFF, "%s output: relative error %.3g (want %.0e .. %.0e)", name, ey,
         NET_MIN_DIFF, NET_TOL);
  EXPECT(eg < NET_TOL && eg > NET_MIN_DIFF, "%s input gradient: relative error %.3g (want %.0e .. %.0e)", name, eg,
         NET_MIN_DIFF, NET_TOL);
  free(a.y), free(a.gx), free(b.y), free(b.gx);
}

TEST(bf16_unet_tracks_fp32) { check_net("unet", NET_UNET); }
TEST(bf16_vae_decoder_tracks_fp32) { check_net("vae decoder", NET_VAE_DECODER); }
TEST(bf16_audiomae_tracks_fp32) { check_net("audiomae", NET_AUDIOMAE); }
TEST(bf16_vocoder_tracks_fp32) { check_net("vocoder", NET_VOCODER); }

/* The cast frees the fp32 storage: the persistent blocks keep their count (one new per
 * parameter, one freed) and nothing is lost at ctx_destroy (valgrind/ASan in SAN=1). */
TEST(bf16_cast_replaces_the_storage) {
  Ctx *ctx = ctx_create_cpu(3);
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  VaeConfig c = vae_cfg();
  Vae *vae = vae_create(ctx, &c, &ps);
  vae_init_random(ctx, vae);
  float *before = to_host(ctx, ps.p[0]);
  const int blocks = ctx->n_persistent;
  vae_cast(ctx, vae, DT_BF16);
  EXPECT(ctx->n_persistent == blocks, "persistent blocks %d -> %d", blocks, ctx->n_persistent);
  float *after = to_host(ctx, ps.p[0]);
  for (int64_t i = 0; i < ps.p[0]->numel; i++)
    EXPECT(after[i] == bf16_to_f32(f32_to_bf16(before[i])), "element %lld: %g is not round(%g)", (long long)i,
           after[i], before[i]);
  free(before), free(after);
  params_free(&ps);
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(bf16_cast_refuses_trainable_parameters, 1, "only frozen parameters change dtype") {
  Ctx *ctx = ctx_create_cpu(3);
  ParamSet ps;
  params_init(&ps, "");
  VaeConfig c = vae_cfg();
  Vae *vae = vae_create(ctx, &c, &ps); /* trainable */
  vae_cast(ctx, vae, DT_BF16);
}
