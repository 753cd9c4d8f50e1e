/* RMSNorm, float32, AVX-512: the formulas and reduction order of kernels.h, 16 floats at a
 * time, giving exactly the bits of f32_rmsnorm__scalar.c (see f32_layernorm__avx512.c). */
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "variants.h"
#include "norm_finish.h"
#include "finish_rows__avx512.h"
#include "simd_lanes__avx512.h"
#include "rms_batch__avx512.h"
#include "add_norm_batches.h"

/* rstd_f of the nr rows x + i * xs (nr a constant <= K512_GROUP), from R(xd * xd),
 * xd = (double)x[j]. */
KEEL_INLINE void rms_rstd_n(int nr, const float *x, size_t xs, size_t dim, float eps,
                            float *rstd)
{
    const size_t full = dim & ~(size_t)15;
    __m512d s[K512_GROUP][2];
    double sums[K512_GROUP];
    for (int i = 0; i < nr; i++)
        s[i][0] = s[i][1] = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++) {
            const __m512d a = k512_cvt8(x + i * xs + j), b = k512_cvt8(x + i * xs + j + 8);
            s[i][0] = _mm512_add_pd(s[i][0], _mm512_mul_pd(a, a));
            s[i][1] = _mm512_add_pd(s[i][1], _mm512_mul_pd(b, b));
        }
    const __mmask16 k = k512_tail16(dim - full);
    const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
    for (int i = 0; i < nr; i++) {
        const float *t = x + i * xs + full;
        if (klo) {
            const __m512d a = k512_cvt8_mask(klo, t);
            s[i][0] = k512_add_mask(s[i][0], klo, _mm512_mul_pd(a, a));
        }
        if (khi) {
            const __m512d b = k512_cvt8_mask(khi, t + 8);
            s[i][1] = k512_add_mask(s[i][1], khi, _mm512_mul_pd(b, b));
        }
        sums[i] = k512_reduce16(s[i][0], s[i][1]);
    }
    k512_rms_rstd_n(nr, sums, dim, eps, rstd);
}

/* y[j .. j + 16) = x * rs, then * gamma (vr: rs broadcast), on the floats of mask k (all 16
 * when full; only full steps stream). */
KEEL_INLINE void rms_out_step(const float *x, float *y, size_t j, __m512 vr, const float *gamma,
                              __mmask16 k, int full, int hg, int nt)
{
    __m512 v = _mm512_mul_ps(full ? _mm512_loadu_ps(x + j) : _mm512_maskz_loadu_ps(k, x + j), vr);
    if (hg)
        v = _mm512_mul_ps(v, full ? _mm512_loadu_ps(gamma + j)
                                  : _mm512_maskz_loadu_ps(k, gamma + j));
    if (full)
        k512_store16(y + j, v, nt);
    else
        _mm512_mask_storeu_ps(y + j, k, v);
}

/* y = x * rs, then * gamma (hg a constant). */
KEEL_INLINE void rms_out(size_t dim, const float *x, float *y, const float *gamma, float rs,
                         int hg, int nt)
{
    const __m512 vr = _mm512_set1_ps(rs);
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        rms_out_step(x, y, j, vr, gamma, 0xffff, 1, hg, nt);
    if (j < dim)
        rms_out_step(x, y, j, vr, gamma, k512_tail16(dim - j), 0, hg, nt);
}

/* rstd and outputs of the nr rows from row r (nr a constant); stream: y may be streamed (rows
 * whose start is aligned are). */
KEEL_INLINE void rms_fwd_rows(int nr, size_t r, size_t dim, const float *x, size_t xs, float *y,
                              size_t ys, const float *gamma, float eps, float *rstd, int stream)
{
    const float *xr = x + r * xs;
    float *yr = y + r * ys;
    float rs[K512_GROUP];
    rms_rstd_n(nr, xr, xs, dim, eps, rs);
    for (int i = 0; i < nr; i++) {
        const int nt = stream && k512_aligned64(yr + i * ys);
        if (gamma)
            rms_out(dim, xr + i * xs, yr + i * ys, gamma, rs[i], 1, nt);
        else
            rms_out(dim, xr + i * xs, yr + i * ys, gamma, rs[i], 0, nt);
        if (rstd)
            rstd[r + i] = rs[i];
    }
}

