/*
 * test_kernels_bitwise: every SIMD kernel path this machine runs gives exactly the bits of the
 * scalar path (kernels.h fixes one reduction order and one formula for all of them). The kernels
 * are called directly through keel_kernels_for, on the same inputs, and every output buffer is
 * compared bit for bit as a whole: the rows, the padding between them, the bytes before the
 * first row and after the last (so a stray write shows too). NaN payloads: see `same` below.
 *
 * Per width (1..70 all, then sizes around powers of two up to 65536) two batches: one row of
 * each adversarial kind (NaN, Inf, both infinities, signalling NaN, 3e38, denormals, zeros,
 * cancelling +-2^k pairs, ...) and a finite batch (so that dgamma/dbeta partials, which one NaN
 * row poisons, are compared on real numbers too); then two widths with enough rows to run the
 * variants the SIMD paths pick for tensors beyond L2. Strides and the starts of all arrays are
 * random (unaligned); every combination of gamma/beta, saved statistics, in place,
 * accumulate, dx, dgamma, dbeta is run.
 */
#include <math.h>

#include "kernels.h"
#include "test_common.h"

#ifndef GUARD
#define GUARD 16 /* floats after every array (build with -DGUARD=0 under ASan to catch over-reads) */
#endif
#ifndef MAX_PRINT
#define MAX_PRINT 20 /* mismatches printed in full */
#endif

/* ---- rows --------------------------------------------------------------------------------- */

typedef enum row_kind {
    R_NORMAL, R_OFFSET_1E6, R_CONSTANT, R_TINY_VAR, R_HUGE_1E30, R_HUGE_3E38, R_DENORMAL,
    R_ZERO, R_NEG_ZERO, R_WIDE, R_CANCEL, R_ONE_NAN, R_ONE_INF, R_BOTH_INF, R_NAN_MIX, R_SNAN,
    R_LIBRARY, /* a row from keel_case_fill_row (any of the reference's kinds) */
    R_COUNT
} row_kind;
#define R_FIRST_NONFINITE R_ONE_NAN

static const char *const row_names[R_COUNT] = {
    "normal", "offset1e6", "constant", "tinyvar", "huge1e30", "huge3e38", "denormal",
    "zero", "negzero", "wide", "cancel", "one-nan", "one-inf", "both-inf", "nan-mix", "snan", "library",
};

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* A quiet NaN of random sign and payload. */
static float random_qnan(keel_rng *rng)
{
    return from_bits((uint32_t)(keel_rng_next(rng) & 0x803fffffu) | 0x7fc00000u);
}

static void fill_row(keel_rng *rng, row_kind kind, float *row, size_t dim)
{
    const double s = pow(10.0, keel_rng_range(rng, -2.0, 2.0));
    for (size_t j = 0; j < dim; j++)
        row[j] = (float)(s * keel_rng_normal(rng));
    switch (kind) {
    case R_OFFSET_1E6:
        for (size_t j = 0; j < dim; j++)
            row[j] = (float)(1e6 * s + s * keel_rng_normal(rng));
        break;
    case R_CONSTANT:
        for (size_t j = 0; j < dim; j++)
            row[j] = row[0];
        break;
    case R_TINY_VAR:
        for (size_t j = 0; j < dim; j++)
            row[j] = (float)(1.0 + 1e-7 * keel_rng_normal(rng));
        break;
    case R_HUGE_1E30:
        for (size_t j = 0; j < dim; j++)
            row[j] = (float)(1e30 * keel_rng_normal(rng));
        break;
    case R_HUGE_3E38:
        for (size_t j = 0; j < dim; j++)
            row[j] = (float)keel_rng_range(rng, -3e38, 3e38);
        break;
    case R_DENORMAL:
        for (size_t j = 0; j < dim; j++)
            row[j] = from_bits((uint32_t)(keel_rng_next(rng) & 0x807fffffu));
        break;
    case R_ZERO:
    case R_NEG_ZERO:
        for (size_t j = 0; j < dim; j++)
            row[j] = kind == R_ZERO ? 0.0f : -0.0f;
        break;
    case R_WIDE: /* any finite float: random sign, exponent and mantissa */
        for (size_t j = 0; j < dim; j++) {
            uint32_t b;
            do
                b = (uint32_t)keel_rng_next(rng);
            while ((b & 0x7f800000u) == 0x7f800000u);
            row[j] = from_bits(b);
        }
        break;
    case R_CANCEL:
        /* pairs +B, -B (B up to 2^90) among small values: the double sums then depend on which
         * lane each element goes to and on the order of the adds (B + s - B is 0 or s), so a
         * path with another reduction order gives visibly different statistics */
        for (size_t p = 0; p < 1 + dim / 8; p++) {
            const float big = ldexpf(keel_rng_below(rng, 2) ? 1.0f : -1.0f,
                                     30 + (int)keel_rng_below(rng, 61));
            row[keel_rng_below(rng, dim)] = big;
            row[keel_rng_below(rng, dim)] = -big;
        }
        break;
    case R_ONE_NAN:
        row[keel_rng_below(rng, dim)] = random_qnan(rng);
        break;
    case R_ONE_INF:
        row[keel_rng_below(rng, dim)] = keel_rng_below(rng, 2) ? INFINITY : -INFINITY;
        break;
    case R_BOTH_INF: /* +Inf + -Inf makes the default NaN inside the sums */
        row[keel_rng_below(rng, dim)] = INFINITY;
        row[keel_rng_below(rng, dim)] = -INFINITY;
        break;
    case R_NAN_MIX: /* several NaNs of different signs and payloads, and infinities */
        for (int i = 0; i < 4; i++)
            row[keel_rng_below(rng, dim)] = random_qnan(rng);
        row[keel_rng_below(rng, dim)] = INFINITY;
        row[keel_rng_below(rng, dim)] = -INFINITY;
        break;
    case R_SNAN:
        row[keel_rng_below(rng, dim)] = from_bits(0x7f800001u | (uint32_t)(keel_rng_next(rng) & 0x803ffffeu));
        break;
    case R_LIBRARY:
        keel_case_fill_row(rng, KEEL_CASE_MIXED, row, dim);
        break;
    default:
        break;
    }
}

