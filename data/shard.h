/* Training shards: HDF5 files of mel segments with their captions, written by ./prepare and
 * read by the batch loader (data/loader.h).
 *
 * On disk (format "mcm-shard", version 1; readable by h5py without mcm). N rows:
 *   mel      (N, frames, n_mels) float32 LE: log-mel segments, time-major. Chunked one row
 *            per chunk, byte-shuffle + deflate level 4 + Fletcher32.
 *   caption  (N,) variable-length UTF-8 strings (h5py: str); may be empty.
 *   source   (N,) variable-length UTF-8 strings: the audio file the row came from.
 *   offset   (N,) int64: the row's first sample in `source`, at `rate` (negative never).
 *            caption/source/offset are chunked (1024 rows) without filters: HDF5 >= 1.12.1
 *            refuses filters on variable-length types, so strings carry no checksum.
 *   latent   optional (N, C, T, F) float32, one row per chunk, shuffle + deflate + Fletcher32
 *   text_emb optional (N, D) float32, same filters; both added later by shard_add_*().
 *   audio    optional (N, S) float32, same filters: the waveform segment the row's mel was
 *            computed from (S = frames·hop samples at `rate`, as ./prepare normalised it),
 *            written with the rows when the writer keeps audio (shard_writer_keep_audio;
 *            ./prepare's [prepare] keep_audio), for vocoder training.
 * Root attributes: format = "mcm-shard" (string), version = 1, frames, n_mels, rate, hop,
 * count = N (int64 scalars), mel_fnv1a64 (uint64 scalar), and latent_fnv1a64 /
 * text_emb_fnv1a64 / audio_fnv1a64 when those datasets exist.
 *
 * Checksums: FNV-1a 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the
 * little-endian fp32 bytes of the whole dataset in row-major order. Fletcher32 catches a
 * damaged chunk as it is read; the FNV sum, checked when a shard is opened, also catches a
 * file that is internally consistent but holds other data than its writer wrote (a chunk
 * rewritten with a matching Fletcher32, a dataset replaced by another tool). In numpy:
 *   h = 0xcbf29ce484222325
 *   for b in f["mel"][...].astype("<f4").tobytes(): h = ((h ^ b) * 0x100000001b3) % 2**64
 *
 * Writes are atomic: shard_create writes "<path>.tmp" (replacing a stale one), shard_commit
 * flushes, closes and fsyncs it, renames it over <path> and fsyncs the directory. A killed
 * writer leaves at most the .tmp, never a partial <path>. The writer holds one row at a time
 * (rows are appended by extending the datasets), so its memory does not grow with N.
 *
 * shard_open validates everything a bad file can get wrong (missing, not HDF5, not a shard,
 * another version, attribute and dataset shapes or types that disagree, a failed checksum,
 * non-finite values) and returns NULL with one line naming the file and what is wrong.
 *
 * A Shard or ShardWriter must be used by one thread at a time. The HDF5 library mcm links
 * is thread-safe (one global lock), so different handles may be used from different threads.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHARD_FORMAT "mcm-shard"
#define SHARD_VERSION 1

typedef struct ShardInfo {
  int frames, n_mels, rate, hop;
} ShardInfo;

/* ---------------------------------------------------------------- writing */

typedef struct ShardWriter ShardWriter;

/* Starts "<path>.tmp". Errors: a non-positive field of info, path is a directory, the
 * directory is missing or not writable. */
ShardWriter *shard_create(const char *path, const ShardInfo *info, McmErr *err);

/* Appends one row. mel: (frames, n_mels). caption / source: UTF-8 (NULL is ""), offset >= 0.
 * A row refused for its content (NaN or Inf in mel, invalid UTF-8, negative offset) returns
 * -1 and writes nothing: the writer stays usable. A failed write (disk full) returns -1 and
 * leaves the writer accepting only shard_abort (shard_commit then fails). */
int shard_append(ShardWriter *w, const float *mel, const char *caption, const char *source,
                 int64_t offset_samples, McmErr *err);

/* Makes the writer keep an audio row of `samples` samples with every mel row (the optional
 * `audio` dataset). Call it once, before the first row. */
int shard_writer_keep_audio(ShardWriter *w, int samples, McmErr *err);
/* shard_append with the row's audio (samples as given to shard_writer_keep_audio; finite).
 * A writer that keeps audio takes rows only through this one, and one that does not only
 * with audio NULL (shard_append): a mix is a caller bug and exits. */
int shard_append_audio(ShardWriter *w, const float *mel, const float *audio, const char *caption, const char *source,
                       int64_t offset_samples, McmErr *err);

/* Rows appended so far. */
int64_t shard_writer_count(const ShardWriter *w);

/* Writes count and checksum, flushes, fsyncs, renames over <path>. Frees w whether it
 * succeeds or not; on failure the temporary is removed and <path> is untouched. A shard of
 * zero rows is valid. */
int shard_commit(ShardWriter *w, McmErr *err);

/* Removes the temporary; <path> is untouched. Frees w. NULL is a no-op. */
void shard_abort(ShardWriter *w);

/* Adds (or replaces) the optional per-row datasets of a committed shard, atomically: the
 * file is copied to "<path>.tmp", the dataset written there, the copy renamed over <path>.
 * The shard is validated first (as shard_open does). latent: (N, C, T, F); emb: (N, D),
 * N = the shard's count; values must be finite. */
int shard_add_latents(const char *path, const float *latent, int C, int T, int F, McmErr *err);
int shard_add_text_emb(const char *path, const float *emb, int D, McmErr *err);

/* FNV-1a 64 of n bytes, continuing from h (start with SHARD_FNV_BASIS). */
#define SHARD_FNV_BASIS 0xcbf29ce484222325ull
uint64_t shard_fnv1a64(uint64_t h, const void *data, size_t n);

/* ---------------------------------------------------------------- reading */

typedef struct Shard Shard;

enum {
  SHARD_NO_VERIFY = 1u << 0, /* skip reading all data for the checksums (structure still checked) */
};

/* shard_open validates structure and checksums: it reads and inflates every row once (on
 * the order of 100 MB/s of fp32 on one core; HDF5's global lock serialises this across
 * threads). shard_open_flags(path, SHARD_NO_VERIFY, err) checks the structure only. */
Shard *shard_open(const char *path, McmErr *err);
Shard *shard_open_flags(const char *path, unsigned flags, McmErr *err);
void shard_close(Shard *s);

int64_t shard_count(const Shard *s);
ShardInfo shard_info(const Shard *s);
const char *shard_path(const Shard *s);
/* Optional datasets: false / 0 when the shard has none. */
bool shard_latent_dims(const Shard *s, int *C, int *T, int *F);
int shard_text_emb_dim(const Shard *s);
int shard_audio_samples(const Shard *s); /* S of the audio rows, 0 without audio */

/* Row i (0 <= i < count; outside is a caller bug and exits). mel: (frames, n_mels) or NULL;
 * *caption is malloc'd (free it) when caption is not NULL. Errors: damaged data. */
int shard_read(Shard *s, int64_t i, float *mel, char **caption, McmErr *err);
/* *source malloc'd (if not NULL); *offset (if not NULL). */
int shard_read_meta(Shard *s, int64_t i, char **source, int64_t *offset, McmErr *err);
int shard_read_latent(Shard *s, int64_t i, float *latent /* (C, T, F) */, McmErr *err);
int shard_read_text_emb(Shard *s, int64_t i, float *emb /* (D) */, McmErr *err);
int shard_read_audio(Shard *s, int64_t i, float *audio /* (S) */, McmErr *err);

#ifdef __cplusplus
}
#endif
