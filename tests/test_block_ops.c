/*
 * test_block_ops: the transformer-block operations of keel.h against the float64 reference
 * (keel_ref_block.h), on every instruction-set path this machine runs, and the exact
 * relations the contract promises:
 *  - fused add + LayerNorm / RMSNorm: h within a few ulps of alpha*x + lambda*r + bias (in
 *    ulps of the row's largest |term|); y, mean, rstd within the norms' bounds of the reference
 *    applied to keel's own h; y, mean, rstd BITWISE those of keel_layernorm_fwd /
 *    keel_rmsnorm_fwd on that h; post-norm (h not stored), in place (h over x, y over r) and
 *    Gemma's (1 + gamma) bitwise the same as the plain call; the backward's dx, dr, dlambda,
 *    dbias, dgamma, dbeta against the reference, bitwise the same with h saved or recomputed,
 *    statistics saved or recomputed, outputs skipped, dx in place over dh, accumulated; with
 *    alpha 1 and no lambda, dx bitwise keel_layernorm_bwd's dx accumulated into dh; NaN/Inf
 *    rows kept to their row;
 *  - LayerScale, BatchNorm (training, inference, running statistics with momentum and the
 *    cumulative average, NaN columns, a batch of one row), DyT (tanh and 1 - tanh^2 in ulps
 *    over a sweep of arguments), Gemma's flag on keel_rmsnorm_fwd/bwd;
 *  - bad input: every new function refuses it with the documented status, a message that
 *    names the argument, and no buffer changed.
 */
#include <float.h>

#include "block_test_util.h"

typedef enum norm_kind { NORM_LN, NORM_RMS } norm_kind;

/* ==== fused residual add + norm ============================================================= */

typedef struct add_config {
    norm_kind op;
    keel_isa isa;
    keel_case_kind kind;
    size_t rows, dim;
    size_t xs, rs, hs, ys, dys, dhs, dxs, drs;
    float alpha, eps;
    int lambda, bias, gamma, beta, gemma, dh;
} add_config;

static const char *add_describe(const add_config *c)
{
    static char text[256];
    snprintf(text, sizeof text,
             "add+%s isa=%s case=%s %zux%zu strides x%zu r%zu h%zu y%zu dy%zu dh%zu dx%zu dr%zu "
             "alpha=%g eps=%g%s%s%s%s%s%s",
             c->op == NORM_LN ? "layernorm" : "rmsnorm", keel_isa_name(c->isa),
             keel_case_name(c->kind), c->rows, c->dim, c->xs, c->rs, c->hs, c->ys, c->dys, c->dhs,
             c->dxs, c->drs, (double)c->alpha, (double)c->eps, c->lambda ? " lambda" : "",
             c->bias ? " bias" : "", c->gamma ? " gamma" : "", c->beta ? " beta" : "",
             c->gemma ? " gemma" : "", c->dh ? " dh" : "");
    return text;
}

/* The inputs of one configuration. */
typedef struct add_case {
    float *x, *r, *dy, *dh;   /* rows x stride (+ a spare row) */
    float *lambda, *bias, *gamma, *beta;
    float *w;                 /* the RMSNorm weight keel uses: gamma, or (float)(1 + gamma) */
} add_case;

static add_case add_case_make(keel_rng *rng, const add_config *c)
{
    add_case k;
    const size_t rows = c->rows, dim = c->dim;
    k.x = bt_in(rng, c->kind, rows, dim, c->xs);
    /* the branch output: the same kind, plain noise, or zeros (then h = alpha*x + bias) */
    const int rk = (int)keel_rng_below(rng, 3);
    k.r = bt_in(rng, rk == 0 ? c->kind : rk == 1 ? KEEL_CASE_NORMAL : KEEL_CASE_ZERO, rows, dim, c->rs);
    k.dy = bt_in(rng, KEEL_CASE_NORMAL, rows, dim, c->dys);
    for (size_t r = 0; r < rows; r++)
        keel_case_fill_normal(rng, k.dy + r * c->dys, dim);
    k.dh = NULL;
    if (c->dh) {
        k.dh = bt_in(rng, KEEL_CASE_NORMAL, rows, dim, c->dhs);
        for (size_t r = 0; r < rows; r++)
            keel_case_fill_normal(rng, k.dh + r * c->dhs, dim);
    }
    k.lambda = c->lambda ? bt_vec(rng, dim, 0.5, 0.5) : NULL;
    k.bias = c->bias ? bt_vec(rng, dim, 0.0, 0.25) : NULL;
    k.gamma = NULL;
    if (c->gamma) {
        k.gamma = test_alloc(dim + 1);
        if (c->gemma) /* zero-initialised weights, trained a little */
            for (size_t j = 0; j < dim; j++)
                k.gamma[j] = (float)(0.5 * keel_rng_normal(rng));
        else
            keel_case_fill_gamma(rng, k.gamma, dim);
    }
    k.beta = NULL;
    if (c->beta) {
        k.beta = test_alloc(dim + 1);
        keel_case_fill_beta(rng, k.beta, dim);
    }
    k.w = k.gamma;
    if (c->gemma && k.gamma) {
        k.w = test_alloc(dim + 1);
        for (size_t j = 0; j < dim; j++)
            k.w[j] = 1.0f + k.gamma[j];
    }
    return k;
}

