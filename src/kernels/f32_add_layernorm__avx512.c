/* Fused residual add + LayerNorm, float32, AVX-512: exactly the bits of
 * f32_add_layernorm__scalar.c (kernels.h's residual, then the LayerNorm of kernels.h on the
 * float h), 16 floats at a time. Reductions in the double lanes of simd_lanes__avx512.h,
 * elementwise work in float, one rounding per operation as written (no FMA).
 *
 * Speed (the forward is meant to run at the copy floor of its bytes: read x and r, write h
 * and y): three sweeps a row (sum, centred sum, output) of which only the first reads memory;
 * h is kept in a buffer on the stack (L1/L2) for the other two (rows longer than the buffer
 * compute h again from x and r). Small calls, one row at a time; rows of up to BATCH_TAKE_MAX
 * (48) floats in batches of eight at every size (ln_batch__avx512.h). Calls that fill L2 (and rows of 64
 * floats or more: pipe_fwd_wanted in add_norm_pipe.h) go through a pipeline that reads one row
 * while it writes another (fwd_rows_piped), and large outputs are streamed
 * (residual__avx512.h). */
#include <math.h>



#include "kernels.h"
#include "variants.h"
#include "norm_finish.h"
#include "residual__avx512.h"
#include "ln_batch__avx512.h"
#include "add_norm_pipe.h" /* pipe_next */

/* The prefetch of the next row pays only on rows from beyond L2 (measured on the norms too). */

/* Rows of up to BUF_FLOATS keep h in a buffer on the stack (L1) after the first sweep, so the
 * other sweeps read one array instead of recomputing h from two; longer rows recompute it. */
#define BUF_FLOATS 8192

/* R(h) of one row. hv: the h row to read, or NULL to compute it from w (and store it into buf
 * when buf is not NULL). */
KEEL_INLINE double h_sum(const r512_row *w, const float *hv, float *buf, size_t dim, int hl, int hb)
{
    const size_t full = dim & ~(size_t)15;
    const __mmask16 k = k512_tail16(dim - full);
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        const __m512 v = hv ? _mm512_loadu_ps(hv + j) : r512_h(w, j, 0xffff, 1, hl, hb);
        if (buf)
            _mm512_store_ps(buf + j, v);
        a0 = _mm512_add_pd(a0, r512_lo(v));
        a1 = _mm512_add_pd(a1, r512_hi(v));
    }
    if (k) {
        const __m512 v = hv ? _mm512_maskz_loadu_ps(k, hv + full) : r512_h(w, full, k, 0, hl, hb);
        if (buf)
            _mm512_store_ps(buf + full, v);
        a0 = k512_add_mask(a0, k512_lo8(k), r512_lo(v));
        a1 = k512_add_mask(a1, k512_hi8(k), r512_hi(v));
    }
    return k512_reduce16(a0, a1);
}

/* R((h - mean)^2) of one row (hv or recomputed from w, as h_sum). pf: prefetch the next
 * row's x and r (pfx, pfr) meanwhile. */
KEEL_INLINE double h_centred(const r512_row *w, const float *hv, size_t dim, double mean, int pf,
                             const float *pfx, const float *pfr, int hl, int hb)
{
    const size_t full = dim & ~(size_t)15;
    const __mmask16 k = k512_tail16(dim - full);
    const __m512d md = _mm512_set1_pd(mean);
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        const __m512 v = hv ? _mm512_loadu_ps(hv + j) : r512_h(w, j, 0xffff, 1, hl, hb);
        const __m512d t0 = _mm512_sub_pd(r512_lo(v), md), t1 = _mm512_sub_pd(r512_hi(v), md);
        a0 = _mm512_add_pd(a0, _mm512_mul_pd(t0, t0));
        a1 = _mm512_add_pd(a1, _mm512_mul_pd(t1, t1));
        if (pf) {
            R512_PF(pfx + j);
            R512_PF(pfr + j);
        }
    }
    if (k) {
        const __m512 v = hv ? _mm512_maskz_loadu_ps(k, hv + full) : r512_h(w, full, k, 0, hl, hb);
        const __m512d t0 = _mm512_sub_pd(r512_lo(v), md), t1 = _mm512_sub_pd(r512_hi(v), md);
        a0 = k512_add_mask(a0, k512_lo8(k), _mm512_mul_pd(t0, t0));
        a1 = k512_add_mask(a1, k512_hi8(k), _mm512_mul_pd(t1, t1));
    }
    return k512_reduce16(a0, a1);
}

