/* keel monitor eval (issue 8): does the monitor detect distribution shift, against the model's
 * own log-likelihood? Writes report.md, CSVs and gnuplot PNGs into a folder (docs/monitor). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "data.h"
#include "monitor_eval.h"
#include "numarg.h"
#include "options.h"
#include "recording.h"
#include "rng.h"

#define NSRC 5 /* clean + 4 shifts */
#define NWIN 3
static const char *const src_names[NSRC] = {"clean", "jargon", "shuffled", "flipcase", "random"};
static const char *const src_desc[NSRC] = {
    "Tiny Shakespeare validation text (second half), in distribution",
    "the Jargon File (Debian jargon-text), bytes outside the vocabulary dropped",
    "the clean text with its words shuffled",
    "the clean text with upper and lower case swapped",
    "random characters drawn uniformly from the model's vocabulary"};
static const int wins[NWIN] = {64, 256, 1024};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* AUROC of pos vs neg scores (higher = positive), ties counted half. */
static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double auroc(const double *pos, size_t np, const double *neg, size_t nn)
{
    double *s = malloc(nn * sizeof(double));
    memcpy(s, neg, nn * sizeof(double));
    qsort(s, nn, sizeof(double), cmpd);
    double sum = 0.0;
    for (size_t i = 0; i < np; i++) {
        size_t lo = 0, hi = nn; /* count neg < pos[i] and == */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (s[mid] < pos[i]) lo = mid + 1; else hi = mid;
        }
        size_t less = lo, eq = 0;
        while (less + eq < nn && s[less + eq] == pos[i])
            eq++;
        sum += (double)less + 0.5 * (double)eq;
    }
    free(s);
    return np && nn ? sum / ((double)np * (double)nn) : NAN;
}

static double quantile_thr(const double *v, size_t n, double far)
{
    double *s = malloc(n * sizeof(double));
    memcpy(s, v, n * sizeof(double));
    qsort(s, n, sizeof(double), cmpd);
    double pos = ceil((1.0 - far) * (double)n) - 1.0;
    size_t i = pos < 0 ? 0 : (size_t)pos >= n ? n - 1 : (size_t)pos;
    double t = s[i];
    free(s);
    return t;
}

/* Shuffle the words of a text (whitespace stays where it was). */
static void shuffle_words(unsigned char *t, size_t n, tm_rng *rng)
{
    size_t nw = 0, cap = n / 2 + 1;
    size_t *st = malloc(cap * sizeof(size_t)), *ln = malloc(cap * sizeof(size_t));
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
    size_t *perm = malloc(nw * sizeof(size_t));
    for (size_t i = 0; i < nw; i++)
        perm[i] = i;
    for (size_t i = nw; i > 1; i--) {
        size_t j = tm_rng_below(rng, i), x = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = x;
    }
    unsigned char *out = malloc(n), *src = malloc(n);
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
    free(out); free(src); free(perm); free(st); free(ln);
}

