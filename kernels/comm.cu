/* NCCL collectives for comm.c (see comm.h). One communicator per Comm; every collective is
 * enqueued on the caller's context stream, so it is ordered after the backward pass that
 * wrote the gradients and before the optimizer that reads them, with no extra events. The
 * exception is comm_async's buckets (the end of this file): a stream of their own, joined to
 * the context's stream by events at start and finish, so the work on the communicator stays
 * in one order on the GPU.
 *
 * Bucketing: tensors smaller than COMM_BUCKET_ELEMS are copied (in list order) into one
 * flat fp32 device buffer, which is all-reduced with ncclAvg and copied back; a tensor of
 * the bucket's size or more is all-reduced in place. Every rank makes the same decisions
 * because the lists match (checked first). Version 1: plain cudaMemcpyAsync for the
 * packing; a multi-tensor copy kernel is the next step if a profile shows the copies.
 * The list check before each collective costs a 32-byte all-reduce and one stream sync
 * (the host waits for the backward pass once per step): cheap next to a silent hang. */
#include <vector>

#include "comm.h"
#include "cuda_common.h"

static_assert(sizeof(ncclUniqueId) == 128, "comm.c assumes a 128-byte NCCL id");

struct NcclComm {
  ncclComm_t comm;
  int world, rank, device;
  cudaStream_t stream; /* the creating context's stream: host-scalar collectives use it */
  float *bucket;       /* (COMM_BUCKET_ELEMS) device, allocated on first use */
  void *scratch;       /* small device buffer for scalars and signatures */
  size_t scratch_bytes;
};

static void *scratch(NcclComm *nc, size_t bytes) {
  if (bytes > nc->scratch_bytes) {
    if (nc->scratch) CUDA_CHECK(cudaFree(nc->scratch));
    nc->scratch_bytes = bytes < 4096 ? 4096 : bytes;
    CUDA_CHECK(cudaMalloc(&nc->scratch, nc->scratch_bytes));
  }
  return nc->scratch;
}

extern "C" int comm_nccl_get_id(void *id, size_t n, McmErr *err) {
  MCM_CHECK(n == sizeof(ncclUniqueId), "comm_nccl_get_id: %zu bytes for a %zu-byte id", n, sizeof(ncclUniqueId));
  ncclUniqueId u;
  ncclResult_t r = ncclGetUniqueId(&u);
  if (r != ncclSuccess) return mcm_err(err, "ncclGetUniqueId: %s (%s)", ncclGetErrorString(r), ncclGetLastError(NULL));
  memcpy(id, &u, n);
  return 0;
}

extern "C" void *comm_nccl_create(const Ctx *ctx, const void *id, int world, int rank, McmErr *err) {
  MCM_CHECK(ctx->dev == DEV_CUDA, "comm_nccl_create: the context is not a CUDA one");
  CUDA_CHECK(cudaSetDevice(ctx->device_index));
  ncclUniqueId u;
  memcpy(&u, id, sizeof u);
  ncclComm_t comm;
  ncclResult_t r = ncclCommInitRank(&comm, world, u, rank);
  if (r != ncclSuccess) {
    mcm_err(err, "NCCL could not connect rank %d of %d on cuda:%d: %s (%s) (hint: NCCL_DEBUG=INFO shows why)",
            rank, world, ctx->device_index, ncclGetErrorString(r), ncclGetLastError(NULL));
    return NULL;
  }
  NcclComm *nc = (NcclComm *)CALLOC_CHECK(1, sizeof *nc);
  nc->comm = comm, nc->world = world, nc->rank = rank, nc->device = ctx->device_index;
  nc->stream = CTX_STREAM(ctx);
  return nc;
}

extern "C" void comm_nccl_destroy(void *p) {
  NcclComm *nc = (NcclComm *)p;
  CUDA_CHECK(cudaStreamSynchronize(nc->stream));
  NCCL_CHECK(ncclCommDestroy(nc->comm));
  if (nc->bucket) CUDA_CHECK(cudaFree(nc->bucket));
  if (nc->scratch) CUDA_CHECK(cudaFree(nc->scratch));
  free(nc);
}

extern "C" void comm_nccl_max_i64(void *p, int64_t *v, int n) {
  NcclComm *nc = (NcclComm *)p;
  if (n <= 0) return;
  int64_t *d = (int64_t *)scratch(nc, (size_t)n * sizeof *v);
  CUDA_CHECK(cudaMemcpyAsync(d, v, (size_t)n * sizeof *v, cudaMemcpyHostToDevice, nc->stream));
  NCCL_CHECK(ncclAllReduce(d, d, (size_t)n, ncclInt64, ncclMax, nc->comm, nc->stream));
  CUDA_CHECK(cudaMemcpyAsync(v, d, (size_t)n * sizeof *v, cudaMemcpyDeviceToHost, nc->stream));
  CUDA_CHECK(cudaStreamSynchronize(nc->stream));
}

