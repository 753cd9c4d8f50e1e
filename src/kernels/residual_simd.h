/* The residual sum of the fused kernels written once over the reduction unit of keel's lanes (the
 * kr section of lanes__<isa>.h, 16 floats a step), in the operation order of residual.h (so the
 * same bits): h = (alpha * x) + (lambda * r), then + bias, over the 16-float steps of row_storage_simd.h.
 * Include after lanes__<isa>.h. */
#ifndef KEEL_KERNELS_RESIDUAL_SIMD_H
#define KEEL_KERNELS_RESIDUAL_SIMD_H

#include "kernels.h"
#include "row_storage_simd.h"

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
