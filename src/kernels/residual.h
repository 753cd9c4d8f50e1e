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

#endif
