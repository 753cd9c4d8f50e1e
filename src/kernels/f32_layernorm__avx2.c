/* LayerNorm, float32, AVX2: the body of f32_layernorm_simd.h over lanes__avx2.h, its short rows
 * four at a time in batches (row_batches_simd.h). */
#include "kernels.h"
#include "lanes__avx2.h"
#include "f32_layernorm_simd.h"

void keel_f32_layernorm_fwd__avx2(size_t rows, size_t dim, const float *x, size_t x_stride,
                                  float *y, size_t y_stride, const float *gamma, const float *beta,
                                  float eps, float *mean, float *rstd)
{
    layernorm_fwd(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd);
}

void keel_f32_layernorm_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                  const float *x, size_t x_stride, const float *mean,
                                  const float *rstd, const float *gamma, float eps, float *dx,
                                  size_t dx_stride, int dx_flags, float *dgamma_part,
                                  float *dbeta_part)
{
    layernorm_bwd(rows, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, eps, dx, dx_stride,
                  dx_flags, dgamma_part, dbeta_part);
}
