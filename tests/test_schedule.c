/* diffusion/schedule.c against diffusers' DDIMScheduler and LCMScheduler (fixtures from
 * tests/fixtures/schedulers.py, MusicLDM's scheduler config) and against the formulas.
 *
 * Tolerances:
 *  - timestep lists: integers, compared exactly.
 *  - ᾱ against the float64 formula (the original LDM's make_beta_schedule, stored as fp32):
 *    mcm computes in double, so the only difference is the fixture's fp32 rounding, half an
 *    ulp = 6e-8 relative per element: max relative 1e-7.
 *  - ᾱ against diffusers, which multiplies 1000 fp32 factors (1 − β) one after another: the
 *    rounding walk of the product reaches ~√1000·6e-8 ≈ 2e-6 relative, and its fp32 betas
 *    (linspace in fp32, squared) add ~1e-7 per factor; measured 1.0e-6 (scaled_linear)
 *    and 3.6e-7 (linear): max relative 1e-5. Betas alone: measured 2.1e-7, bound 1e-6.
 *  - LCM scalings (Python doubles stored as fp32): max relative 1e-7. */
#include <math.h>

#include "diffusion/schedule.h"
#include "fixture.h"
#include "test.h"

#define FIX "tests/fixtures/schedulers.h5"

/* max_i |got_i − ref_i| / |ref_i| over n values */
static double max_rel(const double *got, const float *ref, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs(got[i] - ref[i]) / fmax(fabs(ref[i]), 1e-30);
    if (d > m) m = d;
  }
  return m;
}

static Schedule musicldm(void) {
  Schedule s;
  ScheduleConfig cfg = schedule_config_musicldm();
  McmErr err;
  ASSERT(schedule_init(&s, &cfg, &err) == 0, "%s", err.msg);
  return s;
}

TEST(schedule_alphas_match_diffusers_and_float64) {
  Fixture *fx = fixture_open(FIX);
  Schedule s = musicldm();
  int64_t n;
  float *ref = fixture_values(fx, "sched/alphas_cumprod_f64", &n);
  ASSERT(n == 1000, "fixture has %lld values", (long long)n);
  double e64 = max_rel(s.alphas_cumprod, ref, n);
  EXPECT(e64 <= 1e-7, "ᾱ vs float64 formula: max relative error %.3g > 1e-7", e64);
  free(ref);
  ref = fixture_values(fx, "sched/alphas_cumprod", &n);
  double e32 = max_rel(s.alphas_cumprod, ref, n);
  EXPECT(e32 <= 1e-5, "ᾱ vs diffusers (fp32): max relative error %.3g > 1e-5", e32);
  free(ref);
  ref = fixture_values(fx, "sched/betas", &n);
  double eb = max_rel(s.betas, ref, n);
  EXPECT(eb <= 1e-6, "betas vs diffusers: max relative error %.3g > 1e-6", eb);
  free(ref);
  /* the anchors of shared/reference/musicldm.md §4 */
  EXPECT_NEAR(s.betas[0], 0.0015, 1e-15);
  EXPECT_NEAR(s.betas[999], 0.0195, 1e-15);
  EXPECT_NEAR(s.alphas_cumprod[999], 1.42e-4, 0.01e-4);
  /* set_alpha_to_one false: the step after the last lands on ᾱ_0 */
  ref = fixture_values(fx, "sched/final_alpha_cumprod", &n);
  EXPECT_NEAR(s.final_alpha_cumprod, ref[0], 1e-7 * ref[0]);
  EXPECT(schedule_alpha_bar(&s, -1) == s.alphas_cumprod[0], "ᾱ_{-1} must be ᾱ_0 without set_alpha_to_one");
  free(ref);
  schedule_free(&s);
  fixture_close(fx);
}

TEST(schedule_linear_kind_matches) {
  Fixture *fx = fixture_open(FIX);
  ScheduleConfig cfg = schedule_config_musicldm();
  cfg.kind = BETA_LINEAR;
  cfg.beta_start = 1e-4;
  cfg.beta_end = 0.02;
  cfg.set_alpha_to_one = true;
  Schedule s;
  McmErr err;
  ASSERT(schedule_init(&s, &cfg, &err) == 0, "%s", err.msg);
  int64_t n;
  float *ref = fixture_values(fx, "sched_linear/alphas_cumprod_f64", &n);
  double e64 = max_rel(s.alphas_cumprod, ref, n);
  EXPECT(e64 <= 1e-7, "linear ᾱ vs float64: %.3g", e64);
  free(ref);
  ref = fixture_values(fx, "sched_linear/alphas_cumprod", &n);
  double e32 = max_rel(s.alphas_cumprod, ref, n);
  EXPECT(e32 <= 1e-5, "linear ᾱ vs diffusers: %.3g", e32);
  free(ref);
  EXPECT(schedule_alpha_bar(&s, -1) == 1.0, "set_alpha_to_one: ᾱ_{-1} = 1");
  schedule_free(&s);
  fixture_close(fx);
}

