/* Fused residual add + RMSNorm, float32, AVX-512: exactly the bits of
 * f32_add_rmsnorm__scalar.c, 16 floats at a time (see f32_add_layernorm__avx512.c for the
 * plan: h kept in a buffer after the first sweep; from L2-filling calls a pipeline that reads
 * one row while it writes another; large outputs streamed). */
#include <math.h>

#include "kernels.h"
#include "variants.h"
#include "norm_finish.h"
#include "residual__avx512.h"
#include "rms_batch__avx512.h"
#include "add_norm_pipe.h" /* pipe_next */

#define BUF_FLOATS 8192

/* R(h * h) of one row: h read from hv, or computed from w (and stored into buf when given). */
KEEL_INLINE double h_sumsq(const r512_row *w, const float *hv, float *buf, size_t dim, int hl, int hb)
{
    const size_t full = dim & ~(size_t)15;
    const __mmask16 k = k512_tail16(dim - full);
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        const __m512 v = hv ? _mm512_loadu_ps(hv + j) : r512_h(w, j, 0xffff, 1, hl, hb);
        if (buf)
            _mm512_store_ps(buf + j, v);
        const __m512d t0 = r512_lo(v), t1 = r512_hi(v);
        a0 = _mm512_add_pd(a0, _mm512_mul_pd(t0, t0));
        a1 = _mm512_add_pd(a1, _mm512_mul_pd(t1, t1));
    }
    if (k) {
        const __m512 v = hv ? _mm512_maskz_loadu_ps(k, hv + full) : r512_h(w, full, k, 0, hl, hb);
        if (buf)
            _mm512_store_ps(buf + full, v);
        const __m512d t0 = r512_lo(v), t1 = r512_hi(v);
        a0 = k512_add_mask(a0, k512_lo8(k), _mm512_mul_pd(t0, t0));
        a1 = k512_add_mask(a1, k512_hi8(k), _mm512_mul_pd(t1, t1));
    }
    return k512_reduce16(a0, a1);
}

/* ---- forward ----------------------------------------------------------------------------- */

/* Columns j .. j + 16 (full) or the k floats at j of the output sweep; v: h there. */
KEEL_INLINE void out_step(float *h, float *y, size_t j, __m512 v, __m512 vr, int nt, __mmask16 k,
                          int full, const float *gamma, int hg, int hh)
{
    __m512 o = _mm512_mul_ps(v, vr);
    if (hg)
        o = _mm512_mul_ps(o, full ? _mm512_loadu_ps(gamma + j) : _mm512_maskz_loadu_ps(k, gamma + j));
    if (hh)
        r512_store(h + j, v, k, full, nt);
    r512_store(y + j, o, k, full, nt);
}

/* The output sweep of one row (h from hv, or recomputed from w); pf: the next row's x and r
 * (pfx, pfr) fetched meanwhile. */
KEEL_INLINE void out_sweep(float *h, float *y, const r512_row *w, const float *hv, size_t dim,
                           float rs, int nt, int pf, const float *pfx, const float *pfr,
                           const float *gamma, int hl, int hb, int hg, int hh)
{
    const __m512 vr = _mm512_set1_ps(rs);
    const size_t full = dim & ~(size_t)15;
    for (size_t j = 0; j < full; j += 16) {
        out_step(h, y, j, hv ? _mm512_load_ps(hv + j) : r512_h(w, j, 0xffff, 1, hl, hb), vr, nt,
                 0xffff, 1, gamma, hg, hh);
        if (pf) { /* the output sweep is this row's only one in cache: fetch the next row here */
            R512_PF(pfx + j);
            R512_PF(pfr + j);
        }
    }
    if (full < dim) {
        const __mmask16 k = k512_tail16(dim - full);
        out_step(h, y, full, hv ? _mm512_maskz_loadu_ps(k, hv + full) : r512_h(w, full, k, 0, hl, hb),
                 vr, nt, k, 0, gamma, hg, hh);
    }
}


/* Rows from beyond L2 (pipe_fwd_wanted) go through a pipeline of two rows (the plan of
 * f32_add_layernorm__avx512.c): one sweep over j computes row c's h from memory into its
 * buffer with R(h * h) and writes row a's h and y from its buffer, so that the reads and the
 * streamed writes go to memory together (keel_profile_loop addrmsf 4096 4096, 1 thread: 14.3
 * ms one row at a time, 11.8 ms pipelined; the copy floor of the bytes 11.4-11.8 ms). Each
 * row's arithmetic is fwd_row's: the same bits. */
