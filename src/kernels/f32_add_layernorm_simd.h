/* Fused residual add + LayerNorm, float32, written once over keel's lanes (lanes__<isa>.h, the
 * residual of residual_simd.h) and compiled per ISA by f32_add_layernorm__avx2.c, __avx512.c and
 * __neon.c: exactly the bits of f32_add_layernorm__scalar.c (kernels.h's residual, then the
 * LayerNorm of kernels.h on the float h), 16 floats at a time; reductions in kernels.h's double
 * lanes, elementwise work in float, one rounding per operation as written (no FMA). The
 * backward is add_norm_simd.h's.
 *
 * Speed (the forward is meant to run at the copy floor of its bytes: read x and r, write h and
 * y): three sweeps a row (sum, centred sum, output) of which only the first reads memory; h is
 * kept in a buffer on the stack (L1/L2) for the other two (rows longer than the buffer compute h
 * again from x and r). Small calls, one row at a time; rows of up to KB_TAKE_MAX floats in
 * batches at every size where the path has them (row_batches_simd.h). Calls that fill L2 (pipe_fwd_wanted in add_norm_simd.h) go through
 * a pipeline that reads one row while it writes others (ln_fwd_piped), and large outputs are
 * streamed. Include after lanes__<isa>.h. */
#ifndef KEEL_KERNELS_F32_ADD_LAYERNORM_SIMD_H
#define KEEL_KERNELS_F32_ADD_LAYERNORM_SIMD_H

#include "add_norm_simd.h"
#include "row_batches_simd.h"

/* The output sweep's constants of one row: where h and y go, the mean as a float hi + lo pair
 * (see f32_layernorm__scalar.c), rstd, and whether the stores stream. */
typedef struct out_row {
    float *h, *y;
    kr_f16 vh, vl, vr;
    int nt;
} out_row;

KEEL_INLINE out_row out_row_of(float *h, float *y, double mean_d, float rs, int nt)
{
    out_row o;
    const float hi = (float)mean_d;
    o.h = h;
    o.y = y;
    o.vh = kr_set1(hi);
    o.vl = kr_set1((float)(mean_d - (double)hi));
    o.vr = kr_set1(rs);
    o.nt = nt;
    return o;
}

/* Step s at j of the output sweep; v: h there. */
KEEL_INLINE void ln_out_step(const out_row *o, size_t j, kr_f16 v, kstep s, const float *gamma,
                             const float *beta, int hg, int hbe, int hh)
{
    kr_f16 t = kr_mul(kr_sub(kr_sub(v, o->vh), o->vl), o->vr);
    if (hg)
        t = kr_mul(t, ks_load(gamma + j, s));
    if (hbe)
        t = kr_add(t, ks_load(beta + j, s));
    if (hh)
        ks_store(o->h + j, v, s, o->nt);
    ks_store(o->y + j, t, s, o->nt);
}

/* The output sweep of one row (h from hv, or recomputed from w). */
KEEL_INLINE void ln_out_sweep(const out_row *o, const res_row *w, const float *hv, size_t dim,
                              const float *gamma, const float *beta, int hl, int hb, int hg,
                              int hbe, int hh)
{
    KS_STEPS(dim);
    KS_FOR(dim, {
        ln_out_step(o, j, h_at(w, hv, j, s, hl, hb), s, gamma, beta, hg, hbe, hh);
    });
}

/* Rows from beyond L2 (pipe_fwd_wanted) go through a pipeline of three rows, one sweep over j
 * doing three rows' work: row c's first sweep (h = x + r from memory, into its buffer, and R(h);
 * the loads run KR_PIPE_AHEAD floats behind their prefetches), row b's centred sweep (its
 * buffer, in cache) and row a's output sweep (its buffer to h and y, streamed to memory). The
 * memory then sees reads and writes together all the time, as in a copy, and the statistics'
 * in-cache work hides under them. Measured (keel_profile_loop addlnf 4096 4096, 1 thread):
 * 17.2 ms one row at a time with the next row prefetched during its second sweep; 14.8 ms with
 * a two-row pipeline (first and output sweeps together, the centred sweep alone); 12.3-13.5 ms
 * with all three together; the copy floor of the same bytes 11.4-11.8 ms. Each row's
 * arithmetic is ln_fwd_row's: the same bits. */

/* One sweep of the pipeline; each stage optional (do_*). o, ha: row a's outputs and buffer;
 * hbuf, mean_b: row b's buffer and mean, *centred its R((h - mean)^2); wc, hc: row c's inputs
 * and buffer, *sum its R(h). */
