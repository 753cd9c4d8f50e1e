/* keel monitor score (issue 23, findings 5 and 6): an output it cannot write fails the command
 * (exit 1, before any work), --plot without --csv is a usage error (exit 2), and a baseline
 * whose checksum is right but whose bounds are NaN is refused (exit 1), not scored. */
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
    char err[1200];
    tm_data d;
    if (tm_data_load(&d, NULL, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char *ck = "test_moncli.ckpt", *text = "test_moncli.txt", *base = "test_moncli.kmon";
    tm_config c = {.layers = 1, .width = 16, .heads = 2, .seq = 16, .tied = 1, .norm = TM_NORM_LAYER,
                   .place = TM_PRE, .eps = 1e-5f};
    if (tu_write_fresh_ckpt(ck, &c, &d, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    FILE *f = fopen(text, "wb");
    for (size_t i = 0; f && i < 20000; i++)
        fputc(d.chars[d.tok[i]], f);
    if (f)
        fclose(f);
    tm_data_free(&d);

    const char *cal[] = {"monitor", "calibrate", "--checkpoint", ck, "--text", text, "-o", base};
    expect("calibrate", run(cal, 8), 0);
    const char *ok[] = {"monitor", "score", "--checkpoint", ck, "--baseline", base, "--text", text,
                        "--csv", "test_moncli.csv"};
    int rc = run(ok, 10);
    printf("score with a writable --csv: exit %d (0 or 3)\n", rc);
    fails += rc != 0 && rc != 3;
    size_t n = 0;
    unsigned char *csv = tu_slurp("test_moncli.csv", &n);
    if (!csv || !strstr((char *)csv, "window,first_token,combined")) {
        printf("FAIL: test_moncli.csv was not written\n");
        fails++;
    }
    free(csv);
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

    const char *files[] = {ck, text, base, "test_moncli.csv", "test_moncli_nan.kmon"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        remove(files[i]);
    printf("test_monitor_cli: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
