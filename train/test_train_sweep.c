/* keel study's sweep (sweep.h) and the recipe it trains with: the learning-rate schedule's values
 * (warm-up endpoints, the cosine floor at the last step), stage A's recipe and grid (32
 * validation batches, 8,192+ tokens, depth 6 first), the evaluation's batch count, the run
 * file's atomic write, and skip-if-done across invocations. Seconds: tiny models. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adamw.h"
#include "study_stage.h"
#include "sweep.h"
#include "test_common.h" /* test_read_file */

static int fails;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);                                    \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

static int near(double a, double b) { return fabs(a - b) <= 1e-6 * fabs(b) + 1e-12; }

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_schedule(void)
{
    const float lr = 1e-3f, floor_frac = 0.1f;
    /* warm-up of 200 in 1,500 steps: lr/200 at step 0, lr at step 199 and 200, the floor at 1,499
     */
    CHECK(near(tm_lr_at(0, 1500, 200, lr, 1, floor_frac), lr / 200.0));
    CHECK(near(tm_lr_at(99, 1500, 200, lr, 1, floor_frac), lr * 100.0 / 200.0));
    CHECK(near(tm_lr_at(199, 1500, 200, lr, 1, floor_frac), lr));
    CHECK(near(tm_lr_at(200, 1500, 200, lr, 1, floor_frac), lr));
    CHECK(near(tm_lr_at(1499, 1500, 200, lr, 1, floor_frac), lr * floor_frac));
    /* half-way through the decay: the mean of lr and the floor */
    CHECK(near(tm_lr_at(200 + 1299 / 2, 1500, 200, lr, 1, floor_frac),
               lr * (floor_frac +
                     (1 - floor_frac) * 0.5 * (1 + cos(3.141592653589793 * (1299 / 2) / 1299.0)))));
    float prev = tm_lr_at(200, 1500, 200, lr, 1, floor_frac);
    int mono = 1;
    for (int s = 201; s < 1500; s++) {
        float v = tm_lr_at(s, 1500, 200, lr, 1, floor_frac);
        mono &= v <= prev && v >= lr * floor_frac * (1 - 1e-6f);
        prev = v;
    }
    CHECK(mono);
    /* no warm-up: lr at step 0, the floor at the last step; --decay none: constant */
    CHECK(near(tm_lr_at(0, 1500, 0, lr, 1, floor_frac), lr));
    CHECK(near(tm_lr_at(1499, 1500, 0, lr, 1, floor_frac), lr * floor_frac));
    CHECK(near(tm_lr_at(1499, 1500, 0, lr, 0, floor_frac), lr));
    CHECK(near(tm_lr_at(0, 1500, 10, lr, 0, floor_frac), lr / 10));
}

static void test_recipe(void)
{
    sw_recipe r;
    sw_recipe_stage_a(&r);
    CHECK(r.eval_batches == 32);
    CHECK(r.eval_batches * r.batch * r.seq >= 8192);
    CHECK(r.steps >= 1500);
    CHECK(r.width == 64);
    CHECK(r.beta2 >= 0.98f && r.beta2 <= 0.99f);
    CHECK(sw_warmup_steps(&r) == (int)lround(2.0 / (1.0 - r.beta2)));
    CHECK(r.eval_seed != 0); /* the same validation batches in every run */
    sw_cell cells[256];
    int n = sw_grid_stage_a(&r, 1, cells, 256);
    CHECK(n == 72);
    int order = 1;
    for (int i = 0; i < n; i++)
        order &= cells[i].depth == (i < 24 ? 6 : i < 48 ? 12 : 24);
    CHECK(order);
    /* names are unique and encode the seed */
    char a[160], b[160];
    int uniq = 1;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            sw_cell_name(&r, &cells[i], a, sizeof a);
            sw_cell_name(&r, &cells[j], b, sizeof b);
            uniq &= strcmp(a, b) != 0;
        }
    CHECK(uniq);
    sw_cell_name(&r, &cells[0], a, sizeof a);
    CHECK(!strcmp(a, "A_post_layernorm_L6_lr0.001_wu0_s1"));
    CHECK(sw_grid_stage_a(&r, 3, cells, 256) == 216);
    /* the trainer's options carry the recipe */
    tr_opts o;
    sw_opts(&r, &cells[1], 1, &o);
    CHECK(o.eval_batches == 32 && o.steps == r.steps && o.warmup == cells[1].warmup &&
          o.cosine == 1);
    CHECK(o.eval_seed == r.eval_seed && o.probe_step == r.probe_step && o.clip == 0);
}

