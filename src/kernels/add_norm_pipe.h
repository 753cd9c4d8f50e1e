/* The row pipelines of the fused add + norm kernels for rows from beyond L2, written once for
 * both SIMD paths (f32_add_layernorm__avx512.c explains the plan and its measurements).
 * Include only from the fused *__avx2.c / *__avx512.c files. Their residual__*.h defines what
 * the pipelines need of the path: PIPE_ROW / PIPE_ROW_OF / PIPE_ALIGNED (the residual row),
 * PIPE_STEP / PIPE_STEPS(dim) / PIPE_STEP_AT(j) (16-float steps and the row's tail),
 * PIPE_BWD_ROW / PIPE_BWD_ROW_OF / PIPE_BWD_NT (a backward's row, whether it streams),
 * PIPE_PF / PIPE_AHEAD (prefetch), PIPE_STREAM_ABOVE (the forwards' streaming cut). The kernel file defines BUF_FLOATS and, before including
 * this header with one of the parts' macros defined:
 *  - PIPE_LAYERNORM: out_row, out_row_of, pipe_sweep (the forward's three stages), fwd_row (a
 *    row at a time) and PIPE_FWD_ENTRY (the kernel's name, which this part defines);
 *  - PIPE_RMSNORM: pipe_sweep (two stages), fwd_row and PIPE_FWD_ENTRY;
 *  - PIPE_BACKWARD: bwd_flags, s1_acc / s1_begin / s1_step / s1_end (sweep 1: its sums, then
 *    sweep 2's constants s2_row) and s2_zero / s2_step (sweep 2).
 * A path that takes short rows PIPE_BATCH at a time (batch_rows__avx512.h) defines PIPE_BATCH,
 * PIPE_BATCH_MAX, BATCH_TAKE_MAX, BATCH_SLOT(S) and the stages add_norm_batches.h drives. */
/* No include guard: a file includes this header once per part it wants (each part's macro is
 * undefined at its end). */
#include <string.h>

#include "kernels.h"
#include "norm_finish.h"
#include "variants.h"

#ifndef KEEL_ADD_NORM_PIPE_NEXT
#define KEEL_ADD_NORM_PIPE_NEXT
/* The h and y rows a forward writes in its next sweep, fetched during this one when they are
 * not streamed: out of cache, each store would first read its line and stall the loop (the
 * plain norms measured 1.47 -> 1.26 ms at 4096x768 with y out of cache: f32_layernorm_simd.h).
 * NULL: none (the pointers are formed only for rows that exist). */
typedef struct pipe_next {
    const float *h, *y;
} pipe_next;

KEEL_INLINE pipe_next pipe_next_of(int exists, const float *h, const float *y, int stream)
{
    pipe_next n = {NULL, NULL};
    if (exists && !(stream && PIPE_ALIGNED(y) && (!h || PIPE_ALIGNED(h)))) {
        n.h = h;
        n.y = y;
    }
    return n;
}

/* Whether a fused forward of rows x dim (x spanning bytes) runs its rows through the pipeline
 * (the caller also needs dim <= BUF_FLOATS). Beyond KEEL_PREFETCH_ABOVE always; from
 * PIPE_FWD_FROM bytes of x (the four rows x, r, h, y then fill L2) for rows of PIPE_FWD_MIN_DIM
 * floats or more, because there the outputs' lines usually come from L3 or memory and the
 * pipeline fetches them ahead while a row-at-a-time loop stalls on them. Measured, 1 thread,
 * keel bench (outputs out of cache) against keel_profile_loop (all in cache), add+ln / add+rms:
 * 256x1024 0.75 / 0.77 -> 1.03 / 1.05 of the floor, in cache 145 -> 136 / 131 -> 134 us;
 * 4096x64 0.96 / 0.64 -> 0.99 / 1.07; 1024x512 0.65 / 0.64 -> 0.96 / 1.00; 128x2048 0.62 / 0.72
 * -> 0.84 / 0.94, in cache 162 -> 153 / 133 -> 142 us. Smaller calls stay in L2, where the
 * pipeline's prefetches only cost (64x1024 in cache: 19.7 -> 23.9 / 12.5 -> 18.2 us); rows of
 * 16 floats lose either way (4096x16: 0.38 / 0.64 -> 0.35 / 0.56). */
