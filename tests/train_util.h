/* Inputs the trainer tests write for themselves (tests/test_train.c, test_train_dp.c,
 * tests/gpu/train_gpu.c). */
#pragma once
#include <stdint.h>

typedef struct DataSpec {
  int rows, frames, n_mels, C2, H, W, D;
  int rate, hop;
} DataSpec;

/* The sizes configs/tiny.ini expects. */
DataSpec test_tiny_data_spec(void);
/* Shards shard_00000.h5 (8 rows) and shard_00001.h5 (the rest) plus encoders.h5 in dir. */
void test_make_train_data(const char *dir, DataSpec s);
/* The UNet of configs/tiny.ini with channels `mc`, random weights (seed), saved to path. */
void test_make_teacher(const char *path, int mc, uint64_t seed);
/* configs/tiny.ini's inputs in dir: data/ (test_make_train_data at test_tiny_data_spec),
 * teacher.h5 (16 channels, seed 5) and bridge.h5 (test_write_random_bridge). */
void test_make_train_dir(const char *dir);
/* Losses by step from a run's log.jsonl (the last line of each step wins): loss[step − 1]
 * for steps 1..max_step; returns the highest step found. */
int test_read_log_losses(const char *path, double *loss, int max_step);

/* A random 16 -> 8 bin mel -> fbank bridge (the tiny AudioMAE's input bins) at path:
 * weights 0.25 · N(0, 1) from a fixed seed, biases −4. */
void test_write_random_bridge(const char *path);
