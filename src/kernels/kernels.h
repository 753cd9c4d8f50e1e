/*
 * The kernel layer: pure functions over a range of rows. Kernels never allocate, never start
 * threads, never validate (the operator layer in src/ops does), and never print.
 *
 * Names: keel_<dtype>_<op>_<direction>__<isa>, one file per op and ISA:
 *   src/kernels/f32_layernorm__scalar.c (the reference), f32_layernorm__avx2.c,
 *   f32_layernorm__avx512.c, f32_layernorm__neon.c (each the body f32_layernorm_simd.h compiled
 *   with its path's lane vocabulary, lanes__<isa>.h), ...
 * The build gives each file its ISA flags from its suffix (never -march=native); the x86 files
 * (__avx2, __avx512) are built only for x86-64, the __neon files only for aarch64.
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
 *   b_f = (float)((double)rstd_f * (Sgx / dim))               mean(g * xhat); a NaN b_f is
 *         the canonical NaN 0x7fc00000 (keel_rms_bwd_b in norm_finish.h: the row's NaN dx then
 *         has one sign on every path)
 *   sweep 2: xhat = x[j] * rstd_f;  dxv = rstd_f * (g_f[j] - xhat * b_f)
 *            dx as above;  dgamma_part[j] = dgamma_part[j] + dy[j] * xhat
 *
 * NaN or Inf anywhere in a row's x makes that row's statistics NaN and so all of its outputs:
 * a non-finite first sum (s for LayerNorm, ss for RMSNorm) is turned into NaN by the helpers of
 * norm_finish.h, which every path calls (without that, an Inf would give mean = Inf, or
 * rstd = 0 and finite y elsewhere in the row).
 *
 * ---- Transformer blocks (fused residual + norm, LayerScale, BatchNorm, DyT) ----------------
 *
 * Residual, per element (keel_f32_res; alpha a float, lambda and bias optional dim vectors):
 *   h[j] = (alpha * x[j]) + (lambda[j] * r[j])      (r[j] alone when lambda is NULL)
 *          then + bias[j] if bias                   (float ops, left to right)
 * The fused forwards (add_layernorm, add_rmsnorm) compute h this way and then run EXACTLY the
 * LayerNorm / RMSNorm forward above on the float h: y is bitwise keel_layernorm_fwd(h). The
 * sweeps after the first take h again from x and r, or from a private buffer the first sweep
 * filled (the same bits), never from the output: h is stored only by the last sweep, so h may
 * overwrite x or r (in place) and need not be stored at all (post-norm).
 *
 * Fused backward, per row, with hv[j] = the saved h, or h recomputed from x and r as above:
 *   statistics and sweep 1 as the LayerNorm (RMSNorm) backward on hv, with g_f = dy * gamma;
 *   sweep 1 also runs (and sweep 2 computes v) whenever any of dx, dr, dlambda, dbias is wanted
 *   v[j]  = the norm's dxv of kernels.h (rstd_f * ((g_f - a_f) - xhat * b_f); RMSNorm without a_f)
 *   G[j]  = dh[j] + v[j] (v[j] when dh is NULL)         the gradient reaching h
 *   dx[j] = alpha * G[j]        (dx[j] + alpha * G[j] with accumulate)
 *   dr[j] = lambda[j] * G[j]    (G[j] without lambda; dr[j] + ... with accumulate)
 *   partials, rows in increasing order: dgamma += dy * xhat, dbeta += dy (LayerNorm),
 *   dlambda += G * r[j], dbias += G.
 * So with alpha 1, no lambda, dx is bitwise keel_layernorm_bwd's dx accumulated into dh.
 *
 * LayerScale: h[j] = x[j] + (lambda[j] * f[j]) (the residual with alpha 1: the same bits).
 * Backward: dx[j] = dh[j] (or dx[j] + dh[j]), df[j] = lambda[j] * dh[j] (or df[j] + ...),
 * dlambda partial += dh[j] * f[j].
 *
 * BatchNorm: per feature j over the rows; kernels get a range of columns and all rows. Column
 * sums are plain double sums over rows in increasing row order (one accumulator per column:
 * a SIMD path vectorizes across columns, so it keeps the order without lanes):
 *   S1 = sum (double)x;  mean_d = keel_ln_mean(S1, rows);  M2 = sum (t * t), t = (double)x - mean_d
 *   (the operator turns them into rstd_f = keel_ln_rstd(M2, rows, eps), mean hi/lo floats and
 *   the running statistics, in double, rounded once)
 *   apply: y = ((x - hi) - lo) * rstd_f, * gamma, + beta, as LayerNorm (lo skipped when NULL:
 *   inference uses the running mean as hi).
 * Backward (training), per column from mean_f, rstd_f, with u = (double)x - (double)mean_f:
 *   Su = sum u, Sd = sum (double)dy, Sdu = sum (double)dy * u, Sg = sum (double)g_f,
 *   Sgu = sum (double)g_f * u;  delta = Su / rows;  a_f = (float)(Sg / rows),
 *   b_f = (float)(rstd_d * ((Sgu - delta * Sg) / rows)), delta_f = (float)delta;
 *   xhat = ((x - mean_f) - delta_f) * rstd_f;  dx = rstd_f * ((g_f - a_f) - xhat * b_f)
 *   dgamma = (float)(rstd_d * (Sdu - delta * Sd)) (+ old in double), dbeta = (float)Sd (+ old).
 * Inference backward: dx = rstd_f * g_f; dgamma = (float)(rstd_d * Sdu), dbeta = (float)Sd.
 *
 * DyT: u = alpha * x[j]; t, s = keel_tanh_sech2_f32(u) (dyt_tanh.h: tanh and 1 - tanh^2);
 *   y = t, then * gamma[j] if gamma, then + beta[j] if beta.
 * Backward: gs = dy[j] * gamma[j] (dy[j] without gamma);  dx = (gs * alpha) * s (or dx + ...);
 *   partials: dalpha_col += (gs * x[j]) * s, dgamma += dy[j] * t, dbeta += dy[j].
 */
