/*
 * test_common.h - the small helpers every keel test shares: the seed (KEEL_TEST_SEED), pass and
 * fail counting with the "N passed, M failed" summary, buffers with sentinels, whole files read
 * and written, and the list of instruction-set paths this machine can run. Each test is one
 * translation unit, so the state lives in static variables here.
 */
#ifndef KEEL_TEST_COMMON_H
#define KEEL_TEST_COMMON_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "keel_cases.h"

/* The default seed: fixed, so that a plain ctest run is reproducible. */
#define TEST_DEFAULT_SEED UINT64_C(0x6b65656c)

static const char *test_name_ = "test";
static uint64_t test_seed_;
static long test_passed_, test_failed_;

/* Prints the test's seed and returns it: KEEL_TEST_SEED (decimal or 0x hex) if set. */
static inline uint64_t test_begin(const char *name)
{
    const char *env = getenv("KEEL_TEST_SEED");
    test_name_ = name;
    test_seed_ = TEST_DEFAULT_SEED;
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 0);
        if (*end == '\0')
            test_seed_ = (uint64_t)v;
        else
            fprintf(stderr, "%s: KEEL_TEST_SEED '%s' is not a number, using the default\n", name,
                    env);
    }
    printf("%s: seed %" PRIu64 " (KEEL_TEST_SEED=%" PRIu64 " reproduces this run)\n", name,
           test_seed_, test_seed_);
    return test_seed_;
}

/* Counts one check; on failure prints the seed and the formatted description (which names the
 * case and the index). Returns ok. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline int test_check(int ok, const char *fmt, ...)
{
    if (ok) {
        test_passed_++;
        return 1;
    }
    test_failed_++;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL [%s seed %" PRIu64 "] ", test_name_, test_seed_);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    return 0;
}

/* Prints "N passed, M failed"; the process's exit status. */
static inline int test_finish(void)
{
    printf("%ld passed, %ld failed\n", test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

/* Test infrastructure failing (not keel): stop with a message. */
static inline void test_fatal(const char *what)
{
    printf("FATAL [%s seed %" PRIu64 "] %s\n", test_name_, test_seed_, what);
    printf("%ld passed, %ld failed\n", test_passed_, test_failed_ + 1);
    exit(1);
}

/* ---- the size of the long sweeps ------------------------------------------------------------
 * A sanitizer makes every check many times slower, so the sanitizer runs (make test-asan,
 * make test-tsan) take the quick sweep: fewer repetitions of the same shapes and options,
 * never a path, an operation or a size class left out (each test says what it shrinks).
 * KEEL_TEST_QUICK=1 asks for it, KEEL_TEST_QUICK=0 for the full sweep; unset, a sanitizer
 * build takes the quick one and any other build the full one. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TEST_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                      \
    __has_feature(undefined_behavior_sanitizer)
#define TEST_SANITIZER_BUILD 1
#endif
#endif
#ifndef TEST_SANITIZER_BUILD
#define TEST_SANITIZER_BUILD 0
#endif

static inline int test_quick(void)
{
    static int quick = -1;
    if (quick < 0) {
        const char *env = getenv("KEEL_TEST_QUICK");
        quick = env && *env ? strcmp(env, "0") != 0 : TEST_SANITIZER_BUILD;
        if (quick)
            printf("%s: the quick sweep (KEEL_TEST_QUICK=0 runs the full one)\n", test_name_);
    }
    return quick;
}

/* ---- buffers ------------------------------------------------------------------------------- */

/* A float no computation here produces: marks memory that must not be written. Filled and
 * compared as bits, so NaN rules never interfere. */
#define TEST_SENTINEL_BITS UINT32_C(0x5a5a5a5a)

/* 64-byte aligned (a cache line): a packed layout then gives rows that start aligned, which the
 * SIMD paths treat differently (streaming stores); layouts with an offset test the others. */
static inline float *test_alloc(size_t n)
{
    const size_t bytes = ((n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p)
        test_fatal("out of memory");
    return p;
}

static inline double *test_alloc_d(size_t n)
{
    double *p = malloc((n > 0 ? n : 1) * sizeof(double));
    if (!p)
        test_fatal("out of memory");
    return p;
}

static inline void test_fill_sentinel(float *p, size_t n)
{
    uint32_t bits = TEST_SENTINEL_BITS;
    for (size_t i = 0; i < n; i++)
        memcpy(p + i, &bits, sizeof bits);
}

/* Index of the first element that is not the sentinel, or n. */
static inline size_t test_first_written(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, p + i, sizeof bits);
        if (bits != TEST_SENTINEL_BITS)
            return i;
    }
    return n;
}

/* A copy of n floats (the caller frees it). */
static inline float *test_copy(const float *src, size_t n)
{
    float *p = test_alloc(n);
    memcpy(p, src, (n > 0 ? n : 1) * sizeof(float));
    return p;
}

/* Index of the first element whose bits differ, or n. */
static inline size_t test_first_diff(const float *a, const float *b, size_t n)
{
    /* one memcmp for the usual answer: a call per float, each checked by AddressSanitizer's
     * interceptor, took a fifth of the sanitizer suite's time */
    if (n == 0 || memcmp(a, b, n * sizeof(float)) == 0)
        return n;
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof(float)) != 0)
            return i;
    return n;
}

