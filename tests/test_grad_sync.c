/* kernels/grad_sync and the tape hook, on one process (the world-1 path runs the same plan
 * and hook; its all-reduce packs at start and unpacks at finish). The readiness order, the
 * bucket boundaries and the node after which each bucket starts are worked out by hand for a
 * tape whose nodes are known one by one; the gradients after finish are compared bit for bit
 * with a backward without the synchroniser, on that tape and on a small UNet (where a bucket
 * started before its gradients were final would come back with the early value). The
 * 2-rank runs under mpirun are in tests/test_train_dp.c. */
#include <string.h>

#include "gradcheck.h"
#include "kernels/grad_sync.h"
#include "models/unet.h"
#include "test.h"

static Comm *single_comm(Ctx *ctx) {
  const char *vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "RANK", "WORLD_SIZE", "SLURM_PROCID"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
  McmErr err;
  Comm *c = comm_init(ctx, &err);
  ASSERT(c, "comm_init: %s", err.msg);
  return c;
}

/* ------------------------------------------------------------------ the tape hook */

typedef struct HookLog {
  int nodes[16], n;
  float d_grad_at[16]; /* d's gradient element 0 when the hook ran */
  Tensor *d;
} HookLog;

static void log_node(Ctx *ctx, int node, void *user) {
  HookLog *l = user;
  l->d_grad_at[l->n] = ((float *)l->d->grad->data)[0];
  l->nodes[l->n++] = node;
}

/* ------------------------------------------------------------------ a hand-built tape */

/* Parameters in list order; every one of 6 elements but the unused one (3). */
enum { PA, PB, PC, PD, PU, PE, NP };
static const char *const pname[NP] = {"a", "b", "c", "d", "unused", "e"};

typedef struct Toy {
  Tensor *p[NP], *x;
} Toy;

static Toy toy_make(Ctx *ctx) {
  Toy t;
  for (int i = 0; i < NP; i++) {
    t.p[i] = param_new(ctx, pname[i], DT_F32, SHAPE(i == PU ? 3 : 6), true);
    fill_uniform(ctx, t.p[i], 10 + (uint64_t)i, -1.0f, 1.0f);
  }
  t.x = tensor_new_persistent(ctx, DT_F32, SHAPE(6));
  fill_uniform(ctx, t.x, 99, -1.0f, 1.0f);
  return t;
}

/* loss = Σ ((x·a + b)·c + e)·b·d, one tape node per line:
 *   node 0 mul(x, a)   1 add(·, b)   2 mul(·, c)   3 add(·, e)   4 mul(·, b)   5 mul(·, d)   6 sum
 * Ready nodes (the earliest use): a 0, b 1, c 2, e 3, d 5, unused none. */
static Tensor *toy_loss(Ctx *ctx, Toy *t) {
  Tensor *y = op_mul(ctx, t->x, t->p[PA]);
  y = op_add(ctx, y, t->p[PB]);
  y = op_mul(ctx, y, t->p[PC]);
  y = op_add(ctx, y, t->p[PE]);
  y = op_mul(ctx, y, t->p[PB]);
  y = op_mul(ctx, y, t->p[PD]);
  Tensor *loss = op_sum(ctx, y);
  ASSERT(ctx->tape.n == 7, "the toy tape has %d nodes, the test's reasoning needs one per op (7)", ctx->tape.n);
  return loss;
}

static void grads_to_host(Ctx *ctx, Tensor *const *p, int n, float *out) {
  for (int i = 0; i < n; i++) {
    tensor_to_host_f32(ctx, p[i]->grad, out);
    out += p[i]->numel;
  }
}

