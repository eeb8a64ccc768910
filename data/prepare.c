/* ./prepare's work (see prepare.h): a pool of worker threads turns files into mel segments,
 * the calling thread writes them to shards in manifest order.
 *
 * Ordering: workers take the next manifest entry i from a shared counter and leave its
 * outcome in slot i % ahead of a ring; the writer waits for entries 0, 1, 2 ... in turn. A
 * worker takes entry i only once i < next_write + ahead, so its slot has been consumed; this
 * also bounds the memory held in finished results that wait for an earlier one. Since each result
 * depends only on its file and the output is written in index order, the shards have the
 * same bytes whatever the number of threads.
 *
 * Encoding (latents, text embeddings) runs afterwards on the calling thread, one shard at a
 * time: read its rows back, encode them in batches, then rewrite the shard in one rename.
 */
#include "data/prepare.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


#include "core/io.h"
#include "core/tensorfile.h"
#include "data/audio.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "kernels/tape.h"
#include "models/clap_text.h"
#include "models/vae.h"
#include "models/weights.h"

/* ---------------------------------------------------------------- options */

void prepare_options_from_config(const Config *cfg, PrepareOptions *o) {
  memset(o, 0, sizeof *o);
  o->mel = (MelConfig){.rate = (int)cfg->mel.rate,
                       .n_fft = (int)cfg->mel.n_fft,
                       .hop = (int)cfg->mel.hop,
                       .win = (int)cfg->mel.win,
                       .n_mels = (int)cfg->mel.n_mels,
                       .fmin = (float)cfg->mel.fmin,
                       .fmax = (float)cfg->mel.fmax,
                       .log_floor = (float)cfg->mel.log_floor};
  o->segment_frames = (int)cfg->prepare.segment_frames;
  o->crop = strcmp(cfg->prepare.crop, "first") ? PREPARE_CROP_SEGMENTS : PREPARE_CROP_FIRST;
  o->hop_frames = (int)cfg->prepare.hop_frames;
  o->min_fraction = cfg->prepare.min_fraction;
  o->min_seconds = cfg->prepare.min_seconds;
  o->silence_threshold = (float)cfg->prepare.silence_threshold;
  o->shard_size = (int)cfg->prepare.shard_size;
  o->threads = (int)cfg->prepare.threads;
  o->keep_audio = cfg->prepare.keep_audio;
  if (o->threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = n > 0 ? (int)n : 1;
  }
}

static int64_t window_samples(const PrepareOptions *o) { return (int64_t)o->segment_frames * o->mel.hop; }

int64_t prepare_windows(const PrepareOptions *o, int64_t n, int64_t *starts, int64_t *lens, int64_t max) {
  const int64_t W = window_samples(o), H = (int64_t)o->hop_frames * o->mel.hop;
  int64_t count = 0;
#define EMIT(s, l)                                    \
  do {                                                \
    if (count < max && starts) starts[count] = (s);  \
    if (count < max && lens) lens[count] = (l);      \
    count++;                                          \
  } while (0)
  if (n <= 0) return 0;
  if (o->crop == PREPARE_CROP_FIRST) {
    EMIT(0, n < W ? n : W);
    return count;
  }
  int64_t s = 0, covered = 0;
  for (; s + W <= n; s += H) {
    EMIT(s, W);
    covered = s + W;
  }
  if (covered < n && s < n && (double)(n - s) >= o->min_fraction * (double)W) EMIT(s, n - s);
#undef EMIT
  return count;
}

/* ---------------------------------------------------------------- small helpers */

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The reason kind of an audio_read message ("audio '<path>': <what> ..."). */
static const char *audio_reason(const char *msg) {
  const char *p = strstr(msg, "': ");
  p = p ? p + 3 : msg;
  if (!strncmp(p, "zero-length", 11)) return "zero-length";
  if (!strncmp(p, "truncated", 9)) return "truncated";
  if (!strncmp(p, "not an audio file", 17) || !strncmp(p, "invalid header", 14)) return "not audio";
  if (!strncmp(p, "sample ", 7) && (strstr(p, "NaN") || strstr(p, "Inf") || strstr(p, "inf"))) return "NaN or Inf";
  return "unreadable";
}

/* Writes s with tabs and line breaks shown as escapes, so a TSV row stays one line. */
static void tsv_field(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '\t') fputs("\\t", f);
    else if (*s == '\n') fputs("\\n", f);
    else if (*s == '\r') fputs("\\r", f);
    else if (*s == '\\') fputs("\\\\", f);
    else fputc(*s, f);
  }
}

static void count_reason(PrepareStats *st, const char *kind) {
  for (int i = 0; i < st->n_reasons; i++)
    if (!strcmp(st->reason[i], kind)) {
      st->reason_count[i]++;
      return;
    }
  if (st->n_reasons < PREPARE_MAX_REASONS) {
    mcm_snprintf(st->reason[st->n_reasons], sizeof st->reason[0], "%s", kind);
    st->reason_count[st->n_reasons++] = 1;
  }
}

/* mkdir -p */
static int make_dirs(const char *path, McmErr *err) {
  char buf[4096];
  if (strlen(path) >= sizeof buf) return mcm_err(err, "output directory '%s': path too long", path);
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || !*p) {
      char c = *p;
      *p = 0;
      if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return mcm_err(err, "output directory '%s': cannot create '%s': %s", path, buf, strerror(errno));
      *p = c;
      if (!c) break;
    }
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return mcm_err(err, "output directory '%s': exists and is not a directory", path);
  if (access(path, W_OK | X_OK) != 0) return mcm_err(err, "output directory '%s': not writable: %s", path, strerror(errno));
  return 0;
}

/* Index of "shard_NNNNN.h5", or -1 for any other name. */
static int shard_index(const char *name) {
  int idx, len = 0;
  if (sscanf(name, "shard_%d.h5%n", &idx, &len) == 1 && len == (int)strlen(name) && idx >= 0 &&
      strlen(name) == strlen("shard_00000.h5"))
    return idx;
  return -1;
}

/* The lowest shard index >= from present in dir, or -1. Removes them when remove is set. */
static int find_shards(const char *dir, int from, bool remove_them, char *first, size_t first_size) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int found = -1;
  struct dirent *e;
  while ((e = readdir(d))) {
    int idx = shard_index(e->d_name);
    if (idx < from) continue;
    if (found < 0 || idx < found) {
      found = idx;
      if (first) mcm_snprintf(first, first_size, "%s", e->d_name);
    }
    if (remove_them) {
      char p[4096 + 300];
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
  }
  closedir(d);
  return found;
}