TEST(ddim_timesteps_match_diffusers) {
  Fixture *fx = fixture_open(FIX);
  Schedule s = musicldm();
  static const struct {
    const char *name;
    Spacing sp;
    int off;
  } cases[] = {{"leading_off1", SPACING_LEADING, 1},
               {"leading_off0", SPACING_LEADING, 0},
               {"trailing_off0", SPACING_TRAILING, 0},
               {"linspace_off0", SPACING_LINSPACE, 0}};
  int64_t nc;
  float *counts = fixture_values(fx, "ddim_ts/counts", &nc);
  int checked = 0;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    char key[96];
    int64_t nv, nl;
    snprintf(key, sizeof key, "ddim_ts/%s", cases[c].name);
    float *ref = fixture_values(fx, key, &nv);
    snprintf(key, sizeof key, "ddim_ts/%s_len", cases[c].name);
    float *lens = fixture_values(fx, key, &nl);
    ASSERT(nl == nc, "%s: %lld lengths for %lld counts", cases[c].name, (long long)nl, (long long)nc);
    int64_t pos = 0;
    for (int64_t k = 0; k < nc; k++) {
      int n = (int)counts[k], len = (int)lens[k];
      int got[1000];
      McmErr err;
      ASSERT(ddim_timesteps(&s, n, cases[c].off, cases[c].sp, got, &err) == 0, "%s n=%d: %s", cases[c].name, n,
             err.msg);
      /* diffusers' trailing arange yields one extra value, −1, for some counts (61 here) */
      if (len != n) {
        EXPECT(len == n + 1 && ref[pos + n] == -1.0f, "%s n=%d: diffusers gave %d values", cases[c].name, n, len);
      }
      for (int i = 0; i < n; i++) {
        if (got[i] != (int)ref[pos + i]) {
          test_fail(__FILE__, __LINE__, "%s n=%d: timestep %d is %d, diffusers %d", cases[c].name, n, i, got[i],
                    (int)ref[pos + i]);
          break;
        }
      }
      pos += len;
      checked++;
    }
    ASSERT(pos == nv, "%s: used %lld of %lld values", cases[c].name, (long long)pos, (long long)nv);
    free(ref);
    free(lens);
  }
  EXPECT(checked == 4 * nc, "checked %d lists", checked);
  free(counts);
  /* MusicLDM, 50 steps: 981, 961, …, 1 */
  int ts[50];
  ASSERT(ddim_timesteps(&s, 50, 1, SPACING_LEADING, ts, NULL) == 0, "50 steps");
  EXPECT(ts[0] == 981 && ts[1] == 961 && ts[49] == 1, "50 leading steps: %d %d … %d", ts[0], ts[1], ts[49]);
  EXPECT(ddim_prev_timestep(&s, 981, 50) == 961 && ddim_prev_timestep(&s, 1, 50) == -19, "prev timesteps");
  schedule_free(&s);
  fixture_close(fx);
}

TEST(ddim_timesteps_reject_bad_counts) {
  Schedule s = musicldm();
  int ts[1001];
  McmErr err;
  EXPECT(ddim_timesteps(&s, 0, 1, SPACING_LEADING, ts, &err) == -1, "0 steps accepted");
  EXPECT_STR_CONTAINS(err.msg, "expected 1..1000");
  EXPECT(ddim_timesteps(&s, 1001, 1, SPACING_LEADING, ts, &err) == -1, "1001 steps accepted");
  /* 1000 leading steps with offset 1 would reach timestep 1000 (diffusers fails at step) */
  EXPECT(ddim_timesteps(&s, 1000, 1, SPACING_LEADING, ts, &err) == -1, "timestep 1000 accepted");
  EXPECT_STR_CONTAINS(err.msg, "timestep 1000");
  EXPECT(ddim_timesteps(&s, 1000, 0, SPACING_LEADING, ts, &err) == 0, "1000 steps, offset 0: %s", err.msg);
  EXPECT(ts[0] == 999 && ts[999] == 0, "1000 steps: %d … %d", ts[0], ts[999]);
  schedule_free(&s);
}

