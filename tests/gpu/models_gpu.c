/* The frozen networks on the GPU against the CPU (tests/net_check.h): UNet, VAE decoder,
 * AudioMAE and HiFi-GAN at test size, forward and input gradient, in fp32 and in bf16.
 *
 * Tolerances, relative L2 over the whole tensor:
 *  - fp32: the same ops in another summation order (cuBLAS/cuDNN tiling, split-K, tree
 *    reductions): ~1e-6 per op, compounded over ~60 ops and amplified by the norms of these
 *    narrow networks; 1e-4 still fails any wrong index or missing term (errors of O(1)).
 *  - bf16 against the CPU's bf16 (kernels/cpu_bf16.h rounds where the GPU stores): the same
 *    rounding points, but a value whose fp32 sum differs in the last bits can round to the
 *    neighbouring bf16 (2^-8 relative), and the GPU's fused attention and cuDNN rounds a few
 *    intermediates the CPU keeps in fp32 (ops_attention_large_gpu.c). Such flips compound like
 *    the bf16-vs-fp32 error itself, which tests/test_bf16_models.c bounds by 4e-2: the same
 *    bound here. */
#include "tests/net_check.h"
#include "tests/test.h"

static void check_device(NetKind kind, DType dt) {
  McmErr err;
  Ctx *gpu = ctx_create(&(DeviceSpec){DEV_CUDA, 0, false}, 1, &err);
  ASSERT(gpu, "%s", err.msg);
  Ctx *cpu = ctx_create_cpu(1);
  NetRun a = net_run(cpu, kind, dt), b = net_run(gpu, kind, dt);
  const double tol = dt == DT_F32 ? 1e-4 : 4e-2;
  double ey = net_rel_l2(b.y, a.y, a.ny), eg = net_rel_l2(b.gx, a.gx, a.nx);
  printf("  %s %s GPU vs CPU: output %.3g, input gradient %.3g (relative L2)\n", net_name(kind), dtype_name(dt), ey,
         eg);
  EXPECT(ey < tol, "%s %s output: relative error %.3g > %.0e", net_name(kind), dtype_name(dt), ey, tol);
  EXPECT(eg < tol, "%s %s input gradient: relative error %.3g > %.0e", net_name(kind), dtype_name(dt), eg, tol);
  net_run_free(&a), net_run_free(&b);
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}

TEST(gpu_unet_matches_cpu_fp32) { check_device(NET_UNET, DT_F32); }
TEST(gpu_unet_matches_cpu_bf16) { check_device(NET_UNET, DT_BF16); }
TEST(gpu_vae_decoder_matches_cpu_fp32) { check_device(NET_VAE_DECODER, DT_F32); }
TEST(gpu_vae_decoder_matches_cpu_bf16) { check_device(NET_VAE_DECODER, DT_BF16); }
TEST(gpu_audiomae_matches_cpu_fp32) { check_device(NET_AUDIOMAE, DT_F32); }
TEST(gpu_audiomae_matches_cpu_bf16) { check_device(NET_AUDIOMAE, DT_BF16); }
TEST(gpu_vocoder_matches_cpu_fp32) { check_device(NET_VOCODER, DT_F32); }
TEST(gpu_vocoder_matches_cpu_bf16) { check_device(NET_VOCODER, DT_BF16); }
