/* keel's lane vocabulary on aarch64 NEON (Advanced SIMD): the names of lanes__avx2.h and
 * lanes__avx512.h, so that a kernel body written once (f32_*_simd.h) compiles here unchanged.
 * NEON is baseline on aarch64: the files that include this (*__neon.c) need no extra flags, and
 * like every kernel file they are built with -ffp-contract=off (the compiler never fuses a
 * vmulq + vaddq into an fmla; kv_fma is the only fused operation, as fmaf is in the scalar
 * kernels). AArch64's Advanced SIMD is IEEE in every lane (subnormals kept while FPCR.FZ is 0,
 * Linux's default; division and fused multiply-add rounded once), so each lane gives exactly the
 * bits of the scalar expression.
 *
 * kl_f8 is 8 floats, two q registers, as the ymm of the x86 paths. NEON has no masked loads or
 * stores: a row's tail (n < 8, or n < 4 for kv) is copied through a small stack buffer, so
 * nothing past a row is ever read or written. There is no streaming store here yet (kl_stream is
 * an ordinary store; STNP would be the candidate, unmeasured), so no fence is needed.
 * Include only from *__neon.c files, after kernels.h. */
#ifndef KEEL_KERNELS_LANES_NEON_H
#define KEEL_KERNELS_LANES_NEON_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h" /* KEEL_STREAM_ABOVE, KEEL_PREFETCH_ABOVE */
#include "norm_finish.h"

#ifndef KEEL_INLINE
#define KEEL_INLINE static inline __attribute__((always_inline))
#endif

/* ---- kl_f8: the 8-float step of the elementwise kernels -------------------------------------- */

typedef struct kl_f8 {
    float32x4_t lo, hi;
} kl_f8;

KEEL_INLINE kl_f8 kl_zero(void)
{
    kl_f8 v = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    return v;
}
KEEL_INLINE kl_f8 kl_load(const float *p)
{
    kl_f8 v = {vld1q_f32(p), vld1q_f32(p + 4)};
    return v;
}
KEEL_INLINE void kl_store(float *p, kl_f8 v)
{
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
}

/* The "streaming" store of the other paths: an ordinary store here (see above). */
KEEL_INLINE void kl_stream(float *p, kl_f8 v) { kl_store(p, v); }
KEEL_INLINE void kl_stream_fence(void) {}

/* Element by element, each result rounded once (fadd, fmul: no FMA). */
KEEL_INLINE kl_f8 kl_add(kl_f8 a, kl_f8 b)
{
    kl_f8 v = {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)};
    return v;
}
KEEL_INLINE kl_f8 kl_mul(kl_f8 a, kl_f8 b)
{
    kl_f8 v = {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)};
    return v;
}

/* Whether a row starts a cache line. */
KEEL_INLINE int kl_aligned64(const float *p) { return ((uintptr_t)p & 63) == 0; }

/* A row's tail: its length n (< 8), the same for every row of a call. */
typedef size_t kl_tail;

KEEL_INLINE kl_tail kl_tail_of(size_t n) { return n; }

