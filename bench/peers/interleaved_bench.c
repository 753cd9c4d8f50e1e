/*
 * interleaved_bench.c - keel and oneDNN 3.x layer normalization timed in ONE process, in turns,
 * so that both see the same machine: on a machine shared with other work (builds, another
 * benchmark) the load changes from second to second, and two libraries timed one after the
 * other (bench/peers/run.sh beside keel bench) can each meet a different load. Here every round
 * calls keel once and oneDNN once, on the same case, each on buffers of its own; the order
 * alternates from round to round (so neither always runs right after the other, with its
 * caches or its frequency), and the ratio is taken from the two medians of the same rounds.
 *
 * Build (bench/peers/interleaved.sh does this): against libkeel.so and the PyPI wheels' oneDNN:
 *   cc -O2 -std=c11 -fopenmp -Iinclude -Isrc/cli -I$PREFIX/include bench/peers/interleaved_bench.c
 * \
 *      bench/peers/onednn_common.c src/cli/bench_time.c -o interleaved_bench \
 *      -Lbuild -lkeel -Wl,-rpath,$PWD/build -L$PREFIX/lib -l:libdnnl.so.3 -Wl,-rpath,$PREFIX/lib
 * -lm Usage: interleaved_bench THREADS [--quick] THREADS  keel's context gets this many threads
 * (keel_ctx_create), oneDNN's OpenMP runtime as many (omp_set_num_threads)
 *   --quick  only 4096x768 and 256x1024
 *
 * Cases: 32x4096, 256x1024, 4096x768, 4096x4096, 2048x8192; f32 and bf16 tensors (x, y, dy,
 * dx; gamma, beta, the statistics, dgamma and dbeta float32 in both libraries). Ops: LayerNorm
 * forward (keel_layernorm_fwd writing mean and rstd; oneDNN forward_training writing mean and
 * variance) and backward (dx, dgamma, dbeta from the forward's statistics), and RMSNorm forward
 * and backward timed for keel alone: oneDNN 3.2 has no RMSNorm (the rms_norm flag came in 3.3).
 * Each output is checked against a float64 reference before the timing (onednn_common.h: the
 * tolerances of onednn_bench.c); a failing check prints FAIL and the row is still timed.
 *
 * Prints one Markdown table on stdout:
 *   | op | dtype | rows x dim | threads | keel us | oneDNN 3.2 us | keel / oneDNN | keel check |
 *   oneDNN check |
 * keel / oneDNN = oneDNN's median / keel's median (> 1: keel is faster). Progress on stderr.
 * Exit status: 0, 1 if a call failed or memory ran out (its rows say so), 2 for bad arguments.
 */
#include "onednn_common.h"

#include "bench_time.h" /* src/cli: bench_now_s, bench_median */

#include <keel.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* rounds: enough for the slower library of the pair to fill about TIME_BUDGET_S */
#define TIME_BUDGET_S 0.3
#define MIN_ROUNDS 7
#define MAX_ROUNDS 3000

static const bcase all_cases[] = {{32, 4096}, {256, 1024}, {4096, 768}, {4096, 4096}, {2048, 8192}};
static const bcase quick_cases[] = {{4096, 768}, {256, 1024}};

typedef enum { LN_FWD, LN_BWD, RMS_FWD, RMS_BWD } op_kind;
static const char *const op_name[] = {"layernorm fwd", "layernorm bwd", "rmsnorm fwd",
                                      "rmsnorm bwd"};
static const char *const dt_name[] = {"f32", "bf16", "f16"};

static int threads;
static char peer[32]; /* "oneDNN 3.2" */

/* one keel call of op on B's buffers: the backward reads the statistics its forward wrote
 * (mean and rstd in B->mean, B->var) */
static keel_status keel_run(keel_ctx *ctx, lnbufs *B, op_kind op)
{
    const size_t rows = B->c.rows, dim = B->c.dim;
    const keel_dtype kdt = B->dt == DT_BF16 ? KEEL_BF16 : B->dt == DT_F16 ? KEEL_F16 : KEEL_F32;
    const keel_tensor x = {B->x, kdt, dim}, y = {B->y, kdt, dim};
    const keel_tensor dy = {B->dy, kdt, dim}, dx = {B->dx, kdt, dim};
    switch (op) {
    case LN_FWD:
        return keel_layernorm_fwd(ctx, rows, dim, x, y, B->g, B->b, EPS, B->mean, B->var, 0);
    case LN_BWD:
        return keel_layernorm_bwd(ctx, rows, dim, dy, x, B->mean, B->var, B->g, EPS, dx, B->dg,
                                  B->db, 0);
    case RMS_FWD:
        return keel_rmsnorm_fwd(ctx, rows, dim, x, y, B->g, EPS, B->var, 0);
    default:
        return keel_rmsnorm_bwd(ctx, rows, dim, dy, x, B->var, B->g, EPS, dx, B->dg, 0);
    }
}

