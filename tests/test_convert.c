/*
 * test_convert: the dtype conversions of src/kernels/convert.h and keel_quantize_i8, on every
 * instruction-set path this machine runs.
 *
 *  - f16 -> f32 and bf16 -> f32 exhaustively (all 65536 patterns) against a decoding written
 *    here by hand (sign, exponent, mantissa, ldexp); a NaN stays a NaN with its sign, made quiet,
 *    its payload kept.
 *  - f32 -> bf16 and f32 -> f16 on the special classes (+-0, f32 subnormals, the f16/bf16
 *    subnormal range and every rounding boundary in it, the midpoint between every pair of
 *    neighbouring finite values of both dtypes and the floats beside it, the overflow thresholds
 *    65504/65520 and bf16's, FLT_MAX, Inf, NaNs with many payloads), a million random bit
 *    patterns and a strided sweep over all 2^32 patterns. Each result must be the correctly
 *    rounded value: the oracle finds the two decoded neighbours of |f| in a table of the dtype's
 *    finite values (in double), takes the nearer one, and on a tie the one with the even
 *    pattern; beyond the largest finite value the next neighbour is Inf, at 2^16 (f16) or
 *    2^128 (bf16), as IEEE 754 rounds. NaN: quiet, sign and top payload bits kept.
 *  - every path's kernel equals the scalar definition bit for bit, on whole arrays (vector
 *    bodies) and on lengths 1..40 and more at unaligned offsets (tails), writing nothing past n.
 *  - every path's quantize_i8 and absmax kernels against keel_quantize_i8 and the scalar loop,
 *    densely beside every half-integer boundary (the vector kernels use a reciprocal where it
 *    provably rounds as the division), and at every length 0..100 on rows of hard values (ties,
 *    the reciprocal check's margins, the clamp, NaN, Inf, subnormals) with zero, subnormal,
 *    huge, infinite and NaN scales.
 *  - keel_quantize_i8 against a double oracle: round half to even of the float32 quotient y / s
 *    (the quotient as keel.h writes it: float32 division), clamp to [-127, 127], NaN -> 0; ties
 *    built exactly, clamps, infinities, zero scales.
 */
#include <float.h>
#include <math.h>

#include "convert.h"
#include "cpu.h"
#include "test_common.h"

/* ---- bits ---------------------------------------------------------------------------------- */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- the paths ------------------------------------------------------------------------------- */

typedef struct path {
    keel_isa isa;
    const char *name;
    const keel_convert_kernels *cv;
} path;

static path paths[4];
static int n_paths;

#if defined(__x86_64__) || defined(__i386__)
/* The AVX-512 path as a CPU without AVX512_BF16 runs it (integer f32 -> bf16 rounding), tested
 * beside the table's own kernels where the CPU has the extension (the table then uses
 * vcvtne2ps2bf16). */
static keel_convert_kernels avx512_int_bf16;
#endif

static void find_paths(void)
{
    keel_isa isas[3];
    int n = test_isas(isas);
    for (int i = 0; i < n; i++) {
        const keel_convert_kernels *cv = keel_convert_kernels_for(isas[i], keel_cpu_has_avx512_bf16());
        if (!test_check(cv != NULL && cv->bf16_to_f32 && cv->f16_to_f32 && cv->f32_to_bf16 &&
                            cv->f32_to_f16,
                        "keel_convert_kernels_for(%s): missing kernels on an available path",
                        keel_isa_name(isas[i])))
            continue;
        paths[n_paths].isa = isas[i];
        paths[n_paths].name = keel_isa_name(isas[i]);
        paths[n_paths].cv = cv;
        n_paths++;
        test_check(cv->quantize_i8 && cv->absmax, "keel_convert_kernels_for(%s): no quantize/absmax",
                   keel_isa_name(isas[i]));
#if defined(__x86_64__)
        if (isas[i] == KEEL_ISA_AVX512 && cv->f32_to_bf16 != keel_f32_to_bf16__avx512) {
            test_check(keel_cpu_has_avx512_bf16(), "avx512: a bf16 kernel other than the integer "
                       "one on a CPU without AVX512_BF16");
            avx512_int_bf16 = *cv;
            avx512_int_bf16.f32_to_bf16 = keel_f32_to_bf16__avx512;
            paths[n_paths].isa = isas[i];
            paths[n_paths].name = "avx512-int-bf16";
            paths[n_paths].cv = &avx512_int_bf16;
            n_paths++;
        }
#endif
    }
    printf("conversion paths:");
    for (int i = 0; i < n_paths; i++)
        printf(" %s", paths[i].name);
    printf(" (AVX512_BF16 f32 -> bf16: %s)\n", keel_cpu_has_avx512_bf16() ? "yes" : "no");
    if (n_paths == 0 || paths[0].isa != KEEL_ISA_SCALAR)
        test_fatal("no scalar conversion path");
}

/* ---- the dtypes, decoded by hand ----------------------------------------------------------- */

/* |value| of a pattern without its sign bit; NaN for NaN patterns, INFINITY for Inf. */
static double f16_magnitude(uint16_t h)
{
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f)
        return m ? NAN : INFINITY;
    if (e == 0)
        return ldexp((double)m, -24); /* subnormal: m * 2^-14 * 2^-10 */
    return ldexp((double)(m + 1024), e - 25); /* (1 + m/2^10) * 2^(e-15) */
}

static double bf16_magnitude(uint16_t h)
{
    const int e = (h >> 7) & 0xff, m = h & 0x7f;
    if (e == 0xff)
        return m ? NAN : INFINITY;
    if (e == 0)
        return ldexp((double)m, -133); /* m * 2^-126 * 2^-7 */
    return ldexp((double)(m + 128), e - 134); /* (1 + m/2^7) * 2^(e-127) */
}

typedef struct format {
    const char *name;
    int mant_bits;       /* explicit fraction bits */
    uint16_t max_finite; /* the largest finite positive pattern */
    uint16_t inf;        /* +Inf */
    uint16_t quiet;      /* the quiet bit of a NaN */
    double overflow;     /* the value the pattern after max_finite would have: 2^(emax+1) */
    double *table;       /* magnitude of patterns 0..max_finite (increasing) */
    double (*magnitude)(uint16_t);
} format;