/* ---- a batch: the inputs and the initial contents of every output ------------------------- */

typedef struct layout {
    size_t off, stride, len; /* start offset (unaligned), row stride, floats allocated */
} layout;

typedef struct batch {
    const char *name;
    size_t rows, dim;
    float eps;
    int *kind; /* of each row of x */
    layout lx, ly, ldy, ldx, lp; /* lp: gamma, beta, dgamma, dbeta (one row of dim) */
    float *x, *dy, *gamma, *beta, *y0, *dx0, *dg0, *db0;
    float *mean, *rstd; /* the scalar forward's statistics at eps, rows + GUARD */
    float *rms_rstd;
} batch;

static layout make_layout(keel_rng *rng, size_t rows, size_t dim)
{
    layout l;
    l.off = keel_rng_below(rng, 16);
    l.stride = dim + (keel_rng_below(rng, 4) == 0 ? 0 : keel_rng_below(rng, 20));
    l.len = l.off + (rows ? (rows - 1) * l.stride + dim : 0) + GUARD; /* ends at the last row */
    return l;
}

/* Random floats everywhere (padding and guards included): a path writing where it must not, or
 * reading padding into a result, differs from the scalar path. */
static float *random_buf(keel_rng *rng, size_t n)
{
    float *p = test_alloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)keel_rng_normal(rng);
    return p;
}

/* The batches: one row of each kind; a few finite rows; or finite rows enough for x to span
 * 3 MiB, so that the SIMD paths also run the variants they choose for tensors beyond L2
 * (prefetching, one row at a time). */
typedef enum batch_mode { B_ADVERSARIAL, B_FINITE, B_MANY } batch_mode;

