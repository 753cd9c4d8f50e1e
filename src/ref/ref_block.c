/* The float64 reference of the transformer-block operations (see keel_ref_block.h): readable,
 * not fast. The norms themselves come from ref_norm.c (keel_ref.h). */
#include "keel_ref_block.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double param(const double *p, size_t j, double absent) { return p ? p[j] : absent; }

static void zero(double *p, size_t n)
{
    if (p)
        memset(p, 0, n * sizeof(double));
}

double *keel_ref_to_double(const float *src, size_t rows, size_t dim, size_t stride)
{
    if (!src)
        return NULL;
    double *d = malloc((rows * dim > 0 ? rows * dim : 1) * sizeof(double));
    if (!d)
        return NULL;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++)
            d[r * dim + j] = (double)src[r * stride + j];
    return d;
}

/* ---- residual ----------------------------------------------------------------------------- */

void keel_ref_residual_f64(size_t rows, size_t dim, const double *x, const double *r,
                           double alpha, const double *lambda, const double *bias, double *h)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < dim; j++) {
            const size_t k = i * dim + j;
            h[k] = alpha * x[k] + param(lambda, j, 1.0) * r[k] + param(bias, j, 0.0);
        }
}

void keel_ref_residual_bwd_f64(size_t rows, size_t dim, const double *g, const double *r,
                               double alpha, const double *lambda, const keel_ref_res_grads *out)
{
    zero(out->dlambda, dim);
    zero(out->dbias, dim);
    zero(out->dlambda_mag, dim);
    zero(out->dbias_mag, dim);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < dim; j++) {
            const size_t k = i * dim + j;
            if (out->dx)
                out->dx[k] = alpha * g[k];
            if (out->dr)
                out->dr[k] = param(lambda, j, 1.0) * g[k];
            if (out->dlambda)
                out->dlambda[j] += g[k] * r[k];
            if (out->dlambda_mag)
                out->dlambda_mag[j] += fabs(g[k] * r[k]);
            if (out->dbias)
                out->dbias[j] += g[k];
            if (out->dbias_mag)
                out->dbias_mag[j] += fabs(g[k]);
        }
}

/* ---- fused add + norm ----------------------------------------------------------------------- */

void keel_ref_add_layernorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *r,
                                    double alpha, const double *lambda, const double *bias,
                                    const double *gamma, const double *beta, double eps,
                                    double *h, double *y, double *mean, double *rstd)
{
    double *hh = h ? h : malloc((rows * dim > 0 ? rows * dim : 1) * sizeof(double));
    if (!hh)
        return;
    keel_ref_residual_f64(rows, dim, x, r, alpha, lambda, bias, hh);
    keel_ref_layernorm_fwd_f64(rows, dim, hh, gamma, beta, eps, y, mean, rstd);
    if (!h)
        free(hh);
}

void keel_ref_add_rmsnorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *r,
                                  double alpha, const double *lambda, const double *bias,
                                  const double *gamma, double eps, double *h, double *y,
                                  double *rstd)
{
    double *hh = h ? h : malloc((rows * dim > 0 ? rows * dim : 1) * sizeof(double));
    if (!hh)
        return;
    keel_ref_residual_f64(rows, dim, x, r, alpha, lambda, bias, hh);
    keel_ref_rmsnorm_fwd_f64(rows, dim, hh, gamma, eps, y, rstd);
    if (!h)
        free(hh);
}

static int add_norm_bwd(int rms, size_t rows, size_t dim, const double *dy, const double *dh,
                        const double *h, const double *r, double alpha, const double *lambda,
                        const double *gamma, double eps, const keel_ref_grads *norm_out,
                        const keel_ref_res_grads *res_out, double *g_out)
{
    double *g = g_out ? g_out : malloc((rows * dim > 0 ? rows * dim : 1) * sizeof(double));
    if (!g)
        return -1;
    keel_ref_grads n = *norm_out;
    n.dx = g;
    int rc = rms ? keel_ref_rmsnorm_bwd_f64(rows, dim, dy, h, gamma, eps, &n)
                 : keel_ref_layernorm_bwd_f64(rows, dim, dy, h, gamma, eps, &n);
    if (rc == 0) {
        if (dh)
            for (size_t k = 0; k < rows * dim; k++)
                g[k] += dh[k];
        keel_ref_residual_bwd_f64(rows, dim, g, r, alpha, lambda, res_out);
    }
    if (!g_out)
        free(g);
    return rc;
}

int keel_ref_add_layernorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *dh,
                                   const double *h, const double *r, double alpha,
                                   const double *lambda, const double *gamma, double eps,
                                   const keel_ref_grads *norm_out,
                                   const keel_ref_res_grads *res_out, double *g)
{
    return add_norm_bwd(0, rows, dim, dy, dh, h, r, alpha, lambda, gamma, eps, norm_out, res_out, g);
}

int keel_ref_add_rmsnorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *dh,
                                 const double *h, const double *r, double alpha,
                                 const double *lambda, const double *gamma, double eps,
                                 const keel_ref_grads *norm_out,
                                 const keel_ref_res_grads *res_out, double *g)
{
    return add_norm_bwd(1, rows, dim, dy, dh, h, r, alpha, lambda, gamma, eps, norm_out, res_out, g);
}

/* ---- BatchNorm ---------------------------------------------------------------------------- */

