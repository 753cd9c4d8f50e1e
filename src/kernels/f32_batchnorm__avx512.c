/* BatchNorm, float32, AVX-512: the per-feature column sums and the elementwise sweeps of
 * kernels.h, vectorized across columns. Each column keeps its own double accumulator (one
 * lane of a zmm, 8 columns at a time) and adds the rows in increasing order, exactly as the
 * scalar kernel does, so every sum, and with it every output, has the scalar bits. Columns go
 * in chunks of BN_CHUNK so that a chunk's accumulators stay in L1/L2 while the rows stream
 * past (the chunk changes no bit: each column's order is its own); the per-column finishing
 * steps between the sweeps are the scalar kernel's own C, column by column.
 *
 * BN_CHUNK 1024 (4 KiB of a row, a page) against the scalar kernel's 256: a sweep over a chunk
 * of a large batch visits a page per row, and fewer, longer visits paid (keel_profile_loop, 1
 * thread, 256 -> 1024: bnf 4096x4096 19.2-19.8 -> 15.5-16.7 ms, bnb 50-53 -> 35-36 ms,
 * 1024x8192 8.0 -> 6.8-7.1 and 18.6-19.4 -> 15.1-15.2 ms; 256x1024 89 -> 96 us and 287-303 ->
 * 257-272 us). Narrower chunks sized for the chunk to stay in L2 between the sweeps were slower
 * still (64 columns at 4096 rows: bnf 29-33 ms, bnb 72-100 ms). The apply streams y when a
 * call's y spans KEEL_STREAM_ABOVE bytes or more (rows that start 64-byte aligned). A tail of fewer than 8 (16) columns is masked: lanes
 * without a column are neither read nor written. */
#include "kernels.h"
#include "norm_finish.h"
#include "simd_lanes__avx512.h"

#define BN_CHUNK 1024

KEEL_INLINE __mmask8 mask8(size_t n) { return n >= 8 ? (__mmask8)0xff : (__mmask8)((1u << n) - 1u); }
KEEL_INLINE __mmask16 mask16(size_t n) { return n >= 16 ? (__mmask16)0xffff : k512_tail16(n); }

/* (double) of the 8 floats of p that k selects (0.0 elsewhere) */
KEEL_INLINE __m512d cvt8(__mmask8 k, const float *p) { return k512_cvt8_mask(k, p); }

/* The 16 floats of k at p: a full group streamed when nt (whole aligned lines), a tail masked. */
KEEL_INLINE void st16(float *p, __m512 v, __mmask16 k, int nt)
{
    if (k == 0xffff)
        k512_store16(p, v, nt);
    else
        _mm512_mask_storeu_ps(p, k, v);
}

/* acc[0..8) = acc + t where k is set. A full group uses a plain load and store: a masked
 * store cannot be forwarded to the next row's load of the same accumulators. */
KEEL_INLINE void acc8(double *acc, __mmask8 k, __m512d t)
{
    if (k == 0xff)
        _mm512_storeu_pd(acc, _mm512_add_pd(_mm512_loadu_pd(acc), t));
    else
        _mm512_mask_storeu_pd(acc, k, _mm512_add_pd(_mm512_maskz_loadu_pd(k, acc), t));
}

/* The chunk's columns of the next row (NULL: none), fetched a line at a time while this row's
 * are summed. A chunk's sweep visits a new page every row, where the hardware prefetcher, which
 * follows a stream within a page, starts cold each time; from KEEL_PREFETCH_ABOVE bytes of x the
 * next row is fetched by hand. keel_profile_loop bnf, 1 thread, fastest call, before -> after:
 * 4096x4096 20.2-21.6 -> 12.5-16.5 ms (AVX2 23.4-25.5 -> 17.9-21.0), 1024x8192 6.6-7.7 -> 6.1-6.5
 * ms (AVX2 7.5-10.3 -> 6.6-7.0); keel bench --threads 1, batchnorm fwd train, fraction of the
 * floor: 4096x4096 0.30-0.31 -> 0.37-0.39, 16384x8192 0.23 -> 0.28. (The same in the backward's
 * two sweeps measured no gain: 4096x4096 42-43 against 40-47 ms.) */
