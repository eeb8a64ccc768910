/* Tests for data/loader: the epoch permutation, the exact rank split (world 1, 2, 3 with N
 * not divisible by world, drop_last on and off), reshuffling, exact resume through a saved
 * position (also in a new loader), prefetch-independence, bad shards refusing to start,
 * read errors mid-run, and batches copied into tensors. */
#include <hdf5.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "data/loader.h"
#include "kernels/context.h"
#include "tests/test.h"

#define FR 2
#define NM 3
static const ShardInfo INFO = {FR, NM, 16000, 160};

/* ---------------------------------------------------------------- helpers */

/* Global sample g's mel row: g, g + 0.25, g + 0.5, ... (so a batch names its own ids). */
static void mel_of(int64_t g, float *row) {
  for (int i = 0; i < FR * NM; i++) row[i] = (float)g + 0.25f * (float)i;
}

/* Shards "<dir>/s00.h5", "s01.h5", ... with sizes[i] rows; ids count up across them. */
static void make_shards(const char *dir, int n_shards, const int *sizes) {
  mkdir(dir, 0777);
  int64_t g = 0;
  McmErr err = {{0}};
  for (int i = 0; i < n_shards; i++) {
    char path[600], cap[64];
    snprintf(path, sizeof path, "%s/s%02d.h5", dir, i);
    ShardWriter *w = shard_create(path, &INFO, &err);
    ASSERT(w, "%s", err.msg);
    for (int r = 0; r < sizes[i]; r++, g++) {
      float row[FR * NM];
      mel_of(g, row);
      snprintf(cap, sizeof cap, "clip %lld", (long long)g);
      ASSERT(shard_append(w, row, cap, "src.wav", r, &err) == 0, "%s", err.msg);
    }
    ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
  }
}

static LoaderOptions opts(const char *dir, int B, int rank, int world, bool drop_last, int prefetch) {
  return (LoaderOptions){.shard_glob_or_dir = dir, .batch_size = B, .seed = 1234, .rank = rank, .world = world,
                         .drop_last = drop_last, .prefetch = prefetch};
}

static Loader *make_loader(const LoaderOptions *o) {
  McmErr err = {{0}};
  Loader *l = loader_create(o, &err);
  ASSERT(l, "loader_create: %s", err.msg);
  return l;
}

/* Checks that the batch's mel rows and captions belong to its ids. */
static void check_content(const Batch *b) {
  for (int k = 0; k < b->n; k++) {
    float want[FR * NM];
    mel_of(b->index[k], want);
    EXPECT(!memcmp(b->mel + k * FR * NM, want, sizeof want), "mel of sample %lld", (long long)b->index[k]);
    char cap[64];
    snprintf(cap, sizeof cap, "clip %lld", (long long)b->index[k]);
    EXPECT(b->captions[k] && !strcmp(b->captions[k], cap), "caption of %lld: '%s'", (long long)b->index[k],
           b->captions[k] ? b->captions[k] : "(null)");
  }
}

/* The ids of `steps` batches, -1 padded to B each; also epoch and step per batch. */
static void run(Loader *l, int steps, int B, int64_t *ids, int *ns, int64_t *epochs, int64_t *stepnos) {
  McmErr err = {{0}};
  for (int s = 0; s < steps; s++) {
    const Batch *b = loader_next(l, &err);
    ASSERT(b, "loader_next: %s", err.msg);
    check_content(b);
    for (int k = 0; k < B; k++) ids[s * B + k] = k < b->n ? b->index[k] : -1;
    if (ns) ns[s] = b->n;
    if (epochs) epochs[s] = b->epoch;
    if (stepnos) stepnos[s] = b->step_in_epoch;
  }
}

/* ---------------------------------------------------------------- permutation */

