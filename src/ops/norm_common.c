#include "norm_common.h"

#include <math.h>

#include "error.h"
#include "pool.h"
#include "validate.h"

/* A backward kernel gets one block of rows at a time (parallel.c), so it cannot tell a tensor
 * beyond the caches from a small one: the operator tells it. Thresholds as in the forward
 * kernels (lanes__avx512.h): prefetch when x spans more than 2 MiB; stream dx when one
 * thread's part of it spans 16 MiB or more. Measured (1 thread, 4096x4096 LayerNorm backward,
 * AVX-512): 1.67 ns/element without hints, 1.25 with prefetching, 1.02 with both. */
int keel_norm_bwd_hints(const keel_ctx *ctx, size_t rows, const keel_norm_call *call)
{
    const keel_stage *s = &call->stage; /* dy, x, dx */
    if (s->mem)
        return 0;
    const keel_tensor x = s->t[1], dx = s->t[2];
    return keel_bwd_hints(ctx, rows, x.stride * keel_dtype_size(x.dtype),
                          dx.data ? dx.stride * keel_dtype_size(dx.dtype) : 0);
}

int keel_bwd_hints(const keel_ctx *ctx, size_t rows, size_t in_row_bytes, size_t dx_row_bytes)
{
    const size_t threads = (size_t)keel_pool_size(ctx->pool);
    return keel_kbwd_hints(rows * in_row_bytes, rows * dx_row_bytes / (threads > 0 ? threads : 1));
}

/* The 16-bit kernels for rows of dtype dt (bf16 or f16). */
static keel_u16_norms u16_norms_of(const keel_kernels *k, keel_dtype dt)
{
    const keel_u16_norms bf16 = {k->bf16_layernorm_fwd, k->bf16_layernorm_bwd, k->bf16_rmsnorm_fwd,
                                 k->bf16_rmsnorm_bwd};
    const keel_u16_norms f16 = {k->f16_layernorm_fwd, k->f16_layernorm_bwd, k->f16_rmsnorm_fwd,
                                k->f16_rmsnorm_bwd};
    return dt == KEEL_BF16 ? bf16 : f16;
}

static keel_status check_quant(const char *who, keel_tensor y, const keel_quant_i8 *q, size_t dim)
{
    if (y.dtype == KEEL_I8 && !q)
        return keel_fail(KEEL_EUNSUPPORTED, "%s: y.dtype i8 needs the *_fwd_i8 operation", who);
    if (!q)
        return KEEL_OK;
    if (y.dtype != KEEL_I8)
        return keel_fail(KEEL_EINVAL, "%s: y.dtype is %s; quantized output needs i8", who, keel_dtype_name(y.dtype));
    if (!isfinite(q->scale) || q->scale < 0.0f)
        return keel_fail(KEEL_EINVAL, "%s: quant->scale (%g) must be finite and >= 0 (0: per row)", who,
                         (double)q->scale);
    if (q->scale == 0.0f && !q->row_scale)
        return keel_fail(KEEL_ENULL, "%s: quant->row_scale is NULL with a dynamic (0) scale", who);
    if (q->smooth)
        for (size_t j = 0; j < dim; j++)
            if (!(q->smooth[j] > 0.0f) || !isfinite(q->smooth[j]))
                return keel_fail(KEEL_EINVAL, "%s: quant->smooth[%zu] (%g) must be finite and > 0", who, j,
                                 (double)q->smooth[j]);
    return KEEL_OK;
}

