/* The conversions' lane vocabulary on AVX2 + F16C (convert_simd.h is written over it; the same
 * names in convert_lanes__avx512.h and convert_lanes__neon.h): CV_WIDTH = 8 values a step, a ymm
 * of float32 bits (cv_u32) beside an xmm of bf16/f16 bits (cv_u16). The f16 conversions are F16C's
 * vcvtph2ps / vcvtps2ph, which give the scalar definition's bits (convert.h: exact widening,
 * narrowing rounded to nearest even with subnormals kept, a NaN made quiet with its sign and top
 * payload bits). Include only from files built with the AVX2 flags (*__avx2.c). */
#ifndef KEEL_KERNELS_CONVERT_LANES_AVX2_H
#define KEEL_KERNELS_CONVERT_LANES_AVX2_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#ifndef KEEL_INLINE
#define KEEL_INLINE static inline __attribute__((always_inline))
#endif

#define CV_WIDTH 8
typedef __m256i cv_u32;  /* CV_WIDTH lanes of 32 bits: float32 patterns */
typedef __m128i cv_u16;  /* CV_WIDTH lanes of 16 bits: bf16 / f16 patterns */
typedef __m256i cv_pred; /* per 32-bit lane all ones or all zeros (a compare's result) */

KEEL_INLINE cv_u16 cv_load16(const uint16_t *p) { return _mm_loadu_si128((const __m128i *)p); }
KEEL_INLINE void cv_store16(uint16_t *p, cv_u16 v) { _mm_storeu_si128((__m128i *)p, v); }
/* a streaming store, p 16-byte aligned (kl_stream_fence after) */
KEEL_INLINE void cv_stream16(uint16_t *p, cv_u16 v) { _mm_stream_si128((__m128i *)p, v); }
KEEL_INLINE cv_u32 cv_load32(const float *p) { return _mm256_castps_si256(_mm256_loadu_ps(p)); }
KEEL_INLINE void cv_store32(float *p, cv_u32 v) { _mm256_storeu_ps(p, _mm256_castsi256_ps(v)); }

KEEL_INLINE cv_u32 cv_set1(uint32_t a) { return _mm256_set1_epi32((int)a); }
KEEL_INLINE cv_u32 cv_and(cv_u32 a, cv_u32 b) { return _mm256_and_si256(a, b); }
KEEL_INLINE cv_u32 cv_or(cv_u32 a, cv_u32 b) { return _mm256_or_si256(a, b); }
KEEL_INLINE cv_u32 cv_add(cv_u32 a, cv_u32 b) { return _mm256_add_epi32(a, b); }
KEEL_INLINE cv_u32 cv_shr16(cv_u32 a) { return _mm256_srli_epi32(a, 16); }
/* a > b for lanes below 2^31 (a signed compare: the same there) */
KEEL_INLINE cv_pred cv_gt(cv_u32 a, cv_u32 b) { return _mm256_cmpgt_epi32(a, b); }
/* p ? a : b per lane */
KEEL_INLINE cv_u32 cv_select(cv_pred p, cv_u32 a, cv_u32 b) { return _mm256_blendv_epi8(b, a, p); }

/* h << 16 in 32-bit lanes (a bf16 pattern is the top half of its float32's) */
KEEL_INLINE cv_u32 cv_widen_high(cv_u16 h)
{
    return _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
}
/* lanes below 2^16 to 16 bits: the unsigned pack is exact */
KEEL_INLINE cv_u16 cv_narrow(cv_u32 u)
{
    return _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}

KEEL_INLINE cv_u32 cv_f16_to_f32(cv_u16 h) { return _mm256_castps_si256(_mm256_cvtph_ps(h)); }
KEEL_INLINE cv_u16 cv_f32_to_f16(cv_u32 u)
{
    return _mm256_cvtps_ph(_mm256_castsi256_ps(u), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

#endif
