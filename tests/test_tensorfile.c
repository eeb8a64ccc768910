/* Tests for core/tensorfile: round trips per stored dtype (bit-exact against the host
 * rounding functions), names and attributes, atomic writes (a writer killed mid-file), and
 * every error a user's file can cause. */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/tensorfile.h"
#include "tests/test.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Values spread over many binades, both signs. */
static void fill_random(float *x, int64_t n, uint64_t seed) {
  uint64_t s = seed * 2654435761u + 1;
  for (int64_t i = 0; i < n; i++) {
    double u = (double)(rng_next(&s) >> 11) / 9007199254740992.0; /* [0, 1) */
    int e = (int)(rng_next(&s) % 40) - 20;
    x[i] = (float)((u - 0.5) * ldexp(1.0, e));
  }
}

static uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static float from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

static int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

/* Writes one fp32 tensor to a fresh committed file. */
static void write_one(const char *path, const char *name, DType stored, int ndim, const int64_t *shape,
                      const float *data) {
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "tf_create: %s", err.msg);
  ASSERT(tf_write(tf, name, stored, ndim, shape, data, &err) == 0, "tf_write: %s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "tf_commit: %s", err.msg);
}

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Values where fp16 / bf16 rounding is interesting: zeros, fp16 subnormals and the
 * underflow boundary, fp16 max and overflow, infinities, NaN, ties. */
static const float SPECIAL[] = {
    0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 1.0f / 3.0f,
    0x1p-24f /* smallest fp16 subnormal */, 0x1p-25f /* half of it: ties to 0 */,
    0x1.8p-24f /* 1.5 subnormal steps: ties to 2 */, 0x1.ff8p-15f /* largest fp16 subnormal */,
    0x1p-14f /* smallest fp16 normal */, -3.0e-6f, 1e-10f, -1e-10f,
    65504.0f /* fp16 max */, 65519.0f /* rounds to max */, 65520.0f /* rounds to inf */, 1e6f, -1e6f,
    3.0e38f, 0x1p-130f /* fp32 subnormal */, 0x1.002p0f /* fp16 tie: 1 + 2^-11 */,
    0x1.01p0f /* bf16 tie to even (down): 1 + 2^-8 */, 0x1.03p0f /* bf16 tie to even (up): 1 + 3*2^-8 */,
    INFINITY, -INFINITY, NAN, -NAN};
#define N_SPECIAL ((int)(sizeof SPECIAL / sizeof SPECIAL[0]))

/* Special values, then random ones. */
static float *test_values(int64_t n) {
  float *x = malloc((size_t)n * sizeof(float));
  fill_random(x, n, 7);
  for (int i = 0; i < N_SPECIAL && i < n; i++) x[i] = SPECIAL[i];
  return x;
}

/* ---------------------------------------------------------------- round trips */

static const int64_t RANK_SHAPES[5][5] = {{1000}, {37, 11}, {3, 5, 7}, {8, 4, 3, 3}, {2, 3, 1, 4, 5}};

TEST(tf_roundtrip_f32_all_ranks) {
  const char *path = TEST_PATH("f32.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float *src[5];
  char name[32];
  for (int r = 0; r < 5; r++) {
    int64_t n = numel(r + 1, RANK_SHAPES[r]);
    src[r] = test_values(n);
    snprintf(name, sizeof name, "rank%d", r + 1);
    ASSERT(tf_write(tf, name, DT_F32, r + 1, RANK_SHAPES[r], src[r], &err) == 0, "%s", err.msg);
  }
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  EXPECT(!file_exists(TEST_PATH("f32.h5.tmp")), "temporary left after commit");

  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int r = 0; r < 5; r++) {
    int64_t n = numel(r + 1, RANK_SHAPES[r]);
    snprintf(name, sizeof name, "rank%d", r + 1);
    int nd = -1;
    int64_t shape[5] = {0};
    DType dt = DT_BF16;
    ASSERT(tf_info(tf, name, &nd, shape, &dt, &err) == 0, "%s", err.msg);
    EXPECT(nd == r + 1 && dt == DT_F32, "%s: ndim %d dtype %d", name, nd, (int)dt);
    EXPECT(!memcmp(shape, RANK_SHAPES[r], (size_t)nd * sizeof(int64_t)), "%s: shape", name);
    float *out = malloc((size_t)n * sizeof(float));
    ASSERT(tf_read(tf, name, r + 1, RANK_SHAPES[r], out, &err) == 0, "%s", err.msg);
    EXPECT(!memcmp(out, src[r], (size_t)n * sizeof(float)), "%s: fp32 not bit-exact", name);
    free(out);
    free(src[r]);
  }
  tf_close(tf);
}

