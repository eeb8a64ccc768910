/* Attention at the VAE's head dims on the CPU (the oracle for the GPU's chunked path in
 * kernels/attention_large.cu): finite differences at D = 512 and at a head dim that is a
 * multiple of 8 but not of 32, a comparison with a naive double-precision attention that
 * builds the whole (TQ, TK) score matrix (also at sizes that split the queries into several
 * blocks of the CPU's blocked path, the last one ragged), accumulation and run-to-run
 * determinism of the backward, a long sequence that must stay O(TK) in memory and finish
 * quickly, the VAE's full attention at BLAS speed, and the chunk_rows knob's checks. */
#include <math.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "gradcheck.h"
#include "kernels/attention.h"
#include "test.h"

static Tensor *input(Ctx *ctx, int ndim, const int64_t *shape, uint64_t seed, float lo, float hi, bool grad) {
  Tensor *t = tensor_new_persistent(ctx, DT_F32, ndim, shape);
  fill_uniform(ctx, t, seed, lo, hi);
  t->requires_grad = grad;
  return t;
}

/* mask (B, TK): batch 0 keeps every key, the others drop keys j ≡ 1 mod 3, and with
 * `full_masked` the last batch element drops every key (its rows give zeros). */
static Tensor *make_mask(Ctx *ctx, int B, int TK, bool full_masked) {
  Tensor *m = tensor_new_persistent(ctx, DT_F32, SHAPE(B, TK));
  float *h = MALLOC_CHECK((size_t)B * TK * sizeof(float));
  for (int b = 0; b < B; b++)
    for (int j = 0; j < TK; j++) h[b * TK + j] = (b > 0 && j % 3 == 1) || (full_masked && b == B - 1) ? 0.0f : 1.0f;
  tensor_from_host_f32(ctx, m, h);
  free(h);
  return m;
}

/* ------------------------------------------------------------------ finite differences */

typedef struct {
  int NH;
} LargeCase;

enum { L_Q, L_K, L_V, L_MASK, L_W, L_N };

static Tensor *large_loss(Ctx *ctx, Tensor **p, void *user) {
  const LargeCase *c = user;
  return op_sum(ctx, op_mul(ctx, op_attention(ctx, p[L_Q], p[L_K], p[L_V], c->NH, p[L_MASK]), p[L_W]));
}

/* B 2, TQ 5, TK 7 (odd), batch 1 with keys 1 and 4 masked. q, k in [-1.5, 1.5]: at D = 512 the
 * scaled scores spread with σ ≈ 0.75, so the softmax is neither uniform nor one-hot. 200
 * elements per leaf (spread evenly over rows and channels) keep it fast at D = 512. */
static void check_large_fd(int NH, int D) {
  Ctx *ctx = ctx_create_cpu(0);
  int64_t C = (int64_t)NH * D;
  Tensor *p[L_N] = {input(ctx, SHAPE(2, 5, C), 71, -1.5f, 1.5f, true), input(ctx, SHAPE(2, 7, C), 72, -1.5f, 1.5f, true),
                    input(ctx, SHAPE(2, 7, C), 73, -1, 1, true), make_mask(ctx, 2, 7, false),
                    input(ctx, SHAPE(2, 5, C), 74, -1, 1, false)};
  LargeCase c = {NH};
  EXPECT(gradcheck(ctx, large_loss, p, L_N, &c, (GradcheckOpts){.max_per_tensor = 200}) == 0,
         "attention NH = %d, D = %d: gradients disagree with finite differences", NH, D);
  ctx_destroy(ctx);
}

TEST(attention_d512_matches_finite_differences) { check_large_fd(1, 512); }
TEST(attention_d136_two_heads_matches_finite_differences) { check_large_fd(2, 136); }

/* ------------------------------------------------------------------ double reference */

