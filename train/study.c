/* keel study: the training study. Writes a report folder (report.md, PNG plots by gnuplot, the
 * data beside them).
 *  --quick (make demo, about 1 minute on an idle 2-core machine): 1. at initialization, post-norm vs pre-norm at several
 *     depths: the gradient norm of each block's last MLP weight and the residual-stream norm by
 *     depth (Xiong et al. 2020); 2. training, post vs pre, with post-norm's warm-up effect at
 *     depth 6; 3. at the deepest depth without warm-up: DeepNorm, LayerScale, sandwich (Peri-LN),
 *     BatchNorm, DyT and no norm; 4. speed: time in normalization per step.
 *  --stage A, --report (issue 25): section 1, then the placement experiment's resumable grid
 *     (study_stage.c, sweep.c), its report written from the run files on disk. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands_train.h"
#include "data.h"
#include "numarg.h"
#include "options.h"
#include "study_stage.h"
#include "sweep.h"
#include "trainer.h"

typedef struct study {
    int quick, threads, width, heads, seq, batch, steps, eval_every, eval_batches;
    int nseeds; /* --stage: seeds 1..nseeds of every cell */
    int depths[4], ndepths;
    float depth_lr[4]; /* quick: the learning rate at each depth (depth 6: where post-norm's warm-up shows) */
    int depth_steps[4]; /* quick: the steps at each depth */
    int warmups[2], nwarm;
    int deep;      /* the depth of experiment 3 */
    float hi_lr;   /* the learning rate of experiment 3 */
    char out[1024];
    tm_data *d;
    FILE *md;
    int have_gnuplot;
    char cmdline[2048];
} study;

typedef struct run_row {
    char label[96];
    tm_norm norm;
    tm_place place;
    int depth, warmup, steps;
    float lr, ls;
    double final_train, final_val, tps, norm_share;
    int nan_step, level_step;
    const char *name; /* the table's name of an alternative (a string literal), or NULL */
    char outcome[64]; /* measured: NaN step, or the plateau exit (first validation below LEVEL) */
} run_row;

