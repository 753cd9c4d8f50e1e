/* Fused residual add + RMSNorm, float32, written once over keel's lanes (lanes__<isa>.h, the
 * residual of residual_simd.h) and compiled per ISA by f32_add_rmsnorm__avx2.c, __avx512.c and
 * __neon.c: exactly the bits of f32_add_rmsnorm__scalar.c, 16 floats at a time. The forward's
 * plan is the LayerNorm one's (f32_add_layernorm_simd.h) with two sweeps a row: R(h * h), then
 * h and y; h kept in a buffer after the first; from L2-filling calls a pipeline that reads one
 * row while it writes another; rows of up to KB_TAKE_MAX floats in batches where the path has
 * them (row_batches_simd.h); large outputs streamed. The backward is add_norm_simd.h's. Include after lanes__<isa>.h. */
#ifndef KEEL_KERNELS_F32_ADD_RMSNORM_SIMD_H
#define KEEL_KERNELS_F32_ADD_RMSNORM_SIMD_H

#include "add_norm_simd.h"
#include "row_batches_simd.h"

/* Step s at j of the output sweep; v: h there. */
KEEL_INLINE void rms_out_step(float *h, float *y, size_t j, kr_f16 v, kr_f16 vr, int nt, kstep s,
                              const float *gamma, int hg, int hh)
{
    kr_f16 o = kr_mul(v, vr);
    if (hg)
        o = kr_mul(o, ks_load(gamma + j, s));
    if (hh)
        ks_store(h + j, v, s, nt);
    ks_store(y + j, o, s, nt);
}

/* The output sweep of one row (h from hv, or recomputed from w); pf: the next row's x and r
 * (pfx, pfr) fetched meanwhile (the output sweep is this row's only one in cache). */
KEEL_INLINE void rms_out_sweep(float *h, float *y, const res_row *w, const float *hv, size_t dim,
                               float rs, int nt, int pf, const float *pfx, const float *pfr,
                               const float *gamma, int hl, int hb, int hg, int hh)
{
    KS_STEPS(dim);
    const kr_f16 vr = kr_set1(rs);
    KS_FOR(dim, {
        rms_out_step(h, y, j, h_at(w, hv, j, s, hl, hb), vr, nt, s, gamma, hg, hh);
        if (pf && s.full) {
            kr_prefetch_l1(pfx + j);
            kr_prefetch_l1(pfr + j);
        }
    });
}

/* Rows from beyond L2 (pipe_fwd_wanted) go through a pipeline of two rows: one sweep over j
 * computes row c's h from memory into its buffer with R(h * h) and writes row a's h and y from
 * its buffer, so that the reads and the streamed writes go to memory together (keel_profile_loop
 * addrmsf 4096 4096, 1 thread: 14.3 ms one row at a time, 11.8 ms pipelined, AVX2 14.8-15.0 ->
 * 11.7-11.9 ms; the copy floor of the bytes 11.4-11.8 ms). Each row's arithmetic is
 * rms_fwd_row's: the same bits. */
KEEL_INLINE void rms_pipe_sweep(size_t dim, int do_out, const float *ha, float *h, float *y,
                                float rs, int nt, int do_sum, const res_row *wc, float *hc,
                                double *sumsq, const float *gamma, int hl, int hb, int hg, int hh,
                                const pipe_next *nx)
{
    KS_STEPS(dim);
    const kr_f16 vr = kr_set1(rs);
    kr_d16 acc = kr_dzero();
    KS_FOR(dim, {
        if (s.full)
            pipe_next_fetch(nx, j);
        /* row a's h, read before row c's may be stored over it (rms_fwd_piped's nbuf) */
        const kr_f16 va = do_out ? kr_load(ha + j) : kr_set1(0.0f);
        if (do_sum) {
            const kr_d16 d = kr_widen(h_piped(wc, hc, j, s, hl, hb));
            acc = ks_dadd(acc, kr_dmul(d, d), s);
        }
        if (do_out)
            rms_out_step(h, y, j, va, vr, nt, s, gamma, hg, hh);
    });
    if (do_sum)
        *sumsq = kr_reduce16(acc);
}