TEST(loader_permutation_is_a_uniform_deterministic_shuffle) {
  for (int64_t n = 1; n <= 1000; n = n * 7 + 1) {
    int64_t *p = malloc((size_t)n * sizeof *p), *q = malloc((size_t)n * sizeof *q);
    char *seen = calloc((size_t)n, 1);
    loader_permutation(5, 3, n, p);
    for (int64_t i = 0; i < n; i++) {
      ASSERT(p[i] >= 0 && p[i] < n && !seen[p[i]], "n %lld: not a permutation at %lld", (long long)n, (long long)i);
      seen[p[i]] = 1;
    }
    loader_permutation(5, 3, n, q);
    EXPECT(!memcmp(p, q, (size_t)n * sizeof *p), "n %lld: same (seed, epoch) gave another permutation", (long long)n);
    if (n >= 8) {
      loader_permutation(5, 4, n, q);
      EXPECT(memcmp(p, q, (size_t)n * sizeof *p), "n %lld: epochs 3 and 4 gave the same permutation", (long long)n);
      loader_permutation(6, 3, n, q);
      EXPECT(memcmp(p, q, (size_t)n * sizeof *p), "n %lld: seeds 5 and 6 gave the same permutation", (long long)n);
    }
    free(p);
    free(q);
    free(seen);
  }
  /* All 6 orders of 3 items, over 6000 epochs, each near 1000 (sd ~29; allow 5 sd). */
  int count[6] = {0};
  for (int64_t e = 0; e < 6000; e++) {
    int64_t p[3];
    loader_permutation(42, e, 3, p);
    int code = (int)(p[0] * 2 + (p[1] > p[2] ? 1 : 0)); /* p[0] and the order of the rest */
    count[code]++;
  }
  for (int c = 0; c < 6; c++) EXPECT(count[c] > 855 && count[c] < 1145, "order %d seen %d times of 6000", c, count[c]);
}

/* ---------------------------------------------------------------- rank split */

/* For one (world, batch, drop_last): every rank's batches in epochs 0 and 1 follow the
 * rule in loader.h exactly, and the union over ranks per epoch is the expected set. */
static void check_split(const char *dir, int64_t N, int W, int B, bool drop_last) {
  const int64_t WB = (int64_t)W * B;
  const int64_t S = drop_last ? N / WB : (N + WB - 1) / WB;
  int64_t *perm = malloc((size_t)N * sizeof *perm);
  int *hits = calloc((size_t)N, sizeof *hits);
  int64_t *ids = malloc((size_t)(2 * S * B) * sizeof *ids);
  int *ns = malloc((size_t)(2 * S) * sizeof *ns);
  int64_t *ep = malloc((size_t)(2 * S) * sizeof *ep), *st = malloc((size_t)(2 * S) * sizeof *st);
  for (int epoch = 0; epoch < 2; epoch++) {
    memset(hits, 0, (size_t)N * sizeof *hits);
    loader_permutation(1234, epoch, N, perm);
    for (int r = 0; r < W; r++) {
      LoaderOptions o = opts(dir, B, r, W, drop_last, 0);
      Loader *l = make_loader(&o);
      ASSERT(loader_sample_count(l) == N, "N");
      ASSERT(loader_steps_per_epoch(l) == S, "W %d B %d drop %d: %lld steps, expected %lld", W, B, drop_last,
             (long long)loader_steps_per_epoch(l), (long long)S);
      run(l, (int)(2 * S), B, ids, ns, ep, st);
      loader_destroy(l);
      for (int64_t s = 0; s < S; s++) {
        int64_t at = epoch * S + s;
        EXPECT(ep[at] == epoch && st[at] == s, "batch %lld is (%lld, %lld)", (long long)at, (long long)ep[at],
               (long long)st[at]);
        int want_n = 0;
        for (int k = 0; k < B; k++) {
          int64_t q = s * WB + (int64_t)k * W + r;
          if (q >= N) break;
          want_n++;
          EXPECT(ids[at * B + k] == perm[q], "W %d B %d drop %d rank %d epoch %d step %lld slot %d: id %lld, rule "
                 "says perm[%lld] = %lld", W, B, drop_last, r, epoch, (long long)s, k, (long long)ids[at * B + k],
                 (long long)q, (long long)perm[q]);
          if (ids[at * B + k] >= 0 && ids[at * B + k] < N) hits[ids[at * B + k]]++;
        }
        EXPECT(ns[at] == want_n, "rank %d step %lld: n %d, expected %d", r, (long long)s, ns[at], want_n);
        if (drop_last) EXPECT(ns[at] == B, "drop_last gave a short batch");
      }
    }
    int64_t used = 0;
    for (int64_t g = 0; g < N; g++) {
      EXPECT(hits[g] <= 1, "W %d B %d drop %d epoch %d: sample %lld seen %d times", W, B, drop_last, epoch,
             (long long)g, hits[g]);
      used += hits[g];
    }
    EXPECT(used == (drop_last ? S * WB : N), "W %d B %d drop %d: %lld samples used in epoch %d", W, B, drop_last,
           (long long)used, epoch);
    if (!drop_last)
      for (int64_t g = 0; g < N; g++) EXPECT(hits[g] == 1, "sample %lld lost", (long long)g);
  }
  free(perm);
  free(hits);
  free(ids);
  free(ns);
  free(ep);
  free(st);
}

