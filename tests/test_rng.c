/* The counter-based RNG (kernels/rng.h, kernels/philox.h) on the CPU: Philox known answers,
 * the stream layout (key, counter, offsets), the tensor entry points, the statistics of
 * uniforms and normals, and the accuracy of the hand-written log, sincos and Box-Muller
 * against double-precision libm. The CUDA fill is compared with this one bit for bit in
 * tests/gpu/test_rng_gpu.c.
 *
 * Statistical thresholds are 5 standard deviations of the statistic's sampling distribution
 * (a false alarm has probability below 1e-6 per check); the seeds are fixed, so a run either
 * always passes or always fails. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/context.h"
#include "kernels/philox.h"
#include "kernels/rng.h"
#include "test.h"

/* ---------------------------------------------------------------- helpers */

/* The spacing of floats at |y| (y a double): error in ulps = |got - y| / ulp_f32(y). */
static double ulp_f32(double y) {
  y = fabs(y);
  if (y < 0x1p-126) return 0x1p-149;
  return ldexp(1.0, ilogb(y) - 23);
}

static double ulp_err(double got, double ref) {
  if (got == ref) return 0.0;
  return fabs(got - ref) / ulp_f32(ref);
}

/* sin and cos of 2 pi t in double precision. The reduction t -> (quadrant, r) is exact in
 * double as it is in float, so this is libm's sin/cos of the true angle to about 1e-16 (a
 * plain sin(2*M_PI*t) would be off by 1e-16 absolute, which is many float ulps near the
 * zeros at t = 0.25, 0.5, ...). */
static void ref_sincos_turns(double t, double *s, double *c) {
  double q = rint(4.0 * t);
  double r = t - 0.25 * q;
  double sr = sin(2.0 * M_PI * r), cr = cos(2.0 * M_PI * r);
  switch ((int)q & 3) {
    case 0: *s = sr, *c = cr; break;
    case 1: *s = cr, *c = -sr; break;
    case 2: *s = -sr, *c = -cr; break;
    default: *s = -cr, *c = sr; break;
  }
}

static float *draw(bool normal, uint64_t seed, uint64_t offset, int64_t n) {
  float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
  if (normal) {
    rng_normal_host(seed, offset, v, n);
  } else {
    rng_uniform_host(seed, offset, v, n);
  }
  return v;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* ---------------------------------------------------------------- Philox and the stream */

/* Known answers from the Random123 distribution (kat_vectors, "philox4x32 10" lines):
 * counter words, key words, expected output words, each listed least significant first. */
TEST(rng_philox_known_answers) {
  static const struct {
    uint32_t ctr[4], key[2], out[4];
  } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
    uint32_t out[4];
    philox4x32_10(kat[i].ctr, kat[i].key, out);
    for (int j = 0; j < 4; j++)
      EXPECT(out[j] == kat[i].out[j], "vector %zu word %d: got %08x, expected %08x", i, j, out[j], kat[i].out[j]);
  }
}

/* Element i of a draw at `offset` is word i%4 of block offset + i/4; the key is the seed,
 * low word first; the block index fills counter words 0 (low) and 1, words 2 and 3 are 0. */
TEST(rng_stream_layout) {
  const uint64_t seed = 0x0123456789abcdefull;
  const uint64_t offsets[] = {0, 0xfffffffeull /* crosses into counter word 1 */,
                              UINT64_MAX /* wraps to block 0 */};
  const uint32_t key[2] = {0x89abcdefu, 0x01234567u};
  for (size_t o = 0; o < 3; o++) {
    const int64_t n = 13;
    float *u = draw(false, seed, offsets[o], n), *z = draw(true, seed, offsets[o], n);
    for (int64_t i = 0; i < n; i++) {
      uint64_t block = offsets[o] + (uint64_t)(i / 4);
      uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0}, w[4];
      philox4x32_10(ctr, key, w);
      float want = (float)(w[i % 4] >> 8) * 0x1p-24f;
      EXPECT(u[i] == want, "offset %llx element %lld: %.9g, expected %.9g", (unsigned long long)offsets[o],
             (long long)i, u[i], want);
      /* normals: (w0, w1) -> (r cos, r sin), (w2, w3) likewise, r = sqrt(-2 log u1) */
      int pair = (int)(i % 4) / 2 * 2;
      double u1 = ((w[pair] >> 8) + 1) * 0x1p-24, u2 = (w[pair + 1] >> 8) * 0x1p-24, s, c;
      ref_sincos_turns(u2, &s, &c);
      double ref = sqrt(-2.0 * log(u1)) * (i % 2 == 0 ? c : s);
      EXPECT(ulp_err(z[i], ref) <= 1.0, "normal element %lld: %.9g, double-precision %.17g", (long long)i, z[i], ref);
    }
    free(u);
    free(z);
  }
}

