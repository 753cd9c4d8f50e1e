/* LayerNorm, portable C, over rows of one storage type: the formulas and reduction order of
 * kernels.h, one row at a time. The SIMD kernels must give exactly these bits. A file defines
 * KS_T (the element type), KS_GET(v) (an element as float: exact) and KS_PUT(f) (a float
 * stored: rounded once) and includes this once (the row sums take any row: the fused add +
 * LayerNorm's h too): f32_layernorm__scalar.c for float32 rows,
 * bf16_norms__scalar.c and f16_norms__scalar.c for 16-bit ones, whose results are then those of
 * the float32 kernels on the widened rows, rounded once. */
#ifndef KEEL_KERNELS_LAYERNORM_ROWS_SCALAR_H
#define KEEL_KERNELS_LAYERNORM_ROWS_SCALAR_H

#include "kernels.h"
#include "norm_finish.h"
#include "reduce_order.h"
#include "row_get__scalar.h"

/* mean_d in double, rstd as float (see kernels.h, LayerNorm forward). */
static inline double ln_row_stats(ks_get_fn *get, const void *row, size_t dim, float eps,
                                  float *rstd)
{
    double lane[KEEL_LANES];
    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++)
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + (double)get(row, j);
    const double mean = keel_ln_mean(keel_reduce16(lane), dim);

    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++) {
        const double t = (double)get(row, j) - mean;
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + t * t;
    }
    *rstd = keel_ln_rstd(keel_reduce16(lane), dim, eps);
    return mean;
}

/* The row constants of the backward (kernels.h): df, the part of the mean the float32 mean m
 * lost; a = mean(g) and b = mean(g * xhat) with g = dy * gamma (dy alone without gamma), both
 * 0 unless want_g (then dy is not read). */
typedef struct ln_bwd_row {
    float a, b, df;
} ln_bwd_row;

static inline ln_bwd_row ln_row_sweep1(ks_get_fn *get, const void *row, ks_get_fn *dy_get,
                                       const void *dy_row, const float *gamma, size_t dim, float m,
                                       float rs, int want_g)
{
    double sx[KEEL_LANES], sg[KEEL_LANES], sgu[KEEL_LANES];
    keel_lanes_zero(sx);
    keel_lanes_zero(sg);
    keel_lanes_zero(sgu);
    for (size_t j = 0; j < dim; j++) {
        const double u = (double)get(row, j) - (double)m;
        sx[j % KEEL_LANES] = sx[j % KEEL_LANES] + u;
        if (want_g) {
            const float dyj = dy_get(dy_row, j);
            const float g = gamma ? dyj * gamma[j] : dyj;
            sg[j % KEEL_LANES] = sg[j % KEEL_LANES] + (double)g;
            sgu[j % KEEL_LANES] = sgu[j % KEEL_LANES] + (double)g * u;
        }
    }
    const double n = (double)dim;
    const double delta = keel_reduce16(sx) / n;
    const double Sg = keel_reduce16(sg);
    const double Sgu = keel_reduce16(sgu);
    const ln_bwd_row c = {(float)(Sg / n), (float)((double)rs * ((Sgu - delta * Sg) / n)),
                          (float)delta};
    return c;
}

static inline void ln_rows_fwd(size_t rows, size_t dim, const KS_T *x, size_t x_stride, KS_T *y,
                               size_t y_stride, const float *gamma, const float *beta, float eps,
                               float *mean, float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const KS_T *xr = x + r * x_stride;
        KS_T *yr = y + r * y_stride;
        float rs;
        const double mean_d = ln_row_stats(ks_get, xr, dim, eps, &rs);
        /* The mean as a float hi + lo pair: x - hi is exact near the mean (Sterbenz), so the
         * centred value keeps its precision even when the mean is 1e6 standard deviations out. */
        const float hi = (float)mean_d;
        const float lo = (float)(mean_d - (double)hi);
        for (size_t j = 0; j < dim; j++) {
            float v = ((KS_GET(xr[j]) - hi) - lo) * rs;
            if (gamma)
                v = v * gamma[j];
            if (beta)
                v = v + beta[j];
            yr[j] = KS_PUT(v);
        }
        if (mean)
            mean[r] = hi;
        if (rstd)
            rstd[r] = rs;
    }
}

static inline void ln_rows_bwd(size_t rows, size_t dim, const KS_T *dy, size_t dy_stride,
                               const KS_T *x, size_t x_stride, const float *mean, const float *rstd,
                               const float *gamma, float eps, KS_T *dx, size_t dx_stride,
                               int dx_flags, float *dgamma_part, float *dbeta_part)
{
    for (size_t r = 0; r < rows; r++) {
        const KS_T *dyr = dy + r * dy_stride;
        const KS_T *xr = x + r * x_stride;
        float m, rs;
        if (mean) {
            m = mean[r];
            rs = rstd[r];
        } else {
            m = (float)ln_row_stats(ks_get, xr, dim, eps, &rs);
        }
        /* Sweep 1: the part of the mean the float32 mean lost, and mean(g), mean(g * xhat). */
        const ln_bwd_row c = ln_row_sweep1(ks_get, xr, ks_get, dyr, gamma, dim, m, rs, dx != NULL);

        /* Sweep 2: dx and the parameter-gradient partials. */
        KS_T *dxr = dx ? dx + r * dx_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xhat = ((KS_GET(xr[j]) - m) - c.df) * rs;
            const float dyj = KS_GET(dyr[j]);
            if (dxr) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * ((g - c.a) - xhat * c.b);
                dxr[j] = KS_PUT((dx_flags & KEEL_KBWD_ACCUMULATE) ? KS_GET(dxr[j]) + v : v);
            }
            if (dgamma_part)
                dgamma_part[j] = dgamma_part[j] + dyj * xhat;
            if (dbeta_part)
                dbeta_part[j] = dbeta_part[j] + dyj;
        }
    }
}

#endif