/* The fixed validation level of the plateau exit (stage A's, sweep.c). */
#define LEVEL 3.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int mkdirs(const char *path)
{
    char tmp[1300]; /* callers pass paths of up to 1200 bytes */
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

/* What a run did, in numbers: no threshold words (issue 25). */
static void outcome(run_row *row, const tr_result *r)
{
    row->level_step = sw_level_step(r, LEVEL);
    if (r->nan_step >= 0)
        snprintf(row->outcome, sizeof row->outcome, "NaN at step %d", r->nan_step);
    else if (row->level_step < 0)
        snprintf(row->outcome, sizeof row->outcome, "not below %.1f", LEVEL);
    else
        snprintf(row->outcome, sizeof row->outcome, "below %.1f at step %d", LEVEL, row->level_step);
}

/* A fresh LayerNorm model of depth L (post-norm when post), averaged over 4 training batches
 * before any step: each block's second MLP weight's gradient norm (gs, L values) and the mean
 * residual norm entering each block and after the last (rs, L + 1). 0, or -1 with a message
 * printed (memory, or a keel call the model's forward or backward made that failed). */
static int init_gradients(const study *s, int L, int post, double *gs, double *rs)
{
    tm_config cfg = {s->d->vocab, L, s->width, s->heads, s->seq, 1, TM_NORM_LAYER, post ? TM_POST : TM_PRE, 0, 1e-5f};
    tm_model m;
    if (tm_create(&m, &cfg, s->batch, 1, s->threads) != KEEL_OK) {
        fprintf(stderr, "keel study: %s\n", tool_last_error());
        return -1;
    }
    double *g = calloc((size_t)L, sizeof(double)), *rn = calloc((size_t)L + 1, sizeof(double));
    int *x = malloc(sizeof(int) * (size_t)s->batch * s->seq), *y = malloc(sizeof(int) * (size_t)s->batch * s->seq);
    int rc = g && rn && x && y ? 0 : -1;
    if (rc)
        fprintf(stderr, "keel study: out of memory\n");
    tm_rng rng = {99};
    enum { NB = 4 };
    for (int b = 0; b < NB && rc == 0; b++) {
        tm_data_batch(s->d, 0, &rng, s->batch, s->seq, x, y);
        tm_forward(&m, x, y, s->batch, s->seq);
        if (tm_error(&m) || tm_backward(&m)) {
            fprintf(stderr, "keel study: %s\n", tm_error(&m));
            rc = -1;
            break;
        }
        tm_mlp_out_grad_norms(&m, g);
        tm_residual_norms(&m, rn);
        for (int l = 0; l < L; l++)
            gs[l] += g[l] / NB;
        for (int l = 0; l <= L; l++)
            rs[l] += rn[l] / NB;
    }
    free(g);
    free(rn);
    free(x);
    free(y);
    tm_destroy(&m);
    return rc;
}

/* ---- experiment 1: at initialization ------------------------------------------------------- */
static int study_exp1(study *s)
{
    fprintf(s->md, "## 1. At initialization: gradient and residual norms by depth (post-norm vs pre-norm)\n\n"
                   "**Claim** (Xiong et al. 2020): at initialization the gradient of the last layers' weights is large "
                   "for Post-LN and does not shrink with depth, while for Pre-LN it scales like 1/sqrt(L); with "
                   "Pre-LN the residual stream grows with depth.\n\n"
                   "**Measured**: LayerNorm, width %d, %d heads, seq %d, batch %d; the gradient norm of each block's "
                   "second MLP weight (W2) and the mean L2 norm of a token's residual vector entering each block, "
                   "averaged over 4 training batches, before any step.\n\n"
                   "| placement | depth L | W2 grad norm, last block | mean over blocks | last / first block | "
                   "residual norm, input -> output |\n|---|---|---|---|---|---|\n",
            s->width, s->heads, s->seq, s->batch);
    const int depths[] = {6, 12, 24, 48};
    double last[2][4];
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 4; k++) {
            int L = depths[k];
            double *gs = calloc((size_t)L, sizeof(double)), *rs = calloc((size_t)L + 1, sizeof(double));
            if (!gs || !rs || init_gradients(s, L, p, gs, rs)) {
                if (!gs || !rs)
                    fprintf(stderr, "keel study: out of memory\n");
                free(gs);
                free(rs);
                return -1;
            }
            char path[1200];
            snprintf(path, sizeof path, "%s/init_%s_L%d.csv", s->out, p ? "post" : "pre", L);
            FILE *f = fopen(path, "w");
            if (!f) {
                fprintf(stderr, "keel study: cannot write %s\n", path);
                free(gs);
                free(rs);
                return -1;
            }
            fprintf(f, "block,w2_grad_norm,residual_norm_in\n");
            double mean = 0;
            for (int l = 0; l <= L; l++) {
                if (l < L)
                    fprintf(f, "%d,%.6g,%.6g\n", l + 1, gs[l], rs[l]);
                else
                    fprintf(f, "%d,,%.6g\n", l + 1, rs[l]);
                if (l < L)
                    mean += gs[l] / L;
            }
            fclose(f);
            last[p][k] = gs[L - 1];
            fprintf(s->md, "| %s | %d | %.4g | %.4g | %.3g | %.3g -> %.3g |\n", p ? "post" : "pre", L, gs[L - 1], mean,
                    gs[L - 1] / gs[0], rs[0], rs[L]);
            printf("  init %-4s L=%-2d  W2 grad norm: last block %.4g, mean %.4g; residual norm %.3g -> %.3g\n",
                   p ? "post" : "pre", L, gs[L - 1], mean, rs[0], rs[L]);
            fflush(stdout);
            free(gs);
            free(rs);
        }
    double pre_slope = log(last[0][3] / last[0][0]) / log(48.0 / 6.0);
    double post_slope = log(last[1][3] / last[1][0]) / log(48.0 / 6.0);
    fprintf(s->md, "\nFrom depth 6 to 48 the last block's W2 gradient norm scales like L^%.2f with pre-norm "
                   "(the claim: L^-0.5) and like L^%.2f with post-norm (the claim: L^0, independent of depth); "
                   "at depth 48 post-norm's is %.1fx pre-norm's. %s\n\n",
            pre_slope, post_slope, last[1][3] / last[0][3],
            (pre_slope < -0.25 && fabs(post_slope) < fabs(pre_slope)) ? "This agrees with the claim."
                                                                       : "**This run disagrees with the claim in part** "
                                                                         "(see the numbers above).");
    fprintf(s->md, "![W2 gradient norm by block at initialization](init_grad.png)\n\n"
                   "![Residual-stream norm by depth at initialization](init_residual.png)\n\n");
    return 0;
}

/* ---- training runs ---------------------------------------------------------------------------- */
static int train_one(study *s, run_row *row)
{
    tr_opts o;
    tr_opts_default(&o);
    o.mc.layers = row->depth;
    o.mc.width = s->width;
    o.mc.heads = s->heads;
    o.mc.seq = s->seq;
    o.mc.norm = row->norm;
    o.mc.place = row->place;
    o.mc.layerscale = row->ls;
    o.batch = s->batch;
    o.steps = row->steps ? row->steps : s->steps;
    o.lr = row->lr;
    o.warmup = row->warmup;
    o.threads = s->threads;
    o.eval_every = s->eval_every;
    o.eval_batches = s->eval_batches;
    o.eval_seed = 0x5EED; /* the same validation batches in every run */
    o.seed = 1;
    o.progress = 0;
    char path[1300];
    snprintf(path, sizeof path, "%s/runs/%s.csv", s->out, row->label);
    o.log_path = path;
    tr_result r;
    double t0 = now_s();
    if (tr_run(&o, s->d, &r) != KEEL_OK) {
        fprintf(stderr, "keel study: %s: %s\n", row->label, tool_last_error());
        return -1;
    }
    row->final_train = r.final_train;
    row->final_val = r.final_val;
    row->nan_step = r.nan_step;
    row->tps = r.tokens_per_s;
    row->norm_share = r.seconds > 0 ? r.norm_seconds / r.seconds : 0;
    outcome(row, &r);
    /* a smoothed curve for the plots: exponential moving average of the train loss, and val */
    snprintf(path, sizeof path, "%s/runs/%s.dat", s->out, row->label);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "# step train_loss_ema val_loss\n");
        double ema = NAN;
        int vi = 0;
        for (int i = 0; i < r.steps_done; i++) {
            double l = r.train_loss[i];
            if (!isfinite(l))
                break;
            ema = isnan(ema) ? l : 0.9 * ema + 0.1 * l;
            if (vi < r.nval && r.val_step[vi] == i + 1)
                fprintf(f, "%d %.5f %.5f\n", i + 1, ema, r.val_loss[vi++]);
            else
                fprintf(f, "%d %.5f NaN\n", i + 1, ema);
        }
        fclose(f);
    }
    printf("  %-34s %-24s val %.3f  (%.0f tok/s, %.0fs)\n", row->label, row->outcome, row->final_val, row->tps,
           now_s() - t0);
    fflush(stdout);
    tr_result_free(&r);
    return 0;
}

