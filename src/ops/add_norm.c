/* Fused residual add + LayerNorm / RMSNorm operators (keel.h, "Transformer blocks"): validate,
 * then run the context's fused kernels over the rows; the backward gathers dgamma, dbeta,
 * dlambda and dbias over fixed row blocks (keel_run_rows_reduce), so every output is the
 * same for any thread count. Tensors may be f32, bf16 or f16: bf16/f16 rows are staged
 * through the float32 kernels (stage.h), each output rounded once. */
#include <math.h>
#include <stdint.h>

#include "stage.h"
#include "error.h"
#include "gamma_plus_one.h"
#include "norm_common.h"
#include "parallel.h"
#include "validate.h"

/* Two outputs that must not share memory at all (h and y, dx and dr). */
static keel_status check_distinct(const char *who, const char *a_name, keel_tensor a,
                                  const char *b_name, keel_tensor b, size_t rows, size_t dim)
{
    if (a.data && b.data && rows > 0 && a.data == b.data && a.stride == b.stride)
        return keel_fail(KEEL_EINVAL, "%s: %s and %s are the same tensor (each needs its own memory)",
                         who, a_name, b_name);
    return keel_check_overlap(who, a_name, a, b_name, b, rows, dim);
}

static keel_status check_alpha(const char *who, float alpha)
{
    if (!isfinite(alpha))
        return keel_fail(KEEL_EINVAL, "%s: res->alpha (%g) must be finite", who, (double)alpha);
    return KEEL_OK;
}

/* The residual of a forward: x and r required. */
static keel_status check_res_fwd(const char *who, const keel_residual *res, size_t rows,
                                 size_t dim)
{
    keel_status st;
    if (!res)
        return keel_fail(KEEL_ENULL, "%s: res is NULL", who);
    if ((st = keel_check_tensor_of(who, "res->x", res->x, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "res->r", res->r, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = check_alpha(who, res->alpha)))
        return st;
    return KEEL_OK;
}

/* Checks shared by both forwards: the residual, h (optional) and y, their overlaps, eps. */
static keel_status check_fwd(const char *who, keel_ctx *ctx, size_t rows, size_t dim,
                             const keel_residual *res, keel_tensor h, keel_tensor y, float eps,
                             unsigned flags, unsigned allowed)
{
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = check_res_fwd(who, res, rows, dim)) ||
        (st = keel_check_tensor_of(who, "h", h, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "y", y, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_overlap(who, "h", h, "res->x", res->x, rows, dim)) ||
        (st = keel_check_overlap(who, "h", h, "res->r", res->r, rows, dim)) ||
        (st = keel_check_overlap(who, "y", y, "res->x", res->x, rows, dim)) ||
        (st = keel_check_overlap(who, "y", y, "res->r", res->r, rows, dim)) ||
        (st = check_distinct(who, "h", h, "y", y, rows, dim)) ||
        (st = keel_check_eps(who, eps)) || (st = keel_check_flags(who, flags, allowed)))
        return st;
    return KEEL_OK;
}

/* The kernels' residual on rows staged (or not) as p[ix], p[ix + 1] (x, r). */
static keel_f32_res kernel_res(const keel_residual *res, float *const *p, const size_t *s, int ix)
{
    keel_f32_res k = {p[ix], s[ix], p[ix + 1], s[ix + 1], res->alpha, res->lambda, res->bias};
    return k;
}

/* ---- forwards ------------------------------------------------------------------------------ */

/* Staged tensors of a forward: x, r, h, y. */
enum { FWD_X, FWD_R, FWD_H, FWD_Y };

typedef struct add_fwd_job {
    const keel_kernels *k;
    int rms;
    size_t dim;
    const keel_residual *res;
    keel_stage stage;
    const float *gamma, *beta;
    float eps;
    float *mean, *rstd;
} add_fwd_job;

static void add_fwd_block(const void *job, void *unused, size_t r, size_t n, float *const *p,
                          const size_t *s)
{
    const add_fwd_job *j = job;
    (void)unused;
    const keel_f32_res res = kernel_res(j->res, p, s, FWD_X);
    float *rstd = j->rstd ? j->rstd + r : NULL;
    if (j->rms)
        j->k->f32_add_rmsnorm_fwd(n, j->dim, &res, p[FWD_H], s[FWD_H], p[FWD_Y], s[FWD_Y],
                                  j->gamma, j->eps, rstd);
    else
        j->k->f32_add_layernorm_fwd(n, j->dim, &res, p[FWD_H], s[FWD_H], p[FWD_Y], s[FWD_Y],
                                    j->gamma, j->beta, j->eps, j->mean ? j->mean + r : NULL, rstd);
}

