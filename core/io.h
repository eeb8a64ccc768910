/* Atomic file replacement and UTF-8 validation, shared by everything that writes files
 * (tensor files, shards, audio, manifests, MIDI) or reads user text.
 *
 * The rule for every output: write to a temporary name beside the destination, flush and
 * fsync it, rename it over the destination, fsync the directory. A process killed at any
 * point leaves either the old file or the new one, never a partial one. */
#pragma once
#include "kernels/common.h"

/* "<path>.tmp.<pid>.<tid>": unique per process and thread, so concurrent writers of
 * different outputs never share one. Returns -1 (with err) if the name does not fit. */
int file_tmp_name(char *buf, size_t size, const char *path, McmErr *err);

/* fsyncs tmp, renames it over path and fsyncs the directory. On failure tmp is removed,
 * path is untouched, and err says which step failed. */
int file_publish(const char *tmp, const char *path, McmErr *err);

/* Writes n bytes to path atomically (through file_tmp_name and file_publish). */
int file_write_atomic(const char *path, const void *data, size_t n, McmErr *err);

/* True when s[0..n) is well-formed UTF-8: no overlong forms, surrogates or code points
 * above U+10FFFF. */
bool utf8_valid(const char *s, size_t n);
