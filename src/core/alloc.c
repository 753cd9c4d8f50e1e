/* keel's allocation entry and its failure injection (alloc.h). */
#include "alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

/* mode: 0 off, 1 counting. left: allocations until the injected failure (0 = none pending).
 * count: allocations since the last keel_alloc_fail_at. Relaxed: a test arms and reads them
 * from its own thread; the pool's workers never allocate. */
static atomic_int g_mode;
static atomic_long g_left;
static atomic_long g_count;

/* 1 when this allocation is the one to fail. Off, it costs one relaxed load. */
static int injected_failure(void)
{
    if (!atomic_load_explicit(&g_mode, memory_order_relaxed))
        return 0;
    atomic_fetch_add_explicit(&g_count, 1, memory_order_relaxed);
    if (atomic_load_explicit(&g_left, memory_order_relaxed) == 0)
        return 0;
    return atomic_fetch_sub_explicit(&g_left, 1, memory_order_relaxed) == 1;
}

long keel_alloc_fail_at(long n)
{
    long counted = atomic_exchange_explicit(&g_count, 0, memory_order_relaxed);
    atomic_store_explicit(&g_left, n > 0 ? n : 0, memory_order_relaxed);
    atomic_store_explicit(&g_mode, n >= 0, memory_order_relaxed);
    return counted;
}

void *keel_alloc(size_t bytes) { return injected_failure() ? NULL : malloc(bytes); }

void *keel_alloc_zero(size_t count, size_t size)
{
    return injected_failure() ? NULL : calloc(count, size);
}

void *keel_realloc(void *p, size_t bytes) { return injected_failure() ? NULL : realloc(p, bytes); }

void *keel_alloc_aligned(size_t align, size_t bytes)
{
    const size_t rounded = (bytes + align - 1) & ~(align - 1);
    if (bytes == 0 || rounded < bytes) /* zero, or the rounding wrapped */
        return NULL;
    return injected_failure() ? NULL : aligned_alloc(align, rounded);
}

void keel_free(void *p) { free(p); }
