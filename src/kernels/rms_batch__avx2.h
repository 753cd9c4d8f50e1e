#ifndef KEEL_KERNELS_RMS_BATCH_AVX2_H
#define KEEL_KERNELS_RMS_BATCH_AVX2_H

#include "batch_rows__avx2.h"

/* RMSNorm's stages of batch_rows__avx2.h (rows of up to 16 floats, four at a time): those of
 * rms_batch__avx512.h on 256-bit vectors. The squares are never -0.0 (and +0.0 in the lanes
 * without an element), so a lane's sum may start at its term. */

/* Rows r .. r + 3: h into slot (16 floats a row) and R(h * h). */
KEEL_INLINE void batch_sum(size_t r, const batch_call *c, const keel_f32_res *res, float *slot,
                           batch_stats *st, int hl, int hb, int px)
{
    __m256d s[PIPE_BATCH];
    const batch_rows b = batch_rows_of(res, r);
    for (int i = 0; i < PIPE_BATCH; i++) {
        const kr_d16 q = kr_widen(batch_row_in(c, &b, slot, r, i, hl, hb, px));
        __m256d sq[4];
        for (int k = 0; k < 4; k++)
            sq[k] = _mm256_mul_pd(q.q[k], q.q[k]);
        /* kernels.h's tree down to four lanes: h = 8, then 4 */
        s[i] = _mm256_add_pd(_mm256_add_pd(sq[0], sq[2]), _mm256_add_pd(sq[1], sq[3]));
    }
    st->mean = k256_reduce4x4(s);
}

KEEL_INLINE void batch_mid(const batch_call *c, const float *slot, float eps, batch_stats *st)
{
    (void)slot;
    st->rstd = k256_rms_rstd4(st->mean, &c->n, eps);
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
    _mm_storeu_ps(rs, st->rstd);
    __asm__("" : "+m"(rs)); /* broadcast from memory (ln_batch__avx512.h's batch_mid) */
    if (rstd)
        _mm_storeu_ps(rstd + r, st->rstd);
    int streamed = 0;
    for (int i = 0; i < PIPE_BATCH; i++) {
        const kr_f16 v = batch_slot_h(slot, i);
        kr_f16 t = kr_mul(v, kr_set1(rs[i]));
        if (hg)
            t = kr_mul(t, c->g);
        streamed |= batch_store(c, stream, r + (size_t)i, h, hs, y, ys, v, t, hh);
    }
    return streamed;
}

#endif
