/* Evaluation: embeddings, Gaussian fits, Fréchet distances and the JSON report (evaluate.h). */
#include "data/evaluate.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/io.h"
#include "core/tensorfile.h"
#include "data/adherence.h"
#include "data/audio.h"
#include "data/mel.h"
#include "diffusion/bridge.h"
#include "models/audiomae.h"

/* LAPACK's symmetric eigen-solver, as OpenBLAS exports it (no lapacke.h on this system). The
 * trailing lengths are gfortran's hidden CHARACTER arguments. */
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                   double *work, const int *lwork, int *info, size_t jobz_len, size_t uplo_len);

/* ------------------------------------------------------------------ statistics */

int eval_gauss_fit(const float *x, int n, int d, double *mu, double *sigma, McmErr *err) {
  if (n < 2) return mcm_err(err, "%d embeddings: a covariance needs at least 2", n);
  for (int j = 0; j < d; j++) mu[j] = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < d; j++) mu[j] += x[(size_t)i * d + j];
  for (int j = 0; j < d; j++) mu[j] /= n;
  memset(sigma, 0, sizeof(double) * (size_t)d * d);
  double *c = MALLOC_CHECK(sizeof(double) * d);
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < d; j++) c[j] = x[(size_t)i * d + j] - mu[j];
    for (int j = 0; j < d; j++)
      for (int k = 0; k <= j; k++) sigma[(size_t)j * d + k] += c[j] * c[k];
  }
  free(c);
  for (int j = 0; j < d; j++)
    for (int k = 0; k <= j; k++) sigma[(size_t)k * d + j] = sigma[(size_t)j * d + k] /= (n - 1);
  return 0;
}

/* a (d, d) symmetric, overwritten by its eigenvectors (rows, since LAPACK is column-major and
 * a is symmetric); w (d) eigenvalues ascending. */
static int sym_eigen(double *a, int d, double *w, McmErr *err) {
  int lwork = -1, info = 0;
  double q;
  dsyev_("V", "U", &d, a, &d, w, &q, &lwork, &info, 1, 1);
  lwork = info == 0 ? (int)q : 3 * d;
  double *work = MALLOC_CHECK(sizeof(double) * (size_t)lwork);
  dsyev_("V", "U", &d, a, &d, w, work, &lwork, &info, 1, 1);
  free(work);
  if (info != 0) return mcm_err(err, "eigen-decomposition failed (LAPACK dsyev info %d)", info);
  return 0;
}

/* Trace of the square root of the symmetric PSD matrix a (d, d), destroyed. */
static int trace_sqrt_psd(double *a, int d, double *tr, McmErr *err) {
  double *w = MALLOC_CHECK(sizeof(double) * d);
  int rc = sym_eigen(a, d, w, err);
  *tr = 0;
  for (int i = 0; i < d && !rc; i++) *tr += sqrt(fmax(w[i], 0.0));
  free(w);
  return rc;
}

