/* keel monitor: per-slot streaming summaries of normalization statistics, the baseline, the
 * threshold calibration and the score of a window. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "monitor_internal.h"

#define MON_CHUNK 256

static void free_bucket(mon_bucket *b)
{
    keel_free(b->mu);
    keel_free(b->sd);
    b->mu = b->sd = NULL;
}

keel_status mon_alloc(keel_monitor **out, int nslots, int bins, double range_sd)
{
    keel_monitor *m = keel_alloc_zero(1, sizeof *m);
    if (!m)
        return keel_fail(KEEL_ENOMEM, "keel_monitor_create: out of memory");
    m->nslots = nslots;
    m->bins = bins;
    m->range_sd = range_sd;
    m->slot = keel_alloc_zero((size_t)nslots, sizeof *m->slot);
    if (!m->slot) {
        keel_free(m);
        return keel_fail(KEEL_ENOMEM, "keel_monitor_create: out of memory");
    }
    for (int l = 0; l < nslots; l++)
        for (int s = 0; s < 2; s++) {
            m->slot[l].w[s].h = keel_alloc_zero((size_t)bins + 2, sizeof(uint64_t));
            m->slot[l].b[s].h = keel_alloc_zero((size_t)bins + 2, sizeof(uint64_t));
            if (!m->slot[l].w[s].h || !m->slot[l].b[s].h) {
                keel_monitor_destroy(m);
                return keel_fail(KEEL_ENOMEM, "keel_monitor_create: out of memory");
            }
        }
    *out = m;
    return KEEL_OK;
}

keel_status keel_monitor_create(keel_monitor **mon, int nslots, const keel_monitor_config *cfg)
{
    if (!mon)
        return keel_fail(KEEL_ENULL, "keel_monitor_create: mon is NULL");
    if (nslots <= 0 || nslots > 65536)
        return keel_fail(KEEL_EINVAL, "keel_monitor_create: nslots (%d) must be in 1..65536", nslots);
    int bins = cfg && cfg->bins ? cfg->bins : 32;
    double rsd = cfg && cfg->range_sd != 0 ? cfg->range_sd : 4.0;
    if (bins < 2 || bins > 65536)
        return keel_fail(KEEL_EINVAL, "keel_monitor_create: bins (%d) must be in 2..65536", bins);
    if (!(rsd > 0) || !isfinite(rsd))
        return keel_fail(KEEL_EINVAL, "keel_monitor_create: range_sd (%g) must be finite and > 0", rsd);
    keel_status st = mon_alloc(mon, nslots, bins, rsd);
    if (st == KEEL_OK)
        keel_clear_error();
    return st;
}

void keel_monitor_destroy(keel_monitor *m)
{
    if (!m)
        return;
    if (m->slot)
        for (int l = 0; l < m->nslots; l++)
            for (int s = 0; s < 2; s++) {
                keel_free(m->slot[l].w[s].h);
                keel_free(m->slot[l].b[s].h);
            }
    if (m->slot)
        for (int l = 0; l < m->nslots; l++)
            mon_chan_free(&m->slot[l].ch);
    keel_free(m->slot);
    for (int b = 0; b < KEEL_MONITOR_MAX_BUCKETS; b++)
        free_bucket(&m->bucket[b]);
    keel_free(m->cal_tokens);
    keel_free(m->cal_comp);
    keel_free(m);
}

int keel_monitor_slots(const keel_monitor *m) { return m ? m->nslots : 0; }

keel_status keel_monitor_observe(keel_monitor *m, int slot, size_t rows, const float *mean, const float *rstd)
{
    if (!m || !rstd)
        return keel_fail(KEEL_ENULL, "keel_monitor_observe: %s is NULL", !m ? "mon" : "rstd");
    if (slot < 0 || slot >= m->nslots)
        return keel_fail(KEEL_EINVAL, "keel_monitor_observe: slot (%d) not in 0..%d", slot, m->nslots - 1);
    mon_slot *sl = &m->slot[slot];
    double xm[MON_CHUNK], xr[MON_CHUNK];
    for (size_t r0 = 0; r0 < rows; r0 += MON_CHUNK) {
        size_t n = rows - r0 < MON_CHUNK ? rows - r0 : MON_CHUNK, k = 0;
        for (size_t i = 0; i < n; i++) {
            float rs = rstd[r0 + i];
            if (!(rs > 0.0f) || !isfinite(rs) || (mean && !isfinite(mean[r0 + i]))) {
                sl->bad++;
                continue;
            }
            xr[k] = log((double)rs);
            if (mean)
                xm[k] = mean[r0 + i];
            k++;
        }
        mon_stat_add(&sl->w[KEEL_MONITOR_LOGRSTD], m->bins, xr, k);
        if (mean) {
            mon_stat_add(&sl->w[KEEL_MONITOR_MEAN], m->bins, xm, k);
            sl->has_mean_w = 1;
        }
    }
    return KEEL_OK;
}

keel_status keel_monitor_reset_window(keel_monitor *m)
{
    if (!m)
        return keel_fail(KEEL_ENULL, "keel_monitor_reset_window: mon is NULL");
    for (int l = 0; l < m->nslots; l++) {
        for (int s = 0; s < 2; s++)
            mon_stat_clear(&m->slot[l].w[s], m->bins);
        m->slot[l].has_mean_w = 0;
        m->slot[l].bad = 0;
        mon_chan_reset(&m->slot[l].ch);
    }
    return KEEL_OK;
}

keel_status keel_monitor_merge(keel_monitor *dst, const keel_monitor *src)
{
    if (!dst || !src)
        return keel_fail(KEEL_ENULL, "keel_monitor_merge: %s is NULL", !dst ? "dst" : "src");
    if (dst->nslots != src->nslots || dst->bins != src->bins)
        return keel_fail(KEEL_EINVAL, "keel_monitor_merge: shapes differ (%d slots x %d bins vs %d x %d)",
                         dst->nslots, dst->bins, src->nslots, src->bins);
    for (int l = 0; l < dst->nslots; l++)
        for (int s = 0; s < 2; s++) {
            const mon_stat *a = &src->slot[l].w[s];
            const mon_stat *b = &dst->slot[l].w[s];
            if (a->ranged != b->ranged || (a->ranged && (a->lo != b->lo || a->hi != b->hi)))
                return keel_fail(KEEL_EINVAL, "keel_monitor_merge: slot %d: histogram ranges differ", l);
        }
    for (int l = 0; l < dst->nslots; l++)
        if (dst->slot[l].ch.width != src->slot[l].ch.width)
            return keel_fail(KEEL_EINVAL,
                             "keel_monitor_merge: slot %d: per-channel widths differ (%d vs %d)", l,
                             dst->slot[l].ch.width, src->slot[l].ch.width);
    for (int l = 0; l < dst->nslots; l++) {
        for (int s = 0; s < 2; s++)
            mon_stat_merge(&dst->slot[l].w[s], &src->slot[l].w[s], dst->bins);
        dst->slot[l].has_mean_w |= src->slot[l].has_mean_w;
        dst->slot[l].bad += src->slot[l].bad;
        mon_chan_merge(&dst->slot[l].ch, &src->slot[l].ch);
    }
    return KEEL_OK;
}

keel_status keel_monitor_window_moments(const keel_monitor *m, int slot, int stat, double *count, double *mean,
                                        double *var)
{
    if (!m)
        return keel_fail(KEEL_ENULL, "keel_monitor_window_moments: mon is NULL");
    if (slot < 0 || slot >= m->nslots || stat < 0 || stat > 1)
        return keel_fail(KEEL_EINVAL, "keel_monitor_window_moments: slot (%d) or stat (%d) out of range", slot, stat);
    const mon_stat *s = &m->slot[slot].w[stat];
    if (count) *count = s->n;
    if (mean) *mean = s->mean;
    if (var) *var = s->n > 0 ? s->m2 / s->n : 0.0;
    return KEEL_OK;
}

keel_status keel_monitor_fit_ranges(keel_monitor *m)
{
    if (!m)
        return keel_fail(KEEL_ENULL, "keel_monitor_fit_ranges: mon is NULL");
    for (int l = 0; l < m->nslots; l++)
        if (m->slot[l].w[KEEL_MONITOR_LOGRSTD].n < 2)
            return keel_fail(KEEL_EINVAL, "keel_monitor_fit_ranges: slot %d has %g tokens (need 2 or more)", l,
                             m->slot[l].w[KEEL_MONITOR_LOGRSTD].n);
    for (int l = 0; l < m->nslots; l++)
        for (int s = 0; s < 2; s++) {
            mon_stat *w = &m->slot[l].w[s];
            double sd = w->n > 0 ? sqrt(w->m2 / w->n) : 0.0;
            if (!(sd > 0))
                sd = fabs(w->mean) * 1e-3 + 1e-6;
            w->lo = w->mean - m->range_sd * sd;
            w->hi = w->mean + m->range_sd * sd;
            w->ranged = 1;
            m->slot[l].b[s].lo = w->lo;
            m->slot[l].b[s].hi = w->hi;
            m->slot[l].b[s].ranged = 1;
        }
    return keel_monitor_reset_window(m);
}

static void clear_calibration(keel_monitor *m)
{
    for (int b = 0; b < m->nbuckets; b++)
        free_bucket(&m->bucket[b]);
    m->nbuckets = 0;
    m->ncal = 0;
}

keel_status keel_monitor_capture_baseline(keel_monitor *m)
{
    if (!m)
        return keel_fail(KEEL_ENULL, "keel_monitor_capture_baseline: mon is NULL");
    for (int l = 0; l < m->nslots; l++) {
        if (m->slot[l].w[KEEL_MONITOR_LOGRSTD].n < 2)
            return keel_fail(KEEL_EINVAL, "keel_monitor_capture_baseline: slot %d has %g tokens (need 2 or more)",
                             l, m->slot[l].w[KEEL_MONITOR_LOGRSTD].n);
        if (!m->slot[l].w[KEEL_MONITOR_LOGRSTD].ranged)
            return keel_fail(KEEL_EINVAL, "keel_monitor_capture_baseline: histogram ranges are not set "
                                          "(call keel_monitor_fit_ranges on a first pass)");
        if (m->slot[l].ch.width && m->slot[l].ch.n < 2)
            return keel_fail(
                KEEL_EINVAL,
                "keel_monitor_capture_baseline: slot %d has per-channel statistics of %g rows "
                "(need 2 or more: keel_monitor_observe_channels)",
                l, m->slot[l].ch.n);
    }
    for (int l = 0; l < m->nslots; l++) {
        mon_slot *sl = &m->slot[l];
        for (int s = 0; s < 2; s++) {
            mon_stat *b = &sl->b[s];
            const mon_stat *w = &sl->w[s];
            b->n = w->n;
            b->mean = w->mean;
            b->m2 = w->m2;
            b->lo = w->lo;
            b->hi = w->hi;
            b->ranged = w->ranged;
            memcpy(b->h, w->h, (size_t)(m->bins + 2) * sizeof *b->h);
        }
        sl->has_mean_b = sl->has_mean_w;
        mon_chan_capture(&sl->ch);
    }
    m->has_baseline = 1;
    clear_calibration(m);
    return keel_monitor_reset_window(m);
}

/* Raw components of the window: comp[(slot*2+stat)*3 + {0:|z|,1:PSI,2:KS}] (NaN where the
 * statistic is absent); z, psi, ks signed/raw into out when not NULL. Returns the tokens. */
