/* BatchNorm, float32, written once over keel's lanes (the kc and kr sections of lanes__<isa>.h)
 * and compiled per ISA by f32_batchnorm__avx2.c, __avx512.c and __neon.c: the per-feature column
 * sums and the elementwise sweeps of kernels.h, vectorized across columns. Each column keeps its
 * own double accumulator (a lane of a kc_d8, 8 columns at a time) and adds the rows in increasing
 * order, exactly as f32_batchnorm__scalar.c does, so every sum, and with it every output, has the
 * scalar bits. Columns go in chunks of BN_CHUNK so that a chunk's accumulators stay in L1/L2
 * while the rows stream past (the chunk changes no bit: each column's order is its own); the
 * per-column finishing steps between the sweeps are norm_finish.h's, shared with the scalar
 * kernel. A chunk's last group of fewer than 8 columns is masked (kc_tail), the elementwise
 * sweeps' tail of fewer than 16 floats too (kr_tail): lanes without a column are neither read
 * nor written. What the paths differ in is the vocabulary's: how many groups of 8 columns a
 * register sweep keeps (KC_STATS_GROUPS, KC_BWD_GROUPS, KC_BWD_NARROW_GROUPS, KC_BWD_BLOCKED),
 * which rows stream (kr_streamable) and the prefetch hint. Include after lanes__<isa>.h.
 *
 * BN_CHUNK 1024 (4 KiB of a row, a page) against the scalar kernel's 256: a sweep over a chunk
 * of a large batch visits a page per row, and fewer, longer visits paid (AVX-512,
 * keel_profile_loop, 1 thread, 256 -> 1024: bnf 4096x4096 19.2-19.8 -> 15.5-16.7 ms, bnb 50-53
 * -> 35-36 ms, 1024x8192 8.0 -> 6.8-7.1 and 18.6-19.4 -> 15.1-15.2 ms; 256x1024 89 -> 96 us and
 * 287-303 -> 257-272 us). Narrower chunks sized for the chunk to stay in L2 between the sweeps
 * were slower still (64 columns at 4096 rows: bnf 29-33 ms, bnb 72-100 ms). The apply streams y
 * when a call's y spans KEEL_STREAM_ABOVE bytes or more (rows that kr_streamable). */
#ifndef KEEL_KERNELS_F32_BATCHNORM_SIMD_H
#define KEEL_KERNELS_F32_BATCHNORM_SIMD_H

#include "norm_finish.h"

#define BN_CHUNK 1024

/* The most groups of 8 columns any path's register sweeps keep (the size of their arrays; a
 * path's own KC_*_GROUPS is at most this). */
#define BN_GROUPS_MAX 8
#define BN_BWD_GROUPS_MAX 4
_Static_assert(KC_STATS_GROUPS <= BN_GROUPS_MAX && KC_BWD_GROUPS <= BN_BWD_GROUPS_MAX &&
                   KC_BWD_GROUPS <= KC_BWD_NARROW_GROUPS,
               "the lanes' BatchNorm register sweeps exceed the body's arrays");

/* The chunk's columns of the next row (NULL: none), fetched a line at a time while this row's
 * are summed. A chunk's sweep visits a new page every row, where the hardware prefetcher, which
 * follows a stream within a page, starts cold each time; from KEEL_PREFETCH_ABOVE bytes of x the
 * next row is fetched by hand. keel_profile_loop bnf, 1 thread, fastest call, before -> after:
 * 4096x4096 20.2-21.6 -> 12.5-16.5 ms (AVX2 23.4-25.5 -> 17.9-21.0), 1024x8192 6.6-7.7 -> 6.1-6.5
 * ms (AVX2 7.5-10.3 -> 6.6-7.0); keel bench --threads 1, batchnorm fwd train, fraction of the
 * floor: 4096x4096 0.30-0.31 -> 0.37-0.39, 16384x8192 0.23 -> 0.28. (The same in the backward's
 * two sweeps measured no gain: 4096x4096 42-43 against 40-47 ms.) */
