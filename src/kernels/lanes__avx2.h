/* keel's lane vocabulary on AVX2: the operations a kernel body written once for every ISA
 * (f32_*_simd.h) is made of, with the same names on every path (lanes__avx512.h); the shared
 * part is lanes_ymm.h. A row's tail (n < 8 floats) is a maskload / maskstore: nothing past the
 * tail is read or written. Include only from files built with the AVX2 flags (*__avx2.c), after
 * kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX2_H
#define KEEL_KERNELS_LANES_AVX2_H

#include <immintrin.h>
#include <math.h> /* INFINITY */
#include <stddef.h>
#include <stdint.h>

#include "kernels.h" /* KEEL_PREFETCH_ABOVE, KEEL_STREAM_ABOVE */

#define KEEL_INLINE static inline __attribute__((always_inline))

#include "norm_finish.h"
#include "lanes_ymm.h"

/* The reduction order of kernels.h on AVX2: the 16 double lanes are four ymm registers,
 * q0 = lanes 0-3, q1 = 4-7, q2 = 8-11, q3 = 12-15, each fed by an exact vcvtps2pd of 4 floats.
 *
 * Tails (n < 16 elements) are maskloads of 8 floats, and the terms of lanes that get no
 * element are forced to +0.0 (an AND with the mask) before the add. Adding +0.0 leaves every
 * lane's bits as they are: a lane starts at +0.0 and, in round-to-nearest, a sum is -0.0 only
 * when both addends are -0.0, so no lane is ever -0.0; x + 0.0 == x for every other x
 * (NaN keeps its payload; lanes never hold a signalling NaN, the conversion quiets them). */

/* (double)p[0..3] */
KEEL_INLINE __m256d k256_cvt4(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }

/* The low / high 4 floats of a ymm, as doubles. */
KEEL_INLINE __m256d k256_lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
KEEL_INLINE __m256d k256_hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

/* Mask of the first n (0..8) of 8 floats, for maskload / maskstore. */
KEEL_INLINE __m256i k256_mask8(size_t n)
{
    static const int32_t ones_then_zeros[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                0,  0,  0,  0,  0,  0,  0,  0};
    return _mm256_loadu_si256((const __m256i *)(ones_then_zeros + 8 - n));
}

/* The same mask widened to the double lanes of the low / high 4 floats. */
KEEL_INLINE __m256d k256_lo64(__m256i m)
{
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)));
}
KEEL_INLINE __m256d k256_hi64(__m256i m)
{
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)));
}

/* lane + (t where the mask is set, else +0.0) */
KEEL_INLINE __m256d k256_add_mask(__m256d lane, __m256d mask, __m256d t)
{
    return _mm256_add_pd(lane, _mm256_and_pd(t, mask));
}

/* The shape of a row's tail of n (< 16) floats, the same for every row of a call. */
typedef struct k256_tail {
    size_t n;
    __m256i f0, f1;         /* float masks of tail floats 0-7 and 8-15 */
    __m256d d0, d1, d2, d3; /* double-lane masks of lanes 0-3, 4-7, 8-11, 12-15 */
} k256_tail;

KEEL_INLINE k256_tail k256_tail_of(size_t n)
{
    k256_tail t;
    t.n = n;
    t.f0 = k256_mask8(n < 8 ? n : 8);
    t.f1 = k256_mask8(n > 8 ? n - 8 : 0);
    t.d0 = k256_lo64(t.f0);
    t.d1 = k256_hi64(t.f0);
    t.d2 = k256_lo64(t.f1);
    t.d3 = k256_hi64(t.f1);
    return t;
}

/* Small rows go in groups of K256_GROUP (fewer than AVX-512's: 16 registers): interleaving
 * their reductions hides the latency of the lane adds, the trees and the per-row divisions.
 * The order of the adds within each row is unchanged. See lanes__avx512.h. */
#define K256_GROUP 2
#define K256_GROUP_BELOW 256

