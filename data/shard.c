/* Training shards: the writer ./prepare uses, the validating reader the loader uses, and the
 * atomic add-a-dataset rewrite for latents and text embeddings (format in shard.h). */
#include "data/shard.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "core/tensorfile.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shard.c checksums fp32 host memory as the little-endian bytes stored on disk"
#endif

#define H5MSG() h5_error_str((char[512]){0}, 512)
#define META_CHUNK_ROWS 1024           /* caption / source / offset rows per chunk */
#define VERIFY_BYTES ((size_t)4 << 20) /* rows read at once while checksumming */
#define DEFLATE_LEVEL 4

/* ---------------------------------------------------------------- small helpers */

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(MALLOC_CHECK(n), s, n);
}

static char *path_tmp(const char *path) {
  size_t n = strlen(path);
  char *p = MALLOC_CHECK(n + 5);
  memcpy(p, path, n);
  memcpy(p + n, ".tmp", 5);
  return p;
}

uint64_t shard_fnv1a64(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* Index of the first non-finite value, or -1. */
static int64_t first_nonfinite(const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}

/* ---------------------------------------------------------------- HDF5 helpers */


static hid_t vlen_utf8_type(void) {
  hid_t t = H5_CHECK(H5Tcopy(H5T_C_S1));
  H5_CHECK(H5Tset_size(t, H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8));
  return t;
}

static void close_id(hid_t *id) {
  if (*id >= 0) H5Oclose(*id); /* on error paths too: nothing more to report */
  *id = -1;
}

/* Scalar integer attribute (replacing one of that name). -1 on an HDF5 failure. */
static int put_int_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *v) {
  if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) return -1;
  hid_t space = H5_CHECK(H5Screate(H5S_SCALAR));
  hid_t a = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
  int rc = a < 0 || H5Awrite(a, mem_type, v) < 0 ? -1 : 0;
  if (a >= 0) H5Aclose(a);
  H5_CHECK(H5Sclose(space));
  return rc;
}
static int put_i64(hid_t obj, const char *name, int64_t v) {
  return put_int_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
static int put_u64(hid_t obj, const char *name, uint64_t v) {
  return put_int_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

static int put_str(hid_t obj, const char *name, const char *value) {
  hid_t t = vlen_utf8_type();
  hid_t space = H5_CHECK(H5Screate(H5S_SCALAR));
  hid_t a = H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
  int rc = a < 0 || H5Awrite(a, t, &value) < 0 ? -1 : 0;
  if (a >= 0) H5Aclose(a);
  H5_CHECK(H5Sclose(space));
  H5_CHECK(H5Tclose(t));
  return rc;
}

/* Dataset creation: track no times (same rows, same bytes), chunk_rows rows per chunk,
 * and for float data byte-shuffle + deflate + Fletcher32. */
static hid_t make_dcpl(int rank, const hsize_t *dims, hsize_t chunk_rows, bool filters) {
  hsize_t chunk[4];
  chunk[0] = chunk_rows;
  for (int k = 1; k < rank; k++) chunk[k] = dims[k];
  hid_t dcpl = H5_CHECK(H5Pcreate(H5P_DATASET_CREATE));
  H5_CHECK(H5Pset_obj_track_times(dcpl, 0));
  H5_CHECK(H5Pset_chunk(dcpl, rank, chunk));
  if (filters) {
    H5_CHECK(H5Pset_shuffle(dcpl));
    H5_CHECK(H5Pset_deflate(dcpl, DEFLATE_LEVEL));
    H5_CHECK(H5Pset_fletcher32(dcpl));
  }
  return dcpl;
}

/* An extendible dataset: dims (n, dims[1..]), rows unlimited. */
static hid_t make_dataset(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims, hsize_t chunk_rows,
                          bool filters) {
  hsize_t maxdims[4];
  for (int k = 0; k < rank; k++) maxdims[k] = k == 0 ? H5S_UNLIMITED : dims[k];
  hid_t space = H5_CHECK(H5Screate_simple(rank, dims, maxdims));
  hid_t dcpl = make_dcpl(rank, dims, chunk_rows, filters);
  hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5_CHECK(H5Pclose(dcpl));
  H5_CHECK(H5Sclose(space));
  return ds;
}

/* Selects rows [start, start + rows) of ds; returns the file space, and the matching memory
 * space in *mem. */
static hid_t select_rows(hid_t ds, int64_t start, int64_t rows, hid_t *mem) {
  hid_t fs = H5_CHECK(H5Dget_space(ds));
  int rank = H5_CHECK(H5Sget_simple_extent_ndims(fs));
  hsize_t off[4] = {0}, count[4];
  H5_CHECK(H5Sget_simple_extent_dims(fs, count, NULL));
  off[0] = (hsize_t)start;
  count[0] = (hsize_t)rows;
  H5_CHECK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, count, NULL));
  *mem = H5_CHECK(H5Screate_simple(rank, count, NULL));
  return fs;
}

