/*
 * Allocation failure (issue 23, "allocation-failure injection in the repository"): every
 * allocation of every scenario below is made to fail in turn (src/core/alloc.h,
 * keel_alloc_fail_at), and each time
 *   - the call returns KEEL_ENOMEM with keel_last_error() (or the reader's tool_last_error())
 *     not empty;
 *   - it changed nothing: every output byte of an operation (sentinel-filled, in-out
 *     accumulators and BatchNorm's running statistics included), the output pointer of a
 *     constructor, the state of a monitor (its saved baseline, its score, its window);
 *   - the same call again, without injection, on the same context or monitor, succeeds and
 *     gives the bits of an uninjected run on a fresh one;
 * and, under `make test-asan`, LeakSanitizer finds nothing left behind.
 *
 * The scenarios: keel_ctx_create (1 and 2 threads), keel_ctx_set_threads, the setters, every
 * operation of keel.h at float32, bf16 and f16 (BatchNorm: float32 only) as the first call on a
 * fresh context of 1 and of 2 threads (min_parallel 0: the scratch, parameter and staging
 * memory all grow then), the monitor (create, observe, capture, calibrate, score, baseline
 * save and load, per-channel statistics on slot 0 throughout and keel_monitor_channels) and the
 * ONNX protobuf reader (src/cli/onnx_pb.c) on files of tests/data and on a tensor larger than its
 * first read buffer. The trainer's checkpoint and model build are walked by
 * train/test_train_alloc_fail.c (they link keel_train).
 *
 * For each scenario the allocations are counted on one uninjected run first; the test prints
 * the count (the points walked) and fails a scenario that has none where one is expected.
 */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include "alloc.h"
#include "error.h" /* keel_clear_error: a message must come from the call under test */
#include "onnx_pb.h"
#include "test_common.h"

/* ---- the walk ------------------------------------------------------------------------------- */

/* One scenario: setup makes a fresh state (uncounted), run makes the call under test, unchanged
 * says whether a failed run left the state as setup made it, digest appends the bytes a
 * successful run must reproduce, teardown frees the state. */
typedef struct scenario {
    const char *name;
    void (*setup)(void *s);
    keel_status (*run)(void *s);
    int (*unchanged)(void *s);
    size_t (*digest)(void *s, unsigned char *out, size_t cap);
    void (*teardown)(void *s);
    int want_allocs; /* 1: a run must allocate */
} scenario;

enum { DIGEST_CAP = 1 << 20 };
static unsigned char g_ref[DIGEST_CAP], g_got[DIGEST_CAP];
static long g_points, g_scenarios;

/* A message: keel_last_error() from the library, tool_last_error() from the ONNX reader. */
static int has_message(void) { return keel_last_error()[0] || tool_last_error()[0]; }

static void walk(const scenario *sc, void *s)
{
    tool_clear_error();
    sc->setup(s);
    keel_alloc_fail_at(0);
    keel_status st = sc->run(s);
    const long count = keel_alloc_fail_at(-1);
    if (!test_check(st == KEEL_OK, "%s: uninjected run: %s (%s %s)", sc->name, keel_status_str(st),
                    keel_last_error(), tool_last_error())) {
        sc->teardown(s);
        return;
    }
    const size_t nref = sc->digest(s, g_ref, DIGEST_CAP);
    sc->teardown(s);
    test_check(count > 0 || !sc->want_allocs, "%s: no allocation counted", sc->name);
    printf("  %-52s %3ld allocation%s walked\n", sc->name, count, count == 1 ? "" : "s");
    g_points += count;
    g_scenarios++;
    for (long n = 1; n <= count; n++) {
        sc->setup(s);
        tool_clear_error();
        keel_clear_error();
        keel_alloc_fail_at(n);
        st = sc->run(s);
        const long reached = keel_alloc_fail_at(-1);
        int ok = test_check(reached >= n, "%s: allocation %ld of %ld not reached (%ld counted)",
                            sc->name, n, count, reached);
        ok &= test_check(st == KEEL_ENOMEM, "%s: allocation %ld of %ld failed: %s, not KEEL_ENOMEM",
                         sc->name, n, count, keel_status_str(st));
        ok &= test_check(has_message(), "%s: allocation %ld: no error message", sc->name, n);
        ok &= test_check(sc->unchanged(s), "%s: allocation %ld of %ld failed: state changed",
                         sc->name, n, count);
        /* the same call again, on the state the failure left */
        tool_clear_error();
        st = sc->run(s);
        if (test_check(st == KEEL_OK, "%s: rerun after failing allocation %ld: %s (%s %s)",
                       sc->name, n, keel_status_str(st), keel_last_error(), tool_last_error())) {
            const size_t ngot = sc->digest(s, g_got, DIGEST_CAP);
            test_check(ngot == nref && memcmp(g_got, g_ref, nref) == 0,
                       "%s: rerun after failing allocation %ld: different results", sc->name, n);
        }
        sc->teardown(s);
        (void)ok;
    }
}