int eval_frechet(const double *mu1, const double *s1, const double *mu2, const double *s2, int d, double *fd,
                 McmErr *err) {
  size_t dd = (size_t)d * d;
  for (size_t i = 0; i < dd; i++)
    if (!isfinite(s1[i]) || !isfinite(s2[i])) return mcm_err(err, "covariance has a non-finite value");
  double diff = 0, tr = 0;
  for (int i = 0; i < d; i++) {
    if (!isfinite(mu1[i]) || !isfinite(mu2[i])) return mcm_err(err, "mean has a non-finite value");
    diff += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
    tr += s1[(size_t)i * d + i] + s2[(size_t)i * d + i];
  }
  /* R = Σ1^{1/2} = V diag(sqrt λ) Vᵀ. */
  double *v = MALLOC_CHECK(sizeof(double) * dd), *w = MALLOC_CHECK(sizeof(double) * d);
  double *r = MALLOC_CHECK(sizeof(double) * dd), *t = MALLOC_CHECK(sizeof(double) * dd);
  memcpy(v, s1, sizeof(double) * dd);
  int rc = sym_eigen(v, d, w, err); /* column k of V = v[k*d .. k*d+d) */
  if (!rc) {
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        double s = 0;
        for (int k = 0; k < d; k++) s += v[(size_t)k * d + i] * sqrt(fmax(w[k], 0.0)) * v[(size_t)k * d + j];
        r[(size_t)i * d + j] = s;
      }
    /* M = R Σ2 R, symmetrised against round-off. */
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        double s = 0;
        for (int k = 0; k < d; k++) s += r[(size_t)i * d + k] * s2[(size_t)k * d + j];
        t[(size_t)i * d + j] = s;
      }
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        double s = 0;
        for (int k = 0; k < d; k++) s += t[(size_t)i * d + k] * r[(size_t)k * d + j];
        v[(size_t)i * d + j] = s;
      }
    for (int i = 0; i < d; i++)
      for (int j = 0; j < i; j++)
        v[(size_t)i * d + j] = v[(size_t)j * d + i] = 0.5 * (v[(size_t)i * d + j] + v[(size_t)j * d + i]);
    double trs = 0;
    rc = trace_sqrt_psd(v, d, &trs, err);
    if (!rc) *fd = fmax(diff + tr - 2 * trs, 0.0);
  }
  free(v), free(w), free(r), free(t);
  return rc;
}

int eval_frechet_sets(const float *a, int na, const float *b, int nb, int d, double *fd, McmErr *err) {
  double *mu1 = MALLOC_CHECK(sizeof(double) * d), *mu2 = MALLOC_CHECK(sizeof(double) * d);
  double *s1 = MALLOC_CHECK(sizeof(double) * (size_t)d * d), *s2 = MALLOC_CHECK(sizeof(double) * (size_t)d * d);
  int rc = eval_gauss_fit(a, na, d, mu1, s1, err);
  if (!rc) rc = eval_gauss_fit(b, nb, d, mu2, s2, err);
  if (!rc) rc = eval_frechet(mu1, s1, mu2, s2, d, fd, err);
  free(mu1), free(mu2), free(s1), free(s2);
  return rc;
}

void eval_mel_embedding(const float *mel, int64_t T, int M, float *emb) {
  for (int m = 0; m < M; m++) {
    double s = 0, ss = 0;
    for (int64_t t = 0; t < T; t++) s += mel[t * M + m];
    double mean = s / (double)T;
    for (int64_t t = 0; t < T; t++) ss += (mel[t * M + m] - mean) * (mel[t * M + m] - mean);
    emb[m] = (float)mean;
    emb[M + m] = (float)sqrt(ss / (double)T);
  }
}

/* ------------------------------------------------------------------ AudioMAE features */

struct EvalMae {
  Ctx *ctx;
  ParamSet ps;
  AudioMAE *model;
  KaldiFbankConfig kc;
  float *bw, *bb;  /* bridge (F, 64), (F) on the host, or NULL: exact fbank */
  int batch, pending;
  float *inputs;   /* (batch, T, F) */
  float *out;      /* where the pending clips' embeddings go: (pending, C) slots */
  float **dest;    /* (batch) destination of each pending clip's embedding */
};

int eval_mae_dim(const EvalMae *m) { return m->model->cfg.embed_dim; }

