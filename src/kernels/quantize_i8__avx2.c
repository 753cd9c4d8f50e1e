/* int8 quantization and absmax with AVX2, 8 values a step (moved out of convert__avx2.c, whose
 * storage conversions are now convert_simd.h's body); tails by the scalar definition. The
 * quantization is the method of quantize_i8__avx512.c (a reciprocal where it provably rounds as
 * the division does, the division elsewhere). */
#include <float.h>
#include <immintrin.h>
#include <math.h>

#include "convert.h"

static int quant_recip(float s, float *r)
{
    const float v = 1.0f / s, a = fabsf(v);
    *r = v;
    return a >= FLT_MIN && a <= FLT_MAX;
}

static inline __m128i quant8(__m256 y, __m256 vr, __m256 vs, int recip)
{
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 lim = _mm256_set1_ps(0.5f - 0x1p-11f), big = _mm256_set1_ps(200.0f);
    __m256 v;
    if (recip) {
        v = _mm256_mul_ps(y, vr);
        const __m256 n = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256 near =
            _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(v, n), absm), lim, _CMP_GE_OQ),
                          _mm256_cmp_ps(_mm256_and_ps(v, absm), big, _CMP_LT_OQ));
        if (_mm256_movemask_ps(near))
            v = _mm256_div_ps(y, vs);
    } else {
        v = _mm256_div_ps(y, vs);
    }
    const __m256 ok = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
    __m256 c = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    c = _mm256_and_ps(_mm256_round_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                      ok);                    /* NaN -> +0 */
    const __m256i i = _mm256_cvttps_epi32(c); /* integers already: exact */
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return _mm_packs_epi16(w, w);
}

void keel_quantize_i8__avx2(const float *y, int8_t *q, size_t n, float s)
{
    float r;
    const int recip = quant_recip(s, &r);
    const __m256 vr = _mm256_set1_ps(r), vs = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storel_epi64((__m128i *)(q + i), quant8(_mm256_loadu_ps(y + i), vr, vs, recip));
    keel_quantize_i8__scalar(y + i, q + i, n - i, s);
}

float keel_absmax_f32__avx2(const float *y, size_t n)
{
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(y + i), absm);
        const __m256 b = _mm256_and_ps(_mm256_loadu_ps(y + i + 8), absm);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
        m0 = _mm256_max_ps(m0, a);
        m1 = _mm256_max_ps(m1, b);
    }
    if (_mm256_movemask_ps(nan))
        return keel_absmax_f32__scalar(y, n);
    m0 = _mm256_max_ps(m0, m1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float m = _mm_cvtss_f32(h);
    /* the rest by the scalar rule, from the maximum so far (no NaN before i) */
    for (; i < n; i++) {
        const float a = fabsf(y[i]);
        m = (a > m || isnan(a)) ? a : m;
        if (isnan(m))
            break;
    }
    return m;
}
