/* RMSNorm, float32, written once over the reduction unit of keel's lanes (the kr section of
 * lanes__<isa>.h) and compiled per ISA by f32_rmsnorm__avx2.c, __avx512.c and __neon.c: the
 * formulas and reduction order of kernels.h, 16 floats at a time (a zmm on AVX-512, two ymm on
 * AVX2, four q registers on NEON), giving exactly the bits of f32_rmsnorm__scalar.c. What the
 * paths differ in is the vocabulary's: the group of short rows (KR_GROUP), which rows stream
 * (kr_streamable), the prefetch hints and the order of the backward pipeline's stages
 * (KR_FEW_REGS). A path with a kb section in
 * its lanes (the x86 paths) sends short rows of up to KB_MAX floats through the row batches
 * (row_batches_simd.h). Include after lanes__<isa>.h. */
#ifndef KEEL_KERNELS_F32_RMSNORM_SIMD_H
#define KEEL_KERNELS_F32_RMSNORM_SIMD_H

#include <stdint.h>

#include "norm_finish.h"
#include "row_batches_simd.h"
#include "row_storage_simd.h"
#include "variants.h"

/* rstd_f of the nr rows x + i * xs (nr a constant <= KR_GROUP), from R(xd * xd),
 * xd = (double)x[j]; t: the tail of dim % 16 floats. */
KEEL_INLINE void rms_rstd_n(int nr, const kx_t *x, size_t xs, size_t dim, float eps,
                            const kr_tail *t, float *rstd)
{
    const size_t full = dim & ~(size_t)15;
    kr_d16 s[KR_GROUP];
    double sums[KR_GROUP];
    for (int i = 0; i < nr; i++)
        s[i] = kr_dzero();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++) {
            const kr_d16 a = kx_dload(x + i * xs + j);
            s[i] = kr_dadd(s[i], kr_dmul(a, a));
        }
    for (int i = 0; i < nr; i++) {
        if (full < dim) {
            const kr_d16 a = kr_widen(kx_load_tail(x + i * xs + full, t));
            s[i] = kr_dadd_tail(s[i], kr_dmul(a, a), t);
        }
        sums[i] = kr_reduce16(s[i]);
    }
    kr_rms_rstd_rows(nr, sums, dim, eps, rstd);
}

/* y[j .. j + 16) = x * rs, then * gamma (vr: rs broadcast), or the row's tail t from j (never
 * streamed). */
KEEL_INLINE void rms_out_step(const kx_t *x, kx_t *y, size_t j, kr_f16 vr, const float *gamma,
                              const kr_tail *t, int full, int hg, int nt)
{
    const kstep s = {t, full};
    kr_f16 v = kr_mul(kxs_load(x + j, s), vr);
    if (hg)
        v = kr_mul(v, ks_load(gamma + j, s));
    kxs_store(y + j, v, s, nt);
}

/* y = x * rs, then * gamma (hg a constant). */
KEEL_INLINE void rms_out(size_t dim, const kx_t *x, kx_t *y, const float *gamma, float rs,
                         const kr_tail *t, int hg, int nt)
{
    const kr_f16 vr = kr_set1(rs);
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        rms_out_step(x, y, j, vr, gamma, t, 1, hg, nt);
    if (j < dim)
        rms_out_step(x, y, j, vr, gamma, t, 0, hg, nt);
}

/* rstd and outputs of the nr rows from row r (nr a constant); stream: y may be streamed (rows
 * whose start is kr_streamable are). */
KEEL_INLINE void rms_fwd_rows(int nr, size_t r, size_t dim, const kx_t *x, size_t xs, kx_t *y,
                              size_t ys, const float *gamma, float eps, float *rstd,
                              const kr_tail *t, int stream)
{
    const kx_t *xr = x + r * xs;
    kx_t *yr = y + r * ys;
    float rs[KR_GROUP];
    rms_rstd_n(nr, xr, xs, dim, eps, t, rs);
    for (int i = 0; i < nr; i++) {
        const int nt = stream && kx_streamable(yr + i * ys);
        if (gamma)
            rms_out(dim, xr + i * xs, yr + i * ys, gamma, rs[i], t, 1, nt);
        else
            rms_out(dim, xr + i * xs, yr + i * ys, gamma, rs[i], t, 0, nt);
        if (rstd)
            rstd[r + i] = rs[i];
    }
}

