/* int8 quantization and absmax, AVX-512 F/BW/DQ, 16 values a vector: the body of quantize_i8_simd.h
 * over lanes__avx512.h. */
#include "kernels.h"
#include "convert.h"
#include "lanes__avx512.h"
#include "quantize_i8_simd.h"

void keel_quantize_i8__avx512(const float *y, int8_t *q, size_t n, float s)
{
    quantize_i8(y, q, n, s);
}
float keel_absmax_f32__avx512(const float *y, size_t n) { return absmax_f32(y, n); }
