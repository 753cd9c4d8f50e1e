#include "gamma_plus_one.h"

#include <stdint.h>

#include "error.h"

keel_status keel_gamma_plus_one(keel_ctx *ctx, const char *who, size_t dim, const float *gamma,
                                unsigned flags, const float **weight)
{
    *weight = gamma;
    if (!(flags & KEEL_FLAG_GAMMA_PLUS_ONE) || !gamma)
        return KEEL_OK;
    if (dim > SIZE_MAX / 2 / sizeof(float))
        return keel_fail(KEEL_EOVERFLOW, "%s: dim (%zu) too large for the (1 + gamma) weights", who, dim);
    /* Twice dim: SmoothQuant folding (norm_common.c) later asks the same memory for 2 * dim
     * floats and folds w / smooth into it in place; had the buffer to grow then, w would be
     * freed under it. */
    float *w = keel_ctx_params(ctx, 2 * dim, who);
    if (!w)
        return KEEL_ENOMEM;
    for (size_t j = 0; j < dim; j++)
        w[j] = 1.0f + gamma[j];
    *weight = w;
    return KEEL_OK;
}
