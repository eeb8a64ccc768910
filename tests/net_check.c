/* The frozen networks at test size, run on any context (see net_check.h). */
#include "net_check.h"

#include <math.h>

#include "kernels/rng.h"
#include "models/audiomae.h"
#include "models/hifigan.h"
#include "models/params.h"
#include "models/unet.h"
#include "models/vae.h"
#include "test.h"

const char *net_name(NetKind kind) {
  static const char *names[] = {"unet", "vae decoder", "audiomae", "vocoder"};
  return kind >= 0 && kind < NET_KINDS ? names[kind] : "?";
}

static float *to_host(Ctx *ctx, const Tensor *t) {
  float *h = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, h);
  return h;
}

/* U(lo, hi) from the context's RNG: the same values on the CPU and the GPU. */
static Tensor *uniform(Ctx *ctx, int ndim, const int64_t *shape, float lo, float hi) {
  Tensor *t = tensor_new(ctx, DT_F32, ndim, shape);
  rng_uniform(ctx, t);
  float *h = to_host(ctx, t);
  for (int64_t i = 0; i < t->numel; i++) h[i] = lo + (hi - lo) * h[i];
  tensor_from_host_f32(ctx, t, h);
  free(h);
  return t;
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
  return (HifiganConfig){.model_in_dim = 8, .sampling_rate = 16000, .upsample_initial_channel = 32, .n_kernels = 2,
                         .resblock_kernel_sizes = {3, 7}, .n_dilations = {2, 2},
                         .resblock_dilation_sizes = {{1, 3}, {1, 3}}, .leaky_relu_slope = 0.1f, .n_upsamples = 2,
                         .upsample_rates = {5, 4}, .upsample_kernel_sizes = {10, 8}, .hop = 20};
}

NetRun net_run(Ctx *ctx, NetKind kind, DType dt) {
  ctx->seed = 11, ctx->rng_offset = 0; /* the same weights and inputs for every run */
  ctx_step_reset(ctx);
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  Tensor *x = NULL, *y = NULL;
  bool was = ctx_set_grad(ctx, true);
  if (kind == NET_UNET) {
    UNetConfig c = unet_cfg();
    Unet *net = unet_create(ctx, &c, &ps);
    unet_init_random(ctx, net);
    unet_cast(ctx, net, dt);
    x = uniform(ctx, SHAPE(2, 2, 8, 8), -1.5f, 1.5f);
    Tensor *t = tensor_new(ctx, DT_F32, SHAPE(2)), *emb = uniform(ctx, SHAPE(2, 16), -1.0f, 1.0f);
    tensor_from_host_f32(ctx, t, (float[]){37.0f, 811.0f});
    x->requires_grad = true;
    y = unet_forward(ctx, net, x, t, emb);
  } else if (kind == NET_VAE_DECODER) {
    VaeConfig c = vae_cfg();
    Vae *vae = vae_create(ctx, &c, &ps);
    vae_init_random(ctx, vae);
    vae_cast(ctx, vae, dt);
    x = uniform(ctx, SHAPE(2, 4, 4, 4), -2.0f, 2.0f);
    x->requires_grad = true;
    y = vae_decode(ctx, vae, x);
  } else if (kind == NET_AUDIOMAE) {
    AudioMAEConfig c = mae_cfg();
    AudioMAE *m = audiomae_create(ctx, &c, &ps);
    audiomae_init_random(ctx, m);
    audiomae_cast(ctx, m, dt);
    x = uniform(ctx, SHAPE(2, 1, 32, 16), -4.0f, 4.0f);
    x->requires_grad = true;
    Tensor *taps[2];
    audiomae_forward(ctx, m, x, (int[]){0, 2}, 2, taps, NULL);
    y = op_concat(ctx, taps, 2, 2);
  } else {
    HifiganConfig c = vocoder_cfg();
    Hifigan *m = hifigan_create(ctx, &c, &ps);
    hifigan_init_random(ctx, m);
    hifigan_cast(ctx, m, dt);
    x = uniform(ctx, SHAPE(2, 12, 8), -6.0f, 1.0f); /* (B, T, M): a log-mel */
    x->requires_grad = true;
    y = hifigan_forward(ctx, m, x);
  }
  EXPECT(y->dtype == DT_F32, "%s: the output is %s, not fp32", net_name(kind), dtype_name(y->dtype));
  backward_from(ctx, y, uniform(ctx, y->ndim, y->shape, -1.0f, 1.0f));
  for (int i = 0; i < ps.n; i++) {
    EXPECT(ps.p[i]->dtype == dt, "parameter %s is %s", ps.p[i]->name, dtype_name(ps.p[i]->dtype));
    EXPECT(!ps.p[i]->grad, "frozen parameter %s got a gradient", ps.p[i]->name);
  }
  NetRun r = {.y = to_host(ctx, y), .gx = to_host(ctx, x->grad), .ny = y->numel, .nx = x->numel};
  ctx_set_grad(ctx, was);
  ctx_step_reset(ctx);
  params_free(&ps);
  return r;
}

void net_run_free(NetRun *r) {
  free(r->y);
  free(r->gx);
  *r = (NetRun){0};
}

double net_rel_l2(const float *a, const float *ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a[i] - ref[i];
    num += d * d, den += (double)ref[i] * ref[i];
  }
  return den > 0 ? sqrt(num / den) : INFINITY;
}
