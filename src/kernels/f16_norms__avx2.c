/* LayerNorm and RMSNorm (forward and backward) of f16 (IEEE half) rows, AVX2: the bodies of
 * f32_layernorm_simd.h and f32_rmsnorm_simd.h over lanes__avx2.h with 16-bit row storage
 * (row_storage_simd.h): the rows widened in registers and rounded once as they are stored,
 * the bits of the staged path. */
#define KEEL_ROWS_F16
#include "kernels.h"
#include "lanes__avx2.h"
#include "f32_layernorm_simd.h"
#include "f32_rmsnorm_simd.h"

void keel_f16_layernorm_fwd__avx2(size_t rows, size_t dim, const uint16_t *x, size_t x_stride,
                                  uint16_t *y, size_t y_stride, const float *gamma,
                                  const float *beta, float eps, float *mean, float *rstd)
{
    layernorm_fwd(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd);
}

void keel_f16_rmsnorm_fwd__avx2(size_t rows, size_t dim, const uint16_t *x, size_t x_stride,
                                uint16_t *y, size_t y_stride, const float *gamma, float eps,
                                float *rstd)
{
    rmsnorm_fwd(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd);
}

void keel_f16_layernorm_bwd__avx2(size_t rows, size_t dim, const uint16_t *dy, size_t dy_stride,
                                  const uint16_t *x, size_t x_stride, const float *mean,
                                  const float *rstd, const float *gamma, float eps, uint16_t *dx,
                                  size_t dx_stride, int dx_flags, float *dgamma_part,
                                  float *dbeta_part)
{
    layernorm_bwd(rows, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, eps, dx, dx_stride,
                  dx_flags, dgamma_part, dbeta_part);
}

void keel_f16_rmsnorm_bwd__avx2(size_t rows, size_t dim, const uint16_t *dy, size_t dy_stride,
                                const uint16_t *x, size_t x_stride, const float *rstd,
                                const float *gamma, float eps, uint16_t *dx, size_t dx_stride,
                                int dx_flags, float *dgamma_part)
{
    rmsnorm_bwd(rows, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, dx, dx_stride, dx_flags,
                dgamma_part);
}
