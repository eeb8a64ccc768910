/* Tests for data/shard: bit-exact round trips (mel, UTF-8 captions, sources, offsets,
 * latents, text embeddings), the checksum definition, atomic commits (a writer killed
 * mid-shard leaves no shard), rows refused for their content, and every kind of bad shard
 * shard_open must refuse with a line naming the file. */
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "data/shard.h"
#include "tests/test.h"

#define FR 4 /* frames per row in these tests */
#define NM 3 /* mel bins */
static const ShardInfo INFO = {FR, NM, 16000, 160};

/* ---------------------------------------------------------------- helpers */

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Row r: finite values over many binades, both signs, with -0 and a subnormal. */
static void make_row(float *x, int n, int r) {
  uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(r + 1);
  for (int i = 0; i < n; i++) {
    double u = (double)(xorshift(&s) >> 11) / 9007199254740992.0;
    x[i] = (float)((u - 0.5) * ldexp(1.0, (int)(xorshift(&s) % 60) - 30));
  }
  x[0] = -0.0f;
  x[1] = 1e-40f;
}

static bool same_bits(const float *a, const float *b, int n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static char *tmp_of(const char *path) {
  static char buf[600];
  snprintf(buf, sizeof buf, "%s.tmp", path);
  return buf;
}

static const char *CAPTIONS[] = {"calm piano in C major, 72 bpm", "Ünïcödé café — 音楽 🎵", "", "drums\tand \"bass\"",
                                 "x"};
static const char *SOURCES[] = {"/data/a.wav", "/data/ß/b.flac", "c.ogg", "d.wav", "e.wav"};
static const int64_t OFFSETS[] = {0, 163840, 1, (int64_t)1 << 40, 7};

/* A committed shard of n rows (rows from make_row(r)). */
static void write_shard(const char *path, int n) {
  McmErr err = {{0}};
  ShardWriter *w = shard_create(path, &INFO, &err);
  ASSERT(w, "shard_create: %s", err.msg);
  float row[FR * NM];
  for (int r = 0; r < n; r++) {
    make_row(row, FR * NM, r);
    ASSERT(shard_append(w, row, CAPTIONS[r % 5], SOURCES[r % 5], OFFSETS[r % 5], &err) == 0, "append: %s", err.msg);
  }
  ASSERT(shard_commit(w, &err) == 0, "commit: %s", err.msg);
}

static hid_t open_rw(const char *path) {
  h5_quiet();
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT(f >= 0, "cannot open %s for writing", path);
  return f;
}

static void set_i64(const char *path, const char *name, int64_t v) {
  hid_t f = open_rw(path);
  if (H5Aexists(f, name) > 0) H5Adelete(f, name);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0, "set %s", name);
  H5Aclose(a);
  H5Sclose(sp);
  H5Fclose(f);
}

static void set_str(const char *path, const char *name, const char *v) {
  hid_t f = open_rw(path);
  if (H5Aexists(f, name) > 0) H5Adelete(f, name);
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT(a >= 0 && H5Awrite(a, t, &v) >= 0, "set %s", name);
  H5Aclose(a);
  H5Sclose(sp);
  H5Tclose(t);
  H5Fclose(f);
}

static void delete_obj(const char *path, const char *name) {
  hid_t f = open_rw(path);
  ASSERT(H5Ldelete(f, name, H5P_DEFAULT) >= 0, "delete %s", name);
  H5Fclose(f);
}

/* Replaces dataset `name` by a contiguous one of the given type and shape (zeros). */
static void replace_dataset(const char *path, const char *name, hid_t type, int rank, const hsize_t *dims) {
  hid_t f = open_rw(path);
  H5Ldelete(f, name, H5P_DEFAULT);
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t ds = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT(ds >= 0, "create %s", name);
  H5Dclose(ds);
  H5Sclose(sp);
  H5Fclose(f);
}

