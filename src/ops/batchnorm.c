/* BatchNorm operators (keel.h): statistics per feature over the rows, so the work is split by
 * columns (keel_run_cols), each column owned by one thread and summed over the rows in order:
 * the same bits for any thread count. The per-feature finishing steps (rstd, the running
 * statistics) are a dim-long loop here, in double, rounded once. */
#include <math.h>
#include <stdint.h>

#include "error.h"
#include "norm_finish.h"
#include "parallel.h"
#include "validate.h"

/* Scratch of one call: per feature, the double statistics and the float constants of the
 * apply / backward sweeps. */
typedef struct bn_scratch {
    double *mean_d, *m2;
    float *hi, *lo, *rstd;
} bn_scratch;

static keel_status bn_scratch_get(keel_ctx *ctx, const char *who, size_t dim, bn_scratch *s)
{
    const size_t per = 2 * sizeof(double) + 3 * sizeof(float);
    if (dim > SIZE_MAX / per)
        return keel_fail(KEEL_EOVERFLOW, "%s: dim (%zu) too large for the per-feature statistics", who, dim);
    char *p = keel_ctx_scratch(ctx, dim * per, who);
    if (!p)
        return KEEL_ENOMEM;
    s->mean_d = (double *)(void *)p;
    s->m2 = s->mean_d + dim;
    s->hi = (float *)(void *)(s->m2 + dim);
    s->lo = s->hi + dim;
    s->rstd = s->lo + dim;
    return KEEL_OK;
}

typedef struct bn_stats_job {
    const keel_kernels *k;
    size_t rows;
    const float *x;
    size_t xs;
    double *mean_d, *m2;
} bn_stats_job;

static void bn_stats_cols(const void *p, size_t j0, size_t j1)
{
    const bn_stats_job *j = p;
    j->k->f32_batchnorm_stats(j->rows, j1 - j0, j->x + j0, j->xs, j->mean_d + j0, j->m2 + j0);
}

/* The batch statistics of x: hi/lo (the mean as a float pair) and rstd per feature; mean_d and
 * m2 kept for the running statistics. */
static void batch_stats(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x, float eps,
                        const bn_scratch *s)
{
    bn_stats_job j = {ctx->kernels, rows, x.data, x.stride, s->mean_d, s->m2};
    keel_run_cols(ctx, rows, dim, bn_stats_cols, &j);
    for (size_t c = 0; c < dim; c++) {
        s->hi[c] = (float)s->mean_d[c];
        s->lo[c] = (float)(s->mean_d[c] - (double)s->hi[c]);
        s->rstd[c] = keel_ln_rstd(s->m2[c], rows, eps);
    }
}

typedef struct bn_apply_job {
    const keel_kernels *k;
    size_t dim;
    const float *hi, *lo, *rstd, *gamma, *beta;
    keel_stage stage; /* x, y (float32: used in place) */
} bn_apply_job;

/* rows [r, r + n): x = p[0], y = p[1] */
static void bn_apply_block(const void *job, void *unused, size_t r, size_t n, float *const *p,
                           const size_t *s)
{
    const bn_apply_job *j = job;
    (void)unused;
    (void)r;
    j->k->f32_batchnorm_apply(n, j->dim, p[0], s[0], p[1], s[1], j->hi, j->lo, j->rstd, j->gamma,
                              j->beta);
}

static keel_status check_momentum(const char *who, float momentum)
{
    if (isnan(momentum) || (momentum >= 0.0f && momentum <= 1.0f))
        return KEEL_OK;
    return keel_fail(KEEL_EINVAL, "%s: momentum (%g) must be in [0, 1], or NAN for a cumulative average",
                     who, (double)momentum);
}

static keel_status batchnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                 keel_tensor y, const float *gamma, const float *beta, float eps,
                                 int training, float momentum, float *running_mean,
                                 float *running_var, int64_t *num_batches_tracked,
                                 float *save_mean, float *save_rstd, unsigned flags)
{
    static const char who[] = "keel_batchnorm_fwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor(who, "x", x, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "y", y, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_overlap(who, "y", y, "x", x, rows, dim)) ||
        (st = keel_check_eps(who, eps)) || (st = check_momentum(who, momentum)) ||
        (st = keel_check_flags(who, flags, 0)))
        return st;
    if ((running_mean == NULL) != (running_var == NULL))
        return keel_fail(KEEL_EINVAL, "%s: running_mean (%s) and running_var (%s) must be given both or neither",
                         who, running_mean ? "given" : "NULL", running_var ? "given" : "NULL");
    if (!training && !running_mean)
        return keel_fail(KEEL_ENULL, "%s: running_mean and running_var are NULL in inference mode (training 0)", who);
    if (training && running_mean && isnan(momentum) && !num_batches_tracked)
        return keel_fail(KEEL_ENULL, "%s: num_batches_tracked is NULL with momentum NAN (the cumulative average counts batches)",
                         who);
    if (training && rows == 1)
        return keel_fail(KEEL_EINVAL, "%s: rows (1): training needs more than one value per feature (a batch of one has no variance)",
                         who);
    /* The count is incremented below: INT64_MAX would overflow (undefined behaviour; found by
     * tests/fuzz/fuzz_api), and with momentum NAN a negative count divides by zero or less. */
    if (training && running_mean && num_batches_tracked &&
        (*num_batches_tracked < 0 || *num_batches_tracked == INT64_MAX))
        return keel_fail(KEEL_EINVAL, "%s: *num_batches_tracked (%lld) must be in [0, INT64_MAX - 1] (it counts "
                         "the batches and is incremented)", who, (long long)*num_batches_tracked);
    if (rows == 0)
        return KEEL_OK;
    bn_scratch s = {0};
    if ((st = bn_scratch_get(ctx, who, dim, &s)))
        return st;

    if (training) {
        batch_stats(ctx, rows, dim, x, eps, &s);
        if (running_mean) {
            double m = (double)momentum;
            if (num_batches_tracked) {
                *num_batches_tracked += 1;
                if (isnan(momentum))
                    m = 1.0 / (double)*num_batches_tracked;
            }
            const double unbias = (double)rows / (double)(rows - 1);
            for (size_t c = 0; c < dim; c++) {
                const double var_u = s.m2[c] / (double)rows * unbias;
                running_mean[c] = (float)((1.0 - m) * (double)running_mean[c] + m * s.mean_d[c]);
                running_var[c] = (float)((1.0 - m) * (double)running_var[c] + m * var_u);
            }
        }
    } else {
        for (size_t c = 0; c < dim; c++) {
            s.hi[c] = running_mean[c];
            s.rstd[c] = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
        }
    }
    for (size_t c = 0; c < dim; c++) {
        if (save_mean)
            save_mean[c] = s.hi[c];
        if (save_rstd)
            save_rstd[c] = s.rstd[c];
    }
    bn_apply_job j = {ctx->kernels, dim, s.hi, training ? s.lo : NULL, s.rstd, gamma, beta, {0}};
    keel_stage_add(&j.stage, x, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, y, KEEL_STAGE_OUT);
    if ((st = keel_stage_setup(&j.stage, ctx, who, rows, dim)))
        return st;
    keel_run_rows(ctx, &j.stage, rows, dim, bn_apply_block, &j);
    return KEEL_OK;
}

