/* keel_eps_check: what an eps means once stored in a dtype, and an eps suited to that dtype. */
#include <float.h>
#include <math.h>

#include "convert.h"
#include "error.h"

typedef struct dtype_traits {
    int fraction_bits;    /* explicit fraction bits */
    double smallest_normal;
} dtype_traits;

static dtype_traits traits_of(keel_dtype d)
{
    switch (d) {
    case KEEL_BF16: return (dtype_traits){7, 1.17549435e-38};
    case KEEL_F16: return (dtype_traits){10, 6.103515625e-05};
    default: return (dtype_traits){23, (double)FLT_MIN};
    }
}

static float round_to(keel_dtype d, float v)
{
    switch (d) {
    case KEEL_BF16: return keel_bf16_bits_to_f32(keel_f32_to_bf16_bits(v));
    case KEEL_F16: return keel_f16_bits_to_f32(keel_f32_to_f16_bits(v));
    default: return v;
    }
}

keel_status keel_eps_check(keel_dtype dtype, float eps, keel_eps_info *info)
{
    static const char who[] = "keel_eps_check";
    if (!info)
        return keel_fail(KEEL_ENULL, "%s: info is NULL", who);
    if ((int)dtype < (int)KEEL_F32 || (int)dtype > (int)KEEL_I8)
        return keel_fail(KEEL_EINVAL, "%s: dtype (%d) is not a keel_dtype", who, (int)dtype);
    if (dtype == KEEL_I8)
        return keel_fail(KEEL_EUNSUPPORTED, "%s: dtype i8 holds no eps (quantized outputs only)", who);
    if (!isfinite(eps) || eps < 0.0f)
        return keel_fail(KEEL_EINVAL, "%s: eps (%g) must be finite and >= 0", who, (double)eps);
    const dtype_traits t = traits_of(dtype);
    keel_eps_info r;
    r.eps = eps;
    r.eps_in_dtype = round_to(dtype, eps);
    r.representable = r.eps_in_dtype != 0.0f && fabs((double)r.eps_in_dtype - (double)eps) <= 0.01 * (double)eps;
    r.subnormal_in_dtype = r.eps_in_dtype != 0.0f && (double)r.eps_in_dtype < t.smallest_normal;
    r.max_amplification = eps > 0.0f ? 1.0 / sqrt((double)eps) : INFINITY;
    r.dominance_variance = (double)eps;
    const double ulp1 = ldexp(1.0, -t.fraction_bits);
    r.dtype_noise_variance = ulp1 * ulp1 / 12.0;
    const double floor_eps = fmax(t.smallest_normal, r.dtype_noise_variance);
    r.suggested_eps = (float)pow(10.0, ceil(log10(floor_eps)));
    *info = r;
    return KEEL_OK;
}
