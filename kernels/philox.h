/* Philox4x32-10 and the float arithmetic that turns its words into uniforms and normals.
 *
 * Everything here is `static inline MCM_HD`, compiled once for the CPU fill (rng.c, gcc) and
 * once for the CUDA kernel (rng.cu, nvcc), and the two must give the same bits. So:
 *  - every float operation is an IEEE correctly rounded one: +, -, *, /, sqrt and fused
 *    multiply-add. On the device they are spelled __fadd_rn & co., which nvcc never fuses
 *    into an FMA; on the host plain operators, with products pinned (MCM_ROUNDED) so that
 *    no compiler flag can fuse them. Every multiply-add meant to be fused is an explicit
 *    fmaf(). (rintf and int <-> float conversions of small integers are exact.)
 *  - no libm or CUDA transcendental is called: log and sincos are written below, from
 *    exponent/quadrant splits that are exact and short polynomials evaluated in a fixed order.
 *
 * Generator (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
 * SC'11): Philox4x32 with 10 rounds. Key = the 64-bit seed (low word first); counter =
 * 128 bits whose low 64 are the block index and high 64 are zero. Element i of a draw that
 * starts at block `offset` is word i%4 of block offset + i/4 (see rng.h).
 */
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef MCM_HD
#ifdef __CUDACC__
#define MCM_HD __host__ __device__
#else
#define MCM_HD
#endif
#endif

/* ------------------------------------------------------------------ unfusable float ops */

static inline MCM_HD float mcm_fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
static inline MCM_HD float mcm_fsub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
/* On the host, -ffp-contract=off (set by the Makefile) stops the compiler fusing a product
 * into a later add; the empty asm makes that hold under any flags (it forces the product
 * into a register as a rounded float, at no cost). */
#if !defined(__CUDA_ARCH__) && defined(__GNUC__) && defined(__x86_64__)
#define MCM_ROUNDED(v) __asm__("" : "+x"(v))
#elif !defined(__CUDA_ARCH__) && defined(__GNUC__) && defined(__aarch64__)
#define MCM_ROUNDED(v) __asm__("" : "+w"(v))
#else
#define MCM_ROUNDED(v) ((void)0)
#endif
static inline MCM_HD float mcm_fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  float p = a * b;
  MCM_ROUNDED(p);
  return p;
#endif
}
static inline MCM_HD float mcm_fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
static inline MCM_HD float mcm_fsqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return sqrtf(a);
#endif
}
/* a*b + c with a single rounding (glibc's fmaf and the device's are both exact). */
static inline MCM_HD float mcm_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return fmaf(a, b, c);
#endif
}
static inline MCM_HD uint32_t mcm_f2u(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
#endif
}
static inline MCM_HD float mcm_u2f(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
#endif
}

/* ------------------------------------------------------------------ Philox4x32-10 */

#define PHILOX_M0 0xD2511F53u /* round multipliers */
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* Weyl key increments: golden ratio, sqrt(3) - 1 */
#define PHILOX_W1 0xBB67AE85u

/* One S-box round: two 32x32->64 products, their high halves mixed with the other two words
 * and the round key, the words permuted. */
static inline MCM_HD void philox_round(uint32_t c[4], uint32_t k0, uint32_t k1) {
  uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
  uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
  uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
  uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
  c[0] = n0;
  c[1] = (uint32_t)p1;
  c[2] = n2;
  c[3] = (uint32_t)p0;
}

/* Ten rounds; the key advances by the Weyl increments between rounds. */
static inline MCM_HD void philox4x32_10_hd(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
  uint32_t k0 = key[0], k1 = key[1];
  philox_round(c, k0, k1);
  for (int r = 1; r < 10; r++) {
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
    philox_round(c, k0, k1);
  }
  out[0] = c[0], out[1] = c[1], out[2] = c[2], out[3] = c[3];
}

