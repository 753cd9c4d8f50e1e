/* keel monitor eval (issues 8, 26): does the monitor detect distribution shift, and how does it
 * compare with the detectors the same forward pass gives for free? Per checkpoint (repeat
 * --checkpoint): the monitor's combined score, the per-channel Mahalanobis detector, the mean
 * NLL of the true next token, and two label-free baselines (mean softmax entropy, mean 1 - max
 * probability), each thresholded at the same false-alarm rate on held-out clean windows; AUROC
 * and detection rate on non-overlapping test windows with bootstrap intervals (eval_stats.c);
 * the detection delay on streams that each switch from a clean segment of their own to a shift.
 * Writes results.md, results.csv, stream.csv, plots.gp and PNGs into a folder (docs/monitor). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "data.h"
#include "eval_report.h"
#include "monitor_eval.h"
#include "numarg.h"
#include "options.h"
#include "rng.h"

#define MAX_CKPT 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Shuffles the words of a text (whitespace stays where it was). 0, or -1 out of memory. */
static int shuffle_words(unsigned char *t, size_t n, tm_rng *rng)
{
    size_t nw = 0, cap = n / 2 + 1;
    size_t *st = malloc(cap * sizeof(size_t)), *ln = malloc(cap * sizeof(size_t));
    size_t *perm = malloc(cap * sizeof(size_t));
    unsigned char *out = malloc(n), *src = malloc(n);
    if (!st || !ln || !perm || !out || !src) {
        free(out), free(src), free(perm), free(st), free(ln);
        tool_fail(KEEL_ENOMEM, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n;) {
        while (i < n && (t[i] == ' ' || t[i] == '\n'))
            i++;
        size_t j = i;
        while (j < n && t[j] != ' ' && t[j] != '\n')
            j++;
        if (j > i) {
            st[nw] = i;
            ln[nw++] = j - i;
        }
        i = j;
    }
    for (size_t i = 0; i < nw; i++)
        perm[i] = i;
    for (size_t i = nw; i > 1; i--) {
        size_t j = tm_rng_below(rng, i), x = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = x;
    }
    memcpy(src, t, n);
    /* rebuild: separators in place, words in the new order (lengths differ: pack and pad) */
    size_t o = 0, w = 0;
    for (size_t i = 0; i < n && o < n;) {
        if (t[i] == ' ' || t[i] == '\n') {
            out[o++] = t[i++];
            continue;
        }
        size_t j = i;
        while (j < n && t[j] != ' ' && t[j] != '\n')
            j++;
        if (w < nw) {
            size_t k = perm[w++];
            for (size_t c = 0; c < ln[k] && o < n; c++)
                out[o++] = src[st[k] + c];
        }
        i = j;
    }
    while (o < n)
        out[o++] = ' ';
    memcpy(t, out, n);
    free(out), free(src), free(perm), free(st), free(ln);
    return 0;
}

/* The PNGs of the first model: the streams (window 256), AUROC per window, each norm alone. */
#define PLOTS_GP                                                                                   \
    "set terminal pngcairo size 1000,700 font ',10'\n"                                             \
    "set output 'stream.png'\n"                                                                    \
    "set multiplot layout 4,1 title 'first model: combined monitor score (window 256, every 64 "   \
    "tokens); each stream switches from a clean segment of its own at token 8192'\n"               \
    "set key top left; set xrange [0:16384]; set arrow 1 from 8192, graph 0 to 8192, graph 1 "     \
    "nohead dt 3\n"                                                                                \
    "do for [i=0:3] { name = word('jargon shuffled flipcase random', i+1)\n"                       \
    "  set ylabel name; plot 'stream.csv' index i using 2:3 with lines lw 2 title 'monitor', '' "  \
    "index i using 2:4 with lines dt 2 lc 'red' title 'threshold' }\n"                             \
    "unset multiplot\n"                                                                            \
    "set output 'stream_nll.png'\n"                                                                \
    "set multiplot layout 4,1 title 'baseline detector: mean NLL of the window (256), same "       \
    "streams'\n"                                                                                   \
    "do for [i=0:3] { name = word('jargon shuffled flipcase random', i+1)\n"                       \
    "  set ylabel name; plot 'stream.csv' index i using 2:5 with lines lw 2 lc 'dark-green' "      \
    "title 'NLL (nats)', '' index i using 2:6 with lines dt 2 lc 'red' title 'threshold' }\n"      \
    "unset multiplot; unset arrow 1; set xrange [*:*]\n"                                           \
    "set output 'auroc.png'\n"                                                                     \
    "set terminal pngcairo size 900,500\n"                                                         \
    "set logscale x 2; set xlabel 'window (tokens)'; set ylabel 'AUROC (shift vs clean)'; set "    \
    "yrange [0.4:1.02]; set key bottom right\n"                                                    \
    "set title 'AUROC per window size: monitor (solid) vs model NLL (dashed)'\n"                   \
    "plot for [k=0:3] 'auroc.dat' using 1:(column(2+2*k)) with linespoints lw 2 lc k+1 title "     \
    "word('jargon shuffled flipcase random',k+1).' monitor', \\\n"                                 \
    "     for [k=0:3] 'auroc.dat' using 1:(column(3+2*k)) with linespoints dt 2 lc k+1 title "     \
    "word('jargon shuffled flipcase random',k+1).' NLL'\n"                                         \
    "unset logscale x\n"                                                                           \
    "set output 'layers.png'\n"                                                                    \
    "set title 'which norms carry the signal: AUROC of each norm alone (window 256)'\n"            \
    "set style data histograms; set style histogram clustered gap 1; set style fill solid 0.8; "   \
    "set xtics rotate by -45\n"                                                                    \
    "set xlabel ''; set yrange [0:1.05]; set key outside right\n"                                  \
    "plot 'layers.dat' using 3:xtic(2) title 'jargon', '' using 4 title 'shuffled', '' using 5 "   \
    "title 'flipcase', '' using 6 title 'random'\n"

/* Every detector's scores of the windows of W tokens of rec[a, b) that start every stride
 * tokens, detector-major: out[d * cap + i] for window i; *n windows. 0, or -1. */
static int score_windows(keel_monitor *mon, const mc_rec *rec, size_t W, size_t stride,
                         keel_monitor_slot_score *slots, double *out, size_t cap, size_t *n,
                         double *slot_scores)
{
    double s[EV_NDET];
    *n = 0;
    for (size_t p = 0; p + W <= rec->n && *n < cap; p += stride, (*n)++) {
        if (ev_window_scores(mon, rec, p, p + W, slots, s))
            return -1;
        for (int d = 0; d < EV_NDET; d++)
            out[(size_t)d * cap + *n] = s[d];
        for (int k = 0; slot_scores && k < rec->slots; k++)
            slot_scores[*n * (size_t)rec->slots + (size_t)k] = slots[k].score;
    }
    return 0;
}

/* The four shifts of the test text (eval_report.c's ev_src_desc); srcs[0] is the test text. */
static int make_sources(const mc_model *mm, const unsigned char *test, size_t ntest,
                        const unsigned char *jg, size_t nj, unsigned char *srcs[EV_NSRC],
                        size_t slen[EV_NSRC])
{
    tm_rng rng = {12345};
    size_t joff = nj > 300000 + ntest ? 300000 : 0; /* past the front matter, into the glossary */
    for (int k = 0; k < EV_NSRC; k++)
        slen[k] = ntest;
    slen[1] =
        nj - joff < ntest * 2 ? nj - joff : ntest * 2; /* ~ntest after dropping foreign bytes */
    for (int k = 0; k < EV_NSRC; k++)
        if (!(srcs[k] = malloc(slen[k])))
            return tool_fail(KEEL_ENOMEM, "out of memory"), -1;
    memcpy(srcs[0], test, ntest);
    memcpy(srcs[1], jg + joff, slen[1]);
    memcpy(srcs[2], test, ntest);
    if (shuffle_words(srcs[2], ntest, &rng))
        return -1;
    for (size_t i = 0; i < ntest; i++) {
        unsigned char c = test[i];
        srcs[3][i] = (unsigned char)(c >= 'a' && c <= 'z'   ? c - 32
                                     : c >= 'A' && c <= 'Z' ? c + 32
                                                            : c);
        srcs[4][i] = mm->st.chars[tm_rng_below(&rng, (uint64_t)mm->st.vocab)];
    }
    return 0;
}

/* A seed of its own for every bootstrap (model, window, detector, source), from the printed one. */
static uint64_t cell_seed(const ev_setup *su, int model, int wi, int d, int k)
{
    return su->seed + 0x9E3779B97F4A7C15ull *
                          (uint64_t)(1 + (((model * EV_NWIN + wi) * EV_NDET + d) * EV_NSRC + k));
}

/* Thresholds, clean false alarms, AUROC and detection rates of one window size. cal: the
 * held-out scores (ncal per detector, cap ccap), sc[k] the test scores of source k (n[k], cap[k]).
 */
static int window_stats(const ev_setup *su, int model, int wi, double *const cal, size_t ncal,
                        size_t ccap, double *const sc[EV_NSRC], const size_t n[EV_NSRC],
                        const size_t cap[EV_NSRC], ev_model *r)
{
    for (int d = 0; d < EV_NDET; d++) {
        const double *clean = sc[0] + (size_t)d * cap[0];
        const double t = ev_threshold_at_far(cal + (size_t)d * ccap, ncal, su->far);
        r->thr[wi][d] = t;
        r->far[wi][d] = ev_rate_above(clean, n[0], t);
        if (ev_bootstrap_rate(clean, n[0], t, su->reps, cell_seed(su, model, wi, d, 0),
                              &r->far_ci[wi][d]))
            return -1;
        for (int k = 1; k < EV_NSRC; k++) {
            const double *shift = sc[k] + (size_t)d * cap[k];
            r->auc[wi][d][k] = ev_auroc(shift, n[k], clean, n[0]);
            r->tpr[wi][d][k] = ev_rate_above(shift, n[k], t);
            if (ev_bootstrap_auroc(shift, n[k], clean, n[0], su->reps,
                                   cell_seed(su, model, wi, d, k), &r->auc_ci[wi][d][k]) ||
                ev_bootstrap_rate(shift, n[k], t, su->reps, cell_seed(su, model, wi, d, k) + 1,
                                  &r->tpr_ci[wi][d][k]))
                return -1;
        }
    }
    return 0;
}

/* Detection delay: for each shift a stream of its own clean segment (quarter k - 1 of the test
 * text: no two streams share clean text) switching to the shift; a sliding window of W tokens
 * scored every su->step tokens; delay = end of the first alarming window after the switch minus
 * the switch. Alarms before the switch are counted. The first model's window-256 streams go to
 * sf (stream.csv: the monitor and the NLL, as plots.gp draws them). */
static int delays(keel_monitor *mon, const mc_rec rec[EV_NSRC], int seq, const ev_setup *su,
                  keel_monitor_slot_score *slots, FILE *sf, ev_model *r)
{
    const size_t quarter = rec[0].n / 4 / (size_t)seq * (size_t)seq;
    size_t sw = su->switch_at < quarter ? su->switch_at : quarter;
    sw -= sw % (size_t)seq;
    for (int wi = 0; wi < EV_NWIN; wi++) {
        const size_t W = (size_t)ev_wins[wi];
        r->pre_windows[wi] = sw >= W ? (sw - W) / su->step + 1 : 0;
        for (int k = 1; k < EV_NSRC; k++) {
            mc_rec st;
            const size_t after = rec[k].n < su->after ? rec[k].n : su->after;
            if (mc_stitch(&rec[0], (size_t)(k - 1) * quarter, sw, &rec[k], 0, after, &st) !=
                KEEL_OK)
                return -1;
            for (int d = 0; d < EV_NDET; d++) {
                r->delay[wi][d][k] = NAN;
                r->pre_alarms[wi][d][k] = 0;
            }
            for (size_t e = W; e <= st.n; e += su->step) {
                double s[EV_NDET];
                if (ev_window_scores(mon, &st, e - W, e, slots, s)) {
                    mc_free_rec(&st);
                    return tool_fail(KEEL_EINVAL, "%s", keel_last_error()), -1;
                }
                for (int d = 0; d < EV_NDET; d++) {
                    const int alarm = !(s[d] <= r->thr[wi][d]); /* NaN alarms */
                    if (e <= sw)
                        r->pre_alarms[wi][d][k] += alarm;
                    else if (alarm && isnan(r->delay[wi][d][k]))
                        r->delay[wi][d][k] = (double)(e - sw);
                }
                if (sf && wi == 1)
                    fprintf(sf, "%s %zu %.5g %.5g %.5g %.5g\n", ev_src_names[k], e, s[EV_MONITOR],
                            r->thr[wi][EV_MONITOR], s[EV_NLL], r->thr[wi][EV_NLL]);
            }
            if (sf && wi == 1)
                fprintf(sf, "\n\n");
            mc_free_rec(&st);
        }
    }
    return 0;
}

/* Forward over the clean text with and without the monitor attached, best of 3. */
static void overhead(mc_model *mm, keel_monitor *mon, const int *tok, size_t ntok, ev_model *r)
{
    const int T = mm->st.cfg.seq, B = mm->m.max_batch;
    const size_t nblk = ntok > 0 ? (ntok - 1) / (size_t)T : 0;
    r->t_plain = r->t_mon = r->t_obs = INFINITY;
    r->overhead_tokens = nblk / (size_t)B * (size_t)B * (size_t)T;
    for (int rep = 0; rep < 3; rep++)
        for (int with = 0; with < 2; with++) {
            mm->m.monitor = with ? mon : NULL;
            mm->m.monitor_seconds = 0;
            keel_monitor_reset_window(mon);
            const double t0 = now_s();
            for (size_t b0 = 0; b0 + (size_t)B <= nblk; b0 += (size_t)B)
                tm_forward(&mm->m, tok + b0 * (size_t)T, NULL, B, T);
            const double t = now_s() - t0;
            if (with) {
                r->t_mon = t < r->t_mon ? t : r->t_mon;
                r->t_obs = mm->m.monitor_seconds < r->t_obs ? mm->m.monitor_seconds : r->t_obs;
            } else {
                r->t_plain = t < r->t_plain ? t : r->t_plain;
            }
        }
    mm->m.monitor = NULL;
    r->batch = B;
}

/* The corpus and the Jargon File, read once for every model. */
typedef struct texts {
    const unsigned char *corpus, *jargon;
    size_t ncorpus, njargon;
} texts;

/* Evaluates one checkpoint into r (model index `model`; the first also writes stream.csv and
 * times the overhead). 0, or -1 with tool_last_error() set. */
static int eval_model(const char *ckpt, int model, const texts *tx, const ev_setup *su, int threads,
                      const char *out, ev_model *r)
{
    memset(r, 0, sizeof *r);
    r->ckpt = ckpt;
    r->threads = threads;
    mc_model mm;
    if (mc_load_model(&mm, ckpt, threads) != KEEL_OK)
        return -1;
    mm.channels = 1; /* the Mahalanobis detector's per-channel moments */
    int rc = -1;
    const int S = mm.slots;
    unsigned char *srcs[EV_NSRC] = {0};
    size_t slen[EV_NSRC];
    mc_rec base = {0}, cal = {0}, rec[EV_NSRC] = {{0}};
    keel_monitor *mon = NULL;
    keel_monitor_slot_score *slots = malloc((size_t)S * sizeof *slots);
    double *calsc = NULL, *sc[EV_NSRC] = {0}, *ss[EV_NSRC] = {0};
    int *tok = NULL;
    FILE *sf = NULL;
    size_t ntok;
    r->layers = mm.st.cfg.layers;
    r->width = mm.st.cfg.width;
    r->seq = mm.st.cfg.seq;
    r->slots = S;
    snprintf(r->norm, sizeof r->norm, "%s", tm_norm_name(mm.st.cfg.norm));
    snprintf(r->place, sizeof r->place, "%s", tm_place_name(mm.st.cfg.place));
    for (int s = 0; s < S && s < EV_MAXSLOTS; s++)
        tm_monitor_slot_name(&mm.m, s, r->slot_name[s], sizeof r->slot_name[s]);
    /* the corpus split of keel train: first 90% train, last 10% validation; the validation's
     * first half sets the thresholds, its second half is the clean test text */
    const size_t ntrain = tx->ncorpus * 9 / 10, nval = tx->ncorpus - ntrain, half = nval / 2;
    const size_t base_len = ntrain < 131072 ? ntrain : 131072;
    const unsigned char *test = tx->corpus + ntrain + half;
    const size_t ntest = nval - half;
    if (!slots)
        goto oom;
    if (make_sources(&mm, test, ntest, tx->jargon, tx->njargon, srcs, slen))
        goto done;
    printf("keel monitor eval: model %s (%d layers, width %d, %s), %d norms monitored\n", ckpt,
           r->layers, r->width, r->norm, S);
    if (!(tok = mc_map_text(&mm, tx->corpus + ntrain - base_len, base_len, &ntok, NULL)))
        goto oom;
    if (mc_record(&mm, tok, ntok, &base) != KEEL_OK)
        goto done;
    free(tok);
    if (!(tok = mc_map_text(&mm, tx->corpus + ntrain, half, &ntok, NULL)))
        goto oom;
    if (mc_record(&mm, tok, ntok, &cal) != KEEL_OK)
        goto done;
    free(tok);
    tok = NULL;
    r->base_tokens = base.n;
    r->cal_tokens = cal.n;
    for (int k = 0; k < EV_NSRC; k++) {
        if (!(tok = mc_map_text(&mm, srcs[k], slen[k], &ntok, &r->dropped[k])))
            goto oom;
        if (mc_record(&mm, tok, ntok < ntest ? ntok : ntest, &rec[k]) != KEEL_OK)
            goto done;
        free(tok);
        tok = NULL;
        r->tokens[k] = rec[k].n;
        printf("  %-9s %zu tokens (%zu bytes dropped)\n", ev_src_names[k], rec[k].n, r->dropped[k]);
    }
    /* every source and the held-out text need a window of the largest size (a shorter text
     * leaves a detector without a threshold or a test window) */
    const size_t wmax = (size_t)ev_wins[EV_NWIN - 1];
    for (int k = -1; k < EV_NSRC; k++)
        if ((k < 0 ? cal.n : rec[k].n) < wmax) {
            tool_fail(KEEL_EINVAL,
                      "%s: %zu tokens: the evaluation needs at least %zu (its largest window)",
                      k < 0 ? "the held-out text" : ev_src_names[k], k < 0 ? cal.n : rec[k].n,
                      wmax);
            goto done;
        }
    if (keel_monitor_create(&mon, S, NULL))
        goto lib_error;
    for (int s = 0; s < S; s++)
        if (keel_monitor_channels(mon, s, base.width))
            goto lib_error;
    if (mc_feed(mon, &base, 0, base.n) || keel_monitor_fit_ranges(mon) ||
        mc_feed(mon, &base, 0, base.n) || keel_monitor_capture_baseline(mon) ||
        mc_calibrate_windows(mon, &cal, 0, cal.n, ev_wins, EV_NWIN, su->far))
        goto lib_error;
    if (model == 0) {
        char bpath[1400];
        snprintf(bpath, sizeof bpath, "%s/baseline.kmon", out);
        if (keel_monitor_baseline_save(mon, bpath))
            goto lib_error;
    }
    for (int wi = 0; wi < EV_NWIN; wi++) {
        const size_t W = (size_t)ev_wins[wi], ccap = cal.n / (W / 4) + 1;
        size_t ncal, n[EV_NSRC], cap[EV_NSRC];
        if (!(calsc = malloc(ccap * EV_NDET * sizeof(double))))
            goto oom;
        /* thresholds: held-out windows at stride W/4 (more windows for the quantile; it is
         * calibration text, never scored as test) */
        if (score_windows(mon, &cal, W, W / 4, slots, calsc, ccap, &ncal, NULL))
            goto lib_error;
        r->cal_windows[wi] = ncal;
        for (int k = 0; k < EV_NSRC; k++) {
            cap[k] = rec[k].n / W;
            sc[k] = malloc((cap[k] ? cap[k] : 1) * EV_NDET * sizeof(double));
            ss[k] = wi == 1 ? malloc((cap[k] ? cap[k] : 1) * (size_t)S * sizeof(double)) : NULL;
            if (!sc[k] || (wi == 1 && !ss[k]))
                goto oom;
            /* test: non-overlapping windows */
            if (score_windows(mon, &rec[k], W, W, slots, sc[k], cap[k], &n[k], ss[k]))
                goto lib_error;
            r->windows[wi][k] = n[k];
        }
        if (window_stats(su, model, wi, calsc, ncal, ccap, sc, n, cap, r))
            goto done;
        for (int k = 1; wi == 1 && k < EV_NSRC; k++)
            for (int s = 0; s < S && s < EV_MAXSLOTS; s++) {
                double *a = malloc(n[k] * sizeof(double)), *b = malloc(n[0] * sizeof(double));
                if (!a || !b) {
                    free(a), free(b);
                    goto oom;
                }
                for (size_t i = 0; i < n[k]; i++)
                    a[i] = ss[k][i * (size_t)S + (size_t)s];
                for (size_t i = 0; i < n[0]; i++)
                    b[i] = ss[0][i * (size_t)S + (size_t)s];
                r->slot_auc[k][s] = ev_auroc(a, n[k], b, n[0]);
                free(a), free(b);
            }
        free(calsc);
        calsc = NULL;
        for (int k = 0; k < EV_NSRC; k++) {
            free(sc[k]), free(ss[k]);
            sc[k] = ss[k] = NULL;
        }
    }
    if (model == 0) {
        char spath[1400];
        snprintf(spath, sizeof spath, "%s/stream.csv", out);
        if (!(sf = fopen(spath, "w"))) {
            tool_fail(KEEL_EIO, "cannot write %.1000s", spath);
            goto done;
        }
    }
    if (delays(mon, rec, mm.st.cfg.seq, su, slots, sf, r))
        goto done;
    if (model == 0) {
        if (!(tok = mc_map_text(&mm, srcs[0], slen[0], &ntok, NULL)))
            goto oom;
        overhead(&mm, mon, tok, ntok, r);
    }
    rc = 0;
    goto done;
oom:
    tool_fail(KEEL_ENOMEM, "out of memory");
    goto done;
lib_error:
    tool_fail(KEEL_EINVAL, "%s", keel_last_error());
done:
    if (sf && fclose(sf) && rc == 0)
        rc = -1, tool_fail(KEEL_EIO, "cannot write %s/stream.csv", out);
    free(tok);
    free(calsc);
    for (int k = 0; k < EV_NSRC; k++) {
        free(sc[k]), free(ss[k]), free(srcs[k]);
        mc_free_rec(&rec[k]);
    }
    mc_free_rec(&base);
    mc_free_rec(&cal);
    keel_monitor_destroy(mon);
    free(slots);
    mc_free_model(&mm);
    return rc;
}
/* auroc.dat and layers.dat of the first model, and the PNGs plots.gp draws from them and
 * stream.csv. 0, or gnuplot's status. */
static int plots(const char *dir, const ev_model *m)
{
    char path[1400], cmd[3000];
    snprintf(path, sizeof path, "%s/auroc.dat", dir);
    FILE *f = fopen(path, "w");
    for (int wi = 0; f && wi < EV_NWIN; wi++) {
        fprintf(f, "%d", ev_wins[wi]);
        for (int k = 1; k < EV_NSRC; k++)
            fprintf(f, " %.4f %.4f", m->auc[wi][EV_MONITOR][k], m->auc[wi][EV_NLL][k]);
        fprintf(f, "\n");
    }
    if (!f || fclose(f))
        return -1;
    snprintf(path, sizeof path, "%s/layers.dat", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    for (int s = 0; s < m->slots && s < EV_MAXSLOTS; s++) {
        fprintf(f, "%d %s", s, m->slot_name[s]);
        for (int k = 1; k < EV_NSRC; k++)
            fprintf(f, " %.4f", m->slot_auc[k][s]);
        fprintf(f, "\n");
    }
    if (fclose(f))
        return -1;
    snprintf(path, sizeof path, "%s/plots.gp", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(PLOTS_GP, f);
    if (fclose(f))
        return -1;
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot plots.gp", dir);
    return system(cmd);
}

static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: keel monitor eval --checkpoint F [--checkpoint F2 ...] [--out DIR (docs/monitor)]\n"
        "                         [--data FILE] [--jargon FILE] [--false-alarm P (0.01)]\n"
        "                         [--bootstrap N (1000)] [--seed N (2026)] [--threads N (1)]\n\n"
        "Evaluates each checkpoint (at most %d) on clean text and four shifts: the monitor, the\n"
        "per-channel Mahalanobis detector, the NLL, the mean entropy and 1 - max probability, "
        "each\n"
        "thresholded at the false-alarm rate P on held-out clean windows; AUROC and detection "
        "rate\n"
        "with percentile bootstrap intervals (N resamples of windows, the seed printed), the\n"
        "false-alarm rate on the clean test windows and the detection delay. Writes results.md,\n"
        "results.csv, stream.csv and plots into DIR.\n",
        MAX_CKPT);
}

int mc_eval(int argc, char **argv)
{
    const char *ckpts[MAX_CKPT], *out = "docs/monitor", *data = NULL;
    const char *jargon = "/usr/share/doc/jargon-text/jargon.txt.gz";
    int nck = 0, threads = 1, reps = 1000, seed = 2026;
    ev_setup su = {.far = 0.01, .switch_at = 8192, .after = 8192, .step = 64};
    /* --checkpoint may repeat: taken out here, the other options go to keel_opts_parse (which
     * keeps an option's last value) */
    char **rest = malloc((size_t)argc * sizeof *rest);
    if (!rest) {
        fprintf(stderr, "keel monitor eval: out of memory\n");
        return 1;
    }
    int nrest = 0;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--checkpoint") || i + 1 >= argc) {
            rest[nrest++] = argv[i];
            continue;
        }
        if (nck == MAX_CKPT) {
            fprintf(stderr, "keel monitor eval: more than %d checkpoints\n", MAX_CKPT);
            free(rest);
            return 2;
        }
        ckpts[nck++] = argv[++i];
    }
    const keel_opt opts[] = {
        {"--checkpoint", KEEL_OPT_STRING, &ckpts[0], 0, 0, 0}, /* only a value-less last one */
        {"--out", KEEL_OPT_STRING, &out, 0, 0, 0},
        {"--data", KEEL_OPT_STRING, &data, 0, 0, 0},
        {"--jargon", KEEL_OPT_STRING, &jargon, 0, 0, 0},
        {"--false-alarm", KEEL_OPT_DOUBLE, &su.far, 0, 1, KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI},
        {"--bootstrap", KEEL_OPT_INT, &reps, 2, 1000000, 0},
        {"--seed", KEEL_OPT_INT, &seed, 0, 2147483647, 0},
        {"--threads", KEEL_OPT_INT, &threads, 1, KEEL_ARG_MAX_THREADS, 0},
    };
    const int pr =
        keel_opts_parse("monitor eval", nrest, rest, opts, sizeof opts / sizeof opts[0], usage);
    free(rest);
    if (pr != KEEL_OPTS_OK)
        return pr == KEEL_OPTS_HELP ? 0 : 2;
    if (nck == 0) {
        fprintf(
            stderr,
            "keel monitor eval: --checkpoint F (a model from keel train on Tiny Shakespeare) is "
            "required\n\n");
        usage(stderr);
        return 2;
    }
    /* a checkpoint that cannot be opened fails now, not after the models before it ran */
    for (int i = 0; i < nck; i++) {
        FILE *f = fopen(ckpts[i], "rb");
        if (!f) {
            fprintf(stderr, "keel monitor eval: %s: cannot open\n", ckpts[i]);
            return 1;
        }
        fclose(f);
    }
    su.reps = reps;
    su.seed = (uint64_t)seed;
    if (tr_no_cblas("monitor"))
        return 1;
    mkdir(out, 0777);
    const char *dpath = data ? data : tm_data_default_path();
    unsigned char *sh = NULL, *jg = NULL;
    size_t nb = 0, nj = 0;
    if (!dpath)
        tool_fail(KEEL_EINVAL, "no text to evaluate on (--data FILE)");
    else if (mc_read_file(dpath, &sh, &nb) == KEEL_OK)
        mc_read_file(jargon, &jg, &nj);
    if (!sh || !jg) {
        fprintf(stderr, "keel monitor eval: %s%s\n", tool_last_error(),
                sh && !jg ? " (apt-get install jargon-text, or --jargon FILE)" : "");
        free(sh);
        return 1;
    }
    const texts tx = {sh, jg, nb, nj};
    ev_model *m = calloc((size_t)nck, sizeof *m);
    FILE *md = NULL, *csv = NULL;
    char path[1400], cmdline[4096];
    int rc = 1;
    if (!m) {
        tool_fail(KEEL_ENOMEM, "out of memory");
        goto fail;
    }
    printf("keel monitor eval: %d model(s), false-alarm rate %g, bootstrap %d resamples, seed %d\n",
           nck, su.far, reps, seed);
    for (int i = 0; i < nck; i++)
        if (eval_model(ckpts[i], i, &tx, &su, threads, out, &m[i]))
            goto fail;
    const int gp = plots(out, &m[0]);
    /* the command line the results came from, for the results' first line */
    int at = snprintf(cmdline, sizeof cmdline, "keel monitor eval");
    for (int i = 0; i < nck && at < (int)sizeof cmdline; i++)
        at += snprintf(cmdline + at, sizeof cmdline - (size_t)at, " --checkpoint %s", ckpts[i]);
    if (at < (int)sizeof cmdline)
        snprintf(cmdline + at, sizeof cmdline - (size_t)at,
                 " --out %s --false-alarm %g --bootstrap %d --seed %d", out, su.far, reps, seed);
    snprintf(path, sizeof path, "%s/results.md", out);
    md = fopen(path, "w");
    snprintf(path + strlen(path) - 2, 4, "csv");
    csv = md ? fopen(path, "w") : NULL;
    if (!md || !csv || ev_write_results(md, csv, &su, m, nck, cmdline)) {
        tool_fail(KEEL_EIO, "cannot write %s/results.md or results.csv", out);
        goto fail;
    }
    int e1 = fclose(md), e2 = fclose(csv);
    md = csv = NULL;
    if (e1 || e2) {
        tool_fail(KEEL_EIO, "cannot write %s/results.md or results.csv", out);
        goto fail;
    }
    printf("results: %s/results.md, results.csv, plots %s\n", out,
           gp == 0 ? "stream.png stream_nll.png auroc.png layers.png" : "FAILED (gnuplot?)");
    if (m[0].t_plain > 0)
        printf("overhead: observe %.4f s of a %.3f s forward (%.2f%%)\n", m[0].t_obs, m[0].t_plain,
               100.0 * m[0].t_obs / m[0].t_plain);
    rc = 0;
fail:
    if (rc)
        fprintf(stderr, "keel monitor eval: %s\n", tool_last_error());
    if (md)
        fclose(md);
    if (csv)
        fclose(csv);
    free(m);
    free(sh);
    free(jg);
    return rc;
}