/* Opens "<path>.tmp" for a text file the run writes (report, summary). */
static FILE *open_tmp(const char *path, McmErr *err) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) mcm_err(err, "cannot write '%s': %s", tmp, strerror(errno));
  return f;
}

/* Flushes and closes f, then publishes "<path>.tmp" over path (core/io.h). */
static int commit_tmp(FILE *f, const char *path, McmErr *err) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int rc = 0;
  if (fflush(f) != 0) rc = mcm_err(err, "cannot write '%s': %s", tmp, strerror(errno));
  if (fclose(f) != 0 && rc == 0) rc = mcm_err(err, "cannot write '%s': %s", tmp, strerror(errno));
  if (rc == 0) return file_publish(tmp, path, err);
  unlink(tmp);
  return rc;
}

/* ---------------------------------------------------------------- one file */

typedef struct FileResult {
  bool done;
  const char *kind; /* NULL: ok (n_seg >= 1) */
  char detail[1024];
  int64_t n_seg;
  float *mel;      /* (n_seg, segment_frames, n_mels) */
  float *audio;    /* (n_seg, W) the normalised windows the mels were made from, with keep_audio */
  int64_t *offset; /* (n_seg) */
  double seconds, segment_seconds;
  int64_t silent_windows;
} FileResult;

typedef struct Worker {
  Mel *mel;
  float *pad; /* (W) */
  float *out; /* (segment_frames + 1, n_mels) */
} Worker;

static void skip(FileResult *r, const char *kind, const char *fmt, ...) MCM_PRINTF(3, 4);
static void skip(FileResult *r, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->detail, sizeof r->detail, fmt, ap);
  va_end(ap);
  r->kind = kind;
}

static void process_file(const PrepareOptions *o, Worker *w, const ManifestEntry *e, FileResult *r) {
  const int rate = o->mel.rate, F = o->segment_frames, M = o->mel.n_mels;
  const int64_t W = window_samples(o);
  const double window_s = (double)W / rate;
  Audio a = {0};
  McmErr err = {{0}};
  if (audio_read(e->path, rate, &a, &err)) {
    skip(r, audio_reason(err.msg), "%s", err.msg);
    return;
  }
  double secs = (double)a.n / rate;
  r->seconds = secs;
  int64_t nw = 0, *starts = NULL, *lens = NULL;
  bool *silent = NULL;
  if (secs < o->min_seconds) {
    skip(r, "too short", "audio '%s': %.3f s is shorter than prepare.min_seconds = %g s", e->path, secs, o->min_seconds);
    goto done;
  }
  if (mel_check_length(w->mel, a.n, &err)) {
    skip(r, "too short", "audio '%s': %s", e->path, err.msg);
    goto done;
  }
  if (audio_is_silent(a.samples, a.n, o->silence_threshold)) {
    skip(r, "silent", "audio '%s': silent: peak |x| <= prepare.silence_threshold = %g", e->path, o->silence_threshold);
    goto done;
  }
  nw = prepare_windows(o, a.n, NULL, NULL, 0);
  if (nw == 0) {
    skip(r, "too short",
         "audio '%s': %.3f s gives no segment: shorter than prepare.min_fraction = %g of a %.2f s window", e->path, secs,
         o->min_fraction, window_s);
    goto done;
  }
  starts = MALLOC_CHECK((size_t)nw * sizeof *starts);
  lens = MALLOC_CHECK((size_t)nw * sizeof *lens);
  silent = MALLOC_CHECK((size_t)nw * sizeof *silent);
  prepare_windows(o, a.n, starts, lens, nw);
  int64_t keep = 0;
  for (int64_t k = 0; k < nw; k++) {
    silent[k] = audio_is_silent(a.samples + starts[k], lens[k], o->silence_threshold);
    keep += !silent[k];
  }
  if (keep == 0) {
    skip(r, "silent", "audio '%s': every one of its %lld windows is silent (peak |x| <= %g)", e->path, (long long)nw,
         o->silence_threshold);
    goto done;
  }
  audio_normalize(a.samples, a.n);
  r->mel = MALLOC_CHECK((size_t)keep * (size_t)F * (size_t)M * sizeof(float));
  r->offset = MALLOC_CHECK((size_t)keep * sizeof *r->offset);
  if (o->keep_audio) r->audio = MALLOC_CHECK((size_t)keep * (size_t)W * sizeof(float));
  for (int64_t k = 0; k < nw; k++) {
    if (silent[k]) {
      r->silent_windows++;
      continue;
    }
    const float *x = a.samples + starts[k];
    float peak = 0;
    for (int64_t i = 0; i < lens[k]; i++) peak = fmaxf(peak, fabsf(x[i]));
    if (!(peak > 0)) { /* only a DC offset in this window: nothing left after the mean removal */
      r->silent_windows++;
      continue;
    }
    const float g = 0.5f / peak;
    for (int64_t i = 0; i < lens[k]; i++) w->pad[i] = x[i] * g;
    for (int64_t i = lens[k]; i < W; i++) w->pad[i] = 0.0f;
    mel_compute(w->mel, w->pad, W, w->out);
    memcpy(r->mel + (size_t)r->n_seg * F * M, w->out, (size_t)F * M * sizeof(float)); /* first F frames */
    if (r->audio) memcpy(r->audio + (size_t)r->n_seg * (size_t)W, w->pad, (size_t)W * sizeof(float));
    r->offset[r->n_seg++] = starts[k];
    r->segment_seconds += (double)lens[k] / rate;
  }
  if (r->n_seg == 0)
    skip(r, "silent", "audio '%s': nothing but a constant offset in every window", e->path);
done:
  free(starts);
  free(lens);
  free(silent);
  audio_free(&a);
}

/* ---------------------------------------------------------------- the pool */

enum { AHEAD_PER_THREAD = 4 };

typedef struct Pool {
  const PrepareOptions *o;
  const Manifest *m;
  FileResult *ring;    /* (ahead): entry i lives in slot i % ahead */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int next_take, next_write; /* guarded by mu */
  bool stop;
  int ahead;
} Pool;

typedef struct WorkerArg {
  Pool *pool;
  Worker w;
} WorkerArg;

