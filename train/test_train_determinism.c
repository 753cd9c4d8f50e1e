/* keel train: the same seed and thread count give the same losses, bit for bit (1 and 2
 * threads), and the gradient does not depend on the thread count of keel's context. */
#include <stdio.h>
#include <string.h>

#include "trainer.h"

static int run(tm_data *d, int threads, tm_norm norm, tm_place place, float *out, int steps)
{
    tr_opts o;
    tr_opts_default(&o);
    o.mc.layers = 2;
    o.mc.width = 32;
    o.mc.heads = 2;
    o.mc.seq = 16;
    o.mc.norm = norm;
    o.mc.place = place;
    o.batch = 4;
    o.steps = steps;
    o.lr = 3e-3f;
    o.warmup = 3;
    o.threads = threads;
    o.eval_every = 5;
    o.eval_batches = 2;
    o.seed = 7;
    tr_result r;
    if (tr_run(&o, d, &r)) {
        fprintf(stderr, "tr_run: %s\n", tool_last_error());
        return -1;
    }
    memcpy(out, r.train_loss, (size_t)steps * sizeof(float));
    memcpy(out + steps, r.val_loss, (size_t)r.nval * sizeof(float));
    tr_result_free(&r);
    return 0;
}

int main(void)
{
    tm_data d;
    if (tm_data_load(&d, NULL)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    enum { STEPS = 15 };
    float a[2 * STEPS], b[2 * STEPS];
    int fails = 0;
    const tm_norm norms[] = {TM_NORM_LAYER, TM_NORM_RMS, TM_NORM_BATCH, TM_NORM_DYT};
    const tm_place places[] = {TM_PRE, TM_POST, TM_SANDWICH, TM_DEEPNORM};
    for (int threads = 1; threads <= 2; threads++)
        for (int k = 0; k < 4; k++) {
            memset(a, 0, sizeof a);
            memset(b, 0, sizeof b);
            if (run(&d, threads, norms[k], places[k], a, STEPS) || run(&d, threads, norms[k], places[k], b, STEPS))
                return 1;
            int same = !memcmp(a, b, sizeof a);
            printf("%s/%s, %d thread%s: losses %.6f .. %.6f, %s\n", tm_norm_name(norms[k]), tm_place_name(places[k]),
                   threads, threads > 1 ? "s" : "", a[0], a[STEPS - 1], same ? "bitwise identical" : "DIFFER");
            fails += !same;
        }
    tm_data_free(&d);
    printf("test_train_determinism: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