TEST(lcm_timesteps_match_diffusers) {
  Fixture *fx = fixture_open(FIX);
  for (int c = 0; c < 4; c++) {
    char key[96];
    int64_t n1, nn, nv;
    snprintf(key, sizeof key, "lcm_ts/case%d/strength", c);
    float *strength = fixture_values(fx, key, &n1);
    snprintf(key, sizeof key, "lcm_ts/case%d/original_steps", c);
    float *orig = fixture_values(fx, key, &n1);
    snprintf(key, sizeof key, "lcm_ts/case%d/n", c);
    float *ns = fixture_values(fx, key, &nn);
    snprintf(key, sizeof key, "lcm_ts/case%d/timesteps", c);
    float *ref = fixture_values(fx, key, &nv);
    int64_t pos = 0;
    for (int64_t k = 0; k < nn; k++) {
      int n = (int)ns[k], got[64];
      McmErr err;
      /* the fixture's strength is fp32: 0.3f·50 = 15.0000006, truncated to 15 as 0.3·50 is */
      ASSERT(lcm_timesteps(n, (int)orig[0], 1000, strength[0], got, &err) == 0, "case %d n=%d: %s", c, n, err.msg);
      for (int i = 0; i < n; i++)
        EXPECT(got[i] == (int)ref[pos + i], "case %d (strength %g, %d original) n=%d: timestep %d is %d, diffusers %d",
               c, strength[0], (int)orig[0], n, i, got[i], (int)ref[pos + i]);
      pos += n;
    }
    EXPECT(pos == nv, "case %d: used %lld of %lld", c, (long long)pos, (long long)nv);
    free(strength), free(orig), free(ns), free(ref);
  }
  fixture_close(fx);
}

/* issue 6 and distillation.md §1.8: 1 → 999; 2 → 999, 499; 4 → 999, 759, 499, 259 */
TEST(lcm_timesteps_known_lists) {
  static const int want[][8] = {{999}, {999, 499}, {999, 679, 339}, {999, 759, 499, 259},
                                {0}, {0}, {0}, {999, 879, 759, 639, 499, 379, 259, 139}};
  for (int n = 1; n <= 8; n++) {
    if (n >= 5 && n <= 7) continue;
    int got[8];
    ASSERT(lcm_timesteps(n, 50, 1000, 1.0, got, NULL) == 0, "%d steps", n);
    for (int i = 0; i < n; i++)
      EXPECT(got[i] == want[n - 1][i], "%d steps: [%d] = %d, want %d", n, i, got[i], want[n - 1][i]);
  }
}

TEST(lcm_timesteps_reject_bad_input) {
  int ts[64];
  McmErr err;
  EXPECT(lcm_timesteps(0, 50, 1000, 1.0, ts, &err) == -1, "0 steps");
  EXPECT_STR_CONTAINS(err.msg, "0 steps");
  EXPECT(lcm_timesteps(51, 50, 1000, 1.0, ts, &err) == -1, "51 steps");
  EXPECT(lcm_timesteps(4, 50, 1000, 0.0, ts, &err) == -1, "strength 0");
  EXPECT_STR_CONTAINS(err.msg, "strength");
  EXPECT(lcm_timesteps(4, 50, 1000, 1.5, ts, &err) == -1, "strength 1.5");
  EXPECT(lcm_timesteps(4, 50, 1000, 0.05, ts, &err) == -1, "4 steps on a grid of 2");
  EXPECT(lcm_timesteps(4, 0, 1000, 1.0, ts, &err) == -1, "0 original steps");
  EXPECT(lcm_timesteps(4, 2000, 1000, 1.0, ts, &err) == -1, "2000 original steps");
}

TEST(lcm_scalings_match_diffusers) {
  Fixture *fx = fixture_open(FIX);
  int64_t n;
  float *t = fixture_values(fx, "lcm_scale/t", &n);
  float *cs = fixture_values(fx, "lcm_scale/c_skip", &n);
  float *co = fixture_values(fx, "lcm_scale/c_out", &n);
  for (int64_t i = 0; i < n; i++) {
    double c_skip, c_out;
    lcm_boundary_scalings(t[i], 0.5, 10.0, &c_skip, &c_out);
    EXPECT(fabs(c_skip - cs[i]) <= 1e-7 * fabs(cs[i]), "t=%g: c_skip %.9g, diffusers %.9g", t[i], c_skip, cs[i]);
    EXPECT(fabs(c_out - co[i]) <= 1e-7 * fabs(co[i]), "t=%g: c_out %.9g, diffusers %.9g", t[i], c_out, co[i]);
  }
  double c_skip, c_out;
  lcm_boundary_scalings(0, 0.5, 10.0, &c_skip, &c_out);
  EXPECT(c_skip == 1.0 && c_out == 0.0, "t=0 must give f(x) = x: c_skip %g c_out %g", c_skip, c_out);
  lcm_boundary_scalings(19, 0.5, 10.0, &c_skip, &c_out);
  EXPECT_NEAR(c_skip, 6.925e-6, 0.001e-6); /* distillation.md §1.6: ≈ 6.9e-6 at t = 19 */
  free(t), free(cs), free(co);
  fixture_close(fx);
}

