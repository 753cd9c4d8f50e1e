/* Fused residual add + RMSNorm, float32, AVX-512: exactly the bits of
 * f32_add_rmsnorm__scalar.c, 16 floats at a time (see f32_add_layernorm__avx512.c for the
 * plan: h kept in a buffer after the first sweep; beyond L2 a pipeline that reads one row
 * while it writes another; large outputs streamed). */
#include <math.h>

#include "kernels.h"
#include "norm_finish.h"
#include "residual__avx512.h"

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

KEEL_INLINE void fwd_row(const r512_row *w, size_t dim, float *h, float *y, const float *gamma,
                         float eps, float *rstd_out, int pf, const float *pfx, const float *pfr,
                         int nt, float *buf, int hl, int hb, int hg, int hh)
{
    const float *hv = dim <= BUF_FLOATS ? buf : NULL;
    const float rs = keel_rms_rstd(h_sumsq(w, NULL, hv ? buf : NULL, dim, hl, hb), dim, eps);
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
    if (rstd_out)
        *rstd_out = rs;
}

/* Rows from beyond the caches go through a pipeline of two rows (the plan of
 * f32_add_layernorm__avx512.c): one sweep over j computes row c's h from memory into its
 * buffer with R(h * h) and writes row a's h and y from its buffer, so that the reads and the
 * streamed writes go to memory together (keel_profile_loop addrmsf 4096 4096, 1 thread: 14.3
 * ms one row at a time, 11.8 ms pipelined; the copy floor of the bytes 11.4-11.8 ms). Each
 * row's arithmetic is fwd_row's: the same bits. */
KEEL_INLINE void pipe_sweep(size_t dim, int do_out, const float *ha, float *h, float *y, float rs,
                            int nt, int do_sum, const r512_row *wc, float *hc, double *sumsq,
                            const float *gamma, int hl, int hb, int hg, int hh)
{
    const size_t full = dim & ~(size_t)15;
    const __m512 vr = _mm512_set1_ps(rs);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (size_t j = 0; j < dim; j += 16) {
        const int fl = j < full;
        const __mmask16 k = fl ? 0xffff : k512_tail16(dim - full);
        if (do_sum) {
            const __m512 v = r512_h_piped(wc, hc, j, k, fl, hl, hb);
            const __m512d t0 = r512_lo(v), t1 = r512_hi(v);
            s0 = k512_add_mask(s0, k512_lo8(k), _mm512_mul_pd(t0, t0));
            s1 = k512_add_mask(s1, k512_hi8(k), _mm512_mul_pd(t1, t1));
        }
        if (do_out)
            out_step(h, y, j, _mm512_load_ps(ha + j), vr, nt, k, fl, gamma, hg, hh);
    }
    if (do_sum)
        *sumsq = k512_reduce16(s0, s1);
}

#define PIPE_ROW r512_row
#define PIPE_ROW_OF r512_row_of
#define PIPE_ALIGNED r512_aligned
#define PIPE_RMSNORM
#include "add_norm_pipe.h"