static void label_of(run_row *r)
{
    char ls[32] = "";
    if (r->ls > 0)
        snprintf(ls, sizeof ls, "_ls%g", r->ls);
    snprintf(r->label, sizeof r->label, "%s_%s%s_L%d_lr%g_wu%d", tm_place_name(r->place), tm_norm_name(r->norm), ls,
             r->depth, r->lr, r->warmup);
}

static void row_md(FILE *md, const run_row *r, const char *name)
{
    fprintf(md, "| %s | %d | %g | %d | %d | %.3f | %.3f | %s |\n", name ? name : r->label, r->depth, r->lr,
            r->warmup, r->steps, r->final_train, r->final_val, r->outcome);
}

static const run_row *find_row(const run_row *rows, int from, int to, tm_norm n, tm_place p, int depth, float lr,
                               int warmup)
{
    for (int i = from; i < to; i++)
        if (rows[i].norm == n && rows[i].place == p && rows[i].depth == depth && rows[i].lr == lr &&
            rows[i].warmup == warmup && rows[i].ls == 0)
            return &rows[i];
    return NULL;
}

/* The quick study's training runs: pre and post at each depth and learning rate, RMSNorm only at
 * the deep end, and post-norm with warm-up at every depth (LayerNorm): its warm-up effect. */
static int study_exp2(study *s, run_row *rows, int *nrows)
{
    fprintf(s->md, "## 2. Training: post-norm vs pre-norm, and post-norm's warm-up\n\n"
                   "**Claim** (Xiong et al. 2020): Post-LN needs a learning-rate warm-up, and its trouble grows with "
                   "depth; Pre-LN trains without one.\n\n"
                   "**Measured** (a short version of the placement experiment; `keel study --stage A` runs the full "
                   "grid): width %d, %d heads, seq %d, batch %d, AdamW for the steps in the table (beta1 0.9, beta2 0.99, eps 1e-8, "
                   "weight decay 0.1, linear warm-up of 0 or %d steps, then cosine decay to 10%% of lr at the last "
                   "step, no gradient clipping), seed 1. Validation: the same %d batches (%d tokens) of the last "
                   "10%% of the text in every run, every %d steps; *plateau exit*: the first evaluated step with "
                   "validation loss below %.1f nats (the unigram entropy of the training split is %.3f).\n\n"
                   "| run | depth | lr | warm-up | steps | train loss (last 10%%) | val loss | outcome |\n"
                   "|---|---|---|---|---|---|---|---|\n",
            s->width, s->heads, s->seq, s->batch, s->warmups[1], s->eval_batches,
            s->eval_batches * s->batch * s->seq, s->eval_every, LEVEL, s->d->unigram_entropy);
    int first = *nrows;
    for (int di = 0; di < s->ndepths; di++)
        for (int wi = 0; wi < s->nwarm; wi++)
            for (int n = 0; n < 2; n++)
                for (int p = 0; p < 2; p++) {
                    if (n == 1 && s->depths[di] != s->deep)
                        continue; /* RMSNorm only at the deep end */
                    if (s->warmups[wi] > 0 && (n == 1 || p == 0))
                        continue; /* warm-up only for post-LN */
                    run_row *r = &rows[(*nrows)++];
                    memset(r, 0, sizeof *r);
                    r->norm = n ? TM_NORM_RMS : TM_NORM_LAYER;
                    r->place = p ? TM_POST : TM_PRE;
                    r->depth = s->depths[di];
                    r->lr = s->depth_lr[di];
                    r->steps = s->depth_steps[di];
                    r->warmup = s->warmups[wi];
                    label_of(r);
                    if (train_one(s, r))
                        return -1;
                    row_md(s->md, r, NULL);
                }
    /* the findings, from the numbers */
    fprintf(s->md, "\n");
    const int wu = s->warmups[1];
    for (int di = 0; di < s->ndepths; di++) {
        const int L = s->depths[di];
        const float lr = s->depth_lr[di];
        const run_row *p0 = find_row(rows, first, *nrows, TM_NORM_LAYER, TM_POST, L, lr, 0);
        const run_row *p1 = find_row(rows, first, *nrows, TM_NORM_LAYER, TM_POST, L, lr, wu);
        const run_row *q0 = find_row(rows, first, *nrows, TM_NORM_LAYER, TM_PRE, L, lr, 0);
        if (!p0 || !p1 || !q0)
            continue;
        fprintf(s->md, "- Depth %d, lr %g, %d steps (LayerNorm): post-norm %.3f without warm-up (%s), %.3f with %d "
                       "steps of it (%s); pre-norm without warm-up %.3f (%s).",
                L, lr, s->depth_steps[di], p0->final_val, p0->outcome, p1->final_val, wu, p1->outcome,
                q0->final_val, q0->outcome);
        double gap = p0->final_val - p1->final_val;
        if (isfinite(gap) && gap > 0)
            fprintf(s->md, " Warm-up lowers post-norm's final loss by %.3f nats: the effect Xiong et al. (2020) "
                           "report, reproduced (one seed).",
                    gap);
        else if (isfinite(gap))
            fprintf(s->md, " Warm-up does not lower post-norm's final loss here (%+.3f nats).", -gap);
        fprintf(s->md, "\n");
    }
    fprintf(s->md, "\n![Training loss, post vs pre](train_curves.png)\n\n");
    return 0;
}

