/* tanh and its derivative 1 - tanh^2 in float32, defined so that every ISA path can give the
 * same bits: only float adds, multiplies and divides (each rounded once, no FMA), compares,
 * and exact bit manipulations. The SIMD kernels (f32_dyt__avx2.c, f32_dyt__avx512.c) do these
 * very steps lane by lane, branch-free; this scalar function is the definition.
 *
 * With a = |u|:
 *  - a < KEEL_TANH_SMALL: t = u + (u * u^2) * P(u^2), P a degree-5 minimax fit of
 *    (tanh(u) - u) / u^3 on [0, 0.625] (relative error of the fit 1.6e-10); s = 1 - t * t
 *    (t^2 <= 0.31: no cancellation).
 *  - else, from E = exp(-2a) (so nothing overflows): q = 2E / (1 + E) = 1 - tanh(a),
 *    t = sign(u) * (1 - q), s = q * (2 - q). Writing s through q rather than as 1 - t^2 keeps it
 *    accurate where tanh rounds to within an ulp of 1 (1 - t^2 would cancel to 0 or to a few
 *    ulps of 1: the gradient of a saturated DyT unit would be noise). For a > 43.5 (2a past
 *    -87, where exp(-2a) leaves the float range) E is 0: t = +-1 exactly, s = 0.
 *  - u NaN: t = s = u (the same NaN).
 * exp(z), z in [-87, -1.25]: k = round-to-nearest-even(z * log2(e)) by the 1.5 * 2^23 trick,
 * r = (z - k * LN2_HI) - k * LN2_LO (k * LN2_HI is exact: LN2_HI has 16 significant bits),
 * exp(r) = 1 + (r + r^2 * Q(r)), Q a degree-4 minimax fit (relative error 3.2e-9), times 2^k
 * built in the exponent bits (k >= -126: a normal power of two; the product may be subnormal).
 * Measured over every float in [0, 50]: t within 2 ulps of tanh, s within 4 ulps of sech^2
 * (test_block_ops checks samples against the float64 reference). */
#ifndef KEEL_KERNELS_DYT_TANH_H
#define KEEL_KERNELS_DYT_TANH_H

#include <stdint.h>
#include <string.h>

#define KEEL_TANH_SMALL 0.625f
#define KEEL_TANH_P0 -3.333333135e-01f
#define KEEL_TANH_P1 1.333320588e-01f
#define KEEL_TANH_P2 -5.394676328e-02f
#define KEEL_TANH_P3 2.170069702e-02f
#define KEEL_TANH_P4 -8.177383803e-03f
#define KEEL_TANH_P5 2.142949495e-03f

#define KEEL_EXP_MIN -87.0f          /* below: E = 0 */
#define KEEL_EXP_LOG2E 1.44269502163f
#define KEEL_EXP_ROUND 12582912.0f   /* 1.5 * 2^23: v + this - this rounds v to an integer */
#define KEEL_EXP_LN2_HI 0.693145751953125f
#define KEEL_EXP_LN2_LO 1.42860682030941723212e-6f
#define KEEL_EXP_Q0 4.999999404e-01f
#define KEEL_EXP_Q1 1.666651666e-01f
#define KEEL_EXP_Q2 4.166842625e-02f
#define KEEL_EXP_Q3 8.369118907e-03f
#define KEEL_EXP_Q4 1.381376293e-03f

/* exp(z) for z in [KEEL_EXP_MIN, 0]. */
static inline float keel_exp_neg_f32(float z)
{
    const float kf = (z * KEEL_EXP_LOG2E + KEEL_EXP_ROUND) - KEEL_EXP_ROUND;
    const float r = (z - kf * KEEL_EXP_LN2_HI) - kf * KEEL_EXP_LN2_LO;
    const float q = (((KEEL_EXP_Q4 * r + KEEL_EXP_Q3) * r + KEEL_EXP_Q2) * r + KEEL_EXP_Q1) * r +
                    KEEL_EXP_Q0;
    const float p = 1.0f + (r + (r * r) * q);
    const uint32_t bits = (uint32_t)((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* t = tanh(u), s = 1 - tanh(u)^2 (see above). */
static inline void keel_tanh_sech2_f32(float u, float *t, float *s)
{
    if (u != u) {
        *t = u;
        *s = u;
        return;
    }
    const float a = u < 0.0f ? -u : u;
    if (a < KEEL_TANH_SMALL) {
        const float u2 = u * u;
        const float p =
            ((((KEEL_TANH_P5 * u2 + KEEL_TANH_P4) * u2 + KEEL_TANH_P3) * u2 + KEEL_TANH_P2) * u2 +
             KEEL_TANH_P1) * u2 + KEEL_TANH_P0;
        const float tv = u + (u * u2) * p;
        *t = tv;
        *s = 1.0f - tv * tv;
        return;
    }
    const float z = -2.0f * a;
    const float e = z >= KEEL_EXP_MIN ? keel_exp_neg_f32(z) : 0.0f;
    const float q = (2.0f * e) / (1.0f + e);
    const float ta = 1.0f - q;
    *t = u < 0.0f ? -ta : ta;
    *s = q * (2.0f - q);
}

#endif
