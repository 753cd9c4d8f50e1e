/* Fused residual add + LayerNorm, float32, AVX2: exactly the bits of
 * f32_add_layernorm__scalar.c, 16 floats (two ymm, four double quarters) at a time; the plan of
 * f32_add_layernorm__avx512.c (h kept in a buffer after the first sweep; from L2-filling calls a
 * pipeline that reads one row while it writes another; large outputs streamed). */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "variants.h"
#include "norm_finish.h"
#include "residual__avx2.h"
#include "ln_batch__avx2.h"
#include "add_norm_pipe.h" /* pipe_next */

#define BUF_FLOATS 8192

/* h at j: from hv (a saved or buffered row) or recomputed from w. */
KEEL_INLINE r256_v h_at(const r256_row *w, const float *hv, size_t j, r256_step s, int hl, int hb)
{
    return hv ? r256_load(hv + j, s) : r256_h(w, j, s, hl, hb);
}

/* R(h) of one row; with buf (and no hv) h is also stored there. */
KEEL_INLINE double h_sum(const r256_row *w, const float *hv, float *buf, size_t dim, int hl, int hb)
{
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    r256_d a = r256_dzero();
    const r256_step F = {1, &t}, T = {0, &t};
    for (size_t j = 0; j < full; j += 16) {
        const r256_v v = h_at(w, hv, j, F, hl, hb);
        if (buf)
            r256_store(buf + j, v, F, 0);
        r256_acc(&a, r256_cvt(v), F);
    }
    if (t.n) {
        const r256_v v = h_at(w, hv, full, T, hl, hb);
        if (buf)
            r256_store(buf + full, v, F, 0); /* the buffer has room for a whole step */
        r256_acc(&a, r256_cvt(v), T);
    }
    return r256_reduce(a);
}

/* R((h - mean)^2) of one row; pf: prefetch the next row's x and r meanwhile. */
KEEL_INLINE double h_centred(const r256_row *w, const float *hv, size_t dim, double mean, int pf,
                             const float *pfx, const float *pfr, int hl, int hb)
{
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const __m256d md = _mm256_set1_pd(mean);
    r256_d a = r256_dzero();
    const r256_step F = {1, &t}, T = {0, &t};
    for (size_t j = 0; j < dim; j += 16) {
        const r256_step s = j < full ? F : T;
        r256_d d = r256_cvt(h_at(w, hv, j, s, hl, hb));
        for (int i = 0; i < 4; i++) {
            d.q[i] = _mm256_sub_pd(d.q[i], md);
            d.q[i] = _mm256_mul_pd(d.q[i], d.q[i]);
        }
        r256_acc(&a, d, s);
        if (pf && s.full) {
            R256_PF(pfx + j);
            R256_PF(pfr + j);
        }
    }
    return r256_reduce(a);
}

KEEL_INLINE double ln_stats(const r256_row *w, const float *hv, size_t dim, float eps, float *rstd,
                            int hl, int hb)
{
    const double mean = keel_ln_mean(h_sum(w, hv, NULL, dim, hl, hb), dim);
    *rstd = keel_ln_rstd(h_centred(w, hv, dim, mean, 0, NULL, NULL, hl, hb), dim, eps);
    return mean;
}

/* ---- forward ----------------------------------------------------------------------------- */

/* The output sweep's constants of one row (f32_add_layernorm__avx512.c's out_row). */
typedef struct out_row {
    float *h, *y;
    r256_v vh, vl, vr;
    int nt;
} out_row;

KEEL_INLINE out_row out_row_of(float *h, float *y, double mean_d, float rs, int nt)
{
    out_row o;
    const float hi = (float)mean_d;
    o.h = h;
    o.y = y;
    o.vh = r256_set1(hi);
    o.vl = r256_set1((float)(mean_d - (double)hi));
    o.vr = r256_set1(rs);
    o.nt = nt;
    return o;
}

/* Step s at j of the output sweep; v: h there. */
KEEL_INLINE void out_step(const out_row *o, size_t j, r256_v v, r256_step s, const float *gamma,
                          const float *beta, int hg, int hbe, int hh)
{
    r256_v t = r256_mul(r256_sub(r256_sub(v, o->vh), o->vl), o->vr);
    if (hg)
        t = r256_mul(t, r256_load(gamma + j, s));
    if (hbe)
        t = r256_add(t, r256_load(beta + j, s));
    if (hh)
        r256_store(o->h + j, v, s, o->nt);
    r256_store(o->y + j, t, s, o->nt);
}

