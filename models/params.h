/* Named parameters of a network: creation under a dotted prefix that follows the public
 * checkpoint's key names, loading and saving through tensor files with shape checks,
 * freezing, and reproducible initialisation.
 *
 *   ParamSet ps; params_init(&ps, "unet");
 *   params_push(&ps, "down_blocks.%d.resnets.%d", i, j);
 *   Tensor *w = params_new(ctx, &ps, "conv1.weight", SHAPE(C, C, 3, 3));   -> "unet.down_blocks.1.resnets.0.conv1.weight"
 *   params_pop(&ps);
 *   params_load(ctx, &ps, tf, err);     every parameter must be in the file with its shape
 *
 * A model builds all its parameters once (persistent memory), then its forward function
 * reads them; nothing here depends on the device. */
#pragma once
#include "core/tensorfile.h"
#include "kernels/context.h"

#define PARAMS_MAX_DEPTH 16
#define PARAMS_NAME_MAX 256

typedef struct ParamSet {
  Tensor **p;
  int n, cap;
  DType dtype;                      /* of new parameters (fp32 unless set) */
  bool trainable;                   /* of new parameters */
  char prefix[PARAMS_NAME_MAX];     /* current dotted prefix */
  int depth;
  size_t stack[PARAMS_MAX_DEPTH];   /* prefix lengths to pop back to */
} ParamSet;

/* root may be "" (no prefix). New parameters are fp32 and trainable until changed. */
void params_init(ParamSet *ps, const char *root);
void params_free(ParamSet *ps);   /* the list only; tensors belong to the context */
void params_push(ParamSet *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void params_pop(ParamSet *ps);

/* A new zero-filled parameter named <prefix>.<name>. Fatal on a duplicate name. */
Tensor *params_new(Ctx *ctx, ParamSet *ps, const char *name, int ndim, const int64_t *shape);
Tensor *params_find(const ParamSet *ps, const char *full_name);
int64_t params_count(const ParamSet *ps);   /* number of scalars */

void params_set_trainable(Ctx *ctx, ParamSet *ps, bool trainable);

/* Stores parameters first … first+n−1 of ps in dtype (fp32 or bf16; bf16 rounds to nearest
 * even): each gets new storage of that dtype and its old storage is freed, so a frozen fp32
 * network cast to bf16 holds half the memory. Only frozen parameters: a trainable bf16
 * parameter needs the optimizer's fp32 master copy, which this does not make (fatal). */
void params_cast(Ctx *ctx, ParamSet *ps, int first, int n, DType dtype);

/* Loads every parameter from tf: a missing tensor or a shape mismatch is an error naming
 * the tensor, the expected and the found shape (and the file). Tensors in the file that
 * the model does not have are reported as an error too unless allow_extra: they usually
 * mean the configuration does not match the weights. `file_prefix` is prepended to each
 * parameter's name when looking it up ("" for none). */
int params_load(Ctx *ctx, ParamSet *ps, TensorFile *tf, const char *file_prefix, bool allow_extra, McmErr *err);
/* Writes every parameter (stored in `stored` dtype) under file_prefix + name. */
int params_save(Ctx *ctx, const ParamSet *ps, TensorFile *tf, const char *file_prefix, DType stored, McmErr *err);

/* Reproducible random initialisation from the context's RNG stream (same numbers on CPU
 * and GPU): w ~ N(0, std²), or U(-bound, bound). */
void params_init_normal(Ctx *ctx, Tensor *w, float std);
void params_init_uniform(Ctx *ctx, Tensor *w, float bound);
/* PyTorch's default for Linear/Conv weights and biases: U(±1/√fan_in). */
void params_init_default(Ctx *ctx, Tensor *w, Tensor *b);
