/* Score model, Standard MIDI File writer and fluidsynth renderer (see midi.h). */
#include "midi.h"

#include "core/io.h"

#include <fluidsynth.h>
#include <stdio.h>
#include <unistd.h>

/* ------------------------------------------------------------------ score */

void midi_score_init(MidiScore *s, int ppq, double bpm) {
  MCM_CHECK(ppq > 0 && ppq < 0x8000 && bpm > 0, "midi_score_init: ppq %d, bpm %g", ppq, bpm);
  memset(s, 0, sizeof *s);
  s->ppq = ppq;
  s->us_per_quarter = (uint32_t)(60e6 / bpm + 0.5);
  s->ts_num = 4;
  s->ts_den = 4;
}

void midi_score_free(MidiScore *s) {
  for (int i = 0; i < s->n_parts; i++) free(s->parts[i].notes);
  s->n_parts = 0;
}

MidiPart *midi_score_add_part(MidiScore *s, const char *name, int channel, int program) {
  MCM_CHECK(s->n_parts < MIDI_MAX_PARTS, "midi_score_add_part: more than %d parts", MIDI_MAX_PARTS);
  MCM_CHECK(channel >= 0 && channel < 16 && program >= 0 && program < 128, "midi_score_add_part: channel %d, program %d",
            channel, program);
  for (int i = 0; i < s->n_parts; i++)
    MCM_CHECK(s->parts[i].channel != channel, "midi_score_add_part: channel %d used twice", channel);
  MidiPart *p = &s->parts[s->n_parts++];
  memset(p, 0, sizeof *p);
  mcm_snprintf(p->name, sizeof p->name, "%s", name);
  p->channel = channel;
  p->program = program;
  p->volume = 100;
  p->pan = 64;
  p->reverb = 40;
  return p;
}

void midi_part_add_note(const MidiScore *s, MidiPart *p, uint32_t start, uint32_t dur, int key, int vel) {
  MCM_CHECK(key >= 0 && key < 128 && vel >= 1 && vel < 128, "midi_part_add_note: key %d, velocity %d", key, vel);
  if (start >= s->end_tick || dur == 0) return;
  if (dur > s->end_tick - start) dur = s->end_tick - start;
  if (p->n_notes == p->cap) {
    p->cap = p->cap ? 2 * p->cap : 64;
    p->notes = REALLOC_CHECK(p->notes, (size_t)p->cap * sizeof *p->notes);
  }
  p->notes[p->n_notes++] = (MidiNote){start, dur, (uint8_t)key, (uint8_t)vel};
}

uint64_t midi_tick_frame(const MidiScore *s, uint32_t t, int rate) {
  /* t·µs·rate stays below 2^64 for any piece shorter than days at audio rates. */
  return (uint64_t)t * s->us_per_quarter * (uint64_t)rate / ((uint64_t)s->ppq * 1000000u);
}

/* ------------------------------------------------------------------ events */

typedef struct MidiEvent {
  uint32_t tick;
  uint8_t on; /* 0 note-off, 1 note-on: offs sort first at equal ticks */
  uint8_t channel, key, vel;
} MidiEvent;

static int cmp_note_key(const void *a, const void *b) {
  const MidiNote *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  if (x->start != y->start) return x->start < y->start ? -1 : 1;
  if (x->dur != y->dur) return x->dur < y->dur ? -1 : 1;
  return (x->vel > y->vel) - (x->vel < y->vel);
}

static int cmp_event(const void *a, const void *b) {
  const MidiEvent *x = a, *y = b;
  if (x->tick != y->tick) return x->tick < y->tick ? -1 : 1;
  if (x->on != y->on) return x->on < y->on ? -1 : 1;
  if (x->channel != y->channel) return x->channel < y->channel ? -1 : 1;
  return (x->key > y->key) - (x->key < y->key);
}

