/* The context: device choice, arenas, persistent memory, tensor allocation and copies. */
#include "context.h"

#include <ctype.h>
#include <omp.h>

#include "cuda_api.h"
#include "tape.h"

/* ------------------------------------------------------------------ arenas */

struct ArenaBlock {
  ArenaBlock *next;
  char *base;
  size_t size, used;
};

static void *raw_alloc(DevKind dev, size_t bytes) {
#if MCM_CUDA
  if (dev == DEV_CUDA) return cuda_alloc(bytes);
#endif
  MCM_CHECK(dev == DEV_CPU, "CUDA memory requested in a CPU-only build");
  void *p = aligned_alloc(256, (bytes + 255) & ~(size_t)255);
  MCM_CHECK(p, "out of host memory allocating %zu bytes", bytes);
  return p;
}

static void raw_free(DevKind dev, void *p) {
#if MCM_CUDA
  if (dev == DEV_CUDA) {
    cuda_free(p);
    return;
  }
#endif
  free(p);
}

static void arena_init(Arena *a, DevKind dev, size_t min_block) {
  memset(a, 0, sizeof *a);
  a->dev = dev;
  a->min_block = min_block;
}

static void arena_free_blocks(Arena *a) {
  for (ArenaBlock *b = a->blocks, *next; b; b = next) {
    next = b->next;
    raw_free(a->dev, b->base);
    free(b);
  }
  a->blocks = NULL;
}

static void *arena_alloc(Arena *a, size_t bytes, size_t align) {
  bytes = (bytes + align - 1) & ~(align - 1);
  if (bytes == 0) bytes = align;
  ArenaBlock *b = a->blocks;
  size_t start = b ? (b->used + align - 1) & ~(align - 1) : 0;
  if (!b || start + bytes > b->size) {
    size_t size = bytes > a->min_block ? bytes : a->min_block;
    b = CALLOC_CHECK(1, sizeof *b);
    b->base = raw_alloc(a->dev, size);
    b->size = size;
    b->next = a->blocks;
    a->blocks = b;
    start = 0;
  }
  b->used = start + bytes;
  a->used += bytes;
  if (a->used > a->high_water) a->high_water = a->used;
  return b->base + start;
}

/* Frees everything handed out. Several blocks fold into one of the high-water size, so the
 * next step of the same shape fits in a single block. */
static void arena_reset(Arena *a) {
  if (a->blocks && a->blocks->next) {
    arena_free_blocks(a);
    size_t size = a->high_water + a->high_water / 8;
    if (size < a->min_block) size = a->min_block;
    ArenaBlock *b = CALLOC_CHECK(1, sizeof *b);
    b->base = raw_alloc(a->dev, size);
    b->size = size;
    a->blocks = b;
  }
  if (a->blocks) a->blocks->used = 0;
  a->used = 0;
  a->resets++;
}

void *ctx_alloc_act(Ctx *ctx, size_t bytes) { return arena_alloc(&ctx->act, bytes, 256); }

void *ctx_alloc_host(Ctx *ctx, size_t bytes) {
  void *p = arena_alloc(&ctx->host, bytes, 16);
  memset(p, 0, bytes);
  return p;
}

void ctx_step_reset(Ctx *ctx) {
  tape_clear(ctx);
  arena_reset(&ctx->act);
  arena_reset(&ctx->host);
}

/* ------------------------------------------------------------------ scopes */

static ArenaPos arena_pos(const Arena *a) {
  return (ArenaPos){a->blocks, a->blocks ? a->blocks->used : 0, a->used};
}

/* The mark's block must still be in the chain, at or below its fill then. */
static void check_pos(const Arena *a, ArenaPos p, const char *fn, const char *which) {
  const ArenaBlock *b = a->blocks;
  while (b && b != p.block) b = b->next;
  MCM_CHECK(b == p.block && (!b || p.offset <= b->used) && p.used <= a->used,
            "%s: the %s arena is below this mark already (an enclosing mark was released first; release marks "
            "innermost first)", fn, which);
}

static void check_mark(const Ctx *ctx, ArenaMark m, const char *fn) {
  MCM_CHECK(m.resets == ctx->act.resets,
            "%s: the mark is from before ctx_step_reset (marks are valid within one step only)", fn);
  MCM_CHECK(ctx->tape.n == m.tape_n,
            "%s: the tape %s %d node(s) since the mark, and backward needs the activations they saved (hint: "
            "release only in no-grad code, or use ctx_scope_begin/ctx_scope_end, which skip in that case)",
            fn, ctx->tape.n > m.tape_n ? "recorded" : "lost", abs(ctx->tape.n - m.tape_n));
  check_pos(&ctx->act, m.act, fn, "activation");
  check_pos(&ctx->host, m.host, fn, "host");
}

