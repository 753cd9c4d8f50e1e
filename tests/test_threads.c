/*
 * Contexts and threads (keel.h: "One context may be used from one thread at a time; separate
 * contexts may be used from many threads at once"), the checks `make test-tsan` runs under
 * ThreadSanitizer (and ctest runs as a plain test):
 *
 *  1. separate contexts on several threads at once, each with its own pool;
 *  2. one context handed from thread to thread: threads started one after another, then two
 *     threads taking turns under a mutex;
 *  3. the pool under load: more pool threads than cores, every call spread over all of them
 *     (min_parallel 0), the thread count and the instruction-set path changed between calls;
 *  4. the misuse the rule forbids, one context in two calls at once (issue 23, finding 8: it
 *     raced and then segfaulted), which now returns KEEL_EBUSY: every operation and setter,
 *     while another thread holds the context, returns KEEL_EBUSY naming itself and writes
 *     nothing; two threads calling on one context at once each get either the right bits or
 *     KEEL_EBUSY with their outputs untouched; and two threads that share a context by retrying
 *     on KEEL_EBUSY get the right bits every time (the flag orders their calls);
 *  5. keel_ctx_run, a caller's own work on the context's threads: every index once, on
 *     distinct threads, index 0 on the caller, a nested call KEEL_EBUSY, bad arguments refused.
 *
 * Every operation of keel.h runs (f32, bf16, f16 and int8 tensors, so the staging memory, the
 * parameter memory and the gradient partials of the context are all in play), and every
 * result is compared bitwise with a one-thread reference: results never depend on the thread
 * count. Worker threads only record; the main thread checks (the test counters are not
 * thread-safe).
 *
 * KEEL_TEST_THREADS_ROUNDS sets the repetitions (default 4; 1 in the quick sweep of the
 * sanitizer runs, test_common.h).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>

#include "ctx.h" /* keel_ctx_enter / keel_ctx_leave: another thread "in a call", on demand */
#include "test_common.h"

enum { R = 48, D = 200, RD = R * D, V = D > R ? D : R, NT = 4 /* threads of tests 1 and 4 */ };

/* ---- the inputs (shared, read only) and one set of outputs per thread ------------------------ */

typedef struct inputs {
    float x[RD], dy[RD], r[RD], dh[RD];
    uint16_t x_bf16[RD], dy_f16[RD];
    float gamma[D], beta[D], lambda[D], bias[D], smooth[D];
} inputs;

/* The outputs of one operation: up to three row tensors (bytes of any dtype) and four short
 * vectors (rows or dim floats). Compared and checked as bytes. */
typedef struct op_out {
    float t[3][RD];
    float v[4][V];
} op_out;

enum {
    OP_LN_FWD, OP_LN_BWD, OP_RMS_FWD_BF16, OP_RMS_BWD_F16, OP_LN_FWD_I8, OP_RMS_FWD_I8,
    OP_ADD_LN_FWD, OP_ADD_RMS_FWD, OP_ADD_LN_BWD, OP_ADD_RMS_BWD, OP_LS_FWD, OP_LS_BWD,
    OP_BN_FWD, OP_BN_BWD, OP_DYT_FWD, OP_DYT_BWD, OP_SET_THREADS, OP_SET_MIN_PARALLEL,
    OP_SET_ISA, N_CALLS,
    N_OPS = OP_SET_THREADS /* the operations; the calls after them change the context */
};

static const char *const call_names[N_CALLS] = {
    "keel_layernorm_fwd",     "keel_layernorm_bwd",     "keel_rmsnorm_fwd",
    "keel_rmsnorm_bwd",       "keel_layernorm_fwd_i8",  "keel_rmsnorm_fwd_i8",
    "keel_add_layernorm_fwd", "keel_add_rmsnorm_fwd",   "keel_add_layernorm_bwd",
    "keel_add_rmsnorm_bwd",   "keel_layerscale_fwd",    "keel_layerscale_bwd",
    "keel_batchnorm_fwd",     "keel_batchnorm_bwd",     "keel_dyt_fwd",
    "keel_dyt_bwd",           "keel_ctx_set_threads",   "keel_ctx_set_min_parallel",
    "keel_ctx_set_isa"};

