/* ./prepare as a library: manifest entries -> audio -> log-mel segments -> HDF5 shards.
 *
 * Per file (in a worker thread, each with its own Mel):
 *   audio_read at mel.rate (mono mix, libsoxr) -> skip if shorter than min_seconds or too
 *   short for the STFT, or silent (peak <= silence_threshold) -> cut windows by the crop
 *   policy -> drop silent windows -> audio_normalize the whole file (AudioLDM normalize_wav:
 *   mean removed, peak 0.5) -> per window: zero-pad to segment_frames x hop samples, then
 *   divide by the window's peak and scale by 0.5 (AudioLDM's second normalisation after
 *   pad_wav) -> mel_compute, keep the first segment_frames of its n/hop + 1 frames (as
 *   AudioLDM's _pad_spec crops 1025 to 1024). With keep_audio the padded, normalised window
 *   itself (segment_frames x hop samples) is stored beside the mel (shard.h's `audio`):
 *   what a vocoder learns to produce from that mel.
 *
 * Crop policy (window = segment_frames x hop samples, W; the file has n samples):
 *   segments  windows start at 0, H, 2H, ... (H = hop_frames x hop). Every window that
 *             fits (start + W <= n) is kept. Then, if audio after the last full window is
 *             not covered, the next start k H < n gives a partial window [k H, n), kept
 *             (zero-padded) when n - k H >= min_fraction x W. A file shorter than W is one
 *             partial window. A 25 s file at 16 kHz with W = 10.24 s, H = W: two full
 *             windows and a 4.52 s tail (0.44 of a window), kept if min_fraction <= 0.44.
 *   first     the window at 0 only, zero-padded when the file is shorter than W.
 * Silence is judged on the raw samples of each window (AudioLDM's crop retry tests
 * max |x| > 1e-4 before normalising); a silent window is dropped, not padded.
 *
 * Skips: every file that yields no segment is reported with one reason (report.tsv) and the
 * run goes on; counts per reason are in the summary.
 *
 * Output in out_dir (created if missing):
 *   shard_00000.h5 ...    shard_size segments each (data/shard.h), written atomically, in
 *                         manifest order: the bytes do not depend on the number of threads
 *   report.tsv            path <TAB> reason <TAB> detail, one line per skipped entry
 *   prepare_summary.txt   counts, hours, throughput, skip reasons, the resolved config
 *   encoders.h5           with encoders only: see "Latents and text embeddings" below
 * An out_dir that already holds shard_*.h5 is refused unless overwrite is set (then stale
 * shards beyond the new count are removed at the end, so a glob never mixes two runs).
 *
 * Latents and text embeddings (optional: o->vae and / or o->text_encoder). After the mel
 * shards are committed (prepare_run), or on the shards already in out_dir
 * (prepare_add_latents, ./prepare --add-latents), every row gets
 *   latent    (2L, frames/f, n_mels/f): the VAE posterior's moments, mean ‖ logvar along
 *             channels (vae_encode of the stored mel, logvar as the network gives it). The
 *             trainer draws a fresh z = (mean + exp(½·clamp(logvar, −30, 20))·ε)·scaling
 *             each epoch (vae_sample, then the scale), as MusicLDM trains on sampled latents.
 *   text_emb  (P): clap_text_embed of the row's caption (L2-normalised, P = 512 at full size).
 * The models are built from the sizes in the weights' `config` attribute (keys it does not
 * state keep MusicLDM's values) and checked against the data before anything is written:
 * one input channel, frames and n_mels multiples of the VAE's factor f, a tokenizer that
 * fits the tower (the unconditional embedding is computed first). The CLAP tokenizer
 * truncates at 512 tokens (MusicLDM), or fewer where the tower's position table is shorter.
 * Rows are encoded on o->device in batches of o->batch, without gradients; every value must
 * be finite. Each shard is then rewritten atomically: both datasets go into a private copy
 * ("<shard>.enc.tmp") that is renamed over the shard, so a failure at any point leaves the
 * shard exactly as it was. A run that fails part-way leaves the shards done so far complete.
 *
 * What is per dataset, not per row, goes into out_dir/encoders.h5 (a tensor file;
 * core/tensorfile.h), because shard.h has no way to add an attribute or a non-row dataset:
 *   uncond_text_emb     (P)  clap_text_embed("") (MusicLDM's unconditional embedding)
 *   vae_scaling_factor  ()   the VAE config's scaling_factor (1.0753 for MusicLDM); NOT
 *                            applied to the stored moments: the trainer multiplies z by it
 *   attributes          format "mcm-encoders 1", vae / text_encoder / tokenizer (the files
 *                       used), latent (the layout above in words)
 * It is replaced at the start of a run by one holding only what that run does not recompute
 * (carried over from the old file: a --text-encoder-only run keeps the VAE's entries), and
 * written in full once every shard is done: a dataset whose shards have latents but whose
 * encoders.h5 lacks vae_scaling_factor did not finish; run --add-latents again.
 * Memory: the arena keeps a batch's activations until it is done: 1.3 GB per row for the
 * full-size VAE on 1024 x 64 mels (measured), so o->batch sets the peak.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "data/manifest.h"
#include "data/mel.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PREPARE_CROP_SEGMENTS, PREPARE_CROP_FIRST } PrepareCrop;

typedef struct PrepareOptions {
  MelConfig mel;
  int segment_frames;
  PrepareCrop crop;
  int hop_frames;
  double min_fraction, min_seconds;
  float silence_threshold;
  int shard_size;
  int threads;             /* >= 1 */
  bool keep_audio;         /* also store each segment's waveform (the optional shard dataset `audio`) */
  const char *out_dir;
  bool overwrite;          /* replace shards left in out_dir by an earlier run */
  bool progress;           /* progress bar on stderr (the main sets it when stderr is a terminal) */
  bool quiet;              /* no summary on stdout */
  const char *config_text; /* resolved configuration (INI) for the summary; may be NULL */
  const char *sources;     /* what was read ("manifest.json"), for the summary; may be NULL */
  /* Encoders (see "Latents and text embeddings" above); all NULL / 0: mel shards only. */
  const char *vae;          /* converted VAE weights (tools/convert_diffusers.py vae.h5) */
  const char *text_encoder; /* converted CLAP weights (text_encoder.h5); needs tokenizer */
  const char *tokenizer;    /* directory holding vocab.json and merges.txt */
  const char *device;       /* "cpu" (also NULL), "cuda", "cuda:N" or "auto" */
  int batch;                /* rows per forward pass; 0: PREPARE_DEFAULT_BATCH */
} PrepareOptions;

