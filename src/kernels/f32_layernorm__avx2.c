/* LayerNorm, float32, AVX2: the formulas and reduction order of kernels.h, giving exactly the
 * bits of f32_layernorm__scalar.c. Reductions run 16 floats a step in the four double-lane
 * registers of simd_lanes__avx2.h; elementwise work is 8 floats a step, one rounding per
 * operation as written (no FMA: built with -ffp-contract=off, separate mul and add only).
 * Row grouping, the row pipelines and prefetching as in f32_layernorm__avx512.c. */
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "variants.h"
#include "norm_finish.h"
#include "simd_lanes__avx2.h"
#include "ln_batch__avx2.h"
#include "add_norm_batches.h"

/* The forward's statistics of the nr rows x + i * xs (nr a constant <= K256_GROUP): mean_d[i],
 * rstd_f[i]. With pf (a constant), the centred pass prefetches the next rows pfx + i * xs into
 * L2 and the outputs pfy + i * ys into L1. */
KEEL_INLINE void ln_stats_n(int nr, const float *x, size_t xs, size_t dim, float eps,
                            const k256_tail *t, double *mean, float *rstd, int pf,
                            const float *pfx, const float *pfy, size_t ys)
{
    const size_t full = dim - t->n;
    __m256d s[K256_GROUP][4], m[K256_GROUP];
    for (int i = 0; i < nr; i++)
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = _mm256_setzero_pd();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++)
            for (int q = 0; q < 4; q++)
                s[i][q] = _mm256_add_pd(s[i][q], k256_cvt4(x + i * xs + j + 4 * q));
    for (int i = 0; i < nr; i++) {
        if (t->n) {
            /* the masked-out floats load as +0.0, so their terms are +0.0 already */
            __m256 v0, v1;
            k256_tail_load(t, x + i * xs + full, &v0, &v1);
            s[i][0] = _mm256_add_pd(s[i][0], k256_lo_pd(v0));
            s[i][1] = _mm256_add_pd(s[i][1], k256_hi_pd(v0));
            s[i][2] = _mm256_add_pd(s[i][2], k256_lo_pd(v1));
            s[i][3] = _mm256_add_pd(s[i][3], k256_hi_pd(v1));
        }
        mean[i] = keel_ln_mean(k256_reduce16(s[i][0], s[i][1], s[i][2], s[i][3]), dim);
        m[i] = _mm256_set1_pd(mean[i]);
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = _mm256_setzero_pd();
    }

    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++) {
            for (int q = 0; q < 4; q++) {
                const __m256d d = _mm256_sub_pd(k256_cvt4(x + i * xs + j + 4 * q), m[i]);
                s[i][q] = _mm256_add_pd(s[i][q], _mm256_mul_pd(d, d));
            }
            if (pf) {
                K256_PF_L2(pfx + i * xs + j);
                if (pfy) /* not when y is streamed: the prefetch would fetch its lines */
                    K256_PF_L1(pfy + i * ys + j);
            }
        }
    for (int i = 0; i < nr; i++) {
        if (t->n) {
            __m256 v0, v1;
            k256_tail_load(t, x + i * xs + full, &v0, &v1);
            const __m256d d0 = _mm256_sub_pd(k256_lo_pd(v0), m[i]);
            const __m256d d1 = _mm256_sub_pd(k256_hi_pd(v0), m[i]);
            const __m256d d2 = _mm256_sub_pd(k256_lo_pd(v1), m[i]);
            const __m256d d3 = _mm256_sub_pd(k256_hi_pd(v1), m[i]);
            s[i][0] = k256_add_mask(s[i][0], t->d0, _mm256_mul_pd(d0, d0));
            s[i][1] = k256_add_mask(s[i][1], t->d1, _mm256_mul_pd(d1, d1));
            s[i][2] = k256_add_mask(s[i][2], t->d2, _mm256_mul_pd(d2, d2));
            s[i][3] = k256_add_mask(s[i][3], t->d3, _mm256_mul_pd(d3, d3));
        }
        rstd[i] = keel_ln_rstd(k256_reduce16(s[i][0], s[i][1], s[i][2], s[i][3]), dim, eps);
    }
}

/* y[j .. j + 8) = ((x - hi) - lo) * rs, then * gamma, then + beta (vh, vl, vr: hi, lo, rs
 * broadcast). */
KEEL_INLINE void ln_out8(const float *x, float *y, size_t j, __m256 vh, __m256 vl, __m256 vr,
                         const float *gamma, const float *beta, int hg, int hb, int nt)
{
    __m256 v = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vh), vl);
    v = _mm256_mul_ps(v, vr);
    if (hg)
        v = _mm256_mul_ps(v, _mm256_loadu_ps(gamma + j));
    if (hb)
        v = _mm256_add_ps(v, _mm256_loadu_ps(beta + j));
    k256_store8(y + j, v, nt);
}

