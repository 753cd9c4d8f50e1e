/* The forwards' short rows, KB_ROWS at a time, written once over the lane vocabulary (the kr and
 * kb sections of lanes__<isa>.h): LayerNorm and RMSNorm, fused with the residual add (x + r) or
 * plain (px: x alone). Rows of up to 16 * KB_NV floats, KB_NV vectors of 16 at most, where the
 * work a row and the latency of its statistics, not the memory, bound the speed. The same bits as
 * a row at a time (kernels.h's order), with less work a row:
 *  - the tree's last steps, the divisions and the square root of KB_ROWS rows run once in a
 *    vector, a row a lane (kb_reduce, kb_ln_mean, kb_rstd; a division by a power-of-two dim a
 *    multiply);
 *  - the tail's mask, gamma and beta once a call, no loops within a row but over its vectors;
 *  - h = x + r without the multiply when alpha is 1 (1 * x is x, and a signalling NaN x is
 *    quietened by the add as by the multiply);
 *  - a batch's output lines fetched for writing (kr_prefetch_w) two stages before they are
 *    stored, unless the call streams, and the inputs BATCH_AHEAD rows ahead (batch_fetch);
 *  - the stages of three batches overlap (fwd_batches_of): a batch's divisions and square root
 *    (long latencies, one chain) run beside the other batches' sweeps.
 * LayerNorm: h is converted to double once, the sum's stage keeping the doubles for the centred
 * one, and a lane's sum starts at its first term, not at +0.0 plus it: the lanes and every sum
 * of the tree then differ from kernels.h's only where they are -0.0 and kernels.h's +0.0 (0.0 +
 * -0.0 is +0.0; an add keeps that relation, and so does adding the +0.0 of a lane beyond the
 * row's tail where kernels.h leaves the lane as it is), so R(h) + 0.0 is kernels.h's R(h) (never
 * -0.0); the centred terms and RMSNorm's squares are never -0.0 at all. A lane adds a row's
 * vectors in their order and the tree goes on from there (kb_part_of, kb_reduce): the order of
 * kernels.h. Included by the forward bodies (f32_layernorm_simd.h, f32_rmsnorm_simd.h,
 * f32_add_layernorm_simd.h, f32_add_rmsnorm_simd.h) on every SIMD path (AVX2, AVX-512, NEON). */
#ifndef KEEL_KERNELS_ROW_BATCHES_SIMD_H
#define KEEL_KERNELS_ROW_BATCHES_SIMD_H
#ifdef KB_ROWS

#include <stdint.h>

#include "residual_simd.h"

#define KB_MAX (16 * KB_NV) /* the longest rows the batches take (the plain RMSNorm's) */
#define BATCH_SLOTS 3       /* batches in flight (3, 4 and 5 measured alike) */
/* floats: the rows' h (16 * nv a row: batch_row), then as many doubles */
#define BATCH_SLOT (KB_ROWS * 3 * 16 * KB_NV)

/* The row length as a divisor: v / dim is v * (1 / dim) when dim is a power of two (the quotient
 * and the product are then the same real number, so the same after rounding), a multiply instead
 * of a division on the one divider. */
typedef struct kb_dim {
    kb_d n, inv;
    int pow2;
} kb_dim;

KEEL_INLINE kb_dim kb_dim_of(size_t dim)
{
    const kb_dim d = {kb_dset1((double)dim), kb_dset1(1.0 / (double)dim), (dim & (dim - 1)) == 0};
    return d;
}
KEEL_INLINE kb_d kb_div_dim(kb_d v, const kb_dim *d)
{
    return d->pow2 ? kb_dmul(v, d->inv) : kb_ddiv(v, d->n);
}
/* keel_ln_mean, a row a lane: sum / dim, NaN where sum is not finite */
KEEL_INLINE kb_d kb_ln_mean(kb_d sum, const kb_dim *d)
{
    return kb_nan_unless_finite(sum, kb_div_dim(sum, d));
}
/* 1 / sqrt(s / dim + eps) in double: keel_ln_rstd before its rounding to float */
KEEL_INLINE kb_d kb_rstd_d(kb_d s, const kb_dim *d, float eps)
{
    return kb_ddiv(kb_dset1(1.0), kb_dsqrt(kb_dadd(kb_div_dim(s, d), kb_dset1((double)eps))));
}
KEEL_INLINE kb_f kb_rstd(kb_d s, const kb_dim *d, float eps)
{
    return kb_narrow(kb_rstd_d(s, d, eps));
}
/* keel_rms_rstd: NaN where the sums of squares are not finite (the double NaN narrows to the
 * float NaN that (float)NAN is) */
