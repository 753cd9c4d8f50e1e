/* The fused forwards' short rows, PIPE_BATCH at a time (the kernel file's batch_rows__*.h and
 * its stages batch_sum, batch_mid, batch_out): step t sums batch t, finishes the statistics of
 * batch t - 1 and writes batch t - (BATCH_SLOTS - 1), so that a batch's divisions and square
 * root (long latencies, one chain) overlap the other batches' work; batch i lives in slot
 * i % BATCH_SLOTS of bufs. Returns whether a row was streamed. Included by add_norm_pipe.h's
 * LayerNorm or RMSNorm part, or by a plain norm's kernel (px: x alone, res->r NULL; no
 * include guard: a kernel file includes it once); one: alpha is known to be 1. */
KEEL_INLINE int fwd_batches_of(size_t nb, size_t dim, const keel_f32_res *res, float *h,
                               size_t hs, float *y, size_t ys, const float *gamma,
                               const float *beta, float eps, float *mean, float *rstd, int stream,
                               float *bufs, int hl, int hb, int hg, int hbe, int hh, int px,
                               int one)
{
    const batch_call c = batch_call_of(dim, res, gamma, beta, h, hs, y, ys, stream, hh, one);
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

/* fwd_batches_of, with an instance of its own for the common case, whole rows of 16 floats,
 * x + r (alpha 1) and outputs not streamed: there the row's mask, the division by dim, the
 * multiply by alpha and the output fetches are constants, no tests in the rows' loops. */
KEEL_INLINE int fwd_batches(size_t nb, size_t dim, const keel_f32_res *res, float *h, size_t hs,
                            float *y, size_t ys, const float *gamma, const float *beta, float eps,
                            float *mean, float *rstd, int stream, float *bufs, int hl, int hb,
                            int hg, int hbe, int hh, int px)
{
    if (dim == 16 && res->alpha == 1.0f && !stream)
        return fwd_batches_of(nb, 16, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, 0, bufs, hl,
                              hb, hg, hbe, hh, px, 1);
    return fwd_batches_of(nb, dim, res, h, hs, y, ys, gamma, beta, eps, mean, rstd, stream, bufs,
                          hl, hb, hg, hbe, hh, px, 0);
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
