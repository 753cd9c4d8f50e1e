#include "parallel.h"

#include <stdint.h>
#include <string.h>

#include "error.h"

/* Threads worth waking for rows x dim elements. */
static int useful_threads(const keel_ctx *ctx, size_t rows, size_t dim, size_t units)
{
    const size_t elems = rows * dim; /* validated not to overflow by the operator */
    size_t n = (size_t)keel_pool_size(ctx->pool);
    /* one thread per ctx->min_parallel elements: below it waking a thread costs more than it
     * saves (keel_ctx_set_min_parallel) */
    if (ctx->min_parallel > 0 && n > elems / ctx->min_parallel)
        n = elems / ctx->min_parallel;
    if (n > units)
        n = units;
    return n < 1 ? 1 : (int)n;
}

typedef struct rows_task {
    const keel_stage *stage;
    keel_stage_fn fn;
    const void *job;
    void *parts; /* the block's ctx argument: NULL, or a backward's partials (all NULL here) */
    size_t rows;
    int n;
} rows_task;

static void rows_worker(void *arg, int i)
{
    const rows_task *t = arg;
    const size_t r0 = t->rows * (size_t)i / (size_t)t->n;
    const size_t r1 = t->rows * (size_t)(i + 1) / (size_t)t->n;
    if (r1 > r0)
        keel_stage_run(t->stage, r0, r1, t->fn, t->job, t->parts);
}

static void run_rows(keel_ctx *ctx, const keel_stage *stage, size_t rows, size_t dim,
                     keel_stage_fn fn, const void *job, void *parts)
{
    rows_task t = {stage, fn, job, parts, rows, useful_threads(ctx, rows, dim, rows)};
    keel_pool_run(ctx->pool, t.n, rows_worker, &t);
}

void keel_run_rows(keel_ctx *ctx, const keel_stage *stage, size_t rows, size_t dim,
                   keel_stage_fn fn, const void *job)
{
    run_rows(ctx, stage, rows, dim, fn, job, NULL);
}

/* Row blocks: 8 rows each for small batches, else at most 64 blocks. Depends on rows only. */
static size_t block_rows_for(size_t rows) { return rows <= 512 ? 8 : (rows + 63) / 64; }

/* out[j] = (out[j] if accumulate, else 0) + parts[0][j] + parts[1][j] + ... in double, in block
 * order, rounded once. A chunk of columns at a time with the blocks outside, so that the adds of
 * neighbouring columns go side by side in vector registers (each column's adds stay in the same
 * order: the same bits); a column at a time, a one-row call spent most of its time here. */
enum { REDUCE_CHUNK = 64 };

static void reduce_columns(const float *parts, size_t nblocks, size_t dim, size_t j0, size_t j1,
                           float *out, int accumulate)
{
    if (nblocks == 1 && !accumulate) {
        /* (float)(0.0 + (double)p) is p + 0.0f: p itself, -0 made +0, NaN kept (the same bits) */
        for (size_t j = j0; j < j1; j++)
            out[j] = parts[j] + 0.0f;
        return;
    }
    double acc[REDUCE_CHUNK];
    for (size_t c0 = j0; c0 < j1; c0 += REDUCE_CHUNK) {
        const size_t n = j1 - c0 < REDUCE_CHUNK ? j1 - c0 : REDUCE_CHUNK;
        for (size_t k = 0; k < n; k++)
            acc[k] = accumulate ? (double)out[c0 + k] : 0.0;
        for (size_t b = 0; b < nblocks; b++) {
            const float *p = parts + b * dim + c0;
            for (size_t k = 0; k < n; k++)
                acc[k] += (double)p[k];
        }
        for (size_t k = 0; k < n; k++)
            out[c0 + k] = (float)acc[k];
    }
}

/* ---- column sums over fixed row blocks ---------------------------------------------------- */

typedef struct reduce_task {
    const keel_stage *stage;
    keel_stage_fn fn;
    const void *job;
    size_t rows, dim, block_rows, nblocks;
    float *parts[KEEL_MAX_PARTS]; /* nblocks x dim each, or NULL */
    float *outs[KEEL_MAX_PARTS];
    int accumulate;
    int n;
} reduce_task;

