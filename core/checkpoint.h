/* What a checkpoint holds besides tensors: the resolved configuration (as INI text in the
 * root attribute "config") and the RNG position (attributes "rng_seed", "rng_offset").
 * The trainer issue adds parameters, EMA, optimizer state, step and data position on top,
 * all through the same tensor file, so a checkpoint stays one atomic file. */
#pragma once
#include "core/config.h"
#include "core/tensorfile.h"
#include "kernels/optim.h"

int checkpoint_save_config(TensorFile *tf, const Config *cfg, McmErr *err);
/* Schema defaults, then the saved text, then validation: the same rules as a file on disk,
 * so a checkpoint written by an older schema fails with a clear line instead of loading
 * half a configuration. */
int checkpoint_load_config(TensorFile *tf, Config *cfg, McmErr *err);

int checkpoint_save_rng(TensorFile *tf, const Ctx *ctx, McmErr *err);
int checkpoint_load_rng(TensorFile *tf, Ctx *ctx, McmErr *err);

/* AdamW state under `prefix` (say "opt_student"):
 *   tensors  <prefix>/m/<param name>, <prefix>/v/<param name>       fp32
 *            <prefix>/master/<param name>                           fp32, bf16 params only
 *   attributes <prefix>.step, .lr, .beta1, .beta2, .eps, .weight_decay, .n_params
 * Every value round-trips exactly, so a resumed run continues bit for bit.
 * Load after the parameters: it checks that the file has state for exactly the optimizer's
 * parameters, each with its shape (an error names the tensor and both shapes), before it
 * changes anything, then restores m, v, step and the hyperparameters (the saved ones win;
 * set opt->lr afterwards to change the base rate). Master copies cross precisions: a bf16
 * parameter without a saved master starts from its (loaded) bf16 value; an fp32 parameter
 * with a saved master takes the master's value, which is more precise than a bf16 save.
 * On a read failure after the checks (a damaged file) the optimizer is partly restored
 * and must not be used. */
int checkpoint_save_adamw(Ctx *ctx, TensorFile *tf, const char *prefix, const AdamW *opt, McmErr *err);
int checkpoint_load_adamw(Ctx *ctx, TensorFile *tf, const char *prefix, AdamW *opt, McmErr *err);
