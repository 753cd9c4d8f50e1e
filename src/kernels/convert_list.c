/* The conversion kernels of each ISA path, beside kernel_list.c's compute kernels. */
#include "convert.h"

static const keel_convert_kernels scalar_convert = {
    keel_bf16_to_f32__scalar, keel_f16_to_f32__scalar, keel_f32_to_bf16__scalar, keel_f32_to_f16__scalar,
    keel_quantize_i8__scalar, keel_absmax_f32__scalar,
};
#if defined(KEEL_HAVE_X86_KERNELS)
static const keel_convert_kernels avx2_convert = {
    keel_bf16_to_f32__avx2, keel_f16_to_f32__avx2, keel_f32_to_bf16__avx2, keel_f32_to_f16__avx2,
    keel_quantize_i8__avx2, keel_absmax_f32__avx2,
};
static const keel_convert_kernels avx512_convert = {
    keel_bf16_to_f32__avx512, keel_f16_to_f32__avx512, keel_f32_to_bf16__avx512, keel_f32_to_f16__avx512,
    keel_quantize_i8__avx512, keel_absmax_f32__avx512,
};
#if defined(KEEL_HAVE_AVX512BF16)
static const keel_convert_kernels avx512_bf16_convert = {
    keel_bf16_to_f32__avx512, keel_f16_to_f32__avx512, keel_f32_to_bf16__avx512bf16, keel_f32_to_f16__avx512,
    keel_quantize_i8__avx512, keel_absmax_f32__avx512,
};
#endif
#endif

#if defined(KEEL_HAVE_NEON_KERNELS)
/* aarch64 NEON: the storage conversions native (convert_simd.h over convert_lanes__neon.h: fcvtl /
 * fcvtn for f16, the integer rounding for bf16); int8 quantization and absmax are
 * quantize_i8_simd.h's body over lanes__neon.h, as on x86. */
static const keel_convert_kernels neon_convert = {
    keel_bf16_to_f32__neon, keel_f16_to_f32__neon, keel_f32_to_bf16__neon, keel_f32_to_f16__neon,
    keel_quantize_i8__neon, keel_absmax_f32__neon,
};
#endif

const keel_convert_kernels *keel_convert_kernels_for(keel_isa isa, int avx512_bf16)
{
    (void)avx512_bf16; /* without the AVX512_BF16 kernel in the build */
    switch (isa) {
    case KEEL_ISA_SCALAR: return &scalar_convert;
#if defined(KEEL_HAVE_X86_KERNELS)
    case KEEL_ISA_AVX2: return &avx2_convert;
    case KEEL_ISA_AVX512:
#if defined(KEEL_HAVE_AVX512BF16)
        if (avx512_bf16)
            return &avx512_bf16_convert;
#endif
        return &avx512_convert;
#endif
#if defined(KEEL_HAVE_NEON_KERNELS)
    case KEEL_ISA_NEON: return &neon_convert;
#endif
    default: return NULL;
    }
}
