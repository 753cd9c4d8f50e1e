/* keel monitor: internal state shared by monitor.c, histogram.c and baseline_io.c. */
#ifndef KEEL_MONITOR_INTERNAL_H
#define KEEL_MONITOR_INTERNAL_H

#include <stdint.h>

#include "keel.h"

#define MON_NCOMP 3 /* |z|, PSI, KS */

typedef struct mon_stat {
    double n, mean, m2; /* Welford moments */
    double lo, hi;      /* histogram range (valid when ranged) */
    int ranged;
    uint64_t *h; /* bins + 2: [0] underflow, [1..bins], [bins+1] overflow */
} mon_stat;

/* Per-channel moments of a slot's input (monitor_channels.c). One block of
 * 7 * width doubles: window mean, m2; baseline mean, m2; a chunk's sums, squared deviations
 * and shift; then 3 * width floats: the fast path's shift and sums (scratch, so observing
 * allocates nothing). width 0: off. */
typedef struct mon_chan {
    int width;
    double n, bn;                /* window and baseline rows */
    double *mean, *m2;           /* window */
    double *bmean, *bm2;         /* baseline */
    double *csum, *cm2, *cshift; /* scratch */
    float *fshift, *fs1, *fs2;   /* scratch */
    uint64_t bad;                /* window rows skipped (NaN or Inf in the row) */
} mon_chan;

typedef struct mon_slot {
    mon_stat w[2], b[2]; /* window and baseline, per statistic */
    mon_chan ch;
    int has_mean_w, has_mean_b;
    uint64_t bad; /* rows with non-finite or non-positive rstd, in the window */
} mon_slot;

typedef struct mon_bucket {
    double tokens, threshold, far;
    double *mu, *sd; /* nslots * 2 * MON_NCOMP */
} mon_bucket;

struct keel_monitor {
    int nslots, bins;
    double range_sd;
    mon_slot *slot;
    int has_baseline;
    int nbuckets;
    mon_bucket bucket[KEEL_MONITOR_MAX_BUCKETS];
    size_t ncal, capcal;
    double *cal_tokens, *cal_comp; /* calibration windows: tokens, raw components */
};

/* histogram.c */
void mon_stat_add(mon_stat *s, int bins, const double *x, size_t n);
void mon_stat_merge(mon_stat *dst, const mon_stat *src, int bins);
void mon_stat_clear(mon_stat *s, int bins);
int mon_bin(double x, double lo, double hi, int bins);
double mon_psi(const uint64_t *a, const uint64_t *b, int nb);
double mon_ks(const uint64_t *a, const uint64_t *b, int nb);

/* monitor.c */
keel_status mon_alloc(keel_monitor **out, int nslots, int bins, double range_sd);

/* monitor_channels.c */
keel_status mon_chan_alloc(mon_chan *c, int width); /* zeroed; c untouched on failure */
void mon_chan_free(mon_chan *c);
void mon_chan_reset(mon_chan *c);
void mon_chan_merge(mon_chan *dst, const mon_chan *src);
void mon_chan_capture(mon_chan *c);
void mon_chan_score(const mon_chan *c, keel_monitor_slot_score *sc);

/* baseline_check.c: KEEL_OK when every field of a loaded baseline is in range, else
 * KEEL_EFORMAT with the error set (naming path and the field). */
keel_status mon_baseline_check(const keel_monitor *m, const char *path);

#endif