/* Overwrites mel row `row` through HDF5 (so its Fletcher32 is recomputed and stays valid). */
static void rewrite_mel_row(const char *path, int row, float value) {
  hid_t f = open_rw(path);
  hid_t ds = H5Dopen2(f, "mel", H5P_DEFAULT);
  hid_t fs = H5Dget_space(ds);
  hsize_t off[3] = {(hsize_t)row, 0, 0}, cnt[3] = {1, FR, NM};
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
  hid_t ms = H5Screate_simple(3, cnt, NULL);
  float buf[FR * NM];
  for (int i = 0; i < FR * NM; i++) buf[i] = value;
  ASSERT(H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf) >= 0, "rewrite row");
  H5Sclose(ms);
  H5Sclose(fs);
  H5Dclose(ds);
  H5Fclose(f);
}

/* Flips one byte in the middle of the stored (compressed) chunk of mel row `row`. */
static void flip_chunk_byte(const char *path, int row) {
  h5_quiet();
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t ds = H5Dopen2(f, "mel", H5P_DEFAULT);
  hsize_t coord[3] = {(hsize_t)row, 0, 0}, size = 0;
  haddr_t addr = 0;
  unsigned mask = 0;
  ASSERT(H5Dget_chunk_info_by_coord(ds, coord, &mask, &addr, &size) >= 0 && size > 8, "chunk info");
  H5Dclose(ds);
  H5Fclose(f);
  int fd = open(path, O_RDWR);
  ASSERT(fd >= 0, "open");
  unsigned char c;
  off_t at = (off_t)(addr + size / 2);
  ASSERT(pread(fd, &c, 1, at) == 1, "pread");
  c ^= 0x40;
  ASSERT(pwrite(fd, &c, 1, at) == 1, "pwrite");
  close(fd);
}

static void expect_refused(const char *path, const char *needle) {
  McmErr err = {{0}};
  Shard *s = shard_open(path, &err);
  EXPECT(!s, "%s opened, expected an error containing '%s'", path, needle);
  shard_close(s);
  EXPECT_STR_CONTAINS(err.msg, path);
  EXPECT_STR_CONTAINS(err.msg, needle);
}

/* ---------------------------------------------------------------- tests */

TEST(shard_fnv1a64_known_values) {
  /* Published FNV-1a 64-bit test vectors. */
  EXPECT(shard_fnv1a64(SHARD_FNV_BASIS, "", 0) == 0xcbf29ce484222325ull, "empty");
  EXPECT(shard_fnv1a64(SHARD_FNV_BASIS, "a", 1) == 0xaf63dc4c8601ec8cull, "a");
  EXPECT(shard_fnv1a64(SHARD_FNV_BASIS, "foobar", 6) == 0x85944171f73967e8ull, "foobar");
  /* Incremental = whole. */
  EXPECT(shard_fnv1a64(shard_fnv1a64(SHARD_FNV_BASIS, "foo", 3), "bar", 3) == 0x85944171f73967e8ull, "split");
}

