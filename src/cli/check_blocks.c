/* keel check, transformer blocks: see check_blocks.h. Each case draws rows of one adversarial
 * kind (keel_cases.h), runs keel's forward and backward, and measures every output against the
 * reference the way tests/test_block_ops.c does; the table keeps the worst case per output. */
#include "check_blocks.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel_cases.h"
#include "keel_ref_block.h"

typedef enum metric {
    M_ADD_H, M_ADD_Y, M_ADD_DX, M_ADD_DLAMBDA, M_ADD_DGAMMA,
    M_ARMS_Y, M_ARMS_DX,
    M_BN_Y, M_BN_DX, M_BN_DGAMMA,
    M_DYT_Y, M_DYT_DX, M_DYT_DALPHA, M_COUNT
} metric;

static const char *const metric_op[M_COUNT] = {
    "add+layernorm", "add+layernorm", "add+layernorm", "add+layernorm", "add+layernorm",
    "add+rmsnorm", "add+rmsnorm", "batchnorm", "batchnorm", "batchnorm", "dyt", "dyt", "dyt"};
static const char *const metric_out[M_COUNT] = {"h", "y", "dx", "dlambda", "dgamma", "y", "dx",
                                                "y", "dx", "dgamma", "y", "dx", "dalpha"};

typedef struct result {
    double err, bound;
    int failed;
    char where[96];
} result;

static void record(result *r, double err, double bound, keel_case_kind kind, size_t rows, size_t dim)
{
    if (!(err <= bound))
        r->failed = 1;
    if (!(err / bound <= r->err / r->bound) || r->where[0] == '\0') {
        r->err = err;
        r->bound = bound;
        snprintf(r->where, sizeof r->where, "%s %zux%zu", keel_case_name(kind), rows, dim);
    }
}

/* Every buffer of a case; freed together. */
typedef struct bufs {
    float *x, *r, *dy, *dh, *lambda, *gamma, *beta, *h, *y, *mean, *rstd, *dx, *dl, *dg, *db, *rm, *rv;
    double *xd, *rd, *dyd, *dhd, *ld, *gd, *bd, *hd, *ry, *rdx, *rdl, *rdg, *rdb, *m1, *m2, *m3, *rs, *fl;
} bufs;

static void bufs_free(bufs *b)
{
    float **f[] = {&b->x, &b->r, &b->dy, &b->dh, &b->lambda, &b->gamma, &b->beta, &b->h, &b->y,
                   &b->mean, &b->rstd, &b->dx, &b->dl, &b->dg, &b->db, &b->rm, &b->rv};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        free(*f[i]);
    double **d[] = {&b->xd, &b->rd, &b->dyd, &b->dhd, &b->ld, &b->gd, &b->bd, &b->hd, &b->ry, &b->rdx,
                    &b->rdl, &b->rdg, &b->rdb, &b->m1, &b->m2, &b->m3, &b->rs, &b->fl};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        free(*d[i]);
}

static double *dcopy(const float *src, size_t n, int *oom)
{
    double *d = keel_ref_to_double(src, 1, n, n);
    if (!d)
        *oom = 1;
    return d;
}

/* Rows x dim of `kind`, dense. */
static float *rows_of(keel_rng *rng, keel_case_kind kind, size_t rows, size_t dim, int *oom)
{
    float *p = malloc(rows * dim * sizeof(float));
    if (!p) {
        *oom = 1;
        return NULL;
    }
    for (size_t r = 0; r < rows; r++)
        keel_case_fill_row(rng, kind, p + r * dim, dim);
    return p;
}

static float *normal_of(keel_rng *rng, size_t n, double centre, double scale, int *oom)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(centre + scale * keel_rng_normal(rng));
    return p;
}

static double *dalloc(size_t n, int *oom)
{
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p)
        *oom = 1;
    return p;
}

static float *falloc(size_t n, int *oom)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p)
        *oom = 1;
    return p;
}

