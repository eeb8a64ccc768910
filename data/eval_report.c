/* The evaluation report: options, prompts, timings logs, per-set scores and the three output
 * files (eval_report.h). */
#include "data/eval_report.h"

#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/io.h"
#include "data/adherence.h"
#include "data/evaluate.h"
#include "data/melpng.h"
#include "data/prompts.h"
#include "diffusion/pipeline.h"

const char EVAL_REPORT_USAGE[] =
    "usage: eval_report --reference DIR --manifest FILE --prompts FILE --set NAME=DIR[,timings=LOG] ...\n"
    "                   --out OUTDIR [options]\n\n"
    "Compares sets of generated clips with the reference clips and writes OUTDIR/report.json,\n"
    "OUTDIR/report.md (a Markdown table) and OUTDIR/mels.png (log-mel spectrograms, one row per set).\n"
    "Per set: Frechet distance on log-mel statistics (and AudioMAE features with --audiomae); prompt\n"
    "adherence without a learned model (tempo, key, and genre by the nearest class mean of the\n"
    "reference clips' log-mel embeddings); latency per clip and real-time factor from the set's\n"
    "./infer --timings log. The reference row is the detectors' accuracy on the real clips.\n\n"
    "required:\n"
    "  --reference DIR      the real clips (e.g. data/demo/audio)\n"
    "  --manifest FILE      their manifest with per-clip caption, genre, key and bpm (data/demo/manifest.json)\n"
    "  --prompts FILE       the --prompts-file the sets were sampled from (output k <-> prompt line k)\n"
    "  --set NAME=DIR[,timings=LOG]  a folder of ./infer outputs, and optionally the log of that run\n"
    "                       (stderr of ./infer --timings); repeat for every set, in table order\n"
    "  --out OUTDIR         where the report goes (created if missing; its parent must exist)\n"
    "options:\n"
    "  --audiomae WEIGHTS   also the FD on AudioMAE features\n"
    "  --bridge PATH        feed AudioMAE the MusicLDM mel through this bridge (default: exact fbank)\n"
    "  --device D           cpu, cuda, cuda:N or auto (default auto) for AudioMAE\n"
    "  --batch N            AudioMAE clips per forward (default 8)\n"
    "  --num-per-prompt N   the sets were sampled with ./infer --num-per-prompt N (default 1)\n"
    "  --png-clips N        spectrograms per row of mels.png (default 4)\n"
    "  --help               this text\n";

/* err = "<prefix>: <err's message>" (the message is copied first: it is both source and target). */
static int prefix_err(McmErr *err, const char *prefix) {
  char msg[sizeof err->msg];
  memcpy(msg, err->msg, sizeof msg);
  msg[sizeof msg - 1] = 0;
  return mcm_err(err, "%s: %s", prefix, msg);
}

/* ------------------------------------------------------------------ timings logs */

int eval_timings_parse(const char *log, EvalTimings *t, McmErr *err) {
  memset(t, 0, sizeof *t);
  FILE *f = fopen(log, "r");
  if (!f) return mcm_err(err, "timings log %s: %s", log, strerror(errno));
  char *line = NULL, *last = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) >= 0) {
    const char *p = strstr(line, "infer: timings on ");
    if (!p) continue;
    free(last);
    last = strdup(p);
    MCM_CHECK(last, "out of memory");
  }
  bool bad = ferror(f);
  free(line);
  fclose(f);
  if (bad) return free(last), mcm_err(err, "timings log %s: read error", log);
  if (!last)
    return mcm_err(err, "timings log %s: no \"infer: timings on ...\" line (hint: run ./infer with --timings)", log);
  /* "infer: timings on DEVICE for N output[s] (A s of audio): loading ..." (infer.c print_timings) */
  const char *dev = last + strlen("infer: timings on "), *for_ = strstr(dev, " for ");
  const char *paren = for_ ? strchr(for_, '(') : NULL;
  int ok = for_ && paren && sscanf(for_, " for %d output", &t->outputs) == 1 &&
           sscanf(paren, "(%lf s of audio): loading %lf s | text encoding %lf s, sampling %lf s, decoding %lf s, "
                         "vocoding %lf s, total %lf s",
                  &t->audio_seconds, &t->load, &t->text, &t->sampling, &t->decoding, &t->vocoding, &t->total) == 7;
  if (ok) mcm_snprintf(t->device, sizeof t->device, "%.*s", (int)(for_ - dev), dev);
  free(last);
  if (!ok || t->outputs < 1 || !(t->audio_seconds > 0))
    return mcm_err(err, "timings log %s: the \"infer: timings\" line is not in ./infer's form", log);
  return 0;
}