TEST(shard_round_trip) {
  const char *path = TEST_PATH("s.h5");
  const int n = 7;
  write_shard(path, n);
  EXPECT(!file_exists(tmp_of(path)), "temporary left behind");
  McmErr err = {{0}};
  Shard *s = shard_open(path, &err);
  ASSERT(s, "shard_open: %s", err.msg);
  EXPECT(shard_count(s) == n, "count %lld", (long long)shard_count(s));
  ShardInfo i = shard_info(s);
  EXPECT(i.frames == FR && i.n_mels == NM && i.rate == 16000 && i.hop == 160, "info");
  EXPECT(!shard_latent_dims(s, NULL, NULL, NULL) && shard_text_emb_dim(s) == 0, "no optional datasets");
  uint64_t h = SHARD_FNV_BASIS;
  for (int r = 0; r < n; r++) {
    float want[FR * NM], got[FR * NM];
    make_row(want, FR * NM, r);
    h = shard_fnv1a64(h, want, sizeof want);
    char *cap = NULL, *src = NULL;
    int64_t off = -1;
    ASSERT(shard_read(s, r, got, &cap, &err) == 0, "read %d: %s", r, err.msg);
    ASSERT(shard_read_meta(s, r, &src, &off, &err) == 0, "meta %d: %s", r, err.msg);
    EXPECT(same_bits(want, got, FR * NM), "row %d not bit-exact", r);
    EXPECT(cap && !strcmp(cap, CAPTIONS[r % 5]), "caption %d: '%s'", r, cap ? cap : "(null)");
    EXPECT(src && !strcmp(src, SOURCES[r % 5]), "source %d: '%s'", r, src ? src : "(null)");
    EXPECT(off == OFFSETS[r % 5], "offset %d: %lld", r, (long long)off);
    free(cap);
    free(src);
  }
  /* Partial reads: mel only, caption only. */
  char *cap = NULL;
  ASSERT(shard_read(s, 1, NULL, &cap, &err) == 0, "%s", err.msg);
  EXPECT(cap && !strcmp(cap, CAPTIONS[1]), "caption only");
  free(cap);
  shard_close(s);

  /* The stored checksum is FNV-1a over the rows' fp32 bytes, as shard.h documents. */
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT(f >= 0, "h5 open");
  uint64_t stored = 0;
  hid_t a = H5Aopen(f, "mel_fnv1a64", H5P_DEFAULT);
  ASSERT(a >= 0 && H5Aread(a, H5T_NATIVE_UINT64, &stored) >= 0, "read checksum attribute");
  H5Aclose(a);
  H5Fclose(f);
  EXPECT(stored == h, "stored checksum %016llx, expected %016llx", (unsigned long long)stored, (unsigned long long)h);
}

TEST(shard_same_rows_same_bytes) {
  /* No timestamps: the same rows give the same file (reproducible ./prepare). */
  const char *a = TEST_PATH("a.h5"), *b = TEST_PATH("b.h5");
  write_shard(a, 3);
  sleep(1);
  write_shard(b, 3);
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  ASSERT(fa && fb, "open");
  int ca, cb;
  long pos = 0, diff = -1;
  do {
    ca = fgetc(fa), cb = fgetc(fb);
    if (ca != cb && diff < 0) diff = pos;
    pos++;
  } while (ca != EOF && cb != EOF);
  fclose(fa);
  fclose(fb);
  EXPECT(diff < 0, "files differ at byte %ld", diff);
}

TEST(shard_empty_is_valid) {
  const char *path = TEST_PATH("empty.h5");
  write_shard(path, 0);
  McmErr err = {{0}};
  Shard *s = shard_open(path, &err);
  ASSERT(s, "%s", err.msg);
  EXPECT(shard_count(s) == 0, "count");
  shard_close(s);
}

TEST(shard_commit_is_atomic) {
  const char *path = TEST_PATH("s.h5");
  write_shard(path, 2); /* the old shard */
  McmErr err = {{0}};
  ShardWriter *w = shard_create(path, &INFO, &err);
  ASSERT(w, "%s", err.msg);
  float row[FR * NM];
  make_row(row, FR * NM, 9);
  for (int r = 0; r < 5; r++) ASSERT(shard_append(w, row, "new", "n.wav", r, &err) == 0, "%s", err.msg);
  EXPECT(shard_writer_count(w) == 5, "writer count");
  EXPECT(file_exists(tmp_of(path)), "no temporary while writing");
  Shard *s = shard_open(path, &err); /* readers still see the old shard */
  ASSERT(s, "old shard unreadable while a new one is written: %s", err.msg);
  EXPECT(shard_count(s) == 2, "old count %lld", (long long)shard_count(s));
  shard_close(s);
  ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
  EXPECT(!file_exists(tmp_of(path)), "temporary left");
  s = shard_open(path, &err);
  ASSERT(s, "%s", err.msg);
  EXPECT(shard_count(s) == 5, "new count %lld", (long long)shard_count(s));
  shard_close(s);

  /* shard_abort keeps the published shard and removes the temporary. */
  w = shard_create(path, &INFO, &err);
  ASSERT(w, "%s", err.msg);
  ASSERT(shard_append(w, row, "x", "x.wav", 0, &err) == 0, "%s", err.msg);
  shard_abort(w);
  EXPECT(!file_exists(tmp_of(path)), "abort left the temporary");
  s = shard_open(path, &err);
  ASSERT(s, "%s", err.msg);
  EXPECT(shard_count(s) == 5, "abort changed the shard");
  shard_close(s);
  shard_abort(NULL);
}