/* ---- the row pipeline ----------------------------------------------------------------------
 * As f32_layernorm_simd.h's, with two stages: one sweep over j does row t's sum of squares
 * (x from memory, the loads KR_PIPE_AHEAD floats behind their prefetches) and row t - 1's
 * output (its x row still in L1/L2), so that the reads and the writes go to memory together
 * (keel bench --rows 4096 --dim 4096 --threads 1: 0.86-0.91 of the copy floor -> 1.00-1.02).
 * Each row's arithmetic is rms_rstd_n's and rms_out's: the same bits. It takes the tensors that
 * the prefetching path took (keel_want_prefetch), at any width, only one row being kept in cache
 * (keel_profile_loop rmsf, 1 thread, fastest call, one row at a time -> pipelined, AVX-512:
 * 4096x4096 5.70 -> 4.52 ms, 1024x8192 2.75 -> 2.39 ms, 4096x1024 1.17 -> 0.95 ms, 32x262144
 * 4.46 -> 3.77 ms, 8x1048576 5.39 -> 3.92 ms; AVX2: 4096x4096 5.6 -> 4.5 ms, 1024x8192 2.84 ->
 * 2.28 ms, 4096x1024 1.19 -> 0.92 ms, 8x1048576 5.24 -> 4.04 ms). On data in cache it is not
 * clearly faster (64x1024 and 256x1024 1.1-1.2x, 64x4096 and 128x4096 0.92-0.97x, 2048x256
 * 0.98-0.99x): those stay one row at a time. */

/* One sweep of the pipeline, each stage optional (do_*, constants in the steady state): xs,
 * the row summed, *sumsq its R(x * x); xo, yo, rs, nt: the row written; pfy: the y row written
 * next, fetched now (NULL: not). */
KEEL_INLINE void rms_pipe_sweep(size_t dim, const kr_tail *t, int do_sum, const kx_t *xs,
                                double *sumsq, int do_out, const kx_t *xo, kx_t *yo, float rs,
                                int nt, const float *gamma, int hg, const kx_t *pfy)
{
    const size_t full = dim & ~(size_t)15;
    const kr_f16 vr = kr_set1(rs);
    kr_d16 s = kr_dzero();
    for (size_t j = 0; j < full; j += 16) {
        if (pfy)
            kx_prefetch_l1(pfy + j);
        if (do_sum) {
            kx_prefetch_l1(xs + j + KR_PIPE_AHEAD);
            const kr_d16 a = kx_dload(xs + j);
            s = kr_dadd(s, kr_dmul(a, a));
        }
        if (do_out)
            rms_out_step(xo, yo, j, vr, gamma, t, 1, hg, nt);
    }
    if (full < dim) { /* the tail, as rms_rstd_n's and rms_out's */
        if (do_sum) {
            const kr_d16 a = kr_widen(kx_load_tail(xs + full, t));
            s = kr_dadd_tail(s, kr_dmul(a, a), t);
        }
        if (do_out)
            rms_out_step(xo, yo, full, vr, gamma, t, 0, hg, nt);
    }
    if (do_sum)
        *sumsq = kr_reduce16(s);
}

/* The pipeline over all rows: sweep t sums row t and writes row t - 1. Stage pointers of
 * absent rows are never formed (row 0's stand in). It takes rows of KR_GROUP_BELOW floats or
 * more, in cache too where the two rows fit L2 (up to RMS_PIPE_MAX_DIM), and beyond L2 any
 * row. Measured in cache on AVX-512, 1 thread, one row at a time -> pipelined: keel bench (y out
 * of cache) 256x1024 0.48 -> 0.62 of the floor, 512x768 0.59 -> 0.77, 128x2048 0.43 -> 0.63,
 * 8x1024 6.8 -> 3.7 us, 4x8192 32.7 -> 16.8 us; keel_profile_loop (y in cache) 256x1024 46.9
 * -> 33.7 us, 64x1024 9.7 -> 8.0 us, but 1024x512 129 -> 138 us and 128x2048 45 -> 50 us. */
