/* LayerScale operators (keel.h): h = x + lambda * f and its backward, over the context's
 * threads; dlambda is gathered over fixed row blocks (deterministic). Tensors may be f32, bf16
 * or f16 (staged through the float32 kernels, stage.h; each output rounded once). */
#include "stage.h"
#include "norm_common.h" /* keel_bwd_hints */
#include "error.h"
#include "parallel.h"
#include "validate.h"

typedef struct ls_fwd_job {
    const keel_kernels *k;
    size_t dim;
    const float *lambda;
    keel_stage stage; /* x, f, h */
} ls_fwd_job;

static void ls_fwd_block(const void *job, void *unused, size_t r, size_t n, float *const *p,
                         const size_t *s)
{
    const ls_fwd_job *j = job;
    (void)unused;
    (void)r;
    j->k->f32_layerscale_fwd(n, j->dim, p[0], s[0], p[1], s[1], j->lambda, p[2], s[2]);
}

static keel_status layerscale_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                  keel_tensor f, const float *lambda, keel_tensor h, unsigned flags)
{
    static const char who[] = "keel_layerscale_fwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor_of(who, "x", x, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "f", f, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "h", h, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_overlap(who, "h", h, "x", x, rows, dim)) ||
        (st = keel_check_overlap(who, "h", h, "f", f, rows, dim)) ||
        (st = keel_check_flags(who, flags, 0)))
        return st;
    if (!lambda)
        return keel_fail(KEEL_ENULL, "%s: lambda is NULL (LayerScale needs its dim scales)", who);
    if (rows == 0)
        return KEEL_OK;
    ls_fwd_job j = {ctx->kernels, dim, lambda, {0}};
    keel_stage_add(&j.stage, x, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, f, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, h, KEEL_STAGE_OUT);
    if ((st = keel_stage_setup(&j.stage, ctx, who, rows, dim)))
        return st;
    keel_run_rows(ctx, &j.stage, rows, dim, ls_fwd_block, &j);
    return KEEL_OK;
}

keel_status keel_layerscale_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                keel_tensor f, const float *lambda, keel_tensor h, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_layerscale_fwd");
    return st ? st : keel_ctx_leave(ctx, layerscale_fwd(ctx, rows, dim, x, f, lambda, h, flags));
}

typedef struct ls_bwd_job {
    const keel_kernels *k;
    size_t dim;
    const float *lambda;
    int accumulate;
    int hints; /* KEEL_KBWD_STREAM (kernels.h) */
    keel_stage stage; /* dh, f, dx, df */
} ls_bwd_job;

static void ls_bwd_block(const void *job, void *parts, size_t r, size_t n, float *const *p,
                         const size_t *s)
{
    const ls_bwd_job *j = job;
    float *const *pp = parts; /* dlambda (keel_run_rows_reduce) */
    (void)r;
    j->k->f32_layerscale_bwd(n, j->dim, p[0], s[0], p[1], s[1], j->lambda, p[2], s[2], p[3], s[3],
                             j->accumulate, pp[0], j->hints);
}

static keel_status layerscale_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dh,
                                  keel_tensor f, const float *lambda, keel_tensor dx,
                                  keel_tensor df, float *dlambda, unsigned flags)
{
    static const char who[] = "keel_layerscale_bwd";
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor_of(who, "dh", dh, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "f", f, rows, dim, dlambda ? KEEL_REQUIRED : KEEL_OPTIONAL,
                                   KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "dx", dx, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "df", df, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
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
    const int acc = (flags & KEEL_FLAG_ACCUMULATE_DX) != 0;
    ls_bwd_job j = {ctx->kernels, dim, lambda, acc, 0, {0}};
    keel_stage_add(&j.stage, dh, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, dlambda ? f : keel_none(), KEEL_STAGE_IN);
    keel_stage_add(&j.stage, dx, acc ? KEEL_STAGE_ACC : KEEL_STAGE_OUT);
    keel_stage_add(&j.stage, df, acc ? KEEL_STAGE_ACC : KEEL_STAGE_OUT);
    if ((st = keel_stage_setup(&j.stage, ctx, who, rows, dim)))
        return st;
    /* the kernel sees a block of rows: whether dx and df stream is told (never into a stage) */
    if (!j.stage.mem)
        j.hints = keel_bwd_hints(ctx, rows, dh.stride * sizeof(float),
                                 (dx.data ? dx.stride : df.stride) * sizeof(float)) &
                  KEEL_KBWD_STREAM;
    float *const outs[] = {dlambda};
    return keel_run_rows_reduce(ctx, who, &j.stage, rows, dim, ls_bwd_block, &j, outs, 1,
                                (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0);
}

keel_status keel_layerscale_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dh,
                                keel_tensor f, const float *lambda, keel_tensor dx,
                                keel_tensor df, float *dlambda, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_layerscale_bwd");
    return st ? st
              : keel_ctx_leave(ctx, layerscale_bwd(ctx, rows, dim, dh, f, lambda, dx, df, dlambda,
                                                   flags));
}
