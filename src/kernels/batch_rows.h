/* What the short-row batches of both SIMD paths (batch_rows__avx2.h, batch_rows__avx512.h)
 * share, with no vector types: the rows a batch reads and the output lines it fetches ahead.
 * Include only from those headers. */
#ifndef KEEL_KERNELS_BATCH_ROWS_H
#define KEEL_KERNELS_BATCH_ROWS_H

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

/* What the batches of a call fetch ahead: the output lines, unless the call streams. */
typedef struct batch_lines {
    int fetch;
    const float *h, *y;
    size_t hs, ys;
} batch_lines;

static inline batch_lines batch_lines_of(const float *h, size_t hs, const float *y, size_t ys,
                                         int stream)
{
    const batch_lines l = {!stream, h, y, hs, ys};
    return l;
}

/* Row ri's output lines fetched for writing, unless the call streams (without: keel bench
 * add+ln 4096x16, 1 thread, 0.65 of the floor; every line needs its own: fetching every other
 * row's, 0.75). The inputs are not prefetched: once they were (16 rows ahead), and measured
 * against that, 1 thread, AVX-512, medians of 6 interleaved runs with the outputs out of cache,
 * add+ln / add+rms / layernorm / rmsnorm fwd 4096x16 0.82 / 1.04 / 0.20 / 0.28 of the floor ->
 * 0.88 / 1.02 / 0.22 / 0.28; back to back (`--hot`) 37.5 / 22.3 / 30.6 / 15.8 us -> 32.5 / 21.8 /
 * 26.4 / 14.8 us; 262144x16 layernorm 0.53 -> 0.60, the others within the noise. The prefetch
 * instructions cost more than the hardware prefetchers leave to gain. */
static inline void batch_fetch(const batch_lines *l, size_t ri)
{
    if (l->fetch) {
        batch_prefetchw(l->y + ri * l->ys);
        if (l->h)
            batch_prefetchw(l->h + ri * l->hs);
    }
}

#endif
