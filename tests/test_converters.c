/* The converters for the ORIGINAL checkpoints, C side: the files tools/convert_musicldm_original.py
 * and tools/convert_audiomae.py made from random original-format checkpoints
 * (tests/fixtures/converters.py, which checked in Python that they equal the diffusers
 * conversion tensor by tensor) load through each model's *_load with a configuration written
 * here by hand (so the sizes in their config attributes are the right ones, heads and
 * epsilons included), and compute what the reference modules computed
 * (tests/fixtures/converters.h5, relative L2 error <= 1e-4). A configuration that differs in
 * a value only the config attribute states (heads, dilations, layer_norm_eps) is refused by
 * name. */
#include <string.h>

#include "fixture.h"
#include "kernels/tape.h"
#include "models/audiomae.h"
#include "models/clap_text.h"
#include "models/hifigan.h"
#include "models/unet.h"
#include "models/vae.h"
#include "test.h"

#define CONV_REF "tests/fixtures/converters.h5"
#define CONV_DIR "tests/fixtures/converters/"
#define CONV_TOL 1e-4

/* The component attribute the converter wrote. */
static void expect_component(const char *path, const char *want) {
  McmErr err;
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  char *comp = NULL;
  ASSERT(tf_get_attr(tf, "component", &comp, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(comp, want), "%s: component '%s', expected '%s'", path, comp, want);
  EXPECT(tf_has_attr(tf, "config"), "%s: no config attribute", path);
  free(comp);
  tf_close(tf);
}

static void expect_load_error(int rc, const McmErr *err, const char *want) {
  EXPECT(rc != 0, "the load succeeded; expected an error mentioning \"%s\"", want);
  if (rc) EXPECT_STR_CONTAINS(err->msg, want);
}

/* ---------------------------------------------------------------- UNet */

static UNetConfig conv_unet_config(void) {
  UNetConfig c = unet_config_musicldm(); /* the original's form: channels per head */
  c.in_channels = c.out_channels = 4;
  c.levels = 3;
  const int ch[] = {4, 8, 8};
  for (int l = 0; l < 3; l++) c.block_out_channels[l] = ch[l], c.attention[l] = l == 2;
  c.layers_per_block = 1;
  c.norm_groups = 2;
  c.num_head_channels = 2;
  c.time_proj_dim = 4;
  c.time_embed_dim = 16;
  c.class_embed_in = 8;
  return c;
}

static double unet_error(UNetConfig cfg, int *load_rc, McmErr *err) {
  Ctx *ctx = ctx_create_cpu(0);
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  Unet *net = unet_create(ctx, &cfg, &ps);
  double e = -1;
  *load_rc = unet_load(ctx, net, CONV_DIR "unet.h5", err);
  if (*load_rc == 0) {
    Fixture *fx = fixture_open(CONV_REF);
    ctx_set_grad(ctx, false);
    Tensor *out = unet_forward(ctx, net, fixture_tensor(ctx, fx, "unet/x", false), /* (B, 4, 8, 4) */
                               fixture_tensor(ctx, fx, "unet/t", false),           /* (B) */
                               fixture_tensor(ctx, fx, "unet/class_emb", false));  /* (B, 8) */
    e = fixture_expect(ctx, fx, "unet/out", out, CONV_TOL);
    fixture_close(fx);
  }
  params_free(&ps);
  ctx_destroy(ctx);
  return e;
}

TEST(converters_unet_original_layout) {
  expect_component(CONV_DIR "unet.h5", "unet");
  McmErr err;
  int rc;
  double e1 = unet_error(conv_unet_config(), &rc, &err); /* 2-channel heads: 2, 4, 4 heads */
  ASSERT(rc == 0, "%s", err.msg);
  UNetConfig c = conv_unet_config(); /* the same heads as diffusers' per-level counts */
  c.num_head_channels = 0;
  c.num_heads[0] = 2, c.num_heads[1] = 4, c.num_heads[2] = 4;
  double e2 = unet_error(c, &rc, &err);
  ASSERT(rc == 0, "%s", err.msg);
  c.num_heads[2] = 8; /* the file states 4 heads at the attention level */
  unet_error(c, &rc, &err);
  expect_load_error(rc, &err, "attention_head_dim[2] = 4");
  printf("  converted original UNet: rel L2 %.2g (channels per head), %.2g (heads per level)\n", e1, e2);
}

/* ---------------------------------------------------------------- VAE */

TEST(converters_vae_original_layout) {
  expect_component(CONV_DIR "vae.h5", "vae");
  Ctx *ctx = ctx_create_cpu(0);
  VaeConfig c = vae_config_musicldm();
  c.latent_channels = 2, c.n_blocks = 3, c.layers_per_block = 1, c.norm_num_groups = 2;
  const int ch[] = {4, 8, 8};
  for (int i = 0; i < 3; i++) c.block_out_channels[i] = ch[i];
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  Vae *vae = vae_create(ctx, &c, &ps);
  McmErr err;
  ASSERT(vae_load(ctx, vae, CONV_DIR "vae.h5", &err) == 0, "%s", err.msg);
  EXPECT(vae->cfg.scaling_factor == 0.5f, "scaling_factor %g, expected the checkpoint's scale_factor 0.5",
         vae->cfg.scaling_factor);
  Fixture *fx = fixture_open(CONV_REF);
  ctx_set_grad(ctx, false);
  VaeMoments m = vae_encode(ctx, vae, fixture_tensor(ctx, fx, "vae/mel", false)); /* (B, 2, 2, 2) each */
  double em = fixture_expect(ctx, fx, "vae/mean", m.mean, CONV_TOL);
  double el = fixture_expect(ctx, fx, "vae/logvar", m.logvar, CONV_TOL);
  Tensor *dec = vae_decode(ctx, vae, fixture_tensor(ctx, fx, "vae/z", false));   /* (B, 1, 8, 8) */
  double ed = fixture_expect(ctx, fx, "vae/dec", dec, CONV_TOL);
  printf("  converted original VAE (mid attention from 1x1 convs, up levels reversed): rel L2 mean %.2g, logvar "
         "%.2g, decode %.2g\n", em, el, ed);
  fixture_close(fx);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- HiFi-GAN */

static HifiganConfig conv_vocoder_config(void) {
  HifiganConfig c = {.model_in_dim = 8, .sampling_rate = 16000, .hop = 4, .upsample_initial_channel = 8,
                     .n_upsamples = 2, .upsample_rates = {2, 2}, .upsample_kernel_sizes = {4, 4}, .n_kernels = 2,
                     .resblock_kernel_sizes = {3, 5}, .n_dilations = {2, 2},
                     .resblock_dilation_sizes = {{1, 3}, {1, 2}}, .leaky_relu_slope = 0.1f, .normalize_before = false};
  return c;
}

TEST(converters_vocoder_original_layout) {
  expect_component(CONV_DIR "vocoder.h5", "vocoder");
  Ctx *ctx = ctx_create_cpu(0);
  HifiganConfig c = conv_vocoder_config();
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  Hifigan *m = hifigan_create(ctx, &c, &ps);
  McmErr err;
  ASSERT(hifigan_load(ctx, m, CONV_DIR "vocoder.h5", &err) == 0, "%s", err.msg);
  Fixture *fx = fixture_open(CONV_REF);
  ctx_set_grad(ctx, false);
  Tensor *wav = hifigan_forward(ctx, m, fixture_tensor(ctx, fx, "vocoder/mel", false)); /* (B, 20) */
  double e = fixture_expect(ctx, fx, "vocoder/out", wav, CONV_TOL);
  printf("  converted original HiFi-GAN (ups.i -> upsampler.i): rel L2 %.2g\n", e);
  fixture_close(fx);
  params_free(&ps);
  /* dilations are not in the weights: the config attribute says them */
  c.resblock_dilation_sizes[1][1] = 3;
  params_init(&ps, "");
  m = hifigan_create(ctx, &c, &ps);
  expect_load_error(hifigan_load(ctx, m, CONV_DIR "vocoder.h5", &err), &err, "resblock_dilation_sizes");
  params_free(&ps);
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- CLAP text */

TEST(converters_clap_text_original_layout) {
  expect_component(CONV_DIR "text_encoder.h5", "text_encoder");
  Ctx *ctx = ctx_create_cpu(0);
  ClapTextConfig c = {.vocab_size = 50, .hidden_size = 16, .num_hidden_layers = 2, .num_attention_heads = 2,
                      .intermediate_size = 32, .max_position_embeddings = 20, .type_vocab_size = 1, .pad_token_id = 1,
                      .projection_dim = 8, .layer_norm_eps = 1e-5f, .max_length = 18};
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  ClapText *m = clap_text_create(ctx, &c, &ps);
  McmErr err;
  ASSERT(clap_text_load(ctx, m, CONV_DIR "text_encoder.h5", &err) == 0, "%s", err.msg);
  Fixture *fx = fixture_open(CONV_REF);
  int64_t n;
  float *idsf = fixture_values(fx, "clap/ids", &n); /* (2, 6) */
  int32_t ids_host[12];
  ASSERT(n == 12, "clap/ids has %lld values", (long long)n);
  for (int i = 0; i < 12; i++) ids_host[i] = (int32_t)idsf[i];
  free(idsf);
  Tensor *ids = tensor_new_persistent(ctx, DT_I32, SHAPE(2, 6));
  tensor_from_host_i32(ctx, ids, ids_host);
  ctx_set_grad(ctx, false);
  Tensor *out = clap_text_forward(ctx, m, ids, fixture_tensor(ctx, fx, "clap/mask", false)); /* (2, 8) */
  double e = fixture_expect(ctx, fx, "clap/out", out, CONV_TOL);
  printf("  converted original CLAP text tower (text_branch, text_projection.0/.2): rel L2 %.2g\n", e);
  fixture_close(fx);
  params_free(&ps);
  /* roberta-base's LayerNorm epsilon is stated: transformers' default 1e-12 is refused */
  c.layer_norm_eps = 1e-12f;
  params_init(&ps, "");
  m = clap_text_create(ctx, &c, &ps);
  expect_load_error(clap_text_load(ctx, m, CONV_DIR "text_encoder.h5", &err), &err, "layer_norm_eps");
  params_free(&ps);
  ctx_destroy(ctx);
}

/* ---------------------------------------------------------------- AudioMAE */

TEST(converters_audiomae_pretrained_layout) {
  expect_component(CONV_DIR "audiomae.h5", "audiomae");
  Ctx *ctx = ctx_create_cpu(0);
  AudioMAEConfig c = {.img_t = 16, .img_f = 8, .in_chans = 1, .patch = 4, .embed_dim = 16, .depth = 2,
                      .num_heads = 2, .mlp_ratio = 4.0f, .norm_eps = 1e-6f};
  ParamSet ps;
  params_init(&ps, "");
  ps.trainable = false;
  AudioMAE *m = audiomae_create(ctx, &c, &ps);
  McmErr err;
  ASSERT(audiomae_load(ctx, m, CONV_DIR "audiomae.h5", &err) == 0, "%s", err.msg);
  Fixture *fx = fixture_open(CONV_REF);
  ctx_set_grad(ctx, false);
  const int taps[] = {-1, 1};
  Tensor *tap[2], *cls;
  audiomae_forward(ctx, m, fixture_tensor(ctx, fx, "audiomae/fbank", false), taps, 2, tap, &cls);
  double e = fixture_expect(ctx, fx, "audiomae/tap_m1", tap[0], CONV_TOL);  /* (B, 16, 8) */
  e = fmax(e, fixture_expect(ctx, fx, "audiomae/tap_1", tap[1], CONV_TOL)); /* (B, 16, 8) */
  e = fmax(e, fixture_expect(ctx, fx, "audiomae/cls", cls, CONV_TOL));      /* (B, 16) */
  printf("  converted AudioMAE (decoder dropped): max rel L2 %.2g\n", e);
  fixture_close(fx);
  params_free(&ps);
  /* heads are not in the weights: the config attribute says them */
  c.num_heads = 4;
  params_init(&ps, "");
  m = audiomae_create(ctx, &c, &ps);
  expect_load_error(audiomae_load(ctx, m, CONV_DIR "audiomae.h5", &err), &err, "num_heads = 2");
  params_free(&ps);
  ctx_destroy(ctx);
}
