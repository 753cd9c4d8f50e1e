/* norm_finish.h's steps for several rows at once on AVX-512, each operation the scalar
 * helper's, correctly rounded in either form (vdivpd, vsqrtpd, vcvtpd2ps under the default
 * rounding), so the bits are the same. For short rows the per-row division, square root and
 * division, serial chains of long-latency scalar instructions, weigh as much as the sweeps (a
 * profile of the forwards at dim 16 put 40% of the time there); here one vector instruction
 * does each step for several rows:
 *  - RMSNorm's for a group of 4 rows (256-bit double vectors): RMSNorm forward at 4096x16 0.40
 *    -> 0.32 ns/element (measured, 1 thread). LayerNorm's rstd in groups of 4 measured no gain
 *    (its per-row mean split and broadcasts dominate) and is not used;
 *  - LayerNorm's and RMSNorm's for the batches of 8 rows of batch_rows__avx512.h, a row a lane
 *    of a 512-bit vector (there the rest of the per-row work is small enough that it pays).
 * Include only from *__avx512.c files. */
#ifndef KEEL_KERNELS_FINISH_ROWS_AVX512_H
#define KEEL_KERNELS_FINISH_ROWS_AVX512_H

#include <math.h>

#include "norm_finish.h"
#include "simd_lanes__avx512.h"

/* Lanes of s that are not finite (NaN or +-Inf). */
KEEL_INLINE __mmask8 k512_not_finite4(__m256d s) { return _mm256_fpclass_pd_mask(s, 0x99); }

/* (float)(1.0 / sqrt(q / dim + eps)) lane by lane, as keel_ln_rstd. */
KEEL_INLINE __m128 k512_rstd4(__m256d q, size_t dim, float eps)
{
    const __m256d v = _mm256_add_pd(_mm256_div_pd(q, _mm256_set1_pd((double)dim)),
                                    _mm256_set1_pd((double)eps));
    return _mm256_cvtpd_ps(_mm256_div_pd(_mm256_set1_pd(1.0), _mm256_sqrt_pd(v)));
}

/* rstd[i] = keel_rms_rstd(q[i], dim, eps) for the nr rows (nr a constant). */
KEEL_INLINE void k512_rms_rstd_n(int nr, const double *q, size_t dim, float eps, float *rstd)
{
    if (nr == 4) {
        const __m256d v = _mm256_set_pd(q[3], q[2], q[1], q[0]);
        _mm_storeu_ps(rstd, _mm_mask_mov_ps(k512_rstd4(v, dim, eps), k512_not_finite4(v), _mm_set1_ps(NAN)));
    } else {
        for (int i = 0; i < nr; i++)
            rstd[i] = keel_rms_rstd(q[i], dim, eps);
    }
}

/* ---- 8 rows, a row a lane ------------------------------------------------------------ */

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
