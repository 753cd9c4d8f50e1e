/* What the fused add + norm bodies (f32_add_layernorm_simd.h, f32_add_rmsnorm_simd.h) share,
 * written once over keel's lanes (lanes__<isa>.h; the residual of residual_simd.h): the memory
 * policy of the forwards (which calls go through the row pipeline, which stream, what is fetched
 * ahead), the row sums both forwards and backwards take (R(h), R((h - mean)^2), R(h * h)), and
 * the whole backward of both norms (ln: a constant in every instance), one row at a time or
 * through a two-row pipeline. Each operation is kernels.h's, in its order: the bits of
 * f32_add_layernorm__scalar.c and f32_add_rmsnorm__scalar.c. The short-row batches of the
 * forwards are row_batches_simd.h's. */
#ifndef KEEL_KERNELS_ADD_NORM_SIMD_H
#define KEEL_KERNELS_ADD_NORM_SIMD_H

#include <string.h>

#include "kernels.h"
#include "norm_finish.h"
#include "residual_simd.h"
#include "variants.h"

/* Rows of up to BUF_FLOATS keep h in a buffer on the stack (L1/L2) after the first sweep, so
 * the other sweeps read one array instead of recomputing h from two; longer rows recompute it. */
#define BUF_FLOATS 8192

/* A fused forward that writes more than ADD_NORM_STREAM_ABOVE bytes (h and y) streams its
 * outputs past the caches: they would only evict the rows still to be read, and a
 * write-allocating store reads every line it writes, a third more traffic than the floor's
 * copy. Below, the outputs stay in cache for the next op (measured: streaming cached-size
 * outputs is slower). A row streams when its start is kr_streamable, else it is stored
 * normally; the call ends with kl_stream_fence. */
#define ADD_NORM_STREAM_ABOVE ((size_t)8 << 20)

/* h at j: from hv (a saved or buffered row) or recomputed from w. */
KEEL_INLINE kr_f16 h_at(const res_row *w, const float *hv, size_t j, kstep s, int hl, int hb)
{
    return hv ? ks_load(hv + j, s) : res_h(w, j, s, hl, hb);
}

/* The pipelines' read of row w at j: h stored into the row's buffer hc as well (a whole step:
 * the buffer has room), the loads KR_PIPE_AHEAD floats behind their prefetches (1 KiB, 16 lines
 * a stream; measured at 4096x768 to 8192x8192: 128 to 768 within 5%, none 10-40% slower). Past
 * the row's end it fetches the start of the next row when the rows are contiguous; a prefetch
 * never faults. */
KEEL_INLINE kr_f16 h_piped(const res_row *w, float *hc, size_t j, kstep s, int hl, int hb)
{
    if (s.full) {
        kr_prefetch_l1(w->x + j + KR_PIPE_AHEAD);
        kr_prefetch_l1(w->r + j + KR_PIPE_AHEAD);
    }
    const kr_f16 v = res_h(w, j, s, hl, hb);
    kr_store(hc + j, v);
    return v;
}

/* The steps of a row of dim floats: F whole, T the tail (tail: its shape). */
#define KS_STEPS(dim)                                                                              \
    const size_t full = (dim) & ~(size_t)15;                                                       \
    const kr_tail tail = kr_tail_of((dim)-full);                                                   \
    const kstep F = {&tail, 1}, T = {&tail, 0}

/* The steps of a row (after KS_STEPS(dim)): the body, a braced block over size_t j and kstep
 * s, runs for every whole step with s = F, then for the tail step, if the row has one, with
 * s = T. Two loops, not one that tests j < full each step: s.full is then a constant in each
 * and the tail's masked loads, stores and adds leave the whole steps' loop (AVX2's masked tails
 * of two ymm per 16 floats cost 8-18% on short and mid rows of the fused add + LayerNorm when
 * the test stayed in the loop). The order of the steps is the row's, so the bits are the same. */
