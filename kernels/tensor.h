/* Tensors: contiguous, row-major, up to 5 dimensions, fp32 or bf16, on the CPU or a GPU.
 *
 * A Tensor is a small header plus a data pointer. Activations live in the context's
 * per-step arena (freed all at once by ctx_step_reset); parameters and optimizer state are
 * persistent (see context.h). Size letters used in shape comments throughout mcm:
 * B batch, C channels, H x W (time x mel) for 2-D maps, T tokens or samples, D head dim.
 */
#pragma once
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MCM_MAX_DIMS 5

typedef enum DType {
  DT_F32 = 0,
  DT_BF16 = 1,
  DT_F16 = 2, /* storage only: tensor files may hold it; compute never uses it */
  DT_I32 = 3, /* indices (token ids, labels): never requires a gradient */
} DType;

typedef enum DevKind { DEV_CPU = 0, DEV_CUDA = 1 } DevKind;

typedef struct Tensor {
  void *data;                   /* numel elements of dtype, on dev */
  DType dtype;
  DevKind dev;
  int ndim;
  int64_t shape[MCM_MAX_DIMS];
  int64_t numel;
  struct Tensor *grad;          /* same shape, fp32 or dtype; NULL until a gradient arrives */
  bool requires_grad;           /* a trainable parameter, or computed from one in grad mode */
  bool is_param;                /* a named parameter (persistent) */
  bool persistent;              /* outlives ctx_step_reset; so does its grad */
  const char *name;             /* parameters: the checkpoint key; otherwise NULL */
} Tensor;

size_t dtype_size(DType dt);
const char *dtype_name(DType dt);

/* Writes "[2, 3, 4]" into buf and returns buf. */
char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape);
/* Returns a string owned by a small rotating static-free buffer inside t's caller:
 * use TENSOR_SHAPE_STR(t) which expands to a compound literal buffer. */
#define TENSOR_SHAPE_STR(t) shape_str((char[96]){0}, 96, (t)->ndim, (t)->shape)

int64_t shape_numel(int ndim, const int64_t *shape);
bool tensor_same_shape(const Tensor *a, const Tensor *b);
size_t tensor_bytes(const Tensor *t);

/* Fills the header (not the data) of t. Fatal on ndim outside 1..5 or a negative size. */
void tensor_init_header(Tensor *t, DType dtype, DevKind dev, int ndim, const int64_t *shape);

/* Shape and dtype checks for op entry points; on failure they exit naming the op, the
 * argument and both shapes. -1 in `expect` matches any size. */
#define CHECK_SHAPE(op, t, ...)                                                          \
  tensor_check_shape(__FILE__, __LINE__, (op), #t, (t), (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), \
                     (int64_t[]){__VA_ARGS__})
void tensor_check_shape(const char *file, int line, const char *op, const char *arg, const Tensor *t,
                        int ndim, const int64_t *expect);
#define CHECK_DTYPE(op, t, dt) tensor_check_dtype(__FILE__, __LINE__, (op), #t, (t), (dt))
void tensor_check_dtype(const char *file, int line, const char *op, const char *arg, const Tensor *t,
                        DType dt);
#define CHECK_SAME_SHAPE(op, a, b) tensor_check_same_shape(__FILE__, __LINE__, (op), #a, (a), #b, (b))
void tensor_check_same_shape(const char *file, int line, const char *op, const char *an, const Tensor *a,
                             const char *bn, const Tensor *b);

/* bf16 <-> fp32 on the host. Rounding is to nearest, ties to even; NaN stays NaN. */
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
