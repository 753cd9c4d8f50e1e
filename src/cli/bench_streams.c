#include "bench_streams.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The vector kernels are compiled for their ISA with target attributes (the CLI is built
 * without ISA flags) and called only where keel chose that path, so only where cpuid has it. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#define TARGET_AVX2 __attribute__((target("avx2")))
#define TARGET_AVX512 __attribute__((target("avx512f")))
#endif

/* One group of streams walked in lockstep, element by element: each a base pointer and its
 * element size. */
typedef struct walk {
    const unsigned char *in[BENCH_STREAMS_MAX];
    unsigned char *out[BENCH_STREAMS_MAX];
    unsigned in_size[BENCH_STREAMS_MAX], out_size[BENCH_STREAMS_MAX];
    int nin, nout;
} walk;

/* Elements [e0, e1) of w: every input xor-ed into the accumulators, which are stored to every
 * output (nt: streaming stores). Chunks of VB elements, VB the vector's bytes, so that a chunk
 * of a stream of element size k is k whole vectors; e0 and the bases are 64-byte aligned. The
 * bytes past the last whole chunk go one at a time. Returns seed mixed with all it read, so that
 * no read can be dropped. */
typedef uint64_t walk_fn(const walk *w, size_t e0, size_t e1, int nt, uint64_t seed);

static uint64_t walk_tail(const walk *w, size_t e, size_t e1, uint64_t seed)
{
    unsigned char acc = (unsigned char)seed;
    for (int s = 0; s < w->nin; s++)
        for (size_t b = e * w->in_size[s]; b < e1 * w->in_size[s]; b++)
            acc ^= w->in[s][b];
    for (int s = 0; s < w->nout; s++)
        for (size_t b = e * w->out_size[s]; b < e1 * w->out_size[s]; b++)
            w->out[s][b] = acc;
    return seed ^ acc;
}

/* The body of every vector width: V the vector type, LOAD/XOR/STORE/STREAM its operations.
 * Four accumulators, so that a chunk's loads do not wait on one chain of xors. */
#define WALK_BODY(V, VB, LOAD, XOR, STORE, STREAM)                                                 \
    size_t e = e0;                                                                                 \
    for (; e + (VB) <= e1; e += (VB)) {                                                            \
        for (int s = 0; s < w->nin; s++) {                                                         \
            const V *p = (const V *)(const void *)(w->in[s] + e * w->in_size[s]);                  \
            a0 = XOR(a0, LOAD(p));                                                                 \
            if (w->in_size[s] >= 2)                                                                \
                a1 = XOR(a1, LOAD(p + 1));                                                         \
            if (w->in_size[s] == 4) {                                                              \
                a2 = XOR(a2, LOAD(p + 2));                                                         \
                a3 = XOR(a3, LOAD(p + 3));                                                         \
            }                                                                                      \
        }                                                                                          \
        for (int s = 0; s < w->nout; s++) {                                                        \
            V *p = (V *)(void *)(w->out[s] + e * w->out_size[s]);                                  \
            const unsigned k = w->out_size[s];                                                     \
            if (nt) {                                                                              \
                STREAM(p, a0);                                                                     \
                if (k >= 2)                                                                        \
                    STREAM(p + 1, a1);                                                             \
                if (k == 4) {                                                                      \
                    STREAM(p + 2, a2);                                                             \
                    STREAM(p + 3, a3);                                                             \
                }                                                                                  \
            } else {                                                                               \
                STORE(p, a0);                                                                      \
                if (k >= 2)                                                                        \
                    STORE(p + 1, a1);                                                              \
                if (k == 4) {                                                                      \
                    STORE(p + 2, a2);                                                              \
                    STORE(p + 3, a3);                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

#ifdef HAVE_X86
#define X128_LOAD(p) _mm_load_si128(p)
#define X128_STORE(p, v) _mm_store_si128(p, v)
#define X128_STREAM(p, v) _mm_stream_si128(p, v)
static uint64_t walk_sse2(const walk *w, size_t e0, size_t e1, int nt, uint64_t seed)
{
    __m128i a0 = _mm_set1_epi64x((long long)seed), a1 = _mm_setzero_si128(), a2 = a1, a3 = a1;
    WALK_BODY(__m128i, 16, X128_LOAD, _mm_xor_si128, X128_STORE, X128_STREAM)
    if (nt)
        _mm_sfence();
    uint64_t lanes[2];
    _mm_storeu_si128((__m128i *)(void *)lanes,
                     _mm_xor_si128(_mm_xor_si128(a0, a1), _mm_xor_si128(a2, a3)));
    return walk_tail(w, e, e1, lanes[0] ^ lanes[1]);
}

#define X256_LOAD(p) _mm256_load_si256(p)
#define X256_STORE(p, v) _mm256_store_si256(p, v)
#define X256_STREAM(p, v) _mm256_stream_si256(p, v)
TARGET_AVX2 static uint64_t walk_avx2(const walk *w, size_t e0, size_t e1, int nt, uint64_t seed)
{
    __m256i a0 = _mm256_set1_epi64x((long long)seed), a1 = _mm256_setzero_si256(), a2 = a1, a3 = a1;
    WALK_BODY(__m256i, 32, X256_LOAD, _mm256_xor_si256, X256_STORE, X256_STREAM)
    if (nt)
        _mm_sfence();
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)(void *)lanes,
                        _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3)));
    return walk_tail(w, e, e1, lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3]);
}

