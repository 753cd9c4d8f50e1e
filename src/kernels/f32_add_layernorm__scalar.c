/* Fused residual add + LayerNorm, float32, portable C: the residual of kernels.h, then exactly
 * the LayerNorm of f32_layernorm__scalar.c on the float h. Every sweep recomputes h from x and
 * r (cheap: the row is in cache) and h is stored by the last sweep only, so h and y may
 * overwrite x or r. The SIMD kernels must give exactly these bits. */
#include "kernels.h"
#include "norm_finish.h"
#include "reduce_order.h"
#include "residual.h"

/* Element j of row hr (the saved h) or, without it, recomputed from the residual. */
static inline float h_at(const keel_f32_res *res, const float *hr, const float *xr,
                         const float *rr, size_t j)
{
    return hr ? hr[j] : keel_res_h(res, xr, rr, j);
}

/* The LayerNorm statistics of one row of h (kernels.h: mean_d, rstd_f). */
static double row_stats(const keel_f32_res *res, const float *hr, const float *xr,
                        const float *rr, size_t dim, float eps, float *rstd)
{
    double lane[KEEL_LANES];
    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++)
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + (double)h_at(res, hr, xr, rr, j);
    const double mean = keel_ln_mean(keel_reduce16(lane), dim);
    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++) {
        const double t = (double)h_at(res, hr, xr, rr, j) - mean;
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + t * t;
    }
    *rstd = keel_ln_rstd(keel_reduce16(lane), dim, eps);
    return mean;
}

void keel_f32_add_layernorm_fwd__scalar(size_t rows, size_t dim, const keel_f32_res *res,
                                        float *h, size_t h_stride, float *y, size_t y_stride,
                                        const float *gamma, const float *beta, float eps,
                                        float *mean, float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = res->x + r * res->x_stride, *rr = res->r + r * res->r_stride;
        float *hr = h ? h + r * h_stride : NULL;
        float *yr = y + r * y_stride;
        float rs;
        const double mean_d = row_stats(res, NULL, xr, rr, dim, eps, &rs);
        const float hi = (float)mean_d;
        const float lo = (float)(mean_d - (double)hi);
        for (size_t j = 0; j < dim; j++) {
            const float hv = keel_res_h(res, xr, rr, j);
            float v = ((hv - hi) - lo) * rs;
            if (gamma)
                v = v * gamma[j];
            if (beta)
                v = v + beta[j];
            if (hr)
                hr[j] = hv;
            yr[j] = v;
        }
        if (mean)
            mean[r] = hi;
        if (rstd)
            rstd[r] = rs;
    }
}

void keel_f32_add_layernorm_bwd__scalar(size_t rows, size_t dim, const float *dy,
                                        size_t dy_stride, const float *dh, size_t dh_stride,
                                        const keel_f32_res *res, const float *h, size_t h_stride,
                                        const float *mean, const float *rstd, const float *gamma,
                                        float eps, const keel_f32_res_grads *out)
{
    float *const dgp = out->parts[KEEL_PART_DGAMMA], *const dbp = out->parts[KEEL_PART_DBETA];
    float *const dlp = out->parts[KEEL_PART_DLAMBDA], *const dbsp = out->parts[KEEL_PART_DBIAS];
    const int want_g = out->dx || out->dr || dlp || dbsp;
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride;
        const float *dhr = dh ? dh + r * dh_stride : NULL;
        const float *hr = h ? h + r * h_stride : NULL;
        const float *xr = res->x ? res->x + r * res->x_stride : NULL;
        const float *rr = res->r ? res->r + r * res->r_stride : NULL;
        float m, rs;
        if (mean) {
            m = mean[r];
            rs = rstd[r];
        } else {
            m = (float)row_stats(res, hr, xr, rr, dim, eps, &rs);
        }
        double sx[KEEL_LANES], sg[KEEL_LANES], sgu[KEEL_LANES];
        keel_lanes_zero(sx);
        keel_lanes_zero(sg);
        keel_lanes_zero(sgu);
        for (size_t j = 0; j < dim; j++) {
            const double u = (double)h_at(res, hr, xr, rr, j) - (double)m;
            sx[j % KEEL_LANES] = sx[j % KEEL_LANES] + u;
            if (want_g) {
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

        float *dxr = out->dx ? out->dx + r * out->dx_stride : NULL;
        float *drr = out->dr ? out->dr + r * out->dr_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float hv = h_at(res, hr, xr, rr, j);
            const float xhat = ((hv - m) - df) * rs;
            const float dyj = dyr[j];
            if (want_g) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * ((g - a) - xhat * b);
                const float G = dhr ? dhr[j] + v : v;
                const float rj = dlp ? rr[j] : 0.0f; /* read before dx/dr may overwrite r */
                if (dxr) {
                    const float t = res->alpha * G;
                    dxr[j] = out->accumulate ? dxr[j] + t : t;
                }
                if (drr) {
                    const float t = res->lambda ? res->lambda[j] * G : G;
                    drr[j] = out->accumulate ? drr[j] + t : t;
                }
                if (dlp)
                    dlp[j] = dlp[j] + G * rj;
                if (dbsp)
                    dbsp[j] = dbsp[j] + G;
            }
            if (dgp)
                dgp[j] = dgp[j] + dyj * xhat;
            if (dbp)
                dbp[j] = dbp[j] + dyj;
        }
    }
}