#define KS_FOR(dim, ...)                                                                           \
    do {                                                                                           \
        size_t j = 0;                                                                              \
        for (; j < full; j += 16) {                                                                \
            const kstep s = F;                                                                     \
            __VA_ARGS__                                                                            \
        }                                                                                          \
        if (j < (dim)) {                                                                           \
            const kstep s = T;                                                                     \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    } while (0)

/* R(h) of one row. hv: the h row to read, or NULL to compute it from w (and store it into buf
 * when buf is not NULL). */
KEEL_INLINE double h_sum(const res_row *w, const float *hv, float *buf, size_t dim, int hl, int hb)
{
    KS_STEPS(dim);
    kr_d16 a = kr_dzero();
    KS_FOR(dim, {
        const kr_f16 v = h_at(w, hv, j, s, hl, hb);
        if (buf)
            kr_store(buf + j, v);
        a = ks_dadd(a, kr_widen(v), s);
    });
    return kr_reduce16(a);
}

/* R((h - mean)^2) of one row (hv or recomputed from w, as h_sum). pf: prefetch the next row's x
 * and r (pfx, pfr) meanwhile. */
KEEL_INLINE double h_centred(const res_row *w, const float *hv, size_t dim, double mean, int pf,
                             const float *pfx, const float *pfr, int hl, int hb)
{
    KS_STEPS(dim);
    kr_d16 a = kr_dzero();
    KS_FOR(dim, {
        const kr_d16 t = kr_dsub(kr_widen(h_at(w, hv, j, s, hl, hb)), kr_dset1(mean));
        a = ks_dadd(a, kr_dmul(t, t), s);
        if (pf && s.full) {
            kr_prefetch_l1(pfx + j);
            kr_prefetch_l1(pfr + j);
        }
    });
    return kr_reduce16(a);
}

/* R(h * h) of one row (hv or recomputed from w, and stored into buf, as h_sum). */
KEEL_INLINE double h_sumsq(const res_row *w, const float *hv, float *buf, size_t dim, int hl,
                           int hb)
{
    KS_STEPS(dim);
    kr_d16 a = kr_dzero();
    KS_FOR(dim, {
        const kr_f16 v = h_at(w, hv, j, s, hl, hb);
        if (buf)
            kr_store(buf + j, v);
        const kr_d16 d = kr_widen(v);
        a = ks_dadd(a, kr_dmul(d, d), s);
    });
    return kr_reduce16(a);
}

/* mean_d and rstd_f of one LayerNorm row (kernels.h), h read from hv or recomputed. */
KEEL_INLINE double ln_stats(const res_row *w, const float *hv, size_t dim, float eps, float *rstd,
                            int hl, int hb)
{
    const double mean = keel_ln_mean(h_sum(w, hv, NULL, dim, hl, hb), dim);
    *rstd = keel_ln_rstd(h_centred(w, hv, dim, mean, 0, NULL, NULL, hl, hb), dim, eps);
    return mean;
}

/* ---- the forwards' memory policy -------------------------------------------------------- */

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
    if (exists && !(stream && kr_streamable(y) && (!h || kr_streamable(h)))) {
        n.h = h;
        n.y = y;
    }
    return n;
}

/* In a sweep's step at j (full steps): the next rows' lines at j. */
KEEL_INLINE void pipe_next_fetch(const pipe_next *n, size_t j)
{
    if (n->y) {
        kr_prefetch_l1(n->y + j);
        if (n->h)
            kr_prefetch_l1(n->h + j);
    }
}

/* Whether the call's rows go in batches (a path that has them: KB_ROWS, row_batches_simd.h), at every size: a
 * row at a time through the pipeline they paid their divisions and square root alone. keel
 * bench, 1 thread, add+ln / add+rms fwd, fraction of the floor: 65536x16 0.50 / 0.78 -> 0.92 /
 * 0.92, 262144x16 (streamed) 0.59 / 0.93 -> 1.12 / 1.10, 131072x8 0.25 / 0.41 -> 0.56 / 0.78;
 * KEEL_ISA=avx2 65536x16 0.34 / 0.64 -> 0.90 / 0.91. */