static double components(const keel_monitor *m, double *comp, keel_monitor_slot_score *out)
{
    double tokens = 0.0;
    const int nb = m->bins + 2;
    for (int l = 0; l < m->nslots; l++) {
        const mon_slot *sl = &m->slot[l];
        keel_monitor_slot_score sc;
        memset(&sc, 0, sizeof sc);
        sc.tokens = sl->w[KEEL_MONITOR_LOGRSTD].n;
        sc.has_mean = sl->has_mean_b && sl->has_mean_w;
        if (sc.tokens > tokens)
            tokens = sc.tokens;
        for (int s = 0; s < 2; s++) {
            double *c = comp + ((size_t)l * 2 + s) * MON_NCOMP;
            if (s == KEEL_MONITOR_MEAN && !sc.has_mean) {
                c[0] = c[1] = c[2] = NAN;
                sc.z[s] = sc.psi[s] = sc.ks[s] = NAN;
                continue;
            }
            const mon_stat *w = &sl->w[s], *b = &sl->b[s];
            double bsd = b->n > 0 ? sqrt(b->m2 / b->n) : 0.0;
            double z = 0.0;
            if (w->n > 0)
                z = bsd > 0 ? (w->mean - b->mean) / (bsd / sqrt(w->n)) : (w->mean == b->mean ? 0.0 : INFINITY);
            sc.z[s] = z;
            sc.psi[s] = mon_psi(w->h, b->h, nb);
            sc.ks[s] = mon_ks(w->h, b->h, nb);
            c[0] = fabs(z);
            c[1] = sc.psi[s];
            c[2] = sc.ks[s];
        }
        if (out) {
            sc.bad_rows = (double)sl->bad;
            mon_chan_score(&sl->ch, &sc);
            out[l] = sc;
        }
    }
    return tokens;
}

