/* LayerNorm operators: validate, then plan the rows over the context's threads and call the
 * context's kernels. */
#include "error.h"
#include "parallel.h"
#include "validate.h"

typedef struct ln_fwd_job {
    const keel_kernels *k;
    size_t dim;
    const float *x;
    size_t xs;
    float *y;
    size_t ys;
    const float *gamma, *beta;
    float eps;
    float *mean, *rstd;
} ln_fwd_job;

static void ln_fwd_rows(const void *p, size_t r0, size_t r1, float *part0, float *part1)
{
    const ln_fwd_job *j = p;
    (void)part0;
    (void)part1;
    j->k->f32_layernorm_fwd(r1 - r0, j->dim, j->x + r0 * j->xs, j->xs, j->y + r0 * j->ys, j->ys,
                            j->gamma, j->beta, j->eps, j->mean ? j->mean + r0 : NULL,
                            j->rstd ? j->rstd + r0 : NULL);
}

keel_status keel_layernorm_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                               keel_tensor y, const float *gamma, const float *beta, float eps,
                               float *mean, float *rstd, unsigned flags)
{
    static const char who[] = "keel_layernorm_fwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor(who, "x", x, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "y", y, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_overlap(who, "y", y, "x", x, rows, dim)) ||
        (st = keel_check_eps(who, eps)) || (st = keel_check_flags(who, flags, 0)))
        return st;
    if (rows == 0)
        return KEEL_OK;
    ln_fwd_job j = {ctx->kernels, dim, x.data, x.stride, y.data, y.stride, gamma, beta, eps, mean, rstd};
    keel_run_rows(ctx, rows, dim, ln_fwd_rows, &j);
    return KEEL_OK;
}

typedef struct ln_bwd_job {
    const keel_kernels *k;
    size_t dim;
    const float *dy;
    size_t dys;
    const float *x;
    size_t xs;
    const float *mean, *rstd, *gamma;
    float eps;
    float *dx;
    size_t dxs;
    int accumulate_dx;
} ln_bwd_job;

static void ln_bwd_rows(const void *p, size_t r0, size_t r1, float *dgamma_part, float *dbeta_part)
{
    const ln_bwd_job *j = p;
    j->k->f32_layernorm_bwd(r1 - r0, j->dim, j->dy + r0 * j->dys, j->dys, j->x + r0 * j->xs, j->xs,
                            j->mean ? j->mean + r0 : NULL, j->rstd ? j->rstd + r0 : NULL, j->gamma,
                            j->eps, j->dx ? j->dx + r0 * j->dxs : NULL, j->dxs, j->accumulate_dx,
                            dgamma_part, dbeta_part);
}

keel_status keel_layernorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                               keel_tensor x, const float *mean, const float *rstd,
                               const float *gamma, float eps, keel_tensor dx, float *dgamma,
                               float *dbeta, unsigned flags)
{
    static const char who[] = "keel_layernorm_bwd";
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
    if (rows == 0 || (!dx.data && !dgamma && !dbeta))
        return KEEL_OK;
    ln_bwd_job j = {ctx->kernels, dim, dy.data, dy.stride, x.data, x.stride, mean, rstd, gamma, eps,
                    dx.data, dx.stride, (flags & KEEL_FLAG_ACCUMULATE_DX) != 0};
    return keel_run_rows_reduce(ctx, who, rows, dim, ln_bwd_rows, &j, dgamma, dbeta,
                                (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0);
}