static format fmt_f16 = {"f16", 10, 0x7bff, 0x7c00, 0x0200, 65536.0, NULL, f16_magnitude};
static format fmt_bf16 = {"bf16", 7, 0x7f7f, 0x7f80, 0x0040, 0x1p128, NULL, bf16_magnitude};

static void format_init(format *f)
{
    f->table = test_alloc_d((size_t)f->max_finite + 1);
    for (uint32_t k = 0; k <= f->max_finite; k++) {
        f->table[k] = f->magnitude((uint16_t)k);
        if (k > 0 && !(f->table[k] > f->table[k - 1]))
            test_fatal("format table not increasing");
    }
}

/* The pattern f32 -> dtype must give, for a float that is not NaN: the nearer of the two decoded
 * neighbours of |x|, ties to the even pattern; past the largest finite value the upper
 * neighbour is Inf (at f->overflow), so |x| >= the midpoint to it gives Inf (ties too: the
 * largest finite patterns are odd). The sign is kept, zeros included. */
static uint16_t oracle_round(const format *f, float x)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double a = fabs((double)x);
    if (isinf(a))
        return sign | f->inf;
    /* largest k with table[k] <= a */
    uint32_t lo = 0, hi = (uint32_t)f->max_finite + 1; /* table[lo] <= a < table[hi] (or hi past) */
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if (f->table[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    const double below = f->table[lo];
    if (a == below)
        return (uint16_t)(sign | lo);
    const double above = lo == f->max_finite ? f->overflow : f->table[lo + 1];
    const uint16_t up = lo == f->max_finite ? f->inf : (uint16_t)(lo + 1);
    /* both differences are exact in double: a has 24 significant bits and sits between its
     * neighbours, which have fewer */
    const double d_lo = a - below, d_hi = above - a;
    if (d_lo < d_hi)
        return (uint16_t)(sign | lo);
    if (d_hi < d_lo)
        return (uint16_t)(sign | up);
    return (uint16_t)(sign | ((lo & 1u) ? up : lo));
}

/* What a NaN must become: the sign, the quiet bit, the top fraction bits of the payload. */
static uint16_t oracle_nan(const format *f, float x)
{
    const uint32_t u = bits_of(x);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint16_t payload = (uint16_t)((u & 0x7fffffu) >> (23 - f->mant_bits));
    return (uint16_t)(sign | f->inf | f->quiet | payload);
}

static uint16_t oracle(const format *f, float x)
{
    return isnan(x) ? oracle_nan(f, x) : oracle_round(f, x);
}

/* ---- dtype -> f32, exhaustively ------------------------------------------------------------ */

static void check_to_f32(const format *f, int which)
{
    const char *what = which ? "f16 -> f32" : "bf16 -> f32";
    uint16_t *src = malloc(65536 * sizeof(uint16_t));
    float *want = test_alloc(65536), *got = test_alloc(65536 + 1);
    if (!src)
        test_fatal("out of memory");
    for (uint32_t h = 0; h < 65536; h++)
        src[h] = (uint16_t)h;

    /* the expected bits, from the hand decoding */
    long nan_patterns = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const double m = f->magnitude((uint16_t)h);
        const int neg = (h & 0x8000u) != 0;
        if (isnan(m)) {
            /* f16 (F16C's vcvtph2ps): quiet NaN, sign kept, the payload in the top fraction
             * bits; bf16: the pattern shifted, exactly (a signalling NaN stays signalling) */
            want[h] = which ? float_of((neg ? 0x80000000u : 0) | 0x7fc00000u |
                                       ((uint32_t)(h & 0x3ffu) << 13))
                            : float_of((uint32_t)h << 16);
            nan_patterns++;
        } else {
            const float v = (float)m; /* exact: both dtypes fit in float32 */
            if ((double)v != m)
                test_fatal("a dtype value is not a float32");
            want[h] = neg ? -v : v;
        }
    }
    test_check(nan_patterns == 2 * ((long)f->quiet * 2 - 1),
               "%s: %ld NaN patterns decoded, want %ld", what, nan_patterns,
               2 * ((long)f->quiet * 2 - 1));

    /* the one-value definition (used by keel_eps_check and the scalar tails) */
    long bad = 0;
    uint32_t first_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float v = which ? keel_f16_bits_to_f32((uint16_t)h) : keel_bf16_bits_to_f32((uint16_t)h);
        if (bits_of(v) != bits_of(want[h]) && !bad++)
            first_bad = h;
    }
    test_check(bad == 0, "%s: keel_%s_bits_to_f32 wrong on %ld patterns, first 0x%04x: got 0x%08x "
               "want 0x%08x", what, f->name, bad, (unsigned)first_bad,
               (unsigned)bits_of(which ? keel_f16_bits_to_f32((uint16_t)first_bad)
                                       : keel_bf16_bits_to_f32((uint16_t)first_bad)),
               (unsigned)bits_of(want[first_bad]));

    for (int p = 0; p < n_paths; p++) {
        keel_to_f32_fn fn = which ? paths[p].cv->f16_to_f32 : paths[p].cv->bf16_to_f32;
        /* the whole table at once: the vector body */
        test_fill_sentinel(got, 65536 + 1);
        fn(src, got, 65536);
        bad = 0;
        long nan_lost = 0;
        for (uint32_t h = 0; h < 65536; h++) {
            if (bits_of(got[h]) != bits_of(want[h]) && !bad++)
                first_bad = h;
            if (isnan(want[h]) && !(isnan(got[h]) && signbit(got[h]) == signbit(want[h])))
                nan_lost++;
        }
        test_check(bad == 0 && nan_lost == 0,
                   "%s isa %s: %ld patterns wrong (%ld NaNs lost), first 0x%04x: got 0x%08x (%.9g) "
                   "want 0x%08x (%.9g)", what, paths[p].name, bad, nan_lost,
                   (unsigned)first_bad, (unsigned)bits_of(got[first_bad]), (double)got[first_bad],
                   (unsigned)bits_of(want[first_bad]), (double)want[first_bad]);
        test_check(test_first_written(got + 65536, 1) == 1, "%s isa %s: wrote past n", what,
                   paths[p].name);

        /* every length 1..40 and some longer, at offsets 0..3: bodies and tails */
        static const size_t extra[] = {47, 64, 100, 129, 255, 1000, 4097};
        bad = 0;
        size_t bad_n = 0, bad_off = 0;
        for (size_t k = 0; k < 40 + sizeof extra / sizeof extra[0]; k++) {
            const size_t n = k < 40 ? k + 1 : extra[k - 40];
            for (size_t off = 0; off < 4; off++) {
                const size_t start = (n * 7919 + off * 104729) % 60000;
                test_fill_sentinel(got, n + 8);
                fn(src + start + off, got + off, n);
                int ok = test_first_written(got, off) == off &&
                         test_first_written(got + off + n, 4) == 4;
                for (size_t i = 0; i < n && ok; i++)
                    ok = bits_of(got[off + i]) == bits_of(want[start + off + i]);
                if (!ok && !bad++) {
                    bad_n = n;
                    bad_off = off;
                }
            }
        }
        test_check(bad == 0, "%s isa %s: %ld short/unaligned calls wrong, first n=%zu offset %zu",
                   what, paths[p].name, bad, bad_n, bad_off);
    }
    free(src);
    free(want);
    free(got);
}