/* ---- the row pipeline ----------------------------------------------------------------------
 * As f32_layernorm__avx512.c's, with two stages: one sweep over j does row t's sum of squares
 * (x from memory, the loads K512_PIPE_AHEAD floats behind their prefetches) and row t - 1's
 * output (its x row still in L1/L2), so that the reads and the writes go to memory together
 * (keel bench --rows 4096 --dim 4096 --threads 1: 0.86-0.91 of the copy floor -> 1.00-1.02).
 * Each row's arithmetic is rms_rstd_n's and rms_out's: the same bits. It takes the tensors that
 * the prefetching path took (k512_want_prefetch), at any width, only one row being kept in cache
 * (keel_profile_loop rmsf, 1 thread, fastest call, one row at a time -> pipelined: 4096x4096
 * 5.70 -> 4.52 ms, 1024x8192 2.75 -> 2.39 ms, 4096x1024 1.17 -> 0.95 ms, 32x262144 4.46 ->
 * 3.77 ms, 8x1048576 5.39 -> 3.92 ms). On data in cache it is not clearly faster (64x1024 and
 * 256x1024 1.1-1.2x, 64x4096 and 128x4096 0.92-0.97x, 2048x256 0.99x): those stay one row at a
 * time. */

/* One sweep of the pipeline, each stage optional (do_*, constants in the steady state): xs,
 * the row summed, *sumsq its R(x * x); xo, yo, rs, nt: the row written. */
KEEL_INLINE void rms_pipe_sweep(size_t dim, int do_sum, const float *xs, double *sumsq,
                                int do_out, const float *xo, float *yo, float rs, int nt,
                                const float *gamma, int hg, const float *pfy)
{
    const size_t full = dim & ~(size_t)15;
    const __m512 vr = _mm512_set1_ps(rs);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (size_t j = 0; j < full; j += 16) {
        if (pfy)
            K512_PF_L1(pfy + j);
        if (do_sum) {
            K512_PF_L1(xs + j + K512_PIPE_AHEAD);
            const __m512d a = k512_cvt8(xs + j), b = k512_cvt8(xs + j + 8);
            s0 = _mm512_add_pd(s0, _mm512_mul_pd(a, a));
            s1 = _mm512_add_pd(s1, _mm512_mul_pd(b, b));
        }
        if (do_out)
            rms_out_step(xo, yo, j, vr, gamma, 0xffff, 1, hg, nt);
    }
    if (full < dim) { /* the tail, as rms_rstd_n's and rms_out's */
        const __mmask16 k = k512_tail16(dim - full);
        const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
        if (do_sum) {
            if (klo) {
                const __m512d a = k512_cvt8_mask(klo, xs + full);
                s0 = k512_add_mask(s0, klo, _mm512_mul_pd(a, a));
            }
            if (khi) {
                const __m512d b = k512_cvt8_mask(khi, xs + full + 8);
                s1 = k512_add_mask(s1, khi, _mm512_mul_pd(b, b));
            }
        }
        if (do_out)
            rms_out_step(xo, yo, full, vr, gamma, k, 0, hg, nt);
    }
    if (do_sum)
        *sumsq = k512_reduce16(s0, s1);
}

/* The pipeline over all rows: sweep t sums row t and writes row t - 1. Stage pointers of
 * absent rows are never formed (row 0's stand in). It takes rows of K512_GROUP_BELOW floats or
 * more, in cache too where the two rows fit L2 (up to RMS_PIPE_MAX_DIM), and beyond L2 any
 * row. Measured in cache, 1 thread, one row at a time -> pipelined: keel bench (y out of
 * cache) 256x1024 0.48 -> 0.62 of the floor, 512x768 0.59 -> 0.77, 128x2048 0.43 -> 0.63,
 * 8x1024 6.8 -> 3.7 us, 4x8192 32.7 -> 16.8 us; keel_profile_loop (y in cache) 256x1024 46.9
 * -> 33.7 us, 64x1024 9.7 -> 8.0 us, but 1024x512 129 -> 138 us and 128x2048 45 -> 50 us. */
