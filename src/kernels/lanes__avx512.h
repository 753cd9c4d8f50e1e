/* keel's lane vocabulary on AVX-512: the names of lanes__avx2.h, the shared part in lanes_ymm.h.
 * A row's tail (n < 8 floats) is an AVX-512VL masked load / store. Include only from files built
 * with the AVX-512 flags (*__avx512.c), after kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX512_H
#define KEEL_KERNELS_LANES_AVX512_H

#include "simd_lanes__avx512.h"
#include "lanes_ymm.h"

typedef __mmask8 kl_tail;

KEEL_INLINE kl_tail kl_tail_of(size_t n) { return (__mmask8)((1u << n) - 1u); }
KEEL_INLINE kl_f8 kl_load_tail(const float *p, kl_tail t) { return _mm256_maskz_loadu_ps(t, p); }
KEEL_INLINE void kl_store_tail(float *p, kl_f8 v, kl_tail t) { _mm256_mask_storeu_ps(p, t, v); }
KEEL_INLINE int kl_want_stream(size_t rows, size_t stride) { return k512_want_stream(rows, stride); }

#endif
