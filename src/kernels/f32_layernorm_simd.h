/* LayerNorm, float32, written once over the reduction unit of keel's lanes (the kr section of
 * lanes__<isa>.h) and compiled per ISA by f32_layernorm__avx2.c, __avx512.c and __neon.c: the
 * formulas and reduction order of kernels.h, 16 floats at a time (a zmm on AVX-512, two ymm on
 * AVX2, four q registers on NEON), giving exactly the bits of f32_layernorm__scalar.c.
 * Reductions run in kr_d16's double lanes; elementwise work is float, one rounding per operation
 * as written (no FMA: built with -ffp-contract=off, separate mul and add only). Small rows go a
 * group at a time, the forward and the backward pipeline their rows (three rows, two rows in one
 * sweep: see below) and large tensors are prefetched; none of these changes the order of any
 * operation within a row. What the paths differ in is the vocabulary's: the group of short rows
 * (KR_GROUP), the rows the backward's sweep 1 interleaves (LN_S1_ROWS, from the registers a
 * kr_d16 takes), which rows stream (kr_streamable) and the prefetch hints. A path with a kb
 * section in its lanes (the x86 paths) sends short rows of up to KB_TAKE_MAX floats through the
 * row batches (row_batches_simd.h). Include
 * after lanes__<isa>.h. */
#ifndef KEEL_KERNELS_F32_LAYERNORM_SIMD_H
#define KEEL_KERNELS_F32_LAYERNORM_SIMD_H

#include <stdint.h>

#include "norm_finish.h"
#include "row_batches_simd.h"
#include "row_storage_simd.h"
#include "variants.h"

/* The forward's statistics of the nr rows x + i * xs (nr a constant <= KR_GROUP): mean_d[i],
 * rstd_f[i]; t: the tail of dim % 16 floats. With pf (a constant), the centred pass, which runs
 * on rows already in cache, prefetches the next rows pfx + i * xs into L2 and the outputs
 * pfy + i * ys into L1 (pfy NULL: not), so that the next sweep over memory and the stores
 * overlap this work. */
KEEL_INLINE void ln_stats_n(int nr, const kx_t *x, size_t xs, size_t dim, float eps,
                            const kr_tail *t, double *mean, float *rstd, int pf, const kx_t *pfx,
                            const kx_t *pfy, size_t ys)
{
    const size_t full = dim & ~(size_t)15;
    kr_d16 s[KR_GROUP], m[KR_GROUP];
    for (int i = 0; i < nr; i++)
        s[i] = kr_dzero();
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++)
            s[i] = kr_dadd(s[i], kx_dload(x + i * xs + j));
    for (int i = 0; i < nr; i++) {
        if (full < dim)
            s[i] = kr_dadd_tail(s[i], kx_dload_tail(x + i * xs + full, t), t);
        mean[i] = keel_ln_mean(kr_reduce16(s[i]), dim);
        m[i] = kr_dset1(mean[i]);
        s[i] = kr_dzero();
    }
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++) {
            const kr_d16 d = kr_dsub(kx_dload(x + i * xs + j), m[i]);
            s[i] = kr_dadd(s[i], kr_dmul(d, d));
            if (pf) {
                kx_prefetch_l2(pfx + i * xs + j);
                if (pfy) /* not when y is streamed: the prefetch would fetch its lines */
                    kx_prefetch_l1(pfy + i * ys + j);
            }
        }
    for (int i = 0; i < nr; i++) {
        if (full < dim) {
            const kr_d16 d = kr_dsub(kx_dload_tail(x + i * xs + full, t), m[i]);
            s[i] = kr_dadd_tail(s[i], kr_dmul(d, d), t);
        }
        rstd[i] = keel_ln_rstd(kr_reduce16(s[i]), dim, eps);
    }
}

/* y[j .. j + 16) = ((x - hi) - lo) * rs, then * gamma, then + beta (vh, vl, vr: hi, lo, rs
 * broadcast), or the row's tail t from j (never streamed). */
KEEL_INLINE void ln_out_step(const kx_t *x, kx_t *y, size_t j, kr_f16 vh, kr_f16 vl, kr_f16 vr,
                             const float *gamma, const float *beta, const kr_tail *t, int full,
                             int hg, int hb, int nt)
{
    const kstep s = {t, full};
    kr_f16 v = kr_mul(kr_sub(kr_sub(kxs_load(x + j, s), vh), vl), vr);
    if (hg)
        v = kr_mul(v, ks_load(gamma + j, s));
    if (hb)
        v = kr_add(v, ks_load(beta + j, s));
    kxs_store(y + j, v, s, nt);
}

/* y = ((x - hi) - lo) * rs, then * gamma, then + beta. hg/hb are constants at each call site,
 * so every combination gets its own loop without branches. */