/* Grows ds by one row and writes it. -1 on an HDF5 failure. */
static int append_row(hid_t ds, int64_t n, hid_t mem_type, const void *buf) {
  hid_t fs = H5_CHECK(H5Dget_space(ds));
  hsize_t dims[4];
  H5_CHECK(H5Sget_simple_extent_dims(fs, dims, NULL));
  H5_CHECK(H5Sclose(fs));
  dims[0] = (hsize_t)n + 1;
  if (H5Dset_extent(ds, dims) < 0) return -1;
  hid_t mem;
  fs = select_rows(ds, n, 1, &mem);
  int rc = H5Dwrite(ds, mem_type, mem, fs, H5P_DEFAULT, buf) < 0 ? -1 : 0;
  H5_CHECK(H5Sclose(mem));
  H5_CHECK(H5Sclose(fs));
  return rc;
}

static void check_deflate(void) {
  if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0 || H5Zfilter_avail(H5Z_FILTER_SHUFFLE) <= 0)
    MCM_FATAL("this HDF5 library has no deflate or shuffle filter (hint: install Debian's libhdf5-dev, which has "
              "both, and rebuild)");
}

/* ---------------------------------------------------------------- writer */

struct ShardWriter {
  hid_t file, mel, caption, source, offset, audio, str; /* audio -1 unless shard_writer_keep_audio */
  char *path, *tmp;
  ShardInfo info;
  int64_t n;
  int audio_samples;  /* S of one audio row, 0 without audio */
  uint64_t fnv;       /* FNV-1a of the mel rows so far */
  uint64_t audio_fnv; /* and of the audio rows */
  bool failed;  /* a write failed: only shard_abort is allowed */
};

static void writer_close(ShardWriter *w) {
  close_id(&w->mel);
  close_id(&w->audio);
  close_id(&w->caption);
  close_id(&w->source);
  close_id(&w->offset);
  if (w->file >= 0) H5Fclose(w->file);
  w->file = -1;
}

static void writer_free(ShardWriter *w) {
  writer_close(w);
  H5_CHECK(H5Tclose(w->str));
  free(w->path);
  free(w->tmp);
  free(w);
}

static int check_info(const char *path, const ShardInfo *info, McmErr *err) {
  if (!info) return mcm_err(err, "%s: no shard info given", path);
  if (info->frames <= 0 || info->n_mels <= 0 || info->rate <= 0 || info->hop <= 0)
    return mcm_err(err, "%s: bad shard shape: frames %d, n_mels %d, rate %d, hop %d (all must be positive)", path,
                   info->frames, info->n_mels, info->rate, info->hop);
  return 0;
}

