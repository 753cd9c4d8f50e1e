/* DyT, float32, AVX2: y = gamma * tanh(alpha * x) + beta and its backward, with the tanh and
 * 1 - tanh^2 of dyt_tanh.h computed 8 lanes at a time, branch-free, each lane taking the
 * branch the scalar definition takes (see f32_dyt__avx512.c; fmaf is _mm256_fmadd_ps): exactly
 * the scalar bits. */
#include "dyt_tanh.h"
#include "kernels.h"
#include "simd_lanes__avx2.h"

#define SET1 _mm256_set1_ps

/* t = tanh(u), s = 1 - tanh(u)^2 of 8 lanes (keel_tanh_sech2_f32). */
KEEL_INLINE void tanh_sech2(__m256 u, __m256 *t, __m256 *s)
{
    const __m256 sign = SET1(-0.0f), one = SET1(1.0f);
    const __m256 a = _mm256_andnot_ps(sign, u);
    const __m256 small = _mm256_cmp_ps(a, SET1(KEEL_TANH_SMALL), _CMP_LT_OQ);
    const __m256 in_range = _mm256_cmp_ps(a, SET1(KEEL_TANH_MAX), _CMP_LE_OQ);
    const __m256 a2 = _mm256_mul_ps(a, a);
    __m256 p = _mm256_fmadd_ps(SET1(KEEL_TANH_P4), a2, SET1(KEEL_TANH_P3));
    p = _mm256_fmadd_ps(p, a2, SET1(KEEL_TANH_P2));
    p = _mm256_fmadd_ps(p, a2, SET1(KEEL_TANH_P1));
    p = _mm256_fmadd_ps(p, a2, SET1(KEEL_TANH_P0));
    const __m256 ts = _mm256_fmadd_ps(_mm256_mul_ps(a, a2), p, a);
    const __m256 ss = _mm256_fnmadd_ps(ts, ts, one); /* -(t t) + 1 = fmaf(-t, t, 1) */
    const __m256 z = _mm256_mul_ps(SET1(-2.0f), a);
    const __m256 j = _mm256_fmadd_ps(z, SET1(KEEL_EXP_LOG2E), SET1(KEEL_EXP_SHIFT));
    const __m256 kf = _mm256_sub_ps(j, SET1(KEEL_EXP_SHIFT));
    const __m256 r = _mm256_fmadd_ps(kf, SET1(-KEEL_EXP_LN2_LO),
                                     _mm256_fmadd_ps(kf, SET1(-KEEL_EXP_LN2_HI), z));
    __m256 c = _mm256_fmadd_ps(SET1(KEEL_EXP_C4), r, SET1(KEEL_EXP_C3));
    c = _mm256_fmadd_ps(c, r, SET1(KEEL_EXP_C2));
    c = _mm256_fmadd_ps(c, r, SET1(KEEL_EXP_C1));
    c = _mm256_fmadd_ps(c, r, SET1(KEEL_EXP_C0));
    const __m256 pe = _mm256_fmadd_ps(_mm256_mul_ps(r, r), c, r);
    const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(j), 23));
    const __m256 e4 = _mm256_and_ps(in_range, _mm256_fmadd_ps(scale, pe, scale));
    const __m256 q2 = _mm256_div_ps(e4, _mm256_fmadd_ps(e4, SET1(0.25f), one));
    const __m256 te = _mm256_fmadd_ps(q2, SET1(-0.5f), one);
    const __m256 se = _mm256_fmadd_ps(_mm256_mul_ps(q2, SET1(-0.25f)), q2, q2);
    /* NaN u: t = s = u. min(-inf, u) is -inf, or u itself (bits untouched) where u is NaN (minps
     * returns its second operand when either is NaN); max(v, that) is then v (v > -inf) or u:
     * a min and two max instead of a compare and two blends (blendv: 2 or 3 uops). */
    const __m256 nan_or_minf = _mm256_min_ps(SET1(-INFINITY), u);
    const __m256 ta = _mm256_blendv_ps(te, ts, small); /* >= +0: or-ing u's sign is copysign */
    *t = _mm256_max_ps(_mm256_or_ps(ta, _mm256_and_ps(u, sign)), nan_or_minf);
    *s = _mm256_max_ps(_mm256_blendv_ps(se, ss, small), nan_or_minf);
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