/* ---- f32 -> dtype ----------------------------------------------------------------------------- */

typedef struct from_stats {
    long values, wrong, path_diff;
    float first_wrong, first_diff;
    uint16_t first_got, first_want;
    const char *diff_isa;
} from_stats;

/* Converts src[0..n) with every path's kernel, compares with the oracle and with each other. */
static void check_from_batch(const format *f, int which, const float *src, size_t n,
                             uint16_t *want, uint16_t *got, from_stats *s)
{
    for (size_t i = 0; i < n; i++)
        want[i] = oracle(f, src[i]);
    for (int p = 0; p < n_paths; p++) {
        keel_from_f32_fn fn = which ? paths[p].cv->f32_to_f16 : paths[p].cv->f32_to_bf16;
        fn(src, got, n);
        for (size_t i = 0; i < n; i++) {
            if (got[i] == want[i])
                continue;
            if (p == 0) {
                if (!s->wrong++) {
                    s->first_wrong = src[i];
                    s->first_got = got[i];
                    s->first_want = want[i];
                }
            } else if (!s->path_diff++) {
                s->first_diff = src[i];
                s->diff_isa = paths[p].name;
            }
        }
    }
    /* the one-value definition */
    for (size_t i = 0; i < n; i++) {
        const uint16_t v = which ? keel_f32_to_f16_bits(src[i]) : keel_f32_to_bf16_bits(src[i]);
        if (v != want[i] && !s->wrong++) {
            s->first_wrong = src[i];
            s->first_got = v;
            s->first_want = want[i];
        }
    }
    s->values += (long)n;
}

static void report_from(const format *f, const char *what, const from_stats *s)
{
    test_check(s->wrong == 0,
               "f32 -> %s (%s): %ld of %ld values not correctly rounded, first %a (bits 0x%08x): "
               "got 0x%04x want 0x%04x", f->name, what, s->wrong, s->values, (double)s->first_wrong,
               (unsigned)bits_of(s->first_wrong), (unsigned)s->first_got, (unsigned)s->first_want);
    test_check(s->path_diff == 0,
               "f32 -> %s (%s): %ld values differ from the scalar path, first on %s: %a (0x%08x)",
               f->name, what, s->path_diff, s->diff_isa, (double)s->first_diff,
               (unsigned)bits_of(s->first_diff));
}

/* A growable list of floats. */
typedef struct flist {
    float *v;
    size_t n, cap;
} flist;

static void push(flist *l, float x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4096;
        float *p = realloc(l->v, l->cap * sizeof(float));
        if (!p)
            test_fatal("out of memory");
        l->v = p;
    }
    l->v[l->n++] = x;
}

static void push_signed(flist *l, float x)
{
    push(l, x);
    push(l, -x);
}

/* x and the floats one and two ulps either side of it. */
static void push_around(flist *l, float x)
{
    const float dn = nextafterf(x, 0.0f), up = nextafterf(x, INFINITY);
    push_signed(l, x);
    push_signed(l, dn);
    push_signed(l, up);
    push_signed(l, nextafterf(dn, 0.0f));
    push_signed(l, nextafterf(up, INFINITY));
}

/* The special classes, for both dtypes at once. */
static flist special_values(keel_rng *rng)
{
    flist l = {NULL, 0, 0};
    /* zeros, f32 subnormals, the f32 normal boundary, max float, Inf */
    push_signed(&l, 0.0f);
    push_around(&l, FLT_TRUE_MIN);
    push_around(&l, FLT_MIN);
    push_around(&l, FLT_MAX);
    push_signed(&l, INFINITY);
    for (int i = 0; i < 2000; i++)
        push_signed(&l, float_of((uint32_t)(keel_rng_next(rng) & 0x007fffffu))); /* subnormal */
    for (int e = 1; e < 255; e++) /* a power of two and its neighbours at every exponent */
        push_around(&l, ldexpf(1.0f, e - 127));

    /* f16: every midpoint between neighbouring finite values (and the floats beside it), every
     * value: the whole subnormal range with its boundaries, ties at every exponent */
    for (uint32_t k = 0; k <= fmt_f16.max_finite; k++) {
        const double v = fmt_f16.table[k];
        const double next = k == fmt_f16.max_finite ? fmt_f16.overflow : fmt_f16.table[k + 1];
        push_around(&l, (float)v);
        push_around(&l, (float)((v + next) / 2)); /* exact: a float32 */
    }
    /* the f16 overflow threshold: 65504 is the largest, 65520 the midpoint to 2^16 (a tie that
     * goes to Inf, 65504's pattern being odd) */
    push_around(&l, 65504.0f);
    push_around(&l, 65519.0f);
    push_around(&l, 65520.0f);
    push_around(&l, 65536.0f);
    push_around(&l, 1e5f);
    /* f16 subnormals: a quarter, a half and three quarters of the smallest, around 2^-25 */
    push_around(&l, 0x1p-26f);
    push_around(&l, 0x1p-25f);
    push_around(&l, 0x3p-26f);
    push_around(&l, 0x1p-14f - 0x1p-25f);

    /* bf16: every midpoint between neighbours (a tie, pattern 0x....8000) and the floats beside
     * it, every value */
    for (uint32_t k = 0; k <= fmt_bf16.max_finite; k++) {
        const float v = float_of(k << 16);
        const float mid = float_of((k << 16) | 0x8000u);
        push_signed(&l, v);
        push_around(&l, mid);
    }
    /* bf16 overflow: max finite 0x7f7f (odd), its midpoint to 2^128 rounds to Inf */
    push_around(&l, float_of(0x7f7f0000u));
    push_around(&l, float_of(0x7f7f8000u));
    return l;
}