/* Attention the textbook way, in double, with the whole (TQ, TK) matrices of one (b, h):
 * S = q kᵀ/√D over the kept keys, P = softmax(S) (0 for a row with no kept key),
 * out = P v; dP = dout vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dq = dS k/√D, dk = dSᵀ q/√D,
 * dv = Pᵀ dout. Inputs (B, T, NH·D) as in the op; outputs overwritten. */
static void attention_ref(double *out, double *dq, double *dk, double *dv, const float *q, const float *k,
                          const float *v, const float *mask, const float *dout, int B, int TQ, int TK, int NH, int D) {
  int64_t C = (int64_t)NH * D;
  double scale = 1.0 / sqrt((double)D);
  double *P = MALLOC_CHECK((size_t)TQ * TK * sizeof(double)), *dS = MALLOC_CHECK((size_t)TQ * TK * sizeof(double));
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++) {
#define QI(i) (q + ((int64_t)b * TQ + (i)) * C + h * D)
#define KJ(a, j) ((a) + ((int64_t)b * TK + (j)) * C + h * D)
#define OI(a, i) ((a) + ((int64_t)b * TQ + (i)) * C + h * D)
      for (int i = 0; i < TQ; i++) {
        double m = -INFINITY, l = 0.0, Di = 0.0;
        for (int j = 0; j < TK; j++) {
          double s = 0.0;
          for (int d = 0; d < D; d++) s += (double)QI(i)[d] * KJ(k, j)[d];
          P[i * TK + j] = (!mask || mask[b * TK + j] != 0.0f) ? s * scale : -INFINITY;
          m = fmax(m, P[i * TK + j]);
        }
        for (int j = 0; j < TK; j++) {
          P[i * TK + j] = m == -INFINITY ? 0.0 : exp(P[i * TK + j] - m);
          l += P[i * TK + j];
        }
        for (int j = 0; j < TK; j++) {
          if (l > 0) P[i * TK + j] /= l;
          double dp = 0.0;
          for (int d = 0; d < D; d++) dp += (double)OI(dout, i)[d] * KJ(v, j)[d];
          dS[i * TK + j] = dp;
          Di += P[i * TK + j] * dp;
        }
        for (int j = 0; j < TK; j++) dS[i * TK + j] = P[i * TK + j] * (dS[i * TK + j] - Di);
        for (int d = 0; d < D; d++) {
          double o = 0.0, g = 0.0;
          for (int j = 0; j < TK; j++) o += P[i * TK + j] * KJ(v, j)[d], g += dS[i * TK + j] * KJ(k, j)[d];
          OI(out, i)[d] = o;
          OI(dq, i)[d] = g * scale;
        }
      }
      for (int j = 0; j < TK; j++)
        for (int d = 0; d < D; d++) {
          double gk = 0.0, gv = 0.0;
          for (int i = 0; i < TQ; i++) gk += dS[i * TK + j] * QI(i)[d], gv += P[i * TK + j] * OI(dout, i)[d];
          KJ(dk, j)[d] = gk * scale;
          KJ(dv, j)[d] = gv;
        }
#undef QI
#undef KJ
#undef OI
    }
  free(P);
  free(dS);
}

/* ‖got − ref‖ / ‖ref‖ over n values. */
static double rel_l2(const float *got, const double *ref, int64_t n) {
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; i++) num += (got[i] - ref[i]) * (got[i] - ref[i]), den += ref[i] * ref[i];
  return sqrt(num / (den > 0 ? den : 1.0));
}

/* Tolerance: fp32 against exact arithmetic. Each score is a D-term dot product (D ≤ 512)
 * with relative error ~ε₃₂·√D ≈ 1.4e-6 of its terms' size; the exp turns an absolute score
 * error into the same relative error of P, and the outputs and gradients are sums over the
 * keys (≤ 9001 terms) or the query rows (≤ 601), whose rounding grows like ε₃₂·√n (≤ 5.7e-6
 * at 9001 terms; OpenBLAS's blocked FMA sums stay well under that). Measured ≤ 4.3e-7 at
 * TK ≤ 41 and 1.1e-6 (dq) at TK 9001; 5e-6 leaves a margin and still catches any wrong term
 * (a missing scale, a lost or doubled block, or a masked key that leaks gives 1e-2 and up). */