/* A tiny recipe: the same machinery in a fraction of a second per run. */
static void tiny(sw_recipe *r)
{
    sw_recipe_stage_a(r);
    r->width = 16, r->heads = 2, r->seq = 8, r->batch = 2, r->steps = 6;
    r->eval_every = 2, r->eval_batches = 32, r->curve_every = 2, r->probe_step = 2;
}

static void test_eval_batches(tm_data *d)
{
    sw_recipe r;
    tiny(&r);
    sw_cell c = {TM_NORM_LAYER, TM_POST, 2, 0, 1e-3f, 1};
    tr_opts o;
    sw_opts(&r, &c, 1, &o);
    tr_result res;
    if (tr_run(&o, d, &res) != KEEL_OK) {
        printf("FAIL tr_run: %s\n", tool_last_error());
        fails++;
        return;
    }
    CHECK(res.val_tokens == 32L * r.batch * r.seq); /* one evaluation scores 32 batches */
    CHECK(res.nval == 3);                           /* steps 2, 4, 6 */
    CHECK(isfinite(res.probe_ratio) && res.probe_ratio > 0);
    tr_result_free(&res);
}

static void test_runner(tm_data *d)
{
    char dir[] = "/tmp/keel_test_sweep_XXXXXX";
    if (!mkdtemp(dir)) {
        printf("FAIL mkdtemp\n");
        fails++;
        return;
    }
    sw_recipe r;
    tiny(&r);
    sw_cell cells[2] = {{TM_NORM_LAYER, TM_POST, 1, 0, 1e-3f, 1},
                        {TM_NORM_RMS, TM_PRE, 1, 4, 3e-3f, 2}};
    char path[1400], tmp[1500], sub[1300];
    snprintf(sub, sizeof sub, "%s/runs", dir);
    mkdir(sub, 0755);
    sw_run_path(dir, &r, &cells[0], path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    /* an interrupted run: a half-written temporary is not a finished run */
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs("# keel study run A_post_layernorm_L1\n# norm layer", f);
        fclose(f);
    }
    CHECK(!sw_run_done(dir, &r, &cells[0]));
    CHECK(!sw_run_done(dir, &r, &cells[1]));
    int ran = -1, skipped = -1;
    CHECK(sw_run_grid(&r, cells, 2, dir, 0, 1, d, 0, &ran, &skipped) == KEEL_OK);
    CHECK(ran == 2 && skipped == 0);
    CHECK(sw_run_done(dir, &r, &cells[0]) && sw_run_done(dir, &r, &cells[1]));
    CHECK(!exists(tmp)); /* the temporary was renamed onto the run file */
    sw_run *u = malloc(sizeof *u);
    CHECK(u && sw_read_run(path, u) == KEEL_OK);
    if (u) {
        CHECK(u->cell.norm == TM_NORM_LAYER && u->cell.place == TM_POST && u->cell.depth == 1);
        CHECK(u->cell.warmup == 0 && u->cell.seed == 1 && u->cell.lr == 1e-3f);
        CHECK(u->steps == 6 && u->eval_batches == 32 && u->val_tokens == 32L * 2 * 8);
        CHECK(u->npoints == 3 && u->step[2] == 6 && isfinite(u->final_val) && u->nan_step == -1);
        CHECK(isfinite(u->val[2]) &&
              isnan(u->val[0]) == 0); /* evaluated at every curve point here */
    }
    /* a second invocation trains nothing; a removed run is trained again */
    struct stat st0, st1;
    stat(path, &st0);
    CHECK(sw_run_grid(&r, cells, 2, dir, 0, 1, d, 0, &ran, &skipped) == KEEL_OK);
    CHECK(ran == 0 && skipped == 2);
    stat(path, &st1);
    CHECK(st0.st_ino == st1.st_ino && st0.st_mtime == st1.st_mtime);
    char path1[1400];
    sw_run_path(dir, &r, &cells[1], path1, sizeof path1);
    remove(path1);
    CHECK(sw_run_grid(&r, cells, 2, dir, 0, 1, d, 0, &ran, &skipped) == KEEL_OK);
    CHECK(ran == 1 && skipped == 1);
    /* a truncated run file is not read as a run */
    char bad[1400];
    snprintf(bad, sizeof bad, "%s/runs/bad.run", dir);
    f = fopen(bad, "w");
    if (f) {
        fputs("# keel study run\n# norm layernorm\n# depth 6\n", f);
        fclose(f);
    }
    CHECK(sw_read_run(bad, u) == KEEL_EFORMAT);
    /* a run file that cannot be written leaves nothing behind and says why */
    tr_opts o;
    sw_opts(&r, &cells[0], 1, &o);
    tr_result res;
    if (tr_run(&o, d, &res) == KEEL_OK) {
        char nodir[1500];
        snprintf(nodir, sizeof nodir, "%s/absent/x.run", dir);
        CHECK(sw_write_run(nodir, &r, &cells[0], &res) == KEEL_EIO);
        CHECK(strstr(tool_last_error(), "cannot write") != NULL);
        tr_result_free(&res);
    }
    free(u);
    remove(bad);
    remove(path);
    remove(path1);
    rmdir(sub);
    rmdir(dir);
}