TEST(loader_ranks_split_each_epoch_exactly) {
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 3, (int[]){3, 0, 8}); /* N = 11, an empty shard in the middle */
  for (int W = 1; W <= 3; W++)
    for (int B = 1; B <= 4; B += 3)
      for (int d = 0; d < 2; d++)
        if (!d || W * B <= 11) check_split(dir, 11, W, B, d); /* drop_last needs N >= W·B */
  check_split(dir, 11, 2, 2, false);
}

TEST(loader_short_and_empty_last_batches) {
  /* N = 10, W = 3, B = 3: step 0 takes 9 positions, step 1 the last one: rank 0 gets one
   * sample, ranks 1 and 2 an empty batch, and all three run 2 steps. */
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 1, (int[]){10});
  McmErr err = {{0}};
  for (int r = 0; r < 3; r++) {
    LoaderOptions o = opts(dir, 3, r, 3, false, 2);
    Loader *l = make_loader(&o);
    EXPECT(loader_steps_per_epoch(l) == 2, "steps");
    const Batch *b = loader_next(l, &err);
    ASSERT(b && b->n == 3, "rank %d step 0: n %d", r, b ? b->n : -1);
    b = loader_next(l, &err);
    ASSERT(b && b->n == (r == 0 ? 1 : 0) && b->step_in_epoch == 1, "rank %d step 1: n %d", r, b ? b->n : -1);
    b = loader_next(l, &err);
    ASSERT(b && b->epoch == 1 && b->step_in_epoch == 0 && b->n == 3, "rank %d: epoch 1 did not follow", r);
    loader_destroy(l);
  }
  /* drop_last: 1 step per epoch, the tail of 1 dropped. */
  LoaderOptions o = opts(dir, 3, 2, 3, true, 0);
  Loader *l = make_loader(&o);
  EXPECT(loader_steps_per_epoch(l) == 1, "drop_last steps");
  loader_destroy(l);
}

TEST(loader_reshuffles_per_epoch_and_repeats_per_seed) {
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 2, (int[]){9, 7}); /* N = 16, B = 4: 4 steps per epoch */
  int64_t a[3 * 16], b[3 * 16];
  LoaderOptions o = opts(dir, 4, 0, 1, true, 2);
  Loader *l = make_loader(&o);
  run(l, 12, 4, a, NULL, NULL, NULL);
  loader_destroy(l);
  l = make_loader(&o);
  run(l, 12, 4, b, NULL, NULL, NULL);
  loader_destroy(l);
  EXPECT(!memcmp(a, b, sizeof a), "the same seed gave another sequence");
  EXPECT(memcmp(a, a + 16, 16 * sizeof *a), "epochs 0 and 1 in the same order");
  EXPECT(memcmp(a + 16, a + 32, 16 * sizeof *a), "epochs 1 and 2 in the same order");
  o.seed = 99;
  l = make_loader(&o);
  run(l, 12, 4, b, NULL, NULL, NULL);
  loader_destroy(l);
  EXPECT(memcmp(a, b, sizeof a), "seeds 1234 and 99 gave the same sequence");
}

