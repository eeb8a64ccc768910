/* ./prepare's work (see prepare.h): a pool of worker threads turns files into mel segments,
 * the calling thread writes them to shards in manifest order.
 *
 * Ordering: workers take the next manifest entry i from a shared counter and leave its
 * outcome in slot i % ahead of a ring; the writer waits for entries 0, 1, 2 ... in turn. A
 * worker takes entry i only once i < next_write + ahead, so its slot has been consumed; this
 * also bounds the memory held in finished results that wait for an earlier one. Since each result
 * depends only on its file and the output is written in index order, the shards have the
 * same bytes whatever the number of threads.
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
#include "data/audio.h"
#include "data/shard.h"

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
    }
    McmErr why = {{0}};
    if (shard_append(*sw, r->mel + (size_t)k * seg, e->caption, e->path, r->offset[k], &why)) {
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

int prepare_run(const Manifest *m, const PrepareOptions *o, PrepareStats *st, McmErr *err) {
  memset(st, 0, sizeof *st);
  const double t0 = now_seconds();
  if (check_options(o, err)) return -1;
  if (make_dirs(o->out_dir, err)) return -1;
  char first[300];
  if (!o->overwrite && find_shards(o->out_dir, 0, false, first, sizeof first) >= 0)
    return mcm_err(err, "output directory '%s' already holds %s from an earlier run: choose another --out or pass --overwrite",
                   o->out_dir, first);
  char report_path[4200], summary_path[4200];
  snprintf(report_path, sizeof report_path, "%s/report.tsv", o->out_dir);
  snprintf(summary_path, sizeof summary_path, "%s/prepare_summary.txt", o->out_dir);
  FILE *report = open_tmp(report_path, err);
  if (!report) return -1;
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
  if (commit_tmp(report, report_path, err)) return -1;
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