#define REF_REL_TOL 5e-6

static void check_against_double(int B, int TQ, int TK, int NH, int D, bool masked) {
  Ctx *ctx = ctx_create_cpu(0);
  int64_t C = (int64_t)NH * D, nq = (int64_t)B * TQ * C, nk = (int64_t)B * TK * C;
  Tensor *q = input(ctx, SHAPE(B, TQ, C), 81, -2, 2, true), *k = input(ctx, SHAPE(B, TK, C), 82, -2, 2, true);
  Tensor *v = input(ctx, SHAPE(B, TK, C), 83, -1, 1, true), *dy = input(ctx, SHAPE(B, TQ, C), 84, -1, 1, false);
  Tensor *mask = masked ? make_mask(ctx, B, TK, true) : NULL;
  Tensor *y = op_attention(ctx, q, k, v, NH, mask);
  backward_from(ctx, y, dy);

  int64_t ng = nq > nk ? nq : nk; /* hg holds out and dq (nq) or dk and dv (nk) in turn */
  float *h = MALLOC_CHECK((size_t)(3 * nq + 2 * nk + ng + B * TK) * sizeof(float));
  float *hq = h, *hk = hq + nq, *hv = hk + nk, *hdy = hv + nk, *hy = hdy + nq, *hg = hy + nq, *hm = hg + ng;
  tensor_to_host_f32(ctx, q, hq);
  tensor_to_host_f32(ctx, k, hk);
  tensor_to_host_f32(ctx, v, hv);
  tensor_to_host_f32(ctx, dy, hdy);
  if (mask) tensor_to_host_f32(ctx, mask, hm);
  double *r = MALLOC_CHECK((size_t)(2 * nq + 2 * nk) * sizeof(double));
  double *ro = r, *rdq = ro + nq, *rdk = rdq + nq, *rdv = rdk + nk;
  attention_ref(ro, rdq, rdk, rdv, hq, hk, hv, mask ? hm : NULL, hdy, B, TQ, TK, NH, D);

  struct {
    const char *name;
    const Tensor *t;
    const double *ref;
    int64_t n;
  } cmp[4] = {{"out", y, ro, nq}, {"dq", q->grad, rdq, nq}, {"dk", k->grad, rdk, nk}, {"dv", v->grad, rdv, nk}};
  for (int c = 0; c < 4; c++) {
    tensor_to_host_f32(ctx, cmp[c].t, hg);
    double e = rel_l2(hg, cmp[c].ref, cmp[c].n);
    printf("  B %d TQ %d TK %d NH %d D %d%s: %s rel L2 %.2g\n", B, TQ, TK, NH, D, masked ? " masked" : "", cmp[c].name,
           e);
    EXPECT(e <= REF_REL_TOL, "%s: relative L2 error %.3g against the double reference exceeds %.1g", cmp[c].name, e,
           REF_REL_TOL);
    if (masked) { /* the last batch element has no kept key: exact zeros */
      int64_t per_b = cmp[c].n / B, bad = 0;
      for (int64_t i = (B - 1) * per_b; i < cmp[c].n; i++) bad += hg[i] != 0.0f;
      EXPECT(bad == 0, "%s: %lld values of the fully masked batch element are not 0", cmp[c].name, (long long)bad);
    }
  }
  free(h);
  free(r);
  ctx_destroy(ctx);
}

/* The VAE's shape: one head of 512; batch 1 drops every third key, batch 2 all of them. */
TEST(attention_d512_matches_double_reference) { check_against_double(3, 33, 41, 1, 512, true); }
TEST(attention_d136_two_heads_matches_double_reference) { check_against_double(2, 19, 23, 2, 136, false); }
/* The CPU path takes R = min(256, 2^20 / TK) query rows per block (kernels/attention.c):
 * TQ 601 at TK 37 gives blocks of 256, 256 and 89 rows; TK 9001 gives R = 116, so TQ 150
 * is a block of 116 and a ragged one of 34, with 9001-term sums in each row. */
