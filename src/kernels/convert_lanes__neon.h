/* The conversions' lane vocabulary on aarch64 NEON (the names of convert_lanes__avx2.h):
 * CV_WIDTH = 8 values a step, two q registers of float32 bits beside one of bf16/f16 bits.
 * Widening a bf16 is one ushll #16 per half, narrowing one xtn per half. The f16 conversions
 * are fcvtl / fcvtn (vcvt_f32_f16, vcvt_f16_f32): exact widening, narrowing rounded to nearest
 * even with subnormals kept, a NaN made quiet with its sign and top payload bits kept (FPCR's
 * Linux defaults: RN, FZ = FZ16 = 0, DN = 0, AHP = 0), the scalar definition's bits (convert.h).
 * NEON has no baseline bf16 conversion (BFCVTN is the optional FEAT_BF16), so f32 -> bf16 is the
 * integer rounding of convert_simd.h. Include only from *__neon.c files. */
#ifndef KEEL_KERNELS_CONVERT_LANES_NEON_H
#define KEEL_KERNELS_CONVERT_LANES_NEON_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

#ifndef KEEL_INLINE
#define KEEL_INLINE static inline __attribute__((always_inline))
#endif

#define CV_WIDTH 8
typedef struct cv_u32 {
    uint32x4_t lo, hi;
} cv_u32;
typedef uint16x8_t cv_u16;
typedef cv_u32 cv_pred;

KEEL_INLINE cv_u16 cv_load16(const uint16_t *p) { return vld1q_u16(p); }
KEEL_INLINE void cv_store16(uint16_t *p, cv_u16 v) { vst1q_u16(p, v); }
/* no streaming store on this path (lanes__neon.h: kr_streamable is 0) */
KEEL_INLINE void cv_stream16(uint16_t *p, cv_u16 v) { vst1q_u16(p, v); }
KEEL_INLINE cv_u32 cv_load32(const float *p)
{
    const cv_u32 v = {vreinterpretq_u32_f32(vld1q_f32(p)), vreinterpretq_u32_f32(vld1q_f32(p + 4))};
    return v;
}
KEEL_INLINE void cv_store32(float *p, cv_u32 v)
{
    vst1q_f32(p, vreinterpretq_f32_u32(v.lo));
    vst1q_f32(p + 4, vreinterpretq_f32_u32(v.hi));
}

KEEL_INLINE cv_u32 cv_set1(uint32_t a)
{
    const cv_u32 v = {vdupq_n_u32(a), vdupq_n_u32(a)};
    return v;
}
KEEL_INLINE cv_u32 cv_and(cv_u32 a, cv_u32 b)
{
    const cv_u32 v = {vandq_u32(a.lo, b.lo), vandq_u32(a.hi, b.hi)};
    return v;
}
KEEL_INLINE cv_u32 cv_or(cv_u32 a, cv_u32 b)
{
    const cv_u32 v = {vorrq_u32(a.lo, b.lo), vorrq_u32(a.hi, b.hi)};
    return v;
}
KEEL_INLINE cv_u32 cv_add(cv_u32 a, cv_u32 b)
{
    const cv_u32 v = {vaddq_u32(a.lo, b.lo), vaddq_u32(a.hi, b.hi)};
    return v;
}
KEEL_INLINE cv_u32 cv_shr16(cv_u32 a)
{
    const cv_u32 v = {vshrq_n_u32(a.lo, 16), vshrq_n_u32(a.hi, 16)};
    return v;
}
KEEL_INLINE cv_pred cv_gt(cv_u32 a, cv_u32 b)
{
    const cv_pred p = {vcgtq_u32(a.lo, b.lo), vcgtq_u32(a.hi, b.hi)};
    return p;
}
KEEL_INLINE cv_u32 cv_select(cv_pred p, cv_u32 a, cv_u32 b)
{
    const cv_u32 v = {vbslq_u32(p.lo, a.lo, b.lo), vbslq_u32(p.hi, a.hi, b.hi)};
    return v;
}

KEEL_INLINE cv_u32 cv_widen_high(cv_u16 h)
{
    const cv_u32 v = {vshll_n_u16(vget_low_u16(h), 16), vshll_high_n_u16(h, 16)};
    return v;
}
KEEL_INLINE cv_u16 cv_narrow(cv_u32 u) { return vmovn_high_u32(vmovn_u32(u.lo), u.hi); }

KEEL_INLINE cv_u32 cv_f16_to_f32(cv_u16 h)
{
    const float16x8_t f = vreinterpretq_f16_u16(h);
    const cv_u32 v = {vreinterpretq_u32_f32(vcvt_f32_f16(vget_low_f16(f))),
                      vreinterpretq_u32_f32(vcvt_high_f32_f16(f))};
    return v;
}
KEEL_INLINE cv_u16 cv_f32_to_f16(cv_u32 u)
{
    const float16x4_t lo = vcvt_f16_f32(vreinterpretq_f32_u32(u.lo));
    return vreinterpretq_u16_f16(vcvt_high_f16_f32(lo, vreinterpretq_f32_u32(u.hi)));
}

#endif
