/* The residual sum of the fused kernels on AVX-512, 16 elements at a time, in the operation
 * order of residual.h (so the same bits): h = (alpha * x) + (lambda * r), then + bias. Plus the
 * store policy the fused forwards share. Include only from *__avx512.c files. */
#ifndef KEEL_KERNELS_RESIDUAL_AVX512_H
#define KEEL_KERNELS_RESIDUAL_AVX512_H

#include <stdint.h>

#include "kernels.h"
#include "simd_lanes__avx512.h"

/* A row of the residual: its x and r rows and the per-feature vectors. */
typedef struct r512_row {
    const float *x, *r, *lambda, *bias;
    __m512 alpha;
} r512_row;

KEEL_INLINE r512_row r512_row_of(const keel_f32_res *res, size_t row)
{
    r512_row o;
    o.x = res->x ? res->x + row * res->x_stride : NULL;
    o.r = res->r ? res->r + row * res->r_stride : NULL;
    o.lambda = res->lambda;
    o.bias = res->bias;
    o.alpha = _mm512_set1_ps(res->alpha);
    return o;
}

/* h[j .. j+16) (the floats of mask k; full: all 16, unmasked loads). hl, hb: lambda, bias
 * present (constants at the call sites that matter). Lanes outside k hold 0 or bias-free
 * values that no caller stores or adds. */
KEEL_INLINE __m512 r512_h(const r512_row *w, size_t j, __mmask16 k, int full, int hl, int hb)
{
    const __m512 x = full ? _mm512_loadu_ps(w->x + j) : _mm512_maskz_loadu_ps(k, w->x + j);
    __m512 r = full ? _mm512_loadu_ps(w->r + j) : _mm512_maskz_loadu_ps(k, w->r + j);
    if (hl)
        r = _mm512_mul_ps(full ? _mm512_loadu_ps(w->lambda + j) : _mm512_maskz_loadu_ps(k, w->lambda + j), r);
    __m512 v = _mm512_add_ps(_mm512_mul_ps(w->alpha, x), r);
    if (hb)
        v = _mm512_add_ps(v, full ? _mm512_loadu_ps(w->bias + j) : _mm512_maskz_loadu_ps(k, w->bias + j));
    return v;
}

