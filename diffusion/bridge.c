/* Kaldi fbank reference and the mel → fbank bridge (see bridge.h for the formulas and the
 * design). Shapes: B batch, T frames, F_in MusicLDM mel bins (64), F_out fbank bins (128). */
#include "diffusion/bridge.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- Kaldi fbank */

KaldiFbankConfig kaldi_fbank_config_audiomae(void) {
  return (KaldiFbankConfig){.rate = 16000, .frame_len = 400, .frame_shift = 160, .n_mels = 128, .low_freq = 20.0f,
                            .high_freq = 0.0f, .preemph = 0.97f};
}

int kaldi_fbank_check(const KaldiFbankConfig *c, McmErr *err) {
  float high = c->high_freq > 0 ? c->high_freq : c->rate * 0.5f + c->high_freq;
  if (c->rate <= 0 || c->frame_len < 2 || c->frame_shift <= 0 || c->n_mels <= 0)
    return mcm_err(err, "kaldi fbank: rate %d, frame_len %d, frame_shift %d, n_mels %d must be positive (len >= 2)",
                   c->rate, c->frame_len, c->frame_shift, c->n_mels);
  if (!(c->low_freq >= 0 && c->low_freq < high && high <= c->rate * 0.5f))
    return mcm_err(err, "kaldi fbank: need 0 <= low_freq (%g) < high_freq (%g) <= rate/2 (%g)", c->low_freq, high,
                   c->rate * 0.5);
  if (!(c->preemph >= 0 && c->preemph <= 1)) return mcm_err(err, "kaldi fbank: preemph %g not in [0, 1]", c->preemph);
  return 0;
}

int64_t kaldi_fbank_frames(const KaldiFbankConfig *c, int64_t n) {
  return n < c->frame_len ? 0 : 1 + (n - c->frame_len) / c->frame_shift;
}

static int next_pow2(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

static double htk_mel(double f) { return 1127.0 * log(1.0 + f / 700.0); }

float *kaldi_fbank_filters(const KaldiFbankConfig *c, int *n_fft) {
  McmErr err;
  if (kaldi_fbank_check(c, &err)) MCM_FATAL("%s", err.msg);
  int nfft = next_pow2(c->frame_len), K = nfft / 2 + 1;
  double high = c->high_freq > 0 ? c->high_freq : c->rate * 0.5 + c->high_freq;
  double mlo = htk_mel(c->low_freq), mhi = htk_mel(high), delta = (mhi - mlo) / (c->n_mels + 1);
  float *fb = calloc((size_t)c->n_mels * K, sizeof(float));
  MCM_CHECK(fb, "kaldi fbank: out of memory");
  for (int m = 0; m < c->n_mels; m++) {
    double left = mlo + m * delta, centre = left + delta, right = centre + delta;
    for (int k = 0; k < K - 1; k++) { /* the Nyquist bin keeps weight 0, as in Kaldi */
      double mel = htk_mel((double)c->rate / nfft * k);
      double up = (mel - left) / (centre - left), down = (right - mel) / (right - centre);
      double w = fmin(up, down);
      fb[(size_t)m * K + k] = w > 0 ? (float)w : 0.0f;
    }
  }
  *n_fft = nfft;
  return fb;
}

void kaldi_fbank_compute(const KaldiFbankConfig *c, const float *wav, int64_t n, float *out) {
  int nfft, L = c->frame_len;
  float *fb = kaldi_fbank_filters(c, &nfft);
  int K = nfft / 2 + 1;
  int64_t T = kaldi_fbank_frames(c, n);
  /* A direct DFT of the L non-zero samples (the rest of the nfft-point frame is zero padding)
   * in double: exact enough to be the oracle, and fast enough for fitting (≈ 0.1 s a clip). */
  double *cs = malloc(sizeof(double) * (size_t)K * L * 2), *win = malloc(sizeof(double) * L);
  MCM_CHECK(cs && win, "kaldi fbank: out of memory");
  for (int k = 0; k < K; k++)
    for (int i = 0; i < L; i++) {
      int64_t ph = ((int64_t)k * i) % nfft; /* reduce the phase exactly before the trig */
      cs[((size_t)k * L + i) * 2] = cos(2.0 * M_PI * ph / nfft);
      cs[((size_t)k * L + i) * 2 + 1] = sin(2.0 * M_PI * ph / nfft);
    }
  for (int i = 0; i < L; i++) win[i] = 0.5 - 0.5 * cos(2.0 * M_PI * i / (L - 1));
#pragma omp parallel
  {
    double *x = malloc(sizeof(double) * L), *pw = malloc(sizeof(double) * K);
    MCM_CHECK(x && pw, "kaldi fbank: out of memory");
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
      const float *s = wav + t * c->frame_shift;
      double mean = 0;
      for (int i = 0; i < L; i++) mean += s[i];
      mean /= L;
      double prev = s[0] - mean; /* pre-emphasis sees x[−1] = x[0] */
      for (int i = 0; i < L; i++) {
        double v = s[i] - mean;
        x[i] = (v - c->preemph * prev) * win[i];
        prev = v;
      }
      for (int k = 0; k < K; k++) {
        const double *e = cs + (size_t)k * L * 2;
        double re = 0, im = 0;
        for (int i = 0; i < L; i++) re += x[i] * e[2 * i], im -= x[i] * e[2 * i + 1];
        pw[k] = re * re + im * im;
      }
      for (int m = 0; m < c->n_mels; m++) {
        const float *f = fb + (size_t)m * K;
        double e = 0;
        for (int k = 0; k < K; k++) e += f[k] * pw[k];
        out[t * c->n_mels + m] = (float)log(fmax(e, FLT_EPSILON));
      }
    }
    free(x);
    free(pw);
  }
  free(cs);
  free(win);
  free(fb);
}

