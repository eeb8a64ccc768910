/* The demo dataset build: render, resample, write clips, manifest and captions in parallel
 * (see demo_dataset.h). */
#include "demo_dataset.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/io.h"
#include "data/audio.h"

#define FADE_OUT_SECONDS 0.02 /* so a clip does not end on a click */
#define PEAK 0.9f

void demo_options_default(DemoOptions *o) {
  *o = (DemoOptions){.out_dir = "data/demo", .clips = 200, .seconds = 10.24, .seed = 0, .soundfont = NULL};
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int check_options(const DemoOptions *o, McmErr *err) {
  if (!o->out_dir || !*o->out_dir) return mcm_err(err, "no output directory given (--out DIR)");
  if (strlen(o->out_dir) > 2048) return mcm_err(err, "output directory path is longer than 2048 characters");
  if (o->clips < 1 || o->clips > DEMO_MAX_CLIPS)
    return mcm_err(err, "number of clips must be 1..%d, got %d", DEMO_MAX_CLIPS, o->clips);
  if (!isfinite(o->seconds) || o->seconds <= 0 || o->seconds > DEMO_MAX_SECONDS)
    return mcm_err(err, "clip length must be more than 0 and at most %g seconds, got %g", DEMO_MAX_SECONDS, o->seconds);
  if (llround(o->seconds * DEMO_SAMPLE_RATE) < 1)
    return mcm_err(err, "clip length %g s is shorter than one sample at %d Hz", o->seconds, DEMO_SAMPLE_RATE);
  if (o->threads < 0) return mcm_err(err, "threads must be 0 (automatic) or more, got %d", o->threads);
  return 0;
}

/* mkdir -p, reporting the first directory that cannot be made. */
static int make_dirs(const char *path, McmErr *err) {
  char buf[4096];
  mcm_snprintf(buf, sizeof buf, "%s", path);
  for (char *c = buf + 1;; c++) {
    if (*c != '/' && *c) continue;
    char keep = *c;
    *c = 0;
    struct stat st;
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return mcm_err(err, "cannot create output directory '%s': %s", buf, strerror(errno));
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
      return mcm_err(err, "cannot create output directory '%s': '%s' exists and is not a directory", path, buf);
    *c = keep;
    if (!keep) break;
  }
  return 0;
}

/* One clip: compose, render at DEMO_RENDER_RATE, mix to mono, resample, normalise, write. */
static int build_clip(const DemoOptions *o, const MidiRenderer *r, int index, DemoClip *clip, McmErr *err) {
  MidiScore score;
  demo_compose(o->seed, index, o->seconds, &score, clip);
  size_t n16 = (size_t)llround(o->seconds * DEMO_SAMPLE_RATE);
  /* A few frames past the end so the resampler's last outputs see real input. */
  size_t n44 = (size_t)ceil((double)n16 * DEMO_RENDER_RATE / DEMO_SAMPLE_RATE) + 64;
  float *left = MALLOC_CHECK(n44 * sizeof(float)), *right = MALLOC_CHECK(n44 * sizeof(float));
  float *mono = NULL;
  int64_t n_mono = 0;
  midi_render(r, &score, left, right, n44);
  for (size_t i = 0; i < n44; i++) left[i] = 0.5f * (left[i] + right[i]);
  if (audio_resample(left, (int64_t)n44, DEMO_RENDER_RATE, DEMO_SAMPLE_RATE, &mono, &n_mono, err)) {
    free(left), free(right);
    midi_score_free(&score);
    return -1;
  }
  MCM_CHECK((size_t)n_mono >= n16, "resampled %lld samples, need %zu", (long long)n_mono, n16);

  float peak = 0;
  for (size_t i = 0; i < n16; i++) peak = fmaxf(peak, fabsf(mono[i]));
  int rc = 0;
  char path[4200];
  if (!(peak > 1e-4f)) {
    rc = mcm_err(err, "clip %d (%s) rendered silent (hint: the SoundFont must have the General MIDI presets)", index, clip->genre);
    goto out;
  }
  size_t fade = (size_t)(FADE_OUT_SECONDS * DEMO_SAMPLE_RATE);
  if (fade > n16) fade = n16;
  for (size_t i = 0; i < n16; i++) {
    float g = PEAK / peak;
    if (i >= n16 - fade) g *= (float)(n16 - i) / (float)(fade + 1);
    mono[i] *= g;
  }
  mcm_snprintf(path, sizeof path, "%s/audio/clip_%05d.wav", o->out_dir, index);
  if ((rc = audio_write(path, mono, (int64_t)n16, DEMO_SAMPLE_RATE, AUDIO_WAV16, NULL, err))) goto out;
  if (o->write_midi) {
    mcm_snprintf(path, sizeof path, "%s/midi/clip_%05d.mid", o->out_dir, index);
    rc = midi_save(&score, path, err);
  }
out:
  free(left), free(right), free(mono);
  midi_score_free(&score);
  return rc;
}

static int write_manifest(const DemoOptions *o, const DemoClip *clips, McmErr *err) {
  char path[4200];
  json_t *root = json_object(), *data = json_array();
  MCM_CHECK(root && data, "jansson: out of memory");
  for (int i = 0; i < o->clips; i++) {
    const DemoClip *c = &clips[i];
    char wav[32];
    mcm_snprintf(wav, sizeof wav, "audio/clip_%05d.wav", i);
    json_t *e = json_object();
    json_object_set_new(e, "wav", json_string(wav));
    json_object_set_new(e, "caption", json_string(c->caption));
    json_object_set_new(e, "genre", json_string(c->genre));
    json_object_set_new(e, "key", json_string(c->key));
    json_object_set_new(e, "bpm", json_integer(c->bpm));
    json_object_set_new(e, "moods", json_string(c->moods));
    json_object_set_new(e, "lead", json_string(c->lead));
    json_array_append_new(data, e);
  }
  json_object_set_new(root, "data", data);
  mcm_snprintf(path, sizeof path, "%s/manifest.json", o->out_dir);
  char *text = json_dumps(root, JSON_INDENT(1));
  json_decref(root);
  MCM_CHECK(text, "jansson: out of memory");
  int rc = file_write_atomic(path, text, strlen(text), err);
  free(text);
  if (rc) return -1;

  /* captions.lst: the AudioLDM inference list form, "wav|caption" per line. */
  mcm_snprintf(path, sizeof path, "%s/captions.lst", o->out_dir);
  char *list = NULL;
  size_t list_n = 0;
  FILE *f = open_memstream(&list, &list_n);
  MCM_CHECK(f, "open_memstream: %s", strerror(errno));
  for (int i = 0; i < o->clips; i++) fprintf(f, "audio/clip_%05d.wav|%s\n", i, clips[i].caption);
  fclose(f);
  rc = file_write_atomic(path, list, list_n, err);
  free(list);
  return rc;
}

/* Every program the composer can pick must be in the SoundFont, or parts would be silent. */
static int check_presets(const MidiRenderer *r, const char *sf, McmErr *err) {
  bool melodic[128], kits[128];
  demo_programs_used(melodic, kits);
  for (int p = 0; p < 128; p++)
    if (melodic[p] && !midi_renderer_has_preset(r, 0, p))
      return mcm_err(err, "SoundFont '%s' has no preset for General MIDI program %d (bank 0) (hint: use a complete "
                          "General MIDI SoundFont such as FluidR3_GM.sf2)", sf, p);
  /* Other kits fall back to the standard kit in fluidsynth; that one must exist. */
  if (!midi_renderer_has_preset(r, 128, 0))
    return mcm_err(err, "SoundFont '%s' has no standard drum kit (bank 128, program 0) (hint: use a complete General MIDI "
                        "SoundFont such as FluidR3_GM.sf2)", sf);
  return 0;
}

static void progress(int done, int total, double t0) {
  double dt = now() - t0, rate = done / (dt > 0 ? dt : 1e-9);
  fprintf(stderr, "\rmake_demo_dataset: %d/%d clips, %.1f clips/s, ETA %.0f s   ", done, total, rate, (total - done) / rate);
  if (done == total) fputc('\n', stderr);
  fflush(stderr);
}

int demo_dataset_build(const DemoOptions *o, DemoStats *stats, McmErr *err) {
  double t0 = now();
  if (check_options(o, err)) return -1;
  const char *sf = o->soundfont ? o->soundfont : MIDI_DEFAULT_SOUNDFONT;
  MidiRenderer *r = midi_renderer_create(sf, DEMO_RENDER_RATE, err);
  if (!r) return -1;
  char dir[4200];
  int rc = check_presets(r, sf, err);
  if (!rc) rc = make_dirs(o->out_dir, err);
  mcm_snprintf(dir, sizeof dir, "%s/audio", o->out_dir);
  if (!rc) rc = make_dirs(dir, err);
  mcm_snprintf(dir, sizeof dir, "%s/midi", o->out_dir);
  if (!rc && o->write_midi) rc = make_dirs(dir, err);
  if (rc) {
    midi_renderer_free(r);
    return -1;
  }

  DemoClip *clips = CALLOC_CHECK((size_t)o->clips, sizeof *clips);
  int threads = o->threads ? o->threads : omp_get_max_threads();
  if (threads > o->clips) threads = o->clips;
  int failed = 0, fail_index = o->clips, done = 0;
  double synth = 0, last_report = 0;
  McmErr fail = {{0}};
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int i = 0; i < o->clips; i++) {
    int stop;
#pragma omp atomic read
    stop = failed;
    if (stop) continue; /* after a failure, the clips not started are skipped */
    McmErr e = {{0}};
    double c0 = now();
    int bad = build_clip(o, r, i, &clips[i], &e);
    double dt = now() - c0;
#pragma omp critical(demo_dataset_progress)
    {
      synth += dt;
      done++;
      if (bad && i < fail_index) fail_index = i, fail = e;
      if (bad) {
#pragma omp atomic write
        failed = 1;
      }
      if (o->progress && (now() - last_report > 0.25 || done == o->clips)) {
        progress(done, o->clips, t0);
        last_report = now();
      }
    }
  }
  midi_renderer_free(r);
  if (failed) {
    if (o->progress) fputc('\n', stderr);
    free(clips);
    return mcm_err(err, "%s", fail.msg);
  }
  rc = write_manifest(o, clips, err);
  free(clips);
  if (rc) return -1;
  if (stats) {
    stats->clips = o->clips;
    stats->threads = threads;
    stats->audio_seconds = o->clips * (double)llround(o->seconds * DEMO_SAMPLE_RATE) / DEMO_SAMPLE_RATE;
    stats->wall_seconds = now() - t0;
    stats->synth_seconds = synth;
  }
  return 0;
}
