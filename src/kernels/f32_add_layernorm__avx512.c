/* Fused residual add + LayerNorm, float32, AVX-512: the body of f32_add_layernorm_simd.h over
 * lanes__avx512.h, its short rows eight at a time (row_batches_simd.h). */
#include "kernels.h"
#include "lanes__avx512.h"
#include "f32_add_layernorm_simd.h"

void keel_f32_add_layernorm_fwd__avx512(size_t rows, size_t dim, const keel_f32_res *res, float *h,
                                        size_t h_stride, float *y, size_t y_stride,
                                        const float *gamma, const float *beta, float eps,
                                        float *mean, float *rstd)
{
    add_layernorm_fwd(rows, dim, res, h, h_stride, y, y_stride, gamma, beta, eps, mean, rstd);
}

void keel_f32_add_layernorm_bwd__avx512(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                        const float *dh, size_t dh_stride, const keel_f32_res *res,
                                        const float *h, size_t h_stride, const float *mean,
                                        const float *rstd, const float *gamma, float eps,
                                        const keel_f32_res_grads *out)
{
    add_layernorm_bwd(rows, dim, dy, dy_stride, dh, dh_stride, res, h, h_stride, mean, rstd, gamma,
                      eps, out);
}
