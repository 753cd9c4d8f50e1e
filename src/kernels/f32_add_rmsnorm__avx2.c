/* Fused residual add + RMSNorm, float32, AVX2: exactly the bits of f32_add_rmsnorm__scalar.c,
 * 16 floats (two ymm, four double quarters) at a time; the plan of f32_add_layernorm__avx512.c
 * (from L2-filling calls, the two-row pipeline of f32_add_rmsnorm__avx512.c). */
#include <math.h>

#include "kernels.h"
#include "variants.h"
#include "norm_finish.h"
#include "residual__avx2.h"
#include "rms_batch__avx2.h"
#include "add_norm_pipe.h" /* pipe_next */

#define BUF_FLOATS 8192

KEEL_INLINE r256_v h_at(const r256_row *w, const float *hv, size_t j, r256_step s, int hl, int hb)
{
    return hv ? r256_load(hv + j, s) : r256_h(w, j, s, hl, hb);
}

/* R(h * h) of one row; with buf (and no hv) h is also stored there. */
KEEL_INLINE double h_sumsq(const r256_row *w, const float *hv, float *buf, size_t dim, int hl, int hb)
{
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    r256_d a = r256_dzero();
    for (size_t j = 0; j < dim; j += 16) {
        const r256_step s = j < full ? F : T;
        const r256_v v = h_at(w, hv, j, s, hl, hb);
        if (buf)
            r256_store(buf + j, v, F, 0);
        r256_d d = r256_cvt(v);
        for (int i = 0; i < 4; i++)
            d.q[i] = _mm256_mul_pd(d.q[i], d.q[i]);
        r256_acc(&a, d, s);
    }
    return r256_reduce(a);
}

/* ---- forward ----------------------------------------------------------------------------- */

/* Step s at j of the output sweep; v: h there. */
KEEL_INLINE void out_step(float *h, float *y, size_t j, r256_v v, r256_v vr, int nt, r256_step s,
                          const float *gamma, int hg, int hh)
{
    r256_v o = r256_mul(v, vr);
    if (hg)
        o = r256_mul(o, r256_load(gamma + j, s));
    if (hh)
        r256_store(h + j, v, s, nt);
    r256_store(y + j, o, s, nt);
}

/* The output sweep of one row (h from hv, or recomputed from w); pf: the next row's x and r
 * (pfx, pfr) fetched meanwhile. */
KEEL_INLINE void out_sweep(float *h, float *y, const r256_row *w, const float *hv, size_t dim,
                           float rs, int nt, int pf, const float *pfx, const float *pfr,
                           const float *gamma, int hl, int hb, int hg, int hh)
{
    const r256_v vr = r256_set1(rs);
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    for (size_t j = 0; j < dim; j += 16) {
        const r256_step s = j < full ? F : T;
        out_step(h, y, j, h_at(w, hv, j, s, hl, hb), vr, nt, s, gamma, hg, hh);
        if (pf && s.full) {
            R256_PF(pfx + j);
            R256_PF(pfr + j);
        }
    }
}


/* Rows from beyond L2 (pipe_fwd_wanted): the two-row pipeline of f32_add_rmsnorm__avx512.c (sweep t reads row t into
 * buffer t % 2 with R(h * h) and writes row t - 1). Measured with KEEL_ISA=avx2 (keel_profile_loop
 * addrmsf 4096 4096, 1 thread): 14.8-15.0 ms one row at a time, 11.7-11.9 ms pipelined. Same bits
 * as fwd_row. */
KEEL_INLINE void pipe_sweep(size_t dim, int do_out, const float *ha, float *h, float *y, float rs,
                            int nt, int do_sum, const r256_row *wc, float *hc, double *sumsq,
                            const float *gamma, int hl, int hb, int hg, int hh,
                            const pipe_next *nx)
{
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    const r256_v vr = r256_set1(rs);
    r256_d acc = r256_dzero();
    for (size_t j = 0; j < dim; j += 16) {
        const r256_step s = j < full ? F : T;
        if (s.full)
            pipe_next_fetch(nx, j);
        /* row a's h, read before row c's may be stored over it (fwd_rows_piped's nbuf) */
        const r256_v va = do_out ? r256_load(ha + j, F) : r256_set1(0.0f);
        if (do_sum) {
            r256_d d = r256_cvt(r256_h_piped(wc, hc, j, s, hl, hb));
            for (int i = 0; i < 4; i++)
                d.q[i] = _mm256_mul_pd(d.q[i], d.q[i]);
            r256_acc(&acc, d, s);
        }
        if (do_out)
            out_step(h, y, j, va, vr, nt, s, gamma, hg, hh);
    }
    if (do_sum)
        *sumsq = r256_reduce(acc);
}