KEEL_INLINE void pf_next_row(const float *next, size_t c)
{
    if (next && (c & 15) == 0)
        K512_PF_L1(next + c);
}

/* Narrow chunks (ng groups of 8 columns, at most BN_NARROW_GROUPS; a constant at each call):
 * the accumulators stay in registers. In memory (acc8) a column's add waits every row for the
 * previous row's store to reach the load, and with few columns nothing else fills that wait.
 * Same adds in the same order, so the same bits. The last group is masked (mask kl). keel
 * bench --threads 1, median us, memory -> registers (the backward's bwd_sums_narrow beside it):
 * fwd train 4096x16 50 -> 38, 4096x32 90 -> 73, 4096x64 191 -> 163; bwd train 4096x16 70 ->
 * 46, 4096x32 125 -> 86. */
#define BN_NARROW_GROUPS 8

/* A wider chunk goes through the same register sweeps a block of columns at a time (each
 * column's sums the same adds in the same order) when its rows span at most BN_BLOCK_BYTES of
 * x, so that the blocks after the first find x (and dy) in L2; above, each block's sweep would
 * fetch its rows again from farther away. keel bench --threads 1 --hot, median us, chunk arrays
 * -> blocks: fwd train 256x1024 100 -> 88, 512x512 99 -> 90, 1024x256 104 -> 88, 2048x128
 * 101 -> 87, 128x2048 128 -> 113 (at 2 MiB of x, 512x1024 and 2048x256, 257 -> 278 and 257 ->
 * 274); bwd train 4096x64 207 -> 175, 4096x48 153 -> 127, 2048x64 92 -> 69, 512x256 92 ->
 * 73, 256x1024 and 256x512 the same (at 2 MiB of x, 4096x128 467 -> 565). */
#define BN_BLOCK_BYTES ((size_t)1 << 20)

KEEL_INLINE int bn_blocked(size_t rows, size_t n)
{
    return rows * n * sizeof(float) <= BN_BLOCK_BYTES;
}

/* One sweep of a narrow chunk over its rows: the column sums of x (sq 0) or of (x - m)^2
 * (sq 1, m the chunk's means), into out. */
KEEL_INLINE void narrow_sweep(size_t rows, int ng, __mmask8 kl, const float *x, size_t x_stride,
                              size_t pf_rows, int sq, const double *m, double *out)
{
    __m512d acc[BN_NARROW_GROUPS], mv[BN_NARROW_GROUPS];
#pragma GCC unroll 8
    for (int g = 0; g < ng; g++) {
        acc[g] = _mm512_setzero_pd();
        mv[g] = sq ? _mm512_maskz_loadu_pd(g == ng - 1 ? kl : 0xff, m + 8 * g) : acc[g];
    }
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *nx = r < pf_rows ? xr + x_stride : NULL;
#pragma GCC unroll 8
        for (int g = 0; g < ng; g++) {
            pf_next_row(nx, 8 * (size_t)g);
            __m512d v = cvt8(g == ng - 1 ? kl : 0xff, xr + 8 * g);
            if (sq) {
                const __m512d t = _mm512_sub_pd(v, mv[g]);
                v = _mm512_mul_pd(t, t);
            }
            acc[g] = _mm512_add_pd(acc[g], v);
        }
    }
#pragma GCC unroll 8
    for (int g = 0; g < ng; g++)
        _mm512_mask_storeu_pd(out + 8 * g, g == ng - 1 ? kl : 0xff, acc[g]);
}

KEEL_INLINE void stats_narrow(size_t rows, int ng, __mmask8 kl, const float *x, size_t x_stride,
                              size_t pf_rows, double *s, double *q)
{
    narrow_sweep(rows, ng, kl, x, x_stride, pf_rows, 0, NULL, s);
    const size_t n = 8 * (size_t)(ng - 1) + (size_t)__builtin_popcount(kl);
    for (size_t c = 0; c < n; c++)
        s[c] = keel_ln_mean(s[c], rows);
    narrow_sweep(rows, ng, kl, x, x_stride, pf_rows, 1, s, q);
}

