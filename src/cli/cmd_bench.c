#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
/* keel bench: median time and GB/s of every op, beside the copy floor of the same bytes
 * (the faster of glibc memcpy and a streaming-store copy, same threads), measured in the same
 * run and interleaved with the op so that both see the same machine state. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_copy.h"
#include "commands.h"
#include "keel.h"

typedef struct bench_case {
    size_t rows, dim;
} bench_case;

/* L2-, L3- and DRAM-sized tensors at the widths transformers use. */
static const bench_case default_cases[] = {
    {4096, 16}, {4096, 64}, {256, 1024}, {4096, 768}, {4096, 1024},
    {4096, 4096}, {1024, 8192}, {16384, 8192},
};
static const bench_case demo_cases[] = {{4096, 1024}};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The transformer-block rows: the fused residual add + norm (h = x + r written, y = norm(h);
 * post-norm: h not written) beside the same work as two calls, an add (keel_layerscale_fwd with
 * lambda = 1) and then the norm, timed against the floor of the fused op's own bytes. */
typedef enum {
    OP_LN_FWD, OP_LN_BWD, OP_RMS_FWD, OP_RMS_BWD,
    OP_ADD_LN_FWD, OP_SEP_LN_FWD, OP_POST_LN_FWD, OP_ADD_LN_BWD,
    OP_ADD_RMS_FWD, OP_SEP_RMS_FWD, OP_ADD_RMS_BWD, OP_COUNT
} bench_op;
static const char *const op_names[OP_COUNT] = {"layernorm fwd", "layernorm bwd", "rmsnorm fwd", "rmsnorm bwd",
                                               "add+ln fwd", "add, ln fwd", "add+ln post", "add+ln bwd",
                                               "add+rms fwd", "add, rms fwd", "add+rms bwd"};

typedef struct buffers {
    float *x, *y, *dy, *dx, *mean, *rstd, *gamma, *beta, *dgamma, *dbeta;
    float *r, *h, *ones; /* the residual rows: r, h (n each), lambda = 1 (dim) */
} buffers;

static keel_status run_block_op(keel_ctx *ctx, bench_op op, const bench_case *c, const buffers *b)
{
    const size_t r = c->rows, d = c->dim;
    const keel_residual res = keel_residual_add(keel_f32(b->x, d), keel_f32(b->r, d));
    /* the backward as a pre-norm block uses it: dx = dh + the norm's dx, in place over dh (dx) */
    const keel_residual_grads g = {keel_f32(b->dx, d), keel_none(), NULL, NULL};
    keel_status st;
    switch (op) {
    case OP_ADD_LN_FWD:
        return keel_add_layernorm_fwd(ctx, r, d, &res, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma,
                                      b->beta, 1e-5f, b->mean, b->rstd, 0);
    case OP_POST_LN_FWD:
        return keel_add_layernorm_fwd(ctx, r, d, &res, keel_none(), keel_f32(b->y, d), b->gamma, b->beta,
                                      1e-5f, b->mean, b->rstd, 0);
    case OP_SEP_LN_FWD:
        st = keel_layerscale_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->r, d), b->ones, keel_f32(b->h, d), 0);
        return st ? st : keel_layernorm_fwd(ctx, r, d, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma,
                                            b->beta, 1e-5f, b->mean, b->rstd, 0);
    case OP_ADD_LN_BWD:
        return keel_add_layernorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->dx, d), &res,
                                      keel_f32(b->h, d), b->mean, b->rstd, b->gamma, 1e-5f, &g, b->dgamma,
                                      b->dbeta, 0);
    case OP_ADD_RMS_FWD:
        return keel_add_rmsnorm_fwd(ctx, r, d, &res, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma, 1e-5f,
                                    b->rstd, 0);
    case OP_SEP_RMS_FWD:
        st = keel_layerscale_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->r, d), b->ones, keel_f32(b->h, d), 0);
        return st ? st : keel_rmsnorm_fwd(ctx, r, d, keel_f32(b->h, d), keel_f32(b->y, d), b->gamma, 1e-5f,
                                          b->rstd, 0);
    case OP_ADD_RMS_BWD:
        return keel_add_rmsnorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->dx, d), &res,
                                    keel_f32(b->h, d), b->rstd, b->gamma, 1e-5f, &g, b->dgamma, 0);
    default:
        return KEEL_EINVAL;
    }
}