/* The interleaved timing of one op: a warm-up call of each library, one timed call each to size
 * the series, then rounds of (keel, oneDNN), oneDNN first in the odd rounds. P NULL: keel
 * alone, in the same number of rounds. The medians go to *tk and *tp (seconds). Returns 0, or
 * -1 with why filled when a call fails. */
static int time_op(keel_ctx *ctx, lnbufs *K, op_kind op, onednn_ln *P, dnnl_stream_t stream,
                   double *tk, double *tp, char *why, size_t len)
{
    const int bwd = op == LN_BWD;
    double est[2] = {0, 0}, *ts = NULL;
    for (int warm = 0; warm < 2; warm++) {
        double t0 = bench_now_s();
        keel_status ks = keel_run(ctx, K, op);
        est[0] = bench_now_s() - t0;
        if (ks != KEEL_OK) {
            snprintf(why, len, "keel failed: %s", keel_last_error());
            return -1;
        }
        if (P) {
            t0 = bench_now_s();
            const dnnl_status_t ds = onednn_ln_run(P, stream, bwd);
            est[1] = bench_now_s() - t0;
            if (ds != dnnl_success) {
                snprintf(why, len, "oneDNN failed: dnnl status %d", (int)ds);
                return -1;
            }
        }
    }
    const double slower = est[0] > est[1] ? est[0] : est[1];
    int rounds = slower > 0 ? (int)(TIME_BUDGET_S / slower) : MAX_ROUNDS;
    rounds = rounds < MIN_ROUNDS ? MIN_ROUNDS : rounds > MAX_ROUNDS ? MAX_ROUNDS : rounds;
    ts = malloc(2 * (size_t)rounds * sizeof *ts); /* keel's times, then oneDNN's */
    if (!ts) {
        snprintf(why, len, "not timed: out of memory");
        return -1;
    }
    int rc = 0;
    for (int r = 0; r < rounds && !rc; r++) {
        for (int k = 0; k < 2 && !rc; k++) {
            const int lib = (k + r) % 2; /* 0: keel, 1: oneDNN; r odd: oneDNN first */
            if (lib == 1 && !P)
                continue;
            const double t0 = bench_now_s();
            if (lib == 0 ? keel_run(ctx, K, op) != KEEL_OK
                         : onednn_ln_run(P, stream, bwd) != dnnl_success) {
                snprintf(why, len, "%s failed in the timed rounds", lib == 0 ? "keel" : "oneDNN");
                rc = -1;
            }
            ts[lib * rounds + r] = bench_now_s() - t0;
        }
    }
    if (!rc) {
        *tk = bench_median(ts, rounds);
        *tp = P ? bench_median(ts + rounds, rounds) : -1;
        fprintf(stderr, "[interleaved] %s %s %zux%zu: %d rounds\n", op_name[op], dt_name[K->dt],
                K->c.rows, K->c.dim, rounds);
    }
    free(ts);
    return rc;
}

/* a table row; a time < 0 is printed as "-" (and then no ratio) */
static void print_row(op_kind op, dtype dt, const bcase *c, double tk, double tp, const char *kchk,
                      const char *pchk)
{
    char ks[32] = "-", ps[32] = "-", ratio[32] = "-";
    if (tk >= 0)
        snprintf(ks, sizeof ks, "%.1f", tk * 1e6);
    if (tp >= 0)
        snprintf(ps, sizeof ps, "%.1f", tp * 1e6);
    if (tk > 0 && tp >= 0)
        snprintf(ratio, sizeof ratio, "%.2f", tp / tk);
    printf("| %s | %s | %zux%zu | %d | %s | %s | %s | %s | %s |\n", op_name[op], dt_name[dt],
           c->rows, c->dim, threads, ks, ps, ratio, kchk, pchk);
    fflush(stdout);
}