/* The two double halves of 16 floats: lanes 0-7 and 8-15 of kernels.h's order. */
KEEL_INLINE __m512d r512_lo(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
KEEL_INLINE __m512d r512_hi(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }

/* Stores. A call that writes more than R512_STREAM_ABOVE bytes streams its outputs past the
 * caches (non-temporal stores): they would only evict the rows still to be read, and a
 * write-allocating store reads every line it writes, a third more traffic than the floor's
 * copy. Below, the outputs stay in cache for the next op (measured: streaming cached-size
 * outputs is slower). A row streams when its start is 64-byte aligned (the stores are whole
 * aligned lines), else it is stored normally; the caller ends with an sfence. */
#define R512_STREAM_ABOVE ((size_t)8 << 20)

KEEL_INLINE int r512_aligned(const float *p) { return ((uintptr_t)p & 63) == 0; }

KEEL_INLINE void r512_store(float *p, __m512 v, __mmask16 k, int full, int nt)
{
    if (!full)
        _mm512_mask_storeu_ps(p, k, v);
    else if (nt)
        _mm512_stream_ps(p, v);
    else
        _mm512_storeu_ps(p, v);
}

/* Prefetch of the next row's x and r while the current row works in cache: the whole row,
 * into L1 (measured against L2 and against a bounded distance, rows of 1024 to 16384 floats:
 * the best or equal everywhere). */
#define R512_PF(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

/* The fused forwards' row pipelines (rows from beyond the caches) prefetch the row they read
 * from memory this far ahead of the loads, in floats (1 KiB, 16 lines a stream; measured at
 * 4096x768 to 8192x8192: 128 to 768 within 5%, none 10-40% slower). Past the row's end it
 * fetches the start of the next row when the rows are contiguous; a prefetch never faults. */
#define R512_PIPE_AHEAD 256

/* The pipelines' read of row w at j: h (r512_h) stored into the row's buffer hc as well (a
 * whole step: the buffer has room), the loads R512_PIPE_AHEAD behind their prefetches. */
KEEL_INLINE __m512 r512_h_piped(const r512_row *w, float *hc, size_t j, __mmask16 k, int full,
                                int hl, int hb)
{
    if (full) {
        R512_PF(w->x + j + R512_PIPE_AHEAD);
        R512_PF(w->r + j + R512_PIPE_AHEAD);
    }
    const __m512 v = r512_h(w, j, k, full, hl, hb);
    _mm512_store_ps(hc + j, v);
    return v;
}

/* ---- the fused backwards' shared pieces ------------------------------------------------ */

/* A 16-float step at j: all 16 (full, unmasked loads) or the row's tail (mask k). */
typedef struct r512_step {
    __mmask16 k;
    int full;
} r512_step;

KEEL_INLINE __m512 r512_ld(const float *p, r512_step s)
{
    return s.full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(s.k, p);
}

/* part[j ..] += t (a per-feature partial sum of the row block). */
KEEL_INLINE void r512_part_add(float *part, size_t j, r512_step s, __m512 t)
{
    _mm512_mask_storeu_ps(part + j, s.k, _mm512_add_ps(r512_ld(part + j, s), t));
}

/* One row of a fused backward: its inputs (dy, dh or NULL, h saved or NULL, the residual row
 * w) and outputs (dx, dr or NULL). */
typedef struct r512_bwd_row {
    const float *dy, *dh, *hv;
    r512_row w;
    float *dx, *dr;
} r512_bwd_row;

KEEL_INLINE r512_bwd_row r512_bwd_row_of(size_t r, const float *dy, size_t dys, const float *dh,
                                         size_t dhs, const keel_f32_res *res, const float *h,
                                         size_t hs, const keel_f32_res_grads *out)
{
    r512_bwd_row p;
    p.dy = dy + r * dys;
    p.dh = dh ? dh + r * dhs : NULL;
    p.hv = h ? h + r * hs : NULL;
    p.w = r512_row_of(res, r);
    p.dx = out->dx ? out->dx + r * out->dx_stride : NULL;
    p.dr = out->dr ? out->dr + r * out->dr_stride : NULL;
    return p;
}

/* h at j of a backward's row: saved (hh) or recomputed from the residual (hl, hb). */
KEEL_INLINE __m512 r512_bwd_h(const r512_bwd_row *p, size_t j, r512_step s, int hh, int hl, int hb)
{
    return hh ? r512_ld(p->hv + j, s) : r512_h(&p->w, j, s.k, s.full, hl, hb);
}

/* The residual's gradients at j from G (the gradient reaching h, dh included): dx = alpha * G,
 * dr = lambda * G (accumulated with acc), and the partials dlambda += G * r, dbias += G (each
 * wanted or not: constants at the call sites). r is read before dx or dr may overwrite it. */
KEEL_INLINE void r512_res_grads(const r512_bwd_row *p, size_t j, r512_step s, __m512 G, int hdx,
                                int hdr, int acc, int dlp, int dbsp, float *const *parts, int nt)
{
    const __m512 rj = dlp ? r512_ld(p->w.r + j, s) : G;
    if (hdx) {
        __m512 o = _mm512_mul_ps(p->w.alpha, G);
        if (acc)
            o = _mm512_add_ps(r512_ld(p->dx + j, s), o);
        r512_store(p->dx + j, o, s.k, s.full, nt);
    }
    if (hdr) {
        __m512 o = p->w.lambda ? _mm512_mul_ps(r512_ld(p->w.lambda + j, s), G) : G;
        if (acc)
            o = _mm512_add_ps(r512_ld(p->dr + j, s), o);
        r512_store(p->dr + j, o, s.k, s.full, nt);
    }
    if (dlp)
        r512_part_add(parts[KEEL_PART_DLAMBDA], j, s, _mm512_mul_ps(G, rj));
    if (dbsp)
        r512_part_add(parts[KEEL_PART_DBIAS], j, s, G);
}

/* A fused backward's memory hints for one row (keel_f32_res_grads.hints): the next row's
 * inputs, prefetched into L2 a line per step of sweep 2 (NULL: none), and whether dx and dr
 * are streamed (rows with an aligned start, never with accumulate). */
typedef struct r512_bwd_mem {
    const float *next[4];
    int nt;
} r512_bwd_mem;

KEEL_INLINE void r512_bwd_prefetch(const r512_bwd_mem *m, size_t j)
{
    for (int i = 0; i < 4; i++)
        if (m->next[i])
            K512_PF_L2(m->next[i] + j);
}

/* Whether row r's dx and dr are streamed (the hint given, no accumulate, rows that start
 * aligned). */
KEEL_INLINE int r512_bwd_nt(const keel_f32_res_grads *out, int acc, size_t r)
{
    return (out->hints & KEEL_KBWD_STREAM) && !acc &&
           (!out->dx || r512_aligned(out->dx + r * out->dx_stride)) &&
           (!out->dr || r512_aligned(out->dr + r * out->dr_stride));
}

/* The hints of row r of a fused backward over rows rows (dy, dh, h or x and r: its inputs). */
KEEL_INLINE r512_bwd_mem r512_bwd_mem_of(const keel_f32_res_grads *out, int acc, size_t r,
                                         size_t rows, const float *dy, size_t dys,
                                         const float *dh, size_t dhs, const float *h, size_t hs,
                                         const keel_f32_res *res)
{
    r512_bwd_mem m = {{NULL, NULL, NULL, NULL}, 0};
    if ((out->hints & KEEL_KBWD_PREFETCH) && r + 1 < rows) {
        m.next[0] = dy + (r + 1) * dys;
        m.next[1] = dh ? dh + (r + 1) * dhs : NULL;
        m.next[2] = h ? h + (r + 1) * hs : res->x ? res->x + (r + 1) * res->x_stride : NULL;
        m.next[3] = !h && res->r ? res->r + (r + 1) * res->r_stride : NULL;
    }
    m.nt = r512_bwd_nt(out, acc, r);
    return m;
}

/* What add_norm_pipe.h needs of this path. */
#define PIPE_ROW r512_row
#define PIPE_ROW_OF r512_row_of
#define PIPE_ALIGNED r512_aligned
#define PIPE_STEP r512_step
#define PIPE_STEPS(dim)                                                                            \
    const size_t full_ = (dim) & ~(size_t)15;                                                      \
    const r512_step F_ = {0xffff, 1}, T_ = {k512_tail16((dim) - full_), 0}
#define PIPE_STEP_AT(j) ((j) < full_ ? F_ : T_)
#define PIPE_BWD_ROW r512_bwd_row
#define PIPE_BWD_ROW_OF r512_bwd_row_of
#define PIPE_BWD_NT r512_bwd_nt
#define PIPE_PF R512_PF
#define PIPE_AHEAD R512_PIPE_AHEAD
#define PIPE_STREAM_ABOVE R512_STREAM_ABOVE

#endif
