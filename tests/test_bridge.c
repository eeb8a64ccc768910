/* diffusion/bridge.c: the Kaldi fbank reference against torchaudio.compliance.kaldi.fbank
 * (tests/fixtures/adversarial.py, groups kaldi and mae), and the mel → fbank bridge: its closed-form
 * fit, its apply (host and tape, padding, cutting, the folded normalisation), its gradient
 * against finite differences, and its file.
 *
 * Tolerances. Kaldi fbank: relative L2 1e-5 — both sides compute the same float32 inputs;
 * torchaudio does the FFT in fp32, mcm a direct DFT in double, so the log energies agree to a
 * few fp32 ulps (≈1e-6 of their size). The fit recovers an exact affine map to 1e-4 (double
 * normal equations from fp32 data, condition number of the random design ≈ 10). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "diffusion/bridge.h"
#include "fixture.h"
#include "gradcheck.h"
#include "test.h"

#define FIX "tests/fixtures/adversarial.h5"

TEST(kaldi_fbank_matches_torchaudio) {
  Fixture *fx = fixture_open(FIX);
  Ctx *ctx = ctx_create_cpu(0);
  KaldiFbankConfig kc = kaldi_fbank_config_audiomae();
  double worst = 0;
  for (int i = 0; i < 3; i++) {
    char key[64];
    int64_t n, m;
    snprintf(key, sizeof key, "kaldi/k%d/wav", i);
    float *wav = fixture_values(fx, key, &n);
    snprintf(key, sizeof key, "kaldi/k%d/out", i);
    float *ref = fixture_values(fx, key, &m);
    int64_t T = kaldi_fbank_frames(&kc, n);
    ASSERT(T * 128 == m, "case %d: %lld frames, torchaudio %lld", i, (long long)T, (long long)(m / 128));
    Tensor *got = tensor_new_persistent(ctx, DT_F32, SHAPE(T, 128));
    kaldi_fbank_compute(&kc, wav, n, got->data);
    worst = fmax(worst, fixture_expect(ctx, fx, key, got, 1e-5));
    free(wav);
    free(ref);
  }
  int64_t n;
  float *wav = fixture_values(fx, "mae/wav", &n);
  Tensor *got = tensor_new_persistent(ctx, DT_F32, SHAPE(20, 128));
  audiomae_fbank_from_wav(&kc, wav, n, 20, got->data);
  double e_mae = fixture_expect(ctx, fx, "mae/out", got, 1e-5);
  printf("  rel L2: kaldi fbank max %.2g, AudioMAE front end (mean, pad, normalise) %.2g\n", worst, e_mae);
  free(wav);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(kaldi_fbank_frame_count_and_config_errors) {
  KaldiFbankConfig kc = kaldi_fbank_config_audiomae();
  EXPECT(kaldi_fbank_frames(&kc, 399) == 0, "399 samples");
  EXPECT(kaldi_fbank_frames(&kc, 400) == 1, "400 samples");
  EXPECT(kaldi_fbank_frames(&kc, 160000) == 998, "10 s gives 998 frames");
  EXPECT(kaldi_fbank_frames(&kc, 163840) == 1022, "10.24 s gives 1022 frames");
  McmErr err;
  KaldiFbankConfig bad = kc;
  bad.low_freq = 9000;
  EXPECT(kaldi_fbank_check(&bad, &err) == -1, "low_freq above Nyquist accepted");
  EXPECT_STR_CONTAINS(err.msg, "low_freq");
  bad = kc, bad.n_mels = 0;
  EXPECT(kaldi_fbank_check(&bad, &err) == -1, "0 bins accepted");
  /* Filters: the Nyquist bin unused. The lowest triangles are narrower than an FFT bin
   * (31.25 Hz) and some catch no bin at all, as in Kaldi: those bins read ln(FLT_EPSILON)
   * (the torchaudio fixture has them too). From bin 16 up every filter is non-empty. */
  int nfft, empty = 0;
  float *fb = kaldi_fbank_filters(&kc, &nfft);
  EXPECT(nfft == 512, "FFT size %d", nfft);
  for (int m = 0; m < 128; m++) {
    double s = 0;
    for (int k = 0; k < 257; k++) s += fb[m * 257 + k];
    empty += s == 0;
    EXPECT(s > 0 || m < 16, "filter %d empty", m);
    EXPECT(fb[m * 257 + 256] == 0, "filter %d uses the Nyquist bin", m);
  }
  printf("  %d of 128 Kaldi filters catch no FFT bin (all below bin 16)\n", empty);
  free(fb);
}

