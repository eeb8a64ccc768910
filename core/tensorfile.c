/* HDF5 tensor files: layout, atomic writes, checked reads (see tensorfile.h for the
 * on-disk format and the guarantees). */
#include "core/tensorfile.h"

#include "core/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensorfile.c passes fp16/bf16 bits to HDF5 as little-endian host memory"
#endif

/* Target chunk size: big enough that per-chunk overhead (index entry, 4-byte checksum,
 * one read call) is noise, small enough to fit HDF5's default 1 MiB chunk cache. */
#define TF_CHUNK_BYTES ((uint64_t)1 << 20)

struct TensorFile {
  hid_t file;  /* -1 once closed */
  hid_t f16;   /* the on-disk IEEE half type */
  char *path;  /* what the handle reads, or will publish */
  char *tmp;   /* the temporary being written; NULL for a read handle */
  bool failed; /* a write failed: only tf_abort is allowed */
};

/* ---------------------------------------------------------------- HDF5 errors */

typedef struct {
  char *buf;
  size_t size;
  bool found;
} ErrWalk;

static herr_t innermost_cb(unsigned n, const H5E_error2_t *e, void *data) {
  ErrWalk *w = data;
  if (n != 0 || w->found) return 0;
  w->found = true;
  if (e->desc && e->desc[0]) {
    mcm_snprintf(w->buf, w->size, "%s", e->desc);
  } else {
    char minor[256] = "";
    H5Eget_msg(e->min_num, NULL, minor, sizeof minor);
    mcm_snprintf(w->buf, w->size, "%s", minor[0] ? minor : "no HDF5 error message");
  }
  return 0;
}

char *h5_error_str(char *buf, size_t size) {
  ErrWalk w = {buf, size, false};
  /* Upward: the first entry is where HDF5 detected the problem, the last the API call. */
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_cb, &w);
  if (!w.found) mcm_snprintf(buf, size, "no HDF5 error message");
  return buf;
}

void h5_fatal(const char *file, int line, const char *expr) {
  char msg[512];
  h5_error_str(msg, sizeof msg);
  mcm_fatal(file, line,
            "HDF5 call %s failed: %s (hint: this call fails only on a bug in mcm or a broken HDF5 "
            "install; check `pkg-config --modversion hdf5` and report this line)",
            expr, msg);
}

void h5_quiet(void) { H5_CHECK(H5Eset_auto2(H5E_DEFAULT, NULL, NULL)); }

#define H5MSG() h5_error_str((char[512]){0}, 512)

/* ---------------------------------------------------------------- small helpers */

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = MALLOC_CHECK(n);
  memcpy(p, s, n);
  return p;
}

static char *xstrcat(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  char *p = MALLOC_CHECK(na + nb + 1);
  memcpy(p, a, na);
  memcpy(p + na, b, nb + 1);
  return p;
}

static bool dtype_valid(DType dt) { return dt == DT_F32 || dt == DT_BF16 || dt == DT_F16; }

/* The memory type that holds `dt` values (bits for the 16-bit ones) for H5Dread/H5Dwrite. */
static hid_t mem_type(const TensorFile *tf, DType dt) {
  switch (dt) {
  case DT_F32: return H5T_NATIVE_FLOAT;
  case DT_BF16: return H5T_NATIVE_UINT16;
  case DT_F16: return tf->f16;
  case DT_I32: break; /* tensor files hold floating-point tensors only */
  }
  MCM_FATAL("bad dtype %d", (int)dt);
}

static hid_t file_type(const TensorFile *tf, DType dt) {
  switch (dt) {
  case DT_F32: return H5T_IEEE_F32LE;
  case DT_BF16: return H5T_STD_U16LE;
  case DT_F16: return tf->f16;
  case DT_I32: break; /* tensor files hold floating-point tensors only */
  }
  MCM_FATAL("bad dtype %d", (int)dt);
}

/* IEEE binary16, little-endian: HDF5 1.10 predefines no half type. */
static hid_t make_f16_type(void) {
  hid_t t = H5_CHECK(H5Tcopy(H5T_IEEE_F32LE));
  H5_CHECK(H5Tset_fields(t, 15, 10, 5, 0, 10)); /* sign bit, exponent at 10 (5 bits), mantissa at 0 (10 bits) */
  H5_CHECK(H5Tset_precision(t, 16));
  H5_CHECK(H5Tset_size(t, 2));
  H5_CHECK(H5Tset_ebias(t, 15));
  return t;
}

