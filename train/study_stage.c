/* keel study --stage A / --report (study_stage.h). The verdicts are computed from the numbers of
 * the run files: final validation loss, plateau exit (first step with validation below a fixed
 * level) and the set of learning rates at which a setting exits the plateau within the run. */
#define _POSIX_C_SOURCE 200809L
#include "study_stage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sweep.h"

enum { MAX_CELLS = 72 * 8 };
static const int DEPTHS[] = {6, 12, 24};
static const float LRS[] = {3e-4f, 1e-3f, 3e-3f}; /* ascending, for the tables */

int study_stage_run(const char *dir, int nseeds, double budget_s, int threads, tm_data *d)
{
    sw_recipe r;
    sw_recipe_stage_a(&r);
    sw_cell *cells = malloc(sizeof(sw_cell) * MAX_CELLS);
    if (!cells) {
        fprintf(stderr, "keel study: out of memory\n");
        return -1;
    }
    int n = sw_grid_stage_a(&r, nseeds, cells, MAX_CELLS), ran = 0, skipped = 0;
    printf("stage A: %d runs in the grid (%d seed%s), %d steps each, into %s/runs/; budget %s\n", n,
           nseeds, nseeds > 1 ? "s" : "", r.steps, dir, budget_s > 0 ? "set" : "none");
    if (budget_s > 0)
        printf("  budget: %.0f minutes\n", budget_s / 60);
    fflush(stdout);
    keel_status st = sw_run_grid(&r, cells, n, dir, budget_s, threads, d, 1, &ran, &skipped);
    free(cells);
    printf("stage A: %d runs trained now, %d already on disk, %d still missing\n", ran, skipped,
           n - ran - skipped);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel study: %s\n", tool_last_error());
        return -1;
    }
    return 0;
}

/* ---- the report ------------------------------------------------------------------------------ */
typedef struct grid {
    sw_recipe r;
    int nseeds, n, found;
    sw_cell cells[MAX_CELLS];
    sw_run *runs[MAX_CELLS]; /* NULL: missing */
} grid;

enum { MAX_SEEDS = 8 };

/* Every cell of stage A with seeds 1..MAX_SEEDS; the runs on disk read. 0, or -1 (memory). */
static int load(grid *g, const char *dir)
{
    sw_recipe_stage_a(&g->r);
    g->nseeds = MAX_SEEDS;
    g->n = sw_grid_stage_a(&g->r, MAX_SEEDS, g->cells, MAX_CELLS);
    for (int i = 0; i < g->n; i++) {
        char path[1400];
        sw_run_path(dir, &g->r, &g->cells[i], path, sizeof path);
        if (!sw_run_done(dir, &g->r, &g->cells[i]))
            continue;
        sw_run *u = malloc(sizeof *u);
        if (!u) {
            fprintf(stderr, "keel study: out of memory\n");
            for (int k = 0; k < i; k++)
                free(g->runs[k]);
            return -1;
        }
        if (sw_read_run(path, u) == KEEL_OK) {
            g->runs[i] = u;
            g->found++;
        } else {
            fprintf(stderr, "keel study: %s (left out)\n", tool_last_error());
            free(u);
        }
    }
    return 0;
}

static const sw_run *find(const grid *g, tm_norm nm, tm_place p, int depth, float lr, int wu,
                          int seed)
{
    for (int i = 0; i < g->n; i++) {
        const sw_cell *c = &g->cells[i];
        if (g->runs[i] && c->norm == nm && c->place == p && c->depth == depth && c->lr == lr &&
            c->warmup == wu && (int)c->seed == seed)
            return g->runs[i];
    }
    return NULL;
}

static const char *setting_name(tm_place p, int wu)
{
    if (p == TM_POST)
        return wu ? "post, warm-up" : "post, no warm-up";
    return wu ? "pre, warm-up" : "pre, no warm-up";
}

