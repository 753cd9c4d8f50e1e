/*
 * test_block_determinism: keel.h promises every output of the transformer-block operations
 * bitwise identical for any thread count and on every instruction-set path. Each operation
 * (fused add + LayerNorm / RMSNorm forward and backward, LayerScale, BatchNorm in training and
 * inference, DyT), in a plain and a full configuration (alpha, lambda, bias, gamma, beta, dh,
 * h recomputed, Gemma's flag, every gradient), runs on shapes with many rows (rows split
 * between threads, parameter gradients gathered from row-block partials; BatchNorm's columns
 * split) and wide rows; every output is compared bit for bit with the first path on one thread,
 * over thread counts 1, 2, 3, 4, 7 and every path this machine runs. Inputs are mixed
 * adversarial rows, all finite (NaN payloads are not promised). Large shapes (beyond L2: the
 * SIMD paths' row pipelines and streamed stores) run every op on 1 and 2 threads. An op whose
 * kernels on a path are the scalar kernels themselves (the neon path's fused add + norm and
 * BatchNorm, until converted: kernel_list.c) is not run on that path: the operator layer is the
 * same for every path, so it would give the scalar path's bits by construction.
 */
#include "block_test_util.h"
#include "kernels.h"

typedef struct shape {
    size_t rows, dim, pad;
    int zeros; /* every third row of x and r all -0.0 (h = -0.0: the sign of a zero mean) */
    int cancel; /* every third row (the next ones) of x N(0, 1) but one 2^60 and one -2^60, r
                 * zero: which small terms survive in h's sum depends on the order of the adds
                 * (2^60 + 1 is 2^60 in double), so a path that adds in another order than the
                 * scalar tree changes the mean (in about 3 rows of 10 of 16 floats) */
} shape;

static const shape shapes[] = {
    {1000, 333, 0, 0, 0}, {4097, 64, 0, 0, 0}, {3, 8191, 5, 0, 0}, {1, 65536, 0, 0, 0}, {129, 1025, 7, 0, 0}, {7, 1, 2, 0, 0},
    /* around the vector widths (BatchNorm's column tails, LayerScale's row tails) */
    {2000, 15, 1, 0, 0}, {1500, 16, 0, 0, 0}, {1200, 17, 3, 0, 0}, {900, 33, 0, 0, 0}, {300, 257, 9, 0, 0},
    /* rows of signed zeros and order-sensitive rows, short rows taken in batches (eight at a time
     * on AVX-512, four on AVX2) */
    {64, 16, 0, 1, 1}, {45, 13, 3, 1, 1}, {30, 40, 0, 1, 1},
};
#if defined(__SANITIZE_ADDRESS__)
static const int thread_counts[] = {1, 3}; /* the sanitizer build: the same paths, less time */
#else
static const int thread_counts[] = {1, 2, 3, 4, 7};
#endif

typedef enum op_kind { OP_ADD_LN, OP_ADD_RMS, OP_LAYERSCALE, OP_BN_TRAIN, OP_BN_EVAL, OP_DYT, OP_COUNT } op_kind;
static const char *const op_names[OP_COUNT] = {"add+layernorm", "add+rmsnorm", "layerscale",
                                               "batchnorm train", "batchnorm eval", "dyt"};

/* The inputs of one shape (shared by every op) and the outputs of one run, all in one block
 * so that a run is compared with one memcmp per output. */
typedef struct inputs {
    size_t rows, dim, stride;
    float *x, *r, *dy, *dh, *lambda, *bias, *gamma, *beta, *rm, *rv;
} inputs;

enum { OUT_ROWS = 5, OUT_COLS = 9 };
typedef struct outputs {
    float *rowbuf[OUT_ROWS]; /* h, y, dx, dr, (spare) : rows x dim */
    float *colbuf[OUT_COLS]; /* mean, rstd (rows), dgamma, dbeta, dlambda, dbias, rm, rv, dalpha */
} outputs;

static outputs outputs_alloc(const inputs *in)
{
    outputs o;
    for (int i = 0; i < OUT_ROWS; i++)
        o.rowbuf[i] = test_alloc(in->rows * in->dim);
    for (int i = 0; i < OUT_COLS; i++)
        o.colbuf[i] = test_alloc(in->rows > in->dim ? in->rows : in->dim);
    return o;
}

