/*
 * test_ref_gradcheck: checks the oracle itself. The float64 reference's forward against values
 * worked out by hand, and its backward against central finite differences of its own forward
 * (LayerNorm dx, dgamma, dbeta; RMSNorm dx, dgamma) on small random shapes, with the loss
 * L = sum(w * y) for a random w, so that dL/dy = w is the dy given to the backward.
 */
#include <math.h>

#include "keel_ref.h"
#include "test_common.h"

/*
 * The bound. A central difference (L(p+h) - L(p-h)) / 2h errs by h^2/6 * |L'''| (truncation)
 * plus ~2^-53 * sum|w*y| / h (rounding of L). Both norms are invariant under shifting and
 * scaling a row, and their k-th derivatives in x scale as rstd^k, so the step is taken relative
 * to the row's scale: h = 1e-4 / rstd. The truncation is then ~1e-8 of the gradient's terms and
 * the rounding ~1e-12 * rows * dim of them. L is linear in gamma and beta, so their differences
 * are exact but for rounding. A gradient can be far smaller than the terms it is made of (dx
 * cancels by construction for LayerNorm dim <= 2 and RMSNorm dim 1), so each component is
 * compared relative to max(|analytic|, 1e-3 * T), T the largest term of that gradient:
 * rstd * |w * gamma| for dx, sum over rows of |w * xhat| for dgamma, of |w| for dbeta. Bound 1e-5:
 * about 10 times the worst seen over 30 seeds (~1e-6); a missing or wrong term is O(1) (dropping
 * mean(g) from the LayerNorm dx fails 200 of 400 problems).
 */
#define GRAD_BOUND 1e-5
#define STEP_REL 1e-4

typedef enum op_kind { OP_LAYERNORM, OP_RMSNORM } op_kind;

/* One small problem in double: x rows x dim, gamma, beta (LayerNorm), loss weights w. */
typedef struct problem {
    op_kind op;
    size_t rows, dim;
    double eps;
    double *x, *gamma, *beta, *w;
    double *y;    /* scratch for the forward */
    double *rstd; /* rows */
} problem;

static double loss(const problem *p)
{
    if (p->op == OP_LAYERNORM)
        keel_ref_layernorm_fwd_f64(p->rows, p->dim, p->x, p->gamma, p->beta, p->eps, p->y, NULL,
                                   NULL);
    else
        keel_ref_rmsnorm_fwd_f64(p->rows, p->dim, p->x, p->gamma, p->eps, p->y, NULL);
    double l = 0.0;
    for (size_t i = 0; i < p->rows * p->dim; i++)
        l += p->w[i] * p->y[i];
    return l;
}

/* (L(v+h) - L(v-h)) / 2h, v restored afterwards. */
static double central_difference(problem *p, double *v, double h)
{
    double saved = *v;
    *v = saved + h;
    double up = loss(p);
    *v = saved - h;
    double down = loss(p);
    *v = saved;
    return (up - down) / (2.0 * h);
}

/* Compares a gradient with finite differences of its n variables; step[i] is the step of v[i],
 * terms the size of the largest term the gradient is made of. */
static void check_gradient(problem *p, const char *name, const char *shape, double *v,
                           const double *analytic, size_t n, const double *step, double terms)
{
    double g_max = terms;
    for (size_t i = 0; i < n; i++)
        g_max = fmax(g_max, fabs(analytic[i]));
    double worst = 0.0;
    size_t at = 0;
    double worst_fd = 0.0;
    for (size_t i = 0; i < n; i++) {
        double fd = central_difference(p, v + i, step[i]);
        double scale = fmax(fabs(analytic[i]), 1e-3 * g_max);
        double err = scale > 0.0 ? fabs(fd - analytic[i]) / scale : fabs(fd);
        if (!(err <= worst)) {
            worst = err;
            at = i;
            worst_fd = fd;
        }
    }
    test_check(worst <= GRAD_BOUND,
               "%s %s: relative error %.3g > %.0e at index %zu (analytic %.17g, finite "
               "difference %.17g)",
               shape, name, worst, GRAD_BOUND, at, analytic[at], worst_fd);
}

static void fill_normal_d(keel_rng *rng, double *v, size_t n, double centre, double scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = centre + scale * keel_rng_normal(rng);
}