static float to_f32(DType dt, const void *src, int64_t i) {
  switch (dt) {
  case DT_F32: return ((const float *)src)[i];
  case DT_BF16: return bf16_to_f32(((const uint16_t *)src)[i]);
  case DT_F16: return f16_to_f32(((const uint16_t *)src)[i]);
  case DT_I32: break;
  }
  MCM_FATAL("bad dtype %d", (int)dt);
}

static void from_f32(DType dt, void *dst, int64_t i, float x) {
  switch (dt) {
  case DT_F32: ((float *)dst)[i] = x; return;
  case DT_BF16: ((uint16_t *)dst)[i] = f32_to_bf16(x); return;
  case DT_F16: ((uint16_t *)dst)[i] = f32_to_f16(x); return;
  case DT_I32: break;
  }
  MCM_FATAL("bad dtype %d", (int)dt);
}

/* Checks a tensor name and returns it without a leading '/' (NULL and an error if bad). */
static const char *clean_name(const TensorFile *tf, const char *name, McmErr *err) {
  if (!name || !name[0] || (name[0] == '/' && !name[1])) {
    mcm_err(err, "%s: empty tensor name", tf->path);
    return NULL;
  }
  const char *s = name[0] == '/' ? name + 1 : name;
  for (const char *c = s;;) {
    const char *end = strchr(c, '/');
    size_t len = end ? (size_t)(end - c) : strlen(c);
    if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) {
      mcm_err(err, "%s: bad tensor name '%s' (hint: '/' separates groups; no empty, '.' or '..' parts)",
              tf->path, name);
      return NULL;
    }
    if (!end) break;
    c = end + 1;
  }
  return s;
}

typedef enum { OBJ_NONE, OBJ_DATASET, OBJ_GROUP, OBJ_OTHER } ObjKind;

/* What `path` names in the file; a missing parent or a dangling link is OBJ_NONE.
 * Never fails (HDF5 errors here only mean "not there"). */
static ObjKind obj_kind(hid_t file, const char *path) {
  if (H5Lexists(file, path, H5P_DEFAULT) <= 0) return OBJ_NONE;
  hid_t o = H5Oopen(file, path, H5P_DEFAULT);
  if (o < 0) return OBJ_NONE;
  H5I_type_t t = H5Iget_type(o);
  H5_CHECK(H5Oclose(o));
  return t == H5I_DATASET ? OBJ_DATASET : t == H5I_GROUP ? OBJ_GROUP : OBJ_OTHER;
}

/* The object at `name`, checking each parent first (H5Lexists on "a/b" fails when "a" is
 * missing or is not a group). A parent that exists but is not a group gives OBJ_OTHER,
 * with its path in bad (if given). */
static ObjKind path_kind(hid_t file, const char *name, char *bad, size_t bad_size) {
  size_t n = strlen(name);
  char *buf = MALLOC_CHECK(n + 1);
  memcpy(buf, name, n + 1);
  ObjKind k;
  for (char *slash = strchr(buf, '/');; slash = strchr(slash + 1, '/')) {
    if (slash) *slash = 0;
    k = obj_kind(file, buf);
    if (!slash) break;
    if (k != OBJ_GROUP) {
      if (k != OBJ_NONE) {
        k = OBJ_OTHER;
        if (bad) mcm_snprintf(bad, bad_size, "%s", buf);
      }
      break;
    }
    *slash = '/';
  }
  free(buf);
  return k;
}