KEEL_INLINE void bn_pf_next_row(const float *next, size_t c)
{
    if (next && (c & 15) == 0)
        kr_prefetch_l1(next + c);
}

/* A chunk wider than a register sweep's groups goes through the register sweeps a block of
 * columns at a time (each column's sums the same adds in the same order) when its rows span at
 * most BN_BLOCK_BYTES of x, so that the blocks after the first find x (and dy) in L2; above, each
 * block's sweep would fetch its rows again from farther away. keel bench --threads 1 --hot,
 * median us, chunk arrays -> blocks: AVX-512 fwd train 256x1024 100 -> 88, 512x512 99 -> 90,
 * 1024x256 104 -> 88, 2048x128 101 -> 87, 128x2048 128 -> 113 (at 2 MiB of x, 512x1024 and
 * 2048x256, 257 -> 278 and 257 -> 274); bwd train 4096x64 207 -> 175, 4096x48 153 -> 127,
 * 2048x64 92 -> 69, 512x256 92 -> 73, 256x1024 and 256x512 the same (at 2 MiB of x, 4096x128
 * 467 -> 565). AVX2 fwd train GB/s: 256x1024 17.8 -> 18.8, 1024x256 15.7 -> 19.6, 2048x128 15.3
 * -> 20.6, 4096x48 15.2 -> 20.6, 512x256 16.3 -> 21.2 (its backward: KC_BWD_BLOCKED). */
#define BN_BLOCK_BYTES ((size_t)1 << 20)

KEEL_INLINE int bn_blocked(size_t rows, size_t n)
{
    return rows * n * sizeof(float) <= BN_BLOCK_BYTES;
}

/* The 8 columns of group g of ng as doubles: the floats at p (the last group, when tailed, the
 * tail's), the doubles at d; and the store of a group's doubles. tailed and ng are constants at
 * every call, so a sweep over whole groups has no masks. */
KEEL_INLINE int bn_masked(int g, int ng, int tailed) { return tailed && g == ng - 1; }
KEEL_INLINE kc_d8 bn_cvt(const float *p, int masked, const kc_tail *t)
{
    return masked ? kc_cvt_tail(p, t) : kc_cvt(p);
}
KEEL_INLINE kl_f8 bn_f8(const float *p, int masked, const kc_tail *t)
{
    return masked ? kc_f8_load_tail(p, t) : kl_load(p);
}
KEEL_INLINE kc_d8 bn_dload(const double *d, int masked, const kc_tail *t)
{
    return masked ? kc_load_tail(d, t) : kc_load(d);
}
KEEL_INLINE void bn_dstore(double *d, kc_d8 v, int masked, const kc_tail *t)
{
    if (masked)
        kc_store_tail(d, v, t);
    else
        kc_store(d, v);
}

/* Narrow chunks (ng groups of 8 columns, at most KC_STATS_GROUPS; the last masked by t when
 * tailed): the accumulators stay in registers. In memory (the chunk arrays below) a column's add
 * waits every row for the previous row's store to reach the load, and with few columns nothing
 * else fills that wait. Same adds in the same order, so the same bits. keel bench --threads 1,
 * median us, memory -> registers: AVX-512 fwd train 4096x16 50 -> 38, 4096x32 90 -> 73, 4096x64
 * 191 -> 163; AVX2 --hot 4096x16 36.7 -> 25.8, 4096x24 52.5 -> 37.8.
 * One sweep over the rows: the column sums of x (sq 0) or of (x - m)^2 (sq 1, m the chunk's
 * means), into out. */
KEEL_INLINE void bn_narrow_sweep(size_t rows, int ng, int tailed, const kc_tail *t, const float *x,
                                 size_t x_stride, size_t pf_rows, int sq, const double *m,
                                 double *out)
{
    kc_d8 acc[BN_GROUPS_MAX], mv[BN_GROUPS_MAX];
#pragma GCC unroll 8
    for (int g = 0; g < ng; g++) {
        acc[g] = kc_dzero();
        mv[g] = sq ? bn_dload(m + 8 * g, bn_masked(g, ng, tailed), t) : acc[g];
    }
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *nx = r < pf_rows ? xr + x_stride : NULL;
#pragma GCC unroll 8
        for (int g = 0; g < ng; g++) {
            bn_pf_next_row(nx, 8 * (size_t)g);
            kc_d8 v = bn_cvt(xr + 8 * g, bn_masked(g, ng, tailed), t);
            if (sq) {
                const kc_d8 d = kc_sub(v, mv[g]);
                v = kc_mul(d, d);
            }
            acc[g] = kc_add(acc[g], v);
        }
    }
