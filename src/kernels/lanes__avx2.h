/* keel's lane vocabulary on AVX2: the operations a kernel body written once for every ISA
 * (f32_*_simd.h) is made of, with the same names on every path (lanes__avx512.h); the shared
 * part is lanes_ymm.h. A row's tail (n < 8 floats) is a maskload / maskstore: nothing past the
 * tail is read or written. Include only from files built with the AVX2 flags (*__avx2.c), after
 * kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX2_H
#define KEEL_KERNELS_LANES_AVX2_H

#include "simd_lanes__avx2.h"
#include "lanes_ymm.h"

/* The mask of a tail of n (< 8) floats, the same for every row of a call. */
typedef __m256i kl_tail;

KEEL_INLINE kl_tail kl_tail_of(size_t n) { return k256_mask8(n); }

/* The tail's floats at p, 0.0 in the lanes past it. */
KEEL_INLINE kl_f8 kl_load_tail(const float *p, kl_tail t) { return _mm256_maskload_ps(p, t); }
KEEL_INLINE void kl_store_tail(float *p, kl_f8 v, kl_tail t) { _mm256_maskstore_ps(p, t, v); }

/* Whether a call's outputs (rows of `stride` floats) go past the caches, where they stream
 * (simd_lanes__avx512.h has the measurements). */
KEEL_INLINE int kl_want_stream(size_t rows, size_t stride) { return k256_want_stream(rows, stride); }

#endif
