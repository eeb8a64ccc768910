/* diffusion/sampler.c: single steps and the trainer's per-sample helpers against diffusers
 * (tests/fixtures/schedulers.py), whole samplers with a toy denoiser against a float64
 * reference, determinism, guidance batching, the long form's windows and fusion, img2img
 * strength, the persistent-state mode and bad inputs.
 *
 * The toy denoiser: ε̂ = a(t)·x + β·cond, a(t) = a0 + a1·t/1000, cond (B, C) broadcast over
 * time and mel. It is pointwise, hence translation-invariant along time: windows fused
 * from it must reproduce the single long window up to the fusion's own rounding.
 *
 * Tolerances (relative L2 unless said otherwise):
 *  - one step vs diffusers: diffusers works in fp32 with its fp32 ᾱ (up to 1e-6 off the
 *    exact value, see test_schedule.c) and rounds x̂0 (up to 84·x at t = 999, then partly
 *    cancelled) before combining; mcm folds the coefficients in double and rounds once.
 *    Measured ≤ 4.1e-7: 5e-6.
 *  - per-row helpers: the same formulas, fp32 on both sides. x̂0 at t = 999 is the
 *    difference of two terms 84× its size (x_t/√ᾱ and √(1−ᾱ)ε/√ᾱ), so one fp32 rounding
 *    of either (6e-8 of 84) is 5e-6 of x̂0, on both sides: measured 2.3e-6 for x̂0,
 *    ≤ 1e-7 for the others: 1e-5.
 *  - whole samplers vs float64: each step rounds x once (a few fp32 ulps, ~1e-7) and
 *    the rounding carries through ≤ 10 steps whose gains are O(1): measured ≤ 7e-7: 1e-5.
 *  - fused windows vs one long window: averaging k identical values in fp32 (v+v+v)/3 is
 *    off by ≤ 1 ulp per step: measured ≤ 1.4e-7: 1e-6. With one window the result must be
 *    bit-identical (memcmp).
 * Any wrong coefficient, timestep or noise draw moves these errors to 1e-3 or more. */
#include <math.h>

#include "diffusion/sampler.h"
#include "fixture.h"
#include "gradcheck.h"
#include "kernels/rng.h"
#include "test.h"

#define FIX "tests/fixtures/schedulers.h5"
static const double TOL_STEP = 5e-6;
static const double TOL_ROWS = 1e-5;
static const double TOL_SAMPLER = 1e-5;
static const double TOL_FUSED = 1e-6;

static Schedule musicldm(void) {
  Schedule s;
  ScheduleConfig cfg = schedule_config_musicldm();
  McmErr err;
  ASSERT(schedule_init(&s, &cfg, &err) == 0, "%s", err.msg);
  return s;
}

static float *to_host(Ctx *ctx, const Tensor *t) {
  float *v = MALLOC_CHECK((size_t)t->numel * sizeof(float));
  tensor_to_host_f32(ctx, t, v);
  return v;
}

static double rel_l2(const float *got, const double *ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) num += (got[i] - ref[i]) * (got[i] - ref[i]), den += ref[i] * ref[i];
  return sqrt(num) / fmax(sqrt(den), 1e-30);
}

static bool same_bits(Ctx *ctx, const Tensor *a, const Tensor *b) {
  if (!tensor_same_shape(a, b)) return false;
  float *ha = to_host(ctx, a), *hb = to_host(ctx, b);
  bool same = memcmp(ha, hb, (size_t)a->numel * sizeof(float)) == 0;
  free(ha), free(hb);
  return same;
}

static double scalar(Fixture *fx, const char *key) {
  int64_t n;
  float *v = fixture_values(fx, key, &n);
  double s = v[0];
  free(v);
  return s;
}

/* ------------------------------------------------------------------ steps vs diffusers */

TEST(sampler_ddim_step_matches_diffusers) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  Schedule s = musicldm();
  static const char *cases[] = {"n50_t981", "n50_t501", "n50_t1", "n200_t996", "n50_t501_eta1", "n50_t1_eta1"};
  for (int c = 0; c < 6; c++) {
    char key[96];
#define K(name) (snprintf(key, sizeof key, "ddim_step/%s/%s", cases[c], name), key)
    int n = (int)scalar(fx, K("n")), t = (int)scalar(fx, K("t"));
    double eta = scalar(fx, K("eta"));
    Tensor *x = fixture_tensor(ctx, fx, K("x"), false), *e = fixture_tensor(ctx, fx, K("eps"), false);
    Tensor *z = eta > 0 ? fixture_tensor(ctx, fx, K("z"), false) : NULL;
    Tensor *y = ddim_step(ctx, &s, x, e, t, ddim_prev_timestep(&s, t, n), eta, z);
    fixture_expect(ctx, fx, K("out"), y, TOL_STEP);
#undef K
  }
  schedule_free(&s);
  fixture_close(fx);
  ctx_destroy(ctx);
}

