/* DyT, float32, AVX-512: y = gamma * tanh(alpha * x) + beta and its backward, with the tanh
 * and 1 - tanh^2 of dyt_tanh.h computed 16 lanes at a time, branch-free: both branches (the
 * polynomial of small arguments and the exp form of the others) are evaluated and each lane
 * takes the one the scalar definition takes, so every lane holds exactly the scalar bits (each
 * fmaf of the definition is one _mm512_fmadd_ps, rounded once as it is). */
#include "dyt_tanh.h"
#include "kernels.h"
#include "simd_lanes__avx512.h"

#define SET1 _mm512_set1_ps

/* t = tanh(u), s = 1 - tanh(u)^2 of 16 lanes (keel_tanh_sech2_f32). */
KEEL_INLINE void tanh_sech2(__m512 u, __m512 *t, __m512 *s)
{
    const __m512 sign = SET1(-0.0f), one = SET1(1.0f);
    const __m512 a = _mm512_andnot_ps(sign, u);
    const __mmask16 small = _mm512_cmp_ps_mask(a, SET1(KEEL_TANH_SMALL), _CMP_LT_OQ);
    const __mmask16 in_range = _mm512_cmp_ps_mask(a, SET1(KEEL_TANH_MAX), _CMP_LE_OQ);
    const __mmask16 num = _mm512_cmp_ps_mask(u, u, _CMP_ORD_Q); /* u not NaN */
    /* a < 0.625: t = a + (a * a^2) * P(a^2), s = 1 - t^2 */
    const __m512 a2 = _mm512_mul_ps(a, a);
    __m512 p = _mm512_fmadd_ps(SET1(KEEL_TANH_P4), a2, SET1(KEEL_TANH_P3));
    p = _mm512_fmadd_ps(p, a2, SET1(KEEL_TANH_P2));
    p = _mm512_fmadd_ps(p, a2, SET1(KEEL_TANH_P1));
    p = _mm512_fmadd_ps(p, a2, SET1(KEEL_TANH_P0));
    const __m512 ts = _mm512_fmadd_ps(_mm512_mul_ps(a, a2), p, a);
    const __m512 ss = _mm512_fnmadd_ps(ts, ts, one); /* -(t t) + 1 = fmaf(-t, t, 1) */
    /* else: 4E = 4 exp(-2a) (0 above 43.5), Q = 4E / (1 + E), t = 1 - Q/2, s = Q - Q^2/4 */
    const __m512 z = _mm512_mul_ps(SET1(-2.0f), a);
    const __m512 j = _mm512_fmadd_ps(z, SET1(KEEL_EXP_LOG2E), SET1(KEEL_EXP_SHIFT));
    const __m512 kf = _mm512_sub_ps(j, SET1(KEEL_EXP_SHIFT));
    const __m512 r = _mm512_fmadd_ps(kf, SET1(-KEEL_EXP_LN2_LO),
                                     _mm512_fmadd_ps(kf, SET1(-KEEL_EXP_LN2_HI), z));
    __m512 c = _mm512_fmadd_ps(SET1(KEEL_EXP_C4), r, SET1(KEEL_EXP_C3));
    c = _mm512_fmadd_ps(c, r, SET1(KEEL_EXP_C2));
    c = _mm512_fmadd_ps(c, r, SET1(KEEL_EXP_C1));
    c = _mm512_fmadd_ps(c, r, SET1(KEEL_EXP_C0));
    const __m512 pe = _mm512_fmadd_ps(_mm512_mul_ps(r, r), c, r);
    const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(j), 23));
    const __m512 e4 = _mm512_maskz_fmadd_ps(in_range, scale, pe, scale);
    const __m512 q2 = _mm512_div_ps(e4, _mm512_fmadd_ps(e4, SET1(0.25f), one));
    const __m512 te = _mm512_fmadd_ps(q2, SET1(-0.5f), one);
    const __m512 se = _mm512_fmadd_ps(_mm512_mul_ps(q2, SET1(-0.25f)), q2, q2);
    /* t: u where u is NaN, else ta with u's sign bit (copysign: ta >= +0), in one ternary
     * logic op, bitwise sign ? u : ta (0xe2), its masked-off lanes keeping u */
    const __m512i ta = _mm512_castps_si512(_mm512_mask_mov_ps(te, small, ts));
    const __m512i ui = _mm512_castps_si512(u), sign_bit = _mm512_castps_si512(sign);
    *t = _mm512_castsi512_ps(_mm512_mask_ternarylogic_epi32(ui, num, sign_bit, ta, 0xe2));
    *s = _mm512_mask_mov_ps(u, num, _mm512_mask_mov_ps(se, small, ss));
}

void keel_f32_dyt_fwd__avx512(size_t rows, size_t dim, const float *x, size_t x_stride, float *y,
                              size_t y_stride, float alpha, const float *gamma, const float *beta)
{
    const __m512 va = _mm512_set1_ps(alpha);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        for (size_t j = 0; j < dim; j += 16) {
            const __mmask16 k = dim - j >= 16 ? 0xffff : k512_tail16(dim - j);
            __m512 t, s;
            tanh_sech2(_mm512_mul_ps(va, _mm512_maskz_loadu_ps(k, xr + j)), &t, &s);
            if (gamma)
                t = _mm512_mul_ps(t, _mm512_maskz_loadu_ps(k, gamma + j));
            if (beta)
                t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(k, beta + j));
            _mm512_mask_storeu_ps(yr + j, k, t);
        }
    }
}

/* parts[j..] += v on the floats of k */
KEEL_INLINE void part_add(float *p, __m512 v, __mmask16 k)
{
    _mm512_mask_storeu_ps(p, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, p), v));
}

void keel_f32_dyt_bwd__avx512(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                              const float *x, size_t x_stride, float alpha, const float *gamma,
                              float *dx, size_t dx_stride, int accumulate_dx, float *dgamma_part,
                              float *dbeta_part, float *dalpha_part)
{
    const __m512 va = _mm512_set1_ps(alpha);
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride, *xr = x + r * x_stride;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j += 16) {
            const __mmask16 k = dim - j >= 16 ? 0xffff : k512_tail16(dim - j);
            const __m512 xv = _mm512_maskz_loadu_ps(k, xr + j), dyv = _mm512_maskz_loadu_ps(k, dyr + j);
            __m512 t, s;
            tanh_sech2(_mm512_mul_ps(va, xv), &t, &s);
            const __m512 gs = gamma ? _mm512_mul_ps(dyv, _mm512_maskz_loadu_ps(k, gamma + j)) : dyv;
            if (dxr) {
                __m512 v = _mm512_mul_ps(_mm512_mul_ps(gs, va), s);
                if (accumulate_dx)
                    v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, dxr + j), v);
                _mm512_mask_storeu_ps(dxr + j, k, v);
            }
            if (dalpha_part)
                part_add(dalpha_part + j, _mm512_mul_ps(_mm512_mul_ps(gs, xv), s), k);
            if (dgamma_part)
                part_add(dgamma_part + j, _mm512_mul_ps(dyv, t), k);
            if (dbeta_part)
                part_add(dbeta_part + j, dyv, k);
        }
    }
}
