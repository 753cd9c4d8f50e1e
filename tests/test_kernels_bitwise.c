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
 * variants the SIMD paths pick for tensors beyond L2, and one, two and three rows of three
 * widths (the row pipelines, whose first and last sweeps do fewer stages), also from row 1.
 * Strides and the starts of all arrays are random (unaligned); every combination of gamma/beta,
 * saved statistics, in place, accumulate, dx, dgamma, dbeta is run. A path's entry that is the
 * scalar kernel itself (the neon path's norms, fused add + norm and BatchNorm, until their bodies
 * are converted) is not compared with itself.
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
    R_ZERO, R_NEG_ZERO, R_WIDE, R_CANCEL, R_LANE_ORDER, R_ONE_NAN, R_ONE_INF, R_BOTH_INF,
    R_NAN_MIX, R_SNAN,
    R_LIBRARY, /* a row from keel_case_fill_row (any of the reference's kinds) */
    R_COUNT
} row_kind;
#define R_FIRST_NONFINITE R_ONE_NAN

static const char *const row_names[R_COUNT] = {
    "normal", "offset1e6", "constant", "tinyvar", "huge1e30", "huge3e38", "denormal",
    "zero", "negzero", "wide", "cancel", "lane-order", "one-nan", "one-inf", "both-inf",
    "nan-mix", "snan", "library",
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
    case R_LANE_ORDER:
        /* +2^60 and -2^60 by turns in the low half of each 16-float step (the same double lanes
         * step after step), small values elsewhere: the lanes' sums cancel exactly in kernels.h's
         * order (each half of each lane over the steps, then low + high), where adding a step's
         * halves together first loses the small values to the big ones (2^60 + 1 is 2^60) and
         * moves the mean by a visible amount */
        for (size_t j = 0; j < dim; j++)
            if (j % 16 < 8)
                row[j] = (j / 16) % 2 ? -0x1p60f : 0x1p60f;
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
    int hints; /* KEEL_KBWD_PREFETCH | KEEL_KBWD_STREAM for the SIMD backwards, or 0 */
    unsigned half; /* the half of the option combinations a quick sweep runs here (in_sweep) */
} batch;

/* The quick sweep (test_common.h: the sanitizer runs) makes, on a batch of more than
 * QUICK_LARGE floats, half of the combinations of the options: those whose option bits have
 * the batch's parity (a half fraction: every option alone and every pair of options still takes
 * all its values). Consecutive batches take the two halves in turn, so each combination still
 * runs on large batches, of other widths; the small batches make every combination. */
enum { QUICK_LARGE = 1 << 16 };

static int in_sweep(const batch *b, unsigned bits)
{
    if (!test_quick() || b->rows * b->dim <= QUICK_LARGE)
        return 1;
    unsigned parity = 0;
    for (; bits; bits >>= 1)
        parity ^= bits & 1;
    return parity == b->half;
}

static layout make_layout(keel_rng *rng, size_t rows, size_t dim)
{
    layout l;
    l.off = keel_rng_below(rng, 16);
    l.stride = dim + (keel_rng_below(rng, 4) == 0 ? 0 : keel_rng_below(rng, 20));
    l.len = l.off + (rows ? (rows - 1) * l.stride + dim : 0) + GUARD; /* ends at the last row */
    return l;
}

/* Random floats everywhere (padding and guards included): a path writing where it must not, or
 * reading padding into a result, differs from the scalar path. Uniform in [-4, 4) (the rows
 * themselves are then filled by fill_row): a normal draw, a log and a cos, took a third of the
 * test's time under a sanitizer. */
static float *random_buf(keel_rng *rng, size_t n)
{
    float *p = test_alloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)keel_rng_range(rng, -4.0, 4.0);
    return p;
}