#define X512_LOAD(p) _mm512_load_si512((const void *)(p))
#define X512_STORE(p, v) _mm512_store_si512((void *)(p), v)
#define X512_STREAM(p, v) _mm512_stream_si512((void *)(p), v)
TARGET_AVX512 static uint64_t walk_avx512(const walk *w, size_t e0, size_t e1, int nt,
                                          uint64_t seed)
{
    __m512i a0 = _mm512_set1_epi64((long long)seed), a1 = _mm512_setzero_si512(), a2 = a1, a3 = a1;
    WALK_BODY(__m512i, 64, X512_LOAD, _mm512_xor_si512, X512_STORE, X512_STREAM)
    if (nt)
        _mm_sfence();
    uint64_t lanes[8];
    _mm512_storeu_si512((void *)lanes,
                        _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)));
    uint64_t r = 0;
    for (int i = 0; i < 8; i++)
        r ^= lanes[i];
    return walk_tail(w, e, e1, r);
}
#endif

/* Portable: 8-byte words, ordinary stores (nt ignored). */
#define U64_LOAD(p) (*(p))
#define U64_XOR(a, b) ((a) ^ (b))
#define U64_STORE(p, v) (*(p) = (v))
static uint64_t walk_portable(const walk *w, size_t e0, size_t e1, int nt, uint64_t seed)
{
    uint64_t a0 = seed, a1 = 0, a2 = 0, a3 = 0;
    nt = 0;
    WALK_BODY(uint64_t, 8, U64_LOAD, U64_XOR, U64_STORE, U64_STORE)
    return walk_tail(w, e, e1, a0 ^ a1 ^ a2 ^ a3);
}

struct bench_streams {
    keel_ctx *ctx;
    size_t min_parallel;
    walk_fn *fn;
    int can_stream;
    unsigned char *arena;
    size_t capacity;
};

bench_streams *bench_streams_create(keel_ctx *ctx)
{
    bench_streams *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    const keel_isa isa = keel_ctx_isa(ctx);
    s->ctx = ctx;
    s->min_parallel = keel_ctx_min_parallel(ctx);
    s->fn = walk_portable;
    (void)isa; /* the portable walk on other machines */
#ifdef HAVE_X86
    s->fn = isa == KEEL_ISA_AVX512 ? walk_avx512 : isa == KEEL_ISA_AVX2 ? walk_avx2 : walk_sse2;
    s->can_stream = 1;
#endif
    return s;
}

void bench_streams_release(bench_streams *s)
{
    free(s->arena);
    s->arena = NULL;
    s->capacity = 0;
}

void bench_streams_destroy(bench_streams *s)
{
    if (!s)
        return;
    bench_streams_release(s);
    free(s);
}

/* The buffers of a spec, in the arena: each stream starts on a page of its own plus 320 bytes
 * a stream, so that no two streams sit at the same offset within a page (4 KiB aliasing of a
 * load against a store would slow the floor, not the op, whose buffers come from separate
 * allocations).
 * What is written (the outputs, an input overwritten in place) has a buffer for each store kind
 * where the tensors span at most APART_MAX bytes: interleaved, each kind's outputs are then, as
 * the op's, where its own last run left them (one buffer for both: the streaming run evicted
 * the lines the ordinary run would find in cache, which made the floor slower than the op at
 * 4096x16, 1.5x). Beyond, nothing stays in cache from one round to the next, and one buffer
 * saves the memory. What is only read is shared. */
