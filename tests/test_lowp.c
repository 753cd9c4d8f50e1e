/*
 * test_lowp: the low-precision half of keel.h ("Low precision") on every instruction-set path
 * this machine runs and with 1, 2 and 3 threads.
 *
 *  - forward, every (x, y) dtype pair of {f32, bf16, f16}^2; backward, all 27 (dy, x, dx)
 *    combinations; LayerNorm and RMSNorm; random and adversarial rows (the kinds of keel_cases.h,
 *    f16 values near 65504 whose squares overflow f16, rows alternating +-65504, bf16 rows with a
 *    large mean and a small spread, constant rows, all-zero rows with eps 1e-12), random strides
 *    (the padding of a bf16/f16 input holds NaN, so a kernel reading past dim is caught).
 *  - accuracy against the float64 reference computed from the *stored* inputs (the bf16/f16
 *    values the tensors hold): a bf16/f16 output element within 1 ulp of its dtype (the dtype's
 *    spacing at the reference value); a float32 output within KEEL_BOUND_ROW_ULPS float32 ulps of
 *    its row's largest |ref| (test_ops' rule); mean/rstd within KEEL_BOUND_STAT_ULPS; dgamma/dbeta
 *    within keel_bound_dparam. One allowance, counted and printed: an element far smaller than
 *    its row (a y = xhat*gamma + beta that cancels, a dx near 0) carries the float32
 *    computation's absolute error, KEEL_BOUND_ROW_ULPS float32 ulps of the row, which can exceed
 *    one bf16/f16 ulp of the tiny value itself; such an element may be off by half a dtype ulp
 *    plus that float32 error. No float32 computation can do better, so the strict 1-ulp
 *    bound is checked, and reported, only where it can hold.
 *  - what keel.h makes exact, bitwise: a bf16/f16 input gives the same float32 output as the
 *    float32 call on its widened values; a bf16/f16 output is the float32 output rounded once
 *    (convert.h's definition); every ISA path and thread count gives the same bits; in place
 *    equals out of place; dx = dy aliasing equals separate buffers; accumulating into a bf16/f16
 *    dx gives round(old + dx_f32) (one float32 addition, one rounding).
 *  - special rows: a row with NaN/Inf is NaN in all its outputs and touches no other row;
 *    constant rows give round(beta) exactly; an all-zero f16 row with eps 1e-12 gives round(beta)
 *    (LayerNorm) or 0 (RMSNorm) with a finite rstd (pytorch#41527).
 *  - int8 forwards: per-tensor and dynamic per-row scales, with and without SmoothQuant factors:
 *    bitwise, q == keel_quantize_i8(y_f32, s) and row_scale == max|y_f32| / 127 with y_f32 the
 *    float32 forward with the folded gamma/beta; against the reference, q == round_half_even(
 *    y_ref / s) clamped, except where y_ref / s lies within the float32 computation's error of a
 *    .5 boundary (counted: rare), and row_scale within the float32 forward's error of
 *    max|y_ref| / 127 (KEEL_BOUND_ROW_ULPS ulps of the row's max, / 127, plus the division's
 *    half ulp; the worst is printed, ~2 ulps of the scale: 1 ulp cannot hold, max|y_f32| itself
 *    is off by up to a few ulps).
 *  - NaN bits: a run that differs from the scalar 1-thread run only in the sign or payload of
 *    NaNs is counted and reported at the end (NaN payloads are unspecified, keel.h); with
 *    KEEL_TEST_STRICT_NAN=1 it fails.
 *  - bad arguments of the int8 forms and of keel_eps_check, outputs unchanged on error; the
 *    numbers of keel_eps_check.
 */
#include <float.h>
#include <math.h>

#include "convert.h"
#include "keel_ref.h"
#include "test_common.h"

/* rounds of the forward and backward sweeps (each a fresh draw of shapes, strides, options) */
#define SWEEP_ROUNDS (test_quick() ? 1 : 2)

typedef enum op_kind { OP_LAYERNORM, OP_RMSNORM } op_kind;

static const char *op_name(op_kind op) { return op == OP_LAYERNORM ? "layernorm" : "rmsnorm"; }

static const keel_dtype float_dtypes[3] = {KEEL_F32, KEEL_BF16, KEEL_F16};
static const int thread_counts[3] = {1, 2, 3};

/* one context per thread count */
static keel_ctx *ctxs[3];
static keel_isa isas[3];
static int n_isas;

/* ---- row kinds: keel_cases.h's and the low-precision adversaries ------------------------------ */

enum {
    KIND_F16_NEAR_MAX = KEEL_CASE_COUNT, /* |x| in [60000, 65504], random signs: x^2 overflows f16 */
    KIND_ALT_MAX,                         /* +-65504 alternating (mean ~0, var 65504^2) */
    KIND_LARGE_MEAN, /* 3000 + N(0, 1) (spacing 16 in bf16, 2 in f16) or 1e5 + N(0, 100) (f16: Inf) */
    KIND_COUNT
};

static const char *kind_name(int kind)
{
    switch (kind) {
    case KIND_F16_NEAR_MAX: return "f16-near-max";
    case KIND_ALT_MAX: return "alternating-65504";
    case KIND_LARGE_MEAN: return "large-mean";
    default: return keel_case_name((keel_case_kind)kind);
    }
}

static void fill_row(keel_rng *rng, int kind, float *row, size_t dim)
{
    switch (kind) {
    case KIND_F16_NEAR_MAX:
        for (size_t j = 0; j < dim; j++)
            row[j] = (float)((keel_rng_below(rng, 2) ? -1.0 : 1.0) * keel_rng_range(rng, 60000.0, 65504.0));
        break;
    case KIND_ALT_MAX:
        for (size_t j = 0; j < dim; j++)
            row[j] = (j & 1) ? -65504.0f : 65504.0f;
        break;
    case KIND_LARGE_MEAN: {
        const int big = keel_rng_below(rng, 2) != 0;
        const double centre = (keel_rng_below(rng, 2) ? -1.0 : 1.0) * (big ? 1e5 : 3000.0);
        for (size_t j = 0; j < dim; j++)
            row[j] = (float)(centre + (big ? 100.0 : 1.0) * keel_rng_normal(rng));
        break;
    }
    default:
        keel_case_fill_row(rng, (keel_case_kind)kind, row, dim);
    }
}

/* ---- tensors of any dtype ------------------------------------------------------------------------- */

static size_t dtype_size(keel_dtype dt) { return dt == KEEL_F32 ? 4 : dt == KEEL_I8 ? 1 : 2; }

/* rows x stride elements plus one spare row, every byte TEST_SENTINEL-like (0x5a) unless filled */
typedef struct tbuf {
    keel_dtype dt;
    size_t rows, dim, stride;
    unsigned char *data;
} tbuf;

static size_t tbuf_bytes(const tbuf *t) { return (t->rows + 1) * t->stride * dtype_size(t->dt); }

static tbuf tbuf_new(keel_dtype dt, size_t rows, size_t dim, size_t stride)
{
    tbuf t = {dt, rows, dim, stride, NULL};
    t.data = malloc(tbuf_bytes(&t));
    if (!t.data)
        test_fatal("out of memory");
    memset(t.data, 0x5a, tbuf_bytes(&t));
    return t;
}

static tbuf tbuf_clone(const tbuf *s)
{
    tbuf t = *s;
    t.data = malloc(tbuf_bytes(s));
    if (!t.data)
        test_fatal("out of memory");
    memcpy(t.data, s->data, tbuf_bytes(s));
    return t;
}

static keel_tensor tensor_of(const tbuf *t)
{
    keel_tensor k;
    k.data = t->data;
    k.dtype = t->dt;
    k.stride = t->stride;
    return k;
}

/* rounding of one float to a dtype and back: the definition of convert.h (test_convert checks
 * it against an independent oracle) */
static float round_to(keel_dtype dt, float v)
{
    switch (dt) {
    case KEEL_BF16: return keel_bf16_bits_to_f32(keel_f32_to_bf16_bits(v));
    case KEEL_F16: return keel_f16_bits_to_f32(keel_f32_to_f16_bits(v));
    default: return v;
    }
}

static void tbuf_set(tbuf *t, size_t i, float v) /* element i of the buffer (not a row index) */
{
    if (t->dt == KEEL_F32) {
        memcpy(t->data + 4 * i, &v, 4);
    } else {
        const uint16_t h = t->dt == KEEL_BF16 ? keel_f32_to_bf16_bits(v) : keel_f32_to_f16_bits(v);
        memcpy(t->data + 2 * i, &h, 2);
    }
}

