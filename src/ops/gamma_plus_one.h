/* Gemma's RMSNorm weight, (1 + gamma), as an option of the RMSNorm operators rather than a
 * code path of their kernels: the operator materialises w[j] = (float)(1.0f + gamma[j]) once
 * per call in the context's parameter memory and hands w to the kernels as gamma. */
#ifndef KEEL_OPS_GAMMA_PLUS_ONE_H
#define KEEL_OPS_GAMMA_PLUS_ONE_H

#include "ctx.h"

/* *weight = gamma without KEEL_FLAG_GAMMA_PLUS_ONE in flags; with it, 1 + gamma (NULL when
 * gamma is NULL: a weight of 1). KEEL_ENOMEM / KEEL_EOVERFLOW (message recorded) on failure. */
keel_status keel_gamma_plus_one(keel_ctx *ctx, const char *who, size_t dim, const float *gamma,
                                unsigned flags, const float **weight);

#endif