KEEL_INLINE void ln_out(size_t dim, const kx_t *x, kx_t *y, const float *gamma, const float *beta,
                        float hi, float lo, float rs, const kr_tail *t, int hg, int hb, int nt)
{
    const kr_f16 vh = kr_set1(hi), vl = kr_set1(lo), vr = kr_set1(rs);
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        ln_out_step(x, y, j, vh, vl, vr, gamma, beta, t, 1, hg, hb, nt);
    if (j < dim)
        ln_out_step(x, y, j, vh, vl, vr, gamma, beta, t, 0, hg, hb, nt);
}

/* Statistics and outputs of the nr rows from row r (nr and pf constants). stream: y may be
 * streamed (rows whose start is kr_streamable are). */
KEEL_INLINE void ln_fwd_rows(int nr, int pf, size_t r, size_t rows, size_t dim, const kx_t *x,
                             size_t xs, kx_t *y, size_t ys, const float *gamma, const float *beta,
                             float eps, float *mean, float *rstd, const kr_tail *t, int stream)
{
    const kx_t *xr = x + r * xs;
    kx_t *yr = y + r * ys;
    /* prefetch the next group if it is a whole one, else (nothing left to fetch) this one */
    const kx_t *pfx = r + 2 * (size_t)nr <= rows ? xr + (size_t)nr * xs : xr;
    double mean_d[KR_GROUP];
    float rs[KR_GROUP];
    ln_stats_n(nr, xr, xs, dim, eps, t, mean_d, rs, pf, pfx, stream ? NULL : yr, ys);
    for (int i = 0; i < nr; i++) {
        /* mean as a float hi + lo pair (see the scalar kernel) */
        const float hi = (float)mean_d[i];
        const float lo = (float)(mean_d[i] - (double)hi);
        const kx_t *xi = xr + i * xs;
        kx_t *yi = yr + i * ys;
        const int nt = stream && kx_streamable(yi);
        if (gamma && beta)
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], t, 1, 1, nt);
        else if (gamma)
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], t, 1, 0, nt);
        else if (beta)
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], t, 0, 1, nt);
        else
            ln_out(dim, xi, yi, gamma, beta, hi, lo, rs[i], t, 0, 0, nt);
        if (mean)
            mean[r + i] = hi;
        if (rstd)
            rstd[r + i] = rs[i];
    }
}

/* ---- the row pipeline ----------------------------------------------------------------------
 * One row at a time, a row's three sweeps run one after the other: only the first reads x from
 * memory and only the third writes y, so the memory sees reads and writes in turn, never
 * together (keel bench --rows 4096 --dim 4096 --threads 1, AVX-512: 0.69-0.75 of the copy floor;
 * 0.81-0.85 pipelined). The pipeline does three rows' work in one sweep over j: row t's sum (x
 * from memory, the loads KR_PIPE_AHEAD floats behind their prefetches), row t - 1's centred sum
 * and row t - 2's output (their x rows still in L1/L2 from the two sweeps before), so that reads
 * and writes stream together as in a copy and the statistics' work in cache hides under them.
 * The first two sweeps and the last two do fewer stages. Each row's arithmetic is ln_stats_n's
 * and ln_out's, in the same order per lane: the same bits.
 *
 * Measured (keel_profile_loop lnf, 1 thread, fastest call, one row at a time -> pipelined),
 * AVX-512: 4096x4096 7.6-7.9 -> 6.5 ms, 1024x8192 3.64 -> 2.78 ms, 4096x1024 1.46 -> 1.09 ms;
 * AVX2: 4096x4096 8.4 -> 7.5 ms, 1024x8192 3.67 -> 2.89 ms, 4096x1024 1.60 -> 1.18 ms, 4096x768
 * 1.15 -> 0.95 ms. The three independent chains of adds also run faster than one row's two alone
 * on data in cache (AVX-512: 64x1024 20.0 -> 17.4 us, 512x1024 200 -> 151 us, 64x4096 92 -> 72
 * us, 2048x256 193 -> 150 us; AVX2: 64x1024 20.9 -> 18.2 us, 512x1024 212 -> 153 us, 2048x256
 * 228 -> 170 us), so the pipeline takes every row of KR_GROUP_BELOW floats or more up to
 * LN_PIPE_MAX_DIM, where the three rows (768 KiB) still sit in L2: 128x65536 4.19 -> 3.03 ms
 * (AVX2 3.99 -> 3.10 ms), but 64x131072 4.87 -> 5.29 ms (AVX2 4.95 -> 5.48 ms) and 16x262144
 * about equal. Prefetching ahead in cache costs nothing measurable. */