typedef struct outputs {
    op_out op[N_OPS];
} outputs;

static keel_tensor t_of(void *p, keel_dtype dtype)
{
    keel_tensor t = {p, dtype, D};
    return t;
}

static void make_inputs(inputs *in, keel_rng *rng)
{
    for (size_t i = 0; i < RD; i++) {
        in->x[i] = (float)keel_rng_normal(rng);
        in->dy[i] = (float)keel_rng_normal(rng);
        in->r[i] = (float)keel_rng_normal(rng);
        in->dh[i] = (float)keel_rng_normal(rng);
        uint32_t bits;
        memcpy(&bits, &in->x[i], sizeof bits);
        in->x_bf16[i] = (uint16_t)(bits >> 16);
        /* a finite f16: sign, exponent 10..20 (2^-5 .. 2^5), any fraction */
        in->dy_f16[i] = (uint16_t)((keel_rng_below(rng, 2) << 15) | ((10 + keel_rng_below(rng, 11)) << 10) |
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

/* Call k on ctx with inputs in, into o (the setters change nothing that results depend on). */
static keel_status call(keel_ctx *ctx, int k, const inputs *in, op_out *o)
{
    const float eps = 1e-5f;
    keel_tensor x = keel_f32(in->x, D), dy = keel_f32(in->dy, D), r = keel_f32(in->r, D);
    keel_tensor dh = keel_f32(in->dh, D);
    keel_tensor t0 = t_of(o->t[0], KEEL_F32), t1 = t_of(o->t[1], KEEL_F32);
    float *v0 = o->v[0], *v1 = o->v[1], *v2 = o->v[2], *v3 = o->v[3];
    keel_residual res = {x, r, 1.5f, in->lambda, in->bias};
    switch (k) {
    case OP_LN_FWD:
        return keel_layernorm_fwd(ctx, R, D, x, t0, in->gamma, in->beta, eps, v0, v1, 0);
    case OP_LN_BWD:
        return keel_layernorm_bwd(ctx, R, D, dy, x, NULL, NULL, in->gamma, eps, t0, v0, v1, 0);
    case OP_RMS_FWD_BF16:
        return keel_rmsnorm_fwd(ctx, R, D, t_of((void *)(uintptr_t)in->x_bf16, KEEL_BF16),
                                t_of(o->t[0], KEEL_BF16), in->gamma, eps, v0, 0);
    case OP_RMS_BWD_F16:
        return keel_rmsnorm_bwd(ctx, R, D, t_of((void *)(uintptr_t)in->dy_f16, KEEL_F16), x, NULL,
                                in->gamma, eps, t_of(o->t[0], KEEL_F16), v0, KEEL_FLAG_GAMMA_PLUS_ONE);
    case OP_LN_FWD_I8: {
        keel_quant_i8 q = {0.0f, v2, in->smooth};
        return keel_layernorm_fwd_i8(ctx, R, D, x, t_of(o->t[0], KEEL_I8), in->gamma, in->beta, eps, &q,
                                     v0, v1, 0);
    }
    case OP_RMS_FWD_I8: {
        keel_quant_i8 q = {0.05f, NULL, NULL};
        return keel_rmsnorm_fwd_i8(ctx, R, D, x, t_of(o->t[0], KEEL_I8), in->gamma, eps, &q, v0, 0);
    }
    case OP_ADD_LN_FWD:
        return keel_add_layernorm_fwd(ctx, R, D, &res, t0, t1, in->gamma, in->beta, eps, v0, v1, 0);
    case OP_ADD_RMS_FWD:
        return keel_add_rmsnorm_fwd(ctx, R, D, &res, t0, t1, in->gamma, eps, v0, KEEL_FLAG_GAMMA_PLUS_ONE);
    case OP_ADD_LN_BWD: {
        keel_residual_grads g = {t0, t1, v2, v3};
        return keel_add_layernorm_bwd(ctx, R, D, dy, dh, &res, keel_none(), NULL, NULL, in->gamma, eps,
                                      &g, v0, v1, 0);
    }
    case OP_ADD_RMS_BWD: {
        keel_residual_grads g = {t0, t1, v2, v3};
        return keel_add_rmsnorm_bwd(ctx, R, D, dy, dh, &res, keel_none(), NULL, in->gamma, eps, &g, v0, 0);
    }
    case OP_LS_FWD:
        return keel_layerscale_fwd(ctx, R, D, x, r, in->lambda, t0, 0);
    case OP_LS_BWD:
        return keel_layerscale_bwd(ctx, R, D, dh, r, in->lambda, t0, t1, v0, 0);
    case OP_BN_FWD:
        return keel_batchnorm_fwd(ctx, R, D, x, t0, in->gamma, in->beta, eps, 1, 0.1f, NULL, NULL, NULL,
                                  v0, v1, 0);
    case OP_BN_BWD:
        return keel_batchnorm_bwd(ctx, R, D, dy, x, NULL, NULL, in->gamma, eps, 1, t0, v0, v1, 0);
    case OP_DYT_FWD:
        return keel_dyt_fwd(ctx, R, D, x, t0, 0.7f, in->gamma, in->beta, 0);
    case OP_DYT_BWD:
        return keel_dyt_bwd(ctx, R, D, dy, x, 0.7f, in->gamma, t0, v2, v0, v1, 0);
    case OP_SET_THREADS:
        return keel_ctx_set_threads(ctx, keel_ctx_threads(ctx));
    case OP_SET_MIN_PARALLEL:
        return keel_ctx_set_min_parallel(ctx, keel_ctx_min_parallel(ctx));
    case OP_SET_ISA:
        return keel_ctx_set_isa(ctx, keel_ctx_isa(ctx));
    }
    return KEEL_EINVAL;
}

enum { OUT_FLOATS = sizeof(op_out) / sizeof(float) };

static void fill_sentinel(op_out *o) { test_fill_sentinel((float *)o, OUT_FLOATS); }
static int untouched(const op_out *o) { return test_first_written((const float *)o, OUT_FLOATS) == OUT_FLOATS; }
static int same_out(const op_out *a, const op_out *b) { return memcmp(a, b, sizeof *a) == 0; }

/* Every operation into o (sentinels first, so unwritten bytes compare too). */
static keel_status run_all(keel_ctx *ctx, const inputs *in, outputs *o)
{
    for (int k = 0; k < N_OPS; k++) {
        fill_sentinel(&o->op[k]);
        keel_status st = call(ctx, k, in, &o->op[k]);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

static const inputs *g_in;
static const outputs *g_ref;
static int rounds;

static outputs *new_outputs(void)
{
    outputs *o = malloc(sizeof *o);
    if (!o)
        test_fatal("out of memory");
    return o;
}

/* The first operation whose outputs differ from the reference, or -1. */
static int first_diff_op(const outputs *o)
{
    for (int k = 0; k < N_OPS; k++)
        if (!same_out(&o->op[k], &g_ref->op[k]))
            return k;
    return -1;
}

static keel_ctx *parallel_ctx(int nthreads)
{
    keel_ctx *ctx = test_ctx(nthreads);
    if (keel_ctx_set_min_parallel(ctx, 0) != KEEL_OK) /* every call on every thread */
        test_fatal("keel_ctx_set_min_parallel");
    return ctx;
}

/* ---- 1. separate contexts on several threads at once ------------------------------------------ */

typedef struct own_job {
    keel_status st;
    int diff; /* first op differing from the reference, -1 */
    int runs;
} own_job;

static void *own_ctx_thread(void *p)
{
    own_job *j = p;
    keel_ctx *ctx = NULL;
    j->diff = -1;
    if ((j->st = keel_ctx_create(&ctx, 2)) != KEEL_OK ||
        (j->st = keel_ctx_set_min_parallel(ctx, 0)) != KEEL_OK)
        return NULL;
    outputs *o = new_outputs();
    for (int i = 0; i < 3 * rounds && j->st == KEEL_OK && j->diff < 0; i++, j->runs++)
        if ((j->st = run_all(ctx, g_in, o)) == KEEL_OK)
            j->diff = first_diff_op(o);
    free(o);
    keel_ctx_destroy(ctx);
    return NULL;
}

static void separate_contexts(void)
{
    pthread_t th[NT];
    own_job jobs[NT];
    memset(jobs, 0, sizeof jobs);
    for (int t = 0; t < NT; t++)
        if (pthread_create(&th[t], NULL, own_ctx_thread, &jobs[t]) != 0)
            test_fatal("pthread_create");
    for (int t = 0; t < NT; t++) {
        pthread_join(th[t], NULL);
        test_check(jobs[t].st == KEEL_OK && jobs[t].diff < 0,
                   "separate contexts, thread %d: %s, %s differs from the one-thread reference", t,
                   keel_status_str(jobs[t].st), jobs[t].diff < 0 ? "nothing" : call_names[jobs[t].diff]);
    }
}

/* ---- 2. one context handed from thread to thread ---------------------------------------------- */

typedef struct handed_job {
    keel_ctx *ctx;
    keel_status st;
    int diff;
} handed_job;

static void *handed_thread(void *p)
{
    handed_job *j = p;
    outputs *o = new_outputs();
    j->diff = -1;
    if ((j->st = run_all(j->ctx, g_in, o)) == KEEL_OK)
        j->diff = first_diff_op(o);
    free(o);
    return NULL;
}

/* Two threads taking turns on one context, handing it over under a mutex. */
typedef struct turns {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int turn; /* whose turn: 0 or 1 */
    keel_ctx *ctx;
} turns;

typedef struct turn_job {
    turns *shared;
    int me;
    keel_status st;
    int diff;
} turn_job;

static void *turn_thread(void *p)
{
    turn_job *j = p;
    turns *s = j->shared;
    outputs *o = new_outputs();
    j->st = KEEL_OK;
    j->diff = -1;
    for (int i = 0; i < 2 * rounds; i++) {
        pthread_mutex_lock(&s->lock);
        while (s->turn != j->me)
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        if (j->st == KEEL_OK && j->diff < 0 && (j->st = run_all(s->ctx, g_in, o)) == KEEL_OK)
            j->diff = first_diff_op(o);
        pthread_mutex_lock(&s->lock);
        s->turn = 1 - j->me;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    free(o);
    return NULL;
}

static void handed_context(void)
{
    keel_ctx *ctx = parallel_ctx(3);
    /* threads started one after another (the join orders their calls) */
    for (int t = 0; t < 3; t++) {
        pthread_t th;
        handed_job j = {ctx, KEEL_OK, -1};
        if (pthread_create(&th, NULL, handed_thread, &j) != 0)
            test_fatal("pthread_create");
        pthread_join(th, NULL);
        test_check(j.st == KEEL_OK && j.diff < 0, "context handed to thread %d: %s, %s differs", t,
                   keel_status_str(j.st), j.diff < 0 ? "nothing" : call_names[j.diff]);
    }
    /* two live threads taking turns */
    turns s;
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    s.turn = 0;
    s.ctx = ctx;
    pthread_t th[2];
    turn_job jobs[2] = {{&s, 0, KEEL_OK, -1}, {&s, 1, KEEL_OK, -1}};
    for (int t = 0; t < 2; t++)
        if (pthread_create(&th[t], NULL, turn_thread, &jobs[t]) != 0)
            test_fatal("pthread_create");
    for (int t = 0; t < 2; t++) {
        pthread_join(th[t], NULL);
        test_check(jobs[t].st == KEEL_OK && jobs[t].diff < 0,
                   "context taken in turns, thread %d: %s, %s differs", t, keel_status_str(jobs[t].st),
                   jobs[t].diff < 0 ? "nothing" : call_names[jobs[t].diff]);
    }
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.lock);
    keel_ctx_destroy(ctx);
}

/* ---- 3. the pool under load ------------------------------------------------------------------- */

static void pool_under_load(void)
{
    keel_isa isas[3];
    const int nisa = test_isas(isas);
    keel_ctx *ctx = parallel_ctx(8); /* more threads than this machine's cores, likely */
    outputs *o = new_outputs();
    int runs = 0, bad = 0;
    for (int i = 0; i < 4 * rounds; i++) {
        const int threads[] = {8, 5, 2, 1};
        keel_status st = keel_ctx_set_threads(ctx, threads[i % 4]);
        if (st == KEEL_OK)
            st = keel_ctx_set_isa(ctx, isas[i % nisa]);
        if (st == KEEL_OK)
            st = run_all(ctx, g_in, o);
        const int diff = st == KEEL_OK ? first_diff_op(o) : -1;
        runs++;
        if (!test_check(st == KEEL_OK && diff < 0, "pool under load, %d threads, %s: %s (%s), %s differs",
                        threads[i % 4], keel_isa_name(isas[i % nisa]), keel_status_str(st),
                        keel_last_error(), diff < 0 ? "nothing" : call_names[diff]))
            bad++;
        if (bad > 3)
            break;
    }
    printf("pool under load: %d runs of every operation on up to 8 threads\n", runs);
    free(o);
    keel_ctx_destroy(ctx);
}

/* ---- 4. one context in two calls at once ------------------------------------------------------ */

typedef struct busy_job {
    keel_ctx *ctx;
    keel_status st[N_CALLS];
    int wrote[N_CALLS];
    int named[N_CALLS];
} busy_job;

/* Every call while the main thread holds the context. */
static void *busy_thread(void *p)
{
    busy_job *j = p;
    op_out *o = malloc(sizeof *o);
    if (!o)
        return NULL;
    for (int k = 0; k < N_CALLS; k++) {
        fill_sentinel(o);
        j->st[k] = call(j->ctx, k, g_in, o);
        j->wrote[k] = !untouched(o);
        j->named[k] = strncmp(keel_last_error(), call_names[k], strlen(call_names[k])) == 0 &&
                      strstr(keel_last_error(), "another thread") != NULL;
    }
    free(o);
    return NULL;
}

/* Two threads calling on one context at once: each call is right or KEEL_EBUSY. */
typedef struct race_job {
    keel_ctx *ctx;
    int retry; /* 1: retry each call until it is not KEEL_EBUSY */
    long calls, busy, wrong, wrote_on_busy;
    keel_status other; /* a status other than OK / EBUSY, or OK */
} race_job;

static void *race_thread(void *p)
{
    race_job *j = p;
    op_out *o = malloc(sizeof *o);
    if (!o)
        return NULL;
    j->other = KEEL_OK;
    for (int i = 0; i < 6 * rounds; i++)
        for (int k = 0; k < N_OPS; k++) {
            keel_status st;
            do {
                fill_sentinel(o);
                st = call(j->ctx, k, g_in, o);
                j->calls++;
                if (st == KEEL_EBUSY) {
                    j->busy++;
                    j->wrote_on_busy += !untouched(o);
                }
            } while (st == KEEL_EBUSY && j->retry);
            if (st == KEEL_OK)
                j->wrong += !same_out(o, &g_ref->op[k]);
            else if (st != KEEL_EBUSY)
                j->other = st;
        }
    free(o);
    return NULL;
}

static void misuse(void)
{
    keel_ctx *ctx = parallel_ctx(2);
    /* (a) another thread is in a call (held here through the library's own entry) */
    if (keel_ctx_enter(ctx, "test_threads") != KEEL_OK)
        test_fatal("keel_ctx_enter on a fresh context");
    busy_job b;
    memset(&b, 0, sizeof b);
    b.ctx = ctx;
    pthread_t th;
    if (pthread_create(&th, NULL, busy_thread, &b) != 0)
        test_fatal("pthread_create");
    pthread_join(th, NULL);
    for (int k = 0; k < N_CALLS; k++)
        test_check(b.st[k] == KEEL_EBUSY && !b.wrote[k] && b.named[k],
                   "%s on a context in a call on another thread: %s, %s, message %s, want KEEL_EBUSY, "
                   "nothing written, a message naming the call", call_names[k], keel_status_str(b.st[k]),
                   b.wrote[k] ? "wrote its outputs" : "wrote nothing", b.named[k] ? "right" : "wrong");
    keel_ctx_leave(ctx, KEEL_OK);
    /* given back: every call works again, on this thread */
    outputs *o = new_outputs();
    keel_status st = run_all(ctx, g_in, o);
    const int diff = st == KEEL_OK ? first_diff_op(o) : -1;
    test_check(st == KEEL_OK && diff < 0, "after the other call ends: %s (%s), %s differs",
               keel_status_str(st), keel_last_error(), diff < 0 ? "nothing" : call_names[diff]);
    free(o);

    /* (b) two threads at once, as the misuse happens; (c) the same, retrying on KEEL_EBUSY */
    for (int retry = 0; retry <= 1; retry++) {
        pthread_t rt[2];
        race_job rj[2];
        memset(rj, 0, sizeof rj);
        for (int t = 0; t < 2; t++) {
            rj[t].ctx = ctx;
            rj[t].retry = retry;
            if (pthread_create(&rt[t], NULL, race_thread, &rj[t]) != 0)
                test_fatal("pthread_create");
        }
        long busy = 0, calls = 0;
        for (int t = 0; t < 2; t++) {
            pthread_join(rt[t], NULL);
            test_check(rj[t].wrong == 0 && rj[t].wrote_on_busy == 0 && rj[t].other == KEEL_OK,
                       "two threads on one context%s, thread %d: %ld of %ld calls gave other bits, %ld "
                       "KEEL_EBUSY calls wrote, other status %s", retry ? " (retrying)" : "", t,
                       rj[t].wrong, rj[t].calls, rj[t].wrote_on_busy, keel_status_str(rj[t].other));
            busy += rj[t].busy;
            calls += rj[t].calls;
        }
        printf("two threads on one context%s: %ld calls, %ld returned KEEL_EBUSY (%ld + %ld)\n",
               retry ? " (retrying on KEEL_EBUSY)" : "", calls, busy, rj[0].busy, rj[1].busy);
    }
    keel_ctx_destroy(ctx);
}

/* keel_ctx_run (a caller's own work on the context's threads): every index once, index 0 on the
 * calling thread and the others on the pool's, n as asked (<= 0: all threads); a keel call on
 * the context from inside the task is KEEL_EBUSY; bad arguments run nothing. Tasks only record;
 * checked here. */
enum { RUN_THREADS = 4 };
typedef struct run_rec {
    int count[RUN_THREADS + 1];
    int n_seen[RUN_THREADS + 1];
    pthread_t who[RUN_THREADS + 1];
    keel_status nested[RUN_THREADS + 1];
    keel_ctx *ctx;
} run_rec;

static void run_task(void *arg, int i, int n)
{
    run_rec *r = arg;
    if (i < 0 || i > RUN_THREADS)
        return;
    __atomic_fetch_add(&r->count[i], 1, __ATOMIC_RELAXED);
    r->n_seen[i] = n;
    r->who[i] = pthread_self();
    r->nested[i] = keel_ctx_set_min_parallel(r->ctx, 0);
}

static void ctx_run(void)
{
    keel_ctx *ctx = test_ctx(RUN_THREADS);
    static const int asks[] = {0, -3, 1, 2, RUN_THREADS};
    for (size_t a = 0; a < sizeof asks / sizeof asks[0]; a++) {
        run_rec r;
        memset(&r, 0, sizeof r);
        r.ctx = ctx;
        const int want_n = asks[a] > 0 ? asks[a] : RUN_THREADS;
        const keel_status st = keel_ctx_run(ctx, asks[a], run_task, &r);
        int once = 1, n_ok = 1, busy = 1, distinct = 1;
        for (int i = 0; i <= RUN_THREADS; i++) {
            once &= r.count[i] == (i < want_n);
            if (i < want_n) {
                n_ok &= r.n_seen[i] == want_n;
                busy &= r.nested[i] == KEEL_EBUSY;
                for (int k = 0; k < i; k++)
                    distinct &= !pthread_equal(r.who[i], r.who[k]);
            }
        }
        test_check(st == KEEL_OK && once && n_ok && busy && distinct &&
                       pthread_equal(r.who[0], pthread_self()),
                   "keel_ctx_run(n = %d) on %d threads: %s; every index once %d, n passed %d, a "
                   "nested call KEEL_EBUSY %d, one thread an index %d, index 0 on the caller %d",
                   asks[a], RUN_THREADS, keel_status_str(st), once, n_ok, busy, distinct,
                   want_n > 0 && pthread_equal(r.who[0], pthread_self()));
    }
    run_rec r;
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    keel_status st = keel_ctx_run(ctx, RUN_THREADS + 1, run_task, &r);
    test_check(st == KEEL_EINVAL && r.count[0] == 0 && strstr(keel_last_error(), "n (5)"),
               "keel_ctx_run(n = %d > threads): %s (%s), %d runs", RUN_THREADS + 1,
               keel_status_str(st), keel_last_error(), r.count[0]);
    st = keel_ctx_run(ctx, 0, NULL, &r);
    test_check(st == KEEL_ENULL && strstr(keel_last_error(), "fn"), "keel_ctx_run(fn NULL): %s (%s)",
               keel_status_str(st), keel_last_error());
    st = keel_ctx_run(NULL, 0, run_task, &r);
    test_check(st == KEEL_ENULL && r.count[0] == 0, "keel_ctx_run(ctx NULL): %s",
               keel_status_str(st));
    /* the context is given back: a call after the run works */
    st = keel_ctx_set_min_parallel(ctx, 0);
    test_check(st == KEEL_OK, "keel_ctx_set_min_parallel after keel_ctx_run: %s",
               keel_status_str(st));
    keel_ctx_destroy(ctx);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_threads"));
    const char *env = getenv("KEEL_TEST_THREADS_ROUNDS");
    rounds = env && atoi(env) > 0 ? atoi(env) : test_quick() ? 1 : 4;
    inputs *in = malloc(sizeof *in);
    outputs *ref = new_outputs();
    if (!in)
        test_fatal("out of memory");
    make_inputs(in, &rng);
    /* the reference: one thread, the default path */
    keel_ctx *one = test_ctx(1);
    keel_status st = run_all(one, in, ref);
    if (st != KEEL_OK) {
        printf("reference: %s (%s)\n", keel_status_str(st), keel_last_error());
        test_fatal("the one-thread reference failed");
    }
    keel_ctx_destroy(one);
    g_in = in;
    g_ref = ref;

    separate_contexts();
    handed_context();
    pool_under_load();
    misuse();
    ctx_run();

    free(ref);
    free(in);
    return test_finish();
}