#define PIPE_FWD_ENTRY keel_f32_add_rmsnorm_fwd__avx2
#define PIPE_RMSNORM
#include "add_norm_pipe.h"

/* ---- backward ---------------------------------------------------------------------------- */

typedef struct bwd_flags {
    int hh, hl, hb, hg, hdh, hdx, hdr, acc, dgp, dlp, dbsp;
} bwd_flags;

/* Sweep 1's sum Sgx = R(g * h), g = dy * gamma (want_g only). */
typedef struct s1_acc {
    r256_d a;
} s1_acc;

KEEL_INLINE s1_acc s1_begin(float m)
{
    (void)m; /* RMSNorm has no mean */
    s1_acc a;
    a.a = r256_dzero();
    return a;
}

KEEL_INLINE void s1_step(const bwd_flags f, int want_g, s1_acc *a, const r256_bwd_row *p,
                         size_t j, r256_step s, const float *gamma)
{
    if (!want_g)
        return;
    r256_v g = r256_load(p->dy + j, s);
    if (f.hg)
        g = r256_mul(g, r256_load(gamma + j, s));
    const r256_d gd = r256_cvt(g), hd = r256_cvt(r256_bwd_h(p, j, s, f.hh, f.hl, f.hb));
    r256_d q;
    for (int i = 0; i < 4; i++)
        q.q[i] = _mm256_mul_pd(gd.q[i], hd.q[i]);
    r256_acc(&a->a, q, s);
}

/* Sweep 2's constants: b = rstd * Sgx / n, rstd. */
typedef struct s2_row {
    r256_v vb, vr;
} s2_row;

KEEL_INLINE s2_row s2_zero(void)
{
    const s2_row c = {r256_set1(0.0f), r256_set1(0.0f)};
    return c;
}

KEEL_INLINE s2_row s1_end(const s1_acc *a, size_t dim, float m, float rs)
{
    (void)m;
    s2_row c;
    c.vb = r256_set1(keel_rms_bwd_b(rs, r256_reduce(a->a), dim));
    c.vr = r256_set1(rs);
    return c;
}

KEEL_INLINE void s2_step(const bwd_flags f, int want_g, const s2_row *c, const r256_bwd_row *p,
                         size_t j, r256_step s, const float *gamma, float *const *parts, int nt)
{
    const r256_v xhat = r256_mul(r256_bwd_h(p, j, s, f.hh, f.hl, f.hb), c->vr);
    const r256_v dyv = r256_load(p->dy + j, s);
    if (want_g) {
        const r256_v g = f.hg ? r256_mul(dyv, r256_load(gamma + j, s)) : dyv;
        r256_v G = r256_mul(c->vr, r256_sub(g, r256_mul(xhat, c->vb)));
        if (f.hdh)
            G = r256_add(r256_load(p->dh + j, s), G);
        r256_res_grads(p, j, s, G, f.hdx, f.hdr, f.acc, f.dlp, f.dbsp, parts, nt);
    }
    if (f.dgp)
        r256_part_add(parts[KEEL_PART_DGAMMA], j, s, r256_mul(dyv, xhat));
}

KEEL_INLINE void bwd_row(const bwd_flags f, size_t dim, const r256_bwd_row *p, float rs,
                         int have_rstd, const float *gamma, float eps, float *const *parts, int nt)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    if (!have_rstd && (want_g || f.dgp))
        rs = keel_rms_rstd(h_sumsq(&p->w, p->hv, NULL, dim, f.hl, f.hb), dim, eps);
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    s1_acc a = s1_begin(0.0f);
    for (size_t j = 0; want_g && j < dim; j += 16)
        s1_step(f, want_g, &a, p, j, j < full ? F : T, gamma);
    const s2_row c = s1_end(&a, dim, 0.0f, rs);
    for (size_t j = 0; j < dim; j += 16)
        s2_step(f, want_g, &c, p, j, j < full ? F : T, gamma, parts, nt);
}

/* Rows beyond L2 with rstd given: the two-row pipeline of add_norm_pipe.h. Measured with
 * KEEL_ISA=avx2 (keel_profile_loop addrmsb 4096 4096, 1 thread, dx over dh): 21.0-21.9 ms one row
 * at a time, 14.0-14.6 ms pipelined. */
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
        const int nt = r256_bwd_nt(out, f.acc, r);
        streamed |= nt;
        const r256_bwd_row p = r256_bwd_row_of(r, dy, dys, f.hdh ? dh : NULL, dhs, res,
                                               f.hh ? h : NULL, hs, out);
        bwd_row(f, dim, &p, rstd ? rstd[r] : 0.0f, rstd != NULL, gamma, eps, out->parts, nt);
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

void keel_f32_add_rmsnorm_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
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