static size_t put(unsigned char *out, size_t at, size_t cap, const void *p, size_t n)
{
    if (at + n > cap)
        test_fatal("digest buffer too small");
    memcpy(out + at, p, n);
    return at + n;
}

/* ---- contexts ------------------------------------------------------------------------------- */

typedef struct ctx_state {
    int nthreads, new_threads;
    keel_ctx *ctx;
} ctx_state;

#define CTX_SENTINEL ((keel_ctx *)(uintptr_t)0x5a5a5a5a)

static void ctx_setup_empty(void *p) { ((ctx_state *)p)->ctx = CTX_SENTINEL; }
static keel_status ctx_create_run(void *p)
{
    ctx_state *s = p;
    return keel_ctx_create(&s->ctx, s->nthreads);
}
static int ctx_create_unchanged(void *p) { return ((ctx_state *)p)->ctx == CTX_SENTINEL; }
static size_t ctx_digest(void *p, unsigned char *out, size_t cap)
{
    ctx_state *s = p;
    int v[2] = {keel_ctx_threads(s->ctx), (int)keel_ctx_isa(s->ctx)};
    return put(out, 0, cap, v, sizeof v);
}
static void ctx_teardown(void *p)
{
    ctx_state *s = p;
    if (s->ctx != CTX_SENTINEL)
        keel_ctx_destroy(s->ctx);
}

static void ctx_setup_made(void *p)
{
    ctx_state *s = p;
    if (keel_ctx_create(&s->ctx, s->nthreads) != KEEL_OK)
        test_fatal("keel_ctx_create");
}
static keel_status set_threads_run(void *p)
{
    ctx_state *s = p;
    return keel_ctx_set_threads(s->ctx, s->new_threads);
}
static int set_threads_unchanged(void *p)
{
    ctx_state *s = p;
    return keel_ctx_threads(s->ctx) == s->nthreads;
}
static keel_status setters_run(void *p)
{
    ctx_state *s = p;
    keel_status st = keel_ctx_set_isa(s->ctx, KEEL_ISA_AUTO);
    if (st == KEEL_OK)
        st = keel_ctx_set_min_parallel(s->ctx, 0);
    if (st == KEEL_OK)
        st = keel_ctx_set_threads(s->ctx, s->nthreads); /* the same count: nothing to do */
    return st;
}

static void contexts(void)
{
    printf("contexts:\n");
    ctx_state s = {0};
    scenario create = {"keel_ctx_create",
                       ctx_setup_empty,
                       ctx_create_run,
                       ctx_create_unchanged,
                       ctx_digest,
                       ctx_teardown,
                       1};
    for (int t = 1; t <= 2; t++) {
        char name[64];
        snprintf(name, sizeof name, "keel_ctx_create (%d thread%s)", t, t > 1 ? "s" : "");
        create.name = name;
        s.nthreads = t;
        walk(&create, &s);
    }
    scenario grow = {"keel_ctx_set_threads (1 -> 3)",
                     ctx_setup_made,
                     set_threads_run,
                     set_threads_unchanged,
                     ctx_digest,
                     ctx_teardown,
                     1};
    s.nthreads = 1;
    s.new_threads = 3;
    walk(&grow, &s);
    scenario setters = {"keel_ctx_set_isa, _min_parallel, _threads (same)",
                        ctx_setup_made,
                        setters_run,
                        set_threads_unchanged,
                        ctx_digest,
                        ctx_teardown,
                        0};
    walk(&setters, &s);
}

/* ---- operations ----------------------------------------------------------------------------- */

enum { R = 24, D = 72, RD = R * D, V = D > R ? D : R };

typedef struct inputs {
    float x[RD], dy[RD], r[RD], dh[RD];
    uint16_t lp[2][4][RD]; /* bf16 and f16 copies of x, dy, r, dh */
    float gamma[D], beta[D], lambda[D], bias[D], smooth[D];
} inputs;

/* Everything an operation may write: three row tensors (any dtype), four vectors (rows or dim
 * floats), BatchNorm's batch count. Sentinel-filled before each call, so in-out buffers
 * (accumulated gradients, running statistics) start from the same finite bits. */
