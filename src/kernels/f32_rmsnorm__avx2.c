/* RMSNorm, float32, AVX2: the formulas and reduction order of kernels.h, giving exactly the
 * bits of f32_rmsnorm__scalar.c (see f32_layernorm__avx2.c; grouping, the row pipelines and the
 * backward's prefetching as in f32_rmsnorm__avx512.c). */
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "variants.h"
#include "norm_finish.h"
#include "simd_lanes__avx2.h"
#include "rms_batch__avx2.h"
#include "add_norm_batches.h"

/* rstd_f of the nr rows x + i * xs (nr a constant <= K256_GROUP), from R(xd * xd),
 * xd = (double)x[j]. */
KEEL_INLINE void rms_rstd_n(int nr, const float *x, size_t xs, size_t dim, float eps,
                            const k256_tail *t, float *rstd)
{
    const size_t full = dim - t->n;
    __m256d s[K256_GROUP][4];
    for (int i = 0; i < nr; i++)
        s[i][0] = s[i][1] = s[i][2] = s[i][3] = _mm256_setzero_pd();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++)
            for (int q = 0; q < 4; q++) {
                const __m256d a = k256_cvt4(x + i * xs + j + 4 * q);
                s[i][q] = _mm256_add_pd(s[i][q], _mm256_mul_pd(a, a));
            }
    for (int i = 0; i < nr; i++) {
        if (t->n) {
            /* masked-out floats load as +0.0: their squares are +0.0 */
            __m256 v0, v1;
            k256_tail_load(t, x + i * xs + full, &v0, &v1);
            const __m256d a = k256_lo_pd(v0), b = k256_hi_pd(v0);
            const __m256d c = k256_lo_pd(v1), d = k256_hi_pd(v1);
            s[i][0] = _mm256_add_pd(s[i][0], _mm256_mul_pd(a, a));
            s[i][1] = _mm256_add_pd(s[i][1], _mm256_mul_pd(b, b));
            s[i][2] = _mm256_add_pd(s[i][2], _mm256_mul_pd(c, c));
            s[i][3] = _mm256_add_pd(s[i][3], _mm256_mul_pd(d, d));
        }
        rstd[i] = keel_rms_rstd(k256_reduce16(s[i][0], s[i][1], s[i][2], s[i][3]), dim, eps);
    }
}

/* y[j .. j + 8) = x * rs, then * gamma (vr: rs broadcast). */
KEEL_INLINE void rms_out8(const float *x, float *y, size_t j, __m256 vr, const float *gamma,
                          int hg, int nt)
{
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), vr);
    if (hg)
        v = _mm256_mul_ps(v, _mm256_loadu_ps(gamma + j));
    k256_store8(y + j, v, nt);
}

/* The same for the last dim % 8 floats, from j (tail8: their mask; never streamed). */
KEEL_INLINE void rms_out_tail(const float *x, float *y, size_t j, __m256 vr, const float *gamma,
                              __m256i tail8, int hg)
{
    __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + j, tail8), vr);
    if (hg)
        v = _mm256_mul_ps(v, _mm256_maskload_ps(gamma + j, tail8));
    _mm256_maskstore_ps(y + j, tail8, v);
}

/* y = x * rs, then * gamma, 8 floats a step (hg a constant). */
KEEL_INLINE void rms_out(size_t dim, const float *x, float *y, const float *gamma, float rs,
                         __m256i tail8, int hg, int nt)
{
    const __m256 vr = _mm256_set1_ps(rs);
    size_t j = 0;
    for (; j + 8 <= dim; j += 8)
        rms_out8(x, y, j, vr, gamma, hg, nt);
    if (j < dim)
        rms_out_tail(x, y, j, vr, gamma, tail8, hg);
}

/* rstd and outputs of the nr rows from row r (nr a constant); stream: y may be streamed (rows
 * whose start is aligned are). */
KEEL_INLINE void rms_fwd_rows(int nr, size_t r, size_t dim, const float *x, size_t xs, float *y,
                              size_t ys, const float *gamma, float eps, float *rstd,
                              const k256_tail *t, __m256i tail8, int stream)
{
    const float *xr = x + r * xs;
    float *yr = y + r * ys;
    float rs[K256_GROUP];
    rms_rstd_n(nr, xr, xs, dim, eps, t, rs);
    for (int i = 0; i < nr; i++) {
        const int nt = stream && k256_aligned32(yr + i * ys);
        if (gamma)
            rms_out(dim, xr + i * xs, yr + i * ys, gamma, rs[i], tail8, 1, nt);
        else
            rms_out(dim, xr + i * xs, yr + i * ys, gamma, rs[i], tail8, 0, nt);
        if (rstd)
            rstd[r + i] = rs[i];
    }
}