TEST(rng_reproducible_and_seed_sensitive) {
  const int64_t n = 1001;
  for (int normal = 0; normal < 2; normal++) {
    float *a = draw(normal, 42, 5, n), *b = draw(normal, 42, 5, n);
    EXPECT(memcmp(a, b, (size_t)n * sizeof *a) == 0, "same seed and offset gave different numbers (normal=%d)", normal);
    /* Other streams share an element with probability ~2^-24 each: expect none of 1001. */
    float *others[3] = {draw(normal, 43, 5, n), draw(normal, 42 | (1ull << 32), 5, n) /* high key word */,
                        draw(normal, 42, 5 + (1ull << 32), n) /* high counter word */};
    for (int k = 0; k < 3; k++) {
      int same = 0;
      for (int64_t i = 0; i < n; i++) same += a[i] == others[k][i];
      EXPECT(same <= 1, "stream %d shares %d of %lld elements with the reference (normal=%d)", k, same, (long long)n,
             normal);
      free(others[k]);
    }
    free(a);
    free(b);
  }
}

TEST(rng_offsets_compose) {
  EXPECT(rng_blocks(0) == 0 && rng_blocks(-3) == 0 && rng_blocks(1) == 1 && rng_blocks(4) == 1 &&
             rng_blocks(5) == 2 && rng_blocks(10000001) == 2500001,
         "rng_blocks is not ceil(n/4)");
  const uint64_t seed = 977, off = 12345;
  for (int normal = 0; normal < 2; normal++) {
    /* n then m at off + blocks(n) == one draw of n + m, when n is a multiple of 4 */
    const int64_t n = 1000, m = 333;
    float *whole = draw(normal, seed, off, n + m);
    float *first = draw(normal, seed, off, n), *second = draw(normal, seed, off + rng_blocks(n), m);
    EXPECT(memcmp(whole, first, (size_t)n * 4) == 0, "prefix differs (normal=%d)", normal);
    EXPECT(memcmp(whole + n, second, (size_t)m * 4) == 0, "continuation differs (normal=%d)", normal);
    /* a ragged draw is a prefix of a longer one */
    float *ragged = draw(normal, seed, off, 7);
    EXPECT(memcmp(whole, ragged, 7 * 4) == 0, "ragged draw differs (normal=%d)", normal);
    /* a draw at block k is the draw at block 0 shifted by 4k elements */
    const int64_t k = 37, len = 501;
    float *at0 = draw(normal, seed, 0, len + 4 * k), *atk = draw(normal, seed, (uint64_t)k, len);
    EXPECT(memcmp(at0 + 4 * k, atk, (size_t)len * 4) == 0, "shifted draw differs (normal=%d)", normal);
    free(whole), free(first), free(second), free(ragged), free(at0), free(atk);
  }
}

/* The stream, pinned: the first normals of one seed and a hash of a million more. Uniforms
 * follow from the Philox known answers; normals depend on philox.h's float arithmetic, so a
 * change there, or a compiler that fuses or reorders it, shows up here first. Changing these
 * values changes every resumed run's noise: do it only on purpose. */
TEST(rng_golden_values) {
  static const uint32_t first[8] = {0xbeb2d23d, 0x3e1afa96, 0x3edcbf39, 0x3e76c1b0,
                                    0xbe7736b8, 0xbec0daf5, 0xbd9b73dd, 0x3d75e060};
  const int64_t n = 1 << 20;
  float *z = draw(true, 0x5eed, 0, 8);
  for (int i = 0; i < 8; i++) {
    uint32_t bits;
    memcpy(&bits, &z[i], 4);
    EXPECT(bits == first[i], "normal %d: %08x, expected %08x", i, bits, first[i]);
  }
  free(z);
  z = draw(true, 0x5eed, 1000, n);
  uint64_t h = 1469598103934665603ull; /* FNV-1a over the bit patterns */
  for (int64_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, &z[i], 4);
    h = (h ^ bits) * 1099511628211ull;
  }
  EXPECT(h == 0x2a893df261c18899ull, "hash of 2^20 normals: %016llx", (unsigned long long)h);
  free(z);
}