static void *worker_main(void *p) {
  WorkerArg *wa = p;
  Pool *pool = wa->pool;
  pthread_mutex_lock(&pool->mu);
  for (;;) {
    while (!pool->stop && pool->next_take < pool->m->n && pool->next_take >= pool->next_write + pool->ahead)
      pthread_cond_wait(&pool->cv, &pool->mu);
    if (pool->stop || pool->next_take >= pool->m->n) break;
    int i = pool->next_take++;
    pthread_mutex_unlock(&pool->mu);
    FileResult r = {0};
    process_file(pool->o, &wa->w, &pool->m->entries[i], &r);
    pthread_mutex_lock(&pool->mu);
    r.done = true;
    pool->ring[i % pool->ahead] = r;
    pthread_cond_broadcast(&pool->cv);
  }
  pthread_mutex_unlock(&pool->mu);
  return NULL;
}

/* ---------------------------------------------------------------- progress and summary */

static void fmt_duration(double s, char *buf, size_t size) {
  if (!(s >= 0) || s > 1e7) {
    snprintf(buf, size, "--:--");
    return;
  }
  long t = lround(s);
  if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

static void progress(int done, int total, int64_t segments, double elapsed, bool final) {
  enum { BAR = 30 };
  char bar[BAR + 1], eta[32];
  int fill = total ? (int)((int64_t)done * BAR / total) : BAR;
  for (int i = 0; i < BAR; i++) bar[i] = i < fill ? '#' : '.';
  bar[BAR] = 0;
  double rate = elapsed > 0 ? done / elapsed : 0;
  fmt_duration(rate > 0 ? (total - done) / rate : -1, eta, sizeof eta);
  fprintf(stderr, "\rprepare [%s] %d/%d files  %.1f files/s  ETA %s  %lld segments\033[K%s", bar, done, total, rate, eta,
          (long long)segments, final ? "\n" : "");
  fflush(stderr);
}

static void write_encode_summary(FILE *f, const PrepareOptions *o, const PrepareStats *st) {
  double minutes = st->encode_seconds / 60.0;
  fprintf(f, "vae = %s\n", o->vae ? o->vae : "");
  fprintf(f, "text_encoder = %s\n", o->text_encoder ? o->text_encoder : "");
  fprintf(f, "tokenizer = %s\n", o->tokenizer ? o->tokenizer : "");
  fprintf(f, "encode_device = %s\n", st->device);
  fprintf(f, "encode_batch = %d\n", o->batch ? o->batch : PREPARE_DEFAULT_BATCH);
  fprintf(f, "encoded_shards = %d\n", st->encoded_shards);
  fprintf(f, "encoded_rows = %lld\n", (long long)st->encoded_rows);
  fprintf(f, "encode_seconds = %.2f\n", st->encode_seconds);
  fprintf(f, "encode_rows_per_second = %.3f\n", st->encode_seconds > 0 ? st->encoded_rows / st->encode_seconds : 0.0);
  fprintf(f, "encode_audio_hours_per_minute = %.4f\n",
          minutes > 0 ? st->encoded_audio_seconds / 3600.0 / minutes : 0.0);
  fprintf(f, "encoders = %s/%s\n", o->out_dir, PREPARE_ENCODERS_FILE);
}

static void write_summary(FILE *f, const PrepareOptions *o, const PrepareStats *st) {
  double minutes = st->wall_seconds / 60.0;
  fprintf(f, "sources = %s\n", o->sources ? o->sources : "");
  fprintf(f, "out_dir = %s\n", o->out_dir);
  fprintf(f, "threads = %d\n", o->threads);
  fprintf(f, "files = %d\n", st->files);
  fprintf(f, "files_ok = %d\n", st->files_ok);
  fprintf(f, "files_skipped = %d\n", st->files_skipped);
  fprintf(f, "segments = %lld\n", (long long)st->segments);
  fprintf(f, "shards = %d\n", st->shards);
  fprintf(f, "silent_windows_dropped = %lld\n", (long long)st->silent_windows);
  fprintf(f, "audio_hours = %.4f\n", st->audio_seconds / 3600.0);
  fprintf(f, "segment_audio_hours = %.4f\n", st->segment_seconds / 3600.0);
  fprintf(f, "wall_seconds = %.2f\n", st->wall_seconds);
  fprintf(f, "audio_hours_per_minute = %.3f\n", minutes > 0 ? st->audio_seconds / 3600.0 / minutes : 0.0);
  for (int i = 0; i < st->n_reasons; i++) fprintf(f, "skipped[%s] = %d\n", st->reason[i], st->reason_count[i]);
  if (o->vae || o->text_encoder) write_encode_summary(f, o, st);
}

/* The values this run used (also when no resolved config text was handed in). */
static void write_options(FILE *f, const PrepareOptions *o) {
  const MelConfig *c = &o->mel;
  fprintf(f, "mel.rate = %d\nmel.n_fft = %d\nmel.hop = %d\nmel.win = %d\nmel.n_mels = %d\n", c->rate, c->n_fft, c->hop,
          c->win, c->n_mels);
  fprintf(f, "mel.fmin = %.9g\nmel.fmax = %.9g\nmel.log_floor = %.9g\n", c->fmin, c->fmax, c->log_floor);
  fprintf(f, "prepare.segment_frames = %d\nprepare.crop = %s\nprepare.hop_frames = %d\n", o->segment_frames,
          o->crop == PREPARE_CROP_FIRST ? "first" : "segments", o->hop_frames);
  fprintf(f, "prepare.min_fraction = %.9g\nprepare.min_seconds = %.9g\nprepare.silence_threshold = %.9g\n",
          o->min_fraction, o->min_seconds, o->silence_threshold);
  fprintf(f, "prepare.shard_size = %d\n", o->shard_size);
}

/* The encoders' configurations come from their weights' config attribute (models/weights.h). */

/* ---------------------------------------------------------------- encoders: the models */

typedef struct Encoders {
  Ctx *ctx;
  ParamSet vae_ps, text_ps;
  Vae *vae;           /* NULL without o->vae */
  ClapText *text;     /* NULL without o->text_encoder */
  Tokenizer *tok;
  int batch;
  int frames, n_mels; /* every row's mel: (frames, n_mels) */
  int lat_c, lat_t, lat_f; /* latent row (2L, frames/f, n_mels/f) */
  int emb_dim;        /* P */
  float *uncond;      /* (P): clap_text_embed("") */
} Encoders;

static void encoders_close(Encoders *en) {
  if (!en) return;
  if (en->vae) params_free(&en->vae_ps);
  if (en->text) params_free(&en->text_ps);
  tokenizer_free(en->tok);
  if (en->ctx) ctx_destroy(en->ctx);
  free(en->uncond);
  free(en);
}

/* Loads the encoders o asks for and checks them against rows of (frames, n_mels): NULL with
 * err (naming the file and what does not fit) before anything is written. */
static Encoders *encoders_open(const PrepareOptions *o, int frames, int n_mels, McmErr *err) {
  if (o->batch < 0) {
    mcm_err(err, "batch = %d: expected a positive number of rows per forward pass", o->batch);
    return NULL;
  }
  if (o->text_encoder && !o->tokenizer) {
    mcm_err(err, "a text encoder needs its tokenizer: give --tokenizer DIR (holding vocab.json and merges.txt)");
    return NULL;
  }
  if (o->tokenizer && !o->text_encoder) {
    mcm_err(err, "--tokenizer is only used with --text-encoder FILE");
    return NULL;
  }
  VaeConfig vc;
  ClapTextConfig tc;
  if (o->vae) {
    if (vae_config_from_weights(o->vae, &vc, err)) return NULL;
    const int f = vae_downsample_factor(&vc);
    if (vc.in_channels != 1) {
      mcm_err(err, "%s: the VAE takes %d input channels; a log-mel is one (hint: is this MusicLDM's VAE?)", o->vae,
              vc.in_channels);
      return NULL;
    }
    if (frames % f || n_mels % f) {
      mcm_err(err,
              "%s: the VAE downsamples by %d, but the mel rows are %d frames x %d mels (hint: prepare.segment_frames "
              "and mel.n_mels must be multiples of %d)",
              o->vae, f, frames, n_mels, f);
      return NULL;
    }
  }
  if (o->text_encoder && clap_text_config_from_weights(o->text_encoder, &tc, err)) return NULL;

  DeviceSpec spec;
  if (device_spec_parse(o->device ? o->device : "cpu", &spec, err)) return NULL;
  Encoders *en = CALLOC_CHECK(1, sizeof *en);
  if (o->text_encoder) {
    char vocab[4200], merges[4200];
    mcm_snprintf(vocab, sizeof vocab, "%s/vocab.json", o->tokenizer);
    mcm_snprintf(merges, sizeof merges, "%s/merges.txt", o->tokenizer);
    en->tok = tokenizer_load(vocab, merges, err);
    if (!en->tok) goto fail;
  }
  en->batch = o->batch ? o->batch : PREPARE_DEFAULT_BATCH;
  en->frames = frames;
  en->n_mels = n_mels;
  en->ctx = ctx_create(&spec, 0, err);
  if (!en->ctx) goto fail;
  ctx_set_grad(en->ctx, false);
  if (o->vae) {
    params_init(&en->vae_ps, "");
    en->vae = vae_create(en->ctx, &vc, &en->vae_ps);
    if (vae_load(en->ctx, en->vae, o->vae, err)) goto fail;
    const int f = vae_downsample_factor(&vc);
    en->lat_c = 2 * vc.latent_channels;
    en->lat_t = frames / f;
    en->lat_f = n_mels / f;
  }
  if (o->text_encoder) {
    params_init(&en->text_ps, "");
    en->text = clap_text_create(en->ctx, &tc, &en->text_ps);
    if (clap_text_load(en->ctx, en->text, o->text_encoder, err)) goto fail;
    en->emb_dim = tc.projection_dim;
    /* The unconditional embedding first: it also proves that tokenizer and tower fit. */
    McmErr why = {{0}};
    Tensor *u = clap_text_embed(en->ctx, en->text, en->tok, (const char *const[]){""}, 1, &why); /* (1, P) */
    if (!u) {
      mcm_err(err, "%s with the tokenizer in %s: %s", o->text_encoder, o->tokenizer, why.msg);
      goto fail;
    }
    en->uncond = MALLOC_CHECK((size_t)en->emb_dim * sizeof(float));
    tensor_to_host_f32(en->ctx, u, en->uncond);
    ctx_step_reset(en->ctx);
    for (int k = 0; k < en->emb_dim; k++)
      if (!isfinite(en->uncond[k])) {
        mcm_err(err, "%s: the text encoder gives a non-finite embedding for \"\" (hint: the weights may be damaged)",
                o->text_encoder);
        goto fail;
      }
  }
  return en;
fail:
  encoders_close(en);
  return NULL;
}

/* Rows mel (B, frames, n_mels) and their captions -> lat (B, 2L, h, w) and emb (B, P), each
 * only for the encoders that are loaded. No gradients; the arena is reset afterwards. */
static int encode_batch(Encoders *en, const float *mel, const char *const *captions, int B, float *lat, float *emb,
                        McmErr *err) {
  Ctx *ctx = en->ctx;
  int rc = 0;
  if (en->vae) {
    Tensor *x = tensor_new(ctx, DT_F32, SHAPE(B, 1, en->frames, en->n_mels)); /* (B, 1, H, W): time x mel */
    tensor_from_host_f32(ctx, x, mel);
    VaeMoments m = vae_encode(ctx, en->vae, x);                             /* (B, L, H/f, W/f) each */
    Tensor *moments = op_concat(ctx, (Tensor *const[]){m.mean, m.logvar}, 2, 1); /* (B, 2L, H/f, W/f) */
    tensor_to_host_f32(ctx, moments, lat);
  }
  if (en->text) {
    Tensor *e = clap_text_embed(ctx, en->text, en->tok, captions, B, err); /* (B, P) */
    if (e) tensor_to_host_f32(ctx, e, emb);
    else rc = -1;
  }
  ctx_step_reset(ctx);
  return rc;
}

/* ---------------------------------------------------------------- encoders: the shards */

typedef struct EncodeProgress {
  bool on;
  int64_t done, total; /* rows */
  int shard, shards;
  double t0, last;
} EncodeProgress;

static void encode_progress(EncodeProgress *p, bool final) {
  double now = now_seconds();
  if (!p->on || (!final && now - p->last < 0.25)) return;
  p->last = now;
  enum { BAR = 30 };
  char bar[BAR + 1], eta[32];
  int fill = p->total ? (int)(p->done * BAR / p->total) : BAR;
  for (int i = 0; i < BAR; i++) bar[i] = i < fill ? '#' : '.';
  bar[BAR] = 0;
  double rate = now > p->t0 ? (double)p->done / (now - p->t0) : 0;
  fmt_duration(rate > 0 ? (double)(p->total - p->done) / rate : -1, eta, sizeof eta);
  fprintf(stderr, "\rencode  [%s] %lld/%lld rows  %.2f rows/s  ETA %s  shard %d/%d\033[K%s", bar, (long long)p->done,
          (long long)p->total, rate, eta, p->shard, p->shards, final ? "\n" : "");
  fflush(stderr);
}

/* Index of the first non-finite value of x[0..n), or -1. */
static int64_t first_nonfinite(const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}

static int copy_file(const char *from, const char *to, McmErr *err) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0) return mcm_err(err, "%s: cannot open: %s", from, strerror(errno));
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (out < 0) {
    int rc = mcm_err(err, "%s: cannot create the copy %s: %s", from, to, strerror(errno));
    close(in);
    return rc;
  }
  enum { BUF = 1 << 16 };
  char *buf = MALLOC_CHECK(BUF);
  int rc = 0;
  for (ssize_t n; rc == 0 && (n = read(in, buf, BUF)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = mcm_err(err, "%s: read failed: %s", from, strerror(errno));
      break;
    }
    for (ssize_t done = 0, w; rc == 0 && done < n; done += w > 0 ? w : 0) {
      w = write(out, buf + done, (size_t)(n - done));
      if (w < 0 && errno != EINTR)
        rc = mcm_err(err, "%s: cannot write the copy %s: %s (hint: is the disk full?)", from, to, strerror(errno));
    }
  }
  free(buf);
  close(in);
  if (close(out) < 0 && rc == 0) rc = mcm_err(err, "%s: cannot write the copy %s: %s", from, to, strerror(errno));
  return rc;
}

