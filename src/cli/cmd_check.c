/*
 * keel check: every operation on random and adversarial inputs (keel_cases.h: mean offsets up to
 * 1e6 standard deviations, tiny variances, constant and zero rows, magnitudes 1e-30 and 1e30,
 * widths 1 to 65536) against the float64 reference, with the bounds the tests use. Prints, per
 * output, the worst error, its bound and PASS/FAIL, for the context's instruction-set path (or
 * each of them). Exit status 0 when everything passes, 1 otherwise, 2 for a usage error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_blocks.h"
#include "commands.h"
#include "keel.h"
#include "keel_cases.h"
#include "keel_ref.h"
#include "numarg.h"

#define CHECK_DEFAULT_SEED 0x6b65656cull

/* ---- the table ------------------------------------------------------------------------------- */

typedef enum metric {
    M_LN_Y, M_LN_MEAN, M_LN_RSTD, M_LN_DX, M_LN_DGAMMA, M_LN_DBETA,
    M_RMS_Y, M_RMS_RSTD, M_RMS_DX, M_RMS_DGAMMA, M_COUNT
} metric;

typedef enum unit { U_ROW_ULPS, U_ULPS, U_SUM_EPS } unit;

static const struct {
    const char *op, *output;
    unit unit;
} metric_info[M_COUNT] = {
    {"layernorm fwd", "y", U_ROW_ULPS},   {"layernorm fwd", "mean", U_ULPS},
    {"layernorm fwd", "rstd", U_ULPS},    {"layernorm bwd", "dx", U_ROW_ULPS},
    {"layernorm bwd", "dgamma", U_SUM_EPS}, {"layernorm bwd", "dbeta", U_SUM_EPS},
    {"rmsnorm fwd", "y", U_ROW_ULPS},     {"rmsnorm fwd", "rstd", U_ULPS},
    {"rmsnorm bwd", "dx", U_ROW_ULPS},    {"rmsnorm bwd", "dgamma", U_SUM_EPS},
};

static const char *unit_text(unit u)
{
    switch (u) {
    case U_ROW_ULPS: return "ulp of row max|ref|";
    case U_ULPS: return "ulp of |ref|";
    default: return "FLT_EPSILON*sum|terms|";
    }
}

/* The worst error seen for one output: the one closest to (or furthest past) its bound. */
typedef struct result {
    double err, bound; /* of the worst case */
    int failed;        /* any case past its bound */
    char where[120];
} result;

/* Keeps err if it is the worst relative to its bound so far; row SIZE_MAX: a column sum. */
static void record(result *res, double err, double bound, const keel_case *c, size_t row,
                   size_t index)
{
    if (!(err <= bound))
        res->failed = 1;
    double ratio = err / bound;
    if (!(ratio <= res->err / res->bound) || res->where[0] == '\0') {
        res->err = err;
        res->bound = bound;
        if (row == SIZE_MAX) /* a sum over rows: the column */
            snprintf(res->where, sizeof res->where, "%s %zux%zu eps=%g column %zu",
                     keel_case_name(c->kind), c->rows, c->dim, (double)c->eps, index);
        else
            snprintf(res->where, sizeof res->where, "%s %zux%zu eps=%g row %zu [%zu]",
                     keel_case_name(c->kind), c->rows, c->dim, (double)c->eps, row, index);
    }
}

/* ---- one case -------------------------------------------------------------------------------- */

/* Buffers for a case's outputs, keel's and the reference's. */
typedef struct buffers {
    float *y, *mean, *rstd, *dx, *dgamma, *dbeta;
    double *ry, *rmean, *rrstd, *rdx, *rdgamma, *rdbeta, *dgamma_mag, *dbeta_mag, *floors;
} buffers;

static int buffers_alloc(buffers *b, size_t rows, size_t dim)
{
    size_t n = rows * dim;
    memset(b, 0, sizeof *b);
    b->y = malloc(n * sizeof(float));
    b->dx = malloc(n * sizeof(float));
    b->mean = malloc(rows * sizeof(float));
    b->rstd = malloc(rows * sizeof(float));
    b->dgamma = malloc(dim * sizeof(float));
    b->dbeta = malloc(dim * sizeof(float));
    b->ry = malloc(n * sizeof(double));
    b->rdx = malloc(n * sizeof(double));
    b->rmean = malloc(rows * sizeof(double));
    b->rrstd = malloc(rows * sizeof(double));
    b->floors = malloc(rows * sizeof(double));
    b->rdgamma = malloc(dim * sizeof(double));
    b->rdbeta = malloc(dim * sizeof(double));
    b->dgamma_mag = malloc(dim * sizeof(double));
    b->dbeta_mag = malloc(dim * sizeof(double));
    return b->y && b->dx && b->mean && b->rstd && b->dgamma && b->dbeta && b->ry && b->rdx &&
                   b->rmean && b->rrstd && b->floors && b->rdgamma && b->rdbeta &&
                   b->dgamma_mag && b->dbeta_mag
               ? 0
               : -1;
}