/* NaNs with various payloads and signs. */
static flist nan_values(keel_rng *rng)
{
    static const uint32_t fixed[] = {0x7fc00000u, 0x7f800001u, 0x7f800002u, 0x7fa00000u,
                                     0x7fffffffu, 0x7fbfffffu, 0x7f802000u, 0x7f801fffu,
                                     0x7f800100u, 0x7f810000u, 0x7f80ffffu, 0x7fc00001u,
                                     0x7fe00000u, 0x7f900000u, 0x7f804000u};
    flist l = {NULL, 0, 0};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        push(&l, float_of(fixed[i]));
        push(&l, float_of(fixed[i] | 0x80000000u));
    }
    for (int i = 0; i < 10000; i++) {
        uint32_t payload = (uint32_t)(keel_rng_next(rng) & 0x7fffffu);
        if (!payload)
            payload = 1;
        push(&l, float_of((uint32_t)(keel_rng_next(rng) & 0x80000000u) | 0x7f800000u | payload));
    }
    return l;
}

enum { BATCH = 4096 };

static void check_from_list(const format *f, int which, const char *what, const flist *l)
{
    uint16_t *want = malloc(BATCH * sizeof(uint16_t)), *got = malloc(BATCH * sizeof(uint16_t));
    if (!want || !got)
        test_fatal("out of memory");
    from_stats s;
    memset(&s, 0, sizeof s);
    for (size_t i = 0; i < l->n; i += BATCH) {
        const size_t n = l->n - i < BATCH ? l->n - i : BATCH;
        check_from_batch(f, which, l->v + i, n, want, got, &s);
    }
    report_from(f, what, &s);
    free(want);
    free(got);
}

/* A NaN gives a NaN: the result's exponent all ones and fraction nonzero (never Inf), sign kept. */
static void check_nan_stays_nan(const flist *nans)
{
    long lost = 0;
    uint16_t out[2];
    for (size_t i = 0; i < nans->n; i++)
        for (int p = 0; p < n_paths; p++) {
            paths[p].cv->f32_to_f16(nans->v + i, out, 1);
            paths[p].cv->f32_to_bf16(nans->v + i, out + 1, 1);
            const uint16_t sign = signbit(nans->v[i]) ? 0x8000 : 0;
            if (!((out[0] & 0x7c00) == 0x7c00 && (out[0] & 0x3ff) && (out[0] & 0x8000) == sign))
                lost++;
            if (!((out[1] & 0x7f80) == 0x7f80 && (out[1] & 0x7f) && (out[1] & 0x8000) == sign))
                lost++;
        }
    test_check(lost == 0, "f32 -> f16/bf16: %ld NaN conversions gave a non-NaN or lost the sign",
               lost);
}

/* A million random bit patterns, then every step-th pattern of the 2^32. */
static void check_from_random(keel_rng *rng)
{
    float *src = test_alloc(BATCH);
    uint16_t *want = malloc(BATCH * sizeof(uint16_t)), *got = malloc(BATCH * sizeof(uint16_t));
    if (!want || !got)
        test_fatal("out of memory");
    from_stats s16, sbf;
    memset(&s16, 0, sizeof s16);
    memset(&sbf, 0, sizeof sbf);
    for (long done = 0; done < 1000000; done += BATCH) {
        for (size_t i = 0; i < BATCH; i++)
            src[i] = float_of((uint32_t)keel_rng_next(rng));
        check_from_batch(&fmt_f16, 1, src, BATCH, want, got, &s16);
        check_from_batch(&fmt_bf16, 0, src, BATCH, want, got, &sbf);
    }
    report_from(&fmt_f16, "random bit patterns", &s16);
    report_from(&fmt_bf16, "random bit patterns", &sbf);

    /* an odd step, so the sweep visits every residue of the low bits; larger in the quick sweep */
    const uint64_t step = test_quick() ? 8191 : 509;
    const uint64_t start = keel_rng_next(rng) % step;
    memset(&s16, 0, sizeof s16);
    memset(&sbf, 0, sizeof sbf);
    size_t n = 0;
    for (uint64_t u = start; u < (UINT64_C(1) << 32); u += step) {
        src[n++] = float_of((uint32_t)u);
        if (n == BATCH || u + step >= (UINT64_C(1) << 32)) {
            check_from_batch(&fmt_f16, 1, src, n, want, got, &s16);
            check_from_batch(&fmt_bf16, 0, src, n, want, got, &sbf);
            n = 0;
        }
    }
    printf("strided sweep: every %" PRIu64 "th pattern from %" PRIu64 ": %ld values per dtype\n",
           step, start, s16.values);
    report_from(&fmt_f16, "strided sweep of 2^32", &s16);
    report_from(&fmt_bf16, "strided sweep of 2^32", &sbf);
    free(src);
    free(want);
    free(got);
}

/* Lengths 1..40 and more at offsets 0..3 of a mix of special and random values: each path
 * equals the oracle (so the scalar tail and the vector body agree) and writes nothing past n. */