/* Writes the report of the runs under dir (seeds: keel study --seeds) to mdpath and returns its
 * text (the caller frees it), or NULL when the file cannot be written or read back; *runs is
 * study_stage_report's result, the number of run files it read. */
static char *read_report(const char *mdpath, const char *dir, int seeds, int *runs)
{
    *runs = -1;
    FILE *md = fopen(mdpath, "w");
    if (!md)
        return NULL;
    *runs = study_stage_report(md, dir, seeds, 0);
    if (fclose(md))
        return NULL;
    return (char *)test_read_file(mdpath, NULL);
}

/* The report from run files: two stage A cells on disk (results made up, written by the same
 * writer), the other 70 listed as missing, no verdict for an incomplete depth, the warm-up gap of
 * the complete pair. */
static void test_report(void)
{
    char dir[] = "/tmp/keel_test_report_XXXXXX";
    if (!mkdtemp(dir)) {
        printf("FAIL mkdtemp\n");
        fails++;
        return;
    }
    char sub[1300];
    snprintf(sub, sizeof sub, "%s/runs", dir);
    mkdir(sub, 0755);
    sw_recipe r;
    sw_recipe_stage_a(&r);
    sw_cell cells[72];
    sw_grid_stage_a(&r, 1, cells, 72);
    enum { N = 1500 };
    static float tl[N];
    int vs[2] = {100, 1500};
    float vl[2][2] = {{3.3f, 3.2f}, {3.1f, 2.5f}}; /* without warm-up: stays above 3.0 */
    char paths[2][1400];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N; i++)
            tl[i] = vl[k][1];
        tr_result res;
        memset(&res, 0, sizeof res);
        res.steps_done = N;
        res.nan_step = -1;
        res.train_loss = tl;
        res.nval = 2;
        res.val_step = vs;
        res.val_loss = vl[k];
        res.final_val = vl[k][1];
        res.final_train = vl[k][1];
        res.probe_ratio = 0.5;
        res.val_tokens = 8192;
        sw_run_path(dir, &r, &cells[k], paths[k], sizeof paths[k]);
        CHECK(sw_write_run(paths[k], &r, &cells[k], &res) == KEEL_OK);
    }
    char mdpath[1400];
    snprintf(mdpath, sizeof mdpath, "%s/report.md", dir);
    int runs;
    char *text = read_report(mdpath, dir, 1, &runs);
    CHECK(text != NULL && runs == 2);
    if (text) {
        CHECK(strstr(text, "Stage A done: 2 of 72 runs.** Runs of seeds 2 and up on disk: 0.") !=
              NULL);
        CHECK(strstr(text, "depth 6 22 of 24") != NULL);
        CHECK(strstr(text, "| post, no warm-up | missing | 3.200 / - |") != NULL);
        CHECK(strstr(text, "| post, warm-up | missing | 2.500 / 1500 |") != NULL);
        CHECK(strstr(text, "LayerNorm, depth 6: not all 12 runs are done yet") != NULL);
        CHECK(strstr(text, "| LayerNorm | 6 | 0.001 | +0.700 | missing |") != NULL);
        CHECK(strstr(text, "reproduced") != NULL);
    }
    free(text);
    /* a second seed of the first cell: --seeds 2 reports its mean and range */
    char path2[1400];
    {
        sw_cell c2 = cells[0];
        c2.seed = 2;
        for (int i = 0; i < N; i++)
            tl[i] = 3.3f;
        float v2[2] = {3.35f, 3.3f};
        tr_result res;
        memset(&res, 0, sizeof res);
        res.steps_done = N;
        res.nan_step = -1;
        res.train_loss = tl;
        res.nval = 2;
        res.val_step = vs;
        res.val_loss = v2;
        res.final_val = 3.3;
        res.final_train = 3.3;
        res.probe_ratio = 0.5;
        res.val_tokens = 8192;
        sw_run_path(dir, &r, &c2, path2, sizeof path2);
        CHECK(sw_write_run(path2, &r, &c2, &res) == KEEL_OK);
    }
    text = read_report(mdpath, dir, 2, &runs);
    CHECK(text != NULL && runs == 3);
    if (text) {
        CHECK(strstr(text, "Stage A done: 2 of 72 runs.** Runs of seeds 2 and up on disk: 1.") !=
              NULL);
        CHECK(strstr(text, "| LayerNorm | post, no warm-up | 6 | 0.001 | 2 | 3.250 [3.200, 3.300] "
                           "| never |") != NULL);
    }
    free(text);
    remove(path2);
    char gp[1400];
    snprintf(gp, sizeof gp, "%s/stageA.gp", dir);
    CHECK(exists(gp));
    remove(gp);
    remove(mdpath);
    remove(paths[0]);
    remove(paths[1]);
    rmdir(sub);
    rmdir(dir);
}