static void buffers_free(buffers *b)
{
    void *all[] = {b->y, b->mean, b->rstd, b->dx, b->dgamma, b->dbeta, b->ry, b->rmean,
                   b->rrstd, b->rdx, b->rdgamma, b->rdbeta, b->dgamma_mag, b->dbeta_mag,
                   b->floors};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* Measures y (and mean), rstd, dx, dgamma (and dbeta) of one op on the case. */
static void measure(const keel_case *c, const buffers *b, int layernorm, result *res)
{
    size_t rows = c->rows, dim = c->dim, row, j;
    metric y = layernorm ? M_LN_Y : M_RMS_Y, rstd = layernorm ? M_LN_RSTD : M_RMS_RSTD;
    metric dx = layernorm ? M_LN_DX : M_RMS_DX, dgamma = layernorm ? M_LN_DGAMMA : M_RMS_DGAMMA;

    double e = keel_err_ulps_rows(b->y, dim, b->ry, rows, dim, NULL, &row, &j);
    record(&res[y], e, KEEL_BOUND_ROW_ULPS, c, row, j);
    if (layernorm) {
        e = keel_err_ulps_each(b->mean, b->rmean, rows, &row);
        record(&res[M_LN_MEAN], e, KEEL_BOUND_STAT_ULPS, c, row, 0);
    }
    e = keel_err_ulps_each(b->rstd, b->rrstd, rows, &row);
    record(&res[rstd], e, KEEL_BOUND_STAT_ULPS, c, row, 0);

    keel_dx_floors(rows, dim, c->dy, c->dy_stride, c->gamma, b->rrstd, b->floors);
    e = keel_err_ulps_rows(b->dx, dim, b->rdx, rows, dim, b->floors, &row, &j);
    record(&res[dx], e, KEEL_BOUND_ROW_ULPS, c, row, j);
    e = keel_err_sum(b->dgamma, b->rdgamma, b->dgamma_mag, dim, &j);
    record(&res[dgamma], e, keel_bound_dparam(rows), c, SIZE_MAX, j);
    if (layernorm) {
        e = keel_err_sum(b->dbeta, b->rdbeta, b->dbeta_mag, dim, &j);
        record(&res[M_LN_DBETA], e, keel_bound_dparam(rows), c, SIZE_MAX, j);
    }
}

/* Runs forward and backward (with the forward's statistics) of one op, keel and reference.
 * Returns 0, or -1 when keel refused (printed) or memory ran out. */
static int run_op(keel_ctx *ctx, const keel_case *c, const buffers *b, int layernorm)
{
    size_t rows = c->rows, dim = c->dim;
    keel_tensor x = keel_f32(c->x, c->x_stride), dy = keel_f32(c->dy, c->dy_stride);
    keel_tensor y = keel_f32(b->y, dim), dx = keel_f32(b->dx, dim);
    keel_ref_grads grads = {b->rdx, b->rdgamma, b->rdbeta, b->dgamma_mag, b->dbeta_mag};
    keel_status st;
    int rc;
    if (layernorm) {
        st = keel_layernorm_fwd(ctx, rows, dim, x, y, c->gamma, c->beta, c->eps, b->mean,
                                b->rstd, 0);
        if (st == KEEL_OK)
            st = keel_layernorm_bwd(ctx, rows, dim, dy, x, b->mean, b->rstd, c->gamma, c->eps,
                                    dx, b->dgamma, b->dbeta, 0);
        rc = keel_ref_layernorm_fwd(rows, dim, c->x, c->x_stride, c->gamma, c->beta, c->eps,
                                    b->ry, b->rmean, b->rrstd);
        rc |= keel_ref_layernorm_bwd(rows, dim, c->dy, c->dy_stride, c->x, c->x_stride,
                                     c->gamma, c->eps, &grads);
    } else {
        st = keel_rmsnorm_fwd(ctx, rows, dim, x, y, c->gamma, c->eps, b->rstd, 0);
        if (st == KEEL_OK)
            st = keel_rmsnorm_bwd(ctx, rows, dim, dy, x, b->rstd, c->gamma, c->eps, dx,
                                  b->dgamma, 0);
        rc = keel_ref_rmsnorm_fwd(rows, dim, c->x, c->x_stride, c->gamma, c->eps, b->ry,
                                  b->rrstd);
        rc |= keel_ref_rmsnorm_bwd(rows, dim, c->dy, c->dy_stride, c->x, c->x_stride, c->gamma,
                                   c->eps, &grads);
    }
    if (st != KEEL_OK) {
        fprintf(stderr, "keel check: %s: %s (%s)\n", layernorm ? "layernorm" : "rmsnorm",
                keel_status_str(st), keel_last_error());
        return -1;
    }
    if (rc != 0) {
        fprintf(stderr, "keel check: out of memory\n");
        return -1;
    }
    return 0;
}

/* One case: both ops measured into res. -1 on an error already reported. */
static int check_case(keel_ctx *ctx, keel_rng *rng, keel_case_kind kind, size_t rows,
                      size_t dim, int variant, result *res)
{
    static const float eps_choices[] = {1e-5f, 1e-12f, 1e-3f};
    size_t pad = variant % 2 ? 3 : 0; /* strided rows every other case */
    int affine = variant % 3 != 2;    /* gamma and beta in two cases of three */
    float eps = eps_choices[variant % 3];
    keel_case c;
    buffers b;
    if (keel_case_make(&c, rng, kind, rows, dim, dim + pad, dim + pad, affine, affine, eps)) {
        fprintf(stderr, "keel check: out of memory\n");
        return -1;
    }
    if (buffers_alloc(&b, rows, dim)) {
        keel_case_free(&c);
        buffers_free(&b);
        fprintf(stderr, "keel check: out of memory\n");
        return -1;
    }
    int rc = 0;
    for (int layernorm = 1; layernorm >= 0 && rc == 0; layernorm--) {
        rc = run_op(ctx, &c, &b, layernorm);
        if (rc == 0)
            measure(&c, &b, layernorm, res);
    }
    buffers_free(&b);
    keel_case_free(&c);
    return rc;
}

/* ---- the runs -------------------------------------------------------------------------------- */

typedef struct options {
    unsigned long long seed;
    int quick, all_isas, threads;
    keel_isa isa; /* KEEL_ISA_AUTO: the context's */
} options;

static const size_t full_widths[] = {1, 2, 3, 7, 16, 17, 31, 64, 127, 768, 1025, 4096, 8191,
                                     65536};
static const size_t quick_widths[] = {1, 3, 17, 768, 4097};

/* Every width x every kind on the context's path; returns the number of cases or -1. */
static int run_all(keel_ctx *ctx, const options *o, result *res)
{
    keel_rng rng;
    keel_rng_seed(&rng, o->seed);
    const size_t *widths = o->quick ? quick_widths : full_widths;
    size_t n_fixed = o->quick ? sizeof quick_widths / sizeof quick_widths[0]
                              : sizeof full_widths / sizeof full_widths[0];
    size_t n_random = o->quick ? 1 : 8;
    /* Elements per case (rows = elements / width, 2 to 256 rows): the default run takes a few
     * seconds per path on a 2-core machine, --quick a fraction of one. */
    size_t elements = o->quick ? 4096 : 131072;
    int cases = 0;
    for (size_t w = 0; w < n_fixed + n_random; w++) {
        size_t dim = w < n_fixed ? widths[w] : keel_case_random_width(&rng, 65536);
        size_t rows = elements / dim;
        rows = rows < 2 ? 2 : rows > 256 ? 256 : rows;
        for (int kind = 0; kind < KEEL_CASE_COUNT; kind++) {
            if (check_case(ctx, &rng, (keel_case_kind)kind, rows, dim, cases, res) != 0)
                return -1;
            cases++;
        }
    }
    return cases;
}

static void print_table(const result *res)
{
    printf("%-14s %-7s %10s %7s  %-23s %-6s %s\n", "op", "output", "worst", "bound", "unit",
           "result", "worst case");
    for (int m = 0; m < M_COUNT; m++) {
        const result *r = &res[m];
        printf("%-14s %-7s %10.3g %7.3g  %-23s %-6s %s\n", metric_info[m].op,
               metric_info[m].output, r->err, r->bound, unit_text(metric_info[m].unit),
               r->failed ? "FAIL" : "PASS", r->where);
    }
}

/* Runs the whole check on one path (KEEL_ISA_AUTO: the context's). 0 pass, 1 fail, 2 error. */
static int check_isa(keel_ctx *ctx, const options *o, keel_isa isa)
{
    if (isa != KEEL_ISA_AUTO && keel_ctx_set_isa(ctx, isa) != KEEL_OK) {
        fprintf(stderr, "keel check: %s\n", keel_last_error());
        return 2;
    }
    result res[M_COUNT];
    memset(res, 0, sizeof res);
    for (int m = 0; m < M_COUNT; m++)
        res[m].bound = 1.0;
    printf("\nisa %s, %d threads, seed %llu%s\n", keel_isa_name(keel_ctx_isa(ctx)),
           keel_ctx_threads(ctx), o->seed, o->quick ? " (quick)" : "");
    int cases = run_all(ctx, o, res);
    if (cases < 0)
        return 2;
    printf("%d cases (widths 1 to 65536; kinds:", cases);
    for (int k = 0; k < KEEL_CASE_COUNT; k++)
        printf(" %s", keel_case_name((keel_case_kind)k));
    printf(")\n");
    print_table(res);
    /* the transformer-block operations, on the same path */
    const int blocks = keel_check_blocks(ctx, o->seed, o->quick);
    if (blocks == 2)
        return 2;
    for (int m = 0; m < M_COUNT; m++)
        if (res[m].failed)
            return 1;
    return blocks;
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: keel check [--isa scalar|avx2|avx512|neon] [--all-isas] [--seed N] [--quick]\n"
            "                  [--threads N]\n\n"
            "Runs every operation on random and adversarial rows against the float64 reference\n"
            "and prints the worst error of each output beside its bound. Exit 0 if all pass.\n"
            "  --isa NAME   force one instruction-set path (default: the context's, KEEL_ISA)\n"
            "  --all-isas   run every path this CPU has\n"
            "  --seed N     seed of the inputs (default %llu)\n"
            "  --quick      fewer widths and rows\n"
            "  --threads N  threads of the context (default: one per core)\n",
            CHECK_DEFAULT_SEED);
}

