/* How the operator layer spreads rows over the context's threads, deterministically: row
 * results never depend on which thread computes them, and column sums over rows (dgamma,
 * dbeta) are gathered per fixed row block (a function of rows alone, never of the thread
 * count) and added up in block order. */
#ifndef KEEL_OPS_PARALLEL_H
#define KEEL_OPS_PARALLEL_H

#include <stddef.h>

#include "ctx.h"
#include "stage.h"

/* fn over [0, rows) in contiguous chunks, one per thread, each chunk through the stage's
 * blocks (keel_stage_run: float32 rows of the stage's tensors); fn's ctx argument is NULL. */
void keel_run_rows(keel_ctx *ctx, const keel_stage *stage, size_t rows, size_t dim,
                   keel_stage_fn fn, const void *job);

/* fn over fixed row blocks (a function of rows alone, never of the thread count), its ctx
 * argument `float *const *parts`: parts[k] a zeroed float partial of dim columns for each
 * non-NULL outs[k] (k < nouts <= KEEL_MAX_PARTS), NULL for the others; then
 * outs[k][j] = (float)(sum over the blocks in order, in double) (+ outs[k][j] first if
 * accumulate). With every outs[k] NULL: the rows once, in keel_run_rows's chunks, parts all
 * NULL. May fail only to allocate the partials. */
#define KEEL_MAX_PARTS 4
keel_status keel_run_rows_reduce(keel_ctx *ctx, const char *who, const keel_stage *stage,
                                 size_t rows, size_t dim, keel_stage_fn fn, const void *job,
                                 float *const *outs, int nouts, int accumulate);

/* fn over [0, dim) in contiguous column ranges, one per thread, each a multiple of 16 columns
 * but the last (operations whose sums run down the columns: BatchNorm). rows only sizes the
 * work. */
typedef void (*keel_cols_fn)(const void *job, size_t j0, size_t j1);
void keel_run_cols(keel_ctx *ctx, size_t rows, size_t dim, keel_cols_fn fn, const void *job);

#endif