KEEL_INLINE kb_f kb_rms_rstd(kb_d ss, const kb_dim *d, float eps)
{
    return kb_narrow(kb_nan_unless_finite(ss, kb_rstd_d(ss, d, eps)));
}

/* The rows of a batch: read once a batch into locals (the vector stores may alias anything,
 * so fields read through res would be loaded again after each of them). */
typedef struct batch_rows {
    const float *x, *r, *lambda, *bias;
    size_t xs, rs;
    float alpha;
} batch_rows;

KEEL_INLINE batch_rows batch_rows_of(const keel_f32_res *res, size_t r)
{
    const batch_rows b = {res->x + r * res->x_stride,
                          res->r ? res->r + r * res->r_stride : NULL,
                          res->lambda,
                          res->bias,
                          res->x_stride,
                          res->r_stride,
                          res->alpha};
    return b;
}

/* What every batch of a call shares. */
typedef struct batch_call {
    kr_tail t;                 /* the floats of the row's last vector, when fewer than 16 */
    int full;                  /* dim a multiple of 16: no tail */
    int nv;                    /* the row's vectors */
    int one;                   /* alpha is 1 */
    kr_f16 g[KB_NV], b[KB_NV]; /* gamma and beta (zero when absent or beyond the row) */
    kb_dim n;
    /* the lines fetched: the outputs (fetch: unless the call streams; h when hh) and the inputs,
     * nv 64-byte lines a row */
    int fetch, hh;
    const float *h, *y;
    size_t hs, ys;
} batch_call;

/* The step of vector q of a row: whole, or the row's tail. */
KEEL_INLINE kstep batch_step(const batch_call *c, int q)
{
    const kstep s = {&c->t, q < c->nv - 1 || c->full};
    return s;
}

/* hh: h is written; one: alpha is known to be 1; nv: (dim + 15) / 16 (constants at every
 * call). */
KEEL_INLINE batch_call batch_call_of(size_t dim, const keel_f32_res *res, const float *gamma,
                                     const float *beta, const float *h, size_t hs, const float *y,
                                     size_t ys, int stream, int hh, int one, int nv)
{
    batch_call c;
    c.nv = nv;
    c.full = dim % 16 == 0;
    c.t = kr_tail_of(dim % 16);
    c.one = one || res->alpha == 1.0f;
    for (int q = 0; q < KB_NV; q++) { /* the vectors beyond the row's: zero, never read */
        const int in_row = q < nv;
        c.g[q] = gamma && in_row ? ks_load(gamma + 16 * q, batch_step(&c, q)) : kr_set1(0.0f);
        c.b[q] = beta && in_row ? ks_load(beta + 16 * q, batch_step(&c, q)) : kr_set1(0.0f);
    }
    c.n = kb_dim_of(dim);
    c.fetch = !stream;
    c.hh = hh;
    c.h = hh ? h : NULL;
    c.y = y;
    c.hs = hs;
    c.ys = ys;
    return c;
}

/* A row's floats in a slot (and its doubles after the batch's floats): laid out for its nv
 * vectors (a slot laid out for four vectors a row whatever the width: keel_profile_loop addlnf
 * 4096 16 27.6 -> 28.7 us). */
KEEL_INLINE size_t batch_row(const batch_call *c) { return 16 * (size_t)c->nv; }

/* p + n floats, as an address to prefetch: it may lie beyond the rows (a prefetch never faults),
 * so it is computed as an integer, not as a pointer past the array. */
KEEL_INLINE const float *batch_ahead(const float *p, size_t n)
{
    return (const float *)((uintptr_t)p + n * sizeof(float));
}

/* Row i of the batch at row r: its output lines fetched for writing (unless the call streams),
 * and the inputs of the row BATCH_AHEAD rows on (two batches of eight: measured 16, 32 and 64
 * rows of 16 floats, keel bench add+ln 4096x16 on AVX-512 0.91-0.93, 0.91-0.92, 0.88-0.89 of
 * the floor, 0.80-0.83 without); past the last row as well (batch_ahead), where a test of each
 * row cost more than the prefetches (keel_profile_loop addlnf 4096 16: 31.0 -> 29.1 us, with the
 * test of h below a constant). */
