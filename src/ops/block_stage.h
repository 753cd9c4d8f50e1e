/* Staging of the transformer-block operators (fused add + norm, LayerScale, DyT): up to
 * KEEL_BS_MAX tensors of any float dtype (f32, bf16, f16) per call. A thread's rows go in
 * blocks of keel_stage_block_rows(dim) rows: each bf16/f16 input is widened (exactly) into the
 * thread's slice of the context's staging memory, the float32 kernel runs on the block, and
 * each bf16/f16 output is rounded once into its tensor (stage.h's conversions). float32 tensors
 * are used in place; when every tensor is float32 the kernel runs once on the thread's rows,
 * exactly as without staging. Blocks go in increasing row order, so a column partial of a
 * backward adds its rows in the same order whether staged or not. */
#ifndef KEEL_OPS_BLOCK_STAGE_H
#define KEEL_OPS_BLOCK_STAGE_H

#include <stddef.h>

#include "convert.h"
#include "ctx.h"

#define KEEL_BS_MAX 8

typedef enum keel_bs_role {
    KEEL_BS_IN,   /* read */
    KEEL_BS_OUT,  /* written */
    KEEL_BS_ACC   /* read, then written (accumulated into) */
} keel_bs_role;

typedef struct keel_block_stage {
    const keel_convert_kernels *cv;
    size_t dim;
    int n;
    keel_tensor t[KEEL_BS_MAX]; /* data NULL: absent (the kernel gets NULL) */
    keel_bs_role role[KEEL_BS_MAX];
    float *stage;                /* NULL when nothing is staged */
    size_t stage_stride;         /* floats per thread */
} keel_block_stage;

/* Adds tensor t (index = the order of the calls, from 0). */
void keel_bs_add(keel_block_stage *bs, keel_tensor t, keel_bs_role role);

/* After the tensors: the conversion kernels and, if any tensor is bf16/f16, staging memory. */
keel_status keel_bs_setup(keel_block_stage *bs, keel_ctx *ctx, const char *who, size_t rows,
                          size_t dim);

/* The kernel of rows [r, r + n): p[i] is tensor i's row r as float32 (NULL if absent), s[i]
 * its stride in floats. ctx: the caller's own data. */
typedef void (*keel_bs_fn)(const void *job, void *ctx, size_t r, size_t n, float *const *p,
                           const size_t *s);

/* fn over rows [r0, r1), in blocks when staged. */
void keel_bs_run(const keel_block_stage *bs, size_t r0, size_t r1, keel_bs_fn fn, const void *job,
                 void *ctx);

#endif