KEEL_INLINE int k256_aligned32(const float *p) { return ((uintptr_t)p & 31) == 0; }

/* The fixed tree, h = 8, 4, 2, 1: a[i] = a[i] + a[i + h]; returns a[0]. */
KEEL_INLINE double k256_reduce16(__m256d q0, __m256d q1, __m256d q2, __m256d q3)
{
    const __m256d b0 = _mm256_add_pd(q0, q2); /* lanes 0-3 */
    const __m256d b1 = _mm256_add_pd(q1, q3); /* lanes 4-7 */
    const __m256d c = _mm256_add_pd(b0, b1);
    const __m128d d = _mm_add_pd(_mm256_castpd256_pd128(c), _mm256_extractf128_pd(c, 1));
    return _mm_cvtsd_f64(_mm_add_sd(d, _mm_unpackhi_pd(d, d)));
}

/* The mask of a tail of n (< 8) floats, the same for every row of a call. */
typedef __m256i kl_tail;

KEEL_INLINE kl_tail kl_tail_of(size_t n) { return k256_mask8(n); }

/* The tail's floats at p, 0.0 in the lanes past it. */
KEEL_INLINE kl_f8 kl_load_tail(const float *p, kl_tail t) { return _mm256_maskload_ps(p, t); }
KEEL_INLINE void kl_store_tail(float *p, kl_f8 v, kl_tail t) { _mm256_maskstore_ps(p, t, v); }

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

/* For int8 quantization and absmax (quantize_i8_simd.h). The nearest integer, ties to even
 * (vroundps: exact, no exception flags). */
