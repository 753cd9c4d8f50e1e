/* keel_kernel_bench: every kernel of the kernel list (KEEL_KERNEL_LIST in src/kernels/kernels.h)
 * on every ISA path this build has and this CPU runs, one thread, called directly through
 * keel_kernels_for (no operator, no pool, no validation): the speed of each path's kernel
 * beside the scalar kernel's. `make build` builds it as build/keel_kernel_bench; `make bench`
 * runs it (scripts/bench.sh) and docs/performance.md describes its table.
 *
 *   keel_kernel_bench [--shape RxD]... [--op NAME]... [--isa LIST] [--reps N] [--ms T]
 *                     [--csv FILE] [--list]
 *
 * The rows come from the kernel list: the table below is generated with KEEL_KERNEL_LIST, one
 * row per kernel, naming it and its adapter bench_<op> and byte model model_<op>. A kernel
 * added to the list without both does not compile, so every kernel has a bench row, found by
 * the kernel's name (the ctest kernel_bench_rows checks that the output has a row for each).
 *
 * Timing: per (kernel, shape), each path's call is first warmed up and its loop sized to about
 * T ms (--ms, default 20); then the paths take turns, N times (--reps, default 5: each turn
 * one loop per path, the first path rotating), so that the machine's load falls on all of them
 * alike. Reported: the median of the N loops, in ns per element (rows x dim) and in GB/s of the
 * bytes the kernel must move (its byte model: the tensors it reads and writes, each counted
 * once, plus its per-row and per-column vectors), and each SIMD path's speed relative to the
 * scalar path (scalar time / its time). Calls run back to back on the same buffers: tensors
 * that fit in the caches stay there (4096x16: 256 KiB each), larger ones stream from memory
 * (1024x4096: 16 MiB each). Rows are packed (stride = dim), arrays 64-byte aligned. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convert.h" /* internal: the scalar conversions of one value */
#include "cpu.h"     /* internal: keel_cpu_has_avx512_bf16 */
#include "kernels.h" /* internal: the kernel tables (this program links keel_static) */
#include "numarg.h"

#define EPS 1e-5f

/* ---- the buffers every adapter draws from ---------------------------------------------------
 * Inputs are filled once per shape; the statistics a backward takes are the scalar forward's
 * of the same inputs, as an operator would save them. Outputs are written by every call;
 * partials (dgamma, dbeta, dlambda, dbias, dalpha) are accumulated into, as the kernels do. */
typedef struct bench_bufs {
    size_t rows, dim;
    float *x, *r, *dy, *dh; /* inputs, rows x dim */
    uint16_t *xb, *xh, *dyb, *dyh; /* x and dy as bf16 and as f16 (the 16-bit kernels' inputs) */
    uint16_t *y16, *dx16;          /* the 16-bit kernels' outputs */
    float *h;               /* h = x + r (the fused forward's), an input of the fused backwards */
    float *y, *dx, *df, *hout;     /* outputs, rows x dim (hout: the fused forwards' h) */
    float *gamma, *beta, *lambda;  /* dim */
    float *part[4];                /* dim each: accumulated partials (KEEL_PART_*; dyt: dalpha 2) */
    float *mean, *rstd, *rms_rstd; /* rows: the statistics of x */
    float *h_mean, *h_rstd, *h_rms_rstd; /* rows: the statistics of h */
    float *bn_hi, *bn_lo, *bn_rstd;      /* dim: BatchNorm's column statistics of x */
    double *bn_mean, *bn_m2;             /* dim: the stats kernel's output */
    int hints;   /* the backward hints an operator gives these tensors on one thread */
    int hints16; /* the same for the 16-bit rows */
} bench_bufs;

/* The byte model of a kernel: `in` tensors of rows x dim floats read, `out` written, plus
 * row_bytes per row and col_bytes per column of the smaller vectors (an accumulated partial
 * counts read and written: 8 bytes a column). */
typedef struct bench_model {
    int in, out;
    size_t row_bytes, col_bytes;
    const char *streams; /* what it reads -> what it writes */
    int narrow;          /* 1: the rows x dim tensors are 16-bit (bf16/f16), 0: float32 */
} bench_model;

static size_t model_bytes(const bench_model *m, size_t rows, size_t dim)
{
    const size_t elem = m->narrow ? sizeof(uint16_t) : sizeof(float);
    return (size_t)(m->in + m->out) * rows * dim * elem + rows * m->row_bytes +
           dim * m->col_bytes;
}

/* ---- one adapter and one byte model per kernel of the list ----------------------------------
 * Each calls k-><op> the way the operator does in training (gamma/beta given, statistics
 * saved by the forward and given to the backward, dx and the parameter gradients computed), on
 * packed rows. */

static const bench_model model_f32_layernorm_fwd = {1, 1, 8, 8, "x, gamma, beta -> y, mean, rstd", 0};
static void bench_f32_layernorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                    size_t dim)
{
    k->f32_layernorm_fwd(rows, dim, b->x, dim, b->y, dim, b->gamma, b->beta, EPS, b->mean, b->rstd);
}