/* A random problem: rows 1..4, dim 1..9, rows at an offset and scale that vary, eps that is
 * negligible, comparable or dominant. */
static problem make_problem(keel_rng *rng, op_kind op)
{
    static const double eps_choices[] = {1e-5, 1e-2, 1.0};
    problem p;
    p.op = op;
    p.rows = 1 + keel_rng_below(rng, 4);
    p.dim = 1 + keel_rng_below(rng, 9);
    p.eps = eps_choices[keel_rng_below(rng, 3)];
    size_t n = p.rows * p.dim;
    p.x = test_alloc_d(n);
    p.w = test_alloc_d(n);
    p.y = test_alloc_d(n);
    p.rstd = test_alloc_d(p.rows);
    p.gamma = test_alloc_d(p.dim);
    p.beta = test_alloc_d(p.dim);
    double centre = keel_rng_range(rng, -5.0, 5.0);
    double scale = pow(10.0, keel_rng_range(rng, -2.0, 1.0));
    fill_normal_d(rng, p.x, n, centre, scale);
    fill_normal_d(rng, p.w, n, 0.0, 1.0);
    fill_normal_d(rng, p.gamma, p.dim, 1.0, 0.5);
    fill_normal_d(rng, p.beta, p.dim, 0.0, 0.5);
    return p;
}

static void free_problem(problem *p)
{
    free(p->x);
    free(p->w);
    free(p->y);
    free(p->rstd);
    free(p->gamma);
    free(p->beta);
}

/* The largest terms of each gradient (see the bound): needs p->rstd filled. */
static void term_scales(problem *p, double *dx_terms, double *dgamma_terms, double *dbeta_terms)
{
    double *xhat = test_alloc_d(p->rows * p->dim);
    if (p->op == OP_LAYERNORM)
        keel_ref_layernorm_fwd_f64(p->rows, p->dim, p->x, NULL, NULL, p->eps, xhat, NULL, NULL);
    else
        keel_ref_rmsnorm_fwd_f64(p->rows, p->dim, p->x, NULL, p->eps, xhat, NULL);
    *dx_terms = *dgamma_terms = *dbeta_terms = 0.0;
    for (size_t j = 0; j < p->dim; j++) {
        double sum_wx = 0.0, sum_w = 0.0;
        for (size_t r = 0; r < p->rows; r++) {
            size_t i = r * p->dim + j;
            *dx_terms = fmax(*dx_terms, p->rstd[r] * fabs(p->w[i] * p->gamma[j]));
            sum_wx += fabs(p->w[i] * xhat[i]);
            sum_w += fabs(p->w[i]);
        }
        *dgamma_terms = fmax(*dgamma_terms, sum_wx);
        *dbeta_terms = fmax(*dbeta_terms, sum_w);
    }
    free(xhat);
}

static void gradcheck_one(keel_rng *rng, op_kind op, int trial)
{
    problem p = make_problem(rng, op);
    size_t n = p.rows * p.dim;
    char shape[96];
    snprintf(shape, sizeof shape, "%s trial %d (%zu x %zu, eps %g)",
             op == OP_LAYERNORM ? "layernorm" : "rmsnorm", trial, p.rows, p.dim, p.eps);

    double *dx = test_alloc_d(n), *dgamma = test_alloc_d(p.dim), *dbeta = test_alloc_d(p.dim);
    keel_ref_grads grads = {dx, dgamma, op == OP_LAYERNORM ? dbeta : NULL, NULL, NULL};
    int rc;
    if (op == OP_LAYERNORM) {
        rc = keel_ref_layernorm_bwd_f64(p.rows, p.dim, p.w, p.x, p.gamma, p.eps, &grads);
        keel_ref_layernorm_fwd_f64(p.rows, p.dim, p.x, p.gamma, p.beta, p.eps, NULL, NULL,
                                   p.rstd);
    } else {
        rc = keel_ref_rmsnorm_bwd_f64(p.rows, p.dim, p.w, p.x, p.gamma, p.eps, &grads);
        keel_ref_rmsnorm_fwd_f64(p.rows, p.dim, p.x, p.gamma, p.eps, NULL, p.rstd);
    }
    if (rc != 0)
        test_fatal("out of memory");

    double dx_terms, dgamma_terms, dbeta_terms;
    term_scales(&p, &dx_terms, &dgamma_terms, &dbeta_terms);

    /* Steps: x relative to its row's scale 1/rstd; gamma and beta 1e-3 (L is linear in them). */
    double *step = test_alloc_d(n > p.dim ? n : p.dim);
    for (size_t i = 0; i < n; i++)
        step[i] = STEP_REL / p.rstd[i / p.dim];
    check_gradient(&p, "dx", shape, p.x, dx, n, step, dx_terms);
    for (size_t j = 0; j < p.dim; j++)
        step[j] = 1e-3;
    check_gradient(&p, "dgamma", shape, p.gamma, dgamma, p.dim, step, dgamma_terms);
    if (op == OP_LAYERNORM)
        check_gradient(&p, "dbeta", shape, p.beta, dbeta, p.dim, step, dbeta_terms);

    free(step);
    free(dx);
    free(dgamma);
    free(dbeta);
    free_problem(&p);
}