/* Replaces the shard at path by a copy holding lat / emb (NULL: leave that dataset as it is),
 * in one rename: on any failure the shard is untouched and the copy removed. */
static int publish_encoded(const Encoders *en, const char *path, const float *lat, const float *emb, McmErr *err) {
  char tmp[4200];
  if (strlen(path) + 9 > sizeof tmp) return mcm_err(err, "%s: path too long", path);
  snprintf(tmp, sizeof tmp, "%s.enc.tmp", path);
  McmErr why = {{0}};
  int rc = copy_file(path, tmp, &why);
  if (rc == 0 && lat) rc = shard_add_latents(tmp, lat, en->lat_c, en->lat_t, en->lat_f, &why);
  if (rc == 0 && emb) rc = shard_add_text_emb(tmp, emb, en->emb_dim, &why);
  if (rc == 0) return file_publish(tmp, path, err) ? mcm_err(err, "%s: %s (the shard is unchanged)", path, err->msg) : 0;
  unlink(tmp);
  return mcm_err(err, "%s: %s (the shard is unchanged)", path, why.msg);
}

/* Encodes every row of the shard at path, then publishes it with its new datasets. */
static int encode_shard(Encoders *en, const char *path, EncodeProgress *p, int64_t *rows, double *seconds,
                        McmErr *err) {
  Shard *s = shard_open(path, err);
  if (!s) return -1;
  const ShardInfo info = shard_info(s);
  const int64_t N = shard_count(s);
  if (info.frames != en->frames || info.n_mels != en->n_mels) {
    mcm_err(err, "%s: rows of %d frames x %d mels, but the encoders were checked for %d x %d", path, info.frames,
            info.n_mels, en->frames, en->n_mels);
    shard_close(s);
    return -1;
  }
  const size_t mel_row = (size_t)en->frames * en->n_mels, lat_row = (size_t)en->lat_c * en->lat_t * en->lat_f;
  float *lat = en->vae ? MALLOC_CHECK(((size_t)N * lat_row + 1) * sizeof(float)) : NULL;  /* (N, 2L, h, w) */
  float *emb = en->text ? MALLOC_CHECK(((size_t)N * en->emb_dim + 1) * sizeof(float)) : NULL; /* (N, P) */
  float *mel = MALLOC_CHECK((size_t)en->batch * mel_row * sizeof(float)); /* (batch, frames, n_mels) */
  char **captions = CALLOC_CHECK((size_t)en->batch, sizeof *captions);
  int rc = 0;
  for (int64_t i0 = 0; rc == 0 && i0 < N; i0 += en->batch) {
    const int B = (int)(N - i0 < en->batch ? N - i0 : en->batch);
    for (int b = 0; rc == 0 && b < B; b++) rc = shard_read(s, i0 + b, mel + b * mel_row, &captions[b], err);
    if (rc == 0) {
      McmErr why = {{0}};
      rc = encode_batch(en, mel, (const char *const *)captions, B, lat ? lat + (size_t)i0 * lat_row : NULL,
                        emb ? emb + (size_t)i0 * en->emb_dim : NULL, &why);
      if (rc) mcm_err(err, "%s, rows %lld..%lld: %s", path, (long long)i0, (long long)(i0 + B - 1), why.msg);
    }
    for (int b = 0; b < B; b++) free(captions[b]), captions[b] = NULL;
    p->done += rc == 0 ? B : 0;
    encode_progress(p, false);
  }
  shard_close(s);
  free(mel);
  free(captions);
  int64_t bad;
  if (rc == 0 && lat && (bad = first_nonfinite(lat, N * (int64_t)lat_row)) >= 0)
    rc = mcm_err(err, "%s, row %lld: the VAE gives a non-finite value (hint: are the weights damaged?)", path,
                 (long long)(bad / (int64_t)lat_row));
  if (rc == 0 && emb && (bad = first_nonfinite(emb, N * (int64_t)en->emb_dim)) >= 0)
    rc = mcm_err(err, "%s, row %lld: the text encoder gives a non-finite value (hint: are the weights damaged?)",
                 path, (long long)(bad / en->emb_dim));
  if (rc == 0) rc = publish_encoded(en, path, lat, emb, err);
  if (rc == 0) {
    *rows += N;
    *seconds += (double)N * info.frames * info.hop / info.rate;
  }
  free(lat);
  free(emb);
  return rc;
}

