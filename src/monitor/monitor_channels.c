/* keel monitor: per-channel statistics of a norm's input. Per slot, the window's
 * mean and sum of squared deviations of every feature, captured into the baseline like the
 * per-token statistics; scored as a diagonal Mahalanobis distance of the window's mean-pooled
 * features, the channel that moved most and the mean log variance ratio. The per-forward call
 * allocates nothing: its scratch is part of the slot's block. */
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "monitor_internal.h"

#define CHAN_ROWS 256 /* rows per chunk: one shift, one merge into the window */
#define CHAN_BLOCK 16 /* rows summed in float before the sums go to double (the fast path) */

keel_status mon_chan_alloc(mon_chan *c, int width)
{
    /* 7 * width doubles, then 3 * width floats (the fast path's shift and sums) */
    double *blk =
        keel_alloc_zero((size_t)width * 7 * sizeof(double) + (size_t)width * 3 * sizeof(float), 1);
    if (!blk)
        return KEEL_ENOMEM;
    memset(c, 0, sizeof *c);
    const size_t w = (size_t)width;
    c->width = width;
    c->mean = blk;
    c->m2 = blk + w;
    c->bmean = blk + 2 * w;
    c->bm2 = blk + 3 * w;
    c->csum = blk + 4 * w;
    c->cm2 = blk + 5 * w;
    c->cshift = blk + 6 * w;
    c->fshift = (float *)(blk + 7 * w);
    c->fs1 = c->fshift + w;
    c->fs2 = c->fs1 + w;
    return KEEL_OK;
}

void mon_chan_free(mon_chan *c)
{
    keel_free(c->mean); /* the block */
    memset(c, 0, sizeof *c);
}

void mon_chan_reset(mon_chan *c)
{
    if (!c->width)
        return;
    c->n = 0;
    c->bad = 0;
    memset(c->mean, 0, (size_t)c->width * sizeof(double));
    memset(c->m2, 0, (size_t)c->width * sizeof(double));
}

/* Chan's merge of (n2, mean2, m22) into (n, mean, m2), channel by channel. */
static void merge_into(double *n, double *mean, double *m2, double n2, const double *mean2,
                       const double *m22, int width)
{
    if (n2 <= 0)
        return;
    const double nt = *n + n2, f = n2 / nt, g = *n * n2 / nt;
    for (int j = 0; j < width; j++) {
        const double d = mean2[j] - mean[j];
        mean[j] += d * f;
        m2[j] += m22[j] + d * d * g;
    }
    *n = nt;
}

void mon_chan_merge(mon_chan *dst, const mon_chan *src)
{
    merge_into(&dst->n, dst->mean, dst->m2, src->n, src->mean, src->m2, dst->width);
    dst->bad += src->bad;
}

void mon_chan_capture(mon_chan *c)
{
    if (!c->width)
        return;
    c->bn = c->n;
    memcpy(c->bmean, c->mean, (size_t)c->width * sizeof(double));
    memcpy(c->bm2, c->m2, (size_t)c->width * sizeof(double));
}

/* A row is used when all its values are finite: their sum in double is then finite too (no
 * float row can overflow a double sum). */
static int row_ok(const float *r, int width)
{
    double s = 0.0;
    for (int j = 0; j < width; j++)
        s += r[j];
    return isfinite(s);
}

/* Sums of d = x - shift and d^2 over rows i0.. of the chunk (ok[i] says which when ok is not
 * NULL) into s1, s2: one pass, each channel independent (the compiler vectorises it). */
