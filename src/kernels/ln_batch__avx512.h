#ifndef KEEL_KERNELS_LN_BATCH_AVX512_H
#define KEEL_KERNELS_LN_BATCH_AVX512_H

#include "batch_rows__avx512.h"

/* LayerNorm's stages of batch_rows__avx512.h (rows of up to 16 floats, eight at a time) for
 * the fused forward and the plain one (px: x alone, res->r NULL). Besides: h is converted to
 * double once, the sum's stage keeping the doubles for the centred one; and a lane's sum starts
 * at its term, not at +0.0 plus it: the lanes and every sum of the tree then differ from
 * kernels.h's only where they are -0.0 and kernels.h's +0.0 (0.0 + -0.0 is +0.0; an add keeps
 * that relation), so R(h) + 0.0 is kernels.h's R(h) (never -0.0); the centred terms (squares)
 * are never -0.0 at all. */

/* Rows r .. r + 7: h into slot (16 floats a row, then its 16 doubles) and the means. */


KEEL_INLINE void batch_sum(size_t r, const batch_call *c, const keel_f32_res *res, float *slot,
                           batch_stats *st, int hl, int hb, int px)
{
    __m512d s[PIPE_BATCH];
    double *d = (double *)(slot + PIPE_BATCH * 16);
    const batch_rows b = batch_rows_of(res, r);
    /* unrolled, s[] stays in registers (keel_profile_loop addlnf 4096 16: 30.1 -> 27.5 us) */
#pragma GCC unroll 8
    for (int i = 0; i < PIPE_BATCH; i++) {
        const __m512 v = batch_row_in(c, &b, slot, r, i, hl, hb, px);
        const __m512d lo = r512_lo(v), hi = r512_hi(v);
        _mm512_store_pd(d + i * 16, lo);
        _mm512_store_pd(d + i * 16 + 8, hi);
        s[i] = _mm512_add_pd(lo, hi);
    }
    st->mean = k512_ln_mean8(_mm512_add_pd(k512_reduce8x8(s), _mm512_setzero_pd()), &c->n);
}

/* The rstds of the batch in slot. */
KEEL_INLINE void batch_mid(const batch_call *c, const float *slot, float eps, batch_stats *st)
{
    __m512d s[PIPE_BATCH];
    double md[PIPE_BATCH];
    const double *d = (const double *)(slot + PIPE_BATCH * 16);
    _mm512_storeu_pd(md, st->mean);
    /* The broadcasts of the rows' statistics below read memory: left to itself the compiler
     * takes each lane out of the register with a permute, and the permutes (one port) cost
     * more than the loads (keel_profile_loop lnf 4096 16: 24.7-24.9 -> 21.1-22.2 us). */
    __asm__("" : "+m"(md));
    for (int i = 0; i < PIPE_BATCH; i++) {
        const __m512d m = _mm512_set1_pd(md[i]);
        const __m512d t0 = _mm512_sub_pd(_mm512_load_pd(d + i * 16), m);
        const __m512d t1 = _mm512_sub_pd(_mm512_load_pd(d + i * 16 + 8), m);
        s[i] = _mm512_add_pd(_mm512_maskz_mul_pd(k512_lo8(c->k), t0, t0),
                             _mm512_maskz_mul_pd(k512_hi8(c->k), t1, t1));
    }
    st->rstd = k512_rstd8(k512_reduce8x8(s), &c->n, eps);
}

/* The batch's outputs (rows r ..) from slot; returns whether a row was streamed. */
KEEL_INLINE int batch_out(size_t r, size_t dim, const batch_call *c, const batch_stats *st,
                          const float *slot, float *h, size_t hs, float *y, size_t ys, float *mean,
                          float *rstd, int stream, int hg, int hbe, int hh)
{
    float hi[PIPE_BATCH], lo[PIPE_BATCH], rs[PIPE_BATCH];
    const __m256 mhi = _mm512_cvtpd_ps(st->mean);
    _mm256_storeu_ps(hi, mhi);
    _mm256_storeu_ps(lo, _mm512_cvtpd_ps(_mm512_sub_pd(st->mean, _mm512_cvtps_pd(mhi))));
    _mm256_storeu_ps(rs, st->rstd);
    __asm__("" : "+m"(hi), "+m"(lo), "+m"(rs)); /* broadcast from memory (batch_mid) */
    if (mean)
        _mm256_storeu_ps(mean + r, mhi);
    if (rstd)
        _mm256_storeu_ps(rstd + r, st->rstd);
    int streamed = 0;
    for (int i = 0; i < PIPE_BATCH; i++) {
        const __m512 v = _mm512_load_ps(slot + i * 16);
        __m512 t = _mm512_sub_ps(_mm512_sub_ps(v, _mm512_set1_ps(hi[i])), _mm512_set1_ps(lo[i]));
        t = _mm512_mul_ps(t, _mm512_set1_ps(rs[i]));
        if (hg)
            t = _mm512_mul_ps(t, c->g);
        if (hbe)
            t = _mm512_add_ps(t, c->b);
        streamed |= batch_store(c, dim, stream, r + (size_t)i, h, hs, y, ys, v, t, hh);
    }
    return streamed;
}

#endif