#pragma GCC unroll 8
    for (int g = 0; g < ng; g++)
        bn_dstore(out + 8 * g, acc[g], bn_masked(g, ng, tailed), t);
}

/* The statistics of the n columns of a narrow chunk (ng = ceil(n / 8) groups). */
KEEL_INLINE void bn_stats_narrow(size_t rows, int ng, int tailed, const kc_tail *t, size_t n,
                                 const float *x, size_t x_stride, size_t pf_rows, double *s,
                                 double *q)
{
    bn_narrow_sweep(rows, ng, tailed, t, x, x_stride, pf_rows, 0, NULL, s);
    for (size_t c = 0; c < n; c++)
        s[c] = keel_ln_mean(s[c], rows);
    bn_narrow_sweep(rows, ng, tailed, t, x, x_stride, pf_rows, 1, s, q);
}

/* acc[0..8) += v, in memory (the chunk arrays of the wide chunks) */
KEEL_INLINE void bn_acc(double *acc, kc_d8 v, int masked, const kc_tail *t)
{
    bn_dstore(acc, kc_add(bn_dload(acc, masked, t), v), masked, t);
}

/* A wide chunk's sweep at the group of columns c of a row: the sums of x (sq 0) or of
 * (x - s)^2 added into acc. */
KEEL_INLINE void bn_wide_at(size_t c, int masked, const kc_tail *t, const float *xr,
                            const float *nx, int sq, const double *s, double *acc)
{
    bn_pf_next_row(nx, c);
    kc_d8 v = bn_cvt(xr + c, masked, t);
    if (sq) {
        const kc_d8 d = kc_sub(v, bn_dload(s + c, masked, t));
        v = kc_mul(d, d);
    }
    bn_acc(acc + c, v, masked, t);
}

/* One row's pass of a wide chunk's sweep over its n columns (n8 of them in whole groups, the
 * rest masked by t). */
KEEL_INLINE void bn_wide_row(size_t n, size_t n8, const kc_tail *t, const float *xr,
                             const float *nx, int sq, const double *s, double *acc)
{
    for (size_t c = 0; c < n8; c += 8)
        bn_wide_at(c, 0, t, xr, nx, sq, s, acc);
    if (n8 < n)
        bn_wide_at(n8, 1, t, xr, nx, sq, s, acc);
}