#define RMS_PIPE_MAX_DIM 65536
KEEL_INLINE void rms_fwd_piped(size_t rows, size_t dim, const float *x, size_t xs, float *y,
                               size_t ys, const float *gamma, float eps, float *rstd, int stream,
                               int hg)
{
    float rs_o = 0.0f; /* of the row written next */
    for (size_t t = 0; t < rows + 1; t++) {
        const int do_sum = t < rows, do_out = t >= 1;
        const float *xsum = x + (do_sum ? t : 0) * xs, *xo = x + (do_out ? t - 1 : 0) * xs;
        float *yo = y + (do_out ? t - 1 : 0) * ys;
        const int nt = stream && k512_aligned64(yo);
        /* the y row written next, fetched now when it is not streamed (see ln_fwd_piped;
         * 4096x768 with y out of cache: 1.61-1.66 -> 1.16-1.21 ms) */
        const float *yn = y + (do_sum ? t : 0) * ys;
        const float *pfy = do_sum && !(stream && k512_aligned64(yn)) ? yn : NULL;
        double ss = 0.0;
        if (do_sum && do_out) /* every sweep but the first and the last */
            rms_pipe_sweep(dim, 1, xsum, &ss, 1, xo, yo, rs_o, nt, gamma, hg, pfy);
        else
            rms_pipe_sweep(dim, do_sum, xsum, &ss, do_out, xo, yo, rs_o, nt, gamma, hg, pfy);
        if (do_sum) {
            rs_o = keel_rms_rstd(ss, dim, eps);
            if (rstd)
                rstd[t] = rs_o;
        }
    }
}

/* Rows of up to PIPE_BATCH_MAX floats go eight at a time, as the fused forward's
 * (rms_batch__avx512.h, x alone: plain_fwd_batches_any). Measured (keel_profile_loop rmsf 4096
 * 16, 1 thread, fastest call): 18 us in groups, 13-14.7 us; keel bench, fraction of the floor,
 * 8192x32 0.46 -> 0.65, 5461x48 0.47 -> 0.66, 4096x64 0.43-0.46 -> 0.62-0.64 (rows of 17 to
 * 64 floats went in groups before). */
void keel_f32_rmsnorm_fwd__avx512(size_t rows, size_t dim, const float *x, size_t x_stride,
                                  float *y, size_t y_stride, const float *gamma, float eps,
                                  float *rstd)
{
#define ROWS(nr) rms_fwd_rows(nr, r, dim, x, x_stride, y, y_stride, gamma, eps, rstd, stream)
    const int stream = k512_want_stream(rows, y_stride);
    size_t r = 0;
    if (dim < K512_GROUP_BELOW) {
        if (dim <= PIPE_BATCH_MAX && rows >= PIPE_BATCH)
            r = plain_fwd_batches_any(rows, dim, x, x_stride, y, y_stride, gamma, NULL, eps, NULL,
                                      rstd, stream);
        for (; r + K512_GROUP <= rows; r += K512_GROUP)
            ROWS(K512_GROUP);
        for (; r < rows; r++)
            ROWS(1);
    } else if (dim <= RMS_PIPE_MAX_DIM || k512_want_prefetch(rows, dim, x_stride)) {
        if (gamma)
            rms_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd, stream, 1);
        else
            rms_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd, stream, 0);
    } else {
        for (; r < rows; r++)
            ROWS(1);
    }
    if (stream)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
#undef ROWS
}

/* ---- backward ----------------------------------------------------------------------------
 * Small rows go in groups of K512_GROUP as in the forward: sweep 1 interleaves their
 * reductions, and sweep 2 updates a column chunk of the dgamma partial once for the whole
 * group, adding the rows in increasing order as kernels.h requires. Rows of K512_GROUP_BELOW
 * floats or more with rstd given go through the row pipeline (rms_bwd_piped, below) instead. */

/* The per-row constants of sweep 2. */
typedef struct rms_row {
    float rs, b;
} rms_row;

/* Sweep 1's sum of one row: Sgx = R((double)g * (double)x), g = dy * gamma (float) or dy. A
 * step at a time (rms_s1_step), so that the grouped rows and the row pipeline (below) run the
 * same arithmetic. */
