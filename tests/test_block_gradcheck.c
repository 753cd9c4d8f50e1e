/*
 * test_block_gradcheck: checks the oracle of the transformer-block operations
 * (keel_ref_block.h): its backward against central finite differences of its own forward, for
 *   add + LayerNorm  (dx, dr, dlambda, dbias, dgamma, dbeta, with an incoming dh),
 *   add + RMSNorm    (dx, dr, dlambda, dbias, dgamma),
 *   LayerScale       (dx, df, dlambda),
 *   BatchNorm        (training: dx, dgamma, dbeta through the batch statistics; inference),
 *   DyT              (dx, dalpha, dgamma, dbeta),
 * with the loss L = sum(w * y) + sum(wh * h) for random w, wh (so dy = w, dh = wh); and a few
 * forwards against values worked out by hand.
 *
 * The bound: problems are O(1) in scale (x, r ~ offset +-3 plus N(0, s^2), s in [0.3, 3]; eps
 * 1e-5 .. 1). Central differences at steps h = 1e-4 and h/2, combined by Richardson's
 * extrapolation, err by ~h^4 * |L^(5)| (truncation; small even where a row's variance is tiny
 * and rstd, with every derivative, is large) plus ~2^-53 * |L| / h ~ 1e-11 (rounding), against
 * gradients of size 0.1 .. 10. Each component
 * is compared relative to max(|analytic|, 1e-3 * max(1, the largest |analytic| of that
 * gradient)) (a gradient may cancel to ~0 by construction, e.g. LayerNorm dx at dim 2), with
 * bound 1e-5; a missing or wrong term errs by O(1e-2) or more.
 */
#include <math.h>

#include "keel_ref_block.h"
#include "test_common.h"

#define GRAD_BOUND 1e-5
#define STEP 1e-4

typedef enum kind { K_ADD_LN, K_ADD_RMS, K_LAYERSCALE, K_BN_TRAIN, K_BN_EVAL, K_DYT, K_COUNT } kind;
static const char *const kind_names[K_COUNT] = {"add+layernorm", "add+rmsnorm", "layerscale",
                                                "batchnorm train", "batchnorm eval", "dyt"};

typedef struct problem {
    kind k;
    size_t rows, dim;
    double eps, alpha;
    double dyt_alpha[1];
    double *x, *r, *lambda, *bias, *gamma, *beta, *w, *wh, *rm, *rv;
    double *y, *h; /* forward scratch */
} problem;

static double loss(const problem *p)
{
    const size_t n = p->rows * p->dim;
    switch (p->k) {
    case K_ADD_LN:
        keel_ref_add_layernorm_fwd_f64(p->rows, p->dim, p->x, p->r, p->alpha, p->lambda, p->bias,
                                       p->gamma, p->beta, p->eps, p->h, p->y, NULL, NULL);
        break;
    case K_ADD_RMS:
        keel_ref_add_rmsnorm_fwd_f64(p->rows, p->dim, p->x, p->r, p->alpha, p->lambda, p->bias,
                                     p->gamma, p->eps, p->h, p->y, NULL);
        break;
    case K_LAYERSCALE:
        keel_ref_residual_f64(p->rows, p->dim, p->x, p->r, 1.0, p->lambda, NULL, p->h);
        memset(p->y, 0, n * sizeof(double));
        break;
    case K_BN_TRAIN:
    case K_BN_EVAL:
        keel_ref_batchnorm_fwd_f64(p->rows, p->dim, p->x, p->gamma, p->beta, p->eps,
                                   p->k == K_BN_TRAIN, p->rm, p->rv, p->y, NULL, NULL, NULL, NULL);
        memset(p->h, 0, n * sizeof(double));
        break;
    default:
        keel_ref_dyt_fwd_f64(p->rows, p->dim, p->x, p->dyt_alpha[0], p->gamma, p->beta, p->y);
        memset(p->h, 0, n * sizeof(double));
        break;
    }
    double l = 0.0;
    for (size_t i = 0; i < n; i++)
        l += p->w[i] * p->y[i] + p->wh[i] * p->h[i];
    return l;
}

