/* Inputs the trainer tests write for themselves (tests/test_train.c, test_train_dp.c). */
#pragma once

/* A random 16 -> 8 bin mel -> fbank bridge (the tiny AudioMAE's input bins) at path:
 * weights 0.25 · N(0, 1) from a fixed seed, biases −4. */
void test_write_random_bridge(const char *path);