TEST(shard_killed_writer_leaves_no_shard) {
  const char *path = TEST_PATH("killed.h5");
  pid_t pid = fork();
  ASSERT(pid >= 0, "fork");
  if (pid == 0) {
    McmErr err;
    ShardWriter *w = shard_create(path, &INFO, &err);
    if (!w) _exit(3);
    float row[FR * NM];
    for (int r = 0; r < 50; r++) {
      make_row(row, FR * NM, r);
      if (shard_append(w, row, "c", "s.wav", r, &err) < 0) _exit(4);
    }
    raise(SIGKILL); /* mid-shard: never committed */
    _exit(5);
  }
  int status = 0;
  ASSERT(waitpid(pid, &status, 0) == pid, "waitpid");
  ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child did not die by SIGKILL (status %d)", status);
  EXPECT(!file_exists(path), "a killed writer published a shard");
  EXPECT(file_exists(tmp_of(path)), "the killed writer left no temporary (did it write anything?)");
  McmErr err = {{0}};
  EXPECT(!shard_open(path, &err), "opened a shard that was never committed");
  EXPECT_STR_CONTAINS(err.msg, path);
  /* A new writer replaces the stale temporary. */
  write_shard(path, 3);
  EXPECT(!file_exists(tmp_of(path)), "stale temporary left");
  Shard *s = shard_open(path, &err);
  ASSERT(s, "%s", err.msg);
  EXPECT(shard_count(s) == 3, "count");
  shard_close(s);
}

TEST(shard_refused_rows_keep_the_writer) {
  const char *path = TEST_PATH("s.h5");
  McmErr err = {{0}};
  ShardWriter *w = shard_create(path, &INFO, &err);
  ASSERT(w, "%s", err.msg);
  float row[FR * NM];
  make_row(row, FR * NM, 0);
  ASSERT(shard_append(w, row, "ok", "a.wav", 0, &err) == 0, "%s", err.msg);

  float bad[FR * NM];
  memcpy(bad, row, sizeof row);
  bad[5] = NAN;
  EXPECT(shard_append(w, bad, "c", "nan.wav", 0, &err) < 0, "NaN accepted");
  EXPECT_STR_CONTAINS(err.msg, "not finite");
  EXPECT_STR_CONTAINS(err.msg, "nan.wav");
  bad[5] = INFINITY;
  EXPECT(shard_append(w, bad, "c", "inf.wav", 0, &err) < 0, "Inf accepted");
  EXPECT(shard_append(w, row, "bad \xC3\x28 utf8", "u.wav", 0, &err) < 0, "invalid UTF-8 accepted");
  EXPECT_STR_CONTAINS(err.msg, "UTF-8");
  EXPECT(shard_append(w, row, "overlong \xC0\xAF", "u.wav", 0, &err) < 0, "overlong UTF-8 accepted");
  EXPECT(shard_append(w, row, "surrogate \xED\xA0\x80", "u.wav", 0, &err) < 0, "surrogate accepted");
  EXPECT(shard_append(w, row, "truncated \xE2\x82", "u.wav", 0, &err) < 0, "truncated sequence accepted");
  EXPECT(shard_append(w, row, "c", "bad\xFF.wav", 0, &err) < 0, "non-UTF-8 source accepted");
  EXPECT(shard_append(w, row, "c", "neg.wav", -1, &err) < 0, "negative offset accepted");
  EXPECT_STR_CONTAINS(err.msg, "negative offset");
  EXPECT_STR_CONTAINS(err.msg, path);

  ASSERT(shard_append(w, row, NULL, NULL, 3, &err) == 0, "writer unusable after refused rows: %s", err.msg);
  ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
  Shard *s = shard_open(path, &err);
  ASSERT(s, "%s", err.msg);
  EXPECT(shard_count(s) == 2, "count %lld (refused rows must not be written)", (long long)shard_count(s));
  char *cap = NULL, *src = NULL;
  ASSERT(shard_read(s, 1, NULL, &cap, &err) == 0 && shard_read_meta(s, 1, &src, NULL, &err) == 0, "%s", err.msg);
  EXPECT(cap && !cap[0] && src && !src[0], "NULL caption/source should read back as \"\"");
  free(cap);
  free(src);
  shard_close(s);
}