/* mean_d and rstd_f of one row (kernels.h), h read from hv or recomputed. */
KEEL_INLINE double ln_stats(const r512_row *w, const float *hv, size_t dim, float eps,
                            float *rstd, int hl, int hb)
{
    const double mean = keel_ln_mean(h_sum(w, hv, NULL, dim, hl, hb), dim);
    *rstd = keel_ln_rstd(h_centred(w, hv, dim, mean, 0, NULL, NULL, hl, hb), dim, eps);
    return mean;
}

/* ---- forward ----------------------------------------------------------------------------- */

/* The output sweep's constants of one row: where h and y go, the mean as a float hi + lo pair
 * (see f32_layernorm__scalar.c), rstd, and whether the stores stream. */
typedef struct out_row {
    float *h, *y;
    __m512 vh, vl, vr;
    int nt;
} out_row;

KEEL_INLINE out_row out_row_of(float *h, float *y, double mean_d, float rs, int nt)
{
    out_row o;
    const float hi = (float)mean_d;
    o.h = h;
    o.y = y;
    o.vh = _mm512_set1_ps(hi);
    o.vl = _mm512_set1_ps((float)(mean_d - (double)hi));
    o.vr = _mm512_set1_ps(rs);
    o.nt = nt;
    return o;
}

/* Columns j .. j + 16 (full) or the k floats at j of the output sweep; v: h there. */
KEEL_INLINE void out_step(const out_row *o, size_t j, __m512 v, __mmask16 k, int full,
                          const float *gamma, const float *beta, int hg, int hbe, int hh)
{
    __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(v, o->vh), o->vl), o->vr);
    if (hg)
        t = _mm512_mul_ps(t, full ? _mm512_loadu_ps(gamma + j) : _mm512_maskz_loadu_ps(k, gamma + j));
    if (hbe)
        t = _mm512_add_ps(t, full ? _mm512_loadu_ps(beta + j) : _mm512_maskz_loadu_ps(k, beta + j));
    if (hh)
        r512_store(o->h + j, v, k, full, o->nt);
    r512_store(o->y + j, t, k, full, o->nt);
}

/* The output sweep of one row (h from hv, or recomputed from w). */
KEEL_INLINE void out_sweep(const out_row *o, const r512_row *w, const float *hv, size_t dim,
                           const float *gamma, const float *beta, int hl, int hb, int hg, int hbe,
                           int hh)
{
    const size_t full = dim & ~(size_t)15;
    for (size_t j = 0; j < full; j += 16)
        out_step(o, j, hv ? _mm512_load_ps(hv + j) : r512_h(w, j, 0xffff, 1, hl, hb), 0xffff, 1,
                 gamma, beta, hg, hbe, hh);
    if (full < dim) {
        const __mmask16 k = k512_tail16(dim - full);
        out_step(o, full, hv ? _mm512_maskz_loadu_ps(k, hv + full) : r512_h(w, full, k, 0, hl, hb),
                 k, 0, gamma, beta, hg, hbe, hh);
    }
}

/* Rows from beyond L2 (pipe_fwd_wanted) go through a pipeline of three rows, one sweep over j doing
 * three rows' work: row c's first sweep (h = x + r from memory, into its buffer, and R(h);
 * the loads run R512_PIPE_AHEAD floats behind their prefetches), row b's centred sweep (its
 * buffer, in cache) and row a's output sweep (its buffer to h and y, streamed to memory). The
 * memory then sees reads and writes together all the time, as in a copy, and the statistics'
 * in-cache work hides under them. Measured (keel_profile_loop addlnf 4096 4096, 1 thread):
 * 17.2 ms one row at a time with the next row prefetched during its second sweep; 14.8 ms with
 * a two-row pipeline (first and output sweeps together, the centred sweep alone); 12.3-13.5 ms
 * with all three together; the copy floor of the same bytes 11.4-11.8 ms. Each row's
 * arithmetic is fwd_row's: the same bits. */