static void batchnorm_stats(size_t rows, size_t cols, const float *x, size_t x_stride, double *mean,
                            double *m2)
{
    const size_t pf_rows = rows * x_stride * sizeof(float) > KEEL_PREFETCH_ABOVE ? rows - 1 : 0;
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK;
        double *s = mean + c0, *q = m2 + c0;
        if (n <= 8 * KC_STATS_GROUPS || bn_blocked(rows, n)) {
            for (size_t b0 = 0; b0 < n; b0 += 8 * KC_STATS_GROUPS) {
                const size_t nb = n - b0 < 8 * KC_STATS_GROUPS ? n - b0 : 8 * KC_STATS_GROUPS;
                const size_t ng = (nb + 7) / 8, last = nb - 8 * (ng - 1);
                const kc_tail t = kc_tail_of(last);
                const float *xb = x + c0 + b0;
                switch (ng) {
#define BN_STATS_NARROW(ngc)                                                                       \
    case ngc:                                                                                      \
        if (ngc <= KC_STATS_GROUPS) {                                                              \
            if (last < 8)                                                                          \
                bn_stats_narrow(rows, ngc, 1, &t, nb, xb, x_stride, pf_rows, s + b0, q + b0);      \
            else                                                                                   \
                bn_stats_narrow(rows, ngc, 0, &t, nb, xb, x_stride, pf_rows, s + b0, q + b0);      \
        }                                                                                          \
        break;
                    /* clang-format off */
                    BN_STATS_NARROW(1) BN_STATS_NARROW(2) BN_STATS_NARROW(3) BN_STATS_NARROW(4)
                    BN_STATS_NARROW(5) BN_STATS_NARROW(6) BN_STATS_NARROW(7) BN_STATS_NARROW(8)
                    /* clang-format on */
#undef BN_STATS_NARROW
                }
            }
            continue;
        }
        const size_t n8 = n & ~(size_t)7;
        const kc_tail t = kc_tail_of(n - n8);
        for (size_t c = 0; c < n; c++)
            s[c] = 0.0;
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *nx = r < pf_rows ? xr + x_stride : NULL;
            bn_wide_row(n, n8, &t, xr, nx, 0, NULL, s);
        }
        for (size_t c = 0; c < n; c++) {
            s[c] = keel_ln_mean(s[c], rows);
            q[c] = 0.0;
        }
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *nx = r < pf_rows ? xr + x_stride : NULL;
            bn_wide_row(n, n8, &t, xr, nx, 1, s, q);
        }
    }
}

/* 16 floats at p, or the tail's (tailed: a constant at every call) */
KEEL_INLINE kr_f16 bn_ld16(const float *p, int tailed, const kr_tail *t)
{
    return tailed ? kr_load_tail(p, t) : kr_load(p);
}
/* v to p: the tail's floats, or 16 floats streamed when nt */
KEEL_INLINE void bn_st16(float *p, kr_f16 v, int tailed, const kr_tail *t, int nt)
{
    if (tailed)
        kr_store_tail(p, v, t);
    else if (nt)
        kr_stream(p, v);
    else
        kr_store(p, v);
}

/* y = ((x - hi) - lo) * rstd * gamma + beta at column c of a row (kernels.h) */
KEEL_INLINE void bn_apply_at(size_t c, int tailed, const kr_tail *t, int nt, const float *xr,
                             float *yr, const float *hi, const float *lo, const float *rstd,
                             const float *gamma, const float *beta)
{
    kr_f16 v = kr_sub(bn_ld16(xr + c, tailed, t), bn_ld16(hi + c, tailed, t));
    if (lo)
        v = kr_sub(v, bn_ld16(lo + c, tailed, t));
    v = kr_mul(v, bn_ld16(rstd + c, tailed, t));
    if (gamma)
        v = kr_mul(v, bn_ld16(gamma + c, tailed, t));
    if (beta)
        v = kr_add(v, bn_ld16(beta + c, tailed, t));
    bn_st16(yr + c, v, tailed, t, nt);
}

/* The apply of a batch of at most 16 features (one step a row, the tail's when tailed): the
 * per-feature vectors loaded once, not every row, where a row is little more than the loop's
 * own work. keel_profile_loop bnf, fastest of 200 calls, us, per row -> once: AVX-512 2048x7
 * 13.4 -> 8.7, 2048x3 13.7 -> 8.6, 2048x16 11.4 -> 10.0; AVX2 2048x7 11.6 -> 8.1, 2048x16 15.6
 * -> 12.1 (the same ops in the same order, so the same bits). */
KEEL_INLINE void bn_apply_narrow(size_t rows, int tailed, const kr_tail *t, int stream,
                                 const float *x, size_t x_stride, float *y, size_t y_stride,
                                 const float *hi, const float *lo, const float *rstd,
                                 const float *gamma, const float *beta)
{
    const kr_f16 hv = bn_ld16(hi, tailed, t), rv = bn_ld16(rstd, tailed, t);
    const kr_f16 lv = lo ? bn_ld16(lo, tailed, t) : hv, gv = gamma ? bn_ld16(gamma, tailed, t) : rv;
    const kr_f16 bv = beta ? bn_ld16(beta, tailed, t) : rv;
    for (size_t r = 0; r < rows; r++) {
        float *yr = y + r * y_stride;
        kr_f16 v = kr_sub(bn_ld16(x + r * x_stride, tailed, t), hv);
        if (lo)
            v = kr_sub(v, lv);
        v = kr_mul(v, rv);
        if (gamma)
            v = kr_mul(v, gv);
        if (beta)
            v = kr_add(v, bv);
        bn_st16(yr, v, tailed, t, !tailed && stream && kr_streamable(yr));
    }
}