TEST(shard_create_errors) {
  McmErr err = {{0}};
  ShardInfo bad = INFO;
  bad.frames = 0;
  EXPECT(!shard_create(TEST_PATH("a.h5"), &bad, &err), "frames 0 accepted");
  EXPECT_STR_CONTAINS(err.msg, "frames 0");
  bad = INFO;
  bad.hop = -160;
  EXPECT(!shard_create(TEST_PATH("a.h5"), &bad, &err), "negative hop accepted");
  EXPECT(!shard_create(test_tmpdir(), &INFO, &err), "a directory accepted");
  EXPECT_STR_CONTAINS(err.msg, "is a directory");
  EXPECT(!shard_create(TEST_PATH("no/such/dir/a.h5"), &INFO, &err), "missing directory accepted");
  EXPECT_STR_CONTAINS(err.msg, "No such file");
  EXPECT(!file_exists(TEST_PATH("a.h5")) && !file_exists(TEST_PATH("a.h5.tmp")), "a refused create left a file");
}

TEST(shard_open_refuses_bad_files) {
  /* Each bad kind in its own file, each with one line naming it. */
  expect_refused(TEST_PATH("missing.h5"), "No such file");
  expect_refused(test_tmpdir(), "is a directory");

  const char *text = TEST_PATH("text.h5");
  FILE *f = fopen(text, "w");
  fputs("not a shard at all\n", f);
  fclose(f);
  expect_refused(text, "not an HDF5 file");

  const char *trunc = TEST_PATH("trunc.h5");
  write_shard(trunc, 6);
  struct stat st;
  stat(trunc, &st);
  ASSERT(truncate(trunc, st.st_size / 2) == 0, "truncate");
  McmErr err = {{0}};
  EXPECT(!shard_open(trunc, &err), "truncated shard opened");
  EXPECT_STR_CONTAINS(err.msg, trunc);

  /* An HDF5 file that is not a shard: a tensor file. */
  const char *tensors = TEST_PATH("tensors.h5");
  TensorFile *tf = tf_create(tensors, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_write(tf, "w", DT_F32, 1, (int64_t[]){2}, (float[]){1, 2}, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  expect_refused(tensors, "not an mcm shard");

  const char *p;
  p = TEST_PATH("format.h5");
  write_shard(p, 3);
  set_str(p, "format", "mcm-checkpoint");
  expect_refused(p, "format is 'mcm-checkpoint'");

  p = TEST_PATH("version.h5");
  write_shard(p, 3);
  set_i64(p, "version", 2);
  expect_refused(p, "version 2");

  p = TEST_PATH("frames.h5");
  write_shard(p, 3);
  set_i64(p, "frames", 0);
  expect_refused(p, "'frames' is 0");

  p = TEST_PATH("noattr.h5");
  write_shard(p, 3);
  hid_t h = open_rw(p);
  H5Adelete(h, "hop");
  H5Fclose(h);
  expect_refused(p, "no attribute 'hop'");

  p = TEST_PATH("count.h5");
  write_shard(p, 3);
  set_i64(p, "count", 4);
  expect_refused(p, "dataset 'mel' has shape [3, 4, 3]");

  p = TEST_PATH("melshape.h5");
  write_shard(p, 3);
  set_i64(p, "n_mels", 64);
  expect_refused(p, "the attributes say [3 (count), 4, 64]");

  p = TEST_PATH("captions.h5");
  write_shard(p, 3);
  {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    replace_dataset(p, "caption", t, 1, (hsize_t[]){2});
    H5Tclose(t);
  }
  expect_refused(p, "dataset 'caption' has shape [2]");

  p = TEST_PATH("fixedstr.h5");
  write_shard(p, 3);
  {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 16);
    replace_dataset(p, "source", t, 1, (hsize_t[]){3});
    H5Tclose(t);
  }
  expect_refused(p, "dataset 'source' is not variable-length string");

  p = TEST_PATH("meldtype.h5");
  write_shard(p, 3);
  replace_dataset(p, "mel", H5T_STD_I32LE, 3, (hsize_t[]){3, FR, NM});
  expect_refused(p, "dataset 'mel' is not float32");

  p = TEST_PATH("f64.h5");
  write_shard(p, 3);
  replace_dataset(p, "mel", H5T_IEEE_F64LE, 3, (hsize_t[]){3, FR, NM});
  expect_refused(p, "dataset 'mel' is not float32");

  p = TEST_PATH("nooffset.h5");
  write_shard(p, 3);
  delete_obj(p, "offset");
  expect_refused(p, "no dataset 'offset'");

  p = TEST_PATH("latentshape.h5");
  write_shard(p, 3);
  replace_dataset(p, "latent", H5T_IEEE_F32LE, 4, (hsize_t[]){2, 8, 4, 2});
  expect_refused(p, "dataset 'latent' has shape [2, 8, 4, 2]");
}

TEST(shard_open_checks_data) {
  McmErr err = {{0}};
  /* A damaged chunk: Fletcher32 (or inflate) fails while verifying. */
  const char *p = TEST_PATH("flip.h5");
  write_shard(p, 4);
  flip_chunk_byte(p, 2);
  expect_refused(p, "dataset 'mel', row 2: data fails its checksum");
  /* ... and on a structure-only open, the read of that row names it. */
  Shard *s = shard_open_flags(p, SHARD_NO_VERIFY, &err);
  ASSERT(s, "structure-only open failed: %s", err.msg);
  float row[FR * NM];
  EXPECT(shard_read(s, 1, row, NULL, &err) == 0, "an intact row failed: %s", err.msg);
  EXPECT(shard_read(s, 2, row, NULL, &err) < 0, "a damaged row read without error");
  EXPECT_STR_CONTAINS(err.msg, p);
  EXPECT_STR_CONTAINS(err.msg, "row");
  shard_close(s);

  /* Data rewritten through HDF5: Fletcher32 is recomputed and passes; the shard checksum
   * does not. */
  p = TEST_PATH("altered.h5");
  write_shard(p, 4);
  rewrite_mel_row(p, 1, 0.25f);
  expect_refused(p, "fails the shard checksum");
  s = shard_open_flags(p, SHARD_NO_VERIFY, &err);
  EXPECT(s, "SHARD_NO_VERIFY should skip the data checksum: %s", err.msg);
  shard_close(s);

  p = TEST_PATH("nan.h5");
  write_shard(p, 4);
  rewrite_mel_row(p, 3, NAN);
  expect_refused(p, "row 3 holds a non-finite value");

  p = TEST_PATH("nosum.h5");
  write_shard(p, 2);
  hid_t h = open_rw(p);
  H5Adelete(h, "mel_fnv1a64");
  H5Fclose(h);
  expect_refused(p, "no attribute 'mel_fnv1a64'");

  p = TEST_PATH("badsum.h5");
  write_shard(p, 2);
  set_i64(p, "mel_fnv1a64", 12345);
  expect_refused(p, "stored 0000000000003039");
}

TEST(shard_add_latents_and_text_emb) {
  const char *path = TEST_PATH("s.h5");
  const int n = 5, C = 2, T = 3, F = 2, D = 7;
  write_shard(path, n);
  float lat[5 * 2 * 3 * 2], emb[5 * 7];
  for (int i = 0; i < n * C * T * F; i++) lat[i] = (float)i * 0.5f - 3.0f;
  for (int i = 0; i < n * D; i++) emb[i] = 1.0f / (float)(i + 1);
  McmErr err = {{0}};
  ASSERT(shard_add_latents(path, lat, C, T, F, &err) == 0, "%s", err.msg);
  ASSERT(shard_add_text_emb(path, emb, D, &err) == 0, "%s", err.msg);
  EXPECT(!file_exists(tmp_of(path)), "temporary left");
  Shard *s = shard_open(path, &err);
  ASSERT(s, "%s", err.msg);
  int c, t, f;
  ASSERT(shard_latent_dims(s, &c, &t, &f) && c == C && t == T && f == F, "latent dims");
  EXPECT(shard_text_emb_dim(s) == D, "emb dim %d", shard_text_emb_dim(s));
  for (int r = 0; r < n; r++) {
    float l[12], e[7], mel[FR * NM], want[FR * NM];
    ASSERT(shard_read_latent(s, r, l, &err) == 0 && shard_read_text_emb(s, r, e, &err) == 0, "%s", err.msg);
    EXPECT(same_bits(l, lat + r * 12, 12), "latent row %d", r);
    EXPECT(same_bits(e, emb + r * D, D), "emb row %d", r);
    ASSERT(shard_read(s, r, mel, NULL, &err) == 0, "%s", err.msg);
    make_row(want, FR * NM, r);
    EXPECT(same_bits(mel, want, FR * NM), "mel row %d changed", r);
  }
  shard_close(s);

  /* Replacing: new values, new shape. */
  for (int i = 0; i < n * 12; i++) lat[i] = -lat[i];
  ASSERT(shard_add_latents(path, lat, 3, 2, 2, &err) == 0, "%s", err.msg);
  s = shard_open(path, &err);
  ASSERT(s, "%s", err.msg);
  ASSERT(shard_latent_dims(s, &c, &t, &f) && c == 3 && t == 2 && f == 2, "replaced dims");
  float l[12];
  ASSERT(shard_read_latent(s, 4, l, &err) == 0, "%s", err.msg);
  EXPECT(same_bits(l, lat + 48, 12), "replaced values");
  shard_close(s);

  /* Refused: non-finite values, bad dims, a bad shard; the shard stays as it was. */
  lat[17] = NAN;
  EXPECT(shard_add_latents(path, lat, C, T, F, &err) < 0, "NaN latent accepted");
  EXPECT_STR_CONTAINS(err.msg, "row 1");
  EXPECT(shard_add_text_emb(path, emb, 0, &err) < 0, "D = 0 accepted");
  EXPECT(shard_add_text_emb(TEST_PATH("missing.h5"), emb, D, &err) < 0, "missing shard accepted");
  EXPECT_STR_CONTAINS(err.msg, "missing.h5");
  EXPECT(!file_exists(tmp_of(path)), "a refused add left a temporary");
  s = shard_open(path, &err);
  ASSERT(s, "shard damaged by a refused add: %s", err.msg);
  ASSERT(shard_latent_dims(s, &c, NULL, NULL) && c == 3, "latents changed by a refused add");
  shard_close(s);

  /* A damaged latent is caught by its checksum at open. */
  hid_t h = open_rw(path);
  hid_t ds = H5Dopen2(h, "latent", H5P_DEFAULT);
  float z[5 * 12] = {0};
  H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, z);
  H5Dclose(ds);
  H5Fclose(h);
  expect_refused(path, "latent_fnv1a64");
}