/* Whether the call's rows go in batches (a path that has them: PIPE_BATCH), at every size: a
 * row at a time through the pipeline they paid their divisions and square root alone. keel
 * bench, 1 thread, add+ln / add+rms fwd, fraction of the floor: 65536x16 0.50 / 0.78 -> 0.92 /
 * 0.92, 262144x16 (streamed) 0.59 / 0.93 -> 1.12 / 1.10, 131072x8 0.25 / 0.41 -> 0.56 / 0.78;
 * KEEL_ISA=avx2 65536x16 0.34 / 0.64 -> 0.90 / 0.91. */
KEEL_INLINE int pipe_batches_take(size_t rows, size_t dim)
{
#ifdef PIPE_BATCH
    return dim <= BATCH_TAKE_MAX && rows >= PIPE_BATCH;
#else
    (void)rows;
    (void)dim;
    return 0;
#endif
}

/* the rows beyond the batches (BATCH_TAKE_MAX, 48 floats on AVX-512): 4681x56, add+ln / post /
 * add+rms, a row at a time 0.83 / 0.63 / 0.75 -> pipelined 0.90 / 0.74 / 0.98 (AVX2 0.68 / 0.51
 * / 0.81 -> 0.68 / 0.51 / 0.92) */
#define PIPE_FWD_MIN_DIM 49
#define PIPE_FWD_FROM ((size_t)512 << 10)
KEEL_INLINE int pipe_fwd_wanted(size_t rows, size_t dim)
{
    if (pipe_batches_take(rows, dim))
        return 0;
    const size_t bytes = rows * dim * sizeof(float);
    return bytes > KEEL_PREFETCH_ABOVE || (dim >= PIPE_FWD_MIN_DIM && bytes >= PIPE_FWD_FROM);
}

/* Row r of a forward that goes a row at a time: its residual row, the next row's x and r to
 * prefetch (its own at the last row), its outputs and whether they stream. */
typedef struct pipe_one {
    PIPE_ROW w;
    const float *pfx, *pfr;
    float *h, *y;
    int more, nt;
} pipe_one;

KEEL_INLINE pipe_one pipe_one_of(const keel_f32_res *res, size_t r, size_t rows, float *h,
                                 size_t hs, float *y, size_t ys, int stream)
{
    pipe_one o;
    o.w = PIPE_ROW_OF(res, r);
    o.more = r + 1 < rows;
    o.pfx = o.more ? o.w.x + res->x_stride : o.w.x;
    o.pfr = o.more ? o.w.r + res->r_stride : o.w.r;
    o.h = h ? h + r * hs : NULL;
    o.y = y + r * ys;
    o.nt = stream && PIPE_ALIGNED(o.y) && (!h || PIPE_ALIGNED(o.h));
    return o;
}

#define PIPE_GROUP 4
#define PIPE_GROUP_BELOW 64 /* the rows' buffers: PIPE_GROUP of this many floats */
#define PIPE_LN_GROUP_MAX 32
#define PIPE_RMS_GROUP_MAX 16

/* In a sweep's step at j (full steps): the next rows' lines at j. */
KEEL_INLINE void pipe_next_fetch(const pipe_next *n, size_t j)
{
    if (n->y) {
        PIPE_PF(n->y + j);
        if (n->h)
            PIPE_PF(n->h + j);
    }
}
#endif

#ifdef PIPE_LAYERNORM
/* LayerNorm, three rows: sweep t reads row t (c), centres row t - 1 (b) and writes row t - 2
 * (a); row i lives in buffer i % nbuf of bufs (three of BUF_FLOATS; dim fits). A call that
 * streams shares a buffer between rows a and c (nbuf 2; pipe_sweep reads row a's h at j before
 * it stores row c's there): one buffer row less to keep between L1 and L2 in a sweep. keel bench
 * --threads 1, fraction of the floor, medians of 5 runs alternating, three buffers -> two:
 * 4096x4096 add+ln 0.92 -> 0.94, post-norm 0.93 -> 0.96, add+rms (one buffer instead of two)
 * 0.88 -> 0.98; 16384x8192 (3 runs) add+ln 0.94 -> 0.96, add+rms 0.92 -> 0.94; 4096x768 and
 * 4096x1024 (streamed, in L3) the same within the noise. Calls in cache keep them apart: shared
 * there, the in-cache sweeps ran 7-10% slower (keel_profile_loop 32x4096 addrmsf 56-58 -> 60-71
 * us, addlnf 63-73 -> 71-81 us). */
