#include "stage.h"

#include <stdint.h>
#include <string.h>

size_t keel_stage_block_rows(size_t dim) { return dim >= 2048 ? 1 : 2048 / dim; }

const float *keel_stage_in(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                           size_t dim, float *buf, size_t *stride)
{
    if (t.dtype == KEEL_F32) {
        *stride = t.stride;
        return (const float *)t.data + r * t.stride;
    }
    const keel_to_f32_fn to_f32 = t.dtype == KEEL_BF16 ? cv->bf16_to_f32 : cv->f16_to_f32;
    const uint16_t *src = (const uint16_t *)t.data + r * t.stride;
    for (size_t i = 0; i < n; i++)
        to_f32(src + i * t.stride, buf + i * dim, dim);
    *stride = dim;
    return buf;
}

float *keel_stage_out(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                      size_t dim, float *buf, int load, size_t *stride)
{
    if (t.dtype == KEEL_F32) {
        *stride = t.stride;
        return (float *)t.data + r * t.stride;
    }
    if (load)
        keel_stage_in(cv, t, r, n, dim, buf, stride);
    *stride = dim;
    return buf;
}

void keel_stage_flush(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                      size_t dim, const float *buf)
{
    if (t.dtype == KEEL_F32)
        return;
    const keel_from_f32_fn from_f32 = t.dtype == KEEL_BF16 ? cv->f32_to_bf16 : cv->f32_to_f16;
    uint16_t *dst = (uint16_t *)t.data + r * t.stride;
    for (size_t i = 0; i < n; i++)
        from_f32(buf + i * dim, dst + i * t.stride, dim);
}

size_t keel_stage_fwd_floats(size_t dim) { return 2 * keel_stage_block_rows(dim) * dim; }
size_t keel_stage_bwd_floats(size_t dim) { return 3 * keel_stage_block_rows(dim) * dim; }

void keel_quantize_rows(const keel_convert_kernels *cv, const keel_quant_i8 *q, keel_tensor y,
                        size_t r, size_t n, size_t dim, const float *buf)
{
    int8_t *out = (int8_t *)y.data + r * y.stride;
    for (size_t i = 0; i < n; i++) {
        const float *row = buf + i * dim;
        int8_t *qrow = out + i * y.stride;
        float s = q->scale;
        if (s == 0.0f) {
            s = cv->absmax(row, dim) / 127.0f; /* a NaN in the row gives s = NaN */
            q->row_scale[r + i] = s;
        }
        if (s == 0.0f)
            memset(qrow, 0, dim);
        else /* s NaN gives 0 everywhere, as keel_quantize_i8 does */
            cv->quantize_i8(row, qrow, dim, s);
    }
}

void keel_stage_fwd(const keel_convert_kernels *cv, float *slice, size_t dim, keel_tensor x,
                    keel_tensor y, const keel_quant_i8 *q, size_t r0, size_t r1,
                    keel_fwd_block_fn fn, const void *job)
{
    if (x.dtype == KEEL_F32 && y.dtype == KEEL_F32) {
        fn(job, r0, r1 - r0, (const float *)x.data + r0 * x.stride, x.stride,
           (float *)y.data + r0 * y.stride, y.stride);
        return;
    }
    const size_t block = keel_stage_block_rows(dim);
    float *bx = slice, *by = slice + block * dim;
    for (size_t r = r0; r < r1; r += block) {
        const size_t n = r1 - r < block ? r1 - r : block;
        size_t xs, ys;
        const float *xp = keel_stage_in(cv, x, r, n, dim, bx, &xs);
        if (y.dtype == KEEL_I8) {
            fn(job, r, n, xp, xs, by, dim);
            keel_quantize_rows(cv, q, y, r, n, dim, by);
        } else {
            float *yp = keel_stage_out(cv, y, r, n, dim, by, 0, &ys);
            fn(job, r, n, xp, xs, yp, ys);
            keel_stage_flush(cv, y, r, n, dim, yp);
        }
    }
}

void keel_stage_bwd(const keel_convert_kernels *cv, float *slice, size_t dim, keel_tensor dy,
                    keel_tensor x, keel_tensor dx, int accumulate_dx, size_t r0, size_t r1,
                    float *part0, float *part1, keel_bwd_block_fn fn, const void *job)
{
    const int dx_f32 = !dx.data || dx.dtype == KEEL_F32;
    if (dy.dtype == KEEL_F32 && x.dtype == KEEL_F32 && dx_f32) {
        fn(job, r0, r1 - r0, (const float *)dy.data + r0 * dy.stride, dy.stride,
           (const float *)x.data + r0 * x.stride, x.stride,
           dx.data ? (float *)dx.data + r0 * dx.stride : NULL, dx.stride, part0, part1);
        return;
    }
    const size_t block = keel_stage_block_rows(dim);
    float *bdy = slice, *bx = slice + block * dim, *bdx = slice + 2 * block * dim;
    for (size_t r = r0; r < r1; r += block) {
        const size_t n = r1 - r < block ? r1 - r : block;
        size_t dys, xs, dxs = dim;
        const float *dyp = keel_stage_in(cv, dy, r, n, dim, bdy, &dys);
        const float *xp = keel_stage_in(cv, x, r, n, dim, bx, &xs);
        float *dxp = dx.data ? keel_stage_out(cv, dx, r, n, dim, bdx, accumulate_dx, &dxs) : NULL;
        fn(job, r, n, dyp, dys, xp, xs, dxp, dxs, part0, part1);
        if (dxp)
            keel_stage_flush(cv, dx, r, n, dim, dxp);
    }
}