static void check_from_lengths(keel_rng *rng, const flist *specials)
{
    enum { MAXN = 4100 };
    float *src = test_alloc(MAXN + 8);
    uint16_t *dst = malloc((MAXN + 16) * sizeof(uint16_t));
    if (!dst)
        test_fatal("out of memory");
    static const size_t extra[] = {47, 64, 100, 129, 255, 1000, 4097};
    long bad = 0, written = 0;
    size_t bad_n = 0, bad_off = 0;
    const char *bad_isa = "";
    const char *bad_fmt = "";
    for (size_t k = 0; k < 40 + sizeof extra / sizeof extra[0]; k++) {
        const size_t n = k < 40 ? k + 1 : extra[k - 40];
        for (size_t off = 0; off < 4; off++) {
            for (size_t i = 0; i < n + 8; i++)
                src[i] = keel_rng_below(rng, 2) ? specials->v[keel_rng_below(rng, specials->n)]
                                                : float_of((uint32_t)keel_rng_next(rng));
            for (int p = 0; p < n_paths; p++)
                for (int which = 0; which <= 1; which++) {
                    const format *f = which ? &fmt_f16 : &fmt_bf16;
                    keel_from_f32_fn fn = which ? paths[p].cv->f32_to_f16 : paths[p].cv->f32_to_bf16;
                    for (size_t i = 0; i < n + 16; i++)
                        dst[i] = 0xa5a5;
                    fn(src + off, dst + off, n);
                    int ok = 1;
                    for (size_t i = 0; i < off; i++)
                        ok &= dst[i] == 0xa5a5;
                    for (size_t i = off + n; i < n + 16; i++)
                        ok &= dst[i] == 0xa5a5;
                    if (!ok)
                        written++;
                    for (size_t i = 0; i < n && ok; i++)
                        ok = dst[off + i] == oracle(f, src[off + i]);
                    if (!ok && !bad++) {
                        bad_n = n;
                        bad_off = off;
                        bad_isa = paths[p].name;
                        bad_fmt = f->name;
                    }
                }
        }
    }
    test_check(bad == 0 && written == 0,
               "f32 -> dtype on short/unaligned calls: %ld wrong (%ld wrote outside), first f32 -> "
               "%s on %s n=%zu offset %zu", bad, written, bad_fmt, bad_isa, bad_n,
               bad_off);
    free(src);
    free(dst);
}

/* ---- keel_quantize_i8 ------------------------------------------------------------------------ */

/* clamp(round_half_even(y / s), -127, 127), NaN -> 0, computed in double: the quotient is the
 * float32 quotient (the double quotient rounded to float: correctly rounded, as one float
 * division is), rounded with rint (half to even in the default rounding mode). */
static int quant_oracle(float y, float s)
{
    const double v = (double)(float)((double)y / (double)s);
    if (isnan(v))
        return 0;
    if (v >= 127.0)
        return 127;
    if (v <= -127.0)
        return -127;
    return (int)rint(v);
}

static void check_quantize(keel_rng *rng)
{
    long bad = 0, n = 0, ties = 0, exact_differs = 0;
    float bad_y = 0, bad_s = 0;
    int bad_got = 0, bad_want = 0;
#define QCHECK(yv, sv)                                                                           \
    do {                                                                                         \
        const float y_ = (yv), s_ = (sv);                                                        \
        const int got_ = keel_quantize_i8(y_, s_), want_ = quant_oracle(y_, s_);               \
        n++;                                                                                     \
        if (got_ != want_ && !bad++) {                                                           \
            bad_y = y_;                                                                          \
            bad_s = s_;                                                                          \
            bad_got = got_;                                                                      \
            bad_want = want_;                                                                    \
        }                                                                                        \
    } while (0)

    /* exact ties k + 1/2 (and the floats beside them) with power-of-two scales, through the
     * clamp: 126.5 -> 126, 127.5 -> 127, -0.5 -> 0, 1.5 -> 2, 2.5 -> 2 */
    static const float pow2_scales[] = {1.0f, 0.5f, 0x1p-10f, 0x1p-100f, 0x1p20f, 0x1p-126f};
    for (size_t si = 0; si < sizeof pow2_scales / sizeof pow2_scales[0]; si++)
        for (int k = -140; k <= 140; k++) {
            const float s = pow2_scales[si];
            const float y = ((float)k + 0.5f) * s;
            QCHECK(y, s);
            QCHECK(nextafterf(y, INFINITY), s);
            QCHECK(nextafterf(y, -INFINITY), s);
            QCHECK((float)k * s, s);
            ties++;
        }
    test_check(keel_quantize_i8(0.5f, 1.0f) == 0 && keel_quantize_i8(1.5f, 1.0f) == 2 &&
                   keel_quantize_i8(2.5f, 1.0f) == 2 && keel_quantize_i8(-0.5f, 1.0f) == 0 &&
                   keel_quantize_i8(-1.5f, 1.0f) == -2 && keel_quantize_i8(126.5f, 1.0f) == 126 &&
                   keel_quantize_i8(-126.5f, 1.0f) == -126 &&
                   keel_quantize_i8(127.5f, 1.0f) == 127 && keel_quantize_i8(128.0f, 1.0f) == 127 &&
                   keel_quantize_i8(-1000.0f, 1.0f) == -127,
               "keel_quantize_i8: half-even ties or the clamp wrong on hand-picked values");
    /* NaN, infinities, zero scales */
    test_check(keel_quantize_i8(NAN, 1.0f) == 0 && keel_quantize_i8(-NAN, 0.5f) == 0 &&
                   keel_quantize_i8(1.0f, NAN) == 0 && keel_quantize_i8(0.0f, 0.0f) == 0 &&
                   keel_quantize_i8(INFINITY, INFINITY) == 0,
               "keel_quantize_i8: a NaN quotient must give 0");
    test_check(keel_quantize_i8(INFINITY, 1.0f) == 127 && keel_quantize_i8(-INFINITY, 1.0f) == -127 &&
                   keel_quantize_i8(1.0f, 0.0f) == 127 && keel_quantize_i8(-1.0f, 0.0f) == -127 &&
                   keel_quantize_i8(FLT_MAX, FLT_TRUE_MIN) == 127 &&
                   keel_quantize_i8(FLT_TRUE_MIN, FLT_MAX) == 0,
               "keel_quantize_i8: infinite or huge quotients must clamp, tiny ones give 0");

    /* random values and scales over many magnitudes, quotients mostly in [-160, 160] */
    for (int i = 0; i < 2000000; i++) {
        const float s = (float)pow(10.0, keel_rng_range(rng, -30.0, 30.0));
        const double q = keel_rng_range(rng, -160.0, 160.0);
        float y = (float)(q * (double)s);
        if (keel_rng_below(rng, 8) == 0) /* a quotient right at a half */
            y = (float)((floor(q) + 0.5) * (double)s);
        QCHECK(y, s);
        /* where the exact quotient and the float32 quotient round differently (documented:
         * keel rounds the float32 quotient) */
        const double exact = (double)y / (double)s;
        if (fabs(exact) < 127.0 && rint(exact) != (double)quant_oracle(y, s))
            exact_differs++;
    }
    for (int i = 0; i < 1000000; i++) { /* random bit patterns for both */
        QCHECK(float_of((uint32_t)keel_rng_next(rng)), float_of((uint32_t)keel_rng_next(rng)));
    }
#undef QCHECK
    printf("keel_quantize_i8: %ld values (%ld exact ties), %ld where the float32 quotient rounds "
           "differently from the exact one\n", n, ties, exact_differs);
    test_check(bad == 0,
               "keel_quantize_i8: %ld of %ld wrong, first y=%a s=%a: got %d want %d", bad, n,
               (double)bad_y, (double)bad_s, bad_got, bad_want);
}

