/* LayerNorm and RMSNorm of bf16 rows, portable C: the bodies of layernorm_rows__scalar.h and
 * rmsnorm_rows__scalar.h on 16-bit rows, each value widened exactly and each output rounded
 * once by the scalar definitions of convert.h: the float32 kernels' bits on the widened rows,
 * rounded, which the SIMD paths' bf16 kernels match bit for bit. */
#include "convert.h"
#include "kernels.h"

#define KS_T uint16_t
#define KS_GET keel_bf16_bits_to_f32
#define KS_PUT keel_f32_to_bf16_bits
#include "layernorm_rows__scalar.h"
#include "rmsnorm_rows__scalar.h"

void keel_bf16_layernorm_fwd__scalar(size_t rows, size_t dim, const uint16_t *x, size_t x_stride,
                                     uint16_t *y, size_t y_stride, const float *gamma,
                                     const float *beta, float eps, float *mean, float *rstd)
{
    ln_rows_fwd(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd);
}

void keel_bf16_layernorm_bwd__scalar(size_t rows, size_t dim, const uint16_t *dy, size_t dy_stride,
                                     const uint16_t *x, size_t x_stride, const float *mean,
                                     const float *rstd, const float *gamma, float eps, uint16_t *dx,
                                     size_t dx_stride, int dx_flags, float *dgamma_part,
                                     float *dbeta_part)
{
    ln_rows_bwd(rows, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, eps, dx, dx_stride,
                dx_flags, dgamma_part, dbeta_part);
}

void keel_bf16_rmsnorm_fwd__scalar(size_t rows, size_t dim, const uint16_t *x, size_t x_stride,
                                   uint16_t *y, size_t y_stride, const float *gamma, float eps,
                                   float *rstd)
{
    rms_rows_fwd(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd);
}

void keel_bf16_rmsnorm_bwd__scalar(size_t rows, size_t dim, const uint16_t *dy, size_t dy_stride,
                                   const uint16_t *x, size_t x_stride, const float *rstd,
                                   const float *gamma, float eps, uint16_t *dx, size_t dx_stride,
                                   int dx_flags, float *dgamma_part)
{
    rms_rows_bwd(rows, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, dx, dx_stride, dx_flags,
                 dgamma_part);
}