typedef struct rms_s1 {
    __m512d s0, s1;
} rms_s1;

KEEL_INLINE rms_s1 rms_s1_begin(void)
{
    const rms_s1 a = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    return a;
}

/* Sweep 1 at column j of the row x, dy: 16 floats (full) or the tail of mask k as one step
 * (float loads masked to the row, and only the lanes that get an element are added to). */
KEEL_INLINE void rms_s1_step(rms_s1 *a, const float *x, const float *dy, const float *gamma,
                             size_t j, __mmask16 k, int full, int hg)
{
    if (full) {
        __m512 g = _mm512_loadu_ps(dy + j);
        if (hg)
            g = _mm512_mul_ps(g, _mm512_loadu_ps(gamma + j));
        const __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
        const __m512d g1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
        a->s0 = _mm512_add_pd(a->s0, _mm512_mul_pd(g0, k512_cvt8(x + j)));
        a->s1 = _mm512_add_pd(a->s1, _mm512_mul_pd(g1, k512_cvt8(x + j + 8)));
        return;
    }
    const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
    __m512 g = _mm512_maskz_loadu_ps(k, dy + j);
    if (hg)
        g = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(k, gamma + j));
    const __m512 xv = _mm512_maskz_loadu_ps(k, x + j);
    const __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
    const __m512d g1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
    const __m512d x0 = _mm512_cvtps_pd(_mm512_castps512_ps256(xv));
    const __m512d x1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(xv, 1));
    a->s0 = k512_add_mask(a->s0, klo, _mm512_mul_pd(g0, x0));
    a->s1 = k512_add_mask(a->s1, khi, _mm512_mul_pd(g1, x1));
}

/* b_f of kernels.h from sweep 1's sum into c (rs already there). */
KEEL_INLINE void rms_s1_end(const rms_s1 *a, size_t dim, rms_row *c)
{
    c->b = (float)((double)c->rs * (k512_reduce16(a->s0, a->s1) / (double)dim));
}

/* Sweep 1 of the nr rows (nr a constant), their steps interleaved; then b_f into c[i] (rs
 * already there). */
KEEL_INLINE void rms_sweep1_n(int nr, size_t dim, const float *dy, size_t dys, const float *x,
                              size_t xs, const float *gamma, rms_row *c, int hg)
{
    const size_t full = dim & ~(size_t)15;
    rms_s1 a[K512_GROUP];
    for (int i = 0; i < nr; i++)
        a[i] = rms_s1_begin();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++)
            rms_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, j, 0xffff, 1, hg);
    if (full < dim)
        for (int i = 0; i < nr; i++)
            rms_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, full, k512_tail16(dim - full), 0,
                        hg);
    for (int i = 0; i < nr; i++)
        rms_s1_end(&a[i], dim, &c[i]);
}

/* Where sweep 2 prefetches: the next group's rows (NULL: nowhere). */
typedef struct rms_pf {
    const float *x, *dy;
    float *dx;
    int nt; /* stream dx (full steps) */
} rms_pf;

/* One step of sweep 2 at column j over the nr rows (not a constant), on the floats of mask k
 * (all 16 when full). Pointers of absent arrays are never offset (they may be NULL). */