static int64_t numel_of(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

static char *shape_s(char *buf, size_t size, int ndim, const int64_t *shape) {
  if (ndim == 0) {
    mcm_snprintf(buf, size, "[] (a scalar)");
    return buf;
  }
  return shape_str(buf, size, ndim, shape);
}
#define SHAPE_S(ndim, shape) shape_s((char[128]){0}, 128, (ndim), (shape))

/* ---------------------------------------------------------------- string attributes */

static hid_t vlen_utf8_type(void) {
  hid_t t = H5_CHECK(H5Tcopy(H5T_C_S1));
  H5_CHECK(H5Tset_size(t, H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8));
  return t;
}

/* Writes a scalar string attribute on obj, replacing an existing one. On an HDF5 failure
 * returns -1 with HDF5's message in why. */
static int put_str_attr(hid_t obj, const char *name, const char *value, char *why, size_t why_size) {
  htri_t exists = H5Aexists(obj, name);
  if (exists < 0 || (exists > 0 && H5Adelete(obj, name) < 0)) {
    h5_error_str(why, why_size);
    return -1;
  }
  hid_t t = vlen_utf8_type();
  hid_t space = H5_CHECK(H5Screate(H5S_SCALAR));
  hid_t a = H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
  int rc = a < 0 || H5Awrite(a, t, &value) < 0 ? -1 : 0;
  if (rc < 0) h5_error_str(why, why_size);
  if (a >= 0) H5_CHECK(H5Aclose(a));
  H5_CHECK(H5Sclose(space));
  H5_CHECK(H5Tclose(t));
  return rc;
}

/* Reads a string attribute (variable- or fixed-length, as h5py writes either) into a
 * malloc'd string. Returns 0, or -1 with a reason in why. */
static int get_str_attr(hid_t obj, const char *name, char **value, char *why, size_t why_size) {
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) {
    mcm_snprintf(why, why_size, "%s", H5MSG());
    return -1;
  }
  hid_t ft = H5_CHECK(H5Aget_type(a));
  hid_t space = H5_CHECK(H5Aget_space(a));
  hssize_t npoints = H5Sget_simple_extent_npoints(space);
  int rc = -1;
  if (H5Tget_class(ft) != H5T_STRING || npoints != 1) {
    mcm_snprintf(why, why_size, "it is not a single string");
  } else if (H5_CHECK(H5Tis_variable_str(ft)) > 0) {
    hid_t mt = vlen_utf8_type();
    H5_CHECK(H5Tset_cset(mt, H5Tget_cset(ft)));
    char *p = NULL;
    if (H5Aread(a, mt, &p) < 0) {
      mcm_snprintf(why, why_size, "cannot read it: %s", H5MSG());
    } else {
      *value = xstrdup(p ? p : "");
      rc = 0;
    }
    if (p) H5free_memory(p);
    H5_CHECK(H5Tclose(mt));
  } else {
    size_t n = H5Tget_size(ft);
    hid_t mt = H5_CHECK(H5Tcopy(H5T_C_S1));
    H5_CHECK(H5Tset_size(mt, n + 1));
    H5_CHECK(H5Tset_strpad(mt, H5T_STR_NULLTERM));
    H5_CHECK(H5Tset_cset(mt, H5Tget_cset(ft)));
    char *buf = CALLOC_CHECK(n + 1, 1);
    if (H5Aread(a, mt, buf) < 0) {
      mcm_snprintf(why, why_size, "cannot read it: %s", H5MSG());
      free(buf);
    } else {
      buf[n] = 0;
      *value = buf;
      rc = 0;
    }
    H5_CHECK(H5Tclose(mt));
  }
  H5_CHECK(H5Sclose(space));
  H5_CHECK(H5Tclose(ft));
  H5_CHECK(H5Aclose(a));
  return rc;
}

/* ---------------------------------------------------------------- create / write / commit */

hid_t h5_file_access(void) {
  hid_t fapl = H5_CHECK(H5Pcreate(H5P_FILE_ACCESS));
  /* 1.8-era structures (dense link and attribute storage) that any HDF5 >= 1.10 reads. */
  H5_CHECK(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110));
  H5_CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG));
#if H5_VERSION_GE(1, 10, 7)
  /* Lock where the filesystem can; do not fail where it cannot (NFS, some Lustre mounts). */
  H5_CHECK(H5Pset_file_locking(fapl, 1, 1));
#endif
  return fapl;
}

static TensorFile *tf_alloc(const char *path, const char *tmp, hid_t file) {
  TensorFile *tf = CALLOC_CHECK(1, sizeof *tf);
  tf->file = file;
  tf->f16 = make_f16_type();
  tf->path = xstrdup(path);
  tf->tmp = tmp ? xstrdup(tmp) : NULL;
  return tf;
}

static void tf_free(TensorFile *tf) {
  if (tf->file >= 0) H5Fclose(tf->file); /* on an error path: nothing more to report */
  H5_CHECK(H5Tclose(tf->f16));
  free(tf->path);
  free(tf->tmp);
  free(tf);
}

TensorFile *tf_create(const char *path, McmErr *err) {
  h5_quiet();
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    mcm_err(err, "%s: is a directory (hint: give a file name, e.g. %s/model.h5)", path, path);
    return NULL;
  }
  char *tmp = xstrcat(path, ".tmp");
  /* A killed writer leaves its temporary behind; it is never the published file. */
  if (unlink(tmp) < 0 && errno != ENOENT) {
    mcm_err(err, "%s: cannot remove the stale temporary %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return NULL;
  }
  /* Create it with plain open() first: its errno says clearly what is wrong. */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    mcm_err(err, "%s: cannot create %s: %s (hint: check that the directory exists and is writable)", path,
            tmp, strerror(errno));
    free(tmp);
    return NULL;
  }
  close(fd);
  hid_t fapl = h5_file_access();
  hid_t fcpl = H5_CHECK(H5Pcreate(H5P_FILE_CREATE));
  H5_CHECK(H5Pset_obj_track_times(fcpl, 0)); /* the root group's header: no timestamps either */
  hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
  char why[512];
  if (file < 0) h5_error_str(why, sizeof why); /* before the next API call clears the stack */
  H5_CHECK(H5Pclose(fcpl));
  H5_CHECK(H5Pclose(fapl));
  if (file < 0) {
    mcm_err(err, "%s: cannot create HDF5 file %s: %s", path, tmp, why);
    unlink(tmp);
    free(tmp);
    return NULL;
  }
  TensorFile *tf = tf_alloc(path, tmp, file);
  free(tmp);
  return tf;
}

