#include "validate.h"

#include <math.h>
#include <stdint.h>

#include "error.h"

const char *keel_dtype_name(keel_dtype d)
{
    switch (d) {
    case KEEL_F32: return "f32";
    case KEEL_BF16: return "bf16";
    case KEEL_F16: return "f16";
    case KEEL_I8: return "i8";
    }
    return "?";
}

size_t keel_dtype_size(keel_dtype d) { return d == KEEL_F32 ? 4 : d == KEEL_I8 ? 1 : 2; }

keel_status keel_check_shape(const char *who, const void *ctx, size_t rows, size_t dim)
{
    (void)rows; /* rows == 0 is a valid no-op, decided by the caller after all checks */
    if (!ctx)
        return keel_fail(KEEL_ENULL, "%s: ctx is NULL", who);
    if (dim == 0)
        return keel_fail(KEEL_EINVAL, "%s: dim is 0 (a row needs at least one feature)", who);
    return KEEL_OK;
}

/* Elements spanned by the tensor: (rows - 1) * stride + dim, or 0 on overflow. */
static size_t extent(size_t rows, size_t dim, size_t stride)
{
    if (rows == 0)
        return 0;
    if (rows - 1 > (SIZE_MAX - dim) / stride)
        return 0;
    return (rows - 1) * stride + dim;
}

keel_status keel_check_tensor_of(const char *who, const char *name, keel_tensor t, size_t rows,
                                 size_t dim, keel_presence presence, unsigned dtypes)
{
    if (!t.data) {
        if (presence == KEEL_OPTIONAL)
            return KEEL_OK;
        return keel_fail(KEEL_ENULL, "%s: %s.data is NULL", who, name);
    }
    if ((int)t.dtype < (int)KEEL_F32 || (int)t.dtype > (int)KEEL_I8)
        return keel_fail(KEEL_EINVAL, "%s: %s.dtype (%d) is not a keel_dtype", who, name, (int)t.dtype);
    if (!(dtypes & KEEL_DTYPE_BIT(t.dtype)))
        return keel_fail(KEEL_EUNSUPPORTED, "%s: %s.dtype %s is not supported here", who, name,
                         keel_dtype_name(t.dtype));
    if (t.stride < dim)
        return keel_fail(KEEL_EINVAL, "%s: %s.stride (%zu) < dim (%zu)", who, name, t.stride, dim);
    const size_t n = extent(rows, dim, t.stride);
    if (rows > 0 && (n == 0 || n > SIZE_MAX / keel_dtype_size(t.dtype)))
        return keel_fail(KEEL_EOVERFLOW, "%s: %s spans rows (%zu) * stride (%zu) elements, which overflows size_t",
                         who, name, rows, t.stride);
    /* No object spans more than PTRDIFF_MAX bytes, and a row's offset past that overflows a
     * pointer (fuzz_api: a bf16 stride of 2^62 elements over 2 rows, 2^63 + 2 bytes, passed the
     * size_t check and the staging read row 1 at a wrapped address). */
    if (rows > 0 && n > (size_t)PTRDIFF_MAX / keel_dtype_size(t.dtype))
        return keel_fail(KEEL_EOVERFLOW, "%s: %s spans rows (%zu) * stride (%zu) elements, more than "
                         "PTRDIFF_MAX bytes: larger than any object", who, name, rows, t.stride);
    return KEEL_OK;
}

keel_status keel_check_tensor(const char *who, const char *name, keel_tensor t, size_t rows,
                              size_t dim, keel_presence presence)
{
    return keel_check_tensor_of(who, name, t, rows, dim, presence, KEEL_DTYPE_BIT(KEEL_F32));
}

keel_status keel_check_eps(const char *who, float eps)
{
    if (!isfinite(eps) || eps < 0.0f)
        return keel_fail(KEEL_EINVAL, "%s: eps (%g) must be finite and >= 0", who, (double)eps);
    return KEEL_OK;
}

keel_status keel_check_flags(const char *who, unsigned flags, unsigned allowed)
{
    if (flags & ~allowed)
        return keel_fail(KEEL_EINVAL, "%s: flags (0x%x) has unknown bits 0x%x", who, flags, flags & ~allowed);
    return KEEL_OK;
}

keel_status keel_check_overlap(const char *who, const char *out_name, keel_tensor out,
                               const char *in_name, keel_tensor in, size_t rows, size_t dim)
{
    if (!out.data || !in.data || rows == 0)
        return KEEL_OK;
    if (out.data == in.data && out.stride == in.stride && out.dtype == in.dtype)
        return KEEL_OK; /* exactly in place */
    const uintptr_t o0 = (uintptr_t)out.data, i0 = (uintptr_t)in.data;
    const uintptr_t o1 = o0 + extent(rows, dim, out.stride) * keel_dtype_size(out.dtype);
    const uintptr_t i1 = i0 + extent(rows, dim, in.stride) * keel_dtype_size(in.dtype);
    if (!(o0 < i1 && i0 < o1))
        return KEEL_OK;
    /* Interleaved rows of one buffer (packed QKV: x and y are slices of each row) share a byte
     * range without sharing an element: with equal strides, rows collide only if the offset
     * between the tensors, modulo the stride, falls inside a row. */
    const size_t esize = keel_dtype_size(in.dtype);
    if (out.stride == in.stride && out.dtype == in.dtype) {
        const uintptr_t diff = o0 > i0 ? o0 - i0 : i0 - o0;
        if (diff % esize == 0) {
            const size_t k = (size_t)(diff / esize) % in.stride;
            if (k >= dim && in.stride - k >= dim)
                return KEEL_OK;
        }
    }
    return keel_fail(KEEL_EINVAL, "%s: %s overlaps %s without being the same tensor (in place needs the same data and stride)",
                     who, out_name, in_name);
}