static float tbuf_get(const tbuf *t, size_t i)
{
    if (t->dt == KEEL_F32) {
        float v;
        memcpy(&v, t->data + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    return t->dt == KEEL_BF16 ? keel_bf16_bits_to_f32(h) : keel_f16_bits_to_f32(h);
}

/* An input: rows of `kind` stored in dt (rounded once), NaN in the padding; *dense receives the
 * stored values widened (rows x dim), what the reference is computed from. */
static tbuf make_input(keel_rng *rng, keel_dtype dt, int kind, int is_dy, size_t rows, size_t dim,
                       size_t stride, float **dense)
{
    tbuf t = tbuf_new(dt, rows, dim, stride);
    float *row = test_alloc(dim);
    float *d = test_alloc(rows * dim);
    for (size_t r = 0; r < rows; r++) {
        if (is_dy)
            keel_case_fill_normal(rng, row, dim);
        else
            fill_row(rng, kind, row, dim);
        for (size_t j = 0; j < stride; j++)
            tbuf_set(&t, r * stride + j, j < dim ? row[j] : NAN);
        for (size_t j = 0; j < dim; j++)
            d[r * dim + j] = tbuf_get(&t, r * stride + j);
    }
    free(row);
    *dense = d;
    return t;
}

/* the same values as a float32 tbuf of the same stride (padding NaN) */
static tbuf widened(const tbuf *t)
{
    tbuf w = tbuf_new(KEEL_F32, t->rows, t->dim, t->stride);
    for (size_t i = 0; i < t->rows * t->stride; i++)
        tbuf_set(&w, i, tbuf_get(t, i));
    return w;
}

/* ---- the error measure ----------------------------------------------------------------------- */

static double max_finite(keel_dtype dt)
{
    return dt == KEEL_F16 ? 65504.0 : dt == KEEL_BF16 ? 0x1.fep127 : (double)FLT_MAX;
}

/* The spacing of dt's numbers at magnitude |v|. */
static double ulp_of(keel_dtype dt, double v)
{
    if (dt == KEEL_F32)
        return keel_ulp32(v);
    const int p = dt == KEEL_F16 ? 10 : 7;               /* fraction bits */
    const double min_normal = dt == KEEL_F16 ? 0x1p-14 : (double)FLT_MIN;
    v = fabs(v);
    if (!(v >= min_normal))
        return min_normal * ldexp(1.0, -p);
    if (v >= max_finite(dt))
        v = max_finite(dt);
    int e;
    frexp(v, &e); /* v in [2^(e-1), 2^e): spacing 2^(e-1-p) */
    return ldexp(1.0, e - 1 - p);
}

/* Accumulated over a test: how the bound was met. */
typedef struct accuracy {
    long elements;   /* bf16/f16 elements checked */
    long floor_used; /* within the cancellation allowance but more than 1 ulp from the reference */
    double worst_ulps[3];  /* per output dtype: worst |got - ref| / ulp at ref, allowance excluded */
    char worst_at[3][160]; /* got and ref of the worst */
} accuracy;

static accuracy acc;

/* Checks rows of t (any float dtype) against ref (dense rows x dim); floors[r] (or NULL) raises
 * row r's scale as keel_dx_scale does. Returns 1 when every element passes; *where describes the
 * first failure. */
static int check_output(const tbuf *t, const double *ref, const double *floors, char *where,
                        size_t where_size)
{
    for (size_t r = 0; r < t->rows; r++) {
        double scale = floors && isfinite(floors[r]) ? fabs(floors[r]) : 0.0;
        for (size_t j = 0; j < t->dim; j++)
            if (isfinite(ref[r * t->dim + j]))
                scale = fmax(scale, fabs(ref[r * t->dim + j]));
        const double f32_err = KEEL_BOUND_ROW_ULPS * keel_ulp32(scale);
        for (size_t j = 0; j < t->dim; j++) {
            const double g = tbuf_get(t, r * t->stride + j), want = ref[r * t->dim + j];
            int ok;
            double ulps = 0.0;
            if (isnan(want) || isnan(g))
                ok = isnan(want) && isnan(g);
            else if (isinf(want))
                ok = g == want;
            else if (isinf(g)) /* one ulp beyond the largest finite value */
                ok = t->dt != KEEL_F32 && (g > 0) == (want > 0) && fabs(want) >= max_finite(t->dt);
            else if (t->dt == KEEL_F32) {
                ok = fabs(g - want) <= f32_err;
                ulps = fabs(g - want) / keel_ulp32(scale);
            } else {
                const double e = fabs(g - want), u = ulp_of(t->dt, want);
                ulps = e / u;
                ok = e <= u;
                if (!ok && e <= 0.5 * u + f32_err) {
                    ok = 1;
                    acc.floor_used++;
                    ulps = 0.0;
                }
                acc.elements++;
            }
            const int slot = t->dt == KEEL_F32 ? 0 : t->dt == KEEL_BF16 ? 1 : 2;
            if (ulps > acc.worst_ulps[slot]) {
                acc.worst_ulps[slot] = ulps;
                snprintf(acc.worst_at[slot], sizeof acc.worst_at[slot], "got %.9g ref %.17g", g, want);
            }
            if (!ok) {
                snprintf(where, where_size,
                         "row %zu index %zu: got %.9g, ref %.17g (%.3g %s ulps at ref; row scale %.6g)",
                         r, j, g, want, fabs(g - want) / ulp_of(t->dt, want),
                         keel_dtype_name(t->dt), scale);
                return 0;
            }
        }
    }
    return 1;
}

/* Every byte outside rows x dim (padding after dim, the spare row) still 0x5a. */
static int untouched_outside(const tbuf *t, const tbuf *before)
{
    const size_t es = dtype_size(t->dt);
    for (size_t r = 0; r <= t->rows; r++) {
        const size_t from = r < t->rows ? (r * t->stride + t->dim) * es : r * t->stride * es;
        const size_t to = (r + 1) * t->stride * es;
        if (memcmp(t->data + from, before->data + from, to - from))
            return 0;
    }
    return 1;
}

/* rows x dim of a and b the same bits (dtypes and strides equal). */
static size_t first_diff_rows(const tbuf *a, const tbuf *b)
{
    const size_t es = dtype_size(a->dt);
    for (size_t r = 0; r < a->rows; r++)
        if (memcmp(a->data + r * a->stride * es, b->data + r * b->stride * es, a->dim * es))
            for (size_t j = 0; j < a->dim; j++)
                if (memcmp(a->data + (r * a->stride + j) * es, b->data + (r * b->stride + j) * es, es))
                    return r * a->dim + j;
    return SIZE_MAX;
}

/* "value (0xbits)" of element k (a rows x dim index) of t, for messages */
static const char *elem_text(const tbuf *t, size_t k, char *buf, size_t size)
{
    const size_t at = (k / t->dim) * t->stride + k % t->dim, es = dtype_size(t->dt);
    uint32_t bits = 0;
    memcpy(&bits, t->data + at * es, es);
    snprintf(buf, size, "%.9g (0x%0*x)", t->dt == KEEL_I8 ? (double)(int8_t)bits : (double)tbuf_get(t, at),
             (int)(2 * es), (unsigned)bits);
    return buf;
}

static float *sentinel_floats(size_t n)
{
    float *p = test_alloc(n + 1);
    test_fill_sentinel(p, n + 1);
    return p;
}

static int same_floats(const float *a, const float *b, size_t n)
{
    return n == 0 || memcmp(a, b, n * sizeof(float)) == 0;
}

/* Bitwise comparison that tells NaN bits apart from numbers: 0 the same bits, 1 different bits
 * only where both hold a NaN (its sign or payload), 2 a different number somewhere. */
static int compare_rows(const tbuf *a, const tbuf *b)
{
    const size_t es = dtype_size(a->dt);
    int kind = 0;
    for (size_t r = 0; r < a->rows; r++)
        for (size_t j = 0; j < a->dim; j++) {
            const size_t ia = r * a->stride + j, ib = r * b->stride + j;
            if (memcmp(a->data + ia * es, b->data + ib * es, es) == 0)
                continue;
            if (!(isnan(tbuf_get(a, ia)) && isnan(tbuf_get(b, ib))))
                return 2;
            kind = 1;
        }
    return kind;
}

static int compare_floats(const float *a, const float *b, size_t n)
{
    int kind = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(a + i, b + i, sizeof(float)) == 0)
            continue;
        if (!(isnan(a[i]) && isnan(b[i])))
            return 2;
        kind = 1;
    }
    return kind;
}

static int max_int(int a, int b) { return a > b ? a : b; }

/* Runs whose outputs differ from the scalar 1-thread run only in the bits of NaNs: counted,
 * reported once at the end (keel.h: "All paths give bitwise identical results"). */
static struct {
    long count;
    char first[400];
} nan_bits;

static void note_nan_bits(const char *desc, const char *what)
{
    if (!nan_bits.count++)
        snprintf(nan_bits.first, sizeof nan_bits.first, "%s: %s", desc, what);
}

/* ---- forward ------------------------------------------------------------------------------------ */

typedef struct fwd_config {
    op_kind op;
    keel_dtype xdt, ydt;
    int kind;
    size_t rows, dim, x_stride, y_stride;
    int with_gamma, with_beta;
    float eps;
} fwd_config;

static const char *describe_fwd(const fwd_config *c, keel_isa isa, int threads)
{
    static char text[256];
    snprintf(text, sizeof text, "%s fwd isa=%s threads=%d x=%s y=%s case=%s rows=%zu dim=%zu "
             "strides x%zu y%zu%s%s eps=%g", op_name(c->op), keel_isa_name(isa), threads,
             keel_dtype_name(c->xdt), keel_dtype_name(c->ydt), kind_name(c->kind), c->rows,
             c->dim, c->x_stride, c->y_stride, c->with_gamma ? " gamma" : "",
             c->with_beta ? " beta" : "", (double)c->eps);
    return text;
}

static keel_status call_fwd(keel_ctx *ctx, const fwd_config *c, keel_tensor x, keel_tensor y,
                            const float *gamma, const float *beta, float *mean, float *rstd)
{
    if (c->op == OP_LAYERNORM)
        return keel_layernorm_fwd(ctx, c->rows, c->dim, x, y, gamma, beta, c->eps, mean, rstd, 0);
    return keel_rmsnorm_fwd(ctx, c->rows, c->dim, x, y, gamma, c->eps, rstd, 0);
}

static float *maybe_params(keel_rng *rng, int wanted, size_t dim, int beta)
{
    if (!wanted)
        return NULL;
    float *p = test_alloc(dim);
    if (beta)
        keel_case_fill_beta(rng, p, dim);
    else
        keel_case_fill_gamma(rng, p, dim);
    return p;
}

/* The forward outputs of one call. */
typedef struct fwd_out {
    tbuf y;
    float *mean, *rstd;
} fwd_out;

static fwd_out run_fwd(keel_ctx *ctx, const fwd_config *c, const tbuf *x, keel_dtype ydt,
                       size_t y_stride, const float *gamma, const float *beta, const char *desc)
{
    fwd_out o;
    o.y = tbuf_new(ydt, c->rows, c->dim, y_stride);
    o.mean = sentinel_floats(c->rows);
    o.rstd = sentinel_floats(c->rows);
    keel_status st = call_fwd(ctx, c, tensor_of(x), tensor_of(&o.y), gamma, beta,
                              c->op == OP_LAYERNORM ? o.mean : NULL, o.rstd);
    test_check(st == KEEL_OK, "%s: forward returned %s (%s)", desc, keel_status_str(st), keel_last_error());
    return o;
}

static void free_fwd(fwd_out *o)
{
    free(o->y.data);
    free(o->mean);
    free(o->rstd);
}

