/* The per-row scalar steps between a row's reductions and its elementwise sweep, shared by
 * every ISA path so they cannot drift apart. A non-finite sum means an Inf or NaN in the row
 * (sums of finite float32 values in double cannot overflow): the statistic becomes NaN, and
 * with it every output of that row. */
#ifndef KEEL_KERNELS_NORM_FINISH_H
#define KEEL_KERNELS_NORM_FINISH_H

#include <math.h>
#include <stddef.h>

/* LayerNorm: the mean from the row sum R(x). */
static inline double keel_ln_mean(double sum, size_t dim)
{
    return isfinite(sum) ? sum / (double)dim : (double)NAN;
}

/* LayerNorm: rstd from the centred sum of squares R((x - mean)^2). */
static inline float keel_ln_rstd(double centred_ss, size_t dim, float eps)
{
    return (float)(1.0 / sqrt(centred_ss / (double)dim + (double)eps));
}

/* RMSNorm: rstd from R(x * x). */
static inline float keel_rms_rstd(double ss, size_t dim, float eps)
{
    return isfinite(ss) ? (float)(1.0 / sqrt(ss / (double)dim + (double)eps)) : (float)NAN;
}

#endif
