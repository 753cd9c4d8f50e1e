/* The 16-float step of a row (kstep: whole, or the row's tail) with its float loads and stores,
 * and the storage of the rows a norm reads (x, dy) and writes (y, dx), for the bodies written
 * over the lanes (f32_layernorm_simd.h, f32_rmsnorm_simd.h): kx_t and its kx_ loads and stores.
 * float32 by default, where each kx_ name is its kr_ name (the same instructions as before). A
 * file that defines KEEL_ROWS_BF16 or KEEL_ROWS_F16 before including the body gets 16-bit rows:
 * 16 values loaded and widened in registers (exact), the body's float32 arithmetic unchanged,
 * and each output rounded once to nearest even as it is stored (convert_round_simd.h, or the
 * ISA's f16 conversion), so the bits are those of widening the rows into float32 memory,
 * running the float32 kernel and rounding its output (the staged path, ops/stage.c), with no
 * buffer and no second pass. Where the lanes offer a rounding instruction (KR_BF16_CVT:
 * AVX512_BF16), bf16 stores take it for the vectors it rounds exactly: the same bits. A tail of
 * n < 16 values goes through 16 values on the stack (once a row). The stream and prefetch
 * decisions (kernels.h) count bytes: rows * stride * sizeof(kx_t). Include after
 * lanes__<isa>.h. */
#ifndef KEEL_KERNELS_ROW_STORAGE_SIMD_H
#define KEEL_KERNELS_ROW_STORAGE_SIMD_H

#include <stdint.h>
#include <string.h>

/* A 16-float step at j: whole (full: plain loads and stores) or the row's tail t (nothing past
 * the row read or written; 0.0 loaded past it). */
typedef struct kstep {
    const kr_tail *t;
    int full;
} kstep;

KEEL_INLINE kr_f16 ks_load(const float *p, kstep s)
{
    return s.full ? kr_load(p) : kr_load_tail(p, s.t);
}

/* A store of the step; nt: streamed (a whole step of a row that starts kr_streamable; the call
 * then ends with kl_stream_fence). */
KEEL_INLINE void ks_store(float *p, kr_f16 v, kstep s, int nt)
{
    if (!s.full)
        kr_store_tail(p, v, s.t);
    else if (nt)
        kr_stream(p, v);
    else
        kr_store(p, v);
}

/* acc += t lane by lane; in a tail step only the lanes that hold an element. */
KEEL_INLINE kr_d16 ks_dadd(kr_d16 acc, kr_d16 t, kstep s)
{
    return s.full ? kr_dadd(acc, t) : kr_dadd_tail(acc, t, s.t);
}

#if defined(KEEL_ROWS_BF16) || defined(KEEL_ROWS_F16)
#include "convert_round_simd.h"

typedef uint16_t kx_t;
#define KX_NARROW 1 /* 16-bit rows: the bodies leave the float32-only short-row batches out */

#if defined(KEEL_ROWS_BF16)
KEEL_INLINE cv_u32 kx_widen(cv_u16 h) { return cv_widen_high(h); }
KEEL_INLINE cv_u16 kx_round(cv_u32 u) { return cv_narrow(cv_bf16_round(u)); }
#else
KEEL_INLINE cv_u32 kx_widen(cv_u16 h) { return cv_f16_to_f32(h); }
KEEL_INLINE cv_u16 kx_round(cv_u32 u) { return cv_f32_to_f16(u); }
#endif

KEEL_INLINE kr_f16 kx_load(const kx_t *p)
{
    cv_u32 c[KR_CV];
    for (int k = 0; k < KR_CV; k++)
        c[k] = kx_widen(cv_load16(p + k * CV_WIDTH));
    return kr_of_bits(c);
}
/* the tail's values at p, 0.0 past them; reads nothing past the tail */
KEEL_INLINE kr_f16 kx_load_tail(const kx_t *p, const kr_tail *t)
{
    kx_t buf[16] = {0};
    memcpy(buf, p, kr_tail_len(t) * sizeof(kx_t));
    return kx_load(buf);
}
KEEL_INLINE kr_d16 kx_dload(const kx_t *p) { return kr_widen(kx_load(p)); }
KEEL_INLINE kr_d16 kx_dload_tail(const kx_t *p, const kr_tail *t)
{
    return kr_widen(kx_load_tail(p, t));
}
KEEL_INLINE void kx_store(kx_t *p, kr_f16 v)
{
#if defined(KEEL_ROWS_BF16) && defined(KR_BF16_CVT)
    if (kr_bf16_cvt_exact(v)) {
        kr_store_bf16(p, v);
        return;
    }
#endif
    cv_u32 c[KR_CV];
    kr_bits(v, c);
    for (int k = 0; k < KR_CV; k++)
        cv_store16(p + k * CV_WIDTH, kx_round(c[k]));
}
KEEL_INLINE void kx_store_tail(kx_t *p, kr_f16 v, const kr_tail *t)
{
    kx_t buf[16];
    kx_store(buf, v);
    memcpy(p, buf, kr_tail_len(t) * sizeof(kx_t));
}
/* streamed where kx_streamable(p): a row start on a 64-byte line, so every store of 16 values
 * (32 bytes, in CV_WIDTH-value pieces) is aligned */
KEEL_INLINE void kx_stream(kx_t *p, kr_f16 v)
{
#if defined(KEEL_ROWS_BF16) && defined(KR_BF16_CVT)
    if (kr_bf16_cvt_exact(v)) {
        kr_stream_bf16(p, v);
        return;
    }
#endif
    cv_u32 c[KR_CV];
    kr_bits(v, c);
    for (int k = 0; k < KR_CV; k++)
        cv_stream16(p + k * CV_WIDTH, kx_round(c[k]));
}
KEEL_INLINE int kx_streamable(const kx_t *p) { return KR_STREAMS && ((uintptr_t)p & 63) == 0; }
KEEL_INLINE void kx_prefetch_l1(const kx_t *p) { __builtin_prefetch(p, 0, 3); }
KEEL_INLINE void kx_prefetch_l2(const kx_t *p) { __builtin_prefetch(p, 0, 2); }

#else /* float32 rows */

typedef float kx_t;
#define KX_NARROW 0
#define kx_load kr_load
#define kx_load_tail kr_load_tail
#define kx_dload kr_dload
#define kx_dload_tail kr_dload_tail
#define kx_store kr_store
#define kx_store_tail kr_store_tail
#define kx_stream kr_stream
#define kx_streamable kr_streamable
#define kx_prefetch_l1 kr_prefetch_l1
#define kx_prefetch_l2 kr_prefetch_l2

#endif

/* The steps of kx_t rows, as ks_load / ks_dadd / ks_store are for floats. */
KEEL_INLINE kr_f16 kxs_load(const kx_t *p, kstep s)
{
    return s.full ? kx_load(p) : kx_load_tail(p, s.t);
}
KEEL_INLINE kr_d16 kxs_dload(const kx_t *p, kstep s)
{
    return s.full ? kx_dload(p) : kx_dload_tail(p, s.t);
}
KEEL_INLINE void kxs_store(kx_t *p, kr_f16 v, kstep s, int nt)
{
    if (!s.full)
        kx_store_tail(p, v, s.t);
    else if (nt)
        kx_stream(p, v);
    else
        kx_store(p, v);
}

#endif
