/* RMSNorm, float32, portable C: the formulas and reduction order of kernels.h. */
#include <math.h>

#include "f32_norm_stats__scalar.h"
#include "kernels.h"
#include "norm_finish.h"
#include "reduce_order.h"

float keel_f32_rmsnorm_rstd__scalar(const float *x, size_t dim, float eps)
{
    double lane[KEEL_LANES];
    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++)
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + (double)x[j] * (double)x[j];
    return keel_rms_rstd(keel_reduce16(lane), dim, eps);
}

void keel_f32_rmsnorm_fwd__scalar(size_t rows, size_t dim, const float *x, size_t x_stride,
                                  float *y, size_t y_stride, const float *gamma, float eps,
                                  float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        const float rs = keel_f32_rmsnorm_rstd__scalar(xr, dim, eps);
        for (size_t j = 0; j < dim; j++) {
            float v = xr[j] * rs;
            if (gamma)
                v = v * gamma[j];
            yr[j] = v;
        }
        if (rstd)
            rstd[r] = rs;
    }
}

void keel_f32_rmsnorm_bwd__scalar(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                  const float *x, size_t x_stride, const float *rstd,
                                  const float *gamma, float eps, float *dx, size_t dx_stride,
                                  int dx_flags, float *dgamma_part)
{
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride;
        const float *xr = x + r * x_stride;
        const float rs = rstd ? rstd[r] : keel_f32_rmsnorm_rstd__scalar(xr, dim, eps);
        float b = 0.0f;
        if (dx) {
            double sgx[KEEL_LANES];
            keel_lanes_zero(sgx);
            for (size_t j = 0; j < dim; j++) {
                const float g = gamma ? dyr[j] * gamma[j] : dyr[j];
                sgx[j % KEEL_LANES] = sgx[j % KEEL_LANES] + (double)g * (double)xr[j];
            }
            b = keel_rms_bwd_b(rs, keel_reduce16(sgx), dim);
        }
        float *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xhat = xr[j] * rs;
            const float dyj = dyr[j];
            if (dxr) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * (g - xhat * b);
                dxr[j] = (dx_flags & KEEL_KBWD_ACCUMULATE) ? dxr[j] + v : v;
            }
            if (dgamma_part)
                dgamma_part[j] = dgamma_part[j] + dyj * xhat;
        }
    }
}