/* The same for the last dim % 8 floats, from j (tail8: their mask; never streamed). */
KEEL_INLINE void ln_out_tail(const float *x, float *y, size_t j, __m256 vh, __m256 vl, __m256 vr,
                             const float *gamma, const float *beta, __m256i tail8, int hg, int hb)
{
    __m256 v = _mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(x + j, tail8), vh), vl);
    v = _mm256_mul_ps(v, vr);
    if (hg)
        v = _mm256_mul_ps(v, _mm256_maskload_ps(gamma + j, tail8));
    if (hb)
        v = _mm256_add_ps(v, _mm256_maskload_ps(beta + j, tail8));
    _mm256_maskstore_ps(y + j, tail8, v);
}

/* y = ((x - hi) - lo) * rs, then * gamma, then + beta, 8 floats a step; hg/hb constant. */
KEEL_INLINE void ln_out(size_t dim, const float *x, float *y, const float *gamma,
                        const float *beta, float hi, float lo, float rs, __m256i tail8, int hg,
                        int hb, int nt)
{
    const __m256 vh = _mm256_set1_ps(hi), vl = _mm256_set1_ps(lo), vr = _mm256_set1_ps(rs);
    size_t j = 0;
    for (; j + 8 <= dim; j += 8)
        ln_out8(x, y, j, vh, vl, vr, gamma, beta, hg, hb, nt);
    if (j < dim)
        ln_out_tail(x, y, j, vh, vl, vr, gamma, beta, tail8, hg, hb);
}

/* Statistics and outputs of the nr rows from row r (nr and pf constants); stream: y may be
 * streamed (rows whose start is aligned are). */
KEEL_INLINE void ln_fwd_rows(int nr, int pf, size_t r, size_t rows, size_t dim, const float *x,
                             size_t xs, float *y, size_t ys, const float *gamma,
                             const float *beta, float eps, float *mean, float *rstd,
                             const k256_tail *t, __m256i tail8, int stream)
{
    const float *xr = x + r * xs;
    float *yr = y + r * ys;
    /* prefetch the next group if it is a whole one, else (nothing left to fetch) this one */
    const float *pfx = r + 2 * (size_t)nr <= rows ? xr + (size_t)nr * xs : xr;
    double mean_d[K256_GROUP];
    float rs[K256_GROUP];
    ln_stats_n(nr, xr, xs, dim, eps, t, mean_d, rs, pf, pfx, stream ? NULL : yr, ys);
    for (int i = 0; i < nr; i++) {
        /* mean as a float hi + lo pair (see the scalar kernel) */
        const float hi = (float)mean_d[i];
        const float lo = (float)(mean_d[i] - (double)hi);
        const float *xi = xr + i * xs;
        float *yi = yr + i * ys;
        const int nt = stream && k256_aligned32(yi);
        if (gamma && beta)
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], tail8, 1, 1, nt);
        else if (gamma)
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], tail8, 1, 0, nt);
        else if (beta)
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], tail8, 0, 1, nt);
        else
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], tail8, 0, 0, nt);
        if (mean)
            mean[r + i] = hi;
        if (rstd)
            rstd[r + i] = rs[i];
    }
}

/* ---- the row pipeline ----------------------------------------------------------------------
 * f32_layernorm__avx512.c's: one sweep over j does row t's sum (x from memory, the loads
 * K256_PIPE_AHEAD floats behind their prefetches), row t - 1's centred sum and row t - 2's
 * output (their x rows still in cache), so that reads and writes go to memory together. Each
 * row's arithmetic is ln_stats_n's and ln_out's, in the same order per lane: the same bits.
 * Measured (keel_profile_loop lnf with KEEL_ISA=avx2, 1 thread, fastest call, one row at a
 * time -> pipelined): 4096x4096 8.4 -> 7.5 ms, 1024x8192 3.67 -> 2.89 ms, 4096x1024 1.60 ->
 * 1.18 ms, 4096x768 1.15 -> 0.95 ms; in cache 64x1024 20.9 -> 18.2 us, 512x1024 212 -> 153 us,
 * 128x4096 243 -> 185 us, 2048x256 228 -> 170 us; 128x65536 3.99 -> 3.10 ms but 64x131072
 * 4.95 -> 5.48 ms: the same rows as on AVX-512 take it. */
#define LN_PIPE_MAX_DIM 65536

/* One sweep of the pipeline, each stage optional (do_*, constants in the steady state):
 * xs: the row summed, *sum its R(x); xc, mean_c: the row centred, *cen its R((x - mean)^2);
 * xo, yo, hi, lo, rs, nt: the row written. */
