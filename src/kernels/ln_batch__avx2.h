#ifndef KEEL_KERNELS_LN_BATCH_AVX2_H
#define KEEL_KERNELS_LN_BATCH_AVX2_H

#include "batch_rows__avx2.h"

/* LayerNorm's stages of batch_rows__avx2.h (rows of up to 16 floats, four at a time): those of
 * ln_batch__avx512.h on 256-bit vectors. h is converted to double once, the sum's stage keeping
 * the doubles for the centred one, and a lane's sum starts at its term: the tree's sums then
 * differ from kernels.h's only where they are -0.0 and kernels.h's +0.0, so R(h) + 0.0 is
 * kernels.h's R(h); the centred terms (squares, +0.0 in the lanes without an element) are
 * never -0.0. */

/* kernels.h's tree down to four lanes (h = 8, then 4) of a row's 16 double lanes. */
KEEL_INLINE __m256d batch_tree4(__m256d q0, __m256d q1, __m256d q2, __m256d q3)
{
    return _mm256_add_pd(_mm256_add_pd(q0, q2), _mm256_add_pd(q1, q3));
}

/* Rows r .. r + 3: h into slot (16 floats a row, then its 16 doubles) and the means. */
KEEL_INLINE void batch_sum(size_t r, const batch_call *c, const keel_f32_res *res, float *slot,
                           batch_stats *st, int hl, int hb, int px)
{
    __m256d s[PIPE_BATCH];
    double *d = (double *)(slot + PIPE_BATCH * 16);
    const batch_rows b = batch_rows_of(res, r);
    for (int i = 0; i < PIPE_BATCH; i++) {
        const kr_d16 q = kr_widen(batch_row_in(c, &b, slot, r, i, hl, hb, px));
        for (int k = 0; k < 4; k++)
            _mm256_store_pd(d + i * 16 + 4 * k, q.q[k]);
        s[i] = batch_tree4(q.q[0], q.q[1], q.q[2], q.q[3]);
    }
    st->mean = k256_ln_mean4(_mm256_add_pd(k256_reduce4x4(s), _mm256_setzero_pd()), &c->n);
}

/* The rstds of the batch in slot. */
KEEL_INLINE void batch_mid(const batch_call *c, const float *slot, float eps, batch_stats *st)
{
    __m256d s[PIPE_BATCH];
    double md[PIPE_BATCH];
    const double *d = (const double *)(slot + PIPE_BATCH * 16);
    const __m256d lane[4] = {c->t.d0, c->t.d1, c->t.d2, c->t.d3};
    _mm256_storeu_pd(md, st->mean);
    __asm__("" : "+m"(md)); /* broadcast from memory (ln_batch__avx512.h's batch_mid) */
    for (int i = 0; i < PIPE_BATCH; i++) {
        const __m256d m = _mm256_set1_pd(md[i]);
        __m256d q[4];
        for (int k = 0; k < 4; k++) {
            const __m256d t = _mm256_sub_pd(_mm256_load_pd(d + i * 16 + 4 * k), m);
            q[k] = _mm256_mul_pd(t, t);
            if (!c->full) /* +0.0 in the lanes without an element */
                q[k] = _mm256_and_pd(q[k], lane[k]);
        }
        s[i] = batch_tree4(q[0], q[1], q[2], q[3]);
    }
    st->rstd = k256_rstd4(k256_reduce4x4(s), &c->n, eps);
}

/* The batch's outputs (rows r ..) from slot; returns whether a row was streamed. */
KEEL_INLINE int batch_out(size_t r, size_t dim, const batch_call *c, const batch_stats *st,
                          const float *slot, float *h, size_t hs, float *y, size_t ys, float *mean,
                          float *rstd, int stream, int hg, int hbe, int hh)
{
    (void)dim;
    float hi[PIPE_BATCH], lo[PIPE_BATCH], rs[PIPE_BATCH];
    const __m128 mhi = _mm256_cvtpd_ps(st->mean);
    _mm_storeu_ps(hi, mhi);
    _mm_storeu_ps(lo, _mm256_cvtpd_ps(_mm256_sub_pd(st->mean, _mm256_cvtps_pd(mhi))));
    _mm_storeu_ps(rs, st->rstd);
    __asm__("" : "+m"(hi), "+m"(lo), "+m"(rs)); /* broadcast from memory (batch_mid) */
    if (mean)
        _mm_storeu_ps(mean + r, mhi);
    if (rstd)
        _mm_storeu_ps(rstd + r, st->rstd);
    int streamed = 0;
    for (int i = 0; i < PIPE_BATCH; i++) {
        const kr_f16 v = batch_slot_h(slot, i);
        kr_f16 t = kr_mul(kr_sub(kr_sub(v, kr_set1(hi[i])), kr_set1(lo[i])), kr_set1(rs[i]));
        if (hg)
            t = kr_mul(t, c->g);
        if (hbe)
            t = kr_add(t, c->b);
        streamed |= batch_store(c, stream, r + (size_t)i, h, hs, y, ys, v, t, hh);
    }
    return streamed;
}

#endif
