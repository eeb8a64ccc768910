/* The evaluation report (issue 9): several sets of generated clips against one reference set,
 * in one command (tools/eval_report):
 *
 *   eval_report --reference data/demo/audio --manifest data/demo/manifest.json \
 *       --prompts samples/prompts.txt --set student_cm4=samples/student_cm4,timings=logs/s.log \
 *       --set teacher_ddim50=samples/teacher_ddim50 ... --out eval [--audiomae W [--bridge B]]
 *
 * writes OUTDIR/report.json, OUTDIR/report.md (a Markdown table) and OUTDIR/mels.png. Per set:
 *   quality     Fréchet distance to the reference on log-mel statistics and, with --audiomae,
 *               on AudioMAE features (data/evaluate.h: the same loading and distance code as
 *               tools/evaluate).
 *   adherence   (data/adherence.h) tempo acc1 / acc2, key accuracy and MIREX score, genre
 *               accuracy of the nearest reference class mean. Generated clips map to captions
 *               by ./infer's names: output k of --prompts-file is <k>_<slug>_seed<s>.<ext>,
 *               from prompt line k / --num-per-prompt (non-empty lines, trimmed, as ./infer
 *               reads them); the caption is looked up in the manifest (exact match) for its
 *               bpm, key and genre. A clip whose caption has no manifest entry, or whose name
 *               is not an ./infer output name, is "unlabelled": left out of the fractions and
 *               counted in the output. A name whose slug or number does not fit the prompts
 *               file is an error (the wrong prompts file would give meaningless numbers).
 *   latency     from the set's ./infer --timings log (timings=LOG): text encoding, sampling,
 *               decoding and vocoding seconds per clip, and the real-time factor RTF =
 *               (those four summed) / seconds of audio (below 1 is faster than real time;
 *               ./infer prints the inverse as "x real time"). The last timings line of the
 *               log counts.
 * The reference row gives the detectors' accuracy on the real clips (their labels from the
 * manifest by file): the ceiling a generator can reach under these detectors; its genre
 * accuracy is leave-one-out.
 * mels.png: one row per set (the reference first, then the sets in order), the log-mels of
 * the first --png-clips clips (in name order) of each (data/melpng.h's grid).
 *
 * Bad input (a missing folder, a bad --set, an unreadable manifest, prompts file or timings
 * log, a set with fewer than 2 usable clips, ...) is one line in err and nothing written; the
 * three files are written to temporary names and renamed only when all three are complete. */
#pragma once
#include <stdbool.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One ./infer --timings line. */
typedef struct EvalTimings {
  char device[128];
  int outputs;
  double audio_seconds; /* of all outputs together */
  double load, text, sampling, decoding, vocoding, total; /* seconds, all outputs together */
} EvalTimings;

/* The last "infer: timings on ..." line of a log. -1 with err when the file cannot be read or
 * has no such line. */
int eval_timings_parse(const char *log, EvalTimings *t, McmErr *err);

typedef struct EvalReportSet {
  char *name, *dir, *timings; /* timings NULL without a log */
} EvalReportSet;

typedef struct EvalReportOptions {
  const char *reference, *manifest, *prompts, *out;
  EvalReportSet *sets;
  int n_sets;
  const char *audiomae, *bridge, *device; /* AudioMAE features (optional), as tools/evaluate */
  int batch;                              /* AudioMAE clips per forward; <= 0 = 8 */
  int num_per_prompt;                     /* ./infer --num-per-prompt of the sets; <= 0 = 1 */
  int png_clips;                          /* clips per row of mels.png; <= 0 = 4 */
  bool help;                              /* --help was given: nothing else was parsed */
} EvalReportOptions;

/* Parses the command line (argv[0] is the program). -1 with err on a bad option. */
int eval_report_parse(int argc, char **argv, EvalReportOptions *o, McmErr *err);
void eval_report_options_free(EvalReportOptions *o);

/* The whole report. -1 with err (one line) and nothing written on failure. */
int eval_report_run(const EvalReportOptions *o, McmErr *err);

extern const char EVAL_REPORT_USAGE[];

#ifdef __cplusplus
}
#endif