void keel_f32_batchnorm_stats__avx512(size_t rows, size_t cols, const float *x, size_t x_stride,
                                      double *mean, double *m2)
{
    const size_t pf_rows = rows * x_stride * sizeof(float) > KEEL_PREFETCH_ABOVE ? rows - 1 : 0;
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK;
        double *s = mean + c0, *q = m2 + c0;
        if (n <= 8 * BN_NARROW_GROUPS || bn_blocked(rows, n)) {
            for (size_t b0 = 0; b0 < n; b0 += 8 * BN_NARROW_GROUPS) {
                const size_t nb = n - b0 < 8 * BN_NARROW_GROUPS ? n - b0 : 8 * BN_NARROW_GROUPS;
                const __mmask8 kl = mask8(nb - 8 * ((nb - 1) / 8));
                const float *xb = x + c0 + b0;
                switch ((nb + 7) / 8) {
#define BN_STATS_NARROW(ng)                                                                        \
    case ng:                                                                                       \
        stats_narrow(rows, ng, kl, xb, x_stride, pf_rows, s + b0, q + b0);                         \
        break;
                    BN_STATS_NARROW(1) BN_STATS_NARROW(2) BN_STATS_NARROW(3) BN_STATS_NARROW(4)
                    BN_STATS_NARROW(5) BN_STATS_NARROW(6) BN_STATS_NARROW(7) BN_STATS_NARROW(8)
#undef BN_STATS_NARROW
                }
            }
            continue;
        }
        for (size_t c = 0; c < n; c++)
            s[c] = 0.0;
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *nx = r < pf_rows ? xr + x_stride : NULL;
            for (size_t c = 0; c < n; c += 8) {
                const __mmask8 k = mask8(n - c);
                pf_next_row(nx, c);
                acc8(s + c, k, cvt8(k, xr + c));
            }
        }
        for (size_t c = 0; c < n; c++) {
            s[c] = keel_ln_mean(s[c], rows);
            q[c] = 0.0;
        }
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *nx = r < pf_rows ? xr + x_stride : NULL;
            for (size_t c = 0; c < n; c += 8) {
                const __mmask8 k = mask8(n - c);
                pf_next_row(nx, c);
                const __m512d t = _mm512_sub_pd(cvt8(k, xr + c), _mm512_maskz_loadu_pd(k, s + c));
                acc8(q + c, k, _mm512_mul_pd(t, t));
            }
        }
    }
}

void keel_f32_batchnorm_apply__avx512(size_t rows, size_t cols, const float *x, size_t x_stride,
                                      float *y, size_t y_stride, const float *hi, const float *lo,
                                      const float *rstd, const float *gamma, const float *beta)
{
    const int stream = k512_want_stream(rows, y_stride);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        const int nt = stream && k512_aligned64(yr);
        for (size_t c = 0; c < cols; c += 16) {
            const __mmask16 k = mask16(cols - c);
            __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + c), _mm512_maskz_loadu_ps(k, hi + c));
            if (lo)
                v = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(k, lo + c));
            v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, rstd + c));
            if (gamma)
                v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, gamma + c));
            if (beta)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, beta + c));
            st16(yr + c, v, k, nt);
        }
    }
    if (stream)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* The backward's five column sums (sweep 1). */
typedef struct bn_bwd_sums {
    double *su, *sd, *sdu, *sg, *sgu;
} bn_bwd_sums;

/* Sweep 1 of a narrow chunk (ng groups of 8 columns, at most BN_BWD_NARROW_GROUPS, a constant
 * at each call; the last masked by kl): the five sums in registers, as stats_narrow. */
#define BN_BWD_NARROW_GROUPS 4

