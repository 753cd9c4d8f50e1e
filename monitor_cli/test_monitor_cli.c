/* keel monitor score (issue 23, findings 5 and 6): an output it cannot write fails the command
 * (exit 1, before any work), --plot without --csv is a usage error (exit 2), and a baseline
 * whose checksum is right but whose bounds are NaN is refused (exit 1), not scored.
 * --jsonl writes one JSON object per window, the CSV's windows, each naming the component that
 * moved most; every detector's score, the top layer, statistic and channel; a stream of random
 * characters alarms, names a layer and statistic, and raises the per-channel detector; `keel
 * monitor faults` writes a row per fault and sublayer naming the norm after it, and catches the
 * output projection scaled by 10; `keel monitor eval` takes --checkpoint more than once, writes
 * every detector's tables per model and repeats its numbers for a bootstrap seed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands_monitor.h"
#include "test_ckpt_util.h"

static int run(const char *const *args, int n)
{
    char *argv[24];
    for (int i = 0; i < n; i++)
        argv[i] = (char *)args[i];
    return keel_cmd_monitor(n, argv);
}

static int fails;

/* The number after key in a JSON line (NaN for null or when the key is absent). */
static double json_number(const char *line, const char *key)
{
    const char *p = strstr(line, key);
    if (!p || !strncmp(p + strlen(key), "null", 4))
        return NAN;
    return strtod(p + strlen(key), NULL);
}

/* Scores `text` with --jsonl into test_moncli_s.jsonl and reads it back: windows, alarms, the
 * mean of the channel detector, and how many alarms name a top layer that is one of the
 * model's norms (L0.attn.in, L0.mlp.in, final) with a statistic. -1 on a failure to run. */
static int score_stream(const char *ck, const char *base, const char *text, size_t *windows,
                        size_t *alarms, double *channels, size_t *named_alarms)
{
    const char *args[] = {"monitor",  "score",  "--checkpoint", ck,        "--baseline",
                          base,       "--text", text,           "--jsonl", "test_moncli_s.jsonl",
                          "--window", "64"};
    int rc = run(args, 12);
    if (rc != 0 && rc != 3)
        return -1;
    char *js = (char *)test_read_file("test_moncli_s.jsonl", NULL);
    *windows = *alarms = *named_alarms = 0;
    *channels = 0;
    for (char *line = js; js && line && *line;) {
        char *end = strchr(line, '\n');
        if (!end)
            break;
        *end = '\0';
        (*windows)++;
        *channels += json_number(line, "\"channels\":");
        if (strstr(line, "\"alarm\":true")) {
            (*alarms)++;
            int layer = strstr(line, "\"top_layer\":\"L0.attn.in\"") ||
                        strstr(line, "\"top_layer\":\"L0.mlp.in\"") ||
                        strstr(line, "\"top_layer\":\"final\"");
            int stat = strstr(line, "\"top_statistic\":\"mean\"") ||
                       strstr(line, "\"top_statistic\":\"log_rstd\"");
            *named_alarms += layer && stat;
        }
        line = end + 1;
    }
    free(js);
    if (*windows)
        *channels /= (double)*windows;
    remove("test_moncli_s.jsonl");
    return rc;
}

static void expect(const char *what, int got, int want)
{
    printf("%s: exit %d%s\n", what, got, got == want ? "" : "   <- FAIL");
    if (got != want)
        printf("FAIL: %s: exit %d, want %d\n", what, got, want);
    fails += got != want;
}

