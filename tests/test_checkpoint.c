/* Configuration and RNG state survive a checkpoint file exactly; a damaged config in a
 * checkpoint is refused with a line naming the file. */
#include "core/checkpoint.h"
#include "kernels/rng.h"
#include "test.h"

TEST(checkpoint_config_round_trip) {
  Config cfg, back;
  McmErr err;
  char *sets[] = {"train.lr=3e-4", "unet.channel_mult=1,2,4", "run.device=cpu"};
  ASSERT(config_resolve(&cfg, "configs/tiny.ini", 3, sets, &err) == 0, "%s", err.msg);
  const char *path = TEST_PATH("ckpt.h5");
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(checkpoint_save_config(tf, &cfg, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(checkpoint_load_config(tf, &back, &err) == 0, "%s", err.msg);
  tf_close(tf);
  char *a = config_to_string(&cfg), *b = config_to_string(&back);
  EXPECT(!strcmp(a, b), "restored config differs:\n%s\n---\n%s", a, b);
  EXPECT(back.train.lr == 3e-4 && back.unet.channel_mult.n == 3 && back.unet.channel_mult.v[2] == 4,
         "values lost: lr %g", back.train.lr);
  free(a), free(b);
}

TEST(checkpoint_damaged_config_is_refused) {
  McmErr err;
  const char *path = TEST_PATH("bad.h5");
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "config", "[train]\nsteps = 10\nbatch_size = -4\n", &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(path, &err);
  Config cfg;
  EXPECT(checkpoint_load_config(tf, &cfg, &err) == -1, "accepted a negative batch size");
  EXPECT_STR_CONTAINS(err.msg, "bad.h5 [config]:3");
  EXPECT_STR_CONTAINS(err.msg, "batch_size");
  tf_close(tf);
}

TEST(checkpoint_rng_resumes_the_same_stream) {
  McmErr err;
  Ctx *a = ctx_create_cpu(1234);
  Tensor *t = tensor_new(a, DT_F32, SHAPE(1001));
  rng_normal(a, t); /* advance past the start, with a ragged length */
  const char *path = TEST_PATH("rng.h5");
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf && checkpoint_save_rng(tf, a, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
  float want[64], got[64];
  Tensor *u = tensor_new(a, DT_F32, SHAPE(64));
  rng_uniform(a, u);
  tensor_to_host_f32(a, u, want);

  Ctx *b = ctx_create_cpu(99); /* a different seed, replaced by the checkpoint's */
  tf = tf_open(path, &err);
  ASSERT(tf && checkpoint_load_rng(tf, b, &err) == 0, "%s", err.msg);
  tf_close(tf);
  Tensor *v = tensor_new(b, DT_F32, SHAPE(64));
  rng_uniform(b, v);
  tensor_to_host_f32(b, v, got);
  EXPECT(!memcmp(want, got, sizeof want), "the resumed stream differs");
  ctx_destroy(a), ctx_destroy(b);
}