#define LN_PIPE_MAX_DIM 65536

/* One sweep of the pipeline, each stage optional (do_*, constants in the steady state):
 * xs: the row summed, *sum its R(x); xc, mean_c: the row centred, *cen its R((x - mean)^2);
 * xo, yo, hi, lo, rs, nt: the row written; pfy: the y row written next, fetched now (NULL:
 * not). */
KEEL_INLINE void ln_pipe_sweep(size_t dim, const kr_tail *t, int do_sum, const kx_t *xs,
                               double *sum, int do_cen, const kx_t *xc, double mean_c, double *cen,
                               int do_out, const kx_t *xo, kx_t *yo, float hi, float lo, float rs,
                               int nt, const float *gamma, const float *beta, int hg, int hb,
                               const kx_t *pfy)
{
    const size_t full = dim & ~(size_t)15;
    const kr_d16 m = kr_dset1(mean_c);
    const kr_f16 vh = kr_set1(hi), vl = kr_set1(lo), vr = kr_set1(rs);
    kr_d16 s = kr_dzero(), c = kr_dzero();
    for (size_t j = 0; j < full; j += 16) {
        if (pfy)
            kx_prefetch_l1(pfy + j);
        if (do_sum) {
            kx_prefetch_l1(xs + j + KR_PIPE_AHEAD);
            s = kr_dadd(s, kx_dload(xs + j));
        }
        if (do_cen) {
            const kr_d16 d = kr_dsub(kx_dload(xc + j), m);
            c = kr_dadd(c, kr_dmul(d, d));
        }
        if (do_out)
            ln_out_step(xo, yo, j, vh, vl, vr, gamma, beta, t, 1, hg, hb, nt);
    }
    if (full < dim) { /* the tail, as ln_stats_n's and ln_out's */
        if (do_sum)
            s = kr_dadd_tail(s, kx_dload_tail(xs + full, t), t);
        if (do_cen) {
            const kr_d16 d = kr_dsub(kx_dload_tail(xc + full, t), m);
            c = kr_dadd_tail(c, kr_dmul(d, d), t);
        }
        if (do_out)
            ln_out_step(xo, yo, full, vh, vl, vr, gamma, beta, t, 0, hg, hb, nt);
    }
    if (do_sum)
        *sum = kr_reduce16(s);
    if (do_cen)
        *cen = kr_reduce16(c);
}

/* The pipeline over all rows: sweep t sums row t, centres row t - 1 and writes row t - 2.
 * Stage pointers of absent rows are never formed (row 0's stand in). */
KEEL_INLINE void ln_fwd_piped(size_t rows, size_t dim, const kx_t *x, size_t xs, kx_t *y,
                              size_t ys, const float *gamma, const float *beta, float eps,
                              float *mean, float *rstd, int stream, int hg, int hb)
{
    const kr_tail tail = kr_tail_of(dim % 16);
    double mean_c = 0.0, mean_o = 0.0; /* of the rows centred and written next */
    float rs_o = 0.0f;
    for (size_t t = 0; t < rows + 2; t++) {
        const int do_sum = t < rows, do_cen = t >= 1 && t - 1 < rows, do_out = t >= 2;
        const kx_t *xsum = x + (do_sum ? t : 0) * xs, *xc = x + (do_cen ? t - 1 : 0) * xs;
        const kx_t *xo = x + (do_out ? t - 2 : 0) * xs;
        kx_t *yo = y + (do_out ? t - 2 : 0) * ys;
        /* the written row's mean as a float hi + lo pair (see the scalar kernel) */
        const float hi = (float)mean_o, lo = (float)(mean_o - (double)hi);
        const int nt = stream && kx_streamable(yo);
        /* the y row written next, fetched now when it is not streamed (its lines are likely
         * out of cache: a write to them would first read them, stalling the loop). Measured
         * on AVX-512 with y out of cache, as keel bench leaves it: 4096x768 1.47 -> 1.26-1.28
         * ms; in cache too (fraction of the floor 256x1024 0.50 -> 0.60, 1024x512 0.63 ->
         * 0.74, 4x8192 0.07 -> 0.14); with y in cache (keel_profile_loop) equal within noise
         * but for 4x8192, 7.0 -> 8.5 us */
        const kx_t *yn = y + (do_cen ? t - 1 : 0) * ys;
        const kx_t *pfy = do_cen && !(stream && kx_streamable(yn)) ? yn : NULL;
        double sum = 0.0, cen = 0.0;
        if (do_sum && do_cen && do_out) /* every sweep but the first two and the last two */
            ln_pipe_sweep(dim, &tail, 1, xsum, &sum, 1, xc, mean_c, &cen, 1, xo, yo, hi, lo, rs_o,
                          nt, gamma, beta, hg, hb, pfy);
        else
            ln_pipe_sweep(dim, &tail, do_sum, xsum, &sum, do_cen, xc, mean_c, &cen, do_out, xo, yo,
                          hi, lo, rs_o, nt, gamma, beta, hg, hb, pfy);
        if (do_cen) { /* row t - 1's statistics are complete: it is written next */
            mean_o = mean_c;
            rs_o = keel_ln_rstd(cen, dim, eps);
            if (mean)
                mean[t - 1] = (float)mean_o;
            if (rstd)
                rstd[t - 1] = rs_o;
        }
        if (do_sum)
            mean_c = keel_ln_mean(sum, dim);
    }
}

