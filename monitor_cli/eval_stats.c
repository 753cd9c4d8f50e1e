/* The statistics of keel monitor eval (eval_stats.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_stats.h"
#include "rng.h"
#include "tool_error.h"

/* A score with its class (1: positive) and its index in its class's list. */
typedef struct item {
    double s;
    int pos;
    size_t i;
} item;

static int cmp_item(const void *a, const void *b)
{
    const double x = ((const item *)a)->s, y = ((const item *)b)->s;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* NaN sorts as the highest score: a detector whose score failed is alarming, not quiet. */
static double key(double v) { return isnan(v) ? INFINITY : v; }

/* Both lists in one array sorted by score; NULL when out of memory. */
static item *merged(const double *pos, size_t np, const double *neg, size_t nn)
{
    item *it = malloc((np + nn) * sizeof *it);
    if (!it)
        return NULL;
    for (size_t i = 0; i < np; i++)
        it[i] = (item){key(pos[i]), 1, i};
    for (size_t i = 0; i < nn; i++)
        it[np + i] = (item){key(neg[i]), 0, i};
    qsort(it, np + nn, sizeof *it, cmp_item);
    return it;
}

/* AUROC over sorted items, each weighted by how often its window was drawn (wp, wn; NULL: once).
 * One pass over the tie groups: a positive counts the negatives below it, and half of those tied
 * with it. Weighted so that a bootstrap resample costs O(n), not a sort. */
static double auroc_sorted(const item *it, size_t n, const unsigned *wp, const unsigned *wn,
                           double np, double nn)
{
    double below = 0.0, sum = 0.0;
    for (size_t a = 0; a < n;) {
        size_t b = a;
        double gp = 0.0, gn = 0.0;
        while (b < n && it[b].s == it[a].s) {
            if (it[b].pos)
                gp += wp ? wp[it[b].i] : 1.0;
            else
                gn += wn ? wn[it[b].i] : 1.0;
            b++;
        }
        sum += gp * (below + 0.5 * gn);
        below += gn;
        a = b;
    }
    return sum / (np * nn);
}

double ev_auroc(const double *pos, size_t np, const double *neg, size_t nn)
{
    if (np == 0 || nn == 0)
        return NAN;
    item *it = merged(pos, np, neg, nn);
    if (!it)
        return NAN;
    const double a = auroc_sorted(it, np + nn, NULL, NULL, (double)np, (double)nn);
    free(it);
    return a;
}

double ev_threshold_at_far(const double *clean, size_t n, double far)
{
    if (n == 0)
        return NAN;
    double *s = malloc(n * sizeof *s);
    if (!s)
        return NAN;
    for (size_t i = 0; i < n; i++)
        s[i] = key(clean[i]);
    qsort(s, n, sizeof *s, cmp_double);
    /* the k-th smallest with k = ceil((1 - far) n): at most n - k <= far n scores lie above it.
     * (1 - far) n is rounded first: 0.99 * 100 must give k = 99, not 100 from a last-bit excess */
    const double k = ceil((1.0 - far) * (double)n - 1e-9);
    const size_t i = k < 1.0 ? 0 : (size_t)k - 1;
    const double t = s[i < n ? i : n - 1];
    free(s);
    return t;
}

double ev_rate_above(const double *v, size_t n, double thr)
{
    if (n == 0)
        return NAN;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += key(v[i]) > thr;
    return (double)k / (double)n;
}

/* The 2.5% and 97.5% points of r[0..reps) (sorted here). */
static ev_ci percentile_95(double *r, int reps)
{
    qsort(r, (size_t)reps, sizeof *r, cmp_double);
    const size_t lo = (size_t)floor(0.025 * (reps - 1)), hi = (size_t)ceil(0.975 * (reps - 1));
    return (ev_ci){r[lo], r[hi]};
}

keel_status ev_bootstrap_auroc(const double *pos, size_t np, const double *neg, size_t nn, int reps,
                               uint64_t seed, ev_ci *ci)
{
    if (np == 0 || nn == 0 || reps < 2)
        return tool_fail(KEEL_EINVAL,
                         "bootstrap of AUROC: %zu positive and %zu negative windows, "
                         "%d resamples (need 1, 1 and 2)",
                         np, nn, reps);
    item *it = merged(pos, np, neg, nn);
    unsigned *wp = malloc(np * sizeof *wp), *wn = malloc(nn * sizeof *wn);
    double *r = malloc((size_t)reps * sizeof *r);
    if (!it || !wp || !wn || !r) {
        free(it), free(wp), free(wn), free(r);
        return tool_fail(KEEL_ENOMEM, "bootstrap of AUROC: out of memory");
    }
    tm_rng rng = {seed};
    for (int b = 0; b < reps; b++) {
        memset(wp, 0, np * sizeof *wp);
        memset(wn, 0, nn * sizeof *wn);
        for (size_t i = 0; i < np; i++)
            wp[tm_rng_below(&rng, np)]++;
        for (size_t i = 0; i < nn; i++)
            wn[tm_rng_below(&rng, nn)]++;
        r[b] = auroc_sorted(it, np + nn, wp, wn, (double)np, (double)nn);
    }
    *ci = percentile_95(r, reps);
    free(it), free(wp), free(wn), free(r);
    return KEEL_OK;
}

keel_status ev_bootstrap_rate(const double *v, size_t n, double thr, int reps, uint64_t seed,
                              ev_ci *ci)
{
    if (n == 0 || reps < 2)
        return tool_fail(KEEL_EINVAL,
                         "bootstrap of a rate: %zu windows, %d resamples (need 1 and 2)", n, reps);
    double *r = malloc((size_t)reps * sizeof *r);
    if (!r)
        return tool_fail(KEEL_ENOMEM, "bootstrap of a rate: out of memory");
    tm_rng rng = {seed};
    for (int b = 0; b < reps; b++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += key(v[tm_rng_below(&rng, n)]) > thr;
        r[b] = (double)k / (double)n;
    }
    *ci = percentile_95(r, reps);
    free(r);
    return KEEL_OK;
}