/* The four words of counter block `block` under key `seed`. */
static inline MCM_HD void philox_block(uint64_t seed, uint64_t block, uint32_t out[4]) {
  const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0u, 0u};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  philox4x32_10_hd(ctr, key, out);
}

/* ------------------------------------------------------------------ words -> uniforms */

/* [0, 1): the top 24 bits times 2^-24; exact (24 bits fit a float's significand). */
static inline MCM_HD float mcm_u01(uint32_t x) { return (float)(x >> 8) * 0x1p-24f; }
/* (0, 1]: the same lattice shifted by one step, so a logarithm never sees 0. */
static inline MCM_HD float mcm_u01_nonzero(uint32_t x) { return (float)((x >> 8) + 1u) * 0x1p-24f; }

/* ------------------------------------------------------------------ log */

/* Natural log of a positive, normal, finite float (the only inputs mcm gives it; no special
 * cases), as an unevaluated sum hi + lo with hi = the float nearest hi + lo.
 *
 * x = 2^k * m with m in [sqrt(1/2), sqrt(2)), split exactly on the bits; then
 * log(m) = log(1+f) = 2 atanh(s), s = f/(2+f), |s| <= 0.1716, which is
 *     log(1+f) = f - f^2/2 + A,   A = s*(f^2/2 + R),   R = 2/3 s^2 + 2/5 s^4 + 2/7 s^6 + 2/9 s^8
 * (the atanh series; the first dropped term is below 2^-28 relative). The exact f, f^2/2
 * (split by fma) and k*ln2 (LN2_HI has 16 significant bits, so k*LN2_HI is exact for
 * |k| < 256) are summed without error; only the small A (at most 6 % of the result) and
 * the last addition are rounded. Max errors (test_rng.c measures them): hi 0.66 ulp,
 * hi + lo 0.17 ulp. */
#define MCM_LN2_HI 0.693145751953125f
#define MCM_LN2_LO 1.42860682030941723212e-6f
static inline MCM_HD void mcm_log_hilo(float x, float *hi_out, float *lo_out) {
  /* Adding (1.0f - sqrt(1/2)) bits carries into the exponent exactly when m >= sqrt(2). */
  uint32_t ix = mcm_f2u(x) + (0x3f800000u - 0x3f3504f3u);
  float kf = (float)((int)(ix >> 23) - 127);
  float m = mcm_u2f((ix & 0x007fffffu) + 0x3f3504f3u);
  float f = mcm_fsub(m, 1.0f); /* exact: m is within a factor 2 of 1 */
  float s = mcm_fdiv(f, mcm_fadd(2.0f, f));
  float z = mcm_fmul(s, s);
  float p = mcm_fma(z, 0.2222222222222222222f, 0.2857142857142857143f); /* 2/9, 2/7 */
  p = mcm_fma(z, p, 0.4f);                                               /* 2/5 */
  p = mcm_fma(z, p, 0.6666666666666666667f);                             /* 2/3 */
  float R = mcm_fmul(z, p);
  float ff = mcm_fmul(f, f);
  float ffe = mcm_fma(f, f, -ff);   /* f^2 = ff + ffe */
  float hfsq = mcm_fmul(0.5f, ff); /* exact */
  float A = mcm_fma(s, mcm_fadd(hfsq, R), mcm_fsub(mcm_fmul(kf, MCM_LN2_LO), mcm_fmul(0.5f, ffe)));
  /* Fast2Sum steps (each exact because the first operand is the larger): */
  float kh = mcm_fmul(kf, MCM_LN2_HI);
  float h1 = mcm_fadd(kh, f);
  float l1 = mcm_fadd(mcm_fsub(kh, h1), f); /* k*LN2_HI + f = h1 + l1 */
  float h2 = mcm_fsub(h1, hfsq);
  float l2 = mcm_fsub(mcm_fsub(h1, h2), hfsq); /* h1 - hfsq = h2 + l2 */
  float rest = mcm_fadd(mcm_fadd(l1, l2), A);
  float hi = mcm_fadd(h2, rest);
  *hi_out = hi;
  *lo_out = mcm_fadd(mcm_fsub(h2, hi), rest);
}

