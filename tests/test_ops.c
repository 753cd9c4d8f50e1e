/*
 * test_ops: every operation (keel_layernorm_fwd/bwd, keel_rmsnorm_fwd/bwd) against the float64
 * reference, on every instruction-set path this machine runs.
 *
 * Per configuration (op, ISA, input kind, rows, dim, strides, gamma/beta, eps, flags, skipped
 * outputs, saved or recomputed statistics, in place, dx aliasing dy):
 *  - the forward's y within KEEL_BOUND_ROW_ULPS ulps of its row's largest |ref|, mean and rstd
 *    within KEEL_BOUND_STAT_ULPS ulps of theirs (bounds and reasons in keel_cases.h);
 *  - the backward's dx within KEEL_BOUND_ROW_ULPS ulps of its row (floor: keel_dx_scale), dgamma
 *    and dbeta within keel_bound_dparam(rows) * FLT_EPSILON of the sum of |terms| they add up;
 *  - what the contract makes exact, bitwise: the backward with recomputed statistics equals the
 *    backward with the forward's saved ones; skipping an output changes no other output; an
 *    accumulated dx is old dx + the plain dx; in place equals out of place;
 *  - nothing written outside the outputs (padding after dim, the row after the last, the element
 *    after mean/rstd/dgamma/dbeta: all sentinels) and no padding read (x and dy padding is NaN).
 * dy is random normal: a dy that made dx cancel to ~0 would make ulps of the row meaningless.
 * Then the special rows of keel.h: NaN/Inf rows, constant rows, all-zero rows with eps 1e-12;
 * and a check that the bounds have teeth: a float32-only mean and E[x^2]-E[x]^2 must fail them.
 */
#include <math.h>

#include "keel_ref.h"
#include "test_common.h"

typedef enum op_kind { OP_LAYERNORM, OP_RMSNORM } op_kind;

static const char *op_name(op_kind op)
{
    return op == OP_LAYERNORM ? "layernorm" : "rmsnorm";
}

/* One run's configuration. */
typedef struct config {
    op_kind op;
    keel_isa isa;
    keel_case_kind kind;
    size_t rows, dim;
    size_t x_stride, y_stride, dy_stride, dx_stride;
    int with_gamma, with_beta;
    float eps;
    int in_place;     /* a second forward with y == x */
    int want_stats;   /* the variant forward writes mean/rstd */
    int saved_stats;  /* the variant backward gets the forward's mean/rstd (else recomputes) */
    int want_dx, want_dgamma, want_dbeta;
    int dx_aliases_dy;
    unsigned flags;   /* KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS */
} config;

static const char *describe(const config *cf)
{
    static char text[320];
    snprintf(text, sizeof text,
             "%s isa=%s case=%s rows=%zu dim=%zu strides x%zu y%zu dy%zu dx%zu%s%s eps=%g%s%s"
             "%s%s%s%s%s%s",
             op_name(cf->op), keel_isa_name(cf->isa), keel_case_name(cf->kind), cf->rows,
             cf->dim, cf->x_stride, cf->y_stride, cf->dy_stride, cf->dx_stride,
             cf->with_gamma ? " gamma" : "", cf->with_beta ? " beta" : "", (double)cf->eps,
             cf->in_place ? " in-place" : "", cf->want_stats ? "" : " no-stats",
             cf->saved_stats ? " saved" : " recomputed", cf->want_dx ? "" : " skip-dx",
             cf->want_dgamma ? "" : " skip-dgamma",
             cf->op == OP_LAYERNORM && !cf->want_dbeta ? " skip-dbeta" : "",
             cf->dx_aliases_dy ? " dx=dy" : "",
             cf->flags & KEEL_FLAG_ACCUMULATE_DX
                 ? (cf->flags & KEEL_FLAG_ACCUMULATE_DPARAMS ? " acc-dx acc-dparams" : " acc-dx")
                 : (cf->flags & KEEL_FLAG_ACCUMULATE_DPARAMS ? " acc-dparams" : ""));
    return text;
}

/* ---- calling keel --------------------------------------------------------------------------- */

static keel_status lib_fwd(keel_ctx *ctx, const config *cf, const keel_case *c, const float *x,
                           size_t x_stride, float *y, size_t y_stride, float *mean, float *rstd)
{
    if (cf->op == OP_LAYERNORM)
        return keel_layernorm_fwd(ctx, cf->rows, cf->dim, keel_f32(x, x_stride),
                                  keel_f32(y, y_stride), c->gamma, c->beta, c->eps, mean, rstd,
                                  0);
    return keel_rmsnorm_fwd(ctx, cf->rows, cf->dim, keel_f32(x, x_stride), keel_f32(y, y_stride),
                            c->gamma, c->eps, rstd, 0);
}

/* Backward outputs; a NULL pointer is a skipped output. */
typedef struct grads {
    float *dx;
    size_t dx_stride;
    float *dgamma, *dbeta;
} grads;