#define PREPARE_DEFAULT_BATCH 4
#define PREPARE_ENCODERS_FILE "encoders.h5"
#define PREPARE_ENCODERS_FORMAT "mcm-encoders 1"

/* The options from the [mel] and [prepare] sections (threads 0 -> the number of cores). */
void prepare_options_from_config(const Config *cfg, PrepareOptions *o);

/* Counts of one run. */
#define PREPARE_MAX_REASONS 32
typedef struct PrepareStats {
  bool started;           /* false: refused before any work (bad options, unusable out_dir) */
  int files;              /* manifest entries, skipped ones included */
  int files_ok;           /* files that gave at least one segment */
  int files_skipped;
  int64_t segments;
  int shards;
  int64_t silent_windows; /* windows dropped as silent inside files that gave segments */
  double audio_seconds;   /* length of the files that gave segments */
  double segment_seconds; /* audio inside the written segments (padding excluded) */
  double wall_seconds;
  int n_reasons;
  char reason[PREPARE_MAX_REASONS][48];
  int reason_count[PREPARE_MAX_REASONS];
  /* Encoding (when o->vae or o->text_encoder was given). */
  int64_t encoded_rows;
  int encoded_shards;
  double encoded_audio_seconds; /* rows x frames x hop / rate */
  double encode_seconds;  /* loading the models included */
  char device[128];       /* where the encoders ran */
} PrepareStats;

/* Window starts and lengths (in samples, lengths <= W; a shorter one is zero-padded) for a
 * file of n samples, by the crop policy above. Silence is not considered. Returns the
 * number of windows; writes at most max of them (starts/lens may be NULL to count). */
int64_t prepare_windows(const PrepareOptions *o, int64_t n, int64_t *starts, int64_t *lens, int64_t max);

/* Runs the whole thing. Returns 0 when the run finished (even with zero segments written:
 * see stats->segments), -1 with err when it could not: refused before starting (bad
 * options, out_dir unusable or holding an earlier run's shards; stats->started false) or
 * failed part-way (a shard or report write failed; shards committed before stay valid). */
int prepare_run(const Manifest *m, const PrepareOptions *o, PrepareStats *stats, McmErr *err);

/* ./prepare --add-latents: encodes every shard_*.h5 already in o->out_dir (at least one
 * of o->vae, o->text_encoder; the mel and crop options are not used), replacing latent /
 * text_emb datasets an earlier run added. Returns 0, or -1 with err: refused before
 * starting (no shards, bad options, models that do not load or do not fit the shards;
 * stats->started false; nothing changed) or failed part-way (the failing shard unchanged,
 * earlier ones complete, encoders.h5 without the entries of this run). */
int prepare_add_latents(const PrepareOptions *o, PrepareStats *stats, McmErr *err);

#ifdef __cplusplus
}
#endif