/* Short rows: on x86, up to KB_TAKE_MAX floats go KB_ROWS at a time through the row batches
 * (row_batches_simd.h, x alone: plain_fwd_batches): the statistics of
 * KB_ROWS rows in one vector. Measured on AVX-512 (keel_profile_loop lnf 4096 16, 1 thread,
 * fastest call): 41 us in groups of KR_GROUP, 25-26.5 us in batches; keel bench, fraction of the
 * floor, 8192x32 0.45 -> 0.61, 5461x48 0.52 -> 0.57 (rows of 17 to 48 floats went in groups
 * before). The others go KR_GROUP at a time. */
static void layernorm_fwd(size_t rows, size_t dim, const kx_t *x, size_t x_stride, kx_t *y,
                          size_t y_stride, const float *gamma, const float *beta, float eps,
                          float *mean, float *rstd)
{
#define ROWS(nr, pf)                                                                               \
    ln_fwd_rows(nr, pf, r, rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd, &t,  \
                stream)
#define PIPED(hg, hb)                                                                              \
    ln_fwd_piped(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean, rstd, stream, hg, hb)
    const kr_tail t = kr_tail_of(dim % 16);
    const int stream = keel_want_stream(rows * y_stride * sizeof(kx_t));
    size_t r = 0;
    if (dim < KR_GROUP_BELOW) {
#if defined(KB_ROWS) && !KX_NARROW
        if (dim <= KB_TAKE_MAX && rows >= KB_ROWS)
            r = plain_fwd_batches(rows, dim, x, x_stride, y, y_stride, gamma, beta, eps, mean,
                                  rstd, stream, 0);
#endif
        for (; r + KR_GROUP <= rows; r += KR_GROUP)
            ROWS(KR_GROUP, 0);
        for (; r < rows; r++)
            ROWS(1, 0);
    } else if (dim <= LN_PIPE_MAX_DIM) {
        if (gamma && beta)
            PIPED(1, 1);
        else if (gamma)
            PIPED(1, 0);
        else if (beta)
            PIPED(0, 1);
        else
            PIPED(0, 0);
    } else if (keel_want_prefetch(dim, rows * x_stride * sizeof(kx_t))) {
        for (; r < rows; r++)
            ROWS(1, 1);
    } else {
        for (; r < rows; r++)
            ROWS(1, 0);
    }
    if (stream)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
#undef ROWS
#undef PIPED
}

/* ---- backward ----------------------------------------------------------------------------
 * Rows go in groups of nr <= LN_BWD_GROUP: sweep 2 updates the dgamma/dbeta partials of a column
 * chunk once for the whole group, adding the rows in increasing order as kernels.h requires, and
 * sweep 1 interleaves LN_S1_ROWS rows' reductions. Rows of KR_GROUP_BELOW floats or more with
 * their statistics given go through the row pipeline (ln_bwd_piped, below) instead. */
#define LN_BWD_GROUP 2
/* Sweep 1 keeps three kr_d16 sums a row and the mean (3 * KR_D16_REGS + 1 registers): two rows
 * interleave where both rows' fit the register file (AVX-512: 14 of 32 zmm), else one row at a
 * time (AVX2: 13 of 16 ymm a row; NEON: 25 of 32 q registers a row). */
#define LN_S1_ROWS (2 * (3 * KR_D16_REGS + 1) <= KR_VREGS ? LN_BWD_GROUP : 1)

/* The per-row constants of sweep 2. */
typedef struct ln_row {
    float m, df, rs, a, b;
} ln_row;

/* Sweep 1's sums of one row: Sx = R(u), u = (double)x - (double)m; with want_g also
 * Sg = R((double)g) and Sgu = R((double)g * u), g = dy * gamma (float) or dy. A step at a time
 * (ln_s1_step), so that the grouped rows and the row pipeline (below) run the same arithmetic. */
typedef struct ln_s1 {
    kr_d16 md, sx, sg, sp;
} ln_s1;