static keel_status lib_bwd(keel_ctx *ctx, const config *cf, const keel_case *c, const float *dy,
                           size_t dy_stride, const float *mean, const float *rstd,
                           const grads *g, unsigned flags)
{
    keel_tensor dx = g->dx ? keel_f32(g->dx, g->dx_stride) : keel_none();
    if (cf->op == OP_LAYERNORM)
        return keel_layernorm_bwd(ctx, cf->rows, cf->dim, keel_f32(dy, dy_stride),
                                  keel_f32(c->x, c->x_stride), mean, rstd, c->gamma, c->eps, dx,
                                  g->dgamma, g->dbeta, flags);
    return keel_rmsnorm_bwd(ctx, cf->rows, cf->dim, keel_f32(dy, dy_stride),
                            keel_f32(c->x, c->x_stride), rstd, c->gamma, c->eps, dx, g->dgamma,
                            flags);
}

/* ---- the reference ---------------------------------------------------------------------------- */

typedef struct reference {
    double *y, *mean, *rstd;
    double *dx, *dgamma, *dbeta, *dgamma_mag, *dbeta_mag;
} reference;

static void reference_compute(const config *cf, const keel_case *c, reference *ref)
{
    size_t n = cf->rows * cf->dim;
    ref->y = test_alloc_d(n);
    ref->mean = test_alloc_d(cf->rows);
    ref->rstd = test_alloc_d(cf->rows);
    ref->dx = test_alloc_d(n);
    ref->dgamma = test_alloc_d(cf->dim);
    ref->dbeta = test_alloc_d(cf->dim);
    ref->dgamma_mag = test_alloc_d(cf->dim);
    ref->dbeta_mag = test_alloc_d(cf->dim);
    keel_ref_grads out = {ref->dx, ref->dgamma, ref->dbeta, ref->dgamma_mag, ref->dbeta_mag};
    int rc;
    if (cf->op == OP_LAYERNORM) {
        rc = keel_ref_layernorm_fwd(cf->rows, cf->dim, c->x, c->x_stride, c->gamma, c->beta,
                                    c->eps, ref->y, ref->mean, ref->rstd);
        rc |= keel_ref_layernorm_bwd(cf->rows, cf->dim, c->dy, c->dy_stride, c->x, c->x_stride,
                                     c->gamma, c->eps, &out);
    } else {
        rc = keel_ref_rmsnorm_fwd(cf->rows, cf->dim, c->x, c->x_stride, c->gamma, c->eps,
                                  ref->y, ref->rstd);
        rc |= keel_ref_rmsnorm_bwd(cf->rows, cf->dim, c->dy, c->dy_stride, c->x, c->x_stride,
                                   c->gamma, c->eps, &out);
    }
    if (rc != 0)
        test_fatal("the reference ran out of memory");
}

