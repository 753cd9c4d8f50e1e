/* LayerScale, float32, written once over keel's lanes (lanes__<isa>.h) and compiled per ISA by
 * f32_layerscale__avx2.c, __avx512.c and __neon.c: h = x + lambda * f and its backward (kernels.h),
 * elementwise with the scalar kernel's operations in its order (one multiply, one add, each
 * rounded: no FMA), so every element has the scalar bits; the dlambda partial adds the rows in
 * increasing order as the scalar loop does. Every input of a chunk is loaded before any output
 * of it is stored, so an output may be an input (in place). 8 floats at a time (lanes_ymm.h says
 * why not 16; two q registers on NEON), a row's tail masked (nothing past a row is read or
 * written; NEON copies it through a stack buffer).
 *
 * Beyond the caches the outputs are streamed (non-temporal stores, rows that start 64-byte
 * aligned: whole lines), as the norms do: a write-allocating store reads every line it writes.
 * Measured on the AVX-512 path, 1 thread, 4096x4096 (keel_profile_loop lsf / lsb): forward 13.7
 * -> 6.2-9.7 ms, backward 24.3 -> 12.5-14.2 ms (this machine's bandwidth varies from run to
 * run); keel bench, fraction of the floor: 4096x4096 0.66 -> 0.93 and 0.44 -> 0.76, 4096x1024
 * 0.82 -> 1.09 and 0.65 -> 0.85, 1024x8192 0.52 -> 0.76 and 0.41 -> 0.67. A prefetch 1 KiB ahead
 * of the backward's loads measured no different. */
#ifndef KEEL_KERNELS_F32_LAYERSCALE_SIMD_H
#define KEEL_KERNELS_F32_LAYERSCALE_SIMD_H

/* 8 floats at p, or the tail's (tail set: m's floats, 0.0 past them). */
KEEL_INLINE kl_f8 ls_get(const float *p, int tail, kl_tail m)
{
    return tail ? kl_load_tail(p, m) : kl_load(p);
}

/* A chunk's store: streamed (nt: a row that starts a cache line, in a call past the caches) or
 * ordinary; a tail's is masked and never streamed. */
KEEL_INLINE void ls_put(float *p, kl_f8 v, int tail, kl_tail m, int nt)
{
    if (tail)
        kl_store_tail(p, v, m);
    else if (nt)
        kl_stream(p, v);
    else
        kl_store(p, v);
}

static void layerscale_fwd(size_t rows, size_t dim, const float *x, size_t x_stride, const float *f,
                           size_t f_stride, const float *lambda, float *h, size_t h_stride)
{
    const size_t full = dim & ~(size_t)7;
    const kl_tail m = kl_tail_of(dim - full);
    const int stream = keel_want_stream(rows * h_stride * sizeof(float));
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *fr = f + r * f_stride;
        float *hr = h + r * h_stride;
        const int nt = stream && kl_aligned64(hr);
        streamed |= nt;
        size_t j = 0;
        for (; j < full; j += 8)
            ls_put(hr + j, kl_add(kl_load(xr + j), kl_mul(kl_load(lambda + j), kl_load(fr + j))), 0,
                   m, nt);
        if (j < dim) {
            const kl_f8 v = kl_mul(kl_load_tail(lambda + j, m), kl_load_tail(fr + j, m));
            kl_store_tail(hr + j, kl_add(kl_load_tail(xr + j, m), v), m);
        }
    }
    if (streamed)
        kl_stream_fence();
}

/* 8 floats (or a tail's) of one row of the backward: dx = dh (+ dx), df = lambda * dh (+ df),
 * dlambda_part += dh * f. */
KEEL_INLINE void ls_bwd8(int tail, kl_tail m, const float *dhr, const float *fr, const float *lambda,
                         float *dxr, float *dfr, int accumulate, float *dlp, int nt)
{
    const kl_f8 g = ls_get(dhr, tail, m);
    const kl_f8 fj = dlp ? ls_get(fr, tail, m) : kl_zero();
    if (dxr)
        ls_put(dxr, accumulate ? kl_add(ls_get(dxr, tail, m), g) : g, tail, m, nt);
    if (dfr) {
        const kl_f8 t = kl_mul(ls_get(lambda, tail, m), g);
        ls_put(dfr, accumulate ? kl_add(ls_get(dfr, tail, m), t) : t, tail, m, nt);
    }
    if (dlp)
        ls_put(dlp, kl_add(ls_get(dlp, tail, m), kl_mul(g, fj)), tail, m, 0);
}

static void layerscale_bwd(size_t rows, size_t dim, const float *dh, size_t dh_stride,
                           const float *f, size_t f_stride, const float *lambda, float *dx,
                           size_t dx_stride, float *df, size_t df_stride, int accumulate,
                           float *dlambda_part, int hints)
{
    const size_t full = dim & ~(size_t)7;
    const kl_tail m = kl_tail_of(dim - full);
    const int stream = (hints & KEEL_KBWD_STREAM) && !accumulate;
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *dhr = dh + r * dh_stride;
        const float *fr = dlambda_part ? f + r * f_stride : NULL;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        float *dfr = df ? df + r * df_stride : NULL;
        const int nt = stream && (!dxr || kl_aligned64(dxr)) && (!dfr || kl_aligned64(dfr));
        streamed |= nt;
        size_t j = 0;
        for (; j < full; j += 8)
            ls_bwd8(0, m, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL, nt);
        if (j < dim)
            ls_bwd8(1, m, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL, 0);
    }
    if (streamed)
        kl_stream_fence();
}

#endif