KEEL_INLINE void bwd_sums_narrow(size_t rows, int ng, __mmask8 kl, const float *dy,
                                 size_t dy_stride, const float *x, size_t x_stride,
                                 const float *m, const float *gm, const bn_bwd_sums *out)
{
    __m512d su[BN_BWD_NARROW_GROUPS], sd[BN_BWD_NARROW_GROUPS], sdu[BN_BWD_NARROW_GROUPS];
    __m512d sg[BN_BWD_NARROW_GROUPS], sgu[BN_BWD_NARROW_GROUPS], md[BN_BWD_NARROW_GROUPS];
    __m256 gv[BN_BWD_NARROW_GROUPS];
#pragma GCC unroll 4
    for (int g = 0; g < ng; g++) {
        const __mmask8 k = g == ng - 1 ? kl : 0xff;
        su[g] = sd[g] = sdu[g] = sg[g] = sgu[g] = _mm512_setzero_pd();
        md[g] = cvt8(k, m + 8 * g);
        gv[g] = gm ? _mm256_maskz_loadu_ps(k, gm + 8 * g) : _mm256_setzero_ps();
    }
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *dyr = dy + r * dy_stride;
#pragma GCC unroll 4
        for (int g = 0; g < ng; g++) {
            const __mmask8 k = g == ng - 1 ? kl : 0xff;
            const __m256 dyf = _mm256_maskz_loadu_ps(k, dyr + 8 * g);
            const __m256 gf = gm ? _mm256_mul_ps(dyf, gv[g]) : dyf;
            const __m512d u = _mm512_sub_pd(cvt8(k, xr + 8 * g), md[g]);
            const __m512d dyd = _mm512_cvtps_pd(dyf), gd = _mm512_cvtps_pd(gf);
            su[g] = _mm512_add_pd(su[g], u);
            sd[g] = _mm512_add_pd(sd[g], dyd);
            sdu[g] = _mm512_add_pd(sdu[g], _mm512_mul_pd(dyd, u));
            sg[g] = _mm512_add_pd(sg[g], gd);
            sgu[g] = _mm512_add_pd(sgu[g], _mm512_mul_pd(gd, u));
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < ng; g++) {
        const __mmask8 k = g == ng - 1 ? kl : 0xff;
        _mm512_mask_storeu_pd(out->su + 8 * g, k, su[g]);
        _mm512_mask_storeu_pd(out->sd + 8 * g, k, sd[g]);
        _mm512_mask_storeu_pd(out->sdu + 8 * g, k, sdu[g]);
        _mm512_mask_storeu_pd(out->sg + 8 * g, k, sg[g]);
        _mm512_mask_storeu_pd(out->sgu + 8 * g, k, sgu[g]);
    }
}