/* ---- the row pipeline ----------------------------------------------------------------------
 * f32_rmsnorm__avx512.c's: one sweep over j does row t's sum of squares (x from memory, the
 * loads K256_PIPE_AHEAD floats behind their prefetches) and row t - 1's output (its x row still
 * in cache), so that the reads and the writes go to memory together. Each row's arithmetic is
 * rms_rstd_n's and rms_out's: the same bits. It takes the tensors that the prefetching path took
 * (keel_profile_loop rmsf with KEEL_ISA=avx2, 1 thread, fastest call, one row at a time ->
 * pipelined: 4096x4096 5.6 -> 4.5 ms, 1024x8192 2.84 -> 2.28 ms, 4096x1024 1.19 -> 0.92 ms,
 * 8x1048576 5.24 -> 4.04 ms); in cache, as on AVX-512, it is not clearly faster (64x1024 and
 * 256x1024 1.2x, 128x4096 and 2048x256 0.98x). */

/* One sweep of the pipeline, each stage optional (do_*, constants in the steady state): xs,
 * the row summed, *sumsq its R(x * x); xo, yo, rs, nt: the row written. */
KEEL_INLINE void rms_pipe_sweep(size_t dim, const k256_tail *t, __m256i tail8, int do_sum,
                                const float *xs, double *sumsq, int do_out, const float *xo,
                                float *yo, float rs, int nt, const float *gamma, int hg,
                                const float *pfy)
{
    const size_t full = dim - t->n;
    const __m256 vr = _mm256_set1_ps(rs);
    const __m256d z = _mm256_setzero_pd();
    __m256d s0 = z, s1 = z, s2 = z, s3 = z;
    for (size_t j = 0; j < full; j += 16) {
        if (pfy)
            K256_PF_L1(pfy + j);
        if (do_sum) {
            K256_PF_L1(xs + j + K256_PIPE_AHEAD);
            const __m256d a = k256_cvt4(xs + j), b = k256_cvt4(xs + j + 4);
            const __m256d c = k256_cvt4(xs + j + 8), d = k256_cvt4(xs + j + 12);
            s0 = _mm256_add_pd(s0, _mm256_mul_pd(a, a));
            s1 = _mm256_add_pd(s1, _mm256_mul_pd(b, b));
            s2 = _mm256_add_pd(s2, _mm256_mul_pd(c, c));
            s3 = _mm256_add_pd(s3, _mm256_mul_pd(d, d));
        }
        if (do_out) {
            rms_out8(xo, yo, j, vr, gamma, hg, nt);
            rms_out8(xo, yo, j + 8, vr, gamma, hg, nt);
        }
    }
    if (t->n) { /* the tail, as rms_rstd_n's and rms_out's */
        if (do_sum) { /* masked-out floats load as +0.0: their squares are +0.0 */
            __m256 v0, v1;
            k256_tail_load(t, xs + full, &v0, &v1);
            const __m256d a = k256_lo_pd(v0), b = k256_hi_pd(v0);
            const __m256d c = k256_lo_pd(v1), d = k256_hi_pd(v1);
            s0 = _mm256_add_pd(s0, _mm256_mul_pd(a, a));
            s1 = _mm256_add_pd(s1, _mm256_mul_pd(b, b));
            s2 = _mm256_add_pd(s2, _mm256_mul_pd(c, c));
            s3 = _mm256_add_pd(s3, _mm256_mul_pd(d, d));
        }
        if (do_out) {
            size_t j = full;
            if (j + 8 <= dim) {
                rms_out8(xo, yo, j, vr, gamma, hg, nt);
                j += 8;
            }
            if (j < dim)
                rms_out_tail(xo, yo, j, vr, gamma, tail8, hg);
        }
    }
    if (do_sum)
        *sumsq = k256_reduce16(s0, s1, s2, s3);
}

