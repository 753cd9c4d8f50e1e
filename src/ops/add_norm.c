/* Fused residual add + LayerNorm / RMSNorm operators (keel.h, "Transformer blocks"): validate,
 * then run the context's fused kernels over the rows; the backward gathers dgamma, dbeta,
 * dlambda and dbias over fixed row blocks (keel_run_rows_reduce_n), so every output is the
 * same for any thread count. */
#include <math.h>

#include "error.h"
#include "gamma_plus_one.h"
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
    if ((st = keel_check_tensor(who, "res->x", res->x, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "res->r", res->r, rows, dim, KEEL_REQUIRED)) ||
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
        (st = keel_check_tensor(who, "h", h, rows, dim, KEEL_OPTIONAL)) ||
        (st = keel_check_tensor(who, "y", y, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_overlap(who, "h", h, "res->x", res->x, rows, dim)) ||
        (st = keel_check_overlap(who, "h", h, "res->r", res->r, rows, dim)) ||
        (st = keel_check_overlap(who, "y", y, "res->x", res->x, rows, dim)) ||
        (st = keel_check_overlap(who, "y", y, "res->r", res->r, rows, dim)) ||
        (st = check_distinct(who, "h", h, "y", y, rows, dim)) ||
        (st = keel_check_eps(who, eps)) || (st = keel_check_flags(who, flags, allowed)))
        return st;
    return KEEL_OK;
}

static keel_f32_res kernel_res(const keel_residual *res)
{
    keel_f32_res k = {res->x.data, res->x.stride, res->r.data, res->r.stride, res->alpha,
                      res->lambda, res->bias};
    return k;
}

/* ---- forwards ------------------------------------------------------------------------------ */

typedef struct add_fwd_job {
    const keel_kernels *k;
    int rms;
    size_t dim;
    keel_f32_res res;
    float *h;
    size_t hs;
    float *y;
    size_t ys;
    const float *gamma, *beta;
    float eps;
    float *mean, *rstd;
} add_fwd_job;

static void add_fwd_rows(const void *p, size_t r0, size_t r1, float *part0, float *part1)
{
    const add_fwd_job *j = p;
    (void)part0;
    (void)part1;
    const keel_f32_res res = keel_f32_res_from(&j->res, r0);
    float *h = j->h ? j->h + r0 * j->hs : NULL;
    float *rstd = j->rstd ? j->rstd + r0 : NULL;
    if (j->rms)
        j->k->f32_add_rmsnorm_fwd(r1 - r0, j->dim, &res, h, j->hs, j->y + r0 * j->ys, j->ys,
                                  j->gamma, j->eps, rstd);
    else
        j->k->f32_add_layernorm_fwd(r1 - r0, j->dim, &res, h, j->hs, j->y + r0 * j->ys, j->ys,
                                    j->gamma, j->beta, j->eps, j->mean ? j->mean + r0 : NULL,
                                    rstd);
}

keel_status keel_add_layernorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
                                   const keel_residual *res, keel_tensor h, keel_tensor y,
                                   const float *gamma, const float *beta, float eps, float *mean,
                                   float *rstd, unsigned flags)
{
    static const char who[] = "keel_add_layernorm_fwd";
    keel_status st = check_fwd(who, ctx, rows, dim, res, h, y, eps, flags, 0);
    if (st != KEEL_OK || rows == 0)
        return st;
    add_fwd_job j = {ctx->kernels, 0, dim, kernel_res(res), h.data, h.stride, y.data, y.stride,
                     gamma, beta, eps, mean, rstd};
    keel_run_rows(ctx, rows, dim, add_fwd_rows, &j);
    return KEEL_OK;
}

keel_status keel_add_rmsnorm_fwd(keel_ctx *ctx, size_t rows, size_t dim,
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
    add_fwd_job j = {ctx->kernels, 1, dim, kernel_res(res), h.data, h.stride, y.data, y.stride,
                     w, NULL, eps, NULL, rstd};
    keel_run_rows(ctx, rows, dim, add_fwd_rows, &j);
    return KEEL_OK;
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
    if ((st = keel_check_tensor(who, "dy", dy, rows, dim, KEEL_REQUIRED)) ||
        (st = keel_check_tensor(who, "dh", dh, rows, dim, KEEL_OPTIONAL)) ||
        (st = keel_check_tensor(who, "h", h, rows, dim, KEEL_OPTIONAL)) ||
        (st = keel_check_tensor(who, "res->x", res->x, rows, dim,
                                need_x ? KEEL_REQUIRED : KEEL_OPTIONAL)) ||
        (st = keel_check_tensor(who, "res->r", res->r, rows, dim,
                                need_r ? KEEL_REQUIRED : KEEL_OPTIONAL)) ||
        (st = check_alpha(who, res->alpha)) ||
        (st = keel_check_tensor(who, "grads->dx", dx, rows, dim, KEEL_OPTIONAL)) ||
        (st = keel_check_tensor(who, "grads->dr", dr, rows, dim, KEEL_OPTIONAL)) ||
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

typedef struct add_bwd_job {
    const keel_kernels *k;
    int rms;
    size_t dim;
    const float *dy;
    size_t dys;
    const float *dh;
    size_t dhs;
    keel_f32_res res;
    const float *h;
    size_t hs;
    const float *mean, *rstd, *gamma;
    float eps;
    float *dx;
    size_t dxs;
    float *dr;
    size_t drs;
    int accumulate;
} add_bwd_job;

static void add_bwd_rows(const void *p, size_t r0, size_t r1, float *const *parts)
{
    const add_bwd_job *j = p;
    const keel_f32_res res = keel_f32_res_from(&j->res, r0);
    keel_f32_res_grads out = {j->dx ? j->dx + r0 * j->dxs : NULL, j->dxs,
                              j->dr ? j->dr + r0 * j->drs : NULL, j->drs, j->accumulate,
                              {parts[0], parts[1], parts[2], parts[3]}};
    const float *dh = j->dh ? j->dh + r0 * j->dhs : NULL;
    const float *h = j->h ? j->h + r0 * j->hs : NULL;
    const float *rstd = j->rstd ? j->rstd + r0 : NULL;
    if (j->rms)
        j->k->f32_add_rmsnorm_bwd(r1 - r0, j->dim, j->dy + r0 * j->dys, j->dys, dh, j->dhs, &res,
                                  h, j->hs, rstd, j->gamma, j->eps, &out);
    else
        j->k->f32_add_layernorm_bwd(r1 - r0, j->dim, j->dy + r0 * j->dys, j->dys, dh, j->dhs,
                                    &res, h, j->hs, j->mean ? j->mean + r0 : NULL, rstd,
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
    add_bwd_job j = {ctx->kernels, rms, dim, dy.data, dy.stride, dh.data, dh.stride,
                     kernel_res(res), h.data, h.stride, mean, rstd, gamma, eps,
                     g->dx.data, g->dx.stride, g->dr.data, g->dr.stride,
                     (flags & KEEL_FLAG_ACCUMULATE_DX) != 0};
    float *const outs[4] = {dgamma, dbeta, g->dlambda, g->dbias}; /* KEEL_PART_* order */
    return keel_run_rows_reduce_n(ctx, who, rows, dim, add_bwd_rows, &j, outs, 4,
                                  (flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0);
}

keel_status keel_add_layernorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
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

keel_status keel_add_rmsnorm_bwd(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor dy,
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
