/* keel monitor calibrate / score / eval (issue 8): distribution shift from normalization
 * statistics. The recordings they work on: recording.c; the evaluation: monitor_eval.c. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands_monitor.h"
#include "monitor_cost.h"
#include "monitor_eval.h"
#include "monitor_faults.h"
#include "numarg.h"
#include "options.h"
#include "recording.h"

/* ---- keel monitor calibrate ------------------------------------------------------------------- */
static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: keel monitor calibrate --checkpoint F --text FILE -o BASELINE [--window N (256)]\n"
        "                              [--false-alarm P (0.01)] [--bins N (32)] [--threads N (1)]\n"
        "       keel monitor score --checkpoint F --baseline B --text FILE [--window N (256)]\n"
        "                              [--csv FILE] [--plot FILE.png] [--jsonl FILE]\n"
        "                              [--threads N (1)]\n"
        "       keel monitor eval --checkpoint F [--checkpoint F2 ...] [--out DIR (docs/monitor)]\n"
        "                              [--data FILE] [--jargon FILE] [--false-alarm P (0.01)]\n"
        "                              [--bootstrap N (1000)] [--seed N (2026)] [--threads N (1)]\n"
        "       keel monitor cost --checkpoint F --text FILE [--tokens N (32768)] [--reps N (5)]\n"
        "       keel monitor faults --checkpoint F --text FILE [--window N (256)] [--out "
        "FILE.md]\n\n"
        "Watches the statistics a model's LayerNorm/RMSNorm compute anyway (per-token mean and\n"
        "log-rstd) for distribution shift. calibrate: the first half of the text is the baseline,\n"
        "windows of the second half (of 64, 256, 1024 and N tokens) set the threshold of the\n"
        "combined score to the false-alarm rate P. score: per-window combined scores and the\n"
        "norm, statistic and component that moved most (in standard deviations of its clean\n"
        "variation), per-layer scores, a plot along the stream and a verdict; --jsonl writes one\n"
        "JSON object a window for a dashboard (window, tokens, every detector's score: summaries,\n"
        "channels, nll; alarm; top_layer, top_statistic, top_channel; per-norm components).\n"
        "The baseline also keeps each norm input's per-channel mean and variance; score then\n"
        "prints the channel detector (the norms' mean diagonal Mahalanobis distance of the\n"
        "window's mean features, about 1 on clean independent tokens) and the norm and channel\n"
        "whose mean moved most. eval: the evaluation report of one or more checkpoints: the\n"
        "monitor, the channel detector, the NLL, the mean entropy and 1 - max probability, each\n"
        "at the same false-alarm rate; AUROC and detection rate with bootstrap intervals, clean\n"
        "false alarms, detection delay, per model and pooled. cost: the\n"
        "monitor's time per forward (summaries, and per-channel statistics of every norm's input)\n"
        "as a share of the forward's. faults: weight faults injected into one sublayer at a time\n"
        "(scaled output projection, flipped exponent bits): windows alarmed, alarms naming the\n"
        "right norm.\n"
        "Bytes outside the model's vocabulary are dropped (and counted).\n");
}

typedef struct opts {
    const char *ckpt, *text, *out, *baseline, *csv, *plot, *jsonl;
    int window, bins, threads;
    double far;
} opts;

/* the longest window: 2^24 tokens (the text must hold one) */
#define MONITOR_MAX_WINDOW 16777216

