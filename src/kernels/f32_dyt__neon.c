/* DyT, float32, aarch64 NEON: the body of f32_dyt_simd.h over lanes__neon.h (kv: 4 floats). */
#include "kernels.h"
#include "lanes__neon.h"
#include "f32_dyt_simd.h"

void keel_f32_dyt_fwd__neon(size_t rows, size_t dim, const float *x, size_t x_stride, float *y,
                            size_t y_stride, float alpha, const float *gamma, const float *beta)
{
    dyt_fwd(rows, dim, x, x_stride, y, y_stride, alpha, gamma, beta);
}

void keel_f32_dyt_bwd__neon(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                            const float *x, size_t x_stride, float alpha, const float *gamma,
                            float *dx, size_t dx_stride, int accumulate_dx, float *dgamma_part,
                            float *dbeta_part, float *dalpha_part)
{
    dyt_bwd(rows, dim, dy, dy_stride, x, x_stride, alpha, gamma, dx, dx_stride, accumulate_dx,
            dgamma_part, dbeta_part, dalpha_part);
}
