/* LayerNorm and RMSNorm of bf16 rows, AVX-512 with AVX512_BF16: bf16_norms__avx512.c compiled
 * again with -mavx512bf16 (CMakeLists.txt), where its stores round 16 floats in one instruction
 * (lanes__avx512.h, KR_BF16_CVT) instead of the integer rounding: the same bits, measured 1.2x
 * faster forward and 1.1x backward in cache. Built only when the compiler takes the flag, and
 * chosen only where cpuid reports AVX512_BF16 (keel_kernels_for_cpu, kernel_list.c). */
#define keel_bf16_layernorm_fwd__avx512 keel_bf16_layernorm_fwd__avx512bf16
#define keel_bf16_rmsnorm_fwd__avx512 keel_bf16_rmsnorm_fwd__avx512bf16
#define keel_bf16_layernorm_bwd__avx512 keel_bf16_layernorm_bwd__avx512bf16
#define keel_bf16_rmsnorm_bwd__avx512 keel_bf16_rmsnorm_bwd__avx512bf16
#include "bf16_norms__avx512.c"