static void run_fwd_config(keel_rng *rng, const fwd_config *c)
{
    float *xd;
    tbuf x = make_input(rng, c->xdt, c->kind, 0, c->rows, c->dim, c->x_stride, &xd);
    float *gamma = maybe_params(rng, c->with_gamma, c->dim, 0);
    float *beta = c->op == OP_LAYERNORM ? maybe_params(rng, c->with_beta, c->dim, 1) : NULL;
    const size_t n = c->rows * c->dim;
    double *yref = test_alloc_d(n), *mref = test_alloc_d(c->rows), *rref = test_alloc_d(c->rows);
    int rc = c->op == OP_LAYERNORM
                 ? keel_ref_layernorm_fwd(c->rows, c->dim, xd, c->dim, gamma, beta, c->eps, yref, mref, rref)
                 : keel_ref_rmsnorm_fwd(c->rows, c->dim, xd, c->dim, gamma, c->eps, yref, rref);
    if (rc)
        test_fatal("the reference ran out of memory");
    const int ln = c->op == OP_LAYERNORM;
    tbuf xw = widened(&x);
    char where[256];

    fwd_out base = {{0}, NULL, NULL};
    for (int i = 0; i < n_isas; i++)
        for (int t = 0; t < 3; t++) {
            test_set_isa(ctxs[t], isas[i]);
            const char *desc = describe_fwd(c, isas[i], thread_counts[t]);
            fwd_out o = run_fwd(ctxs[t], c, &x, c->ydt, c->y_stride, gamma, beta, desc);
            if (i == 0 && t == 0) {
                /* against the reference */
                test_check(check_output(&o.y, yref, NULL, where, sizeof where), "%s: y %s", desc, where);
                size_t r;
                double e = keel_err_ulps_each(o.rstd, rref, c->rows, &r);
                test_check(e <= KEEL_BOUND_STAT_ULPS, "%s: rstd[%zu] %.9g vs ref %.17g: %.3g ulps",
                           desc, r, (double)o.rstd[r], rref[r], e);
                if (ln) {
                    e = keel_err_ulps_each(o.mean, mref, c->rows, &r);
                    test_check(e <= KEEL_BOUND_STAT_ULPS, "%s: mean[%zu] %.9g vs ref %.17g: %.3g ulps",
                               desc, r, (double)o.mean[r], mref[r], e);
                }
                tbuf fresh = tbuf_new(c->ydt, c->rows, c->dim, c->y_stride);
                test_check(untouched_outside(&o.y, &fresh) && test_first_written(o.rstd + c->rows, 1) == 1 &&
                               test_first_written(o.mean + c->rows, 1) == 1 &&
                               (ln || test_first_written(o.mean, c->rows) == c->rows),
                           "%s: wrote outside y's rows or past mean/rstd", desc);
                free(fresh.data);

                /* exact: widened input gives the same float32 result; the output is it rounded once */
                fwd_out w = run_fwd(ctxs[t], c, &xw, KEEL_F32, c->dim, gamma, beta, desc);
                size_t bad = SIZE_MAX;
                for (size_t k = 0; k < n && bad == SIZE_MAX; k++) {
                    const float y32 = tbuf_get(&w.y, k);
                    const float want = round_to(c->ydt, y32);
                    const float got = tbuf_get(&o.y, (k / c->dim) * c->y_stride + k % c->dim);
                    if (memcmp(&want, &got, 4) && !(isnan(want) && isnan(got)))
                        bad = k;
                }
                test_check(bad == SIZE_MAX,
                           "%s: y is not the float32 forward of the widened x rounded once, at %zu",
                           desc, bad);
                test_check(same_floats(w.rstd, o.rstd, c->rows) && (!ln || same_floats(w.mean, o.mean, c->rows)),
                           "%s: mean/rstd differ from the float32 forward of the widened x", desc);
                free_fwd(&w);
                base = o;
                continue;
            }
            /* every other path and thread count: the same bits */
            const int ky = compare_rows(&o.y, &base.y);
            const int ks = max_int(compare_floats(o.rstd, base.rstd, c->rows),
                                   ln ? compare_floats(o.mean, base.mean, c->rows) : 0);
            if (max_int(ky, ks) == 1)
                note_nan_bits(desc, ky ? "y" : "mean/rstd");
            size_t d = first_diff_rows(&o.y, &base.y);
            char t1[64] = "", t2[64] = "";
            if (d != SIZE_MAX) {
                elem_text(&o.y, d, t1, sizeof t1);
                elem_text(&base.y, d, t2, sizeof t2);
            }
            test_check(ky < 2 && ks < 2,
                       "%s: not bitwise equal to scalar/1 thread (y element %zd: %s vs %s; stats %s)", desc,
                       d == SIZE_MAX ? (ptrdiff_t)-1 : (ptrdiff_t)d, t1, t2, ks ? "differ" : "same");
            free_fwd(&o);
        }

    /* in place (y is x: same data, dtype, stride) */
    if (c->xdt == c->ydt) {
        tbuf inplace = tbuf_clone(&x);
        keel_status st = call_fwd(ctxs[2], c, tensor_of(&inplace), tensor_of(&inplace), gamma, beta, NULL, NULL);
        const int k = compare_rows(&inplace, &base.y);
        if (k == 1)
            note_nan_bits(describe_fwd(c, isas[n_isas - 1], 3), "y = x in place");
        test_check(st == KEEL_OK && k < 2 && untouched_outside(&inplace, &x),
                   "%s: in place differs from out of place or touched the padding (%s)",
                   describe_fwd(c, isas[n_isas - 1], 3), keel_status_str(st));
        free(inplace.data);
    }
    free_fwd(&base);
    free(x.data);
    free(xw.data);
    free(xd);
    free(gamma);
    free(beta);
    free(yref);
    free(mref);
    free(rref);
}

/* ---- backward -------------------------------------------------------------------------------- */

typedef struct bwd_config {
    op_kind op;
    keel_dtype dydt, xdt, dxdt;
    int kind;
    size_t rows, dim, dy_stride, x_stride, dx_stride;
    int with_gamma;
    float eps;
    int saved_stats;
} bwd_config;

static const char *describe_bwd(const bwd_config *c, keel_isa isa, int threads)
{
    static char text[256];
    snprintf(text, sizeof text, "%s bwd isa=%s threads=%d dy=%s x=%s dx=%s case=%s rows=%zu dim=%zu "
             "strides dy%zu x%zu dx%zu%s eps=%g %s", op_name(c->op), keel_isa_name(isa), threads,
             keel_dtype_name(c->dydt), keel_dtype_name(c->xdt), keel_dtype_name(c->dxdt),
             kind_name(c->kind), c->rows, c->dim, c->dy_stride, c->x_stride, c->dx_stride,
             c->with_gamma ? " gamma" : "", (double)c->eps, c->saved_stats ? "saved" : "recomputed");
    return text;
}

typedef struct bwd_out {
    tbuf dx;
    float *dgamma, *dbeta;
} bwd_out;

static keel_status call_bwd(keel_ctx *ctx, const bwd_config *c, const tbuf *dy, const tbuf *x,
                            const float *mean, const float *rstd, const float *gamma, tbuf *dx,
                            float *dgamma, float *dbeta, unsigned flags)
{
    if (c->op == OP_LAYERNORM)
        return keel_layernorm_bwd(ctx, c->rows, c->dim, tensor_of(dy), tensor_of(x), mean, rstd, gamma,
                                  c->eps, tensor_of(dx), dgamma, dbeta, flags);
    return keel_rmsnorm_bwd(ctx, c->rows, c->dim, tensor_of(dy), tensor_of(x), rstd, gamma, c->eps,
                            tensor_of(dx), dgamma, flags);
}

static bwd_out run_bwd(keel_ctx *ctx, const bwd_config *c, const tbuf *dy, const tbuf *x,
                       const float *mean, const float *rstd, const float *gamma, keel_dtype dxdt,
                       size_t dx_stride, const char *desc)
{
    bwd_out o;
    o.dx = tbuf_new(dxdt, c->rows, c->dim, dx_stride);
    o.dgamma = sentinel_floats(c->dim);
    o.dbeta = sentinel_floats(c->dim);
    keel_status st = call_bwd(ctx, c, dy, x, mean, rstd, gamma, &o.dx, o.dgamma,
                              c->op == OP_LAYERNORM ? o.dbeta : NULL, 0);
    test_check(st == KEEL_OK, "%s: backward returned %s (%s)", desc, keel_status_str(st), keel_last_error());
    return o;
}

static void free_bwd(bwd_out *o)
{
    free(o->dx.data);
    free(o->dgamma);
    free(o->dbeta);
}