/* Chunk shape of about TF_CHUNK_BYTES: whole trailing dimensions, split along the
 * outermost one that makes the chunk large enough. All dims > 0. */
static void chunk_shape(int ndim, const hsize_t *dims, size_t esize, hsize_t *chunk) {
  for (int i = 0; i < ndim; i++) chunk[i] = dims[i];
  for (int i = 0; i < ndim; i++) {
    uint64_t inner = esize; /* bytes of one index step along dim i */
    for (int j = i + 1; j < ndim; j++) inner *= dims[j];
    if (inner >= TF_CHUNK_BYTES) {
      chunk[i] = 1;
      continue;
    }
    uint64_t rows = (TF_CHUNK_BYTES + inner - 1) / inner;
    if (rows < dims[i]) chunk[i] = rows;
    break;
  }
}

/* Creates the groups above `name` that are missing (timestamps off, like the datasets).
 * Fails if a parent is a tensor. */
static int make_parents(TensorFile *tf, const char *name, McmErr *err) {
  size_t n = strlen(name);
  char *buf = MALLOC_CHECK(n + 1);
  memcpy(buf, name, n + 1);
  int rc = 0;
  for (char *slash = strchr(buf, '/'); slash && rc == 0; slash = strchr(slash + 1, '/')) {
    *slash = 0;
    ObjKind k = obj_kind(tf->file, buf);
    if (k == OBJ_NONE) {
      hid_t gcpl = H5_CHECK(H5Pcreate(H5P_GROUP_CREATE));
      H5_CHECK(H5Pset_obj_track_times(gcpl, 0));
      hid_t g = H5Gcreate2(tf->file, buf, H5P_DEFAULT, gcpl, H5P_DEFAULT);
      if (g < 0) rc = mcm_err(err, "%s: cannot create group '%s': %s", tf->path, buf, H5MSG());
      else H5_CHECK(H5Gclose(g));
      H5_CHECK(H5Pclose(gcpl));
    } else if (k != OBJ_GROUP) {
      rc = mcm_err(err, "%s: cannot write tensor '%s': '%s' is already a tensor, not a group", tf->path, name, buf);
    }
    *slash = '/';
  }
  free(buf);
  return rc;
}