typedef struct op_out {
    float t[3][RD];
    float v[4][V];
    int64_t nbt;
} op_out;

enum {
    OP_LN_FWD,
    OP_LN_BWD,
    OP_RMS_FWD,
    OP_RMS_BWD,
    OP_LN_FWD_I8,
    OP_RMS_FWD_I8,
    OP_ADD_LN_FWD,
    OP_ADD_RMS_FWD,
    OP_ADD_LN_BWD,
    OP_ADD_RMS_BWD,
    OP_LS_FWD,
    OP_LS_BWD,
    OP_BN_FWD,
    OP_BN_FWD_RUN,
    OP_BN_BWD,
    OP_DYT_FWD,
    OP_DYT_BWD,
    N_OPS
};
static const char *const op_names[N_OPS] = {"keel_layernorm_fwd",
                                            "keel_layernorm_bwd",
                                            "keel_rmsnorm_fwd",
                                            "keel_rmsnorm_bwd",
                                            "keel_layernorm_fwd_i8",
                                            "keel_rmsnorm_fwd_i8",
                                            "keel_add_layernorm_fwd",
                                            "keel_add_rmsnorm_fwd",
                                            "keel_add_layernorm_bwd",
                                            "keel_add_rmsnorm_bwd",
                                            "keel_layerscale_fwd",
                                            "keel_layerscale_bwd",
                                            "keel_batchnorm_fwd",
                                            "keel_batchnorm_fwd (running)",
                                            "keel_batchnorm_bwd",
                                            "keel_dyt_fwd",
                                            "keel_dyt_bwd"};

static inputs g_in;

static void make_inputs(keel_rng *rng)
{
    inputs *in = &g_in;
    float *src[4] = {in->x, in->dy, in->r, in->dh};
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < RD; i++) {
            src[k][i] = (float)keel_rng_normal(rng);
            uint32_t bits;
            memcpy(&bits, &src[k][i], sizeof bits);
            in->lp[0][k][i] = (uint16_t)(bits >> 16);
            /* a finite f16: sign, exponent 10..20 (2^-5 .. 2^5), any fraction */
            in->lp[1][k][i] =
                (uint16_t)((keel_rng_below(rng, 2) << 15) | ((10 + keel_rng_below(rng, 11)) << 10) |
                           keel_rng_below(rng, 1024));
        }
    for (size_t j = 0; j < D; j++) {
        in->gamma[j] = (float)keel_rng_range(rng, 0.5, 1.5);
        in->beta[j] = (float)keel_rng_normal(rng);
        in->lambda[j] = (float)keel_rng_range(rng, 0.05, 0.2);
        in->bias[j] = (float)keel_rng_normal(rng) * 0.1f;
        in->smooth[j] = (float)keel_rng_range(rng, 0.5, 2.0);
    }
}

/* Input k (0 x, 1 dy, 2 r, 3 dh) in dtype dt. */
static keel_tensor in_t(int k, keel_dtype dt)
{
    const float *f[4] = {g_in.x, g_in.dy, g_in.r, g_in.dh};
    if (dt == KEEL_F32)
        return keel_f32(f[k], D);
    keel_tensor t = {(void *)(uintptr_t)g_in.lp[dt == KEEL_BF16 ? 0 : 1][k], dt, D};
    return t;
}
static keel_tensor out_t(op_out *o, int i, keel_dtype dt)
{
    keel_tensor t = {o->t[i], dt, D};
    return t;
}