static uint64_t lcg(uint64_t *s) { return *s = *s * 6364136223846793005ULL + 1442695040888963407ULL; }
static float urand(uint64_t *s) { return (float)((lcg(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

TEST(bridge_fit_recovers_an_exact_affine_map) {
  enum { FI = 7, FO = 11, T = 50 };
  uint64_t s = 1;
  float w[FO * FI], b[FO], mel[T * FI], fb[T * FO], w2[FO * FI], b2[FO];
  for (int i = 0; i < FO * FI; i++) w[i] = urand(&s);
  for (int i = 0; i < FO; i++) b[i] = urand(&s) - 3;
  BridgeFit f;
  bridge_fit_init(&f, FI, FO);
  for (int clip = 0; clip < 3; clip++) {
    for (int i = 0; i < T * FI; i++) mel[i] = 2 * urand(&s) - 4;
    bridge_apply_host(w, b, FI, FO, mel, T, T - clip, fb); /* fewer fbank frames than mel ones */
    bridge_fit_add(&f, mel, T, fb, T - clip);
  }
  EXPECT(f.frames == 3 * T - 3, "%lld frames", (long long)f.frames);
  McmErr err;
  ASSERT(bridge_fit_solve(&f, 0.0, w2, b2, &err) == 0, "%s", err.msg);
  double e = 0;
  for (int i = 0; i < FO * FI; i++) e = fmax(e, fabs(w2[i] - w[i]));
  for (int i = 0; i < FO; i++) e = fmax(e, fabs(b2[i] - b[i]));
  EXPECT(e < 1e-4, "fit error %.3g", e);
  bridge_fit_free(&f);
  bridge_fit_init(&f, FI, FO);
  EXPECT(bridge_fit_solve(&f, 0.0, w2, b2, &err) == -1, "no frames accepted");
  EXPECT_STR_CONTAINS(err.msg, "no frames");
  bridge_fit_free(&f);
}

/* bridge_apply = the host map on shifted frames, normalised, padded with a normalised 0 or cut. */
TEST(bridge_apply_matches_host_map_pad_and_cut) {
  enum { B = 3, FI = 5, FO = 6, T = 7 };
  Ctx *ctx = ctx_create_cpu(0);
  uint64_t s = 7;
  float w[FO * FI], b[FO], mel[B * T * FI];
  for (int i = 0; i < FO * FI; i++) w[i] = urand(&s);
  for (int i = 0; i < FO; i++) b[i] = urand(&s);
  for (int i = 0; i < B * T * FI; i++) mel[i] = urand(&s) * 3;
  Bridge *br = bridge_create(ctx, FI, FO);
  bridge_set(ctx, br, w, b);
  Tensor *x = tensor_new(ctx, DT_F32, SHAPE(B, 1, T, FI));
  tensor_from_host_f32(ctx, x, mel);
  for (int out_t = T - 2; out_t <= T + 3; out_t += 5) {
    Tensor *y = bridge_apply(ctx, br, x, out_t);
    ASSERT(y->ndim == 4 && y->shape[2] == out_t && y->shape[3] == FO, "shape %s", TENSOR_SHAPE_STR(y));
    float got[B * (T + 3) * FO], ref[T * FO];
    tensor_to_host_f32(ctx, y, got);
    double e = 0;
    for (int bb = 0; bb < B; bb++) {
      bridge_apply_host(w, b, FI, FO, mel + bb * T * FI, T, T, ref);
      for (int t = 0; t < out_t; t++)
        for (int o = 0; o < FO; o++) {
          float raw = t < T ? ref[t * FO + o] : 0.0f;
          float want = (raw - AUDIOMAE_FBANK_MEAN) / (2 * AUDIOMAE_FBANK_STD);
          e = fmax(e, fabs(got[(bb * out_t + t) * FO + o] - want));
        }
    }
    EXPECT(e < 1e-5, "out_t %d: max error %.3g", out_t, e);
  }
  ctx_destroy(ctx);
}

typedef struct {
  Bridge *br;
  Tensor *r;
  int out_t;
} BridgeCase;

static Tensor *bridge_loss(Ctx *ctx, Tensor **leaves, void *user) {
  BridgeCase *c = user;
  return op_sum(ctx, op_mul(ctx, bridge_apply(ctx, c->br, leaves[0], c->out_t), c->r));
}

TEST(bridge_gradient_matches_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Bridge *br = bridge_create(ctx, 5, 9);
  float w[45], b[9];
  uint64_t s = 3;
  for (int i = 0; i < 45; i++) w[i] = urand(&s) * 4;
  for (int i = 0; i < 9; i++) b[i] = urand(&s);
  bridge_set(ctx, br, w, b);
  for (int out_t = 5; out_t <= 9; out_t += 4) { /* cut (7 -> 5) and pad (7 -> 9) */
    Tensor *x = tensor_new_persistent(ctx, DT_F32, SHAPE(3, 1, 7, 5));
    x->requires_grad = true;
    fill_uniform(ctx, x, 11, -2, 2);
    BridgeCase c = {br, tensor_new_persistent(ctx, DT_F32, SHAPE(3, 1, out_t, 9)), out_t};
    fill_uniform(ctx, c.r, 12, -1, 1);
    EXPECT(gradcheck(ctx, bridge_loss, &x, 1, &c, (GradcheckOpts){0}) == 0, "bridge gradient, out_t %d", out_t);
    EXPECT(!br->wn->grad && !br->w->grad, "the bridge's weights are frozen");
  }
  ctx_destroy(ctx);
}

TEST(bridge_file_round_trip_and_size_mismatch) {
  Ctx *ctx = ctx_create_cpu(0);
  char path[256];
  snprintf(path, sizeof path, "/tmp/mcm_test_bridge_%d.h5", (int)getpid());
  Bridge *br = bridge_create(ctx, 4, 6);
  float w[24], b[6], w2[24], b2[6];
  for (int i = 0; i < 24; i++) w[i] = 0.1f * i - 1;
  for (int i = 0; i < 6; i++) b[i] = -(float)i;
  bridge_set(ctx, br, w, b);
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(bridge_save(ctx, br, tf, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  Bridge *br2 = bridge_create(ctx, 4, 6);
  ASSERT(bridge_load(ctx, br2, path, &err) == 0, "%s", err.msg);
  tensor_to_host_f32(ctx, br2->w, w2);
  tensor_to_host_f32(ctx, br2->b, b2);
  EXPECT(!memcmp(w, w2, sizeof w) && !memcmp(b, b2, sizeof b), "bridge changed on the round trip");
  Bridge *other = bridge_create(ctx, 64, 128);
  EXPECT(bridge_load(ctx, other, path, &err) == -1, "a 4 -> 6 bridge loaded as 64 -> 128");
  EXPECT_STR_CONTAINS(err.msg, "fit_bridge");
  EXPECT(bridge_load(ctx, other, "/nonexistent/bridge.h5", &err) == -1, "missing file accepted");
  unlink(path);
  ctx_destroy(ctx);
}
