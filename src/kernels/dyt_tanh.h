/* tanh and its derivative 1 - tanh^2 in float32, defined so that every ISA path can give the
 * same bits: only float adds, multiplies, divides and fused multiply-adds (fmaf: one rounding,
 * as _mm*_fmadd_ps; never left to the compiler, the library builds with -ffp-contract=off),
 * compares, and exact bit manipulations. The SIMD kernels (f32_dyt__avx2.c, f32_dyt__avx512.c,
 * f32_dyt__neon.c) do these very steps lane by lane, branch-free; this scalar function is the
 * definition.
 *
 * With a = |u| (t is computed for a and given u's sign at the end: t(-u) = -t(u) and s(-u) =
 * s(u) bit for bit, t(-0) = -0):
 *  - a < KEEL_TANH_SMALL: t = a + (a * a^2) * P(a^2) (one fma), P a degree-4 minimax fit of
 *    (tanh(a) - a) / a^3 on [0, 0.625] (relative error of t from the fit 4.5e-9 with the
 *    coefficients rounded to float); s = 1 - t * t (one fma; t^2 <= 0.31: no cancellation).
 *  - else, from E = exp(-2a) (so nothing overflows): Q = 4E / (1 + E) = 2 (1 - tanh(a)),
 *    t = 1 - Q / 2 and s = Q - Q^2 / 4 = q (2 - q) with q = 1 - tanh(a) (one fma each).
 *    Writing s through q rather than as 1 - t^2 keeps it accurate where tanh rounds to within
 *    an ulp of 1 (1 - t^2 would cancel to 0 or to a few ulps of 1: the gradient of a saturated
 *    DyT unit would be noise). For a > 43.5 (2a past 87: s below 7e-38) E is taken as 0: t = 1
 *    exactly, s = 0.
 *  - u NaN: t = s = u (the same NaN).
 * 4E for z = -2a in [-87, -1.25]: k = round-to-nearest(z * log2(e)) by the 1.5 * 2^23 trick in
 * one fma (j = z * log2(e) + KEEL_EXP_SHIFT rounds to an integer; k = j - KEEL_EXP_SHIFT);
 * r = z - k * ln2 in two fmas (the first, with ln2 rounded to float, is exact: checked for every
 * float a), |r| <= 0.3466; exp(r) - 1 = p = r + r^2 * C(r) (one fma), C a degree-4 minimax fit
 * for the relative error of exp(r) (3.2e-9); the low bits of j hold k + 129, shifted into the
 * exponent field they give 2^(k+2) (k >= -126 here: normal); 4E = 2^(k+2) * (1 + p) in one
 * fma, and 1 + E = 4E / 4 + 1 in one more. (One exp-based formula for every a, tanh =
 * -expm1(-2a) / (2 + expm1(-2a)) with the same single division, was tried: 2 vector ops fewer
 * of about 35, but t up to 1.9-2.3 ulps off below 0.625, the roundings of expm1 and of the
 * denominator adding up.)
 *
 * Accuracy, measured over every float in [0, 43.5] against double tanh and sech^2 (1 - tanh^2
 * below 1, 4e / (1 + e)^2 above, e = exp(-2u)): t within 1.466 ulps of tanh (0.77 below
 * 0.625), s within 3.22 ulps of sech^2 (1.19 below 0.625). The previous definition (the same
 * two branches without fma, P of degree 5), measured the same way: 1.466 and 3.46 ulps (and
 * t(-0) was +0). test_dyt_tanh checks every 64th float against double, test_block_ops the
 * kernels.
 *
 * Speed, one thread, Xeon with AVX-512, before (the previous definition) -> now, ranges over
 * runs interleaved with it: `keel_profile_loop dytf 4096 4096 8` (fastest of 8 calls) AVX-512
 * 13.0-14.2 -> 7.9-10.3 ms, AVX2 (KEEL_ISA=avx2) 19.8-20.5 -> 12.0-14.2 ms; `dytb` AVX-512
 * 20.3-22.4 -> 17.3-18.6 ms (the kernel moves its 16 bytes an element near the copy's bandwidth
 * at this size), AVX2 29.2-31.9 -> 20.8-23.8 ms. `keel bench --rows 4096 --dim 1024 --threads
 * 1`, fraction of the copy floor: dyt fwd AVX-512 0.41-0.45 -> 0.61-0.63, AVX2 0.28-0.30 ->
 * 0.42-0.44; dyt bwd AVX-512 0.34 -> 0.45-0.47, AVX2 0.21-0.23 -> 0.29-0.31. The kernels alone
 * on 64 x 4096 floats (in L2), ns an element: AVX-512 forward 0.68-0.77 -> 0.43-0.48, backward
 * 0.89-0.98 -> 0.62-0.70; AVX2 forward 1.04-1.14 -> 0.65-0.74, backward 1.44-1.57 -> 0.96-1.11:
 * about 35 vector ops a lane (was about 55, without fma). The scalar path calls libm's fmaf
 * (it is built without -mfma): about 4 times slower than before, 11 ns an element forward. */
