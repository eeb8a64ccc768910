/* The batch loader: shard discovery and validation, the per-epoch permutation, the rank
 * split, the prefetch ring and exact resume (the rules are in loader.h). */
#include "data/loader.h"

#include <dirent.h>
#include <glob.h>
#include <pthread.h>
#include <sys/stat.h>

#include "core/tensorfile.h"
#include "kernels/rng.h"

#define PERM_DOMAIN 0x53480000u /* "SH": the high counter word of shuffle draws */

typedef struct Slot {
  Batch b;
  bool failed;
  McmErr err;
} Slot;

struct Loader {
  LoaderOptions o;
  unsigned fields;
  int n_shards;
  char **paths;   /* (n_shards), sorted */
  int64_t *first; /* (n_shards + 1): global id of each shard's row 0; first[n_shards] = N */
  int64_t N, S;
  ShardInfo info;
  int lat[3], emb_dim, audio_samples;

  /* Open shards, least recently used closed first (producer side only). */
  Shard **open;    /* (n_shards), NULL when closed */
  uint64_t *used;  /* (n_shards) last-use stamp */
  int n_open;
  uint64_t clock;

  /* Producer: the batch it fills next, and the permutation of perm_epoch. */
  int64_t prod_epoch, prod_step;
  int64_t *perm;
  int64_t perm_epoch;

  /* Consumer: the batch loader_next returns next; a sticky read error. */
  int64_t next_epoch, next_step;
  bool failed;
  McmErr fail;

  /* Ring: slots [head, head + ready) are filled in order; the slot before head is held by
   * the caller when held; the producer fills slot tail = head + ready. */
  Slot *slots;
  int nslots, head, ready;
  bool held;
  bool threaded, running, stop;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv_ready, cv_space;
};

/* ---------------------------------------------------------------- permutation */

/* j uniform in [0, bound) for Fisher-Yates step i of `epoch`: 64-bit Philox draws, rejecting
 * the 2^64 mod bound lowest values so every j is equally likely. */
static int64_t uniform_below(uint64_t seed, int64_t epoch, int64_t i, uint64_t bound) {
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  const uint64_t reject = (0 - bound) % bound; /* 2^64 mod bound */
  for (uint32_t attempt = 0; attempt < 0x10000u; attempt++) {
    const uint32_t ctr[4] = {(uint32_t)i, (uint32_t)((uint64_t)i >> 32), (uint32_t)epoch, PERM_DOMAIN | attempt};
    uint32_t w[4];
    philox4x32_10(ctr, key, w);
    for (int h = 0; h < 2; h++) {
      uint64_t r = (uint64_t)w[2 * h] | (uint64_t)w[2 * h + 1] << 32;
      if (r >= reject) return (int64_t)(r % bound);
    }
  }
  MCM_FATAL("loader_permutation: 2^17 rejected draws in a row (Philox is broken)");
}

