/* BatchNorm, float32, portable C: the scalar path, and the definition the SIMD kernels
 * (f32_batchnorm_simd.h: AVX2, AVX-512, NEON) match bit for bit: per-feature statistics over
 * the rows of a batch (kernels.h). Each column has its own double accumulator and adds the rows in
 * increasing order; the loops run across columns, so a vectorizing compiler keeps every
 * column's order and its bits. Columns go in chunks so that the accumulators of a chunk stay
 * in L1 while the rows stream past. */
#include "kernels.h"
#include "norm_finish.h"

#define BN_CHUNK 256

void keel_f32_batchnorm_stats__scalar(size_t rows, size_t cols, const float *x, size_t x_stride,
                                      double *mean, double *m2)
{
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK;
        double *s = mean + c0, *q = m2 + c0;
        for (size_t c = 0; c < n; c++)
            s[c] = 0.0;
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0;
            for (size_t c = 0; c < n; c++)
                s[c] = s[c] + (double)xr[c];
        }
        for (size_t c = 0; c < n; c++) {
            s[c] = keel_ln_mean(s[c], rows);
            q[c] = 0.0;
        }
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0;
            for (size_t c = 0; c < n; c++) {
                const double t = (double)xr[c] - s[c];
                q[c] = q[c] + t * t;
            }
        }
    }
}

void keel_f32_batchnorm_apply__scalar(size_t rows, size_t cols, const float *x, size_t x_stride,
                                      float *y, size_t y_stride, const float *hi, const float *lo,
                                      const float *rstd, const float *gamma, const float *beta)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        for (size_t c = 0; c < cols; c++) {
            float v = xr[c] - hi[c];
            if (lo)
                v = v - lo[c];
            v = v * rstd[c];
            if (gamma)
                v = v * gamma[c];
            if (beta)
                v = v + beta[c];
            yr[c] = v;
        }
    }
}

void keel_f32_batchnorm_bwd__scalar(size_t rows, size_t cols, const float *dy, size_t dy_stride,
                                    const float *x, size_t x_stride, const float *mean,
                                    const float *rstd, const float *gamma, int training,
                                    float *dx, size_t dx_stride, int accumulate_dx,
                                    float *dgamma, float *dbeta, int accumulate_dparams)
{
    double su[BN_CHUNK], sd[BN_CHUNK], sdu[BN_CHUNK], sg[BN_CHUNK], sgu[BN_CHUNK];
    float a[BN_CHUNK], b[BN_CHUNK], df[BN_CHUNK];
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK;
        const float *m = mean + c0, *rs = rstd + c0, *gm = gamma ? gamma + c0 : NULL;
        for (size_t c = 0; c < n; c++)
            su[c] = sd[c] = sdu[c] = sg[c] = sgu[c] = 0.0;
        /* sweep 1: the column sums */
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
            for (size_t c = 0; c < n; c++) {
                const double u = (double)xr[c] - (double)m[c];
                const float g = gm ? dyr[c] * gm[c] : dyr[c];
                su[c] = su[c] + u;
                sd[c] = sd[c] + (double)dyr[c];
                sdu[c] = sdu[c] + (double)dyr[c] * u;
                sg[c] = sg[c] + (double)g;
                sgu[c] = sgu[c] + (double)g * u;
            }
        }
        for (size_t c = 0; c < n; c++)
            keel_bn_bwd_finish(su[c], sd[c], sdu[c], sg[c], sgu[c], rs[c], rows, training, &a[c],
                               &b[c], &df[c], dgamma ? dgamma + c0 + c : NULL,
                               dbeta ? dbeta + c0 + c : NULL, accumulate_dparams);
        if (!dx)
            continue;
        /* sweep 2: dx */
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
            float *dxr = dx + r * dx_stride + c0;
            for (size_t c = 0; c < n; c++) {
                const float g = gm ? dyr[c] * gm[c] : dyr[c];
                float v;
                if (training) {
                    const float xhat = ((xr[c] - m[c]) - df[c]) * rs[c];
                    v = rs[c] * ((g - a[c]) - xhat * b[c]);
                } else {
                    v = rs[c] * g;
                }
                dxr[c] = accumulate_dx ? dxr[c] + v : v;
            }
        }
    }
}
