/* RMSNorm, float32, AVX-512: the formulas and reduction order of kernels.h, 16 floats at a
 * time, giving exactly the bits of f32_rmsnorm__scalar.c (see f32_layernorm__avx512.c). */
#include <math.h>

#include "kernels.h"
#include "norm_finish.h"
#include "simd_lanes__avx512.h"

/* R(xd * xd), xd = (double)x[j]: the forward's sum of squares. */
static float rms_rstd(const float *x, size_t dim, float eps)
{
    const size_t full = dim & ~(size_t)15;
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        const __m512d a = k512_cvt8(x + j), b = k512_cvt8(x + j + 8);
        s0 = _mm512_add_pd(s0, _mm512_mul_pd(a, a));
        s1 = _mm512_add_pd(s1, _mm512_mul_pd(b, b));
    }
    const __mmask16 k = k512_tail16(dim - full);
    const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
    if (klo) {
        const __m512d a = k512_cvt8_mask(klo, x + full);
        s0 = k512_add_mask(s0, klo, _mm512_mul_pd(a, a));
    }
    if (khi) {
        const __m512d b = k512_cvt8_mask(khi, x + full + 8);
        s1 = k512_add_mask(s1, khi, _mm512_mul_pd(b, b));
    }
    return keel_rms_rstd(k512_reduce16(s0, s1), dim, eps);
}

/* y = x * rs, then * gamma. */
KEEL_INLINE void rms_out(size_t dim, const float *x, float *y, const float *gamma, float rs,
                         int hg)
{
    const __m512 vr = _mm512_set1_ps(rs);
    size_t j = 0;
    for (; j + 16 <= dim; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + j), vr);
        if (hg)
            v = _mm512_mul_ps(v, _mm512_loadu_ps(gamma + j));
        _mm512_storeu_ps(y + j, v);
    }
    if (j < dim) {
        const __mmask16 k = k512_tail16(dim - j);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), vr);
        if (hg)
            v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, gamma + j));
        _mm512_mask_storeu_ps(y + j, k, v);
    }
}

void keel_f32_rmsnorm_fwd__avx512(size_t rows, size_t dim, const float *x, size_t x_stride,
                                  float *y, size_t y_stride, const float *gamma, float eps,
                                  float *rstd)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        float *yr = y + r * y_stride;
        const float rs = rms_rstd(xr, dim, eps);
        if (gamma)
            rms_out(dim, xr, yr, gamma, rs, 1);
        else
            rms_out(dim, xr, yr, gamma, rs, 0);
        if (rstd)
            rstd[r] = rs;
    }
}

/* Sweep 1: R((double)g * (double)x), g = dy * gamma (float) or dy. */
KEEL_INLINE double rms_sweep1(size_t dim, const float *dy, const float *x, const float *gamma,
                              int hg)
{
    const size_t full = dim & ~(size_t)15;
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (size_t j = 0; j < full; j += 16) {
        __m512 g = _mm512_loadu_ps(dy + j);
        if (hg)
            g = _mm512_mul_ps(g, _mm512_loadu_ps(gamma + j));
        const __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
        const __m512d g1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
        s0 = _mm512_add_pd(s0, _mm512_mul_pd(g0, k512_cvt8(x + j)));
        s1 = _mm512_add_pd(s1, _mm512_mul_pd(g1, k512_cvt8(x + j + 8)));
    }
    if (full < dim) {
        const __mmask16 k = k512_tail16(dim - full);
        const __mmask8 klo = k512_lo8(k), khi = k512_hi8(k);
        __m512 g = _mm512_maskz_loadu_ps(k, dy + full);
        if (hg)
            g = _mm512_mul_ps(g, _mm512_maskz_loadu_ps(k, gamma + full));
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + full);
        const __m512d g0 = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
        const __m512d g1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(g, 1));
        const __m512d x0 = _mm512_cvtps_pd(_mm512_castps512_ps256(xv));
        const __m512d x1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(xv, 1));
        s0 = k512_add_mask(s0, klo, _mm512_mul_pd(g0, x0));
        s1 = k512_add_mask(s1, khi, _mm512_mul_pd(g1, x1));
    }
    return k512_reduce16(s0, s1);
}

/* One step of sweep 2 at column j on the floats selected by k. */
KEEL_INLINE void rms_step2(size_t j, const float *dy, const float *x, const float *gamma,
                           float *dx, float *dg, float rs, float b, __mmask16 k, int full,
                           int hdx, int acc, int hg, int hdg)
{
#define LD(p) (full ? _mm512_loadu_ps((p) + j) : _mm512_maskz_loadu_ps(k, (p) + j))
#define ST(p, v) (full ? _mm512_storeu_ps((p) + j, v) : _mm512_mask_storeu_ps((p) + j, k, v))
    const __m512 vr = _mm512_set1_ps(rs);
    const __m512 xhat = _mm512_mul_ps(LD(x), vr);
    const __m512 dyv = LD(dy);
    if (hdx) {
        const __m512 g = hg ? _mm512_mul_ps(dyv, LD(gamma)) : dyv;
        __m512 v = _mm512_mul_ps(vr, _mm512_sub_ps(g, _mm512_mul_ps(xhat, _mm512_set1_ps(b))));
        if (acc)
            v = _mm512_add_ps(LD(dx), v);
        ST(dx, v);
    }
    if (hdg)
        ST(dg, _mm512_add_ps(LD(dg), _mm512_mul_ps(dyv, xhat)));
#undef LD
#undef ST
}

KEEL_INLINE void rms_sweep2(size_t dim, const float *dy, const float *x, const float *gamma,
                            float *dx, float *dg, float rs, float b, int hdx, int acc, int hg,
                            int hdg)
{
    size_t j = 0;
    for (; j + 16 <= dim; j += 16)
        rms_step2(j, dy, x, gamma, dx, dg, rs, b, 0xffff, 1, hdx, acc, hg, hdg);
    if (j < dim)
        rms_step2(j, dy, x, gamma, dx, dg, rs, b, k512_tail16(dim - j), 0, hdx, acc, hg, hdg);
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

void keel_f32_rmsnorm_bwd__avx512(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                  const float *x, size_t x_stride, const float *rstd,
                                  const float *gamma, float eps, float *dx, size_t dx_stride,
                                  int accumulate_dx, float *dgamma_part)
{
    const int hdx = dx != NULL, hg = gamma != NULL;
    const rms_sweep2_fn sweep2 = rms_sweep2_table[hdx | (hdx && accumulate_dx) << 1 | hg << 2 |
                                                  (dgamma_part != NULL) << 3];
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * dy_stride;
        const float *xr = x + r * x_stride;
        const float rs = rstd ? rstd[r] : rms_rstd(xr, dim, eps);
        float b = 0.0f;
        if (hdx) {
            const double sgx = hg ? rms_sweep1(dim, dyr, xr, gamma, 1)
                                  : rms_sweep1(dim, dyr, xr, gamma, 0);
            b = (float)((double)rs * (sgx / (double)dim));
        }
        sweep2(dim, dyr, xr, gamma, hdx ? dx + r * dx_stride : NULL, dgamma_part, rs, b);
    }
}
