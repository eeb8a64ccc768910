/* Strict INI configuration with a schema.
 *
 * Every key mcm reads is one row of MCM_SCHEMA (core/schema.c): section, key, type, default,
 * range or choices, and a line of help. The parser (core/config.c, on top of inih) turns an
 * .ini file, a string (a config saved in a checkpoint) or a `--set section.key=value` into the
 * typed fields of Config, and stops at the first problem with one line that says where
 * (`file:line:`) and what was expected. Nothing is silently ignored: unknown sections and
 * keys, duplicates, malformed lines and missing required keys are all errors.
 *
 * Order of precedence (config_resolve): schema defaults < the file < each --set in order.
 * Each key remembers where its value came from (Config.origin), and config_print shows it.
 *
 * Format notes: `key = value` (or `key: value`) under a `[section]`; comments are whole lines
 * starting with ';' or '#', or an inline ' ;' after a value. Values are not quoted. Lists are
 * comma-separated. Leading whitespace is ignored, so a value cannot continue on a second line.
 * One line holds at most CFG_MAX_LINE characters (the limit of Debian's inih build), which
 * also bounds the length of string values.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STRING, CFG_ENUM, CFG_INT_LIST, CFG_FLOAT_LIST } CfgType;

#define CFG_MAX_LIST 8     /* elements in a list value */
#define CFG_MAX_KEYS 256   /* rows in the schema */
#define CFG_MAX_STRING 512 /* size of every CFG_STRING / CFG_ENUM field, NUL included */
#define CFG_MAX_ORIGIN 64  /* size of an origin string */
#define CFG_MAX_LINE 198   /* characters on one INI line (inih reads 200-byte lines with "\n\0") */

typedef struct { int n; int64_t v[CFG_MAX_LIST]; } CfgIntList;
typedef struct { int n; double v[CFG_MAX_LIST]; } CfgFloatList;

/* The resolved configuration. Field types by CfgType: CFG_INT int64_t, CFG_FLOAT double,
 * CFG_BOOL bool, CFG_STRING and CFG_ENUM char[CFG_MAX_STRING], lists CfgIntList/CfgFloatList.
 * Field names are the INI names: [train] lr is cfg.train.lr. */
typedef struct Config {
  struct {
    char device[CFG_MAX_STRING]; /* auto | cpu | cuda | cuda:N */
    int64_t seed;
    char out_dir[CFG_MAX_STRING];
    int64_t log_every;
  } run;
  struct {
    char mode[CFG_MAX_STRING]; /* distill | teacher | vae | vocoder */
    int64_t steps, batch_size;
    double lr, weight_decay, grad_clip, ema_decay;
    char precision[CFG_MAX_STRING]; /* fp32 | bf16 */
    bool adversarial;
    double lambda_distill;
    int64_t num_ddim_steps, skip_k;
    double guidance_w;
    char loss[CFG_MAX_STRING]; /* l2 | huber */
    double huber_c;
    double beta1, beta2, adam_eps;
    char lr_schedule[CFG_MAX_STRING]; /* constant | cosine */
    int64_t warmup_steps;
    double cond_dropout, teacher_ema_decay;
    int64_t nan_tolerance;
    double allreduce_bucket_mb;
  } train;
  struct {
    char weights[CFG_MAX_STRING]; /* converted teacher UNet */
  } teacher;
  struct {
    char init[CFG_MAX_STRING]; /* "" = the teacher's weights */
  } student;
  struct {
    char weights[CFG_MAX_STRING];
  } vae;
  struct {
    double kl_weight;
    char recon[CFG_MAX_STRING]; /* l1 */
    double ema_decay;           /* 0 = no EMA */
    int64_t scale_batches;
    int64_t in_channels, latent_channels;
    CfgIntList block_out_channels;
    int64_t layers_per_block, norm_groups;
  } vae_train;
  struct {
    char weights[CFG_MAX_STRING]; /* vocoder.h5 to fine-tune, "" = from scratch */
    int64_t upsample_initial_channel;
    CfgIntList upsample_rates, upsample_kernel_sizes, resblock_kernel_sizes, resblock_dilations;
    double mel_weight;
    double fm_weight;                    /* train.adversarial: feature matching */
    CfgIntList disc_periods, disc_period_channels;
    int64_t disc_scales;
    CfgIntList disc_scale_channels, disc_scale_groups;
    bool disc_spectral_norm;
  } vocoder_train;
  struct {
    bool joint;                      /* train a text tower with the teacher (demo scale) */
    char tokenizer[CFG_MAX_STRING];  /* directory with vocab.json and merges.txt */
    int64_t max_length;
    int64_t vocab_size;              /* 0 = the tokenizer's */
    int64_t hidden, layers, heads, intermediate, projection_dim;
  } text;
  struct {
    char audiomae[CFG_MAX_STRING], bridge[CFG_MAX_STRING];
    CfgIntList taps;
    double lr, beta1, beta2, weight_decay, r1_gamma;
    int64_t r1_interval, virtual_bs;
    int64_t mae_frames, mae_bins, mae_patch, mae_dim, mae_depth, mae_heads, cmap_dim, head_kernel;
  } adversarial;
  struct {
    int64_t window_frames, stride_frames; /* ./infer's long form: 0 = defaults, window -1 = none */
    char fuse[CFG_MAX_STRING];            /* average | triangular */
    char precision[CFG_MAX_STRING];       /* fp32 | bf16 */
  } infer;
  struct {
    int64_t every, steps;
    char prompts[CFG_MAX_STRING], bundle[CFG_MAX_STRING];
    double seconds;
    int64_t seed;
  } sample;
  struct {
    char train_shards[CFG_MAX_STRING];
    int64_t num_workers;
    char encoders[CFG_MAX_STRING]; /* "" = encoders.h5 beside the shards */
  } data;
  struct {
    char dir[CFG_MAX_STRING];
    int64_t every, keep;
    char init[CFG_MAX_STRING]; /* "" = start from scratch / the converted teacher */
  } checkpoint;
  struct {
    int64_t in_channels, model_channels;
    CfgIntList channel_mult;
    int64_t num_res_blocks;
    CfgIntList attention_levels;
    int64_t norm_groups, num_head_channels, context_dim, latent_frames, latent_bins;
  } unet;
  struct {
    int64_t rate, n_fft, hop, win, n_mels;
    double fmin, fmax, log_floor;
  } mel;
  struct {
    int64_t segment_frames;
    char crop[CFG_MAX_STRING]; /* segments | first */
    int64_t hop_frames;
    double min_fraction, min_seconds, silence_threshold;
    int64_t shard_size, threads;
    bool keep_audio;
  } prepare;
  /* Per schema row (same index as MCM_SCHEMA): "default", "file.ini:12", "--set", or ""
   * when the key has not been set at all (only possible for a required key). */
  char origin[CFG_MAX_KEYS][CFG_MAX_ORIGIN];
} Config;

