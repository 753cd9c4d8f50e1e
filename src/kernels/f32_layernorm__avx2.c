/* LayerNorm, float32, AVX2: the formulas and reduction order of kernels.h, giving exactly the
 * bits of f32_layernorm__scalar.c. Reductions run 16 floats a step in the four double-lane
 * registers of simd_lanes__avx2.h; elementwise work is 8 floats a step, one rounding per
 * operation as written (no FMA: built with -ffp-contract=off, separate mul and add only). */
#include <math.h>

#include "kernels.h"
#include "norm_finish.h"
#include "simd_lanes__avx2.h"

/* The forward's statistics of one row: returns mean_d, stores rstd_f. */
static double ln_stats(const float *x, size_t dim, float eps, float *rstd, const k256_tail *t)
{
    const size_t full = dim - t->n;
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t j = 0; j < full; j += 16) {
        s0 = _mm256_add_pd(s0, k256_cvt4(x + j));
        s1 = _mm256_add_pd(s1, k256_cvt4(x + j + 4));
        s2 = _mm256_add_pd(s2, k256_cvt4(x + j + 8));
        s3 = _mm256_add_pd(s3, k256_cvt4(x + j + 12));
    }
    __m256 v0 = _mm256_setzero_ps(), v1 = v0;
    if (t->n) {
        /* the masked-out floats load as +0.0, so their terms are +0.0 already */
        k256_tail_load(t, x + full, &v0, &v1);
        s0 = _mm256_add_pd(s0, k256_lo_pd(v0));
        s1 = _mm256_add_pd(s1, k256_hi_pd(v0));
        s2 = _mm256_add_pd(s2, k256_lo_pd(v1));
        s3 = _mm256_add_pd(s3, k256_hi_pd(v1));
    }
    const double mean = keel_ln_mean(k256_reduce16(s0, s1, s2, s3), dim);

    const __m256d m = _mm256_set1_pd(mean);
    s0 = s1 = s2 = s3 = _mm256_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        const __m256d t0 = _mm256_sub_pd(k256_cvt4(x + j), m);
        const __m256d t1 = _mm256_sub_pd(k256_cvt4(x + j + 4), m);
        const __m256d t2 = _mm256_sub_pd(k256_cvt4(x + j + 8), m);
        const __m256d t3 = _mm256_sub_pd(k256_cvt4(x + j + 12), m);
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(t0, t0));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(t1, t1));
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(t2, t2));
        s3 = _mm256_add_pd(s3, _mm256_mul_pd(t3, t3));
    }
    if (t->n) {
        const __m256d t0 = _mm256_sub_pd(k256_lo_pd(v0), m);
        const __m256d t1 = _mm256_sub_pd(k256_hi_pd(v0), m);
        const __m256d t2 = _mm256_sub_pd(k256_lo_pd(v1), m);
        const __m256d t3 = _mm256_sub_pd(k256_hi_pd(v1), m);
        s0 = k256_add_mask(s0, t->d0, _mm256_mul_pd(t0, t0));
        s1 = k256_add_mask(s1, t->d1, _mm256_mul_pd(t1, t1));
        s2 = k256_add_mask(s2, t->d2, _mm256_mul_pd(t2, t2));
        s3 = k256_add_mask(s3, t->d3, _mm256_mul_pd(t3, t3));
    }
    *rstd = keel_ln_rstd(k256_reduce16(s0, s1, s2, s3), dim, eps);
    return mean;
}

/* y = ((x - hi) - lo) * rs, then * gamma, then + beta, 8 floats a step; hg/hb constant. */
KEEL_INLINE void ln_out(size_t dim, const float *x, float *y, const float *gamma,
                        const float *beta, float hi, float lo, float rs, __m256i tail8, int hg,
                        int hb)
{
    const __m256 vh = _mm256_set1_ps(hi), vl = _mm256_set1_ps(lo), vr = _mm256_set1_ps(rs);
    size_t j = 0;
    for (; j + 8 <= dim; j += 8) {
        __m256 v = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vh), vl);
        v = _mm256_mul_ps(v, vr);
        if (hg)
            v = _mm256_mul_ps(v, _mm256_loadu_ps(gamma + j));
        if (hb)
            v = _mm256_add_ps(v, _mm256_loadu_ps(beta + j));
        _mm256_storeu_ps(y + j, v);
    }
    if (j < dim) {
        __m256 v = _mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(x + j, tail8), vh), vl);
        v = _mm256_mul_ps(v, vr);
        if (hg)
            v = _mm256_mul_ps(v, _mm256_maskload_ps(gamma + j, tail8));
        if (hb)
            v = _mm256_add_ps(v, _mm256_maskload_ps(beta + j, tail8));
        _mm256_maskstore_ps(y + j, tail8, v);
    }
}

