/* What keel monitor eval measured on one model (monitor_eval.c) and its report files
 * (eval_report.c: results.md, results.csv). */
#ifndef KEEL_MONITOR_CLI_EVAL_REPORT_H
#define KEEL_MONITOR_CLI_EVAL_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "eval_detectors.h"
#include "eval_stats.h"

#define EV_NSRC 5 /* clean + 4 shifts */
#define EV_NWIN 3
#define EV_MAXSLOTS 64

extern const char *const ev_src_names[EV_NSRC];
extern const char *const ev_src_desc[EV_NSRC];
extern const int ev_wins[EV_NWIN];

/* How the evaluation ran (the same for every model). */
typedef struct ev_setup {
    double far;       /* the target false-alarm rate */
    int reps;         /* bootstrap resamples */
    uint64_t seed;    /* bootstrap seed */
    size_t switch_at; /* tokens of clean text before a stream's switch */
    size_t after;     /* tokens of shifted text after it (at most) */
    size_t step;      /* a stream's sliding window is scored every step tokens */
} ev_setup;

typedef struct ev_model {
    const char *ckpt;
    int layers, width, seq, slots;
    char norm[32], place[32], slot_name[EV_MAXSLOTS][32];
    size_t base_tokens, cal_tokens, tokens[EV_NSRC], dropped[EV_NSRC];
    size_t cal_windows[EV_NWIN];      /* held-out windows (stride window/4) of the thresholds */
    size_t windows[EV_NWIN][EV_NSRC]; /* non-overlapping test windows */
    double thr[EV_NWIN][EV_NDET];     /* at far on the held-out windows */
    double far[EV_NWIN][EV_NDET];     /* measured on the clean test windows */
    ev_ci far_ci[EV_NWIN][EV_NDET];
    double auc[EV_NWIN][EV_NDET][EV_NSRC], tpr[EV_NWIN][EV_NDET][EV_NSRC]; /* [.][.][0] unused */
    ev_ci auc_ci[EV_NWIN][EV_NDET][EV_NSRC], tpr_ci[EV_NWIN][EV_NDET][EV_NSRC];
    double delay[EV_NWIN][EV_NDET][EV_NSRC]; /* tokens after the switch; NaN: no alarm */
    int pre_alarms[EV_NWIN][EV_NDET][EV_NSRC];
    size_t pre_windows[EV_NWIN];
    double slot_auc[EV_NSRC][EV_MAXSLOTS]; /* each norm's own monitor score, window 256 */
    /* forward over the clean text with and without the monitor (first model only; 0: not run) */
    double t_plain, t_mon, t_obs;
    size_t overhead_tokens;
    int batch, threads;
} ev_model;

/* The tables of every model and the summary pooled over models, into md (Markdown) and csv. 0,
 * or -1 when a write failed. */
int ev_write_results(FILE *md, FILE *csv, const ev_setup *su, const ev_model *m, int nm,
                     const char *cmdline);

#endif