ShardWriter *shard_create(const char *path, const ShardInfo *info, McmErr *err) {
  h5_quiet();
  check_deflate();
  if (check_info(path, info, err) < 0) return NULL;
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    mcm_err(err, "%s: is a directory (hint: give a shard file name, e.g. %s/shard-0000.h5)", path, path);
    return NULL;
  }
  char *tmp = path_tmp(path);
  if (unlink(tmp) < 0 && errno != ENOENT) { /* a killed writer's leftover */
    mcm_err(err, "%s: cannot remove the stale temporary %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return NULL;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666); /* for a clear errno */
  if (fd < 0) {
    mcm_err(err, "%s: cannot create %s: %s (hint: check that the directory exists and is writable)", path, tmp,
            strerror(errno));
    free(tmp);
    return NULL;
  }
  close(fd);
  hid_t fapl = h5_file_access();
  hid_t fcpl = H5_CHECK(H5Pcreate(H5P_FILE_CREATE));
  H5_CHECK(H5Pset_obj_track_times(fcpl, 0));
  hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
  char why[512];
  if (file < 0) h5_error_str(why, sizeof why);
  H5_CHECK(H5Pclose(fcpl));
  H5_CHECK(H5Pclose(fapl));
  if (file < 0) {
    mcm_err(err, "%s: cannot create HDF5 file %s: %s", path, tmp, why);
    unlink(tmp);
    free(tmp);
    return NULL;
  }
  ShardWriter *w = CALLOC_CHECK(1, sizeof *w);
  w->file = file;
  w->audio = -1;
  w->str = vlen_utf8_type();
  w->path = dup_str(path);
  w->tmp = tmp;
  w->info = *info;
  w->fnv = SHARD_FNV_BASIS;
  hsize_t mel_dims[3] = {0, (hsize_t)info->frames, (hsize_t)info->n_mels}, row_dims[1] = {0};
  w->mel = make_dataset(file, "mel", H5T_IEEE_F32LE, 3, mel_dims, 1, true);
  w->caption = make_dataset(file, "caption", w->str, 1, row_dims, META_CHUNK_ROWS, false);
  w->source = make_dataset(file, "source", w->str, 1, row_dims, META_CHUNK_ROWS, false);
  w->offset = make_dataset(file, "offset", H5T_STD_I64LE, 1, row_dims, META_CHUNK_ROWS, false);
  bool ok = w->mel >= 0 && w->caption >= 0 && w->source >= 0 && w->offset >= 0 &&
            put_str(file, "format", SHARD_FORMAT) == 0 && put_i64(file, "version", SHARD_VERSION) == 0 &&
            put_i64(file, "frames", info->frames) == 0 && put_i64(file, "n_mels", info->n_mels) == 0 &&
            put_i64(file, "rate", info->rate) == 0 && put_i64(file, "hop", info->hop) == 0;
  if (!ok) {
    mcm_err(err, "%s: cannot set up %s: %s (hint: is the disk full?)", path, tmp, H5MSG());
    shard_abort(w);
    return NULL;
  }
  return w;
}

int shard_writer_keep_audio(ShardWriter *w, int samples, McmErr *err) {
  MCM_CHECK(w, "shard_writer_keep_audio: NULL writer");
  MCM_CHECK(w->n == 0 && w->audio < 0, "shard_writer_keep_audio: %s: call it once, before the first row", w->path);
  if (samples <= 0) return mcm_err(err, "%s: audio rows of %d samples (must be positive)", w->path, samples);
  hsize_t dims[2] = {0, (hsize_t)samples};
  w->audio = make_dataset(w->file, "audio", H5T_IEEE_F32LE, 2, dims, 1, true);
  if (w->audio < 0) {
    w->failed = true;
    return mcm_err(err, "%s: cannot create the audio dataset in %s: %s (hint: is the disk full?)", w->path, w->tmp,
                   H5MSG());
  }
  w->audio_samples = samples;
  w->audio_fnv = SHARD_FNV_BASIS;
  return 0;
}

int shard_append(ShardWriter *w, const float *mel, const char *caption, const char *source, int64_t offset_samples,
                 McmErr *err) {
  return shard_append_audio(w, mel, NULL, caption, source, offset_samples, err);
}

int shard_append_audio(ShardWriter *w, const float *mel, const float *audio, const char *caption, const char *source,
                       int64_t offset_samples, McmErr *err) {
  MCM_CHECK(w && mel, "shard_append: NULL writer or mel");
  MCM_CHECK(!audio == !w->audio_samples, "shard_append: %s: %s", w->path,
            audio ? "audio given to a writer without shard_writer_keep_audio" : "this writer keeps audio: pass the row's audio");
  if (w->failed) return mcm_err(err, "%s: not appending: an earlier write to this shard failed", w->path);
  if (!caption) caption = "";
  if (!source) source = "";
  int64_t n = (int64_t)w->info.frames * w->info.n_mels;
  int64_t bad = first_nonfinite(mel, n);
  if (bad >= 0)
    return mcm_err(err, "%s: row %lld (from %s) refused: mel value %g at frame %lld, bin %lld is not finite",
                   w->path, (long long)w->n, source, mel[bad], (long long)(bad / w->info.n_mels),
                   (long long)(bad % w->info.n_mels));
  if (!utf8_valid(caption, strlen(caption)))
    return mcm_err(err, "%s: row %lld (from %s) refused: the caption is not valid UTF-8", w->path, (long long)w->n,
                   source);
  if (!utf8_valid(source, strlen(source)))
    return mcm_err(err, "%s: row %lld refused: the source path is not valid UTF-8 (hint: rename the file)", w->path,
                   (long long)w->n);
  if (offset_samples < 0)
    return mcm_err(err, "%s: row %lld (from %s) refused: negative offset %lld", w->path, (long long)w->n, source,
                   (long long)offset_samples);
  if (audio && (bad = first_nonfinite(audio, w->audio_samples)) >= 0)
    return mcm_err(err, "%s: row %lld (from %s) refused: audio sample %lld is not finite (%g)", w->path,
                   (long long)w->n, source, (long long)bad, audio[bad]);
  if (append_row(w->mel, w->n, H5T_NATIVE_FLOAT, mel) < 0 || append_row(w->caption, w->n, w->str, &caption) < 0 ||
      append_row(w->source, w->n, w->str, &source) < 0 ||
      append_row(w->offset, w->n, H5T_NATIVE_INT64, &offset_samples) < 0 ||
      (audio && append_row(w->audio, w->n, H5T_NATIVE_FLOAT, audio) < 0)) {
    w->failed = true;
    return mcm_err(err, "%s: cannot write row %lld to %s: %s (hint: is the disk full?)", w->path, (long long)w->n,
                   w->tmp, H5MSG());
  }
  w->fnv = shard_fnv1a64(w->fnv, mel, (size_t)n * sizeof(float));
  if (audio) w->audio_fnv = shard_fnv1a64(w->audio_fnv, audio, (size_t)w->audio_samples * sizeof(float));
  w->n++;
  return 0;
}

int64_t shard_writer_count(const ShardWriter *w) { return w->n; }

int shard_commit(ShardWriter *w, McmErr *err) {
  MCM_CHECK(w, "shard_commit: NULL writer");
  int rc = 0;
  if (w->failed) {
    rc = mcm_err(err, "%s: not written: an earlier write to it failed", w->path);
  } else if (put_i64(w->file, "count", w->n) < 0 || put_u64(w->file, "mel_fnv1a64", w->fnv) < 0 ||
             (w->audio >= 0 && put_u64(w->file, "audio_fnv1a64", w->audio_fnv) < 0) ||
             H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) {
    rc = mcm_err(err, "%s: cannot finish %s: %s (hint: is the disk full?)", w->path, w->tmp, H5MSG());
  } else {
    close_id(&w->mel);
    close_id(&w->audio);
    close_id(&w->caption);
    close_id(&w->source);
    close_id(&w->offset);
    herr_t c = H5Fclose(w->file);
    w->file = -1;
    if (c < 0) rc = mcm_err(err, "%s: cannot close %s: %s (hint: is the disk full?)", w->path, w->tmp, H5MSG());
  }
  if (rc != 0) {
    shard_abort(w);
    return rc;
  }
  rc = file_publish(w->tmp, w->path, err);
  writer_free(w);
  return rc;
}

void shard_abort(ShardWriter *w) {
  if (!w) return;
  writer_close(w);
  unlink(w->tmp);
  writer_free(w);
}

/* ---------------------------------------------------------------- reader: structure */

struct Shard {
  hid_t file, mel, caption, source, offset, latent, text_emb, audio;
  hid_t caption_t, source_t; /* memory types: vlen strings in each dataset's character set */
  char *path;
  ShardInfo info;
  int64_t count;
  int lat[3]; /* C, T, F when latent exists */
  int emb_dim;
  int audio_samples; /* when audio exists */
};

void shard_close(Shard *s) {
  if (!s) return;
  close_id(&s->mel);
  close_id(&s->caption);
  close_id(&s->source);
  close_id(&s->offset);
  close_id(&s->latent);
  close_id(&s->text_emb);
  close_id(&s->audio);
  if (s->file >= 0) H5Fclose(s->file);
  if (s->caption_t >= 0) H5_CHECK(H5Tclose(s->caption_t));
  if (s->source_t >= 0) H5_CHECK(H5Tclose(s->source_t));
  free(s->path);
  free(s);
}

/* A scalar integer attribute as int64 (or uint64 bits). why gets the reason on failure. */
static int get_int_attr(hid_t obj, const char *name, bool is_unsigned, void *out, char *why, size_t why_size) {
  if (H5Aexists(obj, name) <= 0) {
    mcm_snprintf(why, why_size, "no attribute '%s'", name);
    return -1;
  }
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) {
    mcm_snprintf(why, why_size, "cannot open attribute '%s': %s", name, H5MSG());
    return -1;
  }
  hid_t t = H5_CHECK(H5Aget_type(a));
  hid_t sp = H5_CHECK(H5Aget_space(a));
  int rc = -1;
  if (H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(sp) != 1)
    mcm_snprintf(why, why_size, "attribute '%s' is not a single integer", name);
  else if (H5Aread(a, is_unsigned ? H5T_NATIVE_UINT64 : H5T_NATIVE_INT64, out) < 0)
    mcm_snprintf(why, why_size, "cannot read attribute '%s': %s", name, H5MSG());
  else
    rc = 0;
  H5_CHECK(H5Sclose(sp));
  H5_CHECK(H5Tclose(t));
  H5_CHECK(H5Aclose(a));
  return rc;
}