#define APART_MAX ((size_t)1 << 30)

typedef struct layout {
    walk big, rows, dim_in, dim_out;
} layout;

static size_t place(size_t *at, size_t bytes, int k)
{
    const size_t start = ((*at + 4095) & ~(size_t)4095) + (size_t)(k % 12) * 320;
    *at = start + bytes;
    return start;
}

static int spec_ok(const bench_streams_spec *sp)
{
    if (sp->nin < 0 || sp->nout < 1 || sp->nin > BENCH_STREAMS_MAX ||
        sp->nout > BENCH_STREAMS_MAX || sp->row_in < 0 || sp->row_out < 0 || sp->dim_in < 0 ||
        sp->dim_out < 0 || sp->row_in + sp->row_out > BENCH_STREAMS_MAX ||
        sp->dim_in > BENCH_STREAMS_MAX || sp->dim_out > BENCH_STREAMS_MAX)
        return 0;
    for (int i = 0; i < sp->nin; i++)
        if (sp->in_size[i] != 1 && sp->in_size[i] != 2 && sp->in_size[i] != 4)
            return 0;
    for (int i = 0; i < sp->nout; i++) {
        const int alias = sp->out_in_place[i];
        if ((sp->out_size[i] != 1 && sp->out_size[i] != 2 && sp->out_size[i] != 4) ||
            alias >= sp->nin || (alias >= 0 && sp->in_size[alias] != sp->out_size[i]))
            return 0;
    }
    return 1;
}

static int written_in_place(const bench_streams_spec *sp, int input)
{
    for (int o = 0; o < sp->nout; o++)
        if (sp->out_in_place[o] == input)
            return 1;
    return 0;
}

static unsigned char *at_arena(unsigned char *arena, size_t off)
{
    return arena ? arena + off : NULL;
}

/* Sets l[0] (ordinary stores) and l[1] (streaming) on arena (NULL: the sizes only); returns the
 * bytes needed. */
static size_t lay_out(const bench_streams_spec *sp, unsigned char *arena, layout l[2])
{
    size_t at = 0, tensors = 0;
    int k = 0;
    for (int i = 0; i < sp->nin; i++)
        tensors += sp->elems * sp->in_size[i];
    for (int i = 0; i < sp->nout; i++)
        tensors += sp->out_in_place[i] < 0 ? sp->elems * sp->out_size[i] : 0;
    const int kinds = tensors <= APART_MAX ? 2 : 1;
    memset(l, 0, 2 * sizeof *l);
    /* read only: shared */
    for (int i = 0; i < sp->nin; i++) {
        l[0].big.in_size[i] = l[1].big.in_size[i] = sp->in_size[i];
        if (!written_in_place(sp, i))
            l[0].big.in[i] = l[1].big.in[i] =
                at_arena(arena, place(&at, sp->elems * sp->in_size[i], k++));
    }
    for (int i = 0; i < sp->row_in; i++)
        l[0].rows.in[i] = l[1].rows.in[i] =
            at_arena(arena, place(&at, sp->rows * sizeof(float), k++));
    for (int i = 0; i < sp->dim_in; i++)
        l[0].dim_in.in[i] = l[1].dim_in.in[i] =
            at_arena(arena, place(&at, sp->dim * sizeof(float), k++));
    /* written: a set for each kind, or one for both */
    for (int kind = 0; kind < 2; kind++) {
        layout *w = &l[kind];
        w->big.nin = sp->nin;
        w->big.nout = sp->nout;
        w->rows.nin = sp->row_in;
        w->rows.nout = sp->row_out;
        w->dim_in.nin = sp->dim_in;
        w->dim_out.nout = sp->dim_out;
        for (int i = 0; i < BENCH_STREAMS_MAX; i++)
            w->rows.in_size[i] = w->rows.out_size[i] = w->dim_in.in_size[i] =
                w->dim_out.out_size[i] = sizeof(float);
        if (kind >= kinds) {
            for (int i = 0; i < sp->nin; i++)
                w->big.in[i] = l[0].big.in[i];
            memcpy(w->big.out, l[0].big.out, sizeof w->big.out);
            memcpy(w->big.out_size, l[0].big.out_size, sizeof w->big.out_size);
            memcpy(w->rows.out, l[0].rows.out, sizeof w->rows.out);
            memcpy(w->dim_out.out, l[0].dim_out.out, sizeof w->dim_out.out);
            continue;
        }
        for (int i = 0; i < sp->nin; i++)
            if (written_in_place(sp, i))
                w->big.in[i] = at_arena(arena, place(&at, sp->elems * sp->in_size[i], k++));
        for (int o = 0; o < sp->nout; o++) {
            const int alias = sp->out_in_place[o];
            w->big.out_size[o] = sp->out_size[o];
            w->big.out[o] = alias >= 0
                                ? (unsigned char *)w->big.in[alias]
                                : at_arena(arena, place(&at, sp->elems * sp->out_size[o], k++));
        }
        for (int i = 0; i < sp->row_out; i++)
            w->rows.out[i] = at_arena(arena, place(&at, sp->rows * sizeof(float), k++));
        for (int i = 0; i < sp->dim_out; i++)
            w->dim_out.out[i] = at_arena(arena, place(&at, sp->dim * sizeof(float), k++));
    }
    return at;
}

