/* CPU detection, once per process. x86-64: cpuid for the features, xgetbv for the OS's promise
 * to save the wider registers (a CPU with AVX-512 under an OS that does not save ZMM state must
 * not run AVX-512 code). aarch64: NEON (Advanced SIMD) is part of the base architecture, so the
 * neon path runs wherever it was compiled in. Elsewhere only the scalar path exists. */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "error.h"
#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long read_xcr0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static int detect(keel_isa isa)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx)
        return 0;
    const unsigned long long xcr0 = read_xcr0();
    const int os_ymm = (xcr0 & 0x6) == 0x6;     /* XMM and YMM state */
    const int os_zmm = (xcr0 & 0xe6) == 0xe6;   /* plus opmask, ZMM_Hi256, Hi16_ZMM */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    const int avx2 = (b >> 5) & 1;
    const int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
              avx512vl = (b >> 31) & 1;
    const int has_avx2 = os_ymm && avx2 && fma && f16c;
    if (isa == KEEL_ISA_AVX2)
        return has_avx2;
    if (isa == KEEL_ISA_AVX512)
        return has_avx2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
    return 0;
}
#elif defined(__aarch64__)
static int detect(keel_isa isa) { return isa == KEEL_ISA_NEON; }
#else
static int detect(keel_isa isa) { (void)isa; return 0; }
#endif

int keel_isa_available(keel_isa isa)
{
    static int cached[4] = {-1, -1, -1, -1}; /* benign race: every thread computes the same value */
    if (isa == KEEL_ISA_SCALAR)
        return 1;
    if (isa != KEEL_ISA_AVX2 && isa != KEEL_ISA_AVX512 && isa != KEEL_ISA_NEON)
        return 0;
    if (!keel_kernels_for(isa))
        return 0; /* not compiled into this build (e.g. not x86) */
    int v = __atomic_load_n(&cached[isa], __ATOMIC_RELAXED);
    if (v < 0) {
        v = detect(isa);
        __atomic_store_n(&cached[isa], v, __ATOMIC_RELAXED);
    }
    return v;
}

const char *keel_isa_name(keel_isa isa)
{
    switch (isa) {
    case KEEL_ISA_AUTO: return "auto";
    case KEEL_ISA_SCALAR: return "scalar";
    case KEEL_ISA_AVX2: return "avx2";
    case KEEL_ISA_AVX512: return "avx512";
    case KEEL_ISA_NEON: return "neon";
    }
    return "unknown";
}

keel_status keel_isa_default(keel_isa *out)
{
    if (!out)
        return keel_fail(KEEL_ENULL, "keel_isa_default: isa is NULL");
    const char *env = getenv("KEEL_ISA");
    if (env && *env) {
        static const keel_isa all[] = {KEEL_ISA_SCALAR, KEEL_ISA_AVX2, KEEL_ISA_AVX512,
                                       KEEL_ISA_NEON};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
            if (strcmp(env, keel_isa_name(all[i])) != 0)
                continue;
            if (!keel_isa_available(all[i]))
                return keel_fail(KEEL_EISA, "KEEL_ISA=%s: this CPU (or build) cannot run the %s path",
                                 env, env);
            *out = all[i];
            return KEEL_OK;
        }
        return keel_fail(KEEL_EISA, "KEEL_ISA=%.40s: unknown path (scalar, avx2, avx512 or neon)",
                         env);
    }
    *out = keel_isa_available(KEEL_ISA_AVX512) ? KEEL_ISA_AVX512
         : keel_isa_available(KEEL_ISA_AVX2)   ? KEEL_ISA_AVX2
         : keel_isa_available(KEEL_ISA_NEON)   ? KEEL_ISA_NEON
                                               : KEEL_ISA_SCALAR;
    return KEEL_OK;
}

int keel_cpu_has_avx512_bf16(void)
{
#if defined(__x86_64__) || defined(__i386__)
    static int cached = -1; /* benign race: every thread computes the same value */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        v = 0;
        if (keel_isa_available(KEEL_ISA_AVX512) && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
            a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
            v = (int)((a >> 5) & 1u);
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

const char *keel_kernel_name(keel_isa isa, int i)
{
    const keel_kernels *k = keel_kernels_for_cpu(isa, keel_cpu_has_avx512_bf16());
    return k && i >= 0 && i < KEEL_KERNEL_COUNT ? k->kernel_names[i] : NULL;
}