KEEL_INLINE ln_s1 ln_s1_begin(float m)
{
    const ln_s1 a = {kr_dset1((double)m), kr_dzero(), kr_dzero(), kr_dzero()};
    return a;
}

/* Sweep 1 at column j of the row x, dy: 16 floats (full) or the row's tail t as one step (float
 * loads masked to the row, and only the lanes that get an element are added to). */
KEEL_INLINE void ln_s1_step(ln_s1 *a, const kx_t *x, const kx_t *dy, const float *gamma, size_t j,
                            const kr_tail *t, int full, int want_g, int hg)
{
    const kstep s = {t, full};
    const kr_d16 u = kr_dsub(kxs_dload(x + j, s), a->md);
    a->sx = ks_dadd(a->sx, u, s);
    if (want_g) {
        kr_f16 g = kxs_load(dy + j, s);
        if (hg)
            g = kr_mul(g, ks_load(gamma + j, s));
        const kr_d16 gd = kr_widen(g);
        a->sg = ks_dadd(a->sg, gd, s);
        a->sp = ks_dadd(a->sp, kr_dmul(gd, u), s);
    }
}

/* The row constants of kernels.h from sweep 1's sums into c (m and rs already there). */
KEEL_INLINE void ln_s1_end(const ln_s1 *a, size_t dim, int want_g, ln_row *c)
{
    const double n = (double)dim;
    const double delta = kr_reduce16(a->sx) / n;
    c->df = (float)delta;
    if (want_g) {
        const double Sg = kr_reduce16(a->sg);
        const double Sgu = kr_reduce16(a->sp);
        c->a = (float)(Sg / n);
        c->b = (float)((double)c->rs * ((Sgu - delta * Sg) / n));
    }
}

/* Sweep 1 over the nr rows (nr a constant <= LN_S1_ROWS), their steps interleaved; then the row
 * constants into c[i] (m and rs already there), after every row's tail, so that the rows'
 * divisions overlap (each row's tail and constants in turn: AVX-512 lnb 4096x40 127.3 -> 131.1
 * us, 4096x16 61.7 -> 64.3 us). */
KEEL_INLINE void ln_sweep1_n(int nr, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,
                             size_t xs, const float *gamma, const kr_tail *t, ln_row *c, int want_g,
                             int hg)
{
    const size_t full = dim & ~(size_t)15;
    ln_s1 a[LN_S1_ROWS];
    for (int i = 0; i < nr; i++)
        a[i] = ln_s1_begin(c[i].m);
    for (size_t j = 0; j < full; j += 16)
        for (int i = 0; i < nr; i++)
            ln_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, j, t, 1, want_g, hg);
    if (full < dim)
        for (int i = 0; i < nr; i++)
            ln_s1_step(&a[i], x + i * xs, dy + i * dys, gamma, full, t, 0, want_g, hg);
    for (int i = 0; i < nr; i++)
        ln_s1_end(&a[i], dim, want_g, &c[i]);
}

/* Where sweep 2 prefetches: the next group's rows (NULL: nowhere). */
typedef struct ln_pf {
    const kx_t *x, *dy;
    kx_t *dx;
    int nt; /* stream dx (full steps) */
} ln_pf;

/* One step of sweep 2 at column j over the nr rows (nr <= LN_BWD_GROUP, not a constant: the row
 * constants are broadcast from c), 16 floats (full) or the tail t. Pointers of absent arrays are
 * never offset (they may be NULL). */
KEEL_INLINE void ln_step2(int nr, size_t j, const kx_t *dy, size_t dys, const kx_t *x, size_t xs,
                          const float *gamma, kx_t *dx, size_t dxs, float *dg, float *db,
                          const ln_row *c, const ln_pf *pf, const kr_tail *t, int full, int hdx,
                          int acc, int hg, int hdg, int hdb)
{
    const kstep s = {t, full};
    const kr_f16 gam = hdx && hg ? ks_load(gamma + j, s) : kr_set1(0.0f);
    kr_f16 dgv = hdg ? ks_load(dg + j, s) : kr_set1(0.0f);
    kr_f16 dbv = hdb ? ks_load(db + j, s) : kr_set1(0.0f);
    for (int i = 0; i < nr; i++) {
        const kr_f16 dyv = kxs_load(dy + i * dys + j, s);
        const kr_f16 xhat =
            kr_mul(kr_sub(kr_sub(kxs_load(x + i * xs + j, s), kr_set1(c[i].m)), kr_set1(c[i].df)),
                   kr_set1(c[i].rs));
        if (hdx) {
            const kr_f16 g = hg ? kr_mul(dyv, gam) : dyv;
            const kr_f16 d = kr_sub(kr_sub(g, kr_set1(c[i].a)), kr_mul(xhat, kr_set1(c[i].b)));
            kr_f16 v = kr_mul(kr_set1(c[i].rs), d);
            if (acc)
                v = kr_add(kxs_load(dx + i * dxs + j, s), v);
            kxs_store(dx + i * dxs + j, v, s, pf->nt);
        }
        if (hdg)
            dgv = kr_add(dgv, kr_mul(dyv, xhat));
        if (hdb)
            dbv = kr_add(dbv, dyv);
        if (full && pf->x) { /* one cache line of each of the next group's rows */
            kx_prefetch_l2(pf->x + i * xs + j);
            kx_prefetch_l2(pf->dy + i * dys + j);
            if (hdx && !pf->nt)
                kx_prefetch_l2(pf->dx + i * dxs + j);
        }
    }
    if (hdg)
        ks_store(dg + j, dgv, s, 0);
    if (hdb)
        ks_store(db + j, dbv, s, 0);
}

