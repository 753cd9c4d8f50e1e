/* The kernel list: one table per ISA path. Dispatch (the context), tests and benchmarks all
 * read it, so a kernel added here is used, tested and timed. */
#include "kernels.h"

static const keel_kernels scalar_kernels = {
    KEEL_ISA_SCALAR, "scalar",
    keel_f32_layernorm_fwd__scalar, keel_f32_layernorm_bwd__scalar,
    keel_f32_rmsnorm_fwd__scalar, keel_f32_rmsnorm_bwd__scalar,
};

#if defined(KEEL_HAVE_X86_KERNELS)
static const keel_kernels avx2_kernels = {
    KEEL_ISA_AVX2, "avx2",
    keel_f32_layernorm_fwd__avx2, keel_f32_layernorm_bwd__avx2,
    keel_f32_rmsnorm_fwd__avx2, keel_f32_rmsnorm_bwd__avx2,
};
static const keel_kernels avx512_kernels = {
    KEEL_ISA_AVX512, "avx512",
    keel_f32_layernorm_fwd__avx512, keel_f32_layernorm_bwd__avx512,
    keel_f32_rmsnorm_fwd__avx512, keel_f32_rmsnorm_bwd__avx512,
};
#endif

const keel_kernels *keel_kernels_for(keel_isa isa)
{
    switch (isa) {
    case KEEL_ISA_SCALAR: return &scalar_kernels;
#if defined(KEEL_HAVE_X86_KERNELS)
    case KEEL_ISA_AVX2: return &avx2_kernels;
    case KEEL_ISA_AVX512: return &avx512_kernels;
#endif
    default: return NULL;
    }
}