/* ---- the forward against values worked out by hand ------------------------------------------ */

static int close_to(double got, double want)
{
    return fabs(got - want) <= 1e-15 * fmax(1.0, fabs(want));
}

static void known_layernorm(void)
{
    /* x = 1, 2, 3, 4: mean 2.5, biased var (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25. */
    const float x[4] = {1, 2, 3, 4};
    const float gamma[4] = {2, 2, 2, 2}, beta[4] = {1, 1, 1, 1};
    double y[4], mean, rstd;
    keel_ref_layernorm_fwd(1, 4, x, 4, gamma, beta, 0.25f, y, &mean, &rstd);
    test_check(close_to(mean, 2.5), "layernorm known answer: mean %.17g, want 2.5", mean);
    test_check(close_to(rstd, 1.0 / sqrt(1.5)), "layernorm known answer: rstd %.17g", rstd);
    for (int j = 0; j < 4; j++) {
        double want = (x[j] - 2.5) / sqrt(1.5) * 2.0 + 1.0;
        test_check(close_to(y[j], want), "layernorm known answer: y[%d] %.17g, want %.17g", j,
                   y[j], want);
    }
    /* A constant row: y == beta exactly, rstd = 1/sqrt(eps). */
    const float c[3] = {1234.5f, 1234.5f, 1234.5f};
    keel_ref_layernorm_fwd(1, 3, c, 3, NULL, beta, 1e-4f, y, &mean, &rstd);
    test_check(y[0] == 1.0 && y[1] == 1.0 && y[2] == 1.0 && mean == 1234.5,
               "layernorm known answer: constant row gives y %g %g %g, mean %g", y[0], y[1],
               y[2], mean);
    test_check(close_to(rstd, 1.0 / sqrt((double)1e-4f)), "constant row rstd %.17g", rstd);
}

static void known_rmsnorm(void)
{
    /* x = 3, 4: mean of squares 12.5. */
    const float x[2] = {3, 4}, gamma[2] = {1, -2};
    double y[2], rstd;
    keel_ref_rmsnorm_fwd(1, 2, x, 2, gamma, 0.0f, y, &rstd);
    test_check(close_to(rstd, 1.0 / sqrt(12.5)), "rmsnorm known answer: rstd %.17g", rstd);
    test_check(close_to(y[0], 3.0 / sqrt(12.5)) && close_to(y[1], -8.0 / sqrt(12.5)),
               "rmsnorm known answer: y %.17g %.17g", y[0], y[1]);
    /* x^2 would overflow float32 here; in double it is exact. */
    const float big[2] = {3e30f, 4e30f};
    keel_ref_rmsnorm_fwd(1, 2, big, 2, NULL, 0.0f, y, &rstd);
    double want = (double)3e30f / sqrt(((double)3e30f * 3e30f + (double)4e30f * 4e30f) / 2.0);
    test_check(close_to(y[0], want), "rmsnorm known answer at 1e30: y[0] %.17g, want %.17g",
               y[0], want);
}

