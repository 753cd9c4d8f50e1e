/* keel's lane vocabulary on AVX-512: the names of lanes__avx2.h, the shared part in lanes_ymm.h.
 * A row's tail (n < 8 floats) is an AVX-512VL masked load / store. Include only from files built
 * with the AVX-512 flags (*__avx512.c), after kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX512_H
#define KEEL_KERNELS_LANES_AVX512_H

#include "simd_lanes__avx512.h"
#include "finish_rows__avx512.h"
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

/* ---- kr: the reduction unit of kernels.h, 16 floats and 16 double lanes -----------------------
 * The row reductions of the norms (f32_rmsnorm_simd.h, f32_layernorm_simd.h) step 16 floats at a
 * time, kernels.h's 16 lanes: a kr_f16 is one zmm (the norms' elementwise sweeps too: measured
 * as fast as two ymm there, unlike LayerScale's three output streams, see lanes_ymm.h), a kr_d16
 * two, lo = lanes 0-7 and hi = lanes 8-15, each filled by an exact vcvtps2pd of 8 floats. A
 * tail of n < 16 floats is a masked load (nothing past the row is read) and a masked add: the
 * lanes that get no element keep their bits, as in the scalar loop. The names and meanings are
 * the same on every path (lanes__avx2.h, lanes__neon.h). */
typedef __m512 kr_f16;
typedef struct kr_d16 {
    __m512d lo, hi;
} kr_d16;
typedef __mmask16 kr_tail; /* the floats of a row's tail, the same for every row of a call */

/* Rows shorter than KR_GROUP_BELOW floats go KR_GROUP at a time: their reductions are
 * independent chains, interleaved to hide the latency of the lane adds, the trees and the per-row
 * divisions (simd_lanes__avx512.h: K512_GROUP; 4 rows = 8 zmm accumulators of 32). */
#define KR_GROUP K512_GROUP
#define KR_GROUP_BELOW K512_GROUP_BELOW
/* Whether a kr_d16 and its operands crowd the register file (32 zmm: no), so that a
 * body orders its stages to keep fewer values live (f32_rmsnorm_simd.h's row pipeline). */
#define KR_FEW_REGS 0
/* The vector registers of the path and the ones a kr_d16 takes, for a body that sizes what it
 * keeps live to the register file (f32_layernorm_simd.h's sweep 1: two rows interleave here). */
#define KR_VREGS 32
#define KR_D16_REGS 2

KEEL_INLINE kr_tail kr_tail_of(size_t n) { return k512_tail16(n); }

KEEL_INLINE kr_f16 kr_load(const float *p) { return _mm512_loadu_ps(p); }
/* the tail's floats at p, 0.0 past them; reads nothing past the tail */
KEEL_INLINE kr_f16 kr_load_tail(const float *p, const kr_tail *t)
{
    return _mm512_maskz_loadu_ps(*t, p);
}
KEEL_INLINE void kr_store(float *p, kr_f16 v) { _mm512_storeu_ps(p, v); }
KEEL_INLINE void kr_store_tail(float *p, kr_f16 v, const kr_tail *t)
{
    _mm512_mask_storeu_ps(p, *t, v);
}
/* A streaming store of 16 floats at p, where kr_streamable(p) (whole 64-byte lines); then
 * kl_stream_fence() before the call returns. */
KEEL_INLINE void kr_stream(float *p, kr_f16 v) { _mm512_stream_ps(p, v); }
KEEL_INLINE int kr_streamable(const float *p) { return k512_aligned64(p); }
/* Whether a call's outputs (rows x stride floats) go past the caches, where they stream. */
KEEL_INLINE int kr_want_stream(size_t rows, size_t stride)
{
    return k512_want_stream(rows, stride);
}
/* Whether a call prefetches the rows it reads next (simd_lanes__avx512.h: beyond L2 only). */
KEEL_INLINE int kr_want_prefetch(size_t rows, size_t dim, size_t stride)
{
    return k512_want_prefetch(rows, dim, stride);
}

KEEL_INLINE kr_f16 kr_set1(float a) { return _mm512_set1_ps(a); }
KEEL_INLINE kr_f16 kr_add(kr_f16 a, kr_f16 b) { return _mm512_add_ps(a, b); }
KEEL_INLINE kr_f16 kr_sub(kr_f16 a, kr_f16 b) { return _mm512_sub_ps(a, b); }
KEEL_INLINE kr_f16 kr_mul(kr_f16 a, kr_f16 b) { return _mm512_mul_ps(a, b); }

KEEL_INLINE kr_d16 kr_dzero(void)
{
    const kr_d16 z = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    return z;
}
/* (double)p[0..15], converted from memory (one instruction per 8) */
KEEL_INLINE kr_d16 kr_dload(const float *p)
{
    const kr_d16 d = {k512_cvt8(p), k512_cvt8(p + 8)};
    return d;
}
/* (double) of the tail's floats at p, 0.0 past them: kr_widen(kr_load_tail(p, t)), the high
 * half loaded and converted only when the tail reaches it (with kr_dadd_tail's test, rows of 100
 * floats four at a time, f32_layernorm_simd.h: lnf 1024x100 40.3 -> 38.6 us) */
