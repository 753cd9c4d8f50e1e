/* keel study: the resumable sweep of the placement experiment (issue 25). A grid of cells (norm,
 * placement, depth, learning rate, warm-up, seed) trained with one shared recipe; each finished
 * run is one small text file DIR/runs/NAME.run, written to a temporary file and renamed, so that
 * an interrupted run leaves nothing and a later invocation trains only the cells still missing. */
#ifndef KEEL_TRAIN_SWEEP_H
#define KEEL_TRAIN_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include "trainer.h"

/* The settings every run of a stage shares. */
typedef struct sw_recipe {
    char stage; /* 'A' (the grid), 'B' (seeds): the first letter of a run's name */
    int width, heads, seq, batch, steps;
    float beta1, beta2, adam_eps, wd, min_frac;
    int eval_every, eval_batches; /* validation every eval_every steps on eval_batches batches */
    uint64_t eval_seed;           /* the same validation batches in every run */
    int curve_every;              /* the run file's loss curve: one point per this many steps */
    int probe_step; /* the layer-0 / last-layer gradient ratio is taken at this step */
    double level;   /* the fixed validation level: plateau exit = first step below it */
} sw_recipe;

typedef struct sw_cell {
    tm_norm norm;
    tm_place place;
    int depth, warmup;
    float lr;
    uint64_t seed;
} sw_cell;

/* A run file read back. */
typedef struct sw_run {
    sw_cell cell;
    int steps, eval_batches;
    long val_tokens;
    double final_val, final_train, probe_ratio, seconds, level;
    int level_step; /* first evaluated step with validation below level; -1: never */
    int nan_step;   /* -1: none */
    int npoints;
    int step[512];
    float train[512], val[512]; /* val NaN where not evaluated */
} sw_run;

/* Stage A: width 64, 4 heads, seq 32, batch 8, 1,500 steps, AdamW (beta1 0.9, beta2 0.99, eps 1e-8,
 * weight decay 0.1), cosine decay to 10%, validation on 32 fixed batches (8,192 tokens) every 100
 * steps, the fixed level 3.0 nats, the gradient ratio at step 50. */
void sw_recipe_stage_a(sw_recipe *r);
/* The warm-up of the grid: 2 / (1 - beta2) steps (Ma and Yarats 2021), 200 for beta2 0.99. */
int sw_warmup_steps(const sw_recipe *r);
/* Stage A's 72 cells, most informative first: depth 6, then 12, then 24; within a depth lr 1e-3,
 * 3e-3, 3e-4; post-norm's pair (without, with warm-up) before pre-norm's; LayerNorm before
 * RMSNorm. Seeds 1 .. nseeds for each (nseeds >= 1; seeds vary fastest). Returns the count
 * written (at most max). */
int sw_grid_stage_a(const sw_recipe *r, int nseeds, sw_cell *cells, int max);
/* NAME, e.g. A_post_layernorm_L6_lr0.001_wu200_s1. */
void sw_cell_name(const sw_recipe *r, const sw_cell *c, char *buf, size_t n);
/* DIR/runs/NAME.run */
void sw_run_path(const char *dir, const sw_recipe *r, const sw_cell *c, char *buf, size_t n);
/* 1 when the cell's run file exists (a finished run), else 0. */
int sw_run_done(const char *dir, const sw_recipe *r, const sw_cell *c);
/* The trainer's options for a cell (silent, no CSV log). */
void sw_opts(const sw_recipe *r, const sw_cell *c, int threads, tr_opts *o);
/* First evaluated step of res with validation below level, -1 if none. */
int sw_level_step(const tr_result *res, double level);
/* Writes the run file of a finished run: PATH.tmp, then rename to PATH. KEEL_OK or KEEL_EIO with
 * tool_last_error() (nothing left at PATH, the temporary removed). */
keel_status sw_write_run(const char *path, const sw_recipe *r, const sw_cell *c,
                         const tr_result *res);
/* Reads a run file. KEEL_OK, KEEL_EIO (cannot open) or KEEL_EFORMAT (not a run file). */
keel_status sw_read_run(const char *path, sw_run *out);

/* Trains the cells whose run files are missing, in order, into DIR/runs/; stops starting runs
 * when the next one is expected to end after budget_s seconds (0: no limit; the expected time is
 * the last run's scaled by depth, so the first run always starts). *ran and *skipped count the
 * runs trained and those found done. verbose: a line per run on stdout. KEEL_OK or the failing
 * run's status with tool_last_error(). */
keel_status sw_run_grid(const sw_recipe *r, const sw_cell *cells, int n, const char *dir,
                        double budget_s, int threads, tm_data *d, int verbose, int *ran,
                        int *skipped);

#endif
