/* What the short-row batches of both SIMD paths (batch_rows__avx2.h, batch_rows__avx512.h)
 * share, with no vector types: the rows a batch reads and the lines it fetches ahead. Include
 * only from those headers. */
#ifndef KEEL_KERNELS_BATCH_ROWS_H
#define KEEL_KERNELS_BATCH_ROWS_H

#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

/* The rows of a batch: read once a batch into locals (the vector stores may alias anything,
 * so fields read through res would be loaded again after each of them). */
typedef struct batch_rows {
    const float *x, *r, *lambda, *bias;
    size_t xs, rs;
    float alpha;
} batch_rows;

static inline batch_rows batch_rows_of(const keel_f32_res *res, size_t r)
{
    const batch_rows b = {res->x + r * res->x_stride, res->r ? res->r + r * res->r_stride : NULL,
                          res->lambda, res->bias, res->x_stride, res->r_stride, res->alpha};
    return b;
}

/* PREFETCHW: the line at p fetched for a store to come, owned already, so that the store does
 * not wait for it (every AVX-512 processor has it; on an older AVX2 one it is a no-op). Not
 * through _mm_prefetch, which the compiler turns into a plain prefetch without -mprfchw. */
static inline void batch_prefetchw(const void *p)
{
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
}

/* What the batches of a call fetch ahead: the output lines (unless the call streams), and the
 * input lines; lines: 64-byte lines a row (a row of 16 floats one). */
typedef struct batch_lines {
    int fetch, hh; /* hh: h is written (a constant at every call) */
    int lines;
    const float *h, *y;
    size_t hs, ys;
} batch_lines;

static inline batch_lines batch_lines_of(const float *h, size_t hs, const float *y, size_t ys,
                                         int stream, int hh, int lines)
{
    const batch_lines l = {!stream, hh, lines, hh ? h : NULL, y, hs, ys};
    return l;
}

/* p + n floats, as an address to prefetch: it may lie beyond the rows (a prefetch never faults),
 * so it is computed as an integer, not as a pointer past the array. */
static inline const char *batch_ahead(const float *p, size_t n)
{
    return (const char *)((uintptr_t)p + n * sizeof(float));
}

/* Row i of the batch at row r: its output lines fetched for writing (unless the call streams),
 * and the inputs of the row BATCH_AHEAD rows on (two batches of eight: measured 16, 32 and 64
 * rows of 16 floats, keel bench add+ln 4096x16 on AVX-512 0.91-0.93, 0.91-0.92, 0.88-0.89 of
 * the floor, 0.80-0.83 without); past the last row as well (batch_ahead), where a test of each
 * row cost more than the prefetches (keel_profile_loop addlnf 4096 16: 31.0 -> 29.1 us, with the
 * test of h below a constant). */
#define BATCH_AHEAD 16
static inline void batch_fetch(const batch_lines *l, const batch_rows *b, size_t r, int i, int px)
{
    const size_t ri = r + (size_t)i;
    for (int q = 0; q < l->lines; q++) {
        if (l->fetch) {
            batch_prefetchw(l->y + ri * l->ys + 16 * q);
            if (l->hh)
                batch_prefetchw(l->h + ri * l->hs + 16 * q);
        }
        _mm_prefetch(batch_ahead(b->x, (size_t)(i + BATCH_AHEAD) * b->xs + 16 * (size_t)q),
                     _MM_HINT_T0);
        if (!px)
            _mm_prefetch(batch_ahead(b->r, (size_t)(i + BATCH_AHEAD) * b->rs + 16 * (size_t)q),
                         _MM_HINT_T0);
    }
}

#endif
