/* keel's lane vocabulary on AVX2: the operations a kernel body written once for every ISA
 * (f32_*_simd.h) is made of, with the same names on every path (lanes__avx512.h); the shared
 * part is lanes_ymm.h. A row's tail (n < 8 floats) is a maskload / maskstore: nothing past the
 * tail is read or written. Include only from files built with the AVX2 flags (*__avx2.c), after
 * kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX2_H
#define KEEL_KERNELS_LANES_AVX2_H

#include <math.h> /* INFINITY */

#include "simd_lanes__avx2.h"
#include "norm_finish.h"
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

/* ---- kr: the reduction unit of kernels.h, 16 floats and 16 double lanes -----------------------
 * The names and meanings of lanes__avx512.h's kr section on 256-bit vectors: a kr_f16 is two
 * ymm (floats 0-7, 8-15), a kr_d16 four, q[0] = lanes 0-3, q[1] = 4-7, q[2] = 8-11, q[3] =
 * 12-15, each filled by an exact vcvtps2pd of 4 floats. A tail of n < 16 floats is one or two
 * maskloads (nothing past the row is read; 0.0 past the tail) and an add blended into the tail's
 * lanes, so the lanes that get no element keep their bits, as in the scalar loop. */
typedef struct kr_f16 {
    __m256 lo, hi;
} kr_f16;
typedef struct kr_d16 {
    __m256d q[4];
} kr_d16;
typedef k256_tail kr_tail; /* simd_lanes__avx2.h: n and its float and double-lane masks */

/* Short rows go KR_GROUP at a time (fewer than AVX-512's 4: 16 registers, and a row's 16 double
 * lanes are four of them; simd_lanes__avx2.h). */
#define KR_GROUP K256_GROUP
#define KR_GROUP_BELOW K256_GROUP_BELOW
/* Whether a kr_d16 and its operands crowd the register file (16 ymm: yes; a kr_d16 is four of
 * them), so that a body orders its stages to keep fewer values live (f32_rmsnorm_simd.h's row
 * pipeline). */
#define KR_FEW_REGS 1
/* The vector registers of the path and the ones a kr_d16 takes (lanes__avx512.h). */
#define KR_VREGS 16
#define KR_D16_REGS 4

KEEL_INLINE kr_tail kr_tail_of(size_t n) { return k256_tail_of(n); }

KEEL_INLINE kr_f16 kr_load(const float *p)
{
    const kr_f16 v = {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
    return v;
}
KEEL_INLINE kr_f16 kr_load_tail(const float *p, const kr_tail *t)
{
    kr_f16 v;
    k256_tail_load(t, p, &v.lo, &v.hi);
    return v;
}
KEEL_INLINE void kr_store(float *p, kr_f16 v)
{
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}
KEEL_INLINE void kr_store_tail(float *p, kr_f16 v, const kr_tail *t)
{
    _mm256_maskstore_ps(p, t->f0, v.lo);
    if (t->n > 8)
        _mm256_maskstore_ps(p + 8, t->f1, v.hi);
}
/* streamed where kr_streamable(p) (32-byte aligned: the stores are whole aligned ymm) */
KEEL_INLINE void kr_stream(float *p, kr_f16 v)
{
    _mm256_stream_ps(p, v.lo);
    _mm256_stream_ps(p + 8, v.hi);
}
KEEL_INLINE int kr_streamable(const float *p) { return k256_aligned32(p); }
KEEL_INLINE int kr_want_stream(size_t rows, size_t stride)
{
    return k256_want_stream(rows, stride);
}
KEEL_INLINE int kr_want_prefetch(size_t rows, size_t dim, size_t stride)
{
    return k256_want_prefetch(rows, dim, stride);
}

KEEL_INLINE kr_f16 kr_set1(float a)
{
    const kr_f16 v = {_mm256_set1_ps(a), _mm256_set1_ps(a)};
    return v;
}
KEEL_INLINE kr_f16 kr_add(kr_f16 a, kr_f16 b)
{
    const kr_f16 v = {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)};
    return v;
}
KEEL_INLINE kr_f16 kr_sub(kr_f16 a, kr_f16 b)
{
    const kr_f16 v = {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)};
    return v;
}
KEEL_INLINE kr_f16 kr_mul(kr_f16 a, kr_f16 b)
{
    const kr_f16 v = {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)};
    return v;
}

KEEL_INLINE kr_d16 kr_dzero(void)
{
    const __m256d z = _mm256_setzero_pd();
    const kr_d16 d = {{z, z, z, z}};
    return d;
}
KEEL_INLINE kr_d16 kr_dload(const float *p)
{
    const kr_d16 d = {{k256_cvt4(p), k256_cvt4(p + 4), k256_cvt4(p + 8), k256_cvt4(p + 12)}};
    return d;
}
KEEL_INLINE kr_d16 kr_widen(kr_f16 v)
{
    const kr_d16 d = {{k256_lo_pd(v.lo), k256_hi_pd(v.lo), k256_lo_pd(v.hi), k256_hi_pd(v.hi)}};
    return d;
}
KEEL_INLINE kr_d16 kr_dadd(kr_d16 a, kr_d16 b)
{
    for (int k = 0; k < 4; k++)
        a.q[k] = _mm256_add_pd(a.q[k], b.q[k]);
    return a;
}
KEEL_INLINE kr_d16 kr_dmul(kr_d16 a, kr_d16 b)
{
    for (int k = 0; k < 4; k++)
        a.q[k] = _mm256_mul_pd(a.q[k], b.q[k]);
    return a;
}
KEEL_INLINE kr_d16 kr_dsub(kr_d16 a, kr_d16 b)
{
    for (int k = 0; k < 4; k++)
        a.q[k] = _mm256_sub_pd(a.q[k], b.q[k]);
    return a;
}
/* a in every lane (one register, used for all four quarters) */
KEEL_INLINE kr_d16 kr_dset1(double a)
{
    const __m256d v = _mm256_set1_pd(a);
    const kr_d16 d = {{v, v, v, v}};
    return d;
}
KEEL_INLINE kr_d16 kr_dadd_tail(kr_d16 a, kr_d16 b, const kr_tail *t)
{
    const __m256d m[4] = {t->d0, t->d1, t->d2, t->d3};
    for (int k = 0; k < 4; k++)
        a.q[k] = _mm256_blendv_pd(a.q[k], _mm256_add_pd(a.q[k], b.q[k]), m[k]);
    return a;
}
KEEL_INLINE double kr_reduce16(kr_d16 a) { return k256_reduce16(a.q[0], a.q[1], a.q[2], a.q[3]); }

/* rstd[i] = keel_rms_rstd(q[i], dim, eps), row by row (KR_GROUP is 2 here) */
KEEL_INLINE void kr_rms_rstd_rows(int nr, const double *q, size_t dim, float eps, float *rstd)
{
    for (int i = 0; i < nr; i++)
        rstd[i] = keel_rms_rstd(q[i], dim, eps);
}

#endif