static int study_exp3(study *s, run_row *rows, int *nrows, int *first3)
{
    fprintf(s->md, "## 3. At depth %d without warm-up: the alternatives\n\n"
                   "**Claims**: DeepNorm (Wang et al. 2022) x = LN(alpha x + G(x)) with alpha = (2L)^(1/4) = %.2f and "
                   "the FFN, value and output projections initialised scaled by beta = (8L)^(-1/4) = %.2f stabilises "
                   "post-norm; LayerScale (Touvron et al. 2021) with lambda initialised to 1e-5 at depth 24 lets deep "
                   "pre-norm stacks train; Peri-LN (Kim et al. 2025, 'sandwich') normalizes each sublayer's input and "
                   "output; DyT (Zhu et al. 2025) replaces the norm by gamma * tanh(alpha x) + beta; BatchNorm is shown for "
                   "contrast (it mixes positions and sequences of a batch, so a causal language model may cheat through "
                   "it in training; validation uses its running statistics); no norm at all.\n\n"
                   "**Measured**: LayerNorm unless named, lr %g, no warm-up, the settings of section 2. These runs "
                   "share this one setting rather than each method's published recipe (DeepNorm and LayerScale are "
                   "published with warm-up, LayerScale beside a pre-norm baseline with depth-scaled residual init, "
                   "DyT with a tuned alpha0): read them as a smoke test, not as a comparison of the methods.\n\n"
                   "| run | depth | lr | warm-up | steps | train loss (last 10%%) | val loss | outcome |\n"
                   "|---|---|---|---|---|---|---|---|\n",
            s->deep, pow(2.0 * s->deep, 0.25), pow(8.0 * s->deep, -0.25), s->hi_lr);
    struct { tm_norm n; tm_place p; float ls; const char *name; } v[] = {
        {TM_NORM_LAYER, TM_PRE, 0, "pre-LN"},
        {TM_NORM_LAYER, TM_POST, 0, "post-LN"},
        {TM_NORM_LAYER, TM_DEEPNORM, 0, "DeepNorm (LN)"},
        {TM_NORM_LAYER, TM_PRE, s->deep >= 24 ? 1e-5f : 0.1f, "pre-LN + LayerScale"},
        {TM_NORM_LAYER, TM_SANDWICH, 0, "sandwich / Peri-LN"},
        {TM_NORM_DYT, TM_PRE, 0, "DyT (pre)"},
        {TM_NORM_BATCH, TM_PRE, 0, "BatchNorm (pre)"},
        {TM_NORM_NONE, TM_PRE, 0, "no norm"},
    };
    *first3 = *nrows;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        run_row *r = &rows[(*nrows)++];
        memset(r, 0, sizeof *r);
        r->norm = v[i].n;
        r->place = v[i].p;
        r->ls = v[i].ls;
        r->depth = s->deep;
        r->lr = s->hi_lr;
        r->steps = s->steps;
        r->warmup = 0;
        label_of(r);
        /* reuse a run of section 2 with the same settings */
        int reused = 0;
        for (int j = 0; j < *first3; j++)
            if (!strcmp(rows[j].label, r->label)) {
                *r = rows[j];
                reused = 1;
            }
        if (!reused && train_one(s, r))
            return -1;
        r->name = v[i].name;
        row_md(s->md, r, v[i].name);
    }
    fprintf(s->md, "\n![Training loss at depth %d, no warm-up](alternatives.png)\n\n", s->deep);
    return 0;
}