#define RMS_PIPE_MAX_DIM 65536
KEEL_INLINE void rms_fwd_piped(size_t rows, size_t dim, const kx_t *x, size_t xs, kx_t *y,
                               size_t ys, const float *gamma, float eps, float *rstd, int stream,
                               int hg)
{
    const kr_tail t = kr_tail_of(dim % 16);
    float rs_o = 0.0f; /* of the row written next */
    for (size_t r = 0; r < rows + 1; r++) {
        const int do_sum = r < rows, do_out = r >= 1;
        const kx_t *xsum = x + (do_sum ? r : 0) * xs, *xo = x + (do_out ? r - 1 : 0) * xs;
        kx_t *yo = y + (do_out ? r - 1 : 0) * ys;
        const int nt = stream && kx_streamable(yo);
        /* the y row written next, fetched now when it is not streamed (see ln_fwd_piped;
         * 4096x768 with y out of cache: 1.61-1.66 -> 1.16-1.21 ms) */
        const kx_t *yn = y + (do_sum ? r : 0) * ys;
        const kx_t *pfy = do_sum && !(stream && kx_streamable(yn)) ? yn : NULL;
        double ss = 0.0;
        if (do_sum && do_out) /* every sweep but the first and the last */
            rms_pipe_sweep(dim, &t, 1, xsum, &ss, 1, xo, yo, rs_o, nt, gamma, hg, pfy);
        else
            rms_pipe_sweep(dim, &t, do_sum, xsum, &ss, do_out, xo, yo, rs_o, nt, gamma, hg, pfy);
        if (do_sum) {
            rs_o = keel_rms_rstd(ss, dim, eps);
            if (rstd)
                rstd[r] = rs_o;
        }
    }
}

/* Short rows: on x86, up to KB_MAX floats go KB_ROWS at a time through the row batches
 * (row_batches_simd.h, x alone: plain_fwd_batches). Measured on AVX-512
 * (keel_profile_loop rmsf 4096 16, 1 thread, fastest call): 18 us in groups, 13-14.7 us; keel
 * bench, fraction of the floor, 8192x32 0.46 -> 0.65, 5461x48 0.47 -> 0.66, 4096x64 0.43-0.46
 * -> 0.62-0.64 (rows of 17 to 64 floats went in groups before). The others go KR_GROUP at a
 * time. */
static void rmsnorm_fwd(size_t rows, size_t dim, const kx_t *x, size_t x_stride, kx_t *y,
                        size_t y_stride, const float *gamma, float eps, float *rstd)
{
    const kr_tail t = kr_tail_of(dim % 16);
    const int stream = keel_want_stream(rows * y_stride * sizeof(kx_t));
#define ROWS(nr) rms_fwd_rows(nr, r, dim, x, x_stride, y, y_stride, gamma, eps, rstd, &t, stream)
    size_t r = 0;
    if (dim < KR_GROUP_BELOW) {
#if defined(KB_ROWS) && !KX_NARROW
        if (dim <= KB_MAX && rows >= KB_ROWS)
            r = plain_fwd_batches(rows, dim, x, x_stride, y, y_stride, gamma, NULL, eps, NULL,
                                  rstd, stream, 1);
#endif
        for (; r + KR_GROUP <= rows; r += KR_GROUP)
            ROWS(KR_GROUP);
        for (; r < rows; r++)
            ROWS(1);
    } else if (dim <= RMS_PIPE_MAX_DIM || keel_want_prefetch(dim, rows * x_stride * sizeof(kx_t))) {
        if (gamma)
            rms_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd, stream, 1);
        else
            rms_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, eps, rstd, stream, 0);
    } else {
        for (; r < rows; r++)
            ROWS(1);
    }
    if (stream)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
#undef ROWS
}

/* ---- backward ----------------------------------------------------------------------------
 * Small rows go in groups of KR_GROUP as in the forward: sweep 1 interleaves their reductions,
 * and sweep 2 updates a column chunk of the dgamma partial once for the whole group, adding the
 * rows in increasing order as kernels.h requires. Rows of KR_GROUP_BELOW floats or more with
 * rstd given go through the row pipeline (rms_bwd_piped, below) instead. */