KEEL_INLINE void pipe_sweep(size_t dim, int do_out, const float *ha, float *h, float *y, float rs,
                            int nt, int do_sum, const r512_row *wc, float *hc, double *sumsq,
                            const float *gamma, int hl, int hb, int hg, int hh,
                            const pipe_next *nx)
{
    const size_t full = dim & ~(size_t)15;
    const __m512 vr = _mm512_set1_ps(rs);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (size_t j = 0; j < dim; j += 16) {
        const int fl = j < full;
        const __mmask16 k = fl ? 0xffff : k512_tail16(dim - full);
        if (fl)
            pipe_next_fetch(nx, j);
        /* row a's h, read before row c's may be stored over it (fwd_rows_piped's nbuf) */
        const __m512 va = do_out ? _mm512_load_ps(ha + j) : _mm512_setzero_ps();
        if (do_sum) {
            const __m512 v = r512_h_piped(wc, hc, j, k, fl, hl, hb);
            const __m512d t0 = r512_lo(v), t1 = r512_hi(v);
            s0 = k512_add_mask(s0, k512_lo8(k), _mm512_mul_pd(t0, t0));
            s1 = k512_add_mask(s1, k512_hi8(k), _mm512_mul_pd(t1, t1));
        }
        if (do_out)
            out_step(h, y, j, va, vr, nt, k, fl, gamma, hg, hh);
    }
    if (do_sum)
        *sumsq = k512_reduce16(s0, s1);
}

#define PIPE_FWD_ENTRY keel_f32_add_rmsnorm_fwd__avx512
#define PIPE_RMSNORM
#include "add_norm_pipe.h"

/* ---- backward ---------------------------------------------------------------------------- */

typedef struct bwd_flags {
    int hh, hl, hb, hg, hdh, hdx, hdr, acc, dgp, dlp, dbsp;
} bwd_flags;

/* Sweep 1's sum Sgx = R(g * h), g = dy * gamma (want_g only). */
typedef struct s1_acc {
    __m512d s0, s1;
} s1_acc;

KEEL_INLINE s1_acc s1_begin(float m)
{
    (void)m; /* RMSNorm has no mean */
    const s1_acc a = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    return a;
}

KEEL_INLINE void s1_step(const bwd_flags f, int want_g, s1_acc *a, const r512_bwd_row *p,
                         size_t j, r512_step s, const float *gamma)
{
    if (!want_g)
        return;
    const __m512 v = r512_bwd_h(p, j, s, f.hh, f.hl, f.hb);
    __m512 g = r512_ld(p->dy + j, s);
    if (f.hg)
        g = _mm512_mul_ps(g, r512_ld(gamma + j, s));
    a->s0 = k512_add_mask(a->s0, k512_lo8(s.k), _mm512_mul_pd(r512_lo(g), r512_lo(v)));
    a->s1 = k512_add_mask(a->s1, k512_hi8(s.k), _mm512_mul_pd(r512_hi(g), r512_hi(v)));
}

/* Sweep 2's constants: b = rstd * Sgx / n, rstd. */
typedef struct s2_row {
    __m512 vb, vr;
} s2_row;

KEEL_INLINE s2_row s2_zero(void)
{
    const s2_row c = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    return c;
}

KEEL_INLINE s2_row s1_end(const s1_acc *a, size_t dim, float m, float rs)
{
    (void)m;
    s2_row c;
    c.vb = _mm512_set1_ps(keel_rms_bwd_b(rs, k512_reduce16(a->s0, a->s1), dim));
    c.vr = _mm512_set1_ps(rs);
    return c;
}

/* Sweep 2 at j: G = dh + rstd * (g - xhat * b), the residual's gradients from it, dgamma +=
 * dy * xhat. nt: dx and dr streamed. */
KEEL_INLINE void s2_step(const bwd_flags f, int want_g, const s2_row *c, const r512_bwd_row *p,
                         size_t j, r512_step s, const float *gamma, float *const *parts, int nt)
{
    const __m512 xhat = _mm512_mul_ps(r512_bwd_h(p, j, s, f.hh, f.hl, f.hb), c->vr);
    const __m512 dyv = r512_ld(p->dy + j, s);
    if (want_g) {
        const __m512 g = f.hg ? _mm512_mul_ps(dyv, r512_ld(gamma + j, s)) : dyv;
        __m512 G = _mm512_mul_ps(c->vr, _mm512_sub_ps(g, _mm512_mul_ps(xhat, c->vb)));
        if (f.hdh)
            G = _mm512_add_ps(r512_ld(p->dh + j, s), G);
        r512_res_grads(p, j, s, G, f.hdx, f.hdr, f.acc, f.dlp, f.dbsp, parts, nt);
    }
    if (f.dgp)
        r512_part_add(parts[KEEL_PART_DGAMMA], j, s, _mm512_mul_ps(dyv, xhat));
}