static int study_exp4(study *s)
{
    fprintf(s->md, "## 4. Speed: time in normalization, LayerNorm vs RMSNorm\n\n"
                   "**Claim** (Zhang and Sennrich 2019): RMSNorm takes 7%%-64%% less running time than LayerNorm across "
                   "models, transformers at the low end; whole-model 1-10%% (Jiang et al. 2023).\n\n"
                   "**Measured**: pre-norm, 6 layers, width 128, 4 heads, seq 64, batch 16, %d threads, %d steps "
                   "after 3 warm-up steps; time inside keel's norm calls (forward and backward, the final norm "
                   "included) against the whole step (forward, backward, AdamW).\n\n"
                   "| norm | tokens/s (whole step) | ms per step | ms in norms per step | share of the step |\n"
                   "|---|---|---|---|---|\n", s->threads, s->quick ? 10 : 30);
    double nms[2] = {0, 0}, share = 0;
    for (int n = 0; n < 2; n++) {
        tr_opts o;
        tr_opts_default(&o);
        o.mc.layers = 6;
        o.mc.width = 128;
        o.mc.heads = 4;
        o.mc.seq = 64;
        o.mc.norm = n ? TM_NORM_RMS : TM_NORM_LAYER;
        o.batch = 16;
        o.steps = 33;
        o.threads = s->threads;
        o.eval_every = 0;
        o.eval_batches = 1;
        o.progress = 0;
        /* 3 untimed steps first: a separate short run of the same model warms the caches */
        tr_result r;
        o.steps = 3;
        if (tr_run(&o, s->d, &r) != KEEL_OK)
            return -1;
        tr_result_free(&r);
        o.steps = s->quick ? 10 : 30;
        if (tr_run(&o, s->d, &r) != KEEL_OK) {
            fprintf(stderr, "keel study: %s\n", tool_last_error());
            return -1;
        }
        double ms = 1e3 * r.seconds / r.steps_done, nm = 1e3 * r.norm_seconds / r.steps_done;
        nms[n] = nm;
        share = 100.0 * nm / ms;
        fprintf(s->md, "| %s | %.0f | %.1f | %.2f | %.1f%% |\n", n ? "RMSNorm" : "LayerNorm", r.tokens_per_s, ms, nm,
                100.0 * nm / ms);
        printf("  speed %-9s %.0f tokens/s, %.1f ms/step, %.2f ms in norms (%.1f%%)\n", n ? "RMSNorm" : "LayerNorm",
               r.tokens_per_s, ms, nm, 100.0 * nm / ms);
        tr_result_free(&r);
    }
    fprintf(s->md, "\nRMSNorm's norm time is %.0f%% %s LayerNorm's in this one run of %d steps (no repetitions, "
                   "so no interval: not evidence either way for the claim); the norms are %.1f%% of the step at "
                   "this width. The cost at realistic widths (768 to 4096) is not measured yet.\n\n",
            fabs(100.0 * (1.0 - nms[1] / nms[0])), nms[1] < nms[0] ? "less than" : "more than", s->quick ? 10 : 30,
            share);
    return 0;
}

/* ---- plots ------------------------------------------------------------------------------------ */
static void plots(study *s, const run_row *rows, int nrows, int first3)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/plots.gp", s->out);
    FILE *g = fopen(path, "w");
    if (!g)
        return;
    fprintf(g, "# gnuplot script of the study's plots: cd into this folder, then gnuplot plots.gp\n"
               "set terminal pngcairo noenhanced size 900,560 font 'sans,10'\nset datafile separator ','\nset grid\n"
               "set key outside right\n");
    const int depths[] = {6, 12, 24, 48};
    fprintf(g, "set output 'init_grad.png'\nset title 'At initialization: gradient norm of each block''s W2 (LayerNorm)'\n"
               "set xlabel 'relative depth: block / L (1 = the last block)'\nset ylabel '||dL/dW2||'\n"
               "set logscale y\nplot ");
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 4; k++)
            fprintf(g, "%s'init_%s_L%d.csv' every ::1 using ($1/%d.0):2 with linespoints dt %d lc %d pt %d "
                       "title '%s L=%d'",
                    p || k ? ", " : "", p ? "post" : "pre", depths[k], depths[k], p ? 1 : 2, k + 1, p ? 7 : 6,
                    p ? "post" : "pre", depths[k]);
    fprintf(g, "\nset output 'init_residual.png'\nset title 'At initialization: residual-stream norm entering each "
               "block (LayerNorm)'\nset xlabel 'relative depth: (block - 1) / L (1 = after the last block)'\n"
               "set ylabel 'mean ||x||'\nplot ");
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 4; k++)
            fprintf(g, "%s'init_%s_L%d.csv' every ::1 using (($1-1)/%d.0):3 with linespoints dt %d lc %d pt %d "
                       "title '%s L=%d'",
                    p || k ? ", " : "", p ? "post" : "pre", depths[k], depths[k], p ? 1 : 2, k + 1, p ? 7 : 6,
                    p ? "post" : "pre", depths[k]);
    fprintf(g, "\n");
    if (nrows > 0) {
        /* one panel per depth; colour: placement (light: RMSNorm), dashed: warm-up */
        fprintf(g, "unset logscale y\nset datafile separator whitespace\nset xlabel 'step'\n"
                   "set ylabel 'train loss (EMA 0.9)'\nset yrange [1.5:4.5]\nset key inside top right opaque\n"
                   "set terminal pngcairo noenhanced size %d,560 font 'sans,10'\nset output 'train_curves.png'\n"
                   "set multiplot layout 1,%d title 'Training loss by step: colour = placement, dashed = warm-up, "
                   "dotted = unigram entropy'\n",
                560 * s->ndepths, s->ndepths);
        for (int di = 0; di < s->ndepths; di++) {
            fprintf(g, "set title 'depth %d'\nplot %.4f with lines dt 3 lc rgb 'black' title 'unigram %.2f'",
                    s->depths[di], s->d->unigram_entropy, s->d->unigram_entropy);
            for (int i = 0; i < first3; i++) {
                const run_row *r = &rows[i];
                if (r->depth != s->depths[di])
                    continue;
                const char *col = r->place == TM_POST ? (r->norm == TM_NORM_RMS ? "#ff9896" : "#d62728")
                                                      : (r->norm == TM_NORM_RMS ? "#aec7e8" : "#1f77b4");
                char name[96];
                snprintf(name, sizeof name, "%s %s, lr %g, %s", tm_place_name(r->place),
                         r->norm == TM_NORM_RMS ? "RMSNorm" : "LayerNorm", r->lr,
                         r->warmup ? "warm-up" : "no warm-up");
                fprintf(g, ", 'runs/%s.dat' using 1:2 with lines dt %d lw 2 lc rgb '%s' title '%s'", r->label,
                        r->warmup ? 2 : 1, col, name);
            }
            fprintf(g, "\n");
        }
        fprintf(g, "unset multiplot\nset terminal pngcairo noenhanced size 1000,560 font 'sans,10'\n"
                   "set key outside right\nset output 'alternatives.png'\n"
                   "set title 'Depth %d, lr %g, no warm-up: the alternatives (names as in the table)'\nplot ",
                s->deep, s->hi_lr);
        /* distinct colours and dash types: runs stuck on the same plateau stay visible */
        static const char *const pal[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};
        for (int i = first3; i < nrows; i++)
            fprintf(g, "%s'runs/%s.dat' using 1:2 with lines lw %d dt %d lc rgb '%s' title '%s'",
                    i > first3 ? ", " : "", rows[i].label, i - first3 == 1 ? 4 : 2, 1 + (i - first3) % 4,
                    pal[(i - first3) % 8], rows[i].name ? rows[i].name : rows[i].label);
        fprintf(g, ", %.4f with lines dt 3 lc rgb 'black' title 'unigram %.2f'\n", s->d->unigram_entropy,
                s->d->unigram_entropy);
    }
    fclose(g);
    if (!s->have_gnuplot) {
        fprintf(s->md, "_gnuplot was not found: the PNGs were not drawn (scripts/study-deps.sh installs "
                       "gnuplot-nox; then run `gnuplot plots.gp` in this folder)._\n\n");
        return;
    }
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot plots.gp", s->out);
    if (system(cmd) != 0)
        fprintf(stderr, "keel study: gnuplot failed (the CSVs and plots.gp are in %s)\n", s->out);
}