/* The verdicts from a complete grid: every post-norm run stuck above the level (3.3) and every
 * pre-norm run below it (2.5) is "not tested" at each depth (post-norm trains at no lr of the
 * grid, so warm-up cannot widen its range); then post-norm at depth 6 made to leave the plateau
 * at lr 1e-3 only with warm-up "agrees"; and at depth 12 only without it "disagrees". */
static void test_verdicts(void)
{
    char dir[] = "/tmp/keel_test_verdict_XXXXXX";
    if (!mkdtemp(dir)) {
        printf("FAIL mkdtemp\n");
        fails++;
        return;
    }
    char sub[1300];
    snprintf(sub, sizeof sub, "%s/runs", dir);
    mkdir(sub, 0755);
    sw_recipe r;
    sw_recipe_stage_a(&r);
    sw_cell cells[72];
    CHECK(sw_grid_stage_a(&r, 1, cells, 72) == 72);
    enum { N = 1500 };
    static float tl[N];
    int vs[2] = {100, 1500};
    static char paths[72][1400];
    char mdpath[1400];
    snprintf(mdpath, sizeof mdpath, "%s/report.md", dir);
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < 72; k++) {
            const sw_cell *c = &cells[k];
            float v = c->place == TM_POST ? 3.3f : 2.5f;
            const int lr3 = c->lr > 5e-4f && c->lr < 2e-3f; /* lr 1e-3 */
            if (pass == 1 && c->place == TM_POST && c->norm == TM_NORM_LAYER && lr3 &&
                ((c->depth == 6 && c->warmup > 0) || (c->depth == 12 && c->warmup == 0)))
                v = 2.6f;
            float vl[2] = {3.4f, v};
            for (int i = 0; i < N; i++)
                tl[i] = v;
            tr_result res;
            memset(&res, 0, sizeof res);
            res.steps_done = N;
            res.nan_step = -1;
            res.train_loss = tl;
            res.nval = 2;
            res.val_step = vs;
            res.val_loss = vl;
            res.final_val = v;
            res.final_train = v;
            res.probe_ratio = 0.5;
            res.val_tokens = 8192;
            sw_run_path(dir, &r, c, paths[k], sizeof paths[k]);
            CHECK(sw_write_run(paths[k], &r, c, &res) == KEEL_OK);
        }
        int runs;
        char *text = read_report(mdpath, dir, 1, &runs);
        CHECK(text != NULL && runs == 72);
        if (text && pass == 0)
            for (int d = 0; d < 3; d++) {
                char want[96];
                snprintf(want, sizeof want,
                         "LayerNorm, depth %d: post-norm exits the plateau at lr "
                         "{none of the three}",
                         (int[]){6, 12, 24}[d]);
                const char *at = strstr(text, want);
                CHECK(at != NULL);
                CHECK(strstr(at ? at : text, "**Not tested**") != NULL);
                CHECK(strstr(text, "Agrees with the prediction") == NULL);
                CHECK(strstr(text, "Disagrees with the prediction") == NULL);
            }
        if (text && pass == 1) {
            const char *d6 = strstr(text, "LayerNorm, depth 6:");
            const char *d12 = strstr(text, "LayerNorm, depth 12:");
            const char *d24 = strstr(text, "LayerNorm, depth 24:");
            CHECK(d6 && d12 && d24);
            if (d6 && d12 && d24) {
                const char *a = strstr(d6, "**Agrees with the prediction.**");
                const char *dis = strstr(d12, "**Disagrees with the prediction**");
                const char *nt = strstr(d24, "**Not tested**");
                CHECK(a != NULL && a < d12);
                CHECK(dis != NULL && dis < d24);
                CHECK(nt != NULL);
            }
        }
        free(text);
    }
    for (int k = 0; k < 72; k++)
        remove(paths[k]);
    char gp[1400];
    snprintf(gp, sizeof gp, "%s/stageA.gp", dir);
    remove(gp);
    remove(mdpath);
    rmdir(sub);
    rmdir(dir);
}