/* The per-row constants of sweep 2. */
typedef struct rms_row {
    float rs, b;
} rms_row;

/* Sweep 1 at column j of the row x, dy: Sgx += (double)g * (double)x, g = dy * gamma (float)
 * or dy, over 16 floats (full) or the row's tail t (loads masked to the row, and only the lanes
 * that get an element added to). A step at a time, so that the grouped rows and the row
 * pipeline (below) run the same arithmetic. */
KEEL_INLINE void rms_s1_full(kr_d16 *a, const kx_t *x, const kx_t *dy, size_t j, kr_f16 gam,
                             int hg)
{
    const kr_f16 g = hg ? kr_mul(kx_load(dy + j), gam) : kx_load(dy + j);
    *a = kr_dadd(*a, kr_dmul(kr_widen(g), kx_dload(x + j)));
}

KEEL_INLINE void rms_s1_step(kr_d16 *a, const kx_t *x, const kx_t *dy, const float *gamma,
                             size_t j, const kr_tail *t, int full, int hg)
{
    if (full) {
        rms_s1_full(a, x, dy, j, hg ? kr_load(gamma + j) : kr_set1(0.0f), hg);
        return;
    }
    kr_f16 g = kx_load_tail(dy + j, t);
    if (hg)
        g = kr_mul(g, kr_load_tail(gamma + j, t));
    *a = kr_dadd_tail(*a, kr_dmul(kr_widen(g), kr_widen(kx_load_tail(x + j, t))), t);
}

/* b_f of kernels.h from sweep 1's sum into c (rs already there). */
KEEL_INLINE void rms_s1_end(const kr_d16 *a, size_t dim, rms_row *c)
{
    c->b = keel_rms_bwd_b(c->rs, kr_reduce16(*a), dim);
}

/* Sweep 1 of the nr rows (nr a constant), their steps interleaved; then b_f into c[i] (rs
 * already there). */
KEEL_INLINE void rms_sweep1_n(int nr, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,
                              size_t xs, const float *gamma, const kr_tail *t, rms_row *c, int hg)
{
    const size_t full = dim & ~(size_t)15;
    kr_d16 a[KR_GROUP];
    for (int i = 0; i < nr; i++)
        a[i] = kr_dzero();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++)
            rms_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, j, t, 1, hg);
    for (int i = 0; i < nr; i++) {
        if (full < dim)
            rms_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, full, t, 0, hg);
        rms_s1_end(&a[i], dim, &c[i]);
    }
}

/* Where sweep 2 prefetches: the next group's rows (NULL: nowhere). */
typedef struct rms_pf {
    const kx_t *x, *dy;
    kx_t *dx;
    int nt; /* stream dx (full steps) */
} rms_pf;

/* One step of sweep 2 at column j over the nr rows (not a constant), 16 floats (full) or the
 * tail t; gv: gamma[j ..] already loaded (the row pipeline's, shared with sweep 1), or NULL.
 * Pointers of absent arrays are never offset (they may be NULL). */
KEEL_INLINE void rms_step2(int nr, size_t j, const kx_t *dy, size_t dys, const kx_t *x, size_t xs,
                           const float *gamma, const kr_f16 *gv, kx_t *dx, size_t dxs, float *dg,
                           const rms_row *c, const rms_pf *pf, const kr_tail *t, int full, int hdx,
                           int acc, int hg, int hdg)
{
    const kstep s = {t, full};
    const kr_f16 gam = !(hdx && hg) ? kr_set1(0.0f) : gv ? *gv : ks_load(gamma + j, s);
    kr_f16 dgv = hdg ? ks_load(dg + j, s) : kr_set1(0.0f);
    for (int i = 0; i < nr; i++) {
        const kr_f16 vr = kr_set1(c[i].rs);
        const kr_f16 xhat = kr_mul(kxs_load(x + i * xs + j, s), vr);
        const kr_f16 dyv = kxs_load(dy + i * dys + j, s);
        if (hdx) {
            const kr_f16 g = hg ? kr_mul(dyv, gam) : dyv;
            kr_f16 v = kr_mul(vr, kr_sub(g, kr_mul(xhat, kr_set1(c[i].b))));
            if (acc)
                v = kr_add(kxs_load(dx + i * dxs + j, s), v);
            kxs_store(dx + i * dxs + j, v, s, pf->nt);
        }
        if (hdg)
            dgv = kr_add(dgv, kr_mul(dyv, xhat));
        if (full && pf->x) { /* one cache line of each of the next group's rows */
            kx_prefetch_l2(pf->x + i * xs + j);
            kx_prefetch_l2(pf->dy + i * dys + j);
            if (hdx && !pf->nt)
                kx_prefetch_l2(pf->dx + i * dxs + j);
        }
    }
    if (hdg)
        ks_store(dg + j, dgv, s, 0);
}

