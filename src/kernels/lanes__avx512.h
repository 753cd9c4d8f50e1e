/* keel's lane vocabulary on AVX-512: the names of lanes__avx2.h, the shared part in lanes_ymm.h.
 * A row's tail (n < 8 floats) is an AVX-512VL masked load / store. Include only from files built
 * with the AVX-512 flags (*__avx512.c), after kernels.h. */
#ifndef KEEL_KERNELS_LANES_AVX512_H
#define KEEL_KERNELS_LANES_AVX512_H

#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h" /* KEEL_PREFETCH_ABOVE, KEEL_STREAM_ABOVE */

#define KEEL_INLINE static inline __attribute__((always_inline))

#include "norm_finish.h"
#include "lanes_ymm.h"

/* The reduction order of kernels.h on AVX-512: the 16 double lanes are two zmm registers,
 * lo = lanes 0-7 and hi = lanes 8-15, so the 16 floats x[j..j+15] (j % 16 == 0) go to lo (the
 * low 8) and hi (the high 8), each converted exactly with vcvtps2pd. A tail of n < 16 elements
 * is a masked load plus a masked add: lanes that get no element are not touched at all, as in
 * the scalar loop. */

/* (double)p[0..7] */
KEEL_INLINE __m512d k512_cvt8(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }

/* (double)p[i] where bit i of k is set, else 0.0; never reads the masked-out floats. */
KEEL_INLINE __m512d k512_cvt8_mask(__mmask8 k, const float *p)
{
    return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, p));
}

/* Mask of the first n (< 16) floats of a tail, and its two halves for the double lanes. */
KEEL_INLINE __mmask16 k512_tail16(size_t n) { return (__mmask16)((1u << n) - 1u); }
KEEL_INLINE __mmask8 k512_lo8(__mmask16 k) { return (__mmask8)(k & 0xff); }
KEEL_INLINE __mmask8 k512_hi8(__mmask16 k) { return (__mmask8)(k >> 8); }

/* lane = lane + t only where k is set (the other lanes keep their bits). */
KEEL_INLINE __m512d k512_add_mask(__m512d lane, __mmask8 k, __m512d t)
{
    return _mm512_mask_add_pd(lane, k, lane, t);
}

/* Small rows go in groups of K512_GROUP: their reductions are independent chains, so
 * interleaving them hides the latency of the lane adds, the trees and the per-row divisions,
 * which dominates below K512_GROUP_BELOW floats a row (measured; above it one row at a time
 * keeps the rows in L1 and is faster). The order of the adds within each row is unchanged. */
#define K512_GROUP 4
#define K512_GROUP_BELOW 256

KEEL_INLINE int k512_aligned64(const float *p) { return ((uintptr_t)p & 63) == 0; }

/* The fixed tree, h = 8, 4, 2, 1: a[i] = a[i] + a[i + h]; returns a[0]. */
KEEL_INLINE double k512_reduce16(__m512d lo, __m512d hi)
{
    const __m512d a = _mm512_add_pd(lo, hi);
    const __m256d b = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    const __m128d c = _mm_add_pd(_mm256_castpd256_pd128(b), _mm256_extractf128_pd(b, 1));
    return _mm_cvtsd_f64(_mm_add_sd(c, _mm_unpackhi_pd(c, c)));
}

/* The tree's steps h = 4, 2, 1 of eight rows at once: s[i] is row i's 8 lanes after the step
 * h = 8 (lo + hi); lane i of the result is row i's sum, the same adds of the same operands in
 * the same order (each add's first operand the lower lane, as in the tree), so the same bits,
 * but each vector add serves several rows where k512_reduce16 spends one a row and step.
 * h = 4: rows i and i + 1 side by side, [s_i lanes 0-3, s_i+1 lanes 0-3] + [s_i lanes 4-7,
 * s_i+1 lanes 4-7]; h = 2: 128-bit pairs of four rows; h = 1: the even and odd lanes of all
 * eight, then the rows put back in order. */
