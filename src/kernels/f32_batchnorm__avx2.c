/* BatchNorm, float32, AVX2: the per-feature column sums and the elementwise sweeps of
 * kernels.h, vectorized across columns, 8 at a time (two ymm of 4 double accumulators for the
 * sums). Each column keeps its own double accumulator and adds the rows in increasing order,
 * exactly as the scalar kernel does, so every output has the scalar bits; see
 * f32_batchnorm__avx512.c. The columns of a chunk beyond its last multiple of 8 (only the last
 * chunk of a call has them) run the scalar kernel's own C, column by column. Chunks of 1024
 * columns and the apply's streamed y, as on AVX-512. */
#include "kernels.h"
#include "norm_finish.h"
#include "simd_lanes__avx2.h"

#define BN_CHUNK 1024

/* acc[0..4) += t */
KEEL_INLINE void acc4(double *acc, __m256d t) { _mm256_storeu_pd(acc, _mm256_add_pd(_mm256_loadu_pd(acc), t)); }

/* The chunk's columns of the next row (NULL: none), fetched a line at a time while this row's
 * are summed (f32_batchnorm__avx512.c). */
KEEL_INLINE void pf_next_row(const float *next, size_t c)
{
    if (next && (c & 15) == 0)
        K256_PF_L1(next + c);
}

/* Narrow chunks (ng groups of 8 columns, at most BN_NARROW_GROUPS; a constant at each call):
 * the accumulators stay in registers (f32_batchnorm__avx512.c's stats_narrow). KEEL_ISA=avx2
 * keel bench --threads 1 --hot, median us, memory -> registers: fwd train 4096x16 36.7 ->
 * 25.8, 4096x24 52.5 -> 37.8 (the columns beyond a multiple of 8 stay in the row loops); bwd
 * train (bwd_sums_group) 4096x8 46.9 -> 27.1, 4096x16 69.9 -> 45.4. */
#define BN_NARROW_GROUPS 4

/* A wider chunk's statistics go through the same register sweeps BN_NARROW_GROUPS groups at a
 * time when its rows span at most BN_BLOCK_BYTES of x: the blocks after the first find x in L2
 * (f32_batchnorm__avx512.c's bn_blocked). KEEL_ISA=avx2 keel bench --threads 1 --hot, fwd train
 * GB/s, chunk arrays -> blocks: 256x1024 17.8 -> 18.8, 1024x256 15.7 -> 19.6, 2048x128 15.3 ->
 * 20.6, 4096x48 15.2 -> 20.6, 512x256 16.3 -> 21.2. The backward's groups of 8 a sweep at a
 * time (bwd_sums_group) lost there (256x1024 13.5 -> 9.0, 4096x64 13.5 -> 10.7 GB/s): it takes
 * only the narrow chunks. */
#define BN_BLOCK_BYTES ((size_t)1 << 20)

KEEL_INLINE int bn_blocked(size_t rows, size_t n)
{
    return rows * n * sizeof(float) <= BN_BLOCK_BYTES;
}

/* One sweep of a narrow chunk over its rows: the column sums of x (sq 0) or of (x - m)^2
 * (sq 1, m the chunk's means), into out. */
KEEL_INLINE void narrow_sweep(size_t rows, int ng, const float *x, size_t x_stride,
                              size_t pf_rows, int sq, const double *m, double *out)
{
    __m256d acc[2 * BN_NARROW_GROUPS], mv[2 * BN_NARROW_GROUPS];
#pragma GCC unroll 8
    for (int g = 0; g < 2 * ng; g++) {
        acc[g] = _mm256_setzero_pd();
        mv[g] = sq ? _mm256_loadu_pd(m + 4 * g) : acc[g];
    }
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride, *nx = r < pf_rows ? xr + x_stride : NULL;
#pragma GCC unroll 4
        for (int g = 0; g < ng; g++) {
            pf_next_row(nx, 8 * (size_t)g);
            const __m256 v = _mm256_loadu_ps(xr + 8 * g);
            __m256d h[2] = {k256_lo_pd(v), k256_hi_pd(v)};
            for (int i = 0; i < 2; i++) {
                if (sq) {
                    const __m256d t = _mm256_sub_pd(h[i], mv[2 * g + i]);
                    h[i] = _mm256_mul_pd(t, t);
                }
                acc[2 * g + i] = _mm256_add_pd(acc[2 * g + i], h[i]);
            }
        }
    }