TEST(ddim_step_coeffs_fold_the_formula) {
  Schedule s = musicldm();
  static const int pairs[][2] = {{981, 961}, {501, 481}, {1, -19}, {19, 0}};
  for (int k = 0; k < 4; k++) {
    int t = pairs[k][0], tp = pairs[k][1];
    double ab = schedule_alpha_bar(&s, t), abp = schedule_alpha_bar(&s, tp);
    for (int e = 0; e <= 1; e++) {
      DdimCoeffs c = ddim_step_coeffs(&s, t, tp, e);
      /* x = 0.7, ε = −1.3: the unfolded formula */
      double x = 0.7, eps = -1.3, x0 = (x - sqrt(1 - ab) * eps) / sqrt(ab);
      double var = (1 - abp) / (1 - ab) * (1 - ab / abp), sig = e * sqrt(var);
      double want = sqrt(abp) * x0 + sqrt(1 - abp - sig * sig) * eps;
      EXPECT_NEAR(c.cx * x + c.ceps * eps, want, 1e-12 * fmax(1, fabs(want)));
      EXPECT_NEAR(c.cnoise, sig, 1e-15);
    }
  }
  double cx, ce, c0, cn;
  x0_from_eps_coeffs(&s, 999, &cx, &ce);
  add_noise_coeffs(&s, 999, &c0, &cn);
  /* x̂0 of add_noise(x0, ε) with the same ε is x0: cx·c0 = 1, cx·cn + ce = 0 */
  EXPECT_NEAR(cx * c0, 1.0, 1e-14);
  EXPECT_NEAR(cx * cn + ce, 0.0, 1e-12);
  schedule_free(&s);
}

TEST(distill_grid_matches_lcm_solver) {
  Fixture *fx = fixture_open(FIX);
  DistillGrid g;
  McmErr err;
  ASSERT(distill_grid(50, 20, 1000, &g, &err) == 0, "%s", err.msg);
  int64_t n;
  float *start = fixture_values(fx, "grid/start", &n), *end = fixture_values(fx, "grid/end", &n);
  ASSERT(n == 50 && g.n == 50 && g.k == 20, "grid of %d, k %d", g.n, g.k);
  for (int i = 0; i < 50; i++) {
    EXPECT(g.start[i] == (int)start[i], "start[%d] = %d, LCM %d", i, g.start[i], (int)start[i]);
    EXPECT(g.end[i] == (int)end[i], "end[%d] = %d, LCM %d", i, g.end[i], (int)end[i]);
  }
  EXPECT(g.start[0] == 19 && g.end[0] == 0 && g.start[49] == 999 && g.end[49] == 979, "grid ends");
  EXPECT(distill_grid(0, 20, 1000, &g, &err) == -1, "0 steps");
  EXPECT(distill_grid(50, 21, 1000, &g, &err) == -1, "50·21 > 1000");
  EXPECT_STR_CONTAINS(err.msg, "k·N <= T");
  free(start), free(end);
  fixture_close(fx);
}

TEST(schedule_rejects_bad_configs_and_names) {
  Schedule s;
  McmErr err;
  ScheduleConfig cfg = schedule_config_musicldm();
  cfg.T = 0;
  EXPECT(schedule_init(&s, &cfg, &err) == -1, "T = 0");
  EXPECT_STR_CONTAINS(err.msg, "T = 0");
  cfg = schedule_config_musicldm();
  cfg.beta_end = 1.5;
  EXPECT(schedule_init(&s, &cfg, &err) == -1, "beta_end 1.5");
  cfg = schedule_config_musicldm();
  cfg.beta_start = 0.03;
  EXPECT(schedule_init(&s, &cfg, &err) == -1, "decreasing betas");
  BetaKind k;
  Spacing sp;
  EXPECT(beta_kind_parse("scaled_linear", &k, &err) == 0 && k == BETA_SCALED_LINEAR, "scaled_linear");
  EXPECT(beta_kind_parse("linear", &k, &err) == 0 && k == BETA_LINEAR, "linear");
  EXPECT(beta_kind_parse("cosine", &k, &err) == -1, "cosine is not supported");
  EXPECT_STR_CONTAINS(err.msg, "scaled_linear or linear");
  EXPECT(spacing_parse("trailing", &sp, &err) == 0 && sp == SPACING_TRAILING, "trailing");
  EXPECT(spacing_parse("uniform", &sp, &err) == -1, "uniform");
  EXPECT(!strcmp(spacing_name(SPACING_LINSPACE), "linspace") && !strcmp(beta_kind_name(BETA_LINEAR), "linear"),
         "names");
}
