/* keel monitor: the range checks of a loaded baseline, after its checksum (FNV-1a proves no
 * writer: anyone recomputes it). Every field must be one keel could have written: moments and
 * bounds finite, counts whole, variances (m2) >= 0, histogram ranges with lo < hi, window sizes
 * increasing, false-alarm rates in (0, 1), calibration spreads > 0; per-channel statistics
 * (version 2) with a whole row count >= 2, finite means and m2 >= 0. */
#include <math.h>

#include "error.h"
#include "monitor_internal.h"

static const char *const stat_names[2] = {"mean", "log-rstd"};

/* NULL when the statistic is sound, else what is wrong with it. */
static const char *bad_stat(const mon_stat *s, int bins, int is_lrstd)
{
    if (!(s->n >= 0 && s->n <= 9007199254740992.0) || s->n != floor(s->n))
        return "its token count is not a whole number >= 0";
    if (is_lrstd && s->n < 2)
        return "it holds fewer than 2 tokens";
    if (!isfinite(s->mean))
        return "its mean is not finite";
    if (!(s->m2 >= 0) || !isfinite(s->m2))
        return "its sum of squared deviations is negative or not finite";
    if (!s->ranged)
        return is_lrstd ? "its histogram has no range" : NULL;
    if (!isfinite(s->lo) || !isfinite(s->hi) || !(s->lo < s->hi))
        return "its histogram range is not finite with lo < hi";
    double total = 0;
    for (int i = 0; i < bins + 2; i++)
        total += (double)s->h[i];
    if (total > s->n)
        return "its histogram counts more tokens than it holds";
    return NULL;
}

keel_status mon_baseline_check(const keel_monitor *m, const char *path)
{
    const char *fn = "keel_monitor_baseline_load";
    if (!(m->range_sd > 0) || !isfinite(m->range_sd))
        return keel_fail(KEEL_EFORMAT, "%s: %s: corrupt baseline: range_sd is %g (must be finite and > 0)", fn, path,
                         m->range_sd);
    for (int l = 0; l < m->nslots; l++)
        for (int s = 0; s < 2; s++) {
            const char *why = bad_stat(&m->slot[l].b[s], m->bins, s == KEEL_MONITOR_LOGRSTD);
            if (why)
                return keel_fail(KEEL_EFORMAT, "%s: %s: corrupt baseline: norm %d, %s statistic: %s", fn, path, l,
                                 stat_names[s], why);
        }
    for (int l = 0; l < m->nslots; l++) {
        const mon_chan *c = &m->slot[l].ch;
        if (!c->width)
            continue;
        const char *why = NULL;
        int at = -1;
        if (!(c->bn >= 2 && c->bn <= 9007199254740992.0) || c->bn != floor(c->bn))
            why = "its row count is not a whole number >= 2";
        for (int j = 0; j < c->width && !why; j++)
            if (!isfinite(c->bmean[j]))
                why = "a channel's mean is not finite", at = j;
            else if (!(c->bm2[j] >= 0) || !isfinite(c->bm2[j]))
                why = "a channel's sum of squared deviations is negative or not finite", at = j;
        if (why)
            return keel_fail(
                KEEL_EFORMAT,
                "%s: %s: corrupt baseline: norm %d, per-channel statistics (channel %d): %s", fn,
                path, l, at, why);
    }
    const size_t nc = (size_t)m->nslots * 2 * MON_NCOMP;
    for (int k = 0; k < m->nbuckets; k++) {
        const mon_bucket *b = &m->bucket[k];
        const char *why = NULL;
        if (!(b->tokens >= 1) || !isfinite(b->tokens) || (k > 0 && !(b->tokens > m->bucket[k - 1].tokens)))
            why = "its window size is not finite, >= 1 and above the previous one";
        else if (!isfinite(b->threshold))
            why = "its threshold is not finite";
        else if (!(b->far > 0 && b->far < 1))
            why = "its false-alarm rate is not in (0, 1)";
        for (size_t c = 0; c < nc && !why; c++)
            if (isinf(b->mu[c]) || !(b->sd[c] > 0) || !isfinite(b->sd[c]))
                why = "a component's mean is infinite or its spread not finite and > 0";
        if (why)
            return keel_fail(KEEL_EFORMAT, "%s: %s: corrupt baseline: calibration %d (window %g): %s", fn, path, k,
                             b->tokens, why);
    }
    return KEEL_OK;
}