static void add_case_free(add_case *k)
{
    if (k->w != k->gamma)
        free(k->w);
    float *all[] = {k->x, k->r, k->dy, k->dh, k->lambda, k->bias, k->gamma, k->beta};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

static keel_residual add_res(const add_config *c, const add_case *k, const float *x,
                             const float *r)
{
    keel_residual res = keel_residual_add(keel_f32(x, c->xs), keel_f32(r, c->rs));
    res.alpha = c->alpha;
    res.lambda = k->lambda;
    res.bias = k->bias;
    return res;
}

static unsigned gemma_flag(const add_config *c) { return c->gemma ? KEEL_FLAG_GAMMA_PLUS_ONE : 0; }

static keel_status add_fwd(keel_ctx *ctx, const add_config *c, const add_case *k,
                           const keel_residual *res, keel_tensor h, float *y, size_t ys,
                           float *mean, float *rstd)
{
    if (c->op == NORM_LN)
        return keel_add_layernorm_fwd(ctx, c->rows, c->dim, res, h, keel_f32(y, ys), k->gamma,
                                      k->beta, c->eps, mean, rstd, 0);
    return keel_add_rmsnorm_fwd(ctx, c->rows, c->dim, res, h, keel_f32(y, ys), k->gamma, c->eps,
                                rstd, gemma_flag(c));
}

static keel_status add_bwd(keel_ctx *ctx, const add_config *c, const add_case *k,
                           const keel_residual *res, const float *dy, size_t dys, keel_tensor dh,
                           keel_tensor h, const float *mean, const float *rstd,
                           const keel_residual_grads *g, float *dgamma, float *dbeta,
                           unsigned flags)
{
    if (c->op == NORM_LN)
        return keel_add_layernorm_bwd(ctx, c->rows, c->dim, keel_f32(dy, dys), dh, res, h, mean,
                                      rstd, k->gamma, c->eps, g, dgamma, dbeta, flags);
    return keel_add_rmsnorm_bwd(ctx, c->rows, c->dim, keel_f32(dy, dys), dh, res, h, rstd,
                                k->gamma, c->eps, g, dgamma, flags | gemma_flag(c));
}

/* Every output of a backward. */
typedef struct add_grads {
    float *dx, *dr, *dlambda, *dbias, *dgamma, *dbeta;
} add_grads;

static add_grads add_grads_alloc(const add_config *c)
{
    add_grads g = {bt_out(c->rows, c->dxs), bt_out(c->rows, c->drs), bt_out(c->dim, 1),
                   bt_out(c->dim, 1), bt_out(c->dim, 1), bt_out(c->dim, 1)};
    return g;
}

static void add_grads_free(add_grads *g)
{
    float *all[] = {g->dx, g->dr, g->dlambda, g->dbias, g->dgamma, g->dbeta};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* The forward: h against the exact residual, y/mean/rstd against the reference on keel's h and
 * bitwise against the plain norm on it, and the post-norm, in-place and Gemma variants. Returns
 * h, mean, rstd (dense, for the backward). */
static void add_forward(keel_ctx *ctx, keel_rng *rng, const add_config *c, const add_case *k,
                        float **h_out, float **mean_out, float **rstd_out)
{
    const char *where = add_describe(c);
    const size_t rows = c->rows, dim = c->dim;
    const int ln = c->op == NORM_LN;
    float *h = bt_out(rows, c->hs), *y = bt_out(rows, c->ys);
    float *mean = bt_out(rows, 1), *rstd = bt_out(rows, 1);
    keel_residual res = add_res(c, k, k->x, k->r);
    bt_ok(where, "forward", add_fwd(ctx, c, k, &res, keel_f32(h, c->hs), y, c->ys,
                                    ln ? mean : NULL, rstd));

    /* h against alpha*x + lambda*r + bias in double, in ulps of the row's largest sum of
     * |terms| (x + r may cancel: the roundings are relative to the terms) */
    double *xd = bt_d(k->x, rows, dim, c->xs), *rd = bt_d(k->r, rows, dim, c->rs);
    double *ld = bt_d(k->lambda, 1, dim, dim), *bd = bt_d(k->bias, 1, dim, dim);
    double *href = test_alloc_d(rows * dim), *floors = test_alloc_d(rows);
    keel_ref_residual_f64(rows, dim, xd, rd, c->alpha, ld, bd, href);
    for (size_t r = 0; r < rows; r++) {
        floors[r] = 0.0;
        for (size_t j = 0; j < dim; j++) {
            const double t = fabs(c->alpha * xd[r * dim + j]) +
                             fabs((ld ? ld[j] : 1.0) * rd[r * dim + j]) + (bd ? fabs(bd[j]) : 0.0);
            floors[r] = fmax(floors[r], t);
        }
    }
    bt_rows(where, "h", h, c->hs, href, rows, dim, floors, 2.0);

    /* y, mean, rstd against the reference on keel's own h */
    double *hd = bt_d(h, rows, dim, c->hs), *yref = test_alloc_d(rows * dim);
    double *mref = test_alloc_d(rows), *rref = test_alloc_d(rows);
    double *gd = bt_d(k->w, 1, dim, dim), *betad = bt_d(k->beta, 1, dim, dim);
    if (ln)
        keel_ref_layernorm_fwd_f64(rows, dim, hd, gd, betad, c->eps, yref, mref, rref);
    else
        keel_ref_rmsnorm_fwd_f64(rows, dim, hd, gd, c->eps, yref, rref);
    /* floors: the row's largest |xhat * gamma| + |beta| (when eps dominates a row's variance,
     * xhat is small and beta may cancel most of y) */
    double *yfl = test_alloc_d(rows);
    for (size_t r = 0; r < rows; r++) {
        yfl[r] = 0.0;
        for (size_t j = 0; j < dim; j++) {
            const double b = betad ? fabs(betad[j]) : 0.0;
            yfl[r] = fmax(yfl[r], fabs(yref[r * dim + j] - (betad ? betad[j] : 0.0)) + b);
        }
    }
    bt_rows(where, "y", y, c->ys, yref, rows, dim, yfl, KEEL_BOUND_ROW_ULPS);
    free(yfl);
    if (ln)
        bt_each(where, "mean", mean, mref, rows, KEEL_BOUND_STAT_ULPS);
    bt_each(where, "rstd", rstd, rref, rows, KEEL_BOUND_STAT_ULPS);
    float *before = test_alloc((rows + 1) * c->hs);
    test_fill_sentinel(before, (rows + 1) * c->hs);
    bt_outside(where, "h", h, before, rows, dim, c->hs);
    free(before);
    before = test_alloc((rows + 1) * c->ys);
    test_fill_sentinel(before, (rows + 1) * c->ys);
    bt_outside(where, "y", y, before, rows, dim, c->ys);
    free(before);
    test_check(test_first_written(rstd + rows, 1) == 1 && test_first_written(mean + rows, 1) == 1,
               "%s: mean/rstd written past their rows", where);

    /* bitwise: the plain norm on keel's h (same ISA path) */
    float *y2 = bt_out(rows, c->ys), *m2 = bt_out(rows, 1), *r2 = bt_out(rows, 1);
    keel_status st = ln ? keel_layernorm_fwd(ctx, rows, dim, keel_f32(h, c->hs), keel_f32(y2, c->ys),
                                             k->gamma, k->beta, c->eps, m2, r2, 0)
                        : keel_rmsnorm_fwd(ctx, rows, dim, keel_f32(h, c->hs), keel_f32(y2, c->ys),
                                           k->w, c->eps, r2, 0);
    bt_ok(where, "plain norm on h", st);
    bt_same(where, "y vs the plain norm of h", y, c->ys, y2, c->ys, rows, dim);
    bt_same(where, "rstd vs the plain norm of h", rstd, 1, r2, 1, rows, 1);
    if (ln)
        bt_same(where, "mean vs the plain norm of h", mean, 1, m2, 1, rows, 1);

    /* post-norm: h not stored, y the same */
    test_fill_sentinel(y2, (rows + 1) * c->ys);
    bt_ok(where, "post-norm forward", add_fwd(ctx, c, k, &res, keel_none(), y2, c->ys, NULL, NULL));
    bt_same(where, "post-norm y", y2, c->ys, y, c->ys, rows, dim);

    /* in place: h over x and y over r (their strides), or h over r and y over x */
    if (c->hs == c->xs && c->ys == c->rs && bt_coin(rng, 0.5)) {
        float *bx = bt_copy(k->x, rows, c->xs), *br = bt_copy(k->r, rows, c->rs);
        keel_residual ip = add_res(c, k, bx, br);
        bt_ok(where, "in-place forward", add_fwd(ctx, c, k, &ip, keel_f32(bx, c->xs), br, c->rs,
                                                  NULL, NULL));
        bt_same(where, "in-place h (over x)", bx, c->xs, h, c->hs, rows, dim);
        bt_same(where, "in-place y (over r)", br, c->rs, y, c->ys, rows, dim);
        bt_outside(where, "in-place h", bx, k->x, rows, dim, c->xs);
        free(bx);
        free(br);
    } else if (c->hs == c->rs && c->ys == c->xs) {
        float *bx = bt_copy(k->x, rows, c->xs), *br = bt_copy(k->r, rows, c->rs);
        keel_residual ip = add_res(c, k, bx, br);
        bt_ok(where, "in-place forward", add_fwd(ctx, c, k, &ip, keel_f32(br, c->rs), bx, c->xs,
                                                  NULL, NULL));
        bt_same(where, "in-place h (over r)", br, c->rs, h, c->hs, rows, dim);
        bt_same(where, "in-place y (over x)", bx, c->xs, y, c->ys, rows, dim);
        free(bx);
        free(br);
    }
    /* Gemma: the flag equals passing (1 + gamma) as gamma */
    if (c->gemma) {
        test_fill_sentinel(y2, (rows + 1) * c->ys);
        bt_ok(where, "forward with 1 + gamma", keel_add_rmsnorm_fwd(ctx, rows, dim, &res, keel_none(),
                                                                    keel_f32(y2, c->ys), k->w,
                                                                    c->eps, NULL, 0));
        bt_same(where, "gemma flag vs (1 + gamma) passed", y2, c->ys, y, c->ys, rows, dim);
    }
    free(y2);
    free(m2);
    free(r2);
    double *all[] = {xd, rd, ld, bd, href, floors, hd, yref, mref, rref, gd, betad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    free(y);
    *h_out = h;
    *mean_out = mean;
    *rstd_out = rstd;
}

/* The reference backward at keel's h, and the floors of dx / dr / the sums over G. */
typedef struct add_ref {
    double *dx, *dr, *dlambda, *dbias, *dgamma, *dbeta;
    double *dlambda_mag, *dbias_mag, *dgamma_mag, *dbeta_mag;
    double *fx, *fr; /* per-row floors of dx and dr */
} add_ref;

static add_ref add_reference(const add_config *c, const add_case *k, const float *h)
{
    const size_t rows = c->rows, dim = c->dim, n = rows * dim;
    add_ref R;
    double **all[] = {&R.dx, &R.dr};
    for (int i = 0; i < 2; i++)
        *all[i] = test_alloc_d(n);
    double **cols[] = {&R.dlambda, &R.dbias, &R.dgamma, &R.dbeta, &R.dlambda_mag, &R.dbias_mag,
                       &R.dgamma_mag, &R.dbeta_mag};
    for (int i = 0; i < 8; i++)
        *cols[i] = test_alloc_d(dim);
    R.fx = test_alloc_d(rows);
    R.fr = test_alloc_d(rows);
    double *hd = bt_d(h, rows, dim, c->hs), *dyd = bt_d(k->dy, rows, dim, c->dys);
    double *dhd = bt_d(k->dh, rows, dim, c->dhs), *rd = bt_d(k->r, rows, dim, c->rs);
    double *ld = bt_d(k->lambda, 1, dim, dim), *gd = bt_d(k->w, 1, dim, dim);
    double *g = test_alloc_d(n), *rstd = test_alloc_d(rows);
    keel_ref_grads ng = {NULL, R.dgamma, R.dbeta, R.dgamma_mag, R.dbeta_mag};
    keel_ref_res_grads rg = {R.dx, R.dr, R.dlambda, R.dbias, NULL, NULL};
    int rc = (c->op == NORM_LN ? keel_ref_add_layernorm_bwd_f64 : keel_ref_add_rmsnorm_bwd_f64)(
        rows, dim, dyd, dhd, hd, rd, c->alpha, ld, gd, c->eps, &ng, &rg, g);
    if (rc)
        test_fatal("out of memory");
    double *mean = test_alloc_d(rows);
    if (c->op == NORM_LN)
        keel_ref_layernorm_fwd_f64(rows, dim, hd, NULL, NULL, c->eps, NULL, mean, rstd);
    else
        keel_ref_rmsnorm_fwd_f64(rows, dim, hd, NULL, c->eps, NULL, rstd);
    /* LayerNorm's xhat uses the mean as a float pair hi + lo (kernels.h): exact to ~2^-48 of
     * the mean, an absolute error of rstd * |mean| * 2^-48 in xhat, which a term dy * xhat
     * carries whatever its size (it shows on rows 1e6 standard deviations out, where a tiny
     * xhat's term can be all of a column's sum): room for it in dgamma's magnitude */
    if (c->op == NORM_LN)
        for (size_t r = 0; r < rows; r++)
            if (isfinite(mean[r]) && isfinite(rstd[r]))
                for (size_t j = 0; j < dim; j++)
                    R.dgamma_mag[j] += fabs(dyd[r * dim + j]) * rstd[r] * fabs(mean[r]) * 0x1p-46 / FLT_EPSILON;
    free(mean);
    /* G = dh + v: its rounding is relative to max(|dh|, the norm's dx scale) of the row */
    double lmax = 1.0;
    if (ld) {
        lmax = 0.0;
        for (size_t j = 0; j < dim; j++)
            lmax = fmax(lmax, fabs(ld[j]));
    }
    memset(R.dlambda_mag, 0, dim * sizeof(double));
    memset(R.dbias_mag, 0, dim * sizeof(double));
    for (size_t r = 0; r < rows; r++) {
        double fg = keel_dx_scale(dim, k->dy + r * c->dys, k->w, rstd[r]);
        if (dhd)
            fg = fmax(fg, bt_row_max(k->dh + r * c->dhs, dim));
        R.fx[r] = fabs((double)c->alpha) * fg;
        R.fr[r] = lmax * fg;
        for (size_t j = 0; j < dim; j++) {
            const double gg = fabs(g[r * dim + j]) + fg;
            /* + FLT_MIN: a product G * r below float's range (rows of 1e-30) flushes to a
             * subnormal or 0, an error no float sum can avoid */
            R.dlambda_mag[j] += gg * fabs(rd[r * dim + j]) + FLT_MIN;
            R.dbias_mag[j] += gg + FLT_MIN;
        }
    }
    double *tmp[] = {hd, dyd, dhd, rd, ld, gd, g, rstd};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++)
        free(tmp[i]);
    return R;
}

static void add_ref_free(add_ref *R)
{
    double *all[] = {R->dx, R->dr, R->dlambda, R->dbias, R->dgamma, R->dbeta, R->dlambda_mag,
                     R->dbias_mag, R->dgamma_mag, R->dbeta_mag, R->fx, R->fr};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* G's error (a few ulps of its floor) adds to every term of dlambda and dbias: 8 more. */
#define G_SUM_SLACK 8.0

static void add_backward(keel_ctx *ctx, keel_rng *rng, const add_config *c, const add_case *k,
                         const float *h, const float *mean, const float *rstd)
{
    const char *where = add_describe(c);
    const size_t rows = c->rows, dim = c->dim;
    const int ln = c->op == NORM_LN;
    const keel_residual res = add_res(c, k, k->x, k->r);
    const keel_tensor dh = k->dh ? keel_f32(k->dh, c->dhs) : keel_none();
    const keel_tensor ht = keel_f32(h, c->hs);
    const float *m = ln ? mean : NULL;
    add_ref R = add_reference(c, k, h);

    /* the baseline: every output, h and statistics saved */
    add_grads B = add_grads_alloc(c);
    keel_residual_grads gb = {keel_f32(B.dx, c->dxs), keel_f32(B.dr, c->drs), B.dlambda, B.dbias};
    bt_ok(where, "backward", add_bwd(ctx, c, k, &res, k->dy, c->dys, dh, ht, m, rstd, &gb,
                                     B.dgamma, ln ? B.dbeta : NULL, 0));
    bt_rows(where, "dx", B.dx, c->dxs, R.dx, rows, dim, R.fx, KEEL_BOUND_ROW_ULPS);
    bt_rows(where, "dr", B.dr, c->drs, R.dr, rows, dim, R.fr, KEEL_BOUND_ROW_ULPS);
    const double bound = keel_bound_dparam(rows);
    bt_sum(where, "dlambda", B.dlambda, R.dlambda, R.dlambda_mag, dim, bound + G_SUM_SLACK);
    bt_sum(where, "dbias", B.dbias, R.dbias, R.dbias_mag, dim, bound + G_SUM_SLACK);
    bt_sum(where, "dgamma", B.dgamma, R.dgamma, R.dgamma_mag, dim, bound);
    if (ln)
        bt_sum(where, "dbeta", B.dbeta, R.dbeta, R.dbeta_mag, dim, bound);
    float *sent = bt_out(rows, c->dxs);
    bt_outside(where, "dx", B.dx, sent, rows, dim, c->dxs);
    free(sent);
    test_check(test_first_written(B.dlambda + dim, 1) == 1 && test_first_written(B.dbias + dim, 1) == 1 &&
                   test_first_written(B.dgamma + dim, 1) == 1,
               "%s: a parameter gradient written past dim", where);

    /* bitwise: h recomputed from x and r, statistics recomputed */
    add_grads V = add_grads_alloc(c);
    keel_residual_grads gv = {keel_f32(V.dx, c->dxs), keel_f32(V.dr, c->drs), V.dlambda, V.dbias};
    bt_ok(where, "backward recomputing h and statistics",
          add_bwd(ctx, c, k, &res, k->dy, c->dys, dh, keel_none(), NULL, NULL, &gv, V.dgamma,
                  ln ? V.dbeta : NULL, 0));
    bt_same(where, "dx (h, stats recomputed)", V.dx, c->dxs, B.dx, c->dxs, rows, dim);
    bt_same(where, "dr (h, stats recomputed)", V.dr, c->drs, B.dr, c->drs, rows, dim);
    bt_same(where, "dlambda (recomputed)", V.dlambda, 1, B.dlambda, 1, 1, dim);
    bt_same(where, "dbias (recomputed)", V.dbias, 1, B.dbias, 1, 1, dim);
    bt_same(where, "dgamma (recomputed)", V.dgamma, 1, B.dgamma, 1, 1, dim);
    if (ln)
        bt_same(where, "dbeta (recomputed)", V.dbeta, 1, B.dbeta, 1, 1, dim);
    add_grads_free(&V);

    /* a variant: random skips, accumulation, dx in place over dh, statistics recomputed */
    const unsigned flags = (unsigned)keel_rng_below(rng, 4);
    const int acc_dx = flags & KEEL_FLAG_ACCUMULATE_DX, acc_dp = flags & KEEL_FLAG_ACCUMULATE_DPARAMS;
    const int want_dx = bt_coin(rng, 0.7), want_dr = bt_coin(rng, 0.7);
    const int want_dl = bt_coin(rng, 0.7), want_db = bt_coin(rng, 0.7);
    const int want_dg = bt_coin(rng, 0.7), want_dbeta = ln && bt_coin(rng, 0.7);
    const int in_place = want_dx && k->dh && !acc_dx && c->dxs == c->dhs && bt_coin(rng, 0.5);
    V = add_grads_alloc(c);
    if (in_place)
        memcpy(V.dx, k->dh, (rows + 1) * c->dhs * sizeof(float));
    float *init[6];
    float *outs[6] = {V.dx, V.dr, V.dlambda, V.dbias, V.dgamma, V.dbeta};
    const size_t lens[6] = {(rows + 1) * c->dxs, (rows + 1) * c->drs, dim + 1, dim + 1, dim + 1, dim + 1};
    for (int i = 0; i < 6; i++) {
        if ((i < 2 && acc_dx) || (i >= 2 && acc_dp))
            keel_case_fill_normal(rng, outs[i], lens[i] - (i < 2 ? 0 : 1));
        init[i] = test_copy(outs[i], lens[i]);
    }
    keel_residual_grads gw = {want_dx ? keel_f32(V.dx, c->dxs) : keel_none(),
                              want_dr ? keel_f32(V.dr, c->drs) : keel_none(),
                              want_dl ? V.dlambda : NULL, want_db ? V.dbias : NULL};
    const keel_tensor dh_in = in_place ? keel_f32(V.dx, c->dxs) : dh;
    bt_ok(where, "variant backward",
          add_bwd(ctx, c, k, &res, k->dy, c->dys, dh_in, bt_coin(rng, 0.5) ? ht : keel_none(),
                  NULL, NULL, &gw, want_dg ? V.dgamma : NULL, want_dbeta ? V.dbeta : NULL, flags));
    const float *base[6] = {B.dx, B.dr, B.dlambda, B.dbias, B.dgamma, B.dbeta};
    const int wanted[6] = {want_dx, want_dr, want_dl, want_db, want_dg, want_dbeta};
    const size_t strides[6] = {c->dxs, c->drs, 1, 1, 1, 1};
    static const char *const names[6] = {"dx", "dr", "dlambda", "dbias", "dgamma", "dbeta"};
    const double *refs[6] = {NULL, NULL, R.dlambda, R.dbias, R.dgamma, R.dbeta};
    const double *mags[6] = {NULL, NULL, R.dlambda_mag, R.dbias_mag, R.dgamma_mag, R.dbeta_mag};
    for (int i = 0; i < 6; i++) {
        const size_t nr = i < 2 ? rows : 1, nc = i < 2 ? dim : dim;
        if (!wanted[i]) { /* skipped: untouched */
            test_check(!memcmp(outs[i], init[i], lens[i] * sizeof(float)),
                       "%s: skipped %s was written", where, names[i]);
        } else if (i < 2 && acc_dx) { /* old + the plain value, one float addition */
            float *want = test_copy(init[i], lens[i]);
            for (size_t r = 0; r < rows; r++)
                for (size_t j = 0; j < dim; j++)
                    want[r * strides[i] + j] = init[i][r * strides[i] + j] + base[i][r * strides[i] + j];
            bt_same(where, names[i], outs[i], strides[i], want, strides[i], rows, dim);
            free(want);
        } else if (i >= 2 && acc_dp) {
            double *want = test_alloc_d(dim), *wmag = test_alloc_d(dim);
            for (size_t j = 0; j < dim; j++) {
                want[j] = (double)init[i][j] + refs[i][j];
                wmag[j] = fabs((double)init[i][j]) + mags[i][j];
            }
            bt_sum(where, names[i], outs[i], want, wmag, dim, bound + 1.0 + (i < 4 ? G_SUM_SLACK : 0.0));
            free(want);
            free(wmag);
        } else {
            bt_same(where, names[i], outs[i], strides[i], base[i], strides[i], nr, nc);
        }
        if (wanted[i] && i < 2)
            bt_outside(where, names[i], outs[i], init[i], rows, dim, strides[i]);
    }
    for (int i = 0; i < 6; i++)
        free(init[i]);
    add_grads_free(&V);

    /* alpha 1 and no lambda: dx is keel's plain norm backward accumulated into dh */
    if (c->alpha == 1.0f && !k->lambda) {
        float *dx = bt_out(rows, c->dxs), *dg = bt_out(dim, 1), *db = bt_out(dim, 1);
        if (k->dh)
            for (size_t r = 0; r < rows; r++)
                memcpy(dx + r * c->dxs, k->dh + r * c->dhs, dim * sizeof(float));
        const unsigned f = k->dh ? KEEL_FLAG_ACCUMULATE_DX : 0;
        keel_status st = ln ? keel_layernorm_bwd(ctx, rows, dim, keel_f32(k->dy, c->dys), ht, mean,
                                                 rstd, k->gamma, c->eps, keel_f32(dx, c->dxs), dg,
                                                 db, f)
                            : keel_rmsnorm_bwd(ctx, rows, dim, keel_f32(k->dy, c->dys), ht, rstd,
                                               k->w, c->eps, keel_f32(dx, c->dxs), dg, f);
        bt_ok(where, "plain norm backward", st);
        bt_same(where, "dx vs the plain norm's backward into dh", B.dx, c->dxs, dx, c->dxs, rows, dim);
        bt_same(where, "dgamma vs the plain norm's", B.dgamma, 1, dg, 1, 1, dim);
        if (ln)
            bt_same(where, "dbeta vs the plain norm's", B.dbeta, 1, db, 1, 1, dim);
        free(dx);
        free(dg);
        free(db);
    }
    add_grads_free(&B);
    add_ref_free(&R);
}

static void add_run(keel_ctx *ctx, keel_rng *rng, const add_config *c)
{
    add_case k = add_case_make(rng, c);
    float *h, *mean, *rstd;
    add_forward(ctx, rng, c, &k, &h, &mean, &rstd);
    add_backward(ctx, rng, c, &k, h, mean, rstd);
    free(h);
    free(mean);
    free(rstd);
    add_case_free(&k);
}

static add_config add_random(keel_rng *rng, norm_kind op, keel_isa isa, keel_case_kind kind,
                             size_t rows, size_t dim)
{
    static const float eps_choices[] = {1e-5f, 1e-12f, 1e-3f};
    static const float alphas[] = {1.0f, 1.0f, 2.6321480259f /* DeepNorm, L = 24 */, 0.5f};
    add_config c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.isa = isa;
    c.kind = kind;
    c.rows = rows;
    c.dim = dim;
    c.xs = bt_stride(rng, dim);
    c.rs = bt_stride(rng, dim);
    c.hs = bt_coin(rng, 0.3) ? c.xs : bt_stride(rng, dim);
    c.ys = bt_coin(rng, 0.3) ? c.rs : bt_stride(rng, dim);
    c.dys = bt_stride(rng, dim);
    c.dhs = bt_stride(rng, dim);
    c.dxs = bt_coin(rng, 0.3) ? c.dhs : bt_stride(rng, dim);
    c.drs = bt_stride(rng, dim);
    c.alpha = alphas[keel_rng_below(rng, 4)];
    c.eps = eps_choices[keel_rng_below(rng, 3)];
    c.lambda = bt_coin(rng, 0.4);
    c.bias = bt_coin(rng, 0.4);
    c.gamma = bt_coin(rng, 0.7);
    c.beta = op == NORM_LN && bt_coin(rng, 0.6);
    c.gemma = op == NORM_RMS && bt_coin(rng, 0.4);
    c.dh = bt_coin(rng, 0.7);
    return c;
}

static void add_sweep(keel_ctx *ctx, keel_rng *rng, keel_isa isa)
{
    static const size_t dims[] = {1, 2, 3, 7, 16, 17, 31, 64, 65, 127, 768, 1025, 4096};
    static const size_t rows[] = {1, 3, 8, 33};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int kind = 0; kind < KEEL_CASE_COUNT; kind++)
            for (int op = NORM_LN; op <= NORM_RMS; op++) {
                add_config c = add_random(rng, (norm_kind)op, isa, (keel_case_kind)kind,
                                          rows[keel_rng_below(rng, 4)], dims[d]);
                add_run(ctx, rng, &c);
            }
    for (int i = 0; i < 3; i++) /* wide rows */
        for (int op = NORM_LN; op <= NORM_RMS; op++) {
            add_config c = add_random(rng, (norm_kind)op, isa, KEEL_CASE_MIXED, 2,
                                      i == 0 ? 65536 : keel_case_random_width(rng, 65536));
            add_run(ctx, rng, &c);
        }
}

/* A NaN or Inf in x: that row's y, mean, rstd all NaN and the other rows bitwise unchanged;
 * h is NaN/Inf at that element only. */
static void add_nonfinite(keel_ctx *ctx, keel_rng *rng, keel_isa isa)
{
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++)
        for (int op = NORM_LN; op <= NORM_RMS; op++) {
            add_config c = add_random(rng, (norm_kind)op, isa, KEEL_CASE_NORMAL, 5, 1 + keel_rng_below(rng, 300));
            c.xs = c.rs = c.hs = c.ys = c.dim;
            add_case k = add_case_make(rng, &c);
            const size_t n = c.rows * c.dim, row = 2, j = keel_rng_below(rng, c.dim);
            float *h0 = bt_out(c.rows, c.dim), *y0 = bt_out(c.rows, c.dim), *r0 = bt_out(c.rows, 1);
            float *h1 = bt_out(c.rows, c.dim), *y1 = bt_out(c.rows, c.dim), *r1 = bt_out(c.rows, 1);
            keel_residual res = add_res(&c, &k, k.x, k.r);
            bt_ok(add_describe(&c), "clean forward", add_fwd(ctx, &c, &k, &res, keel_f32(h0, c.dim), y0, c.dim, NULL, r0));
            k.x[row * c.dim + j] = bad[b];
            bt_ok(add_describe(&c), "forward", add_fwd(ctx, &c, &k, &res, keel_f32(h1, c.dim), y1, c.dim, NULL, r1));
            int row_nan = isnan(r1[row]);
            for (size_t i = 0; i < c.dim; i++)
                row_nan &= isnan(y1[row * c.dim + i]);
            int others = 1;
            for (size_t i = 0; i < n; i++)
                if (i / c.dim != row)
                    others &= !memcmp(y0 + i, y1 + i, 4) && !memcmp(h0 + i, h1 + i, 4);
            int h_ok = !isfinite(h1[row * c.dim + j]);
            for (size_t i = 0; i < c.dim; i++)
                if (i != j)
                    h_ok &= !memcmp(h0 + row * c.dim + i, h1 + row * c.dim + i, 4);
            test_check(row_nan && others && h_ok, "%s: x[%zu][%zu] = %g: row NaN %d, other rows "
                       "unchanged %d, h elsewhere unchanged %d", add_describe(&c), row, j,
                       (double)bad[b], row_nan, others, h_ok);
            free(h0);
            free(y0);
            free(r0);
            free(h1);
            free(y1);
            free(r1);
            add_case_free(&k);
        }
}

/* ==== LayerScale ============================================================================ */

static void layerscale_run(keel_ctx *ctx, keel_rng *rng, keel_isa isa, size_t rows, size_t dim)
{
    char where[128];
    const size_t xs = bt_stride(rng, dim), fs = bt_stride(rng, dim), hs = bt_stride(rng, dim);
    snprintf(where, sizeof where, "layerscale isa=%s %zux%zu strides x%zu f%zu h%zu",
             keel_isa_name(isa), rows, dim, xs, fs, hs);
    float *x = bt_in(rng, KEEL_CASE_MIXED, rows, dim, xs), *f = bt_in(rng, KEEL_CASE_NORMAL, rows, dim, fs);
    static const float inits[] = {0.1f, 1e-5f, 1e-6f}; /* CaiT: depth <= 18, 24, deeper */
    float *lambda = bt_vec(rng, dim, inits[keel_rng_below(rng, 3)], 0.0);
    for (size_t j = 0; j < dim; j++) /* trained a little away from the initial value */
        lambda[j] = (float)(lambda[j] * (1.0 + 0.5 * keel_rng_normal(rng)));
    float *h = bt_out(rows, hs);
    bt_ok(where, "forward", keel_layerscale_fwd(ctx, rows, dim, keel_f32(x, xs), keel_f32(f, fs),
                                                lambda, keel_f32(h, hs), 0));
    /* against the reference (ulps of the row's largest |x| + |lambda f|), and bitwise the fused
     * ops' h with res = {x, f, 1, lambda} */
    double *xd = bt_d(x, rows, dim, xs), *fd = bt_d(f, rows, dim, fs), *ld = bt_d(lambda, 1, dim, dim);
    double *href = test_alloc_d(rows * dim), *floors = test_alloc_d(rows);
    keel_ref_residual_f64(rows, dim, xd, fd, 1.0, ld, NULL, href);
    for (size_t r = 0; r < rows; r++) {
        floors[r] = 0.0;
        for (size_t j = 0; j < dim; j++)
            floors[r] = fmax(floors[r], fabs(xd[r * dim + j]) + fabs(ld[j] * fd[r * dim + j]));
    }
    bt_rows(where, "h", h, hs, href, rows, dim, floors, 1.0);
    float *h2 = bt_out(rows, hs), *y2 = bt_out(rows, dim);
    keel_residual res = keel_residual_add(keel_f32(x, xs), keel_f32(f, fs));
    res.lambda = lambda;
    bt_ok(where, "fused", keel_add_rmsnorm_fwd(ctx, rows, dim, &res, keel_f32(h2, hs), keel_f32(y2, dim),
                                               NULL, 1e-5f, NULL, 0));
    bt_same(where, "h vs the fused op's h", h, hs, h2, hs, rows, dim);
    /* in place over x */
    float *bx = bt_copy(x, rows, xs);
    bt_ok(where, "in place", keel_layerscale_fwd(ctx, rows, dim, keel_f32(bx, xs), keel_f32(f, fs),
                                                 lambda, keel_f32(bx, xs), 0));
    bt_same(where, "in-place h", bx, xs, h, hs, rows, dim);
    bt_outside(where, "in-place h", bx, x, rows, dim, xs);

    /* backward: dx = dh, df = lambda * dh bitwise; dlambda against the reference */
    const size_t dhs = bt_stride(rng, dim);
    float *dh = bt_in(rng, KEEL_CASE_NORMAL, rows, dim, dhs);
    float *dx = bt_out(rows, dhs), *df = bt_out(rows, dhs), *dl = bt_out(dim, 1);
    bt_ok(where, "backward", keel_layerscale_bwd(ctx, rows, dim, keel_f32(dh, dhs), keel_f32(f, fs),
                                                 lambda, keel_f32(dx, dhs), keel_f32(df, dhs), dl, 0));
    float *want = bt_out(rows, dhs);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++)
            want[r * dhs + j] = lambda[j] * dh[r * dhs + j];
    bt_same(where, "dx vs dh", dx, dhs, dh, dhs, rows, dim);
    bt_same(where, "df vs lambda * dh", df, dhs, want, dhs, rows, dim);
    double *dhd = bt_d(dh, rows, dim, dhs), *rdl = test_alloc_d(dim), *mag = test_alloc_d(dim);
    keel_ref_res_grads rg = {NULL, NULL, rdl, NULL, mag, NULL};
    keel_ref_residual_bwd_f64(rows, dim, dhd, fd, 1.0, ld, &rg);
    bt_sum(where, "dlambda", dl, rdl, mag, dim, keel_bound_dparam(rows));
    /* accumulated, and df in place over dh */
    float *dl2 = test_copy(dl, dim + 1), *df2 = bt_copy(dh, rows, dhs), *dx2 = bt_copy(dx, rows, dhs);
    bt_ok(where, "accumulating backward",
          keel_layerscale_bwd(ctx, rows, dim, keel_f32(df2, dhs), keel_none(), lambda,
                              keel_f32(dx2, dhs), keel_f32(df2, dhs), NULL,
                              KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS));
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++) {
            want[r * dhs + j] = dh[r * dhs + j] + lambda[j] * dh[r * dhs + j];
            dx[r * dhs + j] = dx[r * dhs + j] + dh[r * dhs + j];
        }
    bt_same(where, "accumulated df (in place over dh)", df2, dhs, want, dhs, rows, dim);
    bt_same(where, "accumulated dx", dx2, dhs, dx, dhs, rows, dim);
    bt_same(where, "skipped dlambda", dl2, 1, dl, 1, 1, dim);
    float *all[] = {x, f, lambda, h, h2, y2, bx, dh, dx, df, dl, want, dl2, df2, dx2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    double *alld[] = {xd, fd, ld, href, floors, dhd, rdl, mag};
    for (size_t i = 0; i < sizeof alld / sizeof alld[0]; i++)
        free(alld[i]);
}

