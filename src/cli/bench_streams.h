/* The op's own stream floor of keel bench: a kernel that reads and writes the streams an op
 * reads and writes (the same number of tensors, each in its own buffer and of its own element
 * size, the per-row statistics and per-feature vectors beside them), with trivial arithmetic
 * (the inputs xor-ed together, as integers, and stored), on the threads of the op's own context
 * (keel_ctx_run), as the copy floor. A copy reads one stream and writes one; an op that reads two or three
 * and writes one or two can beat a copy of its bytes (more streams in flight, no write to
 * allocate for each byte read), so the copy floor alone made such an op look faster than the
 * memory. This floor moves what the op moves and nothing else. */
#ifndef KEEL_CLI_BENCH_STREAMS_H
#define KEEL_CLI_BENCH_STREAMS_H

#include <stddef.h>

#include "keel.h"

#define BENCH_STREAMS_MAX 4

/* An op's streams. The tensors: elems elements each, nin read and nout written, each of its
 * own element size in bytes (1, 2 or 4); an output may overwrite one of the inputs in place
 * (out_in_place: the input's index, -1 for a buffer of its own). The float32 vectors: row_in
 * read and row_out written of `rows` floats (statistics, per-row scales), split over the
 * threads as the tensors are; dim_in read (by every thread, as every thread of an op reads
 * gamma) and dim_out written (by the first thread: the op's per-feature sums are reduced once)
 * of `dim` floats. */
typedef struct bench_streams_spec {
    size_t elems, rows, dim;
    int nin, nout;
    unsigned char in_size[BENCH_STREAMS_MAX], out_size[BENCH_STREAMS_MAX];
    signed char out_in_place[BENCH_STREAMS_MAX];
    int row_in, row_out, dim_in, dim_out;
} bench_streams_spec;

/* The stores of the outputs: ordinary (write-allocate) or streaming (non-temporal). */
typedef enum { BENCH_STORE_PLAIN, BENCH_STORE_STREAM } bench_store_kind;

typedef struct bench_streams bench_streams;

/* Runs on the threads of ctx (not owned; keel_ctx_run), with the vector width of its path
 * (AVX-512, AVX2; SSE2 on any other x86 path, portable C elsewhere), on as many of them as an op
 * of keel's on the same tensors: one per keel_ctx_min_parallel(ctx) elements (0: all), at most
 * one a row. NULL when out of memory. */
bench_streams *bench_streams_create(keel_ctx *ctx);
void bench_streams_destroy(bench_streams *s);
/* Buffers for spec (kept, and grown as needed, until bench_streams_release): 0 when out of
 * memory or spec asks more than BENCH_STREAMS_MAX tensors or an element size other than 1, 2,
 * 4; 1 when ready. The buffers are touched here, not while timed. */
int bench_streams_reserve(bench_streams *s, const bench_streams_spec *spec);
void bench_streams_release(bench_streams *s);
/* One run over spec's streams (reserved before). */
void bench_streams_run(bench_streams *s, const bench_streams_spec *spec, bench_store_kind kind);
/* Whether BENCH_STORE_STREAM uses streaming stores here (else it is the same as PLAIN). */
int bench_streams_can_stream(const bench_streams *s);

#endif