/* The fused add + norm of one case: forward and backward, measured. */
static int check_add(keel_ctx *ctx, keel_rng *rng, keel_case_kind kind, size_t rows, size_t dim,
                     int rms, result *res)
{
    bufs b;
    memset(&b, 0, sizeof b);
    int oom = 0;
    const size_t n = rows * dim;
    b.x = rows_of(rng, kind, rows, dim, &oom);
    b.r = rows_of(rng, KEEL_CASE_NORMAL, rows, dim, &oom);
    b.dy = normal_of(rng, n, 0.0, 1.0, &oom);
    b.dh = normal_of(rng, n, 0.0, 1.0, &oom);
    b.lambda = normal_of(rng, dim, 0.5, 0.5, &oom);
    b.gamma = falloc(dim, &oom);
    b.beta = falloc(dim, &oom);
    b.h = falloc(n, &oom), b.y = falloc(n, &oom), b.dx = falloc(n, &oom);
    b.mean = falloc(rows, &oom), b.rstd = falloc(rows, &oom);
    b.dl = falloc(dim, &oom), b.dg = falloc(dim, &oom), b.db = falloc(dim, &oom);
    if (oom)
        goto out;
    keel_case_fill_gamma(rng, b.gamma, dim);
    keel_case_fill_beta(rng, b.beta, dim);
    const float eps = 1e-5f, alpha = 2.6321480259f;
    keel_residual rs = keel_residual_add(keel_f32(b.x, dim), keel_f32(b.r, dim));
    rs.alpha = alpha;
    rs.lambda = b.lambda;
    keel_residual_grads g = {keel_f32(b.dx, dim), keel_none(), b.dl, NULL};
    keel_status st = rms ? keel_add_rmsnorm_fwd(ctx, rows, dim, &rs, keel_f32(b.h, dim), keel_f32(b.y, dim),
                                                b.gamma, eps, b.rstd, 0)
                         : keel_add_layernorm_fwd(ctx, rows, dim, &rs, keel_f32(b.h, dim), keel_f32(b.y, dim),
                                                  b.gamma, b.beta, eps, b.mean, b.rstd, 0);
    if (st == KEEL_OK)
        st = rms ? keel_add_rmsnorm_bwd(ctx, rows, dim, keel_f32(b.dy, dim), keel_f32(b.dh, dim), &rs,
                                        keel_f32(b.h, dim), b.rstd, b.gamma, eps, &g, b.dg, 0)
                 : keel_add_layernorm_bwd(ctx, rows, dim, keel_f32(b.dy, dim), keel_f32(b.dh, dim), &rs,
                                          keel_f32(b.h, dim), b.mean, b.rstd, b.gamma, eps, &g, b.dg, b.db, 0);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel check: add+%s: %s (%s)\n", rms ? "rmsnorm" : "layernorm", keel_status_str(st),
                keel_last_error());
        bufs_free(&b);
        return -1;
    }
    b.xd = dcopy(b.x, n, &oom), b.rd = dcopy(b.r, n, &oom), b.dyd = dcopy(b.dy, n, &oom);
    b.dhd = dcopy(b.dh, n, &oom), b.ld = dcopy(b.lambda, dim, &oom), b.gd = dcopy(b.gamma, dim, &oom);
    b.bd = dcopy(b.beta, dim, &oom), b.hd = dcopy(b.h, n, &oom);
    b.ry = dalloc(n, &oom), b.rdx = dalloc(n, &oom), b.rdl = dalloc(dim, &oom), b.rdg = dalloc(dim, &oom);
    b.m1 = dalloc(dim, &oom), b.m2 = dalloc(dim, &oom), b.rs = dalloc(rows, &oom), b.fl = dalloc(rows, &oom);
    b.m3 = dalloc(n, &oom);
    if (oom)
        goto out;
    /* h against the exact residual, in ulps of the row's largest sum of |terms| */
    keel_ref_residual_f64(rows, dim, b.xd, b.rd, alpha, b.ld, NULL, b.m3);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < dim; j++)
            b.fl[r] = fmax(b.fl[r], fabs(alpha * b.xd[r * dim + j]) + fabs(b.ld[j] * b.rd[r * dim + j]));
    if (!rms)
        record(&res[M_ADD_H], keel_err_ulps_rows(b.h, dim, b.m3, rows, dim, b.fl, NULL, NULL), 2.0, kind,
               rows, dim);
    /* y and the backward at keel's own h */
    if (rms)
        keel_ref_rmsnorm_fwd_f64(rows, dim, b.hd, b.gd, eps, b.ry, b.rs);
    else
        keel_ref_layernorm_fwd_f64(rows, dim, b.hd, b.gd, b.bd, eps, b.ry, NULL, b.rs);
    /* floors: the row's largest |xhat * gamma| + |beta| (beta may cancel a small xhat) */
    for (size_t r = 0; r < rows; r++) {
        b.fl[r] = 0.0;
        for (size_t j = 0; j < dim; j++)
            b.fl[r] = fmax(b.fl[r], fabs(b.ry[r * dim + j] - (rms ? 0.0 : b.bd[j])) + (rms ? 0.0 : fabs(b.bd[j])));
    }
    record(&res[rms ? M_ARMS_Y : M_ADD_Y], keel_err_ulps_rows(b.y, dim, b.ry, rows, dim, b.fl, NULL, NULL),
           KEEL_BOUND_ROW_ULPS, kind, rows, dim);
    keel_ref_grads ng = {NULL, b.rdg, NULL, b.m1, NULL};
    keel_ref_res_grads rg = {b.rdx, NULL, b.rdl, NULL, NULL, NULL};
    if ((rms ? keel_ref_add_rmsnorm_bwd_f64 : keel_ref_add_layernorm_bwd_f64)(
            rows, dim, b.dyd, b.dhd, b.hd, b.rd, alpha, b.ld, b.gd, eps, &ng, &rg, b.m3) != 0) {
        oom = 1;
        goto out;
    }
    /* floors: |alpha| * max(the norm's dx scale, max |dh|) per row; G's error in the sums */
    for (size_t r = 0; r < rows; r++) {
        double fg = keel_dx_scale(dim, b.dy + r * dim, b.gamma, b.rs[r]);
        for (size_t j = 0; j < dim; j++)
            fg = fmax(fg, fabs(b.dhd[r * dim + j]));
        b.fl[r] = alpha * fg;
        for (size_t j = 0; j < dim; j++)
            b.m2[j] += (fabs(b.m3[r * dim + j]) + fg) * fabs(b.rd[r * dim + j]) + FLT_MIN; /* underflow */
    }
    record(&res[rms ? M_ARMS_DX : M_ADD_DX], keel_err_ulps_rows(b.dx, dim, b.rdx, rows, dim, b.fl, NULL, NULL),
           KEEL_BOUND_ROW_ULPS, kind, rows, dim);
    if (!rms) {
        record(&res[M_ADD_DLAMBDA], keel_err_sum(b.dl, b.rdl, b.m2, dim, NULL), keel_bound_dparam(rows) + 8.0,
               kind, rows, dim);
        record(&res[M_ADD_DGAMMA], keel_err_sum(b.dg, b.rdg, b.m1, dim, NULL), keel_bound_dparam(rows), kind,
               rows, dim);
    }