static const bench_model model_f32_layernorm_bwd = {
    2, 1, 8, 20, "dy, x, mean, rstd, gamma, dgamma/dbeta partials -> dx, partials", 0};
static void bench_f32_layernorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                    size_t dim)
{
    k->f32_layernorm_bwd(rows, dim, b->dy, dim, b->x, dim, b->mean, b->rstd, b->gamma, EPS, b->dx,
                         dim, b->hints, b->part[KEEL_PART_DGAMMA], b->part[KEEL_PART_DBETA]);
}

static const bench_model model_f32_rmsnorm_fwd = {1, 1, 4, 4, "x, gamma -> y, rstd", 0};
static void bench_f32_rmsnorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                  size_t dim)
{
    k->f32_rmsnorm_fwd(rows, dim, b->x, dim, b->y, dim, b->gamma, EPS, b->rms_rstd);
}

static const bench_model model_f32_rmsnorm_bwd = {
    2, 1, 4, 12, "dy, x, rstd, gamma, dgamma partial -> dx, partial", 0};
static void bench_f32_rmsnorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                  size_t dim)
{
    k->f32_rmsnorm_bwd(rows, dim, b->dy, dim, b->x, dim, b->rms_rstd, b->gamma, EPS, b->dx, dim,
                       b->hints, b->part[KEEL_PART_DGAMMA]);
}

/* The fused kernels' residual: h = x + r (alpha 1, no lambda, no bias), the pre-norm block. */
static keel_f32_res residual_of(const bench_bufs *b)
{
    const keel_f32_res res = {b->x, b->dim, b->r, b->dim, 1.0f, NULL, NULL};
    return res;
}

/* dx written apart from dh (an operator may write it over dh: the same streams); dr (the same
 * values as dx with alpha 1 and no lambda) and the dlambda/dbias partials not asked. */
static keel_f32_res_grads grads_of(const bench_bufs *b, int beta)
{
    keel_f32_res_grads g;
    memset(&g, 0, sizeof g);
    g.dx = b->dx;
    g.dx_stride = b->dim;
    g.parts[KEEL_PART_DGAMMA] = b->part[KEEL_PART_DGAMMA];
    if (beta)
        g.parts[KEEL_PART_DBETA] = b->part[KEEL_PART_DBETA];
    g.hints = b->hints;
    return g;
}

static const bench_model model_f32_add_layernorm_fwd = {2, 2, 8, 8,
                                                        "x, r, gamma, beta -> h, y, mean, rstd", 0};
static void bench_f32_add_layernorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                        size_t dim)
{
    const keel_f32_res res = residual_of(b);
    k->f32_add_layernorm_fwd(rows, dim, &res, b->hout, dim, b->y, dim, b->gamma, b->beta, EPS,
                             b->mean, b->rstd);
}

static const bench_model model_f32_add_layernorm_bwd = {
    3, 1, 8, 20, "dy, dh, h, mean, rstd, gamma, dgamma/dbeta partials -> dx, partials", 0};
static void bench_f32_add_layernorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                        size_t dim)
{
    const keel_f32_res res = residual_of(b);
    const keel_f32_res_grads g = grads_of(b, 1);
    k->f32_add_layernorm_bwd(rows, dim, b->dy, dim, b->dh, dim, &res, b->h, dim, b->h_mean,
                             b->h_rstd, b->gamma, EPS, &g);
}

static const bench_model model_f32_add_rmsnorm_fwd = {2, 2, 4, 4, "x, r, gamma -> h, y, rstd", 0};
static void bench_f32_add_rmsnorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                      size_t dim)
{
    const keel_f32_res res = residual_of(b);
    k->f32_add_rmsnorm_fwd(rows, dim, &res, b->hout, dim, b->y, dim, b->gamma, EPS, b->rms_rstd);
}

static const bench_model model_f32_add_rmsnorm_bwd = {
    3, 1, 4, 12, "dy, dh, h, rstd, gamma, dgamma partial -> dx, partial", 0};
static void bench_f32_add_rmsnorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                      size_t dim)
{
    const keel_f32_res res = residual_of(b);
    const keel_f32_res_grads g = grads_of(b, 0);
    k->f32_add_rmsnorm_bwd(rows, dim, b->dy, dim, b->dh, dim, &res, b->h, dim, b->h_rms_rstd,
                           b->gamma, EPS, &g);
}

static const bench_model model_f32_layerscale_fwd = {2, 1, 0, 4, "x, f, lambda -> h", 0};
static void bench_f32_layerscale_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                     size_t dim)
{
    k->f32_layerscale_fwd(rows, dim, b->x, dim, b->r, dim, b->lambda, b->hout, dim);
}

static const bench_model model_f32_layerscale_bwd = {
    2, 2, 0, 12, "dh, f, lambda, dlambda partial -> dx, df, partial", 0};
