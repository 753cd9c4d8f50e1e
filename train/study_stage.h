/* keel study --stage A|B / --report: the placement experiment's sweep (sweep.h) run within a
 * time budget, and its section of the report written from whatever run files exist. */
#ifndef KEEL_TRAIN_STUDY_STAGE_H
#define KEEL_TRAIN_STUDY_STAGE_H

#include <stdio.h>

#include "data.h"

/* Trains the missing runs of stage A (nseeds seeds per cell) into DIR/runs/, for at most
 * budget_s seconds (0: no limit). 0, or -1 with a message printed. */
int study_stage_run(const char *dir, int nseeds, double budget_s, int threads, tm_data *d);
/* Stage B: at each depth and norm whose stage A post-norm runs are all on disk, the lr with the
 * largest post-norm warm-up gap (seed 1); seeds 2..nseeds of post without warm-up, post with
 * warm-up and pre without, into DIR/runs/ (stage A's recipe and file names). 0, or -1. */
int study_stage_b_run(const char *dir, int nseeds, double budget_s, int threads, tm_data *d);
/* Stage B's lr: the index (into the grid's 3 lrs, ascending) where post-norm's final validation
 * loss without warm-up (no_wu) exceeds the one with warm-up (with_wu) the most; a diverged run
 * is INFINITY (worse than any), two diverged runs count as no gap; ties go to the smaller lr.
 * *gap: that difference (+INFINITY where only the run without warm-up diverged). */
int study_stage_b_lr(const double no_wu[3], const double with_wu[3], double *gap);
/* Writes the stage A section of the report to md from DIR/runs/, and DIR/stageA.gp, the gnuplot
 * script of its figures (drawn when have_gnuplot). Returns the number of runs found. */
int study_stage_report(FILE *md, const char *dir, int nseeds, int have_gnuplot);

#endif