static void usage(FILE *to)
{
    fprintf(to, "usage: keel study --quick [--out DIR] [--threads N] [--data FILE] [--steps N]\n"
                "       keel study [--stage A|B] [--budget-min N] [--seeds N] [--out DIR] [--threads N] [--data FILE]\n"
                "       keel study --report [--seeds N] [--out DIR] [--threads N] [--data FILE]\n\n"
                "The training study: normalization placement and choice, at initialization and in training.\n"
                "--quick: about 1 minute on two idle cores (make demo): the gradients at initialization, post-norm\n"
                "  vs pre-norm with post-norm's warm-up effect at depth 6, the alternatives, the norms' speed.\n"
                "  Default DIR: study-report-quick.\n"
                "--stage A: the placement experiment's grid (LayerNorm and RMSNorm x depth 6, 12, 24 x pre,\n"
                "  post x lr 3e-4, 1e-3, 3e-3 x warm-up 0, 200; 1,500 steps each), resumable: each finished run\n"
                "  is a file DIR/runs/A_*.run and runs already there are skipped, so repeated invocations\n"
                "  complete the grid (depth 6 first). --budget-min N: start no run expected to end after N\n"
                "  minutes. --seeds N: seeds 1..N of every cell (1). Then writes the report, as --report.\n"
                "--stage B: the seeds: at each depth and norm whose stage A post-norm runs are done, the lr\n"
                "  with the largest post-norm warm-up gap; seeds 2..N (--seeds, 4) of post without warm-up,\n"
                "  post with warm-up and pre without; resumable and budgeted as stage A. Then the report.\n"
                "  Plain `keel study` is --stage A without a budget. Default DIR: docs/study.\n"
                "--report: DIR/report.md from the run files on disk (no training; the initialization\n"
                "  measurement takes seconds), with the grid's done and missing cells and the verdicts.\n");
}

