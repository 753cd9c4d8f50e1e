/* The one allocation entry of keel (the library, the ONNX reader of the CLI, the trainer's model
 * and checkpoint code): thin wrappers over malloc/calloc/realloc/aligned_alloc/free, so that a
 * test can make any one allocation fail (issue 23, "allocation-failure injection"; tests/
 * test_alloc_fail.c walks every allocation of every operation, docs/reliability.md).
 *
 * Internal: not in keel.h, and hidden in libkeel.so (-fvisibility=hidden, no KEEL_API); the
 * tests link the static library. Memory from any of these may be given to free() or keel_free(). */
#ifndef KEEL_CORE_ALLOC_H
#define KEEL_CORE_ALLOC_H

#include <stddef.h>

void *keel_alloc(size_t bytes);
void *keel_alloc_zero(size_t count, size_t size);
/* As realloc: on failure NULL and p untouched (still owned by the caller). */
void *keel_realloc(void *p, size_t bytes);
/* align a power of two; bytes is rounded up to a multiple of align here (C11's aligned_alloc
 * wants a multiple). bytes == 0 gives NULL, never a live zero-byte block. */
void *keel_alloc_aligned(size_t align, size_t bytes);
void keel_free(void *p);

/* Failure injection, for tests. n > 0: the n-th allocation from now (counting every keel_alloc*
 * and keel_realloc call, in any thread) fails, once, and then counting goes on without failures;
 * n == 0: count, fail nothing; n < 0: off (the default: nothing counted, one relaxed atomic load
 * per allocation). Returns the number of allocations counted since the previous call, so a test
 * runs a scenario under keel_alloc_fail_at(0), reads its allocation count with the next call,
 * and then fails each of them in turn. */
long keel_alloc_fail_at(long n);

#endif