static void outputs_reset(outputs *o, const inputs *in)
{
    const size_t n = in->rows > in->dim ? in->rows : in->dim;
    for (int i = 0; i < OUT_ROWS; i++)
        test_fill_sentinel(o->rowbuf[i], in->rows * in->dim);
    for (int i = 0; i < OUT_COLS; i++)
        test_fill_sentinel(o->colbuf[i], n);
    memcpy(o->colbuf[6], in->rm, in->dim * sizeof(float)); /* running statistics: updated */
    memcpy(o->colbuf[7], in->rv, in->dim * sizeof(float));
}

static void outputs_free(outputs *o)
{
    for (int i = 0; i < OUT_ROWS; i++)
        free(o->rowbuf[i]);
    for (int i = 0; i < OUT_COLS; i++)
        free(o->colbuf[i]);
}

static keel_status run(keel_ctx *ctx, op_kind op, int full, const inputs *in, outputs *o)
{
    const size_t rows = in->rows, dim = in->dim, s = in->stride;
    float *h = o->rowbuf[0], *y = o->rowbuf[1], *dx = o->rowbuf[2], *dr = o->rowbuf[3];
    float *mean = o->colbuf[0], *rstd = o->colbuf[1], *dg = o->colbuf[2], *db = o->colbuf[3];
    float *dl = o->colbuf[4], *dbias = o->colbuf[5], *rm = o->colbuf[6], *rv = o->colbuf[7];
    float *dalpha = o->colbuf[8];
    const keel_tensor x = keel_f32(in->x, s), r = keel_f32(in->r, s), dy = keel_f32(in->dy, s);
    keel_residual res = keel_residual_add(x, r);
    if (full) {
        res.alpha = 2.6321480259f;
        res.lambda = in->lambda;
        res.bias = in->bias;
    }
    const keel_residual_grads g = {keel_f32(dx, dim), full ? keel_f32(dr, dim) : keel_none(),
                                   full ? dl : NULL, full ? dbias : NULL};
    const keel_tensor dh = full ? keel_f32(in->dh, s) : keel_none();
    keel_status st;
    int64_t nbt = 0;
    switch (op) {
    case OP_ADD_LN:
        st = keel_add_layernorm_fwd(ctx, rows, dim, &res, keel_f32(h, dim), keel_f32(y, dim), in->gamma,
                                    full ? in->beta : NULL, 1e-5f, mean, rstd, 0);
        /* full: h and statistics recomputed; plain: the pre-norm fast path */
        return st ? st : keel_add_layernorm_bwd(ctx, rows, dim, dy, full ? dh : keel_f32(in->dh, s), &res,
                                                full ? keel_none() : keel_f32(h, dim), full ? NULL : mean,
                                                full ? NULL : rstd, in->gamma, 1e-5f, &g, dg, db, 0);
    case OP_ADD_RMS: {
        const unsigned f = full ? KEEL_FLAG_GAMMA_PLUS_ONE : 0;
        st = keel_add_rmsnorm_fwd(ctx, rows, dim, &res, keel_f32(h, dim), keel_f32(y, dim), in->gamma, 1e-6f,
                                  rstd, f);
        return st ? st : keel_add_rmsnorm_bwd(ctx, rows, dim, dy, full ? dh : keel_f32(in->dh, s), &res,
                                              full ? keel_none() : keel_f32(h, dim), full ? NULL : rstd,
                                              in->gamma, 1e-6f, &g, dg, f);
    }
    case OP_LAYERSCALE:
        st = keel_layerscale_fwd(ctx, rows, dim, x, r, in->lambda, keel_f32(h, dim), 0);
        return st ? st : keel_layerscale_bwd(ctx, rows, dim, dy, r, in->lambda, keel_f32(dx, dim),
                                             keel_f32(dr, dim), dl, 0);
    case OP_BN_TRAIN:
    case OP_BN_EVAL: {
        const int training = op == OP_BN_TRAIN && rows > 1;
        st = keel_batchnorm_fwd(ctx, rows, dim, x, keel_f32(y, dim), in->gamma, full ? in->beta : NULL, 1e-5f,
                                training, full ? NAN : 0.1f, rm, rv, &nbt, mean, rstd, 0);
        return st ? st : keel_batchnorm_bwd(ctx, rows, dim, dy, x, full && training ? NULL : mean,
                                            full && training ? NULL : rstd, in->gamma, 1e-5f, training,
                                            keel_f32(dx, dim), dg, db, 0);
    }
    default:
        st = keel_dyt_fwd(ctx, rows, dim, x, keel_f32(y, dim), 0.5f, in->gamma, full ? in->beta : NULL, 0);
        return st ? st : keel_dyt_bwd(ctx, rows, dim, dy, x, 0.5f, in->gamma, keel_f32(dx, dim), dalpha, dg,
                                      db, 0);
    }
}