void audiomae_fbank_from_wav(const KaldiFbankConfig *c, const float *wav, int64_t n, int out_frames, float *out) {
  double mean = 0;
  for (int64_t i = 0; i < n; i++) mean += wav[i];
  mean = n ? mean / n : 0;
  float *w = malloc(sizeof(float) * (size_t)(n ? n : 1));
  MCM_CHECK(w, "audiomae fbank: out of memory");
  for (int64_t i = 0; i < n; i++) w[i] = (float)(wav[i] - mean);
  int64_t T = kaldi_fbank_frames(c, n), F = c->n_mels;
  float *fb = malloc(sizeof(float) * (size_t)(T ? T : 1) * F);
  MCM_CHECK(fb, "audiomae fbank: out of memory");
  kaldi_fbank_compute(c, w, n, fb);
  for (int64_t t = 0; t < out_frames; t++)
    for (int64_t m = 0; m < F; m++) {
      float v = t < T ? fb[t * F + m] : 0.0f; /* ZeroPad2d pads the raw fbank */
      out[t * F + m] = (v - AUDIOMAE_FBANK_MEAN) / (2.0f * AUDIOMAE_FBANK_STD);
    }
  free(fb);
  free(w);
}

/* ---------------------------------------------------------------- the bridge */

Bridge *bridge_create(Ctx *ctx, int f_in, int f_out) {
  MCM_CHECK(f_in > 0 && f_out > 0, "bridge_create: sizes %d -> %d must be positive", f_in, f_out);
  Bridge *br = ctx_alloc_persistent_host(ctx, sizeof(Bridge));
  br->f_in = f_in, br->f_out = f_out;
  br->w = param_new(ctx, "bridge.weight", DT_F32, SHAPE(f_out, f_in), false);
  br->b = param_new(ctx, "bridge.bias", DT_F32, SHAPE(f_out), false);
  br->wn = param_new(ctx, "bridge.weight_normalised", DT_F32, SHAPE(f_out, f_in), false);
  br->bn = param_new(ctx, "bridge.bias_normalised", DT_F32, SHAPE(f_out), false);
  return br;
}

void bridge_set(Ctx *ctx, Bridge *br, const float *w, const float *b) {
  size_t nw = (size_t)br->f_out * br->f_in;
  float *wn = malloc(sizeof(float) * nw), *bn = malloc(sizeof(float) * br->f_out);
  MCM_CHECK(wn && bn, "bridge_set: out of memory");
  const float s = 1.0f / (2.0f * AUDIOMAE_FBANK_STD);
  for (size_t i = 0; i < nw; i++) wn[i] = w[i] * s;
  for (int o = 0; o < br->f_out; o++) bn[o] = (b[o] - AUDIOMAE_FBANK_MEAN) * s;
  tensor_from_host_f32(ctx, br->w, w);
  tensor_from_host_f32(ctx, br->b, b);
  tensor_from_host_f32(ctx, br->wn, wn);
  tensor_from_host_f32(ctx, br->bn, bn);
  free(wn);
  free(bn);
}

