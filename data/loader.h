/* The batch loader: training samples from a set of shards (data/shard.h), shuffled per
 * epoch, split across data-parallel ranks, read ahead on a background thread, and resumable
 * at an exact position.
 *
 * Samples. The shards (a directory: every *.h5 / *.hdf5 file in it; otherwise a glob
 * pattern or a single file; names ending in ".tmp", a killed writer's leftovers, are
 * skipped) are sorted by path. Global sample id g numbers their rows in that order: shard 0
 * rows first. N = the total. Every shard is validated at loader_create (shard_open, with its
 * checksums unless skip_checksum) and must agree with the first on frames, n_mels, rate and
 * hop; any bad shard stops loader_create with the error naming it.
 *
 * Shuffle. Epoch e uses the permutation perm_e of [0, N) from loader_permutation(seed, e):
 * Fisher-Yates where step i (i = N-1 .. 1) swaps i with j uniform in [0, i], j from Philox
 * (kernels/rng.h) under key `seed`, counter (i, e, 0x5348 << 16 | attempt) — a 64-bit draw
 * with rejection, so j is exactly uniform. The high counter words are never zero, so this
 * stream never meets the training noise stream (whose high counter words are zero). Every
 * rank computes the same permutation, and it depends only on (seed, epoch, N).
 *
 * Split across ranks. With world W, batch B, step s of an epoch covers the permutation
 * positions [s·W·B, min((s+1)·W·B, N)); rank r takes positions s·W·B + k·W + r for
 * k = 0 .. B-1 that are < N, in that order. Steps per epoch:
 *   drop_last = true:  S = floor(N / (W·B)); every batch is full, the last N mod (W·B)
 *                      positions of each epoch's permutation are not used (a different
 *                      tail each epoch). loader_create refuses N < W·B.
 *   drop_last = false: S = ceil(N / (W·B)); every sample is used exactly once per epoch.
 *                      Only the last step can be short, on each rank
 *                      n = #{k < B : s·W·B + k·W + r < N}, which may be 0 on some ranks
 *                      (when fewer than W positions remain): the trainer weights by n.
 * Either way every rank runs the same S steps, and no sample appears twice in an epoch.
 *
 * Position. {epoch, step} of the next batch loader_next will return; loader_seek to a saved
 * position (also in a new loader) continues with exactly the same batches. The position
 * also records N, W, B and the seed, and loader_seek refuses a position saved with other
 * values (the sequence would differ).
 *
 * Prefetch. With prefetch >= 1 a background thread fills a ring of `prefetch` batches in
 * order; batches are the same for any prefetch. prefetch = 0 reads in loader_next. (If the
 * HDF5 library is not thread-safe the loader reads in loader_next whatever prefetch says.)
 * A read error (a shard damaged after it was validated) is returned by loader_next.
 *
 * A Loader must be used by one thread at a time. Open files: at most LOADER_MAX_OPEN shards
 * stay open (least recently used closed first).
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "data/shard.h"
#include "kernels/context.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LOADER_MAX_OPEN 64
#define LOADER_MAX_PREFETCH 64

/* What each batch holds (LoaderOptions.fields); 0 means LOAD_MEL | LOAD_CAPTION. */
enum {
  LOAD_MEL = 1u << 0,
  LOAD_CAPTION = 1u << 1,
  LOAD_LATENT = 1u << 2,   /* every shard must have latents of one shape */
  LOAD_TEXT_EMB = 1u << 3, /* every shard must have text embeddings of one size */
  LOAD_AUDIO = 1u << 4,    /* every shard must have audio rows of one length (vocoder training) */
};

typedef struct LoaderOptions {
  const char *shard_glob_or_dir;
  int batch_size; /* B >= 1 */
  uint64_t seed;
  int rank, world; /* 0 <= rank < world */
  bool drop_last;
  int prefetch;       /* batches read ahead, 0 .. LOADER_MAX_PREFETCH */
  unsigned fields;    /* LOAD_* bits */
  bool skip_checksum; /* validate shard structure only (no full read at start) */
} LoaderOptions;

typedef struct Batch {
  int n;          /* samples in this batch on this rank, 0 .. B */
  float *mel;     /* (n, frames, n_mels) host, or NULL without LOAD_MEL */
  char **captions; /* (n) UTF-8, or NULL without LOAD_CAPTION */
  float *latent;  /* (n, C, T, F) host, or NULL without LOAD_LATENT */
  float *text_emb; /* (n, D) host, or NULL without LOAD_TEXT_EMB */
  int64_t *index; /* (n) global sample ids */
  int64_t epoch, step_in_epoch;
  int frames, n_mels;        /* one mel row: (frames, n_mels) */
  int latent_dims[3];        /* one latent row: (C, T, F), 0s without LOAD_LATENT */
  int emb_dim;               /* one text_emb row: (D), 0 without LOAD_TEXT_EMB */
  float *audio;              /* (n, S) host, or NULL without LOAD_AUDIO */
  int audio_samples;         /* S of one audio row, 0 without LOAD_AUDIO */
} Batch;

typedef struct LoaderPosition {
  int64_t epoch, step;        /* the next batch */
  int64_t n_samples;          /* consistency checks on seek */
  int64_t world, batch_size;
  uint64_t seed;
} LoaderPosition;

typedef struct Loader Loader;

Loader *loader_create(const LoaderOptions *o, McmErr *err);
/* The next batch, valid until the next loader_next / loader_seek / loader_destroy. Epochs
 * follow each other without end; a new epoch reshuffles. NULL + err on a read error. */
const Batch *loader_next(Loader *l, McmErr *err);
int loader_position(const Loader *l, LoaderPosition *pos);
int loader_seek(Loader *l, const LoaderPosition *pos, McmErr *err);
void loader_destroy(Loader *l);

int64_t loader_sample_count(const Loader *l);   /* N over all shards */
int64_t loader_steps_per_epoch(const Loader *l); /* S */
ShardInfo loader_info(const Loader *l);
bool loader_latent_dims(const Loader *l, int *C, int *T, int *F); /* with LOAD_LATENT */
int loader_text_emb_dim(const Loader *l);                         /* with LOAD_TEXT_EMB, else 0 */
int loader_audio_samples(const Loader *l);                        /* with LOAD_AUDIO, else 0 */
int loader_shard_count(const Loader *l);
/* Where global sample g lives: the shard's path, and its row there in *row. */
const char *loader_sample_origin(const Loader *l, int64_t g, int64_t *row);

/* perm (n) = the permutation of epoch `epoch` described above. */
void loader_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);

/* Copies the batch into an existing tensor on any device (fp32 or bf16):
 * mel -> out (n, 1, frames, n_mels); latent -> out (n, C, T, F); text_emb -> out (n, D);
 * audio -> out (n, S).
 * A shape that does not match is a caller bug and exits. */
void loader_batch_to_tensor(Ctx *ctx, const Batch *b, Tensor *out);
void loader_latent_to_tensor(Ctx *ctx, const Batch *b, Tensor *out);
void loader_text_emb_to_tensor(Ctx *ctx, const Batch *b, Tensor *out);
void loader_audio_to_tensor(Ctx *ctx, const Batch *b, Tensor *out);

#ifdef __cplusplus
}
#endif