KEEL_INLINE kr_d16 kr_dload_tail(const float *p, const kr_tail *t)
{
    const __mmask8 hi = k512_hi8(*t);
    const kr_d16 d = {k512_cvt8_mask(k512_lo8(*t), p),
                      hi ? k512_cvt8_mask(hi, p + 8) : _mm512_setzero_pd()};
    return d;
}
/* (double)v, lane by lane (exact) */
KEEL_INLINE kr_d16 kr_widen(kr_f16 v)
{
    const kr_d16 d = {_mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                      _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))};
    return d;
}
KEEL_INLINE kr_d16 kr_dadd(kr_d16 a, kr_d16 b)
{
    const kr_d16 d = {_mm512_add_pd(a.lo, b.lo), _mm512_add_pd(a.hi, b.hi)};
    return d;
}
KEEL_INLINE kr_d16 kr_dmul(kr_d16 a, kr_d16 b)
{
    const kr_d16 d = {_mm512_mul_pd(a.lo, b.lo), _mm512_mul_pd(a.hi, b.hi)};
    return d;
}
KEEL_INLINE kr_d16 kr_dsub(kr_d16 a, kr_d16 b)
{
    const kr_d16 d = {_mm512_sub_pd(a.lo, b.lo), _mm512_sub_pd(a.hi, b.hi)};
    return d;
}
/* a in every lane (one register, used for both halves) */
KEEL_INLINE kr_d16 kr_dset1(double a)
{
    const __m512d v = _mm512_set1_pd(a);
    const kr_d16 d = {v, v};
    return d;
}
/* a + b in the tail's lanes; the others keep a's bits. The high half is left alone when the
 * tail has no element there (its operands then need not be computed at all). */
KEEL_INLINE kr_d16 kr_dadd_tail(kr_d16 a, kr_d16 b, const kr_tail *t)
{
    const __mmask8 hi = k512_hi8(*t);
    const kr_d16 d = {k512_add_mask(a.lo, k512_lo8(*t), b.lo),
                      hi ? k512_add_mask(a.hi, hi, b.hi) : a.hi};
    return d;
}
/* kernels.h's tree, h = 8, 4, 2, 1: the row's R(term) */
KEEL_INLINE double kr_reduce16(kr_d16 a) { return k512_reduce16(a.lo, a.hi); }

/* rstd[i] = keel_rms_rstd(q[i], dim, eps) for nr rows (a constant), KR_GROUP of them in one
 * vector's divisions and square root (finish_rows__avx512.h: 4096x16 0.40 -> 0.32 ns/element) */
KEEL_INLINE void kr_rms_rstd_rows(int nr, const double *q, size_t dim, float eps, float *rstd)
{
    k512_rms_rstd_n(nr, q, dim, eps, rstd);
}

/* ---- BatchNorm's column operations -------------------------------------------------------------
 * f32_batchnorm_simd.h sums down the columns of a batch, 8 columns at a time: a kc_d8 holds the
 * double accumulators of 8 columns, one zmm (each filled by an exact vcvtps2pd of 8 floats). A
 * chunk's last group of n < 8 columns is masked (kc_tail): lanes without a column are neither
 * read nor written. The elementwise sweeps (apply, dx) are kr_f16 steps. */
typedef __m512d kc_d8;
typedef __mmask8 kc_tail;

/* The groups of 8 columns whose sums stay in registers, at most (f32_batchnorm_simd.h): the
 * statistics' sweeps (an accumulator and a mean each) and the backward's (five accumulators,
 * a mean and a gamma each); the backward's also take the blocked wide chunks (KC_BWD_BLOCKED). */
#define KC_STATS_GROUPS 8
#define KC_BWD_GROUPS 4
#define KC_BWD_NARROW_GROUPS 4
#define KC_BWD_BLOCKED 1

KEEL_INLINE kc_tail kc_tail_of(size_t n) { return (__mmask8)((1u << n) - 1u); }
KEEL_INLINE kc_d8 kc_dzero(void) { return _mm512_setzero_pd(); }
/* (double)p[0..8), converted from memory; the tail's: 0.0 past it, nothing past it read */
KEEL_INLINE kc_d8 kc_cvt(const float *p) { return k512_cvt8(p); }
KEEL_INLINE kc_d8 kc_cvt_tail(const float *p, const kc_tail *t) { return k512_cvt8_mask(*t, p); }
/* 8 floats (kl_f8) at p; the tail's, 0.0 past it */
KEEL_INLINE kl_f8 kc_f8_load_tail(const float *p, const kc_tail *t)
{
    return _mm256_maskz_loadu_ps(*t, p);
}
/* (double)v, lane by lane (exact) */
KEEL_INLINE kc_d8 kc_widen(kl_f8 v) { return _mm512_cvtps_pd(v); }
/* 8 doubles at p; the tail's, 0.0 past it */
KEEL_INLINE kc_d8 kc_load(const double *p) { return _mm512_loadu_pd(p); }
KEEL_INLINE kc_d8 kc_load_tail(const double *p, const kc_tail *t)
{
    return _mm512_maskz_loadu_pd(*t, p);
}
KEEL_INLINE void kc_store(double *p, kc_d8 v) { _mm512_storeu_pd(p, v); }
KEEL_INLINE void kc_store_tail(double *p, kc_d8 v, const kc_tail *t)
{
    _mm512_mask_storeu_pd(p, *t, v);
}
KEEL_INLINE kc_d8 kc_add(kc_d8 a, kc_d8 b) { return _mm512_add_pd(a, b); }
KEEL_INLINE kc_d8 kc_sub(kc_d8 a, kc_d8 b) { return _mm512_sub_pd(a, b); }
KEEL_INLINE kc_d8 kc_mul(kc_d8 a, kc_d8 b) { return _mm512_mul_pd(a, b); }

#endif
