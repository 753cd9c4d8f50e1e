/* The storage conversions, AVX2 + F16C, 8 values a step: the body of convert_simd.h over
 * convert_lanes__avx2.h. */
#include "convert.h"
#include "convert_lanes__avx2.h"
#include "convert_simd.h"

void keel_bf16_to_f32__avx2(const uint16_t *src, float *dst, size_t n)
{
    convert_bf16_to_f32(src, dst, n);
}
void keel_f32_to_bf16__avx2(const float *src, uint16_t *dst, size_t n)
{
    convert_f32_to_bf16(src, dst, n);
}
void keel_f16_to_f32__avx2(const uint16_t *src, float *dst, size_t n)
{
    convert_f16_to_f32(src, dst, n);
}
void keel_f32_to_f16__avx2(const float *src, uint16_t *dst, size_t n)
{
    convert_f32_to_f16(src, dst, n);
}
