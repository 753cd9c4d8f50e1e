/* RMSNorm, float32, AVX2: the formulas and reduction order of kernels.h, giving exactly the
 * bits of f32_rmsnorm__scalar.c (see f32_layernorm__avx2.c). */
#include <math.h>

#include "kernels.h"
#include "norm_finish.h"
#include "simd_lanes__avx2.h"

/* rstd_f from R(xd * xd), xd = (double)x[j]. */
static float rms_rstd(const float *x, size_t dim, float eps, const k256_tail *t)
{
    const size_t full = dim - t->n;
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t j = 0; j < full; j += 16) {
        const __m256d a = k256_cvt4(x + j), b = k256_cvt4(x + j + 4);
        const __m256d c = k256_cvt4(x + j + 8), d = k256_cvt4(x + j + 12);
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(a, a));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(b, b));
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(c, c));
        s3 = _mm256_add_pd(s3, _mm256_mul_pd(d, d));
    }
    if (t->n) {
        /* masked-out floats load as +0.0: their squares are +0.0 */
        __m256 v0, v1;
        k256_tail_load(t, x + full, &v0, &v1);
        const __m256d a = k256_lo_pd(v0), b = k256_hi_pd(v0);
        const __m256d c = k256_lo_pd(v1), d = k256_hi_pd(v1);
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(a, a));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(b, b));
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(c, c));
        s3 = _mm256_add_pd(s3, _mm256_mul_pd(d, d));
    }
    return keel_rms_rstd(k256_reduce16(s0, s1, s2, s3), dim, eps);
}

/* y = x * rs, then * gamma, 8 floats a step. */
KEEL_INLINE void rms_out(size_t dim, const float *x, float *y, const float *gamma, float rs,
                         __m256i tail8, int hg)
{
    const __m256 vr = _mm256_set1_ps(rs);
    size_t j = 0;
    for (; j + 8 <= dim; j += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), vr);
        if (hg)
            v = _mm256_mul_ps(v, _mm256_loadu_ps(gamma + j));
        _mm256_storeu_ps(y + j, v);
    }
    if (j < dim) {
        __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + j, tail8), vr);
        if (hg)
            v = _mm256_mul_ps(v, _mm256_maskload_ps(gamma + j, tail8));
        _mm256_maskstore_ps(y + j, tail8, v);
    }
}

void keel_f32_rmsnorm_fwd__avx2(size_t rows, size_t dim, const float *x, size_t x_stride,
                                float *y, size_t y_stride, const float *gamma, float eps,
                                float *rstd)
{
    const k256_tail t = k256_tail_of(dim % 16);
    const __m256i tail8 = k256_mask8(dim % 8);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        const float rs = rms_rstd(xr, dim, eps, &t);
        if (gamma)
            rms_out(dim, xr, yr, gamma, rs, tail8, 1);
        else
            rms_out(dim, xr, yr, gamma, rs, tail8, 0);
        if (rstd)
            rstd[r] = rs;
    }
}

/* Sweep 1: R((double)g * (double)x), g = dy * gamma (float) or dy. */
KEEL_INLINE double rms_sweep1(size_t dim, const float *dy, const float *x, const float *gamma,
                              const k256_tail *t, int hg)
{
    const size_t full = dim - t->n;
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t j = 0; j < full; j += 16) {
        __m256 ga = _mm256_loadu_ps(dy + j), gb = _mm256_loadu_ps(dy + j + 8);
        if (hg) {
            ga = _mm256_mul_ps(ga, _mm256_loadu_ps(gamma + j));
            gb = _mm256_mul_ps(gb, _mm256_loadu_ps(gamma + j + 8));
        }
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(k256_lo_pd(ga), k256_cvt4(x + j)));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(k256_hi_pd(ga), k256_cvt4(x + j + 4)));
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(k256_lo_pd(gb), k256_cvt4(x + j + 8)));
        s3 = _mm256_add_pd(s3, _mm256_mul_pd(k256_hi_pd(gb), k256_cvt4(x + j + 12)));
    }
    if (t->n) {
        /* masked-out lanes: g and x load as +0.0, so g * x is +0.0 */
        __m256 ga, gb, xa, xb;
        k256_tail_load(t, dy + full, &ga, &gb);
        if (hg) {
            __m256 ca, cb;
            k256_tail_load(t, gamma + full, &ca, &cb);
            ga = _mm256_mul_ps(ga, ca);
            gb = _mm256_mul_ps(gb, cb);
        }
        k256_tail_load(t, x + full, &xa, &xb);
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(k256_lo_pd(ga), k256_lo_pd(xa)));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(k256_hi_pd(ga), k256_hi_pd(xa)));
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(k256_lo_pd(gb), k256_lo_pd(xb)));
        s3 = _mm256_add_pd(s3, _mm256_mul_pd(k256_hi_pd(gb), k256_hi_pd(xb)));
    }
    return k256_reduce16(s0, s1, s2, s3);
}

