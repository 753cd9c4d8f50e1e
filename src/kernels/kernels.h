/*
 * The kernel layer: pure functions over a range of rows. Kernels never allocate, never start
 * threads, never validate (the operator layer in src/ops does), and never print.
 *
 * Names: keel_<dtype>_<op>_<direction>__<isa>, one file per op and ISA:
 *   src/kernels/f32_layernorm__scalar.c, f32_layernorm__avx2.c, f32_layernorm__avx512.c, ...
 * The build gives each file its ISA flags from its suffix (never -march=native).
 *
 * THE REDUCTION ORDER (every ISA path follows it, so results are bitwise identical):
 *  - A row reduction R(term) over j = 0..dim-1 uses 16 lanes of double accumulators, all
 *    starting at +0.0. Element j is added to lane (j % 16), in increasing j, as
 *    lane = lane + (double)term_j. Terms are computed exactly as written below: products of
 *    doubles are separate multiplies and adds (never fused: no FMA anywhere in a kernel, and
 *    kernels are compiled with -ffp-contract=off).
 *  - The 16 lanes are combined by a fixed tree: for h = 8, 4, 2, 1: a[i] = a[i] + a[i + h]
 *    for i < h. R is a[0]. (keel_reduce16 in reduce_order.h.)
 *  - Per-column sums over rows (dgamma, dbeta partials) add rows in increasing row order into a
 *    float partial that the caller zeroed: part[j] = part[j] + term (float add).
 *  - Float elementwise formulas are evaluated left to right exactly as written, each operation
 *    rounded to float (no FMA).
 *
 * LayerNorm forward, per row (keel_f32_layernorm_stats computes the statistics part):
 *   s      = R((double)x[j]);                  mean_d = s / (double)dim, or NaN if s is not
 *                                              finite (keel_ln_mean in norm_finish.h)
 *   v      = R(t * t), t = (double)x[j] - mean_d
 *   rstd_f = (float)(1.0 / sqrt(v / (double)dim + (double)eps))      (keel_ln_rstd)
 *   mean_f = (float)mean_d;                    mlo_f  = (float)(mean_d - (double)mean_f)
 *   y[j]   = ((x[j] - mean_f) - mlo_f) * rstd_f          (float ops)
 *            then * gamma[j] if gamma, then + beta[j] if beta
 *   saved:  mean[r] = mean_f, rstd[r] = rstd_f
 *
 * LayerNorm backward, per row, from saved mean_f, rstd_f (when the caller gave none, they are
 * first computed exactly as the forward computes them, so both calls give the same bits):
 *   g_f[j]  = dy[j] * gamma[j]   (float; dy[j] if gamma is NULL)
 *   u[j]    = (double)x[j] - (double)mean_f
 *   sweep 1 (only if dx is wanted; Sx always):
 *     Sx  = R(u[j]);  Sg = R((double)g_f[j]);  Sgu = R((double)g_f[j] * u[j])
 *   delta_d = Sx / dim  (the part of the mean a float32 mean lost)
 *   rstd_d  = (double)rstd_f
 *   a_f     = (float)(Sg / dim)                               mean(g)
 *   b_f     = (float)(rstd_d * ((Sgu - delta_d * Sg) / dim))  mean(g * xhat)
 *   delta_f = (float)delta_d
 *   sweep 2:
 *     xhat   = ((x[j] - mean_f) - delta_f) * rstd_f          (float)
 *     dxv    = rstd_f * ((g_f[j] - a_f) - xhat * b_f)        (float)
 *     dx[j]  = dxv, or dx[j] + dxv with accumulate
 *     dgamma_part[j] = dgamma_part[j] + dy[j] * xhat          (if dgamma_part)
 *     dbeta_part[j]  = dbeta_part[j] + dy[j]                  (if dbeta_part)
 *   When dx is not wanted, sweep 1 computes Sx only (delta is still needed for xhat).
 *
 * RMSNorm forward, per row:
 *   ss = R((double)x[j] * (double)x[j]);
 *   rstd_f = (float)(1.0 / sqrt(ss / dim + (double)eps)), or NaN if ss is not finite
 *            (keel_rms_rstd in norm_finish.h);  y[j] = (x[j] * rstd_f) then * gamma[j] if gamma;  rstd[r] = rstd_f
 *
 * RMSNorm backward, per row, from saved rstd_f (or recomputed as the forward does):
 *   sweep 1 (only if dx is wanted): Sgx = R((double)g_f[j] * (double)x[j])
 *   b_f = (float)((double)rstd_f * (Sgx / dim))               mean(g * xhat)
 *   sweep 2: xhat = x[j] * rstd_f;  dxv = rstd_f * (g_f[j] - xhat * b_f)
 *            dx as above;  dgamma_part[j] = dgamma_part[j] + dy[j] * xhat
 *
 * NaN or Inf anywhere in a row's x makes that row's statistics NaN and so all of its outputs:
 * a non-finite first sum (s for LayerNorm, ss for RMSNorm) is turned into NaN by the helpers of
 * norm_finish.h, which every path calls (without that, an Inf would give mean = Inf, or
 * rstd = 0 and finite y elsewhere in the row).
 */