/* ---------------------------------------------------------------- encoders: encoders.h5 */

typedef struct EncodersFile {
  bool has_scale;
  float scale;        /* vae_scaling_factor */
  char vae[4096];
  float *uncond;      /* (emb_dim) or NULL */
  int emb_dim;
  char text_encoder[4096], tokenizer[4096];
} EncodersFile;

static void attr_into(TensorFile *tf, const char *name, char *buf, size_t size) {
  char *v = NULL;
  McmErr ignored;
  if (tf_has_attr(tf, name) && tf_get_attr(tf, name, &v, &ignored) == 0) mcm_snprintf(buf, size, "%s", v);
  free(v);
}

/* What an earlier run left in dir/encoders.h5 for the encoders this run does not use
 * (best effort: an unreadable file carries nothing over). */
static void encoders_file_carry(const char *dir, const PrepareOptions *o, EncodersFile *ef) {
  memset(ef, 0, sizeof *ef);
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, PREPARE_ENCODERS_FILE);
  if (access(path, F_OK) != 0) return;
  McmErr ignored;
  TensorFile *tf = tf_open(path, &ignored);
  if (!tf) return;
  int nd;
  int64_t shape[MCM_MAX_DIMS];
  DType dt;
  if (!o->vae && tf_has(tf, "vae_scaling_factor") &&
      tf_read(tf, "vae_scaling_factor", 0, NULL, &ef->scale, &ignored) == 0) {
    ef->has_scale = true;
    attr_into(tf, "vae", ef->vae, sizeof ef->vae);
  }
  if (!o->text_encoder && tf_has(tf, "uncond_text_emb") &&
      tf_info(tf, "uncond_text_emb", &nd, shape, &dt, &ignored) == 0 && nd == 1 && shape[0] > 0 &&
      shape[0] <= INT32_MAX) {
    ef->uncond = MALLOC_CHECK((size_t)shape[0] * sizeof(float));
    ef->emb_dim = (int)shape[0];
    if (tf_read(tf, "uncond_text_emb", 1, shape, ef->uncond, &ignored)) {
      free(ef->uncond);
      ef->uncond = NULL;
    } else {
      attr_into(tf, "text_encoder", ef->text_encoder, sizeof ef->text_encoder);
      attr_into(tf, "tokenizer", ef->tokenizer, sizeof ef->tokenizer);
    }
  }
  tf_close(tf);
}