/* The output sweep of one row (h from hv, or recomputed from w). */
KEEL_INLINE void out_sweep(const out_row *o, const r256_row *w, const float *hv, size_t dim,
                           const float *gamma, const float *beta, int hl, int hb, int hg, int hbe,
                           int hh)
{
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    for (size_t j = 0; j < dim; j += 16) {
        const r256_step s = j < full ? F : T;
        out_step(o, j, h_at(w, hv, j, s, hl, hb), s, gamma, beta, hg, hbe, hh);
    }
}


/* Rows from beyond L2 (pipe_fwd_wanted): the three-row pipeline of f32_add_layernorm__avx512.c (sweep t reads row t,
 * centres row t - 1 and writes row t - 2; row i in buffer i % 3). Measured with KEEL_ISA=avx2
 * (keel_profile_loop addlnf 4096 4096, 1 thread): 18.9 ms one row at a time, 12.8-13.2 ms
 * pipelined. Each row's arithmetic is fwd_row's: the same bits. */
KEEL_INLINE void pipe_sweep(size_t dim, int do_out, const out_row *o, const float *ha, int do_cen,
                            const float *hbuf, double mean_b, double *centred, int do_sum,
                            const r256_row *wc, float *hc, double *sum, const float *gamma,
                            const float *beta, int hl, int hb, int hg, int hbe, int hh,
                            const pipe_next *nx)
{
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    const __m256d md = _mm256_set1_pd(mean_b);
    r256_d s_acc = r256_dzero(), c_acc = r256_dzero();
    for (size_t j = 0; j < dim; j += 16) {
        const r256_step s = j < full ? F : T;
        if (s.full)
            pipe_next_fetch(nx, j);
        /* row a's h, read before row c's may be stored over it (fwd_rows_piped's nbuf) */
        const r256_v va = do_out ? r256_load(ha + j, F) : r256_set1(0.0f);
        if (do_sum)
            r256_acc(&s_acc, r256_cvt(r256_h_piped(wc, hc, j, s, hl, hb)), s);
        if (do_cen) {
            r256_d d = r256_cvt(r256_load(hbuf + j, F));
            for (int i = 0; i < 4; i++) {
                d.q[i] = _mm256_sub_pd(d.q[i], md);
                d.q[i] = _mm256_mul_pd(d.q[i], d.q[i]);
            }
            r256_acc(&c_acc, d, s);
        }
        if (do_out)
            out_step(o, j, va, s, gamma, beta, hg, hbe, hh);
    }
    if (do_sum)
        *sum = r256_reduce(s_acc);
    if (do_cen)
        *centred = r256_reduce(c_acc);
}

#define PIPE_FWD_ENTRY keel_f32_add_layernorm_fwd__avx2
#define PIPE_LAYERNORM
#include "add_norm_pipe.h"

/* ---- backward ---------------------------------------------------------------------------- */

typedef struct bwd_flags {
    int hh, hl, hb, hg, hdh, hdx, hdr, acc, dgp, dbp, dlp, dbsp;
} bwd_flags;

/* Sweep 1's sums (f32_add_layernorm__avx512.c): Sx = R(u), u = (double)h - (double)m; with
 * want_g Sg = R(g), Sgu = R(g * u). */
typedef struct s1_acc {
    __m256d md;
    r256_d sx, sg, sp;
} s1_acc;

KEEL_INLINE s1_acc s1_begin(float m)
{
    s1_acc a;
    a.md = _mm256_set1_pd((double)m);
    a.sx = a.sg = a.sp = r256_dzero();
    return a;
}

KEEL_INLINE void s1_step(const bwd_flags f, int want_g, s1_acc *a, const r256_bwd_row *p,
                         size_t j, r256_step s, const float *gamma)
{
    r256_d u = r256_cvt(r256_bwd_h(p, j, s, f.hh, f.hl, f.hb));
    for (int i = 0; i < 4; i++)
        u.q[i] = _mm256_sub_pd(u.q[i], a->md);
    r256_acc(&a->sx, u, s);
    if (want_g) {
        r256_v g = r256_load(p->dy + j, s);
        if (f.hg)
            g = r256_mul(g, r256_load(gamma + j, s));
        const r256_d gd = r256_cvt(g);
        r256_d q;
        for (int i = 0; i < 4; i++)
            q.q[i] = _mm256_mul_pd(gd.q[i], u.q[i]);
        r256_acc(&a->sg, gd, s);
        r256_acc(&a->sp, q, s);
    }
}