/* Frees the blocks chained after p.block except `spare`, which stays newest (may be NULL). */
static void arena_pop_blocks(Arena *a, ArenaPos p, ArenaBlock *spare) {
  while (a->blocks != p.block) {
    ArenaBlock *b = a->blocks;
    a->blocks = b->next;
    if (b == spare) continue;
    raw_free(a->dev, b->base);
    free(b);
  }
  if (spare && spare != p.block) {
    spare->next = a->blocks;
    a->blocks = spare;
  }
}

static void arena_release(Arena *a, ArenaPos p) {
  arena_pop_blocks(a, p, NULL);
  if (p.block) p.block->used = p.offset;
  a->used = p.used;
}

ArenaMark ctx_mark(Ctx *ctx) {
  return (ArenaMark){arena_pos(&ctx->act), arena_pos(&ctx->host), ctx->tape.n, ctx->act.resets, false};
}

void ctx_release(Ctx *ctx, ArenaMark m) {
  check_mark(ctx, m, "ctx_release");
  arena_release(&ctx->act, m.act);
  arena_release(&ctx->host, m.host);
}

/* The block of a holding p at or above the mark's position; NULL when p is below it. */
static ArenaBlock *block_above(const Arena *a, ArenaPos m, const char *p, size_t *off) {
  for (ArenaBlock *b = a->blocks; b; b = b->next) {
    const char *lo = b->base + (b == m.block ? m.offset : 0);
    if (p >= lo && p < b->base + b->used) {
      *off = (size_t)(p - b->base);
      return b;
    }
    if (b == m.block) break;
  }
  return NULL;
}

/* n bytes from src down to dst (dst < src) in the arena. Stream order on the GPU makes the
 * copies safe without a sync; overlapping regions go through fresh space above the top,
 * which the release that follows frees again. */
static void move_down(Ctx *ctx, char *dst, const char *src, size_t n) {
  if (dst == src || n == 0) return;
  if (ctx->dev == DEV_CPU) {
    memmove(dst, src, n);
    return;
  }
#if MCM_CUDA
  if (dst + n <= src) {
    cuda_d2d(ctx, dst, src, n);
  } else {
    void *stage = arena_alloc(&ctx->act, n, 256);
    cuda_d2d(ctx, stage, src, n);
    cuda_d2d(ctx, dst, stage, n);
  }
#endif
}

Tensor *ctx_release_keep(Ctx *ctx, ArenaMark m, Tensor *keep) {
  check_mark(ctx, m, "ctx_release_keep");
  if (!keep) {
    ctx_release(ctx, m);
    return NULL;
  }
  Tensor hdr = *keep;
  Arena *a = &ctx->act;
  size_t off = 0, n = tensor_bytes(&hdr), bytes = (n + 255) & ~(size_t)255;
  if (bytes == 0) bytes = 256;
  ArenaBlock *kb = block_above(a, m.act, (const char *)hdr.data, &off);
  if (!kb) { /* the data lies below the mark (or is persistent): only the header moves */
    arena_release(a, m.act);
  } else {
    /* At the mark when its block has room (it does when keep is in that block), else at
     * the start of keep's own block, which then stays. */
    ArenaBlock *db = m.act.block && m.act.offset + bytes <= m.act.block->size ? m.act.block : kb;
    size_t doff = db == m.act.block ? m.act.offset : 0;
    move_down(ctx, db->base + doff, kb->base + off, n);
    arena_pop_blocks(a, m.act, db);
    if (m.act.block && db != m.act.block) m.act.block->used = m.act.offset;
    db->used = doff + bytes;
    a->used = m.act.used + bytes;
    hdr.data = db->base + doff;
  }
  arena_release(&ctx->host, m.host);
  Tensor *t = ctx_alloc_host(ctx, sizeof *t);
  *t = hdr;
  return t;
}

ArenaMark ctx_scope_begin(Ctx *ctx) {
  ArenaMark m = ctx_mark(ctx);
  m.skip = ctx->scopes_off;
  return m;
}

Tensor *ctx_scope_end(Ctx *ctx, ArenaMark m, Tensor *keep) {
  if (m.skip || ctx->tape.n != m.tape_n || m.resets != ctx->act.resets) return keep;
  return ctx_release_keep(ctx, m, keep);
}

/* ------------------------------------------------------------------ persistent memory */

