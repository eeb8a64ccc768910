/* Gradient averaging in buckets started during backward (see grad_sync.h): the plan from
 * the tape, the tape hook that starts buckets, and finish. */
#include "grad_sync.h"

struct GradSync {
  Comm *comm;
  CommAsync *async;   /* NULL with bucket_bytes 0 */
  Tensor **params;    /* (n) */
  int n;
  int64_t cap_elems;  /* bucket cap in fp32 elements */
  int64_t total;      /* Σ numel */
  /* parameter pointer -> list index, open addressing (for the tape scan) */
  Tensor **key;       /* (slots) NULL: empty */
  int *val;
  int slots;          /* a power of two, >= 2 n */
  /* the plan */
  int *ready;         /* (n) per parameter: its ready node, -1 when no node takes it */
  int *order;         /* (n) parameter indices in readiness order */
  GradSyncBucket *buckets; /* (n_buckets <= n) */
  int64_t *bucket_off;     /* (n) window of each bucket in the staging buffer */
  int n_buckets;
  int next;           /* first bucket not started */
  int tape_n;         /* length of the tape planned by begin; 0: no begin pending */
  bool seen_node;     /* the hook has run for this plan */
  int overlapped;     /* of the last finished plan */
  Tensor **scratch;   /* (n) one bucket's gradients */
};

/* ------------------------------------------------------------------ parameter lookup */

static uint32_t ptr_hash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return (uint32_t)x;
}

static void index_params(GradSync *gs) {
  gs->slots = 16;
  while (gs->slots < 2 * gs->n) gs->slots *= 2;
  gs->key = CALLOC_CHECK((size_t)gs->slots, sizeof *gs->key);
  gs->val = CALLOC_CHECK((size_t)gs->slots, sizeof *gs->val);
  for (int i = 0; i < gs->n; i++) {
    uint32_t h = ptr_hash(gs->params[i]) & (uint32_t)(gs->slots - 1);
    while (gs->key[h]) {
      MCM_CHECK(gs->key[h] != gs->params[i], "grad_sync: parameter '%s' is in the list twice", gs->params[i]->name);
      h = (h + 1) & (uint32_t)(gs->slots - 1);
    }
    gs->key[h] = gs->params[i], gs->val[h] = i;
  }
}

static int param_index(const GradSync *gs, const Tensor *t) {
  uint32_t h = ptr_hash(t) & (uint32_t)(gs->slots - 1);
  for (; gs->key[h]; h = (h + 1) & (uint32_t)(gs->slots - 1))
    if (gs->key[h] == t) return gs->val[h];
  return -1;
}

/* ------------------------------------------------------------------ create / destroy */

/* FNV-1a over 64-bit words, kept to 62 bits so that comm_same_on_all can negate it. */
static uint64_t digest_add(uint64_t h, int64_t v) {
  for (int b = 0; b < 8; b++) h = (h ^ (uint64_t)((v >> (8 * b)) & 0xff)) * 0x100000001b3ull;
  return h;
}
/* Bucket windows start at multiples of 64 floats (256 bytes): aligned for the copies and
 * NCCL's vector loads. */
#define WINDOW_ALIGN 64
#define DIGEST_SEED 0xcbf29ce484222325ull
#define DIGEST_MASK 0x3fffffffffffffffull

