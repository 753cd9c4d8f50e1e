#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
/* keel bench: median time and GB/s of every op, beside two floors measured in the same run and
 * interleaved with the op so that all see the same machine state: the copy floor of the same
 * bytes (the faster of glibc memcpy and a streaming-store copy, same threads) and the op's own
 * stream floor (bench_streams.h: the op's own streams read and written with trivial arithmetic;
 * a copy moves one stream each way, which an op reading three can beat). A plain run times the
 * quick set (quick_set), --all every row at every default size. Interleaved, each
 * op's outputs are out of cache when it starts (the streaming copy wrote over them), as in a
 * model where a layer's outputs are fresh buffers. --hot times back-to-back calls instead
 * (op, op, ..., then the copies the same way), as the peers' benchmarks time theirs: outputs
 * in cache where they fit; scripts/bench.sh compares keel with the peers that way.
 * --dtype chooses the rows: f32 (the float32 ops and the transformer-block rows: fused add + norm,
 * LayerScale, BatchNorm, DyT; the default),
 * bf16 and f16 (LayerNorm/RMSNorm forward and backward with x, y, dy, dx in that dtype) and i8
 * (the int8-output forwards, x in f32 or bf16, dynamic per-row or static per-tensor scale); the
 * bytes counted are those the op must move in its dtypes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_copy.h"
#include "bench_streams.h"
#include "bench_time.h"
#include "commands.h"
#include "keel.h"
#include "numarg.h"

typedef struct bench_case {
    size_t rows, dim;
} bench_case;

/* L2-, L3- and DRAM-sized tensors at the widths transformers use. */
static const bench_case default_cases[] = {
    {4096, 16}, {4096, 64}, {256, 1024}, {4096, 768}, {4096, 1024},
    {4096, 4096}, {1024, 8192}, {16384, 8192},
};
static const bench_case demo_cases[] = {{4096, 1024}};

/* A plain `keel bench` (no --all, --rows/--dim or --demo): these rows only, 7.5-11 s on the
 * 2-core development machine where the full table (--all, 144 rows) took 84 s: the norms forward and backward at a
 * BERT/GPT-2 width and at one beyond L3 per tensor on small machines, the fused forward and
 * backward, LayerScale on short rows in L2 (where its copy floor was furthest off), and bf16.
 * --dtype, --norms and --only choose among them; the f16 and int8 rows are here for --dtype. */
#define QUICK_NAMES 9
static const struct {
    bench_case c;
    const char *names[QUICK_NAMES];
} quick_set[] = {
    {{4096, 16}, {"layerscale fwd"}},
    {{4096, 768},
     {"layernorm fwd", "layernorm bwd", "rmsnorm fwd", "rmsnorm bwd", "layernorm fwd bf16",
      "layernorm bwd bf16", "rmsnorm fwd f16", "layernorm fwd f32>i8 dyn",
      "rmsnorm fwd bf16>i8 static"}},
    {{4096, 1024}, {"add+ln fwd", "add+rms bwd"}},
    {{4096, 4096}, {"layernorm fwd", "layernorm bwd", "rmsnorm fwd", "rmsnorm bwd"}},
};

/* The transformer-block rows: the fused residual add + norm (h = x + r written, y = norm(h);
 * post-norm: h not written) beside the same work as two calls, an add (keel_layerscale_fwd with
 * lambda = 1) and then the norm, timed against the floor of the fused op's own bytes. Then the
 * other block ops, each alone: LayerScale (lambda 0.1), BatchNorm (training: batch statistics,
 * running statistics updated; inference: the running statistics) and DyT (alpha 0.5); these
 * OP_LS_FWD .. OP_DYT_BWD rows are left out of --demo. */
typedef enum {
    OP_LN_FWD, OP_LN_BWD, OP_RMS_FWD, OP_RMS_BWD,
    OP_ADD_LN_FWD, OP_SEP_LN_FWD, OP_POST_LN_FWD, OP_ADD_LN_BWD,
    OP_ADD_RMS_FWD, OP_SEP_RMS_FWD, OP_ADD_RMS_BWD,
    OP_LS_FWD, OP_LS_BWD, OP_BN_FWD_TRAIN, OP_BN_FWD_INFER, OP_BN_BWD_TRAIN, OP_DYT_FWD, OP_DYT_BWD, OP_COUNT,
    /* int8-output forwards (the tensor dtype of a row is then x's): dynamic per-row scale
     * (row_scale written) or a static per-tensor scale; no mean/rstd (inference) */
    OP_LN_FWD_I8_DYN = OP_COUNT, OP_LN_FWD_I8_STATIC, OP_RMS_FWD_I8_DYN, OP_RMS_FWD_I8_STATIC, OP_ALL_COUNT
} bench_op;
static const char *const op_names[OP_COUNT] = {"layernorm fwd", "layernorm bwd", "rmsnorm fwd", "rmsnorm bwd",
                                               "add+ln fwd", "add, ln fwd", "add+ln post", "add+ln bwd",
                                               "add+rms fwd", "add, rms fwd", "add+rms bwd",
                                               "layerscale fwd", "layerscale bwd", "batchnorm fwd train",
                                               "batchnorm fwd infer", "batchnorm bwd train", "dyt fwd", "dyt bwd"};
static const char *const i8_op_names[] = {"layernorm fwd %s>i8 dyn", "layernorm fwd %s>i8 static",
                                          "rmsnorm fwd %s>i8 dyn", "rmsnorm fwd %s>i8 static"};
#define I8_STATIC_SCALE (3.0f / 127.0f) /* |y| < 3 for these inputs: x, gamma, beta in [-1, 1) */

/* The rows of the table: an op and the dtype of its tensors (x, y, dy, dx; x only for the i8 ops). */
typedef struct bench_row {
    bench_op op;
    keel_dtype dtype;
    char name[40];
} bench_row;

enum { GROUP_F32 = 1, GROUP_BF16 = 2, GROUP_F16 = 4, GROUP_I8 = 8, GROUP_ALL = 15 };