static keel_status call_op(keel_ctx *ctx, int k, keel_dtype dt, op_out *o)
{
    const inputs *in = &g_in;
    const float eps = 1e-5f;
    const unsigned acc = KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS;
    keel_tensor x = in_t(0, dt), dy = in_t(1, dt), r = in_t(2, dt), dh = in_t(3, dt);
    keel_tensor t0 = out_t(o, 0, dt), t1 = out_t(o, 1, dt);
    float *v0 = o->v[0], *v1 = o->v[1], *v2 = o->v[2], *v3 = o->v[3];
    keel_residual res = {x, r, 1.5f, in->lambda, in->bias};
    switch (k) {
    case OP_LN_FWD:
        return keel_layernorm_fwd(ctx, R, D, x, t0, in->gamma, in->beta, eps, v0, v1, 0);
    case OP_LN_BWD: /* accumulating: dx, dgamma, dbeta are in-out */
        return keel_layernorm_bwd(ctx, R, D, dy, x, NULL, NULL, in->gamma, eps, t0, v0, v1, acc);
    case OP_RMS_FWD:
        return keel_rmsnorm_fwd(ctx, R, D, x, t0, in->gamma, eps, v0, 0);
    case OP_RMS_BWD:
        return keel_rmsnorm_bwd(ctx, R, D, dy, x, NULL, in->gamma, eps, t0, v0,
                                KEEL_FLAG_GAMMA_PLUS_ONE);
    case OP_LN_FWD_I8: {
        keel_quant_i8 q = {0.0f, v2, in->smooth};
        return keel_layernorm_fwd_i8(ctx, R, D, x, out_t(o, 0, KEEL_I8), in->gamma, in->beta, eps,
                                     &q, v0, v1, 0);
    }
    case OP_RMS_FWD_I8: {
        keel_quant_i8 q = {0.05f, NULL, in->smooth};
        return keel_rmsnorm_fwd_i8(ctx, R, D, x, out_t(o, 0, KEEL_I8), in->gamma, eps, &q, v0, 0);
    }
    case OP_ADD_LN_FWD:
        return keel_add_layernorm_fwd(ctx, R, D, &res, t0, t1, in->gamma, in->beta, eps, v0, v1, 0);
    case OP_ADD_RMS_FWD:
        return keel_add_rmsnorm_fwd(ctx, R, D, &res, t0, t1, in->gamma, eps, v0,
                                    KEEL_FLAG_GAMMA_PLUS_ONE);
    case OP_ADD_LN_BWD: {
        keel_residual_grads g = {t0, t1, v2, v3};
        return keel_add_layernorm_bwd(ctx, R, D, dy, dh, &res, keel_none(), NULL, NULL, in->gamma,
                                      eps, &g, v0, v1, acc);
    }
    case OP_ADD_RMS_BWD: {
        keel_residual_grads g = {t0, t1, v2, v3};
        return keel_add_rmsnorm_bwd(ctx, R, D, dy, dh, &res, keel_none(), NULL, in->gamma, eps, &g,
                                    v0, 0);
    }
    case OP_LS_FWD:
        return keel_layerscale_fwd(ctx, R, D, x, r, in->lambda, t0, 0);
    case OP_LS_BWD:
        return keel_layerscale_bwd(ctx, R, D, dh, r, in->lambda, t0, t1, v0, acc);
    case OP_BN_FWD:
        return keel_batchnorm_fwd(ctx, R, D, x, t0, in->gamma, in->beta, eps, 1, 0.1f, NULL, NULL,
                                  NULL, v0, v1, 0);
    case OP_BN_FWD_RUN: /* running statistics and the batch count are in-out */
        o->nbt = 3;
        return keel_batchnorm_fwd(ctx, R, D, x, t0, in->gamma, in->beta, eps, 1, 0.1f, v2, v3,
                                  &o->nbt, v0, v1, 0);
    case OP_BN_BWD:
        return keel_batchnorm_bwd(ctx, R, D, dy, x, NULL, NULL, in->gamma, eps, 1, t0, v0, v1, 0);
    case OP_DYT_FWD:
        return keel_dyt_fwd(ctx, R, D, x, t0, 0.7f, in->gamma, in->beta, 0);
    case OP_DYT_BWD:
        return keel_dyt_bwd(ctx, R, D, dy, x, 0.7f, in->gamma, t0, v2, v0, v1, acc);
    }
    return KEEL_EINVAL;
}

typedef struct op_state {
    int op, nthreads;
    keel_dtype dt;
    keel_ctx *ctx;
    op_out out, before;
} op_state;

static void op_setup(void *p)
{
    op_state *s = p;
    if (keel_ctx_create(&s->ctx, s->nthreads) != KEEL_OK ||
        keel_ctx_set_min_parallel(s->ctx, 0) != KEEL_OK)
        test_fatal("keel_ctx_create");
    test_fill_sentinel((float *)&s->out, sizeof s->out / sizeof(float));
    if (s->op == OP_BN_FWD_RUN) /* a batch count the call may increment */
        s->out.nbt = 3;
    s->before = s->out;
}
static keel_status op_run(void *p)
{
    op_state *s = p;
    return call_op(s->ctx, s->op, s->dt, &s->out);
}
static int op_unchanged(void *p)
{
    op_state *s = p;
    return memcmp(&s->out, &s->before, sizeof s->out) == 0;
}
static size_t op_digest(void *p, unsigned char *out, size_t cap)
{
    return put(out, 0, cap, &((op_state *)p)->out, sizeof(op_out));
}
static void op_teardown(void *p) { keel_ctx_destroy(((op_state *)p)->ctx); }