KEEL_INLINE void ln_pipe_sweep(size_t dim, int do_out, const out_row *o, const float *ha,
                               int do_cen, const float *hbuf, double mean_b, double *centred,
                               int do_sum, const res_row *wc, float *hc, double *sum,
                               const float *gamma, const float *beta, int hl, int hb, int hg,
                               int hbe, int hh, const pipe_next *nx)
{
    KS_STEPS(dim);
    kr_d16 sa = kr_dzero(), ca = kr_dzero();
    KS_FOR(dim, {
        if (s.full)
            pipe_next_fetch(nx, j);
        /* row a's h, read before row c's may be stored over it (ln_fwd_piped's nbuf) */
        const kr_f16 va = do_out ? kr_load(ha + j) : kr_set1(0.0f);
        if (do_sum)
            sa = ks_dadd(sa, kr_widen(h_piped(wc, hc, j, s, hl, hb)), s);
        if (do_cen) {
            const kr_d16 t = kr_dsub(kr_widen(kr_load(hbuf + j)), kr_dset1(mean_b));
            ca = ks_dadd(ca, kr_dmul(t, t), s);
        }
        if (do_out)
            ln_out_step(o, j, va, s, gamma, beta, hg, hbe, hh);
    });
    if (do_sum)
        *sum = kr_reduce16(sa);
    if (do_cen)
        *centred = kr_reduce16(ca);
}

/* The pipeline: sweep t reads row t (c), centres row t - 1 (b) and writes row t - 2 (a); row i
 * lives in buffer i % nbuf of bufs (three of BUF_FLOATS; dim fits). A call that streams shares a
 * buffer between rows a and c (nbuf 2; ln_pipe_sweep reads row a's h at j before it stores row
 * c's there): one buffer row less to keep between L1 and L2 in a sweep. keel bench --threads 1,
 * fraction of the floor, medians of 5 runs alternating, three buffers -> two: 4096x4096 add+ln
 * 0.92 -> 0.94, post-norm 0.93 -> 0.96; 16384x8192 (3 runs) add+ln 0.94 -> 0.96; 4096x768 and
 * 4096x1024 (streamed, in L3) the same within the noise. Calls in cache keep them apart: shared
 * there, the in-cache sweeps ran 7-10% slower (keel_profile_loop 32x4096 addlnf 63-73 -> 71-81
 * us). */
