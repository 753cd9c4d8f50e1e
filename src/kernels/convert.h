/* Conversions between the storage dtypes and float32, and float32 -> int8 quantization.
 * Every path gives the same bits: bf16/f16 -> f32 is exact; f32 -> bf16/f16 rounds to nearest
 * even, once, with IEEE subnormals (no flush to zero); a NaN stays a NaN, made quiet, with the
 * sign and the top payload bits kept (what F16C's vcvtps2ph does). Used by the operator layer
 * to stage low-precision rows through the float32 kernels, so that all arithmetic is float32
 * or wider and the output is rounded once. */
#ifndef KEEL_KERNELS_CONVERT_H
#define KEEL_KERNELS_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

typedef void (*keel_to_f32_fn)(const uint16_t *src, float *dst, size_t n);
typedef void (*keel_from_f32_fn)(const float *src, uint16_t *dst, size_t n);
/* q[j] = keel_quantize_i8(y[j], s) for j < n, any s (bitwise the scalar definition). */
typedef void (*keel_quantize_i8_fn)(const float *y, int8_t *q, size_t n, float s);
/* max |y[j]| over j < n, +0 for n == 0; a NaN wins (the first NaN, its sign cleared), as the
 * scalar loop of keel_absmax_f32__scalar. */
typedef float (*keel_absmax_fn)(const float *y, size_t n);

typedef struct keel_convert_kernels {
    keel_to_f32_fn bf16_to_f32, f16_to_f32;
    keel_from_f32_fn f32_to_bf16, f32_to_f16;
    keel_quantize_i8_fn quantize_i8;
    keel_absmax_fn absmax;
} keel_convert_kernels;

/* The conversion kernels of an ISA path (NULL when not compiled in), chosen once by the context
 * (ctx->convert). avx512_bf16: the CPU has AVX512_BF16 (keel_cpu_has_avx512_bf16, core/cpu.h);
 * the AVX-512 path then uses vcvtne2ps2bf16 for f32 -> bf16 when this build has that kernel
 * (same bits: the instruction's flush of float32 subnormal inputs is undone by the integer
 * rounding on the vectors that hold one). */
const keel_convert_kernels *keel_convert_kernels_for(keel_isa isa, int avx512_bf16);

/* One value, scalar: the definition every path matches. */
float keel_bf16_bits_to_f32(uint16_t h);
uint16_t keel_f32_to_bf16_bits(float f);
float keel_f16_bits_to_f32(uint16_t h);
uint16_t keel_f32_to_f16_bits(float f);

/* int8 quantization of one value: q = clamp(round_half_even(y / s), -127, 127); NaN -> 0. */
int8_t keel_quantize_i8(float y, float s);

void keel_quantize_i8__scalar(const float *, int8_t *, size_t, float);
void keel_quantize_i8__avx2(const float *, int8_t *, size_t, float);
void keel_quantize_i8__avx512(const float *, int8_t *, size_t, float);
void keel_quantize_i8__neon(const float *, int8_t *, size_t, float);
float keel_absmax_f32__scalar(const float *, size_t);
float keel_absmax_f32__avx2(const float *, size_t);
float keel_absmax_f32__avx512(const float *, size_t);
float keel_absmax_f32__neon(const float *, size_t);
/* f32 -> bf16 with AVX512_BF16 (only where the CPU has it: keel_cpu_has_avx512_bf16()). */
void keel_f32_to_bf16__avx512bf16(const float *, uint16_t *, size_t);

void keel_bf16_to_f32__scalar(const uint16_t *, float *, size_t);
void keel_f16_to_f32__scalar(const uint16_t *, float *, size_t);
void keel_f32_to_bf16__scalar(const float *, uint16_t *, size_t);
void keel_f32_to_f16__scalar(const float *, uint16_t *, size_t);
void keel_bf16_to_f32__avx2(const uint16_t *, float *, size_t);
void keel_f16_to_f32__avx2(const uint16_t *, float *, size_t);
void keel_f32_to_bf16__avx2(const float *, uint16_t *, size_t);
void keel_f32_to_f16__avx2(const float *, uint16_t *, size_t);
void keel_bf16_to_f32__avx512(const uint16_t *, float *, size_t);
void keel_f16_to_f32__avx512(const uint16_t *, float *, size_t);
void keel_f32_to_bf16__avx512(const float *, uint16_t *, size_t);
void keel_f32_to_f16__avx512(const float *, uint16_t *, size_t);
void keel_bf16_to_f32__neon(const uint16_t *, float *, size_t);
void keel_f16_to_f32__neon(const uint16_t *, float *, size_t);
void keel_f32_to_bf16__neon(const float *, uint16_t *, size_t);
void keel_f32_to_f16__neon(const float *, uint16_t *, size_t);

#endif