TEST(loader_prefetch_does_not_change_batches) {
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 3, (int[]){5, 6, 2}); /* N = 13, W 2, B 3: 3 steps, the last short */
  enum { STEPS = 10, B = 3 };
  int64_t ref[STEPS * B], got[STEPS * B];
  int nref[STEPS], ngot[STEPS];
  LoaderOptions o = opts(dir, B, 1, 2, false, 0);
  Loader *l = make_loader(&o);
  run(l, STEPS, B, ref, nref, NULL, NULL);
  loader_destroy(l);
  for (int pf = 1; pf <= 5; pf += 2) {
    o.prefetch = pf;
    l = make_loader(&o);
    run(l, STEPS, B, got, ngot, NULL, NULL);
    loader_destroy(l);
    EXPECT(!memcmp(ref, got, sizeof ref) && !memcmp(nref, ngot, sizeof nref), "prefetch %d changed the batches", pf);
  }
}

TEST(loader_seek_resumes_the_same_batches) {
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 2, (int[]){7, 6}); /* N = 13, W 2, B 2: 4 steps per epoch */
  enum { B = 2, AFTER = 9 };
  for (int pf = 0; pf <= 3; pf += 3) {
    LoaderOptions o = opts(dir, B, 1, 2, false, pf);
    Loader *l = make_loader(&o);
    int64_t skip[5 * B], want[AFTER * B], got[AFTER * B];
    run(l, 5, B, skip, NULL, NULL, NULL); /* into epoch 1 */
    LoaderPosition pos;
    ASSERT(loader_position(l, &pos) == 0, "position");
    EXPECT(pos.epoch == 1 && pos.step == 1, "position (%lld, %lld), expected (1, 1)", (long long)pos.epoch,
           (long long)pos.step);
    run(l, AFTER, B, want, NULL, NULL, NULL); /* crosses into epoch 3 */

    McmErr err = {{0}};
    ASSERT(loader_seek(l, &pos, &err) == 0, "%s", err.msg); /* back, in the same loader */
    run(l, AFTER, B, got, NULL, NULL, NULL);
    EXPECT(!memcmp(want, got, sizeof want), "prefetch %d: seek in the same loader changed the sequence", pf);
    loader_destroy(l);

    l = make_loader(&o); /* a restarted run */
    ASSERT(loader_seek(l, &pos, &err) == 0, "%s", err.msg);
    run(l, AFTER, B, got, NULL, NULL, NULL);
    EXPECT(!memcmp(want, got, sizeof want), "prefetch %d: a new loader did not resume the sequence", pf);

    /* Positions from another setup are refused, with the loader still usable. */
    LoaderPosition bad = pos;
    bad.world = 4;
    EXPECT(loader_seek(l, &bad, &err) < 0, "a position for world 4 accepted");
    EXPECT_STR_CONTAINS(err.msg, "world 4");
    bad = pos;
    bad.n_samples = 14;
    EXPECT(loader_seek(l, &bad, &err) < 0, "a position for 14 samples accepted");
    bad = pos;
    bad.seed = 1;
    EXPECT(loader_seek(l, &bad, &err) < 0, "a position for another seed accepted");
    bad = pos;
    bad.step = 4;
    EXPECT(loader_seek(l, &bad, &err) < 0, "step 4 of a 4-step epoch accepted");
    EXPECT_STR_CONTAINS(err.msg, "4 steps");
    ASSERT(loader_next(l, &err), "loader unusable after refused seeks: %s", err.msg);
    loader_destroy(l);
  }
}

/* ---------------------------------------------------------------- bad input */