/* The tail's n floats at p, 0.0 in the lanes past them; only p[0..n) is read. */
KEEL_INLINE kl_f8 kl_load_tail(const float *p, kl_tail n)
{
    float buf[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(buf, p, n * sizeof(float));
    return kl_load(buf);
}
/* The first n lanes of v to p[0..n); nothing past them is written. */
KEEL_INLINE void kl_store_tail(float *p, kl_f8 v, kl_tail n)
{
    float buf[8];
    kl_store(buf, v);
    memcpy(p, buf, n * sizeof(float));
}

/* ---- kv: the compute vector (DyT's tanh), one q register of 4 floats ------------------------- */

typedef float32x4_t kv;
typedef uint32x4_t kv_pred; /* a lane of all ones or all zeros (a compare's result) */
typedef size_t kv_tail;     /* a tail's length (< KV_WIDTH) */
#define KV_WIDTH 4

KEEL_INLINE kv_tail kv_tail_of(size_t n) { return n; }
/* n floats at p (n >= KV_WIDTH: a whole vector; else the first n, 0.0 past them: only p[0..n)
 * is read) */
KEEL_INLINE kv kv_load_n(const float *p, size_t n, kv_tail t)
{
    (void)t;
    if (n >= KV_WIDTH)
        return vld1q_f32(p);
    float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(buf, p, n * sizeof(float));
    return vld1q_f32(buf);
}
KEEL_INLINE void kv_store_n(float *p, kv v, size_t n, kv_tail t)
{
    (void)t;
    if (n >= KV_WIDTH) {
        vst1q_f32(p, v);
        return;
    }
    float buf[4];
    vst1q_f32(buf, v);
    memcpy(p, buf, n * sizeof(float));
}
KEEL_INLINE kv kv_set1(float a) { return vdupq_n_f32(a); }
KEEL_INLINE kv kv_add(kv a, kv b) { return vaddq_f32(a, b); }
KEEL_INLINE kv kv_sub(kv a, kv b) { return vsubq_f32(a, b); }
KEEL_INLINE kv kv_mul(kv a, kv b) { return vmulq_f32(a, b); }
KEEL_INLINE kv kv_div(kv a, kv b) { return vdivq_f32(a, b); }
/* fmaf(a, b, c) and fmaf(-a, b, c), one rounding each: fmla and fmls, the instructions the
 * scalar kernels' fmaf compiles to on aarch64 (fmadd, fmsub), with the same operand order */
KEEL_INLINE kv kv_fma(kv a, kv b, kv c) { return vfmaq_f32(c, a, b); }
KEEL_INLINE kv kv_fnma(kv a, kv b, kv c) { return vfmsq_f32(c, a, b); }
/* |a|: the sign bit cleared (fabs: no NaN is touched otherwise) */
KEEL_INLINE kv kv_abs(kv a) { return vabsq_f32(a); }
/* a < b, a <= b (false where either is NaN) */
KEEL_INLINE kv_pred kv_lt(kv a, kv b) { return vcltq_f32(a, b); }
KEEL_INLINE kv_pred kv_le(kv a, kv b) { return vcleq_f32(a, b); }
/* p ? a : b per lane (a bit select: the chosen lane's bits, NaNs untouched) */
KEEL_INLINE kv kv_select(kv_pred p, kv a, kv b) { return vbslq_f32(p, a, b); }
/* a where p holds, else +0.0 */
KEEL_INLINE kv kv_where(kv_pred p, kv a)
{
    return vreinterpretq_f32_u32(vandq_u32(p, vreinterpretq_u32_f32(a)));
}
/* the float whose bits are j's shifted left 23 (2^k from exp's shifted sum j) */
KEEL_INLINE kv kv_exponent_bits(kv j)
{
    return vreinterpretq_f32_u32(vshlq_n_u32(vreinterpretq_u32_f32(j), 23));
}
/* a (>= +0) with u's sign bit: copysign */
KEEL_INLINE kv kv_with_sign_of(kv a, kv u)
{
    const uint32x4_t sign = vdupq_n_u32(0x80000000u);
    return vreinterpretq_f32_u32(
        vorrq_u32(vreinterpretq_u32_f32(a), vandq_u32(vreinterpretq_u32_f32(u), sign)));
}
/* u where u is NaN (its bits, untouched), else v: a bit select on u == u */
KEEL_INLINE kv kv_nan_passes(kv v, kv u) { return vbslq_f32(vceqq_f32(u, u), v, u); }

/* For int8 quantization and absmax (quantize_i8_simd.h). The nearest integer, ties to even
 * (frintn). */
KEEL_INLINE kv kv_round(kv a) { return vrndnq_f32(a); }
/* min(a, b), max(a, b) where neither is NaN (fmin / fmax give NaN there, the x86 paths an
 * operand: a body deals with NaN apart) */
KEEL_INLINE kv kv_min(kv a, kv b) { return vminq_f32(a, b); }
KEEL_INLINE kv kv_max(kv a, kv b) { return vmaxq_f32(a, b); }
/* a == b (false where either is NaN: kv_eq(v, v) is "v is not NaN"); either is NaN */
KEEL_INLINE kv_pred kv_eq(kv a, kv b) { return vceqq_f32(a, b); }
KEEL_INLINE kv_pred kv_unord(kv a, kv b)
{
    return vmvnq_u32(vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b)));
}
/* predicates: none set; and, or; whether any lane is set (umaxv) */
KEEL_INLINE kv_pred kv_none(void) { return vdupq_n_u32(0); }
KEEL_INLINE kv_pred kv_pred_and(kv_pred a, kv_pred b) { return vandq_u32(a, b); }
KEEL_INLINE kv_pred kv_pred_or(kv_pred a, kv_pred b) { return vorrq_u32(a, b); }
KEEL_INLINE int kv_any(kv_pred p) { return vmaxvq_u32(p) != 0; }
/* the largest lane (none NaN: fmaxv) */
KEEL_INLINE float kv_reduce_max(kv a) { return vmaxvq_f32(a); }
/* The lanes of kv holding integers in [-127, 127] as int8 (fcvtzs: exact on integers, then
 * narrowing moves: nothing is out of range): kv_store_i8_n stores n of them at q (n >=
 * KV_WIDTH: all 4; else the first n, through a stack buffer: nothing past them written),
 * kv_store4_i8 the 16 of a, b, c, d in that order with one 16-byte store. */
