/* LayerNorm, float32, AVX-512: the formulas and reduction order of kernels.h, 16 floats at a
 * time, giving exactly the bits of f32_layernorm__scalar.c. Reductions run in the double lanes
 * of simd_lanes__avx512.h; elementwise work is float, one rounding per operation as written
 * (no FMA: the file is built with -ffp-contract=off and uses only separate mul and add). */
#include <math.h>

#include "kernels.h"
#include "norm_finish.h"
#include "simd_lanes__avx512.h"

/* The forward's statistics of one row: returns mean_d, stores rstd_f. */
static double ln_stats(const float *x, size_t dim, float eps, float *rstd)
{
    const size_t full = dim & ~(size_t)15;
    const __mmask16 k = k512_tail16(dim - full);
    const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);

    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        s0 = _mm512_add_pd(s0, k512_cvt8(x + j));
        s1 = _mm512_add_pd(s1, k512_cvt8(x + j + 8));
    }
    /* tail: the high half is touched only when it has elements (x + full + 8 may lie past
     * the row) */
    if (klo)
        s0 = k512_add_mask(s0, klo, k512_cvt8_mask(klo, x + full));
    if (khi)
        s1 = k512_add_mask(s1, khi, k512_cvt8_mask(khi, x + full + 8));
    const double mean = keel_ln_mean(k512_reduce16(s0, s1), dim);

    const __m512d m = _mm512_set1_pd(mean);
    __m512d v0 = _mm512_setzero_pd(), v1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        const __m512d t0 = _mm512_sub_pd(k512_cvt8(x + j), m);
        const __m512d t1 = _mm512_sub_pd(k512_cvt8(x + j + 8), m);
        v0 = _mm512_add_pd(v0, _mm512_mul_pd(t0, t0));
        v1 = _mm512_add_pd(v1, _mm512_mul_pd(t1, t1));
    }
    if (klo) {
        const __m512d t0 = _mm512_sub_pd(k512_cvt8_mask(klo, x + full), m);
        v0 = k512_add_mask(v0, klo, _mm512_mul_pd(t0, t0));
    }
    if (khi) {
        const __m512d t1 = _mm512_sub_pd(k512_cvt8_mask(khi, x + full + 8), m);
        v1 = k512_add_mask(v1, khi, _mm512_mul_pd(t1, t1));
    }
    *rstd = keel_ln_rstd(k512_reduce16(v0, v1), dim, eps);
    return mean;
}

/* y = ((x - hi) - lo) * rs, then * gamma, then + beta. hg/hb are constants at each call site,
 * so every combination gets its own loop without branches. */
KEEL_INLINE void ln_out(size_t dim, const float *x, float *y, const float *gamma,
                        const float *beta, float hi, float lo, float rs, int hg, int hb)
{
    const __m512 vh = _mm512_set1_ps(hi), vl = _mm512_set1_ps(lo), vr = _mm512_set1_ps(rs);
    size_t j = 0;
    for (; j + 16 <= dim; j += 16) {
        __m512 v = _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), vh), vl);
        v = _mm512_mul_ps(v, vr);
        if (hg)
            v = _mm512_mul_ps(v, _mm512_loadu_ps(gamma + j));
        if (hb)
            v = _mm512_add_ps(v, _mm512_loadu_ps(beta + j));
        _mm512_storeu_ps(y + j, v);
    }
    if (j < dim) {
        const __mmask16 k = k512_tail16(dim - j);
        __m512 v = _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vh), vl);
        v = _mm512_mul_ps(v, vr);
        if (hg)
            v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, gamma + j));
        if (hb)
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, beta + j));
        _mm512_mask_storeu_ps(y + j, k, v);
    }
}

void keel_f32_layernorm_fwd__avx512(size_t rows, size_t dim, const float *x, size_t x_stride,
                                    float *y, size_t y_stride, const float *gamma,
                                    const float *beta, float eps, float *mean, float *rstd)
{
    const int variant = (gamma != NULL) | (beta != NULL) << 1;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        float rs;
        const double mean_d = ln_stats(xr, dim, eps, &rs);
        /* mean as a float hi + lo pair (see the scalar kernel) */
        const float hi = (float)mean_d;
        const float lo = (float)(mean_d - (double)hi);
        switch (variant) {
        case 0: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, 0, 0); break;
        case 1: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, 1, 0); break;
        case 2: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, 0, 1); break;
        default: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, 1, 1); break;
        }
        if (mean)
            mean[r] = hi;
        if (rstd)
            rstd[r] = rs;
    }
}

/* Backward sweep 1 over one row. Always Sx = R(u), u = (double)x - (double)m; with want_g also
 * Sg = R((double)g) and Sgu = R((double)g * u), g = dy * gamma (float) or dy. */
