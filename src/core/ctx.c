#define _POSIX_C_SOURCE 200809L /* clock_gettime, sysconf */
#include "ctx.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "error.h"

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n);
}

keel_status keel_ctx_create(keel_ctx **out, int nthreads)
{
    if (!out)
        return keel_fail(KEEL_ENULL, "keel_ctx_create: ctx (the output pointer) is NULL");
    keel_isa isa;
    keel_status st = keel_isa_default(&isa);
    if (st != KEEL_OK)
        return st;
    keel_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return keel_fail(KEEL_ENOMEM, "keel_ctx_create: cannot allocate the context");
    st = keel_pool_create(&ctx->pool, nthreads <= 0 ? online_cores() : nthreads);
    if (st != KEEL_OK) {
        free(ctx);
        return st;
    }
    ctx->isa = isa;
    ctx->kernels = keel_kernels_for(isa);
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
    free(ctx->scratch);
    free(ctx->stage);
    free(ctx->params);
    free(ctx);
}

int keel_ctx_threads(const keel_ctx *ctx) { return ctx ? keel_pool_size(ctx->pool) : 0; }

keel_status keel_ctx_set_min_parallel(keel_ctx *ctx, size_t elems)
{
    if (!ctx)
        return keel_fail(KEEL_ENULL, "keel_ctx_set_min_parallel: ctx is NULL");
    ctx->min_parallel = elems;
    return KEEL_OK;
}

size_t keel_ctx_min_parallel(const keel_ctx *ctx) { return ctx ? ctx->min_parallel : 0; }

keel_status keel_ctx_set_threads(keel_ctx *ctx, int nthreads)
{
    if (!ctx)
        return keel_fail(KEEL_ENULL, "keel_ctx_set_threads: ctx is NULL");
    const int n = nthreads <= 0 ? online_cores() : nthreads;
    if (n == keel_pool_size(ctx->pool))
        return KEEL_OK;
    keel_pool *pool;
    keel_status st = keel_pool_create(&pool, n);
    if (st != KEEL_OK)
        return st; /* the old pool stays */
    keel_pool_destroy(ctx->pool);
    ctx->pool = pool;
    return KEEL_OK;
}

keel_status keel_ctx_set_isa(keel_ctx *ctx, keel_isa isa)
{
    if (!ctx)
        return keel_fail(KEEL_ENULL, "keel_ctx_set_isa: ctx is NULL");
    if (isa == KEEL_ISA_AUTO) {
        keel_status st = keel_isa_default(&isa);
        if (st != KEEL_OK)
            return st;
    }
    if (isa != KEEL_ISA_SCALAR && isa != KEEL_ISA_AVX2 && isa != KEEL_ISA_AVX512)
        return keel_fail(KEEL_EISA, "keel_ctx_set_isa: isa (%d) is not a keel_isa value", (int)isa);
    if (!keel_isa_available(isa))
        return keel_fail(KEEL_EISA, "keel_ctx_set_isa: isa %s is not available on this CPU or build",
                         keel_isa_name(isa));
    ctx->isa = isa;
    ctx->kernels = keel_kernels_for(isa);
    return KEEL_OK;
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
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        keel_fail(KEEL_ENOMEM, "%s: cannot allocate %zu bytes of scratch", who, rounded);
        return NULL;
    }
    free(ctx->scratch);
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
    float *p = aligned_alloc(64, floats * sizeof(float));
    if (!p) {
        keel_fail(KEEL_ENOMEM, "%s: cannot allocate %zu bytes of staging", who, floats * sizeof(float));
        return NULL;
    }
    free(ctx->stage);
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
    float *p = aligned_alloc(64, ((floats * sizeof(float)) + 63) & ~(size_t)63);
    if (!p) {
        keel_fail(KEEL_ENOMEM, "%s: cannot allocate %zu parameters", who, floats);
        return NULL;
    }
    free(ctx->params);
    ctx->params = p;
    ctx->params_floats = floats;
    return p;
}