/* The pipeline: sweep t reads row t into buffer t % nbuf with R(h * h) and writes row t - 1
 * (two buffers of BUF_FLOATS; dim fits). A call that streams uses one (nbuf 1: rms_pipe_sweep
 * reads row a's h at j before it stores row c's there), one buffer row less to keep between L1
 * and L2 in a sweep: keel bench --threads 1, fraction of the floor, 4096x4096 0.88 -> 0.98,
 * 16384x8192 0.92 -> 0.94. Calls in cache keep them apart: shared there, the in-cache sweeps ran
 * 7-10% slower (keel_profile_loop 32x4096 addrmsf 56-58 -> 60-71 us). */
KEEL_INLINE void rms_fwd_piped(size_t rows, size_t dim, const keel_f32_res *res, float *h,
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
        const int nt = do_out && stream && kr_streamable(yr) && (!hh || kr_streamable(hr));
        streamed |= nt;
        const res_row wc = res_row_of(res, do_sum ? t : 0);
        const float *ha = bufs + (a % nbuf) * BUF_FLOATS;
        float *hc = bufs + (t % nbuf) * BUF_FLOATS;
        const size_t nc = do_sum ? t : 0;
        const pipe_next nx = pipe_next_of(do_sum, hh ? h + nc * hs : NULL, y + nc * ys, stream);
        double ss = 0.0;
        if (do_sum && do_out) /* every sweep but the first and the last */
            rms_pipe_sweep(dim, 1, ha, hr, yr, rs_a, nt, 1, &wc, hc, &ss, gamma, hl, hb, hg, hh,
                           &nx);
        else
            rms_pipe_sweep(dim, do_out, ha, hr, yr, rs_a, nt, do_sum, &wc, hc, &ss, gamma, hl, hb,
                           hg, hh, &nx);
        if (do_sum) {
            rs_a = keel_rms_rstd(ss, dim, eps);
            if (rstd)
                rstd[t] = rs_a;
        }
    }
    if (streamed)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

/* One row: R(h * h), then h and y. buf: BUF_FLOATS floats, used when dim fits. */
KEEL_INLINE void rms_fwd_row(const res_row *w, size_t dim, float *h, float *y, const float *gamma,
                             float eps, float *rstd_out, int pf, const float *pfx, const float *pfr,
                             int nt, float *buf, int hl, int hb, int hg, int hh)
{
    const float *hv = dim <= BUF_FLOATS ? buf : NULL; /* after the first sweep */
    const float rs = keel_rms_rstd(h_sumsq(w, NULL, hv ? buf : NULL, dim, hl, hb), dim, eps);
    rms_out_sweep(h, y, w, hv, dim, rs, nt, pf, pfx, pfr, gamma, hl, hb, hg, hh);
    if (rstd_out)
        *rstd_out = rs;
}

/* Short rows PIPE_GROUP at a time (add_norm_simd.h): the sums of the group, then the outputs. */
KEEL_INLINE void rms_fwd_group(size_t r, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                               float *y, size_t ys, const float *gamma, float eps, float *rstd,
                               float *buf, int hl, int hb, int hg, int hh)
{
    res_row w[PIPE_GROUP];
    float rs[PIPE_GROUP];
    for (int i = 0; i < PIPE_GROUP; i++) {
        w[i] = res_row_of(res, r + (size_t)i);
        rs[i] =
            keel_rms_rstd(h_sumsq(&w[i], NULL, buf + i * PIPE_GROUP_BELOW, dim, hl, hb), dim, eps);
    }
    for (int i = 0; i < PIPE_GROUP; i++) {
        const size_t ri = r + (size_t)i;
        rms_out_sweep(hh ? h + ri * hs : NULL, y + ri * ys, &w[i], buf + i * PIPE_GROUP_BELOW, dim,
                      rs[i], 0, 0, NULL, NULL, gamma, hl, hb, hg, hh);
        if (rstd)
            rstd[ri] = rs[i];
    }
}

