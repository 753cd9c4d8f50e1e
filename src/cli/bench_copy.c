#include "bench_copy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#define HAVE_STREAM 1
#endif

typedef struct copy_job {
    char *dst;
    const char *src;
    size_t bytes;
    bench_copy_kind kind;
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

static void copy_worker(void *arg, int i, int n)
{
    const copy_job *j = arg;
    /* slices on 64-byte boundaries */
    const size_t lines = (j->bytes + 63) / 64;
    size_t b0 = lines * (size_t)i / (size_t)n * 64, b1 = lines * (size_t)(i + 1) / (size_t)n * 64;
    if (b1 > j->bytes)
        b1 = j->bytes;
    if (b0 >= b1)
        return;
    if (j->kind == BENCH_COPY_STREAM)
        stream_copy(j->dst + b0, j->src + b0, b1 - b0);
    else
        memcpy(j->dst + b0, j->src + b0, b1 - b0);
}

keel_status bench_copy(keel_ctx *ctx, void *dst, const void *src, size_t bytes,
                       bench_copy_kind kind)
{
    copy_job j = {dst, src, bytes, kind};
    return keel_ctx_run(ctx, 0, copy_worker, &j);
}