/* ==== BatchNorm ============================================================================= */

/* In ulps of each column's largest |ref| (floors[j] when larger): BatchNorm's rows of a
 * feature play the part of a norm's row. */
static void bn_cols(const char *where, const char *what, const float *got, size_t stride,
                    const double *ref, size_t rows, size_t dim, const double *floors, double bound)
{
    double worst = 0.0;
    size_t wr = 0, wj = 0;
    for (size_t j = 0; j < dim; j++) {
        double m = floors ? floors[j] : 0.0;
        for (size_t r = 0; r < rows; r++)
            if (isfinite(ref[r * dim + j]))
                m = fmax(m, fabs(ref[r * dim + j]));
        for (size_t r = 0; r < rows; r++) {
            const double g = got[r * stride + j], w = ref[r * dim + j];
            double e;
            if (isnan(w) || isnan(g))
                e = isnan(w) && isnan(g) ? 0.0 : INFINITY;
            else
                e = fabs(g - w) / keel_ulp32(m);
            if (!(e <= worst)) {
                worst = e;
                wr = r;
                wj = j;
            }
        }
    }
    test_check(worst <= bound, "%s: %s error %.3g ulps > %g at row %zu feature %zu (got %.9g, ref %.17g)",
               where, what, worst, bound, wr, wj, (double)got[wr * stride + wj], ref[wr * dim + wj]);
}