static const mon_bucket *nearest_bucket(const keel_monitor *m, double tokens)
{
    const mon_bucket *best = NULL;
    double bd = INFINITY, lt = log(tokens > 1 ? tokens : 1);
    for (int b = 0; b < m->nbuckets; b++) {
        double d = fabs(log(m->bucket[b].tokens) - lt);
        if (d < bd) {
            bd = d;
            best = &m->bucket[b];
        }
    }
    return best;
}

/* Standardised (bk != NULL) or raw mean of the components: per slot into slot_score, overall
 * returned. */
static double combine(const keel_monitor *m, const double *comp, const mon_bucket *bk, double *slot_score)
{
    double all = 0.0;
    int nall = 0;
    for (int l = 0; l < m->nslots; l++) {
        double sum = 0.0;
        int n = 0;
        for (int k = 0; k < 2 * MON_NCOMP; k++) {
            size_t i = (size_t)l * 2 * MON_NCOMP + k;
            double v = comp[i];
            if (v != v)
                continue;
            if (bk) {
                if (bk->mu[i] != bk->mu[i])
                    continue;
                v = (v - bk->mu[i]) / bk->sd[i];
            }
            sum += v;
            n++;
        }
        if (slot_score)
            slot_score[l] = n ? sum / n : 0.0;
        all += sum;
        nall += n;
    }
    return nall ? all / nall : 0.0;
}