extern "C" void comm_nccl_check_signature(void *p, const int64_t sig[2], const char *what) {
  NcclComm *nc = (NcclComm *)p;
  int64_t v[4] = {sig[0], sig[1], -sig[0], -sig[1]};
  comm_nccl_max_i64(nc, v, 4);
  MCM_CHECK(v[0] == sig[0] && v[1] == sig[1] && -v[2] == sig[0] && -v[3] == sig[1],
            "%s: rank %d passes %lld tensors of %lld elements in all, all ranks pass %lld..%lld tensors "
            "and %lld..%lld elements (every rank must pass the same list, NULL at the same places)",
            what, nc->rank, (long long)sig[0], (long long)sig[1], (long long)-v[2], (long long)v[0],
            (long long)-v[3], (long long)v[1]);
}

namespace {
struct Member {
  Tensor *t;
  int64_t off; /* in the bucket */
};
}  // namespace

static void flush(NcclComm *nc, cudaStream_t s, std::vector<Member> &members, int64_t used) {
  if (used == 0) return;
  NCCL_CHECK(ncclAllReduce(nc->bucket, nc->bucket, (size_t)used, ncclFloat32, ncclAvg, nc->comm, s));
  for (const Member &m : members)
    CUDA_CHECK(cudaMemcpyAsync(m.t->data, nc->bucket + m.off, (size_t)m.t->numel * sizeof(float),
                               cudaMemcpyDeviceToDevice, s));
  members.clear();
}

extern "C" void comm_nccl_allreduce_mean(Ctx *ctx, void *p, Tensor *const *t, int n) {
  NcclComm *nc = (NcclComm *)p;
  cudaStream_t s = CTX_STREAM(ctx);
  int64_t sig[2] = {0, 0};
  for (int i = 0; i < n; i++)
    if (t[i]) {
      CHECK_DTYPE("comm_allreduce_mean", t[i], DT_F32);
      MCM_CHECK(t[i]->dev == DEV_CUDA, "comm_allreduce_mean: tensor %d is not on the GPU", i);
      sig[0]++, sig[1] += t[i]->numel;
    }
  comm_nccl_check_signature(nc, sig, "comm_allreduce_mean");
  if (!nc->bucket) CUDA_CHECK(cudaMalloc(&nc->bucket, (size_t)COMM_BUCKET_ELEMS * sizeof(float)));
  std::vector<Member> members;
  int64_t used = 0;
  for (int i = 0; i < n; i++) {
    Tensor *x = t[i];
    if (!x || x->numel == 0) continue;
    if (x->numel >= COMM_BUCKET_ELEMS) {
      NCCL_CHECK(ncclAllReduce(x->data, x->data, (size_t)x->numel, ncclFloat32, ncclAvg, nc->comm, s));
      continue;
    }
    if (used + x->numel > COMM_BUCKET_ELEMS) flush(nc, s, members, used), used = 0;
    CUDA_CHECK(cudaMemcpyAsync(nc->bucket + used, x->data, (size_t)x->numel * sizeof(float),
                               cudaMemcpyDeviceToDevice, s));
    members.push_back({x, used});
    used += x->numel;
  }
  flush(nc, s, members, used);
}

extern "C" void comm_nccl_allreduce_sum_f64(void *p, double *v, int n) {
  NcclComm *nc = (NcclComm *)p;
  if (n <= 0) return;
  double *d = (double *)scratch(nc, (size_t)n * sizeof(double));
  CUDA_CHECK(cudaMemcpyAsync(d, v, (size_t)n * sizeof(double), cudaMemcpyHostToDevice, nc->stream));
  NCCL_CHECK(ncclAllReduce(d, d, (size_t)n, ncclFloat64, ncclSum, nc->comm, nc->stream));
  CUDA_CHECK(cudaMemcpyAsync(v, d, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, nc->stream));
  CUDA_CHECK(cudaStreamSynchronize(nc->stream));
}

extern "C" void comm_nccl_broadcast(Ctx *ctx, void *p, Tensor *const *t, int n, int root) {
  NcclComm *nc = (NcclComm *)p;
  cudaStream_t s = CTX_STREAM(ctx);
  int64_t sig[2] = {0, 0};
  for (int i = 0; i < n; i++)
    if (t[i]) {
      MCM_CHECK(t[i]->dev == DEV_CUDA, "comm_broadcast: tensor %d is not on the GPU", i);
      sig[0]++, sig[1] += (int64_t)tensor_bytes(t[i]);
    }
  comm_nccl_check_signature(nc, sig, "comm_broadcast");
  NCCL_CHECK(ncclGroupStart());
  for (int i = 0; i < n; i++)
    if (t[i] && t[i]->numel)
      NCCL_CHECK(ncclBroadcast(t[i]->data, t[i]->data, tensor_bytes(t[i]), ncclUint8, root, nc->comm, s));
  NCCL_CHECK(ncclGroupEnd());
}