/* One sweep of the pipeline; each stage optional (do_*). o, ha: row a's outputs and buffer;
 * hbuf, mean_b: row b's buffer and mean, *centred its R((h - mean)^2); wc, hc: row c's inputs
 * and buffer, *sum its R(h). */
KEEL_INLINE void pipe_sweep(size_t dim, int do_out, const out_row *o, const float *ha, int do_cen,
                            const float *hbuf, double mean_b, double *centred, int do_sum,
                            const r512_row *wc, float *hc, double *sum, const float *gamma,
                            const float *beta, int hl, int hb, int hg, int hbe, int hh,
                            const pipe_next *nx)
{
    const size_t full = dim & ~(size_t)15;
    const __m512d md = _mm512_set1_pd(mean_b);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, c0 = s0, c1 = s0;
    for (size_t j = 0; j < dim; j += 16) {
        const int fl = j < full;
        const __mmask16 k = fl ? 0xffff : k512_tail16(dim - full);
        const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
        if (fl)
            pipe_next_fetch(nx, j);
        /* row a's h, read before row c's may be stored over it (fwd_rows_piped's nbuf) */
        const __m512 va = do_out ? _mm512_load_ps(ha + j) : _mm512_setzero_ps();
        if (do_sum) {
            const __m512 v = r512_h_piped(wc, hc, j, k, fl, hl, hb);
            s0 = k512_add_mask(s0, klo, r512_lo(v));
            s1 = k512_add_mask(s1, khi, r512_hi(v));
        }
        if (do_cen) {
            const __m512 v = _mm512_load_ps(hbuf + j);
            const __m512d t0 = _mm512_sub_pd(r512_lo(v), md), t1 = _mm512_sub_pd(r512_hi(v), md);
            c0 = k512_add_mask(c0, klo, _mm512_mul_pd(t0, t0));
            c1 = k512_add_mask(c1, khi, _mm512_mul_pd(t1, t1));
        }
        if (do_out)
            out_step(o, j, va, k, fl, gamma, beta, hg, hbe, hh);
    }
    if (do_sum)
        *sum = k512_reduce16(s0, s1);
    if (do_cen)
        *centred = k512_reduce16(c0, c1);
}

#define PIPE_FWD_ENTRY keel_f32_add_layernorm_fwd__avx512
#define PIPE_LAYERNORM
#include "add_norm_pipe.h"

/* ---- backward ---------------------------------------------------------------------------- */

/* What a backward computes; each field a constant in the fast instantiations, a run-time value
 * in the generic one. */
typedef struct bwd_flags {
    int hh;          /* h saved (else recomputed: hl, hb) */
    int hl, hb, hg;  /* lambda, bias, gamma */
    int hdh;         /* dh given */
    int hdx, hdr, acc;
    int dgp, dbp, dlp, dbsp;
} bwd_flags;

/* Sweep 1's sums: Sx = R(u), u = (double)h - (double)m; with want_g Sg = R(g), Sgu = R(g * u),
 * g = dy * gamma. */
typedef struct s1_acc {
    __m512d md, sx0, sx1, sg0, sg1, sp0, sp1;
} s1_acc;

KEEL_INLINE s1_acc s1_begin(float m)
{
    const __m512d z = _mm512_setzero_pd();
    const s1_acc a = {_mm512_set1_pd((double)m), z, z, z, z, z, z};
    return a;
}

KEEL_INLINE void s1_step(const bwd_flags f, int want_g, s1_acc *a, const r512_bwd_row *p,
                         size_t j, r512_step s, const float *gamma)
{
    const __mmask8 ml = k512_lo8(s.k), mh = k512_hi8(s.k);
    const __m512 v = r512_bwd_h(p, j, s, f.hh, f.hl, f.hb);
    const __m512d u0 = _mm512_sub_pd(r512_lo(v), a->md), u1 = _mm512_sub_pd(r512_hi(v), a->md);
    a->sx0 = k512_add_mask(a->sx0, ml, u0);
    a->sx1 = k512_add_mask(a->sx1, mh, u1);
    if (want_g) {
        __m512 g = r512_ld(p->dy + j, s);
        if (f.hg)
            g = _mm512_mul_ps(g, r512_ld(gamma + j, s));
        const __m512d g0 = r512_lo(g), g1 = r512_hi(g);
        a->sg0 = k512_add_mask(a->sg0, ml, g0);
        a->sg1 = k512_add_mask(a->sg1, mh, g1);
        a->sp0 = k512_add_mask(a->sp0, ml, _mm512_mul_pd(g0, u0));
        a->sp1 = k512_add_mask(a->sp1, mh, _mm512_mul_pd(g1, u1));
    }
}

