/* The copy floor of the benchmarks: the same bytes copied by the threads of the context the op
 * runs on (keel_ctx_run), with glibc memcpy or with streaming (non-temporal) stores, each thread
 * taking a contiguous slice. */
#ifndef KEEL_CLI_BENCH_COPY_H
#define KEEL_CLI_BENCH_COPY_H

#include <stddef.h>

#include "keel.h"

typedef enum { BENCH_COPY_MEMCPY, BENCH_COPY_STREAM } bench_copy_kind;

/* KEEL_OK, or keel_ctx_run's status (nothing copied). */
keel_status bench_copy(keel_ctx *ctx, void *dst, const void *src, size_t bytes,
                       bench_copy_kind kind);

#endif