typedef struct buffers {
    float *x, *y, *dy, *dx, *mean, *rstd, *gamma, *beta, *dgamma, *dbeta;
    float *src2;         /* 4n: the copies' sources, memcpy's the first 2n, the streaming copy's the
                          * second (see keel_cmd_bench) */
    float *r, *h, *ones; /* the residual rows: r, h (n each), lambda = 1 (dim) */
    /* the block rows (dim each): LayerScale's lambda (0.1) and dlambda, BatchNorm's running
     * statistics (PyTorch's initial 0 and 1) and the training forward's saved mean and rstd
     * (the training backward's input), DyT's dalpha */
    float *lambda, *dlambda, *run_mean, *run_var, *bn_mean, *bn_rstd;
    float dalpha;
    int64_t batches;
    /* low precision: x, y, dy, dx as bf16 or f16 bits (n each; x and dy hold the float32 x and dy
     * rounded to lp_dtype), the int8 y and the per-row scales */
    uint16_t *xl, *yl, *dyl, *dxl;
    keel_dtype lp_dtype;
    int8_t *yq;
    float *row_scale;
} buffers;

static keel_tensor tens(void *p, keel_dtype dt, size_t stride)
{
    keel_tensor t;
    t.data = p;
    t.dtype = dt;
    t.stride = stride;
    return t;
}

/* The low-precision ops: the four norms with x, y, dy, dx of dtype dt (bf16 or f16), and the
 * int8-output forwards with x of dtype dt (f32, bf16 or f16). */
static keel_status run_lp_op(keel_ctx *ctx, bench_op op, keel_dtype dt, const bench_case *c, const buffers *b)
{
    const size_t r = c->rows, d = c->dim;
    const keel_tensor x = dt == KEEL_F32 ? keel_f32(b->x, d) : tens(b->xl, dt, d);
    const keel_tensor yq = tens(b->yq, KEEL_I8, d);
    const keel_quant_i8 dyn = {0.0f, b->row_scale, NULL}, fixed = {I8_STATIC_SCALE, NULL, NULL};
    switch (op) {
    case OP_LN_FWD:
        return keel_layernorm_fwd(ctx, r, d, x, tens(b->yl, dt, d), b->gamma, b->beta, 1e-5f, b->mean, b->rstd, 0);
    case OP_LN_BWD:
        return keel_layernorm_bwd(ctx, r, d, tens(b->dyl, dt, d), x, b->mean, b->rstd, b->gamma, 1e-5f,
                                  tens(b->dxl, dt, d), b->dgamma, b->dbeta, 0);
    case OP_RMS_FWD:
        return keel_rmsnorm_fwd(ctx, r, d, x, tens(b->yl, dt, d), b->gamma, 1e-5f, b->rstd, 0);
    case OP_RMS_BWD:
        return keel_rmsnorm_bwd(ctx, r, d, tens(b->dyl, dt, d), x, b->rstd, b->gamma, 1e-5f, tens(b->dxl, dt, d),
                                b->dgamma, 0);
    case OP_LN_FWD_I8_DYN:
    case OP_LN_FWD_I8_STATIC:
        return keel_layernorm_fwd_i8(ctx, r, d, x, yq, b->gamma, b->beta, 1e-5f,
                                     op == OP_LN_FWD_I8_DYN ? &dyn : &fixed, NULL, NULL, 0);
    case OP_RMS_FWD_I8_DYN:
    case OP_RMS_FWD_I8_STATIC:
        return keel_rmsnorm_fwd_i8(ctx, r, d, x, yq, b->gamma, 1e-5f, op == OP_RMS_FWD_I8_DYN ? &dyn : &fixed,
                                   NULL, 0);
    default:
        return KEEL_EINVAL;
    }
}

/* LayerScale, BatchNorm and DyT, each as a training step or an inference uses it. b is written
 * through its pointers only, but for the running statistics' step count and dalpha. */
static keel_status run_other_block_op(keel_ctx *ctx, bench_op op, const bench_case *c, buffers *b)
{
    const size_t r = c->rows, d = c->dim;
    switch (op) {
    case OP_LS_FWD: /* h = x + lambda * f */
        return keel_layerscale_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->r, d), b->lambda,
                                   keel_f32(b->h, d), 0);
    case OP_LS_BWD: /* dx = dh, df = lambda * dh, dlambda = sum of dh * f */
        return keel_layerscale_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->r, d), b->lambda,
                                   keel_f32(b->dx, d), keel_f32(b->h, d), b->dlambda, 0);
    case OP_BN_FWD_TRAIN:
        return keel_batchnorm_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->y, d), b->gamma, b->beta, 1e-5f, 1,
                                  0.1f, b->run_mean, b->run_var, &b->batches, b->bn_mean, b->bn_rstd, 0);
    case OP_BN_FWD_INFER:
        return keel_batchnorm_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->y, d), b->gamma, b->beta, 1e-5f, 0,
                                  0.1f, b->run_mean, b->run_var, NULL, NULL, NULL, 0);
    case OP_BN_BWD_TRAIN:
        return keel_batchnorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->x, d), b->bn_mean, b->bn_rstd,
                                  b->gamma, 1e-5f, 1, keel_f32(b->dx, d), b->dgamma, b->dbeta, 0);
    case OP_DYT_FWD:
        return keel_dyt_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->y, d), 0.5f, b->gamma, b->beta, 0);
    case OP_DYT_BWD:
        return keel_dyt_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->x, d), 0.5f, b->gamma,
                            keel_f32(b->dx, d), &b->dalpha, b->dgamma, b->dbeta, 0);
    default:
        return KEEL_EINVAL;
    }
}

static keel_status run_block_op(keel_ctx *ctx, bench_op op, const bench_case *c, buffers *b)
{
    const size_t r = c->rows, d = c->dim;
    const keel_residual res = keel_residual_add(keel_f32(b->x, d), keel_f32(b->r, d));
    /* the backward as a pre-norm block uses it: dx = dh + the norm's dx, in place over dh (dx) */
    const keel_residual_grads g = {keel_f32(b->dx, d), keel_none(), NULL, NULL};
    keel_status st;
    switch (op) {
    case OP_ADD_LN_FWD:
        return keel_add_layernorm_fwd(ctx, r, d, &res, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma,
                                      b->beta, 1e-5f, b->mean, b->rstd, 0);
    case OP_POST_LN_FWD:
        return keel_add_layernorm_fwd(ctx, r, d, &res, keel_none(), keel_f32(b->y, d), b->gamma, b->beta,
                                      1e-5f, b->mean, b->rstd, 0);
    case OP_SEP_LN_FWD:
        st = keel_layerscale_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->r, d), b->ones, keel_f32(b->h, d), 0);
        return st ? st : keel_layernorm_fwd(ctx, r, d, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma,
                                            b->beta, 1e-5f, b->mean, b->rstd, 0);
    case OP_ADD_LN_BWD:
        return keel_add_layernorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->dx, d), &res,
                                      keel_f32(b->h, d), b->mean, b->rstd, b->gamma, 1e-5f, &g, b->dgamma,
                                      b->dbeta, 0);
    case OP_ADD_RMS_FWD:
        return keel_add_rmsnorm_fwd(ctx, r, d, &res, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma, 1e-5f,
                                    b->rstd, 0);
    case OP_SEP_RMS_FWD:
        st = keel_layerscale_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->r, d), b->ones, keel_f32(b->h, d), 0);
        return st ? st : keel_rmsnorm_fwd(ctx, r, d, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma, 1e-5f,
                                          b->rstd, 0);
    case OP_ADD_RMS_BWD:
        return keel_add_rmsnorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->dx, d), &res,
                                    keel_f32(b->h, d), b->rstd, b->gamma, 1e-5f, &g, b->dgamma, 0);
    default:
        return run_other_block_op(ctx, op, c, b);
    }
}