/* The rows of a call: through the pipeline (pipe_fwd_wanted), else one at a time (beyond
 * KEEL_PREFETCH_ABOVE the next row's x and r prefetched meanwhile), rows of up to KB_TAKE_MAX
 * floats in batches where the path has them (fwd_batches; the rows left over and the other
 * short rows of a call that does not stream in groups). Outputs of more than
 * ADD_NORM_STREAM_ABOVE bytes streamed. hl, hb, hg, hh: lambda, bias, gamma, h stored
 * (constants in every instance). */
KEEL_INLINE void rms_fwd_rows(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                              float *y, size_t ys, const float *gamma, float eps, float *rstd,
                              int hl, int hb, int hg, int hh)
{
    float buf[2 * BUF_FLOATS] __attribute__((aligned(64)));
    const size_t bytes = rows * dim * sizeof(float);
    const int pf = bytes > KEEL_PREFETCH_ABOVE;
    const int stream = (hh ? 2 : 1) * bytes > ADD_NORM_STREAM_ABOVE;
    if (pipe_fwd_wanted(rows, dim) && dim <= BUF_FLOATS) {
        rms_fwd_piped(rows, dim, res, h, hs, y, ys, gamma, eps, rstd, stream, buf, hl, hb, hg, hh);
        return;
    }
    int streamed = 0;
    size_t r = 0;
#ifdef KB_ROWS
    if (pipe_batches_take(rows, dim)) {
        streamed |= fwd_batches(rows / KB_ROWS, dim, res, h, hs, y, ys, gamma, NULL, eps, NULL,
                                rstd, stream, buf, hl, hb, hg, 0, hh, 0, 1);
        r = rows / KB_ROWS * KB_ROWS;
    }
#endif
    if (dim <= PIPE_RMS_GROUP_MAX && !stream)
        for (; r + PIPE_GROUP <= rows; r += PIPE_GROUP)
            rms_fwd_group(r, dim, res, h, hs, y, ys, gamma, eps, rstd, buf, hl, hb, hg, hh);
    for (; r < rows; r++) {
        const pipe_one o = pipe_one_of(res, r, rows, hh ? h : NULL, hs, y, ys, stream);
        streamed |= o.nt;
        rms_fwd_row(&o.w, dim, o.h, o.y, gamma, eps, rstd ? rstd + r : NULL, pf && o.more, o.pfx,
                    o.pfr, o.nt, buf, hl, hb, hg, hh);
    }
    if (streamed)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

/* One instance of rms_fwd_rows for each combination of lambda, bias, gamma, h (constants). */
typedef void (*rms_fwd_fn)(size_t, size_t, const keel_f32_res *, float *, size_t, float *, size_t,
                           const float *, float, float *);
#define RMS_FWD_VARIANT(i)                                                                         \
    static void rms_fwd_##i(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs, \
                            float *y, size_t ys, const float *gamma, float eps, float *rstd)       \
    {                                                                                              \
        rms_fwd_rows(rows, dim, res, h, hs, y, ys, gamma, eps, rstd, (i)&1, ((i) >> 1) & 1,        \
                     ((i) >> 2) & 1, ((i) >> 3) & 1);                                              \
    }
KEEL_EACH16(RMS_FWD_VARIANT)
#undef RMS_FWD_VARIANT
static const rms_fwd_fn rms_fwd_table[16] = {KEEL_LIST16(rms_fwd_)};

static void add_rmsnorm_fwd(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                            size_t h_stride, float *y, size_t y_stride, const float *gamma,
                            float eps, float *rstd)
{
    const int i =
        (res->lambda != NULL) | (res->bias != NULL) << 1 | (gamma != NULL) << 2 | (h != NULL) << 3;
    rms_fwd_table[i](rows, dim, res, h, h_stride, y, y_stride, gamma, eps, rstd);
}

static void add_rmsnorm_bwd(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                            const float *dh, size_t dh_stride, const keel_f32_res *res,
                            const float *h, size_t h_stride, const float *rstd, const float *gamma,
                            float eps, const keel_f32_res_grads *out)
{
    add_norm_bwd(0, rows, dim, dy, dy_stride, dh, dh_stride, res, h, h_stride, NULL, rstd, gamma,
                 eps, out);
}

#endif
