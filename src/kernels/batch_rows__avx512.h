/* The fused forwards' short rows on AVX-512, PIPE_BATCH rows at a time (add_norm_batches.h
 * drives them; f32_add_layernorm__avx512.c and f32_add_rmsnorm__avx512.c give each stage): rows
 * of up to 16 floats, one vector, where the work a row and the latency of its statistics, not
 * the memory, bound the speed. The same bits as a row at a time, with less work a row:
 *  - the tree's last steps, the divisions and the square root of eight rows run once in a
 *    vector, a row a lane (k512_reduce8x8, norm_finish__avx512.h; a division by a power-of-two
 *    dim a multiply);
 *  - the tail's mask, gamma and beta once a call, no loops within a row;
 *  - h = x + r without the multiply when alpha is 1 (1 * x is x, and a signalling NaN x is
 *    quietened by the add as by the multiply);
 *  - a batch's output lines fetched for writing (PREFETCHW) two stages before they are
 *    stored, unless the call streams.
 * Include only from the fused *__avx512.c files, after residual__avx512.h. */
#ifndef KEEL_KERNELS_BATCH_ROWS_AVX512_H
#define KEEL_KERNELS_BATCH_ROWS_AVX512_H

#include "norm_finish__avx512.h"
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
    int fetch;    /* fetch the output lines (the call does not stream) */
    __m512 g, b;  /* gamma and beta (zero when absent) */
    k512_dim n;
    const float *h, *y;
    size_t hs, ys, rows;
} batch_call;

KEEL_INLINE batch_call batch_call_of(size_t rows, size_t dim, const keel_f32_res *res,
                                     const float *gamma, const float *beta, const float *h,
                                     size_t hs, const float *y, size_t ys, int stream)
{
    batch_call c;
    c.k = dim == 16 ? (__mmask16)0xffff : k512_tail16(dim);
    c.one = res->alpha == 1.0f;
    c.fetch = !stream;
    c.g = gamma ? _mm512_maskz_loadu_ps(c.k, gamma) : _mm512_setzero_ps();
    c.b = beta ? _mm512_maskz_loadu_ps(c.k, beta) : _mm512_setzero_ps();
    c.n = k512_dim_of(dim);
    c.h = h;
    c.hs = hs;
    c.y = y;
    c.ys = ys;
    c.rows = rows;
    return c;
}

/* The rows of a batch: read once a batch into locals (the vector stores may alias anything,
 * so fields read through res would be loaded again after each of them). */
typedef struct batch_rows {
    const float *x, *r, *lambda, *bias;
    size_t xs, rs;
    float alpha;
} batch_rows;

KEEL_INLINE batch_rows batch_rows_of(const keel_f32_res *res, size_t r)
{
    const batch_rows b = {res->x + r * res->x_stride, res->r + r * res->r_stride, res->lambda,
                          res->bias, res->x_stride, res->r_stride, res->alpha};
    return b;
}

/* h of row i of the batch (zero beyond the row's floats). */
KEEL_INLINE __m512 batch_h(const batch_call *c, const batch_rows *b, int i, int hl, int hb)
{
    const float *x = b->x + (size_t)i * b->xs, *rr = b->r + (size_t)i * b->rs;
    __m512 v;
    if (c->one && !hl && !hb) {
        v = _mm512_add_ps(_mm512_maskz_loadu_ps(c->k, x), _mm512_maskz_loadu_ps(c->k, rr));
    } else {
        const r512_row w = {x, rr, b->lambda, b->bias, _mm512_set1_ps(b->alpha)};
        v = r512_h(&w, 0, c->k, 0, hl, hb);
    }
    return v;
}

/* Row i of the batch at row r: its output lines fetched for writing (unless the call streams),
 * and the inputs of the row BATCH_AHEAD rows on (two batches: measured 16, 32 and 64 rows of 16
 * floats, keel bench add+ln 4096x16 0.91-0.93, 0.91-0.92, 0.88-0.89 of the floor, 0.80-0.83
 * without), when it exists. */
#define BATCH_AHEAD 16
KEEL_INLINE void batch_fetch(const batch_call *c, const batch_rows *b, size_t r, int i)
{
    const size_t ri = r + (size_t)i;
    if (c->fetch) {
        k512_prefetchw(c->y + ri * c->ys);
        if (c->h)
            k512_prefetchw(c->h + ri * c->hs);
    }
    if (ri + BATCH_AHEAD < c->rows) {
        _mm_prefetch((const char *)(b->x + (size_t)(i + BATCH_AHEAD) * b->xs), _MM_HINT_T0);
        _mm_prefetch((const char *)(b->r + (size_t)(i + BATCH_AHEAD) * b->rs), _MM_HINT_T0);
    }
}

/* Where row ri's outputs go, and whether they stream (whole aligned rows of 16). */
KEEL_INLINE int batch_nt(size_t dim, int stream, const float *hr, const float *yr)
{
    return stream && dim == 16 && r512_aligned(yr) && (!hr || r512_aligned(hr));
}

#endif