static void reference_free(reference *ref)
{
    double *all[] = {ref->y, ref->mean, ref->rstd, ref->dx,
                     ref->dgamma, ref->dbeta, ref->dgamma_mag, ref->dbeta_mag};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* ---- checks ------------------------------------------------------------------------------------ */

/* Rows of got (stride) against rows of ref (dense) in ulps of each row's largest |ref|; the
 * floor of row r is floors[r] (NULL: none). One check for all rows, naming the worst. */
static void check_rows(const config *cf, const char *what, const float *got, size_t stride,
                       const double *ref, const double *floors)
{
    size_t worst_row, worst_j;
    double worst = keel_err_ulps_rows(got, stride, ref, cf->rows, cf->dim, floors, &worst_row,
                                      &worst_j);
    size_t at = worst_row * cf->dim + worst_j;
    test_check(worst <= KEEL_BOUND_ROW_ULPS,
               "%s: %s error %.3g ulps > %g at row %zu index %zu (got %.9g, ref %.17g)",
               describe(cf), what, worst, KEEL_BOUND_ROW_ULPS, worst_row, worst_j,
               (double)got[worst_row * stride + worst_j], ref[at]);
}

static void check_stats(const config *cf, const char *what, const float *got, const double *ref)
{
    size_t r;
    double e = keel_err_ulps_each(got, ref, cf->rows, &r);
    test_check(e <= KEEL_BOUND_STAT_ULPS, "%s: %s error %.3g ulps > %g at row %zu (got %.9g, "
               "ref %.17g)", describe(cf), what, e, KEEL_BOUND_STAT_ULPS, r, (double)got[r],
               ref[r]);
}

static void check_sum(const config *cf, const char *what, const float *got, const double *ref,
                      const double *mag)
{
    size_t j;
    double e = keel_err_sum(got, ref, mag, cf->dim, &j);
    double bound = keel_bound_dparam(cf->rows);
    test_check(e <= bound, "%s: %s error %.3g FLT_EPSILON of sum|terms| > %g at index %zu "
               "(got %.9g, ref %.17g, sum|terms| %.6g)", describe(cf), what, e, bound, j,
               (double)got[j], ref[j], mag[j]);
}

/* The padding after dim in each of `rows` rows, and the whole row after them, still hold the
 * sentinel. */
static void check_untouched(const config *cf, const char *what, const float *buf, size_t stride)
{
    size_t bad = SIZE_MAX;
    for (size_t r = 0; r < cf->rows && bad == SIZE_MAX; r++) {
        size_t pad = stride - cf->dim;
        if (test_first_written(buf + r * stride + cf->dim, pad) != pad)
            bad = r * stride + cf->dim + test_first_written(buf + r * stride + cf->dim, pad);
    }
    if (bad == SIZE_MAX && test_first_written(buf + cf->rows * stride, stride) != stride)
        bad = cf->rows * stride + test_first_written(buf + cf->rows * stride, stride);
    test_check(bad == SIZE_MAX, "%s: %s written outside its rows at element %zu", describe(cf),
               what, bad);
}

/* The element after a dense output of n floats holds the sentinel. */
static void check_tail(const config *cf, const char *what, const float *buf, size_t n)
{
    test_check(test_first_written(buf + n, 1) == 1, "%s: %s written past its %zu elements",
               describe(cf), what, n);
}

/* rows x dim of a (a_stride) and b (b_stride) are the same bits. */
static void check_same(const config *cf, const char *what, const float *a, size_t a_stride,
                       const float *b, size_t b_stride, size_t rows, size_t dim)
{
    for (size_t r = 0; r < rows; r++) {
        size_t j = test_first_diff(a + r * a_stride, b + r * b_stride, dim);
        if (j != dim) {
            test_check(0, "%s: %s not bitwise equal at row %zu index %zu (%.9g vs %.9g)",
                       describe(cf), what, r, j, (double)a[r * a_stride + j],
                       (double)b[r * b_stride + j]);
            return;
        }
    }
    test_check(1, "%s", what);
}

static void check_status(const config *cf, const char *what, keel_status st)
{
    test_check(st == KEEL_OK, "%s: %s returned %s (%s)", describe(cf), what,
               keel_status_str(st), keel_last_error());
}

/* ---- one configuration --------------------------------------------------------------------- */

/* Sentinel-filled (rows + 1) x stride floats: one spare row to catch writes past the end. */
static float *output_rows(size_t rows, size_t stride)
{
    float *p = test_alloc((rows + 1) * stride);
    test_fill_sentinel(p, (rows + 1) * stride);
    return p;
}

/* The forward: checked against the reference; returns y, mean and rstd of the plain run (the
 * backward's saved statistics). */
static void run_forward(keel_ctx *ctx, const config *cf, const keel_case *c,
                        const reference *ref, float **y_out, float **mean_out, float **rstd_out)
{
    float *y = output_rows(cf->rows, cf->y_stride);
    float *mean = output_rows(cf->rows, 1), *rstd = output_rows(cf->rows, 1);
    float *mean_arg = cf->op == OP_LAYERNORM ? mean : NULL;
    check_status(cf, "forward", lib_fwd(ctx, cf, c, c->x, c->x_stride, y, cf->y_stride,
                                        mean_arg, rstd));
    check_rows(cf, "y", y, cf->y_stride, ref->y, NULL);
    if (cf->op == OP_LAYERNORM) {
        check_stats(cf, "mean", mean, ref->mean);
        check_tail(cf, "mean", mean, cf->rows);
    }
    check_stats(cf, "rstd", rstd, ref->rstd);
    check_tail(cf, "rstd", rstd, cf->rows);
    check_untouched(cf, "y", y, cf->y_stride);

    if (!cf->want_stats) { /* optional statistics skipped: y unchanged */
        float *y2 = output_rows(cf->rows, cf->y_stride);
        check_status(cf, "forward without statistics",
                     lib_fwd(ctx, cf, c, c->x, c->x_stride, y2, cf->y_stride, NULL, NULL));
        check_same(cf, "y without statistics", y2, cf->y_stride, y, cf->y_stride, cf->rows,
                   cf->dim);
        free(y2);
    }
    if (cf->in_place) { /* y == x, same stride: the same bits, padding (NaN) untouched */
        float *buf = output_rows(cf->rows, cf->x_stride);
        memcpy(buf, c->x, cf->rows * cf->x_stride * sizeof(float));
        check_status(cf, "in-place forward",
                     lib_fwd(ctx, cf, c, buf, cf->x_stride, buf, cf->x_stride, NULL, NULL));
        check_same(cf, "in-place y", buf, cf->x_stride, y, cf->y_stride, cf->rows, cf->dim);
        size_t j = 0;
        for (size_t r = 0; r < cf->rows && j == 0; r++)
            if (memcmp(buf + r * cf->x_stride + cf->dim, c->x + r * cf->x_stride + cf->dim,
                       (cf->x_stride - cf->dim) * sizeof(float)))
                j = 1;
        test_check(j == 0 && test_first_written(buf + cf->rows * cf->x_stride, cf->x_stride) ==
                                 cf->x_stride,
                   "%s: in-place forward wrote outside the rows", describe(cf));
        free(buf);
    }
    *y_out = y;
    *mean_out = mean;
    *rstd_out = rstd;
}

/* floors[r] = keel_dx_scale of row r (the size of the terms dx is the difference of). */
static double *dx_floors(const config *cf, const keel_case *c, const reference *ref)
{
    double *f = test_alloc_d(cf->rows);
    keel_dx_floors(cf->rows, cf->dim, c->dy, c->dy_stride, c->gamma, ref->rstd, f);
    return f;
}

/* The baseline backward: every output, saved statistics, no flags. Checked against the
 * reference, and bitwise against the same call with recomputed statistics. */
static grads run_backward_baseline(keel_ctx *ctx, const config *cf, const keel_case *c,
                                   const reference *ref, const float *mean, const float *rstd,
                                   const double *floors)
{
    int ln = cf->op == OP_LAYERNORM;
    grads g = {output_rows(cf->rows, cf->dx_stride), cf->dx_stride, output_rows(cf->dim, 1),
               ln ? output_rows(cf->dim, 1) : NULL};
    check_status(cf, "backward", lib_bwd(ctx, cf, c, c->dy, c->dy_stride, ln ? mean : NULL,
                                         rstd, &g, 0));
    check_rows(cf, "dx", g.dx, g.dx_stride, ref->dx, floors);
    check_untouched(cf, "dx", g.dx, g.dx_stride);
    check_sum(cf, "dgamma", g.dgamma, ref->dgamma, ref->dgamma_mag);
    check_tail(cf, "dgamma", g.dgamma, cf->dim);
    if (ln) {
        check_sum(cf, "dbeta", g.dbeta, ref->dbeta, ref->dbeta_mag);
        check_tail(cf, "dbeta", g.dbeta, cf->dim);
    }

    grads re = {output_rows(cf->rows, cf->dx_stride), cf->dx_stride, output_rows(cf->dim, 1),
                ln ? output_rows(cf->dim, 1) : NULL};
    check_status(cf, "backward with recomputed statistics",
                 lib_bwd(ctx, cf, c, c->dy, c->dy_stride, NULL, NULL, &re, 0));
    check_same(cf, "dx recomputed vs saved statistics", re.dx, re.dx_stride, g.dx, g.dx_stride,
               cf->rows, cf->dim);
    check_same(cf, "dgamma recomputed vs saved statistics", re.dgamma, 0, g.dgamma, 0, 1,
               cf->dim);
    if (ln)
        check_same(cf, "dbeta recomputed vs saved statistics", re.dbeta, 0, g.dbeta, 0, 1,
                   cf->dim);
    free(re.dx);
    free(re.dgamma);
    free(re.dbeta);
    return g;
}

/* A dense dim-long parameter gradient buffer for the variant: random start values when
 * accumulating (kept in *init), else sentinels. */
static float *param_grad_buffer(keel_rng *rng, const config *cf, int wanted, float **init)
{
    *init = NULL;
    if (!wanted)
        return NULL;
    float *p = output_rows(cf->dim, 1);
    if (cf->flags & KEEL_FLAG_ACCUMULATE_DPARAMS) {
        keel_case_fill_normal(rng, p, cf->dim);
        *init = test_copy(p, cf->dim);
    }
    return p;
}

/* An accumulated parameter gradient: against init + ref with init's size in the sum. */
static void check_accumulated_sum(const config *cf, const char *what, const float *got,
                                  const float *init, const double *ref, const double *mag)
{
    double *want = test_alloc_d(cf->dim), *want_mag = test_alloc_d(cf->dim);
    for (size_t j = 0; j < cf->dim; j++) {
        want[j] = (double)init[j] + ref[j];
        want_mag[j] = fabs((double)init[j]) + mag[j];
    }
    check_sum(cf, what, got, want, want_mag);
    free(want);
    free(want_mag);
}

/* The variant backward of cf (skips, flags, aliasing, statistics given or not), judged against
 * the baseline's bits where the contract fixes them, else against the reference. */
static void run_backward_variant(keel_ctx *ctx, keel_rng *rng, const config *cf,
                                 const keel_case *c, const reference *ref, const grads *base,
                                 const float *mean, const float *rstd)
{
    int ln = cf->op == OP_LAYERNORM;
    int acc_dx = (cf->flags & KEEL_FLAG_ACCUMULATE_DX) != 0;
    int acc_dp = (cf->flags & KEEL_FLAG_ACCUMULATE_DPARAMS) != 0;
    const float *dy = c->dy;
    size_t dy_stride = c->dy_stride;

    /* dx starts as: dy (aliased), random values (accumulating), or sentinels. */
    grads g = {NULL, cf->dx_stride, NULL, NULL};
    float *dx0 = NULL;
    if (cf->want_dx) {
        g.dx = output_rows(cf->rows, cf->dx_stride);
        if (cf->dx_aliases_dy) {
            memcpy(g.dx, c->dy, cf->rows * c->dy_stride * sizeof(float));
            dy = g.dx;
        } else if (acc_dx) {
            for (size_t r = 0; r < cf->rows; r++)
                keel_case_fill_normal(rng, g.dx + r * cf->dx_stride, cf->dim);
        }
        dx0 = test_copy(g.dx, (cf->rows + 1) * cf->dx_stride);
    }
    float *dgamma0, *dbeta0;
    g.dgamma = param_grad_buffer(rng, cf, cf->want_dgamma, &dgamma0);
    g.dbeta = param_grad_buffer(rng, cf, ln && cf->want_dbeta, &dbeta0);

    check_status(cf, "variant backward",
                 lib_bwd(ctx, cf, c, dy, dy_stride, cf->saved_stats && ln ? mean : NULL,
                         cf->saved_stats ? rstd : NULL, &g, cf->flags));

    if (g.dx) {
        if (acc_dx) { /* old dx + the plain dx, one float addition */
            float *want = test_copy(base->dx, (cf->rows + 1) * cf->dx_stride);
            for (size_t r = 0; r < cf->rows; r++)
                for (size_t j = 0; j < cf->dim; j++) {
                    size_t i = r * cf->dx_stride + j;
                    want[i] = dx0[i] + base->dx[i];
                }
            check_same(cf, "accumulated dx vs old dx + dx", g.dx, cf->dx_stride, want,
                       cf->dx_stride, cf->rows, cf->dim);
            free(want);
        } else {
            check_same(cf, "dx vs the baseline", g.dx, cf->dx_stride, base->dx, base->dx_stride,
                       cf->rows, cf->dim);
        }
        /* padding and the spare row: as they were (the sentinel, or dy's NaN padding) */
        size_t pad_bad = 0;
        for (size_t r = 0; r <= cf->rows; r++) {
            size_t from = r < cf->rows ? r * cf->dx_stride + cf->dim : r * cf->dx_stride;
            size_t to = (r + 1) * cf->dx_stride;
            if (memcmp(g.dx + from, dx0 + from, (to - from) * sizeof(float)))
                pad_bad = 1;
        }
        test_check(!pad_bad, "%s: dx written outside its rows", describe(cf));
    }
    if (g.dgamma) {
        if (acc_dp)
            check_accumulated_sum(cf, "accumulated dgamma", g.dgamma, dgamma0, ref->dgamma,
                                  ref->dgamma_mag);
        else
            check_same(cf, "dgamma vs the baseline", g.dgamma, 0, base->dgamma, 0, 1, cf->dim);
        check_tail(cf, "dgamma", g.dgamma, cf->dim);
    }
    if (g.dbeta) {
        if (acc_dp)
            check_accumulated_sum(cf, "accumulated dbeta", g.dbeta, dbeta0, ref->dbeta,
                                  ref->dbeta_mag);
        else
            check_same(cf, "dbeta vs the baseline", g.dbeta, 0, base->dbeta, 0, 1, cf->dim);
        check_tail(cf, "dbeta", g.dbeta, cf->dim);
    }
    free(g.dx);
    free(dx0);
    free(g.dgamma);
    free(dgamma0);
    free(g.dbeta);
    free(dbeta0);
}

static void run_config(keel_ctx *ctx, keel_rng *rng, const config *cf)
{
    keel_case c;
    if (keel_case_make(&c, rng, cf->kind, cf->rows, cf->dim, cf->x_stride, cf->dy_stride,
                       cf->with_gamma, cf->with_beta, cf->eps) != 0)
        test_fatal("out of memory");
    reference ref;
    reference_compute(cf, &c, &ref);

    float *y, *mean, *rstd;
    run_forward(ctx, cf, &c, &ref, &y, &mean, &rstd);
    double *floors = dx_floors(cf, &c, &ref);
    grads base = run_backward_baseline(ctx, cf, &c, &ref, mean, rstd, floors);
    run_backward_variant(ctx, rng, cf, &c, &ref, &base, mean, rstd);

    free(base.dx);
    free(base.dgamma);
    free(base.dbeta);
    free(floors);
    free(y);
    free(mean);
    free(rstd);
    reference_free(&ref);
    keel_case_free(&c);
}

/* ---- configurations ------------------------------------------------------------------------ */

static int coin(keel_rng *rng, double p)
{
    return keel_rng_uniform(rng) < p;
}

/* stride == dim half the time, else dim plus 1..17. */
static size_t random_stride(keel_rng *rng, size_t dim)
{
    return coin(rng, 0.5) ? dim : dim + 1 + keel_rng_below(rng, 17);
}

/* A configuration with every option drawn at random. */
static config random_config(keel_rng *rng, op_kind op, keel_isa isa, keel_case_kind kind,
                            size_t rows, size_t dim)
{
    static const float eps_choices[] = {1e-5f, 1e-12f, 1e-3f};
    config cf;
    memset(&cf, 0, sizeof cf);
    cf.op = op;
    cf.isa = isa;
    cf.kind = kind;
    cf.rows = rows;
    cf.dim = dim;
    cf.x_stride = random_stride(rng, dim);
    cf.y_stride = random_stride(rng, dim);
    cf.dy_stride = random_stride(rng, dim);
    cf.dx_stride = random_stride(rng, dim);
    cf.with_gamma = coin(rng, 0.6);
    cf.with_beta = op == OP_LAYERNORM && coin(rng, 0.6);
    cf.eps = eps_choices[keel_rng_below(rng, 3)];
    cf.in_place = coin(rng, 0.3);
    cf.want_stats = coin(rng, 0.7);
    cf.saved_stats = coin(rng, 0.5);
    cf.want_dx = coin(rng, 0.75);
    cf.want_dgamma = coin(rng, 0.75);
    cf.want_dbeta = op == OP_LAYERNORM && coin(rng, 0.75);
    if (!cf.want_dx && !cf.want_dgamma && !cf.want_dbeta)
        cf.want_dx = 1; /* keel.h lets each output be skipped; keep one to check */
    cf.dx_aliases_dy = cf.want_dx && coin(rng, 0.2);
    if (cf.dx_aliases_dy)
        cf.dx_stride = cf.dy_stride;
    cf.flags = (unsigned)keel_rng_below(rng, 4);
    return cf;
}

static const size_t test_dims[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 127, 768, 1025,
                                   4096, 8191};
static const size_t test_rows[] = {1, 3, 8, 33};

/* Every dim x every kind, random options, on one ISA; then wide rows up to 65536. */
static void sweep(keel_ctx *ctx, keel_rng *rng, keel_isa isa)
{
    for (size_t d = 0; d < sizeof test_dims / sizeof test_dims[0]; d++)
        for (int kind = 0; kind < KEEL_CASE_COUNT; kind++)
            for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++) {
                size_t rows = test_rows[keel_rng_below(rng, 4)];
                config cf = random_config(rng, (op_kind)op, isa, (keel_case_kind)kind, rows,
                                          test_dims[d]);
                run_config(ctx, rng, &cf);
            }
    /* Widths up to 65536: the widest, and random ones, of mixed rows. */
    for (int i = 0; i < 6; i++) {
        size_t dim = i == 0 ? 65536 : keel_case_random_width(rng, 65536);
        for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++) {
            config cf = random_config(rng, (op_kind)op, isa, KEEL_CASE_MIXED, 2, dim);
            run_config(ctx, rng, &cf);
        }
    }
}