KEEL_INLINE int16x4_t kv_i16(kv c) { return vmovn_s32(vcvtq_s32_f32(c)); }
KEEL_INLINE void kv_store_i8_n(int8_t *q, kv c, size_t n, kv_tail t)
{
    (void)t;
    const int16x4_t h = kv_i16(c);
    int8_t buf[8];
    vst1_s8(buf, vmovn_s16(vcombine_s16(h, h)));
    if (n >= KV_WIDTH)
        memcpy(q, buf, KV_WIDTH); /* one 4-byte str */
    else
        memcpy(q, buf, n);
}
KEEL_INLINE void kv_store4_i8(int8_t *q, kv a, kv b, kv c, kv d)
{
    const int8x8_t ab = vmovn_s16(vcombine_s16(kv_i16(a), kv_i16(b)));
    const int8x8_t cd = vmovn_s16(vcombine_s16(kv_i16(c), kv_i16(d)));
    vst1q_s8(q, vcombine_s8(ab, cd));
}

/* ---- kr: the reduction unit of kernels.h, 16 floats and 16 double lanes -----------------------
 * The names and meanings of lanes__avx512.h's kr section: a kr_f16 is four q registers of 4
 * floats, a kr_d16 eight of 2 doubles, v[k] = lanes 2k and 2k + 1, filled by the exact fcvtl /
 * fcvtl2 (float to double). A tail of n < 16 floats is copied through a stack buffer (nothing past
 * the row is read or written) and added with a bit select into the tail's lanes, so the others
 * keep their bits, as in the scalar loop. The tree adds the same lanes in the same order (each
 * add's first operand the lower lane) as keel_reduce16. No streaming store yet (kl_stream's
 * note): no row counts as streamable, and the stores that would stream are ordinary ones, so the
 * kernels prefetch those rows as the other paths do for their cached stores. KR_GROUP is 2, as on
 * AVX2: a row's lanes are 8 of the 32 q registers, and 4 rows' would take them all (unmeasured on
 * aarch64 hardware, as are KR_PIPE_AHEAD and the prefetch policy, taken from the x86 paths). */
