/* The reduction order of kernels.h on AVX2: the 16 double lanes are four ymm registers,
 * q0 = lanes 0-3, q1 = 4-7, q2 = 8-11, q3 = 12-15, each fed by an exact vcvtps2pd of 4 floats.
 *
 * Tails (n < 16 elements) are maskloads of 8 floats, and the terms of lanes that get no
 * element are forced to +0.0 (an AND with the mask) before the add. Adding +0.0 leaves every
 * lane's bits as they are: a lane starts at +0.0 and, in round-to-nearest, a sum is -0.0 only
 * when both addends are -0.0, so no lane is ever -0.0; x + 0.0 == x for every other x
 * (NaN keeps its payload; lanes never hold a signalling NaN, the conversion quiets them).
 * Include only from files built with the AVX2 flags (*__avx2.c). */
#ifndef KEEL_KERNELS_SIMD_LANES_AVX2_H
#define KEEL_KERNELS_SIMD_LANES_AVX2_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h" /* KEEL_PREFETCH_ABOVE, KEEL_STREAM_ABOVE */

#define KEEL_INLINE static inline __attribute__((always_inline))

/* (double)p[0..3] */
KEEL_INLINE __m256d k256_cvt4(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }

/* The low / high 4 floats of a ymm, as doubles. */
KEEL_INLINE __m256d k256_lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
KEEL_INLINE __m256d k256_hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

/* Mask of the first n (0..8) of 8 floats, for maskload / maskstore. */
KEEL_INLINE __m256i k256_mask8(size_t n)
{
    static const int32_t ones_then_zeros[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};
    return _mm256_loadu_si256((const __m256i *)(ones_then_zeros + 8 - n));
}

/* The same mask widened to the double lanes of the low / high 4 floats. */
KEEL_INLINE __m256d k256_lo64(__m256i m)
{
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)));
}
KEEL_INLINE __m256d k256_hi64(__m256i m)
{
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)));
}

/* lane + (t where the mask is set, else +0.0) */
KEEL_INLINE __m256d k256_add_mask(__m256d lane, __m256d mask, __m256d t)
{
    return _mm256_add_pd(lane, _mm256_and_pd(t, mask));
}

/* The shape of a row's tail of n (< 16) floats, the same for every row of a call. */
typedef struct k256_tail {
    size_t n;
    __m256i f0, f1;         /* float masks of tail floats 0-7 and 8-15 */
    __m256d d0, d1, d2, d3; /* double-lane masks of lanes 0-3, 4-7, 8-11, 12-15 */
} k256_tail;

KEEL_INLINE k256_tail k256_tail_of(size_t n)
{
    k256_tail t;
    t.n = n;
    t.f0 = k256_mask8(n < 8 ? n : 8);
    t.f1 = k256_mask8(n > 8 ? n - 8 : 0);
    t.d0 = k256_lo64(t.f0);
    t.d1 = k256_hi64(t.f0);
    t.d2 = k256_lo64(t.f1);
    t.d3 = k256_hi64(t.f1);
    return t;
}

/* Small rows go in groups of K256_GROUP (fewer than AVX-512's: 16 registers): interleaving
 * their reductions hides the latency of the lane adds, the trees and the per-row divisions.
 * The order of the adds within each row is unchanged. See simd_lanes__avx512.h. */
#define K256_GROUP 2
#define K256_GROUP_BELOW 256

/* Prefetching pays only on data from beyond L2 (see simd_lanes__avx512.h). */
#define K256_PREFETCH_MIN_DIM 256
KEEL_INLINE int k256_want_prefetch(size_t rows, size_t dim, size_t stride)
{
    return dim >= K256_PREFETCH_MIN_DIM && rows * stride * sizeof(float) > KEEL_PREFETCH_ABOVE;
}
/* Streaming stores of the plain norms' outputs past KEEL_STREAM_ABOVE bytes of y per call (the
 * policy and measurements of simd_lanes__avx512.h); a row streams when its start is 32-byte
 * aligned; the kernel ends with an sfence. */
KEEL_INLINE int k256_want_stream(size_t rows, size_t y_stride)
{
    return rows * y_stride * sizeof(float) >= KEEL_STREAM_ABOVE;
}
KEEL_INLINE int k256_aligned32(const float *p) { return ((uintptr_t)p & 31) == 0; }

/* The fixed tree, h = 8, 4, 2, 1: a[i] = a[i] + a[i + h]; returns a[0]. */
KEEL_INLINE double k256_reduce16(__m256d q0, __m256d q1, __m256d q2, __m256d q3)
{
    const __m256d b0 = _mm256_add_pd(q0, q2); /* lanes 0-3 */
    const __m256d b1 = _mm256_add_pd(q1, q3); /* lanes 4-7 */
    const __m256d c = _mm256_add_pd(b0, b1);
    const __m128d d = _mm_add_pd(_mm256_castpd256_pd128(c), _mm256_extractf128_pd(c, 1));
    return _mm_cvtsd_f64(_mm_add_sd(d, _mm_unpackhi_pd(d, d)));
}

#endif