/* Every flag and skip combination once, on a modest shape, so none is left to chance. */
static void option_grid(keel_ctx *ctx, keel_rng *rng, keel_isa isa)
{
    for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++)
        for (unsigned bits = 0; bits < 64; bits++) {
            config cf = random_config(rng, (op_kind)op, isa, KEEL_CASE_MIXED, 5, 67);
            cf.flags = bits & 3u;
            cf.want_dx = (bits >> 2) & 1;
            cf.want_dgamma = (bits >> 3) & 1;
            cf.want_dbeta = op == OP_LAYERNORM && ((bits >> 4) & 1);
            cf.saved_stats = (bits >> 5) & 1;
            if (!cf.want_dx && !cf.want_dgamma && !cf.want_dbeta)
                continue;
            cf.dx_aliases_dy = cf.want_dx && coin(rng, 0.3);
            if (cf.dx_aliases_dy)
                cf.dx_stride = cf.dy_stride;
            run_config(ctx, rng, &cf);
        }
}

/* ---- the special rows of keel.h ------------------------------------------------------------- */

/* Runs forward and backward (saved statistics) of op on x with every output; dense strides. */
typedef struct outputs {
    float *y, *mean, *rstd, *dx, *dgamma, *dbeta;
} outputs;

/* A configuration of dense tensors (the special-row checks use no padding). */
static config dense_config(keel_rng *rng, op_kind op, keel_isa isa, keel_case_kind kind,
                           size_t rows, size_t dim, float eps)
{
    config cf = random_config(rng, op, isa, kind, rows, dim);
    cf.x_stride = cf.y_stride = cf.dy_stride = cf.dx_stride = dim;
    cf.eps = eps;
    cf.in_place = cf.dx_aliases_dy = 0;
    cf.want_stats = cf.saved_stats = cf.want_dx = cf.want_dgamma = 1;
    cf.want_dbeta = op == OP_LAYERNORM;
    cf.flags = 0;
    return cf;
}