KEEL_INLINE int pipe_batches_take(size_t rows, size_t dim)
{
#ifdef KB_ROWS
    return dim <= KB_TAKE_MAX && rows >= KB_ROWS;
#else
    (void)rows;
    (void)dim;
    return 0;
#endif
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
 * 16 floats lose either way (4096x16: 0.38 / 0.64 -> 0.35 / 0.56). The rows beyond the batches
 * (KB_TAKE_MAX, 48 floats on AVX-512): 4681x56, add+ln / post / add+rms, a row at a time
 * 0.83 / 0.63 / 0.75 -> pipelined 0.90 / 0.74 / 0.98 (AVX2 0.68 / 0.51 / 0.81 -> 0.68 / 0.51 /
 * 0.92). */
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
    res_row w;
    const float *pfx, *pfr;
    float *h, *y;
    int more, nt;
} pipe_one;

KEEL_INLINE pipe_one pipe_one_of(const keel_f32_res *res, size_t r, size_t rows, float *h,
                                 size_t hs, float *y, size_t ys, int stream)
{
    pipe_one o;
    o.w = res_row_of(res, r);
    o.more = r + 1 < rows;
    o.pfx = o.more ? o.w.x + res->x_stride : o.w.x;
    o.pfr = o.more ? o.w.r + res->r_stride : o.w.r;
    o.h = h ? h + r * hs : NULL;
    o.y = y + r * ys;
    o.nt = stream && kr_streamable(o.y) && (!h || kr_streamable(o.h));
    return o;
}

/* Short rows of a call that does not stream go PIPE_GROUP at a time (the bodies' fwd_group),
 * each stage of the group's rows before the next stage: the rows' chains are independent, and
 * issued side by side their latencies (two reductions, three divisions and a square root a
 * LayerNorm row) overlap. Measured, 1 thread, one row at a time -> in groups of 4 (8 measured
 * no better): keel_profile_loop (all in cache) add+ln 4096x16 66-72 -> 45-49 us, 4096x32 92 ->
 * 70 us, add+rms 4096x16 36-39 -> 27-30 us; keel bench (outputs out of cache), fraction of the
 * floor, add+ln 4096x16 0.41 -> 0.57, 4096x32 0.71 -> 0.80, but 4096x48 0.92 -> 0.82; add+rms
 * 4096x16 0.67 -> 0.81, but 4096x32 0.80 -> 0.63. Hence LayerNorm rows of up to 32 floats,
 * RMSNorm rows of up to 16. */
#define PIPE_GROUP 4
#define PIPE_GROUP_BELOW 64 /* the rows' buffers: PIPE_GROUP of this many floats */
#define PIPE_LN_GROUP_MAX 32
#define PIPE_RMS_GROUP_MAX 16

/* ---- backward ----------------------------------------------------------------------------
 * Per row (kernels.h): sweep 1's sums (LayerNorm: Sx = R(u), u = (double)h - (double)mean; with
 * want_g Sg = R(g), Sgu = R(g * u); RMSNorm: Sgx = R(g * h); g = dy * gamma), then sweep 2:
 * G = dh + v (v the norm's dx), the residual's gradients from G and the partials. */

/* What a backward computes; each field a constant in the fast instances, a run-time value in
 * the generic one. */
typedef struct bwd_flags {
    int ln;         /* LayerNorm (else RMSNorm) */
    int hh;         /* h saved (else recomputed: hl, hb) */
    int hl, hb, hg; /* lambda, bias, gamma */
    int hdh;        /* dh given */
    int hdx, hdr, acc;
    int dgp, dbp, dlp, dbsp;
} bwd_flags;

/* One row of a fused backward: its inputs (dy, dh or NULL, h saved or NULL, the residual row
 * w) and outputs (dx, dr or NULL). */
typedef struct bwd_row {
    const float *dy, *dh, *hv;
    res_row w;
    float *dx, *dr;
} bwd_row;

KEEL_INLINE bwd_row bwd_row_of(size_t r, const float *dy, size_t dys, const float *dh, size_t dhs,
                               const keel_f32_res *res, const float *h, size_t hs,
                               const keel_f32_res_grads *out)
{
    bwd_row p;
    p.dy = dy + r * dys;
    p.dh = dh ? dh + r * dhs : NULL;
    p.hv = h ? h + r * hs : NULL;
    p.w = res_row_of(res, r);
    p.dx = out->dx ? out->dx + r * out->dx_stride : NULL;
    p.dr = out->dr ? out->dr + r * out->dr_stride : NULL;
    return p;
}

