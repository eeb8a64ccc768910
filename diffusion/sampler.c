/* Samplers on tensors (see sampler.h): DDIM with guidance, LCM multistep, windowed long
 * form, single steps and the trainer's per-sample helpers. Ops only, so CPU and GPU alike. */
#include "sampler.h"

#include <math.h>

#include "kernels/rng.h"

SamplerOpts sampler_opts_default(void) {
  return (SamplerOpts){
      .eta = 0.0,
      .original_steps = 50,
      .sigma_data = 0.5,
      .timestep_scaling = 10.0,
      .strength = 1.0,
  };
}

/* ------------------------------------------------------------------ single steps */

Tensor *ddim_step(Ctx *ctx, const Schedule *s, Tensor *x, Tensor *eps, int t, int t_prev, double eta, Tensor *z) {
  CHECK_SAME_SHAPE("ddim_step", x, eps);
  DdimCoeffs c = ddim_step_coeffs(s, t, t_prev, eta);
  Tensor *y = op_add_scaled(ctx, x, eps, (float)c.cx, (float)c.ceps);
  if (c.cnoise > 0) {
    MCM_CHECK(z != NULL, "ddim_step: eta %g needs a noise tensor z", eta);
    CHECK_SAME_SHAPE("ddim_step", x, z);
    y = op_add_scaled(ctx, y, z, 1.0f, (float)c.cnoise);
  }
  return y;
}

Tensor *cm_step(Ctx *ctx, const Schedule *s, Tensor *x, Tensor *eps, int t, int t_next, Tensor *z,
                double sigma_data, double timestep_scaling, Tensor **denoised) {
  CHECK_SAME_SHAPE("cm_step", x, eps);
  double c_skip, c_out, cx, ceps;
  lcm_boundary_scalings(t, sigma_data, timestep_scaling, &c_skip, &c_out);
  x0_from_eps_coeffs(s, t, &cx, &ceps);
  /* c_skip·x + c_out·(cx·x + ceps·ε̂), folded in double */
  Tensor *d = op_add_scaled(ctx, x, eps, (float)(c_skip + c_out * cx), (float)(c_out * ceps));
  if (denoised) *denoised = d;
  if (t_next < 0) return d;
  MCM_CHECK(z != NULL, "cm_step: a step before the last needs fresh noise z");
  CHECK_SAME_SHAPE("cm_step", x, z);
  double c0, cn;
  add_noise_coeffs(s, t_next, &c0, &cn);
  return op_add_scaled(ctx, d, z, (float)c0, (float)cn);
}

/* ------------------------------------------------------------------ sampler plumbing */

static Tensor *noise_like(Ctx *ctx, const Tensor *x) {
  Tensor *z = tensor_new(ctx, x->dtype, x->ndim, x->shape);
  rng_normal(ctx, z);
  return z;
}

/* (B) host timesteps, all t, in the host arena. */
static const float *fill_t(Ctx *ctx, int64_t B, int t) {
  float *tv = ctx_alloc_host(ctx, (size_t)B * sizeof(float));
  for (int64_t i = 0; i < B; i++) tv[i] = (float)t;
  return tv;
}

static Tensor *call_eps(Ctx *ctx, EpsFn fn, void *user, Tensor *x, const float *t, Tensor *cond) {
  Tensor *e = fn(ctx, user, x, t, cond);
  MCM_CHECK(e != NULL, "sampler: the denoiser returned NULL for x %s", TENSOR_SHAPE_STR(x));
  MCM_CHECK(tensor_same_shape(e, x), "sampler: the denoiser returned ε̂ %s for x %s (expected the same shape)",
            TENSOR_SHAPE_STR(e), TENSOR_SHAPE_STR(x));
  return e;
}

static void check_inputs(const char *op, Tensor *x, Tensor *cond, Tensor *uncond, const SamplerOpts *o) {
  CHECK_SHAPE(op, x, -1, -1, -1, -1);
  CHECK_SHAPE(op, cond, x->shape[0], -1);
  if (uncond) CHECK_SAME_SHAPE(op, cond, uncond);
  if (o->state) {
    CHECK_SAME_SHAPE(op, o->state, x);
    MCM_CHECK(o->state->persistent && x->persistent && cond->persistent && (!uncond || uncond->persistent),
              "%s: with opts.state the per-step arena is reset after every step, so state, x_in, cond and uncond "
              "must be persistent (tensor_new_persistent)", op);
  }
}

/* Keeps x across steps: with opts.state, copies it there and frees the step's arena. */
static Tensor *commit(Ctx *ctx, const SamplerOpts *o, Tensor *x) {
  if (!o->state) return x;
  if (x != o->state) tensor_copy(ctx, o->state, x);
  ctx_step_reset(ctx);
  return o->state;
}