void keel_f32_layernorm_fwd__avx2(size_t rows, size_t dim, const float *x, size_t x_stride,
                                  float *y, size_t y_stride, const float *gamma,
                                  const float *beta, float eps, float *mean, float *rstd)
{
    const k256_tail t = k256_tail_of(dim % 16);
    const __m256i tail8 = k256_mask8(dim % 8);
    const int variant = (gamma != NULL) | (beta != NULL) << 1;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        float rs;
        const double mean_d = ln_stats(xr, dim, eps, &rs, &t);
        /* mean as a float hi + lo pair (see the scalar kernel) */
        const float hi = (float)mean_d;
        const float lo = (float)(mean_d - (double)hi);
        switch (variant) {
        case 0: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, tail8, 0, 0); break;
        case 1: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, tail8, 1, 0); break;
        case 2: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, tail8, 0, 1); break;
        default: ln_out(dim, xr, yr, gamma, beta, hi, lo, rs, tail8, 1, 1); break;
        }
        if (mean)
            mean[r] = hi;
        if (rstd)
            rstd[r] = rs;
    }
}

/* 8 floats of g = dy * gamma (float) or dy. */
KEEL_INLINE __m256 ln_g8(__m256 dyv, const float *gamma, int hg)
{
    return hg ? _mm256_mul_ps(dyv, _mm256_loadu_ps(gamma)) : dyv;
}

/* Backward sweep 1 over one row. Always Sx = R(u), u = (double)x - (double)m; with want_g also
 * Sg = R((double)g) and Sgu = R((double)g * u). */
KEEL_INLINE void ln_sweep1(size_t dim, const float *dy, const float *x, const float *gamma,
                           float m, double *sx, double *sg, double *sgu, const k256_tail *t,
                           int want_g, int hg)
{
    const size_t full = dim - t->n;
    const __m256d md = _mm256_set1_pd((double)m);
    const __m256d z = _mm256_setzero_pd();
    __m256d x0 = z, x1 = z, x2 = z, x3 = z, g0 = z, g1 = z, g2 = z, g3 = z;
    __m256d p0 = z, p1 = z, p2 = z, p3 = z;
    for (size_t j = 0; j < full; j += 16) {
        const __m256d u0 = _mm256_sub_pd(k256_cvt4(x + j), md);
        const __m256d u1 = _mm256_sub_pd(k256_cvt4(x + j + 4), md);
        const __m256d u2 = _mm256_sub_pd(k256_cvt4(x + j + 8), md);
        const __m256d u3 = _mm256_sub_pd(k256_cvt4(x + j + 12), md);
        x0 = _mm256_add_pd(x0, u0);
        x1 = _mm256_add_pd(x1, u1);
        x2 = _mm256_add_pd(x2, u2);
        x3 = _mm256_add_pd(x3, u3);
        if (want_g) {
            const __m256 ga = ln_g8(_mm256_loadu_ps(dy + j), hg ? gamma + j : NULL, hg);
            const __m256 gb = ln_g8(_mm256_loadu_ps(dy + j + 8), hg ? gamma + j + 8 : NULL, hg);
            const __m256d d0 = k256_lo_pd(ga), d1 = k256_hi_pd(ga);
            const __m256d d2 = k256_lo_pd(gb), d3 = k256_hi_pd(gb);
            g0 = _mm256_add_pd(g0, d0);
            g1 = _mm256_add_pd(g1, d1);
            g2 = _mm256_add_pd(g2, d2);
            g3 = _mm256_add_pd(g3, d3);
            p0 = _mm256_add_pd(p0, _mm256_mul_pd(d0, u0));
            p1 = _mm256_add_pd(p1, _mm256_mul_pd(d1, u1));
            p2 = _mm256_add_pd(p2, _mm256_mul_pd(d2, u2));
            p3 = _mm256_add_pd(p3, _mm256_mul_pd(d3, u3));
        }
    }
    if (t->n) {
        __m256 xa, xb;
        k256_tail_load(t, x + full, &xa, &xb);
        const __m256d u0 = _mm256_sub_pd(k256_lo_pd(xa), md);
        const __m256d u1 = _mm256_sub_pd(k256_hi_pd(xa), md);
        const __m256d u2 = _mm256_sub_pd(k256_lo_pd(xb), md);
        const __m256d u3 = _mm256_sub_pd(k256_hi_pd(xb), md);
        x0 = k256_add_mask(x0, t->d0, u0);
        x1 = k256_add_mask(x1, t->d1, u1);
        x2 = k256_add_mask(x2, t->d2, u2);
        x3 = k256_add_mask(x3, t->d3, u3);
        if (want_g) {
            __m256 ga, gb;
            k256_tail_load(t, dy + full, &ga, &gb);
            if (hg) {
                __m256 ca, cb;
                k256_tail_load(t, gamma + full, &ca, &cb);
                ga = _mm256_mul_ps(ga, ca);
                gb = _mm256_mul_ps(gb, cb);
            }
            /* the masked-out g are 0.0 * 0.0 = +0.0; their g * u terms are masked */
            const __m256d d0 = k256_lo_pd(ga), d1 = k256_hi_pd(ga);
            const __m256d d2 = k256_lo_pd(gb), d3 = k256_hi_pd(gb);
            g0 = _mm256_add_pd(g0, d0);
            g1 = _mm256_add_pd(g1, d1);
            g2 = _mm256_add_pd(g2, d2);
            g3 = _mm256_add_pd(g3, d3);
            p0 = k256_add_mask(p0, t->d0, _mm256_mul_pd(d0, u0));
            p1 = k256_add_mask(p1, t->d1, _mm256_mul_pd(d1, u1));
            p2 = k256_add_mask(p2, t->d2, _mm256_mul_pd(d2, u2));
            p3 = k256_add_mask(p3, t->d3, _mm256_mul_pd(d3, u3));
        }
    }
    *sx = k256_reduce16(x0, x1, x2, x3);
    *sg = k256_reduce16(g0, g1, g2, g3);
    *sgu = k256_reduce16(p0, p1, p2, p3);
}

