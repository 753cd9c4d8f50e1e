/* Short rows of the forwards on AVX-512 (fused add + norm, and the plain norms: x alone),
 * PIPE_BATCH rows at a time (add_norm_batches.h drives them; ln_batch__avx512.h and
 * rms_batch__avx512.h give the stages): rows of up to PIPE_BATCH_MAX floats, one to four
 * vectors (BATCH_NV), where the work a row and the latency of its statistics, not the memory,
 * bound the speed. The same bits as a row at a time, with less work a row:
 *  - the tree's last steps, the divisions and the square root of eight rows run once in a
 *    vector, a row a lane (k512_reduce8x8, finish_rows__avx512.h; a division by a power-of-two
 *    dim a multiply);
 *  - the tail's mask, gamma and beta once a call, no loops within a row but over its vectors;
 *  - h = x + r without the multiply when alpha is 1 (1 * x is x, and a signalling NaN x is
 *    quietened by the add as by the multiply);
 *  - a batch's output lines fetched for writing (PREFETCHW) two stages before they are
 *    stored, unless the call streams, and the inputs two batches ahead (batch_fetch).
 * A row's vectors q = 0 .. nv - 1 are whole but the last, which holds the row's tail (its
 * mask k: all 16 when dim is a multiple of 16). Include only from *__avx512.c files, after
 * lanes__avx512.h. */
#ifndef KEEL_KERNELS_BATCH_ROWS_AVX512_H
#define KEEL_KERNELS_BATCH_ROWS_AVX512_H

#include "finish_rows__avx512.h"
#include "batch_rows.h"
#include "residual_simd.h"

#define PIPE_BATCH 8
#define BATCH_NV 4 /* vectors a row at most */
#define PIPE_BATCH_MAX (16 * BATCH_NV)
/* The rows the fused forwards and the plain LayerNorm give the batches; the plain RMSNorm gives
 * them rows of up to PIPE_BATCH_MAX. Rows of 64 floats, keel bench 4096x64, 1 thread, fraction
 * of the floor, before -> in batches: add+ln fwd 0.96-1.00 -> 0.81 (the row pipeline of
 * add_norm_simd.h does better there), add+rms fwd 1.03-1.05 -> 0.97-0.98, layernorm fwd
 * 0.45-0.54 -> 0.43-0.51, rmsnorm fwd 0.43-0.46 -> 0.62-0.64. */
#define BATCH_TAKE_MAX 48
#define BATCH_SLOTS 3 /* batches in flight (3, 4 and 5 measured alike) */
/* floats: the rows' h (16 * nv floats a row: batch_row), then as many doubles */
#define BATCH_SLOT (PIPE_BATCH * 3 * 16 * BATCH_NV)

/* A batch's statistics between its stages (one vector more measured 5-10% slower). */
typedef struct batch_stats {
    __m512d mean; /* RMSNorm: its sums of squares */
    __m256 rstd;
} batch_stats;

/* What every batch of a call shares. */
typedef struct batch_call {
    __mmask16 k;  /* the floats of the row's last vector (all 16: dim a multiple of 16) */
    int nv;       /* the row's vectors */
    int one;      /* alpha is 1 */
    __m512 g[BATCH_NV], b[BATCH_NV]; /* gamma and beta (zero when absent or beyond the row) */
    k512_dim n;
    batch_lines l; /* the output lines to fetch, the inputs to prefetch */
} batch_call;

/* hh: h is written; one: alpha is known to be 1; nv: (dim + 15) / 16 (constants at every
 * call). */