static void bench_f32_layerscale_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                     size_t dim)
{
    k->f32_layerscale_bwd(rows, dim, b->dh, dim, b->r, dim, b->lambda, b->dx, dim, b->df, dim, 0,
                          b->part[KEEL_PART_DLAMBDA], b->hints & KEEL_KBWD_STREAM);
}

/* BatchNorm: the features are the dim columns, over all rows. The statistics kernel reads x
 * twice (mean, then the centred squares): counted once, as the tensor it must read. */
static const bench_model model_f32_batchnorm_stats = {1, 0, 0, 16,
                                                      "x -> mean, m2 (doubles per column)", 0};
static void bench_f32_batchnorm_stats(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                      size_t dim)
{
    k->f32_batchnorm_stats(rows, dim, b->x, dim, b->bn_mean, b->bn_m2);
}

static const bench_model model_f32_batchnorm_apply = {1, 1, 0, 20,
                                                      "x, hi, lo, rstd, gamma, beta -> y", 0};
static void bench_f32_batchnorm_apply(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                      size_t dim)
{
    k->f32_batchnorm_apply(rows, dim, b->x, dim, b->y, dim, b->bn_hi, b->bn_lo, b->bn_rstd,
                           b->gamma, b->beta);
}

static const bench_model model_f32_batchnorm_bwd = {
    2, 1, 0, 20, "dy, x, mean, rstd, gamma -> dx, dgamma, dbeta (training)", 0};
static void bench_f32_batchnorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                    size_t dim)
{
    k->f32_batchnorm_bwd(rows, dim, b->dy, dim, b->x, dim, b->bn_hi, b->bn_rstd, b->gamma, 1, b->dx,
                         dim, 0, b->part[KEEL_PART_DGAMMA], b->part[KEEL_PART_DBETA], 0);
}

static const bench_model model_f32_dyt_fwd = {1, 1, 0, 8, "x, gamma, beta -> y", 0};
static void bench_f32_dyt_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows, size_t dim)
{
    k->f32_dyt_fwd(rows, dim, b->x, dim, b->y, dim, 0.5f, b->gamma, b->beta);
}

static const bench_model model_f32_dyt_bwd = {
    2, 1, 0, 28, "dy, x, gamma, dgamma/dbeta/dalpha partials -> dx, partials", 0};
static void bench_f32_dyt_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows, size_t dim)
{
    k->f32_dyt_bwd(rows, dim, b->dy, dim, b->x, dim, 0.5f, b->gamma, b->dx, dim, 0,
                   b->part[KEEL_PART_DGAMMA], b->part[KEEL_PART_DBETA], b->part[2]);
}

/* The 16-bit forwards: x as bf16 or f16 -> y of the same type (the operators' native path). */
static const bench_model model_bf16_layernorm_fwd = {1, 1, 8, 8, "x, gamma, beta -> y, mean, rstd",
                                                     1};
static void bench_bf16_layernorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                     size_t dim)
{
    k->bf16_layernorm_fwd(rows, dim, b->xb, dim, b->y16, dim, b->gamma, b->beta, EPS, b->mean,
                          b->rstd);
}
static const bench_model model_f16_layernorm_fwd = {1, 1, 8, 8, "x, gamma, beta -> y, mean, rstd",
                                                    1};
static void bench_f16_layernorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                    size_t dim)
{
    k->f16_layernorm_fwd(rows, dim, b->xh, dim, b->y16, dim, b->gamma, b->beta, EPS, b->mean,
                         b->rstd);
}
static const bench_model model_bf16_rmsnorm_fwd = {1, 1, 4, 4, "x, gamma -> y, rstd", 1};
static void bench_bf16_rmsnorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                   size_t dim)
{
    k->bf16_rmsnorm_fwd(rows, dim, b->xb, dim, b->y16, dim, b->gamma, EPS, b->rms_rstd);
}
static const bench_model model_f16_rmsnorm_fwd = {1, 1, 4, 4, "x, gamma -> y, rstd", 1};
static void bench_f16_rmsnorm_fwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                  size_t dim)
{
    k->f16_rmsnorm_fwd(rows, dim, b->xh, dim, b->y16, dim, b->gamma, EPS, b->rms_rstd);
}

static const bench_model model_bf16_layernorm_bwd = {
    2, 1, 8, 20, "dy, x, mean, rstd, gamma, dgamma/dbeta partials -> dx, partials", 1};
static void bench_bf16_layernorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                     size_t dim)
{
    k->bf16_layernorm_bwd(rows, dim, b->dyb, dim, b->xb, dim, b->mean, b->rstd, b->gamma, EPS,
                          b->dx16, dim, b->hints16, b->part[KEEL_PART_DGAMMA],
                          b->part[KEEL_PART_DBETA]);
}
static const bench_model model_f16_layernorm_bwd = {
    2, 1, 8, 20, "dy, x, mean, rstd, gamma, dgamma/dbeta partials -> dx, partials", 1};