/* One step of sweep 2 at column j, 8 floats (full) or the floats of mask k. */
KEEL_INLINE void rms_step2(size_t j, const float *dy, const float *x, const float *gamma,
                           float *dx, float *dg, float rs, float b, __m256i k, int full,
                           int hdx, int acc, int hg, int hdg)
{
#define LD(p) (full ? _mm256_loadu_ps((p) + j) : _mm256_maskload_ps((p) + j, k))
#define ST(p, v)                                                                               \
    do {                                                                                       \
        if (full)                                                                              \
            _mm256_storeu_ps((p) + j, v);                                                      \
        else                                                                                   \
            _mm256_maskstore_ps((p) + j, k, v);                                                \
    } while (0)
    const __m256 vr = _mm256_set1_ps(rs);
    const __m256 xhat = _mm256_mul_ps(LD(x), vr);
    const __m256 dyv = LD(dy);
    if (hdx) {
        const __m256 g = hg ? _mm256_mul_ps(dyv, LD(gamma)) : dyv;
        __m256 v = _mm256_mul_ps(vr, _mm256_sub_ps(g, _mm256_mul_ps(xhat, _mm256_set1_ps(b))));
        if (acc)
            v = _mm256_add_ps(LD(dx), v);
        ST(dx, v);
    }
    if (hdg)
        ST(dg, _mm256_add_ps(LD(dg), _mm256_mul_ps(dyv, xhat)));
#undef LD
#undef ST
}

KEEL_INLINE void rms_sweep2(size_t dim, const float *dy, const float *x, const float *gamma,
                            float *dx, float *dg, float rs, float b, int hdx, int acc, int hg,
                            int hdg)
{
    size_t j = 0;
    for (; j + 8 <= dim; j += 8)
        rms_step2(j, dy, x, gamma, dx, dg, rs, b, _mm256_setzero_si256(), 1, hdx, acc, hg, hdg);
    if (j < dim)
        rms_step2(j, dy, x, gamma, dx, dg, rs, b, k256_mask8(dim - j), 0, hdx, acc, hg, hdg);
}

/* Sweep 2 for the 4 flags (dx, accumulate, gamma, dgamma), each a constant. */
typedef void (*rms_sweep2_fn)(size_t, const float *, const float *, const float *, float *,
                              float *, float, float);
#define RMS_SWEEP2_VARIANT(i)                                                                  \
    static void rms_sweep2_##i(size_t dim, const float *dy, const float *x, const float *gamma, \
                               float *dx, float *dg, float rs, float b)                         \
    {                                                                                           \
        rms_sweep2(dim, dy, x, gamma, dx, dg, rs, b, (i) & 1, ((i) >> 1) & 1, ((i) >> 2) & 1,   \
                   ((i) >> 3) & 1);                                                             \
    }
RMS_SWEEP2_VARIANT(0) RMS_SWEEP2_VARIANT(1) RMS_SWEEP2_VARIANT(2) RMS_SWEEP2_VARIANT(3)
RMS_SWEEP2_VARIANT(4) RMS_SWEEP2_VARIANT(5) RMS_SWEEP2_VARIANT(6) RMS_SWEEP2_VARIANT(7)
RMS_SWEEP2_VARIANT(8) RMS_SWEEP2_VARIANT(9) RMS_SWEEP2_VARIANT(10) RMS_SWEEP2_VARIANT(11)
RMS_SWEEP2_VARIANT(12) RMS_SWEEP2_VARIANT(13) RMS_SWEEP2_VARIANT(14) RMS_SWEEP2_VARIANT(15)
static const rms_sweep2_fn rms_sweep2_table[16] = {
    rms_sweep2_0,  rms_sweep2_1,  rms_sweep2_2,  rms_sweep2_3,  rms_sweep2_4,  rms_sweep2_5,
    rms_sweep2_6,  rms_sweep2_7,  rms_sweep2_8,  rms_sweep2_9,  rms_sweep2_10, rms_sweep2_11,
    rms_sweep2_12, rms_sweep2_13, rms_sweep2_14, rms_sweep2_15,
};

void keel_f32_rmsnorm_bwd__avx2(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                const float *x, size_t x_stride, const float *rstd,
                                const float *gamma, float eps, float *dx, size_t dx_stride,
                                int accumulate_dx, float *dgamma_part)
{
    const int hdx = dx != NULL, hg = gamma != NULL;
    const rms_sweep2_fn sweep2 = rms_sweep2_table[hdx | (hdx && accumulate_dx) << 1 | hg << 2 |
                                                  (dgamma_part != NULL) << 3];
    const k256_tail t = k256_tail_of(dim % 16);
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride;
        const float *xr = x + r * x_stride;
        const float rs = rstd ? rstd[r] : rms_rstd(xr, dim, eps, &t);
        float b = 0.0f;
        if (hdx) {
            const double sgx = hg ? rms_sweep1(dim, dyr, xr, gamma, &t, 1)
                                  : rms_sweep1(dim, dyr, xr, gamma, &t, 0);
            b = (float)((double)rs * (sgx / (double)dim));
        }
        sweep2(dim, dyr, xr, gamma, hdx ? dx + r * dx_stride : NULL, dgamma_part, rs, b);
    }
}