static void run_bwd_config(keel_rng *rng, const bwd_config *c)
{
    const int ln = c->op == OP_LAYERNORM;
    float *xd, *dyd;
    tbuf x = make_input(rng, c->xdt, c->kind, 0, c->rows, c->dim, c->x_stride, &xd);
    tbuf dy = make_input(rng, c->dydt, 0, 1, c->rows, c->dim, c->dy_stride, &dyd);
    float *gamma = maybe_params(rng, c->with_gamma, c->dim, 0);
    const size_t n = c->rows * c->dim;

    /* the reference from the stored values */
    double *dxref = test_alloc_d(n), *dgref = test_alloc_d(c->dim), *dbref = test_alloc_d(c->dim);
    double *dgmag = test_alloc_d(c->dim), *dbmag = test_alloc_d(c->dim);
    double *rref = test_alloc_d(c->rows), *mref = test_alloc_d(c->rows), *floors = test_alloc_d(c->rows);
    keel_ref_grads g = {dxref, dgref, dbref, dgmag, dbmag};
    int rc = ln ? keel_ref_layernorm_bwd(c->rows, c->dim, dyd, c->dim, xd, c->dim, gamma, c->eps, &g) |
                      keel_ref_layernorm_fwd(c->rows, c->dim, xd, c->dim, NULL, NULL, c->eps, NULL, mref, rref)
                : keel_ref_rmsnorm_bwd(c->rows, c->dim, dyd, c->dim, xd, c->dim, gamma, c->eps, &g) |
                      keel_ref_rmsnorm_fwd(c->rows, c->dim, xd, c->dim, NULL, c->eps, NULL, rref);
    if (rc)
        test_fatal("the reference ran out of memory");
    keel_dx_floors(c->rows, c->dim, dyd, c->dim, gamma, rref, floors);
    /* LayerNorm's dgamma term dy * xhat is judged against its own size (keel_err_sum), but xhat
     * inherits the absolute error of a mean summed in double: up to ~dim * 2^-53 * |mean| (times
     * rstd in xhat units), nothing beside the row's scale, yet more than a few ulps of an xhat
     * near 0 when the row sits at a large offset (x ~ 7e7 with std 75: xhat 1e-4 off by 1e-10).
     * That absolute error, 4 times over, is allowed on top of the bound. */
    double *dg_mean_err = test_alloc_d(c->dim);
    for (size_t k = 0; k < c->dim; k++) {
        dg_mean_err[k] = 0.0;
        for (size_t r = 0; r < c->rows && ln; r++)
            if (isfinite(mref[r]) && isfinite(rref[r]))
                dg_mean_err[k] += fabs((double)dyd[r * c->dim + k]) * 4.0 * (double)c->dim * 0x1p-53 *
                                  fabs(mref[r]) * rref[r];
    }

    /* the forward's statistics (float32, the same on every path) */
    float *mean = NULL, *rstd = NULL;
    if (c->saved_stats) {
        fwd_config fc = {c->op, c->xdt, KEEL_F32, c->kind, c->rows, c->dim, c->x_stride, c->dim, 0, 0, c->eps};
        fwd_out f = run_fwd(ctxs[0], &fc, &x, KEEL_F32, c->dim, NULL, NULL, "statistics for the backward");
        mean = ln ? f.mean : NULL;
        rstd = f.rstd;
        if (!ln)
            free(f.mean);
        free(f.y.data);
    }
    tbuf xw = widened(&x), dyw = widened(&dy);
    char where[256];
    bwd_out base = {{0}, NULL, NULL};
    for (int i = 0; i < n_isas; i++)
        for (int t = 0; t < 3; t++) {
            test_set_isa(ctxs[t], isas[i]);
            const char *desc = describe_bwd(c, isas[i], thread_counts[t]);
            bwd_out o = run_bwd(ctxs[t], c, &dy, &x, mean, rstd, gamma, c->dxdt, c->dx_stride, desc);
            if (i == 0 && t == 0) {
                test_check(check_output(&o.dx, dxref, floors, where, sizeof where), "%s: dx %s", desc, where);
                size_t j = 0;
                const double bound = keel_bound_dparam(c->rows);
                double e = 0.0;
                for (size_t k = 0; k < c->dim; k++) { /* keel_err_sum, plus the mean's allowance */
                    const double got = o.dgamma[k], want = dgref[k];
                    double ek;
                    if (isnan(got) || isnan(want) || isinf(got) || isinf(want))
                        ek = (isnan(got) && isnan(want)) || got == want ? 0.0 : INFINITY;
                    else {
                        const double d = fabs(got - want) - dg_mean_err[k];
                        ek = d <= 0.0 ? 0.0 : dgmag[k] > 0.0 ? d / (FLT_EPSILON * dgmag[k]) : INFINITY;
                    }
                    if (ek > e) {
                        e = ek;
                        j = k;
                    }
                }
                test_check(e <= bound, "%s: dgamma[%zu] %.9g vs ref %.17g: %.3g > %g", desc, j,
                           (double)o.dgamma[j], dgref[j], e, bound);
                if (ln) {
                    e = keel_err_sum(o.dbeta, dbref, dbmag, c->dim, &j);
                    test_check(e <= bound, "%s: dbeta[%zu] %.9g vs ref %.17g: %.3g > %g", desc, j,
                               (double)o.dbeta[j], dbref[j], e, bound);
                }
                tbuf fresh = tbuf_new(c->dxdt, c->rows, c->dim, c->dx_stride);
                test_check(untouched_outside(&o.dx, &fresh) && test_first_written(o.dgamma + c->dim, 1) == 1 &&
                               test_first_written(o.dbeta + c->dim, 1) == 1 &&
                               (ln || test_first_written(o.dbeta, c->dim) == c->dim),
                           "%s: wrote outside dx's rows or past dgamma/dbeta", desc);
                free(fresh.data);

                /* exact: the float32 backward of the widened inputs, dx rounded once */
                bwd_out w = run_bwd(ctxs[t], c, &dyw, &xw, mean, rstd, gamma, KEEL_F32, c->dim, desc);
                size_t bad = SIZE_MAX;
                for (size_t k = 0; k < n && bad == SIZE_MAX; k++) {
                    const float want = round_to(c->dxdt, tbuf_get(&w.dx, k));
                    const float got = tbuf_get(&o.dx, (k / c->dim) * c->dx_stride + k % c->dim);
                    if (memcmp(&want, &got, 4) && !(isnan(want) && isnan(got)))
                        bad = k;
                }
                test_check(bad == SIZE_MAX,
                           "%s: dx is not the float32 backward of the widened inputs rounded once, at %zu",
                           desc, bad);
                test_check(same_floats(w.dgamma, o.dgamma, c->dim) && (!ln || same_floats(w.dbeta, o.dbeta, c->dim)),
                           "%s: dgamma/dbeta differ from the float32 backward of the widened inputs", desc);

                /* accumulate into dx: round(old + dx_f32), old random, stored in dx's dtype */
                tbuf dxa = tbuf_new(c->dxdt, c->rows, c->dim, c->dx_stride);
                for (size_t r = 0; r < c->rows; r++)
                    for (size_t k = 0; k < c->dim; k++)
                        tbuf_set(&dxa, r * c->dx_stride + k, (float)keel_rng_normal(rng));
                tbuf old = tbuf_clone(&dxa);
                keel_status st = call_bwd(ctxs[t], c, &dy, &x, mean, rstd, gamma, &dxa, NULL, NULL,
                                          KEEL_FLAG_ACCUMULATE_DX);
                bad = SIZE_MAX;
                for (size_t k = 0; k < n && bad == SIZE_MAX; k++) {
                    const size_t at = (k / c->dim) * c->dx_stride + k % c->dim;
                    const float want = round_to(c->dxdt, tbuf_get(&old, at) + tbuf_get(&w.dx, k));
                    const float got = tbuf_get(&dxa, at);
                    if (memcmp(&want, &got, 4) && !(isnan(want) && isnan(got)))
                        bad = k;
                }
                test_check(st == KEEL_OK && bad == SIZE_MAX && untouched_outside(&dxa, &old),
                           "%s: accumulated dx is not round(old + dx_f32) at %zu (%s)", desc, bad,
                           keel_status_str(st));
                free(dxa.data);
                free(old.data);
                free_bwd(&w);
                base = o;
                continue;
            }
            const int kx = compare_rows(&o.dx, &base.dx);
            const int kp = max_int(compare_floats(o.dgamma, base.dgamma, c->dim),
                                   ln ? compare_floats(o.dbeta, base.dbeta, c->dim) : 0);
            if (max_int(kx, kp) == 1)
                note_nan_bits(desc, kx ? "dx" : "dgamma/dbeta");
            size_t d = first_diff_rows(&o.dx, &base.dx);
            char t1[64] = "", t2[64] = "";
            if (d != SIZE_MAX) {
                elem_text(&o.dx, d, t1, sizeof t1);
                elem_text(&base.dx, d, t2, sizeof t2);
            }
            test_check(kx < 2 && kp < 2,
                       "%s: not bitwise equal to scalar/1 thread (dx element %zd: %s vs %s; dgamma/dbeta %s)",
                       desc, d == SIZE_MAX ? (ptrdiff_t)-1 : (ptrdiff_t)d, t1, t2, kp ? "differ" : "same");
            free_bwd(&o);
        }

    /* dx aliasing dy (same data, dtype and stride) */
    if (c->dxdt == c->dydt && c->dx_stride == c->dy_stride) {
        tbuf alias = tbuf_clone(&dy);
        float *dg = sentinel_floats(c->dim), *db = sentinel_floats(c->dim);
        keel_status st = call_bwd(ctxs[1], c, &alias, &x, mean, rstd, gamma, &alias, dg, ln ? db : NULL, 0);
        const int k = compare_rows(&alias, &base.dx);
        if (k == 1)
            note_nan_bits(describe_bwd(c, isas[n_isas - 1], 2), "dx = dy in place");
        test_check(st == KEEL_OK && k < 2 && untouched_outside(&alias, &dy),
                   "%s: dx = dy in place differs from separate buffers (%s)",
                   describe_bwd(c, isas[n_isas - 1], 2), keel_status_str(st));
        free(dg);
        free(db);
        free(alias.data);
    }
    free_bwd(&base);
    free(x.data);
    free(dy.data);
    free(xw.data);
    free(dyw.data);
    free(xd);
    free(dyd);
    free(gamma);
    free(mean);
    free(rstd);
    free(dxref);
    free(dgref);
    free(dbref);
    free(dgmag);
    free(dbmag);
    free(rref);
    free(mref);
    free(dg_mean_err);
    free(floors);
}

/* ---- the sweep ------------------------------------------------------------------------------- */

static size_t random_stride(keel_rng *rng, size_t dim)
{
    return keel_rng_below(rng, 2) ? dim : dim + 1 + keel_rng_below(rng, 17);
}

typedef struct shape {
    size_t rows, dim;
} shape;

/* small shapes for the vector bodies and tails; large ones (>= 32768 elements) that the
 * context spreads over its threads */
static const shape small_shapes[] = {{1, 1}, {3, 2}, {2, 3}, {5, 7}, {4, 16}, {3, 17}, {8, 31},
                                     {2, 33}, {6, 64}, {3, 127}, {2, 768}, {1, 1025}};
static const shape large_shapes[] = {{40, 1025}, {9, 4097}, {130, 300}, {3, 16384}, {2, 65536}};

static shape pick_shape(keel_rng *rng)
{
    if (keel_rng_below(rng, 8) == 0)
        return large_shapes[keel_rng_below(rng, sizeof large_shapes / sizeof large_shapes[0])];
    return small_shapes[keel_rng_below(rng, sizeof small_shapes / sizeof small_shapes[0])];
}

static float pick_eps(keel_rng *rng, int kind)
{
    static const float choices[] = {1e-5f, 1e-12f, 1e-3f, 1e-6f};
    if (kind == KEEL_CASE_ZERO)
        return 1e-12f;
    return choices[keel_rng_below(rng, 4)];
}