/* Larger than one chunk along several layouts (rows, a long 1-D run, a 5-D block). */
TEST(tf_roundtrip_multi_chunk) {
  const int64_t shapes[3][5] = {{700, 1024}, {1 << 20}, {3, 2, 300, 64, 33}};
  const int ndims[3] = {2, 1, 5};
  const DType dts[3] = {DT_F32, DT_BF16, DT_F16};
  const char *path = TEST_PATH("big.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float *src[3];
  for (int i = 0; i < 3; i++) {
    int64_t n = numel(ndims[i], shapes[i]);
    src[i] = malloc((size_t)n * sizeof(float));
    fill_random(src[i], n, 100 + (uint64_t)i);
    char name[16];
    snprintf(name, sizeof name, "t%d", i);
    ASSERT(tf_write(tf, name, dts[i], ndims[i], shapes[i], src[i], &err) == 0, "%s", err.msg);
  }
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < 3; i++) {
    int64_t n = numel(ndims[i], shapes[i]);
    float *out = malloc((size_t)n * sizeof(float));
    char name[16];
    snprintf(name, sizeof name, "t%d", i);
    ASSERT(tf_read(tf, name, ndims[i], shapes[i], out, &err) == 0, "%s", err.msg);
    int64_t bad = 0;
    for (int64_t j = 0; j < n; j++) {
      float want = dts[i] == DT_F32 ? src[i][j]
                   : dts[i] == DT_BF16 ? bf16_to_f32(f32_to_bf16(src[i][j]))
                                       : f16_to_f32(f32_to_f16(src[i][j]));
      bad += bits(out[j]) != bits(want);
    }
    EXPECT(bad == 0, "%s: %lld of %lld values differ", name, (long long)bad, (long long)n);
    free(out);
    free(src[i]);
  }
  tf_close(tf);
}

/* Stored 16-bit type: the file holds exactly the host rounding of the input, and reads back
 * through every requested type consistently. */
static void check_16bit(DType dt) {
  const int64_t n = 4096;
  float *x = test_values(n);
  const int64_t shape[2] = {64, 64};
  const char *path = TEST_PATH("h.h5");
  write_one(path, "w", dt, 2, shape, x);
  McmErr err = {{0}};
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  DType stored = DT_F32;
  ASSERT(tf_info(tf, "w", NULL, NULL, &stored, &err) == 0, "%s", err.msg);
  EXPECT(stored == dt, "stored dtype %d, wrote %d", (int)stored, (int)dt);

  uint16_t *raw = malloc((size_t)n * 2);
  float *f = malloc((size_t)n * 4);
  uint16_t *other = malloc((size_t)n * 2);
  DType odt = dt == DT_F16 ? DT_BF16 : DT_F16;
  ASSERT(tf_read_raw(tf, "w", dt, 2, shape, raw, &err) == 0, "%s", err.msg);
  ASSERT(tf_read(tf, "w", 2, shape, f, &err) == 0, "%s", err.msg);
  ASSERT(tf_read_raw(tf, "w", odt, 2, shape, other, &err) == 0, "%s", err.msg);
  int bad_raw = 0, bad_f = 0, bad_o = 0;
  for (int64_t i = 0; i < n; i++) {
    uint16_t want = dt == DT_F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
    float wf = dt == DT_F16 ? f16_to_f32(want) : bf16_to_f32(want);
    uint16_t wo = odt == DT_F16 ? f32_to_f16(wf) : f32_to_bf16(wf);
    if (raw[i] != want && bad_raw++ < 5) test_fail(__FILE__, __LINE__, "x=%g: file bits %04x, want %04x", x[i], raw[i], want);
    if (bits(f[i]) != bits(wf) && bad_f++ < 5) test_fail(__FILE__, __LINE__, "x=%g: read %g, want %g", x[i], f[i], wf);
    if (other[i] != wo) bad_o++;
  }
  EXPECT(bad_o == 0, "%d values differ when read as the other 16-bit type", bad_o);
  /* The cases this test is about actually occur. */
  if (dt == DT_F16) {
    EXPECT(raw[6] == 0x0001 && raw[7] == 0x0000 && raw[8] == 0x0002, "fp16 subnormals: %04x %04x %04x", raw[6], raw[7], raw[8]);
    EXPECT(raw[14] == 0x7bff && raw[15] == 0x7bff && raw[16] == 0x7c00 && raw[17] == 0x7c00 && raw[18] == 0xfc00, "fp16 max/overflow");
    EXPECT(isnan(f[26]) && isnan(f[27]), "NaN lost");
  } else {
    EXPECT(raw[22] == 0x3f80 && raw[23] == 0x3f82, "bf16 ties to even: %04x %04x", raw[22], raw[23]);
    EXPECT(raw[20] == 0x0008 && raw[24] == 0x7f80 && raw[25] == 0xff80 && isnan(f[26]), "bf16 specials");
  }
  free(raw);
  free(f);
  free(other);
  free(x);
  tf_close(tf);
}

TEST(tf_roundtrip_f16_exact) { check_16bit(DT_F16); }
TEST(tf_roundtrip_bf16_exact) { check_16bit(DT_BF16); }

/* The on-disk types as another HDF5 reader sees them: fp16 is a float HDF5 itself converts
 * to the same values as f16_to_f32 (so h5py's float16 agrees), bf16 is tagged uint16. */