/* Sizes from the weights' `config` attribute; absent keys keep ViT-B's values. */
static int mae_config_from_file(const char *path, AudioMAEConfig *c, McmErr *err) {
  *c = audiomae_config_vit_b();
  TensorFile *tf = tf_open(path, err);
  if (!tf) return -1;
  if (!tf_has_attr(tf, "config")) return tf_close(tf), 0;
  char *text = NULL;
  int rc = tf_get_attr(tf, "config", &text, err);
  tf_close(tf);
  if (rc) return -1;
  json_error_t je;
  json_t *root = json_loads(text, 0, &je);
  free(text);
  if (!json_is_object(root)) {
    json_decref(root);
    return mcm_err(err, "%s: config attribute is not a JSON object", path);
  }
  json_t *img = json_object_get(root, "img_size"), *v;
  if (json_is_array(img) && json_array_size(img) == 2) {
    c->img_t = (int)json_integer_value(json_array_get(img, 0));
    c->img_f = (int)json_integer_value(json_array_get(img, 1));
  } else if (json_is_integer(img)) {
    c->img_t = c->img_f = (int)json_integer_value(img);
  }
  if (json_is_integer(v = json_object_get(root, "patch_size"))) c->patch = (int)json_integer_value(v);
  if (json_is_integer(v = json_object_get(root, "in_chans"))) c->in_chans = (int)json_integer_value(v);
  if (json_is_integer(v = json_object_get(root, "embed_dim"))) c->embed_dim = (int)json_integer_value(v);
  if (json_is_integer(v = json_object_get(root, "depth"))) c->depth = (int)json_integer_value(v);
  if (json_is_integer(v = json_object_get(root, "num_heads"))) c->num_heads = (int)json_integer_value(v);
  if (json_is_number(v = json_object_get(root, "mlp_ratio"))) c->mlp_ratio = (float)json_number_value(v);
  if (json_is_number(v = json_object_get(root, "norm_eps"))) c->norm_eps = (float)json_number_value(v);
  json_decref(root);
  McmErr e;
  if (audiomae_config_check(c, &e)) return mcm_err(err, "%s: config attribute: %s", path, e.msg);
  if (c->in_chans != 1) return mcm_err(err, "%s: in_chans = %d, evaluation feeds one fbank channel", path, c->in_chans);
  return 0;
}

EvalMae *eval_mae_create(const char *weights, const char *bridge_path, const char *device, int batch, McmErr *err) {
  AudioMAEConfig cfg;
  if (mae_config_from_file(weights, &cfg, err)) return NULL;
  DeviceSpec spec;
  if (device_spec_parse(device ? device : "auto", &spec, err)) return NULL;
  EvalMae *m = CALLOC_CHECK(1, sizeof(EvalMae));
  m->ctx = ctx_create(&spec, 0, err);
  if (!m->ctx) return free(m), NULL;
  params_init(&m->ps, "");
  m->ps.trainable = false;
  m->model = audiomae_create(m->ctx, &cfg, &m->ps);
  if (audiomae_load(m->ctx, m->model, weights, err)) return eval_mae_destroy(m), NULL;
  m->kc = kaldi_fbank_config_audiomae();
  m->kc.n_mels = cfg.img_f;
  if (kaldi_fbank_check(&m->kc, err)) return eval_mae_destroy(m), NULL;
  if (bridge_path) {
    Bridge *br = bridge_create(m->ctx, mel_config_musicldm().n_mels, cfg.img_f);
    if (bridge_load(m->ctx, br, bridge_path, err)) return eval_mae_destroy(m), NULL;
    m->bw = MALLOC_CHECK(sizeof(float) * (size_t)br->f_in * br->f_out);
    m->bb = MALLOC_CHECK(sizeof(float) * (size_t)br->f_out);
    tensor_to_host_f32(m->ctx, br->w, m->bw);
    tensor_to_host_f32(m->ctx, br->b, m->bb);
  }
  m->batch = batch > 0 ? batch : 8;
  m->inputs = MALLOC_CHECK(sizeof(float) * (size_t)m->batch * cfg.img_t * cfg.img_f);
  m->dest = MALLOC_CHECK(sizeof(float *) * (size_t)m->batch);
  return m;
}

void eval_mae_destroy(EvalMae *m) {
  if (!m) return;
  params_free(&m->ps);
  if (m->ctx) ctx_destroy(m->ctx);
  free(m->bw), free(m->bb), free(m->inputs), free(m->dest);
  free(m);
}