TEST(rng_tensor_fill_advances_offset) {
  Ctx *ctx = ctx_create_cpu(1234);
  ASSERT(ctx->rng_offset == 0, "a new context starts at block %llu", (unsigned long long)ctx->rng_offset);

  Tensor *a = tensor_new(ctx, DT_F32, SHAPE(2, 5)); /* 10 elements: 3 blocks */
  rng_uniform(ctx, a);
  EXPECT(ctx->rng_offset == 3, "offset after 10 uniforms: %llu, expected 3", (unsigned long long)ctx->rng_offset);
  float want[16];
  rng_uniform_host(1234, 0, want, 10);
  EXPECT(memcmp(a->data, want, 10 * sizeof(float)) == 0, "fp32 tensor fill differs from rng_uniform_host");

  Tensor *b = tensor_new(ctx, DT_BF16, SHAPE(7)); /* 2 blocks */
  rng_normal(ctx, b);
  EXPECT(ctx->rng_offset == 5, "offset after 7 more: %llu, expected 5", (unsigned long long)ctx->rng_offset);
  rng_normal_host(1234, 3, want, 7);
  for (int i = 0; i < 7; i++)
    EXPECT(((uint16_t *)b->data)[i] == f32_to_bf16(want[i]), "bf16 element %d: %04x, expected %04x", i,
           ((uint16_t *)b->data)[i], f32_to_bf16(want[i]));

  Tensor *c = tensor_new(ctx, DT_BF16, SHAPE(4, 4)); /* 4 blocks */
  rng_uniform(ctx, c);
  EXPECT(ctx->rng_offset == 9, "offset: %llu, expected 9", (unsigned long long)ctx->rng_offset);
  rng_uniform_host(1234, 5, want, 16);
  for (int i = 0; i < 16; i++)
    EXPECT(((uint16_t *)c->data)[i] == f32_to_bf16(want[i]), "bf16 uniform element %d differs", i);

  /* resuming from a saved (seed, offset) continues the same stream */
  Ctx *resumed = ctx_create_cpu(1234);
  resumed->rng_offset = 3;
  Tensor *b2 = tensor_new(resumed, DT_BF16, SHAPE(7));
  rng_normal(resumed, b2);
  EXPECT(memcmp(b->data, b2->data, 7 * sizeof(uint16_t)) == 0, "resumed stream differs");
  ctx_destroy(resumed);
  ctx_destroy(ctx);
}

TEST_EXIT(rng_rejects_f16_tensor, 1) {
  Ctx *ctx = ctx_create_cpu(0);
  uint16_t buf[4];
  Tensor t;
  memset(&t, 0, sizeof t);
  tensor_init_header(&t, DT_F16, DEV_CPU, 1, (int64_t[]){4});
  t.data = buf;
  rng_uniform(ctx, &t); /* fatal: random fills are fp32 or bf16 */
}

/* ---------------------------------------------------------------- statistics */

enum { N_STAT = 1000000 };

/* Lag-1 autocorrelation; under independence it is ~N(0, 1/n), so 5 sigma is 5/sqrt(n). */
static double lag1_correlation(const float *v, int64_t n) {
  double mean = 0, var = 0, cov = 0;
  for (int64_t i = 0; i < n; i++) mean += v[i];
  mean /= (double)n;
  for (int64_t i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean);
  for (int64_t i = 0; i + 1 < n; i++) cov += (v[i] - mean) * (v[i + 1] - mean);
  return cov / var;
}

TEST(rng_uniform_statistics) {
  const int64_t n = N_STAT;
  float *u = draw(false, 2024, 0, n);
  double mean = 0, m2 = 0, lo = 1, hi = 0;
  int64_t bins[100] = {0};
  int off_lattice = 0;
  for (int64_t i = 0; i < n; i++) {
    mean += u[i];
    lo = fmin(lo, u[i]);
    hi = fmax(hi, u[i]);
    bins[(int)(u[i] * 100.0)]++;
    double k = (double)u[i] * 0x1p24;
    off_lattice += k != floor(k);
  }
  mean /= (double)n;
  for (int64_t i = 0; i < n; i++) m2 += (u[i] - mean) * (u[i] - mean);
  double var = m2 / (double)(n - 1);

  /* mean: sd sqrt(1/12 / n) */
  EXPECT_NEAR(mean, 0.5, 5 * sqrt(1.0 / 12 / n));
  /* variance: sd sqrt((mu4 - sigma^4) / n), mu4 = 1/80 and sigma^4 = 1/144 for U(0,1) */
  EXPECT_NEAR(var, 1.0 / 12, 5 * sqrt((1.0 / 80 - 1.0 / 144) / n));
  /* chi-square over 100 equal bins, 99 degrees of freedom: accept between the 5-sigma
   * quantiles of chi2(99) by the Wilson-Hilferty cube approximation (43.6 .. 186). */
  double chi2 = 0, expect = (double)n / 100;
  for (int b = 0; b < 100; b++) chi2 += (bins[b] - expect) * (bins[b] - expect) / expect;
  const double df = 99, a = 2.0 / (9 * df);
  double chi_lo = df * pow(1 - a - 5 * sqrt(a), 3), chi_hi = df * pow(1 - a + 5 * sqrt(a), 3);
  EXPECT(chi2 > chi_lo && chi2 < chi_hi, "chi-square %.1f outside (%.1f, %.1f)", chi2, chi_lo, chi_hi);
  /* range: [0, 1), and both ends reached (missing 1e-4 at either end: probability e^-100) */
  EXPECT(lo >= 0 && hi < 1, "range [%.9g, %.9g] is not inside [0, 1)", lo, hi);
  EXPECT(lo < 1e-4 && hi > 1 - 1e-4, "range [%.9g, %.9g] does not reach the ends", lo, hi);
  EXPECT(off_lattice == 0, "%d values are not multiples of 2^-24", off_lattice);
  double r1 = lag1_correlation(u, n);
  EXPECT(fabs(r1) < 5 / sqrt((double)n), "lag-1 correlation %.3g", r1);
  free(u);
}