/* What the quantize kernels' comparisons found: wrong values (the first kept), calls that wrote
 * outside their row, absmax results that differ from the scalar loop. */
typedef struct quant_tally {
    long bad, written, amax_bad, values;
    const char *path;
    float y, s;
    int got, want;
    size_t n;
} quant_tally;

/* Every path's quantize_i8 of y[off .. off + n) with scale s into q + off, q's qlen bytes set to
 * a guard first (nothing outside the row may change), against keel_quantize_i8 element for
 * element; and its absmax against the scalar loop's bits (NaN payloads included). */
static void quant_compare_paths(quant_tally *t, const float *y, size_t off, size_t n, float s,
                                int8_t *q, size_t qlen)
{
    const uint32_t amax_want = bits_of(keel_absmax_f32__scalar(y + off, n));
    for (int p = 0; p < n_paths; p++) {
        memset(q, 0x5a, qlen);
        paths[p].cv->quantize_i8(y + off, q + off, n, s);
        int ok = 1;
        for (size_t i = 0; i < off; i++)
            ok &= q[i] == 0x5a;
        for (size_t i = off + n; i < qlen; i++)
            ok &= q[i] == 0x5a;
        t->written += !ok;
        for (size_t i = 0; i < n; i++) {
            const int want = keel_quantize_i8(y[off + i], s);
            if (q[off + i] != want && !t->bad++) {
                t->path = paths[p].name;
                t->y = y[off + i];
                t->s = s;
                t->got = q[off + i];
                t->want = want;
                t->n = n;
            }
        }
        if (bits_of(paths[p].cv->absmax(y + off, n)) != amax_want)
            t->amax_bad++;
        t->values += (long)n;
    }
}

static void quant_report(const char *what, const quant_tally *t)
{
    test_check(t->bad == 0 && t->written == 0,
               "quantize_i8 %s: %ld wrong (%ld calls wrote outside), first on %s n=%zu: y=%a s=%a "
               "got %d want %d",
               what, t->bad, t->written, t->path, t->n, (double)t->y, (double)t->s, t->got,
               t->want);
    test_check(t->amax_bad == 0, "absmax %s: %ld rows differ from the scalar loop", what,
               t->amax_bad);
}

/* Every path's quantize_i8 kernel equals keel_quantize_i8 element for element (the vector
 * kernels take a reciprocal where it provably rounds as the division does, so values beside
 * every half-integer boundary are swept densely), and absmax equals the scalar loop bit for bit
 * (NaN payloads included), at every length 0..40 and more, unaligned, writing nothing past n. */
static void check_quantize_paths(keel_rng *rng)
{
    enum { MAXN = 1100 };
    float *y = test_alloc(MAXN + 8);
    int8_t *q = malloc(MAXN + 32);
    if (!q)
        test_fatal("out of memory");
    static const float fixed_scales[] = {1.0f, 3.0f / 127.0f, 0.5f, 0x1p-10f, 0x1p-126f, 0x1p-127f,
                                         1e-39f, 0x1p-149f, 2e-38f, 1e38f, 3e38f, FLT_MAX, -0.75f,
                                         0.0f, -0.0f, INFINITY, -INFINITY, NAN, 0.1f, 7.0f};
    const size_t n_fixed = sizeof fixed_scales / sizeof fixed_scales[0];
    static const size_t extra[] = {47, 64, 100, 129, 255, 768, 1000, 1093};
    quant_tally tally = {0, 0, 0, 0, "", 0, 0, 0, 0, 0};
    long amax_zero_bad = 0;
    for (int trial = 0; trial < 600; trial++) {
        const size_t k = (size_t)trial % (40 + sizeof extra / sizeof extra[0]);
        const size_t n = k < 40 ? k + 1 : extra[k - 40];
        const size_t off = keel_rng_below(rng, 4);
        const float s = trial % 3 == 0 ? fixed_scales[keel_rng_below(rng, n_fixed)]
                                       : (float)pow(10.0, keel_rng_range(rng, -30.0, 30.0));
        const double ss = isfinite(s) && s != 0.0f ? (double)s : 1.0;
        const int kind = trial % 5;
        for (size_t i = 0; i < n + 8; i++) {
            float v;
            if (kind == 4) { /* random patterns, NaNs and Infs among them */
                v = float_of((uint32_t)keel_rng_next(rng));
            } else {
                /* a half-integer boundary (or an integer, or a clamp edge) times s, then moved a
                 * few floats either way: where reciprocal and division could part */
                const double base = (double)((int)keel_rng_below(rng, 301) - 150) +
                                    (keel_rng_below(rng, 4) ? 0.5 : 0.0);
                v = (float)(base * ss);
                const int steps = (int)keel_rng_below(rng, 129) - 64;
                for (int t = 0; t < (steps < 0 ? -steps : steps) && kind != 0; t++)
                    v = nextafterf(v, steps < 0 ? -INFINITY : INFINITY);
                if (kind == 3)
                    v = (float)(keel_rng_range(rng, -160.0, 160.0) * ss);
            }
            y[i] = v;
        }
        /* now and then a NaN, an Inf, a -0 in the row (absmax) */
        if (trial % 7 == 0)
            y[off + keel_rng_below(rng, n)] = trial % 14 ? -NAN : float_of(0x7fa00001u);
        if (trial % 11 == 0)
            y[off + keel_rng_below(rng, n)] = -INFINITY;
        if (trial % 13 == 0)
            y[off + keel_rng_below(rng, n)] = -0.0f;
        quant_compare_paths(&tally, y, off, n, s, q, MAXN + 32);
    }
    for (int p = 0; p < n_paths; p++) /* n == 0 */
        if (bits_of(paths[p].cv->absmax(y, 0)) != 0)
            amax_zero_bad++;

    /* dense: every float within 200 of each boundary k + 1/2 (k = -130..129) times s, for a few
     * scales, through the vector bodies */
    static const float dense_scales[] = {1.0f, 3.0f / 127.0f, 0.013f, 1e-20f, 5e17f};
    enum { W = 200, SPAN = 2 * W + 1 };
    float *row = test_alloc(SPAN);
    int8_t *qr = malloc(SPAN);
    if (!qr)
        test_fatal("out of memory");
    for (size_t si = 0; si < sizeof dense_scales / sizeof dense_scales[0]; si++) {
        const float s = dense_scales[si];
        for (int kk = -130; kk <= 129; kk++) {
            float v = (float)(((double)kk + 0.5) * (double)s);
            for (int t = 0; t < W; t++)
                v = nextafterf(v, -INFINITY);
            for (int t = 0; t < SPAN; t++) {
                row[t] = v;
                v = nextafterf(v, INFINITY);
            }
            quant_compare_paths(&tally, row, 0, SPAN, s, qr, SPAN);
        }
    }
    printf("quantize_i8/absmax kernels: %ld values on %d paths\n", tally.values, n_paths);
    quant_report("kernels", &tally);
    test_check(amax_zero_bad == 0, "absmax kernels: an empty row must give +0.0");
    free(row);
    free(qr);
    free(y);
    free(q);
}