KEEL_INLINE void fwd_rows(size_t rows, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                          float *y, size_t ys, const float *gamma, float eps, float *rstd, int hl,
                          int hb, int hg, int hh)
{
    float buf[2 * BUF_FLOATS] __attribute__((aligned(64)));
    const size_t bytes = rows * dim * sizeof(float);
    const int pf = bytes > KEEL_PREFETCH_ABOVE, stream = (hh ? 2 : 1) * bytes > R512_STREAM_ABOVE;
    if (pf && dim <= BUF_FLOATS) {
        fwd_rows_piped(rows, dim, res, h, hs, y, ys, gamma, eps, rstd, stream, buf, hl, hb, hg, hh);
        return;
    }
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const r512_row w = r512_row_of(res, r);
        const int more = r + 1 < rows;
        const float *pfx = more ? w.x + res->x_stride : w.x, *pfr = more ? w.r + res->r_stride : w.r;
        float *hr = hh ? h + r * hs : NULL, *yr = y + r * ys;
        const int nt = stream && r512_aligned(yr) && (!hh || r512_aligned(hr));
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

void keel_f32_add_rmsnorm_fwd__avx512(size_t rows, size_t dim, const keel_f32_res *res, float *h,
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

KEEL_INLINE void bwd_row(const bwd_flags f, size_t dim, const float *dy, const float *dh,
                         const r512_row *w, const float *hrow, float rs, int have_rstd,
                         const float *gamma, float eps, float *dx, float *dr, float *const *parts,
                         const r512_bwd_mem *mem)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    const float *hv = f.hh ? hrow : NULL;
    if (!have_rstd && (want_g || f.dgp))
        rs = keel_rms_rstd(h_sumsq(w, hv, NULL, dim, f.hl, f.hb), dim, eps);
    const size_t full = dim & ~(size_t)15;
    const __mmask16 k = k512_tail16(dim - full);
    const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
#define HV(j, mk, fl) (f.hh ? ((fl) ? _mm512_loadu_ps(hv + (j)) : _mm512_maskz_loadu_ps(mk, hv + (j))) \
                            : r512_h(w, j, mk, fl, f.hl, f.hb))
#define LD(p, mk, fl) ((fl) ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mk, p))
    float b = 0.0f;
    if (want_g) { /* sweep 1: Sgx = R(g * h) */
        __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
        for (size_t j = 0; j < dim; j += 16) {
            const int fl = j < full;
            const __mmask16 mk = fl ? 0xffff : k;
            const __m512 v = HV(j, mk, fl);
            __m512 g = LD(dy + j, mk, fl);
            if (f.hg)
                g = _mm512_mul_ps(g, LD(gamma + j, mk, fl));
            s0 = _mm512_mask_add_pd(s0, fl ? 0xff : klo, s0, _mm512_mul_pd(r512_lo(g), r512_lo(v)));
            s1 = _mm512_mask_add_pd(s1, fl ? 0xff : khi, s1, _mm512_mul_pd(r512_hi(g), r512_hi(v)));
        }
        b = (float)((double)rs * (k512_reduce16(s0, s1) / (double)dim));
    }
    const __m512 vb = _mm512_set1_ps(b), vr = _mm512_set1_ps(rs);
    for (size_t j = 0; j < dim; j += 16) { /* sweep 2 */
        const int fl = j < full;
        const __mmask16 mk = fl ? 0xffff : k;
        const __m512 xhat = _mm512_mul_ps(HV(j, mk, fl), vr);
        const __m512 dyv = LD(dy + j, mk, fl);
        if (want_g) {
            const __m512 g = f.hg ? _mm512_mul_ps(dyv, LD(gamma + j, mk, fl)) : dyv;
            __m512 G = _mm512_mul_ps(vr, _mm512_sub_ps(g, _mm512_mul_ps(xhat, vb)));
            if (f.hdh)
                G = _mm512_add_ps(LD(dh + j, mk, fl), G);
            const __m512 rj = f.dlp ? LD(w->r + j, mk, fl) : G;
            if (f.hdx) {
                __m512 o = _mm512_mul_ps(w->alpha, G);
                if (f.acc)
                    o = _mm512_add_ps(LD(dx + j, mk, fl), o);
                r512_store(dx + j, o, mk, fl, mem->nt);
            }
            if (f.hdr) {
                __m512 o = w->lambda ? _mm512_mul_ps(LD(w->lambda + j, mk, fl), G) : G;
                if (f.acc)
                    o = _mm512_add_ps(LD(dr + j, mk, fl), o);
                r512_store(dr + j, o, mk, fl, mem->nt);
            }
            if (f.dlp)
                _mm512_mask_storeu_ps(parts[KEEL_PART_DLAMBDA] + j, mk,
                                      _mm512_add_ps(LD(parts[KEEL_PART_DLAMBDA] + j, mk, fl), _mm512_mul_ps(G, rj)));
            if (f.dbsp)
                _mm512_mask_storeu_ps(parts[KEEL_PART_DBIAS] + j, mk,
                                      _mm512_add_ps(LD(parts[KEEL_PART_DBIAS] + j, mk, fl), G));
        }
        if (f.dgp)
            _mm512_mask_storeu_ps(parts[KEEL_PART_DGAMMA] + j, mk,
                                  _mm512_add_ps(LD(parts[KEEL_PART_DGAMMA] + j, mk, fl), _mm512_mul_ps(dyv, xhat)));
        if (fl)
            r512_bwd_prefetch(mem, j);
    }
#undef HV
#undef LD
}

KEEL_INLINE void bwd_rows(const bwd_flags f, size_t rows, size_t dim, const float *dy, size_t dys,
                          const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                          size_t hs, const float *rstd, const float *gamma, float eps,
                          const keel_f32_res_grads *out)
{
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const r512_row w = r512_row_of(res, r);
        const r512_bwd_mem mem = r512_bwd_mem_of(out, f.acc, r, rows, dy, dys, f.hdh ? dh : NULL,
                                                 dhs, f.hh ? h : NULL, hs, res);
        streamed |= mem.nt;
        bwd_row(f, dim, dy + r * dys, f.hdh ? dh + r * dhs : NULL, &w, f.hh ? h + r * hs : NULL,
                rstd ? rstd[r] : 0.0f, rstd != NULL, gamma, eps,
                f.hdx ? out->dx + r * out->dx_stride : NULL,
                f.hdr ? out->dr + r * out->dr_stride : NULL, out->parts, &mem);
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
