#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
#include "ctx.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "alloc.h"
#include "cpu.h"
#include "error.h"

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > KEEL_MAX_THREADS ? KEEL_MAX_THREADS : (int)n);
}

/* The pool size nthreads asks for: <= 0 one per online core; over KEEL_MAX_THREADS an error
 * (a count of a million once started 32,447 threads before the system refused one). */
static keel_status thread_count(const char *who, int nthreads, int *n)
{
    if (nthreads > KEEL_MAX_THREADS)
        return keel_fail(KEEL_EINVAL, "%s: nthreads (%d) is more than KEEL_MAX_THREADS (%d)", who,
                         nthreads, KEEL_MAX_THREADS);
    *n = nthreads <= 0 ? online_cores() : nthreads;
    return KEEL_OK;
}

keel_status keel_ctx_create(keel_ctx **out, int nthreads)
{
    if (!out)
        return keel_fail(KEEL_ENULL, "keel_ctx_create: ctx (the output pointer) is NULL");
    int n = 0;
    keel_status st = thread_count("keel_ctx_create", nthreads, &n);
    if (st != KEEL_OK)
        return st;
    keel_isa isa;
    if ((st = keel_isa_default(&isa)) != KEEL_OK)
        return st;
    keel_ctx *ctx = keel_alloc_zero(1, sizeof *ctx);
    if (!ctx)
        return keel_fail(KEEL_ENOMEM, "keel_ctx_create: cannot allocate the context");
    atomic_init(&ctx->busy, 0);
    st = keel_pool_create(&ctx->pool, n);
    if (st != KEEL_OK) {
        keel_free(ctx);
        return st;
    }
    ctx->isa = isa;
    ctx->kernels = keel_kernels_for_cpu(isa, keel_cpu_has_avx512_bf16());
    ctx->convert = keel_convert_kernels_for(isa, keel_cpu_has_avx512_bf16());
    ctx->min_parallel = KEEL_DEFAULT_MIN_PARALLEL;
    keel_clear_error();
    *out = ctx;
    return KEEL_OK;
}

void keel_ctx_destroy(keel_ctx *ctx)
{
    if (!ctx)
        return;
    keel_pool_destroy(ctx->pool);
    keel_free(ctx->scratch);
    keel_free(ctx->stage);
    keel_free(ctx->params);
    keel_free(ctx);
}

int keel_ctx_threads(const keel_ctx *ctx) { return ctx ? keel_pool_size(ctx->pool) : 0; }

/* keel_ctx_run's task on the pool, which passes an index only */
typedef struct user_task {
    keel_task_fn fn;
    void *arg;
    int n;
} user_task;

static void run_user_task(void *arg, int index)
{
    const user_task *t = arg;
    t->fn(t->arg, index, t->n);
}

keel_status keel_ctx_run(keel_ctx *ctx, int n, keel_task_fn fn, void *arg)
{
    static const char who[] = "keel_ctx_run";
    keel_status st = keel_ctx_enter(ctx, who);
    if (st)
        return st;
    const int threads = keel_pool_size(ctx->pool);
    if (!fn)
        return keel_ctx_leave(ctx, keel_fail(KEEL_ENULL, "%s: fn is NULL", who));
    if (n > threads)
        return keel_ctx_leave(ctx, keel_fail(KEEL_EINVAL, "%s: n (%d) is more than the context's "
                                                          "threads (%d)", who, n, threads));
    user_task t = {fn, arg, n > 0 ? n : threads};
    keel_pool_run(ctx->pool, t.n, run_user_task, &t);
    return keel_ctx_leave(ctx, KEEL_OK);
}

keel_status keel_ctx_set_min_parallel(keel_ctx *ctx, size_t elems)
{
    keel_status st = keel_ctx_enter(ctx, "keel_ctx_set_min_parallel");
    if (st != KEEL_OK)
        return st;
    ctx->min_parallel = elems;
    return keel_ctx_leave(ctx, KEEL_OK);
}

size_t keel_ctx_min_parallel(const keel_ctx *ctx) { return ctx ? ctx->min_parallel : 0; }

static keel_status set_threads(keel_ctx *ctx, int nthreads)
{
    int n = 0;
    keel_status st = thread_count("keel_ctx_set_threads", nthreads, &n);
    if (st != KEEL_OK || n == keel_pool_size(ctx->pool))
        return st;
    keel_pool *pool;
    if ((st = keel_pool_create(&pool, n)) != KEEL_OK)
        return st; /* the old pool stays */
    keel_pool_destroy(ctx->pool);
    ctx->pool = pool;
    return KEEL_OK;
}