out:
    bufs_free(&b);
    if (oom)
        fprintf(stderr, "keel check: out of memory\n");
    return oom ? -1 : 0;
}

/* BatchNorm in training mode: features of `kind` down the columns. */
static int check_bn(keel_ctx *ctx, keel_rng *rng, keel_case_kind kind, size_t rows, size_t dim, result *res)
{
    bufs b;
    memset(&b, 0, sizeof b);
    int oom = 0;
    const size_t n = rows * dim;
    b.x = falloc(n, &oom), b.dy = normal_of(rng, n, 0.0, 1.0, &oom), b.m3 = dalloc(rows, &oom);
    b.gamma = falloc(dim, &oom), b.beta = falloc(dim, &oom), b.y = falloc(n, &oom), b.dx = falloc(n, &oom);
    b.mean = falloc(dim, &oom), b.rstd = falloc(dim, &oom), b.dg = falloc(dim, &oom), b.db = falloc(dim, &oom);
    b.rm = falloc(dim, &oom), b.rv = falloc(dim, &oom), b.r = falloc(rows, &oom);
    if (oom)
        goto out;
    for (size_t j = 0; j < dim; j++) {
        keel_case_fill_row(rng, kind, b.r, rows);
        for (size_t r = 0; r < rows; r++)
            b.x[r * dim + j] = b.r[r];
        b.rv[j] = 1.0f;
    }
    keel_case_fill_gamma(rng, b.gamma, dim);
    keel_case_fill_beta(rng, b.beta, dim);
    int64_t nbt = 0;
    keel_status st = keel_batchnorm_fwd(ctx, rows, dim, keel_f32(b.x, dim), keel_f32(b.y, dim), b.gamma, b.beta,
                                        1e-5f, 1, 0.1f, b.rm, b.rv, &nbt, b.mean, b.rstd, 0);
    if (st == KEEL_OK)
        st = keel_batchnorm_bwd(ctx, rows, dim, keel_f32(b.dy, dim), keel_f32(b.x, dim), b.mean, b.rstd,
                                b.gamma, 1e-5f, 1, keel_f32(b.dx, dim), b.dg, b.db, 0);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel check: batchnorm: %s (%s)\n", keel_status_str(st), keel_last_error());
        bufs_free(&b);
        return -1;
    }
    b.xd = dcopy(b.x, n, &oom), b.dyd = dcopy(b.dy, n, &oom), b.gd = dcopy(b.gamma, dim, &oom);
    b.bd = dcopy(b.beta, dim, &oom), b.ry = dalloc(n, &oom), b.rdx = dalloc(n, &oom);
    b.rdg = dalloc(dim, &oom), b.rdb = dalloc(dim, &oom), b.m1 = dalloc(dim, &oom), b.m2 = dalloc(dim, &oom);
    b.rs = dalloc(dim, &oom), b.fl = dalloc(dim, &oom), b.hd = dalloc(dim, &oom);
    if (oom)
        goto out;
    keel_ref_batchnorm_fwd_f64(rows, dim, b.xd, b.gd, b.bd, 1e-5, 1, NULL, NULL, b.ry, b.hd, b.rs, NULL, NULL);
    keel_ref_grads g = {b.rdx, b.rdg, b.rdb, b.m1, b.m2};
    keel_ref_batchnorm_bwd_f64(rows, dim, b.dyd, b.xd, b.gd, 1e-5, 1, NULL, NULL, &g);
    /* per feature: ulps of the column's terms (y) or of rstd * max |dy * gamma| (dx) */
    double ey = 0.0, ex = 0.0;
    for (size_t j = 0; j < dim; j++) {
        double fy = 0.0, fx = 0.0;
        for (size_t r = 0; r < rows; r++) {
            fy = fmax(fy, fabs(b.xd[r * dim + j] - b.hd[j]) * b.rs[j] * fabs(b.gd[j]));
            fx = fmax(fx, b.rs[j] * fabs(b.dyd[r * dim + j] * b.gd[j]));
        }
        fy += fabs(b.bd[j]);
        for (size_t r = 0; r < rows; r++) {
            const size_t i = r * dim + j;
            ey = fmax(ey, isfinite(b.ry[i]) ? fabs(b.y[i] - b.ry[i]) / keel_ulp32(fmax(fy, fabs(b.ry[i]))) : 0.0);
            ex = fmax(ex, isfinite(b.rdx[i]) ? fabs(b.dx[i] - b.rdx[i]) / keel_ulp32(fmax(fx, fabs(b.rdx[i]))) : 0.0);
        }
    }
    record(&res[M_BN_Y], ey, KEEL_BOUND_ROW_ULPS, kind, rows, dim);
    record(&res[M_BN_DX], ex, KEEL_BOUND_ROW_ULPS, kind, rows, dim);
    record(&res[M_BN_DGAMMA], keel_err_sum(b.dg, b.rdg, b.m1, dim, NULL), keel_bound_dparam(rows), kind, rows, dim);