static keel_status run_op(keel_ctx *ctx, bench_op op, const bench_case *c, const buffers *b)
{
    const size_t r = c->rows, d = c->dim;
    switch (op) {
    case OP_LN_FWD:
        return keel_layernorm_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->y, d), b->gamma, b->beta,
                                  1e-5f, b->mean, b->rstd, 0);
    case OP_LN_BWD:
        return keel_layernorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->x, d), b->mean, b->rstd,
                                  b->gamma, 1e-5f, keel_f32(b->dx, d), b->dgamma, b->dbeta, 0);
    case OP_RMS_FWD:
        return keel_rmsnorm_fwd(ctx, r, d, keel_f32(b->x, d), keel_f32(b->y, d), b->gamma, 1e-5f,
                                b->rstd, 0);
    case OP_RMS_BWD:
        return keel_rmsnorm_bwd(ctx, r, d, keel_f32(b->dy, d), keel_f32(b->x, d), b->rstd, b->gamma,
                                1e-5f, keel_f32(b->dx, d), b->dgamma, 0);
    default:
        return run_block_op(ctx, op, c, b);
    }
}

static float *alloc_floats(size_t n, uint64_t *seed)
{
    float *p = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(*seed >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
    }
    return p;
}

static void free_buffers(buffers *b)
{
    float **all[] = {&b->x, &b->y, &b->dy, &b->dx, &b->mean, &b->rstd, &b->gamma, &b->beta, &b->dgamma, &b->dbeta,
                     &b->r, &b->h, &b->ones};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

static int alloc_buffers(buffers *b, const bench_case *c)
{
    uint64_t seed = 42;
    const size_t n = c->rows * c->dim;
    b->x = alloc_floats(n, &seed);
    b->y = alloc_floats(2 * n, &seed); /* twice: also the copy floor's buffers (backward: 1.5 n) */
    b->dy = alloc_floats(2 * n, &seed);
    b->dx = alloc_floats(n, &seed);
    b->mean = alloc_floats(c->rows, &seed);
    b->rstd = alloc_floats(c->rows, &seed);
    b->gamma = alloc_floats(c->dim, &seed);
    b->beta = alloc_floats(c->dim, &seed);
    b->dgamma = alloc_floats(c->dim, &seed);
    b->dbeta = alloc_floats(c->dim, &seed);
    b->r = alloc_floats(n, &seed);
    b->h = alloc_floats(n, &seed);
    b->ones = alloc_floats(c->dim, &seed);
    if (b->ones)
        for (size_t j = 0; j < c->dim; j++)
            b->ones[j] = 1.0f;
    return b->x && b->y && b->dy && b->dx && b->mean && b->rstd && b->gamma && b->beta && b->dgamma && b->dbeta &&
           b->r && b->h && b->ones;
}

/* Bytes the op must move: forward reads x and writes y; backward reads x and dy, writes dx.
 * Fused add + norm: reads x and r, writes h and y (post-norm: not h); its backward reads dy,
 * dh and h and writes dx. "add, norm" is timed against the fused op's bytes: the floor the
 * fused op can reach and two calls cannot (they move 5n: x, r, h; h, y). */
static size_t op_bytes(bench_op op, const bench_case *c)
{
    const size_t n = c->rows * c->dim * sizeof(float);
    if (op >= OP_ADD_LN_FWD)
        return op == OP_POST_LN_FWD ? 3 * n : 4 * n;
    return (op == OP_LN_BWD || op == OP_RMS_BWD) ? 3 * n : 2 * n;
}

static int reps_for(size_t bytes, int min_reps)
{
    size_t target = (size_t)3 << 30; /* ~3 GB moved per measurement series */
    int reps = (int)(target / (bytes ? bytes : 1));
    if (reps > 200)
        reps = 200;
    return reps < min_reps ? min_reps : reps;
}

static void usage(FILE *to)
{
    fprintf(to, "usage: keel bench [--demo] [--rows R --dim D] [--threads N] [--reps N] [--markdown]\n"
                "  --demo      one 4096 x 1024 case (what make demo runs)\n"
                "  --threads N threads for keel and the copy floor (default: all cores; 0 = all)\n"
                "  --markdown  print a Markdown table\n");
}

int keel_cmd_bench(int argc, char **argv)
{
    const bench_case *cases = default_cases;
    size_t ncases = sizeof default_cases / sizeof default_cases[0];
    bench_case one = {0, 0};
    int threads = 0, min_reps = 7, markdown = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--demo")) {
            cases = demo_cases;
            ncases = 1;
        } else if (!strcmp(a, "--markdown")) {
            markdown = 1;
        } else if (v && !strcmp(a, "--rows")) {
            one.rows = strtoull(v, NULL, 10), i++;
        } else if (v && !strcmp(a, "--dim")) {
            one.dim = strtoull(v, NULL, 10), i++;
        } else if (v && !strcmp(a, "--threads")) {
            threads = atoi(v), i++;
        } else if (v && !strcmp(a, "--reps")) {
            min_reps = atoi(v), i++;
        } else {
            fprintf(stderr, "keel bench: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (one.rows || one.dim) {
        if (!one.rows || !one.dim) {
            fprintf(stderr, "keel bench: --rows and --dim go together\n");
            return 2;
        }
        cases = &one;
        ncases = 1;
    }
    if (min_reps < 3)
        min_reps = 3;

    keel_ctx *ctx;
    keel_status st = keel_ctx_create(&ctx, threads);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel bench: %s\n", keel_last_error());
        return 1;
    }
    bench_copier *copier = bench_copier_create(keel_ctx_threads(ctx));
    if (!copier) {
        fprintf(stderr, "keel bench: cannot start the copy threads\n");
        keel_ctx_destroy(ctx);
        return 1;
    }
    printf("keel %s, isa %s, %d thread(s); median of >= %d runs, op and copy interleaved\n",
           keel_version_string(), keel_isa_name(keel_ctx_isa(ctx)), keel_ctx_threads(ctx), min_reps);
    if (markdown)
        printf("\n| op | rows x dim | MiB moved | keel us | keel GB/s | memcpy GB/s | stream GB/s | fraction of floor |\n"
               "|---|---|---|---|---|---|---|---|\n");
    else
        printf("%-14s %13s %9s %10s %9s %11s %11s %8s\n", "op", "rows x dim", "MiB", "keel us", "keel GB/s",
               "memcpy GB/s", "stream GB/s", "floor");
    int failed = 0;
    for (size_t ci = 0; ci < ncases && !failed; ci++) {
        const bench_case *c = &cases[ci];
        buffers b = {0};
        if (!alloc_buffers(&b, c)) {
            fprintf(stderr, "keel bench: out of memory for %zu x %zu\n", c->rows, c->dim);
            free_buffers(&b);
            failed = 1;
            break;
        }
        /* the backward reads the forward's statistics */
        run_op(ctx, OP_LN_FWD, c, &b);
        for (int op = 0; op < OP_COUNT; op++) {
            const size_t bytes = op_bytes((bench_op)op, c);
            const int reps = reps_for(bytes, min_reps);
            double *t_op = malloc(3 * (size_t)reps * sizeof(double));
            if (!t_op) {
                failed = 1;
                break;
            }
            double *t_memcpy = t_op + reps, *t_stream = t_op + 2 * reps;
            /* copy half the bytes moved (a copy reads and writes each byte); y and dy hold 2n */
            char *src = (char *)b.dy, *dst = (char *)b.y;
            const size_t copy_bytes = bytes / 2;
            run_op(ctx, (bench_op)op, c, &b); /* warm-up */
            for (int r = 0; r < reps; r++) {
                double t0 = now_s();
                st = run_op(ctx, (bench_op)op, c, &b);
                t_op[r] = now_s() - t0;
                t0 = now_s();
                bench_copy(copier, dst, src, copy_bytes, BENCH_COPY_MEMCPY);
                t_memcpy[r] = now_s() - t0;
                t0 = now_s();
                bench_copy(copier, dst, src, copy_bytes, BENCH_COPY_STREAM);
                t_stream[r] = now_s() - t0;
            }
            if (st != KEEL_OK) {
                fprintf(stderr, "keel bench: %s: %s\n", op_names[op], keel_last_error());
                failed = 1;
            }
            const double mo = median(t_op, reps), mm = median(t_memcpy, reps), ms = median(t_stream, reps);
            const double floor_t = mm < ms ? mm : ms;
            const double gb = (double)bytes / 1e9;
            char shape[32];
            snprintf(shape, sizeof shape, "%zux%zu", c->rows, c->dim);
            if (markdown)
                printf("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", op_names[op], shape,
                       (double)bytes / 1048576.0, mo * 1e6, gb / mo, gb / mm, gb / ms, floor_t / mo);
            else
                printf("%-14s %13s %9.1f %10.1f %9.1f %11.1f %11.1f %8.2f\n", op_names[op], shape,
                       (double)bytes / 1048576.0, mo * 1e6, gb / mo, gb / mm, gb / ms, floor_t / mo);
            fflush(stdout);
            free(t_op);
        }
        free_buffers(&b);
    }
    bench_copier_destroy(copier);
    keel_ctx_destroy(ctx);
    return failed;
}