static outputs run_all(keel_ctx *ctx, const config *cf, const keel_case *c)
{
    outputs o;
    size_t n = cf->rows * cf->dim;
    o.y = output_rows(n, 1);
    o.mean = output_rows(cf->rows, 1); /* stays sentinel for rmsnorm */
    o.rstd = output_rows(cf->rows, 1);
    o.dx = output_rows(n, 1);
    o.dgamma = output_rows(cf->dim, 1);
    o.dbeta = output_rows(cf->dim, 1);
    int ln = cf->op == OP_LAYERNORM;
    grads g = {o.dx, cf->dim, o.dgamma, ln ? o.dbeta : NULL};
    check_status(cf, "forward", lib_fwd(ctx, cf, c, c->x, c->x_stride, o.y, cf->dim,
                                        ln ? o.mean : NULL, o.rstd));
    check_status(cf, "backward", lib_bwd(ctx, cf, c, c->dy, c->dy_stride, ln ? o.mean : NULL,
                                         o.rstd, &g, 0));
    return o;
}

static void free_outputs(outputs *o)
{
    free(o->y);
    free(o->mean);
    free(o->rstd);
    free(o->dx);
    free(o->dgamma);
    free(o->dbeta);
}

static int all_nan(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i]))
            return 0;
    return 1;
}