TEST(tf_disk_types_for_other_readers) {
  const int64_t n = 2048, shape[1] = {2048};
  float *x = test_values(n);
  const char *path = TEST_PATH("types.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_write(tf, "half", DT_F16, 1, shape, x, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "brain", DT_BF16, 1, shape, x, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "single", DT_F32, 1, shape, x, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);

  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT(file >= 0, "H5Fopen");
  hid_t ds = H5Dopen2(file, "half", H5P_DEFAULT);
  hid_t t = H5Dget_type(ds);
  size_t spos, epos, esize, mpos, msize;
  H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize);
  EXPECT(H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 2 && H5Tget_order(t) == H5T_ORDER_LE, "half class/size/order");
  EXPECT(spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(t) == 15,
         "half fields %zu %zu %zu %zu %zu bias %zu", spos, epos, esize, mpos, msize, H5Tget_ebias(t));
  EXPECT(H5Tget_precision(t) == 16 && H5Tget_offset(t) == 0, "half precision %zu", H5Tget_precision(t));
  float *h5conv = malloc((size_t)n * sizeof(float));
  EXPECT(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, h5conv) >= 0, "HDF5 conversion half->float");
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    float want = f16_to_f32(f32_to_f16(x[i]));
    if (isnan(want) ? !isnan(h5conv[i]) : bits(want) != bits(h5conv[i]))
      if (bad++ < 5) test_fail(__FILE__, __LINE__, "x=%g: HDF5 reads %g, want %g", x[i], h5conv[i], want);
  }
  H5Tclose(t);
  H5Dclose(ds);

  ds = H5Dopen2(file, "brain", H5P_DEFAULT);
  t = H5Dget_type(ds);
  EXPECT(H5Tequal(t, H5T_STD_U16LE) > 0, "bf16 not stored as U16LE");
  H5Tclose(t);
  hid_t a = H5Aopen(ds, "dtype", H5P_DEFAULT);
  EXPECT(a >= 0, "bf16 dataset has no dtype attribute");
  if (a >= 0) {
    hid_t at = H5Aget_type(a);
    char *s = NULL;
    EXPECT(H5Tis_variable_str(at) > 0 && H5Aread(a, at, &s) >= 0 && s && !strcmp(s, "bfloat16"),
           "dtype attribute is '%s'", s ? s : "?");
    if (s) H5free_memory(s);
    H5Tclose(at);
    H5Aclose(a);
  }
  /* Checksummed and chunked. */
  hid_t dcpl = H5Dget_create_plist(ds);
  EXPECT(H5Pget_layout(dcpl) == H5D_CHUNKED, "bf16 dataset not chunked");
  EXPECT(H5Pget_nfilters(dcpl) == 1, "expected exactly one filter (Fletcher32)");
  H5Pclose(dcpl);
  H5Dclose(ds);

  ds = H5Dopen2(file, "single", H5P_DEFAULT);
  t = H5Dget_type(ds);
  EXPECT(H5Tequal(t, H5T_IEEE_F32LE) > 0, "fp32 not stored as F32LE");
  H5Tclose(t);
  H5Dclose(ds);
  H5Fclose(file);
  free(h5conv);
  free(x);
}

