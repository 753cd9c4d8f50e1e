/* The conversions' lane vocabulary on AVX-512 F/BW (the names of convert_lanes__avx2.h):
 * CV_WIDTH = 16 values a step, a zmm of float32 bits beside a ymm of bf16/f16 bits, a predicate
 * a mask register. The f16 conversions are vcvtph2ps / vcvtps2ph (the scalar definition's bits,
 * as F16C's). Include only from files built with the AVX-512 flags (*__avx512.c). */
#ifndef KEEL_KERNELS_CONVERT_LANES_AVX512_H
#define KEEL_KERNELS_CONVERT_LANES_AVX512_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#ifndef KEEL_INLINE
#define KEEL_INLINE static inline __attribute__((always_inline))
#endif

#define CV_WIDTH 16
typedef __m512i cv_u32;
typedef __m256i cv_u16;
typedef __mmask16 cv_pred;

KEEL_INLINE cv_u16 cv_load16(const uint16_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
KEEL_INLINE void cv_store16(uint16_t *p, cv_u16 v) { _mm256_storeu_si256((__m256i *)p, v); }
/* a streaming store, p 32-byte aligned (kl_stream_fence after) */
KEEL_INLINE void cv_stream16(uint16_t *p, cv_u16 v) { _mm256_stream_si256((__m256i *)p, v); }
KEEL_INLINE cv_u32 cv_load32(const float *p) { return _mm512_castps_si512(_mm512_loadu_ps(p)); }
KEEL_INLINE void cv_store32(float *p, cv_u32 v) { _mm512_storeu_ps(p, _mm512_castsi512_ps(v)); }

KEEL_INLINE cv_u32 cv_set1(uint32_t a) { return _mm512_set1_epi32((int)a); }
KEEL_INLINE cv_u32 cv_and(cv_u32 a, cv_u32 b) { return _mm512_and_si512(a, b); }
KEEL_INLINE cv_u32 cv_or(cv_u32 a, cv_u32 b) { return _mm512_or_si512(a, b); }
KEEL_INLINE cv_u32 cv_add(cv_u32 a, cv_u32 b) { return _mm512_add_epi32(a, b); }
KEEL_INLINE cv_u32 cv_shr16(cv_u32 a) { return _mm512_srli_epi32(a, 16); }
KEEL_INLINE cv_pred cv_gt(cv_u32 a, cv_u32 b) { return _mm512_cmpgt_epi32_mask(a, b); }
KEEL_INLINE cv_u32 cv_select(cv_pred p, cv_u32 a, cv_u32 b)
{
    return _mm512_mask_mov_epi32(b, p, a);
}

KEEL_INLINE cv_u32 cv_widen_high(cv_u16 h)
{
    return _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
}
KEEL_INLINE cv_u16 cv_narrow(cv_u32 u) { return _mm512_cvtepi32_epi16(u); }

KEEL_INLINE cv_u32 cv_f16_to_f32(cv_u16 h) { return _mm512_castps_si512(_mm512_cvtph_ps(h)); }
KEEL_INLINE cv_u16 cv_f32_to_f16(cv_u32 u)
{
    return _mm512_cvtps_ph(_mm512_castsi512_ps(u), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

#endif