KEEL_INLINE void ln_sweep1(size_t dim, const float *dy, const float *x, const float *gamma,
                           float m, double *sx, double *sg, double *sgu, int want_g, int hg)
{
    const size_t full = dim & ~(size_t)15;
    const __m512d md = _mm512_set1_pd((double)m);
    __m512d x0 = _mm512_setzero_pd(), x1 = _mm512_setzero_pd();
    __m512d g0 = _mm512_setzero_pd(), g1 = _mm512_setzero_pd();
    __m512d p0 = _mm512_setzero_pd(), p1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        const __m512d u0 = _mm512_sub_pd(k512_cvt8(x + j), md);
        const __m512d u1 = _mm512_sub_pd(k512_cvt8(x + j + 8), md);
        x0 = _mm512_add_pd(x0, u0);
        x1 = _mm512_add_pd(x1, u1);
        if (want_g) {
            __m512 g = _mm512_loadu_ps(dy + j);
            if (hg)
                g = _mm512_mul_ps(g, _mm512_loadu_ps(gamma + j));
            const __m512d gd0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
            const __m512d gd1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
            g0 = _mm512_add_pd(g0, gd0);
            g1 = _mm512_add_pd(g1, gd1);
            p0 = _mm512_add_pd(p0, _mm512_mul_pd(gd0, u0));
            p1 = _mm512_add_pd(p1, _mm512_mul_pd(gd1, u1));
        }
    }
    if (full < dim) {
        /* the tail as one 16-float step: float loads are masked to the row, and only the
         * lanes that get an element are added to */
        const __mmask16 k = k512_tail16(dim - full);
        const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + full);
        const __m512d u0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xv)), md);
        const __m512d u1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(xv, 1)), md);
        x0 = k512_add_mask(x0, klo, u0);
        x1 = k512_add_mask(x1, khi, u1);
        if (want_g) {
            __m512 g = _mm512_maskz_loadu_ps(k, dy + full);
            if (hg)
                g = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(k, gamma + full));
            const __m512d gd0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
            const __m512d gd1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
            g0 = k512_add_mask(g0, klo, gd0);
            g1 = k512_add_mask(g1, khi, gd1);
            p0 = k512_add_mask(p0, klo, _mm512_mul_pd(gd0, u0));
            p1 = k512_add_mask(p1, khi, _mm512_mul_pd(gd1, u1));
        }
    }
    *sx = k512_reduce16(x0, x1);
    *sg = k512_reduce16(g0, g1);
    *sgu = k512_reduce16(p0, p1);
}

/* The per-row constants of sweep 2. */
typedef struct ln_row {
    float m, df, rs, a, b;
} ln_row;

/* One step of sweep 2 at column j on the floats selected by k (all 16 in the main loop).
 * Pointers of absent arrays are never offset (they may be NULL). */
KEEL_INLINE void ln_step2(size_t j, const float *dy, const float *x, const float *gamma,
                          float *dx, float *dg, float *db, const ln_row *c, __mmask16 k,
                          int full, int hdx, int acc, int hg, int hdg, int hdb)
{
#define LD(p) (full ? _mm512_loadu_ps((p) + j) : _mm512_maskz_loadu_ps(k, (p) + j))
#define ST(p, v) (full ? _mm512_storeu_ps((p) + j, v) : _mm512_mask_storeu_ps((p) + j, k, v))
    const __m512 xv = LD(x);
    const __m512 dyv = LD(dy);
    __m512 xhat = _mm512_sub_ps(_mm512_sub_ps(xv, _mm512_set1_ps(c->m)), _mm512_set1_ps(c->df));
    xhat = _mm512_mul_ps(xhat, _mm512_set1_ps(c->rs));
    if (hdx) {
        const __m512 g = hg ? _mm512_mul_ps(dyv, LD(gamma)) : dyv;
        const __m512 t = _mm512_sub_ps(_mm512_sub_ps(g, _mm512_set1_ps(c->a)),
                                       _mm512_mul_ps(xhat, _mm512_set1_ps(c->b)));
        __m512 v = _mm512_mul_ps(_mm512_set1_ps(c->rs), t);
        if (acc)
            v = _mm512_add_ps(LD(dx), v);
        ST(dx, v);
    }
    if (hdg)
        ST(dg, _mm512_add_ps(LD(dg), _mm512_mul_ps(dyv, xhat)));
    if (hdb)
        ST(db, _mm512_add_ps(LD(db), dyv));
#undef LD
#undef ST
}

KEEL_INLINE void ln_sweep2(size_t dim, const float *dy, const float *x, const float *gamma,
                           float *dx, float *dg, float *db, const ln_row *c, int hdx, int acc,
                           int hg, int hdg, int hdb)
{
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        ln_step2(j, dy, x, gamma, dx, dg, db, c, 0xffff, 1, hdx, acc, hg, hdg, hdb);
    if (j < dim)
        ln_step2(j, dy, x, gamma, dx, dg, db, c, k512_tail16(dim - j), 0, hdx, acc, hg, hdg, hdb);
}