/* Data already in the stored dtype goes to disk untouched, NaN payloads included. */
TEST(tf_write_raw_keeps_bits) {
  uint16_t h[256];
  for (int i = 0; i < 256; i++) h[i] = (uint16_t)(i * 257);
  float f[4] = {1.5f, from_bits(0x7fc01234u), from_bits(0x00000001u), -0.0f};
  const char *path = TEST_PATH("raw.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_write_raw(tf, "h", DT_F16, 2, (int64_t[]){16, 16}, h, &err) == 0, "%s", err.msg);
  ASSERT(tf_write_raw(tf, "b", DT_BF16, 1, (int64_t[]){256}, h, &err) == 0, "%s", err.msg);
  ASSERT(tf_write_raw(tf, "f", DT_F32, 1, (int64_t[]){4}, f, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  uint16_t back[256];
  float fb[4];
  ASSERT(tf_read_raw(tf, "h", DT_F16, 2, (int64_t[]){16, 16}, back, &err) == 0, "%s", err.msg);
  EXPECT(!memcmp(back, h, sizeof h), "fp16 bits changed");
  ASSERT(tf_read_raw(tf, "b", DT_BF16, 1, (int64_t[]){256}, back, &err) == 0, "%s", err.msg);
  EXPECT(!memcmp(back, h, sizeof h), "bf16 bits changed");
  ASSERT(tf_read(tf, "f", 1, (int64_t[]){4}, fb, &err) == 0, "%s", err.msg);
  EXPECT(!memcmp(fb, f, sizeof f), "fp32 bits changed");
  /* fp32 on disk read as bf16 rounds like f32_to_bf16. */
  ASSERT(tf_read_raw(tf, "f", DT_BF16, 1, (int64_t[]){4}, back, &err) == 0, "%s", err.msg);
  for (int i = 0; i < 4; i++) EXPECT(back[i] == f32_to_bf16(f[i]), "f32->bf16 [%d]: %04x", i, back[i]);
  tf_close(tf);
}

/* Rank 0 and zero-size dimensions are stored and read back (nothing to read for the latter). */
TEST(tf_scalar_and_zero_size) {
  const char *path = TEST_PATH("z.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float s = 42.5f;
  ASSERT(tf_write(tf, "scalar", DT_F32, 0, NULL, &s, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "empty", DT_F32, 2, (int64_t[]){0, 4}, NULL, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "empty16", DT_BF16, 3, (int64_t[]){2, 0, 3}, NULL, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  float back = 0;
  ASSERT(tf_read(tf, "scalar", 0, NULL, &back, &err) == 0, "%s", err.msg);
  EXPECT(back == 42.5f, "scalar %g", back);
  int nd;
  int64_t shape[5];
  DType dt;
  ASSERT(tf_info(tf, "empty16", &nd, shape, &dt, &err) == 0, "%s", err.msg);
  EXPECT(nd == 3 && shape[0] == 2 && shape[1] == 0 && shape[2] == 3 && dt == DT_BF16, "empty16 info");
  float dummy = 7;
  EXPECT(tf_read(tf, "empty", 2, (int64_t[]){0, 4}, &dummy, &err) == 0, "%s", err.msg);
  EXPECT(dummy == 7, "zero-size read wrote to out");
  EXPECT(tf_read(tf, "empty", 2, (int64_t[]){1, 4}, &dummy, &err) < 0, "size 0 vs 1 accepted");
  EXPECT_STR_CONTAINS(err.msg, "expected shape [1, 4], file has [0, 4]");
  tf_close(tf);
}

/* ---------------------------------------------------------------- names and attributes */

TEST(tf_names_with_dots_and_slashes) {
  const char *names[] = {"model.diffusion_model.input_blocks.0.0.weight", "unet/conv_in.weight",
                         "unet/down_blocks.0/resnets.1/conv1.bias", "/abs/leading.slash", "z"};
  const char *sorted[] = {"abs/leading.slash", "model.diffusion_model.input_blocks.0.0.weight",
                          "unet/conv_in.weight", "unet/down_blocks.0/resnets.1/conv1.bias", "z"};
  const char *path = TEST_PATH("names.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  for (int i = 0; i < 5; i++) {
    float v[3] = {(float)i, (float)i + 0.5f, -(float)i};
    ASSERT(tf_write(tf, names[i], DT_F32, 1, (int64_t[]){3}, v, &err) == 0, "%s: %s", names[i], err.msg);
  }
  /* The write handle reads what it holds so far. */
  EXPECT(tf_has(tf, "unet/conv_in.weight"), "tf_has on the write handle");
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);

  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  char **got;
  int n;
  ASSERT(tf_names(tf, &got, &n, &err) == 0, "%s", err.msg);
  EXPECT(n == 5, "%d names", n);
  for (int i = 0; i < n && i < 5; i++) EXPECT(!strcmp(got[i], sorted[i]), "names[%d] = %s, want %s", i, got[i], sorted[i]);
  tf_free_names(got, n);
  for (int i = 0; i < 5; i++) {
    float v[3];
    ASSERT(tf_read(tf, names[i], 1, (int64_t[]){3}, v, &err) == 0, "%s", err.msg);
    EXPECT(v[0] == (float)i && v[1] == (float)i + 0.5f && v[2] == -(float)i, "%s values", names[i]);
  }
  EXPECT(tf_has(tf, "unet/conv_in.weight") && tf_has(tf, "/unet/conv_in.weight"), "tf_has");
  EXPECT(!tf_has(tf, "unet"), "a group is not a tensor");
  EXPECT(!tf_has(tf, "unet/conv_in"), "prefix is not a tensor");
  EXPECT(!tf_has(tf, "z/under_a_tensor"), "below a tensor");
  EXPECT(!tf_has(tf, "nope/deeper/x"), "missing parents");
  EXPECT(!tf_has(tf, "") && !tf_has(tf, "unet//conv_in.weight"), "bad names");
  float v[3];
  EXPECT(tf_read(tf, "unet", 1, (int64_t[]){3}, v, &err) < 0, "read of a group");
  EXPECT_STR_CONTAINS(err.msg, "'unet' is a group, not a tensor");
  EXPECT(tf_read(tf, "z/x", 1, (int64_t[]){3}, v, &err) < 0, "read below a tensor");
  EXPECT_STR_CONTAINS(err.msg, "no tensor 'z/x'");
  tf_close(tf);
}

TEST(tf_bad_names_and_duplicates) {
  const char *path = TEST_PATH("bad.h5");
  McmErr err = {{0}};
  const char *bad[] = {"", "/", "a//b", "a/", "./a", "a/../b"};
  float v = 1;
  for (int i = 0; i < 6; i++) {
    TensorFile *tf = tf_create(path, &err);
    ASSERT(tf, "%s", err.msg);
    EXPECT(tf_write(tf, bad[i], DT_F32, 1, (int64_t[]){1}, &v, &err) < 0, "name '%s' accepted", bad[i]);
    tf_abort(tf);
  }
  struct {
    const char *first, *second, *msg;
  } clash[] = {{"a.b", "a.b", "written twice"},
               {"a/b", "a", "a group has that name"},
               {"a", "a/b", "'a' is already a tensor"}};
  for (int i = 0; i < 3; i++) {
    TensorFile *tf = tf_create(path, &err);
    ASSERT(tf, "%s", err.msg);
    ASSERT(tf_write(tf, clash[i].first, DT_F32, 1, (int64_t[]){1}, &v, &err) == 0, "%s", err.msg);
    EXPECT(tf_write(tf, clash[i].second, DT_F32, 1, (int64_t[]){1}, &v, &err) < 0, "%s then %s accepted",
           clash[i].first, clash[i].second);
    EXPECT_STR_CONTAINS(err.msg, clash[i].msg);
    /* A failed write poisons the handle: it cannot publish a half-written file. */
    EXPECT(tf_commit(tf, &err) < 0, "commit after a failed write");
    EXPECT_STR_CONTAINS(err.msg, "an earlier write to it failed");
    EXPECT(!file_exists(path) && !file_exists(TEST_PATH("bad.h5.tmp")), "file left behind");
  }
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  EXPECT(tf_write(tf, "neg", DT_F32, 2, (int64_t[]){2, -1}, &v, &err) < 0, "negative size");
  tf_abort(tf);
  tf = tf_create(path, &err);
  EXPECT(tf_write(tf, "six", DT_F32, 6, (int64_t[]){1, 1, 1, 1, 1, 1}, &v, &err) < 0, "rank 6");
  EXPECT_STR_CONTAINS(err.msg, "rank 6");
  tf_abort(tf);
}

TEST(tf_attributes) {
  const char *path = TEST_PATH("attr.h5");
  size_t big_n = 200000; /* larger than HDF5's 64 KiB compact attribute limit */
  char *big = malloc(big_n + 1);
  for (size_t i = 0; i < big_n; i++) big[i] = (char)('a' + i % 26);
  big[big_n] = 0;
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "config", "[unet]\nchannels = 128\n", &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "step", "1", &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "step", "1000", &err) == 0, "replace: %s", err.msg);
  ASSERT(tf_set_attr(tf, "empty", "", &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "utf8", "Jöhann Strauß ♪", &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "big", big, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);

  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  char *v = NULL;
  ASSERT(tf_get_attr(tf, "config", &v, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(v, "[unet]\nchannels = 128\n"), "config = '%s'", v);
  free(v);
  ASSERT(tf_get_attr(tf, "step", &v, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(v, "1000"), "step = '%s'", v);
  free(v);
  ASSERT(tf_get_attr(tf, "empty", &v, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(v, ""), "empty = '%s'", v);
  free(v);
  ASSERT(tf_get_attr(tf, "utf8", &v, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(v, "Jöhann Strauß ♪"), "utf8 = '%s'", v);
  free(v);
  ASSERT(tf_get_attr(tf, "big", &v, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(v, big), "big attribute differs");
  free(v);
  EXPECT(tf_get_attr(tf, "seed", &v, &err) < 0 && v == NULL, "missing attribute found");
  EXPECT_STR_CONTAINS(err.msg, "no attribute 'seed'");
  EXPECT_STR_CONTAINS(err.msg, "config");
  tf_close(tf);
  free(big);
}

/* Fixed-length string attributes (numpy bytes in h5py) read too. */
TEST(tf_attribute_fixed_length) {
  const char *path = TEST_PATH("fixed.h5");
  hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, 5);
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(file, "name", t, sp, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, t, "hello");
  H5Aclose(a);
  H5Sclose(sp);
  H5Tclose(t);
  H5Fclose(file);
  McmErr err = {{0}};
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  char *v = NULL;
  ASSERT(tf_get_attr(tf, "name", &v, &err) == 0, "%s", err.msg);
  EXPECT(!strcmp(v, "hello"), "'%s'", v);
  free(v);
  EXPECT(tf_get_attr(tf, "other", &v, &err) < 0, "missing");
  EXPECT_STR_CONTAINS(err.msg, "the file's attributes are: name");
  tf_close(tf);
}

/* tf_has_attr sees every attribute, readable or not, so a caller can tell an optional
 * attribute that is absent from one that is present but not a string. */
TEST(tf_has_attr_tells_missing_from_unreadable) {
  const char *path = TEST_PATH("has_attr.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "config", "{}", &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "empty", "", &err) == 0, "%s", err.msg);
  EXPECT(tf_has_attr(tf, "config"), "config not seen on the handle being written");
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  /* An integer attribute, as another tool might write. */
  hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT(file >= 0, "cannot reopen %s", path);
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(file, "step", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT);
  int step = 7;
  H5Awrite(a, H5T_NATIVE_INT, &step);
  H5Aclose(a);
  H5Sclose(sp);
  H5Fclose(file);

  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  EXPECT(tf_has_attr(tf, "config") && tf_has_attr(tf, "empty"), "string attributes not seen");
  EXPECT(tf_has_attr(tf, "step"), "the integer attribute not seen");
  EXPECT(!tf_has_attr(tf, "seed"), "a missing attribute seen");
  EXPECT(!tf_has_attr(tf, "Config"), "names are case-sensitive");
  EXPECT(!tf_has_attr(tf, "") && !tf_has_attr(tf, NULL), "an empty or NULL name seen");
  char *v = NULL;
  EXPECT(tf_get_attr(tf, "step", &v, &err) < 0 && v == NULL, "an integer read as a string");
  EXPECT_STR_CONTAINS(err.msg, "attribute 'step': it is not a single string");
  tf_close(tf);
}

/* Same content, same bytes: object timestamps are off. */
TEST(tf_files_are_reproducible) {
  float x[300];
  fill_random(x, 300, 3);
  for (int k = 0; k < 2; k++) {
    McmErr err = {{0}};
    TensorFile *tf = tf_create(TEST_PATH(k ? "b.h5" : "a.h5"), &err);
    ASSERT(tf, "%s", err.msg);
    ASSERT(tf_write(tf, "unet/w", DT_BF16, 2, (int64_t[]){10, 30}, x, &err) == 0, "%s", err.msg);
    ASSERT(tf_set_attr(tf, "step", "5", &err) == 0, "%s", err.msg);
    ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
    if (!k) sleep(1);
  }
  size_t na, nb;
  unsigned char *a = (unsigned char *)test_read_file(TEST_PATH("a.h5"), &na);
  unsigned char *b = (unsigned char *)test_read_file(TEST_PATH("b.h5"), &nb);
  ASSERT(a && b, "read back");
  long first = -1;
  for (size_t i = 0; i < na && i < nb && first < 0; i++) if (a[i] != b[i]) first = (long)i;
  EXPECT(na == nb && first < 0, "files differ (%zu vs %zu bytes, first at %ld)", na, nb, first);
  free(a);
  free(b);
}

/* ---------------------------------------------------------------- atomic writes */

TEST(tf_killed_writer_leaves_old_file) {
  const char *path = TEST_PATH("ckpt.h5");
  const int64_t small_shape[2] = {16, 16};
  float a[256];
  fill_random(a, 256, 11);
  write_one(path, "w", DT_F32, 2, small_shape, a);
  long size_a = file_size(path);

  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ASSERT(pid >= 0, "fork");
  if (pid == 0) {
    McmErr err;
    TensorFile *tf = tf_create(path, &err);
    if (!tf) _exit(3);
    const int64_t n = 8 << 20; /* 32 MiB of fp32 */
    float *big = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) big[i] = (float)i;
    if (tf_write(tf, "w", DT_F32, 1, &n, big, &err) < 0) _exit(4);
    raise(SIGKILL); /* dies with the temporary half-published */
    _exit(5);
  }
  int status = 0;
  ASSERT(waitpid(pid, &status, 0) == pid, "waitpid");
  ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child did not die by SIGKILL (status %d)", status);
  EXPECT(file_exists(TEST_PATH("ckpt.h5.tmp")), "the killed writer left no temporary (did it write anything?)");

  McmErr err = {{0}};
  EXPECT(file_size(path) == size_a, "published file changed size");
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "old file unreadable: %s", err.msg);
  float back[256];
  ASSERT(tf_read(tf, "w", 2, small_shape, back, &err) == 0, "%s", err.msg);
  EXPECT(!memcmp(back, a, sizeof a), "old file's data changed");
  tf_close(tf);

  /* A new writer replaces the stale temporary and publishes. */
  float b[256];
  fill_random(b, 256, 12);
  write_one(path, "w", DT_BF16, 2, small_shape, b);
  EXPECT(!file_exists(TEST_PATH("ckpt.h5.tmp")), "temporary left");
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_read(tf, "w", 2, small_shape, back, &err) == 0, "%s", err.msg);
  for (int i = 0; i < 256; i++) EXPECT(bits(back[i]) == bits(bf16_to_f32(f32_to_bf16(b[i]))), "new data [%d]", i);
  tf_close(tf);
}

TEST(tf_abort_keeps_old_file) {
  const char *path = TEST_PATH("keep.h5");
  float a[4] = {1, 2, 3, 4};
  write_one(path, "w", DT_F32, 1, (int64_t[]){4}, a);
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float z[8] = {0};
  ASSERT(tf_write(tf, "other", DT_F32, 1, (int64_t[]){8}, z, &err) == 0, "%s", err.msg);
  tf_abort(tf);
  EXPECT(!file_exists(TEST_PATH("keep.h5.tmp")), "abort left the temporary");
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  EXPECT(tf_has(tf, "w") && !tf_has(tf, "other"), "old contents");
  tf_close(tf);
  /* tf_close on a write handle aborts too. */
  tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  tf_close(tf);
  EXPECT(!file_exists(TEST_PATH("keep.h5.tmp")), "close left the temporary");
  tf_abort(NULL);
  tf_close(NULL);
}

/* ---------------------------------------------------------------- errors */

TEST(tf_error_missing_and_not_hdf5) {
  McmErr err = {{0}};
  EXPECT(!tf_open(TEST_PATH("nope.h5"), &err), "missing file opened");
  EXPECT_STR_CONTAINS(err.msg, "nope.h5: cannot open: No such file or directory");

  const char *junk = TEST_PATH("junk.h5");
  FILE *f = fopen(junk, "wb");
  uint64_t s = 99;
  for (int i = 0; i < 4096; i++) fputc((int)(rng_next(&s) & 0xff), f);
  fclose(f);
  EXPECT(!tf_open(junk, &err), "random bytes opened");
  EXPECT_STR_CONTAINS(err.msg, "junk.h5: not an HDF5 file");

  const char *empty = TEST_PATH("empty.h5");
  fclose(fopen(empty, "wb"));
  EXPECT(!tf_open(empty, &err), "empty file opened");
  EXPECT_STR_CONTAINS(err.msg, "not an HDF5 file");

  EXPECT(!tf_open(test_tmpdir(), &err), "directory opened");
  EXPECT_STR_CONTAINS(err.msg, "is a directory");
}

TEST(tf_error_truncated) {
  const char *path = TEST_PATH("trunc.h5");
  const int64_t n = 100000;
  float *x = malloc((size_t)n * sizeof(float));
  fill_random(x, n, 5);
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_write(tf, "a", DT_F32, 1, &n, x, &err) == 0, "%s", err.msg);
  ASSERT(tf_set_attr(tf, "step", "3", &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  long size = file_size(path);
  ASSERT(truncate(path, size / 2) == 0, "truncate");
  tf = tf_open(path, &err);
  if (tf) { /* should HDF5 ever open it, reading must still fail cleanly */
    EXPECT(tf_read(tf, "a", 1, &n, x, &err) < 0, "truncated data read");
    tf_close(tf);
  }
  EXPECT_STR_CONTAINS(err.msg, "trunc.h5: ");
  EXPECT_STR_CONTAINS(err.msg, "truncated");
  for (long cut = 1; cut < size; cut = cut * 3 + 7) { /* many cut points: never a crash */
    write_one(path, "a", DT_F32, 1, &n, x);
    ASSERT(truncate(path, cut) == 0, "truncate");
    tf = tf_open(path, &err);
    if (tf) {
      EXPECT(tf_read(tf, "a", 1, &n, x, &err) < 0, "read succeeded after a cut to %ld of %ld bytes", cut, size);
      tf_close(tf);
    }
  }
  free(x);
}

TEST(tf_error_missing_tensor_suggests) {
  const char *path = TEST_PATH("w.h5");
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  float v[2] = {0};
  ASSERT(tf_write(tf, "conv.weight", DT_F32, 1, (int64_t[]){2}, v, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "model.diffusion_model.out.2.bias", DT_F32, 1, (int64_t[]){2}, v, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);
  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  EXPECT(tf_read(tf, "conv.weigth", 1, (int64_t[]){2}, v, &err) < 0, "typo found");
  EXPECT_STR_CONTAINS(err.msg, "w.h5: no tensor 'conv.weigth'");
  EXPECT_STR_CONTAINS(err.msg, "did you mean 'conv.weight'?");
  EXPECT(tf_info(tf, "out.2.bias", NULL, NULL, NULL, &err) < 0, "suffix found");
  EXPECT_STR_CONTAINS(err.msg, "did you mean 'model.diffusion_model.out.2.bias'?");
  EXPECT(tf_read(tf, "vae/decoder/totally_different", 1, (int64_t[]){2}, v, &err) < 0, "found");
  EXPECT_STR_CONTAINS(err.msg, "no tensor 'vae/decoder/totally_different'");
  EXPECT_STR_CONTAINS(err.msg, "holds 2 tensors");
  tf_close(tf);
}

TEST(tf_error_shape_and_rank_mismatch) {
  const char *path = TEST_PATH("w.h5");
  float v[32];
  fill_random(v, 32, 1);
  write_one(path, "conv.weight", DT_F32, 4, (int64_t[]){8, 4, 1, 1}, v);
  McmErr err = {{0}};
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  float out[288];
  EXPECT(tf_read(tf, "conv.weight", 4, (int64_t[]){8, 4, 3, 3}, out, &err) < 0, "shape mismatch accepted");
  EXPECT_STR_CONTAINS(err.msg, "w.h5: tensor 'conv.weight': expected shape [8, 4, 3, 3], file has [8, 4, 1, 1]");
  EXPECT(tf_read(tf, "conv.weight", 2, (int64_t[]){8, 4}, out, &err) < 0, "rank mismatch accepted");
  EXPECT_STR_CONTAINS(err.msg, "expected shape [8, 4], file has [8, 4, 1, 1]");
  EXPECT(tf_read_raw(tf, "conv.weight", DT_BF16, 5, (int64_t[]){8, 4, 1, 1, 1}, out, &err) < 0, "rank 5 accepted");
  EXPECT_STR_CONTAINS(err.msg, "file has [8, 4, 1, 1]");
  tf_close(tf);
}

/* Flip one byte inside a tensor's stored data: the Fletcher32 checksum catches it, and the
 * file's other tensors still read. */
TEST(tf_error_corrupt_data_checksum) {
  const char *path = TEST_PATH("corrupt.h5");
  enum { N = 4096 };
  float x[N], y[64];
  for (int i = 0; i < N; i++) x[i] = 1000.0f + (float)i; /* distinct, findable bytes */
  fill_random(y, 64, 2);
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_write(tf, "victim", DT_F32, 2, (int64_t[]){64, 64}, x, &err) == 0, "%s", err.msg);
  ASSERT(tf_write(tf, "bystander", DT_F32, 1, (int64_t[]){64}, y, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);

  size_t size;
  unsigned char *bytes = (unsigned char *)test_read_file(path, &size);
  ASSERT(bytes && size > 0, "read file");
  long at = -1;
  for (long i = 0; i + 8 <= (long)size; i++)
    if (!memcmp(bytes + i, &x[2000], 4) && !memcmp(bytes + i + 4, &x[2001], 4)) at = i;
  ASSERT(at >= 0, "did not find the tensor's bytes in the file");
  bytes[at + 1] ^= 0x10;
  FILE *f = fopen(path, "r+b");
  fseek(f, at + 1, SEEK_SET);
  fputc(bytes[at + 1], f);
  fclose(f);
  free(bytes);

  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  float out[N];
  EXPECT(tf_read(tf, "victim", 2, (int64_t[]){64, 64}, out, &err) < 0, "corrupted data read without error");
  EXPECT_STR_CONTAINS(err.msg, "corrupt.h5: tensor 'victim': data fails its checksum");
  float yb[64];
  EXPECT(tf_read(tf, "bystander", 1, (int64_t[]){64}, yb, &err) == 0, "%s", err.msg);
  EXPECT(!memcmp(yb, y, sizeof y), "bystander data");
  tf_close(tf);
}

TEST(tf_error_unwritable_destination) {
  McmErr err = {{0}};
  EXPECT(!tf_create(TEST_PATH("no/such/dir/x.h5"), &err), "created in a missing directory");
  EXPECT_STR_CONTAINS(err.msg, "No such file or directory");
  EXPECT_STR_CONTAINS(err.msg, "hint:");
  /* A regular file where a directory should be: fails even for root. */
  const char *file = TEST_PATH("plain");
  fclose(fopen(file, "wb"));
  EXPECT(!tf_create(TEST_PATH("plain/x.h5"), &err), "created below a regular file");
  EXPECT_STR_CONTAINS(err.msg, "Not a directory");
  EXPECT(!tf_create(test_tmpdir(), &err), "created over a directory");
  EXPECT_STR_CONTAINS(err.msg, "is a directory");
  if (geteuid() != 0) { /* root ignores permission bits */
    const char *ro = TEST_PATH("ro");
    ASSERT(mkdir(ro, 0555) == 0, "mkdir");
    EXPECT(!tf_create(TEST_PATH("ro/x.h5"), &err), "created in a read-only directory");
    EXPECT_STR_CONTAINS(err.msg, "Permission denied");
    chmod(ro, 0755);
  }
}

TEST(tf_error_not_a_float_tensor) {
  const char *path = TEST_PATH("ints.h5");
  hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t d = 4;
  hid_t sp = H5Screate_simple(1, &d, NULL);
  int32_t iv[4] = {1, 2, 3, 4};
  uint16_t uv[4] = {1, 2, 3, 4};
  double dv[4] = {0.5, -1.25, 1e300, 3.0};
  hid_t ds = H5Dcreate2(file, "ints", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, iv);
  H5Dclose(ds);
  ds = H5Dcreate2(file, "untagged_u16", H5T_STD_U16LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(ds, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, uv);
  H5Dclose(ds);
  ds = H5Dcreate2(file, "f64", H5T_IEEE_F64BE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, dv);
  H5Dclose(ds);
  H5Sclose(sp);
  H5Fclose(file);
  McmErr err = {{0}};
  TensorFile *tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  float out[4];
  EXPECT(tf_read(tf, "ints", 1, (int64_t[]){4}, out, &err) < 0, "int tensor read");
  EXPECT_STR_CONTAINS(err.msg, "'ints' is not fp32, fp16 or bf16");
  EXPECT(tf_read(tf, "untagged_u16", 1, (int64_t[]){4}, out, &err) < 0, "untagged uint16 read");
  EXPECT_STR_CONTAINS(err.msg, "without the attribute dtype = \"bfloat16\"");
  /* float64 (big-endian even) from other tools reads as fp32. */
  DType dt = DT_BF16;
  EXPECT(tf_info(tf, "f64", NULL, NULL, &dt, &err) == 0 && dt == DT_F32, "f64 info");
  EXPECT(tf_read(tf, "f64", 1, (int64_t[]){4}, out, &err) == 0, "%s", err.msg);
  EXPECT(out[0] == 0.5f && out[1] == -1.25f && out[3] == 3.0f, "f64 values %g %g %g", out[0], out[1], out[3]);
  tf_close(tf);
}

/* H5_CHECK is fatal with file:line, the call and HDF5's innermost message. */
TEST(tf_h5_check_is_fatal_and_says_why) {
  const char *log = TEST_PATH("stderr.txt");
  fflush(stderr);
  pid_t pid = fork();
  ASSERT(pid >= 0, "fork");
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    h5_quiet();
    H5_CHECK(H5Dclose(-1));
    _exit(0);
  }
  int status;
  waitpid(pid, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d", status);
  char *text = test_read_file(log, NULL);
  ASSERT(text, "no stderr captured");
  EXPECT_STR_CONTAINS(text, "test_tensorfile.c:");
  EXPECT_STR_CONTAINS(text, "H5Dclose(-1) failed: ");
  EXPECT_STR_CONTAINS(text, "not a dataset");
  EXPECT_STR_CONTAINS(text, "hint:");
  free(text);
}

/* ---------------------------------------------------------------- tensors through a context */

TEST(tf_tensor_helpers) {
  Ctx *ctx = ctx_create_cpu(1);
  const char *path = TEST_PATH("t.h5");
  Tensor *a = tensor_new(ctx, DT_F32, SHAPE(4, 6));
  Tensor *b = tensor_new(ctx, DT_BF16, SHAPE(2, 3, 5));
  a->name = "enc.a";
  b->name = "enc/b";
  float ha[24], hb[30];
  fill_random(ha, 24, 8);
  fill_random(hb, 30, 9);
  tensor_from_host_f32(ctx, a, ha);
  tensor_from_host_f32(ctx, b, hb);
  McmErr err = {{0}};
  TensorFile *tf = tf_create(path, &err);
  ASSERT(tf, "%s", err.msg);
  ASSERT(tf_write_tensor(ctx, tf, a, DT_F32, &err) == 0, "%s", err.msg);
  ASSERT(tf_write_tensor(ctx, tf, b, DT_BF16, &err) == 0, "%s", err.msg);
  ASSERT(tf_commit(tf, &err) == 0, "%s", err.msg);

  tf = tf_open(path, &err);
  ASSERT(tf, "%s", err.msg);
  Tensor *a2 = tensor_zeros(ctx, DT_F32, SHAPE(4, 6));
  Tensor *b2 = tensor_zeros(ctx, DT_BF16, SHAPE(2, 3, 5));
  ASSERT(tf_read_tensor(ctx, tf, "enc.a", a2, &err) == 0, "%s", err.msg);
  ASSERT(tf_read_tensor(ctx, tf, "enc/b", b2, &err) == 0, "%s", err.msg);
  EXPECT(!memcmp(a2->data, a->data, 24 * sizeof(float)), "fp32 tensor");
  EXPECT(!memcmp(b2->data, b->data, 30 * sizeof(uint16_t)), "bf16 tensor bits");
  Tensor *wrong = tensor_zeros(ctx, DT_F32, SHAPE(6, 4));
  EXPECT(tf_read_tensor(ctx, tf, "enc.a", wrong, &err) < 0, "wrong shape accepted");
  EXPECT_STR_CONTAINS(err.msg, "expected shape [6, 4], file has [4, 6]");
  tf_close(tf);
  ctx_destroy(ctx);
}