/* part[j ..] += t (a per-feature partial sum of the row block). */
KEEL_INLINE void part_add(float *part, size_t j, kstep s, kr_f16 t)
{
    ks_store(part + j, kr_add(ks_load(part + j, s), t), s, 0);
}

/* The residual's gradients at j from G (the gradient reaching h, dh included): dx = alpha * G,
 * dr = lambda * G (accumulated with acc), and the partials dlambda += G * r, dbias += G. r is
 * read before dx or dr may overwrite it. */
KEEL_INLINE void res_grads(const bwd_flags f, const bwd_row *p, size_t j, kstep s, kr_f16 G,
                           float *const *parts, int nt)
{
    const kr_f16 rj = f.dlp ? ks_load(p->w.r + j, s) : G;
    if (f.hdx) {
        kr_f16 o = kr_mul(p->w.alpha, G);
        if (f.acc)
            o = kr_add(ks_load(p->dx + j, s), o);
        ks_store(p->dx + j, o, s, nt);
    }
    if (f.hdr) {
        kr_f16 o = p->w.lambda ? kr_mul(ks_load(p->w.lambda + j, s), G) : G;
        if (f.acc)
            o = kr_add(ks_load(p->dr + j, s), o);
        ks_store(p->dr + j, o, s, nt);
    }
    if (f.dlp)
        part_add(parts[KEEL_PART_DLAMBDA], j, s, kr_mul(G, rj));
    if (f.dbsp)
        part_add(parts[KEEL_PART_DBIAS], j, s, G);
}

/* Whether row r's dx and dr are streamed (the hint given, no accumulate, rows that start
 * kr_streamable). */
KEEL_INLINE int bwd_nt(const keel_f32_res_grads *out, int acc, size_t r)
{
    return (out->hints & KEEL_KBWD_STREAM) && !acc &&
           (!out->dx || kr_streamable(out->dx + r * out->dx_stride)) &&
           (!out->dr || kr_streamable(out->dr + r * out->dr_stride));
}

/* A row's memory hints (keel_f32_res_grads.hints): the next row's inputs, prefetched into L2 a
 * line per step of sweep 2 (NULL: none), and whether dx and dr are streamed. */
typedef struct bwd_mem {
    const float *next[4];
    int nt;
} bwd_mem;

KEEL_INLINE bwd_mem bwd_mem_of(const keel_f32_res_grads *out, int acc, size_t r, size_t rows,
                               const float *dy, size_t dys, const float *dh, size_t dhs,
                               const float *h, size_t hs, const keel_f32_res *res)
{
    bwd_mem m = {{NULL, NULL, NULL, NULL}, 0};
    if ((out->hints & KEEL_KBWD_PREFETCH) && r + 1 < rows) {
        m.next[0] = dy + (r + 1) * dys;
        m.next[1] = dh ? dh + (r + 1) * dhs : NULL;
        m.next[2] = h ? h + (r + 1) * hs : res->x ? res->x + (r + 1) * res->x_stride : NULL;
        m.next[3] = !h && res->r ? res->r + (r + 1) * res->r_stride : NULL;
    }
    m.nt = bwd_nt(out, acc, r);
    return m;
}

/* Sweep 1's sums (RMSNorm: sp alone, Sgx) and the mean they centre on. The mean is kept a
 * double and broadcast where it is used: a kr_d16 of it (four ymm on AVX2, each the same
 * broadcast) kept across the loop spilled there (keel_profile_loop addlnb 4096 32 on AVX2, 1.18x
 * the time of the hand-written kernel). */
typedef struct s1_acc {
    double md;
    kr_d16 sx, sg, sp;
} s1_acc;

KEEL_INLINE s1_acc s1_begin(float m)
{
    const kr_d16 z = kr_dzero();
    const s1_acc a = {(double)m, z, z, z};
    return a;
}

