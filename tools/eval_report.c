/* eval_report: the evaluation report of issue 9 — Fréchet distances, prompt adherence and
 * latency of several sets of generated clips against the reference clips, as report.json,
 * report.md and mels.png (data/eval_report.h).
 *
 *   build/cpu/tools/eval_report --reference data/demo/audio --manifest data/demo/manifest.json \
 *       --prompts samples/prompts.txt --set student_cm4=samples/student_cm4,timings=logs/sample_student_cm4.log \
 *       --out eval
 */
#include <stdio.h>

#include "data/eval_report.h"

int main(int argc, char **argv) {
  EvalReportOptions o;
  McmErr err;
  if (eval_report_parse(argc, argv, &o, &err)) return fprintf(stderr, "eval_report: %s\n", err.msg), 2;
  if (o.help) return fputs(EVAL_REPORT_USAGE, stdout), 0;
  int rc = eval_report_run(&o, &err);
  if (rc) fprintf(stderr, "eval_report: %s; nothing was written\n", err.msg);
  eval_report_options_free(&o);
  return rc ? 2 : 0;
}
