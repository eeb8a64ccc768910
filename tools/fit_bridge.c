/* fit_bridge: fits the mel → fbank bridge (diffusion/bridge.h) on real audio and reports its
 * error against the exact path on held-out clips.
 *
 *   build/cpu/tools/fit_bridge --out checkpoints/bridge.h5 data/demo/audio/clip_0*.wav
 *
 * Per file: read at 16 kHz (mono), MusicLDM's waveform normalisation, cut into clips of
 * --seconds; per clip MusicLDM's 64-bin log-mel (data/mel.h) and AudioMAE's Kaldi fbank
 * (clip mean removed, 128 bins; bridge.c). Every --holdout-th clip (default every 5th) is
 * held out; the rest give the normal equations of the per-frame affine map, solved with a
 * small ridge. Reported (and stored as attributes of the output file): the frames used, the
 * RMS error of the fit on the training clips and on the held-out ones in log-fbank units
 * (natural log energy) and in AudioMAE's normalised units (÷ 2·4.569), and the spread of the
 * target (RMS of the fbank about its per-bin mean) for scale. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/audio.h"
#include "data/mel.h"
#include "diffusion/bridge.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: fit_bridge --out PATH [options] AUDIO...\n\n"
          "Fits the 64-bin MusicLDM log-mel -> 128-bin AudioMAE Kaldi fbank bridge on the audio files\n"
          "and writes it as a tensor file (bridge.weight, bridge.bias).\n\n"
          "options:\n"
          "  --out PATH      output tensor file (required)\n"
          "  --seconds S     clip length (default 10.24)\n"
          "  --holdout N     hold out every N-th clip for the error report (default 5; 0: none)\n"
          "  --ridge R       ridge on the weights, per frame (default 1e-6)\n"
          "  --help          this text\n");
}

typedef struct {
  double se, n;       /* squared error, count */
  double sy, syy;     /* target moments for the spread */
} Err;

static void clip_features(Mel *mel, const KaldiFbankConfig *kc, const float *x, int64_t n, float **m, int64_t *tm,
                          float **f, int64_t *tf) {
  *tm = mel_frames(mel, n);
  *m = malloc(sizeof(float) * (size_t)(*tm * mel_get_config(mel)->n_mels));
  mel_compute(mel, x, n, *m);
  double mean = 0;
  for (int64_t i = 0; i < n; i++) mean += x[i];
  mean /= (double)n;
  float *y = malloc(sizeof(float) * (size_t)n);
  for (int64_t i = 0; i < n; i++) y[i] = (float)(x[i] - mean);
  *tf = kaldi_fbank_frames(kc, n);
  *f = malloc(sizeof(float) * (size_t)(*tf * kc->n_mels));
  kaldi_fbank_compute(kc, y, n, *f);
  free(y);
}