static void shifted_sums(const float *restrict x, size_t ld, size_t nr, const unsigned char *ok,
                         const double *restrict shift, double *restrict s1, double *restrict s2,
                         int w)
{
    for (int j = 0; j < w; j++)
        s1[j] = s2[j] = 0.0;
    for (size_t i = 0; i < nr; i++) {
        if (ok && !ok[i])
            continue;
        const float *r = x + i * ld;
        for (int j = 0; j < w; j++) {
            const double d = (double)r[j] - shift[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    }
}

/* The fast path's sums: blocks of CHAN_BLOCK rows summed in float (d = x - shift, d^2; the
 * channel loop vectorises), each block's sums then added in double. The error is that of float
 * over 16 terms of deviations from a shift within a few sd of them: about 1e-7 of the spread,
 * the precision the float input has anyway; in double throughout, the per-channel
 * statistics cost about 2x more (docs/monitor/channels.md) and over 1% of a forward. */
static void shifted_sums_fast(mon_chan *c, const float *restrict x, size_t ld, size_t nr)
{
    const int w = c->width;
    const float *restrict sh = c->fshift;
    float *restrict f1 = c->fs1, *restrict f2 = c->fs2;
    double *restrict s1 = c->csum, *restrict s2 = c->cm2;
    for (int j = 0; j < w; j++)
        s1[j] = s2[j] = 0.0;
    for (size_t b0 = 0; b0 < nr; b0 += CHAN_BLOCK) {
        const size_t b1 = nr - b0 < CHAN_BLOCK ? nr : b0 + CHAN_BLOCK;
        for (int j = 0; j < w; j++)
            f1[j] = f2[j] = 0.0f;
        size_t i = b0;
        for (; i + 4 <= b1; i += 4) { /* four rows a pass: f1, f2 loaded and stored once */
            const float *restrict r0 = x + i * ld, *restrict r1 = r0 + ld, *restrict r2 = r1 + ld,
                                  *restrict r3 = r2 + ld;
            for (int j = 0; j < w; j++) {
                const float d0 = r0[j] - sh[j], d1 = r1[j] - sh[j], d2 = r2[j] - sh[j],
                            d3 = r3[j] - sh[j];
                f1[j] += (d0 + d1) + (d2 + d3);
                f2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
            }
        }
        for (; i < b1; i++) {
            const float *restrict r = x + i * ld;
            for (int j = 0; j < w; j++) {
                const float d = r[j] - sh[j];
                f1[j] += d;
                f2[j] += d * d;
            }
        }
        for (int j = 0; j < w; j++) {
            s1[j] += f1[j];
            s2[j] += f2[j];
        }
    }
}

/* The observation itself, arguments already checked. Per chunk of rows: sums of the deviations
 * from a shift (the chunk's first row) and of their squares in one pass, the chunk's mean and m2
 * from them, then Chan's merge into the window. The shift keeps the cancellation in
 * m2 = s2 - s1^2 / k small (Welford's concern) without a second pass. Non-finite rows are rare:
 * the chunk is summed assuming none, and only when the sums come out non-finite is it summed
 * again row by row, leaving those rows out. */
static void observe(mon_chan *c, size_t rows, const float *x, size_t ld)
{
    const int w = c->width;
    double *s1 = c->csum, *s2 = c->cm2, *shift = c->cshift;
    unsigned char ok[CHAN_ROWS];
    for (size_t r0 = 0; r0 < rows; r0 += CHAN_ROWS) {
        const size_t nr = rows - r0 < CHAN_ROWS ? rows - r0 : CHAN_ROWS;
        const float *xc = x + r0 * ld;
        size_t k = nr, first = 0;
        /* the shift: the chunk's first row (within a few sd of every row's values however far
         * the data moved from the window's mean; a float, so that both paths use the same) */
        for (int j = 0; j < w; j++) {
            const double v = isfinite(xc[j]) ? xc[j] : c->n > 0 ? c->mean[j] : 0.0;
            c->fshift[j] = isfinite((float)v) ? (float)v : 0.0f;
            shift[j] = c->fshift[j];
        }
        shifted_sums_fast(c, xc, ld, nr);
        int finite = 1;
        for (int j = 0; j < w; j++)
            finite &= isfinite(s1[j]) && isfinite(s2[j]);
        if (!finite) { /* the slow path, in double: which rows (or finite values whose squares
                        * overflowed float) */
            k = 0;
            for (size_t i = 0; i < nr; i++) {
                ok[i] = (unsigned char)row_ok(xc + i * ld, w);
                c->bad += !ok[i];
                if (ok[i] && k++ == 0)
                    first = i;
            }
            if (k == 0)
                continue;
            for (int j = 0; j < w; j++)
                shift[j] = xc[first * ld + (size_t)j];
            shifted_sums(xc, ld, nr, ok, shift, s1, s2, w);
        }
        const double kd = (double)k;
        for (int j = 0; j < w; j++) {
            const double m = s1[j] / kd, q = s2[j] - s1[j] * m;
            s1[j] = shift[j] + m;      /* the chunk's mean */
            s2[j] = q > 0.0 ? q : 0.0; /* its m2 */
        }
        merge_into(&c->n, c->mean, c->m2, kd, s1, s2, w);
    }
}

static keel_status check_slot(const keel_monitor *m, int slot, const char *fn)
{
    if (slot < 0 || slot >= m->nslots)
        return keel_fail(KEEL_EINVAL, "%s: slot (%d) not in 0..%d", fn, slot, m->nslots - 1);
    return KEEL_OK;
}

keel_status keel_monitor_channels(keel_monitor *m, int slot, int width)
{
    const char *fn = "keel_monitor_channels";
    if (!m)
        return keel_fail(KEEL_ENULL, "%s: mon is NULL", fn);
    if (check_slot(m, slot, fn))
        return KEEL_EINVAL;
    if (width < 1 || width > 65536)
        return keel_fail(KEEL_EINVAL, "%s: width (%d) must be in 1..65536", fn, width);
    mon_chan *c = &m->slot[slot].ch;
    if (c->width == width)
        return KEEL_OK;
    if (c->width)
        return keel_fail(KEEL_EINVAL,
                         "%s: slot %d already has per-channel statistics of width %d (asked %d)",
                         fn, slot, c->width, width);
    if (mon_chan_alloc(c, width) != KEEL_OK)
        return keel_fail(KEEL_ENOMEM, "%s: out of memory (slot %d, width %d)", fn, slot, width);
    return KEEL_OK;
}

int keel_monitor_channel_width(const keel_monitor *m, int slot)
{
    return m && slot >= 0 && slot < m->nslots ? m->slot[slot].ch.width : 0;
}

/* KEEL_OK when x can be observed into slot (x NULL is the caller's to allow). */
static keel_status check_x(const keel_monitor *m, int slot, size_t ld, const char *fn)
{
    const int w = m->slot[slot].ch.width;
    if (!w)
        return keel_fail(KEEL_EINVAL,
                         "%s: slot %d has no per-channel statistics (keel_monitor_channels first)",
                         fn, slot);
    if (ld < (size_t)w)
        return keel_fail(KEEL_EINVAL, "%s: slot %d: ld (%zu) is less than the width (%d)", fn, slot,
                         ld, w);
    return KEEL_OK;
}

keel_status keel_monitor_observe_channels(keel_monitor *m, int slot, size_t rows, const float *x,
                                          size_t ld)
{
    const char *fn = "keel_monitor_observe_channels";
    if (!m || (!x && rows))
        return keel_fail(KEEL_ENULL, "%s: %s is NULL", fn, !m ? "mon" : "x");
    if (check_slot(m, slot, fn) || check_x(m, slot, ld, fn))
        return KEEL_EINVAL;
    observe(&m->slot[slot].ch, rows, x, ld);
    return KEEL_OK;
}

keel_status keel_monitor_add_channel_moments(keel_monitor *m, int slot, double count,
                                             const double *mean, const double *m2)
{
    const char *fn = "keel_monitor_add_channel_moments";
    if (!m || !mean || !m2)
        return keel_fail(KEEL_ENULL, "%s: %s is NULL", fn, !m ? "mon" : !mean ? "mean" : "m2");
    if (check_slot(m, slot, fn))
        return KEEL_EINVAL;
    mon_chan *c = &m->slot[slot].ch;
    if (!c->width)
        return keel_fail(KEEL_EINVAL,
                         "%s: slot %d has no per-channel statistics (keel_monitor_channels first)",
                         fn, slot);
    if (!(count >= 1 && count <= 9007199254740992.0) || count != floor(count))
        return keel_fail(KEEL_EINVAL, "%s: count (%g) must be a whole number >= 1", fn, count);
    for (int j = 0; j < c->width; j++) {
        if (!isfinite(mean[j]))
            return keel_fail(KEEL_EINVAL, "%s: mean[%d] (%g) is not finite", fn, j, mean[j]);
        if (!(m2[j] >= 0) || !isfinite(m2[j]))
            return keel_fail(KEEL_EINVAL, "%s: m2[%d] (%g) must be finite and >= 0", fn, j, m2[j]);
    }
    merge_into(&c->n, c->mean, c->m2, count, mean, m2, c->width);
    return KEEL_OK;
}

keel_status keel_monitor_observe_forward(keel_monitor *m, size_t rows,
                                         const keel_monitor_norm_io *io)
{
    const char *fn = "keel_monitor_observe_forward";
    if (!m || !io)
        return keel_fail(KEEL_ENULL, "%s: %s is NULL", fn, !m ? "mon" : "io");
    for (int s = 0; s < m->nslots; s++) {
        if (!io[s].rstd)
            return keel_fail(KEEL_ENULL, "%s: io[%d].rstd is NULL", fn, s);
        if (io[s].x && check_x(m, s, io[s].ld, fn))
            return KEEL_EINVAL;
    }
    for (int s = 0; s < m->nslots; s++) {
        keel_status st = keel_monitor_observe(m, s, rows, io[s].mean, io[s].rstd);
        if (st != KEEL_OK) /* cannot happen after the checks above; kept as a value, not an abort */
            return st;
        if (io[s].x)
            observe(&m->slot[s].ch, rows, io[s].x, io[s].ld);
    }
    return KEEL_OK;
}

keel_status keel_monitor_channel_moments(const keel_monitor *m, int slot, int baseline,
                                         double *count, double *mean, double *var, double *bad)
{
    const char *fn = "keel_monitor_channel_moments";
    if (!m)
        return keel_fail(KEEL_ENULL, "%s: mon is NULL", fn);
    if (check_slot(m, slot, fn))
        return KEEL_EINVAL;
    const mon_chan *c = &m->slot[slot].ch;
    if (!c->width)
        return keel_fail(KEEL_EINVAL, "%s: slot %d has no per-channel statistics", fn, slot);
    if (baseline != 0 && baseline != 1)
        return keel_fail(KEEL_EINVAL, "%s: baseline (%d) must be 0 (the window) or 1", fn,
                         baseline);
    if (baseline && !m->has_baseline)
        return keel_fail(KEEL_EINVAL, "%s: no baseline (capture or load one first)", fn);
    const double n = baseline ? c->bn : c->n;
    const double *mu = baseline ? c->bmean : c->mean, *m2 = baseline ? c->bm2 : c->m2;
    if (count)
        *count = n;
    if (bad)
        *bad = baseline ? 0.0 : (double)c->bad;
    for (int j = 0; j < c->width; j++) {
        if (mean)
            mean[j] = mu[j];
        if (var)
            var[j] = n > 0 ? m2[j] / n : 0.0;
    }
    return KEEL_OK;
}

void mon_chan_score(const mon_chan *c, keel_monitor_slot_score *sc)
{
    sc->maha = sc->top_channel_z = sc->log_var_ratio = NAN;
    sc->top_channel = -1;
    sc->channel_tokens = c->width ? c->n : 0.0;
    if (!c->width || c->n < 1 || c->bn < 2)
        return;
    const int w = c->width;
    double vmean = 0.0;
    for (int j = 0; j < w; j++)
        vmean += c->bm2[j] / c->bn;
    vmean /= w;
    const double floor = 1e-6 * vmean > 1e-30 ? 1e-6 * vmean : 1e-30;
    double d2 = 0.0, lvr = 0.0, best = -1.0;
    for (int j = 0; j < w; j++) {
        double vb = c->bm2[j] / c->bn;
        vb = vb > floor ? vb : floor;
        const double z = (c->mean[j] - c->bmean[j]) * sqrt(c->n / vb);
        d2 += z * z;
        if (fabs(z) > best) {
            best = fabs(z);
            sc->top_channel = j;
            sc->top_channel_z = z;
        }
        const double vw = c->n > 1 ? c->m2[j] / c->n : 0.0;
        lvr += log((vw > floor ? vw : floor) / vb);
    }
    sc->maha = d2 / w;
    sc->log_var_ratio = c->n > 1 ? lvr / w : NAN;
}
