/* The fused forwards' short rows, PIPE_BATCH at a time (the kernel file's batch_rows__*.h and
 * its stages batch_sum, batch_mid, batch_out): step t sums batch t, finishes the statistics of
 * batch t - 1 and writes batch t - (BATCH_SLOTS - 1), so that a batch's divisions and square
 * root (long latencies, one chain) overlap the other batches' work; batch i lives in slot
 * i % BATCH_SLOTS of bufs. Returns whether a row was streamed. Included by a fused kernel's
 * file before its body (f32_add_layernorm_simd.h, f32_add_rmsnorm_simd.h), or by a plain norm's kernel (px: x alone, res->r NULL; no
 * include guard: a kernel file includes it once); one: alpha is known to be 1; nv: the row's
 * vectors, (dim + 15) / 16 on AVX-512 (a constant at every call; unused on AVX2). */
KEEL_INLINE int fwd_batches_of(size_t nb, size_t dim, const keel_f32_res *res, float *h,
                               size_t hs, float *y, size_t ys, const float *gamma,
                               const float *beta, float eps, float *mean, float *rstd, int stream,
                               float *bufs, int hl, int hb, int hg, int hbe, int hh, int px,
                               int one, int nv)
{
    const batch_call c = batch_call_of(dim, res, gamma, beta, h, hs, y, ys, stream, hh, one, nv);
    batch_stats st[BATCH_SLOTS];
    int streamed = 0;
    for (size_t t = 0; t < nb + BATCH_SLOTS - 1; t++) {
        if (t < nb) {
            const size_t i = t % BATCH_SLOTS;
            batch_sum(t * PIPE_BATCH, &c, res, bufs + i * BATCH_SLOT, &st[i], hl, hb, px);
        }
        if (t >= 1 && t - 1 < nb) {
            const size_t i = (t - 1) % BATCH_SLOTS;
            batch_mid(&c, bufs + i * BATCH_SLOT, eps, &st[i]);
        }
        if (t >= BATCH_SLOTS - 1) {
            const size_t a = t - (BATCH_SLOTS - 1), i = a % BATCH_SLOTS;
            streamed |= batch_out(a * PIPE_BATCH, dim, &c, &st[i], bufs + i * BATCH_SLOT, h, hs, y,
                                  ys, mean, rstd, stream, hg, hbe, hh);
        }
    }
    return streamed;
}

/* fwd_batches_of, with instances of their own for the common cases, whole rows of 16, 32 or 48
 * floats (and 64 for a plain norm's), x + r (alpha 1) and outputs not streamed: there the row's
 * vectors and mask, the division by dim, the multiply by alpha and the output fetches are
 * constants, no tests in the rows' loops (keel bench, 1 thread, fraction of the floor, with
 * dim 48 a constant or not: add+ln post 0.75 -> 0.86, layernorm fwd 0.47 -> 0.57). */
KEEL_INLINE int fwd_batches(size_t nb, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                            float *y, size_t ys, const float *gamma, const float *beta, float eps,
                            float *mean, float *rstd, int stream, float *bufs, int hl, int hb,
                            int hg, int hbe, int hh, int px)
{
#define FWD_BATCHES_OF(d, st, one, nv)                                                             \
    fwd_batches_of(nb, d, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, st, bufs, hl, hb, hg,   \
                   hbe, hh, px, one, nv)
    if (res->alpha == 1.0f && !stream) {
        if (dim == 16)
            return FWD_BATCHES_OF(16, 0, 1, 1);
#if PIPE_BATCH_MAX >= 48
        if (dim == 32)
            return FWD_BATCHES_OF(32, 0, 1, 2);
        if (dim == 48)
            return FWD_BATCHES_OF(48, 0, 1, 3);
#endif
#if PIPE_BATCH_MAX >= 64
        if (px && dim == 64)
            return FWD_BATCHES_OF(64, 0, 1, 4);
#endif
    }
#if PIPE_BATCH_MAX >= 48
    /* the other widths: the number of vectors a constant, the tail's mask not */
    if (dim > 16 && dim <= 32)
        return FWD_BATCHES_OF(dim, stream, 0, 2);
    if (dim > 32 && dim <= 48)
        return FWD_BATCHES_OF(dim, stream, 0, 3);
#endif
#if PIPE_BATCH_MAX >= 64
    /* rows of 49 to 64 floats come from the plain RMSNorm only: the fused forwards' instances
     * leave this one out */
    _Static_assert(BATCH_TAKE_MAX <= 48, "the fused forwards' batches end at 48 floats");
    if (px && dim > 48)
        return FWD_BATCHES_OF(dim, stream, 0, 4);
#endif
    return FWD_BATCHES_OF(dim, stream, 0, 1); /* rows of up to 16 floats */
#undef FWD_BATCHES_OF
}

/* A plain norm's rows (x alone, the fused forward's stages with px): the whole batches of
 * rows; returns the rows done. hg, hb: gamma, beta given (constants at every call). */
KEEL_INLINE size_t plain_fwd_batches(size_t rows, size_t dim, const float *x, size_t xs, float *y,
                                     size_t ys, const float *gamma, const float *beta, float eps,
                                     float *mean, float *rstd, int stream, int hg, int hb)
{
    float bufs[BATCH_SLOTS * BATCH_SLOT] __attribute__((aligned(64)));
    const keel_f32_res res = {x, xs, NULL, 0, 1.0f, NULL, NULL};
    fwd_batches(rows / PIPE_BATCH, dim, &res, NULL, 0, y, ys, gamma, beta, eps, mean, rstd, stream,
                bufs, 0, 0, hg, hb, 0, 1);
    return rows / PIPE_BATCH * PIPE_BATCH;
}

/* plain_fwd_batches with the instance for the gamma and beta given (RMSNorm: beta NULL). */
KEEL_INLINE size_t plain_fwd_batches_any(size_t rows, size_t dim, const float *x, size_t xs,
                                         float *y, size_t ys, const float *gamma,
                                         const float *beta, float eps, float *mean, float *rstd,
                                         int stream)
{
#define PLAIN_BATCHES(hg, hb) \
    plain_fwd_batches(rows, dim, x, xs, y, ys, gamma, beta, eps, mean, rstd, stream, hg, hb)
    if (gamma && beta)
        return PLAIN_BATCHES(1, 1);
    if (gamma)
        return PLAIN_BATCHES(1, 0);
    if (beta)
        return PLAIN_BATCHES(0, 1);
    return PLAIN_BATCHES(0, 0);
#undef PLAIN_BATCHES
}