static void compare(const char *where, const inputs *in, const outputs *got, const outputs *base)
{
    const size_t n = in->rows > in->dim ? in->rows : in->dim;
    for (int i = 0; i < OUT_ROWS + OUT_COLS; i++) {
        const float *a = i < OUT_ROWS ? got->rowbuf[i] : got->colbuf[i - OUT_ROWS];
        const float *b = i < OUT_ROWS ? base->rowbuf[i] : base->colbuf[i - OUT_ROWS];
        const size_t len = i < OUT_ROWS ? in->rows * in->dim : n;
        const size_t k = test_first_diff(a, b, len);
        test_check(k == len, "%s: output %d differs from the baseline at index %zu (%.9g vs %.9g)", where, i,
                   k, k < len ? (double)a[k] : 0.0, k < len ? (double)b[k] : 0.0);
    }
}

static inputs inputs_make(keel_rng *rng, const shape *s)
{
    inputs in;
    in.rows = s->rows;
    in.dim = s->dim;
    in.stride = s->dim + s->pad;
    in.x = bt_in(rng, KEEL_CASE_MIXED, s->rows, s->dim, in.stride);
    in.r = bt_in(rng, KEEL_CASE_NORMAL, s->rows, s->dim, in.stride);
    in.dy = bt_in(rng, KEEL_CASE_NORMAL, s->rows, s->dim, in.stride);
    in.dh = bt_in(rng, KEEL_CASE_NORMAL, s->rows, s->dim, in.stride);
    in.lambda = bt_vec(rng, s->dim, 0.1, 0.05);
    in.bias = bt_vec(rng, s->dim, 0.0, 0.25);
    in.gamma = bt_vec(rng, s->dim, 1.0, 0.5);
    in.beta = bt_vec(rng, s->dim, 0.0, 0.25);
    in.rm = bt_vec(rng, s->dim, 0.0, 1.0);
    in.rv = bt_vec(rng, s->dim, 2.0, 0.5);
    for (size_t r = 0; s->zeros && r < s->rows; r += 3)
        for (size_t j = 0; j < s->dim; j++)
            in.x[r * in.stride + j] = in.r[r * in.stride + j] = -0.0f;
    for (size_t r = 1; s->cancel && s->dim > 1 && r < s->rows; r += 3) {
        float *xr = in.x + r * in.stride;
        for (size_t j = 0; j < s->dim; j++) {
            xr[j] = (float)keel_rng_normal(rng);
            in.r[r * in.stride + j] = 0.0f;
        }
        const size_t p = keel_rng_below(rng, s->dim), q = (p + 1 + keel_rng_below(rng, s->dim - 1)) % s->dim;
        xr[p] = 0x1p60f;
        xr[q] = -0x1p60f;
    }
    return in;
}

static void inputs_free(inputs *in)
{
    float *all[] = {in->x, in->r, in->dy, in->dh, in->lambda, in->bias, in->gamma, in->beta, in->rm, in->rv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* Calls from beyond L2 take the SIMD forwards' other plans: rows pipelined (a row read from
 * memory while another is written, src/kernels/f32_add_layernorm_simd.h; pipe_fwd_wanted in
 * add_norm_simd.h says from which size), and outputs of more than ADD_NORM_STREAM_ABOVE
 * (8 MiB) streamed with non-temporal stores when their rows start on the vector's boundary (packed rows of 64-byte aligned buffers: all of them; other strides:
 * some). Rows longer than the pipeline's buffers go one at a time. Every shape, in a plain and
 * a full configuration (alpha, lambda, bias, mean and rstd out) with h stored or not, on 1 and
 * 2 threads: h, y, mean and rstd the bits of the first path on one thread. */