GradSync *grad_sync_create(Ctx *ctx, Comm *comm, Tensor *const *params, int n, int64_t bucket_bytes) {
  MCM_CHECK(n >= 0 && bucket_bytes >= 0, "grad_sync_create: %d parameters, bucket of %lld bytes", n,
            (long long)bucket_bytes);
  GradSync *gs = CALLOC_CHECK(1, sizeof *gs);
  gs->comm = comm, gs->n = n;
  gs->params = MALLOC_CHECK((size_t)(n > 0 ? n : 1) * sizeof *gs->params);
  uint64_t h = DIGEST_SEED;
  for (int i = 0; i < n; i++) {
    Tensor *p = params[i];
    MCM_CHECK(p, "grad_sync_create: parameter %d is NULL", i);
    CHECK_DTYPE("grad_sync_create", p, DT_F32);
    /* (a parameter may be frozen between its steps, as the heads are: its buffer stays) */
    MCM_CHECK(p->grad, "grad_sync_create: parameter '%s' has no gradient buffer (frozen since its creation?)",
              p->name ? p->name : "?");
    MCM_CHECK(p->dev == ctx->dev, "grad_sync_create: parameter '%s' is not on the context's device",
              p->name ? p->name : "?");
    gs->params[i] = p;
    gs->total += p->numel;
    h = digest_add(h, p->numel);
  }
  int64_t sig[2] = {n, (int64_t)(h & DIGEST_MASK)};
  MCM_CHECK(comm_same_on_all(comm, sig),
            "grad_sync_create: rank %d's parameter list (%d tensors, %lld elements) differs from another rank's "
            "(every rank must average the same parameters, in the same order)",
            comm_rank(comm), n, (long long)gs->total);
  gs->cap_elems = bucket_bytes / (int64_t)sizeof(float);
  if (bucket_bytes > 0 && gs->cap_elems < 1) gs->cap_elems = 1;
  if (bucket_bytes > 0) gs->async = comm_async_create(ctx, comm, gs->total + (int64_t)n * WINDOW_ALIGN);
  index_params(gs);
  const size_t m = (size_t)(n > 0 ? n : 1);
  gs->ready = MALLOC_CHECK(m * sizeof *gs->ready);
  gs->order = MALLOC_CHECK(m * sizeof *gs->order);
  gs->buckets = MALLOC_CHECK(m * sizeof *gs->buckets);
  gs->bucket_off = MALLOC_CHECK(m * sizeof *gs->bucket_off);
  gs->scratch = MALLOC_CHECK(m * sizeof *gs->scratch);
  return gs;
}

void grad_sync_destroy(GradSync *gs) {
  if (!gs) return;
  comm_async_destroy(gs->async);
  free(gs->params), free(gs->key), free(gs->val), free(gs->ready), free(gs->order);
  free(gs->buckets), free(gs->bucket_off), free(gs->scratch);
  free(gs);
}

/* ------------------------------------------------------------------ the plan */

/* The order backward finishes them: ready node descending (-1 last), then list order. A
 * file-level comparator needs the ready array: qsort has no context, so sort pairs. */
typedef struct ReadyKey {
  int ready, index;
} ReadyKey;

