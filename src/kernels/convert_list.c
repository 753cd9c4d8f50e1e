/* The conversion kernels of each ISA path, beside kernel_list.c's compute kernels. */
#include "convert.h"

static const keel_convert_kernels scalar_convert = {
    keel_bf16_to_f32__scalar, keel_f16_to_f32__scalar, keel_f32_to_bf16__scalar, keel_f32_to_f16__scalar,
};
#if defined(KEEL_HAVE_X86_KERNELS)
static const keel_convert_kernels avx2_convert = {
    keel_bf16_to_f32__avx2, keel_f16_to_f32__avx2, keel_f32_to_bf16__avx2, keel_f32_to_f16__avx2,
};
static const keel_convert_kernels avx512_convert = {
    keel_bf16_to_f32__avx512, keel_f16_to_f32__avx512, keel_f32_to_bf16__avx512, keel_f32_to_f16__avx512,
};
#endif

const keel_convert_kernels *keel_convert_kernels_for(keel_isa isa)
{
    switch (isa) {
    case KEEL_ISA_SCALAR: return &scalar_convert;
#if defined(KEEL_HAVE_X86_KERNELS)
    case KEEL_ISA_AVX2: return &avx2_convert;
    case KEEL_ISA_AVX512: return &avx512_convert;
#endif
    default: return NULL;
    }
}