/* "2.464 / 400": final validation loss / plateau-exit step ("-": never; "NaN@s": diverged). */
static void cell_text(const sw_run *u, char *buf, size_t n)
{
    if (!u)
        snprintf(buf, n, "missing");
    else if (u->nan_step >= 0)
        snprintf(buf, n, "NaN at %d", u->nan_step);
    else if (u->level_step < 0)
        snprintf(buf, n, "%.3f / -", u->final_val);
    else
        snprintf(buf, n, "%.3f / %d", u->final_val, u->level_step);
}

/* The learning rates (bit k: LRS[k]) at which a setting exits the plateau; -1 if a run is missing.
 */
static int lr_set(const grid *g, tm_norm nm, tm_place p, int depth, int wu)
{
    int set = 0;
    for (int k = 0; k < 3; k++) {
        const sw_run *u = find(g, nm, p, depth, LRS[k], wu, 1);
        if (!u)
            return -1;
        if (u->nan_step < 0 && u->level_step >= 0)
            set |= 1 << k;
    }
    return set;
}

static void set_text(int set, char *buf, size_t n)
{
    size_t at = 0;
    buf[0] = 0;
    for (int k = 0; k < 3; k++)
        if (set >> k & 1)
            at += (size_t)snprintf(buf + at, n - at, "%s%g", at ? ", " : "", LRS[k]);
    if (!at)
        snprintf(buf, n, "none of the three");
}

static int popcount3(int s) { return (s & 1) + (s >> 1 & 1) + (s >> 2 & 1); }

static void plots(FILE *md, const grid *g, const char *dir, int have_gnuplot)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/stageA.gp", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "keel study: cannot write %s\n", path);
        return;
    }
    const int wu = sw_warmup_steps(&g->r);
    fprintf(
        f,
        "# gnuplot script of the stage A figures (keel study --report): cd into this folder, then "
        "gnuplot stageA.gp\nset terminal pngcairo noenhanced size 1500,1050 font 'sans,10'\nset "
        "grid\n"
        "set xrange [0:%d]\nset yrange [1.5:4.5]\n",
        g->r.steps);
    for (int ni = 0; ni < 2; ni++) {
        tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
        fprintf(f,
                "set output 'stageA_%s.png'\nset multiplot layout 3,3 title '%s, width %d, %d "
                "steps: train "
                "loss (mean of %d steps) by step; colour: placement, dashed: warm-up %d; dotted: "
                "level %.1f'\n",
                tm_norm_name(nm), ni ? "RMSNorm" : "LayerNorm", g->r.width, g->r.steps,
                g->r.curve_every, wu, g->r.level);
        for (int li = 2; li >= 0; li--)
            for (int di = 0; di < 3; di++) {
                fprintf(f,
                        "set title 'depth %d, lr %g'\nset xlabel 'step'\nset ylabel 'train loss'\n",
                        DEPTHS[di], LRS[li]);
                fprintf(f, "set key inside top right opaque\n"); /* each panel: its own runs */
                fprintf(f, "plot %g with lines dt 3 lc rgb 'black' title 'level %.1f'", g->r.level,
                        g->r.level);
                for (int p = 0; p < 2; p++)
                    for (int w = 0; w < 2; w++) {
                        tm_place pl = p ? TM_PRE : TM_POST;
                        sw_cell c = {nm, pl, DEPTHS[di], w ? wu : 0, LRS[li], 1};
                        char name[160];
                        sw_cell_name(&g->r, &c, name, sizeof name);
                        if (!find(g, nm, pl, DEPTHS[di], LRS[li], w ? wu : 0, 1))
                            continue;
                        fprintf(f,
                                ", 'runs/%s.run' using 1:2 with lines lw 2 dt %d lc rgb '%s' title "
                                "'%s'",
                                name, w ? 2 : 1, p ? "#1f77b4" : "#d62728", setting_name(pl, w));
                    }
                fprintf(f, "\n");
            }
        fprintf(f, "unset multiplot\n");
    }
    fclose(f);
    fprintf(md, "![Stage A, LayerNorm](stageA_layernorm.png)\n\n![Stage A, "
                "RMSNorm](stageA_rmsnorm.png)\n\n");
    if (!have_gnuplot) {
        fprintf(md, "_gnuplot was not found: the PNGs were not drawn (scripts/study-deps.sh "
                    "installs gnuplot-nox; "
                    "then run `gnuplot stageA.gp` in this folder)._\n\n");
        return;
    }
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot stageA.gp", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "keel study: gnuplot failed on %s/stageA.gp\n", dir);
}