KEEL_INLINE void ln_pipe_sweep(size_t dim, const k256_tail *t, __m256i tail8, int do_sum,
                               const float *xs, double *sum, int do_cen, const float *xc,
                               double mean_c, double *cen, int do_out, const float *xo, float *yo,
                               float hi, float lo, float rs, int nt, const float *gamma,
                               const float *beta, int hg, int hb, const float *pfy)
{
    const size_t full = dim - t->n;
    const __m256d m = _mm256_set1_pd(mean_c);
    const __m256 vh = _mm256_set1_ps(hi), vl = _mm256_set1_ps(lo), vr = _mm256_set1_ps(rs);
    const __m256d z = _mm256_setzero_pd();
    __m256d s0 = z, s1 = z, s2 = z, s3 = z, c0 = z, c1 = z, c2 = z, c3 = z;
    for (size_t j = 0; j < full; j += 16) {
        if (pfy)
            K256_PF_L1(pfy + j);
        if (do_sum) {
            K256_PF_L1(xs + j + K256_PIPE_AHEAD);
            s0 = _mm256_add_pd(s0, k256_cvt4(xs + j));
            s1 = _mm256_add_pd(s1, k256_cvt4(xs + j + 4));
            s2 = _mm256_add_pd(s2, k256_cvt4(xs + j + 8));
            s3 = _mm256_add_pd(s3, k256_cvt4(xs + j + 12));
        }
        if (do_cen) {
            const __m256d d0 = _mm256_sub_pd(k256_cvt4(xc + j), m);
            const __m256d d1 = _mm256_sub_pd(k256_cvt4(xc + j + 4), m);
            const __m256d d2 = _mm256_sub_pd(k256_cvt4(xc + j + 8), m);
            const __m256d d3 = _mm256_sub_pd(k256_cvt4(xc + j + 12), m);
            c0 = _mm256_add_pd(c0, _mm256_mul_pd(d0, d0));
            c1 = _mm256_add_pd(c1, _mm256_mul_pd(d1, d1));
            c2 = _mm256_add_pd(c2, _mm256_mul_pd(d2, d2));
            c3 = _mm256_add_pd(c3, _mm256_mul_pd(d3, d3));
        }
        if (do_out) {
            ln_out8(xo, yo, j, vh, vl, vr, gamma, beta, hg, hb, nt);
            ln_out8(xo, yo, j + 8, vh, vl, vr, gamma, beta, hg, hb, nt);
        }
    }
    if (t->n) { /* the tail, as ln_stats_n's and ln_out's */
        if (do_sum) { /* the masked-out floats load as +0.0, so their terms are +0.0 already */
            __m256 v0, v1;
            k256_tail_load(t, xs + full, &v0, &v1);
            s0 = _mm256_add_pd(s0, k256_lo_pd(v0));
            s1 = _mm256_add_pd(s1, k256_hi_pd(v0));
            s2 = _mm256_add_pd(s2, k256_lo_pd(v1));
            s3 = _mm256_add_pd(s3, k256_hi_pd(v1));
        }
        if (do_cen) {
            __m256 v0, v1;
            k256_tail_load(t, xc + full, &v0, &v1);
            const __m256d d0 = _mm256_sub_pd(k256_lo_pd(v0), m);
            const __m256d d1 = _mm256_sub_pd(k256_hi_pd(v0), m);
            const __m256d d2 = _mm256_sub_pd(k256_lo_pd(v1), m);
            const __m256d d3 = _mm256_sub_pd(k256_hi_pd(v1), m);
            c0 = k256_add_mask(c0, t->d0, _mm256_mul_pd(d0, d0));
            c1 = k256_add_mask(c1, t->d1, _mm256_mul_pd(d1, d1));
            c2 = k256_add_mask(c2, t->d2, _mm256_mul_pd(d2, d2));
            c3 = k256_add_mask(c3, t->d3, _mm256_mul_pd(d3, d3));
        }
        if (do_out) {
            size_t j = full;
            if (j + 8 <= dim) {
                ln_out8(xo, yo, j, vh, vl, vr, gamma, beta, hg, hb, nt);
                j += 8;
            }
            if (j < dim)
                ln_out_tail(xo, yo, j, vh, vl, vr, gamma, beta, tail8, hg, hb);
        }
    }
    if (do_sum)
        *sum = k256_reduce16(s0, s1, s2, s3);
    if (do_cen)
        *cen = k256_reduce16(c0, c1, c2, c3);
}

/* The pipeline over all rows: sweep t sums row t, centres row t - 1 and writes row t - 2.
 * Stage pointers of absent rows are never formed (row 0's stand in). */