#ifndef KEEL_KERNELS_H
#define KEEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

/* Forward over `rows` rows. mean and rstd (rows floats) may be NULL. gamma/beta may be NULL. */
typedef void keel_f32_layernorm_fwd_fn(size_t rows, size_t dim,
                                       const float *x, size_t x_stride,
                                       float *y, size_t y_stride,
                                       const float *gamma, const float *beta, float eps,
                                       float *mean, float *rstd);

/* The memory policy the SIMD kernels follow and the operators hint with (measured:
 * docs/performance.md). Inputs spanning more than KEEL_PREFETCH_ABOVE bytes are prefetched a row
 * ahead; a plain norm's output of KEEL_STREAM_ABOVE bytes or more per call (one thread's part) is
 * written with streaming stores. (The fused forwards stream from their own, measured cut:
 * ADD_NORM_STREAM_ABOVE in add_norm_simd.h.) */
#define KEEL_PREFETCH_ABOVE ((size_t)2 << 20)
#define KEEL_STREAM_ABOVE ((size_t)16 << 20)

/* Prefetching (of the rows the next sweep over memory reads, into L2, while the current rows
 * are worked on in cache) pays only when the data come from beyond L2, and only for rows long
 * enough that one row ahead is far enough (below that the hardware prefetcher keeps up); on
 * data already in cache it costs (all measured). So a call prefetches for rows of at least
 * KEEL_PREFETCH_MIN_DIM values whose input spans more than KEEL_PREFETCH_ABOVE bytes. */
#define KEEL_PREFETCH_MIN_DIM 256
static inline int keel_want_prefetch(size_t dim, size_t in_bytes)
{
    return dim >= KEEL_PREFETCH_MIN_DIM && in_bytes > KEEL_PREFETCH_ABOVE;
}
/* Streaming (non-temporal) stores of an output spanning KEEL_STREAM_ABOVE bytes or more per
 * call: there a write-allocating store reads every line it writes (a third more traffic than
 * the copy floor) and evicts the rows still to be read. Measured, 1 thread, LayerNorm forward,
 * streamed against cached stores: 1024x4096 (16 MiB) 1.20x, 4096x4096 1.24x, 16384x8192 1.30x
 * faster; 4096x768 (12 MiB) and 8192x768 (24 MiB) 0.9x (slower): the cut is at 16 MiB of
 * output per call, the part of one thread. A row streams where the path streams (KR_STREAMS)
 * and its start is aligned (kr_streamable); the kernel ends with a fence. The values are
 * unchanged. */
