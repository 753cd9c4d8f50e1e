/* DyT, float32, AVX2: y = gamma * tanh(alpha * x) + beta and its backward, with the tanh and
 * 1 - tanh^2 of dyt_tanh.h computed 8 lanes at a time, branch-free, each lane taking the
 * branch the scalar definition takes (see f32_dyt__avx512.c): exactly the scalar bits. */
#include "dyt_tanh.h"
#include "kernels.h"
#include "simd_lanes__avx2.h"

#define SET1 _mm256_set1_ps

/* t = tanh(u), s = 1 - tanh(u)^2 of 8 lanes (keel_tanh_sech2_f32). */
KEEL_INLINE void tanh_sech2(__m256 u, __m256 *t, __m256 *s)
{
    const __m256 sign = SET1(-0.0f), one = SET1(1.0f), two = SET1(2.0f);
    const __m256 a = _mm256_andnot_ps(sign, u);
    const __m256 small = _mm256_cmp_ps(a, SET1(KEEL_TANH_SMALL), _CMP_LT_OQ);
    const __m256 isnan = _mm256_cmp_ps(u, u, _CMP_UNORD_Q);
    const __m256 u2 = _mm256_mul_ps(u, u);
    __m256 p = _mm256_add_ps(_mm256_mul_ps(SET1(KEEL_TANH_P5), u2), SET1(KEEL_TANH_P4));
    p = _mm256_add_ps(_mm256_mul_ps(p, u2), SET1(KEEL_TANH_P3));
    p = _mm256_add_ps(_mm256_mul_ps(p, u2), SET1(KEEL_TANH_P2));
    p = _mm256_add_ps(_mm256_mul_ps(p, u2), SET1(KEEL_TANH_P1));
    p = _mm256_add_ps(_mm256_mul_ps(p, u2), SET1(KEEL_TANH_P0));
    const __m256 ts = _mm256_add_ps(u, _mm256_mul_ps(_mm256_mul_ps(u, u2), p));
    const __m256 ss = _mm256_sub_ps(one, _mm256_mul_ps(ts, ts));
    const __m256 z = _mm256_mul_ps(SET1(-2.0f), a);
    const __m256 in_range = _mm256_cmp_ps(z, SET1(KEEL_EXP_MIN), _CMP_GE_OQ);
    const __m256 rnd = SET1(KEEL_EXP_ROUND);
    const __m256 kf = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(z, SET1(KEEL_EXP_LOG2E)), rnd), rnd);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(z, _mm256_mul_ps(kf, SET1(KEEL_EXP_LN2_HI))),
                                   _mm256_mul_ps(kf, SET1(KEEL_EXP_LN2_LO)));
    __m256 q = _mm256_add_ps(_mm256_mul_ps(SET1(KEEL_EXP_Q4), r), SET1(KEEL_EXP_Q3));
    q = _mm256_add_ps(_mm256_mul_ps(q, r), SET1(KEEL_EXP_Q2));
    q = _mm256_add_ps(_mm256_mul_ps(q, r), SET1(KEEL_EXP_Q1));
    q = _mm256_add_ps(_mm256_mul_ps(q, r), SET1(KEEL_EXP_Q0));
    const __m256 pe = _mm256_add_ps(one, _mm256_add_ps(r, _mm256_mul_ps(_mm256_mul_ps(r, r), q)));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(kf), _mm256_set1_epi32(127)), 23);
    const __m256 e = _mm256_and_ps(in_range, _mm256_mul_ps(pe, _mm256_castsi256_ps(bits)));
    const __m256 qq = _mm256_div_ps(_mm256_mul_ps(two, e), _mm256_add_ps(one, e));
    const __m256 te = _mm256_or_ps(_mm256_sub_ps(one, qq), _mm256_and_ps(u, sign));
    const __m256 se = _mm256_mul_ps(qq, _mm256_sub_ps(two, qq));
    *t = _mm256_blendv_ps(_mm256_blendv_ps(te, ts, small), u, isnan);
    *s = _mm256_blendv_ps(_mm256_blendv_ps(se, ss, small), u, isnan);
}

/* 8 floats at p, or the first n of them (the rest 0) */
KEEL_INLINE __m256 load8(const float *p, size_t n, __m256i m)
{
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

KEEL_INLINE void store8(float *p, __m256 v, size_t n, __m256i m)
{
    if (n >= 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, m, v);
}

void keel_f32_dyt_fwd__avx2(size_t rows, size_t dim, const float *x, size_t x_stride, float *y,
                            size_t y_stride, float alpha, const float *gamma, const float *beta)
{
    const __m256 va = SET1(alpha);
    const __m256i mt = k256_mask8(dim % 8);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        for (size_t j = 0; j < dim; j += 8) {
            const size_t n = dim - j;
            __m256 t, s;
            tanh_sech2(_mm256_mul_ps(va, load8(xr + j, n, mt)), &t, &s);
            if (gamma)
                t = _mm256_mul_ps(t, load8(gamma + j, n, mt));
            if (beta)
                t = _mm256_add_ps(t, load8(beta + j, n, mt));
            store8(yr + j, t, n, mt);
        }
    }
}

KEEL_INLINE void part_add(float *p, __m256 v, size_t n, __m256i m)
{
    store8(p, _mm256_add_ps(load8(p, n, m), v), n, m);
}

void keel_f32_dyt_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                            const float *x, size_t x_stride, float alpha, const float *gamma,
                            float *dx, size_t dx_stride, int accumulate_dx, float *dgamma_part,
                            float *dbeta_part, float *dalpha_part)
{
    const __m256 va = SET1(alpha);
    const __m256i mt = k256_mask8(dim % 8);
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride, *xr = x + r * x_stride;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j += 8) {
            const size_t n = dim - j;
            const __m256 xv = load8(xr + j, n, mt), dyv = load8(dyr + j, n, mt);
            __m256 t, s;
            tanh_sech2(_mm256_mul_ps(va, xv), &t, &s);
            const __m256 gs = gamma ? _mm256_mul_ps(dyv, load8(gamma + j, n, mt)) : dyv;
            if (dxr) {
                __m256 v = _mm256_mul_ps(_mm256_mul_ps(gs, va), s);
                if (accumulate_dx)
                    v = _mm256_add_ps(load8(dxr + j, n, mt), v);
                store8(dxr + j, v, n, mt);
            }
            if (dalpha_part)
                part_add(dalpha_part + j, _mm256_mul_ps(_mm256_mul_ps(gs, xv), s), n, mt);
            if (dgamma_part)
                part_add(dgamma_part + j, _mm256_mul_ps(dyv, t), n, mt);
            if (dbeta_part)
                part_add(dbeta_part + j, dyv, n, mt);
        }
    }
}