typedef struct kr_f16 {
    float32x4_t v[4];
} kr_f16;
typedef struct kr_d16 {
    float64x2_t v[8];
} kr_d16;
typedef struct kr_tail {
    size_t n;        /* floats in the tail (< 16) */
    uint64x2_t d[8]; /* all ones in the double lanes below n */
} kr_tail;

#define KR_GROUP 2
#define KR_GROUP_BELOW 256
/* Whether a kr_d16 and its operands crowd the register file (32 q registers: no), so that a
 * body orders its stages to keep fewer values live (f32_rmsnorm_simd.h's row pipeline). */
#define KR_FEW_REGS 0
/* The vector registers of the path and the ones a kr_d16 takes (lanes__avx512.h). */
#define KR_VREGS 32
#define KR_D16_REGS 8
#define KR_PIPE_AHEAD 256

KEEL_INLINE kr_tail kr_tail_of(size_t n)
{
    kr_tail t;
    t.n = n;
    for (int k = 0; k < 8; k++) {
        const uint64_t lane[2] = {(uint64_t)(2 * k), (uint64_t)(2 * k + 1)};
        t.d[k] = vcltq_u64(vld1q_u64(lane), vdupq_n_u64((uint64_t)n));
    }
    return t;
}

KEEL_INLINE kr_f16 kr_load(const float *p)
{
    const kr_f16 v = {{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}};
    return v;
}
KEEL_INLINE kr_f16 kr_load_tail(const float *p, const kr_tail *t)
{
    float buf[16] = {0.0f};
    memcpy(buf, p, t->n * sizeof(float));
    return kr_load(buf);
}
KEEL_INLINE void kr_store(float *p, kr_f16 v)
{
    for (int k = 0; k < 4; k++)
        vst1q_f32(p + 4 * k, v.v[k]);
}
KEEL_INLINE void kr_store_tail(float *p, kr_f16 v, const kr_tail *t)
{
    float buf[16];
    kr_store(buf, v);
    memcpy(p, buf, t->n * sizeof(float));
}
KEEL_INLINE void kr_stream(float *p, kr_f16 v) { kr_store(p, v); }
#define KR_STREAMS 0 /* no streaming store on this path: kr_stream is an ordinary store */
KEEL_INLINE int kr_streamable(const float *p)
{
    (void)p;
    return 0;
}
/* prfm pldl1keep / pldl2keep */
KEEL_INLINE void kr_prefetch_l1(const float *p) { __builtin_prefetch(p, 0, 3); }
KEEL_INLINE void kr_prefetch_l2(const float *p) { __builtin_prefetch(p, 0, 2); }