#ifndef KEEL_KERNELS_DYT_TANH_H
#define KEEL_KERNELS_DYT_TANH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define KEEL_TANH_SMALL 0.625f
#define KEEL_TANH_P0 (-0x1.555532p-2f) /* ~ -1/3 */
#define KEEL_TANH_P1 0x1.1106f6p-3f
#define KEEL_TANH_P2 (-0x1.b835a4p-5f)
#define KEEL_TANH_P3 0x1.51f8cep-6f
#define KEEL_TANH_P4 (-0x1.750ce2p-8f)

#define KEEL_TANH_MAX 43.5f          /* above: E = 0, t = 1, s = 0 */
#define KEEL_EXP_LOG2E 0x1.715476p+0f
#define KEEL_EXP_SHIFT 12583041.0f   /* 1.5 * 2^23 + 127 + 2: j's low bits are k + 129 */
#define KEEL_EXP_LN2_HI 0x1.62e43p-1f /* ln2 rounded to float */
#define KEEL_EXP_LN2_LO (-0x1.05c61p-29f) /* ln2 - KEEL_EXP_LN2_HI */
#define KEEL_EXP_C0 0x1.fffffcp-2f   /* ~ 1/2 */
#define KEEL_EXP_C1 0x1.555492p-3f
#define KEEL_EXP_C2 0x1.5558bep-5f
#define KEEL_EXP_C3 0x1.1239ecp-7f
#define KEEL_EXP_C4 0x1.6a4004p-10f

/* 4 * exp(z) for z = -2a in [-2 * KEEL_TANH_MAX, 0] (see above). */
static inline float keel_exp4_neg_f32(float z)
{
    const float j = fmaf(z, KEEL_EXP_LOG2E, KEEL_EXP_SHIFT);
    const float kf = j - KEEL_EXP_SHIFT;
    const float r = fmaf(kf, -KEEL_EXP_LN2_LO, fmaf(kf, -KEEL_EXP_LN2_HI, z));
    const float c =
        fmaf(fmaf(fmaf(fmaf(KEEL_EXP_C4, r, KEEL_EXP_C3), r, KEEL_EXP_C2), r, KEEL_EXP_C1), r,
             KEEL_EXP_C0);
    const float p = fmaf(r * r, c, r);
    uint32_t bits;
    memcpy(&bits, &j, sizeof bits);
    bits <<= 23;
    float scale; /* 2^(k+2) */
    memcpy(&scale, &bits, sizeof scale);
    return fmaf(scale, p, scale);
}

/* t = tanh(u), s = 1 - tanh(u)^2 (see above). */
static inline void keel_tanh_sech2_f32(float u, float *t, float *s)
{
    if (u != u) {
        *t = u;
        *s = u;
        return;
    }
    const float a = fabsf(u);
    float ta, sv; /* ta >= +0 */
    if (a < KEEL_TANH_SMALL) {
        const float a2 = a * a;
        const float p =
            fmaf(fmaf(fmaf(fmaf(KEEL_TANH_P4, a2, KEEL_TANH_P3), a2, KEEL_TANH_P2), a2,
                      KEEL_TANH_P1), a2, KEEL_TANH_P0);
        ta = fmaf(a * a2, p, a);
        sv = fmaf(-ta, ta, 1.0f);
    } else {
        const float e4 = a <= KEEL_TANH_MAX ? keel_exp4_neg_f32(-2.0f * a) : 0.0f;
        const float q2 = e4 / fmaf(e4, 0.25f, 1.0f); /* 2 (1 - tanh(a)) */
        ta = fmaf(q2, -0.5f, 1.0f);
        sv = fmaf(q2 * -0.25f, q2, q2);
    }
    *t = copysignf(ta, u);
    *s = sv;
}

#endif
