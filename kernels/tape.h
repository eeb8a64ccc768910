/* The autograd tape.
 *
 * In grad mode (ctx->grad_enabled), an op whose inputs include a tensor that requires a
 * gradient records one TapeNode: its inputs, its output, a backward function and whatever
 * it saved. backward() walks the nodes in reverse and each node's backward ACCUMULATES
 * into its inputs' .grad (allocating a zeroed one on first use; parameters keep a
 * persistent one that the optimizer zeroes). A frozen parameter (requires_grad false) gets
 * no gradient, but gradients still flow through the op to its other inputs. Node memory
 * lives in the context's host arena and is gone after ctx_step_reset().
 */
#pragma once
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TAPE_MAX_IN 6

typedef void (*BackwardFn)(Ctx *ctx, TapeNode *node);

struct TapeNode {
  const char *op;           /* for messages and debugging */
  BackwardFn backward;
  Tensor *out;              /* out->grad holds dL/d(out) when backward runs */
  Tensor *in[TAPE_MAX_IN];  /* NULL entries allowed (an optional bias) */
  int n_in;
  void *saved;              /* op-specific, zeroed, in the host arena */
};

/* True when an op over these inputs must record itself. */
bool tape_wants(const Ctx *ctx, int n_in, Tensor *const *in);
/* Records a node (call only when tape_wants); marks out as requiring a gradient and
 * returns the node with `saved_bytes` of zeroed space at node->saved. */
TapeNode *tape_record(Ctx *ctx, const char *op, BackwardFn fn, Tensor *out, int n_in, Tensor *const *in,
                      size_t saved_bytes);
void tape_clear(Ctx *ctx);

/* Seeds d(loss)/d(loss) = 1 (loss must have one element) and runs the tape backwards.
 * The tape is consumed: nodes are cleared afterwards. */
void backward(Ctx *ctx, Tensor *loss);
/* Same, seeding out's gradient with grad_out (same shape). */
void backward_from(Ctx *ctx, Tensor *out, const Tensor *grad_out);

/* A nested backward: a second loss whose graph was recorded after tape_mark() (on inputs
 * that are detached from what came before) can be differentiated while the older nodes stay
 * on the tape for a later backward(). HiFi-GAN's step needs it: the generator's forward is
 * recorded, the discriminators take their step on the detached output, then the generator
 * loss goes back through both.
 *   int mark = tape_mark(ctx); ...D loss...; backward_since(ctx, d_loss, mark);
 * backward_since runs only the nodes recorded since the mark (newest first) and then drops
 * them; the nodes before the mark are untouched. A node after the mark that feeds a tensor
 * recorded before it would leave that gradient unpropagated, so the caller detaches. */
int tape_mark(const Ctx *ctx);
void backward_since(Ctx *ctx, Tensor *loss, int mark);

/* A hook that backward calls after node `node` of the tape has run (or was passed over
 * because no gradient reached it). Nodes run from n−1 down to 0, and a node accumulates only
 * into its own inputs, so after the hook sees `node` no gradient of a tensor whose earliest
 * use is `node` changes again (kernels/grad_sync.h starts all-reduces from here). One hook
 * per context; NULL removes it. Unset, backward pays one pointer test per node. */
typedef void (*TapeHook)(Ctx *ctx, int node, void *user);
void tape_set_hook(Ctx *ctx, TapeHook fn, void *user);

/* t's gradient buffer, created zero-filled on first use (same dtype and device as t). */
Tensor *grad_of(Ctx *ctx, Tensor *t);

/* Switches grad mode and returns the previous setting:
 *   bool was = ctx_set_grad(ctx, false); ...teacher forward...; ctx_set_grad(ctx, was); */
bool ctx_set_grad(Ctx *ctx, bool enabled);

/* A header sharing t's data that never requires a gradient (stops gradient flow). */
Tensor *tensor_detach(Ctx *ctx, const Tensor *t);

/* Zeroes the gradients of the given parameters. */
void params_zero_grad(Ctx *ctx, Tensor *const *params, int n);

#ifdef __cplusplus
}
#endif
