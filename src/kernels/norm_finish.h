/* The per-row scalar steps between a row's reductions and its elementwise sweep (BatchNorm's:
 * per column, between its column sweeps), shared by every ISA path so they cannot drift apart.
 * A non-finite sum means an Inf or NaN in the row (sums of finite float32 values in double
 * cannot overflow): the statistic becomes NaN, and with it every output of that row. */
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

/* RMSNorm's backward: b_f = (float)(rstd_d * (Sgx / dim)), mean(g * xhat), with a NaN b_f made
 * the one canonical NaN (positive, quiet, no payload: 0x7fc00000). In a row with an Inf or NaN,
 * rstd is that NaN and Sgx a NaN too, often of the other sign (x86's default NaN, from Inf - Inf
 * in the sum, is negative); a multiply of two NaNs returns one of them by operand order, which
 * each path's compiler picks as it likes, so the row's dx came out +NaN on one path and -NaN on
 * another (f16: 0x7e00 against 0xfe00). With b canonical, the sweep's products meet positive
 * NaNs only, and every path (aarch64's default NaN is positive too) gives the same bits. */
static inline float keel_rms_bwd_b(float rstd, double sgx, size_t dim)
{
    const float b = (float)((double)rstd * (sgx / (double)dim));
    return b == b ? b : (float)NAN;
}

/* BatchNorm's backward: a column's finishing step from its five sums over the rows (kernels.h;
 * su = R(u), sd = R(dy), sdu = R(dy * u), sg = R(g), sgu = R(g * u), u = x - mean, g = dy *
 * gamma): the dx sweep's terms a, b and df (delta as a float), and dgamma, dbeta where wanted
 * (not NULL), added to what they hold when accumulate. */
static inline void keel_bn_bwd_finish(double su, double sd, double sdu, double sg, double sgu,
                                      float rstd, size_t rows, int training, float *a, float *b,
                                      float *df, float *dgamma, float *dbeta, int accumulate)
{
    const double n_rows = (double)rows;
    const double rsd = (double)rstd;
    const double delta = training ? su / n_rows : 0.0;
    *a = (float)(sg / n_rows);
    *b = (float)(rsd * ((sgu - delta * sg) / n_rows));
    *df = (float)delta;
    if (dgamma) {
        const double v = rsd * (sdu - delta * sd);
        *dgamma = (float)(accumulate ? (double)*dgamma + v : v);
    }
    if (dbeta)
        *dbeta = (float)(accumulate ? (double)*dbeta + sd : sd);
}

#endif
