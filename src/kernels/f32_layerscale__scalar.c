/* LayerScale, float32, portable C: the scalar path, and the definition the AVX2 and AVX-512
 * kernels (f32_layerscale__avx2.c, __avx512.c) match bit for bit. h = x + lambda * f, the
 * residual of kernels.h with alpha 1. */
#include "kernels.h"

void keel_f32_layerscale_fwd__scalar(size_t rows, size_t dim, const float *x, size_t x_stride,
                                     const float *f, size_t f_stride, const float *lambda,
                                     float *h, size_t h_stride)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *fr = f + r * f_stride;
        float *hr = h + r * h_stride;
        for (size_t j = 0; j < dim; j++)
            hr[j] = xr[j] + lambda[j] * fr[j];
    }
}

void keel_f32_layerscale_bwd__scalar(size_t rows, size_t dim, const float *dh, size_t dh_stride,
                                     const float *f, size_t f_stride, const float *lambda,
                                     float *dx, size_t dx_stride, float *df, size_t df_stride,
                                     int accumulate, float *dlambda_part, int hints)
{
    (void)hints; /* memory hints only */
    for (size_t r = 0; r < rows; r++) {
        const float *dhr = dh + r * dh_stride;
        const float *fr = f ? f + r * f_stride : NULL;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        float *dfr = df ? df + r * df_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            /* every read of element j before any write of it: outputs may be inputs */
            const float g = dhr[j];
            const float fj = dlambda_part ? fr[j] : 0.0f;
            if (dxr)
                dxr[j] = accumulate ? dxr[j] + g : g;
            if (dfr) {
                const float t = lambda[j] * g;
                dfr[j] = accumulate ? dfr[j] + t : t;
            }
            if (dlambda_part)
                dlambda_part[j] = dlambda_part[j] + g * fj;
        }
    }
}
