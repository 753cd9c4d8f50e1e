/* keel train: a checkpoint saved mid-run resumes to the same losses, bit for bit, as the run
 * that was not interrupted; a corrupt, truncated or foreign file is refused with a clear error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "trainer.h"

static void setup(tr_opts *o)
{
    tr_opts_default(o);
    o->mc.layers = 2;
    o->mc.width = 32;
    o->mc.heads = 2;
    o->mc.seq = 16;
    o->mc.norm = TM_NORM_BATCH; /* running statistics travel in the checkpoint too */
    o->mc.place = TM_POST;
    o->mc.layerscale = 0.1f;
    o->batch = 4;
    o->steps = 20;
    o->warmup = 4;
    o->lr = 3e-3f;
    o->eval_every = 0;
    o->eval_batches = 2;
    o->seed = 3;
}

static int expect_error(const char *path, const char *what, const char *needle)
{
    tm_train_state st;
    tool_clear_error();
    if (tm_ckpt_read_state(path, &st) == 0) {
        printf("FAIL: %s was accepted\n", what);
        return 1;
    }
    int ok = strstr(tool_last_error(), needle) != NULL;
    printf("%s: refused: %s%s\n", what, tool_last_error(), ok ? "" : "   <- FAIL: expected the message to say it");
    return !ok;
}

int main(void)
{
    tm_data d;
    if (tm_data_load(&d, NULL)) {
        fprintf(stderr, "%s\n", tool_last_error());
        return 1;
    }
    int fails = 0;
    tr_opts o;
    tr_result full, first, second;
    setup(&o);
    if (tr_run(&o, &d, &full))
        goto bad;
    setup(&o);
    o.stop_after = 9;
    o.save_path = "test_train_checkpoint.ckpt";
    if (tr_run(&o, &d, &first))
        goto bad;
    setup(&o);
    o.resume_path = "test_train_checkpoint.ckpt";
    if (tr_run(&o, &d, &second))
        goto bad;
    for (int s = 0; s < 20; s++) {
        float want = full.train_loss[s], got = s < 9 ? first.train_loss[s] : second.train_loss[s];
        if (memcmp(&want, &got, sizeof want)) {
            printf("FAIL: step %d: uninterrupted %.9g, resumed %.9g\n", s + 1, want, got);
            fails++;
        }
    }
    printf("resume at step 9 of 20: %s (final loss %.6f vs %.6f)\n", fails ? "DIFFERS" : "bitwise identical losses",
           full.train_loss[19], second.train_loss[19]);

    /* corrupt copies */
    FILE *f = fopen("test_train_checkpoint.ckpt", "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n);
    if (fread(p, 1, (size_t)n, f) != (size_t)n)
        goto bad;
    fclose(f);
    f = fopen("test_train_bad.ckpt", "wb");
    fwrite(p, 1, (size_t)n / 2, f);
    fclose(f);
    fails += expect_error("test_train_bad.ckpt", "truncated file", "truncated");
    p[n / 2] ^= 0x40;
    f = fopen("test_train_bad.ckpt", "wb");
    fwrite(p, 1, (size_t)n, f);
    fclose(f);
    fails += expect_error("test_train_bad.ckpt", "one flipped bit", "checksum");
    p[n / 2] ^= 0x40;
    p[8] = 9;
    f = fopen("test_train_bad.ckpt", "wb");
    fwrite(p, 1, (size_t)n, f);
    fclose(f);
    fails += expect_error("test_train_bad.ckpt", "future version", "version");
    f = fopen("test_train_bad.ckpt", "wb");
    fputs("hello, not a checkpoint\n", f);
    fclose(f);
    fails += expect_error("test_train_bad.ckpt", "another format", "not a keel checkpoint");
    fails += expect_error("test_train_missing.ckpt", "missing file", "cannot open");
    free(p);
    remove("test_train_bad.ckpt");
    remove("test_train_checkpoint.ckpt");
    tr_result_free(&full);
    tr_result_free(&first);
    tr_result_free(&second);
    tm_data_free(&d);
    printf("test_train_checkpoint: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
bad:
    fprintf(stderr, "test_train_checkpoint: %s\n", tool_last_error());
    return 1;
}