/* One schema row. Write rows with the macros in core/schema.c, which fill section, key,
 * offset and size from the Config member so that the names cannot drift. */
typedef struct CfgKey {
  const char *section, *key;
  CfgType type;
  size_t offset; /* offsetof(Config, section.key) */
  size_t size;   /* sizeof the field: checked against the type by config_defaults */
  const char *def; /* default as text; NULL means required */
  double min, max; /* inclusive range for numbers and list elements (ignored when min > max) */
  bool min_open;   /* the range excludes min (for "must be > 0") */
  const char *choices; /* CFG_ENUM: "distill|teacher|vae|vocoder" */
  /* Optional extra check on the parsed field (a string form, say). Returns 0, or -1 with a
   * reason in why ("expected auto, cpu, cuda or cuda:N"). */
  int (*check)(const void *field, char *why, size_t why_size);
  const char *help; /* one line; config_help prints it */
} CfgKey;

extern const CfgKey MCM_SCHEMA[];
extern const int MCM_SCHEMA_N;

/* Sets every key that has a default (origin "default"); required keys are left unset. */
void config_defaults(Config *cfg);
/* Reads an INI file over the current values. On error cfg may be partly updated. */
int config_parse_file(Config *cfg, const char *path, McmErr *err);
/* The same for INI text held in memory; source_name stands for the file in messages and
 * origins (e.g. "checkpoint step_1000.h5"). */
int config_parse_string(Config *cfg, const char *text, const char *source_name, McmErr *err);
/* Applies one "section.key=value" (a --set argument); origin "--set". */
int config_set(Config *cfg, const char *assignment, McmErr *err);
/* Required keys present, per-key forms, cross-key checks (see mcm_schema_cross_check). */
int config_validate(const Config *cfg, McmErr *err);
/* For the mains: defaults, the file (path may be NULL), each --set in order, validate. */
int config_resolve(Config *cfg, const char *path, int n_sets, char **sets, McmErr *err);
/* The same, but keys without a default (train.steps, data.train_shards) may stay unset: for
 * mains that use none of them (./infer reads [infer] and [run] from a training config or none).
 * Every key that is set is still checked. */
int config_resolve_optional(Config *cfg, const char *path, int n_sets, char **sets, McmErr *err);

/* Malloc'd INI text of every key; config_parse_string of it gives back the identical Config
 * (origins aside). Unset required keys appear as comments. */
char *config_to_string(const Config *cfg);
/* The resolved config in INI form, each key with a comment giving its origin. */
void config_print(const Config *cfg, FILE *f);
/* Every section and key: type, default or "required", range or choices, help. */
void config_help(FILE *f);

/* Schema row of section.key, or -1. */
int config_key_index(const char *section, const char *key);

/* Defined in core/schema.c, called by config_validate: checks that involve several keys.
 * Returns -1 when all hold, else the schema index of the key to blame, with the reason
 * in why. */
int mcm_schema_cross_check(const Config *cfg, char *why, size_t why_size);

#ifdef __cplusplus
}
#endif