static void sweep_forward(keel_rng *rng)
{
    long configs = 0;
    for (int round = 0; round < SWEEP_ROUNDS; round++)
    for (int xi = 0; xi < 3; xi++)
        for (int yi = 0; yi < 3; yi++)
            for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++)
                for (int kind = 0; kind < KIND_COUNT; kind++) {
                    shape s = pick_shape(rng);
                    fwd_config c = {(op_kind)op, float_dtypes[xi], float_dtypes[yi], kind, s.rows, s.dim,
                                    random_stride(rng, s.dim), random_stride(rng, s.dim),
                                    keel_rng_below(rng, 3) != 0, op == OP_LAYERNORM && keel_rng_below(rng, 3) != 0,
                                    pick_eps(rng, kind)};
                    run_fwd_config(rng, &c);
                    configs++;
                }
    printf("forward: %ld configurations (%d rounds of 9 dtype pairs x 2 ops x %d kinds), each on %d paths x 3 "
           "thread counts\n", configs, SWEEP_ROUNDS, KIND_COUNT, n_isas);
}

static void sweep_backward(keel_rng *rng)
{
    long configs = 0;
    for (int round = 0; round < SWEEP_ROUNDS; round++)
    for (int di = 0; di < 3; di++)
        for (int xi = 0; xi < 3; xi++)
            for (int ei = 0; ei < 3; ei++)
                for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++)
                    for (int kind = 0; kind < KIND_COUNT; kind++) {
                        shape s = pick_shape(rng);
                        bwd_config c = {(op_kind)op, float_dtypes[di], float_dtypes[xi], float_dtypes[ei], kind,
                                        s.rows, s.dim, random_stride(rng, s.dim), random_stride(rng, s.dim),
                                        random_stride(rng, s.dim), keel_rng_below(rng, 3) != 0,
                                        pick_eps(rng, kind), (int)keel_rng_below(rng, 2)};
                        if (keel_rng_below(rng, 3) == 0)
                            c.dx_stride = c.dy_stride; /* so dx may alias dy */
                        run_bwd_config(rng, &c);
                        configs++;
                    }
    printf("backward: %ld configurations (%d rounds of 27 dtype triples x 2 ops x %d kinds), each on %d paths x "
           "3 thread counts\n", configs, SWEEP_ROUNDS, KIND_COUNT, n_isas);
}

/* ---- special rows ------------------------------------------------------------------------------- */

/* NaN or Inf in one row of x: that row all NaN (y, mean, rstd, dx), the other rows as before. */
static void nonfinite_rows(keel_rng *rng)
{
    static const size_t dims[] = {1, 7, 16, 33, 1025};
    const size_t rows = 5, bad_row = 2;
    for (int xi = 0; xi < 3; xi++)
        for (int yi = 0; yi < 3; yi++)
            for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
                for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++)
                    for (int inf = 0; inf <= 1; inf++) {
                        const size_t dim = dims[d];
                        fwd_config c = {(op_kind)op, float_dtypes[xi], float_dtypes[yi], KEEL_CASE_NORMAL, rows,
                                        dim, dim, dim, 1, op == OP_LAYERNORM, 1e-5f};
                        bwd_config b = {(op_kind)op, float_dtypes[yi], float_dtypes[xi], float_dtypes[yi],
                                        KEEL_CASE_NORMAL, rows, dim, dim, dim, dim, 1, 1e-5f, 0};
                        float *xd, *dyd;
                        tbuf x = make_input(rng, c.xdt, c.kind, 0, rows, dim, dim, &xd);
                        tbuf dy = make_input(rng, b.dydt, 0, 1, rows, dim, dim, &dyd);
                        float *gamma = maybe_params(rng, 1, dim, 0), *beta = maybe_params(rng, 1, dim, 1);
                        for (int i = 0; i < n_isas; i++) {
                            test_set_isa(ctxs[0], isas[i]);
                            const char *desc = describe_fwd(&c, isas[i], 1);
                            fwd_out clean = run_fwd(ctxs[0], &c, &x, c.ydt, dim, gamma, beta, desc);
                            bwd_out bclean = run_bwd(ctxs[0], &b, &dy, &x, NULL, NULL, gamma, b.dxdt, dim, desc);
                            tbuf xbad = tbuf_clone(&x);
                            const size_t j = keel_rng_below(rng, dim);
                            tbuf_set(&xbad, bad_row * dim + j, inf ? -INFINITY : NAN);
                            fwd_out o = run_fwd(ctxs[0], &c, &xbad, c.ydt, dim, gamma, beta, desc);
                            bwd_out bo = run_bwd(ctxs[0], &b, &dy, &xbad, NULL, NULL, gamma, b.dxdt, dim, desc);
                            int row_nan = isnan(o.rstd[bad_row]) && (op != OP_LAYERNORM || isnan(o.mean[bad_row]));
                            for (size_t k = 0; k < dim; k++)
                                row_nan &= isnan(tbuf_get(&o.y, bad_row * dim + k)) &&
                                           isnan(tbuf_get(&bo.dx, bad_row * dim + k));
                            int others = 1;
                            const size_t es_y = dtype_size(c.ydt), es_dx = dtype_size(b.dxdt);
                            for (size_t r = 0; r < rows; r++) {
                                if (r == bad_row)
                                    continue;
                                others &= !memcmp(o.y.data + r * dim * es_y, clean.y.data + r * dim * es_y, dim * es_y);
                                others &= !memcmp(bo.dx.data + r * dim * es_dx, bclean.dx.data + r * dim * es_dx,
                                                  dim * es_dx);
                                others &= same_floats(o.rstd + r, clean.rstd + r, 1);
                            }
                            test_check(row_nan && others,
                                       "%s (dy/dx %s): x[%zu][%zu] = %s: %s", desc, keel_dtype_name(b.dxdt),
                                       bad_row, j, inf ? "-Inf" : "NaN",
                                       row_nan ? "another row changed" : "that row's outputs not all NaN");
                            free(xbad.data);
                            free_fwd(&clean);
                            free_fwd(&o);
                            free_bwd(&bclean);
                            free_bwd(&bo);
                        }
                        free(x.data);
                        free(dy.data);
                        free(xd);
                        free(dyd);
                        free(gamma);
                        free(beta);
                    }
}

/* Constant rows give round(beta) (LayerNorm); all-zero rows with eps 1e-12, in every input dtype
 * (f16 with 1e-12 is pytorch#41527): round(beta) / 0, rstd = 1/sqrt(1e-12f) finite, no NaN in dx
 * or dgamma. */
static void constant_rows(keel_rng *rng)
{
    static const float constants[] = {0.0f, 1.0f, -3.5f, 1000.0f, 65504.0f, -65504.0f, 1e-6f, 3000.0f};
    static const size_t dims[] = {1, 3, 17, 768, 4097};
    for (int xi = 0; xi < 3; xi++)
        for (int yi = 0; yi < 3; yi++)
            for (size_t ci = 0; ci < sizeof constants / sizeof constants[0]; ci++)
                for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++) {
                    const float k = constants[ci];
                    if (op == OP_RMSNORM && k != 0.0f)
                        continue; /* a constant row is nothing special to RMSNorm */
                    const size_t dim = dims[keel_rng_below(rng, sizeof dims / sizeof dims[0])], rows = 3;
                    const float eps = k == 0.0f ? 1e-12f : 1e-5f;
                    fwd_config c = {(op_kind)op, float_dtypes[xi], float_dtypes[yi], KEEL_CASE_CONSTANT, rows, dim,
                                    dim, dim, 1, op == OP_LAYERNORM, eps};
                    bwd_config b = {(op_kind)op, float_dtypes[yi], float_dtypes[xi], float_dtypes[yi],
                                    KEEL_CASE_CONSTANT, rows, dim, dim, dim, dim, 1, eps, 1};
                    tbuf x = tbuf_new(c.xdt, rows, dim, dim);
                    for (size_t i = 0; i < rows * dim; i++)
                        tbuf_set(&x, i, k);
                    float *dyd;
                    tbuf dy = make_input(rng, b.dydt, 0, 1, rows, dim, dim, &dyd);
                    float *gamma = maybe_params(rng, 1, dim, 0), *beta = maybe_params(rng, op == OP_LAYERNORM, dim, 1);
                    for (int i = 0; i < n_isas; i++) {
                        test_set_isa(ctxs[0], isas[i]);
                        const char *desc = describe_fwd(&c, isas[i], 1);
                        fwd_out o = run_fwd(ctxs[0], &c, &x, c.ydt, dim, gamma, beta, desc);
                        size_t bad = SIZE_MAX;
                        for (size_t e = 0; e < rows * dim && bad == SIZE_MAX; e++) {
                            const float want = beta ? round_to(c.ydt, beta[e % dim]) : 0.0f;
                            if (!(tbuf_get(&o.y, e) == want))
                                bad = e;
                        }
                        const float want_rstd = (float)(1.0 / sqrt((double)eps));
                        int rstd_ok = 1;
                        for (size_t r = 0; r < rows; r++)
                            rstd_ok &= isfinite(o.rstd[r]) &&
                                       (k != 0.0f || fabs((double)o.rstd[r] - want_rstd) <= 2 * keel_ulp32(want_rstd));
                        test_check(bad == SIZE_MAX && rstd_ok, "%s: constant %g: %s", desc, (double)k,
                                   bad != SIZE_MAX ? "y is not round(beta) exactly" : "rstd not finite/1/sqrt(eps)");
                        bwd_out bo = run_bwd(ctxs[0], &b, &dy, &x, op == OP_LAYERNORM ? o.mean : NULL, o.rstd,
                                             gamma, b.dxdt, dim, desc);
                        int any_nan = 0;
                        for (size_t e = 0; e < rows * dim; e++)
                            any_nan |= isnan(tbuf_get(&bo.dx, e));
                        for (size_t j = 0; j < dim; j++)
                            any_nan |= isnan(bo.dgamma[j]);
                        test_check(!any_nan, "%s: constant %g: NaN in dx or dgamma", desc, (double)k);
                        free_fwd(&o);
                        free_bwd(&bo);
                    }
                    free(x.data);
                    free(dy.data);
                    free(dyd);
                    free(gamma);
                    free(beta);
                }
}

/* ---- int8 ------------------------------------------------------------------------------------ */

typedef struct i8_stats {
    long elements, boundary, clamped, rows;
    double worst_scale_ulps;
} i8_stats;

static i8_stats i8s;

static int ref_quant(double v) /* clamp(round half even(v)), NaN -> 0 */
{
    if (isnan(v))
        return 0;
    if (v >= 127.0)
        return 127;
    if (v <= -127.0)
        return -127;
    return (int)rint(v);
}