/* The "format" attribute, as h5py writes a str (variable-length) or numpy bytes (fixed). */
static int get_format(hid_t file, char *out, size_t size) {
  out[0] = 0;
  if (H5Aexists(file, "format") <= 0) return -1;
  hid_t a = H5Aopen(file, "format", H5P_DEFAULT);
  if (a < 0) return -1;
  hid_t t = H5_CHECK(H5Aget_type(a));
  hid_t sp = H5_CHECK(H5Aget_space(a));
  int rc = -1;
  if (H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
    if (H5_CHECK(H5Tis_variable_str(t)) > 0) {
      hid_t mt = vlen_utf8_type();
      H5_CHECK(H5Tset_cset(mt, H5Tget_cset(t))); /* HDF5 converts no character sets */
      char *p = NULL;
      if (H5Aread(a, mt, &p) >= 0) {
        mcm_snprintf(out, size, "%s", p ? p : "");
        rc = 0;
      }
      if (p) H5free_memory(p);
      H5_CHECK(H5Tclose(mt));
    } else {
      hid_t mt = H5_CHECK(H5Tcopy(H5T_C_S1));
      H5_CHECK(H5Tset_size(mt, size));
      H5_CHECK(H5Tset_strpad(mt, H5T_STR_NULLTERM));
      H5_CHECK(H5Tset_cset(mt, H5Tget_cset(t)));
      if (H5Aread(a, mt, out) >= 0) rc = 0;
      out[size - 1] = 0;
      H5_CHECK(H5Tclose(mt));
    }
  }
  H5_CHECK(H5Sclose(sp));
  H5_CHECK(H5Tclose(t));
  H5_CHECK(H5Aclose(a));
  return rc;
}

typedef enum { KIND_F32, KIND_STR, KIND_INT } DsKind;
static const char *kind_name[] = {"float32", "variable-length string", "integer"};

/* Opens dataset `name` and checks its type and shape: rank dims, dims[0] == count, and
 * dims[k] == want[k] where want[k] > 0 (want[k] == 0: any positive size, returned in got).
 * Returns the dataset id, or -1 with err. */