/* The starting latent: x_in itself (strength 1) or x_in noised to t0 with fresh noise. */
static Tensor *start_latent(Ctx *ctx, const Schedule *s, Tensor *x_in, int t0, const SamplerOpts *o) {
  if (o->strength >= 1.0) return x_in;
  double c0, cn;
  add_noise_coeffs(s, t0, &c0, &cn);
  return op_add_scaled(ctx, x_in, noise_like(ctx, x_in), (float)c0, (float)cn);
}

/* ε̂ with guidance: cond and uncond as one batch of 2B rows; w = 0 runs cond only. */
static Tensor *guided_eps(Ctx *ctx, EpsFn fn, void *user, Tensor *x, Tensor *cond, Tensor *uncond, float w, int t) {
  int64_t B = x->shape[0];
  if (w == 0.0f) return call_eps(ctx, fn, user, x, fill_t(ctx, B, t), cond);
  Tensor *xs[2] = {x, x}, *cs[2] = {cond, uncond};
  Tensor *e = call_eps(ctx, fn, user, op_concat(ctx, xs, 2, 0), fill_t(ctx, 2 * B, t), op_concat(ctx, cs, 2, 0));
  Tensor *ec = op_slice(ctx, e, 0, 0, B), *eu = op_slice(ctx, e, 0, B, B);
  return op_add_scaled(ctx, ec, eu, 1.0f + w, -w);
}

Tensor *sample_ddim(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond, Tensor *uncond,
                    float guidance_w, int steps, const SamplerOpts *opts, McmErr *err) {
  SamplerOpts o = opts ? *opts : sampler_opts_default();
  check_inputs("sample_ddim", x_in, cond, uncond, &o);
  MCM_CHECK(uncond || guidance_w == 0.0f, "sample_ddim: guidance w = %g needs an unconditional embedding",
            guidance_w);
  if (!(o.strength > 0 && o.strength <= 1))
    return mcm_err(err, "ddim: strength %g (expected a value in (0, 1])", o.strength), NULL;
  if (!(o.eta >= 0)) return mcm_err(err, "ddim: eta %g (expected >= 0)", o.eta), NULL;
  if (steps < 1 || steps > s->cfg.T) return mcm_err(err, "ddim: %d steps (expected 1..%d)", steps, s->cfg.T), NULL;
  int *ts = MALLOC_CHECK((size_t)steps * sizeof(int));
  if (ddim_timesteps(s, steps, s->cfg.steps_offset, s->cfg.spacing, ts, err)) return free(ts), NULL;
  /* img2img keeps the last ⌊steps·strength⌋ timesteps (diffusers' get_timesteps). */
  int keep = (int)(steps * o.strength), first = steps - keep;
  if (keep < 1) {
    free(ts);
    return mcm_err(err, "ddim: strength %g keeps no step of %d (expected strength >= %g)", o.strength, steps,
                   1.0 / steps),
           NULL;
  }

  bool was = ctx_set_grad(ctx, false);
  Tensor *x = start_latent(ctx, s, x_in, ts[first], &o);
  for (int i = first; i < steps; i++) {
    Tensor *eps = guided_eps(ctx, fn, user, x, cond, uncond, guidance_w, ts[i]);
    Tensor *z = o.eta > 0 ? noise_like(ctx, x) : NULL;
    x = ddim_step(ctx, s, x, eps, ts[i], ddim_prev_timestep(s, ts[i], steps), o.eta, z);
    x = commit(ctx, &o, x);
    if (o.progress) o.progress(o.progress_user, i - first + 1, keep);
  }
  ctx_set_grad(ctx, was);
  free(ts);
  return x;
}

Tensor *sample_cm(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond, int steps,
                  const SamplerOpts *opts, McmErr *err) {
  SamplerOpts o = opts ? *opts : sampler_opts_default();
  check_inputs("sample_cm", x_in, cond, NULL, &o);
  if (steps < 1 || steps > s->cfg.T) return mcm_err(err, "lcm: %d steps (expected 1..%d)", steps, s->cfg.T), NULL;
  int *ts = MALLOC_CHECK((size_t)steps * sizeof(int));
  if (lcm_timesteps(steps, o.original_steps, s->cfg.T, o.strength, ts, err)) return free(ts), NULL;

  bool was = ctx_set_grad(ctx, false);
  int64_t B = x_in->shape[0];
  Tensor *x = start_latent(ctx, s, x_in, ts[0], &o);
  for (int i = 0; i < steps; i++) {
    bool last = i == steps - 1;
    Tensor *eps = call_eps(ctx, fn, user, x, fill_t(ctx, B, ts[i]), cond);
    Tensor *z = last ? NULL : noise_like(ctx, x); /* fresh, once for the whole (global) latent */
    x = cm_step(ctx, s, x, eps, ts[i], last ? -1 : ts[i + 1], z, o.sigma_data, o.timestep_scaling, NULL);
    x = commit(ctx, &o, x);
    if (o.progress) o.progress(o.progress_user, i + 1, steps);
  }
  ctx_set_grad(ctx, was);
  free(ts);
  return x;
}

