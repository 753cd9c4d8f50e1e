/* keel train: the training loop shared by `keel train`, `keel study` and the tests. */
#ifndef KEEL_TRAIN_TRAINER_H
#define KEEL_TRAIN_TRAINER_H

#include <stdint.h>

#include "data.h"
#include "model.h"

typedef struct tr_opts {
    tm_config mc;          /* vocab is taken from the data */
    int batch, steps, warmup, cosine;
    float lr, min_frac, wd, beta1, beta2, clip; /* clip 0: off */
    uint64_t seed;
    int threads;
    int eval_every, eval_batches; /* validation loss every eval_every steps (0: only at the end) */
    uint64_t eval_seed;    /* the validation batches' draw: 0 derives it from seed; any other value
                            * gives every run the same fixed batches, whatever its seed */
    int probe_step;        /* > 0: record the layer-0 / last-layer gradient norm ratio at this step */
    int stop_after;        /* > 0: stop (and save) after this step, as if interrupted */
    const char *log_path;  /* CSV, or NULL */
    const char *save_path; /* checkpoint at the end, or NULL */
    const char *resume_path;
    int progress;          /* 0 silent, 1 plain lines, 2 a progress bar (terminal) */
    int print_every;       /* plain lines: every this many steps */
    int stop_on_nan;       /* stop at a non-finite loss */
    const char *label;     /* for progress lines */
} tr_opts;

void tr_opts_default(tr_opts *o);

/* The ranges of the training settings, whoever gives them (keel train's options, a checkpoint's
 * header; the model's own are in model.h): steps, warm-up, evaluation counts up to
 * TR_MAX_STEPS; lr in (0, TR_MAX_SETTING], wd and clip in [0, TR_MAX_SETTING]; min-lr-frac in
 * [0, 1]; beta1 and beta2 in [0, 1). */
#define TR_MAX_STEPS 100000000
#define TR_MAX_SETTING 1e9

typedef struct tr_result {
    int steps_done, start_step;
    int nan_step;        /* first step with a non-finite loss, -1 if none */
    char nan_reason[320]; /* empty, or the keel call that refused a parameter the run drove
                           * out of range (DyT's alpha gone Inf), at nan_step or before */
    float *train_loss;   /* steps entries (NaN where not run) */
    float *grad_norm;    /* steps entries */
    int nval;
    int *val_step;
    float *val_loss;
    double final_train;  /* mean train loss over the last 10% of steps run */
    double final_val;
    double probe_ratio;  /* layer 0's gradient norm / the last layer's at probe_step (NaN: none) */
    long val_tokens;     /* tokens scored by one evaluation (eval_batches x batch x seq) */
    double seconds, norm_seconds, tokens_per_s;
    size_t nparams;
    double unigram_entropy;
    int vocab;
} tr_result;

/* Trains. d: the corpus (already loaded). Returns KEEL_OK, or a status with tool_last_error()
 * (tool_error.h). */
keel_status tr_run(const tr_opts *o, tm_data *d, tr_result *res);
void tr_result_free(tr_result *r);

#endif