TEST(tape_hook_runs_after_each_node_in_backward_order) {
  Ctx *ctx = ctx_create_cpu(0);
  Toy t = toy_make(ctx);
  params_zero_grad(ctx, t.p, NP);
  Tensor *loss = toy_loss(ctx, &t);
  HookLog l = {.d = t.p[PD]};
  tape_set_hook(ctx, log_node, &l);
  backward(ctx, loss);
  tape_set_hook(ctx, NULL, NULL);
  ASSERT(l.n == 7, "the hook ran %d times for 7 nodes", l.n);
  for (int i = 0; i < 7; i++) EXPECT(l.nodes[i] == 6 - i, "call %d: node %d, want %d", i, l.nodes[i], 6 - i);
  /* d's gradient arrives with node 5 (d's only use) and never changes after */
  float dg[6];
  tensor_to_host_f32(ctx, t.p[PD]->grad, dg);
  const float final_d = dg[0];
  EXPECT(final_d != 0, "d's gradient is zero");
  EXPECT(l.d_grad_at[0] == 0, "after node 6 d's gradient is %g already", l.d_grad_at[0]);
  for (int i = 1; i < 7; i++)
    EXPECT(l.d_grad_at[i] == final_d, "after node %d d's gradient is %g, final %g", l.nodes[i], l.d_grad_at[i],
           final_d);
  /* removed: a second backward calls nothing */
  l.n = 0;
  backward(ctx, toy_loss(ctx, &t));
  EXPECT(l.n == 0, "a removed hook ran %d times", l.n);
  ctx_destroy(ctx);
}

/* Runs the toy step with a GradSync of cap `bytes`; grads (Σ numel) into out. */
static GradSync *toy_synced(Ctx *ctx, Comm *comm, Toy *t, int64_t bytes, float *out) {
  GradSync *gs = grad_sync_create(ctx, comm, t->p, NP, bytes);
  params_zero_grad(ctx, t->p, NP);
  Tensor *loss = toy_loss(ctx, t);
  grad_sync_begin(gs, ctx);
  backward(ctx, loss);
  grad_sync_finish(gs, ctx);
  EXPECT(ctx->tape_hook == NULL, "finish left the tape hook set");
  grads_to_host(ctx, t->p, NP, out);
  ctx_step_reset(ctx);
  return gs;
}

typedef struct WantBucket {
  int params[NP], n, elems, ready, started_after;
} WantBucket;

static void expect_plan(GradSync *gs, const WantBucket *want, int n_want, int overlapped) {
  int n;
  const GradSyncBucket *b = grad_sync_buckets(gs, &n);
  ASSERT(n == n_want, "%d buckets, want %d", n, n_want);
  for (int k = 0; k < n; k++) {
    EXPECT(b[k].n_params == want[k].n, "bucket %d: %d parameters, want %d", k, b[k].n_params, want[k].n);
    for (int j = 0; j < b[k].n_params && j < want[k].n; j++)
      EXPECT(b[k].params[j] == want[k].params[j], "bucket %d member %d: %s, want %s", k, j, pname[b[k].params[j]],
             pname[want[k].params[j]]);
    EXPECT(b[k].elems == want[k].elems, "bucket %d: %lld elements, want %d", k, (long long)b[k].elems, want[k].elems);
    EXPECT(b[k].ready_node == want[k].ready, "bucket %d: ready after node %d, want %d", k, b[k].ready_node,
           want[k].ready);
    EXPECT(b[k].started_after == want[k].started_after, "bucket %d: started after node %d, want %d", k,
           b[k].started_after, want[k].started_after);
  }
  EXPECT(grad_sync_overlapped(gs) == overlapped, "%d buckets overlapped, want %d", grad_sync_overlapped(gs), overlapped);
}