typedef struct i8_config {
    op_kind op;
    keel_dtype xdt;
    int kind;
    size_t rows, dim, x_stride, y_stride;
    int dynamic, smooth, with_gamma, with_beta;
    double scale_div; /* per tensor: s = max|y_ref| / scale_div */
} i8_config;

static const char *describe_i8(const i8_config *c, keel_isa isa, int threads)
{
    static char text[256];
    snprintf(text, sizeof text, "%s fwd_i8 isa=%s threads=%d x=%s case=%s rows=%zu dim=%zu strides x%zu y%zu "
             "%s%s%s%s", op_name(c->op), keel_isa_name(isa), threads, keel_dtype_name(c->xdt),
             kind_name(c->kind), c->rows, c->dim, c->x_stride, c->y_stride,
             c->dynamic ? "dynamic" : "per-tensor", c->smooth ? " smooth" : "", c->with_gamma ? " gamma" : "",
             c->with_beta ? " beta" : "");
    return text;
}

static keel_status call_i8(keel_ctx *ctx, op_kind op, size_t rows, size_t dim, keel_tensor x, keel_tensor y,
                           const float *gamma, const float *beta, float eps, const keel_quant_i8 *q,
                           float *mean, float *rstd)
{
    if (op == OP_LAYERNORM)
        return keel_layernorm_fwd_i8(ctx, rows, dim, x, y, gamma, beta, eps, q, mean, rstd, 0);
    return keel_rmsnorm_fwd_i8(ctx, rows, dim, x, y, gamma, eps, q, rstd, 0);
}

static void run_i8_config(keel_rng *rng, const i8_config *c)
{
    const int ln = c->op == OP_LAYERNORM;
    const float eps = 1e-5f;
    float *xd;
    tbuf x = make_input(rng, c->xdt, c->kind, 0, c->rows, c->dim, c->x_stride, &xd);
    float *gamma = maybe_params(rng, c->with_gamma, c->dim, 0);
    float *beta = ln ? maybe_params(rng, c->with_beta, c->dim, 1) : NULL;
    float *smooth = NULL, *g2 = NULL, *b2 = NULL;
    if (c->smooth) { /* SmoothQuant: per-feature factors, folded as keel.h says (float32 divisions) */
        smooth = test_alloc(c->dim);
        g2 = test_alloc(c->dim);
        b2 = beta ? test_alloc(c->dim) : NULL;
        for (size_t j = 0; j < c->dim; j++) {
            smooth[j] = (float)pow(2.0, keel_rng_range(rng, -3.0, 3.0));
            g2[j] = (gamma ? gamma[j] : 1.0f) / smooth[j];
            if (b2)
                b2[j] = beta[j] / smooth[j];
        }
    }
    const float *gf = c->smooth ? g2 : gamma, *bf = c->smooth ? b2 : beta;
    const size_t n = c->rows * c->dim;
    double *yref = test_alloc_d(n);
    int rc = ln ? keel_ref_layernorm_fwd(c->rows, c->dim, xd, c->dim, gf, bf, eps, yref, NULL, NULL)
                : keel_ref_rmsnorm_fwd(c->rows, c->dim, xd, c->dim, gf, eps, yref, NULL);
    if (rc)
        test_fatal("the reference ran out of memory");
    double all_max = 0.0;
    for (size_t k = 0; k < n; k++)
        if (isfinite(yref[k]))
            all_max = fmax(all_max, fabs(yref[k]));
    const float scale = c->dynamic ? 0.0f : (float)(all_max > 0 ? all_max / c->scale_div : 1.0);

    /* the float32 forward with the folded parameters: q and row_scale follow from it exactly */
    fwd_config fc = {c->op, c->xdt, KEEL_F32, c->kind, c->rows, c->dim, c->x_stride, c->dim, 1, ln && bf, eps};
    test_set_isa(ctxs[0], isas[0]);
    fwd_out f32 = run_fwd(ctxs[0], &fc, &x, KEEL_F32, c->dim, gf, bf, "float32 forward for int8");

    tbuf base = {KEEL_I8, 0, 0, 0, NULL};
    float *base_rs = NULL;
    for (int i = 0; i < n_isas; i++)
        for (int t = 0; t < 3; t++) {
            test_set_isa(ctxs[t], isas[i]);
            const char *desc = describe_i8(c, isas[i], thread_counts[t]);
            tbuf y = tbuf_new(KEEL_I8, c->rows, c->dim, c->y_stride);
            float *rs = sentinel_floats(c->rows), *mean = sentinel_floats(c->rows), *rstd = sentinel_floats(c->rows);
            keel_quant_i8 q = {scale, c->dynamic ? rs : NULL, smooth};
            keel_status st = call_i8(ctxs[t], c->op, c->rows, c->dim, tensor_of(&x), tensor_of(&y), gamma, beta, eps,
                                     &q, ln ? mean : NULL, rstd);
            test_check(st == KEEL_OK, "%s: returned %s (%s)", desc, keel_status_str(st), keel_last_error());
            if (i == 0 && t == 0) {
                /* exact: from the float32 forward */
                size_t bad = SIZE_MAX;
                for (size_t r = 0; r < c->rows; r++) {
                    float s = scale;
                    if (c->dynamic) {
                        float m = 0.0f;
                        int nan = 0;
                        for (size_t j = 0; j < c->dim; j++) {
                            const float v = tbuf_get(&f32.y, r * c->dim + j);
                            nan |= isnan(v);
                            m = fmaxf(m, fabsf(v));
                        }
                        s = nan ? NAN : m / 127.0f;
                        if (!(same_floats(&s, rs + r, 1) || (isnan(s) && isnan(rs[r]))) && bad == SIZE_MAX)
                            bad = r * c->dim;
                    }
                    for (size_t j = 0; j < c->dim && bad == SIZE_MAX; j++) {
                        const int want = s == 0.0f ? 0 : keel_quantize_i8(tbuf_get(&f32.y, r * c->dim + j), s);
                        if ((int)(int8_t)y.data[r * c->y_stride + j] != want)
                            bad = r * c->dim + j;
                    }
                }
                test_check(bad == SIZE_MAX, "%s: q/row_scale not those of the float32 forward, at %zu", desc, bad);
                test_check(same_floats(f32.rstd, rstd, c->rows) && (!ln || same_floats(f32.mean, mean, c->rows)),
                           "%s: mean/rstd differ from the float forward", desc);
                /* against the reference */
                long boundary = 0;
                bad = SIZE_MAX;
                double bad_v = 0.0;
                for (size_t r = 0; r < c->rows; r++) {
                    double rmax = 0.0;
                    int nan = 0;
                    for (size_t j = 0; j < c->dim; j++) {
                        nan |= isnan(yref[r * c->dim + j]);
                        if (!isnan(yref[r * c->dim + j]))
                            rmax = fmax(rmax, fabs(yref[r * c->dim + j]));
                    }
                    const double s = c->dynamic ? (double)rs[r] : (double)scale;
                    if (c->dynamic) {
                        const double want = rmax / 127.0;
                        /* the float32 forward's max|y| is within KEEL_BOUND_ROW_ULPS ulps of the
                         * reference's, and the division rounds once */
                        const double tol = KEEL_BOUND_ROW_ULPS * keel_ulp32(rmax) / 127.0 + 0.5 * keel_ulp32(want);
                        const int ok = nan ? isnan(rs[r]) : fabs((double)rs[r] - want) <= tol;
                        if (!nan && fabs((double)rs[r] - want) / keel_ulp32(want) > i8s.worst_scale_ulps)
                            i8s.worst_scale_ulps = fabs((double)rs[r] - want) / keel_ulp32(want);
                        if (!ok && bad == SIZE_MAX) {
                            bad = r * c->dim;
                            bad_v = want;
                        }
                        i8s.rows++;
                    }
                    /* how far y_ref / s may be from the quotient keel rounds: the float32
                     * forward's error (KEEL_BOUND_ROW_ULPS ulps of the row), the division's */
                    const double y_err = KEEL_BOUND_ROW_ULPS * keel_ulp32(rmax);
                    for (size_t j = 0; j < c->dim; j++) {
                        const double v = s == 0.0 ? NAN : yref[r * c->dim + j] / s;
                        const int got = (int8_t)y.data[r * c->y_stride + j];
                        int want = s == 0.0 ? 0 : ref_quant(v);
                        i8s.elements++;
                        if (fabs(v) >= 127.0)
                            i8s.clamped++;
                        if (got != want && isfinite(v)) {
                            const double tol = y_err / s + 2.0 * keel_ulp32(v);
                            const double frac = fabs(v - floor(v) - 0.5);
                            if (frac <= tol && abs(got - want) == 1) { /* at a .5 boundary: either side */
                                boundary++;
                                continue;
                            }
                        }
                        if (got != want && bad == SIZE_MAX) {
                            bad = r * c->dim + j;
                            bad_v = v;
                        }
                    }
                }
                i8s.boundary += boundary;
                test_check(bad == SIZE_MAX, "%s: against the reference at element %zu (y_ref/s or s_ref %.17g)",
                           desc, bad, bad_v);
                test_check(test_first_written(rs + c->rows, 1) == 1 &&
                               (c->dynamic || test_first_written(rs, c->rows) == c->rows),
                           "%s: row_scale written where it must not be", desc);
                tbuf fresh = tbuf_new(KEEL_I8, c->rows, c->dim, c->y_stride);
                test_check(untouched_outside(&y, &fresh), "%s: wrote outside y's rows", desc);
                free(fresh.data);
                base = y;
                base_rs = rs;
                free(mean);
                free(rstd);
                continue;
            }
            test_check(first_diff_rows(&y, &base) == SIZE_MAX &&
                           (!c->dynamic || memcmp(rs, base_rs, c->rows * sizeof(float)) == 0),
                       "%s: not bitwise equal to scalar/1 thread", desc);
            free(y.data);
            free(rs);
            free(mean);
            free(rstd);
        }
    free(base.data);
    free(base_rs);
    free_fwd(&f32);
    free(x.data);
    free(xd);
    free(gamma);
    free(beta);
    free(smooth);
    free(g2);
    free(b2);
    free(yref);
}

