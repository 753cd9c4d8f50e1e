/* Fused residual add + RMSNorm, float32, AVX2: exactly the bits of f32_add_rmsnorm__scalar.c,
 * 16 floats (two ymm, four double quarters) at a time; the plan of f32_add_layernorm__avx512.c
 * (beyond L2, the two-row pipeline of f32_add_rmsnorm__avx512.c). */
#include <math.h>

#include "kernels.h"
#include "norm_finish.h"
#include "residual__avx2.h"

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

KEEL_INLINE void fwd_row(const r256_row *w, size_t dim, float *h, float *y, const float *gamma,
                         float eps, float *rstd_out, int pf, const float *pfx, const float *pfr,
                         int nt, float *buf, int hl, int hb, int hg, int hh)
{
    const float *hv = dim <= BUF_FLOATS ? buf : NULL;
    const float rs = keel_rms_rstd(h_sumsq(w, NULL, hv ? buf : NULL, dim, hl, hb), dim, eps);
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
    if (rstd_out)
        *rstd_out = rs;
}

/* Rows beyond L2: the two-row pipeline of f32_add_rmsnorm__avx512.c (sweep t reads row t into
 * buffer t % 2 with R(h * h) and writes row t - 1). Measured with KEEL_ISA=avx2 (keel_profile_loop
 * addrmsf 4096 4096, 1 thread): 14.8-15.0 ms one row at a time, 11.7-11.9 ms pipelined. Same bits
 * as fwd_row. */
KEEL_INLINE void pipe_sweep(size_t dim, int do_out, const float *ha, float *h, float *y, float rs,
                            int nt, int do_sum, const r256_row *wc, float *hc, double *sumsq,
                            const float *gamma, int hl, int hb, int hg, int hh)
{
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    const r256_v vr = r256_set1(rs);
    r256_d acc = r256_dzero();
    for (size_t j = 0; j < dim; j += 16) {
        const r256_step s = j < full ? F : T;
        if (do_sum) {
            r256_d d = r256_cvt(r256_h_piped(wc, hc, j, s, hl, hb));
            for (int i = 0; i < 4; i++)
                d.q[i] = _mm256_mul_pd(d.q[i], d.q[i]);
            r256_acc(&acc, d, s);
        }
        if (do_out)
            out_step(h, y, j, r256_load(ha + j, F), vr, nt, s, gamma, hg, hh);
    }
    if (do_sum)
        *sumsq = r256_reduce(acc);
}

#define PIPE_ROW r256_row
#define PIPE_ROW_OF r256_row_of
#define PIPE_ALIGNED r256_aligned
#define PIPE_RMSNORM
#include "add_norm_pipe.h"

KEEL_INLINE void fwd_rows(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                          float *y, size_t ys, const float *gamma, float eps, float *rstd, int hl,
                          int hb, int hg, int hh)
{
    float buf[2 * BUF_FLOATS] __attribute__((aligned(64)));
    const size_t bytes = rows * dim * sizeof(float);
    const int pf = bytes > KEEL_PREFETCH_ABOVE, stream = (hh ? 2 : 1) * bytes > R256_STREAM_ABOVE;
    if (pf && dim <= BUF_FLOATS) {
        fwd_rows_piped(rows, dim, res, h, hs, y, ys, gamma, eps, rstd, stream, buf, hl, hb, hg, hh);
        return;
    }
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const r256_row w = r256_row_of(res, r);
        const int more = r + 1 < rows;
        const float *pfx = more ? w.x + res->x_stride : w.x, *pfr = more ? w.r + res->r_stride : w.r;
        float *hr = hh ? h + r * hs : NULL, *yr = y + r * ys;
        const int nt = stream && r256_aligned(yr) && (!hh || r256_aligned(hr));
        streamed |= nt;
        fwd_row(&w, dim, hr, yr, gamma, eps, rstd ? rstd + r : NULL, pf && more, pfx, pfr, nt, buf,
                hl, hb, hg, hh);
    }
    if (streamed)
        _mm_sfence();
}

typedef void (*fwd_fn)(size_t, size_t, const keel_f32_res *, float *, size_t, float *, size_t,
                       const float *, float, float *);
#define FWD_VARIANT(i)                                                                             \
    static void fwd_##i(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,    \
                        float *y, size_t ys, const float *gamma, float eps, float *rstd)           \
    {                                                                                              \
        fwd_rows(rows, dim, res, h, hs, y, ys, gamma, eps, rstd, (i) & 1, ((i) >> 1) & 1,          \
                 ((i) >> 2) & 1, ((i) >> 3) & 1);                                                  \
    }
FWD_VARIANT(0) FWD_VARIANT(1) FWD_VARIANT(2) FWD_VARIANT(3) FWD_VARIANT(4) FWD_VARIANT(5)
FWD_VARIANT(6) FWD_VARIANT(7) FWD_VARIANT(8) FWD_VARIANT(9) FWD_VARIANT(10) FWD_VARIANT(11)
FWD_VARIANT(12) FWD_VARIANT(13) FWD_VARIANT(14) FWD_VARIANT(15)
static const fwd_fn fwd_table[16] = {
    fwd_0, fwd_1, fwd_2,  fwd_3,  fwd_4,  fwd_5,  fwd_6,  fwd_7,
    fwd_8, fwd_9, fwd_10, fwd_11, fwd_12, fwd_13, fwd_14, fwd_15,
};