/* Runs the pending clips through the encoder and writes each embedding to its destination. */
static void mae_flush(EvalMae *m) {
  if (m->pending == 0) return;
  const AudioMAEConfig *c = &m->model->cfg;
  const int B = m->pending, C = c->embed_dim, last = c->depth - 1;
  bool was = ctx_set_grad(m->ctx, false);
  Tensor *x = tensor_new(m->ctx, DT_F32, 4, (int64_t[]){B, 1, c->img_t, c->img_f});
  tensor_from_host_f32(m->ctx, x, m->inputs);
  Tensor *tap;
  audiomae_forward(m->ctx, m->model, x, &last, 1, &tap, NULL); /* (B, C, N) */
  const int64_t N = tap->shape[2];
  float *h = MALLOC_CHECK(sizeof(float) * (size_t)B * C * N);
  tensor_to_host_f32(m->ctx, tap, h);
  for (int b = 0; b < B; b++)
    for (int ch = 0; ch < C; ch++) {
      double s = 0;
      for (int64_t n = 0; n < N; n++) s += h[((size_t)b * C + ch) * N + n];
      m->dest[b][ch] = (float)(s / (double)N);
    }
  free(h);
  ctx_set_grad(m->ctx, was);
  ctx_step_reset(m->ctx);
  m->pending = 0;
}

/* Queues one clip (normalised wav and its MusicLDM mel); its embedding lands in dest by the
 * next flush. */
static void mae_queue(EvalMae *m, const float *wav, int64_t n, const float *mel, int64_t t_mel, int n_mels,
                      float *dest) {
  const AudioMAEConfig *c = &m->model->cfg;
  float *in = m->inputs + (size_t)m->pending * c->img_t * c->img_f;
  if (!m->bw) {
    audiomae_fbank_from_wav(&m->kc, wav, n, c->img_t, in);
  } else {
    /* The bridge gives the raw fbank of the frames the exact path would have; zero-pad or cut
     * to img_t, then AudioMAE's normalisation, as the exact path does. */
    int64_t t_fb = kaldi_fbank_frames(&m->kc, n);
    if (t_fb > c->img_t) t_fb = c->img_t;
    memset(in, 0, sizeof(float) * (size_t)c->img_t * c->img_f);
    if (t_fb > 0) bridge_apply_host(m->bw, m->bb, n_mels, c->img_f, mel, t_mel, t_fb, in);
    for (int64_t i = 0; i < (int64_t)c->img_t * c->img_f; i++)
      in[i] = (in[i] - AUDIOMAE_FBANK_MEAN) / (2 * AUDIOMAE_FBANK_STD);
  }
  m->dest[m->pending++] = dest;
  if (m->pending == m->batch) mae_flush(m);
}

/* ------------------------------------------------------------------ sets */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void add_skip(EvalSet *s, const char *file, const char *reason) {
  s->skipped = REALLOC_CHECK(s->skipped, sizeof(EvalSkip) * (size_t)(s->n_skipped + 1));
  s->skipped[s->n_skipped].file = strdup(file);
  s->skipped[s->n_skipped].reason = strdup(reason);
  MCM_CHECK(s->skipped[s->n_skipped].file && s->skipped[s->n_skipped].reason, "out of memory");
  s->n_skipped++;
}

/* Sorted regular files of dir (dot-files ignored), as full paths. */
static int list_dir(const char *dir, char ***paths, int *n, McmErr *err) {
  DIR *d = opendir(dir);
  if (!d) return mcm_err(err, "%s: cannot open folder: %s", dir, strerror(errno));
  *paths = NULL, *n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    size_t len = strlen(dir) + strlen(e->d_name) + 2;
    char *p = MALLOC_CHECK(len);
    snprintf(p, len, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
      free(p);
      continue;
    }
    *paths = REALLOC_CHECK(*paths, sizeof(char *) * (size_t)(*n + 1));
    (*paths)[(*n)++] = p;
  }
  closedir(d);
  if (*n > 1) qsort(*paths, (size_t)*n, sizeof(char *), cmp_str);
  return 0;
}

/* RMS and silent 100 ms windows of one file (raw samples). */
static void level_stats(const float *x, int64_t n, int rate, double *rms, int64_t *windows, int64_t *silent) {
  double ss = 0;
  for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
  *rms = sqrt(ss / (double)n);
  const int64_t W = rate / 10;
  *windows = *silent = 0;
  for (int64_t s = 0; s < n; s += W) {
    int64_t e = s + W < n ? s + W : n;
    double w = 0;
    for (int64_t i = s; i < e; i++) w += (double)x[i] * x[i];
    (*windows)++;
    if (sqrt(w / (double)(e - s)) < 1e-3) (*silent)++;
  }
}