#pragma GCC unroll 8
    for (int g = 0; g < 2 * ng; g++)
        _mm256_storeu_pd(out + 4 * g, acc[g]);
}

KEEL_INLINE void stats_narrow(size_t rows, int ng, const float *x, size_t x_stride,
                              size_t pf_rows, double *s, double *q)
{
    narrow_sweep(rows, ng, x, x_stride, pf_rows, 0, NULL, s);
    for (size_t c = 0; c < 8 * (size_t)ng; c++)
        s[c] = keel_ln_mean(s[c], rows);
    narrow_sweep(rows, ng, x, x_stride, pf_rows, 1, s, q);
}

void keel_f32_batchnorm_stats__avx2(size_t rows, size_t cols, const float *x, size_t x_stride,
                                    double *mean, double *m2)
{
    const size_t pf_rows = rows * x_stride * sizeof(float) > KEEL_PREFETCH_ABOVE ? rows - 1 : 0;
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK, n8 = n & ~(size_t)7;
        double *s = mean + c0, *q = m2 + c0;
        /* v0: the first column the row loops below take (a narrow chunk's groups of 8 are done) */
        size_t v0 = 0;
        if (n8 > 0 && (n8 <= 8 * BN_NARROW_GROUPS || bn_blocked(rows, n))) {
            for (; v0 < n8; v0 += 8 * BN_NARROW_GROUPS) {
                const size_t nb = n8 - v0 < 8 * BN_NARROW_GROUPS ? n8 - v0 : 8 * BN_NARROW_GROUPS;
                const float *xb = x + c0 + v0;
                switch (nb / 8) {
#define BN_STATS_NARROW(ng)                                                                        \
    case ng:                                                                                       \
        stats_narrow(rows, ng, xb, x_stride, pf_rows, s + v0, q + v0);                             \
        break;
                    BN_STATS_NARROW(1) BN_STATS_NARROW(2) BN_STATS_NARROW(3) BN_STATS_NARROW(4)
#undef BN_STATS_NARROW
                }
            }
            v0 = n8;
        }
        if (v0 == n)
            continue;
        for (size_t c = v0; c < n; c++)
            s[c] = 0.0;
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *nx = r < pf_rows ? xr + x_stride : NULL;
            size_t c = v0;
            for (; c < n8; c += 8) {
                pf_next_row(nx, c);
                const __m256 v = _mm256_loadu_ps(xr + c);
                acc4(s + c, k256_lo_pd(v));
                acc4(s + c + 4, k256_hi_pd(v));
            }
            for (; c < n; c++)
                s[c] = s[c] + (double)xr[c];
        }
        for (size_t c = v0; c < n; c++) {
            s[c] = keel_ln_mean(s[c], rows);
            q[c] = 0.0;
        }
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * x_stride + c0, *nx = r < pf_rows ? xr + x_stride : NULL;
            size_t c = v0;
            for (; c < n8; c += 8) {
                pf_next_row(nx, c);
                const __m256 v = _mm256_loadu_ps(xr + c);
                const __m256d t0 = _mm256_sub_pd(k256_lo_pd(v), _mm256_loadu_pd(s + c));
                const __m256d t1 = _mm256_sub_pd(k256_hi_pd(v), _mm256_loadu_pd(s + c + 4));
                acc4(q + c, _mm256_mul_pd(t0, t0));
                acc4(q + c + 4, _mm256_mul_pd(t1, t1));
            }
            for (; c < n; c++) {
                const double t = (double)xr[c] - s[c];
                q[c] = q[c] + t * t;
            }
        }
    }
}

void keel_f32_batchnorm_apply__avx2(size_t rows, size_t cols, const float *x, size_t x_stride,
                                    float *y, size_t y_stride, const float *hi, const float *lo,
                                    const float *rstd, const float *gamma, const float *beta)
{
    const size_t full = cols & ~(size_t)7;
    const __m256i mt = k256_mask8(cols - full);
    const int stream = k256_want_stream(rows, y_stride);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        const int nt = stream && k256_aligned32(yr);
        for (size_t c = 0; c < cols; c += 8) {
            const int tail = c == full;
#define LD(p) (tail ? _mm256_maskload_ps((p) + c, mt) : _mm256_loadu_ps((p) + c))
            __m256 v = _mm256_sub_ps(LD(xr), LD(hi));
            if (lo)
                v = _mm256_sub_ps(v, LD(lo));
            v = _mm256_mul_ps(v, LD(rstd));
            if (gamma)
                v = _mm256_mul_ps(v, LD(gamma));
            if (beta)
                v = _mm256_add_ps(v, LD(beta));
#undef LD
            if (tail)
                _mm256_maskstore_ps(yr + c, mt, v);
            else
                k256_store8(yr + c, v, nt);
        }
    }
    if (stream)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* The backward's five column sums (sweep 1). */
