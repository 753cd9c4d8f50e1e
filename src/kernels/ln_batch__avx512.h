#ifndef KEEL_KERNELS_LN_BATCH_AVX512_H
#define KEEL_KERNELS_LN_BATCH_AVX512_H

#include "batch_rows__avx512.h"

/* LayerNorm's stages of batch_rows__avx512.h (rows of up to PIPE_BATCH_MAX floats, eight at
 * a time) for the fused forward and the plain one (px: x alone, res->r NULL). Besides: h is
 * converted to double once, the sum's stage keeping the doubles for the centred one; and a
 * lane's sum starts at its first term, not at +0.0 plus it: the lanes and every sum of the tree
 * then differ from kernels.h's only where they are -0.0 and kernels.h's +0.0 (0.0 + -0.0 is
 * +0.0; an add keeps that relation, and so does adding the +0.0 of a lane beyond the row's
 * tail where kernels.h leaves the lane as it is), so R(h) + 0.0 is kernels.h's R(h) (never
 * -0.0); the centred terms (squares) are never -0.0 at all. Each lane adds a row's vectors in
 * their order, the low and the high halves apart, and the tree starts with low + high: the
 * order of kernels.h. */

/* Rows r .. r + 7: h into slot (batch_row floats a row, then as many doubles) and the means. */
KEEL_INLINE void batch_sum(size_t r, const batch_call *c, const keel_f32_res *res, float *slot,
                           batch_stats *st, int hl, int hb, int px)
{
    __m512d s[PIPE_BATCH];
    double *d = (double *)(slot + PIPE_BATCH * batch_row(c));
    const batch_rows b = batch_rows_of(res, r);
    /* unrolled, s[] stays in registers (keel_profile_loop addlnf 4096 16: 30.1 -> 27.5 us) */
#pragma GCC unroll 8
    for (int i = 0; i < PIPE_BATCH; i++) {
        __m512d slo = _mm512_setzero_pd(), shi = slo;
        for (int q = 0; q < c->nv; q++) {
            const __m512 v = batch_row_in(c, &b, slot, r, i, q, hl, hb, px);
            const kr_d16 vd = kr_widen(v);
            const __m512d lo = vd.lo, hi = vd.hi;
            _mm512_store_pd(d + i * batch_row(c) + 16 * q, lo);
            _mm512_store_pd(d + i * batch_row(c) + 16 * q + 8, hi);
            slo = q ? _mm512_add_pd(slo, lo) : lo;
            shi = q ? _mm512_add_pd(shi, hi) : hi;
        }
        s[i] = _mm512_add_pd(slo, shi);
    }
    st->mean = k512_ln_mean8(_mm512_add_pd(k512_reduce8x8(s), _mm512_setzero_pd()), &c->n);
}

/* The rstds of the batch in slot. */
KEEL_INLINE void batch_mid(const batch_call *c, const float *slot, float eps, batch_stats *st)
{
    __m512d s[PIPE_BATCH];
    double md[PIPE_BATCH];
    const double *d = (const double *)(slot + PIPE_BATCH * batch_row(c));
    _mm512_storeu_pd(md, st->mean);
    /* The broadcasts of the rows' statistics below read memory: left to itself the compiler
     * takes each lane out of the register with a permute, and the permutes (one port) cost
     * more than the loads (keel_profile_loop lnf 4096 16: 24.7-24.9 -> 21.1-22.2 us). */
    __asm__("" : "+m"(md));
    for (int i = 0; i < PIPE_BATCH; i++) {
        const __m512d m = _mm512_set1_pd(md[i]);
        __m512d slo = _mm512_setzero_pd(), shi = slo;
        for (int q = 0; q < c->nv; q++) {
            const __mmask16 k = batch_kq(c, q);
            const __m512d t0 = _mm512_sub_pd(_mm512_load_pd(d + i * batch_row(c) + 16 * q), m);
            const __m512d t1 = _mm512_sub_pd(_mm512_load_pd(d + i * batch_row(c) + 16 * q + 8), m);
            const __m512d p0 = _mm512_maskz_mul_pd(k512_lo8(k), t0, t0);
            const __m512d p1 = _mm512_maskz_mul_pd(k512_hi8(k), t1, t1);
            slo = q ? _mm512_add_pd(slo, p0) : p0;
            shi = q ? _mm512_add_pd(shi, p1) : p1;
        }
        s[i] = _mm512_add_pd(slo, shi);
    }
    st->rstd = k512_rstd8(k512_reduce8x8(s), &c->n, eps);
}

/* The batch's outputs (rows r ..) from slot; returns whether a row was streamed. */
KEEL_INLINE int batch_out(size_t r, size_t dim, const batch_call *c, const batch_stats *st,
                          const float *slot, float *h, size_t hs, float *y, size_t ys, float *mean,
                          float *rstd, int stream, int hg, int hbe, int hh)
{
    (void)dim;
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
        const size_t ri = r + (size_t)i;
        const int nt = batch_nt(c, stream, ri, h, hs, y, ys, hh);
        streamed |= nt;
        for (int q = 0; q < c->nv; q++) {
            const __m512 v = _mm512_load_ps(slot + i * batch_row(c) + 16 * q);
            __m512 t = _mm512_sub_ps(_mm512_sub_ps(v, _mm512_set1_ps(hi[i])), _mm512_set1_ps(lo[i]));
            t = _mm512_mul_ps(t, _mm512_set1_ps(rs[i]));
            if (hg)
                t = _mm512_mul_ps(t, c->g[q]);
            if (hbe)
                t = _mm512_add_ps(t, c->b[q]);
            batch_store(c, q, nt, ri, h, hs, y, ys, v, t, hh);
        }
    }
    return streamed;
}

#endif
