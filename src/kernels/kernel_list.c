/* The tables of the kernel list (KEEL_KERNEL_LIST in kernels.h): one per ISA path, with the
 * names of its kernels. Dispatch (the context), tests and benchmarks all read them, so a kernel
 * added to the list is used, tested and timed. */
#include "kernels.h"

/* A path's table: every kernel of the list from the files of one ISA (neon: the list's neon
 * column, which names the scalar kernel for the ops not yet written over lanes__neon.h). */
#define KERNEL_OF(op, isa) .op = keel_##op##__##isa,
#define NAME_OF(op, isa) "keel_" #op "__" #isa,
#define AVX2_KERNEL(op, neon) KERNEL_OF(op, avx2)
#define AVX2_NAME(op, neon) NAME_OF(op, avx2)
#define AVX512_KERNEL(op, neon) KERNEL_OF(op, avx512)
#define AVX512_NAME(op, neon) NAME_OF(op, avx512)
#define SCALAR_KERNEL(op, neon) KERNEL_OF(op, scalar)
#define SCALAR_NAME(op, neon) NAME_OF(op, scalar)
#define NEON_KERNEL(op, neon) KERNEL_OF(op, neon)
#define NEON_NAME(op, neon) NAME_OF(op, neon)

static const char *const scalar_names[] = {KEEL_KERNEL_LIST(SCALAR_NAME)};
static const keel_kernels scalar_kernels = {
    .isa = KEEL_ISA_SCALAR, .name = "scalar", .kernel_names = scalar_names,
    KEEL_KERNEL_LIST(SCALAR_KERNEL)};

#if defined(KEEL_HAVE_X86_KERNELS)
static const char *const avx2_names[] = {KEEL_KERNEL_LIST(AVX2_NAME)};
static const keel_kernels avx2_kernels = {
    .isa = KEEL_ISA_AVX2, .name = "avx2", .kernel_names = avx2_names,
    KEEL_KERNEL_LIST(AVX2_KERNEL)};
static const char *const avx512_names[] = {KEEL_KERNEL_LIST(AVX512_NAME)};
static const keel_kernels avx512_kernels = {
    .isa = KEEL_ISA_AVX512, .name = "avx512", .kernel_names = avx512_names,
    KEEL_KERNEL_LIST(AVX512_KERNEL)};
#if defined(KEEL_HAVE_AVX512BF16)
/* The AVX-512 table with the AVX512_BF16 kernels over their AVX-512 entries (the designated
 * initializers after the list's replace those entries). */
#define BF16_KERNEL(op) .op = keel_##op##__avx512bf16,
#define BF16_NAME(op) [KEEL_K_##op] = "keel_" #op "__avx512bf16",
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
static const char *const avx512bf16_names[] = {
    KEEL_KERNEL_LIST(AVX512_NAME) KEEL_AVX512BF16_LIST(BF16_NAME)};
static const keel_kernels avx512bf16_kernels = {
    .isa = KEEL_ISA_AVX512, .name = "avx512+bf16", .kernel_names = avx512bf16_names,
    KEEL_KERNEL_LIST(AVX512_KERNEL) KEEL_AVX512BF16_LIST(BF16_KERNEL)};
#pragma GCC diagnostic pop
#endif
#endif

#if defined(KEEL_HAVE_NEON_KERNELS)
static const char *const neon_names[] = {KEEL_KERNEL_LIST(NEON_NAME)};
static const keel_kernels neon_kernels = {
    .isa = KEEL_ISA_NEON, .name = "neon", .kernel_names = neon_names,
    KEEL_KERNEL_LIST(NEON_KERNEL)};
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

const keel_kernels *keel_kernels_for_cpu(keel_isa isa, int avx512_bf16)
{
#if defined(KEEL_HAVE_AVX512BF16)
    if (isa == KEEL_ISA_AVX512 && avx512_bf16)
        return &avx512bf16_kernels;
#endif
    (void)avx512_bf16;
    return keel_kernels_for(isa);
}