static hid_t open_checked(Shard *s, const char *name, DsKind kind, int rank, const int64_t *want, int64_t *got,
                          McmErr *err) {
  if (H5Lexists(s->file, name, H5P_DEFAULT) <= 0) {
    mcm_err(err, "%s: not a valid shard: no dataset '%s' (hint: shards are written by ./prepare)", s->path, name);
    return -1;
  }
  hid_t ds = H5Dopen2(s->file, name, H5P_DEFAULT);
  if (ds < 0) {
    mcm_err(err, "%s: cannot open dataset '%s': %s (hint: the file may be damaged)", s->path, name, H5MSG());
    return -1;
  }
  hid_t t = H5_CHECK(H5Dget_type(ds));
  H5T_class_t cls = H5Tget_class(t);
  bool type_ok = kind == KIND_F32   ? cls == H5T_FLOAT && H5Tget_size(t) == 4
                 : kind == KIND_STR ? cls == H5T_STRING && H5_CHECK(H5Tis_variable_str(t)) > 0
                                    : cls == H5T_INTEGER;
  H5_CHECK(H5Tclose(t));
  hid_t sp = H5_CHECK(H5Dget_space(ds));
  int nd = H5Sget_simple_extent_ndims(sp);
  hsize_t dims[8] = {0};
  if (nd >= 0 && nd <= 8) H5_CHECK(H5Sget_simple_extent_dims(sp, dims, NULL));
  H5_CHECK(H5Sclose(sp));
  bool shape_ok = nd == rank && (int64_t)dims[0] == s->count;
  for (int k = 1; shape_ok && k < rank; k++) {
    shape_ok = want[k] > 0 ? (int64_t)dims[k] == want[k] : dims[k] > 0 && dims[k] <= INT_MAX;
    if (got) got[k] = (int64_t)dims[k];
  }
  if (!type_ok || !shape_ok) {
    int64_t d64[8];
    for (int k = 0; k < (nd >= 0 && nd <= 8 ? nd : 0); k++) d64[k] = (int64_t)dims[k];
    char have[128], expect[128] = "[";
    shape_str(have, sizeof have, nd >= 0 && nd <= 8 ? nd : 0, d64);
    for (int k = 0; k < rank; k++) {
      size_t len = strlen(expect);
      if (k == 0) mcm_snprintf(expect + len, sizeof expect - len, "%lld (count)", (long long)s->count);
      else if (want[k] > 0) mcm_snprintf(expect + len, sizeof expect - len, ", %lld", (long long)want[k]);
      else mcm_snprintf(expect + len, sizeof expect - len, ", >0");
    }
    strcat(expect, "]");
    if (!type_ok)
      mcm_err(err, "%s: not a valid shard: dataset '%s' is not %s", s->path, name, kind_name[kind]);
    else
      mcm_err(err, "%s: not a valid shard: dataset '%s' has shape %s, the attributes say %s", s->path, name, have,
              expect);
    H5_CHECK(H5Dclose(ds));
    return -1;
  }
  return ds;
}

/* A memory type for reading ds's strings: HDF5 converts no character sets, so it takes
 * the dataset's (UTF-8 as written here and by h5py, or ASCII). */
static hid_t str_mem_type(hid_t ds) {
  hid_t ft = H5_CHECK(H5Dget_type(ds));
  hid_t mt = vlen_utf8_type();
  H5_CHECK(H5Tset_cset(mt, H5Tget_cset(ft)));
  H5_CHECK(H5Tclose(ft));
  return mt;
}

static int check_structure(Shard *s, McmErr *err) {
  char fmt[64], why[256];
  if (get_format(s->file, fmt, sizeof fmt) < 0)
    return mcm_err(err, "%s: not an mcm shard: no string attribute 'format' (hint: shards are written by ./prepare)",
                   s->path);
  if (strcmp(fmt, SHARD_FORMAT))
    return mcm_err(err, "%s: not an mcm shard: format is '%s', expected '%s'", s->path, fmt, SHARD_FORMAT);
  int64_t v[6];
  static const char *names[6] = {"version", "frames", "n_mels", "rate", "hop", "count"};
  for (int k = 0; k < 6; k++)
    if (get_int_attr(s->file, names[k], false, &v[k], why, sizeof why) < 0)
      return mcm_err(err, "%s: not a valid shard: %s", s->path, why);
  if (v[0] != SHARD_VERSION)
    return mcm_err(err, "%s: shard format version %lld; this mcm reads version %d (hint: re-run ./prepare)", s->path,
                   (long long)v[0], SHARD_VERSION);
  for (int k = 1; k < 5; k++)
    if (v[k] <= 0 || v[k] > INT_MAX)
      return mcm_err(err, "%s: not a valid shard: attribute '%s' is %lld (must be a positive int)", s->path, names[k],
                     (long long)v[k]);
  if (v[5] < 0) return mcm_err(err, "%s: not a valid shard: attribute 'count' is %lld", s->path, (long long)v[5]);
  s->info = (ShardInfo){(int)v[1], (int)v[2], (int)v[3], (int)v[4]};
  s->count = v[5];
  const int64_t mel_want[3] = {0, v[1], v[2]}, any[4] = {0};
  int64_t got[4] = {0};
  if ((s->mel = open_checked(s, "mel", KIND_F32, 3, mel_want, NULL, err)) < 0 ||
      (s->caption = open_checked(s, "caption", KIND_STR, 1, any, NULL, err)) < 0 ||
      (s->source = open_checked(s, "source", KIND_STR, 1, any, NULL, err)) < 0 ||
      (s->offset = open_checked(s, "offset", KIND_INT, 1, any, NULL, err)) < 0)
    return -1;
  s->caption_t = str_mem_type(s->caption);
  s->source_t = str_mem_type(s->source);
  if (H5Lexists(s->file, "latent", H5P_DEFAULT) > 0) {
    if ((s->latent = open_checked(s, "latent", KIND_F32, 4, any, got, err)) < 0) return -1;
    for (int k = 0; k < 3; k++) s->lat[k] = (int)got[k + 1];
  }
  if (H5Lexists(s->file, "text_emb", H5P_DEFAULT) > 0) {
    if ((s->text_emb = open_checked(s, "text_emb", KIND_F32, 2, any, got, err)) < 0) return -1;
    s->emb_dim = (int)got[1];
  }
  if (H5Lexists(s->file, "audio", H5P_DEFAULT) > 0) {
    if ((s->audio = open_checked(s, "audio", KIND_F32, 2, any, got, err)) < 0) return -1;
    if (got[1] <= 0 || got[1] > INT_MAX)
      return mcm_err(err, "%s: not a valid shard: audio rows of %lld samples", s->path, (long long)got[1]);
    s->audio_samples = (int)got[1];
  }
  return 0;
}

