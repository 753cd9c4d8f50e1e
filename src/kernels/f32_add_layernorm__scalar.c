/* Fused residual add + LayerNorm, float32, portable C: the residual of kernels.h, then exactly
 * the LayerNorm of f32_layernorm__scalar.c on the float h. Every sweep recomputes h from x and
 * r (cheap: the row is in cache) and h is stored by the last sweep only, so h and y may
 * overwrite x or r. The SIMD kernels must give exactly these bits. */
#include "kernels.h"
#include "residual.h"

#define KS_T float
#define KS_GET(v) (v)
#define KS_PUT(f) (f)
#include "layernorm_rows__scalar.h" /* the row sums (ln_row_stats, ln_row_sweep1) */

void keel_f32_add_layernorm_fwd__scalar(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                        size_t h_stride, float *y, size_t y_stride,
                                        const float *gamma, const float *beta, float eps,
                                        float *mean, float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = res->x + r * res->x_stride, *rr = res->r + r * res->r_stride;
        float *hr = h ? h + r * h_stride : NULL;
        float *yr = y + r * y_stride;
        float rs;
        const keel_res_row w = {res, NULL, xr, rr};
        const double mean_d = ln_row_stats(keel_res_get, &w, dim, eps, &rs);
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

void keel_f32_add_layernorm_bwd__scalar(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                        const float *dh, size_t dh_stride, const keel_f32_res *res,
                                        const float *h, size_t h_stride, const float *mean,
                                        const float *rstd, const float *gamma, float eps,
                                        const keel_f32_res_grads *out)
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
        const keel_res_row w = {res, hr, xr, rr};
        float m, rs;
        if (mean) {
            m = mean[r];
            rs = rstd[r];
        } else {
            m = (float)ln_row_stats(keel_res_get, &w, dim, eps, &rs);
        }
        const ln_bwd_row c =
            ln_row_sweep1(keel_res_get, &w, ks_get, dyr, gamma, dim, m, rs, want_g);

        float *dxr = out->dx ? out->dx + r * out->dx_stride : NULL;
        float *drr = out->dr ? out->dr + r * out->dr_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xhat = ((keel_res_get(&w, j) - m) - c.df) * rs;
            const float dyj = dyr[j];
            if (want_g) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * ((g - c.a) - xhat * c.b);
                const float G = dhr ? dhr[j] + v : v;
                const float rj = dlp ? rr[j] : 0.0f; /* read before dx/dr may overwrite r */
                keel_res_grads(res, out, dxr, drr, j, G, rj);
            }
            if (dgp)
                dgp[j] = dgp[j] + dyj * xhat;
            if (dbp)
                dbp[j] = dbp[j] + dyj;
        }
    }
}
