/* The thread pool: n - 1 workers plus the calling thread. keel_pool_run(pool, n, fn, arg)
 * calls fn(arg, i) for i = 0..n-1 (n <= the pool's size), i = 0 on the caller, and returns
 * when all are done. Which thread runs which index never affects results: operators give each
 * index a fixed range of work. */
#ifndef KEEL_CORE_POOL_H
#define KEEL_CORE_POOL_H

#include "keel.h"

/* The stack of each worker thread, 1 MiB: ten times what the deepest kernel puts there (the
 * fused add + norm pipelines: 96 KiB); index 0 runs on the caller's own stack (include/keel.h
 * says how much a call needs). */
#define KEEL_POOL_STACK_BYTES ((size_t)1 << 20)

typedef struct keel_pool keel_pool;
typedef void (*keel_pool_fn)(void *arg, int index);

keel_status keel_pool_create(keel_pool **pool, int nthreads);
void keel_pool_destroy(keel_pool *pool);
int keel_pool_size(const keel_pool *pool);
void keel_pool_run(keel_pool *pool, int n, keel_pool_fn fn, void *arg);
/* Inside fn: the index of the calling thread in its pool (0 for the caller of keel_pool_run),
 * so that work can use a per-thread slice of the context's scratch. */
int keel_pool_thread_index(void);

#endif