/* Cells with two or more seeds on disk (--seeds N): mean and range of the final validation loss
 * and of the plateau-exit step over the seeds. */
static void seeds_table(FILE *md, const grid *g)
{
    if (g->nseeds < 2)
        return;
    fprintf(
        md,
        "Seeds (cells with 2 or more seeds on disk): final validation loss and plateau-exit step, "
        "mean [min, max] over seeds.\n\n| norm | setting | depth | lr | seeds | final val | "
        "plateau exit |\n|---|---|---|---|---|---|---|\n");
    const int wu = sw_warmup_steps(&g->r);
    int rows = 0;
    for (int ni = 0; ni < 2; ni++)
        for (int p = 0; p < 2; p++)
            for (int w = 0; w < 2; w++)
                for (int di = 0; di < 3; di++)
                    for (int li = 0; li < 3; li++) {
                        tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
                        tm_place pl = p ? TM_PRE : TM_POST;
                        int n = 0, nexit = 0;
                        double sum = 0, lo = INFINITY, hi = -INFINITY, esum = 0;
                        int elo = 1 << 30, ehi = -1;
                        for (int sd = 1; sd <= g->nseeds; sd++) {
                            const sw_run *u = find(g, nm, pl, DEPTHS[di], LRS[li], w ? wu : 0, sd);
                            if (!u || u->nan_step >= 0)
                                continue;
                            n++;
                            sum += u->final_val;
                            lo = fmin(lo, u->final_val);
                            hi = fmax(hi, u->final_val);
                            if (u->level_step >= 0) {
                                nexit++;
                                esum += u->level_step;
                                elo = u->level_step < elo ? u->level_step : elo;
                                ehi = u->level_step > ehi ? u->level_step : ehi;
                            }
                        }
                        if (n < 2)
                            continue;
                        char ex[64] = "never";
                        if (nexit)
                            snprintf(ex, sizeof ex, "%.0f [%d, %d] (%d of %d exit)", esum / nexit,
                                     elo, ehi, nexit, n);
                        fprintf(md, "| %s | %s | %d | %g | %d | %.3f [%.3f, %.3f] | %s |\n",
                                ni ? "RMSNorm" : "LayerNorm", setting_name(pl, w), DEPTHS[di],
                                LRS[li], n, sum / n, lo, hi, ex);
                        rows++;
                    }
    if (!rows)
        fprintf(md, "| (no cell has two seeds yet: `keel study --stage B --seeds 4`) | | | | | | "
                    "|\n");
    fprintf(md, "\n");
}

