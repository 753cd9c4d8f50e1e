/* The report files of keel monitor eval (eval_report.h): Markdown tables and a CSV. */
#include <math.h>
#include <string.h>

#include "eval_report.h"

const char *const ev_src_names[EV_NSRC] = {"clean", "jargon", "shuffled", "flipcase", "random"};
const char *const ev_src_desc[EV_NSRC] = {
    "Tiny Shakespeare validation text (second half), in distribution",
    "the Jargon File (Debian jargon-text), bytes outside the vocabulary dropped",
    "the clean text with its words shuffled", "the clean text with upper and lower case swapped",
    "random characters drawn uniformly from the model's vocabulary"};
const int ev_wins[EV_NWIN] = {64, 256, 1024};

/* mean, min and max of one number over the models */
typedef struct spread {
    double mean, lo, hi;
} spread;

static spread over_models(const ev_model *m, int nm, size_t offset)
{
    spread s = {0.0, INFINITY, -INFINITY};
    for (int i = 0; i < nm; i++) {
        double v;
        memcpy(&v, (const char *)&m[i] + offset, sizeof v);
        s.mean += v / nm;
        s.lo = v < s.lo ? v : s.lo;
        s.hi = v > s.hi ? v : s.hi;
    }
    return s;
}

#define AT(field) ((size_t)((const char *)&(field) - (const char *)m))

static void print_spread(FILE *f, spread s, int nm)
{
    if (nm > 1)
        fprintf(f, "%.3f (%.3f-%.3f)", s.mean, s.lo, s.hi);
    else
        fprintf(f, "%.3f", s.mean);
}

static void delay_cell(FILE *f, double d, size_t after)
{
    if (isnan(d))
        fprintf(f, "not in %zu", after);
    else
        fprintf(f, "%.0f", d);
}