static void make_batch(batch *b, keel_rng *rng, size_t dim, batch_mode mode)
{
    static const float eps_choices[3] = {1e-5f, 0.0f, 1e-12f};
    memset(b, 0, sizeof *b);
    b->dim = dim;
    b->eps = eps_choices[keel_rng_below(rng, 3)];
    const int finite_only = mode != B_ADVERSARIAL;
    b->name = mode == B_ADVERSARIAL ? "adversarial" : mode == B_FINITE ? "finite" : "many-rows";
    b->rows = mode == B_ADVERSARIAL ? R_COUNT
              : mode == B_FINITE    ? 1 + keel_rng_below(rng, 9)
                                    : ((size_t)3 << 20) / (dim * sizeof(float)) + 3;
    b->kind = malloc((b->rows + 1) * sizeof *b->kind);
    if (!b->kind)
        test_fatal("out of memory");
    for (size_t r = 0; r < b->rows; r++)
        b->kind[r] = finite_only ? (int)keel_rng_below(rng, R_FIRST_NONFINITE) : (int)r;
    if (mode == B_FINITE && keel_rng_below(rng, 2))
        b->kind[0] = R_LIBRARY;
    const size_t rows = b->rows;
    b->lx = make_layout(rng, rows, dim);
    b->ly = make_layout(rng, rows, dim);
    b->ldy = make_layout(rng, rows, dim);
    b->ldx = make_layout(rng, rows, dim);
    b->lp = make_layout(rng, 1, dim);
    b->x = random_buf(rng, b->lx.len);
    b->dy = random_buf(rng, b->ldy.len);
    for (size_t r = 0; r < rows; r++) {
        fill_row(rng, (row_kind)b->kind[r], b->x + b->lx.off + r * b->lx.stride, dim);
        /* dy: normal or cancelling; in the adversarial batch also huge, tiny or with a NaN */
        const row_kind dk = (row_kind[]){R_NORMAL, R_CANCEL, R_HUGE_1E30, R_DENORMAL,
                                         R_ONE_NAN}[keel_rng_below(rng, finite_only ? 2 : 5)];
        fill_row(rng, dk, b->dy + b->ldy.off + r * b->ldy.stride, dim);
    }
    b->gamma = random_buf(rng, b->lp.len);
    b->beta = random_buf(rng, b->lp.len);
    for (size_t j = 0; j < dim; j++)
        if (keel_rng_below(rng, 16) == 0)
            b->gamma[b->lp.off + j] = 0.0f; /* exact zeros and sign changes of gamma */
    b->y0 = random_buf(rng, b->ly.len);
    b->dx0 = random_buf(rng, b->ldx.len);
    b->dg0 = random_buf(rng, b->lp.len);
    b->db0 = random_buf(rng, b->lp.len);
    b->mean = test_alloc(rows + GUARD);
    b->rstd = test_alloc(rows + GUARD);
    b->rms_rstd = test_alloc(rows + GUARD);
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    float *y = test_copy(b->y0, b->ly.len);
    s->f32_layernorm_fwd(rows, dim, b->x + b->lx.off, b->lx.stride, y + b->ly.off, b->ly.stride,
                         NULL, NULL, b->eps, b->mean, b->rstd);
    s->f32_rmsnorm_fwd(rows, dim, b->x + b->lx.off, b->lx.stride, y + b->ly.off, b->ly.stride,
                       NULL, b->eps, b->rms_rstd);
    free(y);
}