void keel_f32_add_rmsnorm_fwd__avx2(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                    size_t h_stride, float *y, size_t y_stride,
                                    const float *gamma, float eps, float *rstd)
{
    const int i = (res->lambda != NULL) | (res->bias != NULL) << 1 | (gamma != NULL) << 2 |
                  (h != NULL) << 3;
    fwd_table[i](rows, dim, res, h, h_stride, y, y_stride, gamma, eps, rstd);
}

/* ---- backward ---------------------------------------------------------------------------- */

typedef struct bwd_flags {
    int hh, hl, hb, hg, hdh, hdx, hdr, acc, dgp, dlp, dbsp;
} bwd_flags;

KEEL_INLINE void part_add(float *p, r256_v t, r256_step s)
{
    r256_store(p, r256_add(r256_load(p, s), t), s, 0);
}

KEEL_INLINE void bwd_row(const bwd_flags f, size_t dim, const float *dy, const float *dh,
                         const r256_row *w, const float *hrow, float rs, int have_rstd,
                         const float *gamma, float eps, float *dx, float *dr, float *const *parts)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    const float *hv = f.hh ? hrow : NULL;
    if (!have_rstd && (want_g || f.dgp))
        rs = keel_rms_rstd(h_sumsq(w, hv, NULL, dim, f.hl, f.hb), dim, eps);
    const size_t full = dim & ~(size_t)15;
    const k256_tail t = k256_tail_of(dim - full);
    const r256_step F = {1, &t}, T = {0, &t};
    float b = 0.0f;
    if (want_g) { /* sweep 1: Sgx = R(g * h) */
        r256_d a = r256_dzero();
        for (size_t j = 0; j < dim; j += 16) {
            const r256_step s = j < full ? F : T;
            r256_v g = r256_load(dy + j, s);
            if (f.hg)
                g = r256_mul(g, r256_load(gamma + j, s));
            const r256_d gd = r256_cvt(g), hd = r256_cvt(h_at(w, hv, j, s, f.hl, f.hb));
            r256_d p;
            for (int i = 0; i < 4; i++)
                p.q[i] = _mm256_mul_pd(gd.q[i], hd.q[i]);
            r256_acc(&a, p, s);
        }
        b = (float)((double)rs * (r256_reduce(a) / (double)dim));
    }
    const r256_v vb = r256_set1(b), vr = r256_set1(rs);
    for (size_t j = 0; j < dim; j += 16) { /* sweep 2 */
        const r256_step s = j < full ? F : T;
        const r256_v xhat = r256_mul(h_at(w, hv, j, s, f.hl, f.hb), vr);
        const r256_v dyv = r256_load(dy + j, s);
        if (want_g) {
            const r256_v g = f.hg ? r256_mul(dyv, r256_load(gamma + j, s)) : dyv;
            r256_v G = r256_mul(vr, r256_sub(g, r256_mul(xhat, vb)));
            if (f.hdh)
                G = r256_add(r256_load(dh + j, s), G);
            const r256_v rj = f.dlp ? r256_load(w->r + j, s) : G;
            if (f.hdx) {
                r256_v o = r256_mul(w->alpha, G);
                if (f.acc)
                    o = r256_add(r256_load(dx + j, s), o);
                r256_store(dx + j, o, s, 0);
            }
            if (f.hdr) {
                r256_v o = w->lambda ? r256_mul(r256_load(w->lambda + j, s), G) : G;
                if (f.acc)
                    o = r256_add(r256_load(dr + j, s), o);
                r256_store(dr + j, o, s, 0);
            }
            if (f.dlp)
                part_add(parts[KEEL_PART_DLAMBDA] + j, r256_mul(G, rj), s);
            if (f.dbsp)
                part_add(parts[KEEL_PART_DBIAS] + j, G, s);
        }
        if (f.dgp)
            part_add(parts[KEEL_PART_DGAMMA] + j, r256_mul(dyv, xhat), s);
    }
}

KEEL_INLINE void bwd_rows(const bwd_flags f, size_t rows, size_t dim, const float *dy, size_t dys,
                          const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                          size_t hs, const float *rstd, const float *gamma, float eps,
                          const keel_f32_res_grads *out)
{
    for (size_t r = 0; r < rows; r++) {
        const r256_row w = r256_row_of(res, r);
        bwd_row(f, dim, dy + r * dys, f.hdh ? dh + r * dhs : NULL, &w, f.hh ? h + r * hs : NULL,
                rstd ? rstd[r] : 0.0f, rstd != NULL, gamma, eps,
                f.hdx ? out->dx + r * out->dx_stride : NULL,
                f.hdr ? out->dr + r * out->dr_stride : NULL, out->parts);
    }
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