static void bench_f16_layernorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                    size_t dim)
{
    k->f16_layernorm_bwd(rows, dim, b->dyh, dim, b->xh, dim, b->mean, b->rstd, b->gamma, EPS,
                         b->dx16, dim, b->hints16, b->part[KEEL_PART_DGAMMA],
                         b->part[KEEL_PART_DBETA]);
}
static const bench_model model_bf16_rmsnorm_bwd = {
    2, 1, 4, 12, "dy, x, rstd, gamma, dgamma partial -> dx, partial", 1};
static void bench_bf16_rmsnorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                   size_t dim)
{
    k->bf16_rmsnorm_bwd(rows, dim, b->dyb, dim, b->xb, dim, b->rms_rstd, b->gamma, EPS, b->dx16,
                        dim, b->hints16, b->part[KEEL_PART_DGAMMA]);
}
static const bench_model model_f16_rmsnorm_bwd = {
    2, 1, 4, 12, "dy, x, rstd, gamma, dgamma partial -> dx, partial", 1};
static void bench_f16_rmsnorm_bwd(const keel_kernels *k, const bench_bufs *b, size_t rows,
                                  size_t dim)
{
    k->f16_rmsnorm_bwd(rows, dim, b->dyh, dim, b->xh, dim, b->rms_rstd, b->gamma, EPS, b->dx16,
                       dim, b->hints16, b->part[KEEL_PART_DGAMMA]);
}

/* ---- the rows of the kernel list ------------------------------------------------------------
 * Generated from KEEL_KERNEL_LIST: a kernel added to the list without a bench_<op> adapter and
 * a model_<op> above is a compile error here, so it cannot be left out of the bench. */
typedef void bench_fn(const keel_kernels *k, const bench_bufs *b, size_t rows, size_t dim);
typedef void (*any_fn)(void);
typedef struct bench_row {
    const char *name; /* the op's name in the list: "f32_layernorm_fwd" */
    bench_fn *run;
    const bench_model *model;
    int index; /* its position in the list (keel_kernels' field order) */
} bench_row;

#define BENCH_INDEX(op, neon) K_##op,
enum { KEEL_KERNEL_LIST(BENCH_INDEX) K_COUNT };
#undef BENCH_INDEX
#define BENCH_ROW(op, neon) {#op, bench_##op, &model_##op, K_##op},
static const bench_row bench_rows[] = {KEEL_KERNEL_LIST(BENCH_ROW)};
#undef BENCH_ROW
_Static_assert(sizeof bench_rows / sizeof bench_rows[0] == KEEL_KERNEL_COUNT,
               "one bench row per kernel of the list");

/* A path's kernel for a row, as a pointer to compare with the scalar path's (the neon column
 * of the list names the scalar kernel for ops not yet written for NEON: not timed twice). */
static any_fn entry_of(const keel_kernels *k, int i)
{
#define BENCH_POINTER(op, neon) (any_fn) k->op,
    const any_fn all[] = {KEEL_KERNEL_LIST(BENCH_POINTER)};
#undef BENCH_POINTER
    return all[i];
}

/* ---- buffers ------------------------------------------------------------------------------ */

