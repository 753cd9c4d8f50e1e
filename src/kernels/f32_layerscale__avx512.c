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
 * dlambda partial. */
#include "kernels.h"
#include "simd_lanes__avx512.h"

KEEL_INLINE __mmask8 tail_mask8(size_t n) { return (__mmask8)((1u << n) - 1u); }

/* 8 floats at p, or those of k in a tail (the rest 0) */
KEEL_INLINE __m256 ld8(const float *p, int tail, __mmask8 k)
{
    return tail ? _mm256_maskz_loadu_ps(k, p) : _mm256_loadu_ps(p);
}

KEEL_INLINE void st8(float *p, __m256 v, int tail, __mmask8 k)
{
    if (tail)
        _mm256_mask_storeu_ps(p, k, v);
    else
        _mm256_storeu_ps(p, v);
}

void keel_f32_layerscale_fwd__avx512(size_t rows, size_t dim, const float *x, size_t x_stride,
                                     const float *f, size_t f_stride, const float *lambda,
                                     float *h, size_t h_stride)
{
    const size_t full = dim & ~(size_t)7;
    const __mmask8 kt = tail_mask8(dim - full);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *fr = f + r * f_stride;
        float *hr = h + r * h_stride;
        size_t j = 0;
        for (; j < full; j += 8) {
            const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(lambda + j), _mm256_loadu_ps(fr + j));
            _mm256_storeu_ps(hr + j, _mm256_add_ps(_mm256_loadu_ps(xr + j), v));
        }
        if (kt) {
            const __m256 v = _mm256_mul_ps(_mm256_maskz_loadu_ps(kt, lambda + j),
                                           _mm256_maskz_loadu_ps(kt, fr + j));
            _mm256_mask_storeu_ps(hr + j, kt, _mm256_add_ps(_mm256_maskz_loadu_ps(kt, xr + j), v));
        }
    }
}

/* 8 (or the k of a tail) floats of one row of the backward. */
KEEL_INLINE void ls_bwd8(int tail, __mmask8 k, const float *dhr, const float *fr,
                         const float *lambda, float *dxr, float *dfr, int accumulate, float *dlp)
{
    const __m256 g = ld8(dhr, tail, k);
    const __m256 fj = dlp ? ld8(fr, tail, k) : _mm256_setzero_ps();
    if (dxr)
        st8(dxr, accumulate ? _mm256_add_ps(ld8(dxr, tail, k), g) : g, tail, k);
    if (dfr) {
        const __m256 t = _mm256_mul_ps(ld8(lambda, tail, k), g);
        st8(dfr, accumulate ? _mm256_add_ps(ld8(dfr, tail, k), t) : t, tail, k);
    }
    if (dlp)
        st8(dlp, _mm256_add_ps(ld8(dlp, tail, k), _mm256_mul_ps(g, fj)), tail, k);
}

void keel_f32_layerscale_bwd__avx512(size_t rows, size_t dim, const float *dh, size_t dh_stride,
                                     const float *f, size_t f_stride, const float *lambda,
                                     float *dx, size_t dx_stride, float *df, size_t df_stride,
                                     int accumulate, float *dlambda_part)
{
    const size_t full = dim & ~(size_t)7;
    const __mmask8 kt = tail_mask8(dim - full);
    for (size_t r = 0; r < rows; r++) {
        const float *dhr = dh + r * dh_stride;
        const float *fr = dlambda_part ? f + r * f_stride : NULL;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        float *dfr = df ? df + r * df_stride : NULL;
        size_t j = 0;
        for (; j < full; j += 8)
            ls_bwd8(0, 0xff, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL);
        if (kt)
            ls_bwd8(1, kt, dhr + j, fr ? fr + j : NULL, lambda ? lambda + j : NULL,
                    dxr ? dxr + j : NULL, dfr ? dfr + j : NULL, accumulate,
                    dlambda_part ? dlambda_part + j : NULL);
    }
}