TEST(rng_normal_statistics) {
  const int64_t n = N_STAT;
  float *z = draw(true, 7, 99, n);
  double mean = 0, m2 = 0, m3 = 0, m4 = 0, maxabs = 0;
  int64_t beyond3 = 0;
  for (int64_t i = 0; i < n; i++) mean += z[i];
  mean /= (double)n;
  for (int64_t i = 0; i < n; i++) {
    double d = z[i] - mean, d2 = d * d;
    m2 += d2, m3 += d2 * d, m4 += d2 * d2;
    beyond3 += fabs(z[i]) > 3.0;
    maxabs = fmax(maxabs, fabs(z[i]));
  }
  m2 /= (double)n, m3 /= (double)n, m4 /= (double)n;
  double skew = m3 / pow(m2, 1.5), exkurt = m4 / (m2 * m2) - 3;
  /* sds for N(0,1) samples: mean 1/sqrt(n), variance sqrt(2/n), skewness sqrt(6/n),
   * excess kurtosis sqrt(24/n) */
  EXPECT_NEAR(mean, 0.0, 5 / sqrt((double)n));
  EXPECT_NEAR(m2, 1.0, 5 * sqrt(2.0 / n));
  EXPECT_NEAR(skew, 0.0, 5 * sqrt(6.0 / n));
  EXPECT_NEAR(exkurt, 0.0, 5 * sqrt(24.0 / n));
  /* tails: P(|z| > 3) = erfc(3/sqrt 2); a binomial fraction with sd sqrt(p(1-p)/n) */
  double p3 = erfc(3 / sqrt(2.0)), frac = (double)beyond3 / (double)n;
  EXPECT_NEAR(frac, p3, 5 * sqrt(p3 * (1 - p3) / n));
  /* Box-Muller on 24-bit uniforms cannot exceed sqrt(-2 log 2^-24) = 5.768 */
  EXPECT(maxabs <= sqrt(48 * log(2.0)) * (1 + 1e-6), "|z| reached %.9g", maxabs);
  double r1 = lag1_correlation(z, n);
  EXPECT(fabs(r1) < 5 / sqrt((double)n), "lag-1 correlation %.3g", r1);

  /* Kolmogorov-Smirnov against Phi(x) = erfc(-x/sqrt 2)/2. P(sqrt(n) D > x) ~ 2 exp(-2x^2);
   * the two-sided 5-sigma tail (5.7e-7) is reached at x = 2.746. */
  qsort(z, (size_t)n, sizeof *z, cmp_float);
  double d = 0;
  for (int64_t i = 0; i < n; i++) {
    double f = 0.5 * erfc(-z[i] / sqrt(2.0));
    d = fmax(d, fmax(f - (double)i / n, (double)(i + 1) / n - f));
  }
  EXPECT(d < 2.746 / sqrt((double)n), "KS statistic %.3g >= %.3g", d, 2.746 / sqrt((double)n));
  free(z);
}

/* ---------------------------------------------------------------- accuracy against libm */

/* The log on every uniform the normals feed it (k * 2^-24, k = 1 .. 2^24), and on floats of
 * every exponent. hi is within 0.7 ulp (it is the rounded hi + lo); hi + lo within 0.2 ulp. */