/* the four ops of one case and dtype; returns 0, or 1 if something failed (its rows say so) */
static int run_case(keel_ctx *ctx, dnnl_engine_t eng, dnnl_stream_t stream, const bcase *c,
                    dtype dt)
{
    char pwhy[256] = "", kchk[400], pchk[256], why[128];
    lnbufs K, O;
    onednn_ln P;
    int have_p = 0, status = 0;
    if (lnbufs_alloc(&K, c, dt)) {
        for (int op = LN_FWD; op <= RMS_BWD; op++)
            print_row((op_kind)op, dt, c, -1, -1, "not run: out of memory", "-");
        return 1;
    }
    if (lnbufs_alloc(&O, c, dt))
        snprintf(pwhy, sizeof pwhy, "not run: out of memory");
    else if (onednn_ln_create(&P, eng, &O, pwhy, sizeof pwhy))
        lnbufs_free(&O);
    else
        have_p = 1;
    if (have_p)
        fprintf(stderr, "[interleaved] %zux%zu %s: oneDNN forward impl %s, backward impl %s\n",
                c->rows, c->dim, dt_name[dt], P.fimpl, P.bwd ? P.bimpl : "(none)");

    for (int op = LN_FWD; op <= RMS_BWD; op++) {
        const int rms = op >= RMS_FWD, bwd = op == LN_BWD || op == RMS_BWD;
        /* oneDNN runs this op: LayerNorm, primitives made, a backward primitive for bwd */
        onednn_ln *p = !rms && have_p && (!bwd || P.bwd) ? &P : NULL;
        double tk = -1, tp = -1;
        /* the first calls, checked; then the interleaved series */
        const keel_status ks = keel_run(ctx, &K, (op_kind)op);
        if (ks != KEEL_OK) {
            snprintf(kchk, sizeof kchk, "keel failed: %s", keel_last_error());
            status = 1;
        } else if (lnbufs_check(&K, bwd, rms, kchk, sizeof kchk) < 0) {
            status = 1;
        }
        if (rms) {
            snprintf(pchk, sizeof pchk, "%s has no RMSNorm (its rms_norm flag came in 3.3)", peer);
        } else if (!p) {
            snprintf(pchk, sizeof pchk, "%s", pwhy[0] ? pwhy : "not run");
        } else {
            const dnnl_status_t ds = onednn_ln_run(p, stream, bwd);
            if (ds != dnnl_success) {
                snprintf(pchk, sizeof pchk, "oneDNN failed: dnnl status %d", (int)ds);
                p = NULL;
                status = 1;
            } else if (lnbufs_check(&O, bwd, 0, pchk, sizeof pchk) < 0) {
                status = 1;
            }
        }
        if (ks == KEEL_OK && time_op(ctx, &K, (op_kind)op, p, stream, &tk, &tp, why, sizeof why)) {
            fprintf(stderr, "[interleaved] %s %s %zux%zu: %s\n", op_name[op], dt_name[dt], c->rows,
                    c->dim, why);
            snprintf(kchk + strlen(kchk), sizeof kchk - strlen(kchk), "; %s", why);
            tk = tp = -1;
            status = 1;
        }
        print_row((op_kind)op, dt, c, tk, tp, kchk, pchk);
    }
    if (have_p) {
        onednn_ln_destroy(&P);
        lnbufs_free(&O);
    }
    lnbufs_free(&K);
    return status;
}

static int usage(void)
{
    fprintf(stderr, "usage: interleaved_bench THREADS [--quick]   (THREADS >= 1)\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3)
        return usage();
    char *end;
    const long t = strtol(argv[1], &end, 10);
    if (*end || t < 1 || t > KEEL_MAX_THREADS)
        return usage();
    threads = (int)t;
    const int quick = argc == 3;
    if (quick && strcmp(argv[2], "--quick"))
        return usage();

    const dnnl_version_t *v = dnnl_version();
    snprintf(peer, sizeof peer, "oneDNN %d.%d", v->major, v->minor);
    omp_set_num_threads(threads);
    keel_ctx *ctx = NULL;
    const keel_status ks = keel_ctx_create(&ctx, threads);
    if (ks != KEEL_OK) {
        fprintf(stderr, "interleaved_bench: keel_ctx_create: %s (%s)\n", keel_status_str(ks),
                keel_last_error());
        return 1;
    }
    dnnl_engine_t eng = NULL;
    dnnl_stream_t stream = NULL;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "interleaved_bench: cannot create the oneDNN CPU engine and stream\n");
        if (eng)
            dnnl_engine_destroy(eng);
        keel_ctx_destroy(ctx);
        return 1;
    }
    fprintf(stderr,
            "[interleaved] keel %s (path %s, %d thread(s)) and oneDNN %d.%d.%d (cpu runtime %s, "
            "%d OpenMP thread(s)) in one process\n",
            keel_version_string(), keel_isa_name(keel_ctx_isa(ctx)), keel_ctx_threads(ctx),
            v->major, v->minor, v->patch, onednn_runtime_name(v), omp_get_max_threads());

    printf("| op | dtype | rows x dim | threads | keel us | %s us | keel / oneDNN | keel check | "
           "oneDNN check |\n",
           peer);
    printf("|---|---|---|---|---|---|---|---|---|\n");
    const bcase *cases = quick ? quick_cases : all_cases;
    const size_t nc =
        quick ? sizeof quick_cases / sizeof *quick_cases : sizeof all_cases / sizeof *all_cases;
    int status = 0;
    for (int dt = DT_F32; dt <= DT_BF16; dt++)
        for (size_t i = 0; i < nc; i++)
            status |= run_case(ctx, eng, stream, &cases[i], (dtype)dt);
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    keel_ctx_destroy(ctx);
    return status;
}