KEEL_INLINE void rms_sweep2(int nr, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,
                            size_t xs, const float *gamma, kx_t *dx, size_t dxs, float *dg,
                            const rms_row *c, const rms_pf *pf, int hdx, int acc, int hg, int hdg)
{
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        rms_step2(nr, j, dy, dys, x, xs, gamma, NULL, dx, dxs, dg, c, pf, NULL, 1, hdx, acc, hg,
                  hdg);
    if (j < dim) {
        const kr_tail t = kr_tail_of(dim - j);
        rms_step2(nr, j, dy, dys, x, xs, gamma, NULL, dx, dxs, dg, c, pf, &t, 0, hdx, acc, hg, hdg);
    }
}

/* Sweep 2 for the 4 flags (dx, accumulate, gamma, dgamma), each a constant. */
typedef void (*rms_sweep2_fn)(int, size_t, const kx_t *, size_t, const kx_t *, size_t,
                              const float *, kx_t *, size_t, float *, const rms_row *,
                              const rms_pf *);
#define RMS_SWEEP2_VARIANT(i)                                                                      \
    static void rms_sweep2_##i(int nr, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,    \
                               size_t xs, const float *gamma, kx_t *dx, size_t dxs, float *dg,    \
                               const rms_row *c, const rms_pf *pf)                                 \
    {                                                                                              \
        rms_sweep2(nr, dim, dy, dys, x, xs, gamma, dx, dxs, dg, c, pf, (i)&1, ((i) >> 1) & 1,      \
                   ((i) >> 2) & 1, ((i) >> 3) & 1);                                                \
    }
KEEL_EACH16(RMS_SWEEP2_VARIANT)
#undef RMS_SWEEP2_VARIANT
static const rms_sweep2_fn rms_sweep2_table[16] = {KEEL_LIST16(rms_sweep2_)};

