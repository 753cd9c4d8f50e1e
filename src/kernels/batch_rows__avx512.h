/* Short rows of the forwards on AVX-512 (fused add + norm, and the plain norms: x alone),
 * PIPE_BATCH rows at a time (add_norm_batches.h drives them; ln_batch__avx512.h and
 * rms_batch__avx512.h give the stages): rows of up to 16 floats, one vector, where the work a
 * row and the latency of its statistics, not the memory, bound the speed. The same bits as a
 * row at a time, with less work a row:
 *  - the tree's last steps, the divisions and the square root of eight rows run once in a
 *    vector, a row a lane (k512_reduce8x8, finish_rows__avx512.h; a division by a power-of-two
 *    dim a multiply);
 *  - the tail's mask, gamma and beta once a call, no loops within a row;
 *  - h = x + r without the multiply when alpha is 1 (1 * x is x, and a signalling NaN x is
 *    quietened by the add as by the multiply);
 *  - a batch's output lines fetched for writing (PREFETCHW) two stages before they are
 *    stored, unless the call streams, and the inputs two batches ahead (batch_fetch).
 * Include only from *__avx512.c files. */
#ifndef KEEL_KERNELS_BATCH_ROWS_AVX512_H
#define KEEL_KERNELS_BATCH_ROWS_AVX512_H

#include "finish_rows__avx512.h"
#include "batch_rows.h"
#include "residual__avx512.h"

#define PIPE_BATCH 8
#define PIPE_BATCH_MAX 16
#define BATCH_SLOTS 3 /* batches in flight (3, 4 and 5 measured alike) */
#define BATCH_SLOT (PIPE_BATCH * 48) /* floats: the rows' h (16 each), then 16 doubles each */

/* A batch's statistics between its stages (one vector more measured 5-10% slower). */
typedef struct batch_stats {
    __m512d mean; /* RMSNorm: its sums of squares */
    __m256 rstd;
} batch_stats;

/* What every batch of a call shares. */
typedef struct batch_call {
    __mmask16 k;  /* the row's floats */
    int one;      /* alpha is 1 */
    __m512 g, b;  /* gamma and beta (zero when absent) */
    k512_dim n;
    batch_lines l; /* the output lines to fetch, the inputs to prefetch */
} batch_call;

/* hh: h is written; one: alpha is known to be 1 (constants at every call). */
KEEL_INLINE batch_call batch_call_of(size_t dim, const keel_f32_res *res, const float *gamma,
                                     const float *beta, const float *h, size_t hs, const float *y,
                                     size_t ys, int stream, int hh, int one)
{
    batch_call c;
    c.k = dim == 16 ? (__mmask16)0xffff : k512_tail16(dim);
    c.one = one || res->alpha == 1.0f;
    c.g = gamma ? _mm512_maskz_loadu_ps(c.k, gamma) : _mm512_setzero_ps();
    c.b = beta ? _mm512_maskz_loadu_ps(c.k, beta) : _mm512_setzero_ps();
    c.n = k512_dim_of(dim);
    c.l = batch_lines_of(h, hs, y, ys, stream, hh);
    return c;
}

/* h of row i of the batch (zero beyond the row's floats); px: a plain norm's row, x alone
 * (hl, hb, px constants at every call). */
KEEL_INLINE __m512 batch_h(const batch_call *c, const batch_rows *b, int i, int hl, int hb, int px)
{
    const float *x = b->x + (size_t)i * b->xs;
    if (px)
        return _mm512_maskz_loadu_ps(c->k, x);
    const float *rr = b->r + (size_t)i * b->rs;
    __m512 v;
    if (c->one && !hl && !hb) {
        v = _mm512_add_ps(_mm512_maskz_loadu_ps(c->k, x), _mm512_maskz_loadu_ps(c->k, rr));
    } else {
        const r512_row w = {x, rr, b->lambda, b->bias, _mm512_set1_ps(b->alpha)};
        v = r512_h(&w, 0, c->k, 0, hl, hb);
    }
    return v;
}

/* Row i of the batch at row r: h, kept in its place in slot (16 floats a row), the row's
 * fetches issued (batch_fetch). */
KEEL_INLINE __m512 batch_row_in(const batch_call *c, const batch_rows *b, float *slot, size_t r,
                                int i, int hl, int hb, int px)
{
    const __m512 v = batch_h(c, b, i, hl, hb, px);
    _mm512_store_ps(slot + i * 16, v);
    batch_fetch(&c->l, b, r, i, px);
    return v;
}

/* Row ri's outputs: h (v, when hh) and y (t), streamed when the call streams and the rows are
 * whole aligned lines of 16; returns whether they were streamed. */
KEEL_INLINE int batch_store(const batch_call *c, size_t dim, int stream, size_t ri, float *h,
                            size_t hs, float *y, size_t ys, __m512 v, __m512 t, int hh)
{
    float *hr = hh ? h + ri * hs : NULL, *yr = y + ri * ys;
    const int full = dim == 16;
    const int nt = stream && full && r512_aligned(yr) && (!hh || r512_aligned(hr));
    if (hh)
        r512_store(hr, v, c->k, full, nt);
    r512_store(yr, t, c->k, full, nt);
    return nt;
}

#endif