KEEL_INLINE kr_f16 bwd_h(const bwd_flags f, const bwd_row *p, size_t j, kstep s)
{
    return f.hh ? ks_load(p->hv + j, s) : res_h(&p->w, j, s, f.hl, f.hb);
}

KEEL_INLINE void s1_step(const bwd_flags f, int want_g, s1_acc *a, const bwd_row *p, size_t j,
                         kstep s, const float *gamma)
{
    if (!f.ln && !want_g)
        return;
    const kr_d16 hd = kr_widen(bwd_h(f, p, j, s));
    const kr_d16 u = f.ln ? kr_dsub(hd, kr_dset1(a->md)) : hd;
    if (f.ln)
        a->sx = ks_dadd(a->sx, u, s);
    if (want_g) {
        kr_f16 g = ks_load(p->dy + j, s);
        if (f.hg)
            g = kr_mul(g, ks_load(gamma + j, s));
        const kr_d16 gd = kr_widen(g);
        if (f.ln)
            a->sg = ks_dadd(a->sg, gd, s);
        a->sp = ks_dadd(a->sp, kr_dmul(gd, u), s);
    }
}

/* Sweep 2's constants of one row: a = Sg / n, b, delta (LayerNorm), mean, rstd. */
typedef struct s2_row {
    kr_f16 va, vb, vdf, vm, vr;
} s2_row;

KEEL_INLINE s2_row s2_zero(void)
{
    const kr_f16 z = kr_set1(0.0f);
    const s2_row c = {z, z, z, z, z};
    return c;
}

KEEL_INLINE s2_row s1_end(const bwd_flags f, const s1_acc *a, size_t dim, float m, float rs)
{
    s2_row c = s2_zero();
    if (f.ln) {
        const double n = (double)dim;
        const double delta = kr_reduce16(a->sx) / n;
        const double Sg = kr_reduce16(a->sg), Sgu = kr_reduce16(a->sp);
        c.va = kr_set1((float)(Sg / n));
        c.vb = kr_set1((float)((double)rs * ((Sgu - delta * Sg) / n)));
        c.vdf = kr_set1((float)delta);
        c.vm = kr_set1(m);
    } else {
        c.vb = kr_set1(keel_rms_bwd_b(rs, kr_reduce16(a->sp), dim));
    }
    c.vr = kr_set1(rs);
    return c;
}

/* Sweep 2 at j: G = dh + rstd * ((g - a) - xhat * b) (RMSNorm without a), the residual's
 * gradients from it, dgamma += dy * xhat, dbeta += dy. nt: dx and dr streamed. */
KEEL_INLINE void s2_step(const bwd_flags f, int want_g, const s2_row *c, const bwd_row *p, size_t j,
                         kstep s, const float *gamma, float *const *parts, int nt)
{
    const kr_f16 v = bwd_h(f, p, j, s);
    const kr_f16 xhat = f.ln ? kr_mul(kr_sub(kr_sub(v, c->vm), c->vdf), c->vr) : kr_mul(v, c->vr);
    const kr_f16 dyv = ks_load(p->dy + j, s);
    if (want_g) {
        const kr_f16 g = f.hg ? kr_mul(dyv, ks_load(gamma + j, s)) : dyv;
        const kr_f16 t = kr_sub(f.ln ? kr_sub(g, c->va) : g, kr_mul(xhat, c->vb));
        kr_f16 G = kr_mul(c->vr, t);
        if (f.hdh)
            G = kr_add(ks_load(p->dh + j, s), G);
        res_grads(f, p, j, s, G, parts, nt);
    }
    if (f.dgp)
        part_add(parts[KEEL_PART_DGAMMA], j, s, kr_mul(dyv, xhat));
    if (f.ln && f.dbp)
        part_add(parts[KEEL_PART_DBETA], j, s, dyv);
}

/* One row: the statistics (given, or recomputed as the forward does), sweep 1, sweep 2 with
 * the next row's inputs fetched meanwhile (mem). */
