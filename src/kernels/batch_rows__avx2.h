/* Short rows of the fused forwards on AVX2, PIPE_BATCH = 4 rows at a time (add_norm_batches.h
 * drives them; ln_batch__avx2.h and rms_batch__avx2.h give the stages): batch_rows__avx512.h's
 * plan on 256-bit vectors, where a row of up to 16 floats is two ymm and four rows fill a
 * double vector. The same bits as a row at a time, with less work a row:
 *  - the tree's last two steps, the divisions and the square root of four rows run once in a
 *    vector, a row a lane (k256_reduce4x4, finish_rows__avx2.h; a division by a power-of-two
 *    dim a multiply);
 *  - the tail's masks, gamma and beta once a call, no loops within a row;
 *  - h = x + r without the multiply when alpha is 1 (1 * x is x, and a signalling NaN x is
 *    quietened by the add as by the multiply);
 *  - a batch's output lines fetched for writing (PREFETCHW, a no-op on processors without it)
 *    two stages before they are stored, unless the call streams, and the inputs BATCH_AHEAD
 *    rows ahead.
 * Include only from *__avx2.c files, after lanes__avx2.h. */
#ifndef KEEL_KERNELS_BATCH_ROWS_AVX2_H
#define KEEL_KERNELS_BATCH_ROWS_AVX2_H

#include "finish_rows__avx2.h"
#include "batch_rows.h"
#include "residual_simd.h"

#define PIPE_BATCH 4
#define PIPE_BATCH_MAX 16
#define BATCH_TAKE_MAX PIPE_BATCH_MAX /* the rows every forward gives the batches */
#define BATCH_SLOTS 3                 /* batches in flight */
#define BATCH_SLOT (PIPE_BATCH * 48)  /* floats: the rows' h (16 each), then 16 doubles each */

/* A batch's statistics between its stages. */
typedef struct batch_stats {
    __m256d mean; /* RMSNorm: its sums of squares */
    __m128 rstd;
} batch_stats;

/* What every batch of a call shares. */
typedef struct batch_call {
    kr_tail t;   /* the row's floats, when fewer than 16 */
    int full;    /* rows of 16 floats: no masks */
    int one;     /* alpha is 1 */
    kr_f16 g, b; /* gamma and beta (zero when absent or beyond the row) */
    k256_dim n;
    batch_lines l; /* the output lines to fetch, the inputs to prefetch */
} batch_call;

/* The step of a row: whole, or its tail through the masks. */
KEEL_INLINE kstep batch_step(const batch_call *c)
{
    const kstep s = {&c->t, c->full};
    return s;
}

/* hh: h is written; one: alpha is known to be 1 (constants at every call). */
KEEL_INLINE batch_call batch_call_of(size_t dim, const keel_f32_res *res, const float *gamma,
                                     const float *beta, const float *h, size_t hs, const float *y,
                                     size_t ys, int stream, int hh, int one, int nv)
{
    (void)nv; /* one 16-float step a row */
    batch_call c;
    c.full = dim == 16;
    c.t = kr_tail_of(c.full ? 0 : dim);
    c.one = one || res->alpha == 1.0f;
    c.g = gamma ? ks_load(gamma, batch_step(&c)) : kr_set1(0.0f);
    c.b = beta ? ks_load(beta, batch_step(&c)) : kr_set1(0.0f);
    c.n = k256_dim_of(dim);
    c.l = batch_lines_of(h, hs, y, ys, stream, hh, 1);
    return c;
}

/* h of row i of the batch (zero beyond the row's floats); px: a plain norm's row, x alone
 * (hl, hb, px constants at every call). */
KEEL_INLINE kr_f16 batch_h(const batch_call *c, const batch_rows *b, int i, int hl, int hb, int px)
{
    const float *x = b->x + (size_t)i * b->xs;
    const kstep s = batch_step(c);
    if (px)
        return ks_load(x, s);
    const float *rr = b->r + (size_t)i * b->rs;
    if (c->one && !hl && !hb)
        return kr_add(ks_load(x, s), ks_load(rr, s));
    const res_row w = {x, rr, b->lambda, b->bias, kr_set1(b->alpha)};
    return res_h(&w, 0, s, hl, hb);
}

/* Row i of the batch at row r: h, kept in its place in slot (16 floats a row), the row's
 * fetches issued (batch_fetch). */
KEEL_INLINE kr_f16 batch_row_in(const batch_call *c, const batch_rows *b, float *slot, size_t r,
                                int i, int hl, int hb, int px)
{
    const kr_f16 v = batch_h(c, b, i, hl, hb, px);
    _mm256_store_ps(slot + i * 16, v.lo);
    _mm256_store_ps(slot + i * 16 + 8, v.hi);
    batch_fetch(&c->l, b, r, i, px);
    return v;
}

KEEL_INLINE kr_f16 batch_slot_h(const float *slot, int i)
{
    const kr_f16 v = {_mm256_load_ps(slot + i * 16), _mm256_load_ps(slot + i * 16 + 8)};
    return v;
}

/* Row ri's outputs: h (v, when hh) and y (t), streamed when the call streams and the rows are
 * whole lines of 16 that start kr_streamable; returns whether they were streamed. */
KEEL_INLINE int batch_store(const batch_call *c, int stream, size_t ri, float *h, size_t hs,
                            float *y, size_t ys, kr_f16 v, kr_f16 t, int hh)
{
    float *hr = hh ? h + ri * hs : NULL, *yr = y + ri * ys;
    const int nt = stream && c->full && kr_streamable(yr) && (!hh || kr_streamable(hr));
    if (hh)
        ks_store(hr, v, batch_step(c), nt);
    ks_store(yr, t, batch_step(c), nt);
    return nt;
}

#endif
