/* keel's lane vocabulary on AVX-512: the names of lanes__avx2.h, the shared part in lanes_ymm.h.
 * A row's tail (n < 8 floats) is an AVX-512VL masked load / store. Include only from files built
 * with the AVX-512 flags (*__avx512.c), after kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX512_H
#define KEEL_KERNELS_LANES_AVX512_H

#include "simd_lanes__avx512.h"
#include "lanes_ymm.h"

typedef __mmask8 kl_tail;

KEEL_INLINE kl_tail kl_tail_of(size_t n) { return (__mmask8)((1u << n) - 1u); }
KEEL_INLINE kl_f8 kl_load_tail(const float *p, kl_tail t) { return _mm256_maskz_loadu_ps(t, p); }
KEEL_INLINE void kl_store_tail(float *p, kl_f8 v, kl_tail t) { _mm256_mask_storeu_ps(p, t, v); }
KEEL_INLINE int kl_want_stream(size_t rows, size_t stride)
{
    return k512_want_stream(rows, stride);
}

/* The compute vector, kv: the widest the path has (a zmm, 16 floats), for kernels bound by
 * arithmetic rather than memory (DyT's tanh); a predicate per lane is a mask register. */
typedef __m512 kv;
typedef __mmask16 kv_pred;
typedef __mmask16 kv_tail;
#define KV_WIDTH 16

KEEL_INLINE kv_tail kv_tail_of(size_t n) { return (__mmask16)((1u << n) - 1u); }
/* n floats at p (n >= KV_WIDTH: a whole vector; else the tail's, 0.0 past them) */
KEEL_INLINE kv kv_load_n(const float *p, size_t n, kv_tail t)
{
    return n >= KV_WIDTH ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(t, p);
}
KEEL_INLINE void kv_store_n(float *p, kv v, size_t n, kv_tail t)
{
    if (n >= KV_WIDTH)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, t, v);
}
KEEL_INLINE kv kv_set1(float a) { return _mm512_set1_ps(a); }
KEEL_INLINE kv kv_add(kv a, kv b) { return _mm512_add_ps(a, b); }
KEEL_INLINE kv kv_sub(kv a, kv b) { return _mm512_sub_ps(a, b); }
KEEL_INLINE kv kv_mul(kv a, kv b) { return _mm512_mul_ps(a, b); }
KEEL_INLINE kv kv_div(kv a, kv b) { return _mm512_div_ps(a, b); }
/* fmaf(a, b, c) and fmaf(-a, b, c), one rounding each */
KEEL_INLINE kv kv_fma(kv a, kv b, kv c) { return _mm512_fmadd_ps(a, b, c); }
KEEL_INLINE kv kv_fnma(kv a, kv b, kv c) { return _mm512_fnmadd_ps(a, b, c); }
KEEL_INLINE kv kv_abs(kv a) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), a); }
/* a < b, a <= b (false where either is NaN) */
KEEL_INLINE kv_pred kv_lt(kv a, kv b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
KEEL_INLINE kv_pred kv_le(kv a, kv b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
/* p ? a : b per lane */
KEEL_INLINE kv kv_select(kv_pred p, kv a, kv b) { return _mm512_mask_mov_ps(b, p, a); }
/* a where p holds, else +0.0 (cheaper than kv_select on AVX2: one and) */
KEEL_INLINE kv kv_where(kv_pred p, kv a) { return _mm512_maskz_mov_ps(p, a); }
/* the float whose bits are j's shifted left 23 (2^k from exp's shifted sum j) */
KEEL_INLINE kv kv_exponent_bits(kv j)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(j), 23));
}
/* a (>= +0) with u's sign bit: copysign */
KEEL_INLINE kv kv_with_sign_of(kv a, kv u)
{
    return _mm512_or_ps(a, _mm512_and_ps(u, _mm512_set1_ps(-0.0f)));
}
/* u where u is NaN (its bits), else v */
KEEL_INLINE kv kv_nan_passes(kv v, kv u)
{
    return _mm512_mask_mov_ps(u, _mm512_cmp_ps_mask(u, u, _CMP_ORD_Q), v);
}

#endif