typedef struct big_shape {
    size_t rows, dim, stride;
} big_shape;

/* count buffers of n floats, 64-byte aligned (free each) */
static void big_buffers(float **b, int count, size_t n)
{
    for (int i = 0; i < count; i++) {
        b[i] = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
        if (!b[i])
            test_fatal("out of memory");
    }
}

static void large_outputs(keel_ctx *ctx, keel_rng *rng, const keel_isa *isas, int n_isas)
{
    static const big_shape shapes_big[] = {
        {4096, 1024, 1024}, /* 16 MiB a tensor: streamed */
        {700, 1500, 1500},  /* rows start aligned every 16th row */
        {160, 4097, 4100},  /* a tail, offset rows */
        {40, 16384, 16384}, /* longer than the pipeline's buffers */
        {300, 700, 704},    /* 0.8 MiB: pipelined on one thread (PIPE_FWD_FROM), not on two */
        {2500, 64, 64},     /* the shortest rows that pipeline in cache */
        {262147, 16, 16},   /* rows of 16 in batches of eight (AVX-512), streamed, 3 left over */
    };
    for (size_t si = 0; si < sizeof shapes_big / sizeof shapes_big[0]; si++) {
        const big_shape s = shapes_big[si];
        const size_t n = s.rows * s.stride;
        float *buf[6];
        big_buffers(buf, 6, n);
        float *x = buf[0], *r = buf[1], *h = buf[2], *y = buf[3], *h0 = buf[4], *y0 = buf[5];
        for (size_t i = 0; i < s.rows; i++) {
            keel_case_fill_row(rng, KEEL_CASE_MIXED, x + i * s.stride, s.dim);
            keel_case_fill_normal(rng, r + i * s.stride, s.dim);
        }
        float *gamma = bt_vec(rng, s.dim, 1.0, 0.5), *beta = bt_vec(rng, s.dim, 0.0, 0.25);
        float *lambda = bt_vec(rng, s.dim, 0.1, 0.05), *bias = bt_vec(rng, s.dim, 0.0, 0.25);
        float *stats = test_alloc(4 * s.rows), *m = stats, *rs = stats + s.rows;
        float *m0 = stats + 2 * s.rows, *rs0 = stats + 3 * s.rows;
        for (int cfg = 0; cfg < 3; cfg++) /* plain; full with h; full without h (post-norm) */
            for (int rms = 0; rms <= 1; rms++)
                for (int i = 0; i < n_isas; i++)
                    for (int t = 1; t <= 2; t++) {
                        const int base = i == 0 && t == 1, full = cfg > 0, with_h = cfg < 2;
                        float *hh = base ? h0 : h, *yy = base ? y0 : y, *mm = base ? m0 : m, *rr = base ? rs0 : rs;
                        keel_residual res = keel_residual_add(keel_f32(x, s.stride), keel_f32(r, s.stride));
                        if (full) {
                            res.alpha = 0.75f;
                            res.lambda = lambda;
                            res.bias = bias;
                        }
                        const keel_tensor ht = with_h ? keel_f32(hh, s.stride) : keel_none();
                        test_set_isa(ctx, isas[i]);
                        keel_ctx_set_threads(ctx, t);
                        test_fill_sentinel(hh, n);
                        test_fill_sentinel(yy, n);
                        test_fill_sentinel(mm, s.rows);
                        test_fill_sentinel(rr, s.rows);
                        keel_status st = rms ? keel_add_rmsnorm_fwd(ctx, s.rows, s.dim, &res, ht, keel_f32(yy, s.stride),
                                                                    gamma, 1e-6f, full ? rr : NULL, 0)
                                             : keel_add_layernorm_fwd(ctx, s.rows, s.dim, &res, ht, keel_f32(yy, s.stride),
                                                                      gamma, full ? beta : NULL, 1e-5f,
                                                                      full ? mm : NULL, full ? rr : NULL, 0);
                        test_check(st == KEEL_OK, "large add+norm: %s", keel_status_str(st));
                        if (!base) {
                            const size_t dh = test_first_diff(h, h0, n), dy = test_first_diff(y, y0, n);
                            const size_t dm = test_first_diff(m, m0, s.rows), dr = test_first_diff(rs, rs0, s.rows);
                            test_check(dh == n && dy == n && dm == s.rows && dr == s.rows,
                                       "large add+%s %zux%zu stride %zu config %d isa %s threads %d: h differs "
                                       "at %zu, y at %zu, mean at %zu, rstd at %zu", rms ? "rmsnorm" : "layernorm",
                                       s.rows, s.dim, s.stride, cfg, keel_isa_name(isas[i]), t, dh, dy, dm, dr);
                        }
                    }
        for (int i = 0; i < 6; i++)
            free(buf[i]);
        float *vecs[] = {gamma, beta, lambda, bias, stats};
        for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++)
            free(vecs[i]);
    }
}

