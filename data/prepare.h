/* ./prepare as a library: manifest entries -> audio -> log-mel segments -> HDF5 shards.
 *
 * Per file (in a worker thread, each with its own Mel):
 *   audio_read at mel.rate (mono mix, libsoxr) -> skip if shorter than min_seconds or too
 *   short for the STFT, or silent (peak <= silence_threshold) -> cut windows by the crop
 *   policy -> drop silent windows -> audio_normalize the whole file (AudioLDM normalize_wav:
 *   mean removed, peak 0.5) -> per window: zero-pad to segment_frames x hop samples, then
 *   divide by the window's peak and scale by 0.5 (AudioLDM's second normalisation after
 *   pad_wav) -> mel_compute, keep the first segment_frames of its n/hop + 1 frames (as
 *   AudioLDM's _pad_spec crops 1025 to 1024).
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
 * An out_dir that already holds shard_*.h5 is refused unless overwrite is set (then stale
 * shards beyond the new count are removed at the end, so a glob never mixes two runs).
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
  const char *out_dir;
  bool overwrite;          /* replace shards left in out_dir by an earlier run */
  bool progress;           /* progress bar on stderr (the main sets it when stderr is a terminal) */
  bool quiet;              /* no summary on stdout */
  const char *config_text; /* resolved configuration (INI) for the summary; may be NULL */
  const char *sources;     /* what was read ("manifest.json"), for the summary; may be NULL */
} PrepareOptions;

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

#ifdef __cplusplus
}
#endif