KEEL_INLINE kv kv_round(kv a)
{
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* min(a, b), max(a, b) where neither is NaN (a NaN lane's result differs by ISA: a body deals
 * with NaN apart) */
KEEL_INLINE kv kv_min(kv a, kv b) { return _mm256_min_ps(a, b); }
KEEL_INLINE kv kv_max(kv a, kv b) { return _mm256_max_ps(a, b); }
/* a == b (false where either is NaN: kv_eq(v, v) is "v is not NaN"); either is NaN */
KEEL_INLINE kv_pred kv_eq(kv a, kv b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
KEEL_INLINE kv_pred kv_unord(kv a, kv b) { return _mm256_cmp_ps(a, b, _CMP_UNORD_Q); }
/* predicates: none set; and, or; whether any lane is set */
KEEL_INLINE kv_pred kv_none(void) { return _mm256_setzero_ps(); }
KEEL_INLINE kv_pred kv_pred_and(kv_pred a, kv_pred b) { return _mm256_and_ps(a, b); }
KEEL_INLINE kv_pred kv_pred_or(kv_pred a, kv_pred b) { return _mm256_or_ps(a, b); }
KEEL_INLINE int kv_any(kv_pred p) { return _mm256_movemask_ps(p) != 0; }
/* the largest lane (none NaN) */
KEEL_INLINE float kv_reduce_max(kv a)
{
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
}
/* The lanes of kv holding integers in [-127, 127] as int8: vcvttps2dq (exact on integers) and
 * two saturating packs (exact: nothing saturates); kv_store_i8_n stores n of them at q (n >=
 * KV_WIDTH: all 8; else the first n, nothing past them written), kv_store4_i8 the 32 of a, b, c,
 * d in that order with one 32-byte store (the packs interleave the 128-bit halves by groups of
 * 4 bytes; one vpermd puts the groups back in order). */
KEEL_INLINE __m128i kv_i8_pack(kv c)
{
    const __m256i i = _mm256_cvttps_epi32(c);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return _mm_packs_epi16(w, w);
}
KEEL_INLINE void kv_store_i8_n(int8_t *q, kv c, size_t n, kv_tail t)
{
    (void)t;
    if (n >= KV_WIDTH) {
        _mm_storel_epi64((__m128i *)q, kv_i8_pack(c));
        return;
    }
    int8_t buf[16];
    _mm_storeu_si128((__m128i *)buf, kv_i8_pack(c));
    for (size_t j = 0; j < n; j++)
        q[j] = buf[j];
}
KEEL_INLINE void kv_store4_i8(int8_t *q, kv a, kv b, kv c, kv d)
{
    const __m256i ab = _mm256_packs_epi32(_mm256_cvttps_epi32(a), _mm256_cvttps_epi32(b));
    const __m256i cd = _mm256_packs_epi32(_mm256_cvttps_epi32(c), _mm256_cvttps_epi32(d));
    const __m256i p = _mm256_packs_epi16(ab, cd);
    _mm256_storeu_si256((__m256i *)q,
                        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/* ---- kr: the reduction unit of kernels.h, 16 floats and 16 double lanes -----------------------
 * The names and meanings of lanes__avx512.h's kr section on 256-bit vectors: a kr_f16 is two
 * ymm (floats 0-7, 8-15), a kr_d16 four, q[0] = lanes 0-3, q[1] = 4-7, q[2] = 8-11, q[3] =
 * 12-15, each filled by an exact vcvtps2pd of 4 floats. A tail of n < 16 floats is one or two
 * maskloads (nothing past the row is read; 0.0 past the tail) and an add of +0.0 in the lanes
 * past it, so the lanes that get no element keep their bits, as in the scalar loop. */
typedef struct kr_f16 {
    __m256 lo, hi;
} kr_f16;
typedef struct kr_d16 {
    __m256d q[4];
} kr_d16;
typedef k256_tail kr_tail; /* lanes__avx2.h: n and its float and double-lane masks */

/* Short rows go KR_GROUP at a time (fewer than AVX-512's 4: 16 registers, and a row's 16 double
 * lanes are four of them; lanes__avx2.h). */
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
/* A tail of 8 floats or more has a whole first ymm: a plain load and store there, a mask only
 * for the rest, as the hand-written AVX2 kernels stepped 8 floats at a time (a vmaskmovps costs
 * more than a plain move: lanes_ymm.h's rows of 24 floats). */
KEEL_INLINE kr_f16 kr_load_tail(const float *p, const kr_tail *t)
{
    kr_f16 v;
    if (t->n >= 8) {
        v.lo = _mm256_loadu_ps(p);
        v.hi = t->n > 8 ? _mm256_maskload_ps(p + 8, t->f1) : _mm256_setzero_ps();
    } else {
        v.lo = _mm256_maskload_ps(p, t->f0);
        v.hi = _mm256_setzero_ps();
    }
    return v;
}
/* The two halves stored in address order: left to itself GCC stores the high half first, and
 * rows written beyond the caches measured slower so (f32_layernorm_simd.h, 1 thread, fastest
 * call, y out of cache and not 32-byte aligned: lnf 64x131072 26-33 ms, the 8-float stores of
 * the kernel before 14-22 ms; in order 21.2 ms against 21.1). The empty asm, which says it
 * reads and writes the first half, keeps the second store after the first. */
KEEL_INLINE void kr_store(float *p, kr_f16 v)
{
    _mm256_storeu_ps(p, v.lo);
    __asm__("" : "+m"(*(float(*)[8])p));
    _mm256_storeu_ps(p + 8, v.hi);
}
KEEL_INLINE void kr_store_tail(float *p, kr_f16 v, const kr_tail *t)
{
    if (t->n >= 8) {
        _mm256_storeu_ps(p, v.lo);
        if (t->n > 8)
            _mm256_maskstore_ps(p + 8, t->f1, v.hi);
    } else {
        _mm256_maskstore_ps(p, t->f0, v.lo);
    }
}
/* streamed where kr_streamable(p) (32-byte aligned: the stores are whole aligned ymm), in
 * address order (kr_store) */
KEEL_INLINE void kr_stream(float *p, kr_f16 v)
{
    _mm256_stream_ps(p, v.lo);
    __asm__("" : "+m"(*(float(*)[8])p));
    _mm256_stream_ps(p + 8, v.hi);
}
#define KR_STREAMS 1 /* this path has streaming stores (kernels.h, keel_want_stream) */
KEEL_INLINE int kr_streamable(const float *p) { return k256_aligned32(p); }

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
/* (double) of the tail's floats at p, 0.0 past them: kr_widen(kr_load_tail(p, t)), the floats
 * 8-15 loaded and converted only when the tail reaches them (lanes__avx512.h) */
KEEL_INLINE kr_d16 kr_dload_tail(const float *p, const kr_tail *t)
{
    const __m256d z = _mm256_setzero_pd();
    if (t->n > 8) {
        const __m256 hi = _mm256_maskload_ps(p + 8, t->f1);
        const kr_d16 d = {{k256_cvt4(p), k256_cvt4(p + 4), k256_lo_pd(hi), k256_hi_pd(hi)}};
        return d;
    }
    const __m256 lo = t->n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, t->f0);
    const kr_d16 d = {{k256_lo_pd(lo), k256_hi_pd(lo), z, z}};
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
/* b's lanes beyond the tail are made +0.0 and added: a's lanes keep their bits there, since a
 * sum started at kr_dzero is never -0.0 (lanes__avx2.h). The and stays off the chain of
 * adds, where a blend after the add lengthened it (f32_layernorm_simd.h's short rows, two at a
 * time, bound by each row's chain of reductions and divisions: lnf 4096x40 113.6 -> 103.2 us,
 * lnb 4096x24 136 -> 124 us). */
KEEL_INLINE kr_d16 kr_dadd_tail(kr_d16 a, kr_d16 b, const kr_tail *t)
{
    const __m256d m[4] = {t->d0, t->d1, t->d2, t->d3};
    for (int k = 0; k < 4; k++)
        a.q[k] = k256_add_mask(a.q[k], m[k], b.q[k]);
    return a;
}
KEEL_INLINE double kr_reduce16(kr_d16 a) { return k256_reduce16(a.q[0], a.q[1], a.q[2], a.q[3]); }

/* (double) of 16 doubles at p, and their store (the batches' slots: row_batches_simd.h) */
KEEL_INLINE kr_d16 kr_dload16(const double *p)
{
    const kr_d16 d = {{_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4), _mm256_loadu_pd(p + 8),
                       _mm256_loadu_pd(p + 12)}};
    return d;
}
KEEL_INLINE void kr_dstore16(double *p, kr_d16 v)
{
    for (int k = 0; k < 4; k++)
        _mm256_storeu_pd(p + 4 * k, v.q[k]);
}
/* a * b in the tail's lanes, +0.0 in the others */
KEEL_INLINE kr_d16 kr_dmul_tail(kr_d16 a, kr_d16 b, const kr_tail *t)
{
    const __m256d m[4] = {t->d0, t->d1, t->d2, t->d3};
    for (int k = 0; k < 4; k++)
        a.q[k] = _mm256_and_pd(_mm256_mul_pd(a.q[k], b.q[k]), m[k]);
    return a;
}
/* PREFETCHW (lanes__avx512.h; on a processor without it, a no-op) */
KEEL_INLINE void kr_prefetch_w(const void *p)
{
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
}

/* rstd[i] = keel_rms_rstd(q[i], dim, eps), row by row (KR_GROUP is 2 here) */
KEEL_INLINE void kr_rms_rstd_rows(int nr, const double *q, size_t dim, float eps, float *rstd)
{
    for (int i = 0; i < nr; i++)
        rstd[i] = keel_rms_rstd(q[i], dim, eps);
}

/* ---- BatchNorm's column operations -------------------------------------------------------------
 * lanes__avx512.h's kc section on 256-bit vectors: a kc_d8 is two ymm of 4 double accumulators
 * (columns 0-3, 4-7), filled from one ymm of 8 floats by two exact vcvtps2pd. A group of n < 8
 * columns is a maskload of its floats and maskload / maskstore of its doubles (kc_tail:
 * lanes__avx2.h's tail shape, n < 8). */
typedef struct kc_d8 {
    __m256d lo, hi;
} kc_d8;
typedef k256_tail kc_tail;

/* f32_batchnorm_simd.h's register sweeps: 4 groups of 8 columns for the statistics (16 ymm:
 * an accumulator and a mean each); the backward's ten accumulators of a group take most of
 * the 16 ymm, so one group a sweep, for chunks of at most 2 groups only: the groups a sweep
 * over blocked wide chunks lost there (KEEL_ISA=avx2 keel bench, bwd train 256x1024 13.5 ->
 * 9.0, 4096x64 13.5 -> 10.7 GB/s). */
#define KC_STATS_GROUPS 4
#define KC_BWD_GROUPS 1
#define KC_BWD_NARROW_GROUPS 2
#define KC_BWD_BLOCKED 0

KEEL_INLINE kc_tail kc_tail_of(size_t n) { return k256_tail_of(n); }
KEEL_INLINE kc_d8 kc_dzero(void)
{
    const kc_d8 d = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    return d;
}
KEEL_INLINE kc_d8 kc_widen(kl_f8 v)
{
    const kc_d8 d = {k256_lo_pd(v), k256_hi_pd(v)};
    return d;
}
KEEL_INLINE kc_d8 kc_cvt(const float *p) { return kc_widen(_mm256_loadu_ps(p)); }
KEEL_INLINE kl_f8 kc_f8_load_tail(const float *p, const kc_tail *t)
{
    return _mm256_maskload_ps(p, t->f0);
}
KEEL_INLINE kc_d8 kc_cvt_tail(const float *p, const kc_tail *t)
{
    return kc_widen(kc_f8_load_tail(p, t));
}
KEEL_INLINE kc_d8 kc_load(const double *p)
{
    const kc_d8 d = {_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)};
    return d;
}
KEEL_INLINE kc_d8 kc_load_tail(const double *p, const kc_tail *t)
{
    const kc_d8 d = {_mm256_maskload_pd(p, _mm256_castpd_si256(t->d0)),
                     _mm256_maskload_pd(p + 4, _mm256_castpd_si256(t->d1))};
    return d;
}
KEEL_INLINE void kc_store(double *p, kc_d8 v)
{
    _mm256_storeu_pd(p, v.lo);
    _mm256_storeu_pd(p + 4, v.hi);
}
KEEL_INLINE void kc_store_tail(double *p, kc_d8 v, const kc_tail *t)
{
    _mm256_maskstore_pd(p, _mm256_castpd_si256(t->d0), v.lo);
    _mm256_maskstore_pd(p + 4, _mm256_castpd_si256(t->d1), v.hi);
}
KEEL_INLINE kc_d8 kc_add(kc_d8 a, kc_d8 b)
{
    const kc_d8 d = {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)};
    return d;
}
KEEL_INLINE kc_d8 kc_sub(kc_d8 a, kc_d8 b)
{
    const kc_d8 d = {_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi)};
    return d;
}
KEEL_INLINE kc_d8 kc_mul(kc_d8 a, kc_d8 b)
{
    const kc_d8 d = {_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)};
    return d;
}

