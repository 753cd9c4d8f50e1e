/* keel monitor eval's statistics (eval_stats.c) against cases computed by hand: AUROC with
 * ties and a NaN score, the threshold at a false-alarm rate on a known list, and bootstrap
 * intervals that hold the point estimate and repeat for a seed. */
#include <math.h>
#include <stdio.h>

#include "eval_stats.h"

static int fails;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);                     \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

static int near(double a, double b) { return fabs(a - b) < 1e-12; }

int main(void)
{
    /* pairs (pos, neg): 0.9 beats 0.5 and 0.1 (2); each 0.5 ties 0.5 (1/2) and beats 0.1 (1):
     * (2 + 1.5 + 1.5) / 6 */
    const double pos[] = {0.9, 0.5, 0.5}, neg[] = {0.5, 0.1};
    CHECK(near(ev_auroc(pos, 3, neg, 2), 5.0 / 6.0));
    CHECK(near(ev_auroc(neg, 2, pos, 3), 1.0 / 6.0)); /* the classes swapped: 1 - AUROC */
    const double same[] = {1.0, 1.0};
    CHECK(near(ev_auroc(same, 2, same, 2), 0.5)); /* all tied */
    const double withnan[] = {NAN, 0.0};
    CHECK(near(ev_auroc(withnan, 2, neg, 2), 0.5)); /* NaN above every negative: (2 + 0) / 4 */
    CHECK(isnan(ev_auroc(pos, 3, neg, 0)));

    /* 1, 2, ..., 100: the threshold at 1% is 99 (only 100 above), at 5% 95, at 0.5% 100 */
    double list[100];
    for (int i = 0; i < 100; i++)
        list[99 - i] = i + 1; /* descending: the function must sort */
    CHECK(ev_threshold_at_far(list, 100, 0.01) == 99.0);
    CHECK(ev_threshold_at_far(list, 100, 0.05) == 95.0);
    CHECK(ev_threshold_at_far(list, 100, 0.005) == 100.0);
    CHECK(near(ev_rate_above(list, 100, 99.0), 0.01));
    CHECK(near(ev_rate_above(list, 100, 95.0), 0.05));
    CHECK(isnan(ev_threshold_at_far(list, 0, 0.01)));

    /* bootstrap: 60 shifted scores with ties, 80 clean ones */
    double p[60], q[80];
    for (int i = 0; i < 60; i++)
        p[i] = (i % 20) * 0.1 + 0.5;
    for (int i = 0; i < 80; i++)
        q[i] = (i % 25) * 0.1;
    const double a = ev_auroc(p, 60, q, 80);
    ev_ci c1, c2, c3;
    CHECK(ev_bootstrap_auroc(p, 60, q, 80, 1000, 7, &c1) == KEEL_OK);
    CHECK(ev_bootstrap_auroc(p, 60, q, 80, 1000, 7, &c2) == KEEL_OK);
    CHECK(ev_bootstrap_auroc(p, 60, q, 80, 1000, 8, &c3) == KEEL_OK);
    CHECK(c1.lo <= a && a <= c1.hi && c1.lo < c1.hi);
    CHECK(c1.lo == c2.lo && c1.hi == c2.hi); /* the same seed, the same interval */
    CHECK(c1.lo != c3.lo || c1.hi != c3.hi); /* another seed, other resamples */
    const double t = ev_threshold_at_far(q, 80, 0.1), r = ev_rate_above(p, 60, t);
    CHECK(ev_bootstrap_rate(p, 60, t, 1000, 7, &c1) == KEEL_OK);
    CHECK(ev_bootstrap_rate(p, 60, t, 1000, 7, &c2) == KEEL_OK);
    CHECK(c1.lo <= r && r <= c1.hi && c1.lo == c2.lo && c1.hi == c2.hi);
    CHECK(ev_bootstrap_auroc(p, 0, q, 80, 1000, 7, &c1) == KEEL_EINVAL);
    CHECK(ev_bootstrap_rate(p, 60, t, 1, 7, &c1) == KEEL_EINVAL);

    if (fails)
        fprintf(stderr, "test_monitor_eval_stats: %d failed\n", fails);
    else
        printf("test_monitor_eval_stats: ok\n");
    return fails != 0;
}