/* The pipeline over all rows: sweep r sums row r and writes row r - 1. Stage pointers of
 * absent rows are never formed (row 0's stand in). Which rows: as on AVX-512
 * (f32_rmsnorm__avx512.c). */
#define RMS_PIPE_MAX_DIM 65536
KEEL_INLINE void rms_fwd_piped(size_t rows, size_t dim, const float *x, size_t xs, float *y,
                               size_t ys, const float *gamma, float eps, float *rstd,
                               const k256_tail *t, __m256i tail8, int stream, int hg)
{
    float rs_o = 0.0f; /* of the row written next */
    for (size_t r = 0; r < rows + 1; r++) {
        const int do_sum = r < rows, do_out = r >= 1;
        const float *xsum = x + (do_sum ? r : 0) * xs, *xo = x + (do_out ? r - 1 : 0) * xs;
        float *yo = y + (do_out ? r - 1 : 0) * ys;
        const int nt = stream && k256_aligned32(yo);
        /* the y row written next, fetched now when it is not streamed (as on AVX-512) */
        const float *yn = y + (do_sum ? r : 0) * ys;
        const float *pfy = do_sum && !(stream && k256_aligned32(yn)) ? yn : NULL;
        double ss = 0.0;
        if (do_sum && do_out) /* every sweep but the first and the last */
            rms_pipe_sweep(dim, t, tail8, 1, xsum, &ss, 1, xo, yo, rs_o, nt, gamma, hg, pfy);
        else
            rms_pipe_sweep(dim, t, tail8, do_sum, xsum, &ss, do_out, xo, yo, rs_o, nt, gamma, hg,
                           pfy);
        if (do_sum) {
            rs_o = keel_rms_rstd(ss, dim, eps);
            if (rstd)
                rstd[r] = rs_o;
        }
    }
}

void keel_f32_rmsnorm_fwd__avx2(size_t rows, size_t dim, const float *x, size_t x_stride,
                                float *y, size_t y_stride, const float *gamma, float eps,
                                float *rstd)
{
    const k256_tail t = k256_tail_of(dim % 16);
    const __m256i tail8 = k256_mask8(dim % 8);
#define ROWS(nr) \
    rms_fwd_rows(nr, r, dim, x, x_stride, y, y_stride, gamma, eps, rstd, &t, tail8, stream)
    const int stream = k256_want_stream(rows, y_stride);
    size_t r = 0;
    if (dim < K256_GROUP_BELOW) {
        if (dim <= PIPE_BATCH_MAX && rows >= PIPE_BATCH) /* four at a time (rms_batch__avx2.h) */
            r = plain_fwd_batches_any(rows, dim, x, x_stride, y, y_stride, gamma, NULL, eps, NULL,
                                      rstd, stream);
        for (; r + K256_GROUP <= rows; r += K256_GROUP)
            ROWS(K256_GROUP);
        for (; r < rows; r++)
            ROWS(1);
    } else if (dim <= RMS_PIPE_MAX_DIM || k256_want_prefetch(rows, dim, x_stride)) {
        if (gamma)
            rms_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd, &t, tail8, stream,
                          1);
        else
            rms_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd, &t, tail8, stream,
                          0);
    } else {
        for (; r < rows; r++)
            ROWS(1);
    }
    if (stream)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
#undef ROWS
}

/* ---- backward ----------------------------------------------------------------------------
 * Small rows go in groups of K256_GROUP: sweep 1 interleaves their reductions, and sweep 2
 * updates a column chunk of the dgamma partial once for the group, adding the rows in
 * increasing order (kernels.h). Rows of K256_GROUP_BELOW floats or more with rstd given go
 * through the row pipeline (rms_bwd_piped, below) instead. */

/* The per-row constants of sweep 2. */
typedef struct rms_row {
    float rs, b;
} rms_row;

/* Sweep 1's sum of one row: Sgx = R((double)g * (double)x), g = dy * gamma (float) or dy. A
 * step at a time (rms_s1_step), so that the grouped rows and the row pipeline (below) run the
 * same arithmetic. */
typedef struct rms_s1 {
    __m256d s[4];
} rms_s1;

KEEL_INLINE rms_s1 rms_s1_begin(void)
{
    const __m256d z = _mm256_setzero_pd();
    const rms_s1 a = {{z, z, z, z}};
    return a;
}