out:
    bufs_free(&b);
    if (oom)
        fprintf(stderr, "keel check: out of memory\n");
    return oom ? -1 : 0;
}

static int check_dyt(keel_ctx *ctx, keel_rng *rng, keel_case_kind kind, size_t rows, size_t dim, result *res)
{
    bufs b;
    memset(&b, 0, sizeof b);
    int oom = 0;
    const size_t n = rows * dim;
    const float alpha = 0.5f;
    b.x = rows_of(rng, kind, rows, dim, &oom), b.dy = normal_of(rng, n, 0.0, 1.0, &oom);
    b.gamma = normal_of(rng, dim, 1.0, 0.5, &oom), b.beta = normal_of(rng, dim, 0.0, 0.25, &oom);
    b.y = falloc(n, &oom), b.dx = falloc(n, &oom), b.dg = falloc(dim, &oom), b.db = falloc(dim, &oom);
    if (oom)
        goto out;
    float da = 0.0f;
    keel_status st = keel_dyt_fwd(ctx, rows, dim, keel_f32(b.x, dim), keel_f32(b.y, dim), alpha, b.gamma, b.beta, 0);
    if (st == KEEL_OK)
        st = keel_dyt_bwd(ctx, rows, dim, keel_f32(b.dy, dim), keel_f32(b.x, dim), alpha, b.gamma,
                          keel_f32(b.dx, dim), &da, b.dg, b.db, 0);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel check: dyt: %s (%s)\n", keel_status_str(st), keel_last_error());
        bufs_free(&b);
        return -1;
    }
    b.xd = dcopy(b.x, n, &oom), b.dyd = dcopy(b.dy, n, &oom), b.gd = dcopy(b.gamma, dim, &oom);
    b.bd = dcopy(b.beta, dim, &oom), b.ry = dalloc(n, &oom), b.rdx = dalloc(n, &oom), b.fl = dalloc(rows, &oom);
    if (oom)
        goto out;
    double rda = 0.0, mda = 0.0;
    keel_ref_dyt_fwd_f64(rows, dim, b.xd, alpha, b.gd, b.bd, b.ry);
    keel_ref_dyt_grads g = {b.rdx, &rda, &mda, NULL, NULL, NULL, NULL};
    keel_ref_dyt_bwd_f64(rows, dim, b.dyd, b.xd, alpha, b.gd, &g);
    for (size_t i = 0; i < n; i++) {
        b.fl[i / dim] = fmax(b.fl[i / dim], fabs(b.dyd[i] * b.gd[i % dim] * alpha));
        mda += fabs(b.dyd[i] * b.gd[i % dim] * b.xd[i]) * 1e-30; /* keel's s is 0 past |u| = 43.5 */
    }
    /* y's floor: the row's largest |gamma * tanh| + |beta| (beta may cancel the rest) */
    b.m3 = dalloc(rows, &oom);
    if (oom)
        goto out;
    for (size_t i = 0; i < n; i++)
        b.m3[i / dim] = fmax(b.m3[i / dim], fabs(b.gd[i % dim] * tanh(alpha * b.xd[i])) + fabs(b.bd[i % dim]));
    record(&res[M_DYT_Y], keel_err_ulps_rows(b.y, dim, b.ry, rows, dim, b.m3, NULL, NULL), KEEL_BOUND_ROW_ULPS,
           kind, rows, dim);
    record(&res[M_DYT_DX], keel_err_ulps_rows(b.dx, dim, b.rdx, rows, dim, b.fl, NULL, NULL), KEEL_BOUND_ROW_ULPS,
           kind, rows, dim);
    record(&res[M_DYT_DALPHA], keel_err_sum(&da, &rda, &mda, 1, NULL), keel_bound_dparam(rows) + 8.0, kind, rows,
           dim);
