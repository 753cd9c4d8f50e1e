/* f32 -> bf16 with AVX512_BF16's vcvtne2ps2bf16: 32 values an instruction. Built with
 * -mavx512bf16 (CMakeLists.txt) and called only where cpuid reports AVX512_BF16 (convert_list.c).
 * The instruction rounds to nearest even and makes a NaN quiet keeping its sign and top payload,
 * as the scalar definition does, but it reads float32 subnormal inputs as zero; the scalar
 * definition rounds them (the largest ones round up to the smallest normal bf16). A vector
 * holding a subnormal therefore goes through the integer rounding of convert__avx512.c, so the
 * bits are the scalar definition's on every input. */
#include <immintrin.h>

#include "convert.h"

#define SUBNORMAL 0x20 /* vfpclassps: denormal */

void keel_f32_to_bf16__avx512bf16(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 a = _mm512_loadu_ps(src + i), b = _mm512_loadu_ps(src + i + 16);
        if (_mm512_fpclass_ps_mask(a, SUBNORMAL) | _mm512_fpclass_ps_mask(b, SUBNORMAL)) {
            keel_f32_to_bf16__avx512(src + i, dst + i, 32);
            continue;
        }
        const __m512bh h = _mm512_cvtne2ps_pbh(b, a); /* a in the low half */
        _mm512_storeu_si512((void *)(dst + i), (__m512i)h);
    }
    /* the last 0..31 values: the integer path (16 at a time, then the scalar definition) */
    keel_f32_to_bf16__avx512(src + i, dst + i, n - i);
}