int bench_streams_reserve(bench_streams *s, const bench_streams_spec *spec)
{
    if (!spec_ok(spec))
        return 0;
    layout l[2];
    const size_t bytes = lay_out(spec, NULL, l);
    if (bytes <= s->capacity)
        return 1;
    bench_streams_release(s);
    const size_t cap = (bytes + 4095) & ~(size_t)4095;
    s->arena = aligned_alloc(4096, cap);
    if (!s->arena)
        return 0;
    memset(s->arena, 0x5a, cap); /* the pages touched before timing */
    s->capacity = cap;
    return 1;
}

int bench_streams_can_stream(const bench_streams *s) { return s->can_stream; }

typedef struct run_job {
    const bench_streams *s;
    const bench_streams_spec *spec;
    const layout *l;
    int n, nt;
} run_job;

/* Thread i's part of n elements: whole blocks of 64 (each stream's part then starts 64-byte
 * aligned), the last thread the rest. */
static void part(size_t n, int i, int threads, size_t *e0, size_t *e1)
{
    const size_t blocks = n / 64;
    *e0 = blocks * (size_t)i / (size_t)threads * 64;
    *e1 = i == threads - 1 ? n : blocks * (size_t)(i + 1) / (size_t)threads * 64;
}

static void run_worker(void *arg, int i, int n)
{
    const run_job *j = arg;
    (void)n; /* j->n */
    const layout *l = j->l;
    walk_fn *fn = j->s->fn;
    uint64_t seed = (uint64_t)i + 1;
    size_t e0, e1;
    /* as an op: the parameters read by every thread, its rows' statistics, its rows, and the
     * per-feature results written once at the end */
    if (l->dim_in.nin)
        seed = fn(&l->dim_in, 0, j->spec->dim, 0, seed);
    if (l->rows.nin || l->rows.nout) {
        part(j->spec->rows, i, j->n, &e0, &e1);
        seed = fn(&l->rows, e0, e1, 0, seed);
    }
    part(j->spec->elems, i, j->n, &e0, &e1);
    seed = fn(&l->big, e0, e1, j->nt, seed);
    if (i == 0 && l->dim_out.nout)
        fn(&l->dim_out, 0, j->spec->dim, 0, seed);
}

void bench_streams_run(bench_streams *s, const bench_streams_spec *spec, bench_store_kind kind)
{
    layout l[2];
    if (!s->arena || lay_out(spec, s->arena, l) > s->capacity)
        return; /* not reserved: nothing to time (keel bench reserves every row's spec first) */
    /* the threads keel's operators wake for these tensors (useful_threads in src/ops/parallel.c):
     * below min_parallel elements a thread costs more to wake than it saves, and the floor
     * should not pay for a wake-up the op skips */
    size_t n = (size_t)keel_ctx_threads(s->ctx);
    if (s->min_parallel > 0 && n > spec->elems / s->min_parallel)
        n = spec->elems / s->min_parallel;
    if (n > spec->rows)
        n = spec->rows;
    const int nt = kind == BENCH_STORE_STREAM && s->can_stream;
    run_job j = {s, spec, &l[nt], n < 1 ? 1 : (int)n, nt};
    keel_ctx_run(s->ctx, j.n, run_worker, &j);
}