KEEL_INLINE void ln_sweep2(int nr, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,
                           size_t xs, const float *gamma, kx_t *dx, size_t dxs, float *dg,
                           float *db, const ln_row *c, const ln_pf *pf, const kr_tail *t, int hdx,
                           int acc, int hg, int hdg, int hdb)
{
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        ln_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, pf, t, 1, hdx, acc, hg, hdg,
                 hdb);
    if (j < dim)
        ln_step2(nr, j, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, pf, t, 0, hdx, acc, hg, hdg,
                 hdb);
}

/* Sweep 2 for the 5 flags (dx, accumulate, gamma, dgamma, dbeta), each a constant; t: the tail
 * of dim % 16 floats. */
typedef void (*ln_sweep2_fn)(int, size_t, const kx_t *, size_t, const kx_t *, size_t,
                             const float *, kx_t *, size_t, float *, float *, const ln_row *,
                             const ln_pf *, const kr_tail *);
#define LN_SWEEP2_VARIANT(i)                                                                       \
    static void ln_sweep2_##i(int nr, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,     \
                              size_t xs, const float *gamma, kx_t *dx, size_t dxs, float *dg,     \
                              float *db, const ln_row *c, const ln_pf *pf, const kr_tail *t)       \
    {                                                                                              \
        ln_sweep2(nr, dim, dy, dys, x, xs, gamma, dx, dxs, dg, db, c, pf, t, (i)&1,                \
                  ((i) >> 1) & 1, ((i) >> 2) & 1, ((i) >> 3) & 1, ((i) >> 4) & 1);                 \
    }
KEEL_EACH32(LN_SWEEP2_VARIANT)
#undef LN_SWEEP2_VARIANT
static const ln_sweep2_fn ln_sweep2_table[32] = {KEEL_LIST32(ln_sweep2_)};

/* Statistics (given or recomputed) and sweep 1 of the nr rows from row r (nr a constant <=
 * LN_S1_ROWS). */
KEEL_INLINE void ln_bwd_stats(int nr, size_t r, size_t dim, const kx_t *dy, size_t dys,
                              const kx_t *x, size_t xs, const float *mean, const float *rstd,
                              const float *gamma, float eps, int hdx, const kr_tail *t, ln_row *c)
{
    const kx_t *xr = x + r * xs, *dyr = dy + r * dys;
    if (mean) {
        for (int i = 0; i < nr; i++) {
            c[i].m = mean[r + i];
            c[i].rs = rstd[r + i];
        }
    } else {
        double m[LN_S1_ROWS];
        float rs[LN_S1_ROWS];
        ln_stats_n(nr, xr, xs, dim, eps, t, m, rs, 0, NULL, NULL, 0);
        for (int i = 0; i < nr; i++) {
            c[i].m = (float)m[i];
            c[i].rs = rs[i];
        }
    }
    if (!hdx)
        ln_sweep1_n(nr, dim, dyr, dys, xr, xs, gamma, t, c, 0, 0);
    else if (gamma)
        ln_sweep1_n(nr, dim, dyr, dys, xr, xs, gamma, t, c, 1, 1);
    else
        ln_sweep1_n(nr, dim, dyr, dys, xr, xs, gamma, t, c, 1, 0);
}

/* Whether the dx rows r .. r + nr - 1 all start kr_streamable. */
KEEL_INLINE int ln_dx_streamable(const kx_t *dx, size_t dxs, size_t r, int nr)
{
    for (int i = 0; i < nr; i++)
        if (!kx_streamable(dx + (r + (size_t)i) * dxs))
            return 0;
    return 1;
}

