#include "block_stage.h"

#include "pool.h"
#include "stage.h"

void keel_bs_add(keel_block_stage *bs, keel_tensor t, keel_bs_role role)
{
    bs->t[bs->n] = t;
    bs->role[bs->n] = role;
    bs->n++;
}

keel_status keel_bs_setup(keel_block_stage *bs, keel_ctx *ctx, const char *who, size_t rows,
                          size_t dim)
{
    bs->cv = keel_convert_kernels_for(ctx->isa);
    bs->dim = dim;
    bs->stage = NULL;
    bs->stage_stride = 0;
    int staged = 0;
    for (int i = 0; i < bs->n; i++)
        staged += bs->t[i].data && bs->t[i].dtype != KEEL_F32;
    if (!staged || rows == 0)
        return KEEL_OK;
    /* one block of rows per present tensor (f32 ones too: simpler, and small) */
    const size_t per_thread = (size_t)bs->n * keel_stage_block_rows(dim) * dim;
    bs->stage = keel_ctx_stage(ctx, per_thread, who);
    if (!bs->stage)
        return KEEL_ENOMEM;
    bs->stage_stride = keel_stage_stride(per_thread);
    return KEEL_OK;
}

void keel_bs_run(const keel_block_stage *bs, size_t r0, size_t r1, keel_bs_fn fn, const void *job,
                 void *ctx)
{
    float *p[KEEL_BS_MAX];
    size_t s[KEEL_BS_MAX];
    const size_t dim = bs->dim;
    if (!bs->stage) {
        for (int i = 0; i < bs->n; i++) {
            const keel_tensor t = bs->t[i];
            p[i] = t.data ? (float *)t.data + r0 * t.stride : NULL;
            s[i] = t.stride;
        }
        fn(job, ctx, r0, r1 - r0, p, s);
        return;
    }
    const size_t block = keel_stage_block_rows(dim);
    float *slice = bs->stage + (size_t)keel_pool_thread_index() * bs->stage_stride;
    for (size_t r = r0; r < r1; r += block) {
        const size_t n = r1 - r < block ? r1 - r : block;
        for (int i = 0; i < bs->n; i++) {
            const keel_tensor t = bs->t[i];
            float *buf = slice + (size_t)i * block * dim;
            s[i] = t.stride;
            if (!t.data)
                p[i] = NULL;
            else if (bs->role[i] == KEEL_BS_IN)
                p[i] = (float *)(uintptr_t)keel_stage_in(bs->cv, t, r, n, dim, buf, &s[i]);
            else
                p[i] = keel_stage_out(bs->cv, t, r, n, dim, buf, bs->role[i] == KEEL_BS_ACC, &s[i]);
        }
        fn(job, ctx, r, n, p, s);
        for (int i = 0; i < bs->n; i++)
            if (bs->t[i].data && bs->role[i] != KEEL_BS_IN)
                keel_stage_flush(bs->cv, bs->t[i], r, n, dim, p[i]);
    }
}