KEEL_INLINE __m512d k512_reduce8x8(const __m512d s[8])
{
    __m512d p[4], q[2];
    for (int i = 0; i < 4; i++)
        p[i] = _mm512_add_pd(_mm512_shuffle_f64x2(s[2 * i], s[2 * i + 1], 0x44),
                             _mm512_shuffle_f64x2(s[2 * i], s[2 * i + 1], 0xee));
    for (int i = 0; i < 2; i++) /* [rows 4i, 4i+1, 4i+2, 4i+3], two lanes each */
        q[i] = _mm512_add_pd(_mm512_shuffle_f64x2(p[2 * i], p[2 * i + 1], 0x88),
                             _mm512_shuffle_f64x2(p[2 * i], p[2 * i + 1], 0xdd));
    /* lanes: rows 0, 4, 1, 5, 2, 6, 3, 7 */
    const __m512d t = _mm512_add_pd(_mm512_unpacklo_pd(q[0], q[1]), _mm512_unpackhi_pd(q[0], q[1]));
    return _mm512_permutexvar_pd(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), t);
}

typedef __mmask8 kl_tail;

KEEL_INLINE kl_tail kl_tail_of(size_t n) { return (__mmask8)((1u << n) - 1u); }
KEEL_INLINE kl_f8 kl_load_tail(const float *p, kl_tail t) { return _mm256_maskz_loadu_ps(t, p); }
KEEL_INLINE void kl_store_tail(float *p, kl_f8 v, kl_tail t) { _mm256_mask_storeu_ps(p, t, v); }

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

/* For int8 quantization and absmax (quantize_i8_simd.h). The nearest integer, ties to even
 * (vrndscaleps: exact, no exception flags). */