static int plot(const char *dir, const char *script)
{
    char path[1400], cmd[3000];
    snprintf(path, sizeof path, "%s/plots.gp", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot plots.gp", dir);
    return system(cmd);
}

int mc_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *out = "docs/monitor", *data = NULL;
    const char *jargon = "/usr/share/doc/jargon-text/jargon.txt.gz";
    double far = 0.01;
    int threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "keel monitor eval: missing value or unknown option '%s' (see keel monitor --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--checkpoint")) ckpt = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--jargon")) jargon = v;
        else if (!strcmp(a, "--false-alarm"))
            bad = keel_arg_double("monitor eval", a, v, 0, 1, KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI, &far);
        else if (!strcmp(a, "--threads")) bad = keel_arg_int("monitor eval", a, v, 1, KEEL_ARG_MAX_THREADS, &threads);
        else {
            fprintf(stderr, "keel monitor eval: unknown option '%s'\n", a);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!ckpt) {
        fprintf(stderr, "keel monitor eval: --checkpoint F (a model from keel train on Tiny Shakespeare) is required\n");
        return 2;
    }
    if (tr_no_cblas("monitor"))
        return 1;
    mc_model mm;
    if (mc_load_model(&mm, ckpt, threads) != KEEL_OK) {
        fprintf(stderr, "keel monitor eval: %s\n", tool_last_error());
        return 1;
    }
    mkdir(out, 0777);
    const char *dpath = data ? data : tm_data_default_path();
    size_t nb = 0, nj = 0;
    unsigned char *sh = NULL, *jg = NULL;
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
    /* the corpus split of keel train: first 90% train, last 10% validation */
    size_t ntrain = nb * 9 / 10, nval = nb - ntrain, half = nval / 2;
    const size_t base_len = ntrain < 131072 ? ntrain : 131072;
    const unsigned char *basetxt = sh + ntrain - base_len, *caltxt = sh + ntrain, *testtxt = sh + ntrain + half;
    size_t ntest = nval - half;
    tm_rng rng = {12345};
    unsigned char *srcs[NSRC];
    size_t slen[NSRC];
    for (int k = 0; k < NSRC; k++) {
        slen[k] = ntest;
        srcs[k] = malloc(ntest);
    }
    memcpy(srcs[0], testtxt, ntest);
    size_t joff = nj > 300000 + ntest ? 300000 : 0; /* past the front matter, into the glossary */
    slen[1] = nj - joff < ntest * 2 ? nj - joff : ntest * 2; /* ~ntest after dropping foreign bytes */
    srcs[1] = realloc(srcs[1], slen[1]);
    memcpy(srcs[1], jg + joff, slen[1]);
    memcpy(srcs[2], testtxt, ntest);
    shuffle_words(srcs[2], ntest, &rng);
    for (size_t i = 0; i < ntest; i++) {
        unsigned char c = testtxt[i];
        srcs[3][i] = (unsigned char)(c >= 'a' && c <= 'z' ? c - 32 : c >= 'A' && c <= 'Z' ? c + 32 : c);
        srcs[4][i] = mm.st.chars[tm_rng_below(&rng, (uint64_t)mm.st.vocab)];
    }
    printf("keel monitor eval: model %s (%d layers, width %d, %s), %d norms monitored\n", ckpt, mm.st.cfg.layers,
           mm.st.cfg.width, tm_norm_name(mm.st.cfg.norm), mm.slots);
    /* record everything */
    mc_rec base, cal, rec[NSRC];
    size_t dropped[NSRC], ntok;
    int *tok = mc_map_text(&mm, basetxt, base_len, &ntok, NULL);
    if (mc_record(&mm, tok, ntok, &base) != KEEL_OK) goto fail;
    free(tok);
    tok = mc_map_text(&mm, caltxt, half, &ntok, NULL);
    if (mc_record(&mm, tok, ntok, &cal) != KEEL_OK) goto fail;
    free(tok);
    for (int k = 0; k < NSRC; k++) {
        tok = mc_map_text(&mm, srcs[k], slen[k], &ntok, &dropped[k]);
        if (ntok > ntest)
            ntok = ntest;
        if (mc_record(&mm, tok, ntok, &rec[k]) != KEEL_OK) goto fail;
        free(tok);
        printf("  %-9s %zu tokens (%zu bytes dropped)\n", src_names[k], rec[k].n, dropped[k]);
    }
    tok = NULL;
    /* baseline and calibration */
    keel_monitor *mon = NULL;
    if (keel_monitor_create(&mon, mm.slots, NULL) || mc_feed(mon, &base, 0, base.n) || keel_monitor_fit_ranges(mon) ||
        mc_feed(mon, &base, 0, base.n) || keel_monitor_capture_baseline(mon) ||
        mc_calibrate_windows(mon, &cal, 0, cal.n, wins, NWIN, far)) {
        tool_fail(KEEL_EINVAL, "%s", keel_last_error());
        goto fail;
    }
    char bpath[1400];
    snprintf(bpath, sizeof bpath, "%s/baseline.kmon", out);
    keel_monitor_baseline_save(mon, bpath);
    /* scores of windows (stride w/2) for every source and size; LL baseline thresholds on cal */
    const int S = mm.slots;
    double aur[NWIN][NSRC], aur_ll[NWIN][NSRC], farm[NWIN], farl[NWIN], thr_ll[NWIN], slot_auc[NSRC][64];
    double *sc[NSRC], *ll[NSRC], *ss[NSRC];
    size_t nwk[NSRC];
    keel_monitor_slot_score *slots = malloc((size_t)S * sizeof *slots);
    for (int wi = 0; wi < NWIN; wi++) {
        size_t W = (size_t)wins[wi], stride = W / 2;
        size_t ncw = 0;
        double *cl = malloc((cal.n / stride + 1) * sizeof(double));
        for (size_t p = 0; p + W <= cal.n; p += stride)
            cl[ncw++] = mc_nll(&cal, p, p + W);
        thr_ll[wi] = quantile_thr(cl, ncw, far);
        free(cl);
        for (int k = 0; k < NSRC; k++) {
            size_t cap = rec[k].n / stride + 1, n = 0;
            sc[k] = malloc(cap * sizeof(double));
            ll[k] = malloc(cap * sizeof(double));
            ss[k] = malloc(cap * (size_t)S * sizeof(double));
            for (size_t p = 0; p + W <= rec[k].n; p += stride, n++) {
                keel_monitor_result res;
                keel_monitor_reset_window(mon);
                mc_feed(mon, &rec[k], p, p + W);
                keel_monitor_score(mon, slots, &res);
                sc[k][n] = res.combined;
                ll[k][n] = mc_nll(&rec[k], p, p + W);
                for (int s = 0; s < S; s++)
                    ss[k][n * S + s] = slots[s].score;
                if (k == 0 && p == 0)
                    farm[wi] = res.threshold; /* stash the threshold */
            }
            nwk[k] = n;
        }
        double thr = farm[wi];
        size_t fa = 0, fl = 0;
        for (size_t i = 0; i < nwk[0]; i++) {
            fa += sc[0][i] > thr;
            fl += ll[0][i] > thr_ll[wi];
        }
        farm[wi] = (double)fa / nwk[0];
        farl[wi] = (double)fl / nwk[0];
        for (int k = 1; k < NSRC; k++) {
            aur[wi][k] = auroc(sc[k], nwk[k], sc[0], nwk[0]);
            aur_ll[wi][k] = auroc(ll[k], nwk[k], ll[0], nwk[0]);
            if (wi == 1)
                for (int s = 0; s < S && s < 64; s++) {
                    double *a = malloc(nwk[k] * sizeof(double)), *b = malloc(nwk[0] * sizeof(double));
                    for (size_t i = 0; i < nwk[k]; i++) a[i] = ss[k][i * S + s];
                    for (size_t i = 0; i < nwk[0]; i++) b[i] = ss[0][i * S + s];
                    slot_auc[k][s] = auroc(a, nwk[k], b, nwk[0]);
                    free(a);
                    free(b);
                }
        }
        for (int k = 0; k < NSRC; k++) {
            free(sc[k]); free(ll[k]); free(ss[k]);
        }
    }
    /* detection delay: a stream of clean text that switches to a shift at token SW; a sliding
     * window of W tokens is scored every 64 tokens; delay = first alarm at or after the switch
     * (the window's end) minus the switch. Both detectors; the clean part counts false alarms. */
    const size_t SW = 8192, SEG = 8192, STEP = 64;
    double delay[NWIN][NSRC], delay_ll[NWIN][NSRC];
    int prefa[NWIN][NSRC];
    char spath[1400];
    snprintf(spath, sizeof spath, "%s/stream.csv", out);
    FILE *sf = fopen(spath, "w");
    for (int wi = 0; wi < NWIN; wi++) {
        size_t W = (size_t)wins[wi];
        for (int k = 1; k < NSRC; k++) {
            delay[wi][k] = delay_ll[wi][k] = NAN;
            prefa[wi][k] = 0;
            size_t segb = rec[k].n < SEG ? rec[k].n : SEG;
            /* a stitched recording: clean [0, SW) then shift [0, segb) */
            mc_rec st = {.n = SW + segb, .slots = S, .has_mean = rec[0].has_mean};
            st.rstd = malloc((size_t)S * st.n * sizeof(float));
            st.mean = st.has_mean ? malloc((size_t)S * st.n * sizeof(float)) : NULL;
            st.ll = malloc(st.n * sizeof(float));
            for (int s = 0; s < S; s++) {
                memcpy(st.rstd + (size_t)s * st.n, rec[0].rstd + (size_t)s * rec[0].n, SW * sizeof(float));
                memcpy(st.rstd + (size_t)s * st.n + SW, rec[k].rstd + (size_t)s * rec[k].n, segb * sizeof(float));
                if (st.mean) {
                    memcpy(st.mean + (size_t)s * st.n, rec[0].mean + (size_t)s * rec[0].n, SW * sizeof(float));
                    memcpy(st.mean + (size_t)s * st.n + SW, rec[k].mean + (size_t)s * rec[k].n, segb * sizeof(float));
                }
            }
            memcpy(st.ll, rec[0].ll, SW * sizeof(float));
            memcpy(st.ll + SW, rec[k].ll, segb * sizeof(float));
            for (size_t e = W; e <= st.n; e += STEP) {
                keel_monitor_result res;
                keel_monitor_reset_window(mon);
                mc_feed(mon, &st, e - W, e);
                keel_monitor_score(mon, NULL, &res);
                double nl = mc_nll(&st, e - W, e);
                if (e <= SW) {
                    prefa[wi][k] += res.alarm;
                } else {
                    if (res.alarm && delay[wi][k] != delay[wi][k])
                        delay[wi][k] = (double)(e - SW);
                    if (nl > thr_ll[wi] && delay_ll[wi][k] != delay_ll[wi][k])
                        delay_ll[wi][k] = (double)(e - SW);
                }
                if (sf && wi == 1)
                    fprintf(sf, "%s %zu %.5g %.5g %.5g %.5g\n", src_names[k], e, res.combined, res.threshold, nl,
                            thr_ll[wi]);
            }
            if (sf && wi == 1)
                fprintf(sf, "\n\n");
            mc_free_rec(&st);
        }
    }
    if (sf)
        fclose(sf);
    /* overhead: forward over the clean text with and without the monitor attached (best of 3) */
    double t_plain = INFINITY, t_mon = INFINITY, t_obs = INFINITY;
    {
        const int T = mm.st.cfg.seq, B = mm.m.max_batch;
        size_t nblk = rec[0].n / (size_t)T;
        tok = mc_map_text(&mm, srcs[0], slen[0], &ntok, NULL);
        for (int rep = 0; rep < 3; rep++)
            for (int with = 0; with < 2; with++) {
                mm.m.monitor = with ? mon : NULL;
                mm.m.monitor_seconds = 0;
                keel_monitor_reset_window(mon);
                double t0 = now_s();
                for (size_t b0 = 0; b0 + (size_t)B <= nblk; b0 += (size_t)B)
                    tm_forward(&mm.m, tok + b0 * T, NULL, B, T);
                double t = now_s() - t0;
                if (with) {
                    t_mon = t < t_mon ? t : t_mon;
                    t_obs = mm.m.monitor_seconds < t_obs ? mm.m.monitor_seconds : t_obs;
                } else {
                    t_plain = t < t_plain ? t : t_plain;
                }
            }
        mm.m.monitor = NULL;
        free(tok);
        tok = NULL;
    }
    /* the report */
    char path[1400];
    snprintf(path, sizeof path, "%s/results.csv", out);
    FILE *rc = fopen(path, "w");
    if (rc) {
        fprintf(rc, "window,shift,auroc_monitor,auroc_nll,delay_monitor,delay_nll,false_alarms_before_switch\n");
        for (int wi = 0; wi < NWIN; wi++)
            for (int k = 1; k < NSRC; k++)
                fprintf(rc, "%d,%s,%.4f,%.4f,%.0f,%.0f,%d\n", wins[wi], src_names[k], aur[wi][k], aur_ll[wi][k],
                        delay[wi][k], delay_ll[wi][k], prefa[wi][k]);
        fclose(rc);
    }
    snprintf(path, sizeof path, "%s/auroc.dat", out);
    FILE *af = fopen(path, "w");
    for (int wi = 0; af && wi < NWIN; wi++) {
        fprintf(af, "%d", wins[wi]);
        for (int k = 1; k < NSRC; k++)
            fprintf(af, " %.4f %.4f", aur[wi][k], aur_ll[wi][k]);
        fprintf(af, "\n");
    }
    if (af) fclose(af);
    snprintf(path, sizeof path, "%s/layers.dat", out);
    FILE *lf = fopen(path, "w");
    for (int s = 0; lf && s < S && s < 64; s++) {
        char name[32];
        tm_monitor_slot_name(&mm.m, s, name, sizeof name);
        fprintf(lf, "%d %s", s, name);
        for (int k = 1; k < NSRC; k++)
            fprintf(lf, " %.4f", slot_auc[k][s]);
        fprintf(lf, "\n");
    }
    if (lf) fclose(lf);
    int gp = plot(out,
                  "set terminal pngcairo size 1000,700 font ',10'\n"
                  "set output 'stream.png'\n"
                  "set multiplot layout 4,1 title 'combined monitor score (window 256, every 64 tokens); the source switches at token 8192'\n"
                  "set key top left; set xrange [0:16384]; set arrow 1 from 8192, graph 0 to 8192, graph 1 nohead dt 3\n"
                  "do for [i=0:3] { name = word('jargon shuffled flipcase random', i+1)\n"
                  "  set ylabel name; plot 'stream.csv' index i using 2:3 with lines lw 2 title 'monitor', '' index i using 2:4 with lines dt 2 lc 'red' title 'threshold' }\n"
                  "unset multiplot\n"
                  "set output 'stream_nll.png'\n"
                  "set multiplot layout 4,1 title 'baseline detector: mean NLL of the window (256), same streams'\n"
                  "do for [i=0:3] { name = word('jargon shuffled flipcase random', i+1)\n"
                  "  set ylabel name; plot 'stream.csv' index i using 2:5 with lines lw 2 lc 'dark-green' title 'NLL (nats)', '' index i using 2:6 with lines dt 2 lc 'red' title 'threshold' }\n"
                  "unset multiplot; unset arrow 1; set xrange [*:*]\n"
                  "set output 'auroc.png'\n"
                  "set terminal pngcairo size 900,500\n"
                  "set logscale x 2; set xlabel 'window (tokens)'; set ylabel 'AUROC (shift vs clean)'; set yrange [0.4:1.02]; set key bottom right\n"
                  "set title 'AUROC per window size: monitor (solid) vs model NLL (dashed)'\n"
                  "plot for [k=0:3] 'auroc.dat' using 1:(column(2+2*k)) with linespoints lw 2 lc k+1 title word('jargon shuffled flipcase random',k+1).' monitor', \\\n"
                  "     for [k=0:3] 'auroc.dat' using 1:(column(3+2*k)) with linespoints dt 2 lc k+1 title word('jargon shuffled flipcase random',k+1).' NLL'\n"
                  "unset logscale x\n"
                  "set output 'layers.png'\n"
                  "set title 'which norms carry the signal: AUROC of each norm alone (window 256)'\n"
                  "set style data histograms; set style histogram clustered gap 1; set style fill solid 0.8; set xtics rotate by -45\n"
                  "set xlabel ''; set yrange [0:1.05]; set key outside right\n"
                  "plot 'layers.dat' using 3:xtic(2) title 'jargon', '' using 4 title 'shuffled', '' using 5 title 'flipcase', '' using 6 title 'random'\n");
    snprintf(path, sizeof path, "%s/results.md", out);
    FILE *md = fopen(path, "w");
    if (!md) {
        tool_fail(KEEL_EIO, "cannot write %.1000s", path);
        goto fail;
    }
    fprintf(md, "<!-- written by: keel monitor eval --checkpoint %s --out %s --false-alarm %g -->\n\n", ckpt, out, far);
    fprintf(md, "Model: `%s`, %d layers, width %d, %s (%s), seq %d; %d norms monitored. "
                "Baseline: %zu tokens (the end of the training split); thresholds: %zu tokens (validation, first half), "
                "false-alarm rate %g; test: validation second half and its shifts.\n\n",
            ckpt, mm.st.cfg.layers, mm.st.cfg.width, tm_norm_name(mm.st.cfg.norm), tm_place_name(mm.st.cfg.place),
            mm.st.cfg.seq, S, base.n, cal.n, far);
    fprintf(md, "| source | tokens | bytes dropped | what |\n|---|---|---|---|\n");
    for (int k = 0; k < NSRC; k++)
        fprintf(md, "| %s | %zu | %zu | %s |\n", src_names[k], rec[k].n, dropped[k], src_desc[k]);
    fprintf(md, "\n### AUROC (shift vs clean windows, stride = window/2) and detection delay\n\n"
                "| window | shift | AUROC monitor | AUROC NLL | delay monitor (tokens) | delay NLL (tokens) | monitor false alarms before the switch |\n"
                "|---|---|---|---|---|---|---|\n");
    for (int wi = 0; wi < NWIN; wi++)
        for (int k = 1; k < NSRC; k++) {
            char d1[32], d2[32];
            if (delay[wi][k] == delay[wi][k]) snprintf(d1, sizeof d1, "%.0f", delay[wi][k]); else snprintf(d1, sizeof d1, "not in %zu", SEG);
            if (delay_ll[wi][k] == delay_ll[wi][k]) snprintf(d2, sizeof d2, "%.0f", delay_ll[wi][k]); else snprintf(d2, sizeof d2, "not in %zu", SEG);
            fprintf(md, "| %d | %s | %.3f | %.3f | %s | %s | %d of %zu |\n", wins[wi], src_names[k], aur[wi][k],
                    aur_ll[wi][k], d1, d2, prefa[wi][k], (SW - (size_t)wins[wi]) / STEP + 1);
        }
    fprintf(md, "\n### False-alarm rate on clean text (target %g)\n\n| window | monitor | NLL detector |\n|---|---|---|\n", far);
    for (int wi = 0; wi < NWIN; wi++)
        fprintf(md, "| %d | %.3f | %.3f |\n", wins[wi], farm[wi], farl[wi]);
    fprintf(md, "\n### Which norms carry the signal (AUROC of each norm's own score, window 256)\n\n| norm | jargon | shuffled | flipcase | random |\n|---|---|---|---|---|\n");
    for (int s = 0; s < S && s < 64; s++) {
        char name[32];
        tm_monitor_slot_name(&mm.m, s, name, sizeof name);
        fprintf(md, "| %s | %.3f | %.3f | %.3f | %.3f |\n", name, slot_auc[1][s], slot_auc[2][s], slot_auc[3][s],
                slot_auc[4][s]);
    }
    size_t ftok = (rec[0].n / ((size_t)mm.st.cfg.seq * mm.m.max_batch)) * (size_t)mm.st.cfg.seq * mm.m.max_batch;
    fprintf(md, "\n### Overhead (forward over %zu clean tokens, batches of %d x %d, best of 3, %d thread(s))\n\n"
                "| forward alone | forward + monitor | time inside keel_monitor_observe | overhead |\n|---|---|---|---|\n"
                "| %.3f s | %.3f s | %.4f s | %.2f%% (observe / forward); %.2f%% (end to end) |\n",
            ftok, mm.m.max_batch, mm.st.cfg.seq, threads, t_plain, t_mon, t_obs, 100.0 * t_obs / t_plain,
            100.0 * (t_mon - t_plain) / t_plain);
    fclose(md);
    printf("results: %s/results.md, results.csv, plots %s\n", out, gp == 0 ? "stream.png stream_nll.png auroc.png layers.png" : "FAILED (gnuplot?)");
    printf("overhead: observe %.4f s of a %.3f s forward (%.2f%%)\n", t_obs, t_plain, 100.0 * t_obs / t_plain);
    free(slots);
    keel_monitor_destroy(mon);
    mc_free_rec(&base);
    mc_free_rec(&cal);
    for (int k = 0; k < NSRC; k++) {
        mc_free_rec(&rec[k]);
        free(srcs[k]);
    }
    free(sh);
    free(jg);
    mc_free_model(&mm);
    return 0;
fail:
    fprintf(stderr, "keel monitor eval: %s\n", tool_last_error());
    free(tok);
    mc_free_model(&mm);
    return 1;
}
