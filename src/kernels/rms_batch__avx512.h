#ifndef KEEL_KERNELS_RMS_BATCH_AVX512_H
#define KEEL_KERNELS_RMS_BATCH_AVX512_H

#include "batch_rows__avx512.h"

/* RMSNorm's stages of batch_rows__avx512.h (rows of up to 16 floats, eight at a time) for the
 * fused forward and the plain one (px: x alone, res->r NULL); the squares are never -0.0, so a
 * lane's sum may start at its term. */

/* Rows r .. r + 7: h into slot (16 floats a row) and R(h * h). */
KEEL_INLINE void batch_sum(size_t r, const batch_call *c, const keel_f32_res *res, float *slot,
                           batch_stats *st, int hl, int hb, int px)
{
    __m512d s[PIPE_BATCH];
    const batch_rows b = batch_rows_of(res, r);
    for (int i = 0; i < PIPE_BATCH; i++) {
        const __m512 v = batch_row_in(c, &b, slot, r, i, hl, hb, px);
        const __m512d lo = r512_lo(v), hi = r512_hi(v);
        s[i] = _mm512_add_pd(_mm512_mul_pd(lo, lo), _mm512_mul_pd(hi, hi));
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
    (void)mean;
    (void)hbe;
    float rs[PIPE_BATCH];
    _mm256_storeu_ps(rs, st->rstd);
    __asm__("" : "+m"(rs)); /* broadcast from memory (ln_batch__avx512.h) */
    if (rstd)
        _mm256_storeu_ps(rstd + r, st->rstd);
    int streamed = 0;
    for (int i = 0; i < PIPE_BATCH; i++) {
        const __m512 v = _mm512_load_ps(slot + i * 16);
        __m512 t = _mm512_mul_ps(v, _mm512_set1_ps(rs[i]));
        if (hg)
            t = _mm512_mul_ps(t, c->g);
        streamed |= batch_store(c, dim, stream, r + (size_t)i, h, hs, y, ys, v, t, hh);
    }
    return streamed;
}

#endif
