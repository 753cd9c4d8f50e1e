/* The staging engine (stage.h): the conversions of a block of rows in and out, and the run. */
#include "stage.h"

#include <stdint.h>
#include <string.h>

#include "pool.h"

size_t keel_stage_block_rows(size_t dim) { return dim >= 2048 ? 1 : 2048 / dim; }

/* Rows [r, r + n) of t as float32 rows: t's own memory if it is f32 (*stride = t.stride), else
 * converted into buf (*stride = dim). */
static float *rows_in(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                      size_t dim, float *buf, size_t *stride)
{
    if (t.dtype == KEEL_F32) {
        *stride = t.stride;
        return (float *)t.data + r * t.stride;
    }
    const keel_to_f32_fn to_f32 = t.dtype == KEEL_BF16 ? cv->bf16_to_f32 : cv->f16_to_f32;
    const uint16_t *src = (const uint16_t *)t.data + r * t.stride;
    for (size_t i = 0; i < n; i++)
        to_f32(src + i * t.stride, buf + i * dim, dim);
    *stride = dim;
    return buf;
}

/* Where the kernel writes rows [r, r + n) of output t: t's memory if f32, else buf (loaded
 * with t's current values first when `load`, for accumulation). */
static float *rows_out(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                       size_t dim, float *buf, int load, size_t *stride)
{
    if (t.dtype == KEEL_F32) {
        *stride = t.stride;
        return (float *)t.data + r * t.stride;
    }
    if (load)
        rows_in(cv, t, r, n, dim, buf, stride);
    *stride = dim;
    return buf;
}

/* After the kernel: round buf into t's rows (nothing to do when t is f32). */
static void rows_flush(const keel_convert_kernels *cv, keel_tensor t, size_t r, size_t n,
                       size_t dim, const float *buf)
{
    if (t.dtype == KEEL_F32)
        return;
    const keel_from_f32_fn from_f32 = t.dtype == KEEL_BF16 ? cv->f32_to_bf16 : cv->f32_to_f16;
    uint16_t *dst = (uint16_t *)t.data + r * t.stride;
    for (size_t i = 0; i < n; i++)
        from_f32(buf + i * dim, dst + i * t.stride, dim);
}

/* Quantization of a float32 row block into an int8 tensor (keel.h, keel_quant_i8). */
static void rows_quantize(const keel_convert_kernels *cv, const keel_quant_i8 *q, keel_tensor y,
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

void keel_stage_add(keel_stage *s, keel_tensor t, keel_stage_role role)
{
    s->t[s->n] = t;
    s->role[s->n] = role;
    s->n++;
}

keel_status keel_stage_setup(keel_stage *s, keel_ctx *ctx, const char *who, size_t rows,
                             size_t dim)
{
    s->cv = ctx->convert;
    s->dim = dim;
    s->mem = NULL;
    s->mem_stride = 0;
    if (s->native)
        return KEEL_OK;
    int staged = 0;
    for (int i = 0; i < s->n; i++)
        staged += s->t[i].data && s->t[i].dtype != KEEL_F32;
    if (!staged || rows == 0)
        return KEEL_OK;
    /* one block of rows per tensor (f32 ones too: simpler, and small) */
    const size_t per_thread = (size_t)s->n * keel_stage_block_rows(dim) * dim;
    s->mem = keel_ctx_stage(ctx, per_thread, who);
    if (!s->mem)
        return KEEL_ENOMEM;
    s->mem_stride = keel_stage_stride(per_thread);
    return KEEL_OK;
}

void keel_stage_run(const keel_stage *s, size_t r0, size_t r1, keel_stage_fn fn, const void *job,
                    void *ctx)
{
    float *p[KEEL_STAGE_MAX];
    size_t st[KEEL_STAGE_MAX];
    const size_t dim = s->dim;
    if (s->native) {
        fn(job, ctx, r0, r1 - r0, NULL, NULL);
        return;
    }
    if (!s->mem) {
        for (int i = 0; i < s->n; i++) {
            const keel_tensor t = s->t[i];
            p[i] = t.data ? (float *)t.data + r0 * t.stride : NULL;
            st[i] = t.stride;
        }
        fn(job, ctx, r0, r1 - r0, p, st);
        return;
    }
    const size_t block = keel_stage_block_rows(dim);
    float *slice = s->mem + (size_t)keel_pool_thread_index() * s->mem_stride;
    for (size_t r = r0; r < r1; r += block) {
        const size_t n = r1 - r < block ? r1 - r : block;
        for (int i = 0; i < s->n; i++) {
            const keel_tensor t = s->t[i];
            float *buf = slice + (size_t)i * block * dim;
            st[i] = t.stride;
            if (!t.data)
                p[i] = NULL;
            else if (s->role[i] == KEEL_STAGE_IN)
                p[i] = rows_in(s->cv, t, r, n, dim, buf, &st[i]);
            else if (s->role[i] == KEEL_STAGE_OUT_I8)
                p[i] = buf, st[i] = dim;
            else
                p[i] = rows_out(s->cv, t, r, n, dim, buf, s->role[i] == KEEL_STAGE_ACC, &st[i]);
        }
        fn(job, ctx, r, n, p, st);
        for (int i = 0; i < s->n; i++) {
            if (!s->t[i].data || s->role[i] == KEEL_STAGE_IN)
                continue;
            if (s->role[i] == KEEL_STAGE_OUT_I8)
                rows_quantize(s->cv, s->quant, s->t[i], r, n, dim, p[i]);
            else
                rows_flush(s->cv, s->t[i], r, n, dim, p[i]);
        }
    }
}