static void sweep_i8(keel_rng *rng)
{
    static const int kinds[] = {KEEL_CASE_NORMAL, KEEL_CASE_OFFSET_1E4, KEEL_CASE_MIXED, KIND_F16_NEAR_MAX,
                                KIND_LARGE_MEAN, KEEL_CASE_ZERO, KEEL_CASE_TINY_VAR};
    long configs = 0;
    for (int xi = 0; xi < 3; xi++)
        for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++)
            for (int dynamic = 0; dynamic <= 1; dynamic++)
                for (int smooth = 0; smooth <= 1; smooth++)
                    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
                        shape s = pick_shape(rng);
                        i8_config c = {(op_kind)op, float_dtypes[xi], kinds[k], s.rows, s.dim,
                                       random_stride(rng, s.dim), random_stride(rng, s.dim), dynamic, smooth,
                                       keel_rng_below(rng, 3) != 0, op == OP_LAYERNORM && keel_rng_below(rng, 3) != 0,
                                       keel_rng_below(rng, 2) ? 100.0 : 180.0};
                        run_i8_config(rng, &c);
                        configs++;
                    }
    printf("int8: %ld configurations, %ld elements (%ld clamped), %ld dynamic rows (row_scale within %.3g ulps "
           "of max|y_ref|/127); %ld elements at a .5 boundary within the float32 error (either rounding "
           "accepted)\n", configs, i8s.elements, i8s.clamped, i8s.rows, i8s.worst_scale_ulps, i8s.boundary);
    test_check(i8s.boundary * 1000 <= i8s.elements,
               "int8: %ld of %ld elements at a .5 boundary: not rare", i8s.boundary, i8s.elements);
}

/* A row of NaN gives q = 0 and row_scale NaN; a row of zeros (RMSNorm; LayerNorm without beta)
 * row_scale 0 and q = 0; on every path, at a dim inside one vector and one through the vector
 * kernels' 64-wide body and both tails (83 = 64 + 16 + 3), each path's q and row_scale bitwise
 * the scalar path's. */
static void i8_special_rows(keel_rng *rng)
{
    static const size_t dims[] = {19, 83};
    const size_t rows = 3;
    for (size_t di = 0; di < 2; di++)
        for (int xi = 0; xi < 3; xi++)
            for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++) {
                const size_t dim = dims[di];
                tbuf x = tbuf_new(float_dtypes[xi], rows, dim, dim);
                for (size_t j = 0; j < dim; j++) {
                    tbuf_set(&x, j, (float)keel_rng_normal(rng));
                    tbuf_set(&x, dim + j, j == 5 ? NAN : 1.0f + (float)j);
                    tbuf_set(&x, 2 * dim + j, 0.0f);
                }
                int8_t q0[3 * 83];
                float rs0[3];
                for (int i = 0; i < n_isas; i++) {
                    test_set_isa(ctxs[0], isas[i]);
                    tbuf y = tbuf_new(KEEL_I8, rows, dim, dim);
                    float rs[3];
                    keel_quant_i8 q = {0.0f, rs, NULL};
                    keel_status st = call_i8(ctxs[0], (op_kind)op, rows, dim, tensor_of(&x), tensor_of(&y), NULL,
                                             NULL, 1e-5f, &q, NULL, NULL);
                    int ok = st == KEEL_OK && isnan(rs[1]) && rs[2] == 0.0f && rs[0] > 0.0f;
                    for (size_t j = 0; j < dim; j++)
                        ok &= y.data[dim + j] == 0 && y.data[2 * dim + j] == 0;
                    int has127 = 0;
                    for (size_t j = 0; j < dim; j++)
                        has127 |= abs((int8_t)y.data[j]) == 127;
                    if (i == 0) {
                        memcpy(q0, y.data, rows * dim);
                        memcpy(rs0, rs, sizeof rs0);
                    } else {
                        ok &= memcmp(q0, y.data, rows * dim) == 0 && memcmp(rs0, rs, sizeof rs0) == 0;
                    }
                    test_check(ok && has127, "%s fwd_i8 x=%s dim %zu isa %s: NaN row / zero row / row max wrong "
                               "or not the scalar path's bits (status %s, row_scale %g %g %g)",
                               op_name((op_kind)op), keel_dtype_name(float_dtypes[xi]), dim,
                               keel_isa_name(isas[i]), keel_status_str(st), (double)rs[0], (double)rs[1],
                               (double)rs[2]);
                    free(y.data);
                }
                free(x.data);
            }
}

/* ---- bad arguments ------------------------------------------------------------------------- */

static void bad_input(void)
{
    const size_t rows = 4, dim = 8;
    float x[32], mean[4], rstd[4], rs[4], smooth[8], gamma[8];
    int8_t y[32];
    for (int i = 0; i < 32; i++)
        x[i] = (float)i * 0.25f - 3.0f;
    for (int j = 0; j < 8; j++) {
        smooth[j] = 1.0f + (float)j;
        gamma[j] = 1.0f;
    }
    keel_tensor xt = keel_f32(x, dim);
    keel_tensor yt = {y, KEEL_I8, dim};
    keel_ctx *ctx = ctxs[0];

    /* every check: outputs filled with sentinels before, unchanged after */
#define FILL()                                                                                   \
    do {                                                                                         \
        memset(y, 0x5a, sizeof y);                                                               \
        test_fill_sentinel(mean, 4);                                                             \
        test_fill_sentinel(rstd, 4);                                                             \
        test_fill_sentinel(rs, 4);                                                               \
    } while (0)
#define UNCHANGED()                                                                              \
    (test_first_written(mean, 4) == 4 && test_first_written(rstd, 4) == 4 &&                     \
     test_first_written(rs, 4) == 4 && y[0] == 0x5a && y[31] == 0x5a)
#define EXPECT(call, want, what)                                                                 \
    do {                                                                                         \
        FILL();                                                                                  \
        keel_status st_ = (call);                                                                \
        test_check(st_ == (want) && UNCHANGED() && keel_last_error()[0] != '\0',                \
                   "bad input: %s: got %s (want %s), outputs %s; message '%s'", what,           \
                   keel_status_str(st_), keel_status_str(want), UNCHANGED() ? "unchanged" : "CHANGED", \
                   keel_last_error());                                                           \
    } while (0)

    keel_quant_i8 ok_q = {0.5f, NULL, NULL};
    keel_quant_i8 neg = {-1.0f, NULL, NULL}, nan_q = {NAN, NULL, NULL}, inf_q = {INFINITY, NULL, NULL};
    keel_quant_i8 dyn_no_rs = {0.0f, NULL, NULL};
    keel_quant_i8 smooth_zero = {0.5f, NULL, smooth}, smooth_dyn = {0.0f, rs, smooth};

    EXPECT(keel_layernorm_fwd(ctx, rows, dim, xt, yt, NULL, NULL, 1e-5f, mean, rstd, 0), KEEL_EUNSUPPORTED,
           "i8 y through keel_layernorm_fwd");
    EXPECT(keel_rmsnorm_fwd(ctx, rows, dim, xt, yt, NULL, 1e-5f, rstd, 0), KEEL_EUNSUPPORTED,
           "i8 y through keel_rmsnorm_fwd");
    for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++) {
        const int ln = op == OP_LAYERNORM;
        float *m = ln ? mean : NULL;
        char what[96];
#define WHAT(s) (snprintf(what, sizeof what, "%s: %s", op_name((op_kind)op), s), what)
        EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yt, NULL, NULL, 1e-5f, &neg, m, rstd), KEEL_EINVAL,
               WHAT("negative scale"));
        EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yt, NULL, NULL, 1e-5f, &nan_q, m, rstd), KEEL_EINVAL,
               WHAT("NaN scale"));
        EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yt, NULL, NULL, 1e-5f, &inf_q, m, rstd), KEEL_EINVAL,
               WHAT("Inf scale"));
        EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yt, NULL, NULL, 1e-5f, &dyn_no_rs, m, rstd), KEEL_ENULL,
               WHAT("dynamic scale without row_scale"));
        EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yt, NULL, NULL, 1e-5f, NULL, m, rstd), KEEL_ENULL,
               WHAT("quant NULL"));
        static const float bad_smooth[] = {0.0f, -1.0f, NAN, INFINITY, -0.0f};
        for (int k = 0; k < 5; k++) {
            smooth[3] = bad_smooth[k];
            EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yt, gamma, NULL, 1e-5f, k & 1 ? &smooth_dyn : &smooth_zero,
                           m, rstd),
                   KEEL_EINVAL, WHAT("a smooth factor 0, negative, NaN or Inf"));
        }
        smooth[3] = 4.0f;
        for (int dt = KEEL_F32; dt <= KEEL_F16; dt++) {
            float yf[32];
            keel_tensor yft = {yf, (keel_dtype)dt, dim};
            test_fill_sentinel(yf, 32);
            EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yft, NULL, NULL, 1e-5f, &ok_q, m, rstd), KEEL_EINVAL,
                   WHAT("float y with the _i8 op"));
            test_check(test_first_written(yf, 32) == 32, "bad input: float y changed by a failing _i8 call");
        }
        keel_tensor x8 = {y, KEEL_I8, dim};
        EXPECT(call_i8(ctx, (op_kind)op, rows, dim, x8, yt, NULL, NULL, 1e-5f, &ok_q, m, rstd), KEEL_EUNSUPPORTED,
               WHAT("i8 x"));
        EXPECT(call_i8(ctx, (op_kind)op, rows, dim, xt, yt, NULL, NULL, -1.0f, &ok_q, m, rstd), KEEL_EINVAL,
               WHAT("negative eps"));
        /* and a good call after the bad ones works */
        FILL();
        keel_status st = call_i8(ctx, (op_kind)op, rows, dim, xt, yt, gamma, NULL, 1e-5f, &smooth_dyn, m, rstd);
        test_check(st == KEEL_OK && rs[0] > 0.0f && y[0] != 0x5a, "%s: a good _i8 call failed: %s (%s)",
                   op_name((op_kind)op), keel_status_str(st), keel_last_error());
