/*
 * keel_ref_block.h - the float64 reference of keel's transformer-block operations (keel.h,
 * "Transformer blocks"): the oracle of test_block_* and of `keel check`, never a fast path.
 * Textbook formulas in double, one loop per step, on dense double arrays (rows x dim, row
 * major); every output pointer may be NULL (not computed); gamma/lambda NULL mean 1,
 * beta/bias NULL mean 0. Functions returning int return 0, or -1 when scratch memory ran out.
 *
 *   residual:  h = alpha*x + lambda*r + bias;  from the gradient g reaching h:
 *              dx = alpha*g, dr = lambda*g, dlambda = sum_rows g*r, dbias = sum_rows g
 *   add+norm:  y = LayerNorm(h) or RMSNorm(h) (keel_ref.h), g = dh + the norm's dx
 *   BatchNorm: per column over the rows: training uses the batch mean and biased variance,
 *              dx = rstd*(g - mean_rows(g) - xhat*mean_rows(g*xhat)), g = dy*gamma;
 *              inference uses given statistics, dx = rstd*g
 *   DyT:       y = gamma*tanh(alpha*x) + beta; s = sech^2(alpha*x):
 *              dx = dy*gamma*alpha*s, dalpha = sum dy*gamma*x*s, dgamma = sum_rows dy*tanh,
 *              dbeta = sum_rows dy
 * NaN/Inf: as in keel_ref.h, a non-finite value in a row (a column, for BatchNorm statistics)
 * makes that row's (column's) statistics and normalized outputs NaN.
 */
#ifndef KEEL_REF_BLOCK_H
#define KEEL_REF_BLOCK_H

#include <stddef.h>

#include "keel_ref.h"

/* A dense double copy of rows x dim floats stored `stride` apart (NULL in: NULL out, and NULL
 * when memory ran out: check src before concluding). The caller frees it. */
double *keel_ref_to_double(const float *src, size_t rows, size_t dim, size_t stride);

/* ---- residual and fused add + norm ---------------------------------------------------------- */

void keel_ref_residual_f64(size_t rows, size_t dim, const double *x, const double *r,
                           double alpha, const double *lambda, const double *bias, double *h);

typedef struct keel_ref_res_grads {
    double *dx, *dr;                  /* rows x dim */
    double *dlambda, *dbias;          /* dim */
    double *dlambda_mag, *dbias_mag;  /* dim: sums of |terms| (the size a float sum rounds to) */
} keel_ref_res_grads;

/* The residual's gradients from g (rows x dim); r is needed for dlambda only. */
void keel_ref_residual_bwd_f64(size_t rows, size_t dim, const double *g, const double *r,
                               double alpha, const double *lambda, const keel_ref_res_grads *out);

/* y = norm(h) with h = the residual (h, y, mean, rstd each optional). */
void keel_ref_add_layernorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *r,
                                    double alpha, const double *lambda, const double *bias,
                                    const double *gamma, const double *beta, double eps,
                                    double *h, double *y, double *mean, double *rstd);
void keel_ref_add_rmsnorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *r,
                                  double alpha, const double *lambda, const double *bias,
                                  const double *gamma, double eps, double *h, double *y,
                                  double *rstd);

/* The backward of the fused op from dy and dh (NULL: 0) at the point h (the h the forward
 * normalized: pass keel's own float h to judge keel, or the exact residual): g = dh + the norm's
 * dx; the norm's dgamma/dbeta (and mags) into norm_out (its dx field is ignored), the residual's
 * gradients into res_out (r needed for dlambda). g (rows x dim, optional) receives g. */
int keel_ref_add_layernorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *dh,
                                   const double *h, const double *r, double alpha,
                                   const double *lambda, const double *gamma, double eps,
                                   const keel_ref_grads *norm_out,
                                   const keel_ref_res_grads *res_out, double *g);
int keel_ref_add_rmsnorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *dh,
                                 const double *h, const double *r, double alpha,
                                 const double *lambda, const double *gamma, double eps,
                                 const keel_ref_grads *norm_out,
                                 const keel_ref_res_grads *res_out, double *g);

/* ---- BatchNorm ---------------------------------------------------------------------------- */

/* training: batch statistics (mean, rstd, the biased and the unbiased variance per column are
 * outputs); inference: run_mean, run_var (dim each) give them. */
void keel_ref_batchnorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *gamma,
                                const double *beta, double eps, int training,
                                const double *run_mean, const double *run_var, double *y,
                                double *mean, double *rstd, double *var, double *var_unbiased);

/* dx, dgamma, dbeta (and mags) into out. */
int keel_ref_batchnorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                               const double *gamma, double eps, int training,
                               const double *run_mean, const double *run_var,
                               const keel_ref_grads *out);

/* ---- DyT ------------------------------------------------------------------------------------ */

void keel_ref_dyt_fwd_f64(size_t rows, size_t dim, const double *x, double alpha,
                          const double *gamma, const double *beta, double *y);

typedef struct keel_ref_dyt_grads {
    double *dx;                     /* rows x dim */
    double *dalpha, *dalpha_mag;    /* one value each */
    double *dgamma, *dbeta;         /* dim */
    double *dgamma_mag, *dbeta_mag; /* dim */
} keel_ref_dyt_grads;

void keel_ref_dyt_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                          double alpha, const double *gamma, const keel_ref_dyt_grads *out);

#endif /* KEEL_REF_BLOCK_H */
