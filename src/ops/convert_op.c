/* keel_convert: rows of one storage dtype (f32, bf16, f16) into another, rounded as the norm
 * operations round their low-precision outputs, through the context's conversion kernels (every
 * path the same bits). One thread: a conversion moves memory and does little else. */
#include <string.h>

#include "ctx.h"
#include "validate.h"

/* Floats converted at a time between bf16 and f16 (through float32, on the stack). */
#define CONVERT_BLOCK 1024

static void convert_row(const keel_convert_kernels *cv, const void *src, keel_dtype sd, void *dst,
                        keel_dtype dd, size_t dim)
{
    if (sd == dd) {
        if (src != dst)
            memcpy(dst, src, dim * keel_dtype_size(sd));
    } else if (sd == KEEL_F32) {
        (dd == KEEL_BF16 ? cv->f32_to_bf16 : cv->f32_to_f16)(src, dst, dim);
    } else if (dd == KEEL_F32) {
        (sd == KEEL_BF16 ? cv->bf16_to_f32 : cv->f16_to_f32)(src, dst, dim);
    } else { /* bf16 <-> f16: widening is exact, so this rounds once */
        float block[CONVERT_BLOCK];
        const uint16_t *s = src;
        uint16_t *d = dst;
        for (size_t j = 0; j < dim; j += CONVERT_BLOCK) {
            const size_t n = dim - j < CONVERT_BLOCK ? dim - j : CONVERT_BLOCK;
            (sd == KEEL_BF16 ? cv->bf16_to_f32 : cv->f16_to_f32)(s + j, block, n);
            (dd == KEEL_BF16 ? cv->f32_to_bf16 : cv->f32_to_f16)(block, d + j, n);
        }
    }
}

static keel_status convert_call(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor src,
                                keel_tensor dst)
{
    static const char who[] = "keel_convert";
    keel_status st = keel_check_shape(who, ctx, rows, dim);
    if (!st)
        st = keel_check_tensor_of(who, "src", src, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES);
    if (!st)
        st = keel_check_tensor_of(who, "dst", dst, rows, dim, KEEL_REQUIRED, KEEL_FLOAT_DTYPES);
    if (!st)
        st = keel_check_overlap(who, "dst", dst, "src", src, rows, dim);
    if (st)
        return st;
    const size_t ss = keel_dtype_size(src.dtype);
    const size_t ds = keel_dtype_size(dst.dtype);
    for (size_t r = 0; r < rows; r++)
        convert_row(ctx->convert, (const char *)src.data + r * src.stride * ss, src.dtype,
                    (char *)dst.data + r * dst.stride * ds, dst.dtype, dim);
    return KEEL_OK;
}

keel_status keel_convert(keel_ctx *ctx, size_t rows, size_t dim, keel_tensor src, keel_tensor dst)
{
    keel_status st = keel_ctx_enter(ctx, "keel_convert");
    return st ? st : keel_ctx_leave(ctx, convert_call(ctx, rows, dim, src, dst));
}