/* ------------------------------------------------------------------ long form */

int window_layout(int total, int window, int stride, Windows *w, McmErr *err) {
  if (total < 1 || window < 1 || stride < 1)
    return mcm_err(err, "long form: total %d, window %d and stride %d frames must all be >= 1", total, window,
                   stride);
  memset(w, 0, sizeof *w);
  if (window >= total) {
    w->total = w->window = total;
    w->n = 1;
    return 0;
  }
  if (stride > window)
    return mcm_err(err, "long form: stride %d is larger than the window %d, which would leave frames uncovered",
                   stride, window);
  int n = (total - window + stride - 1) / stride + 1; /* the regular starts, then the end-aligned one */
  if (n > WINDOWS_MAX)
    return mcm_err(err, "long form: %d frames in windows of %d every %d need %d windows (at most %d)", total, window,
                   stride, n, WINDOWS_MAX);
  w->total = total;
  w->window = window;
  w->n = n;
  for (int i = 0; i < n - 1; i++) w->start[i] = i * stride;
  w->start[n - 1] = total - window;
  return 0;
}

int fuse_mode_parse(const char *name, FuseMode *out, McmErr *err) {
  if (!strcmp(name, "average")) return *out = FUSE_AVERAGE, 0;
  if (!strcmp(name, "triangular")) return *out = FUSE_TRIANGULAR, 0;
  return mcm_err(err, "unknown window fusion \"%s\" (expected average or triangular)", name);
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* Weight of frame p in the window starting at s0 (triangular: 1 at the edges, highest in the middle). */
static double tri_weight(int p, int s0, int window) {
  int a = p - s0 + 1, b = s0 + window - p;
  return a < b ? a : b;
}

/* The segments between consecutive window edges are each covered by a fixed run of
 * windows i0 … i1; within a segment the fused value is that run's (weighted) average. */
Tensor *fuse_windows(Ctx *ctx, const Windows *w, FuseMode fuse, Tensor *const *preds) {
  MCM_CHECK(w->n >= 1, "fuse_windows: no windows");
  Tensor *p0 = preds[0];
  CHECK_SHAPE("fuse_windows", p0, -1, -1, w->window, -1);
  for (int i = 1; i < w->n; i++) CHECK_SAME_SHAPE("fuse_windows", p0, preds[i]);
  if (w->n == 1) return p0;

  int *edge = ctx_alloc_host(ctx, (size_t)(2 * w->n + 2) * sizeof(int)), ne = 0;
  edge[ne++] = 0;
  edge[ne++] = w->total;
  for (int i = 0; i < w->n; i++) edge[ne++] = w->start[i], edge[ne++] = w->start[i] + w->window;
  qsort(edge, (size_t)ne, sizeof(int), cmp_int);
  Tensor **segs = ctx_alloc_host(ctx, (size_t)ne * sizeof(Tensor *));
  int nseg = 0;
  int *cover = ctx_alloc_host(ctx, (size_t)w->n * sizeof(int));
  for (int e = 0; e + 1 < ne; e++) {
    int a = edge[e], b = edge[e + 1], len = b - a, count = 0;
    if (len == 0) continue;
    /* the segment lies between window edges, so a window covers all of it or none */
    for (int i = 0; i < w->n; i++)
      if (w->start[i] <= a && b <= w->start[i] + w->window) cover[count++] = i;
    MCM_CHECK(count > 0, "fuse_windows: frames %d..%d are covered by no window", a, b);
    double *den = NULL;
    if (fuse == FUSE_TRIANGULAR && count > 1) {
      den = ctx_alloc_host(ctx, (size_t)len * sizeof(double));
      for (int p = a; p < b; p++)
        for (int c = 0; c < count; c++) den[p - a] += tri_weight(p, w->start[cover[c]], w->window);
    }
    Tensor *sum = NULL;
    for (int c = 0; c < count; c++) {
      int s0 = w->start[cover[c]];
      Tensor *piece = op_slice(ctx, preds[cover[c]], 2, a - s0, len);
      if (den) { /* normalised weights w_i(p)/Σ_j w_j(p), in double, rounded once */
        float *wt = ctx_alloc_host(ctx, (size_t)len * sizeof(float));
        for (int p = a; p < b; p++) wt[p - a] = (float)(tri_weight(p, s0, w->window) / den[p - a]);
        Tensor *wten = tensor_new(ctx, piece->dtype, SHAPE(1, 1, len, 1));
        tensor_from_host_f32(ctx, wten, wt);
        piece = op_mul(ctx, piece, wten);
      }
      sum = sum ? op_add(ctx, sum, piece) : piece;
    }
    if (fuse == FUSE_AVERAGE && count > 1) sum = op_scale(ctx, sum, (float)(1.0 / count));
    segs[nseg++] = sum;
  }
  return nseg == 1 ? segs[0] : op_concat(ctx, segs, nseg, 2);
}

Tensor *windowed_eps(Ctx *ctx, void *user, Tensor *x, const float *t, Tensor *cond) {
  const WindowedEps *we = user;
  const Windows *L = &we->layout;
  CHECK_SHAPE("windowed_eps", x, -1, -1, L->total, -1);
  CHECK_SHAPE("windowed_eps", cond, x->shape[0], -1);
  int64_t B = x->shape[0];
  int per_call = L->n;
  if (we->max_batch > 0) per_call = we->max_batch / B < 1 ? 1 : (int)(we->max_batch / B);
  Tensor **preds = ctx_alloc_host(ctx, (size_t)L->n * sizeof(Tensor *));
  Tensor **xs = ctx_alloc_host(ctx, (size_t)L->n * sizeof(Tensor *));
  Tensor **cs = ctx_alloc_host(ctx, (size_t)L->n * sizeof(Tensor *));
  for (int c0 = 0; c0 < L->n; c0 += per_call) {
    int m = L->n - c0 < per_call ? L->n - c0 : per_call;
    float *tt = ctx_alloc_host(ctx, (size_t)(m * B) * sizeof(float));
    for (int j = 0; j < m; j++) {
      xs[j] = op_slice(ctx, x, 2, L->start[c0 + j], L->window);
      cs[j] = cond;
      memcpy(tt + j * B, t, (size_t)B * sizeof(float));
    }
    Tensor *xb = m == 1 ? xs[0] : op_concat(ctx, xs, m, 0);
    Tensor *cb = m == 1 ? cond : op_concat(ctx, cs, m, 0);
    Tensor *e = call_eps(ctx, we->fn, we->user, xb, tt, cb);
    for (int j = 0; j < m; j++) preds[c0 + j] = m == 1 ? e : op_slice(ctx, e, 0, j * B, B);
  }
  return fuse_windows(ctx, L, we->fuse, preds);
}

static int setup_long(WindowedEps *we, EpsFn fn, void *user, const Tensor *x_in, const LongForm *lf, McmErr *err) {
  CHECK_SHAPE("sample long form", x_in, -1, -1, -1, -1);
  MCM_CHECK(x_in->shape[2] <= 1 << 30, "sample long form: %lld frames", (long long)x_in->shape[2]);
  *we = (WindowedEps){.fn = fn, .user = user, .fuse = lf->fuse, .max_batch = lf->max_batch};
  if (lf->fuse != FUSE_AVERAGE && lf->fuse != FUSE_TRIANGULAR)
    return mcm_err(err, "long form: unknown fusion mode %d", (int)lf->fuse);
  return window_layout((int)x_in->shape[2], lf->window, lf->stride, &we->layout, err);
}

Tensor *sample_ddim_long(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond,
                         Tensor *uncond, float guidance_w, int steps, const LongForm *lf, const SamplerOpts *opts,
                         McmErr *err) {
  WindowedEps *we = MALLOC_CHECK(sizeof *we); /* ~16 KB of window starts: not on the stack */
  Tensor *y = NULL;
  if (!setup_long(we, fn, user, x_in, lf, err))
    y = sample_ddim(ctx, windowed_eps, we, s, x_in, cond, uncond, guidance_w, steps, opts, err);
  free(we);
  return y;
}

Tensor *sample_cm_long(Ctx *ctx, EpsFn fn, void *user, const Schedule *s, Tensor *x_in, Tensor *cond, int steps,
                       const LongForm *lf, const SamplerOpts *opts, McmErr *err) {
  WindowedEps *we = MALLOC_CHECK(sizeof *we);
  Tensor *y = NULL;
  if (!setup_long(we, fn, user, x_in, lf, err)) y = sample_cm(ctx, windowed_eps, we, s, x_in, cond, steps, opts, err);
  free(we);
  return y;
}

/* ------------------------------------------------------------------ per-sample helpers */

/* ca[b]·a + cb[b]·b per row: one op_add_scaled when every row has the same coefficients,
 * else products with (B, 1, …, 1) coefficient tensors. */
static Tensor *lin_rows(Ctx *ctx, const char *op, Tensor *a, Tensor *b, const double *ca, const double *cb) {
  CHECK_SAME_SHAPE(op, a, b);
  int64_t B = a->shape[0];
  bool same = true;
  for (int64_t i = 1; i < B; i++) same = same && (float)ca[i] == (float)ca[0] && (float)cb[i] == (float)cb[0];
  if (same) return op_add_scaled(ctx, a, b, (float)ca[0], (float)cb[0]);
  int64_t shape[MCM_MAX_DIMS] = {B, 1, 1, 1, 1};
  Tensor *ta = tensor_new(ctx, a->dtype, a->ndim, shape), *tb = tensor_new(ctx, a->dtype, a->ndim, shape);
  float *ha = ctx_alloc_host(ctx, (size_t)B * sizeof(float)), *hb = ctx_alloc_host(ctx, (size_t)B * sizeof(float));
  for (int64_t i = 0; i < B; i++) ha[i] = (float)ca[i], hb[i] = (float)cb[i];
  tensor_from_host_f32(ctx, ta, ha);
  tensor_from_host_f32(ctx, tb, hb);
  return op_add(ctx, op_mul(ctx, a, ta), op_mul(ctx, b, tb));
}

typedef void (*CoeffFn)(const Schedule *s, int t, double sd, double ts, double *ca, double *cb);

static Tensor *per_row(Ctx *ctx, const char *op, const Schedule *s, Tensor *a, Tensor *b, const int *t, CoeffFn f,
                       double sd, double tscale) {
  int64_t B = a->shape[0];
  double *ca = ctx_alloc_host(ctx, (size_t)B * sizeof(double)), *cb = ctx_alloc_host(ctx, (size_t)B * sizeof(double));
  for (int64_t i = 0; i < B; i++) {
    if (s)
      MCM_CHECK(t[i] < s->cfg.T, "%s: timestep %d of row %lld is outside [0, %d)", op, t[i], (long long)i, s->cfg.T);
    f(s, t[i], sd, tscale, &ca[i], &cb[i]);
  }
  return lin_rows(ctx, op, a, b, ca, cb);
}

static void co_add_noise(const Schedule *s, int t, double sd, double ts, double *ca, double *cb) {
  MCM_CHECK(t >= 0, "diffusion_add_noise: timestep %d", t);
  add_noise_coeffs(s, t, ca, cb);
}
static void co_x0(const Schedule *s, int t, double sd, double ts, double *ca, double *cb) {
  MCM_CHECK(t >= 0, "diffusion_x0_from_eps: timestep %d", t);
  x0_from_eps_coeffs(s, t, ca, cb);
}
static void co_ddim_to(const Schedule *s, int t, double sd, double ts, double *ca, double *cb) {
  double ab = schedule_alpha_bar(s, t);
  *ca = sqrt(ab);
  *cb = sqrt(1.0 - ab);
}
static void co_boundary(const Schedule *s, int t, double sd, double ts, double *ca, double *cb) {
  MCM_CHECK(t >= 0, "diffusion_cm_boundary: timestep %d", t);
  lcm_boundary_scalings(t, sd, ts, ca, cb);
}

Tensor *diffusion_add_noise(Ctx *ctx, const Schedule *s, Tensor *x0, Tensor *eps, const int *t) {
  return per_row(ctx, "diffusion_add_noise", s, x0, eps, t, co_add_noise, 0, 0);
}

Tensor *diffusion_x0_from_eps(Ctx *ctx, const Schedule *s, Tensor *x, Tensor *eps, const int *t) {
  return per_row(ctx, "diffusion_x0_from_eps", s, x, eps, t, co_x0, 0, 0);
}

Tensor *diffusion_ddim_to(Ctx *ctx, const Schedule *s, Tensor *x0, Tensor *eps, const int *t_prev) {
  return per_row(ctx, "diffusion_ddim_to", s, x0, eps, t_prev, co_ddim_to, 0, 0);
}

Tensor *diffusion_cm_boundary(Ctx *ctx, Tensor *x, Tensor *x0, const int *t, double sigma_data,
                              double timestep_scaling) {
  return per_row(ctx, "diffusion_cm_boundary", NULL, x, x0, t, co_boundary, sigma_data, timestep_scaling);
}
