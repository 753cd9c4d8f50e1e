/* RMSNorm, float32, portable C: the body of rmsnorm_rows__scalar.h on float rows. The SIMD
 * kernels must give exactly these bits. */
#include "kernels.h"

#define KS_T float
#define KS_GET(v) (v)
#define KS_PUT(f) (f)
#include "rmsnorm_rows__scalar.h"

void keel_f32_rmsnorm_fwd__scalar(size_t rows, size_t dim, const float *x, size_t x_stride,
                                  float *y, size_t y_stride, const float *gamma, float eps,
                                  float *rstd)
{
    rms_rows_fwd(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd);
}

void keel_f32_rmsnorm_bwd__scalar(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                  const float *x, size_t x_stride, const float *rstd,
                                  const float *gamma, float eps, float *dx, size_t dx_stride,
                                  int dx_flags, float *dgamma_part)
{
    rms_rows_bwd(rows, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, dx, dx_stride, dx_flags,
                 dgamma_part);
}