static inline int keel_want_stream(size_t out_bytes) { return out_bytes >= KEEL_STREAM_ABOVE; }

/* dx_flags of the LayerNorm and RMSNorm backwards: ACCUMULATE changes what is computed (dx +=
 * instead of dx =); the others are hints from the operator, which sees the whole tensor where
 * a kernel sees one block of rows, and never change a bit of any result. */
enum {
    KEEL_KBWD_ACCUMULATE = 1, /* dx[j] = dx[j] + v */
    KEEL_KBWD_PREFETCH = 2,   /* the tensors lie beyond L2: prefetch the next rows */
    KEEL_KBWD_STREAM = 4      /* dx spans far beyond the caches: streaming stores (not with
                                 ACCUMULATE) */
};

/* The hints for a backward whose input spans in_bytes and whose dx, in one thread's part, spans
 * dx_bytes (the policy above, in bytes whatever the element size). */
static inline int keel_kbwd_hints(size_t in_bytes, size_t dx_bytes)
{
    return (in_bytes > KEEL_PREFETCH_ABOVE ? KEEL_KBWD_PREFETCH : 0) |
           (dx_bytes >= KEEL_STREAM_ABOVE ? KEEL_KBWD_STREAM : 0);
}

/* Backward over `rows` rows. mean/rstd both NULL: recomputed with eps. dx NULL: skipped.
 * dgamma_part/dbeta_part: dim floats each, accumulated into (caller zeroes them), or NULL. */
typedef void keel_f32_layernorm_bwd_fn(size_t rows, size_t dim,
                                       const float *dy, size_t dy_stride,
                                       const float *x, size_t x_stride,
                                       const float *mean, const float *rstd,
                                       const float *gamma, float eps,
                                       float *dx, size_t dx_stride, int dx_flags,
                                       float *dgamma_part, float *dbeta_part);

typedef void keel_f32_rmsnorm_fwd_fn(size_t rows, size_t dim,
                                     const float *x, size_t x_stride,
                                     float *y, size_t y_stride,
                                     const float *gamma, float eps, float *rstd);

typedef void keel_f32_rmsnorm_bwd_fn(size_t rows, size_t dim,
                                     const float *dy, size_t dy_stride,
                                     const float *x, size_t x_stride,
                                     const float *rstd, const float *gamma, float eps,
                                     float *dx, size_t dx_stride, int dx_flags,
                                     float *dgamma_part);

/* ---- Transformer blocks ---- */

/* The residual input of the fused kernels (rows from x and r). */
typedef struct keel_f32_res {
    const float *x;
    size_t x_stride;
    const float *r;
    size_t r_stride;
    float alpha;
    const float *lambda; /* dim floats or NULL (1) */
    const float *bias;   /* dim floats or NULL (0) */
} keel_f32_res;

/* The same residual from row r0 on. */
static inline keel_f32_res keel_f32_res_from(const keel_f32_res *res, size_t r0)
{
    keel_f32_res o = *res;
    o.x = res->x ? res->x + r0 * res->x_stride : NULL;
    o.r = res->r ? res->r + r0 * res->r_stride : NULL;
    return o;
}

/* Fused forwards: h (NULL: not stored), y. mean/rstd optional. */
typedef void keel_f32_add_layernorm_fwd_fn(size_t rows, size_t dim, const keel_f32_res *res,
                                           float *h, size_t h_stride, float *y, size_t y_stride,
                                           const float *gamma, const float *beta, float eps,
                                           float *mean, float *rstd);
typedef void keel_f32_add_rmsnorm_fwd_fn(size_t rows, size_t dim, const keel_f32_res *res,
                                         float *h, size_t h_stride, float *y, size_t y_stride,
                                         const float *gamma, float eps, float *rstd);