TEST(attention_several_query_blocks_match_double_reference) { check_against_double(2, 601, 37, 2, 24, true); }
TEST(attention_long_keys_ragged_block_match_double_reference) { check_against_double(2, 150, 9001, 1, 8, true); }

/* ------------------------------------------------------------------ accumulation, determinism */

/* n values uniform in [lo, hi) from a small LCG (host arrays for the direct CPU calls). */
static float *host_uniform(int64_t n, uint32_t *state, float lo, float hi) {
  float *x = MALLOC_CHECK((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) {
    *state = *state * 1664525u + 1013904223u;
    x[i] = lo + (hi - lo) * (float)(*state >> 8) / 16777216.0f;
  }
  return x;
}

/* The CPU backward adds to what the gradients hold, and gives the same bits on every run
 * (its query blocks run in a fixed order). TQ 300 at TK 5000: blocks of 209 and 91 rows, so
 * dk and dv sum over two blocks. Called directly on host arrays, without the tape.
 * Starting from a preset gradient G instead of 0 changes only the rounding: BLAS adds each
 * block's (and each K-panel's) partial product onto what is there, so G + Σ parts is summed
 * in another order than (Σ parts) + G. Values are O(1); measured ≤ 1.1e-7 apart (about one ulp);
 * 1e-5 (relative to 1 + |G|) allows that and fails on a lost or overwritten preset (O(0.1)). */
TEST(attention_cpu_backward_accumulates_and_is_deterministic) {
  enum { B = 2, TQ = 300, TK = 5000, NH = 2, D = 12, C = NH * D };
  const int64_t n[3] = {(int64_t)B * TQ * C, (int64_t)B * TK * C, (int64_t)B * TK * C}; /* dq, dk, dv */
  const char *name[3] = {"dq", "dk", "dv"};
  uint32_t st = 12345;
  float *q = host_uniform(n[0], &st, -2, 2), *k = host_uniform(n[1], &st, -2, 2), *v = host_uniform(n[1], &st, -2, 2);
  float *dout = host_uniform(n[0], &st, -2, 2), *out = MALLOC_CHECK((size_t)n[0] * sizeof(float));
  float *lse = MALLOC_CHECK((size_t)B * NH * TQ * sizeof(float)), mask[B * TK];
  for (int b = 0; b < B; b++)
    for (int j = 0; j < TK; j++) mask[b * TK + j] = b == 1 && j % 5 == 2 ? 0.0f : 1.0f;
  attention_forward_cpu(out, lse, q, k, v, mask, B, TQ, TK, NH, D);
  float *preset[3], *g[3][3]; /* g[run][dq, dk, dv]: runs 0 and 1 start from 0, run 2 from preset */
  for (int t = 0; t < 3; t++) {
    preset[t] = host_uniform(n[t], &st, -0.5f, 0.5f);
    for (int r = 0; r < 3; r++) {
      g[r][t] = MALLOC_CHECK((size_t)n[t] * sizeof(float));
      if (r < 2) memset(g[r][t], 0, (size_t)n[t] * sizeof(float));
      else memcpy(g[r][t], preset[t], (size_t)n[t] * sizeof(float));
    }
  }
  for (int r = 0; r < 3; r++)
    attention_backward_cpu(g[r][0], g[r][1], g[r][2], dout, q, k, v, lse, mask, B, TQ, TK, NH, D);
  for (int t = 0; t < 3; t++) {
    EXPECT(!memcmp(g[0][t], g[1][t], (size_t)n[t] * sizeof(float)), "%s differs between two identical runs", name[t]);
    int64_t bad = 0;
    double worst = 0.0;
    for (int64_t i = 0; i < n[t]; i++) {
      double e = fabs((double)g[2][t][i] - ((double)g[0][t][i] + preset[t][i])) / (1.0 + fabs(preset[t][i]));
      worst = fmax(worst, e);
      bad += e > 1e-5;
    }
    printf("  %s: preset + gradient vs gradient + preset: worst %.2g\n", name[t], worst);
    EXPECT(bad == 0, "%s: %lld values did not accumulate onto the preset gradient", name[t], (long long)bad);
    free(preset[t]);
    for (int r = 0; r < 3; r++) free(g[r][t]);
  }
  free(q), free(k), free(v), free(dout), free(out), free(lse);
}

/* ------------------------------------------------------------------ long sequences */

static double clock_s(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long peak_rss_kib(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss; /* KiB on Linux; this test runs in its own forked process */
}

/* The CPU reference keeps one block of at most 2^20 scores (4 MiB; two blocks in the
 * backward), never the (TQ, TK) matrix. The forward runs at T = 4096 (D = 64, one head:
 * 4.3 GFLOP): its peak resident memory may grow by the output (1 MiB), the block (4 MiB) and
 * OpenBLAS's buffers, but not by the 64 MiB a 4096² fp32 score matrix would take, so it must
 * stay under 32 MiB. Forward + backward run at T = 1024, first, so that their peak cannot
 * hide the forward's.
 * Time: the bound is on the process's CPU time, the work the op takes over all threads,
 * which other jobs on a shared machine do not inflate (wall time went from 2.7 s to 13.8 s
 * under sanitizers on a 2-core machine shared with other builds). It counts the BLAS and
 * OpenMP threads' spin-waits too. Measured CPU time with the blocked sgemm path: forward
 * 0.3 s at -O2 (0.9 s with the former row-at-a-time loops); forward + backward at T = 1024
 * 0.03 s (0.2 s before). 10 s for each. */
TEST(attention_cpu_long_sequence_stays_linear_in_memory) {
  const double max_s = 10.0;
  const long max_growth_kib = 32 << 10;
  for (int pass = 0; pass < 2; pass++) { /* the smaller run first, so its peak cannot hide the larger one's */
    const int T = pass == 0 ? 1024 : 4096, D = 64;
    const bool with_backward = pass == 0;
    Ctx *ctx = ctx_create_cpu(0);
    Tensor *q = input(ctx, SHAPE(1, T, D), 91, -2, 2, true), *k = input(ctx, SHAPE(1, T, D), 92, -2, 2, true);
    Tensor *v = input(ctx, SHAPE(1, T, D), 93, -1, 1, true), *dy = input(ctx, SHAPE(1, T, D), 94, -1, 1, false);
    long rss0 = peak_rss_kib();
    double wall0 = clock_s(CLOCK_MONOTONIC), cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    Tensor *y = op_attention(ctx, q, k, v, 1, NULL);
    if (with_backward) backward_from(ctx, y, dy);
    double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0, wall = clock_s(CLOCK_MONOTONIC) - wall0;
    long growth = peak_rss_kib() - rss0;
    printf("  T %d D %d %s: %.2f s CPU (%.2f s wall), peak RSS +%ld KiB\n", T, D,
           with_backward ? "forward + backward" : "forward", cpu, wall, growth);
    EXPECT(cpu < max_s, "T = %d: %.1f s of CPU time, expected < %.0f s", T, cpu, max_s);
    EXPECT(growth < max_growth_kib, "T = %d: peak RSS grew by %ld KiB, expected < %ld KiB (a %d² score matrix?)", T,
           growth, max_growth_kib, T);
    float *h = MALLOC_CHECK((size_t)T * D * sizeof(float));
    int64_t bad = 0;
    for (int t = 0; t < (with_backward ? 4 : 1); t++) { /* y, then dq, dk, dv: all finite */
      Tensor *x = t == 0 ? y : t == 1 ? q->grad : t == 2 ? k->grad : v->grad;
      tensor_to_host_f32(ctx, x, h);
      for (int64_t i = 0; i < (int64_t)T * D; i++) bad += !isfinite(h[i]);
    }
    EXPECT(bad == 0, "T = %d: %lld values are not finite", T, (long long)bad);
    free(h);
    ctx_destroy(ctx);
  }
}

/* The VAE's mid attention at full size: T 4096, one head of 512, forward and backward: seven
 * products of 2·4096·4096·512 flops (two forward, five backward), 120 GFLOP. The row-at-a-time
 * loops this path replaced took 23 s on two cores (3.9 s forward, 19.5 s backward on one
 * core); the blocked sgemm path 0.55 s wall at best (~220 GFLOP/s on two AVX-512 cores whose
 * sgemm peaks near 290), 1.2–1.5 s of CPU time (spin-waits included). The bound, 10 s of
 * CPU time, catches a fall back to scalar loops without flaking on a slow or busy machine. */
TEST(attention_cpu_vae_shape_runs_at_blas_speed) {
  const int T = 4096, D = 512;
  const double max_s = 10.0;
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = input(ctx, SHAPE(1, T, D), 111, -1, 1, true), *k = input(ctx, SHAPE(1, T, D), 112, -1, 1, true);
  Tensor *v = input(ctx, SHAPE(1, T, D), 113, -1, 1, true), *dy = input(ctx, SHAPE(1, T, D), 114, -1, 1, false);
  double wall0 = clock_s(CLOCK_MONOTONIC), cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
  Tensor *y = op_attention(ctx, q, k, v, 1, NULL);
  double wall1 = clock_s(CLOCK_MONOTONIC);
  backward_from(ctx, y, dy);
  double cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0, wall2 = clock_s(CLOCK_MONOTONIC);
  double gflop = 7.0 * 2.0 * T * (double)T * D / 1e9;
  printf("  T %d D %d forward + backward: %.2f s CPU, %.2f s wall (forward %.2f s, backward %.2f s): %.0f GFLOP/s\n", T,
         D, cpu, wall2 - wall0, wall1 - wall0, wall2 - wall1, gflop / (wall2 - wall0));
  EXPECT(cpu < max_s, "%.1f s of CPU time, expected < %.0f s", cpu, max_s);
  float *h = MALLOC_CHECK((size_t)T * D * sizeof(float));
  int64_t bad = 0;
  for (int t = 0; t < 4; t++) {
    tensor_to_host_f32(ctx, t == 0 ? y : t == 1 ? q->grad : t == 2 ? k->grad : v->grad, h);
    for (int64_t i = 0; i < (int64_t)T * D; i++) bad += !isfinite(h[i]);
  }
  EXPECT(bad == 0, "%lld values are not finite", (long long)bad);
  free(h);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ the chunk knob */

/* On the CPU the knob changes nothing: the same bits as op_attention, gradients included. */
TEST(attention_chunked_on_cpu_is_attention) {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = input(ctx, SHAPE(2, 9, 16), 101, -2, 2, true), *k = input(ctx, SHAPE(2, 11, 16), 102, -2, 2, true);
  Tensor *v = input(ctx, SHAPE(2, 11, 16), 103, -1, 1, true), *mask = make_mask(ctx, 2, 11, false);
  float a[2 * 9 * 16], b[2 * 9 * 16];
  tensor_to_host_f32(ctx, op_attention(ctx, q, k, v, 2, mask), a);
  tensor_to_host_f32(ctx, op_attention_chunked(ctx, q, k, v, 2, mask, 3), b);
  EXPECT(!memcmp(a, b, sizeof a), "op_attention_chunked differs from op_attention on the CPU");
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(attention_chunked_rejects_negative_chunk_rows, 1, "chunk_rows = -1 must be >= 0") {
  Ctx *ctx = ctx_create_cpu(0);
  Tensor *q = tensor_zeros(ctx, DT_F32, SHAPE(1, 2, 8));
  op_attention_chunked(ctx, q, q, q, 1, NULL, -1);
}
