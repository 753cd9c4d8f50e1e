/* DyT, float32, AVX-512: y = gamma * tanh(alpha * x) + beta and its backward, with the tanh
 * and 1 - tanh^2 of dyt_tanh.h computed 16 lanes at a time, branch-free: both branches (the
 * polynomial of small arguments and the exp form of the others) are evaluated and each lane
 * takes the one the scalar definition takes, so every lane holds exactly the scalar bits. */
#include "dyt_tanh.h"
#include "kernels.h"
#include "simd_lanes__avx512.h"

/* t = tanh(u), s = 1 - tanh(u)^2 of 16 lanes (keel_tanh_sech2_f32). */
KEEL_INLINE void tanh_sech2(__m512 u, __m512 *t, __m512 *s)
{
    const __m512 sign = _mm512_set1_ps(-0.0f), one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    const __m512 a = _mm512_andnot_ps(sign, u);
    const __mmask16 small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(KEEL_TANH_SMALL), _CMP_LT_OQ);
    const __mmask16 isnan = _mm512_cmp_ps_mask(u, u, _CMP_UNORD_Q);
    /* |u| < 0.625: u + (u * u^2) * P(u^2) */
    const __m512 u2 = _mm512_mul_ps(u, u);
    __m512 p = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(KEEL_TANH_P5), u2), _mm512_set1_ps(KEEL_TANH_P4));
    p = _mm512_add_ps(_mm512_mul_ps(p, u2), _mm512_set1_ps(KEEL_TANH_P3));
    p = _mm512_add_ps(_mm512_mul_ps(p, u2), _mm512_set1_ps(KEEL_TANH_P2));
    p = _mm512_add_ps(_mm512_mul_ps(p, u2), _mm512_set1_ps(KEEL_TANH_P1));
    p = _mm512_add_ps(_mm512_mul_ps(p, u2), _mm512_set1_ps(KEEL_TANH_P0));
    const __m512 ts = _mm512_add_ps(u, _mm512_mul_ps(_mm512_mul_ps(u, u2), p));
    const __m512 ss = _mm512_sub_ps(one, _mm512_mul_ps(ts, ts));
    /* else: E = exp(-2|u|) (0 below -87), q = 2E / (1 + E), t = sign(u) (1 - q), s = q (2 - q) */
    const __m512 z = _mm512_mul_ps(_mm512_set1_ps(-2.0f), a);
    const __mmask16 in_range = _mm512_cmp_ps_mask(z, _mm512_set1_ps(KEEL_EXP_MIN), _CMP_GE_OQ);
    const __m512 rnd = _mm512_set1_ps(KEEL_EXP_ROUND);
    const __m512 kf = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(z, _mm512_set1_ps(KEEL_EXP_LOG2E)), rnd), rnd);
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(z, _mm512_mul_ps(kf, _mm512_set1_ps(KEEL_EXP_LN2_HI))),
                                   _mm512_mul_ps(kf, _mm512_set1_ps(KEEL_EXP_LN2_LO)));
    __m512 q = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(KEEL_EXP_Q4), r), _mm512_set1_ps(KEEL_EXP_Q3));
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(KEEL_EXP_Q2));
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(KEEL_EXP_Q1));
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(KEEL_EXP_Q0));
    const __m512 pe = _mm512_add_ps(one, _mm512_add_ps(r, _mm512_mul_ps(_mm512_mul_ps(r, r), q)));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(kf), _mm512_set1_epi32(127)), 23);
    const __m512 e = _mm512_maskz_mov_ps(in_range, _mm512_mul_ps(pe, _mm512_castsi512_ps(bits)));
    const __m512 qq = _mm512_div_ps(_mm512_mul_ps(two, e), _mm512_add_ps(one, e));
    const __m512 ta = _mm512_sub_ps(one, qq);
    const __m512 te = _mm512_or_ps(ta, _mm512_and_ps(u, sign)); /* ta > 0: -ta for u < 0 */
    const __m512 se = _mm512_mul_ps(qq, _mm512_sub_ps(two, qq));
    *t = _mm512_mask_mov_ps(_mm512_mask_mov_ps(te, small, ts), isnan, u);
    *s = _mm512_mask_mov_ps(_mm512_mask_mov_ps(se, small, ss), isnan, u);
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
