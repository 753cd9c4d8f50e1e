/* The float64 reference of LayerNorm and RMSNorm (see keel_ref.h): readable, not fast. */
#include "keel_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- compensated summation -------------------------------------------------------------- */

/* Neumaier's variant of Kahan summation: the rounding error of every addition is collected in
 * `comp`, so the sum is accurate to ~2 roundings independent of the number of terms. A plain
 * double sum of 65536 values at an offset of 1e6 could be off by ~1e-5 of the row's standard
 * deviation in the worst case, a few float32 ulps of a normalized output: too coarse for an
 * oracle that judges float32 kernels to 8 ulps. */
typedef struct ref_sum {
    double sum;
    double comp;
} ref_sum;

static void sum_add(ref_sum *s, double v)
{
    double t = s->sum + v;
    if (fabs(s->sum) >= fabs(v))
        s->comp += (s->sum - t) + v;
    else
        s->comp += (v - t) + s->sum;
    s->sum = t;
}

static double sum_value(const ref_sum *s)
{
    return s->sum + s->comp;
}

static int row_is_finite(const double *x, size_t dim)
{
    for (size_t j = 0; j < dim; j++)
        if (!isfinite(x[j]))
            return 0;
    return 1;
}

static double param(const double *p, size_t j, double absent)
{
    return p ? p[j] : absent;
}

/* ---- LayerNorm ---------------------------------------------------------------------------- */

/* mean and rstd of one row: two passes, the variance of the values centred on the mean. */
static void layernorm_row_stats(const double *x, size_t dim, double eps, double *mean,
                                double *rstd)
{
    if (!row_is_finite(x, dim)) {
        *mean = NAN;
        *rstd = NAN;
        return;
    }
    ref_sum s = {0.0, 0.0};
    for (size_t j = 0; j < dim; j++)
        sum_add(&s, x[j]);
    double m = sum_value(&s) / (double)dim;

    ref_sum v = {0.0, 0.0};
    for (size_t j = 0; j < dim; j++)
        sum_add(&v, (x[j] - m) * (x[j] - m));
    double var = sum_value(&v) / (double)dim;

    *mean = m;
    *rstd = 1.0 / sqrt(var + eps);
}

void keel_ref_layernorm_fwd_f64(size_t rows, size_t dim, const double *x,
                                const double *gamma, const double *beta, double eps,
                                double *y, double *mean, double *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * dim;
        double m, rs;
        layernorm_row_stats(xr, dim, eps, &m, &rs);
        if (mean)
            mean[r] = m;
        if (rstd)
            rstd[r] = rs;
        if (y)
            for (size_t j = 0; j < dim; j++)
                y[r * dim + j] = (xr[j] - m) * rs * param(gamma, j, 1.0) + param(beta, j, 0.0);
    }
}

/* Zero the dim-long outputs that are sums over rows. */
static void clear_param_grads(size_t dim, const keel_ref_grads *out)
{
    double *sums[4] = {out->dgamma, out->dbeta, out->dgamma_mag, out->dbeta_mag};
    for (int k = 0; k < 4; k++)
        if (sums[k])
            memset(sums[k], 0, dim * sizeof(double));
}

/* Adds one row's terms to dgamma, dbeta and their magnitude sums. A plain double sum over rows
 * suffices: its error, rows * 2^-53 of the magnitude sum, is ~10^7 times below the float32
 * bound these sums are judged against. */
static void add_param_grads(size_t dim, const double *dy, const double *xhat,
                            const keel_ref_grads *out)
{
    for (size_t j = 0; j < dim; j++) {
        if (out->dgamma)
            out->dgamma[j] += dy[j] * xhat[j];
        if (out->dgamma_mag)
            out->dgamma_mag[j] += fabs(dy[j] * xhat[j]);
        if (out->dbeta)
            out->dbeta[j] += dy[j];
        if (out->dbeta_mag)
            out->dbeta_mag[j] += fabs(dy[j]);
    }
}

/* mean over the row of a[j] * b[j] (b NULL: of a[j]). */
static double row_mean_product(const double *a, const double *b, size_t dim)
{
    ref_sum s = {0.0, 0.0};
    for (size_t j = 0; j < dim; j++)
        sum_add(&s, b ? a[j] * b[j] : a[j]);
    return sum_value(&s) / (double)dim;
}

int keel_ref_layernorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                               const double *gamma, double eps, const keel_ref_grads *out)
{
    /* One row of xhat and of g = dy * gamma. */
    double *xhat = malloc(2 * dim * sizeof(double));
    if (!xhat)
        return -1;
    double *g = xhat + dim;
    clear_param_grads(dim, out);
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * dim, *dyr = dy + r * dim;
        double m, rs;
        layernorm_row_stats(xr, dim, eps, &m, &rs);
        for (size_t j = 0; j < dim; j++) {
            xhat[j] = (xr[j] - m) * rs;
            g[j] = dyr[j] * param(gamma, j, 1.0);
        }
        if (out->dx) {
            double mean_g = row_mean_product(g, NULL, dim);
            double mean_gx = row_mean_product(g, xhat, dim);
            for (size_t j = 0; j < dim; j++)
                out->dx[r * dim + j] = rs * (g[j] - mean_g - xhat[j] * mean_gx);
        }
        add_param_grads(dim, dyr, xhat, out);
    }
    free(xhat);
    return 0;
}