/* Column j's batch statistics: two passes, centred; NaN for a column holding NaN or Inf. */
static void column_stats(size_t rows, size_t dim, const double *x, size_t j, double *mean,
                         double *m2)
{
    double s = 0.0;
    for (size_t i = 0; i < rows; i++) {
        if (!isfinite(x[i * dim + j])) {
            *mean = *m2 = NAN;
            return;
        }
        s += x[i * dim + j];
    }
    /* rows of a test are few hundred at most: a plain double sum is ~1e-14 relative, 10^6
     * times finer than the float32 results it judges */
    const double m = s / (double)rows;
    double q = 0.0;
    for (size_t i = 0; i < rows; i++)
        q += (x[i * dim + j] - m) * (x[i * dim + j] - m);
    *mean = m;
    *m2 = q;
}

/* The statistics a pass of mode `training` uses for column j. */
static void bn_stats(size_t rows, size_t dim, const double *x, size_t j, double eps,
                     int training, const double *run_mean, const double *run_var, double *mean,
                     double *rstd, double *var, double *var_u)
{
    if (training) {
        double m2;
        column_stats(rows, dim, x, j, mean, &m2);
        *var = m2 / (double)rows;
        *var_u = rows > 1 ? m2 / (double)(rows - 1) : NAN;
    } else {
        *mean = run_mean[j];
        *var = *var_u = run_var[j];
    }
    *rstd = 1.0 / sqrt(*var + eps);
}

void keel_ref_batchnorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *gamma,
                                const double *beta, double eps, int training,
                                const double *run_mean, const double *run_var, double *y,
                                double *mean, double *rstd, double *var, double *var_unbiased)
{
    for (size_t j = 0; j < dim; j++) {
        double m, rs, v, vu;
        bn_stats(rows, dim, x, j, eps, training, run_mean, run_var, &m, &rs, &v, &vu);
        if (mean)
            mean[j] = m;
        if (rstd)
            rstd[j] = rs;
        if (var)
            var[j] = v;
        if (var_unbiased)
            var_unbiased[j] = vu;
        if (y)
            for (size_t i = 0; i < rows; i++)
                y[i * dim + j] = (x[i * dim + j] - m) * rs * param(gamma, j, 1.0) + param(beta, j, 0.0);
    }
}

int keel_ref_batchnorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                               const double *gamma, double eps, int training,
                               const double *run_mean, const double *run_var,
                               const keel_ref_grads *out)
{
    for (size_t j = 0; j < dim; j++) {
        double m, rs, v, vu;
        bn_stats(rows, dim, x, j, eps, training, run_mean, run_var, &m, &rs, &v, &vu);
        const double gm = param(gamma, j, 1.0);
        double sg = 0.0, sgx = 0.0, dg = 0.0, db = 0.0, dgm = 0.0, dbm = 0.0;
        for (size_t i = 0; i < rows; i++) {
            const double xhat = (x[i * dim + j] - m) * rs, d = dy[i * dim + j];
            sg += d * gm;
            sgx += d * gm * xhat;
            dg += d * xhat;
            dgm += fabs(d * xhat);
            db += d;
            dbm += fabs(d);
        }
        const double mg = sg / (double)rows, mgx = sgx / (double)rows;
        if (out->dx)
            for (size_t i = 0; i < rows; i++) {
                const double xhat = (x[i * dim + j] - m) * rs, g = dy[i * dim + j] * gm;
                out->dx[i * dim + j] = training ? rs * (g - mg - xhat * mgx) : rs * g;
            }
        if (out->dgamma)
            out->dgamma[j] = dg;
        if (out->dbeta)
            out->dbeta[j] = db;
        if (out->dgamma_mag)
            out->dgamma_mag[j] = dgm;
        if (out->dbeta_mag)
            out->dbeta_mag[j] = dbm;
    }
    return 0;
}

/* ---- DyT -------------------------------------------------------------------------------------- */

void keel_ref_dyt_fwd_f64(size_t rows, size_t dim, const double *x, double alpha,
                          const double *gamma, const double *beta, double *y)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < dim; j++) {
            const size_t k = i * dim + j;
            y[k] = param(gamma, j, 1.0) * tanh(alpha * x[k]) + param(beta, j, 0.0);
        }
}

void keel_ref_dyt_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                          double alpha, const double *gamma, const keel_ref_dyt_grads *out)
{
    zero(out->dgamma, dim);
    zero(out->dbeta, dim);
    zero(out->dgamma_mag, dim);
    zero(out->dbeta_mag, dim);
    double da = 0.0, dam = 0.0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < dim; j++) {
            const size_t k = i * dim + j;
            const double u = alpha * x[k], t = tanh(u), c = cosh(u);
            const double s = 1.0 / (c * c); /* sech^2: 0 once cosh overflows */
            const double gs = dy[k] * param(gamma, j, 1.0);
            if (out->dx)
                out->dx[k] = gs * alpha * s;
            da += gs * x[k] * s;
            dam += fabs(gs * x[k] * s);
            if (out->dgamma)
                out->dgamma[j] += dy[k] * t;
            if (out->dgamma_mag)
                out->dgamma_mag[j] += fabs(dy[k] * t);
            if (out->dbeta)
                out->dbeta[j] += dy[k];
            if (out->dbeta_mag)
                out->dbeta_mag[j] += fabs(dy[k]);
        }
    if (out->dalpha)
        *out->dalpha = da;
    if (out->dalpha_mag)
        *out->dalpha_mag = dam;
}