KEEL_INLINE void ln_fwd_piped(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                              float *y, size_t ys, const float *gamma, const float *beta, float eps,
                              float *mean, float *rstd, int stream, float *bufs, int hl, int hb,
                              int hg, int hbe, int hh)
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
            const int nt = stream && kr_streamable(yr) && (!hh || kr_streamable(hr));
            streamed |= nt;
            o = out_row_of(hr, yr, mean_a, rs_a, nt);
        }
        const res_row wc = res_row_of(res, do_sum ? t : 0);
        const float *ha = bufs + (a % nbuf) * BUF_FLOATS, *hbuf = bufs + (b % nbuf) * BUF_FLOATS;
        float *hc = bufs + (t % nbuf) * BUF_FLOATS;
        const size_t nb = do_cen ? b : 0;
        const pipe_next nx = pipe_next_of(do_cen, hh ? h + nb * hs : NULL, y + nb * ys, stream);
        double cen = 0.0, sum = 0.0;
        if (do_sum && do_cen && do_out) /* every sweep but the first two and the last two */
            ln_pipe_sweep(dim, 1, &o, ha, 1, hbuf, mean_b, &cen, 1, &wc, hc, &sum, gamma, beta, hl,
                          hb, hg, hbe, hh, &nx);
        else
            ln_pipe_sweep(dim, do_out, &o, ha, do_cen, hbuf, mean_b, &cen, do_sum, &wc, hc, &sum,
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
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

/* One row: statistics, then h and y. hl, hb, hg, hbe, hh: lambda, bias, gamma, beta, h stored
 * (constants in every instance). buf: BUF_FLOATS floats, used when dim fits; pf: the next row's
 * x and r (pfx, pfr) fetched during the centred sweep. */
KEEL_INLINE void ln_fwd_row(const res_row *w, size_t dim, float *h, float *y, const float *gamma,
                            const float *beta, float eps, float *mean_out, float *rstd_out, int pf,
                            const float *pfx, const float *pfr, int nt, float *buf, int hl, int hb,
                            int hg, int hbe, int hh)
{
    const float *hv = dim <= BUF_FLOATS ? buf : NULL; /* after the first sweep */
    const double mean_d = keel_ln_mean(h_sum(w, NULL, hv ? buf : NULL, dim, hl, hb), dim);
    const float rs = keel_ln_rstd(h_centred(w, hv, dim, mean_d, pf, pfx, pfr, hl, hb), dim, eps);
    const out_row o = out_row_of(h, y, mean_d, rs, nt);
    ln_out_sweep(&o, w, hv, dim, gamma, beta, hl, hb, hg, hbe, hh);
    if (mean_out)
        *mean_out = (float)mean_d;
    if (rstd_out)
        *rstd_out = rs;
}

/* Short rows PIPE_GROUP at a time (add_norm_simd.h), each stage of the group's rows before the
 * next stage (the sums, the means, the centred sums, the rstds, the outputs). */
KEEL_INLINE void ln_fwd_group(size_t r, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                              float *y, size_t ys, const float *gamma, const float *beta, float eps,
                              float *mean, float *rstd, float *buf, int hl, int hb, int hg, int hbe,
                              int hh)
{
    res_row w[PIPE_GROUP];
    double m[PIPE_GROUP], c[PIPE_GROUP];
    float rs[PIPE_GROUP];
    for (int i = 0; i < PIPE_GROUP; i++) {
        w[i] = res_row_of(res, r + (size_t)i);
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
        ln_out_sweep(&o, &w[i], buf + i * PIPE_GROUP_BELOW, dim, gamma, beta, hl, hb, hg, hbe, hh);
        if (mean)
            mean[ri] = (float)m[i];
        if (rstd)
            rstd[ri] = rs[i];
    }
}

/* The rows of a call: through the pipeline (pipe_fwd_wanted), else one at a time (beyond
 * KEEL_PREFETCH_ABOVE the next row's x and r prefetched meanwhile), rows of up to KB_TAKE_MAX
 * floats in batches where the path has them (fwd_batches; the rows left over and the other
 * short rows of a call that does not stream in groups). Outputs of more than
 * ADD_NORM_STREAM_ABOVE bytes streamed. */
KEEL_INLINE void ln_fwd_rows(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                             float *y, size_t ys, const float *gamma, const float *beta, float eps,
                             float *mean, float *rstd, int hl, int hb, int hg, int hbe, int hh)
{
    float buf[3 * BUF_FLOATS] __attribute__((aligned(64)));
    const size_t bytes = rows * dim * sizeof(float);
    const int pf = bytes > KEEL_PREFETCH_ABOVE;
    const int stream = (hh ? 2 : 1) * bytes > ADD_NORM_STREAM_ABOVE;
    if (pipe_fwd_wanted(rows, dim) && dim <= BUF_FLOATS) {
        ln_fwd_piped(rows, dim, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, stream, buf, hl,
                     hb, hg, hbe, hh);
        return;
    }
    int streamed = 0;
    size_t r = 0;
#ifdef KB_ROWS
    if (pipe_batches_take(rows, dim)) {
        streamed |= fwd_batches(rows / KB_ROWS, dim, res, h, hs, y, ys, gamma, beta, eps, mean,
                                rstd, stream, buf, hl, hb, hg, hbe, hh, 0, 0);
        r = rows / KB_ROWS * KB_ROWS;
    }
#endif
    if (dim <= PIPE_LN_GROUP_MAX && !stream)
        for (; r + PIPE_GROUP <= rows; r += PIPE_GROUP)
            ln_fwd_group(r, dim, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, buf, hl, hb, hg,
                         hbe, hh);
    for (; r < rows; r++) {
        const pipe_one o = pipe_one_of(res, r, rows, hh ? h : NULL, hs, y, ys, stream);
        streamed |= o.nt;
        ln_fwd_row(&o.w, dim, o.h, o.y, gamma, beta, eps, mean ? mean + r : NULL,
                   rstd ? rstd + r : NULL, pf && o.more, o.pfx, o.pfr, o.nt, buf, hl, hb, hg, hbe,
                   hh);
    }
    if (streamed)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

/* One instance of ln_fwd_rows for each combination of lambda, bias, gamma, beta, h
 * (constants). */
typedef void (*ln_fwd_fn)(size_t, size_t, const keel_f32_res *, float *, size_t, float *, size_t,
                          const float *, const float *, float, float *, float *);
#define LN_FWD_VARIANT(i)                                                                          \
    static void ln_fwd_##i(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,  \
                           float *y, size_t ys, const float *gamma, const float *beta, float eps,  \
                           float *mean, float *rstd)                                               \
    {                                                                                              \
        ln_fwd_rows(rows, dim, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, (i)&1,             \
                    ((i) >> 1) & 1, ((i) >> 2) & 1, ((i) >> 3) & 1, ((i) >> 4) & 1);               \
    }
KEEL_EACH32(LN_FWD_VARIANT)
#undef LN_FWD_VARIANT
static const ln_fwd_fn ln_fwd_table[32] = {KEEL_LIST32(ln_fwd_)};

static void add_layernorm_fwd(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                              size_t h_stride, float *y, size_t y_stride, const float *gamma,
                              const float *beta, float eps, float *mean, float *rstd)
{
    const int i = (res->lambda != NULL) | (res->bias != NULL) << 1 | (gamma != NULL) << 2 |
                  (beta != NULL) << 3 | (h != NULL) << 4;
    ln_fwd_table[i](rows, dim, res, h, h_stride, y, y_stride, gamma, beta, eps, mean, rstd);
}

static void add_layernorm_bwd(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                              const float *dh, size_t dh_stride, const keel_f32_res *res,
                              const float *h, size_t h_stride, const float *mean, const float *rstd,
                              const float *gamma, float eps, const keel_f32_res_grads *out)
{
    add_norm_bwd(1, rows, dim, dy, dy_stride, dh, dh_stride, res, h, h_stride, mean, rstd, gamma,
                 eps, out);
}

#endif