/* Sweep 2 for the 5 flags (dx, accumulate, gamma, dgamma, dbeta), each a constant. */
typedef void (*ln_sweep2_fn)(size_t, const float *, const float *, const float *, float *,
                             float *, float *, const ln_row *);
#define LN_SWEEP2_VARIANT(i)                                                                   \
    static void ln_sweep2_##i(size_t dim, const float *dy, const float *x, const float *gamma, \
                              float *dx, float *dg, float *db, const ln_row *c)                \
    {                                                                                          \
        ln_sweep2(dim, dy, x, gamma, dx, dg, db, c, (i) & 1, ((i) >> 1) & 1, ((i) >> 2) & 1,   \
                  ((i) >> 3) & 1, ((i) >> 4) & 1);                                             \
    }
LN_SWEEP2_VARIANT(0) LN_SWEEP2_VARIANT(1) LN_SWEEP2_VARIANT(2) LN_SWEEP2_VARIANT(3)
LN_SWEEP2_VARIANT(4) LN_SWEEP2_VARIANT(5) LN_SWEEP2_VARIANT(6) LN_SWEEP2_VARIANT(7)
LN_SWEEP2_VARIANT(8) LN_SWEEP2_VARIANT(9) LN_SWEEP2_VARIANT(10) LN_SWEEP2_VARIANT(11)
LN_SWEEP2_VARIANT(12) LN_SWEEP2_VARIANT(13) LN_SWEEP2_VARIANT(14) LN_SWEEP2_VARIANT(15)
LN_SWEEP2_VARIANT(16) LN_SWEEP2_VARIANT(17) LN_SWEEP2_VARIANT(18) LN_SWEEP2_VARIANT(19)
LN_SWEEP2_VARIANT(20) LN_SWEEP2_VARIANT(21) LN_SWEEP2_VARIANT(22) LN_SWEEP2_VARIANT(23)
LN_SWEEP2_VARIANT(24) LN_SWEEP2_VARIANT(25) LN_SWEEP2_VARIANT(26) LN_SWEEP2_VARIANT(27)
LN_SWEEP2_VARIANT(28) LN_SWEEP2_VARIANT(29) LN_SWEEP2_VARIANT(30) LN_SWEEP2_VARIANT(31)
static const ln_sweep2_fn ln_sweep2_table[32] = {
    ln_sweep2_0,  ln_sweep2_1,  ln_sweep2_2,  ln_sweep2_3,  ln_sweep2_4,  ln_sweep2_5,
    ln_sweep2_6,  ln_sweep2_7,  ln_sweep2_8,  ln_sweep2_9,  ln_sweep2_10, ln_sweep2_11,
    ln_sweep2_12, ln_sweep2_13, ln_sweep2_14, ln_sweep2_15, ln_sweep2_16, ln_sweep2_17,
    ln_sweep2_18, ln_sweep2_19, ln_sweep2_20, ln_sweep2_21, ln_sweep2_22, ln_sweep2_23,
    ln_sweep2_24, ln_sweep2_25, ln_sweep2_26, ln_sweep2_27, ln_sweep2_28, ln_sweep2_29,
    ln_sweep2_30, ln_sweep2_31,
};

void keel_f32_layernorm_bwd__avx512(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                    const float *x, size_t x_stride, const float *mean,
                                    const float *rstd, const float *gamma, float eps, float *dx,
                                    size_t dx_stride, int accumulate_dx, float *dgamma_part,
                                    float *dbeta_part)
{
    const int hdx = dx != NULL, hg = gamma != NULL;
    const int need_xhat = hdx || dgamma_part; /* only dbeta: no statistics needed at all */
    const ln_sweep2_fn sweep2 = ln_sweep2_table[hdx | (hdx && accumulate_dx) << 1 | hg << 2 |
                                                (dgamma_part != NULL) << 3 |
                                                (dbeta_part != NULL) << 4];
    const double n = (double)dim;
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride;
        const float *xr = x + r * x_stride;
        float *dxr = hdx ? dx + r * dx_stride : NULL;
        ln_row c = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        if (need_xhat) {
            if (mean) {
                c.m = mean[r];
                c.rs = rstd[r];
            } else {
                c.m = (float)ln_stats(xr, dim, eps, &c.rs);
            }
            double sx, sg, sgu;
            if (!hdx)
                ln_sweep1(dim, dyr, xr, gamma, c.m, &sx, &sg, &sgu, 0, 0);
            else if (hg)
                ln_sweep1(dim, dyr, xr, gamma, c.m, &sx, &sg, &sgu, 1, 1);
            else
                ln_sweep1(dim, dyr, xr, gamma, c.m, &sx, &sg, &sgu, 1, 0);
            const double delta = sx / n;
            c.a = (float)(sg / n);
            c.b = (float)((double)c.rs * ((sgu - delta * sg) / n));
            c.df = (float)delta;
        }
        sweep2(dim, dyr, xr, gamma, dxr, dgamma_part, dbeta_part, &c);
    }
}
