/* The context: threads, the chosen kernel table, and scratch memory reused across calls. */
#ifndef KEEL_CORE_CTX_H
#define KEEL_CORE_CTX_H

#include <stddef.h>

#include "kernels.h"
#include "pool.h"

struct keel_ctx {
    keel_pool *pool;
    const keel_kernels *kernels;
    keel_isa isa;
    void *scratch;        /* grown on demand, never shrunk; 64-byte aligned */
    size_t scratch_bytes;
    float *params;        /* per-call derived parameters (folded gamma/beta); grown on demand */
    size_t params_floats;
    float *stage;         /* per-thread staging rows for low-precision dtypes; grown on demand */
    size_t stage_floats;  /* total floats in stage */
    size_t min_parallel;  /* elements below which a call runs on one thread */
};

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