static keel_status fwd_stage(add_fwd_job *j, keel_ctx *ctx, const char *who, size_t rows,
                             size_t dim, const keel_residual *res, keel_tensor h, keel_tensor y)
{
    keel_stage_add(&j->stage, res->x, KEEL_STAGE_IN);
    keel_stage_add(&j->stage, res->r, KEEL_STAGE_IN);
    keel_stage_add(&j->stage, h, KEEL_STAGE_OUT);
    keel_stage_add(&j->stage, y, KEEL_STAGE_OUT);
    return keel_stage_setup(&j->stage, ctx, who, rows, dim);
}

static keel_status add_layernorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                     const keel_residual *res, keel_tensor h, keel_tensor y,
                                     const float *gamma, const float *beta, float eps, float *mean,
                                     float *rstd, unsigned flags)
{
    static const char who[] = "keel_add_layernorm_fwd";
    keel_status st = check_fwd(who, ctx, rows, dim, res, h, y, eps, flags, 0);
    if (st != KEEL_OK || rows == 0)
        return st;
    add_fwd_job j = {ctx->kernels, 0, dim, res, {0}, gamma, beta, eps, mean, rstd};
    if ((st = fwd_stage(&j, ctx, who, rows, dim, res, h, y)))
        return st;
    keel_run_rows(ctx, &j.stage, rows, dim, add_fwd_block, &j);
    return KEEL_OK;
}

keel_status keel_add_layernorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                   const keel_residual *res, keel_tensor h, keel_tensor y,
                                   const float *gamma, const float *beta, float eps, float *mean,
                                   float *rstd, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_add_layernorm_fwd");
    return st ? st
              : keel_ctx_leave(ctx, add_layernorm_fwd(ctx, rows, dim, res, h, y, gamma, beta, eps,
                                                      mean, rstd, flags));
}

static keel_status add_rmsnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                   const keel_residual *res, keel_tensor h, keel_tensor y,
                                   const float *gamma, float eps, float *rstd, unsigned flags)
{
    static const char who[] = "keel_add_rmsnorm_fwd";
    keel_status st = check_fwd(who, ctx, rows, dim, res, h, y, eps, flags, KEEL_FLAG_GAMMA_PLUS_ONE);
    if (st != KEEL_OK || rows == 0)
        return st;
    const float *w;
    if ((st = keel_gamma_plus_one(ctx, who, dim, gamma, flags, &w)))
        return st;
    add_fwd_job j = {ctx->kernels, 1, dim, res, {0}, w, NULL, eps, NULL, rstd};
    if ((st = fwd_stage(&j, ctx, who, rows, dim, res, h, y)))
        return st;
    keel_run_rows(ctx, &j.stage, rows, dim, add_fwd_block, &j);
    return KEEL_OK;
}

keel_status keel_add_rmsnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                 const keel_residual *res, keel_tensor h, keel_tensor y,
                                 const float *gamma, float eps, float *rstd, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_add_rmsnorm_fwd");
    return st ? st
              : keel_ctx_leave(ctx, add_rmsnorm_fwd(ctx, rows, dim, res, h, y, gamma, eps, rstd,
                                                    flags));
}

/* ---- backwards ----------------------------------------------------------------------------- */

