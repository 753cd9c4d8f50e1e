/* The detectors of keel monitor eval (eval_detectors.h). */
#include <math.h>

#include "eval_detectors.h"

const char *const ev_det_names[EV_NDET] = {"monitor", "mahalanobis", "nll", "entropy", "1-maxprob"};
const int ev_det_needs_label[EV_NDET] = {0, 0, 1, 0, 0};

int ev_window_scores(keel_monitor *mon, const mc_rec *rec, size_t a, size_t b,
                     keel_monitor_slot_score *slots, double score[EV_NDET])
{
    keel_monitor_result res;
    if (keel_monitor_reset_window(mon) || mc_feed(mon, rec, a, b) ||
        keel_monitor_score(mon, slots, &res))
        return -1;
    score[EV_MONITOR] = res.combined;
    /* the norms' mean distance: each norm's maha is about 1 on clean windows, so the mean
     * weighs the norms alike, as the combined score does */
    double m = 0.0;
    int k = 0;
    for (int s = 0; s < rec->slots; s++)
        if (!isnan(slots[s].maha)) {
            m += slots[s].maha;
            k++;
        }
    score[EV_MAHA] = k ? m / k : NAN;
    score[EV_NLL] = mc_nll(rec, a, b);
    score[EV_ENTROPY] = mc_series_mean(rec->ent, a, b);
    score[EV_MAXPROB] = mc_series_mean(rec->pmax, a, b);
    return 0;
}