static inline MCM_HD float mcm_logf(float x) {
  float hi, lo;
  mcm_log_hilo(x, &hi, &lo);
  return hi;
}

/* ------------------------------------------------------------------ sincos in turns */

/* sin and cos of 2*pi*t for |t| < 2^22, each as hi + lo like mcm_log_hilo.
 *
 * Working in turns makes the reduction exact: q = rint(4t) picks the quadrant and
 * r = t - q/4 (|r| <= 1/8, i.e. |2 pi r| <= pi/4) has no rounding error. Then Taylor
 * polynomials in r with coefficients (2 pi)^n / n!, up to r^9 for sin and r^10 for cos, each
 * truncated below 2^-28 relative at |r| = 1/8. The leading terms (2 pi r, 1 - 2 pi^2 r^2,
 * -(4/3) pi^3 r^3) carry up to 40 % of the value, so they are formed without error: the
 * coefficients split hi + lo and the products' rounding errors recovered with fma. Only the
 * small tail (at most 11 % of the value) is rounded. Max errors: hi 0.59 ulp, hi + lo
 * 0.10 ulp. */
#define MCM_S1_HI 6.28318548202514648438f     /* float(2 pi) */
#define MCM_S1_LO -1.74845560007449703e-07f   /* 2 pi - S1_HI */
#define MCM_S3_HI -41.34170150756836f         /* float(-(2 pi)^3 / 3!) */
#define MCM_S3_LO -7.32831400858968463e-07f
#define MCM_C2_HI -19.739208221435547f        /* float(-(2 pi)^2 / 2!) */
#define MCM_C2_LO -5.80743170362669024e-07f
static inline MCM_HD void mcm_sincos_turns_hilo(float t, float sn[2], float cs[2]) {
  float q = rintf(mcm_fmul(t, 4.0f));
  float r = mcm_fsub(t, mcm_fmul(q, 0.25f)); /* exact */
  float r2 = mcm_fmul(r, r);
  float r2e = mcm_fma(r, r, -r2); /* r^2 = r2 + r2e */

  /* sin(2 pi r) = S1 r + r^3 (S3 + r^2 (S5 + r^2 (S7 + r^2 S9))) */
  float ps = mcm_fma(r2, 42.058693944897653145f, -76.705859753061385842f); /* (2pi)^9/9!, -(2pi)^7/7! */
  ps = mcm_fma(r2, ps, 81.605249276075054203f);                           /* (2pi)^5/5! */
  ps = mcm_fma(r2, ps, MCM_S3_LO);
  float p1 = mcm_fmul(r, MCM_S1_HI);
  float p1e = mcm_fma(r, MCM_S1_HI, -p1); /* r*S1_HI = p1 + p1e */
  float r3 = mcm_fmul(r, r2);
  float r3e = mcm_fma(r, r2e, mcm_fma(r, r2, -r3)); /* r^3 ~ r3 + r3e */
  float ts = mcm_fma(r3, MCM_S3_HI, mcm_fma(r3, ps, mcm_fma(r3e, MCM_S3_HI, mcm_fma(r, MCM_S1_LO, p1e))));
  float s = mcm_fadd(p1, ts);
  float se = mcm_fadd(mcm_fsub(p1, s), ts);

  /* cos(2 pi r) = 1 + C2 r^2 + r^4 (C4 + r^2 (C6 + r^2 (C8 + r^2 C10))) */
  float pc = mcm_fma(r2, -26.426256783374397453f, 60.244641371876660363f); /* -(2pi)^10/10!, (2pi)^8/8! */
  pc = mcm_fma(r2, pc, -85.456817206693727736f);                           /* -(2pi)^6/6! */
  pc = mcm_fma(r2, pc, 64.939394022668291491f);                            /* (2pi)^4/4! */
  float q2 = mcm_fmul(r2, MCM_C2_HI);
  float q2e = mcm_fma(r2, MCM_C2_HI, -q2); /* r2*C2_HI = q2 + q2e */
  float h = mcm_fadd(1.0f, q2);
  float he = mcm_fadd(mcm_fsub(1.0f, h), q2); /* 1 + q2 = h + he */
  float tc = mcm_fma(mcm_fmul(r2, r2), pc, mcm_fma(r2e, MCM_C2_HI, mcm_fma(r2, MCM_C2_LO, mcm_fadd(q2e, he))));
  float c = mcm_fadd(h, tc);
  float ce = mcm_fadd(mcm_fsub(h, c), tc);

  /* 2 pi t = q pi/2 + 2 pi r: rotate by the quadrant (negations are exact). */
  switch ((int)q & 3) {
    case 0: sn[0] = s, sn[1] = se, cs[0] = c, cs[1] = ce; break;
    case 1: sn[0] = c, sn[1] = ce, cs[0] = -s, cs[1] = -se; break;
    case 2: sn[0] = -s, sn[1] = -se, cs[0] = -c, cs[1] = -ce; break;
    default: sn[0] = -c, sn[1] = -ce, cs[0] = s, cs[1] = se; break;
  }
}