KEEL_INLINE void ln_fwd_piped(size_t rows, size_t dim, const float *x, size_t xs, float *y,
                              size_t ys, const float *gamma, const float *beta, float eps,
                              float *mean, float *rstd, const k256_tail *t, __m256i tail8,
                              int stream, int hg, int hb)
{
    double mean_c = 0.0, mean_o = 0.0; /* of the rows centred and written next */
    float rs_o = 0.0f;
    for (size_t r = 0; r < rows + 2; r++) {
        const int do_sum = r < rows, do_cen = r >= 1 && r - 1 < rows, do_out = r >= 2;
        const float *xsum = x + (do_sum ? r : 0) * xs, *xc = x + (do_cen ? r - 1 : 0) * xs;
        const float *xo = x + (do_out ? r - 2 : 0) * xs;
        float *yo = y + (do_out ? r - 2 : 0) * ys;
        /* the written row's mean as a float hi + lo pair (see the scalar kernel) */
        const float hi = (float)mean_o, lo = (float)(mean_o - (double)hi);
        const int nt = stream && k256_aligned32(yo);
        /* the y row written next, fetched now when it is not streamed
         * (f32_layernorm__avx512.c's ln_fwd_piped) */
        const float *yn = y + (do_cen ? r - 1 : 0) * ys;
        const float *pfy = do_cen && !(stream && k256_aligned32(yn)) ? yn : NULL;
        double sum = 0.0, cen = 0.0;
        if (do_sum && do_cen && do_out) /* every sweep but the first two and the last two */
            ln_pipe_sweep(dim, t, tail8, 1, xsum, &sum, 1, xc, mean_c, &cen, 1, xo, yo, hi, lo,
                          rs_o, nt, gamma, beta, hg, hb, pfy);
        else
            ln_pipe_sweep(dim, t, tail8, do_sum, xsum, &sum, do_cen, xc, mean_c, &cen, do_out, xo,
                          yo, hi, lo, rs_o, nt, gamma, beta, hg, hb, pfy);
        if (do_cen) { /* row r - 1's statistics are complete: it is written next */
            mean_o = mean_c;
            rs_o = keel_ln_rstd(cen, dim, eps);
            if (mean)
                mean[r - 1] = (float)mean_o;
            if (rstd)
                rstd[r - 1] = rs_o;
        }
        if (do_sum)
            mean_c = keel_ln_mean(sum, dim);
    }
}

void keel_f32_layernorm_fwd__avx2(size_t rows, size_t dim, const float *x, size_t x_stride,
                                  float *y, size_t y_stride, const float *gamma,
                                  const float *beta, float eps, float *mean, float *rstd)
{
    const k256_tail t = k256_tail_of(dim % 16);
    const __m256i tail8 = k256_mask8(dim % 8);
#define ROWS(nr, pf)                                                                           \
    ln_fwd_rows(nr, pf, r, rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd, \
                &t, tail8, stream)
#define PIPED(hg, hb)                                                                          \
    ln_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd, &t, tail8, \
                 stream, hg, hb)
    const int stream = k256_want_stream(rows, y_stride);
    size_t r = 0;
    if (dim < K256_GROUP_BELOW) {
        if (dim <= PIPE_BATCH_MAX && rows >= PIPE_BATCH)
            r = plain_fwd_batches_any(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean,
                                      rstd, stream);
        for (; r + K256_GROUP <= rows; r += K256_GROUP)
            ROWS(K256_GROUP, 0);
        for (; r < rows; r++)
            ROWS(1, 0);
    } else if (dim <= LN_PIPE_MAX_DIM) {
        if (gamma && beta)
            PIPED(1, 1);
        else if (gamma)
            PIPED(1, 0);
        else if (beta)
            PIPED(0, 1);
        else
            PIPED(0, 0);
    } else if (k256_want_prefetch(rows, dim, x_stride)) {
        for (; r < rows; r++)
            ROWS(1, 1);
    } else {
        for (; r < rows; r++)
            ROWS(1, 0);
    }
    if (stream)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
#undef ROWS
#undef PIPED
}

/* ---- backward ----------------------------------------------------------------------------
 * Sweep 1 keeps 12 accumulators a row (of 16 registers), so it takes one row at a time; for
 * small rows sweep 2 takes K256_GROUP rows at once, updating the dgamma/dbeta partials of a
 * column chunk once for the group, adding the rows in increasing order (kernels.h). Rows of
 * K256_GROUP_BELOW floats or more with their statistics given go through the row pipeline
 * (ln_bwd_piped, below) instead. */

/* The per-row constants of sweep 2. */
typedef struct ln_row {
    float m, df, rs, a, b;
} ln_row;

/* 8 floats of g = dy * gamma (float) or dy. */
KEEL_INLINE __m256 ln_g8(__m256 dyv, const float *gamma, int hg)
{
    return hg ? _mm256_mul_ps(dyv, _mm256_loadu_ps(gamma)) : dyv;
}

/* Sweep 1's sums of one row: Sx = R(u), u = (double)x - (double)m; with want_g also
 * Sg = R((double)g) and Sgu = R((double)g * u). A step at a time (ln_s1_step), so that the
 * rows one at a time and the row pipeline (below) run the same arithmetic. */
typedef struct ln_s1 {
    __m256d md, x0, x1, x2, x3, g0, g1, g2, g3, p0, p1, p2, p3;
} ln_s1;

KEEL_INLINE ln_s1 ln_s1_begin(float m)
{
    const __m256d z = _mm256_setzero_pd();
    const ln_s1 a = {_mm256_set1_pd((double)m), z, z, z, z, z, z, z, z, z, z, z, z};
    return a;
}

/* Sweep 1 at column j of the row x, dy: 16 floats (full) or the row's tail t (the masked-out
 * floats load as +0.0; the terms of lanes without an element are masked out). */