void keel_f32_batchnorm_bwd__avx512(size_t rows, size_t cols, const float *dy, size_t dy_stride,
                                    const float *x, size_t x_stride, const float *mean,
                                    const float *rstd, const float *gamma, int training,
                                    float *dx, size_t dx_stride, int accumulate_dx,
                                    float *dgamma, float *dbeta, int accumulate_dparams)
{
    double su[BN_CHUNK], sd[BN_CHUNK], sdu[BN_CHUNK], sg[BN_CHUNK], sgu[BN_CHUNK];
    float a[BN_CHUNK], b[BN_CHUNK], df[BN_CHUNK];
    const double n_rows = (double)rows;
    /* dx streamed when the call's dx spans KEEL_STREAM_ABOVE bytes or more (not accumulated) */
    const int stream = dx && !accumulate_dx && k512_want_stream(rows, cols);
    int streamed = 0;
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK;
        const float *m = mean + c0, *rs = rstd + c0, *gm = gamma ? gamma + c0 : NULL;
        /* sweep 1: the column sums (the register sweeps store them; the rows below add into
         * the arrays) */
        if (n <= 8 * BN_BWD_NARROW_GROUPS || bn_blocked(rows, n)) {
            for (size_t b0 = 0; b0 < n; b0 += 8 * BN_BWD_NARROW_GROUPS) {
                const size_t nb =
                    n - b0 < 8 * BN_BWD_NARROW_GROUPS ? n - b0 : 8 * BN_BWD_NARROW_GROUPS;
                const __mmask8 kl = mask8(nb - 8 * ((nb - 1) / 8));
                const bn_bwd_sums sums = {su + b0, sd + b0, sdu + b0, sg + b0, sgu + b0};
                const float *xb = x + c0 + b0, *dyb = dy + c0 + b0, *mb = m + b0;
                const float *gb = gm ? gm + b0 : NULL;
                switch ((nb + 7) / 8) {
#define BN_BWD_NARROW(ng)                                                                          \
    case ng:                                                                                       \
        bwd_sums_narrow(rows, ng, kl, dyb, dy_stride, xb, x_stride, mb, gb, &sums);                \
        break;
                    BN_BWD_NARROW(1) BN_BWD_NARROW(2) BN_BWD_NARROW(3) BN_BWD_NARROW(4)
#undef BN_BWD_NARROW
                }
            }
        } else {
            for (size_t c = 0; c < n; c++)
                su[c] = sd[c] = sdu[c] = sg[c] = sgu[c] = 0.0;
            for (size_t r = 0; r < rows; r++) {
                const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
                for (size_t c = 0; c < n; c += 8) {
                    const __mmask8 k = mask8(n - c);
                    const __m256 dyf = _mm256_maskz_loadu_ps(k, dyr + c);
                    const __m256 gf =
                        gm ? _mm256_mul_ps(dyf, _mm256_maskz_loadu_ps(k, gm + c)) : dyf;
                    const __m512d u = _mm512_sub_pd(cvt8(k, xr + c), cvt8(k, m + c));
                    const __m512d dyd = _mm512_cvtps_pd(dyf), gd = _mm512_cvtps_pd(gf);
                    acc8(su + c, k, u);
                    acc8(sd + c, k, dyd);
                    acc8(sdu + c, k, _mm512_mul_pd(dyd, u));
                    acc8(sg + c, k, gd);
                    acc8(sgu + c, k, _mm512_mul_pd(gd, u));
                }
            }
        }
        /* the scalar kernel's finishing steps, column by column */
        for (size_t c = 0; c < n; c++) {
            const double rsd = (double)rs[c];
            const double delta = training ? su[c] / n_rows : 0.0;
            a[c] = (float)(sg[c] / n_rows);
            b[c] = (float)(rsd * ((sgu[c] - delta * sg[c]) / n_rows));
            df[c] = (float)delta;
            if (dgamma) {
                const double v = rsd * (sdu[c] - delta * sd[c]);
                dgamma[c0 + c] = (float)(accumulate_dparams ? (double)dgamma[c0 + c] + v : v);
            }
            if (dbeta)
                dbeta[c0 + c] = (float)(accumulate_dparams ? (double)dbeta[c0 + c] + sd[c] : sd[c]);
        }
        if (!dx)
            continue;
        /* sweep 2: dx */
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
            float *dxr = dx + r * dx_stride + c0;
            const int nt = stream && k512_aligned64(dxr);
            streamed |= nt;
            for (size_t c = 0; c < n; c += 16) {
                const __mmask16 k = mask16(n - c);
                const __m512 dyv = _mm512_maskz_loadu_ps(k, dyr + c);
                const __m512 g = gm ? _mm512_mul_ps(dyv, _mm512_maskz_loadu_ps(k, gm + c)) : dyv;
                const __m512 rsv = _mm512_maskz_loadu_ps(k, rs + c);
                __m512 v;
                if (training) {
                    const __m512 xc = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + c),
                                                    _mm512_maskz_loadu_ps(k, m + c));
                    const __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(xc, _mm512_maskz_loadu_ps(k, df + c)), rsv);
                    const __m512 ga = _mm512_sub_ps(g, _mm512_maskz_loadu_ps(k, a + c));
                    v = _mm512_mul_ps(rsv, _mm512_sub_ps(ga, _mm512_mul_ps(xhat, _mm512_maskz_loadu_ps(k, b + c))));
                } else {
                    v = _mm512_mul_ps(rsv, g);
                }
                if (accumulate_dx)
                    v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, dxr + c), v);
                st16(dxr + c, v, k, nt);
            }
        }
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