/* A row with one NaN or Inf: all of its y, mean, rstd and dx are NaN, every other row is bitwise
 * what it is without that value; dgamma is NaN (it sums that row's NaN xhat), dbeta unchanged. */
static void nonfinite_rows(keel_ctx *ctx, keel_rng *rng, keel_isa isa)
{
    static const float bad_values[] = {NAN, INFINITY, -INFINITY};
    static const size_t dims[] = {1, 2, 7, 16, 64, 1025};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int k = 0; k < 3; k++)
            for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++) {
                config cf = dense_config(rng, (op_kind)op, isa, KEEL_CASE_NORMAL, 5, dims[d],
                                         1e-5f);
                keel_case c;
                if (keel_case_make(&c, rng, cf.kind, cf.rows, cf.dim, cf.dim, cf.dim,
                                   cf.with_gamma, cf.with_beta, cf.eps) != 0)
                    test_fatal("out of memory");
                outputs clean = run_all(ctx, &cf, &c);
                size_t bad_row = 2, bad_j = keel_rng_below(rng, cf.dim);
                c.x[bad_row * cf.dim + bad_j] = bad_values[k];
                outputs o = run_all(ctx, &cf, &c);

                size_t n = cf.dim, row = bad_row * n;
                int ln = cf.op == OP_LAYERNORM;
                int y_nan = all_nan(o.y + row, n), dx_nan = all_nan(o.dx + row, n);
                char mean_text[48] = "";
                if (ln)
                    snprintf(mean_text, sizeof mean_text, ", mean %g", (double)o.mean[bad_row]);
                test_check(y_nan && dx_nan && isnan(o.rstd[bad_row]) &&
                               (!ln || isnan(o.mean[bad_row])),
                           "%s: x[%zu][%zu] = %g: that row's outputs not all NaN (y %s, dx %s, "
                           "rstd %g%s)",
                           describe(&cf), bad_row, bad_j, (double)bad_values[k],
                           y_nan ? "NaN" : "not all NaN", dx_nan ? "NaN" : "not all NaN",
                           (double)o.rstd[bad_row], mean_text);
                int others_same = 1;
                for (size_t r = 0; r < cf.rows; r++) {
                    if (r == bad_row)
                        continue;
                    others_same &= test_first_diff(o.y + r * n, clean.y + r * n, n) == n;
                    others_same &= test_first_diff(o.dx + r * n, clean.dx + r * n, n) == n;
                    others_same &= test_first_diff(o.rstd + r, clean.rstd + r, 1) == 1;
                    others_same &= !ln || test_first_diff(o.mean + r, clean.mean + r, 1) == 1;
                }
                test_check(others_same, "%s: x[%zu][%zu] = %g changed another row's outputs",
                           describe(&cf), bad_row, bad_j, (double)bad_values[k]);
                test_check(all_nan(o.dgamma, n) &&
                               (!ln || test_first_diff(o.dbeta, clean.dbeta, n) == n),
                           "%s: x[%zu][%zu] = %g: dgamma not all NaN or dbeta changed",
                           describe(&cf), bad_row, bad_j, (double)bad_values[k]);
                free_outputs(&clean);
                free_outputs(&o);
                keel_case_free(&c);
            }
}

