/* keel monitor faults: injected weight faults, does the monitor see them and does the
 * alarm name the right layer? The text's first half is the baseline, its third quarter sets the
 * thresholds (windows of --window tokens at --false-alarm P), its last quarter is scored with
 * the clean model and then with one fault at a time in one sublayer:
 *   scale x2, scale x10  the sublayer's output projection (w2) multiplied by 2 or 10;
 *   bitflip e30          bit 30 (the exponent's top bit) of one weight of its first matrix
 *                        (w1) flipped: a weight of 0.02 becomes about 7e36;
 *   bitflip e26          bit 26 flipped: that weight multiplied or divided by 256.
 * Per fault: the share of windows that alarm (the summaries' calibrated threshold; any window
 * with non-finite norm statistics alarms too), the share of alarms whose top layer (the norm
 * and statistic that moved most) is the right one, and the same for the per-channel detector's
 * top norm; and the change of the model's mean negative log-likelihood on the scored text (a
 * fault that leaves it unchanged changed nothing the model computes: a weight that only feeds
 * a unit the activation zeroes). The right layer is the first norm downstream of the fault: the
 * next sublayer's input norm (pre-norm), the sublayer's residual norm (post-norm, DeepNorm) or its
 * output norm (sandwich); the final norm after the last sublayer. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_faults.h"
#include "numarg.h"
#include "options.h"
#include "recording.h"

typedef struct fault {
    const char *name;
    double scale; /* > 0: w2 *= scale */
    int bit;      /* >= 0: flip this bit of one w1 weight */
} fault;

static const fault faults[] = {
    {"scale x2", 2.0, -1}, {"scale x10", 10.0, -1}, {"bitflip e30", 0, 30}, {"bitflip e26", 0, 26}};
#define NFAULT (int)(sizeof faults / sizeof faults[0])

/* Sublayer index (2 l + 0 attention, 1 MLP; 2 * layers for the final norm) and role (0 in,
 * 1 out, 2 res) of a slot, from its name. */
static void slot_place(const mc_model *mm, int slot, int *sub, int *role)
{
    char name[32], kind[8] = "", rl[8] = "";
    int l = 0;
    tm_monitor_slot_name(&mm->m, slot, name, sizeof name);
    *sub = 2 * mm->st.cfg.layers;
    *role = 0;
    if (sscanf(name, "L%d.%7[a-z].%7[a-z]", &l, kind, rl) == 3) {
        *sub = 2 * l + (strcmp(kind, "mlp") == 0);
        *role = !strcmp(rl, "out") ? 1 : !strcmp(rl, "res") ? 2 : 0;
    }
}

/* The first norm that reads what sublayer k wrote. */
static int right_slot(const mc_model *mm, int k)
{
    for (int s = 0; s < mm->slots; s++) {
        int sub, role;
        slot_place(mm, s, &sub, &role);
        if (sub > k || (sub == k && role > 0))
            return s;
    }
    return mm->slots - 1;
}

/* The slot and statistic whose standardised component moved most (-1 when none). */
static int top_slot(const keel_monitor_slot_score *sc, int slots)
{
    double best = -INFINITY;
    int at = -1;
    for (int s = 0; s < slots; s++)
        for (int t = 0; t < 2; t++)
            for (int c = 0; c < 3; c++)
                if (sc[s].standardised[t][c] > best)
                    best = sc[s].standardised[t][c], at = s;
    return at;
}

/* The slot whose top channel moved most (-1 when no slot has per-channel statistics). */
static int top_channel_slot(const keel_monitor_slot_score *sc, int slots)
{
    double best = -1.0;
    int at = -1;
    for (int s = 0; s < slots; s++)
        if (fabs(sc[s].top_channel_z) > best)
            best = fabs(sc[s].top_channel_z), at = s;
    return at;
}

typedef struct tally {
    size_t windows, alarms, right, right_ch, nonfinite;
} tally;

/* Scores the windows of W tokens of rec; `right` is the slot an alarm should name (-1: clean). */
static int score(keel_monitor *mon, const mc_rec *rec, size_t W, int right,
                 keel_monitor_slot_score *sc, tally *t)
{
    memset(t, 0, sizeof *t);
    for (size_t p = 0; p + W <= rec->n; p += W) {
        keel_monitor_result res;
        if (keel_monitor_reset_window(mon) || mc_feed(mon, rec, p, p + W) ||
            keel_monitor_score(mon, sc, &res))
            return -1;
        int bad = 0, first_bad = -1;
        for (int s = 0; s < rec->slots; s++)
            if (sc[s].bad_rows > 0) {
                bad = 1;
                first_bad = first_bad < 0 ? s : first_bad;
            }
        const int alarm = res.alarm || bad;
        t->windows++;
        t->alarms += alarm;
        t->nonfinite += bad;
        if (alarm && right >= 0) {
            /* non-finite statistics name the first norm that had them; else the top component */
            const int top = bad ? first_bad : top_slot(sc, rec->slots);
            t->right += top == right;
            t->right_ch += top_channel_slot(sc, rec->slots) == right;
        }
    }
    return 0;
}

