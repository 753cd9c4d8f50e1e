/* norm_finish.h's per-row statistics for eight rows at once, one row a double lane: the same
 * operations in the same order, each correctly rounded as the scalar one (vdivpd, vsqrtpd,
 * vcvtpd2ps under the default rounding), so the same bits. Include only from *__avx512.c. */
#ifndef KEEL_KERNELS_NORM_FINISH_AVX512_H
#define KEEL_KERNELS_NORM_FINISH_AVX512_H

#include <math.h>

#include "simd_lanes__avx512.h"

/* The row length as a divisor: v / dim is v * (1 / dim) when dim is a power of two (the
 * quotient and the product are then the same real number, so the same after rounding), a
 * multiply instead of a division on the one divider. */
typedef struct k512_dim {
    __m512d n, inv;
    int pow2;
} k512_dim;

KEEL_INLINE k512_dim k512_dim_of(size_t dim)
{
    k512_dim d;
    d.n = _mm512_set1_pd((double)dim);
    d.inv = _mm512_set1_pd(1.0 / (double)dim);
    d.pow2 = (dim & (dim - 1)) == 0;
    return d;
}

KEEL_INLINE __m512d k512_div_dim(__m512d v, const k512_dim *d)
{
    return d->pow2 ? _mm512_mul_pd(v, d->inv) : _mm512_div_pd(v, d->n);
}

/* Lanes where v is finite (v - v is 0 there, NaN for an infinity or a NaN). */
KEEL_INLINE __mmask8 k512_finite8(__m512d v)
{
    return _mm512_cmp_pd_mask(_mm512_sub_pd(v, v), _mm512_setzero_pd(), _CMP_EQ_OQ);
}

/* keel_ln_mean: sum / dim, NaN where sum is not finite. */
KEEL_INLINE __m512d k512_ln_mean8(__m512d sum, const k512_dim *d)
{
    return _mm512_mask_mov_pd(_mm512_set1_pd(NAN), k512_finite8(sum), k512_div_dim(sum, d));
}

/* 1 / sqrt(s / dim + eps), rounded to float (keel_ln_rstd of the centred sums s). */
KEEL_INLINE __m256 k512_rstd8(__m512d s, const k512_dim *d, float eps)
{
    const __m512d v = _mm512_add_pd(k512_div_dim(s, d), _mm512_set1_pd((double)eps));
    return _mm512_cvtpd_ps(_mm512_div_pd(_mm512_set1_pd(1.0), _mm512_sqrt_pd(v)));
}

/* keel_rms_rstd: k512_rstd8 of the sums of squares, NaN where they are not finite. */
KEEL_INLINE __m256 k512_rms_rstd8(__m512d ss, const k512_dim *d, float eps)
{
    return _mm256_mask_mov_ps(_mm256_set1_ps(NAN), k512_finite8(ss), k512_rstd8(ss, d, eps));
}

#endif
