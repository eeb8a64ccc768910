/* tools/run_component.c: every component on the small fixture weights of the network tests
 * (tests/fixtures/model_*_weights*.h5, made by diffusers / transformers / AudioMAE's modules
 * themselves), with the configuration read from the weights' config attribute, against the
 * fixtures' reference outputs (relative L2 error <= 1e-4); the converted original-format files
 * (tests/fixtures/converters/) the same way; then the bad inputs, each one line and no output
 * file.
 *
 * The tool is a program of its own (build/<flavour>/tools/run_component), which `make test`
 * does not build; so its source is compiled into this test without its main() and its
 * rc_parse / rc_run are called in-process (each test runs in its own forked child, and under
 * SAN=1 the sanitizers watch the tool's code too). */
#define RUN_COMPONENT_NO_MAIN
#include "tools/run_component.c"

#include <unistd.h>

#include "fixture.h"
#include "test.h"

#define RC_TOL 1e-4
#define FX(name) "tests/fixtures/" name

/* ---------------------------------------------------------------- helpers */

/* Runs the tool with the given arguments (NULL-terminated); 0, or -1 with err. */
static int t_run(McmErr *err, ...) {
  char *argv[32] = {"run_component"};
  int argc = 1;
  va_list ap;
  va_start(ap, err);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;) argv[argc++] = a;
  va_end(ap);
  RcOptions o;
  int rc = rc_parse(argc, argv, &o, err);
  if (rc == 0) rc = rc_run(&o, err);
  return rc;
}

/* An input file at path with tensors copied from a fixture: pairs of (name in the input,
 * name in the fixture), NULL-terminated. An optional `taps` attribute. */