/* ---- kb: the short rows' batches (row_batches_simd.h), a row a double lane --------------------
 * lanes__avx512.h's kb section on 256-bit vectors: four rows of up to 16 floats (two ymm; four
 * rows fill a double vector), each finishing operation the scalar helper's, correctly rounded
 * in either form, so the bits are the same. */
#define KB_ROWS 4
#define KB_NV 1
#define KB_TAKE_MAX 16 /* the rows every forward gives the batches */
typedef __m256d kb_d;
typedef __m128 kb_f;
typedef __m256d kb_part; /* a row's 16 lanes after the tree's steps h = 8 and 4 */

KEEL_INLINE kb_part kb_part_of(kr_d16 a)
{
    return _mm256_add_pd(_mm256_add_pd(a.q[0], a.q[2]), _mm256_add_pd(a.q[1], a.q[3]));
}
/* The tree from h = 2 on, for four rows: s[i] holds row i's four lanes after h = 4; returns the
 * four row sums, row i in lane i. h = 2: the 128-bit halves of rows i and i + 1 side by side,
 * [s_i lanes 0-1, s_i+1 lanes 0-1] + [s_i lanes 2-3, s_i+1 lanes 2-3]; h = 1: the even and odd
 * lanes of the four rows (rows 0, 2, 1, 3), put back in order. */
