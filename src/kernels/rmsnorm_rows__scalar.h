/* RMSNorm, portable C, over rows of one storage type: the formulas and reduction order of
 * kernels.h. KS_T, KS_GET and KS_PUT as for layernorm_rows__scalar.h (f32_rmsnorm__scalar.c,
 * bf16_norms__scalar.c, f16_norms__scalar.c); the row sums take any row (the fused add +
 * RMSNorm's h too). */
#ifndef KEEL_KERNELS_RMSNORM_ROWS_SCALAR_H
#define KEEL_KERNELS_RMSNORM_ROWS_SCALAR_H

#include "kernels.h"
#include "norm_finish.h"
#include "reduce_order.h"
#include "row_get__scalar.h"

/* rstd_f of a row (kernels.h, RMSNorm forward). */
static inline float rms_row_rstd(ks_get_fn *get, const void *row, size_t dim, float eps)
{
    double lane[KEEL_LANES];
    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++) {
        const double v = (double)get(row, j);
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + v * v;
    }
    return keel_rms_rstd(keel_reduce16(lane), dim, eps);
}

/* b_f of the backward (kernels.h): mean(g * xhat), g = dy * gamma (dy alone without gamma). */
static inline float rms_row_sweep1(ks_get_fn *get, const void *row, ks_get_fn *dy_get,
                                   const void *dy_row, const float *gamma, size_t dim, float rs)
{
    double sgx[KEEL_LANES];
    keel_lanes_zero(sgx);
    for (size_t j = 0; j < dim; j++) {
        const float dyj = dy_get(dy_row, j);
        const float g = gamma ? dyj * gamma[j] : dyj;
        sgx[j % KEEL_LANES] = sgx[j % KEEL_LANES] + (double)g * (double)get(row, j);
    }
    return keel_rms_bwd_b(rs, keel_reduce16(sgx), dim);
}

static inline void rms_rows_fwd(size_t rows, size_t dim, const KS_T *x, size_t x_stride, KS_T *y,
                                size_t y_stride, const float *gamma, float eps, float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const KS_T *xr = x + r * x_stride;
        KS_T *yr = y + r * y_stride;
        const float rs = rms_row_rstd(ks_get, xr, dim, eps);
        for (size_t j = 0; j < dim; j++) {
            float v = KS_GET(xr[j]) * rs;
            if (gamma)
                v = v * gamma[j];
            yr[j] = KS_PUT(v);
        }
        if (rstd)
            rstd[r] = rs;
    }
}

static inline void rms_rows_bwd(size_t rows, size_t dim, const KS_T *dy, size_t dy_stride,
                                const KS_T *x, size_t x_stride, const float *rstd,
                                const float *gamma, float eps, KS_T *dx, size_t dx_stride,
                                int dx_flags, float *dgamma_part)
{
    for (size_t r = 0; r < rows; r++) {
        const KS_T *dyr = dy + r * dy_stride;
        const KS_T *xr = x + r * x_stride;
        const float rs = rstd ? rstd[r] : rms_row_rstd(ks_get, xr, dim, eps);
        const float b = dx ? rms_row_sweep1(ks_get, xr, ks_get, dyr, gamma, dim, rs) : 0.0f;
        KS_T *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xhat = KS_GET(xr[j]) * rs;
            const float dyj = KS_GET(dyr[j]);
            if (dxr) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * (g - xhat * b);
                dxr[j] = KS_PUT((dx_flags & KEEL_KBWD_ACCUMULATE) ? KS_GET(dxr[j]) + v : v);
            }
            if (dgamma_part)
                dgamma_part[j] = dgamma_part[j] + dyj * xhat;
        }
    }
}

#endif
