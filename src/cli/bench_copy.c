#include "bench_copy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#define HAVE_STREAM 1
#endif

struct bench_copier {
    keel_pool *pool;
};

typedef struct copy_job {
    char *dst;
    const char *src;
    size_t bytes;
    bench_copy_kind kind;
    int n;
} copy_job;

static void stream_copy(char *dst, const char *src, size_t bytes)
{
#ifdef HAVE_STREAM
    /* align the destination to 16 bytes, stream the middle, copy the tail */
    size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
    if (head > bytes)
        head = bytes;
    memcpy(dst, src, head);
    size_t i = head;
    for (; i + 64 <= bytes; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_stream_si128((__m128i *)(dst + i), a);
        _mm_stream_si128((__m128i *)(dst + i + 16), b);
        _mm_stream_si128((__m128i *)(dst + i + 32), c);
        _mm_stream_si128((__m128i *)(dst + i + 48), d);
    }
    memcpy(dst + i, src + i, bytes - i);
    _mm_sfence();
#else
    memcpy(dst, src, bytes);
#endif
}

static void copy_worker(void *arg, int i)
{
    const copy_job *j = arg;
    /* slices on 64-byte boundaries */
    const size_t lines = (j->bytes + 63) / 64;
    size_t b0 = lines * (size_t)i / (size_t)j->n * 64, b1 = lines * (size_t)(i + 1) / (size_t)j->n * 64;
    if (b1 > j->bytes)
        b1 = j->bytes;
    if (b0 >= b1)
        return;
    if (j->kind == BENCH_COPY_STREAM)
        stream_copy(j->dst + b0, j->src + b0, b1 - b0);
    else
        memcpy(j->dst + b0, j->src + b0, b1 - b0);
}

bench_copier *bench_copier_create(int threads)
{
    bench_copier *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (keel_pool_create(&c->pool, threads) != KEEL_OK) {
        free(c);
        return NULL;
    }
    return c;
}

void bench_copier_destroy(bench_copier *c)
{
    if (!c)
        return;
    keel_pool_destroy(c->pool);
    free(c);
}

keel_pool *bench_copier_pool(bench_copier *c) { return c->pool; }

void bench_copy(bench_copier *c, void *dst, const void *src, size_t bytes, bench_copy_kind kind)
{
    copy_job j = {dst, src, bytes, kind, keel_pool_size(c->pool)};
    keel_pool_run(c->pool, j.n, copy_worker, &j);
}