static void operations(void)
{
    static op_state s;
    const keel_dtype dts[3] = {KEEL_F32, KEEL_BF16, KEEL_F16};
    for (int t = 1; t <= 2; t++)
        for (int d = 0; d < 3; d++) {
            printf("operations, %s, first call on a fresh %d-thread context:\n",
                   keel_dtype_name(dts[d]), t);
            for (int k = 0; k < N_OPS; k++) {
                const int bn = k == OP_BN_FWD || k == OP_BN_FWD_RUN || k == OP_BN_BWD;
                if (bn && dts[d] != KEEL_F32)
                    continue; /* BatchNorm's tensors are float32 only (keel.h) */
                char name[96];
                snprintf(name, sizeof name, "%s %s %dt", op_names[k], keel_dtype_name(dts[d]), t);
                scenario sc = {name, op_setup, op_run, op_unchanged, op_digest, op_teardown, 0};
                s.op = k;
                s.dt = dts[d];
                s.nthreads = t;
                walk(&sc, &s);
            }
        }
}

/* ---- the monitor ---------------------------------------------------------------------------- */

enum { MON_SLOTS = 3, MON_ROWS = 40, MON_WIDTH = 6 };

typedef struct mon_state {
    int which;
    keel_monitor *mon, *src;
    unsigned char before[DIGEST_CAP / 4];
    size_t nbefore;
    char path[256], out_path[256];
    keel_rng rng;
} mon_state;

enum {
    M_CREATE,
    M_OBSERVE,
    M_FIT,
    M_CAPTURE,
    M_CAL_ADD,
    M_CAL_FINISH,
    M_SCORE,
    M_SCORE_SLOTS,
    M_MERGE,
    M_SAVE,
    M_LOAD,
    M_CHANNELS,
    N_MON
};
static const char *const mon_names[N_MON] = {
    "keel_monitor_create",        "keel_monitor_observe",
    "keel_monitor_fit_ranges",    "keel_monitor_capture_baseline",
    "keel_monitor_calibrate_add", "keel_monitor_calibrate_finish (recalibrating)",
    "keel_monitor_score",         "keel_monitor_score (slots)",
    "keel_monitor_merge",         "keel_monitor_baseline_save",
    "keel_monitor_baseline_load", "keel_monitor_channels"};

#define MON_SENTINEL ((keel_monitor *)(uintptr_t)0x5a5a5a5a)

/* One window: every slot gets rows tokens of LayerNorm statistics (slot 2: RMSNorm's). */
static void mon_window(keel_monitor *m, keel_rng *rng, double shift, int rows)
{
    float mean[MON_ROWS * 2], rstd[MON_ROWS * 2];
    for (int l = 0; l < MON_SLOTS; l++) {
        for (int i = 0; i < rows; i++) {
            mean[i] = (float)(shift + 0.1 * keel_rng_normal(rng));
            rstd[i] = (float)(1.0 + 0.05 * keel_rng_normal(rng) + shift);
        }
        if (keel_monitor_observe(m, l, (size_t)rows, l == 2 ? NULL : mean, rstd) != KEEL_OK)
            test_fatal(keel_last_error());
    }
    if (keel_monitor_channel_width(m, 0) == MON_WIDTH) { /* slot 0's input features */
        float x[MON_ROWS * 2 * MON_WIDTH];
        for (int i = 0; i < rows * MON_WIDTH; i++)
            x[i] = (float)(shift + keel_rng_normal(rng));
        if (keel_monitor_observe_channels(m, 0, (size_t)rows, x, MON_WIDTH) != KEEL_OK)
            test_fatal(keel_last_error());
    }
}

static void must_ok(keel_status st)
{
    if (st != KEEL_OK)
        test_fatal(keel_last_error());
}

/* A monitor with ranges, a baseline and one calibration (two window sizes, three each). */
static keel_monitor *mon_calibrated(keel_rng *rng)
{
    keel_monitor *m;
    keel_monitor_config cfg = {8, 0};
    must_ok(keel_monitor_create(&m, MON_SLOTS, &cfg));
    must_ok(keel_monitor_channels(m, 0, MON_WIDTH)); /* so save, load, merge, score walk them */
    mon_window(m, rng, 0, MON_ROWS);
    must_ok(keel_monitor_fit_ranges(m));
    mon_window(m, rng, 0, MON_ROWS * 2);
    must_ok(keel_monitor_capture_baseline(m));
    for (int w = 0; w < 6; w++) {
        mon_window(m, rng, 0, w % 2 ? MON_ROWS : MON_ROWS / 2);
        must_ok(keel_monitor_calibrate_add(m));
    }
    must_ok(keel_monitor_calibrate_finish(m, 0.2));
    return m;
}