/* Every path's quantize_i8 and absmax at every length 0..100 (every tail of the vector bodies,
 * whose steps are KV_WIDTH and 4 * KV_WIDTH floats, up to 16 and 64, and the lengths that mix
 * them), at offsets 0..3, on rows drawn from a catalog of hard values: quotients at and beside
 * half-integers (exact ties, the reciprocal check's 2^-11 margin, a few floats either way), at
 * the clamp (127, 127.5, 128), at the check's limit 200 and the proof's bound 256, NaNs, Infs,
 * zeros, subnormals, FLT_MAX; scales normal, subnormal, zero, huge, infinite and NaN (the
 * division path). A third of the rows have no NaN, so that absmax takes the vector maxima. */
static void check_quantize_edges(keel_rng *rng)
{
    static const float scales[] = {1.0f,      3.0f / 127.0f, 0.013f,    -2.5f,     1e-20f, 5e17f,
                                   0x1p-126f, 0x1p-127f,     0x1p-128f, 0x1p-149f, 0.0f,   -0.0f,
                                   3e38f,     FLT_MAX,       INFINITY,  -INFINITY, NAN};
    static const double ks[] = {0, 1, 2, 63, 126, 127, 128, 199, 200, 201, 255, 256, 257};
    static const double frac[] = {0.0,           0.5,           0.5 - 0x1p-11, 0.5 + 0x1p-11,
                                  0.5 - 0x1p-12, 0.5 + 0x1p-12, 0.5 - 0x1p-10, 0.25};
    enum { MAXN = 100, CAT = 4096 };
    const size_t n_scales = sizeof scales / sizeof scales[0];
    float *cat = test_alloc(CAT), *y = test_alloc(MAXN + 4);
    int8_t *q = malloc(MAXN + 64);
    if (!q)
        test_fatal("out of memory");
    quant_tally tally = {0, 0, 0, 0, "", 0, 0, 0, 0, 0};
    for (size_t si = 0; si < n_scales; si++) {
        const float s = scales[si];
        const double ss = isfinite(s) && s != 0.0f ? (double)s : 1.0;
        /* the catalog of this scale */
        size_t nc = 0;
        while (nc < CAT - 16) {
            const double k = ks[keel_rng_below(rng, sizeof ks / sizeof ks[0])];
            const double f = frac[keel_rng_below(rng, sizeof frac / sizeof frac[0])];
            float v = (float)((keel_rng_below(rng, 2) ? -1.0 : 1.0) * (k + f) * ss);
            const int steps = (int)keel_rng_below(rng, 5) - 2;
            for (int t = 0; t < (steps < 0 ? -steps : steps); t++)
                v = nextafterf(v, steps < 0 ? -INFINITY : INFINITY);
            cat[nc++] = v;
        }
        static const uint32_t specials[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xffa5a5a5u,
                                            0x7f800000u, 0xff800000u, 0x00000000u, 0x80000000u,
                                            0x00000001u, 0x80000001u, 0x007fffffu, 0x00800000u,
                                            0x7f7fffffu, 0xff7fffffu, 0x3f000000u, 0xbfc00000u};
        for (size_t k = 0; k < 16; k++)
            cat[nc++] = float_of(specials[k]);
        for (size_t n = 0; n <= MAXN; n++) {
            for (int rep = 0; rep < 3; rep++) {
                const size_t off = keel_rng_below(rng, 4);
                for (size_t i = 0; i < n; i++) {
                    float v;
                    do { /* a third of the rows without NaN; the specials now and then */
                        v = cat[keel_rng_below(rng, 8) ? keel_rng_below(rng, CAT - 16)
                                                       : CAT - 16 + keel_rng_below(rng, 16)];
                    } while (rep == 0 && isnan(v));
                    y[off + i] = v;
                }
                quant_compare_paths(&tally, y, off, n, s, q, MAXN + 64);
            }
        }
    }
    printf("quantize_i8/absmax edges: %ld values, lengths 0..%d, %zu scales, %d paths\n",
           tally.values, (int)MAXN, n_scales, n_paths);
    quant_report("edges", &tally);
    free(cat);
    free(y);
    free(q);
}

/* keel_convert, the public conversion, on every path: rows of random patterns (NaNs, Infs,
 * subnormals among them) at odd strides give the scalar definition's bits for every pair of
 * dtypes (bf16 <-> f16: through float32, one rounding); bad calls are refused and write
 * nothing. */