KEEL_INLINE void rms_step2(int nr, size_t j, const float *dy, size_t dys, const float *x,
                           size_t xs, const float *gamma, float *dx, size_t dxs, float *dg,
                           const rms_row *c, const rms_pf *pf, __mmask16 k, int full, int hdx,
                           int acc, int hg, int hdg)
{
#define LD(p) (full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p))
#define ST(p, v) (full ? _mm512_storeu_ps(p, v) : _mm512_mask_storeu_ps(p, k, v))
    const __m512 gam = hdx && hg ? LD(gamma + j) : _mm512_setzero_ps();
    __m512 dgv = hdg ? LD(dg + j) : _mm512_setzero_ps();
    for (int i = 0; i < nr; i++) {
        const __m512 vr = _mm512_set1_ps(c[i].rs);
        const __m512 xhat = _mm512_mul_ps(LD(x + i * xs + j), vr);
        const __m512 dyv = LD(dy + i * dys + j);
        if (hdx) {
            const __m512 g = hg ? _mm512_mul_ps(dyv, gam) : dyv;
            __m512 v = _mm512_mul_ps(
                vr, _mm512_sub_ps(g, _mm512_mul_ps(xhat, _mm512_set1_ps(c[i].b))));
            if (acc)
                v = _mm512_add_ps(LD(dx + i * dxs + j), v);
            if (full && pf->nt)
                _mm512_stream_ps(dx + i * dxs + j, v);
            else
                ST(dx + i * dxs + j, v);
        }
        if (hdg)
            dgv = _mm512_add_ps(dgv, _mm512_mul_ps(dyv, xhat));
        if (full && pf->x) {
            K512_PF_L2(pf->x + i * xs + j);
            K512_PF_L2(pf->dy + i * dys + j);
            if (hdx && !pf->nt)
                K512_PF_L2(pf->dx + i * dxs + j);
        }
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
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        rms_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, c, pf, 0xffff, 1, hdx, acc, hg, hdg);
    if (j < dim)
        rms_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, c, pf, k512_tail16(dim - j), 0, hdx,
                  acc, hg, hdg);
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
                               const float *gamma, float eps, int hdx, rms_row *c)
{
    const float *xr = x + r * xs;
    float rs[K512_GROUP];
    if (rstd)
        for (int i = 0; i < nr; i++)
            rs[i] = rstd[r + i];
    else
        rms_rstd_n(nr, xr, xs, dim, eps, rs);
    for (int i = 0; i < nr; i++)
        c[i].rs = rs[i];
    if (hdx) {
        if (gamma)
            rms_sweep1_n(nr, dim, dy + r * dys, dys, xr, xs, gamma, c, 1);
        else
            rms_sweep1_n(nr, dim, dy + r * dys, dys, xr, xs, gamma, c, 0);
    }
}

/* Whether the dx rows r .. r + nr - 1 all start 64-byte aligned (streamable). */
KEEL_INLINE int rms_dx_aligned(const float *dx, size_t dxs, size_t r, int nr)
{
    for (int i = 0; i < nr; i++)
        if (((uintptr_t)(dx + (r + (size_t)i) * dxs) & 63) != 0)
            return 0;
    return 1;
}

/* ---- the backward's row pipeline -----------------------------------------------------------
 * As f32_layernorm__avx512.c's: with rstd given and dx wanted, one sweep over j does row t's
 * sweep 1 (x and dy from memory, the loads K512_PIPE_AHEAD floats behind their prefetches) and
 * row t - 1's sweep 2 (its x and dy still in cache, dx written or streamed, the dgamma partial
 * updated), so that reads and writes stream together. Each row's arithmetic is rms_sweep1_n's
 * and rms_step2's with one row, and sweep 2 still takes the rows in increasing order: the same
 * bits. Measured (keel_profile_loop rmsb, 1 thread, fastest call, one row at a time with the
 * next row prefetched into L2 -> pipelined): 4096x4096 14.1-14.6 -> 11.2-12.2 ms, 1024x8192
 * 7.2 -> 4.8 ms, 4096x1024 2.04 -> 1.55 ms, 4096x768 1.73 -> 1.38 ms, 4096x1000 2.61 -> 1.90 ms;
 * keel bench --rows 4096 --dim 4096 --threads 1: 0.71-0.72 of the copy floor -> 0.85-0.87. As
 * LayerNorm's, it runs faster in cache too (256x1024 172 -> 135 us, 64x4096 226 -> 159 us,
 * 2048x256 286 -> 237 us) and on wide rows (32x262144 13.2 -> 9.4 ms, 8x1048576 13.4 -> 9.5 ms),
 * so it takes every call with rstd given, dx wanted (else there is no sweep 1) and rows of
 * K512_GROUP_BELOW floats or more. The prefetch of the dx lines that are not streamed pays
 * everywhere (without it: 4096x1000 1.90 -> 2.71 ms, 256x1024 132 -> 162 us). */