TEST(sampler_cm_step_matches_diffusers) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  Schedule s = musicldm();
  static const char *cases[] = {"n4_i0", "n4_i1", "n4_i3", "n1_i0", "n2_i0"};
  for (int c = 0; c < 5; c++) {
    char key[96];
#define K(name) (snprintf(key, sizeof key, "lcm_step/%s/%s", cases[c], name), key)
    int t = (int)scalar(fx, K("t")), t_next = (int)scalar(fx, K("t_next"));
    Tensor *x = fixture_tensor(ctx, fx, K("x"), false), *e = fixture_tensor(ctx, fx, K("eps"), false);
    Tensor *z = fixture_tensor(ctx, fx, K("z"), false), *den = NULL;
    Tensor *y = cm_step(ctx, &s, x, e, t, t_next, z, 0.5, 10.0, &den);
    fixture_expect(ctx, fx, K("out"), y, TOL_STEP);
    fixture_expect(ctx, fx, K("denoised"), den, TOL_STEP);
    if (t_next < 0) EXPECT(y == den, "%s: the last step must return denoised", cases[c]);
#undef K
  }
  schedule_free(&s);
  fixture_close(fx);
  ctx_destroy(ctx);
}

static void fixture_ints(Fixture *fx, const char *key, int *out, int n) {
  int64_t m;
  float *v = fixture_values(fx, key, &m);
  ASSERT(m == n, "%s: %lld values, want %d", key, (long long)m, n);
  for (int i = 0; i < n; i++) out[i] = (int)v[i];
  free(v);
}

TEST(sampler_row_helpers_match_diffusers_and_lcm_script) {
  Ctx *ctx = ctx_create_cpu(0);
  Fixture *fx = fixture_open(FIX);
  Schedule s = musicldm();
  int t[4], tp[4];
  fixture_ints(fx, "rows/t", t, 4);
  fixture_ints(fx, "rows/t_prev", tp, 4);
  Tensor *x0 = fixture_tensor(ctx, fx, "rows/x0", false), *e = fixture_tensor(ctx, fx, "rows/eps", false);
  Tensor *xt = diffusion_add_noise(ctx, &s, x0, e, t);
  fixture_expect(ctx, fx, "rows/add_noise", xt, TOL_ROWS);
  /* x̂0 from the reference's own x_t: x_t − √(1−ᾱ)ε cancels to √ᾱ·x0 (1/84 of x_t at t = 999),
   * which would magnify x_t's last-bit differences 84-fold */
  Tensor *xt_ref = fixture_tensor(ctx, fx, "rows/add_noise", false);
  fixture_expect(ctx, fx, "rows/x0_from_eps", diffusion_x0_from_eps(ctx, &s, xt_ref, e, t), TOL_ROWS);
  fixture_expect(ctx, fx, "rows/ddim_to", diffusion_ddim_to(ctx, &s, x0, e, tp), TOL_ROWS);
  fixture_expect(ctx, fx, "rows/boundary", diffusion_cm_boundary(ctx, xt, x0, t, 0.5, 10.0), TOL_ROWS);
  schedule_free(&s);
  fixture_close(fx);
  ctx_destroy(ctx);
}

/* Equal timesteps take one op_add_scaled, different ones broadcast products: same values. */
TEST(sampler_row_helpers_equal_rows_agree_with_per_row_path) {
  Ctx *ctx = ctx_create_cpu(0);
  Schedule s = musicldm();
  Tensor *a = tensor_new_persistent(ctx, DT_F32, SHAPE(3, 2, 5, 3)), *b = tensor_like(ctx, a);
  fill_uniform(ctx, a, 1, -1, 1);
  fill_uniform(ctx, b, 2, -1, 1);
  int same[3] = {499, 499, 499}, diff[3] = {499, 499, 500};
  float *h1 = to_host(ctx, diffusion_add_noise(ctx, &s, a, b, same));
  float *h2 = to_host(ctx, diffusion_add_noise(ctx, &s, a, b, diff));
  int64_t per_row = a->numel / 3;
  double m = 0;
  for (int64_t i = 0; i < 2 * per_row; i++) m = fmax(m, fabs(h1[i] - h2[i]));
  EXPECT(m <= 1e-6, "rows with the same timestep differ by %g between the two paths", m);
  free(h1), free(h2);
  schedule_free(&s);
  ctx_destroy(ctx);
}

typedef struct RowsCase {
  Schedule *s;
  int t[3], tp[3];
  Tensor *r; /* fixed random weights of the outputs */
} RowsCase;

/* Σ r ⊙ boundary(add_noise(x0, ε), ddim_to(x̂0(x_t, ε), ε)) through every helper */
static Tensor *rows_loss(Ctx *ctx, Tensor **p, void *user) {
  RowsCase *rc = user;
  Tensor *xt = diffusion_add_noise(ctx, rc->s, p[0], p[1], rc->t);
  Tensor *x0 = diffusion_x0_from_eps(ctx, rc->s, xt, op_scale(ctx, p[1], 0.9f), rc->t);
  Tensor *xp = diffusion_ddim_to(ctx, rc->s, x0, p[1], rc->tp);
  Tensor *f = diffusion_cm_boundary(ctx, xp, x0, rc->tp, 0.5, 10.0);
  return op_sum(ctx, op_mul(ctx, f, rc->r));
}