int main(int argc, char **argv) {
  const char *out = NULL;
  double seconds = 10.24, ridge = 1e-6;
  int holdout = 5, first_file = argc;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help")) return usage(stdout), 0;
    if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--holdout") && i + 1 < argc) holdout = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ridge") && i + 1 < argc) ridge = atof(argv[++i]);
    else if (argv[i][0] == '-') return fprintf(stderr, "fit_bridge: unknown option %s\n", argv[i]), usage(stderr), 2;
    else {
      first_file = i;
      break;
    }
  }
  if (!out || first_file >= argc || !(seconds > 0.03) || holdout < 0 || !(ridge >= 0)) {
    fprintf(stderr, "fit_bridge: need --out, at least one audio file, --seconds > 0.03, --holdout >= 0, --ridge >= 0\n");
    usage(stderr);
    return 2;
  }
  McmErr err;
  MelConfig mc = mel_config_musicldm();
  Mel *mel = mel_create(&mc, &err);
  if (!mel) return fprintf(stderr, "fit_bridge: %s\n", err.msg), 1;
  KaldiFbankConfig kc = kaldi_fbank_config_audiomae();
  const int FI = mc.n_mels, FO = kc.n_mels;
  const int64_t clip = (int64_t)llround(seconds * mc.rate);

  /* Pass 1: fit on the training clips; keep the held-out clips' features for pass 2. */
  BridgeFit fit;
  bridge_fit_init(&fit, FI, FO);
  int n_clips = 0, n_held = 0, n_files = 0;
  float **hm = NULL, **hf = NULL;
  int64_t *htm = NULL, *htf = NULL;
  for (int a = first_file; a < argc; a++) {
    Audio au;
    if (audio_read(argv[a], mc.rate, &au, &err)) {
      fprintf(stderr, "fit_bridge: skipping %s\n", err.msg);
      continue;
    }
    n_files++;
    audio_normalize(au.samples, au.n);
    for (int64_t s = 0; s + clip <= au.n || (s == 0 && au.n > mc.n_fft); s += clip) {
      int64_t n = s + clip <= au.n ? clip : au.n;
      if (audio_is_silent(au.samples + s, n, 1e-4f)) continue;
      float *m, *f;
      int64_t tm, tf;
      clip_features(mel, &kc, au.samples + s, n, &m, &tm, &f, &tf);
      if (holdout > 0 && n_clips % holdout == holdout - 1) {
        hm = realloc(hm, sizeof(float *) * (n_held + 1)), hf = realloc(hf, sizeof(float *) * (n_held + 1));
        htm = realloc(htm, sizeof(int64_t) * (n_held + 1)), htf = realloc(htf, sizeof(int64_t) * (n_held + 1));
        hm[n_held] = m, hf[n_held] = f, htm[n_held] = tm, htf[n_held] = tf, n_held++;
      } else {
        bridge_fit_add(&fit, m, tm, f, tf);
        free(m), free(f);
      }
      n_clips++;
      if (n < clip) break;
    }
    audio_free(&au);
  }
  float *w = malloc(sizeof(float) * FI * FO), *b = malloc(sizeof(float) * FO);
  if (bridge_fit_solve(&fit, ridge, w, b, &err)) return fprintf(stderr, "fit_bridge: %s\n", err.msg), 1;

  /* Training residual from the normal equations is not kept: recompute it on the held-out set
   * and report the training RMS from the fit's own quadratic form. */
  double sse = fit.yy;
  {
    int D = FI + 1;
    double *z = malloc(sizeof(double) * D);
    for (int o = 0; o < FO; o++) {
      for (int i = 0; i < FI; i++) z[i] = w[o * FI + i];
      z[FI] = b[o];
      double q = 0, lin = 0;
      for (int i = 0; i < D; i++) {
        lin += z[i] * fit.xty[(size_t)i * FO + o];
        for (int j = 0; j < D; j++) {
          double xij = i >= j ? fit.xtx[(size_t)i * D + j] : fit.xtx[(size_t)j * D + i];
          q += z[i] * xij * z[j];
        }
      }
      sse += q - 2 * lin;
    }
    free(z);
  }
  double train_rms = sqrt(fmax(sse, 0) / ((double)fit.frames * FO));
  Err h = {0};
  for (int i = 0; i < n_held; i++) {
    float *pred = malloc(sizeof(float) * (size_t)(htf[i] * FO));
    bridge_apply_host(w, b, FI, FO, hm[i], htm[i], htf[i], pred);
    for (int64_t k = 0; k < htf[i] * FO; k++) {
      double d = pred[k] - hf[i][k];
      h.se += d * d, h.n += 1, h.sy += hf[i][k], h.syy += (double)hf[i][k] * hf[i][k];
    }
    free(pred), free(hm[i]), free(hf[i]);
  }
  double held_rms = h.n ? sqrt(h.se / h.n) : NAN;
  double spread = h.n ? sqrt(fmax(h.syy / h.n - (h.sy / h.n) * (h.sy / h.n), 0)) : NAN;
  const double norm = 2.0 * AUDIOMAE_FBANK_STD;
  printf("fit_bridge: %d files, %d clips of %.2f s (%d held out), %lld training frames\n", n_files, n_clips, seconds,
         n_held, (long long)fit.frames);
  printf("  RMS error, log-fbank units: train %.4f, held-out %.4f (target spread %.4f)\n", train_rms, held_rms, spread);
  printf("  RMS error, AudioMAE normalised units: train %.4f, held-out %.4f\n", train_rms / norm, held_rms / norm);

  Ctx *ctx = ctx_create_cpu(0);
  Bridge *br = bridge_create(ctx, FI, FO);
  bridge_set(ctx, br, w, b);
  TensorFile *tf = tf_create(out, &err);
  char v[64];
  int rc = tf ? 0 : -1;
  if (!rc) rc = bridge_save(ctx, br, tf, &err);
  snprintf(v, sizeof v, "%lld", (long long)fit.frames);
  if (!rc) rc = tf_set_attr(tf, "fit_frames", v, &err);
  snprintf(v, sizeof v, "%.6f", train_rms);
  if (!rc) rc = tf_set_attr(tf, "fit_rms", v, &err);
  snprintf(v, sizeof v, "%.6f", held_rms);
  if (!rc) rc = tf_set_attr(tf, "heldout_rms", v, &err);
  snprintf(v, sizeof v, "%.6f", spread);
  if (!rc) rc = tf_set_attr(tf, "heldout_spread", v, &err);
  if (!rc) rc = tf_commit(tf, &err);
  else tf_abort(tf);
  if (rc) fprintf(stderr, "fit_bridge: %s\n", err.msg);
  else printf("  wrote %s\n", out);
  ctx_destroy(ctx);
  bridge_fit_free(&fit);
  free(w), free(b), free(hm), free(hf), free(htm), free(htf);
  mel_destroy(mel);
  return rc ? 1 : 0;
}