/* Constant rows give y == beta exactly (LayerNorm, eps > 0); all-zero rows with eps 1e-12
 * give beta (LayerNorm) or 0 (RMSNorm) and never NaN anywhere. */
static void constant_rows(keel_ctx *ctx, keel_rng *rng, keel_isa isa)
{
    static const size_t dims[] = {1, 3, 16, 17, 768, 4097};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int zero = 0; zero <= 1; zero++)
            for (int op = OP_LAYERNORM; op <= OP_RMSNORM; op++) {
                keel_case_kind kind = zero ? KEEL_CASE_ZERO : KEEL_CASE_CONSTANT;
                if (op == OP_RMSNORM && !zero)
                    continue; /* a constant row is nothing special to RMSNorm */
                config cf = dense_config(rng, (op_kind)op, isa, kind, 4, dims[d],
                                         zero ? 1e-12f : 1e-5f);
                keel_case c;
                if (keel_case_make(&c, rng, kind, cf.rows, cf.dim, cf.dim, cf.dim,
                                   cf.with_gamma, cf.with_beta, cf.eps) != 0)
                    test_fatal("out of memory");
                outputs o = run_all(ctx, &cf, &c);
                size_t bad = SIZE_MAX;
                for (size_t i = 0; i < cf.rows * cf.dim && bad == SIZE_MAX; i++) {
                    float want = op == OP_LAYERNORM && c.beta ? c.beta[i % cf.dim] : 0.0f;
                    if (!(o.y[i] == want))
                        bad = i;
                }
                test_check(bad == SIZE_MAX, "%s: y[%zu] = %.9g, want exactly %s", describe(&cf),
                           bad, bad == SIZE_MAX ? 0.0 : (double)o.y[bad],
                           op == OP_LAYERNORM ? "beta" : "0");
                int any_nan = 0;
                for (size_t i = 0; i < cf.rows * cf.dim; i++)
                    any_nan |= isnan(o.dx[i]);
                for (size_t r = 0; r < cf.rows; r++)
                    any_nan |= isnan(o.rstd[r]) || (op == OP_LAYERNORM && isnan(o.mean[r]));
                for (size_t j = 0; j < cf.dim; j++)
                    any_nan |= isnan(o.dgamma[j]);
                test_check(!any_nan, "%s: NaN in rstd, mean, dx or dgamma", describe(&cf));
                free_outputs(&o);
                keel_case_free(&c);
            }
}