#ifndef KEEL_KERNELS_H
#define KEEL_KERNELS_H

#include <stddef.h>

#include "keel.h"

/* Forward over `rows` rows. mean and rstd (rows floats) may be NULL. gamma/beta may be NULL. */
typedef void (*keel_f32_layernorm_fwd_fn)(size_t rows, size_t dim,
                                          const float *x, size_t x_stride,
                                          float *y, size_t y_stride,
                                          const float *gamma, const float *beta, float eps,
                                          float *mean, float *rstd);

/* Backward over `rows` rows. mean/rstd both NULL: recomputed with eps. dx NULL: skipped.
 * dgamma_part/dbeta_part: dim floats each, accumulated into (caller zeroes them), or NULL. */
typedef void (*keel_f32_layernorm_bwd_fn)(size_t rows, size_t dim,
                                          const float *dy, size_t dy_stride,
                                          const float *x, size_t x_stride,
                                          const float *mean, const float *rstd,
                                          const float *gamma, float eps,
                                          float *dx, size_t dx_stride, int accumulate_dx,
                                          float *dgamma_part, float *dbeta_part);

typedef void (*keel_f32_rmsnorm_fwd_fn)(size_t rows, size_t dim,
                                        const float *x, size_t x_stride,
                                        float *y, size_t y_stride,
                                        const float *gamma, float eps, float *rstd);

typedef void (*keel_f32_rmsnorm_bwd_fn)(size_t rows, size_t dim,
                                        const float *dy, size_t dy_stride,
                                        const float *x, size_t x_stride,
                                        const float *rstd, const float *gamma, float eps,
                                        float *dx, size_t dx_stride, int accumulate_dx,
                                        float *dgamma_part);

/* One ISA path: a complete set of kernels. */
typedef struct keel_kernels {
    keel_isa isa;
    const char *name; /* "scalar", "avx2", "avx512" */
    keel_f32_layernorm_fwd_fn f32_layernorm_fwd;
    keel_f32_layernorm_bwd_fn f32_layernorm_bwd;
    keel_f32_rmsnorm_fwd_fn f32_rmsnorm_fwd;
    keel_f32_rmsnorm_bwd_fn f32_rmsnorm_bwd;
} keel_kernels;

/* The kernel list (kernel_list.c): the table for an ISA, or NULL when that path was not
 * compiled into this build. Dispatch, tests and benchmarks all go through it. */
const keel_kernels *keel_kernels_for(keel_isa isa);

/* Kernels, by ISA. */
void keel_f32_layernorm_fwd__scalar(size_t, size_t, const float *, size_t, float *, size_t,
                                    const float *, const float *, float, float *, float *);
void keel_f32_layernorm_bwd__scalar(size_t, size_t, const float *, size_t, const float *, size_t,
                                    const float *, const float *, const float *, float,
                                    float *, size_t, int, float *, float *);
void keel_f32_rmsnorm_fwd__scalar(size_t, size_t, const float *, size_t, float *, size_t,
                                  const float *, float, float *);
void keel_f32_rmsnorm_bwd__scalar(size_t, size_t, const float *, size_t, const float *, size_t,
                                  const float *, const float *, float, float *, size_t, int,
                                  float *);

void keel_f32_layernorm_fwd__avx2(size_t, size_t, const float *, size_t, float *, size_t,
                                  const float *, const float *, float, float *, float *);
void keel_f32_layernorm_bwd__avx2(size_t, size_t, const float *, size_t, const float *, size_t,
                                  const float *, const float *, const float *, float,
                                  float *, size_t, int, float *, float *);
void keel_f32_rmsnorm_fwd__avx2(size_t, size_t, const float *, size_t, float *, size_t,
                                const float *, float, float *);
void keel_f32_rmsnorm_bwd__avx2(size_t, size_t, const float *, size_t, const float *, size_t,
                                const float *, const float *, float, float *, size_t, int,
                                float *);

void keel_f32_layernorm_fwd__avx512(size_t, size_t, const float *, size_t, float *, size_t,
                                    const float *, const float *, float, float *, float *);
void keel_f32_layernorm_bwd__avx512(size_t, size_t, const float *, size_t, const float *, size_t,
                                    const float *, const float *, const float *, float,
                                    float *, size_t, int, float *, float *);
void keel_f32_rmsnorm_fwd__avx512(size_t, size_t, const float *, size_t, float *, size_t,
                                  const float *, float, float *);
void keel_f32_rmsnorm_bwd__avx512(size_t, size_t, const float *, size_t, const float *, size_t,
                                  const float *, const float *, float, float *, size_t, int,
                                  float *);

#endif /* KEEL_KERNELS_H */