static void batchnorm_run(keel_ctx *ctx, keel_rng *rng, keel_isa isa, keel_case_kind kind,
                          size_t rows, size_t dim, int training)
{
    char where[160];
    const size_t xs = bt_stride(rng, dim), ys = bt_stride(rng, dim), dys = bt_stride(rng, dim);
    const float eps = bt_coin(rng, 0.5) ? 1e-5f : 1e-3f;
    const float momentum = bt_coin(rng, 0.5) ? 0.1f : (float)keel_rng_uniform(rng);
    snprintf(where, sizeof where, "batchnorm %s isa=%s case=%s %zux%zu strides x%zu y%zu dy%zu eps=%g momentum=%g",
             training ? "train" : "eval", keel_isa_name(isa), keel_case_name(kind), rows, dim, xs,
             ys, dys, (double)eps, (double)momentum);
    /* columns of the case's kind: the rows of the transposed problem */
    float *x = test_alloc((rows + 1) * xs), *col = test_alloc(rows);
    for (size_t i = 0; i < (rows + 1) * xs; i++)
        x[i] = NAN;
    for (size_t j = 0; j < dim; j++) {
        keel_case_fill_row(rng, kind, col, rows);
        for (size_t r = 0; r < rows; r++)
            x[r * xs + j] = col[r];
    }
    free(col);
    float *dy = bt_in(rng, KEEL_CASE_NORMAL, rows, dim, dys);
    float *gamma = test_alloc(dim + 1), *beta = test_alloc(dim + 1);
    keel_case_fill_gamma(rng, gamma, dim);
    keel_case_fill_beta(rng, beta, dim);
    float *rm = bt_vec(rng, dim, 0.0, 1.0), *rv = bt_vec(rng, dim, 2.0, 0.0);
    for (size_t j = 0; j < dim; j++)
        rv[j] = (float)keel_rng_range(rng, 0.25, 4.0);
    float *rm0 = test_copy(rm, dim + 1), *rv0 = test_copy(rv, dim + 1);
    int64_t nbt = 7;
    float *y = bt_out(rows, ys), *sm = bt_out(dim, 1), *sr = bt_out(dim, 1);
    bt_ok(where, "forward", keel_batchnorm_fwd(ctx, rows, dim, keel_f32(x, xs), keel_f32(y, ys), gamma,
                                               beta, eps, training, momentum, rm, rv, &nbt, sm, sr, 0));
    double *xd = bt_d(x, rows, dim, xs), *gd = bt_d(gamma, 1, dim, dim), *bd = bt_d(beta, 1, dim, dim);
    double *rmd = bt_d(rm0, 1, dim, dim), *rvd = bt_d(rv0, 1, dim, dim);
    double *yref = test_alloc_d(rows * dim), *mref = test_alloc_d(dim), *rref = test_alloc_d(dim);
    double *vu = test_alloc_d(dim);
    keel_ref_batchnorm_fwd_f64(rows, dim, xd, gd, bd, eps, training, rmd, rvd, yref, mref, rref, NULL, vu);
    /* floors: the size of each column's terms, max |x - mean| * rstd * |gamma| + |beta| (in
     * inference x - running_mean need not be spread around 0, and beta may cancel it) */
    double *yfloors = test_alloc_d(dim);
    memset(yfloors, 0, dim * sizeof *yfloors);
    for (size_t j = 0; j < dim; j++) {
        yfloors[j] = 0.0;
        for (size_t r = 0; r < rows; r++)
            yfloors[j] = fmax(yfloors[j], fabs(xd[r * dim + j] - mref[j]) * rref[j] * fabs(gd[j]));
        yfloors[j] += fabs(bd[j]);
    }
    bn_cols(where, "y", y, ys, yref, rows, dim, yfloors, KEEL_BOUND_ROW_ULPS);
    free(yfloors);
    bt_each(where, "save_mean", sm, mref, dim, KEEL_BOUND_STAT_ULPS);
    bt_each(where, "save_rstd", sr, rref, dim, KEEL_BOUND_STAT_ULPS);
    float *sent = bt_out(rows, ys);
    bt_outside(where, "y", y, sent, rows, dim, ys);
    free(sent);
    { /* in place: y over x, the same bits (the statistics are taken before y is written) */
        float *bx = bt_copy(x, rows, xs), *rm1 = test_copy(rm0, dim + 1), *rv1 = test_copy(rv0, dim + 1);
        int64_t nbt1 = 7;
        bt_ok(where, "in-place forward", keel_batchnorm_fwd(ctx, rows, dim, keel_f32(bx, xs), keel_f32(bx, xs),
                                                             gamma, beta, eps, training, momentum, rm1, rv1,
                                                             &nbt1, NULL, NULL, 0));
        bt_same(where, "in-place y", bx, xs, y, ys, rows, dim);
        bt_same(where, "running statistics of the in-place call", rm1, 1, rm, 1, 1, dim);
        free(bx);
        free(rm1);
        free(rv1);
    }
    if (training) {
        /* the running statistics, against the update in double from the reference statistics,
         * in ulps of the larger of the two terms (they may cancel) */
        double worst_m = 0.0, worst_v = 0.0;
        for (size_t j = 0; j < dim; j++) {
            const double m = momentum, a = (1.0 - m) * rmd[j], b = m * mref[j];
            const double c = (1.0 - m) * rvd[j], d = m * vu[j];
            /* a variance past FLT_MAX (rows of 1e30) is Inf in float32, as it must be */
            if (isfinite(b))
                worst_m = fmax(worst_m, (float)(a + b) == rm[j] ? 0.0
                                        : fabs(rm[j] - (a + b)) / keel_ulp32(fmax(fabs(a), fabs(b))));
            if (isfinite(d))
                worst_v = fmax(worst_v, (float)(c + d) == rv[j] ? 0.0
                                        : fabs(rv[j] - (c + d)) / keel_ulp32(fmax(fabs(c), fabs(d))));
        }
        test_check(worst_m <= 2.0 && worst_v <= 2.0 && nbt == 8,
                   "%s: running mean error %.3g ulps, running var %.3g ulps (bound 2), "
                   "num_batches_tracked %lld (want 8)", where, worst_m, worst_v, (long long)nbt);
    } else {
        test_check(!memcmp(rm, rm0, dim * 4) && !memcmp(rv, rv0, dim * 4) && nbt == 7,
                   "%s: inference changed the running statistics", where);
    }

    /* backward against the reference; recomputed statistics bitwise the saved ones */
    float *dx = bt_out(rows, ys), *dg = bt_out(dim, 1), *db = bt_out(dim, 1);
    bt_ok(where, "backward", keel_batchnorm_bwd(ctx, rows, dim, keel_f32(dy, dys), keel_f32(x, xs), sm, sr,
                                                gamma, eps, training, keel_f32(dx, ys), dg, db, 0));
    double *dyd = bt_d(dy, rows, dim, dys), *rdx = test_alloc_d(rows * dim);
    double *rdg = test_alloc_d(dim), *rdb = test_alloc_d(dim), *mg = test_alloc_d(dim), *mb = test_alloc_d(dim);
    keel_ref_grads rgr = {rdx, rdg, rdb, mg, mb};
    keel_ref_batchnorm_bwd_f64(rows, dim, dyd, xd, gd, eps, training, rmd, rvd, &rgr);
    double *floors = test_alloc_d(dim);
    memset(floors, 0, dim * sizeof *floors);
    for (size_t j = 0; j < dim; j++) { /* rstd * max |dy * gamma| of the column */
        floors[j] = 0.0;
        for (size_t r = 0; r < rows; r++)
            floors[j] = fmax(floors[j], fabs(rref[j] * dyd[r * dim + j] * gd[j]));
    }
    bn_cols(where, "dx", dx, ys, rdx, rows, dim, floors, KEEL_BOUND_ROW_ULPS);
    bt_sum(where, "dgamma", dg, rdg, mg, dim, keel_bound_dparam(rows));
    bt_sum(where, "dbeta", db, rdb, mb, dim, keel_bound_dparam(rows));
    if (training) {
        float *dx2 = bt_out(rows, ys), *dg2 = bt_out(dim, 1), *db2 = bt_out(dim, 1);
        bt_ok(where, "backward recomputing", keel_batchnorm_bwd(ctx, rows, dim, keel_f32(dy, dys),
                                                               keel_f32(x, xs), NULL, NULL, gamma, eps,
                                                               1, keel_f32(dx2, ys), dg2, db2, 0));
        bt_same(where, "dx recomputed vs saved", dx2, ys, dx, ys, rows, dim);
        bt_same(where, "dgamma recomputed vs saved", dg2, 1, dg, 1, 1, dim);
        bt_same(where, "dbeta recomputed vs saved", db2, 1, db, 1, 1, dim);
        free(dx2);
        free(dg2);
        free(db2);
    }
    /* dx in place over dy, accumulating dx and the parameters */
    float *ddy = bt_copy(dy, rows, dys), *dg3 = test_copy(dg, dim + 1), *db3 = test_copy(db, dim + 1);
    bt_ok(where, "in-place accumulating backward",
          keel_batchnorm_bwd(ctx, rows, dim, keel_f32(ddy, dys), keel_f32(x, xs), sm, sr, gamma, eps,
                             training, keel_f32(ddy, dys), dg3, db3,
                             KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS));
    float *want = bt_out(rows, dys);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++)
            want[r * dys + j] = dy[r * dys + j] + dx[r * ys + j];
    bt_same(where, "dx accumulated in place over dy", ddy, dys, want, dys, rows, dim);
    for (size_t j = 0; j < dim; j++) {
        rdg[j] += dg[j];
        mg[j] += fabs(dg[j]);
        rdb[j] += db[j];
        mb[j] += fabs(db[j]);
    }
    bt_sum(where, "dgamma accumulated", dg3, rdg, mg, dim, keel_bound_dparam(rows) + 1.0);
    bt_sum(where, "dbeta accumulated", db3, rdb, mb, dim, keel_bound_dparam(rows) + 1.0);
    float *all[] = {x, dy, gamma, beta, rm, rv, rm0, rv0, y, sm, sr, dx, dg, db, ddy, dg3, db3, want};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    double *alld[] = {xd, gd, bd, rmd, rvd, yref, mref, rref, vu, dyd, rdx, rdg, rdb, mg, mb, floors};
    for (size_t i = 0; i < sizeof alld / sizeof alld[0]; i++)
        free(alld[i]);
}