static void blocks_worker(void *arg, int i)
{
    const reduce_task *t = arg;
    const size_t b0 = t->nblocks * (size_t)i / (size_t)t->n;
    const size_t b1 = t->nblocks * (size_t)(i + 1) / (size_t)t->n;
    for (size_t b = b0; b < b1; b++) {
        float *p[KEEL_MAX_PARTS];
        for (int k = 0; k < KEEL_MAX_PARTS; k++) {
            p[k] = t->parts[k] ? t->parts[k] + b * t->dim : NULL;
            if (p[k])
                memset(p[k], 0, t->dim * sizeof *p[k]);
        }
        const size_t r0 = b * t->block_rows;
        const size_t r1 = r0 + t->block_rows < t->rows ? r0 + t->block_rows : t->rows;
        keel_stage_run(t->stage, r0, r1, t->fn, t->job, p);
    }
}

static void columns_worker(void *arg, int i)
{
    const reduce_task *t = arg;
    const size_t j0 = t->dim * (size_t)i / (size_t)t->n;
    const size_t j1 = t->dim * (size_t)(i + 1) / (size_t)t->n;
    for (int k = 0; k < KEEL_MAX_PARTS; k++)
        if (t->outs[k])
            reduce_columns(t->parts[k], t->nblocks, t->dim, j0, j1, t->outs[k], t->accumulate);
}

keel_status keel_run_rows_reduce(keel_ctx *ctx, const char *who, const keel_stage *stage,
                                 size_t rows, size_t dim, keel_stage_fn fn, const void *job,
                                 float *const *outs, int nouts, int accumulate)
{
    reduce_task t = {0};
    size_t nparts = 0;
    for (int k = 0; k < nouts && k < KEEL_MAX_PARTS; k++) {
        t.outs[k] = outs[k];
        nparts += outs[k] != NULL;
    }
    if (nparts == 0) { /* every row once, in the forwards' chunks; the partials all NULL */
        float *none[KEEL_MAX_PARTS] = {NULL};
        run_rows(ctx, stage, rows, dim, fn, job, none);
        return KEEL_OK;
    }
    t.stage = stage;
    t.fn = fn;
    t.job = job;
    t.rows = rows;
    t.dim = dim;
    t.block_rows = block_rows_for(rows);
    t.nblocks = (rows + t.block_rows - 1) / t.block_rows;
    t.accumulate = accumulate;
    if (dim > SIZE_MAX / sizeof(float) / t.nblocks / nparts)
        return keel_fail(KEEL_EOVERFLOW, "%s: dim (%zu) too large for the gradient partials", who, dim);
    float *scratch = keel_ctx_scratch(ctx, t.nblocks * dim * nparts * sizeof(float), who);
    if (!scratch)
        return keel_fail(KEEL_ENOMEM, "%s: cannot allocate %zu partial sums of dim %zu", who,
                         t.nblocks * nparts, dim);
    for (int k = 0; k < KEEL_MAX_PARTS; k++)
        if (t.outs[k]) {
            t.parts[k] = scratch;
            scratch += t.nblocks * dim;
        }
    t.n = useful_threads(ctx, rows, dim, t.nblocks);
    keel_pool_run(ctx->pool, t.n, blocks_worker, &t);
    t.n = useful_threads(ctx, t.nblocks, dim, dim);
    keel_pool_run(ctx->pool, t.n, columns_worker, &t);
    return KEEL_OK;
}

/* ---- column ranges ------------------------------------------------------------------------- */

typedef struct cols_task {
    keel_cols_fn fn;
    const void *job;
    size_t dim;
    size_t chunks; /* 16-column chunks */
    int n;
} cols_task;

static void cols_worker(void *arg, int i)
{
    const cols_task *t = arg;
    size_t j0 = 16 * (t->chunks * (size_t)i / (size_t)t->n);
    size_t j1 = 16 * (t->chunks * (size_t)(i + 1) / (size_t)t->n);
    if (j1 > t->dim)
        j1 = t->dim;
    if (j1 > j0)
        t->fn(t->job, j0, j1);
}

void keel_run_cols(keel_ctx *ctx, size_t rows, size_t dim, keel_cols_fn fn, const void *job)
{
    cols_task t = {fn, job, dim, (dim + 15) / 16, 1};
    t.n = useful_threads(ctx, rows, dim, t.chunks);
    keel_pool_run(ctx->pool, t.n, cols_worker, &t);
}
