/* The context: threads, the chosen kernel table, and scratch memory reused across calls. */
#ifndef KEEL_CORE_CTX_H
#define KEEL_CORE_CTX_H

#include <stdatomic.h>
#include <stddef.h>

#include "error.h"
#include "convert.h"
#include "kernels.h"
#include "pool.h"

struct keel_ctx {
    atomic_int busy;      /* 1 while a call runs on the context (keel_ctx_enter) */
    keel_pool *pool;
    const keel_kernels *kernels;
    const keel_convert_kernels *convert; /* the storage conversions of the same path */
    keel_isa isa;
    void *scratch;        /* grown on demand, never shrunk; 64-byte aligned */
    size_t scratch_bytes;
    float *params;        /* per-call derived parameters (folded gamma/beta); grown on demand */
    size_t params_floats;
    float *stage;         /* per-thread staging rows for low-precision dtypes; grown on demand */
    size_t stage_floats;  /* total floats in stage */
    size_t min_parallel;  /* elements below which a call runs on one thread */
};

/* keel.h's rule "one context, one thread at a time", checked. Every public function that uses
 * or changes a context (the operations, keel_ctx_set_*) is
 *     keel_status st = keel_ctx_enter(ctx, who);
 *     return st ? st : keel_ctx_leave(ctx, the_call(...));
 * so the context is taken before anything of it is read and given back on every way out. A
 * call that finds it taken does nothing and returns KEEL_EBUSY. The exchange orders the calls
 * (acquire here, release in keel_ctx_leave), so a context handed between threads sees the
 * previous call's scratch, parameters and pool as that call left them. */
static inline keel_status keel_ctx_enter(keel_ctx *ctx, const char *who)
{
    if (!ctx)
        return keel_fail(KEEL_ENULL, "%s: ctx is NULL", who);
    if (atomic_exchange_explicit(&ctx->busy, 1, memory_order_acquire))
        return keel_fail(KEEL_EBUSY, "%s: ctx is in a call on another thread (a context serves one "
                                     "thread at a time: give each thread its own)", who);
    return KEEL_OK;
}

/* Gives the context back; returns st. */
static inline keel_status keel_ctx_leave(keel_ctx *ctx, keel_status st)
{
    atomic_store_explicit(&ctx->busy, 0, memory_order_release);
    return st;
}

/* Scratch of at least `bytes`, 64-byte aligned; NULL (with the error recorded) on failure.
 * The previous contents are not kept. */
void *keel_ctx_scratch(keel_ctx *ctx, size_t bytes, const char *who);

/* Staging memory for `per_thread` floats on each of the pool's threads, 64-byte aligned per
 * slice; thread t uses base + t * keel_stage_stride(per_thread). NULL (error recorded) on failure. */
float *keel_ctx_stage(keel_ctx *ctx, size_t per_thread, const char *who);
size_t keel_stage_stride(size_t per_thread);
/* Memory for `floats` derived parameters of one call (e.g. gamma / smooth), apart from the
 * scratch used by the gradient partials. NULL (error recorded) on failure. */
float *keel_ctx_params(keel_ctx *ctx, size_t floats, const char *who);

#endif