static void free_batch(batch *b)
{
    float *all[] = {b->x, b->dy, b->gamma, b->beta, b->y0, b->dx0, b->dg0, b->db0, b->mean, b->rstd,
                    b->rms_rstd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    free(b->kind);
}

/* ---- one call on both paths, and the comparison ------------------------------------------- */

typedef enum op { LN_FWD, LN_BWD, RMS_FWD, RMS_BWD } op;
static const char *const op_names[] = {"layernorm_fwd", "layernorm_bwd", "rmsnorm_fwd",
                                       "rmsnorm_bwd"};

typedef struct config {
    op op;
    int gamma, beta, stats, inplace, acc, dx, dg, db;
} config;

/* The outputs of one call: every buffer a kernel may write. */
typedef struct outputs {
    float *y, *mean, *rstd, *dx, *dg, *db;
} outputs;

static void init_outputs(outputs *o, const batch *b, const config *c)
{
    const int fwd = c->op == LN_FWD || c->op == RMS_FWD;
    /* in place: the output buffer starts as a copy of the input it overwrites */
    o->y = fwd ? test_copy(c->inplace ? b->x : b->y0, c->inplace ? b->lx.len : b->ly.len) : NULL;
    o->mean = test_copy(b->y0, b->rows + GUARD); /* any bits: compared only as a whole */
    o->rstd = test_copy(b->dx0, b->rows + GUARD);
    o->dx = !fwd && c->dx ? test_copy(c->inplace ? b->dy : b->dx0, c->inplace ? b->ldy.len : b->ldx.len)
                          : NULL;
    o->dg = test_copy(b->dg0, b->lp.len);
    o->db = test_copy(b->db0, b->lp.len);
}

static void free_outputs(outputs *o)
{
    free(o->y);
    free(o->mean);
    free(o->rstd);
    free(o->dx);
    free(o->dg);
    free(o->db);
}

static void call(const keel_kernels *k, const batch *b, const config *c, outputs *o)
{
    const size_t rows = b->rows, dim = b->dim, po = b->lp.off;
    const float *x = b->x + b->lx.off;
    const float *gamma = c->gamma ? b->gamma + po : NULL;
    const float *beta = c->beta ? b->beta + po : NULL;
    float *dg = c->dg ? o->dg + po : NULL, *db = c->db ? o->db + po : NULL;
    const layout *ly = c->inplace ? &b->lx : &b->ly;
    const layout *ldx = c->inplace ? &b->ldy : &b->ldx;
    /* in place, dy is the dx buffer itself (it holds a copy of dy) */
    const float *dy = c->inplace && o->dx ? o->dx + b->ldy.off : b->dy + b->ldy.off;
    float *dx = o->dx ? o->dx + ldx->off : NULL;
    switch (c->op) {
    case LN_FWD:
        k->f32_layernorm_fwd(rows, dim, c->inplace ? o->y + ly->off : x, c->inplace ? ly->stride : b->lx.stride,
                             o->y + ly->off, ly->stride, gamma, beta, b->eps,
                             c->stats ? o->mean : NULL, c->stats ? o->rstd : NULL);
        break;
    case RMS_FWD:
        k->f32_rmsnorm_fwd(rows, dim, c->inplace ? o->y + ly->off : x, c->inplace ? ly->stride : b->lx.stride,
                           o->y + ly->off, ly->stride, gamma, b->eps, c->stats ? o->rstd : NULL);
        break;
    case LN_BWD:
        k->f32_layernorm_bwd(rows, dim, dy, b->ldy.stride, x, b->lx.stride,
                             c->stats ? b->mean : NULL, c->stats ? b->rstd : NULL, gamma, b->eps,
                             dx, ldx->stride, c->acc, dg, db);
        break;
    case RMS_BWD:
        k->f32_rmsnorm_bwd(rows, dim, dy, b->ldy.stride, x, b->lx.stride,
                           c->stats ? b->rms_rstd : NULL, gamma, b->eps, dx, ldx->stride, c->acc,
                           dg);
        break;
    }
}

static void describe(char *s, size_t n, const keel_kernels *k, const batch *b, const config *c)
{
    snprintf(s, n,
             "%s %s dim=%zu rows=%zu (%s batch) eps=%g gamma=%d beta=%d stats=%d inplace=%d "
             "acc=%d dx=%d dgamma=%d dbeta=%d; x stride %zu off %zu, y stride %zu off %zu, "
             "dy stride %zu off %zu, dx stride %zu off %zu",
             k->name, op_names[c->op], b->dim, b->rows, b->name, (double)b->eps, c->gamma,
             c->beta, c->stats, c->inplace, c->acc, c->dx, c->dg, c->db, b->lx.stride, b->lx.off,
             b->ly.stride, b->ly.off, b->ldy.stride, b->ldy.off, b->ldx.stride, b->ldx.off);
}

/* NaN payloads. A NaN result of an operation whose two operands are both NaN carries the
 * payload of one of them, chosen by operand order at the instruction level; C fixes no order
 * for a commutative + or *, and the compiler picks (the scalar path built by GCC 12 even uses
 * both orders for one expression in its vectorized and its remainder loops). So only rows with
 * two different NaNs can differ, and only in which NaN comes out. By default such a buffer
 * passes when every differing element is a NaN in both (counted and reported below);
 * KEEL_TEST_STRICT_NAN=1 demands identical NaN bits too. */
static int strict_nan;
static long nan_payload_only; /* buffers that differed only in NaN payloads */

static int same(const float *a, const float *b)
{
    return memcmp(a, b, sizeof(float)) == 0 || (!strict_nan && isnan(*a) && isnan(*b));
}

/* Compares one output buffer; on a mismatch names the first differing element precisely. */
static void compare(const char *what, const float *ref, const float *got, size_t n,
                    const layout *l, const batch *b, const char *desc)
{
    if (!ref && !got)
        return;
    size_t i = n, count = 0;
    for (size_t t = 0; t < n; t++)
        if (!same(ref + t, got + t)) {
            i = i < n ? i : t;
            count++;
        }
    if (i == n) {
        nan_payload_only += test_first_diff(ref, got, n) != n;
        test_check(1, "%s", what);
        return;
    }
    char where[160];
    if (!l)
        snprintf(where, sizeof where, "index %zu", i);
    else if (i < l->off)
        snprintf(where, sizeof where, "index %zu, before the first row", i);
    else if ((i - l->off) / l->stride >= b->rows)
        snprintf(where, sizeof where, "index %zu, after the last row", i);
    else {
        const size_t r = (i - l->off) / l->stride, j = (i - l->off) % l->stride;
        snprintf(where, sizeof where, "row %zu (x kind %s), column %zu%s", r,
                 row_names[b->kind[r]], j, j >= b->dim ? " (padding)" : "");
    }
    if (test_failed_ < MAX_PRINT)
        test_check(0, "%s: %s differs at %s: scalar 0x%08x (%.9g), got 0x%08x (%.9g); %zu of %zu "
                      "floats differ",
                   desc, what, where, (unsigned)to_bits(ref[i]), (double)ref[i],
                   (unsigned)to_bits(got[i]), (double)got[i], count, n);
    else
        test_failed_++;
}

static void run(const keel_kernels *k, const batch *b, const config *c)
{
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    outputs ro, ko;
    init_outputs(&ro, b, c);
    init_outputs(&ko, b, c);
    call(s, b, c, &ro);
    call(k, b, c, &ko);
    char desc[512];
    describe(desc, sizeof desc, k, b, c);
    const int fwd = c->op == LN_FWD || c->op == RMS_FWD;
    if (fwd) {
        compare("y", ro.y, ko.y, c->inplace ? b->lx.len : b->ly.len, c->inplace ? &b->lx : &b->ly, b,
                desc);
        compare("mean", ro.mean, ko.mean, b->rows + GUARD, NULL, b, desc);
        compare("rstd", ro.rstd, ko.rstd, b->rows + GUARD, NULL, b, desc);
    } else {
        compare("dx", ro.dx, ko.dx, c->inplace ? b->ldy.len : b->ldx.len,
                c->inplace ? &b->ldy : &b->ldx, b, desc);
        compare("dgamma partial", ro.dg, ko.dg, b->lp.len, NULL, b, desc);
        if (c->op == LN_BWD)
            compare("dbeta partial", ro.db, ko.db, b->lp.len, NULL, b, desc);
    }
    free_outputs(&ro);
    free_outputs(&ko);
}

/* Every combination of the options for one batch. */
static void run_batch(const keel_kernels *k, const batch *b)
{
    for (int bits = 0; bits < 16; bits++) { /* forward: gamma, beta, stats, in place */
        config c = {LN_FWD, bits & 1, bits >> 1 & 1, bits >> 2 & 1, bits >> 3 & 1, 0, 0, 0, 0};
        run(k, b, &c);
        if (!c.beta) {
            c.op = RMS_FWD;
            run(k, b, &c);
        }
    }
    for (int bits = 0; bits < 16; bits++) { /* backward: gamma, stats, dgamma, dbeta ... */
        for (int dxmode = 0; dxmode < 5; dxmode++) { /* ... x dx: none, set, add, in place set/add */
            config c = {LN_BWD, bits & 1, 0, bits >> 1 & 1, dxmode >= 3, dxmode == 2 || dxmode == 4,
                        dxmode > 0, bits >> 2 & 1, bits >> 3 & 1};
            run(k, b, &c);
            if (!c.db) {
                c.op = RMS_BWD;
                run(k, b, &c);
            }
        }
    }
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_kernels_bitwise"));
    const char *strict = getenv("KEEL_TEST_STRICT_NAN");
    strict_nan = strict && *strict && strcmp(strict, "0") != 0;
    static const size_t big[] = {127, 128, 129, 255, 256, 257, 768, 1023, 1024, 1025,
                                 4095, 4096, 4097, 8191, 8192, 65536};
    size_t dims[70 + sizeof big / sizeof big[0]], ndims = 0;
    for (size_t d = 1; d <= 70; d++)
        dims[ndims++] = d;
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        dims[ndims++] = big[i];

    keel_isa isas[3];
    const int nisa = test_isas(isas);
    int tested = 0;
    for (int i = 0; i < nisa; i++) {
        if (isas[i] == KEEL_ISA_SCALAR)
            continue;
        const keel_kernels *k = keel_kernels_for(isas[i]);
        printf("path %s\n", k->name);
        tested++;
        for (size_t di = 0; di < ndims; di++) {
            for (int mode = B_ADVERSARIAL; mode <= B_FINITE; mode++) {
                batch b;
                make_batch(&b, &rng, dims[di], (batch_mode)mode);
                run_batch(k, &b);
                free_batch(&b);
            }
        }
        static const size_t many_dims[] = {300, 4097};
        for (size_t di = 0; di < sizeof many_dims / sizeof many_dims[0]; di++) {
            batch b;
            make_batch(&b, &rng, many_dims[di], B_MANY);
            run_batch(k, &b);
            free_batch(&b);
        }
        /* rows == 0 writes nothing */
        batch b;
        make_batch(&b, &rng, 5, B_FINITE);
        b.rows = 0;
        run_batch(k, &b);
        b.rows = 1;
        free_batch(&b);
    }
    if (!tested)
        printf("no SIMD path on this machine or in this build: nothing to compare\n");
    if (!strict_nan)
        printf("%ld buffers passed with NaNs in the same places but other NaN payloads (rows with "
               "several different NaNs; KEEL_TEST_STRICT_NAN=1 fails them)\n", nan_payload_only);
    return test_finish();
}