int eval_set_load_with(const char *dir, const EvalLoadOptions *opt, EvalSet *set, McmErr *err) {
  const EvalLoadOptions none = {0};
  if (!opt) opt = &none;
  EvalMae *mae = opt->mae;
  memset(set, 0, sizeof(*set));
  char **paths = NULL;
  int n_paths = 0;
  if (list_dir(dir, &paths, &n_paths, err)) return -1;
  set->dir = strdup(dir);
  MCM_CHECK(set->dir, "out of memory");
  McmErr e;
  MelConfig mc = mel_config_musicldm();
  Mel *mel = mel_create(&mc, &e);
  MCM_CHECK(mel, "MusicLDM mel config: %s", e.msg);
  const int D = 2 * mc.n_mels;
  const size_t cap = (size_t)(n_paths ? n_paths : 1);
  set->mae_dim = mae ? eval_mae_dim(mae) : 0;
  set->files = MALLOC_CHECK(sizeof(char *) * cap);
  set->mel_emb = MALLOC_CHECK(sizeof(float) * cap * D);
  if (mae) set->mae_emb = MALLOC_CHECK(sizeof(float) * cap * set->mae_dim);
  if (opt->adherence) set->tempo = MALLOC_CHECK(sizeof(double) * cap), set->key = MALLOC_CHECK(sizeof(int) * cap);
  if (opt->keep_mels > 0) {
    set->mels = CALLOC_CHECK((size_t)opt->keep_mels, sizeof(float *));
    set->mel_frames = CALLOC_CHECK((size_t)opt->keep_mels, sizeof(int));
  }
  double rms_sum = 0;
  int64_t windows = 0, silent = 0;
  for (int i = 0; i < n_paths; i++) {
    Audio a;
    if (audio_read(paths[i], mc.rate, &a, &e)) {
      add_skip(set, paths[i], e.msg);
      continue;
    }
    if (mel_check_length(mel, a.n, &e)) {
      add_skip(set, paths[i], e.msg);
      audio_free(&a);
      continue;
    }
    double rms;
    int64_t w, s;
    level_stats(a.samples, a.n, mc.rate, &rms, &w, &s);
    rms_sum += rms, windows += w, silent += s;
    set->seconds += (double)a.n / mc.rate;
    audio_normalize(a.samples, a.n);
    int64_t T = mel_frames(mel, a.n);
    float *m = MALLOC_CHECK(sizeof(float) * (size_t)T * mc.n_mels);
    mel_compute(mel, a.samples, a.n, m);
    eval_mel_embedding(m, T, mc.n_mels, set->mel_emb + (size_t)set->n * D);
    if (mae) mae_queue(mae, a.samples, a.n, m, T, mc.n_mels, set->mae_emb + (size_t)set->n * set->mae_dim);
    if (opt->adherence) {
      set->tempo[set->n] = adh_tempo(a.samples, a.n, mc.rate);
      set->key[set->n] = adh_key(a.samples, a.n, mc.rate);
    }
    if (set->n < opt->keep_mels && T <= INT32_MAX) {
      set->mels[set->n_mels_kept] = m, set->mel_frames[set->n_mels_kept++] = (int)T;
      m = NULL;
    }
    free(m);
    audio_free(&a);
    set->files[set->n++] = paths[i];
    paths[i] = NULL;
  }
  if (mae) mae_flush(mae);
  mel_destroy(mel);
  for (int i = 0; i < n_paths; i++) free(paths[i]);
  free(paths);
  set->mean_rms = set->n ? rms_sum / set->n : 0;
  set->silence_fraction = windows ? (double)silent / (double)windows : 0;
  if (set->n < 2) {
    int n = set->n, sk = set->n_skipped;
    char first[600] = "";
    if (sk) mcm_snprintf(first, sizeof(first), "; first skipped: %s", set->skipped[0].reason);
    eval_set_free(set);
    return mcm_err(err, "%s: %d usable audio file%s of %d (%d skipped): the Fréchet distance needs at least 2%s",
                   dir, n, n == 1 ? "" : "s", n_paths, sk, first);
  }
  return 0;
}