KEEL_INLINE void bwd_one(const bwd_flags f, size_t dim, const bwd_row *p, float m, float rs,
                         int have_stats, const float *gamma, float eps, float *const *parts,
                         const bwd_mem *mem)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    if (!have_stats && (want_g || f.dgp)) {
        if (f.ln)
            m = (float)ln_stats(&p->w, p->hv, dim, eps, &rs, f.hl, f.hb);
        else
            rs = keel_rms_rstd(h_sumsq(&p->w, p->hv, NULL, dim, f.hl, f.hb), dim, eps);
    }
    KS_STEPS(dim);
    s1_acc a = s1_begin(m);
    if (f.ln || want_g)
        KS_FOR(dim, { s1_step(f, want_g, &a, p, j, s, gamma); });
    const s2_row c = s1_end(f, &a, dim, m, rs);
    const int pf = mem->next[0] != NULL; /* dy: set whenever the next row is fetched */
    KS_FOR(dim, {
        s2_step(f, want_g, &c, p, j, s, gamma, parts, mem->nt);
        if (pf && s.full)
            for (int i = 0; i < 4; i++)
                if (mem->next[i])
                    kr_prefetch_l2(mem->next[i] + j);
    });
}

/* Rows from beyond L2 with their statistics given: a pipeline of two rows, as in the forwards:
 * sweep t runs row t's sweep 1 (h, or x and r, and dy read from memory KR_PIPE_AHEAD behind
 * their prefetches) and row t - 1's sweep 2 (its h and dy in cache, dh from memory, dx and dr
 * written), so that the reads and the writes go to memory together. Each row's arithmetic is
 * bwd_one's: the same bits. Measured (keel_profile_loop, 1 thread, dy, h and dh read, dx written
 * over dh, 4096x4096): addlnb 19.9 ms one row at a time with the next row prefetched into L2,
 * 14.9 ms pipelined (prefetch distances of 1 to 4 KiB alike); addrmsb 18.7 -> 14.1 ms (AVX2
 * 21.0-21.9 -> 14.0-14.6 ms). Without the statistics (recomputed from h, more sweeps a row) the
 * rows go one at a time. */
