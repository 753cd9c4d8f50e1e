/* keel study: the resumable sweep (sweep.h). */
#define _POSIX_C_SOURCE 200809L
#include "sweep.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void sw_recipe_stage_a(sw_recipe *r)
{
    memset(r, 0, sizeof *r);
    r->stage = 'A';
    r->width = 64, r->heads = 4, r->seq = 32, r->batch = 8, r->steps = 1500;
    r->beta1 = 0.9f, r->beta2 = 0.99f, r->adam_eps = 1e-8f, r->wd = 0.1f, r->min_frac = 0.1f;
    r->eval_every = 100, r->eval_batches = 32;
    r->eval_seed = 0x5EEDull; /* any fixed non-zero value: the batches every run is scored on */
    r->curve_every = 25;
    r->probe_step = 50;
    r->level = 3.0;
}

int sw_warmup_steps(const sw_recipe *r) { return (int)lround(2.0 / (1.0 - (double)r->beta2)); }

int sw_grid_stage_a(const sw_recipe *r, int nseeds, sw_cell *cells, int max)
{
    static const int depths[] = {6, 12, 24};
    static const float lrs[] = {1e-3f, 3e-3f, 3e-4f};
    static const tm_norm norms[] = {TM_NORM_LAYER, TM_NORM_RMS};
    static const tm_place places[] = {TM_POST, TM_PRE};
    const int warmups[] = {0, sw_warmup_steps(r)};
    int n = 0;
    for (int di = 0; di < 3; di++)
        for (int li = 0; li < 3; li++)
            for (int ni = 0; ni < 2; ni++)
                for (int pi = 0; pi < 2; pi++)
                    for (int wi = 0; wi < 2; wi++)
                        for (int s = 1; s <= (nseeds > 0 ? nseeds : 1); s++) {
                            if (n >= max)
                                return n;
                            sw_cell c = {norms[ni],   places[pi], depths[di],
                                         warmups[wi], lrs[li],    (uint64_t)s};
                            cells[n++] = c;
                        }
    return n;
}

void sw_cell_name(const sw_recipe *r, const sw_cell *c, char *buf, size_t n)
{
    snprintf(buf, n, "%c_%s_%s_L%d_lr%g_wu%d_s%llu", r->stage, tm_place_name(c->place),
             tm_norm_name(c->norm), c->depth, c->lr, c->warmup, (unsigned long long)c->seed);
}

void sw_run_path(const char *dir, const sw_recipe *r, const sw_cell *c, char *buf, size_t n)
{
    char name[160];
    sw_cell_name(r, c, name, sizeof name);
    snprintf(buf, n, "%s/runs/%s.run", dir, name);
}