typedef struct s2_row {
    r256_v va, vb, vdf, vm, vr;
} s2_row;

KEEL_INLINE s2_row s2_zero(void)
{
    const r256_v z = r256_set1(0.0f);
    const s2_row c = {z, z, z, z, z};
    return c;
}

KEEL_INLINE s2_row s1_end(const s1_acc *a, size_t dim, float m, float rs)
{
    const double n = (double)dim;
    const double delta = r256_reduce(a->sx) / n;
    const double Sg = r256_reduce(a->sg), Sgu = r256_reduce(a->sp);
    s2_row c;
    c.va = r256_set1((float)(Sg / n));
    c.vb = r256_set1((float)((double)rs * ((Sgu - delta * Sg) / n)));
    c.vdf = r256_set1((float)delta);
    c.vm = r256_set1(m);
    c.vr = r256_set1(rs);
    return c;
}

KEEL_INLINE void s2_step(const bwd_flags f, int want_g, const s2_row *c, const r256_bwd_row *p,
                         size_t j, r256_step s, const float *gamma, float *const *parts, int nt)
{
    const r256_v v = r256_bwd_h(p, j, s, f.hh, f.hl, f.hb);
    const r256_v xhat = r256_mul(r256_sub(r256_sub(v, c->vm), c->vdf), c->vr);
    const r256_v dyv = r256_load(p->dy + j, s);
    if (want_g) {
        const r256_v g = f.hg ? r256_mul(dyv, r256_load(gamma + j, s)) : dyv;
        r256_v G = r256_mul(c->vr, r256_sub(r256_sub(g, c->va), r256_mul(xhat, c->vb)));
        if (f.hdh)
            G = r256_add(r256_load(p->dh + j, s), G);
        r256_res_grads(p, j, s, G, f.hdx, f.hdr, f.acc, f.dlp, f.dbsp, parts, nt);
    }
    if (f.dgp)
        r256_part_add(parts[KEEL_PART_DGAMMA], j, s, r256_mul(dyv, xhat));
    if (f.dbp)
        r256_part_add(parts[KEEL_PART_DBETA], j, s, dyv);
}

KEEL_INLINE void bwd_row(const bwd_flags f, size_t dim, const r256_bwd_row *p, float m, float rs,
                         int have_stats, const float *gamma, float eps, float *const *parts, int nt)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    if (!have_stats && (want_g || f.dgp))
        m = (float)ln_stats(&p->w, p->hv, dim, eps, &rs, f.hl, f.hb);
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    s1_acc a = s1_begin(m);
    for (size_t j = 0; j < dim; j += 16)
        s1_step(f, want_g, &a, p, j, j < full ? F : T, gamma);
    const s2_row c = s1_end(&a, dim, m, rs);
    for (size_t j = 0; j < dim; j += 16)
        s2_step(f, want_g, &c, p, j, j < full ? F : T, gamma, parts, nt);
}

/* Rows beyond L2 with their statistics given: the two-row pipeline of add_norm_pipe.h (see
 * f32_add_layernorm__avx512.c). Measured with KEEL_ISA=avx2 (keel_profile_loop addlnb 4096
 * 4096, 1 thread, dx over dh): 23.4 ms one row at a time, 15.2 ms pipelined. */
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
        const int nt = r256_bwd_nt(out, f.acc, r);
        streamed |= nt;
        const r256_bwd_row p = r256_bwd_row_of(r, dy, dys, f.hdh ? dh : NULL, dhs, res,
                                               f.hh ? h : NULL, hs, out);
        bwd_row(f, dim, &p, mean ? mean[r] : 0.0f, rstd ? rstd[r] : 0.0f, mean != NULL, gamma,
                eps, out->parts, nt);
    }
    if (streamed)
        _mm_sfence(); /* the streamed stores are visible before the call returns */
}

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

void keel_f32_add_layernorm_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                      const float *dh, size_t dh_stride, const keel_f32_res *res,
                                      const float *h, size_t h_stride, const float *mean,
                                      const float *rstd, const float *gamma, float eps,
                                      const keel_f32_res_grads *out)
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