KEEL_INLINE void bwd_rows_piped(const bwd_flags f, size_t rows, size_t dim, const float *dy,
                                size_t dys, const float *dh, size_t dhs, const keel_f32_res *res,
                                const float *h, size_t hs, const float *mean, const float *rstd,
                                const float *gamma, const keel_f32_res_grads *out)
{
    const int want_g = f.hdx || f.hdr || f.dlp || f.dbsp;
    KS_STEPS(dim);
    float *const parts[4] = {out->parts[0], out->parts[1], out->parts[2], out->parts[3]};
    int streamed = 0;
    s2_row c = s2_zero();
    for (size_t t = 0; t <= rows; t++) {
        const int do1 = t < rows, do2 = t >= 1;
        const bwd_row p1 =
            bwd_row_of(do1 ? t : 0, dy, dys, f.hdh ? dh : NULL, dhs, res, f.hh ? h : NULL, hs, out);
        const bwd_row p2 = bwd_row_of(do2 ? t - 1 : 0, dy, dys, f.hdh ? dh : NULL, dhs, res,
                                      f.hh ? h : NULL, hs, out);
        const int nt = do2 && bwd_nt(out, f.acc, t - 1);
        streamed |= nt;
        const float m = do1 && mean ? mean[t] : 0.0f;
        s1_acc a = s1_begin(m);
        KS_FOR(dim, {
            if (do1) {
                if (s.full) {
                    kr_prefetch_l1(p1.dy + j + KR_PIPE_AHEAD);
                    if (f.hh) {
                        kr_prefetch_l1(p1.hv + j + KR_PIPE_AHEAD);
                    } else {
                        kr_prefetch_l1(p1.w.x + j + KR_PIPE_AHEAD);
                        kr_prefetch_l1(p1.w.r + j + KR_PIPE_AHEAD);
                    }
                }
                s1_step(f, want_g, &a, &p1, j, s, gamma);
            }
            if (do2) {
                if (s.full && f.hdh)
                    kr_prefetch_l1(p2.dh + j + KR_PIPE_AHEAD);
                /* outputs stored normally (not streamed, not over dh): fetched ahead too
                 * (keel_profile_loop addlnb2, dx apart from dh: 1024x768 413-431 -> 345 us,
                 * 4096x1000 1.99-2.04 -> 1.58-1.61 ms) */
                if (s.full && !nt) {
                    if (f.hdx && p2.dx != p2.dh)
                        kr_prefetch_l1(p2.dx + j + KR_PIPE_AHEAD);
                    if (f.hdr && p2.dr != p2.dh)
                        kr_prefetch_l1(p2.dr + j + KR_PIPE_AHEAD);
                }
                s2_step(f, want_g, &c, &p2, j, s, gamma, parts, nt);
            }
        });
        if (do1)
            c = s1_end(f, &a, dim, m, rstd[t]);
    }
    if (streamed)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

/* The rows of a backward: through the pipeline when the operator says they lie beyond L2
 * (KEEL_KBWD_PREFETCH) and the statistics are given, else one at a time. */
KEEL_INLINE void bwd_rows(const bwd_flags f, size_t rows, size_t dim, const float *dy, size_t dys,
                          const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                          size_t hs, const float *mean, const float *rstd, const float *gamma,
                          float eps, const keel_f32_res_grads *out)
{
    const int have_stats = f.ln ? mean != NULL : rstd != NULL;
    if ((out->hints & KEEL_KBWD_PREFETCH) && have_stats && rstd) {
        bwd_rows_piped(f, rows, dim, dy, dys, dh, dhs, res, h, hs, mean, rstd, gamma, out);
        return;
    }
    int streamed = 0;
    for (size_t r = 0; r < rows; r++) {
        const bwd_mem mem = bwd_mem_of(out, f.acc, r, rows, dy, dys, f.hdh ? dh : NULL, dhs,
                                       f.hh ? h : NULL, hs, res);
        streamed |= mem.nt;
        const bwd_row p =
            bwd_row_of(r, dy, dys, f.hdh ? dh : NULL, dhs, res, f.hh ? h : NULL, hs, out);
        bwd_one(f, dim, &p, mean ? mean[r] : 0.0f, rstd ? rstd[r] : 0.0f, have_stats, gamma, eps,
                out->parts, &mem);
    }
    if (streamed)
        kl_stream_fence(); /* the streamed stores are visible before the call returns */
}

/* A fused backward (ln a constant; mean NULL for RMSNorm): the pre-norm block's (h saved, dh in,
 * dx out, dgamma, and dbeta for LayerNorm) with every flag a constant, the rest through the
 * generic instance. */
KEEL_INLINE void add_norm_bwd(int ln, size_t rows, size_t dim, const float *dy, size_t dys,
                              const float *dh, size_t dhs, const keel_f32_res *res, const float *h,
                              size_t hs, const float *mean, const float *rstd, const float *gamma,
                              float eps, const keel_f32_res_grads *out)
{
    const bwd_flags f = {ln,
                         h != NULL,
                         res->lambda != NULL,
                         res->bias != NULL,
                         gamma != NULL,
                         dh != NULL,
                         out->dx != NULL,
                         out->dr != NULL,
                         out->accumulate != 0,
                         out->parts[KEEL_PART_DGAMMA] != NULL,
                         ln && out->parts[KEEL_PART_DBETA] != NULL,
                         out->parts[KEEL_PART_DLAMBDA] != NULL,
                         out->parts[KEEL_PART_DBIAS] != NULL};
    if (f.hh && !f.hl && f.hg && f.hdh && f.hdx && !f.hdr && !f.acc && f.dgp && f.dbp == ln &&
        !f.dlp && !f.dbsp) {
        const bwd_flags pre = {ln, 1, 0, 0, 1, 1, 1, 0, 0, 1, ln, 0, 0}; /* h saved: no hl, hb */
        bwd_rows(pre, rows, dim, dy, dys, dh, dhs, res, h, hs, mean, rstd, gamma, eps, out);
    } else {
        bwd_rows(f, rows, dim, dy, dys, dh, dhs, res, h, hs, mean, rstd, gamma, eps, out);
    }
}

#endif
