/* The backward kernels' memory hints (kernels.h: KEEL_KBWD_PREFETCH, KEEL_KBWD_STREAM) never
 * change a bit: every fused add + norm backward of every path, with and without the hints, on
 * packed rows that start 64-byte aligned (streamed) and on offset rows (not streamed), with and
 * without accumulate, h saved or recomputed, statistics given or recomputed, equals the scalar
 * kernel bit for bit. The prefetch hint also sends the SIMD paths with given statistics down
 * their row pipelines (f32_add_layernorm__avx512.c), so these run here on few rows, with tails.
 * (The plain norms' backwards get the same check in test_kernels_bitwise.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel_cases.h"
#include "kernels.h"
#include "test_common.h"

enum { ROWS = 7 };

typedef struct bufs {
    size_t dim, stride, off, len;
    float *x, *r, *h, *dy, *dh, *gamma, *mean, *rstd;
    float *dx0, *dr0; /* the outputs' starting contents (accumulate adds into them) */
} bufs;

static float *normal(keel_rng *rng, size_t n)
{
    float *p = test_alloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)keel_rng_normal(rng);
    return p;
}

static void make(bufs *b, keel_rng *rng, size_t dim, int packed)
{
    b->dim = dim;
    b->stride = packed ? dim : dim + 3;
    b->off = packed ? 0 : 5;
    b->len = b->off + ROWS * b->stride;
    b->x = normal(rng, b->len);
    b->r = normal(rng, b->len);
    b->h = normal(rng, b->len);
    b->dy = normal(rng, b->len);
    b->dh = normal(rng, b->len);
    b->dx0 = normal(rng, b->len);
    b->dr0 = normal(rng, b->len);
    b->gamma = normal(rng, dim);
    b->mean = normal(rng, ROWS);
    b->rstd = test_alloc(ROWS);
    for (size_t i = 0; i < ROWS; i++)
        b->rstd[i] = 0.5f + (float)keel_rng_below(rng, 100) / 50.0f;
}

static void release(bufs *b)
{
    float *all[] = {b->x, b->r, b->h, b->dy, b->dh, b->gamma, b->mean, b->rstd, b->dx0, b->dr0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

typedef struct outs {
    float *dx, *dr, *parts[4];
} outs;

/* One fused backward: rms or LayerNorm, h saved or recomputed, statistics given or
 * recomputed, dr wanted or not (and with it dlambda). */
static void call(const keel_kernels *k, const bufs *b, int rms, int saved_h, int stats,
                 int want_dr, int acc, int hints, outs *o)
{
    const size_t dim = b->dim, s = b->stride, off = b->off;
    o->dx = test_copy(b->dx0, b->len);
    o->dr = test_copy(b->dr0, b->len);
    for (int i = 0; i < 4; i++) {
        o->parts[i] = test_alloc(dim);
        memset(o->parts[i], 0, dim * sizeof(float));
    }
    const keel_f32_res res = {b->x + off, s, b->r + off, s, 1.0f, NULL, NULL};
    keel_f32_res_grads g = {o->dx + off, s, want_dr ? o->dr + off : NULL, s, acc,
                            {o->parts[0], rms ? NULL : o->parts[1], want_dr ? o->parts[2] : NULL,
                             o->parts[3]}, hints};
    const float *h = saved_h ? b->h + off : NULL;
    if (rms)
        k->f32_add_rmsnorm_bwd(ROWS, dim, b->dy + off, s, b->dh + off, s, &res, h, s,
                               stats ? b->rstd : NULL, b->gamma, 1e-5f, &g);
    else
        k->f32_add_layernorm_bwd(ROWS, dim, b->dy + off, s, b->dh + off, s, &res, h, s,
                                 stats ? b->mean : NULL, stats ? b->rstd : NULL, b->gamma,
                                 1e-5f, &g);
}

static void release_outs(outs *o)
{
    free(o->dx);
    free(o->dr);
    for (int i = 0; i < 4; i++)
        free(o->parts[i]);
}

static void compare(const char *what, const float *a, const float *b, size_t n, const char *where)
{
    const size_t i = test_first_diff(a, b, n);
    test_check(i == n, "%s: %s differs at %zu", where, what, i);
}

int main(void)
{
    keel_rng rng;
    keel_rng_seed(&rng, test_begin("test_bwd_hints"));
    keel_isa isas[3];
    const int n = test_isas(isas);
    const keel_kernels *scalar = keel_kernels_for(KEEL_ISA_SCALAR);
    static const size_t dims[] = {16, 33, 1024, 1040};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int packed = 0; packed < 2; packed++) {
            bufs b;
            make(&b, &rng, dims[d], packed);
            for (int c = 0; c < 32; c++) {
                const int rms = c & 1, saved_h = c >> 1 & 1, want_dr = c >> 2 & 1, acc = c >> 3 & 1;
                const int stats = c >> 4 & 1;
                outs ref;
                call(scalar, &b, rms, saved_h, stats, want_dr, acc, 0, &ref);
                for (int i = 0; i < n; i++)
                    for (int hints = 0; hints < 8; hints += 2) { /* PREFETCH, STREAM bits */
                        char where[200];
                        snprintf(where, sizeof where,
                                 "%s %s dim %zu %s h %s stats %s dr %d acc %d hints %d",
                                 keel_isa_name(isas[i]), rms ? "add_rmsnorm" : "add_layernorm",
                                 dims[d], packed ? "packed" : "offset",
                                 saved_h ? "saved" : "recomputed", stats ? "given" : "recomputed",
                                 want_dr, acc, hints);
                        outs got;
                        call(keel_kernels_for(isas[i]), &b, rms, saved_h, stats, want_dr, acc, hints, &got);
                        compare("dx", ref.dx, got.dx, b.len, where);
                        compare("dr", ref.dr, got.dr, b.len, where);
                        for (int p = 0; p < 4; p++)
                            compare("partial", ref.parts[p], got.parts[p], b.dim, where);
                        release_outs(&got);
                    }
                release_outs(&ref);
            }
            release(&b);
        }
    return test_finish();
}