/* part / whole as "12.5%", or "-" when whole is 0: the share of alarms that name the right norm
 * has no value where no window alarmed (it printed "nan%"). */
static void share(char *buf, size_t n, size_t part, size_t whole)
{
    if (whole)
        snprintf(buf, n, "%.1f%%", 100.0 * (double)part / (double)whole);
    else
        snprintf(buf, n, "-");
}

static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: keel monitor faults --checkpoint F --text FILE [--window N (256)]\n"
        "                           [--false-alarm P (0.01)] [--tokens N (65536)] [--out FILE.md]\n"
        "                           [--threads N (1)]\n\n"
        "Injects weight faults into one sublayer at a time (output projection scaled by 2 and\n"
        "10, one weight's exponent bit 30 or 26 flipped) and reports the share of windows that\n"
        "alarm and of alarms that name the right layer (the first norm after the fault).\n");
}

int mc_faults(int argc, char **argv)
{
    const char *ckpt = NULL, *text = NULL, *out = NULL;
    int window = 256, tokens = 65536, threads = 1;
    double far = 0.01;
    const keel_opt opts[] = {
        {"--checkpoint", KEEL_OPT_STRING, &ckpt, 0, 0, 0},
        {"--text", KEEL_OPT_STRING, &text, 0, 0, 0},
        {"--out", KEEL_OPT_STRING, &out, 0, 0, 0},
        {"--window", KEEL_OPT_INT, &window, 16, 1 << 20, 0},
        {"--tokens", KEEL_OPT_INT, &tokens, 64, 1 << 26, 0},
        {"--threads", KEEL_OPT_INT, &threads, 1, KEEL_ARG_MAX_THREADS, 0},
        {"--false-alarm", KEEL_OPT_DOUBLE, &far, 0, 1, KEEL_ARG_OPEN_LO | KEEL_ARG_OPEN_HI},
    };
    const int pr = keel_opts_parse("monitor faults", argc, argv, opts, sizeof opts / sizeof opts[0],
                                   usage);
    if (pr != KEEL_OPTS_OK)
        return pr == KEEL_OPTS_HELP ? 0 : 2;
    if (!ckpt || !text) {
        fprintf(stderr, "keel monitor faults: --checkpoint and --text are required\n\n");
        usage(stderr);
        return 2;
    }
    if (tr_no_cblas("monitor"))
        return 1;
    mc_model mm;
    if (mc_load_model(&mm, ckpt, threads) != KEEL_OK) {
        fprintf(stderr, "keel monitor faults: %s\n", tool_last_error());
        return 1;
    }
    mm.channels = 1;
    int rc = 1;
    unsigned char *bytes = NULL;
    int *tok = NULL;
    float *saved = NULL;
    keel_monitor *mon = NULL;
    keel_monitor_slot_score *sc = NULL;
    FILE *md = NULL;
    mc_rec base = {0}, cal = {0}, test = {0};
    size_t nb, ntok;
    if (mc_read_file(text, &bytes, &nb) != KEEL_OK) {
        fprintf(stderr, "keel monitor faults: %s\n", tool_last_error());
        goto done;
    }
    tok = mc_map_text(&mm, bytes, nb, &ntok, NULL);
    saved = malloc(mm.m.nparams * sizeof(float));
    sc = malloc((size_t)mm.slots * sizeof *sc);
    if (!tok || !saved || !sc) {
        fprintf(stderr, "keel monitor faults: out of memory\n");
        goto done;
    }
    if (ntok > (size_t)tokens)
        ntok = (size_t)tokens;
    const size_t q = ntok / 4, W = (size_t)window;
    if (q < 2 * W) {
        fprintf(stderr, "keel monitor faults: %zu tokens: each quarter needs two windows of %zu\n",
                ntok, W);
        goto done;
    }
    if (mc_record(&mm, tok, 2 * q, &base) || mc_record(&mm, tok + 2 * q, q, &cal) ||
        mc_record(&mm, tok + 3 * q, q, &test)) {
        fprintf(stderr, "keel monitor faults: %s\n", tool_last_error());
        goto done;
    }
    int sizes[1] = {window};
    if (keel_monitor_create(&mon, mm.slots, NULL)) {
        fprintf(stderr, "keel monitor faults: %s\n", keel_last_error());
        goto done;
    }
    for (int s = 0; s < mm.slots && base.width && base.n >= 2 * base.group; s++)
        if (keel_monitor_channels(mon, s, base.width)) {
            fprintf(stderr, "keel monitor faults: %s\n", keel_last_error());
            goto done;
        }
    if (mc_feed(mon, &base, 0, base.n) || keel_monitor_fit_ranges(mon) ||
        mc_feed(mon, &base, 0, base.n) || keel_monitor_capture_baseline(mon) ||
        mc_calibrate_windows(mon, &cal, 0, cal.n, sizes, 1, far)) {
        fprintf(stderr, "keel monitor faults: %s\n", keel_last_error());
        goto done;
    }
    if (out && !(md = fopen(out, "w"))) {
        fprintf(stderr, "keel monitor faults: cannot write %s\n", out);
        goto done;
    }
    tally t;
    if (score(mon, &test, W, -1, sc, &t)) {
        fprintf(stderr, "keel monitor faults: %s\n", keel_last_error());
        goto done;
    }
    char head[256];
    snprintf(head, sizeof head,
             "baseline %zu tokens, thresholds on %zu, scored %zu in %zu windows of %zu (false "
             "alarm %g)\n",
             base.n, cal.n, test.n, t.windows, W, far);
    printf("%s", head);
    const double nll0 = mc_nll(&test, 0, test.n);
    printf("%-12s %-8s %-11s %8s %12s %13s %10s %10s\n", "fault", "in", "right norm", "alarms",
           "named right", "channel right", "non-finite", "NLL change");
    printf("%-12s %-8s %-11s %7.1f%% %12s %13s %10s %10s\n", "none", "-", "-",
           100.0 * t.alarms / t.windows, "-", "-", "-", "-");
    if (md) {
        fprintf(md, "# keel monitor faults\n\n%s\n", head);
        fprintf(md, "| fault | in | right norm | windows alarmed | alarms naming it | channel "
                    "detector naming it "
                    "| windows with non-finite statistics | NLL change (nats) "
                    "|\n|---|---|---|---|---|---|---|---|\n");
        fprintf(md, "| none | - | - | %.1f%% | - | - | - | - |\n", 100.0 * t.alarms / t.windows);
    }
    memcpy(saved, mm.m.params, mm.m.nparams * sizeof(float));
    size_t total = 0, named = 0, alarmed = 0;
    for (int k = 0; k < 2 * mm.st.cfg.layers; k++)
        for (int f = 0; f < NFAULT; f++) {
            const tm_sub *s = &mm.m.sub[k];
            const size_t C = (size_t)mm.st.cfg.width;
            if (faults[f].scale > 0) {
                const size_t n = (k % 2 ? 4 * C : C) * C;
                for (size_t i = 0; i < n; i++)
                    mm.m.params[s->w2 + i] *= (float)faults[f].scale;
            } else {
                float *w = &mm.m.params[s->w1 + C / 2]; /* one weight of the first matrix */
                uint32_t u;
                memcpy(&u, w, 4);
                u ^= 1u << faults[f].bit;
                memcpy(w, &u, 4);
            }
            mc_rec frec;
            keel_status st = mc_record(&mm, tok + 3 * q, q, &frec);
            memcpy(mm.m.params, saved, mm.m.nparams * sizeof(float));
            char where[32], rname[32];
            snprintf(where, sizeof where, "L%d.%s", k / 2, k % 2 ? "mlp" : "attn");
            const int right = right_slot(&mm, k);
            tm_monitor_slot_name(&mm.m, right, rname, sizeof rname);
            if (st != KEEL_OK) { /* the model itself failed: the monitor has nothing to score */
                printf("%-12s %-8s %-11s   the forward failed: %s\n", faults[f].name, where, rname,
                       tool_last_error());
                continue;
            }
            int e = score(mon, &frec, W, right, sc, &t);
            const double dnll = mc_nll(&frec, 0, frec.n) - nll0;
            mc_free_rec(&frec);
            if (e) {
                fprintf(stderr, "keel monitor faults: %s\n", keel_last_error());
                goto done;
            }
            total += t.windows;
            alarmed += t.alarms;
            named += t.right;
            char ra[16], rc2[16];
            share(ra, sizeof ra, t.right, t.alarms);
            share(rc2, sizeof rc2, t.right_ch, t.alarms);
            printf("%-12s %-8s %-11s %7.1f%% %12s %13s %9.1f%% %+10.4f\n", faults[f].name, where,
                   rname, 100.0 * t.alarms / t.windows, ra, rc2, 100.0 * t.nonfinite / t.windows,
                   dnll);
            if (md)
                fprintf(md, "| %s | %s | %s | %.1f%% | %s | %s | %.1f%% | %+.4f |\n",
                        faults[f].name, where, rname, 100.0 * t.alarms / t.windows, ra, rc2,
                        100.0 * t.nonfinite / t.windows, dnll);
        }
    printf("all faults: %.1f%% of windows alarmed, %.1f%% of the alarms name the right norm\n",
           total ? 100.0 * alarmed / total : 0.0, alarmed ? 100.0 * named / alarmed : 0.0);
    if (md) {
        fprintf(
            md,
            "\nAll faults: %.1f%% of windows alarmed, %.1f%% of the alarms name the right norm.\n",
            total ? 100.0 * alarmed / total : 0.0, alarmed ? 100.0 * named / alarmed : 0.0);
        int werr = ferror(md), cerr = fclose(md);
        md = NULL;
        if (werr || cerr) {
            fprintf(stderr, "keel monitor faults: cannot write %s\n", out);
            goto done;
        }
        printf("report: %s\n", out);
    }
    rc = 0;
done:
    if (md)
        fclose(md);
    mc_free_rec(&base);
    mc_free_rec(&cal);
    mc_free_rec(&test);
    keel_monitor_destroy(mon);
    free(sc);
    free(saved);
    free(tok);
    free(bytes);
    mc_free_model(&mm);
    return rc;
}
