/* DyT, float32, written once over keel's compute vector (kv, lanes__<isa>.h: a zmm on AVX-512,
 * a ymm on AVX2, a q register of 4 floats on NEON) and compiled per ISA by f32_dyt__avx2.c,
 * __avx512.c and __neon.c:
 * y = gamma * tanh(alpha * x) + beta and its backward, with the tanh and 1 - tanh^2 of
 * dyt_tanh.h computed a vector at a time, branch-free: both branches (the polynomial of small
 * arguments and the exp form of the others) are evaluated and each lane takes the one the scalar
 * definition takes, so every lane holds exactly the scalar bits (each fmaf of the definition is
 * one kv_fma, rounded once as it is). A row's tail is masked (nothing past a row is read or
 * written). Elementwise: a NaN affects its own element only. */
#ifndef KEEL_KERNELS_F32_DYT_SIMD_H
#define KEEL_KERNELS_F32_DYT_SIMD_H

#include "dyt_tanh.h"

/* t = tanh(u), s = 1 - tanh(u)^2 of a vector (keel_tanh_sech2_f32). */
KEEL_INLINE void tanh_sech2(kv u, kv *t, kv *s)
{
    const kv one = kv_set1(1.0f);
    const kv a = kv_abs(u);
    const kv_pred small = kv_lt(a, kv_set1(KEEL_TANH_SMALL));
    const kv_pred in_range = kv_le(a, kv_set1(KEEL_TANH_MAX));
    /* a < 0.625: t = a + (a * a^2) * P(a^2), s = 1 - t^2 */
    const kv a2 = kv_mul(a, a);
    kv p = kv_fma(kv_set1(KEEL_TANH_P4), a2, kv_set1(KEEL_TANH_P3));
    p = kv_fma(p, a2, kv_set1(KEEL_TANH_P2));
    p = kv_fma(p, a2, kv_set1(KEEL_TANH_P1));
    p = kv_fma(p, a2, kv_set1(KEEL_TANH_P0));
    const kv ts = kv_fma(kv_mul(a, a2), p, a);
    const kv ss = kv_fnma(ts, ts, one); /* fmaf(-t, t, 1) */
    /* else: 4E = 4 exp(-2a) (0 above 43.5), Q = 4E / (1 + E), t = 1 - Q/2, s = Q - Q^2/4 */
    const kv z = kv_mul(kv_set1(-2.0f), a);
    const kv j = kv_fma(z, kv_set1(KEEL_EXP_LOG2E), kv_set1(KEEL_EXP_SHIFT));
    const kv kf = kv_sub(j, kv_set1(KEEL_EXP_SHIFT));
    const kv r = kv_fma(kf, kv_set1(-KEEL_EXP_LN2_LO), kv_fma(kf, kv_set1(-KEEL_EXP_LN2_HI), z));
    kv c = kv_fma(kv_set1(KEEL_EXP_C4), r, kv_set1(KEEL_EXP_C3));
    c = kv_fma(c, r, kv_set1(KEEL_EXP_C2));
    c = kv_fma(c, r, kv_set1(KEEL_EXP_C1));
    c = kv_fma(c, r, kv_set1(KEEL_EXP_C0));
    const kv pe = kv_fma(kv_mul(r, r), c, r);
    const kv scale = kv_exponent_bits(j);
    const kv e4 = kv_where(in_range, kv_fma(scale, pe, scale));
    const kv q2 = kv_div(e4, kv_fma(e4, kv_set1(0.25f), one));
    const kv te = kv_fma(q2, kv_set1(-0.5f), one);
    const kv se = kv_fma(kv_mul(q2, kv_set1(-0.25f)), q2, q2);
    /* t: u where u is NaN, else the branch's |t| (>= +0) with u's sign; s: u where NaN */
    *t = kv_nan_passes(kv_with_sign_of(kv_select(small, ts, te), u), u);
    *s = kv_nan_passes(kv_select(small, ss, se), u);
}

static void dyt_fwd(size_t rows, size_t dim, const float *x, size_t x_stride, float *y,
                    size_t y_stride, float alpha, const float *gamma, const float *beta)
{
    const kv va = kv_set1(alpha);
    const kv_tail m = kv_tail_of(dim % KV_WIDTH);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        for (size_t j = 0; j < dim; j += KV_WIDTH) {
            const size_t n = dim - j;
            kv t, s;
            tanh_sech2(kv_mul(va, kv_load_n(xr + j, n, m)), &t, &s);
            if (gamma)
                t = kv_mul(t, kv_load_n(gamma + j, n, m));
            if (beta)
                t = kv_add(t, kv_load_n(beta + j, n, m));
            kv_store_n(yr + j, t, n, m);
        }
    }
}

/* part[0..n) += v */
KEEL_INLINE void part_add(float *p, kv v, size_t n, kv_tail m)
{
    kv_store_n(p, kv_add(kv_load_n(p, n, m), v), n, m);
}

static void dyt_bwd(size_t rows, size_t dim, const float *dy, size_t dy_stride, const float *x,
                    size_t x_stride, float alpha, const float *gamma, float *dx, size_t dx_stride,
                    int accumulate_dx, float *dgamma_part, float *dbeta_part, float *dalpha_part)
{
    const kv va = kv_set1(alpha);
    const kv_tail m = kv_tail_of(dim % KV_WIDTH);
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride, *xr = x + r * x_stride;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j += KV_WIDTH) {
            const size_t n = dim - j;
            const kv xv = kv_load_n(xr + j, n, m), dyv = kv_load_n(dyr + j, n, m);
            kv t, s;
            tanh_sech2(kv_mul(va, xv), &t, &s);
            const kv gs = gamma ? kv_mul(dyv, kv_load_n(gamma + j, n, m)) : dyv;
            if (dxr) {
                kv v = kv_mul(kv_mul(gs, va), s);
                if (accumulate_dx)
                    v = kv_add(kv_load_n(dxr + j, n, m), v);
                kv_store_n(dxr + j, v, n, m);
            }
            if (dalpha_part)
                part_add(dalpha_part + j, kv_mul(kv_mul(gs, xv), s), n, m);
            if (dgamma_part)
                part_add(dgamma_part + j, kv_mul(dyv, t), n, m);
            if (dbeta_part)
                part_add(dbeta_part + j, dyv, n, m);
        }
    }
}

#endif