static int write_dataset(TensorFile *tf, const char *name, DType dt, int ndim, const int64_t *shape,
                         const void *data, McmErr *err) {
  hsize_t dims[MCM_MAX_DIMS], chunk[MCM_MAX_DIMS];
  for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
  int64_t n = numel_of(ndim, shape);
  hid_t space = ndim == 0 ? H5_CHECK(H5Screate(H5S_SCALAR)) : H5_CHECK(H5Screate_simple(ndim, dims, NULL));
  hid_t dcpl = H5_CHECK(H5Pcreate(H5P_DATASET_CREATE));
  H5_CHECK(H5Pset_obj_track_times(dcpl, 0));
  if (ndim > 0 && n > 0) {
    chunk_shape(ndim, dims, dtype_size(dt), chunk);
    H5_CHECK(H5Pset_chunk(dcpl, ndim, chunk));
    H5_CHECK(H5Pset_fletcher32(dcpl));
  }
  int rc = 0;
  hid_t ds = H5Dcreate2(tf->file, name, file_type(tf, dt), space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds < 0) {
    rc = mcm_err(err, "%s: cannot create tensor '%s': %s", tf->path, name, H5MSG());
  } else {
    if (n > 0 && H5Dwrite(ds, mem_type(tf, dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
      rc = mcm_err(err, "%s: cannot write tensor '%s': %s (hint: is the disk full?)", tf->path, name, H5MSG());
    char why[512];
    if (rc == 0 && dt == DT_BF16 && put_str_attr(ds, "dtype", "bfloat16", why, sizeof why) < 0)
      rc = mcm_err(err, "%s: cannot tag tensor '%s' as bfloat16: %s", tf->path, name, why);
    H5_CHECK(H5Dclose(ds));
  }
  H5_CHECK(H5Pclose(dcpl));
  H5_CHECK(H5Sclose(space));
  return rc;
}

int tf_write_raw(TensorFile *tf, const char *name, DType dtype, int ndim, const int64_t *shape, const void *data,
                 McmErr *err) {
  MCM_CHECK(tf && tf->tmp, "tf_write on %s, which was opened for reading", tf ? tf->path : "(null)");
  if (tf->failed) return mcm_err(err, "%s: not writing '%s': an earlier write to this file failed", tf->path, name);
  const char *n = clean_name(tf, name, err);
  int rc = 0;
  if (!n) rc = -1;
  else if (!dtype_valid(dtype)) rc = mcm_err(err, "%s: tensor '%s': bad dtype %d", tf->path, name, (int)dtype);
  else if (ndim < 0 || ndim > MCM_MAX_DIMS)
    rc = mcm_err(err, "%s: tensor '%s': rank %d (mcm tensors have 0..%d dimensions)", tf->path, name, ndim, MCM_MAX_DIMS);
  else if (ndim > 0 && !shape) rc = mcm_err(err, "%s: tensor '%s': no shape", tf->path, name);
  for (int i = 0; rc == 0 && i < ndim; i++)
    if (shape[i] < 0)
      rc = mcm_err(err, "%s: tensor '%s': negative size in shape %s", tf->path, name, SHAPE_S(ndim, shape));
  if (rc == 0 && numel_of(ndim, shape) > 0 && !data)
    rc = mcm_err(err, "%s: tensor '%s': no data", tf->path, name);
  ObjKind k = rc == 0 ? path_kind(tf->file, n, NULL, 0) : OBJ_NONE;
  if (k == OBJ_DATASET) rc = mcm_err(err, "%s: tensor '%s' is written twice", tf->path, name);
  if (k == OBJ_GROUP) rc = mcm_err(err, "%s: cannot write tensor '%s': a group has that name", tf->path, name);
  if (rc == 0) rc = make_parents(tf, n, err);
  if (rc == 0) rc = write_dataset(tf, n, dtype, ndim, shape, data, err);
  if (rc != 0) tf->failed = true;
  return rc;
}

int tf_write(TensorFile *tf, const char *name, DType stored, int ndim, const int64_t *shape, const float *data,
             McmErr *err) {
  if (stored == DT_F32 || !dtype_valid(stored) || ndim < 0 || ndim > MCM_MAX_DIMS || (ndim > 0 && !shape))
    return tf_write_raw(tf, name, stored, ndim, shape, data, err);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i] > 0 ? shape[i] : 0;
  uint16_t *bits = MALLOC_CHECK((size_t)n * sizeof(uint16_t));
  for (int64_t i = 0; i < n; i++) from_f32(stored, bits, i, data[i]);
  int rc = tf_write_raw(tf, name, stored, ndim, shape, bits, err);
  free(bits);
  return rc;
}

int tf_set_attr(TensorFile *tf, const char *name, const char *value, McmErr *err) {
  MCM_CHECK(tf && tf->tmp, "tf_set_attr on %s, which was opened for reading", tf ? tf->path : "(null)");
  MCM_CHECK(value, "tf_set_attr: NULL value for '%s'", name ? name : "(null)");
  if (tf->failed) return mcm_err(err, "%s: not setting '%s': an earlier write to this file failed", tf->path, name);
  if (!name || !name[0]) {
    tf->failed = true;
    return mcm_err(err, "%s: empty attribute name", tf->path);
  }
  char why[512];
  if (put_str_attr(tf->file, name, value, why, sizeof why) < 0) {
    tf->failed = true;
    return mcm_err(err, "%s: cannot set attribute '%s': %s", tf->path, name, why);
  }
  return 0;
}

int tf_commit(TensorFile *tf, McmErr *err) {
  MCM_CHECK(tf && tf->tmp, "tf_commit on %s, which was opened for reading", tf ? tf->path : "(null)");
  int rc = 0;
  if (tf->failed) {
    rc = mcm_err(err, "%s: not written: an earlier write to it failed", tf->path);
  } else if (H5Fflush(tf->file, H5F_SCOPE_GLOBAL) < 0) {
    rc = mcm_err(err, "%s: cannot flush %s: %s (hint: is the disk full?)", tf->path, tf->tmp, H5MSG());
  } else {
    herr_t c = H5Fclose(tf->file);
    tf->file = -1;
    if (c < 0) rc = mcm_err(err, "%s: cannot close %s: %s (hint: is the disk full?)", tf->path, tf->tmp, H5MSG());
  }
  if (rc == 0) {
    rc = file_publish(tf->tmp, tf->path, err); /* removes the tmp itself on failure */
    free(tf->tmp);
    tf->tmp = NULL;
  }
  if (rc != 0 && tf->tmp) {
    tf_abort(tf);
    return rc;
  }
  tf_free(tf);
  return rc;
}

void tf_abort(TensorFile *tf) {
  if (!tf) return;
  if (tf->file >= 0) H5Fclose(tf->file);
  tf->file = -1;
  if (tf->tmp) unlink(tf->tmp);
  tf_free(tf);
}

/* ---------------------------------------------------------------- open / names */

TensorFile *tf_open(const char *path, McmErr *err) {
  h5_quiet();
  struct stat st;
  if (stat(path, &st) < 0) {
    mcm_err(err, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    mcm_err(err, "%s: is a directory, not a tensor file", path);
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    mcm_err(err, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  close(fd);
  hid_t fapl = h5_file_access();
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  char why[512];
  if (file < 0) h5_error_str(why, sizeof why); /* before the next API call clears the stack */
  H5_CHECK(H5Pclose(fapl));
  if (file < 0) {
    if (H5Fis_hdf5(path) <= 0)
      mcm_err(err, "%s: not an HDF5 file (hint: mcm tensor files are HDF5; check the path)", path);
    else
      mcm_err(err, "%s: damaged or truncated HDF5 file (%s) (hint: restore or rewrite it)", path, why);
    return NULL;
  }
  return tf_alloc(path, NULL, file);
}

void tf_close(TensorFile *tf) {
  if (!tf) return;
  if (tf->tmp) {
    tf_abort(tf);
    return;
  }
  tf_free(tf);
}

const char *tf_path(const TensorFile *tf) { return tf->path; }

typedef struct {
  char **names;
  int n, cap;
} NameList;

static herr_t names_cb(hid_t group, const char *name, const H5L_info_t *info, void *data) {
  NameList *l = data;
  if (info->type != H5L_TYPE_HARD) return 0;
  hid_t o = H5Oopen(group, name, H5P_DEFAULT);
  if (o < 0) return -1;
  bool is_ds = H5Iget_type(o) == H5I_DATASET;
  H5_CHECK(H5Oclose(o));
  if (!is_ds) return 0;
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 64;
    l->names = REALLOC_CHECK(l->names, (size_t)l->cap * sizeof *l->names);
  }
  l->names[l->n++] = xstrdup(name);
  return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void tf_free_names(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

int tf_names(TensorFile *tf, char ***names, int *n, McmErr *err) {
  NameList l = {0};
  if (H5Lvisit(tf->file, H5_INDEX_NAME, H5_ITER_INC, names_cb, &l) < 0) {
    tf_free_names(l.names, l.n);
    return mcm_err(err, "%s: cannot list its tensors: %s (hint: the file may be damaged)", tf->path, H5MSG());
  }
  if (l.n > 1) qsort(l.names, (size_t)l.n, sizeof *l.names, cmp_str);
  *names = l.names;
  *n = l.n;
  return 0;
}

/* ---------------------------------------------------------------- reading */

bool tf_has(TensorFile *tf, const char *name) {
  const char *n = clean_name(tf, name, NULL);
  return n && path_kind(tf->file, n, NULL, 0) == OBJ_DATASET;
}

/* Levenshtein distance, for "did you mean". */
static size_t edit_distance(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  size_t *row = MALLOC_CHECK((nb + 1) * sizeof *row);
  for (size_t j = 0; j <= nb; j++) row[j] = j;
  for (size_t i = 1; i <= na; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= nb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  size_t d = row[nb];
  free(row);
  return d;
}

/* True if `longer` is `shorter` with extra leading name parts ("unet/" or "model."). */
static bool suffix_match(const char *longer, const char *shorter) {
  size_t nl = strlen(longer), ns = strlen(shorter);
  if (nl <= ns || strcmp(longer + nl - ns, shorter)) return false;
  char c = longer[nl - ns - 1];
  return c == '.' || c == '/';
}

static int missing_tensor(TensorFile *tf, const char *name, McmErr *err) {
  char **names = NULL;
  int n = 0;
  if (tf_names(tf, &names, &n, NULL) < 0) n = 0;
  const char *best = NULL;
  size_t best_d = strlen(name) / 4 > 2 ? strlen(name) / 4 : 2;
  best_d++;
  for (int i = 0; i < n; i++) {
    size_t d = edit_distance(name, names[i]);
    if (d < best_d) best_d = d, best = names[i];
  }
  for (int i = 0; !best && i < n; i++)
    if (suffix_match(names[i], name) || suffix_match(name, names[i])) best = names[i];
  char hint[600];
  if (best) mcm_snprintf(hint, sizeof hint, "did you mean '%s'?", best);
  else if (n == 0) mcm_snprintf(hint, sizeof hint, "the file holds no tensors");
  else mcm_snprintf(hint, sizeof hint, "the file holds %d tensors, e.g. '%s'", n, names[0]);
  int rc = mcm_err(err, "%s: no tensor '%s' (hint: %s)", tf->path, name, hint);
  tf_free_names(names, n);
  return rc;
}

typedef struct {
  hid_t ds;
  int ndim;
  int64_t shape[MCM_MAX_DIMS];
  DType stored;
} OpenTensor;

/* What type the dataset holds, in mcm terms. */
static int dataset_dtype(TensorFile *tf, const char *name, hid_t ds, DType *out, McmErr *err) {
  hid_t ft = H5_CHECK(H5Dget_type(ds));
  H5T_class_t cls = H5Tget_class(ft);
  size_t size = H5Tget_size(ft);
  int rc = 0;
  if (cls == H5T_FLOAT && (size == 4 || size == 8)) {
    *out = DT_F32;
  } else if (cls == H5T_FLOAT && size == 2) {
    size_t spos, epos, esize, mpos, msize;
    H5_CHECK(H5Tget_fields(ft, &spos, &epos, &esize, &mpos, &msize));
    if (esize == 5 && msize == 10 && H5Tget_ebias(ft) == 15) *out = DT_F16;
    else rc = mcm_err(err, "%s: tensor '%s': unsupported 16-bit float layout (exponent %zu bits, mantissa %zu bits)",
                      tf->path, name, esize, msize);
  } else if (cls == H5T_INTEGER && size == 2 && H5Tget_sign(ft) == H5T_SGN_NONE) {
    char *tag = NULL, why[256];
    if (get_str_attr(ds, "dtype", &tag, why, sizeof why) == 0 && !strcmp(tag, "bfloat16")) *out = DT_BF16;
    else rc = mcm_err(err, "%s: tensor '%s' is uint16 without the attribute dtype = \"bfloat16\" (hint: mcm reads "
                      "only floating-point tensors; bf16 is stored as tagged uint16)", tf->path, name);
    free(tag);
  } else {
    rc = mcm_err(err, "%s: tensor '%s' is not fp32, fp16 or bf16 (HDF5 type class %d, %zu bytes)", tf->path, name,
                 (int)cls, size);
  }
  H5_CHECK(H5Tclose(ft));
  return rc;
}

static int open_tensor(TensorFile *tf, const char *name, OpenTensor *ot, McmErr *err) {
  const char *n = clean_name(tf, name, err);
  if (!n) return -1;
  char where[512];
  ObjKind k = path_kind(tf->file, n, where, sizeof where);
  if (k == OBJ_NONE) return missing_tensor(tf, n, err);
  if (k == OBJ_GROUP) return mcm_err(err, "%s: '%s' is a group, not a tensor", tf->path, name);
  if (k != OBJ_DATASET) return mcm_err(err, "%s: no tensor '%s' ('%s' is not a group)", tf->path, name, where);
  ot->ds = H5Dopen2(tf->file, n, H5P_DEFAULT);
  if (ot->ds < 0) return mcm_err(err, "%s: cannot open tensor '%s': %s", tf->path, name, H5MSG());
  int rc = dataset_dtype(tf, name, ot->ds, &ot->stored, err);
  hid_t space = H5_CHECK(H5Dget_space(ot->ds));
  H5S_class_t sc = H5Sget_simple_extent_type(space);
  int nd = H5Sget_simple_extent_ndims(space);
  if (rc == 0 && sc == H5S_NULL) {
    rc = mcm_err(err, "%s: tensor '%s' has a null dataspace (no shape)", tf->path, name);
  } else if (rc == 0 && (nd < 0 || nd > MCM_MAX_DIMS)) {
    rc = mcm_err(err, "%s: tensor '%s' has %d dimensions (mcm tensors have at most %d)", tf->path, name, nd, MCM_MAX_DIMS);
  } else if (rc == 0) {
    hsize_t dims[MCM_MAX_DIMS];
    H5_CHECK(H5Sget_simple_extent_dims(space, dims, NULL));
    ot->ndim = nd;
    for (int i = 0; i < nd; i++) ot->shape[i] = (int64_t)dims[i];
  }
  H5_CHECK(H5Sclose(space));
  if (rc != 0) H5_CHECK(H5Dclose(ot->ds));
  return rc;
}

int tf_info(TensorFile *tf, const char *name, int *ndim, int64_t shape[MCM_MAX_DIMS], DType *stored, McmErr *err) {
  OpenTensor ot;
  if (open_tensor(tf, name, &ot, err) < 0) return -1;
  H5_CHECK(H5Dclose(ot.ds));
  if (ndim) *ndim = ot.ndim;
  if (shape) memcpy(shape, ot.shape, (size_t)ot.ndim * sizeof *shape);
  if (stored) *stored = ot.stored;
  return 0;
}

int tf_read_raw(TensorFile *tf, const char *name, DType want, int ndim, const int64_t *expect_shape, void *out,
                McmErr *err) {
  MCM_CHECK(dtype_valid(want), "tf_read_raw: bad dtype %d", (int)want);
  MCM_CHECK(ndim >= 0 && ndim <= MCM_MAX_DIMS && (ndim == 0 || expect_shape), "tf_read_raw('%s'): bad rank %d or no shape",
            name ? name : "(null)", ndim);
  OpenTensor ot;
  if (open_tensor(tf, name, &ot, err) < 0) return -1;
  bool same = ndim == ot.ndim;
  for (int i = 0; same && i < ndim; i++) same = expect_shape[i] == ot.shape[i];
  int rc = 0;
  if (!same) {
    rc = mcm_err(err, "%s: tensor '%s': expected shape %s, file has %s", tf->path, name,
                 SHAPE_S(ndim, expect_shape), SHAPE_S(ot.ndim, ot.shape));
  } else if (numel_of(ndim, expect_shape) > 0) {
    int64_t n = numel_of(ndim, expect_shape);
    void *buf = want == ot.stored ? out : MALLOC_CHECK((size_t)n * dtype_size(ot.stored));
    if (H5Dread(ot.ds, mem_type(tf, ot.stored), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
      char why[512];
      h5_error_str(why, sizeof why);
      if (strstr(why, "Fletcher32") || strstr(why, "checksum"))
        rc = mcm_err(err, "%s: tensor '%s': data fails its checksum (%s) (hint: the file is corrupted; restore or "
                     "rewrite it)", tf->path, name, why);
      else
        rc = mcm_err(err, "%s: tensor '%s': cannot read its data: %s (hint: the file may be damaged)", tf->path,
                     name, why);
    } else if (buf != out) {
      for (int64_t i = 0; i < n; i++) from_f32(want, out, i, to_f32(ot.stored, buf, i));
    }
    if (buf != out) free(buf);
  }
  H5_CHECK(H5Dclose(ot.ds));
  return rc;
}

int tf_read(TensorFile *tf, const char *name, int ndim, const int64_t *expect_shape, float *out, McmErr *err) {
  return tf_read_raw(tf, name, DT_F32, ndim, expect_shape, out, err);
}

static herr_t attr_names_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
  char *list = data;
  size_t len = strlen(list);
  if (len < 400) mcm_snprintf(list + len, 512 - len, "%s%s", len ? ", " : "", name);
  return 0;
}

bool tf_has_attr(TensorFile *tf, const char *name) {
  return name && name[0] && H5Aexists(tf->file, name) > 0;
}

int tf_get_attr(TensorFile *tf, const char *name, char **value, McmErr *err) {
  *value = NULL;
  if (!tf_has_attr(tf, name)) {
    char list[512] = "";
    H5Aiterate2(tf->file, H5_INDEX_NAME, H5_ITER_INC, NULL, attr_names_cb, list);
    return mcm_err(err, "%s: no attribute '%s' (hint: %s%s)", tf->path, name ? name : "(null)",
                   list[0] ? "the file's attributes are: " : "the file has no attributes", list);
  }
  char why[512];
  if (get_str_attr(tf->file, name, value, why, sizeof why) < 0)
    return mcm_err(err, "%s: attribute '%s': %s", tf->path, name, why);
  return 0;
}

/* ---------------------------------------------------------------- tensors through a context */

int tf_write_tensor(Ctx *ctx, TensorFile *tf, const Tensor *t, DType stored, McmErr *err) {
  MCM_CHECK(t->name, "tf_write_tensor: tensor %s has no name", TENSOR_SHAPE_STR(t));
  float *host = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, host);
  int rc = tf_write(tf, t->name, stored, t->ndim, t->shape, host, err);
  free(host);
  return rc;
}

int tf_read_tensor(Ctx *ctx, TensorFile *tf, const char *name, Tensor *t, McmErr *err) {
  float *host = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  int rc = tf_read(tf, name, t->ndim, t->shape, host, err);
  if (rc == 0) tensor_from_host_f32(ctx, t, host);
  free(host);
  return rc;
}
