/*
 * block_test_util.h - helpers of the transformer-block tests (test_block_*.c): strided buffers
 * with NaN padding or sentinels, and the comparisons they repeat (rows against the float64
 * reference in ulps, bitwise equality, nothing written outside the rows). Builds on
 * test_common.h; one translation unit per test, so everything here is static.
 */
#ifndef KEEL_BLOCK_TEST_UTIL_H
#define KEEL_BLOCK_TEST_UTIL_H

#include <math.h>

#include "keel_ref_block.h"
#include "test_common.h"

/* rows x stride floats plus one spare row, all sentinel: an output. */
static inline float *bt_out(size_t rows, size_t stride)
{
    float *p = test_alloc((rows + 1) * stride);
    test_fill_sentinel(p, (rows + 1) * stride);
    return p;
}

/* rows x stride floats plus a spare row: rows of `kind`, NaN in the padding and the spare row
 * (a kernel reading past a row's end poisons its result). */
static inline float *bt_in(keel_rng *rng, keel_case_kind kind, size_t rows, size_t dim,
                           size_t stride)
{
    float *p = test_alloc((rows + 1) * stride);
    for (size_t i = 0; i < (rows + 1) * stride; i++)
        p[i] = NAN;
    for (size_t r = 0; r < rows; r++)
        keel_case_fill_row(rng, kind, p + r * stride, dim);
    return p;
}

/* dim floats: N(centre, scale^2). */
static inline float *bt_vec(keel_rng *rng, size_t dim, double centre, double scale)
{
    float *p = test_alloc(dim + 1);
    for (size_t j = 0; j < dim; j++)
        p[j] = (float)(centre + scale * keel_rng_normal(rng));
    test_fill_sentinel(p + dim, 1);
    return p;
}

/* A dense double copy of rows x dim (stride apart). */
static inline double *bt_d(const float *src, size_t rows, size_t dim, size_t stride)
{
    if (!src)
        return NULL;
    double *d = keel_ref_to_double(src, rows, dim, stride);
    if (!d)
        test_fatal("out of memory");
    return d;
}

/* A copy of (rows + 1) x stride floats. */
static inline float *bt_copy(const float *src, size_t rows, size_t stride)
{
    return test_copy(src, (rows + 1) * stride);
}

/* One check: rows of got (stride) within `bound` ulps of their row's largest |ref| (floors[r]
 * when larger; NULL: none). */
static inline void bt_rows(const char *where, const char *what, const float *got, size_t stride,
                           const double *ref, size_t rows, size_t dim, const double *floors,
                           double bound)
{
    size_t wr = 0, wj = 0;
    double e = keel_err_ulps_rows(got, stride, ref, rows, dim, floors, &wr, &wj);
    test_check(e <= bound, "%s: %s error %.3g ulps > %g at row %zu index %zu (got %.9g, ref %.17g)",
               where, what, e, bound, wr, wj, rows ? (double)got[wr * stride + wj] : 0.0,
               rows ? ref[wr * dim + wj] : 0.0);
}

/* One check: each got[i] within `bound` ulps of its own |ref[i]|. */
static inline void bt_each(const char *where, const char *what, const float *got,
                           const double *ref, size_t n, double bound)
{
    size_t i = 0;
    double e = keel_err_ulps_each(got, ref, n, &i);
    test_check(e <= bound, "%s: %s error %.3g ulps > %g at %zu (got %.9g, ref %.17g)", where, what,
               e, bound, i, n ? (double)got[i] : 0.0, n ? ref[i] : 0.0);
}

/* One check: a sum over rows within bound * FLT_EPSILON of its magnitude sum. */
static inline void bt_sum(const char *where, const char *what, const float *got,
                          const double *ref, const double *mag, size_t n, double bound)
{
    size_t j = 0;
    double e = keel_err_sum(got, ref, mag, n, &j);
    test_check(e <= bound, "%s: %s error %.3g FLT_EPSILON of sum|terms| > %g at %zu (got %.9g, "
               "ref %.17g, sum|terms| %.6g)", where, what, e, bound, j, n ? (double)got[j] : 0.0,
               n ? ref[j] : 0.0, n ? mag[j] : 0.0);
}

/* One check: rows x dim of a and b (their strides) hold the same bits. */
static inline void bt_same(const char *where, const char *what, const float *a, size_t as,
                           const float *b, size_t bs, size_t rows, size_t dim)
{
    for (size_t r = 0; r < rows; r++) {
        size_t j = test_first_diff(a + r * as, b + r * bs, dim);
        if (j != dim) {
            test_check(0, "%s: %s not bitwise equal at row %zu index %zu (%.9g vs %.9g)", where,
                       what, r, j, (double)a[r * as + j], (double)b[r * bs + j]);
            return;
        }
    }
    test_check(1, "%s", what);
}

/* One check: the padding after dim of each row and the spare row are as in `before` (the
 * buffer's copy taken before the call). */
static inline void bt_outside(const char *where, const char *what, const float *buf,
                              const float *before, size_t rows, size_t dim, size_t stride)
{
    for (size_t r = 0; r <= rows; r++) {
        const size_t from = r < rows ? r * stride + dim : r * stride, to = (r + 1) * stride;
        if (memcmp(buf + from, before + from, (to - from) * sizeof(float))) {
            test_check(0, "%s: %s written outside its rows (row %zu)", where, what, r);
            return;
        }
    }
    test_check(1, "%s", what);
}

static inline void bt_ok(const char *where, const char *what, keel_status st)
{
    test_check(st == KEEL_OK, "%s: %s returned %s (%s)", where, what, keel_status_str(st),
               keel_last_error());
}

static inline int bt_coin(keel_rng *rng, double p) { return keel_rng_uniform(rng) < p; }

/* stride == dim half the time, else dim plus 1..17. */
static inline size_t bt_stride(keel_rng *rng, size_t dim)
{
    return bt_coin(rng, 0.5) ? dim : dim + 1 + keel_rng_below(rng, 17);
}

/* max over a row of |v| */
static inline double bt_row_max(const float *v, size_t dim)
{
    double m = 0.0;
    for (size_t j = 0; j < dim; j++)
        if (fabs((double)v[j]) > m)
            m = fabs((double)v[j]);
    return m;
}

#endif