/* ---------------------------------------------------------------- reader: data */

/* Reads rows [start, start + rows) of a float dataset into buf, naming the damage if any. */
static int read_rows(Shard *s, hid_t ds, const char *name, int64_t start, int64_t rows, float *buf, McmErr *err) {
  hid_t mem;
  hid_t fs = select_rows(ds, start, rows, &mem);
  herr_t r = H5Dread(ds, H5T_NATIVE_FLOAT, mem, fs, H5P_DEFAULT, buf);
  char why[512];
  if (r < 0) h5_error_str(why, sizeof why);
  H5_CHECK(H5Sclose(mem));
  H5_CHECK(H5Sclose(fs));
  if (r >= 0) return 0;
  char where[64];
  if (rows == 1) mcm_snprintf(where, sizeof where, "row %lld", (long long)start);
  else mcm_snprintf(where, sizeof where, "rows %lld..%lld", (long long)start, (long long)(start + rows - 1));
  if (strstr(why, "Fletcher32") || strstr(why, "checksum"))
    return mcm_err(err, "%s: dataset '%s', %s: data fails its checksum (%s) (hint: the file is corrupted; re-run "
                   "./prepare for it)", s->path, name, where, why);
  return mcm_err(err, "%s: dataset '%s', %s: cannot read: %s (hint: the file may be damaged)", s->path, name, where,
                 why);
}

static int read_str(Shard *s, hid_t ds, hid_t type, const char *name, int64_t i, char **out, McmErr *err) {
  hid_t mem;
  hid_t fs = select_rows(ds, i, 1, &mem);
  char *p = NULL;
  herr_t r = H5Dread(ds, type, mem, fs, H5P_DEFAULT, &p);
  char why[512];
  if (r < 0) h5_error_str(why, sizeof why);
  H5_CHECK(H5Sclose(mem));
  H5_CHECK(H5Sclose(fs));
  if (r < 0) return mcm_err(err, "%s: dataset '%s', row %lld: cannot read: %s", s->path, name, (long long)i, why);
  *out = dup_str(p ? p : "");
  if (p) H5free_memory(p);
  return 0;
}

/* Reads a whole float dataset once: every value finite, FNV-1a equal to the attribute. */
static int verify_dataset(Shard *s, hid_t ds, const char *name, const char *sum_attr, McmErr *err) {
  char why[256];
  uint64_t want;
  if (get_int_attr(s->file, sum_attr, true, &want, why, sizeof why) < 0)
    return mcm_err(err, "%s: not a valid shard: %s (the checksum of '%s')", s->path, why, name);
  hid_t sp = H5_CHECK(H5Dget_space(ds));
  hsize_t dims[4];
  int rank = H5_CHECK(H5Sget_simple_extent_dims(sp, dims, NULL));
  H5_CHECK(H5Sclose(sp));
  int64_t row = 1;
  for (int k = 1; k < rank; k++) row *= (int64_t)dims[k];
  int64_t block = (int64_t)(VERIFY_BYTES / sizeof(float)) / row;
  if (block < 1) block = 1;
  if (block > s->count) block = s->count;
  float *buf = MALLOC_CHECK((size_t)(block > 0 ? block : 1) * (size_t)row * sizeof(float));
  uint64_t h = SHARD_FNV_BASIS;
  int rc = 0;
  for (int64_t start = 0; rc == 0 && start < s->count; start += block) {
    int64_t rows = s->count - start < block ? s->count - start : block;
    rc = read_rows(s, ds, name, start, rows, buf, err);
    for (int64_t r = start; rc != 0 && rows > 1 && r < start + rows; r++) /* name the damaged row */
      if (read_rows(s, ds, name, r, 1, buf, err) < 0) break;
    if (rc != 0) break;
    int64_t bad = first_nonfinite(buf, rows * row);
    if (bad >= 0)
      rc = mcm_err(err, "%s: dataset '%s', row %lld holds a non-finite value (%g)", s->path, name,
                   (long long)(start + bad / row), buf[bad]);
    h = shard_fnv1a64(h, buf, (size_t)(rows * row) * sizeof(float));
  }
  free(buf);
  if (rc == 0 && h != want)
    rc = mcm_err(err, "%s: dataset '%s' fails the shard checksum (%s: stored %016llx, computed %016llx) (hint: the "
                 "file was damaged or altered; re-run ./prepare for it)", s->path, name, sum_attr,
                 (unsigned long long)want, (unsigned long long)h);
  return rc;
}