TEST(sampler_row_helpers_gradients_match_finite_differences) {
  Ctx *ctx = ctx_create_cpu(0);
  Schedule s = musicldm();
  /* mild timesteps keep x̂0's 1/√ᾱ (84 at t = 999) from swamping the finite differences */
  RowsCase rc = {.s = &s, .t = {300, 20, 300}, .tp = {280, 0, 1}};
  Tensor *p[2];
  for (int i = 0; i < 2; i++) {
    p[i] = tensor_new_persistent(ctx, DT_F32, SHAPE(3, 2, 5, 3));
    p[i]->requires_grad = true;
    fill_uniform(ctx, p[i], 10 + i, -1, 1);
  }
  rc.r = tensor_new_persistent(ctx, DT_F32, SHAPE(3, 2, 5, 3));
  fill_uniform(ctx, rc.r, 20, -1, 1);
  EXPECT(gradcheck(ctx, rows_loss, p, 2, &rc, (GradcheckOpts){0}) == 0, "per-row helper gradients (rows differ)");
  RowsCase same = {.s = &s, .t = {300, 300, 300}, .tp = {280, 280, 280}, .r = rc.r};
  EXPECT(gradcheck(ctx, rows_loss, p, 2, &same, (GradcheckOpts){0}) == 0, "per-row helper gradients (rows equal)");
  schedule_free(&s);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ the toy denoiser */

#define TOY_MAX_CALLS 64
typedef struct Toy {
  float a0, a1, beta;
  int calls;
  int64_t rows[TOY_MAX_CALLS];
  float t[TOY_MAX_CALLS];
} Toy;

static Tensor *toy_eps(Ctx *ctx, void *user, Tensor *x, const float *t, Tensor *cond) {
  Toy *toy = user;
  int64_t B = x->shape[0], C = x->shape[1];
  for (int64_t i = 1; i < B; i++) ASSERT(t[i] == t[0], "toy: rows have timesteps %g and %g", t[0], t[i]);
  ASSERT(cond->shape[0] == B && cond->shape[1] == C, "toy: cond %s for x %s", TENSOR_SHAPE_STR(cond),
         TENSOR_SHAPE_STR(x));
  if (toy->calls < TOY_MAX_CALLS) toy->rows[toy->calls] = B, toy->t[toy->calls] = t[0];
  toy->calls++;
  float a = toy->a0 + toy->a1 * t[0] / 1000.0f;
  return op_add_scaled(ctx, x, op_reshape(ctx, cond, SHAPE(B, C, 1, 1)), a, toy->beta);
}

static Toy toy_new(void) { return (Toy){.a0 = 0.8f, .a1 = 0.3f, .beta = 0.5f}; }

enum { TB = 2, TC = 3, TH = 40, TW = 4 };

typedef struct Inputs {
  Tensor *x, *cond, *uncond;
} Inputs;

/* x (B, C, H, W) from the ctx RNG (as ./infer draws x_T), cond and uncond fixed. */
static Inputs make_inputs(Ctx *ctx, int64_t H) {
  Inputs in;
  in.x = tensor_new_persistent(ctx, DT_F32, SHAPE(TB, TC, H, TW));
  rng_normal(ctx, in.x);
  in.cond = tensor_new_persistent(ctx, DT_F32, SHAPE(TB, TC));
  in.uncond = tensor_new_persistent(ctx, DT_F32, SHAPE(TB, TC));
  float c[TB * TC], u[TB * TC];
  for (int i = 0; i < TB * TC; i++) c[i] = 0.3f * (float)(i - 2), u[i] = -0.1f * (float)i;
  tensor_from_host_f32(ctx, in.cond, c);
  tensor_from_host_f32(ctx, in.uncond, u);
  return in;
}

/* The DDIM sampler in float64 on the host for the toy. */
static double *ddim_reference(Ctx *ctx, const Schedule *s, const Toy *toy, const Inputs *in, float w, int steps) {
  int64_t n = in->x->numel, per_c = in->x->shape[2] * in->x->shape[3];
  float *x0 = to_host(ctx, in->x), c[TB * TC], u[TB * TC];
  tensor_to_host_f32(ctx, in->cond, c);
  tensor_to_host_f32(ctx, in->uncond, u);
  double *x = MALLOC_CHECK((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++) x[i] = x0[i];
  int ts[1000];
  ASSERT(ddim_timesteps(s, steps, 1, SPACING_LEADING, ts, NULL) == 0, "timesteps");
  for (int k = 0; k < steps; k++) {
    double a = (double)toy->a0 + (double)toy->a1 * ts[k] / 1000.0;
    DdimCoeffs co = ddim_step_coeffs(s, ts[k], ts[k] - 1000 / steps, 0);
    for (int64_t i = 0; i < n; i++) {
      int64_t bc = i / per_c;
      double g = (1.0 + w) * c[bc] - (double)w * u[bc];
      double eps = a * x[i] + toy->beta * g;
      x[i] = co.cx * x[i] + co.ceps * eps;
    }
  }
  free(x0);
  return x;
}

/* The LCM sampler in float64, replaying the ctx's noise stream from `offset`. */
static double *cm_reference(Ctx *ctx, const Schedule *s, const Toy *toy, const Inputs *in, int steps,
                            uint64_t seed, uint64_t offset) {
  int64_t n = in->x->numel, per_c = in->x->shape[2] * in->x->shape[3];
  float *x0 = to_host(ctx, in->x), c[TB * TC], *z = MALLOC_CHECK((size_t)n * sizeof(float));
  tensor_to_host_f32(ctx, in->cond, c);
  double *x = MALLOC_CHECK((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++) x[i] = x0[i];
  int ts[64];
  ASSERT(lcm_timesteps(steps, 50, 1000, 1.0, ts, NULL) == 0, "timesteps");
  for (int k = 0; k < steps; k++) {
    double a = (double)toy->a0 + (double)toy->a1 * ts[k] / 1000.0, c_skip, c_out;
    lcm_boundary_scalings(ts[k], 0.5, 10.0, &c_skip, &c_out);
    double ab = s->alphas_cumprod[ts[k]];
    bool last = k == steps - 1;
    if (!last) {
      rng_normal_host(seed, offset, z, n);
      offset += rng_blocks(n);
    }
    for (int64_t i = 0; i < n; i++) {
      double eps = a * x[i] + toy->beta * c[i / per_c];
      double x0h = (x[i] - sqrt(1 - ab) * eps) / sqrt(ab);
      double den = c_skip * x[i] + c_out * x0h;
      if (last) {
        x[i] = den;
      } else {
        double abn = s->alphas_cumprod[ts[k + 1]];
        x[i] = sqrt(abn) * den + sqrt(1 - abn) * z[i];
      }
    }
  }
  free(x0), free(z);
  return x;
}

TEST(sampler_ddim_toy_matches_float64_with_one_guided_batch_per_step) {
  Ctx *ctx = ctx_create_cpu(7);
  Schedule s = musicldm();
  Inputs in = make_inputs(ctx, TH);
  Toy toy = toy_new();
  McmErr err;
  Tensor *y = sample_ddim(ctx, toy_eps, &toy, &s, in.x, in.cond, in.uncond, 2.0f, 10, NULL, &err);
  ASSERT(y, "%s", err.msg);
  EXPECT(tensor_same_shape(y, in.x), "output %s for input %s", TENSOR_SHAPE_STR(y), TENSOR_SHAPE_STR(in.x));
  EXPECT(toy.calls == 10, "%d denoiser calls for 10 steps", toy.calls);
  for (int i = 0; i < toy.calls && i < TOY_MAX_CALLS; i++) {
    EXPECT(toy.rows[i] == 2 * TB, "call %d: %lld rows (cond and uncond must be one batch of 2B)", i,
           (long long)toy.rows[i]);
    EXPECT(toy.t[i] == (float)(901 - 100 * i), "call %d at t = %g (leading spacing, offset 1)", i, toy.t[i]);
  }
  double *ref = ddim_reference(ctx, &s, &toy, &in, 2.0f, 10);
  float *got = to_host(ctx, y);
  double e = rel_l2(got, ref, y->numel);
  EXPECT(e <= TOL_SAMPLER, "DDIM vs float64: relative L2 %.3g", e);
  free(ref), free(got);
  EXPECT(!ctx->grad_enabled || ctx->tape.n == 0, "the sampler recorded %d tape nodes", ctx->tape.n);
  schedule_free(&s);
  ctx_destroy(ctx);
}

TEST(sampler_ddim_without_guidance_runs_cond_only) {
  Ctx *ctx = ctx_create_cpu(7);
  Schedule s = musicldm();
  Inputs in = make_inputs(ctx, TH);
  Toy toy = toy_new();
  Tensor *y = sample_ddim(ctx, toy_eps, &toy, &s, in.x, in.cond, NULL, 0.0f, 5, NULL, NULL);
  ASSERT(y, "sample_ddim failed");
  EXPECT(toy.calls == 5 && toy.rows[0] == TB, "%d calls of %lld rows", toy.calls, (long long)toy.rows[0]);
  double *ref = ddim_reference(ctx, &s, &toy, &in, 0.0f, 5);
  float *got = to_host(ctx, y);
  EXPECT(rel_l2(got, ref, y->numel) <= TOL_SAMPLER, "DDIM w = 0 vs float64: %.3g", rel_l2(got, ref, y->numel));
  free(ref), free(got);
  schedule_free(&s);
  ctx_destroy(ctx);
}

TEST(sampler_cm_toy_matches_float64_with_fresh_noise_per_step) {
  for (int steps = 1; steps <= 8; steps *= 2) {
    Ctx *ctx = ctx_create_cpu(11);
    Schedule s = musicldm();
    Inputs in = make_inputs(ctx, TH);
    Toy toy = toy_new();
    uint64_t off = ctx->rng_offset;
    McmErr err;
    Tensor *y = sample_cm(ctx, toy_eps, &toy, &s, in.x, in.cond, steps, NULL, &err);
    ASSERT(y, "%s", err.msg);
    EXPECT(tensor_same_shape(y, in.x), "output %s", TENSOR_SHAPE_STR(y));
    EXPECT(toy.calls == steps, "%d calls for %d steps", toy.calls, steps);
    EXPECT(ctx->rng_offset - off == (uint64_t)(steps - 1) * rng_blocks(in.x->numel),
           "%d steps drew %llu noise blocks (want one latent per step but the last)", steps,
           (unsigned long long)(ctx->rng_offset - off));
    if (steps == 4)
      EXPECT(toy.t[0] == 999 && toy.t[1] == 759 && toy.t[2] == 499 && toy.t[3] == 259, "4-step timesteps %g %g %g %g",
             toy.t[0], toy.t[1], toy.t[2], toy.t[3]);
    double *ref = cm_reference(ctx, &s, &toy, &in, steps, ctx->seed, off);
    float *got = to_host(ctx, y);
    double e = rel_l2(got, ref, y->numel);
    EXPECT(e <= TOL_SAMPLER, "%d-step CM vs float64: relative L2 %.3g", steps, e);
    free(ref), free(got);
    schedule_free(&s);
    ctx_destroy(ctx);
  }
}

/* x_T and the CM's noise come from the ctx seed: same seed, same music. */
static float *cm_run(uint64_t seed, int64_t *n) {
  Ctx *ctx = ctx_create_cpu(seed);
  Schedule s = musicldm();
  Inputs in = make_inputs(ctx, TH);
  Toy toy = toy_new();
  Tensor *y = sample_cm(ctx, toy_eps, &toy, &s, in.x, in.cond, 4, NULL, NULL);
  ASSERT(y, "sample_cm");
  float *h = to_host(ctx, y);
  *n = y->numel;
  schedule_free(&s);
  ctx_destroy(ctx);
  return h;
}

TEST(sampler_same_seed_same_output_other_seed_differs) {
  int64_t n;
  float *a = cm_run(42, &n), *b = cm_run(42, &n), *c = cm_run(43, &n);
  EXPECT(memcmp(a, b, (size_t)n * sizeof(float)) == 0, "the same seed gave different samples");
  int differ = 0;
  for (int64_t i = 0; i < n; i++) differ += a[i] != c[i];
  EXPECT(differ > n * 9 / 10, "another seed changed only %d of %lld values", differ, (long long)n);
  free(a), free(b), free(c);
}

/* ------------------------------------------------------------------ long form */

TEST(sampler_window_layout) {
  Windows w;
  McmErr err;
  ASSERT(window_layout(1500, 256, 64, &w, &err) == 0, "%s", err.msg);
  /* starts 0, 64, …, 1216 and the end-aligned 1244 */
  EXPECT(w.n == 21 && w.start[0] == 0 && w.start[19] == 1216 && w.start[20] == 1244 && w.window == 256,
         "1500/256/64: %d windows, last starts %d", w.n, w.start[w.n - 1]);
  ASSERT(window_layout(512, 256, 64, &w, &err) == 0, "%s", err.msg);
  EXPECT(w.n == 5 && w.start[4] == 256 && w.start[3] == 192, "512/256/64: %d windows (no duplicate end)", w.n);
  ASSERT(window_layout(300, 256, 256, &w, &err) == 0, "%s", err.msg);
  EXPECT(w.n == 2 && w.start[1] == 44, "300/256/256: %d windows, second at %d", w.n, w.start[1]);
  ASSERT(window_layout(200, 256, 64, &w, &err) == 0, "%s", err.msg);
  EXPECT(w.n == 1 && w.window == 200 && w.start[0] == 0, "a window longer than the piece: one window of it");
  /* every frame covered, windows in order */
  ASSERT(window_layout(1001, 96, 40, &w, &err) == 0, "%s", err.msg);
  for (int p = 0; p < 1001; p++) {
    int cover = 0;
    for (int i = 0; i < w.n; i++) cover += w.start[i] <= p && p < w.start[i] + w.window;
    if (!cover) test_fail(__FILE__, __LINE__, "frame %d uncovered", p);
  }
  EXPECT(window_layout(1000, 256, 300, &w, &err) == -1, "stride > window accepted");
  EXPECT_STR_CONTAINS(err.msg, "uncovered");
  EXPECT(window_layout(1000, 0, 64, &w, &err) == -1, "window 0 accepted");
  EXPECT(window_layout(1000000, 8, 1, &w, &err) == -1, "too many windows accepted");
  FuseMode m;
  EXPECT(fuse_mode_parse("triangular", &m, &err) == 0 && m == FUSE_TRIANGULAR, "triangular");
  EXPECT(fuse_mode_parse("max", &m, &err) == -1, "max");
}

TEST(sampler_fuse_windows_averages_overlaps) {
  Ctx *ctx = ctx_create_cpu(0);
  Windows w;
  ASSERT(window_layout(23, 8, 5, &w, NULL) == 0, "layout"); /* starts 0 5 10 15 */
  Tensor *preds[8];
  for (int i = 0; i < w.n; i++) {
    preds[i] = tensor_new(ctx, DT_F32, SHAPE(2, 1, 8, 3));
    tensor_fill(ctx, preds[i], (float)(i + 1));
  }
  for (int mode = 0; mode < 2; mode++) {
    Tensor *y = fuse_windows(ctx, &w, (FuseMode)mode, preds);
    CHECK_SHAPE("test", y, 2, 1, 23, 3);
    float *h = to_host(ctx, y);
    for (int p = 0; p < 23; p++) {
      double num = 0, den = 0;
      for (int i = 0; i < w.n; i++) {
        if (w.start[i] > p || p >= w.start[i] + 8) continue;
        double a = p - w.start[i] + 1, b = w.start[i] + 8 - p, wt = mode == FUSE_AVERAGE ? 1 : fmin(a, b);
        num += wt * (i + 1), den += wt;
      }
      for (int b = 0; b < 2; b++)
        for (int k = 0; k < 3; k++) EXPECT_NEAR(h[(b * 23 + p) * 3 + k], num / den, 1e-6);
    }
    free(h);
  }
  ctx_destroy(ctx);
}

static void run_pair(Ctx *ctx, const Schedule *s, bool ddim, Inputs *in, const LongForm *lf, Tensor **single,
                     Tensor **longf, Toy *toy_long) {
  Toy toy = toy_new();
  *toy_long = toy_new();
  McmErr err;
  if (ddim) {
    *single = sample_ddim(ctx, toy_eps, &toy, s, in->x, in->cond, in->uncond, 2.0f, 6, NULL, &err);
    *longf = sample_ddim_long(ctx, toy_eps, toy_long, s, in->x, in->cond, in->uncond, 2.0f, 6, lf, NULL, &err);
  } else {
    uint64_t off = ctx->rng_offset;
    *single = sample_cm(ctx, toy_eps, &toy, s, in->x, in->cond, 4, NULL, &err);
    ctx->rng_offset = off; /* the same noise for the second run */
    *longf = sample_cm_long(ctx, toy_eps, toy_long, s, in->x, in->cond, 4, lf, NULL, &err);
  }
  ASSERT(*single && *longf, "%s", err.msg);
}

TEST(sampler_long_form_one_window_is_bit_identical_to_single) {
  Ctx *ctx = ctx_create_cpu(5);
  Schedule s = musicldm();
  Inputs in = make_inputs(ctx, TH);
  for (int ddim = 0; ddim < 2; ddim++)
    for (int mode = 0; mode < 2; mode++)
      for (int wsize = TH; wsize <= TH + 24; wsize += 24) { /* window = total, and longer */
        LongForm lf = {.window = wsize, .stride = 8, .fuse = (FuseMode)mode};
        Tensor *a, *b;
        Toy tl;
        run_pair(ctx, &s, ddim, &in, &lf, &a, &b, &tl);
        EXPECT(same_bits(ctx, a, b), "%s, %s fusion, window %d: long form differs from the single window",
               ddim ? "DDIM" : "CM", mode ? "triangular" : "average", wsize);
      }
  schedule_free(&s);
  ctx_destroy(ctx);
}

TEST(sampler_long_form_overlaps_match_one_long_window_for_a_pointwise_model) {
  Ctx *ctx = ctx_create_cpu(5);
  Schedule s = musicldm();
  Inputs in = make_inputs(ctx, TH); /* 40 frames in windows of 16 every 6: 0 6 12 18 24 */
  for (int ddim = 0; ddim < 2; ddim++)
    for (int mode = 0; mode < 2; mode++)
      for (int maxb = 0; maxb <= 8; maxb += 8) {
        LongForm lf = {.window = 16, .stride = 6, .fuse = (FuseMode)mode, .max_batch = maxb};
        Tensor *a, *b;
        Toy tl;
        run_pair(ctx, &s, ddim, &in, &lf, &a, &b, &tl);
        float *ha = to_host(ctx, a), *hb = to_host(ctx, b);
        double *ra = MALLOC_CHECK((size_t)a->numel * sizeof(double));
        for (int64_t i = 0; i < a->numel; i++) ra[i] = ha[i];
        double e = rel_l2(hb, ra, a->numel);
        EXPECT(e <= TOL_FUSED, "%s, %s fusion, max_batch %d: fused windows vs one long window %.3g",
               ddim ? "DDIM" : "CM", mode ? "triangular" : "average", maxb, e);
        /* one batch of windows × rows per step (chunks of ≤ max_batch rows when set) */
        int steps = ddim ? 6 : 4, rows = 5 * TB * (ddim ? 2 : 1);
        int per = maxb ? maxb / (TB * (ddim ? 2 : 1)) * TB * (ddim ? 2 : 1) : rows;
        int calls_per_step = (rows + per - 1) / per;
        EXPECT(tl.calls == steps * calls_per_step, "%d calls, want %d", tl.calls, steps * calls_per_step);
        EXPECT(tl.rows[0] == (per < rows ? per : rows), "first call has %lld rows, want %d", (long long)tl.rows[0],
               per < rows ? per : rows);
        free(ha), free(hb), free(ra);
      }
  schedule_free(&s);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ options */

TEST(sampler_strength_starts_later_on_the_schedule) {
  Ctx *ctx = ctx_create_cpu(3);
  Schedule s = musicldm();
  Inputs in = make_inputs(ctx, TH);
  SamplerOpts o = sampler_opts_default();
  o.strength = 0.5;
  Toy toy = toy_new();
  uint64_t off = ctx->rng_offset;
  Tensor *y = sample_ddim(ctx, toy_eps, &toy, &s, in.x, in.cond, in.uncond, 1.0f, 10, &o, NULL);
  ASSERT(y, "ddim strength 0.5");
  /* 10 steps 901 … 1, the last 5 kept: 401 … 1; the init latent noised once */
  EXPECT(toy.calls == 5 && toy.t[0] == 401, "%d calls from t = %g", toy.calls, toy.t[0]);
  EXPECT(ctx->rng_offset - off == rng_blocks(in.x->numel), "img2img must draw one latent of noise");
  toy = toy_new();
  y = sample_cm(ctx, toy_eps, &toy, &s, in.x, in.cond, 4, &o, NULL);
  ASSERT(y, "cm strength 0.5");
  EXPECT(toy.calls == 4 && toy.t[0] == 499 && toy.t[3] == 139, "CM strength 0.5: %d calls, %g … %g", toy.calls,
         toy.t[0], toy.t[3]);
  McmErr err;
  o.strength = 0.05;
  EXPECT(!sample_ddim(ctx, toy_eps, &toy, &s, in.x, in.cond, in.uncond, 1.0f, 10, &o, &err), "strength 0.05");
  EXPECT_STR_CONTAINS(err.msg, "keeps no step");
  o.strength = 1.5;
  EXPECT(!sample_cm(ctx, toy_eps, &toy, &s, in.x, in.cond, 4, &o, &err), "strength 1.5");
  EXPECT_STR_CONTAINS(err.msg, "strength");
  schedule_free(&s);
  ctx_destroy(ctx);
}

static void count_progress(void *user, int step, int n) {
  int *p = user;
  EXPECT(step == p[0] + 1, "progress step %d after %d", step, p[0]);
  p[0] = step;
  p[1] = n;
}

TEST(sampler_state_mode_resets_the_arena_and_gives_the_same_result) {
  for (int ddim = 0; ddim < 2; ddim++) {
    Ctx *ctx = ctx_create_cpu(9);
    Schedule s = musicldm();
    Inputs in = make_inputs(ctx, TH);
    uint64_t off = ctx->rng_offset;
    Toy toy = toy_new();
    Tensor *plain = ddim ? sample_ddim(ctx, toy_eps, &toy, &s, in.x, in.cond, in.uncond, 2.0f, 6, NULL, NULL)
                         : sample_cm(ctx, toy_eps, &toy, &s, in.x, in.cond, 4, NULL, NULL);
    float *hp = to_host(ctx, plain);
    ctx_step_reset(ctx);
    ctx->rng_offset = off;
    SamplerOpts o = sampler_opts_default();
    int prog[2] = {0, 0};
    o.state = tensor_new_persistent(ctx, DT_F32, SHAPE(TB, TC, TH, TW));
    o.progress = count_progress;
    o.progress_user = prog;
    LongForm lf = {.window = 16, .stride = 8};
    Tensor *y = ddim ? sample_ddim_long(ctx, toy_eps, &toy, &s, in.x, in.cond, in.uncond, 2.0f, 6, &lf, &o, NULL)
                     : sample_cm_long(ctx, toy_eps, &toy, &s, in.x, in.cond, 4, &lf, &o, NULL);
    ASSERT(y == o.state, "the result must be the state buffer");
    EXPECT(ctx->act.used == 0, "the arena holds %zu bytes after the last step", ctx->act.used);
    EXPECT(prog[0] == (ddim ? 6 : 4) && prog[1] == prog[0], "progress %d of %d", prog[0], prog[1]);
    float *hy = to_host(ctx, y);
    double m = 0;
    for (int64_t i = 0; i < y->numel; i++) m = fmax(m, fabs(hy[i] - hp[i]) / fmax(fabs(hp[i]), 1e-3));
    EXPECT(m <= 1e-5, "%s with state and windows vs plain: %.3g", ddim ? "DDIM" : "CM", m);
    free(hp), free(hy);
    schedule_free(&s);
    ctx_destroy(ctx);
  }
}

TEST_EXIT_MSG(sampler_state_needs_persistent_inputs, 1, "must be persistent") {
  Ctx *ctx = ctx_create_cpu(0);
  Schedule s = musicldm();
  Tensor *x = tensor_zeros(ctx, DT_F32, SHAPE(1, 2, 8, 2)), *c = tensor_zeros(ctx, DT_F32, SHAPE(1, 2));
  SamplerOpts o = sampler_opts_default();
  o.state = tensor_new_persistent(ctx, DT_F32, SHAPE(1, 2, 8, 2));
  Toy toy = toy_new();
  sample_cm(ctx, toy_eps, &toy, &s, x, c, 2, &o, NULL);
}

TEST(sampler_bad_requests_return_errors) {
  Ctx *ctx = ctx_create_cpu(0);
  Schedule s = musicldm();
  Inputs in = make_inputs(ctx, TH);
  Toy toy = toy_new();
  McmErr err;
  EXPECT(!sample_cm(ctx, toy_eps, &toy, &s, in.x, in.cond, 0, NULL, &err), "0 steps");
  EXPECT_STR_CONTAINS(err.msg, "0 steps");
  EXPECT(!sample_cm(ctx, toy_eps, &toy, &s, in.x, in.cond, 51, NULL, &err), "51 LCM steps");
  EXPECT(!sample_ddim(ctx, toy_eps, &toy, &s, in.x, in.cond, in.uncond, 1.0f, 1001, NULL, &err), "1001 steps");
  LongForm lf = {.window = 8, .stride = 16};
  EXPECT(!sample_cm_long(ctx, toy_eps, &toy, &s, in.x, in.cond, 4, &lf, NULL, &err), "stride > window");
  EXPECT_STR_CONTAINS(err.msg, "uncovered");
  EXPECT(toy.calls == 0, "a rejected request ran the denoiser %d times", toy.calls);
  schedule_free(&s);
  ctx_destroy(ctx);
}

/* ------------------------------------------------------------------ GPU */

/* The samplers are ops only, so a GPU run must match the CPU run (the same noise from the
 * same seed). Skipped without a GPU; `make test-gpu` machines run it. fp32 pointwise ops
 * differ by a few ulps between the devices (nvcc may fuse a multiply-add): 1e-5. */
TEST(sampler_gpu_matches_cpu) {
  if (cuda_device_count() == 0) {
    fprintf(stderr, "sampler_gpu_matches_cpu: no GPU here, skipped\n");
    return;
  }
  DeviceSpec spec = {.kind = DEV_CUDA, .index = 0};
  McmErr err;
  Ctx *cpu = ctx_create_cpu(21), *gpu = ctx_create(&spec, 21, &err);
  ASSERT(gpu && gpu->dev == DEV_CUDA, "no CUDA context: %s", err.msg);
  Schedule s = musicldm();
  Inputs ic = make_inputs(cpu, TH), ig = make_inputs(gpu, TH);
  LongForm lf = {.window = 16, .stride = 6, .fuse = FUSE_TRIANGULAR};
  for (int ddim = 0; ddim < 2; ddim++) {
    Toy t1 = toy_new(), t2 = toy_new();
    Tensor *a = ddim ? sample_ddim_long(cpu, toy_eps, &t1, &s, ic.x, ic.cond, ic.uncond, 2.0f, 6, &lf, NULL, &err)
                     : sample_cm_long(cpu, toy_eps, &t1, &s, ic.x, ic.cond, 4, &lf, NULL, &err);
    Tensor *b = ddim ? sample_ddim_long(gpu, toy_eps, &t2, &s, ig.x, ig.cond, ig.uncond, 2.0f, 6, &lf, NULL, &err)
                     : sample_cm_long(gpu, toy_eps, &t2, &s, ig.x, ig.cond, 4, &lf, NULL, &err);
    ASSERT(a && b, "%s", err.msg);
    float *ha = to_host(cpu, a), *hb = to_host(gpu, b);
    double *ra = MALLOC_CHECK((size_t)a->numel * sizeof(double));
    for (int64_t i = 0; i < a->numel; i++) ra[i] = ha[i];
    double e = rel_l2(hb, ra, a->numel);
    EXPECT(e <= 1e-5, "%s long form GPU vs CPU: relative L2 %.3g", ddim ? "DDIM" : "CM", e);
    free(ha), free(hb), free(ra);
  }
  schedule_free(&s);
  ctx_destroy(cpu);
  ctx_destroy(gpu);
}