/* ---- the backward's row pipeline -----------------------------------------------------------
 * One row at a time, sweep 1 reads the row's x and dy from memory and sweep 2 reads them again
 * from cache and writes dx, so the memory sees reads and then writes in turn, as in the forward
 * before its pipeline. With the statistics given, the pipeline does two rows' work in one sweep
 * over j: row t's sweep 1 (x and dy from memory, the loads KR_PIPE_AHEAD floats behind their
 * prefetches) and row t - 1's sweep 2 (its x and dy still in L1/L2 from the sweep before, dx
 * written or streamed, the partials updated), so that reads and writes stream together as in a
 * copy. The first sweep and the last do one stage. Each row's arithmetic is ln_sweep1_n's and
 * ln_step2's with one row, in the same order per lane, and sweep 2 still takes the rows in
 * increasing order (the partials add them in that order): the same bits.
 *
 * Measured (keel_profile_loop lnb, 1 thread, fastest call, one row at a time with the next row
 * prefetched into L2 -> pipelined), AVX-512: 4096x4096 16.1-16.7 -> 12.0-12.5 ms, 1024x8192 9.0
 * -> 6.1-7.2 ms, 4096x1024 2.5 -> 1.8-2.2 ms, 4096x768 2.03 -> 1.47-1.62 ms, 4096x1000 3.14 ->
 * 1.96 ms; AVX2: 4096x4096 17.3-17.8 -> 13.4-13.9 ms, 4096x768 2.58 -> 1.94-1.99 ms; keel bench
 * --rows 4096 --dim 4096 --threads 1: 0.63-0.65 of the copy floor -> 0.81-0.84 (AVX2 0.58-0.59
 * -> 0.74-0.76). It runs faster in cache too (AVX-512 256x1024 217 -> 164 us, 64x4096 268 -> 196
 * us, 2048x256 335 -> 262 us) and on wide rows (128x65536 10.0 -> 7.7 ms, 8x1048576 17.8 -> 13.0
 * ms), so it takes every call with the statistics given and rows of KR_GROUP_BELOW floats or more
 * (recomputing the statistics takes two more sweeps a row: those calls go one row at a time).
 * The prefetch of the dx lines that are not streamed pays everywhere (without it: 4096x768 1.45
 * -> 1.84 ms, 256x1024 165 -> 186 us). */

/* One sweep of the pipeline, each stage optional (do1, do2: constants in the steady state):
 * x1, dy1, a: the row of sweep 1 and its sums; c, x2, dy2, dx2, p: the row of sweep 2 and its
 * constants (p->nt: dx streamed). */
KEEL_INLINE void ln_bwd_pipe_sweep(size_t dim, const kr_tail *t, int do1, ln_s1 *a, const kx_t *x1,
                                   const kx_t *dy1, int do2, const ln_row *c, const kx_t *x2,
                                   const kx_t *dy2, kx_t *dx2, const ln_pf *p, const float *gamma,
                                   float *dg, float *db, int hdx, int acc, int hg, int hdg, int hdb)
{
    const size_t full = dim & ~(size_t)15;
    for (size_t j = 0; j < full; j += 16) {
        if (do1) {
            /* dy too: sweep 2 reads it even when sweep 1 does not */
            kx_prefetch_l1(x1 + j + KR_PIPE_AHEAD);
            kx_prefetch_l1(dy1 + j + KR_PIPE_AHEAD);
            ln_s1_step(a, x1, dy1, gamma, j, t, 1, hdx, hg);
        }
        if (do2) {
            if (hdx && !p->nt) /* the lines of dx stored (or added to) normally */
                kx_prefetch_l1(dx2 + j + KR_PIPE_AHEAD);
            ln_step2(1, j, dy2, 0, x2, 0, gamma, dx2, 0, dg, db, c, p, t, 1, hdx, acc, hg, hdg,
                     hdb);
        }
    }
    if (full < dim) {
        if (do1)
            ln_s1_step(a, x1, dy1, gamma, full, t, 0, hdx, hg);
        if (do2)
            ln_step2(1, full, dy2, 0, x2, 0, gamma, dx2, 0, dg, db, c, p, t, 0, hdx, acc, hg, hdg,
                     hdb);
    }
}

/* The pipeline over all rows (mean and rstd given; dx or dgamma wanted): sweep t runs row t's
 * sweep 1 and row t - 1's sweep 2. Row pointers of absent rows are never formed (row 0's stand
 * in). stream: dx rows that start kr_streamable are streamed. */
