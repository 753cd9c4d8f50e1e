#ifndef KEEL_KERNELS_RMS_BATCH_AVX512_H
#define KEEL_KERNELS_RMS_BATCH_AVX512_H

#include "batch_rows__avx512.h"

/* RMSNorm's stages of batch_rows__avx512.h (rows of up to PIPE_BATCH_MAX floats, eight at
 * a time) for the fused forward and the plain one (px: x alone, res->r NULL); the squares are
 * never -0.0, so a lane's sum may start at its first term, and the +0.0 of a lane beyond the
 * row's tail leaves it as it is. Each lane adds a row's vectors in their order, the low and the
 * high halves apart, and the tree starts with low + high: the order of kernels.h. */

/* Rows r .. r + 7: h into slot (batch_row floats a row) and R(h * h). */
KEEL_INLINE void batch_sum(size_t r, const batch_call *c, const keel_f32_res *res, float *slot,
                           batch_stats *st, int hl, int hb, int px)
{
    __m512d s[PIPE_BATCH];
    const batch_rows b = batch_rows_of(res, r);
    for (int i = 0; i < PIPE_BATCH; i++) {
        __m512d slo = _mm512_setzero_pd(), shi = slo;
        for (int q = 0; q < c->nv; q++) {
            const __m512 v = batch_row_in(c, &b, slot, r, i, q, hl, hb, px);
            const kr_d16 vd = kr_widen(v);
            const __m512d lo = vd.lo, hi = vd.hi;
            const __m512d p0 = _mm512_mul_pd(lo, lo), p1 = _mm512_mul_pd(hi, hi);
            slo = q ? _mm512_add_pd(slo, p0) : p0;
            shi = q ? _mm512_add_pd(shi, p1) : p1;
        }
        s[i] = _mm512_add_pd(slo, shi);
    }
    st->mean = k512_reduce8x8(s);
}

KEEL_INLINE void batch_mid(const batch_call *c, const float *slot, float eps, batch_stats *st)
{
    (void)slot;
    st->rstd = k512_rms_rstd8(st->mean, &c->n, eps);
}

/* The batch's outputs (rows r ..) from slot; returns whether a row was streamed. */
KEEL_INLINE int batch_out(size_t r, size_t dim, const batch_call *c, const batch_stats *st,
                          const float *slot, float *h, size_t hs, float *y, size_t ys, float *mean,
                          float *rstd, int stream, int hg, int hbe, int hh)
{
    (void)dim;
    (void)mean;
    (void)hbe;
    float rs[PIPE_BATCH];
    _mm256_storeu_ps(rs, st->rstd);
    __asm__("" : "+m"(rs)); /* broadcast from memory (ln_batch__avx512.h) */
    if (rstd)
        _mm256_storeu_ps(rstd + r, st->rstd);
    int streamed = 0;
    for (int i = 0; i < PIPE_BATCH; i++) {
        const size_t ri = r + (size_t)i;
        const int nt = batch_nt(c, stream, ri, h, hs, y, ys, hh);
        streamed |= nt;
        for (int q = 0; q < c->nv; q++) {
            const __m512 v = _mm512_load_ps(slot + i * batch_row(c) + 16 * q);
            __m512 t = _mm512_mul_ps(v, _mm512_set1_ps(rs[i]));
            if (hg)
                t = _mm512_mul_ps(t, c->g[q]);
            batch_store(c, q, nt, ri, h, hs, y, ys, v, t, hh);
        }
    }
    return streamed;
}

#endif