static void expect_create_fails(const LoaderOptions *o, const char *needle) {
  McmErr err = {{0}};
  Loader *l = loader_create(o, &err);
  EXPECT(!l, "loader_create succeeded, expected an error containing '%s'", needle);
  loader_destroy(l);
  EXPECT_STR_CONTAINS(err.msg, needle);
}

TEST(loader_refuses_bad_shards_and_options) {
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 2, (int[]){4, 4});
  LoaderOptions o = opts(dir, 2, 0, 1, false, 1);

  /* A damaged shard (data altered behind its checksum) stops the loader, naming it. */
  char bad[600];
  snprintf(bad, sizeof bad, "%s/s01.h5", dir);
  h5_quiet();
  hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT(f >= 0, "open");
  uint64_t wrong = 7;
  hid_t a = H5Aopen(f, "mel_fnv1a64", H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_UINT64, &wrong);
  H5Aclose(a);
  H5Fclose(f);
  expect_create_fails(&o, bad);
  expect_create_fails(&o, "checksum");
  o.skip_checksum = true; /* structure only: starts */
  Loader *l = make_loader(&o);
  EXPECT(loader_shard_count(l) == 2 && loader_sample_count(l) == 8, "counts");
  loader_destroy(l);
  o.skip_checksum = false;

  /* Not HDF5, under a shard name. */
  const char *d2 = TEST_PATH("d2");
  make_shards(d2, 1, (int[]){3});
  char junk[600];
  snprintf(junk, sizeof junk, "%s/zz.h5", d2);
  FILE *fp = fopen(junk, "w");
  fputs("junk", fp);
  fclose(fp);
  o.shard_glob_or_dir = d2;
  expect_create_fails(&o, "zz.h5: not an HDF5 file");
  unlink(junk);
  /* A killed writer's temporary is skipped, in a directory and in a glob. */
  snprintf(junk, sizeof junk, "%s/s01.h5.tmp", d2);
  fp = fopen(junk, "w");
  fputs("partial", fp);
  fclose(fp);
  l = make_loader(&o);
  EXPECT(loader_shard_count(l) == 1, "the .tmp was taken as a shard");
  loader_destroy(l);
  char pattern[600];
  snprintf(pattern, sizeof pattern, "%s/s*", d2);
  o.shard_glob_or_dir = pattern;
  l = make_loader(&o);
  EXPECT(loader_shard_count(l) == 1, "the glob took the .tmp as a shard");
  loader_destroy(l);

  /* Shards from different settings. */
  const char *d3 = TEST_PATH("d3");
  make_shards(d3, 1, (int[]){3});
  McmErr err = {{0}};
  char other[600];
  snprintf(other, sizeof other, "%s/s09.h5", d3);
  ShardWriter *w = shard_create(other, &(ShardInfo){FR, NM, 22050, 160}, &err);
  ASSERT(w, "%s", err.msg);
  float row[FR * NM] = {0};
  ASSERT(shard_append(w, row, "c", "s", 0, &err) == 0 && shard_commit(w, &err) == 0, "%s", err.msg);
  o.shard_glob_or_dir = d3;
  expect_create_fails(&o, "s09.h5: frames 2, n_mels 3, rate 22050");
  expect_create_fails(&o, "same ./prepare settings");

  /* Nothing to load. */
  o.shard_glob_or_dir = TEST_PATH("nothing/*.h5");
  expect_create_fails(&o, "no shard files match");
  const char *d4 = TEST_PATH("d4");
  mkdir(d4, 0777);
  o.shard_glob_or_dir = d4;
  expect_create_fails(&o, "no shards in this directory");
  const char *d5 = TEST_PATH("d5");
  make_shards(d5, 2, (int[]){0, 0});
  o.shard_glob_or_dir = d5;
  expect_create_fails(&o, "hold no samples");
  o.shard_glob_or_dir = dir;
  o.skip_checksum = true;
  o.drop_last = true;
  o.batch_size = 5;
  o.world = 2;
  expect_create_fails(&o, "fewer than world 2 x batch 5");
  o.drop_last = false;
  o.world = 1;

  /* Options. */
  LoaderOptions b = o;
  b.batch_size = 0;
  expect_create_fails(&b, "batch size 0");
  b = o;
  b.rank = 2;
  b.world = 2;
  expect_create_fails(&b, "rank 2 of world 2");
  b = o;
  b.prefetch = -1;
  expect_create_fails(&b, "prefetch -1");
  b = o;
  b.shard_glob_or_dir = "";
  expect_create_fails(&b, "no shards given");
  b = o;
  b.fields = LOAD_LATENT;
  expect_create_fails(&b, "has no latents");
}

