/* A small score model, a Standard MIDI File writer and a fluidsynth renderer.
 *
 * A MidiScore is what a composer fills in: a tempo, a time and key signature, and up to
 * MIDI_MAX_PARTS parts, each one instrument (General MIDI program) on its own channel with
 * a list of notes timed in ticks (ppq ticks per quarter note). Channel 9 (MIDI channel 10)
 * is the General MIDI drum channel; its "program" picks the drum kit.
 *
 * Notes may be added in any order and may overlap. A note that is still sounding when the
 * same key starts again in the same part is cut short there (MIDI has one note per key and
 * channel), both in the file and in the audio, so the two always agree.
 *
 * midi_smf_bytes writes format 1: track 0 holds the tempo, time and key signature; each
 * part is one more track (name, program change, volume/pan/reverb/chorus controllers, then
 * note-on / note-off events, no running status). At equal times note-offs come before
 * note-ons, then by key, so the bytes depend only on the score.
 *
 * midi_render plays a score through a fresh fluid_synth (no audio driver, no sequencer):
 * events are converted to frame times and the synth is run with fluid_synth_write_float
 * up to each event. A fresh synth per call means no reverb tail or chorus phase carries
 * over from one score to the next: the samples depend only on the score. The renderer
 * keeps one synth with the SoundFont loaded for its whole life, so fluidsynth's sample
 * cache keeps the sample data in memory and each fresh synth loads in milliseconds.
 * midi_render may be called from several threads at once.
 */
#pragma once
#include <stdint.h>

#include "kernels/common.h"

#define MIDI_MAX_PARTS 8
#define MIDI_DRUM_CHANNEL 9
#define MIDI_DEFAULT_SOUNDFONT "/usr/share/sounds/sf2/FluidR3_GM.sf2"

typedef struct MidiNote {
  uint32_t start, dur; /* ticks; dur ≥ 1 */
  uint8_t key, vel;    /* 0..127, vel 1..127 */
} MidiNote;

typedef struct MidiPart {
  char name[32];
  int channel;                         /* 0..15, one part per channel */
  int program;                         /* General MIDI program 0..127 (drum kit on channel 9) */
  int volume, pan, reverb, chorus;     /* controllers 7, 10, 91, 93 (0..127) */
  MidiNote *notes;
  int n_notes, cap;
} MidiPart;

typedef struct MidiScore {
  char title[64];
  int ppq;                  /* ticks per quarter note */
  uint32_t us_per_quarter;  /* tempo */
  int ts_num, ts_den;       /* time signature, ts_den a power of two */
  int key_sharps;           /* key signature: -7..7 (flats negative) */
  bool key_minor;
  uint32_t end_tick;        /* length of the piece; notes are cut at it */
  MidiPart parts[MIDI_MAX_PARTS];
  int n_parts;
} MidiScore;

/* An empty score in 4/4, C major, at the given tempo. */
void midi_score_init(MidiScore *s, int ppq, double bpm);
void midi_score_free(MidiScore *s);
/* Adds a part with default controllers (volume 100, pan 64, reverb 40, chorus 0). */
MidiPart *midi_score_add_part(MidiScore *s, const char *name, int channel, int program);
/* Adds a note; it is dropped if it starts at or after end_tick, and cut at end_tick. */
void midi_part_add_note(const MidiScore *s, MidiPart *p, uint32_t start, uint32_t dur, int key, int vel);

/* The Standard MIDI File for s in a malloc'd buffer (*out); returns its length. */
size_t midi_smf_bytes(const MidiScore *s, uint8_t **out);
/* Writes the SMF to path atomically (path.tmp, then rename). */
int midi_save(const MidiScore *s, const char *path, McmErr *err);

/* The frame at which tick t sounds at the given sample rate. */
uint64_t midi_tick_frame(const MidiScore *s, uint32_t t, int rate);

typedef struct MidiRenderer MidiRenderer;
/* Loads the SoundFont (a missing, unreadable or non-SoundFont file is an error naming it). */
MidiRenderer *midi_renderer_create(const char *soundfont, int rate, McmErr *err);
void midi_renderer_free(MidiRenderer *r);
/* Whether the SoundFont has a preset at (bank, program); drum kits are bank 128. */
bool midi_renderer_has_preset(const MidiRenderer *r, int bank, int program);
/* Renders the first n frames of s as stereo float at the renderer's rate. */
void midi_render(const MidiRenderer *r, const MidiScore *s, float *left, float *right, size_t n);