/* Sweep 1 at column j of the row x, dy: 16 floats (full) or the row's tail t (masked-out
 * lanes: g and x load as +0.0, so g * x is +0.0). */
KEEL_INLINE void rms_s1_step(rms_s1 *a, const float *x, const float *dy, const float *gamma,
                             size_t j, const k256_tail *t, int full, int hg)
{
    if (full) {
        for (int h = 0; h < 2; h++) { /* two 8-float halves */
            __m256 g = _mm256_loadu_ps(dy + j + 8 * h);
            if (hg)
                g = _mm256_mul_ps(g, _mm256_loadu_ps(gamma + j + 8 * h));
            const float *xp = x + j + 8 * h;
            a->s[2 * h] = _mm256_add_pd(a->s[2 * h], _mm256_mul_pd(k256_lo_pd(g), k256_cvt4(xp)));
            a->s[2 * h + 1] =
                _mm256_add_pd(a->s[2 * h + 1], _mm256_mul_pd(k256_hi_pd(g), k256_cvt4(xp + 4)));
        }
        return;
    }
    __m256 ga, gb, xa, xb;
    k256_tail_load(t, dy + j, &ga, &gb);
    if (hg) {
        __m256 ca, cb;
        k256_tail_load(t, gamma + j, &ca, &cb);
        ga = _mm256_mul_ps(ga, ca);
        gb = _mm256_mul_ps(gb, cb);
    }
    k256_tail_load(t, x + j, &xa, &xb);
    a->s[0] = _mm256_add_pd(a->s[0], _mm256_mul_pd(k256_lo_pd(ga), k256_lo_pd(xa)));
    a->s[1] = _mm256_add_pd(a->s[1], _mm256_mul_pd(k256_hi_pd(ga), k256_hi_pd(xa)));
    a->s[2] = _mm256_add_pd(a->s[2], _mm256_mul_pd(k256_lo_pd(gb), k256_lo_pd(xb)));
    a->s[3] = _mm256_add_pd(a->s[3], _mm256_mul_pd(k256_hi_pd(gb), k256_hi_pd(xb)));
}

/* b_f of kernels.h from sweep 1's sum into c (rs already there). */
KEEL_INLINE void rms_s1_end(const rms_s1 *a, size_t dim, rms_row *c)
{
    const double sgx = k256_reduce16(a->s[0], a->s[1], a->s[2], a->s[3]);
    c->b = (float)((double)c->rs * (sgx / (double)dim));
}

/* Sweep 1 of the nr rows (nr a constant), their steps interleaved; then b_f into c[i] (rs
 * already there). */
KEEL_INLINE void rms_sweep1_n(int nr, size_t dim, const float *dy, size_t dys, const float *x,
                              size_t xs, const float *gamma, const k256_tail *t, rms_row *c,
                              int hg)
{
    const size_t full = dim - t->n;
    rms_s1 a[K256_GROUP];
    for (int i = 0; i < nr; i++)
        a[i] = rms_s1_begin();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++)
            rms_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, j, t, 1, hg);
    for (int i = 0; i < nr; i++) {
        if (t->n)
            rms_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, full, t, 0, hg);
        rms_s1_end(&a[i], dim, &c[i]);
    }
}

/* Where sweep 2 prefetches: the next group's rows (NULL: nowhere). */
typedef struct rms_pf {
    const float *x, *dy;
    float *dx;
    int nt; /* stream dx (full steps) */
} rms_pf;

/* One step of sweep 2 at column j over the nr rows (not a constant), 8 floats (full) or the
 * floats of mask k. Pointers of absent arrays are never offset (they may be NULL). */