static keel_status run_f32_op(keel_ctx *ctx, bench_op op, const bench_case *c, buffers *b)
{
    const size_t r = c->rows, d = c->dim;
    switch (op) {
    case OP_LN_FWD:
        return keel_layernorm_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->y, d), b->gamma, b->beta,
                                  1e-5f, b->mean, b->rstd, 0);
    case OP_LN_BWD:
        return keel_layernorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->x, d), b->mean, b->rstd,
                                  b->gamma, 1e-5f, keel_f32(b->dx, d), b->dgamma, b->dbeta, 0);
    case OP_RMS_FWD:
        return keel_rmsnorm_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->y, d), b->gamma, 1e-5f,
                                b->rstd, 0);
    case OP_RMS_BWD:
        return keel_rmsnorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->x, d), b->rstd, b->gamma,
                                1e-5f, keel_f32(b->dx, d), b->dgamma, 0);
    default:
        return run_block_op(ctx, op, c, b);
    }
}

static keel_status run_op(keel_ctx *ctx, const bench_row *row, const bench_case *c, buffers *b)
{
    if (row->op >= OP_COUNT || row->dtype != KEEL_F32)
        return run_lp_op(ctx, row->op, row->dtype, c, b);
    return run_f32_op(ctx, row->op, c, b);
}

/* x and dy of the low-precision rows: the float32 x and dy rounded to dt (once per dtype) */
static keel_status set_lp_dtype(keel_ctx *ctx, buffers *b, keel_dtype dt, size_t n)
{
    if (dt == KEEL_F32 || !b->xl || b->lp_dtype == dt)
        return KEEL_OK;
    const keel_tensor xl = {b->xl, dt, n}, dyl = {b->dyl, dt, n};
    keel_status st = keel_convert(ctx, 1, n, keel_f32(b->x, n), xl);
    if (!st)
        st = keel_convert(ctx, 1, n, keel_f32(b->dy, n), dyl);
    if (!st)
        b->lp_dtype = dt;
    return st;
}

/* --rows and --dim: each at most BENCH_MAX_SIDE, their product at most BENCH_MAX_ELEMS (2^36
 * elements: 256 GiB a float32 tensor), so that no byte count below (16 bytes an element at
 * most) can wrap around. */
#define BENCH_MAX_SIDE (1u << 30)
#define BENCH_MAX_ELEMS ((uint64_t)1 << 36)