KEEL_INLINE void ln_bwd_piped(size_t rows, size_t dim, const kx_t *dy, size_t dys, const kx_t *x,
                              size_t xs, const float *mean, const float *rstd, const float *gamma,
                              kx_t *dx, size_t dxs, float *dg, float *db, int stream, int hdx,
                              int acc, int hg, int hdg, int hdb)
{
    const kr_tail tail = kr_tail_of(dim % 16);
    ln_row c = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f}; /* of the row in sweep 2 */
    for (size_t t = 0; t <= rows; t++) {
        const int do1 = t < rows, do2 = t >= 1;
        const size_t r1 = do1 ? t : 0, r2 = do2 ? t - 1 : 0;
        kx_t *dx2 = hdx ? dx + r2 * dxs : NULL;
        const ln_pf p = {NULL, NULL, NULL, do2 && stream && kx_streamable(dx2)};
        ln_s1 a = ln_s1_begin(do1 ? mean[t] : 0.0f);
        if (do1 && do2) /* every sweep but the first and the last */
            ln_bwd_pipe_sweep(dim, &tail, 1, &a, x + r1 * xs, dy + r1 * dys, 1, &c, x + r2 * xs,
                              dy + r2 * dys, dx2, &p, gamma, dg, db, hdx, acc, hg, hdg, hdb);
        else
            ln_bwd_pipe_sweep(dim, &tail, do1, &a, x + r1 * xs, dy + r1 * dys, do2, &c, x + r2 * xs,
                              dy + r2 * dys, dx2, &p, gamma, dg, db, hdx, acc, hg, hdg, hdb);
        if (do1) { /* row t's constants: it is swept twice next */
            c.m = mean[t];
            c.rs = rstd[t];
            ln_s1_end(&a, dim, hdx, &c);
        }
    }
}

#define NORM_BWD_PIPED_LN
#include "norm_bwd_piped_tables.h"

static void layernorm_bwd(size_t rows, size_t dim, const kx_t *dy, size_t dy_stride,
                          const kx_t *x, size_t x_stride, const float *mean, const float *rstd,
                          const float *gamma, float eps, kx_t *dx, size_t dx_stride, int dx_flags,
                          float *dgamma_part, float *dbeta_part)
{
    const int hdx = dx != NULL, acc = (dx_flags & KEEL_KBWD_ACCUMULATE) != 0;
    /* streaming stores of dx when told dx spans far beyond the caches (never with accumulate) */
    const int stream = hdx && !acc && (dx_flags & KEEL_KBWD_STREAM);
    const int need_xhat = hdx || dgamma_part; /* only dbeta: no statistics needed at all */
    const int idx = hdx | (hdx && acc) << 1 | (gamma != NULL) << 2 | (dgamma_part != NULL) << 3 |
                    (dbeta_part != NULL) << 4;
    const ln_sweep2_fn sweep2 = ln_sweep2_table[idx];
    const kr_tail t = kr_tail_of(dim % 16);
    const size_t group = dim < KR_GROUP_BELOW ? LN_BWD_GROUP : 1;
    const int pf = (dx_flags & KEEL_KBWD_PREFETCH) || keel_want_prefetch(dim, rows * x_stride * sizeof(kx_t));
    /* the row pipeline: the statistics given, and dx or dgamma wanted (else there is no
     * sweep 1); in cache or not */
    if (need_xhat && mean && rstd && dim >= KR_GROUP_BELOW) {
        ln_piped_table[idx](rows, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, dx, dx_stride,
                            dgamma_part, dbeta_part, stream);
        if (stream)
            kl_stream_fence(); /* the streamed stores are visible before the call returns */
        return;
    }
    for (size_t r = 0; r < rows;) {
        const int nr = (int)(rows - r < group ? rows - r : group);
        ln_row c[LN_BWD_GROUP] = {{0.0f, 0.0f, 0.0f, 0.0f, 0.0f}};
        if (need_xhat) {
            if (nr == LN_S1_ROWS && nr > 1)
                ln_bwd_stats(LN_S1_ROWS, r, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, eps,
                             hdx, &t, c);
            else
                for (int i = 0; i < nr; i++)
                    ln_bwd_stats(1, r + i, dim, dy, dy_stride, x, x_stride, mean, rstd, gamma, eps,
                                 hdx, &t, c + i);
        }
        /* prefetch the next group while sweep 2 works in cache, when it is a whole one */
        ln_pf p = {NULL, NULL, NULL, stream && ln_dx_streamable(dx, dx_stride, r, nr)};
        if (pf && r + 2 * (size_t)nr <= rows) {
            p.x = x + (r + nr) * x_stride;
            p.dy = dy + (r + nr) * dy_stride;
            p.dx = hdx ? dx + (r + nr) * dx_stride : NULL;
        }
        sweep2(nr, dim, dy + r * dy_stride, dy_stride, x + r * x_stride, x_stride, gamma,
               hdx ? dx + r * dx_stride : NULL, dx_stride, dgamma_part, dbeta_part, c, &p, &t);
        r += (size_t)nr;
    }
    if (stream)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

#endif
