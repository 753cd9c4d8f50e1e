/* keel train (issue 23, findings 2, 3, 6): a checkpoint whose checksum is right but whose fields
 * are not is refused, field by field, with a message naming the field, before any model is
 * built from it; `keel sample`, `keel train --resume` and `keel monitor calibrate` exit 1 on it
 * instead of aborting. And the parameter count the loader expects from a header
 * (tm_model_size) is the one tm_create lays out, for every norm, placement, LayerScale and head. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands_monitor.h"
#include "commands_train.h"
#include "test_ckpt_util.h"
#include "trainer.h"

static int fails;

static void check_sizes(void)
{
    int combos = 0;
    for (int norm = 0; norm <= TM_NORM_NONE; norm++)
        for (int place = 0; place <= TM_SANDWICH; place++)
            for (int k = 0; k < 4; k++) {
                tm_config c = {.vocab = 5, .layers = 2, .width = 8, .heads = 2, .seq = 4, .tied = k & 1,
                               .norm = (tm_norm)norm, .place = (tm_place)place, .layerscale = k & 2 ? 0.1f : 0.0f,
                               .eps = 1e-5f};
                tm_model m;
                size_t np, nb;
                if (tm_create(&m, &c, 2, 1, 1)) {
                    printf("FAIL: tm_create: %s\n", tool_last_error());
                    fails++;
                    continue;
                }
                tm_model_size(&c, &np, &nb);
                if (np != m.nparams || nb != m.nbuffers) {
                    printf("FAIL: norm %d placement %d tied %d layerscale %g: tm_model_size %zu + %zu, tm_create "
                           "%zu + %zu\n", norm, place, c.tied, c.layerscale, np, nb, m.nparams, m.nbuffers);
                    fails++;
                }
                tm_destroy(&m);
                combos++;
            }
    printf("tm_model_size = tm_create's layout for %d configurations\n", combos);
    /* a setting out of range is refused by tm_create itself, with its name */
    tm_config bad = {.vocab = 5, .layers = 2, .width = 8, .heads = 3, .seq = 4, .tied = 1, .eps = 1e-5f};
    tm_model m;
    if (tm_create(&m, &bad, 2, 1, 1) == 0 || !strstr(tool_last_error(), "heads is 3")) {
        printf("FAIL: tm_create with 3 heads of width 8: '%s'\n", tool_last_error());
        fails++;
    }
    bad.heads = 2, bad.eps = NAN;
    if (tm_create(&m, &bad, 2, 1, 1) == 0 || !strstr(tool_last_error(), "eps is nan")) {
        printf("FAIL: tm_create with eps NaN: '%s'\n", tool_last_error());
        fails++;
    }
}

/* src with the bytes at off replaced (checksum recomputed) must be refused with needle in the
 * message. */
static void expect_refused(const char *src, size_t off, const void *val, size_t len, const char *needle)
{
    const char *path = "test_ranges_bad.ckpt";
    if (tu_craft(src, path, off, val, len)) {
        printf("FAIL: cannot craft %s\n", path);
        fails++;
        return;
    }
    tm_train_state st;
    tool_clear_error();
    int ok = tm_ckpt_read_state(path, &st) != 0 && strstr(tool_last_error(), needle);
    printf("%s at byte %zu: %s%s\n", needle, off, ok ? "refused: " : "FAIL: ", tool_last_error()[0] ? tool_last_error() : "accepted");
    fails += !ok;
}

static int run(int (*cmd)(int, char **), const char *const *args, int n)
{
    char *argv[16];
    for (int i = 0; i < n; i++)
        argv[i] = (char *)args[i];
    return cmd(n, argv);
}

/* A run driven where a keel call refuses a parameter (the fuzzer's case: an AdamW first moment
 * of 3e38 over a second moment of 0 makes the step Inf, and DyT's alpha Inf is refused by
 * keel_dyt_fwd) ends as a divergence that names the call, not an abort(). */
static void check_refused_parameter(const tm_data *d)
{
    const char *src = "test_ranges_dyt.ckpt", *bad = "test_ranges_dyt_m.ckpt";
    tm_config c = {.layers = 1, .width = 16, .heads = 2, .seq = 16, .tied = 1, .norm = TM_NORM_DYT,
                   .place = TM_PRE, .eps = 1e-5f};
    if (tu_write_fresh_ckpt(src, &c, d)) {
        printf("FAIL: %s\n", tool_last_error());
        fails++;
        return;
    }
    size_t n;
    unsigned char *file = test_read_file(src, &n);
    uint64_t np = 0;
    if (file && n >= TU_NPARAMS + 8)
        memcpy(&np, file + TU_NPARAMS, 8);
    free(file);
    float *big = malloc(np * sizeof(float));
    for (size_t i = 0; big && i < np; i++)
        big[i] = 3e38f;
    int crafted = big && tu_craft(src, bad, TU_PARAMS + np * 4, big, np * 4) == 0;
    free(big);
    tr_opts o;
    tr_opts_default(&o);
    o.resume_path = bad, o.steps = 10, o.stop_after = 3, o.eval_every = 1, o.progress = 0;
    tr_result r;
    int rc = crafted ? (int)tr_run(&o, (tm_data *)d, &r) : -1;
    int ok = rc == 0 && r.nan_step >= 1 && strstr(r.nan_reason, "keel_dyt_fwd") &&
             strstr(r.nan_reason, "alpha");
    printf("first moments 3e38 on DyT: %s: tr_run %d, diverged at step %d: %s\n", ok ? "ok" : "FAIL",
           rc, rc ? -1 : r.nan_step, rc ? tool_last_error() : r.nan_reason);
    fails += !ok;
    if (rc == 0)
        tr_result_free(&r);
    remove(src);
    remove(bad);
}