Shard *shard_open_flags(const char *path, unsigned flags, McmErr *err) {
  h5_quiet();
  struct stat st;
  if (stat(path, &st) < 0) {
    mcm_err(err, "%s: cannot open shard: %s", path, strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    mcm_err(err, "%s: is a directory, not a shard", path);
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    mcm_err(err, "%s: cannot open shard: %s", path, strerror(errno));
    return NULL;
  }
  close(fd);
  hid_t fapl = h5_file_access();
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  char why[512];
  if (file < 0) h5_error_str(why, sizeof why);
  H5_CHECK(H5Pclose(fapl));
  if (file < 0) {
    if (H5Fis_hdf5(path) <= 0)
      mcm_err(err, "%s: not an HDF5 file, so not a shard (hint: shards are written by ./prepare)", path);
    else
      mcm_err(err, "%s: damaged or truncated HDF5 file (%s) (hint: re-run ./prepare for it)", path, why);
    return NULL;
  }
  Shard *s = CALLOC_CHECK(1, sizeof *s);
  s->file = file;
  s->mel = s->caption = s->source = s->offset = s->latent = s->text_emb = s->audio = -1;
  s->caption_t = s->source_t = -1;
  s->path = dup_str(path);
  int rc = check_structure(s, err);
  if (rc == 0 && !(flags & SHARD_NO_VERIFY)) {
    rc = verify_dataset(s, s->mel, "mel", "mel_fnv1a64", err);
    if (rc == 0 && s->latent >= 0) rc = verify_dataset(s, s->latent, "latent", "latent_fnv1a64", err);
    if (rc == 0 && s->text_emb >= 0) rc = verify_dataset(s, s->text_emb, "text_emb", "text_emb_fnv1a64", err);
    if (rc == 0 && s->audio >= 0) rc = verify_dataset(s, s->audio, "audio", "audio_fnv1a64", err);
  }
  if (rc != 0) {
    shard_close(s);
    return NULL;
  }
  return s;
}

Shard *shard_open(const char *path, McmErr *err) { return shard_open_flags(path, 0, err); }

int64_t shard_count(const Shard *s) { return s->count; }
ShardInfo shard_info(const Shard *s) { return s->info; }
const char *shard_path(const Shard *s) { return s->path; }

bool shard_latent_dims(const Shard *s, int *C, int *T, int *F) {
  if (s->latent < 0) return false;
  if (C) *C = s->lat[0];
  if (T) *T = s->lat[1];
  if (F) *F = s->lat[2];
  return true;
}

int shard_text_emb_dim(const Shard *s) { return s->text_emb >= 0 ? s->emb_dim : 0; }
int shard_audio_samples(const Shard *s) { return s->audio >= 0 ? s->audio_samples : 0; }

#define CHECK_ROW(s, i) \
  MCM_CHECK((i) >= 0 && (i) < (s)->count, "%s: row %lld out of range [0, %lld)", (s)->path, (long long)(i), \
            (long long)(s)->count)

int shard_read(Shard *s, int64_t i, float *mel, char **caption, McmErr *err) {
  CHECK_ROW(s, i);
  if (caption) *caption = NULL;
  if (mel && read_rows(s, s->mel, "mel", i, 1, mel, err) < 0) return -1;
  if (caption && read_str(s, s->caption, s->caption_t, "caption", i, caption, err) < 0) return -1;
  return 0;
}

int shard_read_meta(Shard *s, int64_t i, char **source, int64_t *offset, McmErr *err) {
  CHECK_ROW(s, i);
  if (source) *source = NULL;
  if (offset) {
    hid_t mem;
    hid_t fs = select_rows(s->offset, i, 1, &mem);
    herr_t r = H5Dread(s->offset, H5T_NATIVE_INT64, mem, fs, H5P_DEFAULT, offset);
    H5_CHECK(H5Sclose(mem));
    H5_CHECK(H5Sclose(fs));
    if (r < 0) return mcm_err(err, "%s: dataset 'offset', row %lld: cannot read: %s", s->path, (long long)i, H5MSG());
  }
  if (source && read_str(s, s->source, s->source_t, "source", i, source, err) < 0) return -1;
  return 0;
}

int shard_read_latent(Shard *s, int64_t i, float *latent, McmErr *err) {
  CHECK_ROW(s, i);
  if (s->latent < 0) return mcm_err(err, "%s: the shard has no latents (hint: run ./prepare with the VAE weights)", s->path);
  return read_rows(s, s->latent, "latent", i, 1, latent, err);
}

int shard_read_text_emb(Shard *s, int64_t i, float *emb, McmErr *err) {
  CHECK_ROW(s, i);
  if (s->text_emb < 0)
    return mcm_err(err, "%s: the shard has no text embeddings (hint: run ./prepare with the CLAP weights)", s->path);
  return read_rows(s, s->text_emb, "text_emb", i, 1, emb, err);
}

int shard_read_audio(Shard *s, int64_t i, float *audio, McmErr *err) {
  CHECK_ROW(s, i);
  if (s->audio < 0)
    return mcm_err(err, "%s: the shard has no audio (hint: run ./prepare with [prepare] keep_audio = true)", s->path);
  return read_rows(s, s->audio, "audio", i, 1, audio, err);
}

/* ---------------------------------------------------------------- adding datasets */

static int copy_file(const char *from, const char *to, McmErr *err) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0) return mcm_err(err, "%s: cannot open: %s", from, strerror(errno));
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (out < 0) {
    int rc = mcm_err(err, "%s: cannot create %s: %s", from, to, strerror(errno));
    close(in);
    return rc;
  }
  enum { BUF = 1 << 16 };
  char *buf = MALLOC_CHECK(BUF);
  int rc = 0;
  for (;;) {
    ssize_t n = read(in, buf, BUF);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = mcm_err(err, "%s: read failed: %s", from, strerror(errno));
      break;
    }
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t m = write(out, buf + done, (size_t)(n - done));
      if (m < 0 && errno == EINTR) continue;
      if (m < 0) {
        rc = mcm_err(err, "%s: cannot write %s: %s (hint: is the disk full?)", from, to, strerror(errno));
        break;
      }
      done += m;
    }
    if (rc != 0) break;
  }
  free(buf);
  close(in);
  if (close(out) < 0 && rc == 0) rc = mcm_err(err, "%s: cannot write %s: %s", from, to, strerror(errno));
  return rc;
}

