/* Gradient averaging for data parallelism, in buckets started during backward.
 *
 * Averaging every gradient after backward leaves the network idle while backward computes
 * and the GPU idle while the all-reduce runs. A GradSync starts the all-reduce of a group of
 * gradients as soon as backward can no longer change them, so most of the traffic hides
 * behind the rest of backward (PyTorch DDP's buckets, driven by mcm's tape).
 *
 *   GradSync *gs = grad_sync_create(ctx, comm, params, n, 25 << 20);
 *   per step:  ...forward (records the tape)...
 *              grad_sync_begin(gs, ctx);   plan the buckets from the tape, hook into backward
 *              backward(ctx, loss);        buckets start as their gradients become final
 *              grad_sync_finish(gs, ctx);  wait; every gradient holds the mean over ranks
 *
 * When a gradient is final. backward runs the tape's nodes from the last to the first, and
 * a node accumulates only into its own inputs (tape.h). So a parameter's gradient is final
 * once the earliest node that takes the parameter as an input has run: its ready node. A
 * parameter that no node takes (unused this step) keeps the gradient it has (zero after the
 * optimizer's zeroing) and is ready from the start; it is still reduced, in the last bucket,
 * so that every rank's list, and its parameters, stay the same.
 *
 * Buckets. The parameters sorted by readiness (ready node descending, i.e. the order
 * backward finishes them; unused ones last; ties in list order) are cut greedily into
 * buckets of at most bucket_bytes of fp32 (a larger tensor makes a bucket alone). A bucket
 * starts (comm.h's comm_async_start: packed into its own window of a staging buffer, then a
 * non-blocking all-reduce) from the tape hook right after the node that makes its last
 * member ready, and the buckets that only the end of backward completes start after node 0.
 * Between nodes the hook lets MPI progress (comm_async_poll). grad_sync_finish waits for all
 * and writes the means back.
 *
 * Numbers. Each element's mean is computed by the same operation as comm_allreduce_mean
 * (MPI: the sum, then ÷ world; NCCL: ncclAvg), so with 2 ranks the result is bit-identical
 * to the all-reduce after backward (a + b is commutative). With more ranks the summation
 * order is the library's, as comm.h says, and may change with the message sizes.
 *
 * Every rank must make the same plan: the collectives are matched by order and size. The
 * plan depends only on the tape's structure, which the same code on batches of the same
 * shape reproduces; a model that branched on data would break that, so begin compares a
 * digest of the plan across ranks (one 32-byte all-reduce; on a GPU it waits for the
 * forward) and stops with a clear message on a mismatch rather than hang.
 *
 * Other uses:
 *  - finish without begin: the whole list in list-order buckets after backward (not
 *    overlapped): for gradients that several backward passes build (the heads' hinge + R1).
 *  - bucket_bytes 0: finish is one comm_allreduce_mean of every gradient after backward (the
 *    behaviour before buckets); begin does nothing.
 *  - world 1 runs the same plan and hook; its "all-reduce" packs at start and unpacks at
 *    finish, so a bucket started before its gradients were final shows as a changed result.
 *
 * Rules. The gradients of the list must not change between a bucket's start and finish (no
 * second backward into them before finish); no other collective on the Comm between begin
 * and finish (comm.h). The staging buffer, one fp32 copy of every gradient, is the context's
 * persistent memory (on the GPU: device memory the size of the gradients).
 */
#pragma once
#include "comm.h"
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GradSync GradSync;

/* One bucket of the current plan (for logs and tests). */
typedef struct GradSyncBucket {
  const int *params;  /* (n_params) indices into the parameter list, in readiness order */
  int n_params;
  int64_t elems;
  int ready_node;     /* tape node after which every member is final; -1: unused members only */
  int started_after;  /* node after which it started (nodes 0..started_after-1 still had to run);
                         -1: started by grad_sync_finish; -2: not started */
} GradSyncBucket;

/* params: fp32 parameters with gradient buffers on ctx's device (the pointer array is
 * copied), the same list on every rank (checked: count, sizes and their order, one small
 * all-reduce). bucket_bytes: the bucket size cap; 0 = one all-reduce after backward. Fatal on
 * a broken invariant (no gradient buffer, another dtype, lists that differ between ranks). */
GradSync *grad_sync_create(Ctx *ctx, Comm *comm, Tensor *const *params, int n, int64_t bucket_bytes);
/* Waits for buckets still in flight. NULL is fine. */
void grad_sync_destroy(GradSync *gs);

/* Plans the buckets from ctx's tape as recorded now and sets the tape hook; the next
 * backward must run that tape. Fatal when a begin is pending or another hook is set. */
void grad_sync_begin(GradSync *gs, Ctx *ctx);
/* Starts the buckets not started yet (all of them without a begin), waits for every one and
 * leaves the mean over ranks in each parameter's gradient; removes the hook. */
void grad_sync_finish(GradSync *gs, Ctx *ctx);

/* The buckets of the last plan (made by begin, or by a finish without begin), readable until
 * the next plan; *n receives the count (0 with bucket_bytes 0). */
const GradSyncBucket *grad_sync_buckets(const GradSync *gs, int *n);
/* Of the last finished plan: buckets started while backward nodes remained. */
int grad_sync_overlapped(const GradSync *gs);

#ifdef __cplusplus
}
#endif