KEEL_INLINE void rms_step2(int nr, size_t j, const float *dy, size_t dys, const float *x,
                           size_t xs, const float *gamma, float *dx, size_t dxs, float *dg,
                           const rms_row *c, __m256i k, int full, int hdx, int acc, int hg,
                           int hdg, int nt)
{
#define LD(p) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k))
#define ST(p, v)                                                                               \
    do {                                                                                       \
        if (full)                                                                              \
            _mm256_storeu_ps(p, v);                                                            \
        else                                                                                   \
            _mm256_maskstore_ps(p, k, v);                                                      \
    } while (0)
    const __m256 gam = hdx && hg ? LD(gamma + j) : _mm256_setzero_ps();
    __m256 dgv = hdg ? LD(dg + j) : _mm256_setzero_ps();
    for (int i = 0; i < nr; i++) {
        const __m256 vr = _mm256_set1_ps(c[i].rs);
        const __m256 xhat = _mm256_mul_ps(LD(x + i * xs + j), vr);
        const __m256 dyv = LD(dy + i * dys + j);
        if (hdx) {
            const __m256 g = hg ? _mm256_mul_ps(dyv, gam) : dyv;
            __m256 v = _mm256_mul_ps(
                vr, _mm256_sub_ps(g, _mm256_mul_ps(xhat, _mm256_set1_ps(c[i].b))));
            if (acc)
                v = _mm256_add_ps(LD(dx + i * dxs + j), v);
            if (full && nt)
                _mm256_stream_ps(dx + i * dxs + j, v);
            else
                ST(dx + i * dxs + j, v);
        }
        if (hdg)
            dgv = _mm256_add_ps(dgv, _mm256_mul_ps(dyv, xhat));
    }
    if (hdg)
        ST(dg + j, dgv);
#undef LD
#undef ST
}

KEEL_INLINE void rms_sweep2(int nr, size_t dim, const float *dy, size_t dys, const float *x,
                            size_t xs, const float *gamma, float *dx, size_t dxs, float *dg,
                            const rms_row *c, const rms_pf *pf, int hdx, int acc, int hg,
                            int hdg)
{
    const __m256i all = _mm256_set1_epi32(-1);
    size_t j = 0;
    for (; j + 16 <= dim; j += 16) {
        rms_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, c, all, 1, hdx, acc, hg, hdg, pf->nt);
        rms_step2(nr, j + 8, dy, dys, x, xs, gamma, dx, dxs, dg, c, all, 1, hdx, acc, hg, hdg, pf->nt);
        if (pf->x) /* one cache line of each of the next group's rows */
            for (int i = 0; i < nr; i++) {
                K256_PF_L2(pf->x + i * xs + j);
                K256_PF_L2(pf->dy + i * dys + j);
                if (hdx && !pf->nt)
                    K256_PF_L2(pf->dx + i * dxs + j);
            }
    }
    if (j + 8 <= dim) {
        rms_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, c, all, 1, hdx, acc, hg, hdg, pf->nt);
        j += 8;
    }
    if (j < dim)
        rms_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, c, k256_mask8(dim - j), 0, hdx, acc,
                  hg, hdg, 0);
}

/* Sweep 2 for the 4 flags (dx, accumulate, gamma, dgamma), each a constant. */
typedef void (*rms_sweep2_fn)(int, size_t, const float *, size_t, const float *, size_t,
                              const float *, float *, size_t, float *, const rms_row *,
                              const rms_pf *);
#define RMS_SWEEP2_VARIANT(i)                                                                 \
    static void rms_sweep2_##i(int nr, size_t dim, const float *dy, size_t dys,               \
                               const float *x, size_t xs, const float *gamma, float *dx,      \
                               size_t dxs, float *dg, const rms_row *c, const rms_pf *pf)     \
    {                                                                                         \
        rms_sweep2(nr, dim, dy, dys, x, xs, gamma, dx, dxs, dg, c, pf, (i) & 1,               \
                   ((i) >> 1) & 1, ((i) >> 2) & 1, ((i) >> 3) & 1);                           \
    }
KEEL_EACH16(RMS_SWEEP2_VARIANT)
static const rms_sweep2_fn rms_sweep2_table[16] = {KEEL_LIST16(rms_sweep2_)};

/* rstd (given or recomputed) and sweep 1 of the nr rows from row r (nr a constant). */
KEEL_INLINE void rms_bwd_stats(int nr, size_t r, size_t dim, const float *dy, size_t dys,
                               const float *x, size_t xs, const float *rstd,
                               const float *gamma, float eps, int hdx, const k256_tail *t,
                               rms_row *c)
{
    const float *xr = x + r * xs;
    float rs[K256_GROUP];
    if (rstd)
        for (int i = 0; i < nr; i++)
            rs[i] = rstd[r + i];
    else
        rms_rstd_n(nr, xr, xs, dim, eps, t, rs);
    for (int i = 0; i < nr; i++)
        c[i].rs = rs[i];
    if (hdx) {
        if (gamma)
            rms_sweep1_n(nr, dim, dy + r * dys, dys, xr, xs, gamma, t, c, 1);
        else
            rms_sweep1_n(nr, dim, dy + r * dys, dys, xr, xs, gamma, t, c, 0);
    }
}

