/* The statistics of keel monitor eval (eval_stats.c): AUROC with ties, a threshold at a
 * false-alarm rate, the rate of scores above a threshold, and percentile bootstrap intervals
 * of AUROC and of that rate over resampled windows. Pure functions of their inputs. */
#ifndef KEEL_MONITOR_CLI_EVAL_STATS_H
#define KEEL_MONITOR_CLI_EVAL_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

/* AUROC of pos[0..np) against neg[0..nn) (higher = positive): the probability that a positive
 * scores above a negative, a tie counting one half. NaN when either list is empty. A NaN score
 * counts as the highest (a detector whose score failed alarms). */
double ev_auroc(const double *pos, size_t np, const double *neg, size_t nn);

/* The threshold t at which at most a share far of clean[0..n) lies above t (an alarm is
 * score > t): the ceil((1 - far) n)-th smallest score. NaN when n is 0. */
double ev_threshold_at_far(const double *clean, size_t n, double far);

/* The share of v[0..n) above thr (NaN counting as above); NaN when n is 0. */
double ev_rate_above(const double *v, size_t n, double thr);

/* A 95% percentile bootstrap interval: [lo, hi]. */
typedef struct ev_ci {
    double lo, hi;
} ev_ci;

/* Percentile bootstrap of ev_auroc: `reps` resamples, each drawing np positives and nn
 * negatives with replacement (windows, independently per class), from seed. KEEL_EINVAL for an
 * empty list or reps < 2, KEEL_ENOMEM; tool_last_error() says which. */
keel_status ev_bootstrap_auroc(const double *pos, size_t np, const double *neg, size_t nn, int reps,
                               uint64_t seed, ev_ci *ci);

/* The same for ev_rate_above(v, n, thr) (a detection rate on shifted windows, or a false-alarm
 * rate on clean ones). */
keel_status ev_bootstrap_rate(const double *v, size_t n, double thr, int reps, uint64_t seed,
                              ev_ci *ci);

#endif