out:
    bufs_free(&b);
    if (oom)
        fprintf(stderr, "keel check: out of memory\n");
    return oom ? -1 : 0;
}

int keel_check_blocks(keel_ctx *ctx, unsigned long long seed, int quick)
{
    static const size_t full_widths[] = {1, 3, 17, 64, 768, 1025, 4096};
    static const size_t quick_widths[] = {3, 768};
    const size_t *widths = quick ? quick_widths : full_widths;
    const size_t nw = quick ? 2 : sizeof full_widths / sizeof full_widths[0];
    const size_t elements = quick ? 4096 : 65536;
    result res[M_COUNT];
    memset(res, 0, sizeof res);
    for (int m = 0; m < M_COUNT; m++)
        res[m].bound = 1.0;
    keel_rng rng;
    keel_rng_seed(&rng, seed ^ 0x626c6f636b73ull); /* "blocks": inputs apart from the norms' */
    int cases = 0;
    for (size_t w = 0; w < nw; w++) {
        const size_t dim = widths[w];
        size_t rows = elements / dim;
        rows = rows < 2 ? 2 : rows > 64 ? 64 : rows;
        for (int kind = 0; kind < KEEL_CASE_COUNT; kind++) {
            const keel_case_kind k = (keel_case_kind)kind;
            if (check_add(ctx, &rng, k, rows, dim, 0, res) || check_add(ctx, &rng, k, rows, dim, 1, res) ||
                check_bn(ctx, &rng, k, rows, dim, res) || check_dyt(ctx, &rng, k, rows, dim, res))
                return 2;
            cases++;
        }
    }
    printf("transformer blocks: %d cases of each op (alpha 2.63, lambda, dh; BatchNorm training)\n", cases);
    printf("%-14s %-7s %10s %7s  %-6s %s\n", "op", "output", "worst", "bound", "result", "worst case");
    int failed = 0;
    for (int m = 0; m < M_COUNT; m++) {
        printf("%-14s %-7s %10.3g %7.3g  %-6s %s\n", metric_op[m], metric_out[m], res[m].err, res[m].bound,
               res[m].failed ? "FAIL" : "PASS", res[m].where);
        failed |= res[m].failed;
    }
    return failed;
}