static void push_ptr(void ***list, int *n, int *cap, void *p) {
  if (*n == *cap) {
    *cap = *cap ? 2 * *cap : 64;
    *list = REALLOC_CHECK(*list, (size_t)*cap * sizeof **list);
  }
  (*list)[(*n)++] = p;
}

void *ctx_alloc_persistent(Ctx *ctx, size_t bytes) {
  void *p = raw_alloc(ctx->dev, bytes ? bytes : 1);
  const int cap = ctx->cap_persistent;
  push_ptr(&ctx->persistent, &ctx->n_persistent, &ctx->cap_persistent, p);
  if (ctx->cap_persistent != cap)
    ctx->persistent_size = REALLOC_CHECK(ctx->persistent_size, (size_t)ctx->cap_persistent * sizeof(size_t));
  ctx->persistent_size[ctx->n_persistent - 1] = bytes;
  ctx->persistent_bytes += bytes;
  return p;
}

void ctx_free_persistent(Ctx *ctx, void *p) {
  for (int i = ctx->n_persistent - 1; i >= 0; i--)
    if (ctx->persistent[i] == p) {
      raw_free(ctx->dev, p);
      ctx->persistent_bytes -= ctx->persistent_size[i];
      ctx->n_persistent--;
      ctx->persistent[i] = ctx->persistent[ctx->n_persistent];
      ctx->persistent_size[i] = ctx->persistent_size[ctx->n_persistent];
      return;
    }
  MCM_FATAL("ctx_free_persistent: %p is not a persistent allocation of this context", p);
}

void *ctx_alloc_persistent_host(Ctx *ctx, size_t bytes) {
  void *p = CALLOC_CHECK(1, bytes ? bytes : 1);
  push_ptr(&ctx->persistent_host, &ctx->n_persistent_host, &ctx->cap_persistent_host, p);
  return p;
}

/* ------------------------------------------------------------------ devices */

bool mcm_built_with_cuda(void) { return MCM_CUDA != 0; }

int cuda_device_count(void) {
#if MCM_CUDA
  char why[256];
  return cuda_count_devices(why, sizeof why);
#else
  return 0;
#endif
}

int device_spec_parse(const char *s, DeviceSpec *out, McmErr *err) {
  *out = (DeviceSpec){DEV_CPU, -1, false};
  if (!strcmp(s, "cpu")) return 0;
  if (!strcmp(s, "auto")) {
    *out = (DeviceSpec){DEV_CUDA, -1, true};
    return 0;
  }
  if (!strcmp(s, "cuda")) {
    *out = (DeviceSpec){DEV_CUDA, -1, false};
    return 0;
  }
  if (!strncmp(s, "cuda:", 5) && isdigit((unsigned char)s[5])) {
    char *end;
    long v = strtol(s + 5, &end, 10);
    if (*end == 0 && v >= 0 && v < 1024) {
      *out = (DeviceSpec){DEV_CUDA, (int)v, false};
      return 0;
    }
  }
  return mcm_err(err, "device '%s' is not one of auto, cpu, cuda, cuda:N", s);
}

static Ctx *ctx_alloc(uint64_t seed) {
  Ctx *ctx = CALLOC_CHECK(1, sizeof *ctx);
  ctx->seed = seed;
  ctx->grad_enabled = true;
  ctx->device_index = -1;
  return ctx;
}

double device_peak_tflops(const char *device_name, bool bf16) {
  static const struct {
    const char *name; /* a substring of the CUDA device name; the first match wins */
    double bf16, fp32;
  } peaks[] = {
      {"H100 PCIe", 756.0, 51.0},
      {"H100 NVL", 0, 0}, /* not in the reference table: unknown rather than the SXM number */
      {"H100", 989.4, 66.9}, /* SXM5 */
      {"H200", 989.4, 66.9}, /* the same GH100 die */
      {"A100", 312.0, 19.5},
  };
  if (!device_name || strncmp(device_name, "cuda", 4)) return 0;
  for (size_t i = 0; i < sizeof peaks / sizeof *peaks; i++)
    if (strstr(device_name, peaks[i].name)) return bf16 ? peaks[i].bf16 : peaks[i].fp32;
  return 0;
}

Ctx *ctx_create_cpu(uint64_t seed) {
  Ctx *ctx = ctx_alloc(seed);
  ctx->dev = DEV_CPU;
  mcm_snprintf(ctx->device_name, sizeof ctx->device_name, "cpu (%d threads)", omp_get_max_threads());
  arena_init(&ctx->act, DEV_CPU, (size_t)64 << 20);
  arena_init(&ctx->host, DEV_CPU, (size_t)1 << 20);
  return ctx;
}