int bridge_load(Ctx *ctx, Bridge *br, const char *path, McmErr *err) {
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  int ndim;
  int64_t shape[MCM_MAX_DIMS];
  DType st;
  int rc = -1;
  float *w = NULL, *b = NULL;
  if (tf_info(tf, "bridge.weight", &ndim, shape, &st, err)) goto out;
  if (ndim != 2 || shape[0] != br->f_out || shape[1] != br->f_in) {
    mcm_err(err, "%s: bridge.weight is %s, the model needs (%d, %d) (fbank bins, mel bins): fit a bridge for "
                 "these sizes with tools/fit_bridge",
            path, ndim == 2 ? "2-D of other sizes" : "not 2-D", br->f_out, br->f_in);
    goto out;
  }
  w = malloc(sizeof(float) * (size_t)br->f_out * br->f_in), b = malloc(sizeof(float) * br->f_out);
  MCM_CHECK(w && b, "bridge_load: out of memory");
  if (tf_read(tf, "bridge.weight", SHAPE(br->f_out, br->f_in), w, err)) goto out;
  if (tf_read(tf, "bridge.bias", SHAPE(br->f_out), b, err)) goto out;
  bridge_set(ctx, br, w, b);
  rc = 0;
out:
  free(w);
  free(b);
  tf_close(tf);
  return rc;
}

int bridge_save(Ctx *ctx, const Bridge *br, TensorFile *tf, McmErr *err) {
  if (tf_write_tensor(ctx, tf, br->w, DT_F32, err) || tf_write_tensor(ctx, tf, br->b, DT_F32, err)) return -1;
  return tf_set_attr(tf, "bridge", "log-affine-v1", err);
}

Tensor *bridge_apply(Ctx *ctx, const Bridge *br, Tensor *mel, int out_t) {
  MCM_CHECK(mel->ndim == 4 && mel->shape[1] == 1 && mel->shape[3] == br->f_in,
            "bridge_apply: mel is %s, want (B, 1, T, %d)", TENSOR_SHAPE_STR(mel), br->f_in);
  MCM_CHECK(out_t > 0, "bridge_apply: out_t %d must be positive", out_t);
  int64_t B = mel->shape[0], T = mel->shape[2];
  Tensor *x = mel;
  if (T > 1) { /* frame t takes mel frame min(t + 1, T − 1) */
    Tensor *parts[2] = {op_slice(ctx, mel, 2, 1, T - 1), op_slice(ctx, mel, 2, T - 1, 1)};
    x = op_concat(ctx, parts, 2, 2);
  }
  Tensor *y = op_linear(ctx, x, br->wn, br->bn); /* (B, 1, T, F_out) normalised */
  if (out_t < T) return op_slice(ctx, y, 2, 0, out_t);
  if (out_t == T) return y;
  Tensor *pad = tensor_new(ctx, y->dtype, SHAPE(B, 1, out_t - T, br->f_out));
  tensor_fill(ctx, pad, -AUDIOMAE_FBANK_MEAN / (2.0f * AUDIOMAE_FBANK_STD)); /* a raw 0, normalised */
  Tensor *parts[2] = {y, pad};
  return op_concat(ctx, parts, 2, 2);
}

void bridge_apply_host(const float *w, const float *b, int f_in, int f_out, const float *mel, int64_t t_mel,
                       int64_t t_fb, float *out) {
  for (int64_t t = 0; t < t_fb; t++) {
    const float *x = mel + (t + 1 < t_mel ? t + 1 : t_mel - 1) * f_in;
    for (int o = 0; o < f_out; o++) {
      double s = b[o];
      for (int i = 0; i < f_in; i++) s += (double)w[(size_t)o * f_in + i] * x[i];
      out[t * f_out + o] = (float)s;
    }
  }
}

/* ---------------------------------------------------------------- fitting */