TEST(loader_reports_a_read_error_mid_run) {
  /* A damaged chunk in a shard opened structure-only: the batch holding it fails with the
   * file named, and the error stays. */
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 1, (int[]){6});
  char path[600];
  snprintf(path, sizeof path, "%s/s00.h5", dir);
  h5_quiet();
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t ds = H5Dopen2(f, "mel", H5P_DEFAULT);
  hsize_t coord[3] = {4, 0, 0}, size = 0;
  haddr_t addr = 0;
  unsigned mask = 0;
  ASSERT(H5Dget_chunk_info_by_coord(ds, coord, &mask, &addr, &size) >= 0, "chunk info");
  H5Dclose(ds);
  H5Fclose(f);
  FILE *fp = fopen(path, "r+b");
  fseek(fp, (long)(addr + size / 2), SEEK_SET);
  int c = fgetc(fp);
  fseek(fp, (long)(addr + size / 2), SEEK_SET);
  fputc(c ^ 0x10, fp);
  fclose(fp);
  for (int pf = 0; pf <= 2; pf += 2) {
    LoaderOptions o = opts(dir, 6, 0, 1, false, pf);
    o.skip_checksum = true;
    Loader *l = make_loader(&o);
    McmErr err = {{0}};
    EXPECT(!loader_next(l, &err), "a damaged sample was delivered");
    EXPECT_STR_CONTAINS(err.msg, path);
    EXPECT_STR_CONTAINS(err.msg, "row");
    McmErr again = {{0}};
    EXPECT(!loader_next(l, &again) && !strcmp(again.msg, err.msg), "the error did not stay");
    loader_destroy(l);
  }
}

TEST(loader_many_shards_through_the_open_file_cache) {
  /* More shards than LOADER_MAX_OPEN: closed ones are reopened on demand. */
  enum { NS = LOADER_MAX_OPEN + 6 };
  int sizes[NS];
  for (int i = 0; i < NS; i++) sizes[i] = 1 + i % 2;
  int64_t N = 0;
  for (int i = 0; i < NS; i++) N += sizes[i];
  const char *dir = TEST_PATH("many");
  make_shards(dir, NS, sizes);
  LoaderOptions o = opts(dir, 8, 0, 1, false, 2);
  o.skip_checksum = true;
  Loader *l = make_loader(&o);
  ASSERT(loader_sample_count(l) == N, "N %lld", (long long)loader_sample_count(l));
  int64_t row = -1;
  const char *origin = loader_sample_origin(l, 2, &row);
  EXPECT(strstr(origin, "s01.h5") && row == 1, "origin of sample 2: %s row %lld", origin, (long long)row);
  char *seen = calloc((size_t)N, 1);
  McmErr err = {{0}};
  for (int64_t s = 0; s < loader_steps_per_epoch(l); s++) {
    const Batch *b = loader_next(l, &err);
    ASSERT(b, "%s", err.msg);
    check_content(b);
    for (int k = 0; k < b->n; k++) seen[b->index[k]]++;
  }
  for (int64_t g = 0; g < N; g++) EXPECT(seen[g] == 1, "sample %lld seen %d times", (long long)g, seen[g]);
  free(seen);
  loader_destroy(l);
}

/* ---------------------------------------------------------------- latents, tensors */

