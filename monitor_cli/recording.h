/* keel monitor's recordings (recording.c), what the monitor commands (cmd_monitor.c) and the
 * evaluation (monitor_eval.c) work on: a text is run through a checkpoint's model in
 * consecutive blocks of seq tokens; every norm's per-token statistics and every token's
 * log-likelihood are recorded, so windows can be fed to a keel_monitor later. */
#ifndef KEEL_MONITOR_CLI_RECORDING_H
#define KEEL_MONITOR_CLI_RECORDING_H

#include <stddef.h>

#include "checkpoint.h"
#include "model.h"
#include "tool_error.h"

typedef struct mc_model {
    tm_train_state st;
    tm_model m;
    int index[256]; /* byte -> token id, -1 outside the vocabulary */
    int slots;
    int channels; /* 1: mc_record keeps per-channel moments of the norms' inputs too */
} mc_model;

/* Rows per group of the per-channel moments a recording keeps (seq when seq is not a multiple
 * of it): windows are fed whole groups. */
#define MC_GROUP 16

typedef struct mc_rec {
    size_t n;      /* tokens recorded (a multiple of seq) */
    int slots, has_mean;
    float *mean;   /* slots x n (NULL for RMSNorm) */
    float *rstd;   /* slots x n */
    float *ll;     /* n: log-likelihood of the next token */
    /* n each: the entropy (nats) of the model's next-token distribution and 1 - its largest
     * probability, the label-free baselines of keel monitor eval (no next token needed) */
    float *ent, *pmax;
    /* Per-channel moments (mc_model.channels; else width 0): per slot, per group of `group`
     * tokens, each channel's mean and sum of squared deviations, slots x (n / group) x width;
     * gbuf: 2 x width doubles of scratch. */
    int width;
    size_t group;
    float *cmean, *cm2;
    double *gbuf;
    double forward_seconds;
} mc_rec;

/* The functions below that return a keel_status set tool_last_error() (tool_error.h) on an
 * error. Loads a checkpoint's model for recording. */
keel_status mc_load_model(mc_model *mm, const char *ckpt, int threads);
void mc_free_model(mc_model *mm);
/* Maps bytes to token ids, dropping bytes outside the vocabulary (counted in *dropped). */
int *mc_map_text(const mc_model *mm, const unsigned char *bytes, size_t nbytes, size_t *ntok, size_t *dropped);
/* Reads a whole file (gzip-compressed if the name ends in .gz) into *out (malloc'd, *n bytes);
 * *out NULL on an error. */
keel_status mc_read_file(const char *path, unsigned char **out, size_t *n);
/* Runs tok[0..n) through the model. */
keel_status mc_record(mc_model *mm, const int *tok, size_t n, mc_rec *r);
void mc_free_rec(mc_rec *r);
/* Feeds tokens [a, b) of a recording to the monitor's window; the per-channel moments too (the
 * groups wholly inside [a, b)) to slots whose per-channel width is the recording's. */
int mc_feed(keel_monitor *mon, const mc_rec *r, size_t a, size_t b);
/* Mean negative log-likelihood of tokens [a, b). */
double mc_nll(const mc_rec *r, size_t a, size_t b);
/* Mean of x[a, b) (a per-token series of a recording: ll, ent, pmax). */
double mc_series_mean(const float *x, size_t a, size_t b);
/* A recording of a text that switches: tokens [a0, a0 + na) of a, then [b0, b0 + nb) of b, as if
 * recorded in one run. Exact when a0, na and b0 are multiples of the model's seq (each block of
 * seq tokens is recorded on its own) and of the recordings' group. */
keel_status mc_stitch(const mc_rec *a, size_t a0, size_t na, const mc_rec *b, size_t b0, size_t nb,
                      mc_rec *out);
/* Calibrates mon's alarm threshold on windows of each of sizes[0..nsizes) tokens of [a, b)
 * (stride a quarter window) at false-alarm rate far. 0, or -1 (keel_last_error). */
int mc_calibrate_windows(keel_monitor *mon, const mc_rec *rec, size_t a, size_t b, const int *sizes,
                         int nsizes, double far);

#endif
