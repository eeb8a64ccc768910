/* Reading the PyTorch fixtures under tests/fixtures/ (see fixture_util.py there).
 *
 *   Fixture *fx = fixture_open("tests/fixtures/ops_norm.h5");
 *   Tensor *x = fixture_tensor(ctx, fx, "gn1/x", true);       persistent, requires_grad
 *   ... y = op(...); backward_from(ctx, y, fixture_tensor(ctx, fx, "gn1/grad_out", false));
 *   fixture_expect(ctx, fx, "gn1/out", y, 1e-5);               relative L2 error check
 *   fixture_expect(ctx, fx, "gn1/grad_x", x->grad, 1e-5);
 *
 * A missing fixture file fails the test (it is committed; run the script beside it to
 * regenerate, never to make a failing test pass). */
#pragma once
#include "core/tensorfile.h"
#include "kernels/ops.h"

typedef TensorFile Fixture;

Fixture *fixture_open(const char *path);
void fixture_close(Fixture *fx);
/* A persistent fp32 tensor with the stored shape and values. */
Tensor *fixture_tensor(Ctx *ctx, Fixture *fx, const char *name, bool requires_grad);
/* Stored values on the host (malloc'd); *n receives the element count. */
float *fixture_values(Fixture *fx, const char *name, int64_t *n);
/* Relative L2 error ‖got − ref‖ / max(‖ref‖, tiny) ≤ rel_tol, and matching element count;
 * reports through test_fail naming the fixture entry. Returns the error. */
double fixture_expect(Ctx *ctx, Fixture *fx, const char *name, const Tensor *got, double rel_tol);