TEST(grad_sync_readiness_order_and_bucket_boundaries) {
  Ctx *ctx = ctx_create_cpu(0);
  Comm *comm = single_comm(ctx);
  Toy t = toy_make(ctx);
  float ref[33], got[33];
  params_zero_grad(ctx, t.p, NP);
  backward(ctx, toy_loss(ctx, &t));
  grads_to_host(ctx, t.p, NP, ref);
  ctx_step_reset(ctx);

  /* Readiness order d (5), e (3), c (2), b (1), a (0), unused. A 40-byte cap (10 elements)
   * holds one 6-element tensor: a bucket each, but a (6) and unused (3) share the last. A
   * bucket starts after the node that finishes it: d's after node 5 with nodes 0..4 still to
   * run, and so on; the last one after node 0, when backward is over (not overlapped). */
  GradSync *gs = toy_synced(ctx, comm, &t, 40, got);
  WantBucket want10[] = {{{PD}, 1, 6, 5, 5},
                         {{PE}, 1, 6, 3, 3},
                         {{PC}, 1, 6, 2, 2},
                         {{PB}, 1, 6, 1, 1},
                         {{PA, PU}, 2, 9, -1, 0}};
  expect_plan(gs, want10, 5, 4);
  EXPECT(!memcmp(got, ref, sizeof ref), "gradients after finish (40-byte buckets) differ from a plain backward");
  grad_sync_destroy(gs);

  /* 48 bytes (12 elements): pairs in readiness order; {c, b} waits for b (node 1). */
  gs = toy_synced(ctx, comm, &t, 48, got);
  WantBucket want12[] = {{{PD, PE}, 2, 12, 3, 3}, {{PC, PB}, 2, 12, 1, 1}, {{PA, PU}, 2, 9, -1, 0}};
  expect_plan(gs, want12, 3, 2);
  EXPECT(!memcmp(got, ref, sizeof ref), "gradients after finish (48-byte buckets) differ from a plain backward");
  grad_sync_destroy(gs);

  /* A cap below one tensor: every tensor alone, the unused one last. */
  gs = toy_synced(ctx, comm, &t, 4, got);
  WantBucket want1[] = {{{PD}, 1, 6, 5, 5}, {{PE}, 1, 6, 3, 3}, {{PC}, 1, 6, 2, 2},
                        {{PB}, 1, 6, 1, 1}, {{PA}, 1, 6, 0, 0}, {{PU}, 1, 3, -1, 0}};
  expect_plan(gs, want1, 6, 4);
  EXPECT(!memcmp(got, ref, sizeof ref), "gradients after finish (4-byte buckets) differ from a plain backward");
  grad_sync_destroy(gs);

  /* One bucket for all: it can only start at the end. */
  gs = toy_synced(ctx, comm, &t, 1 << 20, got);
  WantBucket want_all[] = {{{PD, PE, PC, PB, PA, PU}, 6, 33, -1, 0}};
  expect_plan(gs, want_all, 1, 0);
  EXPECT(!memcmp(got, ref, sizeof ref), "gradients after finish (one bucket) differ from a plain backward");
  grad_sync_destroy(gs);

  /* 0: no buckets, finish is comm_allreduce_mean after backward. */
  gs = toy_synced(ctx, comm, &t, 0, got);
  int n;
  grad_sync_buckets(gs, &n);
  EXPECT(n == 0, "bucket_bytes 0 made %d buckets", n);
  EXPECT(!memcmp(got, ref, sizeof ref), "gradients with bucket_bytes 0 differ from a plain backward");
  grad_sync_destroy(gs);

  /* finish without begin: list order, all started by finish. */
  gs = grad_sync_create(ctx, comm, t.p, NP, 48);
  params_zero_grad(ctx, t.p, NP);
  backward(ctx, toy_loss(ctx, &t));
  grad_sync_finish(gs, ctx);
  grads_to_host(ctx, t.p, NP, got);
  WantBucket want_list[] = {{{PA, PB}, 2, 12, -1, -1}, {{PC, PD}, 2, 12, -1, -1}, {{PU, PE}, 2, 9, -1, -1}};
  expect_plan(gs, want_list, 3, 0);
  EXPECT(!memcmp(got, ref, sizeof ref), "gradients after finish without begin differ from a plain backward");
  grad_sync_destroy(gs);
  comm_finalize(comm);
  ctx_destroy(ctx);
}

/* The world-1 engine returns what each tensor held at start: a bucket started before its
 * gradients were final would undo the later accumulation, which the comparisons above and
 * below would see. */