/* The conventions: momentum 0 keeps, momentum 1 replaces, NAN averages (num_batches_tracked
 * counts), a batch of one row is an error that changes nothing, a NaN column stays in its
 * column. */
static void batchnorm_conventions(keel_ctx *ctx, keel_rng *rng)
{
    enum { R = 6, D = 5 };
    float x[3][R * D], y[R * D], rm[D], rv[D], sm[D];
    for (int b = 0; b < 3; b++)
        keel_case_fill_normal(rng, x[b], R * D);
    double bm[3][D], bv[3][D];
    for (int b = 0; b < 3; b++) {
        double xd[R * D], vu[D];
        for (int i = 0; i < R * D; i++)
            xd[i] = x[b][i];
        keel_ref_batchnorm_fwd_f64(R, D, xd, NULL, NULL, 1e-5, 1, NULL, NULL, NULL, bm[b], NULL, NULL, vu);
        memcpy(bv[b], vu, sizeof vu);
    }
    /* cumulative average over three batches */
    int64_t nbt = 0;
    for (int j = 0; j < D; j++)
        rm[j] = 100.0f, rv[j] = 100.0f;
    keel_status st = KEEL_OK;
    for (int b = 0; b < 3 && st == KEEL_OK; b++)
        st = keel_batchnorm_fwd(ctx, R, D, keel_f32(x[b], D), keel_f32(y, D), NULL, NULL, 1e-5f, 1, NAN,
                                rm, rv, &nbt, NULL, NULL, 0);
    double worst = 0.0; /* relative to the size of the batch statistics averaged (a few roundings) */
    for (int j = 0; j < D; j++) {
        const double m = (bm[0][j] + bm[1][j] + bm[2][j]) / 3.0, v = (bv[0][j] + bv[1][j] + bv[2][j]) / 3.0;
        const double ms = fmax(fmax(fabs(bm[0][j]), fabs(bm[1][j])), fabs(bm[2][j]));
        worst = fmax(worst, fabs(rm[j] - m) / ms);
        worst = fmax(worst, fabs(rv[j] - v) / v);
    }
    test_check(st == KEEL_OK && nbt == 3 && worst < 1e-6,
               "batchnorm momentum NAN: status %s, num_batches_tracked %lld (want 3), running "
               "statistics off the average of the batches by %.3g relative",
               keel_status_str(st), (long long)nbt, worst);
    /* momentum 0 keeps the running statistics, bitwise; momentum 1 replaces them */
    float rm0[D], rv0[D];
    memcpy(rm0, rm, sizeof rm);
    memcpy(rv0, rv, sizeof rv);
    st = keel_batchnorm_fwd(ctx, R, D, keel_f32(x[0], D), keel_f32(y, D), NULL, NULL, 1e-5f, 1, 0.0f, rm,
                            rv, NULL, sm, NULL, 0);
    test_check(st == KEEL_OK && !memcmp(rm, rm0, sizeof rm) && !memcmp(rv, rv0, sizeof rv),
               "batchnorm momentum 0 changed the running statistics");
    st = keel_batchnorm_fwd(ctx, R, D, keel_f32(x[1], D), keel_f32(y, D), NULL, NULL, 1e-5f, 1, 1.0f, rm,
                            rv, NULL, sm, NULL, 0);
    int replaced = st == KEEL_OK;
    for (int j = 0; j < D; j++)
        replaced &= rm[j] == (float)bm[1][j] && fabs(rv[j] - bv[1][j]) <= keel_ulp32(bv[1][j]);
    test_check(replaced, "batchnorm momentum 1: running statistics are not the batch's");
    /* a batch of one row in training: KEEL_EINVAL naming rows, nothing changed */
    memcpy(rm0, rm, sizeof rm);
    test_fill_sentinel(y, R * D);
    nbt = 5;
    st = keel_batchnorm_fwd(ctx, 1, D, keel_f32(x[0], D), keel_f32(y, D), NULL, NULL, 1e-5f, 1, 0.1f, rm, rv,
                            &nbt, NULL, NULL, 0);
    test_check(st == KEEL_EINVAL && strstr(keel_last_error(), "rows") && !memcmp(rm, rm0, sizeof rm) &&
                   nbt == 5 && test_first_written(y, R * D) == R * D,
               "batchnorm of one row in training: %s (%s), or something changed", keel_status_str(st),
               keel_last_error());
    /* ... and fine in inference */
    st = keel_batchnorm_fwd(ctx, 1, D, keel_f32(x[0], D), keel_f32(y, D), NULL, NULL, 1e-5f, 0, 0.1f, rm, rv,
                            NULL, NULL, NULL, 0);
    test_check(st == KEEL_OK && isfinite(y[0]), "batchnorm inference of one row: %s", keel_status_str(st));
    /* a NaN in feature 2: that feature NaN (y, save_mean, running stats), the others unchanged */
    float y0[R * D], rmA[D], rvA[D], rmB[D], rvB[D];
    for (int j = 0; j < D; j++)
        rmA[j] = rmB[j] = 0.0f, rvA[j] = rvB[j] = 1.0f;
    keel_batchnorm_fwd(ctx, R, D, keel_f32(x[2], D), keel_f32(y0, D), NULL, NULL, 1e-5f, 1, 0.1f, rmA, rvA,
                       NULL, NULL, NULL, 0);
    x[2][3 * D + 2] = NAN;
    keel_batchnorm_fwd(ctx, R, D, keel_f32(x[2], D), keel_f32(y, D), NULL, NULL, 1e-5f, 1, 0.1f, rmB, rvB,
                       NULL, sm, NULL, 0);
    int ok = isnan(sm[2]) && isnan(rmB[2]) && isnan(rvB[2]);
    for (int i = 0; i < R * D; i++)
        ok &= i % D == 2 ? isnan(y[i]) : !memcmp(y + i, y0 + i, 4);
    for (int j = 0; j < D; j++)
        ok &= j == 2 || (rmA[j] == rmB[j] && rvA[j] == rvB[j]);
    test_check(ok, "batchnorm: a NaN in feature 2 did not stay in feature 2");
}