/* Sweep 2's constants of one row. */
typedef struct s2_row {
    __m512 va, vb, vdf, vm, vr;
} s2_row;

KEEL_INLINE s2_row s2_zero(void)
{
    const __m512 z = _mm512_setzero_ps();
    const s2_row c = {z, z, z, z, z};
    return c;
}

KEEL_INLINE s2_row s1_end(const s1_acc *a, size_t dim, float m, float rs)
{
    const double n = (double)dim;
    const double delta = k512_reduce16(a->sx0, a->sx1) / n;
    const double Sg = k512_reduce16(a->sg0, a->sg1), Sgu = k512_reduce16(a->sp0, a->sp1);
    s2_row c;
    c.va = _mm512_set1_ps((float)(Sg / n));
    c.vb = _mm512_set1_ps((float)((double)rs * ((Sgu - delta * Sg) / n)));
    c.vdf = _mm512_set1_ps((float)delta);
    c.vm = _mm512_set1_ps(m);
    c.vr = _mm512_set1_ps(rs);
    return c;
}

/* Sweep 2 at j: G = dh + rstd * ((g - Sg/n) - xhat * b), the residual's gradients from it,
 * dgamma += dy * xhat, dbeta += dy. nt: dx and dr streamed. */
KEEL_INLINE void s2_step(const bwd_flags f, int want_g, const s2_row *c, const r512_bwd_row *p,
                         size_t j, r512_step s, const float *gamma, float *const *parts, int nt)
{
    const __m512 v = r512_bwd_h(p, j, s, f.hh, f.hl, f.hb);
    const __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(v, c->vm), c->vdf), c->vr);
    const __m512 dyv = r512_ld(p->dy + j, s);
    if (want_g) {
        const __m512 g = f.hg ? _mm512_mul_ps(dyv, r512_ld(gamma + j, s)) : dyv;
        const __m512 t = _mm512_sub_ps(_mm512_sub_ps(g, c->va), _mm512_mul_ps(xhat, c->vb));
        __m512 G = _mm512_mul_ps(c->vr, t);
        if (f.hdh)
            G = _mm512_add_ps(r512_ld(p->dh + j, s), G);
        r512_res_grads(p, j, s, G, f.hdx, f.hdr, f.acc, f.dlp, f.dbsp, parts, nt);
    }
    if (f.dgp)
        r512_part_add(parts[KEEL_PART_DGAMMA], j, s, _mm512_mul_ps(dyv, xhat));
    if (f.dbp)
        r512_part_add(parts[KEEL_PART_DBETA], j, s, dyv);
}

KEEL_INLINE void bwd_row(const bwd_flags f, size_t dim, const r512_bwd_row *p, float m, float rs,
                         int have_stats, const float *gamma, float eps, float *const *parts,
                         const r512_bwd_mem *mem)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    if (!have_stats && (want_g || f.dgp))
        m = (float)ln_stats(&p->w, p->hv, dim, eps, &rs, f.hl, f.hb);
    const size_t full = dim & ~(size_t)15;
    const r512_step F = {0xffff, 1}, T = {k512_tail16(dim - full), 0};
    s1_acc a = s1_begin(m);
    for (size_t j = 0; j < dim; j += 16)
        s1_step(f, want_g, &a, p, j, j < full ? F : T, gamma);
    const s2_row c = s1_end(&a, dim, m, rs);
    for (size_t j = 0; j < dim; j += 16) {
        s2_step(f, want_g, &c, p, j, j < full ? F : T, gamma, parts, mem->nt);
        if (j < full)
            r512_bwd_prefetch(mem, j);
    }
}