/* Publishes dir/encoders.h5 holding ef (removes it when ef holds nothing). */
static int encoders_file_write(const char *dir, const EncodersFile *ef, McmErr *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, PREPARE_ENCODERS_FILE);
  if (!ef->has_scale && !ef->uncond) {
    if (unlink(path) != 0 && errno != ENOENT) return mcm_err(err, "cannot remove '%s': %s", path, strerror(errno));
    return 0;
  }
  TensorFile *tf = tf_create(path, err);
  if (!tf) return -1;
  int rc = tf_set_attr(tf, "format", PREPARE_ENCODERS_FORMAT, err);
  if (!rc && ef->has_scale) {
    rc = tf_write(tf, "vae_scaling_factor", DT_F32, 0, NULL, &ef->scale, err);
    if (!rc) rc = tf_set_attr(tf, "vae", ef->vae, err);
    if (!rc)
      rc = tf_set_attr(tf, "latent",
                       "per row (2L, frames/f, n_mels/f): the VAE posterior's mean (channels 0..L-1) and logvar "
                       "(L..2L-1), unscaled; z = (mean + exp(0.5 clamp(logvar, -30, 20)) eps) * vae_scaling_factor",
                       err);
  }
  if (!rc && ef->uncond) {
    rc = tf_write(tf, "uncond_text_emb", DT_F32, 1, (int64_t[]){ef->emb_dim}, ef->uncond, err);
    if (!rc) rc = tf_set_attr(tf, "text_encoder", ef->text_encoder, err);
    if (!rc) rc = tf_set_attr(tf, "tokenizer", ef->tokenizer, err);
  }
  if (rc) {
    tf_abort(tf);
    return -1;
  }
  return tf_commit(tf, err);
}

/* path made absolute (as given when that fails), for the record in encoders.h5. */
static void full_path(const char *path, char *buf, size_t size) {
  char *r = realpath(path, NULL);
  mcm_snprintf(buf, size, "%s", r ? r : path);
  free(r);
}

/* Encodes the shards dir/shard_<idx[k]>.h5 with en, keeping encoders.h5 truthful: first
 * only what this run carries over, at the end everything. */
static int encode_shards(Encoders *en, const PrepareOptions *o, const char *dir, const int *idx, int n,
                         int64_t total_rows, EncodersFile *carry, PrepareStats *st, McmErr *err) {
  if (encoders_file_write(dir, carry, err)) return -1;
  EncodeProgress p = {.on = o->progress, .total = total_rows, .shards = n, .t0 = now_seconds(), .last = 0};
  double seconds = 0;
  int rc = 0;
  for (int k = 0; rc == 0 && k < n; k++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, idx[k]);
    p.shard = k + 1;
    rc = encode_shard(en, path, &p, &st->encoded_rows, &seconds, err);
    if (rc == 0) st->encoded_shards++;
  }
  if (rc == 0) {
    encode_progress(&p, true);
    EncodersFile all = *carry;
    if (en->vae) {
      all.has_scale = true;
      all.scale = en->vae->cfg.scaling_factor;
      full_path(o->vae, all.vae, sizeof all.vae);
    }
    if (en->text) {
      all.uncond = en->uncond;
      all.emb_dim = en->emb_dim;
      full_path(o->text_encoder, all.text_encoder, sizeof all.text_encoder);
      full_path(o->tokenizer, all.tokenizer, sizeof all.tokenizer);
    }
    rc = encoders_file_write(dir, &all, err);
  } else if (p.on) {
    fputc('\n', stderr);
  }
  st->encoded_audio_seconds += seconds;
  mcm_snprintf(st->device, sizeof st->device, "%s", en->ctx->device_name);
  return rc;
}

/* ---------------------------------------------------------------- the run */

static int check_options(const PrepareOptions *o, McmErr *err) {
  if (!o->out_dir || !o->out_dir[0]) return mcm_err(err, "no output directory given");
  if (o->threads < 1) return mcm_err(err, "threads = %d: need at least 1", o->threads);
  if (o->shard_size < 1) return mcm_err(err, "prepare.shard_size = %d: need at least 1", o->shard_size);
  if (o->segment_frames < 1 || o->hop_frames < 1)
    return mcm_err(err, "prepare.segment_frames = %d and hop_frames = %d must be positive", o->segment_frames,
                   o->hop_frames);
  if (!(o->min_fraction > 0 && o->min_fraction <= 1))
    return mcm_err(err, "prepare.min_fraction = %g: expected a number in (0, 1]", o->min_fraction);
  Mel *mel = mel_create(&o->mel, err);
  if (!mel) return -1;
  int rc = 0;
  if (window_samples(o) <= o->mel.n_fft / 2)
    rc = mcm_err(err, "prepare.segment_frames = %d x mel.hop = %d samples is too short for mel.n_fft = %d",
                 o->segment_frames, o->mel.hop, o->mel.n_fft);
  mel_destroy(mel);
  return rc;
}