keel_status keel_monitor_score(const keel_monitor *m, keel_monitor_slot_score *slots, keel_monitor_result *res)
{
    if (!m || !res)
        return keel_fail(KEEL_ENULL, "keel_monitor_score: %s is NULL", !m ? "mon" : "res");
    if (!m->has_baseline)
        return keel_fail(KEEL_EINVAL, "keel_monitor_score: no baseline (capture or load one first)");
    size_t nc = (size_t)m->nslots * 2 * MON_NCOMP;
    double *comp = keel_alloc(nc * sizeof(double));
    double *ss = keel_alloc((size_t)m->nslots * sizeof(double));
    keel_monitor_slot_score *tmp = slots ? slots : keel_alloc((size_t)m->nslots * sizeof *tmp);
    if (!comp || !ss || !tmp) {
        keel_free(comp);
        keel_free(ss);
        if (!slots)
            keel_free(tmp);
        return keel_fail(KEEL_ENOMEM, "keel_monitor_score: out of memory");
    }
    double tokens = components(m, comp, tmp);
    const mon_bucket *bk = m->nbuckets ? nearest_bucket(m, tokens) : NULL;
    memset(res, 0, sizeof *res);
    res->combined = combine(m, comp, bk, ss);
    for (int l = 0; l < m->nslots; l++) {
        tmp[l].score = ss[l];
        for (int k = 0; k < 2 * MON_NCOMP; k++) {
            const size_t i = (size_t)l * 2 * MON_NCOMP + (size_t)k;
            const int usable = bk && comp[i] == comp[i] && bk->mu[i] == bk->mu[i];
            tmp[l].standardised[k / MON_NCOMP][k % MON_NCOMP] =
                usable ? (comp[i] - bk->mu[i]) / bk->sd[i] : NAN;
        }
    }
    res->calibrated = bk != NULL;
    res->threshold = bk ? bk->threshold : NAN;
    res->bucket_tokens = bk ? bk->tokens : 0.0;
    res->false_alarm = bk ? bk->far : NAN;
    /* rows with non-finite statistics are a numeric fault (an overflow, Inf or NaN rows): an
     * alarm whatever the scores say, calibrated or not (they are left out of every score) */
    int bad = 0;
    for (int l = 0; l < m->nslots; l++)
        bad |= m->slot[l].bad > 0;
    res->alarm = (bk && res->combined > bk->threshold) || bad;
    keel_free(comp);
    keel_free(ss);
    if (!slots)
        keel_free(tmp);
    return KEEL_OK;
}