static int parse(int argc, char **argv, opts *o, const char *cmd)
{
    char name[32];
    snprintf(name, sizeof name, "monitor %s", cmd);
    memset(o, 0, sizeof *o);
    o->window = 256;
    o->far = 0.01;
    o->threads = 1;
    const keel_opt table[] = {
        {"--checkpoint", KEEL_OPT_STRING, &o->ckpt, 0, 0, 0},
        {"--text", KEEL_OPT_STRING, &o->text, 0, 0, 0},
        {"-o", KEEL_OPT_STRING, &o->out, 0, 0, 0},
        {"--output", KEEL_OPT_STRING, &o->out, 0, 0, 0},
        {"--baseline", KEEL_OPT_STRING, &o->baseline, 0, 0, 0},
        {"--csv", KEEL_OPT_STRING, &o->csv, 0, 0, 0},
        {"--plot", KEEL_OPT_STRING, &o->plot, 0, 0, 0},
        {"--jsonl", KEEL_OPT_STRING, &o->jsonl, 0, 0, 0},
        {"--window", KEEL_OPT_INT, &o->window, 2, MONITOR_MAX_WINDOW, 0},
        {"--bins", KEEL_OPT_INT, &o->bins, 2, 65536, 0},
        {"--threads", KEEL_OPT_INT, &o->threads, 1, KEEL_ARG_MAX_THREADS, 0},
        {"--false-alarm", KEEL_OPT_DOUBLE, &o->far, 0, 1, KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI},
    };
    const int pr = keel_opts_parse(name, argc, argv, table, sizeof table / sizeof table[0], usage);
    if (pr != KEEL_OPTS_OK)
        return pr; /* KEEL_OPTS_HELP (1): the callers' "help printed"; KEEL_OPTS_USAGE: 2 */
    if (o->plot && !o->csv) {
        fprintf(stderr, "keel monitor %s: --plot needs --csv FILE (the data it draws)\n", cmd);
        return 2;
    }
    if (o->plot && (strpbrk(o->plot, "'\"`$\\") || strpbrk(o->csv, "'\"`$\\"))) {
        fprintf(stderr, "keel monitor %s: --plot and --csv names go to gnuplot's command line: no quotes, "
                        "backquotes, '$' or backslashes in them\n", cmd);
        return 2;
    }
    return 0;
}

static int load_text(mc_model *mm, const char *path, mc_rec *rec, const char *cmd)
{
    size_t nb, ntok, dropped;
    unsigned char *bytes;
    if (mc_read_file(path, &bytes, &nb) != KEEL_OK) {
        fprintf(stderr, "keel monitor %s: %s\n", cmd, tool_last_error());
        return -1;
    }
    int *tok = mc_map_text(mm, bytes, nb, &ntok, &dropped);
    free(bytes);
    if (!tok) {
        fprintf(stderr, "keel monitor %s: out of memory\n", cmd);
        return -1;
    }
    keel_status st = mc_record(mm, tok, ntok, rec);
    free(tok);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel monitor %s: %s: %s\n", cmd, path, tool_last_error());
        return -1;
    }
    printf("%s: %zu bytes, %zu dropped (not in the vocabulary), %zu tokens through the model (%.1f s)\n", path, nb,
           dropped, rec->n, rec->forward_seconds);
    return 0;
}

