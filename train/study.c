/* keel study: the training study. Runs the experiments of issue 7 and writes a report folder
 * (report.md, PNG plots by gnuplot, the CSVs beside them):
 *  1. at initialization, post-norm vs pre-norm at several depths: the gradient norm of each
 *     block's last MLP weight and the residual-stream norm by depth (Xiong et al. 2020);
 *  2. training, post vs pre, LayerNorm and RMSNorm, by depth, learning rate and warm-up;
 *  3. at the deepest depth without warm-up: DeepNorm, LayerScale, sandwich (Peri-LN), BatchNorm,
 *     DyT and no norm beside pre and post;
 *  4. speed: time in normalization per step, LayerNorm vs RMSNorm, and the step's tokens/s. */
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
#include "trainer.h"

typedef struct study {
    int quick, threads, width, heads, seq, batch, steps, eval_every, eval_batches;
    int depths[4], ndepths;
    float lrs[2];
    int nlrs;
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
    int depth, warmup;
    float lr, ls;
    double final_train, final_val, tps, norm_share;
    int nan_step;
    const char *verdict;
} run_row;

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

static const char *verdict(const study *s, const tr_result *r)
{
    if (r->nan_step >= 0)
        return "diverged (NaN)";
    if (!(r->final_val < log((double)r->vocab) + 0.5))
        return "diverged (loss blew up)";
    if (!(r->final_val < s->d->unigram_entropy - 0.05))
        return "stuck at unigram";
    return "trains";
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
    o.steps = s->steps;
    o.lr = row->lr;
    o.warmup = row->warmup;
    o.threads = s->threads;
    o.eval_every = s->eval_every;
    o.eval_batches = s->eval_batches;
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
    row->verdict = verdict(s, &r);
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
    printf("  %-34s %-17s val %.3f  (%.0f tok/s, %.0fs)\n", row->label, row->verdict, row->final_val, row->tps,
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
    fprintf(md, "| %s | %d | %g | %d | %.3f | %.3f | %s |\n", name ? name : r->label, r->depth, r->lr, r->warmup,
            r->final_train, r->final_val, r->verdict);
}

static int study_exp2(study *s, run_row *rows, int *nrows)
{
    fprintf(s->md, "## 2. Training: post-norm vs pre-norm, LayerNorm and RMSNorm, by depth, learning rate and warm-up\n\n"
                   "**Claim** (Xiong et al. 2020): Post-LN needs a learning-rate warm-up, and its trouble grows with "
                   "depth; Pre-LN trains without one. At this scale post-norm's trouble should be mild at 8 layers and "
                   "show at 24+ with learning rates near 1e-3 and no warm-up (unverified before this run).\n\n"
                   "**Measured**: width %d, %d heads, seq %d, batch %d, %d AdamW steps (beta2 0.99, weight decay 0.1, "
                   "cosine decay to 10%%, no gradient clipping), seed 1. A run *diverged* if its loss became NaN or "
                   "infinite, or ended above ln(vocabulary) + 0.5 (worse than a uniform guess); it is *stuck* if its final validation loss is not below the corpus's unigram entropy "
                   "(%.3f nats, computed from the training split) minus 0.05. Validation loss: %d batches of the last "
                   "10%% of the text.\n\n"
                   "| run | depth | lr | warm-up | train loss (last 10%%) | val loss | verdict |\n|---|---|---|---|---|---|---|\n",
            s->width, s->heads, s->seq, s->batch, s->steps, s->d->unigram_entropy, s->eval_batches);
    int first = *nrows;
    for (int di = 0; di < s->ndepths; di++)
        for (int li = 0; li < s->nlrs; li++)
            for (int wi = 0; wi < s->nwarm; wi++)
                for (int n = 0; n < 2; n++)
                    for (int p = 0; p < 2; p++) {
                        if (s->quick && n == 1 && s->depths[di] != s->deep)
                            continue; /* quick: RMSNorm only at the deep end */
                        if (s->quick && s->warmups[wi] > 0 && (n == 1 || p == 0 || s->depths[di] != s->deep))
                            continue; /* quick: warm-up only for post-LN at the deep end */
                        run_row *r = &rows[(*nrows)++];
                        memset(r, 0, sizeof *r);
                        r->norm = n ? TM_NORM_RMS : TM_NORM_LAYER;
                        r->place = p ? TM_POST : TM_PRE;
                        r->depth = s->depths[di];
                        r->lr = s->lrs[li];
                        r->warmup = s->warmups[wi];
                        label_of(r);
                        if (train_one(s, r))
                            return -1;
                        row_md(s->md, r, NULL);
                    }
    /* the verdicts, summed up */
    int post_bad = 0, post_n = 0, pre_bad = 0, pre_n = 0;
    double gap_deep = 0;
    int gap_n = 0;
    for (int i = first; i < *nrows; i++) {
        int bad = strcmp(rows[i].verdict, "trains") != 0;
        if (rows[i].place == TM_POST) {
            post_bad += bad;
            post_n++;
        } else {
            pre_bad += bad;
            pre_n++;
        }
        if (rows[i].place == TM_POST && rows[i].depth == s->deep && rows[i].warmup == 0)
            for (int j = first; j < *nrows; j++)
                if (rows[j].place == TM_PRE && rows[j].norm == rows[i].norm && rows[j].depth == rows[i].depth &&
                    rows[j].lr == rows[i].lr && rows[j].warmup == 0 && isfinite(rows[i].final_val) &&
                    isfinite(rows[j].final_val)) {
                    gap_deep += rows[i].final_val - rows[j].final_val;
                    gap_n++;
                }
    }
    fprintf(s->md, "\nPost-norm runs that diverged or got stuck: %d of %d; pre-norm: %d of %d. ", post_bad, post_n,
            pre_bad, pre_n);
    if (gap_n)
        fprintf(s->md, "At depth %d without warm-up, post-norm's final validation loss is on average %.3f nats %s "
                       "pre-norm's (same norm and learning rate). ",
                s->deep, fabs(gap_deep / gap_n), gap_deep > 0 ? "above" : "below");
    fprintf(s->md, "%s\n\n![Training loss, post vs pre](train_curves.png)\n\n",
            (post_bad > pre_bad || gap_deep > 0.02 * (gap_n ? gap_n : 1))
                ? "This agrees with the claim: post-norm is the one in trouble at depth."
                : "**This run does not show the claimed difference** at this scale and step count.");
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
                   "**Measured**: LayerNorm unless named, lr %g, no warm-up, the settings of section 2.\n\n"
                   "| run | depth | lr | warm-up | train loss (last 10%%) | val loss | verdict |\n|---|---|---|---|---|---|---|\n",
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
    double nms[2] = {0, 0};
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
        fprintf(s->md, "| %s | %.0f | %.1f | %.2f | %.1f%% |\n", n ? "RMSNorm" : "LayerNorm", r.tokens_per_s, ms, nm,
                100.0 * nm / ms);
        printf("  speed %-9s %.0f tokens/s, %.1f ms/step, %.2f ms in norms (%.1f%%)\n", n ? "RMSNorm" : "LayerNorm",
               r.tokens_per_s, ms, nm, 100.0 * nm / ms);
        tr_result_free(&r);
    }
    fprintf(s->md, "\nRMSNorm's norm time is %.0f%% %s LayerNorm's here. keel's LayerNorm and RMSNorm are both "
                   "memory-bound kernels, so the arithmetic RMSNorm saves (the mean) costs little; and at this model "
                   "size the matrix products dominate the step, so either norm is a small share of it.\n\n",
            fabs(100.0 * (1.0 - nms[1] / nms[0])), nms[1] < nms[0] ? "less than" : "more than");
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
               "set xlabel 'block (1 = first)'\nset ylabel '||dL/dW2||'\nset logscale y\nplot ");
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 4; k++)
            fprintf(g, "%s'init_%s_L%d.csv' every ::1 using 1:2 with linespoints dt %d lc %d pt %d title '%s L=%d'",
                    p || k ? ", " : "", p ? "post" : "pre", depths[k], p ? 1 : 2, k + 1, p ? 7 : 6, p ? "post" : "pre",
                    depths[k]);
    fprintf(g, "\nset output 'init_residual.png'\nset title 'At initialization: residual-stream norm entering each "
               "block (LayerNorm)'\nset xlabel 'depth (block index; last point: after the last block)'\n"
               "set ylabel 'mean ||x||'\nplot ");
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 4; k++)
            fprintf(g, "%s'init_%s_L%d.csv' every ::1 using 1:3 with linespoints dt %d lc %d pt %d title '%s L=%d'",
                    p || k ? ", " : "", p ? "post" : "pre", depths[k], p ? 1 : 2, k + 1, p ? 7 : 6, p ? "post" : "pre",
                    depths[k]);
    fprintf(g, "\nunset logscale y\nset datafile separator whitespace\nset xlabel 'step'\n"
               "set ylabel 'train loss (EMA 0.9)'\nset yrange [1.5:4.5]\n");
    fprintf(g, "set output 'train_curves.png'\nset title 'Training: post (solid) vs pre (dashed); dotted: unigram entropy'\nplot ");
    int first = 1;
    for (int i = 0; i < first3; i++) {
        fprintf(g, "%s'runs/%s.dat' using 1:2 with lines dt %d lw 1.5 title '%s'", first ? "" : ", ", rows[i].label,
                rows[i].place == TM_POST ? 1 : 2, rows[i].label);
        first = 0;
    }
    fprintf(g, ", %.4f with lines dt 3 lc rgb 'black' title 'unigram %.2f'\n", s->d->unigram_entropy,
            s->d->unigram_entropy);
    fprintf(g, "set output 'alternatives.png'\nset title 'Depth %d, lr %g, no warm-up: the alternatives'\nplot ",
            s->deep, s->hi_lr);
    for (int i = first3; i < nrows; i++)
        fprintf(g, "%s'runs/%s.dat' using 1:2 with lines lw 1.5 title '%s'", i > first3 ? ", " : "", rows[i].label,
                rows[i].label);
    fprintf(g, ", %.4f with lines dt 3 lc rgb 'black' title 'unigram %.2f'\n", s->d->unigram_entropy,
            s->d->unigram_entropy);
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
    fprintf(to, "usage: keel study [--quick] [--out DIR] [--threads N] [--data FILE] [--steps N]\n\n"
                "Runs the training study (normalization placement and choice, at initialization and in\n"
                "training, and its speed) and writes DIR/report.md with PNG plots (gnuplot) and CSVs.\n"
                "--quick: a few minutes on two cores (smaller model, fewer runs); the full study takes\n"
                "longer (see docs/study/). Default DIR: study-report (study-report-quick with --quick).\n");
}