/* ==== DyT =================================================================================== */

/* tanh and 1 - tanh^2 against double over a sweep of arguments: every float of chosen ranges
 * at a stride, and special values; through keel_dyt_fwd (y = tanh(x)) and keel_dyt_bwd
 * (dx = 1 * 1 * s with dy = 1, alpha = 1). */
static void dyt_tanh_sweep(keel_ctx *ctx, keel_isa isa)
{
    enum { N = 1 << 16 };
    float *x = test_alloc(N), *t = test_alloc(N), *s = test_alloc(N), *one = test_alloc(N);
    double worst_t = 0.0, worst_s = 0.0;
    float at_t = 0, at_s = 0;
    /* float bit patterns from 1e-8 to 60, both signs */
    const uint32_t lo = 0x322bcc77u, hi = 0x42700000u, step = (hi - lo) / (N / 2) + 1;
    size_t n = 0;
    for (uint32_t b = lo; b < hi && n + 2 <= N; b += step) {
        float v;
        memcpy(&v, &b, 4);
        x[n++] = v;
        x[n++] = -v;
    }
    const float special[] = {0.0f, -0.0f, 0.625f, -0.625f, 0.62499994f, 9.0f, 43.5f, 44.0f, 1e-40f,
                             -1e-45f, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, NAN, -NAN};
    for (size_t i = 0; i < sizeof special / sizeof special[0] && n < N; i++)
        x[n++] = special[i];
    for (size_t i = 0; i < n; i++)
        one[i] = 1.0f;
    keel_status st = keel_dyt_fwd(ctx, 1, n, keel_f32(x, n), keel_f32(t, n), 1.0f, NULL, NULL, 0);
    if (st == KEEL_OK)
        st = keel_dyt_bwd(ctx, 1, n, keel_f32(one, n), keel_f32(x, n), 1.0f, NULL, keel_f32(s, n), NULL,
                          NULL, NULL, 0);
    for (size_t i = 0; i < n && st == KEEL_OK; i++) {
        const double u = x[i], rt = tanh(u), c = cosh(u), rs = 1.0 / (c * c);
        if (isnan(u)) {
            test_check(isnan(t[i]) && isnan(s[i]), "dyt isa %s: tanh(NaN) is not NaN", keel_isa_name(isa));
            continue;
        }
        const double et = fabs(t[i] - rt) / keel_ulp32(rt);
        /* past |u| = 43.5 exp(-2|u|) leaves float's normal range and keel's 1 - tanh^2 is 0
         * (dyt_tanh.h): below 7e-38, where no float gradient can tell */
        const double es = fabs(u) > 43.5 ? (s[i] == 0.0f ? 0.0 : INFINITY)
                                         : fabs(s[i] - rs) / keel_ulp32(rs);
        if (!(et <= worst_t))
            worst_t = et, at_t = x[i];
        if (!(es <= worst_s))
            worst_s = es, at_s = x[i];
    }
    /* every path gives the first path's bits, NaN payloads included (the same u) */
    static float *base_t, *base_s;
    static size_t base_n;
    if (!base_t) {
        base_t = test_copy(t, n);
        base_s = test_copy(s, n);
        base_n = n;
    } else {
        const size_t dt = test_first_diff(t, base_t, n), ds = test_first_diff(s, base_s, n);
        test_check(n == base_n && dt == n && ds == n,
                   "dyt isa %s: tanh / 1 - tanh^2 not bitwise the first path's (first difference at "
                   "%zu / %zu)", keel_isa_name(isa), dt, ds);
    }
    if (isa == KEEL_ISA_AVX512 || !keel_isa_available(KEEL_ISA_AVX512)) {
        free(base_t);
        free(base_s);
        base_t = base_s = NULL;
    }
    printf("isa %s: tanh worst %.3g ulps (at %.9g), 1 - tanh^2 worst %.3g ulps (at %.9g), %zu arguments\n",
           keel_isa_name(isa), worst_t, (double)at_t, worst_s, (double)at_s, n);
    test_check(st == KEEL_OK && worst_t <= 2.0 && worst_s <= 4.0,
               "dyt isa %s: %s; tanh error %.3g ulps at %.9g (bound 2), 1 - tanh^2 %.3g ulps at %.9g (bound 4)",
               keel_isa_name(isa), keel_status_str(st), worst_t, (double)at_t, worst_s, (double)at_s);
    free(x);
    free(t);
    free(s);
    free(one);
}