static inline MCM_HD void mcm_sincos_turns(float t, float *sin_out, float *cos_out) {
  float sn[2], cs[2];
  mcm_sincos_turns_hilo(t, sn, cs);
  *sin_out = sn[0];
  *cos_out = cs[0];
}

/* ------------------------------------------------------------------ blocks -> samples */

/* Four uniforms in [0, 1) from block `block`. */
static inline MCM_HD void rng_uniform4(uint64_t seed, uint64_t block, float v[4]) {
  uint32_t w[4];
  philox_block(seed, block, w);
  for (int j = 0; j < 4; j++) v[j] = mcm_u01(w[j]);
}

/* Box-Muller on one pair of words: u1 in (0, 1] sets the radius sqrt(-2 log u1), u2 in
 * [0, 1) the angle 2 pi u2; z0 = radius * cos, z1 = radius * sin. The radius is at most
 * sqrt(2 * 24 ln 2) = 5.77. Radius, cos and sin are each carried as hi + lo (the radius
 * corrected by one Newton step from the exact residual y - rh^2), so the only sizeable
 * error is the final rounding: at most 0.62 ulp against double precision (test_rng.c). */
static inline MCM_HD void mcm_box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
  float lh, ll;
  mcm_log_hilo(mcm_u01_nonzero(a), &lh, &ll);
  float y = mcm_fsub(0.0f, mcm_fadd(lh, lh)); /* -2 log u1 = y + yl, exactly; +0 for u1 = 1 */
  float yl = mcm_fsub(0.0f, mcm_fadd(ll, ll));
  float rh = mcm_fsqrt(y);
  float rl = 0.0f;
  if (rh > 0.0f) rl = mcm_fdiv(mcm_fadd(mcm_fma(-rh, rh, y), yl), mcm_fadd(rh, rh));
  float sn[2], cs[2];
  mcm_sincos_turns_hilo(mcm_u01(b), sn, cs);
  *z0 = mcm_fma(rh, cs[0], mcm_fma(rh, cs[1], mcm_fmul(rl, cs[0])));
  *z1 = mcm_fma(rh, sn[0], mcm_fma(rh, sn[1], mcm_fmul(rl, sn[0])));
}

/* Four standard normals from block `block`: (w0, w1) -> (z0, z1), (w2, w3) -> (z2, z3). */
static inline MCM_HD void rng_normal4(uint64_t seed, uint64_t block, float v[4]) {
  uint32_t w[4];
  philox_block(seed, block, w);
  mcm_box_muller(w[0], w[1], &v[0], &v[1]);
  mcm_box_muller(w[2], w[3], &v[2], &v[3]);
}