/* Whether the dx rows r .. r + nr - 1 all start 32-byte aligned (streamable). */
KEEL_INLINE int rms_dx_aligned(const float *dx, size_t dxs, size_t r, int nr)
{
    for (int i = 0; i < nr; i++)
        if (((uintptr_t)(dx + (r + (size_t)i) * dxs) & 31) != 0)
            return 0;
    return 1;
}

/* ---- the backward's row pipeline -----------------------------------------------------------
 * f32_rmsnorm__avx512.c's: with rstd given and dx wanted, one sweep over j does row t's sweep 1
 * (x and dy from memory, the loads K256_PIPE_AHEAD floats behind their prefetches) and row
 * t - 1's sweep 2 (its x and dy still in cache, dx written or streamed, the dgamma partial
 * updated). Each row's arithmetic is rms_sweep1_n's and rms_step2's with one row, and sweep 2
 * still takes the rows in increasing order: the same bits. Measured (keel_profile_loop rmsb with
 * KEEL_ISA=avx2, 1 thread, fastest call, one row at a time -> pipelined): 4096x4096 14.9-15.1 ->
 * 11.3-11.5 ms, 1024x8192 7.0-7.3 -> 4.7-5.1 ms, 4096x1024 2.48-2.55 -> 1.58-1.64 ms, 4096x768
 * 1.93-2.03 -> 1.36-1.42 ms, 4096x1000 2.57-2.59 -> 1.80-1.86 ms; in cache 256x1024 184 -> 136
 * us, 64x4096 222 -> 161 us, 2048x256 317 -> 245 us; 8x1048576 13.4 -> 9.5 ms; keel bench
 * --rows 4096 --dim 4096 --threads 1: 0.69 of the copy floor -> 0.87-0.89. The same calls as
 * on AVX-512 take it. */

/* One sweep of the pipeline, each stage optional (do1, do2: constants in the steady state):
 * x1, dy1, a: the row of sweep 1 and its sum; c, x2, dy2, dx2, nt: the row of sweep 2, its
 * constants and whether dx is streamed. tail8: the mask of the last dim % 8 floats. */
KEEL_INLINE void rms_bwd_pipe_sweep(size_t dim, const k256_tail *t, __m256i tail8, int do1,
                                    rms_s1 *a, const float *x1, const float *dy1, int do2,
                                    const rms_row *c, const float *x2, const float *dy2,
                                    float *dx2, int nt, const float *gamma, float *dg, int acc,
                                    int hg, int hdg)
{
    const __m256i all = _mm256_set1_epi32(-1);
    const size_t full = dim - t->n;
    for (size_t j = 0; j < full; j += 16) {
        if (do1) {
            K256_PF_L1(x1 + j + K256_PIPE_AHEAD);
            K256_PF_L1(dy1 + j + K256_PIPE_AHEAD);
            rms_s1_step(a, x1, dy1, gamma, j, t, 1, hg);
        }
        if (do2) {
            if (!nt) /* the lines of dx stored (or added to) normally */
                K256_PF_L1(dx2 + j + K256_PIPE_AHEAD);
            rms_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, c, all, 1, 1, acc, hg, hdg, nt);
            rms_step2(1, j + 8, dy2, 0, x2, 0, gamma, dx2, 0, dg, c, all, 1, 1, acc, hg, hdg, nt);
        }
    }
    if (t->n) { /* the tail, as rms_sweep1_n's and rms_sweep2's */
        if (do1)
            rms_s1_step(a, x1, dy1, gamma, full, t, 0, hg);
        if (do2) {
            size_t j = full;
            if (j + 8 <= dim) {
                rms_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, c, all, 1, 1, acc, hg, hdg, nt);
                j += 8;
            }
            if (j < dim)
                rms_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, c, tail8, 0, 1, acc, hg, hdg, 0);
        }
    }
}

/* The pipeline over all rows (rstd given, dx wanted): sweep t runs row t's sweep 1 and row
 * t - 1's sweep 2. Row pointers of absent rows are never formed (row 0's stand in). stream: dx
 * rows that start aligned are streamed. */
