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

#include "kernels.h" /* KEEL_STREAM_ABOVE */

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

/* Whether a call's outputs (rows of `stride` floats) go past the caches (the x86 paths' rule;
 * here it only chooses kl_stream, an ordinary store). */
KEEL_INLINE int kl_want_stream(size_t rows, size_t stride)
{
    return rows * stride * sizeof(float) >= KEEL_STREAM_ABOVE;
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

#endif
