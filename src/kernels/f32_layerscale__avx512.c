/* LayerScale, float32, AVX-512: h = x + lambda * f and its backward (kernels.h), elementwise
 * with the scalar kernel's operations in its order (one multiply, one add, each rounded: no
 * FMA), so every element has the scalar bits; the dlambda partial adds the rows in increasing
 * order as the scalar loop does. Every input of a chunk is loaded before any output of it is
 * stored, so an output may be an input (in place).
 *
 * 8 floats at a time (ymm), with AVX-512VL masks for a row's tail: this is pure streaming, and
 * with the unaligned rows callers pass, every 64-byte zmm store splits across two cache lines;
 * measured on rows from malloc, zmm made the backward (three output streams) 20-50% slower than
 * ymm, and with 64-byte aligned rows both widths ran at the same speed. Full chunks use plain
 * loads and stores: a masked store cannot be forwarded to the next row's load of the same
 * dlambda partial.
 *
 * Beyond the caches the outputs are streamed (non-temporal stores, rows that start 64-byte
 * aligned: whole lines from two ymm stores each), as the norms do: a write-allocating store
 * reads every line it writes. Measured, 1 thread, 4096x4096 (keel_profile_loop lsf / lsb):
 * forward 13.7 -> 6.2-9.7 ms, backward 24.3 -> 12.5-14.2 ms (this machine's bandwidth varies
 * from run to run); keel bench, fraction of the floor: 4096x4096 0.66 -> 0.93 and 0.44 -> 0.76,
 * 4096x1024 0.82 -> 1.09 and 0.65 -> 0.85, 1024x8192 0.52 -> 0.76 and 0.41 -> 0.67. A prefetch
 * 1 KiB ahead of the backward's loads measured no different. */
#include "kernels.h"
#include "simd_lanes__avx512.h"

KEEL_INLINE __mmask8 tail_mask8(size_t n) { return (__mmask8)((1u << n) - 1u); }

/* 8 floats at p, or those of k in a tail (the rest 0) */
KEEL_INLINE __m256 ld8(const float *p, int tail, __mmask8 k)
{
    return tail ? _mm256_maskz_loadu_ps(k, p) : _mm256_loadu_ps(p);
}

/* nt: a full chunk streamed (p 32-byte aligned) */
KEEL_INLINE void st8(float *p, __m256 v, int tail, __mmask8 k, int nt)
{
    if (tail)
        _mm256_mask_storeu_ps(p, k, v);
    else if (nt)
        _mm256_stream_ps(p, v);
    else
        _mm256_storeu_ps(p, v);
}

void keel_f32_layerscale_fwd__avx512(size_t rows, size_t dim, const float *x, size_t x_stride,
                                     const float *f, size_t f_stride, const float *lambda,
                                     float *h, size_t h_stride)
{
    const size_t full = dim & ~(size_t)7;
    const __mmask8 kt = tail_mask8(dim - full);
    const int stream = k512_want_stream(rows, h_stride);
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *fr = f + r * f_stride;
        float *hr = h + r * h_stride;
        const int nt = stream && k512_aligned64(hr);
        streamed |= nt;
        size_t j = 0;
        for (; j < full; j += 8) {
            const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(lambda + j), _mm256_loadu_ps(fr + j));
            st8(hr + j, _mm256_add_ps(_mm256_loadu_ps(xr + j), v), 0, 0xff, nt);
        }
        if (kt) {
            const __m256 v = _mm256_mul_ps(_mm256_maskz_loadu_ps(kt, lambda + j),
                                           _mm256_maskz_loadu_ps(kt, fr + j));
            _mm256_mask_storeu_ps(hr + j, kt, _mm256_add_ps(_mm256_maskz_loadu_ps(kt, xr + j), v));
        }
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* 8 (or the k of a tail) floats of one row of the backward. */
KEEL_INLINE void ls_bwd8(int tail, __mmask8 k, const float *dhr, const float *fr,
                         const float *lambda, float *dxr, float *dfr, int accumulate, float *dlp,
                         int nt)
{
    const __m256 g = ld8(dhr, tail, k);
    const __m256 fj = dlp ? ld8(fr, tail, k) : _mm256_setzero_ps();
    if (dxr)
        st8(dxr, accumulate ? _mm256_add_ps(ld8(dxr, tail, k), g) : g, tail, k, nt);
    if (dfr) {
        const __m256 t = _mm256_mul_ps(ld8(lambda, tail, k), g);
        st8(dfr, accumulate ? _mm256_add_ps(ld8(dfr, tail, k), t) : t, tail, k, nt);
    }
    if (dlp)
        st8(dlp, _mm256_add_ps(ld8(dlp, tail, k), _mm256_mul_ps(g, fj)), tail, k, 0);
}

void keel_f32_layerscale_bwd__avx512(size_t rows, size_t dim, const float *dh, size_t dh_stride,
                                     const float *f, size_t f_stride, const float *lambda,
                                     float *dx, size_t dx_stride, float *df, size_t df_stride,
                                     int accumulate, float *dlambda_part, int hints)
{
    const size_t full = dim & ~(size_t)7;
    const __mmask8 kt = tail_mask8(dim - full);
    const int stream = (hints & KEEL_KBWD_STREAM) && !accumulate;
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *dhr = dh + r * dh_stride;
        const float *fr = dlambda_part ? f + r * f_stride : NULL;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        float *dfr = df ? df + r * df_stride : NULL;
        const int nt = stream && (!dxr || k512_aligned64(dxr)) && (!dfr || k512_aligned64(dfr));
        streamed |= nt;
        size_t j = 0;
        for (; j < full; j += 8)
            ls_bwd8(0, 0xff, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL, nt);
        if (kt)
            ls_bwd8(1, kt, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL, 0);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