static void check_keel_convert(keel_rng *rng)
{
    enum { ROWS = 7, DIM = 1500, STRIDE = 1503 };
    const keel_dtype dts[3] = {KEEL_F32, KEEL_BF16, KEEL_F16};
    float *f = test_alloc(ROWS * STRIDE), *fo = test_alloc(ROWS * STRIDE);
    uint16_t *h = malloc(ROWS * STRIDE * sizeof *h), *ho = malloc(ROWS * STRIDE * sizeof *ho);
    if (!h || !ho)
        test_fatal("out of memory");
    for (size_t i = 0; i < ROWS * STRIDE; i++) {
        f[i] = float_of((uint32_t)keel_rng_next(rng));
        h[i] = (uint16_t)keel_rng_next(rng);
    }
    long bad = 0, calls = 0;
    for (int p = 0; p < n_paths; p++) {
        keel_ctx *ctx = NULL;
        if (keel_ctx_create(&ctx, 1) != KEEL_OK || keel_ctx_set_isa(ctx, paths[p].isa) != KEEL_OK)
            test_fatal(keel_last_error());
        for (int si = 0; si < 3; si++)
            for (int di = 0; di < 3; di++) {
                const keel_dtype sd = dts[si], dd = dts[di];
                const keel_tensor src = {sd == KEEL_F32 ? (void *)f : (void *)h, sd, STRIDE};
                const keel_tensor dst = {dd == KEEL_F32 ? (void *)fo : (void *)ho, dd, STRIDE};
                memset(fo, 0x5a, ROWS * STRIDE * sizeof *fo);
                memset(ho, 0x5a, ROWS * STRIDE * sizeof *ho);
                calls++;
                if (keel_convert(ctx, ROWS, DIM, src, dst) != KEEL_OK) {
                    bad++;
                    continue;
                }
                for (size_t r = 0; r < ROWS; r++)
                    for (size_t j = 0; j < STRIDE; j++) {
                        const size_t i = r * STRIDE + j;
                        /* the value as float32 (exact from bf16/f16), then rounded to dd */
                        const float v = sd == KEEL_F32    ? f[i]
                                        : sd == KEEL_BF16 ? keel_bf16_bits_to_f32(h[i])
                                                          : keel_f16_bits_to_f32(h[i]);
                        const uint32_t want = j >= DIM          ? (dd == KEEL_F32 ? 0x5a5a5a5au : 0x5a5a)
                                              : dd == KEEL_F32  ? bits_of(v)
                                              : dd == KEEL_BF16 ? keel_f32_to_bf16_bits(v)
                                                                : keel_f32_to_f16_bits(v);
                        const uint32_t got = dd == KEEL_F32 ? bits_of(fo[i]) : ho[i];
                        /* a signalling NaN copied as is (same dtype) keeps its bits */
                        if (got != (sd == dd && j < DIM ? (dd == KEEL_F32 ? bits_of(f[i]) : h[i])
                                                        : want) &&
                            !bad++)
                            printf("keel_convert %s %s -> %s: [%zu][%zu] got 0x%x want 0x%x\n",
                                   paths[p].name, keel_dtype_name(sd), keel_dtype_name(dd), r,
                                   j, (unsigned)got, (unsigned)want);
                    }
            }
        /* refused, nothing written: i8, overlap of different dtypes, NULL, a short stride */
        memset(ho, 0x5a, ROWS * STRIDE * sizeof *ho);
        const keel_tensor fsrc = {f, KEEL_F32, STRIDE}, hdst = {ho, KEEL_BF16, STRIDE};
        const keel_tensor i8dst = {ho, KEEL_I8, STRIDE}, nodst = {NULL, KEEL_BF16, STRIDE};
        const keel_tensor short_dst = {ho, KEEL_BF16, DIM - 1};
        const keel_tensor over = {(uint16_t *)(void *)f + 1, KEEL_BF16, STRIDE};
        test_check(keel_convert(ctx, ROWS, DIM, fsrc, i8dst) == KEEL_EUNSUPPORTED &&
                       keel_convert(ctx, ROWS, DIM, fsrc, nodst) == KEEL_ENULL &&
                       keel_convert(ctx, ROWS, DIM, fsrc, short_dst) != KEEL_OK &&
                       keel_convert(ctx, ROWS, DIM, fsrc, over) == KEEL_EINVAL &&
                       keel_convert(NULL, ROWS, DIM, fsrc, hdst) == KEEL_ENULL,
                   "keel_convert on %s: a bad call was not refused as documented (last: %s)",
                   paths[p].name, keel_last_error());
        int untouched = 1;
        for (size_t i = 0; i < ROWS * STRIDE; i++)
            untouched &= ho[i] == 0x5a5a;
        test_check(untouched, "keel_convert on %s: a refused call wrote its output", paths[p].name);
        keel_ctx_destroy(ctx);
    }
    printf("keel_convert: %ld calls (9 dtype pairs on %d paths)\n", calls, n_paths);
    test_check(bad == 0, "keel_convert: %ld calls or values differ from the scalar definition",
               bad);
    free(f);
    free(fo);
    free(h);
    free(ho);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_convert"));
    find_paths();
    format_init(&fmt_f16);
    format_init(&fmt_bf16);

    check_to_f32(&fmt_f16, 1);
    check_to_f32(&fmt_bf16, 0);

    flist specials = special_values(&rng);
    flist nans = nan_values(&rng);
    printf("special values: %zu, NaNs: %zu\n", specials.n, nans.n);
    check_from_list(&fmt_f16, 1, "special values", &specials);
    check_from_list(&fmt_bf16, 0, "special values", &specials);
    check_from_list(&fmt_f16, 1, "NaNs", &nans);
    check_from_list(&fmt_bf16, 0, "NaNs", &nans);
    check_nan_stays_nan(&nans);
    check_from_random(&rng);
    check_from_lengths(&rng, &specials);

    check_quantize(&rng);
    check_quantize_paths(&rng);
    check_quantize_edges(&rng);
    check_keel_convert(&rng);

    free(specials.v);
    free(nans.v);
    free(fmt_f16.table);
    free(fmt_bf16.table);
    return test_finish();
}