/* ---- the bounds have teeth -------------------------------------------------------------------- */

/* Two LayerNorm forwards with the classic flaws, written as their authors would, and the worst
 * error the ulp measure gives them over rows of an offset kind. */
enum flaw { FLAW_FLOAT_MEAN, FLAW_NAIVE_VARIANCE };

static void flawed_layernorm_row(enum flaw flaw, const float *x, size_t dim, float *y)
{
    double s = 0.0, ss = 0.0;
    for (size_t j = 0; j < dim; j++) {
        s += x[j];
        ss += (double)x[j] * x[j];
    }
    double mean = s / (double)dim;
    if (flaw == FLAW_FLOAT_MEAN) { /* exact statistics, but the mean kept only as a float */
        float mean_f = (float)mean;
        double v = 0.0;
        for (size_t j = 0; j < dim; j++)
            v += ((double)x[j] - mean) * ((double)x[j] - mean);
        float rstd = (float)(1.0 / sqrt(v / (double)dim + 1e-5));
        for (size_t j = 0; j < dim; j++)
            y[j] = (x[j] - mean_f) * rstd;
    } else { /* var = E[x^2] - E[x]^2, even in double */
        double var = ss / (double)dim - mean * mean;
        double rstd = 1.0 / sqrt(fmax(var, 0.0) + 1e-5);
        for (size_t j = 0; j < dim; j++)
            y[j] = (float)(((double)x[j] - mean) * rstd);
    }
}

static double flaw_error(keel_rng *rng, enum flaw flaw, keel_case_kind kind)
{
    enum { DIM = 768, ROWS = 16 };
    float x[DIM], y[DIM];
    double ref[DIM], worst = 0.0;
    for (int r = 0; r < ROWS; r++) {
        keel_case_fill_row(rng, kind, x, DIM);
        flawed_layernorm_row(flaw, x, DIM, y);
        keel_ref_layernorm_fwd(1, DIM, x, DIM, NULL, NULL, 1e-5f, ref, NULL, NULL);
        worst = fmax(worst, keel_err_ulps_row(y, ref, DIM, 0.0, NULL));
    }
    return worst;
}

static void bounds_have_teeth(keel_rng *rng)
{
    double float_mean = flaw_error(rng, FLAW_FLOAT_MEAN, KEEL_CASE_OFFSET_1E6);
    double float_mean_1e4 = flaw_error(rng, FLAW_FLOAT_MEAN, KEEL_CASE_OFFSET_1E4);
    double naive_var = flaw_error(rng, FLAW_NAIVE_VARIANCE, KEEL_CASE_OFFSET_1E6);
    printf("bounds have teeth: float32 mean %.3g ulps at offset 1e6, %.3g at 1e4; "
           "E[x^2]-E[x]^2 %.3g ulps at 1e6 (bound %g)\n",
           float_mean, float_mean_1e4, naive_var, KEEL_BOUND_ROW_ULPS);
    test_check(float_mean > 100 * KEEL_BOUND_ROW_ULPS && float_mean_1e4 > KEEL_BOUND_ROW_ULPS,
               "a float32-only mean passes the y bound (%.3g, %.3g ulps)", float_mean,
               float_mean_1e4);
    test_check(naive_var > KEEL_BOUND_ROW_ULPS, "E[x^2]-E[x]^2 passes the y bound (%.3g ulps)",
               naive_var);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_ops"));
    bounds_have_teeth(&rng);

    keel_ctx *ctx = test_ctx(0);
    keel_isa isas[3];
    int n_isas = test_isas(isas);
    for (int i = 0; i < n_isas; i++) {
        long failed_before = test_failed_;
        test_set_isa(ctx, isas[i]);
        sweep(ctx, &rng, isas[i]);
        option_grid(ctx, &rng, isas[i]);
        nonfinite_rows(ctx, &rng, isas[i]);
        constant_rows(ctx, &rng, isas[i]);
        printf("isa %s: %ld failures\n", keel_isa_name(isas[i]), test_failed_ - failed_before);
    }
    keel_ctx_destroy(ctx);
    return test_finish();
}
