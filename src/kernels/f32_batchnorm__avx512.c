/* BatchNorm, float32, AVX-512: the body of f32_batchnorm_simd.h over lanes__avx512.h (a group of
 * 8 columns' sums is one zmm; the elementwise sweeps go 16 floats, a zmm, at a time). */
#include "kernels.h"
#include "lanes__avx512.h"
#include "f32_batchnorm_simd.h"

void keel_f32_batchnorm_stats__avx512(size_t rows, size_t cols, const float *x, size_t x_stride,
                                      double *mean, double *m2)
{
    batchnorm_stats(rows, cols, x, x_stride, mean, m2);
}

void keel_f32_batchnorm_apply__avx512(size_t rows, size_t cols, const float *x, size_t x_stride,
                                      float *y, size_t y_stride, const float *hi, const float *lo,
                                      const float *rstd, const float *gamma, const float *beta)
{
    batchnorm_apply(rows, cols, x, x_stride, y, y_stride, hi, lo, rstd, gamma, beta);
}

void keel_f32_batchnorm_bwd__avx512(size_t rows, size_t cols, const float *dy, size_t dy_stride,
                                    const float *x, size_t x_stride, const float *mean,
                                    const float *rstd, const float *gamma, int training, float *dx,
                                    size_t dx_stride, int accumulate_dx, float *dgamma,
                                    float *dbeta, int accumulate_dparams)
{
    batchnorm_bwd(rows, cols, dy, dy_stride, x, x_stride, mean, rstd, gamma, training, dx,
                  dx_stride, accumulate_dx, dgamma, dbeta, accumulate_dparams);
}