static void verdicts(FILE *md, const grid *g)
{
    const int wu = sw_warmup_steps(&g->r);
    fprintf(
        md,
        "### Verdicts, computed from the runs above\n\n"
        "A setting's *plateau-exit range* is the set of grid learning rates at which its "
        "validation loss "
        "falls below %.1f nats within the %d steps (no NaN). The prediction holds at a depth when "
        "post-norm's range with warm-up contains its range without and is larger, and pre-norm's "
        "range "
        "is the same with and without; it is not tested at a depth where post-norm leaves the "
        "plateau at no lr of the grid, with warm-up or without.\n\n",
        g->r.level, g->r.steps);
    for (int ni = 0; ni < 2; ni++)
        for (int di = 0; di < 3; di++) {
            tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
            const char *nn = ni ? "RMSNorm" : "LayerNorm";
            int p0 = lr_set(g, nm, TM_POST, DEPTHS[di], 0),
                p1 = lr_set(g, nm, TM_POST, DEPTHS[di], wu);
            int q0 = lr_set(g, nm, TM_PRE, DEPTHS[di], 0),
                q1 = lr_set(g, nm, TM_PRE, DEPTHS[di], wu);
            if (p0 < 0 || p1 < 0 || q0 < 0 || q1 < 0) {
                fprintf(md, "- %s, depth %d: not all 12 runs are done yet; no verdict.\n", nn,
                        DEPTHS[di]);
                continue;
            }
            char a[64], b[64], c[64], e[64];
            set_text(p0, a, sizeof a);
            set_text(p1, b, sizeof b);
            set_text(q0, c, sizeof c);
            set_text(q1, e, sizeof e);
            int widens = (p1 & p0) == p0 && popcount3(p1) > popcount3(p0);
            int same_pre = q0 == q1;
            /* post-norm trains at no lr of the grid either way: the grid lies above its
             * trainable range at this depth, and the prediction is not tested there */
            int untested = p0 == 0 && p1 == 0;
            fprintf(md,
                    "- %s, depth %d: post-norm exits the plateau at lr {%s} without warm-up and "
                    "{%s} with it "
                    "(%s); pre-norm at {%s} without and {%s} with (%s). %s",
                    nn, DEPTHS[di], a, b,
                    widens ? "warm-up widens the range"
                           : (p0 == p1 ? "the same range" : "not a wider range"),
                    c, e, same_pre ? "the same range" : "a different range",
                    widens && same_pre ? "**Agrees with the prediction.**"
                    : untested
                        ? "**Not tested** at this depth: post-norm leaves the plateau at no lr of "
                          "the grid, with or without warm-up (its trainable range, if any, lies "
                          "below the grid's smallest lr)."
                        : "**Disagrees with the prediction** at this depth (one seed).");
            /* the plateau exit moves within the range too: say where */
            fprintf(md, " Post-norm's plateau exit without -> with warm-up:");
            for (int k = 0; k < 3; k++) {
                const sw_run *u0 = find(g, nm, TM_POST, DEPTHS[di], LRS[k], 0, 1);
                const sw_run *u1 = find(g, nm, TM_POST, DEPTHS[di], LRS[k], wu, 1);
                char t0[24] = "never", t1[24] = "never";
                if (u0->nan_step < 0 && u0->level_step >= 0)
                    snprintf(t0, sizeof t0, "step %d", u0->level_step);
                if (u1->nan_step < 0 && u1->level_step >= 0)
                    snprintf(t1, sizeof t1, "step %d", u1->level_step);
                fprintf(md, "%s lr %g %s -> %s", k ? "," : "", LRS[k], t0, t1);
            }
            fprintf(md, ".\n");
        }
    /* the warm-up gap by learning rate, and the literature's depth-6 effect */
    fprintf(
        md,
        "\nWarm-up gap: final validation loss without warm-up minus with it (positive: warm-up "
        "helped), "
        "seed 1.\n\n| norm | depth | lr | post-norm gap | pre-norm gap |\n|---|---|---|---|---|\n");
    int rows = 0;
    for (int ni = 0; ni < 2; ni++)
        for (int di = 0; di < 3; di++)
            for (int li = 0; li < 3; li++) {
                tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
                const sw_run *a = find(g, nm, TM_POST, DEPTHS[di], LRS[li], 0, 1);
                const sw_run *b = find(g, nm, TM_POST, DEPTHS[di], LRS[li], wu, 1);
                const sw_run *c = find(g, nm, TM_PRE, DEPTHS[di], LRS[li], 0, 1);
                const sw_run *e = find(g, nm, TM_PRE, DEPTHS[di], LRS[li], wu, 1);
                if (!(a && b) && !(c && e))
                    continue;
                char pg[32] = "missing", qg[32] = "missing";
                if (a && b)
                    snprintf(pg, sizeof pg, "%+.3f", a->final_val - b->final_val);
                if (c && e)
                    snprintf(qg, sizeof qg, "%+.3f", c->final_val - e->final_val);
                fprintf(md, "| %s | %d | %g | %s | %s |\n", ni ? "RMSNorm" : "LayerNorm",
                        DEPTHS[di], LRS[li], pg, qg);
                rows++;
            }
    if (!rows)
        fprintf(md, "| (no pair of runs done yet) | | | | |\n");
    fprintf(md, "\n");
    for (int ni = 0; ni < 2; ni++) {
        tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
        const sw_run *a = find(g, nm, TM_POST, 6, 1e-3f, 0, 1),
                     *b = find(g, nm, TM_POST, 6, 1e-3f, wu, 1);
        if (!a || !b || a->nan_step >= 0 || b->nan_step >= 0)
            continue;
        double gap = a->final_val - b->final_val;
        char ea[32] = "never", eb[32] = "never";
        if (a->level_step >= 0)
            snprintf(ea, sizeof ea, "step %d", a->level_step);
        if (b->level_step >= 0)
            snprintf(eb, sizeof eb, "step %d", b->level_step);
        fprintf(md,
                "%s post-norm at depth 6, lr 0.001: %.3f without warm-up, %.3f with %d steps of it "
                "(plateau exit: %s vs %s). %s\n\n",
                ni ? "RMSNorm" : "LayerNorm", a->final_val, b->final_val, wu, ea, eb,
                gap > 0
                    ? "Warm-up lowers post-norm's final loss here: the effect Xiong et al. (2020) "
                      "report, "
                      "reproduced at this scale (one seed; stage B measures the spread over seeds)."
                    : "Warm-up does not lower post-norm's final loss here, which **disagrees** "
                      "with Xiong et al. "
                      "(2020) (one seed).");
    }
}