/* Checks shared by both backwards. */
static keel_status check_bwd(const char *who, keel_ctx *ctx, size_t rows, size_t dim,
                             keel_tensor dy, keel_tensor dh, const keel_residual *res,
                             keel_tensor h, const keel_residual_grads *g, float eps,
                             unsigned flags, unsigned allowed)
{
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)))
        return st;
    if (!res)
        return keel_fail(KEEL_ENULL, "%s: res is NULL", who);
    const int need_x = !h.data, need_r = !h.data || (g && g->dlambda);
    const keel_tensor none = keel_none();
    const keel_tensor dx = g ? g->dx : none, dr = g ? g->dr : none;
    if ((st = keel_check_tensor_of(who, "dy", dy, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "dh", dh, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "h", h, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "res->x", res->x, rows, dim,
                                   need_x ? KEEL_REQUIRED : KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "res->r", res->r, rows, dim,
                                   need_r ? KEEL_REQUIRED : KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = check_alpha(who, res->alpha)) ||
        (st = keel_check_tensor_of(who, "grads->dx", dx, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "grads->dr", dr, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = check_distinct(who, "grads->dx", dx, "grads->dr", dr, rows, dim)))
        return st;
    /* every output is exactly one input or apart from it: the kernels read an element of every
     * input before they write that element of any output */
    const struct {
        const char *name;
        keel_tensor t;
    } ins[] = {{"dy", dy}, {"dh", dh}, {"h", h}, {"res->x", res->x}, {"res->r", res->r}};
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++)
        if ((st = keel_check_overlap(who, "grads->dx", dx, ins[i].name, ins[i].t, rows, dim)) ||
            (st = keel_check_overlap(who, "grads->dr", dr, ins[i].name, ins[i].t, rows, dim)))
            return st;
    if ((st = keel_check_eps(who, eps)) || (st = keel_check_flags(who, flags, allowed)))
        return st;
    return KEEL_OK;
}

/* Staged tensors of a backward: x, r (adjacent, for kernel_res), dy, dh, h, dx, dr. */
enum { BWD_X, BWD_R, BWD_DY, BWD_DH, BWD_H, BWD_DX, BWD_DR };

typedef struct add_bwd_job {
    const keel_kernels *k;
    int rms;
    size_t dim;
    const keel_residual *res;
    keel_stage stage;
    const float *mean, *rstd, *gamma;
    float eps;
    int accumulate;
    int hints; /* kernels.h: KEEL_KBWD_PREFETCH, KEEL_KBWD_STREAM */
} add_bwd_job;

static void add_bwd_block(const void *job, void *ctx, size_t r, size_t n, float *const *p,
                          const size_t *s)
{
    const add_bwd_job *j = job;
    float *const *parts = ctx;
    const keel_f32_res res = kernel_res(j->res, p, s, BWD_X);
    keel_f32_res_grads out = {p[BWD_DX], s[BWD_DX], p[BWD_DR], s[BWD_DR], j->accumulate,
                              {parts[0], parts[1], parts[2], parts[3]}, j->hints};
    const float *rstd = j->rstd ? j->rstd + r : NULL;
    if (j->rms)
        j->k->f32_add_rmsnorm_bwd(n, j->dim, p[BWD_DY], s[BWD_DY], p[BWD_DH], s[BWD_DH], &res,
                                  p[BWD_H], s[BWD_H], rstd, j->gamma, j->eps, &out);
    else
        j->k->f32_add_layernorm_bwd(n, j->dim, p[BWD_DY], s[BWD_DY], p[BWD_DH], s[BWD_DH], &res,
                                    p[BWD_H], s[BWD_H], j->mean ? j->mean + r : NULL, rstd,
                                    j->gamma, j->eps, &out);
}