/* Stage B's lr rule (study_stage_b_lr): the largest post-norm warm-up gap; a run that diverged
 * only without warm-up is the largest gap there is; two diverged runs are no gap; a tie goes to
 * the smaller lr; negative gaps (warm-up worse) lose to zero. */
static void test_stage_b_lr(void)
{
    double gap;
    const double a1[3] = {3.2, 2.6, 3.3}, b1[3] = {3.1, 2.1, 3.3};
    CHECK(study_stage_b_lr(a1, b1, &gap) == 1 && near(gap, 0.5));
    const double a2[3] = {2.5, INFINITY, INFINITY}, b2[3] = {2.4, 2.3, INFINITY};
    CHECK(study_stage_b_lr(a2, b2, &gap) == 1 && isinf(gap) && gap > 0);
    const double a3[3] = {INFINITY, INFINITY, INFINITY}, b3[3] = {INFINITY, INFINITY, INFINITY};
    CHECK(study_stage_b_lr(a3, b3, &gap) == 0 && gap == 0);
    const double a4[3] = {2.0, 2.2, 2.4}, b4[3] = {2.1, 2.1, 2.3};
    CHECK(study_stage_b_lr(a4, b4, &gap) == 1 && near(gap, 0.1));
    const double a5[3] = {2.0, 2.1, 2.2}, b5[3] = {2.3, 2.4, 2.5};
    CHECK(study_stage_b_lr(a5, b5, &gap) == 0 && near(gap, -0.3));
}

int main(void)
{
    tm_data d;
    if (tm_data_load(&d, NULL)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    test_schedule();
    test_recipe();
    test_eval_batches(&d);
    test_runner(&d);
    test_report();
    test_verdicts();
    test_stage_b_lr();
    tm_data_free(&d);
    printf("test_train_sweep: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
