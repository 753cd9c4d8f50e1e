/* The residual sum of the fused kernels on AVX2, 16 elements (two ymm) at a time, in the
 * operation order of residual.h (so the same bits), and the helpers the fused AVX2 kernels
 * share: a 16-float step (full, or a tail of n < 16 floats through masks) and its four
 * double-lane quarters. Include only from *__avx2.c files. */
#ifndef KEEL_KERNELS_RESIDUAL_AVX2_H
#define KEEL_KERNELS_RESIDUAL_AVX2_H

#include <stdint.h>

#include "kernels.h"
#include "simd_lanes__avx2.h"

/* 16 floats: v[0] = floats 0-7, v[1] = 8-15. */
typedef struct r256_v {
    __m256 v[2];
} r256_v;

/* A 16-float step at j: full (no masks), or the row's tail t. */
typedef struct r256_step {
    int full;
    const k256_tail *t;
} r256_step;

KEEL_INLINE r256_v r256_load(const float *p, r256_step s)
{
    r256_v o;
    if (s.full) {
        o.v[0] = _mm256_loadu_ps(p);
        o.v[1] = _mm256_loadu_ps(p + 8);
    } else {
        k256_tail_load(s.t, p, &o.v[0], &o.v[1]);
    }
    return o;
}

KEEL_INLINE void r256_store(float *p, r256_v a, r256_step s, int nt)
{
    if (s.full && nt) {
        _mm256_stream_ps(p, a.v[0]);
        _mm256_stream_ps(p + 8, a.v[1]);
    } else if (s.full) {
        _mm256_storeu_ps(p, a.v[0]);
        _mm256_storeu_ps(p + 8, a.v[1]);
    } else {
        _mm256_maskstore_ps(p, s.t->f0, a.v[0]);
        if (s.t->n > 8)
            _mm256_maskstore_ps(p + 8, s.t->f1, a.v[1]);
    }
}

#define R256_OP(name, op)                                                                          \
    KEEL_INLINE r256_v name(r256_v a, r256_v b)                                                    \
    {                                                                                              \
        r256_v o;                                                                                  \
        o.v[0] = op(a.v[0], b.v[0]);                                                               \
        o.v[1] = op(a.v[1], b.v[1]);                                                               \
        return o;                                                                                  \
    }
R256_OP(r256_add, _mm256_add_ps)
R256_OP(r256_sub, _mm256_sub_ps)
R256_OP(r256_mul, _mm256_mul_ps)
#undef R256_OP

KEEL_INLINE r256_v r256_set1(float f)
{
    r256_v o;
    o.v[0] = o.v[1] = _mm256_set1_ps(f);
    return o;
}

/* The four double quarters of 16 floats: lanes 0-3, 4-7, 8-11, 12-15 of kernels.h's order. */
typedef struct r256_d {
    __m256d q[4];
} r256_d;

KEEL_INLINE r256_d r256_cvt(r256_v a)
{
    r256_d o;
    o.q[0] = k256_lo_pd(a.v[0]);
    o.q[1] = k256_hi_pd(a.v[0]);
    o.q[2] = k256_lo_pd(a.v[1]);
    o.q[3] = k256_hi_pd(a.v[1]);
    return o;
}

/* acc += t, lane by lane; in a tail step only the lanes that hold an element (the others get
 * +0.0, which leaves them as they are: simd_lanes__avx2.h). */
KEEL_INLINE void r256_acc(r256_d *acc, r256_d t, r256_step s)
{
    if (s.full) {
        for (int i = 0; i < 4; i++)
            acc->q[i] = _mm256_add_pd(acc->q[i], t.q[i]);
    } else {
        acc->q[0] = k256_add_mask(acc->q[0], s.t->d0, t.q[0]);
        acc->q[1] = k256_add_mask(acc->q[1], s.t->d1, t.q[1]);
        acc->q[2] = k256_add_mask(acc->q[2], s.t->d2, t.q[2]);
        acc->q[3] = k256_add_mask(acc->q[3], s.t->d3, t.q[3]);
    }
}

KEEL_INLINE r256_d r256_dzero(void)
{
    r256_d o;
    o.q[0] = o.q[1] = o.q[2] = o.q[3] = _mm256_setzero_pd();
    return o;
}

KEEL_INLINE double r256_reduce(r256_d a) { return k256_reduce16(a.q[0], a.q[1], a.q[2], a.q[3]); }

/* A row of the residual. */
typedef struct r256_row {
    const float *x, *r, *lambda, *bias;
    r256_v alpha;
} r256_row;

KEEL_INLINE r256_row r256_row_of(const keel_f32_res *res, size_t row)
{
    r256_row o;
    o.x = res->x ? res->x + row * res->x_stride : NULL;
    o.r = res->r ? res->r + row * res->r_stride : NULL;
    o.lambda = res->lambda;
    o.bias = res->bias;
    o.alpha = r256_set1(res->alpha);
    return o;
}

/* h at j: (alpha * x) + (lambda * r), then + bias. */
KEEL_INLINE r256_v r256_h(const r256_row *w, size_t j, r256_step s, int hl, int hb)
{
    r256_v r = r256_load(w->r + j, s);
    if (hl)
        r = r256_mul(r256_load(w->lambda + j, s), r);
    r256_v v = r256_add(r256_mul(w->alpha, r256_load(w->x + j, s)), r);
    if (hb)
        v = r256_add(v, r256_load(w->bias + j, s));
    return v;
}

/* The store policy of residual__avx512.h: stream outputs past this size, aligned rows only. */
#define R256_STREAM_ABOVE ((size_t)8 << 20)
KEEL_INLINE int r256_aligned(const float *p) { return ((uintptr_t)p & 63) == 0; }
#define R256_PF(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

/* The pipelines of the fused forwards (rows beyond L2 read while others are written: see
 * f32_add_layernorm__avx512.c) read row w at j with r256_h_piped: h stored into the row's
 * buffer hc as well (a whole step: the buffer has room), the loads R256_PIPE_AHEAD floats
 * behind their prefetches (residual__avx512.h's distance). */
#define R256_PIPE_AHEAD 256

KEEL_INLINE r256_v r256_h_piped(const r256_row *w, float *hc, size_t j, r256_step s, int hl, int hb)
{
    if (s.full) {
        R256_PF(w->x + j + R256_PIPE_AHEAD);
        R256_PF(w->r + j + R256_PIPE_AHEAD);
    }
    const r256_v v = r256_h(w, j, s, hl, hb);
    const r256_step whole = {1, s.t};
    r256_store(hc + j, v, whole, 0);
    return v;
}

#endif
