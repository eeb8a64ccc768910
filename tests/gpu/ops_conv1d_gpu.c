/* conv1d and conv_transpose1d rows of the GPU op table (make test-gpu): zero and circular
 * padding, groups, HiFi-GAN's dilations and upsampling stages, odd lengths, batch 2.
 *
 * Tolerance GEMM_TOL: every output and gradient element is a sum of at most ~100 products
 * of O(1) values ((CIN/G)·K ≤ 82 for y and dx, B·TO ≤ 92 for dw and db), inside the
 * K ≤ 200 that F32_GEMM / BF16_GEMM are sized for. */
#include "gpu_check.h"
#include "kernels/conv1d.h"

static Tensor *conv1d_case(OpCase *c, int B, int CIN, int T, int COUT, int K, bool bias, Conv1dArgs a) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, SHAPE(B, CIN, T));                         /* (B, CIN, T) */
  Tensor *w = case_input(c, "w", -0.5f, 0.5f, SHAPE(COUT, CIN / conv1d_groups(a), K)); /* (COUT, CIN/G, K) */
  Tensor *b = bias ? case_input(c, "b", -0.5f, 0.5f, SHAPE(COUT)) : NULL;
  return op_conv1d(c->ctx, x, w, b, a);
}

static Tensor *transpose_case(OpCase *c, int B, int CIN, int T, int COUT, int K, bool bias, int stride, int pad,
                              int opad, int dil) {
  Tensor *x = case_input(c, "x", -1.0f, 1.0f, SHAPE(B, CIN, T));    /* (B, CIN, T) */
  Tensor *w = case_input(c, "w", -0.5f, 0.5f, SHAPE(CIN, COUT, K)); /* (CIN, COUT, K) */
  Tensor *b = bias ? case_input(c, "b", -0.5f, 0.5f, SHAPE(COUT)) : NULL;
  return op_conv_transpose1d(c->ctx, x, w, b, stride, pad, opad, dil);
}

static Tensor *fw_c1_k3(OpCase *c) { return conv1d_case(c, 2, 5, 29, 6, 3, true, conv1d_args(1, 1, 1)); }
/* HiFi-GAN ResBlock1 convs: 'same' padding d·(K − 1)/2 with dilation 3 and 5. */
static Tensor *fw_c1_dil3(OpCase *c) { return conv1d_case(c, 2, 4, 31, 4, 3, true, conv1d_args(1, 3, 3)); }
static Tensor *fw_c1_dil5_k7(OpCase *c) { return conv1d_case(c, 2, 3, 37, 5, 7, true, conv1d_args(1, 15, 5)); }
/* Stride 3 with asymmetric padding: cuDNN pads 1 both sides, one explicit zero on the left. */
static Tensor *fw_c1_stride_asym(OpCase *c) {
  return conv1d_case(c, 2, 3, 41, 4, 4, true, (Conv1dArgs){3, 2, 1, 2, false, 1});
}
static Tensor *fw_c1_1x1(OpCase *c) { return conv1d_case(c, 2, 7, 23, 3, 1, false, conv1d_args(1, 0, 1)); }
/* StyleGAN-T DiscHead: K 9, circular padding 4. */
static Tensor *fw_c1_circ_k9(OpCase *c) {
  return conv1d_case(c, 2, 6, 27, 6, 9, true, (Conv1dArgs){1, 4, 4, 1, true, 1});
}
static Tensor *fw_c1_circ_asym(OpCase *c) {
  return conv1d_case(c, 2, 3, 20, 2, 3, false, (Conv1dArgs){2, 3, 1, 2, true, 1});
}
/* Padding longer than x: the wrap goes round more than once. */
static Tensor *fw_c1_circ_short(OpCase *c) {
  return conv1d_case(c, 2, 3, 3, 2, 9, true, (Conv1dArgs){1, 4, 4, 1, true, 1});
}

/* HiFi-GAN's multi-scale discriminator: kernel 41, stride 4, padding 20, groups 4 (and 16
 * input channels per group further in; here 2 to stay small). */
static Tensor *fw_c1_msd_groups(OpCase *c) {
  return conv1d_case(c, 2, 8, 61, 8, 41, true, (Conv1dArgs){4, 20, 20, 1, false, 4});
}
static Tensor *fw_c1_groups_circ(OpCase *c) {
  return conv1d_case(c, 2, 6, 19, 9, 3, false, (Conv1dArgs){2, 2, 1, 2, true, 3});
}

/* HiFi-GAN's upsampling stages (16 kHz MusicLDM vocoder): stride u, kernel K, padding (K − u)/2. */
static Tensor *fw_ct_hifi0(OpCase *c) { return transpose_case(c, 2, 4, 9, 3, 16, true, 5, 5, 0, 1); }
static Tensor *fw_ct_hifi1(OpCase *c) { return transpose_case(c, 2, 3, 11, 4, 16, true, 4, 6, 0, 1); }
static Tensor *fw_ct_hifi2(OpCase *c) { return transpose_case(c, 2, 5, 13, 3, 8, true, 2, 3, 0, 1); }
static Tensor *fw_ct_hifi3(OpCase *c) { return transpose_case(c, 2, 4, 21, 3, 4, true, 2, 1, 0, 1); }
static Tensor *fw_ct_opad_dil3(OpCase *c) { return transpose_case(c, 2, 3, 9, 2, 5, true, 3, 2, 1, 3); }
static Tensor *fw_ct_dil5_nobias(OpCase *c) { return transpose_case(c, 2, 2, 7, 3, 3, false, 1, 4, 0, 5); }

static const OpEntry CONV1D_OPS[] = {
    {"conv1d_k3_pad1", fw_c1_k3, GEMM_TOL, false},
    {"conv1d_dil3_same", fw_c1_dil3, GEMM_TOL, false},
    {"conv1d_k7_dil5_same", fw_c1_dil5_k7, GEMM_TOL, false},
    {"conv1d_stride3_asym", fw_c1_stride_asym, GEMM_TOL, false},
    {"conv1d_1x1_nobias", fw_c1_1x1, GEMM_TOL, false},
    {"conv1d_circular_k9", fw_c1_circ_k9, GEMM_TOL, true},
    {"conv1d_circular_asym", fw_c1_circ_asym, GEMM_TOL, false},
    {"conv1d_circular_wrap2", fw_c1_circ_short, GEMM_TOL, false},
    {"conv1d_msd_k41_s4_groups4", fw_c1_msd_groups, GEMM_TOL, true},
    {"conv1d_groups3_circular", fw_c1_groups_circ, GEMM_TOL, false},
    {"conv_transpose1d_u5_k16", fw_ct_hifi0, GEMM_TOL, true},
    {"conv_transpose1d_u4_k16", fw_ct_hifi1, GEMM_TOL, false},
    {"conv_transpose1d_u2_k8", fw_ct_hifi2, GEMM_TOL, false},
    {"conv_transpose1d_u2_k4", fw_ct_hifi3, GEMM_TOL, false},
    {"conv_transpose1d_opad_dil3", fw_ct_opad_dil3, GEMM_TOL, false},
    {"conv_transpose1d_dil5_nob", fw_ct_dil5_nobias, GEMM_TOL, false},
};
GPU_OPS_REGISTER(CONV1D_OPS)