/* Where a fused backward writes. parts: dgamma, dbeta, dlambda, dbias partials (any NULL). */
typedef struct keel_f32_res_grads {
    float *dx;
    size_t dx_stride;
    float *dr;
    size_t dr_stride;
    int accumulate; /* dx, dr */
    float *parts[4];
    int hints; /* KEEL_KBWD_PREFETCH | KEEL_KBWD_STREAM (dx, dr): never change a bit; a path
                  may ignore them */
} keel_f32_res_grads;
enum { KEEL_PART_DGAMMA, KEEL_PART_DBETA, KEEL_PART_DLAMBDA, KEEL_PART_DBIAS };

/* Fused backwards. h NULL: recomputed from res (x and r). dh NULL: 0. mean/rstd NULL:
 * recomputed (LayerNorm: both or neither). res->r is read for h and for dlambda only. */
typedef void keel_f32_add_layernorm_bwd_fn(size_t rows, size_t dim, const float *dy,
                                           size_t dy_stride, const float *dh, size_t dh_stride,
                                           const keel_f32_res *res, const float *h,
                                           size_t h_stride, const float *mean,
                                           const float *rstd, const float *gamma, float eps,
                                           const keel_f32_res_grads *out);
typedef void keel_f32_add_rmsnorm_bwd_fn(size_t rows, size_t dim, const float *dy,
                                         size_t dy_stride, const float *dh, size_t dh_stride,
                                         const keel_f32_res *res, const float *h,
                                         size_t h_stride, const float *rstd,
                                         const float *gamma, float eps,
                                         const keel_f32_res_grads *out);

/* LayerScale. dx, df NULL: skipped. dlambda_part NULL: skipped. The forward streams its h
 * past the caches when the call's h spans KEEL_STREAM_ABOVE bytes or more; the backward sees one
 * block of rows and takes hints from the operator (KEEL_KBWD_STREAM: dx and df streamed, not
 * with accumulate). Neither changes a bit. */
typedef void keel_f32_layerscale_fwd_fn(size_t rows, size_t dim, const float *x, size_t x_stride,
                                        const float *f, size_t f_stride, const float *lambda,
                                        float *h, size_t h_stride);
typedef void keel_f32_layerscale_bwd_fn(size_t rows, size_t dim, const float *dh,
                                        size_t dh_stride, const float *f, size_t f_stride,
                                        const float *lambda, float *dx, size_t dx_stride,
                                        float *df, size_t df_stride, int accumulate,
                                        float *dlambda_part, int hints);

/* BatchNorm over columns [0, cols) of the pointers given (the caller offsets them), all rows.
 * stats: mean_d[c], m2[c] (doubles). apply: lo NULL means no low part. */
typedef void keel_f32_batchnorm_stats_fn(size_t rows, size_t cols, const float *x,
                                         size_t x_stride, double *mean, double *m2);
typedef void keel_f32_batchnorm_apply_fn(size_t rows, size_t cols, const float *x,
                                         size_t x_stride, float *y, size_t y_stride,
                                         const float *hi, const float *lo, const float *rstd,
                                         const float *gamma, const float *beta);
/* Backward: training (batch statistics) or inference. dx NULL: skipped. dgamma/dbeta NULL:
 * skipped, else written (added to in double with accumulate_dparams). */
typedef void keel_f32_batchnorm_bwd_fn(size_t rows, size_t cols, const float *dy,
                                       size_t dy_stride, const float *x, size_t x_stride,
                                       const float *mean, const float *rstd,
                                       const float *gamma, int training, float *dx,
                                       size_t dx_stride, int accumulate_dx, float *dgamma,
                                       float *dbeta, int accumulate_dparams);

/* DyT. parts: dgamma, dbeta, dalpha columns (any NULL). */
typedef void keel_f32_dyt_fwd_fn(size_t rows, size_t dim, const float *x, size_t x_stride,
                                 float *y, size_t y_stride, float alpha, const float *gamma,
                                 const float *beta);