static void t_input(const char *path, const char *fixture, const char *taps, ...) {
  Fixture *fx = fixture_open(fixture);
  McmErr err;
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  va_list ap;
  va_start(ap, taps);
  for (const char *name; (name = va_arg(ap, const char *)) != NULL;) {
    const char *src = va_arg(ap, const char *);
    int ndim;
    int64_t shape[MCM_MAX_DIMS], n;
    DType dt;
    ASSERT(tf_info(fx, src, &ndim, shape, &dt, &err) == 0, "%s", err.msg);
    float *v = fixture_values(fx, src, &n);
    ASSERT(tf_write(tf, name, DT_F32, ndim, shape, v, &err) == 0, "%s", err.msg);
    free(v);
  }
  va_end(ap);
  if (taps) ASSERT(tf_set_attr(tf, "taps", taps, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  fixture_close(fx);
}

/* Relative L2 error of output `name` of the file at out against `ref` in the fixture. */
static double t_compare(const char *out, const char *name, const char *fixture, const char *ref) {
  Fixture *got = fixture_open(out), *want = fixture_open(fixture);
  int64_t n, m;
  float *g = fixture_values(got, name, &n), *w = fixture_values(want, ref, &m);
  double d = 0, r = 0;
  if (n == m)
    for (int64_t i = 0; i < n; i++) d += ((double)g[i] - w[i]) * ((double)g[i] - w[i]), r += (double)w[i] * w[i];
  double e = n == m ? sqrt(d / (r > 0 ? r : 1e-300)) : INFINITY;
  EXPECT(e <= RC_TOL, "%s:%s vs %s:%s: %lld vs %lld values, rel L2 %.3g > %g", out, name, fixture, ref, (long long)n,
         (long long)m, e, RC_TOL);
  free(g);
  free(w);
  fixture_close(got);
  fixture_close(want);
  return e;
}

/* The run fails with a message containing `want`, and leaves no output file. */
static void t_expect_fail(const char *want, const char *out, McmErr *err, int rc) {
  EXPECT(rc != 0, "expected a failure mentioning \"%s\"", want);
  if (rc != 0) {
    EXPECT_STR_CONTAINS(err->msg, want);
    EXPECT(!strchr(err->msg, '\n'), "error is not one line: %s", err->msg);
  }
  if (out) EXPECT(access(out, F_OK) != 0, "a failed run left %s behind", out);
}

/* ---------------------------------------------------------------- components */

TEST(run_component_unet_diffusers_and_per_level_heads) {
  McmErr err;
  const char *in_a = TEST_PATH("unet_a.h5"), *out_a = TEST_PATH("unet_a_out.h5");
  t_input(in_a, FX("model_unet.h5"), NULL, "x", "a/x", "t", "a/t", "class_emb", "a/class", NULL);
  /* case a: attention_head_dim 8 (diffusers' 8 heads everywhere) */
  ASSERT(t_run(&err, "--component", "unet", "--weights", FX("model_unet_weights_a.h5"), "--config-from-weights",
               "--in", in_a, "--out", out_a, NULL) == 0, "%s", err.msg);
  double ea = t_compare(out_a, "out", FX("model_unet.h5"), "a/out");
  /* case b: attention_head_dim (1, 2, 3), per level */
  const char *in_b = TEST_PATH("unet_b.h5"), *out_b = TEST_PATH("unet_b_out.h5");
  t_input(in_b, FX("model_unet.h5"), NULL, "x", "b/x", "t", "b/t", "class_emb", "b/class", NULL);
  ASSERT(t_run(&err, "--component", "unet", "--weights", FX("model_unet_weights_b.h5"), "--config-from-weights",
               "--in", in_b, "--out", out_b, NULL) == 0, "%s", err.msg);
  double eb = t_compare(out_b, "out", FX("model_unet.h5"), "b/out");
  /* the same heads given as channels per head (4 at 4/8/12 channels: 1, 2, 3 heads) */
  ASSERT(t_run(&err, "--component", "unet", "--weights", FX("model_unet_weights_b.h5"), "--config-from-weights",
               "--unet-head-channels", "4", "--in", in_b, "--out", out_b, NULL) == 0, "%s", err.msg);
  double ec = t_compare(out_b, "out", FX("model_unet.h5"), "b/out");
  printf("  run_component unet: rel L2 a %.2g, b %.2g, b with --unet-head-channels 4 %.2g\n", ea, eb, ec);
}

TEST(run_component_vae_encode_and_decode) {
  McmErr err;
  const char *in = TEST_PATH("vae_in.h5"), *out = TEST_PATH("vae_out.h5");
  t_input(in, FX("model_vae.h5"), NULL, "mel", "a/x", "z", "a/z", NULL);
  ASSERT(t_run(&err, "--component", "vae-encode", "--weights", FX("model_vae_weights_a.h5"), "--config-from-weights",
               "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  double em = t_compare(out, "mean", FX("model_vae.h5"), "a/mean");
  double el = t_compare(out, "logvar", FX("model_vae.h5"), "a/logvar");
  ASSERT(t_run(&err, "--component", "vae-decode", "--weights", FX("model_vae_weights_a.h5"), "--config-from-weights",
               "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  double ed = t_compare(out, "out", FX("model_vae.h5"), "a/dec");
  printf("  run_component vae: rel L2 mean %.2g, logvar %.2g, decode %.2g\n", em, el, ed);
}

TEST(run_component_vocoder) {
  McmErr err;
  double e[2];
  for (int c = 0; c < 2; c++) {
    const char *in = TEST_PATH("voc_in.h5"), *out = TEST_PATH("voc_out.h5");
    t_input(in, FX("model_hifigan.h5"), NULL, "mel", c ? "b/mel" : "a/mel", NULL);
    ASSERT(t_run(&err, "--component", "vocoder", "--weights",
                 c ? FX("model_hifigan_weights_b.h5") : FX("model_hifigan_weights_a.h5"), "--config-from-weights",
                 "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
    e[c] = t_compare(out, "out", FX("model_hifigan.h5"), c ? "b/out" : "a/out");
  }
  printf("  run_component vocoder: rel L2 a %.2g, b (normalize_before) %.2g\n", e[0], e[1]);
}

/* ids as an int32 dataset (what a tokenizer writes), through HDF5 directly. */
static void t_write_int_ids(const char *path, const char *fixture, const char *ids_name, const char *mask_name) {
  Fixture *fx = fixture_open(fixture);
  int ndim;
  int64_t shape[MCM_MAX_DIMS], n;
  DType dt;
  McmErr err;
  ASSERT(tf_info(fx, ids_name, &ndim, shape, &dt, &err) == 0, "%s", err.msg);
  float *v = fixture_values(fx, ids_name, &n);
  int32_t *ids = MALLOC_CHECK((size_t)n * sizeof(int32_t));
  for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)v[i];
  float *mask = fixture_values(fx, mask_name, &n);
  TensorFile *tf = tf_create(path, &err); /* the mask as fp32 through the tensor file ... */
  ASSERT(tf && tf_write(tf, "mask", DT_F32, ndim, shape, mask, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  hid_t fapl = h5_file_access(); /* ... and the ids as int32 beside it */
  hid_t f = H5_CHECK(H5Fopen(path, H5F_ACC_RDWR, fapl));
  hsize_t dims[2] = {(hsize_t)shape[0], (hsize_t)shape[1]};
  hid_t sp = H5_CHECK(H5Screate_simple(2, dims, NULL));
  hid_t d = H5_CHECK(H5Dcreate2(f, "ids", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  H5_CHECK(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids));
  H5Dclose(d);
  H5Sclose(sp);
  H5Fclose(f);
  H5Pclose(fapl);
  free(v);
  free(ids);
  free(mask);
  fixture_close(fx);
}

TEST(run_component_clap_text_int_and_float_ids) {
  McmErr err;
  const char *in = TEST_PATH("clap_in.h5"), *out = TEST_PATH("clap_out.h5");
  t_write_int_ids(in, FX("model_clap_text.h5"), "a/ids", "a/mask");
  ASSERT(t_run(&err, "--component", "clap-text", "--weights", FX("model_clap_text_weights_a.h5"),
               "--config-from-weights", "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  double ea = t_compare(out, "out", FX("model_clap_text.h5"), "a/out");
  /* a flat ClapTextConfig (case e), ids stored as floats */
  t_input(in, FX("model_clap_text.h5"), NULL, "ids", "e/ids", "mask", "e/mask", NULL);
  ASSERT(t_run(&err, "--component", "clap-text", "--weights", FX("model_clap_text_weights_e.h5"),
               "--config-from-weights", "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  double ee = t_compare(out, "out", FX("model_clap_text.h5"), "e/out");
  printf("  run_component clap-text: rel L2 a (ClapModel, int32 ids) %.2g, e (flat config, float ids) %.2g\n", ea, ee);
}

TEST(run_component_audiomae_taps) {
  McmErr err;
  const char *in = TEST_PATH("mae_in.h5"), *out = TEST_PATH("mae_out.h5");
  t_input(in, FX("model_audiomae.h5"), "[-1, 0, 2]", "fbank", "fwd/fbank", NULL);
  ASSERT(t_run(&err, "--component", "audiomae", "--weights", FX("model_audiomae_weights.h5"), "--config-from-weights",
               "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  double e = 0;
  e = fmax(e, t_compare(out, "tap_m1", FX("model_audiomae.h5"), "fwd/tap_m1"));
  e = fmax(e, t_compare(out, "tap_0", FX("model_audiomae.h5"), "fwd/tap_0"));
  e = fmax(e, t_compare(out, "tap_2", FX("model_audiomae.h5"), "fwd/tap_2"));
  e = fmax(e, t_compare(out, "cls", FX("model_audiomae.h5"), "fwd/cls"));
  /* --taps wins over the attribute */
  ASSERT(t_run(&err, "--component", "audiomae", "--weights", FX("model_audiomae_weights.h5"), "--config-from-weights",
               "--taps", "2", "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  Fixture *fx = fixture_open(out);
  EXPECT(tf_has(fx, "tap_2") && tf_has(fx, "cls") && !tf_has(fx, "tap_0"), "--taps 2: expected only tap_2 and cls");
  fixture_close(fx);
  printf("  run_component audiomae: max rel L2 over taps -1, 0, 2 and cls %.2g\n", e);
}

/* The original-format conversions (tools/convert_musicldm_original.py, tools/convert_audiomae.py):
 * their config attributes describe the networks (the UNet's per-level heads included). */
TEST(run_component_original_conversions) {
  McmErr err;
  const char *ref = FX("converters.h5"), *in = TEST_PATH("in.h5"), *out = TEST_PATH("out.h5");
  double e = 0;
  t_input(in, ref, NULL, "x", "unet/x", "t", "unet/t", "class_emb", "unet/class_emb", NULL);
  ASSERT(t_run(&err, "--component", "unet", "--weights", FX("converters/unet.h5"), "--config-from-weights", "--in",
               in, "--out", out, NULL) == 0, "%s", err.msg);
  e = fmax(e, t_compare(out, "out", ref, "unet/out"));
  t_input(in, ref, NULL, "mel", "vae/mel", "z", "vae/z", NULL);
  ASSERT(t_run(&err, "--component", "vae-encode", "--weights", FX("converters/vae.h5"), "--config-from-weights",
               "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  e = fmax(e, t_compare(out, "mean", ref, "vae/mean"));
  e = fmax(e, t_compare(out, "logvar", ref, "vae/logvar"));
  ASSERT(t_run(&err, "--component", "vae-decode", "--weights", FX("converters/vae.h5"), "--config-from-weights",
               "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  e = fmax(e, t_compare(out, "out", ref, "vae/dec"));
  t_input(in, ref, NULL, "mel", "vocoder/mel", NULL);
  ASSERT(t_run(&err, "--component", "vocoder", "--weights", FX("converters/vocoder.h5"), "--config-from-weights",
               "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  e = fmax(e, t_compare(out, "out", ref, "vocoder/out"));
  t_input(in, ref, NULL, "ids", "clap/ids", "mask", "clap/mask", NULL);
  ASSERT(t_run(&err, "--component", "clap-text", "--weights", FX("converters/text_encoder.h5"),
               "--config-from-weights", "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  e = fmax(e, t_compare(out, "out", ref, "clap/out"));
  t_input(in, ref, "-1,1", "fbank", "audiomae/fbank", NULL);
  ASSERT(t_run(&err, "--component", "audiomae", "--weights", FX("converters/audiomae.h5"), "--config-from-weights",
               "--in", in, "--out", out, NULL) == 0, "%s", err.msg);
  e = fmax(e, t_compare(out, "tap_m1", ref, "audiomae/tap_m1"));
  e = fmax(e, t_compare(out, "tap_1", ref, "audiomae/tap_1"));
  e = fmax(e, t_compare(out, "cls", ref, "audiomae/cls"));
  printf("  run_component on the original-format conversions: max rel L2 %.2g\n", e);
}

/* ---------------------------------------------------------------- bad inputs */

TEST(run_component_bad_inputs) {
  McmErr err;
  const char *in = TEST_PATH("in.h5"), *out = TEST_PATH("out.h5");
  t_input(in, FX("model_unet.h5"), NULL, "x", "a/x", "t", "a/t", "class_emb", "a/class", NULL);
  const char *wa = FX("model_unet_weights_a.h5");
#define RUN(...) t_run(&err, __VA_ARGS__, NULL)
  t_expect_fail("missing.h5", out, &err,
                RUN("--component", "unet", "--weights", TEST_PATH("missing.h5"), "--in", in, "--out", out));
  t_expect_fail("missing.h5", out, &err,
                RUN("--component", "unet", "--weights", TEST_PATH("missing.h5"), "--config-from-weights", "--in", in,
                    "--out", out));
  const char *text = TEST_PATH("not_hdf5.h5");
  FILE *f = fopen(text, "w");
  ASSERT(f, "cannot write %s", text);
  fputs("not an HDF5 file\n", f);
  fclose(f);
  t_expect_fail("not_hdf5.h5", out, &err,
                RUN("--component", "vocoder", "--weights", text, "--config-from-weights", "--in", in, "--out", out));
  t_expect_fail("not_hdf5.h5", out, &err,
                RUN("--component", "unet", "--weights", wa, "--in", text, "--out", out));
  /* the released configuration against tiny weights: the config disagreement, by name */
  t_expect_fail("block_out_channels", out, &err, RUN("--component", "unet", "--weights", wa, "--in", in, "--out", out));
  /* weights of another component */
  t_expect_fail("not the UNet's", out, &err,
                RUN("--component", "unet", "--weights", FX("model_vae_weights_a.h5"), "--in", in, "--out", out));
  /* a file without a config attribute */
  t_expect_fail("has no config attribute", out, &err,
                RUN("--component", "unet", "--weights", FX("model_unet.h5"), "--config-from-weights", "--in", in,
                    "--out", out));
  /* inputs: a missing tensor, a wrong rank, a wrong size */
  t_expect_fail("no tensor 'z'", out, &err,
                RUN("--component", "vae-decode", "--weights", FX("model_vae_weights_a.h5"), "--config-from-weights",
                    "--in", in, "--out", out));
  const char *in_t = TEST_PATH("in_t.h5");
  t_input(in_t, FX("model_unet.h5"), NULL, "mel", "a/x", NULL);
  t_expect_fail("'mel' is [2, 8, 16, 8], dimension 1 must be 1", out, &err,
                RUN("--component", "vae-encode", "--weights", FX("model_vae_weights_tiny.h5"), "--config-from-weights",
                    "--in", in_t, "--out", out));
  t_input(in_t, FX("model_unet.h5"), NULL, "x", "a/x", "t", "a/class", "class_emb", "a/class", NULL);
  t_expect_fail("'t' has 2 dimensions, expected 1", out, &err,
                RUN("--component", "unet", "--weights", wa, "--config-from-weights", "--in", in_t, "--out", out));
  t_input(in_t, FX("model_unet.h5"), NULL, "x", "a/x", "t", "a/t", "class_emb", "b/x", NULL);
  t_expect_fail("'class_emb' has 4 dimensions", out, &err,
                RUN("--component", "unet", "--weights", wa, "--config-from-weights", "--in", in_t, "--out", out));
  /* token ids out of the vocabulary, a mask with a hole */
  t_input(in_t, FX("model_unet.h5"), NULL, "ids", "a/class", NULL);
  t_expect_fail("is not a token id of this model (0..99)", out, &err,
                RUN("--component", "clap-text", "--weights", FX("model_clap_text_weights_a.h5"),
                    "--config-from-weights", "--in", in_t, "--out", out));
  {
    Fixture *fx = fixture_open(FX("model_clap_text.h5"));
    int64_t n;
    float *ids = fixture_values(fx, "a/ids", &n), mask[3 * 12];
    for (int i = 0; i < 3 * 12; i++) mask[i] = i % 12 < 5 && i != 14; /* row 1: 1 0 1 1 1 0 ... */
    TensorFile *tf = tf_create(in_t, &err);
    ASSERT(tf && tf_write(tf, "ids", DT_F32, SHAPE(3, 12), ids, &err) == 0, "%s", err.msg);
    ASSERT(tf_write(tf, "mask", DT_F32, SHAPE(3, 12), mask, &err) == 0 && tf_commit(tf, &err) == 0, "%s", err.msg);
    free(ids);
    fixture_close(fx);
  }
  t_expect_fail("mask row 1 is not 1 on a non-empty prefix", out, &err,
                RUN("--component", "clap-text", "--weights", FX("model_clap_text_weights_a.h5"),
                    "--config-from-weights", "--in", in_t, "--out", out));
  /* audiomae taps out of range */
  t_input(in_t, FX("model_audiomae.h5"), "0,3", "fbank", "fwd/fbank", NULL);
  t_expect_fail("tap 3 is out of range", out, &err,
                RUN("--component", "audiomae", "--weights", FX("model_audiomae_weights.h5"), "--config-from-weights",
                    "--in", in_t, "--out", out));
  /* the command line */
  t_expect_fail("--component", NULL, &err, RUN("--weights", wa, "--in", in, "--out", out));
  t_expect_fail("'ddpm' is not one of unet", NULL, &err,
                RUN("--component", "ddpm", "--weights", wa, "--in", in, "--out", out));
  t_expect_fail("unknown argument '--bogus'", NULL, &err, RUN("--bogus"));
  t_expect_fail("must not be the input file", NULL, &err,
                RUN("--component", "unet", "--weights", wa, "--in", in, "--out", in));
  t_expect_fail("--taps is for --component audiomae", NULL, &err,
                RUN("--component", "unet", "--weights", wa, "--taps", "1", "--in", in, "--out", out));
  if (!mcm_built_with_cuda())
    t_expect_fail("no usable GPU", out, &err,
                  RUN("--component", "unet", "--weights", wa, "--config-from-weights", "--device", "cuda", "--in", in,
                      "--out", out));
#undef RUN
}
