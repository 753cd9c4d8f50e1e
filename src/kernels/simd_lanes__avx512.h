/* The reduction order of kernels.h on AVX-512: the 16 double lanes are two zmm registers,
 * lo = lanes 0-7 and hi = lanes 8-15, so the 16 floats x[j..j+15] (j % 16 == 0) go to lo (the
 * low 8) and hi (the high 8), each converted exactly with vcvtps2pd. A tail of n < 16 elements
 * is a masked load plus a masked add: lanes that get no element are not touched at all, as in
 * the scalar loop. Include only from files built with the AVX-512 flags (*__avx512.c). */
#ifndef KEEL_KERNELS_SIMD_LANES_AVX512_H
#define KEEL_KERNELS_SIMD_LANES_AVX512_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h" /* KEEL_PREFETCH_ABOVE, KEEL_STREAM_ABOVE */

#define KEEL_INLINE static inline __attribute__((always_inline))

/* (double)p[0..7] */
KEEL_INLINE __m512d k512_cvt8(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }

/* (double)p[i] where bit i of k is set, else 0.0; never reads the masked-out floats. */
KEEL_INLINE __m512d k512_cvt8_mask(__mmask8 k, const float *p)
{
    return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, p));
}

/* Mask of the first n (< 16) floats of a tail, and its two halves for the double lanes. */
KEEL_INLINE __mmask16 k512_tail16(size_t n) { return (__mmask16)((1u << n) - 1u); }
KEEL_INLINE __mmask8 k512_lo8(__mmask16 k) { return (__mmask8)(k & 0xff); }
KEEL_INLINE __mmask8 k512_hi8(__mmask16 k) { return (__mmask8)(k >> 8); }

/* lane = lane + t only where k is set (the other lanes keep their bits). */
KEEL_INLINE __m512d k512_add_mask(__m512d lane, __mmask8 k, __m512d t)
{
    return _mm512_mask_add_pd(lane, k, lane, t);
}

/* Small rows go in groups of K512_GROUP: their reductions are independent chains, so
 * interleaving them hides the latency of the lane adds, the trees and the per-row divisions,
 * which dominates below K512_GROUP_BELOW floats a row (measured; above it one row at a time
 * keeps the rows in L1 and is faster). The order of the adds within each row is unchanged. */
#define K512_GROUP 4
#define K512_GROUP_BELOW 256

/* Prefetching (of the rows the next sweep over memory reads, into L2, while the current rows
 * are worked on in cache) pays only when the data come from beyond L2, and only for rows long
 * enough that one row ahead is far enough (below that the hardware prefetcher keeps up); on
 * data already in cache it costs (all measured). It is on for rows of at least
 * K512_PREFETCH_MIN_DIM floats in a call whose x spans more than KEEL_PREFETCH_ABOVE bytes. */
#define K512_PREFETCH_MIN_DIM 256
KEEL_INLINE int k512_want_prefetch(size_t rows, size_t dim, size_t stride)
{
    return dim >= K512_PREFETCH_MIN_DIM && rows * stride * sizeof(float) > KEEL_PREFETCH_ABOVE;
}
/* Streaming (non-temporal) stores of the plain norms' outputs, for a call whose y spans at least
 * KEEL_STREAM_ABOVE bytes: there a write-allocating store reads every line it writes (a third
 * more traffic than the copy floor) and evicts the rows still to be read. Measured, 1 thread,
 * LayerNorm forward, streamed against cached stores: 1024x4096 (16 MiB) 1.20x, 4096x4096 1.24x,
 * 16384x8192 1.30x faster; 4096x768 (12 MiB) and 8192x768 (24 MiB) 0.9x (slower): the cut is at
 * 16 MiB of output per call, the part of one thread. A row streams when its start is 64-byte
 * aligned (whole aligned lines); the kernel ends with an sfence. The values are unchanged. */
KEEL_INLINE int k512_want_stream(size_t rows, size_t y_stride)
{
    return rows * y_stride * sizeof(float) >= KEEL_STREAM_ABOVE;
}
KEEL_INLINE int k512_aligned64(const float *p) { return ((uintptr_t)p & 63) == 0; }

/* The fixed tree, h = 8, 4, 2, 1: a[i] = a[i] + a[i + h]; returns a[0]. */
KEEL_INLINE double k512_reduce16(__m512d lo, __m512d hi)
{
    const __m512d a = _mm512_add_pd(lo, hi);
    const __m256d b = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    const __m128d c = _mm_add_pd(_mm256_castpd256_pd128(b), _mm256_extractf128_pd(b, 1));
    return _mm_cvtsd_f64(_mm_add_sd(c, _mm_unpackhi_pd(c, c)));
}

/* The tree's steps h = 4, 2, 1 of eight rows at once: s[i] is row i's 8 lanes after the step
 * h = 8 (lo + hi); lane i of the result is row i's sum, the same adds of the same operands in
 * the same order (each add's first operand the lower lane, as in the tree), so the same bits,
 * but each vector add serves several rows where k512_reduce16 spends one a row and step.
 * h = 4: rows i and i + 1 side by side, [s_i lanes 0-3, s_i+1 lanes 0-3] + [s_i lanes 4-7,
 * s_i+1 lanes 4-7]; h = 2: 128-bit pairs of four rows; h = 1: the even and odd lanes of all
 * eight, then the rows put back in order. */
KEEL_INLINE __m512d k512_reduce8x8(const __m512d s[8])
{
    __m512d p[4], q[2];
    for (int i = 0; i < 4; i++)
        p[i] = _mm512_add_pd(_mm512_shuffle_f64x2(s[2 * i], s[2 * i + 1], 0x44),
                             _mm512_shuffle_f64x2(s[2 * i], s[2 * i + 1], 0xee));
    for (int i = 0; i < 2; i++) /* [rows 4i, 4i+1, 4i+2, 4i+3], two lanes each */
        q[i] = _mm512_add_pd(_mm512_shuffle_f64x2(p[2 * i], p[2 * i + 1], 0x88),
                             _mm512_shuffle_f64x2(p[2 * i], p[2 * i + 1], 0xdd));
    /* lanes: rows 0, 4, 1, 5, 2, 6, 3, 7 */
    const __m512d t = _mm512_add_pd(_mm512_unpacklo_pd(q[0], q[1]), _mm512_unpackhi_pd(q[0], q[1]));
    return _mm512_permutexvar_pd(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), t);
}

#endif