int eval_set_load(const char *dir, EvalMae *mae, EvalSet *set, McmErr *err) {
  EvalLoadOptions o = {.mae = mae};
  return eval_set_load_with(dir, &o, set, err);
}

void eval_set_free(EvalSet *set) {
  for (int i = 0; i < set->n_skipped; i++) free(set->skipped[i].file), free(set->skipped[i].reason);
  for (int i = 0; i < set->n; i++) free(set->files[i]);
  for (int i = 0; i < set->n_mels_kept; i++) free(set->mels[i]);
  free(set->skipped), free(set->mel_emb), free(set->mae_emb), free(set->dir), free(set->files);
  free(set->tempo), free(set->key), free(set->mels), free(set->mel_frames);
  memset(set, 0, sizeof(*set));
}

/* ------------------------------------------------------------------ the report */

json_t *eval_set_json(const EvalSet *s) {
  json_t *skipped = json_array();
  for (int i = 0; i < s->n_skipped; i++)
    json_array_append_new(skipped, json_pack("{s:s, s:s}", "file", s->skipped[i].file, "reason", s->skipped[i].reason));
  return json_pack("{s:s, s:i, s:f, s:f, s:f, s:o}", "dir", s->dir, "files", s->n, "seconds", s->seconds, "mean_rms",
                   s->mean_rms, "silence_fraction", s->silence_fraction, "skipped", skipped);
}

char *eval_json_text(json_t *root) {
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
  json_decref(root);
  MCM_CHECK(text, "json_dumps failed");
  size_t len = strlen(text);
  text = REALLOC_CHECK(text, len + 2);
  text[len] = '\n', text[len + 1] = 0;
  return text;
}

int eval_run(const EvalOptions *opt, char **report, McmErr *err) {
  if (report) *report = NULL;
  if (!opt->generated || !opt->reference) return mcm_err(err, "both --generated and --reference folders are needed");
  if (opt->bridge && !opt->audiomae) return mcm_err(err, "--bridge %s needs --audiomae WEIGHTS", opt->bridge);
  EvalMae *mae = NULL;
  if (opt->audiomae && !(mae = eval_mae_create(opt->audiomae, opt->bridge, opt->device, opt->batch, err))) return -1;
  EvalSet gen, ref;
  if (eval_set_load(opt->generated, mae, &gen, err)) return eval_mae_destroy(mae), -1;
  if (eval_set_load(opt->reference, mae, &ref, err)) return eval_set_free(&gen), eval_mae_destroy(mae), -1;
  double fd_mel = 0, fd_mae = 0;
  int rc = eval_frechet_sets(gen.mel_emb, gen.n, ref.mel_emb, ref.n, 2 * mel_config_musicldm().n_mels, &fd_mel, err);
  if (!rc && mae) rc = eval_frechet_sets(gen.mae_emb, gen.n, ref.mae_emb, ref.n, gen.mae_dim, &fd_mae, err);
  if (!rc) {
    json_t *root = json_pack("{s:o, s:o, s:{s:i, s:s, s:f}}", "generated", eval_set_json(&gen), "reference",
                             eval_set_json(&ref),
                             "logmel", "dim", 2 * mel_config_musicldm().n_mels, "embedding",
                             "MusicLDM log-mel, per-bin mean and std over frames", "fd", fd_mel);
    if (mae)
      json_object_set_new(root, "audiomae",
                          json_pack("{s:s, s:s, s:s, s:i, s:f}", "weights", opt->audiomae, "input",
                                    opt->bridge ? opt->bridge : "exact Kaldi fbank", "embedding",
                                    "last block readout mean-pooled over tokens", "dim", gen.mae_dim, "fd", fd_mae));
    char *text = eval_json_text(root);
    size_t len = strlen(text);
    if (opt->out) rc = file_write_atomic(opt->out, text, len, err);
    else fputs(text, stdout);
    if (report && !rc) *report = text;
    else free(text);
  }
  eval_set_free(&gen), eval_set_free(&ref), eval_mae_destroy(mae);
  return rc;
}