static double central_difference(problem *p, double *v, double step)
{
    const double saved = *v;
    *v = saved + step;
    const double up = loss(p);
    *v = saved - step;
    const double down = loss(p);
    *v = saved;
    return (up - down) / (2.0 * step);
}

/* Richardson's extrapolation of two central differences: the h^2 term cancels, leaving
 * h^4 * |L^(5)|, so a row whose variance happens to be tiny (rstd large: every derivative of
 * the norm grows as rstd^k) is still differentiated accurately. */
static double finite_difference(problem *p, double *v)
{
    const double d1 = central_difference(p, v, STEP), d2 = central_difference(p, v, STEP / 2);
    return (4.0 * d2 - d1) / 3.0;
}

static void check_gradient(problem *p, const char *where, const char *name, double *v,
                           const double *analytic, size_t n)
{
    double g_max = 1.0;
    for (size_t i = 0; i < n; i++)
        g_max = fmax(g_max, fabs(analytic[i]));
    double worst = 0.0, worst_fd = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const double fd = finite_difference(p, v + i);
        const double scale = fmax(fabs(analytic[i]), 1e-3 * g_max);
        const double err = fabs(fd - analytic[i]) / scale;
        if (!(err <= worst)) {
            worst = err;
            at = i;
            worst_fd = fd;
        }
    }
    test_check(worst <= GRAD_BOUND,
               "%s %s: relative error %.3g > %.0e at index %zu (analytic %.17g, finite "
               "difference %.17g)",
               where, name, worst, GRAD_BOUND, at, analytic[at], worst_fd);
}

static double *normal_d(keel_rng *rng, size_t n, double centre, double scale)
{
    double *v = test_alloc_d(n);
    for (size_t i = 0; i < n; i++)
        v[i] = centre + scale * keel_rng_normal(rng);
    return v;
}

static problem make_problem(keel_rng *rng, kind k)
{
    static const double eps_choices[] = {1e-5, 1e-2, 1.0};
    problem p;
    memset(&p, 0, sizeof p);
    p.k = k;
    p.rows = (k == K_BN_TRAIN ? 2 : 1) + keel_rng_below(rng, 4);
    p.dim = 1 + keel_rng_below(rng, 9);
    p.eps = eps_choices[keel_rng_below(rng, 3)];
    p.alpha = keel_rng_uniform(rng) < 0.5 ? 1.0 : keel_rng_range(rng, 0.5, 3.0);
    p.dyt_alpha[0] = keel_rng_range(rng, 0.2, 2.0);
    const size_t n = p.rows * p.dim;
    const double s = pow(10.0, keel_rng_range(rng, -0.5, 0.5));
    p.x = normal_d(rng, n, keel_rng_range(rng, -3.0, 3.0), s);
    p.r = normal_d(rng, n, 0.0, s);
    p.lambda = keel_rng_uniform(rng) < 0.7 ? normal_d(rng, p.dim, 0.5, 0.5) : NULL;
    p.bias = keel_rng_uniform(rng) < 0.7 ? normal_d(rng, p.dim, 0.0, 0.5) : NULL;
    p.gamma = normal_d(rng, p.dim, 1.0, 0.5);
    p.beta = normal_d(rng, p.dim, 0.0, 0.5);
    p.w = normal_d(rng, n, 0.0, 1.0);
    p.wh = normal_d(rng, n, 0.0, 1.0);
    p.rm = normal_d(rng, p.dim, 0.0, 1.0);
    p.rv = test_alloc_d(p.dim);
    for (size_t j = 0; j < p.dim; j++)
        p.rv[j] = keel_rng_range(rng, 0.1, 4.0);
    if (k == K_LAYERSCALE && !p.lambda)
        p.lambda = normal_d(rng, p.dim, 0.1, 0.05);
    p.y = test_alloc_d(n);
    p.h = test_alloc_d(n);
    return p;
}

