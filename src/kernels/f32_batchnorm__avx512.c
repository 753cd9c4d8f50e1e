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

void keel_f32_batchnorm_stats__avx512(size_t rows, size_t cols, const float *x, size_t x_stride,
                                      double *mean, double *m2)
{
    const size_t pf_rows = rows * x_stride * sizeof(float) > KEEL_PREFETCH_ABOVE ? rows - 1 : 0;
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK;
        double *s = mean + c0, *q = m2 + c0;
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
        for (size_t c = 0; c < n; c++)
            su[c] = sd[c] = sdu[c] = sg[c] = sgu[c] = 0.0;
        /* sweep 1: the column sums */
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
            for (size_t c = 0; c < n; c += 8) {
                const __mmask8 k = mask8(n - c);
                const __m256 dyf = _mm256_maskz_loadu_ps(k, dyr + c);
                const __m256 gf = gm ? _mm256_mul_ps(dyf, _mm256_maskz_loadu_ps(k, gm + c)) : dyf;
                const __m512d u = _mm512_sub_pd(cvt8(k, xr + c), cvt8(k, m + c));
                const __m512d dyd = _mm512_cvtps_pd(dyf), gd = _mm512_cvtps_pd(gf);
                acc8(su + c, k, u);
                acc8(sd + c, k, dyd);
                acc8(sdu + c, k, _mm512_mul_pd(dyd, u));
                acc8(sg + c, k, gd);
                acc8(sgu + c, k, _mm512_mul_pd(gd, u));
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