/* The batches: one row of each kind; a few finite rows; finite rows enough for x to span
 * 3 MiB, so that the SIMD paths also run the variants they choose for tensors beyond L2
 * (prefetching, the forwards' row pipelines); or enough for y to span 17 MiB, where the forwards
 * stream their outputs (simd_lanes__*.h: rows with an aligned start, the others stored
 * normally); or three finite rows (run as one, two and three). */
typedef enum batch_mode { B_ADVERSARIAL, B_FINITE, B_MANY, B_STREAM, B_FEW } batch_mode;
#define STREAM_BYTES ((size_t)17 << 20)

static void make_batch(batch *b, keel_rng *rng, size_t dim, batch_mode mode)
{
    static const float eps_choices[3] = {1e-5f, 0.0f, 1e-12f};
    static unsigned batches;
    memset(b, 0, sizeof *b);
    b->half = batches++ & 1;
    b->dim = dim;
    b->eps = eps_choices[keel_rng_below(rng, 3)];
    const int finite_only = mode != B_ADVERSARIAL;
    b->name = mode == B_ADVERSARIAL ? "adversarial"
              : mode == B_FINITE    ? "finite"
              : mode == B_MANY      ? "many-rows"
              : mode == B_STREAM    ? "streamed"
                                    : "few-rows";
    b->rows = mode == B_ADVERSARIAL ? R_COUNT
              : mode == B_FINITE    ? 1 + keel_rng_below(rng, 9)
              : mode == B_MANY      ? ((size_t)3 << 20) / (dim * sizeof(float)) + 3
              : mode == B_STREAM    ? STREAM_BYTES / (dim * sizeof(float)) + 3
                                    : 3;
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
    /* The backward hints (prefetch, streamed dx) must not change a bit: given to half the
     * batches whatever their size, with dx rows that start aligned half the time (streamed). */
    b->hints = keel_rng_below(rng, 2) ? KEEL_KBWD_PREFETCH | KEEL_KBWD_STREAM : 0;
    if (mode == B_STREAM && dim % 16 == 0) { /* packed: every row starts aligned */
        b->ly.off = 0;
        b->ly.stride = dim;
        b->ly.len = rows * dim + GUARD;
    }
    b->ldy = make_layout(rng, rows, dim);
    b->ldx = make_layout(rng, rows, dim);
    /* packed: every dx row starts aligned (always in the few-rows batches, so that the
     * backwards' row pipelines stream dx from their first sweep to their last) */
    if (dim % 16 == 0 && (mode == B_FEW || keel_rng_below(rng, 2))) {
        b->ldx.off = 0;
        b->ldx.stride = dim;
        b->ldx.len = rows * dim + GUARD;
    }
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

/* Rows first .. first + n - 1 of b as a batch of their own (a block of rows that does not start
 * at row 0, as the operator gives a thread): the same arrays, so the rows outside the block are
 * compared too (they must stay untouched). */
static batch sub_batch(const batch *b, size_t first, size_t n)
{
    batch s = *b;
    s.rows = n;
    s.lx.off += first * b->lx.stride;
    s.ly.off += first * b->ly.stride;
    s.ldy.off += first * b->ldy.stride;
    s.ldx.off += first * b->ldx.stride;
    s.kind += first;
    s.mean += first;
    s.rstd += first;
    s.rms_rstd += first;
    return s;
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
    const int dx_flags = c->acc | (k->isa != KEEL_ISA_SCALAR ? b->hints : 0);
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
                             dx, ldx->stride, dx_flags, dg, db);
        break;
    case RMS_BWD:
        k->f32_rmsnorm_bwd(rows, dim, dy, b->ldy.stride, x, b->lx.stride,
                           c->stats ? b->rms_rstd : NULL, gamma, b->eps, dx, ldx->stride, dx_flags,
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
    if (memcmp(ref, got, n * sizeof *ref) == 0) { /* the usual answer, in one call */
        test_check(1, "%s", what);
        return;
    }
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

/* A path's entry that is the scalar kernel itself (the neon path's, until its body is converted:
 * kernel_list.c) has the scalar bits by construction: its calls are not made twice. */
typedef void (*any_fn)(void);
static long scalar_entries_skipped;

static int norm_is_scalar(const keel_kernels *k, op o)
{
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    switch (o) {
    case LN_FWD: return (any_fn)k->f32_layernorm_fwd == (any_fn)s->f32_layernorm_fwd;
    case LN_BWD: return (any_fn)k->f32_layernorm_bwd == (any_fn)s->f32_layernorm_bwd;
    case RMS_FWD: return (any_fn)k->f32_rmsnorm_fwd == (any_fn)s->f32_rmsnorm_fwd;
    default: return (any_fn)k->f32_rmsnorm_bwd == (any_fn)s->f32_rmsnorm_bwd;
    }
}

/* Whether any norm kernel of the path is its own (else its norm batches are not made at all). */
static int norms_native(const keel_kernels *k)
{
    return !norm_is_scalar(k, LN_FWD) || !norm_is_scalar(k, LN_BWD) || !norm_is_scalar(k, RMS_FWD) ||
           !norm_is_scalar(k, RMS_BWD);
}

static void run(const keel_kernels *k, const batch *b, const config *c)
{
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    if (k != s && norm_is_scalar(k, c->op)) {
        scalar_entries_skipped++;
        return;
    }
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

/* Every combination of the forward's options for one batch. */
static void run_batch_fwd(const keel_kernels *k, const batch *b)
{
    for (int bits = 0; bits < 16; bits++) { /* forward: gamma, beta, stats, in place */
        if (!in_sweep(b, (unsigned)bits))
            continue;
        config c = {LN_FWD, bits & 1, bits >> 1 & 1, bits >> 2 & 1, bits >> 3 & 1, 0, 0, 0, 0};
        run(k, b, &c);
        if (!c.beta) {
            c.op = RMS_FWD;
            run(k, b, &c);
        }
    }
}

/* Every combination of the options for one batch. */
static void run_batch(const keel_kernels *k, const batch *b)
{
    run_batch_fwd(k, b);
    for (int bits = 0; bits < 16; bits++) { /* backward: gamma, stats, dgamma, dbeta ... */
        if (!in_sweep(b, (unsigned)bits))
            continue;
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

/* ---- LayerScale and BatchNorm kernels ------------------------------------------------------
 * The same batches, through the kernels of the other transformer-block ops: LayerScale forward
 * (h = x + lambda * f, f taken from dy; lambda = gamma, with its exact zeros) and backward (dh
 * taken from dy, f from x), and BatchNorm's column statistics, apply and backward (the batch's
 * rows are the rows, its dim the features). Every output buffer is compared whole, as above. */

typedef enum ls_bn_op { LS_FWD, LS_BWD, BN_STATS, BN_APPLY, BN_BWD } ls_bn_op;
static const char *const ls_bn_names[] = {"layerscale_fwd", "layerscale_bwd", "batchnorm_stats",
                                          "batchnorm_apply", "batchnorm_bwd"};

/* Options of one LayerScale / BatchNorm call (which ones an op reads: see ls_bn_call). */
typedef struct ls_bn_config {
    ls_bn_op op;
    int inplace;  /* 0; 1: the output is x (fwd, apply) or dh/dy (bwd: dx); 2: h is f / df is dh */
    int acc, dx, df, dpart, training, lo, gamma, beta;
    int hints; /* LayerScale backward: the operator's memory hints (KEEL_KBWD_STREAM) */
} ls_bn_config;

/* The per-feature constants of the batch (the scalar path's statistics, as the operator makes
 * them): hi, lo, rstd of the columns; stats as doubles. */
typedef struct bn_consts {
    double *mean_d, *m2;
    float *hi, *lo, *rstd;
} bn_consts;

static bn_consts bn_consts_make(const batch *b)
{
    bn_consts c;
    const size_t dim = b->dim;
    c.mean_d = test_alloc_d(dim + GUARD);
    c.m2 = test_alloc_d(dim + GUARD);
    c.hi = test_alloc(dim + GUARD);
    c.lo = test_alloc(dim + GUARD);
    c.rstd = test_alloc(dim + GUARD);
    if (b->rows > 0)
        keel_kernels_for(KEEL_ISA_SCALAR)->f32_batchnorm_stats(b->rows, dim, b->x + b->lx.off, b->lx.stride,
                                                               c.mean_d, c.m2);
    for (size_t j = 0; j < dim; j++) {
        c.hi[j] = b->rows ? (float)c.mean_d[j] : 0.5f;
        c.lo[j] = b->rows ? (float)(c.mean_d[j] - (double)c.hi[j]) : 0.0f;
        c.rstd[j] = b->rows ? (float)(1.0 / sqrt(c.m2[j] / (double)b->rows + (double)b->eps)) : 2.0f;
    }
    return c;
}

static void bn_consts_free(bn_consts *c)
{
    free(c->mean_d);
    free(c->m2);
    free(c->hi);
    free(c->lo);
    free(c->rstd);
}

typedef struct ls_bn_outputs {
    float *a, *b, *part, *part2; /* h / y / dx; df; dlambda or dgamma; dbeta */
    double *s1, *s2;             /* BatchNorm statistics */
} ls_bn_outputs;

/* The layouts of output a and b of a config. */
static const layout *ls_bn_layout(const batch *b, const ls_bn_config *c, int which)
{
    const int fwd = c->op == LS_FWD || c->op == BN_APPLY;
    if (which == 0) {
        if (fwd)
            return c->inplace == 1 ? &b->lx : c->inplace == 2 ? &b->ldy : &b->ly;
        return c->inplace == 1 ? &b->ldy : &b->ldx;
    }
    return c->inplace == 2 ? &b->ldy : &b->ly; /* df */
}

static void ls_bn_init(ls_bn_outputs *o, const batch *b, const ls_bn_config *c)
{
    memset(o, 0, sizeof *o);
    const layout *la = ls_bn_layout(b, c, 0), *lb = ls_bn_layout(b, c, 1);
    switch (c->op) {
    case LS_FWD:
    case BN_APPLY:
        o->a = test_copy(c->inplace == 1 ? b->x : c->inplace == 2 ? b->dy : b->y0, la->len);
        break;
    case LS_BWD:
    case BN_BWD:
        if (c->dx)
            o->a = test_copy(c->inplace == 1 ? b->dy : b->dx0, la->len);
        if (c->op == LS_BWD && c->df)
            o->b = test_copy(c->inplace == 2 ? b->dy : b->y0, lb->len);
        break;
    case BN_STATS:
        o->s1 = test_alloc_d(b->dim + GUARD);
        o->s2 = test_alloc_d(b->dim + GUARD);
        for (size_t j = 0; j < b->dim + GUARD; j++) {
            o->s1[j] = b->dg0[j % b->lp.len];
            o->s2[j] = b->db0[j % b->lp.len];
        }
        break;
    }
    o->part = test_copy(b->dg0, b->lp.len);
    o->part2 = test_copy(b->db0, b->lp.len);
}

static void ls_bn_free(ls_bn_outputs *o)
{
    free(o->a);
    free(o->b);
    free(o->part);
    free(o->part2);
    free(o->s1);
    free(o->s2);
}

static void ls_bn_call(const keel_kernels *k, const batch *b, const bn_consts *bc,
                       const ls_bn_config *c, ls_bn_outputs *o)
{
    const size_t rows = b->rows, dim = b->dim, po = b->lp.off;
    const layout *la = ls_bn_layout(b, c, 0), *lb = ls_bn_layout(b, c, 1);
    float *a = o->a ? o->a + la->off : NULL, *ob = o->b ? o->b + lb->off : NULL;
    const float *gamma = c->gamma ? b->gamma + po : NULL, *beta = c->beta ? b->beta + po : NULL;
    switch (c->op) {
    case LS_FWD: { /* in place: h is x (1) or f (2), the buffer holding that input */
        const float *x = c->inplace == 1 ? a : b->x + b->lx.off;
        const float *f = c->inplace == 2 ? a : b->dy + b->ldy.off;
        k->f32_layerscale_fwd(rows, dim, x, b->lx.stride, f, b->ldy.stride, b->gamma + po, a, la->stride);
        break;
    }
    case LS_BWD: { /* in place: dx is dh (1) or df is dh (2) */
        const float *dh = c->inplace == 1 && a ? a : c->inplace == 2 && ob ? ob : b->dy + b->ldy.off;
        k->f32_layerscale_bwd(rows, dim, dh, b->ldy.stride, c->dpart ? b->x + b->lx.off : NULL, b->lx.stride,
                              c->df ? b->gamma + po : NULL, a, la->stride, ob, lb->stride, c->acc,
                              c->dpart ? o->part + po : NULL, c->hints);
        break;
    }
    case BN_STATS:
        k->f32_batchnorm_stats(rows, dim, b->x + b->lx.off, b->lx.stride, o->s1, o->s2);
        break;
    case BN_APPLY: {
        const float *x = c->inplace == 1 ? a : b->x + b->lx.off;
        k->f32_batchnorm_apply(rows, dim, x, b->lx.stride, a, la->stride, bc->hi, c->lo ? bc->lo : NULL,
                               bc->rstd, gamma, beta);
        break;
    }
    case BN_BWD: {
        const float *dy = c->inplace == 1 && a ? a : b->dy + b->ldy.off;
        k->f32_batchnorm_bwd(rows, dim, dy, b->ldy.stride, b->x + b->lx.off, b->lx.stride, bc->hi, bc->rstd,
                             gamma, c->training, a, la->stride, c->acc, c->dpart ? o->part + po : NULL,
                             c->beta ? o->part2 + po : NULL, c->lo);
        break;
    }
    }
}

static int same_d(const double *a, const double *b)
{
    return memcmp(a, b, sizeof(double)) == 0 || (!strict_nan && isnan(*a) && isnan(*b));
}

static void compare_d(const char *what, const double *ref, const double *got, size_t n, const char *desc)
{
    for (size_t i = 0; i < n; i++)
        if (!same_d(ref + i, got + i)) {
            test_check(0, "%s: %s differs at column %zu: scalar %.17g, got %.17g", desc, what, i, ref[i], got[i]);
            return;
        }
    test_check(1, "%s", what);
}

static int ls_bn_is_scalar(const keel_kernels *k, ls_bn_op o)
{
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    switch (o) {
    case LS_FWD: return (any_fn)k->f32_layerscale_fwd == (any_fn)s->f32_layerscale_fwd;
    case LS_BWD: return (any_fn)k->f32_layerscale_bwd == (any_fn)s->f32_layerscale_bwd;
    case BN_STATS: return (any_fn)k->f32_batchnorm_stats == (any_fn)s->f32_batchnorm_stats;
    case BN_APPLY: return (any_fn)k->f32_batchnorm_apply == (any_fn)s->f32_batchnorm_apply;
    default: return (any_fn)k->f32_batchnorm_bwd == (any_fn)s->f32_batchnorm_bwd;
    }
}

static void ls_bn_run(const keel_kernels *k, const batch *b, const bn_consts *bc, const ls_bn_config *c)
{
    if (k != keel_kernels_for(KEEL_ISA_SCALAR) && ls_bn_is_scalar(k, c->op)) {
        scalar_entries_skipped++;
        return;
    }
    ls_bn_outputs ro, ko;
    ls_bn_init(&ro, b, c);
    ls_bn_init(&ko, b, c);
    ls_bn_call(keel_kernels_for(KEEL_ISA_SCALAR), b, bc, c, &ro);
    ls_bn_call(k, b, bc, c, &ko);
    char desc[512];
    const layout *la = ls_bn_layout(b, c, 0), *lb = ls_bn_layout(b, c, 1);
    snprintf(desc, sizeof desc,
             "%s %s dim=%zu rows=%zu (%s batch) inplace=%d acc=%d dx=%d df=%d part=%d training=%d "
             "lo=%d gamma=%d beta=%d hints=%d; out stride %zu off %zu",
             k->name, ls_bn_names[c->op], b->dim, b->rows, b->name, c->inplace, c->acc, c->dx, c->df,
             c->dpart, c->training, c->lo, c->gamma, c->beta, c->hints, la->stride, la->off);
    if (c->op == BN_STATS) {
        compare_d("column sums (mean)", ro.s1, ko.s1, b->dim + GUARD, desc);
        compare_d("column sums (m2)", ro.s2, ko.s2, b->dim + GUARD, desc);
    } else {
        compare(c->op == LS_FWD ? "h" : c->op == BN_APPLY ? "y" : "dx", ro.a, ko.a, la->len, la, b, desc);
        compare("df", ro.b, ko.b, lb->len, lb, b, desc);
        compare(c->op == LS_BWD ? "dlambda partial" : "dgamma", ro.part, ko.part, b->lp.len, NULL, b, desc);
        compare("dbeta", ro.part2, ko.part2, b->lp.len, NULL, b, desc);
    }
    ls_bn_free(&ro);
    ls_bn_free(&ko);
}

/* Every combination of the options of the LayerScale and BatchNorm kernels for one batch. */
static void run_ls_bn_batch(const keel_kernels *k, const batch *b)
{
    bn_consts bc = bn_consts_make(b);
    for (int inplace = 0; inplace <= 2; inplace++) {
        ls_bn_config c = {LS_FWD, inplace, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        ls_bn_run(k, b, &bc, &c);
    }
    for (int bits = 0; bits < 64; bits++) { /* dx, df, dlambda, accumulate, in place, streamed */
        if (!in_sweep(b, (unsigned)bits))
            continue;
        ls_bn_config c = {LS_BWD, 0, bits >> 3 & 1, bits & 1, bits >> 1 & 1, bits >> 2 & 1, 0, 0, 0, 0,
                          bits >> 5 & 1 ? KEEL_KBWD_STREAM : 0};
        if (bits >> 4 & 1) {
            if (c.dx)
                c.inplace = 1;
            else if (c.df)
                c.inplace = 2;
            else
                continue;
        }
        ls_bn_run(k, b, &bc, &c);
    }
    {
        ls_bn_config c = {BN_STATS, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        ls_bn_run(k, b, &bc, &c);
    }
    for (int bits = 0; bits < 16; bits++) { /* lo, gamma, beta, in place */
        if (!in_sweep(b, (unsigned)bits))
            continue;
        ls_bn_config c = {BN_APPLY, bits >> 3 & 1, 0, 0, 0, 0, 0, bits & 1, bits >> 1 & 1, bits >> 2 & 1, 0};
        ls_bn_run(k, b, &bc, &c);
    }
    for (int bits = 0; bits < 16; bits++) /* training, gamma, dgamma, dbeta ... */
        for (int dxmode = 0; in_sweep(b, (unsigned)bits) && dxmode < 5; dxmode++) { /* ... x dx */
            /* lo stands for accumulate_dparams, beta for dbeta */
            ls_bn_config c = {BN_BWD, dxmode >= 3, dxmode == 2 || dxmode == 4, dxmode > 0, 0,
                              bits >> 2 & 1, bits & 1, (bits ^ dxmode) & 1, bits >> 1 & 1, bits >> 3 & 1, 0};
            ls_bn_run(k, b, &bc, &c);
        }
    bn_consts_free(&bc);
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
        const int norms = norms_native(k);
        printf("path %s%s\n", k->name,
               norms ? "" : " (its norms are the scalar kernels: their batches are not made)");
        tested++;
        for (size_t di = 0; di < ndims; di++) {
            for (int mode = B_ADVERSARIAL; mode <= B_FINITE; mode++) {
                batch b;
                make_batch(&b, &rng, dims[di], (batch_mode)mode);
                run_batch(k, &b);
                run_ls_bn_batch(k, &b);
                free_batch(&b);
            }
        }
        /* 56: the fused forwards' row pipeline just past the AVX-512 batches */
        static const size_t many_dims[] = {300, 4097, 56};
        for (size_t di = 0; di < sizeof many_dims / sizeof many_dims[0]; di++) {
            batch b;
            make_batch(&b, &rng, many_dims[di], B_MANY);
            run_batch(k, &b);
            run_ls_bn_batch(k, &b);
            free_batch(&b);
        }
        /* 16, 48: AVX-512's batches of rows (48: three vectors a row) */
        static const size_t stream_dims[] = {4096, 1500, 16, 48};
        /* (2 x 17 MiB a call: the quick sweep makes half of the combinations, in_sweep) */
        for (size_t di = 0; norms && di < sizeof stream_dims / sizeof stream_dims[0]; di++) {
            batch b;
            make_batch(&b, &rng, stream_dims[di], B_STREAM);
            run_batch_fwd(k, &b);
            free_batch(&b);
        }
        /* The row pipelines with 1, 2 and 3 rows (their first and last sweeps, which do fewer
         * stages): the forwards' (LayerNorm's at dim 300: it takes rows in cache too; RMSNorm's
         * at a width where one row spans over 2 MiB: it takes tensors beyond L2) and, at 300 and
         * 1024, the backwards' (rows of 256 floats or more with the statistics given, in cache
         * or not): with a tail (300) and without (1024, whose dx rows then all start aligned and
         * are streamed with the hints), without and with the backward hints, and also 1 and 2
         * rows from row 1 (a block of rows that does not start at row 0, its statistics at
         * mean + 1). */
        static const size_t few_dims[] = {300, 1024, 540007};
        for (size_t di = 0; norms && di < sizeof few_dims / sizeof few_dims[0]; di++) {
            batch b;
            make_batch(&b, &rng, few_dims[di], B_FEW);
            if (b.dim >= 65536) /* RMSNorm's forward pipeline; the backwards' take long there */
                for (size_t n = 1; n <= 3; n++) {
                    b.rows = n;
                    run_batch_fwd(k, &b);
                }
            else
                for (size_t first = 0; first <= 1; first++)
                    for (size_t n = 1; first + n <= b.rows; n++)
                        for (int h = 0; h < 2; h++) {
                            batch s = sub_batch(&b, first, n);
                            s.hints = h ? KEEL_KBWD_PREFETCH | KEEL_KBWD_STREAM : 0;
                            run_batch(k, &s);
                        }
            free_batch(&b);
        }
        /* rows == 0 writes nothing */
        batch b;
        make_batch(&b, &rng, 5, B_FINITE);
        b.rows = 0;
        run_batch(k, &b);
        run_ls_bn_batch(k, &b);
        b.rows = 1;
        free_batch(&b);
    }
    if (!tested)
        printf("no SIMD path on this machine or in this build: nothing to compare\n");
    if (scalar_entries_skipped)
        printf("%ld calls not made twice: the path's entry is the scalar kernel itself\n",
               scalar_entries_skipped);
    if (!strict_nan)
        printf("%ld buffers passed with NaNs in the same places but other NaN payloads (rows with "
               "several different NaNs; KEEL_TEST_STRICT_NAN=1 fails them)\n", nan_payload_only);
    return test_finish();
}