/* ---- RMSNorm ------------------------------------------------------------------------------ */

static double rmsnorm_row_rstd(const double *x, size_t dim, double eps)
{
    if (!row_is_finite(x, dim))
        return NAN; /* the formula alone would give rstd = 0 for an Inf */
    return 1.0 / sqrt(row_mean_product(x, x, dim) + eps);
}

void keel_ref_rmsnorm_fwd_f64(size_t rows, size_t dim, const double *x, const double *gamma,
                              double eps, double *y, double *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * dim;
        double rs = rmsnorm_row_rstd(xr, dim, eps);
        if (rstd)
            rstd[r] = rs;
        if (y)
            for (size_t j = 0; j < dim; j++)
                y[r * dim + j] = xr[j] * rs * param(gamma, j, 1.0);
    }
}

int keel_ref_rmsnorm_bwd_f64(size_t rows, size_t dim, const double *dy, const double *x,
                             const double *gamma, double eps, const keel_ref_grads *out)
{
    /* One row of xhat and of g = dy * gamma. */
    double *xhat = malloc(2 * dim * sizeof(double));
    if (!xhat)
        return -1;
    double *g = xhat + dim;
    clear_param_grads(dim, out);
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * dim, *dyr = dy + r * dim;
        double rs = rmsnorm_row_rstd(xr, dim, eps);
        for (size_t j = 0; j < dim; j++) {
            xhat[j] = xr[j] * rs;
            g[j] = dyr[j] * param(gamma, j, 1.0);
        }
        if (out->dx) {
            double mean_gx = row_mean_product(g, xhat, dim);
            for (size_t j = 0; j < dim; j++)
                out->dx[r * dim + j] = rs * (g[j] - xhat[j] * mean_gx);
        }
        add_param_grads(dim, dyr, xhat, out);
    }
    free(xhat);
    return 0;
}

/* ---- float32 strided inputs ---------------------------------------------------------------- */

/* A dense double copy of a float32 matrix (stride in elements); NULL in, NULL out. Every float
 * converts to double exactly, so the reference sees the very values the kernels see. */
static double *to_double(const float *src, size_t rows, size_t dim, size_t stride, int *failed)
{
    if (!src)
        return NULL;
    size_t n = rows * dim;
    double *d = malloc((n > 0 ? n : 1) * sizeof(double)); /* malloc(0) may return NULL */
    if (!d) {
        *failed = 1;
        return NULL;
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++)
            d[r * dim + j] = (double)src[r * stride + j];
    return d;
}

int keel_ref_layernorm_fwd(size_t rows, size_t dim, const float *x, size_t x_stride,
                           const float *gamma, const float *beta, float eps,
                           double *y, double *mean, double *rstd)
{
    int failed = 0;
    double *xd = to_double(x, rows, dim, x_stride, &failed);
    double *gd = to_double(gamma, 1, dim, dim, &failed);
    double *bd = to_double(beta, 1, dim, dim, &failed);
    if (!failed)
        keel_ref_layernorm_fwd_f64(rows, dim, xd, gd, bd, (double)eps, y, mean, rstd);
    free(xd);
    free(gd);
    free(bd);
    return failed ? -1 : 0;
}

int keel_ref_layernorm_bwd(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                           const float *x, size_t x_stride, const float *gamma, float eps,
                           const keel_ref_grads *out)
{
    int failed = 0;
    double *dyd = to_double(dy, rows, dim, dy_stride, &failed);
    double *xd = to_double(x, rows, dim, x_stride, &failed);
    double *gd = to_double(gamma, 1, dim, dim, &failed);
    if (!failed && keel_ref_layernorm_bwd_f64(rows, dim, dyd, xd, gd, (double)eps, out) != 0)
        failed = 1;
    free(dyd);
    free(xd);
    free(gd);
    return failed ? -1 : 0;
}

int keel_ref_rmsnorm_fwd(size_t rows, size_t dim, const float *x, size_t x_stride,
                         const float *gamma, float eps, double *y, double *rstd)
{
    int failed = 0;
    double *xd = to_double(x, rows, dim, x_stride, &failed);
    double *gd = to_double(gamma, 1, dim, dim, &failed);
    if (!failed)
        keel_ref_rmsnorm_fwd_f64(rows, dim, xd, gd, (double)eps, y, rstd);
    free(xd);
    free(gd);
    return failed ? -1 : 0;
}

int keel_ref_rmsnorm_bwd(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                         const float *x, size_t x_stride, const float *gamma, float eps,
                         const keel_ref_grads *out)
{
    int failed = 0;
    double *dyd = to_double(dy, rows, dim, dy_stride, &failed);
    double *xd = to_double(x, rows, dim, x_stride, &failed);
    double *gd = to_double(gamma, 1, dim, dim, &failed);
    if (!failed && keel_ref_rmsnorm_bwd_f64(rows, dim, dyd, xd, gd, (double)eps, out) != 0)
        failed = 1;
    free(dyd);
    free(xd);
    free(gd);
    return failed ? -1 : 0;
}
