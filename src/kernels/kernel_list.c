/* The kernel list: one table per ISA path. Dispatch (the context), tests and benchmarks all
 * read it, so a kernel added here is used, tested and timed. */
#include "kernels.h"

/* The transformer-block kernels of a path. */
#define BLOCK_KERNELS(isa)                                                                         \
    keel_f32_add_layernorm_fwd__##isa, keel_f32_add_layernorm_bwd__##isa,                          \
        keel_f32_add_rmsnorm_fwd__##isa, keel_f32_add_rmsnorm_bwd__##isa,                          \
        keel_f32_layerscale_fwd__##isa, keel_f32_layerscale_bwd__##isa,                            \
        keel_f32_batchnorm_stats__##isa, keel_f32_batchnorm_apply__##isa,                          \
        keel_f32_batchnorm_bwd__##isa, keel_f32_dyt_fwd__##isa, keel_f32_dyt_bwd__##isa

static const keel_kernels scalar_kernels = {
    KEEL_ISA_SCALAR, "scalar",
    keel_f32_layernorm_fwd__scalar, keel_f32_layernorm_bwd__scalar,
    keel_f32_rmsnorm_fwd__scalar, keel_f32_rmsnorm_bwd__scalar,
    BLOCK_KERNELS(scalar),
};

#if defined(KEEL_HAVE_X86_KERNELS)
static const keel_kernels avx2_kernels = {
    KEEL_ISA_AVX2, "avx2",
    keel_f32_layernorm_fwd__avx2, keel_f32_layernorm_bwd__avx2,
    keel_f32_rmsnorm_fwd__avx2, keel_f32_rmsnorm_bwd__avx2,
    BLOCK_KERNELS(avx2),
};
static const keel_kernels avx512_kernels = {
    KEEL_ISA_AVX512, "avx512",
    keel_f32_layernorm_fwd__avx512, keel_f32_layernorm_bwd__avx512,
    keel_f32_rmsnorm_fwd__avx512, keel_f32_rmsnorm_bwd__avx512,
    BLOCK_KERNELS(avx512),
};
#endif

#if defined(KEEL_HAVE_NEON_KERNELS)
/* aarch64 NEON. Native so far: LayerScale and DyT (their bodies, f32_layerscale_simd.h and
 * f32_dyt_simd.h, over lanes__neon.h). Every other entry is the scalar kernel until its body is
 * written over the lane vocabulary (issue 21): the norms, the fused add + norm, BatchNorm (and
 * the conversions, convert_list.c). Same bits either way. */
static const keel_kernels neon_kernels = {
    KEEL_ISA_NEON, "neon",
    keel_f32_layernorm_fwd__scalar, keel_f32_layernorm_bwd__scalar,
    keel_f32_rmsnorm_fwd__scalar, keel_f32_rmsnorm_bwd__scalar,
    keel_f32_add_layernorm_fwd__scalar, keel_f32_add_layernorm_bwd__scalar,
    keel_f32_add_rmsnorm_fwd__scalar, keel_f32_add_rmsnorm_bwd__scalar,
    keel_f32_layerscale_fwd__neon, keel_f32_layerscale_bwd__neon,
    keel_f32_batchnorm_stats__scalar, keel_f32_batchnorm_apply__scalar,
    keel_f32_batchnorm_bwd__scalar,
    keel_f32_dyt_fwd__neon, keel_f32_dyt_bwd__neon,
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
#if defined(KEEL_HAVE_NEON_KERNELS)
    case KEEL_ISA_NEON: return &neon_kernels;
#endif
    default: return NULL;
    }
}