KEEL_INLINE batch_call batch_call_of(size_t dim, const keel_f32_res *res, const float *gamma,
                                     const float *beta, const float *h, size_t hs, const float *y,
                                     size_t ys, int stream, int hh, int one, int nv)
{
    batch_call c;
    c.nv = nv; /* (dim + 15) / 16, a constant */
    c.k = dim % 16 == 0 ? (__mmask16)0xffff : k512_tail16(dim % 16);
    c.one = one || res->alpha == 1.0f;
    for (int q = 0; q < BATCH_NV; q++) { /* the vectors beyond the row's: zero, never read */
        const __mmask16 kq = q < c.nv - 1 ? (__mmask16)0xffff : c.k;
        const int in_row = q < c.nv;
        c.g[q] = gamma && in_row ? _mm512_maskz_loadu_ps(kq, gamma + 16 * q) : _mm512_setzero_ps();
        c.b[q] = beta && in_row ? _mm512_maskz_loadu_ps(kq, beta + 16 * q) : _mm512_setzero_ps();
    }
    c.n = k512_dim_of(dim);
    c.l = batch_lines_of(h, hs, y, ys, stream, hh, c.nv);
    return c;
}

/* A row's floats in a slot (and its doubles after the batch's floats): the rows of 16 floats
 * packed as when they were the only ones (a slot laid out for four vectors a row whatever the
 * width: keel_profile_loop addlnf 4096 16 27.6 -> 28.7 us). */
KEEL_INLINE size_t batch_row(const batch_call *c) { return 16 * (size_t)c->nv; }

/* The mask of vector q of a row (q < nv). */
KEEL_INLINE __mmask16 batch_kq(const batch_call *c, int q)
{
    return q < c->nv - 1 ? (__mmask16)0xffff : c->k;
}

/* Vector q of h of row i of the batch (zero beyond the row's floats); px: a plain norm's row,
 * x alone (hl, hb, px constants at every call). */
KEEL_INLINE __m512 batch_h(const batch_call *c, const batch_rows *b, int i, int q, int hl, int hb,
                           int px)
{
    const __mmask16 k = batch_kq(c, q);
    const float *x = b->x + (size_t)i * b->xs + 16 * q;
    if (px)
        return _mm512_maskz_loadu_ps(k, x);
    const float *rr = b->r + (size_t)i * b->rs + 16 * q;
    __m512 v;
    if (c->one && !hl && !hb) {
        v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, x), _mm512_maskz_loadu_ps(k, rr));
    } else {
        const res_row w = {x, rr, b->lambda ? b->lambda + 16 * q : NULL,
                           b->bias ? b->bias + 16 * q : NULL, _mm512_set1_ps(b->alpha)};
        const kstep s = {&k, 0};
        v = res_h(&w, 0, s, hl, hb);
    }
    return v;
}

/* Vector q of row i of the batch at row r: h, kept in its place in slot (batch_row floats a
 * row), the row's fetches issued with its first vector (batch_fetch). */
KEEL_INLINE __m512 batch_row_in(const batch_call *c, const batch_rows *b, float *slot, size_t r,
                                int i, int q, int hl, int hb, int px)
{
    const __m512 v = batch_h(c, b, i, q, hl, hb, px);
    _mm512_store_ps(slot + i * batch_row(c) + 16 * q, v);
    if (q == 0)
        batch_fetch(&c->l, b, r, i, px);
    return v;
}

/* Whether row ri's outputs stream: the call streams and the row is whole aligned lines. */
KEEL_INLINE int batch_nt(const batch_call *c, int stream, size_t ri, const float *h, size_t hs,
                         const float *y, size_t ys, int hh)
{
    const int whole = c->k == (__mmask16)0xffff; /* no masked tail: whole aligned lines */
    return stream && whole && kr_streamable(y + ri * ys) && (!hh || kr_streamable(h + ri * hs));
}

/* Vector q of row ri's outputs: h (v, when hh) and y (t); nt: batch_nt. */
KEEL_INLINE void batch_store(const batch_call *c, int q, int nt, size_t ri, float *h, size_t hs,
                             float *y, size_t ys, __m512 v, __m512 t, int hh)
{
    const __mmask16 k = batch_kq(c, q);
    const kstep s = {&k, k == (__mmask16)0xffff};
    if (hh)
        ks_store(h + ri * hs + 16 * q, v, s, nt);
    ks_store(y + ri * ys + 16 * q, t, s, nt);
}

#endif
