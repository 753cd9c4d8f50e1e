/* The one staging engine of the operators: every op's rows reach the float32 kernels through
 * it, whatever the storage dtype of each tensor (f32, bf16, f16; int8 for the quantized
 * forwards' output). An op adds its tensors with their roles (read, written, accumulated into,
 * written as int8), keel_stage_setup takes staging memory from the context when any tensor is
 * not float32, and keel_stage_run gives the kernel float32 rows:
 *  - every tensor float32: the kernel runs once on the thread's rows, in place, exactly as
 *    without staging;
 *  - otherwise rows go in blocks of keel_stage_block_rows(dim): each bf16/f16 input is widened
 *    (exactly) into the thread's slice of the staging memory, the kernel runs on the block, and
 *    each bf16/f16 output is rounded once (to nearest even) into its tensor, an int8 output
 *    quantized (keel.h, keel_quant_i8). float32 tensors of a staged call are used in place.
 * Blocks go in increasing row order, so a column partial of a backward adds its rows in the same
 * order whether staged or not. */
#ifndef KEEL_OPS_STAGE_H
#define KEEL_OPS_STAGE_H

#include <stddef.h>

#include "convert.h"
#include "ctx.h"

#define KEEL_STAGE_MAX 8

typedef enum keel_stage_role {
    KEEL_STAGE_IN,    /* read */
    KEEL_STAGE_OUT,   /* written */
    KEEL_STAGE_ACC,   /* read, then written (accumulated into) */
    KEEL_STAGE_OUT_I8 /* written as int8 through the stage's quant */
} keel_stage_role;

typedef struct keel_stage {
    const keel_convert_kernels *cv;
    size_t dim;
    int n;
    keel_tensor t[KEEL_STAGE_MAX]; /* data NULL: absent (the kernel gets NULL) */
    keel_stage_role role[KEEL_STAGE_MAX];
    const keel_quant_i8 *quant;    /* for a KEEL_STAGE_OUT_I8 tensor */
    int native;                    /* the kernel reads and writes the tensors in their own storage
                                    * (the 16-bit forwards, kernels.h): nothing is staged */
    float *mem;                    /* NULL when nothing is staged */
    size_t mem_stride;             /* floats per thread */
} keel_stage;

/* Rows per staging block: a few KiB of floats, at least one row. */
size_t keel_stage_block_rows(size_t dim);

/* Adds tensor t (index = the order of the calls, from 0). */
void keel_stage_add(keel_stage *s, keel_tensor t, keel_stage_role role);

/* After the tensors: the context's conversion kernels and, if any tensor is not float32,
 * staging memory (one block of rows per tensor and thread). */
keel_status keel_stage_setup(keel_stage *s, keel_ctx *ctx, const char *who, size_t rows,
                             size_t dim);

/* The kernel of rows [r, r + n): p[i] is tensor i's row r as float32 (NULL if absent), st[i]
 * its stride in floats. ctx: the caller's own data (a backward's column partials). */
typedef void (*keel_stage_fn)(const void *job, void *ctx, size_t r, size_t n, float *const *p,
                              const size_t *st);

/* fn over rows [r0, r1), in blocks when staged; a native stage calls fn once with p and st NULL
 * (the op's job holds its tensors). */
void keel_stage_run(const keel_stage *s, size_t r0, size_t r1, keel_stage_fn fn, const void *job,
                    void *ctx);

#endif