/* Appends p's note-on/off events to ev[*n...] (room for 2·n_notes), with same-key overlaps cut. */
static void part_events(const MidiPart *p, MidiEvent *ev, size_t *n) {
  MidiNote *notes = MALLOC_CHECK((size_t)p->n_notes * sizeof *notes);
  memcpy(notes, p->notes, (size_t)p->n_notes * sizeof *notes);
  qsort(notes, (size_t)p->n_notes, sizeof *notes, cmp_note_key);
  for (int i = 0; i < p->n_notes; i++) {
    MidiNote a = notes[i];
    if (i + 1 < p->n_notes && notes[i + 1].key == a.key && a.start + a.dur > notes[i + 1].start) {
      a.dur = notes[i + 1].start - a.start;
      if (a.dur == 0) continue; /* two notes on one key at one time: the later-sorted one plays */
    }
    ev[(*n)++] = (MidiEvent){a.start, 1, (uint8_t)p->channel, a.key, a.vel};
    ev[(*n)++] = (MidiEvent){a.start + a.dur, 0, (uint8_t)p->channel, a.key, 64};
  }
  free(notes);
}

/* ------------------------------------------------------------------ Standard MIDI File */

typedef struct Buf {
  uint8_t *p;
  size_t n, cap;
} Buf;

static void put(Buf *b, const void *src, size_t len) {
  if (b->n + len > b->cap) {
    while (b->n + len > b->cap) b->cap = b->cap ? 2 * b->cap : 256;
    b->p = REALLOC_CHECK(b->p, b->cap);
  }
  if (len) memcpy(b->p + b->n, src, len);
  b->n += len;
}
static void put1(Buf *b, unsigned v) { put(b, &(uint8_t){(uint8_t)v}, 1); }
static void put_be(Buf *b, uint32_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--) put1(b, (v >> (8 * i)) & 0xff);
}
/* Variable-length quantity: 7 bits per byte, most significant first, high bit = more. */
static void put_vlq(Buf *b, uint32_t v) {
  uint8_t tmp[5];
  int n = 0;
  do {
    tmp[n++] = v & 0x7f;
    v >>= 7;
  } while (v);
  while (n-- > 0) put1(b, tmp[n] | (n ? 0x80 : 0));
}
static void put_meta(Buf *b, uint32_t delta, int type, const void *data, size_t len) {
  put_vlq(b, delta);
  put1(b, 0xff);
  put1(b, (unsigned)type);
  put_vlq(b, (uint32_t)len);
  put(b, data, len);
}

/* Writes one MTrk chunk: body bytes, then end-of-track at end_tick (or the last event). */
static void put_track(Buf *out, Buf *body, uint32_t last_tick, uint32_t end_tick) {
  put_meta(body, end_tick > last_tick ? end_tick - last_tick : 0, 0x2f, NULL, 0);
  put(out, "MTrk", 4);
  put_be(out, (uint32_t)body->n, 4);
  put(out, body->p, body->n);
  body->n = 0;
}

size_t midi_smf_bytes(const MidiScore *s, uint8_t **out) {
  Buf b = {0}, t = {0};
  put(&b, "MThd", 4);
  put_be(&b, 6, 4);
  put_be(&b, 1, 2); /* format 1: simultaneous tracks */
  put_be(&b, (uint32_t)(1 + s->n_parts), 2);
  put_be(&b, (uint32_t)s->ppq, 2);

  /* Track 0: the conductor track. */
  if (s->title[0]) put_meta(&t, 0, 0x03, s->title, strlen(s->title));
  int den_log2 = 0;
  while ((1 << den_log2) < s->ts_den) den_log2++;
  /* 24 MIDI clocks per metronome click, 8 thirty-seconds per quarter. */
  uint8_t ts[4] = {(uint8_t)s->ts_num, (uint8_t)den_log2, 24, 8};
  put_meta(&t, 0, 0x58, ts, 4);
  uint8_t ks[2] = {(uint8_t)(int8_t)s->key_sharps, s->key_minor ? 1 : 0};
  put_meta(&t, 0, 0x59, ks, 2);
  uint8_t tempo[3] = {(uint8_t)(s->us_per_quarter >> 16), (uint8_t)(s->us_per_quarter >> 8), (uint8_t)s->us_per_quarter};
  put_meta(&t, 0, 0x51, tempo, 3);
  put_track(&b, &t, 0, s->end_tick);

  for (int i = 0; i < s->n_parts; i++) {
    const MidiPart *p = &s->parts[i];
    int ch = p->channel;
    put_meta(&t, 0, 0x03, p->name, strlen(p->name));
    put_vlq(&t, 0), put1(&t, 0xc0 | ch), put1(&t, (unsigned)p->program);
    const int cc[4][2] = {{7, p->volume}, {10, p->pan}, {91, p->reverb}, {93, p->chorus}};
    for (int c = 0; c < 4; c++) put_vlq(&t, 0), put1(&t, 0xb0 | ch), put1(&t, (unsigned)cc[c][0]), put1(&t, (unsigned)cc[c][1]);

    MidiEvent *ev = MALLOC_CHECK(2 * (size_t)p->n_notes * sizeof *ev);
    size_t n = 0;
    part_events(p, ev, &n);
    qsort(ev, n, sizeof *ev, cmp_event);
    uint32_t now = 0;
    for (size_t e = 0; e < n; e++) {
      put_vlq(&t, ev[e].tick - now);
      put1(&t, (ev[e].on ? 0x90u : 0x80u) | (unsigned)ch);
      put1(&t, ev[e].key);
      put1(&t, ev[e].vel);
      now = ev[e].tick;
    }
    free(ev);
    put_track(&b, &t, now, s->end_tick);
  }
  free(t.p);
  *out = b.p;
  return b.n;
}

