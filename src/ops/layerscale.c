/* LayerScale operators (keel.h): h = x + lambda * f and its backward, over the context's
 * threads; dlambda is gathered over fixed row blocks (deterministic). */
#include "error.h"
#include "parallel.h"
#include "validate.h"

typedef struct ls_fwd_job {
    const keel_kernels *k;
    size_t dim;
    const float *x, *f;
    size_t xs, fs;
    const float *lambda;
    float *h;
    size_t hs;
} ls_fwd_job;

static void ls_fwd_rows(const void *p, size_t r0, size_t r1, float *part0, float *part1)
{
    const ls_fwd_job *j = p;
    (void)part0;
    (void)part1;
    j->k->f32_layerscale_fwd(r1 - r0, j->dim, j->x + r0 * j->xs, j->xs, j->f + r0 * j->fs, j->fs,
                             j->lambda, j->h + r0 * j->hs, j->hs);
}

keel_status keel_layerscale_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                keel_tensor f, const float *lambda, keel_tensor h, unsigned flags)
{
    static const char who[] = "keel_layerscale_fwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor(who, "x", x, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "f", f, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "h", h, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_overlap(who, "h", h, "x", x, rows, dim)) ||
        (st = keel_check_overlap(who, "h", h, "f", f, rows, dim)) ||
        (st = keel_check_flags(who, flags, 0)))
        return st;
    if (!lambda)
        return keel_fail(KEEL_ENULL, "%s: lambda is NULL (LayerScale needs its dim scales)", who);
    if (rows == 0)
        return KEEL_OK;
    ls_fwd_job j = {ctx->kernels, dim, x.data, f.data, x.stride, f.stride, lambda, h.data, h.stride};
    keel_run_rows(ctx, rows, dim, ls_fwd_rows, &j);
    return KEEL_OK;
}

typedef struct ls_bwd_job {
    const keel_kernels *k;
    size_t dim;
    const float *dh, *f;
    size_t dhs, fs;
    const float *lambda;
    float *dx, *df;
    size_t dxs, dfs;
    int accumulate;
} ls_bwd_job;

static void ls_bwd_rows(const void *p, size_t r0, size_t r1, float *dlambda_part, float *unused)
{
    const ls_bwd_job *j = p;
    (void)unused;
    j->k->f32_layerscale_bwd(r1 - r0, j->dim, j->dh + r0 * j->dhs, j->dhs,
                             j->f ? j->f + r0 * j->fs : NULL, j->fs, j->lambda,
                             j->dx ? j->dx + r0 * j->dxs : NULL, j->dxs,
                             j->df ? j->df + r0 * j->dfs : NULL, j->dfs, j->accumulate,
                             dlambda_part);
}

keel_status keel_layerscale_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dh,
                                keel_tensor f, const float *lambda, keel_tensor dx,
                                keel_tensor df, float *dlambda, unsigned flags)
{
    static const char who[] = "keel_layerscale_bwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor(who, "dh", dh, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "f", f, rows, dim, dlambda ? KEEL_REQUIRED : KEEL_OPTIONAL)) ||
        (st = keel_check_tensor(who, "dx", dx, rows, dim, KEEL_OPTIONAL)) ||
        (st = keel_check_tensor(who, "df", df, rows, dim, KEEL_OPTIONAL)) ||
        (st = keel_check_overlap(who, "dx", dx, "dh", dh, rows, dim)) ||
        (st = keel_check_overlap(who, "dx", dx, "f", f, rows, dim)) ||
        (st = keel_check_overlap(who, "df", df, "dh", dh, rows, dim)) ||
        (st = keel_check_overlap(who, "df", df, "f", f, rows, dim)) ||
        (st = keel_check_overlap(who, "df", df, "dx", dx, rows, dim)) ||
        (st = keel_check_flags(who, flags, KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS)))
        return st;
    if (dx.data && df.data && dx.data == df.data && dx.stride == df.stride && rows > 0)
        return keel_fail(KEEL_EINVAL, "%s: dx and df are the same tensor (each needs its own memory)", who);
    if (!lambda && df.data)
        return keel_fail(KEEL_ENULL, "%s: lambda is NULL but df is wanted (df = lambda * dh)", who);
    if (rows == 0 || (!dx.data && !df.data && !dlambda))
        return KEEL_OK;
    ls_bwd_job j = {ctx->kernels, dim, dh.data, dlambda ? f.data : NULL, dh.stride, f.stride,
                    lambda, dx.data, df.data, dx.stride, df.stride,
                    (flags & KEEL_FLAG_ACCUMULATE_DX) != 0};
    return keel_run_rows_reduce(ctx, who, rows, dim, ls_bwd_rows, &j, dlambda, NULL,
                                (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0);
}
