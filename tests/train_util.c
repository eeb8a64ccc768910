#include "tests/train_util.h"

#include "core/tensorfile.h"
#include "diffusion/bridge.h"
#include "kernels/rng.h"
#include "tests/test.h"

void test_write_random_bridge(const char *path) {
  Ctx *ctx = ctx_create_cpu(0);
  Bridge *br = bridge_create(ctx, 16, 8);
  float w[8 * 16], b[8];
  rng_normal_host(81, 0, w, 8 * 16);
  for (int i = 0; i < 8 * 16; i++) w[i] *= 0.25f;
  for (int i = 0; i < 8; i++) b[i] = -4.0f;
  bridge_set(ctx, br, w, b);
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf && bridge_save(ctx, br, tf, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  ctx_destroy(ctx);
}