int midi_save(const MidiScore *s, const char *path, McmErr *err) {
  uint8_t *bytes;
  size_t n = midi_smf_bytes(s, &bytes);
  int rc = file_write_atomic(path, bytes, n, err);
  free(bytes);
  return rc;
}

/* ------------------------------------------------------------------ fluidsynth */

struct MidiRenderer {
  char *path;
  int rate;
  fluid_settings_t *settings;
  fluid_synth_t *keeper; /* holds the SoundFont (and so fluidsynth's sample cache) loaded */
  int sfont_id;
};

/* fluidsynth logs through process-wide handlers. Its warnings (e.g. "no preset on channel
 * N" before a SoundFont is loaded) are noise here; its last error is kept per thread so that
 * midi_renderer_create can say why a SoundFont did not load, in one line. */
static _Thread_local char fluid_last_error[256];
static void fluid_log_keep(int level, const char *message, void *data) {
  (void)level, (void)data;
  mcm_snprintf(fluid_last_error, sizeof fluid_last_error, "%s", message);
}
static void fluid_log_quiet(void) {
  fluid_set_log_function(FLUID_PANIC, fluid_log_keep, NULL);
  fluid_set_log_function(FLUID_ERR, fluid_log_keep, NULL);
  fluid_set_log_function(FLUID_WARN, NULL, NULL);
  fluid_set_log_function(FLUID_INFO, NULL, NULL);
  fluid_set_log_function(FLUID_DBG, NULL, NULL);
}

static fluid_settings_t *make_settings(int rate) {
  fluid_settings_t *st = new_fluid_settings();
  MCM_CHECK(st, "new_fluid_settings failed");
  MCM_CHECK(fluid_settings_setnum(st, "synth.sample-rate", rate) == FLUID_OK, "fluidsynth: sample rate %d refused", rate);
  fluid_settings_setint(st, "synth.reverb.active", 1);
  fluid_settings_setint(st, "synth.chorus.active", 1);
  fluid_settings_setint(st, "synth.cpu-cores", 1);       /* we parallelise over pieces instead */
  fluid_settings_setint(st, "synth.threadsafe-api", 0);  /* one thread per synth */
  fluid_settings_setint(st, "synth.polyphony", 256);
  return st;
}