keel_status keel_batchnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                               keel_tensor y, const float *gamma, const float *beta, float eps,
                               int training, float momentum, float *running_mean,
                               float *running_var, int64_t *num_batches_tracked,
                               float *save_mean, float *save_rstd, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_batchnorm_fwd");
    return st ? st
              : keel_ctx_leave(ctx, batchnorm_fwd(ctx, rows, dim, x, y, gamma, beta, eps, training,
                                                  momentum, running_mean, running_var,
                                                  num_batches_tracked, save_mean, save_rstd,
                                                  flags));
}

typedef struct bn_bwd_job {
    const keel_kernels *k;
    size_t rows;
    const float *dy, *x;
    size_t dys, xs;
    const float *mean, *rstd, *gamma;
    int training;
    float *dx;
    size_t dxs;
    int accumulate_dx;
    float *dgamma, *dbeta;
    int accumulate_dparams;
} bn_bwd_job;

static void bn_bwd_cols(const void *p, size_t j0, size_t j1)
{
    const bn_bwd_job *j = p;
    j->k->f32_batchnorm_bwd(j->rows, j1 - j0, j->dy + j0, j->dys, j->x + j0, j->xs, j->mean + j0,
                            j->rstd + j0, j->gamma ? j->gamma + j0 : NULL, j->training,
                            j->dx ? j->dx + j0 : NULL, j->dxs, j->accumulate_dx,
                            j->dgamma ? j->dgamma + j0 : NULL, j->dbeta ? j->dbeta + j0 : NULL,
                            j->accumulate_dparams);
}

static keel_status batchnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                                 keel_tensor x, const float *mean, const float *rstd,
                                 const float *gamma, float eps, int training, keel_tensor dx,
                                 float *dgamma, float *dbeta, unsigned flags)
{
    static const char who[] = "keel_batchnorm_bwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor(who, "dy", dy, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "x", x, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "dx", dx, rows, dim, KEEL_OPTIONAL)) ||
        (st = keel_check_overlap(who, "dx", dx, "dy", dy, rows, dim)) ||
        (st = keel_check_overlap(who, "dx", dx, "x", x, rows, dim)) ||
        (st = keel_check_eps(who, eps)) ||
        (st = keel_check_flags(who, flags, KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS)))
        return st;
    if ((mean == NULL) != (rstd == NULL))
        return keel_fail(KEEL_EINVAL, "%s: mean (%s) and rstd (%s) must be given both or neither", who,
                         mean ? "given" : "NULL", rstd ? "given" : "NULL");
    if (!training && !mean)
        return keel_fail(KEEL_ENULL, "%s: mean and rstd are NULL in inference mode (pass the forward's save_mean, save_rstd)",
                         who);
    if (training && rows == 1)
        return keel_fail(KEEL_EINVAL, "%s: rows (1): training needs more than one value per feature", who);
    if (rows == 0 || (!dx.data && !dgamma && !dbeta))
        return KEEL_OK;
    if (!mean) {
        bn_scratch s = {0};
        if ((st = bn_scratch_get(ctx, who, dim, &s)))
            return st;
        batch_stats(ctx, rows, dim, x, eps, &s);
        mean = s.hi;
        rstd = s.rstd;
    }
    bn_bwd_job j = {ctx->kernels, rows, dy.data, x.data, dy.stride, x.stride, mean, rstd, gamma,
                    training != 0, dx.data, dx.stride, (flags & KEEL_FLAG_ACCUMULATE_DX) != 0,
                    dgamma, dbeta, (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0};
    keel_run_cols(ctx, rows, dim, bn_bwd_cols, &j);
    return KEEL_OK;
}

keel_status keel_batchnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                               keel_tensor x, const float *mean, const float *rstd,
                               const float *gamma, float eps, int training, keel_tensor dx,
                               float *dgamma, float *dbeta, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_batchnorm_bwd");
    return st ? st
              : keel_ctx_leave(ctx, batchnorm_bwd(ctx, rows, dim, dy, x, mean, rstd, gamma, eps,
                                                  training, dx, dgamma, dbeta, flags));
}