extern "C" void comm_nccl_barrier(void *p) {
  NcclComm *nc = (NcclComm *)p;
  float *d = (float *)scratch(nc, sizeof(float));
  CUDA_CHECK(cudaMemsetAsync(d, 0, sizeof(float), nc->stream));
  NCCL_CHECK(ncclAllReduce(d, d, 1, ncclFloat32, ncclSum, nc->comm, nc->stream));
  CUDA_CHECK(cudaStreamSynchronize(nc->stream));
}

/* ------------------------------------------------------------------ non-blocking buckets
 * comm_async's NCCL side (comm.h). The all-reduces run on a stream of their own, at the
 * highest priority, so a bucket's collective is not queued behind the backward kernels that
 * follow it. Each start makes that stream wait (an event) for everything the context's
 * stream has enqueued so far, i.e. the backward nodes that finished the bucket's gradients;
 * the packing copies, the ncclAllReduce (ncclAvg, as comm_nccl_allreduce_mean) and the copies
 * back into the gradients follow on it. finish makes the context's stream wait for the last
 * of them, so the optimizer sees the means and the next step's zeroing comes after the
 * copies back; the host never blocks. The staging buffer holds every bucket at its own
 * offset, so buckets in flight never share memory. */

struct NcclAsync {
  NcclComm *nc;
  cudaStream_t stream;
  cudaEvent_t ready, done;
  float *staging; /* (elems) device */
};

extern "C" void *comm_nccl_async_create(Ctx *ctx, void *p, int64_t elems) {
  MCM_CHECK(ctx->dev == DEV_CUDA, "comm_nccl_async_create: the context is not a CUDA one");
  NcclAsync *a = (NcclAsync *)CALLOC_CHECK(1, sizeof *a);
  a->nc = (NcclComm *)p;
  CUDA_CHECK(cudaSetDevice(ctx->device_index));
  int least = 0, greatest = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  CUDA_CHECK(cudaStreamCreateWithPriority(&a->stream, cudaStreamNonBlocking, greatest));
  CUDA_CHECK(cudaEventCreateWithFlags(&a->ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&a->done, cudaEventDisableTiming));
  CUDA_CHECK(cudaMalloc(&a->staging, (size_t)(elems > 0 ? elems : 1) * sizeof(float)));
  return a;
}

extern "C" void comm_nccl_async_start(void *p, Ctx *ctx, Tensor *const *t, int n, int64_t off) {
  NcclAsync *a = (NcclAsync *)p;
  CUDA_CHECK(cudaEventRecord(a->ready, CTX_STREAM(ctx)));
  CUDA_CHECK(cudaStreamWaitEvent(a->stream, a->ready, 0));
  int64_t o = off;
  for (int i = 0; i < n; i++) {
    if (t[i]->numel)
      CUDA_CHECK(cudaMemcpyAsync(a->staging + o, t[i]->data, (size_t)t[i]->numel * sizeof(float),
                                 cudaMemcpyDeviceToDevice, a->stream));
    o += t[i]->numel;
  }
  if (o == off) return;
  NCCL_CHECK(ncclAllReduce(a->staging + off, a->staging + off, (size_t)(o - off), ncclFloat32, ncclAvg, a->nc->comm,
                           a->stream));
  o = off;
  for (int i = 0; i < n; i++) {
    if (t[i]->numel)
      CUDA_CHECK(cudaMemcpyAsync(t[i]->data, a->staging + o, (size_t)t[i]->numel * sizeof(float),
                                 cudaMemcpyDeviceToDevice, a->stream));
    o += t[i]->numel;
  }
}

extern "C" void comm_nccl_async_finish(void *p, Ctx *ctx) {
  NcclAsync *a = (NcclAsync *)p;
  CUDA_CHECK(cudaEventRecord(a->done, a->stream));
  CUDA_CHECK(cudaStreamWaitEvent(CTX_STREAM(ctx), a->done, 0));
}

extern "C" void comm_nccl_async_destroy(void *p) {
  NcclAsync *a = (NcclAsync *)p;
  CUDA_CHECK(cudaStreamSynchronize(a->stream));
  CUDA_CHECK(cudaEventDestroy(a->ready));
  CUDA_CHECK(cudaEventDestroy(a->done));
  CUDA_CHECK(cudaStreamDestroy(a->stream));
  CUDA_CHECK(cudaFree(a->staging));
  free(a);
}
