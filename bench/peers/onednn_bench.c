/*
 * onednn_bench.c - oneDNN layer normalization (forward and backward, float32) on the cases of
 * `keel bench`, checked against a double-precision reference before it is timed.
 *
 * Build (run.sh does), from the repository's root:
 *   cc -O2 -std=c11 -fopenmp -Isrc/cli bench/peers/onednn_bench.c bench/peers/onednn_common.c \
 *      src/cli/bench_time.c -o onednn_bench -ldnnl -lm
 * onednn_common.c (shared with interleaved_bench.c) holds the oneDNN setup, the generator and the
 * references; it compiles against oneDNN 2.x (Debian's 2.6) and 3.x (the PyPI wheels' 3.2),
 * chosen by DNNL_VERSION_MAJOR; against the wheels, add -I$PREFIX/include, and link with
 * -L$PREFIX/lib -l:libdnnl.so.3 -Wl,-rpath,$PREFIX/lib instead of -ldnnl.
 * RMSNorm: layer normalization's rms_norm flag arrived in oneDNN 3.3; 2.6 and 3.2 have none, and
 * their rows say so.
 * Usage: onednn_bench THREADS [--quick] [--dtype f32|bf16|f16|i8|lowp]
 *        onednn_bench --version   (the loaded library's dnnl_version(): "oneDNN 3.2.0 (cpu runtime
 * OpenMP, ...)")
 *   --dtype  the tensors' dtype (default f32); lowp = bf16, f16 and i8. In bf16/f16, src, dst,
 *            diff_dst and diff_src are in that dtype (ops "layernorm fwd bf16", ...), scale,
 *            shift, their gradients and the statistics float32, as in keel; bytes counted at
 *            2 an element. i8 (int8 output) rows say why they are not run: oneDNN 2.6's layer
 *            normalization takes one data descriptor for src and dst (3.x would take an s8 dst with
 *            a static scale; not timed here).
 *
 * Prints Markdown table rows (no header) on stdout:
 *   | peer | op | rows x dim | us | GB/s | check (max rel err) |
 * progress on stderr. Bytes counted as keel bench does: forward reads x and writes y
 * (2 * rows * dim * 4), backward reads x and dy and writes dx (3 * rows * dim * 4).
 * The forward is prop_kind forward_training (it writes mean and variance, as keel bench's forward
 * writes mean and rstd); the backward is prop_kind backward with use_scale | use_shift, so it
 * computes dx, dscale and dshift from the forward's mean and variance.
 * Threads: Debian's libdnnl2 uses the OpenMP runtime (libgomp), so the count is set with
 * omp_set_num_threads (run.sh also sets OMP_NUM_THREADS).
 */
#include "onednn_common.h"

#include "bench_time.h" /* src/cli: bench_now_s, bench_median */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIME_BUDGET_S 0.3
#define MAX_REPS 200
#define MIN_REPS 7
#define MIN_REPS_BIG 3
#define BIG_ELEMS ((size_t)1 << 26)

static const bcase all_cases[] = {
    {4096, 16},   {4096, 64},   {256, 1024},  {4096, 768},
    {4096, 1024}, {4096, 4096}, {1024, 8192}, {16384, 8192},
};
static const bcase quick_cases[] = {{4096, 768}};

static char peer[64];

static const char *const dt_suffix[] = {"", " bf16", " f16"};

static void print_row(const char *op, const char *shape, double us, double gbs, const char *check)
{
    if (us < 0)
        printf("| %s | %s | %s | - | - | %s |\n", peer, op, shape, check);
    else
        printf("| %s | %s | %s | %.1f | %.1f | %s |\n", peer, op, shape, us, gbs, check);
    fflush(stdout);
}

/* the median of a series of runs (one warm-up first), in seconds; -1 if a run fails */
static double time_exec(onednn_ln *P, dnnl_stream_t stream, int bwd, int big)
{
    if (onednn_ln_run(P, stream, bwd) != dnnl_success) /* warm-up */
        return -1;
    double t0 = bench_now_s();
    onednn_ln_run(P, stream, bwd);
    const double t1 = bench_now_s() - t0;
    int reps = t1 > 0 ? (int)(TIME_BUDGET_S / t1) : MAX_REPS;
    if (reps > MAX_REPS)
        reps = MAX_REPS;
    if (reps < MIN_REPS)
        reps = MIN_REPS;
    if (big)
        reps = MIN_REPS_BIG;
    double *ts = malloc((size_t)reps * sizeof *ts);
    if (!ts)
        return -1;
    for (int r = 0; r < reps; r++) {
        t0 = bench_now_s();
        onednn_ln_run(P, stream, bwd);
        ts[r] = bench_now_s() - t0;
    }
    const double m = bench_median(ts, reps);
    free(ts);
    return m;
}