/* Writes the ok result r (entry e) into shards; -1 on a failed write. */
static int write_result(const PrepareOptions *o, const ManifestEntry *e, const FileResult *r, ShardWriter **sw,
                        PrepareStats *st, FILE *report, McmErr *err) {
  const ShardInfo info = {o->segment_frames, o->mel.n_mels, o->mel.rate, o->mel.hop};
  const size_t seg = (size_t)o->segment_frames * (size_t)o->mel.n_mels;
  for (int64_t k = 0; k < r->n_seg; k++) {
    if (!*sw) {
      char path[4200];
      snprintf(path, sizeof path, "%s/shard_%05d.h5", o->out_dir, st->shards);
      *sw = shard_create(path, &info, err);
      if (!*sw) return -1;
      if (o->keep_audio && shard_writer_keep_audio(*sw, (int)window_samples(o), err)) return -1;
    }
    McmErr why = {{0}};
    const float *audio = r->audio ? r->audio + (size_t)k * (size_t)window_samples(o) : NULL;
    if (shard_append_audio(*sw, r->mel + (size_t)k * seg, audio, e->caption, e->path, r->offset[k], &why)) {
      /* A refused row leaves the writer usable; a failed write does not, and commit says so. */
      tsv_field(report, e->path);
      fputs("\trefused by the shard writer\t", report);
      tsv_field(report, why.msg);
      fputc('\n', report);
      count_reason(st, "refused by the shard writer");
      continue;
    }
    st->segments++;
    if (shard_writer_count(*sw) == o->shard_size) {
      ShardWriter *w = *sw;
      *sw = NULL;
      if (shard_commit(w, err)) return -1;
      st->shards++;
    }
  }
  return 0;
}

/* The mel pass: manifest entries -> shards, report.tsv. */
static int mel_pass(const Manifest *m, const PrepareOptions *o, PrepareStats *st, McmErr *err) {
  const double t0 = now_seconds();
  if (make_dirs(o->out_dir, err)) return -1;
  char first[300];
  if (!o->overwrite && find_shards(o->out_dir, 0, false, first, sizeof first) >= 0)
    return mcm_err(err, "output directory '%s' already holds %s from an earlier run: choose another --out or pass --overwrite",
                   o->out_dir, first);
  char report_path[4200], encoders_path[4200];
  snprintf(report_path, sizeof report_path, "%s/report.tsv", o->out_dir);
  snprintf(encoders_path, sizeof encoders_path, "%s/%s", o->out_dir, PREPARE_ENCODERS_FILE);
  FILE *report = open_tmp(report_path, err);
  if (!report) return -1;
  unlink(encoders_path); /* an earlier run's: it does not describe the new shards */
  fputs("path\treason\tdetail\n", report);
  st->started = true;
  st->files = m->n + m->n_skips;
  for (int i = 0; i < m->n_skips; i++) {
    tsv_field(report, m->skips[i].where);
    fputc('\t', report);
    tsv_field(report, m->skips[i].kind);
    fputc('\t', report);
    tsv_field(report, m->skips[i].detail);
    fputc('\n', report);
    count_reason(st, m->skips[i].kind);
    st->files_skipped++;
  }

  Pool pool = {.o = o, .m = m, .ahead = AHEAD_PER_THREAD * o->threads};
  pool.ring = CALLOC_CHECK((size_t)pool.ahead, sizeof *pool.ring);
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.cv, NULL);
  int nt = o->threads < m->n ? o->threads : m->n;
  WorkerArg *wa = CALLOC_CHECK((size_t)(nt ? nt : 1), sizeof *wa);
  pthread_t *tid = CALLOC_CHECK((size_t)(nt ? nt : 1), sizeof *tid);
  const int64_t W = window_samples(o);
  for (int t = 0; t < nt; t++) {
    wa[t].pool = &pool;
    wa[t].w.mel = mel_create(&o->mel, err);
    MCM_CHECK(wa[t].w.mel, "mel_create failed after the options were checked: %s", err->msg);
    wa[t].w.pad = MALLOC_CHECK((size_t)W * sizeof(float));
    wa[t].w.out = MALLOC_CHECK((size_t)mel_frames(wa[t].w.mel, W) * (size_t)o->mel.n_mels * sizeof(float));
    MCM_CHECK(mel_frames(wa[t].w.mel, W) >= o->segment_frames, "mel_frames(%lld) < segment_frames", (long long)W);
    MCM_CHECK(pthread_create(&tid[t], NULL, worker_main, &wa[t]) == 0, "pthread_create failed");
  }

  ShardWriter *sw = NULL;
  int rc = 0;
  double last_bar = 0;
  for (int i = 0; i < m->n; i++) {
    pthread_mutex_lock(&pool.mu);
    FileResult *slot = &pool.ring[i % pool.ahead];
    while (!slot->done) pthread_cond_wait(&pool.cv, &pool.mu);
    FileResult r = *slot;
    memset(slot, 0, sizeof r);
    pool.next_write = i + 1;
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);

    const ManifestEntry *e = &m->entries[i];
    if (r.kind) {
      tsv_field(report, e->path);
      fputc('\t', report);
      tsv_field(report, r.kind);
      fputc('\t', report);
      tsv_field(report, r.detail);
      fputc('\n', report);
      count_reason(st, r.kind);
      st->files_skipped++;
    } else if (rc == 0) {
      st->files_ok++;
      st->audio_seconds += r.seconds;
      st->segment_seconds += r.segment_seconds;
      st->silent_windows += r.silent_windows;
      if (write_result(o, e, &r, &sw, st, report, err)) {
        rc = -1;
        shard_abort(sw);
        sw = NULL;
        pthread_mutex_lock(&pool.mu);
        pool.stop = true;
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
      }
    }
    free(r.mel);
    free(r.audio);
    free(r.offset);
    if (rc) break;
    double now = now_seconds();
    if (o->progress && (now - last_bar >= 0.25 || i + 1 == m->n)) {
      progress(i + 1, m->n, st->segments, now - t0, i + 1 == m->n);
      last_bar = now;
    }
  }
  for (int t = 0; t < nt; t++) {
    pthread_join(tid[t], NULL);
    mel_destroy(wa[t].w.mel);
    free(wa[t].w.pad);
    free(wa[t].w.out);
  }
  for (int i = 0; i < pool.ahead; i++) free(pool.ring[i].mel), free(pool.ring[i].offset);
  free(pool.ring);
  free(wa);
  free(tid);
  pthread_mutex_destroy(&pool.mu);
  pthread_cond_destroy(&pool.cv);

  if (rc == 0 && sw) {
    if (shard_commit(sw, err)) rc = -1;
    else st->shards++;
  }
  if (rc == 0 && o->overwrite) find_shards(o->out_dir, st->shards, true, NULL, 0);
  st->wall_seconds = now_seconds() - t0;
  if (rc) {
    fclose(report);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", report_path);
    unlink(tmp);
    return -1;
  }
  return commit_tmp(report, report_path, err);
}