/* --stage / --report: section 1 and the stage's section from the run files, into DIR/report.md. */
static int stage_report(study *s)
{
    char path[1200], tmp[1300];
    snprintf(path, sizeof path, "%s/report.md", s->out);
    snprintf(tmp, sizeof tmp, "%s/report.md.tmp", s->out);
    s->md = fopen(tmp, "w");
    if (!s->md) {
        fprintf(stderr, "keel study: cannot write %s\n", tmp);
        return -1;
    }
    const tm_data *d = s->d;
    fprintf(s->md, "# What normalization does: a small GPT trained with keel\n\n"
                   "Made by `%s` (keel %s). Corpus: %s, %zu characters, vocabulary %d; first 90%% train, last "
                   "10%% validation; unigram entropy of the training split %.3f nats/character. A decoder-only "
                   "character transformer in C (train/): token and position embeddings, causal multi-head "
                   "attention, GELU MLP (4x), tied head, Xavier-normal initialisation of the projections, AdamW; "
                   "matrix products through OpenBLAS, every normalization through keel. Every number below was "
                   "measured by keel; section 2 is written from the run files in runs/ (A_*.run: the recipe, the "
                   "loss curve, the results), whichever sessions made them.\n\n",
            s->cmdline, keel_version_string(), d->path, d->n, d->vocab, d->unigram_entropy);
    printf("1. at initialization\n");
    if (study_exp1(s)) {
        fclose(s->md);
        remove(tmp);
        return -1;
    }
    plots(s, NULL, 0, 0);
    printf("2. stage A, from %s/runs/\n", s->out);
    int found = study_stage_report(s->md, s->out, s->nseeds, s->have_gnuplot);
    fprintf(s->md,
            "## What this report does not establish yet\n\n"
            "- Seeds: stage A has seed 1 only; stage B (`keel study --stage B --seeds 4`: seeds 2-4 of post without "
            "warm-up, post with warm-up and pre without, at each depth's lr with the largest post-norm warm-up gap) "
            "gives the spread shown in the Seeds table, as far as it has run. Until then every verdict above rests "
            "on one seed.\n"
            "- Width: the width-256 check of the placement result.\n"
            "- The alternatives (DeepNorm, LayerScale, DyT, sandwich, BatchNorm) on their published recipes; "
            "`keel study --quick` shows them on one shared setting only.\n"
            "- BatchNorm's batch-size dependence, frozen norms when fine-tuning, eps in bf16/fp16, unusual inputs, "
            "and RMSNorm vs LayerNorm cost at widths 768-4096.\n"
            "- The initialization measurement with several init seeds and a fitted slope with its interval "
            "(section 1 has one init seed).\n\n");
    if (fclose(s->md) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "keel study: cannot write %s\n", path);
        remove(tmp);
        return -1;
    }
    printf("report: %s (%d stage A runs found)\n", path, found);
    return 0;
}

/* --stage A or B (train the missing runs within the budget, then the report); stage 0: --report
 * alone. */
static int stage_main(study *s, const char *out, const char *data, int stage, int budget_min)
{
    /* section 1 at stage A's model size */
    s->width = 64, s->heads = 4, s->seq = 32, s->batch = 8;
    snprintf(s->out, sizeof s->out, "%s", out ? out : "docs/study");
    char sub[1200];
    snprintf(sub, sizeof sub, "%s/runs", s->out);
    if (mkdirs(sub)) {
        fprintf(stderr, "keel study: cannot create %s: %s\n", sub, strerror(errno));
        return 1;
    }
    s->have_gnuplot = system("command -v gnuplot >/dev/null 2>&1") == 0;
    tm_data d;
    if (tm_data_load(&d, data) != KEEL_OK) {
        fprintf(stderr, "keel study: %s\n", tool_last_error());
        return 1;
    }
    s->d = &d;
    double t0 = now_s();
    int rc = 0;
    if (stage == 'A')
        rc = study_stage_run(s->out, s->nseeds, 60.0 * budget_min, s->threads, &d) ? 1 : 0;
    else if (stage == 'B')
        rc = study_stage_b_run(s->out, s->nseeds, 60.0 * budget_min, s->threads, &d) ? 1 : 0;
    /* the report also after a failed run: it shows what is on disk */
    if (stage_report(s))
        rc = 1;
    printf("keel study: %.0f s\n", now_s() - t0);
    tm_data_free(&d);
    return rc;
}