static void run_case(dnnl_engine_t eng, dnnl_stream_t stream, const bcase *c, dtype dt)
{
    char err[256] = "", shape[32], chk[160], op_f[40], op_b[40];
    snprintf(shape, sizeof shape, "%zux%zu", c->rows, c->dim);
    snprintf(op_f, sizeof op_f, "layernorm fwd%s", dt_suffix[dt]);
    snprintf(op_b, sizeof op_b, "layernorm bwd%s", dt_suffix[dt]);
    const size_t n = c->rows * c->dim, esize = dt == DT_F32 ? 4 : 2;
    const int big = n >= BIG_ELEMS;
    lnbufs B;
    onednn_ln P;
    int fwd_done = 0, have_bufs = 0, have_prims = 0;
    if (lnbufs_alloc(&B, c, dt)) {
        snprintf(err, sizeof err, "not run: out of memory");
        goto fail;
    }
    have_bufs = 1;
    if (onednn_ln_create(&P, eng, &B, err, sizeof err))
        goto fail;
    have_prims = 1;
    fprintf(stderr, "[onednn] %s%s: forward impl %s, backward impl %s\n", shape, dt_suffix[dt],
            P.fimpl, P.bwd ? P.bimpl : "(none)");
    const double gb_f = 2.0 * (double)(n * esize) / 1e9, gb_b = 3.0 * (double)(n * esize) / 1e9;

    /* forward: check, then time */
    TRY(onednn_ln_run(&P, stream, 0));
    lnbufs_check(&B, 0, 0, chk, sizeof chk);
    double t = time_exec(&P, stream, 0, big);
    print_row(op_f, shape, t * 1e6, gb_f / t, chk);
    fprintf(stderr, "[onednn] %s %s: %.1f us, %s\n", op_f, shape, t * 1e6, chk);
    fwd_done = 1;
    if (!P.bwd)
        goto fail; /* err says why */

    /* backward from the forward's mean and variance (the last forward run wrote them) */
    TRY(onednn_ln_run(&P, stream, 1));
    lnbufs_check(&B, 1, 0, chk, sizeof chk);
    t = time_exec(&P, stream, 1, big);
    print_row(op_b, shape, t * 1e6, gb_b / t, chk);
    fprintf(stderr, "[onednn] %s %s: %.1f us, %s\n", op_b, shape, t * 1e6, chk);
    goto done;

fail:
    fprintf(stderr, "[onednn] %s%s: %s\n", shape, dt_suffix[dt], err);
    if (!fwd_done)
        print_row(op_f, shape, -1, 0, err);
    print_row(op_b, shape, -1, 0, err);
done:
    if (have_prims)
        onednn_ln_destroy(&P);
    if (have_bufs)
        lnbufs_free(&B);
}

static void usage(void)
{
    fprintf(stderr, "usage: onednn_bench THREADS [--quick] [--dtype f32|bf16|f16|i8|lowp]\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        /* the library this program loaded, as dnnl_version() reports it (run.sh logs it) */
        const dnnl_version_t *v = dnnl_version();
        printf("oneDNN %d.%d.%d (cpu runtime %s, git %s)\n", v->major, v->minor, v->patch,
               onednn_runtime_name(v), v->hash);
        return 0;
    }
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int quick = 0;
    unsigned dts = 1u << DT_F32, i8 = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "f32"))
                dts = 1u << DT_F32;
            else if (!strcmp(v, "bf16"))
                dts = 1u << DT_BF16;
            else if (!strcmp(v, "f16"))
                dts = 1u << DT_F16;
            else if (!strcmp(v, "i8"))
                dts = 0, i8 = 1;
            else if (!strcmp(v, "lowp"))
                dts = 1u << DT_BF16 | 1u << DT_F16, i8 = 1;
            else {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (threads <= 0) {
        usage();
        return 2;
    }
    omp_set_num_threads(threads);
    const dnnl_version_t *v = dnnl_version();
    snprintf(peer, sizeof peer, "oneDNN %d.%d.%d", v->major, v->minor, v->patch);
    fprintf(stderr, "[onednn] %s (cpu runtime %s), %d OpenMP thread(s)\n", peer,
            onednn_runtime_name(v), omp_get_max_threads());
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) != dnnl_success) {
        print_row("layernorm fwd", "all", -1, 0, "not run: cannot create the oneDNN CPU engine");
        print_row("layernorm bwd", "all", -1, 0, "not run: cannot create the oneDNN CPU engine");
        return 1;
    }
    const bcase *cases = quick ? quick_cases : all_cases;
    const size_t nc = quick ? 1 : sizeof all_cases / sizeof all_cases[0];
    char why[160], op[48];
    for (int dt = DT_F32; dt <= DT_F16; dt++) {
        if (!(dts & 1u << dt))
            continue;
        for (size_t i = 0; i < nc; i++)
            run_case(eng, stream, &cases[i], (dtype)dt);
        snprintf(why, sizeof why,
                 "not available: oneDNN %d.%d has no RMSNorm (layer normalization's rms_norm flag "
                 "came in 3.3)",
                 v->major, v->minor);
        snprintf(op, sizeof op, "rmsnorm fwd%s", dt_suffix[dt]);
        print_row(op, "all", -1, 0, why);
        snprintf(op, sizeof op, "rmsnorm bwd%s", dt_suffix[dt]);
        print_row(op, "all", -1, 0, why);
    }
    if (i8) {
        /* keel bench's int8-output rows: x in f32 or bf16 -> int8 y, dynamic or static scale */
#if DNNL_VERSION_MAJOR >= 3
        /* 3.x takes separate src and dst descriptors (an s8 dst with a static scale), but there is
         * no per-row dynamic scale; not timed here */
        snprintf(
            why, sizeof why,
            "not measured: the int8-output layer normalization of oneDNN %d.%d is not timed here",
            v->major, v->minor);
#else
        snprintf(why, sizeof why,
                 "not available: oneDNN %d.%d layer normalization has one data type for src and "
                 "dst (no int8 output)",
                 v->major, v->minor);
#endif
        static const char *const i8_ops[] = {"layernorm fwd %s>i8 dyn",
                                             "layernorm fwd %s>i8 static", "rmsnorm fwd %s>i8 dyn",
                                             "rmsnorm fwd %s>i8 static"};
        for (int in = 0; in < 2; in++)
            for (int k = 0; k < 4; k++) {
                snprintf(op, sizeof op, i8_ops[k], in ? "bf16" : "f32");
                print_row(op, "all", -1, 0, why);
            }
    }
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    return 0;
}