/* 64-byte aligned, the size rounded up to 64 (NULL where that would wrap) */
static void *alloc_aligned(size_t bytes)
{
    if (bytes > SIZE_MAX - 63)
        return NULL;
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

static float *alloc_floats(size_t n, uint64_t *seed)
{
    if (n > SIZE_MAX / sizeof(float))
        return NULL;
    float *p = alloc_aligned(n * sizeof(float));
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(*seed >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
    }
    return p;
}

static void free_buffers(buffers *b)
{
    float **all[] = {&b->x, &b->y, &b->dy, &b->dx, &b->mean, &b->rstd, &b->gamma, &b->beta, &b->dgamma, &b->dbeta,
                     &b->src2, &b->r, &b->h, &b->ones, &b->row_scale, &b->lambda, &b->dlambda, &b->run_mean,
                     &b->run_var, &b->bn_mean, &b->bn_rstd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
    uint16_t **lp[] = {&b->xl, &b->yl, &b->dyl, &b->dxl};
    for (size_t i = 0; i < sizeof lp / sizeof lp[0]; i++) {
        free(*lp[i]);
        *lp[i] = NULL;
    }
    free(b->yq);
    b->yq = NULL;
}

static void *alloc_bytes(size_t bytes)
{
    void *p = alloc_aligned(bytes);
    if (p)
        memset(p, 0, bytes); /* touch the pages before timing */
    return p;
}

/* groups: the tensors only the selected rows need (the residual rows for f32, the bf16/f16/int8
 * tensors for the others) */
static int alloc_buffers(buffers *b, const bench_case *c, unsigned groups)
{
    uint64_t seed = 42;
    const size_t n = c->rows * c->dim;
    b->x = alloc_floats(n, &seed);
    b->y = alloc_floats(2 * n, &seed); /* twice: also the copies' destination (up to 2n) */
    b->dy = alloc_floats(n, &seed);
    b->src2 = n <= SIZE_MAX / 4 ? alloc_floats(4 * n, &seed) : NULL;
    b->dx = alloc_floats(n, &seed);
    b->mean = alloc_floats(c->rows, &seed);
    b->rstd = alloc_floats(c->rows, &seed);
    b->gamma = alloc_floats(c->dim, &seed);
    b->beta = alloc_floats(c->dim, &seed);
    b->dgamma = alloc_floats(c->dim, &seed);
    b->dbeta = alloc_floats(c->dim, &seed);
    int ok = b->x && b->y && b->dy && b->src2 && b->dx && b->mean && b->rstd && b->gamma && b->beta && b->dgamma && b->dbeta;
    if (groups & GROUP_F32) {
        b->r = alloc_floats(n, &seed);
        b->h = alloc_floats(n, &seed);
        b->ones = alloc_floats(c->dim, &seed);
        if (b->ones)
            for (size_t j = 0; j < c->dim; j++)
                b->ones[j] = 1.0f;
        ok = ok && b->r && b->h && b->ones;
        b->lambda = alloc_floats(c->dim, &seed);
        b->dlambda = alloc_floats(c->dim, &seed);
        b->run_mean = alloc_floats(c->dim, &seed);
        b->run_var = alloc_floats(c->dim, &seed);
        b->bn_mean = alloc_floats(c->dim, &seed);
        b->bn_rstd = alloc_floats(c->dim, &seed);
        ok = ok && b->lambda && b->dlambda && b->run_mean && b->run_var && b->bn_mean && b->bn_rstd;
        if (ok)
            for (size_t j = 0; j < c->dim; j++) {
                b->lambda[j] = 0.1f; /* CaiT's initial value up to depth 18 */
                b->run_mean[j] = 0.0f;
                b->run_var[j] = 1.0f;
            }
    }
    if (groups & ~(unsigned)GROUP_F32) {
        b->xl = alloc_bytes(n * 2);
        b->yl = alloc_bytes(n * 2);
        b->dyl = alloc_bytes(n * 2);
        b->dxl = alloc_bytes(n * 2);
        b->lp_dtype = KEEL_F32; /* nothing converted yet */
        ok = ok && b->xl && b->yl && b->dyl && b->dxl;
    }
    if (groups & GROUP_I8) {
        b->yq = alloc_bytes(n);
        b->row_scale = alloc_bytes(c->rows * sizeof(float));
        ok = ok && b->yq && b->row_scale;
    }
    return ok;
}

static size_t dtype_size(keel_dtype dt)
{
    return dt == KEEL_F32 ? 4 : dt == KEEL_I8 ? 1 : 2;
}

/* Bytes the op must move: forward reads x and writes y; backward reads x and dy, writes dx.
 * Fused add + norm: reads x and r, writes h and y (post-norm: not h); its backward reads dy,
 * dh and h and writes dx. "add, norm" is timed against the fused op's bytes: the floor the
 * fused op can reach and two calls cannot (they move 5n: x, r, h; h, y).
 * LayerScale forward reads x and f, writes h (3n); its backward reads dh and f, writes dx and df
 * (4n; dlambda, dim floats, not counted). BatchNorm and DyT: as the norms, forward 2n, backward
 * 3n (a BatchNorm tensor larger than the caches is read twice: statistics, then apply; that
 * second read is the op's cost, not counted).
 * Each element in its dtype: 4 bytes float32, 2 bf16/f16. The int8-output forwards read x
 * (4 or 2 bytes), write y (1 byte) and, with the dynamic scale, a float32 scale per row. The
 * statistics (mean, rstd: 8 bytes a row) and gamma/beta are not counted, as for float32. */
static size_t op_bytes(const bench_row *row, const bench_case *c)
{
    const size_t elems = c->rows * c->dim;
    const bench_op op = row->op;
    if (op >= OP_COUNT)
        return elems * (dtype_size(row->dtype) + 1) +
               (op == OP_LN_FWD_I8_DYN || op == OP_RMS_FWD_I8_DYN ? c->rows * sizeof(float) : 0);
    const size_t n = elems * dtype_size(row->dtype);
    switch (op) {
    case OP_LS_FWD:
    case OP_BN_BWD_TRAIN:
    case OP_DYT_BWD:
        return 3 * n;
    case OP_LS_BWD:
        return 4 * n;
    case OP_BN_FWD_TRAIN:
    case OP_BN_FWD_INFER:
    case OP_DYT_FWD:
        return 2 * n;
    default:
        break;
    }
    if (op >= OP_ADD_LN_FWD)
        return op == OP_POST_LN_FWD ? 3 * n : 4 * n;
    return (op == OP_LN_BWD || op == OP_RMS_BWD) ? 3 * n : 2 * n;
}

/* s's tensors: nin read and nout written, each of element size es (the outputs' sizes may be
 * changed after) */
static void set_tensors(bench_streams_spec *s, int nin, int nout, unsigned es)
{
    s->nin = nin;
    s->nout = nout;
    for (int i = 0; i < BENCH_STREAMS_MAX; i++) {
        s->in_size[i] = s->out_size[i] = (unsigned char)es;
        s->out_in_place[i] = -1;
    }
}

/* The streams the op reads and writes, for its own floor (bench_streams.h). Unlike op_bytes,
 * which counts the tensors only, these include the statistics (mean, rstd, the int8 rows'
 * scales), gamma/beta and the per-feature results; and the fused backwards' dx is written in
 * place over dh, as the rows call them (so it is read and written, one buffer). */
static bench_streams_spec op_streams(const bench_row *row, const bench_case *c)
{
    bench_streams_spec s;
    memset(&s, 0, sizeof s);
    s.elems = c->rows * c->dim;
    s.rows = c->rows;
    s.dim = c->dim;
    const unsigned es = (unsigned)dtype_size(row->dtype);
    switch (row->op) {
    case OP_LN_FWD: /* x -> y; mean, rstd; gamma, beta */
        set_tensors(&s, 1, 1, es), s.row_out = 2, s.dim_in = 2;
        break;
    case OP_LN_BWD: /* dy, x -> dx; mean, rstd, gamma -> dgamma, dbeta */
        set_tensors(&s, 2, 1, es), s.row_in = 2, s.dim_in = 1, s.dim_out = 2;
        break;
    case OP_RMS_FWD:
        set_tensors(&s, 1, 1, es), s.row_out = 1, s.dim_in = 1;
        break;
    case OP_RMS_BWD:
        set_tensors(&s, 2, 1, es), s.row_in = 1, s.dim_in = 1, s.dim_out = 1;
        break;
    case OP_ADD_LN_FWD: /* x, r -> h, y (the two calls timed against the fused op's streams) */
    case OP_SEP_LN_FWD:
        set_tensors(&s, 2, 2, 4), s.row_out = 2, s.dim_in = 2;
        break;
    case OP_POST_LN_FWD: /* x, r -> y */
        set_tensors(&s, 2, 1, 4), s.row_out = 2, s.dim_in = 2;
        break;
    case OP_ADD_LN_BWD: /* dy, dh, h -> dx over dh */
        set_tensors(&s, 3, 1, 4), s.out_in_place[0] = 1, s.row_in = 2, s.dim_in = 1, s.dim_out = 2;
        break;
    case OP_ADD_RMS_FWD:
    case OP_SEP_RMS_FWD:
        set_tensors(&s, 2, 2, 4), s.row_out = 1, s.dim_in = 1;
        break;
    case OP_ADD_RMS_BWD:
        set_tensors(&s, 3, 1, 4), s.out_in_place[0] = 1, s.row_in = 1, s.dim_in = 1, s.dim_out = 1;
        break;
    case OP_LS_FWD: /* x, f -> h; lambda */
        set_tensors(&s, 2, 1, 4), s.dim_in = 1;
        break;
    case OP_LS_BWD: /* dh, f -> dx, df; lambda -> dlambda */
        set_tensors(&s, 2, 2, 4), s.dim_in = 1, s.dim_out = 1;
        break;
    case OP_BN_FWD_TRAIN: /* x -> y; gamma, beta, running statistics -> those, saved mean, rstd */
        set_tensors(&s, 1, 1, 4), s.dim_in = 4, s.dim_out = 4;
        break;
    case OP_BN_FWD_INFER:
        set_tensors(&s, 1, 1, 4), s.dim_in = 4;
        break;
    case OP_BN_BWD_TRAIN: /* dy, x -> dx; mean, rstd, gamma -> dgamma, dbeta */
        set_tensors(&s, 2, 1, 4), s.dim_in = 3, s.dim_out = 2;
        break;
    case OP_DYT_FWD:
        set_tensors(&s, 1, 1, 4), s.dim_in = 2;
        break;
    case OP_DYT_BWD: /* dy, x -> dx; gamma -> dgamma, dbeta (and dalpha) */
        set_tensors(&s, 2, 1, 4), s.dim_in = 1, s.dim_out = 2;
        break;
    case OP_LN_FWD_I8_DYN: /* x -> int8 y (and a scale a row); gamma, beta */
    case OP_LN_FWD_I8_STATIC:
    case OP_RMS_FWD_I8_DYN:
    case OP_RMS_FWD_I8_STATIC:
        set_tensors(&s, 1, 1, es), s.out_size[0] = 1;
        s.row_out = row->op == OP_LN_FWD_I8_DYN || row->op == OP_RMS_FWD_I8_DYN;
        s.dim_in = row->op <= OP_LN_FWD_I8_STATIC ? 2 : 1;
        break;
    default:
        break;
    }
    return s;
}

/* target: the bytes the op moves over one measurement series (~3 GB; 1 GB for the LayerScale,
 * BatchNorm and DyT rows, which with their fewer runs at least (short_min_reps) keeps the default
 * run's time within about a quarter more than without them) */
static int reps_for(size_t bytes, int min_reps, size_t target)
{
    int reps = (int)(target / (bytes ? bytes : 1));
    if (reps > 200)
        reps = 200;
    return reps < min_reps ? min_reps : reps;
}

/* "f32,bf16" -> GROUP_F32 | GROUP_BF16; 0 on an unknown name */
static unsigned parse_dtypes(const char *list)
{
    unsigned g = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        static const struct {
            const char *name;
            unsigned group;
        } names[] = {{"f32", GROUP_F32}, {"fp32", GROUP_F32}, {"bf16", GROUP_BF16}, {"f16", GROUP_F16},
                     {"fp16", GROUP_F16}, {"i8", GROUP_I8},   {"int8", GROUP_I8},   {"all", GROUP_ALL}};
        unsigned found = 0;
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
            if (strlen(names[k].name) == len && !strncmp(p, names[k].name, len))
                found = names[k].group;
        if (!found)
            return 0;
        g |= found;
        p += len;
        if (*p == ',')
            p++;
    }
    return g;
}

/* The rows of the selected groups, in table order: f32, bf16, f16, i8. */
static size_t make_rows(bench_row *rows, unsigned groups, int block_rows, int norms_only)
{
    size_t k = 0;
    if (groups & GROUP_F32)
        for (int op = 0; op < OP_COUNT; op++) {
            if ((!block_rows && op >= OP_LS_FWD) || (norms_only && op > OP_RMS_BWD))
                continue;
            rows[k].op = (bench_op)op;
            rows[k].dtype = KEEL_F32;
            snprintf(rows[k].name, sizeof rows[k].name, "%s", op_names[op]);
            k++;
        }
    const keel_dtype lp[2] = {KEEL_BF16, KEEL_F16};
    for (int i = 0; i < 2; i++) {
        if (!(groups & (i ? GROUP_F16 : GROUP_BF16)))
            continue;
        for (int op = OP_LN_FWD; op <= OP_RMS_BWD; op++) {
            rows[k].op = (bench_op)op;
            rows[k].dtype = lp[i];
            snprintf(rows[k].name, sizeof rows[k].name, "%s %s", op_names[op], keel_dtype_name(lp[i]));
            k++;
        }
    }
    if (groups & GROUP_I8) {
        const keel_dtype in[2] = {KEEL_F32, KEEL_BF16};
        for (int i = 0; i < 2; i++)
            for (int op = OP_LN_FWD_I8_DYN; op < OP_ALL_COUNT; op++) {
                rows[k].op = (bench_op)op;
                rows[k].dtype = in[i];
                snprintf(rows[k].name, sizeof rows[k].name, i8_op_names[op - OP_LN_FWD_I8_DYN],
                         keel_dtype_name(in[i]));
                k++;
            }
    }
    return k;
}

/* --only NAME (repeatable): keeps the rows named, in table order, so that a row can be timed
 * again and again without the others. A name that is no row of the selected dtypes is an
 * error: returns it (NULL when every name is a row). No names: every row stays. */
#define BENCH_ONLY_MAX 16
static const char *keep_only(bench_row *rows, size_t *nrows, const char *const *only, int nonly)
{
    if (!nonly)
        return NULL;
    for (int i = 0; i < nonly; i++) {
        int found = 0;
        for (size_t k = 0; k < *nrows; k++)
            found |= !strcmp(only[i], rows[k].name);
        if (!found)
            return only[i];
    }
    size_t kept = 0;
    for (size_t k = 0; k < *nrows; k++)
        for (int i = 0; i < nonly; i++)
            if (!strcmp(only[i], rows[k].name)) {
                rows[kept++] = rows[k];
                break;
            }
    *nrows = kept;
    return NULL;
}

/* the LayerScale, BatchNorm and DyT rows: measured over fewer bytes and runs (reps_for) */
static int is_short_row(const bench_row *row)
{
    return row->dtype == KEEL_F32 && row->op >= OP_LS_FWD && row->op < OP_COUNT;
}

/* One row of the run: a case and an op row. */
typedef struct plan_item {
    const bench_case *c;
    bench_row row;
} plan_item;

/* The run in order: every case with every row (rows), or, quick, the quick set's cases with
 * those of rows that the set names for them. NULL when out of memory. */
static plan_item *make_plan(const bench_case *cases, size_t ncases, int quick,
                            const bench_row *rows, size_t nrows, size_t *nplan)
{
    const size_t nq = sizeof quick_set / sizeof quick_set[0];
    plan_item *plan = malloc((quick ? nq : ncases) * (nrows ? nrows : 1) * sizeof *plan);
    size_t n = 0;
    for (size_t ci = 0; plan && ci < (quick ? nq : ncases); ci++)
        for (size_t k = 0; k < nrows; k++) {
            int keep = !quick;
            for (int i = 0; quick && i < QUICK_NAMES && quick_set[ci].names[i]; i++)
                keep |= !strcmp(quick_set[ci].names[i], rows[k].name);
            if (keep) {
                plan[n].c = quick ? &quick_set[ci].c : &cases[ci];
                plan[n++].row = rows[k];
            }
        }
    *nplan = n;
    return plan;
}

static unsigned row_group(const bench_row *row)
{
    if (row->op >= OP_COUNT)
        return GROUP_I8;
    return row->dtype == KEEL_F32 ? GROUP_F32 : row->dtype == KEEL_BF16 ? GROUP_BF16 : GROUP_F16;
}

/* The buffers of the rows of plan[0..n) on plan[0]'s case (the tensors those rows need), and
 * the statistics the backwards read. 0 (said on stderr) on failure. */
static int start_case(keel_ctx *ctx, const bench_case *c, const plan_item *plan, size_t n,
                      buffers *b)
{
    unsigned groups = 0;
    int batchnorm = 0;
    for (size_t k = 0; k < n && plan[k].c == c; k++) {
        groups |= row_group(&plan[k].row);
        batchnorm |= row_group(&plan[k].row) == GROUP_F32 && plan[k].row.op >= OP_BN_FWD_TRAIN &&
                     plan[k].row.op <= OP_BN_BWD_TRAIN;
    }
    if (!alloc_buffers(b, c, groups)) {
        fprintf(stderr, "keel bench: out of memory for %zu x %zu\n", c->rows, c->dim);
        return 0;
    }
    /* the backward reads the forward's statistics (each dtype's forward row runs before its
     * backward row and rewrites them) */
    run_f32_op(ctx, OP_LN_FWD, c, b);
    /* and the BatchNorm training backward the training forward's saved mean and rstd */
    if (batchnorm && run_f32_op(ctx, OP_BN_FWD_TRAIN, c, b) != KEEL_OK) {
        fprintf(stderr, "keel bench: batchnorm fwd train: %s\n", keel_last_error());
        return 0;
    }
    return 1;
}

static void usage(FILE *to)
{
    fprintf(to, "usage: keel bench [--all | --demo | --rows R --dim D] [--dtype LIST] [--threads N] [--reps N] [--hot] [--norms] [--only NAME]... [--markdown]\n"
                "  Each op's median time beside two floors measured in the same run, interleaved\n"
                "  with it: the copy floor (the faster of memcpy and a streaming-store copy of the\n"
                "  op's bytes: 'of copy' = floor time / op time) and the op's own floor (a kernel\n"
                "  reading and writing the op's own streams, the statistics and gamma/beta included,\n"
                "  with trivial arithmetic, with ordinary and with streaming stores, the faster\n"
                "  taken and named under 'stores': 'of own'). A copy reads one stream where an op\n"
                "  may read three, so 'of copy' can pass 1; 'of own' cannot but by noise.\n"
                "  Without --all, --demo or --rows/--dim: a quick set of 13 rows (about 10 s): the\n"
                "  f32 norms forward and backward at 4096x768 and 4096x4096, add+ln fwd and\n"
                "  add+rms bwd at 4096x1024, layerscale fwd at 4096x16, layernorm fwd/bwd bf16\n"
                "  at 4096x768 (with --dtype f16 or i8: an f16 and two int8 rows there too);\n"
                "  progress on stderr.\n"
                "  --all         the full table: every row of the chosen dtypes at 4096x16, 4096x64,\n"
                "                256x1024, 4096x768, 4096x1024, 4096x4096, 1024x8192, 16384x8192\n"
                "                (make bench; minutes)\n"
                "  --demo        one 4096 x 1024 case (what make demo runs), without the\n"
                "                layerscale, batchnorm and dyt rows\n"
                "  --rows R --dim D  one R x D case instead of the default sizes (R, D in 1..2^30,\n"
                "                R x D at most 2^36)\n"
                "  --dtype LIST  comma-separated rows to run (default f32; the quick set: f32,bf16):\n"
                "                f32   float32 LayerNorm/RMSNorm, the fused add+norm rows, and\n"
                "                      layerscale fwd (reads x, f; writes h: 12 bytes an element),\n"
                "                      layerscale bwd (reads dh, f; writes dx, df: 16 bytes; the\n"
                "                      dlambda sum not counted), batchnorm fwd train (running\n"
                "                      statistics updated) and fwd infer (8 bytes), batchnorm bwd\n"
                "                      train (reads x, dy; writes dx: 12 bytes), dyt fwd (8 bytes)\n"
                "                      and dyt bwd (12 bytes)\n"
                "                bf16  LayerNorm/RMSNorm fwd and bwd, x y dy dx in bf16 (2 bytes an element)\n"
                "                f16   the same in fp16\n"
                "                i8    int8-output forwards, x in f32 or bf16, dynamic per-row scale\n"
                "                      (\"dyn\") or static per-tensor scale (\"static\")\n"
                "                all   all of them\n"
                "  --threads N   threads for keel and the floors, 0..1024 (default: all cores; 0 = all)\n"
                "  --reps N      at least N timed runs a row (default 7, at least 3); the layerscale,\n"
                "                batchnorm and dyt rows at least half as many (>= 3), over ~1 GB\n"
                "                (the quick set: a quarter of the bytes and time)\n"
                "  --hot         time back-to-back calls (op, op, ...; then memcpy, memcpy, ...;\n"
                "                then the streaming copy, then the own floors): outputs stay in\n"
                "                cache where they fit, as in the peers' benchmarks (default: op\n"
                "                and floors interleaved, the op's outputs out of cache)\n"
                "  --norms       of the f32 rows only LayerNorm and RMSNorm (the ones the peers run)\n"
                "  --only NAME   only the row of that name, as the table names it; repeat for\n"
                "                more (e.g. --only 'add+ln fwd' --only 'add, ln fwd')\n"
                "  --markdown    print a Markdown table\n");
}

int keel_cmd_bench(int argc, char **argv)
{
    const bench_case *cases = default_cases;
    size_t ncases = sizeof default_cases / sizeof default_cases[0];
    bench_case one = {0, 0};
    int threads = 0, min_reps = 7, markdown = 0, block_rows = 1, hot = 0, norms_only = 0, all = 0,
        dtype_given = 0;
    unsigned groups = GROUP_F32;
    const char *only[BENCH_ONLY_MAX];
    int nonly = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--demo")) {
            cases = demo_cases;
            ncases = 1;
            block_rows = 0;
        } else if (!strcmp(a, "--all")) {
            all = 1;
        } else if (!strcmp(a, "--markdown")) {
            markdown = 1;
        } else if (!strcmp(a, "--hot")) {
            hot = 1;
        } else if (!strcmp(a, "--norms")) {
            norms_only = 1;
        } else if (!strcmp(a, "--rows") || !strcmp(a, "--dim")) {
            uint64_t x;
            if (keel_arg_u64("bench", a, v, 1, BENCH_MAX_SIDE, &x))
                return 2;
            *(a[2] == 'r' ? &one.rows : &one.dim) = (size_t)x, i++;
        } else if (v && !strcmp(a, "--only")) {
            if (nonly == BENCH_ONLY_MAX) {
                fprintf(stderr, "keel bench: more than %d --only rows\n", BENCH_ONLY_MAX);
                return 2;
            }
            only[nonly++] = v, i++;
        } else if (!strcmp(a, "--threads")) {
            if (keel_arg_int("bench", a, v, 0, KEEL_ARG_MAX_THREADS, &threads))
                return 2;
            i++;
        } else if (!strcmp(a, "--reps")) {
            if (keel_arg_int("bench", a, v, 1, 1000000, &min_reps))
                return 2;
            i++;
        } else if (v && !strcmp(a, "--dtype")) {
            groups = parse_dtypes(v), i++, dtype_given = 1;
            if (!groups) {
                fprintf(stderr, "keel bench: --dtype '%s': expected a comma-separated list of f32, bf16, f16, i8, all\n",
                        v);
                usage(stderr);
                return 2;
            }
        } else {
            fprintf(stderr, "keel bench: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (one.rows || one.dim) {
        if (!one.rows || !one.dim) {
            fprintf(stderr, "keel bench: --rows and --dim go together\n");
            return 2;
        }
        if ((uint64_t)one.rows * one.dim > BENCH_MAX_ELEMS) { /* each side <= 2^30: no wrap */
            fprintf(stderr, "keel bench: --rows %zu x --dim %zu is %llu elements, more than 2^36 = %llu\n",
                    one.rows, one.dim, (unsigned long long)one.rows * one.dim, (unsigned long long)BENCH_MAX_ELEMS);
            return 2;
        }
        cases = &one;
        ncases = 1;
    }
    if (min_reps < 3)
        min_reps = 3;
    const int quick = !all && cases == default_cases;
    if (!dtype_given && quick)
        groups = GROUP_F32 | GROUP_BF16; /* the quick set's bf16 rows: one low-precision path */
    const int short_min_reps = (min_reps + 1) / 2 < 3 ? 3 : (min_reps + 1) / 2;
    bench_row rows[OP_COUNT + 8 + 8];
    size_t nrows = make_rows(rows, groups, block_rows, norms_only);
    const char *bad = keep_only(rows, &nrows, only, nonly);
    if (bad) {
        fprintf(stderr, "keel bench: --only '%s' names no row of this table; the rows are:\n", bad);
        for (size_t k = 0, n = make_rows(rows, groups, block_rows, norms_only); k < n; k++)
            fprintf(stderr, "  %s\n", rows[k].name);
        return 2;
    }
    size_t nplan = 0;
    plan_item *plan = make_plan(cases, ncases, quick, rows, nrows, &nplan);
    if (!plan) {
        fprintf(stderr, "keel bench: out of memory\n");
        return 1;
    }
    if (!nplan && quick) {
        fprintf(stderr,
                "keel bench: no row of the quick set is selected (--all: the full table)\n");
        free(plan);
        return 2;
    }
    int width = 14;
    for (size_t k = 0; k < nplan; k++)
        if ((int)strlen(plan[k].row.name) > width)
            width = (int)strlen(plan[k].row.name);

    keel_ctx *ctx;
    keel_status st = keel_ctx_create(&ctx, threads);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel bench: %s\n", keel_last_error());
        free(plan);
        return 1;
    }
    bench_streams *own = bench_streams_create(ctx);
    if (!own) {
        fprintf(stderr, "keel bench: out of memory for the floors\n");
        keel_ctx_destroy(ctx);
        free(plan);
        return 1;
    }
    int any_short = 0;
    for (size_t k = 0; k < nplan; k++)
        any_short |= is_short_row(&plan[k].row);
    char short_note[64] = "";
    if (any_short && short_min_reps < min_reps)
        snprintf(short_note, sizeof short_note, " (layerscale, batchnorm, dyt: >= %d)", short_min_reps);
    /* progress on stderr, never on stdout (--markdown): a counter rewritten in place on a
     * terminal, else one line before the table (which then stays in one piece where the two
     * streams go to one file) */
    const int tty = isatty(fileno(stderr));
    if (!tty)
        fprintf(stderr, "keel bench: %zu row%s%s\n", nplan, nplan == 1 ? "" : "s",
                quick ? " (the quick set; --all: the full table)" : "");
    printf("keel %s, isa %s, %d thread(s); median of >= %d runs%s, %s\n", keel_version_string(),
           keel_isa_name(keel_ctx_isa(ctx)), keel_ctx_threads(ctx), min_reps, short_note,
           hot ? "back-to-back calls (--hot)" : "op and floors interleaved");
    if (markdown)
        printf("\n| op | rows x dim | MiB moved | keel us | keel GB/s | memcpy GB/s | stream GB/s "
               "| fraction of copy floor "
               "| own floor GB/s | own floor stores | fraction of own floor |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|\n");
    else
        printf("%-*s %13s %9s %10s %9s %11s %11s %8s %9s %6s %8s\n", width, "op", "rows x dim",
               "MiB", "keel us", "keel GB/s", "memcpy GB/s", "stream GB/s", "of copy", "own GB/s",
               "stores", "of own");
    fflush(stdout);
    int failed = 0;
    buffers b = {0};
    const bench_case *c = NULL;
    for (size_t k = 0; k < nplan && !failed; k++) {
        const bench_row *row = &plan[k].row;
        char shape[32];
        snprintf(shape, sizeof shape, "%zux%zu", plan[k].c->rows, plan[k].c->dim);
        if (tty)
            fprintf(stderr, "\rkeel bench: %zu/%zu %-*s %-12s", k + 1, nplan, width, row->name,
                    shape);
        if (plan[k].c != c) {
            c = plan[k].c;
            free_buffers(&b);
            bench_streams_release(own);
            if (!start_case(ctx, c, plan + k, nplan - k, &b)) {
                failed = 1;
                break;
            }
        }
        if (set_lp_dtype(ctx, &b, row->dtype, c->rows * c->dim) != KEEL_OK) {
            fprintf(stderr, "%skeel bench: %s\n", tty ? "\n" : "", keel_last_error());
            failed = 1;
            break;
        }
        const size_t bytes = op_bytes(row, c);
        const bench_streams_spec spec = op_streams(row, c);
        if (!bench_streams_reserve(own, &spec)) {
            fprintf(stderr, "%skeel bench: out of memory for the own floor of %s at %s\n",
                    tty ? "\n" : "", row->name, shape);
            failed = 1;
            break;
        }
        /* warm-up, timed: a slow op (far from its floor) gets fewer runs, about 2 s of them
         * (the LayerScale, BatchNorm and DyT rows: a third of the bytes and of the time, and
         * at least short_min_reps runs); the quick set a quarter of that */
        const int short_row = is_short_row(row);
        const double max_s = (short_row ? 0.67 : 2.0) * (quick ? 0.25 : 1.0);
        const int row_min_reps = short_row ? short_min_reps : min_reps;
        const double tw0 = bench_now_s();
        keel_status row_st = run_op(ctx, row, c, &b);
        const double tw = bench_now_s() - tw0;
        char row_err[256] = "";
        if (row_st != KEEL_OK)
            snprintf(row_err, sizeof row_err, "%s", keel_last_error());
        const size_t target = (short_row ? (size_t)1 << 30 : (size_t)3 << 30) / (quick ? 4 : 1);
        int reps = reps_for(bytes, row_min_reps, target);
        if (tw > 0 && reps * tw > max_s)
            reps = (int)(max_s / tw) > row_min_reps ? (int)(max_s / tw) : row_min_reps;
        double *t_op = malloc(5 * (size_t)reps * sizeof(double));
        if (!t_op) {
            failed = 1;
            break;
        }
        double *t_memcpy = t_op + reps, *t_stream = t_op + 2 * reps, *t_own = t_op + 3 * reps,
               *t_own_nt = t_op + 4 * reps;
        /* copy half the bytes moved (a copy reads and writes each byte): up to 2n floats, into
         * y. The two copies read different sources, so that each source, like the op's inputs,
         * was last read a whole round before: one source for both, the streaming copy found
         * it still in L3 from memcpy at the sizes L3 holds (1024x8192: 32 against 25 GB/s),
         * a floor no op could meet from inputs read a round before. Neither source is an input
         * of the op: memcpy read dy until the own floor came, which handed the backwards their
         * dy fresh from L3 two steps before each run. The own floor has buffers of its own,
         * each read or written once a round too. */
        const char *src = (const char *)b.src2,
                   *src2 = (const char *)(b.src2 + 2 * c->rows * c->dim);
        char *dst = (char *)b.y;
        const size_t copy_bytes = bytes / 2;
        /* the own floor's two store kinds: both where streaming stores exist, the faster is
         * the floor (streaming wins beyond the caches, ordinary stores within them) */
        const int nwhat = bench_streams_can_stream(own) ? 5 : 4;
        /* interleaved: rep r times the op, then memcpy, the streaming copy, the own floor with
         * ordinary then streaming stores; --hot: the reps of each one after the other (run q is
         * the op for q < reps, then the others) */
        for (int q = 0; q < nwhat * reps; q++) {
            const int r = hot ? q % reps : q / nwhat, what = hot ? q / reps : q % nwhat;
            const double t0 = bench_now_s();
            if (what == 0) {
                st = run_op(ctx, row, c, &b);
                t_op[r] = bench_now_s() - t0;
                if (st != KEEL_OK && row_st == KEEL_OK) {
                    row_st = st;
                    snprintf(row_err, sizeof row_err, "%s", keel_last_error());
                }
            } else if (what == 1) {
                bench_copy(ctx, dst, src, copy_bytes, BENCH_COPY_MEMCPY);
                t_memcpy[r] = bench_now_s() - t0;
            } else if (what == 2) {
                bench_copy(ctx, dst, src2, copy_bytes, BENCH_COPY_STREAM);
                t_stream[r] = bench_now_s() - t0;
            } else if (what == 3) {
                bench_streams_run(own, &spec, BENCH_STORE_PLAIN);
                t_own[r] = bench_now_s() - t0;
            } else {
                bench_streams_run(own, &spec, BENCH_STORE_STREAM);
                t_own_nt[r] = bench_now_s() - t0;
            }
        }
        if (row_st != KEEL_OK) {
            fprintf(stderr, "%skeel bench: %s: %s\n", tty ? "\n" : "", row->name, row_err);
            failed = 1;
        }
        const double mo = bench_median(t_op, reps), mm = bench_median(t_memcpy, reps),
                     ms = bench_median(t_stream, reps), mp = bench_median(t_own, reps),
                     mn = nwhat == 5 ? bench_median(t_own_nt, reps) : mp;
        const double floor_t = mm < ms ? mm : ms, own_t = mn < mp ? mn : mp;
        const char *stores = mn < mp ? "stream" : "plain";
        const double gb = (double)bytes / 1e9;
        if (tty) /* the counter's line cleared before the row */
            fprintf(stderr, "\r%*s\r", width + 40, "");
        if (markdown)
            printf("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | %s | %.2f |\n",
                   row->name, shape, (double)bytes / 1048576.0, mo * 1e6, gb / mo, gb / mm, gb / ms,
                   floor_t / mo, gb / own_t, stores, own_t / mo);
        else
            printf("%-*s %13s %9.1f %10.1f %9.1f %11.1f %11.1f %8.2f %9.1f %6s %8.2f\n", width,
                   row->name, shape, (double)bytes / 1048576.0, mo * 1e6, gb / mo, gb / mm, gb / ms,
                   floor_t / mo, gb / own_t, stores, own_t / mo);
        fflush(stdout);
        free(t_op);
    }
    if (tty)
        fprintf(stderr, "\r%*s\r", width + 40, "");
    free_buffers(&b);
    free(plan);
    bench_streams_destroy(own);
    keel_ctx_destroy(ctx);
    return failed;
}