KEEL_INLINE kv kv_round(kv a)
{
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* min(a, b), max(a, b) where neither is NaN (a NaN lane's result differs by ISA: a body deals
 * with NaN apart) */
KEEL_INLINE kv kv_min(kv a, kv b) { return _mm512_min_ps(a, b); }
KEEL_INLINE kv kv_max(kv a, kv b) { return _mm512_max_ps(a, b); }
/* a == b (false where either is NaN: kv_eq(v, v) is "v is not NaN"); either is NaN */
KEEL_INLINE kv_pred kv_eq(kv a, kv b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
KEEL_INLINE kv_pred kv_unord(kv a, kv b) { return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q); }
/* predicates: none set; and, or; whether any lane is set */
KEEL_INLINE kv_pred kv_none(void) { return 0; }
KEEL_INLINE kv_pred kv_pred_and(kv_pred a, kv_pred b) { return a & b; }
KEEL_INLINE kv_pred kv_pred_or(kv_pred a, kv_pred b) { return a | b; }
KEEL_INLINE int kv_any(kv_pred p) { return p != 0; }
/* the largest lane (none NaN) */
KEEL_INLINE float kv_reduce_max(kv a) { return _mm512_reduce_max_ps(a); }
/* The lanes of kv holding integers in [-127, 127] as int8 (vcvttps2dq: exact on integers):
 * kv_store_i8_n stores n of them at q (n >= KV_WIDTH: all 16, vpmovdb; else the first n, a
 * masked vpmovdb: nothing past them written), kv_store4_i8 the 64 of a, b, c, d in that order
 * with one 64-byte store: two saturating packs (exact: nothing saturates) leave each 128-bit lane
 * k with the 4-byte groups a_k, b_k, c_k, d_k, and one vpermd puts them in order. */
KEEL_INLINE void kv_store_i8_n(int8_t *q, kv c, size_t n, kv_tail t)
{
    if (n >= KV_WIDTH)
        _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(c)));
    else
        _mm512_mask_cvtepi32_storeu_epi8(q, t, _mm512_cvttps_epi32(c));
}
KEEL_INLINE void kv_store4_i8(int8_t *q, kv a, kv b, kv c, kv d)
{
    const __m512i ab = _mm512_packs_epi32(_mm512_cvttps_epi32(a), _mm512_cvttps_epi32(b));
    const __m512i cd = _mm512_packs_epi32(_mm512_cvttps_epi32(c), _mm512_cvttps_epi32(d));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_storeu_si512((void *)q, _mm512_permutexvar_epi32(order, _mm512_packs_epi16(ab, cd)));
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
 * divisions (lanes__avx512.h: K512_GROUP; 4 rows = 8 zmm accumulators of 32). */
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
#define KR_STREAMS 1 /* this path has streaming stores (kernels.h, keel_want_stream) */
KEEL_INLINE int kr_streamable(const float *p) { return k512_aligned64(p); }

#if defined(__AVX512BF16__)
/* A file built with -mavx512bf16 (bf16_norms__avx512bf16.c) rounds 16 floats to bf16 in one
 * instruction, vcvtneps2bf16: nearest even, a NaN made quiet keeping its sign and top payload,
 * as the integer rounding of convert_round_simd.h; but it reads float32 subnormals as zero, so
 * it is used only for a vector that holds none (kr_bf16_cvt_exact), and then gives the integer
 * rounding's bits (row_storage_simd.h). */
#define KR_BF16_CVT 1
KEEL_INLINE int kr_bf16_cvt_exact(kr_f16 v) { return _mm512_fpclass_ps_mask(v, 0x20) == 0; }
KEEL_INLINE void kr_store_bf16(uint16_t *p, kr_f16 v)
{
    _mm256_storeu_si256((__m256i *)(void *)p, (__m256i)_mm512_cvtneps_pbh(v));
}
KEEL_INLINE void kr_stream_bf16(uint16_t *p, kr_f16 v)
{
    _mm256_stream_si256((__m256i *)(void *)p, (__m256i)_mm512_cvtneps_pbh(v));
}
#endif

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

/* (double) of 16 doubles at p, and their store (the batches' slots: row_batches_simd.h) */
KEEL_INLINE kr_d16 kr_dload16(const double *p)
{
    const kr_d16 d = {_mm512_loadu_pd(p), _mm512_loadu_pd(p + 8)};
    return d;
}
KEEL_INLINE void kr_dstore16(double *p, kr_d16 v)
{
    _mm512_storeu_pd(p, v.lo);
    _mm512_storeu_pd(p + 8, v.hi);
}
/* a * b in the tail's lanes, +0.0 in the others */
KEEL_INLINE kr_d16 kr_dmul_tail(kr_d16 a, kr_d16 b, const kr_tail *t)
{
    const kr_d16 d = {_mm512_maskz_mul_pd(k512_lo8(*t), a.lo, b.lo),
                      _mm512_maskz_mul_pd(k512_hi8(*t), a.hi, b.hi)};
    return d;
}
/* PREFETCHW: the line at p fetched for a store to come, owned already, so that the store does
 * not wait for it. Not through _mm_prefetch, which the compiler turns into a plain prefetch
 * without -mprfchw. */
KEEL_INLINE void kr_prefetch_w(const void *p)
{
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
}

/* (float)(1.0 / sqrt(q / dim + eps)) lane by lane, as keel_ln_rstd, and NaN where q is not
 * finite: keel_rms_rstd of four rows */
KEEL_INLINE __m128 k512_rms_rstd4(__m256d q, size_t dim, float eps)
{
    const __m256d v = _mm256_add_pd(_mm256_div_pd(q, _mm256_set1_pd((double)dim)),
                                    _mm256_set1_pd((double)eps));
    const __m128 r = _mm256_cvtpd_ps(_mm256_div_pd(_mm256_set1_pd(1.0), _mm256_sqrt_pd(v)));
    return _mm_mask_mov_ps(r, _mm256_fpclass_pd_mask(q, 0x99), _mm_set1_ps(NAN));
}

/* rstd[i] = keel_rms_rstd(q[i], dim, eps) for nr rows (a constant), KR_GROUP of them in one
 * vector's divisions and square root: RMSNorm forward at 4096x16 0.40 -> 0.32 ns/element
 * (measured, 1 thread; LayerNorm's rstd in groups of 4 measured no gain: its per-row mean
 * split and broadcasts dominate) */
KEEL_INLINE void kr_rms_rstd_rows(int nr, const double *q, size_t dim, float eps, float *rstd)
{
    if (nr == 4)
        _mm_storeu_ps(rstd, k512_rms_rstd4(_mm256_loadu_pd(q), dim, eps));
    else
        for (int i = 0; i < nr; i++)
            rstd[i] = keel_rms_rstd(q[i], dim, eps);
}

/* ---- kb: the short rows' batches (row_batches_simd.h), a row a double lane --------------------
 * KB_ROWS rows go together, and the tree's last steps, the divisions and the square root of
 * their statistics run once in a vector, a row a lane, each operation the scalar helper's
 * (norm_finish.h), correctly rounded in either form (vdivpd, vsqrtpd, vcvtpd2ps under the default
 * rounding), so the bits are the same; rows of up to KB_NV vectors of 16 floats. */
#define KB_ROWS 8
#define KB_NV 4
/* The rows the fused forwards and the plain LayerNorm give the batches; the plain RMSNorm gives
 * them rows of up to 16 * KB_NV. Rows of 64 floats, keel bench 4096x64, 1 thread, fraction of the
 * floor, before -> in batches: add+ln fwd 0.96-1.00 -> 0.81 (the row pipeline of
 * add_norm_simd.h does better there), add+rms fwd 1.03-1.05 -> 0.97-0.98, layernorm fwd
 * 0.45-0.54 -> 0.43-0.51, rmsnorm fwd 0.43-0.46 -> 0.62-0.64. */
#define KB_TAKE_MAX 48
typedef __m512d kb_d; /* a double a row */
typedef __m256 kb_f;  /* a float a row */
typedef __m512d kb_part; /* a row's 16 lanes after the tree's first step (h = 8) */

KEEL_INLINE kb_part kb_part_of(kr_d16 a) { return _mm512_add_pd(a.lo, a.hi); }
/* the tree's steps h = 4, 2, 1 of the rows: row i's sum in lane i (k512_reduce8x8) */
KEEL_INLINE kb_d kb_reduce(const kb_part s[KB_ROWS]) { return k512_reduce8x8(s); }
KEEL_INLINE kb_d kb_dzero(void) { return _mm512_setzero_pd(); }
KEEL_INLINE kb_d kb_dadd(kb_d a, kb_d b) { return _mm512_add_pd(a, b); }
KEEL_INLINE kb_d kb_dsub(kb_d a, kb_d b) { return _mm512_sub_pd(a, b); }
KEEL_INLINE kb_f kb_narrow(kb_d a) { return _mm512_cvtpd_ps(a); }
KEEL_INLINE kb_d kb_widen(kb_f a) { return _mm512_cvtps_pd(a); }
KEEL_INLINE void kb_fstore(float *p, kb_f v) { _mm256_storeu_ps(p, v); }
KEEL_INLINE void kb_dstore(double *p, kb_d v) { _mm512_storeu_pd(p, v); }

KEEL_INLINE kb_d kb_dset1(double v) { return _mm512_set1_pd(v); }
KEEL_INLINE kb_d kb_dmul(kb_d a, kb_d b) { return _mm512_mul_pd(a, b); }
KEEL_INLINE kb_d kb_ddiv(kb_d a, kb_d b) { return _mm512_div_pd(a, b); }
KEEL_INLINE kb_d kb_dsqrt(kb_d a) { return _mm512_sqrt_pd(a); }
/* v where t is finite (t - t is 0 there, NaN for an infinity or a NaN), NaN elsewhere */
KEEL_INLINE kb_d kb_nan_unless_finite(kb_d t, kb_d v)
{
    const __mmask8 f = _mm512_cmp_pd_mask(_mm512_sub_pd(t, t), _mm512_setzero_pd(), _CMP_EQ_OQ);
    return _mm512_mask_mov_pd(_mm512_set1_pd(NAN), f, v);
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

/* ---- kr and the conversions: a kr_f16's floats as the 32-bit lanes of convert_lanes__<isa>.h
 * (KR_CV of CV_WIDTH lanes, in order) and back, and a tail's length: what row_storage_simd.h
 * needs to load and store rows of bf16 / f16 through the same bodies. */
#include "convert_lanes__avx512.h"
#define KR_CV 1
KEEL_INLINE kr_f16 kr_of_bits(const cv_u32 *c) { return _mm512_castsi512_ps(c[0]); }
KEEL_INLINE void kr_bits(kr_f16 v, cv_u32 *c) { c[0] = _mm512_castps_si512(v); }
KEEL_INLINE size_t kr_tail_len(const kr_tail *t) { return (size_t)__builtin_popcount(*t); }

#endif