KEEL_INLINE kb_d kb_reduce(const kb_part s[KB_ROWS])
{
    __m256d p[2];
    for (int i = 0; i < 2; i++)
        p[i] = _mm256_add_pd(_mm256_permute2f128_pd(s[2 * i], s[2 * i + 1], 0x20),
                             _mm256_permute2f128_pd(s[2 * i], s[2 * i + 1], 0x31));
    const __m256d t = _mm256_add_pd(_mm256_unpacklo_pd(p[0], p[1]), _mm256_unpackhi_pd(p[0], p[1]));
    return _mm256_permute4x64_pd(t, 0xd8); /* lanes 0, 2, 1, 3 */
}
KEEL_INLINE kb_d kb_dzero(void) { return _mm256_setzero_pd(); }
KEEL_INLINE kb_d kb_dadd(kb_d a, kb_d b) { return _mm256_add_pd(a, b); }
KEEL_INLINE kb_d kb_dsub(kb_d a, kb_d b) { return _mm256_sub_pd(a, b); }
KEEL_INLINE kb_f kb_narrow(kb_d a) { return _mm256_cvtpd_ps(a); }
KEEL_INLINE kb_d kb_widen(kb_f a) { return _mm256_cvtps_pd(a); }
KEEL_INLINE void kb_fstore(float *p, kb_f v) { _mm_storeu_ps(p, v); }
KEEL_INLINE void kb_dstore(double *p, kb_d v) { _mm256_storeu_pd(p, v); }

