/*
 * keel_ref.h - the float64 reference of every keel operation: the oracle of the tests and of
 * `keel check`, never a fast path.
 *
 * It is the textbook formula evaluated in double, one scalar loop per step, so that a reader can
 * check it against the definitions in keel.h line by line:
 *   LayerNorm: mean = sum(x)/dim, var = sum((x-mean)^2)/dim (biased, two-pass, centred),
 *              rstd = 1/sqrt(var+eps), xhat = (x-mean)*rstd, y = xhat*gamma + beta
 *              dx = rstd*(g - mean(g) - xhat*mean(g*xhat)) with g = dy*gamma,
 *              dgamma = sum over rows of dy*xhat, dbeta = sum over rows of dy
 *   RMSNorm:   rstd = 1/sqrt(sum(x^2)/dim + eps), xhat = x*rstd, y = xhat*gamma
 *              dx = rstd*(g - xhat*mean(g*xhat)), dgamma = sum over rows of dy*xhat
 * Row sums are compensated (Neumaier), so a reference statistic is accurate to a few double
 * roundings whatever the width and offset: 2^-53 relative is ~10^9 times finer than the float32
 * results it judges. The backward always recomputes the statistics from x in double.
 *
 * The public rule for non-finite input is part of the reference: a row holding NaN or Inf has
 * NaN for all its statistics and outputs (the plain formulas would give mean = Inf for one Inf).
 *
 * Two layers: *_f64 functions take dense double arrays (the gradient check perturbs inputs in
 * double); the others take the float32 strided inputs keel takes, convert them to double and
 * call the *_f64 ones. Outputs are always dense double arrays; any output pointer may be NULL.
 * gamma NULL means 1, beta NULL means 0. Functions returning int return 0, or -1 when memory
 * for a scratch row or a converted copy ran out (then outputs are unspecified).
 */
#ifndef KEEL_REF_H
#define KEEL_REF_H

#include <stddef.h>

/* Outputs of a reference backward; every pointer may be NULL (not computed). */
typedef struct keel_ref_grads {
    double *dx;         /* rows * dim, dense */
    double *dgamma;     /* dim: sum over rows of dy * xhat */
    double *dbeta;      /* dim: sum over rows of dy (LayerNorm only) */
    double *dgamma_mag; /* dim: sum over rows of |dy * xhat|, the size a float sum rounds against */
    double *dbeta_mag;  /* dim: sum over rows of |dy| (LayerNorm only) */
} keel_ref_grads;

/* ---- dense double inputs ---- */

void keel_ref_layernorm_fwd_f64(size_t rows, size_t dim, const double *x,
                                const double *gamma, const double *beta, double eps,
                                double *y, double *mean, double *rstd);

int keel_ref_layernorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                               const double *gamma, double eps, const keel_ref_grads *out);

void keel_ref_rmsnorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *gamma,
                              double eps, double *y, double *rstd);

int keel_ref_rmsnorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                             const double *gamma, double eps, const keel_ref_grads *out);

/* ---- float32 strided inputs, as keel takes them ---- */

int keel_ref_layernorm_fwd(size_t rows, size_t dim, const float *x, size_t x_stride,
                           const float *gamma, const float *beta, float eps,
                           double *y, double *mean, double *rstd);

int keel_ref_layernorm_bwd(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                           const float *x, size_t x_stride, const float *gamma, float eps,
                           const keel_ref_grads *out);

int keel_ref_rmsnorm_fwd(size_t rows, size_t dim, const float *x, size_t x_stride,
                         const float *gamma, float eps, double *y, double *rstd);

int keel_ref_rmsnorm_bwd(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                         const float *x, size_t x_stride, const float *gamma, float eps,
                         const keel_ref_grads *out);

#endif /* KEEL_REF_H */