TEST(loader_latents_text_emb_and_tensors) {
  const char *dir = TEST_PATH("shards");
  make_shards(dir, 2, (int[]){3, 2});
  enum { C = 2, T = 2, F = 1, D = 3 };
  McmErr err = {{0}};
  int64_t g0 = 0;
  for (int i = 0; i < 2; i++) {
    int n = i == 0 ? 3 : 2;
    float lat[3 * C * T * F], emb[3 * D];
    for (int r = 0; r < n; r++) {
      for (int j = 0; j < C * T * F; j++) lat[r * C * T * F + j] = (float)(g0 + r) * 10 + (float)j;
      for (int j = 0; j < D; j++) emb[r * D + j] = -(float)(g0 + r) - 0.5f * (float)j;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/s%02d.h5", dir, i);
    ASSERT(shard_add_latents(path, lat, C, T, F, &err) == 0, "%s", err.msg);
    ASSERT(shard_add_text_emb(path, emb, D, &err) == 0, "%s", err.msg);
    g0 += n;
  }
  LoaderOptions o = opts(dir, 2, 0, 1, false, 1);
  o.fields = LOAD_LATENT | LOAD_TEXT_EMB;
  Loader *l = make_loader(&o);
  int c, t, f;
  EXPECT(loader_latent_dims(l, &c, &t, &f) && c == C && t == T && f == F, "latent dims");
  EXPECT(loader_text_emb_dim(l) == D, "emb dim");
  const Batch *b = loader_next(l, &err);
  ASSERT(b && b->n == 2, "%s", err.msg);
  EXPECT(!b->mel && !b->captions && b->latent && b->text_emb, "fields");
  for (int k = 0; k < 2; k++) {
    int64_t g = b->index[k];
    EXPECT(b->latent[k * C * T * F + 3] == (float)g * 10 + 3, "latent of %lld", (long long)g);
    EXPECT(b->text_emb[k * D + 2] == -(float)g - 1.0f, "emb of %lld", (long long)g);
  }
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *lt = tensor_new_persistent(ctx, DT_F32, SHAPE(2, C, T, F));
  Tensor *et = tensor_new_persistent(ctx, DT_F32, SHAPE(2, D));
  loader_latent_to_tensor(ctx, b, lt);
  loader_text_emb_to_tensor(ctx, b, et);
  EXPECT(!memcmp(lt->data, b->latent, sizeof(float) * 2 * C * T * F), "latent tensor");
  EXPECT(!memcmp(et->data, b->text_emb, sizeof(float) * 2 * D), "emb tensor");
  loader_destroy(l);

  /* Mel into a (n, 1, frames, n_mels) tensor, fp32 and bf16. */
  o.fields = 0;
  l = make_loader(&o);
  b = loader_next(l, &err);
  ASSERT(b, "%s", err.msg);
  Tensor *mt = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 1, FR, NM));
  loader_batch_to_tensor(ctx, b, mt);
  EXPECT(!memcmp(mt->data, b->mel, sizeof(float) * 2 * FR * NM), "mel tensor");
  Tensor *mb = tensor_new_persistent(ctx, DT_BF16, SHAPE(2, 1, FR, NM));
  loader_batch_to_tensor(ctx, b, mb);
  float back[2 * FR * NM];
  tensor_to_host_f32(ctx, mb, back);
  for (int i = 0; i < 2 * FR * NM; i++) EXPECT_NEAR(back[i], b->mel[i], fabs(b->mel[i]) / 128 + 1e-6);
  loader_destroy(l);
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(loader_tensor_shape_mismatch_is_a_bug, 1, "mel of a batch is [2, 1, 2, 3], the tensor is [3, 1, 2, 3]") {
  /* No allocations here: the exit must not show up as a leak under the sanitizers. */
  float mel[2 * FR * NM] = {0};
  Batch b = {.n = 2, .mel = mel, .frames = FR, .n_mels = NM};
  Tensor t;
  tensor_init_header(&t, DT_F32, DEV_CPU, 4, (int64_t[]){3, 1, FR, NM});
  loader_batch_to_tensor(NULL, &b, &t);
}
