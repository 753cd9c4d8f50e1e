/*
 * test_dyt_tanh: DyT's tanh and 1 - tanh^2 (src/kernels/dyt_tanh.h), the definition itself,
 * through the scalar DyT kernels (compiled with the library's flags: y = tanh(u) with alpha 1
 * and no gamma/beta, dx = 1 - tanh(u)^2 with dy 1):
 *  - accuracy against double over every 64th float of [0, 43.5] (from an offset the seed picks),
 *    the bounds docs/blocks.md states: t within 1.5 ulps of tanh, s within 3.5 ulps of sech^2
 *    (measured over every float: 1.47 and 3.22 ulps); below 0.625 (the polynomial) 1 and 1.5
 *    ulps (measured: 0.77 and 1.19);
 *  - past 43.5: t = 1 exactly and s = 0; odd symmetry bit for bit (t(-u) = -t(u), s(-u) = s(u);
 *    on a quarter of the sample); t(+-0) = +-0, s = 1; t(+-inf) = +-1, s = 0; a NaN comes back
 *    as the same bits (payload and sign; a signalling one quieted by u = alpha * x);
 *  - every SIMD path gives the scalar bits on all of those arguments (test_kernels_bitwise and
 *    test_block_ops check the kernels on other data).
 */
#include <float.h>
#include <math.h>

#include "kernels.h"
#include "test_common.h"

/* every STRIDE-th float; in the quick sweep (test_common.h: the sanitizer runs) every 512th */
enum { CHUNK = 1 << 16 };
#define STRIDE (test_quick() ? 512u : 64u)