/* Rows from beyond L2 with their statistics given: a pipeline of two rows, as in the forward
 * (add_norm_pipe.h: sweep t runs row t's sweep 1, reading h and dy from memory, and row t - 1's
 * sweep 2, its h and dy in cache, dh from memory, dx and dr written), so that the reads and
 * the writes go to memory together. Each row's arithmetic is bwd_row's: the same bits.
 * Measured (keel_profile_loop addlnb 4096 4096, 1 thread: dy, h and dh read, dx written over
 * dh): 19.9 ms one row at a time with the next row prefetched into L2, 14.9 ms pipelined
 * (prefetch distances of 1 to 4 KiB alike). Without the statistics (recomputed from h, two
 * more sweeps a row) the rows go one at a time. */
#define PIPE_BACKWARD
#include "add_norm_pipe.h"

KEEL_INLINE void bwd_rows(const bwd_flags f, size_t rows, size_t dim, const float *dy, size_t dys,
                          const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                          size_t hs, const float *mean, const float *rstd, const float *gamma,
                          float eps, const keel_f32_res_grads *out)
{
    if ((out->hints & KEEL_KBWD_PREFETCH) && mean && rstd) {
        bwd_rows_piped(f, rows, dim, dy, dys, dh, dhs, res, h, hs, mean, rstd, gamma, out);
        return;
    }
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const r512_bwd_mem mem = r512_bwd_mem_of(out, f.acc, r, rows, dy, dys, f.hdh ? dh : NULL,
                                                 dhs, f.hh ? h : NULL, hs, res);
        streamed |= mem.nt;
        const r512_bwd_row p = r512_bwd_row_of(r, dy, dys, f.hdh ? dh : NULL, dhs, res,
                                               f.hh ? h : NULL, hs, out);
        bwd_row(f, dim, &p, mean ? mean[r] : 0.0f, rstd ? rstd[r] : 0.0f, mean != NULL, gamma,
                eps, out->parts, &mem);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

/* The pre-norm block's backward (h saved, dh in, dx out, dgamma, dbeta) as constants; the
 * rest through the generic instantiation. */
static void bwd_prenorm(size_t rows, size_t dim, const float *dy, size_t dys, const float *dh,
                        size_t dhs, const keel_f32_res *res, const float *h, size_t hs,
                        const float *mean, const float *rstd, const float *gamma, float eps,
                        const keel_f32_res_grads *out)
{
    static const bwd_flags f = {1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0};
    bwd_rows(f, rows, dim, dy, dys, dh, dhs, res, h, hs, mean, rstd, gamma, eps, out);
}

static void bwd_generic(const bwd_flags f, size_t rows, size_t dim, const float *dy, size_t dys,
                        const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                        size_t hs, const float *mean, const float *rstd, const float *gamma,
                        float eps, const keel_f32_res_grads *out)
{
    bwd_rows(f, rows, dim, dy, dys, dh, dhs, res, h, hs, mean, rstd, gamma, eps, out);
}

void keel_f32_add_layernorm_bwd__avx512(size_t rows, size_t dim, const float *dy,
                                        size_t dy_stride, const float *dh, size_t dh_stride,
                                        const keel_f32_res *res, const float *h, size_t h_stride,
                                        const float *mean, const float *rstd, const float *gamma,
                                        float eps, const keel_f32_res_grads *out)
{
    const bwd_flags f = {h != NULL, res->lambda != NULL, res->bias != NULL, gamma != NULL,
                         dh != NULL, out->dx != NULL, out->dr != NULL, out->accumulate != 0,
                         out->parts[KEEL_PART_DGAMMA] != NULL, out->parts[KEEL_PART_DBETA] != NULL,
                         out->parts[KEEL_PART_DLAMBDA] != NULL, out->parts[KEEL_PART_DBIAS] != NULL};
    if (f.hh && !f.hl && gamma && f.hdh && f.hdx && !f.hdr && !f.acc && f.dgp && f.dbp && !f.dlp && !f.dbsp)
        bwd_prenorm(rows, dim, dy, dy_stride, dh, dh_stride, res, h, h_stride, mean, rstd, gamma, eps, out);
    else
        bwd_generic(f, rows, dim, dy, dy_stride, dh, dh_stride, res, h, h_stride, mean, rstd, gamma, eps, out);
}
