/* LayerScale, float32, AVX2: h = x + lambda * f and its backward (kernels.h), 8 floats at a
 * time, maskload / maskstore for a row's tail (nothing past a row is read or written). The
 * scalar kernel's operations in its order (no FMA), so the scalar bits; see
 * f32_layerscale__avx512.c (outputs beyond the caches streamed, as there). */
#include "kernels.h"
#include "simd_lanes__avx2.h"

/* 8 floats at p, or the first of them that m selects (the rest 0) */
KEEL_INLINE __m256 ld8(const float *p, int tail, __m256i m)
{
    return tail ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}

/* nt: a full chunk streamed (p 32-byte aligned) */
KEEL_INLINE void st8(float *p, __m256 v, int tail, __m256i m, int nt)
{
    if (tail)
        _mm256_maskstore_ps(p, m, v);
    else if (nt)
        _mm256_stream_ps(p, v);
    else
        _mm256_storeu_ps(p, v);
}

/* Rows whose start is 64-byte aligned stream (whole lines). */
KEEL_INLINE int aligned64(const float *p) { return ((uintptr_t)p & 63) == 0; }

void keel_f32_layerscale_fwd__avx2(size_t rows, size_t dim, const float *x, size_t x_stride,
                                   const float *f, size_t f_stride, const float *lambda,
                                   float *h, size_t h_stride)
{
    const size_t full = dim & ~(size_t)7;
    const __m256i mt = k256_mask8(dim - full);
    const int stream = k256_want_stream(rows, h_stride);
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *fr = f + r * f_stride;
        float *hr = h + r * h_stride;
        const int nt = stream && aligned64(hr);
        streamed |= nt;
        size_t j = 0;
        for (; j < full; j += 8) {
            const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(lambda + j), _mm256_loadu_ps(fr + j));
            st8(hr + j, _mm256_add_ps(_mm256_loadu_ps(xr + j), v), 0, mt, nt);
        }
        if (j < dim) {
            const __m256 v = _mm256_mul_ps(_mm256_maskload_ps(lambda + j, mt), _mm256_maskload_ps(fr + j, mt));
            _mm256_maskstore_ps(hr + j, mt, _mm256_add_ps(_mm256_maskload_ps(xr + j, mt), v));
        }
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* 8 floats (tail: those of m) of one row of the backward. */
KEEL_INLINE void ls_bwd8(int tail, __m256i m, const float *dhr, const float *fr,
                         const float *lambda, float *dxr, float *dfr, int accumulate, float *dlp,
                         int nt)
{
    const __m256 g = ld8(dhr, tail, m);
    const __m256 fj = dlp ? ld8(fr, tail, m) : _mm256_setzero_ps();
    if (dxr)
        st8(dxr, accumulate ? _mm256_add_ps(ld8(dxr, tail, m), g) : g, tail, m, nt);
    if (dfr) {
        const __m256 t = _mm256_mul_ps(ld8(lambda, tail, m), g);
        st8(dfr, accumulate ? _mm256_add_ps(ld8(dfr, tail, m), t) : t, tail, m, nt);
    }
    if (dlp)
        st8(dlp, _mm256_add_ps(ld8(dlp, tail, m), _mm256_mul_ps(g, fj)), tail, m, 0);
}

void keel_f32_layerscale_bwd__avx2(size_t rows, size_t dim, const float *dh, size_t dh_stride,
                                   const float *f, size_t f_stride, const float *lambda,
                                   float *dx, size_t dx_stride, float *df, size_t df_stride,
                                   int accumulate, float *dlambda_part, int hints)
{
    const size_t full = dim & ~(size_t)7;
    const __m256i mt = k256_mask8(dim - full);
    const int stream = (hints & KEEL_KBWD_STREAM) && !accumulate;
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *dhr = dh + r * dh_stride;
        const float *fr = dlambda_part ? f + r * f_stride : NULL;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        float *dfr = df ? df + r * df_stride : NULL;
        const int nt = stream && (!dxr || aligned64(dxr)) && (!dfr || aligned64(dfr));
        streamed |= nt;
        size_t j = 0;
        for (; j < full; j += 8)
            ls_bwd8(0, mt, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL, nt);
        if (j < dim)
            ls_bwd8(1, mt, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL, 0);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
