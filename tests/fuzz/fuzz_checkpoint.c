/* Fuzz target: the trainer's checkpoint loader and the model built from it (train/checkpoint.c,
 * checkpoint_check.c, model_check.c, and the commands that load a checkpoint).
 * docs/reliability.md, "Fuzzing".
 *
 * The input is a checkpoint file. Its FNV-1a checksum (the last 8 bytes) is recomputed before it
 * is written, except for one input in 16, so that mutations reach the header and range checks
 * behind the checksum (anyone can recompute it; finding 6 of issue 23). Then, in this process:
 *  - tm_ckpt_read_state: KEEL_OK, or KEEL_EFORMAT, KEEL_EIO, KEEL_ENOMEM with a message;
 *  - when the file passes: `keel sample --checkpoint F --tokens 3` must exit 0 (the model is
 *    built, loaded and run: a file that passes the checks may not fail or abort later, the
 *    eps -1 of finding 2), mc_load_model (the monitor commands' loader) must succeed for a
 *    LayerNorm or RMSNorm model and its statistics are recorded over a short text, and when the
 *    header's batch x seq is small, `keel train --resume F` runs one more step (exit 0 or 1).
 * Every allocation the loader makes is bounded by the file (finding 3): libFuzzer's
 * -rss_limit_mb and -malloc_limit_mb report one that is not. */
#include "fuzz_common.h" /* first: it sets _POSIX_C_SOURCE */

#include "checkpoint.h"
#include "commands_train.h"
#include "keel.h"
#include "recording.h"

static char ckpt_[600], text_[600];

static void init(void)
{
    fz_quiet_stdio();
    fz_path(ckpt_, sizeof ckpt_, "fuzz.ckpt");
    fz_path(text_, sizeof text_, "text.txt");
    /* the training text of the seed checkpoints (tests/fuzz/make_corpus.sh) */
    char text[4000];
    size_t n = 0;
    for (int i = 0; i < 40 && n + 100 < sizeof text; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "abcab cab\nthe cat\n");
    fz_write_file(text_, (const uint8_t *)text, n);
}

static void run_sample(void)
{
    char a0[] = "sample", a1[] = "--checkpoint", a3[] = "--tokens", a4[] = "3", a5[] = "--seed",
         a6[] = "7";
    char *argv[] = {a0, a1, ckpt_, a3, a4, a5, a6, NULL};
    int rc = keel_cmd_sample(7, argv);
    FZ_CHECK(rc == 0, "keel sample exits %d on a checkpoint that tm_ckpt_read_state accepts", rc);
}

static void run_monitor(const tm_train_state *st)
{
    mc_model *mm = malloc(sizeof *mm);
    if (!mm)
        return;
    tool_clear_error();
    const keel_status rc = mc_load_model(mm, ckpt_, 1);
    const int monitorable = st->cfg.norm == TM_NORM_LAYER || st->cfg.norm == TM_NORM_RMS;
    FZ_CHECK(rc == KEEL_OK || (!monitorable && tool_last_error()[0]),
             "mc_load_model: %d on an accepted checkpoint: %s", (int)rc, tool_last_error());
    if (rc) {
        free(mm);
        return;
    }
    /* a text of two blocks of seq tokens made of the vocabulary's bytes */
    const size_t T = (size_t)st->cfg.seq;
    if (T <= 512 && st->vocab > 0) {
        size_t n = 2 * T + 1;
        unsigned char *bytes = malloc(n);
        if (bytes) {
            for (size_t i = 0; i < n; i++)
                bytes[i] = st->chars[(i * 7) % (size_t)st->vocab];
            size_t ntok = 0;
            int *tok = mc_map_text(mm, bytes, n, &ntok, NULL);
            mc_rec rec;
            if (tok && mc_record(mm, tok, ntok, &rec) == KEEL_OK) {
                keel_monitor *mon = NULL;
                if (keel_monitor_create(&mon, rec.slots, NULL) == KEEL_OK) {
                    FZ_CHECK(mc_feed(mon, &rec, 0, rec.n) == 0, "mc_feed: %s", keel_last_error());
                    keel_monitor_destroy(mon);
                }
                mc_free_rec(&rec);
            }
            free(tok);
            free(bytes);
        }
    }
    mc_free_model(mm);
    free(mm);
}

static void run_resume(const tm_train_state *st)
{
    if ((int64_t)st->batch * st->cfg.seq > 4096 || st->step >= 100000000 - 1)
        return;
    char steps[32], stop[32];
    snprintf(steps, sizeof steps, "%d", st->steps > st->step ? st->steps : st->step + 1);
    snprintf(stop, sizeof stop, "%d", st->step + 1);
    char a0[] = "train", a1[] = "--resume", a3[] = "--steps", a5[] = "--stop-after",
         a7[] = "--data", a9[] = "--quiet", a10[] = "--eval-every", a11[] = "0",
         a12[] = "--progress", a13[] = "none";
    char *argv[] = {a0, a1, ckpt_, a3, steps, a5, stop, a7, text_, a9, a10, a11, a12, a13, NULL};
    int rc = keel_cmd_train(14, argv);
    FZ_CHECK(rc == 0 || rc == 1, "keel train --resume exits %d", rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    uint8_t *file = malloc(size ? size : 1);
    if (!file)
        return 0;
    memcpy(file, data, size);
    const uint64_t h = fz_fnv1a(data, size);
    if (size >= 24 && h % 16 != 5) {
        const uint64_t sum = fz_fnv1a(file, size - 8);
        memcpy(file + size - 8, &sum, 8); /* little-endian hosts, as the format */
    }
    fz_write_file(ckpt_, file, size);
    free(file);

    tm_train_state st;
    tool_clear_error();
    const keel_status rc = tm_ckpt_read_state(ckpt_, &st);
    FZ_CHECK(rc == KEEL_OK || rc == KEEL_EFORMAT || rc == KEEL_EIO || rc == KEEL_ENOMEM,
             "tm_ckpt_read_state returned %d", (int)rc);
    if (rc != KEEL_OK) {
        FZ_CHECK(tool_last_error()[0], "tm_ckpt_read_state failed without a message");
        return 0;
    }
    run_sample();
    run_monitor(&st);
    run_resume(&st);
    return 0;
}