Ctx *ctx_create(const DeviceSpec *spec, uint64_t seed, McmErr *err) {
  if (spec->kind == DEV_CPU) return ctx_create_cpu(seed);
#if MCM_CUDA
  char why[256] = "";
  int n = cuda_count_devices(why, sizeof why);
  if (n > 0) {
    if (spec->index >= n) {
      mcm_err(err, "device cuda:%d asked for, but only %d CUDA device%s visible (cuda:0..cuda:%d)", spec->index, n,
              n == 1 ? " is" : "s are", n - 1);
      return NULL;
    }
    Ctx *ctx = ctx_alloc(seed);
    ctx->dev = DEV_CUDA;
    if (cuda_ctx_init(ctx, spec->index < 0 ? 0 : spec->index, err) != 0) {
      free(ctx);
      return NULL;
    }
    arena_init(&ctx->act, DEV_CUDA, (size_t)256 << 20);
    arena_init(&ctx->host, DEV_CPU, (size_t)1 << 20);
    return ctx;
  }
  fprintf(stderr, "mcm: no usable CUDA device (%s); running on the CPU\n", why);
#else
  fprintf(stderr, "mcm: this build has no CUDA support (built with CUDA=0 or without nvcc); running on the CPU\n");
#endif
  return ctx_create_cpu(seed);
}

void ctx_destroy(Ctx *ctx) {
  if (!ctx) return;
  ctx_sync(ctx);
  arena_free_blocks(&ctx->act);
  arena_free_blocks(&ctx->host);
  for (int i = 0; i < ctx->n_persistent; i++) raw_free(ctx->dev, ctx->persistent[i]);
  for (int i = 0; i < ctx->n_persistent_host; i++) free(ctx->persistent_host[i]);
  free(ctx->persistent);
  free(ctx->persistent_size);
  free(ctx->persistent_host);
  free(ctx->tape.nodes);
#if MCM_CUDA
  if (ctx->dev == DEV_CUDA) cuda_ctx_free(ctx);
#endif
  free(ctx);
}

void ctx_sync(Ctx *ctx) { ON_DEVICE(ctx, (void)0, cuda_sync(ctx)); }

/* ------------------------------------------------------------------ tensors */

Tensor *tensor_new(Ctx *ctx, DType dtype, int ndim, const int64_t *shape) {
  MCM_CHECK(dtype == DT_F32 || dtype == DT_BF16 || dtype == DT_I32, "compute tensors are fp32, bf16 or int32, not %s",
            dtype_name(dtype));
  Tensor *t = ctx_alloc_host(ctx, sizeof *t);
  tensor_init_header(t, dtype, ctx->dev, ndim, shape);
  t->data = ctx_alloc_act(ctx, tensor_bytes(t));
  return t;
}

Tensor *tensor_zeros(Ctx *ctx, DType dtype, int ndim, const int64_t *shape) {
  Tensor *t = tensor_new(ctx, dtype, ndim, shape);
  tensor_fill(ctx, t, 0.0f);
  return t;
}

Tensor *tensor_like(Ctx *ctx, const Tensor *t) { return tensor_new(ctx, t->dtype, t->ndim, t->shape); }

Tensor *tensor_new_persistent(Ctx *ctx, DType dtype, int ndim, const int64_t *shape) {
  MCM_CHECK(dtype == DT_F32 || dtype == DT_BF16 || dtype == DT_I32, "compute tensors are fp32, bf16 or int32, not %s",
            dtype_name(dtype));
  Tensor *t = ctx_alloc_persistent_host(ctx, sizeof *t);
  tensor_init_header(t, dtype, ctx->dev, ndim, shape);
  t->data = ctx_alloc_persistent(ctx, tensor_bytes(t));
  t->persistent = true;
  return t;
}

Tensor *param_new(Ctx *ctx, const char *name, DType dtype, int ndim, const int64_t *shape, bool trainable) {
  MCM_CHECK(dtype == DT_F32 || dtype == DT_BF16, "parameter '%s': dtype %s is not fp32 or bf16", name,
            dtype_name(dtype));
  Tensor *p = tensor_new_persistent(ctx, dtype, ndim, shape);
  size_t len = strlen(name) + 1;
  char *copy = ctx_alloc_persistent_host(ctx, len);
  memcpy(copy, name, len);
  p->name = copy;
  p->is_param = true;
  tensor_fill(ctx, p, 0.0f);
  param_set_trainable(ctx, p, trainable);
  return p;
}