static bool wants_encoders(const PrepareOptions *o) { return o->vae || o->text_encoder || o->tokenizer; }

int prepare_run(const Manifest *m, const PrepareOptions *o, PrepareStats *st, McmErr *err) {
  memset(st, 0, sizeof *st);
  if (check_options(o, err)) return -1;
  /* The encoders are loaded and checked against the mel size first: a mismatch refuses the
   * run before anything is written. */
  Encoders *en = NULL;
  double t_enc = now_seconds();
  if (wants_encoders(o) && !(en = encoders_open(o, o->segment_frames, o->mel.n_mels, err))) return -1;
  double load_seconds = now_seconds() - t_enc;
  int rc = mel_pass(m, o, st, err);
  if (rc == 0 && en && st->shards > 0) {
    int *idx = MALLOC_CHECK((size_t)st->shards * sizeof *idx);
    for (int k = 0; k < st->shards; k++) idx[k] = k;
    EncodersFile carry = {0};
    t_enc = now_seconds();
    rc = encode_shards(en, o, o->out_dir, idx, st->shards, st->segments, &carry, st, err);
    st->encode_seconds = load_seconds + now_seconds() - t_enc;
    free(idx);
    if (rc) {
      char msg[sizeof err->msg];
      mcm_snprintf(msg, sizeof msg, "%s", err->msg);
      mcm_err(err, "%s; the mel shards are complete: finish with ./prepare --add-latents --out %s and the same weights",
              msg, o->out_dir);
    }
  }
  encoders_close(en);
  if (rc) return -1;

  char report_path[4200], summary_path[4200];
  snprintf(report_path, sizeof report_path, "%s/report.tsv", o->out_dir);
  snprintf(summary_path, sizeof summary_path, "%s/prepare_summary.txt", o->out_dir);
  FILE *f = open_tmp(summary_path, err);
  if (!f) return -1;
  fputs("# mcm ./prepare summary\n", f);
  write_summary(f, o, st);
  fputs("\n# options used\n", f);
  write_options(f, o);
  if (o->config_text) fprintf(f, "\n# resolved configuration\n%s", o->config_text);
  if (commit_tmp(f, summary_path, err)) return -1;
  if (!o->quiet) {
    printf("# mcm prepare: done\n");
    write_summary(stdout, o, st);
    printf("report = %s\nsummary = %s\n", report_path, summary_path);
    fflush(stdout);
  }
  return 0;
}

/* Indices of dir's shard_NNNNN.h5 files, ascending; *n of them (malloc'd; NULL when none). */
static int *list_shards(const char *dir, int *n, McmErr *err) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) {
    mcm_err(err, "cannot read directory '%s': %s", dir, strerror(errno));
    return NULL;
  }
  int cap = 0, *idx = NULL;
  for (struct dirent *e; (e = readdir(d));) {
    int k = shard_index(e->d_name);
    if (k < 0) continue;
    if (*n == cap) idx = REALLOC_CHECK(idx, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *idx);
    int j = (*n)++;
    for (; j > 0 && idx[j - 1] > k; j--) idx[j] = idx[j - 1];
    idx[j] = k;
  }
  closedir(d);
  if (*n == 0) mcm_err(err, "'%s' holds no shard_NNNNN.h5 (hint: make them first with ./prepare --manifest FILE)", dir);
  return idx;
}

int prepare_add_latents(const PrepareOptions *o, PrepareStats *st, McmErr *err) {
  memset(st, 0, sizeof *st);
  const double t0 = now_seconds();
  if (!o->out_dir || !o->out_dir[0]) return mcm_err(err, "no shard directory given");
  if (!o->vae && !o->text_encoder)
    return mcm_err(err, "nothing to add: give --vae FILE and / or --text-encoder FILE --tokenizer DIR");
  int n;
  int *idx = list_shards(o->out_dir, &n, err);
  if (!idx) return -1;
  /* Every shard's structure first (not its checksums: encode_shard verifies those), so
   * that shards of different mel sizes are refused before any is changed. */
  ShardInfo info0 = {0};
  int64_t total = 0;
  int rc = 0;
  for (int k = 0; rc == 0 && k < n; k++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/shard_%05d.h5", o->out_dir, idx[k]);
    Shard *s = shard_open_flags(path, SHARD_NO_VERIFY, err);
    if (!s) {
      rc = -1;
      break;
    }
    ShardInfo info = shard_info(s);
    total += shard_count(s);
    shard_close(s);
    if (k == 0) info0 = info;
    else if (info.frames != info0.frames || info.n_mels != info0.n_mels)
      rc = mcm_err(err, "%s: rows of %d frames x %d mels, but shard_%05d.h5 has %d x %d: one run's shards only", path,
                   info.frames, info.n_mels, idx[0], info0.frames, info0.n_mels);
  }
  Encoders *en = rc ? NULL : encoders_open(o, info0.frames, info0.n_mels, err);
  if (!en) {
    free(idx);
    return -1;
  }
  if (!o->quiet) {
    printf("# mcm prepare --add-latents: %d shards, %lld rows in %s on %s%s%s%s%s\n", n, (long long)total, o->out_dir,
           en->ctx->device_name, o->vae ? "; vae " : "", o->vae ? o->vae : "", o->text_encoder ? "; text encoder " : "",
           o->text_encoder ? o->text_encoder : "");
    fflush(stdout);
  }
  st->started = true;
  EncodersFile carry;
  encoders_file_carry(o->out_dir, o, &carry);
  rc = encode_shards(en, o, o->out_dir, idx, n, total, &carry, st, err);
  free(carry.uncond);
  encoders_close(en);
  free(idx);
  st->encode_seconds = now_seconds() - t0;
  st->wall_seconds = st->encode_seconds;
  if (rc) return -1;
  if (!o->quiet) {
    printf("# mcm prepare --add-latents: done\n");
    write_encode_summary(stdout, o, st);
    fflush(stdout);
  }
  return 0;
}