/* Writes dataset `name` (count, row_dims...) with its checksum attribute into a copy of the
 * shard at path, then renames the copy over it. */
static int add_dataset(const char *path, const char *name, const char *sum_attr, int rank, const int64_t *row_dims,
                       hsize_t chunk_rows, const float *data, McmErr *err) {
  h5_quiet();
  check_deflate();
  for (int k = 1; k < rank; k++)
    if (row_dims[k] <= 0 || row_dims[k] > INT_MAX)
      return mcm_err(err, "%s: cannot add '%s': dimension %d is %lld (must be positive)", path, name, k,
                     (long long)row_dims[k]);
  Shard *s = shard_open(path, err);
  if (!s) return -1;
  int64_t count = shard_count(s);
  shard_close(s);
  int64_t row = 1;
  for (int k = 1; k < rank; k++) row *= row_dims[k];
  int64_t bad = count > 0 ? first_nonfinite(data, count * row) : -1;
  if (bad >= 0)
    return mcm_err(err, "%s: cannot add '%s': row %lld holds a non-finite value (%g)", path, name,
                   (long long)(bad / row), data[bad]);
  char *tmp = path_tmp(path);
  int rc = copy_file(path, tmp, err);
  hid_t file = -1;
  if (rc == 0) {
    hid_t fapl = h5_file_access();
    file = H5Fopen(tmp, H5F_ACC_RDWR, fapl);
    H5_CHECK(H5Pclose(fapl));
    if (file < 0) rc = mcm_err(err, "%s: cannot open the copy %s for writing: %s", path, tmp, H5MSG());
  }
  if (rc == 0 && H5Lexists(file, name, H5P_DEFAULT) > 0 && H5Ldelete(file, name, H5P_DEFAULT) < 0)
    rc = mcm_err(err, "%s: cannot replace '%s': %s", path, name, H5MSG());
  if (rc == 0) {
    hsize_t dims[4];
    dims[0] = (hsize_t)count;
    for (int k = 1; k < rank; k++) dims[k] = (hsize_t)row_dims[k];
    hid_t ds = make_dataset(file, name, H5T_IEEE_F32LE, rank, dims, chunk_rows, true);
    uint64_t h = shard_fnv1a64(SHARD_FNV_BASIS, data, count > 0 ? (size_t)(count * row) * sizeof(float) : 0);
    if (ds < 0 || (count > 0 && H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) ||
        put_u64(file, sum_attr, h) < 0)
      rc = mcm_err(err, "%s: cannot write '%s' into %s: %s (hint: is the disk full?)", path, name, tmp, H5MSG());
    if (ds >= 0) H5Dclose(ds);
  }
  if (file >= 0 && H5Fclose(file) < 0 && rc == 0)
    rc = mcm_err(err, "%s: cannot close %s: %s (hint: is the disk full?)", path, tmp, H5MSG());
  if (rc == 0) rc = file_publish(tmp, path, err);
  else unlink(tmp);
  free(tmp);
  return rc;
}

int shard_add_latents(const char *path, const float *latent, int C, int T, int F, McmErr *err) {
  const int64_t dims[4] = {0, C, T, F};
  return add_dataset(path, "latent", "latent_fnv1a64", 4, dims, 1, latent, err);
}

int shard_add_text_emb(const char *path, const float *emb, int D, McmErr *err) {
  const int64_t dims[2] = {0, D};
  return add_dataset(path, "text_emb", "text_emb_fnv1a64", 2, dims, 64, emb, err);
}