TEST(comm_async_single_rank_returns_the_values_at_start) {
  Ctx *ctx = ctx_create_cpu(0);
  Comm *comm = single_comm(ctx);
  CommAsync *a = comm_async_create(ctx, comm, 10);
  Tensor *t[2] = {tensor_new_persistent(ctx, DT_F32, SHAPE(2, 2)), tensor_new_persistent(ctx, DT_F32, SHAPE(3))};
  Tensor *u = tensor_new_persistent(ctx, DT_F32, SHAPE(3));
  float v0[4] = {1, 2, 3, 4}, v1[3] = {5, 6, 7}, w[3] = {-1, -2, -3}, out[4];
  tensor_from_host_f32(ctx, t[0], v0), tensor_from_host_f32(ctx, t[1], v1), tensor_from_host_f32(ctx, u, w);
  comm_async_start(a, ctx, t, 2, 0);
  comm_async_start(a, ctx, &u, 1, 7); /* a second window */
  tensor_fill(ctx, t[0], 9.0f), tensor_fill(ctx, t[1], 9.0f), tensor_fill(ctx, u, 9.0f);
  comm_async_poll(a);
  comm_async_finish(a, ctx);
  tensor_to_host_f32(ctx, t[0], out);
  EXPECT(!memcmp(out, v0, sizeof v0), "first tensor: %g %g %g %g", out[0], out[1], out[2], out[3]);
  tensor_to_host_f32(ctx, t[1], out);
  EXPECT(!memcmp(out, v1, sizeof v1), "second tensor: %g %g %g", out[0], out[1], out[2]);
  tensor_to_host_f32(ctx, u, out);
  EXPECT(!memcmp(out, w, sizeof w), "second window: %g %g %g", out[0], out[1], out[2]);
  comm_async_destroy(a);
  comm_finalize(comm);
  ctx_destroy(ctx);
}

TEST_EXIT_MSG(comm_async_window_outside_staging_is_fatal, 1, "outside the 4-element staging") {
  Ctx *ctx = ctx_create_cpu(0);
  Comm *comm = single_comm(ctx);
  CommAsync *a = comm_async_create(ctx, comm, 4);
  Tensor *t = tensor_new_persistent(ctx, DT_F32, SHAPE(3));
  comm_async_start(a, ctx, &t, 1, 2);
}

TEST_EXIT_MSG(grad_sync_begin_twice_is_fatal, 1, "the previous begin has not been finished") {
  Ctx *ctx = ctx_create_cpu(0);
  Comm *comm = single_comm(ctx);
  Toy t = toy_make(ctx);
  GradSync *gs = grad_sync_create(ctx, comm, t.p, NP, 40);
  toy_loss(ctx, &t);
  grad_sync_begin(gs, ctx);
  grad_sync_begin(gs, ctx);
}

TEST_EXIT_MSG(grad_sync_tape_changed_after_begin_is_fatal, 1, "grad_sync_begin planned 7") {
  Ctx *ctx = ctx_create_cpu(0);
  Comm *comm = single_comm(ctx);
  Toy t = toy_make(ctx);
  GradSync *gs = grad_sync_create(ctx, comm, t.p, NP, 40);
  Tensor *loss = toy_loss(ctx, &t);
  grad_sync_begin(gs, ctx);
  backward(ctx, op_scale(ctx, loss, 2.0f)); /* one more node than planned */
}

/* ------------------------------------------------------------------ a real network */

static UNetConfig tiny_unet(void) {
  UNetConfig u = unet_config_musicldm();
  u.in_channels = u.out_channels = 2;
  u.levels = 2;
  u.block_out_channels[0] = 16, u.block_out_channels[1] = 32;
  u.attention[0] = false, u.attention[1] = true;
  u.layers_per_block = 1;
  u.norm_groups = 8;
  u.num_head_channels = 16;
  u.time_proj_dim = 16, u.time_embed_dim = 64;
  u.class_embed_in = 16;
  return u;
}

static Tensor *unet_loss(Ctx *ctx, Unet *net, Tensor *x, Tensor *tt, Tensor *c, Tensor *target) {
  return op_mse(ctx, unet_forward(ctx, net, x, tt, c), target);
}

