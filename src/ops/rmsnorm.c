/* RMSNorm operators: validate, then plan the rows over the context's threads, staging
 * bf16/f16 rows through the float32 kernels of the context's ISA path. */
#include "error.h"
#include "gamma_plus_one.h"
#include "norm_common.h"
#include "parallel.h"
#include "stage.h"
#include "validate.h"

typedef struct rms_fwd_job {
    keel_norm_call call;
    const float *gamma;
    float eps;
    float *rstd;
} rms_fwd_job;

/* rows [r, r + n): as float32, x = t[0], y = t[1], or (a native stage: t NULL) the 16-bit
 * tensors where they are */
static void rms_fwd_block(const void *p, void *unused, size_t r, size_t n, float *const *t,
                          const size_t *s)
{
    const rms_fwd_job *j = p;
    const keel_kernels *k = j->call.k;
    float *rstd = j->rstd ? j->rstd + r : NULL;
    (void)unused;
    if (!t) {
        const keel_tensor x = j->call.stage.t[0], y = j->call.stage.t[1];
        j->call.u16.rmsnorm_fwd(n, j->call.dim, (const uint16_t *)x.data + r * x.stride, x.stride,
          (uint16_t *)y.data + r * y.stride, y.stride, j->gamma, j->eps, rstd);
        return;
    }
    k->f32_rmsnorm_fwd(n, j->call.dim, t[0], s[0], t[1], s[1], j->gamma, j->eps, rstd);
}

static keel_status rms_fwd(const char *who, keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                           keel_tensor y, const float *gamma, float eps, const keel_quant_i8 *quant,
                           float *rstd, unsigned flags)
{
    keel_status st;
    rms_fwd_job j = {0};
    if ((st = keel_norm_fwd_setup(who, ctx, rows, dim, x, y, eps, quant, flags,
                                  KEEL_FLAG_GAMMA_PLUS_ONE, &j.call)))
        return st;
    if (rows == 0)
        return KEEL_OK;
    /* Gemma's (1 + gamma): a weight vector for the kernels, then SmoothQuant folds that */
    if ((st = keel_gamma_plus_one(ctx, who, dim, gamma, flags, &gamma)))
        return st;
    const float *no_beta = NULL;
    if ((st = keel_norm_fold_smooth(who, ctx, &j.call, dim, &gamma, &no_beta)))
        return st;
    j.gamma = gamma;
    j.eps = eps;
    j.rstd = rstd;
    keel_run_rows(ctx, &j.call.stage, rows, dim, rms_fwd_block, &j);
    return KEEL_OK;
}

keel_status keel_rmsnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                             keel_tensor y, const float *gamma, float eps, float *rstd,
                             unsigned flags)
{
    static const char who[] = "keel_rmsnorm_fwd";
    keel_status st = keel_ctx_enter(ctx, who);
    return st ? st
              : keel_ctx_leave(ctx, rms_fwd(who, ctx, rows, dim, x, y, gamma, eps, NULL, rstd,
                                            flags));
}

keel_status keel_rmsnorm_fwd_i8(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor x,
                                keel_tensor y, const float *gamma, float eps,
                                const keel_quant_i8 *quant, float *rstd, unsigned flags)
{
    static const char who[] = "keel_rmsnorm_fwd_i8";
    if (!quant)
        return keel_fail(KEEL_ENULL, "%s: quant is NULL", who);
    keel_status st = keel_ctx_enter(ctx, who);
    return st ? st
              : keel_ctx_leave(ctx, rms_fwd(who, ctx, rows, dim, x, y, gamma, eps, quant, rstd,
                                            flags));
}

typedef struct rms_bwd_job {
    keel_norm_call call;
    const float *rstd, *gamma;
    float eps;
    int accumulate_dx;
    int hints; /* kernels.h: KEEL_KBWD_PREFETCH, KEEL_KBWD_STREAM */
} rms_bwd_job;

/* rows [r, r + n): as float32, dy = t[0], x = t[1], dx = t[2] (NULL: skipped), or (a native
 * stage: t NULL) the 16-bit tensors where they are */
static void rms_bwd_block(const void *p, void *parts, size_t r, size_t n, float *const *t,
                          const size_t *s)
{
    const rms_bwd_job *j = p;
    const keel_kernels *k = j->call.k;
    float *const *pp = parts; /* dgamma (keel_run_rows_reduce) */
    const float *rstd = j->rstd ? j->rstd + r : NULL;
    const int flags = j->accumulate_dx | j->hints;
    if (!t) {
        const keel_tensor dy = j->call.stage.t[0], x = j->call.stage.t[1], dx = j->call.stage.t[2];
        j->call.u16.rmsnorm_bwd(n, j->call.dim, (const uint16_t *)dy.data + r * dy.stride, dy.stride,
          (const uint16_t *)x.data + r * x.stride, x.stride, rstd, j->gamma, j->eps,
          dx.data ? (uint16_t *)dx.data + r * dx.stride : NULL, dx.stride, flags, pp[0]);
        return;
    }
    k->f32_rmsnorm_bwd(n, j->call.dim, t[0], s[0], t[1], s[1], rstd, j->gamma, j->eps, t[2], s[2],
                       flags, pp[0]);
}

static keel_status rmsnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                               keel_tensor x, const float *rstd, const float *gamma, float eps,
                               keel_tensor dx, float *dgamma, unsigned flags)
{
    static const char who[] = "keel_rmsnorm_bwd";
    keel_status st;
    rms_bwd_job j = {0};
    if ((st = keel_norm_bwd_setup(who, ctx, rows, dim, dy, x, dx, eps,
                                  flags & ~(unsigned)KEEL_FLAG_GAMMA_PLUS_ONE, &j.call)))
        return st;
    if (rows == 0 || (!dx.data && !dgamma))
        return KEEL_OK;
    if ((st = keel_gamma_plus_one(ctx, who, dim, gamma, flags, &gamma)))
        return st;
    j.rstd = rstd;
    j.gamma = gamma;
    j.eps = eps;
    j.accumulate_dx = (flags & KEEL_FLAG_ACCUMULATE_DX) != 0;
    j.hints = keel_norm_bwd_hints(ctx, rows, &j.call);
    float *const outs[] = {dgamma};
    return keel_run_rows_reduce(ctx, who, &j.call.stage, rows, dim, rms_bwd_block, &j, outs, 1,
                                (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0);
}

keel_status keel_rmsnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                             keel_tensor x, const float *rstd, const float *gamma, float eps,
                             keel_tensor dx, float *dgamma, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_rmsnorm_bwd");
    return st ? st
              : keel_ctx_leave(ctx, rmsnorm_bwd(ctx, rows, dim, dy, x, rstd, gamma, eps, dx, dgamma,
                                                flags));
}