int sw_run_done(const char *dir, const sw_recipe *r, const sw_cell *c)
{
    char path[1400];
    sw_run_path(dir, r, c, path, sizeof path);
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

void sw_opts(const sw_recipe *r, const sw_cell *c, int threads, tr_opts *o)
{
    tr_opts_default(o);
    o->mc.layers = c->depth;
    o->mc.width = r->width;
    o->mc.heads = r->heads;
    o->mc.seq = r->seq;
    o->mc.norm = c->norm;
    o->mc.place = c->place;
    o->batch = r->batch;
    o->steps = r->steps;
    o->lr = c->lr;
    o->warmup = c->warmup;
    o->cosine = 1;
    o->min_frac = r->min_frac;
    o->wd = r->wd;
    o->beta1 = r->beta1;
    o->beta2 = r->beta2;
    o->clip = 0;
    o->seed = c->seed;
    o->threads = threads;
    o->eval_every = r->eval_every;
    o->eval_batches = r->eval_batches;
    o->eval_seed = r->eval_seed;
    o->probe_step = r->probe_step;
    o->progress = 0;
    o->stop_on_nan = 1;
}

int sw_level_step(const tr_result *res, double level)
{
    for (int i = 0; i < res->nval; i++)
        if (res->val_loss[i] < level)
            return res->val_step[i];
    return -1;
}

static double val_at(const tr_result *res, int step)
{
    for (int i = 0; i < res->nval; i++)
        if (res->val_step[i] == step)
            return res->val_loss[i];
    return NAN;
}

keel_status sw_write_run(const char *path, const sw_recipe *r, const sw_cell *c,
                         const tr_result *res)
{
    char tmp[1500];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return tool_fail(KEEL_EIO, "%s: cannot write: %s", tmp, strerror(errno));
    char name[160];
    sw_cell_name(r, c, name, sizeof name);
    fprintf(f, "# keel study run %s (stage %c)\n", name, r->stage);
    fprintf(f, "# norm %s\n# placement %s\n# depth %d\n# lr %g\n# warmup %d\n# seed %llu\n",
            tm_norm_name(c->norm), tm_place_name(c->place), c->depth, c->lr, c->warmup,
            (unsigned long long)c->seed);
    fprintf(f, "# width %d\n# heads %d\n# seq %d\n# batch %d\n# steps %d\n", r->width, r->heads,
            r->seq, r->batch, r->steps);
    fprintf(f, "# optimizer AdamW beta1 %g beta2 %g eps %g weight_decay %g\n", r->beta1, r->beta2,
            r->adam_eps, r->wd);
    fprintf(f, "# schedule linear warm-up %d steps, cosine decay to %g x lr at the last step\n",
            c->warmup, r->min_frac);
    fprintf(f, "# eval_every %d\n# eval_batches %d\n# val_tokens %ld\n", r->eval_every,
            r->eval_batches, res->val_tokens);
    fprintf(f, "# final_val %.5f\n# final_train %.5f\n# level %g\n# level_step %d\n",
            res->final_val, res->final_train, r->level, sw_level_step(res, r->level));
    fprintf(f, "# probe_step %d\n# grad_ratio %.6g\n# nan_step %d\n# seconds %.1f\n", r->probe_step,
            res->probe_ratio, res->nan_step, res->seconds);
    fprintf(f,
            "# curve: step, mean train loss over the last %d steps, validation loss (NaN: not "
            "evaluated)\n",
            r->curve_every);
    const int k = r->curve_every > 0 ? r->curve_every : 1;
    for (int s = k; s <= res->steps_done; s += k) {
        double m = 0;
        for (int i = s - k; i < s; i++)
            m += res->train_loss[i];
        fprintf(f, "%d %.5f %.5f\n", s, m / k, val_at(res, s));
    }
    int bad = ferror(f);
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return tool_fail(KEEL_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    return KEEL_OK;
}

keel_status sw_read_run(const char *path, sw_run *o)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return tool_fail(KEEL_EIO, "%s: cannot read: %s", path, strerror(errno));
    memset(o, 0, sizeof *o);
    o->final_val = o->final_train = o->probe_ratio = NAN;
    o->level_step = o->nan_step = -2; /* -2: absent, a malformed file */
    char line[512], key[64], val[256];
    int have = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') {
            if (sscanf(line, "# %63s %255s", key, val) != 2)
                continue;
            if (!strcmp(key, "norm"))
                have |= (tm_norm_parse(val, &o->cell.norm) == 0) << 0;
            else if (!strcmp(key, "placement"))
                have |= (tm_place_parse(val, &o->cell.place) == 0) << 1;
            else if (!strcmp(key, "depth"))
                have |= (sscanf(val, "%d", &o->cell.depth) == 1) << 2;
            else if (!strcmp(key, "lr"))
                have |= (sscanf(val, "%f", &o->cell.lr) == 1) << 3;
            else if (!strcmp(key, "warmup"))
                have |= (sscanf(val, "%d", &o->cell.warmup) == 1) << 4;
            else if (!strcmp(key, "seed"))
                have |= (sscanf(val, "%llu", (unsigned long long *)&o->cell.seed) == 1) << 5;
            else if (!strcmp(key, "final_val"))
                have |= (sscanf(val, "%lf", &o->final_val) == 1) << 6;
            else if (!strcmp(key, "level_step"))
                have |= (sscanf(val, "%d", &o->level_step) == 1) << 7;
            else if (!strcmp(key, "nan_step"))
                have |= (sscanf(val, "%d", &o->nan_step) == 1) << 8;
            else if (!strcmp(key, "steps"))
                sscanf(val, "%d", &o->steps);
            else if (!strcmp(key, "eval_batches"))
                sscanf(val, "%d", &o->eval_batches);
            else if (!strcmp(key, "val_tokens"))
                sscanf(val, "%ld", &o->val_tokens);
            else if (!strcmp(key, "final_train"))
                sscanf(val, "%lf", &o->final_train);
            else if (!strcmp(key, "grad_ratio"))
                sscanf(val, "%lf", &o->probe_ratio);
            else if (!strcmp(key, "seconds"))
                sscanf(val, "%lf", &o->seconds);
            else if (!strcmp(key, "level"))
                sscanf(val, "%lf", &o->level);
            continue;
        }
        int s;
        float t, v;
        if (o->npoints < (int)(sizeof o->step / sizeof o->step[0]) &&
            sscanf(line, "%d %f %f", &s, &t, &v) == 3) {
            o->step[o->npoints] = s;
            o->train[o->npoints] = t;
            o->val[o->npoints++] = v;
        }
    }
    fclose(f);
    if (have != 0x1FF)
        return tool_fail(KEEL_EFORMAT,
                         "%s: not a keel study run file (a setting or result is missing)", path);
    return KEEL_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