/* The backwards of the same large shapes (the operator gives the kernels its memory hints:
 * prefetch, streamed dx and dr; the SIMD paths then pipeline rows whose statistics are given):
 * the pre-norm call (h saved, statistics given, dx over dh in place, dgamma, dbeta) and a full
 * one (alpha, lambda, bias, h and statistics recomputed, dx and dr, every parameter gradient),
 * on 1 and 2 threads, bitwise those of the first path on one thread. */
static void large_backwards(keel_ctx *ctx, keel_rng *rng, const keel_isa *isas, int n_isas)
{
    static const big_shape shapes_big[] = {{4096, 1024, 1024}, {700, 1500, 1500}, {160, 4097, 4100}, {40, 16384, 16384}};
    for (size_t si = 0; si < sizeof shapes_big / sizeof shapes_big[0]; si++) {
        const big_shape s = shapes_big[si];
        const size_t n = s.rows * s.stride, d = s.dim;
        enum { X, R, H, DY, DH, DX, DR, DX0, DR0, NBUF };
        float *b[NBUF];
        big_buffers(b, NBUF, n);
        for (size_t i = 0; i < s.rows; i++) {
            keel_case_fill_row(rng, KEEL_CASE_MIXED, b[X] + i * s.stride, d);
            keel_case_fill_normal(rng, b[R] + i * s.stride, d);
            keel_case_fill_normal(rng, b[DY] + i * s.stride, d);
            keel_case_fill_normal(rng, b[DH] + i * s.stride, d);
        }
        float *gamma = bt_vec(rng, d, 1.0, 0.5), *beta = bt_vec(rng, d, 0.0, 0.25);
        float *lambda = bt_vec(rng, d, 0.1, 0.05), *bias = bt_vec(rng, d, 0.0, 0.25);
        float *vecs = test_alloc(2 * s.rows + 16 * d), *mean = vecs, *rstd = vecs + s.rows;
        float *pg = rstd + s.rows; /* 4 parameter gradients, then their base copies */
        const keel_tensor xt = keel_f32(b[X], s.stride), rt = keel_f32(b[R], s.stride);
        for (int rms = 0; rms <= 1; rms++) {
            keel_residual res = keel_residual_add(xt, rt);
            test_set_isa(ctx, isas[0]);
            keel_ctx_set_threads(ctx, 1);
            keel_status st = rms ? keel_add_rmsnorm_fwd(ctx, s.rows, d, &res, keel_f32(b[H], s.stride), keel_f32(b[DX], s.stride),
                                                        gamma, 1e-6f, rstd, 0)
                                 : keel_add_layernorm_fwd(ctx, s.rows, d, &res, keel_f32(b[H], s.stride), keel_f32(b[DX], s.stride),
                                                          gamma, beta, 1e-5f, mean, rstd, 0);
            test_check(st == KEEL_OK, "large backward's forward: %s", keel_status_str(st));
            for (int full = 0; full <= 1; full++)
                for (int i = 0; i < n_isas; i++)
                    for (int t = 1; t <= 2; t++) {
                        const int base = i == 0 && t == 1;
                        float *dx = base ? b[DX0] : b[DX], *dr = base ? b[DR0] : b[DR];
                        float *g = pg + (base ? 8 : 0) * d;
                        res = keel_residual_add(xt, rt);
                        if (full) {
                            res.alpha = 0.75f;
                            res.lambda = lambda;
                            res.bias = bias;
                        }
                        /* pre-norm: dx starts as dh (in place); full: fresh outputs */
                        memcpy(dx, full ? b[X] : b[DH], n * sizeof(float));
                        test_fill_sentinel(dr, n);
                        memset(g, 0, 4 * d * sizeof(float));
                        const keel_residual_grads gr = {keel_f32(dx, s.stride), full ? keel_f32(dr, s.stride) : keel_none(),
                                                        full ? g + 2 * d : NULL, full ? g + 3 * d : NULL};
                        const keel_tensor dht = full ? keel_f32(b[DH], s.stride) : keel_f32(dx, s.stride);
                        const keel_tensor ht = full ? keel_none() : keel_f32(b[H], s.stride);
                        test_set_isa(ctx, isas[i]);
                        keel_ctx_set_threads(ctx, t);
                        st = rms ? keel_add_rmsnorm_bwd(ctx, s.rows, d, keel_f32(b[DY], s.stride), dht, &res, ht,
                                                        full ? NULL : rstd, gamma, 1e-6f, &gr, g, 0)
                                 : keel_add_layernorm_bwd(ctx, s.rows, d, keel_f32(b[DY], s.stride), dht, &res, ht,
                                                          full ? NULL : mean, full ? NULL : rstd, gamma, 1e-5f, &gr,
                                                          g, g + d, 0);
                        test_check(st == KEEL_OK, "large add+norm backward: %s (%s)", keel_status_str(st), keel_last_error());
                        if (!base) {
                            const size_t ix = test_first_diff(b[DX], b[DX0], n), ir = test_first_diff(b[DR], b[DR0], n);
                            const size_t ig = test_first_diff(pg, pg + 8 * d, 4 * d);
                            test_check(ix == n && ir == n && ig == 4 * d,
                                       "large add+%s backward %zux%zu stride %zu %s isa %s threads %d: dx differs "
                                       "at %zu, dr at %zu, parameter gradients at %zu", rms ? "rmsnorm" : "layernorm",
                                       s.rows, d, s.stride, full ? "full" : "pre-norm", keel_isa_name(isas[i]), t,
                                       ix, ir, ig);
                        }
                    }
        }
        for (int i = 0; i < NBUF; i++)
            free(b[i]);
        float *v[] = {gamma, beta, lambda, bias, vecs};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            free(v[i]);
    }
}

