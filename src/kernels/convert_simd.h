/* The storage conversions (float32 <-> bf16 / f16, convert.h), written once over the
 * conversions' lane vocabulary (convert_lanes__<isa>.h) and compiled per ISA by convert__avx2.c,
 * __avx512.c and __neon.c. CV_WIDTH values a step, the last n % CV_WIDTH by the scalar
 * definition (convert__scalar.c), so every path has its bits:
 *  - bf16 -> f32: the pattern shifted into the top half of a float32 (exact; a NaN untouched, as
 *    the scalar shift);
 *  - f32 -> bf16: the scalar definition's integer rounding lane by lane (convert_round_simd.h);
 *  - f16 <-> f32: the ISA's conversion instruction (F16C / AVX-512 vcvtps2ph, NEON fcvtn / fcvtl),
 *    whose bits are the scalar definition's (the lane headers say why).
 * Include after the ISA's convert_lanes__<isa>.h. */
#ifndef KEEL_KERNELS_CONVERT_SIMD_H
#define KEEL_KERNELS_CONVERT_SIMD_H

#include "convert.h"
#include "convert_round_simd.h"

static void convert_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + CV_WIDTH <= n; i += CV_WIDTH)
        cv_store32(dst + i, cv_widen_high(cv_load16(src + i)));
    keel_bf16_to_f32__scalar(src + i, dst + i, n - i);
}

static void convert_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + CV_WIDTH <= n; i += CV_WIDTH)
        cv_store16(dst + i, cv_narrow(cv_bf16_round(cv_load32(src + i))));
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