#define BATCH_AHEAD 16
KEEL_INLINE void batch_fetch(const batch_call *c, const batch_rows *b, size_t r, int i, int px)
{
    const size_t ri = r + (size_t)i;
    for (int q = 0; q < c->nv; q++) {
        if (c->fetch) {
            kr_prefetch_w(c->y + ri * c->ys + 16 * q);
            if (c->hh)
                kr_prefetch_w(c->h + ri * c->hs + 16 * q);
        }
        kr_prefetch_l1(batch_ahead(b->x, (size_t)(i + BATCH_AHEAD) * b->xs + 16 * (size_t)q));
        if (!px)
            kr_prefetch_l1(batch_ahead(b->r, (size_t)(i + BATCH_AHEAD) * b->rs + 16 * (size_t)q));
    }
}

/* Vector q of h of row i of the batch (zero beyond the row's floats; hl, hb, px constants at
 * every call). */
KEEL_INLINE kr_f16 batch_h(const batch_call *c, const batch_rows *b, int i, int q, int hl, int hb,
                           int px)
{
    const kstep s = batch_step(c, q);
    const float *x = b->x + (size_t)i * b->xs + 16 * q;
    if (px)
        return ks_load(x, s);
    const float *rr = b->r + (size_t)i * b->rs + 16 * q;
    if (c->one && !hl && !hb)
        return kr_add(ks_load(x, s), ks_load(rr, s));
    const res_row w = {x, rr, b->lambda ? b->lambda + 16 * q : NULL,
                       b->bias ? b->bias + 16 * q : NULL, kr_set1(b->alpha)};
    return res_h(&w, 0, s, hl, hb);
}

/* A batch's statistics between its stages (one vector more measured 5-10% slower). */
typedef struct batch_stats {
    kb_d mean; /* RMSNorm: its sums of squares */
    kb_f rstd;
} batch_stats;

/* Row i of the batch at row r: h into slot (batch_row floats a row, then as many doubles after
 * the batch's floats: d) and its lanes after the tree's first steps (rms: of h * h). */
KEEL_INLINE kb_part batch_sum_row(size_t r, int i, const batch_call *c, const batch_rows *b,
                                  float *slot, double *d, int hl, int hb, int px, int rms)
{
    kr_d16 acc = kr_dzero();
    for (int q = 0; q < c->nv; q++) {
        const kr_f16 v = batch_h(c, b, i, q, hl, hb, px);
        kr_store(slot + i * batch_row(c) + 16 * q, v);
        if (q == 0)
            batch_fetch(c, b, r, i, px);
        const kr_d16 vd = kr_widen(v);
        if (!rms)
            kr_dstore16(d + i * batch_row(c) + 16 * q, vd);
        const kr_d16 t = rms ? kr_dmul(vd, vd) : vd;
        acc = q ? kr_dadd(acc, t) : t;
    }
    return kb_part_of(acc);
}

/* Rows r .. r + KB_ROWS - 1: h into slot and the means (rms: the sums of squares). */
KEEL_INLINE void batch_sum(size_t r, const batch_call *c, const keel_f32_res *res, float *slot,
                           batch_stats *st, int hl, int hb, int px, int rms)
{
    kb_part s[KB_ROWS];
    double *d = (double *)(slot + KB_ROWS * batch_row(c));
    const batch_rows b = batch_rows_of(res, r);
    /* unrolled, s[] stays in registers (keel_profile_loop addlnf 4096 16: 30.1 -> 27.5 us; rmsf
     * 4096 16 15.8 -> 15.0 us) */
#pragma GCC unroll 8
    for (int i = 0; i < KB_ROWS; i++)
        s[i] = batch_sum_row(r, i, c, &b, slot, d, hl, hb, px, rms);
    const kb_d sum = kb_reduce(s);
    if (rms) {
        st->mean = sum;
        return;
    }
    st->mean = kb_ln_mean(kb_dadd(sum, kb_dzero()), &c->n);
}