KEEL_INLINE kb_d kb_dset1(double v) { return _mm256_set1_pd(v); }
KEEL_INLINE kb_d kb_dmul(kb_d a, kb_d b) { return _mm256_mul_pd(a, b); }
KEEL_INLINE kb_d kb_ddiv(kb_d a, kb_d b) { return _mm256_div_pd(a, b); }
KEEL_INLINE kb_d kb_dsqrt(kb_d a) { return _mm256_sqrt_pd(a); }
/* v where t is finite (t - t is 0 there, NaN for an infinity or a NaN), NaN elsewhere */
KEEL_INLINE kb_d kb_nan_unless_finite(kb_d t, kb_d v)
{
    const __m256d f = _mm256_cmp_pd(_mm256_sub_pd(t, t), _mm256_setzero_pd(), _CMP_EQ_OQ);
    return _mm256_blendv_pd(_mm256_set1_pd(NAN), v, f);
}

/* ---- kr and the conversions: a kr_f16's floats as the 32-bit lanes of convert_lanes__<isa>.h
 * (KR_CV of CV_WIDTH lanes, in order) and back, and a tail's length: what row_storage_simd.h
 * needs to load and store rows of bf16 / f16 through the same bodies. */
#include "convert_lanes__avx2.h"
#define KR_CV 2
KEEL_INLINE kr_f16 kr_of_bits(const cv_u32 *c)
{
    const kr_f16 v = {_mm256_castsi256_ps(c[0]), _mm256_castsi256_ps(c[1])};
    return v;
}
KEEL_INLINE void kr_bits(kr_f16 v, cv_u32 *c)
{
    c[0] = _mm256_castps_si256(v.lo);
    c[1] = _mm256_castps_si256(v.hi);
}
KEEL_INLINE size_t kr_tail_len(const kr_tail *t) { return t->n; }

#endif
