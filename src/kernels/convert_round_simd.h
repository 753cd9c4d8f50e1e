/* float32 -> bf16 rounding over the conversions' lane vocabulary (convert_lanes__<isa>.h),
 * written once for the conversion kernels (convert_simd.h) and the norms' 16-bit rows
 * (row_storage_simd.h): the scalar definition's integer rounding lane by lane,
 * u + 0x7fff + (bit 16 of u), the bf16 pattern in the low 16 bits of each 32-bit lane: nearest
 * even, overflow carrying into Inf, subnormals rounded; a NaN keeps its sign and top payload and
 * gets the quiet bit, (u >> 16) | 0x40. The select comes after the shifts: selecting on u before
 * one shift, (u | 0x400000) >> 16, saves a shift but GCC then reads the source four times
 * (memory operands) instead of three, and it measured 9-13% slower on AVX-512 at 1 MiB (L2). In
 * this order GCC 12 compiles the conversion kernels to the instructions of the hand-written
 * files they replaced. Include after convert_lanes__<isa>.h. */
#ifndef KEEL_KERNELS_CONVERT_ROUND_SIMD_H
#define KEEL_KERNELS_CONVERT_ROUND_SIMD_H

KEEL_INLINE cv_u32 cv_bf16_round(cv_u32 u)
{
    const cv_u32 abs_mask = cv_set1(0x7fffffffu), inf = cv_set1(0x7f800000u);
    const cv_u32 bias = cv_set1(0x7fffu), one = cv_set1(1u), quiet = cv_set1(0x0040u);
    const cv_u32 top = cv_shr16(u);
    const cv_pred is_nan = cv_gt(cv_and(u, abs_mask), inf);
    const cv_u32 rounded = cv_shr16(cv_add(u, cv_add(bias, cv_and(top, one))));
    return cv_select(is_nan, cv_or(top, quiet), rounded);
}

#endif
