/* The storage conversions (float32 <-> bf16 / f16, convert.h), written once over the
 * conversions' lane vocabulary (convert_lanes__<isa>.h) and compiled per ISA by convert__avx2.c,
 * __avx512.c and __neon.c. CV_WIDTH values a step, the last n % CV_WIDTH by the scalar
 * definition (convert__scalar.c), so every path has its bits:
 *  - bf16 -> f32: the pattern shifted into the top half of a float32 (exact; a NaN untouched, as
 *    the scalar shift);
 *  - f32 -> bf16: the scalar definition's integer rounding lane by lane, u + 0x7fff + (bit 16 of
 *    u), top half kept: nearest even, overflow carrying into Inf, subnormals rounded; a NaN keeps
 *    its sign and top payload and gets the quiet bit, (u >> 16) | 0x40. The select comes after
 *    the shifts: selecting on u before one shift, (u | 0x400000) >> 16, saves a shift but GCC
 *    then reads the source four times (memory operands) instead of three, and it measured 9-13%
 *    slower on AVX-512 at 1 MiB (L2; three interleaved runs on a loaded machine). In this order
 *    GCC 12 compiles every x86 kernel to the instructions of the hand-written files it replaced;
 *  - f16 <-> f32: the ISA's conversion instruction (F16C / AVX-512 vcvtps2ph, NEON fcvtn / fcvtl),
 *    whose bits are the scalar definition's (the lane headers say why).
 * Include after the ISA's convert_lanes__<isa>.h. */
#ifndef KEEL_KERNELS_CONVERT_SIMD_H
#define KEEL_KERNELS_CONVERT_SIMD_H

#include "convert.h"

static void convert_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + CV_WIDTH <= n; i += CV_WIDTH)
        cv_store32(dst + i, cv_widen_high(cv_load16(src + i)));
    keel_bf16_to_f32__scalar(src + i, dst + i, n - i);
}

static void convert_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
    const cv_u32 abs_mask = cv_set1(0x7fffffffu), inf = cv_set1(0x7f800000u);
    const cv_u32 bias = cv_set1(0x7fffu), one = cv_set1(1u), quiet = cv_set1(0x0040u);
    size_t i = 0;
    for (; i + CV_WIDTH <= n; i += CV_WIDTH) {
        const cv_u32 u = cv_load32(src + i), top = cv_shr16(u);
        const cv_pred is_nan = cv_gt(cv_and(u, abs_mask), inf);
        const cv_u32 rounded = cv_shr16(cv_add(u, cv_add(bias, cv_and(top, one))));
        cv_store16(dst + i, cv_narrow(cv_select(is_nan, cv_or(top, quiet), rounded)));
    }
    keel_f32_to_bf16__scalar(src + i, dst + i, n - i);
}

static void convert_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + CV_WIDTH <= n; i += CV_WIDTH)
        cv_store32(dst + i, cv_f16_to_f32(cv_load16(src + i)));
    keel_f16_to_f32__scalar(src + i, dst + i, n - i);
}

static void convert_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + CV_WIDTH <= n; i += CV_WIDTH)
        cv_store16(dst + i, cv_f32_to_f16(cv_load32(src + i)));
    keel_f32_to_f16__scalar(src + i, dst + i, n - i);
}

#endif