static int parse_isa(const char *name, keel_isa *isa)
{
    static const keel_isa all[] = {KEEL_ISA_SCALAR, KEEL_ISA_AVX2, KEEL_ISA_AVX512,
                                   KEEL_ISA_NEON, KEEL_ISA_AUTO};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, keel_isa_name(all[i]))) {
            *isa = all[i];
            return 0;
        }
    return -1;
}

/* 0 ok, 1 --help given, 2 usage error (printed). */
static int parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->seed = CHECK_DEFAULT_SEED;
    o->isa = KEEL_ISA_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
        } else if (!strcmp(a, "--all-isas")) {
            o->all_isas = 1;
        } else if (!strcmp(a, "--isa") && next && parse_isa(next, &o->isa) == 0) {
            i++;
        } else if (!strcmp(a, "--seed")) {
            uint64_t seed;
            if (keel_arg_u64("check", a, next, 0, UINT64_MAX, &seed))
                return 2;
            o->seed = seed;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (keel_arg_int("check", a, next, 0, KEEL_ARG_MAX_THREADS, &o->threads))
                return 2;
            i++;
        } else {
            fprintf(stderr, "keel check: bad or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o->all_isas && o->isa != KEEL_ISA_AUTO) {
        fprintf(stderr, "keel check: --isa and --all-isas exclude each other\n");
        return 2;
    }
    return 0;
}

int keel_cmd_check(int argc, char **argv)
{
    options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed)
        return parsed == 1 ? 0 : 2;

    keel_ctx *ctx = NULL;
    if (keel_ctx_create(&ctx, o.threads) != KEEL_OK) {
        fprintf(stderr, "keel check: %s\n", keel_last_error());
        return 2;
    }
    printf("keel check %s: every op against the float64 reference\n", keel_version_string());
    int status = 0;
    if (o.all_isas) {
        static const keel_isa paths[] = {KEEL_ISA_SCALAR, KEEL_ISA_AVX2, KEEL_ISA_AVX512,
                                         KEEL_ISA_NEON};
        for (size_t i = 0; i < sizeof paths / sizeof paths[0] && status != 2; i++)
            if (keel_isa_available(paths[i])) {
                int s = check_isa(ctx, &o, paths[i]);
                status = s > status ? s : status;
            }
    } else {
        status = check_isa(ctx, &o, o.isa);
    }
    keel_ctx_destroy(ctx);
    if (status == 2)
        return 2;
    printf("\n%s\n", status ? "FAIL: some outputs are outside their bounds"
                            : "PASS: every output within its bound");
    return status;
}
