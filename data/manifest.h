/* Dataset manifests: which audio files to prepare and the caption of each.
 *
 * manifest_read detects the form from the content (never the file name):
 *   AudioLDM JSON   {"data": [{"wav": "a.wav", "caption": "..."}, ...]} (a bare top-level
 *                   array of the same objects is accepted too). The caption is the key
 *                   "caption" when present, else the first key (in file order) whose name
 *                   contains "caption" — AudioLDM picks one of them at random; we keep the
 *                   choice deterministic. The path is "wav" (else "path", "location").
 *   JSON lines      one object per non-blank line: path from "wav", "path" or "location"
 *                   (the first present, in that order), caption from "caption", "captions"
 *                   or "text" (TANGO / ConsistencyTTA AudioCaps form).
 *   CSV             RFC 4180 (commas, CRLF or LF, "quoted fields" with "" for a quote and
 *                   embedded commas and newlines), a header line naming a path column
 *                   (path, wav, file, filename, location, audio) and a caption column
 *                   (caption, captions, text, description); other columns are ignored.
 * A caption given as an array of strings uses its first element.
 *
 * manifest_read_mtt reads MagnaTagATune's annotations_final.csv (tab-separated, optionally
 * "quoted": clip_id, 188 binary tag columns, mp3_path) and writes a caption from each clip's
 * positive tags with a fixed template (mtt_caption).
 *
 * Relative audio paths are taken relative to the manifest's directory.
 *
 * Two kinds of problems:
 *   - the manifest as a whole is unusable (missing, empty, not valid JSON / CSV, a header
 *     without the needed columns): -1 and one line in err naming the file and line;
 *   - one entry is unusable (no path, no caption, empty or non-UTF-8 caption, a caption
 *     with a NUL, a row with the wrong number of fields): the entry goes to m->skips with
 *     where ("file:line") and the reason, and reading goes on.
 */
#pragma once
#include "core/io.h" /* utf8_valid */
#include <stdbool.h>
#include <stddef.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ManifestEntry {
  char *path;    /* resolved: absolute, or joined to the manifest's directory */
  char *caption; /* valid, non-empty UTF-8 */
  char *where;   /* "manifest.json:12" (line of the entry; JSON: line of the document) */
} ManifestEntry;

typedef struct ManifestSkip {
  char *where;  /* "file:line", or the resolved audio path when there is one */
  char *kind;   /* short reason used for counting: "missing caption", "caption not UTF-8", ... */
  char *detail; /* one line */
} ManifestSkip;

typedef struct Manifest {
  ManifestEntry *entries;
  int n;
  ManifestSkip *skips;
  int n_skips;
  char format[16]; /* of the last file read: "json", "jsonl", "csv" or "mtt" */
} Manifest;

/* Appends the entries of `path` to *m (which starts zeroed, or holds earlier reads). */
int manifest_read(const char *path, Manifest *m, McmErr *err);
/* Appends the clips of a MagnaTagATune annotations_final.csv to *m. */
int manifest_read_mtt(const char *path, Manifest *m, McmErr *err);
void manifest_free(Manifest *m);

/* The MagnaTagATune caption for a set of positive tags (in column order), malloc'd; NULL
 * when the tags say nothing (n == 0). Deterministic: the same tags give the same text.
 * Template: "A <genres> piece with <instruments>, <moods>, <vocals>." — each part only when
 * some tag falls in it, e.g. {"guitar","classical","slow"} -> "A classical piece with
 * guitar, slow." and {"techno","beat","fast","no vocals"} -> "A techno piece with beats,
 * fast, no vocals." Tags outside the built-in vocabulary are appended as "tagged <t>". */
char *mtt_caption(const char *const *tags, int n);


#ifdef __cplusplus
}
#endif
