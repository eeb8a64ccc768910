#include "tests/train_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/tensorfile.h"
#include "data/shard.h"
#include "models/params.h"
#include "models/unet.h"
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


/* The sizes configs/tiny.ini expects. */
DataSpec test_tiny_data_spec(void) { return (DataSpec){12, 16, 16, 4, 8, 8, 16, 16000, 160}; }

/* Shards shard_00000.h5 (8 rows) and shard_00001.h5 (the rest) plus encoders.h5 in dir. */
void test_make_train_data(const char *dir, DataSpec s) {
  McmErr err;
  mkdir(dir, 0777);
  const int per = 8;
  for (int first = 0, k = 0; first < s.rows || (s.rows == 0 && k == 0); first += per, k++) {
    int n = s.rows - first < per ? s.rows - first : per;
    char path[600];
    snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, k);
    ShardInfo info = {s.frames, s.n_mels, s.rate, s.hop};
    ShardWriter *w = shard_create(path, &info, &err);
    ASSERT(w, "%s", err.msg);
    float *mel = malloc((size_t)s.frames * s.n_mels * sizeof *mel);
    for (int i = 0; i < n; i++) {
      /* a structured log-mel (a sloping ripple per row, plus noise): something real for the
       * discriminator to recognise */
      rng_normal_host(77, (uint64_t)(first + i) * 1000, mel, (int64_t)s.frames * s.n_mels);
      for (int f = 0; f < s.frames; f++)
        for (int m = 0; m < s.n_mels; m++)
          mel[f * s.n_mels + m] = 3.0f * sinf(0.9f * (float)f + 0.4f * (float)m + (float)(first + i)) - 0.3f * (float)m +
                                  0.1f * mel[f * s.n_mels + m];
      ASSERT(shard_append(w, mel, "a caption", "gen.wav", 0, &err) == 0, "%s", err.msg);
    }
    free(mel);
    ASSERT(shard_commit(w, &err) == 0, "%s", err.msg);
    int64_t nl = (int64_t)n * s.C2 * s.H * s.W;
    float *lat = malloc((size_t)nl * sizeof *lat + 4), *emb = malloc((size_t)n * s.D * sizeof *emb + 4);
    rng_normal_host(78, (uint64_t)first * 100000, lat, nl);
    /* mean ~ N(0, 1), logvar ~ −4 + 0.1·N(0, 1) (posterior std ≈ 0.14, as a trained VAE's) */
    int64_t half = (int64_t)s.C2 / 2 * s.H * s.W;
    for (int i = 0; i < n; i++)
      for (int64_t j = 0; j < half; j++) lat[(int64_t)i * 2 * half + half + j] = -4.0f + 0.1f * lat[(int64_t)i * 2 * half + half + j];
    rng_normal_host(79, (uint64_t)first * 1000, emb, (int64_t)n * s.D);
    ASSERT(shard_add_latents(path, lat, s.C2, s.H, s.W, &err) == 0, "%s", err.msg);
    ASSERT(shard_add_text_emb(path, emb, s.D, &err) == 0, "%s", err.msg);
    free(lat), free(emb);
    if (n == 0) break;
  }
  char path[600];
  snprintf(path, sizeof path, "%s/encoders.h5", dir);
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float *un = calloc((size_t)s.D, sizeof *un), scale = 0.25f;
  rng_normal_host(80, 0, un, s.D);
  ASSERT(tf_write(tf, "uncond_text_emb", DT_F32, 1, (int64_t[]){s.D}, un, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "vae_scaling_factor", DT_F32, 0, NULL, &scale, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "format", "mcm-encoders 1", &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  free(un);
}

/* The UNet of configs/tiny.ini with channels `mc`, random weights (seed), saved to path. */
void test_make_teacher(const char *path, int mc, uint64_t seed) {
  Ctx *ctx = ctx_create_cpu(seed);
  UNetConfig u = unet_config_musicldm();
  u.in_channels = u.out_channels = 2;
  u.levels = 2;
  u.block_out_channels[0] = mc, u.block_out_channels[1] = 2 * mc;
  u.attention[0] = false, u.attention[1] = true;
  u.layers_per_block = 1;
  u.norm_groups = 8;
  u.num_head_channels = 16;
  u.time_proj_dim = mc, u.time_embed_dim = 4 * mc;
  u.class_embed_in = 16;
  ParamSet ps;
  params_init(&ps, "");
  Unet *net = unet_create(ctx, &u, &ps);
  unet_init_random(ctx, net);
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(params_save(ctx, &ps, tf, "", DT_F32, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  params_free(&ps);
  ctx_destroy(ctx);
}

/* Losses by step from run.out_dir/log.jsonl (the last line of each step wins). */
int test_read_log_losses(const char *path, double *loss, int max_step) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[1024];
  int last = 0;
  while (fgets(line, sizeof line, f)) {
    long long step;
    double l;
    char *p = strstr(line, "\"loss\": ");
    if (sscanf(line, "{\"step\": %lld", &step) != 1 || !p || sscanf(p + 8, "%lf", &l) != 1) continue;
    if (step >= 1 && step <= max_step) loss[step - 1] = l, last = (int)step > last ? (int)step : last;
  }
  fclose(f);
  return last;
}

void test_make_train_dir(const char *dir) {
  char p[1024];
  snprintf(p, sizeof p, "%s/data", dir);
  test_make_train_data(p, test_tiny_data_spec());
  snprintf(p, sizeof p, "%s/teacher.h5", dir);
  test_make_teacher(p, 16, 5);
  snprintf(p, sizeof p, "%s/bridge.h5", dir);
  test_write_random_bridge(p);
}
