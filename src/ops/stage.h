/* Staging of low-precision rows (bf16, f16) through the float32 kernels: a block of rows is
 * converted into the calling thread's slice of the context's staging memory, computed in
 * float32 (statistics in double) and rounded once on the way out. float32 tensors are used in
 * place, without a copy. */
#ifndef KEEL_OPS_STAGE_H
#define KEEL_OPS_STAGE_H

#include <stddef.h>

#include "convert.h"
#include "keel.h"

/* Rows per staging block: a few KiB of floats, at least one row. */
size_t keel_stage_block_rows(size_t dim);

/* Rows [r, r + n) of t as float32 rows: t's own memory if it is f32 (*stride = t.stride), else
 * converted into buf (*stride = dim). */
const float *keel_stage_in(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                           size_t dim, float *buf, size_t *stride);

/* Where the kernel writes rows [r, r + n) of output t: t's memory if f32, else buf (loaded
 * with t's current values first when `load`, for accumulation). */
float *keel_stage_out(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                      size_t dim, float *buf, int load, size_t *stride);

/* After the kernel: round buf into t's rows (nothing to do when t is f32). */
void keel_stage_flush(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                      size_t dim, const float *buf);



/* ---- the staged row loops of the forward and backward operators ---- */

/* A forward computed on float32 rows [r, r + n). */
typedef void (*keel_fwd_block_fn)(const void *job, size_t r, size_t n, const float *x, size_t xs,
                                  float *y, size_t ys);
/* A backward computed on float32 rows [r, r + n); dx NULL when skipped. */
typedef void (*keel_bwd_block_fn)(const void *job, size_t r, size_t n, const float *dy, size_t dys,
                                  const float *x, size_t xs, float *dx, size_t dxs,
                                  float *part0, float *part1);

/* Quantization of a float32 output row block into an int8 tensor (keel.h, keel_quant_i8). */
void keel_quantize_rows(const keel_convert_kernels *cv, const keel_quant_i8 *q, keel_tensor y,
                        size_t r, size_t n, size_t dim, const float *buf);

/* Floats of staging each thread needs for a forward / backward over rows of `dim`. */
size_t keel_stage_fwd_floats(size_t dim);
size_t keel_stage_bwd_floats(size_t dim);

/* Rows [r0, r1) of a forward: direct when x and y are f32, else staged through `slice`.
 * y of dtype KEEL_I8 is quantized with q. */
void keel_stage_fwd(const keel_convert_kernels *cv, float *slice, size_t dim, keel_tensor x,
                    keel_tensor y, const keel_quant_i8 *q, size_t r0, size_t r1,
                    keel_fwd_block_fn fn, const void *job);

/* Rows [r0, r1) of a backward: direct when every tensor is f32, else staged. */
void keel_stage_bwd(const keel_convert_kernels *cv, float *slice, size_t dim, keel_tensor dy,
                    keel_tensor x, keel_tensor dx, int accumulate_dx, size_t r0, size_t r1,
                    float *part0, float *part1, keel_bwd_block_fn fn, const void *job);
#endif