/* The rstds of the batch in slot. */
KEEL_INLINE void batch_mid(const batch_call *c, const float *slot, float eps, batch_stats *st,
                           int rms)
{
    if (rms) {
        st->rstd = kb_rms_rstd(st->mean, &c->n, eps);
        return;
    }
    kb_part s[KB_ROWS];
    double md[KB_ROWS];
    const double *d = (const double *)(slot + KB_ROWS * batch_row(c));
    kb_dstore(md, st->mean);
    /* The broadcasts of the rows' statistics below read memory: left to itself the compiler
     * takes each lane out of the register with a permute, and the permutes (one port) cost
     * more than the loads (keel_profile_loop lnf 4096 16: 24.7-24.9 -> 21.1-22.2 us). */
    __asm__("" : "+m"(md));
    for (int i = 0; i < KB_ROWS; i++) {
        const kr_d16 m = kr_dset1(md[i]);
        kr_d16 acc = kr_dzero();
        for (int q = 0; q < c->nv; q++) {
            const kr_d16 t = kr_dsub(kr_dload16(d + i * batch_row(c) + 16 * q), m);
            /* +0.0 in the lanes without an element */
            const kr_d16 p = batch_step(c, q).full ? kr_dmul(t, t) : kr_dmul_tail(t, t, &c->t);
            acc = q ? kr_dadd(acc, p) : p;
        }
        s[i] = kb_part_of(acc);
    }
    st->rstd = kb_rstd(kb_reduce(s), &c->n, eps);
}

/* The batch's outputs (rows r ..) from slot; returns whether a row was streamed (a row streams
 * when the call does and the row is whole aligned lines). */
KEEL_INLINE int batch_out(size_t r, const batch_call *c, const batch_stats *st, const float *slot,
                          float *h, size_t hs, float *y, size_t ys, float *mean, float *rstd,
                          int stream, int hg, int hbe, int hh, int rms)
{
    float hi[KB_ROWS], lo[KB_ROWS], rs[KB_ROWS];
    kb_fstore(rs, st->rstd);
    __asm__("" : "+m"(rs)); /* broadcast from memory (batch_mid) */
    if (!rms) {
        const kb_f mhi = kb_narrow(st->mean);
        kb_fstore(hi, mhi);
        kb_fstore(lo, kb_narrow(kb_dsub(st->mean, kb_widen(mhi))));
        __asm__("" : "+m"(hi), "+m"(lo));
        if (mean)
            kb_fstore(mean + r, mhi);
    }
    if (rstd)
        kb_fstore(rstd + r, st->rstd);
    int streamed = 0;
    for (int i = 0; i < KB_ROWS; i++) {
        const size_t ri = r + (size_t)i;
        const int nt =
            stream && c->full && kr_streamable(y + ri * ys) && (!hh || kr_streamable(h + ri * hs));
        streamed |= nt;
        for (int q = 0; q < c->nv; q++) {
            const kr_f16 v = kr_load(slot + i * batch_row(c) + 16 * q);
            kr_f16 t = rms ? v : kr_sub(kr_sub(v, kr_set1(hi[i])), kr_set1(lo[i]));
            t = kr_mul(t, kr_set1(rs[i]));
            if (hg)
                t = kr_mul(t, c->g[q]);
            if (hbe && !rms)
                t = kr_add(t, c->b[q]);
            const kstep s = batch_step(c, q);
            if (hh)
                ks_store(h + ri * hs + 16 * q, v, s, nt);
            ks_store(y + ri * ys + 16 * q, t, s, nt);
        }
    }
    return streamed;
}

/* nb batches: step t sums batch t, finishes the statistics of batch t - 1 and writes batch
 * t - (BATCH_SLOTS - 1), so that a batch's divisions and square root overlap the other batches'
 * work; batch i lives in slot i % BATCH_SLOTS of bufs. Returns whether a row was streamed. one:
 * alpha is known to be 1; nv: the row's vectors, (dim + 15) / 16 (a constant at every call). */
KEEL_INLINE int fwd_batches_of(size_t nb, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                               float *y, size_t ys, const float *gamma, const float *beta,
                               float eps, float *mean, float *rstd, int stream, float *bufs, int hl,
                               int hb, int hg, int hbe, int hh, int px, int rms, int one, int nv)
{
    const batch_call c = batch_call_of(dim, res, gamma, beta, h, hs, y, ys, stream, hh, one, nv);
    batch_stats st[BATCH_SLOTS];
    int streamed = 0;
    for (size_t t = 0; t < nb + BATCH_SLOTS - 1; t++) {
        if (t < nb) {
            const size_t i = t % BATCH_SLOTS;
            batch_sum(t * KB_ROWS, &c, res, bufs + i * BATCH_SLOT, &st[i], hl, hb, px, rms);
        }
        if (t >= 1 && t - 1 < nb) {
            const size_t i = (t - 1) % BATCH_SLOTS;
            batch_mid(&c, bufs + i * BATCH_SLOT, eps, &st[i], rms);
        }
        if (t >= BATCH_SLOTS - 1) {
            const size_t a = t - (BATCH_SLOTS - 1), i = a % BATCH_SLOTS;
            streamed |= batch_out(a * KB_ROWS, &c, &st[i], bufs + i * BATCH_SLOT, h, hs, y, ys,
                                  mean, rstd, stream, hg, hbe, hh, rms);
        }
    }
    return streamed;
}

