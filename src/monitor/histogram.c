/* keel monitor: Welford moments, fixed-bin histograms, PSI and the Kolmogorov-Smirnov distance. */
#include <math.h>
#include <string.h>

#include "monitor_internal.h"

int mon_bin(double x, double lo, double hi, int bins)
{
    double t = (x - lo) / (hi - lo) * bins;
    if (!(t >= 0.0))
        return 0;
    if (t >= bins)
        return bins + 1;
    return (int)t + 1;
}

/* Moments of the chunk (two passes in double), then Chan's merge: the result depends only on
 * the order of the calls, never on timing. */
void mon_stat_add(mon_stat *s, int bins, const double *x, size_t n)
{
    if (n == 0)
        return;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += x[i];
    double mb = sum / (double)n, m2b = 0.0;
    for (size_t i = 0; i < n; i++)
        m2b += (x[i] - mb) * (x[i] - mb);
    mon_stat c = {.n = (double)n, .mean = mb, .m2 = m2b};
    mon_stat_merge(s, &c, 0);
    if (s->ranged && s->h)
        for (size_t i = 0; i < n; i++)
            s->h[mon_bin(x[i], s->lo, s->hi, bins)]++;
}

void mon_stat_merge(mon_stat *dst, const mon_stat *src, int bins)
{
    if (src->n > 0) {
        double n = dst->n + src->n, d = src->mean - dst->mean;
        dst->mean = dst->n == 0 ? src->mean : dst->mean + d * (src->n / n);
        dst->m2 = dst->m2 + src->m2 + d * d * (dst->n * src->n / n);
        dst->n = n;
    }
    if (bins > 0 && dst->h && src->h)
        for (int i = 0; i < bins + 2; i++)
            dst->h[i] += src->h[i];
}

void mon_stat_clear(mon_stat *s, int bins)
{
    s->n = s->mean = s->m2 = 0.0;
    if (s->h)
        memset(s->h, 0, (size_t)(bins + 2) * sizeof *s->h);
}

static double total(const uint64_t *a, int nb)
{
    double t = 0.0;
    for (int i = 0; i < nb; i++)
        t += (double)a[i];
    return t;
}

/* PSI = sum (p - q) ln(p / q) over the bins, with p, q smoothed by half a count per bin so that
 * an empty bin never gives an infinite score. a: the window, b: the baseline. */
double mon_psi(const uint64_t *a, const uint64_t *b, int nb)
{
    double ta = total(a, nb), tb = total(b, nb);
    if (ta == 0 || tb == 0)
        return 0.0;
    double psi = 0.0;
    for (int i = 0; i < nb; i++) {
        double p = ((double)a[i] + 0.5) / (ta + 0.5 * nb), q = ((double)b[i] + 0.5) / (tb + 0.5 * nb);
        psi += (p - q) * log(p / q);
    }
    return psi;
}

/* max |F_a - F_b| over the bin edges (unsmoothed proportions). */
double mon_ks(const uint64_t *a, const uint64_t *b, int nb)
{
    double ta = total(a, nb), tb = total(b, nb);
    if (ta == 0 || tb == 0)
        return 0.0;
    double ca = 0.0, cb = 0.0, ks = 0.0;
    for (int i = 0; i < nb; i++) {
        ca += (double)a[i];
        cb += (double)b[i];
        double d = fabs(ca / ta - cb / tb);
        ks = d > ks ? d : ks;
    }
    return ks;
}
