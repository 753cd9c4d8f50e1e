/* Fused residual add + RMSNorm, float32, portable C: the residual of kernels.h, then exactly
 * the RMSNorm of f32_rmsnorm__scalar.c on the float h (see f32_add_layernorm__scalar.c for why
 * h is recomputed in every sweep and stored by the last). */
#include "kernels.h"
#include "norm_finish.h"
#include "reduce_order.h"
#include "residual.h"

static inline float h_at(const keel_f32_res *res, const float *hr, const float *xr,
                         const float *rr, size_t j)
{
    return hr ? hr[j] : keel_res_h(res, xr, rr, j);
}

static float row_rstd(const keel_f32_res *res, const float *hr, const float *xr,
                      const float *rr, size_t dim, float eps)
{
    double lane[KEEL_LANES];
    keel_lanes_zero(lane);
    for (size_t j = 0; j < dim; j++) {
        const double v = (double)h_at(res, hr, xr, rr, j);
        lane[j % KEEL_LANES] = lane[j % KEEL_LANES] + v * v;
    }
    return keel_rms_rstd(keel_reduce16(lane), dim, eps);
}

void keel_f32_add_rmsnorm_fwd__scalar(size_t rows, size_t dim, const keel_f32_res *res,
                                      float *h, size_t h_stride, float *y, size_t y_stride,
                                      const float *gamma, float eps, float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = res->x + r * res->x_stride, *rr = res->r + r * res->r_stride;
        float *hr = h ? h + r * h_stride : NULL;
        float *yr = y + r * y_stride;
        const float rs = row_rstd(res, NULL, xr, rr, dim, eps);
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

void keel_f32_add_rmsnorm_bwd__scalar(size_t rows, size_t dim, const float *dy,
                                      size_t dy_stride, const float *dh, size_t dh_stride,
                                      const keel_f32_res *res, const float *h, size_t h_stride,
                                      const float *rstd, const float *gamma, float eps,
                                      const keel_f32_res_grads *out)
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
        const float rs = rstd ? rstd[r] : row_rstd(res, hr, xr, rr, dim, eps);
        float b = 0.0f;
        if (want_g) {
            double sgx[KEEL_LANES];
            keel_lanes_zero(sgx);
            for (size_t j = 0; j < dim; j++) {
                const float g = gamma ? dyr[j] * gamma[j] : dyr[j];
                sgx[j % KEEL_LANES] =
                    sgx[j % KEEL_LANES] + (double)g * (double)h_at(res, hr, xr, rr, j);
            }
            b = keel_rms_bwd_b(rs, keel_reduce16(sgx), dim);
        }
        float *dxr = out->dx ? out->dx + r * out->dx_stride : NULL;
        float *drr = out->dr ? out->dr + r * out->dr_stride : NULL;
        for (size_t j = 0; j < dim; j++) {
            const float xhat = h_at(res, hr, xr, rr, j) * rs;
            const float dyj = dyr[j];
            if (want_g) {
                const float g = gamma ? dyj * gamma[j] : dyj;
                const float v = rs * (g - xhat * b);
                const float G = dhr ? dhr[j] + v : v;
                const float rj = dlp ? rr[j] : 0.0f;
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
        }
    }
}