KEEL_INLINE void ln_s1_step(ln_s1 *a, const float *x, const float *dy, const float *gamma,
                            size_t j, const k256_tail *t, int full, int want_g, int hg)
{
    if (full) {
        const __m256d u0 = _mm256_sub_pd(k256_cvt4(x + j), a->md);
        const __m256d u1 = _mm256_sub_pd(k256_cvt4(x + j + 4), a->md);
        const __m256d u2 = _mm256_sub_pd(k256_cvt4(x + j + 8), a->md);
        const __m256d u3 = _mm256_sub_pd(k256_cvt4(x + j + 12), a->md);
        a->x0 = _mm256_add_pd(a->x0, u0);
        a->x1 = _mm256_add_pd(a->x1, u1);
        a->x2 = _mm256_add_pd(a->x2, u2);
        a->x3 = _mm256_add_pd(a->x3, u3);
        if (want_g) {
            const __m256 ga = ln_g8(_mm256_loadu_ps(dy + j), hg ? gamma + j : NULL, hg);
            const __m256 gb = ln_g8(_mm256_loadu_ps(dy + j + 8), hg ? gamma + j + 8 : NULL, hg);
            const __m256d d0 = k256_lo_pd(ga), d1 = k256_hi_pd(ga);
            const __m256d d2 = k256_lo_pd(gb), d3 = k256_hi_pd(gb);
            a->g0 = _mm256_add_pd(a->g0, d0);
            a->g1 = _mm256_add_pd(a->g1, d1);
            a->g2 = _mm256_add_pd(a->g2, d2);
            a->g3 = _mm256_add_pd(a->g3, d3);
            a->p0 = _mm256_add_pd(a->p0, _mm256_mul_pd(d0, u0));
            a->p1 = _mm256_add_pd(a->p1, _mm256_mul_pd(d1, u1));
            a->p2 = _mm256_add_pd(a->p2, _mm256_mul_pd(d2, u2));
            a->p3 = _mm256_add_pd(a->p3, _mm256_mul_pd(d3, u3));
        }
        return;
    }
    __m256 xa, xb;
    k256_tail_load(t, x + j, &xa, &xb);
    const __m256d u0 = _mm256_sub_pd(k256_lo_pd(xa), a->md);
    const __m256d u1 = _mm256_sub_pd(k256_hi_pd(xa), a->md);
    const __m256d u2 = _mm256_sub_pd(k256_lo_pd(xb), a->md);
    const __m256d u3 = _mm256_sub_pd(k256_hi_pd(xb), a->md);
    a->x0 = k256_add_mask(a->x0, t->d0, u0);
    a->x1 = k256_add_mask(a->x1, t->d1, u1);
    a->x2 = k256_add_mask(a->x2, t->d2, u2);
    a->x3 = k256_add_mask(a->x3, t->d3, u3);
    if (want_g) {
        __m256 ga, gb;
        k256_tail_load(t, dy + j, &ga, &gb);
        if (hg) {
            __m256 ca, cb;
            k256_tail_load(t, gamma + j, &ca, &cb);
            ga = _mm256_mul_ps(ga, ca);
            gb = _mm256_mul_ps(gb, cb);
        }
        /* the masked-out g are 0.0 * 0.0 = +0.0; their g * u terms are masked */
        const __m256d d0 = k256_lo_pd(ga), d1 = k256_hi_pd(ga);
        const __m256d d2 = k256_lo_pd(gb), d3 = k256_hi_pd(gb);
        a->g0 = _mm256_add_pd(a->g0, d0);
        a->g1 = _mm256_add_pd(a->g1, d1);
        a->g2 = _mm256_add_pd(a->g2, d2);
        a->g3 = _mm256_add_pd(a->g3, d3);
        a->p0 = k256_add_mask(a->p0, t->d0, _mm256_mul_pd(d0, u0));
        a->p1 = k256_add_mask(a->p1, t->d1, _mm256_mul_pd(d1, u1));
        a->p2 = k256_add_mask(a->p2, t->d2, _mm256_mul_pd(d2, u2));
        a->p3 = k256_add_mask(a->p3, t->d3, _mm256_mul_pd(d3, u3));
    }
}

/* The row constants of kernels.h from sweep 1's sums into c (m and rs already there). */
KEEL_INLINE void ln_s1_end(const ln_s1 *a, size_t dim, int want_g, ln_row *c)
{
    const double n = (double)dim;
    const double delta = k256_reduce16(a->x0, a->x1, a->x2, a->x3) / n;
    c->df = (float)delta;
    if (want_g) {
        const double Sg = k256_reduce16(a->g0, a->g1, a->g2, a->g3);
        const double Sgu = k256_reduce16(a->p0, a->p1, a->p2, a->p3);
        c->a = (float)(Sg / n);
        c->b = (float)((double)c->rs * ((Sgu - delta * Sg) / n));
    }
}

/* Sweep 1 over one row, then its constants into c (m and rs already there). */
KEEL_INLINE void ln_sweep1(size_t dim, const float *dy, const float *x, const float *gamma,
                           ln_row *c, const k256_tail *t, int want_g, int hg)
{
    const size_t full = dim - t->n;
    ln_s1 a = ln_s1_begin(c->m);
    for (size_t j = 0; j < full; j += 16)
        ln_s1_step(&a, x, dy, gamma, j, t, 1, want_g, hg);
    if (t->n)
        ln_s1_step(&a, x, dy, gamma, full, t, 0, want_g, hg);
    ln_s1_end(&a, dim, want_g, c);
}