static void *alloc_or_die(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0 || !p) {
        fprintf(stderr, "keel_kernel_bench: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* n floats uniform in [lo, lo + span), from a fixed seed */
static float *filled(size_t n, uint32_t seed, float lo, float span)
{
    float *p = alloc_or_die(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = lo + span * (float)(seed >> 8) * (1.0f / 16777216.0f);
    }
    return p;
}

static void bufs_init(bench_bufs *b, size_t rows, size_t dim)
{
    memset(b, 0, sizeof *b);
    b->rows = rows;
    b->dim = dim;
    const size_t n = rows * dim;
    b->x = filled(n, 1, -1.0f, 2.0f);
    b->r = filled(n, 2, -1.0f, 2.0f);
    b->dy = filled(n, 3, -1.0f, 2.0f);
    b->dh = filled(n, 4, -1.0f, 2.0f);
    b->h = filled(n, 5, 0.0f, 0.0f);
    b->xb = alloc_or_die(n * sizeof(uint16_t));
    b->xh = alloc_or_die(n * sizeof(uint16_t));
    b->dyb = alloc_or_die(n * sizeof(uint16_t));
    b->dyh = alloc_or_die(n * sizeof(uint16_t));
    b->y16 = alloc_or_die(n * sizeof(uint16_t));
    b->dx16 = alloc_or_die(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        b->xb[i] = keel_f32_to_bf16_bits(b->x[i]);
        b->xh[i] = keel_f32_to_f16_bits(b->x[i]);
        b->dyb[i] = keel_f32_to_bf16_bits(b->dy[i]);
        b->dyh[i] = keel_f32_to_f16_bits(b->dy[i]);
        b->y16[i] = b->dx16[i] = 0;
    }
    b->y = filled(n, 6, 0.0f, 0.0f);
    b->dx = filled(n, 7, 0.0f, 0.0f);
    b->df = filled(n, 8, 0.0f, 0.0f);
    b->hout = filled(n, 9, 0.0f, 0.0f);
    b->gamma = filled(dim, 10, 0.5f, 1.0f);
    b->beta = filled(dim, 11, -0.5f, 1.0f);
    b->lambda = filled(dim, 12, 0.5f, 1.0f);
    for (int i = 0; i < 4; i++)
        b->part[i] = filled(dim, 13, 0.0f, 0.0f);
    b->mean = filled(rows, 14, 0.0f, 0.0f);
    b->rstd = filled(rows, 14, 0.0f, 0.0f);
    b->rms_rstd = filled(rows, 14, 0.0f, 0.0f);
    b->h_mean = filled(rows, 14, 0.0f, 0.0f);
    b->h_rstd = filled(rows, 14, 0.0f, 0.0f);
    b->h_rms_rstd = filled(rows, 14, 0.0f, 0.0f);
    b->bn_hi = filled(dim, 14, 0.0f, 0.0f);
    b->bn_lo = filled(dim, 14, 0.0f, 0.0f);
    b->bn_rstd = filled(dim, 14, 0.0f, 0.0f);
    b->bn_mean = alloc_or_die(dim * sizeof(double));
    b->bn_m2 = alloc_or_die(dim * sizeof(double));
    /* the statistics the backwards take, from the scalar forwards (as an operator saves them) */
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    s->f32_layernorm_fwd(rows, dim, b->x, dim, b->y, dim, b->gamma, b->beta, EPS, b->mean, b->rstd);
    s->f32_rmsnorm_fwd(rows, dim, b->x, dim, b->y, dim, b->gamma, EPS, b->rms_rstd);
    const keel_f32_res res = residual_of(b);
    s->f32_add_layernorm_fwd(rows, dim, &res, b->h, dim, b->y, dim, b->gamma, b->beta, EPS,
                             b->h_mean, b->h_rstd);
    s->f32_add_rmsnorm_fwd(rows, dim, &res, NULL, dim, b->y, dim, b->gamma, EPS, b->h_rms_rstd);
    s->f32_batchnorm_stats(rows, dim, b->x, dim, b->bn_mean, b->bn_m2);
    for (size_t j = 0; j < dim; j++) {
        b->bn_hi[j] = (float)b->bn_mean[j];
        b->bn_lo[j] = (float)(b->bn_mean[j] - (double)b->bn_hi[j]);
        b->bn_rstd[j] = (float)(1.0 / sqrt(b->bn_m2[j] / (double)rows + (double)EPS));
    }
    /* the operators' rule (kernels.h, keel_kbwd_hints) on one thread, for rows of floats and
     * of 16-bit values */
    b->hints = keel_kbwd_hints(n * sizeof(float), n * sizeof(float));
    b->hints16 = keel_kbwd_hints(n * sizeof(uint16_t), n * sizeof(uint16_t));
}

static void bufs_free(bench_bufs *b)
{
    float *const f[] = {b->x,       b->r,          b->dy,      b->dh,       b->h,
                        b->y,       b->dx,         b->df,      b->hout,     b->gamma,
                        b->beta,    b->lambda,     b->part[0], b->part[1],  b->part[2],
                        b->part[3], b->mean,       b->rstd,    b->rms_rstd, b->h_mean,
                        b->h_rstd,  b->h_rms_rstd, b->bn_hi,   b->bn_lo,    b->bn_rstd};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        free(f[i]);
    free(b->bn_mean);
    free(b->bn_m2);
    free(b->xb);
    free(b->xh);
    free(b->dyb);
    free(b->dyh);
    free(b->y16);
    free(b->dx16);
}

/* ---- timing ------------------------------------------------------------------------------- */

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e9 * (double)t.tv_sec + (double)t.tv_nsec;
}

/* ns for `calls` calls back to back */
static double time_loop(const bench_row *row, const keel_kernels *k, const bench_bufs *b,
                        long calls)
{
    const double t0 = now_ns();
    for (long i = 0; i < calls; i++)
        row->run(k, b, b->rows, b->dim);
    return now_ns() - t0;
}

/* Warms the path up and returns the calls a loop of about target_ns takes. */
static long size_loop(const bench_row *row, const keel_kernels *k, const bench_bufs *b,
                      double target_ns)
{
    long calls = 1;
    double t = time_loop(row, k, b, 1); /* first call: page faults, cold caches */
    for (;;) {
        t = time_loop(row, k, b, calls);
        if (t >= target_ns / 8 || calls >= (1L << 40) / 8)
            break;
        calls *= 8;
    }
    const double per = t / (double)calls;
    const double want = per > 0 ? target_ns / per : 1.0;
    return want < 1 ? 1 : want > 1e12 ? (long)1e12 : (long)want;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- options ------------------------------------------------------------------------------ */

enum { MAX_SHAPES = 32, MAX_OPS = 32, MAX_PATHS = 5 };

typedef struct options {
    size_t shape_rows[MAX_SHAPES], shape_dim[MAX_SHAPES];
    int nshapes;
    const char *ops[MAX_OPS];
    int nops;
    int reps;
    double ms;
    const char *csv;
    const char *isa_list; /* NULL: every path */
    int list;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keel_kernel_bench [--shape RxD]... [--op NAME]... [--isa LIST] [--reps N]\n"
            "                         [--ms T] [--csv FILE] [--list]\n"
            "  every kernel of the kernel list (src/kernels/kernels.h) on every path this build\n"
            "  has and this CPU runs, one thread, beside the scalar path.\n"
            "  --shape RxD  rows x dim (repeatable; default 4096x16, 4096x768, 1024x4096)\n"
            "  --op NAME    only kernels whose name contains NAME (repeatable)\n"
            "  --isa LIST   paths, comma-separated (scalar,avx2,avx512,neon; default: all)\n"
            "  --reps N     timed loops per path, the median reported (default 5)\n"
            "  --ms T       milliseconds per loop (default 20)\n"
            "  --csv FILE   also write one line per kernel x shape x path to FILE\n"
            "  --list       print the kernels of the list, one a line, and exit\n");
}

static int parse_shape(const char *v, size_t *rows, size_t *dim)
{
    const char *xpos = v ? strchr(v, 'x') : NULL;
    if (!xpos || xpos - v > 31) {
        fprintf(stderr, "keel_kernel_bench: --shape '%s' is not ROWSxDIM\n", v ? v : "");
        return -1;
    }
    char r[32];
    memcpy(r, v, (size_t)(xpos - v));
    r[xpos - v] = '\0';
    uint64_t a, b;
    if (keel_arg_u64("kernel_bench", "--shape ROWS", r, 1, (uint64_t)1 << 26, &a) != 0 ||
        keel_arg_u64("kernel_bench", "--shape DIM", xpos + 1, 1, (uint64_t)1 << 26, &b) != 0)
        return -1;
    if (a * b > ((uint64_t)1 << 28)) {
        fprintf(stderr, "keel_kernel_bench: --shape %s: more than 2^28 elements\n", v);
        return -1;
    }
    *rows = (size_t)a;
    *dim = (size_t)b;
    return 0;
}

static int parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 5;
    o->ms = 20.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--list")) {
            o->list = 1;
        } else if (!strcmp(a, "--shape")) {
            if (o->nshapes == MAX_SHAPES) {
                fprintf(stderr, "keel_kernel_bench: at most %d shapes\n", MAX_SHAPES);
                return -1;
            }
            if (parse_shape(v, &o->shape_rows[o->nshapes], &o->shape_dim[o->nshapes]) != 0)
                return -1;
            o->nshapes++, i++;
        } else if (!strcmp(a, "--op")) {
            if (!v || o->nops == MAX_OPS) {
                fprintf(stderr, "keel_kernel_bench: --op needs a name (at most %d)\n", MAX_OPS);
                return -1;
            }
            o->ops[o->nops++] = v, i++;
        } else if (!strcmp(a, "--isa")) {
            if (!v) {
                fprintf(stderr, "keel_kernel_bench: --isa needs a list\n");
                return -1;
            }
            o->isa_list = v, i++;
        } else if (!strcmp(a, "--reps")) {
            if (keel_arg_int("kernel_bench", a, v, 1, 1000, &o->reps) != 0)
                return -1;
            i++;
        } else if (!strcmp(a, "--ms")) {
            if (keel_arg_double("kernel_bench", a, v, 0.0, 10000.0, KEEL_ARG_OPEN_LO, &o->ms) != 0)
                return -1;
            i++;
        } else if (!strcmp(a, "--csv")) {
            if (!v) {
                fprintf(stderr, "keel_kernel_bench: --csv needs a file\n");
                return -1;
            }
            o->csv = v, i++;
        } else {
            fprintf(stderr, "keel_kernel_bench: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
    }
    if (!o->nshapes) {
        static const size_t def[3][2] = {{4096, 16}, {4096, 768}, {1024, 4096}};
        for (int i = 0; i < 3; i++) {
            o->shape_rows[i] = def[i][0];
            o->shape_dim[i] = def[i][1];
        }
        o->nshapes = 3;
    }
    return 0;
}

