/* LayerNorm, float32, portable C: the formulas and reduction order of kernels.h, one row at a
 * time. The SIMD kernels must give exactly these bits. */
#include <math.h>

#include "f32_norm_stats__scalar.h"
#include "kernels.h"
#include "norm_finish.h"
#include "reduce_order.h"

double keel_f32_layernorm_stats__scalar(const float *x, size_t dim, float eps, float *rstd)
{
    double lane[KEEL_LANES];
    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++)
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + (double)x[j];
    const double mean = keel_ln_mean(keel_reduce16(lane), dim);

    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++) {
        const double t = (double)x[j] - mean;
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + t * t;
    }
    *rstd = keel_ln_rstd(keel_reduce16(lane), dim, eps);
    return mean;
}

void keel_f32_layernorm_fwd__scalar(size_t rows, size_t dim, const float *x, size_t x_stride,
                                    float *y, size_t y_stride, const float *gamma,
                                    const float *beta, float eps, float *mean, float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        float rs;
        const double mean_d = keel_f32_layernorm_stats__scalar(xr, dim, eps, &rs);
        /* The mean as a float hi + lo pair: x - hi is exact near the mean (Sterbenz), so the
         * centred value keeps its precision even when the mean is 1e6 standard deviations out. */
        const float hi = (float)mean_d;
        const float lo = (float)(mean_d - (double)hi);
        for (size_t j = 0; j < dim; j++) {
            float v = ((xr[j] - hi) - lo) * rs;
            if (gamma)
                v = v * gamma[j];
            if (beta)
                v = v + beta[j];
            yr[j] = v;
        }
        if (mean)
            mean[r] = hi;
        if (rstd)
            rstd[r] = rs;
    }
}

void keel_f32_layernorm_bwd__scalar(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                    const float *x, size_t x_stride, const float *mean,
                                    const float *rstd, const float *gamma, float eps, float *dx,
                                    size_t dx_stride, int dx_flags, float *dgamma_part,
                                    float *dbeta_part)
{
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride;
        const float *xr = x + r * x_stride;
        float m, rs;
        if (mean) {
            m = mean[r];
            rs = rstd[r];
        } else {
            m = (float)keel_f32_layernorm_stats__scalar(xr, dim, eps, &rs);
        }
        /* Sweep 1: the part of the mean the float32 mean lost, and mean(g), mean(g * xhat). */
        double sx[KEEL_LANES], sg[KEEL_LANES], sgu[KEEL_LANES];
        keel_lanes_zero(sx);
        keel_lanes_zero(sg);
        keel_lanes_zero(sgu);
        for (size_t j = 0; j < dim; j++) {
            const double u = (double)xr[j] - (double)m;
            sx[j % KEEL_LANES] = sx[j % KEEL_LANES] + u;
            if (dx) {
                const float g = gamma ? dyr[j] * gamma[j] : dyr[j];
                sg[j % KEEL_LANES] = sg[j % KEEL_LANES] + (double)g;
                sgu[j % KEEL_LANES] = sgu[j % KEEL_LANES] + (double)g * u;
            }
        }
        const double n = (double)dim;
        const double delta = keel_reduce16(sx) / n;
        const double Sg = keel_reduce16(sg);
        const double Sgu = keel_reduce16(sgu);
        const float a = (float)(Sg / n);
        const float b = (float)((double)rs * ((Sgu - delta * Sg) / n));
        const float df = (float)delta;

        /* Sweep 2: dx and the parameter-gradient partials. */
        float *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xhat = ((xr[j] - m) - df) * rs;
            const float dyj = dyr[j];
            if (dxr) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * ((g - a) - xhat * b);
                dxr[j] = (dx_flags & KEEL_KBWD_ACCUMULATE) ? dxr[j] + v : v;
            }
            if (dgamma_part)
                dgamma_part[j] = dgamma_part[j] + dyj * xhat;
            if (dbeta_part)
                dbeta_part[j] = dbeta_part[j] + dyj;
        }
    }
}
