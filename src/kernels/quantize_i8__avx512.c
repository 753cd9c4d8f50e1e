/* int8 quantization and absmax with AVX-512 F/BW/DQ, 16 values a step, tails with masks (moved
 * out of convert__avx512.c, whose storage conversions are now convert_simd.h's body). */
#include <float.h>
#include <immintrin.h>
#include <math.h>

#include "convert.h"

/* ---- int8 quantization: q = clamp(round_half_even(y / s), -127, 127), NaN -> 0 -------------
 * The quotient is the float32 division y / s of the scalar definition. Division is slow (one
 * vdivps per 16 values is most of the cost), so the vector body first takes t = y * r with
 * r = 1 / s: t and the true quotient v = y / s differ by at most |y/s| * 3 * 2^-23 (three
 * roundings, of 1/s, of y * r and of y / s, each within an ulp whatever the rounding mode;
 * plus 2^-149 where the results are subnormal), which is below 2^-13 for |y/s| < 256. So where
 * every |t| < 200 lies further than 2^-11 from a half-integer, v rounds to the same integer
 * as t (and where |t| >= 200 both clamp the same way); a vector with any value closer to a
 * half-integer (about 1 in 1000 values, and every exact tie) takes the division. The result is
 * the scalar definition's bit for bit. When 1 / s is not a normal float (s 0, subnormal
 * beyond 2^-127, huge, Inf or NaN), every vector takes the division. */
static int quant_recip(float s, float *r)
{
    const float v = 1.0f / s, a = fabsf(v);
    *r = v;
    return a >= FLT_MIN && a <= FLT_MAX;
}

static inline __m512i quant16(__m512 y, __m512 vr, __m512 vs, int recip)
{
    const __m512 lim = _mm512_set1_ps(0.5f - 0x1p-11f), big = _mm512_set1_ps(200.0f);
    __m512 v;
    if (recip) {
        v = _mm512_mul_ps(y, vr);
        const __m512 n = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __mmask16 near =
            _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, n)), lim, _CMP_GE_OQ) &
            _mm512_cmp_ps_mask(_mm512_abs_ps(v), big, _CMP_LT_OQ);
        if (near)
            v = _mm512_div_ps(y, vs);
    } else {
        v = _mm512_div_ps(y, vs);
    }
    const __mmask16 ok = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
    const __m512 c =
        _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_maskz_mov_epi32(
        ok, _mm512_cvt_roundps_epi32(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

void keel_quantize_i8__avx512(const float *y, int8_t *q, size_t n, float s)
{
    float r;
    const int recip = quant_recip(s, &r);
    const __m512 vr = _mm512_set1_ps(r), vs = _mm512_set1_ps(s);
    /* 64 values a step, packed with two saturating packs (exact: every value is in
     * [-127, 127]) and one lane permutation into one 64-byte store */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m512i a = quant16(_mm512_loadu_ps(y + i), vr, vs, recip);
        const __m512i b = quant16(_mm512_loadu_ps(y + i + 16), vr, vs, recip);
        const __m512i c = quant16(_mm512_loadu_ps(y + i + 32), vr, vs, recip);
        const __m512i d = quant16(_mm512_loadu_ps(y + i + 48), vr, vs, recip);
        const __m512i p = _mm512_packs_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
        _mm512_storeu_si512((void *)(q + i), _mm512_permutexvar_epi32(order, p));
    }
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(q + i),
                         _mm512_cvtepi32_epi8(quant16(_mm512_loadu_ps(y + i), vr, vs, recip)));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        /* masked-off lanes compute on 0 and are not stored */
        _mm512_mask_cvtepi32_storeu_epi8(q + i, k,
                                         quant16(_mm512_maskz_loadu_ps(k, y + i), vr, vs, recip));
    }
}

float keel_absmax_f32__avx512(const float *y, size_t n)
{
    __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
    __mmask16 nan = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(y + i));
        const __m512 b = _mm512_abs_ps(_mm512_loadu_ps(y + i + 16));
        nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
        m0 = _mm512_max_ps(m0, a);
        m1 = _mm512_max_ps(m1, b);
    }
    for (; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(k, y + i));
        nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
        m0 = _mm512_max_ps(m0, a);
    }
    if (nan) /* which NaN: the scalar loop's */
        return keel_absmax_f32__scalar(y, n);
    /* the maximum of non-NaN values does not depend on the order */
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}