int keel_cmd_study(int argc, char **argv)
{
    study s;
    memset(&s, 0, sizeof s);
    s.threads = 2;
    const char *out = NULL, *data = NULL;
    int steps = 0, stage = 0, report = 0, budget_min = 0;
    s.nseeds = 0; /* 0: not given */
    size_t at = 0;
    for (int i = 0; i < argc && at < sizeof s.cmdline - 100; i++)
        at += (size_t)snprintf(s.cmdline + at, sizeof s.cmdline - at, "%s%s", i ? " " : "keel ", argv[i]);
    const char *stage_arg = NULL;
    const keel_opt opts[] = {
        {"--quick", KEEL_OPT_FLAG, &s.quick, 0, 0, 0},
        {"--report", KEEL_OPT_FLAG, &report, 0, 0, 0},
        {"--out", KEEL_OPT_STRING, &out, 0, 0, 0},
        {"--data", KEEL_OPT_STRING, &data, 0, 0, 0},
        {"--threads", KEEL_OPT_INT, &s.threads, 1, KEEL_ARG_MAX_THREADS, 0},
        {"--steps", KEEL_OPT_INT, &steps, 1, TR_MAX_STEPS, 0},
        {"--budget-min", KEEL_OPT_INT, &budget_min, 1, 100000, 0},
        {"--seeds", KEEL_OPT_INT, &s.nseeds, 1, 8, 0},
        {"--stage", KEEL_OPT_STRING, &stage_arg, 0, 0, 0},
    };
    const int pr = keel_opts_parse("study", argc, argv, opts, sizeof opts / sizeof opts[0], usage);
    if (pr != KEEL_OPTS_OK)
        return pr == KEEL_OPTS_HELP ? 0 : 2;
    if (stage_arg) {
        if (strcmp(stage_arg, "A") && strcmp(stage_arg, "B")) {
            fprintf(stderr, "keel study: --stage '%s': use A (the grid) or B (the seeds)\n",
                    stage_arg);
            return 2;
        }
        stage = stage_arg[0];
    }
    if (s.quick && (stage || report || budget_min || s.nseeds)) {
        fprintf(stderr, "keel study: --quick does not take --stage, --report, --budget-min or --seeds\n");
        return 2;
    }
    if (!s.quick && steps) {
        fprintf(stderr, "keel study: --steps is an option of --quick (stage A's recipe has 1,500 steps)\n");
        return 2;
    }
    if (tr_no_cblas("study"))
        return 1;
    if (!s.nseeds)
        s.nseeds = stage == 'B' ? 4 : 1;
    if (stage == 'B' && s.nseeds < 2) {
        fprintf(stderr, "keel study: --stage B runs seeds 2..N: give --seeds 2 or more\n");
        return 2;
    }
    if (!s.quick)
        /* --report alone trains nothing; plain `keel study` is --stage A */
        return stage_main(&s, out, data, report && !stage ? 0 : (stage ? stage : 'A'), budget_min);
    /* --quick. Depth 6 at lr 2e-3 for 400 steps: post-norm stays on the plateau without warm-up
     * and leaves it with 100 steps of warm-up (measured: validation 3.31 vs 2.70 nats; at 200
     * steps or width 32 with lr 1e-3 the gap was 0.04-0.2); depth 24 at 3e-3 for 200 steps. */
    s.width = 32, s.heads = 2, s.seq = 32, s.batch = 8, s.steps = 200;
    s.depths[0] = 6, s.depths[1] = 24, s.ndepths = 2;
    s.depth_lr[0] = 2e-3f, s.depth_lr[1] = 3e-3f;
    s.depth_steps[0] = 400, s.depth_steps[1] = 200;
    s.warmups[0] = 0, s.warmups[1] = 100, s.nwarm = 2;
    s.eval_every = 50, s.eval_batches = 8;
    if (steps)
        s.steps = s.depth_steps[0] = s.depth_steps[1] = steps;
    s.deep = 24;
    s.hi_lr = 3e-3f;
    snprintf(s.out, sizeof s.out, "%s", out ? out : "study-report-quick");
    char sub[1200];
    snprintf(sub, sizeof sub, "%s/runs", s.out);
    if (mkdirs(sub)) {
        fprintf(stderr, "keel study: cannot create %s: %s\n", sub, strerror(errno));
        return 1;
    }
    s.have_gnuplot = system("command -v gnuplot >/dev/null 2>&1") == 0;
    tm_data d;
    if (tm_data_load(&d, data) != KEEL_OK) {
        fprintf(stderr, "keel study: %s\n", tool_last_error());
        return 1;
    }
    s.d = &d;
    char path[1200];
    snprintf(path, sizeof path, "%s/report.md", s.out);
    s.md = fopen(path, "w");
    if (!s.md) {
        fprintf(stderr, "keel study: cannot write %s\n", path);
        tm_data_free(&d);
        return 1;
    }
    double t0 = now_s();
    printf("keel study%s: corpus %s (%zu characters, vocabulary %d, unigram entropy %.3f nats), %d threads\n",
           s.quick ? " --quick" : "", d.path, d.n, d.vocab, d.unigram_entropy, s.threads);
    fprintf(s.md, "# What normalization does: a small GPT trained with keel\n\n"
                  "Made by `%s` (keel %s). Corpus: %s, %zu characters, vocabulary %d; first 90%% train, last 10%% "
                  "validation; unigram entropy of the training split %.3f nats/character. A decoder-only character "
                  "transformer in C (train/): token and position embeddings, causal multi-head attention, GELU MLP "
                  "(4x), tied head, Xavier-normal initialisation of the projections, AdamW; matrix products through "
                  "OpenBLAS, every normalization through keel. %d threads. Every number below was measured by this "
                  "run; the runs' CSV logs are in runs/ (step, lr, train and validation loss, gradient norm, "
                  "per-layer gradient norms, residual-stream norm by depth).\n\n",
            s.cmdline, keel_version_string(), d.path, d.n, d.vocab, d.unigram_entropy, s.threads);
    int rc = 1;
    run_row *rows = calloc(128, sizeof(run_row));
    int nrows = 0, first3 = 0;
    printf("1. at initialization\n");
    if (study_exp1(&s))
        goto done;
    printf("2. training, post vs pre, and post-norm's warm-up\n");
    if (study_exp2(&s, rows, &nrows))
        goto done;
    printf("3. depth %d without warm-up: the alternatives\n", s.deep);
    if (study_exp3(&s, rows, &nrows, &first3))
        goto done;
    printf("4. speed\n");
    if (study_exp4(&s))
        goto done;
    plots(&s, rows, nrows, first3);
    fprintf(s.md, "---\nWall time of the study: %.0f s.\n", now_s() - t0);
    rc = 0;
    /* the table on the terminal */
    printf("\n%-38s %6s %7s %7s  %s\n", "run", "depth", "train", "val", "outcome");
    for (int i = 0; i < nrows; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++)
            dup |= !strcmp(rows[j].label, rows[i].label);
        if (!dup)
            printf("%-38s %6d %7.3f %7.3f  %s\n", rows[i].label, rows[i].depth, rows[i].final_train, rows[i].final_val,
                   rows[i].outcome);
    }
    printf("\nunigram entropy %.3f nats; study took %.0f s\nreport: %s/report.md\n", d.unigram_entropy,
           now_s() - t0, s.out);
done:
    fclose(s.md);
    free(rows);
    tm_data_free(&d);
    return rc;
}