KEEL_INLINE kr_f16 kr_set1(float a)
{
    const float32x4_t b = vdupq_n_f32(a);
    const kr_f16 v = {{b, b, b, b}};
    return v;
}
KEEL_INLINE kr_f16 kr_add(kr_f16 a, kr_f16 b)
{
    for (int k = 0; k < 4; k++)
        a.v[k] = vaddq_f32(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kr_f16 kr_sub(kr_f16 a, kr_f16 b)
{
    for (int k = 0; k < 4; k++)
        a.v[k] = vsubq_f32(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kr_f16 kr_mul(kr_f16 a, kr_f16 b)
{
    for (int k = 0; k < 4; k++)
        a.v[k] = vmulq_f32(a.v[k], b.v[k]);
    return a;
}

KEEL_INLINE kr_d16 kr_dzero(void)
{
    kr_d16 d;
    for (int k = 0; k < 8; k++)
        d.v[k] = vdupq_n_f64(0.0);
    return d;
}
KEEL_INLINE kr_d16 kr_widen(kr_f16 v)
{
    kr_d16 d;
    for (int k = 0; k < 4; k++) {
        d.v[2 * k] = vcvt_f64_f32(vget_low_f32(v.v[k]));
        d.v[2 * k + 1] = vcvt_high_f64_f32(v.v[k]);
    }
    return d;
}
KEEL_INLINE kr_d16 kr_dload(const float *p) { return kr_widen(kr_load(p)); }
/* (double) of the tail's floats at p, 0.0 past them */
KEEL_INLINE kr_d16 kr_dload_tail(const float *p, const kr_tail *t)
{
    return kr_widen(kr_load_tail(p, t));
}
KEEL_INLINE kr_d16 kr_dadd(kr_d16 a, kr_d16 b)
{
    for (int k = 0; k < 8; k++)
        a.v[k] = vaddq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kr_d16 kr_dmul(kr_d16 a, kr_d16 b)
{
    for (int k = 0; k < 8; k++)
        a.v[k] = vmulq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kr_d16 kr_dsub(kr_d16 a, kr_d16 b)
{
    for (int k = 0; k < 8; k++)
        a.v[k] = vsubq_f64(a.v[k], b.v[k]);
    return a;
}
/* a in every lane (one register, used for all eight pairs) */
KEEL_INLINE kr_d16 kr_dset1(double a)
{
    kr_d16 d;
    const float64x2_t v = vdupq_n_f64(a);
    for (int k = 0; k < 8; k++)
        d.v[k] = v;
    return d;
}
KEEL_INLINE kr_d16 kr_dadd_tail(kr_d16 a, kr_d16 b, const kr_tail *t)
{
    for (int k = 0; k < 8; k++)
        a.v[k] = vbslq_f64(t->d[k], vaddq_f64(a.v[k], b.v[k]), a.v[k]);
    return a;
}
/* h = 8: v[k] + v[k + 4]; h = 4: + v[k + 2]; h = 2: v[0] + v[1]; h = 1: lane 0 + lane 1 */
KEEL_INLINE double kr_reduce16(kr_d16 a)
{
    for (int h = 4; h >= 1; h /= 2)
        for (int k = 0; k < h; k++)
            a.v[k] = vaddq_f64(a.v[k], a.v[k + h]);
    return vgetq_lane_f64(a.v[0], 0) + vgetq_lane_f64(a.v[0], 1);
}

KEEL_INLINE void kr_rms_rstd_rows(int nr, const double *q, size_t dim, float eps, float *rstd)
{
    for (int i = 0; i < nr; i++)
        rstd[i] = keel_rms_rstd(q[i], dim, eps);
}

/* (double) of 16 doubles at p, and their store (the batches' slots: row_batches_simd.h) */
KEEL_INLINE kr_d16 kr_dload16(const double *p)
{
    kr_d16 d;
    for (int k = 0; k < 8; k++)
        d.v[k] = vld1q_f64(p + 2 * k);
    return d;
}
KEEL_INLINE void kr_dstore16(double *p, kr_d16 v)
{
    for (int k = 0; k < 8; k++)
        vst1q_f64(p + 2 * k, v.v[k]);
}
/* a * b in the tail's lanes, +0.0 in the others */
KEEL_INLINE kr_d16 kr_dmul_tail(kr_d16 a, kr_d16 b, const kr_tail *t)
{
    for (int k = 0; k < 8; k++)
        a.v[k] = vreinterpretq_f64_u64(
            vandq_u64(t->d[k], vreinterpretq_u64_f64(vmulq_f64(a.v[k], b.v[k]))));
    return a;
}
/* prfm pstl1keep: the line at p fetched for a store to come */
KEEL_INLINE void kr_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 3); }

/* ---- kb: the short rows' batches (row_batches_simd.h), a row a double lane --------------------
 * lanes__avx512.h's kb section on q registers: four rows of up to 16 floats (a kb_d is two q
 * registers of 2 doubles, rows 0-1 and 2-3), a row's tree summed whole (kr_reduce16) before the
 * rows meet; each finishing operation the scalar helper's, correctly rounded (fdiv, fsqrt, fcvtn
 * under the default rounding), so the bits are the same. The batch size is the AVX2 path's,
 * unmeasured on aarch64 hardware. */
#define KB_ROWS 4
#define KB_NV 1
#define KB_TAKE_MAX 16
typedef struct kb_d {
    float64x2_t v[2];
} kb_d;
typedef float32x4_t kb_f;
typedef double kb_part; /* a row's sum */

KEEL_INLINE kb_part kb_part_of(kr_d16 a) { return kr_reduce16(a); }
KEEL_INLINE kb_d kb_reduce(const kb_part s[KB_ROWS])
{
    const kb_d d = {{vld1q_f64(s), vld1q_f64(s + 2)}};
    return d;
}
KEEL_INLINE kb_d kb_dzero(void)
{
    const kb_d d = {{vdupq_n_f64(0.0), vdupq_n_f64(0.0)}};
    return d;
}
KEEL_INLINE kb_d kb_dadd(kb_d a, kb_d b)
{
    for (int k = 0; k < 2; k++)
        a.v[k] = vaddq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kb_d kb_dsub(kb_d a, kb_d b)
{
    for (int k = 0; k < 2; k++)
        a.v[k] = vsubq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kb_f kb_narrow(kb_d a) { return vcvt_high_f32_f64(vcvt_f32_f64(a.v[0]), a.v[1]); }
KEEL_INLINE kb_d kb_widen(kb_f a)
{
    const kb_d d = {{vcvt_f64_f32(vget_low_f32(a)), vcvt_high_f64_f32(a)}};
    return d;
}
KEEL_INLINE void kb_fstore(float *p, kb_f v) { vst1q_f32(p, v); }
KEEL_INLINE void kb_dstore(double *p, kb_d v)
{
    vst1q_f64(p, v.v[0]);
    vst1q_f64(p + 2, v.v[1]);
}

KEEL_INLINE kb_d kb_dset1(double v)
{
    const kb_d d = {{vdupq_n_f64(v), vdupq_n_f64(v)}};
    return d;
}
KEEL_INLINE kb_d kb_dmul(kb_d a, kb_d b)
{
    for (int k = 0; k < 2; k++)
        a.v[k] = vmulq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kb_d kb_ddiv(kb_d a, kb_d b)
{
    for (int k = 0; k < 2; k++)
        a.v[k] = vdivq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kb_d kb_dsqrt(kb_d a)
{
    for (int k = 0; k < 2; k++)
        a.v[k] = vsqrtq_f64(a.v[k]);
    return a;
}
/* v where t is finite (t - t is 0 there, NaN for an infinity or a NaN), NaN elsewhere */
KEEL_INLINE kb_d kb_nan_unless_finite(kb_d t, kb_d v)
{
    for (int k = 0; k < 2; k++) {
        const uint64x2_t f = vceqq_f64(vsubq_f64(t.v[k], t.v[k]), vdupq_n_f64(0.0));
        v.v[k] = vbslq_f64(f, v.v[k], vdupq_n_f64(NAN));
    }
    return v;
}

/* ---- BatchNorm's column operations -------------------------------------------------------------
 * lanes__avx512.h's kc section on q registers: a kc_d8 is four of 2 doubles (columns 2k, 2k + 1
 * in v[k]), filled by the exact fcvtl / fcvtl2. A group of n < 8 columns (kc_tail: n) goes
 * through a stack buffer: nothing past its columns is read or written. The register sweeps
 * are sized to the 32 q registers, a group's 8 doubles taking 4: the statistics' 3 groups with a
 * mean each take 24, the backward's one group a sweep 26 (five sums, a mean, a gamma; chunks of
 * at most 2 groups, as on AVX2); unmeasured on aarch64 hardware. */
typedef struct kc_d8 {
    float64x2_t v[4];
} kc_d8;
typedef size_t kc_tail;

#define KC_STATS_GROUPS 3
#define KC_BWD_GROUPS 1
#define KC_BWD_NARROW_GROUPS 2
#define KC_BWD_BLOCKED 0

KEEL_INLINE kc_tail kc_tail_of(size_t n) { return n; }
KEEL_INLINE kc_d8 kc_dzero(void)
{
    kc_d8 d;
    for (int k = 0; k < 4; k++)
        d.v[k] = vdupq_n_f64(0.0);
    return d;
}
KEEL_INLINE kc_d8 kc_widen(kl_f8 v)
{
    const kc_d8 d = {{vcvt_f64_f32(vget_low_f32(v.lo)), vcvt_high_f64_f32(v.lo),
                      vcvt_f64_f32(vget_low_f32(v.hi)), vcvt_high_f64_f32(v.hi)}};
    return d;
}
KEEL_INLINE kc_d8 kc_cvt(const float *p) { return kc_widen(kl_load(p)); }
KEEL_INLINE kl_f8 kc_f8_load_tail(const float *p, const kc_tail *t) { return kl_load_tail(p, *t); }
KEEL_INLINE kc_d8 kc_cvt_tail(const float *p, const kc_tail *t)
{
    return kc_widen(kl_load_tail(p, *t));
}
KEEL_INLINE kc_d8 kc_load(const double *p)
{
    const kc_d8 d = {{vld1q_f64(p), vld1q_f64(p + 2), vld1q_f64(p + 4), vld1q_f64(p + 6)}};
    return d;
}
KEEL_INLINE kc_d8 kc_load_tail(const double *p, const kc_tail *t)
{
    double buf[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    memcpy(buf, p, *t * sizeof(double));
    return kc_load(buf);
}
KEEL_INLINE void kc_store(double *p, kc_d8 v)
{
    for (int k = 0; k < 4; k++)
        vst1q_f64(p + 2 * k, v.v[k]);
}
KEEL_INLINE void kc_store_tail(double *p, kc_d8 v, const kc_tail *t)
{
    double buf[8];
    kc_store(buf, v);
    memcpy(p, buf, *t * sizeof(double));
}
KEEL_INLINE kc_d8 kc_add(kc_d8 a, kc_d8 b)
{
    for (int k = 0; k < 4; k++)
        a.v[k] = vaddq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kc_d8 kc_sub(kc_d8 a, kc_d8 b)
{
    for (int k = 0; k < 4; k++)
        a.v[k] = vsubq_f64(a.v[k], b.v[k]);
    return a;
}
KEEL_INLINE kc_d8 kc_mul(kc_d8 a, kc_d8 b)
{
    for (int k = 0; k < 4; k++)
        a.v[k] = vmulq_f64(a.v[k], b.v[k]);
    return a;
}

/* ---- kr and the conversions: a kr_f16's floats as the 32-bit lanes of convert_lanes__<isa>.h
 * (KR_CV of CV_WIDTH lanes, in order) and back, and a tail's length: what row_storage_simd.h
 * needs to load and store rows of bf16 / f16 through the same bodies. */
#include "convert_lanes__neon.h"
#define KR_CV 2
KEEL_INLINE kr_f16 kr_of_bits(const cv_u32 *c)
{
    const kr_f16 v = {{vreinterpretq_f32_u32(c[0].lo), vreinterpretq_f32_u32(c[0].hi),
                       vreinterpretq_f32_u32(c[1].lo), vreinterpretq_f32_u32(c[1].hi)}};
    return v;
}
KEEL_INLINE void kr_bits(kr_f16 v, cv_u32 *c)
{
    for (int k = 0; k < 2; k++) {
        c[k].lo = vreinterpretq_u32_f32(v.v[2 * k]);
        c[k].hi = vreinterpretq_u32_f32(v.v[2 * k + 1]);
    }
}
KEEL_INLINE size_t kr_tail_len(const kr_tail *t) { return t->n; }

#endif
