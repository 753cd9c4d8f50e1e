/* DyT operators (keel.h): elementwise over the context's threads; dgamma, dbeta and the
 * per-column terms of dalpha are gathered over fixed row blocks (keel_run_rows_reduce), and
 * dalpha is then the sum of those columns in double, in column order: deterministic. x, y, dy
 * and dx may be f32, bf16 or f16 (staged through the float32 kernels, stage.h). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "stage.h"
#include "error.h"
#include "parallel.h"
#include "validate.h"

static keel_status check_alpha(const char *who, float alpha)
{
    if (!isfinite(alpha))
        return keel_fail(KEEL_EINVAL, "%s: alpha (%g) must be finite", who, (double)alpha);
    return KEEL_OK;
}

typedef struct dyt_fwd_job {
    const keel_kernels *k;
    size_t dim;
    float alpha;
    const float *gamma, *beta;
    keel_stage stage; /* x, y */
} dyt_fwd_job;

static void dyt_fwd_block(const void *job, void *unused, size_t r, size_t n, float *const *p,
                          const size_t *s)
{
    const dyt_fwd_job *j = job;
    (void)unused;
    (void)r;
    j->k->f32_dyt_fwd(n, j->dim, p[0], s[0], p[1], s[1], j->alpha, j->gamma, j->beta);
}

static keel_status dyt_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x, keel_tensor y,
                           float alpha, const float *gamma, const float *beta, unsigned flags)
{
    static const char who[] = "keel_dyt_fwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor_of(who, "x", x, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "y", y, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_overlap(who, "y", y, "x", x, rows, dim)) ||
        (st = check_alpha(who, alpha)) || (st = keel_check_flags(who, flags, 0)))
        return st;
    if (rows == 0)
        return KEEL_OK;
    dyt_fwd_job j = {ctx->kernels, dim, alpha, gamma, beta, {0}};
    keel_stage_add(&j.stage, x, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, y, KEEL_STAGE_OUT);
    if ((st = keel_stage_setup(&j.stage, ctx, who, rows, dim)))
        return st;
    keel_run_rows(ctx, &j.stage, rows, dim, dyt_fwd_block, &j);
    return KEEL_OK;
}

keel_status keel_dyt_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x, keel_tensor y,
                         float alpha, const float *gamma, const float *beta, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_dyt_fwd");
    return st ? st : keel_ctx_leave(ctx, dyt_fwd(ctx, rows, dim, x, y, alpha, gamma, beta, flags));
}

typedef struct dyt_bwd_job {
    const keel_kernels *k;
    size_t dim;
    float alpha;
    const float *gamma;
    int accumulate_dx;
    keel_stage stage; /* dy, x, dx */
} dyt_bwd_job;

static void dyt_bwd_block(const void *job, void *ctx, size_t r, size_t n, float *const *p,
                          const size_t *s)
{
    const dyt_bwd_job *j = job;
    float *const *parts = ctx;
    (void)r;
    j->k->f32_dyt_bwd(n, j->dim, p[0], s[0], p[1], s[1], j->alpha, j->gamma, p[2], s[2],
                      j->accumulate_dx, parts[0], parts[1], parts[2]);
}

static keel_status dyt_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy, keel_tensor x,
                           float alpha, const float *gamma, keel_tensor dx, float *dalpha,
                           float *dgamma, float *dbeta, unsigned flags)
{
    static const char who[] = "keel_dyt_bwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor_of(who, "dy", dy, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "x", x, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "dx", dx, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_overlap(who, "dx", dx, "dy", dy, rows, dim)) ||
        (st = keel_check_overlap(who, "dx", dx, "x", x, rows, dim)) ||
        (st = check_alpha(who, alpha)) ||
        (st = keel_check_flags(who, flags, KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS)))
        return st;
    const int acc = (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0;
    if (rows == 0 || (!dx.data && !dalpha && !dgamma && !dbeta))
        return KEEL_OK;
    /* dalpha's per-column sums live apart from the scratch of the row-block partials */
    float *cols = NULL;
    if (dalpha) {
        if (dim > SIZE_MAX / sizeof(float))
            return keel_fail(KEEL_EOVERFLOW, "%s: dim (%zu) too large", who, dim);
        if (!(cols = keel_ctx_params(ctx, dim, who)))
            return KEEL_ENOMEM;
        memset(cols, 0, dim * sizeof *cols); /* accumulated into from 0 whatever the flags */
    }
    const int acc_dx = (flags & KEEL_FLAG_ACCUMULATE_DX) != 0;
    dyt_bwd_job j = {ctx->kernels, dim, alpha, gamma, acc_dx, {0}};
    keel_stage_add(&j.stage, dy, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, x, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, dx, acc_dx ? KEEL_STAGE_ACC : KEEL_STAGE_OUT);
    if ((st = keel_stage_setup(&j.stage, ctx, who, rows, dim)))
        return st;
    float *const outs[3] = {dgamma, dbeta, cols};
    if ((st = keel_run_rows_reduce(ctx, who, &j.stage, rows, dim, dyt_bwd_block, &j, outs, 3, acc)))
        return st;
    if (dalpha) {
        double s = acc ? (double)*dalpha : 0.0;
        for (size_t c = 0; c < dim; c++)
            s += (double)cols[c];
        *dalpha = (float)s;
    }
    return KEEL_OK;
}

keel_status keel_dyt_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy, keel_tensor x,
                         float alpha, const float *gamma, keel_tensor dx, float *dalpha,
                         float *dgamma, float *dbeta, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_dyt_bwd");
    return st ? st
              : keel_ctx_leave(ctx, dyt_bwd(ctx, rows, dim, dy, x, alpha, gamma, dx, dalpha, dgamma,
                                            dbeta, flags));
}