/* Where sweep 2 prefetches: the next group's rows (NULL: nowhere). */
typedef struct ln_pf {
    const float *x, *dy;
    float *dx;
    int nt; /* stream dx (full steps) */
} ln_pf;

/* One step of sweep 2 at column j over the nr rows (not a constant), 8 floats (full) or the
 * floats of mask k. Pointers of absent arrays are never offset (they may be NULL). */
KEEL_INLINE void ln_step2(int nr, size_t j, const float *dy, size_t dys, const float *x,
                          size_t xs, const float *gamma, float *dx, size_t dxs, float *dg,
                          float *db, const ln_row *c, __m256i k, int full, int hdx, int acc,
                          int hg, int hdg, int hdb, int nt)
{
#define LD(p) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k))
#define ST(p, v)                                                                               \
    do {                                                                                       \
        if (full)                                                                              \
            _mm256_storeu_ps(p, v);                                                            \
        else                                                                                   \
            _mm256_maskstore_ps(p, k, v);                                                      \
    } while (0)
    const __m256 gam = hdx && hg ? LD(gamma + j) : _mm256_setzero_ps();
    __m256 dgv = hdg ? LD(dg + j) : _mm256_setzero_ps();
    __m256 dbv = hdb ? LD(db + j) : _mm256_setzero_ps();
    for (int i = 0; i < nr; i++) {
        const __m256 dyv = LD(dy + i * dys + j);
        __m256 xhat = _mm256_sub_ps(_mm256_sub_ps(LD(x + i * xs + j), _mm256_set1_ps(c[i].m)),
                                    _mm256_set1_ps(c[i].df));
        xhat = _mm256_mul_ps(xhat, _mm256_set1_ps(c[i].rs));
        if (hdx) {
            const __m256 g = hg ? _mm256_mul_ps(dyv, gam) : dyv;
            const __m256 t = _mm256_sub_ps(_mm256_sub_ps(g, _mm256_set1_ps(c[i].a)),
                                           _mm256_mul_ps(xhat, _mm256_set1_ps(c[i].b)));
            __m256 v = _mm256_mul_ps(_mm256_set1_ps(c[i].rs), t);
            if (acc)
                v = _mm256_add_ps(LD(dx + i * dxs + j), v);
            if (full && nt)
                _mm256_stream_ps(dx + i * dxs + j, v);
            else
                ST(dx + i * dxs + j, v);
        }
        if (hdg)
            dgv = _mm256_add_ps(dgv, _mm256_mul_ps(dyv, xhat));
        if (hdb)
            dbv = _mm256_add_ps(dbv, dyv);
    }
    if (hdg)
        ST(dg + j, dgv);
    if (hdb)
        ST(db + j, dbv);
#undef LD
#undef ST
}

KEEL_INLINE void ln_sweep2(int nr, size_t dim, const float *dy, size_t dys, const float *x,
                           size_t xs, const float *gamma, float *dx, size_t dxs, float *dg,
                           float *db, const ln_row *c, const ln_pf *pf, int hdx, int acc,
                           int hg, int hdg, int hdb)
{
    const __m256i all = _mm256_set1_epi32(-1);
    size_t j = 0;
    for (; j + 16 <= dim; j += 16) {
        ln_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, all, 1, hdx, acc, hg, hdg, hdb, pf->nt);
        ln_step2(nr, j + 8, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, all, 1, hdx, acc, hg, hdg,
                 hdb, pf->nt);
        if (pf->x) /* one cache line of each of the next group's rows */
            for (int i = 0; i < nr; i++) {
                K256_PF_L2(pf->x + i * xs + j);
                K256_PF_L2(pf->dy + i * dys + j);
                if (hdx && !pf->nt)
                    K256_PF_L2(pf->dx + i * dxs + j);
            }
    }
    if (j + 8 <= dim) {
        ln_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, all, 1, hdx, acc, hg, hdg, hdb, pf->nt);
        j += 8;
    }
    if (j < dim)
        ln_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, k256_mask8(dim - j), 0, hdx,
                 acc, hg, hdg, hdb, 0);
}

/* Sweep 2 for the 5 flags (dx, accumulate, gamma, dgamma, dbeta), each a constant. */
typedef void (*ln_sweep2_fn)(int, size_t, const float *, size_t, const float *, size_t,
                             const float *, float *, size_t, float *, float *, const ln_row *,
                             const ln_pf *);
#define LN_SWEEP2_VARIANT(i)                                                                   \
    static void ln_sweep2_##i(int nr, size_t dim, const float *dy, size_t dys, const float *x, \
                              size_t xs, const float *gamma, float *dx, size_t dxs, float *dg, \
                              float *db, const ln_row *c, const ln_pf *pf)                     \
    {                                                                                          \
        ln_sweep2(nr, dim, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, pf, (i) & 1,             \
                  ((i) >> 1) & 1, ((i) >> 2) & 1, ((i) >> 3) & 1, ((i) >> 4) & 1);            \
    }