static int ready_cmp(const void *pa, const void *pb) {
  const ReadyKey *a = pa, *b = pb;
  if (a->ready != b->ready) return a->ready > b->ready ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

/* From gs->ready: the order, the buckets and their windows. Returns the plan's digest. */
static uint64_t make_plan(GradSync *gs) {
  ReadyKey *keys = MALLOC_CHECK((size_t)(gs->n > 0 ? gs->n : 1) * sizeof *keys);
  for (int i = 0; i < gs->n; i++) keys[i] = (ReadyKey){gs->ready[i], i};
  qsort(keys, (size_t)gs->n, sizeof *keys, ready_cmp);
  for (int i = 0; i < gs->n; i++) gs->order[i] = keys[i].index;
  free(keys);

  uint64_t h = DIGEST_SEED;
  int nb = 0;
  int64_t off = 0;
  for (int i = 0; i < gs->n;) {
    GradSyncBucket *b = &gs->buckets[nb];
    *b = (GradSyncBucket){gs->order + i, 0, 0, 0, -2};
    gs->bucket_off[nb] = off;
    /* greedy: add members while the cap holds (a first member always fits) */
    while (i < gs->n) {
      const int64_t k = gs->params[gs->order[i]]->numel;
      if (b->n_params > 0 && b->elems + k > gs->cap_elems) break;
      b->elems += k;
      b->ready_node = gs->ready[gs->order[i]]; /* non-increasing along the order: the last one wins */
      b->n_params++;
      h = digest_add(h, gs->order[i]);
      i++;
    }
    h = digest_add(h, -1 - (int64_t)b->n_params); /* the boundary */
    off += (b->elems + WINDOW_ALIGN - 1) / WINDOW_ALIGN * WINDOW_ALIGN;
    nb++;
  }
  gs->n_buckets = nb;
  gs->next = 0;
  return h & DIGEST_MASK;
}

static void start_bucket(GradSync *gs, Ctx *ctx, int after) {
  GradSyncBucket *b = &gs->buckets[gs->next];
  for (int j = 0; j < b->n_params; j++) gs->scratch[j] = grad_of(ctx, gs->params[b->params[j]]);
  comm_async_start(gs->async, ctx, gs->scratch, b->n_params, gs->bucket_off[gs->next]);
  b->started_after = after;
  gs->next++;
}

static void on_node(Ctx *ctx, int node, void *user) {
  GradSync *gs = user;
  if (!gs->seen_node) {
    MCM_CHECK(ctx->tape.n == gs->tape_n && node == gs->tape_n - 1,
              "grad_sync: backward runs a tape of %d nodes, grad_sync_begin planned %d (begin must come right "
              "before the backward it overlaps)",
              ctx->tape.n, gs->tape_n);
    gs->seen_node = true;
  }
  while (gs->next < gs->n_buckets && gs->buckets[gs->next].ready_node >= node) start_bucket(gs, ctx, node);
  if (node == 0) {
    /* backward is over: the unused parameters' bucket(s) too */
    while (gs->next < gs->n_buckets) start_bucket(gs, ctx, 0);
    tape_set_hook(ctx, NULL, NULL);
  } else {
    comm_async_poll(gs->async);
  }
}

void grad_sync_begin(GradSync *gs, Ctx *ctx) {
  if (!gs->async) return; /* bucket_bytes 0: everything in finish */
  MCM_CHECK(gs->tape_n == 0, "grad_sync_begin: the previous begin has not been finished");
  MCM_CHECK(!ctx->tape_hook, "grad_sync_begin: the context already has a tape hook");
  MCM_CHECK(ctx->tape.n > 0, "grad_sync_begin: the tape is empty (begin goes after the forward)");
  for (int i = 0; i < gs->n; i++) gs->ready[i] = -1;
  const Tape *tape = &ctx->tape;
  for (int j = tape->n - 1; j >= 0; j--) { /* downwards: the earliest node is written last */
    const TapeNode *node = tape->nodes[j];
    for (int k = 0; k < node->n_in; k++) {
      int i = node->in[k] ? param_index(gs, node->in[k]) : -1;
      if (i >= 0) gs->ready[i] = j;
    }
  }
  uint64_t h = make_plan(gs);
  int64_t sig[2] = {gs->n_buckets, (int64_t)h};
  MCM_CHECK(comm_same_on_all(gs->comm, sig),
            "grad_sync: rank %d's bucket plan (%d buckets from a tape of %d nodes) differs from another rank's: "
            "the ranks recorded different tapes (does the model branch on the data?) (hint: "
            "train.allreduce_bucket_mb = 0 averages after backward)",
            comm_rank(gs->comm), gs->n_buckets, tape->n);
  gs->tape_n = tape->n;
  gs->seen_node = false;
  tape_set_hook(ctx, on_node, gs);
}

void grad_sync_finish(GradSync *gs, Ctx *ctx) {
  if (!gs->async) {
    for (int i = 0; i < gs->n; i++) gs->scratch[i] = grad_of(ctx, gs->params[i]);
    comm_allreduce_mean(ctx, gs->comm, gs->scratch, gs->n);
    return;
  }
  if (gs->tape_n == 0) { /* no begin: list order (the list is the same on every rank) */
    for (int i = 0; i < gs->n; i++) gs->ready[i] = -1;
    make_plan(gs);
  }
  if (ctx->tape_hook == on_node && ctx->tape_hook_user == gs) tape_set_hook(ctx, NULL, NULL);
  while (gs->next < gs->n_buckets) start_bucket(gs, ctx, -1);
  comm_async_finish(gs->async, ctx);
  gs->overlapped = 0;
  for (int b = 0; b < gs->n_buckets; b++) gs->overlapped += gs->buckets[b].started_after > 0;
  gs->tape_n = 0;
}

const GradSyncBucket *grad_sync_buckets(const GradSync *gs, int *n) {
  *n = gs->async ? gs->n_buckets : 0;
  return gs->buckets;
}

int grad_sync_overlapped(const GradSync *gs) { return gs->overlapped; }