static void dyt_run(keel_ctx *ctx, keel_rng *rng, keel_isa isa, keel_case_kind kind, size_t rows,
                    size_t dim)
{
    char where[160];
    const size_t xs = bt_stride(rng, dim), ys = bt_stride(rng, dim), dys = bt_stride(rng, dim);
    const float alpha = bt_coin(rng, 0.5) ? 0.5f : (float)keel_rng_range(rng, -3.0, 3.0);
    const int hg = bt_coin(rng, 0.8), hb = bt_coin(rng, 0.8);
    snprintf(where, sizeof where, "dyt isa=%s case=%s %zux%zu strides x%zu y%zu dy%zu alpha=%g%s%s",
             keel_isa_name(isa), keel_case_name(kind), rows, dim, xs, ys, dys, (double)alpha,
             hg ? " gamma" : "", hb ? " beta" : "");
    float *x = bt_in(rng, kind, rows, dim, xs), *dy = bt_in(rng, KEEL_CASE_NORMAL, rows, dim, dys);
    float *gamma = hg ? bt_vec(rng, dim, 1.0, 0.5) : NULL, *beta = hb ? bt_vec(rng, dim, 0.0, 0.25) : NULL;
    float *y = bt_out(rows, ys);
    bt_ok(where, "forward", keel_dyt_fwd(ctx, rows, dim, keel_f32(x, xs), keel_f32(y, ys), alpha, gamma,
                                         beta, 0));
    double *xd = bt_d(x, rows, dim, xs), *gd = bt_d(gamma, 1, dim, dim), *bd = bt_d(beta, 1, dim, dim);
    double *yref = test_alloc_d(rows * dim);
    keel_ref_dyt_fwd_f64(rows, dim, xd, alpha, gd, bd, yref);
    /* alpha * x rounds once in float before tanh: half an ulp of u moves tanh by up to
     * |u| * sech^2(u) * 2^-24 <= 0.45 ulps of the output: inside the row bound. The floor: the
     * row's largest |gamma * tanh| + |beta| (beta may cancel the rest of a row) */
    double *yfl = test_alloc_d(rows);
    memset(yfl, 0, rows * sizeof *yfl);
    for (size_t i = 0; i < rows * dim; i++)
        yfl[i / dim] = fmax(yfl[i / dim], fabs((gd ? gd[i % dim] : 1.0) * tanh(alpha * xd[i])) +
                                              (bd ? fabs(bd[i % dim]) : 0.0));
    bt_rows(where, "y", y, ys, yref, rows, dim, yfl, KEEL_BOUND_ROW_ULPS);
    free(yfl);
    float *sent = bt_out(rows, ys);
    bt_outside(where, "y", y, sent, rows, dim, ys);
    free(sent);
    float *bx = bt_copy(x, rows, xs);
    bt_ok(where, "in place", keel_dyt_fwd(ctx, rows, dim, keel_f32(bx, xs), keel_f32(bx, xs), alpha, gamma,
                                          beta, 0));
    bt_same(where, "in-place y", bx, xs, y, ys, rows, dim);

    float *dx = bt_out(rows, ys), *dg = bt_out(dim, 1), *db = bt_out(dim, 1), da = -1.0f;
    bt_ok(where, "backward", keel_dyt_bwd(ctx, rows, dim, keel_f32(dy, dys), keel_f32(x, xs), alpha, gamma,
                                          keel_f32(dx, ys), &da, dg, db, 0));
    double *dyd = bt_d(dy, rows, dim, dys), *rdx = test_alloc_d(rows * dim);
    double *rdg = test_alloc_d(dim), *rdb = test_alloc_d(dim), *mg = test_alloc_d(dim), *mb = test_alloc_d(dim);
    double rda, mda;
    keel_ref_dyt_grads rg = {rdx, &rda, &mda, rdg, rdb, mg, mb};
    keel_ref_dyt_bwd_f64(rows, dim, dyd, xd, alpha, gd, &rg);
    /* keel's s is 0 past |alpha x| = 43.5 where the true one is below 7e-38: room for those
     * terms in dalpha's magnitude (a row of such elements would otherwise ask for 0 error) */
    for (size_t i = 0; i < rows * dim; i++)
        mda += fabs(dyd[i] * (gd ? gd[i % dim] : 1.0) * xd[i]) * 1e-30;
    /* floors: the row's largest |dy * gamma * alpha| (s <= 1) */
    double *floors = test_alloc_d(rows);
    for (size_t r = 0; r < rows; r++) {
        floors[r] = 0.0;
        for (size_t j = 0; j < dim; j++)
            floors[r] = fmax(floors[r], fabs(dyd[r * dim + j] * (gd ? gd[j] : 1.0) * alpha));
    }
    /* x * s: where s is tiny the reference's x * s may still be finite while keel's s is 0
     * (|u| > 43.5): those terms are below 1e-36 and cannot move dalpha's bound */
    bt_rows(where, "dx", dx, ys, rdx, rows, dim, floors, KEEL_BOUND_ROW_ULPS);
    bt_sum(where, "dgamma", dg, rdg, mg, dim, keel_bound_dparam(rows) + 2.0);
    bt_sum(where, "dbeta", db, rdb, mb, dim, keel_bound_dparam(rows));
    bt_sum(where, "dalpha", &da, &rda, &mda, 1, keel_bound_dparam(rows) + 8.0);
    /* skipping dx, accumulating the parameters */
    float *dg2 = test_copy(dg, dim + 1), *db2 = test_copy(db, dim + 1), da2 = da;
    bt_ok(where, "accumulating backward", keel_dyt_bwd(ctx, rows, dim, keel_f32(dy, dys), keel_f32(x, xs),
                                                       alpha, gamma, keel_none(), &da2, dg2, db2,
                                                       KEEL_FLAG_ACCUMULATE_DPARAMS));
    for (size_t j = 0; j < dim; j++) {
        rdg[j] += dg[j];
        mg[j] += fabs(dg[j]);
        rdb[j] += db[j];
        mb[j] += fabs(db[j]);
    }
    rda += da;
    mda += fabs(da);
    bt_sum(where, "dgamma accumulated", dg2, rdg, mg, dim, keel_bound_dparam(rows) + 3.0);
    bt_sum(where, "dbeta accumulated", db2, rdb, mb, dim, keel_bound_dparam(rows) + 1.0);
    bt_sum(where, "dalpha accumulated", &da2, &rda, &mda, 1, keel_bound_dparam(rows) + 9.0);
    float *all[] = {x, dy, gamma, beta, y, bx, dx, dg, db, dg2, db2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    double *alld[] = {xd, gd, bd, yref, dyd, rdx, rdg, rdb, mg, mb, floors};
    for (size_t i = 0; i < sizeof alld / sizeof alld[0]; i++)
        free(alld[i]);
}

/* ==== Gemma's flag on the plain RMSNorm ===================================================== */

static void gemma_rmsnorm(keel_ctx *ctx, keel_rng *rng, keel_isa isa)
{
    static const size_t dims[] = {1, 7, 64, 1025};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        const size_t rows = 5, dim = dims[d];
        char where[96];
        snprintf(where, sizeof where, "rmsnorm gemma isa=%s %zux%zu", keel_isa_name(isa), rows, dim);
        float *x = bt_in(rng, KEEL_CASE_MIXED, rows, dim, dim), *dy = bt_in(rng, KEEL_CASE_NORMAL, rows, dim, dim);
        float *gamma = bt_vec(rng, dim, 0.0, 0.5), *w = test_alloc(dim + 1);
        for (size_t j = 0; j < dim; j++)
            w[j] = 1.0f + gamma[j];
        float *y1 = bt_out(rows, dim), *y2 = bt_out(rows, dim), *r1 = bt_out(rows, 1), *r2 = bt_out(rows, 1);
        float *dx1 = bt_out(rows, dim), *dx2 = bt_out(rows, dim), *dg1 = bt_out(dim, 1), *dg2 = bt_out(dim, 1);
        keel_status st = keel_rmsnorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y1, dim), gamma, 1e-6f,
                                          r1, KEEL_FLAG_GAMMA_PLUS_ONE);
        bt_ok(where, "forward with KEEL_FLAG_GAMMA_PLUS_ONE", st);
        keel_rmsnorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y2, dim), w, 1e-6f, r2, 0);
        bt_same(where, "y: flag vs (1 + gamma)", y1, dim, y2, dim, rows, dim);
        st = keel_rmsnorm_bwd(ctx, rows, dim, keel_f32(dy, dim), keel_f32(x, dim), r1, gamma, 1e-6f,
                              keel_f32(dx1, dim), dg1, KEEL_FLAG_GAMMA_PLUS_ONE);
        bt_ok(where, "backward with KEEL_FLAG_GAMMA_PLUS_ONE", st);
        keel_rmsnorm_bwd(ctx, rows, dim, keel_f32(dy, dim), keel_f32(x, dim), r2, w, 1e-6f,
                         keel_f32(dx2, dim), dg2, 0);
        bt_same(where, "dx: flag vs (1 + gamma)", dx1, dim, dx2, dim, rows, dim);
        bt_same(where, "dgamma: flag vs (1 + gamma)", dg1, 1, dg2, 1, 1, dim);
        /* gamma NULL with the flag: a weight of 1 */
        keel_rmsnorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y1, dim), NULL, 1e-6f, NULL,
                         KEEL_FLAG_GAMMA_PLUS_ONE);
        keel_rmsnorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y2, dim), NULL, 1e-6f, NULL, 0);
        bt_same(where, "y: flag with gamma NULL", y1, dim, y2, dim, rows, dim);
        float *all[] = {x, dy, gamma, w, y1, y2, r1, r2, dx1, dx2, dg1, dg2};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free(all[i]);
    }
}

/* ==== bad input ============================================================================== */

enum { BR = 4, BD = 8, BUF = BR * BD + 16 };

/* Every buffer a call may touch. */
typedef struct fixture {
    float x[BUF], r[BUF], h[BUF], y[BUF], dy[BUF], dh[BUF], dx[BUF], dr[BUF];
    float gamma[BD], beta[BD], lambda[BD], bias[BD], mean[BD], rstd[BD];
    float dgamma[BD], dbeta[BD], dlambda[BD], dbias[BD], rm[BD], rv[BD];
    float dalpha;
    int64_t nbt;
} fixture;

static void fixture_fill(fixture *f, keel_rng *rng)
{
    memset(f, 0, sizeof *f);
    float *in[] = {f->x, f->r, f->dy, f->dh};
    for (int i = 0; i < 4; i++)
        keel_case_fill_normal(rng, in[i], BUF);
    float *p[] = {f->gamma, f->beta, f->lambda, f->bias, f->mean, f->rm};
    for (int i = 0; i < 6; i++)
        keel_case_fill_normal(rng, p[i], BD);
    for (int j = 0; j < BD; j++)
        f->rstd[j] = f->rv[j] = 1.0f + (float)keel_rng_uniform(rng);
    float *out[] = {f->h, f->y, f->dx, f->dr};
    for (int i = 0; i < 4; i++)
        test_fill_sentinel(out[i], BUF);
    float *po[] = {f->dgamma, f->dbeta, f->dlambda, f->dbias};
    for (int i = 0; i < 4; i++)
        test_fill_sentinel(po[i], BD);
    f->dalpha = 42.0f;
    f->nbt = 3;
}

typedef struct bad_case {
    const char *what;   /* the broken argument, as the message must name it */
    keel_status want;
} bad_case;

/* The calls; case i breaks one argument of an otherwise valid call. */
static const bad_case bad_cases[] = {
    /* 0 */ {"ctx", KEEL_ENULL},           {"res", KEEL_ENULL},
    {"res->x", KEEL_ENULL},                {"res->r.stride", KEEL_EINVAL},
    {"y", KEEL_ENULL},                     {"dim", KEEL_EINVAL},
    {"eps", KEEL_EINVAL},                  {"flags", KEEL_EINVAL},
    {"alpha", KEEL_EINVAL},                {"h and y", KEEL_EINVAL},
    /* 10 */ {"h overlaps res->x", KEEL_EINVAL}, {"h.dtype", KEEL_EUNSUPPORTED},
    {"flags", KEEL_EINVAL} /* rmsnorm: bit 3 */, {"res->r.data", KEEL_ENULL},
    /* bwd */ {"dy", KEEL_ENULL},          {"mean", KEEL_EINVAL},
    {"res->x", KEEL_ENULL} /* h absent */, {"res->r", KEEL_ENULL} /* dlambda */,
    {"grads->dx and grads->dr", KEEL_EINVAL}, {"grads->dx overlaps dy", KEEL_EINVAL},
    /* 20 */ {"flags", KEEL_EINVAL} /* gemma on layernorm bwd */, {"res->alpha", KEEL_EINVAL},
    /* layerscale */ {"lambda", KEEL_ENULL}, {"h overlaps x", KEEL_EINVAL},
    {"f", KEEL_ENULL} /* dlambda */,       {"lambda", KEEL_ENULL} /* df */,
    /* batchnorm */ {"rows", KEEL_EINVAL}, {"momentum", KEEL_EINVAL},
    {"running_mean", KEEL_ENULL} /* inference */, {"running_mean", KEEL_EINVAL} /* without var */,
    /* 30 */ {"num_batches_tracked", KEEL_ENULL}, {"mean", KEEL_ENULL} /* bwd inference */,
    {"mean", KEEL_EINVAL} /* bwd without rstd */, {"x.stride", KEEL_EINVAL},
    /* dyt */ {"alpha", KEEL_EINVAL},      {"dx overlaps x", KEEL_EINVAL},
    {"flags", KEEL_EINVAL},                {"y.dtype", KEEL_EUNSUPPORTED},
};