KEEL_INLINE void bwd_row(const bwd_flags f, size_t dim, const r512_bwd_row *p, float rs,
                         int have_rstd, const float *gamma, float eps, float *const *parts,
                         const r512_bwd_mem *mem)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    if (!have_rstd && (want_g || f.dgp))
        rs = keel_rms_rstd(h_sumsq(&p->w, p->hv, NULL, dim, f.hl, f.hb), dim, eps);
    const size_t full = dim & ~(size_t)15;
    const r512_step F = {0xffff, 1}, T = {k512_tail16(dim - full), 0};
    s1_acc a = s1_begin(0.0f);
    for (size_t j = 0; want_g && j < dim; j += 16)
        s1_step(f, want_g, &a, p, j, j < full ? F : T, gamma);
    const s2_row c = s1_end(&a, dim, 0.0f, rs);
    for (size_t j = 0; j < dim; j += 16) {
        s2_step(f, want_g, &c, p, j, j < full ? F : T, gamma, parts, mem->nt);
        if (j < full)
            r512_bwd_prefetch(mem, j);
    }
}

/* Rows from beyond L2 with rstd given: the two-row pipeline of add_norm_pipe.h (as in
 * f32_add_layernorm__avx512.c). Same bits as bwd_row. Measured (keel_profile_loop addrmsb
 * 4096 4096, 1 thread, dx written over dh): 18.7 ms one row at a time, 14.1 ms pipelined. */
#define PIPE_BACKWARD
#include "add_norm_pipe.h"

KEEL_INLINE void bwd_rows(const bwd_flags f, size_t rows, size_t dim, const float *dy, size_t dys,
                          const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                          size_t hs, const float *rstd, const float *gamma, float eps,
                          const keel_f32_res_grads *out)
{
    if ((out->hints & KEEL_KBWD_PREFETCH) && rstd) {
        bwd_rows_piped(f, rows, dim, dy, dys, dh, dhs, res, h, hs, NULL, rstd, gamma, out);
        return;
    }
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const r512_bwd_mem mem = r512_bwd_mem_of(out, f.acc, r, rows, dy, dys, f.hdh ? dh : NULL,
                                                 dhs, f.hh ? h : NULL, hs, res);
        streamed |= mem.nt;
        const r512_bwd_row p = r512_bwd_row_of(r, dy, dys, f.hdh ? dh : NULL, dhs, res,
                                               f.hh ? h : NULL, hs, out);
        bwd_row(f, dim, &p, rstd ? rstd[r] : 0.0f, rstd != NULL, gamma, eps, out->parts, &mem);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

static void bwd_prenorm(size_t rows, size_t dim, const float *dy, size_t dys, const float *dh,
                        size_t dhs, const keel_f32_res *res, const float *h, size_t hs,
                        const float *rstd, const float *gamma, float eps,
                        const keel_f32_res_grads *out)
{
    static const bwd_flags f = {1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0};
    bwd_rows(f, rows, dim, dy, dys, dh, dhs, res, h, hs, rstd, gamma, eps, out);
}

static void bwd_generic(const bwd_flags f, size_t rows, size_t dim, const float *dy, size_t dys,
                        const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                        size_t hs, const float *rstd, const float *gamma, float eps,
                        const keel_f32_res_grads *out)
{
    bwd_rows(f, rows, dim, dy, dys, dh, dhs, res, h, hs, rstd, gamma, eps, out);
}

void keel_f32_add_rmsnorm_bwd__avx512(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                      const float *dh, size_t dh_stride, const keel_f32_res *res,
                                      const float *h, size_t h_stride, const float *rstd,
                                      const float *gamma, float eps, const keel_f32_res_grads *out)
{
    const bwd_flags f = {h != NULL, res->lambda != NULL, res->bias != NULL, gamma != NULL,
                         dh != NULL, out->dx != NULL, out->dr != NULL, out->accumulate != 0,
                         out->parts[KEEL_PART_DGAMMA] != NULL, out->parts[KEEL_PART_DLAMBDA] != NULL,
                         out->parts[KEEL_PART_DBIAS] != NULL};
    if (f.hh && !f.hl && gamma && f.hdh && f.hdx && !f.hdr && !f.acc && f.dgp && !f.dlp && !f.dbsp)
        bwd_prenorm(rows, dim, dy, dy_stride, dh, dh_stride, res, h, h_stride, rstd, gamma, eps, out);
    else
        bwd_generic(f, rows, dim, dy, dy_stride, dh, dh_stride, res, h, h_stride, rstd, gamma, eps, out);
}
