/* tools/bench.c, the mcm side of `make bench`: a small-size run on the CPU writes the JSON that
 * tools/bench_report.py reads (one row per case and dtype, the shapes bench_torch.py writes,
 * FLOPs counted), and every bad option is one line and exit 2.
 *
 * The tool's source is compiled into this test without its main() (as test_run_component.c
 * does), so `make test` needs no extra binary and SAN=1 watches the tool's code too. */
#define BENCH_NO_MAIN
#include "tools/bench.c"

#include <stdarg.h>

#include "test.h"

/* Runs bench_main on the NULL-terminated arguments. */
static int t_bench(const char *first, ...) {
  char *argv[32] = {"bench", (char *)first};
  int argc = 2;
  va_list ap;
  va_start(ap, first);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;) argv[argc++] = a;
  va_end(ap);
  return bench_main(argc, argv);
}

static json_t *row(json_t *cases, const char *name, const char *dtype) {
  for (size_t i = 0; i < json_array_size(cases); i++) {
    json_t *r = json_array_get(cases, i);
    if (!strcmp(json_string_value(json_object_get(r, "case")), name) &&
        !strcmp(json_string_value(json_object_get(r, "dtype")), dtype))
      return r;
  }
  return NULL;
}

TEST(bench_small_cpu_json) {
  const char *out = TEST_PATH("mcm.json");
  ASSERT(t_bench("--device", "cpu", "--size", "small", "--iters", "2", "--warmup", "0", "--only", "vocoder",
                 "--only", "unet_train,audiomae", "--out", out, "--mcm-version", "test", NULL) == 0,
         "bench failed");
  json_error_t je;
  json_t *root = json_load_file(out, 0, &je);
  ASSERT(root, "%s: %s", out, je.text);
  EXPECT(!strcmp(json_string_value(json_object_get(root, "impl")), "mcm"), "impl");
  EXPECT(!strcmp(json_string_value(json_object_get(root, "version")), "test"), "version");
  EXPECT(json_is_true(json_object_get(root, "complete")), "complete");
  json_t *cases = json_object_get(root, "cases");
  EXPECT(json_array_size(cases) == 5, "%zu rows, expected 5 (vocoder and audiomae twice, unet_train once)",
         json_array_size(cases));
  EXPECT(!row(cases, "unet_train", "bf16"), "unet_train has no bf16 row");
  EXPECT(!row(cases, "unet_fwd", "fp32"), "--only left unet_fwd out");
  const char *want[][3] = {{"vocoder", "fp32", "B=1 mel 64x16 -> 10272 samples"},
                           {"vocoder", "bf16", "B=1 mel 64x16 -> 10272 samples"},
                           {"unet_train", "fp32", "B=8 x 8x32x8 emb 32"},
                           {"audiomae", "bf16", "B=8 fbank 64x32 taps -1,1,3"}};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    json_t *r = row(cases, want[i][0], want[i][1]);
    ASSERT(r, "no %s %s row", want[i][0], want[i][1]);
    EXPECT(!strcmp(json_string_value(json_object_get(r, "shape")), want[i][2]), "%s shape '%s'", want[i][0],
           json_string_value(json_object_get(r, "shape")));
    EXPECT(json_real_value(json_object_get(r, "ms")) > 0, "%s ms", want[i][0]);
    EXPECT(json_array_size(json_object_get(r, "times_ms")) == 2, "%s: 2 timed iterations", want[i][0]);
    EXPECT(json_real_value(json_object_get(r, "flops")) > 0, "%s flops", want[i][0]);
    EXPECT(json_is_null(json_object_get(r, "mfu")), "%s: no MFU on the CPU", want[i][0]);
  }
  EXPECT(json_real_value(json_object_get(row(cases, "audiomae", "bf16"), "flops_bf16")) > 0, "bf16 FLOPs counted");
  EXPECT(json_real_value(json_object_get(row(cases, "vocoder", "fp32"), "flops_bf16")) == 0, "fp32 row: no bf16");
  json_decref(root);
}

TEST(bench_bad_options) {
  EXPECT(t_bench("--size", "small", NULL) == 2, "no --device");
  EXPECT(t_bench("--device", "cpu", NULL) == 2, "no --size");
  EXPECT(t_bench("--device", "tpu", "--size", "small", NULL) == 2, "bad device");
  EXPECT(t_bench("--device", "cpu", "--size", "huge", NULL) == 2, "bad size");
  EXPECT(t_bench("--device", "cpu", "--size", "small", "--iters", "0", NULL) == 2, "--iters 0");
  EXPECT(t_bench("--device", "cpu", "--size", "small", "--warmup", "x", NULL) == 2, "--warmup x");
  EXPECT(t_bench("--device", "cpu", "--size", "small", "--only", "unet", NULL) == 2, "unknown case");
  EXPECT(t_bench("--device", "cpu", "--size", "small", "--only", ",", NULL) == 2, "empty --only");
  EXPECT(t_bench("--device", "cpu", "--size", "small", "--out", NULL) == 2, "--out without a value");
  EXPECT(t_bench("--device", "cpu", "--size", "small", "--frobnicate", NULL) == 2, "unknown option");
  if (!mcm_built_with_cuda() || cuda_device_count() == 0)
    EXPECT(t_bench("--device", "cuda", "--size", "small", NULL) == 2, "cuda without a GPU must not fall back");
  EXPECT(t_bench("--device", "cpu", "--size", "small", "--only", "vocoder", "--iters", "1", "--warmup", "0",
                 "--out", "/nonexistent-dir/x.json", NULL) == 1,
         "unwritable --out");
}
