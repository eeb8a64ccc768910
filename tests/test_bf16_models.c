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
#include "models/params.h"
#include "models/vae.h"
#include "net_check.h"
#include "test.h"

#define NET_TOL 4e-2
#define NET_MIN_DIFF 6e-5

static VaeConfig vae_cfg(void) {
  VaeConfig c = vae_config_musicldm();
  c.n_blocks = 2, c.block_out_channels[0] = 16, c.block_out_channels[1] = 32;
  c.layers_per_block = 1, c.norm_num_groups = 8, c.latent_channels = 4;
  return c;
}

static float *to_host(Ctx *ctx, const Tensor *t) {
  float *h = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, h);
  return h;
}

static void check_net(NetKind kind) {
  Ctx *ctx = ctx_create_cpu(0);
  NetRun a = net_run(ctx, kind, DT_F32), b = net_run(ctx, kind, DT_BF16);
  double ey = net_rel_l2(b.y, a.y, a.ny), eg = net_rel_l2(b.gx, a.gx, a.nx);
  const char *name = net_name(kind);
  printf("  %s bf16 vs fp32: output %.3g, input gradient %.3g (relative L2)\n", name, ey, eg);
  EXPECT(ey < NET_TOL && ey > NET_MIN_DIFF, "%s output: relative error %.3g (want %.0e .. %.0e)", name, ey,
         NET_MIN_DIFF, NET_TOL);
  EXPECT(eg < NET_TOL && eg > NET_MIN_DIFF, "%s input gradient: relative error %.3g (want %.0e .. %.0e)", name, eg,
         NET_MIN_DIFF, NET_TOL);
  net_run_free(&a), net_run_free(&b);
  ctx_destroy(ctx);
}

TEST(bf16_unet_tracks_fp32) { check_net(NET_UNET); }
TEST(bf16_vae_decoder_tracks_fp32) { check_net(NET_VAE_DECODER); }
TEST(bf16_audiomae_tracks_fp32) { check_net(NET_AUDIOMAE); }
TEST(bf16_vocoder_tracks_fp32) { check_net(NET_VOCODER); }

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
