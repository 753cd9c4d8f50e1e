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
 * saved statistics, in place, accumulate, dx, dgamma, dbeta is run; the fused add + norm
 * kernels' many options are sampled (fused_cases). One case per kernel of the kernel list
 * (KEEL_KERNEL_LIST in kernels.h: kernel_cases below), so that a kernel added there is tested
 * here. A path's entry that is the scalar kernel itself (the neon column of the list) is not
 * compared with itself.
 */
#include <math.h>

#include "convert.h" /* the scalar definitions of one bf16 / f16 value */
#include "cpu.h" /* keel_cpu_has_avx512_bf16 */
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
 * stream their outputs (lanes__*.h: rows with an aligned start, the others stored
 * normally); or three finite rows (run as one, two and three). */
typedef enum batch_mode { B_ADVERSARIAL, B_FINITE, B_MANY, B_STREAM, B_FEW, B_STREAM16 } batch_mode;
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
              : mode == B_STREAM16  ? "streamed-16-bit"
                                    : "few-rows";
    b->rows = mode == B_ADVERSARIAL ? R_COUNT
              : mode == B_FINITE    ? 1 + keel_rng_below(rng, 9)
              : mode == B_MANY      ? ((size_t)3 << 20) / (dim * sizeof(float)) + 3
              : mode == B_STREAM    ? STREAM_BYTES / (dim * sizeof(float)) + 3
              : mode == B_STREAM16  ? STREAM_BYTES / (dim * sizeof(uint16_t)) + 3
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
    if ((mode == B_STREAM || mode == B_STREAM16) && dim % 16 == 0) { /* packed: aligned rows */
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

/* Every combination of a norm forward's options (gamma, beta, stats, in place) for one batch. */
static void norm_fwd_cases(const keel_kernels *k, const batch *b, op o)
{
    for (int bits = 0; bits < 16; bits++) {
        config c = {o, bits & 1, bits >> 1 & 1, bits >> 2 & 1, bits >> 3 & 1, 0, 0, 0, 0};
        if (in_sweep(b, (unsigned)bits) && !(o == RMS_FWD && c.beta))
            run(k, b, &c);
    }
}

/* Every combination of a norm backward's options (gamma, stats, dgamma, dbeta, and dx: none,
 * set, add, in place set / add) for one batch. */
static void norm_bwd_cases(const keel_kernels *k, const batch *b, op o)
{
    for (int bits = 0; bits < 16; bits++)
        for (int dxmode = 0; in_sweep(b, (unsigned)bits) && dxmode < 5; dxmode++) {
            config c = {o, bits & 1, 0, bits >> 1 & 1, dxmode >= 3, dxmode == 2 || dxmode == 4,
                        dxmode > 0, bits >> 2 & 1, bits >> 3 & 1};
            if (!(o == RMS_BWD && c.db))
                run(k, b, &c);
        }
}

static void case_f32_layernorm_fwd(const keel_kernels *k, const batch *b) { norm_fwd_cases(k, b, LN_FWD); }
static void case_f32_layernorm_bwd(const keel_kernels *k, const batch *b) { norm_bwd_cases(k, b, LN_BWD); }
static void case_f32_rmsnorm_fwd(const keel_kernels *k, const batch *b) { norm_fwd_cases(k, b, RMS_FWD); }
static void case_f32_rmsnorm_bwd(const keel_kernels *k, const batch *b) { norm_bwd_cases(k, b, RMS_BWD); }

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

static void ls_bn_run(const keel_kernels *k, const batch *b, const bn_consts *bc, const ls_bn_config *c)
{
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

/* Every combination of the options of the LayerScale and BatchNorm kernels for one batch (bc:
 * the batch's BatchNorm constants, made by the scalar path). */
static void case_f32_layerscale_fwd(const keel_kernels *k, const batch *b)
{
    for (int inplace = 0; inplace <= 2; inplace++) {
        ls_bn_config c = {LS_FWD, inplace, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        ls_bn_run(k, b, NULL, &c);
    }
}

static void case_f32_layerscale_bwd(const keel_kernels *k, const batch *b)
{
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
        ls_bn_run(k, b, NULL, &c);
    }
}

static void case_f32_batchnorm_stats(const keel_kernels *k, const batch *b)
{
    ls_bn_config c = {BN_STATS, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    ls_bn_run(k, b, NULL, &c);
}

static void case_f32_batchnorm_apply(const keel_kernels *k, const batch *b)
{
    bn_consts bc = bn_consts_make(b);
    for (int bits = 0; bits < 16; bits++) { /* lo, gamma, beta, in place */
        if (!in_sweep(b, (unsigned)bits))
            continue;
        ls_bn_config c = {BN_APPLY, bits >> 3 & 1, 0, 0, 0, 0, 0, bits & 1, bits >> 1 & 1, bits >> 2 & 1, 0};
        ls_bn_run(k, b, &bc, &c);
    }
    bn_consts_free(&bc);
}

static void case_f32_batchnorm_bwd(const keel_kernels *k, const batch *b)
{
    bn_consts bc = bn_consts_make(b);
    for (int bits = 0; bits < 16; bits++) /* training, gamma, dgamma, dbeta ... */
        for (int dxmode = 0; in_sweep(b, (unsigned)bits) && dxmode < 5; dxmode++) { /* ... x dx */
            /* lo stands for accumulate_dparams, beta for dbeta */
            ls_bn_config c = {BN_BWD, dxmode >= 3, dxmode == 2 || dxmode == 4, dxmode > 0, 0,
                              bits >> 2 & 1, bits & 1, (bits ^ dxmode) & 1, bits >> 1 & 1, bits >> 3 & 1, 0};
            ls_bn_run(k, b, &bc, &c);
        }
    bn_consts_free(&bc);
}

/* ---- fused add + norm and DyT kernels ------------------------------------------------------
 * The same batches through the fused residual + norm kernels (x the batch's x, r its dy rows,
 * lambda and bias the dgamma and dbeta start values, alpha 1 or not; the backward's dy the
 * batch's dy, its dh the dx start values) and DyT's (alpha a random scale). Every buffer a call
 * may write, inputs it may overwrite included (x, r, dy, dh, the saved h), is a private copy,
 * and all of them are compared after the call: an output placed over an input, and anything
 * written where it must not, show. The fused backward has 18 option bits: each batch runs every
 * option alone and FUSED_DRAWS random combinations (from the printed seed). */

enum { FUSED_DRAWS = 12 };
static keel_rng *draw_rng; /* main's generator: the combinations drawn */

/* The buffers of one call (NULL: the config has none). hs: the scalar forward's h of the
 * config's residual (layout lx), with its mean and rstd (rows + GUARD). */
typedef struct fused_io {
    float *x, *r, *dy, *dh, *h, *hs, *y, *dx, *dr, *mean, *rstd, *s_mean, *s_rstd, *parts[4];
} fused_io;

static void fused_io_free(fused_io *o)
{
    float *all[] = {o->x, o->r, o->dy, o->dh, o->h, o->hs, o->y, o->dx, o->dr, o->mean, o->rstd,
                    o->s_mean, o->s_rstd, o->parts[0], o->parts[1], o->parts[2], o->parts[3]};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* Option bits. Forward: */
enum {
    F_LAMBDA = 1, F_BIAS = 2, F_GAMMA = 4, F_BETA = 8, F_STATS = 16, F_ALPHA = 32,
    F_H_OWN = 64, F_H_OVER_X = 128, F_H_OVER_R = 256, F_FWD_BITS = 9
};
/* Backward (F_LAMBDA .. F_ALPHA as above): */
enum {
    B_H_GIVEN = 64, B_DH = 128, B_DX = 256, B_DR = 512, B_ACC = 1024, B_DX_OVER_DH = 2048,
    B_DX_OVER_DY = 4096, B_DR_OVER_R = 8192, B_DGAMMA = 1 << 14, B_DBETA = 1 << 15,
    B_DLAMBDA = 1 << 16, B_DBIAS = 1 << 17, B_HINTS = 1 << 18, B_BWD_BITS = 19
};

static keel_f32_res fused_res(const batch *b, const fused_io *o, unsigned bits)
{
    const size_t po = b->lp.off;
    keel_f32_res res = {o->x + b->lx.off, b->lx.stride, o->r + b->ldy.off, b->ldy.stride,
                        bits & F_ALPHA ? 0.70710677f : 1.0f, bits & F_LAMBDA ? b->dg0 + po : NULL,
                        bits & F_BIAS ? b->db0 + po : NULL};
    return res;
}

/* Copies of the inputs and the outputs' start values of a forward (fwd) or backward call; a
 * backward's saved h and statistics: those of `from` (made before), or the scalar forward's. */
static void fused_io_init(fused_io *o, const batch *b, int ln, int fwd, unsigned bits,
                          const fused_io *from)
{
    memset(o, 0, sizeof *o);
    const size_t n = b->rows + GUARD;
    o->x = test_copy(b->x, b->lx.len);
    o->r = test_copy(b->dy, b->ldy.len);
    if (fwd) {
        o->y = test_copy(b->y0, b->ly.len);
        o->h = test_copy(b->dx0, b->ldx.len);
        o->mean = test_copy(b->y0, n);
        o->rstd = test_copy(b->dx0, n);
        return;
    }
    o->dy = test_copy(b->dy, b->ldy.len);
    o->dh = test_copy(b->dx0, b->ldx.len);
    o->dx = test_copy(b->dx0, b->ldx.len);
    o->dr = test_copy(b->y0, b->ly.len);
    for (int p = 0; p < 4; p++)
        o->parts[p] = test_copy(p & 1 ? b->db0 : b->dg0, b->lp.len);
    if (from) {
        o->hs = test_copy(from->hs, b->lx.len);
        o->s_mean = test_copy(from->s_mean, n);
        o->s_rstd = test_copy(from->s_rstd, n);
        return;
    }
    /* the saved h and statistics a backward may be given: the scalar forward's */
    o->hs = test_copy(b->x, b->lx.len);
    o->s_mean = test_copy(b->y0, n);
    o->s_rstd = test_copy(b->dx0, n);
    float *y = test_copy(b->y0, b->ly.len);
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    const keel_f32_res res = fused_res(b, o, bits);
    if (ln)
        s->f32_add_layernorm_fwd(b->rows, b->dim, &res, o->hs + b->lx.off, b->lx.stride,
                                 y + b->ly.off, b->ly.stride, NULL, NULL, b->eps, o->s_mean,
                                 o->s_rstd);
    else
        s->f32_add_rmsnorm_fwd(b->rows, b->dim, &res, o->hs + b->lx.off, b->lx.stride,
                               y + b->ly.off, b->ly.stride, NULL, b->eps, o->s_rstd);
    free(y);
}

static void fused_fwd_call(const keel_kernels *k, const batch *b, int ln, unsigned bits,
                           fused_io *o)
{
    const size_t po = b->lp.off;
    const keel_f32_res res = fused_res(b, o, bits);
    float *h = bits & F_H_OWN      ? o->h + b->ldx.off
               : bits & F_H_OVER_X ? o->x + b->lx.off
               : bits & F_H_OVER_R ? o->r + b->ldy.off
                                   : NULL;
    const size_t hst = bits & F_H_OWN      ? b->ldx.stride
                       : bits & F_H_OVER_X ? b->lx.stride
                                           : b->ldy.stride;
    const float *gamma = bits & F_GAMMA ? b->gamma + po : NULL;
    float *mean = bits & F_STATS ? o->mean : NULL, *rstd = bits & F_STATS ? o->rstd : NULL;
    if (ln)
        k->f32_add_layernorm_fwd(b->rows, b->dim, &res, h, hst, o->y + b->ly.off, b->ly.stride,
                                 gamma, bits & F_BETA ? b->beta + po : NULL, b->eps, mean, rstd);
    else
        k->f32_add_rmsnorm_fwd(b->rows, b->dim, &res, h, hst, o->y + b->ly.off, b->ly.stride,
                               gamma, b->eps, rstd);
}

static void fused_bwd_call(const keel_kernels *k, const batch *b, int ln, unsigned bits,
                           fused_io *o)
{
    const size_t po = b->lp.off;
    const keel_f32_res res = fused_res(b, o, bits);
    keel_f32_res_grads g;
    memset(&g, 0, sizeof g);
    if (bits & B_DX) {
        g.dx = bits & B_DX_OVER_DH ? o->dh + b->ldx.off
               : bits & B_DX_OVER_DY ? o->dy + b->ldy.off
                                     : o->dx + b->ldx.off;
        g.dx_stride = bits & B_DX_OVER_DY ? b->ldy.stride : b->ldx.stride;
    }
    if (bits & B_DR) {
        g.dr = bits & B_DR_OVER_R ? o->r + b->ldy.off : o->dr + b->ly.off;
        g.dr_stride = bits & B_DR_OVER_R ? b->ldy.stride : b->ly.stride;
    }
    g.accumulate = (bits & B_ACC) != 0;
    static const unsigned part_bits[4] = {B_DGAMMA, B_DBETA, B_DLAMBDA, B_DBIAS};
    for (int p = 0; p < 4; p++)
        g.parts[p] = bits & part_bits[p] ? o->parts[p] + po : NULL;
    g.hints = bits & B_HINTS && k->isa != KEEL_ISA_SCALAR ? b->hints : 0;
    const float *dh = bits & B_DH ? o->dh + b->ldx.off : NULL;
    const float *h = bits & B_H_GIVEN ? o->hs + b->lx.off : NULL;
    const float *gamma = bits & F_GAMMA ? b->gamma + po : NULL;
    const int stats = (bits & F_STATS) != 0;
    if (ln)
        k->f32_add_layernorm_bwd(b->rows, b->dim, o->dy + b->ldy.off, b->ldy.stride, dh,
                                 b->ldx.stride, &res, h, b->lx.stride, stats ? o->s_mean : NULL,
                                 stats ? o->s_rstd : NULL, gamma, b->eps, &g);
    else
        k->f32_add_rmsnorm_bwd(b->rows, b->dim, o->dy + b->ldy.off, b->ldy.stride, dh,
                               b->ldx.stride, &res, h, b->lx.stride, stats ? o->s_rstd : NULL,
                               gamma, b->eps, &g);
}

/* Whether a drawn combination is one the kernels take (at most one place per output; the
 * norm's own options: RMSNorm has no beta). */
static int fused_valid(int ln, int fwd, unsigned bits)
{
    if (!ln && bits & (F_BETA | (fwd ? 0u : (unsigned)B_DBETA)))
        return 0;
    if (fwd) {
        const unsigned h = bits & (F_H_OWN | F_H_OVER_X | F_H_OVER_R);
        return (h & (h - 1)) == 0;
    }
    if ((bits & B_DX_OVER_DH) && (bits & B_DX_OVER_DY))
        return 0;
    if ((bits & B_DX_OVER_DH) && !(bits & (B_DH | B_DX)))
        return 0;
    return 1;
}

static void fused_compare(const batch *b, const fused_io *ro, const fused_io *ko, int fwd,
                          const char *desc)
{
    const size_t n = b->rows + GUARD;
    compare("x", ro->x, ko->x, b->lx.len, &b->lx, b, desc);
    compare("r", ro->r, ko->r, b->ldy.len, &b->ldy, b, desc);
    if (fwd) {
        compare("y", ro->y, ko->y, b->ly.len, &b->ly, b, desc);
        compare("h", ro->h, ko->h, b->ldx.len, &b->ldx, b, desc);
        compare("mean", ro->mean, ko->mean, n, NULL, b, desc);
        compare("rstd", ro->rstd, ko->rstd, n, NULL, b, desc);
        return;
    }
    compare("dy", ro->dy, ko->dy, b->ldy.len, &b->ldy, b, desc);
    compare("dh", ro->dh, ko->dh, b->ldx.len, &b->ldx, b, desc);
    compare("dx", ro->dx, ko->dx, b->ldx.len, &b->ldx, b, desc);
    compare("dr", ro->dr, ko->dr, b->ly.len, &b->ly, b, desc);
    static const char *const part_names[4] = {"dgamma partial", "dbeta partial",
                                              "dlambda partial", "dbias partial"};
    for (int p = 0; p < 4; p++)
        compare(part_names[p], ro->parts[p], ko->parts[p], b->lp.len, NULL, b, desc);
}

static void fused_run(const keel_kernels *k, const batch *b, int ln, int fwd, unsigned bits)
{
    fused_io ro, ko;
    fused_io_init(&ro, b, ln, fwd, bits, NULL);
    fused_io_init(&ko, b, ln, fwd, bits, &ro);
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    if (fwd) {
        fused_fwd_call(s, b, ln, bits, &ro);
        fused_fwd_call(k, b, ln, bits, &ko);
    } else {
        fused_bwd_call(s, b, ln, bits, &ro);
        fused_bwd_call(k, b, ln, bits, &ko);
    }
    char desc[512];
    snprintf(desc, sizeof desc, "%s f32_add_%s_%s dim=%zu rows=%zu (%s batch) eps=%g options 0x%x",
             k->name, ln ? "layernorm" : "rmsnorm", fwd ? "fwd" : "bwd", b->dim, b->rows,
             b->name, (double)b->eps, bits);
    fused_compare(b, &ro, &ko, fwd, desc);
    fused_io_free(&ro);
    fused_io_free(&ko);
}

/* A batch of more than QUICK_LARGE floats (any sweep): the fused and DyT kernels' options are
 * sampled more thinly there (each call copies every buffer twice; the small batches make the
 * combinations, the large ones the variants for tensors beyond the caches). */
static int large_batch(const batch *b) { return b->rows * b->dim > QUICK_LARGE; }

/* None, every option alone, and FUSED_DRAWS drawn combinations; in a large batch, half of the
 * options alone (the two halves in turn, as in_sweep's) and FUSED_DRAWS / 8 drawn. */
static void fused_cases(const keel_kernels *k, const batch *b, int ln, int fwd)
{
    const int nbits = fwd ? F_FWD_BITS : B_BWD_BITS;
    const int draws = large_batch(b) ? FUSED_DRAWS / 8 : FUSED_DRAWS;
    for (int i = -1; i < nbits + draws; i++) {
        if (large_batch(b) && i >= 0 && i < nbits && (unsigned)(i & 1) != b->half)
            continue;
        unsigned bits = i < 0 ? 0u
                        : i < nbits ? 1u << i
                                    : (unsigned)keel_rng_next(draw_rng) & ((1u << nbits) - 1);
        if (!fwd && i >= 0 && i < nbits) /* an option alone, with what makes it do something */
            bits |= B_DX | (bits & B_DX_OVER_DH ? B_DH : 0u);
        if (fused_valid(ln, fwd, bits))
            fused_run(k, b, ln, fwd, bits);
    }
}

/* DyT: the forward's options gamma, beta, y over x; the backward's gamma, dx, accumulate, dx
 * over dy, dgamma, dbeta, dalpha (every combination). */
enum { D_GAMMA = 1, D_BETA = 2, D_INPLACE = 4, D_DX = 8, D_ACC = 16, D_DGAMMA = 32,
       D_DBETA = 64, D_DALPHA = 128 };

static void dyt_call(const keel_kernels *k, const batch *b, int fwd, unsigned bits, float alpha,
                     fused_io *o)
{
    const size_t po = b->lp.off;
    const float *gamma = bits & D_GAMMA ? b->gamma + po : NULL;
    if (fwd) {
        float *y = bits & D_INPLACE ? o->x + b->lx.off : o->y + b->ly.off;
        k->f32_dyt_fwd(b->rows, b->dim, bits & D_INPLACE ? y : o->x + b->lx.off, b->lx.stride, y,
                       bits & D_INPLACE ? b->lx.stride : b->ly.stride, alpha, gamma,
                       bits & D_BETA ? b->beta + po : NULL);
        return;
    }
    float *dx = !(bits & D_DX) ? NULL : bits & D_INPLACE ? o->dy + b->ldy.off : o->dx + b->ldx.off;
    k->f32_dyt_bwd(b->rows, b->dim, o->dy + b->ldy.off, b->ldy.stride, o->x + b->lx.off,
                   b->lx.stride, alpha, gamma, dx, bits & D_INPLACE ? b->ldy.stride : b->ldx.stride,
                   (bits & D_ACC) != 0, bits & D_DGAMMA ? o->parts[0] + po : NULL,
                   bits & D_DBETA ? o->parts[1] + po : NULL,
                   bits & D_DALPHA ? o->parts[2] + po : NULL);
}

/* The forward: every combination. The backward: none, every option alone (with dx where it
 * needs it) and FUSED_DRAWS drawn combinations (FUSED_DRAWS / 4 in a large batch). */
static void dyt_cases(const keel_kernels *k, const batch *b, int fwd)
{
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    const int count = fwd ? 8 : 8 + (large_batch(b) ? FUSED_DRAWS / 4 : FUSED_DRAWS);
    for (int i = 0; i < count; i++) {
        unsigned bits = fwd ? (unsigned)i
                        : i == 0 ? 0u
                        : i < 8  ? 1u << i | (i == 2 || i == 4 ? (unsigned)D_DX : 0u)
                                 : (unsigned)keel_rng_next(draw_rng) & 255u;
        if (!fwd && bits & D_BETA)
            continue;
        const float alpha = (float)keel_rng_range(draw_rng, -3.0, 3.0);
        fused_io ro, ko;
        memset(&ro, 0, sizeof ro);
        memset(&ko, 0, sizeof ko);
        fused_io *both[2] = {&ro, &ko};
        for (int c = 0; c < 2; c++) {
            both[c]->x = test_copy(b->x, b->lx.len);
            both[c]->dy = test_copy(b->dy, b->ldy.len);
            both[c]->y = test_copy(b->y0, b->ly.len);
            both[c]->dx = test_copy(b->dx0, b->ldx.len);
            for (int p = 0; p < 3; p++)
                both[c]->parts[p] = test_copy(p == 1 ? b->db0 : b->dg0, b->lp.len);
        }
        dyt_call(s, b, fwd, bits, alpha, &ro);
        dyt_call(k, b, fwd, bits, alpha, &ko);
        char desc[512];
        snprintf(desc, sizeof desc, "%s f32_dyt_%s dim=%zu rows=%zu (%s batch) alpha=%.9g "
                 "options 0x%x", k->name, fwd ? "fwd" : "bwd", b->dim, b->rows, b->name,
                 (double)alpha, bits);
        compare("x", ro.x, ko.x, b->lx.len, &b->lx, b, desc);
        compare(fwd ? "y" : "dx", fwd ? ro.y : ro.dx, fwd ? ko.y : ko.dx,
                fwd ? b->ly.len : b->ldx.len, fwd ? &b->ly : &b->ldx, b, desc);
        compare("dy (dx over it)", ro.dy, ko.dy, b->ldy.len, &b->ldy, b, desc);
        static const char *const part_names[3] = {"dgamma partial", "dbeta partial",
                                                  "dalpha column"};
        for (int p = 0; p < 3; p++)
            compare(part_names[p], ro.parts[p], ko.parts[p], b->lp.len, NULL, b, desc);
        fused_io_free(&ro);
        fused_io_free(&ko);
    }
}

static void case_f32_add_layernorm_fwd(const keel_kernels *k, const batch *b) { fused_cases(k, b, 1, 1); }
static void case_f32_add_layernorm_bwd(const keel_kernels *k, const batch *b) { fused_cases(k, b, 1, 0); }
static void case_f32_add_rmsnorm_fwd(const keel_kernels *k, const batch *b) { fused_cases(k, b, 0, 1); }
static void case_f32_add_rmsnorm_bwd(const keel_kernels *k, const batch *b) { fused_cases(k, b, 0, 0); }
static void case_f32_dyt_fwd(const keel_kernels *k, const batch *b) { dyt_cases(k, b, 1); }
static void case_f32_dyt_bwd(const keel_kernels *k, const batch *b) { dyt_cases(k, b, 0); }

/* ---- the 16-bit forwards -------------------------------------------------------------------
 * x and y as bf16 (or f16) rows: x rounded from the batch's float rows (padding included), y's
 * buffer from the batch's random floats. The oracle is the staged path: every value widened
 * exactly into float32, the scalar float32 kernel, each y rounded once by the scalar definition
 * (convert.h); this path's 16-bit kernel and the scalar path's must give its bits in the whole
 * y buffer (padding untouched) and its statistics, for every combination of gamma, beta, saved
 * statistics and in place. */
typedef struct u16_fmt {
    const char *name;
    uint16_t (*put)(float);
    float (*get)(uint16_t);
} u16_fmt;
static const u16_fmt fmt_bf16 = {"bf16", keel_f32_to_bf16_bits, keel_bf16_bits_to_f32};
static const u16_fmt fmt_f16 = {"f16", keel_f32_to_f16_bits, keel_f16_bits_to_f32};

static uint16_t *u16_rounded(const u16_fmt *f, const float *src, size_t n)
{
    uint16_t *p = malloc((n ? n : 1) * sizeof *p);
    if (!p)
        test_fatal("out of memory");
    for (size_t i = 0; i < n; i++)
        p[i] = f->put(src[i]);
    return p;
}

static uint16_t *u16_copy(const uint16_t *src, size_t n)
{
    uint16_t *p = malloc((n ? n : 1) * sizeof *p);
    if (!p)
        test_fatal("out of memory");
    memcpy(p, src, n * sizeof *p);
    return p;
}

/* The 16-bit values widened to floats (exact): the staged oracle's input. */
static float *u16_widened(const u16_fmt *f, const uint16_t *src, size_t n)
{
    float *p = test_alloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = f->get(src[i]);
    return p;
}

/* The staged oracle's output: start (the buffer as the kernel finds it) with the rows x dim
 * values of layout l replaced by vals rounded once, where the oracle wrote them. */
static uint16_t *u16_rows_rounded(const u16_fmt *f, const uint16_t *start, const float *vals,
                                  const layout *l, size_t rows, size_t dim)
{
    uint16_t *ref = u16_copy(start, l->len);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++) {
            const size_t i = l->off + r * l->stride + j;
            ref[i] = f->put(vals[i]);
        }
    return ref;
}

/* The first element where got differs from ref (NaN against NaN passes, as `same`), or n. */
static size_t u16_first_diff(const u16_fmt *f, const uint16_t *ref, const uint16_t *got, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ref[i] != got[i] && (strict_nan || !(isnan(f->get(ref[i])) && isnan(f->get(got[i])))))
            return i;
    return n;
}

/* The first element where got differs from ref by `same`, or n. */
static size_t f32_first_diff(const float *ref, const float *got, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!same(ref + i, got + i))
            return i;
    return n;
}

/* The 16-bit forward of path k (LN_FWD or RMS_FWD) on 16-bit rows x, y (y == x: in place). */
static void u16_call(const keel_kernels *k, const u16_fmt *f, op o, const batch *b,
                     const config *c, const uint16_t *x, size_t xs, uint16_t *y, size_t ys,
                     float *mean, float *rstd)
{
    const float *gamma = c->gamma ? b->gamma + b->lp.off : NULL;
    const float *beta = c->beta ? b->beta + b->lp.off : NULL;
    const int bf = f == &fmt_bf16;
    if (o == LN_FWD)
        (bf ? k->bf16_layernorm_fwd : k->f16_layernorm_fwd)(b->rows, b->dim, x, xs, y, ys, gamma,
                                                            beta, b->eps, mean, rstd);
    else
        (bf ? k->bf16_rmsnorm_fwd : k->f16_rmsnorm_fwd)(b->rows, b->dim, x, xs, y, ys, gamma,
                                                        b->eps, rstd);
}

/* The quick sweep (qemu, the sanitizers) makes the 16-bit cases at the widths around the
 * vector's (a multiple of 16, one past, one short) and at every width above 70; the full sweep at
 * every width. */
static int u16_in_sweep(const batch *b)
{
    const size_t t = b->dim % 16;
    return !test_quick() || b->dim > 70 || t == 0 || t == 1 || t == 15;
}

/* The paths a 16-bit case runs against the oracle: k, and the scalar path's 16-bit kernel too on
 * the batches of QUICK_LARGE floats or fewer (on the large ones it costs a function call a value
 * and adds nothing: the scalar kernel has no size-dependent variants). */
static int u16_paths(const keel_kernels *k, const batch *b)
{
    return k == keel_kernels_for(KEEL_ISA_SCALAR) || b->rows * b->dim > QUICK_LARGE ? 1 : 2;
}

static void u16_fwd_cases(const keel_kernels *k, const batch *b, op o, const u16_fmt *f)
{
    if (!u16_in_sweep(b))
        return;
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    const size_t rows = b->rows, dim = b->dim;
    uint16_t *x16 = u16_rounded(f, b->x, b->lx.len), *y16 = u16_rounded(f, b->y0, b->ly.len);
    for (int bits = 0; bits < 16; bits++) {
        const config c = {o, bits & 1, bits >> 1 & 1, bits >> 2 & 1, bits >> 3 & 1, 0, 0, 0, 0};
        if (!in_sweep(b, (unsigned)bits) || (o == RMS_FWD && c.beta))
            continue;
        const layout *ly = c.inplace ? &b->lx : &b->ly;
        const uint16_t *start = c.inplace ? x16 : y16;
        /* the oracle: widen, the scalar float32 kernel, round the rows */
        float *xf = u16_widened(f, x16, b->lx.len), *yf = test_alloc(ly->len);
        float *mean = test_copy(b->y0, rows + GUARD), *rstd = test_copy(b->dx0, rows + GUARD);
        const float *gamma = c.gamma ? b->gamma + b->lp.off : NULL;
        if (o == LN_FWD)
            s->f32_layernorm_fwd(rows, dim, xf + b->lx.off, b->lx.stride, yf + ly->off, ly->stride,
                                 gamma, c.beta ? b->beta + b->lp.off : NULL, b->eps,
                                 c.stats ? mean : NULL, c.stats ? rstd : NULL);
        else
            s->f32_rmsnorm_fwd(rows, dim, xf + b->lx.off, b->lx.stride, yf + ly->off, ly->stride,
                               gamma, b->eps, c.stats ? rstd : NULL);
        uint16_t *ref = u16_rows_rounded(f, start, yf, ly, rows, dim);
        const keel_kernels *paths[2] = {k, s};
        for (int p = 0; p < u16_paths(k, b); p++) {
            uint16_t *got = u16_copy(start, ly->len);
            float *gm = test_copy(b->y0, rows + GUARD), *gr = test_copy(b->dx0, rows + GUARD);
            u16_call(paths[p], f, o, b, &c, c.inplace ? got + b->lx.off : x16 + b->lx.off,
                     b->lx.stride, got + ly->off, ly->stride, c.stats ? gm : NULL,
                     c.stats ? gr : NULL);
            const size_t i = u16_first_diff(f, ref, got, ly->len);
            const size_t im = f32_first_diff(mean, gm, rows + GUARD);
            const size_t ir = f32_first_diff(rstd, gr, rows + GUARD);
            test_check(i == ly->len && im == rows + GUARD && ir == rows + GUARD,
                       "%s %s_%s dim=%zu rows=%zu (%s batch) eps=%g gamma=%d beta=%d stats=%d "
                       "inplace=%d: against the staged oracle, y %s at %zu (0x%04x, want 0x%04x), "
                       "mean %s, rstd %s",
                       paths[p]->name, f->name, op_names[o], dim, rows, b->name, (double)b->eps,
                       c.gamma, c.beta, c.stats, c.inplace, i == ly->len ? "same" : "differs",
                       i, i < ly->len ? got[i] : 0u, i < ly->len ? ref[i] : 0u,
                       im == rows + GUARD ? "same" : "differs",
                       ir == rows + GUARD ? "same" : "differs");
            free(got);
            free(gm);
            free(gr);
        }
        free(xf);
        free(yf);
        free(mean);
        free(rstd);
        free(ref);
    }
    free(x16);
    free(y16);
}

static void case_bf16_layernorm_fwd(const keel_kernels *k, const batch *b) { u16_fwd_cases(k, b, LN_FWD, &fmt_bf16); }
static void case_f16_layernorm_fwd(const keel_kernels *k, const batch *b) { u16_fwd_cases(k, b, LN_FWD, &fmt_f16); }
static void case_bf16_rmsnorm_fwd(const keel_kernels *k, const batch *b) { u16_fwd_cases(k, b, RMS_FWD, &fmt_bf16); }
static void case_f16_rmsnorm_fwd(const keel_kernels *k, const batch *b) { u16_fwd_cases(k, b, RMS_FWD, &fmt_f16); }

/* The 16-bit backwards: dy and x rounded from the batch's rows, the dx buffer from its random
 * floats (in place: a copy of dy). The oracle widens all three, runs the scalar float32
 * backward (an accumulated dx adds to the widened old value) and rounds the rows of dx once;
 * the partials are float32 and compared as they are. */
static void u16_bwd_cases(const keel_kernels *k, const batch *b, op o, const u16_fmt *f)
{
    if (!u16_in_sweep(b))
        return;
    const keel_kernels *s = keel_kernels_for(KEEL_ISA_SCALAR);
    const size_t rows = b->rows, dim = b->dim, po = b->lp.off;
    uint16_t *x16 = u16_rounded(f, b->x, b->lx.len), *dy16 = u16_rounded(f, b->dy, b->ldy.len);
    uint16_t *dx16 = u16_rounded(f, b->dx0, b->ldx.len);
    for (int bits = 0; bits < 16; bits++)
        for (int dxmode = 0; in_sweep(b, (unsigned)bits) && dxmode < 5; dxmode++) {
            const config c = {o, bits & 1, 0, bits >> 1 & 1, dxmode >= 3, dxmode == 2 || dxmode == 4,
                              dxmode > 0, bits >> 2 & 1, bits >> 3 & 1};
            if (o == RMS_BWD && c.db)
                continue;
            const layout *ldx = c.inplace ? &b->ldy : &b->ldx;
            const uint16_t *start = c.inplace ? dy16 : dx16;
            const float *gamma = c.gamma ? b->gamma + po : NULL;
            const int flags = c.acc ? KEEL_KBWD_ACCUMULATE : 0;
            /* the oracle */
            float *xf = u16_widened(f, x16, b->lx.len), *dyf = u16_widened(f, dy16, b->ldy.len);
            float *dxf = u16_widened(f, start, ldx->len);
            float *dg = test_copy(b->dg0, b->lp.len), *db = test_copy(b->db0, b->lp.len);
            float *dxo = c.dx ? (c.inplace ? dyf : dxf) + ldx->off : NULL;
            if (o == LN_BWD)
                s->f32_layernorm_bwd(rows, dim, dyf + b->ldy.off, b->ldy.stride, xf + b->lx.off,
                                     b->lx.stride, c.stats ? b->mean : NULL,
                                     c.stats ? b->rstd : NULL, gamma, b->eps, dxo, ldx->stride,
                                     flags, c.dg ? dg + po : NULL, c.db ? db + po : NULL);
            else
                s->f32_rmsnorm_bwd(rows, dim, dyf + b->ldy.off, b->ldy.stride, xf + b->lx.off,
                                   b->lx.stride, c.stats ? b->rms_rstd : NULL, gamma, b->eps, dxo,
                                   ldx->stride, flags, c.dg ? dg + po : NULL);
            uint16_t *ref =
                u16_rows_rounded(f, start, c.inplace ? dyf : dxf, ldx, c.dx ? rows : 0, dim);
            const keel_kernels *paths[2] = {k, s};
            for (int p = 0; p < u16_paths(k, b); p++) {
                uint16_t *got = u16_copy(start, ldx->len);
                float *gg = test_copy(b->dg0, b->lp.len), *gb = test_copy(b->db0, b->lp.len);
                const uint16_t *dyp = c.inplace ? got + b->ldy.off : dy16 + b->ldy.off;
                uint16_t *dxp = c.dx ? got + ldx->off : NULL;
                const int hints = paths[p]->isa != KEEL_ISA_SCALAR ? b->hints : 0;
                const int bf = f == &fmt_bf16;
                if (o == LN_BWD)
                    (bf ? paths[p]->bf16_layernorm_bwd : paths[p]->f16_layernorm_bwd)(
                        rows, dim, dyp, b->ldy.stride, x16 + b->lx.off, b->lx.stride,
                        c.stats ? b->mean : NULL, c.stats ? b->rstd : NULL, gamma, b->eps, dxp,
                        ldx->stride, flags | hints, c.dg ? gg + po : NULL, c.db ? gb + po : NULL);
                else
                    (bf ? paths[p]->bf16_rmsnorm_bwd : paths[p]->f16_rmsnorm_bwd)(
                        rows, dim, dyp, b->ldy.stride, x16 + b->lx.off, b->lx.stride,
                        c.stats ? b->rms_rstd : NULL, gamma, b->eps, dxp, ldx->stride,
                        flags | hints, c.dg ? gg + po : NULL);
                const size_t i = u16_first_diff(f, ref, got, ldx->len);
                const size_t ig = f32_first_diff(dg, gg, b->lp.len);
                const size_t ib = f32_first_diff(db, gb, b->lp.len);
                test_check(i == ldx->len && ig == b->lp.len && ib == b->lp.len,
                           "%s %s_%s dim=%zu rows=%zu (%s batch) eps=%g gamma=%d stats=%d "
                           "inplace=%d acc=%d dx=%d dgamma=%d dbeta=%d hints=%d: against the "
                           "staged oracle, dx %s at %zu (0x%04x, want 0x%04x), dgamma %s, dbeta %s",
                           paths[p]->name, f->name, op_names[o], dim, rows, b->name,
                           (double)b->eps, c.gamma, c.stats, c.inplace, c.acc, c.dx, c.dg, c.db,
                           hints, i == ldx->len ? "same" : "differs", i,
                           i < ldx->len ? got[i] : 0u, i < ldx->len ? ref[i] : 0u,
                           ig == b->lp.len ? "same" : "differs",
                           ib == b->lp.len ? "same" : "differs");
                free(got);
                free(gg);
                free(gb);
            }
            free(xf);
            free(dyf);
            free(dxf);
            free(dg);
            free(db);
            free(ref);
        }
    free(x16);
    free(dy16);
    free(dx16);
}

static void case_bf16_layernorm_bwd(const keel_kernels *k, const batch *b) { u16_bwd_cases(k, b, LN_BWD, &fmt_bf16); }
static void case_f16_layernorm_bwd(const keel_kernels *k, const batch *b) { u16_bwd_cases(k, b, LN_BWD, &fmt_f16); }
static void case_bf16_rmsnorm_bwd(const keel_kernels *k, const batch *b) { u16_bwd_cases(k, b, RMS_BWD, &fmt_bf16); }
static void case_f16_rmsnorm_bwd(const keel_kernels *k, const batch *b) { u16_bwd_cases(k, b, RMS_BWD, &fmt_f16); }

/* ---- the cases of the kernel list ----------------------------------------------------------
 * One case per kernel of KEEL_KERNEL_LIST (kernels.h), in its order: a kernel added to the list
 * without a case_<op> here does not compile. */
typedef void case_fn(const keel_kernels *k, const batch *b);
#define CASE_OF(op, neon) {#op, case_##op},
static const struct kernel_case {
    const char *op;
    case_fn *run;
} kernel_cases[] = {KEEL_KERNEL_LIST(CASE_OF)};
#undef CASE_OF
#define INDEX_OF(op, neon) K_##op,
enum { KEEL_KERNEL_LIST(INDEX_OF) K_COUNT };
#undef INDEX_OF
_Static_assert((int)K_COUNT == (int)KEEL_KERNEL_COUNT, "a case per kernel of the list");

typedef void (*any_fn)(void);
static any_fn entry_of(const keel_kernels *k, int i)
{
#define POINTER_OF(op, neon) (any_fn)k->op,
    const any_fn all[] = {KEEL_KERNEL_LIST(POINTER_OF)};
#undef POINTER_OF
    return all[i];
}

/* A path's entry that is the scalar kernel itself (the neon column of the list names scalar
 * for the ops not yet written over lanes__neon.h) has the scalar bits by construction: its
 * case is not run. */
static long scalar_entries_skipped;
static int is_scalar_entry(const keel_kernels *k, int i)
{
    return k != keel_kernels_for(KEEL_ISA_SCALAR) &&
           entry_of(k, i) == entry_of(keel_kernels_for(KEEL_ISA_SCALAR), i);
}

static void run_case(const keel_kernels *k, const batch *b, int i)
{
    if (is_scalar_entry(k, i))
        scalar_entries_skipped++;
    else
        kernel_cases[i].run(k, b);
}

static void run_all_cases(const keel_kernels *k, const batch *b)
{
    for (int i = 0; i < K_COUNT; i++)
        run_case(k, b, i);
}

static void run_norm_cases(const keel_kernels *k, const batch *b, int with_bwd)
{
    run_case(k, b, K_f32_layernorm_fwd);
    run_case(k, b, K_f32_rmsnorm_fwd);
    if (with_bwd) { /* the few-rows batches: the 16-bit kernels' pipelines too */
        run_case(k, b, K_bf16_layernorm_fwd);
        run_case(k, b, K_f16_layernorm_fwd);
        run_case(k, b, K_bf16_rmsnorm_fwd);
        run_case(k, b, K_f16_rmsnorm_fwd);
        run_case(k, b, K_f32_layernorm_bwd);
        run_case(k, b, K_f32_rmsnorm_bwd);
        run_case(k, b, K_bf16_layernorm_bwd);
        run_case(k, b, K_f16_layernorm_bwd);
        run_case(k, b, K_bf16_rmsnorm_bwd);
        run_case(k, b, K_f16_rmsnorm_bwd);
    }
}

/* The sign of a row's NaN (kernels.h: RMSNorm's b_f is the canonical NaN when NaN). A row of
 * -Inf makes rstd +NaN and Sgx the -NaN of Inf - Inf; before b was made canonical, the row's dx
 * came out +NaN on one path, -NaN on another, and both within one row of the scalar path. Every
 * path must give 0x7fc00000 in every element of dx, strictly (whatever KEEL_TEST_STRICT_NAN
 * says), through the plain and the fused backward. */
static void check_nan_sign(const keel_kernels *k)
{
    const float x[3] = {-INFINITY, -INFINITY, -INFINITY}, dy[3] = {1.0f, -2.0f, 3.0f};
    const float gamma[3] = {1.0f, 0.5f, -1.0f};
    float dx[3], dg[3] = {0}, dx2[3], dg2[3] = {0};
    k->f32_rmsnorm_bwd(1, 3, dy, 3, x, 3, NULL, gamma, 1e-5f, dx, 3, 0, dg);
    keel_f32_res_grads g;
    memset(&g, 0, sizeof g);
    g.dx = dx2;
    g.dx_stride = 3;
    g.parts[KEEL_PART_DGAMMA] = dg2;
    const float zero[3] = {0.0f, 0.0f, 0.0f}; /* r = 0: h = x */
    const keel_f32_res res0 = {x, 3, zero, 3, 1.0f, NULL, NULL};
    k->f32_add_rmsnorm_bwd(1, 3, dy, 3, NULL, 3, &res0, NULL, 3, NULL, gamma, 1e-5f, &g);
    for (int j = 0; j < 3; j++) {
        test_check(to_bits(dx[j]) == 0x7fc00000u, "%s rmsnorm_bwd of a -Inf row: dx[%d] 0x%08x, "
                   "want the canonical NaN 0x7fc00000", k->name, j, (unsigned)to_bits(dx[j]));
        test_check(to_bits(dx2[j]) == 0x7fc00000u, "%s add_rmsnorm_bwd of a -Inf row: dx[%d] "
                   "0x%08x, want 0x7fc00000", k->name, j, (unsigned)to_bits(dx2[j]));
    }
}

/* The AVX-512 path's bf16 norms built for AVX512_BF16 (kernels.h, KEEL_AVX512BF16_LIST), where
 * this CPU has the extension: the same cases as the other paths' bf16 kernels (the rest of the
 * table is the AVX-512 path's, compared above), the row pipelines with and without hints, and
 * batches whose gamma is scaled into the float32 subnormals, so that outputs are subnormal and
 * the stores that vcvtneps2bf16 would read as zero go through the integer rounding. */
static int run_avx512bf16_cases(keel_rng *rng, const size_t *dims, size_t ndims)
{
    const keel_kernels *k = keel_kernels_for_cpu(KEEL_ISA_AVX512, keel_cpu_has_avx512_bf16());
    if (!k || k == keel_kernels_for(KEEL_ISA_AVX512))
        return 0;
    static const int bf16_cases[] = {K_bf16_layernorm_fwd, K_bf16_rmsnorm_fwd,
                                     K_bf16_layernorm_bwd, K_bf16_rmsnorm_bwd};
    printf("path %s (%s, ...): its bf16 norms\n", k->name,
           k->kernel_names[K_bf16_layernorm_fwd]);
    for (size_t di = 0; di < ndims; di++)
        for (int mode = B_ADVERSARIAL; mode <= B_FINITE + 1; mode++) {
            batch b;
            make_batch(&b, rng, dims[di], mode <= B_FINITE ? (batch_mode)mode : B_FINITE);
            if (mode > B_FINITE) /* gamma * xhat in the float32 subnormals */
                for (size_t j = 0; j < b.lp.len; j++)
                    b.gamma[j] *= 0x1p-130f;
            for (size_t c = 0; c < sizeof bf16_cases / sizeof bf16_cases[0]; c++)
                run_case(k, &b, bf16_cases[c]);
            free_batch(&b);
        }
    static const size_t few_dims[] = {300, 1024};
    for (size_t di = 0; di < sizeof few_dims / sizeof few_dims[0]; di++) {
        batch b;
        make_batch(&b, rng, few_dims[di], B_FEW);
        for (size_t n = 1; n <= b.rows; n++)
            for (int h = 0; h < 2; h++) {
                batch sb = sub_batch(&b, 0, n);
                sb.hints = h ? KEEL_KBWD_PREFETCH | KEEL_KBWD_STREAM : 0;
                for (size_t c = 0; c < sizeof bf16_cases / sizeof bf16_cases[0]; c++)
                    run_case(k, &sb, bf16_cases[c]);
            }
        free_batch(&b);
    }
    if (!test_quick()) { /* streamed bf16 outputs: 17 MiB of them */
        batch b;
        make_batch(&b, rng, 4096, B_STREAM16);
        run_case(k, &b, K_bf16_layernorm_fwd);
        run_case(k, &b, K_bf16_rmsnorm_fwd);
        free_batch(&b);
    }
    return 1;
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_kernels_bitwise"));
    draw_rng = &rng;
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
    for (int i = 0; i < nisa; i++)
        check_nan_sign(keel_kernels_for(isas[i]));
    for (int i = 0; i < nisa; i++) {
        if (isas[i] == KEEL_ISA_SCALAR)
            continue;
        const keel_kernels *k = keel_kernels_for(isas[i]);
        /* the norms' own batches (streamed outputs, row pipelines) only where the path has them */
        const int norms = !is_scalar_entry(k, K_f32_layernorm_fwd) ||
                          !is_scalar_entry(k, K_f32_rmsnorm_fwd) ||
                          !is_scalar_entry(k, K_f32_layernorm_bwd) ||
                          !is_scalar_entry(k, K_f32_rmsnorm_bwd);
        printf("path %s%s\n", k->name,
               norms ? "" : " (its norms are the scalar kernels: their batches are not made)");
        tested++;
        for (size_t di = 0; di < ndims; di++) {
            for (int mode = B_ADVERSARIAL; mode <= B_FINITE; mode++) {
                batch b;
                make_batch(&b, &rng, dims[di], (batch_mode)mode);
                run_all_cases(k, &b);
                free_batch(&b);
            }
        }
        /* 56: the fused forwards' row pipeline just past the AVX-512 batches */
        static const size_t many_dims[] = {300, 4097, 56};
        for (size_t di = 0; di < sizeof many_dims / sizeof many_dims[0]; di++) {
            batch b;
            make_batch(&b, &rng, many_dims[di], B_MANY);
            run_all_cases(k, &b);
            free_batch(&b);
        }
        /* 16, 48: AVX-512's batches of rows (48: three vectors a row) */
        static const size_t stream_dims[] = {4096, 1500, 16, 48};
        /* (2 x 17 MiB a call: the quick sweep makes half of the combinations, in_sweep) */
        for (size_t di = 0; norms && di < sizeof stream_dims / sizeof stream_dims[0]; di++) {
            batch b;
            make_batch(&b, &rng, stream_dims[di], B_STREAM);
            run_norm_cases(k, &b, 0);
            free_batch(&b);
        }
        /* 16-bit outputs streamed: 17 MiB of them (twice the rows of the batch above); in the
         * full sweep only (34 MiB a float array) */
        if (norms && !test_quick()) {
            batch b;
            make_batch(&b, &rng, 4096, B_STREAM16);
            run_case(k, &b, K_bf16_layernorm_fwd);
            run_case(k, &b, K_f16_rmsnorm_fwd);
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
                    run_norm_cases(k, &b, 0);
                }
            else
                for (size_t first = 0; first <= 1; first++)
                    for (size_t n = 1; first + n <= b.rows; n++)
                        for (int h = 0; h < 2; h++) {
                            batch s = sub_batch(&b, first, n);
                            s.hints = h ? KEEL_KBWD_PREFETCH | KEEL_KBWD_STREAM : 0;
                            run_norm_cases(k, &s, 1);
                        }
            free_batch(&b);
        }
        /* rows == 0 writes nothing */
        batch b;
        make_batch(&b, &rng, 5, B_FINITE);
        b.rows = 0;
        run_all_cases(k, &b);
        b.rows = 1;
        free_batch(&b);
    }
    tested += run_avx512bf16_cases(&rng, dims, ndims);
    if (!tested)
        printf("no SIMD path on this machine or in this build: nothing to compare\n");
    if (scalar_entries_skipped)
        printf("%ld kernel cases not run: the path's entry is the scalar kernel itself\n",
               scalar_entries_skipped);
    if (!strict_nan)
        printf("%ld buffers passed with NaNs in the same places but other NaN payloads (rows with "
               "several different NaNs; KEEL_TEST_STRICT_NAN=1 fails them)\n", nan_payload_only);
    return test_finish();
}
