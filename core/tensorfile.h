/* Tensor files: named tensors and string attributes in HDF5 (checkpoints, converted
 * weights, test fixtures).
 *
 * On disk (readable by h5py / h5dump without mcm):
 *  - a tensor is a dataset at its name; '/' in a name makes groups ("unet/conv_in.weight"
 *    is dataset conv_in.weight in group unet), dots are plain characters
 *    ("model.diffusion_model.input_blocks.0.0.weight" is one dataset in the root group).
 *    Names are relative to the root (a leading '/' is ignored); empty, "." and ".."
 *    components are refused.
 *  - fp32: H5T_IEEE_F32LE.  fp16: a 2-byte little-endian IEEE half built from
 *    H5T_IEEE_F32LE (sign bit 15, exponent bits 10..14 with bias 15, mantissa bits 0..9);
 *    h5py reads it as float16.
 *  - bf16: H5T_STD_U16LE holding the bf16 bit patterns, with a dataset attribute
 *    dtype = "bfloat16". HDF5 has no bfloat16 type, and a uint16 dataset cannot be
 *    silently misread as numbers: h5py users see uint16 and must convert on purpose, e.g.
 *    (x.astype(np.uint32) << 16).view(np.float32).
 *  - string attributes: variable-length UTF-8 scalars on the root group (h5py: str).
 *  - every tensor with at least one element is chunked (chunks of about 1 MiB, whole rows
 *    where possible) with the Fletcher32 filter, so a flipped bit in tensor data is an error
 *    on read, not a silently wrong weight. Tensors with no elements and rank-0 tensors are
 *    stored contiguous (nothing worth checksumming). No compression: weights barely
 *    compress and checkpoint loads should be I/O-bound, not CPU-bound.
 *  - object timestamps are off, so the same tensors give the same bytes.
 *
 * Shapes: rank 0..5. A dimension of size 0 is allowed and round-trips (the tensor has no
 * data). Reads check the rank and every dimension exactly.
 *
 * Writes are atomic: tf_create writes "<path>.tmp" (replacing a stale one left by a killed
 * writer); tf_commit flushes, closes and fsyncs it, renames it over <path> and fsyncs the
 * directory. Until tf_commit returns, <path> holds its previous contents. After any failed
 * tf_write* / tf_set_attr the handle only accepts tf_abort (tf_commit refuses it).
 *
 * Reads convert any stored type to the type asked for (float64 datasets written by other
 * tools read as fp32; tf_info reports them as DT_F32).
 *
 * Errors a file can cause (missing, not HDF5, truncated, corrupted data, missing tensor,
 * wrong shape, disk full) return -1 / NULL with an McmErr naming the file and the tensor.
 * An HDF5 call that should never fail goes through H5_CHECK, which exits naming
 * file:line, the call and HDF5's innermost error message. HDF5's own error printing is
 * turned off by tf_create / tf_open (h5_quiet). HDF5 itself is not hardened against
 * deliberately malformed metadata; damage to tensor data is caught by the checksums.
 *
 * A TensorFile must be used by one thread at a time.
 */
#pragma once
#include <hdf5.h>

#include "kernels/context.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- HDF5 helpers */

/* Fatal check for an HDF5 call that returns a negative value (herr_t, hid_t, htri_t) on
 * failure; evaluates to the call's value, so `hid_t s = H5_CHECK(H5Screate(...));` works. */
#define H5_CHECK(expr) h5_check_((hid_t)(expr), __FILE__, __LINE__, #expr)
_Noreturn void h5_fatal(const char *file, int line, const char *expr);
static inline hid_t h5_check_(hid_t v, const char *file, int line, const char *expr) {
  if (v < 0) h5_fatal(file, line, expr);
  return v;
}

/* Writes the innermost message of this thread's HDF5 error stack into buf (or "no HDF5
 * error message" when the stack is empty) and returns buf. For mcm_err paths. */
char *h5_error_str(char *buf, size_t size);

/* Turns HDF5's automatic error printing off for this process (idempotent). */
void h5_quiet(void);
/* The file-access settings every mcm HDF5 file is opened with (format bounds readable by
 * HDF5 >= 1.10, strong close, tolerant locking). Close it with H5Pclose. */
hid_t h5_file_access(void);

/* ---------------------------------------------------------------- tensor files */

typedef struct TensorFile TensorFile;

/* Writing. Shapes are rank 0..5 (shape may be NULL for rank 0). */
TensorFile *tf_create(const char *path, McmErr *err);
/* data: fp32 host values, prod(shape) of them, rounded to `stored` (nearest, ties to even). */
int tf_write(TensorFile *tf, const char *name, DType stored, int ndim, const int64_t *shape,
             const float *data, McmErr *err);
/* data: prod(shape) values already in `dtype` (fp16 / bf16 as uint16 bit patterns). */
int tf_write_raw(TensorFile *tf, const char *name, DType dtype, int ndim, const int64_t *shape,
                 const void *data, McmErr *err);
/* A string attribute on the root group; setting a name again replaces its value. */
int tf_set_attr(TensorFile *tf, const char *name, const char *value, McmErr *err);
/* Publishes the file at its path. Frees tf whether it succeeds or not; on failure the
 * temporary is removed and <path> is untouched. */
int tf_commit(TensorFile *tf, McmErr *err);
/* Closes and removes the temporary; <path> is untouched. Frees tf. NULL is a no-op. */
void tf_abort(TensorFile *tf);

/* Reading. (The read calls also work on a handle from tf_create, on what it holds so far.) */
TensorFile *tf_open(const char *path, McmErr *err);
/* Frees tf; on a handle from tf_create it is tf_abort. NULL is a no-op. */
void tf_close(TensorFile *tf);
bool tf_has(TensorFile *tf, const char *name);
int tf_info(TensorFile *tf, const char *name, int *ndim, int64_t shape[MCM_MAX_DIMS], DType *stored,
            McmErr *err);
/* Reads into out (prod(expect_shape) fp32 values) after checking rank and shape exactly. */
int tf_read(TensorFile *tf, const char *name, int ndim, const int64_t *expect_shape, float *out,
            McmErr *err);
/* Same, converted to `want` (DT_F32, DT_BF16 or DT_F16; 16-bit types as uint16 bits). */
int tf_read_raw(TensorFile *tf, const char *name, DType want, int ndim, const int64_t *expect_shape,
                void *out, McmErr *err);
/* True when the root group has an attribute of that name (of any type: whether it reads as
 * a string is tf_get_attr's question). Lets a caller tell a missing optional attribute
 * from one that is present but unreadable. */
bool tf_has_attr(TensorFile *tf, const char *name);
/* *value is malloc'd; the caller frees it. */
int tf_get_attr(TensorFile *tf, const char *name, char **value, McmErr *err);
/* Every tensor's name, sorted by strcmp; free with tf_free_names. */
int tf_names(TensorFile *tf, char ***names, int *n, McmErr *err);
void tf_free_names(char **names, int n);
/* The path the handle reads or will publish (not the temporary). */
const char *tf_path(const TensorFile *tf);

/* Tensor helpers through the context (copies device <-> host through an fp32 buffer;
 * exact for fp32 and bf16 tensors). */
int tf_write_tensor(Ctx *ctx, TensorFile *tf, const Tensor *t, DType stored, McmErr *err); /* name = t->name */
int tf_read_tensor(Ctx *ctx, TensorFile *tf, const char *name, Tensor *t, McmErr *err);     /* shape check against t */

#ifdef __cplusplus
}
#endif