int main(void)
{
    if (!tm_have_cblas()) {
        printf("test_monitor_cli: skipped (built without CBLAS: the monitor commands need it)\n");
        return 0;
    }
    tm_data d;
    if (tm_data_load(&d, NULL)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    const char *ck = "test_moncli.ckpt", *text = "test_moncli.txt", *base = "test_moncli.kmon";
    tm_config c = {.layers = 1, .width = 16, .heads = 2, .seq = 16, .tied = 1, .norm = TM_NORM_LAYER,
                   .place = TM_PRE, .eps = 1e-5f};
    if (tu_write_fresh_ckpt(ck, &c, &d)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    FILE *f = fopen(text, "wb");
    for (size_t i = 0; f && i < 20000; i++)
        fputc(d.chars[d.tok[i]], f);
    if (f)
        fclose(f);
    /* keel monitor eval's corpus: 40,000 characters (its 10% validation split: 2,000 tokens to
     * set thresholds, 2,000 to test) */
    f = fopen("test_moncli_data.txt", "wb");
    for (size_t i = 0; f && i < 40000; i++)
        fputc(d.chars[d.tok[i]], f);
    if (f)
        fclose(f);
    /* a shifted stream: characters of the vocabulary drawn at random (an LCG: deterministic) */
    f = fopen("test_moncli_shift.txt", "wb");
    unsigned long long lcg = 12345;
    for (size_t i = 0; f && i < 4096; i++) {
        lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        fputc(d.chars[(lcg >> 33) % (unsigned long long)d.vocab], f);
    }
    if (f)
        fclose(f);
    tm_data_free(&d);

    const char *cal[] = {"monitor", "calibrate", "--checkpoint", ck, "--text", text, "-o", base};
    expect("calibrate", run(cal, 8), 0);
    const char *ok[] = {"monitor", "score", "--checkpoint", ck, "--baseline", base, "--text", text,
                        "--csv", "test_moncli.csv", "--jsonl", "test_moncli.jsonl"};
    int rc = run(ok, 12);
    printf("score with a writable --csv: exit %d (0 or 3)\n", rc);
    fails += rc != 0 && rc != 3;
    char *csv = (char *)test_read_file("test_moncli.csv", NULL);
    if (!csv || !strstr(csv, "window,first_token,combined")) {
        printf("FAIL: test_moncli.csv was not written\n");
        fails++;
    }
    /* the JSON lines: as many as the CSV's windows, each one object with the fields a dashboard
     * reads; the baseline is calibrated, so every window names a norm, statistic and component */
    size_t csv_lines = 0, json_lines = 0, named = 0, alarms_csv = 0, alarms_json = 0;
    for (const char *ch = csv; ch && *ch; ch++)
        csv_lines += *ch == '\n';
    for (char *line = csv ? strchr(csv, '\n') : NULL; line && line[1]; line = strchr(line + 1, '\n')) {
        const char *comma = line + 1;
        for (int k = 0; k < 4 && comma; k++)
            comma = strchr(comma + 1, ',');
        alarms_csv += comma && comma[1] == '1';
    }
    free(csv);
    char *js = (char *)test_read_file("test_moncli.jsonl", NULL);
    for (char *line = js; js && line && *line; json_lines++) {
        char *end = strchr(line, '\n');
        if (!end)
            break;
        *end = '\0';
        int shaped = line[0] == '{' && end[-1] == '}' && strncmp(line, "{\"window\":", 10) == 0 &&
                     strstr(line, "\"combined\":") && strstr(line, "\"threshold\":") &&
                     strstr(line, "\"nll\":") && strstr(line, "\"norms\":[{\"norm\":\"") &&
                     strstr(line, "\"detectors\":{\"summaries\":") &&
                     strstr(line, "\"top_layer\":\"") && strstr(line, "\"top_statistic\":\"") &&
                     strstr(line, "\"top_channel\":{\"norm\":\"") && strstr(line, "\"maha\":") &&
                     isfinite(json_number(line, "\"channels\":"));
        named += strstr(line, "\"strongest\":{\"norm\":\"") && strstr(line, "\"standardised\":") != NULL;
        alarms_json += strstr(line, "\"alarm\":true") != NULL;
        if (!shaped) {
            printf("FAIL: a JSON line is not the expected object: %.200s\n", line);
            fails++;
        }
        line = end + 1;
    }
    free(js);
    printf("--jsonl: %zu lines for %zu CSV windows, %zu name the strongest component, %zu alarms (CSV %zu)\n",
           json_lines, csv_lines ? csv_lines - 1 : 0, named, alarms_json, alarms_csv);
    if (json_lines == 0 || json_lines + 1 != csv_lines || named != json_lines || alarms_json != alarms_csv) {
        printf("FAIL: the JSON lines do not match the CSV's windows\n");
        fails++;
    }
    /* a shifted stream alarms (at least 10% of its windows at a 1% false-alarm rate:
     * the model is untrained, the shift weakly visible), every alarm names a layer and a
     * statistic, and the per-channel detector reads higher than on the clean text (1.5x; 2x here)
     */
    size_t cw, ca, cn, sw, sa, sn;
    double cch, sch;
    int rc_clean = score_stream(ck, base, text, &cw, &ca, &cch, &cn);
    int rc_shift = score_stream(ck, base, "test_moncli_shift.txt", &sw, &sa, &sch, &sn);
    printf("window 64: clean %zu windows, %zu alarms, channels %.2f; random characters %zu "
           "windows, %zu alarms "
           "(%zu naming a layer and statistic), channels %.2f; exits %d, %d\n",
           cw, ca, cch, sw, sa, sn, sch, rc_clean, rc_shift);
    if (rc_shift != 3 || sw == 0 || sa * 10 < sw || sn != sa || !(sch > 1.5 * cch)) {
        printf("FAIL: the shifted stream is not flagged, attributed, or the channel detector does "
               "not rise\n");
        fails++;
    }
    /* keel monitor faults: every fault in every sublayer gets a row naming the norm after it;
     * the output projection scaled by 10 alarms in most windows */
    const char *fl[] = {"monitor", "faults",   "--checkpoint", ck,      "--text",
                        text,      "--window", "64",           "--out", "test_moncli_faults.md"};
    expect("faults", run(fl, 10), 0);
    char *fmd = (char *)test_read_file("test_moncli_faults.md", NULL);
    const char *rows[] = {"| scale x10 | L0.attn | L0.mlp.in | ", "| scale x10 | L0.mlp | final | ",
                          "| bitflip e30 | L0.attn | L0.mlp.in | ",
                          "| bitflip e26 | L0.mlp | final | "};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *r = fmd ? strstr(fmd, rows[i]) : NULL;
        double alarmed = r ? strtod(r + strlen(rows[i]), NULL) : NAN;
        printf("faults: %s%.1f%% of windows alarmed\n", rows[i], alarmed);
        if (!r || (i < 2 && !(alarmed >= 50.0))) {
            printf("FAIL: the faults report lacks the row or the x10 fault is missed\n");
            fails++;
        }
    }
    free(fmd);
    /* keel monitor eval with a checkpoint given twice: a section per model, every detector in
     * the tables, one CSV row per model, window, detector and shift, the same numbers again for
     * the same bootstrap seed; a bootstrap of 1 resample and no checkpoint are usage errors, a
     * missing checkpoint fails before any model runs */
    const char *ev[] = {"monitor",      "eval", "--checkpoint", ck,
                        "--checkpoint", ck,     "--data",       "test_moncli_data.txt",
                        "--jargon",     text,   "--out",        "test_moncli_eval",
                        "--bootstrap",  "50",   "--seed",       "7"};
    expect("eval, two checkpoints", run(ev, 16), 0);
    char *emd = (char *)test_read_file("test_moncli_eval/results.md", NULL);
    char *ecsv = (char *)test_read_file("test_moncli_eval/results.csv", NULL);
    size_t erows = 0;
    for (const char *ch = ecsv; ch && *ch; ch++)
        erows += *ch == '\n';
    if (!emd || !strstr(emd, "## Model 2: `test_moncli.ckpt`") || !strstr(emd, "| mahalanobis |") ||
        !strstr(emd, "| entropy |") || !strstr(emd, "| 1-maxprob |") || !strstr(emd, "seed 7") ||
        erows != 1 + 2 * 3 * 5 * 4) {
        printf("FAIL: eval's results.md lacks a model or detector, or results.csv has %zu lines\n",
               erows);
        fails++;
    }
    expect("eval again, the same seed", run(ev, 16), 0);
    char *ecsv2 = (char *)test_read_file("test_moncli_eval/results.csv", NULL);
    if (!ecsv || !ecsv2 || strcmp(ecsv, ecsv2)) {
        printf("FAIL: eval's results.csv differs between two runs with the same seed\n");
        fails++;
    }
    free(emd);
    free(ecsv);
    free(ecsv2);
    const char *ev_one[] = {"monitor", "eval", "--checkpoint", ck, "--bootstrap", "1"};
    expect("eval --bootstrap 1", run(ev_one, 6), 2);
    const char *ev_none[] = {"monitor", "eval", "--out", "test_moncli_eval"};
    expect("eval without --checkpoint", run(ev_none, 4), 2);
    const char *ev_missing[] = {"monitor", "eval",         "--checkpoint",
                                ck,        "--checkpoint", "no-such.ckpt"};
    expect("eval with a checkpoint that does not exist", run(ev_missing, 6), 1);

    const char *unwritable_json[] = {"monitor", "score", "--checkpoint", ck, "--baseline", base, "--text", text,
                                     "--jsonl", "no-such-folder/scores.jsonl"};
    expect("score --jsonl in a folder that does not exist", run(unwritable_json, 10), 1);
    const char *unwritable[] = {"monitor", "score", "--checkpoint", ck, "--baseline", base, "--text", text,
                                "--csv", "no-such-folder/scores.csv"};
    expect("score --csv in a folder that does not exist", run(unwritable, 10), 1);
    const char *plot[] = {"monitor", "score", "--checkpoint", ck, "--baseline", base, "--text", text,
                          "--plot", "test_moncli.png"};
    expect("score --plot without --csv", run(plot, 10), 2);

    /* a baseline with a NaN histogram bound, its checksum recomputed: byte 8 + 16 + 8 (header)
     * + 4 (has_mean) + 3 * 8 (n, mean, m2) is the first norm's mean statistic's lo */
    const double nan = NAN;
    if (tu_craft(base, "test_moncli_nan.kmon", 8 + 16 + 8 + 4 + 3 * 8, &nan, 8)) {
        printf("FAIL: cannot craft the baseline\n");
        fails++;
    }
    const char *crafted[] = {"monitor", "score", "--checkpoint", ck, "--baseline", "test_moncli_nan.kmon",
                             "--text", text};
    expect("score with a baseline whose histogram bound is NaN", run(crafted, 8), 1);

    const char *files[] = {ck,
                           text,
                           base,
                           "test_moncli.csv",
                           "test_moncli.jsonl",
                           "test_moncli_nan.kmon",
                           "test_moncli_shift.txt",
                           "test_moncli_faults.md",
                           "test_moncli_data.txt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        remove(files[i]);
    const char *evfiles[] = {"results.md",     "results.csv", "stream.csv",    "plots.gp",
                             "auroc.dat",      "layers.dat",  "baseline.kmon", "stream.png",
                             "stream_nll.png", "auroc.png",   "layers.png"};
    for (size_t i = 0; i < sizeof evfiles / sizeof evfiles[0]; i++) {
        char p[96];
        snprintf(p, sizeof p, "test_moncli_eval/%s", evfiles[i]);
        remove(p);
    }
    remove("test_moncli_eval");
    printf("test_monitor_cli: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
