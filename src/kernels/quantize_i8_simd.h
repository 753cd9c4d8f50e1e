/* int8 quantization and absmax (convert.h: keel_quantize_i8_fn, keel_absmax_fn), written once over
 * keel's compute vector (kv, lanes__<isa>.h: a zmm of 16 floats on AVX-512, a ymm of 8 on AVX2,
 * a q register of 4 on NEON) and compiled per ISA by quantize_i8__avx2.c, __avx512.c and
 * __neon.c. Every path gives the bits of the scalar definitions (keel_quantize_i8__scalar,
 * keel_absmax_f32__scalar), tails included: a tail is one masked vector (nothing past n read or
 * written). Include after the ISA's lanes__<isa>.h. */
#ifndef KEEL_KERNELS_QUANTIZE_I8_SIMD_H
#define KEEL_KERNELS_QUANTIZE_I8_SIMD_H

#include <float.h>
#include <math.h>

#include "convert.h"

/* ---- int8 quantization: q = clamp(round_half_even(y / s), -127, 127), NaN -> 0 -------------
 * The quotient is the float32 division y / s of the scalar definition. Division is slow (a
 * vector division, vdivps per 16 values, would be most of the cost), so the vector body first
 * takes t = y * r with r = 1 / s: t and the true quotient v = y / s differ by at most
 * |y/s| * 3 * 2^-23 (three roundings, of 1/s, of y * r and of y / s, each within an ulp whatever
 * the rounding mode; plus 2^-149 where the results are subnormal), which is below 2^-13 for
 * |y/s| < 256. So where every |t| < 200 lies further than 2^-11 from a half-integer, v rounds to
 * the same integer as t (and where |t| >= 200 both clamp the same way); a vector with any value
 * closer to a half-integer (about 1 in 1000 values, and every exact tie) takes the division. The
 * result is the scalar definition's bit for bit. When 1 / s is not a normal float (s 0, subnormal
 * beyond 2^-127, huge, Inf or NaN), every vector takes the division.
 * The clamp comes after the rounding (the same integer: -127 and 127 are integers), so that the
 * rounding done for the check is the result's too; t is NaN exactly where v is (y NaN: r is
 * finite and not 0), and a NaN quotient's lane is made +0 after the clamp (whose min / max give
 * NaN lanes different values on x86 and NEON). */
static int quant_recip(float s, float *r)
{
    const float v = 1.0f / s, a = fabsf(v);
    *r = v;
    return a >= FLT_MIN && a <= FLT_MAX;
}

/* KV_WIDTH floats at p (a whole vector needs no tail mask: the bodies make the tail's after their
 * whole steps, where it is used) */
KEEL_INLINE kv load_whole(const float *p) { return kv_load_n(p, KV_WIDTH, kv_tail_of(0)); }

/* The KV_WIDTH quotients of y, each rounded and clamped (integers in [-127, 127], +0 for NaN). */
KEEL_INLINE kv quant_kv(kv y, kv vr, kv vs, int recip)
{
    kv v, n;
    if (recip) {
        v = kv_mul(y, vr);
        n = kv_round(v);
        const kv_pred near = kv_pred_and(kv_le(kv_set1(0.5f - 0x1p-11f), kv_abs(kv_sub(v, n))),
                                         kv_lt(kv_abs(v), kv_set1(200.0f)));
        if (kv_any(near)) {
            v = kv_div(y, vs);
            n = kv_round(v);
        }
    } else {
        v = kv_div(y, vs);
        n = kv_round(v);
    }
    const kv c = kv_min(kv_max(n, kv_set1(-127.0f)), kv_set1(127.0f));
    return kv_where(kv_eq(v, v), c);
}

/* 4 * KV_WIDTH values a step, packed into one store of as many bytes (64 on AVX-512, 32 on
 * AVX2, 16 on NEON), then a vector at a time, the tail masked. A store per vector instead
 * measured 5-7% slower on AVX-512 and 13-16% on AVX2 (rows of 768 and 4096x768 values, medians
 * of 5 interleaved runs on a loaded machine). */
static void quantize_i8(const float *y, int8_t *q, size_t n, float s)
{
    float r;
    const int recip = quant_recip(s, &r);
    const kv vr = kv_set1(r), vs = kv_set1(s);
    size_t i = 0;
    for (; i + 4 * KV_WIDTH <= n; i += 4 * KV_WIDTH) {
        const float *p = y + i;
        kv_store4_i8(q + i, quant_kv(load_whole(p), vr, vs, recip),
                     quant_kv(load_whole(p + KV_WIDTH), vr, vs, recip),
                     quant_kv(load_whole(p + 2 * KV_WIDTH), vr, vs, recip),
                     quant_kv(load_whole(p + 3 * KV_WIDTH), vr, vs, recip));
    }
    /* masked-off lanes compute on 0 and are not stored */
    const kv_tail t = kv_tail_of(n % KV_WIDTH);
    for (; i < n; i += KV_WIDTH)
        kv_store_i8_n(q + i, quant_kv(kv_load_n(y + i, n - i, t), vr, vs, recip), n - i, t);
}

/* ---- absmax: max |y[j]|, +0 for n == 0; a NaN wins (the scalar loop's first one) -----------
 * Two running maxima of |y| and a predicate of the NaNs seen; when there is one, the scalar loop
 * finds which NaN it returns. Without one, the maximum does not depend on the order, and every
 * |y| is >= +0 (no signed zero to tell apart): the largest lane is the scalar loop's result. */
static float absmax_f32(const float *y, size_t n)
{
    kv m0 = kv_set1(0.0f), m1 = kv_set1(0.0f);
    kv_pred nan = kv_none();
    size_t i = 0;
    for (; i + 2 * KV_WIDTH <= n; i += 2 * KV_WIDTH) {
        const kv a = kv_abs(load_whole(y + i)), b = kv_abs(load_whole(y + i + KV_WIDTH));
        nan = kv_pred_or(nan, kv_unord(a, b));
        m0 = kv_max(m0, a);
        m1 = kv_max(m1, b);
    }
    const kv_tail t = kv_tail_of(n % KV_WIDTH);
    for (; i < n; i += KV_WIDTH) { /* 0.0 past the tail */
        const kv a = kv_abs(kv_load_n(y + i, n - i, t));
        nan = kv_pred_or(nan, kv_unord(a, a));
        m0 = kv_max(m0, a);
    }
    if (kv_any(nan))
        return keel_absmax_f32__scalar(y, n);
    return kv_reduce_max(kv_max(m0, m1));
}

#endif
