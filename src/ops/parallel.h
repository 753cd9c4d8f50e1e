/* How the operator layer spreads rows over the context's threads, deterministically: row
 * results never depend on which thread computes them, and column sums over rows (dgamma,
 * dbeta) are gathered per fixed row block (a function of rows alone, never of the thread
 * count) and added up in block order. */
#ifndef KEEL_OPS_PARALLEL_H
#define KEEL_OPS_PARALLEL_H

#include <stddef.h>

#include "ctx.h"

/* Work on rows [r0, r1). part0/part1: zeroed column partials of `dim` floats, or NULL. */
typedef void (*keel_rows_fn)(const void *job, size_t r0, size_t r1, float *part0, float *part1);

/* fn over [0, rows) in contiguous chunks, one per thread. */
void keel_run_rows(keel_ctx *ctx, size_t rows, size_t dim, keel_rows_fn fn, const void *job);

/* fn over fixed row blocks, each with zeroed partials for the non-NULL outputs out0/out1, then
 * out[j] = (float)(sum over blocks in order, in double) (+ out[j] first if accumulate).
 * May fail only to allocate scratch. */
keel_status keel_run_rows_reduce(keel_ctx *ctx, const char *who, size_t rows, size_t dim,
                                 keel_rows_fn fn, const void *job, float *out0, float *out1,
                                 int accumulate);

/* The same with up to KEEL_MAX_PARTS column sums (dgamma, dbeta, dlambda, dbias, ...): fn gets
 * parts[k], a zeroed partial of `dim` floats for each non-NULL outs[k], NULL for the others.
 * Row blocks, the float partials and their sum in double in block order are exactly those of
 * keel_run_rows_reduce, so one output gives the same bits through either function. */
#define KEEL_MAX_PARTS 4
typedef void (*keel_rows_parts_fn)(const void *job, size_t r0, size_t r1, float *const *parts);
keel_status keel_run_rows_reduce_n(keel_ctx *ctx, const char *who, size_t rows, size_t dim,
                                   keel_rows_parts_fn fn, const void *job, float *const *outs,
                                   int nouts, int accumulate);

/* fn over [0, dim) in contiguous column ranges, one per thread, each a multiple of 16 columns
 * but the last (operations whose sums run down the columns: BatchNorm). rows only sizes the
 * work. */
typedef void (*keel_cols_fn)(const void *job, size_t j0, size_t j1);
void keel_run_cols(keel_ctx *ctx, size_t rows, size_t dim, keel_cols_fn fn, const void *job);

#endif