static void batchnorm_apply(size_t rows, size_t cols, const float *x, size_t x_stride, float *y,
                            size_t y_stride, const float *hi, const float *lo, const float *rstd,
                            const float *gamma, const float *beta)
{
    const size_t full = cols & ~(size_t)15;
    const kr_tail t = kr_tail_of(cols - full);
    const int stream = keel_want_stream(rows * y_stride * sizeof(float));
    if (cols < 16)
        bn_apply_narrow(rows, 1, &t, stream, x, x_stride, y, y_stride, hi, lo, rstd, gamma, beta);
    else if (cols == 16)
        bn_apply_narrow(rows, 0, &t, stream, x, x_stride, y, y_stride, hi, lo, rstd, gamma, beta);
    for (size_t r = 0; r < rows && cols > 16; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        const int nt = stream && kr_streamable(yr);
        for (size_t c = 0; c < full; c += 16)
            bn_apply_at(c, 0, &t, nt, xr, yr, hi, lo, rstd, gamma, beta);
        if (full < cols)
            bn_apply_at(full, 1, &t, 0, xr, yr, hi, lo, rstd, gamma, beta);
    }
    if (stream)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

/* The backward's five column sums (sweep 1; kernels.h): R(u), R(dy), R(dy * u), R(g), R(g * u),
 * u = x - mean, g = dy * gamma. */
typedef struct bn_bwd_sums {
    double *su, *sd, *sdu, *sg, *sgu;
} bn_bwd_sums;

/* One group's terms of a row: u, (double)dy and (double)g. */
KEEL_INLINE void bn_bwd_terms(const float *xr, const float *dyr, kc_d8 md, const float *gm,
                              kl_f8 gv, int masked, const kc_tail *t, kc_d8 *u, kc_d8 *dyd,
                              kc_d8 *gd)
{
    const kl_f8 dyf = bn_f8(dyr, masked, t);
    const kl_f8 gf = gm ? kl_mul(dyf, gv) : dyf;
    *u = kc_sub(bn_cvt(xr, masked, t), md);
    *dyd = kc_widen(dyf);
    *gd = kc_widen(gf);
}

/* Sweep 1 of a narrow chunk (ng groups of 8 columns, at most KC_BWD_GROUPS, a constant at each
 * call; the last masked by t when tailed): the five sums in registers, as bn_narrow_sweep.
 * AVX-512 keel bench --threads 1, median us, memory -> registers: bwd train 4096x16 70 -> 46,
 * 4096x32 125 -> 86; AVX2 (one group a sweep) --hot 4096x8 46.9 -> 27.1, 4096x16 69.9 -> 45.4. */
KEEL_INLINE void bn_bwd_sums_narrow(size_t rows, int ng, int tailed, const kc_tail *t,
                                    const float *dy, size_t dy_stride, const float *x,
                                    size_t x_stride, const float *m, const float *gm,
                                    const bn_bwd_sums *out)
{
    kc_d8 su[BN_BWD_GROUPS_MAX], sd[BN_BWD_GROUPS_MAX], sdu[BN_BWD_GROUPS_MAX];
    kc_d8 sg[BN_BWD_GROUPS_MAX], sgu[BN_BWD_GROUPS_MAX], md[BN_BWD_GROUPS_MAX];
    kl_f8 gv[BN_BWD_GROUPS_MAX];
#pragma GCC unroll 4
    for (int g = 0; g < ng; g++) {
        const int masked = bn_masked(g, ng, tailed);
        su[g] = sd[g] = sdu[g] = sg[g] = sgu[g] = kc_dzero();
        md[g] = bn_cvt(m + 8 * g, masked, t);
        gv[g] = gm ? bn_f8(gm + 8 * g, masked, t) : kl_zero();
    }
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *dyr = dy + r * dy_stride;
#pragma GCC unroll 4
        for (int g = 0; g < ng; g++) {
            kc_d8 u, dyd, gd;
            bn_bwd_terms(xr + 8 * g, dyr + 8 * g, md[g], gm, gv[g], bn_masked(g, ng, tailed), t, &u,
                         &dyd, &gd);
            su[g] = kc_add(su[g], u);
            sd[g] = kc_add(sd[g], dyd);
            sdu[g] = kc_add(sdu[g], kc_mul(dyd, u));
            sg[g] = kc_add(sg[g], gd);
            sgu[g] = kc_add(sgu[g], kc_mul(gd, u));
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < ng; g++) {
        const int masked = bn_masked(g, ng, tailed);
        bn_dstore(out->su + 8 * g, su[g], masked, t);
        bn_dstore(out->sd + 8 * g, sd[g], masked, t);
        bn_dstore(out->sdu + 8 * g, sdu[g], masked, t);
        bn_dstore(out->sg + 8 * g, sg[g], masked, t);
        bn_dstore(out->sgu + 8 * g, sgu[g], masked, t);
    }
}

/* Sweep 1 of a wide chunk at the group of columns c of a row: the five sums added into the
 * arrays. */
KEEL_INLINE void bn_bwd_wide_at(size_t c, int masked, const kc_tail *t, const float *xr,
                                const float *dyr, const float *m, const float *gm,
                                const bn_bwd_sums *out)
{
    const kl_f8 gv = gm ? bn_f8(gm + c, masked, t) : kl_zero();
    kc_d8 u, dyd, gd;
    bn_bwd_terms(xr + c, dyr + c, bn_cvt(m + c, masked, t), gm, gv, masked, t, &u, &dyd, &gd);
    bn_acc(out->su + c, u, masked, t);
    bn_acc(out->sd + c, dyd, masked, t);
    bn_acc(out->sdu + c, kc_mul(dyd, u), masked, t);
    bn_acc(out->sg + c, gd, masked, t);
    bn_acc(out->sgu + c, kc_mul(gd, u), masked, t);
}

/* Sweep 2 at column c of a row: dx (kernels.h), from the finishing steps' a, b and df. */
KEEL_INLINE void bn_dx_at(size_t c, int tailed, const kr_tail *t, int nt, const float *xr,
                          const float *dyr, float *dxr, const float *m, const float *rs,
                          const float *gm, const float *a, const float *b, const float *df,
                          int training, int accumulate_dx)
{
    const kr_f16 dyv = bn_ld16(dyr + c, tailed, t);
    const kr_f16 g = gm ? kr_mul(dyv, bn_ld16(gm + c, tailed, t)) : dyv;
    const kr_f16 rsv = bn_ld16(rs + c, tailed, t);
    kr_f16 v;
    if (training) {
        const kr_f16 xc = kr_sub(bn_ld16(xr + c, tailed, t), bn_ld16(m + c, tailed, t));
        const kr_f16 xhat = kr_mul(kr_sub(xc, bn_ld16(df + c, tailed, t)), rsv);
        const kr_f16 ga = kr_sub(g, bn_ld16(a + c, tailed, t));
        v = kr_mul(rsv, kr_sub(ga, kr_mul(xhat, bn_ld16(b + c, tailed, t))));
    } else {
        v = kr_mul(rsv, g);
    }
    if (accumulate_dx)
        v = kr_add(bn_ld16(dxr + c, tailed, t), v);
    bn_st16(dxr + c, v, tailed, t, nt);
}

static void batchnorm_bwd(size_t rows, size_t cols, const float *dy, size_t dy_stride,
                          const float *x, size_t x_stride, const float *mean, const float *rstd,
                          const float *gamma, int training, float *dx, size_t dx_stride,
                          int accumulate_dx, float *dgamma, float *dbeta, int accumulate_dparams)
{
    double su[BN_CHUNK], sd[BN_CHUNK], sdu[BN_CHUNK], sg[BN_CHUNK], sgu[BN_CHUNK];
    float a[BN_CHUNK], b[BN_CHUNK], df[BN_CHUNK];
    /* dx streamed when the call's dx spans KEEL_STREAM_ABOVE bytes or more (not accumulated) */
    const int stream = dx && !accumulate_dx && keel_want_stream(rows * cols * sizeof(float));
    int streamed = 0;
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK;
        const float *m = mean + c0, *rs = rstd + c0, *gm = gamma ? gamma + c0 : NULL;
        /* sweep 1: the column sums (the register sweeps store them; the wide rows add into the
         * arrays) */
        if (n <= 8 * KC_BWD_NARROW_GROUPS || (KC_BWD_BLOCKED && bn_blocked(rows, n))) {
            for (size_t b0 = 0; b0 < n; b0 += 8 * KC_BWD_GROUPS) {
                const size_t nb = n - b0 < 8 * KC_BWD_GROUPS ? n - b0 : 8 * KC_BWD_GROUPS;
                const size_t ng = (nb + 7) / 8, last = nb - 8 * (ng - 1);
                const kc_tail t = kc_tail_of(last);
                const bn_bwd_sums sums = {su + b0, sd + b0, sdu + b0, sg + b0, sgu + b0};
                const float *xb = x + c0 + b0, *dyb = dy + c0 + b0, *mb = m + b0;
                const float *gb = gm ? gm + b0 : NULL;
                switch (ng) {
#define BN_BWD_NARROW(ngc)                                                                         \
    case ngc:                                                                                      \
        if (ngc <= KC_BWD_GROUPS) {                                                                \
            if (last < 8)                                                                          \
                bn_bwd_sums_narrow(rows, ngc, 1, &t, dyb, dy_stride, xb, x_stride, mb, gb, &sums); \
            else                                                                                   \
                bn_bwd_sums_narrow(rows, ngc, 0, &t, dyb, dy_stride, xb, x_stride, mb, gb, &sums); \
        }                                                                                          \
        break;
                    /* clang-format off */
                    BN_BWD_NARROW(1) BN_BWD_NARROW(2) BN_BWD_NARROW(3) BN_BWD_NARROW(4)
                    /* clang-format on */
#undef BN_BWD_NARROW
                }
            }
        } else {
            const size_t n8 = n & ~(size_t)7;
            const kc_tail t = kc_tail_of(n - n8);
            const bn_bwd_sums sums = {su, sd, sdu, sg, sgu};
            for (size_t c = 0; c < n; c++)
                su[c] = sd[c] = sdu[c] = sg[c] = sgu[c] = 0.0;
            for (size_t r = 0; r < rows; r++) {
                const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
                for (size_t c = 0; c < n8; c += 8)
                    bn_bwd_wide_at(c, 0, &t, xr, dyr, m, gm, &sums);
                if (n8 < n)
                    bn_bwd_wide_at(n8, 1, &t, xr, dyr, m, gm, &sums);
            }
        }
        for (size_t c = 0; c < n; c++)
            keel_bn_bwd_finish(su[c], sd[c], sdu[c], sg[c], sgu[c], rs[c], rows, training, &a[c],
                               &b[c], &df[c], dgamma ? dgamma + c0 + c : NULL,
                               dbeta ? dbeta + c0 + c : NULL, accumulate_dparams);
        if (!dx)
            continue;
        /* sweep 2: dx */
        const size_t full = n & ~(size_t)15;
        const kr_tail t = kr_tail_of(n - full);
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
            float *dxr = dx + r * dx_stride + c0;
            const int nt = stream && kr_streamable(dxr);
            streamed |= nt;
            for (size_t c = 0; c < full; c += 16)
                bn_dx_at(c, 0, &t, nt, xr, dyr, dxr, m, rs, gm, a, b, df, training, accumulate_dx);
            if (full < n)
                bn_dx_at(full, 1, &t, 0, xr, dyr, dxr, m, rs, gm, a, b, df, training,
                         accumulate_dx);
        }
    }
    if (streamed)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

#endif