/* ------------------------------------------------------------------ options */

static char *dup_str(const char *s, size_t n) {
  char *d = strndup(s, n);
  MCM_CHECK(d, "out of memory");
  return d;
}

/* "NAME=DIR[,timings=LOG]". */
static int parse_set(const char *spec, EvalReportSet *s, McmErr *err) {
  memset(s, 0, sizeof *s);
  const char *eq = strchr(spec, '=');
  size_t name_len = eq ? (size_t)(eq - spec) : 0;
  bool name_ok = name_len >= 1 && name_len <= 64;
  for (size_t i = 0; i < name_len && name_ok; i++)
    name_ok = isalnum((unsigned char)spec[i]) || strchr("_-.+", spec[i]);
  if (!name_ok || !eq[1])
    return mcm_err(err, "--set %s: expected NAME=DIR[,timings=LOG] with NAME of 1-64 letters, digits or _-.+", spec);
  const char *dir = eq + 1, *tm = strstr(dir, ",timings=");
  if (tm && !tm[strlen(",timings=")]) return mcm_err(err, "--set %s: timings= needs a log file", spec);
  if (tm == dir) return mcm_err(err, "--set %s: expected NAME=DIR[,timings=LOG] (no DIR)", spec);
  s->name = dup_str(spec, name_len);
  s->dir = dup_str(dir, tm ? (size_t)(tm - dir) : strlen(dir));
  if (tm) s->timings = dup_str(tm + strlen(",timings="), strlen(tm + strlen(",timings=")));
  if (!strcmp(s->name, "reference")) {
    free(s->name), free(s->dir), free(s->timings);
    memset(s, 0, sizeof *s);
    return mcm_err(err, "--set %s: the name \"reference\" is the reference row's", spec);
  }
  return 0;
}

static int parse_count(const char *opt, const char *v, int lo, int hi, int *out, McmErr *err) {
  char *end;
  long x = strtol(v, &end, 10);
  if (!*v || *end || x < lo || x > hi) return mcm_err(err, "%s %s: expected an integer %d..%d", opt, v, lo, hi);
  *out = (int)x;
  return 0;
}

int eval_report_parse(int argc, char **argv, EvalReportOptions *o, McmErr *err) {
  memset(o, 0, sizeof *o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      eval_report_options_free(o);
      o->help = true;
      return 0;
    }
    const char **dst = !strcmp(a, "--reference")  ? &o->reference
                       : !strcmp(a, "--manifest") ? &o->manifest
                       : !strcmp(a, "--prompts")  ? &o->prompts
                       : !strcmp(a, "--out")      ? &o->out
                       : !strcmp(a, "--audiomae") ? &o->audiomae
                       : !strcmp(a, "--bridge")   ? &o->bridge
                       : !strcmp(a, "--device")   ? &o->device
                                                  : NULL;
    bool known = dst || !strcmp(a, "--set") || !strcmp(a, "--batch") || !strcmp(a, "--num-per-prompt") ||
                 !strcmp(a, "--png-clips");
    int rc = 0;
    if (!known) rc = mcm_err(err, "unknown argument %s (see --help)", a);
    else if (!v) rc = mcm_err(err, "%s needs a value", a);
    else if (dst && *dst) rc = mcm_err(err, "%s given twice", a);
    else if (dst) *dst = v;
    else if (!strcmp(a, "--batch")) rc = parse_count(a, v, 1, 4096, &o->batch, err);
    else if (!strcmp(a, "--num-per-prompt")) rc = parse_count(a, v, 1, 64, &o->num_per_prompt, err);
    else if (!strcmp(a, "--png-clips")) rc = parse_count(a, v, 1, 16, &o->png_clips, err);
    else {
      o->sets = REALLOC_CHECK(o->sets, sizeof(EvalReportSet) * (size_t)(o->n_sets + 1));
      rc = parse_set(v, &o->sets[o->n_sets], err);
      if (!rc) {
        for (int k = 0; k < o->n_sets && !rc; k++)
          if (!strcmp(o->sets[k].name, o->sets[o->n_sets].name)) rc = mcm_err(err, "--set %s: the name is used twice", v);
        o->n_sets++; /* freed with the others either way */
      }
    }
    if (rc) return eval_report_options_free(o), -1;
    i++;
  }
  const char *missing = !o->reference ? "--reference DIR"
                        : !o->manifest ? "--manifest FILE"
                        : !o->prompts  ? "--prompts FILE"
                        : !o->n_sets   ? "--set NAME=DIR"
                        : !o->out      ? "--out OUTDIR"
                                       : NULL;
  if (missing) return eval_report_options_free(o), mcm_err(err, "%s is required (see --help)", missing);
  if (o->bridge && !o->audiomae)
    return eval_report_options_free(o), mcm_err(err, "--bridge %s needs --audiomae WEIGHTS", o->bridge);
  return 0;
}