/* One sweep of the pipeline, each stage optional (do1, do2: constants in the steady state):
 * x1, dy1, a: the row of sweep 1 and its sum; c, x2, dy2, dx2, p: the row of sweep 2 and its
 * constants (p->nt: dx streamed). */
KEEL_INLINE void rms_bwd_pipe_sweep(size_t dim, int do1, rms_s1 *a, const float *x1,
                                    const float *dy1, int do2, const rms_row *c,
                                    const float *x2, const float *dy2, float *dx2,
                                    const rms_pf *p, const float *gamma, float *dg, int acc,
                                    int hg, int hdg)
{
    const size_t full = dim & ~(size_t)15;
    for (size_t j = 0; j < full; j += 16) {
        if (do1) {
            K512_PF_L1(x1 + j + K512_PIPE_AHEAD);
            K512_PF_L1(dy1 + j + K512_PIPE_AHEAD);
            rms_s1_step(a, x1, dy1, gamma, j, 0xffff, 1, hg);
        }
        if (do2) {
            if (!p->nt) /* the lines of dx stored (or added to) normally */
                K512_PF_L1(dx2 + j + K512_PIPE_AHEAD);
            rms_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, c, p, 0xffff, 1, 1, acc, hg, hdg);
        }
    }
    if (full < dim) {
        const __mmask16 k = k512_tail16(dim - full);
        if (do1)
            rms_s1_step(a, x1, dy1, gamma, full, k, 0, hg);
        if (do2)
            rms_step2(1, full, dy2, 0, x2, 0, gamma, dx2, 0, dg, c, p, k, 0, 1, acc, hg, hdg);
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
    rms_row c = {0.0f, 0.0f}; /* of the row in sweep 2 */
    for (size_t t = 0; t <= rows; t++) {
        const int do1 = t < rows, do2 = t >= 1;
        const size_t r1 = do1 ? t : 0, r2 = do2 ? t - 1 : 0;
        float *dx2 = dx + r2 * dxs;
        const rms_pf p = {NULL, NULL, NULL, do2 && stream && k512_aligned64(dx2)};
        rms_s1 a = rms_s1_begin();
        if (do1 && do2) /* every sweep but the first and the last */
            rms_bwd_pipe_sweep(dim, 1, &a, x + r1 * xs, dy + r1 * dys, 1, &c, x + r2 * xs,
                               dy + r2 * dys, dx2, &p, gamma, dg, acc, hg, hdg);
        else
            rms_bwd_pipe_sweep(dim, do1, &a, x + r1 * xs, dy + r1 * dys, do2, &c, x + r2 * xs,
                               dy + r2 * dys, dx2, &p, gamma, dg, acc, hg, hdg);
        if (do1) { /* row t's constants: it is swept twice next */
            c.rs = rstd[t];
            rms_s1_end(&a, dim, &c);
        }
    }
}

#define NORM_BWD_PIPED_RMS
#include "norm_bwd_piped_tables.h"

void keel_f32_rmsnorm_bwd__avx512(size_t rows, size_t dim, const float *dy, size_t dy_stride,
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
    const size_t group = dim < K512_GROUP_BELOW ? K512_GROUP : 1;
    const int pf = (dx_flags & KEEL_KBWD_PREFETCH) || k512_want_prefetch(rows, dim, x_stride);
    if (hdx && rstd && dim >= K512_GROUP_BELOW) { /* the row pipeline, in cache or not */
        rms_piped_table[acc | (gamma != NULL) << 1 | (dgamma_part != NULL) << 2](
            rows, dim, dy, dy_stride, x, x_stride, rstd, gamma, dx, dx_stride, dgamma_part, stream);
        if (stream)
            _mm_sfence(); /* the streamed stores are visible before the call returns */
        return;
    }
    for (size_t r = 0; r < rows;) {
        const int nr = (int)(rows - r < group ? rows - r : group);
        rms_row c[K512_GROUP] = {{0.0f, 0.0f}};
        if (nr == K512_GROUP)
            rms_bwd_stats(K512_GROUP, r, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, hdx, c);
        else
            for (int i = 0; i < nr; i++)
                rms_bwd_stats(1, r + i, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, hdx,
                              c + i);
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