#undef WHAT
    }
    /* i8 dy / x / dx of the backwards */
    keel_tensor i8t = {y, KEEL_I8, dim};
    float dx[32];
    keel_tensor dxt = keel_f32(dx, dim);
    EXPECT(keel_layernorm_bwd(ctx, rows, dim, i8t, xt, NULL, NULL, NULL, 1e-5f, dxt, NULL, NULL, 0),
           KEEL_EUNSUPPORTED, "layernorm bwd: i8 dy");
    EXPECT(keel_rmsnorm_bwd(ctx, rows, dim, xt, i8t, NULL, NULL, 1e-5f, dxt, NULL, 0), KEEL_EUNSUPPORTED,
           "rmsnorm bwd: i8 x");
    EXPECT(keel_layernorm_bwd(ctx, rows, dim, xt, keel_f32(dx, dim), NULL, NULL, NULL, 1e-5f, i8t, NULL, NULL, 0),
           KEEL_EUNSUPPORTED, "layernorm bwd: i8 dx");
#undef EXPECT
#undef UNCHANGED
#undef FILL
}

/* ---- keel_eps_check ---------------------------------------------------------------------------- */

static void eps_check(void)
{
    keel_eps_info info;
    keel_status st;

    /* f16: 1e-12 rounds to 0 (the smallest subnormal is 2^-24 ~ 5.96e-8) */
    st = keel_eps_check(KEEL_F16, 1e-12f, &info);
    test_check(st == KEEL_OK && info.eps == 1e-12f && info.eps_in_dtype == 0.0f && !info.representable &&
                   !info.subnormal_in_dtype,
               "eps_check f16 1e-12: status %s, eps_in_dtype %g, representable %d", keel_status_str(st),
               (double)info.eps_in_dtype, info.representable);
    test_check(fabs(info.max_amplification - 1e6) <= 1e6 * 1e-6 &&
                   info.max_amplification == 1.0 / sqrt((double)1e-12f) && info.dominance_variance == (double)1e-12f,
               "eps_check f16 1e-12: amplification %.17g (want 1/sqrt(eps) = %.17g), dominance %g",
               info.max_amplification, 1.0 / sqrt((double)1e-12f), info.dominance_variance);
    test_check(info.suggested_eps == 1e-4f,
               "eps_check f16: suggested %g, want 1e-4 (smallest normal 6.1e-5 > noise 2^-20/12 = 7.9e-8)",
               (double)info.suggested_eps);
    test_check(info.dtype_noise_variance == ldexp(1.0, -20) / 12.0, "eps_check f16: noise variance %.17g",
               info.dtype_noise_variance);

    /* f16: 1e-5 is a subnormal there, within 1% (168 * 2^-24); 1e-7 rounds to 2^-23 (19% off) */
    st = keel_eps_check(KEEL_F16, 1e-5f, &info);
    test_check(st == KEEL_OK && info.representable && info.subnormal_in_dtype &&
                   info.eps_in_dtype == (float)ldexp(168.0, -24),
               "eps_check f16 1e-5: eps_in_dtype %.9g (want %.9g), representable %d, subnormal %d",
               (double)info.eps_in_dtype, ldexp(168.0, -24), info.representable, info.subnormal_in_dtype);
    st = keel_eps_check(KEEL_F16, 1e-7f, &info);
    test_check(st == KEEL_OK && !info.representable && info.eps_in_dtype == (float)ldexp(1.0, -23),
               "eps_check f16 1e-7: eps_in_dtype %.9g, representable %d", (double)info.eps_in_dtype,
               info.representable);
    st = keel_eps_check(KEEL_F16, 1e-3f, &info);
    test_check(st == KEEL_OK && info.representable && !info.subnormal_in_dtype,
               "eps_check f16 1e-3: representable %d subnormal %d", info.representable, info.subnormal_in_dtype);

    /* bf16: float32's exponent range: 1e-12 is representable (within 2^-8) */
    st = keel_eps_check(KEEL_BF16, 1e-12f, &info);
    test_check(st == KEEL_OK && info.representable && !info.subnormal_in_dtype &&
                   info.eps_in_dtype == keel_bf16_bits_to_f32(keel_f32_to_bf16_bits(1e-12f)) &&
                   fabs((double)info.eps_in_dtype - 1e-12) <= 1e-12 / 256,
               "eps_check bf16 1e-12: eps_in_dtype %g, representable %d", (double)info.eps_in_dtype,
               info.representable);
    test_check(info.suggested_eps == 1e-5f && info.dtype_noise_variance == ldexp(1.0, -14) / 12.0,
               "eps_check bf16: suggested %g (want 1e-5: noise 2^-14/12 = 5.1e-6), noise %.17g",
               (double)info.suggested_eps, info.dtype_noise_variance);
    st = keel_eps_check(KEEL_BF16, 1e-40f, &info); /* a subnormal in bf16 too */
    test_check(st == KEEL_OK && info.subnormal_in_dtype && info.eps_in_dtype > 0.0f,
               "eps_check bf16 1e-40: subnormal %d, eps_in_dtype %g", info.subnormal_in_dtype,
               (double)info.eps_in_dtype);

    /* f32: anything positive is representable (exactly) */
    static const float f32_eps[] = {1e-12f, 1e-5f, 1e-38f, 1e-45f, 1.0f, 3e38f};
    for (size_t i = 0; i < sizeof f32_eps / sizeof f32_eps[0]; i++) {
        st = keel_eps_check(KEEL_F32, f32_eps[i], &info);
        test_check(st == KEEL_OK && info.representable && info.eps_in_dtype == f32_eps[i] &&
                       info.subnormal_in_dtype == (f32_eps[i] < FLT_MIN) &&
                       info.max_amplification == 1.0 / sqrt((double)f32_eps[i]),
                   "eps_check f32 %g: representable %d, eps_in_dtype %g, subnormal %d, amplification %g",
                   (double)f32_eps[i], info.representable, (double)info.eps_in_dtype, info.subnormal_in_dtype,
                   info.max_amplification);
    }
    test_check(info.suggested_eps == 1e-14f && info.dtype_noise_variance == ldexp(1.0, -46) / 12.0,
               "eps_check f32: suggested %g (want 1e-14: noise 2^-46/12 = 1.2e-15)", (double)info.suggested_eps);

    /* eps 0: valid (finite, >= 0); nothing to store, no bound on the amplification */
    st = keel_eps_check(KEEL_F16, 0.0f, &info);
    test_check(st == KEEL_OK && !info.representable && info.eps_in_dtype == 0.0f && isinf(info.max_amplification),
               "eps_check eps 0: status %s representable %d amplification %g", keel_status_str(st),
               info.representable, info.max_amplification);

    /* the suggestions are representable in their dtype, and stay put when asked about */
    for (int dt = KEEL_F32; dt <= KEEL_F16; dt++) {
        keel_eps_info a, b;
        keel_eps_check((keel_dtype)dt, 1e-5f, &a);
        st = keel_eps_check((keel_dtype)dt, a.suggested_eps, &b);
        test_check(st == KEEL_OK && b.representable && !b.subnormal_in_dtype && b.suggested_eps == a.suggested_eps,
                   "eps_check %s: the suggestion %g is not representable or moves",
                   keel_dtype_name((keel_dtype)dt), (double)a.suggested_eps);
    }

    /* rejected: negative, NaN, Inf eps; i8; a dtype that is none; NULL info. info unchanged. */
    static const float bad_eps[] = {-1e-5f, -FLT_MIN, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++) {
        memset(&info, 0x5a, sizeof info);
        keel_eps_info before = info;
        st = keel_eps_check(KEEL_F16, bad_eps[i], &info);
        test_check(st == KEEL_EINVAL && !memcmp(&info, &before, sizeof info),
                   "eps_check eps %g: %s (want invalid argument), info %s", (double)bad_eps[i],
                   keel_status_str(st), memcmp(&info, &before, sizeof info) ? "changed" : "unchanged");
    }
    memset(&info, 0x5a, sizeof info);
    keel_eps_info before = info;
    st = keel_eps_check(KEEL_I8, 1e-5f, &info);
    test_check(st == KEEL_EUNSUPPORTED && !memcmp(&info, &before, sizeof info),
               "eps_check i8: %s (want unsupported)", keel_status_str(st));
    st = keel_eps_check((keel_dtype)7, 1e-5f, &info);
    test_check(st == KEEL_EINVAL && !memcmp(&info, &before, sizeof info), "eps_check dtype 7: %s",
               keel_status_str(st));
    st = keel_eps_check(KEEL_F16, 1e-5f, NULL);
    test_check(st == KEEL_ENULL, "eps_check info NULL: %s", keel_status_str(st));
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_lowp"));
    for (int t = 0; t < 3; t++)
        ctxs[t] = test_ctx(thread_counts[t]);
    n_isas = test_isas(isas);
    printf("paths:");
    for (int i = 0; i < n_isas; i++)
        printf(" %s", keel_isa_name(isas[i]));
    printf("; threads 1, 2, 3\n");

    eps_check();
    bad_input();
    sweep_forward(&rng);
    sweep_backward(&rng);
    nonfinite_rows(&rng);
    constant_rows(&rng);
    sweep_i8(&rng);
    i8_special_rows(&rng);

    /* keel.h: NaN positions are identical on every path and thread count, NaN sign and payload
     * bits are not specified (which NaN operand survives depends on the compiler's operand
     * order, even between two builds of the scalar path). Positions are checked above; here
     * the payload-only differences are reported, and fail only when KEEL_TEST_STRICT_NAN=1. */
    printf("NaN bits: %ld runs differ from scalar/1 thread only in the sign or payload of NaNs%s%s\n",
           nan_bits.count, nan_bits.count ? "; first: " : "", nan_bits.count ? nan_bits.first : "");
    if (getenv("KEEL_TEST_STRICT_NAN"))
        test_check(nan_bits.count == 0, "KEEL_TEST_STRICT_NAN: %ld runs differ in NaN bits", nan_bits.count);
    printf("accuracy: %ld bf16/f16 elements; worst error in ulps of the dtype at the reference value: "
           "bf16 %.3g, f16 %.3g (f32 outputs: %.3g ulps of the row); %ld elements (%.2g%%) used the "
           "cancellation allowance\n",
           acc.elements, acc.worst_ulps[1], acc.worst_ulps[2], acc.worst_ulps[0], acc.floor_used,
           acc.elements ? 100.0 * (double)acc.floor_used / (double)acc.elements : 0.0);
    printf("worst elements: bf16 %s; f16 %s\n", acc.worst_at[1], acc.worst_at[2]);
    for (int t = 0; t < 3; t++)
        keel_ctx_destroy(ctxs[t]);
    return test_finish();
}
