/* LayerScale, float32, aarch64 NEON: the body of f32_layerscale_simd.h over lanes__neon.h. */
#include "kernels.h"
#include "lanes__neon.h"
#include "f32_layerscale_simd.h"

void keel_f32_layerscale_fwd__neon(size_t rows, size_t dim, const float *x, size_t x_stride,
                                   const float *f, size_t f_stride, const float *lambda, float *h,
                                   size_t h_stride)
{
    layerscale_fwd(rows, dim, x, x_stride, f, f_stride, lambda, h, h_stride);
}

void keel_f32_layerscale_bwd__neon(size_t rows, size_t dim, const float *dh, size_t dh_stride,
                                   const float *f, size_t f_stride, const float *lambda, float *dx,
                                   size_t dx_stride, float *df, size_t df_stride, int accumulate,
                                   float *dlambda_part, int hints)
{
    layerscale_bwd(rows, dim, dh, dh_stride, f, f_stride, lambda, dx, dx_stride, df, df_stride,
                   accumulate, dlambda_part, hints);
}
