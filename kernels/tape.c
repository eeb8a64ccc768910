/* The autograd tape (see tape.h). */
#include "tape.h"

bool tape_wants(const Ctx *ctx, int n_in, Tensor *const *in) {
  if (!ctx->grad_enabled) return false;
  for (int i = 0; i < n_in; i++)
    if (in[i] && in[i]->requires_grad) return true;
  return false;
}

TapeNode *tape_record(Ctx *ctx, const char *op, BackwardFn fn, Tensor *out, int n_in, Tensor *const *in,
                      size_t saved_bytes) {
  MCM_CHECK(n_in <= TAPE_MAX_IN, "%s: %d inputs, the tape takes at most %d", op, n_in, TAPE_MAX_IN);
  MCM_CHECK(!out->is_param, "%s: an op output cannot be a parameter", op);
  TapeNode *node = ctx_alloc_host(ctx, sizeof *node);
  node->op = op;
  node->backward = fn;
  node->out = out;
  node->n_in = n_in;
  for (int i = 0; i < n_in; i++) node->in[i] = in[i];
  node->saved = saved_bytes ? ctx_alloc_host(ctx, saved_bytes) : NULL;
  out->requires_grad = true;
  Tape *tape = &ctx->tape;
  if (tape->n == tape->cap) {
    tape->cap = tape->cap ? 2 * tape->cap : 256;
    tape->nodes = REALLOC_CHECK(tape->nodes, (size_t)tape->cap * sizeof *tape->nodes);
  }
  tape->nodes[tape->n++] = node;
  return node;
}

void tape_clear(Ctx *ctx) { ctx->tape.n = 0; }

Tensor *grad_of(Ctx *ctx, Tensor *t) {
  if (!t->grad) {
    MCM_CHECK(!t->is_param, "parameter '%s' is frozen or has no gradient buffer", t->name);
    /* A persistent tensor's gradient must outlive the step too (the caller zeroes it). */
    Tensor *g = t->persistent ? tensor_new_persistent(ctx, t->dtype, t->ndim, t->shape)
                              : tensor_new(ctx, t->dtype, t->ndim, t->shape);
    tensor_fill(ctx, g, 0.0f);
    t->grad = g;
  }
  return t->grad;
}

/* Runs nodes [first, n) newest first, then drops them. */
static void run_backward(Ctx *ctx, int first) {
  bool was = ctx_set_grad(ctx, false); /* backward ops must not record themselves */
  Tape *tape = &ctx->tape;
  for (int i = tape->n - 1; i >= first; i--) {
    TapeNode *node = tape->nodes[i];
    if (node->out->grad) node->backward(ctx, node); /* no gradient reached it: nothing to do */
    if (ctx->tape_hook) ctx->tape_hook(ctx, i, ctx->tape_hook_user);
  }
  tape->n = first;
  ctx_set_grad(ctx, was);
}

static void seed_loss(Ctx *ctx, const char *fn, Tensor *loss) {
  MCM_CHECK(loss->numel == 1, "%s: the loss must have one element, it has shape %s", fn, TENSOR_SHAPE_STR(loss));
  MCM_CHECK(loss->requires_grad, "%s: the loss does not depend on anything that requires a gradient", fn);
  tensor_fill(ctx, grad_of(ctx, loss), 1.0f);
}

void backward(Ctx *ctx, Tensor *loss) {
  seed_loss(ctx, "backward", loss);
  run_backward(ctx, 0);
}

void backward_from(Ctx *ctx, Tensor *out, const Tensor *grad_out) {
  CHECK_SAME_SHAPE("backward_from", out, grad_out);
  MCM_CHECK(out->requires_grad, "backward_from: the output does not require a gradient");
  tensor_copy(ctx, grad_of(ctx, out), grad_out);
  run_backward(ctx, 0);
}

int tape_mark(const Ctx *ctx) { return ctx->tape.n; }

void backward_since(Ctx *ctx, Tensor *loss, int mark) {
  MCM_CHECK(mark >= 0 && mark <= ctx->tape.n, "backward_since: mark %d, the tape holds %d nodes (a mark from before "
            "another backward?)", mark, ctx->tape.n);
  seed_loss(ctx, "backward_since", loss);
  run_backward(ctx, mark);
}

void tape_set_hook(Ctx *ctx, TapeHook fn, void *user) {
  ctx->tape_hook = fn;
  ctx->tape_hook_user = fn ? user : NULL;
}

bool ctx_set_grad(Ctx *ctx, bool enabled) {
  bool was = ctx->grad_enabled;
  ctx->grad_enabled = enabled;
  return was;
}

Tensor *tensor_detach(Ctx *ctx, const Tensor *t) {
  Tensor *d = ctx_alloc_host(ctx, sizeof *d);
  *d = *t;
  d->grad = NULL;
  d->requires_grad = false;
  d->is_param = false;
  d->persistent = false;
  return d;
}

void params_zero_grad(Ctx *ctx, Tensor *const *params, int n) {
  for (int i = 0; i < n; i++)
    if (params[i]->grad) tensor_fill(ctx, params[i]->grad, 0.0f);
}