KEEL_EACH32(LN_SWEEP2_VARIANT)
static const ln_sweep2_fn ln_sweep2_table[32] = {KEEL_LIST32(ln_sweep2_)};

/* Statistics (given or recomputed) and sweep 1 of row r into c. */
static void ln_bwd_row_stats(size_t r, size_t dim, const float *dy, size_t dys, const float *x,
                             size_t xs, const float *mean, const float *rstd,
                             const float *gamma, float eps, int hdx, const k256_tail *t,
                             ln_row *c)
{
    const float *xr = x + r * xs, *dyr = dy + r * dys;
    if (mean) {
        c->m = mean[r];
        c->rs = rstd[r];
    } else {
        double m;
        ln_stats_n(1, xr, 0, dim, eps, t, &m, &c->rs, 0, NULL, NULL, 0);
        c->m = (float)m;
    }
    if (!hdx)
        ln_sweep1(dim, dyr, xr, gamma, c, t, 0, 0);
    else if (gamma)
        ln_sweep1(dim, dyr, xr, gamma, c, t, 1, 1);
    else
        ln_sweep1(dim, dyr, xr, gamma, c, t, 1, 0);
}

/* Whether the dx rows r .. r + nr - 1 all start 32-byte aligned (streamable). */
KEEL_INLINE int ln_dx_aligned(const float *dx, size_t dxs, size_t r, int nr)
{
    for (int i = 0; i < nr; i++)
        if (((uintptr_t)(dx + (r + (size_t)i) * dxs) & 31) != 0)
            return 0;
    return 1;
}

/* ---- the backward's row pipeline -----------------------------------------------------------
 * f32_layernorm__avx512.c's: with the statistics given, one sweep over j does row t's sweep 1
 * (x and dy from memory, the loads K256_PIPE_AHEAD floats behind their prefetches) and row
 * t - 1's sweep 2 (its x and dy still in cache, dx written or streamed, the partials updated),
 * so that reads and writes go to memory together. Each row's arithmetic is ln_sweep1's and
 * ln_step2's with one row, and sweep 2 still takes the rows in increasing order: the same bits.
 * Measured (keel_profile_loop lnb with KEEL_ISA=avx2, 1 thread, fastest call, one row at a time
 * -> pipelined): 4096x4096 17.3-17.8 -> 13.4-13.9 ms, 1024x8192 9.4-10.0 -> 7.6-7.8 ms, 4096x1024
 * 3.39 -> 2.67-2.79 ms, 4096x768 2.58 -> 1.94-1.99 ms, 4096x1000 3.41 -> 2.53 ms; in cache
 * 256x1024 255 -> 209 us, 64x4096 297 -> 224 us, 2048x256 443 -> 349 us; 128x65536 11.3 -> 8.3
 * ms, 8x1048576 17.8 -> 13.1 ms; keel bench --rows 4096 --dim 4096 --threads 1: 0.58-0.59 of the
 * copy floor -> 0.74-0.76. The same calls as on AVX-512 take it. */

/* One sweep of the pipeline, each stage optional (do1, do2: constants in the steady state):
 * x1, dy1, a: the row of sweep 1 and its sums; c, x2, dy2, dx2, nt: the row of sweep 2, its
 * constants and whether dx is streamed. tail8: the mask of the last dim % 8 floats. */
KEEL_INLINE void ln_bwd_pipe_sweep(size_t dim, const k256_tail *t, __m256i tail8, int do1,
                                   ln_s1 *a, const float *x1, const float *dy1, int do2,
                                   const ln_row *c, const float *x2, const float *dy2, float *dx2,
                                   int nt, const float *gamma, float *dg, float *db, int hdx,
                                   int acc, int hg, int hdg, int hdb)
{
    const __m256i all = _mm256_set1_epi32(-1);
    const size_t full = dim - t->n;
    for (size_t j = 0; j < full; j += 16) {
        if (do1) {
            K256_PF_L1(x1 + j + K256_PIPE_AHEAD);
            K256_PF_L1(dy1 + j + K256_PIPE_AHEAD); /* sweep 2 reads dy even when sweep 1 does not */
            ln_s1_step(a, x1, dy1, gamma, j, t, 1, hdx, hg);
        }
        if (do2) {
            if (hdx && !nt) /* the lines of dx stored (or added to) normally */
                K256_PF_L1(dx2 + j + K256_PIPE_AHEAD);
            ln_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, db, c, all, 1, hdx, acc, hg, hdg,
                     hdb, nt);
            ln_step2(1, j + 8, dy2, 0, x2, 0, gamma, dx2, 0, dg, db, c, all, 1, hdx, acc, hg, hdg,
                     hdb, nt);
        }
    }
    if (t->n) { /* the tail, as ln_sweep1's and ln_sweep2's */
        if (do1)
            ln_s1_step(a, x1, dy1, gamma, full, t, 0, hdx, hg);
        if (do2) {
            size_t j = full;
            if (j + 8 <= dim) {
                ln_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, db, c, all, 1, hdx, acc, hg, hdg,
                         hdb, nt);
                j += 8;
            }
            if (j < dim)
                ln_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, db, c, tail8, 0, hdx, acc, hg,
                         hdg, hdb, 0);
        }
    }
}