/* rstd (given or recomputed) and sweep 1 of the nr rows from row r (nr a constant). */
KEEL_INLINE void rms_bwd_stats(int nr, size_t r, size_t dim, const kx_t *dy, size_t dys,
                               const kx_t *x, size_t xs, const float *rstd, const float *gamma,
                               float eps, int hdx, const kr_tail *t, rms_row *c)
{
    const kx_t *xr = x + r * xs;
    float rs[KR_GROUP];
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

/* Whether the dx rows r .. r + nr - 1 all start kr_streamable. */
KEEL_INLINE int rms_dx_streamable(const kx_t *dx, size_t dxs, size_t r, int nr)
{
    for (int i = 0; i < nr; i++)
        if (!kx_streamable(dx + (r + (size_t)i) * dxs))
            return 0;
    return 1;
}

/* ---- the backward's row pipeline -----------------------------------------------------------
 * As f32_layernorm_simd.h's: with rstd given and dx wanted, one sweep over j does row t's
 * sweep 1 (x and dy from memory, the loads KR_PIPE_AHEAD floats behind their prefetches) and
 * row t - 1's sweep 2 (its x and dy still in cache, dx written or streamed, the dgamma partial
 * updated), so that reads and writes stream together. Each row's arithmetic is rms_sweep1_n's
 * and rms_step2's with one row, and sweep 2 still takes the rows in increasing order: the same
 * bits. Measured (keel_profile_loop rmsb, 1 thread, fastest call, one row at a time with the
 * next row prefetched into L2 -> pipelined, AVX-512; AVX2 alike): 4096x4096 14.1-14.6 ->
 * 11.2-12.2 ms, 1024x8192 7.2 -> 4.8 ms, 4096x1024 2.04 -> 1.55 ms, 4096x768 1.73 -> 1.38 ms,
 * 4096x1000 2.61 -> 1.90 ms; keel bench --rows 4096 --dim 4096 --threads 1: 0.71-0.72 of the
 * copy floor -> 0.85-0.87. As LayerNorm's, it runs faster in cache too (256x1024 172 -> 135 us,
 * 64x4096 226 -> 159 us, 2048x256 286 -> 237 us) and on wide rows (32x262144 13.2 -> 9.4 ms,
 * 8x1048576 13.4 -> 9.5 ms), so it takes every call with rstd given, dx wanted (else there is no
 * sweep 1) and rows of KR_GROUP_BELOW floats or more. The prefetch of the dx lines that are not
 * streamed pays everywhere (without it: 4096x1000 1.90 -> 2.71 ms, 256x1024 132 -> 162 us). */

/* The pipeline's sweep 2 of one row at column j (16 floats), the lines of dx ahead fetched when
 * they are stored (or added to) normally. */
KEEL_INLINE void rms_pipe_step2(size_t j, const rms_row *c, const kx_t *x2, const kx_t *dy2,
                                kx_t *dx2, const rms_pf *p, const float *gamma, const kr_f16 *gam,
                                float *dg, const kr_tail *t, int acc, int hg, int hdg)
{
    if (!p->nt)
        kx_prefetch_l1(dx2 + j + KR_PIPE_AHEAD);
    rms_step2(1, j, dy2, 0, x2, 0, gamma, gam, dx2, 0, dg, c, p, t, 1, 1, acc, hg, hdg);
}

/* One sweep of the pipeline, each stage optional (do1, do2: constants in the steady state):
 * x1, dy1, a: the row of sweep 1 and its sum; c, x2, dy2, dx2, p: the row of sweep 2 and its
 * constants (p->nt: dx streamed). */
KEEL_INLINE void rms_bwd_pipe_sweep(size_t dim, const kr_tail *t, int do1, kr_d16 *a,
                                    const kx_t *x1, const kx_t *dy1, int do2, const rms_row *c,
                                    const kx_t *x2, const kx_t *dy2, kx_t *dx2, const rms_pf *p,
                                    const float *gamma, float *dg, int acc, int hg, int hdg)
{
    const size_t full = dim & ~(size_t)15;
    for (size_t j = 0; j < full; j += 16) {
        /* gamma's floats, loaded once for both stages. Where registers are few (KR_FEW_REGS:
         * AVX2's 16), sweep 2 goes first and sweep 1 then takes them at once: in the other order
         * they stay live across sweep 1's widening and spill (AVX2, rmsb 8x4096 12.4 -> 13.5 us,
         * 64x1024 23.5 -> 25.5 us); with 32 registers sweep 1 first measured 1-2% faster
         * (AVX-512 rmsb 64x1024 19.2 -> 18.9 us, 256x1024 120 -> 118 us). */
        const kr_f16 gam = hg ? kr_load(gamma + j) : kr_set1(0.0f);
        if (KR_FEW_REGS && do2)
            rms_pipe_step2(j, c, x2, dy2, dx2, p, gamma, &gam, dg, t, acc, hg, hdg);
        if (do1) {
            kx_prefetch_l1(x1 + j + KR_PIPE_AHEAD);
            kx_prefetch_l1(dy1 + j + KR_PIPE_AHEAD);
            rms_s1_full(a, x1, dy1, j, gam, hg);
        }
        if (!KR_FEW_REGS && do2)
            rms_pipe_step2(j, c, x2, dy2, dx2, p, gamma, &gam, dg, t, acc, hg, hdg);
    }
    if (full < dim) {
        if (do1)
            rms_s1_step(a, x1, dy1, gamma, full, t, 0, hg);
        if (do2)
            rms_step2(1, full, dy2, 0, x2, 0, gamma, NULL, dx2, 0, dg, c, p, t, 0, 1, acc, hg, hdg);
    }
}

/* The pipeline over all rows (rstd given, dx wanted): sweep t runs row t's sweep 1 and row
 * t - 1's sweep 2. Row pointers of absent rows are never formed (row 0's stand in). stream: dx
 * rows that start kr_streamable are streamed. */
KEEL_INLINE void rms_bwd_piped(size_t rows, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,
                               size_t xs, const float *rstd, const float *gamma, kx_t *dx,
                               size_t dxs, float *dg, int stream, int acc, int hg, int hdg)
{
    const kr_tail tail = kr_tail_of(dim % 16);
    rms_row c = {0.0f, 0.0f}; /* of the row in sweep 2 */
    for (size_t t = 0; t <= rows; t++) {
        const int do1 = t < rows, do2 = t >= 1;
        const size_t r1 = do1 ? t : 0, r2 = do2 ? t - 1 : 0;
        kx_t *dx2 = dx + r2 * dxs;
        const rms_pf p = {NULL, NULL, NULL, do2 && stream && kx_streamable(dx2)};
        kr_d16 a = kr_dzero();
        if (do1 && do2) /* every sweep but the first and the last */
            rms_bwd_pipe_sweep(dim, &tail, 1, &a, x + r1 * xs, dy + r1 * dys, 1, &c, x + r2 * xs,
                               dy + r2 * dys, dx2, &p, gamma, dg, acc, hg, hdg);
        else
            rms_bwd_pipe_sweep(dim, &tail, do1, &a, x + r1 * xs, dy + r1 * dys, do2, &c,
                               x + r2 * xs, dy + r2 * dys, dx2, &p, gamma, dg, acc, hg, hdg);
        if (do1) { /* row t's constants: it is swept twice next */
            c.rs = rstd[t];
            rms_s1_end(&a, dim, &c);
        }
    }
}

#define NORM_BWD_PIPED_RMS
#include "norm_bwd_piped_tables.h"

static void rmsnorm_bwd(size_t rows, size_t dim, const kx_t *dy, size_t dy_stride, const kx_t *x,
                        size_t x_stride, const float *rstd, const float *gamma, float eps,
                        kx_t *dx, size_t dx_stride, int dx_flags, float *dgamma_part)
{
    const int hdx = dx != NULL, acc = (dx_flags & KEEL_KBWD_ACCUMULATE) != 0;
    /* streaming stores of dx when told dx spans far beyond the caches (never with accumulate) */
    const int stream = hdx && !acc && (dx_flags & KEEL_KBWD_STREAM);
    const rms_sweep2_fn sweep2 = rms_sweep2_table[hdx | (hdx && acc) << 1 | (gamma != NULL) << 2 |
                                                  (dgamma_part != NULL) << 3];
    const kr_tail t = kr_tail_of(dim % 16);
    const size_t group = dim < KR_GROUP_BELOW ? KR_GROUP : 1;
    const int pf = (dx_flags & KEEL_KBWD_PREFETCH) || keel_want_prefetch(dim, rows * x_stride * sizeof(kx_t));
    if (hdx && rstd && dim >= KR_GROUP_BELOW) { /* the row pipeline, in cache or not */
        rms_piped_table[acc | (gamma != NULL) << 1 | (dgamma_part != NULL) << 2](
            rows, dim, dy, dy_stride, x, x_stride, rstd, gamma, dx, dx_stride, dgamma_part, stream);
        if (stream)
            kl_stream_fence(); /* the streamed stores are visible before the call returns */
        return;
    }
    for (size_t r = 0; r < rows;) {
        const int nr = (int)(rows - r < group ? rows - r : group);
        rms_row c[KR_GROUP] = {{0.0f, 0.0f}};
        if (nr == KR_GROUP)
            rms_bwd_stats(KR_GROUP, r, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, hdx, &t,
                          c);
        else
            for (int i = 0; i < nr; i++)
                rms_bwd_stats(1, r + i, dim, dy, dy_stride, x, x_stride, rstd, gamma, eps, hdx, &t,
                              c + i);
        /* prefetch the next group while sweep 2 works in cache, when it is a whole one */
        rms_pf p = {NULL, NULL, NULL, stream && rms_dx_streamable(dx, dx_stride, r, nr)};
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
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

#endif
