/* DyT (Dynamic Tanh), float32, portable C: y = gamma * tanh(alpha * x) + beta with the tanh of
 * dyt_tanh.h, which the SIMD kernels reproduce bit for bit. */
#include "dyt_tanh.h"
#include "kernels.h"

void keel_f32_dyt_fwd__scalar(size_t rows, size_t dim, const float *x, size_t x_stride, float *y,
                              size_t y_stride, float alpha, const float *gamma, const float *beta)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        for (size_t j = 0; j < dim; j++) {
            float t, s;
            keel_tanh_sech2_f32(alpha * xr[j], &t, &s);
            if (gamma)
                t = t * gamma[j];
            if (beta)
                t = t + beta[j];
            yr[j] = t;
        }
    }
}

void keel_f32_dyt_bwd__scalar(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                              const float *x, size_t x_stride, float alpha, const float *gamma,
                              float *dx, size_t dx_stride, int accumulate_dx, float *dgamma_part,
                              float *dbeta_part, float *dalpha_part)
{
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride, *xr = x + r * x_stride;
        float *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xj = xr[j], dyj = dyr[j];
            float t, s;
            keel_tanh_sech2_f32(alpha * xj, &t, &s);
            const float gs = gamma ? dyj * gamma[j] : dyj;
            if (dxr) {
                const float v = (gs * alpha) * s;
                dxr[j] = accumulate_dx ? dxr[j] + v : v;
            }
            if (dalpha_part)
                dalpha_part[j] = dalpha_part[j] + (gs * xj) * s;
            if (dgamma_part)
                dgamma_part[j] = dgamma_part[j] + dyj * t;
            if (dbeta_part)
                dbeta_part[j] = dbeta_part[j] + dyj;
        }
    }
}