/* Whether every kernel op uses on path isa is the scalar kernel itself (see the top). */
typedef void (*any_fn)(void);
static int op_is_scalar(keel_isa isa, op_kind op)
{
    const keel_kernels *k = keel_kernels_for(isa), *s = keel_kernels_for(KEEL_ISA_SCALAR);
    if (k == s)
        return 1;
    switch (op) {
    case OP_ADD_LN:
        return (any_fn)k->f32_add_layernorm_fwd == (any_fn)s->f32_add_layernorm_fwd &&
               (any_fn)k->f32_add_layernorm_bwd == (any_fn)s->f32_add_layernorm_bwd;
    case OP_ADD_RMS:
        return (any_fn)k->f32_add_rmsnorm_fwd == (any_fn)s->f32_add_rmsnorm_fwd &&
               (any_fn)k->f32_add_rmsnorm_bwd == (any_fn)s->f32_add_rmsnorm_bwd;
    case OP_LAYERSCALE:
        return (any_fn)k->f32_layerscale_fwd == (any_fn)s->f32_layerscale_fwd &&
               (any_fn)k->f32_layerscale_bwd == (any_fn)s->f32_layerscale_bwd;
    case OP_BN_TRAIN:
    case OP_BN_EVAL:
        return (any_fn)k->f32_batchnorm_stats == (any_fn)s->f32_batchnorm_stats &&
               (any_fn)k->f32_batchnorm_apply == (any_fn)s->f32_batchnorm_apply &&
               (any_fn)k->f32_batchnorm_bwd == (any_fn)s->f32_batchnorm_bwd;
    default:
        return (any_fn)k->f32_dyt_fwd == (any_fn)s->f32_dyt_fwd &&
               (any_fn)k->f32_dyt_bwd == (any_fn)s->f32_dyt_bwd;
    }
}

/* The paths (after the first) that run their own fused add + norm kernels, first the first:
 * the large shapes below exercise those alone. */
static int add_norm_paths(const keel_isa *isas, int n_isas, keel_isa *out)
{
    int n = 0;
    for (int i = 0; i < n_isas; i++)
        if (i == 0 || !op_is_scalar(isas[i], OP_ADD_LN) || !op_is_scalar(isas[i], OP_ADD_RMS))
            out[n++] = isas[i];
    return n;
}