keel_status sw_run_grid(const sw_recipe *r, const sw_cell *cells, int n, const char *dir,
                        double budget_s, int threads, tm_data *d, int verbose, int *ran,
                        int *skipped)
{
    *ran = *skipped = 0;
    char sub[1300];
    snprintf(sub, sizeof sub, "%s/runs", dir);
    if (mkdir(sub, 0755) != 0 && errno != EEXIST)
        return tool_fail(KEEL_EIO, "cannot create %s: %s", sub, strerror(errno));
    const double t0 = now_s();
    double last_s = 0; /* the last run's wall time and depth: the next run's estimate */
    int last_depth = 0;
    for (int i = 0; i < n; i++) {
        if (sw_run_done(dir, r, &cells[i])) {
            ++*skipped;
            continue;
        }
        char name[160], path[1400];
        sw_cell_name(r, &cells[i], name, sizeof name);
        sw_run_path(dir, r, &cells[i], path, sizeof path);
        double expect = last_depth ? last_s * cells[i].depth / last_depth : 0;
        if (budget_s > 0 && last_depth && now_s() - t0 + expect > budget_s) {
            if (verbose)
                printf("  budget: %s would take about %.0f s more; stopping here\n", name, expect);
            break;
        }
        tr_opts o;
        sw_opts(r, &cells[i], threads, &o);
        tr_result res;
        double t1 = now_s();
        keel_status st = tr_run(&o, d, &res);
        if (st != KEEL_OK)
            return tool_fail(st, "%s: %s", name, tool_last_error());
        st = sw_write_run(path, r, &cells[i], &res);
        if (st == KEEL_OK && verbose) {
            char exit_at[32] = "never";
            int ls = sw_level_step(&res, r->level);
            if (ls >= 0)
                snprintf(exit_at, sizeof exit_at, "step %d", ls);
            printf("  %-40s val %.3f, below %.2f: %s, ratio@%d %.3g (%.0f s)\n", name,
                   res.final_val, r->level, exit_at, r->probe_step, res.probe_ratio, now_s() - t1);
            fflush(stdout);
        }
        tr_result_free(&res);
        if (st != KEEL_OK)
            return st;
        last_s = now_s() - t1;
        last_depth = cells[i].depth;
        ++*ran;
    }
    return KEEL_OK;
}
