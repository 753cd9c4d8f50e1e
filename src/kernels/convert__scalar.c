/* Scalar conversions: the definition of every dtype conversion in keel (see convert.h). */
#include <math.h>
#include <string.h>

#include "convert.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float keel_bf16_bits_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

uint16_t keel_f32_to_bf16_bits(float f)
{
    uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign and top payload, set the quiet bit */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even; overflow gives Inf */
    return (uint16_t)(u >> 16);
}

float keel_f16_bits_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) /* Inf, or NaN made quiet */
        return float_of(sign | 0x7f800000u | (mant ? 0x400000u | (mant << 13) : 0));
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact */
        const float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t keel_f32_to_f16_bits(float f)
{
    const uint32_t u = bits_of(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, top 10 payload bits kept */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* |f| >= 65520 rounds to Inf (and Inf stays Inf) */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* a normal half: rebias the exponent, round the low 13 bits */
        uint32_t r = a - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    /* a subnormal half (or zero): |f| * 2^24 is exact, rounded half-even to an integer <= 1024
     * (1024 is the smallest normal, whose encoding is 0x400: the arithmetic carries into it). */
    const float m = float_of(a) * 0x1p24f;
    float q = floorf(m);
    const float rem = m - q;
    if (rem > 0.5f || (rem == 0.5f && fmodf(q, 2.0f) != 0.0f))
        q += 1.0f;
    return (uint16_t)(sign | (uint16_t)q);
}

int8_t keel_quantize_i8(float y, float s)
{
    const float v = y / s;
    if (isnan(v))
        return 0;
    if (v >= 127.0f)
        return 127;
    if (v <= -127.0f)
        return -127;
    float q = floorf(v);
    const float rem = v - q; /* exact: |v| < 127 */
    if (rem > 0.5f || (rem == 0.5f && fmodf(q, 2.0f) != 0.0f))
        q += 1.0f;
    return (int8_t)q;
}

void keel_bf16_to_f32__scalar(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = keel_bf16_bits_to_f32(src[i]);
}

void keel_f16_to_f32__scalar(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = keel_f16_bits_to_f32(src[i]);
}

void keel_f32_to_bf16__scalar(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = keel_f32_to_bf16_bits(src[i]);
}

void keel_f32_to_f16__scalar(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = keel_f32_to_f16_bits(src[i]);
}

void keel_quantize_i8__scalar(const float *y, int8_t *q, size_t n, float s)
{
    for (size_t i = 0; i < n; i++)
        q[i] = keel_quantize_i8(y[i], s);
}

float keel_absmax_f32__scalar(const float *y, size_t n)
{
    float m = 0.0f;
    for (size_t j = 0; j < n; j++) {
        const float a = fabsf(y[j]);
        m = (a > m || isnan(a)) ? a : m; /* a NaN wins, and stays */
        if (isnan(m))
            break;
    }
    return m;
}
