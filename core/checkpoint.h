/* What a checkpoint holds besides tensors: the resolved configuration (as INI text in the
 * root attribute "config") and the RNG position (attributes "rng_seed", "rng_offset").
 * The trainer issue adds parameters, EMA, optimizer state, step and data position on top,
 * all through the same tensor file, so a checkpoint stays one atomic file. */
#pragma once
#include "core/config.h"
#include "core/tensorfile.h"

int checkpoint_save_config(TensorFile *tf, const Config *cfg, McmErr *err);
/* Schema defaults, then the saved text, then validation: the same rules as a file on disk,
 * so a checkpoint written by an older schema fails with a clear line instead of loading
 * half a configuration. */
int checkpoint_load_config(TensorFile *tf, Config *cfg, McmErr *err);

int checkpoint_save_rng(TensorFile *tf, const Ctx *ctx, McmErr *err);
int checkpoint_load_rng(TensorFile *tf, Ctx *ctx, McmErr *err);
