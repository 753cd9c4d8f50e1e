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

/* ---- the fused backwards' shared pieces (residual__avx512.h's, on two ymm) --------------- */

/* part[j ..] += t, in the step's floats. */
KEEL_INLINE void r256_part_add(float *part, size_t j, r256_step s, r256_v t)
{
    r256_store(part + j, r256_add(r256_load(part + j, s), t), s, 0);
}

typedef struct r256_bwd_row {
    const float *dy, *dh, *hv;
    r256_row w;
    float *dx, *dr;
} r256_bwd_row;

KEEL_INLINE r256_bwd_row r256_bwd_row_of(size_t r, const float *dy, size_t dys, const float *dh,
                                         size_t dhs, const keel_f32_res *res, const float *h,
                                         size_t hs, const keel_f32_res_grads *out)
{
    r256_bwd_row p;
    p.dy = dy + r * dys;
    p.dh = dh ? dh + r * dhs : NULL;
    p.hv = h ? h + r * hs : NULL;
    p.w = r256_row_of(res, r);
    p.dx = out->dx ? out->dx + r * out->dx_stride : NULL;
    p.dr = out->dr ? out->dr + r * out->dr_stride : NULL;
    return p;
}

KEEL_INLINE r256_v r256_bwd_h(const r256_bwd_row *p, size_t j, r256_step s, int hh, int hl, int hb)
{
    return hh ? r256_load(p->hv + j, s) : r256_h(&p->w, j, s, hl, hb);
}

/* dx = alpha * G, dr = lambda * G (accumulated with acc), dlambda += G * r, dbias += G. */
KEEL_INLINE void r256_res_grads(const r256_bwd_row *p, size_t j, r256_step s, r256_v G, int hdx,
                                int hdr, int acc, int dlp, int dbsp, float *const *parts, int nt)
{
    const r256_v rj = dlp ? r256_load(p->w.r + j, s) : G; /* before dx/dr may overwrite r */
    if (hdx) {
        r256_v o = r256_mul(p->w.alpha, G);
        if (acc)
            o = r256_add(r256_load(p->dx + j, s), o);
        r256_store(p->dx + j, o, s, nt);
    }
    if (hdr) {
        r256_v o = p->w.lambda ? r256_mul(r256_load(p->w.lambda + j, s), G) : G;
        if (acc)
            o = r256_add(r256_load(p->dr + j, s), o);
        r256_store(p->dr + j, o, s, nt);
    }
    if (dlp)
        r256_part_add(parts[KEEL_PART_DLAMBDA], j, s, r256_mul(G, rj));
    if (dbsp)
        r256_part_add(parts[KEEL_PART_DBIAS], j, s, G);
}

/* Whether row r's dx and dr are streamed (the hint given, no accumulate, rows that start
 * aligned). */
KEEL_INLINE int r256_bwd_nt(const keel_f32_res_grads *out, int acc, size_t r)
{
    return (out->hints & KEEL_KBWD_STREAM) && !acc &&
           (!out->dx || r256_aligned(out->dx + r * out->dx_stride)) &&
           (!out->dr || r256_aligned(out->dr + r * out->dr_stride));
}

/* What add_norm_pipe.h needs of this path. */
#define PIPE_ROW r256_row
#define PIPE_ROW_OF r256_row_of
#define PIPE_ALIGNED r256_aligned
#define PIPE_STEP r256_step
#define PIPE_STEPS(dim)                                                                            \
    const size_t full_ = (dim) & ~(size_t)15;                                                      \
    const k256_tail tail_ = k256_tail_of((dim) - full_);                                           \
    const r256_step F_ = {1, &tail_}, T_ = {0, &tail_}
#define PIPE_STEP_AT(j) ((j) < full_ ? F_ : T_)
#define PIPE_BWD_ROW r256_bwd_row
#define PIPE_BWD_ROW_OF r256_bwd_row_of
#define PIPE_BWD_NT r256_bwd_nt
#define PIPE_PF R256_PF
#define PIPE_AHEAD R256_PIPE_AHEAD
#define PIPE_STREAM_ABOVE R256_STREAM_ABOVE

#endif