/* ---- files --------------------------------------------------------------------------------- */

/* The whole file at path, with a NUL after its last byte so that a text file reads as a C string;
 * *n (when n is not NULL) is its length without the NUL. The caller frees it. NULL when the file
 * cannot be opened or read or memory runs out: the caller checks, so a missing file fails the
 * test instead of crashing it. */
static inline unsigned char *test_read_file(const char *path, size_t *n)
{
    if (n)
        *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *p = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
        p = malloc((size_t)len + 1);
    if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (!p)
        return NULL;
    p[len] = '\0';
    if (n)
        *n = (size_t)len;
    return p;
}

/* Writes n bytes to path, replacing the file. 0, or -1 when it cannot be opened, written or
 * closed: a test that writes a crafted file checks this before it judges what a loader says. */
static inline int test_write_file(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(bytes, 1, n, f) == n;
    if (fclose(f))
        ok = 0;
    return ok ? 0 : -1;
}

/* ---- contexts and instruction-set paths ------------------------------------------------------ */

/* The paths this machine runs, scalar first, best last; returns how many (at most 3: x86-64
 * has scalar, avx2, avx512; aarch64 scalar and neon). */
static inline int test_isas(keel_isa out[3])
{
    static const keel_isa all[4] = {KEEL_ISA_SCALAR, KEEL_ISA_AVX2, KEEL_ISA_AVX512,
                                    KEEL_ISA_NEON};
    int n = 0;
    for (int i = 0; i < 4 && n < 3; i++)
        if (keel_isa_available(all[i]))
            out[n++] = all[i];
    return n;
}

static inline keel_ctx *test_ctx(int nthreads)
{
    keel_ctx *ctx = NULL;
    keel_status st = keel_ctx_create(&ctx, nthreads);
    if (st != KEEL_OK || !ctx) {
        printf("keel_ctx_create: %s (%s)\n", keel_status_str(st), keel_last_error());
        test_fatal("cannot create a context");
    }
    return ctx;
}

static inline void test_set_isa(keel_ctx *ctx, keel_isa isa)
{
    keel_status st = keel_ctx_set_isa(ctx, isa);
    if (st != KEEL_OK) {
        printf("keel_ctx_set_isa(%s): %s (%s)\n", keel_isa_name(isa), keel_status_str(st),
               keel_last_error());
        test_fatal("cannot select an available instruction-set path");
    }
}

#endif /* KEEL_TEST_COMMON_H */