static keel_status run_bwd(keel_ctx *ctx, const char *who, size_t rows, size_t dim, int rms,
                           keel_tensor dy, keel_tensor dh, const keel_residual *res,
                           keel_tensor h, const float *mean, const float *rstd,
                           const float *gamma, float eps, const keel_residual_grads *g,
                           float *dgamma, float *dbeta, unsigned flags)
{
    const keel_residual_grads none = {keel_none(), keel_none(), NULL, NULL};
    if (!g)
        g = &none;
    if (rows == 0 || (!g->dx.data && !g->dr.data && !g->dlambda && !g->dbias && !dgamma && !dbeta))
        return KEEL_OK;
    const int acc = (flags & KEEL_FLAG_ACCUMULATE_DX) != 0;
    add_bwd_job j = {ctx->kernels, rms, dim, res, {0}, mean, rstd, gamma, eps, acc, 0};
    /* the kernels read x only without h, r only without h or for dlambda */
    const keel_tensor absent = keel_none();
    keel_stage_add(&j.stage, h.data ? absent : res->x, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, h.data && !g->dlambda ? absent : res->r, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, dy, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, dh, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, h, KEEL_STAGE_IN);
    keel_stage_add(&j.stage, g->dx, acc ? KEEL_STAGE_ACC : KEEL_STAGE_OUT);
    keel_stage_add(&j.stage, g->dr, acc ? KEEL_STAGE_ACC : KEEL_STAGE_OUT);
    keel_status st = keel_stage_setup(&j.stage, ctx, who, rows, dim);
    if (st != KEEL_OK)
        return st;
    if (!j.stage.mem) { /* float32 in place: the kernels see blocks of rows, the size is here */
        const keel_tensor in = h.data ? h : res->x;
        const keel_tensor out = g->dx.data ? g->dx : g->dr;
        j.hints = keel_bwd_hints(ctx, rows, in.stride * sizeof(float),
                                 out.data ? out.stride * sizeof(float) : 0);
        /* in place (an output over dh): its lines are read anyway; streaming them only adds
         * the eviction */
        if ((g->dx.data && g->dx.data == dh.data) || (g->dr.data && g->dr.data == dh.data))
            j.hints &= ~KEEL_KBWD_STREAM;
    }
    float *const outs[4] = {dgamma, dbeta, g->dlambda, g->dbias}; /* KEEL_PART_* order */
    return keel_run_rows_reduce(ctx, who, &j.stage, rows, dim, add_bwd_block, &j, outs, 4,
                                (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0);
}

static keel_status add_layernorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                                     keel_tensor dh, const keel_residual *res, keel_tensor h,
                                     const float *mean, const float *rstd, const float *gamma,
                                     float eps, const keel_residual_grads *grads, float *dgamma,
                                     float *dbeta, unsigned flags)
{
    static const char who[] = "keel_add_layernorm_bwd";
    keel_status st = check_bwd(who, ctx, rows, dim, dy, dh, res, h, grads, eps, flags,
                               KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS);
    if (st != KEEL_OK)
        return st;
    if ((mean == NULL) != (rstd == NULL))
        return keel_fail(KEEL_EINVAL, "%s: mean (%s) and rstd (%s) must be given both or neither", who,
                         mean ? "given" : "NULL", rstd ? "given" : "NULL");
    return run_bwd(ctx, who, rows, dim, 0, dy, dh, res, h, mean, rstd, gamma, eps, grads, dgamma,
                   dbeta, flags);
}

keel_status keel_add_layernorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                                   keel_tensor dh, const keel_residual *res, keel_tensor h,
                                   const float *mean, const float *rstd, const float *gamma,
                                   float eps, const keel_residual_grads *grads, float *dgamma,
                                   float *dbeta, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_add_layernorm_bwd");
    return st ? st
              : keel_ctx_leave(ctx, add_layernorm_bwd(ctx, rows, dim, dy, dh, res, h, mean, rstd,
                                                      gamma, eps, grads, dgamma, dbeta, flags));
}

static keel_status add_rmsnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                                   keel_tensor dh, const keel_residual *res, keel_tensor h,
                                   const float *rstd, const float *gamma, float eps,
                                   const keel_residual_grads *grads, float *dgamma, unsigned flags)
{
    static const char who[] = "keel_add_rmsnorm_bwd";
    keel_status st = check_bwd(who, ctx, rows, dim, dy, dh, res, h, grads, eps, flags,
                               KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS |
                                   KEEL_FLAG_GAMMA_PLUS_ONE);
    if (st != KEEL_OK || rows == 0)
        return st;
    const float *w;
    if ((st = keel_gamma_plus_one(ctx, who, dim, gamma, flags, &w)))
        return st;
    return run_bwd(ctx, who, rows, dim, 1, dy, dh, res, h, NULL, rstd, w, eps, grads, dgamma,
                   NULL, flags);
}

keel_status keel_add_rmsnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
                                 keel_tensor dh, const keel_residual *res, keel_tensor h,
                                 const float *rstd, const float *gamma, float eps,
                                 const keel_residual_grads *grads, float *dgamma, unsigned flags)
{
    keel_status st = keel_ctx_enter(ctx, "keel_add_rmsnorm_bwd");
    return st ? st
              : keel_ctx_leave(ctx, add_rmsnorm_bwd(ctx, rows, dim, dy, dh, res, h, rstd, gamma,
                                                    eps, grads, dgamma, flags));
}