KEEL_INLINE void fwd_rows_piped(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                size_t hs, float *y, size_t ys, const float *gamma,
                                const float *beta, float eps, float *mean, float *rstd, int stream,
                                float *bufs, int hl, int hb, int hg, int hbe, int hh)
{
    double mean_b = 0.0, mean_a = 0.0;
    float rs_a = 0.0f;
    int streamed = 0;
    const size_t nbuf = stream ? 2 : 3;
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
        const float *ha = bufs + (a % nbuf) * BUF_FLOATS, *hbuf = bufs + (b % nbuf) * BUF_FLOATS;
        float *hc = bufs + (t % nbuf) * BUF_FLOATS;
        const size_t nb = do_cen ? b : 0;
        const pipe_next nx = pipe_next_of(do_cen, hh ? h + nb * hs : NULL, y + nb * ys, stream);
        double cen = 0.0, sum = 0.0;
        if (do_sum && do_cen && do_out) /* every sweep but the first two and the last two */
            pipe_sweep(dim, 1, &o, ha, 1, hbuf, mean_b, &cen, 1, &wc, hc, &sum, gamma, beta, hl,
                       hb, hg, hbe, hh, &nx);
        else
            pipe_sweep(dim, do_out, &o, ha, do_cen, hbuf, mean_b, &cen, do_sum, &wc, hc, &sum,
                       gamma, beta, hl, hb, hg, hbe, hh, &nx);
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

/* One row: statistics, then h and y (the kernel file's h_sum, h_centred, out_row_of and
 * out_sweep). hl, hb, hg, hbe, hh: lambda, bias, gamma, beta, h stored (constants in every
 * instantiation). buf: BUF_FLOATS floats, used when dim fits. */
KEEL_INLINE void fwd_row(const PIPE_ROW *w, size_t dim, float *h, float *y, const float *gamma,
                         const float *beta, float eps, float *mean_out, float *rstd_out, int pf,
                         const float *pfx, const float *pfr, int nt, float *buf, int hl, int hb,
                         int hg, int hbe, int hh)
{
    const float *hv = dim <= BUF_FLOATS ? buf : NULL; /* after the first sweep */
    const double mean_d = keel_ln_mean(h_sum(w, NULL, hv ? buf : NULL, dim, hl, hb), dim);
    const float rs = keel_ln_rstd(h_centred(w, hv, dim, mean_d, pf, pfx, pfr, hl, hb), dim, eps);
    const out_row o = out_row_of(h, y, mean_d, rs, nt);
    out_sweep(&o, w, hv, dim, gamma, beta, hl, hb, hg, hbe, hh);
    if (mean_out)
        *mean_out = (float)mean_d;
    if (rstd_out)
        *rstd_out = rs;
}

/* Short rows go PIPE_GROUP at a time (fwd_group), each stage of the group's rows before the
 * next stage (the sums, the means, the centred sums, the rstds, the outputs): the rows' chains
 * are independent, and issued side by side their latencies (two reductions, three divisions and
 * a square root a LayerNorm row) overlap. Each row's arithmetic is fwd_row's. Not for calls
 * that stream. Measured, 1 thread, one row at a time -> in groups of 4 (8 measured no better):
 * keel_profile_loop (all in cache) add+ln 4096x16 66-72 -> 45-49 us, 4096x32 92 -> 70 us,
 * add+rms 4096x16 36-39 -> 27-30 us; keel bench (outputs out of cache), fraction of the floor,
 * add+ln 4096x16 0.41 -> 0.57, 4096x32 0.71 -> 0.80, but 4096x48 0.92 -> 0.82; add+rms 4096x16
 * 0.67 -> 0.81, but 4096x32 0.80 -> 0.63. Hence LayerNorm rows of up to 32 floats, RMSNorm rows
 * of up to 16. */
KEEL_INLINE void fwd_group(size_t r, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                           float *y, size_t ys, const float *gamma, const float *beta, float eps,
                           float *mean, float *rstd, float *buf, int hl, int hb, int hg, int hbe,
                           int hh)
{
    PIPE_ROW w[PIPE_GROUP];
    double m[PIPE_GROUP], c[PIPE_GROUP];
    float rs[PIPE_GROUP];
    for (int i = 0; i < PIPE_GROUP; i++) {
        w[i] = PIPE_ROW_OF(res, r + (size_t)i);
        m[i] = h_sum(&w[i], NULL, buf + i * PIPE_GROUP_BELOW, dim, hl, hb);
    }
    for (int i = 0; i < PIPE_GROUP; i++)
        m[i] = keel_ln_mean(m[i], dim);
    for (int i = 0; i < PIPE_GROUP; i++)
        c[i] = h_centred(&w[i], buf + i * PIPE_GROUP_BELOW, dim, m[i], 0, NULL, NULL, hl, hb);
    for (int i = 0; i < PIPE_GROUP; i++)
        rs[i] = keel_ln_rstd(c[i], dim, eps);
    for (int i = 0; i < PIPE_GROUP; i++) {
        const size_t ri = r + (size_t)i;
        const out_row o = out_row_of(hh ? h + ri * hs : NULL, y + ri * ys, m[i], rs[i], 0);
        out_sweep(&o, &w[i], buf + i * PIPE_GROUP_BELOW, dim, gamma, beta, hl, hb, hg, hbe, hh);
        if (mean)
            mean[ri] = (float)m[i];
        if (rstd)
            rstd[ri] = rs[i];
    }
}

#ifdef PIPE_BATCH
#include "add_norm_batches.h"
#endif

/* The rows of a call: through the pipeline (pipe_fwd_wanted), else one at a time (the kernel
 * file's fwd_row; beyond KEEL_PREFETCH_ABOVE the next row's x and r prefetched meanwhile), rows
 * of up to BATCH_TAKE_MAX floats in batches where the path has them (fwd_batches; the rows
 * left over and the other short rows of a call that does not stream in groups, fwd_group).
 * Outputs of more than PIPE_STREAM_ABOVE bytes streamed. */
KEEL_INLINE void fwd_rows(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                          float *y, size_t ys, const float *gamma, const float *beta, float eps,
                          float *mean, float *rstd, int hl, int hb, int hg, int hbe, int hh)
{
    float buf[3 * BUF_FLOATS] __attribute__((aligned(64)));
    const size_t bytes = rows * dim * sizeof(float);
    const int pf = bytes > KEEL_PREFETCH_ABOVE, stream = (hh ? 2 : 1) * bytes > PIPE_STREAM_ABOVE;
    if (pipe_fwd_wanted(rows, dim) && dim <= BUF_FLOATS) {
        fwd_rows_piped(rows, dim, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, stream, buf, hl,
                       hb, hg, hbe, hh);
        return;
    }
    int streamed = 0;
    size_t r = 0;
#ifdef PIPE_BATCH
    if (pipe_batches_take(rows, dim)) {
        streamed |= fwd_batches(rows / PIPE_BATCH, dim, res, h, hs, y, ys, gamma, beta, eps, mean,
                                rstd, stream, buf, hl, hb, hg, hbe, hh, 0);
        r = rows / PIPE_BATCH * PIPE_BATCH;
    }
#endif
    if (dim <= PIPE_LN_GROUP_MAX && !stream)
        for (; r + PIPE_GROUP <= rows; r += PIPE_GROUP)
            fwd_group(r, dim, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, buf, hl, hb, hg, hbe,
                      hh);
    for (; r < rows; r++) {
        const pipe_one o = pipe_one_of(res, r, rows, hh ? h : NULL, hs, y, ys, stream);
        streamed |= o.nt;
        fwd_row(&o.w, dim, o.h, o.y, gamma, beta, eps, mean ? mean + r : NULL,
                rstd ? rstd + r : NULL, pf && o.more, o.pfx, o.pfr, o.nt, buf, hl, hb, hg, hbe, hh);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* One instance of fwd_rows for each combination of lambda, bias, gamma, beta, h (constants),
 * and the kernel (named PIPE_FWD_ENTRY by the kernel file) that picks it. */
typedef void (*fwd_fn)(size_t, size_t, const keel_f32_res *, float *, size_t, float *, size_t,
                       const float *, const float *, float, float *, float *);
#define FWD_VARIANT(i)                                                                             \
    static void fwd_##i(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,    \
                        float *y, size_t ys, const float *gamma, const float *beta, float eps,    \
                        float *mean, float *rstd)                                                  \
    {                                                                                              \
        fwd_rows(rows, dim, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, (i) & 1,              \
                 ((i) >> 1) & 1, ((i) >> 2) & 1, ((i) >> 3) & 1, ((i) >> 4) & 1);                 \
    }
KEEL_EACH32(FWD_VARIANT)
#undef FWD_VARIANT
static const fwd_fn fwd_table[32] = {KEEL_LIST32(fwd_)};

void PIPE_FWD_ENTRY(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t h_stride,
                    float *y, size_t y_stride, const float *gamma, const float *beta, float eps,
                    float *mean, float *rstd)
{
    const int i = (res->lambda != NULL) | (res->bias != NULL) << 1 | (gamma != NULL) << 2 |
                  (beta != NULL) << 3 | (h != NULL) << 4;
    fwd_table[i](rows, dim, res, h, h_stride, y, y_stride, gamma, beta, eps, mean, rstd);
}
#undef PIPE_LAYERNORM
#endif

#ifdef PIPE_RMSNORM
/* RMSNorm, two rows: sweep t reads row t into buffer t % nbuf with R(h * h) and writes row
 * t - 1 (two buffers of BUF_FLOATS; dim fits); a call that streams uses one (nbuf 1, as the
 * LayerNorm part's rows a and c). */
KEEL_INLINE void fwd_rows_piped(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                size_t hs, float *y, size_t ys, const float *gamma, float eps,
                                float *rstd, int stream, float *bufs, int hl, int hb, int hg, int hh)
{
    float rs_a = 0.0f;
    int streamed = 0;
    const size_t nbuf = stream ? 1 : 2;
    for (size_t t = 0; t < rows + 1; t++) {
        const int do_sum = t < rows, do_out = t >= 1;
        const size_t a = t - 1;
        float *hr = do_out && hh ? h + a * hs : NULL, *yr = do_out ? y + a * ys : NULL;
        const int nt = do_out && stream && PIPE_ALIGNED(yr) && (!hh || PIPE_ALIGNED(hr));
        streamed |= nt;
        const PIPE_ROW wc = PIPE_ROW_OF(res, do_sum ? t : 0);
        const float *ha = bufs + (a % nbuf) * BUF_FLOATS;
        float *hc = bufs + (t % nbuf) * BUF_FLOATS;
        const size_t nc = do_sum ? t : 0;
        const pipe_next nx = pipe_next_of(do_sum, hh ? h + nc * hs : NULL, y + nc * ys, stream);
        double ss = 0.0;
        if (do_sum && do_out) /* every sweep but the first and the last */
            pipe_sweep(dim, 1, ha, hr, yr, rs_a, nt, 1, &wc, hc, &ss, gamma, hl, hb, hg, hh, &nx);
        else
            pipe_sweep(dim, do_out, ha, hr, yr, rs_a, nt, do_sum, &wc, hc, &ss, gamma, hl, hb, hg,
                       hh, &nx);
        if (do_sum) {
            rs_a = keel_rms_rstd(ss, dim, eps);
            if (rstd)
                rstd[t] = rs_a;
        }
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* One row: R(h * h), then h and y (the kernel file's h_sumsq and out_sweep). */
KEEL_INLINE void fwd_row(const PIPE_ROW *w, size_t dim, float *h, float *y, const float *gamma,
                         float eps, float *rstd_out, int pf, const float *pfx, const float *pfr,
                         int nt, float *buf, int hl, int hb, int hg, int hh)
{
    const float *hv = dim <= BUF_FLOATS ? buf : NULL;
    const float rs = keel_rms_rstd(h_sumsq(w, NULL, hv ? buf : NULL, dim, hl, hb), dim, eps);
    out_sweep(h, y, w, hv, dim, rs, nt, pf, pfx, pfr, gamma, hl, hb, hg, hh);
    if (rstd_out)
        *rstd_out = rs;
}

/* Short rows in groups, as the LayerNorm part's fwd_group. */
KEEL_INLINE void fwd_group(size_t r, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                           float *y, size_t ys, const float *gamma, float eps, float *rstd,
                           float *buf, int hl, int hb, int hg, int hh)
{
    PIPE_ROW w[PIPE_GROUP];
    float rs[PIPE_GROUP];
    for (int i = 0; i < PIPE_GROUP; i++) {
        w[i] = PIPE_ROW_OF(res, r + (size_t)i);
        rs[i] = keel_rms_rstd(h_sumsq(&w[i], NULL, buf + i * PIPE_GROUP_BELOW, dim, hl, hb), dim, eps);
    }
    for (int i = 0; i < PIPE_GROUP; i++) {
        const size_t ri = r + (size_t)i;
        out_sweep(hh ? h + ri * hs : NULL, y + ri * ys, &w[i], buf + i * PIPE_GROUP_BELOW, dim,
                  rs[i], 0, 0, NULL, NULL, gamma, hl, hb, hg, hh);
        if (rstd)
            rstd[ri] = rs[i];
    }
}

#ifdef PIPE_BATCH
#include "add_norm_batches.h"
#endif

/* The rows of a call, as the LayerNorm part's fwd_rows. */
KEEL_INLINE void fwd_rows(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                          float *y, size_t ys, const float *gamma, float eps, float *rstd, int hl,
                          int hb, int hg, int hh)
{
    float buf[2 * BUF_FLOATS] __attribute__((aligned(64)));
    const size_t bytes = rows * dim * sizeof(float);
    const int pf = bytes > KEEL_PREFETCH_ABOVE, stream = (hh ? 2 : 1) * bytes > PIPE_STREAM_ABOVE;
    if (pipe_fwd_wanted(rows, dim) && dim <= BUF_FLOATS) {
        fwd_rows_piped(rows, dim, res, h, hs, y, ys, gamma, eps, rstd, stream, buf, hl, hb, hg, hh);
        return;
    }
    int streamed = 0;
    size_t r = 0;
#ifdef PIPE_BATCH
    if (pipe_batches_take(rows, dim)) {
        streamed |= fwd_batches(rows / PIPE_BATCH, dim, res, h, hs, y, ys, gamma, NULL, eps, NULL,
                                rstd, stream, buf, hl, hb, hg, 0, hh, 0);
        r = rows / PIPE_BATCH * PIPE_BATCH;
    }
#endif
    if (dim <= PIPE_RMS_GROUP_MAX && !stream)
        for (; r + PIPE_GROUP <= rows; r += PIPE_GROUP)
            fwd_group(r, dim, res, h, hs, y, ys, gamma, eps, rstd, buf, hl, hb, hg, hh);
    for (; r < rows; r++) {
        const pipe_one o = pipe_one_of(res, r, rows, hh ? h : NULL, hs, y, ys, stream);
        streamed |= o.nt;
        fwd_row(&o.w, dim, o.h, o.y, gamma, eps, rstd ? rstd + r : NULL, pf && o.more, o.pfx,
                o.pfr, o.nt, buf, hl, hb, hg, hh);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* One instance for each combination of lambda, bias, gamma, h, and the kernel PIPE_FWD_ENTRY. */
typedef void (*fwd_fn)(size_t, size_t, const keel_f32_res *, float *, size_t, float *, size_t,
                       const float *, float, float *);
#define FWD_VARIANT(i)                                                                             \
    static void fwd_##i(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,    \
                        float *y, size_t ys, const float *gamma, float eps, float *rstd)           \
    {                                                                                              \
        fwd_rows(rows, dim, res, h, hs, y, ys, gamma, eps, rstd, (i) & 1, ((i) >> 1) & 1,          \
                 ((i) >> 2) & 1, ((i) >> 3) & 1);                                                  \
    }
KEEL_EACH16(FWD_VARIANT)
#undef FWD_VARIANT
static const fwd_fn fwd_table[16] = {KEEL_LIST16(fwd_)};

void PIPE_FWD_ENTRY(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t h_stride,
                    float *y, size_t y_stride, const float *gamma, float eps, float *rstd)
{
    const int i = (res->lambda != NULL) | (res->bias != NULL) << 1 | (gamma != NULL) << 2 |
                  (h != NULL) << 3;
    fwd_table[i](rows, dim, res, h, h_stride, y, y_stride, gamma, eps, rstd);
}
#undef PIPE_RMSNORM
#endif

#ifdef PIPE_BACKWARD
/* Backward, two rows, statistics given (mean NULL: RMSNorm): sweep t runs row t's sweep 1
 * (h, or x and r, and dy read from memory PIPE_AHEAD behind their prefetches) and row t - 1's
 * sweep 2 (its h and dy in cache, dh from memory, dx and dr written). */
KEEL_INLINE void bwd_rows_piped(const bwd_flags f, size_t rows, size_t dim, const float *dy,
                                size_t dys, const float *dh, size_t dhs, const keel_f32_res *res,
                                const float *h, size_t hs, const float *mean, const float *rstd,
                                const float *gamma, const keel_f32_res_grads *out)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    PIPE_STEPS(dim);
    float *const parts[4] = {out->parts[0], out->parts[1], out->parts[2], out->parts[3]};
    int streamed = 0;
    s2_row c = s2_zero();
    for (size_t t = 0; t <= rows; t++) {
        const int do1 = t < rows, do2 = t >= 1;
        const PIPE_BWD_ROW p1 = PIPE_BWD_ROW_OF(do1 ? t : 0, dy, dys, f.hdh ? dh : NULL, dhs, res,
                                                f.hh ? h : NULL, hs, out);
        const PIPE_BWD_ROW p2 = PIPE_BWD_ROW_OF(do2 ? t - 1 : 0, dy, dys, f.hdh ? dh : NULL, dhs,
                                                res, f.hh ? h : NULL, hs, out);
        const int nt = do2 && PIPE_BWD_NT(out, f.acc, t - 1);
        streamed |= nt;
        const float m = do1 && mean ? mean[t] : 0.0f;
        s1_acc a = s1_begin(m);
        for (size_t j = 0; j < dim; j += 16) {
            const PIPE_STEP s = PIPE_STEP_AT(j);
            if (do1) {
                if (s.full) {
                    PIPE_PF(p1.dy + j + PIPE_AHEAD);
                    if (f.hh) {
                        PIPE_PF(p1.hv + j + PIPE_AHEAD);
                    } else {
                        PIPE_PF(p1.w.x + j + PIPE_AHEAD);
                        PIPE_PF(p1.w.r + j + PIPE_AHEAD);
                    }
                }
                s1_step(f, want_g, &a, &p1, j, s, gamma);
            }
            if (do2) {
                if (s.full && f.hdh)
                    PIPE_PF(p2.dh + j + PIPE_AHEAD);
                /* outputs stored normally (not streamed, not over dh): fetched ahead too
                 * (keel_profile_loop addlnb2, dx apart from dh: 1024x768 413-431 -> 345 us,
                 * 4096x1000 1.99-2.04 -> 1.58-1.61 ms) */
                if (s.full && !nt) {
                    if (f.hdx && p2.dx != p2.dh)
                        PIPE_PF(p2.dx + j + PIPE_AHEAD);
                    if (f.hdr && p2.dr != p2.dh)
                        PIPE_PF(p2.dr + j + PIPE_AHEAD);
                }
                s2_step(f, want_g, &c, &p2, j, s, gamma, parts, nt);
            }
        }
        if (do1)
            c = s1_end(&a, dim, m, rstd[t]);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}
#undef PIPE_BACKWARD
#endif
