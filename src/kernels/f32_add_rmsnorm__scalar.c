/* Fused residual add + RMSNorm, float32, portable C: the residual of kernels.h, then exactly
 * the RMSNorm of f32_rmsnorm__scalar.c on the float h (see f32_add_layernorm__scalar.c for why
 * h is recomputed in every sweep and stored by the last). */
#include "kernels.h"
#include "residual.h"

#define KS_T float
#define KS_GET(v) (v)
#define KS_PUT(f) (f)
#include "rmsnorm_rows__scalar.h" /* the row sums (rms_row_rstd, rms_row_sweep1) */

void keel_f32_add_rmsnorm_fwd__scalar(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                      size_t h_stride, float *y, size_t y_stride,
                                      const float *gamma, float eps, float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = res->x + r * res->x_stride, *rr = res->r + r * res->r_stride;
        float *hr = h ? h + r * h_stride : NULL;
        float *yr = y + r * y_stride;
        const keel_res_row w = {res, NULL, xr, rr};
        const float rs = rms_row_rstd(keel_res_get, &w, dim, eps);
        for (size_t j = 0; j < dim; j++) {
            const float hv = keel_res_h(res, xr, rr, j);
            float v = hv * rs;
            if (gamma)
                v = v * gamma[j];
            if (hr)
                hr[j] = hv;
            yr[j] = v;
        }
        if (rstd)
            rstd[r] = rs;
    }
}

void keel_f32_add_rmsnorm_bwd__scalar(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                      const float *dh, size_t dh_stride, const keel_f32_res *res,
                                      const float *h, size_t h_stride, const float *rstd,
                                      const float *gamma, float eps, const keel_f32_res_grads *out)
{
    float *const dgp = out->parts[KEEL_PART_DGAMMA];
    float *const dlp = out->parts[KEEL_PART_DLAMBDA], *const dbsp = out->parts[KEEL_PART_DBIAS];
    const int want_g = out->dx || out->dr || dlp || dbsp;
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride;
        const float *dhr = dh ? dh + r * dh_stride : NULL;
        const float *hr = h ? h + r * h_stride : NULL;
        const float *xr = res->x ? res->x + r * res->x_stride : NULL;
        const float *rr = res->r ? res->r + r * res->r_stride : NULL;
        const keel_res_row w = {res, hr, xr, rr};
        const float rs = rstd ? rstd[r] : rms_row_rstd(keel_res_get, &w, dim, eps);
        const float b =
            want_g ? rms_row_sweep1(keel_res_get, &w, ks_get, dyr, gamma, dim, rs) : 0.0f;
        float *dxr = out->dx ? out->dx + r * out->dx_stride : NULL;
        float *drr = out->dr ? out->dr + r * out->dr_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xhat = keel_res_get(&w, j) * rs;
            const float dyj = dyr[j];
            if (want_g) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * (g - xhat * b);
                const float G = dhr ? dhr[j] + v : v;
                const float rj = dlp ? rr[j] : 0.0f;
                keel_res_grads(res, out, dxr, drr, j, G, rj);
            }
            if (dgp)
                dgp[j] = dgp[j] + dyj * xhat;
        }
    }
}