int keel_cmd_study(int argc, char **argv)
{
    study s;
    memset(&s, 0, sizeof s);
    s.threads = 2;
    const char *out = NULL, *data = NULL;
    int steps = 0;
    size_t at = 0;
    for (int i = 0; i < argc && at < sizeof s.cmdline - 100; i++)
        at += (size_t)snprintf(s.cmdline + at, sizeof s.cmdline - at, "%s%s", i ? " " : "keel ", argv[i]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quick")) {
            s.quick = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "keel study: unknown option or missing value: '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--threads")) bad = keel_arg_int("study", a, v, 1, KEEL_ARG_MAX_THREADS, &s.threads);
        else if (!strcmp(a, "--steps")) bad = keel_arg_int("study", a, v, 1, TR_MAX_STEPS, &steps);
        else {
            fprintf(stderr, "keel study: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (tr_no_cblas("study"))
        return 1;
    if (s.quick) {
        s.width = 32, s.heads = 2, s.seq = 32, s.batch = 8, s.steps = 200;
        s.depths[0] = 6, s.depths[1] = 24, s.ndepths = 2;
        s.lrs[0] = 3e-3f, s.nlrs = 1;
        s.warmups[0] = 0, s.warmups[1] = 100, s.nwarm = 2;
        s.eval_every = 100, s.eval_batches = 4;
    } else {
        s.width = 64, s.heads = 4, s.seq = 32, s.batch = 8, s.steps = 600;
        s.depths[0] = 6, s.depths[1] = 12, s.depths[2] = 24, s.ndepths = 3;
        s.lrs[0] = 1e-3f, s.lrs[1] = 3e-3f, s.nlrs = 2;
        s.warmups[0] = 0, s.warmups[1] = 100, s.nwarm = 2;
        s.eval_every = 100, s.eval_batches = 8;
    }
    if (steps)
        s.steps = steps;
    s.deep = 24;
    s.hi_lr = 3e-3f;
    snprintf(s.out, sizeof s.out, "%s", out ? out : (s.quick ? "study-report-quick" : "study-report"));
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
    printf("2. training, post vs pre (%d steps each)\n", s.steps);
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
    printf("\n%-38s %6s %7s %7s  %s\n", "run", "depth", "train", "val", "verdict");
    for (int i = 0; i < nrows; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++)
            dup |= !strcmp(rows[j].label, rows[i].label);
        if (!dup)
            printf("%-38s %6d %7.3f %7.3f  %s\n", rows[i].label, rows[i].depth, rows[i].final_train, rows[i].final_val,
                   rows[i].verdict);
    }
    printf("\nunigram entropy %.3f nats; study took %.0f s\nreport: %s/report.md\n", d.unigram_entropy,
           now_s() - t0, s.out);
done:
    fclose(s.md);
    free(rows);
    tm_data_free(&d);
    return rc;
}