void loader_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm) {
  MCM_CHECK(epoch >= 0 && epoch <= (int64_t)UINT32_MAX, "loader_permutation: epoch %lld out of range",
            (long long)epoch);
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = n - 1; i >= 1; i--) {
    int64_t j = uniform_below(seed, epoch, i, (uint64_t)i + 1);
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

/* ---------------------------------------------------------------- finding shards */

static bool is_tmp(const char *name) {
  size_t n = strlen(name);
  return n >= 4 && !strcmp(name + n - 4, ".tmp");
}

static bool has_shard_ext(const char *name) {
  size_t n = strlen(name);
  return (n > 3 && !strcmp(name + n - 3, ".h5")) || (n > 5 && !strcmp(name + n - 5, ".hdf5"));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join(const char *dir, const char *name) {
  size_t nd = strlen(dir), nn = strlen(name);
  bool slash = nd > 0 && dir[nd - 1] == '/';
  char *p = MALLOC_CHECK(nd + nn + 2);
  memcpy(p, dir, nd);
  if (!slash) p[nd++] = '/';
  memcpy(p + nd, name, nn + 1);
  return p;
}

static void push(char ***list, int *n, char *s) {
  *list = REALLOC_CHECK(*list, (size_t)(*n + 1) * sizeof **list);
  (*list)[(*n)++] = s;
}

/* The shard paths for a directory, a glob or one file, sorted; 0 files is an error. */
static int find_shards(const char *where, char ***paths, int *n, McmErr *err) {
  *paths = NULL;
  *n = 0;
  struct stat st;
  if (stat(where, &st) == 0 && S_ISDIR(st.st_mode)) {
    DIR *d = opendir(where);
    if (!d) return mcm_err(err, "%s: cannot list the shard directory: %s", where, strerror(errno));
    /* encoders.h5 is ./prepare's per-dataset side file (data/prepare.h), not a shard. */
    for (struct dirent *e; (e = readdir(d));)
      if (e->d_name[0] != '.' && has_shard_ext(e->d_name) && strcmp(e->d_name, "encoders.h5"))
        push(paths, n, join(where, e->d_name));
    closedir(d);
    if (*n == 0)
      return mcm_err(err, "%s: no shards in this directory (no *.h5 or *.hdf5 files) (hint: run ./prepare first)",
                     where);
  } else {
    glob_t g;
    int rc = glob(where, 0, NULL, &g);
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; i++)
        if (!is_tmp(g.gl_pathv[i])) {
          size_t len = strlen(g.gl_pathv[i]) + 1;
          push(paths, n, memcpy(MALLOC_CHECK(len), g.gl_pathv[i], len));
        }
    if (rc == 0) globfree(&g);
    if (*n == 0)
      return mcm_err(err, "%s: no shard files match (hint: ./prepare writes them — for the demo model's, run "
                     "`make demo-shards`; give a directory of .h5 shards, a glob such as 'shards/*.h5', or one "
                     "shard file)", where);
  }
  qsort(*paths, (size_t)*n, sizeof **paths, cmp_str);
  return 0;
}

/* ---------------------------------------------------------------- open shards */

static void evict_lru(Loader *l) {
  int victim = -1;
  for (int i = 0; i < l->n_shards; i++)
    if (l->open[i] && (victim < 0 || l->used[i] < l->used[victim])) victim = i;
  shard_close(l->open[victim]);
  l->open[victim] = NULL;
  l->n_open--;
}

static void keep_open(Loader *l, int i, Shard *s) {
  if (l->n_open == LOADER_MAX_OPEN) evict_lru(l);
  l->open[i] = s;
  l->used[i] = ++l->clock;
  l->n_open++;
}

/* Shard i, reopened (structure checked, data already verified) if it was closed. */
static Shard *get_shard(Loader *l, int i, McmErr *err) {
  if (l->open[i]) {
    l->used[i] = ++l->clock;
    return l->open[i];
  }
  Shard *s = shard_open_flags(l->paths[i], SHARD_NO_VERIFY, err);
  if (!s) return NULL;
  ShardInfo a = shard_info(s), b = l->info;
  if (shard_count(s) != l->first[i + 1] - l->first[i] || a.frames != b.frames || a.n_mels != b.n_mels ||
      a.rate != b.rate || a.hop != b.hop) {
    mcm_err(err, "%s: the shard changed since the loader validated it (hint: do not rewrite shards during a run)",
            l->paths[i]);
    shard_close(s);
    return NULL;
  }
  keep_open(l, i, s);
  return s;
}

/* Shard index holding global id g (binary search over first[]). */
static int shard_of(const Loader *l, int64_t g) {
  int lo = 0, hi = l->n_shards - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (l->first[mid] <= g) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* Checks shard i (just opened) against the loader's options and the first shard. */
static int check_shard(Loader *l, int i, const Shard *s, McmErr *err) {
  ShardInfo a = shard_info(s);
  if (i == 0) {
    l->info = a;
  } else {
    ShardInfo b = l->info;
    if (a.frames != b.frames || a.n_mels != b.n_mels || a.rate != b.rate || a.hop != b.hop)
      return mcm_err(err, "%s: frames %d, n_mels %d, rate %d, hop %d, but %s has frames %d, n_mels %d, rate %d, hop %d "
                     "(hint: all shards of a run must come from the same ./prepare settings)", l->paths[i], a.frames,
                     a.n_mels, a.rate, a.hop, l->paths[0], b.frames, b.n_mels, b.rate, b.hop);
  }
  if (l->fields & LOAD_LATENT) {
    int d[3];
    if (!shard_latent_dims(s, &d[0], &d[1], &d[2]))
      return mcm_err(err, "%s: the shard has no latents, and the loader was asked for them (hint: run ./prepare "
                     "with the VAE weights)", l->paths[i]);
    if (i == 0) memcpy(l->lat, d, sizeof d);
    else if (memcmp(l->lat, d, sizeof d))
      return mcm_err(err, "%s: latents are [%d, %d, %d] per row, but %s has [%d, %d, %d]", l->paths[i], d[0], d[1],
                     d[2], l->paths[0], l->lat[0], l->lat[1], l->lat[2]);
  }
  if (l->fields & LOAD_TEXT_EMB) {
    int d = shard_text_emb_dim(s);
    if (d == 0)
      return mcm_err(err, "%s: the shard has no text embeddings, and the loader was asked for them (hint: run "
                     "./prepare with the CLAP weights)", l->paths[i]);
    if (i == 0) l->emb_dim = d;
    else if (d != l->emb_dim)
      return mcm_err(err, "%s: text embeddings have %d values per row, but %s has %d", l->paths[i], d, l->paths[0],
                     l->emb_dim);
  }
  if (l->fields & LOAD_AUDIO) {
    int S = shard_audio_samples(s);
    if (S == 0)
      return mcm_err(err, "%s: the shard has no audio, and the loader was asked for it (hint: run ./prepare with "
                     "[prepare] keep_audio = true)", l->paths[i]);
    if (i == 0) l->audio_samples = S;
    else if (S != l->audio_samples)
      return mcm_err(err, "%s: audio rows of %d samples, but %s has %d", l->paths[i], S, l->paths[0], l->audio_samples);
  }
  return 0;
}

static int open_all(Loader *l, McmErr *err) {
  l->first = CALLOC_CHECK((size_t)l->n_shards + 1, sizeof *l->first);
  l->open = CALLOC_CHECK((size_t)l->n_shards, sizeof *l->open);
  l->used = CALLOC_CHECK((size_t)l->n_shards, sizeof *l->used);
  for (int i = 0; i < l->n_shards; i++) {
    Shard *s = shard_open_flags(l->paths[i], l->o.skip_checksum ? SHARD_NO_VERIFY : 0, err);
    if (!s) return -1;
    if (check_shard(l, i, s, err) < 0) {
      shard_close(s);
      return -1;
    }
    l->first[i + 1] = l->first[i] + shard_count(s);
    keep_open(l, i, s);
  }
  l->N = l->first[l->n_shards];
  return 0;
}

/* ---------------------------------------------------------------- filling a batch */

static void slot_alloc(Loader *l, Slot *sl) {
  Batch *b = &sl->b;
  size_t B = (size_t)l->o.batch_size;
  b->index = CALLOC_CHECK(B, sizeof *b->index);
  if (l->fields & LOAD_MEL) b->mel = CALLOC_CHECK(B * (size_t)l->info.frames * (size_t)l->info.n_mels, sizeof(float));
  if (l->fields & LOAD_CAPTION) b->captions = CALLOC_CHECK(B, sizeof *b->captions);
  if (l->fields & LOAD_LATENT)
    b->latent = CALLOC_CHECK(B * (size_t)l->lat[0] * (size_t)l->lat[1] * (size_t)l->lat[2], sizeof(float));
  if (l->fields & LOAD_TEXT_EMB) b->text_emb = CALLOC_CHECK(B * (size_t)l->emb_dim, sizeof(float));
  if (l->fields & LOAD_AUDIO) b->audio = CALLOC_CHECK(B * (size_t)l->audio_samples, sizeof(float));
  b->audio_samples = l->fields & LOAD_AUDIO ? l->audio_samples : 0;
  b->frames = l->info.frames;
  b->n_mels = l->info.n_mels;
  if (l->fields & LOAD_LATENT) memcpy(b->latent_dims, l->lat, sizeof l->lat);
  b->emb_dim = l->fields & LOAD_TEXT_EMB ? l->emb_dim : 0;
}

static void slot_clear_captions(Slot *sl) {
  if (!sl->b.captions) return;
  for (int k = 0; k < sl->b.n; k++) {
    free(sl->b.captions[k]);
    sl->b.captions[k] = NULL;
  }
}

static void slot_free(Slot *sl) {
  slot_clear_captions(sl);
  free(sl->b.index);
  free(sl->b.mel);
  free(sl->b.captions);
  free(sl->b.latent);
  free(sl->b.text_emb);
  free(sl->b.audio);
}

static int read_sample(Loader *l, Batch *b, int k, int64_t g, McmErr *err) {
  int i = shard_of(l, g);
  int64_t row = g - l->first[i];
  Shard *s = get_shard(l, i, err);
  if (!s) return -1;
  size_t mel_row = (size_t)l->info.frames * (size_t)l->info.n_mels;
  size_t lat_row = (size_t)l->lat[0] * (size_t)l->lat[1] * (size_t)l->lat[2];
  if (shard_read(s, row, b->mel ? b->mel + (size_t)k * mel_row : NULL, b->captions ? &b->captions[k] : NULL, err) < 0)
    return -1;
  if (b->latent && shard_read_latent(s, row, b->latent + (size_t)k * lat_row, err) < 0) return -1;
  if (b->text_emb && shard_read_text_emb(s, row, b->text_emb + (size_t)k * (size_t)l->emb_dim, err) < 0) return -1;
  if (b->audio && shard_read_audio(s, row, b->audio + (size_t)k * (size_t)l->audio_samples, err) < 0) return -1;
  return 0;
}

/* Fills sl with batch (epoch, step) of this rank. */
static void fill(Loader *l, Slot *sl, int64_t epoch, int64_t step) {
  if (l->perm_epoch != epoch) {
    loader_permutation(l->o.seed, epoch, l->N, l->perm);
    l->perm_epoch = epoch;
  }
  slot_clear_captions(sl);
  Batch *b = &sl->b;
  b->n = 0;
  b->epoch = epoch;
  b->step_in_epoch = step;
  sl->failed = false;
  const int64_t W = l->o.world, B = l->o.batch_size;
  for (int64_t k = 0; k < B; k++) {
    int64_t q = step * W * B + k * W + l->o.rank;
    if (q >= l->N) break;
    b->index[b->n] = l->perm[q];
    int rc = read_sample(l, b, b->n, l->perm[q], &sl->err);
    b->n++; /* a failed read may have allocated this caption: count it so it is freed */
    if (rc < 0) {
      sl->failed = true;
      return;
    }
  }
}

static void advance(const Loader *l, int64_t *epoch, int64_t *step) {
  if (++*step == l->S) {
    *step = 0;
    ++*epoch;
  }
}

/* ---------------------------------------------------------------- prefetch thread */

static void *producer(void *arg) {
  Loader *l = arg;
  h5_quiet(); /* HDF5's error printing is per thread in a thread-safe build */
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    if (l->ready + (l->held ? 1 : 0) >= l->nslots) {
      pthread_cond_wait(&l->cv_space, &l->mu);
      continue;
    }
    Slot *sl = &l->slots[(l->head + l->ready) % l->nslots];
    int64_t e = l->prod_epoch, s = l->prod_step;
    pthread_mutex_unlock(&l->mu);
    fill(l, sl, e, s);
    pthread_mutex_lock(&l->mu);
    advance(l, &l->prod_epoch, &l->prod_step);
    l->ready++;
    pthread_cond_signal(&l->cv_ready);
    if (sl->failed) break; /* the caller gets the error; nothing after it */
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static void start_thread(Loader *l) {
  l->head = l->ready = 0;
  l->held = false;
  l->stop = false;
  if (!l->threaded) return;
  int rc = pthread_create(&l->thread, NULL, producer, l);
  MCM_CHECK(rc == 0, "pthread_create for the loader's prefetch thread failed: %s", strerror(rc));
  l->running = true;
}

static void stop_thread(Loader *l) {
  if (!l->running) return;
  pthread_mutex_lock(&l->mu);
  l->stop = true;
  pthread_cond_broadcast(&l->cv_space);
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->thread, NULL);
  l->running = false;
}

/* ---------------------------------------------------------------- public */

static int check_options(const LoaderOptions *o, McmErr *err) {
  if (!o->shard_glob_or_dir || !o->shard_glob_or_dir[0])
    return mcm_err(err, "loader: no shards given (hint: set data.train_shards to a directory or a glob)");
  if (o->batch_size < 1) return mcm_err(err, "loader: batch size %d (must be >= 1)", o->batch_size);
  if (o->world < 1 || o->rank < 0 || o->rank >= o->world)
    return mcm_err(err, "loader: rank %d of world %d (need world >= 1 and 0 <= rank < world)", o->rank, o->world);
  if (o->prefetch < 0 || o->prefetch > LOADER_MAX_PREFETCH)
    return mcm_err(err, "loader: prefetch %d (must be 0 .. %d)", o->prefetch, LOADER_MAX_PREFETCH);
  if (o->fields & ~(unsigned)(LOAD_MEL | LOAD_CAPTION | LOAD_LATENT | LOAD_TEXT_EMB | LOAD_AUDIO))
    return mcm_err(err, "loader: unknown fields bits 0x%x", o->fields);
  return 0;
}

Loader *loader_create(const LoaderOptions *o, McmErr *err) {
  h5_quiet();
  if (check_options(o, err) < 0) return NULL;
  Loader *l = CALLOC_CHECK(1, sizeof *l);
  l->o = *o;
  l->o.shard_glob_or_dir = NULL; /* the caller's string may not outlive the loader */
  l->fields = o->fields ? o->fields : LOAD_MEL | LOAD_CAPTION;
  l->perm_epoch = -1;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv_ready, NULL);
  pthread_cond_init(&l->cv_space, NULL);
  if (find_shards(o->shard_glob_or_dir, &l->paths, &l->n_shards, err) < 0 || open_all(l, err) < 0) {
    loader_destroy(l);
    return NULL;
  }
  const int64_t WB = (int64_t)o->world * o->batch_size;
  if (l->N == 0) {
    mcm_err(err, "%s: the %d shard%s hold no samples", o->shard_glob_or_dir, l->n_shards, l->n_shards == 1 ? "" : "s");
    loader_destroy(l);
    return NULL;
  }
  if (o->drop_last && l->N < WB) {
    mcm_err(err, "%s: %lld samples, fewer than world %d x batch %d: with drop_last no batch is left (hint: use a "
            "smaller batch or turn drop_last off)", o->shard_glob_or_dir, (long long)l->N, o->world, o->batch_size);
    loader_destroy(l);
    return NULL;
  }
  l->S = o->drop_last ? l->N / WB : (l->N + WB - 1) / WB;
  l->perm = MALLOC_CHECK((size_t)l->N * sizeof *l->perm);
  hbool_t ts = 0;
  H5_CHECK(H5is_library_threadsafe(&ts));
  l->threaded = o->prefetch > 0 && ts;
  l->nslots = l->threaded ? o->prefetch + 1 : 1;
  l->slots = CALLOC_CHECK((size_t)l->nslots, sizeof *l->slots);
  for (int i = 0; i < l->nslots; i++) slot_alloc(l, &l->slots[i]);
  start_thread(l);
  return l;
}

const Batch *loader_next(Loader *l, McmErr *err) {
  if (l->failed) {
    if (err) *err = l->fail;
    return NULL;
  }
  Slot *sl;
  if (!l->threaded) {
    sl = &l->slots[0];
    fill(l, sl, l->next_epoch, l->next_step);
  } else {
    pthread_mutex_lock(&l->mu);
    if (l->held) {
      l->held = false;
      pthread_cond_signal(&l->cv_space);
    }
    while (l->ready == 0) pthread_cond_wait(&l->cv_ready, &l->mu);
    sl = &l->slots[l->head];
    l->head = (l->head + 1) % l->nslots;
    l->ready--;
    l->held = true;
    pthread_mutex_unlock(&l->mu);
  }
  if (sl->failed) {
    l->failed = true;
    l->fail = sl->err;
    if (err) *err = l->fail;
    return NULL;
  }
  MCM_CHECK(sl->b.epoch == l->next_epoch && sl->b.step_in_epoch == l->next_step,
            "loader: batch (%lld, %lld) arrived, expected (%lld, %lld)", (long long)sl->b.epoch,
            (long long)sl->b.step_in_epoch, (long long)l->next_epoch, (long long)l->next_step);
  advance(l, &l->next_epoch, &l->next_step);
  return &sl->b;
}

int loader_position(const Loader *l, LoaderPosition *pos) {
  *pos = (LoaderPosition){.epoch = l->next_epoch,
                          .step = l->next_step,
                          .n_samples = l->N,
                          .world = l->o.world,
                          .batch_size = l->o.batch_size,
                          .seed = l->o.seed};
  return 0;
}

int loader_seek(Loader *l, const LoaderPosition *pos, McmErr *err) {
  if (pos->n_samples != l->N || pos->world != l->o.world || pos->batch_size != l->o.batch_size ||
      pos->seed != l->o.seed)
    return mcm_err(err, "loader: the saved data position is for %lld samples, world %lld, batch %lld, seed %llu; "
                   "this run has %lld samples, world %d, batch %d, seed %llu, so resuming would not continue the "
                   "same batches (hint: resume with the same shards, GPU count, batch size and seed)",
                   (long long)pos->n_samples, (long long)pos->world, (long long)pos->batch_size,
                   (unsigned long long)pos->seed, (long long)l->N, l->o.world, l->o.batch_size,
                   (unsigned long long)l->o.seed);
  if (pos->epoch < 0 || pos->epoch > (int64_t)UINT32_MAX || pos->step < 0 || pos->step >= l->S)
    return mcm_err(err, "loader: bad saved data position epoch %lld, step %lld (an epoch has %lld steps)",
                   (long long)pos->epoch, (long long)pos->step, (long long)l->S);
  stop_thread(l);
  l->failed = false;
  l->next_epoch = l->prod_epoch = pos->epoch;
  l->next_step = l->prod_step = pos->step;
  start_thread(l);
  return 0;
}

void loader_destroy(Loader *l) {
  if (!l) return;
  stop_thread(l);
  for (int i = 0; i < l->nslots; i++) slot_free(&l->slots[i]);
  free(l->slots);
  for (int i = 0; i < l->n_shards; i++) {
    if (l->open) shard_close(l->open[i]);
    free(l->paths[i]);
  }
  free(l->paths);
  free(l->open);
  free(l->used);
  free(l->first);
  free(l->perm);
  pthread_cond_destroy(&l->cv_ready);
  pthread_cond_destroy(&l->cv_space);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

int64_t loader_sample_count(const Loader *l) { return l->N; }
int64_t loader_steps_per_epoch(const Loader *l) { return l->S; }
ShardInfo loader_info(const Loader *l) { return l->info; }
int loader_shard_count(const Loader *l) { return l->n_shards; }
int loader_text_emb_dim(const Loader *l) { return l->fields & LOAD_TEXT_EMB ? l->emb_dim : 0; }
int loader_audio_samples(const Loader *l) { return l->fields & LOAD_AUDIO ? l->audio_samples : 0; }

bool loader_latent_dims(const Loader *l, int *C, int *T, int *F) {
  if (!(l->fields & LOAD_LATENT)) return false;
  if (C) *C = l->lat[0];
  if (T) *T = l->lat[1];
  if (F) *F = l->lat[2];
  return true;
}

const char *loader_sample_origin(const Loader *l, int64_t g, int64_t *row) {
  MCM_CHECK(g >= 0 && g < l->N, "loader_sample_origin: sample %lld out of range [0, %lld)", (long long)g,
            (long long)l->N);
  int i = shard_of(l, g);
  if (row) *row = g - l->first[i];
  return l->paths[i];
}

/* ---------------------------------------------------------------- to tensors */

static void to_tensor(Ctx *ctx, const char *what, const float *src, int n, int ndim, const int64_t *row, Tensor *out) {
  MCM_CHECK(src, "loader: the batch holds no %s (hint: ask for it in LoaderOptions.fields)", what);
  bool same = out->ndim == ndim + 1 && out->shape[0] == n;
  for (int k = 0; same && k < ndim; k++) same = out->shape[k + 1] == row[k];
  int64_t want[MCM_MAX_DIMS] = {n};
  for (int k = 0; k < ndim; k++) want[k + 1] = row[k];
  MCM_CHECK(same, "loader: %s of a batch is %s, the tensor is %s", what, shape_str((char[96]){0}, 96, ndim + 1, want),
            TENSOR_SHAPE_STR(out));
  if (n > 0) tensor_from_host_f32(ctx, out, src);
}

void loader_batch_to_tensor(Ctx *ctx, const Batch *b, Tensor *out) {
  to_tensor(ctx, "mel", b->mel, b->n, 3, (int64_t[]){1, b->frames, b->n_mels}, out);
}

void loader_latent_to_tensor(Ctx *ctx, const Batch *b, Tensor *out) {
  to_tensor(ctx, "latent", b->latent, b->n, 3, (int64_t[]){b->latent_dims[0], b->latent_dims[1], b->latent_dims[2]},
            out);
}

void loader_text_emb_to_tensor(Ctx *ctx, const Batch *b, Tensor *out) {
  to_tensor(ctx, "text_emb", b->text_emb, b->n, 1, (int64_t[]){b->emb_dim}, out);
}

void loader_audio_to_tensor(Ctx *ctx, const Batch *b, Tensor *out) {
  to_tensor(ctx, "audio", b->audio, b->n, 1, (int64_t[]){b->audio_samples}, out);
}
