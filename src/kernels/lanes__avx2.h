/* keel's lane vocabulary on AVX2: the operations a kernel body written once for every ISA
 * (f32_*_simd.h) is made of, with the same names on every path (lanes__avx512.h); the shared
 * part is lanes_ymm.h. A row's tail (n < 8 floats) is a maskload / maskstore: nothing past the
 * tail is read or written. Include only from files built with the AVX2 flags (*__avx2.c), after
 * kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX2_H
#define KEEL_KERNELS_LANES_AVX2_H

#include <math.h> /* INFINITY */

#include "simd_lanes__avx2.h"
#include "lanes_ymm.h"

/* The mask of a tail of n (< 8) floats, the same for every row of a call. */
typedef __m256i kl_tail;

KEEL_INLINE kl_tail kl_tail_of(size_t n) { return k256_mask8(n); }

/* The tail's floats at p, 0.0 in the lanes past it. */
KEEL_INLINE kl_f8 kl_load_tail(const float *p, kl_tail t) { return _mm256_maskload_ps(p, t); }
KEEL_INLINE void kl_store_tail(float *p, kl_f8 v, kl_tail t) { _mm256_maskstore_ps(p, t, v); }

/* Whether a call's outputs (rows of `stride` floats) go past the caches, where they stream
 * (simd_lanes__avx512.h has the measurements). */
KEEL_INLINE int kl_want_stream(size_t rows, size_t stride)
{
    return k256_want_stream(rows, stride);
}

/* The compute vector, kv: the widest the path has (a ymm, 8 floats), for kernels bound by
 * arithmetic rather than memory (DyT's tanh); a predicate per lane is a lane of all ones or all
 * zeros (a compare's result, for blendv). */
typedef __m256 kv;
typedef __m256 kv_pred;
typedef __m256i kv_tail;
#define KV_WIDTH 8

KEEL_INLINE kv_tail kv_tail_of(size_t n) { return k256_mask8(n); }
/* n floats at p (n >= KV_WIDTH: a whole vector; else the tail's, 0.0 past them) */
KEEL_INLINE kv kv_load_n(const float *p, size_t n, kv_tail t)
{
    return n >= KV_WIDTH ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, t);
}
KEEL_INLINE void kv_store_n(float *p, kv v, size_t n, kv_tail t)
{
    if (n >= KV_WIDTH)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, t, v);
}
KEEL_INLINE kv kv_set1(float a) { return _mm256_set1_ps(a); }
KEEL_INLINE kv kv_add(kv a, kv b) { return _mm256_add_ps(a, b); }
KEEL_INLINE kv kv_sub(kv a, kv b) { return _mm256_sub_ps(a, b); }
KEEL_INLINE kv kv_mul(kv a, kv b) { return _mm256_mul_ps(a, b); }
KEEL_INLINE kv kv_div(kv a, kv b) { return _mm256_div_ps(a, b); }
/* fmaf(a, b, c) and fmaf(-a, b, c), one rounding each */
KEEL_INLINE kv kv_fma(kv a, kv b, kv c) { return _mm256_fmadd_ps(a, b, c); }
KEEL_INLINE kv kv_fnma(kv a, kv b, kv c) { return _mm256_fnmadd_ps(a, b, c); }
KEEL_INLINE kv kv_abs(kv a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
/* a < b, a <= b (false where either is NaN) */
KEEL_INLINE kv_pred kv_lt(kv a, kv b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
KEEL_INLINE kv_pred kv_le(kv a, kv b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
/* p ? a : b per lane */
KEEL_INLINE kv kv_select(kv_pred p, kv a, kv b) { return _mm256_blendv_ps(b, a, p); }
/* a where p holds, else +0.0 (cheaper than kv_select on AVX2: one and) */
KEEL_INLINE kv kv_where(kv_pred p, kv a) { return _mm256_and_ps(p, a); }
/* the float whose bits are j's shifted left 23 (2^k from exp's shifted sum j) */
KEEL_INLINE kv kv_exponent_bits(kv j)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(j), 23));
}
/* a (>= +0) with u's sign bit: copysign */
KEEL_INLINE kv kv_with_sign_of(kv a, kv u)
{
    return _mm256_or_ps(a, _mm256_and_ps(u, _mm256_set1_ps(-0.0f)));
}
/* u where u is NaN (its bits), else v (v > -inf). min(-inf, u) is -inf, or u itself where u is
 * NaN (minps returns its second operand when either is NaN); max(v, that) is then v or u: a
 * min and a max instead of a compare and a blend (blendv: 2 or 3 uops). */
KEEL_INLINE kv kv_nan_passes(kv v, kv u)
{
    return _mm256_max_ps(v, _mm256_min_ps(_mm256_set1_ps(-INFINITY), u));
}

#endif
