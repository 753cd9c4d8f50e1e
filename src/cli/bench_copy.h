/* The copy floor of the benchmarks: the same bytes copied by the same number of threads, with
 * glibc memcpy or with streaming (non-temporal) stores, each thread taking a contiguous slice. */
#ifndef KEEL_CLI_BENCH_COPY_H
#define KEEL_CLI_BENCH_COPY_H

#include <stddef.h>

#include "pool.h"

typedef struct bench_copier bench_copier;
typedef enum { BENCH_COPY_MEMCPY, BENCH_COPY_STREAM } bench_copy_kind;

bench_copier *bench_copier_create(int threads);
void bench_copier_destroy(bench_copier *c);
/* The copier's pool, for the other floors of keel bench (bench_streams.h): the same threads. */
keel_pool *bench_copier_pool(bench_copier *c);
void bench_copy(bench_copier *c, void *dst, const void *src, size_t bytes, bench_copy_kind kind);

#endif
