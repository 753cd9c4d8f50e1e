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
};

/* Scratch of at least `bytes`, 64-byte aligned; NULL (with the error recorded) on failure.
 * The previous contents are not kept. */
void *keel_ctx_scratch(keel_ctx *ctx, size_t bytes, const char *who);

#endif