/* What can be seen of a monitor: its saved baseline file (when it has one), its score and its
 * window's moments. Read outside the injection window. */
static size_t mon_observable(keel_monitor *m, const char *path, unsigned char *out, size_t cap)
{
    size_t at = 0;
    unlink(path);
    if (keel_monitor_baseline_save(m, path) == KEEL_OK) {
        FILE *f = fopen(path, "rb");
        if (!f)
            test_fatal("cannot read back a baseline");
        unsigned char buf[4096];
        size_t got;
        while ((got = fread(buf, 1, sizeof buf, f)) > 0)
            at = put(out, at, cap, buf, got);
        fclose(f);
        unlink(path);
    }
    keel_monitor_slot_score slots[MON_SLOTS];
    keel_monitor_result res;
    memset(slots, 0, sizeof slots);
    memset(&res, 0, sizeof res);
    keel_status st = keel_monitor_score(m, slots, &res);
    at = put(out, at, cap, &st, sizeof st);
    if (st == KEEL_OK) {
        at = put(out, at, cap, slots, sizeof slots);
        at = put(out, at, cap, &res, sizeof res);
    }
    for (int l = 0; l < keel_monitor_slots(m); l++)
        for (int stat = 0; stat < 2; stat++) {
            double mo[3] = {0, 0, 0};
            keel_monitor_window_moments(m, l, stat, &mo[0], &mo[1], &mo[2]);
            at = put(out, at, cap, mo, sizeof mo);
        }
    for (int l = 0; l < keel_monitor_slots(m); l++) { /* per-channel: widths and window moments */
        int w = keel_monitor_channel_width(m, l);
        at = put(out, at, cap, &w, sizeof w);
        double cnt = 0, mu[MON_WIDTH] = {0}, var[MON_WIDTH] = {0};
        if (w == MON_WIDTH &&
            keel_monitor_channel_moments(m, l, 0, &cnt, mu, var, NULL) == KEEL_OK) {
            at = put(out, at, cap, &cnt, sizeof cnt);
            at = put(out, at, cap, mu, sizeof mu);
            at = put(out, at, cap, var, sizeof var);
        }
    }
    return at;
}

static char g_baseline_path[256];

static void mon_setup(void *p)
{
    mon_state *s = p;
    keel_rng_seed(&s->rng, 99);
    s->mon = s->src = NULL;
    switch (s->which) {
    case M_CREATE:
    case M_LOAD:
        s->mon = MON_SENTINEL;
        return;
    case M_OBSERVE:
    case M_FIT:
    case M_CHANNELS: {
        keel_monitor_config cfg = {8, 0};
        must_ok(keel_monitor_create(&s->mon, MON_SLOTS, &cfg));
        if (s->which == M_FIT)
            mon_window(s->mon, &s->rng, 0, MON_ROWS);
        break;
    }
    case M_CAPTURE:
    case M_CAL_ADD: { /* the first window added allocates the calibration arrays */
        keel_monitor_config cfg = {8, 0};
        must_ok(keel_monitor_create(&s->mon, MON_SLOTS, &cfg));
        must_ok(keel_monitor_channels(s->mon, 0, MON_WIDTH));
        mon_window(s->mon, &s->rng, 0, MON_ROWS);
        must_ok(keel_monitor_fit_ranges(s->mon));
        mon_window(s->mon, &s->rng, 0, MON_ROWS);
        if (s->which == M_CAL_ADD) {
            must_ok(keel_monitor_capture_baseline(s->mon));
            mon_window(s->mon, &s->rng, 0, MON_ROWS);
        }
        break;
    }
    case M_CAL_FINISH: /* a second calibration over the first: the old one must survive a failure */
        s->mon = mon_calibrated(&s->rng);
        for (int w = 0; w < 6; w++) {
            mon_window(s->mon, &s->rng, 0.01, w % 3 ? MON_ROWS : MON_ROWS / 4);
            must_ok(keel_monitor_calibrate_add(s->mon));
        }
        mon_window(s->mon, &s->rng, 0.3, MON_ROWS); /* a window to score */
        break;
    case M_SCORE:
    case M_SCORE_SLOTS:
    case M_MERGE:
    case M_SAVE:
        s->mon = mon_calibrated(&s->rng);
        mon_window(s->mon, &s->rng, 0.3, MON_ROWS);
        if (s->which == M_MERGE) { /* the same ranges as mon's (merge requires them) */
            keel_rng same;
            keel_rng_seed(&same, 99);
            s->src = mon_calibrated(&same);
            mon_window(s->src, &s->rng, 0.1, MON_ROWS);
        }
        break;
    }
    s->nbefore = mon_observable(s->mon, s->path, s->before, sizeof s->before);
    unlink(s->out_path);
}