static int row_selected(const options *o, const bench_row *row)
{
    if (!o->nops)
        return 1;
    for (int i = 0; i < o->nops; i++)
        if (strstr(row->name, o->ops[i]))
            return 1;
    return 0;
}

/* The paths to time: those asked for (all by default) that this build has
 * (keel_kernels_for non-NULL) and this CPU runs (keel_isa_available: cpuid and xgetbv, as the
 * library's dispatch checks them). Scalar first: the others are set beside it. */
static int select_paths(const options *o, const keel_kernels *paths[MAX_PATHS])
{
    enum { NISA = 4 };
    static const keel_isa all[NISA] = {KEEL_ISA_SCALAR, KEEL_ISA_AVX2, KEEL_ISA_AVX512,
                                       KEEL_ISA_NEON};
    if (o->isa_list) { /* every name must be a path */
        char buf[128];
        snprintf(buf, sizeof buf, "%s", o->isa_list);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int known = 0;
            for (int i = 0; i < NISA; i++)
                known |= !strcmp(t, keel_isa_name(all[i]));
            if (!known) {
                fprintf(stderr,
                        "keel_kernel_bench: --isa: unknown path '%s' (scalar, avx2, "
                        "avx512, neon)\n",
                        t);
                return -1;
            }
        }
    }
    int n = 0;
    for (int i = 0; i < NISA; i++) {
        const char *name = keel_isa_name(all[i]);
        if (o->isa_list) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", o->isa_list);
            int asked = 0;
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t;
                 t = strtok_r(NULL, ",", &save))
                asked |= !strcmp(t, name);
            if (!asked)
                continue;
        }
        const keel_kernels *k = keel_kernels_for(all[i]);
        if (!k || !keel_isa_available(all[i])) {
            if (o->isa_list || all[i] != KEEL_ISA_NEON)
                printf("(%s: %s: skipped)\n", name,
                       k ? "this CPU cannot run it" : "not in this build");
            continue;
        }
        paths[n++] = k;
        /* AVX-512 on a CPU with AVX512_BF16: its table's bf16 norms too (kernels.h,
         * KEEL_AVX512BF16_LIST), a path of its own beside the plain AVX-512 one */
        const keel_kernels *kb = keel_kernels_for_cpu(all[i], keel_cpu_has_avx512_bf16());
        if (kb != k)
            paths[n++] = kb;
    }
    return n;
}