static keel_status bad_call(int i, keel_ctx *ctx, fixture *f)
{
    const keel_tensor x = keel_f32(f->x, BD), r = keel_f32(f->r, BD), h = keel_f32(f->h, BD);
    const keel_tensor y = keel_f32(f->y, BD), dy = keel_f32(f->dy, BD), dh = keel_f32(f->dh, BD);
    const keel_tensor dx = keel_f32(f->dx, BD), dr = keel_f32(f->dr, BD), none = keel_none();
    keel_residual res = keel_residual_add(x, r);
    res.lambda = f->lambda;
    res.bias = f->bias;
    keel_residual_grads g = {dx, dr, f->dlambda, f->dbias};
    keel_tensor t = h;
    switch (i) {
    case 0: return keel_add_layernorm_fwd(NULL, BR, BD, &res, h, y, f->gamma, f->beta, 1e-5f, f->mean, f->rstd, 0);
    case 1: return keel_add_layernorm_fwd(ctx, BR, BD, NULL, h, y, f->gamma, f->beta, 1e-5f, f->mean, f->rstd, 0);
    case 2: res.x = none; return keel_add_layernorm_fwd(ctx, BR, BD, &res, h, y, f->gamma, f->beta, 1e-5f, NULL, NULL, 0);
    case 3: res.r.stride = BD - 1; return keel_add_rmsnorm_fwd(ctx, BR, BD, &res, h, y, f->gamma, 1e-5f, f->rstd, 0);
    case 4: return keel_add_layernorm_fwd(ctx, BR, BD, &res, h, none, f->gamma, f->beta, 1e-5f, NULL, NULL, 0);
    case 5: return keel_add_layernorm_fwd(ctx, BR, 0, &res, h, y, f->gamma, f->beta, 1e-5f, NULL, NULL, 0);
    case 6: return keel_add_rmsnorm_fwd(ctx, BR, BD, &res, h, y, f->gamma, -1.0f, NULL, 0);
    case 7: return keel_add_layernorm_fwd(ctx, BR, BD, &res, h, y, f->gamma, f->beta, 1e-5f, NULL, NULL, KEEL_FLAG_GAMMA_PLUS_ONE);
    case 8: res.alpha = NAN; return keel_add_layernorm_fwd(ctx, BR, BD, &res, h, y, NULL, NULL, 1e-5f, NULL, NULL, 0);
    case 9: return keel_add_layernorm_fwd(ctx, BR, BD, &res, y, y, NULL, NULL, 1e-5f, NULL, NULL, 0);
    case 10: t.data = f->x + 1; return keel_add_layernorm_fwd(ctx, BR, BD, &res, keel_f32(f->x + 1, BD), y, NULL, NULL, 1e-5f, NULL, NULL, 0);
    case 11: t.dtype = KEEL_I8; return keel_add_rmsnorm_fwd(ctx, BR, BD, &res, t, y, NULL, 1e-5f, NULL, 0);
    case 12: return keel_add_rmsnorm_fwd(ctx, BR, BD, &res, h, y, NULL, 1e-5f, NULL, 1u << 3);
    case 13: res.r = none; return keel_add_rmsnorm_fwd(ctx, BR, BD, &res, h, y, NULL, 1e-5f, NULL, 0);
    case 14: return keel_add_layernorm_bwd(ctx, BR, BD, none, dh, &res, h, NULL, NULL, f->gamma, 1e-5f, &g, f->dgamma, f->dbeta, 0);
    case 15: return keel_add_layernorm_bwd(ctx, BR, BD, dy, dh, &res, h, f->mean, NULL, f->gamma, 1e-5f, &g, f->dgamma, f->dbeta, 0);
    case 16: res.x = none; return keel_add_layernorm_bwd(ctx, BR, BD, dy, dh, &res, none, NULL, NULL, f->gamma, 1e-5f, &g, f->dgamma, f->dbeta, 0);
    case 17: res.r = none; return keel_add_rmsnorm_bwd(ctx, BR, BD, dy, dh, &res, h, NULL, f->gamma, 1e-5f, &g, f->dgamma, 0);
    case 18: g.dr = g.dx; return keel_add_rmsnorm_bwd(ctx, BR, BD, dy, dh, &res, h, NULL, f->gamma, 1e-5f, &g, f->dgamma, 0);
    case 19: g.dx = keel_f32(f->dy + 2, BD); return keel_add_layernorm_bwd(ctx, BR, BD, dy, dh, &res, h, NULL, NULL, NULL, 1e-5f, &g, NULL, NULL, 0);
    case 20: return keel_add_layernorm_bwd(ctx, BR, BD, dy, dh, &res, h, NULL, NULL, NULL, 1e-5f, &g, NULL, NULL, KEEL_FLAG_GAMMA_PLUS_ONE);
    case 21: res.alpha = INFINITY; return keel_add_rmsnorm_bwd(ctx, BR, BD, dy, dh, &res, h, NULL, NULL, 1e-5f, &g, NULL, 0);
    case 22: return keel_layerscale_fwd(ctx, BR, BD, x, r, NULL, h, 0);
    case 23: return keel_layerscale_fwd(ctx, BR, BD, x, r, f->lambda, keel_f32(f->x + 3, BD), 0);
    case 24: return keel_layerscale_bwd(ctx, BR, BD, dh, none, f->lambda, dx, dr, f->dlambda, 0);
    case 25: return keel_layerscale_bwd(ctx, BR, BD, dh, r, NULL, dx, dr, f->dlambda, 0);
    case 26: return keel_batchnorm_fwd(ctx, 1, BD, x, y, f->gamma, f->beta, 1e-5f, 1, 0.1f, f->rm, f->rv, &f->nbt, f->mean, f->rstd, 0);
    case 27: return keel_batchnorm_fwd(ctx, BR, BD, x, y, f->gamma, f->beta, 1e-5f, 1, 1.5f, f->rm, f->rv, &f->nbt, f->mean, f->rstd, 0);
    case 28: return keel_batchnorm_fwd(ctx, BR, BD, x, y, f->gamma, f->beta, 1e-5f, 0, 0.1f, NULL, NULL, NULL, f->mean, f->rstd, 0);
    case 29: return keel_batchnorm_fwd(ctx, BR, BD, x, y, f->gamma, f->beta, 1e-5f, 1, 0.1f, f->rm, NULL, &f->nbt, NULL, NULL, 0);
    case 30: return keel_batchnorm_fwd(ctx, BR, BD, x, y, f->gamma, f->beta, 1e-5f, 1, NAN, f->rm, f->rv, NULL, NULL, NULL, 0);
    case 31: return keel_batchnorm_bwd(ctx, BR, BD, dy, x, NULL, NULL, f->gamma, 1e-5f, 0, dx, f->dgamma, f->dbeta, 0);
    case 32: return keel_batchnorm_bwd(ctx, BR, BD, dy, x, f->mean, NULL, f->gamma, 1e-5f, 1, dx, f->dgamma, f->dbeta, 0);
    case 33: return keel_batchnorm_bwd(ctx, BR, BD, dy, keel_f32(f->x, BD - 2), NULL, NULL, f->gamma, 1e-5f, 1, dx, f->dgamma, f->dbeta, 0);
    case 34: return keel_dyt_fwd(ctx, BR, BD, x, y, INFINITY, f->gamma, f->beta, 0);
    case 35: return keel_dyt_bwd(ctx, BR, BD, dy, x, 0.5f, f->gamma, keel_f32(f->x + 5, BD), &f->dalpha, f->dgamma, f->dbeta, 0);
    case 36: return keel_dyt_bwd(ctx, BR, BD, dy, x, 0.5f, f->gamma, dx, &f->dalpha, f->dgamma, f->dbeta, 1u << 5);
    case 37: t = y; t.dtype = KEEL_I8; return keel_dyt_fwd(ctx, BR, BD, x, t, 0.5f, NULL, NULL, 0);
    default: return KEEL_OK;
    }
}

/* Every word of the expected name must appear in the message (e.g. "h and y"). */
static int names_all(const char *msg, const char *what)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", what);
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " "))
        if (strcmp(w, "and") && strcmp(w, "overlaps") && !strstr(msg, w))
            return 0;
    return 1;
}

static void bad_input(keel_ctx *ctx, keel_rng *rng)
{
    const int n = (int)(sizeof bad_cases / sizeof bad_cases[0]);
    for (int i = 0; i < n; i++) {
        fixture f, before;
        fixture_fill(&f, rng);
        memcpy(&before, &f, sizeof f);
        keel_status st = bad_call(i, ctx, &f);
        const char *msg = keel_last_error();
        test_check(st == bad_cases[i].want && names_all(msg, bad_cases[i].what) &&
                       !memcmp(&f, &before, sizeof f),
                   "bad input %d (%s): got %s, want %s; message '%s'%s", i, bad_cases[i].what,
                   keel_status_str(st), keel_status_str(bad_cases[i].want), msg,
                   memcmp(&f, &before, sizeof f) ? "; a buffer changed" : "");
    }
    /* rows 0: every operation is a no-op that succeeds */
    fixture f, before;
    fixture_fill(&f, rng);
    memcpy(&before, &f, sizeof f);
    keel_residual res = keel_residual_add(keel_f32(f.x, BD), keel_f32(f.r, BD));
    keel_residual_grads g = {keel_f32(f.dx, BD), keel_f32(f.dr, BD), f.dlambda, f.dbias};
    keel_status st[9] = {
        keel_add_layernorm_fwd(ctx, 0, BD, &res, keel_f32(f.h, BD), keel_f32(f.y, BD), NULL, NULL, 1e-5f, f.mean, f.rstd, 0),
        keel_add_rmsnorm_bwd(ctx, 0, BD, keel_f32(f.dy, BD), keel_none(), &res, keel_none(), NULL, NULL, 1e-5f, &g, f.dgamma, 0),
        keel_add_layernorm_bwd(ctx, 0, BD, keel_f32(f.dy, BD), keel_none(), &res, keel_none(), NULL, NULL, NULL, 1e-5f, &g, f.dgamma, f.dbeta, 0),
        keel_layerscale_fwd(ctx, 0, BD, keel_f32(f.x, BD), keel_f32(f.r, BD), f.lambda, keel_f32(f.h, BD), 0),
        keel_layerscale_bwd(ctx, 0, BD, keel_f32(f.dh, BD), keel_f32(f.r, BD), f.lambda, keel_f32(f.dx, BD), keel_none(), f.dlambda, 0),
        keel_batchnorm_fwd(ctx, 0, BD, keel_f32(f.x, BD), keel_f32(f.y, BD), NULL, NULL, 1e-5f, 1, 0.1f, f.rm, f.rv, &f.nbt, f.mean, f.rstd, 0),
        keel_batchnorm_bwd(ctx, 0, BD, keel_f32(f.dy, BD), keel_f32(f.x, BD), NULL, NULL, NULL, 1e-5f, 1, keel_f32(f.dx, BD), f.dgamma, f.dbeta, 0),
        keel_dyt_fwd(ctx, 0, BD, keel_f32(f.x, BD), keel_f32(f.y, BD), 0.5f, NULL, NULL, 0),
        keel_dyt_bwd(ctx, 0, BD, keel_f32(f.dy, BD), keel_f32(f.x, BD), 0.5f, NULL, keel_f32(f.dx, BD), &f.dalpha, f.dgamma, f.dbeta, 0),
    };
    int all_ok = 1;
    for (int i = 0; i < 9; i++)
        all_ok &= st[i] == KEEL_OK;
    test_check(all_ok && !memcmp(&f, &before, sizeof f), "rows 0 is not a no-op returning KEEL_OK");
}

/* ==== main ==================================================================================== */

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_block_ops"));
    keel_ctx *ctx = test_ctx(0);
    bad_input(ctx, &rng);
    batchnorm_conventions(ctx, &rng);
    keel_isa isas[3];
    const int n_isas = test_isas(isas);
    for (int i = 0; i < n_isas; i++) {
        const long failed_before = test_failed_;
        test_set_isa(ctx, isas[i]);
        add_sweep(ctx, &rng, isas[i]);
        add_nonfinite(ctx, &rng, isas[i]);
        static const size_t dims[] = {1, 3, 16, 17, 100, 1025};
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
            layerscale_run(ctx, &rng, isas[i], 1 + keel_rng_below(&rng, 40), dims[d]);
            for (int kind = 0; kind < KEEL_CASE_COUNT; kind++) {
                batchnorm_run(ctx, &rng, isas[i], (keel_case_kind)kind, 2 + keel_rng_below(&rng, 60),
                              dims[d], bt_coin(&rng, 0.6));
                dyt_run(ctx, &rng, isas[i], (keel_case_kind)kind, 1 + keel_rng_below(&rng, 20), dims[d]);
            }
        }
        batchnorm_run(ctx, &rng, isas[i], KEEL_CASE_MIXED, 300, 40, 1); /* many rows */
        dyt_tanh_sweep(ctx, isas[i]);
        gemma_rmsnorm(ctx, &rng, isas[i]);
        printf("isa %s: %ld failures\n", keel_isa_name(isas[i]), test_failed_ - failed_before);
    }
    keel_ctx_destroy(ctx);
    return test_finish();
}