static keel_status mon_run(void *p)
{
    mon_state *s = p;
    keel_rng rng;
    keel_rng_seed(&rng, 5);
    switch (s->which) {
    case M_CREATE: {
        keel_monitor_config cfg = {8, 0};
        return keel_monitor_create(&s->mon, MON_SLOTS, &cfg);
    }
    case M_OBSERVE: {
        float mean[MON_ROWS], rstd[MON_ROWS];
        for (int i = 0; i < MON_ROWS; i++) {
            mean[i] = (float)keel_rng_normal(&rng);
            rstd[i] = (float)(1.0 + 0.1 * keel_rng_uniform(&rng));
        }
        return keel_monitor_observe(s->mon, 0, MON_ROWS, mean, rstd);
    }
    case M_FIT:
        return keel_monitor_fit_ranges(s->mon);
    case M_CAPTURE:
        return keel_monitor_capture_baseline(s->mon);
    case M_CAL_ADD:
        return keel_monitor_calibrate_add(s->mon);
    case M_CAL_FINISH:
        return keel_monitor_calibrate_finish(s->mon, 0.1);
    case M_SCORE:
    case M_SCORE_SLOTS: {
        keel_monitor_slot_score slots[MON_SLOTS];
        keel_monitor_result res;
        return keel_monitor_score(s->mon, s->which == M_SCORE ? NULL : slots, &res);
    }
    case M_MERGE:
        return keel_monitor_merge(s->mon, s->src);
    case M_SAVE:
        return keel_monitor_baseline_save(s->mon, s->out_path);
    case M_LOAD:
        return keel_monitor_baseline_load(&s->mon, g_baseline_path);
    case M_CHANNELS:
        return keel_monitor_channels(s->mon, 1, MON_WIDTH);
    }
    return KEEL_EINVAL;
}

static int mon_unchanged(void *p)
{
    mon_state *s = p;
    if (s->which == M_CREATE || s->which == M_LOAD)
        return s->mon == MON_SENTINEL;
    if (s->which == M_SAVE && access(s->out_path, F_OK) == 0)
        return 0; /* a failed save leaves no file (nor its .tmp: checked below) */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", s->out_path);
    if (access(tmp, F_OK) == 0)
        return 0;
    unsigned char now[sizeof s->before];
    size_t n = mon_observable(s->mon, s->path, now, sizeof now);
    return n == s->nbefore && memcmp(now, s->before, n) == 0;
}

static size_t mon_digest(void *p, unsigned char *out, size_t cap)
{
    mon_state *s = p;
    size_t at = mon_observable(s->mon, s->path, out, cap);
    if (s->which == M_SAVE) { /* and the file the save wrote */
        FILE *f = fopen(s->out_path, "rb");
        if (!f)
            test_fatal("the saved baseline is missing");
        unsigned char buf[4096];
        size_t got;
        while ((got = fread(buf, 1, sizeof buf, f)) > 0)
            at = put(out, at, cap, buf, got);
        fclose(f);
        unlink(s->out_path);
    }
    return at;
}

static void mon_teardown(void *p)
{
    mon_state *s = p;
    if (s->mon != MON_SENTINEL)
        keel_monitor_destroy(s->mon);
    keel_monitor_destroy(s->src);
    s->mon = s->src = NULL;
    unlink(s->out_path);
}

static void monitor(void)
{
    printf("monitor:\n");
    static mon_state s;
    snprintf(s.path, sizeof s.path, "test_alloc_fail.%ld.digest.kmon", (long)getpid());
    snprintf(s.out_path, sizeof s.out_path, "test_alloc_fail.%ld.out.kmon", (long)getpid());
    snprintf(g_baseline_path, sizeof g_baseline_path, "test_alloc_fail.%ld.kmon", (long)getpid());
    keel_rng rng;
    keel_rng_seed(&rng, 7);
    keel_monitor *m = mon_calibrated(&rng);
    must_ok(keel_monitor_baseline_save(m, g_baseline_path));
    keel_monitor_destroy(m);
    const int allocates[N_MON] = {
        [M_CREATE] = 1,      [M_CAL_ADD] = 1, [M_CAL_FINISH] = 1, [M_SCORE] = 1,
        [M_SCORE_SLOTS] = 1, [M_SAVE] = 1,    [M_LOAD] = 1,       [M_CHANNELS] = 1};
    for (int k = 0; k < N_MON; k++) {
        scenario sc = {mon_names[k], mon_setup,    mon_run,     mon_unchanged,
                       mon_digest,   mon_teardown, allocates[k]};
        s.which = k;
        walk(&sc, &s);
    }
    unlink(g_baseline_path);
}