/* ---- the run ------------------------------------------------------------------------------ */

typedef struct result {
    double ns_per_call; /* median; < 0: not timed (the path's entry is the scalar kernel) */
    long calls;
} result;

int main(int argc, char **argv)
{
    options o;
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    if (o.list) {
        for (int i = 0; i < K_COUNT; i++)
            printf("%s\n", bench_rows[i].name);
        return 0;
    }
    const keel_kernels *paths[MAX_PATHS];
    const int npaths = select_paths(&o, paths);
    if (npaths <= 0) {
        if (npaths == 0)
            fprintf(stderr, "keel_kernel_bench: no path to time\n");
        return 2;
    }
    const keel_kernels *scalar = keel_kernels_for(KEEL_ISA_SCALAR);
    const int has_scalar = paths[0] == scalar;
    int nrows = 0;
    for (int i = 0; i < K_COUNT; i++)
        nrows += row_selected(&o, &bench_rows[i]);
    if (!nrows) {
        fprintf(stderr, "keel_kernel_bench: no kernel matches --op\n");
        return 2;
    }
    FILE *csv = NULL;
    if (o.csv) {
        csv = fopen(o.csv, "w");
        if (!csv) {
            fprintf(stderr, "keel_kernel_bench: cannot write %s\n", o.csv);
            return 1;
        }
        fprintf(csv, "kernel,rows,dim,bytes,isa,ns_per_call,ns_per_elem,gb_per_s,vs_scalar,"
                     "calls_per_loop,reps\n");
    }

    result *res = calloc((size_t)K_COUNT * (size_t)o.nshapes * MAX_PATHS, sizeof *res);
    double *samples = calloc((size_t)o.reps * MAX_PATHS, sizeof *samples);
    if (!res || !samples) {
        fprintf(stderr, "keel_kernel_bench: out of memory\n");
        return 1;
    }
#define RES(kernel, shape, path)                                                                   \
    res[((size_t)(kernel) * (size_t)o.nshapes + (size_t)(shape)) * MAX_PATHS + (size_t)(path)]
    const double target_ns = o.ms * 1e6;
    for (int s = 0; s < o.nshapes; s++) {
        bench_bufs b;
        bufs_init(&b, o.shape_rows[s], o.shape_dim[s]);
        for (int i = 0; i < K_COUNT; i++) {
            const bench_row *row = &bench_rows[i];
            if (!row_selected(&o, row))
                continue;
            long calls[MAX_PATHS];
            int timed[MAX_PATHS];
            for (int p = 0; p < npaths; p++) {
                /* not the scalar kernel again, nor (avx512+bf16) the previous path's */
                timed[p] = paths[p] == scalar ||
                           (entry_of(paths[p], row->index) != entry_of(scalar, row->index) &&
                            (p == 0 ||
                             entry_of(paths[p], row->index) != entry_of(paths[p - 1], row->index)));
                calls[p] = timed[p] ? size_loop(row, paths[p], &b, target_ns) : 0;
            }
            /* the paths in turns, the first rotating, so that load falls on all alike */
            for (int rep = 0; rep < o.reps; rep++)
                for (int q = 0; q < npaths; q++) {
                    const int p = (rep + q) % npaths;
                    if (timed[p])
                        samples[p * o.reps + rep] =
                            time_loop(row, paths[p], &b, calls[p]) / (double)calls[p];
                }
            for (int p = 0; p < npaths; p++) {
                result *r = &RES(i, s, p);
                r->calls = calls[p];
                r->ns_per_call = -1.0;
                if (timed[p]) {
                    qsort(samples + p * o.reps, (size_t)o.reps, sizeof(double), cmp_double);
                    const double *v = samples + p * o.reps;
                    r->ns_per_call =
                        o.reps % 2 ? v[o.reps / 2] : 0.5 * (v[o.reps / 2 - 1] + v[o.reps / 2]);
                }
            }
        }
        bufs_free(&b);
    }

    /* the table: one row per kernel x shape, a group of columns per path */
    printf("keel_kernel_bench: 1 thread, median of %d loop%s of ~%g ms per path, paths in turns\n",
           o.reps, o.reps == 1 ? "" : "s", o.ms);
    printf(
        "ns/el: ns per element (rows x dim); GB/s: the kernel's bytes (MB column: its byte model,"
        "\nbench/kernel_bench.c) per second; x: the path's speed over scalar (scalar time / its"
        " time)\n\n");
    char line[512];
    int n = snprintf(line, sizeof line, "%-22s %-10s %8s", "", "", "");
    for (int p = 0; p < npaths; p++)
        n += snprintf(line + n, sizeof line - (size_t)n, " | %-*s", p == 0 && has_scalar ? 16 : 23,
                      paths[p]->name);
    while (n > 0 && line[n - 1] == ' ')
        line[--n] = '\0';
    printf("%s\n", line);
    n = snprintf(line, sizeof line, "%-22s %-10s %8s", "kernel", "shape", "MB");
    for (int p = 0; p < npaths; p++)
        n += snprintf(line + n, sizeof line - (size_t)n,
                      p == 0 && has_scalar ? " | %8s %7s" : " | %8s %7s %6s", "ns/el", "GB/s", "x");
    printf("%s\n", line);
    for (int i = 0; i < K_COUNT; i++) {
        const bench_row *row = &bench_rows[i];
        if (!row_selected(&o, row))
            continue;
        for (int s = 0; s < o.nshapes; s++) {
            const size_t rows = o.shape_rows[s], dim = o.shape_dim[s];
            const size_t bytes = model_bytes(row->model, rows, dim);
            const double elems = (double)rows * (double)dim;
            char shape[32];
            snprintf(shape, sizeof shape, "%zux%zu", rows, dim);
            n = snprintf(line, sizeof line, "%-22s %-10s %8.2f", row->name, shape,
                         (double)bytes / 1e6);
            const double base = has_scalar ? RES(i, s, 0).ns_per_call : -1.0;
            for (int p = 0; p < npaths; p++) {
                const result *r = &RES(i, s, p);
                const int with_x = !(p == 0 && has_scalar);
                if (r->ns_per_call < 0) {
                    n += snprintf(line + n, sizeof line - (size_t)n, " | %8s %7s %6s", "=scalar",
                                  "", "");
                    if (csv)
                        fprintf(csv, "%s,%zu,%zu,%zu,%s,,,,,0,0\n", row->name, rows, dim, bytes,
                                paths[p]->name);
                    continue;
                }
                const double gbs = (double)bytes / r->ns_per_call;
                const double x = base > 0 ? base / r->ns_per_call : -1.0;
                n += snprintf(line + n, sizeof line - (size_t)n, " | %8.3f %7.2f",
                              r->ns_per_call / elems, gbs);
                if (with_x) {
                    if (x > 0)
                        n += snprintf(line + n, sizeof line - (size_t)n, " %6.2f", x);
                    else
                        n += snprintf(line + n, sizeof line - (size_t)n, " %6s", "-");
                }
                if (csv) {
                    fprintf(csv, "%s,%zu,%zu,%zu,%s,%.1f,%.4f,%.3f,", row->name, rows, dim, bytes,
                            paths[p]->name, r->ns_per_call, r->ns_per_call / elems, gbs);
                    if (x > 0)
                        fprintf(csv, "%.3f", x);
                    fprintf(csv, ",%ld,%d\n", r->calls, o.reps);
                }
            }
            printf("%s\n", line);
        }
    }
    printf("\nbyte models (tensors of rows x dim floats, each counted once; + per-row and per-"
           "column vectors):\n");
    for (int i = 0; i < K_COUNT; i++) {
        const bench_row *row = &bench_rows[i];
        if (row_selected(&o, row))
            printf("  %-22s %d read + %d written, +%zu B/row +%zu B/col: %s\n", row->name,
                   row->model->in, row->model->out, row->model->row_bytes, row->model->col_bytes,
                   row->model->streams);
    }
#undef RES
    free(res);
    free(samples);
    if (csv && fclose(csv) != 0) {
        fprintf(stderr, "keel_kernel_bench: writing %s failed\n", o.csv);
        return 1;
    }
    return 0;
}
