/* norm_finish.h's steps for four rows at once on AVX2, a row a double lane (the batches of
 * batch_rows__avx2.h), and the last steps of kernels.h's tree for four rows. Each operation is
 * the scalar helper's, correctly rounded in either form (vdivpd, vsqrtpd, vcvtpd2ps under the
 * default rounding), so the bits are the same; finish_rows__avx512.h does the same for eight.
 * Include only from *__avx2.c files. */
#ifndef KEEL_KERNELS_FINISH_ROWS_AVX2_H
#define KEEL_KERNELS_FINISH_ROWS_AVX2_H

#include <math.h>

#include "norm_finish.h"
#include "simd_lanes__avx2.h"

/* kernels.h's tree from h = 2 on, for four rows: c[i] holds row i's four lanes after h = 4
 * (lanes 0-3); returns the four row sums, row i in lane i. h = 2: the 128-bit halves of rows
 * i and i + 1 side by side, [c_i lanes 0-1, c_i+1 lanes 0-1] + [c_i lanes 2-3, c_i+1 lanes
 * 2-3]; h = 1: the even and odd lanes of the four rows (rows 0, 2, 1, 3), put back in order. */
KEEL_INLINE __m256d k256_reduce4x4(const __m256d c[4])
{
    __m256d p[2];
    for (int i = 0; i < 2; i++)
        p[i] = _mm256_add_pd(_mm256_permute2f128_pd(c[2 * i], c[2 * i + 1], 0x20),
                             _mm256_permute2f128_pd(c[2 * i], c[2 * i + 1], 0x31));
    const __m256d t = _mm256_add_pd(_mm256_unpacklo_pd(p[0], p[1]), _mm256_unpackhi_pd(p[0], p[1]));
    return _mm256_permute4x64_pd(t, 0xd8); /* lanes 0, 2, 1, 3 */
}

/* The row length as a divisor: a multiply by 1 / dim when dim is a power of two (the same real
 * number as the quotient, so the same after rounding; finish_rows__avx512.h's k512_dim). */
typedef struct k256_dim {
    __m256d n, inv;
    int pow2;
} k256_dim;

KEEL_INLINE k256_dim k256_dim_of(size_t dim)
{
    k256_dim d;
    d.n = _mm256_set1_pd((double)dim);
    d.inv = _mm256_set1_pd(1.0 / (double)dim);
    d.pow2 = (dim & (dim - 1)) == 0;
    return d;
}

KEEL_INLINE __m256d k256_div_dim(__m256d v, const k256_dim *d)
{
    return d->pow2 ? _mm256_mul_pd(v, d->inv) : _mm256_div_pd(v, d->n);
}

/* All ones in the lanes where v is finite (v - v is 0 there, NaN for an infinity or a NaN). */
KEEL_INLINE __m256d k256_finite4(__m256d v)
{
    return _mm256_cmp_pd(_mm256_sub_pd(v, v), _mm256_setzero_pd(), _CMP_EQ_OQ);
}

/* keel_ln_mean: sum / dim, NaN where sum is not finite. */
KEEL_INLINE __m256d k256_ln_mean4(__m256d sum, const k256_dim *d)
{
    return _mm256_blendv_pd(_mm256_set1_pd(NAN), k256_div_dim(sum, d), k256_finite4(sum));
}

/* 1 / sqrt(s / dim + eps) in double (keel_ln_rstd before its rounding to float). */
KEEL_INLINE __m256d k256_rstd4_d(__m256d s, const k256_dim *d, float eps)
{
    const __m256d v = _mm256_add_pd(k256_div_dim(s, d), _mm256_set1_pd((double)eps));
    return _mm256_div_pd(_mm256_set1_pd(1.0), _mm256_sqrt_pd(v));
}

/* keel_ln_rstd of the centred sums s. */
KEEL_INLINE __m128 k256_rstd4(__m256d s, const k256_dim *d, float eps)
{
    return _mm256_cvtpd_ps(k256_rstd4_d(s, d, eps));
}

/* keel_rms_rstd: NaN where the sums of squares are not finite (the double NaN converts to the
 * float NaN that (float)NAN is). */
KEEL_INLINE __m128 k256_rms_rstd4(__m256d ss, const k256_dim *d, float eps)
{
    return _mm256_cvtpd_ps(
        _mm256_blendv_pd(_mm256_set1_pd(NAN), k256_rstd4_d(ss, d, eps), k256_finite4(ss)));
}

#endif
