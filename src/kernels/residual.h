/* The residual sum of the fused kernels, one element, exactly as kernels.h defines it:
 * h = (alpha * x) + (lambda * r) (r without lambda), then + bias. The SIMD kernels do the same
 * operations in the same order, 8 or 16 elements at a time. */
#ifndef KEEL_KERNELS_RESIDUAL_H
#define KEEL_KERNELS_RESIDUAL_H

#include <stddef.h>

#include "kernels.h"

/* Element j of a row whose x and r rows start at xr and rr. */
static inline float keel_res_h(const keel_f32_res *res, const float *xr, const float *rr, size_t j)
{
    float v = res->alpha * xr[j];
    v = v + (res->lambda ? res->lambda[j] * rr[j] : rr[j]);
    if (res->bias)
        v = v + res->bias[j];
    return v;
}

/* A row of h: the saved row hr, or (hr NULL) recomputed from the residual's rows xr and rr. */
typedef struct keel_res_row {
    const keel_f32_res *res;
    const float *hr, *xr, *rr;
} keel_res_row;

static inline float keel_res_get(const void *row, size_t j)
{
    const keel_res_row *w = row;
    return w->hr ? w->hr[j] : keel_res_h(w->res, w->xr, w->rr, j);
}

/* The residual's gradients at element j from G, the gradient reaching h (kernels.h, fused
 * backward): dx = alpha * G, dr = lambda * G (or +=, with accumulate), dlambda += G * r,
 * dbias += G. rj: r[j], read by the caller before dx or dr may overwrite r. */
static inline void keel_res_grads(const keel_f32_res *res, const keel_f32_res_grads *out,
                                  float *dxr, float *drr, size_t j, float G, float rj)
{
    float *const dlp = out->parts[KEEL_PART_DLAMBDA], *const dbsp = out->parts[KEEL_PART_DBIAS];
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

#endif