typedef struct bn_bwd_sums {
    double *su, *sd, *sdu, *sg, *sgu;
} bn_bwd_sums;

/* Sweep 1 of a narrow chunk, the 8 columns from c, one group a sweep over the rows: its ten
 * accumulators in registers (sixteen ymm hold no more than one group's; f32_batchnorm__avx512.c's
 * bwd_sums_narrow). Same adds in the same order as the row loop below. */
#define BN_BWD_NARROW_GROUPS 2

KEEL_INLINE void bwd_sums_group(size_t rows, size_t c, const float *dy, size_t dy_stride,
                                const float *x, size_t x_stride, const float *m, const float *gm,
                                const bn_bwd_sums *out)
{
    __m256d su[2], sd[2], sdu[2], sg[2], sgu[2];
    const __m256 mv = _mm256_loadu_ps(m + c);
    const __m256d md[2] = {k256_lo_pd(mv), k256_hi_pd(mv)};
    const __m256 gv = gm ? _mm256_loadu_ps(gm + c) : _mm256_setzero_ps();
    for (int h = 0; h < 2; h++)
        su[h] = sd[h] = sdu[h] = sg[h] = sgu[h] = _mm256_setzero_pd();
    for (size_t r = 0; r < rows; r++) {
        const __m256 xv = _mm256_loadu_ps(x + r * x_stride + c);
        const __m256 dyf = _mm256_loadu_ps(dy + r * dy_stride + c);
        const __m256 gf = gm ? _mm256_mul_ps(dyf, gv) : dyf;
        for (int h = 0; h < 2; h++) {
            const __m256d u = _mm256_sub_pd(h ? k256_hi_pd(xv) : k256_lo_pd(xv), md[h]);
            const __m256d dyd = h ? k256_hi_pd(dyf) : k256_lo_pd(dyf);
            const __m256d gd = h ? k256_hi_pd(gf) : k256_lo_pd(gf);
            su[h] = _mm256_add_pd(su[h], u);
            sd[h] = _mm256_add_pd(sd[h], dyd);
            sdu[h] = _mm256_add_pd(sdu[h], _mm256_mul_pd(dyd, u));
            sg[h] = _mm256_add_pd(sg[h], gd);
            sgu[h] = _mm256_add_pd(sgu[h], _mm256_mul_pd(gd, u));
        }
    }
    for (int h = 0; h < 2; h++) {
        const size_t o = c + 4 * (size_t)h;
        _mm256_storeu_pd(out->su + o, su[h]);
        _mm256_storeu_pd(out->sd + o, sd[h]);
        _mm256_storeu_pd(out->sdu + o, sdu[h]);
        _mm256_storeu_pd(out->sg + o, sg[h]);
        _mm256_storeu_pd(out->sgu + o, sgu[h]);
    }
}