static float f_of(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t b_of(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* t and s of u[0..n) through path k: t by the forward (alpha 1, y = t), s by the backward
 * (dy 1, alpha 1, no gamma: dx = (1 * 1) * s) */
static void tanh_sech2_path(const keel_kernels *k, const float *u, size_t n, float *t, float *s,
                            const float *ones)
{
    k->f32_dyt_fwd(1, n, u, n, t, n, 1.0f, NULL, NULL);
    k->f32_dyt_bwd(1, n, ones, n, u, n, 1.0f, NULL, s, n, 0, NULL, NULL, NULL);
}

/* sech^2 of a >= 0 in double, th = tanh(a): 1 - th^2 below 1, 4e / (1 + e)^2 (e = exp(-2a))
 * above (no cancellation) */
static double sech2(double a, double th)
{
    if (a < 1.0)
        return 1.0 - th * th;
    const double e = exp(-2.0 * a);
    return 4.0 * e / ((1.0 + e) * (1.0 + e));
}

/* The worst errors seen, [0]: below 0.625 (the polynomial), [1]: above (the exp form). */
typedef struct worst {
    double t[2], s[2];
    float at_t[2], at_s[2];
} worst;

/* Checks one chunk u[0..n) of the scalar definition and compares every SIMD path's bits. */
static void check_chunk(const float *u, size_t n, int symmetry, float *t, float *s, float *t2,
                        float *s2, const float *ones, worst *w)
{
    const keel_kernels *scalar = keel_kernels_for(KEEL_ISA_SCALAR);
    tanh_sech2_path(scalar, u, n, t, s, ones);
    for (size_t i = 0; i < n; i++) {
        const float a = u[i];
        if (!(a >= 0.0f) || isinf(a))
            continue; /* the sweep's values are in [0, 50]; special values are checked apart */
        if (a > 43.5f) {
            test_check(t[i] == 1.0f && b_of(s[i]) == 0, "u = %a: t = %a, s = %a (want 1 and +0)",
                       (double)a, (double)t[i], (double)s[i]);
            continue;
        }
        const double th = tanh((double)a), et = fabs(t[i] - th) / keel_ulp32(th);
        const double rs = sech2(a, th), es = fabs(s[i] - rs) / keel_ulp32(rs);
        const int b = a >= 0.625f;
        if (!(et <= w->t[b]))
            w->t[b] = et, w->at_t[b] = a;
        if (!(es <= w->s[b]))
            w->s[b] = es, w->at_s[b] = a;
    }
    /* odd symmetry, bit for bit (of some chunks: the scalar path's fmaf calls are slow) */
    for (size_t i = 0; symmetry && i < n; i++)
        t2[i] = -u[i];
    float *tn = t2 + n, *sn = s2 + n;
    if (symmetry)
        tanh_sech2_path(scalar, t2, n, tn, sn, ones);
    for (size_t i = 0; symmetry && i < n; i++)
        if (!isnan(u[i]) &&
            !test_check(b_of(tn[i]) == (b_of(t[i]) ^ 0x80000000u) && b_of(sn[i]) == b_of(s[i]),
                        "u = %a: t(-u) = %a, s(-u) = %a; t(u) = %a, s(u) = %a", (double)u[i],
                        (double)tn[i], (double)sn[i], (double)t[i], (double)s[i]))
            break;
    /* every path: the scalar bits */
    keel_isa isas[3];
    const int nisa = test_isas(isas);
    for (int p = 0; p < nisa; p++) {
        if (isas[p] == KEEL_ISA_SCALAR)
            continue;
        const keel_kernels *k = keel_kernels_for(isas[p]);
        tanh_sech2_path(k, u, n, t2, s2, ones);
        const size_t dt = test_first_diff(t2, t, n), ds = test_first_diff(s2, s, n);
        test_check(dt == n && ds == n,
                   "path %s: not the scalar bits (t first differs at u = %a: %a, scalar %a; s at "
                   "u = %a: %a, scalar %a)",
                   k->name, dt < n ? (double)u[dt] : 0.0, dt < n ? (double)t2[dt] : 0.0,
                   dt < n ? (double)t[dt] : 0.0, ds < n ? (double)u[ds] : 0.0,
                   ds < n ? (double)s2[ds] : 0.0, ds < n ? (double)s[ds] : 0.0);
    }
}

int main(void)
{
    const uint64_t seed = test_begin("test_dyt_tanh");
    float *u = test_alloc(CHUNK), *t = test_alloc(CHUNK), *s = test_alloc(CHUNK);
    float *t2 = test_alloc(2 * CHUNK), *s2 = test_alloc(2 * CHUNK), *ones = test_alloc(CHUNK);
    for (size_t i = 0; i < CHUNK; i++)
        ones[i] = 1.0f;
    worst w = {{0.0, 0.0}, {0.0, 0.0}, {0.0f, 0.0f}, {0.0f, 0.0f}};

    /* every STRIDE-th float of [0, 50], from an offset the seed picks */
    const uint32_t first = (uint32_t)(seed % STRIDE), last = b_of(50.0f);
    size_t n = 0, count = 0, chunks = 0;
    for (uint64_t b = first; b <= last; b += STRIDE) {
        u[n++] = f_of((uint32_t)b);
        if (n == CHUNK || b + STRIDE > last) {
            check_chunk(u, n, chunks++ % 4 == 0, t, s, t2, s2, ones, &w);
            count += n;
            n = 0;
        }
    }
    /* the boundaries and special values */
    const float special[] = {0.0f, -0.0f, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40f, FLT_MIN, 0x1p-12f,
                             nextafterf(0.625f, 0.0f), 0.625f, nextafterf(0.625f, 1.0f), 9.0f,
                             9.1f, nextafterf(43.5f, 0.0f), 43.5f, nextafterf(43.5f, 50.0f), 88.0f,
                             FLT_MAX, -FLT_MAX, INFINITY, -INFINITY};
    n = sizeof special / sizeof special[0];
    memcpy(u, special, sizeof special);
    check_chunk(u, n, 1, t, s, t2, s2, ones, &w);
    test_check(b_of(t[0]) == 0 && b_of(t[1]) == 0x80000000u && s[0] == 1.0f && s[1] == 1.0f,
               "t(+-0) = %a, %a (want +-0), s = %a, %a", (double)t[0], (double)t[1], (double)s[0],
               (double)s[1]);
    for (size_t i = 2; i < 6; i++)
        test_check(t[i] == u[i] && s[i] == 1.0f, "tiny u = %a: t = %a (want u), s = %a (want 1)",
                   (double)u[i], (double)t[i], (double)s[i]);
    for (size_t i = n - 4; i < n; i++)
        test_check(t[i] == copysignf(1.0f, u[i]) && b_of(s[i]) == 0,
                   "u = %a: t = %a (want +-1), s = %a (want +0)", (double)u[i], (double)t[i],
                   (double)s[i]);

    /* NaN in, the same bits out, on every path: the kernels' u = alpha * x already quiets a
     * signalling NaN (as 1.0f * x does here), tanh then returns that u */
    const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7fc12345u, 0xffd00001u,
                             0x7f800001u, 0xff812345u, 0x7fbfffffu, 0x7fffffffu};
    n = sizeof nans / sizeof nans[0];
    memcpy(u, nans, sizeof nans);
    volatile float one = 1.0f;
    keel_isa isas[3];
    const int nisa = test_isas(isas);
    for (int p = 0; p < nisa; p++) {
        const keel_kernels *k = keel_kernels_for(isas[p]);
        tanh_sech2_path(k, u, n, t, s, ones);
        for (size_t i = 0; i < n; i++) {
            const uint32_t want = b_of(one * u[i]);
            test_check(b_of(t[i]) == want && b_of(s[i]) == want,
                       "path %s: NaN 0x%08x (0x%08x as u) gives t 0x%08x, s 0x%08x", k->name,
                       (unsigned)nans[i], (unsigned)want, (unsigned)b_of(t[i]),
                       (unsigned)b_of(s[i]));
        }
    }

    printf("%zu arguments in [0, 50] (every %uth float from %u), %d paths compared\n", count,
           STRIDE, (unsigned)first, nisa);
    static const double bound_t[2] = {1.0, 1.5}, bound_s[2] = {1.5, 3.5};
    for (int b = 0; b < 2; b++) {
        const char *where = b ? "[0.625, 43.5]" : "[0, 0.625)";
        printf("%s: tanh worst %.3f ulps (at %.9g), 1 - tanh^2 worst %.3f ulps (at %.9g)\n", where,
               w.t[b], (double)w.at_t[b], w.s[b], (double)w.at_s[b]);
        test_check(w.t[b] <= bound_t[b], "%s: tanh error %.3f ulps at %a (bound %g)", where, w.t[b],
                   (double)w.at_t[b], bound_t[b]);
        test_check(w.s[b] <= bound_s[b], "%s: 1 - tanh^2 error %.3f ulps at %a (bound %g)", where,
                   w.s[b], (double)w.at_s[b], bound_s[b]);
    }
    free(u);
    free(t);
    free(s);
    free(t2);
    free(s2);
    free(ones);
    return test_finish();
}
