/* norm_finish.h's RMSNorm step for a group of 4 rows at once on AVX-512 (256-bit double
 * vectors). For short rows the per-row division, square root and division, serial chains of
 * long-latency scalar instructions, weigh as much as the sweeps (a profile of the forwards at
 * dim 16 puts 40% of the time there); here one vector instruction does each step for the 4 rows
 * of a group: RMSNorm forward at 4096x16 0.40 -> 0.32 ns/element (measured, 1 thread). The
 * same for LayerNorm's rstd measured no gain (its per-row mean split and broadcasts dominate)
 * and is not used. Each operation is the scalar helper's, correctly rounded in either form, so
 * the bits are the same. Include only from *__avx512.c files. */
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

#endif
