/* A loop of one keel call, for a profiler: `perf record -e cpu-clock ./profile_loop OP ROWS DIM
 * N` calls OP N times on one thread and prints the fastest call. docs/performance.md's profiles
 * were taken this way. `make build` builds it as build/keel_profile_loop.
 * OP: lnf, lnb (LayerNorm forward / backward), rmsf, rmsb, addlnb (fused add + LayerNorm
 * backward, dx in place over dh), addlnb2 (dx apart), addrmsb (the same for RMSNorm), addlnf, addrmsf (fused add + norm forward: read x and r,
 * write h and y), lsf, lsb (LayerScale forward: h = x + lambda * f; backward: dx, df, dlambda),
 * bnf, bnb (BatchNorm training forward with running statistics; backward), dytf, dytb (DyT),
 * copy (memcpy of x to y, the floor's reference), copy2 (memcpy of x and r to h and y: the fused
 * forwards' bytes). */
#define _POSIX_C_SOURCE 200809L
#include <keel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *buffer(size_t n, unsigned seed)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "keel_profile_loop: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (float)(seed >> 8) / 16777216.0f - 0.3f;
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: keel_profile_loop lnf|lnb|rmsf|rmsb|addlnb|addlnb2|addrmsb|addlnf|addrmsf|lsf|lsb|bnf|bnb|dytf|dytb|copy|copy2 ROWS DIM N\n");
        return 2;
    }
    const char *op = argv[1];
    const size_t rows = strtoull(argv[2], NULL, 10), dim = strtoull(argv[3], NULL, 10);
    const long n = atol(argv[4]);
    if (!rows || !dim || n < 1) {
        fprintf(stderr, "keel_profile_loop: ROWS, DIM and N must be positive\n");
        return 2;
    }
    float *x = buffer(rows * dim, 1), *y = buffer(rows * dim, 2), *dy = buffer(rows * dim, 3);
    float *dx = buffer(rows * dim, 4), *gamma = buffer(dim, 5), *beta = buffer(dim, 6);
    float *mean = buffer(rows, 7), *rstd = buffer(rows, 8), *dg = buffer(dim, 9), *db = buffer(dim, 10);
    keel_ctx *ctx;
    if (keel_ctx_create(&ctx, 1) != KEEL_OK ||
        keel_layernorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y, dim), gamma, beta, 1e-5f,
                           mean, rstd, 0) != KEEL_OK) {
        fprintf(stderr, "keel_profile_loop: %s\n", keel_last_error());
        return 1;
    }
    double best = 1e30;
    for (long k = 0; k < n; k++) {
        keel_status st = KEEL_OK;
        const double t = now_s();
        if (!strcmp(op, "lnf"))
            st = keel_layernorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y, dim), gamma, beta,
                                    1e-5f, mean, rstd, 0);
        else if (!strcmp(op, "lnb"))
            st = keel_layernorm_bwd(ctx, rows, dim, keel_f32(dy, dim), keel_f32(x, dim), mean, rstd,
                                    gamma, 1e-5f, keel_f32(dx, dim), dg, db, 0);
        else if (!strcmp(op, "rmsf"))
            st = keel_rmsnorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y, dim), gamma, 1e-5f,
                                  rstd, 0);
        else if (!strcmp(op, "rmsb"))
            st = keel_rmsnorm_bwd(ctx, rows, dim, keel_f32(dy, dim), keel_f32(x, dim), rstd, gamma,
                                  1e-5f, keel_f32(dx, dim), dg, 0);
        else if (!strcmp(op, "addlnb") || !strcmp(op, "addrmsb") || !strcmp(op, "addlnb2")) {
            /* addlnb2: dx apart from dh (dh = dy's buffer), so dx is written, not updated */
            const keel_residual res = keel_residual_add(keel_f32(x, dim), keel_f32(dy, dim));
            const keel_residual_grads g = {keel_f32(dx, dim), keel_none(), NULL, NULL};
            const keel_tensor dh = keel_f32(op[6] == '2' ? dy : dx, dim);
            st = op[3] == 'l' ? keel_add_layernorm_bwd(ctx, rows, dim, keel_f32(dy, dim), dh, &res,
                                                       keel_f32(y, dim), mean, rstd, gamma, 1e-5f,
                                                       &g, dg, db, 0)
                              : keel_add_rmsnorm_bwd(ctx, rows, dim, keel_f32(dy, dim), dh, &res,
                                                     keel_f32(y, dim), rstd, gamma, 1e-5f, &g, dg, 0);
        } else if (!strcmp(op, "addlnf") || !strcmp(op, "addrmsf")) {
            const keel_residual res = keel_residual_add(keel_f32(x, dim), keel_f32(dy, dim));
            st = op[3] == 'l' ? keel_add_layernorm_fwd(ctx, rows, dim, &res, keel_f32(dx, dim),
                                                       keel_f32(y, dim), gamma, beta, 1e-5f, mean,
                                                       rstd, 0)
                              : keel_add_rmsnorm_fwd(ctx, rows, dim, &res, keel_f32(dx, dim),
                                                     keel_f32(y, dim), gamma, 1e-5f, rstd, 0);
        } else if (!strcmp(op, "lsf"))
            st = keel_layerscale_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(dy, dim), gamma,
                                     keel_f32(y, dim), 0);
        else if (!strcmp(op, "lsb"))
            st = keel_layerscale_bwd(ctx, rows, dim, keel_f32(dy, dim), keel_f32(x, dim), gamma,
                                     keel_f32(dx, dim), keel_f32(y, dim), dg, 0);
        else if (!strcmp(op, "bnf"))
            st = keel_batchnorm_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y, dim), gamma, beta,
                                    1e-5f, 1, 0.1f, dg, db, NULL, NULL, NULL, 0);
        else if (!strcmp(op, "bnb"))
            st = keel_batchnorm_bwd(ctx, rows, dim, keel_f32(dy, dim), keel_f32(x, dim), NULL, NULL,
                                    gamma, 1e-5f, 1, keel_f32(dx, dim), dg, db, 0);
        else if (!strcmp(op, "dytf"))
            st = keel_dyt_fwd(ctx, rows, dim, keel_f32(x, dim), keel_f32(y, dim), 0.5f, gamma, beta, 0);
        else if (!strcmp(op, "dytb")) {
            float dalpha;
            st = keel_dyt_bwd(ctx, rows, dim, keel_f32(dy, dim), keel_f32(x, dim), 0.5f, gamma,
                              keel_f32(dx, dim), &dalpha, dg, db, 0);
        } else if (!strcmp(op, "copy"))
            memcpy(y, x, rows * dim * sizeof(float));
        else if (!strcmp(op, "copy2")) {
            memcpy(dx, x, rows * dim * sizeof(float));
            memcpy(y, dy, rows * dim * sizeof(float));
        }
        else {
            fprintf(stderr, "keel_profile_loop: unknown OP '%s'\n", op);
            return 2;
        }
        const double dt = now_s() - t;
        if (st != KEEL_OK) {
            fprintf(stderr, "keel_profile_loop: %s\n", keel_last_error());
            return 1;
        }
        if (dt < best)
            best = dt;
    }
    printf("%s %zux%zu: fastest of %ld calls %.1f us, %.3f ns/element\n", op, rows, dim, n,
           best * 1e6, best * 1e9 / (double)(rows * dim));
    keel_ctx_destroy(ctx);
    float *all[] = {x, y, dy, dx, gamma, beta, mean, rstd, dg, db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    return 0;
}