/* The per-row constants of sweep 2. */
typedef struct ln_row {
    float m, df, rs, a, b;
} ln_row;

/* One step of sweep 2 at column j, 8 floats (full) or the floats of mask k. Pointers of absent
 * arrays are never offset (they may be NULL). */
KEEL_INLINE void ln_step2(size_t j, const float *dy, const float *x, const float *gamma,
                          float *dx, float *dg, float *db, const ln_row *c, __m256i k, int full,
                          int hdx, int acc, int hg, int hdg, int hdb)
{
#define LD(p) (full ? _mm256_loadu_ps((p) + j) : _mm256_maskload_ps((p) + j, k))
#define ST(p, v)                                                                               \
    do {                                                                                       \
        if (full)                                                                              \
            _mm256_storeu_ps((p) + j, v);                                                      \
        else                                                                                   \
            _mm256_maskstore_ps((p) + j, k, v);                                                \
    } while (0)
    const __m256 dyv = LD(dy);
    __m256 xhat = _mm256_sub_ps(_mm256_sub_ps(LD(x), _mm256_set1_ps(c->m)), _mm256_set1_ps(c->df));
    xhat = _mm256_mul_ps(xhat, _mm256_set1_ps(c->rs));
    if (hdx) {
        const __m256 g = hg ? _mm256_mul_ps(dyv, LD(gamma)) : dyv;
        const __m256 t = _mm256_sub_ps(_mm256_sub_ps(g, _mm256_set1_ps(c->a)),
                                       _mm256_mul_ps(xhat, _mm256_set1_ps(c->b)));
        __m256 v = _mm256_mul_ps(_mm256_set1_ps(c->rs), t);
        if (acc)
            v = _mm256_add_ps(LD(dx), v);
        ST(dx, v);
    }
    if (hdg)
        ST(dg, _mm256_add_ps(LD(dg), _mm256_mul_ps(dyv, xhat)));
    if (hdb)
        ST(db, _mm256_add_ps(LD(db), dyv));
#undef LD
#undef ST
}

KEEL_INLINE void ln_sweep2(size_t dim, const float *dy, const float *x, const float *gamma,
                           float *dx, float *dg, float *db, const ln_row *c, int hdx, int acc,
                           int hg, int hdg, int hdb)
{
    size_t j = 0;
    for (; j + 8 <= dim; j += 8)
        ln_step2(j, dy, x, gamma, dx, dg, db, c, _mm256_setzero_si256(), 1, hdx, acc, hg, hdg,
                 hdb);
    if (j < dim)
        ln_step2(j, dy, x, gamma, dx, dg, db, c, k256_mask8(dim - j), 0, hdx, acc, hg, hdg, hdb);
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

void keel_f32_layernorm_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
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
    const k256_tail t = k256_tail_of(dim % 16);
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
                c.m = (float)ln_stats(xr, dim, eps, &c.rs, &t);
            }
            double sx, sg, sgu;
            if (!hdx)
                ln_sweep1(dim, dyr, xr, gamma, c.m, &sx, &sg, &sgu, &t, 0, 0);
            else if (hg)
                ln_sweep1(dim, dyr, xr, gamma, c.m, &sx, &sg, &sgu, &t, 1, 1);
            else
                ln_sweep1(dim, dyr, xr, gamma, c.m, &sx, &sg, &sgu, &t, 1, 0);
            const double delta = sx / n;
            c.a = (float)(sg / n);
            c.b = (float)((double)c.rs * ((sgu - delta * sg) / n));
            c.df = (float)delta;
        }
        sweep2(dim, dyr, xr, gamma, dxr, dgamma_part, dbeta_part, &c);
    }
}
