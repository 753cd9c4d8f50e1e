/* LayerNorm, float32, portable C: the body of layernorm_rows__scalar.h on float rows. The SIMD
 * kernels must give exactly these bits. */
#include "kernels.h"

#define KS_T float
#define KS_GET(v) (v)
#define KS_PUT(f) (f)
#include "layernorm_rows__scalar.h"

void keel_f32_layernorm_fwd__scalar(size_t rows, size_t dim, const float *x, size_t x_stride,
                                    float *y, size_t y_stride, const float *gamma,
                                    const float *beta, float eps, float *mean, float *rstd)
{
    ln_rows_fwd(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd);
}

void keel_f32_layernorm_bwd__scalar(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                    const float *x, size_t x_stride, const float *mean,
                                    const float *rstd, const float *gamma, float eps, float *dx,
                                    size_t dx_stride, int dx_flags, float *dgamma_part,
                                    float *dbeta_part)
{
    ln_rows_bwd(rows, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, eps, dx, dx_stride,
                dx_flags, dgamma_part, dbeta_part);
}