int main(void)
{
    tm_data d;
    if (tm_data_load(&d, NULL)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    check_sizes();
    check_refused_parameter(&d);
    const char *ln = "test_ranges_ln.ckpt", *bn = "test_ranges_bn.ckpt";
    tm_config c = {.layers = 1, .width = 16, .heads = 2, .seq = 16, .tied = 1, .norm = TM_NORM_LAYER,
                   .place = TM_PRE, .eps = 1e-5f};
    tm_config cb = c;
    cb.norm = TM_NORM_BATCH, cb.place = TM_POST;
    if (tu_write_fresh_ckpt(ln, &c, &d) || tu_write_fresh_ckpt(bn, &cb, &d)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    tm_train_state st;
    for (int k = 0; k < 2; k++)
        if (tm_ckpt_read_state(k ? bn : ln, &st)) {
            printf("FAIL: the valid checkpoint %s is refused: %s\n", k ? bn : ln, tool_last_error());
            fails++;
        }
    size_t n;
    unsigned char *file = test_read_file(ln, &n);
    uint64_t np = 0, npb = 0;
    if (file && n >= TU_NPARAMS + 8)
        memcpy(&np, file + TU_NPARAMS, 8);
    free(file);
    file = test_read_file(bn, &n);
    if (file && n >= TU_NPARAMS + 8)
        memcpy(&npb, file + TU_NPARAMS, 8);
    free(file);

    /* the header: finding 2 (eps) and every other field's range */
    const float neg1 = -1.0f, nan = NAN, zero = 0.0f, big = 1.5f, inf = INFINITY;
    const int i3 = 3, i9 = 9, i0 = 0, i11 = 11, wide = 1024, deep = 8;
    expect_refused(ln, TU_EPS, &neg1, 4, "eps is -1");
    expect_refused(ln, TU_EPS, &nan, 4, "eps is nan");
    expect_refused(ln, TU_HEADS, &i3, 4, "heads is 3");
    expect_refused(ln, TU_NORM, &i9, 4, "norm is 9");
    expect_refused(ln, TU_BATCH, &i0, 4, "batch is 0");
    expect_refused(ln, TU_LR, &zero, 4, "lr is 0");
    expect_refused(ln, TU_BETA2, &big, 4, "beta2 is 1.5");
    expect_refused(ln, TU_STEP, &i11, 4, "step is 11");
    expect_refused(ln, TU_CHARS + 1, &d.chars[0], 1, "vocabulary byte");
    /* finding 3: a header that describes a larger model than the file holds (width 1024, 8
     * layers: 100.8 M parameters) is refused from the file's length, before any allocation */
    if (tu_craft(ln, "test_ranges_wide.ckpt", TU_WIDTH, &wide, 4) == 0)
        expect_refused("test_ranges_wide.ckpt", TU_LAYERS, &deep, 4, "header describes a model of 100854784");
    /* finding 6: the body: weights and moments finite, second moments and variances >= 0 */
    expect_refused(ln, TU_PARAMS + 3 * 4, &nan, 4, "parameter 3 of");
    expect_refused(ln, TU_PARAMS + (np + 5) * 4, &inf, 4, "AdamW first moment 5 of");
    expect_refused(ln, TU_PARAMS + (2 * np + 7) * 4, &neg1, 4, "AdamW second moment 7 of");
    const size_t bn_buffers = TU_PARAMS + 3 * npb * 4 + 8; /* BatchNorm: running mean, variance */
    expect_refused(bn, bn_buffers + 2 * 4, &nan, 4, "BatchNorm running mean 2 is nan");
    expect_refused(bn, bn_buffers + (16 + 1) * 4, &neg1, 4, "BatchNorm running variance 17 is -1");

    /* the commands on a crafted file: exit status 1 and a message, never abort() */
    tu_craft(ln, "test_ranges_eps.ckpt", TU_EPS, &neg1, 4);
    FILE *f = fopen("test_ranges_text.txt", "wb");
    for (size_t i = 0; f && i < 4000; i++)
        fputc(d.chars[d.tok[i]], f);
    if (f)
        fclose(f);
    const char *sample[] = {"sample", "--checkpoint", "test_ranges_eps.ckpt", "--tokens", "5"};
    const char *train[] = {"train", "--resume", "test_ranges_eps.ckpt", "--steps", "12", "--progress", "none"};
    const char *calib[] = {"monitor", "calibrate", "--checkpoint", "test_ranges_eps.ckpt",
                           "--text", "test_ranges_text.txt", "-o", "test_ranges.kmon"};
    int rs = run(keel_cmd_sample, sample, 5), rt = run(keel_cmd_train, train, 7), rm = run(keel_cmd_monitor, calib, 8);
    printf("eps -1: keel sample exits %d, keel train --resume %d, keel monitor calibrate %d (want 1 each)\n", rs, rt,
           rm);
    fails += (rs != 1) + (rt != 1) + (rm != 1);

    const char *files[] = {ln, bn, "test_ranges_bad.ckpt", "test_ranges_wide.ckpt", "test_ranges_eps.ckpt",
                           "test_ranges_text.txt", "test_ranges.kmon"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        remove(files[i]);
    tm_data_free(&d);
    printf("test_train_ckpt_ranges: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