/* ---- the ONNX protobuf reader (src/cli/onnx_pb.c) ------------------------------------------- */

typedef struct onnx_state {
    const char *path;
    int model; /* 1: a ModelProto, 0: a TensorProto */
    keel_onnx_tensor t;
    keel_onnx_model m;
} onnx_state;

static void onnx_setup(void *p)
{
    onnx_state *s = p;
    memset(&s->t, 0x5a, sizeof s->t);
    memset(&s->m, 0x5a, sizeof s->m);
}
static keel_status onnx_run(void *p)
{
    onnx_state *s = p;
    return s->model ? keel_onnx_model_load(s->path, &s->m)
                    : keel_onnx_tensor_load(s->path, &s->t);
}
/* onnx_pb.h: a tensor reader that fails leaves *t empty (data NULL). */
static int onnx_unchanged(void *p)
{
    onnx_state *s = p;
    return s->model || s->t.data == NULL;
}
static size_t onnx_digest(void *p, unsigned char *out, size_t cap)
{
    onnx_state *s = p;
    if (s->model)
        return put(out, 0, cap, &s->m, sizeof s->m);
    size_t at = put(out, 0, cap, s->t.name, sizeof s->t.name);
    at = put(out, at, cap, &s->t.ndims, sizeof s->t.ndims);
    at = put(out, at, cap, s->t.dims, sizeof s->t.dims);
    at = put(out, at, cap, &s->t.count, sizeof s->t.count);
    return put(out, at, cap, s->t.data, s->t.count * sizeof(float));
}
static void onnx_teardown(void *p)
{
    onnx_state *s = p;
    if (!s->model && s->t.data != (float *)(uintptr_t)0x5a5a5a5a5a5a5a5aULL)
        keel_onnx_tensor_free(&s->t);
}

/* A FLOAT TensorProto of n values in raw_data: larger than the reader's first 4096-byte buffer,
 * so that its growth is walked too. */
static void write_big_tensor(const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        test_fatal("cannot write the tensor file");
    unsigned char head[32];
    size_t h = 0, bytes = n * sizeof(float);
    head[h++] = 0x08; /* dims: field 1, varint */
    for (size_t v = n;; v >>= 7) {
        head[h++] = (unsigned char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    head[h++] = 0x10; /* data_type: field 2, varint, FLOAT */
    head[h++] = 1;
    head[h++] = 0x4a; /* raw_data: field 9, length-delimited */
    for (size_t v = bytes;; v >>= 7) {
        head[h++] = (unsigned char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    fwrite(head, 1, h, f);
    for (size_t i = 0; i < n; i++) {
        float v = (float)i * 0.25f;
        fwrite(&v, sizeof v, 1, f);
    }
    fclose(f);
}

static void onnx_reader(void)
{
    printf("ONNX protobuf reader:\n");
    static onnx_state s;
    char big[256];
    snprintf(big, sizeof big, "test_alloc_fail.%ld.big.pb", (long)getpid());
    write_big_tensor(big, 5000); /* 20 KB: the 4 KiB buffer doubles three times */
    const char *dir = KEEL_SOURCE_DIR "/tests/data/onnx/test_layer_normalization_2d_axis0";
    char model[512], input[512];
    snprintf(model, sizeof model, "%s/model.onnx", dir);
    snprintf(input, sizeof input, "%s/test_data_set_0/input_0.pb", dir);
    struct {
        const char *name, *path;
        int model;
    } cases[3] = {{"keel_onnx_model_load (model.onnx)", model, 1},
                  {"keel_onnx_tensor_load (input_0.pb)", input, 0},
                  {"keel_onnx_tensor_load (5000 floats, 20 KB)", big, 0}};
    for (int c = 0; c < 3; c++) {
        scenario sc = {cases[c].name, onnx_setup,    onnx_run, onnx_unchanged,
                       onnx_digest,   onnx_teardown, 1};
        s.path = cases[c].path;
        s.model = cases[c].model;
        walk(&sc, &s);
    }
    unlink(big);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_alloc_fail"));
    make_inputs(&rng);
    if (keel_alloc_fail_at(-1) != 0)
        test_fatal("allocations were counted before the test asked");
    contexts();
    operations();
    monitor();
    onnx_reader();
    printf("%ld scenarios, %ld allocation points walked, each failing KEEL_ENOMEM with nothing "
           "changed and no leak\n",
           g_scenarios, g_points);
    return test_finish();
}
