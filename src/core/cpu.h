/* CPU facts beyond the ISA paths (keel_isa_available, keel.h), detected once per process in
 * cpu.c, where the rest of keel's cpuid lives. */
#ifndef KEEL_CORE_CPU_H
#define KEEL_CORE_CPU_H

/* 1 when the CPU has AVX512_BF16 (cpuid leaf 7, subleaf 1, EAX bit 5) and the AVX-512 path is
 * available; the context then takes vcvtne2ps2bf16 for f32 -> bf16 (keel_convert_kernels_for). */
int keel_cpu_has_avx512_bf16(void);

#endif