keel_status keel_norm_fwd_setup(const char *who, keel_ctx *ctx, size_t rows, size_t dim,
                                keel_tensor x, keel_tensor y, float eps,
                                const keel_quant_i8 *quant, unsigned flags, unsigned extra_flags,
                                keel_norm_call *call)
{
    keel_status st;
    const unsigned y_dtypes = quant ? KEEL_DTYPE_BIT(KEEL_I8) : KEEL_FLOAT_DTYPES;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor_of(who, "x", x, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "y", y, rows, dim, KEEL_REQUIRED, y_dtypes | KEEL_FLOAT_DTYPES)) ||
        (st = check_quant(who, y, quant, dim)) ||
        (st = keel_check_overlap(who, "y", y, "x", x, rows, dim)) ||
        (st = keel_check_eps(who, eps)) || (st = keel_check_flags(who, flags, extra_flags)))
        return st;
    call->k = ctx->kernels;
    call->dim = dim;
    call->stage.quant = quant;
    keel_stage_add(&call->stage, x, KEEL_STAGE_IN);
    keel_stage_add(&call->stage, y, quant ? KEEL_STAGE_OUT_I8 : KEEL_STAGE_OUT);
    /* x and y both bf16 or both f16: the 16-bit forward kernels read and write them where they
     * are, with the staged path's bits (kernels.h), for rows of KEEL_U16_MIN_DIM or more */
    call->stage.native = !quant && x.dtype == y.dtype && x.dtype != KEEL_F32 &&
                         dim >= KEEL_U16_MIN_DIM;
    if (call->stage.native)
        call->u16 = u16_norms_of(call->k, x.dtype);
    return keel_stage_setup(&call->stage, ctx, who, rows, dim);
}

keel_status keel_norm_bwd_setup(const char *who, keel_ctx *ctx, size_t rows, size_t dim,
                                keel_tensor dy, keel_tensor x, keel_tensor dx, float eps,
                                unsigned flags, keel_norm_call *call)
{
    keel_status st;
    if ((st = keel_check_shape(who, ctx, rows, dim)) ||
        (st = keel_check_tensor_of(who, "dy", dy, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "x", x, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_tensor_of(who, "dx", dx, rows, dim, KEEL_OPTIONAL, KEEL_FLOAT_DTYPES)) ||
        (st = keel_check_overlap(who, "dx", dx, "dy", dy, rows, dim)) ||
        (st = keel_check_overlap(who, "dx", dx, "x", x, rows, dim)) ||
        (st = keel_check_eps(who, eps)) ||
        (st = keel_check_flags(who, flags, KEEL_FLAG_ACCUMULATE_DX | KEEL_FLAG_ACCUMULATE_DPARAMS)))
        return st;
    call->k = ctx->kernels;
    call->dim = dim;
    keel_stage_add(&call->stage, dy, KEEL_STAGE_IN);
    keel_stage_add(&call->stage, x, KEEL_STAGE_IN);
    keel_stage_add(&call->stage, dx, flags & KEEL_FLAG_ACCUMULATE_DX ? KEEL_STAGE_ACC : KEEL_STAGE_OUT);
    /* dy, x and dx (if any) all bf16 or all f16: the 16-bit backward kernels, as the forward */
    call->stage.native = dy.dtype == x.dtype && (!dx.data || dx.dtype == x.dtype) &&
                         x.dtype != KEEL_F32 && dim >= KEEL_U16_MIN_DIM;
    if (call->stage.native)
        call->u16 = u16_norms_of(call->k, x.dtype);
    return keel_stage_setup(&call->stage, ctx, who, rows, dim);
}

keel_status keel_norm_fold_smooth(const char *who, keel_ctx *ctx, const keel_norm_call *call,
                                  size_t dim, const float **gamma, const float **beta)
{
    if (!call->stage.quant || !call->stage.quant->smooth)
        return KEEL_OK;
    float *p = keel_ctx_params(ctx, 2 * dim, who);
    if (!p)
        return KEEL_ENOMEM;
    const float *s = call->stage.quant->smooth;
    for (size_t j = 0; j < dim; j++)
        p[j] = (*gamma ? (*gamma)[j] : 1.0f) / s[j];
    *gamma = p;
    if (*beta) {
        for (size_t j = 0; j < dim; j++)
            p[dim + j] = (*beta)[j] / s[j];
        *beta = p + dim;
    }
    return KEEL_OK;
}