/* The pipeline over all rows (mean and rstd given; dx or dgamma wanted): sweep t runs row t's
 * sweep 1 and row t - 1's sweep 2. Row pointers of absent rows are never formed (row 0's stand
 * in). stream: dx rows that start aligned are streamed. */
KEEL_INLINE void ln_bwd_piped(size_t rows, size_t dim, const float *dy, size_t dys,
                              const float *x, size_t xs, const float *mean, const float *rstd,
                              const float *gamma, float *dx, size_t dxs, float *dg, float *db,
                              int stream, int hdx, int acc, int hg, int hdg, int hdb)
{
    const k256_tail t = k256_tail_of(dim % 16);
    const __m256i tail8 = k256_mask8(dim % 8);
    ln_row c = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f}; /* of the row in sweep 2 */
    for (size_t r = 0; r <= rows; r++) {
        const int do1 = r < rows, do2 = r >= 1;
        const size_t r1 = do1 ? r : 0, r2 = do2 ? r - 1 : 0;
        float *dx2 = hdx ? dx + r2 * dxs : NULL;
        const int nt = do2 && stream && k256_aligned32(dx2);
        ln_s1 a = ln_s1_begin(do1 ? mean[r] : 0.0f);
        if (do1 && do2) /* every sweep but the first and the last */
            ln_bwd_pipe_sweep(dim, &t, tail8, 1, &a, x + r1 * xs, dy + r1 * dys, 1, &c,
                              x + r2 * xs, dy + r2 * dys, dx2, nt, gamma, dg, db, hdx, acc, hg,
                              hdg, hdb);
        else
            ln_bwd_pipe_sweep(dim, &t, tail8, do1, &a, x + r1 * xs, dy + r1 * dys, do2, &c,
                              x + r2 * xs, dy + r2 * dys, dx2, nt, gamma, dg, db, hdx, acc, hg,
                              hdg, hdb);
        if (do1) { /* row r's constants: it is swept twice next */
            c.m = mean[r];
            c.rs = rstd[r];
            ln_s1_end(&a, dim, hdx, &c);
        }
    }
}

#define NORM_BWD_PIPED_LN
#include "norm_bwd_piped_tables.h"

void keel_f32_layernorm_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                  const float *x, size_t x_stride, const float *mean,
                                  const float *rstd, const float *gamma, float eps, float *dx,
                                  size_t dx_stride, int dx_flags, float *dgamma_part,
                                  float *dbeta_part)
{
    const int hdx = dx != NULL, acc = (dx_flags & KEEL_KBWD_ACCUMULATE) != 0;
    /* streaming stores of dx when told dx spans far beyond the caches (never with accumulate) */
    const int stream = hdx && !acc && (dx_flags & KEEL_KBWD_STREAM);
    const int need_xhat = hdx || dgamma_part; /* only dbeta: no statistics needed at all */
    const int idx = hdx | (hdx && acc) << 1 | (gamma != NULL) << 2 | (dgamma_part != NULL) << 3 |
                    (dbeta_part != NULL) << 4;
    const ln_sweep2_fn sweep2 = ln_sweep2_table[idx];
    const k256_tail t = k256_tail_of(dim % 16);
    const size_t group = dim < K256_GROUP_BELOW ? K256_GROUP : 1;
    const int pf = (dx_flags & KEEL_KBWD_PREFETCH) || k256_want_prefetch(rows, dim, x_stride);
    /* the row pipeline: the statistics given, and dx or dgamma wanted (else there is no
     * sweep 1); in cache or not */
    if (need_xhat && mean && rstd && dim >= K256_GROUP_BELOW) {
        ln_piped_table[idx](rows, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, dx,
                            dx_stride, dgamma_part, dbeta_part, stream);
        if (stream)
            _mm_sfence(); /* the streamed stores are visible before the call returns */
        return;
    }
    for (size_t r = 0; r < rows;) {
        const int nr = (int)(rows - r < group ? rows - r : group);
        ln_row c[K256_GROUP] = {{0.0f, 0.0f, 0.0f, 0.0f, 0.0f}};
        if (need_xhat)
            for (int i = 0; i < nr; i++)
                ln_bwd_row_stats(r + i, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, eps,
                                 hdx, &t, c + i);
        /* prefetch the next group while sweep 2 works in cache, when it is a whole one */
        ln_pf p = {NULL, NULL, NULL, stream && ln_dx_aligned(dx, dx_stride, r, nr)};
        if (pf && r + 2 * (size_t)nr <= rows) {
            p.x = x + (r + nr) * x_stride;
            p.dy = dy + (r + nr) * dy_stride;
            p.dx = hdx ? dx + (r + nr) * dx_stride : NULL;
        }
        sweep2(nr, dim, dy + r * dy_stride, dy_stride, x + r * x_stride, x_stride, gamma,
               hdx ? dx + r * dx_stride : NULL, dx_stride, dgamma_part, dbeta_part, c, &p);
        r += (size_t)nr;
    }
    if (stream)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