void param_set_trainable(Ctx *ctx, Tensor *p, bool trainable) {
  MCM_CHECK(p->is_param, "param_set_trainable: '%s' is not a parameter", p->name ? p->name : "(activation)");
  p->requires_grad = trainable;
  if (trainable && !p->grad) {
    p->grad = tensor_new_persistent(ctx, p->dtype, p->ndim, p->shape);
    tensor_fill(ctx, p->grad, 0.0f);
  }
}

static void convert_host(void *dst, DType dd, const void *src, DType sd, int64_t n) {
  if (dd == sd) {
    memcpy(dst, src, (size_t)n * dtype_size(dd));
  } else if (dd == DT_F32 && sd == DT_BF16) {
    for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = bf16_to_f32(((const uint16_t *)src)[i]);
  } else if (dd == DT_BF16 && sd == DT_F32) {
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_bf16(((const float *)src)[i]);
  } else {
    MCM_FATAL("no conversion from %s to %s", dtype_name(sd), dtype_name(dd));
  }
}

void tensor_from_host_f32(Ctx *ctx, Tensor *t, const float *src) {
  if (t->dev == DEV_CPU) {
    convert_host(t->data, t->dtype, src, DT_F32, t->numel);
    return;
  }
#if MCM_CUDA
  void *tmp = MALLOC_CHECK(tensor_bytes(t));
  convert_host(tmp, t->dtype, src, DT_F32, t->numel);
  cuda_h2d(ctx, t->data, tmp, tensor_bytes(t));
  cuda_sync(ctx);
  free(tmp);
#endif
}

void tensor_to_host_f32(Ctx *ctx, const Tensor *t, float *dst) {
  if (t->dev == DEV_CPU) {
    convert_host(dst, DT_F32, t->data, t->dtype, t->numel);
    return;
  }
#if MCM_CUDA
  void *tmp = MALLOC_CHECK(tensor_bytes(t));
  cuda_d2h(ctx, tmp, t->data, tensor_bytes(t));
  cuda_sync(ctx);
  convert_host(dst, DT_F32, tmp, t->dtype, t->numel);
  free(tmp);
#endif
}

static void copy_raw_to(Ctx *ctx, Tensor *t, const void *src) {
  if (t->dev == DEV_CPU) {
    memcpy(t->data, src, tensor_bytes(t));
    return;
  }
#if MCM_CUDA
  cuda_h2d(ctx, t->data, src, tensor_bytes(t));
  cuda_sync(ctx);
#endif
}

void tensor_from_host_i32(Ctx *ctx, Tensor *t, const int32_t *src) {
  CHECK_DTYPE("tensor_from_host_i32", t, DT_I32);
  copy_raw_to(ctx, t, src);
}

void tensor_to_host_i32(Ctx *ctx, const Tensor *t, int32_t *dst) {
  CHECK_DTYPE("tensor_to_host_i32", t, DT_I32);
  if (t->dev == DEV_CPU) {
    memcpy(dst, t->data, tensor_bytes(t));
    return;
  }
#if MCM_CUDA
  cuda_d2h(ctx, dst, t->data, tensor_bytes(t));
  cuda_sync(ctx);
#endif
}

void tensor_fill(Ctx *ctx, Tensor *t, float value) {
  MCM_CHECK(t->dtype != DT_I32, "tensor_fill: int32 tensors are filled with tensor_from_host_i32");
  if (t->dev == DEV_CPU) {
    if (t->dtype == DT_F32) {
      float *d = t->data;
      for (int64_t i = 0; i < t->numel; i++) d[i] = value;
    } else {
      uint16_t *d = t->data, h = f32_to_bf16(value);
      for (int64_t i = 0; i < t->numel; i++) d[i] = h;
    }
    return;
  }
#if MCM_CUDA
  cuda_fill(ctx, t->data, t->dtype, t->numel, value);
#endif
}

void tensor_copy(Ctx *ctx, Tensor *dst, const Tensor *src) {
  CHECK_SAME_SHAPE("tensor_copy", dst, src);
  MCM_CHECK(dst->dev == src->dev, "tensor_copy: tensors on different devices");
  if (dst->dev == DEV_CPU) {
    convert_host(dst->data, dst->dtype, src->data, src->dtype, src->numel);
    return;
  }
#if MCM_CUDA
  if (dst->dtype == src->dtype)
    cuda_d2d(ctx, dst->data, src->data, tensor_bytes(src));
  else
    cuda_convert(ctx, dst->data, dst->dtype, src->data, src->dtype, src->numel);
#endif
}