/* The pooled tables: per window, detectors x shifts, the mean over models and its range. */
static void pooled(FILE *f, const ev_setup *su, const ev_model *m, int nm)
{
    fprintf(f, "## Summary over %d model(s)\n\n", nm);
    fprintf(
        f,
        "Each cell: AUROC / detection rate (TPR) at the threshold matched to a false-alarm rate "
        "of %g on held-out clean windows; %s. The clean FAR column is measured on the clean test "
        "windows at the same threshold.\n\n",
        su->far, nm > 1 ? "mean over the models (min-max)" : "one model");
    for (int wi = 0; wi < EV_NWIN; wi++) {
        fprintf(f, "### Window %d tokens\n\n| detector | needs next token | clean FAR |",
                ev_wins[wi]);
        for (int k = 1; k < EV_NSRC; k++)
            fprintf(f, " %s AUROC | %s TPR |", ev_src_names[k], ev_src_names[k]);
        fprintf(f, "\n|---|---|---|");
        for (int k = 1; k < EV_NSRC; k++)
            fprintf(f, "---|---|");
        fprintf(f, "\n");
        for (int d = 0; d < EV_NDET; d++) {
            fprintf(f, "| %s | %s | ", ev_det_names[d], ev_det_needs_label[d] ? "yes" : "no");
            print_spread(f, over_models(m, nm, AT(m->far[wi][d])), nm);
            for (int k = 1; k < EV_NSRC; k++) {
                fprintf(f, " | ");
                print_spread(f, over_models(m, nm, AT(m->auc[wi][d][k])), nm);
                fprintf(f, " | ");
                print_spread(f, over_models(m, nm, AT(m->tpr[wi][d][k])), nm);
            }
            fprintf(f, " |\n");
        }
        fprintf(f, "\n");
    }
    /* which detector wins: by mean AUROC, overall and among the label-free ones (a tie within
     * 0.005 is named as a tie: the intervals are wider than that) */
    fprintf(
        f,
        "### Best detector per shift (mean AUROC over the models; ties within 0.005 listed)\n\n"
        "| window | shift | best of all | best label-free (no next token) |\n|---|---|---|---|\n");
    for (int wi = 0; wi < EV_NWIN; wi++)
        for (int k = 1; k < EV_NSRC; k++) {
            fprintf(f, "| %d | %s |", ev_wins[wi], ev_src_names[k]);
            for (int lf = 0; lf < 2; lf++) {
                double best = -1.0, a[EV_NDET];
                for (int d = 0; d < EV_NDET; d++) {
                    a[d] = over_models(m, nm, AT(m->auc[wi][d][k])).mean;
                    if (!(lf && ev_det_needs_label[d]) && a[d] > best)
                        best = a[d];
                }
                const char *sep = " ";
                for (int d = 0; d < EV_NDET; d++)
                    if (!(lf && ev_det_needs_label[d]) && a[d] >= best - 0.005) {
                        fprintf(f, "%s%s (%.3f)", sep, ev_det_names[d], a[d]);
                        sep = ", ";
                    }
                fprintf(f, " |");
            }
            fprintf(f, "\n");
        }
    fprintf(f, "\n### Detection delay (tokens after the switch; mean over the models of those that "
               "alarmed, and how many did), window 256\n\n| detector |");
    for (int k = 1; k < EV_NSRC; k++)
        fprintf(f, " %s |", ev_src_names[k]);
    fprintf(f, "\n|---|---|---|---|---|\n");
    for (int d = 0; d < EV_NDET; d++) {
        fprintf(f, "| %s |", ev_det_names[d]);
        for (int k = 1; k < EV_NSRC; k++) {
            double s = 0.0;
            int hit = 0;
            for (int i = 0; i < nm; i++)
                if (!isnan(m[i].delay[1][d][k]))
                    s += m[i].delay[1][d][k], hit++;
            if (hit)
                fprintf(f, " %.0f (%d of %d) |", s / hit, hit, nm);
            else
                fprintf(f, " none in %zu (0 of %d) |", su->after, nm);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\n");
}

/* One model's tables: AUROC and TPR with their intervals, clean FAR, delays. */
static void one_model(FILE *f, const ev_setup *su, const ev_model *r, int i)
{
    fprintf(
        f,
        "## Model %d: `%s`\n\n%d layers, width %d, %s (%s), seq %d; %d norms monitored. Baseline "
        "%zu tokens (the end of the training split); thresholds on %zu tokens (validation, first "
        "half); test: validation second half (%zu tokens) and its shifts.\n\n",
        i + 1, r->ckpt, r->layers, r->width, r->norm, r->place, r->seq, r->slots, r->base_tokens,
        r->cal_tokens, r->tokens[0]);
    for (int wi = 0; wi < EV_NWIN; wi++) {
        fprintf(f,
                "### Window %d: AUROC [95%% CI] / TPR [95%% CI] at the matched threshold\n\n"
                "%zu held-out windows set each threshold; %zu clean test windows",
                ev_wins[wi], r->cal_windows[wi], r->windows[wi][0]);
        for (int k = 1; k < EV_NSRC; k++)
            fprintf(f, ", %zu %s", r->windows[wi][k], ev_src_names[k]);
        fprintf(f, ".\n\n| detector | threshold | clean FAR [CI] |");
        for (int k = 1; k < EV_NSRC; k++)
            fprintf(f, " %s |", ev_src_names[k]);
        fprintf(f, "\n|---|---|---|---|---|---|---|\n");
        for (int d = 0; d < EV_NDET; d++) {
            fprintf(f, "| %s | %.4g | %.3f [%.3f, %.3f] |", ev_det_names[d], r->thr[wi][d],
                    r->far[wi][d], r->far_ci[wi][d].lo, r->far_ci[wi][d].hi);
            for (int k = 1; k < EV_NSRC; k++)
                fprintf(f, " %.3f [%.3f, %.3f] / %.3f [%.3f, %.3f] |", r->auc[wi][d][k],
                        r->auc_ci[wi][d][k].lo, r->auc_ci[wi][d][k].hi, r->tpr[wi][d][k],
                        r->tpr_ci[wi][d][k].lo, r->tpr_ci[wi][d][k].hi);
            fprintf(f, "\n");
        }
        fprintf(f, "\n");
    }
    fprintf(f,
            "### Detection delay (tokens after the switch; alarms in the %zu tokens of clean text "
            "before it)\n\n| window | detector |",
            su->switch_at);
    for (int k = 1; k < EV_NSRC; k++)
        fprintf(f, " %s |", ev_src_names[k]);
    fprintf(f, "\n|---|---|---|---|---|---|\n");
    for (int wi = 0; wi < EV_NWIN; wi++)
        for (int d = 0; d < EV_NDET; d++) {
            fprintf(f, "| %d | %s |", ev_wins[wi], ev_det_names[d]);
            for (int k = 1; k < EV_NSRC; k++) {
                fprintf(f, " ");
                delay_cell(f, r->delay[wi][d][k], su->after);
                fprintf(f, " (%d of %zu before) |", r->pre_alarms[wi][d][k], r->pre_windows[wi]);
            }
            fprintf(f, "\n");
        }
    fprintf(f, "\n");
}

int ev_write_results(FILE *md, FILE *csv, const ev_setup *su, const ev_model *m, int nm,
                     const char *cmdline)
{
    fprintf(md, "<!-- written by: %s -->\n\n", cmdline);
    fprintf(md,
            "Windows of the test text do not overlap. Every detector's threshold is the (1 - %g) "
            "quantile of its scores on held-out clean windows (validation, first half; stride a "
            "quarter window); bootstrap: %d resamples of windows (shifted and clean resampled "
            "apart), percentile 95%% intervals, seed %llu. Delay streams: each shift follows a "
            "clean segment of its own (%zu tokens, quarter k of the clean test text), a sliding "
            "window scored every %zu tokens, at most %zu tokens of the shift.\n\n",
            su->far, su->reps, (unsigned long long)su->seed, su->switch_at, su->step, su->after);
    fprintf(md, "| source | tokens (first model) | bytes dropped | what |\n|---|---|---|---|\n");
    for (int k = 0; k < EV_NSRC; k++)
        fprintf(md, "| %s | %zu | %zu | %s |\n", ev_src_names[k], m[0].tokens[k], m[0].dropped[k],
                ev_src_desc[k]);
    fprintf(md, "\n");
    pooled(md, su, m, nm);
    for (int i = 0; i < nm; i++)
        one_model(md, su, &m[i], i);
    const ev_model *r = &m[0];
    fprintf(
        md,
        "## Which norms carry the signal (model 1, AUROC of each norm's own monitor score, "
        "window 256)\n\n| norm | jargon | shuffled | flipcase | random |\n|---|---|---|---|---|\n");
    for (int s = 0; s < r->slots && s < EV_MAXSLOTS; s++)
        fprintf(md, "| %s | %.3f | %.3f | %.3f | %.3f |\n", r->slot_name[s], r->slot_auc[1][s],
                r->slot_auc[2][s], r->slot_auc[3][s], r->slot_auc[4][s]);
    if (r->t_plain > 0)
        fprintf(md,
                "\n## Overhead (model 1: forward over %zu clean tokens, batches of %d x %d, best "
                "of 3, %d "
                "thread(s))\n\n| forward alone | forward + monitor | time inside "
                "keel_monitor_observe | "
                "overhead |\n|---|---|---|---|\n| %.3f s | %.3f s | %.4f s | %.2f%% (observe / "
                "forward); "
                "%.2f%% (end to end) |\n",
                r->overhead_tokens, r->batch, r->seq, r->threads, r->t_plain, r->t_mon, r->t_obs,
                100.0 * r->t_obs / r->t_plain, 100.0 * (r->t_mon - r->t_plain) / r->t_plain);
    fprintf(csv, "model,checkpoint,window,detector,shift,auroc,auroc_lo,auroc_hi,tpr,tpr_lo,tpr_hi,"
                 "threshold,clean_far,clean_far_lo,clean_far_hi,delay,alarms_before_switch\n");
    for (int i = 0; i < nm; i++)
        for (int wi = 0; wi < EV_NWIN; wi++)
            for (int d = 0; d < EV_NDET; d++)
                for (int k = 1; k < EV_NSRC; k++) {
                    const ev_model *q = &m[i];
                    fprintf(csv,
                            "%d,%s,%d,%s,%s,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.6g,%.4f,%.4f,%.4f,%.0f,"
                            "%d\n",
                            i + 1, q->ckpt, ev_wins[wi], ev_det_names[d], ev_src_names[k],
                            q->auc[wi][d][k], q->auc_ci[wi][d][k].lo, q->auc_ci[wi][d][k].hi,
                            q->tpr[wi][d][k], q->tpr_ci[wi][d][k].lo, q->tpr_ci[wi][d][k].hi,
                            q->thr[wi][d], q->far[wi][d], q->far_ci[wi][d].lo, q->far_ci[wi][d].hi,
                            q->delay[wi][d][k], q->pre_alarms[wi][d][k]);
                }
    return ferror(md) || ferror(csv) ? -1 : 0;
}