void keel_f32_batchnorm_bwd__avx2(size_t rows, size_t cols, const float *dy, size_t dy_stride,
                                  const float *x, size_t x_stride, const float *mean,
                                  const float *rstd, const float *gamma, int training,
                                  float *dx, size_t dx_stride, int accumulate_dx,
                                  float *dgamma, float *dbeta, int accumulate_dparams)
{
    double su[BN_CHUNK], sd[BN_CHUNK], sdu[BN_CHUNK], sg[BN_CHUNK], sgu[BN_CHUNK];
    float a[BN_CHUNK], b[BN_CHUNK], df[BN_CHUNK];
    const double n_rows = (double)rows;
    /* dx streamed when the call's dx spans KEEL_STREAM_ABOVE bytes or more (not accumulated) */
    const int stream = dx && !accumulate_dx && k256_want_stream(rows, cols);
    int streamed = 0;
    for (size_t c0 = 0; c0 < cols; c0 += BN_CHUNK) {
        const size_t n = cols - c0 < BN_CHUNK ? cols - c0 : BN_CHUNK, n8 = n & ~(size_t)7;
        const float *m = mean + c0, *rs = rstd + c0, *gm = gamma ? gamma + c0 : NULL;
        /* sweep 1: the column sums (a narrow chunk's groups of 8 first, stored; v0: the columns
         * done; the rows below add into the arrays) */
        size_t v0 = 0;
        if (n8 > 0 && n8 <= 8 * BN_BWD_NARROW_GROUPS) {
            const bn_bwd_sums sums = {su, sd, sdu, sg, sgu};
            for (; v0 < n8; v0 += 8)
                bwd_sums_group(rows, v0, dy + c0, dy_stride, x + c0, x_stride, m, gm, &sums);
        }
        for (size_t c = v0; c < n; c++)
            su[c] = sd[c] = sdu[c] = sg[c] = sgu[c] = 0.0;
        for (size_t r = 0; r < rows && v0 < n; r++) {
            const float *xr = x + r * x_stride + c0, *dyr = dy + r * dy_stride + c0;
            size_t c = v0;
            for (; c < n8; c += 8) {
                const __m256 xv = _mm256_loadu_ps(xr + c), mv = _mm256_loadu_ps(m + c);
                const __m256 dyf = _mm256_loadu_ps(dyr + c);
                const __m256 gf = gm ? _mm256_mul_ps(dyf, _mm256_loadu_ps(gm + c)) : dyf;
                for (int h = 0; h < 2; h++) {
                    const size_t o = c + 4 * (size_t)h;
                    const __m256d u = h ? _mm256_sub_pd(k256_hi_pd(xv), k256_hi_pd(mv))
                                        : _mm256_sub_pd(k256_lo_pd(xv), k256_lo_pd(mv));
                    const __m256d dyd = h ? k256_hi_pd(dyf) : k256_lo_pd(dyf);
                    const __m256d gd = h ? k256_hi_pd(gf) : k256_lo_pd(gf);
                    acc4(su + o, u);
                    acc4(sd + o, dyd);
                    acc4(sdu + o, _mm256_mul_pd(dyd, u));
                    acc4(sg + o, gd);
                    acc4(sgu + o, _mm256_mul_pd(gd, u));
                }
            }
            for (; c < n; c++) {
                const double u = (double)xr[c] - (double)m[c];
                const float g = gm ? dyr[c] * gm[c] : dyr[c];
                su[c] = su[c] + u;
                sd[c] = sd[c] + (double)dyr[c];
                sdu[c] = sdu[c] + (double)dyr[c] * u;
                sg[c] = sg[c] + (double)g;
                sgu[c] = sgu[c] + (double)g * u;
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
            const int nt = stream && k256_aligned32(dxr);
            streamed |= nt;
            size_t c = 0;
            for (; c < n8; c += 8) {
                const __m256 dyv = _mm256_loadu_ps(dyr + c);
                const __m256 g = gm ? _mm256_mul_ps(dyv, _mm256_loadu_ps(gm + c)) : dyv;
                const __m256 rsv = _mm256_loadu_ps(rs + c);
                __m256 v;
                if (training) {
                    const __m256 xc = _mm256_sub_ps(_mm256_loadu_ps(xr + c), _mm256_loadu_ps(m + c));
                    const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(xc, _mm256_loadu_ps(df + c)), rsv);
                    const __m256 ga = _mm256_sub_ps(g, _mm256_loadu_ps(a + c));
                    v = _mm256_mul_ps(rsv, _mm256_sub_ps(ga, _mm256_mul_ps(xhat, _mm256_loadu_ps(b + c))));
                } else {
                    v = _mm256_mul_ps(rsv, g);
                }
                if (accumulate_dx)
                    v = _mm256_add_ps(_mm256_loadu_ps(dxr + c), v);
                k256_store8(dxr + c, v, nt);
            }
            for (; c < n; c++) {
                const float g = gm ? dyr[c] * gm[c] : dyr[c];
                float v;
                if (training) {
                    const float xhat = ((xr[c] - m[c]) - df[c]) * rs[c];
                    v = rs[c] * ((g - a[c]) - xhat * b[c]);
                } else {
                    v = rs[c] * g;
                }
                dxr[c] = accumulate_dx ? dxr[c] + v : v;
            }
        }
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