/* Every op of [op0, op1), plain and full, on every path and thread count: each output bitwise
 * that of the first path on one thread. */
static void check_shape(keel_ctx *ctx, keel_rng *rng, const shape *sh, const keel_isa *isas,
                        int n_isas, int op0, int op1, const int *threads, size_t n_threads)
{
    inputs in = inputs_make(rng, sh);
    outputs base = outputs_alloc(&in), got = outputs_alloc(&in);
    for (int op = op0; op < op1; op++)
        for (int full = 0; full <= 1; full++) {
            char where[160];
            test_set_isa(ctx, isas[0]);
            keel_ctx_set_threads(ctx, 1);
            outputs_reset(&base, &in);
            keel_status st = run(ctx, (op_kind)op, full, &in, &base);
            if (!test_check(st == KEEL_OK, "%s %zux%zu: %s (%s)", op_names[op], in.rows, in.dim,
                            keel_status_str(st), keel_last_error()))
                continue;
            for (int i = 0; i < n_isas; i++)
                for (size_t t = 0; t < n_threads && !(i > 0 && op_is_scalar(isas[i], (op_kind)op)); t++) {
                    /* the quick sweep: not the baseline's own path and thread count again, nor,
                     * on the shapes beyond the caches (there for the SIMD paths' streamed
                     * stores), the first path on more threads (the other shapes split it) */
                    if (test_quick() && i == 0 && (threads[t] == 1 || in.rows * in.dim >= ((size_t)1 << 22)))
                        continue;
                    snprintf(where, sizeof where, "%s%s %zux%zu isa %s threads %d", op_names[op],
                             full ? " (full)" : "", in.rows, in.dim, keel_isa_name(isas[i]), threads[t]);
                    test_set_isa(ctx, isas[i]);
                    keel_ctx_set_threads(ctx, threads[t]);
                    outputs_reset(&got, &in);
                    st = run(ctx, (op_kind)op, full, &in, &got);
                    if (test_check(st == KEEL_OK, "%s: %s", where, keel_status_str(st)))
                        compare(where, &in, &got, &base);
                }
        }
    outputs_free(&base);
    outputs_free(&got);
    inputs_free(&in);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_block_determinism"));
    keel_isa isas[3];
    const int n_isas = test_isas(isas);
    keel_ctx *ctx = test_ctx(1);
    for (int i = 1; i < n_isas; i++)
        for (int op = 0; op < OP_COUNT; op++)
            if (op_is_scalar(isas[i], (op_kind)op))
                printf("path %s: %s runs the scalar kernels (not compared)\n", keel_isa_name(isas[i]),
                       op_names[op]);
    /* the quick sweep (test_common.h: sanitizers, qemu in make test-neon): 1 and 3 threads */
    static const int quick_threads[] = {1, 3};
    const int quick = test_quick();
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        check_shape(ctx, &rng, &shapes[k], isas, n_isas, 0, OP_COUNT,
                    quick ? quick_threads : thread_counts,
                    quick ? 2 : sizeof thread_counts / sizeof thread_counts[0]);
    /* the large shapes exist for the SIMD paths' own plans (pipelines, streamed stores): run
     * where a path has its own fused add + norm kernels */
    keel_isa add_isas[3];
    const int n_add = add_norm_paths(isas, n_isas, add_isas);
    if (n_add > 1) {
        large_outputs(ctx, &rng, add_isas, n_add);
        large_backwards(ctx, &rng, add_isas, n_add);
    }
    /* LayerScale, BatchNorm and DyT beyond the caches: LayerScale streams h, dx and df (a
     * call's part of 16 MiB or more; the backward when the operator hints it), BatchNorm y and
     * dx (likewise), rows that start aligned; 16 MiB tensors stream on one thread, not on two */
    static const shape big[] = {{4096, 1024, 0, 0, 0}, {1100, 4097, 3, 0, 0}};
    static const int big_threads[] = {1, 2};
    for (size_t k = 0; k < sizeof big / sizeof big[0]; k++)
        check_shape(ctx, &rng, &big[k], isas, n_isas, OP_LAYERSCALE, OP_COUNT, big_threads, 2);
    keel_ctx_destroy(ctx);
    return test_finish();
}