int study_stage_b_lr(const double no_wu[3], const double with_wu[3], double *gap)
{
    int best = 0;
    *gap = -INFINITY;
    for (int li = 0; li < 3; li++) {
        /* a diverged run (INFINITY) is worse than any; two diverged runs: no gap */
        const double g = isnan(no_wu[li] - with_wu[li]) ? 0 : no_wu[li] - with_wu[li];
        if (g > *gap) {
            *gap = g;
            best = li;
        }
    }
    return best;
}

int study_stage_b_run(const char *dir, int nseeds, double budget_s, int threads, tm_data *d)
{
    grid *g = calloc(1, sizeof *g);
    sw_cell *cells = malloc(sizeof(sw_cell) * MAX_CELLS);
    if (!g || !cells || load(g, dir)) {
        if (!g || !cells)
            fprintf(stderr, "keel study: out of memory\n");
        free(g);
        free(cells);
        return -1;
    }
    const int wu = sw_warmup_steps(&g->r);
    int n = 0;
    printf("stage B: seeds 2..%d, into %s/runs/\n", nseeds, dir);
    for (int di = 0; di < 3; di++)
        for (int ni = 0; ni < 2; ni++) {
            const tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
            const char *nn = ni ? "RMSNorm" : "LayerNorm";
            double no_wu[3], with_wu[3], best_gap = 0;
            int best = 0;
            for (int li = 0; li < 3 && best >= 0; li++) {
                const sw_run *a = find(g, nm, TM_POST, DEPTHS[di], LRS[li], 0, 1);
                const sw_run *b = find(g, nm, TM_POST, DEPTHS[di], LRS[li], wu, 1);
                if (!a || !b)
                    best = -1;
                else {
                    no_wu[li] = a->nan_step >= 0 ? INFINITY : a->final_val;
                    with_wu[li] = b->nan_step >= 0 ? INFINITY : b->final_val;
                }
            }
            if (best >= 0)
                best = study_stage_b_lr(no_wu, with_wu, &best_gap);
            if (best < 0) {
                printf("  %s, depth %d: stage A's post-norm runs are not all on disk; skipped\n",
                       nn, DEPTHS[di]);
                continue;
            }
            printf("  %s, depth %d: lr %g (post-norm warm-up gap %+.3f at seed 1)\n", nn,
                   DEPTHS[di], LRS[best], best_gap);
            for (int sd = 2; sd <= nseeds; sd++)
                for (int k = 0; k < 3 && n < MAX_CELLS; k++) {
                    sw_cell c = {nm,         k == 2 ? TM_PRE : TM_POST,
                                 DEPTHS[di], k == 1 ? wu : 0,
                                 LRS[best],  (uint64_t)sd};
                    cells[n++] = c;
                }
        }
    fflush(stdout);
    int ran = 0, skipped = 0;
    keel_status st = sw_run_grid(&g->r, cells, n, dir, budget_s, threads, d, 1, &ran, &skipped);
    printf("stage B: %d runs trained now, %d already on disk, %d still missing\n", ran, skipped,
           n - ran - skipped);
    for (int i = 0; i < g->n; i++)
        free(g->runs[i]);
    free(g);
    free(cells);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel study: %s\n", tool_last_error());
        return -1;
    }
    return 0;
}