keel_status keel_monitor_calibrate_add(keel_monitor *m)
{
    if (!m)
        return keel_fail(KEEL_ENULL, "keel_monitor_calibrate_add: mon is NULL");
    if (!m->has_baseline)
        return keel_fail(KEEL_EINVAL, "keel_monitor_calibrate_add: no baseline (capture one first)");
    size_t nc = (size_t)m->nslots * 2 * MON_NCOMP;
    if (m->ncal == m->capcal) {
        size_t cap = m->capcal ? 2 * m->capcal : 256;
        double *t = keel_realloc(m->cal_tokens, cap * sizeof(double));
        if (t)
            m->cal_tokens = t;
        double *c = keel_realloc(m->cal_comp, cap * nc * sizeof(double));
        if (c)
            m->cal_comp = c;
        if (!t || !c)
            return keel_fail(KEEL_ENOMEM, "keel_monitor_calibrate_add: out of memory");
        m->capcal = cap;
    }
    m->cal_tokens[m->ncal] = components(m, m->cal_comp + m->ncal * nc, NULL);
    m->ncal++;
    return keel_monitor_reset_window(m);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

keel_status keel_monitor_calibrate_finish(keel_monitor *m, double far)
{
    if (!m)
        return keel_fail(KEEL_ENULL, "keel_monitor_calibrate_finish: mon is NULL");
    if (!(far > 0 && far < 1))
        return keel_fail(KEEL_EINVAL, "keel_monitor_calibrate_finish: false_alarm (%g) not in (0, 1)", far);
    /* the distinct window sizes */
    double sizes[KEEL_MONITOR_MAX_BUCKETS];
    int ns = 0;
    for (size_t i = 0; i < m->ncal; i++) {
        int found = 0;
        for (int k = 0; k < ns; k++)
            found |= sizes[k] == m->cal_tokens[i];
        if (!found) {
            if (ns == KEEL_MONITOR_MAX_BUCKETS)
                return keel_fail(KEEL_EINVAL, "keel_monitor_calibrate_finish: more than %d window sizes",
                                 KEEL_MONITOR_MAX_BUCKETS);
            sizes[ns++] = m->cal_tokens[i];
        }
    }
    if (ns == 0)
        return keel_fail(KEEL_EINVAL, "keel_monitor_calibrate_finish: no calibration windows were added");
    qsort(sizes, (size_t)ns, sizeof(double), cmp_double);
    size_t nc = (size_t)m->nslots * 2 * MON_NCOMP;
    for (int k = 0; k < ns; k++) {
        size_t cnt = 0;
        for (size_t i = 0; i < m->ncal; i++)
            cnt += m->cal_tokens[i] == sizes[k];
        if (cnt < 2)
            return keel_fail(KEEL_EINVAL, "keel_monitor_calibrate_finish: only %zu window(s) of %g tokens (need 2 or more)",
                             cnt, sizes[k]);
    }
    /* Every allocation before the old calibration goes: a failure leaves the monitor as it was.
     * (The buckets used to be freed first and a failure left nbuckets counting a bucket whose
     * mu or sd was NULL, which keel_monitor_score and _baseline_save then read.) */
    double *vals = keel_alloc(m->ncal * sizeof(double));
    double *new_mu[KEEL_MONITOR_MAX_BUCKETS] = {0}, *new_sd[KEEL_MONITOR_MAX_BUCKETS] = {0};
    int have = vals != NULL;
    for (int k = 0; k < ns && have; k++) {
        new_mu[k] = keel_alloc_zero(nc, sizeof(double));
        new_sd[k] = keel_alloc_zero(nc, sizeof(double));
        have = new_mu[k] && new_sd[k];
    }
    if (!have) {
        for (int k = 0; k < ns; k++) {
            keel_free(new_mu[k]);
            keel_free(new_sd[k]);
        }
        keel_free(vals);
        return keel_fail(KEEL_ENOMEM, "keel_monitor_calibrate_finish: out of memory");
    }
    for (int b = 0; b < m->nbuckets; b++)
        free_bucket(&m->bucket[b]);
    m->nbuckets = 0;
    for (int k = 0; k < ns; k++) {
        mon_bucket *bk = &m->bucket[k];
        bk->mu = new_mu[k];
        bk->sd = new_sd[k];
        bk->tokens = sizes[k];
        bk->far = far;
        for (size_t c = 0; c < nc; c++) { /* Welford over the windows of this size */
            double n = 0, mean = 0, m2 = 0;
            for (size_t i = 0; i < m->ncal; i++) {
                if (m->cal_tokens[i] != sizes[k])
                    continue;
                double v = m->cal_comp[i * nc + c];
                if (v != v) {
                    n = -1;
                    break;
                }
                n += 1;
                double d = v - mean;
                mean += d / n;
                m2 += d * (v - mean);
            }
            double sd = n > 1 ? sqrt(m2 / (n - 1)) : 0.0;
            bk->mu[c] = n < 0 ? NAN : mean;
            bk->sd[c] = sd > 1e-12 ? sd : 1e-12;
        }
        size_t nv = 0;
        for (size_t i = 0; i < m->ncal; i++)
            if (m->cal_tokens[i] == sizes[k])
                vals[nv++] = combine(m, m->cal_comp + i * nc, bk, NULL);
        qsort(vals, nv, sizeof(double), cmp_double);
        double pos = ceil((1.0 - far) * (double)nv) - 1.0;
        size_t idx = pos < 0 ? 0 : (size_t)pos >= nv ? nv - 1 : (size_t)pos;
        bk->threshold = vals[idx];
        m->nbuckets = k + 1;
    }
    keel_free(vals);
    m->ncal = 0;
    return KEEL_OK;
}