void bridge_fit_init(BridgeFit *f, int f_in, int f_out) {
  int D = f_in + 1;
  f->f_in = f_in, f->f_out = f_out, f->yy = 0, f->frames = 0;
  f->xtx = calloc((size_t)D * D, sizeof(double));
  f->xty = calloc((size_t)D * f_out, sizeof(double));
  MCM_CHECK(f->xtx && f->xty, "bridge_fit_init: out of memory");
}

void bridge_fit_free(BridgeFit *f) {
  free(f->xtx);
  free(f->xty);
  f->xtx = f->xty = NULL;
}

void bridge_fit_add(BridgeFit *f, const float *mel, int64_t t_mel, const float *fbank, int64_t t_fb) {
  int D = f->f_in + 1, Fo = f->f_out;
  double *x = malloc(sizeof(double) * D);
  MCM_CHECK(x, "bridge_fit_add: out of memory");
  for (int64_t t = 0; t < t_fb && t_mel > 0; t++) {
    const float *m = mel + (t + 1 < t_mel ? t + 1 : t_mel - 1) * f->f_in;
    const float *y = fbank + t * Fo;
    for (int i = 0; i < f->f_in; i++) x[i] = m[i];
    x[f->f_in] = 1.0; /* the bias column */
    for (int i = 0; i < D; i++) {
      for (int j = 0; j <= i; j++) f->xtx[(size_t)i * D + j] += x[i] * x[j];
      for (int o = 0; o < Fo; o++) f->xty[(size_t)i * Fo + o] += x[i] * y[o];
    }
    for (int o = 0; o < Fo; o++) f->yy += (double)y[o] * y[o];
    f->frames++;
  }
  free(x);
}

int bridge_fit_solve(const BridgeFit *f, double ridge, float *w, float *b, McmErr *err) {
  int D = f->f_in + 1, Fo = f->f_out;
  if (f->frames == 0) return mcm_err(err, "bridge fit: no frames (no audio long enough for one fbank frame)");
  double *a = malloc(sizeof(double) * D * D), *z = malloc(sizeof(double) * D * Fo);
  MCM_CHECK(a && z, "bridge_fit_solve: out of memory");
  for (int i = 0; i < D; i++)
    for (int j = 0; j <= i; j++) a[i * D + j] = a[j * D + i] = f->xtx[(size_t)i * D + j];
  for (int i = 0; i < f->f_in; i++) a[i * D + i] += ridge * (double)f->frames;
  /* Cholesky a = L Lᵀ in place (lower triangle). */
  for (int j = 0; j < D; j++) {
    double s = a[j * D + j];
    for (int k = 0; k < j; k++) s -= a[j * D + k] * a[j * D + k];
    if (!(s > 1e-12 * (a[j * D + j] + 1e-300))) {
      free(a), free(z);
      return mcm_err(err, "bridge fit: the normal equations are singular (column %d); add audio or raise the ridge",
                     j);
    }
    a[j * D + j] = sqrt(s);
    for (int i = j + 1; i < D; i++) {
      double t = a[i * D + j];
      for (int k = 0; k < j; k++) t -= a[i * D + k] * a[j * D + k];
      a[i * D + j] = t / a[j * D + j];
    }
  }
  memcpy(z, f->xty, sizeof(double) * D * Fo);
  for (int o = 0; o < Fo; o++) {
    for (int i = 0; i < D; i++) { /* L y = r */
      double t = z[i * Fo + o];
      for (int k = 0; k < i; k++) t -= a[i * D + k] * z[k * Fo + o];
      z[i * Fo + o] = t / a[i * D + i];
    }
    for (int i = D - 1; i >= 0; i--) { /* Lᵀ x = y */
      double t = z[i * Fo + o];
      for (int k = i + 1; k < D; k++) t -= a[k * D + i] * z[k * Fo + o];
      z[i * Fo + o] = t / a[i * D + i];
    }
  }
  for (int o = 0; o < Fo; o++) {
    for (int i = 0; i < f->f_in; i++) w[(size_t)o * f->f_in + i] = (float)z[i * Fo + o];
    b[o] = (float)z[f->f_in * Fo + o];
  }
  free(a);
  free(z);
  return 0;
}