/* A row with NaN or Inf: NaN statistics and outputs (keel.h's rule); the other row unchanged. */
static void nonfinite_rows(void)
{
    const float values[3] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        float x[8] = {1, 2, 3, 4, 5, 6, 7, 9};
        x[5] = values[k];
        double y[8], mean[2], rstd[2], yr[8], rr[2];
        keel_ref_layernorm_fwd(2, 4, x, 4, NULL, NULL, 1e-5f, y, mean, rstd);
        keel_ref_rmsnorm_fwd(2, 4, x, 4, NULL, 1e-5f, yr, rr);
        int row_nan = isnan(mean[1]) && isnan(rstd[1]) && isnan(rr[1]);
        for (int j = 4; j < 8; j++)
            row_nan = row_nan && isnan(y[j]) && isnan(yr[j]);
        int other_finite = isfinite(mean[0]) && isfinite(rstd[0]) && isfinite(rr[0]);
        for (int j = 0; j < 4; j++)
            other_finite = other_finite && isfinite(y[j]) && isfinite(yr[j]);
        test_check(row_nan && other_finite, "reference with %g in row 1: row 1 not all NaN or "
                   "row 0 touched", (double)values[k]);
    }
}

/* The float32 strided entry points and NULL gamma/beta agree with the double ones. */
static void strided_matches_dense(keel_rng *rng)
{
    enum { ROWS = 3, DIM = 5, STRIDE = 8 };
    float xf[ROWS * STRIDE], dyf[ROWS * STRIDE];
    double xd[ROWS * DIM], dyd[ROWS * DIM], ones[DIM], zeros[DIM];
    for (size_t i = 0; i < ROWS * STRIDE; i++) {
        xf[i] = (float)keel_rng_normal(rng);
        dyf[i] = (float)keel_rng_normal(rng);
    }
    for (size_t r = 0; r < ROWS; r++)
        for (size_t j = 0; j < DIM; j++) {
            xd[r * DIM + j] = xf[r * STRIDE + j];
            dyd[r * DIM + j] = dyf[r * STRIDE + j];
        }
    for (size_t j = 0; j < DIM; j++) {
        ones[j] = 1.0;
        zeros[j] = 0.0;
    }
    double y1[ROWS * DIM], y2[ROWS * DIM], dx1[ROWS * DIM], dx2[ROWS * DIM];
    double dg1[DIM], dg2[DIM], db1[DIM], db2[DIM];
    keel_ref_grads g1 = {dx1, dg1, db1, NULL, NULL}, g2 = {dx2, dg2, db2, NULL, NULL};

    keel_ref_layernorm_fwd(ROWS, DIM, xf, STRIDE, NULL, NULL, 1e-5f, y1, NULL, NULL);
    keel_ref_layernorm_fwd_f64(ROWS, DIM, xd, ones, zeros, (double)1e-5f, y2, NULL, NULL);
    keel_ref_layernorm_bwd(ROWS, DIM, dyf, STRIDE, xf, STRIDE, NULL, 1e-5f, &g1);
    keel_ref_layernorm_bwd_f64(ROWS, DIM, dyd, xd, ones, (double)1e-5f, &g2);
    int same = !memcmp(y1, y2, sizeof y1) && !memcmp(dx1, dx2, sizeof dx1) &&
               !memcmp(dg1, dg2, sizeof dg1) && !memcmp(db1, db2, sizeof db1);
    test_check(same, "layernorm reference: strided float32 / NULL params differ from dense "
               "double / ones and zeros");

    keel_ref_rmsnorm_fwd(ROWS, DIM, xf, STRIDE, NULL, 1e-5f, y1, NULL);
    keel_ref_rmsnorm_fwd_f64(ROWS, DIM, xd, ones, (double)1e-5f, y2, NULL);
    keel_ref_rmsnorm_bwd(ROWS, DIM, dyf, STRIDE, xf, STRIDE, NULL, 1e-5f, &g1);
    keel_ref_rmsnorm_bwd_f64(ROWS, DIM, dyd, xd, ones, (double)1e-5f, &g2);
    same = !memcmp(y1, y2, sizeof y1) && !memcmp(dx1, dx2, sizeof dx1) &&
           !memcmp(dg1, dg2, sizeof dg1);
    test_check(same, "rmsnorm reference: strided float32 / NULL gamma differ from dense double "
               "/ ones");
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_ref_gradcheck"));

    known_layernorm();
    known_rmsnorm();
    nonfinite_rows();
    strided_matches_dense(&rng);
    for (int trial = 0; trial < 200; trial++) {
        gradcheck_one(&rng, OP_LAYERNORM, trial);
        gradcheck_one(&rng, OP_RMSNORM, trial);
    }
    return test_finish();
}