typedef void keel_f32_dyt_bwd_fn(size_t rows, size_t dim, const float *dy, size_t dy_stride,
                                 const float *x, size_t x_stride, float alpha,
                                 const float *gamma, float *dx, size_t dx_stride,
                                 int accumulate_dx, float *dgamma_part, float *dbeta_part,
                                 float *dalpha_part);

/* LayerNorm and RMSNorm of 16-bit rows: x and y (dy, x and dx) all bf16, or all f16 (uint16_t
 * patterns, strides in elements), gamma / beta / statistics / partials float32. The float32
 * kernel's arithmetic on the exactly widened values and each output rounded once to nearest
 * even as it is stored (an accumulated dx: the old value widened, the sum rounded): the bits of
 * widening the rows, running the float32 kernel and rounding its outputs (the staged path,
 * ops/stage.c), which the bitwise test checks. */
typedef void keel_u16_layernorm_fwd_fn(size_t rows, size_t dim, const uint16_t *x,
                                       size_t x_stride, uint16_t *y, size_t y_stride,
                                       const float *gamma, const float *beta, float eps,
                                       float *mean, float *rstd);
typedef void keel_u16_rmsnorm_fwd_fn(size_t rows, size_t dim, const uint16_t *x, size_t x_stride,
                                     uint16_t *y, size_t y_stride, const float *gamma, float eps,
                                     float *rstd);
typedef void keel_u16_layernorm_bwd_fn(size_t rows, size_t dim, const uint16_t *dy,
                                       size_t dy_stride, const uint16_t *x, size_t x_stride,
                                       const float *mean, const float *rstd, const float *gamma,
                                       float eps, uint16_t *dx, size_t dx_stride, int dx_flags,
                                       float *dgamma_part, float *dbeta_part);
typedef void keel_u16_rmsnorm_bwd_fn(size_t rows, size_t dim, const uint16_t *dy, size_t dy_stride,
                                     const uint16_t *x, size_t x_stride, const float *rstd,
                                     const float *gamma, float eps, uint16_t *dx, size_t dx_stride,
                                     int dx_flags, float *dgamma_part);
typedef keel_u16_layernorm_fwd_fn keel_bf16_layernorm_fwd_fn, keel_f16_layernorm_fwd_fn;
typedef keel_u16_rmsnorm_fwd_fn keel_bf16_rmsnorm_fwd_fn, keel_f16_rmsnorm_fwd_fn;
typedef keel_u16_layernorm_bwd_fn keel_bf16_layernorm_bwd_fn, keel_f16_layernorm_bwd_fn;
typedef keel_u16_rmsnorm_bwd_fn keel_bf16_rmsnorm_bwd_fn, keel_f16_rmsnorm_bwd_fn;
/* Rows shorter than this go through the staged path instead (ops/layernorm.c, rmsnorm.c): there
 * the float32 kernels take them in the row batches (row_batches_simd.h) and in groups, which
 * the 16-bit kernels do not have. */
#define KEEL_U16_MIN_DIM 256

/* THE KERNEL LIST: every kernel of a path, once, in the order of keel_kernels. Each entry
 * X(op, neon) names
 *   op   - the kernel: its type keel_<op>_fn (above), its field in keel_kernels, and its
 *          definitions keel_<op>__<isa> in src/kernels/<op's file>__<isa>.c;
 *   neon - the kernel the neon path takes: neon once the op's body is written over the lane
 *          vocabulary (lanes__neon.h), else scalar (the same bits, by the reduction order).
 * It generates the prototypes below, the tables of kernel_list.c with the names that keel info
 * prints (keel_kernel_name), and the kernel cases of tests/test_kernels_bitwise.c (a kernel
 * added here without a bitwise case there does not compile). */