void eval_report_options_free(EvalReportOptions *o) {
  for (int i = 0; i < o->n_sets; i++) free(o->sets[i].name), free(o->sets[i].dir), free(o->sets[i].timings);
  free(o->sets);
  memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------------ inputs */

static int check_dir(const char *what, const char *dir, McmErr *err) {
  DIR *d = opendir(dir);
  if (!d) return mcm_err(err, "%s %s: cannot open folder: %s", what, dir, strerror(errno));
  closedir(d);
  return 0;
}

/* OUTDIR: an existing folder, or a name whose parent folder exists. */
static int check_out(const char *out, McmErr *err) {
  struct stat st;
  if (stat(out, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return mcm_err(err, "--out %s exists and is not a folder", out);
    if (access(out, W_OK | X_OK)) return mcm_err(err, "--out %s: cannot write in it: %s", out, strerror(errno));
    return 0;
  }
  char *copy = dup_str(out, strlen(out));
  const char *parent = dirname(copy);
  int rc = stat(parent, &st) != 0 || !S_ISDIR(st.st_mode)
               ? mcm_err(err, "--out %s: its parent folder %s does not exist", out, parent)
               : 0;
  free(copy);
  return rc;
}

/* Output k's prompt from an ./infer name "<k>_<slug>_seed<s>.<ext>" (k of 3 or more digits):
 * *prompt = k / per_prompt, or -1 when the name is not of that form. -1 with err when it is
 * but does not fit the prompts file. */
static int prompt_of(const char *path, const Prompts *p, int per_prompt, const char *prompts_path, int *prompt,
                     McmErr *err) {
  *prompt = -1;
  const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  int digits = 0;
  while (isdigit((unsigned char)base[digits])) digits++;
  if (digits < 3 || digits > 9 || base[digits] != '_') return 0;
  const char *seed = NULL;
  for (const char *s = strstr(base, "_seed"); s; s = strstr(s + 1, "_seed")) seed = s;
  if (!seed) return 0;
  const char *q = seed + 5;
  if (!isdigit((unsigned char)*q)) return 0;
  char *end;
  unsigned long long sv = strtoull(q, &end, 10);
  if (*end != '.' || !end[1] || strchr(end + 1, '.')) return 0;
  long k = strtol(base, NULL, 10);
  int line = (int)(k / per_prompt);
  if (line >= p->n)
    return mcm_err(err, "%s: output %ld is from prompt %d, but %s has %d prompt%s (hint: the prompts file the set was "
                        "sampled from, and --num-per-prompt)", path, k, line, prompts_path, p->n, p->n == 1 ? "" : "s");
  char want[4600];
  if (pipeline_output_name(want, sizeof want, "", (int)k, digits, p->text[line], sv, end + 1, err)) return -1;
  if (strcmp(want + 1, base))
    return mcm_err(err, "%s: the name does not fit prompt %d of %s (\"%.50s...\" would be %s) (hint: the prompts "
                        "file the set was sampled from, and --num-per-prompt)", path, line, prompts_path,
                   p->text[line], want + 1);
  *prompt = line;
  return 0;
}

/* ------------------------------------------------------------------ scores */

typedef struct Clip {
  int prompt;            /* prompt index, -1 when the name is not an ./infer output's */
  const AdhLabel *label; /* NULL: unlabelled */
  int genre_est;         /* nearest class mean, -1 when there are no class means */
} Clip;

typedef struct Adherence {
  int labelled, not_infer_name, not_in_manifest;
  int n_tempo, acc1, acc2;
  int n_key, key_exact;
  double mirex;
  int n_genre, genre_ok;
} Adherence;

typedef struct SetResult {
  const char *name;
  const EvalReportSet *spec; /* NULL for the reference */
  EvalSet set;
  Clip *clips;               /* (set.n) */
  Adherence adh;
  double fd_mel, fd_mae;
  bool has_timings;
  EvalTimings tm;
} SetResult;

/* Scores every clip of r against its label. own_class: the reference's leave-one-out. */
static void score(SetResult *r, const AdhNcm *ncm, bool reference) {
  Adherence *a = &r->adh;
  for (int i = 0; i < r->set.n; i++) {
    Clip *c = &r->clips[i];
    const AdhLabel *l = c->label;
    c->genre_est = -1;
    if (ncm->k > 0) c->genre_est = adh_ncm_predict(ncm, r->set.mel_emb + (size_t)i * 128, reference && l ? l->genre : -1);
    if (!l) continue;
    a->labelled++;
    if (l->bpm > 0) {
      a->n_tempo++;
      a->acc1 += adh_tempo_match(r->set.tempo[i], l->bpm, false);
      a->acc2 += adh_tempo_match(r->set.tempo[i], l->bpm, true);
    }
    if (l->key >= 0) {
      a->n_key++;
      a->key_exact += r->set.key[i] == l->key;
      a->mirex += adh_key_mirex(r->set.key[i], l->key);
    }
    /* A genre counts when the reference has a class mean for it (for the reference itself:
     * one without this clip). */
    if (l->genre >= 0 && ncm->k > 0 && ncm->count[l->genre] > (reference ? 1 : 0)) {
      a->n_genre++;
      a->genre_ok += c->genre_est == l->genre;
    }
  }
}

static json_t *frac(double k, int n) { return n > 0 ? json_real(k / n) : json_null(); }

static const char *file_base(const char *path) { return strrchr(path, '/') ? strrchr(path, '/') + 1 : path; }

static json_t *adherence_json(const SetResult *r) {
  const Adherence *a = &r->adh;
  return json_pack("{s:i, s:{s:i, s:i, s:i}, s:{s:i, s:o, s:o}, s:{s:i, s:o, s:o}, s:{s:i, s:o}}", "labelled",
                   a->labelled, "unlabelled", "count", r->set.n - a->labelled, "not_infer_name", a->not_infer_name,
                   "caption_not_in_manifest", a->not_in_manifest, "tempo", "n", a->n_tempo, "acc1",
                   frac(a->acc1, a->n_tempo), "acc2", frac(a->acc2, a->n_tempo), "key", "n", a->n_key, "acc",
                   frac(a->key_exact, a->n_key), "mirex", frac(a->mirex, a->n_key), "genre", "n", a->n_genre, "acc",
                   frac(a->genre_ok, a->n_genre));
}

static json_t *clips_json(const SetResult *r, const AdhLabels *labels) {
  json_t *arr = json_array();
  for (int i = 0; i < r->set.n; i++) {
    const Clip *c = &r->clips[i];
    const AdhLabel *l = c->label;
    char k1[16], k2[16];
    json_t *o = json_pack("{s:s, s:f, s:s}", "file", file_base(r->set.files[i]), "tempo", r->set.tempo[i], "key",
                          adh_key_name(r->set.key[i], k2, sizeof k2));
    json_object_set_new(o, "genre", c->genre_est >= 0 ? json_string(labels->genres[c->genre_est]) : json_null());
    if (r->spec) json_object_set_new(o, "prompt", c->prompt >= 0 ? json_integer(c->prompt) : json_null());
    json_t *ref = json_null();
    if (l) {
      ref = json_object();
      json_object_set_new(ref, "bpm", l->bpm > 0 ? json_real(l->bpm) : json_null());
      json_object_set_new(ref, "key", l->key >= 0 ? json_string(adh_key_name(l->key, k1, sizeof k1)) : json_null());
      json_object_set_new(ref, "genre", l->genre >= 0 ? json_string(labels->genres[l->genre]) : json_null());
    }
    json_object_set_new(o, "label", ref);
    json_array_append_new(arr, o);
  }
  return arr;
}

static json_t *latency_json(const SetResult *r) {
  if (!r->has_timings) return json_null();
  const EvalTimings *t = &r->tm;
  double n = t->outputs, busy = t->text + t->sampling + t->decoding + t->vocoding;
  return json_pack("{s:s, s:s, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "log", r->spec->timings, "device",
                   t->device, "outputs", t->outputs, "audio_seconds_per_clip", t->audio_seconds / n,
                   "text_s_per_clip", t->text / n, "sampling_s_per_clip", t->sampling / n, "decoding_s_per_clip",
                   t->decoding / n, "vocoding_s_per_clip", t->vocoding / n, "total_s_per_clip", busy / n, "rtf",
                   busy / t->audio_seconds, "loading_s", t->load);
}

static char *report_json(const EvalReportOptions *o, const SetResult *ref, const SetResult *sets, int n,
                         const AdhLabels *labels, bool mae) {
  json_t *root = json_object();
  json_t *r = eval_set_json(&ref->set);
  json_object_set_new(r, "adherence", adherence_json(ref));
  json_object_set_new(r, "clips", clips_json(ref, labels));
  json_object_set_new(root, "reference", r);
  json_object_set_new(root, "manifest", json_string(o->manifest));
  json_object_set_new(root, "prompts", json_string(o->prompts));
  json_object_set_new(
      root, "detectors",
      json_pack("{s:s, s:s, s:s, s:s, s:s}", "tempo",
                "onset envelope (log-magnitude spectral flux, 100 frames/s), autocorrelation comb over 50-200 BPM "
                "with a log-normal prior (110 BPM, 1 octave); acc1 within 8 %, acc2 also x2 x1/2 x3 x1/3",
                "key", "chroma (peak magnitude per semitone, 55-2000 Hz) against Krumhansl-Kessler profiles "
                "with 4 harmonics; exact key and MIREX weighted score",
                "genre", "nearest class mean of the reference clips' log-mel embeddings (statistics of the "
                "reference data and its manifest labels, not a learned network); the reference row leave-one-out",
                "logmel", "MusicLDM log-mel, per-bin mean and std over frames (128-d)", "rtf",
                "(text + sampling + decoding + vocoding seconds) / seconds of audio; below 1 is faster than real time"));
  if (mae)
    json_object_set_new(root, "audiomae",
                        json_pack("{s:s, s:s, s:s}", "weights", o->audiomae, "input",
                                  o->bridge ? o->bridge : "exact Kaldi fbank", "embedding",
                                  "last block readout mean-pooled over tokens"));
  json_t *arr = json_array();
  for (int i = 0; i < n; i++) {
    const SetResult *s = &sets[i];
    json_t *j = eval_set_json(&s->set);
    json_object_set_new(j, "name", json_string(s->name));
    json_object_set_new(j, "fd_logmel", json_real(s->fd_mel));
    json_object_set_new(j, "fd_audiomae", mae ? json_real(s->fd_mae) : json_null());
    json_object_set_new(j, "adherence", adherence_json(s));
    json_object_set_new(j, "latency", latency_json(s));
    json_object_set_new(j, "clips", clips_json(s, labels));
    json_array_append_new(arr, j);
  }
  json_object_set_new(root, "sets", arr);
  return eval_json_text(root);
}

/* "86.0 %", or "–" without labelled clips. */
static void md_frac(FILE *f, double k, int n) {
  if (n > 0) fprintf(f, " %.1f %% |", 100.0 * k / n);
  else fprintf(f, " – |");
}

static void md_row(FILE *f, const SetResult *s, bool mae) {
  const Adherence *a = &s->adh;
  fprintf(f, "| %s%s | %d |", s->name, s->spec ? "" : " (ceiling)", s->set.n);
  if (s->spec) fprintf(f, " %.4g |", s->fd_mel);
  else fprintf(f, " – |");
  if (mae && s->spec) fprintf(f, " %.4g |", s->fd_mae);
  else if (mae) fprintf(f, " – |");
  md_frac(f, a->acc1, a->n_tempo), md_frac(f, a->acc2, a->n_tempo);
  md_frac(f, a->key_exact, a->n_key), md_frac(f, a->mirex, a->n_key);
  md_frac(f, a->genre_ok, a->n_genre);
  if (s->has_timings) {
    const EvalTimings *t = &s->tm;
    double n = t->outputs;
    fprintf(f, " %.3f | %.3f | %.3f | %.3f | %.3f |\n", t->text / n, t->sampling / n, t->decoding / n, t->vocoding / n,
            (t->text + t->sampling + t->decoding + t->vocoding) / t->audio_seconds);
  } else {
    fprintf(f, " – | – | – | – | – |\n");
  }
}

static char *report_md(const EvalReportOptions *o, const SetResult *ref, const SetResult *sets, int n, bool mae,
                       int png_clips, size_t *len) {
  char *text = NULL;
  FILE *f = open_memstream(&text, len);
  MCM_CHECK(f, "open_memstream: %s", strerror(errno));
  fprintf(f, "# mcm evaluation report\n\nReference: `%s` (%d clips), labels from `%s`, prompts from `%s`.\n\n",
          o->reference, ref->set.n, o->manifest, o->prompts);
  fprintf(f, "| set | n | FD log-mel |%s tempo acc1 | tempo acc2 | key acc | key MIREX | genre acc | text s/clip | "
             "sampling s/clip | decoding s/clip | vocoding s/clip | RTF |\n|---|---|---|%s---|---|---|---|---|---|---|---|"
             "---|---|\n", mae ? " FD AudioMAE |" : "", mae ? "---|" : "");
  md_row(f, ref, mae);
  for (int i = 0; i < n; i++) md_row(f, &sets[i], mae);
  fprintf(f, "\nFD: Fréchet distance to the reference clips (lower is better): log-mel = per-bin mean and std of "
             "MusicLDM's log-mel%s.\n", mae ? "; AudioMAE = mean-pooled features of the last encoder block" : "");
  fprintf(f, "Prompt adherence, no learned model: tempo from an onset-envelope autocorrelation (acc1 within 8 %% of "
             "the caption's BPM, acc2 also at x2, x1/2, x3, x1/3); key from a chroma profile against the "
             "Krumhansl-Kessler profiles (exact; MIREX: fifth 0.5, relative 0.3, parallel 0.2); genre = the nearest "
             "class mean of the *reference* clips' log-mel embeddings, i.e. statistics of the reference data and "
             "its manifest labels, not a learned network. The reference row is the detectors' accuracy on the real "
             "clips (genre leave-one-out): the ceiling.\n");
  fprintf(f, "Latency per clip from each set's ./infer --timings log; RTF = (text + sampling + decoding + vocoding) / "
             "seconds of audio, below 1 is faster than real time.\n\n");
  for (int i = -1; i < n; i++) {
    const SetResult *s = i < 0 ? ref : &sets[i];
    int un = s->set.n - s->adh.labelled;
    if (un) fprintf(f, "- %s: %d of %d clips unlabelled (%d without an ./infer output name, %d whose caption is not in "
                       "the manifest), left out of the adherence columns.\n", s->name, un, s->set.n,
                    s->adh.not_infer_name, s->adh.not_in_manifest);
    if (s->set.n_skipped)
      fprintf(f, "- %s: %d unreadable files skipped (listed in report.json).\n", s->name, s->set.n_skipped);
    if (s->has_timings) fprintf(f, "- %s: timings on %s.\n", s->name, s->tm.device);
  }
  fprintf(f, "\n`mels.png`: one row per set (reference");
  for (int i = 0; i < n; i++) fprintf(f, ", %s", sets[i].name);
  fprintf(f, "), the log-mels of its first %d clips in name order, time to the right, low bins at the bottom.\n",
          png_clips);
  fclose(f);
  return text;
}

/* ------------------------------------------------------------------ output */

typedef struct OutFile {
  const char *name;
  const void *data;
  size_t n;
  char path[4200], tmp[4300];
} OutFile;

/* Every file to its temporary name first; renamed only when all are complete. */
static int write_outputs(const char *dir, OutFile *files, int n, McmErr *err) {
  struct stat st;
  bool created = false;
  if (stat(dir, &st) != 0) {
    if (mkdir(dir, 0777) != 0) return mcm_err(err, "--out %s: cannot create the folder: %s", dir, strerror(errno));
    created = true;
  }
  int done = 0, rc = 0;
  for (; done < n && !rc; done++) {
    OutFile *o = &files[done];
    mcm_snprintf(o->path, sizeof o->path, "%s/%s", dir, o->name);
    if ((rc = file_tmp_name(o->tmp, sizeof o->tmp, o->path, err))) break;
    FILE *f = fopen(o->tmp, "wb");
    if (!f) {
      rc = mcm_err(err, "%s: cannot write: %s", o->tmp, strerror(errno));
      break;
    }
    bool ok = fwrite(o->data, 1, o->n, f) == o->n;
    ok = fclose(f) == 0 && ok;
    if (!ok) rc = mcm_err(err, "%s: write failed: %s", o->tmp, strerror(errno));
  }
  if (rc) {
    for (int i = 0; i < done; i++) unlink(files[i].tmp);
    if (created) rmdir(dir);
    return -1;
  }
  for (int i = 0; i < n; i++)
    if (file_publish(files[i].tmp, files[i].path, err)) {
      for (int k = i + 1; k < n; k++) unlink(files[k].tmp);
      return -1;
    }
  return 0;
}

/* ------------------------------------------------------------------ the run */

static const char *set_what(const char *name, char *buf, size_t size) {
  mcm_snprintf(buf, size, "--set %s", name);
  return buf;
}

static void result_free(SetResult *r) {
  eval_set_free(&r->set);
  free(r->clips);
  memset(r, 0, sizeof *r);
}

int eval_report_run(const EvalReportOptions *o, McmErr *err) {
  const int per_prompt = o->num_per_prompt > 0 ? o->num_per_prompt : 1, png_clips = o->png_clips > 0 ? o->png_clips : 4;
  /* Every input is checked before the long work. */
  if (check_dir("--reference", o->reference, err) || check_out(o->out, err)) return -1;
  char what[96];
  for (int i = 0; i < o->n_sets; i++)
    if (check_dir(set_what(o->sets[i].name, what, sizeof what), o->sets[i].dir, err)) return -1;
  AdhLabels labels;
  if (adh_labels_read(o->manifest, &labels, err)) return prefix_err(err, "--manifest");
  Prompts prompts = {0};
  SetResult ref = {.name = "reference"}, *sets = CALLOC_CHECK((size_t)o->n_sets, sizeof(SetResult));
  EvalMae *mae = NULL;
  AdhNcm ncm = {0};
  char *json = NULL, *md = NULL;
  void *png = NULL;
  int rc = prompts_read_file(o->prompts, "--prompts", &prompts, err);
  for (int i = 0; i < o->n_sets && !rc; i++) {
    sets[i].name = o->sets[i].name, sets[i].spec = &o->sets[i];
    if (o->sets[i].timings && eval_timings_parse(o->sets[i].timings, &sets[i].tm, err))
      rc = prefix_err(err, set_what(o->sets[i].name, what, sizeof what));
    sets[i].has_timings = o->sets[i].timings != NULL;
  }
  if (!rc && o->audiomae && !(mae = eval_mae_create(o->audiomae, o->bridge, o->device, o->batch, err))) rc = -1;

  /* The reference: labels by file, class means, the detectors' ceiling. */
  EvalLoadOptions lo = {.mae = mae, .adherence = true, .keep_mels = png_clips};
  if (!rc) rc = eval_set_load_with(o->reference, &lo, &ref.set, err);
  if (!rc) {
    ref.clips = CALLOC_CHECK((size_t)ref.set.n, sizeof(Clip));
    int *genre = MALLOC_CHECK(sizeof(int) * (size_t)ref.set.n);
    for (int i = 0; i < ref.set.n; i++) {
      ref.clips[i].prompt = -1;
      ref.clips[i].label = adh_labels_by_path(&labels, ref.set.files[i]);
      if (!ref.clips[i].label) ref.adh.not_in_manifest++;
      genre[i] = ref.clips[i].label ? ref.clips[i].label->genre : -1;
    }
    McmErr why;
    if (labels.n_genres && adh_ncm_fit(&ncm, ref.set.mel_emb, genre, ref.set.n, 128, labels.n_genres, &why))
      memset(&ncm, 0, sizeof ncm); /* no reference clip has a genre: no class means */
    free(genre);
    score(&ref, &ncm, true);
  }

  /* The sets. */
  for (int s = 0; s < o->n_sets && !rc; s++) {
    SetResult *r = &sets[s];
    if (eval_set_load_with(r->spec->dir, &lo, &r->set, err)) {
      rc = prefix_err(err, set_what(r->name, what, sizeof what));
      break;
    }
    r->clips = CALLOC_CHECK((size_t)r->set.n, sizeof(Clip));
    for (int i = 0; i < r->set.n && !rc; i++) {
      Clip *c = &r->clips[i];
      if ((rc = prompt_of(r->set.files[i], &prompts, per_prompt, o->prompts, &c->prompt, err))) break;
      if (c->prompt < 0) r->adh.not_infer_name++;
      else if (!(c->label = adh_labels_by_caption(&labels, prompts.text[c->prompt]))) r->adh.not_in_manifest++;
    }
    if (rc) {
      rc = prefix_err(err, set_what(r->name, what, sizeof what));
      break;
    }
    score(r, &ncm, false);
    rc = eval_frechet_sets(r->set.mel_emb, r->set.n, ref.set.mel_emb, ref.set.n, 128, &r->fd_mel, err);
    if (!rc && mae)
      rc = eval_frechet_sets(r->set.mae_emb, r->set.n, ref.set.mae_emb, ref.set.n, r->set.mae_dim, &r->fd_mae, err);
    if (rc) rc = prefix_err(err, set_what(r->name, what, sizeof what));
  }

  /* The three files, in memory, then on disk together. */
  size_t md_len = 0, png_len = 0;
  if (!rc) {
    json = report_json(o, &ref, sets, o->n_sets, &labels, mae != NULL);
    md = report_md(o, &ref, sets, o->n_sets, mae != NULL, png_clips, &md_len);
    const int rows = 1 + o->n_sets;
    const float **cells = CALLOC_CHECK((size_t)rows * png_clips, sizeof(float *));
    int *frames = CALLOC_CHECK((size_t)rows * png_clips, sizeof(int));
    for (int r = 0; r < rows; r++) {
      const EvalSet *st = r == 0 ? &ref.set : &sets[r - 1].set;
      for (int c = 0; c < st->n_mels_kept && c < png_clips; c++)
        cells[r * png_clips + c] = st->mels[c], frames[r * png_clips + c] = st->mel_frames[c];
    }
    rc = melpng_grid_encode(cells, frames, rows, png_clips, mel_config_musicldm().n_mels, &png, &png_len, err);
    free(cells), free(frames);
  }
  if (!rc) {
    OutFile files[3] = {{.name = "report.json", .data = json, .n = strlen(json)},
                        {.name = "report.md", .data = md, .n = md_len},
                        {.name = "mels.png", .data = png, .n = png_len}};
    rc = write_outputs(o->out, files, 3, err);
  }
  free(json), free(md), free(png);
  for (int i = 0; i < o->n_sets; i++) result_free(&sets[i]);
  free(sets);
  result_free(&ref);
  adh_ncm_free(&ncm);
  eval_mae_destroy(mae);
  prompts_free(&prompts);
  adh_labels_free(&labels);
  return rc;
}