/* fwd_batches_of, with instances of their own for the common cases, whole rows of 16, 32 or 48
 * floats (and 64 for a plain norm's), x + r (alpha 1) and outputs not streamed: there the row's
 * vectors and mask, the division by dim, the multiply by alpha and the output fetches are
 * constants, no tests in the rows' loops (keel bench, 1 thread, fraction of the floor, with
 * dim 48 a constant or not: add+ln post 0.75 -> 0.86, layernorm fwd 0.47 -> 0.57). */
KEEL_INLINE int fwd_batches(size_t nb, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                            float *y, size_t ys, const float *gamma, const float *beta, float eps,
                            float *mean, float *rstd, int stream, float *bufs, int hl, int hb,
                            int hg, int hbe, int hh, int px, int rms)
{
#define FWD_BATCHES_OF(d, st, one, nv)                                                             \
    fwd_batches_of(nb, d, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, st, bufs, hl, hb, hg,   \
                   hbe, hh, px, rms, one, nv)
    if (res->alpha == 1.0f && !stream) {
        if (dim == 16)
            return FWD_BATCHES_OF(16, 0, 1, 1);
#if KB_NV >= 3
        if (dim == 32)
            return FWD_BATCHES_OF(32, 0, 1, 2);
        if (dim == 48)
            return FWD_BATCHES_OF(48, 0, 1, 3);
#endif
#if KB_NV >= 4
        if (px && dim == 64)
            return FWD_BATCHES_OF(64, 0, 1, 4);
#endif
    }
#if KB_NV >= 3
    /* the other widths: the number of vectors a constant, the tail's mask not */
    if (dim > 16 && dim <= 32)
        return FWD_BATCHES_OF(dim, stream, 0, 2);
    if (dim > 32 && dim <= 48)
        return FWD_BATCHES_OF(dim, stream, 0, 3);
#endif
#if KB_NV >= 4
    /* rows of 49 to 64 floats come from the plain RMSNorm only: the fused forwards' instances
     * leave this one out */
    _Static_assert(KB_TAKE_MAX <= 48, "the fused forwards' batches end at 48 floats");
    if (px && dim > 48)
        return FWD_BATCHES_OF(dim, stream, 0, 4);
#endif
    return FWD_BATCHES_OF(dim, stream, 0, 1); /* rows of up to 16 floats */
#undef FWD_BATCHES_OF
}

/* A plain norm's rows (x alone: the fused forward's stages with px): the whole batches of rows;
 * returns the rows done. gamma, beta: the instance for those given (RMSNorm: beta NULL). */
KEEL_INLINE size_t plain_fwd_batches(size_t rows, size_t dim, const float *x, size_t xs, float *y,
                                     size_t ys, const float *gamma, const float *beta, float eps,
                                     float *mean, float *rstd, int stream, int rms)
{
    float bufs[BATCH_SLOTS * BATCH_SLOT] __attribute__((aligned(64)));
    const keel_f32_res res = {x, xs, NULL, 0, 1.0f, NULL, NULL};
    const size_t nb = rows / KB_ROWS;
#define PLAIN_BATCHES(hg, hbe)                                                                     \
    fwd_batches(nb, dim, &res, NULL, 0, y, ys, gamma, beta, eps, mean, rstd, stream, bufs, 0, 0,   \
                hg, hbe, 0, 1, rms)
    if (gamma && beta)
        PLAIN_BATCHES(1, 1);
    else if (gamma)
        PLAIN_BATCHES(1, 0);
    else if (beta)
        PLAIN_BATCHES(0, 1);
    else
        PLAIN_BATCHES(0, 0);
#undef PLAIN_BATCHES
    return nb * KB_ROWS;
}

#endif /* KB_ROWS */
#endif