/* Every UNet op's backward accumulates only into its node's inputs (what readiness relies
 * on): with buckets of 4 KB (dozens, most started mid-backward) the gradients after finish
 * are those of a plain backward, bit for bit. */
TEST(grad_sync_unet_gradients_match_plain_backward) {
  Ctx *ctx = ctx_create_cpu(5);
  Comm *comm = single_comm(ctx);
  UNetConfig u = tiny_unet();
  ParamSet ps;
  params_init(&ps, "");
  Unet *net = unet_create(ctx, &u, &ps);
  unet_init_random(ctx, net);
  for (int i = 0; i < ps.n; i++) ASSERT(ps.p[i]->requires_grad, "UNet parameter %s is frozen", ps.p[i]->name);
  Tensor *x = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 2, 8, 8));
  Tensor *target = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 2, 8, 8));
  Tensor *c = tensor_new_persistent(ctx, DT_F32, SHAPE(2, 16));
  Tensor *tt = tensor_new_persistent(ctx, DT_F32, SHAPE(2));
  fill_uniform(ctx, x, 1, -1, 1), fill_uniform(ctx, target, 2, -1, 1), fill_uniform(ctx, c, 3, -1, 1);
  float steps[2] = {17, 640};
  tensor_from_host_f32(ctx, tt, steps);
  int64_t total = 0;
  for (int i = 0; i < ps.n; i++) total += ps.p[i]->numel;
  float *ref = malloc((size_t)total * sizeof *ref), *got = malloc((size_t)total * sizeof *got);

  params_zero_grad(ctx, ps.p, ps.n);
  backward(ctx, unet_loss(ctx, net, x, tt, c, target));
  grads_to_host(ctx, ps.p, ps.n, ref);
  ctx_step_reset(ctx);

  GradSync *gs = grad_sync_create(ctx, comm, ps.p, ps.n, 4096);
  params_zero_grad(ctx, ps.p, ps.n);
  Tensor *loss = unet_loss(ctx, net, x, tt, c, target);
  const int nodes = ctx->tape.n;
  grad_sync_begin(gs, ctx);
  backward(ctx, loss);
  grad_sync_finish(gs, ctx);
  grads_to_host(ctx, ps.p, ps.n, got);
  int nb;
  const GradSyncBucket *b = grad_sync_buckets(gs, &nb);
  int members = 0, late = 0;
  int64_t elems = 0;
  for (int k = 0; k < nb; k++) {
    members += b[k].n_params, elems += b[k].elems;
    EXPECT(b[k].elems <= 1024 || b[k].n_params == 1, "bucket %d: %lld elements over the cap with %d members", k,
           (long long)b[k].elems, b[k].n_params);
    EXPECT(k == 0 || b[k].ready_node <= b[k - 1].ready_node, "bucket %d is ready before bucket %d", k, k - 1);
    EXPECT(b[k].started_after == (b[k].ready_node > 0 ? b[k].ready_node : 0), "bucket %d ready after %d, started after %d",
           k, b[k].ready_node, b[k].started_after);
    late += b[k].started_after == 0;
  }
  printf("  %d parameters, %d tape nodes: %d buckets, %d started while backward nodes remained\n", ps.n, nodes, nb,
         grad_sync_overlapped(gs));
  EXPECT(members == ps.n && elems == total, "the buckets hold %d tensors / %lld elements of %d / %lld", members,
         (long long)elems, ps.n, (long long)total);
  EXPECT(nb >= 20 && grad_sync_overlapped(gs) >= nb - late && grad_sync_overlapped(gs) >= nb / 2,
         "%d buckets, %d overlapped", nb, grad_sync_overlapped(gs));
  int64_t bad = 0;
  for (int64_t i = 0; i < total; i++) bad += memcmp(&ref[i], &got[i], sizeof *ref) != 0;
  EXPECT(bad == 0, "%lld of %lld gradient elements differ from a plain backward", (long long)bad, (long long)total);
  grad_sync_destroy(gs);
  free(ref), free(got);
  params_free(&ps);
  comm_finalize(comm);
  ctx_destroy(ctx);
}