MidiRenderer *midi_renderer_create(const char *soundfont, int rate, McmErr *err) {
  if (!soundfont || !*soundfont) return mcm_err(err, "no SoundFont given"), NULL;
  if (rate < 8000 || rate > 96000) return mcm_err(err, "render rate %d Hz is outside 8000..96000", rate), NULL;
  FILE *f = fopen(soundfont, "rb");
  if (!f) {
    mcm_err(err, "cannot read SoundFont '%s': %s (hint: install fluid-soundfont-gm, or pass --soundfont PATH)",
            soundfont, strerror(errno));
    return NULL;
  }
  /* A SoundFont 2 is a RIFF file of form "sfbk". (Checked here rather than with
   * fluid_is_soundfont, which goes through libinstpatch and leaks on other files.) */
  unsigned char head[12] = {0};
  size_t got = fread(head, 1, sizeof head, f);
  long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  fclose(f);
  if (got < sizeof head || memcmp(head, "RIFF", 4) || memcmp(head + 8, "sfbk", 4)) {
    mcm_err(err, "'%s' is not a SoundFont 2 file (hint: pass a General MIDI .sf2 with --soundfont)", soundfont);
    return NULL;
  }
  /* A truncated file would send fluidsynth through its other loaders, which print to stderr. */
  uint64_t riff = 8 + ((uint64_t)head[4] | (uint64_t)head[5] << 8 | (uint64_t)head[6] << 16 | (uint64_t)head[7] << 24);
  if (size >= 0 && (uint64_t)size < riff) {
    mcm_err(err, "SoundFont '%s' is truncated: its header says %llu bytes, the file has %ld", soundfont,
            (unsigned long long)riff, size);
    return NULL;
  }
  fluid_log_quiet();
  MidiRenderer *r = CALLOC_CHECK(1, sizeof *r);
  r->path = strdup(soundfont);
  MCM_CHECK(r->path, "strdup failed");
  r->rate = rate;
  r->settings = make_settings(rate);
  r->keeper = new_fluid_synth(r->settings);
  MCM_CHECK(r->keeper, "new_fluid_synth failed");
  fluid_last_error[0] = 0;
  r->sfont_id = fluid_synth_sfload(r->keeper, soundfont, 1);
  if (r->sfont_id == FLUID_FAILED) {
    mcm_err(err, "cannot load SoundFont '%s': %s", soundfont, fluid_last_error[0] ? fluid_last_error : "fluidsynth refused it");
    midi_renderer_free(r);
    return NULL;
  }
  return r;
}

void midi_renderer_free(MidiRenderer *r) {
  if (!r) return;
  if (r->keeper) delete_fluid_synth(r->keeper);
  if (r->settings) delete_fluid_settings(r->settings);
  free(r->path);
  free(r);
}

bool midi_renderer_has_preset(const MidiRenderer *r, int bank, int program) {
  fluid_sfont_t *sf = fluid_synth_get_sfont_by_id(r->keeper, r->sfont_id);
  return sf && fluid_sfont_get_preset(sf, bank, program) != NULL;
}

void midi_render(const MidiRenderer *r, const MidiScore *s, float *left, float *right, size_t n) {
  fluid_settings_t *st = make_settings(r->rate);
  fluid_synth_t *syn = new_fluid_synth(st);
  MCM_CHECK(syn, "new_fluid_synth failed");
  /* The keeper loaded this file, so this load only fails if it changed on disk since. */
  MCM_CHECK(fluid_synth_sfload(syn, r->path, 1) != FLUID_FAILED, "fluidsynth could not reload SoundFont '%s'", r->path);

  size_t cap = 0;
  for (int i = 0; i < s->n_parts; i++) {
    const MidiPart *p = &s->parts[i];
    cap += 2 * (size_t)p->n_notes;
    fluid_synth_program_change(syn, p->channel, p->program); /* bank 128 on the drum channel */
    fluid_synth_cc(syn, p->channel, 7, p->volume);
    fluid_synth_cc(syn, p->channel, 10, p->pan);
    fluid_synth_cc(syn, p->channel, 91, p->reverb);
    fluid_synth_cc(syn, p->channel, 93, p->chorus);
  }
  MidiEvent *ev = MALLOC_CHECK(cap * sizeof *ev);
  size_t n_ev = 0;
  for (int i = 0; i < s->n_parts; i++) part_events(&s->parts[i], ev, &n_ev);
  qsort(ev, n_ev, sizeof *ev, cmp_event);

  /* fluidsynth renders in 64-frame blocks and applies an event at the next block, so event
   * times are exact to within 64 frames (1.5 ms at 44.1 kHz). */
  size_t pos = 0;
  for (size_t e = 0; e < n_ev && pos < n; e++) {
    uint64_t f = midi_tick_frame(s, ev[e].tick, r->rate);
    if (f >= n) break;
    if (f > pos) {
      fluid_synth_write_float(syn, (int)(f - pos), left, (int)pos, 1, right, (int)pos, 1);
      pos = (size_t)f;
    }
    if (ev[e].on)
      fluid_synth_noteon(syn, ev[e].channel, ev[e].key, ev[e].vel);
    else
      fluid_synth_noteoff(syn, ev[e].channel, ev[e].key);
  }
  if (pos < n) fluid_synth_write_float(syn, (int)(n - pos), left, (int)pos, 1, right, (int)pos, 1);
  free(ev);
  delete_fluid_synth(syn);
  delete_fluid_settings(st);
}
