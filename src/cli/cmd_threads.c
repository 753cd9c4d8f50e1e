/* keel threads: where waking the thread pool starts to pay. Times LayerNorm forward and
 * backward (float32, dim 1024) on growing row counts with one thread and with every thread
 * (keel_ctx_set_min_parallel(ctx, 0): the pool is woken whatever the size), medians of
 * interleaved runs, and prints the smallest size from which the threads win, the value to give
 * keel_ctx_set_min_parallel (the library's default is KEEL_DEFAULT_MIN_PARALLEL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_time.h"
#include "commands.h"
#include "keel.h"
#include "numarg.h"

enum { REPS = 301, DIM = 1024, MAX_ROWS = 1024 };

typedef struct bufs {
    float *x, *y, *dy, *dx, *mean, *rstd, *dg, *db;
} bufs;

static keel_status run(keel_ctx *ctx, int bwd, size_t rows, const bufs *b)
{
    if (!bwd)
        return keel_layernorm_fwd(ctx, rows, DIM, keel_f32(b->x, DIM), keel_f32(b->y, DIM), NULL,
                                  NULL, 1e-5f, b->mean, b->rstd, 0);
    return keel_layernorm_bwd(ctx, rows, DIM, keel_f32(b->dy, DIM), keel_f32(b->x, DIM), b->mean,
                              b->rstd, NULL, 1e-5f, keel_f32(b->dx, DIM), b->dg, b->db, 0);
}

/* Median seconds of one call on ctx1 (one thread) and ctxn (all), interleaved. */
static int time_pair(keel_ctx *ctx1, keel_ctx *ctxn, int bwd, size_t rows, const bufs *b,
                     double *t1, double *tn)
{
    static double s1[REPS], sn[REPS];
    for (int r = 0; r < REPS; r++) {
        double t = bench_now_s();
        if (run(ctx1, bwd, rows, b) != KEEL_OK)
            return -1;
        s1[r] = bench_now_s() - t;
        t = bench_now_s();
        if (run(ctxn, bwd, rows, b) != KEEL_OK)
            return -1;
        sn[r] = bench_now_s() - t;
    }
    *t1 = bench_median(s1, REPS);
    *tn = bench_median(sn, REPS);
    return 0;
}

int keel_cmd_threads(int argc, char **argv)
{
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads")) {
            if (keel_arg_int("threads", "--threads", i + 1 < argc ? argv[i + 1] : NULL, 0, KEEL_ARG_MAX_THREADS,
                             &threads))
                return 2;
            i++;
        } else {
            fprintf(stderr, "usage: keel threads [--threads N]   (N: the threads to compare with one, 0..1024; "
                            "default and 0: all cores)\n");
            return !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") ? 0 : 2;
        }
    }
    keel_ctx *ctx1 = NULL, *ctxn = NULL;
    if (keel_ctx_create(&ctx1, 1) != KEEL_OK || keel_ctx_create(&ctxn, threads) != KEEL_OK ||
        keel_ctx_set_min_parallel(ctxn, 0) != KEEL_OK) {
        fprintf(stderr, "keel threads: %s\n", keel_last_error());
        keel_ctx_destroy(ctx1);
        keel_ctx_destroy(ctxn);
        return 1;
    }
    const int n = keel_ctx_threads(ctxn);
    bufs b;
    const size_t elems = (size_t)MAX_ROWS * DIM;
    float **all[] = {&b.x, &b.y, &b.dy, &b.dx, &b.mean, &b.rstd, &b.dg, &b.db};
    const size_t len[] = {elems, elems, elems, elems, MAX_ROWS, MAX_ROWS, DIM, DIM};
    int ok = 1;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        *all[i] = malloc(len[i] * sizeof(float));
        ok = ok && *all[i];
        for (size_t j = 0; *all[i] && j < len[i]; j++)
            (*all[i])[j] = (float)((j * 2654435761u) % 1000) / 1000.0f;
    }
    int status = 0;
    if (!ok) {
        fprintf(stderr, "keel threads: out of memory\n");
        status = 1;
    }
    printf("keel threads: LayerNorm float32, dim %d, 1 thread vs %d (pool woken at every size), "
           "median of %d interleaved runs; default threshold %zu elements\n",
           DIM, n, REPS, (size_t)KEEL_DEFAULT_MIN_PARALLEL);
    printf("%-8s %10s %10s %10s %10s\n", "op", "elements", "1 thr us", "N thr us", "speedup");
    for (int bwd = 0; bwd < 2 && !status; bwd++) {
        size_t from = 0; /* smallest size from which N threads stay ahead by 10% */
        for (size_t rows = 2; rows <= MAX_ROWS; rows *= 2) {
            double t1, tn;
            if (time_pair(ctx1, ctxn, bwd, rows, &b, &t1, &tn)) {
                fprintf(stderr, "keel threads: %s\n", keel_last_error());
                status = 1;
                break;
            }
            const double speedup = t1 / tn;
            printf("%-8s %10zu %10.2f %10.2f %9.2fx\n", bwd ? "ln bwd" : "ln fwd", rows * DIM,
                   1e6 * t1, 1e6 * tn, speedup);
            if (speedup >= 1.1) {
                if (!from)
                    from = rows * DIM;
            } else {
                from = 0;
            }
        }
        if (!status) {
            if (from)
                printf("%s: %d threads win from %zu elements on\n", bwd ? "ln bwd" : "ln fwd", n, from);
            else
                printf("%s: %d threads never win by 10%% up to %zu elements\n",
                       bwd ? "ln bwd" : "ln fwd", n, elems);
        }
    }
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(*all[i]);
    keel_ctx_destroy(ctx1);
    keel_ctx_destroy(ctxn);
    return status;
}