#define KEEL_KERNEL_LIST(X)                                                                        \
    X(f32_layernorm_fwd, neon)                                                                     \
    X(f32_layernorm_bwd, neon)                                                                     \
    X(f32_rmsnorm_fwd, neon)                                                                       \
    X(f32_rmsnorm_bwd, neon)                                                                       \
    X(f32_add_layernorm_fwd, neon)                                                                 \
    X(f32_add_layernorm_bwd, neon)                                                                 \
    X(f32_add_rmsnorm_fwd, neon)                                                                   \
    X(f32_add_rmsnorm_bwd, neon)                                                                   \
    X(f32_layerscale_fwd, neon)                                                                    \
    X(f32_layerscale_bwd, neon)                                                                    \
    X(f32_batchnorm_stats, neon)                                                                   \
    X(f32_batchnorm_apply, neon)                                                                   \
    X(f32_batchnorm_bwd, neon)                                                                     \
    X(f32_dyt_fwd, neon)                                                                           \
    X(f32_dyt_bwd, neon)                                                                           \
    X(bf16_layernorm_fwd, neon)                                                                    \
    X(f16_layernorm_fwd, neon)                                                                     \
    X(bf16_rmsnorm_fwd, neon)                                                                      \
    X(f16_rmsnorm_fwd, neon)                                                                       \
    X(bf16_layernorm_bwd, neon)                                                                    \
    X(f16_layernorm_bwd, neon)                                                                     \
    X(bf16_rmsnorm_bwd, neon)                                                                      \
    X(f16_rmsnorm_bwd, neon)

/* The kernels of every path (a declaration of a kernel a build lacks is never referenced). */
#define KEEL_KERNEL_DECLARE(op, neon)                                                              \
    keel_##op##_fn keel_##op##__scalar, keel_##op##__avx2, keel_##op##__avx512, keel_##op##__neon;
KEEL_KERNEL_LIST(KEEL_KERNEL_DECLARE)
#undef KEEL_KERNEL_DECLARE

/* Each kernel's index in the list (KEEL_K_f32_layernorm_fwd, ...), and their number. */
#define KEEL_KERNEL_INDEX(op, neon) KEEL_K_##op,
enum { KEEL_KERNEL_LIST(KEEL_KERNEL_INDEX) KEEL_KERNEL_COUNT };
#undef KEEL_KERNEL_INDEX

/* The kernels that AVX512_BF16 makes faster (bf16_norms__avx512bf16.c): on a CPU with it, the
 * AVX-512 path takes these keel_<op>__avx512bf16 instead of keel_<op>__avx512, the same bits. */
#define KEEL_AVX512BF16_LIST(X)                                                                    \
    X(bf16_layernorm_fwd)                                                                          \
    X(bf16_layernorm_bwd)                                                                          \
    X(bf16_rmsnorm_fwd)                                                                            \
    X(bf16_rmsnorm_bwd)
#define KEEL_KERNEL_DECLARE_BF16(op) keel_##op##_fn keel_##op##__avx512bf16;
KEEL_AVX512BF16_LIST(KEEL_KERNEL_DECLARE_BF16)
#undef KEEL_KERNEL_DECLARE_BF16

/* One ISA path: a complete set of kernels, one field per entry of the list, and their names
 * ("keel_f32_layernorm_fwd__avx512", ...) in the list's order. */
typedef struct keel_kernels {
    keel_isa isa;
    const char *name; /* "scalar", "avx2", "avx512", "neon"; "avx512+bf16": the AVX-512 table of
                       * a CPU with AVX512_BF16 (keel_kernels_for_cpu) */
    const char *const *kernel_names; /* KEEL_KERNEL_COUNT of them */
#define KEEL_KERNEL_FIELD(op, neon) keel_##op##_fn *op;
    KEEL_KERNEL_LIST(KEEL_KERNEL_FIELD)
#undef KEEL_KERNEL_FIELD
} keel_kernels;

/* The tables (kernel_list.c): the one for an ISA, or NULL when that path was not compiled into
 * this build. Dispatch, tests and benchmarks all go through it. */
const keel_kernels *keel_kernels_for(keel_isa isa);
/* The table a CPU runs for isa: keel_kernels_for(isa), except the AVX-512 path of a build with
 * the AVX512_BF16 kernels on a CPU with the extension (avx512_bf16: keel_cpu_has_avx512_bf16,
 * core/cpu.h), whose table takes them (KEEL_AVX512BF16_LIST). */
const keel_kernels *keel_kernels_for_cpu(keel_isa isa, int avx512_bf16);

#endif /* KEEL_KERNELS_H */
