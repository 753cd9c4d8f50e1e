/* The conversion kernels of each ISA path, beside kernel_list.c's compute kernels. */
#include "convert.h"

#if defined(KEEL_HAVE_X86_KERNELS)
#include <cpuid.h>
#endif

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
 * fcvtn for f16, the integer rounding for bf16); int8 quantization and absmax are the scalar
 * kernels until they are written for NEON. */
static const keel_convert_kernels neon_convert = {
    keel_bf16_to_f32__neon, keel_f16_to_f32__neon, keel_f32_to_bf16__neon, keel_f32_to_f16__neon,
    keel_quantize_i8__scalar, keel_absmax_f32__scalar,
};
#endif

/* 1 when this build has the AVX512_BF16 kernel and the CPU has the instructions (cpuid leaf 7,
 * subleaf 1, EAX bit 5). The AVX-512 path itself is chosen only where the CPU and the OS
 * support AVX-512 (cpu.c); this adds the one extension on top. */
int keel_convert_avx512_bf16_hw(void)
{
#if defined(KEEL_HAVE_X86_KERNELS) && defined(KEEL_HAVE_AVX512BF16)
    static int cached = -1; /* benign race: every thread computes the same value */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        v = 0;
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
            v = (int)((a >> 5) & 1u);
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

const keel_convert_kernels *keel_convert_kernels_for(keel_isa isa)
{
    switch (isa) {
    case KEEL_ISA_SCALAR: return &scalar_convert;
#if defined(KEEL_HAVE_X86_KERNELS)
    case KEEL_ISA_AVX2: return &avx2_convert;
    case KEEL_ISA_AVX512:
#if defined(KEEL_HAVE_AVX512BF16)
        if (keel_convert_avx512_bf16_hw())
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