int study_stage_report(FILE *md, const char *dir, int nseeds, int have_gnuplot)
{
    grid *g = calloc(1, sizeof *g);
    if (!g) {
        fprintf(stderr, "keel study: out of memory\n");
        return 0;
    }
    (void)nseeds; /* every seed on disk is read */
    if (load(g, dir)) {
        free(g);
        return 0;
    }
    const sw_recipe *r = &g->r;
    const int wu = sw_warmup_steps(r);
    int cells1 = 0, found1 = 0;
    for (int i = 0; i < g->n; i++)
        if (g->cells[i].seed == 1) {
            cells1++;
            found1 += g->runs[i] != NULL;
        }
    fprintf(md,
            "## 2. Placement: post-norm vs pre-norm by depth, learning rate and warm-up\n\n"
            "**Prediction under test** (Xiong et al. 2020; Liu et al. 2020): warm-up widens the "
            "range of learning rates at which post-norm trains, and leaves pre-norm's range as "
            "it is; post-norm's range shrinks with depth.\n\n");
    fprintf(md,
            "**Recipe** (every run): LayerNorm or RMSNorm, width %d, %d heads, seq %d, batch %d, "
            "%d steps (%d tokens); AdamW with beta1 %g, beta2 %g, eps %g, weight decay %g "
            "(matrices and embeddings); linear warm-up of 0 or %d steps (2 / (1 - beta2)), then "
            "cosine decay to %g x lr at the last step; no gradient clipping. ",
            r->width, r->heads, r->seq, r->batch, r->steps, r->steps * r->batch * r->seq, r->beta1,
            r->beta2, r->adam_eps, r->wd, wu, r->min_frac);
    fprintf(md,
            "Validation: the same %d batches (%d tokens) of the last 10%% of the text in every "
            "run, every %d steps. The *plateau exit* is the first evaluated step with validation "
            "loss below %.1f nats (a model that has only learnt the character frequencies sits "
            "near the unigram entropy, above). The gradient ratio is the L2 norm of block 1's "
            "gradient over the last block's at step %d (small: the lower layers' gradients "
            "vanish, as in deep post-norm).\n\n",
            r->eval_batches, r->eval_batches * r->batch * r->seq, r->eval_every, r->level,
            r->probe_step);
    fprintf(md,
            "Stage A, the grid: {LayerNorm, RMSNorm} x depth {6, 12, 24} x {pre, post} x lr "
            "{3e-4, 1e-3, 3e-3} x warm-up {0, %d}, seed 1, %d runs (`keel study --stage A`). "
            "Stage B, the seeds: at each depth and norm, the lr with the largest post-norm "
            "warm-up gap, seeds 2.. of post without warm-up, post with warm-up and pre without "
            "(`keel study --stage B --seeds N`). Both are resumable: each finished run is a file "
            "in runs/, and runs on disk are skipped. `keel study --report` writes this section "
            "from the files.\n\n",
            wu, cells1);
    fprintf(md, "**Stage A done: %d of %d runs.** Runs of seeds 2 and up on disk: %d.", found1,
            cells1, g->found - found1);
    if (found1 < cells1) {
        fprintf(md, " Missing by depth:");
        for (int di = 0; di < 3; di++) {
            int miss = 0, all = 0;
            for (int i = 0; i < g->n; i++)
                if (g->cells[i].depth == DEPTHS[di] && g->cells[i].seed == 1) {
                    all++;
                    miss += !g->runs[i];
                }
            fprintf(md, "%s depth %d %d of %d", di ? "," : "", DEPTHS[di], miss, all);
        }
        fprintf(md, " (the cells marked *missing* below). `keel study --stage A` trains them, "
                    "most informative first (depth 6, then 12, then 24).");
    }
    fprintf(md,
            "\n\nEach cell: final validation loss / plateau-exit step (-: not below %.1f within %d "
            "steps; "
            "missing: not run yet). Seed 1.\n\n",
            r->level, r->steps);
    for (int ni = 0; ni < 2; ni++) {
        tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
        fprintf(md, "| %s |", ni ? "RMSNorm" : "LayerNorm");
        for (int di = 0; di < 3; di++)
            for (int li = 0; li < 3; li++)
                fprintf(md, " L%d lr %g |", DEPTHS[di], LRS[li]);
        fprintf(md, "\n|---|");
        for (int k = 0; k < 9; k++)
            fprintf(md, "---|");
        fprintf(md, "\n");
        for (int p = 0; p < 2; p++)
            for (int w = 0; w < 2; w++) {
                tm_place pl = p ? TM_PRE : TM_POST;
                fprintf(md, "| %s |", setting_name(pl, w));
                for (int di = 0; di < 3; di++)
                    for (int li = 0; li < 3; li++) {
                        char t[48];
                        cell_text(find(g, nm, pl, DEPTHS[di], LRS[li], w ? wu : 0, 1), t, sizeof t);
                        fprintf(md, " %s |", t);
                    }
                fprintf(md, "\n");
            }
        fprintf(md, "\n");
    }
    fprintf(md,
            "(warm-up: %d steps.)\n\nGradient ratio at step %d (block 1 / last block), seed 1:\n\n"
            "| norm | setting | L6 lr 3e-4 | L6 1e-3 | L6 3e-3 | L12 3e-4 | L12 1e-3 | L12 3e-3 | "
            "L24 3e-4 | "
            "L24 1e-3 | L24 3e-3 |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
            wu, r->probe_step);
    for (int ni = 0; ni < 2; ni++)
        for (int p = 0; p < 2; p++)
            for (int w = 0; w < 2; w++) {
                tm_norm nm = ni ? TM_NORM_RMS : TM_NORM_LAYER;
                tm_place pl = p ? TM_PRE : TM_POST;
                fprintf(md, "| %s | %s |", ni ? "RMSNorm" : "LayerNorm", setting_name(pl, w));
                for (int di = 0; di < 3; di++)
                    for (int li = 0; li < 3; li++) {
                        const sw_run *u = find(g, nm, pl, DEPTHS[di], LRS[li], w ? wu : 0, 1);
                        if (u)
                            fprintf(md, " %.3g |", u->probe_ratio);
                        else
                            fprintf(md, " - |");
                    }
                fprintf(md, "\n");
            }
    fprintf(md, "\n");
    seeds_table(md, g);
    verdicts(md, g);
    plots(md, g, dir, have_gnuplot);
    double secs[3] = {0, 0, 0};
    int cnt[3] = {0, 0, 0};
    for (int i = 0; i < g->n; i++)
        for (int di = 0; di < 3; di++)
            if (g->runs[i] && g->runs[i]->cell.depth == DEPTHS[di] && g->runs[i]->nan_step < 0) {
                secs[di] += g->runs[i]->seconds;
                cnt[di]++;
            }
    fprintf(
        md,
        "Measured training time per run (the 1,500 steps, evaluations excluded; the threads and "
        "machine load of the session that made it):");
    for (int di = 0; di < 3; di++)
        if (cnt[di])
            fprintf(md, " depth %d %.0f s (mean of %d);", DEPTHS[di], secs[di] / cnt[di], cnt[di]);
    fprintf(md, "\n\n");
    int found = g->found;
    for (int i = 0; i < g->n; i++)
        free(g->runs[i]);
    free(g);
    return found;
}
