/* The detectors of keel monitor eval (eval_detectors.c): one score per window of a recording,
 * higher = more shifted, from the same forward pass. */
#ifndef KEEL_MONITOR_CLI_EVAL_DETECTORS_H
#define KEEL_MONITOR_CLI_EVAL_DETECTORS_H

#include "recording.h"

enum {
    EV_MONITOR, /* the monitor's combined score (norm summaries: |z|, PSI, KS of mean, log-rstd) */
    EV_MAHA,    /* per-channel: mean over norms of the diagonal Mahalanobis distance */
    EV_NLL,     /* mean negative log-likelihood of the true next token (needs the label) */
    EV_ENTROPY, /* mean entropy of the next-token distribution (label-free) */
    EV_MAXPROB, /* mean 1 - largest next-token probability (label-free) */
    EV_NDET
};

extern const char *const ev_det_names[EV_NDET];
/* Whether the detector needs the true next token (only NLL). */
extern const int ev_det_needs_label[EV_NDET];

/* Scores window [a, b) of rec with every detector into score[EV_NDET]; mon is calibrated, with
 * per-channel statistics on (else EV_MAHA is NaN); slots: mon's slot count of scratch. 0, or -1
 * (keel_last_error). */
int ev_window_scores(keel_monitor *mon, const mc_rec *rec, size_t a, size_t b,
                     keel_monitor_slot_score *slots, double score[EV_NDET]);

#endif
