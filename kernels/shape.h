/* Shape ops on contiguous tensors. op_reshape shares the input's data (a view); its
 * backward accumulates dy into dx unchanged, since the element order is the same.
 * (concat, slice and permutes join in the op library issue.) */
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

Tensor *op_reshape(Ctx *ctx, Tensor *x, int ndim, const int64_t *shape);

#ifdef __cplusplus
}
#endif
