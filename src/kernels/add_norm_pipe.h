/* The row pipelines of the fused add + norm forwards for rows from beyond L2, written once for
 * both SIMD paths (f32_add_layernorm__avx512.c explains the plan and its measurements). The
 * including file defines PIPE_ROW (its residual row type), PIPE_ROW_OF and PIPE_ALIGNED (its
 * r*_row_of and r*_aligned), BUF_FLOATS, and then, before including this header with
 * PIPE_LAYERNORM or PIPE_RMSNORM defined, its out_row / out_row_of / pipe_sweep (LayerNorm) or
 * pipe_sweep (RMSNorm). Include only from the fused *__avx2.c / *__avx512.c files. */
#ifndef KEEL_KERNELS_ADD_NORM_PIPE_H
#define KEEL_KERNELS_ADD_NORM_PIPE_H

#include <string.h>

#include "kernels.h"
#include "norm_finish.h"

#ifdef PIPE_LAYERNORM
/* LayerNorm, three rows: sweep t reads row t (c), centres row t - 1 (b) and writes row t - 2
 * (a); row i lives in buffer i % 3 of bufs (three of BUF_FLOATS; dim fits). */
KEEL_INLINE void fwd_rows_piped(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                size_t hs, float *y, size_t ys, const float *gamma,
                                const float *beta, float eps, float *mean, float *rstd, int stream,
                                float *bufs, int hl, int hb, int hg, int hbe, int hh)
{
    double mean_b = 0.0, mean_a = 0.0;
    float rs_a = 0.0f;
    int streamed = 0;
    for (size_t t = 0; t < rows + 2; t++) {
        const int do_sum = t < rows, do_cen = t >= 1 && t - 1 < rows, do_out = t >= 2;
        const size_t a = t - 2, b = t - 1;
        out_row o;
        memset(&o, 0, sizeof o);
        if (do_out) {
            float *hr = hh ? h + a * hs : NULL, *yr = y + a * ys;
            const int nt = stream && PIPE_ALIGNED(yr) && (!hh || PIPE_ALIGNED(hr));
            streamed |= nt;
            o = out_row_of(hr, yr, mean_a, rs_a, nt);
        }
        const PIPE_ROW wc = PIPE_ROW_OF(res, do_sum ? t : 0);
        const float *ha = bufs + (a % 3) * BUF_FLOATS, *hbuf = bufs + (b % 3) * BUF_FLOATS;
        float *hc = bufs + (t % 3) * BUF_FLOATS;
        double cen = 0.0, sum = 0.0;
        if (do_sum && do_cen && do_out) /* every sweep but the first two and the last two */
            pipe_sweep(dim, 1, &o, ha, 1, hbuf, mean_b, &cen, 1, &wc, hc, &sum, gamma, beta, hl,
                       hb, hg, hbe, hh);
        else
            pipe_sweep(dim, do_out, &o, ha, do_cen, hbuf, mean_b, &cen, do_sum, &wc, hc, &sum,
                       gamma, beta, hl, hb, hg, hbe, hh);
        if (do_cen) { /* row b's statistics are complete; it becomes row a */
            rs_a = keel_ln_rstd(cen, dim, eps);
            mean_a = mean_b;
            if (mean)
                mean[b] = (float)mean_b;
            if (rstd)
                rstd[b] = rs_a;
        }
        if (do_sum)
            mean_b = keel_ln_mean(sum, dim);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
#endif

#ifdef PIPE_RMSNORM
/* RMSNorm, two rows: sweep t reads row t into buffer t % 2 with R(h * h) and writes row t - 1
 * (two buffers of BUF_FLOATS; dim fits). */
KEEL_INLINE void fwd_rows_piped(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                size_t hs, float *y, size_t ys, const float *gamma, float eps,
                                float *rstd, int stream, float *bufs, int hl, int hb, int hg, int hh)
{
    float rs_a = 0.0f;
    int streamed = 0;
    for (size_t t = 0; t < rows + 1; t++) {
        const int do_sum = t < rows, do_out = t >= 1;
        const size_t a = t - 1;
        float *hr = do_out && hh ? h + a * hs : NULL, *yr = do_out ? y + a * ys : NULL;
        const int nt = do_out && stream && PIPE_ALIGNED(yr) && (!hh || PIPE_ALIGNED(hr));
        streamed |= nt;
        const PIPE_ROW wc = PIPE_ROW_OF(res, do_sum ? t : 0);
        const float *ha = bufs + (a & 1) * BUF_FLOATS;
        float *hc = bufs + (t & 1) * BUF_FLOATS;
        double ss = 0.0;
        if (do_sum && do_out) /* every sweep but the first and the last */
            pipe_sweep(dim, 1, ha, hr, yr, rs_a, nt, 1, &wc, hc, &ss, gamma, hl, hb, hg, hh);
        else
            pipe_sweep(dim, do_out, ha, hr, yr, rs_a, nt, do_sum, &wc, hc, &ss, gamma, hl, hb, hg, hh);
        if (do_sum) {
            rs_a = keel_rms_rstd(ss, dim, eps);
            if (rstd)
                rstd[t] = rs_a;
        }
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
#endif

#endif
