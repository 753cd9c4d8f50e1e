/* The residual sum of the fused kernels written once over the reduction unit of keel's lanes (the
 * kr section of lanes__<isa>.h, 16 floats a step), in the operation order of residual.h (so the
 * same bits): h = (alpha * x) + (lambda * r), then + bias. Plus the 16-float step (whole, or a
 * row's tail) and its loads and stores, which the fused bodies (add_norm_simd.h) and the short-row
 * batches (row_batches_simd.h) share. Include after lanes__<isa>.h. */
#ifndef KEEL_KERNELS_RESIDUAL_SIMD_H
#define KEEL_KERNELS_RESIDUAL_SIMD_H

#include "kernels.h"

/* A 16-float step at j: whole (full: plain loads and stores) or the row's tail t (nothing past
 * the row read or written; 0.0 loaded past it). */
typedef struct kstep {
    const kr_tail *t;
    int full;
} kstep;

KEEL_INLINE kr_f16 ks_load(const float *p, kstep s)
{
    return s.full ? kr_load(p) : kr_load_tail(p, s.t);
}

/* A store of the step; nt: streamed (a whole step of a row that starts kr_streamable; the call
 * then ends with kl_stream_fence). */
KEEL_INLINE void ks_store(float *p, kr_f16 v, kstep s, int nt)
{
    if (!s.full)
        kr_store_tail(p, v, s.t);
    else if (nt)
        kr_stream(p, v);
    else
        kr_store(p, v);
}

/* acc += t lane by lane; in a tail step only the lanes that hold an element. */
KEEL_INLINE kr_d16 ks_dadd(kr_d16 acc, kr_d16 t, kstep s)
{
    return s.full ? kr_dadd(acc, t) : kr_dadd_tail(acc, t, s.t);
}

/* A row of the residual: its x and r rows and the per-feature vectors. */
typedef struct res_row {
    const float *x, *r, *lambda, *bias;
    kr_f16 alpha;
} res_row;

KEEL_INLINE res_row res_row_of(const keel_f32_res *res, size_t row)
{
    res_row o;
    o.x = res->x ? res->x + row * res->x_stride : NULL;
    o.r = res->r ? res->r + row * res->r_stride : NULL;
    o.lambda = res->lambda;
    o.bias = res->bias;
    o.alpha = kr_set1(res->alpha);
    return o;
}

/* h at j (hl, hb: lambda, bias present; constants at the call sites that matter). Lanes past a
 * tail hold values that no caller stores or adds. */
KEEL_INLINE kr_f16 res_h(const res_row *w, size_t j, kstep s, int hl, int hb)
{
    const kr_f16 x = ks_load(w->x + j, s);
    kr_f16 r = ks_load(w->r + j, s);
    if (hl)
        r = kr_mul(ks_load(w->lambda + j, s), r);
    kr_f16 v = kr_add(kr_mul(w->alpha, x), r);
    if (hb)
        v = kr_add(v, ks_load(w->bias + j, s));
    return v;
}

#endif