static int cmd_calibrate(int argc, char **argv)
{
    opts o;
    int pr = parse(argc, argv, &o, "calibrate");
    if (pr)
        return pr == 1 ? 0 : 2;
    if (!o.ckpt || !o.text || !o.out) {
        fprintf(stderr, "keel monitor calibrate: --checkpoint, --text and -o are required\n\n");
        usage(stderr);
        return 2;
    }
    if (tr_no_cblas("monitor"))
        return 1;
    mc_model mm;
    if (mc_load_model(&mm, o.ckpt, o.threads) != KEEL_OK) {
        fprintf(stderr, "keel monitor calibrate: %s\n", tool_last_error());
        return 1;
    }
    mm.channels = 1; /* the baseline keeps per-channel statistics too */
    mc_rec rec;
    if (load_text(&mm, o.text, &rec, "calibrate")) {
        mc_free_model(&mm);
        return 1;
    }
    keel_monitor_config cfg = {.bins = o.bins};
    keel_monitor *mon = NULL;
    size_t half = rec.n / 2;
    int sizes[4] = {64, 256, 1024, o.window}, ns = o.window == 64 || o.window == 256 || o.window == 1024 ? 3 : 4;
    while (ns > 0 && (size_t)sizes[ns - 1] * 2 > rec.n - half)
        ns--; /* window sizes the held-out half holds fewer than ~2 of */
    int rc = 1;
    if (ns == 0) {
        fprintf(stderr, "keel monitor calibrate: %zu tokens are too few (the held-out half needs two windows of 64)\n",
                rec.n);
        goto done;
    }
    if (keel_monitor_create(&mon, rec.slots, &cfg)) {
        fprintf(stderr, "keel monitor calibrate: %s\n", keel_last_error());
        goto done;
    }
    const int chans = rec.width && half >= 2 * rec.group; /* whole groups for the baseline */
    for (int s = 0; s < rec.slots && chans; s++)
        if (keel_monitor_channels(mon, s, rec.width)) {
            fprintf(stderr, "keel monitor calibrate: %s\n", keel_last_error());
            goto done;
        }
    if (mc_feed(mon, &rec, 0, half) || keel_monitor_fit_ranges(mon) ||
        mc_feed(mon, &rec, 0, half) || keel_monitor_capture_baseline(mon) ||
        mc_calibrate_windows(mon, &rec, half, rec.n, sizes, ns, o.far) || keel_monitor_baseline_save(mon, o.out)) {
        fprintf(stderr, "keel monitor calibrate: %s\n", keel_last_error());
        goto done;
    }
    printf("baseline: %zu tokens, %d norms; thresholds calibrated on %zu held-out tokens to a false-alarm rate of %g\n",
           half, rec.slots, rec.n - half, o.far);
    printf("%-14s %12s %10s %12s %10s\n", "norm", "mean(mean)", "sd(mean)", "mean(lrstd)", "sd(lrstd)");
    for (int s = 0; s < rec.slots; s++) {
        char name[32];
        tm_monitor_slot_name(&mm.m, s, name, sizeof name);
        double mu = 0, var = 0, lm = 0, lv = 0, n;
        keel_monitor *b2 = NULL; /* the baseline's moments: reload the window by feeding again */
        (void)b2;
        keel_monitor_reset_window(mon);
        mc_feed(mon, &rec, 0, half);
        keel_monitor_window_moments(mon, s, KEEL_MONITOR_MEAN, &n, &mu, &var);
        keel_monitor_window_moments(mon, s, KEEL_MONITOR_LOGRSTD, &n, &lm, &lv);
        printf("%-14s %12.4g %10.4g %12.4g %10.4g\n", name, mu, sqrt(var), lm, sqrt(lv));
    }
    keel_monitor_reset_window(mon);
    for (int k = 0; k < ns; k++) {
        mc_feed(mon, &rec, half, half + (size_t)sizes[k]);
        keel_monitor_result res;
        keel_monitor_score(mon, NULL, &res);
        keel_monitor_reset_window(mon);
        printf("window %5d tokens: threshold of the combined score %.3f\n", sizes[k], res.threshold);
    }
    printf("saved: %s\n", o.out);
    rc = 0;
done:
    keel_monitor_destroy(mon);
    mc_free_rec(&rec);
    mc_free_model(&mm);
    return rc;
}