static void free_problem(problem *p)
{
    double *all[] = {p->x, p->r, p->lambda, p->bias, p->gamma, p->beta, p->w, p->wh,
                     p->rm, p->rv, p->y, p->h};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

static void gradcheck_one(keel_rng *rng, kind k, int trial)
{
    problem p = make_problem(rng, k);
    const size_t n = p.rows * p.dim, d = p.dim;
    char where[128];
    snprintf(where, sizeof where, "%s trial %d (%zu x %zu, eps %g, alpha %g%s%s)", kind_names[k],
             trial, p.rows, p.dim, p.eps, k == K_DYT ? p.dyt_alpha[0] : p.alpha,
             p.lambda ? ", lambda" : "", p.bias ? ", bias" : "");
    double *dx = test_alloc_d(n), *dr = test_alloc_d(n);
    double *dl = test_alloc_d(d), *dbias = test_alloc_d(d), *dg = test_alloc_d(d), *db = test_alloc_d(d);
    double dalpha = 0.0;
    keel_ref_res_grads rg = {dx, dr, dl, dbias, NULL, NULL};
    keel_ref_grads ng = {NULL, dg, db, NULL, NULL};
    int rc = 0;
    switch (k) {
    case K_ADD_LN:
    case K_ADD_RMS:
        keel_ref_residual_f64(p.rows, d, p.x, p.r, p.alpha, p.lambda, p.bias, p.h);
        rc = (k == K_ADD_LN ? keel_ref_add_layernorm_bwd_f64 : keel_ref_add_rmsnorm_bwd_f64)(
            p.rows, d, p.w, p.wh, p.h, p.r, p.alpha, p.lambda, p.gamma, p.eps, &ng, &rg, NULL);
        check_gradient(&p, where, "dx", p.x, dx, n);
        check_gradient(&p, where, "dr", p.r, dr, n);
        if (p.lambda)
            check_gradient(&p, where, "dlambda", p.lambda, dl, d);
        if (p.bias)
            check_gradient(&p, where, "dbias", p.bias, dbias, d);
        check_gradient(&p, where, "dgamma", p.gamma, dg, d);
        if (k == K_ADD_LN)
            check_gradient(&p, where, "dbeta", p.beta, db, d);
        break;
    case K_LAYERSCALE:
        keel_ref_residual_bwd_f64(p.rows, d, p.wh, p.r, 1.0, p.lambda, &rg);
        check_gradient(&p, where, "dx", p.x, dx, n);
        check_gradient(&p, where, "df", p.r, dr, n);
        check_gradient(&p, where, "dlambda", p.lambda, dl, d);
        break;
    case K_BN_TRAIN:
    case K_BN_EVAL:
        ng.dx = dx;
        rc = keel_ref_batchnorm_bwd_f64(p.rows, d, p.w, p.x, p.gamma, p.eps, k == K_BN_TRAIN,
                                        p.rm, p.rv, &ng);
        check_gradient(&p, where, "dx", p.x, dx, n);
        check_gradient(&p, where, "dgamma", p.gamma, dg, d);
        check_gradient(&p, where, "dbeta", p.beta, db, d);
        break;
    default: {
        keel_ref_dyt_grads g = {dx, &dalpha, NULL, dg, db, NULL, NULL};
        keel_ref_dyt_bwd_f64(p.rows, d, p.w, p.x, p.dyt_alpha[0], p.gamma, &g);
        check_gradient(&p, where, "dx", p.x, dx, n);
        check_gradient(&p, where, "dalpha", p.dyt_alpha, &dalpha, 1);
        check_gradient(&p, where, "dgamma", p.gamma, dg, d);
        check_gradient(&p, where, "dbeta", p.beta, db, d);
        break;
    }
    }
    if (rc != 0)
        test_fatal("out of memory");
    double *all[] = {dx, dr, dl, dbias, dg, db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    free_problem(&p);
}

/* ---- forwards against values worked out by hand --------------------------------------------- */

static int close_to(double got, double want)
{
    return fabs(got - want) <= 1e-15 * fmax(1.0, fabs(want));
}

static void known_answers(void)
{
    /* residual: 2 * 1 + 0.5 * 4 + 1 = 5 */
    const double x[1] = {1}, r[1] = {4}, lam[1] = {0.5}, bias[1] = {1};
    double h[1];
    keel_ref_residual_f64(1, 1, x, r, 2.0, lam, bias, h);
    test_check(h[0] == 5.0, "residual known answer: h %.17g, want 5", h[0]);

    /* add + LayerNorm of x = (1, 2), r = (2, 3): h = (3, 5), mean 4, var 1, y = (-1, 1) / sqrt(1 + eps) */
    const double x2[2] = {1, 2}, r2[2] = {2, 3};
    double y2[2], h2[2], mean, rstd;
    keel_ref_add_layernorm_fwd_f64(1, 2, x2, r2, 1.0, NULL, NULL, NULL, NULL, 0.0, h2, y2, &mean,
                                   &rstd);
    test_check(h2[0] == 3.0 && h2[1] == 5.0 && mean == 4.0 && close_to(y2[0], -1.0) &&
                   close_to(y2[1], 1.0),
               "add+layernorm known answer: h %g %g mean %g y %g %g", h2[0], h2[1], mean, y2[0],
               y2[1]);

    /* BatchNorm, 2 rows x 1 feature: 1 and 3: mean 2, biased var 1, unbiased 2 */
    const double xb[2] = {1, 3};
    double yb[2], mb, rb, vb, vub;
    keel_ref_batchnorm_fwd_f64(2, 1, xb, NULL, NULL, 0.0, 1, NULL, NULL, yb, &mb, &rb, &vb, &vub);
    test_check(mb == 2.0 && vb == 1.0 && vub == 2.0 && rb == 1.0 && yb[0] == -1.0 && yb[1] == 1.0,
               "batchnorm known answer: mean %g var %g unbiased %g y %g %g", mb, vb, vub, yb[0],
               yb[1]);
    /* inference with running mean 1, var 3, eps 1: y = (x - 1) / 2 */
    const double rm[1] = {1}, rv[1] = {3};
    keel_ref_batchnorm_fwd_f64(2, 1, xb, NULL, NULL, 1.0, 0, rm, rv, yb, NULL, NULL, NULL, NULL);
    test_check(yb[0] == 0.0 && yb[1] == 1.0, "batchnorm inference known answer: y %g %g", yb[0],
               yb[1]);
    /* a NaN in a column: that column NaN, the other finite */
    const double xn[4] = {1, NAN, 2, 5};
    double yn[4];
    keel_ref_batchnorm_fwd_f64(2, 2, xn, NULL, NULL, 1e-5, 1, NULL, NULL, yn, NULL, NULL, NULL, NULL);
    test_check(isnan(yn[1]) && isnan(yn[3]) && isfinite(yn[0]) && isfinite(yn[2]),
               "batchnorm reference: a NaN in column 1 must make that column NaN, only it");

    /* DyT: y = 2 * tanh(0.5 * 2) + 1 */
    const double xd[1] = {2}, gd[1] = {2}, bd[1] = {1};
    double yd[1];
    keel_ref_dyt_fwd_f64(1, 1, xd, 0.5, gd, bd, yd);
    test_check(close_to(yd[0], 2.0 * tanh(1.0) + 1.0), "dyt known answer: y %.17g", yd[0]);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_block_gradcheck"));
    known_answers();
    for (int trial = 0; trial < 100; trial++)
        for (int k = 0; k < K_COUNT; k++)
            gradcheck_one(&rng, (kind)k, trial);
    return test_finish();
}