TEST(rng_log_accuracy) {
  double max_hi = 0, max_pair = 0;
  for (uint32_t k = 1; k <= (1u << 24); k++) {
    float u = (float)k * 0x1p-24f, hi, lo;
    mcm_log_hilo(u, &hi, &lo);
    double ref = log((double)u);
    max_hi = fmax(max_hi, ulp_err(hi, ref));
    max_pair = fmax(max_pair, ulp_err((double)hi + lo, ref));
    if (hi != mcm_logf(u)) max_hi = INFINITY;
  }
  double max_any = 0;
  for (uint64_t b = 0; b < (1u << 18); b++) { /* 1M floats, exponents -126 .. 127 */
    uint32_t w[4];
    philox_block(5, b, w);
    for (int j = 0; j < 4; j++) {
      uint32_t bits = (w[j] & 0x007fffffu) | ((1u + (w[j] >> 23) % 254u) << 23);
      float x;
      memcpy(&x, &bits, 4);
      max_any = fmax(max_any, ulp_err(mcm_logf(x), log((double)x)));
    }
  }
  printf("    log: max error %.3f ulp (hi), %.3f ulp (hi + lo), %.3f ulp over all exponents\n", max_hi, max_pair,
         max_any);
  EXPECT(max_hi <= 0.7, "log hi: max error %.3f ulp", max_hi);
  EXPECT(max_pair <= 0.2, "log hi + lo: max error %.3f ulp", max_pair);
  EXPECT(max_any <= 0.7, "log on all exponents: max error %.3f ulp", max_any);
  EXPECT(mcm_logf(1.0f) == 0.0f && mcm_logf(0.5f) == (float)log(0.5) && mcm_logf(0x1p-24f) == (float)log(0x1p-24),
         "log at 1, 1/2 and 2^-24 is not the correctly rounded value");
}

/* sin and cos of 2 pi t on every angle the normals use (t = k * 2^-24, k = 0 .. 2^24 - 1). */
TEST(rng_sincos_accuracy) {
  double max_hi = 0, max_pair = 0;
  int exact_misses = 0;
  for (uint32_t k = 0; k < (1u << 24); k++) {
    float t = (float)k * 0x1p-24f, sn[2], cs[2];
    mcm_sincos_turns_hilo(t, sn, cs);
    double s, c;
    ref_sincos_turns(t, &s, &c);
    max_hi = fmax(max_hi, fmax(ulp_err(sn[0], s), ulp_err(cs[0], c)));
    max_pair = fmax(max_pair, fmax(ulp_err((double)sn[0] + sn[1], s), ulp_err((double)cs[0] + cs[1], c)));
    if (k % (1u << 22) == 0) /* quarter turns are exact: 0, +-1 */
      exact_misses += sn[0] != (float)s || cs[0] != (float)c || sn[1] != 0 || cs[1] != 0;
  }
  printf("    sincos: max error %.3f ulp (hi), %.3f ulp (hi + lo)\n", max_hi, max_pair);
  EXPECT(max_hi <= 0.6, "sincos hi: max error %.3f ulp", max_hi);
  EXPECT(max_pair <= 0.15, "sincos hi + lo: max error %.3f ulp", max_pair);
  EXPECT(exact_misses == 0, "%d quarter turns are not exact", exact_misses);
}

/* Normals against sqrt(-2 log u1) * (cos, sin)(2 pi u2) in double: 4M from the stream, every
 * u1 at one angle (all radii), and every u2 at the largest radius (all angles). */
TEST(rng_normal_accuracy) {
  double max_err = 0;
  uint32_t worst[2] = {0, 0};
#define CHECK_PAIR(a, b)                                                               \
  do {                                                                                 \
    float z0, z1;                                                                      \
    mcm_box_muller((a), (b), &z0, &z1);                                                \
    double s, c, rad = sqrt(-2.0 * log((((a) >> 8) + 1) * 0x1p-24));                   \
    ref_sincos_turns(((b) >> 8) * 0x1p-24, &s, &c);                                    \
    double e = fmax(ulp_err(z0, rad * c), ulp_err(z1, rad * s));                       \
    if (e > max_err) max_err = e, worst[0] = (a), worst[1] = (b);                      \
  } while (0)
  for (uint64_t blk = 0; blk < 1000000; blk++) {
    uint32_t w[4];
    philox_block(42, blk, w);
    CHECK_PAIR(w[0], w[1]);
    CHECK_PAIR(w[2], w[3]);
  }
  for (uint32_t k = 0; k < (1u << 24); k++) CHECK_PAIR(k << 8, 0x16e5d100u);
  for (uint32_t k = 0; k < (1u << 24); k++) CHECK_PAIR(0u, k << 8);
#undef CHECK_PAIR
  printf("    normal: max error %.3f ulp (words %08x %08x)\n", max_err, worst[0], worst[1]);
  EXPECT(max_err <= 1.0, "Box-Muller: max error %.3f ulp", max_err);
}