KEEL_INLINE void rms_bwd_piped(size_t rows, size_t dim, const float *dy, size_t dys,
                               const float *x, size_t xs, const float *rstd, const float *gamma,
                               float *dx, size_t dxs, float *dg, int stream, int acc, int hg,
                               int hdg)
{
    const k256_tail t = k256_tail_of(dim % 16);
    const __m256i tail8 = k256_mask8(dim % 8);
    rms_row c = {0.0f, 0.0f}; /* of the row in sweep 2 */
    for (size_t r = 0; r <= rows; r++) {
        const int do1 = r < rows, do2 = r >= 1;
        const size_t r1 = do1 ? r : 0, r2 = do2 ? r - 1 : 0;
        float *dx2 = dx + r2 * dxs;
        const int nt = do2 && stream && k256_aligned32(dx2);
        rms_s1 a = rms_s1_begin();
        if (do1 && do2) /* every sweep but the first and the last */
            rms_bwd_pipe_sweep(dim, &t, tail8, 1, &a, x + r1 * xs, dy + r1 * dys, 1, &c,
                               x + r2 * xs, dy + r2 * dys, dx2, nt, gamma, dg, acc, hg, hdg);
        else
            rms_bwd_pipe_sweep(dim, &t, tail8, do1, &a, x + r1 * xs, dy + r1 * dys, do2, &c,
                               x + r2 * xs, dy + r2 * dys, dx2, nt, gamma, dg, acc, hg, hdg);
        if (do1) { /* row r's constants: it is swept twice next */
            c.rs = rstd[r];
            rms_s1_end(&a, dim, &c);
        }
    }
}

#define NORM_BWD_PIPED_RMS
#include "norm_bwd_piped_tables.h"

void keel_f32_rmsnorm_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                const float *x, size_t x_stride, const float *rstd,
                                const float *gamma, float eps, float *dx, size_t dx_stride,
                                int dx_flags, float *dgamma_part)
{
    const int hdx = dx != NULL, acc = (dx_flags & KEEL_KBWD_ACCUMULATE) != 0;
    /* streaming stores of dx when told dx spans far beyond the caches (never with accumulate) */
    const int stream = hdx && !acc && (dx_flags & KEEL_KBWD_STREAM);
    const rms_sweep2_fn sweep2 = rms_sweep2_table[hdx | (hdx && acc) << 1 |
                                                  (gamma != NULL) << 2 |
                                                  (dgamma_part != NULL) << 3];
    const k256_tail t = k256_tail_of(dim % 16);
    const size_t group = dim < K256_GROUP_BELOW ? K256_GROUP : 1;
    const int pf = (dx_flags & KEEL_KBWD_PREFETCH) || k256_want_prefetch(rows, dim, x_stride);
    if (hdx && rstd && dim >= K256_GROUP_BELOW) { /* the row pipeline, in cache or not */
        rms_piped_table[acc | (gamma != NULL) << 1 | (dgamma_part != NULL) << 2](
            rows, dim, dy, dy_stride, x, x_stride, rstd, gamma, dx, dx_stride, dgamma_part, stream);
        if (stream)
            _mm_sfence(); /* the streamed stores are visible before the call returns */
        return;
    }
    for (size_t r = 0; r < rows;) {
        const int nr = (int)(rows - r < group ? rows - r : group);
        rms_row c[K256_GROUP] = {{0.0f, 0.0f}};
        if (nr == K256_GROUP)
            rms_bwd_stats(K256_GROUP, r, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, hdx,
                          &t, c);
        else
            for (int i = 0; i < nr; i++)
                rms_bwd_stats(1, r + i, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, hdx,
                              &t, c + i);
        /* prefetch the next group while sweep 2 works in cache, when it is a whole one */
        rms_pf p = {NULL, NULL, NULL, stream && rms_dx_aligned(dx, dx_stride, r, nr)};
        if (pf && r + 2 * (size_t)nr <= rows) {
            p.x = x + (r + nr) * x_stride;
            p.dy = dy + (r + nr) * dy_stride;
            p.dx = hdx ? dx + (r + nr) * dx_stride : NULL;
        }
        sweep2(nr, dim, dy + r * dy_stride, dy_stride, x + r * x_stride, x_stride, gamma,
               hdx ? dx + r * dx_stride : NULL, dx_stride, dgamma_part, c, &p);
        r += (size_t)nr;
    }
    if (stream)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
