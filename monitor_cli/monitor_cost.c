/* keel monitor cost: what the monitor adds to a forward. A checkpoint's model runs
 * over a text three ways, best of --reps: without a monitor, with the per-token summaries
 * (mean, log-rstd) and with the per-channel statistics of every norm's input as well. The
 * monitor's own time is measured inside the forward (tm_model.monitor_seconds: the calls to
 * keel_monitor_observe and keel_monitor_observe_channels), so it is not lost in the noise of
 * two forward timings; the difference of the wall times is printed beside it. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "monitor_cost.h"
#include "numarg.h"
#include "options.h"
#include "recording.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: keel monitor cost --checkpoint F --text FILE [--tokens N (32768)] [--reps N (5)]\n"
        "                         [--threads N (1)]\n\n"
        "Times the model's forward over the first N tokens of FILE without a monitor, with the\n"
        "per-token summaries and with the per-channel statistics too (best of --reps), and prints\n"
        "the monitor's time per forward as a share of the forward's.\n");
}

int mc_cost(int argc, char **argv)
{
    const char *ckpt = NULL, *text = NULL;
    int tokens = 32768, reps = 5, threads = 1;
    const keel_opt opts[] = {
        {"--checkpoint", KEEL_OPT_STRING, &ckpt, 0, 0, 0},
        {"--text", KEEL_OPT_STRING, &text, 0, 0, 0},
        {"--tokens", KEEL_OPT_INT, &tokens, 2, 1 << 26, 0},
        {"--reps", KEEL_OPT_INT, &reps, 1, 1000, 0},
        {"--threads", KEEL_OPT_INT, &threads, 1, KEEL_ARG_MAX_THREADS, 0},
    };
    const int pr = keel_opts_parse("monitor cost", argc, argv, opts, sizeof opts / sizeof opts[0],
                                   usage);
    if (pr != KEEL_OPTS_OK)
        return pr == KEEL_OPTS_HELP ? 0 : 2;
    if (!ckpt || !text) {
        fprintf(stderr, "keel monitor cost: --checkpoint and --text are required\n\n");
        usage(stderr);
        return 2;
    }
    if (tr_no_cblas("monitor"))
        return 1;
    mc_model mm;
    if (mc_load_model(&mm, ckpt, threads) != KEEL_OK) {
        fprintf(stderr, "keel monitor cost: %s\n", tool_last_error());
        return 1;
    }
    int rc = 1;
    unsigned char *bytes = NULL;
    int *tok = NULL;
    keel_monitor *mon[2] = {NULL, NULL};
    size_t nb, ntok;
    if (mc_read_file(text, &bytes, &nb) != KEEL_OK) {
        fprintf(stderr, "keel monitor cost: %s\n", tool_last_error());
        goto done;
    }
    if (!(tok = mc_map_text(&mm, bytes, nb, &ntok, NULL))) {
        fprintf(stderr, "keel monitor cost: out of memory\n");
        goto done;
    }
    const int T = mm.st.cfg.seq, B = mm.m.max_batch, C = mm.st.cfg.width;
    size_t use = ntok < (size_t)tokens ? ntok : (size_t)tokens, nfwd = use / ((size_t)B * T);
    if (nfwd == 0) {
        fprintf(stderr, "keel monitor cost: %zu tokens: fewer than one forward of %d x %d\n", use,
                B, T);
        goto done;
    }
    for (int k = 0; k < 2; k++)
        if (keel_monitor_create(&mon[k], mm.slots, NULL) != KEEL_OK) {
            fprintf(stderr, "keel monitor cost: %s\n", keel_last_error());
            goto done;
        }
    for (int s = 0; s < mm.slots; s++)
        if (keel_monitor_channels(mon[1], s, C) != KEEL_OK) {
            fprintf(stderr, "keel monitor cost: %s\n", keel_last_error());
            goto done;
        }
    double wall[3] = {INFINITY, INFINITY, INFINITY}, obs[3] = {0, INFINITY, INFINITY};
    for (int r = 0; r < reps; r++)
        for (int mode = 0; mode < 3; mode++) {
            mm.m.monitor = mode ? mon[mode - 1] : NULL;
            mm.m.monitor_seconds = 0;
            if (mode)
                keel_monitor_reset_window(mon[mode - 1]);
            double t0 = now_s();
            for (size_t f = 0; f < nfwd; f++)
                tm_forward(&mm.m, tok + f * (size_t)B * T, NULL, B, T);
            double t = now_s() - t0;
            if (tm_error(&mm.m)) {
                fprintf(stderr, "keel monitor cost: the model's forward: %s\n", tm_error(&mm.m));
                goto done;
            }
            wall[mode] = t < wall[mode] ? t : wall[mode];
            if (mode)
                obs[mode] = mm.m.monitor_seconds < obs[mode] ? mm.m.monitor_seconds : obs[mode];
        }
    mm.m.monitor = NULL;
    const double per = wall[0] / (double)nfwd;
    printf(
        "model: %d norms of width %d; %zu forwards of %d x %d tokens, best of %d, %d thread(s)\n",
        mm.slots, C, nfwd, B, T, reps, threads);
    printf("forward alone:                       %9.3f ms per forward\n", 1e3 * per);
    const char *names[3] = {"", "summaries (mean, log-rstd)", "summaries + per-channel"};
    for (int mode = 1; mode < 3; mode++)
        printf("%-36s %9.4f ms per forward in the monitor = %.3f%% of the forward (wall difference "
               "%+.2f%%)\n",
               names[mode], 1e3 * obs[mode] / (double)nfwd, 100.0 * obs[mode] / wall[0],
               100.0 * (wall[mode] - wall[0]) / wall[0]);
    rc = 0;
done:
    mm.m.monitor = NULL;
    keel_monitor_destroy(mon[0]);
    keel_monitor_destroy(mon[1]);
    free(tok);
    free(bytes);
    mc_free_model(&mm);
    return rc;
}