keel_status keel_ctx_set_threads(keel_ctx *ctx, int nthreads)
{
    keel_status st = keel_ctx_enter(ctx, "keel_ctx_set_threads");
    return st ? st : keel_ctx_leave(ctx, set_threads(ctx, nthreads));
}

static keel_status set_isa(keel_ctx *ctx, keel_isa isa)
{
    if (isa == KEEL_ISA_AUTO) {
        keel_status st = keel_isa_default(&isa);
        if (st != KEEL_OK)
            return st;
    }
    if (isa != KEEL_ISA_SCALAR && isa != KEEL_ISA_AVX2 && isa != KEEL_ISA_AVX512 &&
        isa != KEEL_ISA_NEON)
        return keel_fail(KEEL_EISA, "keel_ctx_set_isa: isa (%d) is not a keel_isa value", (int)isa);
    if (!keel_isa_available(isa))
        return keel_fail(KEEL_EISA, "keel_ctx_set_isa: isa %s is not available on this CPU or build",
                         keel_isa_name(isa));
    ctx->isa = isa;
    ctx->kernels = keel_kernels_for_cpu(isa, keel_cpu_has_avx512_bf16());
    ctx->convert = keel_convert_kernels_for(isa, keel_cpu_has_avx512_bf16());
    return KEEL_OK;
}

keel_status keel_ctx_set_isa(keel_ctx *ctx, keel_isa isa)
{
    keel_status st = keel_ctx_enter(ctx, "keel_ctx_set_isa");
    return st ? st : keel_ctx_leave(ctx, set_isa(ctx, isa));
}

keel_isa keel_ctx_isa(const keel_ctx *ctx) { return ctx ? ctx->isa : KEEL_ISA_AUTO; }

void *keel_ctx_scratch(keel_ctx *ctx, size_t bytes, const char *who)
{
    if (bytes <= ctx->scratch_bytes)
        return ctx->scratch;
    const size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) {
        keel_fail(KEEL_EOVERFLOW, "%s: scratch of %zu bytes overflows", who, bytes);
        return NULL;
    }
    void *p = keel_alloc_aligned(64, rounded);
    if (!p) {
        keel_fail(KEEL_ENOMEM, "%s: cannot allocate %zu bytes of scratch", who, rounded);
        return NULL;
    }
    keel_free(ctx->scratch);
    ctx->scratch = p;
    ctx->scratch_bytes = rounded;
    return p;
}

size_t keel_stage_stride(size_t per_thread) { return (per_thread + 15) & ~(size_t)15; }

float *keel_ctx_stage(keel_ctx *ctx, size_t per_thread, const char *who)
{
    const size_t threads = (size_t)keel_pool_size(ctx->pool);
    const size_t stride = keel_stage_stride(per_thread);
    if (stride < per_thread || stride > SIZE_MAX / sizeof(float) / threads) {
        keel_fail(KEEL_EOVERFLOW, "%s: staging of %zu floats per thread overflows", who, per_thread);
        return NULL;
    }
    const size_t floats = stride * threads;
    if (floats <= ctx->stage_floats)
        return ctx->stage;
    float *p = keel_alloc_aligned(64, floats * sizeof(float));
    if (!p) {
        keel_fail(KEEL_ENOMEM, "%s: cannot allocate %zu bytes of staging", who, floats * sizeof(float));
        return NULL;
    }
    keel_free(ctx->stage);
    ctx->stage = p;
    ctx->stage_floats = floats;
    return p;
}

float *keel_ctx_params(keel_ctx *ctx, size_t floats, const char *who)
{
    if (floats <= ctx->params_floats)
        return ctx->params;
    if (floats > SIZE_MAX / sizeof(float) - 16) {
        keel_fail(KEEL_EOVERFLOW, "%s: %zu parameters overflow", who, floats);
        return NULL;
    }
    float *p = keel_alloc_aligned(64, ((floats * sizeof(float)) + 63) & ~(size_t)63);
    if (!p) {
        keel_fail(KEEL_ENOMEM, "%s: cannot allocate %zu parameters", who, floats);
        return NULL;
    }
    keel_free(ctx->params);
    ctx->params = p;
    ctx->params_floats = floats;
    return p;
}