/* ---- keel monitor score ----------------------------------------------------------------------- */
static void ascii_plot(const double *v, size_t n, double thr, int W, int H)
{
    if (n == 0)
        return;
    double lo = thr, hi = thr;
    for (size_t i = 0; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    if (hi - lo < 1e-9)
        hi = lo + 1;
    int cols = n < (size_t)W ? (int)n : W;
    printf("combined score along the stream (%zu windows; '-' the threshold, '*' above it):\n", n);
    for (int row = H - 1; row >= 0; row--) {
        double y0 = lo + (hi - lo) * row / H, y1 = lo + (hi - lo) * (row + 1) / H;
        printf("%9.2f |", y1);
        for (int c = 0; c < cols; c++) {
            size_t a = (size_t)c * n / cols, b = (size_t)(c + 1) * n / cols;
            double mx = -INFINITY;
            for (size_t i = a; i < b; i++)
                mx = v[i] > mx ? v[i] : mx;
            int here = mx >= y0 && (mx < y1 || row == H - 1);
            int below = mx >= y1;
            int tline = thr >= y0 && thr < y1;
            putchar(here ? (mx > thr ? '*' : 'o') : below ? (mx > thr ? '|' : ':') : tline ? '-' : ' ');
        }
        putchar('\n');
    }
    printf("%9s +", "");
    for (int c = 0; c < cols; c++)
        putchar('-');
    printf("> tokens\n");
}

static const char *const stat_names[2] = {"mean", "log_rstd"};
static const char *const comp_names[3] = {"z", "psi", "ks"};

/* The component that moved most in a window: the largest standardised value over every slot,
 * statistic and component (keel_monitor_slot_score.standardised). -1 in *slot when none is
 * defined (an uncalibrated baseline). */
static void strongest(const keel_monitor_slot_score *sc, int slots, int *slot, int *stat, int *comp)
{
    double best = -INFINITY;
    *slot = *stat = *comp = -1;
    for (int s = 0; s < slots; s++)
        for (int t = 0; t < 2; t++)
            for (int c = 0; c < 3; c++) {
                const double v = sc[s].standardised[t][c];
                if (v == v && v > best) {
                    best = v;
                    *slot = s, *stat = t, *comp = c;
                }
            }
}

/* A JSON number: finite values as %.6g, anything else as null (JSON has no NaN or Inf). */
static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

/* The per-channel detector of a window: the mean over norms of the diagonal Mahalanobis
 * distance (keel_monitor_slot_score.maha; NaN when the baseline has no per-channel
 * statistics), and the norm and channel whose mean moved most (-1 when none). */
static double channel_detector(const keel_monitor_slot_score *sc, int slots, int *slot,
                               int *channel, double *z)
{
    double sum = 0.0, best = -1.0;
    int n = 0;
    *slot = *channel = -1;
    *z = NAN;
    for (int s = 0; s < slots; s++) {
        if (sc[s].maha != sc[s].maha)
            continue;
        sum += sc[s].maha;
        n++;
        if (fabs(sc[s].top_channel_z) > best) {
            best = fabs(sc[s].top_channel_z);
            *slot = s, *channel = sc[s].top_channel, *z = sc[s].top_channel_z;
        }
    }
    return n ? sum / n : NAN;
}

/* One window as one line of JSON (--jsonl): the combined score, threshold, alarm, the model's
 * NLL, every detector's score, the layer and statistic that moved most (flat, and in full as
 * "strongest"), the channel that moved most and each norm's components. */
static void json_window(FILE *f, const mc_model *mm, size_t w, size_t W, const keel_monitor_result *res,
                        const keel_monitor_slot_score *sc, double nll)
{
    int bs, bt, bc;
    strongest(sc, mm->slots, &bs, &bt, &bc);
    char name[32];
    fprintf(f, "{\"window\":%zu,\"first_token\":%zu,\"tokens\":%zu,\"combined\":", w, w * W, W);
    json_num(f, res->combined);
    fputs(",\"threshold\":", f);
    json_num(f, res->threshold);
    fprintf(f, ",\"alarm\":%s,\"nll\":", res->alarm ? "true" : "false");
    json_num(f, nll);
    int cs, cc;
    double cz, maha = channel_detector(sc, mm->slots, &cs, &cc, &cz);
    fputs(",\"detectors\":{\"summaries\":", f);
    json_num(f, res->combined);
    fputs(",\"channels\":", f);
    json_num(f, maha);
    fputs(",\"nll\":", f);
    json_num(f, nll);
    fputs("},\"top_layer\":", f);
    if (bs >= 0) {
        tm_monitor_slot_name(&mm->m, bs, name, sizeof name);
        fprintf(f, "\"%s\",\"top_statistic\":\"%s\"", name, stat_names[bt]);
    } else {
        fputs("null,\"top_statistic\":null", f);
    }
    fputs(",\"top_channel\":", f);
    if (cs >= 0) {
        tm_monitor_slot_name(&mm->m, cs, name, sizeof name);
        fprintf(f, "{\"norm\":\"%s\",\"channel\":%d,\"z\":", name, cc);
        json_num(f, cz);
        fputc('}', f);
    } else {
        fputs("null", f);
    }
    fputs(",\"strongest\":", f);
    if (bs >= 0) {
        tm_monitor_slot_name(&mm->m, bs, name, sizeof name);
        fprintf(f, "{\"norm\":\"%s\",\"statistic\":\"%s\",\"component\":\"%s\",\"standardised\":", name,
                stat_names[bt], comp_names[bc]);
        json_num(f, sc[bs].standardised[bt][bc]);
        fputc('}', f);
    } else {
        fputs("null", f);
    }
    fputs(",\"norms\":[", f);
    for (int s = 0; s < mm->slots; s++) {
        tm_monitor_slot_name(&mm->m, s, name, sizeof name);
        fprintf(f, "%s{\"norm\":\"%s\",\"score\":", s ? "," : "", name);
        json_num(f, sc[s].score);
        for (int t = 0; t < 2; t++) {
            const double v[3] = {sc[s].z[t], sc[s].psi[t], sc[s].ks[t]};
            for (int c = 0; c < 3; c++) {
                fprintf(f, ",\"%s_%s\":", comp_names[c], stat_names[t]);
                json_num(f, v[c]);
            }
        }
        fputs(",\"maha\":", f);
        json_num(f, sc[s].maha);
        fputs(",\"log_var_ratio\":", f);
        json_num(f, sc[s].log_var_ratio);
        fprintf(f, ",\"top_channel\":%d,\"bad_rows\":%.0f", sc[s].top_channel, sc[s].bad_rows);
        fputc('}', f);
    }
    fputs("]}\n", f);
}

static int cmd_score(int argc, char **argv)
{
    opts o;
    int pr = parse(argc, argv, &o, "score");
    if (pr)
        return pr == 1 ? 0 : 2;
    if (!o.ckpt || !o.text || !o.baseline) {
        fprintf(stderr, "keel monitor score: --checkpoint, --baseline and --text are required\n\n");
        usage(stderr);
        return 2;
    }
    if (tr_no_cblas("monitor"))
        return 1;
    /* what done: releases, each NULL or zero until it is taken */
    FILE *csv = NULL, *jl = NULL;
    keel_monitor *mon = NULL;
    mc_model mm;
    memset(&mm, 0, sizeof mm);
    int rc = 1;
    mc_rec rec = {0};
    double *comb = NULL;
    keel_monitor_slot_score *sc = NULL;
    double *acc = NULL;
    /* the output first: a file that cannot be written fails the command before any work */
    if (o.csv && !(csv = fopen(o.csv, "w"))) {
        fprintf(stderr, "keel monitor score: cannot write %s: %s\n", o.csv, strerror(errno));
        goto done;
    }
    if (o.jsonl && !(jl = fopen(o.jsonl, "w"))) {
        fprintf(stderr, "keel monitor score: cannot write %s: %s\n", o.jsonl, strerror(errno));
        goto done;
    }
    if (keel_monitor_baseline_load(&mon, o.baseline)) {
        fprintf(stderr, "keel monitor score: %s\n", keel_last_error());
        goto done;
    }
    if (mc_load_model(&mm, o.ckpt, o.threads) != KEEL_OK) {
        fprintf(stderr, "keel monitor score: %s\n", tool_last_error());
        goto done;
    }
    mm.channels = keel_monitor_channel_width(mon, 0) == mm.st.cfg.width; /* per-channel baseline */
    if (keel_monitor_slots(mon) != mm.slots) {
        fprintf(stderr, "keel monitor score: the baseline has %d norms, the model %d: another model's baseline?\n",
                keel_monitor_slots(mon), mm.slots);
        goto done;
    }
    if (load_text(&mm, o.text, &rec, "score"))
        goto done;
    size_t W = (size_t)o.window, nw = rec.n / W;
    if (nw == 0) {
        fprintf(stderr, "keel monitor score: %zu tokens: fewer than one window of %zu\n", rec.n, W);
        goto done;
    }
    comb = malloc(nw * sizeof(double));
    sc = malloc((size_t)mm.slots * sizeof *sc);
    acc = calloc((size_t)mm.slots * 7, sizeof(double));
    if (!comb || !sc || !acc) {
        fprintf(stderr, "keel monitor score: out of memory\n");
        goto done;
    }
    if (csv)
        fprintf(csv, "window,first_token,combined,threshold,alarm,nll\n");
    size_t alarms = 0, first = (size_t)-1;
    keel_monitor_result res = {0};
    printf("%6s %10s %9s %9s %6s  %s\n", "window", "tokens", "combined", "threshold", "alarm",
           "moved most: norm, statistic, component (sd of its clean variation); channels");
    for (size_t w = 0; w < nw; w++) {
        keel_monitor_reset_window(mon);
        mc_feed(mon, &rec, w * W, (w + 1) * W);
        keel_monitor_score(mon, sc, &res);
        comb[w] = res.combined;
        int best = 0;
        for (int s = 0; s < mm.slots; s++) {
            if (sc[s].score > sc[best].score)
                best = s;
            double *a = acc + (size_t)s * 7;
            a[0] += sc[s].z[0] == sc[s].z[0] ? sc[s].z[0] : 0;
            a[1] += sc[s].z[1];
            a[2] += sc[s].psi[0] == sc[s].psi[0] ? sc[s].psi[0] : 0;
            a[3] += sc[s].psi[1];
            a[4] += sc[s].ks[0] == sc[s].ks[0] ? sc[s].ks[0] : 0;
            a[5] += sc[s].ks[1];
            a[6] += sc[s].score;
        }
        if (res.alarm) {
            alarms++;
            if (first == (size_t)-1)
                first = w;
        }
        char name[32];
        int bs, bt, bc;
        strongest(sc, mm.slots, &bs, &bt, &bc);
        /* a numeric fault: the first norm whose window holds rows with non-finite statistics
         * (the library raises the alarm for them whatever the scores) */
        int fault = -1;
        for (int s = 0; s < mm.slots && fault < 0; s++)
            if (sc[s].bad_rows > 0)
                fault = s;
        if (nw <= 40 || res.alarm || w % (nw / 40 + 1) == 0) {
            printf("%6zu %10zu %9.3f %9.3f %6s  ", w, w * W, res.combined, res.threshold,
                   res.alarm ? "ALARM" : "");
            if (fault >= 0) {
                tm_monitor_slot_name(&mm.m, fault, name, sizeof name);
                printf("%s: %.0f rows with non-finite statistics (a numeric fault)\n", name,
                       sc[fault].bad_rows);
            } else if (bs >= 0) {
                tm_monitor_slot_name(&mm.m, bs, name, sizeof name);
                printf("%s %s %s (%+.1f)", name, stat_names[bt], comp_names[bc],
                       sc[bs].standardised[bt][bc]);
                int cs, cc;
                double cz, maha = channel_detector(sc, mm.slots, &cs, &cc, &cz);
                /* the per-channel view: mean Mahalanobis, the channel that moved most */
                if (cs >= 0) {
                    tm_monitor_slot_name(&mm.m, cs, name, sizeof name);
                    printf("; channels %.1f, %s #%d (z %+.1f)", maha, name, cc, cz);
                }
                putchar('\n');
            } else { /* uncalibrated: the slot with the largest raw score */
                tm_monitor_slot_name(&mm.m, best, name, sizeof name);
                printf("%s (score %.2f)\n", name, sc[best].score);
            }
        }
        const double nll = mc_nll(&rec, w * W, (w + 1) * W);
        if (csv)
            fprintf(csv, "%zu,%zu,%.6g,%.6g,%d,%.6g\n", w, w * W, res.combined, res.threshold, res.alarm,
                    nll);
        if (jl)
            json_window(jl, &mm, w, W, &res, sc, nll);
    }
    if (csv) {
        int werr = ferror(csv), cerr = fclose(csv);
        csv = NULL;
        if (werr || cerr) {
            fprintf(stderr, "keel monitor score: cannot write %s: %s\n", o.csv, strerror(errno));
            goto done;
        }
    }
    if (jl) {
        int werr = ferror(jl), cerr = fclose(jl);
        jl = NULL;
        if (werr || cerr) {
            fprintf(stderr, "keel monitor score: cannot write %s: %s\n", o.jsonl, strerror(errno));
            goto done;
        }
        printf("JSON lines: %s (one object a window)\n", o.jsonl);
    }
    printf("\nper norm, averaged over the %zu windows (z: z-score of the window mean; PSI, KS on the histograms;\n"
           "score: the mean standardised component, 0 = as on the held-out calibration text):\n",
           nw);
    printf("%-14s %8s %8s %8s %8s %8s %8s %8s\n", "norm", "z(mean)", "z(lrstd)", "PSI(m)", "PSI(lr)", "KS(m)",
           "KS(lr)", "score");
    for (int s = 0; s < mm.slots; s++) {
        char name[32];
        tm_monitor_slot_name(&mm.m, s, name, sizeof name);
        const double *a = acc + (size_t)s * 7;
        printf("%-14s %8.2f %8.2f %8.3f %8.3f %8.3f %8.3f %8.2f\n", name, a[0] / nw, a[1] / nw, a[2] / nw,
               a[3] / nw, a[4] / nw, a[5] / nw, a[6] / nw);
    }
    putchar('\n');
    ascii_plot(comb, nw, res.threshold, 72, 12);
    int plot_failed = 0;
    if (o.plot) { /* parse() made sure --csv came with it */
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "gnuplot -e \"set terminal pngcairo size 900,400; set output '%s'; set datafile separator ',';"
                 " set key top left; set xlabel 'token'; set ylabel 'combined score';"
                 " plot '%s' every ::1 using 2:3 with lines lw 2 title 'combined (window %d)',"
                 " '' every ::1 using 2:4 with lines dt 2 lc 'red' title 'threshold'\" 2>/dev/null",
                 o.plot, o.csv, o.window);
        if ((plot_failed = system(cmd) != 0))
            fprintf(stderr, "keel monitor score: gnuplot failed (apt-get install gnuplot-nox); the CSV is %s\n", o.csv);
        else
            printf("plot: %s\n", o.plot);
    }
    /* verdict: more alarms than the false-alarm rate explains (3 binomial sd above it) */
    double p = res.false_alarm, expect = p * nw, bound = expect + 3.0 * sqrt(nw * p * (1 - p)) + 1e-9;
    int shift = (double)alarms > bound || (nw < 4 && alarms > 0);
    printf("\nverdict: %s: %zu of %zu windows of %zu tokens above the threshold (%.1f expected at a false-alarm "
           "rate of %g)",
           shift ? "SHIFT" : "in distribution", alarms, nw, W, expect, p);
    if (first != (size_t)-1)
        printf("; first alarm at token %zu", first * W);
    printf("\n");
    rc = plot_failed ? 1 : shift ? 3 : 0;
done:
    if (csv)
        fclose(csv);
    if (jl)
        fclose(jl);
    free(comb);
    free(sc);
    free(acc);
    mc_free_rec(&rec);
    mc_free_model(&mm);
    keel_monitor_destroy(mon);
    return rc;
}

int keel_cmd_monitor(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "calibrate"))
        return cmd_calibrate(argc - 1, argv + 1);
    if (!strcmp(argv[1], "score"))
        return cmd_score(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval"))
        return mc_eval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "cost"))
        return mc_cost(argc - 1, argv + 1);
    if (!strcmp(argv[1], "faults"))
        return mc_faults(argc - 1, argv + 1);
    fprintf(stderr, "keel monitor: unknown subcommand '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
